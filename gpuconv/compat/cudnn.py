"""CuPy 13's ``cupyx.cudnn`` convolution calls, on gpuconv's kernels.

CuPy 14 removed ``cupyx.cudnn``; code that called

    cudnn.convolution_forward(x, W, b, y, pad, stride, dilation, groups,
                              auto_tune=..., tensor_core=...)

(sigpy's GPU ``convolve``, Chainer-style layers) runs unchanged after replacing
``from cupyx import cudnn`` with ``from gpuconv.compat import cudnn``.

Semantics, as CuPy 13's cupyx/cudnn.pyx defines them:

* ``convolution_forward(x, W, b, y, ...)``: ``y = x (*) W + b``, a
  cross-correlation with symmetric zero padding ``pad`` per spatial dimension,
  written into the caller's ``y`` (its shape must be the output shape).
* ``convolution_backward_data(W, x, b, y, ...)``: ``x`` is the gradient of a
  forward output, ``y`` receives the gradient of the forward input (its shape
  picks the output padding, as cuDNN's descriptor does), plus ``b`` per
  channel: a transposed convolution ("deconvolution") with bias.
* ``convolution_backward_filter(x, gy, gW, ...)``: ``gW`` receives the
  gradient of the weight.

Arrays are NCHW (or N-d: NCW, NCDHW) with weights (K, C/groups, *kernel);
``d_layout`` / ``w_layout`` = ``CUDNN_TENSOR_NHWC`` (1) takes 4-D data
(N, H, W, C) and weights (K, R, S, C/groups) instead.  All functions return
None.  Beyond cupyx: NumPy arrays work too (gpuconv's CPU path), 3-D arrays
give a 1-D convolution, and ``y`` / ``gW`` need not be C-contiguous.

How the options map to gpuconv:

* ``tensor_core``: 'auto' and 'always' let gpuconv's dispatcher choose (its
  tensor-core kernel serves float16 2-D layers on compute capability >= 8.0;
  cupyx's 'always' is 'auto' too).  'never' pins the float16 forward on the GPU
  to the FMA kernel 'direct'; gpuconv's gradient kernels are FMA kernels.
* ``auto_tune``: accepted; gpuconv's dispatcher picks kernels from measured
  rules and has nothing to time (the result is the same either way).
* ``deterministic``: the weight gradient's fixed-order sum when True, the GPU
  kernel's atomics when False (gpuconv.conv2d_weight's ``deterministic``); the
  data gradient is a gather, deterministic either way.
* What gpuconv cannot honour raises before anything runs, naming the argument:
  ``CUDNN_TENSOR_NCHW_VECT_C`` layouts, NHWC for arrays that are not 4-D
  (cupyx passed those to cuDNN's N-d descriptors, which read them as NCHW),
  dtypes other than float16/32/64 (cupyx's TypeError).
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import api, grad
from .._array import common_kind, convert

# cudnnTensorFormat_t values (cudnn.h), as cupy.cuda.cudnn exports them.
CUDNN_TENSOR_NCHW = 0
CUDNN_TENSOR_NHWC = 1
CUDNN_TENSOR_NCHW_VECT_C = 2
_LAYOUT_NAMES = {0: "CUDNN_TENSOR_NCHW", 1: "CUDNN_TENSOR_NHWC", 2: "CUDNN_TENSOR_NCHW_VECT_C"}

_TENSOR_CORE_MODES = ("always", "auto", "never")
_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

# cupyx kept a workspace limit for cuDNN's algorithm search (8 MiB default);
# gpuconv sizes its own workspaces (see README), so the value is only stored.
_max_workspace_size = 8 * 1024 * 1024


def get_max_workspace_size():
    """The stored cuDNN workspace limit (cupyx API; gpuconv's kernels do not use it)."""
    return _max_workspace_size


def set_max_workspace_size(size):
    """Store a cuDNN workspace limit (cupyx API; gpuconv's kernels do not use it)."""
    global _max_workspace_size
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
        raise ValueError(f"size must be a non-negative int, got {size!r}")
    _max_workspace_size = int(size)


def is_tensor_core_available(dtype):
    """Whether gpuconv may use tensor cores for `dtype` on the current device:
    float16 on compute capability >= 8.0 (cupyx's rule was >= 7.0)."""
    if np.dtype(dtype) != np.float16:
        return False
    try:
        import cupy
        major = int(cupy.cuda.Device().compute_capability[:-1] or 0)
    except Exception:  # noqa: BLE001 - no CuPy or no device: no tensor cores
        return False
    return major >= 8


# ----------------------------------------------------------------------------
# argument checks (before anything runs)
# ----------------------------------------------------------------------------

def _array(fname, name, obj, *, output=False):
    if obj is None:
        raise TypeError(f"{fname}: {name} must be an array, got None")
    c = convert(f"{fname}: {name}", obj)
    if c.array.dtype not in _DTYPES:
        raise TypeError(f"{fname}: {name} has dtype {c.array.dtype}, which is not supported "
                        f"(cuDNN convolutions take float16, float32, float64)")
    if output and c.kind == "numpy" and not c.array.flags.writeable:
        raise ValueError(f"{fname}: {name} receives the result but is read-only")
    return c


def _ints(fname, name, value, nd, default=None):
    if value is None and default is not None:
        return (default,) * nd
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,) * nd
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{fname}: {name} must be a tuple of {nd} ints, got {value!r}")
    if len(value) != nd:
        raise ValueError(f"{fname}: {name} must have one entry per spatial dimension ({nd} for "
                         f"{nd + 2}-D arrays), got {name}={tuple(value)}")
    return tuple(int(v) for v in value)


