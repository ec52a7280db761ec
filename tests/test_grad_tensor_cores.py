"""The gradients on tensor cores: dgrad by stride phases and wgrad as an implicit GEMM
reducing over N*P*Q (gpuconv.derived), the dispatcher's rule that routes them
(gpuconv.cuda.dispatch.grad_on_tensor_cores), and the simulated kernels.

* dgrad_phases is exact: checked in float64 against reference.dgrad on random 1-D
  to 3-D problems (stride, dilation, padding, groups), on the CPU, no kernel.
* The rule is pure: unit-tested on DeviceFacts.
* The implicit-GEMM route (algorithm="implicit_gemm") in the simulator for float16,
  bfloat16 and float32 at 'high' (3xTF32) and 'medium' (TF32), irregular sizes,
  stride 2, dilation, groups; the race detector on; the weight gradient bit-identical
  between runs and thread schedules (its split-K sums in a fixed order).
"""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from gpuconv import derived, reference
from gpuconv.cuda import dispatch
from gpuconv.cuda.facts import DeviceFacts
from gpuconv.cuda.families import conv2d_implicit_gemm as igemm
from gpuconv.spec import make_spec

from util import BFLOAT16, TOLERANCE, assert_close, randn


def _spec(x, w, stride, pad, dil, groups, dtype, nd=2):
    return make_spec(x, w, None, stride, pad, dil, groups, np.dtype(dtype), nd)[0]


def _fprop_ref(fspec, a, b):
    a, fspec = derived.crop_unread(a, fspec)
    return reference.conv(a, b, None, fspec)


