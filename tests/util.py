"""Test helpers: random arrays that are never zero, per-dtype tolerances, and a
closeness check that names the first mismatching index."""
from __future__ import annotations

import numpy as np

# Relative to max |reference| (errors of a sum scale with its terms, and a
# plain rtol is meaningless next to outputs that cancel to ~0).
TOLERANCE = {
    np.dtype(np.float16): 1e-2,
    np.dtype(np.float32): 1e-5,
    np.dtype(np.float64): 1e-12,
    np.dtype(np.complex64): 1e-5,
    np.dtype(np.complex128): 1e-12,
}
try:                                    # bfloat16 (ml_dtypes): 8 significant bits, like float16's 11
    import ml_dtypes                    # a rounding of 2^-9 relative, computed in float32
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
    TOLERANCE[BFLOAT16] = 1e-2
except ImportError:
    BFLOAT16 = None


def randn(rng, shape, dtype=np.float64):
    """Standard normal data in `dtype` (complex: both parts random)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    else:
        a = rng.standard_normal(shape)
    return a.astype(dtype)


def assert_close(actual, expected, dtype=None, tol=None, what="output"):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    if dtype is not None:
        assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype} != expected {np.dtype(dtype)}"
    if actual.size == 0:
        return
    tol = TOLERANCE[np.dtype(dtype or actual.dtype)] if tol is None else tol
    a = actual.astype(np.complex128 if actual.dtype.kind == "c" else np.float64)
    e = expected.astype(np.complex128 if expected.dtype.kind == "c" else np.float64)
    actual = a if actual.dtype.kind == "V" else actual       # bfloat16 prints as its value
    scale = max(float(np.abs(e).max()), 1e-30)
    err = np.abs(a - e)
    bad = ~(err <= tol * scale)          # NaN (unwritten or poisoned) counts as bad
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements off by more than {tol:g} x max|ref| "
            f"({scale:.3g}); first at {idx}: got {a[idx]!r}, expected {e[idx]!r}; "
            f"max error {np.nanmax(err) / scale:.3g} x max|ref|")
