"""The engine: every convolution operator runs here, on a path resolved once.

    path = resolve({"input": converted, "weight": converted, ...})
    y  = run("fprop", spec, x, w, path=path, bias=b, activation=act, algorithm=..., padding_mode=...)
    dx = run("dgrad", spec, dy, w, path=path, bias=b, activation=act)    # also conv_transpose*
    dw = run("wgrad", spec, x, dy, path=path, deterministic=True)
    y  = separable(dspec, x, dw, pw, path=path, bias=b, activation=act, algorithm=...)
    o  = correlate(a, k, out_shape, origin, boundary, fill, path=path)  # convolve2d / correlate2d

`spec` is always the FORWARD problem (gpuconv.spec.ConvSpec); the operator says
which of its three GEMM-shaped problems is solved.  Arrays are batched and
already validated against the spec by the public layer (gpuconv.api,
.transpose, .grad, .separable, .signal: argument parsing -> spec -> here), and
the result is an array of path.xp in the spec's dtype.

Paths (resolve):
  cpu     NumPy arrays: gpuconv.cpu / cpu_grad / signal's NumPy core
  device  CuPy arrays (CupyBackend on the current device and stream), or NumPy
          arrays under `use_backend(SimBackend())`: gpuconv.cuda's launchers
The table `_RUN` below is the one place that maps (operator, path) to code.
A device operator whose kernel refuses a spec runs a derived problem
(gpuconv.derived) through this engine again, never through the public API.

Arrays from dask (any argument) never reach the engine: the public functions
hand the whole call to gpuconv._dask, which builds a lazy graph whose chunks
call the public functions again (see `public`).
"""
from __future__ import annotations

import functools
import inspect
import math
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from . import _memory, activations
from ._array import Converted, common_kind, device_scope
from .derived import crop_unread, dgrad_by_phases, wgrad_as_fprop
from .spec import ConvSpec, check_op, check_padding_mode, is_bfloat16


# ----------------------------------------------------------------------------
# backends and paths
# ----------------------------------------------------------------------------

_local = threading.local()


def _stack() -> list:
    st = getattr(_local, "stack", None)
    if st is None:
        st = _local.stack = []
    return st


@contextmanager
def use_backend(backend):
    """Run gpuconv's GPU path on `backend` inside the block (this thread only).

        with gpuconv.use_backend(gpuconv.sim.SimBackend()):
            y = gpuconv.conv2d(x_numpy, w_numpy)        # the CUDA kernels, simulated

    `backend` has the gpuconv.cuda backend interface (`xp`, `get_function`); it
    takes the arrays of its own array module (SimBackend: NumPy arrays), which
    then run the device path (dispatcher, launchers, kernels) instead of the CPU
    path.  Arrays of another module run as without the block.  Blocks nest (the
    innermost wins) and are restored on exceptions.  `use_backend(None)` inside
    a block restores the default resolution for its body."""
    if backend is not None and not (hasattr(backend, "xp") and callable(getattr(backend, "get_function", None))):
        raise TypeError(f"backend must have `xp` and `get_function` (a gpuconv.cuda backend such as "
                        f"gpuconv.sim.SimBackend()), got {type(backend).__name__}")
    st = _stack()
    st.append(backend)
    try:
        yield backend
    finally:
        st.pop()


def current_backend():
    """The innermost backend of use_backend in this thread, or None."""
    st = _stack()
    return st[-1] if st else None


@dataclass(frozen=True)
class Path:
    """Where an operator runs: 'cpu' (NumPy) or 'device' (a gpuconv.cuda backend)."""
    name: str
    xp: object
    backend: object = None

    @property
    def is_device(self) -> bool:
        return self.name == "device"


_CPU = Path("cpu", np)


def resolve(named: dict[str, Converted | None]) -> Path:
    """The path of a call, once, from its converted array arguments (all on one side:
    TypeError naming them otherwise)."""
    kind = common_kind(named)
    backend = current_backend()
    if backend is not None:
        xp = backend.xp
        if (kind == "numpy") == (xp is np):
            return Path("device", xp, backend)
    if kind == "cupy":
        from .cuda.backend import default_backend
        b = default_backend()
        return Path("device", b.xp, b)
    return _CPU


