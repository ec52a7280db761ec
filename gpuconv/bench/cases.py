"""One benchmark case -> inputs, the float64 reference, and the implementations
to run on it.

Implementations are named `family:detail`:
  gpuconv:auto         the dispatcher's pick (what a user's call gets)
  gpuconv:<variant>    a registered GPU variant forced with algorithm=<variant>
  gpuconv:numpy        the CPU path
  cudnn:nchw / cudnn:nhwc    torch.nn.functional on CUDA (channels_last for nhwc)
  cupyx.signal / cupyx.ndimage   cupyx.scipy.signal.convolve2d / correlate2d and
                       cupyx.scipy.ndimage.convolve / correlate ('same' mode only)
  torch-cpu            torch on the CPU
  scipy.signal         scipy.signal.convolve2d / correlate2d
Ratios in the report are anchor time / gpuconv:auto time.
"""
from __future__ import annotations

import inspect
import importlib
from dataclasses import dataclass, field

import numpy as np

from . import refs
from .suites import SIGNAL_OPS, Case
from ..spec import ConvSpec, make_spec

# Per dtype: |out - ref| <= k * (sqrt(red) + |ref|), red = the reduction length
# (terms summed per output), inputs uniform in [-1, 1).  fp32 rounding grows
# like eps*sqrt(red) (eps 6e-8; 1e-5 leaves 100x room); TF32 and fp16 round
# products to 10 mantissa bits (2^-11 = 4.9e-4); bf16 to 7 (3.9e-3).
TOLERANCE = {"float64": 1e-10, "float32": 1e-5, "tf32": 2e-3, "float16": 2e-3, "bfloat16": 1e-2}


@dataclass
class Impl:
    name: str
    role: str                   # "gpuconv" | "anchor"
    fn: object                  # () -> output array
    timer: str                  # "cpu" | "cupy" | "torch"
    note: str = ""


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
    return np.dtype("float32") if dtype == "tf32" else np.dtype(dtype)


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


