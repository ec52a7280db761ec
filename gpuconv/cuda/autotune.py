"""Autotuning: time the candidate variants and configurations of a convolution once, keep
the fastest (like torch.backends.cudnn.benchmark).

    gpuconv.set_autotune(True)          opt in, process-wide; get_autotune() reads it
    candidates(spec, facts, precision)  [(variant, config)]: every variant that supports the
                                        spec with its default config, and the implicit GEMM's
                                        IGEMM_CANDIDATES cheapest-estimated (tile, split-K)
    tune(spec, precision, facts, run, timer=None, cache=None) -> (variant, config)

With autotuning on, the first forward call of each (shape, dtype, precision, device) runs
every candidate on its own arrays (a scratch output each) and times it; the winner is kept
in memory and in `<cache_dir>/autotune/<device name>.json` (JSON, never pickle: a file from
another machine or version is data, not code).  Later calls, in this process or the next,
go straight to the winner.  A winner that no longer supports the spec (a changed registry)
is ignored and re-tuned.  A corrupt or unreadable file is ignored with a RuntimeWarning and
rewritten by the next record; files are written atomically (a temporary file in the same
directory, then os.replace) and merged with what another process wrote meanwhile.

Nothing is tuned while the stream is captured into a CUDA graph (timing synchronises the
host): a capture uses a recorded winner when it is capture-safe, else the dispatcher.

bench/gpu_record.py measures the bench suites through `tune` and writes the same file, so
the dispatcher's estimated thresholds (MEASURE in gpuconv/cuda/dispatch.py) can be checked
against the recorded winners.

The timer: `timer(run, candidate) -> seconds`, where run() launches the candidate once.  The
default uses CUDA events on CuPy's stream (gpuconv.bench.timing.CupyTimer, median of a few
calls after a warm-up) and time.perf_counter elsewhere (the simulator).  Tests inject a
timer so that the selection does not depend on real time.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from .. import _paths
from ..spec import ConvSpec
from . import variants
from .dispatch import CAPTURE_UNSAFE, choose, default_config, supported_variants
from .facts import DeviceFacts
from .families import conv2d_implicit_gemm as _igemm

FORMAT = 1
# The implicit GEMM's (tile, split-K) menu has up to 4 x 6 points; the napkin math ranks them
# and the IGEMM_CANDIDATES cheapest are timed (a first call then costs ~10 launches of the layer).
IGEMM_CANDIDATES = 6

_enabled = False
_lock = threading.RLock()
# timer(run, candidate) -> seconds used by forward's tuning; None: default_timer(backend).
# Tests set it (an injected timer makes the selection independent of real time).
TIMER = None


def set_autotune(enabled: bool) -> None:
    """Turn autotuning on or off for this process (torch.backends.cudnn.benchmark's meaning)."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"set_autotune takes a bool, got {type(enabled).__name__} {enabled!r}")
    _enabled = enabled


def get_autotune() -> bool:
    return _enabled


# ---------------------------------------------------------------- candidates

def candidates(spec: ConvSpec, facts: DeviceFacts | None = None, precision: str = "highest"):
    """[(variant, config)]: every variant that supports spec (capture-safe ones only while
    facts.capturing) with its default config; the implicit GEMM with its IGEMM_CANDIDATES
    cheapest (tile, split-K) by plan()'s estimate, the plan's own first."""
    facts = facts or DeviceFacts()
    out = []
    for name, (ok, _) in supported_variants(spec, facts, precision).items():
        if not ok:
            continue
        if name != "implicit_gemm":
            out.append((name, default_config(name, spec, facts, precision)))
            continue
        plan = _igemm.plan(spec, facts, precision)
        priced = []
        for tname, tile in _igemm.TILES.items():
            for split in _igemm.SPLITS:
                if split > 1 and plan["k_tiles"] // split < _igemm.MIN_KTILES_PER_SPLIT:
                    break
                est = _igemm._estimate(spec, facts, tile, split, plan["precision"])
                if est["ctas_per_sm"] > 0 and spec.groups * split <= 65535:
                    priced.append((est["est_us"], tname, split))
        first = (plan["tile"], plan["split_k"])
        ranked = [first] + [(t, s) for _, t, s in sorted(priced) if (t, s) != first]
        out += [(name, {"tile": t, "split_k": s}) for t, s in ranked[:IGEMM_CANDIDATES]]
    return out


# ---------------------------------------------------------------- the cache

def key(spec: ConvSpec, precision: str) -> str:
    """The cache key of a problem: its shape, dtype and float32 precision (the device is
    the file), then its padding mode where not zeros."""
    mode = [spec.padding_mode] if spec.padding_mode != "zeros" else []
    return json.dumps([spec.n, spec.c, spec.k, list(spec.in_size), list(spec.kernel), list(spec.stride),
                       [list(p) for p in spec.pad], list(spec.dilation), spec.groups, str(spec.dtype),
                       precision] + mode, separators=(",", ":"))


def device_file(device: str, root: Path | None = None) -> Path:
    """<cache_dir>/autotune/<device name, filesystem-safe>.json"""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", device).strip("_") or "device"
    return Path(root if root is not None else _paths.cache_dir()) / "autotune" / f"{safe}.json"


def _read(path: Path) -> dict:
    """The entries of a cache file; {} (with a RuntimeWarning) when it is unreadable or not
    a cache file of this format."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        warnings.warn(f"gpuconv autotune: cannot read {path} ({exc}); ignoring it (it is rewritten by "
                      f"the next tuning)", RuntimeWarning, stacklevel=3)
        return {}
    try:
        data = json.loads(text)
        if not (isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("entries"), dict)):
            raise ValueError(f"not a format-{FORMAT} autotune file")
        entries = {k: e for k, e in data["entries"].items()
                   if isinstance(e, dict) and isinstance(e.get("variant"), str) and isinstance(e.get("config"), dict)}
    except ValueError as exc:
        warnings.warn(f"gpuconv autotune: {path} is corrupt ({exc}); ignoring it (it is rewritten by the "
                      f"next tuning)", RuntimeWarning, stacklevel=3)
        return {}
    return entries


def _write(path: Path, device: str, entries: dict) -> None:
    """Atomically: a temporary file in the same directory, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "device": device, "entries": entries}, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Cache:
    """Winners per device: in memory, backed by one JSON file per device under `root`
    (default: gpuconv's cache directory, read at first use)."""

    def __init__(self, root: str | Path | None = None):
        self.root = None if root is None else Path(root)
        self._mem: dict[str, dict] = {}

    def path(self, device: str) -> Path:
        return device_file(device, self.root)

    def entries(self, device: str) -> dict:
        with _lock:
            got = self._mem.get(device)
            if got is None:
                got = self._mem[device] = _read(self.path(device))
            return got

    def get(self, device: str, k: str) -> dict | None:
        return self.entries(device).get(k)

    def put(self, device: str, k: str, entry: dict) -> None:
        """Record `entry` under k in memory and in the file (merged with the file's entries:
        another process may have added some)."""
        with _lock:
            mem = self.entries(device)
            mem[k] = entry
            path = self.path(device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)    # warned once, at the first read
                merged = {**_read(path), **mem}
            try:
                _write(path, device, merged)
            except OSError as exc:
                warnings.warn(f"gpuconv autotune: cannot write {path} ({exc}); the winner is kept in "
                              f"memory only", RuntimeWarning, stacklevel=3)

    def clear_memory(self) -> None:
        with _lock:
            self._mem.clear()


