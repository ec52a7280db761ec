"""Compile a kernels_cu module (and the worker) with g++ for the simulator.

A module library is built from one generated translation unit:

    #include "<module>.cu"                 the kernel source (extern __shared__ rewritten)
    #include "gpuconv_sim_entry.h"
    static const Entry entries[] = {{"conv2d_direct<float, 1>",
        Thunk<&conv2d_direct<float, 1>>::launch, Thunk<...>::signature}, ...};
    extern "C" const Entry* gpuconv_sim_entries(unsigned*);
    #include "gpuconv_sim_runtime.inc"     the scheduler

with include/gpuconv_sim.h force-included.  Taking `&name_expression` as a
template argument instantiates each kernel exactly as cupy.RawModule's
name_expressions do, and Thunk derives both the launch trampoline and the
parameter-type descriptor from the function type, so Python never parses C++.

`extern __shared__ T name[];` has no host C++ equivalent; every source and
header of the module's directory (and kernels_cu/) is copied with that one
declaration rewritten in place into a pointer to the launch's dynamic shared
memory.  Line numbers are kept (the replacement spans the same lines, each copy
starts with #line 1 "<original path>"), so compiler errors name the real files.

Libraries are cached in gpuconv._paths.cache_dir()/"sim", keyed on the source,
every file the module could include (all headers of its directory and of
kernels_cu/, the simulator's own headers and this file), the name expressions,
the compiler's version and the flags.  Builds go to a temporary name and are
renamed into place with their size and SHA-256 recorded beside them, under a
per-file lock (gpuconv._paths.publish, build_lock): concurrent processes never
see a partial library, build it once, and a cached file that no longer matches
its record (truncated, altered) is rebuilt instead of being loaded.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .. import _paths

SIM_DIR = Path(__file__).resolve().parent
INCLUDE_DIR = SIM_DIR / "include"
SRC_DIR = SIM_DIR / "src"
SOURCE_SUFFIXES = (".cu", ".cuh", ".h", ".hpp", ".hh", ".inc", ".cuinc")

# -ffp-contract=off: no FMA contraction the CUDA source did not ask for (nvcc
# contracts by default, so results differ from the GPU by rounding only, and
# tests compare with tolerances).  -fno-strict-aliasing: CUDA kernels reinterpret
# float* as float4* and the like; g++'s type-based alias analysis must not
# reorder those accesses.  Hidden visibility and -fno-gnu-unique keep the
# kernels' static __shared__ arrays private to each library, so two modules
# defining the same template never share storage.
COMMON_FLAGS = ("-std=c++17", "-ffp-contract=off", "-fno-strict-aliasing", "-fno-math-errno",
                "-fvisibility=hidden", "-fno-gnu-unique", "-pthread")
OPT_FLAGS = ("-O2",)
ASAN_FLAGS = ("-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer")
BUILD_VERSION = "1"


class SimCompileError(RuntimeError):
    """g++ rejected a kernel module (the message carries the compiler output)."""


@functools.lru_cache(maxsize=None)
def compiler_id(cxx: str) -> str:
    path = shutil.which(cxx)
    if path is None:
        raise SimCompileError(f"C++ compiler {cxx!r} not found; the simulator needs g++")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    machine = subprocess.run([path, "-dumpmachine"], capture_output=True, text=True, check=False).stdout
    return f"{path}|{out.splitlines()[0] if out else ''}|{machine.strip()}"


def sim_cache_dir() -> Path:
    d = _paths.cache_dir() / "sim"
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---------------------------------------------------------------- extern __shared__ rewrite
_EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?P<type>(?:[^;\[\]{}()]|\([^()]*\))+?)\s*\b(?P<name>[A-Za-z_]\w*)"
    r"\s*\[\s*\]\s*(?P<dims>(?:\[[^\]\[]+\]\s*)*);")
_ALIGN = re.compile(r"\b(?:__align__|alignas)\s*\([^()]*\)")


def _replace_extern_shared(m: re.Match) -> str:
    typ = " ".join(_ALIGN.sub(" ", m.group("type")).split())
    name = m.group("name")
    dims = "".join(m.group("dims").split())
    if dims:
        decl = f"{typ} (*const {name}){dims} = reinterpret_cast<{typ} (*){dims}>(::gpuconv_sim::dynamic_smem());"
    else:
        decl = f"{typ}* const {name} = reinterpret_cast<{typ}*>(::gpuconv_sim::dynamic_smem());"
    return decl + "\n" * m.group(0).count("\n")


# `[__align__(n)] __shared__ [__align__(n)] T a[..][..], b[..];` (static shared memory)
# becomes references into the launch's shared-memory window, allocated on first
# use per declaration and template instance and poisoned at every block start
# (a function-local static would hold the previous block's data, never poison).
_ALIGN_N = r"(?:(?:__align__|alignas)\s*\(\s*\d+\s*\)\s*)*"
_STATIC_SHARED = re.compile(
    rf"(?<![\w`])(?P<pre>{_ALIGN_N})__shared__\s+(?P<post>{_ALIGN_N})"
    r"(?P<type>(?:const\s+|volatile\s+)*[A-Za-z_][\w:]*(?:\s*<[^;<>{}]*>)?(?:\s+(?:unsigned|signed|short|long|int|char))*)"
    r"\s+(?P<decls>[A-Za-z_]\w*(?:\s*\[[^\];]+\])*(?:\s*,\s*[A-Za-z_]\w*(?:\s*\[[^\];]+\])*)*)\s*;")
_DECL = re.compile(r"(?P<name>[A-Za-z_]\w*)(?P<dims>(?:\s*\[[^\]]+\])*)")
_LAUNCH_BOUNDS = re.compile(r"__launch_bounds__\s*\((?P<args>(?:[^()]|\((?:[^()]|\([^()]*\))*\))*)\)")


def _replace_static_shared(m: re.Match) -> str:
    typ = " ".join(m.group("type").split())
    aligns = [int(a) for a in re.findall(r"\(\s*(\d+)\s*\)", m.group("pre") + m.group("post"))]
    align = f"alignof({typ})" if not aligns else f"({max(aligns)} > alignof({typ}) ? {max(aligns)} : alignof({typ}))"
    out = []
    for d in _DECL.finditer(m.group("decls")):
        name, dims = d.group("name"), "".join(d.group("dims").split())
        key = f"gpuconv_sim_key_{name}"
        ref, ptr = (f"(&{name}){dims}", f"(*){dims}") if dims else (f"&{name}", "*")
        out.append(f"static char {key}; {typ} {ref} = *reinterpret_cast<{typ} {ptr}>(::gpuconv_sim::static_smem("
                   f"&{key}, sizeof({typ}{dims}), {align}, {_cxx_string(name + dims)}, __FILE__, __LINE__));")
    return " ".join(out) + "\n" * m.group(0).count("\n")


def _check_launch_bounds(text: str) -> str:
    """A call checking the block size against __launch_bounds__ at the top of the
    kernel's body (same line as its `{`)."""
    out, pos = [], 0
    for m in _LAUNCH_BOUNDS.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        body = text.find("{", m.end())
        before = text[line_start:m.start()]
        if "//" in before or before.lstrip().startswith("#") or body < 0 or ";" in text[m.end():body] or body < pos:
            continue
        out.append(text[pos:body + 1])
        out.append(f" ::gpuconv_sim::launch_bounds(__FILE__, __LINE__, {m.group('args')});")
        pos = body + 1
    out.append(text[pos:])
    return "".join(out)


