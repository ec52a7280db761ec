"""Depthwise-separable convolution on a device backend: the fused kernel
(kernels_cu/separable_fused.cu, gpuconv/cuda/families/separable_fused.py) or two passes (the depthwise conv, then the 1x1 conv,
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

from .. import activations
from ..spec import ConvSpec
from .backend import default_backend
from .conv import forward as conv_forward
from .families.separable_fused import launch as launch_fused, supports as fused_supports
from .launch import check_array, output_array

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
    launch_fused(backend, xp.ascontiguousarray(x), xp.ascontiguousarray(dw), xp.ascontiguousarray(pw),
                 None if b is None else xp.ascontiguousarray(b), y, spec, act)
    return y
