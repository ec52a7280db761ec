"""Weight gradient of a forward convolution on a device backend (kernels_cu/conv_wgrad.cu).

    forward(x, dy, spec, deterministic=True, backend=None, out=None) -> dW (spec.weight_shape)

x: the forward input (spec.input_shape); dy: the gradient of its output
(spec.output_shape); spec: the forward ConvSpec (1-D or 2-D; `wgrad_supports` names
what is refused, e.g. 3-D, so callers can fall back).

deterministic=True (default): each block reduces a fixed chunk of the N*P*Q positions in
a fixed order and writes its own partial slice; a second kernel sums the slices in
ascending order.  The split count is a function of the spec alone (not of the device),
so the result is bit-identical from run to run and GPU to GPU.
deterministic=False: blocks atomicAdd their sums into one accumulator buffer (less
workspace; float addition order then follows the scheduler).
Float16 accumulates in float32, float32 in float32, float64 in float64.
"""
from __future__ import annotations

import math

import numpy as np

from ..spec import ConvSpec
from ._types import REAL
from .backend import default_backend
from .conv import check_array, output_array
from .launchers import GRID_Y_MAX, I32, I64, INT32_MAX, _blocks, _geom2
from .ops_modules import (WGRAD_INSTANTIATIONS, WGRAD_MODULE, WGRAD_TILES, wgrad_name,
                          wgrad_reduce_name)

THREADS = 128                 # conv_wgrad's NT
REDUCE_THREADS = 256
# MEASURE. Blocks to aim for: 4 per SM of a 132-SM H100.  A constant, not the device's
# SM count, so that the split -- and with it every rounding -- is the same on any GPU.
TARGET_BLOCKS = 4 * 132
# MEASURE. Fewest positions per split: 16 per thread keeps the loop longer than the
# block's tree reduction (7 levels x TK*TJ adds) and its partial write.
MIN_CHUNK = 16 * THREADS
MAX_SPLITS = 4096             # grid.z <= 65535; more splits only grow the workspace


def wgrad_tile(spec: ConvSpec) -> str:
    """'narrow' (1 k x 16 taps) when a group has fewer than 4 output channels (depthwise:
    Kg = m), else 'wide' (4 k x 8 (c, r, s))."""
    return "narrow" if spec.k_per_group < 4 else "wide"


def wgrad_plan(spec: ConvSpec) -> dict:
    """tile, grid, splits and chunk: a pure function of the spec."""
    tile = wgrad_tile(spec)
    TK, TJ = WGRAD_TILES[tile]
    J = spec.c_per_group * math.prod(spec.kernel)
    gx = -(-J // TJ)
    gy = spec.groups * (-(-spec.k_per_group // TK))
    L = spec.n * math.prod(spec.out_size)
    splits = max(1, min(-(-TARGET_BLOCKS // max(1, gx * gy)), -(-L // MIN_CHUNK), MAX_SPLITS))
    chunk = -(-L // splits) if L else 1
    splits = max(1, -(-L // chunk)) if L else 1
    return dict(tile=tile, grid=(gx, gy, splits), splits=splits, chunk=chunk, J=J, L=L)


def wgrad_supports(spec: ConvSpec) -> tuple[bool, str]:
    if spec.dtype not in REAL:
        return False, f"dtype {spec.dtype} (the weight-gradient kernel is real-only)"
    if spec.nd not in (1, 2):
        return False, f"{spec.nd}-D convolution (the weight-gradient kernel is 2-D; 1-D runs as H=1)"
    plan = wgrad_plan(spec)
    gx, gy, _ = plan["grid"]
    if gx > INT32_MAX or gy > GRID_Y_MAX:
        return False, f"grid ({gx}, {gy}) exceeds the launch limits (2^31-1, 65535)"
    if spec.c_per_group * math.prod(spec.kernel) > INT32_MAX or spec.k > INT32_MAX:
        return False, "K or C/groups*taps exceed 32 bits"
    return True, "real 1-D/2-D weight gradient"


def workspace_bytes(spec: ConvSpec, deterministic: bool = True) -> int:
    acc = 8 if spec.dtype == np.float64 else 4
    plan = wgrad_plan(spec)
    return acc * spec.k * plan["J"] * (plan["splits"] if deterministic else 1)


def forward(x, dy, spec: ConvSpec, deterministic=True, backend=None, out=None):
    backend = default_backend() if backend is None else backend
    xp = backend.xp
    check_array("input", x, spec.input_shape, spec.dtype)
    check_array("grad_output", dy, spec.output_shape, spec.dtype)
    dw = output_array(xp, out, spec.weight_shape, spec.dtype)
    if dw.size == 0:
        return dw
    ok, why = wgrad_supports(spec)
    if not ok:
        raise ValueError(f"weight-gradient kernel refuses the spec: {why}")
    plan = wgrad_plan(spec)
    acc_dt = np.float64 if spec.dtype == np.float64 else np.float32
    total = spec.k * plan["J"]
    f_red = backend.get_function(WGRAD_MODULE, WGRAD_INSTANTIATIONS, wgrad_reduce_name(spec.dtype))
    if plan["L"] == 0:                    # empty batch: a sum over nothing
        dw[...] = 0
        return dw
    deterministic = bool(deterministic)
    ws = (xp.empty if deterministic else xp.zeros)(
        (plan["splits"] if deterministic else 1) * total, dtype=acc_dt)
    H, W, R, S, P, Q, sh, sw, ph, pw, dh, dw_ = _geom2(spec)
    fn = backend.get_function(WGRAD_MODULE, WGRAD_INSTANTIATIONS,
                              wgrad_name(spec.dtype, plan["tile"], deterministic))
    x = xp.ascontiguousarray(x)
    dy = xp.ascontiguousarray(dy)
    fn(plan["grid"], (THREADS,),
       (x, dy, ws, I32(spec.n), I32(spec.c), I32(H), I32(W), I32(spec.k), I32(R), I32(S), I32(P),
        I32(Q), I32(sh), I32(sw), I32(ph), I32(pw), I32(dh), I32(dw_), I32(spec.groups),
        I64(plan["chunk"])))
    f_red((_blocks(total, REDUCE_THREADS),), (REDUCE_THREADS,),
          (ws, dw.reshape(-1), I64(total), I32(plan["splits"] if deterministic else 1)))
    return dw
