"""Launchers: grid/block/shared memory and argument lists for every conv variant.

Every launcher has one signature,

    launch(backend, x, w, b, y, spec, act, config) -> None

x (N, C, *in), w (K, C/groups, *kernel), b (K,) or None: C-contiguous arrays of
backend.xp; y: C-contiguous output of spec.output_shape (written in full);
act: activation code (gpuconv.activations.ACTIVATION_CODES); config: the dict
the variant's `default_config` (or the dispatcher) produced.  Scalars go to the
kernels as explicitly typed NumPy scalars (np.int32 for int, np.int64 for long
long): CuPy passes a NumPy scalar with its exact C type, and a Python int would
arrive as a 64-bit value.  No launcher synchronises.
"""
from __future__ import annotations

import math

import numpy as np

from ._types import ACT_CODES, COMPLEX, REAL, ctype, expr
from ..spec import ConvSpec

I32 = np.int32
I64 = np.int64
INT32_MAX = 2**31 - 1
GRID_Y_MAX = 65535
SMEM_LIMIT = 48 * 1024          # default dynamic + static limit without cudaFuncSetAttribute
GRIDSTRIDE_BLOCKS_MAX = 1 << 20  # grid-stride kernels: beyond ~8 blocks/SM x 132 SMs x ~1000 waves the
                                 # launch size buys nothing; the loop covers the rest

# ---------------------------------------------------------------- geometry


def geom3(spec: ConvSpec) -> dict:
    """The spec's geometry as 3-D (depth, height, width): a 2-D spec has depth 1, a 1-D
    spec also height 1 (stride/dilation 1, padding 0 in the added dimensions)."""
    e = 3 - spec.nd
    return dict(
        insz=(1,) * e + tuple(spec.in_size), ker=(1,) * e + tuple(spec.kernel),
        out=(1,) * e + tuple(spec.out_size), stride=(1,) * e + tuple(spec.stride),
        pad=(0,) * e + tuple(lo for lo, _ in spec.pad), dil=(1,) * e + tuple(spec.dilation))


def _bias_args(b, w):
    # a valid pointer is always passed; has_bias tells the kernel whether to read it
    return (w, I32(0)) if b is None else (b, I32(1))


