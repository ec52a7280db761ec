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
"""
from __future__ import annotations

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
                sm_count=int(attrs["MultiProcessorCount"]),
                smem_per_block=int(attrs["MaxSharedMemoryPerBlock"]))
            self._static[dev] = static
        return static

    def compute_capability(self) -> tuple[int, int]:
        """(major, minor) of the current device, from the per-device cache (no driver call)."""
        return self._static_facts()["cc"]

    def device_facts(self) -> DeviceFacts:
        """Facts of the current device: the static ones from the per-device cache, free
        memory read per call (cudaMemGetInfo, microseconds, no synchronisation)."""
        cupy = self.xp
        static = self._static_facts()
        free, total = cupy.cuda.runtime.memGetInfo()
        # memory held by CuPy's pool but unused is available to our workspaces too
        free += cupy.get_default_memory_pool().free_bytes()
        return DeviceFacts(free_bytes=int(free), total_bytes=int(total), **static)


_default = None


def default_backend():
    """CupyBackend for the current device (created once; it holds no device state)."""
    global _default
    if _default is None:
        _default = CupyBackend()
    return _default


def device_facts(backend) -> DeviceFacts:
    fn = getattr(backend, "device_facts", None)
    return fn() if callable(fn) else DeviceFacts()
