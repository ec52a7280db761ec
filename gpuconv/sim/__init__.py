"""gpuconv.sim -- run kernels_cu on the CPU: the same .cu sources, compiled by
g++ against a CUDA shim (include/gpuconv_sim.h), one fiber per CUDA thread.

    from gpuconv.sim import SimBackend, sim_available
    b = SimBackend()                      # SimBackend(asan=True): AddressSanitizer build
    fn = b.get_function("conv2d_direct.cu", NAME_EXPRESSIONS, "conv_direct<float, 0>")
    fn(grid, block, (x, w, b, y, np.int32(N), ...), shared_mem=0)   # as a cupy.RawKernel

Checks (README "Running the kernels without a GPU" lists what each costs):
    SimBackend(schedule="random", seed=3)  another interleaving of the threads
    SimBackend(racecheck=True)             shared-memory race detector (instrumented build)
    SimBackend(alignment=True)             -fsanitize=alignment build (misaligned typed accesses)
Always on: static and dynamic shared memory poisoned per block, cp.async
queued per thread and commit group (destination poisoned while in flight),
alignment and state space of cp.async and ldmatrix, __launch_bounds__ and the
48 KiB static + dynamic shared-memory limit.

Same interface as the CuPy backend (gpuconv/cuda/backend.py): `name`, `xp`
(numpy: launchers allocate buffers with it), `get_function(module,
name_expressions, name)`.  Every argument is checked against the kernel's C++
parameter types, as the GPU would need them: arrays for pointers with the
pointee's dtype, exact NumPy scalar types for values (a Python int where the
kernel takes `int` is a TypeError: CuPy would pass 64 bits and the kernel would
read garbage).  Failures raise:
  SimCompileError   g++ rejected the module (compiler output attached)
  SimDeadlockError  a barrier or warp operation that not every thread reaches
  SimCrashError     segfault / abort / AddressSanitizer report (the report attached)
  SimTimeoutError   the launch ran past `timeout` seconds
  SimKernelError    other kernel misuse found by the simulator (base of the three above)
  ValueError        invalid launch configuration (as CUDA refuses the launch)
"""
from __future__ import annotations

import functools
import operator
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from .. import _paths
from ._build import SimCompileError, build_module
from ._worker import DEADLOCK, KERNEL_ERROR, OK, WorkerDied, get_worker

__all__ = ["SimBackend", "SimFunction", "sim_available", "SimError", "SimCompileError", "SimKernelError",
           "SimDeadlockError", "SimCrashError", "SimTimeoutError"]

MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
DEFAULT_DYNAMIC_SMEM = 48 * 1024          # above this CUDA needs cudaFuncAttributeMaxDynamicSharedMemorySize
MAX_DYNAMIC_SMEM = 227 * 1024             # opt-in limit per block on sm_90 (H100) and sm_80 (A100: 163 KiB)
SCHEDULES = {"default": 0, "reversed": 1, "warp-greedy": 2, "random": 3}
REGISTER_FILE = 64 * 1024                 # 32-bit registers per SM (and per block) on sm_80 and sm_90
REGISTER_UNIT = 256                       # registers are allocated per warp in units of 256
MAX_REGISTERS_PER_THREAD = 255
# The race detector's build: g++ calls __asan_{load,store}N_noabort before every
# memory access (kernel-address mode links no sanitizer runtime; the simulator's
# runtime defines the callbacks); -g1 (line tables) lets reports name source lines.
# -O1: a module of 30 instantiations compiles in 14 s against 23 s at -O2 and 17 s
# for the plain -O2 build (2 loaded cores); test launches are short, compiles are not.
RACECHECK_FLAGS = ("-DGPUCONV_SIM_RACE", "-fsanitize=kernel-address",
                   "--param=asan-instrumentation-with-call-threshold=0", "--param=asan-stack=0",
                   "--param=asan-globals=0", "-O1", "-g1")
ALIGNMENT_FLAGS = ("-fsanitize=alignment",)


