"""The float32 precision policy, in torch's vocabulary (torch.set_float32_matmul_precision).

    gpuconv.set_float32_precision("highest" | "high" | "medium")   process-wide
    gpuconv.get_float32_precision()
    gpuconv.conv2d(..., precision=None)        per call; None: the process-wide value

  "highest"  exact FP32 arithmetic (FMA units), the default;
  "high"     3xTF32 on tensor cores: each operand split into a TF32 part and a TF32
             residual, three MMAs, FP32 accumulation -- FP32-level accuracy;
  "medium"   TF32 on tensor cores (10-bit mantissa products, FP32 accumulation): what
             cuDNN does under torch's default allow_tf32.

The policy applies to float32 convolutions on a GPU path; every other dtype, and
the CPU path, computes as "highest" whatever is asked (as torch does on the CPU).
Until the TF32 kernels are registered with the dispatcher, the GPU path also
computes "high" and "medium" exactly: the answer is then more accurate than asked,
never less.
"""
from __future__ import annotations

import threading

PRECISIONS = ("highest", "high", "medium")

_lock = threading.Lock()
_process_wide = "highest"


def check_precision(precision, name: str = "precision") -> str:
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {PRECISIONS}, got {precision!r}")
    return precision


def set_float32_precision(precision: str) -> None:
    """Set the process-wide float32 precision ("highest", "high" or "medium")."""
    global _process_wide
    check_precision(precision)
    with _lock:
        _process_wide = precision


def get_float32_precision() -> str:
    """The process-wide float32 precision (default "highest")."""
    return _process_wide


def resolve(precision) -> str:
    """A call's `precision` argument: None means the process-wide value."""
    return _process_wide if precision is None else check_precision(precision)
