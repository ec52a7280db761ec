"""The CPU path of the gradients: dgrad (also the transposed convolution) and wgrad
of a forward ConvSpec on NumPy arrays, tuned for speed; gpuconv.reference.dgrad /
wgrad define what they compute, and the tests hold them to it and to torch.

    dgrad(dy, w, spec)   dy (N, K, *out), w (K, C/g, *kernel) -> dx (N, C, *in)
    wgrad(x, dy, spec)   x (N, C, *in), dy (N, K, *out)       -> dw (K, C/g, *kernel)

Both return gpuconv.reference.compute_dtype(spec.dtype) (integers in int64, float16
in float32); the caller casts.  dgrad takes one of four forms, by which wastes
least (figures in bench/README.md, "CPU path"):
  * stride 1 with a finite weight: the forward convolution of
    gpuconv.derived.dgrad_forward_form through gpuconv.cpu (no zeros to insert;
    its GEMM's inner size is K/g*taps, not K/g, and there is no col2im pass);
  * depthwise forward problems (C = groups): the compiled adjoint of
    gpuconv._native;
  * one output channel per group of dy (K = groups): a multiply-add per tap
    straight into dx (the GEMM would be an outer product per group);
  * otherwise one GEMM per group to columns, W_g^T (C/g*taps, K/g) @ dy_g, then a
    strided add per tap into dx (col2im): the FLOPs of the operator itself, where
    the forward form would multiply stride**nd times as many inserted zeros.
wgrad gathers the column matrix of a chunk of images with one strided copy per
tap and adds one batched GEMM over the groups per chunk, in a fixed order
(deterministic); depthwise problems take the compiled kernel.
"""
from __future__ import annotations

import math

import numpy as np

from . import cpu
from .derived import crop_unread, dgrad_forward_form, flip_swap_weight
from .reference import compute_dtype, pad_input
from .spec import ConvSpec

# Images per dgrad GEMM chunk: bounds the column matrix (C * taps * images *
# prod(out) elements) so a large batch does not materialise taps x dx at once.
_DGRAD_COLS_ELEMS = 1 << 22
# Column-matrix elements per wgrad chunk of images (C * taps * images * prod(out)),
# as in gpuconv.cpu: gathered and consumed by the GEMM while still in cache.
_WGRAD_COLS_ELEMS = 1 << 20