def _blocks(total: int, threads: int) -> int:
    return max(1, min(GRIDSTRIDE_BLOCKS_MAX, -(-total // threads)))


def _check_dims(spec: ConvSpec):
    for name, v in (("N", spec.n), ("C", spec.c), ("K", spec.k)):
        if v > INT32_MAX:
            raise ValueError(f"{name}={v} exceeds the kernels' 32-bit dimension limit")


# ---------------------------------------------------------------- direct

DIRECT_MODULE = "conv2d_direct.cu"
DIRECT_THREADS = 256   # 8 warps: enough for latency hiding with ~40 regs/thread, any arch


def direct_name(dtype, act: int) -> str:
    return expr("conv_direct", ctype(dtype), act)


DIRECT_INSTANTIATIONS = tuple(direct_name(dt, a) for dt in REAL for a in ACT_CODES)


def launch_direct(backend, x, w, b, y, spec, act, config):
    _check_dims(spec)
    g = geom3(spec)
    fn = backend.get_function(DIRECT_MODULE, DIRECT_INSTANTIATIONS, direct_name(spec.dtype, act))
    bias, has_bias = _bias_args(b, w)
    total = int(np.prod(spec.output_shape))
    args = (x, w, bias, y, I32(spec.n), I32(spec.c), *map(I32, g["insz"]), I32(spec.k),
            *map(I32, g["ker"]), *map(I32, g["out"]), *map(I32, g["stride"]), *map(I32, g["pad"]),
            *map(I32, g["dil"]), I32(spec.groups), has_bias)
    fn((_blocks(total, DIRECT_THREADS),), (DIRECT_THREADS,), args)


# ---------------------------------------------------------------- tiled shared memory

TILED_MODULE = "conv2d_tiled_smem.cu"
# name -> (TP, TQ, TK, QPT, KPT): see the header of kernels_cu/conv2d_tiled_smem.cu
TILES = {
    "tiled_smem": (8, 16, 32, 4, 8),
    "tiled_smem_small": (4, 8, 32, 2, 8),
}
TILED_CT_MAX = 16   # input channels per stage: 16 halves the barriers of 8 and still fits 3x3
                    # (30.5 KB fp32) with room for 2+ blocks/SM in 228 KB


def tiled_name(tile, dtype, act: int) -> str:
    return expr("conv2d_tiled_smem", ctype(dtype), act, *tile)


TILED_INSTANTIATIONS = tuple(tiled_name(t, dt, a) for t in TILES.values() for dt in REAL
                             for a in ACT_CODES)


def _geom2(spec: ConvSpec):
    """(H, W, R, S, P, Q, sh, sw, ph, pw, dh, dw); 1-D as H = R = P = 1."""
    g = geom3(spec)
    (_, H, W), (_, R, S), (_, P, Q) = g["insz"], g["ker"], g["out"]
    (_, sh, sw), (_, ph, pw), (_, dh, dw) = g["stride"], g["pad"], g["dil"]
    return H, W, R, S, P, Q, sh, sw, ph, pw, dh, dw


def tiled_smem_bytes(tile, spec: ConvSpec, ct: int) -> int:
    TP, TQ, TK, _, _ = tile
    H, W, R, S, P, Q, sh, sw, ph, pw, dh, dw = _geom2(spec)
    ih = (TP - 1) * sh + (R - 1) * dh + 1
    iw = (TQ - 1) * sw + (S - 1) * dw + 1
    return spec.dtype.itemsize * (ct * ih * iw + ct * R * S * (TK + 1))


def tiled_ct(tile, spec: ConvSpec) -> int:
    ct = max(1, min(TILED_CT_MAX, spec.c_per_group))
    while ct > 1 and tiled_smem_bytes(tile, spec, ct) > SMEM_LIMIT:
        ct = (ct + 1) // 2
    return ct


def tiled_grid(tile, spec: ConvSpec):
    TP, TQ, TK, QPT, KPT = tile
    H, W, R, S, P, Q, *_ = _geom2(spec)
    tiles = spec.n * (-(-P // TP)) * (-(-Q // TQ))
    ky = spec.groups * (-(-spec.k_per_group // TK))
    return (tiles, ky, 1), ((TQ // QPT) * TP * (TK // KPT), 1, 1)


def tiled_supports(tile, spec: ConvSpec):
    if spec.dtype not in REAL:
        return False, f"dtype {spec.dtype} (tiled kernels are real-only; complex runs on 'im2col')"
    if spec.nd not in (1, 2):
        return False, f"{spec.nd}-D convolution (tiled kernels are 2-D; 1-D runs as H=1)"
    smem = tiled_smem_bytes(tile, spec, 1)
    if smem > SMEM_LIMIT:
        return False, (f"the input tile with its halo and one channel of filter need {smem} B of "
                       f"shared memory (> {SMEM_LIMIT}): kernel/dilation too large")
    (gx, gy, _), _ = tiled_grid(tile, spec)
    if gx > INT32_MAX or gy > GRID_Y_MAX:
        return False, f"grid ({gx}, {gy}) exceeds the launch limits (2^31-1, 65535)"
    return True, "2-D real convolution whose tile fits in shared memory"


def make_launch_tiled(tile):
    def launch_tiled(backend, x, w, b, y, spec, act, config):
        _check_dims(spec)
        ct = int(config.get("ct") or tiled_ct(tile, spec))
        smem = tiled_smem_bytes(tile, spec, ct)
        if smem > SMEM_LIMIT:
            raise ValueError(f"tiled conv with ct={ct} needs {smem} B of shared memory (> {SMEM_LIMIT})")
        H, W, R, S, P, Q, sh, sw, ph, pw, dh, dw = _geom2(spec)
        grid, block = tiled_grid(tile, spec)
        fn = backend.get_function(TILED_MODULE, TILED_INSTANTIATIONS, tiled_name(tile, spec.dtype, act))
        bias, has_bias = _bias_args(b, w)
        args = (x, w, bias, y, I32(spec.n), I32(spec.c), I32(H), I32(W), I32(spec.k), I32(R), I32(S),
                I32(P), I32(Q), I32(sh), I32(sw), I32(ph), I32(pw), I32(dh), I32(dw),
                I32(spec.groups), has_bias, I32(ct))
        fn(grid, block, args, shared_mem=smem)
    return launch_tiled


# ---------------------------------------------------------------- im2col + GEMM

IM2COL_MODULE = "im2col.cu"
IM2COL_THREADS = 256
WORKSPACE_CAP = 1 << 30          # 1 GiB: the GEMM is as efficient on 1 GiB of columns as on more
WORKSPACE_FREE_FRACTION = 4      # ... and never more than 1/4 of free memory (the caller's arrays,
                                 # CuPy's pool and other streams need the rest)


def im2col_name(dtype) -> str:
    return expr("im2col", ctype(dtype))


def col2out_name(dtype, act: int) -> str:
    return expr("col2out", ctype(dtype), act)


def bias_act_name(dtype, act: int) -> str:
    return expr("bias_act", ctype(dtype), act)


IM2COL_INSTANTIATIONS = (
    tuple(im2col_name(dt) for dt in REAL + COMPLEX)
    + tuple(col2out_name(dt, a) for dt in REAL for a in ACT_CODES)
    + tuple(col2out_name(dt, 0) for dt in COMPLEX)
    + tuple(bias_act_name(dt, a) for dt in REAL for a in ACT_CODES)
    + tuple(bias_act_name(dt, 0) for dt in COMPLEX))


def is_pointwise(spec: ConvSpec) -> bool:
    """1x1 (x1x1), stride 1, unpadded: x viewed as (N, G, Cg, L) is the GEMM operand itself."""
    return (all(k == 1 for k in spec.kernel) and all(s == 1 for s in spec.stride)
            and not any(lo or hi for lo, hi in spec.pad))


def im2col_image_bytes(spec: ConvSpec) -> int:
    """Workspace per image of a chunk: its columns plus its GEMM result."""
    L = math.prod(spec.out_size)
    taps = math.prod(spec.kernel)
    return spec.dtype.itemsize * L * (spec.c * taps + spec.k)


def im2col_chunk(spec: ConvSpec, free_bytes: int) -> int:
    """Images per chunk: as many as fit the workspace budget, at least one."""
    budget = min(WORKSPACE_CAP, free_bytes // WORKSPACE_FREE_FRACTION)
    L = max(1, math.prod(spec.out_size))
    nb = max(1, budget // max(1, im2col_image_bytes(spec)))
    nb = min(nb, max(1, spec.n), max(1, INT32_MAX // L))   # cuBLAS takes int dimensions
    return int(nb)


def im2col_supports(spec: ConvSpec):
    if spec.dtype not in REAL + COMPLEX:
        return False, f"dtype {spec.dtype}"
    L = math.prod(spec.out_size)
    if L > INT32_MAX or spec.c_per_group * math.prod(spec.kernel) > INT32_MAX:
        return False, "GEMM dimensions exceed cuBLAS's 32-bit limits"
    return True, "any geometry, real or complex (GEMM through xp.matmul)"


def im2col_workspace(spec: ConvSpec, config: dict) -> int:
    if is_pointwise(spec):
        return 0
    return int(config.get("chunk", 1)) * im2col_image_bytes(spec)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def _alloc_workspace(xp, spec, nb):
    """(cols, gemm_out, nb): halves the chunk until the workspace fits."""
    L = math.prod(spec.out_size)
    rows = spec.c * math.prod(spec.kernel)
    while True:
        try:
            cols = xp.empty(rows * nb * L, dtype=spec.dtype)
            gout = xp.empty(spec.k * nb * L, dtype=spec.dtype)
            return cols, gout, nb
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
            if not _is_oom(exc):
                raise
            if nb == 1:
                raise MemoryError(
                    f"im2col needs {im2col_image_bytes(spec)} B of workspace for a single image and "
                    f"that could not be allocated; use algorithm='direct' or 'tiled_smem'") from exc
            nb = max(1, nb // 2)


def launch_im2col(backend, x, w, b, y, spec, act, config):
    _check_dims(spec)
    xp = backend.xp
    G, Kg, Cg, N = spec.groups, spec.k_per_group, spec.c_per_group, spec.n
    taps = math.prod(spec.kernel)
    L = math.prod(spec.out_size)
    wmat = w.reshape(G, Kg, Cg * taps)
    bias, has_bias = _bias_args(b, w)
    epi_threads = IM2COL_THREADS

    if is_pointwise(spec):
        # (G, Kg, Cg) @ (N, G, Cg, L) -> (N, G, Kg, L), which is y's own layout
        xp.matmul(wmat[None], x.reshape(N, G, Cg, L), out=y.reshape(N, G, Kg, L))
        if has_bias or act:
            fn = backend.get_function(IM2COL_MODULE, IM2COL_INSTANTIATIONS, bias_act_name(spec.dtype, act))
            total = y.size
            fn((_blocks(total, epi_threads),), (epi_threads,),
               (y, bias, I64(total), I32(spec.k), I64(L), has_bias))
        return

    g = geom3(spec)
    nb = int(config.get("chunk") or 1)
    cols_buf, gout_buf, nb = _alloc_workspace(xp, spec, min(nb, N))
    f_im2col = backend.get_function(IM2COL_MODULE, IM2COL_INSTANTIATIONS, im2col_name(spec.dtype))
    f_out = backend.get_function(IM2COL_MODULE, IM2COL_INSTANTIATIONS, col2out_name(spec.dtype, act))
    geo = (I32(spec.c), *map(I32, g["insz"]), *map(I32, g["ker"]), *map(I32, g["out"]),
           *map(I32, g["stride"]), *map(I32, g["pad"]), *map(I32, g["dil"]))
    for n0 in range(0, N, nb):
        cur = min(nb, N - n0)
        cols = cols_buf[: spec.c * taps * cur * L]
        total = cols.size
        f_im2col((_blocks(total, IM2COL_THREADS),), (IM2COL_THREADS,),
                 (x, cols, I32(n0), I32(cur), *geo))
        gout = gout_buf[: spec.k * cur * L]
        xp.matmul(wmat, cols.reshape(G, Cg * taps, cur * L), out=gout.reshape(G, Kg, cur * L))
        total = cur * spec.k * L
        f_out((_blocks(total, epi_threads),), (epi_threads,),
              (gout, bias, y, I32(n0), I32(cur), I32(spec.k), I64(L), has_bias))


# ---------------------------------------------------------------- depthwise

DEPTHWISE_MODULE = "conv2d_depthwise.cu"
# name -> (TP, TQ, QPT, planes per block): see the header of kernels_cu/conv2d_depthwise.cu.
# 256 threads per block either way: 8 warps keep enough loads in flight per SM for a
# memory-bound kernel at ~40 registers (MEASURE: 128 vs 256 threads on a GPU).
DEPTHWISE_TILES = {
    "large": (8, 32, 4, 4),
    "small": (8, 8, 2, 8),
}
DEPTHWISE_KS = (3, 5, 0)        # 3x3 and 5x5 with taps in registers; 0: any R, S


def depthwise_name(tile: str, ks: int, dtype, act: int) -> str:
    TP, TQ, QPT, _ = DEPTHWISE_TILES[tile]
    return expr("conv2d_depthwise", ctype(dtype), act, TP, TQ, QPT, ks)


DEPTHWISE_INSTANTIATIONS = tuple(depthwise_name(t, ks, dt, a) for t in DEPTHWISE_TILES
                                 for ks in DEPTHWISE_KS for dt in REAL for a in ACT_CODES)


def depthwise_ks(spec: ConvSpec) -> int:
    H, W, R, S, *_ = _geom2(spec)
    return R if (R == S and R in DEPTHWISE_KS) else 0


def depthwise_smem_bytes(tile: str, spec: ConvSpec, planes: int) -> int:
    TP, TQ, _, _ = DEPTHWISE_TILES[tile]
    H, W, R, S, P, Q, sh, sw, ph, pw, dh, dw = _geom2(spec)
    ih = (TP - 1) * sh + (R - 1) * dh + 1
    iw = (TQ - 1) * sw + (S - 1) * dw + 1
    taps = R * S if depthwise_ks(spec) == 0 else 0
    return spec.dtype.itemsize * planes * (ih * iw + taps)


def depthwise_tile_util(tile: str, spec: ConvSpec) -> float:
    TP, TQ, _, _ = DEPTHWISE_TILES[tile]
    *_, P, Q = _geom2(spec)[:6]
    return (P / (-(-P // TP) * TP)) * (Q / (-(-Q // TQ) * TQ))


def depthwise_config(spec: ConvSpec) -> dict:
    """The tile with the better output utilisation (large on ties: fewer halo re-reads),
    and the most planes per block (up to the tile's default) that fit shared memory."""
    tile = "large" if depthwise_tile_util("large", spec) >= depthwise_tile_util("small", spec) else "small"
    return {"tile": tile, "planes": depthwise_planes(tile, spec)}


def depthwise_planes(tile: str, spec: ConvSpec) -> int:
    planes = DEPTHWISE_TILES[tile][3]
    while planes > 1 and depthwise_smem_bytes(tile, spec, planes) > SMEM_LIMIT:
        planes //= 2
    return planes


def depthwise_grid(tile: str, spec: ConvSpec, planes: int):
    TP, TQ, QPT, _ = DEPTHWISE_TILES[tile]
    *_, P, Q = _geom2(spec)[:6]
    nplanes = spec.n * spec.k
    blocks = (-(-P // TP)) * (-(-Q // TQ)) * (-(-nplanes // planes))
    return (blocks, 1, 1), (TQ // QPT, TP, planes)


def depthwise_supports(spec: ConvSpec):
    if spec.dtype not in REAL:
        return False, f"dtype {spec.dtype} (depthwise is real-only)"
    if spec.nd not in (1, 2):
        return False, f"{spec.nd}-D convolution (the depthwise kernel is 2-D; 1-D runs as H=1)"
    if spec.c_per_group != 1:
        return False, f"C/groups = {spec.c_per_group} (depthwise needs one input channel per group)"
    for tile in DEPTHWISE_TILES:
        smem = depthwise_smem_bytes(tile, spec, 1)
        if smem > SMEM_LIMIT:
            return False, (f"one plane's input tile with its halo needs {smem} B of shared memory "
                           f"(> {SMEM_LIMIT}): kernel/dilation/stride too large")
    (gx, _, _), _ = depthwise_grid("small", spec, 1)
    if gx > INT32_MAX:
        return False, f"grid of {gx} blocks exceeds the launch limit (2^31-1)"
    return True, "one input channel per group (any depth multiplier), 2-D/1-D real, tile fits"


def launch_depthwise(backend, x, w, b, y, spec, act, config):
    _check_dims(spec)
    tile = config.get("tile") or depthwise_config(spec)["tile"]
    planes = int(config.get("planes") or depthwise_planes(tile, spec))
    smem = depthwise_smem_bytes(tile, spec, planes)
    if smem > SMEM_LIMIT:
        raise ValueError(f"depthwise tile {tile!r} with {planes} planes needs {smem} B of shared "
                         f"memory (> {SMEM_LIMIT})")
    H, W, R, S, P, Q, sh, sw, ph, pw, dh, dw = _geom2(spec)
    grid, block = depthwise_grid(tile, spec, planes)
    fn = backend.get_function(DEPTHWISE_MODULE, DEPTHWISE_INSTANTIATIONS,
                              depthwise_name(tile, depthwise_ks(spec), spec.dtype, act))
    bias, has_bias = _bias_args(b, w)
    args = (x, w, bias, y, I32(spec.n), I32(spec.c), I32(H), I32(W), I32(spec.k), I32(R), I32(S),
            I32(P), I32(Q), I32(sh), I32(sw), I32(ph), I32(pw), I32(dh), I32(dw), has_bias)
    fn(grid, block, args, shared_mem=smem)
