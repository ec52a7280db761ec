"""kernels_cu/conv_transpose.cu: the data gradient of a forward convolution (= transposed
convolution) as a gather over the taps whose stride residue matches.

    launch(backend, dy, w, b, dx, spec, act)

spec: the FORWARD ConvSpec; dy (N, K, *out) = spec.output_shape, w spec.weight_shape,
b (C,) or None, dx (N, C, *in) = spec.input_shape: C-contiguous arrays.
"""
from __future__ import annotations

import math

from .._types import ACT_CODES, REAL, ctype, expr
from ..launch import I32, INT32_MAX, bias_args, blocks, geometry, geometry_args
from ...spec import ConvSpec

MODULE = "conv_transpose.cu"
CPT = (1, 4)                    # output channels per thread (see kernels_cu/conv_transpose.cu)
THREADS = 256
# Output channels per thread: 4 whenever C/groups >= 4 (each dy load feeds 4 FMAs); a
# depthwise-transposed layer (C/groups = 1) would waste 3/4 of CPT=4.  An estimate, to
# be measured.
CPT_MIN_CG = 4
STRIDE_MAX = 46340              # the kernel's residue product ((v/g) mod st) * inv < st^2 < 2^31


def kernel_name(dtype, act: int, cpt: int) -> str:
    return expr("conv_transpose", ctype(dtype), act, cpt)


INSTANTIATIONS = tuple(kernel_name(dt, a, c) for c in CPT for dt in REAL for a in ACT_CODES)
SOURCES = {MODULE: INSTANTIATIONS}
VARIANTS = ()


def channels_per_thread(spec: ConvSpec) -> int:
    return 4 if spec.c_per_group >= CPT_MIN_CG else 1


def _items(spec: ConvSpec, cpt: int) -> int:
    return spec.n * spec.groups * (-(-spec.c_per_group // cpt)) * math.prod(spec.in_size)


def supports(spec: ConvSpec) -> tuple[bool, str]:
    if spec.dtype not in REAL:
        return False, f"dtype {spec.dtype} (the transposed-conv kernel is real-only)"
    if any(lo < 0 for lo, _ in spec.pad):
        return False, f"negative padding {spec.pad}"
    if max(spec.stride) > STRIDE_MAX:
        return False, f"stride {spec.stride} > {STRIDE_MAX}"
    items = _items(spec, channels_per_thread(spec))
    if items + blocks(items, THREADS) * THREADS > INT32_MAX or spec.c > INT32_MAX:
        return False, f"{items} work items: the kernel's 32-bit index space is exceeded"
    return True, "real 1-D/2-D/3-D transposed convolution"


def _inverse(stride: int, dil: int) -> tuple[int, int]:
    """(gcd(stride, dil), inverse of dil/g modulo stride/g) -- 0 when stride/g == 1."""
    g = math.gcd(stride, dil)
    st = stride // g
    return g, (pow(dil // g, -1, st) if st > 1 else 0)


def launch(backend, dy, w, b, dx, spec: ConvSpec, act: int):
    ok, why = supports(spec)
    if not ok:
        raise ValueError(f"transposed-conv kernel refuses the spec: {why}")
    geo = geometry_args(spec)
    g = geometry(spec)
    cpt = channels_per_thread(spec)
    inv = [_inverse(s, d) for s, d in ((g.sd, g.dd), (g.sh, g.dh), (g.sw, g.dw))]
    fn = backend.get_function(MODULE, INSTANTIATIONS, kernel_name(spec.dtype, act, cpt))
    bias, has_bias = bias_args(b, w)
    args = (dy, w, bias, dx, *geo, has_bias, *(I32(gc) for gc, _ in inv), *(I32(i) for _, i in inv))
    fn((blocks(_items(spec, cpt), THREADS),), (THREADS,), args)
