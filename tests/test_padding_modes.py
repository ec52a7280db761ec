"""nn.Conv's padding modes (reflect, replicate, circular) on the CPU path and the
FFT path, resolved while each path stages its input: no padded copy of the
whole input (np.pad is never called, and the peak memory stays that of zeros
mode).

Expected values: torch's F.pad(mode) then a valid convolution, in float64;
torch refuses circular padding that wraps more than once, and complex reflect
padding, so there np.pad(mode="wrap") (or the mode's np.pad) then
gpuconv.reference.conv of the valid convolution.
"""
from __future__ import annotations

import math
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

import gpuconv
from gpuconv import _native, cpu, reference
from gpuconv import fft as gfft
from gpuconv.reference import fill_extended, pad_indices, source_index
from gpuconv.spec import make_spec
from gpuconv.winograd import conv_winograd
from util import assert_close, randn

torch = pytest.importorskip("torch")
F = torch.nn.functional

MODES = ("reflect", "replicate", "circular")
NP_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
CONV = {1: gpuconv.conv1d, 2: gpuconv.conv2d, 3: gpuconv.conv3d}


# ----------------------------------------------------------------------------
# the index maps
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_pad_indices_match_np_pad(mode):
    for n in range(1, 10):
        x = np.arange(n) * 10 + 7
        for lo in range(0, 26, 3 if n > 4 else 1):
            for hi in range(0, 26, 2):
                want = np.pad(x, (lo, hi), mode=NP_MODE[mode])
                got = x[pad_indices(n, lo, hi, mode)]
                assert np.array_equal(got, want), f"{mode} n={n} pad=({lo}, {hi}): {got} != {want}"


def test_source_index_refuses_empty_axis_and_unknown_mode():
    with pytest.raises(ValueError, match="length 0"):
        source_index(np.arange(3), 0, "circular")
    with pytest.raises(ValueError, match="mirror"):
        source_index(np.arange(3), 4, "mirror")


@pytest.mark.parametrize("mode", ("zeros",) + MODES)
def test_fill_extended_matches_np_pad(rng, mode):
    """dst[..., i] = ext(src)[..., start + step*i] against np.pad of the whole input,
    windows anywhere (inside, across either edge, entirely outside, many periods
    away), any step, 1-3 dims; dst poisoned with NaN first."""
    for _ in range(150):
        nd = int(rng.integers(1, 4))
        sizes = tuple(int(v) for v in rng.integers(1, 6, nd))
        counts = tuple(int(v) for v in rng.integers(0, 8, nd))
        starts = tuple(int(v) for v in rng.integers(-9, 9, nd))
        steps = tuple(int(v) for v in rng.integers(1, 4, nd))
        src = randn(rng, (2, 3) + sizes)
        # the window's positions, shifted by `margin` into an np.pad of the input
        margin = 40
        pads = tuple((margin, margin) for _ in sizes)
        if mode == "zeros":
            big = np.pad(src, ((0, 0), (0, 0)) + pads)
        else:
            big = np.pad(src, ((0, 0), (0, 0)) + pads, mode=NP_MODE[mode])
        want = big[(slice(None),) * 2 + tuple(
            slice(margin + st, margin + st + sp * (q - 1) + 1, sp) if q else slice(0, 0)
            for st, sp, q in zip(starts, steps, counts))]
        dst = np.full((2, 3) + counts, np.nan)
        fill_extended(dst, src, starts, steps, mode)
        assert np.array_equal(dst, want), f"{mode} sizes={sizes} starts={starts} steps={steps}"


# ----------------------------------------------------------------------------
# expected values
# ----------------------------------------------------------------------------

def _pairs(spec):
    return tuple(spec.pad)


