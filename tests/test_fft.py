"""gpuconv.fft against the direct definitions (scipy.signal, gpuconv.reference).

FFT errors scale with the largest values, not with each output, so every check
holds the documented bound

    |fft - exact| <= 4 * eps * log2(prod L) * max|A| * max sum|B|

(eps of the compute dtype, L the transform lengths, A the signal, B the filter
whose absolute sum bounds one output), on fresh random data, including inputs
spanning twelve orders of magnitude.  Integer inputs never take the FFT: they
stay exact.
"""
from __future__ import annotations

import itertools
import math
import types

import numpy as np
import pytest

import gpuconv
from gpuconv import fft as gfft
from gpuconv import reference
from gpuconv.signal import canonicalize
from gpuconv.spec import make_spec

from util import randn

signal = pytest.importorskip("scipy.signal")

FLOATS = (np.float32, np.float64, np.complex64, np.complex128)
C_BOUND = 4.0


def _eps(dt):
    return float(np.finfo(np.dtype(dt)).eps)


def _hi(a):
    if a is None:
        return None
    return a.astype(np.complex128 if np.dtype(a.dtype).kind == "c" else np.float64)


def assert_within(got, ref, bound, what):
    got = np.asarray(got)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    err = np.abs(_hi(got) - ref)
    bad = ~(err <= bound)                     # NaN fails
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} outside the bound {bound:.3g}; "
                             f"first at {idx}: got {got[idx]!r}, exact {ref[idx]!r}; "
                             f"max error {np.nanmax(err):.3g}")


# ----------------------------------------------------------------------------
# transform lengths
# ----------------------------------------------------------------------------

def test_fast_length_is_the_smallest_7_smooth():
    smooth = [n for n in range(1, 3000) if gfft._smooth(n)]
    for n in range(1, 2900):
        assert gfft.fast_length(n) == next(m for m in smooth if m >= n), n


def test_zero_plan_never_aliases(rng):
    # brute force: the circular correlation at the planned length equals the linear one
    for _ in range(200):
        la, lb, q = (int(v) for v in rng.integers(1, 12, 3))
        o = int(rng.integers(-14, 14))
        L, w0 = gfft.zero_plan(la, lb, o, q)
        a, b = rng.standard_normal(la), rng.standard_normal(lb)
        exact = [sum(a[p + o + t] * b[t] for t in range(lb) if 0 <= p + o + t < la) for p in range(q)]
        circ = np.real(np.fft.ifft(np.fft.fft(a, L) * np.fft.fft(b[::-1], L)))
        got = circ[(w0 + np.arange(q)) % L]
        np.testing.assert_allclose(got, exact, atol=1e-12, err_msg=f"la={la} lb={lb} o={o} q={q}")


# ----------------------------------------------------------------------------
# the signal core
# ----------------------------------------------------------------------------

SHAPES = [((13, 17), (4, 5)), ((7, 9), (12, 3)), ((20, 21), (20, 21)), ((5, 6), (11, 13)),
          ((31, 23), (9, 8)), ((1, 7), (1, 3))]


def _signal_bound(fname, a, k, mode, boundary, fillvalue, dt):
    flip = fname == "convolve2d"
    A, K, out_shape, origin, bnd, fill, _ = canonicalize(fname, flip, a, k, mode, boundary, fillvalue)
    Ls = gfft.signal_plan(A.shape, K.shape, out_shape, origin, bnd)
    big = max(float(np.abs(A).max()), abs(complex(fill)) if bnd == "fill" else 0.0)
    return C_BOUND * _eps(dt) * math.log2(max(math.prod(Ls), 2)) * big * float(np.abs(K).sum())


