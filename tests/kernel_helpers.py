"""Shared by the kernel tests, which call the device entry points one kernel family at
a time: the backends to run on.  The comparison and the tolerance table are
tests/util.py's (one of each for the whole suite); conftest.py skips the `sim` and
`gpu` params where the machine lacks the simulator or a GPU."""
from __future__ import annotations

import numpy as np
import pytest

from util import TOLERANCE as TOL
from util import assert_close as _assert_close


def gpu_available() -> bool:
    """CuPy importable and a CUDA device present (the same probe as conftest.HAS_GPU)."""
    try:
        import cupy
    except ImportError:            # CuPy is an optional extra
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except cupy.cuda.runtime.CUDARuntimeError:   # no driver or no device
        return False


def backend_params():
    """pytest params 'sim' and 'gpu', marked (conftest skips what is unavailable)."""
    return [pytest.param("sim", marks=pytest.mark.sim), pytest.param("gpu", marks=pytest.mark.gpu)]


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
    """util.assert_close on a device result: max |out - ref| <= tol * max |ref|
    elementwise; NaN (an unwritten, poisoned element) always fails; the message names
    the first mismatching index."""
    _assert_close(to_host(out), ref, tol=tol, what=what)


__all__ = ["TOL", "assert_close", "backend_params", "gpu_available", "make_backend", "to_host"]
