"""The device's ceilings, measured in the same run as the cases they judge.

bandwidth: a large copy, counted as read + write (2 x bytes / time), the
  traffic a memory-bound kernel that reads its input once and writes its
  output once can at best reach (H100 SXM: about 3.0 TB/s by device copy).
compute: a large GEMM (2*M*N*K / time): fp32 through cupy.matmul with TF32
  off (CuPy's default), fp16 through cupy.matmul (tensor cores), and where
  torch with CUDA is present TF32 and bf16 through torch.matmul.
On the CPU: numpy copyto and np.matmul (float32 and float64), on the threads
the run uses.
A ceiling is what the machine can do, so each is its fastest repeat (min
time), not the median the cases report: on a shared machine a median ceiling
sinks with the load and cases then show more than 100% of it.
"""
from __future__ import annotations

from .timing import CupyTimer, TorchTimer, time_cpu

# dtype option -> the GEMM ceiling its cases are judged by
CEILING_FOR_DTYPE = {"float32": "fp32", "tf32": "tf32", "float16": "fp16", "bfloat16": "bf16",
                     "float64": "fp64"}


def cpu_ceilings(quick: bool = False) -> dict:
    import numpy as np
    nbytes = (64 if quick else 256) << 20
    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    t = time_cpu(lambda: np.copyto(dst, src), min_repeats=5, max_repeats=50, min_time_s=0.3)
    out = {"copy_GBps": 2 * nbytes / t.min_s / 1e9, "copy_bytes": nbytes, "gemm_TFLOPs": {},
           "gemm_n": {}}
    n = 1024 if quick else 2048
    for key, dt in (("fp32", np.float32), ("fp64", np.float64)):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, n)).astype(dt)
        b = rng.standard_normal((n, n)).astype(dt)
        t = time_cpu(lambda: np.matmul(a, b), min_repeats=3, max_repeats=20, min_time_s=0.3)
        out["gemm_TFLOPs"][key] = 2 * n**3 / t.min_s / 1e12
        out["gemm_n"][key] = n
    return out


def gpu_ceilings(quick: bool = False, notes: list | None = None) -> dict:
    import cupy
    notes = notes if notes is not None else []
    timer = CupyTimer()
    nbytes = (256 if quick else 1024) << 20
    src = cupy.ones(nbytes // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    t = timer.run(lambda: cupy.copyto(dst, src), min_repeats=10, max_repeats=100, min_time_s=0.1,
                  flush_l2=False)
    out = {"copy_GBps": 2 * nbytes / t.min_s / 1e9, "copy_bytes": nbytes, "gemm_TFLOPs": {},
           "gemm_n": {}}
    src = dst = None                      # free the buffers before the GEMMs
    n = 4096 if quick else 8192
    for key, dt in (("fp32", cupy.float32), ("fp16", cupy.float16)):
        a = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(dt)
        b = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(dt)
        t = timer.run(lambda: cupy.matmul(a, b), min_repeats=5, max_repeats=50, min_time_s=0.2,
                      flush_l2=False)
        out["gemm_TFLOPs"][key] = 2 * n**3 / t.min_s / 1e12
        out["gemm_n"][key] = n
        a = b = None
    try:
        import torch
        if not torch.cuda.is_available():
            raise ImportError("torch has no CUDA")
    except ImportError as exc:
        notes.append(f"TF32 and bf16 GEMM ceilings not measured: {exc}")
        return out
    ttimer = TorchTimer()
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        for key, dt, tf32 in (("tf32", torch.float32, True), ("bf16", torch.bfloat16, False)):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a = torch.randn(n, n, device="cuda", dtype=dt)
            b = torch.randn(n, n, device="cuda", dtype=dt)
            t = ttimer.run(lambda: torch.matmul(a, b), min_repeats=5, max_repeats=50,
                           min_time_s=0.2, flush_l2=False)
            out["gemm_TFLOPs"][key] = 2 * n**3 / t.min_s / 1e12
            out["gemm_n"][key] = n
            a = b = None
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return out


def compute_ceiling(ceilings: dict, dtype: str) -> tuple[str, float | None]:
    """(name, TFLOP/s) of the GEMM ceiling a case of `dtype` is judged by; TF32
    falls back to fp32 when it was not measured."""
    key = CEILING_FOR_DTYPE.get(dtype, "fp32")
    gemm = ceilings.get("gemm_TFLOPs", {})
    if key not in gemm and key == "tf32":
        key = "fp32"
    return key, gemm.get(key)
