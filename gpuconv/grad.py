"""Gradients of a forward convolution, with torch.nn.grad's semantics.

    conv{1,2,3}d_input(input_size, weight, grad_output, stride, padding, dilation, groups)
    conv{1,2,3}d_weight(input, weight_size, grad_output, stride, padding, dilation, groups)

For y = conv(x, w) (gpuconv.conv2d / torch.nn.functional.conv2d):

* dL/dx is the operator "dgrad" of the forward ConvSpec (the transposed
  convolution of grad_output with the same weight, cropped by the forward
  padding and sized to `input_size`: rows/columns a strided forward conv never
  read get zero gradient);
* dL/dw[k, c, t] = sum_{n, p} grad_output[n, k, p] * x_padded[n, g*Cg + c, p*stride + t*dilation]
  is its operator "wgrad".
Both run on gpuconv.engine (definitions: gpuconv.reference.dgrad / wgrad; the
CPU path: gpuconv.cpu_grad; the device: gpuconv.cuda's transpose and wgrad
kernels, with the derived forward problems of gpuconv.derived where they refuse).

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

from . import engine, precision as _precision
from ._array import convert, wrap
from .spec import ConvSpec, _fmt_shape, check_dtypes, check_groups, is_floating, make_spec


def _check_real(dtype, fname, name):
    if not is_floating(dtype):
        raise TypeError(f"{fname}: gradients are computed for float16, bfloat16, float32 and "
                        f"float64 arrays, got {name} of dtype {np.dtype(dtype)}")


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

def input_grad(nd: int, fname: str, input_size, weight, grad_output, stride=1, padding=0,
               dilation=1, groups=1, precision=None, algorithm="auto"):
    """Shared body of conv{1,2,3}d_input: parse, validate, run dgrad on the engine."""
    wi = convert("weight", weight)
    gi = convert("grad_output", grad_output)
    path = engine.resolve({"grad_output": gi, "weight": wi})
    precision = _precision.resolve(precision)
    engine.check_op_algorithm(algorithm, path)
    w, go = wi.array, gi.array
    _check_real(go.dtype, fname, "grad_output")
    _check_real(w.dtype, fname, "weight")
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
    out = engine.run("dgrad", spec, go if batched else go[None], w, path=path, precision=precision,
                     algorithm=algorithm)
    return wrap(out if batched else out[0], gi)


# ---------------------------------------------------------------------------
# weight gradient

def weight_grad(nd: int, fname: str, input, weight_size, grad_output, stride=1, padding=0,
                dilation=1, groups=1, deterministic=True, precision=None, algorithm="auto"):
    """Shared body of conv{1,2,3}d_weight: parse, validate, run wgrad on the engine."""
    if not isinstance(deterministic, (bool, np.bool_)):
        raise TypeError(f"deterministic must be a bool, got {deterministic!r}")
    xi = convert("input", input)
    gi = convert("grad_output", grad_output)
    path = engine.resolve({"input": xi, "grad_output": gi})
    precision = _precision.resolve(precision)
    engine.check_op_algorithm(algorithm, path)
    x, go = xi.array, gi.array
    _check_real(x.dtype, fname, "input")
    _check_real(go.dtype, fname, "grad_output")
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
    out = engine.run("wgrad", spec, x, go, path=path, deterministic=bool(deterministic),
                     precision=precision, algorithm=algorithm)
    return wrap(out, xi)


# ---------------------------------------------------------------------------
# Public functions (torch.nn.grad's names and argument order)

def _no_string_padding(fname, padding):
    if isinstance(padding, str):
        raise TypeError(f"{fname}: padding must be an int or a tuple of ints (as torch.nn.grad), "
                        f"got padding={padding!r}")


@engine.public("grad_output")
def conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                 precision=None, algorithm="auto"):
    """Gradient of conv1d with respect to its input (torch.nn.grad.conv1d_input)."""
    _no_string_padding("conv1d_input", padding)
    return input_grad(1, "conv1d_input", input_size, weight, grad_output, stride, padding,
                      dilation, groups, precision, algorithm)


@engine.public("grad_output")
def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                 precision=None, algorithm="auto"):
    """Gradient of conv2d with respect to its input (torch.nn.grad.conv2d_input).

    input_size: (N, C, H, W), or (H, W); weight: (K, C/groups, R, S); grad_output:
    (N, K, P, Q) (or unbatched (K, P, Q) with input_size (C, H, W) or (H, W)).
    Returns an array of input_size in grad_output's array type: the transposed
    convolution of grad_output, with the output padding that reproduces input_size."""
    _no_string_padding("conv2d_input", padding)
    return input_grad(2, "conv2d_input", input_size, weight, grad_output, stride, padding,
                      dilation, groups, precision, algorithm)


@engine.public("grad_output")
def conv3d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                 precision=None, algorithm="auto"):
    """Gradient of conv3d with respect to its input (torch.nn.grad.conv3d_input)."""
    _no_string_padding("conv3d_input", padding)
    return input_grad(3, "conv3d_input", input_size, weight, grad_output, stride, padding,
                      dilation, groups, precision, algorithm)


@engine.public("input")
def conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  deterministic=True, precision=None, algorithm="auto"):
    """Gradient of conv1d with respect to its weight (torch.nn.grad.conv1d_weight)."""
    _no_string_padding("conv1d_weight", padding)
    return weight_grad(1, "conv1d_weight", input, weight_size, grad_output, stride, padding,
                       dilation, groups, deterministic=deterministic, precision=precision,
                       algorithm=algorithm)


@engine.public("input")
def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  deterministic=True, precision=None, algorithm="auto"):
    """Gradient of conv2d with respect to its weight (torch.nn.grad.conv2d_weight).

    input: (N, C, H, W) (or unbatched (C, H, W)); weight_size: (K, C/groups, R, S);
    grad_output: (N, K, P, Q) (or (K, P, Q)).  Deterministic by default: a fixed-order
    sum, bit-identical between runs (and GPUs).  deterministic=False lets the GPU
    kernel accumulate with atomics, faster but with a run-to-run order; the CPU
    path is deterministic either way."""
    _no_string_padding("conv2d_weight", padding)
    return weight_grad(2, "conv2d_weight", input, weight_size, grad_output, stride, padding,
                       dilation, groups, deterministic=deterministic, precision=precision,
                       algorithm=algorithm)


@engine.public("input")
def conv3d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  deterministic=True, precision=None, algorithm="auto"):
    """Gradient of conv3d with respect to its weight (torch.nn.grad.conv3d_weight)."""
    _no_string_padding("conv3d_weight", padding)
    return weight_grad(3, "conv3d_weight", input, weight_size, grad_output, stride, padding,
                       dilation, groups, deterministic=deterministic, precision=precision,
                       algorithm=algorithm)