def expected(x, w, b, spec, mode):
    """The convolution of x padded by `mode`: torch (F.pad + F.conv, float64) where
    torch takes it, else np.pad + the reference's valid convolution."""
    pads = _pairs(spec)
    valid = replace(spec, in_size=tuple(i + lo + hi for i, (lo, hi) in zip(spec.in_size, pads)),
                    pad=((0, 0),) * spec.nd, padding_mode="zeros")
    wraps_once = all(lo <= i and hi <= i for i, (lo, hi) in zip(spec.in_size, pads))
    if np.dtype(x.dtype).kind != "c" and (mode != "circular" or wraps_once):
        xt = torch.from_numpy(x.astype(np.float64))
        flat = [p for lo_hi in reversed(pads) for p in lo_hi]          # last dim first
        xt = F.pad(xt, flat, mode=mode)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spec.nd]
        bt = None if b is None else torch.from_numpy(b.astype(np.float64))
        return conv(xt, torch.from_numpy(w.astype(np.float64)), bt, spec.stride, 0,
                    spec.dilation, spec.groups).numpy()
    hi_dt = np.complex128 if np.dtype(x.dtype).kind == "c" else np.float64
    xpad = np.pad(x.astype(hi_dt), ((0, 0), (0, 0)) + pads, mode=NP_MODE[mode])
    return reference.conv(xpad, w.astype(hi_dt), None if b is None else b.astype(hi_dt),
                          replace(valid, dtype=np.dtype(hi_dt)), accumulate="float64")


def _spec(x_shape, w_shape, stride, padding, dilation, groups, dtype=np.float64):
    nd = len(x_shape) - 2
    return make_spec(x_shape, w_shape, None, stride, padding, dilation, groups, np.dtype(dtype),
                     nd)[0]


