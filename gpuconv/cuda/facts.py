"""What the dispatcher may know about a device."""
from __future__ import annotations

from dataclasses import dataclass

from .launch import SMEM_LIMIT


@dataclass(frozen=True)
class DeviceFacts:
    """Defaults describe an H100 SXM (the GPU of the dispatcher's napkin math); the simulator,
    which reports nothing, is dispatched as if it were one."""

    name: str = "default (H100-like)"
    cc: tuple[int, int] = (9, 0)
    sm_count: int = 132
    smem_per_block: int = SMEM_LIMIT      # without the opt-in attribute (launch.SMEM_LIMIT)
    free_bytes: int = 64 * 1024**3
    total_bytes: int = 80 * 1024**3
