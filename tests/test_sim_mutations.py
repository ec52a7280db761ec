"""Mutation suite: each defect class the simulator must catch, introduced by a text
edit into a copy of a real kernel from kernels_cu/ (the edit applies to the current
source, so it follows kernel changes; an anchor that no longer occurs exactly once
fails the test, telling whoever changed the kernel to move the mutation along).
Every mutant must fail with its own diagnosis -- not merely with wrong numbers --
and the unmutated kernel must pass under the same checks."""
from __future__ import annotations

import numpy as np
import pytest

from gpuconv import _paths, activations, reference
from gpuconv.cuda import conv
from gpuconv.sim import SimBackend, SimKernelError, sim_available
from gpuconv.spec import make_spec

pytestmark = [pytest.mark.sim, pytest.mark.skipif(not sim_available(), reason="simulator not available")]

IGEMM = "conv2d_implicit_gemm.cu"
TILED = "conv2d_tiled_smem.cu"
# (module, anchor, replacement)
WAIT_ONE_GROUP_TOO_FEW = (IGEMM, "tc::cp_async_wait<STAGES - 2>();", "tc::cp_async_wait<STAGES - 1>();")
SMEM_BASE_OFF_16 = (IGEMM, "T* sA = reinterpret_cast<T*>(smem_raw);", "T* sA = reinterpret_cast<T*>(smem_raw + 2);")
MAIN_LOOP_BARRIER_REMOVED = (IGEMM, "        __syncthreads();                             // ... everyone's",
                             "        //__syncthreads();                           // ... everyone's")
GROUP_NOT_COMMITTED = (IGEMM, "        if (nk < KT) load_stage(nk % STAGES, nk);\n        tc::cp_async_commit();",
                       "        if (nk < KT) load_stage(nk % STAGES, nk);\n        //tc::cp_async_commit();")
STATIC_SHARED_UNWRITTEN = (IGEMM, "        tile[j][tx] = v;", "        if (j != 0) tile[j][tx] = v;")
TILED_STAGE_BARRIER_REMOVED = (TILED, "        __syncthreads();                             // the previous stage",
                               "        //__syncthreads();                           // the previous stage")

# (input, weight, stride, padding): 12 k-tiles through the 3-stage pipeline (C=40, 3x3);
# 37 channels = 3 stages of the tiled kernel's CT=16 channel loop
IGEMM_CASE = ((1, 40, 6, 5), (24, 40, 3, 3), 1, 1, np.float16, "implicit_gemm")
TILED_CASE = ((1, 37, 6, 9), (10, 37, 3, 3), 1, 1, np.float32, "tiled_smem_small")


def _mutant(tmp_path, mutation):
    module, anchor, replacement = mutation
    src = (_paths.kernels_dir() / module).read_text()
    n = src.count(anchor)
    assert n == 1, (f"mutation anchor {anchor!r} occurs {n} times in kernels_cu/{module}: the kernel changed, "
                    f"move the mutation along with it")
    (tmp_path / module).write_text(src.replace(anchor, replacement))
    return tmp_path


def _run(backend, case, check=True):
    xs, ws, stride, padding, dt, variant = case
    dt = np.dtype(dt)
    spec, _ = make_spec(xs, ws, (ws[0],), stride, padding, 1, 1, dt, 2)
    rng = np.random.default_rng(31)
    x = rng.uniform(-1, 1, xs).astype(dt)
    w = rng.uniform(-1, 1, ws).astype(dt)
    b = rng.uniform(-1, 1, ws[0]).astype(dt)
    out = np.full(spec.output_shape, np.nan, dt)
    conv.forward(x, w, b, spec, algorithm=variant, backend=backend, out=out)
    ref = activations.apply(reference.conv(x, w, b, spec, accumulate="float64"), None)
    err = np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max()
    if check:
        assert err <= (1e-2 if dt == np.float16 else 1e-5), f"{variant}: max rel error {err}"
    return err


@pytest.mark.parametrize("case", [IGEMM_CASE, TILED_CASE], ids=["implicit_gemm", "tiled_smem"])
@pytest.mark.parametrize("racecheck", [False, True], ids=["plain", "racecheck"])
def test_unmutated_kernels_pass_the_same_checks(case, racecheck):
    _run(SimBackend(racecheck=racecheck, alignment=racecheck), case)


def test_wait_for_one_group_too_few(tmp_path):
    be = SimBackend(source_dir=_mutant(tmp_path, WAIT_ONE_GROUP_TOO_FEW))
    with pytest.raises(SimKernelError, match=r"kernel conv2d_implicit_gemm<.*ldmatrix.x4 at .*conv2d_implicit_gemm.cu:"
                                             r"\d+ reads dynamic shared memory byte \d+ .* while the cp.async that "
                                             r"thread .* issued to it has not completed"):
        _run(be, IGEMM_CASE)


def test_uncommitted_cp_async_group(tmp_path):
    be = SimBackend(source_dir=_mutant(tmp_path, GROUP_NOT_COMMITTED))
    with pytest.raises(SimKernelError, match=r"ldmatrix.x4 .* while the cp.async that thread .* issued to it has not "
                                             r"completed \(its commit group was not waited for"):
        _run(be, IGEMM_CASE)


def test_shared_memory_base_off_16_bytes(tmp_path):
    be = SimBackend(source_dir=_mutant(tmp_path, SMEM_BASE_OFF_16))
    with pytest.raises(SimKernelError, match=r"kernel conv2d_implicit_gemm<.*block \(0,0,0\), thread \(0,0,0\): "
                                             r"cp.async.cg.shared.global at .*conv2d_implicit_gemm.cu:\d+: destination "
                                             r"is not 16-byte aligned \(dst 0x[0-9a-f]+: dynamic shared memory byte 2 "):
        _run(be, IGEMM_CASE)


def test_main_loop_barrier_removed(tmp_path):
    be = SimBackend(source_dir=_mutant(tmp_path, MAIN_LOOP_BARRIER_REMOVED), racecheck=True, alignment=True)
    with pytest.raises(SimKernelError, match=r"shared-memory race \(\w+-after-\w+\) in kernel conv2d_implicit_gemm<.*"
                                             r"dynamic shared memory .*conv2d_implicit_gemm.cu:\d+.*"
                                             r"conv2d_implicit_gemm.cu:\d+|has not completed"):
        _run(be, IGEMM_CASE)


def test_static_shared_read_before_any_write(tmp_path):
    d = _mutant(tmp_path, STATIC_SHARED_UNWRITTEN)
    # plain build: the unwritten row is poison, and it reaches the output
    assert not _run(SimBackend(source_dir=d), IGEMM_CASE, check=False) <= 1e-2
    with pytest.raises(SimKernelError, match=r"kernel igemm_stage_input<__half>, block .* reads byte \d+ of __shared__ "
                                             r"tile\[32\]\[33\] .* which no thread of this block wrote before"):
        _run(SimBackend(source_dir=d, racecheck=True, alignment=True), IGEMM_CASE)


def test_stage_barrier_removed_from_tiled_kernel(tmp_path):
    be = SimBackend(source_dir=_mutant(tmp_path, TILED_STAGE_BARRIER_REMOVED), racecheck=True, alignment=True)
    with pytest.raises(SimKernelError, match=r"shared-memory race \(\w+-after-\w+\) in kernel conv2d_tiled_smem<.*"
                                             r"dynamic shared memory byte \d+ .*conv2d_tiled_smem.cu:\d+.*(read|wrote) "
                                             r"it at .*conv2d_tiled_smem.cu:\d+"):
        _run(be, TILED_CASE)
