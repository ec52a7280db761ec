"""kernels_cu/conv2d_direct.cu: one thread per output, every geometry (variant "direct")."""
from __future__ import annotations

import math

from .._types import ACT_CODES, REAL, ctype, expr
from ..launch import Variant, bias_args, blocks, geometry_args
from ...spec import ConvSpec

MODULE = "conv2d_direct.cu"
THREADS = 256   # 8 warps: enough for latency hiding at ~40 registers per thread, any arch


def kernel_name(dtype, act: int, pm: int = 0) -> str:
    """conv_direct<T, ACT>, or conv_direct_pm<T, ACT> (pm = 1) for a non-zero padding mode
    (a kernel of its own, so the zeros kernel's registers are untouched)."""
    return expr("conv_direct_pm" if pm else "conv_direct", ctype(dtype), act)


INSTANTIATIONS = tuple(kernel_name(dt, a, pm) for dt in REAL for a in ACT_CODES for pm in (0, 1))
SOURCES = {MODULE: INSTANTIATIONS}


def supports(spec: ConvSpec):
    if spec.dtype not in REAL:
        return False, f"dtype {spec.dtype} (direct is real-only; complex runs on 'im2col')"
    return True, "any 1-D/2-D/3-D real geometry"


def launch(backend, x, w, b, y, spec, act, config):
    geo = geometry_args(spec)
    fn = backend.get_function(MODULE, INSTANTIATIONS,
                              kernel_name(spec.dtype, act, int(spec.padding_mode != "zeros")))
    bias, has_bias = bias_args(b, w)
    fn((blocks(math.prod(spec.output_shape), THREADS),), (THREADS,), (x, w, bias, y, *geo, has_bias))


VARIANTS = (Variant(
    name="direct", module=MODULE, instantiations=INSTANTIATIONS,
    summary="one thread per output; every geometry and padding mode; the readable baseline",
    supports=supports,
    default_config=lambda spec, facts: {},
    workspace_bytes=lambda spec, config: 0,
    launch=launch,
    padding_modes=True),)
