"""Public convolutions with torch.nn.functional's semantics.

Each call: normalise the arguments (gpuconv._array), validate and compute the
geometry (gpuconv.spec.make_spec), then hand the spec to the path the arrays
live on: NumPy -> gpuconv.cpu, CuPy -> gpuconv.cuda (whose dispatcher
picks the kernel).  No kernel is chosen here.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import activations, cpu
from ._array import common_kind, convert, on_device_of, wrap, xp_of
from .spec import PADDING_MODES, ConvSpec, check_dtypes, make_spec


def _check_padding_mode(padding_mode):
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")


def _check_algorithm(algorithm, kind):
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a str, got {algorithm!r} ({type(algorithm).__name__})")
    if kind == "numpy" and algorithm not in ("auto", "reference"):
        raise ValueError(
            f"algorithm={algorithm!r} names a GPU kernel, but the arrays are NumPy arrays "
            f"(CPU path); use algorithm='auto' or pass CuPy arrays")


def apply_padding_mode(xp, x, spec: ConvSpec, padding_mode: str) -> tuple[object, ConvSpec]:
    """nn.Conv{n}d's non-zero padding modes: pad the input explicitly (as F.pad does,
    with F.pad's limits), then convolve with no implicit padding."""
    if padding_mode == "zeros" or not any(lo or hi for lo, hi in spec.pad):
        return x, spec
    for d, ((lo, hi), size) in enumerate(zip(spec.pad, spec.in_size)):
        if padding_mode == "reflect" and (lo >= size or hi >= size):
            raise ValueError(
                f"padding_mode='reflect': padding ({lo}, {hi}) at spatial dimension {d} must be "
                f"less than the input size {size}")
        if padding_mode == "circular" and (lo > size or hi > size):
            raise ValueError(
                f"padding_mode='circular': padding ({lo}, {hi}) at spatial dimension {d} would wrap "
                f"around more than once (input size {size})")
    np_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[padding_mode]
    x = xp.pad(x, ((0, 0), (0, 0)) + tuple(spec.pad), mode=np_mode)
    spec = replace(spec, in_size=tuple(x.shape[2:]), pad=((0, 0),) * spec.nd)
    return x, spec


@on_device_of("input")
def conv_forward(nd: int, fname: str, input, weight, bias, stride, padding, dilation, groups,
                 padding_mode="zeros", activation=None, algorithm="auto", backend=None,
                 allow_empty_spatial=False):
    """Shared body of conv1d/conv2d/conv3d.

    `backend` (internal: tests and the simulator) runs the GPU path on the given
    gpuconv.cuda backend, e.g. gpuconv.sim.SimBackend() with NumPy arrays.
    `allow_empty_spatial` (internal) admits inputs cropped to a zero-size spatial dim."""
    xi = convert("input", input)
    wi = convert("weight", weight)
    bi = None if bias is None else convert("bias", bias)
    kind = common_kind({"input": xi, "weight": wi, "bias": bi})
    _check_padding_mode(padding_mode)
    activation = activations.check_activation(activation)
    if backend is not None:
        kind = "device"
    _check_algorithm(algorithm, kind)
    x, w = xi.array, wi.array
    b = None if bi is None else bi.array
    dtype = check_dtypes(x.dtype, w.dtype, None if b is None else b.dtype)
    activations.check_dtype(activation, dtype)
    spec, batched = make_spec(x.shape, w.shape, None if b is None else b.shape, stride, padding,
                              dilation, groups, dtype, nd, fname, allow_empty_spatial)
    xp = backend.xp if backend is not None else xp_of(kind)
    if not batched:
        x = x[None]
    x, spec = apply_padding_mode(xp, x, spec, padding_mode)

    if kind == "numpy":
        out = cpu.conv(x, w, b, spec)
        out = activations.apply(out, activation).astype(dtype, copy=False)
    else:
        from .cuda import conv as cuda_conv
        out = cuda_conv.forward(x, w, b, spec, activation=activation, algorithm=algorithm,
                                backend=backend)
    if not batched:
        out = out[0]
    return wrap(out, xi)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", activation=None, algorithm="auto"):
    """2-D convolution (cross-correlation) with torch.nn.functional.conv2d's semantics.

    input: (N, C, H, W) or unbatched (C, H, W); weight: (K, C/groups, R, S); bias: (K,).
    stride, dilation: int or pair.  padding: int, pair, 'valid', 'same' (stride 1;
    total dilation*(k-1), left side total//2) or 'full' (dilation*(k-1) each side).
    padding_mode: 'zeros', 'reflect', 'replicate', 'circular' (as nn.Conv2d).
    activation: None, 'relu', 'relu6', 'silu', 'gelu', applied after the bias
    (fused into the kernel on the GPU).  algorithm: 'auto' (the dispatcher) or
    a registered GPU variant name (see gpuconv.explain).

    NumPy in -> NumPy out (CPU); CuPy in -> CuPy out on the same device and
    current stream; torch tensors in -> torch tensor out (zero-copy on CUDA).
    The output dtype is the input dtype; float16 accumulates in float32.
    """
    return conv_forward(2, "conv2d", input, weight, bias, stride, padding, dilation, groups,
                        padding_mode, activation, algorithm)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", activation=None, algorithm="auto"):
    """1-D convolution with torch.nn.functional.conv1d's semantics: input (N, C, L) or
    (C, L), weight (K, C/groups, R).  Arguments as conv2d."""
    return conv_forward(1, "conv1d", input, weight, bias, stride, padding, dilation, groups,
                        padding_mode, activation, algorithm)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", activation=None, algorithm="auto"):
    """3-D convolution with torch.nn.functional.conv3d's semantics: input (N, C, D, H, W)
    or (C, D, H, W), weight (K, C/groups, T, R, S).  Arguments as conv2d."""
    return conv_forward(3, "conv3d", input, weight, bias, stride, padding, dilation, groups,
                        padding_mode, activation, algorithm)


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
    ks = list(kernel_sizes)
    n = len(ks)
    strides = [1] * n if strides is None else list(strides)
    dilations = [1] * n if dilations is None else list(dilations)
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
