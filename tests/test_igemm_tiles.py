"""The implicit GEMM's tile menu, split-K, element types and float32 precisions.

In the simulator with the shared-memory race detector on: every tile x split-K x
(float16, bfloat16, float32 "high" = 3xTF32, float32 "medium" = TF32) on irregular
shapes (C, K and N*P*Q off every tile size, stride, dilation, groups, bias,
activations), outputs poisoned (NaN), against float64.  Then the error of each float32
precision against float64 (the simulator models the TF32 operand rounding: cvt.rna,
and the tensor core reading the top 19 bits), channels-last input read in place, and
plan() (pure, no simulator).

Error bounds (u = 2^-24, n = the GEMM's K = Cg*R*S, A = conv(|x|, |w|) + |b|):
  float16 / bfloat16  |y - ref| <= u_out |ref| + 2 (n + splits) u A     (exact products)
  float32 "medium"    |y - ref| <= 2 (2^-10 + (n + splits) u) A          (TF32 operands)
  float32 "high"      |y - ref| <= 2 (3 * 2^-22 + 3 (n + splits) u) A    (3xTF32)
with u_out the output rounding (2^-11 float16, 2^-8 bfloat16, u float32): the factor 2
is slack for the activation (|f'| <= 1.13 for gelu) and the output's own rounding.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from gpuconv import activations, reference
from gpuconv.cuda import conv, variants
from gpuconv.cuda.facts import DeviceFacts
from gpuconv.cuda.families import conv2d_implicit_gemm as ig
from gpuconv.spec import make_spec

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
U = 2.0 ** -24

# (id, dtype, precision)
KINDS = [("f16", np.dtype(np.float16), "highest"), ("bf16", BF16, "highest"),
         ("f32_high", np.dtype(np.float32), "high"), ("f32_medium", np.dtype(np.float32), "medium")]
OUT_ROUND = {"f16": 2.0 ** -11, "bf16": 2.0 ** -8, "f32_high": U, "f32_medium": U}
SPLITS = (1, 3)
# (input, weight, stride, padding, dilation, groups, bias, activation).  M = N*P*Q, Kg, C:
#   A: M = 2*11*9 = 198 (64*3 + 6, 128 + 70), Kg = 70, C = 13 (padded to 16 / 16)
#   B: M = 3*5*5 = 75, groups 3, Cg = 4, Kg = 22, stride 2, dilation (1, 2), asymmetric pad
#   C: M = 1*13*5 = 65, groups 2, Cg = 10, Kg = 67 (off 64), stride (1, 2), dilation 2, no bias
#   D: M = 3*8*12 = 288 (64*4 + 32, 128*2 + 32), P*Q = 96 a whole number of 16-byte runs
#      (the NCHW epilogue's vector stores), groups 2, Cg = 12, Kg = 20
SHAPES = [
    ((2, 13, 11, 9), (70, 13, 3, 3), 1, 1, 1, 1, True, "relu"),
    ((3, 12, 10, 9), (66, 4, 3, 2), 2, ((1, 0), (2, 1)), (1, 2), 3, True, "gelu"),
    ((1, 20, 13, 12), (134, 10, 2, 3), (1, 2), 1, 2, 2, False, "silu"),
    ((3, 24, 8, 12), (40, 12, 3, 3), 1, 1, 1, 2, True, "relu6"),
]


def _data(rng, shape, dt):
    return rng.uniform(-1.0, 1.0, size=shape).astype(dt)


def _case(kind, shape_i, seed_text):
    xs, ws, stride, padding, dilation, groups, has_bias, act = SHAPES[shape_i]
    _, dt, precision = kind
    spec, _ = make_spec(xs, ws, (ws[0],) if has_bias else None, stride, padding, dilation, groups, dt, 2)
    rng = np.random.default_rng(zlib.crc32(seed_text.encode()))        # replayable
    x, w = _data(rng, xs, dt), _data(rng, ws, dt)
    b = _data(rng, (ws[0],), dt) if has_bias else None
    return spec, x, w, b, act, precision


def _launch(backend, spec, x, w, b, act, config, y=None):
    y = np.full(spec.output_shape, np.nan, dtype=spec.dtype) if y is None else y
    variants.get("implicit_gemm").launch(backend, x, w, b, y, spec, activations.ACTIVATION_CODES[act], config)
    return y


def _ref_and_bound(spec, x, w, b, act, kid, splits):
    f64 = np.float64
    b64 = None if b is None else b.astype(f64)
    ref = activations.apply(reference.conv(x.astype(f64), w.astype(f64), b64, spec, accumulate="float64"), act)
    mag = reference.conv(np.abs(x.astype(f64)), np.abs(w.astype(f64)), None if b is None else np.abs(b64), spec,
                         accumulate="float64")
    n = spec.c_per_group * int(np.prod(spec.kernel)) + splits
    coef = {"f16": 2 * n * U, "bf16": 2 * n * U, "f32_medium": 2 * (2.0 ** -10 + n * U),
            "f32_high": 2 * (3 * 2.0 ** -22 + 3 * n * U)}[kid]
    return ref, OUT_ROUND[kid] * np.abs(ref) + coef * mag


def _check(y, ref, bound, what):
    got = np.asarray(y).astype(np.float64)
    err = np.abs(got - ref)
    bad = ~(err <= bound)                                     # NaN (unwritten) fails
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} outside the bound, first at "
                           f"{np.argwhere(bad)[0]}: got {got[bad][0]}, want {ref[bad][0]}")


@pytest.fixture(scope="module")
def racecheck():
    from gpuconv.sim import SimBackend
    return SimBackend(racecheck=True)


@pytest.mark.sim
@pytest.mark.parametrize("kind", KINDS, ids=[k[0] for k in KINDS])
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("tile", list(ig.TILES))
def test_tile_split_dtype(racecheck, tile, split, kind):
    ti, si, ki = list(ig.TILES).index(tile), SPLITS.index(split), KINDS.index(kind)
    shape_i = (ti + si + ki) % len(SHAPES)                    # every tile and kind meets every shape
    spec, x, w, b, act, precision = _case(kind, shape_i, f"{tile}/{split}/{kind[0]}")
    y = _launch(racecheck, spec, x, w, b, act, {"tile": tile, "split_k": split, "precision": precision})
    ref, bound = _ref_and_bound(spec, x, w, b, act, kind[0], split)
    _check(y, ref, bound, f"implicit_gemm {tile} split {split} {kind[0]} shape {shape_i}")


@pytest.mark.sim
def test_split_with_empty_split_and_determinism(racecheck):
    """4 splits of 5 k-tiles (2, 2, 1, 0): the empty split contributes zeros; the fixed-order
    reduction gives the same bits on every run and under another thread schedule."""
    from gpuconv.sim import SimBackend
    kind = KINDS[0]
    spec, x, w, b, act, _ = _case(kind, 0, "empty-split")
    cfg = {"tile": "64x64", "split_k": 4, "precision": "highest"}
    y1 = _launch(racecheck, spec, x, w, b, act, cfg)
    ref, bound = _ref_and_bound(spec, x, w, b, act, "f16", 4)
    _check(y1, ref, bound, "split 4 with an empty split")
    y2 = _launch(SimBackend(schedule="random", seed=5), spec, x, w, b, act, cfg)
    assert np.array_equal(y1.view(np.uint16), y2.view(np.uint16))


# ---------------------------------------------------------------- float32 precision, measured

def _errors(backend, seed):
    """max |y - ref| / max A for exact FP32 (the NumPy float32 path), 3xTF32 and TF32 on an
    irregular shape with n = Cg*R*S = 37*9 = 333."""
    spec, _ = make_spec((2, 37, 9, 11), (45, 37, 3, 3), (45,), 1, 1, 1, 1, np.dtype(np.float32), 2)
    rng = np.random.default_rng(seed)
    x, w, b = (_data(rng, s, np.float32) for s in (spec.input_shape, spec.weight_shape, (45,)))
    ref = reference.conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), spec,
                         accumulate="float64")
    mag = reference.conv(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), np.abs(b).astype(np.float64),
                         spec, accumulate="float64").max()
    errs = {"highest": np.abs(reference.conv(x, w, b, spec, accumulate="float32") - ref).max() / mag}
    for precision in ("high", "medium"):
        y = _launch(backend, spec, x, w, b, None, {"tile": "64x64", "split_k": 1, "precision": precision})
        errs[precision] = np.abs(y.astype(np.float64) - ref).max() / mag
    return errs


@pytest.mark.sim
def test_float32_precision_errors(racecheck):
    """'high' lands within a small factor of exact FP32's error, 'medium' within TF32's
    (2^-11 per operand); the README quotes these bounds."""
    e = _errors(racecheck, 11)
    assert e["highest"] < 2e-7, e
    assert e["high"] <= 4 * max(e["highest"], 333 * U / 16), e   # same class as FP32 (a few 1e-8)
    assert 2.0 ** -16 < e["medium"] <= 2 * 2.0 ** -11, e        # TF32: visibly coarser, within its bound
    assert e["medium"] > 20 * e["high"], e


# ---------------------------------------------------------------- channels-last

class _Counting:
    """A backend wrapper recording every kernel requested."""

    def __init__(self, inner):
        self.inner, self.names = inner, []
        self.xp = inner.xp
        self.name = inner.name

    def get_function(self, module, names, name):
        self.names.append(name)
        return self.inner.get_function(module, names, name)


@pytest.mark.sim
@pytest.mark.parametrize("kind", [KINDS[0], KINDS[3]], ids=["f16", "f32_medium"])
def test_channels_last_in_place(racecheck, kind):
    """NHWC-strided x with Cg a whole number of 16-byte chunks: no staging copy, y comes back
    NHWC-strided; a Cg that is not (C = 13) is staged and still returns channels-last."""
    _, dt, precision = kind
    for c, staged in ((16, False), (13, True)):
        spec, _ = make_spec((2, c, 9, 7), (37, c, 3, 3), (37,), 2, 1, 1, 1, dt, 2)
        rng = np.random.default_rng(20 + c)
        x = _data(rng, (2, 9, 7, c), dt).transpose(0, 3, 1, 2)     # NHWC memory, NCHW view
        w, b = _data(rng, spec.weight_shape, dt), _data(rng, (37,), dt)
        be = _Counting(racecheck)
        y = conv.forward(x, w, b, spec, activation="relu6", algorithm="implicit_gemm", backend=be,
                         precision=precision)
        assert any(n.startswith("igemm_stage_input") for n in be.names) == staged, be.names
        assert ig.is_channels_last(y, spec) and not y.flags.c_contiguous
        ref, bound = _ref_and_bound(spec, x, w, b, "relu6", "f16" if dt == np.float16 else "f32_medium", 1)
        _check(y, ref, bound, f"channels-last C={c}")


# ---------------------------------------------------------------- plan() (pure)

H100 = DeviceFacts()


def _spec(n, c, hw, k, r=3, stride=1, dt=np.float16, groups=1):
    return make_spec((n, c, hw, hw), (k, c // groups, r, r), None, stride, r // 2, 1, groups, np.dtype(dt), 2)[0]


def test_plan_fills_the_gpu():
    # ResNet-50 batch 32, 14x14 and 7x7 3x3 layers: the old single 128x128 tile gave 49 and 13 CTAs
    for spec in (_spec(32, 256, 14, 256), _spec(32, 512, 7, 512)):
        p = ig.plan(spec, H100, "highest")
        # the busiest SM holds enough warps to keep its tensor cores issuing, and the estimate
        # beats the old single 128x128 tile without split-K (98 and 52 CTAs on 132 SMs)
        assert p["busiest_sm_warps"] >= ig.WARPS_TO_SATURATE, p
        old = ig._estimate(spec, H100, ig.TILES["128x128"], 1, 0)
        assert p["est_us"] < old["est_us"] * 0.9 or p["ctas"] >= H100.sm_count, (p, old)
        assert p["label"].startswith("estimate")
    big = ig.plan(_spec(32, 256, 56, 256), H100)            # 3136 M tiles of 32: no split needed
    assert big["split_k"] == 1 and big["tile"] == "128x128" and big["waves"] > 1, big


def test_plan_is_pure_and_consistent():
    spec = _spec(8, 64, 28, 128, dt=np.float32)
    p = ig.plan(spec, H100, "medium")
    assert p == ig.plan(spec, H100, "medium")
    t = ig.TILES[p["tile"]]
    (gx, gy, gz), (threads, _, _) = ig.grid(spec, t, p["split_k"])
    assert gx * gy * gz == p["ctas"] and threads == t.threads
    assert p["smem"] == t.smem <= DeviceFacts().smem_per_block
    assert p["workspace"] == ig.workspace_for(spec, p["split_k"])
    assert p["k_tiles_per_split"] >= ig.MIN_KTILES_PER_SPLIT or p["split_k"] == 1
    assert abs(p["waves"] - p["ctas"] / (p["ctas_per_sm"] * H100.sm_count)) < 1e-9
    assert 0 < p["est_pct_peak"] <= 100 * ig.MMA_SYNC_FRACTION
    # 3xTF32 does three MMAs per product: the same layer takes about three times as long
    assert ig.plan(spec, H100, "high")["est_us"] >= 2.5 * p["est_us"]


def test_plan_ctas_per_sm():
    # 128 registers x 256 threads: 2 CTAs; 48 KiB + 1 KiB of shared memory: 4 fit in 228 KiB
    assert ig.ctas_per_sm(ig.TILES["128x128"], H100) == 2
    assert ig.ctas_per_sm(ig.TILES["64x64"], H100) == 4
    assert ig.ctas_per_sm(ig.TILES["128x128"], H100, regs=168) == 1


def test_supports_precision_semantics():
    f32 = _spec(1, 16, 8, 16, dt=np.float32)
    assert not ig.supports(f32)[0] and not ig.supports(f32, precision="highest")[0]
    assert ig.supports(f32, precision="high")[0] and ig.supports(f32, precision="medium")[0]
    assert ig.supports(_spec(1, 16, 8, 16, dt=BF16))[0]
    assert not ig.supports(_spec(1, 16, 8, 16, dt=np.float64), precision="medium")[0]


@pytest.mark.sim
def test_channels_last_through_the_api(racecheck):
    """gpuconv.conv2d on an NHWC-strided array in the simulator: read in place, the result
    channels-last (torch's rule for channels_last inputs)."""
    import gpuconv
    rng = np.random.default_rng(30)
    x = _data(rng, (2, 9, 7, 16), np.float16).transpose(0, 3, 1, 2)
    w = _data(rng, (24, 16, 3, 3), np.float16)
    with gpuconv.use_backend(racecheck):
        y = gpuconv.conv2d(x, w, padding=1, algorithm="implicit_gemm")
    assert y.strides == (9 * 7 * 24 * 2, 2, 7 * 24 * 2, 24 * 2)
    spec, _ = make_spec(x.shape, w.shape, None, 1, 1, 1, 1, np.dtype(np.float16), 2)
    ref, bound = _ref_and_bound(spec, x, w, None, None, "f16", 1)
    _check(y, ref, bound, "channels-last through gpuconv.conv2d")


def test_dispatch_routes_tensor_core_precisions():
    """A large float32 layer reaches implicit_gemm at 'high' and 'medium', never at 'highest';
    bfloat16 reaches it at any precision; the config carries the plan's tile and split-K."""
    from gpuconv.cuda.dispatch import choose
    f32 = _spec(8, 64, 28, 64, dt=np.float32)
    assert choose(f32, H100)[0] != "implicit_gemm"
    for precision in ("high", "medium"):
        name, config, _ = choose(f32, H100, precision)
        assert name == "implicit_gemm", (precision, name)
        p = ig.plan(f32, H100, precision)
        assert (config["tile"], config["split_k"]) == (p["tile"], p["split_k"])
    assert choose(_spec(8, 64, 28, 64, dt=BF16), H100)[0] == "implicit_gemm"
    # stems: C = 3 padded to a chunk still beats the FMA kernels (the kernel header's napkin math)
    stem = make_spec((8, 3, 224, 224), (64, 3, 7, 7), None, 2, 3, 1, 1, np.dtype(np.float16), 2)[0]
    assert choose(stem, H100)[0] == "implicit_gemm"
