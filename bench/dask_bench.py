"""Dask benchmark: gpuconv.convolve2d on a chunked image, 1 vs 2 workers, and
dask-image's ndfilters.convolve on the same chunks.

    python bench/dask_bench.py [--size 16384] [--chunk 2048] [--kernel 7] [--repeats 3]
                               [--out bench/results/<date>-dask-cpu-2core.json]

The image (float32, uniform random, generated and persisted in the workers
before any timing) is convolved with a random k x k kernel, scipy's
mode='same', boundary='fill' (zeros): dask-image's mode='constant', cval=0 is
the same result for odd k.  Each timing persists the output in the workers
and waits for it (median of `repeats`, after one warm-up run per
configuration); the output is then dropped.  Workers are processes with one
thread each, each pinned to its own core (os.sched_setaffinity), so "1 worker"
is one core and "2 workers" two, for both libraries (gpuconv's CPU signal
path would otherwise run a thread pool over every core inside one worker).

Needs dask[array], distributed and dask-image (`pip install ".[bench]"`).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _pin(worker_index_file):
    """Run in a worker: pin it to the next free core (one core per worker)."""
    import fcntl
    with open(worker_index_file, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        taken = [int(x) for x in f.read().split()]
        cores = sorted(os.sched_getaffinity(0))
        core = next(c for c in cores if c not in taken) if len(taken) < len(cores) else cores[0]
        f.write(f"{core}\n")
    for tid in os.listdir("/proc/self/task"):      # every thread of the worker process
        os.sched_setaffinity(int(tid), {core})
    return core


def _time(client, make, repeats, kernel):
    """Seconds per run of make(kernel_i): each run gets a kernel differing in its
    last bits, hence fresh graph keys (names are content hashes, and a result
    still held from the previous run would otherwise be reused); same work."""
    from distributed import wait
    times = []
    for i in range(repeats + 1):                 # the first run warms up (imports, builds)
        k = kernel * np.float32(1 + i * 2.0 ** -20)
        t0 = time.perf_counter()
        out = client.persist(make(k))
        wait(out)
        dt = time.perf_counter() - t0
        client.cancel(out)
        del out
        if i:
            times.append(dt)
    return times


def _run(n_workers, args, image_shape, kernel):
    import dask.array as da
    from dask_image import ndfilters
    from distributed import Client, LocalCluster

    import gpuconv

    pin_file = Path(f"/tmp/gpuconv-dask-bench-pins-{os.getpid()}-{n_workers}")
    pin_file.unlink(missing_ok=True)
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      memory_limit=args.memory_limit, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        cores = client.run(_pin, str(pin_file))
        image = da.random.default_rng(args.seed).random(image_shape, dtype=np.float32,
                                                        chunks=args.chunk)
        image = client.persist(image)
        from distributed import wait
        wait(image)
        res = {"workers": n_workers, "cores": sorted(cores.values())}
        res["gpuconv_s"] = _time(client, lambda k: gpuconv.convolve2d(image, k, "same"),
                                 args.repeats, kernel)
        res["dask_image_s"] = _time(
            client, lambda k: ndfilters.convolve(image, k, mode="constant", cval=0.0),
            args.repeats, kernel)
        # the two agree (float32 sums in different orders): one interior chunk and a corner
        a = gpuconv.convolve2d(image, kernel, "same")
        b = ndfilters.convolve(image, kernel, mode="constant", cval=0.0)
        c = args.chunk
        sl = (slice(c - 8, c + 8), slice(0, 16))
        diff = float(abs(a[sl] - b[sl]).max().compute())
        ref = float(abs(b[sl]).max().compute())
        res["max_rel_diff_vs_dask_image"] = diff / ref
    pin_file.unlink(missing_ok=True)
    for key in ("gpuconv_s", "dask_image_s"):
        res[key.replace("_s", "_median_s")] = statistics.median(res[key])
    return res


def _method(shape, kernel):
    """The signal method gpuconv's 'auto' takes for the whole image (every chunk uses it)."""
    try:
        from gpuconv.fft import choose_method
    except ImportError:
        return "direct"
    kh, kw = kernel.shape
    return choose_method(shape, kernel.shape, shape, (-(kh // 2), -(kw // 2)), "fill",
                         kernel.dtype, "cpu", 0.0)


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except Exception:  # noqa: BLE001 - not a checkout
        return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=16384)
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--kernel", type=int, default=7)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-limit", default="6GiB", help="per worker")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import dask
    from importlib.metadata import version as _version
    import distributed

    import gpuconv

    kernel = np.random.default_rng(args.seed + 1).standard_normal(
        (args.kernel, args.kernel)).astype(np.float32)
    shape = (args.size, args.size)
    runs = []
    for n in (int(w) for w in args.workers.split(",")):
        r = _run(n, args, shape, kernel)
        print(f"{n} worker(s): gpuconv {r['gpuconv_median_s']:.2f} s, dask-image "
              f"{r['dask_image_median_s']:.2f} s, max rel diff {r['max_rel_diff_vs_dask_image']:.1e}",
              flush=True)
        runs.append(r)
    by = {r["workers"]: r for r in runs}
    summary = {}
    if 1 in by and 2 in by:
        summary["gpuconv_2_vs_1_worker_speedup"] = (by[1]["gpuconv_median_s"]
                                                    / by[2]["gpuconv_median_s"])
        summary["dask_image_2_vs_1_worker_speedup"] = (by[1]["dask_image_median_s"]
                                                       / by[2]["dask_image_median_s"])
    for n, r in by.items():
        summary[f"gpuconv_vs_dask_image_speedup_{n}w"] = (r["dask_image_median_s"]
                                                          / r["gpuconv_median_s"])
    pixels = args.size * args.size
    for n, r in by.items():
        summary[f"gpuconv_mpix_per_s_{n}w"] = pixels / r["gpuconv_median_s"] / 1e6
    doc = {
        "benchmark": "dask: convolve2d same/fill, float32 image, chunked",
        "image": list(shape), "chunks": [args.chunk, args.chunk], "kernel": [args.kernel] * 2,
        "dtype": "float32", "repeats": args.repeats,
        "gpuconv_method": _method(shape, kernel),
        "env": {
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": _git_commit(), "gpuconv": gpuconv.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "numpy": np.__version__, "dask": dask.__version__,
            "distributed": distributed.__version__, "dask_image": _version("dask-image"),
            "cpu_cores": os.cpu_count(), "loadavg_start": list(os.getloadavg()),
            "gpu": None,
        },
        "loadavg_end": list(os.getloadavg()),
        "runs": runs, "summary": summary,
        "notes": ("CPU only (no GPU on this machine). Workers are processes with one thread, "
                  "each pinned to its own core. The machine's 2 cores are shared with other "
                  "work, so absolute times vary run to run; both libraries ran in the same "
                  "cluster, interleaved."),
    }
    out = args.out or (Path(__file__).parent / "results"
                       / f"{_dt.date.today().isoformat()}-dask-cpu-{os.cpu_count()}core.json")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