class SimError(RuntimeError):
    """Base of the simulator's run-time errors."""


class SimKernelError(SimError):
    """The kernel misused the CUDA model (e.g. a warp mask without its own lane)."""


class SimDeadlockError(SimKernelError):
    """A barrier or warp operation that not all threads reach."""


class SimCrashError(SimKernelError):
    """The kernel crashed (signal) or AddressSanitizer reported a bad access."""


class SimTimeoutError(SimKernelError):
    """The launch did not finish in time."""


def sim_available() -> bool:
    """True where the simulator can run: Linux on x86-64 or aarch64 with g++."""
    return (sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")
            and shutil.which("g++") is not None)


# ---------------------------------------------------------------- parameter types
_VECTOR_BASE = {f"{b}{n}": b for b in ("char", "uchar", "short", "ushort", "int", "uint", "long", "ulong",
                                       "longlong", "ulonglong", "float", "double") for n in (1, 2, 3, 4)}
_VECTOR_BASE.update({"__half2": "__half", "__nv_bfloat162": "__nv_bfloat16"})
_BASE_DTYPE = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4", "uint": "u4", "long": "i8",
               "ulong": "u8", "longlong": "i8", "ulonglong": "u8", "float": "f4", "double": "f8",
               "__half": "f2", "__nv_bfloat16": "u2"}


class Param:
    """One kernel parameter, from the descriptor built by gpuconv_sim_entry.h."""
    __slots__ = ("pointer", "const", "cat", "size", "cname")

    def __init__(self, desc: str):
        self.pointer = desc.startswith("*")
        self.const = self.pointer and desc[1] == "c"
        value = desc[2:] if self.pointer else desc
        self.cat = value[0]
        size, _, self.cname = value[1:].partition(":")
        self.size = int(size)

    def __str__(self) -> str:
        if self.pointer:
            return f"{'const ' if self.const else ''}{self.cname}*"
        return self.cname

    def dtype(self) -> np.dtype | None:
        """The NumPy dtype of this value type, where there is one."""
        c, s = self.cat, self.size
        if c in "iuf" and s in (1, 2, 4, 8):
            if c == "f" and s == 1:
                return None
            return np.dtype(f"{c}{s}")
        return {"b": np.dtype(np.bool_), "h": np.dtype(np.float16), "c": np.dtype(np.int8)}.get(c)

    def accepts_array(self, dt: np.dtype) -> bool:
        c = self.cat
        if c == "v":
            return True
        if c == "c":
            return dt in (np.dtype(np.int8), np.dtype(np.uint8))
        if c == "B":                                # no NumPy bfloat16: raw uint16 bits or ml_dtypes.bfloat16
            return dt == np.dtype(np.uint16) or (dt.name == "bfloat16" and dt.itemsize == 2)
        if c == "s":
            if dt.itemsize == self.size and dt.kind in "cV":
                return True
            base = _VECTOR_BASE.get(self.cname)
            return base is not None and dt == np.dtype(_BASE_DTYPE[base])
        want = self.dtype()
        return want is not None and dt == want

    def pack_scalar(self, v) -> bytes:
        """The bytes of a value argument, or TypeError when the GPU would misread it."""
        c, s = self.cat, self.size
        if isinstance(v, np.ndarray) and v.ndim == 0 and c == "s":
            v = v[()]
        if isinstance(v, np.generic):
            dt = v.dtype
            ok = False
            if c == "s":
                ok = dt.itemsize == s and dt.kind in "cV"
            elif c == "B":
                ok = dt == np.dtype(np.uint16) or (dt.name == "bfloat16" and dt.itemsize == 2)
            elif c == "c":
                ok = dt in (np.dtype(np.int8), np.dtype(np.uint8))
            else:
                ok = dt == self.dtype()
            if ok:
                return v.tobytes()
            raise TypeError(f"expects {self._scalar_hint()}, got numpy.{type(v).__name__}")
        # CuPy passes a Python int as a 64-bit integer, a float as a double, a
        # complex as two doubles, a bool as one byte: right only for those types.
        if isinstance(v, bool):
            if c == "b":
                return bytes([int(v)])
        elif isinstance(v, int):
            if c == "i" and s == 8 and -2**63 <= v < 2**63:
                return int(v).to_bytes(8, sys.byteorder, signed=True)
            if c == "u" and s == 8 and 0 <= v < 2**63:
                return int(v).to_bytes(8, sys.byteorder, signed=False)
        elif isinstance(v, float):
            if c == "f" and s == 8:
                return np.float64(v).tobytes()
        elif isinstance(v, complex):
            if c == "s" and s == 16:
                return np.complex128(v).tobytes()
        what = f"Python {type(v).__name__}" if isinstance(v, (bool, int, float, complex)) else type(v).__name__
        extra = ""
        if isinstance(v, (int, float, complex)) and not isinstance(v, bool):
            extra = (f" (CuPy would pass a Python {type(v).__name__} as a 64-bit value and the kernel would read "
                     f"garbage; pass {self._scalar_hint()}(...))")
        raise TypeError(f"expects {self._scalar_hint()}, got {what}{extra}")

    def _scalar_hint(self) -> str:
        if self.cat == "s":
            return f"a NumPy scalar of {self.size} bytes (complex or structured) for {self.cname}"
        if self.cat == "B":
            return "numpy.uint16 (bfloat16 bits)"
        dt = self.dtype()
        return f"numpy.{dt.type.__name__}" if dt is not None else self.cname


