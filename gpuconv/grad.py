"""Gradients of a forward convolution, with torch.nn.grad's semantics.

    conv{1,2,3}d_input(input_size, weight, grad_output, stride, padding, dilation, groups)
    conv{1,2,3}d_weight(input, weight_size, grad_output, stride, padding, dilation, groups)

For y = conv(x, w) (gpuconv.conv2d / torch.nn.functional.conv2d):

* dL/dx is the transposed convolution of grad_output with the same weight,
  cropped by the forward padding and sized to `input_size` (the rows/columns a
  strided forward conv never read get zero gradient): gpuconv.transpose's core
  with an explicit output size.
* dL/dw[k, c, t] = sum_{n, p} grad_output[n, k, p] * x_padded[n, g*Cg + c, p*stride + t*dilation],
  a correlation of the input with grad_output reduced over batch and positions.
  NumPy: im2col of the input (one chunk of images at a time) and one GEMM per
  group and chunk, accumulated in a fixed order (deterministic).  Device: the
  deterministic kernel of gpuconv.cuda.wgrad (1-D/2-D); 3-D as one
  forward convolution with the batch and channel roles swapped (input viewed
  as (C/g, g*N, *in), grad_output as the weight (K, N, *out), groups g, the
  forward stride and dilation exchanged), cropped to the kernel size.

Arguments follow torch 2.13's torch/nn/grad.py: input_size / weight_size are
full shapes (N, C, *spatial) / (K, C/groups, *kernel); padding is an int or
tuple.  Accepted beyond torch 2.13 (and refused by it): an input_size of the
spatial sizes only (older torch's _grad_input_padding accepted that form; batch
and channels then come from grad_output and weight), and unbatched arrays
(grad_output (K, *out) with input_size (C, *in) or spatial sizes; input
(C, *in)), as gpuconv.conv2d accepts unbatched inputs.  Stricter than torch: a
batch size in input_size that differs from grad_output's, or an input whose
batch differs from grad_output's, is refused (torch silently returns an
arbitrary result).  Complex dtypes are refused, as torch's CPU gradients do.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import cpu
from ._array import common_kind, convert, on_device_of, wrap, xp_of
from .reference import compute_dtype, pad_input
from .spec import FLOAT_DTYPES, ConvSpec, _fmt_shape, check_dtypes, check_groups, make_spec
from .transpose import TransposeGeometry, transpose_device, transpose_numpy


def _check_real(dtype, fname):
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{fname}: gradients are computed for float16, float32 and float64 "
                        f"arrays, got dtype {np.dtype(dtype)}")


def _as_shape(name: str, value) -> tuple[int, ...]:
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a sequence of ints (a shape), got {value!r} "
                        f"({type(value).__name__})")
    out = []
    for v in value:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be a sequence of ints (a shape), got {list(value)!r}")
        if v < 0:
            raise ValueError(f"{name} must not hold negative sizes, got {list(value)!r}")
        out.append(int(v))
    return tuple(out)


def _check_output_shape(spec: ConvSpec, batched: bool, go_shape, fname, what):
    expect = spec.output_shape if batched else spec.output_shape[1:]
    if tuple(go_shape) != tuple(expect):
        raise ValueError(
            f"{fname}: grad_output of size {_fmt_shape(go_shape)} does not match the convolution "
            f"of {what}, whose output has size {_fmt_shape(expect)}")


# ---------------------------------------------------------------------------
# input gradient

def input_geometry(spec: ConvSpec) -> TransposeGeometry:
    """The transposed convolution that computes dL/dx of `spec`."""
    return TransposeGeometry(n=spec.n, c_in=spec.k, c_out=spec.c, in_size=spec.out_size,
                             kernel=spec.kernel, stride=spec.stride,
                             crop=tuple(lo for lo, _ in spec.pad), out_size=spec.in_size,
                             dilation=spec.dilation, groups=spec.groups, dtype=spec.dtype)


@on_device_of("grad_output")
def input_grad(nd: int, fname: str, input_size, weight, grad_output, stride=1, padding=0,
               dilation=1, groups=1, backend=None):
    """Shared body of conv{1,2,3}d_input.  `padding` may also be 'valid'/'same' or
    ((lo, hi), ...) pairs (used by gpuconv.torch); `backend` runs the device path."""
    wi = convert("weight", weight)
    gi = convert("grad_output", grad_output)
    kind = common_kind({"grad_output": gi, "weight": wi})
    if backend is not None:
        kind = "device"
    w, go = wi.array, gi.array
    _check_real(go.dtype, fname)
    dtype = check_dtypes(go.dtype, w.dtype)
    size = _as_shape("input_size", input_size)
    groups = check_groups(groups)
    if go.ndim not in (nd + 1, nd + 2):
        raise ValueError(f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) grad_output to "
                         f"{fname}, but got grad_output of size {_fmt_shape(go.shape)}")
    if w.ndim != nd + 2:
        raise ValueError(f"Expected {nd + 2}D weight to {fname}, but got weight of size "
                         f"{_fmt_shape(w.shape)}")
    batched = go.ndim == nd + 2
    lead = ((go.shape[0],) if batched else ()) + (w.shape[1] * groups,)
    if len(size) == nd:
        in_shape = lead + size
    elif len(size) == len(lead) + nd:
        in_shape = size
        if batched and size[0] != go.shape[0]:
            raise ValueError(f"{fname}: input_size {list(size)} has batch size {size[0]}, but "
                             f"grad_output of size {_fmt_shape(go.shape)} has {go.shape[0]}")
    else:
        raise ValueError(
            f"{fname}: input_size must have {len(lead) + nd} elements ({'N, ' if batched else ''}"
            f"C, *spatial) or {nd} (spatial only) for a grad_output of size "
            f"{_fmt_shape(go.shape)}, got input_size={list(size)}")
    spec, _ = make_spec(in_shape, w.shape, None, stride, padding, dilation, groups, dtype, nd,
                        fname)
    _check_output_shape(spec, batched, go.shape, fname, f"an input of size {_fmt_shape(in_shape)}")
    geom = input_geometry(spec)
    if not batched:
        go = go[None]
    if kind == "numpy":
        out = transpose_numpy(go, w, None, geom).astype(dtype, copy=False)
    else:
        xp = backend.xp if backend is not None else xp_of(kind)
        out = transpose_device(xp, go, w, None, geom, None, backend)
    if not batched:
        out = out[0]
    return wrap(out, gi)


# ---------------------------------------------------------------------------
# weight gradient

# Column-matrix elements per chunk of images (C * taps * images * L), as in
# gpuconv.cpu: gathered and consumed by the GEMM while still in cache.
_COLS_TARGET_ELEMS = 1 << 20


def weight_grad_numpy(x: np.ndarray, go: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dL/dw of `spec` for batched NumPy arrays; returns the compute dtype.

    Per chunk of images: the column matrix of every channel is gathered with one
    strided copy per kernel tap, then one batched GEMM over the groups,
    grad_output_g (Kg, b*L) @ cols_g^T (b*L, Cg*taps), is added to the result.
    Gathering all groups at once keeps the Python loop at taps iterations (a
    per-group loop made depthwise layers 7x slower than torch: 64 groups x 9
    taps of tiny copies)."""
    dt = compute_dtype(spec.dtype)
    n, g = spec.n, spec.groups
    cg, kg = spec.c_per_group, spec.k_per_group
    npos = int(np.prod(spec.out_size))
    ntap = int(np.prod(spec.kernel))
    gw = np.zeros((g, kg, cg * ntap), dtype=dt)
    if n == 0 or npos == 0 or gw.size == 0:
        return gw.reshape(spec.weight_shape)
    if g > 1 and cpu.native_depthwise_ok(spec, dt, "depthwise_wgrad"):
        return cpu.depthwise_wgrad_native(x, go, spec, dt)
    xpad = pad_input(np.asarray(x, dtype=dt), spec.pad)
    go = np.asarray(go, dtype=dt).reshape(n, spec.k, npos)
    taps = [(tap, tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in
                        zip(tap, spec.dilation, spec.stride, spec.out_size)))
            for tap in np.ndindex(*spec.kernel)]
    nb = max(1, min(n, _COLS_TARGET_ELEMS // max(spec.c * ntap * npos, 1)))
    for n0 in range(0, n, nb):
        b = min(nb, n - n0)
        cols = np.empty((spec.c,) + spec.kernel + (b,) + spec.out_size, dtype=dt)
        xc = xpad[n0:n0 + b].swapaxes(0, 1)                              # (C, b, *padded)
        for tap, sl in taps:
            cols[(slice(None),) + tap] = xc[(slice(None), slice(None)) + sl]
        cols_g = cols.reshape(g, cg * ntap, b * npos)
        go_g = go[n0:n0 + b].reshape(b, g, kg, npos).transpose(1, 2, 0, 3).reshape(g, kg, b * npos)
        gw += np.matmul(go_g, cols_g.transpose(0, 2, 1))
    return gw.reshape(spec.weight_shape)


def weight_grad_via_forward(xp, x, go, spec: ConvSpec, backend=None):
    """dL/dw as one gpuconv.api.conv_forward: batch and channel roles swapped, stride and
    dilation exchanged, groups kept; exact.  Batched arrays in, (K, C/g, *kernel) out."""
    from .api import conv_forward

    n, g, nd = spec.n, spec.groups, spec.nd
    cg = spec.c_per_group
    if n == 0 or spec.k == 0 or cg == 0:
        return xp.zeros(spec.weight_shape, dtype=x.dtype)
    # x2[c, gi*N + n] = x[n, gi*Cg + c]: group gi of the swapped conv sees group gi's channels
    x2 = x.reshape((n, g, cg) + spec.in_size)
    x2 = xp.ascontiguousarray(x2.transpose((2, 1, 0) + tuple(range(3, 3 + nd))))
    x2 = x2.reshape((cg, g * n) + spec.in_size)
    go2 = xp.ascontiguousarray(go.swapaxes(0, 1))                          # (K, N, *out)
    res = conv_forward(nd, f"conv{nd}d_weight", x2, go2, None, spec.dilation, spec.pad,
                       spec.stride, g, backend=backend)                    # (Cg, K, >= kernel)
    res = res[(slice(None), slice(None)) + tuple(slice(0, k) for k in spec.kernel)]
    return xp.ascontiguousarray(res.swapaxes(0, 1))


def weight_grad_device(xp, x, go, spec: ConvSpec, backend=None, deterministic=True):
    """Device path: the weight-gradient kernel of gpuconv.cuda.wgrad (fixed-order sums,
    or atomics with deterministic=False); 3-D layers (which it refuses) take the
    forward-conv form above (deterministic either way)."""
    from .cuda import wgrad as cwg

    if cwg.wgrad_supports(spec)[0]:
        return cwg.forward(x, go, spec, deterministic=deterministic, backend=backend)
    return weight_grad_via_forward(xp, x, go, spec, backend)


@on_device_of("input")
def weight_grad(nd: int, fname: str, input, weight_size, grad_output, stride=1, padding=0,
                dilation=1, groups=1, backend=None, deterministic=True):
    """Shared body of conv{1,2,3}d_weight (padding as in input_grad)."""
    if not isinstance(deterministic, (bool, np.bool_)):
        raise TypeError(f"deterministic must be a bool, got {deterministic!r}")
    xi = convert("input", input)
    gi = convert("grad_output", grad_output)
    kind = common_kind({"input": xi, "grad_output": gi})
    if backend is not None:
        kind = "device"
    x, go = xi.array, gi.array
    _check_real(x.dtype, fname)
    if np.dtype(go.dtype) != np.dtype(x.dtype):
        raise TypeError(f"input dtype ({np.dtype(x.dtype)}) and grad_output dtype "
                        f"({np.dtype(go.dtype)}) should be the same")
    dtype = np.dtype(x.dtype)
    wsize = _as_shape("weight_size", weight_size)
    if len(wsize) != nd + 2:
        raise ValueError(f"{fname}: weight_size must have {nd + 2} elements (out_channels, "
                         f"in_channels/groups, *kernel), got weight_size={list(wsize)}")
    if go.ndim != x.ndim:
        raise ValueError(f"{fname}: input of size {_fmt_shape(x.shape)} and grad_output of size "
                         f"{_fmt_shape(go.shape)} must both be batched or both unbatched")
    if x.ndim == nd + 2 and x.shape[0] != go.shape[0]:
        raise ValueError(f"{fname}: input has batch size {x.shape[0]} but grad_output of size "
                         f"{_fmt_shape(go.shape)} has {go.shape[0]}")
    spec, batched = make_spec(x.shape, wsize, None, stride, padding, dilation, groups, dtype, nd,
                              fname)
    _check_output_shape(spec, batched, go.shape, fname,
                        f"input of size {_fmt_shape(x.shape)} with a weight of size "
                        f"{_fmt_shape(wsize)}")
    if not batched:
        x, go = x[None], go[None]
    if kind == "numpy":
        out = weight_grad_numpy(x, go, spec).astype(dtype, copy=False)
    else:
        xp = backend.xp if backend is not None else xp_of(kind)
        out = weight_grad_device(xp, x, go, spec, backend, bool(deterministic))
    return wrap(out, xi)


# ---------------------------------------------------------------------------
# Public functions (torch.nn.grad's names and argument order)

def _no_string_padding(fname, padding):
    if isinstance(padding, str):
        raise TypeError(f"{fname}: padding must be an int or a tuple of ints (as torch.nn.grad), "
                        f"got padding={padding!r}")


def conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of conv1d with respect to its input (torch.nn.grad.conv1d_input)."""
    _no_string_padding("conv1d_input", padding)
    return input_grad(1, "conv1d_input", input_size, weight, grad_output, stride, padding,
                      dilation, groups)


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of conv2d with respect to its input (torch.nn.grad.conv2d_input).

    input_size: (N, C, H, W), or (H, W); weight: (K, C/groups, R, S); grad_output:
    (N, K, P, Q) (or unbatched (K, P, Q) with input_size (C, H, W) or (H, W)).
    Returns an array of input_size in grad_output's array type: the transposed
    convolution of grad_output, with the output padding that reproduces input_size."""
    _no_string_padding("conv2d_input", padding)
    return input_grad(2, "conv2d_input", input_size, weight, grad_output, stride, padding,
                      dilation, groups)


def conv3d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of conv3d with respect to its input (torch.nn.grad.conv3d_input)."""
    _no_string_padding("conv3d_input", padding)
    return input_grad(3, "conv3d_input", input_size, weight, grad_output, stride, padding,
                      dilation, groups)


def conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  deterministic=True):
    """Gradient of conv1d with respect to its weight (torch.nn.grad.conv1d_weight)."""
    _no_string_padding("conv1d_weight", padding)
    return weight_grad(1, "conv1d_weight", input, weight_size, grad_output, stride, padding,
                       dilation, groups, deterministic=deterministic)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  deterministic=True):
    """Gradient of conv2d with respect to its weight (torch.nn.grad.conv2d_weight).

    input: (N, C, H, W) (or unbatched (C, H, W)); weight_size: (K, C/groups, R, S);
    grad_output: (N, K, P, Q) (or (K, P, Q)).  Deterministic by default: a fixed-order
    sum, bit-identical between runs (and GPUs).  deterministic=False lets the GPU
    kernel accumulate with atomics, faster but with a run-to-run order; the CPU
    path is deterministic either way."""
    _no_string_padding("conv2d_weight", padding)
    return weight_grad(2, "conv2d_weight", input, weight_size, grad_output, stride, padding,
                       dilation, groups, deterministic=deterministic)


def conv3d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  deterministic=True):
    """Gradient of conv3d with respect to its weight (torch.nn.grad.conv3d_weight)."""
    _no_string_padding("conv3d_weight", padding)
    return weight_grad(3, "conv3d_weight", input, weight_size, grad_output, stride, padding,
                       dilation, groups, deterministic=deterministic)
