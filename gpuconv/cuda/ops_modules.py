"""Instantiation lists of the operation kernels (transposed conv, weight gradient, fused
separable conv): kept apart from their launchers so that the registry (variants.MODULES),
the compile check and the simulator can list them without importing the launchers."""
from __future__ import annotations

from ._types import ACT_CODES, REAL, ctype, expr

TRANSPOSE_MODULE = "conv_transpose.cu"
TRANSPOSE_CPT = (1, 4)          # output channels per thread (see kernels_cu/conv_transpose.cu)


def transpose_name(dtype, act: int, cpt: int) -> str:
    return expr("conv_transpose", ctype(dtype), act, cpt)


TRANSPOSE_INSTANTIATIONS = tuple(transpose_name(dt, a, c) for c in TRANSPOSE_CPT for dt in REAL
                                 for a in ACT_CODES)

WGRAD_MODULE = "conv_wgrad.cu"
WGRAD_TILES = {"wide": (4, 8), "narrow": (1, 16)}     # (TK, TJ), see kernels_cu/conv_wgrad.cu
WGRAD_MODES = {True: 0, False: 1}                     # deterministic -> MODE


def wgrad_name(dtype, tile: str, deterministic: bool) -> str:
    return expr("conv_wgrad", ctype(dtype), *WGRAD_TILES[tile], WGRAD_MODES[bool(deterministic)])


def wgrad_reduce_name(dtype) -> str:
    return expr("conv_wgrad_reduce", ctype(dtype))


WGRAD_INSTANTIATIONS = (tuple(wgrad_name(dt, t, d) for t in WGRAD_TILES for d in (True, False)
                              for dt in REAL)
                        + tuple(wgrad_reduce_name(dt) for dt in REAL))

SEPARABLE_MODULE = "separable_fused.cu"
SEPARABLE_TILE = (4, 8, 4)      # (TP, TQ, KPT), see kernels_cu/separable_fused.cu


def separable_name(dtype, act: int) -> str:
    return expr("separable_fused", ctype(dtype), act, *SEPARABLE_TILE)


SEPARABLE_INSTANTIATIONS = tuple(separable_name(dt, a) for dt in REAL for a in ACT_CODES)

OPS_MODULES: dict[str, tuple[str, ...]] = {
    TRANSPOSE_MODULE: TRANSPOSE_INSTANTIATIONS,
    WGRAD_MODULE: WGRAD_INSTANTIATIONS,
    SEPARABLE_MODULE: SEPARABLE_INSTANTIATIONS,
}
