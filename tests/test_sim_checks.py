"""What the simulator checks beyond computing the right numbers: cp.async as the
hardware queues it, alignment and state spaces of the tensor-core wrappers,
thread schedules, the shared-memory race detector, resource limits and
tensor-core numerics.  Kernels: tests/sim_kernels/sim_hazards.cu."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpuconv.sim import SimBackend, SimKernelError, sim_available

pytestmark = [pytest.mark.sim, pytest.mark.skipif(not sim_available(), reason="simulator not available")]

SRC = Path(__file__).resolve().parent / "sim_kernels" / "sim_hazards.cu"
NAMES = (
    "cp_pipeline<0, 1, 1>", "cp_pipeline<1, 1, 1>", "cp_pipeline<0, 0, 1>", "cp_pipeline<0, 1, 0>",
    "cp_async_addresses<0>", "cp_async_addresses<1>", "cp_async_addresses<2>", "cp_async_addresses<3>",
    "cp_async_addresses<4>", "cp_async_addresses<5>", "ldmatrix_rows<0>", "ldmatrix_rows<2>",
    *(f"shared_races<{m}>" for m in range(8)), "static_smem_per_block<0>", "static_smem_per_block<1>",
    "bounded64", "big_static", "vector_load<0>", "vector_load<1>", "run_order",
    "mma_tf32<false>", "mma_tf32<true>", "mma_f16",
)
SCHEDULES = [("default", 0), ("reversed", 0), ("warp-greedy", 0), ("random", 1), ("random", 2)]


def _backend(**kw):
    b = SimBackend(**kw)
    return lambda name: b.get_function(SRC, NAMES, name)


@pytest.fixture(scope="module")
def sim():
    return _backend()


@pytest.fixture(scope="module")
def race():                                          # one instrumented build serves both checks
    return _backend(racecheck=True, alignment=True)


# ---------------------------------------------------------------- cp.async
def _pipeline(fn, tiles=3):
    x = np.random.default_rng(5).standard_normal(tiles * 128).astype(np.float32)
    y = np.full_like(x, np.nan)
    fn((1,), (32,), (x, y, np.int32(tiles)))
    # thread t reads thread (t+1)%32's 4 floats of each tile
    ref = x.reshape(tiles, 32, 4)[:, (np.arange(32) + 1) % 32].reshape(-1)
    return y, ref


@pytest.mark.parametrize("schedule,seed", SCHEDULES)
def test_cp_async_pipeline_correct_under_every_schedule(schedule, seed):
    for k in (_backend(schedule=schedule, seed=seed),
              _backend(schedule=schedule, seed=seed, racecheck=True, alignment=True)):
        y, ref = _pipeline(k("cp_pipeline<0, 1, 1>"))
        np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("name,why", [
    ("cp_pipeline<1, 1, 1>", "waits for one group too few"),
    ("cp_pipeline<0, 0, 1>", "never commits its copies"),
    ("cp_pipeline<0, 1, 0>", "reads another thread's copy without a barrier"),
])
def test_cp_async_read_in_flight_is_poison_and_reported(sim, race, name, why):
    y, ref = _pipeline(sim(name))                    # the plain build: the destination reads as poison
    assert np.isnan(y).any(), why
    # waited too early or never: the read finds the copy in flight; no barrier: the
    # reader comes first and the copy's issue races with it (or it finds it in flight)
    with pytest.raises(SimKernelError, match=r"cp.async that thread \(\d+,0,0\) .* has not completed" if "0>" not in name
                       else r"has not completed|shared-memory race \(write-after-read\).*__shared__ buf"):
        _pipeline(race(name))


@pytest.mark.parametrize("mode,msg", [
    (1, r"destination is not 16-byte aligned"),
    (2, r"source is not 16-byte aligned"),
    (3, r"destination is not \(16 bytes of\) shared memory .*global memory"),
    (4, r"not global memory .*__shared__ s\[2\]\[128\]"),
])
def test_cp_async_alignment_and_state_space(sim, mode, msg):
    x = np.arange(256, dtype=np.float32)
    y = np.zeros(128, np.float32)
    with pytest.raises(SimKernelError, match=r"kernel cp_async_addresses<%d>, block \(0,0,0\), thread \(\d+,0,0\).*%s"
                       % (mode, msg)):
        sim(f"cp_async_addresses<{mode}>")((1,), (32,), (x, y))


def test_cp_async_copies_and_zero_fills(sim):
    x = np.arange(1, 129, dtype=np.float32)
    y = np.zeros(128, np.float32)
    sim("cp_async_addresses<0>")((1,), (32,), (x, y))
    np.testing.assert_array_equal(y, x)
    sim("cp_async_addresses<5>")((1,), (32,), (x, y))
    np.testing.assert_array_equal(y, 0)


def test_ldmatrix_row_alignment(sim):
    x = np.arange(256, dtype=np.uint16)
    y = np.zeros(128, np.uint32)
    sim("ldmatrix_rows<0>")((1,), (32,), (x, y))
    assert (y[0] & 0xffff) == 0 and (y[0] >> 16) == 1        # lane 0: row 0, columns 0-1 of matrix 0
    with pytest.raises(SimKernelError, match=r"ldmatrix.x4 at .*sim_hazards.cu:\d+: this lane's row address 0x[0-9a-f]+ "
                                             r"is not 16-byte aligned"):
        sim("ldmatrix_rows<2>")((1,), (32,), (x, y))


# ---------------------------------------------------------------- races
@pytest.mark.parametrize("mode,kind", [
    (1, "write-after-read|read-after-write"),          # warps 0/1, no barrier
    (2, "write-after-read|read-after-write"),          # lanes of one warp, no __syncwarp
    (4, "write-after-write"),
    (5, "write-after-read|read-after-write"),
])
@pytest.mark.parametrize("schedule,seed", SCHEDULES[:4])
def test_race_detector_reports(mode, kind, schedule, seed):
    fn = _backend(racecheck=True, alignment=True, schedule=schedule, seed=seed)(f"shared_races<{mode}>")
    y = np.zeros(64, np.float32)
    with pytest.raises(SimKernelError, match=rf"shared-memory race \(({kind})\) in kernel shared_races<{mode}>, "
                                             rf"block \(0,0,0\): thread .* byte \d+ of __shared__ s\[64\] .*"
                                             rf"sim_hazards.cu:\d+.*sim_hazards.cu:\d+"):
        fn((1,), (64,), (y,))


@pytest.mark.parametrize("mode", [0, 3, 6])
@pytest.mark.parametrize("schedule,seed", SCHEDULES)
def test_race_detector_accepts_ordered_accesses(mode, schedule, seed):
    fn = _backend(racecheck=True, alignment=True, schedule=schedule, seed=seed)(f"shared_races<{mode}>")
    y = np.full(64, np.nan, np.float32)
    fn((2,), (64,), (y,))
    t = np.arange(64)
    want = {0: (t + 32) % 64, 3: t ^ 1, 6: np.full(64, 64)}[mode]
    np.testing.assert_array_equal(y, want.astype(np.float32))


def test_uninitialised_static_shared_read(sim, race):
    y = np.zeros(64, np.float32)
    sim("shared_races<7>")((1,), (64,), (y,))
    assert np.isnan(y).all()                           # static __shared__ starts as poison
    with pytest.raises(SimKernelError, match=r"reads byte 0 of __shared__ s\[64\] .* which no thread of this block "
                                             r"wrote before"):
        race("shared_races<7>")((1,), (64,), (y,))


def test_static_shared_does_not_survive_a_block(sim, race):
    y = np.zeros(3 * 32, np.float32)
    sim("static_smem_per_block<0>")((3,), (32,), (y,))
    np.testing.assert_array_equal(y, np.arange(96, dtype=np.float32))
    sim("static_smem_per_block<1>")((3,), (32,), (y,))
    assert np.isnan(y[[33, 65]]).all() and not np.isnan(np.delete(y, [33, 65])).any()
    with pytest.raises(SimKernelError, match=r"block \(1,0,0\), thread \(1,0,0\) reads byte 0 of __shared__ s\[32\]"):
        race("static_smem_per_block<1>")((3,), (32,), (y,))


# ---------------------------------------------------------------- resources
def test_launch_bounds(sim):
    y = np.zeros(128, np.float32)
    sim("bounded64")((1,), (64,), (y,))
    with pytest.raises(SimKernelError, match=r"128 threads per block .* __launch_bounds__\(64\)"):
        sim("bounded64")((1,), (128,), (y,))


def test_static_plus_dynamic_shared_memory_limit():
    y = np.zeros(32, np.float32)
    fn = _backend()("big_static")                      # 40 KiB static
    fn((1,), (32,), (y,), shared_mem=8 * 1024)         # 48 KiB in all: allowed
    np.testing.assert_array_equal(y, 3.0)
    with pytest.raises(SimKernelError, match=r"40960 bytes of static .* \+ 12288 bytes of dynamic .*"
                                             r"RawKernel.max_dynamic_shared_size_bytes >= 12288"):
        fn((1,), (32,), (y,), shared_mem=12 * 1024)
    fn.max_dynamic_shared_size_bytes = 12 * 1024       # the opt-in CuPy's RawKernel offers
    fn((1,), (32,), (y,), shared_mem=12 * 1024)
    fn.max_dynamic_shared_size_bytes = 200 * 1024      # 40 KiB + 200 KiB > 227 KiB
    with pytest.raises(SimKernelError, match=r"exceed the 232448 bytes"):
        fn((1,), (32,), (y,), shared_mem=12 * 1024)


def test_alignment_sanitizer_build(race):
    x = np.arange(160, dtype=np.float32)
    y = np.zeros(32, np.float32)
    k = race
    k("vector_load<0>")((1,), (32,), (x, y))
    np.testing.assert_array_equal(y, x[:128].reshape(32, 4).sum(1))
    with pytest.raises(SimKernelError, match=r"(load of|reference binding to) misaligned address 0x[0-9a-f]+ \(global memory.*\) for type "
                                             r"'const (struct )?float4', which requires 16-byte alignment, at "
                                             r".*sim_hazards.cu:\d+"):
        k("vector_load<1>")((1,), (32,), (x, y))


# ---------------------------------------------------------------- schedules
def _order(schedule, seed=0):
    o = np.full(3 * 64, -1, np.int32)
    _backend(schedule=schedule, seed=seed)("run_order")((1,), (64,), (o,))
    np.testing.assert_array_equal(np.sort(o), np.arange(192))          # every ticket handed out once
    np.testing.assert_array_equal(np.sort(o[128:]), np.arange(128, 192))   # the barrier separates phase 3
    return o


def test_schedules_interleave_differently():
    t = np.arange(64)
    default, reversed_ = _order("default"), _order("reversed")
    # reversed: thread 0 arrives last at the first barrier, runs on, then ascending order; lane 31
    # completes warp 0's shuffle and takes ticket 32 before warp 1 starts
    np.testing.assert_array_equal(reversed_[:64], np.r_[t[:32], t[32:] + 1])
    np.testing.assert_array_equal(default[:64], np.r_[64 - t[:32], 31 - t[:32]])
    np.testing.assert_array_equal(default, _order("default"))

    def ahead(o):                                      # phase-2 tickets taken before the other warp's phase 1
        first = 1 if o[63] == 0 else 0
        other = o[(1 - first) * 32:(2 - first) * 32]
        return int((o[64 + first * 32:96 + first * 32] < other.min()).sum())
    assert ahead(default) == 1                          # only the lane that completes the shuffle runs on
    assert ahead(_order("warp-greedy")) == 32          # the whole warp passes its shuffle first
    r1, r2 = _order("random", 1), _order("random", 2)
    assert not np.array_equal(r1, r2) and not np.array_equal(r1, default)
    np.testing.assert_array_equal(r1, _order("random", 1))           # a seed replays its schedule


def test_schedule_argument_checked():
    with pytest.raises(ValueError, match="schedule must be one of"):
        SimBackend(schedule="fastest")
    with pytest.raises(ValueError, match="cannot be combined"):
        SimBackend(asan=True, racecheck=True)


# ---------------------------------------------------------------- tensor-core numerics
def _tf32_rna(v: np.ndarray) -> np.ndarray:
    """cvt.rna.tf32.f32: round to 10 mantissa bits, ties away from zero."""
    u = v.astype(np.float32).view(np.uint32)
    return ((u + np.uint32(0x1000)) & np.uint32(0xffffe000)).view(np.float32)


def _tf32_trunc(v: np.ndarray) -> np.ndarray:
    return (v.astype(np.float32).view(np.uint32) & np.uint32(0xffffe000)).view(np.float32)


def _mma_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """D = A @ B with exact products added in k order in float32."""
    d = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for k in range(a.shape[1]):
        d = (d + (a[:, k:k + 1].astype(np.float64) * b[k:k + 1, :]).astype(np.float32)).astype(np.float32)
    return d


def test_tf32_mma_rounds_like_the_tensor_core(sim):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal((8, 8)).astype(np.float32)
    a[0, :4] = np.float32(1 + 2**-11), np.float32(-(1 + 2**-11)), np.float32(1 + 3 * 2**-12), np.float32(1.5)
    d = np.full((16, 8), np.nan, np.float32)
    sim("mma_tf32<true>")((1,), (32,), (a, b, d))
    np.testing.assert_array_equal(d, _mma_ref(_tf32_rna(a), _tf32_rna(b)))
    assert _tf32_rna(a)[0, 0] == np.float32(1 + 2**-10) and _tf32_rna(a)[0, 1] == -np.float32(1 + 2**-10)
    sim("mma_tf32<false>")((1,), (32,), (a, b, d))     # raw fp32 bits: the tensor core ignores the low 13
    np.testing.assert_array_equal(d, _mma_ref(_tf32_trunc(a), _tf32_trunc(b)))
    exact = a.astype(np.float64) @ b
    assert np.abs(d - exact).max() > 1e-5              # TF32 is visibly less accurate than FP32


def test_f16_mma_products_exact_fp32_accumulation(sim):
    rng = np.random.default_rng(8)
    a = rng.standard_normal((16, 16)).astype(np.float16)
    b = rng.standard_normal((16, 8)).astype(np.float16)
    a[0, 0], b[0, 0] = np.float16(2**-14), np.float16(2**-10)      # product 2^-24 * 2^-0: below fp16's range
    a[1, :] = np.float16(2049 / 2048)                  # products need 22 bits: exact in fp32 only
    d = np.full((16, 8), np.nan, np.float32)
    sim("mma_f16")((1,), (32,), (a.view(np.uint16), b.view(np.uint16), d))
    np.testing.assert_array_equal(d, _mma_ref(a.astype(np.float32), b.astype(np.float32)))


# ---------------------------------------------------------------- every kernel family, checked
def _family_runs():
    """name -> run(backend) -> output: one irregular case per kernel family of kernels_cu
    (the conv variants of the registry, transposed conv, weight gradient, fused
    separable conv, the signal core), through the launchers the API uses."""
    from gpuconv.cuda import conv, separable as csep, signal as csignal, transpose as ctr, variants, wgrad as cwg
    from gpuconv.spec import make_spec, transpose_spec

    def data(shape, dt, seed):
        return np.random.default_rng(seed).uniform(-1, 1, shape).astype(dt)

    def conv_run(variant, xs, ws, groups, dt):
        def run(be):
            spec, _ = make_spec(xs, ws, (ws[0],), 1, 1, 1, groups, np.dtype(dt), 2)
            out = np.full(spec.output_shape, np.nan, dt)
            conv.forward(data(xs, dt, 1), data(ws, dt, 2), data(ws[0], dt, 3), spec, algorithm=variant, backend=be,
                         out=out)
            return out
        return run

    runs = {}
    for v in variants.conv_variant_names():
        if v == "depthwise":
            runs[v] = conv_run(v, (2, 6, 9, 11), (6, 1, 3, 3), 6, np.float32)
        elif v == "implicit_gemm":
            runs[v] = conv_run(v, (1, 40, 6, 5), (24, 40, 3, 3), 1, np.float16)
        else:
            runs[v] = conv_run(v, (1, 19, 9, 11), (10, 19, 3, 3), 1, np.float32)

    def transpose(be):
        spec, _ = transpose_spec((1, 5, 6, 7), (5, 3, 3, 3), (3,), 2, 1, 1, 1, 1, np.dtype(np.float32), 2)
        out = np.full(spec.input_shape, np.nan, np.float32)
        ctr.forward(data((1, 5, 6, 7), np.float32, 4), data((5, 3, 3, 3), np.float32, 5),
                    data(3, np.float32, 6), spec, backend=be, out=out)
        return out

    def wgrad(be):
        spec, _ = make_spec((2, 4, 9, 8), (6, 2, 3, 3), None, 1, 1, 1, 2, np.dtype(np.float32), 2)
        out = np.full(spec.weight_shape, np.nan, np.float32)
        cwg.forward(data(spec.input_shape, np.float32, 7), data(spec.output_shape, np.float32, 8), spec,
                    deterministic=True, backend=be, out=out)
        return out

    def separable(be):
        spec, _ = make_spec((1, 8, 9, 10), (8, 1, 3, 3), None, 1, 1, 1, 8, np.dtype(np.float32), 2)
        out = np.full((1, 5, 9, 10), np.nan, np.float32)
        csep.forward(data((1, 8, 9, 10), np.float32, 9), data((8, 1, 3, 3), np.float32, 10),
                     data((5, 8, 1, 1), np.float32, 11), None, spec, algorithm="fused", backend=be, out=out)
        return out

    def signal(be):
        return csignal.correlate_core(data((37, 40), np.float32, 12), data((5, 4), np.float32, 13), (40, 41),
                                      (-2, -2), "symm", np.float32(0), backend=be)

    runs.update(transpose=transpose, wgrad=wgrad, separable=separable, signal=signal)
    return runs


FAMILIES = sorted(_family_runs()) if sim_available() else []


_PLAIN: dict[str, np.ndarray] = {}


@pytest.mark.parametrize("schedule,seed", [("warp-greedy", 0), ("random", 3)])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_race_free_and_schedule_independent(family, schedule, seed):
    """Every kernel family under a second and third schedule with the race detector and
    the alignment sanitizer on: no report, and the bits of the default schedule's output."""
    if family not in _PLAIN:
        _PLAIN[family] = _family_runs()[family](SimBackend())
    ref = _PLAIN[family]
    assert not np.isnan(ref).any(), f"{family}: the default schedule left unwritten (NaN) outputs"
    out = _family_runs()[family](SimBackend(schedule=schedule, seed=seed, racecheck=True, alignment=True))
    np.testing.assert_array_equal(out.view(np.uint8), ref.view(np.uint8), err_msg=f"{family} under {schedule}")


def test_register_file_limit():
    """threads x registers (ptxas) against the 64 K register file: 16 warps x 255 registers
    (allocated 8192 per warp) need 131072.  The report is injected here; a real one comes
    from one nvcc/NVRTC compile per module (SimBackend(registers="sm_90"), slow)."""
    be = SimBackend(registers="sm_90")
    be._reg_reports[str(SRC)] = {"run_order": 255}
    fn = be.get_function(SRC, NAMES, "run_order")
    o = np.zeros(3 * 256, np.int32)
    fn((1,), (256,), (o,))                             # 8 warps x 8192 = 65536: fits exactly
    with pytest.raises(ValueError, match=r"512 threads x 255 registers \(16 warps x 8192 allocated\) = 131072 "
                                         r"registers, above the 65536"):
        fn((1,), (512,), (np.zeros(3 * 512, np.int32),))
    with pytest.raises(ValueError, match="registers must be an architecture"):
        SimBackend(registers="hopper")
