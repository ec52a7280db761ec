"""Compiled helpers for the CPU path, built at first use with the machine's C compiler.

Depthwise convolution has no GEMM to hand to BLAS: in NumPy it is two
element-wise passes per kernel tap, and NumPy's passes cannot go faster than
about 4 G elements/s here, so 8x128x56x56 3x3 takes ~7.5 ms against torch's
1.7 ms.  gpuconv/csrc/depthwise.c does it, and its weight and input
gradients, in vectorised loops over whole rows (or over 8 groups at once).

Like the CUDA kernels (compiled at run time through CuPy), the source is
compiled on the machine that runs it, here with `-O3 -march=native`, and the
shared library is cached under gpuconv._paths.cache_dir()/"cpu", keyed on the
source, the compiler, the flags and the processor, with its size and SHA-256
beside it: a damaged file is rebuilt, never loaded (gpuconv._paths).  ctypes releases the GIL
for a call, so the caller's thread pool runs shares of the planes in parallel.

Everything here is optional: with no C compiler, a failed build, or
GPUCONV_CPU_NATIVE=0, `kernel` returns None and the CPU path stays in
NumPy.  `status()` says which, and why (`gpuconv info` prints it).
GPUCONV_CPU_NATIVE=asan builds with AddressSanitizer (see ASAN_FLAGS), as the
simulator's asan=True does for the CUDA kernels.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from . import _paths

SOURCE = Path(__file__).resolve().parent / "csrc" / "depthwise.c"
# No -ffast-math: IEEE semantics (NaN, inf, signed zeros) as in NumPy; the
# compiler may still contract a*b+c into an FMA, which only removes a rounding.
FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-fno-math-errno")
ARCH_FLAGS = (("-march=native",), ())     # the first that compiles is used
# GPUCONV_CPU_NATIVE=asan: AddressSanitizer instead of -O3 (the process must run
# with libasan preloaded: LD_PRELOAD=$(gcc -print-file-name=libasan.so)).
ASAN_FLAGS = ("-O1", "-g", "-std=c99", "-fPIC", "-shared", "-fsanitize=address",
              "-fno-omit-frame-pointer")
BUILD_VERSION = "1"
ENV_SWITCH = "GPUCONV_CPU_NATIVE"

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
# kernel -> (pointer arguments, idx arguments), as declared in depthwise.c
_SIGNATURES = {"depthwise": (4, 26), "depthwise_lanes": (4, 26), "depthwise_wgrad": (3, 27),
               "depthwise_wgrad_lanes": (3, 27), "depthwise_dgrad": (3, 26),
               "depthwise_dgrad_lanes": (3, 26)}

_lock = threading.Lock()
_state: dict = {}                         # "lib": CDLL | None, "status": str


def _new_lock_after_fork() -> None:
    # a thread of the parent may have held the lock (mid-build) when it forked
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


def _compiler() -> str | None:
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _cpu_id() -> str:
    """The processor the library is tuned for (-march=native): its model and
    feature flags on Linux, else what platform reports."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        lines = [ln for ln in text.splitlines()
                 if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "|".join(dict.fromkeys(lines))
    except OSError:
        return f"{platform.machine()}|{platform.processor()}"


@functools.lru_cache(maxsize=None)
def _compiler_version(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else ""


def _build(cc: str, asan: bool = False) -> tuple[Path, bytes]:
    """The cached library for this source, compiler, flags and processor, and its
    bytes as checked against the size and hash recorded beside it (a missing or
    damaged file is rebuilt; one process builds while the others wait)."""
    source = SOURCE.read_bytes()
    out_dir = _paths.cache_dir() / "cpu"
    out_dir.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in [ASAN_FLAGS] if asan else [FLAGS + arch for arch in ARCH_FLAGS]:
        key = hashlib.sha256(b"\0".join([
            source, cc.encode(), _compiler_version(cc).encode(), " ".join(flags).encode(),
            _cpu_id().encode(), BUILD_VERSION.encode()])).hexdigest()[:20]
        lib = out_dir / f"gpuconv_cpu_{key}.so"
        data = _paths.read_checked(lib)
        if data is not None:
            return lib, data
        with _paths.build_lock(lib):
            data = _paths.read_checked(lib)       # built by another process while we waited
            if data is not None:
                return lib, data
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
            os.close(fd)
            try:
                proc = subprocess.run([cc, *flags, "-o", tmp, str(SOURCE)],
                                      capture_output=True, text=True, check=False, timeout=120)
                if proc.returncode == 0:
                    return lib, _paths.publish(tmp, lib)
                errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-500:]}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    raise RuntimeError("; ".join(errors))


def _open_library(path: Path, data: bytes) -> ctypes.CDLL:
    """dlopen the checked bytes from an anonymous in-memory file (Linux memfd),
    so the code that runs is the code that was hashed, and a cache file cut or
    rewritten later by another program cannot fault the mapped library (a
    truncated mapped file raises SIGBUS).  Elsewhere, or without /proc, the
    cached path itself."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create(path.name, getattr(os, "MFD_CLOEXEC", 0))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            return ctypes.CDLL(f"/proc/self/fd/{fd}")
        except OSError:
            pass
        finally:
            os.close(fd)                      # the mapping keeps the memory file alive
    return ctypes.CDLL(str(path))


def _load() -> None:
    switch = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if switch in ("0", "false", "no", "off"):
        _state.update(lib=None, status=f"off ({ENV_SWITCH}={os.environ[ENV_SWITCH]})")
        return
    cc = _compiler()
    if cc is None:
        _state.update(lib=None, status="unavailable: no C compiler found (set CC); using NumPy")
        return
    try:
        path, data = _build(cc, asan=switch == "asan")
        lib = _open_library(path, data)
        for name, (n_ptr, n_idx) in _SIGNATURES.items():
            for suffix in _SUFFIX.values():
                fn = getattr(lib, f"gpuconv_{name}_{suffix}")
                fn.restype = ctypes.c_int
                fn.argtypes = [ctypes.c_void_p] * n_ptr + [ctypes.c_ssize_t] * n_idx
    except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
        _state.update(lib=None, status=f"unavailable: build or load failed ({exc}); using NumPy")
        return
    _state.update(lib=lib, status=f"on{' with AddressSanitizer' if switch == 'asan' else ''} ({path})")


def _ensure() -> None:
    if "status" not in _state:
        with _lock:
            if "status" not in _state:
                _load()


def status() -> str:
    """'on (<library>)', 'off (...)' or 'unavailable: <why>'."""
    _ensure()
    return _state["status"]


def reset() -> None:
    """Forget the loaded library (the next call re-reads GPUCONV_CPU_NATIVE and CC)."""
    with _lock:
        _state.clear()


def kernel(name: str, dtype):
    """The compiled kernel `name` (a key of _SIGNATURES: 'depthwise',
    'depthwise_lanes', 'depthwise_wgrad', 'depthwise_wgrad_lanes', 'depthwise_dgrad',
    'depthwise_dgrad_lanes') for `dtype` (float32 or float64), or None."""
    if name not in _SIGNATURES:
        raise ValueError(f"unknown compiled kernel {name!r}; there are {sorted(_SIGNATURES)}")
    suffix = _SUFFIX.get(np.dtype(dtype))
    if suffix is None:
        return None
    _ensure()
    lib = _state["lib"]
    return None if lib is None else getattr(lib, f"gpuconv_{name}_{suffix}")
