"""kernels_cu/conv2d_depthwise.cu: one input channel per group, plane tiles with their
halo in shared memory, 3x3/5x5 taps in registers, 8 outputs per thread (variant
"depthwise"); the same kernel body computes the data gradient (`launch_dgrad`, routed
from gpuconv/cuda/transpose.py) and kernels_cu/conv2d_depthwise_wgrad.cu the weight
gradient (gpuconv/cuda/families/conv2d_depthwise_wgrad.py)."""
from __future__ import annotations

import numpy as np

from .._types import ACT_CODES, REAL, ctype, expr
from ..launch import GRID_YZ_MAX, INT32_MAX, SMEM_LIMIT, Variant, bias_args, geometry, geometry_args
from ...spec import ConvSpec

MODULE = "conv2d_depthwise.cu"
# name -> (TP, TQ, QPT, planes per block): see the header of kernels_cu/conv2d_depthwise.cu.
# 256 threads per block either way: 8 warps keep enough loads in flight per SM for a
# memory-bound kernel (an estimate: 128 vs 256 threads is to be measured).
TILES = {
    "large": (16, 32, 8, 4),
    "small": (8, 8, 8, 32),
}
# float16: the large tile's 16x32 outputs as 16 per thread (blockDim (2, 16, 8)): the ~200
# setup instructions per thread are shared by 16 outputs, not 8 (3x3 stride 1: est. ~36-41
# instructions per output instead of ~56-66, SASS figures in the kernel header), at 64
# registers (a launch bound) and 4 resident blocks as before.  The small tile keeps 8 outputs
# per thread (an 8x16 tile would waste more of the 7x7 and 14x14 maps it is picked for).
# The cost model below prices the fp16 large tile's output slot at ~30 instructions
# (INSTR_PER_SLOT_F16_LARGE), the small tile's at fp32's ~44.
TILES_F16 = {
    "large": (16, 32, 16, 8),
    "small": (8, 8, 8, 32),
}


def tiles(dtype) -> dict:
    """(TP, TQ, QPT, planes per block) per tile name for `dtype`."""
    return TILES_F16 if np.dtype(dtype).itemsize == 2 else TILES


KS = (3, 5, 0)        # 3x3 and 5x5 with taps in registers; 0: any R, S

# Tile cost model (thread-instructions per useful output; from the SASS in the kernel
# header, sm_90 fp32, MEASURE on a GPU): every output slot of a launched tile costs ~44 (the
# stride-1 path's 355 instructions per thread -- setup, 72 FFMA, 30 LDS, epilogue, two
# 16-byte stores -- over 8 outputs, spent whether the slot is inside the map or not), every
# staged input element ~9 (the staging loop: 35 instructions per 4 elements) and an L2 read.
# DRAM bytes are the same for every tile (input + output once), so at a fixed byte count
# the tile with fewer instructions per output is closer to the copy bandwidth (the kernel
# is issue-bound above ~55 instructions per fp32 stride-1 output at 4.8 TB/s, header).
INSTR_PER_SLOT = 44
# float16 on the large tile (16 outputs per thread; header SASS: 35.8 instructions per output
# on the MobileNet path including ~1.2 staged elements of ~4.5): ~30 per slot.  MEASURE.
INSTR_PER_SLOT_F16_LARGE = 30
INSTR_PER_STAGED = 9


def kernel_name(tile: str, ks: int, dtype, act: int, dgrad: bool = False) -> str:
    TP, TQ, QPT, _ = tiles(dtype)[tile]
    return expr("conv2d_depthwise", ctype(dtype), act, TP, TQ, QPT, ks, int(bool(dgrad)))


# The data gradient is instantiated without activations (a gradient has none; a transposed
# convolution with an activation runs on the generic gather kernel, conv_transpose.cu).
INSTANTIATIONS = (tuple(kernel_name(t, ks, dt, a) for t in TILES for ks in KS for dt in REAL
                        for a in ACT_CODES)
                  + tuple(kernel_name(t, ks, dt, 0, True) for t in TILES for ks in KS for dt in REAL))
SOURCES = {MODULE: INSTANTIATIONS}


