"""Transposed convolution (conv_transpose1d/2d/3d) with torch.nn.functional's semantics.

A transposed convolution is the adjoint of a forward convolution: every input
pixel scatters `x[n, c] * w[c, k]` over a (dilated) kernel footprint of the
output, input pixels `stride` apart.  With weight (C_in, C_out/groups, *kernel):

    full[n, g*Kg + k, j*s + t*d] += sum_c x[n, g*Cg + c, j] * w[g*Cg + c, k, t]
    out = full[..., padding : padding + out_size]          (per spatial dim)
    out_size = (in - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1

Two computations of it live here:

* NumPy (the CPU path and the reference), in one of three forms chosen by
  which wastes least (measurements at the NumPy section below): for stride > 1
  one GEMM per group, W_g^T (Kg*taps, Cg) @ X_g (Cg, N*L), gives every tap's
  contribution for every input pixel, and a loop over the kernel taps adds
  each tap's slab into the output with one strided slice (col2im) -- the FLOPs
  of the op itself, where a forward convolution of the zero-upsampled input
  would multiply stride**nd times as many zeros; depthwise (one input channel
  per group) does a multiply-add per tap instead of degenerate GEMMs; stride 1
  has no zeros to insert, so it is the forward convolution below, run by
  gpuconv.cpu (a better-shaped GEMM and no col2im pass).
* Device (CuPy arrays, or an explicit backend): the gather kernel of
  gpuconv.cuda.transpose (kernels_cu/conv_transpose.cu), which visits only the
  kernel taps whose residue matches each output position.  What it refuses
  (complex dtypes) runs as a forward convolution of the zero-upsampled input
  with the flipped, channel-swapped weight through gpuconv.api.conv_forward.

The same core (a `TransposeGeometry` with an explicit crop offset and output
size) also computes the input gradient of a forward convolution
(gpuconv.grad), where the output size comes from the requested input size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import activations, cpu
from ._array import common_kind, convert, on_device_of, wrap, xp_of
from .reference import compute_dtype
from .spec import (COMPLEX_DTYPES, FLOAT_DTYPES, ConvSpec, _fmt_shape, check_dtypes, check_groups, check_ranks,
                   check_stride_dilation, expand_param)


@dataclass(frozen=True)
class TransposeGeometry:
    """A transposed convolution: input (N, C_in, *in_size), weight (C_in, C_out/groups, *kernel).

    Output position o of spatial dim i is position o + crop[i] of the uncropped
    ("full") result, whose size is (in-1)*stride + dilation*(kernel-1) + 1.
    """

    n: int
    c_in: int
    c_out: int
    in_size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    crop: tuple[int, ...]
    out_size: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    dtype: np.dtype

    @property
    def nd(self) -> int:
        return len(self.in_size)

    @property
    def full_size(self) -> tuple[int, ...]:
        return tuple((i - 1) * s + d * (k - 1) + 1 for i, s, d, k in
                     zip(self.in_size, self.stride, self.dilation, self.kernel))

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.n, self.c_out) + self.out_size

    def forward_spec(self) -> ConvSpec:
        """The forward convolution whose input gradient this is: input (N, C_out,
        *out_size), weight (C_in, C_out/groups, *kernel), output (N, C_in, *in_size).
        Its low padding is the crop; its high padding, which may be negative, makes
        its output size equal in_size."""
        pad = tuple((lo, (i - 1) * s + d * (k - 1) + 1 - o - lo) for lo, i, s, d, k, o in
                    zip(self.crop, self.in_size, self.stride, self.dilation, self.kernel, self.out_size))
        return ConvSpec(n=self.n, c=self.c_out, k=self.c_in, in_size=tuple(self.out_size),
                        kernel=tuple(self.kernel), stride=tuple(self.stride), pad=pad,
                        dilation=tuple(self.dilation), groups=self.groups, dtype=np.dtype(self.dtype))

    @property
    def flops(self) -> int:
        """2 * N * C_in * prod(in) * (C_out/groups) * prod(kernel)."""
        return (2 * self.n * self.c_in * int(np.prod(self.in_size)) * (self.c_out // self.groups)
                * int(np.prod(self.kernel)))


def make_transpose_geometry(input_shape, weight_shape, bias_shape, stride, padding, output_padding,
                            groups, dilation, dtype, nd: int,
                            fname: str = "conv_transpose2d") -> tuple[TransposeGeometry, bool]:
    """Validate like torch's F.conv_transpose{nd}d; return (geometry, batched).

    Every condition under which torch raises raises here too, as ValueError
    (bad values) or TypeError (bad types), before any array is touched."""
    input_shape = tuple(int(s) for s in input_shape)
    weight_shape = tuple(int(s) for s in weight_shape)
    batched = check_ranks(input_shape, weight_shape, nd, fname, "in_channels, out_channels/groups, *kernel")
    full_input = input_shape if batched else (1,) + input_shape

    if isinstance(padding, str):
        raise TypeError(f"{fname}: padding must be an int or a tuple of ints (torch allows no "
                        f"padding strings for transposed convolutions), got padding={padding!r}")
    stride, dilation = check_stride_dilation(stride, dilation, nd)
    padding = expand_param("padding", padding, nd)
    output_padding = expand_param("output_padding", output_padding, nd)
    groups = check_groups(groups)
    if any(p < 0 for p in padding):
        raise ValueError(f"negative padding is not supported, got padding={padding}")
    if any(p < 0 for p in output_padding):
        raise ValueError(f"negative output_padding is not supported, got output_padding={output_padding}")
    # torch: every dimension needs output_padding < stride OR output_padding < dilation
    if any(op >= s and op >= d for op, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(
            f"output padding must be smaller than either stride or dilation, but got "
            f"output_padding={output_padding}, stride={stride}, dilation={dilation}")

    c_in, kg = weight_shape[:2]
    kernel = weight_shape[2:]
    if c_in < groups:
        raise ValueError(
            f"Given groups={groups}, expected weight to be at least {groups} at dimension 0, "
            f"but got weight of size {_fmt_shape(weight_shape)} instead")
    if c_in % groups != 0:
        raise ValueError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
            f"but got weight of size {_fmt_shape(weight_shape)} instead")
    if kg == 0 or any(k == 0 for k in kernel):
        raise ValueError(f"weight of size {_fmt_shape(weight_shape)} has a zero output-channel "
                         f"or kernel dimension")
    if full_input[1] != c_in:
        raise ValueError(
            f"Given transposed=1, weight of size {_fmt_shape(weight_shape)}, expected input"
            f"{_fmt_shape(input_shape)} to have {c_in} channels, but got {full_input[1]} "
            f"channels instead")
    c_out = kg * groups
    if bias_shape is not None and tuple(bias_shape) != (c_out,):
        raise ValueError(
            f"Given transposed=1, weight of size {_fmt_shape(weight_shape)}, expected bias to be "
            f"1-dimensional with {c_out} elements, but got bias of size "
            f"{_fmt_shape(bias_shape)} instead")
    in_size = full_input[2:]
    if any(i == 0 for i in in_size):
        raise ValueError(f"Only zero batch or zero channel inputs are supported, but got input "
                         f"shape: {_fmt_shape(input_shape)}")
    out_size = tuple((i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, s, p, d, k, op in
                     zip(in_size, stride, padding, dilation, kernel, output_padding))
    if any(o <= 0 for o in out_size):
        raise ValueError(
            f"Given input size per channel: ({' x '.join(map(str, in_size))}), calculated output "
            f"size per channel: ({' x '.join(map(str, out_size))}). Output size is too small "
            f"(padding={padding} is too large)")
    geom = TransposeGeometry(n=full_input[0], c_in=c_in, c_out=c_out, in_size=in_size,
                             kernel=kernel, stride=stride, crop=padding, out_size=out_size,
                             dilation=dilation, groups=groups, dtype=np.dtype(dtype))
    return geom, batched


# ---------------------------------------------------------------------------
# The forward-convolution form, shared by the device path and NumPy's stride-1 case

def forward_form(geom: TransposeGeometry):
    """The forward convolution equal to `geom`: (size of the zero-upsampled input,
    crop of it, ((lo, hi), ...) zero padding).  The full transposed result is a
    stride-1 convolution of the upsampled input padded by dilation*(k-1) on each
    side with the flipped, channel-swapped weight; cropping `crop` off the front and
    sizing to `out_size` turns into less padding, or a cropped input where the
    padding would go negative."""
    up = tuple((i - 1) * s + 1 for i, s in zip(geom.in_size, geom.stride))
    pads, crop = [], [slice(None), slice(None)]
    for u, k, d, lo, o in zip(up, geom.kernel, geom.dilation, geom.crop, geom.out_size):
        span = d * (k - 1)
        plo = span - lo
        phi = o - u - plo + span              # whatever makes the output o long
        crop.append(slice(max(0, -plo), u + min(0, phi)))
        pads.append((max(0, plo), max(0, phi)))
    return up, tuple(crop), tuple(pads)


def flip_swap_weight(xp, w, groups: int):
    """(C_in, C_out/g, *k) transposed-conv weight -> (C_out, C_in/g, *k) forward weight,
    kernel flipped in every spatial dim."""
    c_in, kg = w.shape[:2]
    kernel = tuple(w.shape[2:])
    cg = c_in // groups
    wf = w.reshape((groups, cg, kg) + kernel).swapaxes(1, 2).reshape((kg * groups, cg) + kernel)
    wf = wf[(slice(None), slice(None)) + (slice(None, None, -1),) * len(kernel)]
    return xp.ascontiguousarray(wf)


def transpose_via_forward(xp, x, w, bias, geom: TransposeGeometry, activation=None, backend=None):
    """The transposed convolution as gpuconv.api.conv_forward of the zero-upsampled input
    (stride-1, dilation-d, flipped channel-swapped weight).  Exact: the inserted
    zeros only add exact zeros.  Batched arrays in, batched array out (input's dtype,
    activation applied)."""
    from .api import conv_forward

    if geom.n == 0:
        return xp.zeros(geom.output_shape, dtype=x.dtype)
    up, crop, pads = forward_form(geom)
    if all(s == 1 for s in geom.stride):
        xu = x
    else:
        xu = xp.zeros((geom.n, geom.c_in) + up, dtype=x.dtype)
        xu[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in geom.stride)] = x
    xu = xp.ascontiguousarray(xu[crop])
    wf = flip_swap_weight(xp, w, geom.groups)
    return conv_forward(geom.nd, f"conv_transpose{geom.nd}d", xu, wf, bias, 1, pads, geom.dilation,
                        geom.groups, activation=activation, backend=backend, allow_empty_spatial=True)


def transpose_device(xp, x, w, bias, geom: TransposeGeometry, activation=None, backend=None):
    """Device path: the gather kernel of gpuconv.cuda.transpose (no zero-upsampled input);
    the forward-conv mapping above stays the fallback for what the kernel refuses (complex
    dtypes, more than 2^31 work items)."""
    from .cuda import transpose as ctr

    spec = ctr.spec_from_geometry(geom)
    if ctr.transpose_supports(spec)[0]:
        return ctr.forward(x, w, bias, spec, activation=activation, backend=backend)
    return transpose_via_forward(xp, x, w, bias, geom, activation, backend)


# ---------------------------------------------------------------------------
# NumPy
#
# Three forms, by which wastes least (2 cores, float32, median of 5; torch CPU
# for scale):
#   * stride 1: the forward form through gpuconv.cpu (no zeros to insert,
#     and its im2col GEMM has inner size C_in/g*taps instead of C_in/g, with no
#     col2im pass): 8x64x28x28 3x3 5.2 ms vs 7.0 ms for GEMM + col2im (torch 6.8).
#   * stride > 1, one input channel per group (depthwise): a multiply-add per
#     tap straight into the output; the GEMM would be an outer product per group.
#   * otherwise GEMM to columns + col2im: the FLOPs of the op itself, where the
#     forward form multiplies stride**nd times as many (inserted) zeros:
#     8x256x16x16 4x4/2 20.8 ms vs 76 ms (torch 14.5).

# Images per GEMM chunk: bounds the column matrix (C_out * taps * images * L
# elements) so a large batch does not materialise taps x the output at once.
_COLS_TARGET_ELEMS = 1 << 22


def _tap_ranges(tap, geom: TransposeGeometry):
    """For kernel tap `tap`: (input slices, output slices) of the pixels it connects,
    or None when the tap lands wholly in the cropped-away border."""
    src, dst = [], []
    for t, d, s, lo, i, o in zip(tap, geom.dilation, geom.stride, geom.crop, geom.in_size,
                                 geom.out_size):
        # input j lands on output j*s + t*d - lo; keep 0 <= that < o
        j0 = max(0, -((t * d - lo) // s))          # ceil((lo - t*d) / s)
        j1 = min(i - 1, (o - 1 + lo - t * d) // s)
        if j1 < j0:
            return None
        o0 = j0 * s + t * d - lo
        src.append(slice(j0, j1 + 1))
        dst.append(slice(o0, o0 + (j1 - j0) * s + 1, s))
    return tuple(src), tuple(dst)


def transpose_numpy(x: np.ndarray, w: np.ndarray, bias, geom: TransposeGeometry) -> np.ndarray:
    """Transposed convolution of batched NumPy arrays; returns the compute dtype."""
    dt = compute_dtype(geom.dtype)
    if geom.n == 0:
        out = np.zeros(geom.output_shape, dtype=dt)
    elif all(s == 1 for s in geom.stride):
        out = _transpose_stride1(x, w, geom, dt)
    elif geom.c_out == geom.groups > 1 and cpu.native_depthwise_ok(
            fspec := geom.forward_spec(), dt, "depthwise_dgrad"):
        # the input gradient of a depthwise conv: its compiled adjoint
        out = cpu.depthwise_dgrad_native(x, w, fspec, dt)
    elif geom.c_in == geom.groups:
        out = _transpose_one_channel_per_group(x, w, geom, dt)
    else:
        out = _transpose_gemm_col2im(x, w, geom, dt)
    if bias is not None:
        out += np.asarray(bias, dtype=dt).reshape((1, geom.c_out) + (1,) * geom.nd)
    return out


def _transpose_stride1(x, w, geom: TransposeGeometry, dt) -> np.ndarray:
    _, crop, pads = forward_form(geom)
    xc = x[crop]
    spec = ConvSpec(n=geom.n, c=geom.c_in, k=geom.c_out, in_size=tuple(xc.shape[2:]),
                    kernel=geom.kernel, stride=(1,) * geom.nd, pad=pads, dilation=geom.dilation,
                    groups=geom.groups, dtype=geom.dtype)
    return cpu.conv(xc, flip_swap_weight(np, w, geom.groups), None, spec)


def _transpose_one_channel_per_group(x, w, geom: TransposeGeometry, dt) -> np.ndarray:
    n, g, nd = geom.n, geom.groups, geom.nd
    kg = geom.c_out // g
    x = np.asarray(x, dtype=dt)[:, :, None]                         # (N, G, 1, *in)
    wk = np.asarray(w, dtype=dt).reshape((g, kg) + geom.kernel)
    out = np.zeros((n, g, kg) + geom.out_size, dtype=dt)
    for tap in np.ndindex(*geom.kernel):
        r = _tap_ranges(tap, geom)
        if r is None:
            continue
        src, dst = r
        ws = wk[(slice(None), slice(None)) + tap].reshape((1, g, kg) + (1,) * nd)
        out[(slice(None),) * 3 + dst] += x[(slice(None),) * 3 + src] * ws
    return out.reshape(geom.output_shape)


def _transpose_gemm_col2im(x, w, geom: TransposeGeometry, dt) -> np.ndarray:
    n, g = geom.n, geom.groups
    cg, kg = geom.c_in // g, geom.c_out // g
    npix = int(np.prod(geom.in_size))
    ntap = int(np.prod(geom.kernel))
    out = np.zeros(geom.output_shape, dtype=dt)
    x = np.asarray(x, dtype=dt)
    # (G, Kg*taps, Cg): row (k, t) of group g holds w[g*Cg + c, k, t] over c
    wt = np.asarray(w, dtype=dt).reshape(g, cg, kg * ntap).transpose(0, 2, 1)
    taps = [(tap, r) for tap in np.ndindex(*geom.kernel)
            if (r := _tap_ranges(tap, geom)) is not None]
    out_cn = out.swapaxes(0, 1)                                  # (C_out, N, *out) view
    nb = max(1, min(n, _COLS_TARGET_ELEMS // max(geom.c_out * ntap * npix, 1)))
    for n0 in range(0, n, nb):
        b = min(nb, n - n0)
        xg = x[n0:n0 + b].reshape(b, g, cg, npix).transpose(1, 2, 0, 3).reshape(g, cg, b * npix)
        cols = np.matmul(wt, xg)                                 # (G, Kg*taps, b*L)
        cols = cols.reshape((geom.c_out,) + geom.kernel + (b,) + geom.in_size)
        dst_n = out_cn[:, n0:n0 + b]
        for tap, (src, dst) in taps:
            dst_n[(slice(None), slice(None)) + dst] += cols[(slice(None),) + tap + (slice(None),) + src]
    return out


# ---------------------------------------------------------------------------
# Public functions

@on_device_of("input")
def conv_transpose_forward(nd: int, fname: str, input, weight, bias, stride, padding,
                           output_padding, groups, dilation, activation=None, backend=None):
    """Shared body of conv_transpose1d/2d/3d.  `backend` (internal: tests and the
    simulator) runs the device mapping on the given gpuconv.cuda backend."""
    xi = convert("input", input)
    wi = convert("weight", weight)
    bi = None if bias is None else convert("bias", bias)
    kind = common_kind({"input": xi, "weight": wi, "bias": bi})
    activation = activations.check_activation(activation)
    if backend is not None:
        kind = "device"
    x, w = xi.array, wi.array
    b = None if bi is None else bi.array
    dtype = check_dtypes(x.dtype, w.dtype, None if b is None else b.dtype)
    if dtype not in FLOAT_DTYPES + COMPLEX_DTYPES:      # torch has no integer transposed conv
        raise TypeError(f"{fname}: input dtype {dtype} is not supported: transposed convolution "
                        f"takes floating or complex arrays")
    if activation is not None and dtype.kind == "c":
        raise TypeError(f"activation={activation!r} is not defined for complex dtype {dtype}")
    geom, batched = make_transpose_geometry(x.shape, w.shape, None if b is None else b.shape,
                                            stride, padding, output_padding, groups, dilation,
                                            dtype, nd, fname)
    if not batched:
        x = x[None]
    if kind == "numpy":
        out = transpose_numpy(x, w, b, geom)
        out = activations.apply(out, activation).astype(dtype, copy=False)
    else:
        xp = backend.xp if backend is not None else xp_of(kind)
        out = transpose_device(xp, x, w, b, geom, activation, backend)
    if not batched:
        out = out[0]
    return wrap(out, xi)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, activation=None):
    """2-D transposed convolution with torch.nn.functional.conv_transpose2d's semantics.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_in, C_out/groups, R, S);
    bias: (C_out,).  stride, padding, output_padding, dilation: int or pair.
    Output size: (H-1)*stride - 2*padding + dilation*(R-1) + output_padding + 1, where
    output_padding must be smaller than either stride or dilation (per dimension).
    activation: None, 'relu', 'relu6', 'silu', 'gelu', applied after the bias.
    NumPy in -> NumPy out; CuPy in -> CuPy out; torch tensors in -> torch tensor out.
    """
    return conv_transpose_forward(2, "conv_transpose2d", input, weight, bias, stride, padding,
                                  output_padding, groups, dilation, activation)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, activation=None):
    """1-D transposed convolution (torch.nn.functional.conv_transpose1d): input (N, C_in, L)
    or (C_in, L), weight (C_in, C_out/groups, R).  Arguments as conv_transpose2d."""
    return conv_transpose_forward(1, "conv_transpose1d", input, weight, bias, stride, padding,
                                  output_padding, groups, dilation, activation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, activation=None):
    """3-D transposed convolution (torch.nn.functional.conv_transpose3d): input
    (N, C_in, D, H, W) or (C_in, D, H, W), weight (C_in, C_out/groups, T, R, S).
    Arguments as conv_transpose2d."""
    return conv_transpose_forward(3, "conv_transpose3d", input, weight, bias, stride, padding,
                                  output_padding, groups, dilation, activation)
