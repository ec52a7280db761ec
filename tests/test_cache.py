"""The build cache cannot crash the process: every cached build (the CPU path's
compiled kernels, the simulator's modules and worker) is checked against the
size and SHA-256 recorded beside it and rebuilt when damaged; concurrent first
builds are built once; an unwritable cache directory falls back to a private
temporary one with a warning.

Each scenario runs in child processes with a cache directory of its own, so a
crash (SIGBUS from a truncated library) fails the test, not pytest."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import gpuconv
from gpuconv import _paths

ROOT = Path(gpuconv.__file__).resolve().parent.parent
SIM_SRC = Path(__file__).resolve().parent / "sim_kernels" / "sim_checks.cu"


def _env(cache: Path, **extra) -> dict:
    env = dict(os.environ, GPUCONV_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    env.pop("GPUCONV_CPU_NATIVE", None)
    env.update(extra)
    return env


def _run(script: str, cache: Path, timeout: float = 240, **extra) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=_env(cache, **extra),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"child exited with {proc.returncode} (negative: killed by that signal)\n"
                                  f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def _damage(path: Path, how: str, rng) -> None:
    data = path.read_bytes()
    if how == "truncate":
        os.truncate(path, 1000)
    elif how == "empty":
        os.truncate(path, 0)
    elif how == "flip":                       # same size, one byte changed in the middle of the code
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1:])
    elif how == "garbage":
        path.write_bytes(rng.integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "no_record":
        (path.parent / (path.name + _paths.RECORD_SUFFIX)).unlink()
    elif how == "bad_record":
        (path.parent / (path.name + _paths.RECORD_SUFFIX)).write_text("not a record\n")
    else:
        raise AssertionError(how)


def _assert_published(path: Path) -> None:
    """The file in place matches its record, and no temporary file is left."""
    assert _paths.read_checked(path) is not None, f"{path} does not match its record after the rebuild"
    assert path.stat().st_size > 1000
    leftovers = [p.name for p in path.parent.iterdir()
                 if p.name.startswith((".record-", "tmp", "build-")) or p.suffix == ".tmp"]
    assert not leftovers, leftovers


# ------------------------------------------------------------------ CPU compiled kernels
# A depthwise layer: the CPU path runs it on the compiled kernels (forward and both gradients).
CPU_SCRIPT = """
import sys, numpy as np, gpuconv
from gpuconv import _native
rng = np.random.default_rng({seed})
x = rng.standard_normal((2, 24, 13, 11)).astype(np.float32)
w = rng.standard_normal((24, 1, 3, 3)).astype(np.float32)
g = rng.standard_normal((2, 24, 13, 11)).astype(np.float32)
y = gpuconv.conv2d(x, w, padding=1, groups=24)
dx = gpuconv.conv2d_input(x.shape, w, g, padding=1, groups=24)
dw = gpuconv.conv2d_weight(x, w.shape, g, padding=1, groups=24)
assert _native.status().startswith("on"), _native.status()
np.savez({out!r}.replace("#", sys.argv[-1]), y=y, dx=dx, dw=dw, x=x, w=w, g=g)
print("LIB", _native.status().split("(", 1)[1].rstrip(")"))
"""


def _cpu_reference(r):
    torch = pytest.importorskip("torch")
    x, w, g = (torch.from_numpy(r[k].astype(np.float64)) for k in ("x", "w", "g"))
    y = torch.nn.functional.conv2d(x, w, padding=1, groups=24).numpy()
    dx = torch.nn.grad.conv2d_input(x.shape, w, g, padding=1, groups=24).numpy()
    dw = torch.nn.grad.conv2d_weight(x, w.shape, g, padding=1, groups=24).numpy()
    return {"y": y, "dx": dx, "dw": dw}


def _check_cpu(npz: Path, first=None):
    r = np.load(npz)
    for k, ref in _cpu_reference(r).items():
        np.testing.assert_allclose(r[k], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=k)
        assert np.isfinite(r[k]).all(), k
        if first is not None:                 # the rebuilt library computes exactly what the first did
            np.testing.assert_array_equal(r[k], first[k], err_msg=k)
    return r


@pytest.fixture(scope="module")
def cpu_cache(tmp_path_factory):
    """A cache holding the built CPU library (built once for this module's tests),
    the seed and results of its first run."""
    d = tmp_path_factory.mktemp("cpu_template")
    seed = int(os.environ.get("GPUCONV_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
    out = d / "first.npz"
    lib = Path(_run(CPU_SCRIPT.format(seed=seed, out=str(out)), d / "cache").stdout.split("LIB")[1].split()[0])
    assert lib.parent == d / "cache" / "cpu" and lib.is_file()
    return d / "cache", lib.name, seed, _check_cpu(out)


def _copy_cache(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("*.lock"))
    return dest


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_cpu_library_is_rebuilt(tmp_path, how, rng, cpu_cache):
    template, name, seed, first = cpu_cache
    cache = _copy_cache(template, tmp_path / "cache")
    lib = cache / "cpu" / name
    _damage(lib, how, rng)
    out = tmp_path / "second.npz"
    _run(CPU_SCRIPT.format(seed=seed, out=str(out)), cache)
    _check_cpu(out, first)
    _assert_published(lib)


def test_cpu_library_truncated_while_loaded(tmp_path, cpu_cache):
    """The process runs the checked bytes (an in-memory copy), not the cache file:
    a cut made under a running process does not fault it."""
    template, name, seed, first = cpu_cache
    cache = _copy_cache(template, tmp_path / "cache")
    out = tmp_path / "a.npz"
    script = CPU_SCRIPT.format(seed=seed, out=str(out)) + textwrap.dedent(f"""
        os_ = __import__("os")
        os_.truncate({str(cache / "cpu" / name)!r}, 1000)
        for _ in range(3):
            assert np.array_equal(y, gpuconv.conv2d(x, w, padding=1, groups=24))
            assert np.array_equal(dw, gpuconv.conv2d_weight(x, w.shape, g, padding=1, groups=24))
        """)
    _run(script, cache)
    _check_cpu(out, first)


def _compiler_log_wrapper(tmp_path: Path, real: str) -> Path:
    """A compiler that logs each invocation producing a library, then runs `real`."""
    log = tmp_path / f"{real}.log"
    wrapper = tmp_path / f"log-{real}"
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *-shared*) echo library >> "{log}";; '
                       f'*worker.cpp*) echo worker >> "{log}";; esac\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _start_together(script: str, n: int, cache: Path, tmp_path: Path, **extra) -> list[str]:
    """Start n children that wait for one go file, so their first builds overlap."""
    go = tmp_path / "go"
    wait = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.002)\n"
    procs = [subprocess.Popen([sys.executable, "-c", wait + textwrap.dedent(script), str(i)],
                              env=_env(cache, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    time.sleep(1.0)                            # all have imported gpuconv and are spinning
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"child exited with {p.returncode}\n{out}\n{err[-3000:]}"
        outs.append(out)
    return outs


def test_concurrent_first_cpu_builds(tmp_path, rng):
    cache = tmp_path / "cache"
    seed = int(rng.integers(1 << 31))
    cc = _compiler_log_wrapper(tmp_path, "cc")
    outs = [tmp_path / f"r{i}.npz" for i in range(4)]
    script = CPU_SCRIPT.format(seed=seed, out=str(tmp_path / "r#.npz"))
    _start_together(script, 4, cache, tmp_path, CC=str(cc))
    builds = (tmp_path / "cc.log").read_text().split()
    assert builds == ["library"], f"{len(builds)} processes compiled the library; one should, the others wait"
    first = _check_cpu(outs[0])
    for o in outs[1:]:
        _check_cpu(o, first)
    libs = list((cache / "cpu").glob("*.so"))
    assert len(libs) == 1
    _assert_published(libs[0])


# ------------------------------------------------------------------ simulator modules and worker
SIM_SCRIPT = """
import sys, numpy as np
from gpuconv.sim import SimBackend
from gpuconv.sim import _build
rng = np.random.default_rng({seed})
N, C, H, W, K, R, S = 2, 3, 9, 11, 4, 3, 2
x = rng.standard_normal((N, C, H, W)).astype(np.float32)
w = rng.standard_normal((K, C, R, S)).astype(np.float32)
y = np.full((N, K, H - R + 1, W - S + 1), np.nan, np.float32)
fn = SimBackend(cxx={cxx!r}).get_function({src!r}, ("conv_naive<float>",), "conv_naive<float>")
fn(((y.size + 127) // 128,), (128,), (x, w, y, *map(np.int32, (N, C, H, W, K, R, S))))
ref = np.zeros(y.shape)
for r in range(R):
    for s in range(S):
        ref += np.einsum("nchw,kc->nkhw", x[:, :, r:r + H - R + 1, s:s + W - S + 1].astype(np.float64), w[:, :, r, s])
np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
print("OK", y.tobytes().hex()[:64])
"""


def _sim_files(cache: Path) -> tuple[Path, Path]:
    d = cache / "sim"
    mods = [p for p in d.glob("sim_checks-*.so")]
    workers = [p for p in d.glob("worker-*") if p.suffix not in (".sha256", ".lock")]
    assert len(mods) == 1 and len(workers) == 1, (mods, workers)
    return mods[0], workers[0]


@pytest.fixture(scope="module")
def sim_cache(tmp_path_factory):
    """A cache holding the simulator worker and one module, and the first run's output."""
    d = tmp_path_factory.mktemp("sim_template")
    seed = int(os.environ.get("GPUCONV_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
    script = SIM_SCRIPT.format(seed=seed, cxx="g++", src=str(SIM_SRC))
    first = _run(script, d / "cache").stdout
    assert first.startswith("OK")
    return d / "cache", script, first


@pytest.mark.sim
@pytest.mark.parametrize("target,how", [("module", "truncate"), ("worker", "flip")])
def test_damaged_sim_build_is_rebuilt(tmp_path, target, how, rng, sim_cache):
    template, script, first = sim_cache
    cache = _copy_cache(template, tmp_path / "cache")
    mod, worker = _sim_files(cache)
    path = mod if target == "module" else worker
    _damage(path, how, rng)
    assert _run(script, cache).stdout == first
    _assert_published(path)


@pytest.mark.sim
def test_concurrent_first_sim_builds(tmp_path, rng):
    """Four processes build the worker and one module into an empty cache."""
    cache = tmp_path / "cache"
    cxx = _compiler_log_wrapper(tmp_path, "g++")
    script = SIM_SCRIPT.format(seed=int(rng.integers(1 << 31)), cxx=str(cxx), src=str(SIM_SRC))
    outs = _start_together(script, 4, cache, tmp_path)
    assert len(set(outs)) == 1 and outs[0].startswith("OK"), outs
    builds = sorted((tmp_path / "g++.log").read_text().split())
    assert builds == ["library", "worker"], f"compiles: {builds}; each file should be built by one process"
    for p in _sim_files(cache):
        _assert_published(p)


# ------------------------------------------------------------------ unwritable cache directory
def test_unwritable_cache_dir_falls_back_to_a_temporary_one(tmp_path, cpu_cache):
    template, _, seed, first = cpu_cache
    blocker = tmp_path / "a_file"
    blocker.write_text("")                     # a directory below a file cannot be made, even by root
    cache = blocker / "cache"
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o700)
    fallback = tmp / f"gpuconv-cache-{os.getuid()}"
    _copy_cache(template, fallback)            # as a previous run would have left it
    out = tmp_path / "r.npz"
    script = ("import warnings\nwarnings.simplefilter('always')\n"
              "with warnings.catch_warnings(record=True) as caught:\n"
              "    import gpuconv._paths as p\n    d = p.cache_dir()\n    d2 = p.cache_dir()\n"
              "print('DIR', d)\nprint('WARN', [str(c.message) for c in caught if c.category is RuntimeWarning])\n"
              "assert d == d2\n"
              + textwrap.dedent(CPU_SCRIPT.format(seed=seed, out=str(out))))
    stdout = _run(script, cache, TMPDIR=str(tmp)).stdout
    d = Path(stdout.split("DIR")[1].split()[0])
    assert d == fallback, (d, fallback)
    warn = stdout.split("WARN")[1].splitlines()[0]
    assert str(cache) in warn and "cannot be written" in warn and str(d) in warn, warn
    assert warn.count("cannot be written") == 1, "warned more than once"
    _check_cpu(out, first)


# ------------------------------------------------------------------ the helpers themselves
def test_checked_file_helpers(tmp_path):
    dest = tmp_path / "lib.so"
    data = os.urandom(5000)
    built = tmp_path / "build.tmp"
    built.write_bytes(data)
    assert not _paths.cached_file_ok(dest) and _paths.read_checked(dest) is None
    with _paths.build_lock(dest):
        assert _paths.publish(built, dest) == data
    assert not built.exists()
    assert _paths.read_checked(dest) == data and _paths.cached_file_ok(dest)
    assert _paths.cached_file_ok(dest)         # the remembered check
    os.truncate(dest, 1000)                    # a changed size is seen without rehashing
    assert not _paths.cached_file_ok(dest)
    dest.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert not _paths.cached_file_ok(dest) and _paths.read_checked(dest) is None
    dest.write_bytes(data)
    assert _paths.cached_file_ok(dest)
    (tmp_path / ("lib.so" + _paths.RECORD_SUFFIX)).unlink()   # a file from before records: rebuilt
    assert _paths.read_checked(dest) is None
    assert _paths.cached_file_ok(dest)         # unchanged since this process checked it
    _paths._verified.clear()                   # as in a new process
    assert not _paths.cached_file_ok(dest)
