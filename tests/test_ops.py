"""The operation set beyond conv2d, against torch CPU:

* conv_transpose1d/2d/3d         torch.nn.functional.conv_transpose{n}d
* conv{n}d_input / conv{n}d_weight  torch.nn.grad and autograd gradients
* separable_conv1d/2d/3d         F.conv{n}d(F.conv{n}d(x, dw, groups=C), pw, bias)
* conv1d / conv3d                F.conv1d / F.conv3d, nn.Conv{n}d padding modes
* gpuconv.torch                  torch.autograd.gradcheck, nn.Conv2d parity

Tests that take the `path` fixture run the public function on NumPy (the CPU
path), in the simulator and on a GPU from one body (tests/conftest.py); the
derived forward problems a device runs where a kernel refuses (gpuconv.derived)
are checked on NumPy against the same references.  Error conditions are
compared with torch's: every call we refuse, torch refuses too (and the other
way round on random fuzz), and none starts a computation.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from gpuconv import cpu_grad, engine, reference
from gpuconv import grad as G
from gpuconv import transpose as TR
from gpuconv.derived import dgrad_as_fprop, wgrad_as_fprop
from gpuconv.spec import make_spec, transpose_spec
from util import assert_close, randn

torch = pytest.importorskip("torch")
F = torch.nn.functional
TG = torch.nn.grad

ACT = {"relu": F.relu, "relu6": F.relu6, "silu": F.silu, "gelu": F.gelu}
TORCH_ERRORS = (RuntimeError, ValueError, TypeError, NotImplementedError)


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def T64(a):
    """torch float64 copy: the reference is computed in double from the same values."""
    return torch.from_numpy(np.asarray(a, dtype=np.float64).copy())


def tup(rng, lo, hi, nd):
    """An int or a tuple of nd ints in [lo, hi), whichever is drawn."""
    v = tuple(int(x) for x in rng.integers(lo, hi, nd))
    return v[0] if rng.random() < 0.4 and len(set(v)) == 1 else v


def per_dim(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


# ============================================================ transposed ====
def transpose_config(rng, nd):
    """A random conv_transpose configuration that torch accepts."""
    while True:
        g = int(rng.choice([1, 1, 2, 3]))
        cfg = dict(n=int(rng.choice([0, 1, 2, 3])), g=g, cg=int(rng.integers(1, 4)),
                   kg=int(rng.integers(1, 4)), size=tuple(int(v) for v in rng.integers(1, 7, nd)),
                   kernel=tuple(int(v) for v in rng.integers(1, 4, nd)),
                   stride=tup(rng, 1, 4, nd), dilation=tup(rng, 1, 3, nd),
                   padding=tup(rng, 0, 3, nd), bias=bool(rng.random() < 0.7))
        s, d = per_dim(cfg["stride"], nd), per_dim(cfg["dilation"], nd)
        cfg["output_padding"] = tuple(int(rng.integers(0, max(a, b))) for a, b in zip(s, d))
        p = per_dim(cfg["padding"], nd)
        out = [(i - 1) * a - 2 * q + b * (k - 1) + o + 1 for i, a, q, b, k, o in
               zip(cfg["size"], s, p, d, cfg["kernel"], cfg["output_padding"])]
        if min(out) > 0:
            return cfg


def transpose_arrays(rng, cfg, dtype=np.float64):
    x = randn(rng, (cfg["n"], cfg["g"] * cfg["cg"]) + cfg["size"], dtype)
    w = randn(rng, (cfg["g"] * cfg["cg"], cfg["kg"]) + cfg["kernel"], dtype)
    b = randn(rng, (cfg["g"] * cfg["kg"],), dtype) if cfg["bias"] else None
    args = (cfg["stride"], cfg["padding"], cfg["output_padding"], cfg["g"], cfg["dilation"])
    return x, w, b, args


def torch_transpose(nd, x, w, b, args):
    fn = getattr(F, f"conv_transpose{nd}d")
    return fn(T64(x), T64(w), None if b is None else T64(b), *args).numpy()


def transpose_device_on_numpy(nd, x, w, b, args, activation=None):
    """The derived problem a device runs where the transposed-conv kernel refuses (a
    forward conv of the zero-upsampled input: gpuconv.derived), by the reference."""
    spec, _ = transpose_spec(x.shape, w.shape, None if b is None else b.shape, *args[:3], args[3],
                             args[4], x.dtype, nd)
    fspec, xu, wf = dgrad_as_fprop(np, x, w, spec)
    out = reference.conv(xu, wf, b, fspec)
    return out if activation is None else engine.activations.apply(out, activation)


@pytest.fixture
def no_compute(monkeypatch):
    """Every operator of the engine raises: a call must fail validation first."""
    def boom(*a, **k):
        raise AssertionError("computation started before validation")
    for key in list(engine._RUN):
        monkeypatch.setitem(engine._RUN, key, boom)
    monkeypatch.setattr(engine, "separable", boom)
    monkeypatch.setattr(engine, "correlate", boom)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("chunk", range(4))
def test_conv_transpose_random_configs_float64(rng, path, nd, chunk):
    fn = getattr(gpuconv.transpose, f"conv_transpose{nd}d")
    for _ in range(10):
        cfg = transpose_config(rng, nd)
        x, w, b, args = transpose_arrays(rng, cfg)
        want = torch_transpose(nd, x, w, b, args)
        got = fn(path.asarray(x), path.asarray(w), path.asarray(b), *args)
        assert_close(path.get(got), want, np.float64, what=f"conv_transpose{nd}d {cfg}")
        if path.name == "numpy":
            assert_close(transpose_device_on_numpy(nd, x, w, b, args), want, np.float64,
                         what=f"device formulation {cfg}")


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.complex128])
def test_conv_transpose_other_dtypes(rng, path, dtype):
    for _ in range(15):
        nd = int(rng.integers(1, 4))
        cfg = transpose_config(rng, nd)
        x, w, b, args = transpose_arrays(rng, cfg, dtype)
        fn = getattr(F, f"conv_transpose{nd}d")
        if np.dtype(dtype).kind == "c":
            want = fn(T(x), T(w), None if b is None else T(b), *args).numpy()
        else:
            want = torch_transpose(nd, x, w, b, args)
        got = TR.conv_transpose_forward(nd, "t", path.asarray(x), path.asarray(w), path.asarray(b),
                                        *args)
        assert_close(path.get(got), want, dtype, what=f"{np.dtype(dtype)} {cfg}")


def test_conv_transpose_unbatched_and_zero_batch(rng, path):
    x = randn(rng, (4, 5, 6))
    w = randn(rng, (4, 3, 3, 2))
    b = randn(rng, (6,))
    A = path.asarray
    got = path.get(gpuconv.transpose.conv_transpose2d(A(x), A(w), A(b), (2, 1), 1, (1, 0), 2, (1, 2)))
    want = F.conv_transpose2d(T(x), T(w), T(b), (2, 1), 1, (1, 0), 2, (1, 2)).numpy()
    assert got.shape == want.shape == (6, 10, 6)
    assert_close(got, want, np.float64)
    x0 = randn(rng, (0, 4, 5, 6))
    z = gpuconv.transpose.conv_transpose2d(A(x0), A(w), A(b), 2, 1, 1, 2)
    assert z.shape == F.conv_transpose2d(T(x0), T(w), T(b), 2, 1, 1, 2).shape == (0, 6, 10, 11)
    x1 = randn(rng, (3, 7))
    w1 = randn(rng, (3, 2, 4))
    assert_close(path.get(gpuconv.transpose.conv_transpose1d(A(x1), A(w1), stride=3, output_padding=2)),
                 F.conv_transpose1d(T(x1), T(w1), stride=3, output_padding=2).numpy(), np.float64)


def test_conv_transpose_int64_wraps_like_torch(rng):
    """torch computes integer transposed convolutions on the CPU for int64 only (wrapping
    on overflow); other integer dtypes are refused, as torch refuses them."""
    for nd, args in [(1, (2, 1, 1, 1, 2)), (2, ((2, 1), 1, (1, 0), 2, (1, 2))), (3, (1, 0, 0, 1, 1))]:
        x = rng.integers(-2**40, 2**40, (2, 4) + (4,) * nd)
        w = rng.integers(-2**30, 2**30, (4, 3 if args[3] == 1 else 1) + (2,) * nd)
        b = rng.integers(-9, 9, (w.shape[1] * args[3],))
        want = getattr(F, f"conv_transpose{nd}d")(T(x), T(w), T(b), *args).numpy()
        got = getattr(gpuconv, f"conv_transpose{nd}d")(x, w, b, *args)
        assert got.dtype == np.int64 and np.array_equal(got, want), (nd, args)
    for dt in (np.int32, np.int16, np.uint8):
        with pytest.raises(TypeError, match=np.dtype(dt).name):
            gpuconv.conv_transpose2d(np.ones((1, 2, 3, 3), dt), np.ones((2, 1, 2, 2), dt))


def test_conv_transpose_padding_beyond_kernel_and_output_padding_below_dilation(rng, path):
    # padding > dilation*(k-1): the device formulation crops the upsampled input;
    # output_padding >= stride is allowed when below dilation
    x = randn(rng, (2, 3, 6, 5))
    w = randn(rng, (3, 2, 2, 3))
    for args in [(3, 3, 0, 1, 1), ((2, 3), (4, 2), (1, 2), 1, (1, 3)), (1, 0, 2, 1, 3)]:
        want = F.conv_transpose2d(T(x), T(w), None, *args).numpy()
        got = gpuconv.transpose.conv_transpose2d(path.asarray(x), path.asarray(w), None, *args)
        assert_close(path.get(got), want, np.float64, what=str(args))
        assert_close(transpose_device_on_numpy(2, x, w, None, args), want, np.float64, what=str(args))


@pytest.mark.parametrize("activation", ["relu", "relu6", "silu", "gelu"])
def test_conv_transpose_activation_after_bias(rng, path, activation):
    x = randn(rng, (2, 4, 5, 6)) * 2
    w = randn(rng, (4, 3, 3, 3))
    b = randn(rng, (6,))
    args = (2, 1, 1, 2, 1)
    want = ACT[activation](F.conv_transpose2d(T(x), T(w), T(b), *args)).numpy()
    got = gpuconv.transpose.conv_transpose2d(path.asarray(x), path.asarray(w), path.asarray(b), *args,
                                             activation=activation)
    assert_close(path.get(got), want, np.float64)
    assert_close(transpose_device_on_numpy(2, x, w, b, args, activation), want, np.float64)


def test_conv_transpose_torch_tensors_and_chunking(rng, monkeypatch):
    x = T(randn(rng, (5, 3, 4, 4)))
    w = T(randn(rng, (3, 2, 3, 3)))
    want = F.conv_transpose2d(x, w, stride=2, padding=1)
    got = gpuconv.transpose.conv_transpose2d(x, w, stride=2, padding=1)
    assert isinstance(got, torch.Tensor)
    assert_close(got.numpy(), want.numpy(), np.float64)
    monkeypatch.setattr(cpu_grad, "_DGRAD_COLS_ELEMS", 300)   # a few images per GEMM chunk
    assert_close(gpuconv.transpose.conv_transpose2d(x, w, stride=2, padding=1).numpy(), want.numpy(), np.float64)


def _ones(*shape, dtype=np.float64):
    return np.ones(shape, dtype=dtype)


X4, W4 = _ones(2, 4, 5, 5), _ones(4, 3, 3, 3)
TRANSPOSE_BAD_CALLS = [
    # (id, args, kwargs, exception, words the message must contain)
    ("output_padding_vs_stride", (X4, W4), {"stride": 2, "output_padding": 2}, ValueError,
     ["output_padding", "stride", "dilation"]),
    ("output_padding_one_dim", (X4, W4), {"stride": 2, "output_padding": (1, 2)}, ValueError,
     ["output_padding", "(1, 2)"]),
    ("output_padding_stride1", (X4, W4), {"output_padding": 1}, ValueError, ["output_padding"]),
    ("output_padding_neg", (X4, W4), {"output_padding": -1}, ValueError, ["output_padding"]),
    ("output_padding_len", (X4, W4), {"output_padding": (1, 1, 1)}, ValueError, ["output_padding"]),
    ("padding_neg", (X4, W4), {"padding": -1}, ValueError, ["padding"]),
    ("padding_too_big", (X4, W4), {"padding": 4}, ValueError, ["padding", "Output size"]),
    ("padding_str", (X4, W4), {"padding": "same"}, TypeError, ["padding", "same"]),
    ("stride_zero", (X4, W4), {"stride": 0}, ValueError, ["stride"]),
    ("dilation_zero", (X4, W4), {"dilation": 0}, ValueError, ["dilation"]),
    ("groups_zero", (X4, W4), {"groups": 0}, ValueError, ["groups"]),
    ("groups_divide", (X4, W4), {"groups": 3}, ValueError, ["groups=3", "divisible"]),
    ("channels", (X4, _ones(3, 3, 3, 3)), {}, ValueError, ["input", "3 channels", "4 channels"]),
    ("weight_dim0_zero", (_ones(2, 0, 5, 5), _ones(0, 3, 3, 3)), {}, ValueError, ["weight", "groups=1"]),
    ("weight_out_zero", (X4, _ones(4, 0, 3, 3)), {}, ValueError, ["weight"]),
    ("kernel_zero", (X4, _ones(4, 3, 0, 3)), {}, ValueError, ["weight"]),
    ("bias_size", (X4, W4, _ones(4)), {}, ValueError, ["bias", "3 elements"]),
    ("bias_groups", (X4, W4, _ones(3)), {"groups": 2}, ValueError, ["bias", "6 elements"]),
    ("bias_2d", (X4, W4, _ones(1, 3)), {}, ValueError, ["bias"]),
    ("input_2d", (_ones(5, 5), W4), {}, ValueError, ["input", "[5, 5]"]),
    ("weight_3d", (X4, _ones(4, 3, 3)), {}, ValueError, ["weight"]),
    ("input_zero_spatial", (_ones(2, 4, 0, 5), W4), {}, ValueError, ["input", "[2, 4, 0, 5]"]),
    ("dtype_mix", (X4, W4.astype(np.float32)), {}, TypeError, ["float64", "float32"]),
    # (torch's slow float64 path casts a float32 bias silently; float32 input with a float64
    # bias it refuses, as conv2d refuses both: we refuse both)
    ("bias_dtype", (X4.astype(np.float32), W4.astype(np.float32), _ones(3)), {}, TypeError, ["bias"]),
    ("int32_dtype", (X4.astype(np.int32), W4.astype(np.int32)), {}, TypeError, ["int32"]),
    ("stride_float", (X4, W4), {"stride": 1.5}, TypeError, ["stride"]),
    ("groups_float", (X4, W4), {"groups": 1.0}, TypeError, ["groups"]),
    ("weight_none", (X4, None), {}, TypeError, ["weight"]),
    ("activation", (X4, W4), {"activation": "tanh"}, ValueError, ["activation", "tanh"]),
]


@pytest.mark.parametrize("args,kwargs,exc,words", [c[1:] for c in TRANSPOSE_BAD_CALLS],
                         ids=[c[0] for c in TRANSPOSE_BAD_CALLS])
def test_conv_transpose_errors_name_the_argument(no_compute, path, args, kwargs, exc, words):
    args = [path.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    with pytest.raises(exc) as info:
        gpuconv.transpose.conv_transpose2d(*args, **kwargs)
    for word in words:
        assert word in str(info.value), f"{word!r} not in message {str(info.value)!r}"


@pytest.mark.parametrize("case", [c for c in TRANSPOSE_BAD_CALLS if c[0] != "activation"],
                         ids=lambda c: c[0])
def test_torch_rejects_the_same_transpose_calls(case):
    _, args, kwargs, _, _ = case
    targs = [T(a) if isinstance(a, np.ndarray) else a for a in args]
    with pytest.raises(TORCH_ERRORS):
        F.conv_transpose2d(*targs, **kwargs)


def test_conv_transpose_error_conditions_are_torchs(rng):
    """Random, often invalid, arguments: we raise exactly when torch (float64) raises.
    One exception: an empty batch whose output would have a zero-size dimension,
    which torch lets through and we refuse with the non-empty batch's error."""
    seen = {True: 0, False: 0}
    for _ in range(150):
        nd = int(rng.integers(1, 4))
        g = int(rng.choice([1, 2, 3]))
        x = randn(rng, (int(rng.integers(0, 3)), g * int(rng.integers(1, 3)) + int(rng.random() < 0.1))
                  + tuple(int(v) for v in rng.integers(1, 5, nd)))
        cin = x.shape[1] if rng.random() < 0.9 else x.shape[1] + 1
        w = randn(rng, (cin, int(rng.integers(1, 3))) + tuple(int(v) for v in rng.integers(1, 4, nd)))
        args = (tup(rng, 1, 4, nd), tup(rng, -1, 4, nd), tup(rng, 0, 4, nd), g, tup(rng, 1, 3, nd))
        try:
            getattr(F, f"conv_transpose{nd}d")(T(x), T(w), None, *args)
            torch_raised = False
        except TORCH_ERRORS:
            torch_raised = True
        try:
            TR.conv_transpose_forward(nd, "t", x, w, None, *args)
            we_raised = False
        except (ValueError, TypeError):
            we_raised = True
        if x.shape[0] == 0 and we_raised and not torch_raised:
            continue
        assert we_raised == torch_raised, f"nd={nd} x{x.shape} w{w.shape} args={args}: torch " \
                                          f"raised={torch_raised}, we raised={we_raised}"
        seen[we_raised] += 1
    assert seen[True] > 10 and seen[False] > 10


