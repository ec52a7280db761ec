"""kernels_cu/conv2d_depthwise.cu: one input channel per group, plane tiles with their
halo in shared memory, 3x3/5x5 taps in registers (variant "depthwise")."""
from __future__ import annotations

from .._types import ACT_CODES, REAL, ctype, expr
from ..launch import INT32_MAX, SMEM_LIMIT, Variant, bias_args, geometry, geometry_args
from ...spec import ConvSpec

MODULE = "conv2d_depthwise.cu"
# name -> (TP, TQ, QPT, planes per block): see the header of kernels_cu/conv2d_depthwise.cu.
# 256 threads per block either way: 8 warps keep enough loads in flight per SM for a
# memory-bound kernel at ~40 registers (an estimate: 128 vs 256 threads is to be measured).
TILES = {
    "large": (8, 32, 4, 4),
    "small": (8, 8, 2, 8),
}
KS = (3, 5, 0)        # 3x3 and 5x5 with taps in registers; 0: any R, S


def kernel_name(tile: str, ks: int, dtype, act: int) -> str:
    TP, TQ, QPT, _ = TILES[tile]
    return expr("conv2d_depthwise", ctype(dtype), act, TP, TQ, QPT, ks)


INSTANTIATIONS = tuple(kernel_name(t, ks, dt, a) for t in TILES for ks in KS for dt in REAL
                       for a in ACT_CODES)
SOURCES = {MODULE: INSTANTIATIONS}


def filter_size(spec: ConvSpec) -> int:
    """The KS specialisation: R when R = S is 3 or 5, else 0 (any R, S)."""
    g = geometry(spec)
    return g.R if (g.R == g.S and g.R in KS) else 0


def smem_bytes(tile: str, spec: ConvSpec, planes: int) -> int:
    TP, TQ, _, _ = TILES[tile]
    g = geometry(spec)
    ih = (TP - 1) * g.sh + (g.R - 1) * g.dh + 1
    iw = (TQ - 1) * g.sw + (g.S - 1) * g.dw + 1
    taps = g.R * g.S if filter_size(spec) == 0 else 0
    return spec.dtype.itemsize * planes * (ih * iw + taps)


def tile_util(tile: str, spec: ConvSpec) -> float:
    TP, TQ, _, _ = TILES[tile]
    g = geometry(spec)
    return (g.P / (-(-g.P // TP) * TP)) * (g.Q / (-(-g.Q // TQ) * TQ))


def planes_per_block(tile: str, spec: ConvSpec) -> int:
    planes = TILES[tile][3]
    while planes > 1 and smem_bytes(tile, spec, planes) > SMEM_LIMIT:
        planes //= 2
    return planes


def config(spec: ConvSpec) -> dict:
    """The tile with the better output utilisation (large on ties: fewer halo re-reads),
    and the most planes per block (up to the tile's default) that fit shared memory."""
    tile = "large" if tile_util("large", spec) >= tile_util("small", spec) else "small"
    return {"tile": tile, "planes": planes_per_block(tile, spec)}


def grid(tile: str, spec: ConvSpec, planes: int):
    TP, TQ, QPT, _ = TILES[tile]
    g = geometry(spec)
    nplanes = spec.n * spec.k
    nblocks = (-(-g.P // TP)) * (-(-g.Q // TQ)) * (-(-nplanes // planes))
    return (nblocks, 1, 1), (TQ // QPT, TP, planes)


def supports(spec: ConvSpec):
    if spec.dtype not in REAL:
        return False, f"dtype {spec.dtype} (depthwise is real-only)"
    if spec.nd not in (1, 2):
        return False, f"{spec.nd}-D convolution (the depthwise kernel is 2-D; 1-D runs as H=1)"
    if spec.c_per_group != 1:
        return False, f"C/groups = {spec.c_per_group} (depthwise needs one input channel per group)"
    for tile in TILES:
        smem = smem_bytes(tile, spec, 1)
        if smem > SMEM_LIMIT:
            return False, (f"one plane's input tile with its halo needs {smem} B of shared memory "
                           f"(> {SMEM_LIMIT}): kernel/dilation/stride too large")
    (gx, _, _), _ = grid("small", spec, 1)
    if gx > INT32_MAX:
        return False, f"grid of {gx} blocks exceeds the launch limit (2^31-1)"
    return True, "one input channel per group (any depth multiplier), 2-D/1-D real, tile fits"


def launch(backend, x, w, b, y, spec, act, config_):
    geo = geometry_args(spec)
    tile = config_.get("tile") or config(spec)["tile"]
    planes = int(config_.get("planes") or planes_per_block(tile, spec))
    smem = smem_bytes(tile, spec, planes)
    if smem > SMEM_LIMIT:
        raise ValueError(f"depthwise tile {tile!r} with {planes} planes needs {smem} B of shared "
                         f"memory (> {SMEM_LIMIT})")
    grid_, block = grid(tile, spec, planes)
    fn = backend.get_function(MODULE, INSTANTIATIONS, kernel_name(tile, filter_size(spec), spec.dtype, act))
    bias, has_bias = bias_args(b, w)
    fn(grid_, block, (x, w, bias, y, *geo, has_bias), shared_mem=smem)


VARIANTS = (Variant(
    name="depthwise", module=MODULE, instantiations=INSTANTIATIONS,
    summary=("one input channel per group: a plane's input tile + halo in shared memory, "
             "2-4 outputs per thread along a row, 3x3/5x5 taps in registers"),
    supports=supports,
    default_config=lambda spec, facts: config(spec),
    workspace_bytes=lambda spec, config_: 0,
    launch=launch),)