@pytest.mark.parametrize("fname", ["convolve2d", "correlate2d"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_signal_fft_matches_scipy(rng, fname, mode, boundary, dtype):
    for ishape, kshape in SHAPES:
        a, k = randn(rng, ishape, dtype), randn(rng, kshape, dtype)
        fill = complex(rng.standard_normal(), rng.standard_normal()) if np.dtype(dtype).kind == "c" \
            else float(rng.standard_normal() * 3)
        try:
            ref = getattr(signal, fname)(_hi(a), _hi(k), mode=mode, boundary=boundary, fillvalue=fill)
        except ValueError:      # scipy refuses the shapes (valid mode): so must we
            with pytest.raises(ValueError):
                getattr(gpuconv, fname)(a, k, mode=mode, boundary=boundary, fillvalue=fill, method="fft")
            continue
        got = getattr(gpuconv, fname)(a, k, mode=mode, boundary=boundary, fillvalue=fill, method="fft")
        assert got.dtype == np.dtype(dtype)
        bound = _signal_bound(fname, a, k, mode, boundary, fill, dtype)
        assert_within(got, ref, bound, f"{fname} {ishape} {kshape} {mode} {boundary} {np.dtype(dtype)}")


@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_signal_fft_high_dynamic_range(rng, boundary, dtype):
    # magnitudes log-uniform over 1e-6..1e6 with random signs: the small outputs lose
    # digits (as documented), the bound relative to the largest terms still holds
    shape = (41, 37)
    a = (rng.choice([-1, 1], shape) * 10.0 ** rng.uniform(-6, 6, shape)).astype(dtype)
    k = (rng.choice([-1, 1], (9, 11)) * 10.0 ** rng.uniform(-3, 3, (9, 11))).astype(dtype)
    for mode in ("full", "same", "valid"):
        ref = signal.convolve2d(_hi(a), _hi(k), mode=mode, boundary=boundary, fillvalue=2.5e5)
        got = gpuconv.convolve2d(a, k, mode=mode, boundary=boundary, fillvalue=2.5e5, method="fft")
        bound = _signal_bound("convolve2d", a, k, mode, boundary, 2.5e5, dtype)
        assert_within(got, ref, bound, f"dynamic range {mode} {boundary}")


@pytest.mark.parametrize("boundary", ["wrap", "symm"])
def test_periodic_both_forms(rng, boundary, monkeypatch):
    # each axis may take the one-period circular transform or the explicit extension;
    # force each choice and compare with scipy
    a, k = randn(rng, (11, 14)), randn(rng, (6, 23))        # kernel wider than the image
    ref = signal.correlate2d(a, k, mode="full", boundary=boundary)
    for choice in ("circular", "linear"):
        monkeypatch.setattr(gfft, "periodic_axis_choice", lambda *args, c=choice: c)
        got = gpuconv.correlate2d(a, k, mode="full", boundary=boundary, method="fft")
        assert_within(got, ref, 1e-12 * np.abs(a).max() * np.abs(k).sum(), f"{boundary} {choice}")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("method", ["auto", "fft"])
def test_integers_stay_exact(rng, dtype, method):
    info = np.iinfo(dtype)
    a = rng.integers(info.min // 2, info.max // 2, (40, 50), endpoint=True).astype(dtype)
    k = rng.integers(-5 if info.min < 0 else 0, 6, (33, 31)).astype(dtype)
    for mode in ("full", "same", "valid"):
        ref = signal.convolve2d(a, k, mode=mode)          # wraps on overflow, exactly
        got = gpuconv.convolve2d(a, k, mode=mode, method=method)
        assert got.dtype == ref.dtype and np.array_equal(got, ref), (dtype, mode)
    with pytest.raises(TypeError, match="integer"):
        gfft.correlate_core_fft(a, k, (8, 20), (0, 0), "fill", dtype(0))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_fft_fill_must_be_finite(rng):
    a, k = randn(rng, (20, 20)), randn(rng, (15, 15))
    with pytest.raises(ValueError, match="fillvalue"):
        gpuconv.convolve2d(a, k, mode="same", fillvalue=np.inf, method="fft")
    # auto takes the direct sum: the outputs far from the border stay finite, as scipy's
    got = gpuconv.convolve2d(a, k, mode="same", fillvalue=np.inf)
    ref = signal.convolve2d(a, k, mode="same", fillvalue=np.inf)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref))


def test_method_argument(rng):
    a, k = randn(rng, (9, 9)), randn(rng, (3, 3))
    with pytest.raises(ValueError, match="method"):
        gpuconv.convolve2d(a, k, method="fast")
    with pytest.raises(TypeError, match="method"):
        gpuconv.correlate2d(a, k, method=["fft"])
    for m in ("auto", "direct", "fft"):
        assert_within(gpuconv.convolve2d(a, k, "same", "symm", 0, m),
                      signal.convolve2d(a, k, "same", "symm"), 1e-13, m)


def test_choose_method():
    cm = gfft.choose_method
    assert cm((512, 512), (3, 3), (512, 512), (-1, -1), "fill", np.float64) == "direct"
    assert cm((512, 512), (63, 63), (512, 512), (-31, -31), "fill", np.float64) == "fft"
    assert cm((512, 512), (63, 63), (512, 512), (-31, -31), "fill", np.int64) == "direct"
    assert cm((512, 512), (63, 63), (512, 512), (-31, -31), "fill", np.float64, fillvalue=np.nan) == "direct"
    assert cm((512, 512), (63, 63), (512, 512), (-31, -31), "wrap", np.complex64) == "fft"
    # the estimates are positive and grow with the kernel on the direct side only
    d1, f1 = gfft.signal_costs((256, 256), (9, 9), (256, 256), (-4, -4), "fill", np.float64)
    d2, f2 = gfft.signal_costs((256, 256), (27, 27), (256, 256), (-13, -13), "fill", np.float64)
    assert 0 < d1 < d2 and d2 / d1 == pytest.approx(9) and f2 < 1.5 * f1


class _PoisonNumpy(types.ModuleType):
    """NumPy under another name, whose empty() is NaN-filled: drives the generic
    xp.fft branch (numpy.fft, no workers=) and fails any output element left unwritten."""

    def __init__(self):
        super().__init__("poisoned_numpy")

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def empty(shape, dtype=float):
        return np.full(shape, np.nan, dtype=dtype)


def test_generic_namespace_and_poisoned_outputs(rng):
    xp = _PoisonNumpy()
    assert gfft.fft_backend(xp) == (np.fft, {})
    a, k = randn(rng, (19, 23), np.complex64), randn(rng, (7, 30), np.complex64)
    for bnd in ("fill", "wrap", "symm"):
        got = gfft.correlate_core_fft(a, k, (25, 52), (-5, -29), bnd, np.complex64(1 - 2j), xp)
        ref = gfft.correlate_core_fft(_hi(a), _hi(k), (25, 52), (-5, -29), bnd, 1 - 2j, np)
        assert got.dtype == np.complex64
        assert_within(got, ref, 1e-5 * np.abs(a).max() * np.abs(k).sum(), bnd)
    spec, _ = make_spec((3, 6, 13, 11), (4, 3, 4, 5), None, (2, 3), ((2, 1), (0, 3)), (2, 1), 2,
                        np.float32, 2)
    x, w, dy = randn(rng, spec.input_shape, np.float32), randn(rng, spec.weight_shape, np.float32), \
        randn(rng, spec.output_shape, np.float32)
    for form in gfft.STRIDE_FORMS:
        _check_op("fprop", spec, x, w, dy, gfft.fprop(x, w, spec, xp, form=form))
    _check_op("dgrad", spec, x, w, dy, gfft.dgrad(dy, w, spec, xp))
    _check_op("wgrad", spec, x, w, dy, gfft.wgrad(x, dy, spec, xp))


# ----------------------------------------------------------------------------
# convolutions
# ----------------------------------------------------------------------------

# (input shape, weight shape, stride, padding, dilation, groups)
CONV_CASES = [
    ((2, 4, 17, 13), (6, 4, 3, 4), 1, 1, 1, 1),
    ((2, 4, 17, 13), (6, 2, 3, 5), (2, 3), ((2, 1), (1, 0)), (1, 2), 2),
    ((1, 3, 19), (3, 1, 5), 3, 2, 2, 3),                                  # 1-D depthwise
    ((2, 2, 9, 8, 7), (4, 1, 3, 2, 3), (2, 1, 2), 1, (1, 2, 1), 2),       # 3-D
    ((3, 6, 16, 15), (6, 1, 4, 4), 2, 3, 2, 6),                           # d = s: half the phases
    ((2, 4, 23, 22), (4, 4, 7, 7), 3, 0, 3, 1),
    ((1, 2, 40, 37), (3, 2, 15, 15), 1, "same", 1, 1),                    # large kernel
    ((0, 2, 9, 9), (3, 2, 3, 3), 1, 0, 1, 1),                             # empty batch
]


def _spec(case, dtype):
    ishape, wshape, stride, pad, dil, groups = case
    nd = len(ishape) - 2
    return make_spec(ishape, wshape, None, stride, pad, dil, groups, dtype, nd)[0]


def _check_op(op, spec, x, w, dy, got):
    """got against the float64 reference of `op`, within the documented bound."""
    dt = reference.compute_dtype(spec.dtype)
    hx, hw, hdy = _hi(x), _hi(w), _hi(dy)
    g, kg, cg = spec.groups, spec.k_per_group, spec.c_per_group
    if op == "fprop":
        ref = reference.conv(hx, hw, None, spec, accumulate="float64")
        big, rows = np.abs(hx).max(initial=0), np.abs(hw).reshape(spec.k, -1).sum(1).max(initial=0)
        Ls = [2 * (i + lo + hi) for i, (lo, hi) in zip(spec.in_size, spec.pad)]
    elif op == "dgrad":
        ref = reference.dgrad(hdy, hw, spec, accumulate="float64")
        big = np.abs(hdy).max(initial=0)
        rows = np.abs(hw).reshape(g, kg, cg, -1).sum(axis=(1, 3)).max(initial=0)
        Ls = [2 * (p + k * d) for p, k, d in zip(spec.out_size, spec.kernel, spec.dilation)]
    else:
        ref = reference.wgrad(hx, hdy, spec, accumulate="float64")
        big = np.abs(hx).max(initial=0)
        rows = np.abs(hdy).sum(axis=tuple(a for a in range(hdy.ndim) if a != 1)).max(initial=0)
        Ls = [2 * (i + lo + hi) for i, (lo, hi) in zip(spec.in_size, spec.pad)]
    assert np.asarray(got).dtype == dt, f"{op}: dtype {got.dtype} != {dt}"
    bound = C_BOUND * _eps(dt) * math.log2(max(math.prod(Ls), 2)) * big * rows + 1e-300
    assert_within(got, ref, bound, f"{op} {spec}")


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}-{c[1]}-s{c[2]}")
@pytest.mark.parametrize("dtype", FLOATS + (np.float16,))
def test_conv_operators_match_reference(rng, case, dtype):
    spec = _spec(case, dtype)
    x, w, dy = (randn(rng, s, dtype) for s in (spec.input_shape, spec.weight_shape, spec.output_shape))
    for form in gfft.STRIDE_FORMS:
        _check_op("fprop", spec, x, w, dy, gfft.fprop(x, w, spec, np, form=form))
    _check_op("fprop", spec, x, w, dy, gfft.fprop(x, w, spec))
    _check_op("dgrad", spec, x, w, dy, gfft.dgrad(dy, w, spec, np))
    _check_op("wgrad", spec, x, w, dy, gfft.wgrad(x, dy, spec, np))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_high_dynamic_range(rng, dtype):
    spec = _spec(((2, 3, 30, 27), (4, 3, 9, 8), 2, 4, 1, 1), dtype)

    def hdr(shape):
        return (rng.choice([-1, 1], shape) * 10.0 ** rng.uniform(-6, 6, shape)).astype(dtype)
    x, w, dy = hdr(spec.input_shape), hdr(spec.weight_shape), hdr(spec.output_shape)
    for form in gfft.STRIDE_FORMS:
        _check_op("fprop", spec, x, w, dy, gfft.fprop(x, w, spec, form=form))
    _check_op("dgrad", spec, x, w, dy, gfft.dgrad(dy, w, spec))
    _check_op("wgrad", spec, x, w, dy, gfft.wgrad(x, dy, spec))


