"""convolve2d / correlate2d with scipy.signal's semantics.

Every call is validated and canonicalised here (scipy 1.17's rules, checked
against scipy/signal/_signaltools.py and _sigtoolsmodule.c / _firfilter.c) and
reduced to one core,

    correlate_core(a, k, out_shape, origin, boundary, fillvalue)

    out[i, j] = sum_{r, s} ext(a)[i + origin[0] + r, j + origin[1] + s] * k[r, s]

for 0 <= i < out_shape[0], 0 <= j < out_shape[1], r < kh, s < kw, computed in the
result dtype (integers wrap modulo 2**bits, as scipy's C loop does).  `a` (M, N)
and `k` (kh, kw) are already in the result dtype, `k` already flipped (convolve)
or conjugated (correlate).  ext(a)[t0, t1] extends `a` to every integer index:

    'fill': fillvalue outside 0 <= t0 < M, 0 <= t1 < N;
    'wrap': a[t0 mod M, t1 mod N];
    'symm': per axis u = t mod 2M, then u if u < M else 2M - 1 - u
            (half-sample symmetric, repeated periodically: ... 2 1 0 | 0 1 2 .. M-1 | M-1 ..
            0 | 0 1 ...).  This is exactly scipy's reflect_symm_index, so kernels
            longer than the input extend periodically as scipy's do.

NumPy arrays run on the CPU core below; CuPy arrays run
gpuconv.cuda.signal.correlate_core (same definition, same arguments, `fillvalue`
a NumPy scalar of the result dtype) on the array's device and current stream.
"""
from __future__ import annotations


import numpy as np

from . import engine
from ._array import convert, wrap
from ._cpu import run_jobs

_MODES = ("full", "same", "valid")
_METHODS = ("auto", "direct", "fft")
# scipy's _boundarydict; 'reflect' is in it but its C code refuses it.
_BOUNDARIES = {"fill": "fill", "pad": "fill", "wrap": "wrap", "circular": "wrap",
               "symm": "symm", "symmetric": "symm"}


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------

@engine.public("in1")
def convolve2d(in1, in2, mode="full", boundary="fill", fillvalue=0, method="auto"):
    """Convolve two 2-D arrays, with exactly scipy.signal.convolve2d's semantics.

    Parameters
    ----------
    in1 : array
        First input (numpy.ndarray, cupy.ndarray, torch.Tensor, or an array_like
        such as nested lists, which is treated as a NumPy array).
    in2 : array
        Second input, 2-D like `in1`, on the same device.  Either input may carry
        leading batch dimensions, (..., H, W) and (..., R, S), broadcast against
        each other by NumPy's rules: the result is (*batch, out_H, out_W), every
        image with the same mode and boundary (one kernel launch on the GPU).
        scipy takes 2-D inputs only; 2-D inputs behave exactly as scipy's.
    mode : {'full', 'valid', 'same'}, optional
        ``full``: the full discrete linear convolution (default).
        ``valid``: only the outputs that do not depend on the boundary; one input
        must be at least as large as the other in every dimension, and the
        larger one is used as the image (scipy's swap).
        ``same``: the size of `in1`, centred with respect to ``full``.
    boundary : {'fill', 'wrap', 'symm'}, optional
        ``fill`` (alias ``pad``): pad with `fillvalue` (default).
        ``wrap`` (alias ``circular``): periodic.
        ``symm`` (alias ``symmetric``): half-sample symmetric, repeated
        periodically for kernels longer than the input.
    fillvalue : scalar or one-element array, optional
        The value outside `in1` for ``boundary='fill'`` (ignored otherwise),
        converted to the result dtype by scipy's rules.  Default 0.
    method : {'auto', 'direct', 'fft'}, optional
        As scipy.signal.convolve's: ``direct`` sums every product; ``fft``
        multiplies spectra (gpuconv.fft: O(n log n), every boundary; its error
        scales with the largest values, ~eps * log2(n) * max|in1| * sum|in2|,
        not with each output); ``auto`` (default) picks the faster by
        gpuconv.fft.choose_method's cost model.  Integer inputs always take the
        exact direct sum.

    Returns
    -------
    out : array
        ``numpy.result_type(in1.dtype, in2.dtype)``; integers are exact (with
        wrap-around on overflow, as scipy).  Same array type and device as `in1`.

    Raises
    ------
    ValueError
        Where scipy raises it: inputs not 2-D, no input at least as large as the
        other in 'valid' mode, unknown mode or boundary, bad fillvalue, dtypes
        scipy does not support (bool, float16, object, ...).  Unlike scipy (which
        crashes), also for 'wrap'/'symm' on an empty `in1` that would be read.

    Notes
    -----
    NumPy inputs run on the CPU (vectorised, multi-threaded over row strips);
    CuPy inputs (and CUDA torch tensors) run on the GPU through
    ``gpuconv.cuda.signal.correlate_core``, on CuPy's current device and stream.

    Examples
    --------
    >>> import numpy as np, gpuconv
    >>> img = np.arange(1, 17).reshape(4, 4)
    >>> gpuconv.convolve2d(img, [[1, 1], [-1, -1]], mode="valid")
    array([[8, 8, 8],
           [8, 8, 8],
           [8, 8, 8]])
    """
    return _signal2d("convolve2d", True, in1, in2, mode, boundary, fillvalue, method)