def _layout(fname, name, value, arrays):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fname}: {name} must be a cudnnTensorFormat_t int "
                        f"(CUDNN_TENSOR_NCHW=0 or CUDNN_TENSOR_NHWC=1), got {value!r}")
    value = int(value)
    if value not in (CUDNN_TENSOR_NCHW, CUDNN_TENSOR_NHWC):
        label = _LAYOUT_NAMES.get(value, "an unknown cudnnTensorFormat_t")
        raise ValueError(f"{fname}: {name}={value} ({label}) is not supported; gpuconv takes "
                         f"CUDNN_TENSOR_NCHW (0) and CUDNN_TENSOR_NHWC (1)")
    if value == CUDNN_TENSOR_NHWC:
        for aname, a in arrays:
            if a.ndim != 4:
                raise ValueError(f"{fname}: {name}=CUDNN_TENSOR_NHWC applies to 4-D arrays "
                                 f"(2-D convolution) only, got {aname} of shape {tuple(a.shape)}")
    return value


def _options(fname, auto_tune, tensor_core, deterministic=False):
    if not isinstance(auto_tune, (bool, np.bool_)):
        raise TypeError(f"{fname}: auto_tune must be a bool, got {auto_tune!r}")
    if not isinstance(deterministic, (bool, np.bool_)):
        raise TypeError(f"{fname}: deterministic must be a bool, got {deterministic!r}")
    if not isinstance(tensor_core, str) or tensor_core not in _TENSOR_CORE_MODES:
        raise ValueError(f"{fname}: tensor_core must be one of {_TENSOR_CORE_MODES}, "
                         f"got {tensor_core!r}")


def _groups(fname, groups):
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{fname}: groups must be a positive int, got {groups!r}")
    return int(groups)


def _same_dtype(fname, named):
    (n0, a0), *rest = named
    for n, a in rest:
        if a.dtype != a0.dtype:
            raise TypeError(f"{fname}: {n} has dtype {a.dtype} but {n0} has {a0.dtype}; cuDNN "
                            f"takes one dtype for all arrays")


def _ndim(fname, named):
    (n0, a0), *rest = named
    if a0.ndim not in (3, 4, 5):
        raise ValueError(f"{fname}: {n0} must be 3-D, 4-D or 5-D (N, C, *spatial) for a 1-D, 2-D "
                         f"or 3-D convolution, got shape {tuple(a0.shape)}")
    for n, a in rest:
        if a.ndim != a0.ndim:
            raise ValueError(f"{fname}: {n} of shape {tuple(a.shape)} must have as many dimensions "
                             f"as {n0} of shape {tuple(a0.shape)}")
    return a0.ndim - 2


def _nchw(a, layout):
    """A view of a channels-last 4-D array as NCHW (no copy)."""
    return a.transpose(0, 3, 1, 2) if layout == CUDNN_TENSOR_NHWC else a


def _out_size(in_size, kernel, pad, stride, dilation):
    out = []
    for i, k, p, s, d in zip(in_size, kernel, pad, stride, dilation):
        o = (i + 2 * p - d * (k - 1) - 1) // s + 1
        out.append(o)
    return tuple(out)


def _geometry(fname, nd, pad, stride, dilation):
    pad = _ints(fname, "pad", pad, nd)
    stride = _ints(fname, "stride", stride, nd)
    dilation = _ints(fname, "dilation", dilation, nd, default=1)
    if any(p < 0 for p in pad):
        raise ValueError(f"{fname}: pad must be non-negative, got pad={pad}")
    if any(s < 1 for s in stride):
        raise ValueError(f"{fname}: stride must be positive, got stride={stride}")
    if any(d < 1 for d in dilation):
        raise ValueError(f"{fname}: dilation must be positive, got dilation={dilation}")
    return pad, stride, dilation


