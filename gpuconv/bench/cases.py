"""One benchmark case -> inputs, the float64 reference, and the implementations
to run on it.

Implementations are named `family:detail`:
  gpuconv:auto         the public function with algorithm="auto" (the dispatcher's pick)
  gpuconv:<variant>    a registered GPU variant forced with algorithm=<variant>
  gpuconv:atomic       conv2d_weight with deterministic=False
  gpuconv:numpy        the public function on NumPy arrays (the CPU path)
  cudnn:nchw / cudnn:nhwc    torch.nn.functional on CUDA (channels_last for nhwc)
  cupyx.signal / cupyx.ndimage   cupyx.scipy.signal.convolve2d / correlate2d and
                       cupyx.scipy.ndimage.convolve / correlate ('same' mode only)
  torch-cpu            torch on the CPU
  scipy.signal         scipy.signal.convolve2d / correlate2d
Ratios in the report are anchor time / gpuconv:auto (or gpuconv:numpy) time.

gpuconv is called through its public functions only (gpuconv.conv2d,
conv2d_input, conv2d_weight, separable_conv2d, convolve2d, correlate2d); the
dispatcher's pick comes from gpuconv.cuda.dispatch.choose, the reference from
gpuconv.reference (fprop, dgrad, wgrad in float64) and scipy.signal.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import reference
from ..spec import ConvSpec, make_spec
from .suites import SIGNAL_OPS, Case

# Per dtype: |out - ref| <= k * (sqrt(red) + |ref|), red = the reduction length
# (terms summed per output), inputs uniform in [-1, 1).  fp32 rounding grows
# like eps*sqrt(red) (eps 6e-8; 1e-5 leaves 100x room); TF32 and fp16 round
# products to 10 mantissa bits (2^-11 = 4.9e-4); bf16 to 7 (3.9e-3).
# 3xTF32 ("high") is within a small factor of exact FP32's error (README): FP32's bound.
TOLERANCE = {"float64": 1e-10, "float32": 1e-5, "tf32": 2e-3, "3xtf32": 1e-5, "float16": 2e-3,
             "bfloat16": 1e-2}

# Like with like: each --dtype is one accuracy class, gpuconv's float32 precision and the cuDNN
# anchor's TF32 switch set to match it.
#   float32  exact FP32 ("highest")    vs cuDNN with allow_tf32 off
#   tf32     TF32 ("medium")           vs cuDNN with allow_tf32 on
#   3xtf32   3xTF32 ("high")           vs cuDNN with allow_tf32 off (exact FP32: the same class)
#   float16 / bfloat16                 vs cuDNN in the same dtype
PRECISION = {"float32": "highest", "tf32": "medium", "3xtf32": "high"}
CUDNN_TF32 = {"tf32": True}

# separable_conv2d's two GPU algorithms, each timed beside the dispatcher's pick.
SEPARABLE_ALGORITHMS = ("fused", "two_pass")


@dataclass
class Impl:
    name: str
    role: str                   # "gpuconv" | "anchor"
    fn: object                  # () -> output array
    timer: str                  # "cpu" | "cupy" | "torch"
    note: str = ""
    forced: bool = False        # an algorithm forced by name: its ValueError (the API refusing
                                # the shape before any kernel runs) is a SKIP, not an ERROR


@dataclass
class Prepared:
    case: Case
    dtype: str                  # the option name: float32, tf32, float16, ...
    spec: ConvSpec | None       # the forward conv (the gradients' and signal cases' geometry)
    flops: int
    min_bytes: int
    reduction: int
    reference: np.ndarray
    verify_index: object        # applied to an output before comparing with `reference`
    impls: list[Impl] = field(default_factory=list)
    skipped: dict = field(default_factory=dict)      # impl name -> reason
    notes: list = field(default_factory=list)
    dispatch: dict | None = None


def storage_dtype(dtype: str) -> np.dtype:
    if dtype in PRECISION:
        return np.dtype("float32")
    if dtype == "bfloat16":
        from ..spec import bfloat16_dtype
        return bfloat16_dtype()
    return np.dtype(dtype)


def compare(out, ref, dtype: str, reduction: int) -> tuple[bool, float, str]:
    """(ok, max abs error, message naming the first mismatching index)."""
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape:
        return False, float("inf"), f"shape {out.shape} != reference {ref.shape}"
    k = TOLERANCE[dtype]
    err = np.abs(out - ref)
    bad = ~(err <= k * (np.sqrt(reduction) + np.abs(ref)))   # NaN counts as bad
    max_err = float(np.nanmax(err)) if err.size else 0.0
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return False, max_err, (f"{int(bad.sum())} of {bad.size} elements off; first at {idx}: "
                                f"got {out[idx]!r}, reference {ref[idx]!r}")
    return True, max_err, ""


# ------------------------------------------------------------- the dispatcher
def gpu_variants(spec: ConvSpec, precision: str = "highest") -> tuple[list[str], dict]:
    """(registered variants that support spec at the float32 precision, {variant: the reason
    it does not})."""
    from ..cuda import dispatch
    ok, no = [], {}
    for name, (yes, why) in dispatch.supported_variants(spec, None, precision).items():
        if yes:
            ok.append(name)
        else:
            no[name] = why
    return ok, no


def explain(spec: ConvSpec, facts=None, precision: str = "highest") -> dict:
    """The dispatcher's pick for spec: {'pick', 'config', 'why': [reasons]}
    (gpuconv.cuda.dispatch.choose is a pure function of the spec and the device's
    facts, so it answers on a machine without a GPU too; facts None: its defaults)."""
    from ..cuda import dispatch
    name, config, reasons = dispatch.choose(spec, facts, precision)
    return {"pick": name, "config": dict(config), "why": list(reasons), "precision": precision}


def explain_grad(op: str, spec: ConvSpec, facts=None, precision: str = "highest") -> dict:
    """The dispatcher's route for gradient `op` (dgrad, wgrad) of the forward spec: pick
    'implicit_gemm' (tensor cores, gpuconv.derived) or 'fma' (the dedicated kernels), why,
    and whether algorithm='implicit_gemm' can be forced."""
    from ..cuda import dispatch
    ok, why = dispatch.grad_on_tensor_cores(op, spec, facts, precision)
    sup, swhy = dispatch.grad_supported_by_implicit_gemm(op, spec, facts, precision)
    return {"pick": "implicit_gemm" if ok else "fma", "why": [why], "precision": precision,
            "implicit_gemm_ok": sup, "implicit_gemm_why": swhy}


def device_facts():
    """The current GPU's facts, as the dispatcher sees them."""
    from ..cuda import backend
    return backend.device_facts(backend.default_backend())


