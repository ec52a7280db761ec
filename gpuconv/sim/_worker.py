"""The Python end of src/worker.cpp: one worker process per (compiler, ASan)
for this Python process, an argument arena shared with it, and the protocol.

The worker runs kernels in-process; when one kills it (signal, ASan report,
alarm) the launch raises with the worker's exit status and the report it wrote
to its stderr, which is a memfd read here (and otherwise copied to
sys.stderr after each launch, so kernel printf/fprintf output is not lost).
The next launch starts a fresh worker and reloads the cached libraries.

Cost of one launch on a 2-core x86-64 machine, kernel time excluded: ~0.2 ms
(message round trip and copies of the arrays into and out of the arena)."""
from __future__ import annotations

import atexit
import mmap
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from ._build import build_worker

OK, KERNEL_ERROR, BAD_REQUEST, DEADLOCK = 0, 1, 4, 5
_ASAN_OPTIONS = ("detect_leaks=0:halt_on_error=1:abort_on_error=0:detect_odr_violation=0:"
                 "allocator_may_return_null=1:print_summary=1:symbolize=1")


class WorkerDied(RuntimeError):
    """The worker process ended during a request: .kind is "crash" or "timeout"."""

    def __init__(self, msg: str, kind: str):
        super().__init__(msg)
        self.kind = kind


