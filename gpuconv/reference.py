"""The NumPy convolution: the CPU path, and the reference every kernel is tested against.

One function, `conv`, computes any ConvSpec (1, 2 or 3 spatial dims, stride,
4-sided zero padding, dilation, groups) as a cross-correlation, exactly as
torch.nn.functional.conv2d defines it:

    out[n, k, p, q] = bias[k] + sum_{c, r, s} x[n, g*Cg + c, p*sh - pt + r*dh, q*sw - pl + s*dw]
                                              * w[k, c, r, s],   g = k // Kg

It is vectorised, never a Python loop over pixels:
  * general case: im2col as a strided window view (no copy) gathered once into
    the column matrix, then one GEMM per group through BLAS (np.matmul);
  * 1x1, stride 1, no padding: the input already is the column matrix;
  * one input channel per group (depthwise, any multiplier): a multiply-add per
    kernel tap over the whole output, since per-group GEMMs of inner size R*S
    would leave BLAS idle.

`accumulate` picks the arithmetic: float16 inputs are computed in float32
(torch and the GPU kernels accumulate fp16 in fp32); "float64" (or
"complex128") computes in double for reference use.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .spec import ConvSpec


def compute_dtype(dtype, accumulate=None) -> np.dtype:
    """The dtype arithmetic is done in: at least float32, float64 when asked."""
    dt = np.dtype(dtype)
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
    """Forward convolution of `spec` on NumPy arrays; returns the compute dtype
    (the caller casts to the output dtype)."""
    dt = compute_dtype(spec.dtype, accumulate)
    x = np.asarray(x, dtype=dt)
    w = np.asarray(w, dtype=dt)
    n, g, nd = spec.n, spec.groups, spec.nd
    cg, kg = spec.c_per_group, spec.k_per_group
    out_size = spec.out_size
    npos = int(np.prod(out_size))
    ntap = int(np.prod(spec.kernel))

    if n == 0 or npos == 0 or spec.k == 0:
        out = np.zeros(spec.output_shape, dtype=dt)
    elif cg == 1 and g > 1:
        out = _conv_one_channel_per_group(x, w, spec, dt)
    elif (ntap == 1 and all(s == 1 for s in spec.stride)
          and not any(lo or hi for lo, hi in spec.pad)):
        # 1x1 stride 1: x viewed as (N, G, Cg, L) is already the column matrix.
        xg = x.reshape(n, g, cg, npos)
        wg = w.reshape(g, kg, cg)
        out = np.matmul(wg[None], xg).reshape(spec.output_shape)
    else:
        win = windows(pad_input(x, spec.pad), spec)          # (N, C, *out, *kernel) view
        win = win.reshape((n, g, cg) + out_size + spec.kernel)
        # columns: (G, N*L, Cg*taps), gathered in one copy
        perm = ((1, 0) + tuple(range(3, 3 + nd)) + (2,) + tuple(range(3 + nd, 3 + 2 * nd)))
        cols = np.ascontiguousarray(win.transpose(perm)).reshape(g, n * npos, cg * ntap)
        wmat = w.reshape(g, kg, cg * ntap)
        res = np.matmul(cols, wmat.transpose(0, 2, 1))       # (G, N*L, Kg)
        out = res.reshape(g, n, npos, kg).transpose(1, 0, 3, 2).reshape(spec.output_shape)
        out = np.ascontiguousarray(out)
    if bias is not None:
        out += np.asarray(bias, dtype=dt).reshape((1, spec.k) + (1,) * nd)
    return out


def _conv_one_channel_per_group(x, w, spec: ConvSpec, dt) -> np.ndarray:
    """groups == C (depthwise, multiplier Kg): one multiply-add per kernel tap."""
    n, g, kg, nd = spec.n, spec.groups, spec.k_per_group, spec.nd
    win = windows(pad_input(x, spec.pad), spec)              # (N, G, *out, *kernel)
    wk = w.reshape((g, kg) + spec.kernel)
    out = np.zeros((n, g, kg) + spec.out_size, dtype=dt)
    expand = (slice(None),) * 2 + (None,) + (slice(None),) * nd   # (N, G, 1, *out)
    tmp = np.empty_like(out)
    for tap in np.ndindex(*spec.kernel):
        xs = win[(Ellipsis,) + tap][expand]
        ws = wk[(slice(None), slice(None)) + tap].reshape((1, g, kg) + (1,) * nd)
        np.multiply(xs, ws, out=tmp)
        out += tmp
    return out.reshape(spec.output_shape)
