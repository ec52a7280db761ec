"""FFT convolution: scipy's signal core and the three operators of a ConvSpec.

One code path for every array namespace: NumPy arrays transform with scipy.fft
(``workers=`` = the cores this process may use; numpy.fft when SciPy is not
installed), CuPy arrays with cupy.fft (cuFFT), any other namespace with its
``xp.fft``.  Nothing below branches on the device except that choice of module
and the cost model's constants, so the CPU tests run every line the GPU runs.

    correlate_core_fft(a, k, out_shape, origin, boundary, fillvalue, xp)
        gpuconv.signal's core contract (see its module docstring):
        out[i, j] = sum_{r,s} ext(a)[i + origin0 + r, j + origin1 + s] * k[r, s].
    fprop(x, w, spec, xp), dgrad(dy, w, spec, xp), wgrad(x, dy, spec, xp)
        gpuconv.reference's conv/dgrad/wgrad of a ConvSpec (no bias), in
        reference.compute_dtype(spec.dtype).
    choose_method(...), conv_cost_model(spec, ...)
        the cost models behind method="auto" / algorithm="auto".

Method.  A correlation out[p] = sum_t A[p + o + t] B[t] (A zero outside its
array) is, per axis, a circular convolution of A with the flipped B of length
L read at (p + o + len(B) - 1) mod L.  The smallest L that aliases no needed
output is max(len(A) - o, o + Q + len(B) - 1, len(A), len(B)) (Q outputs), so
'valid' transforms len(A), not len(A) + len(B) - 1 as scipy.signal.fftconvolve
does; L is rounded up to a 7-smooth length (2^a 3^b 5^c 7^d: fast in pocketfft
and cuFFT).  Real inputs use rfftn/irfftn, complex ones fftn/ifftn.

Boundaries of the signal core:
  * 'fill': A = the part of `a` the outputs read, minus fillvalue (when an
    output reads outside `a`), zero-extended; fillvalue * sum(k) added back.
    One transform no larger than a zero fill's, whatever the fillvalue.
  * 'wrap': ext(a) is periodic with period M, so per axis either a circular
    transform of exactly length M (the kernel folded modulo M: kernels longer
    than the image work) or the explicit extension of the rows the outputs read
    (Q + kh - 1, zero-extended, 7-smooth length), whichever the FFT cost
    model finds cheaper (a prime M costs a Bluestein transform, ~4x).
  * 'symm': ext(a) is periodic with period 2M and one period is [a, a[::-1]]
    (the reflected extension): the same two choices with period 2M.
Integer inputs never take this path (the direct core is exact, as scipy is);
correlate_core_fft raises TypeError for them.

Convolutions: per-channel real FFTs of input and (dilated, embedded) kernel, a
per-frequency contraction over the channels of each group (a batched complex
matmul: (groups, bins) batches of (N x C/g) @ (C/g x K/g) on BLAS / cuBLAS),
one inverse FFT per output plane, crop.  Stride s by one of two forms:
  * "subsample": the stride-1 correlation, every s-th output kept;
  * "polyphase": input and kernel split into s^nd phases that become extra
    channels (x_ph[m] = xpad[m*s + ph], w_ph[v] = wd[v*s + ph]): transforms
    s^nd times smaller per plane, s^nd times fewer output samples, the same
    forward work and contraction FLOPs; phases of a dilated kernel that hold no
    tap (ph not = r*d mod s) are dropped.
conv_cost_model prices both and picks.  A padding mode other than zeros
(spec.padding_mode) is resolved where the input is copied anyway: in the
spatial-first copy of each block of images for the transform (subsample), in
the phase split (polyphase), the border gathered through the mode's index map
(reference.fill_extended); the input is never padded as a whole.  dgrad always uses the polyphase form
(the zero-upsampled dy of the other form has s^nd more forward work and the
same rest) and wgrad too (the phases of x against dy, summed over the batch).

Accuracy.  A floating-point FFT convolution has an error that scales with the
largest terms, not with each output: per output
    |fft - exact| <~ c * eps * log2(L) * max|ext(a)| * sum|k|       (signal)
    |fft - exact| <~ c * eps * log2(L) * max|x| * max_k sum_{c,t} |w[k, c, t]|  (fprop)
    (dgrad: max|dy| * max_c sum_{k,t} |w|; wgrad: max|x| * max_k sum_{n,o} |dy|)
(L the transform size in elements, eps the compute dtype's: 1.2e-7 float32,
2.2e-16 float64; c measured at most 0.09 over 120 random signal cases, half
of them spanning 1e-6..1e6, float32/float64/complex64).  The direct sum's error is bounded by each output's own
eps * kh*kw * sum|ext(a)||k|, so an output much smaller than the largest terms
(cancellation, or a dim region of a high-dynamic-range image) is exact to
fewer digits here than with the direct method.  tests/test_fft.py holds
|fft - reference| <= 4 * eps * log2(L) * max|ext(a)| * sum|k| (+ the
fillvalue term) on random data, including images spanning 1e-6..1e6.
fillvalue must be finite for method="fft" (one inf or nan spreads over every
output of an FFT, as in scipy.signal.fftconvolve); "auto" picks direct then.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from itertools import product

import numpy as np

from .reference import fill_extended
from .spec import ConvSpec

__all__ = ["correlate_core_fft", "choose_method", "signal_costs", "fprop", "dgrad", "wgrad",
           "conv_cost_model", "FFTCost", "fast_length", "fft_backend"]

# scipy.fft also transforms long double (numpy.fft and cupy.fft do not: on those
# namespaces long double is refused by the transform itself).
FFT_DTYPES = tuple(dict.fromkeys(np.dtype(t) for t in (np.float32, np.float64, np.longdouble,
                                                       np.complex64, np.complex128, np.clongdouble)))
BOUNDARIES = ("fill", "wrap", "symm")
STRIDE_FORMS = ("subsample", "polyphase")


# ----------------------------------------------------------------------------
# namespaces and transform lengths
# ----------------------------------------------------------------------------

def namespace_of(a):
    """numpy for NumPy arrays, cupy for CuPy arrays, else a.__array_namespace__()."""
    if isinstance(a, np.ndarray):
        return np
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy
        return cupy
    return a.__array_namespace__()


def fft_backend(xp):
    """(module, keyword arguments) of the FFT for array namespace `xp`:
    scipy.fft with workers= on NumPy (numpy.fft without SciPy), cupy.fft on
    CuPy, xp.fft otherwise (the array API's fft extension)."""
    name = getattr(xp, "__name__", "")
    if name == "numpy":
        try:
            import scipy.fft as sfft
        except ImportError:
            return np.fft, {}
        from ._cpu import n_threads
        return sfft, {"workers": n_threads()}
    if name == "cupy":
        import cupy.fft
        return cupy.fft, {}
    return xp.fft, {}


def _smooth(n: int, primes=(2, 3, 5, 7)) -> bool:
    for p in primes:
        while n % p == 0:
            n //= p
    return n == 1


@functools.lru_cache(maxsize=4096)
def fast_length(n: int) -> int:
    """The smallest 7-smooth integer >= n (2^a 3^b 5^c 7^d): cuFFT's and pocketfft's
    fast sizes.  Pure Python, so the CPU and GPU paths pick the same lengths."""
    n = max(int(n), 1)
    best = 1 << (n - 1).bit_length()
    p7 = 1
    while p7 < best:
        p5 = p7
        while p5 < best:
            p3 = p5
            while p3 < best:
                m = p3
                while m < n:
                    m *= 2
                best = min(best, m)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


# Relative time of one transform of length n versus a 7-smooth length: a
# non-smooth length runs Bluestein's algorithm (three transforms of a smooth
# length >= 2n).  Measured with scipy.fft on this machine (2 cores, complex128,
# 2048 rows): length 1009 (prime) 4.1x the time of 1008; cuFFT has the same
# structure (MEASURE on a GPU).
_BLUESTEIN_FACTOR = 4.0


def _fft_cost(n: int) -> float:
    """Cost of a length-n transform in units of n*log2(n) of a smooth length."""
    c = n * max(math.log2(n), 1.0)
    return c if _smooth(n) else _BLUESTEIN_FACTOR * c


def zero_plan(la: int, lb: int, origin: int, q: int) -> tuple[int, int]:
    """(L, w0) for out[p] = sum_t A[p + origin + t] B[t], p < q, A of length la zero
    outside, B of length lb: the 7-smooth transform length that aliases no needed
    output, and where output 0 sits in the circular convolution of A and flip(B)."""
    need = max(la - origin, origin + q + lb - 1, la, lb, 1)
    return fast_length(need), origin + lb - 1


# ----------------------------------------------------------------------------
# spectra
# ----------------------------------------------------------------------------

class _Transforms:
    """Forward and inverse transforms over the LEADING nd axes at lengths Ls, and the
    crop back to the outputs (w0s, qs).

    Spatial axes lead and channels trail, so a transform's output is already
    frequency-major: (*bins, groups, rows, cols) is a stack of contiguous
    matrices for the per-frequency GEMM, with no transpose of the spectra.
    (Measured: transposing channel-first spectra to that layout ran at ~0.3 GB/s
    and cost 5-10x the GEMM itself; transforms over leading axes run within
    +-30% of last-axes ones in scipy.fft.)"""

    def __init__(self, xp, real: bool, Ls, w0s, qs):
        self.xp = xp
        self.fft, self.kw = fft_backend(xp)
        self.real = real
        self.Ls = tuple(int(L) for L in Ls)
        self.w0s = tuple(int(w) for w in w0s)
        self.qs = tuple(int(q) for q in qs)
        self.axes = tuple(range(len(self.Ls)))

    @property
    def bins(self) -> tuple[int, ...]:
        if self.real:
            return self.Ls[:-1] + (self.Ls[-1] // 2 + 1,)
        return self.Ls

    # One axis at a time, each padded only when it is transformed: the last spatial
    # axis runs over the input's own rows (not the zero rows padding adds), and the
    # inverse crops each axis before the next.  rfftn/irfftn pad everything first;
    # measured (scipy.fft, 2 cores): a 31x31 kernel to 540x540 10.5 -> 3.1 ms, a
    # 512x512 image 11.1 -> 4.9 ms, 192 kernels 31x31 1.94 -> 1.04 s.
    def forward(self, arr, flip=False):
        nd = len(self.Ls)
        if flip:
            arr = arr[(slice(None, None, -1),) * nd]
        f = self.fft.rfft if self.real else self.fft.fft
        y = f(arr, n=self.Ls[-1], axis=nd - 1, **self.kw)
        for ax in reversed(range(nd - 1)):
            y = self.fft.fft(y, n=self.Ls[ax], axis=ax, **self.kw)
        return y

    def inverse(self, spec):
        nd = len(self.Ls)
        c = spec
        for ax in range(nd - 1):
            c = self.fft.ifft(c, n=self.Ls[ax], axis=ax, **self.kw)
            c = crop_circular(self.xp, c, self.Ls[ax:ax + 1], self.w0s[ax:ax + 1],
                              self.qs[ax:ax + 1], first_axis=ax)
        f = self.fft.irfft if self.real else self.fft.ifft
        c = f(c, n=self.Ls[-1], axis=nd - 1, **self.kw)
        return crop_circular(self.xp, c, self.Ls[-1:], self.w0s[-1:], self.qs[-1:], first_axis=nd - 1)


def crop_circular(xp, c, Ls, w0s, qs, first_axis=0):
    """c[(w0 + p) mod L, ...] for p < q along axes first_axis, first_axis + 1, ...
    (a slice where that does not wrap, a gather where it does)."""
    for i, (L, w0, q) in enumerate(zip(Ls, w0s, qs)):
        axis = first_axis + i
        w0 %= L
        if w0 + q <= L:
            c = c[(slice(None),) * axis + (slice(w0, w0 + q),)]
        else:
            c = xp.take(c, (w0 + xp.arange(q)) % L, axis=axis)
    return c


def freq_matmul(xp, A, B):
    """C[..., m, n] = sum_k A[..., m, k] * B[..., k, n]: one batched complex GEMM over
    the leading (bins, groups) axes; an outer product when k == 1 (depthwise)."""
    if A.shape[-1] == 1:
        return A * B
    return xp.matmul(A, B)


def _spatial_first(xp, a, nd: int, order):
    """(*spatial, ...) contiguous copy of a channels-first array: `order` lists the
    non-spatial axes in the wanted order."""
    lead = a.ndim - nd
    return xp.ascontiguousarray(a.transpose(tuple(range(lead, a.ndim)) + tuple(order)))


# ----------------------------------------------------------------------------
# the signal core
# ----------------------------------------------------------------------------

def _check_fft_dtype(dt, who):
    dt = np.dtype(dt)
    if dt.kind in "iub":
        raise TypeError(f"{who}: integer dtype {dt} has no FFT path (the direct method is exact, "
                        f"as scipy's is); use method='direct'")
    if dt not in FFT_DTYPES:
        raise TypeError(f"{who}: dtype {dt} is not supported by the FFT path "
                        f"(supported: {', '.join(str(d) for d in FFT_DTYPES)})")
    return dt


def _ext_index(xp, t, m: int, boundary: str):
    """ext(a)'s index into a for integer positions t along an axis of length m."""
    if boundary == "wrap":
        return t % m
    u = t % (2 * m)
    return xp.where(u < m, u, 2 * m - 1 - u)


def _fold(xp, k, axis: int, period: int):
    """k summed modulo `period` along `axis` (a circular kernel of that length)."""
    kk = k.shape[axis]
    if kk <= period:
        return k
    reps = -(-kk // period)
    pad_shape = list(k.shape)
    pad_shape[axis] = reps * period - kk
    k = xp.concatenate([k, xp.zeros(tuple(pad_shape), dtype=k.dtype)], axis=axis)
    shape = k.shape[:axis] + (reps, period) + k.shape[axis + 1:]
    return k.reshape(shape).sum(axis=axis)


def periodic_axis_choice(m: int, kk: int, q: int, boundary: str) -> str:
    """'circular' (one period, exact length) or 'linear' (the explicit extension)
    for a 'wrap'/'symm' axis: the cheaper transform by _fft_cost."""
    period = m if boundary == "wrap" else 2 * m
    return "circular" if _fft_cost(period) <= _fft_cost(fast_length(q + kk - 1)) else "linear"


def correlate_core_fft(a, k, out_shape, origin, boundary, fillvalue, xp=None):
    """The signal core by FFT: out[i, j] = sum_{r,s} ext(a)[i + o0 + r, j + o1 + s] * k[r, s].

    Parameters as gpuconv.signal.correlate_core (`a` (M, N) and `k` (kh, kw) in
    one dtype: float32/64 or complex64/128; `k` already flipped or conjugated),
    plus `xp`, the array namespace (default: `a`'s).  Every boundary works for
    every size: 'fill' with any finite fillvalue, 'wrap' and 'symm' also with
    kernels longer than the image.  Returns a new array of `out_shape`, a.dtype.

    Raises TypeError for integer or other dtypes and mismatched dtypes,
    ValueError for an unknown boundary, a non-finite fillvalue, or an empty `a`
    that 'wrap'/'symm' would have to extend.
    """
    xp = namespace_of(a) if xp is None else xp
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if a.ndim != 2 or k.ndim != 2:
        raise ValueError(f"correlate_core_fft takes 2-D arrays, got {a.ndim}-D and {k.ndim}-D")
    dt = _check_fft_dtype(a.dtype, "correlate_core_fft")
    if np.dtype(k.dtype) != dt:
        raise TypeError(f"a ({a.dtype}) and k ({k.dtype}) must share one dtype")
    out_shape = tuple(int(s) for s in out_shape)
    origin = tuple(int(o) for o in origin)
    if 0 in out_shape or 0 in k.shape:
        return xp.zeros(out_shape, dtype=dt)
    if boundary != "fill" and 0 in a.shape:
        raise ValueError(f"boundary={boundary!r} cannot extend an empty image of shape {a.shape}")
    real = dt.kind == "f"

    if boundary == "fill":
        fill = np.asarray(fillvalue).astype(dt)[()]
        if not np.isfinite(fill):
            raise ValueError(f"fillvalue={fillvalue!r} is not finite: an FFT would spread it over "
                             f"every output; use method='direct'")
        # rows/cols the outputs read: [o, o + q + kk - 1) per axis, cut to a
        lo = [max(o, 0) for o in origin]
        hi = [min(o + q + kk - 1, m) for o, q, kk, m in zip(origin, out_shape, k.shape, a.shape)]
        outside = any(o < 0 or o + q + kk - 1 > m
                      for o, q, kk, m in zip(origin, out_shape, k.shape, a.shape))
        shift = outside and fill != 0
        ksum = k.sum() * fill if shift else None
        if any(l >= h for l, h in zip(lo, hi)):      # every tap reads fillvalue
            return xp.zeros(out_shape, dtype=dt) + (k.sum() * fill).astype(dt)
        A = a[lo[0]:hi[0], lo[1]:hi[1]]
        if shift:
            A = A - fill
        plans = [zero_plan(la, kk, o - l, q)
                 for la, kk, o, l, q in zip(A.shape, k.shape, origin, lo, out_shape)]
        B = k
    else:
        A, B, plans = a, k, []
        for axis in range(2):
            m, kk, o, q = a.shape[axis], k.shape[axis], origin[axis], out_shape[axis]
            if periodic_axis_choice(m, kk, q, boundary) == "circular":
                if boundary == "symm":
                    A = xp.concatenate([A, xp.flip(A, axis=axis)], axis=axis)
                period = A.shape[axis]
                B = _fold(xp, B, axis, period)
                plans.append((period, o + B.shape[axis] - 1))
            else:
                idx = _ext_index(xp, xp.arange(o, o + q + kk - 1), m, boundary)
                A = xp.take(A, idx, axis=axis)
                plans.append(zero_plan(A.shape[axis], kk, 0, q))
        shift = False
    tr = _Transforms(xp, real, [L for L, _ in plans], [w for _, w in plans], out_shape)
    out = tr.inverse(tr.forward(A) * tr.forward(B, flip=True))
    if shift:
        out = out + ksum
    return xp.ascontiguousarray(out.astype(dt, copy=False))


# ----------------------------------------------------------------------------
# the cost models
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceConstants:
    """Seconds per unit of work in double precision (single: half), for the cost models.

    fft_s: per element * log2(transform length) of a real-to-complex transform
        (complex transforms cost 2x), batched over many planes.
    cmac_s: per complex multiply-add of the per-frequency channel contraction.
    elem_s: per complex bin of the element-wise product of two spectra (signal).
    tap_s: per output per kernel tap of the direct signal core (complex: 3x).
    conv_flops: FLOP/s of the direct convolution path's GEMM, float32 (float64 half).
    copy_bps: bytes/s of the direct path's im2col lowering (written, then read).
    fixed_s: per-call overhead of the FFT path beyond the model.
    """
    fft_s: float
    cmac_s: float
    elem_s: float
    tap_s: float
    conv_flops: float
    copy_bps: float
    fixed_s: float


# Measured on this machine (AMD EPYC, 2 cores shared with other jobs: load average
# 6-15 while measuring, so every figure is a loaded-machine figure), float64
# unless noted:
#   fft_s: scipy.fft rfftn workers=2 of 64 planes 512x512 and 8 of 1024x1024:
#          1.6-1.9 ns per element*log2 (float32 0.64-0.79 ns, half of it);
#   cmac_s: numpy matmul over 1024 bins of (8x64)@(64x64): 0.85 ns per complex
#          MAC (complex64 0.55 ns);
#   elem_s: spectra product 1.4 ns per bin (complex64 0.6);
#   tap_s: gpuconv.signal's tap loop on 2048^2 'same' 9x9: 2.7 ns per output per
#          tap (float32 1.0, complex128 7.5, complex64 4.7).
# The direct conv path is NOT taken from the loaded machine: there it ran at 1-5
# GFLOP/s (its im2col and BLAS threads suffer most from sharing 2 cores), while
# the committed idle-machine CPU bench (bench/results/2026-11-24-*) measured 142
# GFLOP/s on 8x64x56x56 3x3 and the copy ceiling at 37 GB/s.  conv_flops = 60e9
# (im2col + GEMM, without Winograd) and copy_bps = 37e9 are those idle figures,
# so on an idle machine "auto" errs towards the direct path (the FFT constants
# above overestimate idle FFT time), and on a loaded one the FFT wins earlier
# than the model says (bench/fft_bench.py's sweeps).
CPU_CONSTANTS = DeviceConstants(fft_s=1.6e-9, cmac_s=0.85e-9, elem_s=1.4e-9, tap_s=2.7e-9,
                                conv_flops=60e9, copy_bps=37e9, fixed_s=2e-4)
# H200 napkin math, not measured (MEASURE): cuFFT is memory bound at ~4.8 TB/s,
# ~3 passes of 8-16 B per element per transform -> ~1e-12 s per element*log2 at
# log2 ~ 20; cuBLAS ZGEMM batches at ~30 TFLOP/s -> 2.7e-13 s per complex MAC;
# signal2d's tiled kernel at ~30% of 67 TFLOP/s -> 1e-13 s per tap; im2col /
# implicit GEMM at ~40 TFLOP/s fp32 on large kernels, lowering at ~3 TB/s;
# ~20 us of launches per call.
GPU_CONSTANTS = DeviceConstants(fft_s=1e-12, cmac_s=2.7e-13, elem_s=3e-12, tap_s=1e-13,
                                conv_flops=40e12, copy_bps=3e12, fixed_s=2e-5)


def _constants(device: str) -> DeviceConstants:
    if device in ("cpu", "numpy"):
        return CPU_CONSTANTS
    if device in ("gpu", "cuda", "cupy"):
        return GPU_CONSTANTS
    raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")


def _precision(dtype) -> float:
    """Cost scale of a dtype's precision: 1 for double, 0.5 for single."""
    return 0.5 if np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.complex64),
                                      np.dtype(np.float16)) else 1.0


def _transform_s(Ls, groups, real: bool, c: DeviceConstants) -> float:
    """Seconds of the transforms of `groups`, (planes, extent) pairs: `extent` per
    axis is what a forward transform reads before padding (or what an inverse
    keeps after its crop).  Axis by axis as _Transforms runs them: the last axis
    over prod(extent[:-1]) real rows, then axis i over prod(extent[:i]) *
    prod(L[i+1:-1]) * bins_last complex rows (a complex row costs 2 real ones)."""
    nd = len(Ls)
    last = Ls[-1] // 2 + 1 if real else Ls[-1]
    total = 0.0
    for planes, extent in groups:
        e = [min(int(x), L) for x, L in zip(extent, Ls)]
        t = math.prod(e[:-1]) * _fft_cost(Ls[-1]) * (1.0 if real else 2.0)
        for i in range(nd - 1):
            t += 2.0 * math.prod(e[:i]) * math.prod(Ls[i + 1:-1]) * last * _fft_cost(Ls[i])
        total += planes * t
    return c.fft_s * total


def _bins(Ls, real: bool) -> int:
    return math.prod(Ls[:-1]) * (Ls[-1] // 2 + 1) if real else math.prod(Ls)


def signal_plan(a_shape, k_shape, out_shape, origin, boundary):
    """Per-axis transform lengths the FFT core would use."""
    Ls = []
    for axis in range(2):
        m, kk, o, q = a_shape[axis], k_shape[axis], origin[axis], out_shape[axis]
        if boundary == "fill":
            lo, hi = max(o, 0), min(o + q + kk - 1, m)
            Ls.append(zero_plan(max(hi - lo, 0), kk, o - lo, q)[0])
        elif periodic_axis_choice(m, kk, q, boundary) == "circular":
            Ls.append(m if boundary == "wrap" else 2 * m)
        else:
            Ls.append(fast_length(q + kk - 1))
    return Ls


def signal_costs(a_shape, k_shape, out_shape, origin, boundary, dtype, device="cpu"):
    """(direct seconds, FFT seconds) estimated for the signal core on `device`.

    direct = tap_s * H*W * kh*kw (x3 complex);
    fft = fft_s * (image, kernel and inverse transforms, axis by axis as run:
          rows * L * log2 L per pass, x2 complex rows, x4 for a non-7-smooth
          length; see _transform_s) + elem_s * bins + fixed_s;
    both x0.5 in single precision.
    """
    c = _constants(device)
    dt = np.dtype(dtype)
    real = dt.kind != "c"
    scale = _precision(dt)
    direct = scale * c.tap_s * math.prod(out_shape) * math.prod(k_shape) * (1.0 if real else 3.0)
    Ls = signal_plan(a_shape, k_shape, out_shape, origin, boundary)
    groups = [(1, a_shape), (1, k_shape), (1, out_shape)]
    fft = scale * (_transform_s(Ls, groups, real, c) + c.elem_s * _bins(Ls, real)) + c.fixed_s
    return direct, fft


def choose_method(a_shape, k_shape, out_shape, origin, boundary, dtype, device="cpu",
                  fillvalue=0) -> str:
    """'direct' or 'fft' for the signal core, in the spirit of
    scipy.signal.choose_conv_method: integers (and bool) always 'direct' (exact);
    a non-finite fillvalue read by an output 'direct' (an FFT spreads it);
    otherwise the cheaper of signal_costs' two estimates.

    Where it switches (boundary 'fill', mode 'same', square image and kernel):
    float64 and float32 at 6x6 (images 128^2-1024^2) or 7x7 (4096^2), complex
    at 5x5; 'wrap' at 6x6 (complex 4x4-5x5).  Measured on this (loaded) machine,
    512^2 float64 'same' (bench/fft_bench.py sweeps, two runs): direct 3-12 /
    6-25 / 13-50 / 19-62 ms and FFT 14-42 / 27-37 / 20-30 / 23-24 ms at 3x3 /
    5x5 / 7x7 / 9x9, and from 11x11 the FFT by 5x or more: the measured switch
    lies between 5x5 and 9x9, around the model's 7x7.
    """
    dt = np.dtype(dtype)
    if dt.kind not in "fc" or dt not in FFT_DTYPES:
        return "direct"
    if 0 in tuple(out_shape) or 0 in tuple(k_shape):
        return "direct"
    if boundary == "fill" and not np.isfinite(np.asarray(fillvalue).astype(np.complex128)):
        return "direct"
    direct, fft = signal_costs(a_shape, k_shape, out_shape, origin, boundary, dt, device)
    return "fft" if fft < direct else "direct"


# ----------------------------------------------------------------------------
# convolutions: geometry of the forms
# ----------------------------------------------------------------------------

def _dilated_extent(spec: ConvSpec):
    return tuple(d * (k - 1) + 1 for k, d in zip(spec.kernel, spec.dilation))


def _phases(spec: ConvSpec):
    """Per axis, the phases ph < stride that hold a tap of the dilated kernel (r*d mod s)."""
    return tuple(sorted({(r * d) % s for r in range(k)})
                 for k, d, s in zip(spec.kernel, spec.dilation, spec.stride))


def _phase_len(spec: ConvSpec):
    """Per axis, the length of one phase of the dilated kernel: ceil(kd / s)."""
    return tuple(-(-kd // s) for kd, s in zip(_dilated_extent(spec), spec.stride))


def _embed_dilated(xp, w, spec: ConvSpec):
    """(K, Cg, *kd) with w's taps at multiples of the dilation, zeros between."""
    if all(d == 1 for d in spec.dilation):
        return w
    wd = xp.zeros(w.shape[:2] + _dilated_extent(spec), dtype=w.dtype)
    wd[(slice(None),) * 2 + tuple(slice(None, None, d) for d in spec.dilation)] = w
    return wd


def _zero_window(xp, x, starts, lengths):
    """x[..., starts + arange(lengths)] along the last nd axes, zero outside x (a new
    array only where the window leaves x)."""
    nd = len(starts)
    sizes = x.shape[-nd:]
    if all(s >= 0 and s + L <= n for s, L, n in zip(starts, lengths, sizes)):
        return x[(Ellipsis,) + tuple(slice(s, s + L) for s, L in zip(starts, lengths))]
    out = xp.zeros(x.shape[:-nd] + tuple(lengths), dtype=x.dtype)
    src, dst = [], []
    for s, L, n in zip(starts, lengths, sizes):
        lo, hi = max(s, 0), min(s + L, n)
        if lo >= hi:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[(Ellipsis,) + tuple(dst)] = x[(Ellipsis,) + tuple(src)]
    return out


def _split_phases(xp, xpad, spec: ConvSpec, mlen):
    """(N, C * nph, *mlen) from a padded input: channel c*nph + j is phase j (row-major
    over the taps' phases) x_ph[m] = xpad[m*s + ph]."""
    phs = _phases(spec)
    parts = []
    for combo in product(*phs):
        sl = tuple(slice(ph, ph + s * m, s) for ph, s, m in zip(combo, spec.stride, mlen))
        parts.append(xpad[(slice(None),) * 2 + sl])
    st = xp.stack(parts, axis=2)                       # (N, C, nph, *mlen)
    return st.reshape((st.shape[0], st.shape[1] * st.shape[2]) + tuple(mlen))


def _input_phases(xp, x, spec: ConvSpec, mlen):
    """(N, C * nph, *mlen): phase j of the input padded in spec.padding_mode,
    x_ph[m] = xpad[m*s + ph] (channel c*nph + j, as _split_phases), gathered straight
    from x per phase (reference.fill_extended): the phase split is the only copy,
    with no padded copy of x before it."""
    phs = list(product(*_phases(spec)))
    pl = tuple(lo for lo, _ in spec.pad)
    out = xp.empty(x.shape[:2] + (len(phs),) + tuple(mlen), dtype=x.dtype)
    for j, combo in enumerate(phs):
        fill_extended(out[:, :, j], x, tuple(ph - p for ph, p in zip(combo, pl)), spec.stride,
                      spec.padding_mode, xp)
    return out.reshape((x.shape[0], x.shape[1] * len(phs)) + tuple(mlen))


def _kernel_phases(xp, wd, spec: ConvSpec):
    """(K, Cg * nph, *Lph): phase j of the dilated kernel, w_ph[v] = wd[v*s + ph],
    zero-padded to Lph = ceil(kd / s)."""
    lph = _phase_len(spec)
    kd = _dilated_extent(spec)
    full = tuple(l * s for l, s in zip(lph, spec.stride))
    if full != kd:
        wd = _zero_window(xp, wd, (0,) * spec.nd, full)
    return _split_phases(xp, wd, spec, lph)


# ----------------------------------------------------------------------------
# convolutions: the blocked spectral contraction
# ----------------------------------------------------------------------------

# Spectra held at once (inputs, kernels and products of one block), in bytes.
# 1 GiB keeps a 2-core, 23 GB machine far from swapping and is small next to a
# GPU's memory; blocks are cut over the batch and the output channels.
WORKSPACE_BYTES = 1 << 30


def _block(count: int, per_item: int, budget: int) -> int:
    return max(1, min(count, budget // max(per_item, 1)))


def _contract(xp, tr: _Transforms, get_a, get_b, g, m, kk, n, put, cdt):
    """For blocks of m and n: C[g, m, n] = sum_k A[g, m, k] B[g, k, n] per bin, then the
    inverse transform of each C plane handed to put(m0, m1, n0, n1, planes)."""
    nbins = math.prod(tr.bins)
    item = np.dtype(cdt).itemsize * nbins
    nb = _block(n, item * g * kk, WORKSPACE_BYTES // 3)
    mb = _block(m, item * g * (kk + nb), 2 * WORKSPACE_BYTES // 3)
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        B = get_b(n0, n1)                                   # (*bins, g, kk, nb)
        for m0 in range(0, m, mb):
            m1 = min(m, m0 + mb)
            C = freq_matmul(xp, get_a(m0, m1), B)           # (*bins, g, mb, nb)
            put(m0, m1, n0, n1, tr.inverse(C))              # (*q, g, mb, nb)


def _check_conv(spec: ConvSpec, who: str):
    from .reference import compute_dtype
    if np.dtype(spec.dtype).kind in "iub":
        raise TypeError(f"{who}: integer dtype {spec.dtype} has no FFT path (integers are "
                        f"computed exactly by the direct path)")
    dt = compute_dtype(spec.dtype)
    _check_fft_dtype(dt, who)
    return dt


def _fprop_unit(xp, x, wd, groups, origins, qs, dt, mode="zeros"):
    """y[n, g*Kg + k, p] = sum_{c,t} xe[n, g*Cg + c, p + origin + t] * wd[g*Kg + k, c, t],
    p < qs, xe = x extended by padding mode `mode` (zeros: 0 outside): the stride-1
    engine of every form.  A non-zero mode builds each block's spatial-first copy
    (made for the transform anyway) at the extent the outputs read, the border
    gathered by the mode's index map (reference.fill_extended): no padded copy
    of the whole input."""
    nd = len(qs)
    n, c = x.shape[:2]
    kout, cg = wd.shape[:2]
    kg = kout // groups
    extent = None
    if mode != "zeros":
        extent = tuple(q + lb - 1 for q, lb in zip(qs, wd.shape[2:]))
        plans = [zero_plan(e, lb, 0, q) for e, lb, q in zip(extent, wd.shape[2:], qs)]
    else:
        plans = [zero_plan(la, lb, o, q)
                 for la, lb, o, q in zip(x.shape[2:], wd.shape[2:], origins, qs)]
    tr = _Transforms(xp, dt.kind == "f", [L for L, _ in plans], [w for _, w in plans], qs)
    cdt = np.result_type(dt, np.complex64)
    out = xp.empty((n, kout) + tuple(qs), dtype=dt)
    ov = out.reshape((n, groups, kg) + tuple(qs))
    xs = x.reshape((n, groups, cg) + x.shape[2:])
    ws = wd.reshape((groups, kg, cg) + wd.shape[2:])

    def get_a(m0, m1):          # input spectra (*bins, g, mb, Cg)
        if extent is None:
            return tr.forward(_spatial_first(xp, xs[m0:m1], nd, (1, 0, 2)))
        buf = xp.empty(extent + (groups, m1 - m0, cg), dtype=x.dtype)
        view = buf.transpose((nd + 1, nd, nd + 2) + tuple(range(nd)))   # (mb, g, Cg, *extent)
        fill_extended(view, xs[m0:m1], origins, (1,) * nd, mode, xp)
        return tr.forward(buf)

    def get_b(n0, n1):          # kernel spectra (*bins, g, Cg, kb)
        return tr.forward(_spatial_first(xp, ws[:, n0:n1], nd, (0, 2, 1)), flip=True)

    def put(m0, m1, n0, n1, planes):   # planes (*q, g, mb, kb) -> (mb, g, kb, *q)
        ov[m0:m1, :, n0:n1] = planes.transpose((nd + 1, nd, nd + 2) + tuple(range(nd)))

    if n and kout and math.prod(qs):
        _contract(xp, tr, get_a, get_b, groups, n, cg, kg, put, cdt)
    else:
        out[...] = 0
    return out


def fprop(x, w, spec: ConvSpec, xp=None, form=None):
    """Forward convolution of `spec` by FFT (gpuconv.reference.conv without bias).

    x (N, C, *in), w (K, C/groups, *kernel); stride, per-side padding in
    spec.padding_mode (zeros, reflect, replicate, circular: the extension built in
    the copy each form makes anyway), dilation and groups as the spec says; 1-D,
    2-D or 3-D.  `form` picks the
    stride form ('subsample' or 'polyphase'; default: conv_cost_model's).
    Returns (N, K, *out) in reference.compute_dtype(spec.dtype) (float16 computes
    in float32).  TypeError for integer dtypes.
    """
    xp = namespace_of(x) if xp is None else xp
    dt = _check_conv(spec, "fft.fprop")
    x = x.astype(dt, copy=False)
    w = w.astype(dt, copy=False)
    wd = _embed_dilated(xp, w, spec)
    form = _stride_form(spec, form, _device_of(xp))
    pl = tuple(lo for lo, _ in spec.pad)
    if form == "subsample":
        qs = tuple((p - 1) * s + 1 for p, s in zip(spec.out_size, spec.stride))
        y = _fprop_unit(xp, x, wd, spec.groups, tuple(-p for p in pl), qs, dt, spec.padding_mode)
        if any(s > 1 for s in spec.stride):
            y = xp.ascontiguousarray(y[(slice(None),) * 2 + tuple(slice(None, None, s) for s in spec.stride)])
        return y
    lph = _phase_len(spec)
    mlen = tuple(p + l - 1 for p, l in zip(spec.out_size, lph))
    return _fprop_unit(xp, _input_phases(xp, x, spec, mlen), _kernel_phases(xp, wd, spec),
                       spec.groups, (0,) * spec.nd, spec.out_size, dt)


def dgrad(dy, w, spec: ConvSpec, xp=None):
    """dL/dx of `spec` by FFT (gpuconv.reference.dgrad; the transposed convolution).

    Each phase ph of the padded input gradient is a full convolution of dy with
    phase ph of the dilated kernel: dx_pad[m*s + ph] = sum_o dy[o] w_ph[m - o],
    i.e. the stride-1 engine on dy with the flipped phase kernels, channels
    transposed (K/g in, C/g * phases out).  Returns (N, C, *in), compute dtype.
    """
    xp = namespace_of(dy) if xp is None else xp
    dt = _check_conv(spec, "fft.dgrad")
    dy = dy.astype(dt, copy=False)
    w = w.astype(dt, copy=False)
    g, kg, cg, nd = spec.groups, spec.k_per_group, spec.c_per_group, spec.nd
    wph = _kernel_phases(xp, _embed_dilated(xp, w, spec), spec)      # (K, Cg*nph, *Lph)
    nph = wph.shape[1] // cg
    lph = wph.shape[2:]
    # transposed weight: (g * Cg * nph, Kg, *Lph), each phase kernel flipped
    wt = wph.reshape((g, kg, cg * nph) + lph)
    wt = xp.moveaxis(wt, 1, 2).reshape((g * cg * nph, kg) + lph)
    wt = wt[(Ellipsis,) + (slice(None, None, -1),) * nd]
    pl = tuple(lo for lo, _ in spec.pad)
    mlen = tuple(-(-(p + i) // s) for p, i, s in zip(pl, spec.in_size, spec.stride))
    res = _fprop_unit(xp, dy, wt, g, tuple(1 - l for l in lph), mlen, dt)   # (N, C*nph, *mlen)
    res = res.reshape((spec.n, spec.c, nph) + mlen)
    full = tuple(m * s for m, s in zip(mlen, spec.stride))
    if nph == math.prod(spec.stride):
        dxp = xp.empty((spec.n, spec.c) + full, dtype=dt)
    else:
        dxp = xp.zeros((spec.n, spec.c) + full, dtype=dt)
    for j, combo in enumerate(product(*_phases(spec))):
        dxp[(slice(None),) * 2 + tuple(slice(ph, None, s) for ph, s in zip(combo, spec.stride))] = res[:, :, j]
    crop = tuple(slice(p, p + i) for p, i in zip(pl, spec.in_size))
    return xp.ascontiguousarray(dxp[(slice(None),) * 2 + crop])


def wgrad(x, dy, spec: ConvSpec, xp=None):
    """dL/dw of `spec` by FFT (gpuconv.reference.wgrad).

    Tap u = v*s + ph of the dilated kernel: dwd[u] = sum_{n,o} dy[n, o] x_ph[n, o + v]
    with x_ph[m] = xpad[m*s + ph]: per frequency a (K/g x N) @ (N x C/g * phases)
    complex GEMM per group, one inverse transform per (k, c, phase), then the taps
    at multiples of the dilation.  Returns (K, C/groups, *kernel), compute dtype.
    """
    xp = namespace_of(x) if xp is None else xp
    dt = _check_conv(spec, "fft.wgrad")
    x = x.astype(dt, copy=False)
    dy = dy.astype(dt, copy=False)
    g, kg, cg, nd, n = spec.groups, spec.k_per_group, spec.c_per_group, spec.nd, spec.n
    lph = _phase_len(spec)
    P = spec.out_size
    mlen = tuple(p + l - 1 for p, l in zip(P, lph))
    xph = _input_phases(xp, x, spec, mlen)                            # (N, C*nph, *mlen)
    nph = xph.shape[1] // spec.c
    cph = cg * nph
    # dwd_ph[v] = sum_o x_ph[o + v] dy[o]: x_ph correlated with dy (dy the filter)
    plans = [zero_plan(m, p, 0, l) for m, p, l in zip(mlen, P, lph)]
    tr = _Transforms(xp, dt.kind == "f", [L for L, _ in plans], [w for _, w in plans], lph)
    cdt = np.result_type(dt, np.complex64)
    res = xp.empty((g, kg, cph) + lph, dtype=dt)
    xs = xph.reshape((n, g, cph) + mlen)
    dys = dy.reshape((n, g, kg) + P)

    def get_a(m0, m1):        # dy spectra (*bins, g, kb, N)
        return tr.forward(_spatial_first(xp, dys[:, :, m0:m1], nd, (1, 2, 0)), flip=True)

    def get_b(n0, n1):        # input-phase spectra (*bins, g, N, cb)
        return tr.forward(_spatial_first(xp, xs[:, :, n0:n1], nd, (1, 0, 2)))

    def put(m0, m1, n0, n1, planes):   # (*lph, g, kb, cb) -> (g, kb, cb, *lph)
        res[:, m0:m1, n0:n1] = planes.transpose((nd, nd + 1, nd + 2) + tuple(range(nd)))

    if n and math.prod(P):
        _contract(xp, tr, get_a, get_b, g, kg, n, cph, put, cdt)
    else:
        res[...] = 0
    res = res.reshape((spec.k, cg, nph) + lph)
    full = tuple(l * s for l, s in zip(lph, spec.stride))
    dwd = xp.zeros((spec.k, cg) + full, dtype=dt)
    for j, combo in enumerate(product(*_phases(spec))):
        dwd[(slice(None),) * 2 + tuple(slice(ph, None, s) for ph, s in zip(combo, spec.stride))] = res[:, :, j]
    taps = tuple(slice(0, (k - 1) * d + 1, d) for k, d in zip(spec.kernel, spec.dilation))
    return xp.ascontiguousarray(dwd[(slice(None),) * 2 + taps])


# ----------------------------------------------------------------------------
# convolutions: the cost model
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class FFTCost:
    """conv_cost_model's answer: use_fft (FFT estimated faster than the direct/im2col
    path), the two estimates in seconds, the stride form the FFT would use, its
    transform lengths, and the peak spectra bytes of one block."""
    use_fft: bool
    fft_s: float
    direct_s: float
    form: str
    lengths: tuple
    workspace_bytes: int
    reason: str

    def __bool__(self) -> bool:
        return self.use_fft


def _form_cost(spec: ConvSpec, op: str, form: str, c: DeviceConstants):
    """(seconds, lengths, spectra bytes) of one stride form of operator `op`."""
    real = np.dtype(spec.dtype).kind != "c"
    n, g, cg, kg = spec.n, spec.groups, spec.c_per_group, spec.k_per_group
    kd = _dilated_extent(spec)
    if form == "subsample":
        qs = tuple((p - 1) * s + 1 for p, s in zip(spec.out_size, spec.stride))
        if spec.padding_mode == "zeros" or op != "fprop":
            Ls = [zero_plan(i, k, -lo, q)[0] for i, k, (lo, _), q in zip(spec.in_size, kd, spec.pad, qs)]
            xe = spec.in_size
        else:          # a mode's border is data: the transform spans the extent the outputs read
            xe = tuple(q + k - 1 for q, k in zip(qs, kd))
            Ls = [zero_plan(e, k, 0, q)[0] for e, k, q in zip(xe, kd, qs)]
        nph, ke, ye = 1, kd, qs
    else:
        lph = _phase_len(spec)
        mlen = [p + l - 1 for p, l in zip(spec.out_size, lph)]
        Ls = [fast_length(m) for m in mlen]
        nph, xe, ke, ye = math.prod(len(p) for p in _phases(spec)), mlen, lph, spec.out_size
    cin, kin = cg * nph, kg
    # transforms (planes, extent): inputs, kernels, outputs of each operator
    if op == "fprop":
        groups = [(n * g * cin, xe), (g * kg * cin, ke), (n * g * kg, ye)]
    elif op == "dgrad":
        groups = [(n * g * kg, ye), (g * kg * cin, ke), (n * g * cin, xe)]
    else:
        groups = [(n * g * cin, xe), (n * g * kg, ye), (g * kg * cin, ke)]
    bins = _bins(Ls, real)
    macs = n * g * kin * cin * bins
    t = _precision(spec.dtype) * (_transform_s(Ls, groups, real, c) + c.cmac_s * macs) + c.fixed_s
    cbytes = np.dtype(np.result_type(spec.dtype, np.complex64)).itemsize
    ws = cbytes * bins * (n * g * cin + g * kg * cin + n * g * kg)
    return t, tuple(Ls), ws


def _device_of(xp) -> str:
    return "gpu" if getattr(xp, "__name__", "") == "cupy" else "cpu"


def _stride_form(spec: ConvSpec, form, device="cpu"):
    if form is None:
        if all(s == 1 for s in spec.stride):
            return "subsample"
        return conv_cost_model(spec, device=device).form
    if form not in STRIDE_FORMS:
        raise ValueError(f"form must be one of {STRIDE_FORMS}, got {form!r}")
    return form


def conv_cost_model(spec: ConvSpec, op: str = "fprop", device: str = "cpu") -> FFTCost:
    """Whether the FFT path beats the direct/im2col path for `op` of `spec`.

    direct_s = spec.flops / conv_flops + 2 * itemsize * N*C*taps*outputs / copy_bps
             (the GEMM, and the im2col column matrix written and read back);
    fft_s = fft_s * the transforms of inputs, kernels and outputs, axis by axis as
          run (rows * L * log2 L per pass; see _transform_s; x2 complex)
          + cmac_s * N * groups * (K/g) * (C/g * phases) * bins   (the contraction)
          + fixed_s,
    for the cheaper stride form (fprop: subsample or polyphase; dgrad/wgrad:
    polyphase).  Integer dtypes: never FFT.  Constants: CPU_CONSTANTS (measured
    here) or GPU_CONSTANTS (napkin math, MEASURE), see their comments.

    Where the model switches (float32, stride 1, padding 'same', square kernels):
    8x32x64x64 -> 32 at 7x7, 4x16x64x64 -> 16 at 9x9, 2x64x32x32 -> 128 at
    13x13, 1x3x224x224 -> 64 at 19x19, 32x64x56x56 -> 64 at 5x5, depthwise
    8x64x64x64 at 31x31 (its direct kernels have no column matrix to write).  On this shared machine under load the direct path ran
    far below its idle rate and the FFT measured faster from 3x3 up on
    4x16x64x64 -> 16 (bench/results/*fft*: the sweeps), so these switch points
    are the idle-machine side of the estimate.
    """
    from .spec import check_op
    check_op(op)
    c = _constants(device)
    # GEMM time (float64 at half the rate) plus the im2col lowering's column matrix,
    # written once and read once by the GEMM (N * C * taps * outputs elements)
    cols = spec.n * spec.c * math.prod(spec.kernel) * math.prod(spec.out_size)
    if spec.c_per_group == 1 and spec.groups > 1:
        cols = 0          # depthwise layers run compiled kernels, no column matrix
    direct = (spec.flops / c.conv_flops * 2 * _precision(spec.dtype)
              + 2 * cols * np.dtype(spec.dtype).itemsize / c.copy_bps)
    if np.dtype(spec.dtype).kind in "iub":
        return FFTCost(False, math.inf, direct, "subsample", (), 0, "integer dtype: exact direct path")
    if spec.flops == 0:
        return FFTCost(False, math.inf, direct, "subsample", (), 0, "empty problem")
    forms = ("subsample", "polyphase") if op == "fprop" else ("polyphase",)
    if all(s == 1 for s in spec.stride):
        forms = ("subsample",) if op == "fprop" else ("polyphase",)
    best = min((_form_cost(spec, op, f, c) + (f,) for f in forms), key=lambda t: t[0])
    t, Ls, ws, form = best
    use = t < direct
    reason = (f"FFT {t * 1e3:.3g} ms ({form}, lengths {Ls}) vs direct {direct * 1e3:.3g} ms "
              f"({spec.flops:.3g} FLOP at {c.conv_flops:.3g} FLOP/s)")
    return FFTCost(use, t, direct, form, Ls, ws, reason)