def filter_size(spec: ConvSpec) -> int:
    """The KS specialisation: R when R = S is 3 or 5, else 0 (any R, S)."""
    g = geometry(spec)
    return g.R if (g.R == g.S and g.R in KS) else 0


def _pitch(n: int, itemsize: int) -> int:
    """dw_pitch<T> of the kernel (staged elements of num<T>::acc: fp16 stages float rows of
    4 mod 8 words, float and double odd words)."""
    return n + ((4 - n) & 7) if itemsize == 2 else (n | 1)


def _plane_stride(rows: int, pitch: int, itemsize: int) -> int:
    """dw_plane_stride<T> of the kernel (staged elements)."""
    e = rows * pitch
    if itemsize == 8:
        return e + ((8 - e) & 15)
    return e + ((8 - e) & 31)


def staged_tile(tile: str, spec: ConvSpec, dgrad: bool = False) -> tuple[int, int]:
    """(IH, IW): the input rows and columns one plane tile stages (the data gradient runs
    at stride 1 over dy upsampled by the stride)."""
    TP, TQ, _, _ = tiles(spec.dtype)[tile]
    g = geometry(spec)
    sh, sw = (1, 1) if dgrad else (g.sh, g.sw)
    return (TP - 1) * sh + (g.R - 1) * g.dh + 1, (TQ - 1) * sw + (g.S - 1) * g.dw + 1


def smem_bytes(tile: str, spec: ConvSpec, planes: int, dgrad: bool = False) -> int:
    ih, iw = staged_tile(tile, spec, dgrad)
    it = spec.dtype.itemsize
    ps = _plane_stride(ih, _pitch(iw, it), it)
    g = geometry(spec)
    staged = max(it, 4)                 # fp16 is staged as float (num<T>::acc)
    return staged * planes * (ps + (g.R * g.S if filter_size(spec) == 0 else 0))


def _out_hw(spec: ConvSpec, dgrad: bool) -> tuple[int, int]:
    g = geometry(spec)
    return (g.H, g.W) if dgrad else (g.P, g.Q)


