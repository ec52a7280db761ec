"""torch.autograd wrappers: gpuconv convolutions inside a PyTorch training graph.

    gpuconv.torch.conv1d/conv2d/conv3d(input, weight, bias, stride, padding, dilation, groups)
    gpuconv.torch.conv_transpose1d/2d/3d(input, weight, bias, stride, padding,
                                         output_padding, groups, dilation)
    gpuconv.torch.Conv1d/Conv2d/Conv3d   nn.Module with nn.Conv{n}d's constructor

Forward parses and validates once (gpuconv.api / gpuconv.transpose) and keeps
the forward ConvSpec in ctx; backward runs the engine's other two operators of
that same spec (a convolution's dgrad and wgrad; a transposed convolution, the
dgrad of its spec, has fprop and wgrad as its gradients) and sums grad_output
for the bias.  CUDA tensors go to CuPy and back through DLPack without a copy
(gpuconv._array); CPU tensors take the NumPy path, which is how
torch.autograd.gradcheck checks these in float64.  Backward is not itself
differentiable (no double backward).
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch.autograd.function import once_differentiable

from . import engine
from ._array import convert, device_scope, wrap
from .api import parse_conv
from .reference import pad_indices
from .spec import expand_param, resolve_padding
from .transpose import parse_transpose

__all__ = ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d", "Conv1d", "Conv2d", "Conv3d", "ConvNdFunction",
           "ConvTransposeNdFunction"]


def _bias_grad(go, nd):
    dims = (0,) + tuple(range(2, 2 + nd)) if go.dim() == nd + 2 else tuple(range(1, 1 + nd))
    return go.sum(dim=dims)


def _run(op, spec, batched, a, b, **options):
    """Operator `op` of `spec` on torch tensors a, b (unbatched when not `batched`)."""
    ai, bi = convert("a", a), convert("b", b)
    with device_scope(a):
        path = engine.resolve({"a": ai, "b": bi})
        x, y = ai.array, bi.array
        if not batched:
            x = x[None]
            if op == "wgrad":
                y = y[None]
        out = engine.run(op, spec, x, y, path=path, **options)
        if not batched and op != "wgrad":
            out = out[0]
        return wrap(out, ai)


def _mode_maps(spec, x):
    """Per spatial dim, the input index each position of the mode-extended input reads
    (reference.pad_indices), as index tensors on x's device."""
    return [torch.as_tensor(pad_indices(n, lo, hi, spec.padding_mode), device=x.device)
            for n, (lo, hi) in zip(spec.in_size, spec.pad)]


def _valid_spec(spec):
    """The valid (unpadded) convolution of the mode-extended input."""
    size = tuple(n + lo + hi for n, (lo, hi) in zip(spec.in_size, spec.pad))
    return replace(spec, in_size=size, pad=((0, 0),) * spec.nd, padding_mode="zeros")


class ConvNdFunction(torch.autograd.Function):
    """y = conv(x, w) + b; `pad` is resolved ((lo, hi), ...) padding filled by
    `padding_mode` (nn.Conv{n}d's; the kernels resolve it while loading x).

    Backward of a non-zero mode: the extension is a gather, its adjoint a scatter-add,
    so dL/dx is the data gradient of the valid convolution of the extended input
    (padded size) folded back onto x with index_add_ per dim; dL/dw is the weight
    gradient of that valid convolution, on the extended input built here (a transient
    copy: the weight gradient reads every padded position; the forward pass and what
    autograd saves stay unpadded, where nn.Conv{n}d keeps F.pad's copy alive)."""

    @staticmethod
    def forward(ctx, x, w, b, nd, stride, pad, dilation, groups, padding_mode="zeros"):
        path, spec, batched, xi, xa, wa, ba = parse_conv(nd, f"conv{nd}d", x, w, b, stride, pad,
                                                         dilation, groups, padding_mode)
        ctx.save_for_backward(x, w)
        ctx.spec, ctx.batched = engine.with_padding_mode(spec, padding_mode), batched
        with device_scope(x):
            out = engine.run("fprop", spec, xa, wa, path=path, bias=ba, padding_mode=padding_mode)
        return wrap(out if batched else out[0], xi)

    @staticmethod
    @once_differentiable
    def backward(ctx, go):
        x, w = ctx.saved_tensors
        spec, batched = ctx.spec, ctx.batched
        go = go.contiguous()
        gx = gw = gb = None
        lead = 2 if batched else 1
        if spec.padding_mode != "zeros":
            maps, vspec = _mode_maps(spec, x), _valid_spec(spec)
        if ctx.needs_input_grad[0]:
            if spec.padding_mode == "zeros":
                gx = _run("dgrad", spec, batched, go, w)
            else:
                gx = _run("dgrad", vspec, batched, go, w)             # dL/d(extended input)
                for d, idx in enumerate(maps):
                    shape = list(gx.shape)
                    shape[lead + d] = spec.in_size[d]
                    gx = gx.new_zeros(shape).index_add_(lead + d, idx, gx)
        if ctx.needs_input_grad[1]:
            if spec.padding_mode == "zeros":
                gw = _run("wgrad", spec, batched, x, go)
            else:
                xe = x
                for d, idx in enumerate(maps):
                    xe = xe.index_select(lead + d, idx)
                gw = _run("wgrad", vspec, batched, xe.contiguous(), go)
        if ctx.needs_input_grad[2]:
            gb = _bias_grad(go, spec.nd)
        return gx, gw, gb, None, None, None, None, None, None


