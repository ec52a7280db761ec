"""Padding modes (reflect, replicate, circular) resolved inside the forward kernels' input
loads, in the simulator: every forward family forced by name (direct, tiled_smem,
tiled_smem_small, depthwise with both tiles, im2col, implicit_gemm), every mode, float32 /
float64 / float16 (the implicit GEMM: float16, bfloat16, float32 at precision "high"),
stride 1 and 2, dilation 1 and 2, asymmetric padding, reflect padding of size - 1, circular
(and replicate) padding larger than the input (the wrap goes round more than once), odd
sizes, groups, depth multiplier 2, 1-D and 3-D (direct, im2col).  Outputs are poisoned with
NaN; inputs fresh random data from a seed derived from the test id (replayable).

The reference is the definition of the modes, independent of gpuconv's own padding code:
np.pad(x, mode='reflect' | 'edge' | 'wrap') in float64, then gpuconv.reference.conv of the
padded input with zero padding (a valid convolution).  One case per family also runs under
the race detector with the alignment sanitizer.
"""
from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
import pytest

from gpuconv import reference
from gpuconv.cuda import conv, variants
from gpuconv.cuda.dispatch import supported_variants
from gpuconv.cuda.facts import DeviceFacts
from gpuconv.cuda.families import conv2d_depthwise as DW
from gpuconv.cuda.families import conv2d_implicit_gemm as IG
from gpuconv.spec import check_padding_mode_limits, make_spec

from kernel_helpers import TOL, assert_close

pytestmark = pytest.mark.sim
sim = pytest.importorskip("gpuconv.sim")
if not sim.sim_available():
    pytest.skip("simulator not available", allow_module_level=True)
ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

MODES = ("reflect", "replicate", "circular")
NP_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
FAMILIES = ("direct", "tiled_smem", "tiled_smem_small", "depthwise", "im2col", "implicit_gemm")
# (dtype, float32 precision): the FMA families take every real dtype exactly; the implicit
# GEMM takes float16, bfloat16 and float32 at "high" (3xTF32: FP32-level error)
DTYPES = {"fma": (("float32", "highest"), ("float64", "highest"), ("float16", "highest")),
          "tc": (("float16", "highest"), ("bfloat16", "highest"), ("float32", "high"))}

# (id, input, weight, stride, padding (lo, hi) per dim, dilation, groups).  Reflect runs only
# where every padding is below the input size (torch's limit; the public layer's error).
CASES_2D = [
    # asymmetric padding, odd sizes, stride 1, dilation 1
    ("s1_asym", (2, 3, 7, 9), (4, 3, 3, 3), 1, ((2, 1), (0, 2)), 1, 1),
    # stride 2, dilation 2, groups 2, 3x2 kernel
    ("s2_d2_groups", (1, 4, 9, 8), (6, 2, 3, 2), 2, ((1, 3), (2, 1)), 2, 2),
    # reflect padding = size - 1 on both sides of both dims, stride (1, 2)
    ("pad_size_minus_1", (1, 2, 5, 4), (3, 2, 2, 3), (1, 2), ((4, 4), (3, 3)), 1, 1),
    # padding larger than the input: circular wraps two and three times (no reflect)
    ("pad_wraps", (1, 2, 3, 4), (2, 2, 3, 3), 1, ((7, 5), (9, 6)), (2, 1), 1),
    # depthwise, multiplier 2, stride 2 (also the grouped path of the other families)
    ("dw_m2_s2", (2, 3, 9, 11), (6, 1, 3, 3), 2, ((2, 1), (1, 2)), 1, 3),
    # depthwise 5x5 dilated (the generic tap path), padding past the map on the right
    ("dw_5x5_d2", (1, 2, 10, 13), (2, 1, 5, 5), 1, ((4, 3), (2, 9)), 2, 2),
    # depthwise with W = 24 (16-byte staging loads in interior tiles, row remaps there)
    ("dw_vec_w24", (1, 2, 11, 24), (2, 1, 3, 3), 1, ((2, 1), (1, 1)), 1, 2),
    # channels over several tiled stages and implicit-GEMM k-tiles, 1x1 on a padded map
    ("c20_1x1", (1, 20, 5, 6), (9, 20, 1, 1), 1, ((1, 2), (2, 1)), 1, 1),
]
CASES_1D = [
    ("1d_s2_d2", (2, 3, 11), (4, 3, 3), 2, ((3, 4),), 2, 1),
    ("1d_wraps", (1, 2, 4), (3, 2, 3), 1, ((9, 6),), 1, 1),
    ("1d_depthwise", (2, 3, 13), (3, 1, 5), 2, ((4, 2),), 1, 3),
]
CASES_3D = [
    ("3d_asym", (1, 2, 4, 5, 6), (3, 2, 2, 3, 3), (1, 2, 1), ((1, 2), (3, 0), (2, 2)), (1, 1, 2), 1),
    ("3d_wraps_groups", (1, 4, 3, 3, 4), (2, 2, 3, 2, 3), 1, ((4, 5), (2, 6), (1, 3)), 1, 2),
]