def _check_channels(fname, data_name, c, w_name, wshape, groups):
    if wshape[0] % groups:
        raise ValueError(f"{fname}: {w_name} has {wshape[0]} output channels, not divisible by "
                         f"groups={groups}")
    if wshape[1] * groups != c:
        raise ValueError(f"{fname}: {data_name} has {c} channels but {w_name} of shape "
                         f"(K, C/groups, ...) = {tuple(wshape)} with groups={groups} expects "
                         f"{wshape[1] * groups}")


def _check_bias(fname, b, channels, dtype):
    if b is None:
        return None
    if b.dtype != dtype:
        raise TypeError(f"{fname}: b has dtype {b.dtype} but the data has {dtype}")
    if b.size != channels:
        raise ValueError(f"{fname}: b must hold one value per output channel ({channels}), got "
                         f"shape {tuple(b.shape)}")
    return b.reshape(channels)


def _write(fname, name, target, result):
    if tuple(result.shape) != tuple(target.shape):       # an internal invariant, checked anyway
        raise RuntimeError(f"{fname}: computed {tuple(result.shape)} for {name} of shape "
                           f"{tuple(target.shape)}")
    target[...] = result


# ----------------------------------------------------------------------------
# the three calls
# ----------------------------------------------------------------------------

def convolution_forward(x, W, b, y, pad, stride, dilation, groups, *, auto_tune=False,
                        tensor_core="auto", d_layout=CUDNN_TENSOR_NCHW,
                        w_layout=CUDNN_TENSOR_NCHW):
    """``y[...] = conv(x, W) + b`` (cupyx.cudnn.convolution_forward).

    x: (N, C, *spatial); W: (K, C/groups, *kernel); b: None or K values;
    y: (N, K, *out), out = (in + 2*pad - dilation*(kernel-1) - 1)//stride + 1.
    pad, stride, dilation (None: ones): tuples with one int per spatial
    dimension.  NumPy or CuPy arrays, all of one dtype (float16/32/64).
    """
    f = "convolution_forward"
    _options(f, auto_tune, tensor_core)
    cx, cw, cy = _array(f, "x", x), _array(f, "W", W), _array(f, "y", y, output=True)
    cb = None if b is None else _array(f, "b", b)
    kind = common_kind({"x": cx, "W": cw, "b": cb, "y": cy})
    xa, wa, ya = cx.array, cw.array, cy.array
    nd = _ndim(f, [("x", xa), ("W", wa), ("y", ya)])
    _same_dtype(f, [("x", xa), ("W", wa), ("y", ya)])
    d_layout = _layout(f, "d_layout", d_layout, [("x", xa), ("y", ya)])
    w_layout = _layout(f, "w_layout", w_layout, [("W", wa)])
    pad, stride, dilation = _geometry(f, nd, pad, stride, dilation)
    groups = _groups(f, groups)
    xa, wa, ya = _nchw(xa, d_layout), _nchw(wa, w_layout), _nchw(ya, d_layout)
    _check_channels(f, "x", xa.shape[1], "W", wa.shape, groups)
    bias = _check_bias(f, None if cb is None else cb.array, wa.shape[0], xa.dtype)
    expect = (xa.shape[0], wa.shape[0]) + _out_size(xa.shape[2:], wa.shape[2:], pad, stride,
                                                    dilation)
    if tuple(ya.shape) != expect or min(expect[2:]) < 1:
        raise ValueError(f"{f}: y has shape {tuple(ya.shape)} (as NCHW), but x {tuple(xa.shape)} "
                         f"and W {tuple(wa.shape)} with pad={pad}, stride={stride}, "
                         f"dilation={dilation} give {expect}")
    # cuDNN's 'never' keeps tensor ops off; on the GPU only float16 reaches gpuconv's
    # tensor-core kernel (and cuBLAS HGEMM), so 'never' pins float16 to the FMA kernel.
    algorithm = "direct" if (tensor_core == "never" and kind == "cupy"
                             and xa.dtype == np.float16) else "auto"
    conv = (api.conv1d, api.conv2d, api.conv3d)[nd - 1]
    out = conv(xa, wa, bias, stride, pad, dilation, groups, algorithm=algorithm)
    _write(f, "y", ya, out)