# ============================================================= gradients ====
def forward_config(rng, nd):
    """A random forward convolution configuration that torch accepts."""
    while True:
        g = int(rng.choice([1, 1, 2, 3]))
        cfg = dict(n=int(rng.choice([0, 1, 2, 3])), g=g, cg=int(rng.integers(1, 4)), kg=int(rng.integers(1, 4)),
                   size=tuple(int(v) for v in rng.integers(1, 10, nd)),
                   kernel=tuple(int(v) for v in rng.integers(1, 4, nd)),
                   stride=tup(rng, 1, 4, nd), dilation=tup(rng, 1, 3, nd), padding=tup(rng, 0, 3, nd))
        s, d, p = (per_dim(cfg[k], nd) for k in ("stride", "dilation", "padding"))
        if all(i + 2 * q >= b * (k - 1) + 1 for i, q, b, k in zip(cfg["size"], p, d, cfg["kernel"])):
            return cfg


def forward_arrays(rng, cfg, nd, dtype=np.float64):
    x = randn(rng, (cfg["n"], cfg["g"] * cfg["cg"]) + cfg["size"], dtype)
    w = randn(rng, (cfg["g"] * cfg["kg"], cfg["cg"]) + cfg["kernel"], dtype)
    args = (cfg["stride"], cfg["padding"], cfg["dilation"], cfg["g"])
    out_shape = getattr(F, f"conv{nd}d")(T64(x), T64(w), None, *args).shape
    go = randn(rng, tuple(out_shape), dtype)
    return x, w, go, args


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("chunk", range(3))
def test_gradients_match_torch_nn_grad_and_autograd(rng, path, nd, chunk):
    gin, gwt = getattr(gpuconv.grad, f"conv{nd}d_input"), getattr(gpuconv.grad, f"conv{nd}d_weight")
    for _ in range(10):
        cfg = forward_config(rng, nd)
        x, w, go, args = forward_arrays(rng, cfg, nd)
        want_i = getattr(TG, f"conv{nd}d_input")(x.shape, T(w), T(go), *args).numpy()
        want_w = getattr(TG, f"conv{nd}d_weight")(T(x), w.shape, T(go), *args).numpy()
        xt, wt = T(x).requires_grad_(), T(w).requires_grad_()
        ai, aw = torch.autograd.grad(getattr(F, f"conv{nd}d")(xt, wt, None, *args), (xt, wt), T(go))
        what = f"conv{nd}d grads {cfg}"
        A = path.asarray
        got_i = path.get(gin(x.shape, A(w), A(go), *args))
        assert_close(got_i, want_i, np.float64, what="input " + what)
        assert_close(got_i, ai.numpy(), np.float64, what="input (autograd) " + what)
        assert_close(path.get(gin(cfg["size"], A(w), A(go), *args)), want_i, np.float64,
                     what="input, spatial size " + what)
        got_w = path.get(gwt(A(x), w.shape, A(go), *args))
        assert_close(got_w, want_w, np.float64, what="weight " + what)
        assert_close(got_w, aw.numpy(), np.float64, what="weight (autograd) " + what)
        if path.name != "numpy":
            continue
        # the derived forward problems a device runs where its kernels refuse, by the reference
        spec, _ = make_spec(x.shape, w.shape, None, *args, x.dtype, nd)
        fspec, xu, wf = dgrad_as_fprop(np, go, w, spec)
        assert_close(reference.conv(xu, wf, None, fspec), want_i, np.float64,
                     what="input, derived forward problem " + what)
        if spec.n and spec.k and spec.c:
            fspec, x2, w2, crop = wgrad_as_fprop(np, x, go, spec)
            assert_close(reference.conv(x2, w2, None, fspec)[crop].swapaxes(0, 1), want_w, np.float64,
                         what="weight, derived forward problem " + what)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_gradients_other_dtypes(rng, path, dtype):
    for _ in range(12):
        nd = int(rng.integers(1, 4))
        cfg = forward_config(rng, nd)
        x, w, go, args = forward_arrays(rng, cfg, nd, dtype)
        want_i = getattr(TG, f"conv{nd}d_input")(x.shape, T64(w), T64(go), *args).numpy()
        want_w = getattr(TG, f"conv{nd}d_weight")(T64(x), w.shape, T64(go), *args).numpy()
        A = path.asarray
        assert_close(path.get(G.input_grad(nd, "g", x.shape, A(w), A(go), *args)), want_i, dtype,
                     what=f"input {cfg}")
        assert_close(path.get(G.weight_grad(nd, "g", A(x), w.shape, A(go), *args)), want_w, dtype,
                     what=f"weight {cfg}")


