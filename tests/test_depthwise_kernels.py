"""Depthwise kernels in the simulator: the forward (conv2d_depthwise.cu), the data gradient
(its DG mode, through gpuconv/cuda/transpose.py) and the weight gradient
(conv2d_depthwise_wgrad.cu, through gpuconv/cuda/wgrad.py), float16/32/64, depth multiplier
1 and 2, stride 1 and 2, dilation, odd sizes, both tiles, outputs poisoned with NaN, against
torch in float64.  The race detector and a second thread schedule run a subset.
"""
from __future__ import annotations

import numpy as np
import pytest

from gpuconv.cuda import transpose as ctr, wgrad as cwg
from gpuconv.cuda.families import conv2d_depthwise as DW, conv2d_depthwise_wgrad as DWW
from gpuconv.spec import make_spec

from kernel_helpers import TOL, assert_close, to_host

torch = pytest.importorskip("torch", reason="torch (the [torch] extra) is the oracle of these tests")
F = torch.nn.functional

pytestmark = pytest.mark.sim
sim = pytest.importorskip("gpuconv.sim")
if not sim.sim_available():
    pytest.skip("simulator not available", allow_module_level=True)

REAL = ("float32", "float16", "float64")
# (id, input (N, C, H, W), multiplier, kernel (R, S), stride, padding, dilation)
CASES = [
    ("m1_s1_odd", (2, 3, 13, 37), 1, (3, 3), 1, 1, 1),          # 2 q tiles of the large tile
    ("m2_s2_odd", (1, 3, 17, 11), 2, (3, 3), 2, 1, 1),          # stride-2 window, m = 2
    ("m2_s1_d2_5x5", (2, 2, 11, 9), 2, (5, 5), 1, 3, 2),        # dilated: generic tap path
    ("m1_s2_d2_5x5", (1, 4, 15, 14), 1, (5, 5), 2, ((4, 1), (0, 3)), 2),
    ("m2_s1_3x2", (2, 3, 9, 10), 2, (3, 2), (1, 2), ((1, 2), (0, 1)), (2, 1)),   # KS = 0
    ("m1_s1_7x7_small", (3, 5, 7, 7), 1, (3, 3), 1, 1, 1),     # the small tile's map
    # W a multiple of 16 bytes' elements for every dtype: the forward's 16-byte staging loads,
    # vectors wholly in the padding on both sides, an unaligned tile origin (pad 3)
    ("m2_s1_vec_w24", (1, 3, 11, 24), 2, (3, 3), 1, ((1, 1), (3, 2)), 1),
    ("m1_s2_vec_w40", (2, 2, 9, 40), 1, (5, 5), 2, 2, 1),
]


def _case_spec(case, dt):
    _, xs, m, k, stride, pad, dil = case
    ws = (xs[1] * m, 1) + tuple(k)
    return make_spec(xs, ws, None, stride, pad, dil, xs[1], np.dtype(dt), 2)[0], ws


def _torch_pad(spec):
    """F.pad list and torch padding for spec's (possibly asymmetric) padding."""
    pads = []
    for lo, hi in reversed(spec.pad):
        pads += [lo, hi]
    return pads


def _t(a):
    return torch.from_numpy(np.asarray(to_host(a), dtype=np.float64))


def _fwd_ref(x, w, spec):
    xt = F.pad(_t(x), _torch_pad(spec))
    return F.conv2d(xt, _t(w), stride=spec.stride, dilation=spec.dilation, groups=spec.groups)


def _grads_ref(x, w, dy, spec):
    xt = _t(x).requires_grad_(True)
    wt = _t(w).requires_grad_(True)
    y = F.conv2d(F.pad(xt, _torch_pad(spec)), wt, stride=spec.stride, dilation=spec.dilation,
                 groups=spec.groups)
    y.backward(_t(dy))
    return xt.grad.numpy(), wt.grad.numpy()


@pytest.fixture(scope="module")
def be():
    return sim.SimBackend()


def _rand(rng, shape, dt):
    return rng.uniform(-1.0, 1.0, size=shape).astype(dt)