def test_conv_blocks(rng, monkeypatch):
    # a workspace of a few spectra forces blocks over the batch and the output channels
    spec = _spec(((5, 4, 12, 11), (6, 2, 5, 4), (2, 1), 2, (1, 2), 2), np.float64)
    x, w, dy = (randn(rng, s) for s in (spec.input_shape, spec.weight_shape, spec.output_shape))
    whole = (gfft.fprop(x, w, spec), gfft.dgrad(dy, w, spec), gfft.wgrad(x, dy, spec))
    monkeypatch.setattr(gfft, "WORKSPACE_BYTES", 3 * 16 * 12 * 8)
    blocked = (gfft.fprop(x, w, spec), gfft.dgrad(dy, w, spec), gfft.wgrad(x, dy, spec))
    for a, b in zip(whole, blocked):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_transposed_conv_output_padding(rng):
    # conv_transpose2d is the dgrad of its forward spec, whose high padding may be negative
    from gpuconv.spec import transpose_spec
    spec, _ = transpose_spec((2, 4, 7, 6), (4, 3, 5, 4), None, (3, 2), 1, (2, 1), 1, 1,
                             np.float64, 2)
    dy = randn(rng, spec.output_shape)
    w = randn(rng, spec.weight_shape)
    _check_op("dgrad", spec, None, w, dy, gfft.dgrad(dy, w, spec))