def _dims(v, what: str) -> tuple[int, int, int]:
    if isinstance(v, (tuple, list)):
        if not 1 <= len(v) <= 3:
            raise ValueError(f"{what} must have 1 to 3 dimensions, got {v!r}")
        t = [operator.index(x) for x in v]
    else:
        t = [operator.index(v)]
    return tuple(t + [1] * (3 - len(t)))


class SimFunction:
    """A kernel of a simulated module; called like cupy.RawKernel."""

    def __init__(self, backend: "SimBackend", lib: Path, index: int, name: str, signature: str,
                 source_name: str = ""):
        self._backend = backend
        self._source_name = source_name
        self._lib = lib
        self._index = index
        self.name = name
        self.signature = signature
        self.params = [Param(d) for d in signature.split(";")] if signature else []
        self._max_dynamic_smem: int | None = None

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        """As cupy.RawKernel's: setting it opts the kernel in to more than 48 KiB of
        static + dynamic shared memory (cudaFuncAttributeMaxDynamicSharedMemorySize)."""
        return DEFAULT_DYNAMIC_SMEM if self._max_dynamic_smem is None else self._max_dynamic_smem

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value: int) -> None:
        v = operator.index(value)
        if not 0 <= v <= MAX_DYNAMIC_SMEM:
            raise ValueError(f"{self.name}: max_dynamic_shared_size_bytes={v} is outside [0, {MAX_DYNAMIC_SMEM}]; "
                             f"CUDA would refuse the attribute")
        self._max_dynamic_smem = v

    def __repr__(self) -> str:
        return f"<SimFunction {self.name}({', '.join(map(str, self.params))})>"

    def __call__(self, grid, block, args, *, shared_mem: int = 0, stream=None, enable_cooperative_groups=False):
        g = _dims(grid, "grid")
        b = _dims(block, "block")
        if min(g) < 1 or any(x > m for x, m in zip(g, MAX_GRID)):
            raise ValueError(f"{self.name}: invalid grid {g} (each dimension >= 1, at most {MAX_GRID}); "
                             f"CUDA would refuse the launch")
        if min(b) < 1 or any(x > m for x, m in zip(b, MAX_BLOCK)) or b[0] * b[1] * b[2] > MAX_THREADS_PER_BLOCK:
            raise ValueError(f"{self.name}: invalid block {b} (at most {MAX_BLOCK} and "
                             f"{MAX_THREADS_PER_BLOCK} threads); CUDA would refuse the launch")
        smem = operator.index(shared_mem)
        if smem < 0 or smem > MAX_DYNAMIC_SMEM:
            raise ValueError(f"{self.name}: shared_mem={smem} bytes of dynamic shared memory is outside "
                             f"[0, {MAX_DYNAMIC_SMEM}]; CUDA would refuse the launch")
        if smem > max(DEFAULT_DYNAMIC_SMEM, self.max_dynamic_shared_size_bytes):
            raise ValueError(f"{self.name}: shared_mem={smem} bytes needs the kernel attribute "
                             f"max_dynamic_shared_size_bytes >= {smem} (it is "
                             f"{self.max_dynamic_shared_size_bytes}); CUDA would refuse the launch")
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"{self.name}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments ({', '.join(map(str, self.params))}), "
                            f"got {len(args)}")
        packed, arrays = [], []
        for i, (a, p) in enumerate(zip(args, self.params)):
            if p.pointer:
                if a is None:
                    packed.append((2,))
                    continue
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{self.name}: argument {i} ({p}) expects a numpy array, got {type(a).__name__}")
                if not p.accepts_array(a.dtype):
                    raise TypeError(f"{self.name}: argument {i} ({p}) expects an array of "
                                    f"{p.dtype() or p.cname}, got {a.dtype}")
                if not a.flags.c_contiguous:
                    raise ValueError(f"{self.name}: argument {i} ({p}) must be C-contiguous (the kernel sees "
                                     f"only the data pointer)")
                if not p.const and not a.flags.writeable:
                    raise ValueError(f"{self.name}: argument {i} ({p}) is a read-only array but the kernel "
                                     f"may write through it")
                packed.append(None)
                arrays.append((i, a, not p.const))
            else:
                try:
                    packed.append((0, p.pack_scalar(a)))
                except TypeError as e:
                    raise TypeError(f"{self.name}: argument {i} ({p}) {e}") from None
        regions = self._regions(arrays, packed)
        b_ = self._backend
        worker, handle = b_._load(self._lib)
        regs = self._backend._registers(self._source_name, self.name)
        if regs is not None:
            threads = b[0] * b[1] * b[2]
            per_warp = -(-regs * 32 // REGISTER_UNIT) * REGISTER_UNIT
            need = -(-threads // 32) * per_warp
            if need > REGISTER_FILE:
                raise ValueError(f"{self.name}: {threads} threads x {regs} registers ({-(-threads // 32)} warps x "
                                 f"{per_warp} allocated) = {need} registers, above the {REGISTER_FILE} of an SM "
                                 f"(ptxas report for {self._backend.registers}); CUDA would refuse the launch (too "
                                 f"many resources requested)")
        opt_in = self._max_dynamic_smem if self._max_dynamic_smem is not None else 0
        try:
            st, msg = worker.run(handle, self._index, g, b, smem, b_.timeout_s, regions, packed,
                                 SCHEDULES[b_.schedule], b_.seed, max(opt_in, 1) if self._max_dynamic_smem is not None
                                 else 0)
        except WorkerDied as e:
            cls = SimTimeoutError if e.kind == "timeout" else SimCrashError
            raise cls(f"kernel {self.name} (grid {g}, block {b}) {e}") from None
        if st == OK:
            return
        msg = _symbolize(msg, self._lib)
        if st == KERNEL_ERROR:
            raise SimKernelError(msg)
        if st == DEADLOCK:
            raise SimDeadlockError(msg)
        raise SimError(msg)

    @staticmethod
    def _regions(arrays, packed) -> list:
        """Arrays that share memory become one region, so aliasing behaves as on
        the GPU; every other array is a region (and, with ASan, a heap block) of its own."""
        spans = []
        for i, a, writes in arrays:
            start = a.__array_interface__["data"][0]
            spans.append((start, start + a.nbytes, i, a, writes))
        spans.sort(key=lambda s: (s[0], -s[1]))
        groups: list[list] = []
        for s in spans:
            if groups and s[0] < groups[-1][1] and s[1] > s[0]:
                g = groups[-1]
                g[1] = max(g[1], s[1])
                g[2].append(s)
            else:
                groups.append([s[0], s[1], [s]])
        regions = []
        for r, (start, end, members) in enumerate(groups):
            if len(members) == 1:
                _, _, i, a, writes = members[0]
                flat = a.reshape(-1).view(np.uint8)
                regions.append((flat, flat if writes else None))
                packed[i] = (1, r, 0)
            else:
                import ctypes
                raw = np.ctypeslib.as_array((ctypes.c_uint8 * (end - start)).from_address(start))
                writes = any(m[4] for m in members)
                regions.append((raw, raw if writes else None))
                for m in members:
                    packed[m[2]] = (1, r, m[0] - start)
        return regions


_PC = re.compile(r"\{\{pc:([0-9a-f]+)\}\}")


def _symbolize(msg: str, lib: Path) -> str:
    """Replace the runtime's {{pc:OFFSET}} marks by source lines (addr2line on the
    module library; race-check builds carry -g)."""
    pcs = sorted(set(_PC.findall(msg)))
    if not pcs or shutil.which("addr2line") is None:
        return _PC.sub(lambda m: f"pc 0x{m.group(1)} in {lib.name}", msg)
    names = {pc: _addr2line(str(lib), pc) for pc in pcs}
    return _PC.sub(lambda m: names[m.group(1)], msg)


@functools.lru_cache(maxsize=4096)
def _addr2line(lib: str, pc: str) -> str:
    r = subprocess.run(["addr2line", "-e", lib, "-f", "-C", "-i", f"0x{pc}"], capture_output=True, text=True,
                       check=False)
    lines = r.stdout.split("\n")
    frames = []                                   # innermost first: (function, file:line)
    for fn, loc in zip(lines[0::2], lines[1::2]):
        loc = loc.split(" (discriminator")[0]
        if loc.startswith("??"):
            continue
        path, _, line = loc.rpartition(":")
        frames.append(f"{Path(path).name}:{line} ({fn.split('(')[0]})")
    return " <- ".join(frames) if frames else f"pc 0x{pc} in {Path(lib).name}"


class SimBackend:
    """Kernel backend that runs kernels_cu on the CPU (see module docstring).

    asan:       build modules with AddressSanitizer (out-of-bounds reads and
                writes of array arguments, shared memory and locals raise
                SimCrashError carrying ASan's report); ~3-5x slower.
    timeout_s:  a launch running longer fails with SimTimeoutError.
    source_dir: where `module` names are looked up (default: kernels_cu/).
    cxx:        the C++ compiler (g++).
    cxx_flags:  extra compiler flags for the modules, e.g. ("-g",) or
                ("-DGPUCONV_SIM_UCONTEXT",) for the portable swapcontext fibers.
    schedule:   the order threads run in between barriers and warp operations:
                "default" (thread order to the next barrier, direction alternating
                per __syncthreads), "reversed", "warp-greedy" (one warp until it
                reaches a block barrier) or "random" (seeded by `seed`; also
                switches after every barrier and warp operation).
    racecheck:  build with every memory access instrumented and report shared-memory
                races (two threads, one barrier epoch, no __syncthreads or warp
                operation between, at least one writing), reads of bytes never
                written in the block and of cp.async destinations still in flight,
                and accesses outside the shared memory the launch has (SimKernelError).
    alignment:  build with -fsanitize=alignment: a misaligned typed access (float4,
                double2, ...) fails the launch with its source line.
    registers:  an architecture ("sm_80", "sm_90"): each launch checks threads x the
                kernel's registers from ptxas (`gpuconv kernels`, one nvcc/NVRTC compile
                per module on first use) against the SM's 64 K register file.
    capturing:  pretend the stream is being captured into a CUDA graph (gpuconv.cuda.backend
                .is_capturing reads this attribute): the dispatcher then picks capture-safe
                variants only.  May be set on an existing backend.
    """

    name = "sim"
    xp = np

    def __init__(self, asan: bool = False, *, timeout_s: int = 120, source_dir: str | Path | None = None,
                 cxx: str = "g++", cxx_flags: tuple[str, ...] = (), schedule: str = "default", seed: int = 0,
                 racecheck: bool = False, alignment: bool = False, registers: str | None = None,
                 capturing: bool = False):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, got {schedule!r}")
        seed = operator.index(seed)
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        if racecheck and asan:
            raise ValueError("racecheck=True and asan=True cannot be combined (both instrument every access); "
                             "use two backends")
        self.asan = bool(asan)
        self.schedule = schedule
        self.seed = seed
        self.racecheck = bool(racecheck)
        self.alignment = bool(alignment)
        if registers is not None and not re.fullmatch(r"sm_\d+", str(registers)):
            raise ValueError(f"registers must be an architecture such as 'sm_90', got {registers!r}")
        self.registers = registers
        self.capturing = bool(capturing)
        self._reg_reports: dict[str, dict[str, int]] = {}
        cxx_flags = tuple(cxx_flags) + (RACECHECK_FLAGS if racecheck else ()) + (ALIGNMENT_FLAGS if alignment else ())
        self.cxx_flags = tuple(cxx_flags)
        self.timeout_s = int(timeout_s)
        self.source_dir = Path(source_dir) if source_dir is not None else None
        self.cxx = cxx
        self._functions: dict[tuple, SimFunction] = {}

    def __repr__(self) -> str:
        extra = "".join(f", {k}=True" for k in ("racecheck", "alignment") if getattr(self, k))
        sched = f", schedule={self.schedule!r}" + (f", seed={self.seed}" if self.schedule == "random" else "")
        return f"SimBackend(asan={self.asan}{sched}{extra})"

    def _source(self, module) -> Path:
        if isinstance(module, Path):
            return module.resolve()
        return ((self.source_dir or _paths.kernels_dir()) / module).resolve()

    def _registers(self, module: str, name: str) -> int | None:
        """Registers per thread of kernel `name` from the ptxas report, when asked for."""
        if self.registers is None:
            return None
        report = self._reg_reports.get(module)
        if report is None:
            from ..cuda import compile_check
            if module not in compile_check.MODULES:
                raise ValueError(f"registers={self.registers!r}: {module} is not a registered kernels_cu module, so "
                                 f"ptxas has no report for it")
            compiler = compile_check.available_compiler()
            if compiler is None:
                raise RuntimeError("registers=...: no CUDA compiler (nvcc or the NVRTC wheel) for the ptxas report")
            ok, log, rows = compile_check.compile_module(module, self.registers, compiler)
            if not ok:
                raise RuntimeError(f"registers=...: compiling {module} for {self.registers} failed:\n{log[-2000:]}")
            report = {r.kernel: r.registers for r in rows if r.registers >= 0}
            self._reg_reports[module] = report
        return report.get(name)

    def _load(self, lib: Path):
        w = get_worker(self.asan, self.cxx)
        handle, _ = w.load(lib)
        return w, handle

    def get_function(self, module, name_expressions, name: str) -> SimFunction:
        """The kernel `name` of `module` (a file name in kernels_cu/ or
        source_dir, or a Path), built with every instantiation in
        `name_expressions` -- like cupy.RawModule(..., name_expressions=...).get_function(name)."""
        exprs = tuple(name_expressions)
        key = (str(module), exprs, name)            # memoized per backend, like RawModules per device
        fn = self._functions.get(key)
        if fn is not None:
            return fn
        if name not in exprs:
            raise ValueError(f"{name!r} is not one of the module's name_expressions {exprs}")
        lib = build_module(self._source(module), exprs, asan=self.asan, cxx=self.cxx, extra_flags=self.cxx_flags)
        _, entries = get_worker(self.asan, self.cxx).load(lib)
        index = exprs.index(name)
        fn = SimFunction(self, lib, index, name, entries[index][1], str(module))
        self._functions[key] = fn
        return fn
