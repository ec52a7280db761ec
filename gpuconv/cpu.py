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

from ._cpu import n_threads, run_jobs
from .reference import compute_dtype, pad_input
from .spec import ConvSpec
from .winograd import conv_winograd, usable as winograd_usable


def use_winograd(spec: ConvSpec, dt) -> bool:
    """Winograd F(2x2, 3x3) for 3x3 stride-1 2-D convs with wide enough channels.

    Measured (float32, 2 cores, min of 15): 8x64x56x56 -> 64 pad 1: im2col+GEMM
    16.2 ms, Winograd 14.1 ms; 4x32x64x64 -> 32 dilation 2: im2col 3.7 ms,
    Winograd 4.6 ms (16 GEMMs of 32x32 run at ~70 GFLOP/s and the transforms
    cost as much as the FLOPs saved).  Hence per-group channels >= 64.  Integer
    dtypes stay on the exact GEMM path."""
    return (winograd_usable(spec, dt) and spec.c_per_group >= _WINOGRAD_MIN_CHANNELS
            and spec.k_per_group >= _WINOGRAD_MIN_CHANNELS)


_WINOGRAD_MIN_CHANNELS = 64


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
    elif use_winograd(spec, dt):
        out = conv_winograd(x, w, spec, dt)
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


# Elements of the padded input per depthwise job (a slab of channels), run on
# the CPU thread pool (NumPy releases the GIL).  See _depthwise_flat for the
# measurements.
_DEPTHWISE_SLAB_ELEMS = 1 << 17


def _conv_one_channel_per_group(x, w, spec: ConvSpec, dt) -> np.ndarray:
    """groups == C (depthwise, multiplier Kg): one multiply-add per kernel tap."""
    if all(st == 1 for st in spec.stride):
        return _depthwise_flat(x, w, spec, dt)
    return _depthwise_strided(x, w, spec, dt)