@engine.public("in1")
def correlate2d(in1, in2, mode="full", boundary="fill", fillvalue=0, method="auto"):
    """Cross-correlate two 2-D arrays, with exactly scipy.signal.correlate2d's semantics.

    ``out[i, j] = sum ext(in1)[i + r + o0, j + s + o1] * conj(in2[r, s])``.
    Parameters, return value and errors as `convolve2d`.  In 'valid' mode with
    `in2` the larger input, the inputs are swapped and the result is reversed
    in both axes, as scipy does.  In 'same' mode with even kernel sizes the
    centre differs from `convolve2d`'s by one sample (scipy's convention).

    NumPy inputs run on the CPU; CuPy inputs on the GPU
    (``gpuconv.cuda.signal.correlate_core``).

    Examples
    --------
    >>> import numpy as np, gpuconv
    >>> img = np.arange(1, 17).reshape(4, 4)
    >>> gpuconv.correlate2d(img, [[1, 1], [-1, -1]], mode="valid")
    array([[-8, -8, -8],
           [-8, -8, -8],
           [-8, -8, -8]])
    """
    return _signal2d("correlate2d", False, in1, in2, mode, boundary, fillvalue, method)


# ----------------------------------------------------------------------------
# validation and canonicalisation
# ----------------------------------------------------------------------------

def _as_input(name, obj):
    # scipy calls np.asarray on anything: nested lists of objects become object
    # arrays, which then fail the dtype check below with scipy's ValueError.
    if isinstance(obj, (list, tuple)) or np.isscalar(obj):
        obj = np.asarray(obj)
    return convert(name, obj, allow_array_like=True)


# scipy's own words for a bad mode or boundary (_valfrommode / _bvalfromboundary),
# followed by the value that was passed.
_CHOICE_WORDS = {"mode": "Acceptable mode flags are 'valid', 'same', or 'full'.",
                 "boundary": "Acceptable boundary flags are 'fill', 'circular' (or 'wrap'), and "
                             "'symmetric' (or 'symm')."}


def _check_choice(name, value, allowed):
    words = _CHOICE_WORDS.get(name) or f"{name} must be one of {tuple(allowed)}."
    try:
        ok = value in frozenset(allowed)
    except TypeError:  # unhashable: scipy's dict lookup raises TypeError
        raise TypeError(f"{words} Got unhashable {type(value).__name__} "
                        f"{name}={value!r}") from None
    if not ok or not isinstance(value, str):
        raise ValueError(f"{words} Got {name}={value!r}")