def tile_cost(tile: str, spec: ConvSpec, dgrad: bool = False) -> float:
    """Estimated thread-instructions per useful output (INSTR_PER_* above)."""
    TP, TQ, _, _ = tiles(spec.dtype)[tile]
    P, Q = _out_hw(spec, dgrad)
    nt = -(-P // TP) * -(-Q // TQ)
    ih, iw = staged_tile(tile, spec, dgrad)
    slot = INSTR_PER_SLOT_F16_LARGE if (tile == "large" and spec.dtype.itemsize == 2) else INSTR_PER_SLOT
    return (slot * nt * TP * TQ + INSTR_PER_STAGED * nt * ih * iw) / max(1, P * Q)


def planes_per_block(tile: str, spec: ConvSpec, dgrad: bool = False) -> int:
    planes = tiles(spec.dtype)[tile][3]
    while planes > 1 and smem_bytes(tile, spec, planes, dgrad) > SMEM_LIMIT:
        planes //= 2
    return planes


def config(spec: ConvSpec, dgrad: bool = False) -> dict:
    """The tile of lower estimated cost per output (large on ties: fewer blocks), and the
    most planes per block (up to the tile's default) that fit shared memory."""
    fits = [t for t in TILES if smem_bytes(t, spec, 1, dgrad) <= SMEM_LIMIT] or list(TILES)
    tile = min(fits, key=lambda t: (tile_cost(t, spec, dgrad), t != "large"))
    return {"tile": tile, "planes": planes_per_block(tile, spec, dgrad)}


# Registers per thread, forward / data gradient, by element size and filter specialisation
# KS (ptxas -v, sm_90, nvcc 13, ACT 0: `gpuconv kernels --arch sm_90 --module
# conv2d_depthwise.cu`; sm_80 within a few).  The occupancy estimate's register limit: at
# 256 threads per block, 64 registers allow 4 blocks per SM, 80 3, 96-128 2, 153 1.
REGISTERS = {(2, 3): (64, 80), (2, 5): (64, 80), (2, 0): (64, 80),
             (4, 3): (64, 80), (4, 5): (96, 80), (4, 0): (80, 80),
             (8, 3): (112, 125), (8, 5): (153, 128), (8, 0): (120, 123)}


def registers(spec: ConvSpec, dgrad: bool = False) -> int:
    """ptxas's registers per thread of the kernel that runs spec (REGISTERS)."""
    return REGISTERS[(spec.dtype.itemsize, filter_size(spec))][int(bool(dgrad))]


def grid(tile: str, spec: ConvSpec, planes: int, dgrad: bool = False):
    TP, TQ, QPT, _ = tiles(spec.dtype)[tile]
    P, Q = _out_hw(spec, dgrad)
    nplanes = spec.n * (spec.c if dgrad else spec.k)
    return ((-(-nplanes // planes), -(-P // TP), -(-Q // TQ)), (TQ // QPT, TP, planes))


def _supports(spec: ConvSpec, dgrad: bool):
    if spec.dtype not in REAL:
        return False, f"dtype {spec.dtype} (depthwise is real-only)"
    if spec.nd not in (1, 2):
        return False, f"{spec.nd}-D convolution (the depthwise kernel is 2-D; 1-D runs as H=1)"
    if spec.c_per_group != 1:
        return False, f"C/groups = {spec.c_per_group} (depthwise needs one input channel per group)"
    if not any(smem_bytes(t, spec, 1, dgrad) <= SMEM_LIMIT for t in TILES):
        smem = min(smem_bytes(t, spec, 1, dgrad) for t in TILES)
        return False, (f"one plane's input tile with its halo needs {smem} B of shared memory "
                       f"(> {SMEM_LIMIT}): kernel/dilation/stride too large")
    if spec.n * spec.k + max(t[3] for d in (TILES, TILES_F16) for t in d.values()) > INT32_MAX:
        return False, f"N*K = {spec.n * spec.k} planes exceed the kernel's 32-bit plane index"
    (_, gy, gz), _ = grid("small", spec, 1, dgrad)
    if gy > GRID_YZ_MAX or gz > GRID_YZ_MAX:
        return False, f"tile grid ({gy}, {gz}) exceeds the launch limit 65535 on grid y/z"
    return True, "one input channel per group (any depth multiplier), 2-D/1-D real, tile fits"


def supports(spec: ConvSpec):
    return _supports(spec, False)


def dgrad_supports(spec: ConvSpec):
    """The data gradient (= transposed convolution) of the forward `spec` on this kernel."""
    return _supports(spec, True)


def _launch(backend, x, w, b, y, spec, act, config_, dgrad):
    geo = geometry_args(spec)
    tile = config_.get("tile") or config(spec, dgrad)["tile"]
    planes = int(config_.get("planes") or planes_per_block(tile, spec, dgrad))
    smem = smem_bytes(tile, spec, planes, dgrad)
    if smem > SMEM_LIMIT:
        raise ValueError(f"depthwise tile {tile!r} with {planes} planes needs {smem} B of shared "
                         f"memory (> {SMEM_LIMIT})")
    grid_, block = grid(tile, spec, planes, dgrad)
    fn = backend.get_function(MODULE, INSTANTIATIONS,
                              kernel_name(tile, filter_size(spec), spec.dtype, act, dgrad))
    bias, has_bias = bias_args(b, w)
    fn(grid_, block, (x, w, bias, y, *geo, has_bias), shared_mem=smem)


def launch(backend, x, w, b, y, spec, act, config_):
    _launch(backend, x, w, b, y, spec, act, config_, False)


def launch_dgrad(backend, dy, w, b, dx, spec, config_=None):
    """dx (spec.input_shape) = the data gradient of the forward `spec` from dy
    (spec.output_shape) and w (spec.weight_shape), plus b (spec.c,) when given."""
    _launch(backend, dy, w, b, dx, spec, 0, dict(config_ or {}), True)


VARIANTS = (Variant(
    name="depthwise", module=MODULE, instantiations=INSTANTIATIONS,
    summary=("one input channel per group: a plane's input tile + halo in shared memory, "
             "8 outputs per thread along a row, 3x3/5x5 taps in registers"),
    supports=supports,
    default_config=lambda spec, facts: config(spec),
    workspace_bytes=lambda spec, config_: 0,
    launch=launch,
    padding_modes=True),)