def test_integer_and_bad_input():
    spec = _spec(((1, 2, 9, 9), (3, 2, 3, 3), 1, 0, 1, 1), np.int32)
    x = np.ones(spec.input_shape, np.int32)
    w = np.ones(spec.weight_shape, np.int32)
    with pytest.raises(TypeError, match="integer"):
        gfft.fprop(x, w, spec)
    assert not gfft.conv_cost_model(spec)
    with pytest.raises(ValueError, match="form"):
        gfft.fprop(x.astype(np.float32), w.astype(np.float32),
                   _spec(((1, 2, 9, 9), (3, 2, 3, 3), 2, 0, 1, 1), np.float32), form="fast")
    with pytest.raises(ValueError, match="op"):
        gfft.conv_cost_model(spec, op="backward")
    with pytest.raises(ValueError, match="device"):
        gfft.conv_cost_model(spec, device="tpu")


def test_conv_cost_model():
    big = _spec(((8, 32, 64, 64), (32, 32, 31, 31), 1, "same", 1, 1), np.float32)
    small = _spec(((8, 32, 64, 64), (32, 32, 3, 3), 1, 1, 1, 1), np.float32)
    for op in ("fprop", "dgrad", "wgrad"):
        assert gfft.conv_cost_model(big, op).use_fft, gfft.conv_cost_model(big, op).reason
        assert not gfft.conv_cost_model(small, op).use_fft, gfft.conv_cost_model(small, op).reason
    strided = _spec(((8, 16, 128, 128), (16, 16, 15, 15), 4, 7, 1, 1), np.float32)
    cost = gfft.conv_cost_model(strided)
    assert cost.form == "polyphase" and cost.fft_s > 0 and cost.workspace_bytes > 0
    assert "FFT" in cost.reason


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_public_conv_algorithm_fft(rng, nd):
    # wired through the engine: conv{nd}d(..., algorithm="fft") on the CPU path
    torch = pytest.importorskip("torch")
    size = {1: (30,), 2: (21, 18), 3: (9, 8, 10)}[nd]
    ker = {1: (9,), 2: (7, 5), 3: (3, 4, 3)}[nd]
    x = randn(rng, (2, 4) + size, np.float64)
    w = randn(rng, (6, 2) + ker, np.float64)
    b = randn(rng, (6,), np.float64)
    fn = getattr(gpuconv, f"conv{nd}d")
    try:
        got = fn(x, w, b, stride=2, padding=3, dilation=1, groups=2, algorithm="fft")
    except ValueError as exc:          # the engine does not take algorithm="fft" yet
        pytest.skip(f"algorithm='fft' not wired: {exc}")
    ref = getattr(torch.nn.functional, f"conv{nd}d")(torch.from_numpy(x), torch.from_numpy(w),
                                                     torch.from_numpy(b), stride=2, padding=3, groups=2)
    np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-11 * np.abs(ref.numpy()).max())


def test_every_mode_boundary_fill_combination_small(rng):
    # exhaustive over origins near the edges: the core contract itself, with any fillvalue
    a, k = randn(rng, (6, 5)), randn(rng, (4, 7))
    for o0, o1, bnd in itertools.product((-9, -3, 0, 2, 5), (-8, 0, 3), ("fill", "wrap", "symm")):
        got = gfft.correlate_core_fft(a, k, (7, 9), (o0, o1), bnd, -1.75)
        from gpuconv.signal import correlate_core
        ref = correlate_core(a, k, (7, 9), (o0, o1), bnd, -1.75)
        assert_within(got, ref, 1e-13 * 1.75 * np.abs(a).max() * np.abs(k).sum() + 1e-13,
                      f"origin {(o0, o1)} {bnd}")