_default_cache: Cache | None = None
_cupy_timers: dict = {}


def default_cache() -> Cache:
    global _default_cache
    with _lock:
        if _default_cache is None:
            _default_cache = Cache()
        return _default_cache


# ---------------------------------------------------------------- timing and selection

def default_timer(backend):
    """timer(run, candidate) -> seconds for `backend`: CUDA events on CuPy's stream (median of
    3-20 calls, at least 20 ms of work, after one warm-up call), else wall time of one call
    after a warm-up (the simulator)."""
    if getattr(backend, "name", None) == "cupy":
        def events(run, candidate):
            dev = backend.xp.cuda.runtime.getDevice()
            with _lock:
                t = _cupy_timers.get(dev)
                if t is None:       # one per device, made at its first tuning (it holds an L2-flush buffer)
                    from ..bench.timing import CupyTimer
                    t = _cupy_timers[dev] = CupyTimer()
            return t.run(run, min_repeats=3, max_repeats=20, min_time_s=0.02).median_s
        return events

    def wall(run, candidate):
        run()
        t0 = time.perf_counter()
        run()
        return time.perf_counter() - t0
    return wall


def _usable(entry: dict | None, spec: ConvSpec, facts: DeviceFacts, precision: str):
    """(variant, config) of a recorded winner if it still supports spec (and is capture-safe
    while capturing), else None."""
    if entry is None:
        return None
    name = entry.get("variant")
    if name not in variants.conv_variant_names():
        return None
    ok = supported_variants(spec, facts, precision)[name][0]
    if not ok or (facts.capturing and name in CAPTURE_UNSAFE):
        return None
    return name, dict(entry["config"])


