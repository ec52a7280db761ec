"""kernels_cu/mma_check.cu: one-warp self-test kernels of the mma.cuh wrappers
(tests/test_kernels_tc.py).  Not a variant: compiled and checked with the kernels and
built by the simulator."""
from __future__ import annotations

from .._types import expr

MODULE = "mma_check.cu"
INSTANTIATIONS = (
    tuple(expr("mma_check", k) for k in (0, 1, 2))
    + tuple(expr("ldmatrix_check", t) for t in (0, 1))
    + tuple(expr("cp_async_check", n) for n in (1, 3))
    + ("tf32_round_check",))
SOURCES = {MODULE: INSTANTIATIONS}
VARIANTS = ()
