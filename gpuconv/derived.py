"""The gradients of a convolution as forward convolutions of other problems.

A kernel family that solves only fprop still solves dgrad and wgrad, through an
exact rewriting of the arrays and the spec (no arithmetic changes: the inserted
zeros add exact zeros).  The engine uses these where a dedicated kernel refuses
a spec; the CPU path uses the stride-1 dgrad form, its fastest.  Everything here
works on NumPy and CuPy arrays alike (`xp`), batched arrays in and out.

    crop_unread(x, spec)             a negative high padding as a cropped input
    dgrad_as_fprop(xp, dy, w, spec)  dL/dx of spec = fprop of (fspec, x', w')
    wgrad_as_fprop(xp, x, dy, spec)  dL/dw of spec = fprop of (fspec, x', w'), cropped
"""
from __future__ import annotations

from dataclasses import replace

from .spec import ConvSpec


def crop_unread(x, spec: ConvSpec):
    """(x, spec) with every negative high padding turned into a cropped input.

    A negative high padding (a transposed convolution's output_padding, a derived
    problem) means the last -hi input positions are never read: cutting them off
    changes no output and leaves padding >= 0, which every kernel assumes.  A spec with
    a non-zero padding mode keeps its input whole (its padding reads the far edge;
    the public layer allows it no negative padding)."""
    if spec.padding_mode != "zeros" or all(hi >= 0 for _, hi in spec.pad):
        return x, spec
    sizes = tuple(i + min(hi, 0) for i, (_, hi) in zip(spec.in_size, spec.pad))
    x = x[(slice(None), slice(None)) + tuple(slice(0, s) for s in sizes)]
    return x, replace(spec, in_size=sizes, pad=tuple((lo, max(hi, 0)) for lo, hi in spec.pad))


def flip_swap_weight(xp, w, groups: int):
    """(K, C/g, *k) weight -> (C, K/g, *k): per group the channel roles swapped and the
    kernel flipped in every spatial dim (the adjoint's weight), C-contiguous."""
    k, cg = w.shape[:2]
    kernel = tuple(w.shape[2:])
    kg = k // groups
    wf = w.reshape((groups, kg, cg) + kernel).swapaxes(1, 2).reshape((cg * groups, kg) + kernel)
    wf = wf[(slice(None), slice(None)) + (slice(None, None, -1),) * len(kernel)]
    return xp.ascontiguousarray(wf)


def dgrad_forward_form(spec: ConvSpec):
    """The stride-1 forward convolution equal to the dgrad of `spec`:
    (up, crop, pads).  dy (N, K, *out) zero-upsampled by the stride has size
    up = (out-1)*stride + 1; padded by dilation*(k-1) - pad_lo in front and
    convolved (stride 1, the same dilation) with the flipped, swapped weight it
    gives dx (N, C, *in).  Where that padding would go negative the upsampled
    input is cropped instead (`crop`, slices of the batched array)."""
    up = tuple((o - 1) * s + 1 for o, s in zip(spec.out_size, spec.stride))
    pads, crop = [], [slice(None), slice(None)]
    for u, k, d, (lo, _), n in zip(up, spec.kernel, spec.dilation, spec.pad, spec.in_size):
        span = d * (k - 1)
        plo = span - lo
        phi = n - u - plo + span              # whatever makes the result n long
        crop.append(slice(max(0, -plo), u + min(0, phi)))
        pads.append((max(0, plo), max(0, phi)))
    return up, tuple(crop), tuple(pads)


def dgrad_as_fprop(xp, dy, w, spec: ConvSpec):
    """(fspec, x', w'): fprop(fspec, x', w') equals dgrad(spec, dy, w), exactly."""
    up, crop, pads = dgrad_forward_form(spec)
    if all(s == 1 for s in spec.stride):
        xu = dy
    else:
        xu = xp.zeros((spec.n, spec.k) + up, dtype=dy.dtype)
        xu[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in spec.stride)] = dy
    xu = xp.ascontiguousarray(xu[crop])
    fspec = ConvSpec(n=spec.n, c=spec.k, k=spec.c, in_size=tuple(xu.shape[2:]), kernel=spec.kernel,
                     stride=(1,) * spec.nd, pad=pads, dilation=spec.dilation, groups=spec.groups,
                     dtype=spec.dtype)
    return fspec, xu, flip_swap_weight(xp, w, spec.groups)


def wgrad_as_fprop(xp, x, dy, spec: ConvSpec):
    """(fspec, x', w', kernel slices): fprop(fspec, x', w')[slices] transposed to
    (K, C/g, *kernel) equals wgrad(spec, x, dy), exactly.

    Batch and channel roles swap: x viewed as (C/g, g*N, *in) is the input, dy as
    (K, N, *out) the weight (groups g: group gi of the swapped problem sees group
    gi's channels), the forward stride and dilation exchanged; its output
    (C/g, K, >= kernel) is cropped to the kernel."""
    n, g, nd = spec.n, spec.groups, spec.nd
    cg = spec.c_per_group
    x2 = x.reshape((n, g, cg) + spec.in_size)
    x2 = xp.ascontiguousarray(x2.transpose((2, 1, 0) + tuple(range(3, 3 + nd))))
    x2 = x2.reshape((cg, g * n) + spec.in_size)
    w2 = xp.ascontiguousarray(dy.swapaxes(0, 1))                           # (K, N, *out)
    fspec = ConvSpec(n=cg, c=g * n, k=spec.k, in_size=spec.in_size, kernel=spec.out_size,
                     stride=spec.dilation, pad=spec.pad, dilation=spec.stride, groups=g,
                     dtype=spec.dtype)
    return fspec, x2, w2, (slice(None), slice(None)) + tuple(slice(0, k) for k in spec.kernel)