@pytest.fixture(scope="module")
def be():
    return sim.SimBackend()


@pytest.fixture(scope="module")
def be_race():
    return sim.SimBackend(racecheck=True, alignment=True)


def _spec(case, dt, mode):
    _, xs, ws, stride, pad, dil, groups = case
    spec, _ = make_spec(xs, ws, (ws[0],), stride, pad, dil, groups, dt, len(xs) - 2)
    spec = replace(spec, padding_mode=mode)
    check_padding_mode_limits(spec, mode)
    return spec


def _reflect_ok(case):
    _, xs, _, _, pad, _, _ = case
    return all(lo < n and hi < n for (lo, hi), n in zip(pad, xs[2:]))


def _data(case, mode, dtype, spec):
    rng = np.random.default_rng(zlib.crc32(f"{case[0]}/{mode}/{dtype}".encode()))     # replayable
    x = rng.uniform(-1.0, 1.0, spec.input_shape).astype(spec.dtype)
    w = rng.uniform(-1.0, 1.0, spec.weight_shape).astype(spec.dtype)
    b = rng.uniform(-1.0, 1.0, (spec.k,)).astype(spec.dtype)
    return x, w, b


def _ref(x, w, b, spec):
    """np.pad in the mode, then a valid convolution (float64)."""
    f64 = np.float64
    xp = np.pad(x.astype(f64), ((0, 0), (0, 0)) + spec.pad, mode=NP_MODE[spec.padding_mode])
    vspec = replace(spec, in_size=xp.shape[2:], pad=((0, 0),) * spec.nd, padding_mode="zeros")
    assert vspec.out_size == spec.out_size
    return reference.conv(xp, w.astype(f64), b.astype(f64), vspec, accumulate="float64")


def _check(be, family, case, mode, dtype, precision):
    dt = BF16 if dtype == "bfloat16" else np.dtype(dtype)
    if mode == "reflect" and not _reflect_ok(case):
        pytest.skip("reflect needs padding below the input size")
    spec = _spec(case, dt, mode)
    v = variants.get(family)
    ok, why = v.supports(spec, precision=precision) if family == "implicit_gemm" else v.supports(spec)
    if not ok:
        pytest.skip(f"{family} refuses: {why}")
    x, w, b = _data(case, mode, dtype, spec)
    want = _ref(x, w, b, spec)
    what = f"{family} {case[0]} {mode} {dtype}"
    y = np.full(spec.output_shape, np.nan, dtype=dt)
    assert conv.forward(x, w, b, spec, algorithm=family, backend=be, out=y, precision=precision) is y
    assert_close(y, want, TOL[dt], what)
    if family == "depthwise":                       # both tiles (the default picks one)
        for tile in DW.TILES:
            y = np.full(spec.output_shape, np.nan, dtype=dt)
            DW.launch(be, x, w, b, y, spec, 0, {"tile": tile, "planes": DW.planes_per_block(tile, spec)})
            assert_close(y, want, TOL[dt], f"{what} tile {tile}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES_2D, ids=[c[0] for c in CASES_2D])
@pytest.mark.parametrize("family", FAMILIES)
def test_padding_mode_2d(be, family, case, mode):
    for dtype, precision in DTYPES["tc" if family == "implicit_gemm" else "fma"]:
        _check(be, family, case, mode, dtype, precision)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES_1D + CASES_3D, ids=[c[0] for c in CASES_1D + CASES_3D])
