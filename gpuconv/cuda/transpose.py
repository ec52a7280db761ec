"""Transposed convolution (= the data gradient of a forward convolution) on a device
backend, by the gather kernel of kernels_cu/conv_transpose.cu.

    forward(x, w, b, spec, activation=None, backend=None, out=None)

The operation is described by the FORWARD ConvSpec whose transpose it is: `spec`'s
output shape (N, K, *out) is x's shape, its weight shape (K, C/groups, *kernel) is w's
(torch's transposed-conv weight (C_in, C_out/groups, *kernel) is that layout with
K = C_in), and its input shape (N, C, *in) is the result's shape; b is (C,).  spec.pad's
low sides are the transposed conv's `padding`; output_padding lives in spec.in_size.
Two helpers build it:

    spec_for_transpose(x_shape, w_shape, stride, padding, output_padding, dilation, groups, dtype)
    spec_from_geometry(geom)        # a gpuconv.transpose.TransposeGeometry

The high pad they set may be negative (it only makes spec.out_size equal x's size; the
kernel never reads it).  For the input gradient of a forward conv, its own spec is the
spec.  1-D, 2-D and 3-D, float16/32/64; `transpose_supports(spec)` says why a spec is
refused (complex dtypes, index space past 2^31) so callers can fall back.
"""
from __future__ import annotations

import math

import numpy as np

from .. import activations
from ..spec import ConvSpec
from ._types import REAL
from .backend import default_backend
from .conv import check_array, output_array
from .launchers import I32, INT32_MAX, _bias_args, _blocks, geom3
from .ops_modules import TRANSPOSE_INSTANTIATIONS, TRANSPOSE_MODULE, transpose_name

THREADS = 256
# MEASURE. Output channels per thread: 4 whenever C/groups >= 4 (each dy load feeds 4
# FMAs); a depthwise-transposed layer (C/groups = 1) would waste 3/4 of CPT=4.
CPT_MIN_CG = 4
STRIDE_MAX = 46340              # the kernel's residue product ((v/g) mod st) * inv < st^2 < 2^31


def spec_for_transpose(x_shape, w_shape, stride, padding, output_padding, dilation, groups,
                       dtype) -> ConvSpec:
    """The forward spec of a transposed conv with torch's arguments (already expanded to
    per-dimension tuples): x (N, C_in, *in), w (C_in, C_out/groups, *kernel)."""
    n, c_in = int(x_shape[0]), int(x_shape[1])
    kernel = tuple(int(k) for k in w_shape[2:])
    ins = tuple(int(i) for i in x_shape[2:])
    out = tuple((i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, s, p, d, k, op in
                zip(ins, stride, padding, dilation, kernel, output_padding))
    pad = tuple((p, p - op) for p, op in zip(padding, output_padding))
    return ConvSpec(n=n, c=int(w_shape[1]) * groups, k=c_in, in_size=out, kernel=kernel,
                    stride=tuple(stride), pad=pad, dilation=tuple(dilation), groups=groups,
                    dtype=np.dtype(dtype))


def spec_from_geometry(geom) -> ConvSpec:
    """The forward spec of a gpuconv.transpose.TransposeGeometry (crop = padding, explicit
    output size): geom.forward_spec()."""
    return geom.forward_spec()


def _cpt(spec: ConvSpec) -> int:
    return 4 if spec.c_per_group >= CPT_MIN_CG else 1


def transpose_supports(spec: ConvSpec) -> tuple[bool, str]:
    if spec.dtype not in REAL:
        return False, f"dtype {spec.dtype} (the transposed-conv kernel is real-only)"
    if any(lo < 0 for lo, _ in spec.pad):
        return False, f"negative padding {spec.pad}"
    if max(spec.stride) > STRIDE_MAX:
        return False, f"stride {spec.stride} > {STRIDE_MAX}"
    cpt = _cpt(spec)
    items = spec.n * spec.groups * (-(-spec.c_per_group // cpt)) * math.prod(spec.in_size)
    if items + _blocks(items, THREADS) * THREADS > INT32_MAX or spec.c > INT32_MAX:
        return False, f"{items} work items: the kernel's 32-bit index space is exceeded"
    return True, "real 1-D/2-D/3-D transposed convolution"


def _inverse(stride: int, dil: int) -> tuple[int, int]:
    """(gcd(stride, dil), inverse of dil/g modulo stride/g) -- 0 when stride/g == 1."""
    g = math.gcd(stride, dil)
    st = stride // g
    return g, (pow(dil // g, -1, st) if st > 1 else 0)


def launch(backend, x, w, b, y, spec: ConvSpec, act: int):
    """x (N, K, *out), w (K, C/g, *kernel), b (C,) or None, y (N, C, *in): C-contiguous."""
    ok, why = transpose_supports(spec)
    if not ok:
        raise ValueError(f"transposed-conv kernel refuses the spec: {why}")
    g3 = geom3(spec)
    cpt = _cpt(spec)
    inv = [_inverse(s, d) for s, d in zip(g3["stride"], g3["dil"])]
    fn = backend.get_function(TRANSPOSE_MODULE, TRANSPOSE_INSTANTIATIONS,
                              transpose_name(spec.dtype, act, cpt))
    bias, has_bias = _bias_args(b, w)
    items = spec.n * spec.groups * (-(-spec.c_per_group // cpt)) * math.prod(spec.in_size)
    args = (x, w, bias, y, I32(spec.n), I32(spec.c), *map(I32, g3["insz"]), I32(spec.k),
            *map(I32, g3["ker"]), *map(I32, g3["out"]), *map(I32, g3["stride"]), *map(I32, g3["pad"]),
            *map(I32, g3["dil"]), I32(spec.groups), has_bias,
            *(I32(g) for g, _ in inv), *(I32(i) for _, i in inv))
    fn((_blocks(items, THREADS),), (THREADS,), args)


def forward(x, w, b, spec: ConvSpec, activation=None, backend=None, out=None):
    """The transposed convolution of x (spec.output_shape) with w (spec.weight_shape),
    plus b (spec.c,) and `activation`; returns `out` or a new array of spec.input_shape."""
    backend = default_backend() if backend is None else backend
    xp = backend.xp
    activation = activations.check_activation(activation)
    act = activations.ACTIVATION_CODES[activation]
    check_array("input", x, spec.output_shape, spec.dtype)
    check_array("weight", w, spec.weight_shape, spec.dtype)
    if b is not None:
        check_array("bias", b, (spec.c,), spec.dtype)
    y = output_array(xp, out, spec.input_shape, spec.dtype)
    if y.size == 0:
        return y
    launch(backend, xp.ascontiguousarray(x), xp.ascontiguousarray(w),
           None if b is None else xp.ascontiguousarray(b), y, spec, act)
    return y
