"""The benchmark loop: for each case, verify every implementation against the
float64 reference, time the ones that match, derive the rates.

A mismatch is recorded as FAIL and never timed; an exception as ERROR with its
message; an implementation that does not apply as SKIP with the reason.

Modes: "gpu" (CuPy arrays, CUDA events, cuDNN and cupyx anchors), "cpu" (the
CPU path against torch CPU and scipy.signal) and "sim" (the GPU path in the
kernel simulator on NumPy arrays, no anchors: a dry run of the GPU benchmark
whose times mean nothing).  A deadline (time.monotonic) stops the run between
cases; `on_case` sees the result so far after every case, so a caller can
write it as it grows.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field

from . import cases as C
from . import ceilings as CE
from . import env as E
from .suites import Case
from .timing import CupyTimer, TorchTimer, steady_malloc, time_cpu

DTYPES_GPU = ("float32", "tf32", "3xtf32", "float16", "bfloat16")
DTYPES_CPU = ("float32", "float64")


@dataclass
class Options:
    suites: tuple = ()
    dtype: str = "float32"
    variants: tuple | None = None      # None: every registered variant
    repeats: int | None = None         # minimum repeats (default 20 GPU, 10 CPU)
    min_time_s: float | None = None    # minimum measured time per implementation
    anchors: bool = True
    quick: bool = False
    force_cpu: bool = False
    mode: str | None = None            # "gpu" | "cpu" | "sim"; None: gpu if a device is present
    sim_backend: object = None         # mode "sim": the backend (default gpuconv.sim.SimBackend())
    deadline: float | None = None      # time.monotonic() after which no further case starts
    notes: list = field(default_factory=list)


def bf16_supported() -> tuple[bool, str]:
    from .. import spec as S
    if any("bfloat16" in str(d) for d in S.CONV_DTYPES):
        return True, ""
    return False, "gpuconv's ConvSpec accepts float16/float32/float64 only (no bfloat16 yet)"


def detect_mode(force_cpu: bool = False) -> tuple[str, dict]:
    facts = E.cuda_facts()
    if force_cpu:
        return "cpu", facts
    return ("gpu" if facts.get("available") else "cpu"), facts


def _mode(opts: Options) -> tuple[str, dict]:
    if opts.mode == "sim":
        return "sim", {"available": False, "reason": "simulator run (gpuconv.sim)"}
    mode, facts = detect_mode(opts.force_cpu or opts.mode == "cpu")
    if opts.mode == "gpu" and mode != "gpu":
        raise RuntimeError(f"mode 'gpu' asked for, but {facts.get('reason', 'no CUDA device')}")
    return mode, facts


def setup_torch(mode: str, dtype: str, notes: list) -> bool:
    """Matched settings for the torch anchors; returns whether torch can be used."""
    try:
        import torch
    except ImportError:
        notes.append("torch not installed: cuDNN / torch CPU anchors skipped")
        return False
    if mode == "cpu":
        torch.set_num_threads(E.cpu_cores())
        return True
    if not torch.cuda.is_available():
        notes.append("torch has no CUDA: cuDNN anchors skipped")
        return False
    tf32 = C.CUDNN_TF32.get(dtype, False)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    notes.append(f"cuDNN: benchmark=True, TF32 {'on' if tf32 else 'off'} (cudnn.allow_tf32 and "
                 f"cuda.matmul.allow_tf32 = {tf32})")
    if dtype in C.PRECISION:
        notes.append(f"like with like: gpuconv float32 at precision={C.PRECISION[dtype]!r} against cuDNN "
                     f"with TF32 {'on' if tf32 else 'off'}"
                     + (" (3xTF32 and exact FP32: the same accuracy class)" if dtype == "3xtf32" else ""))
    return True


def case_dtype(case: Case, opts: Options) -> str:
    return case.dtype or opts.dtype


def _rates(rec: dict, prep: C.Prepared, ceilings: dict, dtype: str) -> None:
    t = rec["median_s"]
    rec["tflops"] = prep.flops / t / 1e12
    rec["gbps"] = prep.min_bytes / t / 1e9
    key, peak = CE.compute_ceiling(ceilings, dtype)
    rec["pct_compute"] = 100 * rec["tflops"] / peak if peak else None
    rec["compute_ceiling"] = key
    bw = ceilings.get("copy_GBps")
    rec["pct_bandwidth"] = 100 * rec["gbps"] / bw if bw else None


def run_impl(impl: C.Impl, prep: C.Prepared, ceilings: dict, timers: dict, opts: Options,
             mode: str) -> dict:
    rec = {"impl": impl.name, "role": impl.role, "status": None, "note": impl.note}
    try:
        try:
            out = impl.fn()
        except ValueError as exc:
            if not impl.forced:
                raise
            # a forced algorithm refused by the API's validation, before any kernel ran
            rec.update(status="SKIP", note=f"refused: {exc}"[:500])
            return rec
        host = C.to_host(out)
        if prep.verify_index is not Ellipsis:
            host = host[prep.verify_index]
        ok, err, msg = C.compare(host, prep.reference, prep.dtype, prep.reduction)
        rec["max_abs_err"] = err
        del out, host
        if not ok:
            rec.update(status="FAIL", note=msg)
            return rec
        gpu = mode == "gpu"
        kw = dict(min_repeats=opts.repeats or (20 if gpu else 10),
                  min_time_s=opts.min_time_s if opts.min_time_s is not None else
                  (0.2 if gpu else 0.5))
        if mode == "sim":
            # the simulator's times mean nothing: one timed call proves the timing path
            kw.update(min_repeats=opts.repeats or 1, max_repeats=opts.repeats or 1, min_time_s=0.0,
                      settle_s=0.0, warmup=0)
        elif opts.quick:
            kw.update(min_repeats=opts.repeats or 3, min_time_s=opts.min_time_s or 0.05)
        if impl.timer == "cpu":
            t = time_cpu(impl.fn, **kw)
        else:
            t = timers[impl.timer].run(impl.fn, **kw)
    except Exception as exc:  # noqa: BLE001 - one implementation's failure is one cell
        rec.update(status="ERROR", note=f"{type(exc).__name__}: {exc}"[:500])
        return rec
    rec.update(status="ok", times_s=t.times_s, median_s=t.median_s, min_s=t.min_s,
               repeats=len(t.times_s))
    _rates(rec, prep, ceilings, prep.dtype)
    return rec


def _ratios(results: list[dict]) -> dict:
    mine = next((r for r in results if r["impl"] in ("gpuconv:auto", "gpuconv:numpy")
                 and r["status"] == "ok"), None)
    if mine is None:
        return {}
    return {r["impl"]: r["median_s"] / mine["median_s"] for r in results
            if r["role"] == "anchor" and r["status"] == "ok"}


def geomean(values) -> float | None:
    vals = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


def summarize(case_records: list[dict]) -> dict:
    """Per suite, per anchor: geomean of anchor time / gpuconv time, and how many
    cases it covers."""
    out: dict = {}
    for rec in case_records:
        s = out.setdefault(rec["suite"], {"cases": 0, "fail": 0, "error": 0, "ratios": {}, "by_op": {}})
        s["cases"] += 1
        s["fail"] += sum(r["status"] == "FAIL" for r in rec["results"])
        s["error"] += sum(r["status"] == "ERROR" for r in rec["results"]) + (rec.get("error") is not None)
        for anchor, ratio in rec.get("ratios", {}).items():
            s["ratios"].setdefault(anchor, []).append(ratio)
            s["by_op"].setdefault(rec["op"], {}).setdefault(anchor, []).append(ratio)
    for s in out.values():
        s["geomean"] = {a: geomean(v) for a, v in s["ratios"].items()}
        s["n"] = {a: len(v) for a, v in s["ratios"].items()}
        # per operation (a suite mixing conv2d with gradients or signal cases)
        s["geomean_by_op"] = {op: {a: {"geomean": geomean(v), "n": len(v)} for a, v in per.items()}
                              for op, per in s["by_op"].items()}
        del s["ratios"], s["by_op"]
    return out


def run(cases: list[Case], opts: Options, progress=None, on_case=None) -> dict:
    """Run the cases; returns the JSON-ready result (see report.SCHEMA).
    on_case(result so far) is called after every case."""
    mode, facts = _mode(opts)
    notes = opts.notes
    if mode == "cpu" and not opts.force_cpu and opts.mode != "cpu":
        notes.append(f"CPU mode: {facts.get('reason', 'no CUDA device')}")
    env = E.collect(mode)
    backend = None
    if mode == "sim":
        from ..sim import SimBackend
        backend = opts.sim_backend or SimBackend()
        notes.append("simulator run: the GPU path's kernels on the CPU (gpuconv.sim); times are not "
                     "GPU times, and there are no anchors")
    anchors = opts.anchors and mode != "sim"
    torch_ok = setup_torch(mode, opts.dtype, notes) if anchors else False
    if not opts.anchors:
        notes.append("anchors disabled (--no-anchors)")
    if progress:
        progress.start("ceilings", 1)
    if mode == "gpu":
        ceilings = CE.gpu_ceilings(opts.quick, notes)
        timers = {"cupy": CupyTimer()}
        if torch_ok:
            timers["torch"] = TorchTimer()
    else:
        malloc_note = steady_malloc()
        env["malloc"] = malloc_note
        if malloc_note:
            notes.append(malloc_note)
        ceilings = CE.cpu_ceilings(opts.quick or mode == "sim")
        timers = {}
    if progress:
        progress.advance()
        progress.start("cases", len(cases))

    records = []
    result = {"schema": "gpuconv-bench/1", "env": env, "mode": mode, "dtype": opts.dtype,
              "suites": sorted({c.suite for c in cases}, key=[c.suite for c in cases].index),
              "options": {"repeats": opts.repeats, "min_time_s": opts.min_time_s,
                          "anchors": anchors, "quick": opts.quick,
                          "variants": list(opts.variants) if opts.variants else None},
              "ratio_definition": "anchor median time / gpuconv median time (>1: gpuconv faster)",
              "ceilings": ceilings, "notes": notes, "cases": records, "summary": {}}
    for i, case in enumerate(cases):
        if opts.deadline is not None and time.monotonic() >= opts.deadline:
            notes.append(f"deadline reached: {len(cases) - i} of {len(cases)} cases not run "
                         f"(from {case.id})")
            break
        dtype = case_dtype(case, opts)
        rec = {"suite": case.suite, "name": case.name, "op": case.op, "shape": list(case.shape),
               "shape_str": case.shape_str(), "mode": case.mode, "dtype": dtype, "results": [],
               "skipped": {}, "notes": [], "error": None}
        if progress:
            progress.case(f"{case.id} [{dtype}]")
        try:
            prep, host = C.prepare_host(case, dtype)
            rec.update(flops=prep.flops, min_bytes=prep.min_bytes,
                       intensity=prep.flops / prep.min_bytes if prep.min_bytes else None)
            if mode == "cpu":
                C.add_cpu_impls(prep, host, anchors=anchors)
            else:
                C.add_device_impls(prep, host, anchors=anchors, variants=opts.variants,
                                   torch_ok=torch_ok, backend=backend)
            for impl in prep.impls:
                if progress:
                    progress.describe(f"{case.id} [{dtype}] {impl.name}")
                rec["results"].append(run_impl(impl, prep, ceilings, timers, opts, mode))
            rec["skipped"] = dict(prep.skipped)
            rec["notes"] = list(prep.notes)
            rec["dispatch"] = prep.dispatch
            rec["ratios"] = _ratios(rec["results"])
        except Exception as exc:  # noqa: BLE001 - a case that cannot be set up is reported
            rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            prep = host = None
            _free(mode)
        records.append(rec)
        result["summary"] = summarize(records)
        if on_case is not None:
            on_case(result)
        if progress:
            progress.advance()
    if progress:
        progress.stop()
    env["loadavg_end"] = E.loadavg()
    result["summary"] = summarize(records)
    return result


def _free(mode: str) -> None:
    gc.collect()
    if mode != "gpu":
        return
    try:
        import cupy
        cupy.get_default_memory_pool().free_all_blocks()
    except Exception:  # noqa: BLE001
        pass
    try:
        import torch
        torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass
