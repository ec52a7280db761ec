"""kernels_cu/conv_wgrad.cu: the weight gradient of a 1-D/2-D forward convolution, a
fixed-order split reduction (deterministic) or atomics.

    plan(spec) -> dict                  tile, grid, splits, chunk: a function of the spec alone
    launch(backend, x, dy, dw, spec, deterministic)
"""
from __future__ import annotations

import math

import numpy as np

from .._types import REAL, ctype, expr
from ..launch import GRID_YZ_MAX, I32, I64, INT32_MAX, blocks, geometry_args
from ...spec import ConvSpec

MODULE = "conv_wgrad.cu"
TILES = {"wide": (4, 8), "narrow": (1, 16)}     # (TK, TJ), see kernels_cu/conv_wgrad.cu
MODES = {True: 0, False: 1}                     # deterministic -> MODE
THREADS = 128                 # conv_wgrad's NT
REDUCE_THREADS = 256
# Blocks to aim for: 4 per SM of a 132-SM H100 (an estimate, to be measured).  A constant,
# not the device's SM count, so that the split -- and with it every rounding -- is the
# same on any GPU.
TARGET_BLOCKS = 4 * 132
# Fewest positions per split: 16 per thread keeps the loop longer than the block's tree
# reduction (7 levels x TK*TJ adds) and its partial write (an estimate, to be measured).
MIN_CHUNK = 16 * THREADS
MAX_SPLITS = 4096             # grid.z <= 65535; more splits only grow the workspace


def kernel_name(dtype, tile: str, deterministic: bool) -> str:
    return expr("conv_wgrad", ctype(dtype), *TILES[tile], MODES[bool(deterministic)])


def reduce_name(dtype) -> str:
    return expr("conv_wgrad_reduce", ctype(dtype))


INSTANTIATIONS = (tuple(kernel_name(dt, t, d) for t in TILES for d in (True, False) for dt in REAL)
                  + tuple(reduce_name(dt) for dt in REAL))
SOURCES = {MODULE: INSTANTIATIONS}
VARIANTS = ()


def tile(spec: ConvSpec) -> str:
    """'narrow' (1 k x 16 taps) when a group has fewer than 4 output channels (depthwise:
    Kg = m), else 'wide' (4 k x 8 (c, r, s))."""
    return "narrow" if spec.k_per_group < 4 else "wide"


def plan(spec: ConvSpec) -> dict:
    """tile, grid, splits and chunk: a pure function of the spec."""
    t = tile(spec)
    TK, TJ = TILES[t]
    J = spec.c_per_group * math.prod(spec.kernel)
    gx = -(-J // TJ)
    gy = spec.groups * (-(-spec.k_per_group // TK))
    L = spec.n * math.prod(spec.out_size)
    splits = max(1, min(-(-TARGET_BLOCKS // max(1, gx * gy)), -(-L // MIN_CHUNK), MAX_SPLITS))
    chunk = -(-L // splits) if L else 1
    splits = max(1, -(-L // chunk)) if L else 1
    return dict(tile=t, grid=(gx, gy, splits), splits=splits, chunk=chunk, J=J, L=L)


def supports(spec: ConvSpec) -> tuple[bool, str]:
    if spec.dtype not in REAL:
        return False, f"dtype {spec.dtype} (the weight-gradient kernel is real-only)"
    if spec.nd not in (1, 2):
        return False, f"{spec.nd}-D convolution (the weight-gradient kernel is 2-D; 1-D runs as H=1)"
    gx, gy, _ = plan(spec)["grid"]
    if gx > INT32_MAX or gy > GRID_YZ_MAX:
        return False, f"grid ({gx}, {gy}) exceeds the launch limits (2^31-1, 65535)"
    if spec.c_per_group * math.prod(spec.kernel) > INT32_MAX or spec.k > INT32_MAX:
        return False, "K or C/groups*taps exceed 32 bits"
    return True, "real 1-D/2-D weight gradient"


def accumulator_dtype(spec: ConvSpec):
    return np.dtype(np.float64 if spec.dtype == np.float64 else np.float32)


def workspace_bytes(spec: ConvSpec, deterministic: bool = True) -> int:
    p = plan(spec)
    return accumulator_dtype(spec).itemsize * spec.k * p["J"] * (p["splits"] if deterministic else 1)


def launch(backend, x, dy, dw, spec: ConvSpec, deterministic: bool):
    """x (spec.input_shape), dy (spec.output_shape), dw (spec.weight_shape): C-contiguous;
    dw is written in full (zeros for an empty batch)."""
    ok, why = supports(spec)
    if not ok:
        raise ValueError(f"weight-gradient kernel refuses the spec: {why}")
    xp = backend.xp
    p = plan(spec)
    if p["L"] == 0:                       # empty batch: a sum over nothing
        dw[...] = 0
        return
    geo = geometry_args(spec)
    deterministic = bool(deterministic)
    total = spec.k * p["J"]
    splits = p["splits"] if deterministic else 1
    ws = (xp.empty if deterministic else xp.zeros)(splits * total, dtype=accumulator_dtype(spec))
    fn = backend.get_function(MODULE, INSTANTIATIONS, kernel_name(spec.dtype, p["tile"], deterministic))
    fn(p["grid"], (THREADS,), (x, dy, ws, *geo, I64(p["chunk"])))
    f_red = backend.get_function(MODULE, INSTANTIATIONS, reduce_name(spec.dtype))
    f_red((blocks(total, REDUCE_THREADS),), (REDUCE_THREADS,), (ws, dw.reshape(-1), I64(total), I32(splits)))
