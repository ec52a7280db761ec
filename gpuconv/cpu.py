"""The CPU path: gpuconv's convolution on NumPy arrays, tuned for speed.

`conv(x, w, bias, spec, accumulate=None)` computes exactly what
gpuconv.reference.conv defines (the tests hold the two together, and both to
torch); this module is free to be clever about it.  Never a Python loop over
pixels:
  * stride 1: im2col whose every kernel tap is one contiguous copy per channel
    (the shifted-run trick, _flat_geometry), one GEMM per group and chunk of
    images through BLAS, output positions gathered from the GEMM's runs;
  * strided: im2col of a chunk of images (a strided copy per kernel tap into a
    reused column buffer), one GEMM per group writing straight into the output;
  * 1x1, stride 1, no padding: the input already is the column matrix;
  * one input channel per group (depthwise, any multiplier): a multiply-add per
    kernel tap over slabs of channels on a thread pool, since per-group GEMMs of
    inner size R*S would leave BLAS idle.

`accumulate` as in reference.compute_dtype (float16 computes in float32,
integers in int64, "float64" for reference use).
"""
from __future__ import annotations

import numpy as np

from ._cpu import run_jobs
from .reference import compute_dtype, pad_input
from .spec import ConvSpec


def conv(x: np.ndarray, w: np.ndarray, bias, spec: ConvSpec, accumulate=None) -> np.ndarray:
    """Forward convolution of `spec` on NumPy arrays, fast; returns the compute
    dtype (the caller casts to the output dtype)."""
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
        out = _conv_im2col(pad_input(x, spec.pad), w, spec, dt)
    if bias is not None:
        out += np.asarray(bias, dtype=dt).reshape((1, spec.k) + (1,) * nd)
    return out


# Images per im2col chunk: the column matrix of one chunk is gathered and
# consumed by the GEMM while it is still in cache, instead of writing a
# whole-batch column matrix to memory and reading it back (8x64x56x56, 3x3:
# 58 MB of columns).  One image per chunk also lets the GEMM write straight
# into the output (no transpose).  Chunks grow for tiny images so the GEMM
# keeps a useful width.
_COLS_TARGET_ELEMS = 1 << 20


def _tap_slices(tap, spec: ConvSpec):
    """Slices of the padded input read by kernel tap `tap` for every output position."""
    return tuple(slice(t * d, t * d + s * (o - 1) + 1, s)
                 for t, d, s, o in zip(tap, spec.dilation, spec.stride, spec.out_size))


def _flat_geometry(padded, spec: ConvSpec):
    """Stride-1 convolutions as shifted runs of the flattened padded image.

    Output o = (o_0, o_1, ...) sits at flat position sum o_i * ps_i of the padded
    grid (ps: its element strides) and kernel tap t reads the input at that
    position plus sum t_i * d_i * ps_i, so the operand of one tap is a single
    contiguous run of `length` elements; the positions in between (the columns
    beyond the output's width) are computed and dropped.
    Returns (length, tap offsets, output positions within the run)."""
    nd = spec.nd
    pstride = [int(np.prod(padded[i + 1:])) for i in range(nd)]
    length = sum((o - 1) * ps for o, ps in zip(spec.out_size, pstride)) + 1
    offsets = [sum(t * d * ps for t, d, ps in zip(tap, spec.dilation, pstride))
               for tap in np.ndindex(*spec.kernel)]
    pos = np.zeros((), dtype=np.intp)
    for o, ps in zip(spec.out_size, pstride):
        pos = pos[..., None] + np.arange(o, dtype=np.intp) * ps
    return length, offsets, pos.reshape(-1)


