"""Public convolutions with torch.nn.functional's semantics.

Each call: normalise the arguments (gpuconv._array), validate and build the
forward ConvSpec (gpuconv.spec.make_spec), then hand it to the engine
(gpuconv.engine.run("fprop", ...)) on the path resolved once from the arrays.
No kernel is chosen here.
"""
from __future__ import annotations

import numpy as np

from . import activations, engine, precision as _precision
from ._array import convert, wrap
from .spec import check_dtypes, check_padding_mode, check_padding_mode_limits, make_spec

ALGORITHMS_CPU = ("auto", "reference", "fft")


def check_algorithm(algorithm, path) -> str:
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a str, got {algorithm!r} ({type(algorithm).__name__})")
    if not path.is_device and algorithm not in ALGORITHMS_CPU:
        raise ValueError(
            f"algorithm={algorithm!r} names a GPU kernel, but the arrays are NumPy arrays "
            f"(CPU path); use algorithm='auto' or 'fft', or pass CuPy arrays")
    return algorithm


def parse_conv(nd: int, fname: str, input, weight, bias, stride, padding, dilation, groups,
               padding_mode="zeros", activation=None, algorithm="auto", precision=None):
    """torch's argument rules for conv{nd}d -> (path, spec, batched, converted input,
    x, w, b) with x batched; raises before any computation."""
    xi = convert("input", input)
    wi = convert("weight", weight)
    bi = None if bias is None else convert("bias", bias)
    path = engine.resolve({"input": xi, "weight": wi, "bias": bi})
    check_padding_mode(padding_mode)
    activation = activations.check_activation(activation)
    check_algorithm(algorithm, path)
    _precision.resolve(precision)
    x, w = xi.array, wi.array
    b = None if bi is None else bi.array
    dtype = check_dtypes(x.dtype, w.dtype, None if b is None else b.dtype)
    activations.check_dtype(activation, dtype)
    spec, batched = make_spec(x.shape, w.shape, None if b is None else b.shape, stride, padding,
                              dilation, groups, dtype, nd, fname)
    check_padding_mode_limits(spec, padding_mode)
    return path, spec, batched, xi, (x if batched else x[None]), w, b


def conv_forward(nd: int, fname: str, input, weight, bias, stride, padding, dilation, groups,
                 padding_mode="zeros", activation=None, algorithm="auto", precision=None):
    """Shared body of conv1d/conv2d/conv3d: parse, validate, run fprop on the engine."""
    path, spec, batched, xi, x, w, b = parse_conv(nd, fname, input, weight, bias, stride, padding,
                                                  dilation, groups, padding_mode, activation,
                                                  algorithm, precision)
    out = engine.run("fprop", spec, x, w, path=path, bias=b, activation=activation,
                     algorithm="auto" if algorithm == "reference" else algorithm,
                     padding_mode=padding_mode, precision=_precision.resolve(precision))
    return wrap(out if batched else out[0], xi)


@engine.public("input")
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", activation=None, algorithm="auto", precision=None):
    """2-D convolution (cross-correlation) with torch.nn.functional.conv2d's semantics.

    input: (N, C, H, W) or unbatched (C, H, W); weight: (K, C/groups, R, S); bias: (K,).
    stride, dilation: int or pair.  padding: int, pair, 'valid', 'same' (stride 1;
    total dilation*(k-1), left side total//2) or 'full' (dilation*(k-1) each side).
    padding_mode: 'zeros', 'reflect', 'replicate', 'circular' (as nn.Conv2d).
    activation: None, 'relu', 'relu6', 'silu', 'gelu', applied after the bias
    (fused into the kernel on the GPU).  algorithm: 'auto' (the dispatcher) or
    a registered GPU variant name (see gpuconv.explain), or 'fft'.  precision: the
    float32 policy for this call, "highest", "high" or "medium" (None: the value of
    gpuconv.set_float32_precision; see gpuconv.precision).

    NumPy in -> NumPy out (CPU); CuPy in -> CuPy out on the same device and
    current stream; torch tensors in -> torch tensor out (zero-copy on CUDA).
    The output dtype is the input dtype; float16 accumulates in float32.
    """
    return conv_forward(2, "conv2d", input, weight, bias, stride, padding, dilation, groups,
                        padding_mode, activation, algorithm, precision)