def random_case(rng, nd, mode, kind):
    """(x shape, w shape, stride, padding, dilation, groups): `kind` 'im2col'
    (groups 1-2, several channels per group), 'depthwise' (groups = C,
    multiplier 1 or 2), or 'same'."""
    ks = tuple(int(v) for v in rng.integers(1, 4, nd))
    dil = tuple(int(v) for v in rng.integers(1, 3, nd))
    if kind == "depthwise":
        c = int(rng.choice([3, 8, 9]))
        groups, k = c, c * int(rng.integers(1, 3))
    else:
        groups = int(rng.integers(1, 3))
        c, k = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 3))
    ext = [d * (kk - 1) + 1 for d, kk in zip(dil, ks)]
    if kind == "same":
        stride = (1,) * nd
        padding = "same"
        ins = tuple(int(rng.integers(max(2, e // 2 + 1), 11)) for e in ext)
    else:
        stride = tuple(int(v) for v in rng.integers(1, 4, nd))
        ins = tuple(int(v) for v in rng.integers(2, 11 if nd < 3 else 7, nd))
        limit = lambda i: i if mode == "reflect" else 3 * i + 2       # circular wraps again
        padding = tuple((int(rng.integers(0, limit(i))), int(rng.integers(0, limit(i))))
                        for i in ins)
        ins = tuple(max(i, e - lo - hi) for i, e, (lo, hi) in zip(ins, ext, padding))
        if mode == "reflect":
            padding = tuple((min(lo, i - 1), min(hi, i - 1)) for i, (lo, hi) in zip(ins, padding))
            ins = tuple(max(i, e - lo - hi) for i, e, (lo, hi) in zip(ins, ext, padding))
    n = int(rng.integers(1, 3))
    return (n, c) + ins, (k, c // groups) + ks, stride, padding, dil, groups


def _run_public(x, w, b, case, mode, algorithm="auto"):
    _, _, stride, padding, dil, groups = case
    nd = x.ndim - 2
    return CONV[nd](x, w, b, stride, padding, dil, groups, padding_mode=mode, algorithm=algorithm)


# ----------------------------------------------------------------------------
# the CPU path against torch
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["im2col", "depthwise", "same"])
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_cpu_path_matches_torch(rng, mode, nd, kind):
    for _ in range(12):
        case = random_case(rng, nd, mode, kind)
        spec = replace(_spec(*case), padding_mode=mode)
        x, w, b = randn(rng, case[0]), randn(rng, case[1]), randn(rng, (case[1][0],))
        got = _run_public(x, w, b, case, mode)
        assert_close(got, expected(x, w, b, spec, mode), np.float64,
                     what=f"{mode} {kind} {case}")


@pytest.mark.parametrize("dtype", [np.float32, np.complex64, np.complex128])
@pytest.mark.parametrize("mode", MODES)
def test_cpu_path_other_dtypes(rng, mode, dtype):
    for nd, kind in [(1, "im2col"), (2, "im2col"), (2, "depthwise"), (3, "same"), (2, "same")]:
        case = random_case(rng, nd, mode, kind)
        spec = replace(_spec(*case, dtype=dtype), padding_mode=mode)
        x, w = randn(rng, case[0], dtype), randn(rng, case[1], dtype)
        got = _run_public(x, w, None, case, mode)
        assert_close(got, expected(x, w, None, spec, mode), dtype, what=f"{mode} {kind} {case}")


@pytest.mark.parametrize("mode", MODES)
def test_cpu_path_integers_exact(rng, mode):
    """Integer inputs (computed in int64, as the zeros mode) give np.pad + the
    reference's valid convolution exactly."""
    for nd, kind in [(1, "im2col"), (2, "im2col"), (2, "depthwise"), (3, "same")]:
        case = random_case(rng, nd, mode, kind)
        x = rng.integers(-50, 50, case[0]).astype(np.int32)
        w = rng.integers(-50, 50, case[1]).astype(np.int32)
        spec = _spec(*case, dtype=np.int32)
        xpad = np.pad(x, ((0, 0), (0, 0)) + tuple(spec.pad), mode=NP_MODE[mode])
        valid = _spec(xpad.shape, w.shape, case[2], 0, case[4], case[5], np.int32)
        want = reference.conv(xpad, w, None, valid).astype(np.int32)
        got = _run_public(x, w, None, case, mode)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want, err_msg=f"{mode} {kind} {case}")


def _dw_spec(rng, nd, groups, mult, stride, width, mode, dtype=np.float64):
    """A depthwise spec whose last output dim is about `width` (the compiled
    kernels' rows form above 16-32 outputs, lanes form below with >= 8 groups)."""
    ks = (3,) * (nd - 1) + (int(rng.choice([3, 5])),)
    dil = (1,) * (nd - 1) + (int(rng.integers(1, 3)),)
    ins = tuple(int(v) for v in rng.integers(4, 8, nd - 1)) + (width * stride + dil[-1] * (ks[-1] - 1),)
    padding = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in ins)
    if mode == "circular":
        padding = padding[:-1] + ((ins[-1] + 3, 2 * ins[-1] + 1),)   # wraps more than once
    spec = _spec((2, groups) + ins, (groups * mult, 1) + ks, stride, padding, dil, groups, dtype)
    return replace(spec, padding_mode=mode)


@pytest.mark.skipif(_native.kernel("depthwise", np.float32) is None,
                    reason="the compiled depthwise kernels are not built here")
@pytest.mark.parametrize("form", ["depthwise", "depthwise_lanes"])
@pytest.mark.parametrize("mode", MODES)
def test_native_depthwise_forms(rng, mode, form):
    """The compiled forward kernel's both forms, every stride phase layout, 1-3 dims,
    multiplier 1 and 2, float32 and float64, output poisoned before the call."""
    for nd in (1, 2, 3):
        for stride in (1, 2, 3):
            for mult, groups, width in ((1, 8, 7), (2, 11, 20), (1, 3, 33)):
                dtype = np.float32 if (nd + stride) % 2 else np.float64
                spec = _dw_spec(rng, nd, groups, mult, stride, width, mode, dtype)
                assert cpu.native_depthwise_ok(spec, dtype)
                x, w = randn(rng, spec.input_shape, dtype), randn(rng, spec.weight_shape, dtype)
                b = randn(rng, (spec.k,), dtype)
                out = np.full(spec.output_shape, np.nan, dtype=dtype)
                cpu.depthwise_native(x, w, b, spec, dtype, out=out, kernel=form)
                assert_close(out, expected(x, w, b, spec, mode), dtype,
                             what=f"{form} {mode} nd={nd} stride={stride} {spec}")


@pytest.mark.skipif(_native.kernel("depthwise_wgrad", np.float64) is None,
                    reason="the compiled depthwise kernels are not built here")
@pytest.mark.parametrize("form", ["depthwise_wgrad", "depthwise_wgrad_lanes"])
@pytest.mark.parametrize("mode", MODES)
def test_native_depthwise_wgrad_reads_the_extended_input(rng, mode, form):
    for nd, stride in ((1, 2), (2, 1), (3, 2)):
        spec = _dw_spec(rng, nd, 9, 2, stride, 6, mode)
        x, dy = randn(rng, spec.input_shape), randn(rng, spec.output_shape)
        got = cpu.depthwise_wgrad_native(x, dy, spec, np.float64, kernel=form)
        assert_close(got, reference.wgrad(x, dy, spec, accumulate="float64"), np.float64,
                     what=f"{form} {mode} {spec}")


def test_native_depthwise_dgrad_refuses_padding_modes(rng):
    spec = _dw_spec(rng, 2, 8, 1, 1, 8, "reflect")
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        cpu.depthwise_dgrad_native(randn(rng, spec.output_shape), randn(rng, spec.weight_shape),
                                   spec, np.float64)


@pytest.mark.parametrize("mode", MODES)
def test_numpy_depthwise_without_the_compiled_kernels(rng, mode, monkeypatch):
    """The NumPy depthwise forms (stride 1: flat slabs; strided: per-tap views)."""
    monkeypatch.setattr(cpu, "native_depthwise_ok", lambda *a, **k: False)
    for nd in (1, 2, 3):
        for stride in (1, 2):
            spec = _dw_spec(rng, nd, 5, 2, stride, 9, mode)
            x, w = randn(rng, spec.input_shape), randn(rng, spec.weight_shape)
            got = cpu.conv(x, w, None, spec)
            assert_close(got, expected(x, w, None, spec, mode), np.float64,
                         what=f"numpy depthwise {mode} {spec}")


@pytest.mark.parametrize("mode", MODES)
def test_winograd(rng, mode):
    """Winograd F(2x2, 3x3): the public path at 64 channels (where cpu.use_winograd
    takes it) and the transform directly on small shapes with dilation."""
    case = ((1, 64, 9, 10), (64, 64, 3, 3), 1, ((1, 2), (2, 1)), 1, 1)
    spec = replace(_spec(*case), padding_mode=mode)
    assert cpu.use_winograd(spec, np.float64)
    x, w = randn(rng, case[0]), randn(rng, case[1])
    assert_close(_run_public(x, w, None, case, mode), expected(x, w, None, spec, mode),
                 np.float64, what=f"winograd {mode}")
    for pad in (((1, 1), (1, 1)), ((2, 0), (0, 2)), ((0, 3), (4, 1))):
        for dil in ((1, 1), (2, 1), (1, 3)):
            pad_ok = pad if mode != "reflect" else tuple((min(lo, 4), min(hi, 4)) for lo, hi in pad)
            spec = replace(_spec((2, 3, 9, 7), (4, 3, 3, 3), 1, pad_ok, dil, 1), padding_mode=mode)
            x, w = randn(rng, spec.input_shape), randn(rng, spec.weight_shape)
            assert_close(conv_winograd(x, w, spec, np.float64), expected(x, w, None, spec, mode),
                         np.float64, what=f"winograd {mode} {pad_ok} {dil}")


@pytest.mark.parametrize("mode", ["circular", "replicate"])      # reflect: padding < input size
def test_circular_wraps_many_times(rng, mode):
    """Padding several times the input (circular, replicate) equals np.pad then a
    valid convolution (torch refuses circular here)."""
    for nd in (1, 2, 3):
        ins = (3, 2, 4)[:nd]
        padding = tuple((3 * i + 1, 2 * i + 3) for i in ins)
        for groups, c, k in ((1, 2, 3), (2, 4, 2), (4, 4, 8)):
            case = ((2, c) + ins, (k, c // groups) + (3,) * nd, 2, padding, 2, groups)
            spec = replace(_spec(*case), padding_mode=mode)
            x, w = randn(rng, case[0]), randn(rng, case[1])
            pads = ((0, 0), (0, 0)) + padding
            xpad = np.pad(x, pads, mode=NP_MODE[mode])
            want = reference.conv(xpad, w, None, _spec(xpad.shape, w.shape, 2, 0, 2, groups),
                                  accumulate="float64")
            assert_close(_run_public(x, w, None, case, mode), want, np.float64,
                         what=f"{mode} wraps {case}")
            assert_close(_run_public(x, w, None, case, mode, "fft"), want,
                         tol=1e-11, what=f"fft {mode} wraps {case}")


# ----------------------------------------------------------------------------
# the FFT path
# ----------------------------------------------------------------------------

def _fft_bound(x, w, spec):
    """gpuconv.fft's documented error bound of fprop: 4 eps log2(L) max|x| max_k sum|w_k|."""
    dt = reference.compute_dtype(spec.dtype)
    L = math.prod(2 * (i + lo + hi) for i, (lo, hi) in zip(spec.in_size, spec.pad))
    rows = np.abs(w.astype(np.complex128)).reshape(spec.k, -1).sum(1).max()
    return 4.0 * float(np.finfo(dt).eps) * math.log2(max(L, 2)) * np.abs(x).max() * rows


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
@pytest.mark.parametrize("mode", MODES)
def test_fft_path_matches_torch(rng, mode, dtype):
    """algorithm='fft' (7x7 and larger kernels), both stride forms, asymmetric and
    'same' padding, groups, dilation, 1-3 dims, against torch."""
    cases = [
        ((2, 3, 17, 15), (4, 3, 7, 7), 1, "same", 1, 1),
        ((1, 4, 20, 19), (6, 2, 7, 9), 2, ((3, 6), (5, 2)), 1, 2),
        ((2, 2, 18, 16), (2, 1, 7, 7), 3, ((6, 1), (0, 6)), (2, 1), 2),
        ((2, 3, 40), (5, 3, 11), 2, ((9, 4),), 1, 1),
        ((1, 2, 9, 10, 8), (3, 2, 7, 7, 7), 1, ((3, 3), (6, 0), (2, 5)), 1, 1),
    ]
    for case in cases:
        if mode == "reflect":                    # torch's limit: padding < input size
            assert all(lo < i and hi < i for i, (lo, hi) in zip(
                case[0][2:], _spec(*case).pad))
        spec = replace(_spec(*case, dtype=dtype), padding_mode=mode)
        x, w, b = randn(rng, case[0], dtype), randn(rng, case[1], dtype), randn(rng, (case[1][0],), dtype)
        want = expected(x, w, b, spec, mode)
        bound = _fft_bound(x, w, spec)
        got = _run_public(x, w, b, case, mode, "fft")
        assert got.dtype == np.dtype(dtype)
        assert_close(got, want, tol=bound / np.abs(want).max(), what=f"fft {mode} {case}")
        for form in gfft.STRIDE_FORMS:
            got = gfft.fprop(x, w, spec, np, form=form) + b.reshape((1, -1) + (1,) * spec.nd)
            assert_close(got, want, tol=bound / np.abs(want).max(), what=f"fft {form} {mode} {case}")


@pytest.mark.parametrize("mode", MODES)
def test_fft_on_every_path(path, rng, mode):
    """algorithm='fft' through the engine's CPU and device branches (the device
    FFT branch resolves the mode in gpuconv.fft as the CPU one does)."""
    case = ((2, 3, 19, 16), (4, 3, 9, 7), 2, ((4, 7), (3, 5)), 1, 1)
    spec = replace(_spec(*case), padding_mode=mode)
    x, w, b = randn(rng, case[0]), randn(rng, case[1]), randn(rng, (4,))
    got = path.get(_run_public(path.asarray(x), path.asarray(w), path.asarray(b), case, mode,
                               "fft"))
    want = expected(x, w, b, spec, mode)
    assert_close(got, want, tol=_fft_bound(x, w, spec) / np.abs(want).max(), what=f"{path} {mode}")


@pytest.mark.parametrize("mode", MODES)
def test_fft_wgrad_reads_the_extended_input(rng, mode):
    spec = replace(_spec((2, 4, 13, 12), (6, 2, 7, 7), 2, ((3, 5), (6, 2)), 1, 2), padding_mode=mode)
    x, dy = randn(rng, spec.input_shape), randn(rng, spec.output_shape)
    want = reference.wgrad(x, dy, spec, accumulate="float64")
    assert_close(gfft.wgrad(x, dy, spec, np), want, tol=1e-11, what=f"fft wgrad {mode}")


class _FakeCupy:
    """A namespace that is NumPy under another name: fill_extended and the FFT
    engine take only functions of `xp` (CuPy's subset), so they run unchanged."""
    __name__ = "fakecupy"

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.parametrize("mode", MODES)
def test_fill_extended_generic_namespace(rng, mode):
    src = randn(rng, (2, 3, 5, 4))
    dst = np.full((2, 3, 9, 11), np.nan)
    fill_extended(dst, src, (-3, -4), (1, 1), mode, xp=_FakeCupy())
    want = np.pad(src, ((0, 0), (0, 0), (3, 1), (4, 3)), mode=NP_MODE[mode])
    assert np.array_equal(dst, want)


# ----------------------------------------------------------------------------
# no padded copy of the whole input
# ----------------------------------------------------------------------------

def _no_pad(*args, **kwargs):
    raise AssertionError("a padded copy of the whole input was made (np.pad / pad_input)")


CPU_FORMS = [
    # (x shape, w shape, stride, padding, dilation, groups, algorithm): every form
    ((2, 5, 21, 19), (6, 5, 3, 3), 1, ((2, 3), (1, 4)), 1, 1, "auto"),         # im2col
    ((2, 4, 21, 19), (4, 2, 3, 3), 2, ((2, 3), (1, 4)), (2, 1), 2, "auto"),    # im2col, phases
    ((1, 64, 10, 9), (64, 64, 3, 3), 1, ((1, 2), (2, 1)), 1, 1, "auto"),       # winograd
    ((2, 8, 13, 12), (16, 1, 3, 3), 1, ((2, 1), (1, 2)), 1, 8, "auto"),        # depthwise
    ((2, 8, 13, 12), (8, 1, 3, 5), 2, ((2, 1), (1, 2)), 1, 8, "auto"),         # depthwise strided
    ((2, 3, 20, 17), (4, 3, 7, 7), 1, "same", 1, 1, "fft"),                    # FFT subsample
    ((2, 3, 20, 17), (4, 3, 7, 7), 2, ((3, 4), (2, 5)), 1, 1, "fft"),          # FFT (cost model)
]


@pytest.mark.parametrize("numpy_depthwise", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_no_whole_input_padding(rng, mode, numpy_depthwise, monkeypatch):
    """Every CPU form and the FFT path with np.pad and reference.pad_input made to
    raise, against torch."""
    cases = []
    for case in CPU_FORMS:
        x, w = randn(rng, case[0]), randn(rng, case[1])
        spec = replace(_spec(*case[:6]), padding_mode=mode)
        cases.append((case, x, w, expected(x, w, None, spec, mode)))
    if numpy_depthwise:
        monkeypatch.setattr(cpu, "native_depthwise_ok", lambda *a, **k: False)
    monkeypatch.setattr(np, "pad", _no_pad)
    monkeypatch.setattr(reference, "pad_input", _no_pad)
    for case, x, w, want in cases:
        got = _run_public(x, w, None, case[:6], mode, case[6])
        tol = 1e-12 if case[6] == "auto" else 1e-11
        assert_close(got, want, tol=tol, what=f"{mode} {case}")
    for form in gfft.STRIDE_FORMS:
        case, x, w, want = cases[-1]
        spec = replace(_spec(*case[:6]), padding_mode=mode)
        assert_close(gfft.fprop(x, w, spec, np, form=form), want, tol=1e-11, what=f"fft {form}")


def _peak(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("algorithm,case", [
    ("auto", ((2, 16, 96, 96), (16, 16, 3, 3), 1, ((2, 2), (3, 1)), 1, 1)),     # im2col
    ("auto", ((2, 32, 96, 96), (32, 1, 5, 5), 2, ((2, 2), (3, 1)), 1, 32)),    # depthwise
    # FFT: 126 + 4 (zeros: the far border aliases into zeros) and 126 + 8 (a mode's
    # border is data) both round to the 7-smooth length 135, so the spectra match
    ("fft", ((2, 8, 126, 126), (8, 8, 9, 9), 1, ((4, 4), (4, 4)), 1, 1)),
])
def test_peak_memory_as_zeros_mode(rng, algorithm, case):
    """tracemalloc's peak of a padding mode stays within zeros mode's plus the
    border's bytes (the staging copies are padded size) plus 1/8 of the input's;
    a padded copy of the input adds ~1.1x the input (the check proves it would
    fail by measuring that copy too)."""
    x, w = randn(rng, case[0], np.float32), randn(rng, case[1], np.float32)
    padded = math.prod(i + lo + hi for i, (lo, hi) in zip(case[0][2:], case[3]))
    border = (padded - math.prod(case[0][2:])) * case[0][0] * case[0][1] * x.itemsize

    def run(mode):
        return _run_public(x, w, None, case, mode, algorithm)

    run("zeros")                                      # scratch buffers, plans, caches
    zeros = _peak(lambda: run("zeros"))
    copied = _peak(lambda: (np.pad(x, ((0, 0), (0, 0)) + case[3], mode="wrap"), run("zeros")))
    assert copied - zeros > x.nbytes, "the peak measurement does not see a padded copy"
    for mode in MODES:
        run(mode)
        peak = _peak(lambda: run(mode))
        assert peak - zeros < border + x.nbytes / 8, (
            f"{mode}: peak {peak / 2**20:.2f} MiB vs zeros {zeros / 2**20:.2f} MiB "
            f"(input {x.nbytes / 2**20:.2f} MiB)")
