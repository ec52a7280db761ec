"""The reference convolution: the definition every other implementation is tested against.

Three functions, one per operator of a ConvSpec (1, 2 or 3 spatial dims, stride,
per-side zero padding, dilation, groups):

    conv(x, w, bias, spec)   fprop: the forward convolution (a cross-correlation)
    dgrad(dy, w, spec)       its data gradient dL/dx (= the transposed convolution)
    wgrad(x, dy, spec)       its weight gradient dL/dw

The forward one is exactly torch.nn.functional.conv2d's definition:

    out[n, k, p, q] = bias[k] + sum_{c, r, s} x[n, g*Cg + c, p*sh - pt + r*dh, q*sw - pl + s*dw]
                                              * w[k, c, r, s],   g = k // Kg

written as that sum over a window view of the padded input (one einsum); the
gradients are its adjoints, written with the same window view (wgrad: one einsum)
and as a scatter-add per kernel tap into the padded input (dgrad).  All three are
kept short and obviously correct; speed is gpuconv.cpu's job (the CPU path),
which the tests hold to this definition and to torch.

`accumulate` picks the arithmetic: integers are computed in int64 (torch's
wrapping result is the same modulo 2^bits), float16 inputs in float32
(torch and the GPU kernels accumulate fp16 in fp32); "float64" (or
"complex128") computes in double for reference use.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .spec import ConvSpec


def compute_dtype(dtype, accumulate=None) -> np.dtype:
    """The dtype arithmetic is done in: at least float32, float64 when asked;
    integers in int64 (cast back, the result wraps exactly as torch's does)."""
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        return np.dtype(np.int64)
    if accumulate is not None:
        acc = np.dtype(accumulate)
        if dt.kind == "c" and acc.kind != "c":
            acc = np.result_type(acc, np.complex64)
        return np.result_type(dt, acc)
    return np.result_type(dt, np.float32)


def pad_input(x: np.ndarray, pad) -> np.ndarray:
    """Zero-pad the spatial dims (all but the first two) by ((lo, hi), ...)."""
    if not any(lo or hi for lo, hi in pad):
        return x
    return np.pad(x, ((0, 0), (0, 0)) + tuple(pad))


def windows(xp: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """View (N, C, *out, *kernel) of the padded input: element [n, c, o..., t...] is
    the input under kernel tap t for output o.  No copy."""
    nd = spec.nd
    axes = tuple(range(2, 2 + nd))
    extent = tuple(d * (k - 1) + 1 for k, d in zip(spec.kernel, spec.dilation))
    v = sliding_window_view(xp, extent, axis=axes)
    sl = ((slice(None),) * 2
          + tuple(slice(None, None, s) for s in spec.stride)
          + tuple(slice(None, None, d) for d in spec.dilation))
    return v[sl]


def conv(x: np.ndarray, w: np.ndarray, bias, spec: ConvSpec, accumulate=None) -> np.ndarray:
    """Forward convolution of `spec` on NumPy arrays, in compute_dtype(spec.dtype, accumulate)."""
    dt = compute_dtype(spec.dtype, accumulate)
    x = np.asarray(x, dtype=dt)
    w = np.asarray(w, dtype=dt)
    n, g, nd = spec.n, spec.groups, spec.nd
    cg, kg = spec.c_per_group, spec.k_per_group
    win = windows(pad_input(x, spec.pad), spec)                  # (N, C, *out, *kernel)
    win = win.reshape((n, g, cg) + spec.out_size + spec.kernel)  # C split into (groups, Cg)
    wg = w.reshape((g, kg, cg) + spec.kernel)
    o_axes = list(range(4, 4 + nd))
    t_axes = list(range(4 + nd, 4 + 2 * nd))
    # out[n, g, k, o] = sum_{c, t} win[n, g, c, o, t] * wg[g, k, c, t]
    out = np.einsum(win, [0, 1, 2] + o_axes + t_axes, wg, [1, 3, 2] + t_axes, [0, 1, 3] + o_axes,
                    optimize=True)
    out = out.reshape(spec.output_shape)
    if bias is not None:
        out = out + np.asarray(bias, dtype=dt).reshape((1, spec.k) + (1,) * nd)
    return np.ascontiguousarray(out, dtype=dt)


def _tap_window(tap, spec: ConvSpec) -> tuple:
    """Slices of the padded input that kernel tap `tap` reads for all outputs."""
    return tuple(slice(t * d, t * d + s * (o - 1) + 1, s)
                 for t, d, s, o in zip(tap, spec.dilation, spec.stride, spec.out_size))


def dgrad(dy: np.ndarray, w: np.ndarray, spec: ConvSpec, accumulate=None) -> np.ndarray:
    """dL/dx of `spec` for dL/dy = dy (spec.output_shape), in compute_dtype: every output's
    gradient scattered back through each kernel tap onto the input it read,

        dx[n, g*Cg + c, o*s - pad_lo + t*d] += sum_k dy[n, g*Kg + k, o] * w[g*Kg + k, c, t],

    then the padding cropped.  A negative high padding (a transposed convolution's
    output_padding) only means that input is never read: its gradient stays 0."""
    dt = compute_dtype(spec.dtype, accumulate)
    n, g, nd = spec.n, spec.groups, spec.nd
    cg, kg = spec.c_per_group, spec.k_per_group
    dyg = np.asarray(dy, dtype=dt).reshape((n, g, kg) + spec.out_size)
    wg = np.asarray(w, dtype=dt).reshape((g, kg, cg) + spec.kernel)
    padded = tuple(i + lo + max(hi, 0) for i, (lo, hi) in zip(spec.in_size, spec.pad))
    dxp = np.zeros((n, g, cg) + padded, dtype=dt)
    o_axes = list(range(3, 3 + nd))
    for tap in np.ndindex(*spec.kernel):
        # contrib[n, g, c, o] = sum_k dy[n, g, k, o] * w[g, k, c, tap]
        contrib = np.einsum(dyg, [0, 1, 2] + o_axes, wg[(slice(None),) * 3 + tap], [1, 2, 9],
                            [0, 1, 9] + o_axes)
        dxp[(slice(None),) * 3 + _tap_window(tap, spec)] += contrib
    crop = tuple(slice(lo, lo + i) for i, (lo, _) in zip(spec.in_size, spec.pad))
    return np.ascontiguousarray(dxp[(slice(None),) * 3 + crop].reshape(spec.input_shape))


def wgrad(x: np.ndarray, dy: np.ndarray, spec: ConvSpec, accumulate=None) -> np.ndarray:
    """dL/dw of `spec` for input x and dL/dy = dy, in compute_dtype:

        dw[g*Kg + k, c, t] = sum_{n, o} dy[n, g*Kg + k, o] * x[n, g*Cg + c, o*s - pad_lo + t*d]

    (the same window view as `conv`, summed over batch and output positions)."""
    dt = compute_dtype(spec.dtype, accumulate)
    n, g, nd = spec.n, spec.groups, spec.nd
    cg, kg = spec.c_per_group, spec.k_per_group
    win = windows(pad_input(np.asarray(x, dtype=dt), spec.pad), spec)
    win = win.reshape((n, g, cg) + spec.out_size + spec.kernel)
    dyg = np.asarray(dy, dtype=dt).reshape((n, g, kg) + spec.out_size)
    o_axes = list(range(4, 4 + nd))
    t_axes = list(range(4 + nd, 4 + 2 * nd))
    # dw[g, k, c, t] = sum_{n, o} win[n, g, c, o, t] * dy[n, g, k, o]
    out = np.einsum(win, [0, 1, 2] + o_axes + t_axes, dyg, [0, 1, 3] + o_axes, [1, 3, 2] + t_axes,
                    optimize=True)
    return np.ascontiguousarray(out.reshape(spec.weight_shape), dtype=dt)
