"""The reference convolution: the definition every other implementation is tested against.

One function, `conv`, computes any ConvSpec (1, 2 or 3 spatial dims, stride,
4-sided zero padding, dilation, groups) as a cross-correlation, exactly as
torch.nn.functional.conv2d defines it:

    out[n, k, p, q] = bias[k] + sum_{c, r, s} x[n, g*Cg + c, p*sh - pt + r*dh, q*sw - pl + s*dw]
                                              * w[k, c, r, s],   g = k // Kg

written as that sum over a window view of the padded input (one einsum) and
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
