"""gpuconv.convolve2d / correlate2d against scipy.signal (the oracle).

Every test body takes `xp`, the `path` fixture of tests/conftest.py: NumPy (the
CPU path), the simulator (the GPU path's kernels on the CPU) and, with a CUDA
device, CuPy arrays.  Inputs go in through xp.asarray and results come back
through `.get()`.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import gpuconv

signal = pytest.importorskip("scipy.signal")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

FUNCS = ("convolve2d", "correlate2d")
MODES = ("full", "same", "valid")
BOUNDARIES = ("fill", "wrap", "symm")
DTYPES = (np.float32, np.float64, np.complex64, np.complex128, np.int8, np.int32, np.int64, np.uint8)
# Relative to sum |ext(a)| |k| at each output (the bound on a sum's rounding error).
TOL = {"f": {4: 1e-5, 8: 1e-12}, "c": {8: 1e-5, 16: 1e-12}}


@pytest.fixture
def xp(path):
    return path


def to_numpy(x):
    return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else np.asarray(x)


def ours(xp, fname, a, k, **kw):
    a = xp.asarray(a) if isinstance(a, np.ndarray) else a
    k = xp.asarray(k) if isinstance(k, np.ndarray) else k
    return to_numpy(getattr(gpuconv, fname)(a, k, **kw))


def random_array(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        lo, hi = (0, 10) if dtype.kind == "u" else (-10, 10)
        return rng.integers(lo, hi, shape).astype(dtype)
    x = rng.standard_normal(shape)
    if dtype.kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def check_against_scipy(xp, fname, a, k, mode="full", boundary="fill", fillvalue=0):
    """Same shape, same dtype; integers exact; floats within TOL x sum |ext(a)||k|."""
    ref = getattr(signal, fname)(a, k, mode=mode, boundary=boundary, fillvalue=fillvalue)
    got = ours(xp, fname, a, k, mode=mode, boundary=boundary, fillvalue=fillvalue)
    where = f"{fname}(in1 {np.shape(a)} {np.asarray(a).dtype}, in2 {np.shape(k)}, {mode}, {boundary})"
    assert got.shape == ref.shape, f"{where}: shape {got.shape} != scipy {ref.shape}"
    assert got.dtype == ref.dtype, f"{where}: dtype {got.dtype} != scipy {ref.dtype}"
    if ref.dtype.kind in "iu":
        bad = got != ref
        tol_desc = "exact"
    else:
        bound = getattr(signal, fname)(np.abs(a).astype(np.float64), np.abs(k).astype(np.float64),
                                       mode=mode, boundary=boundary,
                                       fillvalue=abs(complex(np.asarray(fillvalue).ravel()[0])))
        tol = TOL[ref.dtype.kind][ref.dtype.itemsize]
        bad = ~(np.abs(got.astype(np.complex128) - ref) <= tol * bound + 1e-300)
        tol_desc = f"{tol:g} x sum|a||k|"
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(f"{where}: {int(bad.sum())} of {bad.size} elements differ ({tol_desc}); "
                             f"first at {idx}: got {got[idx]!r}, scipy {ref[idx]!r}")
    return got


# ----------------------------------------------------------------------------
# seeds and scipy's own examples
# ----------------------------------------------------------------------------

def test_seed_4x4(xp):
    img = np.arange(1, 17).reshape(4, 4)
    k = np.array([[1, 1], [-1, -1]])
    corr = ours(xp, "correlate2d", img, k, mode="valid")
    conv = ours(xp, "convolve2d", img, k, mode="valid")
    np.testing.assert_array_equal(corr, np.full((3, 3), -8))
    np.testing.assert_array_equal(conv, np.full((3, 3), 8))
    check_against_scipy(xp, "correlate2d", img, k, mode="valid")
    check_against_scipy(xp, "convolve2d", img, k, mode="valid")


@pytest.mark.parametrize("fname", FUNCS)
def test_seed_5x5_edge(xp, fname):
    img = np.zeros((5, 5), dtype=np.int64)
    img[:3, :3] = np.arange(1, 10).reshape(3, 3)
    k = np.array([[1, 0, -1]] * 3)
    got = check_against_scipy(xp, fname, img, k, mode="valid")
    assert got.shape == (3, 3)
    for mode, boundary in itertools.product(MODES, BOUNDARIES):
        check_against_scipy(xp, fname, img, k, mode=mode, boundary=boundary)


def test_scipy_2d_arrays_example(xp):
    # scipy's TestConvolve2d.test_2d_arrays
    a = np.array([[1, 2, 3], [3, 4, 5]])
    b = np.array([[2, 3, 4], [4, 5, 6]])
    expected = np.array([[2, 7, 16, 17, 12], [10, 30, 62, 58, 38], [12, 31, 58, 49, 30]])
    np.testing.assert_array_equal(ours(xp, "convolve2d", a, b), expected)


def test_docstring_scharr_gradient(xp, rng):
    # convolve2d's docstring example (a random image stands in for datasets.ascent()).
    image = rng.integers(0, 256, (64, 80)).astype(np.int64)
    scharr = np.array([[-3 - 3j, 0 - 10j, +3 - 3j],
                       [-10 + 0j, 0 + 0j, +10 + 0j],
                       [-3 + 3j, 0 + 10j, +3 + 3j]])
    grad = check_against_scipy(xp, "convolve2d", image, scharr, mode="same", boundary="symm")
    assert grad.dtype == np.complex128 and grad.shape == image.shape


def test_docstring_template_match(xp, rng):
    # correlate2d's docstring example, with a random "face".
    face = rng.standard_normal((120, 140)) * 50
    template = face[40:60, 70:95].copy()
    template -= template.mean()
    noisy = face + rng.standard_normal(face.shape) * 5
    corr = check_against_scipy(xp, "correlate2d", noisy, template, mode="same", boundary="symm")
    y, x = np.unravel_index(np.argmax(corr), corr.shape)
    ref = signal.correlate2d(noisy, template, boundary="symm", mode="same")
    assert (y, x) == np.unravel_index(np.argmax(ref), ref.shape)


# ----------------------------------------------------------------------------
# modes x boundaries x dtypes x shapes
# ----------------------------------------------------------------------------

IMAGES = [(1, 1), (4, 4), (5, 6), (6, 5), (7, 7)]
KERNELS = [(1, 1), (2, 2), (3, 3), (2, 3), (4, 1), (3, 6), (8, 2), (8, 9)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fname", FUNCS)
def test_against_scipy(xp, rng, fname, mode, boundary, dtype):
    for ishape, kshape in itertools.product(IMAGES, KERNELS):
        a = random_array(rng, ishape, dtype)
        k = random_array(rng, kshape, dtype)
        larger = all(i >= j for i, j in zip(ishape, kshape)) or all(j >= i for i, j in zip(ishape, kshape))
        if mode == "valid" and not larger:
            with pytest.raises(ValueError, match="mode='valid'"):
                ours(xp, fname, a, k, mode=mode, boundary=boundary)
            continue
        fill = 3 if np.dtype(dtype).kind in "iu" else 1.5
        check_against_scipy(xp, fname, a, k, mode=mode, boundary=boundary, fillvalue=fill)


@pytest.mark.parametrize("boundary", ["wrap", "symm", "circular", "symmetric"])
@pytest.mark.parametrize("fname", FUNCS)
def test_kernel_longer_than_image(xp, rng, fname, boundary):
    # scipy extends periodically (its reflect_symm_index / circular_wrap_index)
    for ishape, kshape in [((3, 4), (13, 11)), ((2, 2), (9, 3)), ((1, 3), (5, 17)), ((4, 1), (10, 10))]:
        a = rng.integers(-9, 9, ishape)
        k = rng.integers(-9, 9, kshape)
        for mode in ("full", "same", "valid"):
            check_against_scipy(xp, fname, a, k, mode=mode, boundary=boundary)


@pytest.mark.parametrize("fname", FUNCS)
def test_valid_swap_reverses_correlation(xp, rng, fname):
    a = rng.standard_normal((3, 4))
    k = rng.standard_normal((6, 9))
    got = check_against_scipy(xp, fname, a, k, mode="valid")
    assert got.shape == (4, 6)
    if fname == "correlate2d":
        direct = ours(xp, fname, k, a, mode="valid")
        np.testing.assert_allclose(got, direct[::-1, ::-1].conj(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pair", [
    (np.int8, np.float32), (np.uint8, np.int8), (np.int64, np.float32), (np.float32, np.complex128),
    (np.int16, np.uint16), (np.uint32, np.int32), (np.uint64, np.uint64), (np.longdouble, np.float64),
    (np.clongdouble, np.int8), (np.int32, np.complex64),
], ids=lambda p: f"{np.dtype(p[0]).name}-{np.dtype(p[1]).name}")
def test_mixed_and_other_dtypes(xp, rng, pair):
    if xp.is_device and any(np.dtype(d).itemsize > 8 and np.dtype(d).kind != "c" or
                            np.dtype(d) == np.clongdouble for d in pair):
        pytest.skip("the GPU path has no long double (CuPy has none)")
    a = random_array(rng, (6, 7), pair[0])
    k = random_array(rng, (3, 2), pair[1])
    for fname, mode, boundary in itertools.product(FUNCS, MODES, BOUNDARIES):
        ref = getattr(signal, fname)(a, k, mode=mode, boundary=boundary)
        got = ours(xp, fname, a, k, mode=mode, boundary=boundary)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        if ref.dtype.kind in "iu":
            np.testing.assert_array_equal(got, ref)
        else:
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_integer_overflow_wraps_like_scipy(xp):
    a = np.full((5, 5), 200, dtype=np.uint8)
    k = np.full((3, 3), 7, dtype=np.uint8)
    for fname, mode, boundary in itertools.product(FUNCS, MODES, BOUNDARIES):
        check_against_scipy(xp, fname, a, k, mode=mode, boundary=boundary, fillvalue=9)
    big = np.full((4, 4), 2**62, dtype=np.int64)
    check_against_scipy(xp, "convolve2d", big, np.full((2, 2), 3, dtype=np.int64))


def test_array_likes():
    # lists become NumPy arrays as in scipy (dtype from np.asarray: int64 list with
    # a float32 array gives float64)
    np.testing.assert_array_equal(gpuconv.convolve2d([[1, 2], [3, 4]], [[1]]),
                                  signal.convolve2d([[1, 2], [3, 4]], [[1]]))
    r = gpuconv.correlate2d(np.ones((3, 3), np.float32), [[1, 2]])
    assert r.dtype == signal.correlate2d(np.ones((3, 3), np.float32), [[1, 2]]).dtype == np.float64
    np.testing.assert_array_equal(gpuconv.correlate2d(((1, 2), (3, 4)), [[1, 1j]]),
                                  signal.correlate2d(((1, 2), (3, 4)), [[1, 1j]]))


def test_noncontiguous_and_byteswapped(xp, rng):
    a = rng.standard_normal((12, 14))[::2, ::-1]
    k = rng.standard_normal((4, 3)).T
    check_against_scipy(xp, "convolve2d", a, k, mode="same", boundary="wrap")
    if not xp.is_device:
        ab = a.astype(">f8")
        r = gpuconv.correlate2d(ab, k)
        assert r.dtype == signal.correlate2d(ab, k).dtype
        np.testing.assert_allclose(r, signal.correlate2d(ab, k), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128, np.int32, np.int64])
@pytest.mark.parametrize("ksize", [(5, 5), (7, 7), (11, 4)])
def test_large_images(xp, rng, dtype, ksize):
    # exercises the threaded row strips (with halos) and the strip edges
    a = random_array(rng, (301, 257), dtype)
    k = random_array(rng, ksize, dtype)
    for fname, mode, boundary in [("correlate2d", "full", "fill"), ("convolve2d", "same", "symm"),
                                  ("correlate2d", "valid", "wrap"), ("convolve2d", "same", "fill")]:
        check_against_scipy(xp, fname, a, k, mode=mode, boundary=boundary, fillvalue=2)


# ----------------------------------------------------------------------------
# fillvalue
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("fillvalue", [0, 2, 2.5, -1, 300, True, [3], np.array([2]), np.array([[2.5]]),
                                       np.float64(1.25), np.int8(-3)],
                         ids=repr)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.uint8, np.complex128])
def test_fillvalue_like_scipy(xp, rng, fillvalue, dtype):
    a = random_array(rng, (4, 5), dtype)
    k = random_array(rng, (3, 2), dtype)
    for fname in FUNCS:
        try:
            getattr(signal, fname)(a, k, fillvalue=fillvalue)     # does scipy accept it?
        except ValueError:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with pytest.raises(ValueError, match="fillvalue"):
                    ours(xp, fname, a, k, fillvalue=fillvalue)
            continue
        check_against_scipy(xp, fname, a, k, fillvalue=fillvalue)


@pytest.mark.parametrize("fillvalue", [1 + 2j, np.array([1 + 1j]), np.complex128(1 + 2j), 1 + 0j])
def test_complex_fillvalue(xp, fillvalue):
    a = np.arange(12.0).reshape(3, 4)
    k = np.ones((2, 2))
    # complex inputs: used as is
    check_against_scipy(xp, "convolve2d", a.astype(complex), k, fillvalue=fillvalue)
    # real inputs: scipy warns (ComplexWarning) and then raises, except for NumPy
    # complex scalars, which it casts with the warning
    try:
        with warnings.catch_warnings(record=True) as ref_w:
            warnings.simplefilter("always")
            ref = signal.convolve2d(a, k, fillvalue=fillvalue)
    except ValueError:
        ref = None
    with warnings.catch_warnings(record=True) as our_w:
        warnings.simplefilter("always")
        if ref is None:
            with pytest.raises(ValueError, match="fillvalue"):
                ours(xp, "convolve2d", a, k, fillvalue=fillvalue)
        else:
            np.testing.assert_array_equal(ours(xp, "convolve2d", a, k, fillvalue=fillvalue), ref)
    assert [w.category for w in our_w] == [w.category for w in ref_w]
    assert np.exceptions.ComplexWarning in [w.category for w in our_w]


@pytest.mark.parametrize("fillvalue,match", [
    (np.array([1, 2]), "one element"), (np.array([]), "empty"), ([1.0, 2.0], "one element"),
    ("abc", "fillvalue"),
])
def test_fillvalue_errors(xp, fillvalue, match):
    a = np.ones((3, 3))
    with pytest.raises(ValueError):
        signal.convolve2d(a, a, fillvalue=fillvalue)
    with pytest.raises(ValueError, match=match):
        ours(xp, "convolve2d", a, a, fillvalue=fillvalue)


@pytest.mark.parametrize("boundary", ["wrap", "symm"])
def test_fillvalue_ignored_without_fill(xp, boundary):
    a = np.arange(12.0).reshape(3, 4)
    for fv in ([1, 2], "x", np.array([])):
        np.testing.assert_array_equal(ours(xp, "correlate2d", a, a[:2, :2], boundary=boundary, fillvalue=fv),
                                      signal.correlate2d(a, a[:2, :2], boundary=boundary, fillvalue=fv))


# ----------------------------------------------------------------------------
# empty inputs
# ----------------------------------------------------------------------------

EMPTY_CASES = [((0, 0), (1, 1)), ((0, 3), (2, 2)), ((3, 4), (0, 0)), ((3, 4), (0, 2)), ((3, 4), (2, 0)),
               ((0, 3), (0, 3)), ((2, 3), (0, 5)), ((0, 3), (2, 4)), ((1, 1), (0, 0))]


@pytest.mark.parametrize("shapes", EMPTY_CASES, ids=str)
@pytest.mark.parametrize("fname", FUNCS)
def test_empty_like_scipy(xp, fname, shapes):
    s1, s2 = shapes
    a = np.ones(s1)
    k = np.arange(1.0, 1 + np.prod(s2)).reshape(s2)
    for mode, boundary in itertools.product(MODES, BOUNDARIES):
        full_shape = tuple(n + m - 1 for n, m in zip(s1, s2))
        reads_empty_image = mode == "full" and 0 in s1 and 0 not in s2 and min(full_shape) > 0
        if boundary != "fill" and reads_empty_image:
            # scipy divides by zero (SIGFPE) here; we raise instead
            with pytest.raises(ValueError, match="boundary"):
                ours(xp, fname, a, k, mode=mode, boundary=boundary)
            continue
        try:
            ref = getattr(signal, fname)(a, k, mode=mode, boundary=boundary, fillvalue=2)
        except ValueError:
            with pytest.raises(ValueError):
                ours(xp, fname, a, k, mode=mode, boundary=boundary, fillvalue=2)
            continue
        got = ours(xp, fname, a, k, mode=mode, boundary=boundary, fillvalue=2)
        assert got.shape == ref.shape and got.dtype == ref.dtype
        np.testing.assert_array_equal(got, ref)


# ----------------------------------------------------------------------------
# errors: scipy's conditions, our messages name the argument
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("fname", FUNCS)
def test_errors(xp, fname):
    f = getattr(gpuconv, fname)
    a = xp.asarray(np.ones((4, 4)))
    cases = [
        (dict(in1=xp.asarray(np.ones(4)), in2=a), ValueError, "2-D"),
        # leading dimensions are batches now (scipy refuses them); these do not broadcast
        (dict(in1=xp.asarray(np.ones((3, 4, 4))), in2=xp.asarray(np.ones((2, 2, 2)))),
         ValueError, "broadcast"),
        (dict(in1=xp.asarray(np.ones((4, 2))), in2=xp.asarray(np.ones((2, 4))), mode="valid"),
         ValueError, "mode='valid'"),
        (dict(in1=a, in2=a, mode="FULL"), ValueError, "mode"),
        (dict(in1=a, in2=a, mode=2), ValueError, "mode"),
        (dict(in1=a, in2=a, mode=None), ValueError, "mode"),
        (dict(in1=a, in2=a, mode=["full"]), TypeError, "mode"),
        (dict(in1=a, in2=a, boundary="reflect"), ValueError, "boundary"),
        (dict(in1=a, in2=a, boundary="zero"), ValueError, "boundary"),
        (dict(in1=a, in2=a, boundary=["fill"]), TypeError, "boundary"),
        (dict(in1=a, in2=a, fillvalue=np.array([1, 2])), ValueError, "fillvalue"),
        (dict(in1=xp.asarray(np.ones((3, 3), bool)), in2=xp.asarray(np.ones((2, 2), bool))), ValueError,
         "dtype"),
    ]
    if not xp.is_device:
        cases += [
            (dict(in1=np.ones((3, 3), np.float16), in2=np.ones((2, 2), np.float16)), ValueError, "dtype"),
            (dict(in1=np.ones((3, 3), object), in2=np.ones((2, 2))), ValueError, "dtype"),
            (dict(in1=5.0, in2=np.ones((2, 2))), ValueError, "2-D"),
            (dict(in1=[[1, 2]], in2=[1]), ValueError, "2-D"),
        ]
    for kwargs, exc, match in cases:
        host = {n: (to_numpy(v) if hasattr(v, "shape") and not isinstance(v, np.ndarray) else v)
                for n, v in kwargs.items()}
        with pytest.raises(exc):
            getattr(signal, fname)(**host)
        with pytest.raises(exc, match=match):
            f(**kwargs)


def test_torch_cpu_tensors_come_back_as_torch():
    torch = pytest.importorskip("torch")
    a = torch.arange(16.0).reshape(4, 4)
    k = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    out = gpuconv.correlate2d(a, k, mode="valid")
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), signal.correlate2d(a.numpy(), k.numpy(), mode="valid"))


# ----------------------------------------------------------------------------
# random cases
# ----------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(
    ishape=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    kshape=st.tuples(st.integers(1, 11), st.integers(1, 11)),
    fname=st.sampled_from(FUNCS),
    mode=st.sampled_from(MODES),
    boundary=st.sampled_from(("fill", "pad", "wrap", "circular", "symm", "symmetric")),
    fill=st.integers(-5, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_hypothesis_integers_exact(ishape, kshape, fname, mode, boundary, fill, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-20, 20, ishape)
    k = rng.integers(-20, 20, kshape)
    try:
        ref = getattr(signal, fname)(a, k, mode=mode, boundary=boundary, fillvalue=fill)
    except ValueError:
        with pytest.raises(ValueError):
            getattr(gpuconv, fname)(a, k, mode=mode, boundary=boundary, fillvalue=fill)
        return
    got = getattr(gpuconv, fname)(a, k, mode=mode, boundary=boundary, fillvalue=fill)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


@settings(max_examples=60, deadline=None)
@given(
    ishape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    kshape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    fname=st.sampled_from(FUNCS),
    mode=st.sampled_from(("full", "same")),
    boundary=st.sampled_from(BOUNDARIES),
    dtype=st.sampled_from((np.float32, np.float64, np.complex64, np.complex128)),
    seed=st.integers(0, 2**32 - 1),
)
def test_hypothesis_floats(ishape, kshape, fname, mode, boundary, dtype, seed):
    rng = np.random.default_rng(seed)
    check_against_scipy(np, fname, random_array(rng, ishape, dtype), random_array(rng, kshape, dtype),
                        mode=mode, boundary=boundary, fillvalue=0.5)


# ----------------------------------------------------------------------------
# the CUDA core implements the same definition (run on the CPU simulator)
# ----------------------------------------------------------------------------

@pytest.mark.sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128, np.int32, np.int8])
def test_cuda_core_matches_numpy_core_on_simulator(rng, dtype):
    from gpuconv import sim
    from gpuconv.cuda import signal as cuda_signal
    from gpuconv.signal import canonicalize, correlate_core
    backend = sim.SimBackend()
    for (ishape, kshape), fname, mode, boundary in itertools.product(
            [((5, 7), (3, 2)), ((3, 4), (7, 9)), ((9, 6), (4, 4))], FUNCS, MODES, BOUNDARIES):
        a = random_array(rng, ishape, dtype)
        k = random_array(rng, kshape, dtype)
        args = canonicalize(fname, fname == "convolve2d", a, k, mode, boundary, 2)[:6]
        want = correlate_core(*args)
        got = cuda_signal.correlate_core(*args, backend=backend)
        assert got.dtype == want.dtype and got.shape == want.shape
        if want.dtype.kind in "iu":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


# ----------------------------------------------------------------------------
# batches: in1 (..., H, W) and in2 (..., R, S) broadcast their leading dimensions
# ----------------------------------------------------------------------------

def scipy_per_image(fname, a, k, **kw):
    """The reference: scipy.signal on every image of the broadcast batch."""
    batch = np.broadcast_shapes(a.shape[:-2], k.shape[:-2])
    ab = np.broadcast_to(a, batch + a.shape[-2:])
    kb = np.broadcast_to(k, batch + k.shape[-2:])
    outs = [getattr(signal, fname)(ab[i], kb[i], **kw) for i in np.ndindex(*batch)]
    return np.stack(outs).reshape(batch + outs[0].shape)


# (in1 shape, in2 shape): a batch of images with one kernel, one image with a batch
# of kernels, both broadcasting (2, 1) x (1, 3), a batch on both sides with scipy's
# 'valid' swap (in2 larger), and an empty batch
BATCH_SHAPES = [((3, 9, 7), (4, 3)), ((6, 5), (2, 3, 2)), ((2, 1, 8, 6), (3, 3, 4)),
                ((2, 4, 3), (2, 6, 5)), ((0, 5, 5), (2, 2))]


@pytest.mark.parametrize("shapes", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("fname", FUNCS)
def test_batched_matches_scipy_per_image(xp, rng, fname, shapes):
    a = random_array(rng, shapes[0], np.float64)
    k = random_array(rng, shapes[1], np.float64)
    for mode, boundary in itertools.product(MODES, BOUNDARIES):
        kw = dict(mode=mode, boundary=boundary, fillvalue=-0.75)
        if 0 in shapes[0]:       # an empty batch: the shape one image would have, times 0
            want = np.empty((0,) + getattr(signal, fname)(np.ones(a.shape[1:]), k, **kw).shape)
        else:
            want = scipy_per_image(fname, a, k, **kw)
        got = ours(xp, fname, a, k, **kw)
        assert got.shape == want.shape and got.dtype == want.dtype, (mode, boundary)
        scale = np.abs(want).max() if want.size else 1.0
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * scale,
                                   err_msg=f"{fname} {shapes} {mode} {boundary}")


@pytest.mark.parametrize("dtype", [np.int32, np.complex64])
def test_batched_integer_exact_and_complex(xp, rng, dtype):
    a = random_array(rng, (2, 3, 7, 6), dtype)
    k = random_array(rng, (3, 2, 3), dtype)
    for fname in FUNCS:
        want = scipy_per_image(fname, a, k, mode="same", boundary="symm")
        got = ours(xp, fname, a, k, mode="same", boundary="symm")
        assert got.dtype == want.dtype
        if np.dtype(dtype).kind == "i":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_batched_two_d_unchanged_and_errors(xp):
    f = gpuconv.convolve2d
    with pytest.raises(ValueError, match="2-D"):
        f(xp.asarray(np.ones(4)), xp.asarray(np.ones((2, 2))))
    with pytest.raises(ValueError, match=r"in1 \(3, 4, 4\) and in2 \(2, 2, 2\).*broadcast"):
        f(xp.asarray(np.ones((3, 4, 4))), xp.asarray(np.ones((2, 2, 2))))
    with pytest.raises(ValueError, match="mode='valid'"):
        f(xp.asarray(np.ones((2, 4, 2))), xp.asarray(np.ones((2, 4))), mode="valid")


@pytest.mark.sim
def test_batched_is_one_launch_on_the_simulator(rng):
    from gpuconv.sim import SimBackend
    backend = SimBackend()
    launches = []
    get = backend.get_function

    def counting(module, names, name):
        fn = get(module, names, name)

        def call(*args, **kw):
            launches.append(name)
            return fn(*args, **kw)
        return call
    backend.get_function = counting
    a = random_array(rng, (3, 2, 9, 8), np.float32)
    k = random_array(rng, (2, 4, 3), np.float32)
    with gpuconv.use_backend(backend):
        got = gpuconv.correlate2d(a, k, mode="same", boundary="wrap")
    assert launches and len(launches) == 1, launches
    want = scipy_per_image("correlate2d", a, k, mode="same", boundary="wrap")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
