"""Backends: the one launch interface every launcher uses.

    backend.name            "cupy" | "sim"
    backend.xp              cupy on the GPU, numpy in the simulator
    backend.get_function(module, name_expressions, name) -> fn
    fn(grid, block, args, shared_mem=0)      # exactly cupy.RawKernel's call

CupyBackend launches on CuPy's current device and stream and never
synchronises.  gpuconv.sim.SimBackend has the same interface and runs the same
.cu files on the CPU.  `device_facts(backend)` gives the dispatcher what it
may know about the device (facts a backend does not report take the defaults
of gpuconv.cuda.facts.DeviceFacts).

    backend.is_capturing()  optional: True while the current stream is captured into a
                            CUDA graph (CupyBackend asks the stream; gpuconv.sim.SimBackend
                            has a `capturing` attribute that pretends).  `is_capturing(backend)`
                            reads either; the dispatcher then picks capture-safe variants only.
    backend.total_memory()  optional: the device's total bytes, read once per device
                            (gpuconv.engine refuses results larger than that).
"""
from __future__ import annotations

from dataclasses import replace

from . import loader
from .facts import DeviceFacts


class CupyBackend:
    name = "cupy"

    def __init__(self):
        import cupy
        self.xp = cupy
        self._static: dict[int, dict] = {}

    def get_function(self, module: str, name_expressions: tuple[str, ...], name: str):
        return loader.get_function(module, tuple(name_expressions), name)

    def _static_facts(self) -> dict:
        """The current device's fixed facts, read once per device
        (cudaGetDeviceProperties costs ~1 ms)."""
        cupy = self.xp
        dev = cupy.cuda.runtime.getDevice()
        static = self._static.get(dev)
        if static is None:
            d = cupy.cuda.Device(dev)
            attrs = d.attributes
            static = dict(
                name=cupy.cuda.runtime.getDeviceProperties(dev)["name"].decode(errors="replace"),
                cc=(int(d.compute_capability[:-1]), int(d.compute_capability[-1])),
                total_bytes=int(cupy.cuda.runtime.getDeviceProperties(dev)["totalGlobalMem"]),
                sm_count=int(attrs["MultiProcessorCount"]),
                smem_per_block=int(attrs["MaxSharedMemoryPerBlock"]))
            self._static[dev] = static
        return static

    def compute_capability(self) -> tuple[int, int]:
        """(major, minor) of the current device, from the per-device cache (no driver call)."""
        return self._static_facts()["cc"]

    def total_memory(self) -> int:
        """The current device's total memory in bytes (cudaDeviceProp.totalGlobalMem), read
        once per device."""
        return self._static_facts()["total_bytes"]

    def is_capturing(self) -> bool:
        """True while CuPy's current stream is being captured into a CUDA graph.  A query
        the driver refuses (cudaErrorStreamCaptureImplicit: the legacy default stream while
        another stream captures in global mode) counts as capturing: the safe answer."""
        try:
            return bool(self.xp.cuda.get_current_stream().is_capturing())
        except Exception:  # noqa: BLE001 - any refusal means a capture is in progress
            return True

    def device_facts(self) -> DeviceFacts:
        """Facts of the current device: the static ones from the per-device cache, free
        memory read per call (cudaMemGetInfo, microseconds, no synchronisation) -- except
        while the stream captures, when nothing is read (free_bytes = total_bytes; no
        variant picked under capture sizes a workspace by free memory)."""
        cupy = self.xp
        static = self._static_facts()
        if self.is_capturing():
            return DeviceFacts(free_bytes=static["total_bytes"], capturing=True, **static)
        free, _total = cupy.cuda.runtime.memGetInfo()
        # memory held by CuPy's pool but unused is available to our workspaces too
        free += cupy.get_default_memory_pool().free_bytes()
        return DeviceFacts(free_bytes=int(free), **static)


_default = None


def default_backend():
    """CupyBackend for the current device (created once; it holds no device state)."""
    global _default
    if _default is None:
        _default = CupyBackend()
    return _default


def is_capturing(backend) -> bool:
    """Whether `backend`'s current stream is being captured into a CUDA graph: its
    is_capturing() method, else its `capturing` attribute (gpuconv.sim.SimBackend), else False."""
    fn = getattr(backend, "is_capturing", None)
    if callable(fn):
        return bool(fn())
    return bool(getattr(backend, "capturing", False))


def device_facts(backend) -> DeviceFacts:
    """The backend's DeviceFacts (defaults for a backend that reports none), with
    `capturing` set from is_capturing(backend)."""
    fn = getattr(backend, "device_facts", None)
    facts = fn() if callable(fn) else DeviceFacts()
    if not facts.capturing and is_capturing(backend):
        facts = replace(facts, capturing=True)
    return facts