@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_depthwise_forward_dgrad_wgrad(be, case, dtype, rng):
    dt = np.dtype(dtype)
    spec, ws = _case_spec(case, dt)
    assert DW.supports(spec)[0] and DW.dgrad_supports(spec)[0] and DWW.supports(spec)[0]
    x, w = _rand(rng, spec.input_shape, dt), _rand(rng, ws, dt)
    dy = _rand(rng, spec.output_shape, dt)
    want_y = _fwd_ref(x, w, spec).numpy()
    want_dx, want_dw = _grads_ref(x, w, dy, spec)
    xp = be.xp
    for tile in DW.TILES:
        y = xp.full(spec.output_shape, np.nan, dtype=dt)
        DW.launch(be, x, w, None, y, spec, 0, {"tile": tile, "planes": DW.planes_per_block(tile, spec)})
        assert_close(y, want_y, TOL[dt], f"depthwise forward {case[0]} {dtype} {tile}")
        dx = xp.full(spec.input_shape, np.nan, dtype=dt)
        DW.launch_dgrad(be, dy, w, None, dx, spec,
                        {"tile": tile, "planes": DW.planes_per_block(tile, spec, True)})
        assert_close(dx, want_dx, TOL[dt], f"depthwise dgrad {case[0]} {dtype} {tile}")
    # the routed entry points (transpose.forward = data gradient, wgrad.forward)
    dx = xp.full(spec.input_shape, np.nan, dtype=dt)
    assert ctr.forward(dy, w, None, spec, backend=be, out=dx) is dx
    assert_close(dx, want_dx, TOL[dt], f"transpose.forward depthwise {case[0]} {dtype}")
    dw = xp.full(ws, np.nan, dtype=dt)
    assert cwg.forward(x, dy, spec, backend=be, out=dw) is dw
    # the reduction runs over N*P*Q products: the tolerance of a sum of that many terms
    assert_close(dw, want_dw, TOL[dt], f"depthwise wgrad {case[0]} {dtype}")


def test_depthwise_dgrad_bias_and_wgrad_deterministic(be, rng):
    """dgrad with a bias (transposed-conv use); wgrad bit-identical across runs, with
    deterministic=False too (the depthwise reduction has no atomic form)."""
    dt = np.dtype(np.float32)
    spec, ws = _case_spec(("b", (3, 4, 19, 23), 2, (3, 3), 2, 1, 1), dt)
    x, w, dy = _rand(rng, spec.input_shape, dt), _rand(rng, ws, dt), _rand(rng, spec.output_shape, dt)
    b = _rand(rng, (spec.c,), dt)
    want_dx, want_dw = _grads_ref(x, w, dy, spec)
    dx = ctr.forward(dy, w, b, spec, backend=be)
    assert_close(dx, want_dx + b.astype(np.float64)[None, :, None, None], TOL[dt], "dgrad + bias")
    runs = [to_host(cwg.forward(x, dy, spec, deterministic=d, backend=be)) for d in (True, True, False)]
    assert_close(runs[0], want_dw, TOL[dt], "wgrad")
    assert all(np.array_equal(runs[0], r) for r in runs[1:])


def test_depthwise_plan_and_config():
    """The launch plans are pure and sane: whole warps per wgrad block, splits cover N, the
    cost model picks the small tile for 7x7 maps and the large one for a 64x64 map (16x32
    tiles fit it exactly: 1.20 staged inputs per output against the small tile's 1.56)."""
    dt = np.dtype(np.float32)
    s7, _ = make_spec((32, 960, 7, 7), (960, 1, 3, 3), None, 1, 1, 1, 960, dt, 2)
    assert DW.config(s7)["tile"] == "small"
    s_odd, _ = make_spec((4, 32, 64, 64), (32, 1, 3, 3), None, 1, 1, 1, 32, dt, 2)
    assert DW.config(s_odd)["tile"] == "large"
    for spec in (s7, s_odd):
        p = DWW.plan(spec)
        bx, by, bz = p["block"]
        assert (bx * by * bz) % 32 == 0 and p["splits"] * p["chunk"] >= spec.n
        assert (p["splits"] - 1) * p["chunk"] < spec.n
        assert DWW.smem_bytes(p["tile"], spec, p["planes"]) <= 48 * 1024


@pytest.mark.parametrize("opts", [dict(racecheck=True, alignment=True), dict(schedule="reversed")],
                         ids=["racecheck_alignment", "reversed"])
