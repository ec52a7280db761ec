"""The gradients of a convolution as forward convolutions of other problems.

A kernel family that solves only fprop still solves dgrad and wgrad, through an
exact rewriting of the arrays and the spec (no arithmetic changes: the inserted
zeros add exact zeros).  The engine uses these where a dedicated kernel refuses
a spec; the CPU path uses the stride-1 dgrad form, its fastest.  Everything here
works on NumPy and CuPy arrays alike (`xp`), batched arrays in and out.

    crop_unread(x, spec)             a negative high padding as a cropped input
    dgrad_as_fprop(xp, dy, w, spec)  dL/dx of spec = fprop of (fspec, x', w')
    dgrad_phases(spec)               dL/dx as prod(stride) stride-1 forward problems, no zeros
    dgrad_by_phases(xp, dy, w, spec, fprop, finish)   ... run and interleaved
    wgrad_as_fprop(xp, x, dy, spec)  dL/dw of spec = fprop of (fspec, x', w'), cropped
    wgrad_fprop_spec(spec)           ... its forward spec (pure)

The tensor-core route of the gradients (gpuconv.cuda.dispatch.grad_on_tensor_cores)
is these forms on the implicit-GEMM forward kernel: dgrad_by_phases (CUTLASS's
strided dgrad: one implicit GEMM per stride phase, each reading only the taps that
reach it) and wgrad_as_fprop (an implicit GEMM reducing over N*P*Q, split-K in a
fixed order: bit-identical run to run).
"""
from __future__ import annotations

import itertools
import math
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
    return wgrad_fprop_spec(spec), x2, w2, (slice(None), slice(None)) + tuple(slice(0, k) for k in spec.kernel)


def wgrad_fprop_spec(spec: ConvSpec) -> ConvSpec:
    """The forward problem of wgrad_as_fprop (pure): input x as (C/g, g*N, *in), weight
    dy as (K, N, *out), stride and dilation exchanged.  Its GEMM reduces over N*P*Q
    (the forward problem's Cg*taps), the weight gradient's implicit GEMM."""
    return ConvSpec(n=spec.c_per_group, c=spec.groups * spec.n, k=spec.k, in_size=spec.in_size,
                    kernel=spec.out_size, stride=spec.dilation, pad=spec.pad, dilation=spec.stride,
                    groups=spec.groups, dtype=spec.dtype)


# ----------------------------------------------------------------------------
# the data gradient by stride phases (CUTLASS's strided dgrad, as separate problems)
# ----------------------------------------------------------------------------

def _phase_1d(a: int, n: int, o: int, k: int, s: int, d: int, lo: int):
    """One dim of phase `a` (dx positions i = a, a+s, ...): (J, taps, e, plo, phi, crop).

    dx[i] = sum over taps t with (i + lo - t*d) divisible by s of dy[(i + lo - t*d)/s] w[t].
    The taps of phase a form t0 + m*u (m = s/gcd(s,d)); with i = a + s*j the dy index
    is j + c(t), c(t0 + m*u) = c0 - e*u (e = d/gcd(s,d)): a stride-1 correlation of dy
    with the taps reversed, dilation e, low padding e*(U-1) - c0 (a negative one
    crops dy's front: `crop`).  `taps` lists the weight indices in correlation order;
    empty when no tap reaches the phase (its dx is 0)."""
    J = len(range(a, n, s))
    taps = [t for t in range(k) if (a + lo - t * d) % s == 0]
    if not taps or J == 0:
        return J, [], 1, 0, 0, 0
    U, g = len(taps), math.gcd(s, d)
    e = d // g if U > 1 else 1
    c0 = (a + lo - taps[0] * d) // s
    plo = e * (U - 1) - c0
    crop = max(0, -plo)
    plo = max(0, plo)
    phi = J - (o - crop) - plo + e * (U - 1)
    return J, taps[::-1], e, plo, phi, crop