def _tap_ranges(tap, spec: ConvSpec):
    """For kernel tap `tap`: (dy slices, dx slices) of the positions it connects (dy
    position o feeds dx position o*s + t*d - pad_lo), or None when the tap lands
    wholly in the padding."""
    src, dst = [], []
    for t, d, s, (lo, _), o, i in zip(tap, spec.dilation, spec.stride, spec.pad, spec.out_size,
                                      spec.in_size):
        j0 = max(0, -((t * d - lo) // s))          # ceil((lo - t*d) / s): first o inside dx
        j1 = min(o - 1, (i - 1 + lo - t * d) // s)
        if j1 < j0:
            return None
        i0 = j0 * s + t * d - lo
        src.append(slice(j0, j1 + 1))
        dst.append(slice(i0, i0 + (j1 - j0) * s + 1, s))
    return tuple(src), tuple(dst)


def dgrad(dy: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dL/dx of `spec` for batched NumPy arrays, in the compute dtype."""
    dt = compute_dtype(spec.dtype)
    if spec.n == 0 or spec.c == 0 or math.prod(spec.in_size) == 0:
        return np.zeros(spec.input_shape, dtype=dt)
    if spec.k == 0 or math.prod(spec.out_size) == 0:
        return np.zeros(spec.input_shape, dtype=dt)
    if all(s == 1 for s in spec.stride) and np.isfinite(w).all():
        # (a non-finite weight tap would meet the forward form's zero padding, 0 * NaN,
        # and spread past the outputs it reaches: the scatter forms below keep torch's
        # result there, and checking the small weight costs microseconds)
        return _dgrad_stride1(dy, w, spec, dt)
    if spec.c == spec.groups > 1 and cpu.native_depthwise_ok(spec, dt, "depthwise_dgrad"):
        return cpu.depthwise_dgrad_native(dy, w, spec, dt)
    if spec.k == spec.groups:
        return _dgrad_one_channel_per_group(dy, w, spec, dt)
    return _dgrad_gemm_col2im(dy, w, spec, dt)


def _dgrad_stride1(dy, w, spec: ConvSpec, dt) -> np.ndarray:
    _, crop, pads = dgrad_forward_form(spec)
    xc = np.asarray(dy)[crop]
    fspec = ConvSpec(n=spec.n, c=spec.k, k=spec.c, in_size=tuple(xc.shape[2:]), kernel=spec.kernel,
                     stride=(1,) * spec.nd, pad=pads, dilation=spec.dilation, groups=spec.groups,
                     dtype=spec.dtype)
    return cpu.conv(xc, flip_swap_weight(np, np.asarray(w), spec.groups), None, fspec)


def _dgrad_one_channel_per_group(dy, w, spec: ConvSpec, dt) -> np.ndarray:
    n, g, nd = spec.n, spec.groups, spec.nd
    cg = spec.c_per_group
    dy = np.asarray(dy, dtype=dt)[:, :, None]                        # (N, G, 1, *out)
    wk = np.asarray(w, dtype=dt).reshape((g, cg) + spec.kernel)
    out = np.zeros((n, g, cg) + spec.in_size, dtype=dt)
    for tap in np.ndindex(*spec.kernel):
        r = _tap_ranges(tap, spec)
        if r is None:
            continue
        src, dst = r
        ws = wk[(slice(None), slice(None)) + tap].reshape((1, g, cg) + (1,) * nd)
        out[(slice(None),) * 3 + dst] += dy[(slice(None),) * 3 + src] * ws
    return out.reshape(spec.input_shape)


def _dgrad_gemm_col2im(dy, w, spec: ConvSpec, dt) -> np.ndarray:
    n, g = spec.n, spec.groups
    kg, cg = spec.k_per_group, spec.c_per_group
    npix = math.prod(spec.out_size)
    ntap = math.prod(spec.kernel)
    out = np.zeros(spec.input_shape, dtype=dt)
    dy = np.asarray(dy, dtype=dt)
    # (G, Cg*taps, Kg): row (c, t) of group g holds w[g*Kg + k, c, t] over k
    wt = np.asarray(w, dtype=dt).reshape(g, kg, cg * ntap).transpose(0, 2, 1)
    taps = [(tap, r) for tap in np.ndindex(*spec.kernel)
            if (r := _tap_ranges(tap, spec)) is not None]
    out_cn = out.swapaxes(0, 1)                                  # (C, N, *in) view
    nb = max(1, min(n, _DGRAD_COLS_ELEMS // max(spec.c * ntap * npix, 1)))
    for n0 in range(0, n, nb):
        b = min(nb, n - n0)
        yg = dy[n0:n0 + b].reshape(b, g, kg, npix).transpose(1, 2, 0, 3).reshape(g, kg, b * npix)
        cols = np.matmul(wt, yg)                                 # (G, Cg*taps, b*L)
        cols = cols.reshape((spec.c,) + spec.kernel + (b,) + spec.out_size)
        dst_n = out_cn[:, n0:n0 + b]
        for tap, (src, dst) in taps:
            dst_n[(slice(None), slice(None)) + dst] += cols[(slice(None),) + tap + (slice(None),) + src]
    return out


def wgrad(x: np.ndarray, dy: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """dL/dw of `spec` for batched NumPy arrays, in the compute dtype.

    Per chunk of images: the column matrix of every channel is gathered with one
    strided copy per kernel tap, then one batched GEMM over the groups,
    dy_g (Kg, b*L) @ cols_g^T (b*L, Cg*taps), is added to the result.  Gathering
    all groups at once keeps the Python loop at taps iterations (a per-group loop
    made depthwise layers 7x slower than torch: 64 groups x 9 taps of tiny copies)."""
    dt = compute_dtype(spec.dtype)
    x, spec = crop_unread(x, spec)
    n, g = spec.n, spec.groups
    cg, kg = spec.c_per_group, spec.k_per_group
    npos = math.prod(spec.out_size)
    ntap = math.prod(spec.kernel)
    gw = np.zeros((g, kg, cg * ntap), dtype=dt)
    if n == 0 or npos == 0 or gw.size == 0:
        return gw.reshape(spec.weight_shape)
    if g > 1 and cpu.native_depthwise_ok(spec, dt, "depthwise_wgrad"):
        return cpu.depthwise_wgrad_native(x, dy, spec, dt)
    xpad = pad_input(np.asarray(x, dtype=dt), spec.pad)
    dy = np.asarray(dy, dtype=dt).reshape(n, spec.k, npos)
    taps = [(tap, tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in
                        zip(tap, spec.dilation, spec.stride, spec.out_size)))
            for tap in np.ndindex(*spec.kernel)]
    nb = max(1, min(n, _WGRAD_COLS_ELEMS // max(spec.c * ntap * npos, 1)))
    for n0 in range(0, n, nb):
        b = min(nb, n - n0)
        cols = np.empty((spec.c,) + spec.kernel + (b,) + spec.out_size, dtype=dt)
        xc = xpad[n0:n0 + b].swapaxes(0, 1)                              # (C, b, *padded)
        for tap, sl in taps:
            cols[(slice(None),) + tap] = xc[(slice(None), slice(None)) + sl]
        cols_g = cols.reshape(g, cg * ntap, b * npos)
        dy_g = dy[n0:n0 + b].reshape(b, g, kg, npos).transpose(1, 2, 0, 3).reshape(g, kg, b * npos)
        gw += np.matmul(dy_g, cols_g.transpose(0, 2, 1))
    return gw.reshape(spec.weight_shape)