# ----------------------------------------------------------------------------
# the public-function decorator: dask routing and the device scope
# ----------------------------------------------------------------------------

def _is_dask(obj) -> bool:
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(obj, da.Array)


def public(array_param: str):
    """Decorator of every public function: a call with a dask array anywhere among
    its arguments goes, whole, to gpuconv._dask.<same name> (lazy, chunked);
    otherwise the function runs on the device of its argument `array_param` (for
    a torch CUDA tensor on torch's current stream there: gpuconv._array.device_scope)."""
    def deco(fn):
        params = list(inspect.signature(fn).parameters)
        pos = params.index(array_param)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if "dask.array" in sys.modules and (any(map(_is_dask, args))
                                                or any(map(_is_dask, kwargs.values()))):
                from . import _dask
                return getattr(_dask, fn.__name__)(*args, **kwargs)
            obj = args[pos] if len(args) > pos else kwargs.get(array_param)
            if type(obj) is np.ndarray:              # the CPU path: no device to enter
                return fn(*args, **kwargs)
            with device_scope(obj):
                return fn(*args, **kwargs)
        return wrapper
    return deco


# ----------------------------------------------------------------------------
# operators
# ----------------------------------------------------------------------------

def _finish_cpu(out, spec: ConvSpec, bias, activation):
    """Bias and activation on a CPU result in the compute dtype, then the spec's dtype."""
    if bias is not None:
        out += np.asarray(bias, dtype=out.dtype).reshape((1, -1) + (1,) * spec.nd)
    return activations.apply(out, activation).astype(spec.dtype, copy=False)


def with_padding_mode(spec: ConvSpec, padding_mode: str) -> ConvSpec:
    """spec with nn.Conv{n}d's padding mode (check_padding_mode); "zeros" where the spec
    has no padding to fill."""
    if check_padding_mode(padding_mode) == "zeros" or not any(lo or hi for lo, hi in spec.pad):
        padding_mode = "zeros"
    return spec if spec.padding_mode == padding_mode else replace(spec, padding_mode=padding_mode)


OP_ALGORITHMS = ("auto", "fft", "implicit_gemm")     # conv_transpose*, conv*_input, conv*_weight


def check_op_algorithm(algorithm, path: Path | None = None) -> str:
    """`algorithm` of a transposed convolution or a gradient: 'auto' (the engine's
    kernels, FFT where gpuconv.fft's cost model prices it lower), 'fft', or
    'implicit_gemm' (the GPU path's tensor-core route, gpuconv.derived's forward
    problems on the implicit-GEMM kernel, whatever their size; a GPU kernel, so
    refused for NumPy arrays)."""
    if not isinstance(algorithm, str) or algorithm not in OP_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {OP_ALGORITHMS}, got {algorithm!r}")
    if algorithm == "implicit_gemm" and path is not None and not path.is_device:
        raise ValueError("algorithm='implicit_gemm' names a GPU kernel, but the arrays are NumPy "
                         "arrays (CPU path); use algorithm='auto' or 'fft', or pass CuPy arrays")
    return algorithm


def use_fft(op: str, spec: ConvSpec, path: Path, algorithm: str) -> bool:
    """Whether `op` runs as an FFT convolution (gpuconv.fft): algorithm="fft", or
    "auto" where gpuconv.fft.conv_cost_model prices the FFT below the direct/GEMM
    path for this device (large kernels: on 2 cores 8x32x64x64 switches between
    5x5 and 7x7, 1x3x224x224 between 9x9 and 11x11; the GPU constants are napkin
    math, marked MEASURE there) and the stream captures no CUDA graph (the FFT's
    channel contraction is a cuBLAS GEMM).  Integer dtypes never: the direct sum
    is exact."""
    capturing = path.is_device and _capturing(path)
    if algorithm == "fft":
        if capturing:
            raise ValueError("algorithm='fft' cannot run while the stream captures a CUDA graph: "
                             "its channel contraction is a cuBLAS GEMM, which CuPy refuses during "
                             "capture; use algorithm='auto'")
        return True
    if algorithm != "auto" or spec.dtype.kind in "iuc" or math.prod(spec.kernel) < 25 or capturing:
        return False                     # below 5x5 the direct paths always win (the model's floor)
    from . import fft
    return fft.conv_cost_model(spec, op, "gpu" if path.is_device else "cpu").use_fft