def rewrite_source(text: str, origin: Path) -> str:
    """The source as g++ compiles it: extern __shared__ declarations become
    pointers into the launch's dynamic shared memory, static __shared__ ones
    references into its static part, __launch_bounds__ a check; line numbers unchanged."""
    quoted = str(origin).replace("\\", "\\\\").replace('"', '\\"')
    text = _EXTERN_SHARED.sub(_replace_extern_shared, text)
    text = _check_launch_bounds(_STATIC_SHARED.sub(_replace_static_shared, text))
    return f'#line 1 "{quoted}"\n' + text


def _source_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix in SOURCE_SUFFIXES)


def _cxx_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def generate_main(source_name: str, name_expressions: tuple[str, ...]) -> str:
    lines = [f"// generated by gpuconv/sim/_build.py for {source_name}",
             f'#include "{source_name}"',
             '#include "gpuconv_sim_entry.h"',
             "static const ::gpuconv_sim::Entry gpuconv_sim_entry_table[] = {"]
    for expr in name_expressions:
        thunk = f"::gpuconv_sim::Thunk<&{expr}>"
        lines.append(f"    {{{_cxx_string(expr)}, {thunk}::launch, {thunk}::signature}},")
    lines += ["};",
              'extern "C" __attribute__((visibility("default"))) const ::gpuconv_sim::Entry*',
              "gpuconv_sim_entries(unsigned* n) {",
              f"    *n = {len(name_expressions)};",
              "    return gpuconv_sim_entry_table;",
              "}",

              '#include "gpuconv_sim_runtime.inc"',
              ""]
    return "\n".join(lines)


