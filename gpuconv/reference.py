"""The reference convolution: the definition every other implementation is tested against.

Three functions, one per operator of a ConvSpec (1, 2 or 3 spatial dims, stride,
per-side padding, dilation, groups; conv and wgrad read the input extended by
spec.padding_mode, dgrad is the adjoint of zero padding):

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


# np.pad's name of each non-zero padding mode (spec.PADDING_MODES).
NP_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad_input(x: np.ndarray, pad, padding_mode: str = "zeros") -> np.ndarray:
    """Pad the spatial dims (all but the first two) by ((lo, hi), ...) in
    `padding_mode` (np.pad: zeros, reflect, edge, wrap)."""
    if not any(lo or hi for lo, hi in pad):
        return x
    if padding_mode == "zeros":
        return np.pad(x, ((0, 0), (0, 0)) + tuple(pad))
    return np.pad(x, ((0, 0), (0, 0)) + tuple(pad), mode=NP_PAD_MODES[padding_mode])


def source_index(t, n: int, mode: str, xp=np):
    """The index into an axis of length n that extended position t (an integer
    array, any values: -1 is the first position left of the input) reads in
    padding mode `mode`: reflect (the edge not repeated, period 2n - 2),
    replicate (the edge repeated), circular (period n).  Every period is
    resolved, so positions any distance outside map inside, as np.pad's
    reflect/edge/wrap do.  Also the CUDA kernels' pad_index (kernels_cu/common.cuh)
    for the positions that function resolves."""
    if n <= 0:
        raise ValueError(f"padding_mode={mode!r} cannot extend an axis of length {n}")
    if mode == "circular":
        return t % n
    if mode == "replicate":
        return xp.clip(t, 0, n - 1)
    if mode == "reflect":
        if n == 1:
            return t * 0
        u = t % (2 * n - 2)
        return xp.where(u < n, u, 2 * n - 2 - u)
    raise ValueError(f"source_index: padding mode must be 'reflect', 'replicate' or "
                     f"'circular', got {mode!r}")


def pad_indices(n: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """Source index of every position of an axis of length n padded by (lo, hi) in
    `mode`: np.pad(x, (lo, hi), mode) == x[pad_indices(n, lo, hi, mode)] for
    reflect/replicate/circular (any lo, hi >= 0; circular and replicate any
    number of periods)."""
    return source_index(np.arange(-lo, n + hi), n, mode)


def _inside_range(start: int, step: int, count: int, n: int) -> tuple[int, int]:
    """(first, stop): the i in [0, count) with 0 <= start + step*i < n (step >= 1)."""
    first = max(0, -(start // step))                      # ceil(-start / step)
    stop = min(count, (n - 1 - start) // step + 1) if n > start else 0
    first = min(first, count)
    return first, max(first, stop)


def fill_extended(dst, src, starts, steps, mode: str, xp=np, border_zeroed: bool = False):
    """dst[..., i_1, .., i_nd] = ext(src)[..., starts_d + steps_d * i_d] over the last nd
    axes (nd = len(starts), steps >= 1), ext(src) the input extended by padding mode
    `mode` (zeros: 0 outside src; else source_index).  The leading axes of dst and
    src must match (views: a transposed or sliced dst fills in place).

    The positions inside src are one strided copy; the border (positions outside
    src along some axis) is gathered per axis d over the positions inside along the
    axes before d and all positions along the axes after it, so each border element
    is written once and nothing but the border is gathered: a padded buffer costs
    the copy of its interior plus its border, whatever the mode.  border_zeroed:
    dst's border already holds zeros (zeros mode then writes the interior only).
    Works for NumPy and CuPy arrays (xp: the namespace)."""
    nd = len(starts)
    counts = tuple(dst.shape[dst.ndim - nd:])
    sizes = tuple(src.shape[src.ndim - nd:])
    if any(c == 0 for c in counts):
        return dst
    lead = (slice(None),) * (dst.ndim - nd)
    slead = (slice(None),) * (src.ndim - nd)
    inner = [_inside_range(st, sp, q, n) for st, sp, q, n in zip(starts, steps, counts, sizes)]
    if all(f < s for f, s in inner):
        dst[lead + tuple(slice(f, s) for f, s in inner)] = src[slead + tuple(
            slice(st + sp * f, st + sp * (s - 1) + 1, sp)
            for (f, s), st, sp in zip(inner, starts, steps))]
    if mode == "zeros" and border_zeroed:
        return dst
    for d in range(nd):
        f, s = inner[d]
        border = np.concatenate([np.arange(0, f), np.arange(s, counts[d])])
        if border.size == 0:
            continue
        if any(fe >= se for fe, se in inner[:d]):
            break                  # every position is outside along an earlier axis: done there
        dsl = tuple(slice(fe, se) for fe, se in inner[:d])
        if mode == "zeros":
            dst[lead + dsl + (xp.asarray(border),)] = 0
            continue
        # positions: inside along axes < d (as slices), border along d, all along axes > d
        idx = []
        for e in range(d, nd):
            pos = border if e == d else np.arange(counts[e])
            src_i = source_index(starts[e] + steps[e] * pos, sizes[e], mode)
            idx.append(xp.asarray(src_i.reshape((-1,) + (1,) * (nd - 1 - e))))
        ssl = tuple(slice(starts[e] + steps[e] * fe, starts[e] + steps[e] * (se - 1) + 1, steps[e])
                    for e, (fe, se) in enumerate(inner[:d]))
        dst_idx = [xp.asarray(border.reshape((-1,) + (1,) * (nd - 1 - d)))]
        dst_idx += [xp.asarray(np.arange(counts[e]).reshape((-1,) + (1,) * (nd - 1 - e)))
                    for e in range(d + 1, nd)]
        dst[lead + dsl + tuple(dst_idx)] = src[slead + ssl][(Ellipsis,) + tuple(idx)]
    return dst


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
    win = windows(pad_input(x, spec.pad, spec.padding_mode), spec)   # (N, C, *out, *kernel)
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
    win = windows(pad_input(np.asarray(x, dtype=dt), spec.pad, spec.padding_mode), spec)
    win = win.reshape((n, g, cg) + spec.out_size + spec.kernel)
    dyg = np.asarray(dy, dtype=dt).reshape((n, g, kg) + spec.out_size)
    o_axes = list(range(4, 4 + nd))
    t_axes = list(range(4 + nd, 4 + 2 * nd))
    # dw[g, k, c, t] = sum_{n, o} win[n, g, c, o, t] * dy[n, g, k, o]
    out = np.einsum(win, [0, 1, 2] + o_axes + t_axes, dyg, [0, 1, 3] + o_axes, [1, 3, 2] + t_axes,
                    optimize=True)
    return np.ascontiguousarray(out.reshape(spec.weight_shape), dtype=dt)
