"""The dispatcher: a pure function (spec, device facts) -> (variant, config, reasons).

No GPU measurement exists yet: every threshold below is an estimate, napkin math
from the H100 datasheet (67 TFLOP/s FP32, 989 TFLOP/s FP16 dense, ~3 TB/s HBM) and
the kernels' own header comments.  Each one is marked MEASURE: re-derive it from
`gpuconv bench` on a GPU and replace the estimate with the measurement (and say
which run in the comment).

Rules, in order (first match wins; every variant returned supports the spec):
  1. complex dtype            -> im2col (the only complex variant: cuBLAS cgemm/zgemm).
  2. pointwise (1x1, stride 1, unpadded) with a non-trivial GEMM -> im2col: x is
     already the GEMM operand, there is no lowering cost at all.
  2b. one input channel per group (depthwise, any multiplier), 2-D, real -> depthwise:
     memory bound (bytes = input + output); its plane tiles keep the halo in shared
     memory and 3x3/5x5 taps in registers, where direct re-reads every tap through L1.
  3. tiny inner product (Cg*taps < 32, e.g. depthwise 3x3 = 9) or tiny work
     -> direct.  A GEMM with inner size 9 is bandwidth bound and im2col would
     multiply the input traffic by taps; the tiled kernel's 32-channel output
     tile would be 1/32 useful at Kg = 1.
  3b. float16, 2-D, a large GEMM, compute capability >= 8.0 -> implicit_gemm
     (tensor cores without the im2col round trip through memory; IGEMM_* below).
  4. float16 / float64 with a large GEMM -> im2col: the only path on cuBLAS's
     tensor cores (fp16: 989 vs 67 TFLOP/s for our FP32-FMA kernels) / DGEMM.
  5. float32: im2col when Kg*inner/(Kg+inner) >= 139, else tiled (see IM2COL_KNEE).
  6. 3-D -> im2col when its GEMM is large, else direct (no 3-D tiled kernel yet).
  7. 1-D/2-D -> the tiled variant with the best tile utilisation, if it fits;
     else direct.
"""
from __future__ import annotations

import math

import numpy as np

from . import variants
from .facts import DeviceFacts
from .families.conv2d_implicit_gemm import MIN_CC as IGEMM_MIN_CC
from .families.conv2d_tiled_smem import TILES
from .families.im2col import is_pointwise
from ..spec import ConvSpec

# MEASURE. Below this many FLOPs a layer is launch-latency bound (~3-5 us per
# launch; im2col is 3 launches + cuBLAS's own); one direct launch wins.
# 2e7 FLOP at ~5 TFLOP/s (direct's rough rate) ~ 4 us, about one launch.
TINY_FLOPS = 2e7
# MEASURE. GEMM inner size (Cg*taps) below which a GEMM is memory bound: with
# inner size k a GEMM does 2k FLOPs per output element written; at 3 TB/s and
# 4 B/elem that is below the FP32 ridge point (67e12/0.75e12 ~ 90 FLOP/elem)
# for k < 45.  32 keeps depthwise 3x3/5x5 (9, 25) on direct.
MIN_GEMM_INNER = 32
# MEASURE. float32 im2col vs tiled, per output position and group (estimates; inner =
# Cg*taps).  im2col writes and cuBLAS re-reads `inner` column elements (8 B each, now at
# copy bandwidth: the 32-bit carried-index lowering issues ~15 instructions per element,
# kernels_cu/im2col.cu) and col2out moves Kg GEMM results once more (write + read, 8 B);
# the SGEMM runs 2*Kg*inner FLOPs at ~85% of 67 TFLOP/s, the tiled kernel the same FLOPs at
# ~55% (its shared-load bound).  im2col wins when
#     8*(inner + Kg)/BW < 2*Kg*inner*(1/0.55 - 1/0.85)/67e12
#  <=> Kg*inner/(Kg + inner) > 8*67e12 / (2*0.642*BW) = IM2COL_KNEE:
# 139 at an H100's 3.0 TB/s (DeviceFacts' default), 87 at the H200's 4.8 TB/s.  ResNet-50
# 3x3 C=K=256 (inner 2304): 230 -> im2col; C=K=128: 115 -> tiled; C=K=64: 58 -> tiled.
# (The old rule, Kg >= 96, assumed the lowering at copy bandwidth while it ran at ~0.5 TB/s
# on integer work, and left the col2out pass out.)
IM2COL_KNEE = 139


