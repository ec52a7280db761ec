"""kernels_cu/separable_fused.cu: depthwise then pointwise 1x1 in one kernel, the
intermediate tile kept in shared memory.

    launch(backend, x, dw, pw, b, y, spec, act)

spec: the DEPTHWISE step's ConvSpec (groups = C, K = C*m); pw (KP, C*m); y (N, KP, *out).
"""
from __future__ import annotations

import numpy as np

from .._types import ACT_CODES, REAL, ctype, expr
from ..launch import I32, INT32_MAX, SMEM_LIMIT, bias_args, geometry, geometry_args
from ...spec import ConvSpec

MODULE = "separable_fused.cu"
TILE = (4, 8, 4)      # (TP, TQ, KPT), see kernels_cu/separable_fused.cu
THREADS = 128


def kernel_name(dtype, act: int) -> str:
    return expr("separable_fused", ctype(dtype), act, *TILE)


INSTANTIATIONS = tuple(kernel_name(dt, a) for dt in REAL for a in ACT_CODES)
SOURCES = {MODULE: INSTANTIATIONS}
VARIANTS = ()


def smem_bytes(spec: ConvSpec) -> int:
    """The tile's C*m intermediate channels in the accumulator type."""
    acc = 8 if spec.dtype == np.float64 else 4
    TP, TQ, _ = TILE
    return spec.k * TP * TQ * acc


def _blocks(spec: ConvSpec) -> int:
    TP, TQ, _ = TILE
    g = geometry(spec)
    return spec.n * (-(-g.P // TP)) * (-(-g.Q // TQ))


def supports(spec: ConvSpec, k: int) -> tuple[bool, str]:
    """Whether the fused kernel runs the depthwise `spec` followed by a 1x1 to k channels."""
    if spec.dtype not in REAL:
        return False, f"dtype {spec.dtype} (the fused kernel is real-only)"
    if spec.nd not in (1, 2):
        return False, f"{spec.nd}-D (the fused kernel is 2-D; 1-D runs as H=1)"
    if spec.c_per_group != 1:
        return False, "the first step is not depthwise (C/groups != 1)"
    smem = smem_bytes(spec)
    if smem > SMEM_LIMIT:
        return False, (f"the tile's {spec.k} intermediate channels need {smem} B of shared memory "
                       f"(> {SMEM_LIMIT})")
    if _blocks(spec) > INT32_MAX or k > INT32_MAX:
        return False, "grid exceeds the launch limit"
    return True, "depthwise 2-D/1-D whose intermediate tile fits in shared memory"


def launch(backend, x, dw, pw, b, y, spec: ConvSpec, act: int):
    k = int(pw.shape[0])
    ok, why = supports(spec, k)
    if not ok:
        raise ValueError(f"the fused separable kernel refuses this layer: {why}")
    geo = geometry_args(spec)
    fn = backend.get_function(MODULE, INSTANTIATIONS, kernel_name(spec.dtype, act))
    bias, has_bias = bias_args(b, pw)
    fn((_blocks(spec),), (THREADS,), (x, dw, pw, bias, y, *geo, I32(k), has_bias),
       shared_mem=smem_bytes(spec))
