"""Depthwise-separable convolution on a device backend: the fused kernel
(kernels_cu/separable_fused.cu) or two passes (the depthwise conv, then the 1x1 conv,
each through gpuconv.cuda.conv.forward and its dispatcher).

    forward(x, dw, pw, b, spec, activation=None, algorithm="auto", backend=None, out=None)

spec: the DEPTHWISE step's ConvSpec (groups = C, weight (C*m, 1, *kernel)); pw: the
pointwise weight (K, C*m, 1[, 1]); b: (K,) or None, added after the pointwise step, then
`activation`.  Returns (N, K, *spec.out_size).  algorithm: "fused", "two_pass" or "auto"
(`choose(spec, K)`).  The fused kernel is 2-D (1-D as H=1) and needs the tile's C*m
intermediate channels in shared memory (`fused_supports`).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import activations
from ..spec import ConvSpec
from ._types import REAL
from .backend import default_backend
from .conv import check_array, forward as conv_forward, output_array
from .launchers import I32, INT32_MAX, SMEM_LIMIT, _bias_args, _geom2
from .ops_modules import SEPARABLE_INSTANTIATIONS, SEPARABLE_MODULE, SEPARABLE_TILE, separable_name

THREADS = 128
ALGORITHMS = ("auto", "fused", "two_pass")
# MEASURE. The fused kernel's pointwise step is an FMA loop (no tensor cores, ~1.25 loads
# per FMA); two passes move 2 x mid more bytes but run the 1x1 step on cuBLAS.  Napkin
# math (kernels_cu/separable_fused.cu header): fused wins while the pointwise FLOPs per
# output position, 2*C*m*K, stay below what the saved mid traffic costs, roughly
# C*m*K <= 64*64 on an H100 (2 x C*m x 4 B of mid per position at 3 TB/s vs 2*C*m*K
# FLOP at ~15 TFLOP/s: K <= ~40, rounded up to 64).  Measure both on a GPU.
FUSED_MAX_CMK = 64 * 64


def _pw_spec(spec: ConvSpec, k: int) -> ConvSpec:
    cm = spec.k
    nd = spec.nd
    return replace(spec, c=cm, k=k, in_size=spec.out_size, kernel=(1,) * nd, stride=(1,) * nd,
                   pad=((0, 0),) * nd, dilation=(1,) * nd, groups=1)


def fused_smem_bytes(spec: ConvSpec) -> int:
    acc = 8 if spec.dtype == np.float64 else 4
    TP, TQ, _ = SEPARABLE_TILE
    return spec.k * TP * TQ * acc


def fused_supports(spec: ConvSpec, k: int) -> tuple[bool, str]:
    if spec.dtype not in REAL:
        return False, f"dtype {spec.dtype} (the fused kernel is real-only)"
    if spec.nd not in (1, 2):
        return False, f"{spec.nd}-D (the fused kernel is 2-D; 1-D runs as H=1)"
    if spec.c_per_group != 1:
        return False, "the first step is not depthwise (C/groups != 1)"
    smem = fused_smem_bytes(spec)
    if smem > SMEM_LIMIT:
        return False, (f"the tile's {spec.k} intermediate channels need {smem} B of shared memory "
                       f"(> {SMEM_LIMIT})")
    TP, TQ, _ = SEPARABLE_TILE
    *_, P, Q = _geom2(spec)[:6]
    blocks = spec.n * (-(-P // TP)) * (-(-Q // TQ))
    if blocks > INT32_MAX or k > INT32_MAX:
        return False, "grid exceeds the launch limit"
    return True, "depthwise 2-D/1-D whose intermediate tile fits in shared memory"


def choose(spec: ConvSpec, k: int) -> tuple[str, str]:
    """(algorithm, reason): fused only when it fits and the pointwise step is small."""
    ok, why = fused_supports(spec, k)
    if not ok:
        return "two_pass", f"fused refused: {why}"
    if spec.k * k > FUSED_MAX_CMK:
        return "two_pass", (f"C*m*K = {spec.k * k} > {FUSED_MAX_CMK}: the 1x1 step is better on a "
                            f"GEMM than in the fused FMA loop")
    return "fused", f"C*m*K = {spec.k * k} <= {FUSED_MAX_CMK} and the mid tile fits: no round trip"


def forward(x, dw, pw, b, spec: ConvSpec, activation=None, algorithm="auto", backend=None, out=None):
    backend = default_backend() if backend is None else backend
    xp = backend.xp
    activation = activations.check_activation(activation)
    act = activations.ACTIVATION_CODES[activation]
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    k = int(pw.shape[0])
    check_array("input", x, spec.input_shape, spec.dtype)
    check_array("depthwise_weight", dw, spec.weight_shape, spec.dtype)
    check_array("pointwise_weight", pw, (k, spec.k) + (1,) * spec.nd, spec.dtype)
    if b is not None:
        check_array("bias", b, (k,), spec.dtype)
    y = output_array(xp, out, (spec.n, k) + spec.out_size, spec.dtype)
    if algorithm == "auto":
        algorithm, _ = choose(spec, k)
    if algorithm == "two_pass":
        mid = conv_forward(x, dw, None, spec, backend=backend)
        return conv_forward(mid, pw, b, _pw_spec(spec, k), activation=activation, backend=backend,
                            out=y)
    ok, why = fused_supports(spec, k)
    if not ok:
        raise ValueError(f"the fused separable kernel refuses this layer: {why}")
    if y.size == 0:
        return y
    H, W, R, S, P, Q, sh, sw, ph, pw_, dh, dw_ = _geom2(spec)
    TP, TQ, _ = SEPARABLE_TILE
    blocks = spec.n * (-(-P // TP)) * (-(-Q // TQ))
    fn = backend.get_function(SEPARABLE_MODULE, SEPARABLE_INSTANTIATIONS, separable_name(spec.dtype, act))
    b = None if b is None else xp.ascontiguousarray(b)
    pw = xp.ascontiguousarray(pw)
    bias, has_bias = _bias_args(b, pw)
    fn((blocks,), (THREADS,),
       (xp.ascontiguousarray(x), xp.ascontiguousarray(dw), pw, bias, y,
        I32(spec.n), I32(spec.c), I32(H), I32(W), I32(spec.k), I32(k), I32(R), I32(S), I32(P), I32(Q),
        I32(sh), I32(sw), I32(ph), I32(pw_), I32(dh), I32(dw_), has_bias),
       shared_mem=fused_smem_bytes(spec))
    return y