@pytest.mark.parametrize("family", ("direct", "im2col", "tiled_smem_small", "depthwise"))
def test_padding_mode_1d_3d(be, family, case, mode):
    for dtype in ("float32", "float64", "float16"):
        _check(be, family, case, mode, dtype, "highest")


# one case per family under the race detector and the alignment sanitizer (the staging
# loops' shared-memory writes, the 16-byte loads), two modes
RACE = [("direct", CASES_3D[1]), ("tiled_smem", CASES_2D[1]), ("tiled_smem_small", CASES_2D[3]),
        ("depthwise", CASES_2D[5]), ("depthwise", CASES_2D[6]), ("im2col", CASES_2D[2]),
        ("implicit_gemm", CASES_2D[1])]


@pytest.mark.parametrize("mode", ("reflect", "circular"))
@pytest.mark.parametrize("family,case", RACE, ids=[f"{f}-{c[0]}" for f, c in RACE])
def test_padding_mode_racecheck(be_race, family, case, mode):
    _check(be_race, family, case, mode, "float16" if family == "implicit_gemm" else "float32", "highest")


def test_implicit_gemm_stages_the_extended_image(be):
    """A channels-last input is read in place in zeros mode but staged for a padding mode;
    the staging buffer (workspace) is the mode-extended image: (P-1)*sh + (R-1)*dh + 1 rows."""
    dt = np.dtype(np.float16)
    case = ("cl", (2, 16, 7, 6), (24, 16, 3, 3), 2, ((2, 1), (1, 2)), 1, 1)
    spec = _spec(case, dt, "circular")
    zspec = replace(spec, padding_mode="zeros")
    x, w, b = _data(case, "circular", "float16", spec)
    x_cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert IG.reads_in_place(x_cl, zspec) and not IG.reads_in_place(x_cl, spec)
    assert IG.staged_extent(zspec) == (7, 6)
    assert IG.staged_extent(spec) == ((spec.out_size[0] - 1) * 2 + 3, (spec.out_size[1] - 1) * 2 + 3) == (9, 9)
    cgp = IG.padded_channels(spec)
    assert IG.workspace_for(spec, 1) - IG.workspace_for(zspec, 1) == 2 * 2 * (9 * 9 - 7 * 6) * cgp
    y = conv.forward(x_cl, w, b, spec, algorithm="implicit_gemm", backend=be)
    assert IG.is_channels_last(y, spec)
    assert_close(y, _ref(x, w, b, spec), TOL[dt], "implicit_gemm channels-last circular")


@pytest.mark.parametrize("mode", MODES)
def test_every_forward_family_takes_every_mode(mode):
    """The dispatcher refuses no forward family for a padding mode where it takes the same
    spec with zeros: the engine's explicit-padding fallback is never needed on the device."""
    facts = DeviceFacts()
    for case, dt, precision in ((CASES_2D[1], np.float32, "highest"), (CASES_2D[1], np.float16, "highest"),
                                (CASES_2D[0], np.float32, "high"), (CASES_2D[4], np.float64, "highest"),
                                (CASES_3D[0], np.float32, "highest")):
        spec = _spec(case, np.dtype(dt), mode)
        zeros = supported_variants(replace(spec, padding_mode="zeros"), facts, precision)
        moded = supported_variants(spec, facts, precision)
        assert set(zeros) == set(moded) >= set(FAMILIES)
        for name, (ok, why) in zeros.items():
            assert moded[name][0] == ok, (name, mode, moded[name][1])
        assert any(ok for ok, _ in moded.values())
    for name in FAMILIES:
        assert variants.get(name).padding_modes, name


