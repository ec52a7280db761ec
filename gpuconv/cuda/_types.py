"""dtype <-> C++ template argument names, and the name-expression spelling.

One spelling everywhere: the registry's instantiation lists, the launchers'
`name` arguments and the compile check all build names with `expr()`, so a
name passed to backend.get_function always matches one of name_expressions
exactly (CuPy's RawModule looks names up verbatim).
"""
from __future__ import annotations

import numpy as np

CTYPES = {
    np.dtype(np.float16): "__half",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.complex64): "cfloat",
    np.dtype(np.complex128): "cdouble",
    np.dtype(np.int32): "int",
    np.dtype(np.int64): "long long",
}

REAL = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
COMPLEX = (np.dtype(np.complex64), np.dtype(np.complex128))
INTS = (np.dtype(np.int32), np.dtype(np.int64))

ACT_CODES = (0, 1, 2, 3, 4)   # gpuconv.activations.ACTIVATION_CODES values


def ctype(dtype) -> str:
    dt = np.dtype(dtype)
    try:
        return CTYPES[dt]
    except KeyError:
        raise TypeError(f"no CUDA kernel type for dtype {dt}") from None


def expr(kernel: str, *targs) -> str:
    """'conv_direct', 'float', 1 -> 'conv_direct<float, 1>'."""
    return f"{kernel}<{', '.join(str(a) for a in targs)}>"