def _hash_dir(h, d: Path, files: list[Path]) -> None:
    for p in files:
        h.update(f"{d.name}/{p.name}\0".encode())
        h.update(p.read_bytes())
        h.update(b"\0")


def _sim_files() -> list[Path]:
    return [p for d in (INCLUDE_DIR, SRC_DIR) for p in sorted(d.iterdir()) if p.is_file()] + [Path(__file__)]


def _flags(asan: bool) -> tuple[str, ...]:
    return COMMON_FLAGS + (ASAN_FLAGS if asan else OPT_FLAGS)


def _run_compiler(cmd: list[str], what: str, cwd: Path) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, check=False)
    if r.returncode != 0:
        raise SimCompileError(f"compiling {what} for the simulator failed:\n$ {' '.join(cmd)}\n{r.stdout}{r.stderr}")


def build_module(source: Path, name_expressions: tuple[str, ...], *, asan: bool = False, cxx: str = "g++",
                 extra_flags: tuple[str, ...] = ()) -> Path:
    """Path of the cached shared library for `source` with these instantiations."""
    source = Path(source).resolve()
    if not source.is_file():
        raise FileNotFoundError(f"kernel source {source} not found")
    if not name_expressions:
        raise ValueError("name_expressions is empty: nothing to instantiate")
    cid = compiler_id(cxx)
    flags = _flags(asan) + tuple(extra_flags)
    dirs = [source.parent]
    try:
        kdir = _paths.kernels_dir().resolve()
        if kdir != source.parent:
            dirs.append(kdir)
    except FileNotFoundError:
        pass
    h = hashlib.sha256()
    h.update(f"gpuconv-sim-module {BUILD_VERSION}\0{cid}\0{' '.join(flags)}\0{source.name}\0".encode())
    h.update("\0".join(name_expressions).encode() + b"\0")
    h.update(source.read_bytes())
    listing = [(d, _source_files(d)) for d in dirs]
    for d, files in listing:
        _hash_dir(h, d, files)
    _hash_dir(h, SIM_DIR, _sim_files())
    key = h.hexdigest()[:24]
    out = sim_cache_dir() / f"{source.stem}-{key}{'-asan' if asan else ''}.so"
    if _paths.cached_file_ok(out):
        return out
    with _paths.build_lock(out), tempfile.TemporaryDirectory(prefix="build-", dir=sim_cache_dir()) as tmp:
        if _paths.cached_file_ok(out):                # built by another process while we waited
            return out
        tmp = Path(tmp)
        incs = []
        for i, (d, files) in enumerate(listing):
            sub = tmp / f"src{i}"
            sub.mkdir()
            for p in files:
                (sub / p.name).write_text(rewrite_source(p.read_text(errors="replace"), p))
            incs.append(sub)
        if not (incs[0] / source.name).exists():      # a source with an unusual suffix
            (incs[0] / source.name).write_text(rewrite_source(source.read_text(errors="replace"), source))
        main = tmp / "module.cpp"
        main.write_text(generate_main(source.name, tuple(name_expressions)))
        lib = tmp / "module.so"
        cmd = [shutil.which(cxx) or cxx, *flags, "-fPIC", "-shared", "-include", "gpuconv_sim.h"]
        for d in incs:
            cmd += ["-I", str(d)]
        cmd += ["-I", str(INCLUDE_DIR), "-I", str(SRC_DIR), str(main), "-o", str(lib)]
        _run_compiler(cmd, f"{source.name} ({', '.join(name_expressions)})", tmp)
        _paths.publish(lib, out)
    return out


def build_worker(*, asan: bool = False, cxx: str = "g++") -> Path:
    """Path of the cached worker executable (src/worker.cpp)."""
    cid = compiler_id(cxx)
    flags = _flags(asan)
    src = SRC_DIR / "worker.cpp"
    h = hashlib.sha256()
    h.update(f"gpuconv-sim-worker {BUILD_VERSION}\0{cid}\0{' '.join(flags)}\0".encode())
    h.update(src.read_bytes())
    out = sim_cache_dir() / f"worker-{h.hexdigest()[:24]}{'-asan' if asan else ''}"
    if _paths.cached_file_ok(out):
        return out
    with _paths.build_lock(out), tempfile.TemporaryDirectory(prefix="build-", dir=sim_cache_dir()) as tmp:
        if _paths.cached_file_ok(out):
            return out
        exe = Path(tmp) / "worker"
        # -rdynamic is not needed: modules resolve nothing from the worker
        # (the ASan runtime they need is a shared library the worker links).
        _run_compiler([shutil.which(cxx) or cxx, *flags, str(src), "-o", str(exe), "-ldl"], "the worker", Path(tmp))
        _paths.publish(exe, out)
    return out
