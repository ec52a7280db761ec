"""Launcher of the tensor-core implicit-GEMM variant (kernels_cu/conv2d_implicit_gemm.cu).

Same signature as every launcher in launchers.py; kept in its own module so the
variant's configuration (tile, staging workspace, limits) reads in one place.

    launch_implicit_gemm(backend, x, w, b, y, spec, act, config)

Three launches on the backend's stream: x NCHW -> xs NHWC with channels padded to a
multiple of 8 per group, w -> ws [K][R][S][Cgp], then the GEMM kernel (which writes y
NCHW with bias + activation fused).  The staging buffers are the workspace.
"""
from __future__ import annotations

import numpy as np

from ._types import ACT_CODES, ctype, expr
from .facts import DeviceFacts
from .launchers import GRID_Y_MAX as GRID_YZ_MAX
from .launchers import I32, INT32_MAX, _bias_args, _blocks, _check_dims, _geom2
from ..spec import ConvSpec

IGEMM_MODULE = "conv2d_implicit_gemm.cu"
# (BM, BN, BK, WM, WN, STAGES): 128x128 block tile, 8 warps of 64x32, 3 stages of
# (128+128)*32 halves = 48 KiB (the default shared-memory limit; see the .cu header).
IGEMM_TILE = (128, 128, 32, 64, 32, 3)
IGEMM_THREADS = (IGEMM_TILE[0] // IGEMM_TILE[3]) * (IGEMM_TILE[1] // IGEMM_TILE[4]) * 32
IGEMM_SMEM = IGEMM_TILE[5] * (IGEMM_TILE[0] + IGEMM_TILE[1]) * IGEMM_TILE[2] * 2
# __nv_bfloat16 is instantiated (its own module: CuPy ships no cuda_bf16.h, so the float16
# module must not need it), compile-checked and simulated; the API has no bfloat16 dtype
# (NumPy has none), so only float16 is registered with the dispatcher.
IGEMM_BF16_MODULE = "conv2d_implicit_gemm_bf16.cu"
IGEMM_DTYPES = (np.dtype(np.float16),)
STAGE_THREADS = 256
MIN_CC = (8, 0)                    # cp.async, mma.m16n8k16 with f32 accumulators


def igemm_name(ct: str, act: int) -> str:
    return expr("conv2d_implicit_gemm", ct, act, *IGEMM_TILE)


def _instantiations(ct: str) -> tuple[str, ...]:
    return (tuple(igemm_name(ct, a) for a in ACT_CODES)
            + (expr("igemm_stage_input", ct), expr("igemm_stage_weight", ct)))


IGEMM_INSTANTIATIONS = _instantiations("__half")
IGEMM_BF16_INSTANTIATIONS = _instantiations("__nv_bfloat16")


def padded_channels(spec: ConvSpec) -> int:
    """Cg rounded up to 8: one 16-byte cp.async chunk holds 8 channels of one tap."""
    return -(-spec.c_per_group // 8) * 8


def igemm_workspace(spec: ConvSpec, config: dict | None = None) -> int:
    H, W, R, S, *_ = _geom2(spec)
    cgp = padded_channels(spec)
    return spec.dtype.itemsize * (spec.n * H * W * spec.groups * cgp + spec.k * R * S * cgp)


def igemm_grid(spec: ConvSpec):
    BM, BN = IGEMM_TILE[:2]
    *_, P, Q = _geom2(spec)[:6]
    M = spec.n * P * Q
    return (-(-M // BM), -(-spec.k_per_group // BN), spec.groups), (IGEMM_THREADS, 1, 1)


def igemm_supports(spec: ConvSpec):
    if spec.dtype not in IGEMM_DTYPES:
        return False, (f"dtype {spec.dtype} (the tensor-core implicit GEMM takes float16 only; float32 and "
                       f"float64 stay exact on the FMA kernels)")
    if spec.nd != 2:
        return False, f"{spec.nd}-D convolution (the implicit-GEMM kernel is 2-D)"
    H, W, R, S, P, Q, *_ = _geom2(spec)
    cgp = padded_channels(spec)
    if R * S * cgp > INT32_MAX or P * Q > INT32_MAX or H * W > INT32_MAX:
        return False, "GEMM K (R*S*Cg) or a plane exceeds 2^31 elements"
    (gx, gy, gz), _ = igemm_grid(spec)
    if spec.n * -(-H * W // 32) > INT32_MAX or -(-spec.groups * cgp // 32) > GRID_YZ_MAX:
        return False, "the NHWC staging grid exceeds the launch limits"
    if gx > INT32_MAX or gy > GRID_YZ_MAX or gz > GRID_YZ_MAX:
        return False, f"grid ({gx}, {gy}, {gz}) exceeds the launch limits (2^31-1, 65535, 65535)"
    return True, "2-D float16 (tensor cores: mma.sync m16n8k16, fp32 accumulation)"


def igemm_config(spec: ConvSpec, facts: DeviceFacts) -> dict:
    return {}


def launch_implicit_gemm(backend, x, w, b, y, spec, act, config):
    _launch(backend, x, w, b, y, spec, act, ctype(spec.dtype), spec.dtype)


def _launch(backend, x, w, b, y, spec, act, ct: str, store_dtype):
    """The three launches for element type `ct` ("__half" or "__nv_bfloat16"), with staging
    buffers of `store_dtype` (NumPy has no bfloat16: the tests pass its bits as uint16)."""
    _check_dims(spec)
    # the cached compute capability, not device_facts(): that reads free memory per call
    cc_of = getattr(backend, "compute_capability", None)
    if callable(cc_of):
        cc = cc_of()
        if tuple(cc) < MIN_CC:
            raise ValueError(f"implicit_gemm needs compute capability >= 8.0 (cp.async, mma.sync "
                             f"m16n8k16); this device is {cc[0]}.{cc[1]}")
    xp = backend.xp
    H, W, R, S, P, Q, sh, sw, ph, pw, dh, dw = _geom2(spec)
    G, cgp = spec.groups, padded_channels(spec)
    module, names = ((IGEMM_BF16_MODULE, IGEMM_BF16_INSTANTIATIONS) if ct == "__nv_bfloat16"
                     else (IGEMM_MODULE, IGEMM_INSTANTIATIONS))
    get = lambda name: backend.get_function(module, names, name)  # noqa: E731

    xs = xp.empty(spec.n * H * W * G * cgp, dtype=store_dtype)
    ws = xp.empty(spec.k * R * S * cgp, dtype=store_dtype)
    HW = H * W
    tiles = -(-HW // 32)
    get(expr("igemm_stage_input", ct))((tiles * spec.n, -(-(G * cgp) // 32), 1), (32, 8, 1),
                                       (x, xs, I32(spec.n), I32(spec.c), I32(HW), I32(G), I32(cgp)))
    total = ws.size
    get(expr("igemm_stage_weight", ct))((_blocks(total, STAGE_THREADS),), (STAGE_THREADS,),
                                        (w, ws, I32(spec.k), I32(spec.c_per_group), I32(R * S), I32(cgp)))
    bias, has_bias = _bias_args(b, w)
    grid, block = igemm_grid(spec)
    get(igemm_name(ct, act))(grid, block,
                             (xs, ws, bias, y, I32(spec.n), I32(H), I32(W), I32(spec.k), I32(R), I32(S),
                              I32(P), I32(Q), I32(sh), I32(sw), I32(ph), I32(pw), I32(dh), I32(dw),
                              I32(G), I32(cgp), has_bias),
                             shared_mem=IGEMM_SMEM)


# The wrapper self-test kernels of kernels_cu/mma.cuh (tests/test_kernels_tc.py): not a
# variant, but compiled and checked with the kernels and built by the simulator.
MMA_CHECK_MODULE = "mma_check.cu"
MMA_CHECK_INSTANTIATIONS = (
    tuple(expr("mma_check", k) for k in (0, 1, 2))
    + tuple(expr("ldmatrix_check", t) for t in (0, 1))
    + tuple(expr("cp_async_check", n) for n in (1, 3))
    + ("tf32_round_check",))
