"""kernels_cu/conv2d_tiled_smem.cu: an output tile per block with its input halo and a
filter slice in shared memory (variants "tiled_smem" and "tiled_smem_small")."""
from __future__ import annotations

from .._types import ACT_CODES, REAL, ctype, expr
from ..launch import (GRID_YZ_MAX, INT32_MAX, I32, SMEM_LIMIT, Variant, bias_args, geometry,
                      geometry_args)
from ...spec import ConvSpec

MODULE = "conv2d_tiled_smem.cu"
# name -> (TP, TQ, TK, QPT, KPT): see the header of kernels_cu/conv2d_tiled_smem.cu
TILES = {
    "tiled_smem": (8, 16, 32, 4, 8),
    "tiled_smem_small": (4, 8, 32, 2, 8),
}
# Input channels per stage: 16 halves the barriers of 8 and still fits 3x3 (30.5 KB fp32)
# with room for 2+ blocks/SM in 228 KB.
CT_MAX = 16


def kernel_name(tile, dtype, act: int, pm: int = 0) -> str:
    """pm = 1: conv2d_tiled_smem_pm, which resolves a non-zero padding mode while staging (a
    kernel of its own: the zeros kernel keeps its registers)."""
    return expr("conv2d_tiled_smem_pm" if pm else "conv2d_tiled_smem", ctype(dtype), act, *tile)


INSTANTIATIONS = tuple(kernel_name(t, dt, a, pm) for t in TILES.values() for dt in REAL for a in ACT_CODES
                       for pm in (0, 1))
SOURCES = {MODULE: INSTANTIATIONS}


def row_pitch(cols: int, sh: int) -> int:
    """tiled_pitch of the kernel: the least pitch >= cols with sh*pitch = 4 mod 8 words (an odd
    multiple of 4: a warp's 8 rows x 4 columns of input reads in 32 distinct banks), or cols
    when sh is a multiple of 8.  3x3 s1: 18 -> 20; s2: 34 -> 34; 1x1 s1: 16 -> 20."""
    for p in range(cols, cols + 8):
        if (sh * p) % 8 == 4:
            return p
    return cols


def smem_bytes(tile, spec: ConvSpec, ct: int) -> int:
    TP, TQ, TK, _, _ = tile
    g = geometry(spec)
    ih = (TP - 1) * g.sh + (g.R - 1) * g.dh + 1
    iw = (TQ - 1) * g.sw + (g.S - 1) * g.dw + 1
    pitch = row_pitch(g.sw * -(-iw // g.sw), g.sh)
    return spec.dtype.itemsize * (ct * ih * pitch + ct * g.R * g.S * (TK + 1))


def stage_channels(tile, spec: ConvSpec) -> int:
    """CT: input channels per shared-memory stage, the most up to CT_MAX that fit."""
    ct = max(1, min(CT_MAX, spec.c_per_group))
    while ct > 1 and smem_bytes(tile, spec, ct) > SMEM_LIMIT:
        ct = (ct + 1) // 2
    return ct


def grid(tile, spec: ConvSpec):
    TP, TQ, TK, QPT, KPT = tile
    g = geometry(spec)
    tiles = spec.n * (-(-g.P // TP)) * (-(-g.Q // TQ))
    ky = spec.groups * (-(-spec.k_per_group // TK))
    return (tiles, ky, 1), ((TQ // QPT) * TP * (TK // KPT), 1, 1)


def supports(tile, spec: ConvSpec):
    if spec.dtype not in REAL:
        return False, f"dtype {spec.dtype} (tiled kernels are real-only; complex runs on 'im2col')"
    if spec.nd not in (1, 2):
        return False, f"{spec.nd}-D convolution (tiled kernels are 2-D; 1-D runs as H=1)"
    smem = smem_bytes(tile, spec, 1)
    if smem > SMEM_LIMIT:
        return False, (f"the input tile with its halo and one channel of filter need {smem} B of "
                       f"shared memory (> {SMEM_LIMIT}): kernel/dilation too large")
    (gx, gy, _), _ = grid(tile, spec)
    if gx > INT32_MAX or gy > GRID_YZ_MAX:
        return False, f"grid ({gx}, {gy}) exceeds the launch limits (2^31-1, 65535)"
    return True, "2-D real convolution whose tile fits in shared memory"


def launch(tile, backend, x, w, b, y, spec, act, config):
    geo = geometry_args(spec)
    ct = int(config.get("ct") or stage_channels(tile, spec))
    smem = smem_bytes(tile, spec, ct)
    if smem > SMEM_LIMIT:
        raise ValueError(f"tiled conv with ct={ct} needs {smem} B of shared memory (> {SMEM_LIMIT})")
    grid_, block = grid(tile, spec)
    fn = backend.get_function(MODULE, INSTANTIATIONS,
                              kernel_name(tile, spec.dtype, act, int(spec.padding_mode != "zeros")))
    bias, has_bias = bias_args(b, w)
    fn(grid_, block, (x, w, bias, y, *geo, has_bias, I32(ct)), shared_mem=smem)


def _variant(name: str, tile) -> Variant:
    return Variant(
        name=name, module=MODULE, instantiations=INSTANTIATIONS,
        summary=(f"{tile[0]}x{tile[1]} output tile x {tile[2]} channels per block, input halo "
                 f"and filter in shared memory, {tile[3]}x{tile[4]} outputs per thread"),
        supports=lambda spec: supports(tile, spec),
        default_config=lambda spec, facts: {"ct": stage_channels(tile, spec)},
        workspace_bytes=lambda spec, config: 0,
        launch=lambda backend, x, w, b, y, spec, act, config: launch(tile, backend, x, w, b, y, spec,
                                                                    act, config),
        padding_modes=True)


VARIANTS = tuple(_variant(name, tile) for name, tile in TILES.items())
