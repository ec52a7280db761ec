"""Transposed convolution (conv_transpose1d/2d/3d) with torch.nn.functional's semantics.

A transposed convolution is the data gradient (dgrad) of a forward convolution:
every input pixel scatters `x[n, c] * w[c, k]` over a (dilated) kernel footprint
of the output, input pixels `stride` apart.  With weight (C_in, C_out/groups, *kernel):

    full[n, g*Kg + k, j*s + t*d] += sum_c x[n, g*Cg + c, j] * w[g*Cg + c, k, t]
    out = full[..., padding : padding + out_size]          (per spatial dim)
    out_size = (in - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1

gpuconv.spec.transpose_spec validates torch's arguments and returns the forward
ConvSpec whose dgrad this is (padding its low padding, output_padding a lower
high padding); the engine runs "dgrad" of it on the arrays' path.  int64 arrays
run on the CPU path and wrap like torch's CPU result (torch has no other integer
transposed convolution).
"""
from __future__ import annotations

import numpy as np

from . import activations, engine, precision as _precision
from ._array import convert, wrap
from .spec import check_dtypes, transpose_spec


def parse_transpose(nd: int, fname: str, input, weight, bias, stride, padding, output_padding,
                    groups, dilation, activation=None, precision=None, algorithm="auto"):
    """torch's argument rules for conv_transpose{nd}d -> (path, forward spec, batched,
    converted input, x, w, b) with x batched; raises before any computation."""
    xi = convert("input", input)
    wi = convert("weight", weight)
    bi = None if bias is None else convert("bias", bias)
    path = engine.resolve({"input": xi, "weight": wi, "bias": bi})
    activation = activations.check_activation(activation)
    _precision.resolve(precision)
    engine.check_op_algorithm(algorithm, path)
    x, w = xi.array, wi.array
    b = None if bi is None else bi.array
    dtype = check_dtypes(x.dtype, w.dtype, None if b is None else b.dtype)
    if dtype.kind in "iu" and dtype != np.int64:
        # torch's CPU kernels (slow_conv_transpose2d/3d) exist for int64 only
        raise TypeError(f"{fname}: input dtype {dtype} is not supported: integer transposed "
                        f"convolution takes int64 (as torch's CPU kernel), or a floating or "
                        f"complex dtype")
    activations.check_dtype(activation, dtype)
    spec, batched = transpose_spec(x.shape, w.shape, None if b is None else b.shape, stride,
                                   padding, output_padding, groups, dilation, dtype, nd, fname)
    return path, spec, batched, xi, (x if batched else x[None]), w, b


def conv_transpose_forward(nd: int, fname: str, input, weight, bias, stride, padding,
                           output_padding, groups, dilation, activation=None, precision=None,
                           algorithm="auto"):
    """Shared body of conv_transpose1d/2d/3d: parse, validate, run dgrad on the engine."""
    path, spec, batched, xi, x, w, b = parse_transpose(nd, fname, input, weight, bias, stride,
                                                       padding, output_padding, groups, dilation,
                                                       activation, precision, algorithm)
    out = engine.run("dgrad", spec, x, w, path=path, bias=b, activation=activation,
                     precision=_precision.resolve(precision), algorithm=algorithm)
    return wrap(out if batched else out[0], xi)


@engine.public("input")
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, activation=None, precision=None, algorithm="auto"):
    """2-D transposed convolution with torch.nn.functional.conv_transpose2d's semantics.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_in, C_out/groups, R, S);
    bias: (C_out,).  stride, padding, output_padding, dilation: int or pair.
    Output size: (H-1)*stride - 2*padding + dilation*(R-1) + output_padding + 1, where
    output_padding must be smaller than either stride or dilation (per dimension).
    activation: None, 'relu', 'relu6', 'silu', 'gelu', applied after the bias.
    NumPy in -> NumPy out; CuPy in -> CuPy out; torch tensors in -> torch tensor out.
    """
    return conv_transpose_forward(2, "conv_transpose2d", input, weight, bias, stride, padding,
                                  output_padding, groups, dilation, activation, precision,
                                  algorithm)


@engine.public("input")
def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, activation=None, precision=None, algorithm="auto"):
    """1-D transposed convolution (torch.nn.functional.conv_transpose1d): input (N, C_in, L)
    or (C_in, L), weight (C_in, C_out/groups, R).  Arguments as conv_transpose2d."""
    return conv_transpose_forward(1, "conv_transpose1d", input, weight, bias, stride, padding,
                                  output_padding, groups, dilation, activation, precision,
                                  algorithm)


@engine.public("input")
def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, activation=None, precision=None, algorithm="auto"):
    """3-D transposed convolution (torch.nn.functional.conv_transpose3d): input
    (N, C_in, D, H, W) or (C_in, D, H, W), weight (C_in, C_out/groups, T, R, S).
    Arguments as conv_transpose2d."""
    return conv_transpose_forward(3, "conv_transpose3d", input, weight, bias, stride, padding,
                                  output_padding, groups, dilation, activation, precision,
                                  algorithm)