def test_gradients_unbatched_match_autograd(rng, path):
    x = randn(rng, (4, 9, 8))
    w = randn(rng, (6, 2, 3, 2))
    args = ((2, 1), 1, (1, 2), 2)
    xt, wt = T(x).requires_grad_(), T(w).requires_grad_()
    y = F.conv2d(xt, wt, None, *args)
    go = randn(rng, tuple(y.shape))
    ai, aw = torch.autograd.grad(y, (xt, wt), T(go))
    A = path.asarray
    for size in (x.shape, x.shape[1:]):
        assert_close(path.get(gpuconv.grad.conv2d_input(size, A(w), A(go), *args)), ai.numpy(), np.float64)
    assert_close(path.get(gpuconv.grad.conv2d_weight(A(x), w.shape, A(go), *args)), aw.numpy(), np.float64)


def test_gradients_torch_tensors_zero_batch_and_chunking(rng, monkeypatch):
    x = T(randn(rng, (7, 3, 6, 6)))
    w = T(randn(rng, (4, 3, 3, 3)))
    go = T(randn(rng, (7, 4, 3, 3)))
    gi = gpuconv.grad.conv2d_input(x.shape, w, go, 2, 1)
    gw = gpuconv.grad.conv2d_weight(x, w.shape, go, 2, 1)
    assert isinstance(gi, torch.Tensor) and isinstance(gw, torch.Tensor)
    want_w = TG.conv2d_weight(x, w.shape, go, 2, 1).numpy()
    assert_close(gw.numpy(), want_w, np.float64)
    assert_close(gi.numpy(), TG.conv2d_input(x.shape, w, go, 2, 1).numpy(), np.float64)
    monkeypatch.setattr(cpu_grad, "_WGRAD_COLS_ELEMS", 200)   # a few images per GEMM chunk
    again = gpuconv.grad.conv2d_weight(x, w.shape, go, 2, 1).numpy()
    assert_close(again, want_w, np.float64)
    # zero batch: zero input gradient of the right shape, zero weight gradient
    gi0 = gpuconv.grad.conv2d_input((0, 3, 6, 6), w.numpy(), go.numpy()[:0], 2, 1)
    gw0 = gpuconv.grad.conv2d_weight(x.numpy()[:0], w.shape, go.numpy()[:0], 2, 1)
    assert gi0.shape == (0, 3, 6, 6)
    assert gw0.shape == (4, 3, 3, 3) and not gw0.any()
    assert np.array_equal(gw0, TG.conv2d_weight(x[:0], w.shape, go[:0], 2, 1).numpy())


