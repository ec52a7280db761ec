"""The operation kernels -- depthwise conv, transposed conv (gather), weight gradient,
fused depthwise+pointwise -- on every available backend (simulator: -m sim; GPU: -m gpu)
against float64 oracles (torch CPU in float64, gpuconv.reference).

Outputs are poisoned with NaN before the kernels run; inputs are fresh random data
(the `rng` fixture; GPUCONV_TEST_SEED replays a failure); shapes are irregular.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from gpuconv import activations, reference
from gpuconv.cuda import conv, separable as csep, transpose as ctr, wgrad as cwg
from gpuconv.cuda.families import conv2d_depthwise, conv_wgrad
from gpuconv.spec import ConvSpec, make_spec, transpose_spec
from kernel_helpers import TOL, assert_close, backend_params, make_backend, to_host

torch = pytest.importorskip("torch", reason="torch (the [torch] extra) is the oracle of these tests")
F = torch.nn.functional

BACKENDS = backend_params()
REAL = ("float32", "float16", "float64")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return make_backend(request.param)


def _rand(rng, shape, dt):
    return rng.uniform(-1.0, 1.0, size=shape).astype(dt)


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def _poison(backend, shape, dt):
    return backend.xp.full(shape, np.nan, dtype=dt)


# ---------------------------------------------------------------- depthwise

# (id, input, weight, stride, padding, dilation, bias, activation); groups = C
DW_CASES = [
    ("3x3_odd", (3, 5, 13, 37), (5, 1, 3, 3), 1, 1, 1, True, "relu6"),          # window path, 2 q tiles
    ("3x3_s2_mult2", (1, 3, 17, 11), (6, 1, 3, 3), 2, 1, 1, True, "silu"),      # strided path, m = 2
    ("5x5_s1_small_map", (2, 7, 7, 7), (7, 1, 5, 5), 1, 2, 1, False, None),     # small tile, 8 planes/block
    ("5x5_s3_d2", (1, 2, 23, 19), (6, 1, 5, 5), 3, ((4, 1), (0, 3)), 2, True, "gelu"),
    ("3x2_generic", (2, 3, 9, 10), (9, 1, 3, 2), (1, 2), ((1, 2), (0, 1)), (2, 1), True, "relu"),
    ("7x7_generic_d3", (1, 4, 30, 12), (4, 1, 7, 7), 1, 9, 3, True, None),      # taps in shared memory
    ("single_channel_K5", (2, 1, 12, 9), (5, 1, 3, 3), 1, "same", 1, True, None),
    ("batch1_3x3_s2_even", (1, 16, 28, 28), (16, 1, 3, 3), 2, ((0, 1), (0, 1)), 1, True, "relu6"),
]


@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize("case", DW_CASES, ids=[c[0] for c in DW_CASES])
def test_depthwise(backend, case, dtype, rng):
    _, xs, ws, stride, padding, dilation, has_bias, act = case
    dt = np.dtype(dtype)
    spec, _ = make_spec(xs, ws, (ws[0],) if has_bias else None, stride, padding, dilation, xs[1], dt, 2)
    assert conv2d_depthwise.supports(spec)[0]
    x, w = _rand(rng, xs, dt), _rand(rng, ws, dt)
    b = _rand(rng, (ws[0],), dt) if has_bias else None
    ref = activations.apply(reference.conv(x, w, b, spec, accumulate="float64"), act)
    xp = backend.xp
    for tile in conv2d_depthwise.TILES:
        out = _poison(backend, spec.output_shape, dt)
        cfg = {"tile": tile, "planes": conv2d_depthwise.planes_per_block(tile, spec)}
        conv2d_depthwise.launch(backend, xp.asarray(x), xp.asarray(w),
                                None if b is None else xp.asarray(b), out, spec,
                                activations.ACTIVATION_CODES[act], cfg)
        assert_close(out, ref, TOL[dt], f"depthwise {case[0]} {dtype} tile={tile}")


def test_depthwise_dispatch_and_1d(backend, rng):
    """The dispatcher takes the depthwise kernel for a 2-D depthwise layer; the variant
    also runs 1-D (H = 1) and a zero-size batch through conv.forward."""
    from gpuconv.cuda.dispatch import choose
    dt = np.dtype(np.float32)
    spec, _ = make_spec((2, 6, 9, 9), (12, 1, 3, 3), None, 1, 1, 1, 6, dt, 2)
    assert choose(spec)[0] == "depthwise"
    xp = backend.xp
    spec1, _ = make_spec((2, 3, 29), (6, 1, 5), (6,), 2, 2, 1, 3, dt, 1)
    x, w, b = _rand(rng, spec1.input_shape, dt), _rand(rng, spec1.weight_shape, dt), _rand(rng, (6,), dt)
    out = _poison(backend, spec1.output_shape, dt)
    conv.forward(xp.asarray(x), xp.asarray(w), xp.asarray(b), spec1, algorithm="depthwise",
                 backend=backend, out=out)
    assert_close(out, reference.conv(x, w, b, spec1, accumulate="float64"), TOL[dt], "depthwise 1-D")
    spec0, _ = make_spec((0, 3, 8, 8), (3, 1, 3, 3), None, 1, 1, 1, 3, dt, 2)
    y = conv.forward(xp.zeros(spec0.input_shape, dt), xp.zeros(spec0.weight_shape, dt), None, spec0,
                     algorithm="depthwise", backend=backend)
    assert y.shape == (0, 3, 8, 8)


# ---------------------------------------------------------------- transposed convolution

# (id, x shape (N, C_in, *in), weight (C_in, C_out/g, *k), stride, padding, output_padding,
#  dilation, groups, bias, activation)
TR_CASES = [
    ("up2_4x4", (3, 6, 5, 7), (6, 5, 4, 4), 2, 1, 0, 1, 1, True, "relu"),                  # CPT=4
    ("s3_outpad2_groups2", (1, 4, 4, 5), (4, 3, 3, 2), (3, 2), (1, 0), (2, 1), 1, 2, True, None),
    ("s2_d3_outpad", (2, 3, 6, 5), (3, 7, 3, 3), 2, 2, 1, 3, 1, False, "gelu"),          # gcd(2,3)=1
    ("s4_d2_gcd2", (1, 2, 5, 4), (2, 4, 3, 3), 4, 1, (1, 3), 2, 1, True, "silu"),          # gcd(4,2)=2: odd rows get nothing
    ("s6_d4_gcd2", (1, 3, 3, 4), (3, 5, 4, 5), (6, 4), (2, 0), (3, 1), (4, 6), 1, True, None),
    ("depthwise_t_s2", (2, 5, 6, 7), (5, 1, 3, 3), 2, 1, 1, 1, 5, True, "relu6"),        # CPT=1
    ("s1_d2_outpad1", (1, 4, 7, 6), (4, 4, 3, 3), 1, 1, 1, 2, 1, False, None),             # op >= stride, < dil
    ("batch0", (0, 3, 4, 4), (3, 2, 3, 3), 2, 0, 0, 1, 1, True, None),
    ("1d_s3", (2, 4, 9), (4, 6, 5), 3, 2, 2, 1, 2, True, "relu"),
    ("3d_s2", (1, 4, 3, 4, 3), (4, 5, 3, 2, 3), (2, 1, 2), (1, 0, 1), (1, 0, 0), (1, 2, 1), 1, True, None),
]


def _torch_transpose(x, w, b, stride, padding, output_padding, dilation, groups, nd):
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    return fn(_t(x), _t(w), None if b is None else _t(b), stride=stride, padding=padding,
              output_padding=output_padding, groups=groups, dilation=dilation).numpy()


@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize("case", TR_CASES, ids=[c[0] for c in TR_CASES])
def test_transpose(backend, case, dtype, rng):
    _, xs, ws, stride, padding, outpad, dilation, groups, has_bias, act = case
    dt = np.dtype(dtype)
    nd = len(ws) - 2
    spec, _ = transpose_spec(xs, ws, (ws[1] * groups,) if has_bias else None, stride, padding, outpad,
                             groups, dilation, dt, nd)
    assert spec.output_shape == tuple(xs) and spec.weight_shape == tuple(ws)
    assert ctr.transpose_supports(spec)[0]
    x, w = _rand(rng, xs, dt), _rand(rng, ws, dt)
    b = _rand(rng, (spec.c,), dt) if has_bias else None
    ref = activations.apply(_torch_transpose(x, w, b, stride, padding, outpad, dilation, groups, nd), act)
    assert ref.shape == spec.input_shape
    xp = backend.xp
    out = _poison(backend, spec.input_shape, dt)
    res = ctr.forward(xp.asarray(x), xp.asarray(w), None if b is None else xp.asarray(b), spec,
                      activation=act, backend=backend, out=out)
    assert res is out
    assert_close(out, ref, TOL[dt], f"conv_transpose {case[0]} {dtype}")


def test_transpose_is_input_gradient(backend, rng):
    """With a forward spec's own geometry (input size not reachable by output_padding alone
    under torch's rule), the kernel is torch.nn.grad.conv2d_input; transpose_spec maps
    torch's transposed-conv arguments to that forward spec (output_padding as a lower
    high pad)."""
    dt = np.dtype(np.float64)
    spec, _ = make_spec((3, 4, 12, 11), (6, 2, 3, 3), None, (3, 2), ((2, 2), (1, 1)), (1, 2), 2, dt, 2)
    dy = _rand(rng, spec.output_shape, dt)
    w = _rand(rng, spec.weight_shape, dt)
    ref = torch.nn.grad.conv2d_input(spec.input_shape, _t(w), _t(dy), stride=(3, 2), padding=(2, 1),
                                     dilation=(1, 2), groups=2).numpy()
    out = _poison(backend, spec.input_shape, dt)
    ctr.forward(backend.xp.asarray(dy), backend.xp.asarray(w), None, spec, backend=backend, out=out)
    assert_close(out, ref, TOL[dt], "input gradient")

    a, batched = transpose_spec((2, 4, 5, 6), (4, 3, 3, 4), None, 2, 1, (1, 0), 2, 1, np.float32, 2)
    # out = (in - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1
    b = ConvSpec(n=2, c=6, k=4, in_size=(10, 12), kernel=(3, 4), stride=(2, 2),
                 pad=((1, 0), (1, 1)), dilation=(1, 1), groups=2, dtype=np.dtype(np.float32))
    assert batched and a == b and a.output_shape == (2, 4, 5, 6)


# ---------------------------------------------------------------- weight gradient

# (id, input, weight, stride, padding, dilation, groups)
WG_CASES = [
    ("3x3_odd_wide", (3, 5, 11, 9), (6, 5, 3, 3), 1, 1, 1, 1),                   # wide tile, K not /4, J not /8
    ("s2_d2_groups", (2, 6, 13, 10), (4, 3, 3, 2), 2, ((2, 0), (1, 3)), 2, 2),
    ("depthwise_mult2_s3", (1, 4, 17, 16), (8, 1, 5, 5), 3, 2, 1, 4),          # narrow tile
    ("1x1_batch1", (1, 7, 6, 5), (9, 7, 1, 1), 1, 0, 1, 1),
    ("1d", (2, 4, 31), (6, 2, 4), 2, 3, 3, 2),
    ("batch0", (0, 3, 6, 6), (4, 3, 3, 3), 1, 1, 1, 1),
]


def _torch_wgrad(x, dy, spec, nd):
    fn = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight}[nd]
    lo = [p[0] for p in spec.pad]
    if any(p[0] != p[1] for p in spec.pad):          # asymmetric: pad explicitly
        pads = []
        for lo_, hi in reversed(spec.pad):
            pads += [lo_, hi]
        xt = F.pad(_t(x), pads)
        lo = [0] * nd
    else:
        xt = _t(x)
    return fn(xt, spec.weight_shape, _t(dy), stride=spec.stride, padding=tuple(lo),
              dilation=spec.dilation, groups=spec.groups).numpy()


def _wg_spec(case, dt):
    _, xs, ws, stride, padding, dilation, groups = case
    return make_spec(xs, ws, None, stride, padding, dilation, groups, dt, len(ws) - 2)[0]


@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize("case", WG_CASES, ids=[c[0] for c in WG_CASES])
def test_wgrad(backend, case, dtype, rng, monkeypatch):
    # small chunks: these shapes then split the positions over several blocks (and the
    # ascending-order reduction kernel sums more than one partial)
    monkeypatch.setattr(conv_wgrad, "MIN_CHUNK", 2 * conv_wgrad.THREADS)
    dt = np.dtype(dtype)
    spec = _wg_spec(case, dt)
    x, dy = _rand(rng, spec.input_shape, dt), _rand(rng, spec.output_shape, dt)
    ref = _torch_wgrad(x, dy, spec, spec.nd)
    xp = backend.xp
    for det in (True, False):
        out = _poison(backend, spec.weight_shape, dt)
        res = cwg.forward(xp.asarray(x), xp.asarray(dy), spec, deterministic=det, backend=backend, out=out)
        assert res is out
        assert_close(out, ref, TOL[dt], f"wgrad {case[0]} {dtype} deterministic={det}")


def test_wgrad_plan_is_shape_only_and_splits():
    dt = np.dtype(np.float32)
    spec = _wg_spec(("big", (32, 144, 56, 56), (144, 1, 3, 3), 1, 1, 1, 144), dt)
    p = cwg.wgrad_plan(spec)
    assert p["tile"] == "narrow" and p["splits"] > 1
    assert p["splits"] * p["chunk"] >= p["L"] > (p["splits"] - 1) * p["chunk"]
    assert cwg.wgrad_plan(spec) == p
    spec = _wg_spec(("resnet", (8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1), dt)
    assert cwg.wgrad_plan(spec)["tile"] == "wide"


def test_wgrad_deterministic_bit_identical(backend, rng, monkeypatch):
    """Two runs of the default path give bit-identical results, and the default path is
    the split-partials + ordered-reduction structure (no atomics)."""
    monkeypatch.setattr(conv_wgrad, "MIN_CHUNK", conv_wgrad.THREADS)
    dt = np.dtype(np.float32)
    spec = _wg_spec(("det", (3, 6, 15, 14), (8, 3, 3, 3), 1, 1, 1, 2), dt)
    assert cwg.wgrad_plan(spec)["splits"] > 1
    xp = backend.xp
    x, dy = xp.asarray(_rand(rng, spec.input_shape, dt)), xp.asarray(_rand(rng, spec.output_shape, dt))
    names = []

    class Recording:
        name = backend.name
        xp = backend.xp

        def get_function(self, module, exprs, name):
            names.append(name)
            return backend.get_function(module, exprs, name)

    a = to_host(cwg.forward(x, dy, spec, backend=Recording()))
    b = to_host(cwg.forward(x, dy, spec, backend=backend))
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert any(n.startswith("conv_wgrad<float, 4, 8, 0>") for n in names), names
    assert any(n.startswith("conv_wgrad_reduce<") for n in names)
    assert not any(n.endswith(", 1>") and n.startswith("conv_wgrad<") for n in names)
    assert all(n in conv_wgrad.INSTANTIATIONS for n in names) and conv_wgrad.MODULE == "conv_wgrad.cu"


# ---------------------------------------------------------------- separable (fused)

# (id, input, depthwise weight, K, stride, padding, dilation, bias, activation)
SEP_CASES = [
    ("3x3_m1", (2, 5, 9, 11), (5, 1, 3, 3), 7, 1, 1, 1, True, "relu6"),
    ("3x3_m2_s2", (1, 3, 13, 10), (6, 1, 3, 3), 9, 2, 1, 1, True, "gelu"),
    ("5x3_d2_K1", (3, 4, 10, 9), (4, 1, 5, 3), 1, 1, ((2, 3), (1, 0)), (1, 2), False, None),
    ("many_channels", (1, 40, 5, 6), (80, 1, 3, 3), 6, 1, "same", 1, True, "silu"),
]


def _sep_ref(x, dw, pw, b, spec, act):
    mid = reference.conv(x, dw, None, spec, accumulate="float64")
    y = np.einsum("kc,nc...->nk...", pw.reshape(pw.shape[0], -1).astype(np.float64), mid)
    if b is not None:
        y += b.astype(np.float64).reshape((1, -1) + (1,) * spec.nd)
    return activations.apply(y, act)


@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize("case", SEP_CASES, ids=[c[0] for c in SEP_CASES])
def test_separable_fused(backend, case, dtype, rng):
    _, xs, dws, K, stride, padding, dilation, has_bias, act = case
    dt = np.dtype(dtype)
    spec, _ = make_spec(xs, dws, None, stride, padding, dilation, xs[1], dt, 2)
    assert csep.fused_supports(spec, K)[0]
    x, dw = _rand(rng, xs, dt), _rand(rng, dws, dt)
    pw = _rand(rng, (K, dws[0], 1, 1), dt)
    b = _rand(rng, (K,), dt) if has_bias else None
    ref = _sep_ref(x, dw, pw, b, spec, act)
    xp = backend.xp
    for algo in ("fused", "two_pass"):
        out = _poison(backend, ref.shape, dt)
        res = csep.forward(xp.asarray(x), xp.asarray(dw), xp.asarray(pw), None if b is None else xp.asarray(b),
                           spec, activation=act, algorithm=algo, backend=backend, out=out)
        assert res is out
        # two passes round the intermediate to float16; the fused kernel keeps it in float32
        tol = TOL[dt] * (2 if (algo == "two_pass" and dt == np.float16) else 1)
        assert_close(out, ref, tol, f"separable {algo} {case[0]} {dtype}")


def test_separable_choice():
    dt = np.dtype(np.float32)
    small, _ = make_spec((8, 32, 28, 28), (32, 1, 3, 3), None, 1, 1, 1, 32, dt, 2)
    assert csep.choose(small, 16)[0] == "fused"
    assert csep.choose(small, 512)[0] == "two_pass"                  # big pointwise GEMM
    wide, _ = make_spec((8, 960, 7, 7), (960, 1, 3, 3), None, 1, 1, 1, 960, dt, 2)
    ok, why = csep.fused_supports(wide, 4)
    assert not ok and "shared memory" in why
    assert csep.choose(wide, 4)[0] == "two_pass"


# ---------------------------------------------------------------- AddressSanitizer

@pytest.mark.sim
def test_ops_kernels_asan(rng):
    """One small case of every new kernel in the AddressSanitizer build: edge tiles,
    partial channel blocks and the last split read and write nothing out of bounds."""
    from gpuconv.sim import SimBackend, sim_available
    if not sim_available():
        pytest.skip("simulator not available")
    be = SimBackend(asan=True)
    dt = np.dtype(np.float32)
    # depthwise, generic taps (shared-memory filter) and the 3x3 window path
    for ws, stride in (((6, 1, 3, 2), 2), ((6, 1, 3, 3), 1)):
        spec, _ = make_spec((1, 3, 7, 9), ws, (6,), stride, 1, 1, 3, dt, 2)
        x, w, b = _rand(rng, spec.input_shape, dt), _rand(rng, spec.weight_shape, dt), _rand(rng, (6,), dt)
        out = np.full(spec.output_shape, np.nan, dt)
        conv.forward(x, w, b, spec, activation="relu", algorithm="depthwise", backend=be, out=out)
        assert_close(out, activations.apply(reference.conv(x, w, b, spec, accumulate="float64"), "relu"),
                     TOL[dt], "asan depthwise")
    # transposed: C_out/groups = 5 (a partial block of 4 channels)
    spec, _ = transpose_spec((2, 3, 4, 5), (3, 5, 3, 3), None, 2, (1, 0), 1, 1, 1, dt, 2)
    x, w = _rand(rng, spec.output_shape, dt), _rand(rng, spec.weight_shape, dt)
    out = np.full(spec.input_shape, np.nan, dt)
    ctr.forward(x, w, None, spec, backend=be, out=out)
    assert_close(out, _torch_transpose(x, w, None, 2, (1, 0), 1, 1, 1, 2), TOL[dt], "asan transpose")
    # weight gradient, several splits, K and J not multiples of the tile
    spec = _wg_spec(("asan", (2, 3, 9, 8), (5, 3, 3, 2), 1, 1, 1, 1), dt)
    x, dy = _rand(rng, spec.input_shape, dt), _rand(rng, spec.output_shape, dt)
    for det in (True, False):
        out = np.full(spec.weight_shape, np.nan, dt)
        cwg.forward(x, dy, spec, deterministic=det, backend=be, out=out)
        assert_close(out, _torch_wgrad(x, dy, spec, 2), TOL[dt], f"asan wgrad det={det}")
    # fused separable, edge tile
    spec, _ = make_spec((1, 3, 6, 9), (6, 1, 3, 3), None, 1, 1, 1, 3, dt, 2)
    x, dw, pw = _rand(rng, spec.input_shape, dt), _rand(rng, spec.weight_shape, dt), _rand(rng, (5, 6, 1, 1), dt)
    out = np.full((1, 5, 6, 9), np.nan, dt)
    csep.forward(x, dw, pw, None, spec, algorithm="fused", backend=be, out=out)
    assert_close(out, _sep_ref(x, dw, pw, None, spec, None), TOL[dt], "asan separable")


@pytest.mark.sim
@pytest.mark.parametrize("deterministic", [True, False])
def test_public_weight_gradient_both_reductions(rng, deterministic):
    """gpuconv.conv2d_weight(..., deterministic=) reaches the kernel's two reductions
    through the public body, and both match torch."""
    from gpuconv.grad import weight_grad
    from gpuconv.sim import SimBackend, sim_available
    if not sim_available():
        pytest.skip("simulator not available")
    x = rng.standard_normal((3, 4, 9, 8))
    dy = rng.standard_normal((3, 6, 5, 8))
    with gpuconv.use_backend(SimBackend()):
        got = weight_grad(2, "conv2d_weight", x, (6, 2, 3, 3), dy, (2, 1), 1, 1, 2,
                          deterministic=deterministic)
    want = torch.nn.grad.conv2d_weight(torch.from_numpy(x), [6, 2, 3, 3], torch.from_numpy(dy),
                                       (2, 1), 1, 1, 2).numpy()
    assert_close(got, want, 1e-12, "conv2d_weight deterministic=%s" % deterministic)
    with pytest.raises(TypeError, match="deterministic"):
        gpuconv.conv2d_weight(x, (6, 2, 3, 3), dy, (2, 1), 1, 1, 2, deterministic="yes")


@pytest.mark.sim
@pytest.mark.parametrize("algorithm", ["auto", "fused", "two_pass"])
def test_public_separable_algorithms(rng, algorithm):
    """gpuconv.separable_conv2d(..., algorithm=) reaches the fused kernel and the two
    passes through the public body; all match torch."""
    from gpuconv.separable import separable_forward
    from gpuconv.sim import SimBackend, sim_available
    if not sim_available():
        pytest.skip("simulator not available")
    x = rng.standard_normal((2, 3, 7, 10))
    dw = rng.standard_normal((6, 1, 3, 3))
    pw = rng.standard_normal((5, 6, 1, 1))
    b = rng.standard_normal(5)
    with gpuconv.use_backend(SimBackend()):
        got = separable_forward(2, "separable_conv2d", x, dw, pw, b, 1, 1, 1, activation="relu",
                                algorithm=algorithm)
    T = torch.from_numpy
    want = F.relu(F.conv2d(F.conv2d(T(x), T(dw), None, 1, 1, 1, 3), T(pw), T(b))).numpy()
    assert_close(got, want, 1e-12, f"separable {algorithm}")
    with pytest.raises(ValueError, match="algorithm"):
        gpuconv.separable_conv2d(x, dw, pw, algorithm="winograd")
