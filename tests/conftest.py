"""Shared fixtures: fresh random data with its seed reported on failure, device
detection for the `gpu` and `sim` markers, and closeness checks per dtype."""
from __future__ import annotations

import os

import numpy as np
import pytest


def _has_gpu() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver or no device: no GPU tests
        return False


def _has_sim() -> bool:
    try:
        from gpuconv.sim import sim_available
    except ImportError:
        return False
    return bool(sim_available())


HAS_GPU = _has_gpu()
HAS_SIM = _has_sim()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    skip_sim = pytest.mark.skip(reason="needs the kernel simulator (g++ on x86-64/aarch64)")
    for item in items:
        if "gpu" in item.keywords and not HAS_GPU:
            item.add_marker(skip_gpu)
        if "sim" in item.keywords and not HAS_SIM:
            item.add_marker(skip_sim)


@pytest.fixture
def rng(request):
    """A generator seeded afresh for every test (GPUCONV_TEST_SEED pins it); the
    seed is printed with any failure so the case can be replayed."""
    seed = int(os.environ.get("GPUCONV_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
    request.node.gpuconv_seed = seed
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    seed = getattr(item, "gpuconv_seed", None)
    if rep.failed and seed is not None:
        rep.sections.append(("gpuconv", f"random seed: GPUCONV_TEST_SEED={seed}"))
