"""Tensor-core wrappers (kernels_cu/mma.cuh) and the implicit-GEMM variant.

The wrapper tests lay fragments out per the PTX ISA formulas written out here in
NumPy, independently of the CPU versions in mma.cuh, and compare with A @ B + C:
in the simulator they check the CPU versions; under `-m gpu` the same tests check
the real mma.sync / ldmatrix / cp.async instructions against the same formulas
(the layouts are only proven once that run passes on a GPU).

PTX ISA sections: 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with floating
point type", 9.7.14.5.7 "Matrix Fragments for mma.m16n8k8" (.tf32), 9.7.14.5.15
"ldmatrix", 9.7.9.25 "cp.async".  g = lane >> 2, t = lane % 4.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from gpuconv import activations, reference
from gpuconv.cuda import conv, variants
from gpuconv.cuda.families import conv2d_implicit_gemm, mma_check
from gpuconv.spec import make_spec

from kernel_helpers import TOL, assert_close, backend_params, make_backend, to_host

BACKENDS = backend_params()
LANES = np.arange(32)
G, T = LANES >> 2, LANES & 3


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return make_backend(request.param)


def _fn(backend, name):
    return backend.get_function(mma_check.MODULE, mma_check.INSTANTIATIONS, name)


def _pack(lo_bits, hi_bits):
    return (lo_bits.astype(np.uint32) | (hi_bits.astype(np.uint32) << 16)).astype(np.uint32)


# ---------------------------------------------------------------- fragment layouts (PTX formulas)

def frag_a_k16(bits):
    """A (16x16) 16-bit element bits -> [32][4] registers: a0..a7 with row g for a0,a1,a4,a5
    (g+8 otherwise), col 2t + (i&1) (+8 for i >= 4); register j holds a_{2j} (low), a_{2j+1}."""
    regs = np.zeros((32, 4), np.uint32)
    for j, (dr, dc) in enumerate(((0, 0), (8, 0), (0, 8), (8, 8))):
        regs[:, j] = _pack(bits[G + dr, 2 * T + dc], bits[G + dr, 2 * T + dc + 1])
    return regs


def frag_b_k16(bits):
    """B (16x8) -> [32][2]: b0,b1 rows 2t, 2t+1; b2,b3 rows 2t+8, 2t+9; col g."""
    regs = np.zeros((32, 2), np.uint32)
    for j, dr in enumerate((0, 8)):
        regs[:, j] = _pack(bits[2 * T + dr, G], bits[2 * T + dr + 1, G])
    return regs


def frag_c(c):
    """C (16x8 float32) -> [32][4]: c0,c1 row g cols 2t, 2t+1; c2,c3 row g+8."""
    return np.stack([c[G, 2 * T], c[G, 2 * T + 1], c[G + 8, 2 * T], c[G + 8, 2 * T + 1]], axis=1)


def unfrag_c(regs):
    d = np.zeros((16, 8), np.float32)
    d[G, 2 * T], d[G, 2 * T + 1] = regs[:, 0], regs[:, 1]
    d[G + 8, 2 * T], d[G + 8, 2 * T + 1] = regs[:, 2], regs[:, 3]
    return d


def frag_a_tf32(a):
    """A (16x8 float32) -> [32][4]: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4)."""
    return np.stack([a[G, T], a[G + 8, T], a[G, T + 4], a[G + 8, T + 4]], axis=1).view(np.uint32)


def frag_b_tf32(b):
    """B (8x8 float32) -> [32][2]: b0 (t, g), b1 (t+4, g)."""
    return np.stack([b[T, G], b[T + 4, G]], axis=1).view(np.uint32)


def _run_mma(backend, kind, a_regs, b_regs, c):
    xp = backend.xp
    d = xp.full((32, 4), np.nan, dtype=np.float32)
    _fn(backend, f"mma_check<{kind}>")((1,), (32,), (xp.asarray(np.ascontiguousarray(a_regs)),
                                                     xp.asarray(np.ascontiguousarray(b_regs)),
                                                     xp.asarray(np.ascontiguousarray(frag_c(c))), d))
    return unfrag_c(to_host(d))


def _check_mma(d, a, b, c, what):
    ref = a.astype(np.float64) @ b.astype(np.float64) + c
    # exact products, 16 (8) float32 additions: a few ulps of the magnitude sum
    bound = 1e-6 * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64) + np.abs(c)) + 1e-30
    err = np.abs(d - ref)
    assert np.all(err <= bound), f"{what}: max err {err.max():.3g}, first bad {np.argwhere(err > bound)[0]}"


def test_mma_f16_layout(backend):
    rng = np.random.default_rng(1)
    a = rng.uniform(-2, 2, (16, 16)).astype(np.float16)
    b = rng.uniform(-2, 2, (16, 8)).astype(np.float16)
    c = rng.uniform(-4, 4, (16, 8)).astype(np.float32)
    d = _run_mma(backend, 0, frag_a_k16(a.view(np.uint16)), frag_b_k16(b.view(np.uint16)), c)
    _check_mma(d, a, b, c, "mma m16n8k16 f16")


def _to_bf16(x):
    """float32 values exactly representable in bfloat16, and their 16-bit patterns."""
    bits = (x.astype(np.float32).view(np.uint32) & 0xFFFF0000).astype(np.uint32)
    return bits.view(np.float32), (bits >> 16).astype(np.uint16)


def test_mma_bf16_layout(backend):
    rng = np.random.default_rng(2)
    a, abits = _to_bf16(rng.uniform(-2, 2, (16, 16)))
    b, bbits = _to_bf16(rng.uniform(-2, 2, (16, 8)))
    c = rng.uniform(-4, 4, (16, 8)).astype(np.float32)
    d = _run_mma(backend, 1, frag_a_k16(abits), frag_b_k16(bbits), c)
    _check_mma(d, a, b, c, "mma m16n8k16 bf16")


def test_mma_tf32_layout(backend):
    rng = np.random.default_rng(3)
    tf32 = lambda x: (x.astype(np.float32).view(np.uint32) & 0xFFFFE000).view(np.float32)  # noqa: E731
    a = tf32(rng.uniform(-2, 2, (16, 8)))
    b = tf32(rng.uniform(-2, 2, (8, 8)))
    c = rng.uniform(-4, 4, (16, 8)).astype(np.float32)
    d = _run_mma(backend, 2, frag_a_tf32(a), frag_b_tf32(b), c)
    _check_mma(d, a, b, c, "mma m16n8k8 tf32")


@pytest.mark.parametrize("trans", [0, 1])
def test_ldmatrix_x4_layout(backend, trans):
    """Lane 8i+j supplies row j of matrix i (rows stored permuted in shared memory);
    lane l receives in r[i]: row l/4, cols 2(l%4), 2(l%4)+1 of matrix i, or with .trans
    rows 2(l%4), 2(l%4)+1 of column l/4."""
    rng = np.random.default_rng(4 + trans)
    src = rng.integers(0, 2**16, size=(4, 8, 8), dtype=np.uint16)
    perm = rng.permutation(32).astype(np.int32)
    xp = backend.xp
    out = xp.zeros((32, 4), dtype=np.uint32)
    _fn(backend, f"ldmatrix_check<{trans}>")((1,), (32,), (xp.asarray(src.reshape(32, 8)), xp.asarray(perm), out))
    out = to_host(out)
    for i in range(4):
        m = src[i]
        want = (_pack(m[G, 2 * T], m[G, 2 * T + 1]) if not trans
                else _pack(m[2 * T, G], m[2 * T + 1, G]))
        bad = np.flatnonzero(out[:, i] != want)
        assert bad.size == 0, f"ldmatrix trans={trans} matrix {i}: lane {bad[0]} got {out[bad[0], i]:#x}, want {want[bad[0]]:#x}"


@pytest.mark.parametrize("groups", [1, 3])
def test_cp_async_zero_fill(backend, groups):
    rng = np.random.default_rng(6)
    src = rng.integers(1, 2**32, size=(32, 4), dtype=np.uint32)
    pred = (rng.random(32) < 0.6).astype(np.int32)
    pred[0], pred[1] = 1, 0
    xp = backend.xp
    out = xp.zeros((32, 4), dtype=np.uint32)
    _fn(backend, f"cp_async_check<{groups}>")((1,), (32,), (xp.asarray(src), xp.asarray(pred), out))
    want = np.where(pred[:, None] != 0, src[(LANES * 5) % 32], 0)
    assert np.array_equal(to_host(out), want)


def test_tf32_round(backend):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(32).astype(np.float32)
    u = x.view(np.uint32)
    u[:4] = (u[:4] & 0xFFFFE000) | 0x1000          # exact ties: away from zero
    u[4] = 0x3F800000                               # 1.0 unchanged
    xp = backend.xp
    out = xp.zeros(32, dtype=np.uint32)
    _fn(backend, "tf32_round_check")((1,), (32,), (xp.asarray(x), out))
    mag = (x.view(np.uint32) & 0x7FFFFFFF).astype(np.uint64)
    want = (((mag + 0x1000) & 0x7FFFE000) | (x.view(np.uint32) & 0x80000000)).astype(np.uint32)
    assert np.array_equal(to_host(out), want)


# ---------------------------------------------------------------- the variant on edge shapes

def _rand(rng, shape, dt):
    return rng.uniform(-1.0, 1.0, size=shape).astype(dt)


# (id, input, weight, stride, padding, dilation, groups, bias, activation)
EDGE_CASES = [
    ("batch1_K130_tail", (1, 5, 9, 7), (130, 5, 3, 3), 1, 1, 1, 1, True, None),          # 2 N tiles, Cg=5 -> 8
    ("batch3_s2_oddPQ", (3, 6, 11, 9), (17, 6, 3, 3), 2, 1, 1, 1, True, "relu"),         # M=3*6*5=90
    ("dil2_asym_pad", (2, 4, 10, 12), (9, 4, 3, 2), 1, ((2, 1), (0, 3)), (2, 3), 1, False, "gelu"),
    ("groups3_Cg12", (1, 36, 7, 8), (21, 12, 3, 3), 1, 1, 1, 3, True, "silu"),           # Cg 12 -> 16
    ("deep_K_pipeline", (1, 40, 6, 5), (24, 40, 3, 3), 1, 1, 1, 1, True, "relu6"),       # 12 k-tiles > 3 stages
    ("M_tail_multi_block", (2, 8, 13, 11), (8, 8, 1, 1), 1, 0, 1, 1, True, None),        # M=286: 3 M tiles
    ("first_layer_C3_7x7_s2", (1, 3, 20, 18), (16, 3, 7, 7), 2, 3, 1, 1, True, "relu"),
    ("depthwise_via_gemm", (1, 4, 7, 7), (8, 1, 3, 3), 1, 1, 1, 4, True, None),
]


def _run(backend, case, monkeypatch=None):
    _, xs, ws, stride, padding, dilation, groups, has_bias, act = case
    dt = np.dtype(np.float16)
    spec, _ = make_spec(xs, ws, (ws[0],) if has_bias else None, stride, padding, dilation, groups, dt, 2)
    ok, why = variants.get("implicit_gemm").supports(spec)
    assert ok, why
    rng = np.random.default_rng(zlib.crc32(case[0].encode()))      # replayable
    x, w = _rand(rng, xs, dt), _rand(rng, ws, dt)
    b = _rand(rng, (ws[0],), dt) if has_bias else None
    ref = activations.apply(reference.conv(x, w, b, spec, accumulate="float64"), act)
    xp = backend.xp
    out = xp.full(spec.output_shape, np.nan, dtype=dt)
    conv.forward(xp.asarray(x), xp.asarray(w), None if b is None else xp.asarray(b), spec, activation=act,
                 algorithm="implicit_gemm", backend=backend, out=out)
    assert_close(out, ref, TOL[dt], f"implicit_gemm {case[0]}")


@pytest.mark.parametrize("case", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_implicit_gemm_edges(backend, case):
    _run(backend, case)


def test_implicit_gemm_batch0():
    spec, _ = make_spec((0, 3, 8, 8), (4, 3, 3, 3), None, 1, 1, 1, 1, np.float16, 2)
    assert variants.get("implicit_gemm").supports(spec)[0]

    class NoLaunch:
        name = "none"
        xp = np

        def get_function(self, *a):
            raise AssertionError("a kernel was requested for an empty output")

    y = conv.forward(np.ones(spec.input_shape, np.float16), np.ones(spec.weight_shape, np.float16), None, spec,
                     algorithm="implicit_gemm", backend=NoLaunch())
    assert y.shape == (0, 4, 8, 8)


def test_implicit_gemm_bf16(backend):
    """The __nv_bfloat16 instantiation on ml_dtypes.bfloat16 arrays against float64."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    spec, _ = make_spec((2, 5, 7, 9), (19, 5, 3, 3), (19,), (1, 2), 1, 1, 1, bf16, 2)
    rng = np.random.default_rng(8)
    x, w, b = (rng.uniform(-1, 1, s).astype(bf16) for s in (spec.input_shape, spec.weight_shape, (19,)))
    ref = activations.apply(reference.conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                           spec, accumulate="float64"), "relu")
    xp = backend.xp
    y = xp.full(spec.output_shape, np.nan, dtype=bf16)
    conv.forward(xp.asarray(x), xp.asarray(w), xp.asarray(b), spec, activation="relu", algorithm="implicit_gemm",
                 backend=backend, out=y)
    assert_close(to_host(y).astype(np.float32), ref, 1e-2, "implicit_gemm bf16")