def _capturing(path: Path) -> bool:
    from .cuda.backend import is_capturing
    return is_capturing(path.backend)


def _fft(op, path, spec, a, b):
    from . import fft
    return getattr(fft, op)(a, b, spec, path.xp)


def _finish_device_fft(path, out, spec, bias, activation):
    """Bias (in the compute dtype) and activation on a device FFT result, then the dtype."""
    if bias is not None:
        out += bias.astype(out.dtype).reshape((1, -1) + (1,) * spec.nd)
    return activations.apply_xp(path.xp, out, activation).astype(spec.dtype, copy=False)


def _fprop_cpu(path, spec, x, w, bias=None, activation=None, algorithm="auto", **_):
    from . import cpu
    out = _fft("fprop", path, spec, x, w) if use_fft("fprop", spec, path, algorithm) else \
        cpu.conv(x, w, None, spec)
    return _finish_cpu(out, spec, bias, activation)


def _fprop_device(path, spec, x, w, bias=None, activation=None, algorithm="auto",
                  precision="highest", **_):
    if use_fft("fprop", spec, path, algorithm):
        return _finish_device_fft(path, _fft("fprop", path, spec, x, w), spec, bias, activation)
    from .cuda import conv as cuda_conv
    return cuda_conv.forward(x, w, bias, spec, activation=activation, algorithm=algorithm,
                             backend=path.backend, precision=precision)


def _dgrad_cpu(path, spec, dy, w, bias=None, activation=None, algorithm="auto", **_):
    from . import cpu_grad
    out = _fft("dgrad", path, spec, dy, w) if use_fft("dgrad", spec, path, algorithm) else \
        cpu_grad.dgrad(dy, w, spec)
    return _finish_cpu(out, spec, bias, activation)


def _dgrad_device(path, spec, dy, w, bias=None, activation=None, algorithm="auto",
                  precision="highest", **_):
    if use_fft("dgrad", spec, path, algorithm):
        return _finish_device_fft(path, _fft("dgrad", path, spec, dy, w), spec, bias, activation)
    variants = _grad_variants("dgrad", spec, path, algorithm, precision)
    if variants is None:
        from .cuda import transpose as cuda_transpose
        if cuda_transpose.transpose_supports(spec)[0]:
            return cuda_transpose.forward(dy, w, bias, spec, activation=activation,
                                          backend=path.backend)
    # the route, or the gather kernel refused (complex dtypes, index space past 2^31):
    # one forward problem per stride phase (gpuconv.derived), on the variant the rule
    # saw choose() pick (the dispatcher's own choice when refused)

    def fprop(fspec, a, b):
        return run("fprop", fspec, a, b, path=path, bias=bias, activation=activation,
                   algorithm=(variants or {}).get(fspec, "auto"), precision=precision)
    return dgrad_by_phases(path.xp, dy, w, spec, fprop,
                           lambda zeros: _finish_device_fft(path, zeros, spec, bias, activation))


def _wgrad_cpu(path, spec, x, dy, algorithm="auto", **_):
    from . import cpu_grad
    x, spec = crop_unread(x, spec)
    out = _fft("wgrad", path, spec, x, dy) if use_fft("wgrad", spec, path, algorithm) else \
        cpu_grad.wgrad(x, dy, spec)
    return out.astype(spec.dtype, copy=False)


