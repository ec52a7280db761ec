"""Activations that can follow a convolution (fused into the GPU kernels' epilogue).

Definitions are torch's: relu, relu6 = min(max(x, 0), 6), silu = x * sigmoid(x),
gelu = x/2 * (1 + erf(x / sqrt 2)) (torch's default, approximate='none').
The NumPy versions here are the reference; the CUDA side is kernels_cu/epilogue.cuh.
"""
from __future__ import annotations

import math

import numpy as np

ACTIVATIONS = ("relu", "relu6", "silu", "gelu")

# Codes shared with kernels_cu/epilogue.cuh (template argument ACT).
ACTIVATION_CODES = {None: 0, "relu": 1, "relu6": 2, "silu": 3, "gelu": 4}


def check_activation(activation):
    if activation is None:
        return None
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {ACTIVATIONS}, got {activation!r}")
    return activation


def check_dtype(activation, dtype):
    """Activations are defined on real numbers; integers take only relu and relu6."""
    dtype = np.dtype(dtype)
    if activation is None:
        return
    if dtype.kind == "c" or (dtype.kind in "iub" and activation not in ("relu", "relu6")):
        raise TypeError(f"activation={activation!r} is not defined for dtype {dtype}")


def _erf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf
    except ImportError:  # scipy is optional; math.erf is exact but elementwise
        return np.vectorize(math.erf, otypes=[x.dtype])(x)
    return erf(x)


def apply(out: np.ndarray, activation) -> np.ndarray:
    """Apply `activation` to a real NumPy array in place (and return it)."""
    if activation is None:
        return out
    check_dtype(activation, out.dtype)
    if activation == "relu":
        np.maximum(out, 0, out=out)
    elif activation == "relu6":
        np.clip(out, 0, 6, out=out)
    elif activation == "silu":
        # x * sigmoid(x) written so that neither branch overflows
        e = np.exp(-np.abs(out))
        sig = np.where(out >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        out *= sig
    elif activation == "gelu":
        out *= 0.5 * (1.0 + _erf(out / math.sqrt(2.0)))
    return out


def apply_xp(xp, out, activation):
    """`apply` for an array of any array module (NumPy or CuPy), in place where the
    module allows: the rare device results that no kernel epilogue produced
    (an empty reduction plus bias, an FFT convolution)."""
    if activation is None:
        return out
    if xp is np:
        return apply(out, activation)
    check_dtype(activation, out.dtype)
    if activation == "relu":
        return xp.maximum(out, 0, out=out)
    if activation == "relu6":
        return xp.clip(out, 0, 6, out=out)
    if activation == "silu":
        return out * (1 / (1 + xp.exp(-out)))
    from cupyx.scipy.special import erf          # the only other module is CuPy
    return out * (0.5 * (1.0 + erf(out / math.sqrt(2.0))))