XG, WG, GOG = _ones(2, 4, 7, 8), _ones(6, 2, 3, 3), _ones(2, 6, 3, 3)
GRAD_INPUT_BAD_CALLS = [
    # (id, args, kwargs, exception, words); forward: stride 2, groups 2 -> output 3x3
    ("size_unreachable", ((2, 4, 9, 8), WG, GOG), {"stride": 2, "groups": 2}, ValueError,
     ["grad_output", "[2, 6, 4, 3]"]),
    ("size_channels", ((2, 6, 7, 8), WG, GOG), {"stride": 2, "groups": 2}, ValueError, ["4 channels"]),
    ("groups_mismatch", ((2, 4, 7, 8), WG, GOG), {"stride": 2, "groups": 3}, ValueError, ["groups=3"]),
    ("grad_output_channels", ((2, 4, 7, 8), WG, GOG[:, :5]), {"stride": 2, "groups": 2}, ValueError,
     ["grad_output", "[2, 5, 3, 3]"]),
    ("dtype_mix", ((2, 4, 7, 8), WG.astype(np.float32), GOG), {"stride": 2, "groups": 2}, TypeError,
     ["float64", "float32"]),
    ("padding_neg", ((2, 4, 7, 8), WG, GOG), {"stride": 2, "groups": 2, "padding": -1}, ValueError, ["padding"]),
    ("stride_zero", ((2, 4, 7, 8), WG, GOG), {"stride": 0, "groups": 2}, ValueError, ["stride"]),
    ("padding_str", ((2, 4, 7, 8), WG, GOG), {"stride": 2, "groups": 2, "padding": "same"}, TypeError,
     ["padding", "same"]),
    ("complex", ((2, 4, 7, 8), WG.astype(complex), GOG.astype(complex)), {"stride": 2, "groups": 2},
     TypeError, ["complex128"]),
    ("size_unbatched_for_batched", ((4, 7, 8), WG, GOG), {"stride": 2, "groups": 2}, ValueError,
     ["input_size"]),
    ("size_not_shape", (7, WG, GOG), {"stride": 2, "groups": 2}, TypeError, ["input_size"]),
    ("weight_ndim", ((2, 4, 7, 8), WG[0], GOG), {"stride": 2, "groups": 2}, ValueError, ["weight"]),
]
GRAD_WEIGHT_BAD_CALLS = [
    ("size_mismatch", (XG, (6, 2, 3, 3), GOG[..., :2]), {"stride": 2, "groups": 2}, ValueError,
     ["grad_output", "[2, 6, 3, 2]"]),
    ("size_len", (XG, (6, 2, 3), GOG), {"stride": 2, "groups": 2}, ValueError, ["weight_size"]),
    ("size_channels", (XG, (6, 4, 3, 3), GOG), {"stride": 2, "groups": 2}, ValueError, ["8 channels"]),
    ("grad_output_channels", (XG, (6, 2, 3, 3), GOG[:, :5]), {"stride": 2, "groups": 2}, ValueError,
     ["grad_output"]),
    ("dtype_mix", (XG, (6, 2, 3, 3), GOG.astype(np.float32)), {"stride": 2, "groups": 2}, TypeError,
     ["float64", "float32"]),
    ("dilation_zero", (XG, (6, 2, 3, 3), GOG), {"stride": 2, "groups": 2, "dilation": 0}, ValueError,
     ["dilation"]),
    ("input_unbatched", (XG[0], (6, 2, 3, 3), GOG), {"stride": 2, "groups": 2}, ValueError,
     ["batched"]),
]


