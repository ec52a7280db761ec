"""Shared by the kernel tests: the backends to run on, and the comparison."""
from __future__ import annotations

import numpy as np
import pytest


def sim_backend_or_none():
    try:
        from gpuconv.sim import SimBackend, sim_available
    except ImportError:
        return None
    return SimBackend() if sim_available() else None


def gpu_available() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: all mean "skip"
        return False


def backend_params():
    """pytest params 'sim' and 'gpu', marked and skipped when unavailable."""
    def sim_ok():
        try:
            from gpuconv.sim import sim_available
            return sim_available()
        except ImportError:
            return False
    return [
        pytest.param("sim", marks=[pytest.mark.sim,
                                   pytest.mark.skipif(not sim_ok(), reason="simulator not available")]),
        pytest.param("gpu", marks=[pytest.mark.gpu,
                                   pytest.mark.skipif(not gpu_available(), reason="no CUDA device / CuPy")]),
    ]


def make_backend(kind: str):
    if kind == "sim":
        from gpuconv.sim import SimBackend
        return SimBackend()
    from gpuconv.cuda.backend import CupyBackend
    return CupyBackend()


def to_host(a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    return a.get()


def assert_close(out, ref, tol: float, what: str = ""):
    """max |out - ref| <= tol * max |ref| elementwise; NaN (an unwritten, poisoned
    element) always fails.  The message names the first mismatching index."""
    out = to_host(out)
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != expected {ref.shape}"
    if ref.size == 0:
        return
    wide = np.complex128 if (out.dtype.kind == "c" or ref.dtype.kind == "c") else np.float64
    o = out.astype(wide)
    r = ref.astype(wide)
    scale = max(float(np.max(np.abs(r))), 1e-30)
    err = np.abs(o - r)
    bad = ~(err <= tol * scale)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements differ; first at index {idx}: got "
            f"{out[idx]!r}, expected {ref[idx]!r} (|err| {err[idx]:.3g} > {tol:g} * max|ref| {scale:.3g}); "
            f"max err / max|ref| = {float(np.nanmax(np.where(np.isnan(err), np.inf, err))) / scale:.3g}")


TOL = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12,
       np.dtype(np.complex64): 1e-5, np.dtype(np.complex128): 1e-12}