def dgrad_phases(spec: ConvSpec):
    """The stride-1 forward problems whose results, interleaved, are the dgrad of
    `spec`: [(dx slices, fspec | None, dy slices, weight tap indices per dim)], one per
    stride phase (prod(stride) of them; stride 1: one).  fspec None: no tap reaches
    the phase, its dx is 0 (+ bias).  Pure: sizes only.

    Unlike the zero-upsampled form (dgrad_as_fprop) no sub-problem reads an inserted
    zero: phase a computes only the dx positions a mod s from the taps that reach
    them, prod(stride) times fewer multiply-adds for stride 2 in 2-D (4x), each a
    forward convolution the tensor-core implicit GEMM takes."""
    out = []
    for a in itertools.product(*(range(s) for s in spec.stride)):
        dims = [_phase_1d(ai, n, o, k, s, d, lo) for ai, n, o, k, s, d, (lo, _) in
                zip(a, spec.in_size, spec.out_size, spec.kernel, spec.stride, spec.dilation, spec.pad)]
        dx_sl = (slice(None), slice(None)) + tuple(slice(ai, None, s) for ai, s in zip(a, spec.stride))
        if any(J == 0 for J, *_ in dims):
            continue                                  # the phase has no dx positions
        sizes = tuple(o - crop for o, (_, _, _, _, _, crop) in zip(spec.out_size, dims))
        if any(not taps for _, taps, *_ in dims) or any(v <= 0 for v in sizes):
            out.append((dx_sl, None, None, None))
            continue
        fspec = ConvSpec(n=spec.n, c=spec.k, k=spec.c, in_size=sizes,
                         kernel=tuple(len(t) for _, t, *_ in dims), stride=(1,) * spec.nd,
                         pad=tuple((plo, phi) for _, _, _, plo, phi, _ in dims),
                         dilation=tuple(e for _, _, e, *_ in dims), groups=spec.groups,
                         dtype=spec.dtype)
        dy_sl = (slice(None), slice(None)) + tuple(slice(c, None) for *_, c in dims)
        out.append((dx_sl, fspec, dy_sl, tuple(t for _, t, *_ in dims)))
    return out


def swap_weight(xp, w, groups: int):
    """(K, C/g, *k) weight -> (C, K/g, *k): per group the channel roles swapped (the
    adjoint's weight, not flipped)."""
    k, cg = w.shape[:2]
    kernel = tuple(w.shape[2:])
    kg = k // groups
    return w.reshape((groups, kg, cg) + kernel).swapaxes(1, 2).reshape((cg * groups, kg) + kernel)


def dgrad_by_phases(xp, dy, w, spec: ConvSpec, fprop, finish):
    """dgrad(spec, dy, w) as dgrad_phases' forward problems: fprop(fspec, x', w') runs
    one (the engine, bias and activation fused), finish(zeros) gives an untouched
    phase its bias and activation.  One write of dx per phase (strided), besides
    the sub-problems' own outputs."""
    ws = swap_weight(xp, w, spec.groups)
    dx = None
    for dx_sl, fspec, dy_sl, taps in dgrad_phases(spec):
        if fspec is None:
            if dx is None:
                dx = xp.empty((spec.n, spec.c) + spec.in_size, dtype=spec.dtype)
            part = dx[dx_sl]
            part[...] = finish(xp.zeros(part.shape, dtype=spec.dtype))
            continue
        wt = ws[(slice(None), slice(None)) + xp.ix_(*(xp.asarray(t) for t in taps))]
        r = fprop(fspec, xp.ascontiguousarray(dy[dy_sl]), xp.ascontiguousarray(wt))
        if dx is None and all(s == 1 for s in spec.stride):
            return r                                   # stride 1: the one phase is dx
        if dx is None:
            dx = xp.empty((spec.n, spec.c) + spec.in_size, dtype=spec.dtype)
        dx[dx_sl] = r
    return dx
