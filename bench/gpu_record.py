"""The GPU record: one command for a machine with a CUDA device, on a time budget.

    python bench/gpu_record.py --budget SECONDS --out DIR [--commit SHA] [--sim]

Stages, in order of value; each has its own deadline (its share of what is
left of the budget, so time a stage does not use passes on), every child
process its own timeout, and DIR/record.json is rewritten as results arrive,
so a run cut short still leaves what it finished:

  1. env        device, driver, CUDA, CuPy, torch, cuDNN, nvcc / compute-sanitizer
                versions, the commit (--commit: the device's copy of the tree has no .git)
  2. compile    every kernels_cu module with all its instantiations, one process
                each, in parallel, timed (CuPy's disk cache then serves every later
                process: the tests, the sanitizer runs, the benchmark)
  3. smoke      every registered variant and every public operation once, on an
                irregular shape, against the float64 reference
  4. tests      `pytest -m gpu`, the kernel files first, counts as they finish
  5. sanitizer  compute-sanitizer memcheck, then racecheck, on one small launch per
                kernel family
  6. agreement  per family: GPU against the simulator and the reference, same inputs
  7. bench      one representative case per kernel family and dtype (the dispatcher's
                pick on the GPU suites, float32 and float16) first, then the whole GPU
                suites in float32, then in float16; cuDNN and cupyx anchors
  8. write      DIR/bench.json (every result, raw times), DIR/bench.png,
                DIR/summary.md; DIR/record.json holds the stages

--sim runs the same stages on the kernel simulator (gpuconv.sim) with NumPy
arrays and no anchors: a dry run that needs no GPU (CI runs it with a small
budget).  There stage 2 builds the simulator's modules, stage 4 runs
`pytest -m sim`, stage 5 runs AddressSanitizer builds (SimBackend(asan=True)),
stage 6 compares the simulator with the reference, stage 7 times small cases.

The bench table goes into bench/README.md with
`python bench/update_readme.py DIR` (GPU runs only).

`--target FAMILY [--first] [--backend gpu|sim|sim-asan]` runs one family's checks
and prints their errors (what compute-sanitizer wraps); `--list` names the families.
"""
from __future__ import annotations

import time

T_START = time.monotonic()          # the budget counts from here, before the imports

import argparse  # noqa: E402
import concurrent.futures as cf  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gpuconv  # noqa: E402
from gpuconv import reference  # noqa: E402
from gpuconv.spec import make_spec  # noqa: E402

SCRIPT = Path(__file__).resolve()

# Stage weights: a stage's deadline is now + weight / (weights of it and the
# stages after it) x (time left).  The benchmark is last and takes what is left.
# compile comes first and is worth more than its share of the checks: every
# later process finds the modules in CuPy's cache (a killed compile is lost).
STAGES = (("env", 3), ("compile", 14), ("smoke", 6), ("tests", 24), ("sanitizer", 15),
          ("agreement", 8), ("bench", 30))
# A stage's floor, as long as it is at most a quarter of what is left: the env
# child imports CuPy and torch (2-10 s, more on a busy machine), and without its
# answer the record has no device and cannot tell a machine without a GPU.
STAGE_FLOOR_S = {"env": 15.0}
# Seconds kept back for the summary, the record and the child processes' exits
# (the bench worker draws its own PNG within its stage).
RESERVE_S = 3.0
# After SIGTERM a child group gets this long before SIGKILL.
KILL_GRACE_S = 2.0

# Largest error / max|reference| a check accepts, per dtype: float16 stores
# outputs with 11 significant bits (4.9e-4) after fp32 accumulation; fp32 sums of
# up to ~200 terms stay within ~1e-6 of max|ref|.
TOLERANCE = {"float16": 4e-3, "float32": 2e-5, "complex64": 2e-5, "float64": 1e-12, "complex128": 1e-12}

# Test files in order of value: kernels (every variant), the operation kernels,
# tensor cores, then the public API on the device path.
TEST_ORDER = ("test_kernels.py", "test_kernels_ops.py", "test_kernels_tc.py", "test_conv2d.py",
              "test_ops.py", "test_signal.py")