class ConvTransposeNdFunction(torch.autograd.Function):
    """y = conv_transpose(x, w) + b, the dgrad of its forward spec.  Its adjoints are
    that spec's other operators: dL/dx = fprop(go, w), dL/dw = wgrad with go in the
    input's role and x in grad_output's."""

    @staticmethod
    def forward(ctx, x, w, b, nd, stride, padding, output_padding, groups, dilation):
        path, spec, batched, xi, xa, wa, ba = parse_transpose(
            nd, f"conv_transpose{nd}d", x, w, b, stride, padding, output_padding, groups, dilation)
        ctx.save_for_backward(x, w)
        ctx.spec, ctx.batched = spec, batched
        with device_scope(x):
            out = engine.run("dgrad", spec, xa, wa, path=path, bias=ba)
        return wrap(out if batched else out[0], xi)

    @staticmethod
    @once_differentiable
    def backward(ctx, go):
        x, w = ctx.saved_tensors
        spec, batched = ctx.spec, ctx.batched
        go = go.contiguous()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _run("fprop", spec, batched, go, w)
        if ctx.needs_input_grad[1]:
            gw = _run("wgrad", spec, batched, go, x)
        if ctx.needs_input_grad[2]:
            gb = _bias_grad(go, spec.nd)
        return gx, gw, gb, None, None, None, None, None, None


def _resolved_padding(nd, weight, stride, padding, dilation):
    stride_t = expand_param("stride", stride, nd)
    dilation_t = expand_param("dilation", dilation, nd)
    if isinstance(padding, tuple) and padding and all(isinstance(p, tuple) for p in padding):
        return padding
    return resolve_padding(padding, tuple(weight.shape[2:]), stride_t, dilation_t, nd)


def _conv(nd, input, weight, bias, stride, padding, dilation, groups):
    pad = _resolved_padding(nd, weight, stride, padding, dilation)
    return ConvNdFunction.apply(input, weight, bias, nd, stride, pad, dilation, groups)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Differentiable gpuconv.conv1d for torch tensors."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Differentiable gpuconv.conv2d for torch tensors (torch.nn.functional.conv2d's
    arguments; padding int, pair, 'valid' or 'same')."""
    return _conv(2, input, weight, bias, stride, padding, dilation, groups)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Differentiable gpuconv.conv3d for torch tensors."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Differentiable gpuconv.conv_transpose1d for torch tensors."""
    return ConvTransposeNdFunction.apply(input, weight, bias, 1, stride, padding, output_padding,
                                         groups, dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Differentiable gpuconv.conv_transpose2d for torch tensors."""
    return ConvTransposeNdFunction.apply(input, weight, bias, 2, stride, padding, output_padding,
                                         groups, dilation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Differentiable gpuconv.conv_transpose3d for torch tensors."""
    return ConvTransposeNdFunction.apply(input, weight, bias, 3, stride, padding, output_padding,
                                         groups, dilation)


class _ConvNd(torch.nn.Module):
    """nn.Conv{n}d's constructor, parameters and initialisation; gpuconv underneath."""

    nd = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        nd = self.nd
        if in_channels % groups != 0:
            raise ValueError(f"in_channels={in_channels} must be divisible by groups={groups}")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels={out_channels} must be divisible by groups={groups}")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be one of 'zeros', 'reflect', 'replicate', "
                             f"'circular', got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = expand_param("kernel_size", kernel_size, nd)
        self.stride = expand_param("stride", stride, nd)
        self.dilation = expand_param("dilation", dilation, nd)
        self.padding = padding if isinstance(padding, str) else expand_param("padding", padding, nd)
        self.padding_mode = padding_mode
        self._pad = resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation, nd)
        kw = {"device": device, "dtype": dtype}
        self.weight = torch.nn.Parameter(
            torch.empty((out_channels, in_channels // groups) + self.kernel_size, **kw))
        self.bias = torch.nn.Parameter(torch.empty(out_channels, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # nn.Conv{n}d's: kaiming_uniform(a=sqrt(5)) weight, uniform(+-1/sqrt(fan_in)) bias
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * math.prod(self.kernel_size)
            if fan_in:
                bound = 1 / math.sqrt(fan_in)
                torch.nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return ConvNdFunction.apply(input, self.weight, self.bias, self.nd, self.stride, self._pad,
                                    self.dilation, self.groups, self.padding_mode)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, "
                f"padding_mode={self.padding_mode!r}")


class Conv1d(_ConvNd):
    """nn.Conv1d's interface on gpuconv.conv1d."""
    nd = 1


class Conv2d(_ConvNd):
    """nn.Conv2d's interface on gpuconv.conv2d; load_state_dict of an nn.Conv2d works."""
    nd = 2


class Conv3d(_ConvNd):
    """nn.Conv3d's interface on gpuconv.conv3d."""
    nd = 3