# ------------------------------------------------------------- preparing
def conv_spec(case: Case, dtype) -> ConvSpec:
    n, c, h, w, k, r, s, st, pd, dl, g = case.shape
    if case.op == "separable_conv2d":
        k, g = c, c
    spec, _ = make_spec((n, c, h, w), (k, c // g, r, s), None, st, pd, dl, g, dtype, 2)
    return spec


def signal_spec(case: Case, dtype) -> ConvSpec:
    h, w, r, s = case.shape
    spec, _ = make_spec((1, 1, h, w), (1, 1, r, s), None, 1, case.mode, 1, 1, dtype, 2)
    return spec


def signal_reference(op: str, img, ker, mode: str) -> np.ndarray:
    """scipy.signal.convolve2d / correlate2d in float64; for large odd filters the
    same result through FFT (error ~1e-12 relative; the direct sum of a 15x15
    filter over 4096^2 takes seconds)."""
    import scipy.signal as ss
    img = np.asarray(img, dtype=np.float64)
    ker = np.asarray(ker, dtype=np.float64)
    r, s = ker.shape
    if img.size * ker.size > 5e7 and r % 2 == 1 and s % 2 == 1:
        k = ker if op == "convolve2d" else ker[::-1, ::-1]
        return ss.fftconvolve(img, k, mode=mode)
    return getattr(ss, op)(img, ker, mode=mode)


def _batch_spec(spec: ConvSpec, n: int) -> ConvSpec:
    """spec with batch n (the images the reference covers)."""
    return make_spec((n,) + spec.input_shape[1:], spec.weight_shape, None, spec.stride, spec.pad,
                     spec.dilation, spec.groups, spec.dtype, 2)[0]


def prepare_host(case: Case, dtype: str, seed: int = 0) -> tuple[Prepared, dict]:
    """Inputs on the host (numpy, storage dtype) and the float64 reference."""
    sdt = storage_dtype(dtype)
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return (rng.random(shape, dtype=np.float32 if sdt.itemsize <= 4 else np.float64) * 2 - 1).astype(sdt)

    if case.op in SIGNAL_OPS:
        h, w, r, s = case.shape
        spec = signal_spec(case, sdt)
        img, ker = rand(h, w), rand(r, s)
        ref = signal_reference(case.op, img, ker, case.mode)
        prep = Prepared(case, dtype, spec, spec.flops, spec.min_bytes, r * s, ref, Ellipsis)
        return prep, {"img": img, "ker": ker}

    spec = conv_spec(case, sdt)
    n = spec.n
    # Images are independent in everything but the weight gradient, so the
    # reference is computed for the first and last image only (the last one
    # catches batch-offset errors) when the batch is larger than 2.
    sub = [0, n - 1] if n > 2 else list(range(n))
    sspec = _batch_spec(spec, len(sub))
    red = spec.c_per_group * spec.R * spec.S
    x = rand(*spec.input_shape)
    if case.op == "conv2d":
        w = rand(*spec.weight_shape)
        ref = reference.conv(x[sub], w, None, sspec, accumulate="float64")
        return Prepared(case, dtype, spec, spec.flops, spec.min_bytes, red, ref, sub), {"x": x, "w": w}
    if case.op == "conv2d_input":
        w = rand(*spec.weight_shape)
        dy = rand(*spec.output_shape)
        ref = reference.dgrad(dy[sub], w, sspec, accumulate="float64")
        red = spec.k_per_group * spec.R * spec.S
        return Prepared(case, dtype, spec, spec.flops, spec.min_bytes, red, ref, sub), {"w": w, "dy": dy}
    if case.op == "conv2d_weight":
        dy = rand(*spec.output_shape)
        ref = reference.wgrad(x, dy, spec, accumulate="float64")
        red = spec.n * spec.P * spec.Q
        return (Prepared(case, dtype, spec, spec.flops, spec.min_bytes, red, ref, Ellipsis),
                {"x": x, "dy": dy})
    # separable: depthwise RxS on C channels (spec), then pointwise 1x1 C -> K
    k = case.shape[4]
    dw = rand(*spec.weight_shape)
    pw = rand(k, spec.c, 1, 1)
    mid = reference.conv(x[sub], dw, None, sspec, accumulate="float64")
    pspec, _ = make_spec(mid.shape, pw.shape, None, 1, 0, 1, 1, np.float64, 2)
    ref = reference.conv(mid, pw, None, pspec, accumulate="float64")
    flops = spec.flops + 2 * spec.n * k * spec.c * spec.P * spec.Q
    nbytes = sdt.itemsize * (int(np.prod(spec.input_shape)) + dw.size + pw.size
                             + spec.n * k * spec.P * spec.Q)
    prep = Prepared(case, dtype, spec, flops, nbytes, spec.R * spec.S * spec.c, ref, sub)
    return prep, {"x": x, "dw": dw, "pw": pw}


# ------------------------------------------------------------- gpuconv's calls
def gpuconv_call(prep: Prepared, host: dict, put, **kw):
    """() -> output: the public gpuconv function of the case on the host arrays moved
    by `put` (numpy for the CPU path and the simulator, cupy.asarray for the GPU);
    `kw`: algorithm=..., deterministic=... .  The float32 precision of the run's --dtype
    (PRECISION) is passed to the convolutions and gradients."""
    import gpuconv
    case, spec = prep.case, prep.spec
    op = case.op
    if op in ("conv2d", "conv2d_input", "conv2d_weight") and prep.dtype in PRECISION:
        kw = {"precision": PRECISION[prep.dtype], **kw}
    if op in SIGNAL_OPS:
        fn = getattr(gpuconv, op)
        img, ker = put(host["img"]), put(host["ker"])
        return lambda: fn(img, ker, mode=case.mode, **kw)
    _, _, _, _, _, _, _, st, pd, dl, g = case.shape
    if op == "conv2d":
        x, w = put(host["x"]), put(host["w"])
        return lambda: gpuconv.conv2d(x, w, None, st, pd, dl, g, **kw)
    if op == "conv2d_input":
        w, dy = put(host["w"]), put(host["dy"])
        size = spec.input_shape
        return lambda: gpuconv.conv2d_input(size, w, dy, st, pd, dl, g, **kw)
    if op == "conv2d_weight":
        x, dy = put(host["x"]), put(host["dy"])
        size = spec.weight_shape
        return lambda: gpuconv.conv2d_weight(x, size, dy, st, pd, dl, g, **kw)
    x, dw, pw = put(host["x"]), put(host["dw"]), put(host["pw"])
    return lambda: gpuconv.separable_conv2d(x, dw, pw, None, st, pd, dl, **kw)


def _on_backend(fn, backend):
    """fn run inside gpuconv.use_backend(backend) (the simulator)."""
    import gpuconv

    def run():
        with gpuconv.use_backend(backend):
            return fn()
    return run


# ------------------------------------------------------------- CPU mode
def add_cpu_impls(prep: Prepared, host: dict, *, anchors: bool = True) -> None:
    prep.impls.append(Impl("gpuconv:numpy", "gpuconv", gpuconv_call(prep, host, np.asarray), "cpu"))
    if not anchors:
        return
    if prep.case.op in SIGNAL_OPS:
        _add_scipy(prep, host)
    else:
        _add_torch(prep, host, device="cpu")


def _add_scipy(prep: Prepared, host: dict) -> None:
    case = prep.case
    try:
        import scipy.signal as ss
    except ImportError:
        prep.skipped["scipy.signal"] = "scipy not installed"
        return
    sfn = getattr(ss, case.op)
    img, ker = host["img"], host["ker"]
    prep.impls.append(Impl("scipy.signal", "anchor", lambda: sfn(img, ker, mode=case.mode), "cpu"))


def _add_torch(prep: Prepared, host: dict, device: str) -> None:
    """torch anchors: F.conv2d, torch.nn.grad (which calls aten's
    convolution_backward: cuDNN on CUDA), depthwise + pointwise F.conv2d."""
    label = "torch-cpu" if device == "cpu" else "cudnn"
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        prep.skipped[label] = "torch not installed"
        return
    case, spec, dtype = prep.case, prep.spec, prep.dtype
    op = case.op
    tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}.get(
        dtype, torch.float32)
    _, _, _, _, _, _, _, st, pd, dl, g = case.shape

    def t(a, cl=False):
        a = a.astype(np.float32) if a.dtype.kind == "V" else a       # bfloat16: exact in float32
        ten = torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=tdt)
        return ten.contiguous(memory_format=torch.channels_last) if cl and ten.dim() == 4 else ten

    layouts = [("nchw", False)] if device == "cpu" else [("nchw", False), ("nhwc", True)]
    timer = "cpu" if device == "cpu" else "torch"
    for lname, cl in layouts:
        name = label if device == "cpu" else f"cudnn:{lname}"
        if op == "conv2d":
            x, w = t(host["x"], cl), t(host["w"], cl)
            fn = (lambda x=x, w=w: F.conv2d(x, w, None, st, pd, dl, g))
        elif op == "conv2d_input":
            w, dy = t(host["w"], cl), t(host["dy"], cl)
            shape = list(spec.input_shape)
            fn = (lambda w=w, dy=dy: torch.nn.grad.conv2d_input(shape, w, dy, st, pd, dl, g))
        elif op == "conv2d_weight":
            x, dy = t(host["x"], cl), t(host["dy"], cl)
            shape = list(spec.weight_shape)
            fn = (lambda x=x, dy=dy: torch.nn.grad.conv2d_weight(x, shape, dy, st, pd, dl, g))
        else:
            x, dw, pw = t(host["x"], cl), t(host["dw"], cl), t(host["pw"], cl)
            fn = (lambda x=x, dw=dw, pw=pw: F.conv2d(F.conv2d(x, dw, None, st, pd, dl, g), pw))
        prep.impls.append(Impl(name, "anchor", _no_grad(torch, fn), timer))