def convolution_backward_data(W, x, b, y, pad, stride, dilation, groups, *, deterministic=False,
                              auto_tune=False, tensor_core="auto", d_layout=CUDNN_TENSOR_NCHW,
                              w_layout=CUDNN_TENSOR_NCHW):
    """``y[...] = conv_transpose(x, W) + b`` (cupyx.cudnn.convolution_backward_data).

    The gradient of convolution_forward with respect to its input: W (K, C/groups,
    *kernel) is the forward weight, x (N, K, *out) the gradient of the forward
    output, y (N, C, *in) receives the input gradient; ``y``'s shape is the
    forward input's (any size whose forward output is ``x``'s, which fixes the
    output padding).  b: None or C values added per channel (deconvolution).
    """
    f = "convolution_backward_data"
    _options(f, auto_tune, tensor_core, deterministic)
    cw, cx, cy = _array(f, "W", W), _array(f, "x", x), _array(f, "y", y, output=True)
    cb = None if b is None else _array(f, "b", b)
    common_kind({"W": cw, "x": cx, "b": cb, "y": cy})
    wa, xa, ya = cw.array, cx.array, cy.array
    nd = _ndim(f, [("x", xa), ("W", wa), ("y", ya)])
    _same_dtype(f, [("x", xa), ("W", wa), ("y", ya)])
    d_layout = _layout(f, "d_layout", d_layout, [("x", xa), ("y", ya)])
    w_layout = _layout(f, "w_layout", w_layout, [("W", wa)])
    pad, stride, dilation = _geometry(f, nd, pad, stride, dilation)
    groups = _groups(f, groups)
    xa, wa, ya = _nchw(xa, d_layout), _nchw(wa, w_layout), _nchw(ya, d_layout)
    _check_channels(f, "y", ya.shape[1], "W", wa.shape, groups)
    bias = _check_bias(f, None if cb is None else cb.array, ya.shape[1], xa.dtype)
    fwd = (ya.shape[0], wa.shape[0]) + _out_size(ya.shape[2:], wa.shape[2:], pad, stride,
                                                 dilation)
    if tuple(xa.shape) != fwd:
        raise ValueError(f"{f}: x has shape {tuple(xa.shape)} (as NCHW), but the forward "
                         f"convolution of y's shape {tuple(ya.shape)} with W {tuple(wa.shape)}, "
                         f"pad={pad}, stride={stride}, dilation={dilation} gives {fwd}")
    conv_input = (grad.conv1d_input, grad.conv2d_input, grad.conv3d_input)[nd - 1]
    out = conv_input(tuple(ya.shape), wa, xa, stride, pad, dilation, groups)
    if bias is not None:
        out = out + bias.reshape((1, -1) + (1,) * nd)
    _write(f, "y", ya, out)


def convolution_backward_filter(x, gy, gW, pad, stride, dilation, groups, *, deterministic=False,
                                auto_tune=False, tensor_core="auto", d_layout=CUDNN_TENSOR_NCHW,
                                w_layout=CUDNN_TENSOR_NCHW):
    """``gW[...] = dL/dW`` (cupyx.cudnn.convolution_backward_filter).

    x (N, C, *in) is the forward input, gy (N, K, *out) the gradient of the forward
    output, gW (K, C/groups, *kernel) receives the weight gradient (its shape gives
    the kernel size).  deterministic=True: a fixed-order sum, bit-identical run to run.
    """
    f = "convolution_backward_filter"
    _options(f, auto_tune, tensor_core, deterministic)
    cx, cg, cw = _array(f, "x", x), _array(f, "gy", gy), _array(f, "gW", gW, output=True)
    common_kind({"x": cx, "gy": cg, "gW": cw})
    xa, ga, wa = cx.array, cg.array, cw.array
    nd = _ndim(f, [("x", xa), ("gy", ga), ("gW", wa)])
    _same_dtype(f, [("x", xa), ("gy", ga), ("gW", wa)])
    d_layout = _layout(f, "d_layout", d_layout, [("x", xa), ("gy", ga)])
    w_layout = _layout(f, "w_layout", w_layout, [("gW", wa)])
    pad, stride, dilation = _geometry(f, nd, pad, stride, dilation)
    groups = _groups(f, groups)
    xa, ga, wa = _nchw(xa, d_layout), _nchw(ga, d_layout), _nchw(wa, w_layout)
    _check_channels(f, "x", xa.shape[1], "gW", wa.shape, groups)
    fwd = (xa.shape[0], wa.shape[0]) + _out_size(xa.shape[2:], wa.shape[2:], pad, stride,
                                                 dilation)
    if tuple(ga.shape) != fwd:
        raise ValueError(f"{f}: gy has shape {tuple(ga.shape)} (as NCHW), but x "
                         f"{tuple(xa.shape)} with gW's shape {tuple(wa.shape)}, pad={pad}, "
                         f"stride={stride}, dilation={dilation} gives {fwd}")
    conv_weight = (grad.conv1d_weight, grad.conv2d_weight, grad.conv3d_weight)[nd - 1]
    out = conv_weight(xa, tuple(wa.shape), ga, stride, pad, dilation, groups,
                      deterministic=bool(deterministic))
    _write(f, "gW", wa, out)