def im2col_amortised(kg: int, inner: int) -> bool:
    """float32: the SGEMM's speed over the tiled kernel repays the lowering (IM2COL_KNEE)."""
    return kg * inner >= IM2COL_KNEE * (kg + inner)


# MEASURE. The depthwise kernel is taken for 2-D layers only: a 1-D layer (H = 1) would
# use 1 of the tile's 8 rows; direct's one-thread-per-output coalesces fine there.
DEPTHWISE_ND = 2
# MEASURE. Output tile utilisation below which the 8x16 tile yields to 4x8.
TILE_UTIL_MIN = 0.75
# MEASURE. float16 tensor-core implicit GEMM vs im2col + cuBLAS HGEMM.  mma.sync on H100
# reaches only ~1/3-1/2 of the ~790 TFLOP/s a wgmma bf16 GEMM reaches (a published H100
# SXM figure, not a run of these kernels), i.e. ~260-400 TFLOP/s,
# and the 128-channel N tile is Kg/128 used for Kg < 128: at Kg = 64 ~130-200 TFLOP/s.
# im2col writes and re-reads every column element (2 + 2 B at 3 TB/s = 1.3 ps) for 2*Kg
# FLOPs of GEMM (0.2 ps at ~600 TFLOP/s for Kg = 64): the lowering is ~6x the GEMM, so the
# implicit GEMM's ~0.8 ps wins down to small Kg; below IGEMM_MIN_KG the wasted N tile and
# the staging copy (4 B per input element) make the FMA kernels competitive.  Pointwise
# 1x1/stride-1 layers need no lowering and stay on cuBLAS (rule 2).
IGEMM_MIN_KG = 32


def _tile_util(tile, spec: ConvSpec) -> float:
    TP, TQ, TK = tile[:3]
    P, Q = spec.out_size if spec.nd == 2 else (1, spec.out_size[0])
    up = P / (math.ceil(P / TP) * TP)
    uq = Q / (math.ceil(Q / TQ) * TQ)
    uk = spec.k_per_group / (math.ceil(spec.k_per_group / TK) * TK)
    return up * uq * uk


