"""Timers.  Every timer: one call to warm up (compiles, cuDNN autotune, caches;
excluded), a short calibration, then repeats until both `min_repeats` calls and
`min_time_s` of measured work are reached (capped at `max_repeats`); the
result is the list of per-call times, reported as their median.

GPU: each call sits between two CUDA events on the stream it runs on, after a
write of a buffer twice the L2 size (H100: 50 MB L2, so 100 MB), so the
inputs come from HBM as they would in a network, not from a warm L2.  The flush
also keeps the GPU busy while the CPU enqueues the call, so the start event is
not followed by idle time for launch overhead of a few microseconds.  The
events are read after one synchronisation at the end.
"""
from __future__ import annotations

import ctypes
import math
import statistics
import time
from dataclasses import dataclass


@dataclass
class Timing:
    times_s: list[float]

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        return min(self.times_s)


def _count(estimate_s: float, min_repeats: int, max_repeats: int, min_time_s: float) -> int:
    if estimate_s <= 0:
        return max_repeats
    return int(min(max_repeats, max(min_repeats, math.ceil(min_time_s / estimate_s))))


# Pause before each CPU implementation is timed: OpenBLAS's worker threads
# spin for a while after a GEMM returns, and so do torch's OpenMP threads after
# a parallel region; the next implementation timed right after them would share
# the cores with spinning threads.  0.3 s outlasts both spin phases.
SETTLE_S = 0.3


# glibc's malloc serves a block above its mmap threshold with a fresh mmap, so
# a call that allocates its output page-faults it in, 4 KiB at a time unless
# the library asks for huge pages (NumPy does, torch does not).  The threshold
# moves with what the process freed earlier (up to 32 MiB), so whether an
# output buffer is fresh depends on history: torch's CPU depthwise 3x3 on
# 8x128x56x56 measured 10-15 ms or 1.7 ms here, in the same script, depending on
# how the inputs had been allocated (a fixed threshold: 1.7 ms every time).
MMAP_THRESHOLD = 32 << 20           # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 1 << 30


def steady_malloc() -> str | None:
    """Fix glibc's mmap and trim thresholds for this process, so that per-call
    buffers below 32 MiB, of every library alike, are reused heap memory as in a
    long-running process instead of fresh pages; returns a note for the report,
    or None where malloc is not glibc's."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    m_trim_threshold, m_mmap_threshold = -1, -3               # <malloc.h>
    if not (mallopt(m_mmap_threshold, MMAP_THRESHOLD) and mallopt(m_trim_threshold, TRIM_THRESHOLD)):
        return None
    return (f"glibc malloc: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold "
            f"{TRIM_THRESHOLD >> 30} GiB (mallopt), so no library pays page faults for a fresh "
            f"output buffer on every call")


def time_cpu(fn, *, min_repeats=10, max_repeats=200, min_time_s=0.5, warmup=1,
             settle_s=SETTLE_S) -> Timing:
    """time.perf_counter around each call (NumPy/torch CPU calls are synchronous),
    after `settle_s` of idleness so no other library's threads still spin."""
    time.sleep(settle_s)
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    est = time.perf_counter() - t0
    n = _count(est, min_repeats, max_repeats, min_time_s)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(times)


class _EventTimer:
    """The shared GPU loop; subclasses supply events, the flush and a sync."""

    def event(self):
        raise NotImplementedError

    def elapsed_s(self, a, b) -> float:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def synchronize(self) -> None:
        raise NotImplementedError

    def run(self, fn, *, min_repeats=20, max_repeats=1000, min_time_s=0.2, warmup=1,
            flush_l2=True) -> Timing:
        for _ in range(warmup):
            fn()
        self.synchronize()
        # calibration: a few calls, as measured
        probe = self._measure(fn, 3, flush_l2)
        n = _count(statistics.median(probe), min_repeats, max_repeats, min_time_s)
        return Timing(self._measure(fn, n, flush_l2))

    def _measure(self, fn, n, flush_l2) -> list[float]:
        pairs = []
        for _ in range(n):
            if flush_l2:
                self.flush()
            a, b = self.event(), self.event()
            a.record()
            fn()
            b.record()
            pairs.append((a, b))
        self.synchronize()
        return [self.elapsed_s(a, b) for a, b in pairs]


def l2_flush_bytes(l2_bytes: int | None) -> int:
    """Twice the L2, at least 64 MiB (H100's L2 is 50 MB)."""
    return max(2 * int(l2_bytes or 0), 64 << 20)


class CupyTimer(_EventTimer):
    """cupy.cuda.Event on CuPy's current stream; the flush is a fill of a
    2x-L2 int32 buffer on the same stream."""

    def __init__(self, l2_bytes: int | None = None):
        import cupy
        self.cp = cupy
        if l2_bytes is None:
            l2_bytes = cupy.cuda.Device().attributes.get("L2CacheSize", 0)
        self._buf = cupy.empty(l2_flush_bytes(l2_bytes) // 4, dtype=cupy.int32)

    def event(self):
        return self.cp.cuda.Event()

    def elapsed_s(self, a, b):
        return self.cp.cuda.get_elapsed_time(a, b) / 1e3

    def flush(self):
        self._buf.fill(0)

    def synchronize(self):
        self.cp.cuda.get_current_stream().synchronize()


class TorchTimer(_EventTimer):
    """torch.cuda.Event on torch's current stream, the same discipline."""

    def __init__(self, l2_bytes: int | None = None):
        import torch
        self.torch = torch
        if l2_bytes is None:
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            l2_bytes = getattr(props, "L2_cache_size", 0)
        self._buf = torch.empty(l2_flush_bytes(l2_bytes) // 4, dtype=torch.int32, device="cuda")

    def event(self):
        return self.torch.cuda.Event(enable_timing=True)

    def elapsed_s(self, a, b):
        return a.elapsed_time(b) / 1e3

    def flush(self):
        self._buf.zero_()

    def synchronize(self):
        self.torch.cuda.current_stream().synchronize()