# ------------------------------------------------------------- lookups
def find_function(name: str):
    """gpuconv.<name> or, while the API does not export it yet, from a submodule."""
    import gpuconv
    fn = getattr(gpuconv, name, None)
    if fn is not None:
        return fn
    for mod in ("gpuconv.grad", "gpuconv.gradients", "gpuconv.extra", "gpuconv.ops",
                "gpuconv.separable", "gpuconv.api"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        if getattr(m, name, None) is not None:
            return getattr(m, name)
    return None


def gpu_variants(spec: ConvSpec) -> tuple[list[str], dict, str | None]:
    """(variants that support spec, {variant: reason it does not}, problem or None)."""
    try:
        from gpuconv.cuda import variants
    except ImportError as exc:
        return [], {}, f"gpuconv.cuda.variants not available ({exc})"
    ok, no = [], {}
    for name in variants.conv_variant_names():
        try:
            res = variants.get(name).supports(spec)
            yes, why = (res, "") if isinstance(res, bool) else (bool(res[0]), str(res[1]))
        except Exception as exc:  # noqa: BLE001 - a broken variant is reported, not fatal
            yes, why = False, f"supports() raised {type(exc).__name__}: {exc}"
        (ok.append(name) if yes else no.__setitem__(name, why))
    return ok, no, None


def device_facts():
    """The dispatcher's view of the current GPU, or None (its defaults) without one."""
    try:
        from gpuconv.cuda import backend
        return backend.device_facts(backend.default_backend())
    except Exception:  # noqa: BLE001 - no CuPy / no device: the dispatcher's defaults
        return None


def explain(spec: ConvSpec, facts=None) -> dict:
    """The dispatcher's pick and reason: {'pick': name|None, 'why': text, 'source': ...}.
    Uses gpuconv.cuda.dispatch.choose/explain (a pure function of spec and
    device facts, so it answers on a machine without a GPU too)."""
    try:
        dispatch = importlib.import_module("gpuconv.cuda.dispatch")
    except ImportError as exc:
        return {"pick": None, "why": f"no dispatcher in this build (gpuconv.cuda.dispatch: {exc})"}
    out = {"pick": None, "why": "", "source": "gpuconv.cuda.dispatch"}
    kw = {} if facts is None else {"facts": facts}
    choose = getattr(dispatch, "choose", None)
    if choose is not None:
        try:
            res = choose(spec, **kw)
            out["pick"] = _pick_name(res)
            if isinstance(res, tuple) and len(res) > 1:
                out["config"] = res[1]
        except Exception as exc:  # noqa: BLE001
            out["why"] = f"dispatch.choose raised {type(exc).__name__}: {exc}"
            return out
    fn = getattr(dispatch, "explain", None)
    if fn is None:
        out["why"] = "the dispatcher has no explain function"
        return out
    try:
        res = fn(spec, **kw)
    except Exception as exc:  # noqa: BLE001
        out["why"] = f"dispatch.explain raised {type(exc).__name__}: {exc}"
        return out
    out["why"] = res if isinstance(res, str) else _describe(res)
    if out["pick"] is None:
        out["pick"] = _pick_name(res)
    return out


def _pick_name(res):
    if isinstance(res, dict):
        for key in ("variant", "pick", "name", "algorithm"):
            if key in res:
                return str(res[key])
        return None
    for key in ("variant", "pick", "name", "algorithm"):
        v = getattr(res, key, None)
        if isinstance(v, str):
            return v
        if v is not None and isinstance(getattr(v, "name", None), str):
            return v.name
    if isinstance(res, (tuple, list)) and res and isinstance(res[0], str):
        return res[0]
    if isinstance(res, str):                      # "... -> name config ..." as explain prints it
        for line in res.splitlines():
            if line.strip().startswith("->"):
                return line.split()[1]
    return None


def _describe(res) -> str:
    if isinstance(res, dict):
        return "; ".join(f"{k}: {v}" for k, v in res.items())
    for key in ("reason", "why", "explanation"):
        if isinstance(getattr(res, key, None), str):
            return getattr(res, key)
    return str(res)


def _kwargs_for(fn, **candidates) -> dict:
    """The candidates fn accepts by name (all of them if it takes **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return candidates
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return candidates
    return {k: v for k, v in candidates.items() if k in params}


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
        ref = refs.signal_ref(case.op, img, ker, case.mode)
        prep = Prepared(case, dtype, spec, spec.flops, spec.min_bytes, r * s, ref, Ellipsis)
        return prep, {"img": img, "ker": ker}

    spec = conv_spec(case, sdt)
    n = spec.n
    # Images are independent in everything but the weight gradient, so the
    # reference is computed for the first and last image only (the last one
    # catches batch-offset errors) when the batch is larger than 2.
    sub = [0, n - 1] if n > 2 else list(range(n))
    red = spec.c_per_group * spec.R * spec.S
    x = rand(*spec.input_shape)
    if case.op == "conv2d":
        w = rand(*spec.weight_shape)
        sspec, _ = make_spec((len(sub),) + spec.input_shape[1:], spec.weight_shape, None, spec.stride,
                             spec.pad, spec.dilation, spec.groups, sdt, 2)
        ref = refs.conv2d_ref(x[sub], w, sspec)
        return Prepared(case, dtype, spec, spec.flops, spec.min_bytes, red, ref, sub), {"x": x, "w": w}
    if case.op == "conv2d_input":
        w = rand(*spec.weight_shape)
        dy = rand(*spec.output_shape)
        sspec, _ = make_spec((len(sub),) + spec.input_shape[1:], spec.weight_shape, None, spec.stride,
                             spec.pad, spec.dilation, spec.groups, sdt, 2)
        ref = refs.conv2d_input_ref(dy[sub], w, sspec)
        red = spec.k_per_group * spec.R * spec.S
        return Prepared(case, dtype, spec, spec.flops, spec.min_bytes, red, ref, sub), {"w": w, "dy": dy}
    if case.op == "conv2d_weight":
        dy = rand(*spec.output_shape)
        ref = refs.conv2d_weight_ref(x, dy, spec)
        red = spec.n * spec.P * spec.Q
        return (Prepared(case, dtype, spec, spec.flops, spec.min_bytes, red, ref, Ellipsis),
                {"x": x, "dy": dy})
    # separable: depthwise RxS on C channels (spec), then pointwise 1x1 C -> K
    k = case.shape[4]
    dw = rand(*spec.weight_shape)
    pw = rand(k, spec.c, 1, 1)
    sspec, _ = make_spec((len(sub),) + spec.input_shape[1:], spec.weight_shape, None, spec.stride,
                         spec.pad, spec.dilation, spec.groups, sdt, 2)
    mid = refs.conv2d_ref(x[sub], dw, sspec)
    pspec, _ = make_spec(mid.shape, pw.shape, None, 1, 0, 1, 1, np.float64, 2)
    ref = refs.conv2d_ref(mid, pw, pspec)
    flops = spec.flops + 2 * spec.n * k * spec.c * spec.P * spec.Q
    nbytes = sdt.itemsize * (int(np.prod(spec.input_shape)) + dw.size + pw.size
                             + spec.n * k * spec.P * spec.Q)
    prep = Prepared(case, dtype, spec, flops, nbytes, spec.R * spec.S * spec.c, ref, sub)
    return prep, {"x": x, "dw": dw, "pw": pw}


def _tf32_kwargs(fn, dtype):
    """gpuconv computes fp32 exactly; an `allow_tf32` keyword, if the API grows one,
    is set to match the anchors."""
    return _kwargs_for(fn, allow_tf32=(dtype == "tf32"))


# ------------------------------------------------------------- CPU mode
def add_cpu_impls(prep: Prepared, host: dict, *, anchors: bool = True) -> None:
    import gpuconv
    case, spec = prep.case, prep.spec
    op = case.op
    if op in SIGNAL_OPS:
        fn = getattr(gpuconv, op)
        img, ker = host["img"], host["ker"]
        prep.impls.append(Impl("gpuconv:numpy", "gpuconv", lambda: fn(img, ker, mode=case.mode), "cpu"))
        if anchors:
            try:
                import scipy.signal as ss
                sfn = getattr(ss, op)
                prep.impls.append(Impl("scipy.signal", "anchor", lambda: sfn(img, ker, mode=case.mode),
                                       "cpu"))
            except ImportError:
                prep.skipped["scipy.signal"] = "scipy not installed"
        return
    geo = _geometry(spec)
    _add_gpuconv_forward_like(prep, host, geo, "gpuconv:numpy", "cpu", lambda a: a)
    if anchors:
        _add_torch(prep, host, geo, device="cpu")


def _sym(spec: ConvSpec) -> bool:
    return all(lo == hi for lo, hi in spec.pad)


def _geometry(spec: ConvSpec) -> dict:
    """conv2d keyword arguments reproducing `spec` (pairs; (lo, hi) pairs if asymmetric)."""
    pad = tuple(lo for lo, _ in spec.pad) if _sym(spec) else spec.pad
    return dict(stride=spec.stride, padding=pad, dilation=spec.dilation, groups=spec.groups)


def _add_gpuconv_forward_like(prep: Prepared, host: dict, geo: dict, name: str, timer: str, put,
                              algorithm: str | None = None, extra: dict | None = None):
    """gpuconv's conv2d / gradients / separable on arrays moved by `put` (`extra`:
    more keywords, e.g. deterministic=False for the weight gradient)."""
    import gpuconv
    case, spec, dtype = prep.case, prep.spec, prep.dtype
    op = case.op
    alg = {} if algorithm is None else {"algorithm": algorithm}
    alg.update(extra or {})
    if op == "conv2d":
        x, w = put(host["x"]), put(host["w"])
        kw = dict(alg, **_tf32_kwargs(gpuconv.conv2d, dtype))
        prep.impls.append(Impl(name, "gpuconv", lambda: gpuconv.conv2d(x, w, None, **geo, **kw), timer))
        return
    fn = find_function(op)
    if fn is None:
        prep.skipped[name] = f"gpuconv.{op} not available yet"
        return
    kw = _kwargs_for(fn, **geo, **alg, **_tf32_kwargs(fn, dtype))
    if op == "conv2d_input":
        w, dy = put(host["w"]), put(host["dy"])
        shape = spec.input_shape
        prep.impls.append(Impl(name, "gpuconv", lambda: fn(shape, w, dy, **kw), timer))
    elif op == "conv2d_weight":
        x, dy = put(host["x"]), put(host["dy"])
        shape = spec.weight_shape
        prep.impls.append(Impl(name, "gpuconv", lambda: fn(x, shape, dy, **kw), timer))
    else:
        x, dw, pw = put(host["x"]), put(host["dw"]), put(host["pw"])
        kw.pop("groups", None)
        prep.impls.append(Impl(name, "gpuconv", lambda: fn(x, dw, pw, **kw), timer))


def _add_torch(prep: Prepared, host: dict, geo: dict, device: str) -> None:
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
    if not _sym(spec):
        prep.skipped[label] = "asymmetric padding (torch takes symmetric padding only)"
        return
    st, pd, dl, g = spec.stride, (spec.pad[0][0], spec.pad[1][0]), spec.dilation, spec.groups

    def t(a, cl=False):
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


# ------------------------------------------------------------- GPU mode
def add_gpu_impls(prep: Prepared, host: dict, *, anchors: bool = True, variants=None,
                  torch_ok: bool = True) -> None:
    import cupy
    import gpuconv
    case, spec = prep.case, prep.spec
    put = cupy.asarray
    if case.op in SIGNAL_OPS:
        img, ker = put(host["img"]), put(host["ker"])
        fn = getattr(gpuconv, case.op)
        prep.impls.append(Impl("gpuconv:auto", "gpuconv", lambda: fn(img, ker, mode=case.mode), "cupy"))
        if anchors:
            _add_cupyx(prep, img, ker)
        return
    geo = _geometry(spec)
    _add_gpuconv_forward_like(prep, host, geo, "gpuconv:auto", "cupy", put)
    if case.op == "conv2d_weight":
        # the atomic split-K kernel against the default fixed-order reduction
        _add_gpuconv_forward_like(prep, host, geo, "gpuconv:atomic", "cupy", put,
                                  extra={"deterministic": False})
    if case.op == "separable_conv2d":
        # fused (mid tile kept on chip) against two passes: the measurement the
        # fused kernel's threshold (gpuconv.cuda.separable.FUSED_MAX_CMK) waits for
        from gpuconv.cuda import separable as csep
        ok, why = csep.fused_supports(spec, int(host["pw"].shape[0]))
        for alg in ("fused", "two_pass"):
            if alg == "fused" and not ok:
                prep.skipped["gpuconv:fused"] = why
            elif variants is None or alg in variants:
                _add_gpuconv_forward_like(prep, host, geo, f"gpuconv:{alg}", "cupy", put, algorithm=alg)
    if case.op == "conv2d":
        prep.dispatch = explain(spec, device_facts())
        ok, no, problem = gpu_variants(spec)
        if problem:
            prep.notes.append(problem)
        for v in ok:
            if variants is None or v in variants:
                _add_gpuconv_forward_like(prep, host, geo, f"gpuconv:{v}", "cupy", put, algorithm=v)
        for v, why in no.items():
            if variants is None or v in variants:
                prep.skipped[f"gpuconv:{v}"] = why or "does not support this shape"
    if anchors and torch_ok:
        _add_torch(prep, host, geo, device="cuda")


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
