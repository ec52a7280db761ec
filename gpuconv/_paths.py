"""Where gpuconv's CUDA sources are: inside the installed package (the wheel ships
kernels_cu/ as gpuconv/kernels_cu), else the source tree's top-level kernels_cu/."""
from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def kernels_dir() -> Path:
    for cand in (_PKG / "kernels_cu", _PKG.parent / "kernels_cu"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(
        f"gpuconv's CUDA sources were not found (looked in {_PKG / 'kernels_cu'} and "
        f"{_PKG.parent / 'kernels_cu'}); reinstall gpuconv")


def cache_dir() -> Path:
    """Build cache (simulator libraries, compile reports): $GPUCONV_CACHE_DIR or
    $XDG_CACHE_HOME/gpuconv (default ~/.cache/gpuconv)."""
    root = os.environ.get("GPUCONV_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpuconv"