def _wgrad_device(path, spec, x, dy, deterministic=True, algorithm="auto", precision="highest",
                  **_):
    from .cuda import wgrad as cuda_wgrad
    x, spec = crop_unread(x, spec)
    if use_fft("wgrad", spec, path, algorithm):
        return _fft("wgrad", path, spec, x, dy).astype(spec.dtype, copy=False)
    variants = _grad_variants("wgrad", spec, path, algorithm, precision)
    if variants is None and cuda_wgrad.wgrad_supports(spec)[0]:
        return cuda_wgrad.forward(x, dy, spec, deterministic=deterministic, backend=path.backend)
    # tensor cores, or refused (3-D): one forward convolution with batch and channel
    # roles swapped (gpuconv.derived); its split-K sums in a fixed order, so it is
    # deterministic either way (deterministic=False allows, but does not need, atomics:
    # the partials of a weight gradient are small, split x K x C/g x R x S floats)
    xp = path.xp
    fspec, x2, w2, crop = wgrad_as_fprop(xp, x, dy, spec)
    res = run("fprop", fspec, x2, w2, path=path, precision=precision,   # (C/g, K, >= kernel)
              algorithm=(variants or {}).get(fspec, "auto"))
    return xp.ascontiguousarray(res[crop].swapaxes(0, 1))


_RUN = {
    ("fprop", "cpu"): _fprop_cpu,
    ("fprop", "device"): _fprop_device,
    ("dgrad", "cpu"): _dgrad_cpu,
    ("dgrad", "device"): _dgrad_device,
    ("wgrad", "cpu"): _wgrad_cpu,
    ("wgrad", "device"): _wgrad_device,
}


def run(op: str, spec: ConvSpec, a, b, *, path: Path, bias=None, activation=None,
        algorithm: str = "auto", padding_mode: str = "zeros", deterministic: bool = True,
        precision: str = "highest"):
    """Operator `op` of `spec` on batched arrays a, b of path.xp (see the module
    docstring for their roles); returns a new array of the operator's result shape
    in spec.dtype.  bias/activation apply to fprop and dgrad; padding_mode and
    algorithm to fprop; deterministic to wgrad (the device kernel's atomics);
    precision (gpuconv.precision) to float32 on the device: it reaches the
    dispatcher's config, and a kernel without a TF32 form computes as "highest"
    (never less accurate than asked)."""
    check_op(op)
    check_device_dtype(path, spec)
    spec = canonical(spec)
    check_result_size(path, spec.operand_shapes(op)[2], spec.dtype, _RESULT_NAMES[op])
    if path.is_device and is_bfloat16(spec.dtype) and not _device_takes_bfloat16(op, spec, path,
                                                                                precision, algorithm):
        return _run_bfloat16_widened(op, spec, a, b, path=path, bias=bias, activation=activation,
                                     algorithm=algorithm, padding_mode=padding_mode,
                                     deterministic=deterministic)
    shape = spec.operand_shapes(op)[2]
    if op == "fprop":
        spec = with_padding_mode(spec, padding_mode)
        a, spec = crop_unread(a, spec)
    elif padding_mode != "zeros":
        raise ValueError(f"padding_mode={padding_mode!r} applies to the forward convolution only "
                         f"(op={op!r})")
    if math.prod(shape) == 0 or _no_reduction(op, spec):
        return _empty_result(path, op, spec, shape, bias, activation)
    return _RUN[(op, path.name)](path, spec, a, b, bias=bias, activation=activation,
                                 algorithm=algorithm, deterministic=deterministic,
                                 precision=precision)


def _grad_variants(op: str, spec: ConvSpec, path: Path, algorithm: str, precision: str):
    """{derived forward spec: variant} when gradient `op` runs as forward problems
    (gpuconv.cuda.dispatch.grad_plan's "forward" route on this device, or every one on
    implicit_gemm for algorithm='implicit_gemm'); None for the dedicated kernels."""
    from .cuda.backend import device_facts
    from .cuda.dispatch import grad_forward_problems, grad_plan
    if _forced_implicit_gemm(op, spec, path, algorithm, precision):
        return {f: "implicit_gemm" for f in grad_forward_problems(op, spec)}
    plan = grad_plan(op, spec, device_facts(path.backend), precision)
    return plan.variants if plan.route == "forward" else None


