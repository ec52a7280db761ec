"""A process-wide thread pool for the NumPy path's element-wise passes.

NumPy releases the GIL inside its ufunc loops, so independent slabs of one
multiply-add pass run in parallel on a pool of threads (BLAS calls bring
their own threads and do not use it).  Work below `min_elements` runs inline:
handing it to threads costs more than it saves.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
# Set in the pool's threads: a job that itself calls run_jobs runs its jobs
# inline, since waiting on the pool from inside it deadlocks once every pool
# thread is such a waiter (8 caller threads x nested jobs on a 2-thread pool).
_IN_POOL = threading.local()


def n_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _forget_pool_after_fork() -> None:
    # A forked child inherits the executor object but none of its threads:
    # work submitted to it would wait forever.  The child starts a pool of its own
    # (and a fresh lock: a parent thread may have held it when it forked).
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


def _mark_pool_thread() -> None:
    _IN_POOL.active = True


def _get_pool() -> ThreadPoolExecutor:
    """The process's pool, made once even when several threads ask at once."""
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(n_threads(), thread_name_prefix="gpuconv-cpu",
                                           initializer=_mark_pool_thread)
            pool = _pool
    return pool


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def run_jobs(fn, jobs, n_elements: int, min_elements: int = 1 << 16) -> None:
    """Call fn(*job) for every job, on the pool when the work is big enough.
    Safe from any number of threads at once: they share the pool's threads,
    each waits for its own jobs; called from a pool thread, the jobs run inline."""
    jobs = list(jobs)
    if (n_threads() == 1 or len(jobs) < 2 or n_elements < min_elements
            or getattr(_IN_POOL, "active", False)):
        for job in jobs:
            fn(*job)
        return
    futures = [_get_pool().submit(fn, *job) for job in jobs]
    for f in futures:
        f.result()


def shares(count: int) -> list[tuple[int, int]]:
    """[0, count) as one contiguous (lo, hi) share per pool thread (fewer when
    count is smaller): for jobs whose items all cost the same."""
    parts = max(1, min(count, n_threads()))
    bounds = [count * j // parts for j in range(parts + 1)]
    return [(bounds[j], bounds[j + 1]) for j in range(parts) if bounds[j] < bounds[j + 1]]


# Scratch buffers kept per thread between calls: fresh multi-megabyte arrays are
# mmap'd and page-faulted on every call, which measured 5.3 -> 4.6 ms on the
# cpu suite's 3x3d2_32_64 (Winograd V and M, float32, 2 cores) and 2.48 -> 2.0
# ms on 1x3x224x224 7x7 s2 (7.6 MB of columns).  Buffers above the cap are not kept.
_SCRATCH = threading.local()
_SCRATCH_KEEP_BYTES = 1 << 26


def scratch(slot, size: int, dt) -> np.ndarray:
    """A 1-D buffer of `size` elements of `dt`, reused by later calls with the same
    slot on this thread (contents undefined)."""
    dt = np.dtype(dt)
    if size * dt.itemsize > _SCRATCH_KEEP_BYTES:
        return np.empty(size, dtype=dt)
    cache = getattr(_SCRATCH, "buffers", None)
    if cache is None:
        cache = _SCRATCH.buffers = {}
    buf = cache.get((slot, dt))
    if buf is None or buf.size < size:
        buf = cache[(slot, dt)] = np.empty(size, dtype=dt)
    return buf[:size]