def _no_grad(torch, fn):
    def run():
        with torch.no_grad():
            return fn()
    return run


# ------------------------------------------------------------- GPU path: GPU or simulator
def add_device_impls(prep: Prepared, host: dict, *, anchors: bool = True, variants=None,
                     torch_ok: bool = True, backend=None) -> None:
    """gpuconv's GPU path on the case: the dispatcher's pick, every registered
    variant that supports the case (or those named in `variants`), the atomic
    weight gradient, separable's two algorithms; with `anchors`, cuDNN and cupyx.

    backend None: on the GPU (CuPy arrays, CUDA-event timing); a backend (the
    simulator, gpuconv.sim.SimBackend): NumPy arrays inside
    gpuconv.use_backend(backend), wall-clock timing, no anchors."""
    case, spec = prep.case, prep.spec
    if backend is None:
        import cupy
        put, timer = cupy.asarray, "cupy"

        def wrap(fn):
            return fn
    else:
        put, timer, anchors = np.array, "cpu", False

        def wrap(fn):
            return _on_backend(fn, backend)

    def add(name, forced=False, **kw):
        prep.impls.append(Impl(name, "gpuconv", wrap(gpuconv_call(prep, host, put, **kw)), timer,
                               forced=forced))

    def wanted(name):
        return variants is None or name in variants

    add("gpuconv:auto")
    if case.op == "conv2d_weight":
        # the atomic split-K kernel against the default fixed-order reduction
        add("gpuconv:atomic", deterministic=False)
    if case.op in ("conv2d_input", "conv2d_weight"):
        # the tensor-core route (gpuconv.derived on the implicit GEMM) forced, against the
        # pick: the measurement dispatch.grad_on_tensor_cores' rule waits for
        prep.dispatch = explain_grad("dgrad" if case.op == "conv2d_input" else "wgrad", spec,
                                     device_facts() if backend is None else None,
                                     PRECISION.get(prep.dtype, "highest"))
        if wanted("implicit_gemm"):
            if prep.dispatch["implicit_gemm_ok"]:
                add("gpuconv:implicit_gemm", forced=True, algorithm="implicit_gemm")
            else:
                prep.skipped["gpuconv:implicit_gemm"] = prep.dispatch["implicit_gemm_why"]
    if case.op == "separable_conv2d":
        # fused (mid tile kept on chip) against two passes: the measurement the
        # fused kernel's threshold waits for
        for alg in SEPARABLE_ALGORITHMS:
            if wanted(alg):
                add(f"gpuconv:{alg}", forced=True, algorithm=alg)
    if case.op == "conv2d":
        precision = PRECISION.get(prep.dtype, "highest")
        prep.dispatch = explain(spec, device_facts() if backend is None else None, precision)
        ok, no = gpu_variants(spec, precision)
        for v in ok:
            if wanted(v):
                add(f"gpuconv:{v}", forced=True, algorithm=v)
        for v, why in no.items():
            if wanted(v):
                prep.skipped[f"gpuconv:{v}"] = why or "does not support this shape"
    if not anchors:
        return
    if case.op in SIGNAL_OPS:
        _add_cupyx(prep, put(host["img"]), put(host["ker"]))
    elif torch_ok:
        _add_torch(prep, host, device="cuda")


