"""kernels_cu/signal2d.cu on the simulator under its checks: every kernel (the
register-blocked one per dtype and filter size, the tiled one, the direct one) and
every boundary, against the NumPy core in float64 (integers: exactly), with the
shared-memory race detector on and under two thread schedules.

Shapes are irregular on purpose: output widths that are and are not a multiple of
the 16-byte vector (both store paths), more than one tile in each direction, a
negative origin ('full'-like) and a positive one, a batch of two images with a
broadcast filter.
"""
import numpy as np
import pytest

from gpuconv.cuda import signal as csignal
from gpuconv.signal import correlate_core as numpy_core

pytestmark = pytest.mark.sim

BOUNDARIES = ("fill", "wrap", "symm")
SEED = 20261129


def _rand(rng, shape, dt):
    dt = np.dtype(dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)                       # full range: products wrap
        return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    x = rng.standard_normal(shape) + 0.25
    if dt.kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dt)


def _check(backend, rng, dt, kshape, ishape, out_shape, origin, boundary, want_kernel):
    dt = np.dtype(dt)
    assert csignal.choose_kernel(*kshape[-2:], dt) == want_kernel
    a = _rand(rng, ishape, dt)
    k = _rand(rng, kshape, dt)
    fill = _rand(rng, (), dt)[()]
    got = csignal.correlate_core(a, k, out_shape, origin, boundary, fill, backend=backend)
    what = f"{want_kernel} {dt} {boundary} a{ishape} k{kshape} out{out_shape} origin{origin}"
    if dt.kind in "iu":
        want = numpy_core(a, k, out_shape, origin, boundary, fill)
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"{what}: first mismatch at {tuple(bad[0])}"
        return
    wide = np.complex128 if dt.kind == "c" else np.float64
    want = numpy_core(a.astype(wide), k.astype(wide), out_shape, origin, boundary, fill.astype(wide))
    # float32 sums of <= 49 products of O(1) terms: a few ulps of the sum of |terms|
    scale = numpy_core(np.abs(a).astype(np.float64), np.abs(k).astype(np.float64), out_shape,
                       origin, boundary, abs(fill))
    eps = np.finfo(dt).eps
    err = np.abs(got - want)
    bad = np.argwhere(~(err <= 8 * eps * (scale + 1)))   # NaN (unwritten) fails too
    assert bad.size == 0, f"{what}: first mismatch at {tuple(bad[0])}: {got[tuple(bad[0])]} vs {want[tuple(bad[0])]}"


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setattr(csignal, "POISON_OUTPUT", True)


@pytest.fixture(scope="module", params=[dict(racecheck=True), dict(schedule="random", seed=SEED),
                                        dict(schedule="reversed")], ids=["racecheck", "random", "reversed"])
def backend(request):
    from gpuconv import sim
    if not sim.sim_available():
        pytest.skip("simulator unavailable (no g++)")
    return sim.SimBackend(**request.param)


# (filter size, image shape, output shape, origin): 3 x 3 on a wide image whose middle
# tiles lie inside it (the plain-copy staging path), with 16-byte stores; 5 x 5 on a
# batch of two, width 36 (16-byte stores), positive origin; 7 x 7 with 2 x 2 float32
# tiles (32 x 128), width 133 not a multiple of 4 or 2 (scalar stores)
CASES = [(3, (19, 300), (21, 260), (-1, 3)), (5, (2, 21, 30), (2, 19, 36), (1, 2)),
         (7, (37, 131), (40, 133), (-3, -2))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_regblock_kernel(backend, dtype, boundary):
    rng = np.random.default_rng(SEED)
    for K, ishape, out_shape, origin in CASES:
        # 8-byte 7x7 has no register-blocked instantiation (its taps would spill)
        want = "correlate2d_tiled" if K == 7 and np.dtype(dtype).itemsize == 8 else "correlate2d_regblock"
        _check(backend, rng, dtype, (K, K), ishape, out_shape, origin, boundary, want)
    # a filter per image: image b reads k + offs[B + b]
    _check(backend, rng, dtype, (3, 3, 3), (3, 17, 20), (3, 19, 22), (-1, -1), boundary,
           "correlate2d_regblock")


@pytest.mark.parametrize("dtype", [np.float32, np.complex64, np.complex128, np.int64])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_tiled_and_direct_kernels(backend, dtype, boundary):
    rng = np.random.default_rng(SEED + 1)
    # 4x6: the tiled kernel for every dtype; square 5x5 complex stays on it too
    _check(backend, rng, dtype, (4, 6), (2, 23, 19), (2, 35, 41), (-3, -5), boundary,
           "correlate2d_tiled")
    _check(backend, rng, dtype, (3, 4), (2, 23, 90), (2, 35, 70), (-3, 1), boundary,
           "correlate2d_tiled")             # middle tiles inside the image
    if np.dtype(dtype).kind == "c":
        _check(backend, rng, dtype, (5, 5), (17, 11), (20, 13), (-2, -2), boundary, "correlate2d_tiled")
    if dtype == np.float32:      # a filter too big for the tile's shared memory
        _check(backend, rng, dtype, (70, 66), (9, 8), (5, 4), (-40, -30), boundary, "correlate2d_direct")


def test_empty_image_with_fill(backend):
    """An empty image with 'fill': every tap reads fillvalue (the row/column maps are all -1)."""
    rng = np.random.default_rng(SEED + 2)
    _check(backend, rng, np.float32, (3, 3), (0, 5), (4, 7), (-2, -2), "fill", "correlate2d_regblock")