@engine.public("input")
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", activation=None, algorithm="auto", precision=None):
    """1-D convolution with torch.nn.functional.conv1d's semantics: input (N, C, L) or
    (C, L), weight (K, C/groups, R).  Arguments as conv2d."""
    return conv_forward(1, "conv1d", input, weight, bias, stride, padding, dilation, groups,
                        padding_mode, activation, algorithm, precision)


@engine.public("input")
def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", activation=None, algorithm="auto", precision=None):
    """3-D convolution with torch.nn.functional.conv3d's semantics: input (N, C, D, H, W)
    or (C, D, H, W), weight (K, C/groups, T, R, S).  Arguments as conv2d."""
    return conv_forward(3, "conv3d", input, weight, bias, stride, padding, dilation, groups,
                        padding_mode, activation, algorithm, precision)


def output_size(size, kernel, stride=1, padding=0, dilation=1):
    """Output length of a convolution along each dimension (ints or equal-length tuples):
    floor((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1.
    `padding` may also be 'valid', 'same' or 'full', or (lo, hi) pairs."""
    scalar = not isinstance(size, (tuple, list))
    sizes = (size,) if scalar else tuple(size)
    nd = len(sizes)
    from .spec import expand_param, resolve_padding
    sizes = expand_param("size", sizes, nd)
    kernel = expand_param("kernel", kernel, nd)
    stride = expand_param("stride", stride, nd)
    dilation = expand_param("dilation", dilation, nd)
    if any(v <= 0 for v in kernel):
        raise ValueError(f"kernel must be positive, got kernel={kernel}")
    if any(v <= 0 for v in stride):
        raise ValueError(f"non-positive stride is not supported, got stride={stride}")
    if any(v <= 0 for v in dilation):
        raise ValueError(f"dilation should be greater than zero, got dilation={dilation}")
    if any(v < 0 for v in sizes):
        raise ValueError(f"size must be non-negative, got size={sizes}")
    if (isinstance(padding, (tuple, list)) and padding
            and all(isinstance(p, (tuple, list)) for p in padding)):
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    else:
        pads = resolve_padding(padding, kernel, stride, dilation, nd)
    out = []
    for i, k, s, (lo, hi), d in zip(sizes, kernel, stride, pads, dilation):
        o = (i + lo + hi - d * (k - 1) - 1) // s + 1
        if o <= 0:
            raise ValueError(
                f"kernel {k} (dilation {d}) is larger than the padded input {i + lo + hi}: no output")
        out.append(o)
    return out[0] if scalar else tuple(out)


def receptive_field(kernel_sizes, strides=None, dilations=None) -> int:
    """Receptive field of a stack of convolutions along one dimension:

        rf = 1 + sum_l (dilation_l * (k_l - 1)) * prod_{i<l} stride_i

    kernel_sizes: the layers' kernel sizes, first layer first; strides and
    dilations default to 1 for every layer."""
    def as_list(name, v):
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise TypeError(f"{name} must be a sequence of ints (one per layer), got {v!r} "
                            f"({type(v).__name__})")
        return list(v)

    ks = as_list("kernel_sizes", kernel_sizes)
    n = len(ks)
    strides = [1] * n if strides is None else as_list("strides", strides)
    dilations = [1] * n if dilations is None else as_list("dilations", dilations)
    if len(strides) != n or len(dilations) != n:
        raise ValueError(
            f"kernel_sizes, strides and dilations must have the same length, got "
            f"{n}, {len(strides)}, {len(dilations)}")
    for name, vals in (("kernel_sizes", ks), ("strides", strides), ("dilations", dilations)):
        for v in vals:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must hold ints, got {v!r}")
            if v <= 0:
                raise ValueError(f"{name} must be positive, got {vals}")
    rf, jump = 1, 1
    for k, s, d in zip(ks, strides, dilations):
        rf += d * (k - 1) * jump
        jump *= s
    return rf