@pytest.mark.parametrize("fn,case", [("conv2d_input", c) for c in GRAD_INPUT_BAD_CALLS]
                         + [("conv2d_weight", c) for c in GRAD_WEIGHT_BAD_CALLS],
                         ids=lambda v: v if isinstance(v, str) else v[0])
def test_gradient_errors_name_the_argument_and_torch_agrees(no_compute, path, fn, case):
    _, args, kwargs, exc, words = case
    with pytest.raises(exc) as info:
        getattr(gpuconv.grad, fn)(*[path.asarray(a) if isinstance(a, np.ndarray) else a for a in args],
                                  **kwargs)
    for word in words:
        assert word in str(info.value), f"{word!r} not in message {str(info.value)!r}"
    targs = [T(a) if isinstance(a, np.ndarray) else a for a in args]
    with pytest.raises(TORCH_ERRORS):
        getattr(TG, fn)(*targs, **kwargs)


def test_gradient_batch_mismatch_refused():
    """torch.nn.grad returns an arbitrary result here; we refuse."""
    with pytest.raises(ValueError, match="batch"):
        gpuconv.grad.conv2d_input((3, 4, 7, 8), WG, GOG, stride=2, groups=2)
    with pytest.raises(ValueError, match="batch"):
        gpuconv.grad.conv2d_weight(XG[:1], WG.shape, GOG, stride=2, groups=2)


# ============================================================= separable ====
def torch_separable(nd, x, dw, pw, b, stride, padding, dilation, padding_mode="zeros", activation=None):
    conv = getattr(F, f"conv{nd}d")
    xt = T64(x)
    if padding_mode != "zeros":
        p = per_dim(padding, nd)
        xt = F.pad(xt, tuple(v for q in reversed(p) for v in (q, q)), mode=padding_mode)
        padding = 0
    mid = conv(xt, T64(dw), None, stride, padding, dilation, x.shape[-nd - 1])
    out = conv(mid, T64(pw), None if b is None else T64(b))
    return (ACT[activation](out) if activation else out).numpy()


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_separable_random_configs(rng, path, nd):
    fn = getattr(gpuconv.separable, f"separable_conv{nd}d")
    for _ in range(12):
        c, m, k = int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.integers(1, 5))
        kernel = tuple(int(v) for v in rng.integers(1, 4, nd))
        mode = rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"])
        if rng.random() < 0.3:
            stride, padding, dilation = 1, str(rng.choice(["same", "valid"])), tup(rng, 1, 3, nd)
            mode = "zeros"
        else:
            stride, padding, dilation = tup(rng, 1, 3, nd), tup(rng, 0, 2, nd), tup(rng, 1, 3, nd)
        size = tuple(max(int(v), d * (kk - 1) + 1) for v, d, kk in
                     zip(rng.integers(2, 8, nd), per_dim(dilation, nd), kernel))
        x = randn(rng, (int(rng.choice([0, 1, 2])), c) + size)
        if rng.random() < 0.3:
            x = randn(rng, (c,) + size)                     # unbatched
        dw = randn(rng, (c * m, 1) + kernel)
        pw = randn(rng, (k, c * m) + (1,) * nd)
        b = randn(rng, (k,)) if rng.random() < 0.7 else None
        act = rng.choice([None, "relu", "gelu"])
        want = torch_separable(nd, x, dw, pw, b, stride, padding, dilation, mode, act)
        A = path.asarray
        got = path.get(fn(A(x), A(dw), A(pw), A(b), stride, padding, dilation, padding_mode=mode,
                          activation=act))
        assert_close(got, want, np.float64, what=f"separable nd={nd} x{x.shape} dw{dw.shape} {stride} "
                                                 f"{padding} {dilation} {mode} {act}")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_separable_other_dtypes(rng, path, dtype):
    x = randn(rng, (2, 6, 11, 9), dtype)
    dw = randn(rng, (12, 1, 3, 3), dtype)
    pw = randn(rng, (8, 12, 1, 1), dtype)
    b = randn(rng, (8,), dtype)
    # the intermediate is rounded to `dtype`, as two torch convs in `dtype` round it
    mid = F.conv2d(T64(x), T64(dw), None, 2, 1, 1, 6).numpy().astype(dtype)
    want = F.conv2d(T64(mid), T64(pw), T64(b)).numpy()
    A = path.asarray
    assert_close(path.get(gpuconv.separable.separable_conv2d(A(x), A(dw), A(pw), A(b), 2, 1)), want, dtype)


