"""kernels_cu/conv2d_implicit_gemm.cu and its element-type twins: tensor-core implicit GEMM
(variant "implicit_gemm").

    float16   conv2d_implicit_gemm.cu        mma.sync m16n8k16 .f16, fp32 accumulation
    bfloat16  conv2d_implicit_gemm_bf16.cu   mma.sync m16n8k16 .bf16 (ml_dtypes.bfloat16 arrays)
    float32   conv2d_implicit_gemm_tf32.cu   mma.sync m16n8k8 .tf32: precision "medium" (TF32)
                                             or "high" (3xTF32); "highest" is refused (exact
                                             FP32 stays on the FMA kernels)

Up to four launches on the backend's stream: x NCHW -> xs NHWC with channels padded per
group to a 16-byte chunk (8 16-bit or 4 float channels; skipped when x is already
channels-last and Cg fills whole chunks: then x is read in place; a padding mode other than
zeros is resolved by this copy, which writes the mode-extended image), w -> ws [K][R][S][Cgp],
the GEMM kernel over a grid of (M tiles, N tiles, groups x splits), and with split-K
igemm_splitk_reduce (fixed-order sum of the splits + bias + activation).  The staging
buffers and the split-K partials are the workspace.

The dispatcher's API (gpuconv/cuda/dispatch.py calls these; all pure):

    TILES                           name -> Tile: the block-tile menu
    supports(spec, precision=...)   (ok, reason)
    plan(spec, facts, precision)    the tile, split-K and the napkin math behind them

Every figure in plan() is an estimate (H100 SXM datasheet numbers scaled by the device's
SM count, no measurement of these kernels yet) and says so in its 'label'.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from .._types import ctype, expr
from ..facts import DeviceFacts
from ..launch import (GRID_YZ_MAX, I32, I64, INT32_MAX, SMEM_LIMIT, Variant, bias_args, blocks, geometry,
                      geometry_args)
from ...spec import ConvSpec, is_bfloat16


class Tile(NamedTuple):
    """A block tile: BM output positions x BN output channels, warps of WM x WN, STAGES
    cp.async stages of 64-byte rows, __launch_bounds__(threads, min_blocks[precision code])."""

    bm: int
    bn: int
    wm: int
    wn: int
    stages: int
    min_blocks: tuple[int, int, int]

    @property
    def warps(self) -> int:
        return (self.bm // self.wm) * (self.bn // self.wn)

    @property
    def threads(self) -> int:
        return 32 * self.warps

    @property
    def smem(self) -> int:
        """Pipeline bytes: STAGES x (BM + BN) rows of 64 bytes (32 halves / 16 floats)."""
        return self.stages * (self.bm + self.bn) * ROW_BYTES

    @property
    def accumulators(self) -> int:
        return self.wm * self.wn // 32

    def regs_cap(self, prec: int) -> int:
        """Registers per thread __launch_bounds__ allows: 65536 / (threads x min blocks), at most 255."""
        return min(255, 65536 // (self.threads * self.min_blocks[prec]) // 8 * 8)

    def targs(self, prec: int) -> tuple[int, ...]:
        return (self.bm, self.bn, self.wm, self.wn, self.stages, self.min_blocks[prec])


ROW_BYTES = 64                      # one k-tile row: 4 chunks of 16 bytes (the swizzle's width)
# The menu.  min_blocks (per precision code: 16-bit, TF32, 3xTF32) is what __launch_bounds__
# asks ptxas to keep resident; the register cap is 65536 / (threads x min_blocks).
#   128x128  8 warps of 64x32, 64 accumulators: 2 CTAs (128 regs); 3xTF32 1 CTA (255 regs:
#            its big and small A fragments add 16 registers; at 128 ptxas spilled 80 bytes)
#   128x64   4 warps of 64x32, 64 accumulators: 4 CTAs (128 regs); TF32 3 (168: the cvt.rna
#            of the fragments spilled 4 bytes at 128); 3xTF32 2 (255; 160 bytes spilled at 128)
#   64x128   8 warps of 32x32, 32 accumulators: 2 CTAs (128 regs) at every precision (4 warps
#            of 32x64 spilled 16 bytes at 128: 4 B-row pointers of the copy loop)
#   64x64    4 warps of 32x32, 32 accumulators: 4 CTAs (128 regs) at every precision
# Every choice keeps >= 8 warps per SM.  Shared memory 48 / 36 / 36 / 24 KiB (SMEM_LIMIT).
TILES: dict[str, Tile] = {
    "128x128": Tile(128, 128, 64, 32, 3, (2, 2, 1)),
    "128x64": Tile(128, 64, 64, 32, 3, (4, 3, 2)),
    "64x128": Tile(64, 128, 32, 32, 3, (2, 2, 2)),
    "64x64": Tile(64, 64, 32, 32, 3, (4, 4, 4)),
}
# split-K candidates.  Up to 64: a weight gradient on the implicit GEMM (gpuconv.derived)
# reduces over N*P*Q into a small K x Cg*R*S output -- ResNet-50's 56x56 64->64 layer at
# batch 32 is 9 x 1 tiles of 64x64 reducing over 100352: split 8 leaves 72 CTAs on 132
# SMs (est. 96 us), split 24 gives 216 (est. 46 us); a 1x1 wgrad (M = 64) wants 32.
# The partials (split x the output's floats) are small for such outputs.
SPLITS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
MIN_KTILES_PER_SPLIT = 4            # fewer k-tiles than this per split: the pipeline never fills

MODULES = {                         # precision code per module: 0 native 16-bit, 1 TF32, 2 3xTF32
    "float16": ("conv2d_implicit_gemm.cu", (0,)),
    "bfloat16": ("conv2d_implicit_gemm_bf16.cu", (0,)),
    "float32": ("conv2d_implicit_gemm_tf32.cu", (1, 2)),
}
MODULE = MODULES["float16"][0]
BF16_MODULE = MODULES["bfloat16"][0]
TF32_MODULE = MODULES["float32"][0]
PRECISION_CODES = {"medium": 1, "high": 2}
STAGE_THREADS = 256
REDUCE_THREADS = 256
MIN_CC = (8, 0)                    # cp.async, mma.m16n8k16 with f32 accumulators, tf32

# Napkin-math constants (estimates: H100 SXM datasheet figures per SM, 132 SMs).
# Dense tensor-core peaks: 989 TFLOP/s fp16/bf16, 494 tf32.  mma.sync (not wgmma) reaches about
# half of that on Hopper (published microbenchmarks), the MMA_SYNC_FRACTION below.
PEAK_PER_SM = {"16bit": 989e12 / 132, "tf32": 494e12 / 132}
MMA_SYNC_FRACTION = 0.5
# An SM needs ~8 resident warps issuing mma.sync to hide ldmatrix/MMA latency (2 per scheduler).
WARPS_TO_SATURATE = 8
# Operand reuse: each warp reads (WM + WN) x k fragments per WM x WN x k MMA work from shared
# memory; shared-memory bandwidth (128 B/clk/SM) caps a warp tile of 32x32 at ~70% of the MMA
# rate, 64x32 and 32x64 at ~90% (estimate: ldmatrix bytes per MMA FLOP against 128 B/clk).
TILE_EFFICIENCY = {(64, 32): 0.9, (32, 64): 0.9, (32, 32): 0.7}
HBM_BYTES_PER_S = 3.0e12           # staging copies and split-K partials


def dtype_key(dtype) -> str | None:
    dt = np.dtype(dtype)
    if is_bfloat16(dt):
        return "bfloat16"
    return {np.dtype(np.float16): "float16", np.dtype(np.float32): "float32"}.get(dt)


def chunk_elems(dtype) -> int:
    """Channels per 16-byte cp.async chunk: 8 16-bit values or 4 floats."""
    return 16 // np.dtype(dtype).itemsize


def padded_channels(spec: ConvSpec) -> int:
    """Cg rounded up to a whole 16-byte chunk (one cp.async: one tap's channels)."""
    ce = chunk_elems(spec.dtype)
    return -(-spec.c_per_group // ce) * ce


def precision_code(spec: ConvSpec, precision: str) -> int:
    return PRECISION_CODES.get(precision, 0) if dtype_key(spec.dtype) == "float32" else 0


def kernel_name(ct: str, tile: Tile, prec: int) -> str:
    return expr("conv2d_implicit_gemm", ct, *tile.targs(prec), prec)


def _instantiations(ct: str, precs) -> tuple[str, ...]:
    return (tuple(kernel_name(ct, t, p) for t in TILES.values() for p in precs)
            + (expr("igemm_splitk_reduce", ct), expr("igemm_stage_input", ct), expr("igemm_stage_weight", ct)))


INSTANTIATIONS = _instantiations("__half", (0,))
BF16_INSTANTIATIONS = _instantiations("__nv_bfloat16", (0,))
TF32_INSTANTIATIONS = _instantiations("float", (1, 2))
SOURCES = {MODULE: INSTANTIATIONS, BF16_MODULE: BF16_INSTANTIATIONS, TF32_MODULE: TF32_INSTANTIATIONS}


# ---------------------------------------------------------------- planning (pure)

def gemm_sizes(spec: ConvSpec) -> tuple[int, int, int]:
    """(M, N, Kdim) of one group's GEMM: N*P*Q output positions, Kg channels, R*S*Cgp."""
    g = geometry(spec)
    return spec.n * g.P * g.Q, spec.k_per_group, g.R * g.S * padded_channels(spec)


def ctas_per_sm(tile: Tile, facts: DeviceFacts, regs: int | None = None, prec: int = 0) -> int:
    """Resident CTAs per SM from registers (the launch bound's cap unless ptxas reports fewer),
    shared memory (228 KiB per SM on sm_90, 164 on sm_80, 1 KiB reserved per CTA) and the
    2048-thread / 32-CTA limits."""
    regs = regs or tile.regs_cap(prec)
    regs = -(-regs // 8) * 8                                  # allocated in units of 8 per thread
    by_regs = 65536 // (regs * tile.threads)
    smem_sm = (228 if tuple(facts.cc) >= (9, 0) else 164) * 1024
    by_smem = smem_sm // (tile.smem + 1024)
    return max(0, min(by_regs, by_smem, 2048 // tile.threads, 32))


def staged_extent(spec: ConvSpec) -> tuple[int, int]:
    """(Hs, Ws): the image igemm_stage_input writes.  Zeros mode: the input's H, W (the GEMM
    pads with zeros itself).  A padding mode: the mode-extended image, exactly the rows and
    columns the outputs read ((P-1)*sh + (R-1)*dh + 1 from row -ph on; no more than
    H + padding), which the GEMM then convolves without padding."""
    g = geometry(spec)
    if spec.padding_mode == "zeros":
        return g.H, g.W
    return (max(0, (g.P - 1) * g.sh + (g.R - 1) * g.dh + 1),
            max(0, (g.Q - 1) * g.sw + (g.S - 1) * g.dw + 1))


def gemm_spec(spec: ConvSpec) -> ConvSpec:
    """The problem the GEMM kernel solves: spec itself in zeros mode; for a padding mode the
    valid convolution of the staged, mode-extended image (same output size)."""
    if spec.padding_mode == "zeros":
        return spec
    return replace(spec, in_size=staged_extent(spec), pad=((0, 0), (0, 0)), padding_mode="zeros")


def workspace_for(spec: ConvSpec, split_k: int, staged: bool = True) -> int:
    """Bytes of the NHWC input copy (unless read in place; for a padding mode the
    mode-extended image, staged_extent), the staged weights, and the float32 split-K
    partials (split_k x the output's elements)."""
    g = geometry(spec)
    cgp = padded_channels(spec)
    item = spec.dtype.itemsize
    hs, ws_ = staged_extent(spec)
    xs = item * spec.n * hs * ws_ * spec.groups * cgp if staged else 0
    ws = item * spec.k * g.R * g.S * cgp
    part = 4 * split_k * spec.n * spec.k * g.P * g.Q if split_k > 1 else 0
    return xs + ws + part


def _estimate(spec: ConvSpec, facts: DeviceFacts, tile: Tile, split_k: int, prec: int) -> dict:
    M, Nn, Kdim = gemm_sizes(spec)
    bk = ROW_BYTES // (4 if prec else 2)
    kt = -(-Kdim // bk)
    kt_split = -(-kt // split_k)
    ctas = -(-M // tile.bm) * -(-Nn // tile.bn) * spec.groups * split_k
    per_sm = ctas_per_sm(tile, facts, prec=prec)
    slots = max(1, per_sm * facts.sm_count)
    waves = ctas / slots
    # the busiest SM runs ceil(ctas / sm_count) CTAs; with fewer resident warps than
    # WARPS_TO_SATURATE it issues MMAs at a proportionally lower rate
    on_busiest = -(-ctas // facts.sm_count)
    resident = min(on_busiest, per_sm)
    if ctas == 0 or kt == 0:                  # empty output or no reduction: nothing to price
        return {"ctas": ctas, "ctas_per_sm": per_sm, "waves": waves, "busiest_sm_warps": 0, "k_tiles": kt,
                "k_tiles_per_split": kt_split, "est_us": 0.0, "est_pct_peak": 0.0}
    mmas = 3 if prec == 2 else 1
    peak_sm = PEAK_PER_SM["tf32" if prec else "16bit"]
    rate = peak_sm * MMA_SYNC_FRACTION * TILE_EFFICIENCY[(tile.wm, tile.wn)] * \
        min(1.0, resident * tile.warps / WARPS_TO_SATURATE)
    cta_flops = 2.0 * tile.bm * tile.bn * bk * kt_split * mmas
    t_mma = on_busiest * cta_flops / rate
    t_mem = workspace_for(spec, split_k) * 2 / HBM_BYTES_PER_S          # written once, read once
    t = t_mma + t_mem
    useful = 2.0 * M * Nn * spec.groups * spec.c_per_group * geometry(spec).R * geometry(spec).S
    peak_total = peak_sm * facts.sm_count / mmas                          # 3xTF32: a third of TF32's
    return {"ctas": ctas, "ctas_per_sm": per_sm, "waves": waves, "busiest_sm_warps": resident * tile.warps,
            "k_tiles": kt, "k_tiles_per_split": kt_split,
            "est_us": t * 1e6, "est_pct_peak": 100.0 * useful / (t * peak_total) if t > 0 else 0.0}


def plan(spec: ConvSpec, facts: DeviceFacts | None = None, precision: str = "highest") -> dict:
    """The block tile and split-K for `spec` on a device described by `facts`, and the napkin
    math behind them.  Pure (spec, facts, precision only).  Returns

        tile            a TILES key;  split_k  >= 1 (1: no split)
        ctas            CTAs launched (M tiles x N tiles x groups x split_k)
        ctas_per_sm     resident CTAs per SM (registers at the launch bound, shared memory, threads)
        waves           ctas / (ctas_per_sm x facts.sm_count)
        busiest_sm_warps  warps resident on the busiest SM (>= WARPS_TO_SATURATE: its tensor
                        cores are kept busy even when waves < 1, e.g. 3 of 4 CTA slots filled)
        smem            dynamic shared-memory bytes per CTA
        workspace       device bytes beyond the output (staging copies, split-K partials)
        k_tiles, k_tiles_per_split, est_us, est_pct_peak (of the dtype's dense tensor-core peak
                        in useful FLOPs: padding and 3xTF32's extra MMAs count against it)
        precision       0 native 16-bit, 1 TF32, 2 3xTF32
        label           "estimate ..." (no GPU measurement behind these numbers)

    Rule: every (tile, split) with split 1 or with at least MIN_KTILES_PER_SPLIT k-tiles per
    split is priced by _estimate; the cheapest wins, ties to the larger tile and fewer splits
    (menu order).  A split is only worth its partials when the unsplit grid leaves SMs idle:
    ResNet-50 14x14 K=256 at batch 32 is 49 CTAs of 128x128 on 132 SMs (0.19 waves), where
    64x64 x split 1 gives 392 CTAs (0.74 waves at 4 per SM).

    For the dispatcher (gpuconv/cuda/dispatch.py), the rule to route here:
      float16 / bfloat16, 2-D, cc >= 8.0, a GEMM large enough for tensor cores (as rule 3b
        today: Kg >= 32 and Cg*taps >= 32) -> implicit_gemm; bfloat16 shapes it refuses
        (1-D/3-D) fall back to the widened float32 path;
      float32 with precision "medium" or "high" -> implicit_gemm under the same size rule
        (supports(spec, precision=...) says yes); "highest" never (exact FP32 stays on FMA);
      stems (Cg = 3, 7x7): here too, as the kernel header's napkin math says -- padding C=3
        to 8 wastes 62.5% of the MMA work (25% for float's 4), yet 0.375 x ~250 TFLOP/s of
        mma.sync is still ~2.7x the FMA kernels' ~35 TFLOP/s (estimate); no Cg rule needed.
    """
    facts = facts or DeviceFacts()
    prec = precision_code(spec, precision)
    _, _, Kdim = gemm_sizes(spec)
    kt = -(-Kdim // (ROW_BYTES // (4 if prec else 2)))
    best = None
    for name, tile in TILES.items():
        for split in SPLITS:
            if split > 1 and kt // split < MIN_KTILES_PER_SPLIT:
                break
            if spec.groups * split > GRID_YZ_MAX:
                break
            est = _estimate(spec, facts, tile, split, prec)
            if est["ctas_per_sm"] == 0:
                continue
            if best is None or est["est_us"] < best[2]["est_us"] * 0.98:    # 2%: ties keep the earlier
                best = (name, split, est)
    name, split, est = best
    tile = TILES[name]
    return {"tile": name, "split_k": split, **est, "smem": tile.smem,
            "workspace": workspace_for(spec, split), "precision": prec,
            "label": "estimate (napkin math from H100 datasheet figures; not measured on a GPU)"}


# ---------------------------------------------------------------- the variant

def workspace_bytes(spec: ConvSpec, config: dict | None = None) -> int:
    config = config or {}
    split = config.get("split_k")
    if split is None:
        split = plan(spec, DeviceFacts(), config.get("precision", "highest"))["split_k"]
    return workspace_for(spec, split)


def grid(spec: ConvSpec, tile: Tile, split_k: int = 1):
    M, Nn, _ = gemm_sizes(spec)
    return (-(-M // tile.bm), -(-Nn // tile.bn), spec.groups * split_k), (tile.threads, 1, 1)


def supports(spec: ConvSpec, precision: str = "highest"):
    """(ok, reason).  float16 and bfloat16 at any precision; float32 only at precision
    "medium" (TF32) or "high" (3xTF32) -- "highest" asks for exact FP32, which tensor cores
    do not compute, so it is refused (the caller then picks an FMA kernel); 2-D only;
    32-bit index and launch limits."""
    key = dtype_key(spec.dtype)
    if key is None:
        return False, (f"dtype {spec.dtype} (the tensor-core implicit GEMM takes float16, bfloat16, and "
                       f"float32 at precision 'high'/'medium'; float64 stays on the FMA kernels)")
    if key == "float32" and precision not in PRECISION_CODES:
        return False, (f"float32 at precision {precision!r}: exact FP32 stays on the FMA kernels (tensor "
                       f"cores take float32 at 'high' (3xTF32) or 'medium' (TF32))")
    if spec.nd != 2:
        return False, f"{spec.nd}-D convolution (the implicit-GEMM kernel is 2-D)"
    g = geometry(spec)
    cgp = padded_channels(spec)
    hw = math.prod(staged_extent(spec))            # H*W, or the mode-extended image's
    if g.R * g.S * cgp > INT32_MAX or g.P * g.Q > INT32_MAX or max(g.H * g.W, hw) > INT32_MAX:
        return False, "GEMM K (R*S*Cg) or a plane exceeds 2^31 elements"
    if spec.n * -(-hw // 32) > INT32_MAX or -(-spec.groups * cgp // 32) > GRID_YZ_MAX:
        return False, "the NHWC staging grid exceeds the launch limits"
    (gx, gy, gz), _ = grid(spec, TILES["64x64"])
    if gx > INT32_MAX or gy > GRID_YZ_MAX or gz > GRID_YZ_MAX:
        return False, f"grid ({gx}, {gy}, {gz}) exceeds the launch limits (2^31-1, 65535, 65535)"
    what = {"float16": "float16 (mma.sync m16n8k16 .f16", "bfloat16": "bfloat16 (mma.sync m16n8k16 .bf16",
            "float32": f"float32 at {precision!r} (mma.sync m16n8k8 .tf32"
                       + (", 3xTF32" if precision == "high" else "")}[key]
    return True, f"2-D {what}, fp32 accumulation)"


def default_config(spec: ConvSpec, facts: DeviceFacts | None = None, precision: str = "highest") -> dict:
    p = plan(spec, facts, precision)
    return {"tile": p["tile"], "split_k": p["split_k"]}


def is_channels_last(x, spec: ConvSpec) -> bool:
    """x (N, C, H, W) laid out as dense NHWC (torch's channels_last, or a CuPy transpose of an
    NHWC array) -- then it is read in place when Cg fills whole 16-byte chunks."""
    if x.ndim != 4 or x.size == 0:
        return False
    n, c, h, w = x.shape
    it = x.itemsize
    want = (h * w * c * it, it, w * c * it, c * it)
    return all(s == e or d == 1 for s, e, d in zip(x.strides, want, x.shape))


def reads_in_place(x, spec: ConvSpec) -> bool:
    """Channels-last x with whole chunks per group, in zeros mode (a padding mode is resolved
    by the staging copy, which is then needed)."""
    return (spec.padding_mode == "zeros" and is_channels_last(x, spec)
            and spec.c_per_group % chunk_elems(spec.dtype) == 0)


def launch(backend, x, w, b, y, spec, act, config):
    """y: C-contiguous NCHW, or dense NHWC viewed as NCHW (channels_last) when x is."""
    key = dtype_key(spec.dtype)
    ct = "__nv_bfloat16" if key == "bfloat16" else ctype(spec.dtype)
    module, precs = MODULES[key]
    names = {"float16": INSTANTIATIONS, "bfloat16": BF16_INSTANTIATIONS, "float32": TF32_INSTANTIATIONS}[key]
    precision = config.get("precision", "highest")
    prec = precision_code(spec, precision)
    if prec not in precs:
        raise ValueError(f"implicit_gemm: float32 at precision {precision!r} is not a tensor-core precision "
                         f"(use 'high' or 'medium')")
    if "tile" not in config or "split_k" not in config:
        config = {**default_config(spec, None, precision), **config}
    tile = TILES[config["tile"]]
    split = int(config["split_k"])
    geo = geometry_args(gemm_spec(spec))          # a padding mode: zeros over the extended image
    # the cached compute capability, not device_facts(): that reads free memory per call
    cc_of = getattr(backend, "compute_capability", None)
    if callable(cc_of):
        cc = cc_of()
        if tuple(cc) < MIN_CC:
            raise ValueError(f"implicit_gemm needs compute capability >= {MIN_CC[0]}.{MIN_CC[1]} "
                             f"(cp.async, mma.sync); this device is {cc[0]}.{cc[1]}")
    xp = backend.xp
    g = geometry(spec)
    G = spec.groups

    def get(name):
        return backend.get_function(module, names, name)

    if reads_in_place(x, spec):                   # the NHWC buffer itself (a C-ordered view)
        xs, cgp = x.transpose(0, 2, 3, 1), spec.c_per_group
    else:
        cgp = padded_channels(spec)
        x = xp.ascontiguousarray(x)
        hs, ws_ = staged_extent(spec)
        xs = xp.empty(spec.n * hs * ws_ * G * cgp, dtype=spec.dtype)
        get(expr("igemm_stage_input", ct))((-(-(hs * ws_) // 32) * spec.n, -(-(G * cgp) // 32), 1), (32, 8, 1),
                                           (x, xs, *geometry_args(spec), I32(cgp)))
    ws = xp.empty(spec.k * g.R * g.S * cgp, dtype=spec.dtype)
    get(expr("igemm_stage_weight", ct))((blocks(ws.size, STAGE_THREADS),), (STAGE_THREADS,),
                                        (w, ws, I32(spec.k), I32(spec.c_per_group), I32(g.R * g.S), I32(cgp)))
    bias, has_bias = bias_args(b, w)
    y_nhwc = I32(0 if y.flags.c_contiguous else 1)
    if y_nhwc:
        y = y.transpose(0, 2, 3, 1)                # dense NHWC: C-ordered in this view
        if not y.flags.c_contiguous:
            raise ValueError("implicit_gemm: y must be C-contiguous NCHW or dense NHWC (channels_last)")
    total = y.size
    part = xp.empty(split * total if split > 1 else 1, dtype=np.float32)
    grid_, block = grid(spec, tile, split)
    get(kernel_name(ct, tile, prec))(grid_, block, (xs, ws, bias, y, part, *geo, I32(cgp), has_bias, I32(act),
                                                    I32(split), y_nhwc), shared_mem=tile.smem)
    if split > 1:
        get(expr("igemm_splitk_reduce", ct))((blocks(total, REDUCE_THREADS),), (REDUCE_THREADS,),
                                             (part, bias, y, I64(total), I32(spec.k), I32(g.P * g.Q),
                                              I32(split), has_bias, I32(act), y_nhwc))


assert all(t.smem <= SMEM_LIMIT for t in TILES.values())

VARIANTS = (Variant(
    name="implicit_gemm", module=MODULE, instantiations=INSTANTIATIONS,
    summary=("tensor-core implicit GEMM (float16, bfloat16; float32 as TF32/3xTF32 at precision "
             "'medium'/'high'): NHWC staging copy or channels-last in place, 128x128/128x64/64x128/64x64 "
             "tiles, deterministic split-K, 3-stage cp.async, ldmatrix + mma.sync, fused bias/activation"),
    supports=supports,
    default_config=default_config,
    workspace_bytes=workspace_bytes,
    launch=launch,
    padding_modes=True),)
