"""`gpuconv kernels`: compile every registered instantiation for sm_80 and sm_90
without a GPU and report registers, spills and shared memory from ptxas.

    python -m gpuconv.cuda.compile_check [--arch sm_80,sm_90] [--module conv2d_direct.cu]
        [--json] [--fail-on-spill REGEX ...] [--jobs N] [--compiler nvcc|nvrtc] [--sass]

nvcc (`nvcc -cubin -arch=sm_XX -Xptxas -v`) is used when on PATH, else NVRTC
through ctypes (the nvidia-cuda-nvrtc wheel; `--ptxas-options=-v` puts the
report in the program log; cuda_fp16.h comes from the CUDA toolkit's include
directory, which the wheel lacks: $CUDA_HOME/include or /usr/local/cuda/include).
With nvcc each instantiation is forced by taking its address in a small
generated translation unit; with NVRTC by name expressions, as CuPy does.
One compile per (module, arch), run in parallel.

Exit status: 0 clean; 1 a compile failed; 2 an instantiation matching a
--fail-on-spill pattern spills (spill stores or loads > 0).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from . import loader
from .variants import MODULES

DEFAULT_ARCHS = ("sm_80", "sm_90")
# the float32 hot kernels CI asserts spill-free (python -m gpuconv.cuda.compile_check --fail-on-spill).
# The depthwise weight gradient's 3x3/5x5 forms are hot; its generic-filter form (KS = 0,
# any R x S) spills 8-20 B on sm_90 from a run-time-indexed tap loop and is a rare path.
HOT_KERNELS = (r"^conv2d_tiled_smem<float,", r"^conv_direct<float,", r"^im2col<float>",
               r"^correlate2d_tiled<float,", r"^correlate2d_regblock<float,",
               r"^conv2d_implicit_gemm<", r"^conv2d_depthwise<float,",
               r"^conv_transpose<float,", r"^conv_wgrad<float,", r"^conv_wgrad_reduce<float>",
               r"^separable_fused<float,", r"^conv2d_depthwise_wgrad<float, \d+, \d+, \d+, [35]>")


@dataclass
class Row:
    module: str
    kernel: str
    arch: str
    registers: int = -1
    spill_stores: int = 0
    spill_loads: int = 0
    smem_static: int = 0
    stack: int = 0


def _norm(s: str) -> str:
    return re.sub(r"\s+", "", s)


def cuda_include_dir() -> Path | None:
    cands = []
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            cands.append(Path(os.environ[env]) / "include")
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = Path(nvcc).resolve()
        cands.append(real.parent.parent / "include")
    cands.append(Path("/usr/local/cuda/include"))
    for c in cands:
        if (c / "cuda_fp16.h").is_file():
            return c
    return None


# ------------------------------------------------------------------ ptxas report parsing

_ENTRY = re.compile(r"(?:Compiling entry function|Function properties for) '?([A-Za-z0-9_$]+)'?")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(log: str) -> dict[str, dict]:
    """mangled name -> {registers, spill_stores, spill_loads, smem_static, stack}."""
    out: dict[str, dict] = {}
    cur = None
    for line in log.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = out.setdefault(m.group(1), {})
            continue
        if cur is None:
            continue
        m = _SPILL.search(line)
        if m:
            cur.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = _USED.search(line)
        if m:
            cur["registers"] = int(m.group(1))
            s = _SMEM.search(line)
            cur["smem_static"] = int(s.group(1)) if s else 0
    return out


def demangle(names: list[str]) -> dict[str, str]:
    filt = shutil.which("c++filt") or shutil.which("cu++filt")
    if not filt or not names:
        return {n: n for n in names}
    res = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True)
    dem = res.stdout.splitlines()
    return dict(zip(names, dem)) if len(dem) == len(names) else {n: n for n in names}


def _template_id(demangled: str) -> str:
    """'void conv_direct<float, 1>(float const*, ...)' -> 'conv_direct<float,1>'."""
    s = demangled.strip()
    if s.startswith("void "):
        s = s[5:]
    depth = 0
    for i, ch in enumerate(s):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            s = s[:i]
            break
    return _norm(s)


# ------------------------------------------------------------------ compilers

def _nvcc_compile(module: str, exprs: tuple[str, ...], arch: str) -> tuple[bool, str, dict[str, str]]:
    src = loader.read_source(module)
    table = ",\n".join(f"    (void*)&{e}" for e in exprs)
    src += f"\nvoid* gpuconv_compile_check_instances[] = {{\n{table}\n}};\n"
    with tempfile.TemporaryDirectory(prefix="gpuconv-cc-") as td:
        tu = Path(td) / (Path(module).stem + "_check.cu")
        tu.write_text(src)
        cmd = ["nvcc", "-cubin", f"-arch={arch}", "-std=c++17", "-Xptxas", "-v",
               "-o", str(Path(td) / "out.cubin"), str(tu)]
        res = subprocess.run(cmd, capture_output=True, text=True)
    log = res.stdout + res.stderr
    report = parse_ptxas(log)
    names = demangle(list(report))
    by_expr = {_template_id(names[m]): m for m in report}
    mapping = {e: by_expr.get(_norm(e), "") for e in exprs}
    return res.returncode == 0, log, mapping


def _load_nvrtc():
    cands = []
    try:
        import nvidia  # the nvidia-cuda-nvrtc wheel (namespace package)
        for root in nvidia.__path__:
            cands += sorted(Path(root).glob("cu*/lib/libnvrtc.so*")) + sorted(
                Path(root).glob("cuda_nvrtc/lib/libnvrtc.so*"))
    except ImportError:
        pass
    cands += [Path("libnvrtc.so")]
    for c in cands:
        if "builtins" in c.name:
            continue
        try:
            return ctypes.CDLL(str(c))
        except OSError:
            continue
    return None


def _nvrtc_compile(module: str, exprs: tuple[str, ...], arch: str) -> tuple[bool, str, dict[str, str]]:
    lib = _load_nvrtc()
    if lib is None:
        raise RuntimeError("NVRTC not found (pip install nvidia-cuda-nvrtc)")
    src = loader.read_source(module).encode()
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src, module.encode(), 0, None, None)
    if rc:
        return False, f"nvrtcCreateProgram failed ({rc})", {}
    try:
        for e in exprs:
            lib.nvrtcAddNameExpression(prog, e.encode())
        opts = [f"-arch={arch}", "-std=c++17", "--ptxas-options=-v"]
        inc = cuda_include_dir()
        if inc is not None:
            opts.append(f"-I{inc}")
        arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        mapping = {}
        if rc == 0:
            for e in exprs:
                low = ctypes.c_char_p()
                if lib.nvrtcGetLoweredName(prog, e.encode(), ctypes.byref(low)) == 0:
                    mapping[e] = low.value.decode()
        return rc == 0, log, mapping
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def compile_module(module: str, arch: str, compiler: str) -> tuple[bool, str, list[Row]]:
    exprs = MODULES[module]
    fn = _nvcc_compile if compiler == "nvcc" else _nvrtc_compile
    ok, log, mapping = fn(module, exprs, arch)
    report = parse_ptxas(log)
    rows = []
    for e in exprs:
        r = Row(module=module, kernel=e, arch=arch)
        info = report.get(mapping.get(e, ""), None)
        if info:
            for k, v in info.items():
                setattr(r, k, v)
        rows.append(r)
    return ok, log, rows


def available_compiler() -> str | None:
    if shutil.which("nvcc"):
        return "nvcc"
    if _load_nvrtc() is not None:
        return "nvrtc"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="gpuconv kernels", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default=",".join(DEFAULT_ARCHS), help="comma-separated, e.g. sm_80,sm_90")
    ap.add_argument("--module", action="append", help="only this kernels_cu file (repeatable)")
    ap.add_argument("--compiler", choices=("nvcc", "nvrtc"), help="default: nvcc if on PATH, else NVRTC")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--fail-on-spill", nargs="*", metavar="REGEX",
                    help="exit 2 if a matching instantiation spills (no REGEX: the float32 hot kernels)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--sass", action="store_true",
                    help="instead: the SASS of each instantiation, its innermost loops and their "
                         "instruction mix (gpuconv.cuda.sass)")
    args = ap.parse_args(argv)

    compiler = args.compiler or available_compiler()
    if compiler is None:
        print("gpuconv kernels: neither nvcc nor NVRTC is available", file=sys.stderr)
        return 1
    modules = args.module or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        print(f"gpuconv kernels: unknown module(s) {unknown}; known: {list(MODULES)}", file=sys.stderr)
        return 1
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    if args.sass:
        from . import sass
        return sass.report(modules, archs, compiler, MODULES, as_json=args.json, jobs=args.jobs)
    jobs = [(m, a) for m in modules for a in archs]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        results = list(ex.map(lambda job: compile_module(job[0], job[1], compiler), jobs))

    status = 0
    rows: list[Row] = []
    for (m, a), (ok, log, rs) in zip(jobs, results):
        rows += rs
        if not ok:
            status = 1
            print(f"--- {m} for {a}: compile FAILED\n{log}", file=sys.stderr)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    else:
        print(f"{'kernel':60s} {'arch':6s} {'regs':>5s} {'spill st':>9s} {'spill ld':>9s} "
              f"{'smem':>6s} {'stack':>6s}")
        for r in rows:
            print(f"{r.kernel:60s} {r.arch:6s} {r.registers:5d} {r.spill_stores:9d} "
                  f"{r.spill_loads:9d} {r.smem_static:6d} {r.stack:6d}")
        print(f"{len(rows)} instantiation x arch rows, {len(jobs)} compiles ({compiler})")
    if args.fail_on_spill is not None and status == 0:
        pats = [re.compile(p) for p in (args.fail_on_spill or HOT_KERNELS)]
        bad = [r for r in rows if any(p.search(r.kernel) for p in pats)
               and (r.spill_stores or r.spill_loads)]
        missing = [r for r in rows if any(p.search(r.kernel) for p in pats) and r.registers < 0]
        for r in bad:
            print(f"SPILL: {r.kernel} {r.arch}: {r.spill_stores} B stores, {r.spill_loads} B loads",
                  file=sys.stderr)
        for r in missing:
            print(f"NO REPORT: {r.kernel} {r.arch}", file=sys.stderr)
        if bad or missing:
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