def _depthwise_flat(x, w, spec: ConvSpec, dt) -> np.ndarray:
    """Stride-1 depthwise as 1-D passes over a slab of channels.

    A job owns a slab of channels for a block of images.  Per image it copies
    the slab into a zero-bordered padded buffer (the padding, fused and
    threaded), whose channels lie end to end: output (p, q) of channel c sits
    at c*Hp*Wp + p*Wp + q and tap (r, s) reads the run shifted by r*dh*Wp + s*dw,
    so every tap is ONE contiguous multiply and ONE add over the whole slab
    (channel boundaries, the Wp - Q columns and the Hp - P rows are junk,
    computed and dropped: 7% extra at 56x56, 3x3).  The per-channel weight is a
    tile of the slab's length, built once per job and reused for its images:
    a (gb, 1) broadcast weight makes NumPy call its inner loop once per channel
    (measured 3.8-4.2 Gelem/s against 8-9 for same-shape contiguous operands,
    float32, 3300-element rows).  The last add writes the cropped result
    straight into the output.

    8x128x56x56, 3x3, float32, 2 cores, min of 15: before (np.pad, 17
    broadcast passes over (gb, length) rows, crop copy) 8.2 ms, this 7.5 ms,
    torch 1.6-1.8 ms.  Slabs (padded elements per job): 2^14 23 ms (GIL
    hand-offs), 2^15 10.9, 2^16 7.8, 2^17 7.5, 2^18 6.9-7.5; one thread 12 ms.
    The floor is NumPy itself: 17 passes, the multiplies at ~4.3 Gelem/s once
    the nine weight tiles spill the 1 MiB L2."""
    n, g, kg, nd = spec.n, spec.groups, spec.k_per_group, spec.nd
    padded = tuple(i + lo + hi for i, (lo, hi) in zip(spec.in_size, spec.pad))
    gsize = int(np.prod(padded))
    pstride = [int(np.prod(padded[i + 1:])) for i in range(nd)]
    offsets = [sum(t * d * ps for t, d, ps in zip(tap, spec.dilation, pstride))
               for tap in np.ndindex(*spec.kernel)]
    tail = max(offsets)
    interior = tuple(slice(lo, lo + i) for i, (lo, _) in zip(spec.in_size, spec.pad))
    crop = tuple(slice(0, o) for o in spec.out_size)
    wk = w.reshape(g, kg, len(offsets))
    out = np.empty((n, g, kg) + spec.out_size, dtype=dt)
    gb = max(1, min(g, _DEPTHWISE_SLAB_ELEMS // max(gsize, 1)))
    slabs = [(g0, min(g, g0 + gb)) for g0 in range(0, g, gb)]
    # Enough jobs for the pool when there are few channel slabs: split the images.
    nblk = max(1, min(n, -(-2 * n_threads() // len(slabs))))
    blocks = [(n * i // nblk, n * (i + 1) // nblk) for i in range(nblk)]

    def job(n0, n1, g0, g1):
        m = (g1 - g0) * gsize
        xbuf = np.zeros(m + tail, dtype=dt)
        xgrid = xbuf[:m].reshape((g1 - g0,) + padded)
        acc = np.empty(m, dtype=dt)
        tmp = np.empty(m, dtype=dt)
        # Weight tiles pay for themselves from two images on; one image uses
        # the (gb, 1) broadcast.
        if n1 - n0 >= 2:
            wts = np.empty((len(offsets), kg, g1 - g0, gsize), dtype=dt)
            wts[...] = wk[g0:g1].transpose(2, 1, 0)[..., None]
            wts = wts.reshape(len(offsets), kg, m)
            def view(a):
                return a
        else:
            wts = wk[g0:g1].transpose(2, 1, 0)[..., None]          # (taps, kg, gb, 1)
            def view(a):
                return a.reshape(g1 - g0, gsize)
        acc_v, tmp_v = view(acc), view(tmp)
        acc_g = acc.reshape((g1 - g0,) + padded)[(slice(None),) + crop]
        tmp_g = tmp.reshape((g1 - g0,) + padded)[(slice(None),) + crop]
        last = len(offsets) - 1
        for ni in range(n0, n1):
            xgrid[(slice(None),) + interior] = x[ni, g0:g1]
            for k in range(kg):
                dst = out[ni, g0:g1, k]
                for t, off in enumerate(offsets):
                    xs = view(xbuf[off:off + m])
                    if t == 0:
                        np.multiply(xs, wts[t, k], out=acc_v)
                    elif t < last:
                        np.multiply(xs, wts[t, k], out=tmp_v)
                        np.add(acc_v, tmp_v, out=acc_v)
                    else:
                        np.multiply(xs, wts[t, k], out=tmp_v)
                        np.add(acc_g, tmp_g, out=dst)
                if last == 0:
                    dst[...] = acc_g

    jobs = [(n0, n1, g0, g1) for n0, n1 in blocks for g0, g1 in slabs]
    run_jobs(job, jobs, n * g * kg * gsize)
    return out.reshape(spec.output_shape)


def _depthwise_strided(x, w, spec: ConvSpec, dt) -> np.ndarray:
    """Strided depthwise: one multiply-add per kernel tap over (channels, *out)
    slabs of one image, the taps read through strided views of the padded input."""
    n, g, kg, nd = spec.n, spec.groups, spec.k_per_group, spec.nd
    xp = pad_input(x, spec.pad)                               # (N, G, *padded)
    wk = w.reshape((g, kg) + spec.kernel)
    taps = [(tap, _tap_slices(tap, spec)) for tap in np.ndindex(*spec.kernel)]
    work = np.empty((n, g, kg) + spec.out_size, dtype=dt)
    per_group = kg * work[0, 0, 0].size
    gb = max(1, min(g, _DEPTHWISE_SLAB_ELEMS // max(per_group, 1)))

    def slab(ni, g0, g1):
        o = work[ni, g0:g1]                                   # (gb, kg, *out)
        src = xp[ni, g0:g1, None]                             # (gb, 1, *padded)
        wshape = (g1 - g0, kg) + (1,) * nd
        tmp = np.empty_like(o)
        for i, (tap, sl) in enumerate(taps):
            xs = src[(slice(None), slice(None)) + sl]
            ws = wk[(slice(g0, g1), slice(None)) + tap].reshape(wshape)
            if i == 0:
                np.multiply(xs, ws, out=o)
            else:
                np.multiply(xs, ws, out=tmp)
                o += tmp

    jobs = [(ni, g0, min(g, g0 + gb)) for ni in range(n) for g0 in range(0, g, gb)]
    run_jobs(slab, jobs, work.size)
    return work.reshape(spec.output_shape)
