"""FFT convolution on the CPU: gpuconv.fft against the direct path, torch and scipy.

    python bench/fft_bench.py [--quick] [--json PATH]

Cases (float32 conv2d, float64 convolve2d; every result checked first against
a float64 reference, within the FFT bound of gpuconv/fft.py):
  * conv2d 4x16x64x64 -> 16, padding 'same', 15x15 / 31x31 / 63x63 kernels:
    gpuconv.fft.fprop, the CPU direct path (gpuconv.cpu.conv: im2col + BLAS), torch CPU
    (torch.set_num_threads = the process's cores), scipy.signal.fftconvolve
    over the (N, K, C) planes summed over C;
  * convolve2d 512x512 'same', 31x31 / 63x63 / 127x127: method="fft",
    method="direct" (gpuconv's tap loop), scipy.signal.fftconvolve, torch CPU
    (a 1-channel conv2d on the flipped kernel);
  * the crossover sweeps: both gpuconv methods over small kernels, next to
    what method/algorithm="auto" picks, for where "auto" switches.
Times are the median and the min of `repeats` runs after one warm-up (a run
over 2 s is timed once); ratios and sweeps use the min, the least-disturbed run.  The machine's load average is recorded: on a shared machine
every figure is a loaded-machine figure.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import gpuconv
from gpuconv import fft as gfft
from gpuconv import cpu, reference
from gpuconv.spec import make_spec


def timeit(fn, repeats):
    """(median, min) seconds of `repeats` runs after a warm-up; a run over 2 s is
    timed once.  On a shared machine the min is the least-disturbed run."""
    fn()
    t0 = time.perf_counter()
    fn()
    times = [time.perf_counter() - t0]
    if times[0] <= 2.0:
        for _ in range(repeats - 1):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def check(got, ref, bound, what):
    err = float(np.max(np.abs(np.asarray(got, dtype=np.complex128) - ref)))
    if not err <= bound:
        raise AssertionError(f"{what}: error {err:.3g} over the bound {bound:.3g}")
    return err


def conv_case(n, c, k, h, r, repeats, torch, ss, rng):
    spec, _ = make_spec((n, c, h, h), (k, c, r, r), None, 1, "same", 1, 1, np.float32, 2)
    x = rng.standard_normal(spec.input_shape).astype(np.float32)
    w = rng.standard_normal(spec.weight_shape).astype(np.float32)
    ref = reference.conv(x.astype(np.float64), w.astype(np.float64), None, spec, accumulate="float64")
    L = 2 * h + r
    bound = 4 * np.finfo(np.float32).eps * math.log2(L * L) * np.abs(x).max() * np.abs(w).reshape(k, -1).sum(1).max()
    row = {"case": f"conv2d {n}x{c}x{h}x{h} -> {k}, {r}x{r}, same, float32", "flops": spec.flops,
           "model": gfft.conv_cost_model(spec).reason}
    pl = spec.pad[0][0]
    impls = {
        "gpuconv_fft": lambda: gfft.fprop(x, w, spec, np),
        "gpuconv_direct": lambda: cpu.conv(x, w, None, spec),
    }
    if torch is not None:
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        impls["torch_cpu"] = lambda: torch.nn.functional.conv2d(xt, wt, padding="same").numpy()
    if ss is not None:
        xp_ = np.pad(x, ((0, 0), (0, 0), (pl, pl), (pl, pl)))
        impls["scipy_fftconvolve"] = lambda: ss.fftconvolve(
            xp_[:, None], w[None, :, :, ::-1, ::-1], mode="valid", axes=(-2, -1)).sum(axis=2)
    for name, fn in impls.items():
        row[f"{name}_err"] = check(fn(), ref, bound, f"{row['case']} {name}")
        row[f"{name}_s"], row[f"{name}_min_s"] = timeit(fn, repeats)
    return row


def signal_case(m, r, repeats, torch, ss, rng):
    a = rng.standard_normal((m, m))
    kk = rng.standard_normal((r, r))
    ref = ss.convolve2d(a, kk, mode="same") if r <= 31 else None
    row = {"case": f"convolve2d {m}x{m} * {r}x{r}, same, float64"}
    impls = {
        "gpuconv_fft": lambda: gpuconv.convolve2d(a, kk, mode="same", method="fft"),
        "gpuconv_direct": lambda: gpuconv.convolve2d(a, kk, mode="same", method="direct"),
        "scipy_fftconvolve": lambda: ss.fftconvolve(a, kk, mode="same"),
    }
    # torch's CPU float64 conv2d lowers to an (H*W) x (R*S) im2col matrix: 34 GB for
    # 127x127 on 512x512, more than this machine has, so it is left out past 4 GB.
    if torch is not None and m * m * r * r * 8 > 4e9:
        row["torch_cpu_skipped"] = f"im2col of {m * m * r * r * 8 / 1e9:.0f} GB"
    elif torch is not None:
        at = torch.from_numpy(a)[None, None]
        kt = torch.from_numpy(np.ascontiguousarray(kk[::-1, ::-1]))[None, None]
        pad = ((r - 1) // 2, r // 2)
        impls["torch_cpu"] = lambda: torch.nn.functional.conv2d(
            torch.nn.functional.pad(at, (pad[1], pad[0], pad[1], pad[0])), kt)[0, 0].numpy()
    if ref is None:
        ref = gpuconv.convolve2d(a, kk, mode="same", method="direct")
    bound = 4 * np.finfo(np.float64).eps * math.log2((m + r) ** 2) * np.abs(a).max() * np.abs(kk).sum()
    for name, fn in impls.items():
        row[f"{name}_err"] = check(fn(), ref, bound, f"{row['case']} {name}")
        row[f"{name}_s"], row[f"{name}_min_s"] = timeit(fn, repeats)
    origin = (-(r // 2), -(r // 2))
    row["auto"] = gfft.choose_method((m, m), (r, r), (m, m), origin, "fill", np.float64)
    return row


def sweeps(repeats, rng):
    out = {"signal_512_same_float64": [], "conv2d_4x16x64x64_same_float32": []}
    a = rng.standard_normal((512, 512))
    for r in (3, 5, 7, 9, 11, 13, 15, 21):
        kk = rng.standard_normal((r, r))
        row = {"kernel": r,
               "direct_s": timeit(lambda: gpuconv.convolve2d(a, kk, mode="same", method="direct"), repeats)[1],
               "fft_s": timeit(lambda: gpuconv.convolve2d(a, kk, mode="same", method="fft"), repeats)[1],
               "auto": gfft.choose_method((512, 512), (r, r), (512, 512), (-(r // 2),) * 2, "fill",
                                          np.float64)}
        out["signal_512_same_float64"].append(row)
    for r in (3, 5, 7, 9, 11, 13):
        spec, _ = make_spec((4, 16, 64, 64), (16, 16, r, r), None, 1, "same", 1, 1, np.float32, 2)
        x = rng.standard_normal(spec.input_shape).astype(np.float32)
        w = rng.standard_normal(spec.weight_shape).astype(np.float32)
        cost = gfft.conv_cost_model(spec)
        row = {"kernel": r,
               "direct_s": timeit(lambda: cpu.conv(x, w, None, spec), repeats)[1],
               "fft_s": timeit(lambda: gfft.fprop(x, w, spec, np), repeats)[1],
               "auto": "fft" if cost.use_fft else "direct",
               "model_direct_s": cost.direct_s, "model_fft_s": cost.fft_s}
        out["conv2d_4x16x64x64_same_float32"].append(row)
    return out


def env():
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = None
    import scipy
    info = {"timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": commit, "python": platform.python_version(), "platform": platform.platform(),
            "numpy": np.__version__, "scipy": scipy.__version__, "cpu_cores": len(os.sched_getaffinity(0)),
            "loadavg_start": os.getloadavg()}
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the smallest case of each kind, 1 repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    except ImportError:
        torch = None
    import scipy.signal as ss
    rng = np.random.default_rng(20261129)
    repeats = 1 if args.quick else args.repeats
    result = {"schema": "gpuconv-fft-bench/1", "env": env(),
              "ratio_definition": "min time of the other implementation / gpuconv_fft min time (>1: FFT faster)",
              "conv2d": [], "convolve2d": []}
    for r in ((15,) if args.quick else (15, 31, 63)):
        result["conv2d"].append(conv_case(4, 16, 16, 64, r, repeats, torch, ss, rng))
        print(json.dumps(result["conv2d"][-1]), flush=True)
    for r in ((31,) if args.quick else (31, 63, 127)):
        result["convolve2d"].append(signal_case(512, r, repeats, torch, ss, rng))
        print(json.dumps(result["convolve2d"][-1]), flush=True)
    if not args.quick:
        result["sweeps"] = sweeps(repeats, rng)
        print(json.dumps(result["sweeps"]), flush=True)
    for row in result["conv2d"] + result["convolve2d"]:
        for key in [k for k in row if k.endswith("_min_s") and k != "gpuconv_fft_min_s"]:
            row[key.replace("_min_s", "_ratio")] = row[key] / row["gpuconv_fft_min_s"]
    result["env"]["loadavg_end"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
