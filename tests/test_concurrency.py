"""Many threads calling gpuconv at once get exactly what serial calls get.

The CPU path shares one thread pool (gpuconv._cpu.run_jobs), per-thread
scratch buffers (gpuconv._cpu.scratch), the compiled kernels loaded once
(gpuconv._native) and a geometry cache; the simulator shares one worker
process per compiler.  8 threads, started together on a barrier, each run
every operation below in its own order, twice; every result must be
bit-identical to the same call made serially before."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import gpuconv

N_THREADS = 8


def _cpu_cases(rng):
    """(name, fn, args, kwargs): one case per kind of CPU-path code, fresh data."""
    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x = f32(2, 16, 23, 19)
    w3 = f32(24, 16, 3, 3)
    xd = f32(3, 32, 17, 21)
    wd = f32(32, 1, 3, 3)
    gd = f32(3, 32, 9, 11)                   # depthwise, stride 2, padding 1: output 9x11
    img = rng.standard_normal((301, 157))    # signal strips run threaded above 128 rows
    k = rng.standard_normal((5, 4))
    g3 = f32(2, 24, 23, 19)
    return [
        ("conv2d winograd", gpuconv.conv2d, (x, w3), dict(padding=1)),
        ("conv2d im2col s2 d2", gpuconv.conv2d, (x, w3), dict(stride=2, dilation=2, padding=(1, 2))),
        ("conv2d groups", gpuconv.conv2d, (x, f32(12, 4, 3, 2)), dict(groups=4)),
        ("conv2d depthwise native", gpuconv.conv2d, (xd, wd), dict(padding=1, groups=32)),
        ("conv2d depthwise s2", gpuconv.conv2d, (xd, wd), dict(stride=2, padding=1, groups=32)),
        ("conv2d_input", gpuconv.conv2d_input, (x.shape, w3, g3), dict(padding=1)),
        ("conv2d_weight", gpuconv.conv2d_weight, (x, w3.shape, g3), dict(padding=1)),
        ("conv2d_input depthwise", gpuconv.conv2d_input, (xd.shape, wd, gd), dict(stride=2, padding=1, groups=32)),
        ("conv2d_weight depthwise", gpuconv.conv2d_weight, (xd, wd.shape, gd), dict(stride=2, padding=1, groups=32)),
        ("correlate2d full", gpuconv.correlate2d, (img, k), {}),
        ("correlate2d same symm", gpuconv.correlate2d, (img, k), dict(mode="same", boundary="symm")),
        ("correlate2d valid f32", gpuconv.correlate2d, (img.astype(np.float32), k.astype(np.float32)),
         dict(mode="valid")),
    ]


def _hammer(cases, rounds: int = 2, context=None):
    """Serial results first, then N_THREADS threads each running every case in a
    rotated order `rounds` times; returns the mismatches and the errors."""
    def call(case):
        _, fn, args, kwargs = case
        if context is None:
            return fn(*args, **kwargs)
        with context():
            return fn(*args, **kwargs)

    expected = [np.array(call(c), copy=True) for c in cases]
    barrier = threading.Barrier(N_THREADS)
    mismatches, errors = [], []

    def worker(t):
        try:
            barrier.wait()
            for r in range(rounds):
                order = list(range(len(cases)))
                order = order[t % len(order):] + order[:t % len(order)]
                if (t + r) % 2:
                    order.reverse()
                for i in order:
                    got = call(cases[i])
                    if not (got.shape == expected[i].shape and got.dtype == expected[i].dtype
                            and np.array_equal(got, expected[i], equal_nan=True)):
                        bad = (np.argwhere(got != expected[i])[:3].tolist()
                               if got.shape == expected[i].shape else got.shape)
                        mismatches.append(f"thread {t} round {r}: {cases[i][0]} differs at {bad}")
        except Exception as exc:              # noqa: BLE001 - reported by the test
            errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    return mismatches, errors


def test_cpu_path_threads_match_serial(rng):
    cases = _cpu_cases(rng)
    mismatches, errors = _hammer(cases)
    assert not errors, errors
    assert not mismatches, mismatches[:10]


def test_thread_pool_nested_and_concurrent():
    """run_jobs from 8 threads at once, and from inside its own jobs (which
    would deadlock the 2-thread pool if they waited on it)."""
    from gpuconv import _cpu

    n = 64
    out = np.zeros((N_THREADS, n, n), np.int64)

    def inner(t, i, j):
        out[t, i, j] += t * 1000 + i * n + j + 1

    def outer(t, i):
        _cpu.run_jobs(inner, [(t, i, j) for j in range(n)], n_elements=1 << 30)

    barrier = threading.Barrier(N_THREADS)
    errors = []

    def worker(t):
        try:
            barrier.wait()
            _cpu.run_jobs(outer, [(t, i) for i in range(n)], n_elements=1 << 30)
        except Exception as exc:              # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "run_jobs deadlocked"
    assert not errors, errors
    want = np.arange(N_THREADS)[:, None, None] * 1000 + np.arange(n * n).reshape(n, n) + 1
    np.testing.assert_array_equal(out, want)     # every job ran exactly once


def test_scratch_buffers_are_per_thread():
    from gpuconv import _cpu

    barrier = threading.Barrier(N_THREADS)
    seen = {}

    def worker(t):
        barrier.wait()
        buf = _cpu.scratch("concurrency-test", 1000, np.float64)
        buf[:] = t
        barrier.wait()                        # every thread has written its own buffer
        seen[t] = (buf.__array_interface__["data"][0], bool((buf == t).all()))

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert all(ok for _, ok in seen.values()), seen
    assert len({addr for addr, _ in seen.values()}) == N_THREADS


def _sim_cases(rng):
    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x = f32(2, 5, 11, 9)
    w = f32(6, 5, 3, 3)
    g = f32(2, 6, 11, 9)
    xd = f32(1, 8, 10, 7)
    wd = f32(8, 1, 3, 3)
    return [
        ("conv2d", gpuconv.conv2d, (x, w), dict(padding=1)),
        ("conv2d depthwise", gpuconv.conv2d, (xd, wd), dict(padding=1, groups=8)),
        ("conv2d_input", gpuconv.conv2d_input, (x.shape, w, g), dict(padding=1)),
        ("conv2d_weight", gpuconv.conv2d_weight, (x, w.shape, g), dict(padding=1)),
        ("correlate2d", gpuconv.correlate2d, (f32(37, 29), f32(4, 3)), dict(mode="same")),
    ]


@pytest.mark.sim
def test_simulator_threads_match_serial(rng):
    if not hasattr(gpuconv, "use_backend"):
        pytest.skip("gpuconv.use_backend is not available")
    from gpuconv.sim import SimBackend

    backend = SimBackend()
    cases = _sim_cases(rng)
    mismatches, errors = _hammer(cases, rounds=1, context=lambda: gpuconv.use_backend(backend))
    assert not errors, errors
    assert not mismatches, mismatches[:10]


def test_signal_pool_survives_fork():
    import os
    import subprocess
    import sys
    import textwrap
    script = textwrap.dedent("""
        import os, signal, numpy as np, gpuconv
        a = np.random.default_rng(0).standard_normal((1000, 700)); k = np.ones((5, 5))
        want = gpuconv.correlate2d(a, k)            # starts the pool in the parent
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)                         # a hang ends the child, not the test
            os._exit(0 if np.array_equal(gpuconv.correlate2d(a, k), want) else 3)
        _, status = os.waitpid(pid, 0)
        raise SystemExit(os.waitstatus_to_exitcode(status))
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode == 0, f"forked child ended with {proc.returncode} (-14: hung until SIGALRM)\n{proc.stderr}"