def test_depthwise_race_and_schedule(opts, rng):
    """The forward, dgrad and wgrad kernels under the race detector with the alignment
    sanitizer (the 16-byte loads and stores) and a reversed thread schedule (a missing
    barrier or a shared-memory race shows there)."""
    be = sim.SimBackend(**opts)
    dt = np.dtype(np.float32)
    for case in (CASES[1], CASES[4], CASES[6]):            # CASES[6]: 16-byte staging loads
        spec, ws = _case_spec(case, dt)
        x, w, dy = _rand(rng, spec.input_shape, dt), _rand(rng, ws, dt), _rand(rng, spec.output_shape, dt)
        want_dx, want_dw = _grads_ref(x, w, dy, spec)
        for tile in DW.TILES:
            y = be.xp.full(spec.output_shape, np.nan, dtype=dt)
            DW.launch(be, x, w, None, y, spec, 0, {"tile": tile, "planes": DW.planes_per_block(tile, spec)})
            assert_close(y, _fwd_ref(x, w, spec).numpy(), TOL[dt], f"forward {opts} {tile}")
        assert_close(ctr.forward(dy, w, None, spec, backend=be), want_dx, TOL[dt], f"dgrad {opts}")
        assert_close(cwg.forward(x, dy, spec, backend=be), want_dw, TOL[dt], f"wgrad {opts}")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_depthwise_public_api_on_the_simulator(dtype, rng):
    """gpuconv.conv2d / conv2d_input / conv2d_weight of a depthwise layer (m = 2, stride 2,
    dilation, odd map) on the GPU path in the simulator: the engine reaches the depthwise
    forward, data-gradient and weight-gradient kernels (bfloat16 widened to float32 by the
    engine and rounded once: the bfloat16 rounding of the exact result bounds its error)."""
    import gpuconv
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dt = np.dtype(ml_dtypes.bfloat16)
        tol = 2.0 ** -7
    else:
        dt, tol = np.dtype(dtype), TOL[np.dtype(dtype)]
    spec, ws = _case_spec(("api", (2, 3, 15, 12), 2, (3, 3), 2, 2, 2), np.float32)
    x = _rand(rng, spec.input_shape, np.float32).astype(dt)
    w = _rand(rng, ws, np.float32).astype(dt)
    dy = _rand(rng, spec.output_shape, np.float32).astype(dt)
    want_dx, want_dw = _grads_ref(x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64), spec)
    want_y = _fwd_ref(x.astype(np.float64), w.astype(np.float64), spec).numpy()
    kw = dict(stride=2, padding=2, dilation=2, groups=3)
    with gpuconv.use_backend(sim.SimBackend()):
        y = gpuconv.conv2d(x, w, **kw)
        dx = gpuconv.conv2d_input(x.shape, w, dy, **kw)
        dw = gpuconv.conv2d_weight(x, w.shape, dy, **kw)
    for got, want, what in ((y, want_y, "conv2d"), (dx, want_dx, "conv2d_input"), (dw, want_dw, "conv2d_weight")):
        assert got.dtype == dt, what
        assert_close(np.asarray(got, dtype=np.float64), want, tol, f"{what} {dtype} depthwise")


# float16 forward: (id, input, multiplier, kernel, stride, padding).  The 16x32 tile's 16
# outputs per thread with a partial right tile (W = 45), the 5x5 stride-1 register window
# (20 staged floats a row: five 16-byte shared loads), the 16-byte staging loads (W = 48),
# stride 2 and the small tile.
F16_CASES = [
    ("5x5_s1_w45", (2, 3, 19, 45), 1, (5, 5), 1, 2),
    ("3x3_s1_w48_m2", (1, 2, 13, 48), 2, (3, 3), 1, 1),
    ("3x3_s2_w37", (2, 2, 17, 37), 1, (3, 3), 2, 1),
]


@pytest.mark.parametrize("case", F16_CASES, ids=[c[0] for c in F16_CASES])
def test_depthwise_float16_accumulates_in_float32(case, rng):
    """float16 forward against float64 on the same float16 values, with a bias, under the race
    detector and the alignment sanitizer (the float rows' 16-byte shared loads): every output
    within half an ulp of float16 of the exact result plus the float32 accumulation error, a
    bound that accumulating the 9-25 products in float16 (an ulp per addition) breaks."""
    be = sim.SimBackend(racecheck=True, alignment=True)
    dt = np.dtype(np.float16)
    cid, xs, m, k, stride, pad = case
    spec, ws = _case_spec((cid, xs, m, k, stride, pad, 1), dt)
    x, w, b = _rand(rng, spec.input_shape, dt), _rand(rng, ws, dt), _rand(rng, (spec.k,), dt)
    want = _fwd_ref(x, w, spec).numpy() + b.astype(np.float64)[None, :, None, None]
    mag = F.conv2d(F.pad(_t(np.abs(x)), _torch_pad(spec)), _t(np.abs(w)), stride=spec.stride,
                   groups=spec.groups).numpy() + np.abs(b.astype(np.float64))[None, :, None, None]
    bound = 2.0 ** -11 * np.abs(want) + 2.0 ** -25 + 2.0 ** -18 * mag
    for tile in DW.TILES:
        y = be.xp.full(spec.output_shape, np.nan, dtype=dt)
        DW.launch(be, x, w, b, y, spec, 0, {"tile": tile, "planes": DW.planes_per_block(tile, spec)})
        err = np.abs(to_host(y).astype(np.float64) - want)
        assert not np.isnan(err).any(), f"{cid} {tile}: unwritten outputs"
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        assert (err <= bound).all(), (f"{cid} {tile}: |y - exact| = {err[worst]:.3g} > {bound[worst]:.3g} "
                                      f"at {worst} (exact {want[worst]:.6g})")
