"""The CPU path: gpuconv's convolution on NumPy arrays, tuned for speed.

`conv(x, w, bias, spec, accumulate=None)` computes exactly what
gpuconv.reference.conv defines (the tests hold the two together, and both to
torch); this module is free to be clever about it.  Never a Python loop over
pixels:
  * any stride: im2col whose every kernel tap is one contiguous copy per
    channel of a polyphase image (the shifted-run trick, _PhaseGeometry), one
    GEMM over the groups per chunk of images through BLAS, output positions
    copied from the GEMM's runs through a strided view;
  * 1x1, stride 1, no padding: the input already is the column matrix;
  * one input channel per group (depthwise, any multiplier): per-group GEMMs of
    inner size R*S would leave BLAS idle, so the compiled kernel of
    gpuconv._native runs slabs of planes on the thread pool; without it, a
    NumPy multiply-add per kernel tap over slabs of channels.

Every form resolves spec.padding_mode (reflect, replicate, circular) in the
copy it makes anyway (the phase images, the depthwise slabs and planes,
Winograd's tile phases): the border is gathered through the mode's index map
(reference.fill_extended, depthwise.c pad_index), never a padded copy of the
whole input.

`accumulate` as in reference.compute_dtype (float16 computes in float32,
integers in int64, "float64" for reference use).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from . import _native
from ._cpu import n_threads, run_jobs, scratch, shares
from .reference import compute_dtype, fill_extended
from .spec import ConvSpec
from .winograd import conv_winograd, usable as winograd_usable


def use_winograd(spec: ConvSpec, dt) -> bool:
    """Winograd F(2x2, 3x3) for 3x3 stride-1 2-D convs with at least 64 channels per
    group in and out: below that its 16 small GEMMs (~70 GFLOP/s at 32x32) and the
    transforms cost more than the 2.25x fewer FLOPs save (64 channels: 12.6 vs
    16.2 ms for im2col; 32: 3.9 vs 3.4 ms; bench/README.md, "CPU path").
    Integer dtypes stay on the exact GEMM path."""
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
    npos = math.prod(out_size)
    ntap = math.prod(spec.kernel)

    if n == 0 or npos == 0 or spec.k == 0:
        out = np.zeros(spec.output_shape, dtype=dt)
    elif cg == 1 and g > 1 and native_depthwise_ok(spec, dt):
        out = depthwise_native(x, w, bias, spec, dt)
        bias = None                                           # added by the kernel
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
        out = _conv_im2col(x, w, spec, dt)
    if bias is not None:
        out += np.asarray(bias, dtype=dt).reshape((1, spec.k) + (1,) * nd)
    return out


# Elements of the column matrix per chunk of images: a chunk's columns are
# gathered and consumed by the GEMM while they are still in cache, instead of
# writing a whole-batch column matrix to memory and reading it back (8x64x56x56,
# 3x3: 58 MB of columns).  Chunks grow for small images so the GEMM keeps a
# useful width.
_COLS_TARGET_ELEMS = 1 << 20

def _tap_slices(tap, spec: ConvSpec):
    """Slices of the padded input read by kernel tap `tap` for every output position."""
    return tuple(slice(t * d, t * d + s * (o - 1) + 1, s)
                 for t, d, s, o in zip(tap, spec.dilation, spec.stride, spec.out_size))


class _PhaseGeometry:
    """Any stride as shifted runs of flattened polyphase images.

    Tap t reads padded input position o*s + t*d = s*(o + (t*d)//s) + (t*d)%s, so
    with the phase images X_a[c, i] = xpad[c, a + i*s] (a < s per dim) tap t is
    phase a_t = (t*d)%s shifted by (t*d)//s.  Output o sits at flat position
    sum o_i*ps_i of a phase grid (o + max shift per dim; ps: its element strides)
    and tap t reads that position plus sum ((t_i d_i)//s_i) ps_i: one contiguous
    run of `length` elements per tap and channel; the positions in between (the
    grid columns beyond the output's width) are computed and dropped.  Stride 1
    has the single phase 0, the padded image itself.  Only phases some tap
    reads are built (stride 2, dilation 2 reads phase 0 only)."""

    def __init__(self, spec: ConvSpec):
        nd = spec.nd
        self.grid = tuple(o + ((k - 1) * d) // s for o, k, d, s in
                          zip(spec.out_size, spec.kernel, spec.dilation, spec.stride))
        self.size = math.prod(self.grid)
        ps = [math.prod(self.grid[i + 1:]) for i in range(nd)]
        self.pstride = ps
        self.length = sum((o - 1) * p for o, p in zip(spec.out_size, ps)) + 1
        self.phases = []                     # phase tuples a, in first-use order
        self.taps = []                       # (phase index, flat offset) per tap
        for tap in np.ndindex(*spec.kernel):
            u = [t * d for t, d in zip(tap, spec.dilation)]
            a = tuple(v % s for v, s in zip(u, spec.stride))
            if a not in self.phases:
                self.phases.append(a)
            off = sum((v // s) * p for v, s, p in zip(u, spec.stride, ps))
            self.taps.append((self.phases.index(a), off))

    def fill_phase(self, dst, x, a, spec: ConvSpec):
        """dst (C', b, *grid): phase `a` of x (b, C', *in) padded in spec.padding_mode;
        zeros mode writes the interior only (dst's border is zeroed once per call),
        the other modes the border too, gathered by the mode's index map
        (reference.fill_extended): no padded copy of the input either way."""
        fill_extended(dst, x.swapaxes(0, 1), tuple(ai - lo for ai, (lo, _) in zip(a, spec.pad)),
                      spec.stride, spec.padding_mode, border_zeroed=True)

    def output_view(self, res, spec: ConvSpec):
        """(K, b, *out) view of the GEMM result res (K, b, length)."""
        it = res.itemsize
        return np.lib.stride_tricks.as_strided(
            res, res.shape[:2] + spec.out_size,
            (res.strides[0], res.strides[1]) + tuple(p * it for p in self.pstride), writeable=False)


@functools.lru_cache(maxsize=128)
def _phase_geometry(spec: ConvSpec) -> _PhaseGeometry:
    """_PhaseGeometry per spec, kept: a network calls the same layers again and
    again, and building one costs ~100 us of Python (read-only once built)."""
    return _PhaseGeometry(spec)


def _conv_im2col(x: np.ndarray, w: np.ndarray, spec: ConvSpec, dt) -> np.ndarray:
    """im2col on polyphase shifted runs (_PhaseGeometry), one chunk of images at a
    time: the padding and the phase split fused into one strided copy per phase,
    one contiguous copy per tap, one batched GEMM over the groups, the output
    positions copied out of the GEMM's runs through a strided view.

    Single-threaded on purpose: OpenBLAS's threads spin after each GEMM, so the
    gather on the thread pool is ~10-20% slower than inline.  The buffers are
    per-thread scratch (_cpu.scratch) and the phase buffer is zeroed once per
    call: only its interior is rewritten per chunk.  The GEMM is 60-80% of the
    time on the reference layers (bench/README.md, "CPU path")."""
    n, g = spec.n, spec.groups
    c, k = spec.c, spec.k
    cg, kg = spec.c_per_group, spec.k_per_group
    geo = _phase_geometry(spec)
    ntap, length, nph = len(geo.taps), geo.length, len(geo.phases)
    npos = math.prod(spec.out_size)
    nb = max(1, min(n, _COLS_TARGET_ELEMS // max(c * ntap * length, 1)))
    out = np.empty((n, k, npos), dtype=dt)
    wmat = w.reshape(g, kg, cg * ntap)
    ph = scratch("im2col_phases", nph * c * nb * geo.size, dt).reshape(nph, c, nb, geo.size)
    if spec.padding_mode == "zeros":
        ph.fill(0)                       # the other modes write every position per chunk
    cols_buf = scratch("im2col_cols", c * ntap * nb * length, dt)
    res_buf = scratch("im2col_res", k * nb * length, dt)
    for n0 in range(0, n, nb):
        b = min(nb, n - n0)
        p = ph[:, :, :b]
        for i, a in enumerate(geo.phases):
            geo.fill_phase(p[i].reshape((c, b) + geo.grid), x[n0:n0 + b], a, spec)
        cols = cols_buf[:c * ntap * b * length].reshape(c, ntap, b, length)
        for t, (i, off) in enumerate(geo.taps):
            cols[:, t] = p[i, :, :, off:off + length]
        cm = cols.reshape(g, cg * ntap, b * length)
        if length == npos and b == 1:                       # no junk columns
            np.matmul(wmat, cm, out=out[n0].reshape(g, kg, npos))
            continue
        res = res_buf[:k * b * length].reshape(g, kg, b * length)
        np.matmul(wmat, cm, out=res)
        out[n0:n0 + b].reshape((b, k) + spec.out_size)[...] = \
            geo.output_view(res.reshape(k, b, length), spec).swapaxes(0, 1)
    return out.reshape(spec.output_shape)


# Elements of the padded input per depthwise job (a slab of channels), run on
# the CPU thread pool (NumPy releases the GIL).  See _depthwise_flat for the
# measurements.
_DEPTHWISE_SLAB_ELEMS = 1 << 17


_NATIVE_THREAD_MIN_WORK = 1 << 20


def native_depthwise_ok(spec: ConvSpec, dt, kernel: str = "depthwise") -> bool:
    """The compiled depthwise kernels take one input channel per group, up to 3
    spatial dims, no cropping (low padding >= 0; a negative high padding only
    leaves input unread), float32/float64, and must be built."""
    return (spec.c_per_group == 1 and spec.nd <= 3 and all(lo >= 0 for lo, _ in spec.pad)
            and _native.kernel(kernel, dt) is not None)


def _native_geometry(spec: ConvSpec) -> tuple[int, ...]:
    """depthwise.c's 22 geometry arguments, padded to 3-D, and the padding mode's
    code (spec.padding_mode_code); the padded buffer's high padding is clamped at
    0 (the output size stays the spec's)."""
    def three(vals, fill):
        return (fill,) * (3 - spec.nd) + tuple(int(v) for v in vals)

    return (three(spec.in_size, 1) + three(spec.kernel, 1) + three(spec.out_size, 1)
            + three(spec.stride, 1) + three((lo for lo, _ in spec.pad), 0)
            + three((max(hi, 0) for _, hi in spec.pad), 0) + three(spec.dilation, 1)
            + (spec.padding_mode_code,))


def _run_native(kernel: str, spec: ConvSpec, dt, inputs, out, out_shape, head, count: int):
    """Call compiled `kernel` on the C-contiguous `inputs` (None passes NULL)
    and `out` (allocated when None), for [0, count) split into one equal share
    per thread: kernel(*inputs, out, *head(lo, hi), *geometry); returns out.
    Below _NATIVE_THREAD_MIN_WORK multiply-adds (~0.3 ms on one core) the call
    runs inline, since waking the pool costs ~50 us a job here (2x32x32x32 3x3:
    64 us inline, 261 us as 8 jobs on 2 threads)."""
    if not native_depthwise_ok(spec, dt, kernel):
        raise ValueError(f"the compiled {kernel} kernel does not take {spec} in {np.dtype(dt)} "
                         f"(kernels: {_native.status()})")
    arrays = [None if a is None else np.ascontiguousarray(a, dtype=dt) for a in inputs]
    if out is None:
        out = np.empty(out_shape, dtype=dt)
    elif out.shape != out_shape or out.dtype != dt or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous {np.dtype(dt)} of shape {out_shape}, "
                         f"got {out.dtype} {out.shape}")
    if out.size == 0:
        return out
    fn = _native.kernel(kernel, dt)
    geometry = _native_geometry(spec)
    ptrs = tuple(None if a is None else a.ctypes.data for a in arrays + [out])
    # ctypes passes surplus arguments unchecked: hold the count to the C signature.
    assert len(ptrs) + len(head(0, 0)) + len(geometry) == len(fn.argtypes), kernel

    def job(lo, hi):
        if fn(*ptrs, *head(lo, hi), *geometry) != 0:
            raise MemoryError(f"{kernel}: could not allocate its plane buffer")

    work = spec.n * spec.k * math.prod(spec.out_size) * math.prod(spec.kernel)
    run_jobs(job, shares(count), work, min_elements=_NATIVE_THREAD_MIN_WORK)
    return out


def depthwise_kernel(spec: ConvSpec) -> str:
    """Which form of the compiled kernels: 'depthwise_lanes' (8 groups in the
    vector lanes) for rows of 16 or fewer outputs, and of 32 or fewer when
    strided; 'depthwise' (vectorised along the rows) otherwise.  The weight and
    input gradients follow the same choice.  Fewer than 8 groups leave lanes
    idle.  The bounds are where the lanes form stops winning on 3x3 layers
    (stride 1: 7x7 1.5x faster, 14x14 equal, 28x28 0.7x; the per-size table is
    in bench/README.md, "CPU path")."""
    short = 32 if max(spec.stride) > 1 else 16
    if spec.groups >= 8 and spec.out_size[-1] <= short:
        return "depthwise_lanes"
    return "depthwise"


def _form(spec: ConvSpec, kernel, rows: str, per_image: bool) -> tuple[str, int]:
    """(kernel name, job count) for the rows form `rows` or its '_lanes' form;
    kernel=None chooses as depthwise_kernel(spec) does.  Jobs are groups (lanes:
    blocks of 8 groups), per image when `per_image`."""
    lanes = rows + "_lanes"
    if kernel is None:
        kernel = lanes if depthwise_kernel(spec) == "depthwise_lanes" else rows
    if kernel not in (rows, lanes):
        raise ValueError(f"kernel must be {rows!r} or {lanes!r}, got {kernel!r}")
    count = -(-spec.groups // 8) if kernel == lanes else spec.groups
    return kernel, spec.n * count if per_image else count


def depthwise_native(x, w, bias, spec: ConvSpec, dt, out=None, kernel=None) -> np.ndarray:
    """One input channel per group (any multiplier, stride, dilation, zero
    padding, 1-D to 3-D), float32 or float64, through gpuconv/csrc/depthwise.c
    with the bias fused; `out` (C-contiguous, spec.output_shape) is written in
    full.  `kernel`: 'depthwise' or 'depthwise_lanes' (default:
    depthwise_kernel(spec)).  Needs native_depthwise_ok(spec, dt)."""
    kernel, count = _form(spec, kernel, "depthwise", per_image=True)
    return _run_native(kernel, spec, dt, (x, w, bias), out, spec.output_shape,
                       lambda lo, hi: (lo, hi, spec.groups, spec.k_per_group), count)


def depthwise_wgrad_native(x, grad_output, spec: ConvSpec, dt, out=None, kernel=None) -> np.ndarray:
    """dL/dw (spec.weight_shape) of a depthwise `spec` from its input and
    grad_output, through the compiled kernel: deterministic (a fixed summation
    order, each plane's lanes summed in double).  `kernel`: 'depthwise_wgrad'
    or 'depthwise_wgrad_lanes' (default: as depthwise_kernel(spec) chooses).
    Needs native_depthwise_ok(spec, dt, 'depthwise_wgrad')."""
    kernel, count = _form(spec, kernel, "depthwise_wgrad", per_image=False)
    return _run_native(kernel, spec, dt, (x, grad_output), out, spec.weight_shape,
                       lambda lo, hi: (spec.n, lo, hi, spec.groups, spec.k_per_group), count)


def depthwise_dgrad_native(grad_output, w, spec: ConvSpec, dt, out=None, kernel=None) -> np.ndarray:
    """dL/dx (spec.input_shape) of a depthwise `spec` from grad_output and the
    weight, through the compiled kernel: the adjoint of depthwise_native, so also
    the transposed convolution.  `kernel`: 'depthwise_dgrad' or
    'depthwise_dgrad_lanes' (default: as depthwise_kernel(spec) chooses).
    Needs native_depthwise_ok(spec, dt, 'depthwise_dgrad') and zero padding (the
    kernel is the adjoint of zero padding only)."""
    if spec.padding_mode != "zeros":
        raise ValueError(f"depthwise_dgrad_native: the input gradient is the adjoint of zero "
                         f"padding; got padding_mode={spec.padding_mode!r}")
    kernel, count = _form(spec, kernel, "depthwise_dgrad", per_image=True)
    return _run_native(kernel, spec, dt, (grad_output, w), out, spec.input_shape,
                       lambda lo, hi: (lo, hi, spec.groups, spec.k_per_group), count)


def _conv_one_channel_per_group(x, w, spec: ConvSpec, dt) -> np.ndarray:
    """groups == C (depthwise, multiplier Kg): one multiply-add per kernel tap."""
    if all(st == 1 for st in spec.stride):
        return _depthwise_flat(x, w, spec, dt)
    return _depthwise_strided(x, w, spec, dt)


def _depthwise_flat(x, w, spec: ConvSpec, dt) -> np.ndarray:
    """Stride-1 depthwise as 1-D passes over a slab of channels.

    A job owns a slab of channels for a block of images.  Per image it copies
    the slab into a padded buffer (the padding, fused and threaded: a zeros
    border written once per job, another mode's border gathered per image by
    its index map), whose channels lie end to end: output (p, q) of channel c sits
    at c*Hp*Wp + p*Wp + q and tap (r, s) reads the run shifted by r*dh*Wp + s*dw,
    so every tap is ONE contiguous multiply and ONE add over the whole slab
    (channel boundaries, the Wp - Q columns and the Hp - P rows are junk,
    computed and dropped: 7% extra at 56x56, 3x3).  The per-channel weight is a
    tile of the slab's length, built once per job and reused for its images:
    a (gb, 1) broadcast weight makes NumPy call its inner loop once per channel
    (measured 3.8-4.2 Gelem/s against 8-9 for same-shape contiguous operands,
    float32, 3300-element rows).  The last add writes the cropped result
    straight into the output.  Slabs of 2^17 padded elements per job: smaller
    ones hand the GIL back and forth (2^14: 3x slower).  The floor is NumPy
    itself: 17 passes at ~4.3 Gelem/s, ~7.5 ms on 8x128x56x56 (the compiled
    kernel of gpuconv._native takes ~1.5 ms); this form is its fallback."""
    n, g, kg, nd = spec.n, spec.groups, spec.k_per_group, spec.nd
    padded = tuple(i + lo + hi for i, (lo, hi) in zip(spec.in_size, spec.pad))
    gsize = math.prod(padded)
    pstride = [math.prod(padded[i + 1:]) for i in range(nd)]
    offsets = [sum(t * d * ps for t, d, ps in zip(tap, spec.dilation, pstride))
               for tap in np.ndindex(*spec.kernel)]
    tail = max(offsets)
    starts = tuple(-lo for lo, _ in spec.pad)
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
            fill_extended(xgrid, x[ni, g0:g1], starts, (1,) * nd, spec.padding_mode,
                          border_zeroed=True)
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
    slabs of one image, the taps read through strided views of the slab's padded
    copy (filled in spec.padding_mode; never a padded copy of the whole input)."""
    n, g, kg, nd = spec.n, spec.groups, spec.k_per_group, spec.nd
    padded = tuple(i + lo + hi for i, (lo, hi) in zip(spec.in_size, spec.pad))
    starts = tuple(-lo for lo, _ in spec.pad)
    wk = w.reshape((g, kg) + spec.kernel)
    taps = [(tap, _tap_slices(tap, spec)) for tap in np.ndindex(*spec.kernel)]
    work = np.empty((n, g, kg) + spec.out_size, dtype=dt)
    per_group = max(kg * work[0, 0, 0].size, math.prod(padded))
    gb = max(1, min(g, _DEPTHWISE_SLAB_ELEMS // max(per_group, 1)))

    def slab(ni, g0, g1):
        o = work[ni, g0:g1]                                   # (gb, kg, *out)
        buf = np.empty((g1 - g0,) + padded, dtype=dt)
        fill_extended(buf, x[ni, g0:g1], starts, (1,) * nd, spec.padding_mode)
        src = buf[:, None]                                    # (gb, 1, *padded)
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