def test_implicit_gemm_supports_and_workspace():
    v = variants.get("implicit_gemm")
    f32, _ = make_spec((1, 8, 8, 8), (8, 8, 3, 3), None, 1, 1, 1, 1, np.float32, 2)
    assert not v.supports(f32)[0]                              # "highest": exact FP32 on FMA units
    assert v.supports(f32, precision="high")[0] and v.supports(f32, precision="medium")[0]
    f64, _ = make_spec((1, 8, 8, 8), (8, 8, 3, 3), None, 1, 1, 1, 1, np.float64, 2)
    assert not v.supports(f64, precision="medium")[0]
    s1d, _ = make_spec((1, 8, 17), (8, 8, 3), None, 1, 1, 1, 1, np.float16, 1)
    assert not v.supports(s1d)[0]
    spec, _ = make_spec((2, 6, 9, 7), (10, 3, 3, 3), None, 1, 1, 1, 2, np.float16, 2)
    # NHWC copy with Cg=3 padded to 8 per group + the [K][R][S][8] weights, 2 bytes each
    assert v.workspace_bytes(spec, {"split_k": 1}) == 2 * (2 * 9 * 7 * 2 * 8 + 10 * 9 * 8)
    # split-K adds float32 partials: split_k x the output's N*K*P*Q elements
    assert v.workspace_bytes(spec, {"split_k": 3}) == 2 * (2 * 9 * 7 * 2 * 8 + 10 * 9 * 8) + 4 * 3 * 2 * 10 * 9 * 7