def _grad_on_tensor_cores(op: str, spec: ConvSpec, path: Path, precision: str) -> bool:
    """gpuconv.cuda.dispatch.grad_on_tensor_cores on this device (the derived forms)."""
    from .cuda.backend import device_facts
    from .cuda.dispatch import grad_on_tensor_cores
    return grad_on_tensor_cores(op, spec, device_facts(path.backend), precision)[0]


def _forced_implicit_gemm(op: str, spec: ConvSpec, path: Path, algorithm: str, precision: str) -> bool:
    """algorithm='implicit_gemm' asked for a gradient: True, or ValueError saying why the
    kernel refuses one of its forward problems (before any kernel runs)."""
    if algorithm != "implicit_gemm":
        return False
    from .cuda.backend import device_facts
    from .cuda.dispatch import grad_supported_by_implicit_gemm
    ok, why = grad_supported_by_implicit_gemm(op, spec, device_facts(path.backend), precision)
    if not ok:
        raise ValueError(f"algorithm='implicit_gemm': {why}")
    return True


def _device_takes_bfloat16(op: str, spec: ConvSpec, path: Path, precision: str,
                           algorithm: str = "auto") -> bool:
    """Whether a device kernel computes `op` of a bfloat16 spec itself: the forward
    problem where the dispatcher has a bf16 variant (the tensor-core implicit GEMM:
    2-D, compute capability 8.0+, gpuconv.cuda.dispatch.supports_dtype), a gradient
    where it runs on that kernel (grad_on_tensor_cores, or algorithm='implicit_gemm'
    where the kernel takes every derived problem)."""
    from .cuda.backend import device_facts
    if op != "fprop":
        if algorithm == "implicit_gemm":              # True, or ValueError naming why not
            return _forced_implicit_gemm(op, spec, path, algorithm, precision)
        return _grad_on_tensor_cores(op, spec, path, precision)
    from .cuda.dispatch import supports_dtype
    return supports_dtype(spec, precision, device_facts(path.backend))


def _run_bfloat16_widened(op, spec, a, b, *, path, bias, **options):
    """bfloat16 on the device where no bf16 kernel takes the operator: the operator on
    float32 copies, rounded once to bfloat16 (as the CPU path computes it).  It costs
    3x the compulsory traffic (read bf16, write and read float32 copies) and stays
    correct for every operator and shape."""
    f32 = np.dtype(np.float32)
    wide = replace(spec, dtype=f32)
    out = run(op, wide, a.astype(f32), b.astype(f32), path=path,
              bias=None if bias is None else bias.astype(f32), **options)
    return out.astype(spec.dtype)


_RESULT_NAMES = {"fprop": "the convolution's output",
                 "dgrad": "the input gradient (transposed convolution output)",
                 "wgrad": "the weight gradient"}


def canonical(spec: ConvSpec) -> ConvSpec:
    """The same problem with the sizes no output can see taken out: along a dim with
    one output the stride is cut to (padded extent - dilated kernel extent + 1), which
    keeps that single output and every tap's input position (a stride of 10**12 asked
    a kernel for stride-sized rows); a dilation of a 1-tap kernel dim is 1."""
    stride, dilation, changed = list(spec.stride), list(spec.dilation), False
    for i, (n, k, (lo, hi), o) in enumerate(zip(spec.in_size, spec.kernel, spec.pad, spec.out_size)):
        if k == 1 and dilation[i] != 1:
            dilation[i], changed = 1, True
        if o == 1:
            s1 = max(1, n + lo + hi - dilation[i] * (k - 1))
            if stride[i] > s1:
                stride[i], changed = s1, True
    return replace(spec, stride=tuple(stride), dilation=tuple(dilation)) if changed else spec


def check_device_dtype(path: Path, spec: ConvSpec) -> None:
    """Integer convolutions run on the CPU path only (torch, too, computes them on the
    CPU only): a TypeError naming the dtype before any kernel is chosen."""
    if path.is_device and spec.dtype.kind in "iub":
        raise TypeError(f"integer dtype {spec.dtype} is computed on the CPU path only (NumPy arrays, "
                        f"wrapping like torch's CPU kernels); the GPU path takes float16, bfloat16, "
                        f"float32, float64 and complex arrays")