def choose(spec: ConvSpec, facts: DeviceFacts | None = None,
           precision: str = "highest") -> tuple[str, dict, list[str]]:
    """-> (variant name, config, reasons).  Pure: depends on spec, facts and the float32
    precision only (implicit_gemm takes float32 at 'high'/'medium': its supports())."""
    facts = facts or DeviceFacts()
    reasons: list[str] = []
    ok = {n: (variants.get(n).supports(spec, precision=precision) if n == "implicit_gemm"
              else variants.get(n).supports(spec)) for n in variants.conv_variant_names()}

    def pick(name: str, why: str):
        if not ok[name][0]:
            raise AssertionError(f"dispatcher picked {name!r}, which refuses the spec: {ok[name][1]}")
        reasons.append(why)
        if name == "implicit_gemm":
            return name, variants.get(name).default_config(spec, facts, precision), reasons
        return name, variants.get(name).default_config(spec, facts), reasons

    taps = math.prod(spec.kernel)
    inner = spec.c_per_group * taps
    kg = spec.k_per_group
    flops = spec.flops
    reasons.append(f"GEMM view per group: M=Kg={kg}, N=batch*outputs={spec.n * math.prod(spec.out_size)}, "
                   f"K=Cg*taps={inner}; {flops:.3g} FLOP")

    if spec.dtype.kind == "c":
        return pick("im2col", "complex dtype: only im2col (cuBLAS complex GEMM) handles complex")
    big_gemm = inner >= MIN_GEMM_INNER and kg >= 16 and flops >= TINY_FLOPS
    if ok["im2col"][0] and big_gemm and is_pointwise(spec):
        return pick("im2col", "pointwise 1x1/stride 1/unpadded: x is the GEMM operand, no lowering")
    if spec.c_per_group == 1 and spec.nd == DEPTHWISE_ND and ok["depthwise"][0]:
        # MEASURE. Taken for every such layer, down to the tiny ones: one launch either
        # way, and the napkin math (kernels_cu/conv2d_depthwise.cu) puts it at ~45
        # instructions per output, under the ~56 an fp32 output may spend at 4.8 TB/s
        # (~75-90% of copy bandwidth, estimate), where direct issues 9 L1 loads and ~100
        # instructions per output (~1/2 of it).  The depthwise data and weight gradients
        # are routed inside gpuconv/cuda/transpose.py and wgrad.py (dgrad_supports /
        # conv2d_depthwise_wgrad.supports), not here.
        return pick("depthwise", f"one input channel per group (depth multiplier {kg}): memory "
                                 f"bound; plane tile + halo in shared memory, taps in registers")
    if inner < MIN_GEMM_INNER:
        return pick("direct", f"GEMM inner size Cg*taps={inner} < {MIN_GEMM_INNER}: memory bound, "
                              f"no reuse for a tile or a GEMM to exploit (depthwise-like)")
    if flops < TINY_FLOPS:
        return pick("direct", f"{flops:.3g} FLOP < {TINY_FLOPS:.0e}: launch-latency bound, one launch wins")
    if ok.get("implicit_gemm", (False,))[0] and big_gemm and kg >= IGEMM_MIN_KG and \
            tuple(facts.cc) >= IGEMM_MIN_CC:
        return pick("implicit_gemm", f"{spec.dtype} ({precision}), Kg={kg} >= {IGEMM_MIN_KG}, sm_{facts.cc[0]}{facts.cc[1]}: tensor "
                                     f"cores (mma.sync) without im2col's column-matrix round trip")
    if spec.dtype != np.float32 and ok["im2col"][0] and big_gemm:
        return pick("im2col", f"{spec.dtype} with a large GEMM: cuBLAS "
                              f"({'tensor cores' if spec.dtype == np.float16 else 'DGEMM'}) beats FMA kernels")
    if ok["im2col"][0] and big_gemm and im2col_amortised(kg, inner):
        return pick("im2col", f"Kg*inner/(Kg+inner) = {kg * inner / (kg + inner):.0f} >= {IM2COL_KNEE}: "
                              f"cuBLAS SGEMM amortises the lowering")
    if spec.nd == 3:
        name = "im2col" if (ok["im2col"][0] and big_gemm) else "direct"
        return pick(name, "3-D: no tiled 3-D kernel; " + ("GEMM large enough for im2col" if name == "im2col"
                                                            else "GEMM too small for im2col"))
    tiled = [n for n in variants.conv_variant_names() if n.startswith("tiled_") and ok[n][0]]
    if tiled:
        utils = {n: _tile_util(TILES[n], spec) for n in tiled}
        best = "tiled_smem" if utils.get("tiled_smem", 0) >= TILE_UTIL_MIN else max(utils, key=utils.get)
        reasons.append("tile utilisation " + ", ".join(f"{n}={u:.2f}" for n, u in utils.items()))
        return pick(best, f"2-D real, Kg*inner/(Kg+inner) < {IM2COL_KNEE}: shared-memory tiling, "
                          f"best-used tile")
    why = "; ".join(f"{n}: {ok[n][1]}" for n in ok if n.startswith("tiled_"))
    return pick("direct", f"no tiled kernel fits ({why})")


def explain(spec: ConvSpec, facts: DeviceFacts | None = None) -> str:
    """The dispatcher's choice for `spec` and why, as text."""
    name, config, reasons = choose(spec, facts)
    lines = [f"{spec.nd}-D conv N={spec.n} C={spec.c} K={spec.k} in={spec.in_size} kernel={spec.kernel} "
             f"stride={spec.stride} pad={spec.pad} dilation={spec.dilation} groups={spec.groups} "
             f"dtype={spec.dtype}",
             f"-> {name} {config}"]
    lines += [f"   because: {r}" for r in reasons]
    for n in variants.conv_variant_names():
        s, why = variants.get(n).supports(spec)
        lines.append(f"   {n:18s} {'supports' if s else 'refuses '}: {why}")
    return "\n".join(lines)