# ============================================================ the checks
# Small, irregular shapes: odd sizes, channel counts off every tile, stride,
# dilation, asymmetric padding, groups; (N, C, H, W), (K, C/g, R, S), stride, pad, dil, groups.
CONV_CASES = [
    ((2, 5, 13, 11), (7, 5, 3, 3), 1, 1, 1, 1),
    ((1, 6, 9, 17), (8, 3, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    ((3, 4, 8, 8), (6, 4, 1, 1), 1, 0, 1, 1),
    ((2, 6, 10, 9), (12, 1, 3, 3), (1, 2), 1, 1, 6),
    ((2, 40, 9, 11), (72, 40, 3, 3), 1, 1, 1, 1),          # big enough for the tensor-core tile
]
DTYPES = ("float32", "float16")


@dataclasses.dataclass
class Check:
    """One call of the GPU path and its float64 reference.  build(rng, put) ->
    (call, reference): `put` moves a host array where the path runs."""
    family: str
    name: str
    dtype: str
    build: object


def _rand(rng, shape, dtype):
    dtype = np.dtype(dtype)
    a = rng.standard_normal(shape)
    if dtype.kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def _f64(a):
    return np.asarray(a, dtype=np.complex128 if np.iscomplexobj(a) else np.float64)


def _silu(v):
    return v / (1.0 + np.exp(-v))


def _conv_checks(variant: str) -> list[Check]:
    from gpuconv.cuda import variants
    out = []
    for dtype in DTYPES:
        for i, (xs, ws, st, pd, dl, g) in enumerate(CONV_CASES):
            spec, _ = make_spec(xs, ws, (ws[0],), st, pd, dl, g, np.dtype(dtype), 2)
            if not variants.get(variant).supports(spec)[0]:
                continue

            def build(rng, put, xs=xs, ws=ws, st=st, pd=pd, dl=dl, g=g, dtype=dtype, spec=spec):
                x, w, b = _rand(rng, xs, dtype), _rand(rng, ws, dtype), _rand(rng, (ws[0],), dtype)
                ref = reference.conv(x, w, b, spec, accumulate="float64")
                gx, gw, gb = put(x), put(w), put(b)
                return (lambda: gpuconv.conv2d(gx, gw, gb, st, pd, dl, g, activation="silu",
                                               algorithm=variant)), _silu(ref)
            out.append(Check(f"conv:{variant}", f"{dtype} {xs}x{ws}", dtype, build))
    return out


def _transpose_spec(x_shape, w_shape, stride, padding, output_padding, groups, dilation):
    """The forward spec whose input gradient is this transposed convolution (its output
    size including output_padding, which must stay below the stride)."""
    n, _, *size = x_shape
    cin, coutg, *kernel = w_shape
    out = [(i - 1) * s - 2 * p + d * (k - 1) + 1 + op
           for i, s, p, d, k, op in zip(size, stride, padding, dilation, kernel, output_padding)]
    spec, _ = make_spec((n, coutg * groups, *out), (cin, coutg, *kernel), None, stride, padding, dilation,
                        groups, np.float64, len(size))
    assert spec.output_shape == tuple(x_shape), (spec.output_shape, x_shape)
    return spec


def _transpose_checks() -> list[Check]:
    out = []
    for dtype in DTYPES:
        def build(rng, put, dtype=dtype):
            x, w, b = _rand(rng, (2, 6, 5, 7), dtype), _rand(rng, (6, 5, 3, 2), dtype), _rand(rng, (10,), dtype)
            spec = _transpose_spec(x.shape, w.shape, (2, 3), (1, 0), (1, 2), 2, (1, 1))
            ref = reference.dgrad(x, w, spec, accumulate="float64") + _f64(b)[:, None, None]
            gx, gw, gb = put(x), put(w), put(b)
            return (lambda: gpuconv.conv_transpose2d(gx, gw, gb, (2, 3), (1, 0), (1, 2), 2, 1)), ref
        out.append(Check("transpose", f"{dtype} conv_transpose2d", dtype, build))

        def build_dgrad(rng, put, dtype=dtype):
            w, dy = _rand(rng, (6, 2, 3, 3), dtype), _rand(rng, (3, 6, 6, 9), dtype)
            spec, _ = make_spec((3, 4, 11, 9), (6, 2, 3, 3), None, (2, 1), 1, 1, 2, np.float64, 2)
            ref = reference.dgrad(dy, w, spec, accumulate="float64")
            gw, gdy = put(w), put(dy)
            return (lambda: gpuconv.conv2d_input((3, 4, 11, 9), gw, gdy, (2, 1), 1, 1, 2)), ref
        out.append(Check("transpose", f"{dtype} conv2d_input", dtype, build_dgrad))
    return out


def _wgrad_checks() -> list[Check]:
    out = []
    for dtype in DTYPES:
        for det in (True, False):
            def build(rng, put, dtype=dtype, det=det):
                x, dy = _rand(rng, (3, 4, 11, 9), dtype), _rand(rng, (3, 6, 6, 9), dtype)
                spec, _ = make_spec(x.shape, (6, 2, 3, 3), None, (2, 1), 1, 1, 2, np.float64, 2)
                ref = reference.wgrad(x, dy, spec, accumulate="float64")
                gx, gdy = put(x), put(dy)
                return (lambda: gpuconv.conv2d_weight(gx, (6, 2, 3, 3), gdy, (2, 1), 1, 1, 2,
                                                      deterministic=det)), ref
            out.append(Check("wgrad", f"{dtype} conv2d_weight deterministic={det}", dtype, build))
    return out


def _separable_checks() -> list[Check]:
    out = []
    for dtype in DTYPES:
        for alg in ("fused", "two_pass"):
            def build(rng, put, dtype=dtype, alg=alg):
                x, dw = _rand(rng, (2, 5, 9, 12), dtype), _rand(rng, (10, 1, 3, 3), dtype)
                pw, b = _rand(rng, (7, 10, 1, 1), dtype), _rand(rng, (7,), dtype)
                dspec, _ = make_spec(x.shape, dw.shape, None, 1, 1, 1, 5, np.float64, 2)
                mid = reference.conv(x, dw, None, dspec, accumulate="float64")
                pspec, _ = make_spec(mid.shape, pw.shape, (7,), 1, 0, 1, 1, np.float64, 2)
                ref = np.maximum(reference.conv(mid, pw, b, pspec, accumulate="float64"), 0)
                gx, gdw, gpw, gb = put(x), put(dw), put(pw), put(b)
                return (lambda: gpuconv.separable_conv2d(gx, gdw, gpw, gb, 1, 1, 1, activation="relu",
                                                         algorithm=alg)), ref
            out.append(Check("separable", f"{dtype} {alg}", dtype, build))
    return out


def _signal_checks() -> list[Check]:
    out = []
    for dtype in ("float32", "float64", "complex64"):
        for op, mode, boundary in (("correlate2d", "full", "fill"), ("convolve2d", "same", "wrap"),
                                   ("correlate2d", "valid", "symm")):
            def build(rng, put, dtype=dtype, op=op, mode=mode, boundary=boundary):
                import scipy.signal as ss
                a, k = _rand(rng, (37, 45), dtype), _rand(rng, (5, 4), dtype)
                fill = 1.5 if boundary == "fill" else 0
                ref = getattr(ss, op)(_f64(a), _f64(k), mode=mode, boundary=boundary, fillvalue=fill)
                ga, gk = put(a), put(k)
                fn = getattr(gpuconv, op)
                return (lambda: fn(ga, gk, mode=mode, boundary=boundary, fillvalue=fill)), ref
            out.append(Check("signal", f"{dtype} {op} {mode} {boundary}", dtype, build))
    return out


def targets() -> dict[str, list[Check]]:
    """Kernel family -> its checks (every registered conv variant, the transposed
    conv / input gradient, the weight gradient, separable, the signal core)."""
    from gpuconv.cuda import variants
    t = {f"conv:{v}": _conv_checks(v) for v in variants.conv_variant_names()}
    t.update({"transpose": _transpose_checks(), "wgrad": _wgrad_checks(),
              "separable": _separable_checks(), "signal": _signal_checks()})
    return t


def _nd_check(op: str, nd: int, dtype: str) -> Check:
    """A public operation of any dimensionality, once, on an irregular shape."""
    size = (13, 11, 7)[:nd]
    kernel = (3, 2, 3)[:nd]
    stride = (2, 1, 1)[:nd]
    dil = (1, 2, 1)[:nd]

    def build(rng, put):
        x = _rand(rng, (2, 6) + size, dtype)
        if op == "conv":
            w = _rand(rng, (4, 3) + kernel, dtype)
            spec, _ = make_spec(x.shape, w.shape, None, stride, 1, dil, 2, np.float64, nd)
            ref = reference.conv(x, w, None, spec, accumulate="float64")
            gx, gw = put(x), put(w)
            fn = getattr(gpuconv, f"conv{nd}d")
            return (lambda: fn(gx, gw, None, stride, 1, dil, 2)), ref
        if op == "transpose":
            w = _rand(rng, (6, 2) + kernel, dtype)
            spec = _transpose_spec(x.shape, w.shape, stride, (1,) * nd, (0,) * nd, 3, dil)
            ref = reference.dgrad(x, w, spec, accumulate="float64")
            gx, gw = put(x), put(w)
            fn = getattr(gpuconv, f"conv_transpose{nd}d")
            return (lambda: fn(gx, gw, None, stride, 1, 0, 3, dil)), ref
        spec, _ = make_spec(x.shape, (4, 3) + kernel, None, stride, 1, dil, 2, np.float64, nd)
        if op == "input":
            w, dy = _rand(rng, spec.weight_shape, dtype), _rand(rng, spec.output_shape, dtype)
            ref = reference.dgrad(dy, w, spec, accumulate="float64")
            gw, gdy = put(w), put(dy)
            fn = getattr(gpuconv, f"conv{nd}d_input")
            return (lambda: fn(spec.input_shape, gw, gdy, stride, 1, dil, 2)), ref
        if op == "weight":
            dy = _rand(rng, spec.output_shape, dtype)
            ref = reference.wgrad(x, dy, spec, accumulate="float64")
            gx, gdy = put(x), put(dy)
            fn = getattr(gpuconv, f"conv{nd}d_weight")
            return (lambda: fn(gx, spec.weight_shape, gdy, stride, 1, dil, 2)), ref
        # separable: depthwise with multiplier 2, then 1x1 to 5 channels
        dw, pw = _rand(rng, (12, 1) + kernel, dtype), _rand(rng, (5, 12) + (1,) * nd, dtype)
        dspec, _ = make_spec(x.shape, dw.shape, None, stride, 1, dil, 6, np.float64, nd)
        mid = reference.conv(x, dw, None, dspec, accumulate="float64")
        pspec, _ = make_spec(mid.shape, pw.shape, None, 1, 0, 1, 1, np.float64, nd)
        ref = reference.conv(mid, pw, None, pspec, accumulate="float64")
        gx, gdw, gpw = put(x), put(dw), put(pw)
        fn = getattr(gpuconv, f"separable_conv{nd}d")
        return (lambda: fn(gx, gdw, gpw, None, stride, 1, dil)), ref
    return Check("public", f"{dtype} {op} {nd}-D", dtype, build)


def smoke_checks() -> list[Check]:
    """Every family's first check (every registered variant), then every public
    operation in 1-D, 2-D and 3-D once."""
    checks = [cs[0] for cs in targets().values() if cs]
    checks += [_nd_check(op, nd, "float32") for op in ("conv", "transpose", "input", "weight", "separable")
               for nd in (1, 2, 3)]
    return checks


def rel_err(out, ref) -> float:
    """max |out - ref| / max |ref|; inf for a NaN (an unwritten or poisoned element)
    or a shape mismatch."""
    out, ref = _f64(out), _f64(ref)
    if out.shape != ref.shape:
        return float("inf")
    if ref.size == 0:
        return 0.0
    err = np.abs(out - ref)
    if np.isnan(err).any():
        return float("inf")
    return float(err.max()) / max(float(np.abs(ref).max()), 1e-30)


# ============================================================ running checks
def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@contextlib.contextmanager
def on_path(kind: str):
    """(put) for a path: 'gpu' (CuPy arrays), 'sim' / 'sim-asan' (NumPy arrays
    inside gpuconv.use_backend(SimBackend()))."""
    if kind == "gpu":
        import cupy
        yield cupy.asarray
        cupy.cuda.runtime.deviceSynchronize()
        return
    from gpuconv.sim import SimBackend
    with gpuconv.use_backend(SimBackend(asan=kind == "sim-asan")):
        yield np.array


def run_check(check: Check, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(output on the host, float64 reference).  Seeded per check, so the GPU and
    the simulator see the same inputs."""
    rng = np.random.default_rng([seed, *check.name.encode()])
    with on_path(kind) as put:
        call, ref = check.build(rng, put)
        out = _host(call())
    return out, ref


def _check_record(check: Check, kind: str) -> dict:
    t0 = time.perf_counter()
    try:
        out, ref = run_check(check, kind)
        err = rel_err(out, ref)
        rec = {"error": err, "ok": bool(err <= TOLERANCE[check.dtype])}
    except Exception as exc:  # noqa: BLE001 - one failed check is one line of the record
        rec = {"ok": False, "exception": f"{type(exc).__name__}: {exc}"[:800]}
    rec.update(family=check.family, check=check.name, seconds=round(time.perf_counter() - t0, 3))
    return rec


# ============================================================ worker entry points
def _worker_compile(module: str, sim: bool) -> dict:
    from gpuconv.cuda import variants
    exprs = tuple(variants.MODULES[module])
    t0 = time.perf_counter()
    try:
        if sim:
            from gpuconv._paths import kernels_dir
            from gpuconv.sim._build import build_module
            build_module(kernels_dir() / module, exprs)
        else:
            from gpuconv.cuda import loader
            loader.get_module(module, exprs).get_function(exprs[0])      # compiles the RawModule
    except Exception as exc:  # noqa: BLE001 - one module's failure is one line of the record
        return {"module": module, "ok": False, "error": f"{type(exc).__name__}: {exc}"[-3000:],
                "seconds": round(time.perf_counter() - t0, 3)}
    return {"module": module, "ok": True, "instantiations": len(exprs),
            "seconds": round(time.perf_counter() - t0, 3)}


def _worker_agreement(family: str, sim: bool) -> dict:
    from gpuconv.sim import sim_available
    out = {"family": family, "cases": 0, "worst": {}}
    worst = out["worst"]
    have_sim = sim_available()
    if not have_sim:
        out["note"] = "no simulator here (it needs Linux and g++): GPU against the reference only"
    for check in targets()[family]:
        if sim:
            s, ref = run_check(check, "sim")
            worst["sim_vs_reference"] = max(worst.get("sim_vs_reference", 0.0), rel_err(s, ref))
        else:
            g, ref = run_check(check, "gpu")
            worst["gpu_vs_reference"] = max(worst.get("gpu_vs_reference", 0.0), rel_err(g, ref))
            if have_sim:
                s, _ = run_check(check, "sim")
                worst["gpu_vs_sim"] = max(worst.get("gpu_vs_sim", 0.0), rel_err(g, s))
        out["cases"] += 1
        tol = TOLERANCE[check.dtype]
        out["ok"] = out.get("ok", True) and all(v <= tol for v in worst.values())
    return out


def _emit(obj) -> None:
    print("@@" + json.dumps(obj, default=str), flush=True)


def _emitted(text: str) -> list[dict]:
    return [json.loads(line[2:]) for line in text.splitlines() if line.startswith("@@")]


def worker(args) -> int:
    """Child-process entry points; each prints one '@@{json}' line per result."""
    sim = args.sim
    if args.worker == "env":
        _emit(Record.env_facts(sim))
    elif args.worker == "compile":
        for module in args.module.split(","):
            _emit(_worker_compile(module, sim))
    elif args.worker == "smoke":
        for check in smoke_checks():
            _emit(_check_record(check, "sim" if sim else "gpu"))
    elif args.worker == "agreement":
        _emit(_worker_agreement(args.target, sim))
    elif args.worker == "bench":
        _emit({"bench": _worker_bench(args)})
    return 0


# ============================================================ the benchmark stage
def bench_cases(sim: bool):
    """The benchmark's cases in priority order (see the module docstring)."""
    from gpuconv.bench import cases as C
    from gpuconv.bench import suites
    if sim:
        # the simulator runs a kernel at ~30 ns per thread per barrier: the quick
        # suite at batch 1 and half its spatial size
        out = []
        for c in suites.SUITES["quick"]:
            shape = list(c.shape)
            if c.op in suites.SIGNAL_OPS:
                shape[0], shape[1] = shape[0] // 4, shape[1] // 4
            else:
                shape[0], shape[2], shape[3] = 1, shape[2] // 2, shape[3] // 2
            out.append(dataclasses.replace(c, suite="sim", shape=tuple(shape), dtype=c.dtype or "float32"))
        # and the first conv in float16 (the tensor-core variant's case)
        first = next(c for c in out if c.op == "conv2d")
        out.insert(1, dataclasses.replace(first, name=first.name + "_fp16", dtype="float16"))
        return out
    from gpuconv.cuda import dispatch
    facts = C.device_facts()
    gpu_suites = suites.get(suites.DEFAULT_GPU)
    rep, seen = [], set()
    for dtype in ("float32", "float16"):
        for c in gpu_suites:
            if c.op in suites.SIGNAL_OPS:
                key = (c.op, "float32")
            elif c.op == "conv2d":
                key = (dispatch.choose(C.conv_spec(c, np.dtype(dtype)), facts)[0], dtype)
            else:
                key = (c.op, dtype)
            if key not in seen:
                seen.add(key)
                rep.append(dataclasses.replace(c, suite="representative", name=f"{key[0]}_{dtype}_{c.name}",
                                               dtype=c.dtype or dtype))
    whole = [dataclasses.replace(c, dtype=c.dtype or "float32") for c in gpu_suites]
    half = [dataclasses.replace(c, suite=f"{c.suite}_fp16", dtype="float16")
            for c in suites.get(("resnet50_b32", "vgg16", "mobilenetv2_dw", "backward"))]
    return rep + whole + half


def _worker_bench(args) -> dict:
    from gpuconv.bench import report, runner
    out = Path(args.out)
    cases = bench_cases(args.sim)
    opts = runner.Options(suites=tuple(dict.fromkeys(c.suite for c in cases)), dtype="float32",
                          mode="sim" if args.sim else "gpu", deadline=time.monotonic() + args.seconds,
                          notes=["gpu_record.py: representative cases per kernel family and dtype, "
                                 "then the whole suites, until the stage's deadline"])
    path = out / "bench.json"
    # the conv2d cases' fastest variant per (shape, dtype, precision): gpuconv.set_autotune's
    # file, in DIR/autotune (to commit), rewritten after every case like bench.json
    from gpuconv.bench import cases as C
    from gpuconv.cuda import autotune
    from gpuconv.cuda.facts import DeviceFacts
    facts = DeviceFacts(name="simulator") if args.sim else C.device_facts()
    tuned = None

    def save(result):
        nonlocal tuned
        _atomic_write(path, json.dumps(result, indent=1, default=report._jsonable) + "\n")
        tuned = autotune.record_bench(result, facts, out) or tuned

    result = runner.run(cases, opts, on_case=save)
    save(result)
    if tuned is not None and not args.sim:
        autotune.record_bench(result, facts)        # and the cache directory's, to use here
    if result["cases"]:
        from gpuconv.bench import plot
        plot.plot(result, out / "bench.png")
    return {"cases": len(result["cases"]), "of": len(cases), "path": str(path),
            "autotune": None if tuned is None else str(tuned.relative_to(out))}


# ============================================================ the record
def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_child(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int | None, str, float]:
    """(exit code or None when it ran past `timeout`, its output, seconds).  The child
    gets its own process group and writes to a file, so a timeout kills it with
    everything it started (pytest's and the simulator's children) and no pipe can
    keep this process waiting."""
    t0 = time.monotonic()
    if timeout <= 0:
        return None, "not started: no time left", 0.0
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        log.seek(0)
        text = log.read()
    return rc, text, time.monotonic() - t0


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _self(*args: str, sim: bool) -> list[str]:
    return [sys.executable, str(SCRIPT), *args] + (["--sim"] if sim else [])


class Record:
    """The run's budget and its record, written to DIR/record.json as it grows."""

    def __init__(self, args):
        self.args = args
        self.sim = args.sim
        self.out = Path(args.out)
        self.t0 = T_START
        self.end = self.t0 + max(args.budget - RESERVE_S, 1.0)
        self.env = _child_env()
        self.data = {"schema": "gpuconv-gpu-record/1", "mode": "sim" if self.sim else "gpu",
                     "budget_s": args.budget, "started": _now(), "stages": {}}

    def left(self) -> float:
        return self.end - time.monotonic()

    def deadline(self, stage: str) -> float:
        """This stage's share of what is left of the budget (as a time.monotonic value)."""
        names = [n for n, _ in STAGES]
        weights = dict(STAGES)
        rest = sum(weights[n] for n in names[names.index(stage):])
        left = self.left()
        share = max(left * weights[stage] / rest, min(STAGE_FLOOR_S.get(stage, 0.0), left / 4))
        return time.monotonic() + share

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self.t0, 2)
        _atomic_write(self.out / "record.json", json.dumps(self.data, indent=1, default=str) + "\n")

    def stage(self, name: str, fn) -> None:
        deadline = self.deadline(name)
        entry = self.data["stages"].setdefault(name, {})
        entry.update(status="running", allotted_s=round(deadline - time.monotonic(), 1))
        self.save()
        t0 = time.monotonic()
        try:
            fn(entry, deadline)
            entry["status"] = entry.get("status") if entry.get("status") != "running" else "done"
        except Exception as exc:  # noqa: BLE001 - one stage's failure must not lose the others
            entry.update(status="error", error=f"{type(exc).__name__}: {exc}"[:2000])
        finally:
            entry["seconds"] = round(time.monotonic() - t0, 2)
            self.save()
        print(f"[gpu_record] {name}: {entry['status']} in {entry['seconds']:.1f} s "
              f"(allotted {entry['allotted_s']:.0f} s, {max(self.left(), 0):.0f} s left)", flush=True)

    # -------------------------------------------------------------- stages
    def env_stage(self, entry, deadline):
        # in a child: importing CuPy and torch takes seconds, more on a busy machine
        rc, text, _ = run_child(_self("--worker", "env", sim=self.sim), deadline - time.monotonic() - 1.0,
                                self.env)
        got = _emitted(text)
        if got:
            info = got[0]
        else:
            import platform
            from gpuconv.bench import env as E
            entry["status"] = "deadline" if rc is None else "error"
            entry["tail"] = text[-2000:]
            info = {"mode": "sim" if self.sim else "gpu", "python": platform.python_version(),
                    "numpy": np.__version__, "cpu_model": E.cpu_model(), "cpu_cores": E.cpu_cores(),
                    "git_commit": E.git_commit(), "cuda": {}, "torch": {}}
        info["commit"] = self.args.commit or info.get("git_commit")
        self.data["env"] = info
        if not self.sim and got and not info["cuda"].get("available"):
            entry["status"] = "no GPU"
            raise SystemExit(f"no CUDA device ({info['cuda'].get('reason')}); use --sim for a dry run")

    @staticmethod
    def env_facts(sim: bool) -> dict:
        from gpuconv.bench import env as E
        info = E.collect("sim" if sim else "gpu")
        tools = {}
        for tool, flag in (("nvcc", "--version"), ("compute-sanitizer", "--version"), ("ncu", "--version"),
                           ("nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit"
                                          " --format=csv,noheader")):
            exe = shutil.which(tool)
            if exe is None:
                tools[tool] = None
                continue
            rc, text, _ = run_child([exe, *flag.split()], 10.0)
            tools[tool] = text.strip().splitlines()[-1] if text.strip() else f"exit {rc}"
        info["tools"] = tools
        return info

    def compile_stage(self, entry, deadline):
        from gpuconv.cuda import variants
        modules = list(variants.MODULES)
        entry["modules"] = {}
        # one process per core, each compiling its share of the modules in turn
        # (a process costs an interpreter start and the imports; a crash or a
        # timeout loses one share)
        jobs = max(1, min(len(modules), os.cpu_count() or 1))
        shares = [modules[i::jobs] for i in range(jobs)]

        def one(share):
            rc, text, secs = run_child(_self("--worker", "compile", "--module", ",".join(share), sim=self.sim),
                                       deadline - time.monotonic(), self.env)
            got = {r["module"]: r for r in _emitted(text)}
            for m in share:
                if m not in got:
                    got[m] = {"module": m, "ok": False,
                              "error": "not finished by the deadline" if rc is None else text[-1500:]}
            return got

        with cf.ThreadPoolExecutor(jobs) as pool:
            for got in pool.map(one, shares):
                entry["modules"].update(got)
                self.save()
        entry["compiled"] = sum(r["ok"] for r in entry["modules"].values())
        entry["of"] = len(modules)

    def smoke_stage(self, entry, deadline):
        rc, text, _ = run_child(_self("--worker", "smoke", sim=self.sim), deadline - time.monotonic(), self.env)
        checks = _emitted(text)
        entry.update(checks=checks, passed=sum(c["ok"] for c in checks),
                     failed=sum(not c["ok"] for c in checks), of=len(smoke_checks()))
        if rc is None:
            entry["status"] = "deadline"
        elif rc != 0:
            # the worker records a failing check and goes on: an exit code means it broke
            entry.update(status="error", error=f"smoke worker exit code {rc}", tail=text[-3000:])

    def tests_stage(self, entry, deadline):
        files = [str(ROOT / "tests" / f) for f in TEST_ORDER if (ROOT / "tests" / f).exists()]
        if not self.sim:
            files += sorted(str(p) for p in (ROOT / "tests").glob("test_*.py") if p.name not in TEST_ORDER)
        marker = "sim" if self.sim else "gpu"
        # pytest runs the files in the order given; a file that fails to import is
        # reported and the others still run
        cmd = [sys.executable, "-m", "pytest", "-m", marker, "-v", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", "--no-header", "-rN", *files]
        rc, text, _ = run_child(cmd, deadline - time.monotonic(), self.env)
        # `-v` prints "tests/test_x.py::test_y[params] PASSED  [ 12%]" as each test ends
        results = re.findall(r"^(tests/\S+::.+?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)(?= |$)", text,
                             flags=re.M)
        counts = {}
        for _, status in results:
            counts[status.lower()] = counts.get(status.lower(), 0) + 1
        collected = re.search(r"^collected (\d+) items?(.*)$", text, flags=re.M)
        entry.update(command=" ".join(cmd[1:5]) + " tests/...", marker=marker, counts=counts,
                     ran=len(results), failed_tests=[t for t, s in results if s in ("FAILED", "ERROR")][:200],
                     exit_code=rc, tail=text[-3000:])
        if collected:
            sel = re.search(r"(\d+) selected", collected.group(2))
            desel = re.search(r"(\d+) deselected", collected.group(2))
            errs = re.search(r"(\d+) errors?", collected.group(2))
            entry["selected"] = (int(sel.group(1)) if sel else
                                 int(collected.group(1)) - (int(desel.group(1)) if desel else 0))
            entry["collection_errors"] = int(errs.group(1)) if errs else 0
        if rc is None:
            entry["status"] = "deadline"
        elif rc not in (0, 1, 5):
            # pytest: 0 all passed, 1 some failed, 5 none selected; 2-4 interrupted, internal
            # or usage error
            entry.update(status="error", error=f"pytest exit code {rc}")

    def sanitizer_stage(self, entry, deadline):
        names = list(targets())
        if self.sim:
            # one at a time, the operation families first: an AddressSanitizer build of
            # a module takes 5-30 s on 2 cores the first time, then comes from the cache
            names = [n for n in names if not n.startswith("conv:")] + [n for n in names if n.startswith("conv:")]
        exe = None if self.sim else shutil.which("compute-sanitizer")
        if not self.sim and exe is None:
            entry["status"] = "compute-sanitizer not found"
            return
        # the simulator: AddressSanitizer builds (reads and writes past an array or the
        # dynamic shared memory fail the launch); races need no tool there, its barrier
        # order makes a missing __syncthreads give wrong results in every test
        tools = ("asan",) if self.sim else ("memcheck", "racecheck")
        runs = [(n, tool) for tool in tools for n in names]
        entry["runs"] = {}

        def one(job):
            name, tool = job
            if self.sim:
                cmd = _self("--target", name, "--first", "--backend", "sim-asan", sim=False)
            else:
                cmd = [exe, f"--tool={tool}", "--error-exitcode=99", "--print-limit=5",
                       *(["--racecheck-report=all"] if tool == "racecheck" else []),
                       *_self("--target", name, "--first", "--backend", "gpu", sim=False)]
            rc, text, secs = run_child(cmd, deadline - time.monotonic(), self.env)
            if rc is None:
                return job, f"not finished by the stage's deadline ({secs:.0f} s)"
            # --error-exitcode makes any memcheck error or racecheck hazard exit 99;
            # the summary lines: "ERROR SUMMARY: 0 errors" (memcheck), "RACECHECK
            # SUMMARY: 0 hazards displayed (0 errors, 0 warnings)" (racecheck)
            if rc == 0:
                summary_line = re.search(r"(ERROR SUMMARY|RACECHECK SUMMARY): [^\n]*", text)
                return job, f"clean ({secs:.1f} s" + (f"; {summary_line.group(0)})" if summary_line else ")")
            errs = [ln.strip() for ln in text.splitlines() if "=========" in ln and ln.strip("= ").strip()]
            return job, "; ".join(errs[:4]) or f"exit code {rc}: {text[-600:]}"

        # compute-sanitizer slows a launch 10-100x but leaves the GPU mostly idle:
        # four at once; the simulator's ASan builds share the cores
        jobs = 1 if self.sim else 4
        with cf.ThreadPoolExecutor(jobs) as pool:
            for (name, tool), verdict in pool.map(one, runs):
                entry["runs"].setdefault(name, {})[tool] = verdict
                self.save()
        verdicts = [v for per in entry["runs"].values() for v in per.values()]
        entry["clean"] = sum(v.startswith("clean") for v in verdicts)
        entry["of"] = len(verdicts)

    def agreement_stage(self, entry, deadline):
        names = list(targets())
        entry["families"] = {}

        def one(name):
            rc, text, secs = run_child(_self("--worker", "agreement", "--target", name, sim=self.sim),
                                       deadline - time.monotonic(), self.env)
            got = _emitted(text)
            if rc == 0 and got:
                return name, {**got[0], "seconds": round(secs, 2)}
            return name, {"ok": False, "error": "not finished by the deadline" if rc is None else text[-1500:]}

        jobs = 1 if self.sim else 4
        with cf.ThreadPoolExecutor(jobs) as pool:
            for name, res in pool.map(one, names):
                entry["families"][name] = res
                self.save()

    def bench_stage(self, entry, deadline):
        # the worker stops starting cases at its deadline and draws the PNG; the
        # parent kills it at the stage's (a case already running, the plot: ~3 s)
        margin = min(15.0, max(4.0, 0.1 * (deadline - time.monotonic())))
        secs = deadline - time.monotonic() - margin
        rc, text, _ = run_child(_self("--worker", "bench", "--out", str(self.out), "--seconds", f"{secs:.1f}",
                                      sim=self.sim), deadline - time.monotonic(), self.env)
        path = self.out / "bench.json"
        entry["exit_code"] = rc
        if path.exists():
            result = json.loads(path.read_text())
            entry.update(cases=len(result["cases"]), of=len(bench_cases(self.sim)), path=path.name)
        if rc is None:
            entry["status"] = "deadline"
        elif rc != 0:
            entry.update(status="error", error=f"bench worker exit code {rc}", tail=text[-3000:])

    def write_stage(self):
        """bench.png and summary.md from what exists."""
        path = self.out / "bench.json"
        bench = json.loads(path.read_text()) if path.exists() else None
        png = self.out / "bench.png"
        if bench and bench["cases"] and (not png.exists() or png.stat().st_mtime < path.stat().st_mtime):
            # the bench worker was stopped before its plot: draw it here if time allows
            if self.left() + RESERVE_S >= 4.0:
                try:
                    from gpuconv.bench import plot
                    plot.plot(bench, png)
                except Exception as exc:  # noqa: BLE001 - no matplotlib: the JSON and summary still stand
                    self.data["plot_error"] = f"{type(exc).__name__}: {exc}"
            else:
                self.data["plot_error"] = "no time left for the plot"
        (self.out / "summary.md").write_text(summary(self.data, bench))
        self.data["finished"] = _now()
        self.save()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def summary(rec: dict, bench: dict | None) -> str:
    """The markdown summary of a record (and its bench table)."""
    env = rec.get("env", {})
    cu = env.get("cuda", {})
    lines = [f"# gpuconv {'simulator dry run' if rec['mode'] == 'sim' else 'GPU record'}, {rec['started'][:10]}", ""]
    if rec["mode"] == "gpu":
        lines.append(f"Device: {cu.get('device')} (sm {cu.get('compute_capability')}), driver {cu.get('driver')}, "
                     f"CUDA {cu.get('cuda_runtime')}, CuPy {cu.get('cupy')}, torch "
                     f"{env.get('torch', {}).get('torch')} (cuDNN {env.get('torch', {}).get('cudnn')}).")
    else:
        lines.append(f"The kernel simulator on {env.get('cpu_model')}, {env.get('cpu_cores')} cores: no GPU, "
                     "times are not GPU times.")
    lines += [f"Commit `{env.get('commit')}`; budget {rec['budget_s']} s, used {rec.get('elapsed_s')} s.", "",
              "| stage | status | seconds | allotted | result |", "|---|---|---:|---:|---|"]
    st = rec["stages"]
    for name, _ in STAGES:
        e = st.get(name)
        if e is None:
            lines.append(f"| {name} | not reached | | | |")
            continue
        lines.append(f"| {name} | {e.get('status')} | {e.get('seconds', '')} | {e.get('allotted_s', '')} | "
                     f"{_stage_result(name, e)} |")
    smoke = [c for c in st.get("smoke", {}).get("checks", []) if not c["ok"]]
    if smoke:
        lines += ["", "Smoke failures:"] + [f"- {c['family']} {c['check']}: {c.get('exception') or c.get('error')}"
                                           for c in smoke]
    failed = st.get("tests", {}).get("failed_tests")
    if failed:
        lines += ["", "Failed tests:"] + [f"- `{t}`" for t in failed[:50]]
    runs = st.get("sanitizer", {}).get("runs")
    if runs:
        tools = list(dict.fromkeys(t for v in runs.values() for t in v))
        lines += ["", "| family | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
        lines += [f"| {n} | " + " | ".join(v.get(t, "-") for t in tools) + " |" for n, v in runs.items()]
    fams = st.get("agreement", {}).get("families")
    if fams:
        keys = sorted({k for f in fams.values() for k in f.get("worst", {})})
        lines += ["", "| family | cases | " + " | ".join(keys) + " | ok |", "|---|---:|" + "---:|" * len(keys) + "---|"]
        for n, f in fams.items():
            w = f.get("worst", {})
            lines.append(f"| {n} | {f.get('cases', '-')} | " + " | ".join(f"{w[k]:.2e}" if k in w else "-" for k in keys)
                         + f" | {f.get('ok')} {f.get('error', '')[:80]} |")
    if bench and bench["cases"]:
        from gpuconv.bench import report
        lines += ["", "## Benchmark", "", report.markdown(bench, source="bench.json")]
    return "\n".join(lines) + "\n"


def _stage_result(name: str, e: dict) -> str:
    if "error" in e and isinstance(e["error"], str):
        return e["error"][:120].replace("|", "/").replace("\n", " ")
    if name == "compile" and "of" in e:
        return f"{e['compiled']} of {e['of']} modules"
    if name == "smoke" and "of" in e:
        return f"{e['passed']} passed, {e['failed']} failed of {e['of']}"
    if name == "tests":
        c = e.get("counts", {})
        return ", ".join(f"{v} {k}" for k, v in c.items()) + (f" of {e['selected']} selected" if "selected" in e else "")
    if name == "sanitizer" and "of" in e:
        return f"{e['clean']} of {e['of']} runs clean"
    if name == "agreement" and "families" in e:
        fams = e["families"]
        return f"{sum(bool(f.get('ok')) for f in fams.values())} of {len(fams)} families agree"
    if name == "bench" and "cases" in e:
        return f"{e['cases']} of {e['of']} cases"
    return ""


def record(args) -> Path:
    rec = Record(args)
    rec.out.mkdir(parents=True, exist_ok=True)
    print(f"[gpu_record] {'simulator dry run' if args.sim else 'GPU record'}, budget {args.budget:.0f} s, "
          f"writing {rec.out}", flush=True)
    stages = {"env": rec.env_stage, "compile": rec.compile_stage, "smoke": rec.smoke_stage,
              "tests": rec.tests_stage, "sanitizer": rec.sanitizer_stage, "agreement": rec.agreement_stage,
              "bench": rec.bench_stage}
    try:
        for name, _ in STAGES:
            if rec.left() <= 0:
                rec.data["stages"][name] = {"status": "no time left"}
                continue
            rec.stage(name, stages[name])
            if rec.data["stages"]["env"].get("status") == "no GPU":
                break
    finally:
        rec.write_stage()
    return rec.out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run (default 480)")
    p.add_argument("--out", help="folder for record.json, bench.json, bench.png, summary.md")
    p.add_argument("--commit", default=os.environ.get("GPUCONV_COMMIT"),
                   help="the commit the tree is at (a copy without .git cannot say)")
    p.add_argument("--sim", action="store_true", help="a dry run on the kernel simulator, no GPU needed")
    p.add_argument("--target", help="run one family's checks and print their errors")
    p.add_argument("--first", action="store_true", help="with --target: its first check only")
    p.add_argument("--backend", choices=("gpu", "sim", "sim-asan"), default="gpu")
    p.add_argument("--list", action="store_true", help="list the kernel families")
    p.add_argument("--worker", choices=("env", "compile", "smoke", "agreement", "bench"), help=argparse.SUPPRESS)
    p.add_argument("--module", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(targets()))
        return 0
    if args.worker:
        return worker(args)
    if args.target:
        checks = targets()[args.target][:1 if args.first else None]
        bad = 0
        for check in checks:
            out, ref = run_check(check, args.backend)
            e = rel_err(out, ref)
            bad += not e <= TOLERANCE[check.dtype]
            print(f"{args.target:24s} {check.name:44s} max err / max|ref| = {e:.3g}")
        return 1 if bad else 0
    if args.budget <= RESERVE_S + 1:
        p.error(f"--budget must exceed {RESERVE_S + 1:.0f} seconds")
    if not args.out:
        p.error("--out DIR is required")
    out = record(args)
    print(f"[gpu_record] wrote {out}/record.json, summary.md" +
          (", bench.json, bench.png" if (out / "bench.json").exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