SEP_BAD_CALLS = [
    ("dw_dim1", (_ones(2, 3, 8, 8), _ones(3, 3, 3, 3), _ones(4, 3, 1, 1)), {}, ValueError, ["depthwise_weight"]),
    ("dw_multiple", (_ones(2, 3, 8, 8), _ones(4, 1, 3, 3), _ones(4, 4, 1, 1)), {}, ValueError,
     ["depthwise_weight", "C=3"]),
    ("pw_channels", (_ones(2, 3, 8, 8), _ones(6, 1, 3, 3), _ones(4, 3, 1, 1)), {}, ValueError,
     ["pointwise_weight", "6"]),
    ("pw_kernel", (_ones(2, 3, 8, 8), _ones(6, 1, 3, 3), _ones(4, 6, 3, 3)), {}, ValueError, ["pointwise_weight"]),
    ("bias", (_ones(2, 3, 8, 8), _ones(6, 1, 3, 3), _ones(4, 6, 1, 1), _ones(6)), {}, ValueError, ["bias"]),
    ("pw_dtype", (_ones(2, 3, 8, 8), _ones(6, 1, 3, 3), _ones(4, 6, 1, 1, dtype=np.float32)), {}, TypeError,
     ["pointwise_weight"]),
    ("dw_dtype", (_ones(2, 3, 8, 8), _ones(6, 1, 3, 3, dtype=np.float32), _ones(4, 6, 1, 1)), {}, TypeError,
     ["float32"]),
    ("kernel_too_big", (_ones(2, 3, 2, 2), _ones(6, 1, 3, 3), _ones(4, 6, 1, 1)), {}, ValueError, ["Kernel size"]),
    ("same_strided", (_ones(2, 3, 8, 8), _ones(6, 1, 3, 3), _ones(4, 6, 1, 1)), {"padding": "same", "stride": 2},
     ValueError, ["same"]),
    ("input_ndim", (_ones(8, 8), _ones(6, 1, 3, 3), _ones(4, 6, 1, 1)), {}, ValueError, ["input"]),
    ("activation", (_ones(2, 3, 8, 8), _ones(6, 1, 3, 3), _ones(4, 6, 1, 1)), {"activation": "tanh"},
     ValueError, ["activation"]),
]


@pytest.mark.parametrize("args,kwargs,exc,words", [c[1:] for c in SEP_BAD_CALLS], ids=[c[0] for c in SEP_BAD_CALLS])
def test_separable_errors(no_compute, path, args, kwargs, exc, words):
    with pytest.raises(exc) as info:
        gpuconv.separable.separable_conv2d(*[path.asarray(a) for a in args], **kwargs)
    for word in words:
        assert word in str(info.value), f"{word!r} not in message {str(info.value)!r}"


# ======================================================== conv1d / conv3d ====
@pytest.mark.parametrize("nd", [1, 3])
@pytest.mark.parametrize("chunk", range(3))
def test_conv1d_conv3d_random_configs(rng, path, nd, chunk):
    fn = getattr(gpuconv, f"conv{nd}d")
    for _ in range(10):
        cfg = forward_config(rng, nd)
        x, w, _, args = forward_arrays(rng, cfg, nd)
        stride, padding, dilation, g = args
        mode = str(rng.choice(["zeros", "zeros", "zeros", "reflect", "replicate", "circular"]))
        if rng.random() < 0.3:
            stride, padding = 1, str(rng.choice(["same", "valid"]))
        if rng.random() < 0.3 and x.shape[0]:
            x = x[0]
        b = randn(rng, (w.shape[0],)) if rng.random() < 0.7 else None
        m = getattr(torch.nn, f"Conv{nd}d")(x.shape[-nd - 1], w.shape[0], w.shape[2:], stride, padding, dilation, g,
                                            bias=b is not None, padding_mode=mode, dtype=torch.float64)
        with torch.no_grad():
            m.weight.copy_(T(w))
            if b is not None:
                m.bias.copy_(T(b))
            try:
                want = m(T(x)).numpy()
            except TORCH_ERRORS:           # padding wider than the input: circular wraps again
                if mode == "circular":     # (np.pad's "wrap"), reflect is refused as torch does
                    spec, _ = make_spec(x.shape, w.shape, None, stride, padding, dilation, g, x.dtype, nd)
                    xb = x if x.ndim == nd + 2 else x[None]
                    xw = np.pad(xb, ((0, 0), (0, 0)) + spec.pad, mode="wrap")
                    want = getattr(F, f"conv{nd}d")(T(xw), T(w), None if b is None else T(b), stride, 0,
                                                    dilation, g).numpy()
                    want = want if x.ndim == nd + 2 else want[0]
                    got = path.get(fn(path.asarray(x), path.asarray(w), path.asarray(b), stride, padding,
                                      dilation, g, padding_mode=mode))
                    assert_close(got, want, np.float64, what=f"circular wrapping more than once {cfg}")
                    continue
                with pytest.raises(ValueError):
                    fn(path.asarray(x), path.asarray(w), path.asarray(b), stride, padding, dilation, g,
                       padding_mode=mode)
                continue
        got = path.get(fn(path.asarray(x), path.asarray(w), path.asarray(b), stride, padding, dilation, g,
                          padding_mode=mode))
        assert_close(got, want, np.float64, what=f"conv{nd}d x{x.shape} w{w.shape} {stride} {padding} "
                                                 f"{dilation} g={g} {mode}")


