"""What the numbers were measured on: device, driver, libraries, commit."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """Cores this process may use (the affinity mask, as containers set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def loadavg() -> list | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def git_commit() -> str | None:
    """The source tree's commit when run from a checkout (None from a wheel)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _version(modname: str) -> str | None:
    try:
        mod = __import__(modname)
    except Exception:  # noqa: BLE001 - absent or broken: reported as None
        return None
    return getattr(mod, "__version__", "unknown")


def cuda_facts() -> dict:
    """CuPy's view of the GPU: {'available': bool, 'reason'|...}.  Never raises."""
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001
        return {"available": False, "reason": f"CuPy not importable ({type(exc).__name__}: {exc})"}
    facts = {"cupy": cupy.__version__}
    try:
        ndev = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - no driver, no device
        facts.update(available=False, reason=f"no CUDA device ({type(exc).__name__}: {exc})")
        return facts
    if ndev == 0:
        facts.update(available=False, reason="no CUDA device (device count 0)")
        return facts
    try:
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        rt = cupy.cuda.runtime.runtimeGetVersion()
        drv = cupy.cuda.runtime.driverGetVersion()
        facts.update(
            available=True, device_count=ndev, device_id=dev.id, device=name,
            compute_capability=f"{props['major']}.{props['minor']}",
            sm_count=props["multiProcessorCount"], memory_bytes=props["totalGlobalMem"],
            l2_bytes=props.get("l2CacheSize"),
            cuda_runtime=f"{rt // 1000}.{(rt % 1000) // 10}",
            driver_cuda=f"{drv // 1000}.{(drv % 1000) // 10}",
            driver=_nvidia_driver())
    except Exception as exc:  # noqa: BLE001
        facts.update(available=False, reason=f"CUDA device query failed ({type(exc).__name__}: {exc})")
    return facts


def _nvidia_driver() -> str | None:
    try:
        return Path("/proc/driver/nvidia/version").read_text().split("Kernel Module")[1].split()[0]
    except (OSError, IndexError):
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def torch_facts() -> dict:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return {"available": False, "reason": f"torch not importable ({type(exc).__name__})"}
    facts = {"available": True, "torch": torch.__version__, "cuda": torch.cuda.is_available(),
             "torch_cuda": torch.version.cuda, "num_threads": torch.get_num_threads()}
    try:
        facts["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # noqa: BLE001
        facts["cudnn"] = None
    return facts


def _native_status() -> str:
    from .. import _native
    return _native.status()


def collect(mode: str) -> dict:
    import numpy as np
    import gpuconv
    env = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "gpuconv": getattr(gpuconv, "__version__", None),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "cpu_model": cpu_model(),
        "cpu_cores": cpu_cores(),
        # the CPU path's compiled depthwise kernel (gpuconv._native): on, off or unavailable
        "cpu_native": _native_status(),
        # other processes competing for the cores distort CPU timings (a BLAS
        # thread descheduled mid-GEMM stalls the others); the run records it
        "loadavg_start": loadavg(),
        "cuda": cuda_facts(),
        "torch": torch_facts(),
    }
    cfg = getattr(np, "show_config", None)
    try:
        info = cfg(mode="dicts") if cfg else None
        env["numpy_blas"] = info["Build Dependencies"]["blas"]["name"] if info else None
    except Exception:  # noqa: BLE001 - older numpy
        env["numpy_blas"] = None
    return env
