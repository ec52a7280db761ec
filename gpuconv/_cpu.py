"""A process-wide thread pool for the NumPy path's element-wise passes.

NumPy releases the GIL inside its ufunc loops, so independent slabs of one
multiply-add pass run in parallel on a pool of threads (BLAS calls bring
their own threads and do not use it).  Work below `min_elements` runs inline:
handing it to threads costs more than it saves.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_pool: ThreadPoolExecutor | None = None


def n_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def run_jobs(fn, jobs, n_elements: int, min_elements: int = 1 << 16) -> None:
    """Call fn(*job) for every job, on the pool when the work is big enough."""
    global _pool
    jobs = list(jobs)
    if n_threads() == 1 or len(jobs) < 2 or n_elements < min_elements:
        for job in jobs:
            fn(*job)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(n_threads(), thread_name_prefix="gpuconv-cpu")
    for f in [_pool.submit(fn, *job) for job in jobs]:
        f.result()