class Worker:
    def __init__(self, *, asan: bool, cxx: str):
        self.asan = asan
        exe = build_worker(asan=asan, cxx=cxx)
        self._lock = threading.Lock()
        self._arena_fd = os.memfd_create("gpuconv-sim-arena")
        self._err_fd = os.memfd_create("gpuconv-sim-stderr")
        self._err_pos = 0
        self._arena_size = 0
        self._mm: mmap.mmap | None = None
        self._view: np.ndarray | None = None
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        env = dict(os.environ)
        if asan:
            env["ASAN_OPTIONS"] = _ASAN_OPTIONS + (":" + env["ASAN_OPTIONS"] if env.get("ASAN_OPTIONS") else "")
        self.timeout_s = 0
        self._proc = subprocess.Popen([str(exe), str(req_r), str(rep_w), str(self._arena_fd)],
                                      pass_fds=(req_r, rep_w, self._arena_fd), stdin=subprocess.DEVNULL,
                                      stderr=self._err_fd, env=env, close_fds=True)
        os.close(req_r)
        os.close(rep_w)
        self.modules: dict[Path, tuple[int, list[tuple[str, str]]]] = {}
        self.alive = True
        self._closed = False

    # ------------------------------------------------------------ protocol
    def _exchange(self, payload: bytes) -> bytes:
        try:
            self._write_all(struct.pack("=I", len(payload)) + payload)
            head = self._read_exact(4)
            (n,) = struct.unpack("=I", head)
            rep = self._read_exact(n)
        except (OSError, EOFError):
            self.alive = False
            try:
                code = self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                code = self._proc.wait()
            report = self._new_stderr()
            if code == -signal.SIGALRM:
                raise WorkerDied(f"did not finish within {self.timeout_s} s (blocks run one after another: a block "
                                 f"that waits for another block spins forever)\n{report}", "timeout") from None
            if code is not None and code < 0:
                try:
                    name = signal.Signals(-code).name
                except ValueError:
                    name = f"signal {-code}"
                raise WorkerDied(f"crashed the simulator with {name}\n{report}", "crash") from None
            if "ERROR: AddressSanitizer" in report:
                raise WorkerDied(f"failed an AddressSanitizer check\n{report}", "crash") from None
            raise WorkerDied(f"ended the simulator with exit status {code}\n{report}", "crash") from None
        self._forward_stderr()
        return rep

    def _new_stderr(self) -> str:
        end = os.fstat(self._err_fd).st_size
        if end <= self._err_pos:
            return ""
        data = os.pread(self._err_fd, min(end - self._err_pos, 1 << 20), self._err_pos)
        self._err_pos = end
        return data.decode(errors="replace")

    def _forward_stderr(self) -> None:
        text = self._new_stderr()
        if text:
            sys.stderr.write(text)
            sys.stderr.flush()

    def _write_all(self, b: bytes) -> None:
        mv = memoryview(b)
        while mv:
            n = os.write(self._req_w, mv)
            mv = mv[n:]

    def _read_exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            b = os.read(self._rep_r, n - got)
            if not b:
                raise EOFError("worker closed its pipe")
            chunks.append(b)
            got += len(b)
        return b"".join(chunks)

    @staticmethod
    def _str(b: bytes, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("=I", b, pos)
        return b[pos + 4:pos + 4 + n].decode(errors="replace"), pos + 4 + n

    def load(self, lib: Path) -> tuple[int, list[tuple[str, str]]]:
        with self._lock:
            if lib in self.modules:
                return self.modules[lib]
            p = str(lib).encode()
            rep = self._exchange(struct.pack("=II", 1, len(p)) + p)
            (st,) = struct.unpack_from("=i", rep, 0)
            if st != 0:
                msg, _ = self._str(rep, 4)
                raise RuntimeError(f"the simulator could not load {lib}: {msg}")
            handle, n = struct.unpack_from("=II", rep, 4)
            pos, entries = 12, []
            for _ in range(n):
                name, pos = self._str(rep, pos)
                sig, pos = self._str(rep, pos)
                entries.append((name, sig))
            self.modules[lib] = (handle, entries)
            return handle, entries

    # ------------------------------------------------------------ arena
    def _ensure_arena(self, size: int) -> None:
        if size <= self._arena_size:
            return
        new = max(1 << 20, 1 << (size - 1).bit_length())
        self._view = None
        if self._mm is not None:
            self._mm.close()
        os.ftruncate(self._arena_fd, new)
        self._mm = mmap.mmap(self._arena_fd, new)
        self._view = np.frombuffer(self._mm, dtype=np.uint8)
        self._arena_size = new

    def run(self, handle: int, index: int, grid, block, smem: int, timeout: int,
            regions: list, args: list, schedule: int = 0, seed: int = 0,
            max_dynamic_attr: int = 0) -> tuple[int, str]:
        """regions: [(src uint8 array view, write_back: uint8 array view or None)];
        args: [(0, bytes) | (1, region, offset) | (2,)]."""
        with self._lock:
            offs, total = [], 0
            for src, _ in regions:
                offs.append(total)
                total += (src.size + 255) & ~255
            self._ensure_arena(max(total, 1))
            view = self._view
            for (src, _), off in zip(regions, offs):
                if src.size:
                    view[off:off + src.size] = src
            self.timeout_s = timeout
            parts = [struct.pack("=IIIIIIIIIQQIIQQI", 2, handle, index, *grid, *block, smem, self._arena_size,
                                 timeout, schedule, seed, max_dynamic_attr, len(regions))]
            parts += [struct.pack("=QQ", off, src.size) for (src, _), off in zip(regions, offs)]
            parts.append(struct.pack("=I", len(args)))
            for a in args:
                if a[0] == 0:
                    parts.append(struct.pack("=II", 0, len(a[1])) + a[1])
                elif a[0] == 1:
                    parts.append(struct.pack("=IIQ", 1, a[1], a[2]))
                else:
                    parts.append(struct.pack("=I", 2))
            rep = self._exchange(b"".join(parts))
            (st,) = struct.unpack_from("=i", rep, 0)
            msg, _ = self._str(rep, 4)
            if st == OK:
                for (src, back), off in zip(regions, offs):
                    if back is not None and src.size:
                        back[...] = view[off:off + src.size]
            return st, msg

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.alive = False
        for fd in (self._req_w, self._rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._view = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:                # a traceback still holds an arena view; the GC unmaps it
                pass
            self._mm = None
        os.close(self._arena_fd)
        os.close(self._err_fd)


_workers: dict[tuple[bool, str], Worker] = {}
_workers_lock = threading.Lock()


def get_worker(asan: bool, cxx: str) -> Worker:
    with _workers_lock:
        w = _workers.get((asan, cxx))
        if w is None or not w.alive:
            if w is not None:
                w.close()
            w = Worker(asan=asan, cxx=cxx)
            _workers[(asan, cxx)] = w
        return w


@atexit.register
def _close_all() -> None:
    for w in list(_workers.values()):
        w.close()
    _workers.clear()
