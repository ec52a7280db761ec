"""Weight gradient of a forward convolution on a device backend (kernels_cu/conv_wgrad.cu,
gpuconv/cuda/families/conv_wgrad.py).

    forward(x, dy, spec, deterministic=True, backend=None, out=None) -> dW (spec.weight_shape)
    wgrad_supports(spec) -> (ok, reason)

x: the forward input (spec.input_shape); dy: the gradient of its output
(spec.output_shape); spec: the forward ConvSpec (1-D or 2-D; `wgrad_supports` names
what is refused, e.g. 3-D, so callers can fall back).

deterministic=True (default): each block reduces a fixed chunk of the N*P*Q positions in
a fixed order and writes its own partial slice; a second kernel sums the slices in
ascending order.  The split count is a function of the spec alone (not of the device),
so the result is bit-identical from run to run and GPU to GPU.
deterministic=False: blocks atomicAdd their sums into one accumulator buffer (less
workspace; float addition order then follows the scheduler).
Float16 accumulates in float32, float32 in float32, float64 in float64.
"""
from __future__ import annotations

from ..spec import ConvSpec
from .backend import default_backend
from .families import conv2d_depthwise_wgrad
from .families.conv_wgrad import launch, plan as wgrad_plan, supports as wgrad_supports, workspace_bytes
from .launch import check_array, output_array


def forward(x, dy, spec: ConvSpec, deterministic=True, backend=None, out=None):
    backend = default_backend() if backend is None else backend
    xp = backend.xp
    check_array("input", x, spec.input_shape, spec.dtype)
    check_array("grad_output", dy, spec.output_shape, spec.dtype)
    dw = output_array(xp, out, spec.weight_shape, spec.dtype)
    if dw.size == 0:
        return dw
    x, dy = xp.ascontiguousarray(x), xp.ascontiguousarray(dy)
    if conv2d_depthwise_wgrad.supports(spec)[0]:
        # depthwise (C/groups == 1): staged plane tiles, register windows, a fixed-order split
        # reduction -- bit-identical whatever `deterministic` says (its workspace is small)
        conv2d_depthwise_wgrad.launch(backend, x, dy, dw, spec)
        return dw
    launch(backend, x, dy, dw, spec, deterministic)
    return dw


__all__ = ["forward", "wgrad_plan", "wgrad_supports", "workspace_bytes"]