def tune(spec: ConvSpec, precision: str, facts: DeviceFacts, run, timer=None, cache: Cache | None = None,
         source: str = "autotune"):
    """(variant, config): the recorded winner for (spec, precision) on facts.name, or, when
    there is none, every candidate timed through timer(lambda: run(name, config), (name, config))
    and the fastest recorded.  A candidate that raises (out of memory, a launch the device
    refuses) is skipped and noted; when all fail the first error propagates.  While
    facts.capturing nothing is timed: the recorded winner if usable, else None (the caller
    uses the dispatcher)."""
    cache = default_cache() if cache is None else cache
    k = key(spec, precision)
    hit = _usable(cache.get(facts.name, k), spec, facts, precision)
    if hit is not None or facts.capturing:
        return hit
    timer = timer or default_timer(None)
    times: dict[str, float] = {}
    errors: dict[str, str] = {}
    best, first_exc = None, None
    for name, config in candidates(spec, facts, precision):
        label = name + (json.dumps(config, sort_keys=True) if config else "")
        try:
            t = float(timer(lambda n=name, c=config: run(n, c), (name, config)))
        except (MemoryError, ValueError, RuntimeError) as exc:
            errors[label] = f"{type(exc).__name__}: {exc}"[:300]
            first_exc = first_exc or exc
            continue
        if not math.isfinite(t) or t < 0:
            errors[label] = f"timer returned {t!r}"
            continue
        times[label] = t * 1e6
        if best is None or t < best[0]:
            best = (t, name, config)
    if best is None:
        if first_exc is not None:
            raise first_exc
        raise RuntimeError(f"autotune: no candidate could be timed for {k}: {errors}")
    _, name, config = best
    cache.put(facts.name, k, {"variant": name, "config": config, "times_us": times, "errors": errors,
                              "source": source})
    return name, dict(config)


# ---------------------------------------------------------------- the benchmark's measurements

def entries_from_bench(result: dict, facts: DeviceFacts | None = None) -> dict:
    """Autotune entries from a `gpuconv bench` result (gpuconv.bench.runner.run): for every
    conv2d case, the fastest of the variants it timed by name (gpuconv:<variant>, each at its
    default configuration on `facts`, CUDA-event medians), keyed as tune() keys it.  The
    dispatcher's pick, its estimate and the measured winner side by side are what a MEASURE
    threshold is re-derived from."""
    from ..bench import cases as C
    from ..bench.suites import Case
    from ..engine import canonical
    facts = facts or DeviceFacts()
    names = set(variants.conv_variant_names())
    out = {}
    for rec in result.get("cases", []):
        if rec.get("op") != "conv2d" or rec.get("error"):
            continue
        case = Case(rec.get("suite", "s"), rec.get("name", "c"), "conv2d", tuple(rec["shape"]))
        precision = C.PRECISION.get(rec["dtype"], "highest")
        try:            # the spec as the engine hands it to the forward path (its key)
            spec = canonical(C.conv_spec(case, C.storage_dtype(rec["dtype"])))
        except (TypeError, ValueError):
            continue
        times = {r["impl"].split(":", 1)[1]: r["median_s"] for r in rec.get("results", [])
                 if r.get("status") == "ok" and r["impl"].startswith("gpuconv:")
                 and r["impl"].split(":", 1)[1] in names}
        if not times:
            continue
        best = min(times, key=times.get)
        pick = (rec.get("dispatch") or {}).get("pick")
        out[key(spec, precision)] = {
            "variant": best, "config": default_config(best, spec, facts, precision),
            "times_us": {n: t * 1e6 for n, t in times.items()}, "errors": {},
            "source": "gpu_record", "case": f"{rec.get('suite')}/{rec.get('name')}", "dispatcher_pick": pick}
    return out


