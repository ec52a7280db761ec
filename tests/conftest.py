"""Shared fixtures: replayable random data, the `path` fixture that runs one test
body on every path (NumPy, the kernel simulator, a GPU), and the skips for
what a machine lacks.

Seeds: every test's generator is seeded from crc32 of its test id, so a failure
replays exactly (GPUCONV_TEST_SEED=<n> overrides it for every test, to explore);
the seed is printed with any failure.

Paths: a test that takes `path` runs three times,
  numpy  the CPU path (NumPy arrays);
  sim    the GPU path in the simulator: NumPy arrays under
         gpuconv.use_backend(gpuconv.sim.SimBackend()) (marked `sim`);
  gpu    CuPy arrays on a CUDA device (marked `gpu`).
The body converts its inputs with path.asarray and its results with path.get;
on sim and gpu every operation must resolve to the device path (a test whose
arrays silently took the CPU path fails), and device outputs are allocated
NaN-filled, so an element a kernel never writes fails the comparison.
"""
from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

import gpuconv
from gpuconv import engine
from gpuconv.sim import sim_available


def _has_gpu() -> bool:
    try:
        import cupy
    except ImportError:            # CuPy is an optional extra: no CuPy, no GPU tests
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except cupy.cuda.runtime.CUDARuntimeError:   # no driver or no device
        return False


HAS_GPU = _has_gpu()
HAS_SIM = sim_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    skip_sim = pytest.mark.skip(reason="needs the kernel simulator (g++ on x86-64/aarch64 Linux)")
    for item in items:
        if "gpu" in item.keywords and not HAS_GPU:
            item.add_marker(skip_gpu)
        if "sim" in item.keywords and not HAS_SIM:
            item.add_marker(skip_sim)


def test_seed(nodeid: str) -> int:
    """The seed of a test: GPUCONV_TEST_SEED if set, else crc32 of its id."""
    env = os.environ.get("GPUCONV_TEST_SEED")
    return int(env) if env else zlib.crc32(nodeid.encode())


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id (replayable; GPUCONV_TEST_SEED overrides)."""
    seed = test_seed(request.node.nodeid)
    request.node.gpuconv_seed = seed
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    seed = getattr(item, "gpuconv_seed", None)
    if rep.failed and seed is not None:
        rep.sections.append(("gpuconv", f"random seed: {seed} (replay: GPUCONV_TEST_SEED={seed})"))


class ArrayPath:
    """One path of the `path` fixture: where arrays live and how they come back."""

    def __init__(self, name: str, xp, backend=None):
        self.name, self.xp, self.backend = name, xp, backend
        self.resolved: list[str] = []

    @property
    def is_device(self) -> bool:
        return self.name != "numpy"

    def asarray(self, a):
        """A NumPy array (or None) as this path's array."""
        return None if a is None else self.xp.asarray(a)

    def get(self, a) -> np.ndarray:
        """A result of this path as a NumPy array."""
        return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)

    def __repr__(self) -> str:
        return f"<path {self.name}>"


PATH_PARAMS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("sim", id="sim", marks=pytest.mark.sim),
    pytest.param("gpu", id="gpu", marks=pytest.mark.gpu),
]


@pytest.fixture(params=PATH_PARAMS)
def path(request, monkeypatch):
    """Runs the test on NumPy, in the simulator and on a GPU (see the module docstring)."""
    name = request.param
    if name == "numpy":
        yield ArrayPath("numpy", np)
        return
    from gpuconv.cuda import conv as cuda_conv
    from gpuconv.cuda import signal as cuda_signal
    monkeypatch.setattr(cuda_conv, "POISON_OUTPUT", True)
    monkeypatch.setattr(cuda_signal, "POISON_OUTPUT", True)
    if name == "sim":
        from gpuconv.sim import SimBackend
        p = ArrayPath("sim", np, SimBackend())
    else:
        import cupy
        p = ArrayPath("gpu", cupy)
    resolve = engine.resolve

    def recording_resolve(named):
        result = resolve(named)
        p.resolved.append(result.name)
        return result
    monkeypatch.setattr(engine, "resolve", recording_resolve)
    if p.backend is not None:
        with gpuconv.use_backend(p.backend):
            yield p
    else:
        yield p
    wrong = [r for r in p.resolved if r != "device"]
    assert not wrong, (f"{len(wrong)} of {len(p.resolved)} calls ran on the {wrong[0]} path under "
                       f"the {name} parameter: pass the inputs through path.asarray")