def _result_dtype(fname, d1, d2):
    try:
        dt = np.result_type(d1, d2)
    except TypeError:
        dt = np.dtype(object)
    return dt if dt.isnative else dt.newbyteorder("=")


_SUPPORTED = "integers, float32, float64, longdouble and complex only"


def _check_input_dtypes(fname, named):
    """Inputs of a dtype with no arithmetic at all (object, datetime, str, void,
    bfloat16) are refused by name before anything is converted."""
    for name, dt in named:
        if dt.kind not in "biufc":
            raise ValueError(f"{fname} not available for this type: {name} has dtype {dt} "
                             f"(as in scipy: {_SUPPORTED})")


def _check_dtype(fname, dtype, named):
    # scipy's C loop has multiply-adds for the integer, float32/64/longdouble and
    # complex types only; bool, float16, object, str, datetime raise.
    if dtype.kind not in "iufc" or dtype == np.float16:
        inputs = " and ".join(f"{name} of dtype {dt}" for name, dt in named)
        raise ValueError(f"{fname} not available for this type: {dtype}, the result type of "
                         f"{inputs} (as in scipy: {_SUPPORTED})")


def _asarray_for_fill(obj, dtype):
    # PyArray_FromObject(obj, typenum, 0, 0) without FORCECAST: arrays must cast
    # safely; Python objects and NumPy scalars are assigned as np.asarray does.
    if isinstance(obj, np.ndarray):
        if not np.can_cast(obj.dtype, dtype, "safe"):
            raise TypeError(f"cannot cast {obj.dtype} to {dtype} safely")
        return obj.astype(dtype)
    return np.asarray(obj, dtype=dtype)


def fill_scalar(fillvalue, dtype):
    """`fillvalue` as a NumPy scalar of `dtype`, by scipy's rules.

    scipy first converts it directly to the result dtype; if that fails it
    converts through complex128 (emitting NumPy's ComplexWarning when the result
    dtype is real) and then raises ValueError anyway.  Empty and multi-element
    arrays raise ValueError.
    """
    if hasattr(fillvalue, "get") and hasattr(fillvalue, "__cuda_array_interface__"):
        fillvalue = fillvalue.get()          # a CuPy array: its one value, on the host
    try:
        afill = _asarray_for_fill(fillvalue, dtype)
    except Exception:  # noqa: BLE001 - scipy retries through complex whatever failed
        try:
            tmp = _asarray_for_fill(fillvalue, np.complex128)
        except ValueError as exc:
            raise ValueError(f"fillvalue={fillvalue!r}: {exc}") from None
        except TypeError as exc:
            raise TypeError(f"fillvalue={fillvalue!r}: {exc}") from None
        tmp.astype(dtype)                     # NumPy's warnings, as scipy's cast emits them
        raise ValueError(f"fillvalue={fillvalue!r}: could not cast `fillvalue` directly to the "
                         f"output type {dtype} (it was first converted to complex).") from None
    if afill.size != 1:
        if afill.size == 0:
            raise ValueError(f"`fillvalue` cannot be an empty array. Got fillvalue={fillvalue!r}")
        raise ValueError(f"`fillvalue` must be scalar or an array with one element. Got an array "
                         f"of shape {afill.shape}")
    return afill.reshape(())[()]


