"""kernels_cu/conv2d_implicit_gemm.cu (and its bfloat16 twin conv2d_implicit_gemm_bf16.cu):
tensor-core implicit GEMM (variant "implicit_gemm").

Three launches on the backend's stream: x NCHW -> xs NHWC with channels padded to a
multiple of 8 per group, w -> ws [K][R][S][Cgp], then the GEMM kernel (which writes y
NCHW with bias + activation fused).  The staging buffers are the workspace.
"""
from __future__ import annotations

import numpy as np

from .._types import ACT_CODES, ctype, expr
from ..launch import (GRID_YZ_MAX, I32, INT32_MAX, Variant, bias_args, blocks, geometry,
                      geometry_args)
from ...spec import ConvSpec

MODULE = "conv2d_implicit_gemm.cu"
# (BM, BN, BK, WM, WN, STAGES): 128x128 block tile, 8 warps of 64x32, 3 stages of
# (128+128)*32 halves = 48 KiB (launch.SMEM_LIMIT; see the .cu header).
TILE = (128, 128, 32, 64, 32, 3)
THREADS = (TILE[0] // TILE[3]) * (TILE[1] // TILE[4]) * 32
SMEM = TILE[5] * (TILE[0] + TILE[1]) * TILE[2] * 2
# __nv_bfloat16 is instantiated in a module of its own (CuPy ships no cuda_bf16.h, so the
# float16 module must not need it), compile-checked and simulated; the API has no
# bfloat16 dtype (NumPy has none), so only float16 is registered with the dispatcher.
BF16_MODULE = "conv2d_implicit_gemm_bf16.cu"
DTYPES = (np.dtype(np.float16),)
STAGE_THREADS = 256
MIN_CC = (8, 0)                    # cp.async, mma.m16n8k16 with f32 accumulators


def kernel_name(ct: str, act: int) -> str:
    return expr("conv2d_implicit_gemm", ct, act, *TILE)


def _instantiations(ct: str) -> tuple[str, ...]:
    return (tuple(kernel_name(ct, a) for a in ACT_CODES)
            + (expr("igemm_stage_input", ct), expr("igemm_stage_weight", ct)))


INSTANTIATIONS = _instantiations("__half")
BF16_INSTANTIATIONS = _instantiations("__nv_bfloat16")
SOURCES = {MODULE: INSTANTIATIONS, BF16_MODULE: BF16_INSTANTIATIONS}


def padded_channels(spec: ConvSpec) -> int:
    """Cg rounded up to 8: one 16-byte cp.async chunk holds 8 channels of one tap."""
    return -(-spec.c_per_group // 8) * 8


def workspace_bytes(spec: ConvSpec, config: dict | None = None) -> int:
    g = geometry(spec)
    cgp = padded_channels(spec)
    return spec.dtype.itemsize * (spec.n * g.H * g.W * spec.groups * cgp + spec.k * g.R * g.S * cgp)


def grid(spec: ConvSpec):
    BM, BN = TILE[:2]
    g = geometry(spec)
    M = spec.n * g.P * g.Q
    return (-(-M // BM), -(-spec.k_per_group // BN), spec.groups), (THREADS, 1, 1)


def supports(spec: ConvSpec):
    if spec.dtype not in DTYPES:
        return False, (f"dtype {spec.dtype} (the tensor-core implicit GEMM takes float16 only; float32 and "
                       f"float64 stay exact on the FMA kernels)")
    if spec.nd != 2:
        return False, f"{spec.nd}-D convolution (the implicit-GEMM kernel is 2-D)"
    g = geometry(spec)
    cgp = padded_channels(spec)
    if g.R * g.S * cgp > INT32_MAX or g.P * g.Q > INT32_MAX or g.H * g.W > INT32_MAX:
        return False, "GEMM K (R*S*Cg) or a plane exceeds 2^31 elements"
    (gx, gy, gz), _ = grid(spec)
    if spec.n * -(-g.H * g.W // 32) > INT32_MAX or -(-spec.groups * cgp // 32) > GRID_YZ_MAX:
        return False, "the NHWC staging grid exceeds the launch limits"
    if gx > INT32_MAX or gy > GRID_YZ_MAX or gz > GRID_YZ_MAX:
        return False, f"grid ({gx}, {gy}, {gz}) exceeds the launch limits (2^31-1, 65535, 65535)"
    return True, "2-D float16 (tensor cores: mma.sync m16n8k16, fp32 accumulation)"


def launch(backend, x, w, b, y, spec, act, config):
    launch_typed(backend, x, w, b, y, spec, act, ctype(spec.dtype), spec.dtype)


def launch_typed(backend, x, w, b, y, spec, act, ct: str, store_dtype):
    """The three launches for element type `ct` ("__half" or "__nv_bfloat16"), with staging
    buffers of `store_dtype` (NumPy has no bfloat16: the tests pass its bits as uint16)."""
    geo = geometry_args(spec)
    # the cached compute capability, not device_facts(): that reads free memory per call
    cc_of = getattr(backend, "compute_capability", None)
    if callable(cc_of):
        cc = cc_of()
        if tuple(cc) < MIN_CC:
            raise ValueError(f"implicit_gemm needs compute capability >= {MIN_CC[0]}.{MIN_CC[1]} "
                             f"(cp.async, mma.sync m16n8k16); this device is {cc[0]}.{cc[1]}")
    xp = backend.xp
    g = geometry(spec)
    G, cgp = spec.groups, padded_channels(spec)
    module, names = (BF16_MODULE, BF16_INSTANTIATIONS) if ct == "__nv_bfloat16" else (MODULE, INSTANTIATIONS)

    def get(name):
        return backend.get_function(module, names, name)

    xs = xp.empty(spec.n * g.H * g.W * G * cgp, dtype=store_dtype)
    ws = xp.empty(spec.k * g.R * g.S * cgp, dtype=store_dtype)
    HW = g.H * g.W
    tiles = -(-HW // 32)
    get(expr("igemm_stage_input", ct))((tiles * spec.n, -(-(G * cgp) // 32), 1), (32, 8, 1),
                                       (x, xs, I32(spec.n), I32(spec.c), I32(HW), I32(G), I32(cgp)))
    get(expr("igemm_stage_weight", ct))((blocks(ws.size, STAGE_THREADS),), (STAGE_THREADS,),
                                        (w, ws, I32(spec.k), I32(spec.c_per_group), I32(g.R * g.S),
                                         I32(cgp)))
    bias, has_bias = bias_args(b, w)
    grid_, block = grid(spec)
    get(kernel_name(ct, act))(grid_, block, (xs, ws, bias, y, *geo, I32(cgp), has_bias), shared_mem=SMEM)


VARIANTS = (Variant(
    name="implicit_gemm", module=MODULE, instantiations=INSTANTIATIONS,
    summary=("tensor-core implicit GEMM (float16, fp32 accumulate): NHWC staging copy, 128x128x32 "
             "tile, 3-stage cp.async, ldmatrix + mma.sync m16n8k16, fused bias/activation"),
    supports=supports,
    default_config=lambda spec, facts: {},
    workspace_bytes=workspace_bytes,
    launch=launch),)
