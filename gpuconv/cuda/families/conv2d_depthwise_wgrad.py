"""kernels_cu/conv2d_depthwise_wgrad.cu: the weight gradient of a depthwise convolution,
a fixed-order reduction per (channel, split) and the splits summed in order by
conv_wgrad.cu's conv_wgrad_reduce (bit-identical run to run; routed from
gpuconv/cuda/wgrad.py).

    supports(spec) -> (ok, reason)
    plan(spec) -> dict                  tile, planes, splits, chunk: a function of the spec alone
    launch(backend, x, dy, dw, spec)
"""
from __future__ import annotations

from .._types import REAL, ctype, expr
from ..launch import GRID_YZ_MAX, I32, I64, INT32_MAX, SMEM_LIMIT, blocks, geometry, geometry_args
from ...spec import ConvSpec
from . import conv2d_depthwise as fwd
from . import conv_wgrad

MODULE = "conv2d_depthwise_wgrad.cu"
TILES = fwd.TILES                    # (TP, TQ, QPT, planes): the forward kernel's tiles
KS = (3, 5, 0)
MAX_TAPS = 256                       # KS = 0: per-warp tap sums in shared memory
# Blocks to aim for: 4 per SM of a 132-SM H100/H200 (an estimate, MEASURE).  A constant, not
# the device's SM count, so the split -- and every rounding -- is the same on any GPU.
TARGET_BLOCKS = 4 * 132
REDUCE_THREADS = 256


def kernel_name(tile: str, ks: int, dtype) -> str:
    TP, TQ, QPT, _ = TILES[tile]
    return expr("conv2d_depthwise_wgrad", ctype(dtype), TP, TQ, QPT, ks)


INSTANTIATIONS = tuple(kernel_name(t, ks, dt) for t in TILES for ks in KS for dt in REAL)
SOURCES = {MODULE: INSTANTIATIONS}


def accumulator_itemsize(spec: ConvSpec) -> int:
    return 8 if spec.dtype.itemsize == 8 else 4


def smem_bytes(tile: str, spec: ConvSpec, planes: int) -> int:
    TP, TQ, QPT, _ = TILES[tile]
    g = geometry(spec)
    ih = (TP - 1) * g.sh + (g.R - 1) * g.dh + 1
    iw = (TQ - 1) * g.sw + (g.S - 1) * g.dw + 1
    per_plane = ih * (iw | 1) + TP * (TQ + 1)
    warps = planes * (TQ // QPT) * TP // 32
    return accumulator_itemsize(spec) * warps * g.R * g.S + spec.dtype.itemsize * planes * per_plane


def _min_planes(tile: str) -> int:
    """Fewest planes per block that make whole warps (the shuffle sums need 32 lanes)."""
    TP, TQ, QPT, _ = TILES[tile]
    return max(1, 32 // ((TQ // QPT) * TP))


def plan(spec: ConvSpec) -> dict:
    """tile (the forward cost model on the dy map), planes per block, splits and chunk
    (images per split): a pure function of the spec."""
    tile = fwd.config(spec)["tile"]
    n, k = spec.n, spec.k
    splits = max(1, min(-(-TARGET_BLOCKS // max(1, k)), n, GRID_YZ_MAX))
    chunk = -(-n // splits) if n else 1
    splits = max(1, -(-n // chunk)) if n else 1
    # planes per block: the tile's default, halved while shared memory overflows or half of
    # them would still cover a split's images, down to whole warps
    planes = TILES[tile][3]
    while planes > _min_planes(tile) and (smem_bytes(tile, spec, planes) > SMEM_LIMIT
                                          or planes // 2 >= chunk):
        planes //= 2
    return dict(tile=tile, planes=planes, splits=splits, chunk=chunk,
                grid=(k, splits, 1), block=(TILES[tile][1] // TILES[tile][2], TILES[tile][0], planes))


def supports(spec: ConvSpec) -> tuple[bool, str]:
    ok, why = fwd.supports(spec)
    if not ok:
        return ok, why
    g = geometry(spec)
    if fwd.filter_size(spec) == 0 and g.R * g.S > MAX_TAPS:
        return False, f"{g.R}x{g.S} = {g.R * g.S} taps > {MAX_TAPS} (per-warp tap sums in shared memory)"
    p = plan(spec)
    if smem_bytes(p["tile"], spec, p["planes"]) > SMEM_LIMIT:
        return False, "the x and dy tiles of one block exceed shared memory"
    if spec.k > INT32_MAX or spec.n * spec.c * g.H * g.W > 2**62:
        return False, "channel count exceeds the grid"
    return True, "depthwise weight gradient (fixed-order split reduction)"


def workspace_bytes(spec: ConvSpec) -> int:
    g = geometry(spec)
    return accumulator_itemsize(spec) * plan(spec)["splits"] * spec.k * g.R * g.S


def launch(backend, x, dy, dw, spec: ConvSpec):
    """x (spec.input_shape), dy (spec.output_shape), dw (spec.weight_shape): C-contiguous;
    dw is written in full (zeros for an empty batch)."""
    ok, why = supports(spec)
    if not ok:
        raise ValueError(f"depthwise weight-gradient kernel refuses the spec: {why}")
    xp = backend.xp
    if spec.n == 0 or 0 in spec.out_size:
        dw[...] = 0
        return
    g = geometry(spec)
    p = plan(spec)
    total = spec.k * g.R * g.S
    ws = xp.empty(p["splits"] * total, dtype=conv_wgrad.accumulator_dtype(spec))
    fn = backend.get_function(MODULE, INSTANTIATIONS, kernel_name(p["tile"], fwd.filter_size(spec), spec.dtype))
    fn(p["grid"], p["block"], (x, dy, ws, *geometry_args(spec), I32(p["chunk"])),
       shared_mem=smem_bytes(p["tile"], spec, p["planes"]))
    f_red = backend.get_function(conv_wgrad.MODULE, conv_wgrad.INSTANTIATIONS, conv_wgrad.reduce_name(spec.dtype))
    f_red((blocks(total, REDUCE_THREADS),), (REDUCE_THREADS,),
          (ws, dw.reshape(-1), I64(total), I32(p["splits"])))


VARIANTS = ()