def _geometry(mode, flip, in_shape, k_shape):
    """Output shape and core origin for scipy's mode (after any valid-mode swap).

    From _firfilter.c: for correlation the image index of tap r is
    m + r - (kh-1) (full), m + r - (kh-1)//2 (same), m + r (valid); for
    convolution (tap r of the flipped kernel) m + r - (kh-1), m + r - kh//2, m + r.
    """
    if mode == "full":
        shape = tuple(n + k - 1 for n, k in zip(in_shape, k_shape))
        origin = tuple(-(k - 1) for k in k_shape)
    elif mode == "same":
        shape = tuple(in_shape)
        origin = tuple(-(k // 2) if flip else -((k - 1) // 2) for k in k_shape)
    else:
        shape = tuple(n - k + 1 for n, k in zip(in_shape, k_shape))
        origin = (0, 0)
    return shape, origin


def _signal2d(fname, flip, in1, in2, mode, boundary, fillvalue, method="auto"):
    _check_choice("method", method, _METHODS)
    c1 = _as_input("in1", in1)
    c2 = _as_input("in2", in2)
    path = engine.resolve({"in1": c1, "in2": c2})
    a, k, out_shape, origin, bnd, fill, swapped = canonicalize(
        fname, flip, c1.array, c2.array, mode, boundary, fillvalue)
    if 0 in out_shape or 0 in k.shape:
        # nothing to read: zeros (or an empty result), as scipy, on any path
        out = path.xp.zeros(out_shape, dtype=a.dtype)
    elif _method(method, a, k, out_shape, origin, bnd, fill, path) == "fft":
        from .fft import correlate_core_fft
        out = per_image(correlate_core_fft, a, k, out_shape, origin, bnd, fill, path.xp)
    else:
        out = engine.correlate(a, k, out_shape, origin, bnd, fill, path=path)
    if swapped and not flip:
        out = out[..., ::-1, ::-1]
    return wrap(out, c1)


def _method(method, a, k, out_shape, origin, boundary, fill, path):
    """'direct' or 'fft': integers always direct (exact, as scipy keeps them);
    'auto' asks gpuconv.fft.choose_method's cost model."""
    if a.dtype.kind not in "fc" or method == "direct":
        return "direct"
    if method == "fft":
        return "fft"
    from .fft import choose_method
    return choose_method(a.shape[-2:], k.shape[-2:], out_shape[-2:], origin, boundary, a.dtype,
                         "gpu" if path.is_device else "cpu", fill)


def canonicalize(fname, flip, a, k, mode, boundary, fillvalue):
    """scipy's validation, then the core's arguments.

    Returns (a, k, out_shape, origin, boundary, fill, swapped): `a` and `k` in the
    result dtype (`k` flipped for convolution, conjugated for correlation),
    `boundary` one of 'fill'/'wrap'/'symm', `fill` a NumPy scalar of the result
    dtype, `swapped` whether scipy's valid-mode swap happened (correlate2d's
    result is then reversed in both axes).  Works on NumPy and CuPy arrays.
    """
    # Leading dimensions are batch dimensions (an extension: scipy takes 2-D only),
    # broadcast against each other; the last two are the image's and the kernel's.
    if a.ndim < 2 or k.ndim < 2:
        raise ValueError(f"{fname} inputs must both be 2-D arrays (or batches of them, "
                         f"(..., H, W)), got in1.ndim={a.ndim} and in2.ndim={k.ndim}")
    batch = batch_shape(fname, a.shape, k.shape)
    # scipy's _inputs_swap_needed: only in 'valid' mode, before mode is validated.
    swapped = False
    if isinstance(mode, str) and mode == "valid":
        ok1 = all(s1 >= s2 for s1, s2 in zip(a.shape[-2:], k.shape[-2:]))
        ok2 = all(s2 >= s1 for s1, s2 in zip(a.shape[-2:], k.shape[-2:]))
        if not (ok1 or ok2):
            raise ValueError(f"For 'valid' mode, one must be at least as large as the other in "
                             f"every dimension: got in1 {a.shape[-2:]} and in2 {k.shape[-2:]} "
                             f"(mode='valid')")
        if not ok1:
            a, k, swapped = k, a, True
    _check_choice("mode", mode, _MODES)
    _check_choice("boundary", boundary, _BOUNDARIES)
    bnd = _BOUNDARIES[boundary]
    named = (("in2", a.dtype), ("in1", k.dtype)) if swapped else (("in1", a.dtype), ("in2", k.dtype))
    _check_input_dtypes(fname, named)
    dtype = _result_dtype(fname, a.dtype, k.dtype)
    fill = fill_scalar(fillvalue, dtype) if bnd == "fill" else dtype.type(0)
    out2, origin = _geometry(mode, flip, a.shape[-2:], k.shape[-2:])
    if min(out2) < 0:
        raise ValueError(f"{fname}: mode={mode!r} with in1 {a.shape} and in2 {k.shape} gives a "
                         f"negative output shape {out2}")
    out_shape = batch + out2
    _check_dtype(fname, dtype, named)
    if (bnd != "fill" and 0 in a.shape[-2:] and 0 not in out_shape and 0 not in k.shape):
        raise ValueError(f"{fname}: boundary={boundary!r} cannot extend an empty image "
                         f"of shape {a.shape[-2:]} (scipy divides by zero here)")

    a = a.astype(dtype, copy=False)
    k = k.astype(dtype, copy=False)
    k = k[..., ::-1, ::-1] if flip else (k.conj() if dtype.kind == "c" else k)
    return a, k, out_shape, origin, bnd, fill, swapped


def batch_shape(fname, a_shape, k_shape):
    """The broadcast of the inputs' leading (batch) dimensions, NumPy's rules."""
    try:
        return tuple(np.broadcast_shapes(tuple(a_shape[:-2]), tuple(k_shape[:-2])))
    except ValueError:
        raise ValueError(f"{fname}: the batch dimensions of in1 {tuple(a_shape)} and in2 "
                         f"{tuple(k_shape)} (all but the last two) do not broadcast") from None


def per_image(core, a, k, out_shape, *args):
    """Run a 2-D `core(a, k, out_shape[-2:], *args)` for every image of the broadcast
    batch (a (..., M, N), k (..., kh, kw)); 2-D inputs go straight through."""
    batch = batch_shape("correlate_core", a.shape, k.shape)
    if not batch:
        return core(a, k, tuple(out_shape[-2:]), *args)
    if isinstance(a, np.ndarray):
        xp = np
    else:
        import cupy as xp
    ab = xp.broadcast_to(a, batch + a.shape[-2:])
    kb = xp.broadcast_to(k, batch + k.shape[-2:])
    out = xp.empty(batch + tuple(out_shape[-2:]), dtype=a.dtype)
    for idx in np.ndindex(*batch):
        out[idx] = core(ab[idx], kb[idx], tuple(out_shape[-2:]), *args)
    return out


# ----------------------------------------------------------------------------
# NumPy core
# ----------------------------------------------------------------------------

def extend(a, rows, cols, boundary, fillvalue):
    """ext(a)[rows[0]:rows[1], cols[0]:cols[1]] as a new (or sliced) array."""
    M, N = a.shape
    (r0, r1), (c0, c1) = rows, cols
    if r0 >= 0 and r1 <= M and c0 >= 0 and c1 <= N:
        return a[r0:r1, c0:c1]
    if boundary == "fill":
        e = np.full((r1 - r0, c1 - c0), fillvalue, dtype=a.dtype)
        lo0, hi0 = max(r0, 0), min(r1, M)
        lo1, hi1 = max(c0, 0), min(c1, N)
        if lo0 < hi0 and lo1 < hi1:
            e[lo0 - r0:hi0 - r0, lo1 - c0:hi1 - c0] = a[lo0:hi0, lo1:hi1]
        return e
    # np.pad's 'wrap' and 'symmetric' repeat periodically for pads longer than the
    # array, which is ext()'s definition (checked against scipy in the tests).
    pads = ((max(0, -r0), max(0, r1 - M)), (max(0, -c0), max(0, c1 - N)))
    e = np.pad(a, pads, mode="wrap" if boundary == "wrap" else "symmetric")
    return e[r0 + pads[0][0]:r1 + pads[0][0], c0 + pads[1][0]:c1 + pads[1][0]]


# Row strips per task: measured on 1024x1024 float64 (2 cores), 128-row strips
# beat 64 (+10%) and whole-image passes (2-3x: the strip's input and output stay
# in L2 across all taps); 256 is no better.  Strips run on a 2-thread pool (NumPy
# releases the GIL): 5x5 same/fill 10 ms vs 24 ms on one thread; scipy 53 ms.
_STRIP_ROWS = 128
# Below this many output elements threads cost more than they save.
_THREAD_MIN_ELEMENTS = 1 << 16
# The tap loop is used for every kernel size.  A BLAS formulation (per panel of
# 32 output columns, a strided im2row view times a banded matrix) measured
# faster for >= 6x6 float kernels on an idle machine (1024x1024 float64, 2
# cores: 9x9 20 vs 31 ms, 15x15 34 vs 85 ms) but swung to 1.0-1.5 s for 15x15
# when the machine was busy (OpenBLAS threads oversubscribing next to the
# strip pool), while the tap loop stays within 2x of its idle time and always
# beats scipy (15x15: 85 ms idle, 150-190 ms busy; scipy 390-600 ms).

def _run_strips(fn, n_rows, n_elements):
    """fn(i0, i1) for every strip of rows, on the CPU path's thread pool (gpuconv._cpu:
    made once under a lock, forgotten in a forked child, inline when nested)."""
    bounds = [(i, min(i + _STRIP_ROWS, n_rows)) for i in range(0, n_rows, _STRIP_ROWS)]
    run_jobs(fn, bounds, n_elements, min_elements=_THREAD_MIN_ELEMENTS)


def _taps_strip(e, k, out, i0, i1):
    """out[i0:i1] = sum_{r,s} k[r, s] * e[i0 + r : i1 + r, s : s + W] (one pass per tap)."""
    kh, kw = k.shape
    W = out.shape[1]
    o = out[i0:i1]
    tmp = np.empty_like(o)
    for r in range(kh):
        for s in range(kw):
            win = e[i0 + r:i1 + r, s:s + W]
            if r == 0 and s == 0:
                np.multiply(win, k[0, 0], out=o)
            else:
                np.multiply(win, k[r, s], out=tmp)
                o += tmp


def correlate_core(a, k, out_shape, origin, boundary, fillvalue):
    """The CPU core: out[i, j] = sum_{r,s} ext(a)[i + origin[0] + r, j + origin[1] + s] * k[r, s].

    Parameters
    ----------
    a : numpy.ndarray, shape (M, N) or a batch (..., M, N)
        The image, in the result dtype.
    k : numpy.ndarray, shape (kh, kw) or a batch (..., kh, kw), broadcast against a's
        The kernel, in the result dtype, already flipped/conjugated.
    out_shape : (int, int) or (*batch, int, int)
        Non-negative output shape (the last two entries are the image's).
    origin : (int, int)
        ext(a) index of out[0, 0]'s first tap (negative in 'full' and 'same').
    boundary : {'fill', 'wrap', 'symm'}
        The extension ext(a), defined in this module's docstring.
    fillvalue : scalar of a.dtype
        ext(a) outside `a` for 'fill'.

    Returns
    -------
    numpy.ndarray of `out_shape`, dtype a.dtype, by one multiply-add pass per tap
    over row strips (threaded); integers exact modulo 2**bits, as scipy.
    """
    if a.ndim > 2 or k.ndim > 2:     # a batch: one image at a time (threads within each)
        return per_image(correlate_core, a, k, out_shape, origin, boundary, fillvalue)
    H, W = out_shape[-2:]
    kh, kw = k.shape
    if H == 0 or W == 0 or kh == 0 or kw == 0:
        return np.zeros((H, W), dtype=a.dtype)
    e = extend(a, (origin[0], origin[0] + H + kh - 1), (origin[1], origin[1] + W + kw - 1),
               boundary, fillvalue)
    out = np.empty((H, W), dtype=a.dtype)
    _run_strips(lambda i0, i1: _taps_strip(e, k, out, i0, i1), H, H * W)
    return out