@pytest.mark.parametrize("mode", MODES)
def test_public_device_path_makes_no_padded_copy(mode, monkeypatch):
    """conv1d / conv2d / conv3d with a padding mode on the device path (the simulator, the
    dispatcher's own picks: direct, tiled, im2col, depthwise): np.pad is made to raise, and every
    launched kernel receives the input at its own size, with the mode in its spec; results
    against np.pad + a valid convolution, asymmetric padding through the device entry
    point, symmetric through the public functions."""
    import gpuconv
    launched = []
    get = variants.get

    def recording_get(name):
        v = get(name)

        def launch(backend, x, w, b, y, spec, act, config):
            launched.append((name, tuple(x.shape), spec.padding_mode))
            return v.launch(backend, x, w, b, y, spec, act, config)
        return replace(v, launch=launch)
    monkeypatch.setattr(conv.variants, "get", recording_get)
    rng = np.random.default_rng(zlib.crc32(f"no-copy-{mode}".encode()))
    cases = [  # (x, w, padding (lo, hi) per dim, groups, dtype, the dispatcher's pick)
        ((2, 3, 9, 10), (4, 3, 3, 3), ((2, 1), (1, 2)), 1, np.float64, "direct"),
        ((2, 32, 20, 21), (64, 32, 3, 3), ((1, 2), (2, 1)), 1, np.float32, "tiled_smem_small"),
        ((4, 32, 24, 23), (64, 32, 3, 3), ((1, 2), (2, 1)), 1, np.float64, "im2col"),
        ((2, 8, 12, 11), (8, 1, 5, 3), ((2, 2), (1, 1)), 8, np.float64, "depthwise"),
        ((2, 4, 13), (5, 4, 3), ((2, 1),), 1, np.float64, "direct"),
        ((1, 2, 5, 6, 7), (3, 2, 3, 3, 3), ((1, 1), (2, 1), (1, 2)), 1, np.float64, "direct")]

    def want_of(x, w, pad, g):
        xpad = np.pad(x, ((0, 0), (0, 0)) + pad, mode=NP_MODE[mode])
        return reference.conv(xpad, w, None, make_spec(xpad.shape, w.shape, None, 1, 0, 1, g,
                                                       np.dtype(np.float64), x.ndim - 2)[0])
    runs = []
    for xs, ws, pad, g, dt, pick in cases:
        x, w = rng.standard_normal(xs).astype(dt), rng.standard_normal(ws).astype(dt)
        sym = tuple((lo, lo) for lo, _ in pad)
        runs.append((x, w, pad, g, pick, want_of(x, w, pad, g), want_of(x, w, sym, g)))
    monkeypatch.setattr(np, "pad", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("np.pad: a padded copy of the whole input")))
    be = sim.SimBackend()
    for x, w, pad, g, pick, want, want_sym in runs:
        dt = x.dtype
        spec = make_spec(x.shape, w.shape, None, 1, pad, 1, g, dt, x.ndim - 2)[0]
        launched.clear()
        got = conv.forward(x, w, None, replace(spec, padding_mode=mode), backend=be)
        assert_close(got, want, TOL[dt], f"{mode} {x.shape}")
        assert launched == [(pick, x.shape, mode)], launched
        launched.clear()
        fn = (gpuconv.conv1d, gpuconv.conv2d, gpuconv.conv3d)[x.ndim - 3]
        with gpuconv.use_backend(be):
            got = fn(x, w, None, 1, tuple(lo for lo, _ in pad), 1, g, padding_mode=mode)
        assert_close(got, want_sym, TOL[dt], f"public {mode} {x.shape}")
        assert [s for _, s, _ in launched] == [x.shape] and launched[0][2] == mode, launched
