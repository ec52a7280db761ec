"""Refuse an output the machine cannot hold, before allocating it.

A 1x1 input with padding 10**5 asks for a 4e10-element output.  Whether
np.empty of that fails depends on the kernel's overcommit policy: with Linux's
heuristic mode (the default) it raises NumPy's MemoryError; with
`vm.overcommit_memory=1`, or inside a container whose cgroup limit is below
the host's memory, the allocation succeeds and the process is killed (OOM,
no exception) when the kernel writes the pages.  `check_output_bytes`
compares the size with what this machine and process can ever have, and
raises a MemoryError naming what was asked, before anything is allocated.
"""
from __future__ import annotations

import functools
import math
import os

try:
    import resource
except ImportError:                       # not on POSIX
    resource = None


def _meminfo_bytes(field: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup (v2 memory.max, v1
    memory.limit_in_bytes), or None when unlimited or unknown."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:      # v1 writes ~2**63 for "no limit"
            return int(text)
    return None


@functools.lru_cache(maxsize=1)
def memory_limit_bytes() -> int | None:
    """The most memory this process could ever be given: physical memory plus
    swap, capped by its cgroup limit and its address-space rlimit; None when
    none of them can be read."""
    limits = []
    total = _meminfo_bytes("MemTotal")
    if total is None and hasattr(os, "sysconf"):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            total = None
    if total is not None:
        limits.append(total + (_meminfo_bytes("SwapTotal") or 0))
    cg = _cgroup_limit()
    if cg is not None:
        limits.append(cg)
    if resource is not None:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY and soft > 0:
            limits.append(soft)
    return min(limits) if limits else None


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.4g} {unit}" if unit != "bytes" else f"{n} bytes"
        n /= 1024
    raise AssertionError


def array_bytes(shape, dtype_or_itemsize) -> int:
    """Bytes of an array of `shape` in Python integers (no int64 overflow:
    a product of huge sizes stays exact)."""
    itemsize = dtype_or_itemsize if isinstance(dtype_or_itemsize, int) else _itemsize(dtype_or_itemsize)
    return math.prod(int(s) for s in shape) * itemsize


def _itemsize(dtype) -> int:
    import numpy as np
    return np.dtype(dtype).itemsize


def check_output_bytes(nbytes: int, what: str, limit: int | None = None) -> None:
    """Raise MemoryError when `what` (e.g. "conv2d output of shape (1, 1, 200001,
    200001) float32") would need more than `limit` bytes (default:
    memory_limit_bytes(), this machine's memory; a GPU caller passes the
    device's total memory).  Call it before allocating."""
    nbytes = int(nbytes)
    if limit is None:
        limit = memory_limit_bytes()
    if limit is not None and nbytes > limit:
        raise MemoryError(
            f"{what} needs {_human(nbytes)} ({nbytes} bytes), more than the {_human(int(limit))} "
            f"of memory this process can have; reduce the sizes (padding, dilation, batch) "
            f"or split the work")
