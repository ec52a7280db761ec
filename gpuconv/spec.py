"""ConvSpec: the one description of a convolution, and all of its validation.

Every public convolution (conv1d/2d/3d, transposed, gradients) normalises its
arguments here.  The rules and the conditions that raise follow
torch.nn.functional.conv{1,2,3}d exactly; the exception types are ValueError
(bad values) and TypeError (bad types), and every message names the argument
and the values it got.  Nothing in this module touches array data, so a bad
call fails before any computation or kernel launch.

Spatial geometry is held per dimension (1, 2 or 3 of them); the 2-D names the
kernels use (H, W, R, S, P, Q, ...) are properties.
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numpy as np

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
# The operators of one convolution, CUTLASS's names: the forward problem (fprop), its
# data gradient (dgrad: also the transposed convolution) and its weight gradient (wgrad).
OPS = ("fprop", "dgrad", "wgrad")
PADDING_STRINGS = ("valid", "same", "full")

# dtypes a convolution accepts: torch's on the CPU (floating, complex, and the
# integer types with wrapping arithmetic; no bool).  The GPU path takes the
# floating ones (gpuconv.cuda refuses the rest, as cuDNN does).
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
COMPLEX_DTYPES = (np.dtype(np.complex64), np.dtype(np.complex128))
INT_DTYPES = tuple(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.int32, np.int64))
CONV_DTYPES = FLOAT_DTYPES + COMPLEX_DTYPES + INT_DTYPES

# bfloat16 is ml_dtypes' NumPy dtype (CuPy 14 and torch exchange it): its kind is 'V',
# not 'f', so NumPy's own tests (np.floating, dtype.kind) miss it.  These two
# functions are the one place that recognises it; ml_dtypes is imported only when a
# bfloat16 dtype must be made (a torch bfloat16 tensor on the CPU), never by
# `import gpuconv`.


def is_bfloat16(dtype) -> bool:
    dt = np.dtype(dtype)
    return dt.kind == "V" and dt.itemsize == 2 and dt.name == "bfloat16" and dt.names is None


def bfloat16_dtype() -> np.dtype:
    """ml_dtypes.bfloat16 as a NumPy dtype (TypeError naming the extra if missing)."""
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError("bfloat16 arrays need the ml_dtypes package: pip install "
                        "\"gpuconv[bfloat16]\"") from None
    return np.dtype(ml_dtypes.bfloat16)


def is_floating(dtype) -> bool:
    """float16/32/64 or bfloat16: the dtypes with gradients, activations and tensor cores."""
    dt = np.dtype(dtype)
    return dt in FLOAT_DTYPES or is_bfloat16(dt)


def is_conv_dtype(dtype) -> bool:
    dt = np.dtype(dtype)
    return dt in CONV_DTYPES or is_bfloat16(dt)


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _as_int(name: str, v) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {v!r} ({type(v).__name__})")
    return int(v)


def expand_param(name: str, value, nd: int) -> tuple[int, ...]:
    """int or length-nd sequence of ints -> tuple of nd ints (torch's _ntuple)."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            value = tuple(value) * nd
        if len(value) != nd:
            raise ValueError(
                f"expected {name} to be a single integer value or a list of {nd} values to "
                f"match the convolution dimensions, but got {name}={list(value)!r}")
        return tuple(_as_int(name, v) for v in value)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return expand_param(name, value.tolist(), nd)
    return (_as_int(name, value),) * nd


def same_padding(kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """torch's padding='same': total d*(k-1), the left side gets total//2, the right the rest."""
    out = []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        out.append((total // 2, total - total // 2))
    return tuple(out)


def resolve_padding(padding, kernel, stride, dilation, nd: int) -> tuple[tuple[int, int], ...]:
    """padding argument -> ((lo, hi), ...) per spatial dimension, validated."""
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise ValueError(f"Invalid padding string {padding!r}, should be one of {PADDING_STRINGS}")
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(
                    f"padding='same' is not supported for strided convolutions, got stride={stride}")
            return same_padding(kernel, dilation)
        # 'full': every partial overlap is an output
        return tuple((d * (k - 1), d * (k - 1)) for k, d in zip(kernel, dilation))
    pad = expand_param("padding", padding, nd)
    if any(p < 0 for p in pad):
        raise ValueError(f"negative padding is not supported, got padding={pad}")
    return tuple((p, p) for p in pad)


def output_length(size: int, kernel: int, stride: int = 1, pad_lo: int = 0, pad_hi: int = 0,
                  dilation: int = 1) -> int:
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class ConvSpec:
    """A forward convolution, channels-first: input (N, C, *in_size), weight (K, C/groups, *kernel).

    `pad` is the padding, (lo, hi) per spatial dim; `padding_mode` says what the
    padded positions hold (nn.Conv{n}d's modes): "zeros", or the input reflected
    (without repeating the edge), replicated (the edge repeated) or circular (the
    input repeated, any number of periods).  Every path resolves the mode while it
    reads the input (an index map, never a padded copy of the whole input).  The
    mode belongs to the forward problem: derived problems (gradients) are zeros.
    """

    n: int
    c: int
    k: int
    in_size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    dtype: np.dtype
    padding_mode: str = "zeros"

    @property
    def nd(self) -> int:
        return len(self.in_size)

    @functools.cached_property
    def out_size(self) -> tuple[int, ...]:
        return tuple(output_length(i, k, s, lo, hi, d) for i, k, s, (lo, hi), d in
                     zip(self.in_size, self.kernel, self.stride, self.pad, self.dilation))

    @property
    def c_per_group(self) -> int:
        return self.c // self.groups

    @property
    def k_per_group(self) -> int:
        return self.k // self.groups

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.c and self.groups > 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.n, self.c) + self.in_size

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.k, self.c_per_group) + self.kernel

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.n, self.k) + self.out_size

    # -- the 2-D names the kernels use ------------------------------------
    def _need2d(self):
        if self.nd != 2:
            raise AttributeError(f"2-D geometry asked of a {self.nd}-D ConvSpec")

    H = property(lambda s: (s._need2d(), s.in_size[0])[1])
    W = property(lambda s: (s._need2d(), s.in_size[1])[1])
    R = property(lambda s: (s._need2d(), s.kernel[0])[1])
    S = property(lambda s: (s._need2d(), s.kernel[1])[1])
    P = property(lambda s: (s._need2d(), s.out_size[0])[1])
    Q = property(lambda s: (s._need2d(), s.out_size[1])[1])

    # -- the numbers every kernel is judged by ----------------------------
    @property
    def flops(self) -> int:
        """2 * N * K * prod(out) * (C/groups) * prod(kernel) (a multiply-add is two)."""
        return 2 * self.n * self.k * math.prod(self.out_size) * self.c_per_group * math.prod(self.kernel)

    @property
    def min_bytes(self) -> int:
        """Compulsory traffic: read input and weight once, write output once."""
        elems = (self.n * self.c * math.prod(self.in_size)
                 + self.k * self.c_per_group * math.prod(self.kernel)
                 + self.n * self.k * math.prod(self.out_size))
        return self.dtype.itemsize * elems

    # -- the three operators of one convolution -----------------------------
    def operand_shapes(self, op: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(a, b, result) array shapes of operator `op` (CUTLASS's Fprop/Dgrad/Wgrad):
        fprop: input, weight -> output; dgrad: grad_output, weight -> grad_input;
        wgrad: input, grad_output -> grad_weight."""
        check_op(op)
        if op == "fprop":
            return self.input_shape, self.weight_shape, self.output_shape
        if op == "dgrad":
            return self.output_shape, self.weight_shape, self.input_shape
        return self.input_shape, self.output_shape, self.weight_shape

    def gemm(self, op: str) -> tuple[int, int, int]:
        """(M, N, K) of the implicit GEMM per group that solves `op` (CUTLASS's
        implicit_gemm_problem_size): fprop M = N*prod(out), N = K/g, K = C/g*taps;
        dgrad M = N*prod(in), N = C/g, K = K/g*taps; wgrad M = K/g, N = C/g*taps,
        K = N*prod(out).  Every operator does the same 2*M*N*K*groups FLOPs."""
        check_op(op)
        taps = math.prod(self.kernel)
        if op == "fprop":
            return self.n * math.prod(self.out_size), self.k_per_group, self.c_per_group * taps
        if op == "dgrad":
            return self.n * math.prod(self.in_size), self.c_per_group, self.k_per_group * taps
        return self.k_per_group, self.c_per_group * taps, self.n * math.prod(self.out_size)

    def view3d(self) -> "ConvSpec":
        """The same convolution with 3 spatial dims, unit ones in front (PyTorch's
        view1d_as_2d, one step further): 1-D (L) is (1, 1, L), 2-D (H, W) is (1, H, W);
        stride and dilation 1 and no padding in the added dims.  Arrays follow with a
        reshape, no copy."""
        e = 3 - self.nd
        if e == 0:
            return self
        return ConvSpec(n=self.n, c=self.c, k=self.k, in_size=(1,) * e + self.in_size,
                        kernel=(1,) * e + self.kernel, stride=(1,) * e + self.stride,
                        pad=((0, 0),) * e + self.pad, dilation=(1,) * e + self.dilation,
                        groups=self.groups, dtype=self.dtype, padding_mode=self.padding_mode)

    @property
    def padding_mode_code(self) -> int:
        """The kernels' code of padding_mode: its index in PADDING_MODES (0 zeros,
        1 reflect, 2 replicate, 3 circular; common.cuh pad_index)."""
        return PADDING_MODES.index(self.padding_mode)

    def key(self) -> tuple:
        """Hashable identity, for caches (the dispatcher's autotune cache)."""
        return (self.n, self.c, self.k, self.in_size, self.kernel, self.stride, self.pad,
                self.dilation, self.groups, self.dtype.str, self.padding_mode)


def check_padding_mode(padding_mode) -> str:
    """nn.Conv{n}d's padding_mode: one of PADDING_MODES, else ValueError naming them."""
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    return padding_mode


def check_padding_mode_limits(spec: "ConvSpec", padding_mode: str) -> None:
    """The limits of nn.Conv{n}d's non-zero padding modes: reflect needs padding below
    the input size (torch's F.pad rule and error).  Circular padding may wrap any
    number of times (np.pad(mode="wrap")'s result, then a valid convolution), where
    torch refuses more than one wrap; it needs a non-empty input."""
    if padding_mode == "zeros":
        return
    for d, ((lo, hi), size) in enumerate(zip(spec.pad, spec.in_size)):
        if padding_mode == "reflect" and (lo >= size or hi >= size):
            raise ValueError(
                f"padding_mode='reflect': padding ({lo}, {hi}) at spatial dimension {d} must be "
                f"less than the input size {size}")
        if padding_mode in ("circular", "replicate") and (lo or hi) and size == 0:
            raise ValueError(
                f"padding_mode={padding_mode!r}: padding ({lo}, {hi}) at spatial dimension {d} "
                f"cannot extend an empty input")


def check_op(op) -> str:
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    return op


def check_dtypes(input_dtype, weight_dtype, bias_dtype=None, weight_name: str = "weight") -> np.dtype:
    """torch's rule: input, weight and bias share one dtype."""
    dt = np.dtype(input_dtype)
    if not is_conv_dtype(dt):
        names = ", ".join(str(d) for d in CONV_DTYPES)
        raise TypeError(f"input dtype {dt} is not supported: convolution takes {names} and "
                        f"bfloat16 (ml_dtypes)")
    if np.dtype(weight_dtype) != dt:
        raise TypeError(f"input dtype ({dt}) and {weight_name} dtype ({np.dtype(weight_dtype)}) "
                        f"should be the same")
    if bias_dtype is not None and np.dtype(bias_dtype) != dt:
        raise TypeError(f"input dtype ({dt}) and bias dtype ({np.dtype(bias_dtype)}) should be the same")
    return dt


def check_ranks(input_shape, weight_shape, nd: int, fname: str,
                weight_layout: str = "out_channels, in_channels/groups, *kernel") -> bool:
    """torch's rank rules: input (N, C, *spatial) or unbatched (C, *spatial), weight
    of nd + 2 dims.  Returns whether the input is batched."""
    if len(input_shape) not in (nd + 1, nd + 2):
        raise ValueError(
            f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input to {fname}, "
            f"but got input of size: {_fmt_shape(input_shape)}")
    if len(weight_shape) != nd + 2:
        raise ValueError(
            f"Expected {nd + 2}D weight to {fname} ({weight_layout}), "
            f"but got weight of size: {_fmt_shape(weight_shape)}")
    return len(input_shape) == nd + 2


def check_groups(groups) -> int:
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"groups must be an int, got {groups!r} ({type(groups).__name__})")
    groups = int(groups)
    if groups <= 0:
        raise ValueError(f"non-positive groups is not supported, got groups={groups}")
    return groups


def check_stride_dilation(stride, dilation, nd: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    stride = expand_param("stride", stride, nd)
    dilation = expand_param("dilation", dilation, nd)
    if any(s <= 0 for s in stride):
        raise ValueError(f"non-positive stride is not supported, got stride={stride}")
    if any(d <= 0 for d in dilation):
        raise ValueError(f"dilation should be greater than zero, got dilation={dilation}")
    return stride, dilation


def _check_group_divides(groups: int, weight_shape) -> None:
    """torch's rule for dimension 0 of the weight (K of a convolution, C_in of a
    transposed one): at least `groups`, and a multiple of it."""
    if weight_shape[0] < groups:
        raise ValueError(
            f"Given groups={groups}, expected weight to be at least {groups} at dimension 0, "
            f"but got weight of size {_fmt_shape(weight_shape)} instead")
    if weight_shape[0] % groups != 0:
        raise ValueError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
            f"but got weight of size {_fmt_shape(weight_shape)} instead")


def make_spec(input_shape, weight_shape, bias_shape, stride, padding, dilation, groups,
              dtype, nd: int, fname: str = "conv2d", weight_name: str = "weight"
              ) -> tuple[ConvSpec, bool]:
    """Validate shapes and arguments like torch's F.conv{nd}d; return (spec, batched).

    `padding` is an int, a tuple, 'valid', 'same' or 'full', or already-resolved
    ((lo, hi), ...) pairs.  An unbatched input (C, *spatial) is described as N=1
    and reported through `batched`.  torch refuses an input with a zero-size
    spatial dim (unless batch or channels are zero).  `weight_name` is the
    weight's argument name in the caller's messages (separable: depthwise_weight).
    """
    input_shape = tuple(int(s) for s in input_shape)
    weight_shape = tuple(int(s) for s in weight_shape)
    batched = check_ranks(input_shape, weight_shape, nd, fname)
    if not batched:
        input_shape = (1,) + input_shape
    stride, dilation = check_stride_dilation(stride, dilation, nd)
    groups = check_groups(groups)

    kernel = weight_shape[2:]
    if isinstance(padding, tuple) and padding and all(isinstance(p, tuple) for p in padding):
        pad = tuple((int(lo), int(hi)) for lo, hi in padding)
        if len(pad) != nd or any(lo < 0 or hi < 0 for lo, hi in pad):
            raise ValueError(f"padding must be {nd} non-negative (lo, hi) pairs, got {padding}")
    else:
        pad = resolve_padding(padding, kernel, stride, dilation, nd)

    n, c = input_shape[:2]
    k, cg = weight_shape[:2]
    _check_group_divides(groups, weight_shape)
    if cg * groups != c:
        shown = input_shape if batched else input_shape[1:]
        raise ValueError(
            f"Given groups={groups}, weight of size {_fmt_shape(weight_shape)}, expected input"
            f"{_fmt_shape(shown)} to have {cg * groups} channels, but got {c} channels instead")
    if bias_shape is not None and tuple(bias_shape) != (k,):
        raise ValueError(
            f"Given weight of size {_fmt_shape(weight_shape)}, expected bias to be 1-dimensional "
            f"with {k} elements, but got bias of size {_fmt_shape(bias_shape)} instead")
    if any(s == 0 for s in kernel):
        raise ValueError(f"{weight_name} has a zero-size kernel: {_fmt_shape(weight_shape)}")
    if n > 0 and c > 0 and any(s == 0 for s in input_shape[2:]):
        shown = input_shape if batched else input_shape[1:]
        raise ValueError(f"Only zero batch or zero channel inputs are supported, but got input "
                         f"shape: {_fmt_shape(shown)}")

    in_size = input_shape[2:]
    padded = tuple(i + lo + hi for i, (lo, hi) in zip(in_size, pad))
    dilated = tuple(d * (kk - 1) + 1 for kk, d in zip(kernel, dilation))
    if any(p < kd for p, kd in zip(padded, dilated)):
        raise ValueError(
            f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). "
            f"Kernel size: ({' x '.join(map(str, dilated))}). "
            f"Kernel size can't be greater than actual input size")

    spec = ConvSpec(n=n, c=c, k=k, in_size=in_size, kernel=kernel, stride=stride, pad=pad,
                    dilation=dilation, groups=groups, dtype=np.dtype(dtype))
    return spec, batched


def transpose_spec(input_shape, weight_shape, bias_shape, stride, padding, output_padding, groups,
                   dilation, dtype, nd: int, fname: str = "conv_transpose2d"
                   ) -> tuple[ConvSpec, bool]:
    """Validate like torch's F.conv_transpose{nd}d; return (spec, batched), where `spec`
    is the FORWARD convolution whose data gradient (dgrad) the transposed convolution is.

    The transposed convolution's input (N, C_in, *in) is that spec's output, its weight
    (C_in, C_out/groups, *kernel) is the spec's weight (K = C_in, C = C_out), its result
    (N, C_out, *out) is the spec's input, out = (in-1)*stride - 2*padding +
    dilation*(kernel-1) + output_padding + 1.  `padding` is the spec's low padding;
    output_padding lowers the high padding (which may go negative: it only sizes the
    spec's output to `in`, no kernel reads it).  Every condition under which torch
    raises raises here, as ValueError or TypeError, before any array is touched."""
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
    _check_group_divides(groups, weight_shape)
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
    spec = ConvSpec(n=full_input[0], c=c_out, k=c_in, in_size=out_size, kernel=kernel,
                    stride=stride, pad=tuple((p, p - op) for p, op in zip(padding, output_padding)),
                    dilation=dilation, groups=groups, dtype=np.dtype(dtype))
    return spec, batched
