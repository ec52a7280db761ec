"""Where gpuconv's files are: its CUDA sources (inside the installed package,
the wheel ships kernels_cu/ as gpuconv/kernels_cu, else the source tree's
top-level kernels_cu/) and its build cache, and how a build enters the cache.

A cached build is loaded into the process (ctypes) or into the simulator's
worker, so a damaged file there is a crash, not an error: a shared library
cut to 1,000 bytes (disk full, an interrupted copy of a home directory)
killed the process with SIGBUS on its next depthwise conv2d.  Every build is
therefore published with its size and SHA-256 recorded beside it
(`<file>.sha256`) and checked before use (`cached_file_ok`); a file that
does not match is rebuilt.  Checking costs one read and hash of the file,
once per process and file (measured on a busy 2-core machine: 0.12 ms for the
80 KB CPU library, 0.25 ms for a 74 KB simulator module, 18 ms for a 4.6 MB
one built with AddressSanitizer); later checks of the same unchanged file
are one stat (8 us, against 1.6 us for the exists() it replaces; a warm
sim build_module call is 0.8 ms, most of it hashing the sources for its key).

Concurrent first builds (several test processes, several ranks of one job)
take a per-file lock (`build_lock`: flock on `<file>.lock`), so one process
builds while the others wait and then find the build in place.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import threading
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:                       # not on POSIX: builds still publish atomically
    fcntl = None

_PKG = Path(__file__).resolve().parent
RECORD_SUFFIX = ".sha256"


def kernels_dir() -> Path:
    for cand in (_PKG / "kernels_cu", _PKG.parent / "kernels_cu"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(
        f"gpuconv's CUDA sources were not found (looked in {_PKG / 'kernels_cu'} and "
        f"{_PKG.parent / 'kernels_cu'}); reinstall gpuconv")


def configured_cache_dir() -> Path:
    """The cache directory asked for: $GPUCONV_CACHE_DIR or
    $XDG_CACHE_HOME/gpuconv (default ~/.cache/gpuconv)."""
    root = os.environ.get("GPUCONV_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpuconv"


_usable: dict[Path, Path] = {}
_usable_lock = threading.Lock()


def _try_writable(d: Path) -> None:
    """Raise OSError unless a file can be created in d (made if missing)."""
    d.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".probe-", dir=d)
    os.close(fd)
    os.unlink(probe)


def _private_temp_dir() -> Path:
    """A per-user directory under the system temporary directory, refused when
    another user owns it or can write to it (it holds code this process loads)."""
    d = Path(tempfile.gettempdir()) / f"gpuconv-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    try:
        d.mkdir(mode=0o700, exist_ok=True)
        st = d.lstat()
        if (not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid())
                or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            raise PermissionError(f"{d} is not a private directory of this user")
        _try_writable(d)
        return d
    except OSError:
        return Path(tempfile.mkdtemp(prefix="gpuconv-cache-"))


def cache_dir() -> Path:
    """Build cache (CPU kernels, simulator modules, compile reports):
    configured_cache_dir(), or, when that cannot be written (read-only home,
    a path under a file), a private temporary directory, with a RuntimeWarning
    once per process and configured directory."""
    root = configured_cache_dir()
    got = _usable.get(root)
    if got is not None:
        return got
    with _usable_lock:
        got = _usable.get(root)
        if got is None:
            try:
                _try_writable(root)
                got = root
            except OSError as exc:
                got = _private_temp_dir()
                warnings.warn(
                    f"gpuconv: the cache directory {root} cannot be written ({exc}); using {got} "
                    f"instead (set GPUCONV_CACHE_DIR to a writable directory to keep builds "
                    f"between runs)", RuntimeWarning, stacklevel=2)
            _usable[root] = got
    return got


# ------------------------------------------------------------------ checked cache files
def _record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def _stat_key(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


_verified: dict[Path, tuple] = {}          # path -> _stat_key of the file last found good


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checked(path: Path) -> bytes | None:
    """The bytes of the cached build `path` when they match the size and
    SHA-256 recorded beside it, else None (missing, truncated, altered, or
    no record).  Loading these bytes rather than re-reading the file leaves
    no window in which the file could change between check and use."""
    path = Path(path)
    try:
        want_hash, want_size = _record_path(path).read_text().split()
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    if len(data) != int(want_size) or file_digest(data) != want_hash:
        return None
    return data


def cached_file_ok(path: Path) -> bool:
    """True when the cached build `path` matches its recorded size and SHA-256.
    A file found good is not hashed again in this process while its inode,
    size and modification time stay the same (one stat)."""
    path = Path(path)
    try:
        key = _stat_key(path.stat())
    except OSError:
        return False
    if _verified.get(path) == key:
        return True
    if read_checked(path) is None:
        return False
    _verified[path] = key
    return True


def publish(built: Path, dest: Path) -> bytes:
    """Move the finished build `built` (a file in dest's directory) to `dest`
    with its size and SHA-256 recorded beside it.  Both renames are atomic; a
    reader that sees the new file with the old record finds a mismatch, takes
    build_lock(dest) and looks again.  Call with build_lock(dest) held.
    Returns the bytes published."""
    built, dest = Path(built), Path(dest)
    data = built.read_bytes()
    fd, tmp_record = tempfile.mkstemp(prefix=".record-", dir=dest.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{file_digest(data)} {len(data)}\n")
        os.replace(built, dest)
        os.replace(tmp_record, _record_path(dest))
    finally:
        if os.path.exists(tmp_record):
            os.unlink(tmp_record)
    return data


@contextlib.contextmanager
def build_lock(dest: Path):
    """Exclusive lock for building `dest`, across processes and threads (flock
    on `<dest>.lock`: each call opens its own descriptor, and flock excludes
    descriptors of one process as it does those of others; the kernel
    releases it when the holder dies, so a killed build leaves no stale lock)."""
    dest = Path(dest)
    if fcntl is None:
        yield
        return
    fd = os.open(str(dest.with_name(dest.name + ".lock")), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                      # releases the flock


def _forget_lock_after_fork() -> None:
    global _usable_lock
    _usable_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_lock_after_fork)