def _add_cupyx(prep: Prepared, img, ker) -> None:
    case = prep.case
    try:
        import cupyx.scipy.signal as css
        sfn = getattr(css, case.op)
        prep.impls.append(Impl("cupyx.signal", "anchor", lambda: sfn(img, ker, mode=case.mode), "cupy"))
    except (ImportError, AttributeError) as exc:
        prep.skipped["cupyx.signal"] = f"cupyx.scipy.signal unavailable ({exc})"
    r, s = ker.shape
    if case.mode == "same" and r % 2 == 1 and s % 2 == 1:
        # ndimage's 'constant' boundary with an odd filter centred = signal's 'same'
        try:
            import cupyx.scipy.ndimage as cnd
            nfn = cnd.convolve if case.op == "convolve2d" else cnd.correlate
            prep.impls.append(Impl("cupyx.ndimage", "anchor",
                                   lambda: nfn(img, ker, mode="constant", cval=0.0), "cupy"))
        except ImportError as exc:
            prep.skipped["cupyx.ndimage"] = f"cupyx.scipy.ndimage unavailable ({exc})"
    else:
        prep.skipped["cupyx.ndimage"] = "only 'same' mode with odd filters matches ndimage"


def to_host(out) -> np.ndarray:
    mod = type(out).__module__
    if mod.startswith("cupy"):
        return out.get()
    if mod.startswith("torch"):
        t = out.detach()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.cpu().numpy()
    return np.asarray(out)
