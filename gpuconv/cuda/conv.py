"""Forward convolution on a device backend: validation of the arrays, the
variant choice (dispatcher or an explicit name), the output, the launch.

    forward(x, w, b, spec, activation=None, algorithm="auto", backend=None, out=None,
            precision="highest")

x (N, C, *in), w (K, C/groups, *kernel), b (K,) or None: arrays of backend.xp
(CuPy by default), any strides (copied to C order when needed).  spec.pad and
spec.padding_mode are resolved by the kernels while they load x (every forward
variant has Variant.padding_modes): no padded copy of x is made.  Returns a new array (or `out`) of spec.output_shape and spec.dtype.

`out`: a C-contiguous array of that shape and dtype to write into.  Without `out`, a
channels-last x (dense NHWC strides: torch's channels_last, a transposed NHWC CuPy array)
going to implicit_gemm is read in place and y comes back channels-last too (as torch
returns it); every other variant gets C-ordered copies and returns C order.  Tests pass
one filled with NaN so that an element a kernel fails to write fails the
comparison; POISON_OUTPUT = True makes every forward allocate its output that
way (for end-to-end runs through the public API).

`precision` (gpuconv.precision: "highest" | "high" | "medium") is the float32 policy
of the call; the dispatcher receives it (`choose(spec, facts, precision)`), the
variant's config carries it ("precision"), and a variant that has no reduced-precision
form computes exactly (never less accurate than asked).  While the backend's stream is
captured into a CUDA graph (backend.is_capturing), only capture-safe variants are picked
or accepted (dispatch.CAPTURE_UNSAFE).
"""
from __future__ import annotations

import math

from .. import activations
from ..spec import ConvSpec
from . import autotune, variants
from .backend import default_backend, device_facts
from .dispatch import CAPTURE_UNSAFE, choose
from .families import conv2d_implicit_gemm as _igemm
from .launch import check_array, output_array

POISON_OUTPUT = False


def resolve(spec: ConvSpec, algorithm: str, backend, precision: str = "highest") -> tuple[str, dict]:
    """(variant name, config) for `algorithm` ('auto' or a registered name); the config
    carries the call's float32 precision."""
    name, config = _resolve(spec, algorithm, backend, precision)
    return name, {**config, "precision": precision}


def _supports(v, spec: ConvSpec, precision: str):
    """v.supports(spec), with the call's precision for variants whose answer depends on it
    (implicit_gemm takes float32 at 'high'/'medium' only)."""
    if v.name == "implicit_gemm":
        return v.supports(spec, precision=precision)
    return v.supports(spec)


def _resolve(spec: ConvSpec, algorithm: str, backend, precision: str = "highest") -> tuple[str, dict]:
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a str, got {type(algorithm).__name__}")
    facts = device_facts(backend)
    if algorithm == "auto":
        name, config, _ = choose(spec, facts, precision)
        return name, config
    names = variants.conv_variant_names()
    if algorithm not in names:
        raise ValueError(f"unknown algorithm {algorithm!r}; variants that support this convolution: "
                         f"{', '.join(variants.supported(spec)) or 'none'} (registered: {', '.join(names)})")
    v = variants.get(algorithm)
    ok, why = _supports(v, spec, precision)
    if ok and facts.capturing and algorithm in CAPTURE_UNSAFE:
        ok, why = False, CAPTURE_UNSAFE[algorithm]
    if not ok:
        raise ValueError(f"algorithm {algorithm!r} does not support this convolution ({why}); variants "
                         f"that do: {', '.join(variants.supported(spec)) or 'none'}")
    if algorithm == "implicit_gemm":
        return algorithm, v.default_config(spec, facts, precision)
    return algorithm, v.default_config(spec, facts)


def _autotuned(spec, backend, precision, x, w, b, act, default):
    """gpuconv.set_autotune(True): the recorded or freshly timed winner (gpuconv/cuda/autotune.py)
    for (spec, precision) on this device; each candidate runs on C-ordered copies into a
    scratch output.  While the stream captures: a recorded capture-safe winner, or `default`."""
    xp = backend.xp
    facts = device_facts(backend)
    if x.size == 0 or w.size == 0 or math.prod(spec.output_shape) == 0:
        return default
    xc, wc = xp.ascontiguousarray(x), xp.ascontiguousarray(w)
    bc = None if b is None else xp.ascontiguousarray(b)

    def run(name, config):
        y = output_array(xp, None, spec.output_shape, spec.dtype)
        variants.get(name).launch(backend, xc, wc, bc, y, spec, act, {**config, "precision": precision})

    timer = autotune.TIMER or autotune.default_timer(backend)
    got = autotune.tune(spec, precision, facts, run, timer=timer)
    return default if got is None else (got[0], {**got[1], "precision": precision})


def forward(x, w, b, spec: ConvSpec, activation=None, algorithm="auto", backend=None, out=None,
            precision="highest"):
    backend = default_backend() if backend is None else backend
    xp = backend.xp
    activation = activations.check_activation(activation)
    act = activations.ACTIVATION_CODES[activation]
    if act and spec.dtype.kind == "c":
        raise TypeError(f"activation={activation!r} is not defined for complex dtype {spec.dtype}")
    check_array("input", x, spec.input_shape, spec.dtype)
    check_array("weight", w, spec.weight_shape, spec.dtype)
    if b is not None:
        check_array("bias", b, (spec.k,), spec.dtype)
    name, config = resolve(spec, algorithm, backend, precision)
    if algorithm == "auto" and autotune.get_autotune():
        name, config = _autotuned(spec, backend, precision, x, w, b, act, (name, config))

    channels_last = out is None and name == "implicit_gemm" and _igemm.is_channels_last(x, spec)
    if channels_last:                     # y in x's memory format: dense NHWC viewed as NCHW
        n, k, *pq = spec.output_shape
        y = output_array(xp, None, (n, *pq, k), spec.dtype, poison=POISON_OUTPUT).transpose(0, 3, 1, 2)
    else:
        y = output_array(xp, out, spec.output_shape, spec.dtype, poison=POISON_OUTPUT)
    if y.size == 0:                       # zero-size batch or channels: nothing to launch
        return y
    if not (channels_last and _igemm.reads_in_place(x, spec)):
        x = xp.ascontiguousarray(x)
    w = xp.ascontiguousarray(w)
    b = None if b is None else xp.ascontiguousarray(b)
    variants.get(name).launch(backend, x, w, b, y, spec, act, config)
    return y