def test_dgrad_phases_equal_the_reference(rng):
    """Random problems, 1-D to 3-D: the interleaved phase results equal dgrad exactly
    (float64), including phases no tap reaches, padding beyond the kernel and
    strides above the dilated kernel."""
    checked = 0
    while checked < 120:
        nd = int(rng.integers(1, 4))
        g = int(rng.choice([1, 2]))
        c, k = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
        ins = tuple(int(v) for v in rng.integers(1, 9, nd))
        ker = tuple(int(v) for v in rng.integers(1, 4, nd))
        st = tuple(int(v) for v in rng.integers(1, 4, nd))
        dil = tuple(int(v) for v in rng.integers(1, 4, nd))
        pad = tuple(int(v) for v in rng.integers(0, 4, nd))
        try:
            spec = _spec((2, c) + ins, (k, c // g) + ker, st, pad, dil, g, np.float64, nd)
        except ValueError:                                   # kernel larger than the padded input
            continue
        dy, w = randn(rng, spec.output_shape), randn(rng, spec.weight_shape)
        got = derived.dgrad_by_phases(np, dy, w, spec, _fprop_ref, lambda z: z)
        assert_close(got, reference.dgrad(dy, w, spec), np.float64, what=str(spec))
        assert len(derived.dgrad_phases(spec)) <= int(np.prod(st))
        checked += 1


def test_dgrad_phases_read_no_inserted_zero():
    """3x3 stride 2 padding 1: four phases with 1x1, 1x2, 2x1, 2x2 taps -- 9 taps in
    all, the kernel once (the zero-upsampled form reads 4 x 9)."""
    spec = _spec((2, 8, 10, 9), (4, 8, 3, 3), 2, 1, 1, 1, np.float16)
    taps = sorted(f.kernel for _, f, _, _ in derived.dgrad_phases(spec))
    assert taps == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(f.stride == (1, 1) for _, f, _, _ in derived.dgrad_phases(spec))


FACTS = DeviceFacts()                     # H100-like defaults, sm_90


@pytest.mark.parametrize("dtype,precision,want", [
    (np.float16, "highest", True), (np.float32, "high", True), (np.float32, "medium", True),
    (np.float32, "highest", False), (np.float64, "highest", False)])
def test_rule_by_dtype_and_precision(dtype, precision, want):
    """ResNet-50's 3x3 64->64 layer at batch 32: tensor cores for float16 and float32 at
    'high'/'medium'; exact FP32 ('highest') and float64 stay on the FMA kernels."""
    spec = _spec((32, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1, dtype)
    for op in ("dgrad", "wgrad"):
        ok, why = dispatch.grad_on_tensor_cores(op, spec, FACTS, precision)
        assert ok is want, (op, why)
        if not want:
            assert "implicit_gemm refuses" in why


def test_rule_strided_depthwise_small_and_old_devices():
    s2 = _spec((32, 64, 56, 56), (128, 64, 3, 3), 2, 1, 1, 1, np.float16)
    ok, why = dispatch.grad_on_tensor_cores("dgrad", s2, FACTS)
    assert ok and "4 stride-phase" in why
    assert dispatch.grad_on_tensor_cores("wgrad", s2, FACTS)[0]
    dw = _spec((8, 32, 28, 28), (32, 1, 3, 3), 1, 1, 1, 32, np.float16)       # depthwise
    assert not dispatch.grad_on_tensor_cores("dgrad", dw, FACTS)[0]
    assert not dispatch.grad_on_tensor_cores("wgrad", dw, FACTS)[0]
    tiny = _spec((2, 32, 9, 11), (32, 32, 3, 3), 2, 1, 1, 1, np.float16)      # launch-bound
    ok, why = dispatch.grad_on_tensor_cores("dgrad", tiny, FACTS)
    assert not ok and "direct" in why
    turing = DeviceFacts(cc=(7, 5))
    assert not dispatch.grad_on_tensor_cores("dgrad", s2, turing)[0]
    with pytest.raises(ValueError, match="op must be"):
        dispatch.grad_on_tensor_cores("fprop", s2, FACTS)


def test_route_of_exact_gradients():
    """Exact FP32 and float64: dgrad by phases on the tiled / GEMM kernels; wgrad by its
    forward problem only where that is a GEMM (im2col), else on conv_wgrad.cu."""
    s56 = _spec((32, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1, np.float32)
    route, why = dispatch.grad_route("dgrad", s56, FACTS)
    assert route == "forward" and "tiled_smem" in why and "tensor cores" not in why
    route, why = dispatch.grad_route("wgrad", s56, FACTS)
    assert route == "dedicated" and "direct" in why          # a 56x56 kernel: no tile fits
    s14 = _spec((32, 256, 14, 14), (256, 256, 3, 3), 1, 1, 1, 1, np.float64)
    assert dispatch.grad_route("wgrad", s14, FACTS) == ("forward", "wgrad as one forward problem "
                                                             "reducing over N*P*Q on im2col")
    s2 = _spec((32, 64, 56, 56), (128, 64, 3, 3), 2, 1, 1, 1, np.float32)
    route, why = dispatch.grad_route("dgrad", s2, FACTS)
    assert route == "forward" and "4 stride-phase" in why
    dw = _spec((8, 32, 28, 28), (64, 1, 3, 3), 1, 1, 1, 32, np.float32)       # multiplier 2
    assert dispatch.grad_route("dgrad", dw, FACTS)[0] == "dedicated"
    tiny = _spec((2, 32, 9, 11), (32, 32, 3, 3), 2, 1, 1, 1, np.float32)
    assert dispatch.grad_route("dgrad", tiny, FACTS)[0] == "dedicated"


def test_explain_a_gradient():
    text = gpuconv.explain((32, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1, dtype="float16",
                           op="dgrad")
    assert "-> forward: dgrad as 4 stride-phase" in text
    assert text.count("derived forward problem") == 4 and "implicit_gemm" in text
    text = gpuconv.explain((32, 64, 56, 56), (64, 64, 3, 3), padding=1, op="wgrad")
    assert "-> dedicated" in text and "derived forward problem 0" not in text
    with pytest.raises(ValueError, match="op must be"):
        gpuconv.explain((1, 4, 8, 8), (4, 4, 3, 3), op="forward")


def test_implicit_gemm_algorithm_refused_on_the_cpu(rng):
    w, dy = randn(rng, (4, 4, 3, 3), np.float32), randn(rng, (1, 4, 5, 5), np.float32)
    with pytest.raises(ValueError, match="implicit_gemm.*CPU path"):
        gpuconv.conv2d_input((1, 4, 7, 7), w, dy, algorithm="implicit_gemm")


# ---------------------------------------------------------------------------
# the simulated kernels

DTYPES = [pytest.param(np.float16, "highest", id="float16"),
          pytest.param(np.float32, "high", id="float32-high"),
          pytest.param(np.float32, "medium", id="float32-medium")]
if BFLOAT16 is not None:
    DTYPES.insert(1, pytest.param(BFLOAT16, "highest", id="bfloat16"))

# (x shape, w shape, stride, padding, dilation, groups): sizes off every tile, stride 2
# with odd sizes, asymmetric stride, dilation, groups, a 1x1 stride-2 projection
CASES = [
    ((2, 12, 9, 11), (10, 12, 3, 3), 2, 1, 1, 1),
    ((3, 8, 7, 10), (12, 4, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    ((2, 6, 11, 8), (9, 6, 1, 1), 2, 0, 1, 1),
    ((1, 16, 6, 7), (8, 8, 5, 3), 1, 2, 1, 2),
]

# Relative to max|ref|: 16-bit inputs rounded once then exact products in FP32; TF32
# rounds both operands to 10 mantissa bits (2^-11 relative each), 3xTF32 keeps FP32's.
PRECISION_TOL = {"medium": 3e-3, "high": 2e-5}


def _tol(dtype, precision):
    return PRECISION_TOL.get(precision) if np.dtype(dtype) == np.float32 else TOLERANCE[np.dtype(dtype)]


@pytest.mark.sim
@pytest.mark.parametrize("dtype,precision", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_tensor_core_gradients_in_the_simulator(dtype, precision, case, rng):
    from gpuconv.sim import SimBackend
    xs, ws, st, pad, dil, g = CASES[case]
    spec = _spec(xs, ws, st, pad, dil, g, np.float64)
    x, w = randn(rng, xs).astype(dtype), (randn(rng, ws) / 4).astype(dtype)
    dy, b = randn(rng, spec.output_shape).astype(dtype), randn(rng, (ws[1] * g,)).astype(dtype)
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    tol = _tol(dtype, precision)
    # the race detector on one case, the reversed thread schedule on another
    be = SimBackend(racecheck=case == 0, schedule="reversed" if case == 1 else "default")
    with gpuconv.use_backend(be):
        dx = gpuconv.conv2d_input(xs, w, dy, st, pad, dil, g, precision=precision,
                                  algorithm="implicit_gemm")
        dw = gpuconv.conv2d_weight(x, ws, dy, st, pad, dil, g, precision=precision,
                                   algorithm="implicit_gemm")
    assert dx.dtype == np.dtype(dtype) and dw.dtype == np.dtype(dtype)
    assert_close(dx, reference.dgrad(dy64, w64, spec), dtype, tol, "dgrad")
    assert_close(dw, reference.wgrad(x64, dy64, spec), dtype, tol, "wgrad")
    if case == 1:             # conv_transpose2d with bias and a fused activation, phase by phase
        out_pad = tuple(i - ((o - 1) * s - 2 * p + d * (k - 1) + 1) for i, o, s, p, d, k in
                        zip(xs[2:], spec.out_size, spec.stride, (1, 0), spec.dilation, ws[2:]))
        with gpuconv.use_backend(be):
            y = gpuconv.conv_transpose2d(dy, w, b, st, pad, out_pad, g, dil, activation="relu",
                                         precision=precision, algorithm="implicit_gemm")
        want = reference.dgrad(dy64, w64, spec) + b.astype(np.float64)[None, :, None, None]
        assert_close(y, np.maximum(want, 0), dtype, tol, "conv_transpose2d")


@pytest.mark.sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_dgrad_by_phases_in_the_simulator(dtype, rng):
    """The dgrad route taken by the rule itself (algorithm 'auto'): stride 2, four
    phases each large enough for the tiled / GEMM kernels; exact arithmetic, so the
    dtype's own tolerance."""
    from gpuconv.sim import SimBackend
    xs, ws = (8, 64, 40, 41), (64, 64, 3, 3)
    spec = _spec(xs, ws, 2, 1, 1, 1, dtype)
    be = SimBackend()
    from gpuconv.cuda.backend import device_facts
    route, why = dispatch.grad_route("dgrad", spec, device_facts(be))
    assert route == "forward" and "4 stride-phase" in why, why
    w, dy = randn(rng, ws, dtype), randn(rng, spec.output_shape, dtype)
    with gpuconv.use_backend(be):
        dx = gpuconv.conv2d_input(xs, w, dy, 2, 1)
    assert_close(dx, reference.dgrad(dy.astype(np.float64), w.astype(np.float64), spec), dtype)


@pytest.mark.sim
def test_wgrad_split_k_bit_identical_across_runs_and_schedules(rng):
    """deterministic=True: the split-K partials sum in a fixed order, so the result is
    the same bits on every run and under every thread schedule."""
    from gpuconv.sim import SimBackend
    xs, ws = (8, 8, 10, 10), (8, 8, 3, 3)
    spec = _spec(xs, ws, 1, 1, 1, 1, np.float16)
    fplan = igemm.plan(derived.wgrad_fprop_spec(spec), FACTS)
    assert fplan["split_k"] > 1, fplan            # the case exercises the split-K reduction
    x, dy = randn(rng, xs).astype(np.float16), randn(rng, spec.output_shape).astype(np.float16)
    runs = []
    for opts in ({}, {}, {"schedule": "reversed"}, {"schedule": "random", "seed": 7}):
        with gpuconv.use_backend(SimBackend(**opts)):
            runs.append(gpuconv.conv2d_weight(x, ws, dy, 1, 1, algorithm="implicit_gemm"))
    assert_close(runs[0], reference.wgrad(x.astype(np.float64), dy.astype(np.float64), spec),
                 np.float16)
    for r in runs[1:]:
        assert r.tobytes() == runs[0].tobytes()


@pytest.mark.sim
def test_implicit_gemm_algorithm_errors_before_any_kernel(rng):
    from gpuconv.sim import SimBackend
    w, dy = randn(rng, (4, 4, 3, 3), np.float64), randn(rng, (1, 4, 5, 5), np.float64)
    with gpuconv.use_backend(SimBackend()):
        with pytest.raises(ValueError, match="implicit_gemm.*float64"):
            gpuconv.conv2d_input((1, 4, 7, 7), w, dy, algorithm="implicit_gemm")
        with pytest.raises(ValueError, match="implicit_gemm.*highest"):
            gpuconv.conv2d_weight(dy.astype(np.float32), (4, 4, 1, 1), dy.astype(np.float32),
                                  algorithm="implicit_gemm", precision="highest")
