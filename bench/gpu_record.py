"""The GPU correctness record: one command for a machine with a CUDA device.

    python bench/gpu_record.py [--commit SHA] [--out bench/results] [--no-sanitizer]

1. runs the GPU test suite (`pytest -m gpu tests/`) and counts passed/failed;
2. runs every kernel target below under compute-sanitizer (memcheck, racecheck)
   on small irregular shapes, one process per target and tool;
3. runs every target on the GPU and in the CPU simulator with the same inputs
   and records how far apart they are (relative to max |reference|);
4. writes bench/results/<date>-<gpu>-tests.json with device, driver, CUDA, CuPy,
   torch versions, the commit, the counts, the sanitizer verdicts and the
   agreements.

A target runs one family of kernels through the same entry points the library
uses (gpuconv.api.conv_forward with a forced variant, the transposed / gradient /
separable bodies, the signal core) on any backend, so `--target NAME --backend
sim` exercises it without a GPU (tests/test_gpu_record.py does, in CI).

Run from a copy of the tree without .git, pass the commit
(`--commit $(git rev-parse HEAD)`) from the checkout.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gpuconv import activations  # noqa: E402
from gpuconv.api import conv_forward  # noqa: E402
from gpuconv.cpu import conv as cpu_conv  # noqa: E402
from gpuconv.spec import make_spec  # noqa: E402

# Small, irregular shapes: odd sizes, channel counts off every tile, stride,
# dilation, asymmetric padding, groups; (N, C, H, W), (K, C/g, R, S), stride, pad, dil, groups.
CONV_CASES = [
    ((2, 5, 13, 11), (7, 5, 3, 3), 1, 1, 1, 1),
    ((1, 6, 9, 17), (8, 3, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    ((3, 4, 8, 8), (6, 4, 1, 1), 1, 0, 1, 1),
    ((2, 6, 10, 9), (12, 1, 3, 3), (1, 2), 1, 1, 6),
]
DTYPES = ("float32", "float16")


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _backend(kind: str):
    if kind == "sim":
        from gpuconv.sim import SimBackend
        return SimBackend()
    from gpuconv.cuda.backend import CupyBackend
    return CupyBackend()


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _conv_target(variant):
    def run(backend, rng):
        from gpuconv.cuda import variants
        xp, outs = backend.xp, []
        for dtype in DTYPES:
            for xs, ws, st, pd, dl, g in CONV_CASES:
                spec, _ = make_spec(xs, ws, (ws[0],), st, pd, dl, g, np.dtype(dtype), 2)
                if not variants.get(variant).supports(spec)[0]:
                    continue
                x, w, b = _rand(rng, xs, dtype), _rand(rng, ws, dtype), _rand(rng, (ws[0],), dtype)
                y = conv_forward(2, "conv2d", xp.asarray(x), xp.asarray(w), xp.asarray(b), st, pd, dl, g,
                                 activation="silu", algorithm=variant, backend=backend)
                ref = activations.apply(cpu_conv(x, w, b, spec, accumulate="float64"), "silu")
                outs.append((f"{dtype} {xs}x{ws}", _host(y), ref))
        return outs
    return run


def _transpose_target(backend, rng):
    from gpuconv.transpose import conv_transpose_forward
    xp, outs = backend.xp, []
    for dtype in DTYPES:
        x, w, b = _rand(rng, (2, 6, 5, 7), dtype), _rand(rng, (6, 5, 3, 2), dtype), _rand(rng, (10,), dtype)
        y = conv_transpose_forward(2, "conv_transpose2d", xp.asarray(x), xp.asarray(w), xp.asarray(b),
                                   (2, 3), (1, 0), (1, 2), 2, (1, 1), backend=backend)
        ref = conv_transpose_forward(2, "conv_transpose2d", x.astype(np.float64), w.astype(np.float64),
                                     b.astype(np.float64), (2, 3), (1, 0), (1, 2), 2, (1, 1))
        outs.append((f"{dtype} transpose", _host(y), ref))
    return outs


def _wgrad_target(backend, rng):
    from gpuconv.grad import weight_grad
    xp, outs = backend.xp, []
    for dtype in DTYPES:
        x, dy = _rand(rng, (3, 4, 11, 9), dtype), _rand(rng, (3, 6, 6, 9), dtype)
        y = weight_grad(2, "conv2d_weight", xp.asarray(x), (6, 2, 3, 3), xp.asarray(dy), (2, 1), 1, 1, 2,
                        backend=backend)
        ref = weight_grad(2, "conv2d_weight", x.astype(np.float64), (6, 2, 3, 3), dy.astype(np.float64),
                          (2, 1), 1, 1, 2)
        outs.append((f"{dtype} wgrad", _host(y), ref))
    return outs


def _separable_target(backend, rng):
    from gpuconv.separable import separable_forward
    xp, outs = backend.xp, []
    for dtype in DTYPES:
        x, dw = _rand(rng, (2, 5, 9, 12), dtype), _rand(rng, (10, 1, 3, 3), dtype)
        pw, b = _rand(rng, (7, 10, 1, 1), dtype), _rand(rng, (7,), dtype)
        y = separable_forward(2, "separable_conv2d", xp.asarray(x), xp.asarray(dw), xp.asarray(pw),
                              xp.asarray(b), 1, 1, 1, activation="relu", backend=backend)
        ref = separable_forward(2, "separable_conv2d", *(a.astype(np.float64) for a in (x, dw, pw, b)),
                                1, 1, 1, activation="relu")
        outs.append((f"{dtype} separable", _host(y), ref))
    return outs


def _signal_target(backend, rng):
    from gpuconv.cuda.signal import correlate_core
    from gpuconv.signal import correlate_core as numpy_core
    xp, outs = backend.xp, []
    for dtype in ("float32", "float64", "complex64"):
        a = _rand(rng, (37, 45), "float64").astype(dtype)
        k = _rand(rng, (5, 4), "float64").astype(dtype)
        for boundary, origin in (("fill", (-4, -3)), ("wrap", (-2, -1)), ("symm", (0, 0))):
            shape = (37 + 4, 45 + 3) if origin == (-4, -3) else (37, 45)
            fill = np.array(1.5, dtype=dtype)[()]
            y = correlate_core(xp.asarray(a), xp.asarray(k), shape, origin, boundary, fill, backend=backend)
            ref = numpy_core(a.astype(np.complex128 if dtype.startswith("c") else np.float64),
                             k.astype(np.complex128 if dtype.startswith("c") else np.float64),
                             shape, origin, boundary, fill)
            outs.append((f"{dtype} {boundary}", _host(y), ref))
    return outs


def targets() -> dict:
    """name -> run(backend, rng) -> [(case, output, float64 reference)]."""
    from gpuconv.cuda import variants
    t = {f"conv:{v}": _conv_target(v) for v in variants.conv_variant_names()}
    t.update({"transpose": _transpose_target, "wgrad": _wgrad_target, "separable": _separable_target,
              "signal": _signal_target})
    return t


def rel_err(out, ref) -> float:
    out = np.asarray(out, dtype=np.complex128 if np.iscomplexobj(out) else np.float64)
    ref = np.asarray(ref, dtype=np.complex128 if np.iscomplexobj(ref) else np.float64)
    if ref.size == 0:
        return 0.0
    scale = max(float(np.abs(ref).max()), 1e-30)
    err = np.abs(out - ref)
    return float("inf") if np.isnan(err).any() else float(err.max()) / scale


def run_target(name: str, backend_kind: str, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    backend = _backend(backend_kind)
    outs = targets()[name](backend, np.random.default_rng(seed))
    if backend_kind == "gpu":
        import cupy
        cupy.cuda.runtime.deviceSynchronize()
    return outs


# ----------------------------------------------------------------- the record --
def _pytest_gpu(extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "gpu.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               f"--junitxml={xml}", str(ROOT / "tests")] + extra
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        res = {"command": " ".join(cmd[1:]), "exit_code": proc.returncode, "tail": proc.stdout[-4000:]}
        if not xml.exists():
            res.update(passed=0, failed=None, error="pytest wrote no report")
            return res
        failed, skipped, total = [], 0, 0
        for case in ET.parse(xml).getroot().iter("testcase"):
            total += 1
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname')}::{case.get('name')}")
            elif case.find("skipped") is not None:
                skipped += 1
        res.update(passed=total - len(failed) - skipped, failed=len(failed), skipped=skipped,
                   failed_tests=failed[:100])
        return res


def _sanitize(name: str, tool: str, timeout: int) -> str:
    exe = shutil.which("compute-sanitizer")
    if exe is None:
        return "not run: compute-sanitizer not found"
    cmd = [exe, f"--tool={tool}", "--error-exitcode=99", "--print-limit=5", sys.executable,
           str(Path(__file__).resolve()), "--target", name, "--backend", "gpu"]
    if tool == "racecheck":
        cmd.insert(2, "--racecheck-report=all")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"not finished within {timeout} s"
    text = proc.stdout + proc.stderr
    if proc.returncode == 0 and re.search(r"ERROR SUMMARY: 0 errors", text):
        return "clean"
    errs = [ln.strip() for ln in text.splitlines() if "=========" in ln and ln.strip("= ").strip()]
    return "; ".join(errs[:4]) or f"exit code {proc.returncode}: {text[-500:]}"


def _agreement(names) -> dict:
    out = {}
    try:
        from gpuconv.sim import sim_available
        have_sim = sim_available()
    except ImportError:
        have_sim = False
    for name in names:
        entry = {}
        try:
            gpu = run_target(name, "gpu")
            entry["gpu_vs_reference"] = max((rel_err(o, r) for _, o, r in gpu), default=0.0)
            if have_sim:
                sim = run_target(name, "sim")
                entry["gpu_vs_sim"] = max((rel_err(g, s) for (_, g, _), (_, s, _) in zip(gpu, sim)),
                                          default=0.0)
            entry["cases"] = len(gpu)
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal: the record must be written
            entry["error"] = f"{type(exc).__name__}: {exc}"
        out[name] = entry
    return out


def record(args) -> Path:
    from gpuconv.bench import env
    facts = env.cuda_facts()
    if not facts.get("available"):
        raise SystemExit(f"no CUDA device: {facts.get('reason')}")
    rec = {
        "schema": "gpuconv-gpu-tests/1",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": facts["device"], "compute_capability": facts["compute_capability"],
        "driver": facts.get("driver"), "cuda": facts["cuda_runtime"], "driver_cuda": facts["driver_cuda"],
        "cupy": facts["cupy"], "torch": env.torch_facts(), "commit": args.commit or env.git_commit(),
        "numpy": np.__version__, "python": sys.version.split()[0],
    }
    names = list(targets())
    rec["tests"] = _pytest_gpu(args.pytest_args)
    rec["passed"], rec["failed"] = rec["tests"]["passed"], rec["tests"]["failed"]
    rec["sanitizer"] = {}
    if not args.no_sanitizer:
        for name in names:
            rec["sanitizer"][name] = {tool: _sanitize(name, tool, args.sanitizer_timeout)
                                      for tool in ("memcheck", "racecheck")}
    rec["agreement"] = _agreement(names)
    slug = re.sub(r"[^a-z0-9]+", "-", rec["device"].lower()).strip("-")
    out = Path(args.out) / f"{dt.date.today().isoformat()}-{slug}-tests.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1, default=str) + "\n")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--commit", default=os.environ.get("GPUCONV_COMMIT"))
    p.add_argument("--no-sanitizer", action="store_true")
    p.add_argument("--sanitizer-timeout", type=int, default=300)
    p.add_argument("--target", help="run one target and exit (used under compute-sanitizer)")
    p.add_argument("--backend", choices=("gpu", "sim"), default="gpu")
    p.add_argument("--list", action="store_true", help="list the targets")
    p.add_argument("pytest_args", nargs="*", help="extra arguments for the pytest run")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(targets()))
        return 0
    if args.target:
        worst = 0.0
        for case, out, ref in run_target(args.target, args.backend):
            e = rel_err(out, ref)
            worst = max(worst, e)
            print(f"{args.target:24s} {case:40s} max err / max|ref| = {e:.3g}")
        return 0 if np.isfinite(worst) else 1
    path = record(args)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
