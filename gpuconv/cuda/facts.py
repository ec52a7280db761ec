"""What the dispatcher may know about a device."""
from __future__ import annotations

from dataclasses import dataclass

from .launch import SMEM_LIMIT


@dataclass(frozen=True)
class DeviceFacts:
    """Defaults describe an H100 SXM (the GPU of the dispatcher's napkin math); the simulator,
    which reports nothing, is dispatched as if it were one.

    capturing: the current stream is being captured into a CUDA graph.  The dispatcher then
    picks only capture-safe variants (no cuBLAS: CuPy 14 raises NotImplementedError from
    cublas.setStream while a stream captures; no host synchronisation, no out-of-memory
    retry); free_bytes is then not read (no per-call cudaMemGetInfo) and holds total_bytes.
    """

    name: str = "default (H100-like)"
    cc: tuple[int, int] = (9, 0)
    sm_count: int = 132
    smem_per_block: int = SMEM_LIMIT      # without the opt-in attribute (launch.SMEM_LIMIT)
    free_bytes: int = 64 * 1024**3
    total_bytes: int = 80 * 1024**3
    capturing: bool = False
