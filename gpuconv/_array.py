"""Which array library an argument belongs to, and zero-copy moves between them.

gpuconv computes on two kinds of array:
  * NumPy arrays: the CPU path (gpuconv.reference);
  * CuPy arrays: the GPU path (gpuconv.cuda).
Other arrays are brought to one of those without a copy and the result is
handed back in the caller's type:
  * a torch tensor on the CPU -> NumPy view (tensor.numpy()), result as a torch tensor;
  * a torch tensor on CUDA, or any object exposing __cuda_array_interface__ or
    a CUDA __dlpack__ -> CuPy view (cupy.from_dlpack / cupy.asarray), result as
    a torch tensor for torch inputs (torch.from_dlpack, zero-copy), else CuPy.
CuPy and torch are imported only when an argument already comes from them.

GPU work runs on the primary argument's device (not merely the current one),
and for torch CUDA tensors on torch's current stream of that device (wrapped
as a CuPy ExternalStream), so it is ordered with the caller's torch work
without a synchronisation: see `device_scope` (entered by gpuconv.engine.public).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Converted:
    array: object          # numpy.ndarray or cupy.ndarray
    kind: str              # "numpy" | "cupy"
    origin: str            # "numpy" | "cupy" | "torch" | "foreign"


def _is_torch(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _is_cupy(obj) -> bool:
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(obj, cupy.ndarray)


def convert(name: str, obj, *, allow_array_like: bool = False) -> Converted:
    """Bring `obj` to NumPy or CuPy without copying; TypeError for non-arrays."""
    if isinstance(obj, np.ndarray):
        return Converted(obj, "numpy", "numpy")
    if _is_cupy(obj):
        return Converted(obj, "cupy", "cupy")
    if _is_torch(obj):
        if obj.device.type == "cpu":
            t = obj.detach()
            if t.is_conj():
                t = t.resolve_conj()
            if t.dtype == sys.modules["torch"].bfloat16:
                # torch has no NumPy bfloat16: the same bits, viewed as ml_dtypes' (no copy)
                from .spec import bfloat16_dtype
                bf16 = bfloat16_dtype()
                return Converted(t.view(sys.modules["torch"].int16).numpy().view(bf16), "numpy", "torch")
            return Converted(t.numpy(), "numpy", "torch")
        if obj.device.type == "cuda":
            import cupy
            return Converted(cupy.from_dlpack(obj.detach()), "cupy", "torch")
        raise TypeError(f"{name}: torch tensors on device {obj.device} are not supported (cpu or cuda only)")
    if hasattr(obj, "__cuda_array_interface__"):
        import cupy
        return Converted(cupy.asarray(obj), "cupy", "foreign")
    if hasattr(obj, "__dlpack_device__"):
        dev_type, _ = obj.__dlpack_device__()
        if int(dev_type) in (2, 3, 13):  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged
            import cupy
            return Converted(cupy.from_dlpack(obj), "cupy", "foreign")
        if int(dev_type) == 1:  # kDLCPU
            return Converted(np.from_dlpack(obj), "numpy", "foreign")
    if allow_array_like and not isinstance(obj, (str, bytes, dict)):
        try:
            arr = np.asarray(obj)
        except Exception as exc:  # noqa: BLE001 - re-raised as the documented TypeError
            raise TypeError(f"{name} must be array_like, got {type(obj).__name__}: {exc}") from None
        if arr.dtype == object:
            raise TypeError(f"{name} must be a numeric array_like, got {type(obj).__name__} of objects")
        return Converted(arr, "numpy", "numpy")
    raise TypeError(
        f"{name} must be an array (numpy.ndarray, cupy.ndarray, torch.Tensor or an object with "
        f"__cuda_array_interface__ / __dlpack__), got {type(obj).__name__}")


def common_kind(named: dict[str, Converted | None]) -> str:
    """All present arguments must live on the same side (CPU or GPU)."""
    kinds = {n: c.kind for n, c in named.items() if c is not None}
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"{n} on {'GPU (cupy)' if k == 'cupy' else 'CPU (numpy)'}" for n, k in kinds.items())
        raise TypeError(f"all arrays must be on the same device, got {desc}")
    if kinds.get("input") == "cupy" or "cupy" in kinds.values():
        _check_same_gpu({n: c for n, c in named.items() if c is not None})
        return "cupy"
    return "numpy"


def _check_same_gpu(named: dict[str, Converted]) -> None:
    devs = {n: c.array.device.id for n, c in named.items()}
    if len(set(devs.values())) > 1:
        desc = ", ".join(f"{n} on cuda:{d}" for n, d in devs.items())
        raise ValueError(f"all arrays must be on the same GPU, got {desc}")


def wrap(result, like: Converted):
    """Hand the result back in the type of the primary argument."""
    if like.origin == "torch":
        import torch
        if like.kind == "numpy":
            result = np.ascontiguousarray(result)
            if result.dtype.kind == "V" and result.dtype.name == "bfloat16":
                return torch.from_numpy(result.view(np.int16)).view(torch.bfloat16)
            return torch.from_numpy(result)
        return torch.from_dlpack(result)
    return result


@contextmanager
def device_scope(obj):
    """Make `obj`'s GPU (and, for a torch tensor, torch's current stream on it)
    current for CuPy; a no-op for CPU arrays."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(obj, cupy.ndarray):
        with obj.device:
            yield
        return
    if _is_torch(obj) and obj.device.type == "cuda":
        import cupy
        import torch
        dev = obj.device.index if obj.device.index is not None else torch.cuda.current_device()
        stream = torch.cuda.current_stream(dev)
        with cupy.cuda.Device(dev), cupy.cuda.ExternalStream(stream.cuda_stream, dev):
            yield
        return
    yield