CONV13_BAD_CALLS = [
    ("1d_input_ndim", 1, (_ones(8), _ones(2, 1, 3)), {}, ValueError, ["input"]),
    ("1d_channels", 1, (_ones(2, 3, 8), _ones(2, 2, 3)), {}, ValueError, ["3 channels"]),
    ("1d_groups", 1, (_ones(2, 4, 8), _ones(3, 2, 3)), {"groups": 2}, ValueError, ["divisible"]),
    ("1d_kernel_big", 1, (_ones(2, 1, 2), _ones(2, 1, 3)), {}, ValueError, ["Kernel size"]),
    ("1d_same_strided", 1, (_ones(2, 1, 8), _ones(2, 1, 3)), {"padding": "same", "stride": 2}, ValueError,
     ["same"]),
    ("1d_stride_len", 1, (_ones(2, 1, 8), _ones(2, 1, 3)), {"stride": (1, 1)}, ValueError, ["stride"]),
    ("3d_weight_ndim", 3, (_ones(1, 2, 4, 4, 4), _ones(2, 2, 3, 3)), {}, ValueError, ["weight"]),
    ("3d_dilation_zero", 3, (_ones(1, 2, 4, 4, 4), _ones(2, 2, 1, 1, 1)), {"dilation": 0}, ValueError,
     ["dilation"]),
    ("3d_bias", 3, (_ones(1, 2, 4, 4, 4), _ones(2, 2, 1, 1, 1), _ones(3)), {}, ValueError, ["bias"]),
    ("3d_dtype", 3, (_ones(1, 2, 4, 4, 4), _ones(2, 2, 1, 1, 1, dtype=np.float32)), {}, TypeError, ["float32"]),
    ("3d_padding_neg", 3, (_ones(1, 2, 4, 4, 4), _ones(2, 2, 1, 1, 1)), {"padding": (0, -1, 0)}, ValueError,
     ["padding"]),
]


@pytest.mark.parametrize("nd,args,kwargs,exc,words", [c[1:] for c in CONV13_BAD_CALLS],
                         ids=[c[0] for c in CONV13_BAD_CALLS])
def test_conv1d_conv3d_errors_match_torch(no_compute, path, nd, args, kwargs, exc, words):
    with pytest.raises(exc) as info:
        getattr(gpuconv, f"conv{nd}d")(*[path.asarray(a) for a in args], **kwargs)
    for word in words:
        assert word in str(info.value), f"{word!r} not in message {str(info.value)!r}"
    with pytest.raises(TORCH_ERRORS):
        getattr(F, f"conv{nd}d")(*[T(a) for a in args], **kwargs)


@pytest.mark.parametrize("args,kwargs", [((_ones(1, 2, 3, 3), _ones(0, 2, 2, 2)), {}),
                                         ((_ones(1, 2, 0, 3), _ones(2, 2, 1, 1)), {"padding": 1})],
                         ids=["zero_out_channels", "zero_size_input_padded"])
def test_conv2d_degenerate_shapes_refused_like_torch(no_compute, path, args, kwargs):
    with pytest.raises(TORCH_ERRORS):
        F.conv2d(*[T(a) for a in args], **kwargs)
    with pytest.raises(ValueError):
        gpuconv.conv2d(*[path.asarray(a) for a in args], **kwargs)


