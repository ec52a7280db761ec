"""The CPU simulator of the CUDA kernels (gpuconv.sim): does it compute what the
GPU computes, and does it catch what the GPU would get wrong?

All kernels come from tests/sim_kernels/sim_checks.cu, built once (and once
more with AddressSanitizer for the out-of-bounds tests)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from gpuconv.sim import (SimBackend, SimCompileError, SimCrashError, SimDeadlockError, SimKernelError,
                         SimTimeoutError, sim_available)

pytestmark = [pytest.mark.sim, pytest.mark.skipif(not sim_available(), reason="simulator not available")]

SRC = Path(__file__).resolve().parent / "sim_kernels" / "sim_checks.cu"
NAMES = (
    "conv_naive<float>", "conv_naive<double>",
    "conv_tiled<8, 3, 3>", "conv_tiled<8, 3, 1>", "conv_tiled<8, 3, 2>",
    "indices", "reverse_block<float>", "reverse_block<double>", "transpose16", "block_votes",
    "warp_ops", "warp_reduce", "atomics",
    "f32_to_f16", "f64_to_f16", "f16_to_f32", "half_ops", "f32_to_bf16", "scalars",
    "exit_before_barrier", "divergent_barrier", "warp_deadlock", "bad_mask", "write_through",
    "read_past_end", "write_past_end", "smem_past_end", "spin_on_other_block", "barrier_loop",
)
I32 = np.int32


@pytest.fixture(scope="module")
def sim():
    b = SimBackend()
    return lambda name: b.get_function(SRC, NAMES, name)


@pytest.fixture(scope="module")
def asan():
    b = SimBackend(asan=True)
    return lambda name: b.get_function(SRC, NAMES, name)


def conv_ref(x, w):
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = H - R + 1, W - S + 1
    y = np.zeros((N, K, P, Q), np.float64)
    for r in range(R):
        for s in range(S):
            y += np.einsum("nchw,kc->nkhw", x[:, :, r:r + P, s:s + Q].astype(np.float64), w[:, :, r, s])
    return y


def run_tiled(fn, x, w):
    N, C, H, W = x.shape
    K, R = w.shape[0], w.shape[2]
    P, Q, T = H - R + 1, W - R + 1, 8
    y = np.zeros((N, K, P, Q), np.float32)
    fn(((Q + T - 1) // T, (P + T - 1) // T, N * K), (T, T), (x, w, y, I32(C), I32(H), I32(W), I32(K)),
       shared_mem=(T + R - 1) ** 2 * 4)
    return y


# ---------------------------------------------------------------- results match NumPy
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_naive_conv_matches_numpy(sim, dt):
    rng = np.random.default_rng(0)
    N, C, H, W, K, R, S = 2, 8, 32, 32, 8, 3, 3
    x = rng.standard_normal((N, C, H, W)).astype(dt)
    w = rng.standard_normal((K, C, R, S)).astype(dt)
    y = np.zeros((N, K, H - R + 1, W - S + 1), dt)
    fn = sim(f"conv_naive<{'float' if dt == np.float32 else 'double'}>")
    fn(((y.size + 255) // 256,), (256,), (x, w, y, *map(I32, (N, C, H, W, K, R, S))))
    tol = 1e-4 if dt == np.float32 else 1e-12
    np.testing.assert_allclose(y, conv_ref(x, w), rtol=tol, atol=tol)


def test_tiled_conv_with_both_barriers_matches_numpy(sim):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 32, 32)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(run_tiled(sim("conv_tiled<8, 3, 3>"), x, w), conv_ref(x, w), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["conv_tiled<8, 3, 1>", "conv_tiled<8, 3, 2>"])
@pytest.mark.parametrize("shape", [(1, 2, 10, 10, 1), (2, 8, 32, 32, 8), (1, 3, 19, 27, 2)])
def test_missing_syncthreads_corrupts_results(sim, variant, shape):
    """Each thread runs to its next barrier before the next thread starts, so a
    missing barrier reads stale or not-yet-written shared memory every time."""
    N, C, H, W, K = shape
    rng = np.random.default_rng(2)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    ref = conv_ref(x, w)
    for _ in range(2):                      # deterministic: the same wrong answer twice
        y = run_tiled(sim(variant), x, w)
        bad = ~np.isclose(y, ref, rtol=1e-4, atol=1e-4)
        assert bad.mean() > 0.2, f"{variant} {shape}: only {bad.sum()} of {bad.size} outputs wrong"


def test_indices_3d_grid_and_block(sim):
    grid, block = (3, 2, 2), (4, 3, 2)
    nb, nt = 12, 24
    out = np.zeros((nb, nt, 12), np.uint32)
    sim("indices")(grid, block, (out,))
    for bz in range(2):
        for by in range(2):
            for bx in range(3):
                for tz in range(2):
                    for ty in range(3):
                        for tx in range(4):
                            b = (bz * 2 + by) * 3 + bx
                            t = (tz * 3 + ty) * 4 + tx
                            assert list(out[b, t]) == [bx, by, bz, tx, ty, tz, 4, 3, 2, 3, 2, 2]


@pytest.mark.parametrize("dt,cname", [(np.float32, "float"), (np.float64, "double")])
def test_extern_shared(sim, dt, cname):
    n, bs = 1000, 128
    x = np.arange(n, dtype=dt)
    y = np.full(n, -7, dt)
    sim(f"reverse_block<{cname}>")(((n + bs - 1) // bs,), (bs,), (x, y, I32(n)), shared_mem=bs * x.itemsize)
    expect = np.full(n, -7, dt)
    for b0 in range(0, n, bs):
        for t in range(bs):
            j = b0 + bs - 1 - t
            if j < n:
                expect[j] = x[b0 + t] if b0 + t < n else 0
    np.testing.assert_array_equal(y, expect)


def test_extern_shared_2d_array(sim):
    n = 48
    x = np.arange(n * n, dtype=np.float32).reshape(n, n)
    y = np.zeros_like(x)
    sim("transpose16")((n // 16, n // 16), (16, 16), (x, y, I32(n)), shared_mem=16 * 17 * 4)
    np.testing.assert_array_equal(y, x.T)


def test_syncthreads_count_and_or(sim):
    x = np.array([[1] * 64, [0] * 64, [1] * 10 + [0] * 54, [0] * 63 + [5]], np.int32)
    out = np.zeros((4, 3), np.int32)
    sim("block_votes")(4, 64, (x, out))
    np.testing.assert_array_equal(out, [[64, 1, 1], [0, 0, 0], [10, 0, 1], [1, 0, 1]])


# ---------------------------------------------------------------- warps
def warp_ref(v, masks, width, nthreads):
    out = np.full((nthreads, 9), -2, np.int64)
    for w, mask in enumerate(masks):
        lanes = [l for l in range(32) if (mask >> l) & 1 and 32 * w + l < nthreads]
        vv = {l: int(v[32 * w + l]) for l in lanes}

        def get(src):
            return vv[src] if src in vv else -1          # not participating: the simulator's poison (-1)

        ballot = sum(1 << l for l in lanes if vv[l] & 1)
        for l in lanes:
            seg = l & ~(width - 1)
            o = out[32 * w + l]
            o[0] = get(seg + (((l * 7 + 3) & 31) & (width - 1)))
            o[1] = get(l - 3 if l - seg >= 3 else l)
            o[2] = get(l + 5 if l - seg + 5 < width else l)
            s = l ^ 6
            o[3] = get(l if s >= seg + width else s)
            o[4] = ballot
            o[5] = any(vv[m] > 90 for m in lanes)
            o[6] = all(vv[m] > 5 for m in lanes)
            o[7] = sum(1 << m for m in lanes if vv[m] % 3 == vv[l] % 3)
            o[8] = sum(vv.values())
    return out.astype(np.uint32).view(np.int32)


@pytest.mark.parametrize("masks,width,nthreads", [
    ([0xFFFFFFFF, 0xFFFFFFFF], 32, 64),
    ([0xFFFFFFFF, 0xFFFFFFFF], 8, 64),
    ([0x0000FFFF, 0xF0F0F0F0], 32, 64),      # partial masks: others take no part
    ([0xAAAAAAAA, 0x00000001], 16, 64),
    ([0xFFFFFFFF, 0xFFFFFFFF], 32, 48),      # a partial warp: missing lanes count as exited
])
def test_warp_shuffle_vote_match_reduce(sim, masks, width, nthreads):
    rng = np.random.default_rng(width + nthreads + masks[0] % 97)
    v = rng.integers(0, 100, nthreads).astype(np.int32)
    out = np.full((nthreads, 9), -2, np.int32)
    sim("warp_ops")(1, nthreads, (v, out, np.array(masks, np.uint32), I32(width)))
    np.testing.assert_array_equal(out, warp_ref(v, masks, width, nthreads))


def test_warp_reduce_double_float_half(sim):
    rng = np.random.default_rng(5)
    n = 128
    xd = rng.integers(-1000, 1000, n).astype(np.float64)
    xf = rng.integers(-1000, 1000, n).astype(np.float32)
    yd, yf, yh = np.zeros(n), np.zeros(n, np.float32), np.zeros(n, np.float16)
    sim("warp_reduce")(2, 64, (xd, xf, yd, yf, yh))
    np.testing.assert_array_equal(yd, np.repeat(xd.reshape(-1, 32).sum(1), 32))
    half_sums = xf.reshape(-1, 2, 16).sum(2)                 # lane 0 / lane 16 of each warp hold the sums
    np.testing.assert_array_equal(yf[0::16], half_sums.reshape(-1))
    np.testing.assert_array_equal(yh, np.repeat(half_sums[:, 1], 32).astype(np.float16))


def test_atomics(sim):
    rng = np.random.default_rng(6)
    n = 1000
    keys = rng.integers(0, 10, n).astype(np.int32)
    vals = rng.integers(-50, 50, n).astype(np.float32)
    hist, fsum, dsum = np.zeros(10, np.int32), np.zeros(1, np.float32), np.zeros(1)
    imax, cas = np.full(1, -10**9, np.int32), np.zeros(1, np.uint32)
    slot, olds = np.full(1, -1, np.int32), np.zeros(n, np.int32)
    sim("atomics")(4, 256, (keys, vals, I32(n), hist, fsum, imax, cas, slot, olds, dsum))
    np.testing.assert_array_equal(hist, np.bincount(keys, minlength=10))
    assert fsum[0] == vals.sum() and dsum[0] == vals.sum()
    assert imax[0] == (keys * 3 - np.arange(n)).max()
    assert cas[0] == n
    np.testing.assert_array_equal(np.sort(np.append(olds, slot[0])), np.arange(-1, n))


# ---------------------------------------------------------------- half and bfloat16
def launch_1d(fn, n, *args):
    fn(((n + 255) // 256,), (256,), args)


def test_half_to_float_all_bit_patterns(sim):
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    f = np.zeros(65536, np.float32)
    launch_1d(sim("f16_to_f32"), 65536, h, f, I32(65536))
    np.testing.assert_array_equal(f.view(np.uint32), h.astype(np.float32).view(np.uint32))


def test_float_to_half_rounding_bit_exact(sim):
    rng = np.random.default_rng(7)
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    exact = halves.astype(np.float32)
    finite = exact[np.isfinite(exact)]
    nxt = np.nextafter(finite, np.float32(np.inf))
    srt = np.unique(finite.astype(np.float64))
    mids = ((srt[1:] + srt[:-1]) / 2).astype(np.float32)       # exact halfway points: ties to even
    x = np.concatenate([
        rng.integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32),  # every exponent, NaNs
        rng.uniform(-70000, 70000, 100_000).astype(np.float32),
        rng.uniform(-1e-4, 1e-4, 100_000).astype(np.float32),     # subnormal halves
        finite, nxt, np.nextafter(finite, np.float32(-np.inf)), mids,
        np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)),
        np.array([65504, 65519.996, 65520, -65520, np.inf, -np.inf, 2**-25, 2**-24, 3 * 2**-26, 0.0, -0.0],
                 np.float32),
    ])
    y = np.zeros(x.size, np.uint16)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    launch_1d(sim("f32_to_f16"), x.size, x, y, I32(x.size))
    bad = np.flatnonzero(y != want)
    assert bad.size == 0, f"{bad.size} mismatches, first x={x[bad[:5]]!r} got {y[bad[:5]]} want {want[bad[:5]]}"


def test_double_to_half_rounding(sim):
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.standard_normal(200_000) * 10.0 ** rng.integers(-9, 6, 200_000),
                        rng.integers(0, 2**64, 100_000, dtype=np.uint64).view(np.float64)])
    y = np.zeros(x.size, np.float16)
    launch_1d(sim("f64_to_f16"), x.size, x, y, I32(x.size))
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(np.float16)
    np.testing.assert_array_equal(y.view(np.uint16), want.view(np.uint16))


def _half_of_fraction(v: Fraction) -> np.float16:
    """Round an exact rational to float16, ties to even."""
    guess = np.float16(float(v)) if abs(v) < 70000 else np.float16(np.inf if v > 0 else -np.inf)
    cands = [guess, np.nextafter(guess, np.float16(np.inf)), np.nextafter(guess, np.float16(-np.inf))]
    cands = [c for c in cands if np.isfinite(c)] or [guess]
    best = min(cands, key=lambda c: (abs(Fraction(float(c)) - v), int(c.view(np.uint16)) & 1))
    if abs(v) >= Fraction(65520):
        return np.float16(np.inf if v > 0 else -np.inf)
    return best


def test_half_arithmetic_correctly_rounded(sim):
    rng = np.random.default_rng(9)
    n = 3000
    a = rng.standard_normal(n).astype(np.float16)
    b = (rng.standard_normal(n) * 4).astype(np.float16)
    c = (rng.standard_normal(n) * 0.01).astype(np.float16)
    b[b == 0] = 1
    y = np.zeros((n, 5), np.float16)
    launch_1d(sim("half_ops"), n, a, b, c, y, I32(n))
    np.testing.assert_array_equal(y[:, 0], a + b)       # NumPy: float32 result rounded once, which is exact here
    np.testing.assert_array_equal(y[:, 1], a * b)
    np.testing.assert_array_equal(y[:, 2], a - b)
    np.testing.assert_array_equal(y[:, 3], a / b)
    fma = [_half_of_fraction(Fraction(float(p)) * Fraction(float(q)) + Fraction(float(r))) for p, q, r in zip(a, b, c)]
    np.testing.assert_array_equal(y[:, 4], np.array(fma, np.float16))


def test_bfloat16_round_to_nearest_even(sim):
    rng = np.random.default_rng(10)
    x = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([x, np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, np.inf, -0.0], np.float32)])
    y = np.zeros(x.size, np.uint16)
    back = np.zeros(x.size, np.float32)
    launch_1d(sim("f32_to_bf16"), x.size, x, y, back, I32(x.size))
    b = x.view(np.uint32).astype(np.uint64)
    want = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    want[np.isnan(x)] = 0x7FFF
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(back.view(np.uint32), want.astype(np.uint32) << 16)


# ---------------------------------------------------------------- argument checking
def test_scalar_parameter_types(sim):
    out = np.zeros(9)
    fn = sim("scalars")
    fn(1, 1, (out, I32(-3), np.uint32(7), 2**40, np.float32(1.5), 2.25, np.float16(0.5),
              np.complex64(3 + 4j), True))
    np.testing.assert_array_equal(out, [-3, 7, 2**40, 1.5, 2.25, 0.5, 3, 4, 1])
    good = [out, I32(-3), np.uint32(7), np.int64(5), np.float32(1.5), np.float64(2), np.float16(0.5),
            np.complex64(1), np.bool_(False)]
    fn(1, 1, tuple(good))
    for i, bad in [(1, 3), (1, np.int64(3)), (2, np.int32(7)), (2, 7), (4, 1.5), (4, np.float64(1.5)),
                   (5, np.float32(1)), (6, 0.5), (6, np.float32(0.5)), (7, np.complex128(1)), (8, 1)]:
        args = list(good)
        args[i] = bad
        with pytest.raises(TypeError, match=f"argument {i}"):
            fn(1, 1, tuple(args))


def test_array_parameter_types(sim):
    fn = sim("conv_naive<float>")
    x32, w32, y32 = np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 1, 3, 3), np.float32), np.zeros(4, np.float32)
    dims = tuple(map(I32, (1, 1, 4, 4, 1, 3, 3)))
    fn(1, 32, (x32, w32, y32, *dims))
    with pytest.raises(TypeError, match="argument 0 .*float64"):
        fn(1, 32, (x32.astype(np.float64), w32, y32, *dims))
    with pytest.raises(TypeError, match="argument 2"):
        fn(1, 32, (x32, w32, y32.astype(np.float16), *dims))
    with pytest.raises(TypeError, match="argument 3 .*Python float"):
        fn(1, 32, (x32, w32, y32, 1.0, *dims[1:]))
    with pytest.raises(TypeError, match="argument 4 .*Python int.*garbage"):
        fn(1, 32, (x32, w32, y32, dims[0], 1, *dims[2:]))
    with pytest.raises(TypeError, match="takes 10 arguments"):
        fn(1, 32, (x32, w32, y32))
    with pytest.raises(ValueError, match="C-contiguous"):
        fn(1, 32, (np.zeros((1, 1, 4, 8), np.float32)[..., ::2], w32, y32, *dims))
    ro = y32.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fn(1, 32, (x32, w32, ro, *dims))


def test_launch_configuration_errors(sim):
    fn = sim("barrier_loop")
    y = np.zeros(4096, np.int32)
    fn((2, 1, 1), (32, 2), (y, I32(1)))
    for grid, block, smem in [(0, 32, 0), (1, 1025, 0), (1, (32, 32, 2), 0), (1, (1, 1, 65), 0), ((1, 65536), 32, 0),
                              (1, 32, 48 * 1024 + 4), (1, 32, 228 * 1024), (1, 32, -1)]:
        with pytest.raises(ValueError, match="CUDA would refuse"):
            fn(grid, block, (y, I32(1)), shared_mem=smem)
    fn.max_dynamic_shared_size_bytes = 100 * 1024         # as cupy.RawKernel: opt in to more than 48 KiB
    fn(1, 32, (y, I32(1)), shared_mem=100 * 1024)


def test_aliased_arrays_share_memory(sim):
    """The same buffer passed twice (in-place) stays one buffer, as on the GPU."""
    x = np.arange(256, dtype=np.float32)
    sim("reverse_block<float>")(1, 256, (x, x, I32(256)), shared_mem=1024)
    np.testing.assert_array_equal(x, np.arange(256, dtype=np.float32)[::-1])


# ---------------------------------------------------------------- what the simulator catches
def test_thread_exiting_before_a_barrier(sim):
    with pytest.raises(SimDeadlockError, match=r"exit_before_barrier.*block \(0,0,0\).*exited"):
        sim("exit_before_barrier")(1, 64, (np.zeros(64, np.float32),))


def test_divergent_barrier(sim):
    with pytest.raises(SimDeadlockError, match=r"divergent_barrier.*block \(0,0,0\).*divergent __syncthreads"):
        sim("divergent_barrier")(1, 64, (np.zeros(64, np.float32),))


def test_deadlock_between_warp_and_block_barriers(sim):
    with pytest.raises(SimDeadlockError, match=r"deadlock in kernel warp_deadlock, block \(1,0,0\)") as e:
        sim("warp_deadlock")((2, 1), 64, (np.zeros(64, np.int32),))
    msg = str(e.value)
    assert "threads 0-15 (warp 0) wait at __shfl_sync with mask 0xffffffff" in msg
    assert "threads 16-31 wait at __syncthreads" in msg and "sim_checks.cu:220" in msg


def test_mask_without_own_lane(sim):
    with pytest.raises(SimKernelError, match="does not include the calling lane 0"):
        sim("bad_mask")(1, 32, (np.zeros(32, np.int32),))


def test_null_pointer_write_crashes_one_launch_not_pytest(sim):
    with pytest.raises(SimCrashError, match="SIGSEGV") as e:
        sim("write_through")(1, 32, (None, I32(5)))
    assert "write_through" in str(e.value)
    y = np.zeros(8, np.float32)                # the next launch gets a fresh worker
    sim("write_through")(1, 32, (y, I32(5)))
    assert y[5] == 1.0


def test_hang_times_out():
    b = SimBackend(timeout_s=1)
    with pytest.raises(SimTimeoutError, match="spin_on_other_block"):
        b.get_function(SRC, NAMES, "spin_on_other_block")(2, 1, (np.zeros(1, np.int32),))


@pytest.mark.parametrize("kernel,shared", [("read_past_end", 0), ("write_past_end", 0), ("smem_past_end", 128)])
def test_asan_reports_out_of_bounds(asan, kernel, shared):
    n = 32
    args = (np.zeros(n, np.float32),) if kernel == "smem_past_end" else \
        (np.zeros(n, np.float32), np.zeros(n, np.float32), I32(n))
    with pytest.raises(SimCrashError, match="AddressSanitizer: heap-buffer-overflow") as e:
        asan(kernel)(1, n if kernel == "smem_past_end" else 2 * n, args, shared_mem=shared)
    assert "sim_checks.cu" in str(e.value)
    assert f"from kernel {kernel}, block (0,0,0), thread (" in str(e.value)


def test_asan_clean_kernels_pass(asan):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(run_tiled(asan("conv_tiled<8, 3, 3>"), x, w), conv_ref(x, w), rtol=1e-4, atol=1e-4)
    v = np.arange(64, dtype=np.int32)
    out = np.full((64, 9), -2, np.int32)
    asan("warp_ops")(1, 64, (v, out, np.array([0xFFFFFFFF, 0x0F0F0F0F], np.uint32), I32(32)))
    np.testing.assert_array_equal(out, warp_ref(v, [0xFFFFFFFF, 0x0F0F0F0F], 32, 64))


def test_portable_swapcontext_fibers():
    """The fallback used off x86-64 (glibc swapcontext) schedules the same way."""
    names = ("conv_tiled<8, 3, 3>", "conv_tiled<8, 3, 1>", "warp_ops", "warp_deadlock")
    b = SimBackend(cxx_flags=("-DGPUCONV_SIM_UCONTEXT",))
    fn = lambda n: b.get_function(SRC, names, n)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 4, 17, 13)).astype(np.float32)
    w = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    ref = conv_ref(x, w)
    np.testing.assert_allclose(run_tiled(fn("conv_tiled<8, 3, 3>"), x, w), ref, rtol=1e-4, atol=1e-4)
    assert (~np.isclose(run_tiled(fn("conv_tiled<8, 3, 1>"), x, w), ref, rtol=1e-4, atol=1e-4)).mean() > 0.2
    v = np.arange(64, dtype=np.int32)
    out = np.full((64, 9), -2, np.int32)
    fn("warp_ops")(1, 64, (v, out, np.array([0xFFFFFFFF, 0x00FF00FF], np.uint32), I32(16)))
    np.testing.assert_array_equal(out, warp_ref(v, [0xFFFFFFFF, 0x00FF00FF], 16, 64))
    with pytest.raises(SimDeadlockError, match="deadlock in kernel warp_deadlock"):
        fn("warp_deadlock")(2, 64, (np.zeros(64, np.int32),))


# ---------------------------------------------------------------- build
def test_compile_error_carries_compiler_output(tmp_path):
    src = tmp_path / "broken.cu"
    src.write_text("__global__ void broken(float* y) {\n    y[0] = undeclared_name;\n}\n")
    with pytest.raises(SimCompileError, match=r"broken\.cu:2.*undeclared_name"):
        SimBackend().get_function(src, ("broken",), "broken")


def test_unknown_name_expression(sim):
    with pytest.raises(ValueError, match="not one of"):
        SimBackend().get_function(SRC, NAMES, "conv_naive<int>")


def test_extern_shared_rewrite_keeps_lines():
    from gpuconv.sim._build import rewrite_source
    src = ("a\nextern __shared__ __align__(16)\n   unsigned char smem_raw[];\nb\n"
           "    extern __shared__ float tile[][17]; c\nextern __shared__ T s[];\n")
    out = rewrite_source(src, Path("/k/x.cu"))
    lines = out.splitlines()
    assert lines[0] == '#line 1 "/k/x.cu"' and len(lines) == src.count("\n") + 1
    assert "unsigned char* const smem_raw = reinterpret_cast<unsigned char*>(" in lines[2]
    assert lines[4] == "b"
    assert "float (*const tile)[17] = reinterpret_cast<float (*)[17]>(" in lines[5] and lines[5].endswith(" c")
    assert "T* const s = reinterpret_cast<T*>(" in lines[6]


def test_static_shared_and_launch_bounds_rewrite_keeps_lines():
    from gpuconv.sim._build import rewrite_source
    src = ("__global__ void __launch_bounds__((BM / WM) * 32, 2)\nk(int* y) {\n"
           "    __shared__ int s_c[TJ], s_r[TJ];\n    __align__(16) __shared__ unsigned short s[32 * 8];\n"
           "    __shared__ float total;\n    // __shared__ float not_this;\n}\n#define LB __launch_bounds__(64)\n")
    lines = rewrite_source(src, Path("/k/x.cu")).splitlines()
    assert len(lines) == src.count("\n") + 1
    assert lines[2] == "k(int* y) { ::gpuconv_sim::launch_bounds(__FILE__, __LINE__, (BM / WM) * 32, 2);"
    assert ("int (&s_c)[TJ] = *reinterpret_cast<int (*)[TJ]>(::gpuconv_sim::static_smem(&gpuconv_sim_key_s_c, "
            "sizeof(int[TJ]), alignof(int), \"s_c[TJ]\"") in lines[3] and "int (&s_r)[TJ]" in lines[3]
    assert "unsigned short (&s)[32*8]" in lines[4] and "(16 > alignof(unsigned short) ? 16 : " in lines[4]
    assert "float &total = *reinterpret_cast<float *>(" in lines[5]
    assert lines[6].startswith("    //")                 # a declaration in a comment stays in the comment
    assert lines[7:] == ["}", "#define LB __launch_bounds__(64)"]


def test_build_is_cached(sim):
    from gpuconv.sim import _build
    lib1 = _build.build_module(SRC, NAMES)
    mtime = lib1.stat().st_mtime_ns
    assert _build.build_module(SRC, NAMES) == lib1 and lib1.stat().st_mtime_ns == mtime
