"""gpuconv's GPU path: CUDA kernels (kernels_cu/) compiled at run time through CuPy.

    conv.forward(x, w, b, spec, activation, algorithm, backend)   forward convolution
    signal.correlate_core(a, k, out_shape, origin, boundary, fillvalue)
    transpose.forward, wgrad.forward, separable.forward           the operation kernels
    variants.conv_variant_names(), variants.get(name)             the registry
    dispatch.choose(spec, facts, precision), explain(...)          the dispatcher
    autotune.set_autotune(True), autotune.tune(...)                time the candidates once per shape
    compile_check.main(argv)                                       `gpuconv kernels`
    families/<kernel file>.py                                      one module per kernels_cu file
    launch.py                                                      what the launchers share

Nothing here imports CuPy until a kernel is launched, so the registry, the
dispatcher and the compile check work on machines without a GPU.
"""
from __future__ import annotations

from .facts import DeviceFacts
from .variants import conv_variant_names, get


def explain(input, weight=None, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
            dtype=None, facts: DeviceFacts | None = None, precision: str = "highest",
            op: str = "fprop") -> str:
    """Which variant the dispatcher picks for a convolution, and why, as text.

    `input` is a ConvSpec, or the input's shape or array (N, C, *spatial) with
    `weight` the weight's shape or array (K, C/groups, *kernel); the other
    arguments as gpuconv.conv2d (the dimensionality follows the weight).  `precision` is
    the float32 policy ("highest" | "high" | "medium"); `facts` the device (default: an
    H100).  The text gives the variant, its tile / split-K, the grid in waves and the
    napkin-math estimate of % of peak, labelled as estimates.  `op` "dgrad" / "wgrad":
    the route of that gradient (tensor cores, the forward kernels, or the dedicated
    gradient kernels) and the choice for each forward problem it runs as.
    """
    from ..spec import ConvSpec, make_spec
    from .dispatch import explain as _explain

    if isinstance(input, ConvSpec):
        return _explain(input, facts, precision, op)
    if weight is None:
        raise TypeError("explain needs a ConvSpec, or the input and weight (shapes or arrays)")
    xs = tuple(getattr(input, "shape", input))
    ws = tuple(getattr(weight, "shape", weight))
    bs = None if bias is None else tuple(getattr(bias, "shape", bias))
    dt = dtype if dtype is not None else getattr(input, "dtype", "float32")
    nd = len(ws) - 2
    spec, _ = make_spec(xs, ws, bs, stride, padding, dilation, groups, dt, nd, f"conv{nd}d")
    return _explain(spec, facts, precision, op)


__all__ = ["DeviceFacts", "conv_variant_names", "get", "explain"]
