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

Across the rules:
  - bfloat16: implicit_gemm is its only kernel (taken at any size, cc >= 8.0);
    `supports_dtype(spec, precision, facts)` says whether the dispatcher has a kernel for
    the spec's dtype, so the engine widens to float32 only where it has none.
  - float32 precision 'high'/'medium' reaches implicit_gemm under rule 3b's size rule;
    'highest' never (exact FP32 stays on the FMA kernels and cuBLAS SGEMM).
  - facts.capturing (the stream is captured into a CUDA graph): CAPTURE_UNSAFE variants are
    refused and the rules fall through to the next; complex, whose only kernel is im2col,
    is a ValueError.
  - every pick ends with its grid in waves on the device (`occupancy`): CTAs over
    (CTAs per SM x SMs); below one full wave the reasons say why not.
"""
from __future__ import annotations

from typing import NamedTuple

import math

import numpy as np

from . import variants
from .facts import DeviceFacts
from .families import conv2d_depthwise as _depthwise, conv2d_implicit_gemm as _igemm
from .families import conv2d_direct as _direct, conv2d_tiled_smem as _tiled
from .families.conv2d_implicit_gemm import MIN_CC as IGEMM_MIN_CC
from .families.conv2d_tiled_smem import TILES
from .families.im2col import is_pointwise
from ..spec import ConvSpec, is_bfloat16

# Variants that cannot run while the current stream is captured into a CUDA graph.  im2col's
# GEMM goes through cuBLAS (CuPy 14 raises NotImplementedError from cublas.setStream while a
# stream captures) and it retries a smaller batch chunk after an out-of-memory error (a
# retry is host control flow a graph cannot record).  Every other variant is kernel launches
# on the stream and allocations from CuPy's pool: no host synchronisation, no cudaMemGetInfo
# (device_facts skips it while capturing).
CAPTURE_UNSAFE = {
    "im2col": "the stream is being captured into a CUDA graph: im2col's GEMM calls cuBLAS, "
              "which CuPy refuses during capture, and it retries on out-of-memory",
}

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
    ok = supported_variants(spec, facts, precision)

    def pick(name: str, why: str):
        if not ok[name][0]:
            raise AssertionError(f"dispatcher picked {name!r}, which refuses the spec: {ok[name][1]}")
        reasons.append(why)
        config = default_config(name, spec, facts, precision)
        reasons.extend(occupancy_reasons(name, spec, facts, config, precision))
        return name, config, reasons

    taps = math.prod(spec.kernel)
    inner = spec.c_per_group * taps
    kg = spec.k_per_group
    flops = spec.flops
    reasons.append(f"GEMM view per group: M=Kg={kg}, N=batch*outputs={spec.n * math.prod(spec.out_size)}, "
                   f"K=Cg*taps={inner}; {flops:.3g} FLOP")

    if spec.dtype.kind == "c":
        if not ok["im2col"][0]:
            raise ValueError(f"complex convolution (dtype {spec.dtype}) cannot run while the stream is "
                             f"captured into a CUDA graph: its only kernel, im2col, calls cuBLAS, which "
                             f"CuPy refuses during capture; run it outside the capture")
        return pick("im2col", "complex dtype: only im2col (cuBLAS complex GEMM) handles complex")
    if is_bfloat16(spec.dtype):
        if not (ok["implicit_gemm"][0] and tuple(facts.cc) >= IGEMM_MIN_CC):
            why = ok["implicit_gemm"][1] if not ok["implicit_gemm"][0] else \
                f"compute capability {facts.cc[0]}.{facts.cc[1]} < {IGEMM_MIN_CC[0]}.{IGEMM_MIN_CC[1]}"
            raise ValueError(f"no bfloat16 kernel for this convolution ({why}); supports_dtype() is False "
                             f"and the engine computes it in float32")
        return pick("implicit_gemm", f"bfloat16: the tensor-core implicit GEMM is its only kernel "
                                     f"(mma.sync m16n8k16 .bf16, sm_{facts.cc[0]}{facts.cc[1]})")
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


def supported_variants(spec: ConvSpec, facts: DeviceFacts | None = None,
                       precision: str = "highest") -> dict[str, tuple[bool, str]]:
    """name -> (ok, reason) for every registered variant: its supports() (with the float32
    precision where the answer depends on it), variants without Variant.padding_modes
    refused for a non-zero padding mode, and CAPTURE_UNSAFE variants refused while
    facts.capturing."""
    facts = facts or DeviceFacts()
    ok = {}
    for n in variants.conv_variant_names():
        v = variants.get(n)
        ok[n] = v.supports(spec, precision=precision) if n == "implicit_gemm" else v.supports(spec)
        if spec.padding_mode != "zeros" and not v.padding_modes and ok[n][0]:
            ok[n] = (False, f"padding_mode {spec.padding_mode!r} (this kernel pads with zeros only)")
        if facts.capturing and n in CAPTURE_UNSAFE and ok[n][0]:
            ok[n] = (False, CAPTURE_UNSAFE[n])
    return ok


def grad_forward_problems(op: str, spec: ConvSpec) -> list[ConvSpec]:
    """The forward problems gpuconv.derived solves gradient `op` of `spec` as, on the
    tensor-core route: dgrad's stride phases (those some tap reaches), wgrad's one."""
    from ..derived import dgrad_phases, wgrad_fprop_spec
    if op == "dgrad":
        return [f for _, f, _, _ in dgrad_phases(spec) if f is not None]
    if op == "wgrad":
        return [wgrad_fprop_spec(spec)]
    raise ValueError(f"op must be 'dgrad' or 'wgrad', got {op!r}")


def grad_supported_by_implicit_gemm(op: str, spec: ConvSpec, facts: DeviceFacts | None = None,
                                    precision: str = "highest") -> tuple[bool, str]:
    """(ok, why): the implicit GEMM takes every forward problem of gradient `op`
    (grad_forward_problems) on this device and at this float32 precision."""
    facts = facts or DeviceFacts()
    subs = grad_forward_problems(op, spec)
    if not subs:
        return False, "no kernel tap reaches the input (the gradient is 0 + bias)"
    if tuple(facts.cc) < IGEMM_MIN_CC:
        return False, f"compute capability {facts.cc[0]}.{facts.cc[1]} < {IGEMM_MIN_CC[0]}.{IGEMM_MIN_CC[1]}"
    for f in subs:
        ok, why = supported_variants(f, facts, precision)["implicit_gemm"]
        if not ok:
            return False, f"implicit_gemm refuses the derived forward problem: {why}"
    return True, "implicit_gemm takes every derived forward problem"


# MEASURE. Variants whose hot loop reuses operands from shared memory or registers, by
# the SASS of their innermost loop on sm_90 (`gpuconv kernels --sass`, float32):
# tiled_smem 1.8 instructions per FMA (57% FMA share, 0.38 LDS and no global load per
# FMA), against the data-gradient gather conv_transpose.cu at 5.75 per FMA (17% FMA
# share, 1.25 global loads per FMA): an estimated ~3x in issue-bound time for the same
# multiply-adds.  im2col and implicit_gemm are GEMMs (cuBLAS, tensor cores).
REUSE_VARIANTS = ("implicit_gemm", "im2col", "tiled_smem", "tiled_smem_small")


class GradPlan(NamedTuple):
    """grad_plan's answer: the route, why, and choose()'s variant for each derived forward
    problem (empty unless route == "forward")."""
    route: str
    why: str
    variants: dict

    @property
    def tensor_cores(self) -> bool:
        return self.route == "forward" and "implicit_gemm" in self.variants.values()


def grad_route(op: str, spec: ConvSpec, facts: DeviceFacts | None = None,
               precision: str = "highest") -> tuple[str, str]:
    """(route, why) of grad_plan."""
    plan = grad_plan(op, spec, facts, precision)
    return plan.route, plan.why


def grad_plan(op: str, spec: ConvSpec, facts: DeviceFacts | None = None,
              precision: str = "highest") -> GradPlan:
    """The route of gradient `op` ("dgrad" or "wgrad") of the forward problem `spec`:

        "forward"    as forward problems (gpuconv.derived) on the variants choose() picks
                     for them: dgrad as one stride-1 problem per stride phase (no inserted
                     zeros), wgrad as one problem reducing over N*P*Q
        "dedicated"  the gradient kernels (conv_transpose.cu, conv_wgrad.cu, the depthwise
                     gradients)

    Rule: "forward" when choose() sends every derived problem to a kernel with operand
    reuse, else "dedicated":
      dgrad  every stride phase to REUSE_VARIANTS (the ~3x estimate above over
             conv_transpose.cu's gather); exact FP32 and float64 phases run on the tiled
             FMA kernels or cuBLAS
      wgrad  its problem to a GEMM (implicit_gemm or im2col): it has a P x Q kernel,
             which the tiled kernels do not take (their halo is the kernel), and
             conv_wgrad.cu's hot loop is 4-8% FMAs (SASS, sm_90), so even im2col's
             lowering of R*S x |x| elements wins (~0.35 ms against ~3.7 ms for ResNet-50's
             32x64x56x56 layer in float64, estimate)
    Tensor cores where the dtype has them (float16/bfloat16, float32 at 'high'/'medium';
    2-D; the forward size rule: Kg >= IGEMM_MIN_KG of the derived problem, i.e. C/g for
    dgrad and K/g for wgrad), as cuDNN and CUTLASS run their gradients.  A stride phase
    that is a small 1x1 problem may go to im2col (cuBLAS without lowering; 3x3 stride 2
    padding 1 has phases of 1x1, 1x2, 2x1 and 2x2 taps).  Small problems (choose():
    direct) and depthwise gradients (choose(): depthwise, which has dedicated gradient
    kernels) stay "dedicated".
    MEASURE: the derived forms pay copies a native gradient kernel would not (dgrad:
    each phase's dx written once more, strided; wgrad: x and dy transposed once,
    2 x (|x| + |dy|) bytes, ~13 us for ResNet-50's 32x64x56x56 fp16 layer at 4.8 TB/s
    against ~12 us of its 7.4 GFLOP at ~600 TFLOP/s -- an estimate).  Pure."""
    facts = facts or DeviceFacts()
    subs = grad_forward_problems(op, spec)
    if not subs:
        return GradPlan("dedicated", "no kernel tap reaches the input (the gradient is 0 + bias)", {})
    names = {}
    whys = {}
    for f in subs:
        try:
            name, _, reasons = choose(f, facts, precision)
        except ValueError as exc:
            return GradPlan("dedicated", str(exc), {})
        names[f], whys[f] = name, (reasons[1] if len(reasons) > 1 else "")
    allowed = REUSE_VARIANTS if op == "dgrad" else ("implicit_gemm", "im2col")
    bad = [f for f in subs if names[f] not in allowed]
    if bad:
        return GradPlan("dedicated", f"a derived forward problem goes to {names[bad[0]]}: "
                                     f"{whys[bad[0]]}", {})
    what = f"{len(subs)} stride-phase forward problem(s)" if op == "dgrad" else \
        "one forward problem reducing over N*P*Q"
    on = "tensor cores, " if "implicit_gemm" in names.values() else ""
    return GradPlan("forward", f"{op} as {what} on {on}{', '.join(sorted(set(names.values())))}",
                    names)


def grad_on_tensor_cores(op: str, spec: ConvSpec, facts: DeviceFacts | None = None,
                         precision: str = "highest") -> tuple[bool, str]:
    """(whether, why): gradient `op` runs on the tensor-core implicit GEMM (grad_plan's
    "forward" route with implicit_gemm among its variants)."""
    facts = facts or DeviceFacts()
    ok, why = grad_supported_by_implicit_gemm(op, spec, facts, precision)
    if not ok:
        return False, why
    plan = grad_plan(op, spec, facts, precision)
    if plan.route == "forward" and not plan.tensor_cores:
        return False, f"no derived problem goes to implicit_gemm ({plan.why})"
    return plan.tensor_cores, plan.why


def capture_safe(name: str) -> bool:
    """Whether variant `name` may run while the stream is captured into a CUDA graph."""
    return name not in CAPTURE_UNSAFE


def supports_dtype(spec: ConvSpec, precision: str = "highest", facts: DeviceFacts | None = None) -> bool:
    """Whether the dispatcher has a forward kernel for spec's dtype at this shape (and float32
    precision) on the device `facts` describes.  False for bfloat16 where the implicit GEMM
    refuses (1-D/3-D, compute capability < 8.0): the engine then computes in float32 and
    rounds once.  Pure, like choose()."""
    facts = facts or DeviceFacts()
    ok = supported_variants(spec, facts, precision)
    if is_bfloat16(spec.dtype):
        return ok["implicit_gemm"][0] and tuple(facts.cc) >= IGEMM_MIN_CC
    return any(v[0] for v in ok.values())


def default_config(name: str, spec: ConvSpec, facts: DeviceFacts, precision: str = "highest") -> dict:
    """Variant `name`'s configuration for spec on `facts` (the implicit GEMM's plan takes the
    float32 precision)."""
    if name == "implicit_gemm":
        return variants.get(name).default_config(spec, facts, precision)
    return variants.get(name).default_config(spec, facts)


# Per-SM limits of sm_80/sm_90 for the residency estimate: 2048 threads, 32 blocks, shared
# memory 228 KiB (sm_90) / 164 KiB (sm_80) with 1 KiB reserved per block.  Registers are
# modelled for the implicit GEMM (its __launch_bounds__ cap) and the depthwise kernel (its
# ptxas table, 64-153 per thread at 256 threads: 4 down to 1 blocks per SM); the other FMA
# kernels are below 64 registers per thread at 256 threads (ptxas, `gpuconv kernels`),
# where threads bind first.
SM_THREADS = 2048
SM_BLOCKS = 32
SM_REGISTERS = 65536               # 32-bit registers per SM, sm_80 and sm_90
# MEASURE. cuBLAS picks its own tile and split-K (heuristics); the wave count of im2col's GEMM
# is estimated at a 128x128 tile, 2 resident per SM -- an estimate of what cuBLAS launches.
CUBLAS_TILE = (128, 128)
CUBLAS_CTAS_PER_SM = 2


def _smem_per_sm(facts: DeviceFacts) -> int:
    return (228 if tuple(facts.cc) >= (9, 0) else 164) * 1024


def _resident(threads: int, smem: int, facts: DeviceFacts, regs: int | None = None) -> int:
    """Blocks per SM by threads, shared memory (+1 KiB reserved per block) and, when known,
    registers per thread (allocated in units of 8 per thread from the 64K-register file)."""
    by_regs = SM_REGISTERS // (-(-regs // 8) * 8 * threads) if regs else SM_BLOCKS
    return max(1, min(SM_THREADS // threads, _smem_per_sm(facts) // (smem + 1024), SM_BLOCKS, by_regs))


def occupancy(name: str, spec: ConvSpec, facts: DeviceFacts | None = None, config: dict | None = None,
              precision: str = "highest") -> dict:
    """The grid of variant `name` for spec on `facts`: {ctas, ctas_per_sm, waves, what, plan}.
    waves = ctas / (ctas_per_sm x SMs): below 1 some SMs (or CTA slots) idle for the whole
    launch.  'plan' is the implicit GEMM's plan (tile, split-K, the napkin-math estimate of %
    of peak), None for other variants.  Pure; every figure an estimate until a GPU measures."""
    facts = facts or DeviceFacts()
    config = default_config(name, spec, facts, precision) if config is None else config
    plan = None
    if name == "implicit_gemm":
        plan = _igemm.plan(spec, facts, precision)
        tile, split = config.get("tile", plan["tile"]), int(config.get("split_k", plan["split_k"]))
        if (tile, split) != (plan["tile"], plan["split_k"]):       # a configuration other than the plan's
            est = _igemm._estimate(spec, facts, _igemm.TILES[tile], split, plan["precision"])
            plan = {**plan, **est, "tile": tile, "split_k": split}
        ctas, per_sm = plan["ctas"], plan["ctas_per_sm"]
        what = f"{tile} tiles x split-K {split}"
    elif name.startswith("tiled_"):
        tile = _tiled.TILES[name]
        (gx, gy, _), (threads, _, _) = _tiled.grid(tile, spec)
        ctas = gx * gy
        smem = _tiled.smem_bytes(tile, spec, int(config.get("ct") or _tiled.stage_channels(tile, spec)))
        per_sm = _resident(threads, smem, facts)
        what = f"{tile[0]}x{tile[1]} outputs x {tile[2]} channels per block, {threads} threads"
    elif name == "depthwise":
        cfg = config if "tile" in config else _depthwise.config(spec)
        (gx, gy, gz), block = _depthwise.grid(cfg["tile"], spec, cfg["planes"])
        ctas = gx * gy * gz
        per_sm = _resident(math.prod(block), _depthwise.smem_bytes(cfg["tile"], spec, cfg["planes"]), facts,
                           _depthwise.registers(spec))
        what = f"{cfg['tile']} plane tiles x {cfg['planes']} planes per block"
    elif name == "im2col":
        # pointwise: one batched GEMM over all images; else one per chunk of `chunk` images
        nb = spec.n if is_pointwise(spec) else min(spec.n, int(config.get("chunk", spec.n)))
        L = math.prod(spec.out_size)
        ctas = -(-spec.k_per_group // CUBLAS_TILE[0]) * -(-(nb * L) // CUBLAS_TILE[1]) * spec.groups
        per_sm = CUBLAS_CTAS_PER_SM
        what = (f"cuBLAS GEMM of {spec.k_per_group} x {nb * L} per group, at an assumed "
                f"{CUBLAS_TILE[0]}x{CUBLAS_TILE[1]} tile")
    else:                                                          # direct: one thread per output
        ctas = -(-math.prod(spec.output_shape) // _direct.THREADS)
        per_sm = _resident(_direct.THREADS, 0, facts)
        what = f"one thread per output, {_direct.THREADS} per block"
    waves = ctas / max(1, per_sm * facts.sm_count)
    return {"ctas": int(ctas), "ctas_per_sm": int(per_sm), "waves": waves, "what": what, "plan": plan}


def occupancy_reasons(name: str, spec: ConvSpec, facts: DeviceFacts, config: dict,
                      precision: str = "highest") -> list[str]:
    """The pick's grid in waves, its napkin-math estimate (implicit GEMM), and below one
    full wave the reason the dispatcher accepts it (a line starting 'below one wave:')."""
    occ = occupancy(name, spec, facts, config, precision)
    slots = occ["ctas_per_sm"] * facts.sm_count
    out = [f"grid: {occ['ctas']} CTAs ({occ['what']}), {occ['ctas_per_sm']} per SM x {facts.sm_count} SMs "
           f"= {occ['waves']:.2f} waves (estimate)"]
    p = occ["plan"]
    if p is not None:
        out.append(f"estimate: {p['est_pct_peak']:.0f}% of the dtype's dense tensor-core peak, "
                   f"{p['est_us']:.1f} us (napkin math, not measured on a GPU)")
    if occ["waves"] >= 1:
        return out
    outputs = math.prod(spec.output_shape)
    if name == "implicit_gemm":
        # the fullest grid the plan could have launched: the smallest tile at the most splits
        fullest = max((_igemm._estimate(spec, facts, t, s, p["precision"])["waves"], n, s)
                      for n, t in _igemm.TILES.items() for s in _igemm.SPLITS
                      if s == 1 or p["k_tiles"] // s >= _igemm.MIN_KTILES_PER_SPLIT)
        if fullest[0] < 1:
            out.append(f"below one wave: the layer is smaller than the device -- its fullest grid "
                       f"({fullest[1]} tiles x split-K {fullest[2]}, at least "
                       f"{_igemm.MIN_KTILES_PER_SPLIT} k-tiles per split) is {fullest[0]:.2f} waves")
        else:
            out.append(f"below one wave: a fuller grid ({fullest[1]} x split-K {fullest[2]}: "
                       f"{fullest[0]:.2f} waves) was estimated slower (smaller warp tiles or split-K "
                       f"partials cost more than the idle slots); the busiest SM holds "
                       f"{p['busiest_sm_warps']} warps (>= {_igemm.WARPS_TO_SATURATE} keep its tensor "
                       f"cores issuing)")
    elif name == "im2col":
        out.append(f"below one wave: cuBLAS chooses the GEMM's tile and split-K itself (its heuristics "
                   f"split K for short grids); the {CUBLAS_TILE[0]}x{CUBLAS_TILE[1]} grid here is an assumption")
    else:
        spread = (f"every SM gets ~{occ['ctas'] / facts.sm_count:.1f} of its {occ['ctas_per_sm']} block slots"
                  if occ["ctas"] >= facts.sm_count else "smaller than the device")
        out.append(f"below one wave: the layer has {outputs} outputs, {occ['ctas']} blocks of this kernel "
                   f"for {slots} block slots -- {spread}; "
                   + ("launch-latency bound (one launch)" if spec.flops < TINY_FLOPS else
                      "no tensor-core kernel is allowed here (dtype/precision) and a smaller FMA tile "
                      "would re-read the halo and filter more"))
    return out


def explain(spec: ConvSpec, facts: DeviceFacts | None = None, precision: str = "highest",
            op: str = "fprop") -> str:
    """The dispatcher's choice for `spec` (at float32 `precision`) and why, as text: the
    variant, its configuration, the grid in waves on the device, the implicit GEMM's tile,
    split-K and napkin-math estimate of % of peak (estimates until a GPU measures them).
    op "dgrad" / "wgrad": the gradient's route (grad_route) and, on the "forward" route,
    the same text for each derived forward problem."""
    facts = facts or DeviceFacts()
    if op in ("dgrad", "wgrad"):
        route, why = grad_route(op, spec, facts, precision)
        lines = [f"{op} of the forward problem {spec}", f"-> {route}: {why}"]
        if route == "forward":
            for i, f in enumerate(grad_forward_problems(op, spec)):
                lines.append(f"derived forward problem {i}:")
                lines += ["   " + ln for ln in explain(f, facts, precision).splitlines()]
        return "\n".join(lines)
    if op != "fprop":
        raise ValueError(f"op must be one of 'fprop', 'dgrad', 'wgrad', got {op!r}")
    name, config, reasons = choose(spec, facts, precision)
    lines = [f"{spec.nd}-D conv N={spec.n} C={spec.c} K={spec.k} in={spec.in_size} kernel={spec.kernel} "
             f"stride={spec.stride} pad={spec.pad} dilation={spec.dilation} groups={spec.groups} "
             f"dtype={spec.dtype} precision={precision} on {facts.name} ({facts.sm_count} SMs, "
             f"sm_{facts.cc[0]}{facts.cc[1]}{', capturing' if facts.capturing else ''})",
             f"-> {name} {config}"]
    lines += [f"   because: {r}" for r in reasons]
    for n, (s, why) in supported_variants(spec, facts, precision).items():
        lines.append(f"   {n:18s} {'supports' if s else 'refuses '}: {why}")
    return "\n".join(lines)