def check_result_size(path: Path, shape, dtype, what: str) -> None:
    """MemoryError naming the result before anything is allocated, when it alone would
    exceed the memory the path can ever have (gpuconv._memory)."""
    nbytes = _memory.array_bytes(shape, dtype)
    if nbytes < 1 << 30:                  # below 1 GiB: not worth the question
        return
    limit = None
    if path.is_device and path.xp is not np:
        total = getattr(path.backend, "total_memory", None)
        limit = total() if callable(total) else None
    _memory.check_output_bytes(nbytes, f"{what} of shape {tuple(int(v) for v in shape)} "
                                       f"{np.dtype(dtype)}", limit=limit)


def _no_reduction(op: str, spec: ConvSpec) -> bool:
    """True when the sum every result element is has no terms (then it is 0 + bias)."""
    if op == "fprop":
        return spec.c == 0
    if op == "dgrad":
        return spec.k == 0 or math.prod(spec.out_size) == 0
    return spec.n == 0 or math.prod(spec.out_size) == 0


def _empty_result(path, op, spec, shape, bias, activation):
    xp = path.xp
    out = xp.zeros(shape, dtype=spec.dtype)
    if op != "wgrad" and bias is not None and out.size:
        out += bias.reshape((1, -1) + (1,) * spec.nd)
        out = activations.apply_xp(xp, out, activation)
    return out


# ----------------------------------------------------------------------------
# separable convolution and the signal core
# ----------------------------------------------------------------------------

def pointwise_spec(dspec: ConvSpec, k: int) -> ConvSpec:
    """The 1x1 step after the depthwise step `dspec`: C*m -> k channels."""
    nd = dspec.nd
    return ConvSpec(n=dspec.n, c=dspec.k, k=k, in_size=dspec.out_size, kernel=(1,) * nd,
                    stride=(1,) * nd, pad=((0, 0),) * nd, dilation=(1,) * nd, groups=1,
                    dtype=dspec.dtype)


def separable(dspec: ConvSpec, x, dw, pw, *, path: Path, bias=None, activation=None,
              algorithm: str = "auto", padding_mode: str = "zeros"):
    """Depthwise step `dspec` (groups = C), then the 1x1 weight pw, bias, activation."""
    k = int(pw.shape[0])
    check_device_dtype(path, dspec)
    dspec = canonical(dspec)
    check_result_size(path, (dspec.n, k) + dspec.out_size, dspec.dtype, _RESULT_NAMES["fprop"])
    if path.is_device and is_bfloat16(dspec.dtype):         # two widened steps (run)
        mid = run("fprop", dspec, x, dw, path=path, padding_mode=padding_mode)   # rounded, as on the CPU
        return run("fprop", pointwise_spec(dspec, k), mid, pw, path=path, bias=bias,
                   activation=activation)
    if path.is_device and padding_mode == "zeros":
        from .cuda import separable as cuda_separable
        return cuda_separable.forward(x, dw, pw, bias, dspec, activation=activation,
                                      algorithm=algorithm, backend=path.backend)
    mid = run("fprop", dspec, x, dw, path=path, padding_mode=padding_mode)
    return run("fprop", pointwise_spec(dspec, k), mid, pw, path=path, bias=bias,
               activation=activation)


def correlate(a, k, out_shape, origin, boundary, fill, *, path: Path, method: str = "direct"):
    """The single-channel 2-D correlation core of convolve2d / correlate2d (its
    definition: gpuconv.signal's docstring) on the path's arrays."""
    if path.is_device:
        from .cuda import signal as cuda_signal
        return cuda_signal.correlate_core(a, k, out_shape, origin, boundary, fill,
                                          backend=path.backend)
    from .signal import correlate_core
    return correlate_core(a, k, out_shape, origin, boundary, fill)