def record_bench(result: dict, facts: DeviceFacts, root: str | Path | None = None) -> Path | None:
    """Write entries_from_bench(result, facts) into the device's file under `root` (default:
    the cache directory), merged with what is there; returns the file, None if no entry."""
    entries = entries_from_bench(result, facts)
    if not entries:
        return None
    cache = Cache(root)
    with _lock:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            merged = {**_read(cache.path(facts.name)), **entries}
        _write(cache.path(facts.name), facts.name, merged)
    if root is None and _default_cache is not None:
        _default_cache.clear_memory()
    return cache.path(facts.name)


def disagreements(path: str | Path, facts: DeviceFacts | None = None) -> list[dict]:
    """The entries of an autotune file whose measured winner is not what the dispatcher picks
    today (on `facts`, default: the dispatcher's H100 defaults): {key, case, pick, winner,
    pick_us, winner_us}, slowest pick first -- the list a MEASURE threshold is re-derived
    from.  `python -m gpuconv.cuda.autotune FILE` prints it."""
    from ..spec import bfloat16_dtype
    facts = facts or DeviceFacts()
    out = []
    for k, e in _read(Path(path)).items():
        try:
            n, c, kk, ins, ker, st, pad, dil, g, dt, prec, *mode = json.loads(k)
            dtype = bfloat16_dtype() if dt == "bfloat16" else np.dtype(dt)
            spec = ConvSpec(n=n, c=c, k=kk, in_size=tuple(ins), kernel=tuple(ker), stride=tuple(st),
                            pad=tuple(tuple(p) for p in pad), dilation=tuple(dil), groups=g, dtype=dtype,
                            padding_mode=mode[0] if mode else "zeros")
            pick = choose(spec, facts, prec)[0]
        except (ValueError, TypeError, KeyError) as exc:
            out.append({"key": k, "case": e.get("case"), "error": f"{type(exc).__name__}: {exc}"})
            continue
        if pick == e["variant"]:
            continue
        times = e.get("times_us", {})
        out.append({"key": k, "case": e.get("case"), "pick": pick, "winner": e["variant"],
                    "pick_us": next((t for lbl, t in times.items() if lbl.split("{")[0] == pick), None),
                    "winner_us": min(times.values()) if times else None})
    return sorted(out, key=lambda d: -((d.get("pick_us") or 0) / (d.get("winner_us") or 1)))


def _main(argv=None) -> int:
    import sys
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m gpuconv.cuda.autotune AUTOTUNE_FILE.json", file=sys.stderr)
        return 2
    rows = disagreements(argv[0])
    for d in rows:
        if "error" in d:
            print(f"{d['case']}: {d['error']}")
        else:
            print(f"{d['case']}: dispatcher {d['pick']} ({d['pick_us']} us), measured winner "
                  f"{d['winner']} ({d['winner_us']} us)")
    print(f"{len(rows)} disagreement(s)")
    return 0


__all__ = ["Cache", "candidates", "default_cache", "default_timer", "device_file", "disagreements", "entries_from_bench", "get_autotune",
           "key", "record_bench", "set_autotune", "tune"]


if __name__ == "__main__":
    raise SystemExit(_main())