def _conv_im2col_flat(xp: np.ndarray, w: np.ndarray, spec: ConvSpec, dt) -> np.ndarray:
    """Stride 1: im2col whose every tap is one contiguous copy per channel
    (_flat_geometry), one GEMM per group and chunk of images, then the output
    positions gathered out of the GEMM's runs.  Against per-output-row copies
    this removes the per-row overhead of the gather (56-wide rows at 56x56)."""
    n, g = spec.n, spec.groups
    cg, kg = spec.c_per_group, spec.k_per_group
    ntap = int(np.prod(spec.kernel))
    length, offsets, pos = _flat_geometry(xp.shape[2:], spec)
    xflat = xp.reshape(n, spec.c, -1)
    nb = max(1, min(n, _COLS_TARGET_ELEMS // max(cg * ntap * length, 1)))
    out = np.empty((n, spec.k, pos.size), dtype=dt)
    wmat = w.reshape(g, kg, cg * ntap)
    cols = np.empty((cg, ntap, nb, length), dtype=dt)
    for n0 in range(0, n, nb):
        b = min(nb, n - n0)
        c = cols[:, :, :b]
        for gi in range(g):
            xs = xflat[n0:n0 + b, gi * cg:(gi + 1) * cg].swapaxes(0, 1)   # (Cg, b, flat)
            for t, off in enumerate(offsets):
                c[:, t] = xs[:, :, off:off + length]
            res = np.matmul(wmat[gi], c.reshape(cg * ntap, b * length)).reshape(kg, b, length)
            out[n0:n0 + b, gi * kg:(gi + 1) * kg] = np.take(res, pos, axis=2).swapaxes(0, 1)
    return out.reshape(spec.output_shape)


def _conv_im2col(xp: np.ndarray, w: np.ndarray, spec: ConvSpec, dt) -> np.ndarray:
    """im2col one chunk of images at a time, one GEMM per group and chunk."""
    if all(s == 1 for s in spec.stride):
        return _conv_im2col_flat(xp, w, spec, dt)
    n, g, nd = spec.n, spec.groups, spec.nd
    cg, kg = spec.c_per_group, spec.k_per_group
    npos = int(np.prod(spec.out_size))
    ntap = int(np.prod(spec.kernel))
    per_image = cg * ntap * npos
    nb = max(1, min(n, _COLS_TARGET_ELEMS // max(per_image, 1)))
    out = np.empty((n, spec.k, npos), dtype=dt)
    wmat = w.reshape(g, kg, cg * ntap)
    cols = np.empty((cg,) + spec.kernel + (nb,) + spec.out_size, dtype=dt)
    taps = [(tap, _tap_slices(tap, spec)) for tap in np.ndindex(*spec.kernel)]
    for n0 in range(0, n, nb):
        b = min(nb, n - n0)
        c = cols[(slice(None),) * (1 + nd) + (slice(0, b),)]
        for gi in range(g):
            xg = xp[n0:n0 + b, gi * cg:(gi + 1) * cg].swapaxes(0, 1)   # (Cg, b, *padded)
            for tap, sl in taps:
                c[(slice(None),) + tap] = xg[(slice(None), slice(None)) + sl]
            cm = c.reshape(cg * ntap, b * npos)
            ks = slice(gi * kg, (gi + 1) * kg)
            if b == 1:
                np.matmul(wmat[gi], cm, out=out[n0, ks])
            else:
                out[n0:n0 + b, ks] = np.matmul(wmat[gi], cm).reshape(kg, b, npos).swapaxes(0, 1)
    return out.reshape(spec.output_shape)


# Output elements per depthwise job (a slab of channels of one image), run on
# the CPU thread pool (NumPy releases the GIL).  Measured on 8x128x56x56, 3x3,
# float32, 2 cores (AMD EPYC, 1 MiB L2 per core, 32 MiB L3), quiet machine:
# 2^15 21 ms, 2^17 10.4 ms, 2^19 8.1-8.5 ms, 2^21 7.9-8.2 ms; one thread 13.4 ms.
# Small slabs lose to per-call overhead and GIL hand-offs, not to cache misses:
# the slabs only need to fit the L3.
_DEPTHWISE_SLAB_ELEMS = 1 << 19


def _conv_one_channel_per_group(x, w, spec: ConvSpec, dt) -> np.ndarray:
    """groups == C (depthwise, multiplier Kg): one multiply-add per kernel tap,
    over slabs of channels of one image at a time.

    With stride 1 every tap reads a contiguous run of the flattened padded
    image: output (p, q) sits at p*Wp + q of a grid as wide as the padded input
    and tap (r, s) adds the run shifted by r*dh*Wp + s*dw, so each pass is one
    long 1-D loop (the Wp - Q columns of junk per row are cropped at the end;
    4% extra work at 56x56, 3x3) instead of one short loop per output row."""
    n, g, kg, nd = spec.n, spec.groups, spec.k_per_group, spec.nd
    xp = pad_input(x, spec.pad)                               # (N, G, *padded)
    wk = w.reshape((g, kg) + spec.kernel)
    flat = all(st == 1 for st in spec.stride)
    if flat:
        padded = xp.shape[2:]
        pstride = [int(np.prod(padded[i + 1:])) for i in range(nd)]   # element strides of the padded grid
        length = sum((o - 1) * ps for o, ps in zip(spec.out_size, pstride)) + 1
        grid = (spec.out_size[0],) + tuple(padded[1:])   # outputs on the padded grid's strides
        xflat = xp.reshape(n, g, -1)
        taps = [(tap, sum(t * d * ps for t, d, ps in zip(tap, spec.dilation, pstride)))
                for tap in np.ndindex(*spec.kernel)]
        work = np.empty((n, g, kg, int(np.prod(grid))), dtype=dt)
    else:
        taps = [(tap, _tap_slices(tap, spec)) for tap in np.ndindex(*spec.kernel)]
        work = np.empty((n, g, kg) + spec.out_size, dtype=dt)
    per_group = kg * work[0, 0, 0].size
    gb = max(1, min(g, _DEPTHWISE_SLAB_ELEMS // max(per_group, 1)))

    def slab(ni, g0, g1):
        if flat:
            o = work[ni, g0:g1, :, :length]                   # (gb, kg, length)
            src = xflat[ni, g0:g1, None]                      # (gb, 1, Hp*Wp)
            def pick(off):
                return src[..., off:off + length]
            wshape = (g1 - g0, kg, 1)
        else:
            o = work[ni, g0:g1]                               # (gb, kg, *out)
            src = xp[ni, g0:g1, None]                         # (gb, 1, *padded)
            def pick(sl):
                return src[(slice(None), slice(None)) + sl]
            wshape = (g1 - g0, kg) + (1,) * nd
        tmp = np.empty_like(o)
        for i, (tap, where) in enumerate(taps):
            xs = pick(where)
            ws = wk[(slice(g0, g1), slice(None)) + tap].reshape(wshape)
            if i == 0:
                np.multiply(xs, ws, out=o)
            else:
                np.multiply(xs, ws, out=tmp)
                o += tmp

    jobs = [(ni, g0, min(g, g0 + gb)) for ni in range(n) for g0 in range(0, g, gb)]
    run_jobs(slab, jobs, work.size)
    if flat:
        crop = (Ellipsis,) + tuple(slice(0, o) for o in spec.out_size[1:])
        out = work.reshape((n, g, kg) + grid)[crop]
        return np.ascontiguousarray(out).reshape(spec.output_shape)
    return work.reshape(spec.output_shape)
