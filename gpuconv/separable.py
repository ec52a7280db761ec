"""Depthwise-separable convolution: a depthwise convolution, then a 1x1 pointwise one.

    mid = conv(input, depthwise_weight, groups=C, stride, padding, dilation)   (C*m channels)
    out = activation(conv(mid, pointwise_weight) + bias)                        (K channels)

depthwise_weight is (C*m, 1, *kernel) for any depth multiplier m >= 1;
pointwise_weight is (K, C*m, 1, ...).  It equals torch's
F.conv2d(F.conv2d(x, dw, None, stride, padding, dilation, groups=C), pw, bias)
(MobileNet / Xception blocks, Keras' SeparableConv2D).  Every argument is
validated for both steps before either runs; gpuconv.engine.separable then runs
the two forward steps on the CPU path, and on the device gpuconv.cuda.separable
(the fused kernel, `mid` kept in shared memory, when the tile of C*m channels
fits; else the two passes on the dispatcher's kernels).
"""
from __future__ import annotations

from . import activations, engine, precision as _precision
from ._array import convert, wrap
from .cuda.separable import ALGORITHMS
from .spec import _fmt_shape, check_dtypes, check_padding_mode, check_padding_mode_limits, make_spec


def separable_forward(nd: int, fname: str, input, depthwise_weight, pointwise_weight, bias=None,
                      stride=1, padding=0, dilation=1, padding_mode="zeros", activation=None,
                      algorithm="auto", precision=None):
    """Shared body of separable_conv1d/2d/3d: parse, validate both steps, run on the engine."""
    xi = convert("input", input)
    di = convert("depthwise_weight", depthwise_weight)
    pi = convert("pointwise_weight", pointwise_weight)
    bi = None if bias is None else convert("bias", bias)
    path = engine.resolve({"input": xi, "depthwise_weight": di, "pointwise_weight": pi,
                           "bias": bi})
    check_padding_mode(padding_mode)
    activation = activations.check_activation(activation)
    _precision.resolve(precision)
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    x, dw, pw = xi.array, di.array, pi.array
    b = None if bi is None else bi.array
    dtype = check_dtypes(x.dtype, dw.dtype, None if b is None else b.dtype,
                         weight_name="depthwise_weight")
    if pw.dtype != dtype:
        raise TypeError(f"input dtype ({dtype}) and pointwise_weight dtype ({pw.dtype}) "
                        f"should be the same")
    activations.check_dtype(activation, dtype)
    if x.ndim not in (nd + 1, nd + 2):
        raise ValueError(f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input to "
                         f"{fname}, but got input of size: {_fmt_shape(x.shape)}")
    c = x.shape[-nd - 1]
    if c == 0:
        raise ValueError(f"{fname}: input of size {_fmt_shape(x.shape)} has no channels")
    if dw.ndim != nd + 2 or dw.shape[1] != 1 or dw.shape[0] == 0 or dw.shape[0] % c != 0:
        raise ValueError(
            f"{fname}: depthwise_weight must have size (C*m, 1, *kernel) with C={c} input "
            f"channels and a depth multiplier m >= 1, got depthwise_weight of size "
            f"{_fmt_shape(dw.shape)}")
    cm = dw.shape[0]
    if pw.ndim != nd + 2 or pw.shape[1] != cm or any(s != 1 for s in pw.shape[2:]):
        raise ValueError(
            f"{fname}: pointwise_weight must have size (K, {cm}{', 1' * nd}) to follow a "
            f"depthwise_weight of size {_fmt_shape(dw.shape)}, got pointwise_weight of size "
            f"{_fmt_shape(pw.shape)}")
    dspec, batched = make_spec(x.shape, dw.shape, None, stride, padding, dilation, c, dtype, nd,
                               fname, weight_name="depthwise_weight")
    check_padding_mode_limits(dspec, padding_mode)
    mid_shape = dspec.output_shape if batched else dspec.output_shape[1:]
    make_spec(mid_shape, pw.shape, None if b is None else b.shape, 1, 0, 1, 1, dtype, nd, fname)
    out = engine.separable(dspec, x if batched else x[None], dw, pw, path=path, bias=b,
                           activation=activation, algorithm=algorithm, padding_mode=padding_mode)
    return wrap(out if batched else out[0], xi)


@engine.public("input")
def separable_conv2d(input, depthwise_weight, pointwise_weight, bias=None, stride=1, padding=0,
                     dilation=1, *, padding_mode="zeros", activation=None, algorithm="auto",
                     precision=None):
    """Depthwise-separable 2-D convolution.

    input: (N, C, H, W) or (C, H, W); depthwise_weight: (C*m, 1, R, S) (depth
    multiplier m >= 1); pointwise_weight: (K, C*m, 1, 1); bias: (K,), added after
    the pointwise step, then `activation` (None, 'relu', 'relu6', 'silu', 'gelu').
    stride, padding ('valid', 'same', int, pair), dilation and padding_mode
    apply to the depthwise step, as in gpuconv.conv2d.  algorithm (GPU path):
    'auto', 'fused' (one kernel, the depthwise tile kept in shared memory) or
    'two_pass' (two forward convolutions); the CPU path ignores it."""
    return separable_forward(2, "separable_conv2d", input, depthwise_weight, pointwise_weight,
                             bias, stride, padding, dilation, padding_mode, activation, algorithm,
                             precision)


@engine.public("input")
def separable_conv1d(input, depthwise_weight, pointwise_weight, bias=None, stride=1, padding=0,
                     dilation=1, *, padding_mode="zeros", activation=None, algorithm="auto",
                     precision=None):
    """Depthwise-separable 1-D convolution: depthwise_weight (C*m, 1, R), pointwise_weight
    (K, C*m, 1).  Arguments as separable_conv2d."""
    return separable_forward(1, "separable_conv1d", input, depthwise_weight, pointwise_weight,
                             bias, stride, padding, dilation, padding_mode, activation, algorithm,
                             precision)


@engine.public("input")
def separable_conv3d(input, depthwise_weight, pointwise_weight, bias=None, stride=1, padding=0,
                     dilation=1, *, padding_mode="zeros", activation=None, algorithm="auto",
                     precision=None):
    """Depthwise-separable 3-D convolution: depthwise_weight (C*m, 1, T, R, S), pointwise_weight
    (K, C*m, 1, 1, 1).  Arguments as separable_conv2d."""
    return separable_forward(3, "separable_conv3d", input, depthwise_weight, pointwise_weight,
                             bias, stride, padding, dilation, padding_mode, activation, algorithm,
                             precision)
