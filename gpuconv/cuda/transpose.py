"""Transposed convolution (= the data gradient of a forward convolution) on a device
backend, by the gather kernel of kernels_cu/conv_transpose.cu
(gpuconv/cuda/families/conv_transpose.py).

    forward(x, w, b, spec, activation=None, backend=None, out=None)
    transpose_supports(spec) -> (ok, reason)

The operation is described by the FORWARD ConvSpec whose transpose it is
(gpuconv.spec.transpose_spec builds it from torch's arguments): `spec`'s output shape
(N, K, *out) is x's shape, its weight shape (K, C/groups, *kernel) is w's (torch's
transposed-conv weight (C_in, C_out/groups, *kernel) is that layout with K = C_in), and
its input shape (N, C, *in) is the result's shape; b is (C,).  spec.pad's low sides are
the transposed conv's `padding`; output_padding lives in spec.in_size (the high pad may
be negative: it only makes spec.out_size equal x's size, the kernel never reads it).
For the input gradient of a forward conv, its own spec is the spec.  1-D, 2-D and 3-D,
float16/32/64; `transpose_supports` says why a spec is refused (complex dtypes, index
space past 2^31) so callers can fall back.
"""
from __future__ import annotations

from .. import activations
from ..spec import ConvSpec
from .backend import default_backend
from .families import conv2d_depthwise
from .families.conv_transpose import launch, supports as transpose_supports
from .launch import check_array, output_array


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
    x, w = xp.ascontiguousarray(x), xp.ascontiguousarray(w)
    b = None if b is None else xp.ascontiguousarray(b)
    if act == 0 and conv2d_depthwise.dgrad_supports(spec)[0]:
        # depthwise (C/groups == 1): the forward depthwise kernel in its data-gradient mode
        # (plane tiles of dx, dy zero-upsampled while staged, 8 outputs per thread), memory
        # bound like the forward; the gather kernel re-reads every dy element per tap.
        conv2d_depthwise.launch_dgrad(backend, x, w, b, y, spec)
        return y
    launch(backend, x, w, b, y, spec, act)
    return y


__all__ = ["forward", "transpose_supports"]