# ========================================================= gpuconv.torch ====
def test_autograd_gradcheck_float64(rng):
    import gpuconv.torch as gt

    def p(*shape):
        return T(randn(rng, shape)).requires_grad_()
    x, w, b = p(2, 4, 5, 4), p(6, 2, 3, 2), p(6)
    assert torch.autograd.gradcheck(lambda x, w, b: gt.conv2d(x, w, b, (2, 1), 1, (1, 2), 2), (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w, b: gt.conv2d(x, w, b, 1, "same", 1, 2), (x, w, b))
    x0 = p(4, 5, 4)
    assert torch.autograd.gradcheck(lambda x, w, b: gt.conv2d(x, w, b, 1, 1, 1, 2), (x0, w, b))
    assert torch.autograd.gradcheck(lambda x, w: gt.conv1d(x, w, None, 2, 1), (p(2, 3, 9), p(4, 3, 3)))
    assert torch.autograd.gradcheck(lambda x, w: gt.conv3d(x, w, None, 1, (1, 0, 1)), (p(1, 2, 4, 3, 4),
                                                                                          p(3, 2, 2, 2, 3)))
    wt, bt = p(4, 3, 3, 2), p(3)
    for args in [(2, 1, 1, 1, 1), (1, 1, 1, 1, 2), (2, 0, (2, 1), 1, (3, 1)), (2, 1, 0, 2, 1)]:
        wt_g = wt if args[3] == 1 else p(4, 2, 3, 2)
        bt_g = bt if args[3] == 1 else p(4)
        assert torch.autograd.gradcheck(lambda x, w, b: gt.conv_transpose2d(x, w, b, *args), (x, wt_g, bt_g))


def test_autograd_module_matches_nn_conv2d(rng):
    import gpuconv.torch as gt
    for kw in [dict(padding=1, groups=2, padding_mode="reflect"), dict(stride=2, dilation=2),
               dict(padding="same", padding_mode="circular"), dict(padding=(1, 2), bias=False),
               dict(padding=(2, 3), stride=2, padding_mode="replicate"),
               dict(padding=(3, 1), dilation=(1, 2), padding_mode="circular")]:
        ours = gt.Conv2d(4, 6, (3, 2), dtype=torch.float64, **kw)
        ref = torch.nn.Conv2d(4, 6, (3, 2), dtype=torch.float64, **kw)
        ref.load_state_dict(ours.state_dict())
        x1 = T(randn(rng, (2, 4, 9, 8))).requires_grad_()
        x2 = x1.detach().clone().requires_grad_()
        y1, y2 = ours(x1), ref(x2)
        assert_close(y1.detach().numpy(), y2.detach().numpy(), np.float64, what=str(kw))
        go = T(randn(rng, tuple(y1.shape)))
        y1.backward(go)
        y2.backward(go)
        assert_close(x1.grad.numpy(), x2.grad.numpy(), np.float64, what=f"input grad {kw}")
        assert_close(ours.weight.grad.numpy(), ref.weight.grad.numpy(), np.float64, what=f"weight grad {kw}")
        if ref.bias is not None:
            assert_close(ours.bias.grad.numpy(), ref.bias.grad.numpy(), np.float64, what=f"bias grad {kw}")


def test_autograd_padding_modes_without_f_pad(rng, monkeypatch):
    """nn.Conv{1,3}d modules and the autograd function with padding modes: F.pad is never
    called (the mode is resolved while loading; backward folds the extended gradient with
    index_add_), results and both gradients match nn.Conv{n}d; gradcheck through a
    circular padding that wraps twice (torch's F.pad refuses it)."""
    import gpuconv.torch as gt
    refs = []
    for nd, mode in ((1, "reflect"), (3, "replicate"), (2, "circular")):
        cls, tcls = getattr(gt, f"Conv{nd}d"), getattr(torch.nn, f"Conv{nd}d")
        ours = cls(3, 4, 3, padding=2, stride=2, padding_mode=mode, dtype=torch.float64)
        ref = tcls(3, 4, 3, padding=2, stride=2, padding_mode=mode, dtype=torch.float64)
        ref.load_state_dict(ours.state_dict())
        x = T(randn(rng, (2, 3) + (7, 6, 5)[:nd]))
        x2 = x.clone().requires_grad_()
        y2 = ref(x2)
        go = T(randn(rng, tuple(y2.shape)))
        y2.backward(go)
        refs.append((ours, ref, x, go, y2.detach(), x2.grad))
    monkeypatch.setattr(torch.nn.functional, "pad", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("F.pad: a padded copy of the input")))
    for ours, ref, x, go, want_y, want_gx in refs:
        x1 = x.clone().requires_grad_()
        y1 = ours(x1)
        assert_close(y1.detach().numpy(), want_y.numpy(), np.float64, what=str(ours))
        y1.backward(go)
        assert_close(x1.grad.numpy(), want_gx.numpy(), np.float64, what=f"input grad {ours}")
        assert_close(ours.weight.grad.numpy(), ref.weight.grad.numpy(), np.float64,
                     what=f"weight grad {ours}")
    x = T(randn(rng, (1, 2, 4, 3))).requires_grad_()
    w, b = T(randn(rng, (3, 2, 3, 2))).requires_grad_(), T(randn(rng, (3,))).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, w, b: gt.ConvNdFunction.apply(x, w, b, 2, (1, 2), ((5, 1), (2, 4)), (1, 1), 1,
                                                "circular"), (x, w, b))
    assert torch.autograd.gradcheck(
        lambda x, w, b: gt.ConvNdFunction.apply(x[0], w, b, 2, (1, 1), ((3, 1), (1, 2)), (1, 2), 1,
                                                "reflect"), (x, w, b))


# ============================================================ FFT route ====
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_fft_algorithm_on_every_operator(rng, path, nd):
    """algorithm='fft' on conv, conv_transpose and both gradients (stride, dilation,
    groups, padding) matches torch within float64 rounding of the largest terms."""
    kernel = {1: (9,), 2: (7, 6), 3: (3, 4, 5)}[nd]
    size = {1: (40,), 2: (19, 23), 3: (8, 9, 10)}[nd]
    x, w = randn(rng, (2, 4) + size), randn(rng, (6, 2) + kernel)
    b = randn(rng, (6,))
    args = (2, 3, 2, 2)                                       # stride, padding, dilation, groups
    A = path.asarray
    conv = getattr(F, f"conv{nd}d")
    want = conv(T(x), T(w), T(b), *args).numpy()
    got = getattr(gpuconv, f"conv{nd}d")(A(x), A(w), A(b), *args, algorithm="fft")
    assert_close(path.get(got), want, np.float64, tol=1e-11, what="conv fft")
    go = randn(rng, want.shape)
    gi = getattr(gpuconv, f"conv{nd}d_input")(x.shape, A(w), A(go), *args, algorithm="fft")
    gw = getattr(gpuconv, f"conv{nd}d_weight")(A(x), w.shape, A(go), *args, algorithm="fft")
    assert_close(path.get(gi), getattr(TG, f"conv{nd}d_input")(x.shape, T(w), T(go), *args).numpy(),
                 np.float64, tol=1e-11, what="input gradient fft")
    assert_close(path.get(gw), getattr(TG, f"conv{nd}d_weight")(T(x), w.shape, T(go), *args).numpy(),
                 np.float64, tol=1e-11, what="weight gradient fft")
    wt = randn(rng, (4, 3) + kernel)
    tr = getattr(gpuconv, f"conv_transpose{nd}d")(A(x), A(wt), None, 2, 1, 1, 2, 2, algorithm="fft")
    want_t = getattr(F, f"conv_transpose{nd}d")(T(x), T(wt), None, 2, 1, 1, 2, 2).numpy()
    assert_close(path.get(tr), want_t, np.float64, tol=1e-11, what="conv_transpose fft")


def test_auto_picks_fft_for_large_kernels_only(monkeypatch, rng):
    """The engine asks gpuconv.fft's cost model for 5x5 kernels and up; a 31x31
    kernel on a 64x64 image goes to the FFT, a 3x3 one never asks."""
    from gpuconv import fft
    calls = []
    real = fft.fprop
    monkeypatch.setattr(fft, "fprop", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, w = randn(rng, (2, 3, 64, 64)), randn(rng, (4, 3, 31, 31))
    spec, _ = make_spec(x.shape, w.shape, None, 1, 15, 1, 1, np.float64, 2)
    assert fft.conv_cost_model(spec, "fprop", "cpu").use_fft
    assert_close(gpuconv.conv2d(x, w, padding=15), reference.conv(x, w, None, spec), np.float64, tol=1e-11)
    assert calls
    calls.clear()
    gpuconv.conv2d(x, w[..., :3, :3], padding=1)
    assert not calls
    with pytest.raises(ValueError, match="algorithm"):
        gpuconv.conv2d_input(x.shape, w, x, algorithm="winograd")
