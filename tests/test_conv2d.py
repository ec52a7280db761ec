"""gpuconv.conv2d against torch.nn.functional.conv2d (and nn.Conv2d for padding modes).

The bodies take an `xp`: the `path` fixture of tests/conftest.py, so each runs on
NumPy (the CPU path), in the simulator (the GPU path's dispatcher, launchers and
kernels on the CPU) and, where a device is present, on CuPy arrays.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from gpuconv import reference
from gpuconv.spec import make_spec
from util import assert_close, randn

torch = pytest.importorskip("torch")
F = torch.nn.functional

@pytest.fixture
def xp(path):
    """The path's arrays: xp.asarray(numpy array) -> the array to pass."""
    return path


def to_numpy(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def torch_conv2d(x, w, b, stride, padding, dilation, groups, padding_mode="zeros"):
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    bt = None if b is None else torch.from_numpy(b)
    if padding_mode == "zeros":
        return F.conv2d(xt, wt, bt, stride, padding, dilation, groups).numpy()
    k, cg, r, s = w.shape
    m = torch.nn.Conv2d(cg * groups, k, (r, s), stride, padding, dilation, groups, bias=b is not None,
                        padding_mode=padding_mode, dtype=xt.dtype)
    with torch.no_grad():
        m.weight.copy_(wt)
        if bt is not None:
            m.bias.copy_(bt)
        return m(xt).numpy()


def random_config(rng):
    """A random but valid conv2d configuration, biased to the edges."""
    g = int(rng.choice([1, 1, 2, 3]))
    cg, kg = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    r, s = (int(v) for v in rng.integers(1, 6, 2))
    dil = tuple(int(v) for v in rng.integers(1, 4, 2))
    if rng.random() < 0.5:
        dil = (dil[0], dil[0])
    mode = rng.choice(["int", "pair", "same", "valid"])
    if mode == "same":
        stride, padding = 1, "same"
    else:
        stride = int(rng.integers(1, 4)) if rng.random() < 0.5 else tuple(int(v) for v in rng.integers(1, 4, 2))
        padding = {"int": int(rng.integers(0, 4)), "pair": tuple(int(v) for v in rng.integers(0, 4, 2)),
                   "valid": "valid"}[mode]
    pad_pair = (0, 0) if isinstance(padding, str) else ((padding,) * 2 if isinstance(padding, int) else padding)
    h = int(rng.integers(max(1, dil[0] * (r - 1) + 1 - 2 * pad_pair[0]), 14))
    w = int(rng.integers(max(1, dil[1] * (s - 1) + 1 - 2 * pad_pair[1]), 14))
    n = int(rng.choice([0, 1, 2, 3]))
    return dict(n=n, c=cg * g, h=h, w=w, k=kg * g, r=r, s=s, stride=stride, padding=padding,
                dilation=dil[0] if dil[0] == dil[1] else dil, groups=g, bias=bool(rng.random() < 0.7))


def run_case(xp, rng, cfg, dtype=np.float64, batched=True, padding_mode="zeros"):
    shape_x = (cfg["n"], cfg["c"], cfg["h"], cfg["w"])
    x = randn(rng, shape_x, dtype)
    wt = randn(rng, (cfg["k"], cfg["c"] // cfg["groups"], cfg["r"], cfg["s"]), dtype)
    b = randn(rng, (cfg["k"],), dtype) if cfg["bias"] else None
    args = (cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])
    xin = x if batched else x[0]
    got = gpuconv.conv2d(xp.asarray(xin), xp.asarray(wt), None if b is None else xp.asarray(b), *args,
                         padding_mode=padding_mode)
    return x, wt, b, args, to_numpy(got)


@pytest.mark.parametrize("seed_offset", range(6))
def test_random_configs_float64_match_torch(xp, rng, seed_offset):
    for _ in range(50):
        cfg = random_config(rng)
        x, w, b, args, got = run_case(xp, rng, cfg)
        want = torch_conv2d(x, w, b, *args)
        assert_close(got, want, np.float64, what=f"conv2d {cfg}")


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.complex64, np.complex128])
def test_random_configs_other_dtypes(xp, rng, dtype):
    for _ in range(40):
        cfg = random_config(rng)
        x, w, b, args, got = run_case(xp, rng, cfg, dtype)
        spec, _ = make_spec(x.shape, w.shape, None if b is None else b.shape, *args, dtype, 2)
        want = reference.conv(x, w, b, spec, accumulate="float64")
        assert_close(got, want, dtype, what=f"conv2d {np.dtype(dtype)} {cfg}")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64])
def test_integer_dtypes_wrap_like_torch(rng, dtype):
    """torch's CPU conv2d takes integers with wrapping arithmetic; so does the CPU path."""
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -100), min(info.max, 100)
    x = rng.integers(lo, hi, (2, 4, 9, 8), dtype=dtype, endpoint=True)
    w = rng.integers(lo, hi, (6, 2, 3, 3), dtype=dtype, endpoint=True)
    b = rng.integers(lo, hi, (6,), dtype=dtype, endpoint=True)
    got = gpuconv.conv2d(x, w, b, (2, 1), 1, 1, 2)
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), (2, 1), 1, 1, 2).numpy()
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    # torch has no dilated integer kernel; the exact sum, wrapped, is the definition
    got = gpuconv.conv2d(x, w, b, 1, 1, (1, 2), 2)
    exact = F.conv2d(*(torch.from_numpy(a.astype(np.float64)) for a in (x, w, b)), 1, 1, (1, 2), 2).numpy()
    np.testing.assert_array_equal(got, exact.astype(np.int64).astype(dtype))


def test_complex_matches_torch(xp, rng):
    cfg = dict(n=2, c=4, h=9, w=8, k=6, r=3, s=2, stride=(2, 1), padding=1, dilation=(1, 2), groups=2, bias=True)
    x, w, b, args, got = run_case(xp, rng, cfg, np.complex128)
    assert_close(got, torch_conv2d(x, w, b, *args), np.complex128)


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same"])
def test_padding_modes_match_nn_conv2d(xp, rng, padding_mode, padding):
    for r, s in [(3, 3), (4, 2), (1, 5)]:
        cfg = dict(n=2, c=4, h=7, w=9, k=4, r=r, s=s, stride=1, padding=padding, dilation=1, groups=2, bias=True)
        x, w, b, args, got = run_case(xp, rng, cfg, padding_mode=padding_mode)
        assert_close(got, torch_conv2d(x, w, b, *args, padding_mode=padding_mode), np.float64,
                     what=f"{padding_mode} {padding} {r}x{s}")


@pytest.mark.parametrize("r,s,dilation", [(2, 2, 1), (4, 3, 1), (2, 4, 3), (3, 3, 2), (1, 6, (1, 2))])
def test_same_padding_even_kernels(xp, rng, r, s, dilation):
    cfg = dict(n=2, c=3, h=10, w=11, k=5, r=r, s=s, stride=1, padding="same", dilation=dilation, groups=1,
               bias=True)
    x, w, b, args, got = run_case(xp, rng, cfg)
    assert got.shape == (2, 5, 10, 11)
    assert_close(got, torch_conv2d(x, w, b, *args), np.float64)


def test_full_padding(xp, rng):
    # 'full': dilation*(k-1) on every side, so every partial overlap is an output.
    x = randn(rng, (2, 3, 6, 7))
    w = randn(rng, (4, 3, 3, 2))
    got = to_numpy(gpuconv.conv2d(xp.asarray(x), xp.asarray(w), padding="full", dilation=(1, 2)))
    want = torch_conv2d(x, w, None, 1, (2, 2), (1, 2), 1)
    assert got.shape == (2, 4, 8, 9)
    assert_close(got, want, np.float64)
    got2 = to_numpy(gpuconv.conv2d(xp.asarray(x), xp.asarray(w), stride=2, padding="full"))
    assert_close(got2, torch_conv2d(x, w, None, 2, (2, 1), 1, 1), np.float64)


def test_unbatched_and_zero_batch(xp, rng):
    cfg = dict(n=1, c=4, h=8, w=7, k=6, r=3, s=3, stride=2, padding=1, dilation=1, groups=2, bias=True)
    x, w, b, args, got = run_case(xp, rng, cfg, batched=False)
    assert got.shape == (6, 4, 4)
    assert_close(got, torch_conv2d(x, w, b, *args)[0], np.float64)
    cfg["n"] = 0
    x, w, b, args, got = run_case(xp, rng, cfg)
    assert got.shape == torch_conv2d(x, w, b, *args).shape == (0, 6, 4, 4)


def test_depthwise_with_multiplier(xp, rng):
    for mult in (1, 2, 3):
        cfg = dict(n=2, c=5, h=9, w=10, k=5 * mult, r=3, s=3, stride=(1, 2), padding=1, dilation=1, groups=5,
                   bias=True)
        x, w, b, args, got = run_case(xp, rng, cfg)
        assert_close(got, torch_conv2d(x, w, b, *args), np.float64, what=f"depthwise x{mult}")


@pytest.mark.parametrize("view", ["transposed", "negative_stride", "offset", "strided"])
def test_views(xp, rng, view):
    base = randn(rng, (3, 6, 12, 13))
    x = {"transposed": base.transpose(0, 1, 3, 2),
         "negative_stride": base[:, :, ::-1, ::-2],
         "offset": base[1:, 2:, 3:, 1:],
         "strided": base[::2, ::2, ::3, ::2]}[view]
    c = x.shape[1]
    w_base = randn(rng, (5, c, 3, 4))
    w = w_base[::-1, :, :, ::-1]
    b = randn(rng, (10,))[::2]
    got = to_numpy(gpuconv.conv2d(xp.asarray(x), xp.asarray(w), xp.asarray(b), 1, 1))
    want = F.conv2d(torch.from_numpy(x.copy()), torch.from_numpy(w.copy()), torch.from_numpy(b.copy()), 1, 1).numpy()
    assert_close(got, want, np.float64)
    assert x.base is not None  # the input really was a view


def test_output_dtype_and_fp16_accumulates_in_fp32(xp, rng):
    # 512 products of a sum whose partial sums would lose bits in fp16
    x = randn(rng, (1, 512, 1, 1), np.float16)
    w = randn(rng, (2, 512, 1, 1), np.float16)
    got = to_numpy(gpuconv.conv2d(xp.asarray(x), xp.asarray(w)))
    assert got.dtype == np.float16
    exact = np.einsum("nc,kc->nk", x[:, :, 0, 0].astype(np.float64), w[:, :, 0, 0].astype(np.float64))
    # fp32 accumulation: the only error is the final rounding to fp16 (half an ulp)
    assert np.all(np.abs(got[:, :, 0, 0].astype(np.float64) - exact) <= np.abs(exact) * 2.0 ** -11 + 1e-3)


def test_seed_example_is_cross_correlation(xp):
    image = np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4)
    kernel = np.array([[1, 1], [-1, -1]], dtype=np.float64).reshape(1, 1, 2, 2)
    got = to_numpy(gpuconv.conv2d(xp.asarray(image), xp.asarray(kernel)))
    np.testing.assert_array_equal(got, np.full((1, 1, 3, 3), -8.0))


def test_torch_cpu_tensors_in_torch_out(rng):
    x = torch.from_numpy(randn(rng, (2, 3, 8, 8)))
    w = torch.from_numpy(randn(rng, (4, 3, 3, 3)))
    got = gpuconv.conv2d(x, w, padding=1)
    assert isinstance(got, torch.Tensor)
    assert_close(got.numpy(), F.conv2d(x, w, padding=1).numpy(), np.float64)


# ---------------------------------------------------------------- errors -----
def _x(*shape, dtype=np.float32):
    return np.ones(shape, dtype=dtype)


BAD_CALLS = [
    # (id, args, kwargs, exception, words the message must contain)
    ("input_ndim", (_x(8, 8), _x(1, 1, 3, 3)), {}, ValueError, ["input", "[8, 8]"]),
    ("input_5d", (_x(1, 1, 1, 8, 8), _x(1, 1, 3, 3)), {}, ValueError, ["input"]),
    ("weight_ndim", (_x(1, 1, 8, 8), _x(1, 3, 3)), {}, ValueError, ["weight", "[1, 3, 3]"]),
    ("channels", (_x(1, 4, 8, 8), _x(2, 3, 3, 3)), {}, ValueError, ["groups=1", "4 channels"]),
    ("groups_channels", (_x(1, 4, 8, 8), _x(2, 4, 3, 3)), {"groups": 2}, ValueError, ["groups=2"]),
    ("groups_k", (_x(1, 4, 8, 8), _x(3, 2, 3, 3)), {"groups": 2}, ValueError, ["groups=2", "divisible"]),
    ("bias_shape", (_x(1, 1, 8, 8), _x(2, 1, 3, 3), _x(3)), {}, ValueError, ["bias", "[3]"]),
    ("bias_2d", (_x(1, 1, 8, 8), _x(2, 1, 3, 3), _x(2, 1)), {}, ValueError, ["bias"]),
    ("stride_zero", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"stride": 0}, ValueError, ["stride"]),
    ("stride_neg", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"stride": (1, -1)}, ValueError, ["stride"]),
    ("dilation_zero", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"dilation": 0}, ValueError, ["dilation"]),
    ("groups_zero", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"groups": 0}, ValueError, ["groups"]),
    ("padding_neg", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"padding": -1}, ValueError, ["padding"]),
    ("padding_str", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"padding": "middle"}, ValueError, ["padding", "middle"]),
    ("padding_len", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"padding": (1, 1, 1)}, ValueError, ["padding"]),
    ("same_strided", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"padding": "same", "stride": 2}, ValueError,
     ["same", "stride"]),
    ("kernel_too_big", (_x(1, 1, 2, 2), _x(1, 1, 3, 3)), {}, ValueError, ["Kernel size", "(2 x 2)"]),
    ("dilated_too_big", (_x(1, 1, 4, 4), _x(1, 1, 3, 3)), {"dilation": 2}, ValueError, ["(5 x 5)"]),
    ("stride_float", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"stride": 1.5}, TypeError, ["stride", "1.5"]),
    ("stride_bool", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"stride": True}, TypeError, ["stride"]),
    ("groups_float", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"groups": 1.0}, TypeError, ["groups"]),
    ("dtype_mix", (_x(1, 1, 8, 8), _x(1, 1, 3, 3, dtype=np.float64)), {}, TypeError, ["float32", "float64"]),
    ("bias_dtype", (_x(1, 1, 8, 8), _x(1, 1, 3, 3), _x(1, dtype=np.float64)), {}, TypeError, ["bias"]),
    ("uint32_input", (_x(1, 1, 8, 8, dtype=np.uint32), _x(1, 1, 3, 3, dtype=np.uint32)), {}, TypeError,
     ["uint32"]),
    ("bool_input", (_x(1, 1, 8, 8, dtype=bool), _x(1, 1, 3, 3, dtype=bool)), {}, TypeError, ["bool"]),
    ("list_input", ([[[[1.0]]]], _x(1, 1, 1, 1)), {}, TypeError, ["input", "list"]),
    ("weight_none", (_x(1, 1, 8, 8), None), {}, TypeError, ["weight"]),
    ("padding_mode", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"padding_mode": "mirror"}, ValueError,
     ["padding_mode", "mirror"]),
    ("reflect_too_much", (_x(1, 1, 3, 3), _x(1, 1, 3, 3)), {"padding": 3, "padding_mode": "reflect"}, ValueError,
     ["reflect", "(3, 3)"]),
    ("activation", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"activation": "tanh"}, ValueError, ["activation", "tanh"]),
    ("algorithm_numpy", (_x(1, 1, 8, 8), _x(1, 1, 3, 3)), {"algorithm": "direct"}, ValueError, ["algorithm"]),
]


@pytest.mark.parametrize("args,kwargs,exc,words", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_clear_error(args, kwargs, exc, words):
    with pytest.raises(exc) as info:
        gpuconv.conv2d(*args, **kwargs)
    for word in words:
        assert word in str(info.value), f"{word!r} not in message {str(info.value)!r}"


TORCH_COMPARABLE = {"input_ndim", "input_5d", "weight_ndim", "channels", "groups_channels", "groups_k",
                    "bias_shape", "bias_2d", "stride_zero", "stride_neg", "dilation_zero", "groups_zero",
                    "padding_neg", "padding_str", "padding_len", "same_strided", "kernel_too_big",
                    "dilated_too_big", "stride_float", "dtype_mix", "bias_dtype", "bool_input",
                    "list_input", "weight_none"}


@pytest.mark.parametrize("case", [c for c in BAD_CALLS if c[0] in TORCH_COMPARABLE], ids=lambda c: c[0])
def test_torch_rejects_the_same_calls(case):
    """Our error conditions are torch's: each call we refuse, torch refuses too."""
    _, args, kwargs, _, _ = case
    targs = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args]
    with pytest.raises((RuntimeError, ValueError, TypeError, NotImplementedError)):
        F.conv2d(*targs, **kwargs)


def test_errors_come_before_computation(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("computation started before validation")
    from gpuconv import cpu
    monkeypatch.setattr(cpu, "conv", boom)
    with pytest.raises(ValueError):
        gpuconv.conv2d(_x(1, 4, 8, 8), _x(2, 3, 3, 3))
    with pytest.raises(AssertionError, match="computation started"):   # the patch is live
        gpuconv.conv2d(_x(1, 3, 8, 8), _x(2, 3, 3, 3))


def test_mixed_devices_rejected():
    cupy = pytest.importorskip("cupy")
    try:
        w = cupy.ones((1, 1, 3, 3), dtype=np.float32)
    except Exception:  # noqa: BLE001 - CuPy without a usable device
        pytest.skip("no CUDA device")
    with pytest.raises(TypeError, match="same device"):
        gpuconv.conv2d(_x(1, 1, 8, 8), w)


# ---------------------------------------------------------- conv1d/conv3d ----
def test_conv1d_and_conv3d_match_torch(rng):
    for _ in range(30):
        g = int(rng.choice([1, 2]))
        x = randn(rng, (int(rng.integers(0, 3)), 2 * g, int(rng.integers(6, 15))))
        w = randn(rng, (3 * g, 2, int(rng.integers(1, 4))))
        b = randn(rng, (3 * g,))
        st, pd, dl = int(rng.integers(1, 3)), int(rng.integers(0, 3)), int(rng.integers(1, 3))
        want = F.conv1d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), st, pd, dl, g).numpy()
        assert_close(gpuconv.conv1d(x, w, b, st, pd, dl, g), want, np.float64)
        x3 = randn(rng, (2, 2 * g, 5, 6, 7))
        w3 = randn(rng, (2 * g, 2, 2, 3, 2))
        want3 = F.conv3d(torch.from_numpy(x3), torch.from_numpy(w3), None, (1, st, 1), pd, (dl, 1, 1), g).numpy()
        assert_close(gpuconv.conv3d(x3, w3, None, (1, st, 1), pd, (dl, 1, 1), g), want3, np.float64)
    x = randn(rng, (3, 10))
    w = randn(rng, (4, 3, 4))
    want = F.conv1d(torch.from_numpy(x), torch.from_numpy(w), padding="same").numpy()
    assert_close(gpuconv.conv1d(x, w, padding="same"), want, np.float64)


def test_conv1d_conv3d_errors():
    with pytest.raises(ValueError, match="conv1d"):
        gpuconv.conv1d(_x(1, 1, 4, 4), _x(1, 1, 3))
    with pytest.raises(ValueError, match="conv3d"):
        gpuconv.conv3d(_x(1, 4, 4), _x(1, 1, 3, 3, 3))


# ------------------------------------------------------------ activation ----
@pytest.mark.parametrize("activation", ["relu", "relu6", "silu", "gelu"])
def test_activation_after_bias(xp, rng, activation):
    x = randn(rng, (2, 3, 7, 8)) * 3
    w = randn(rng, (4, 3, 3, 3))
    b = randn(rng, (4,))
    got = to_numpy(gpuconv.conv2d(xp.asarray(x), xp.asarray(w), xp.asarray(b), padding=1, activation=activation))
    pre = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=1)
    want = {"relu": F.relu, "relu6": F.relu6, "silu": F.silu, "gelu": F.gelu}[activation](pre).numpy()
    assert_close(got, want, np.float64)


# -------------------------------------------------------------- geometry ----
def test_output_size():
    assert gpuconv.output_size(4, 2) == 3                      # the seed: (4-2)/1 + 1
    assert gpuconv.output_size(224, 7, 2, 3) == 112
    assert gpuconv.output_size((56, 57), 3, (1, 2), 1, (1, 2)) == (56, 28)
    assert gpuconv.output_size(10, 4, padding="same") == 10
    assert gpuconv.output_size(10, 3, padding="full") == 12
    assert gpuconv.output_size(10, 3, padding="valid") == 8
    for size, k, s, p, d in [(13, 3, 2, 1, 2), (7, 1, 3, 0, 1), (32, 5, 1, 2, 3)]:
        x = torch.zeros(1, 1, size)
        assert gpuconv.output_size(size, k, s, p, d) == F.conv1d(x, torch.zeros(1, 1, k), None, s, p, d).shape[-1]
    with pytest.raises(ValueError, match="stride"):
        gpuconv.output_size(10, 3, stride=0)
    with pytest.raises(ValueError):
        gpuconv.output_size(2, 3)


def test_receptive_field():
    assert gpuconv.receptive_field([3]) == 3
    assert gpuconv.receptive_field([3, 3]) == 5
    assert gpuconv.receptive_field([3, 3], strides=[2, 1]) == 7
    assert gpuconv.receptive_field([3, 3, 3], dilations=[1, 2, 4]) == 15
    # ResNet stem: 7x7/2 then 3x3/2 max-pool-like window: 7 + 2*(3-1) = 11
    assert gpuconv.receptive_field([7, 3], [2, 2]) == 11
    with pytest.raises(ValueError, match="same length"):
        gpuconv.receptive_field([3, 3], strides=[1])
    with pytest.raises(ValueError):
        gpuconv.receptive_field([0])


# --------------------------------------------- the CPU path vs the definition ----
@pytest.mark.parametrize("chunking", ["default", "tiny_chunks_threaded"])
def test_cpu_path_matches_reference_definition(rng, monkeypatch, chunking):
    """gpuconv.cpu (the fast CPU path: shifted-run im2col, strided im2col, pointwise,
    depthwise slabs) against gpuconv.reference's einsum definition, 1-D to 3-D;
    also with chunks small enough that every batch, group and slab boundary and
    the thread pool are exercised."""
    from gpuconv import _cpu, cpu
    if chunking == "tiny_chunks_threaded":
        monkeypatch.setattr(cpu, "_COLS_TARGET_ELEMS", 50)
        monkeypatch.setattr(cpu, "_DEPTHWISE_SLAB_ELEMS", 20)
        monkeypatch.setattr(_cpu, "n_threads", lambda: 2)
        run = _cpu.run_jobs
        monkeypatch.setattr(cpu, "run_jobs", lambda fn, jobs, n, **kw: run(fn, jobs, n, min_elements=0))
    for nd in (1, 2, 3):
        for _ in range(40):
            g = int(rng.choice([1, 2, 4]))
            cg = 1 if rng.random() < 0.3 else int(rng.integers(1, 4))
            kg = int(rng.integers(1, 3))
            kernel = tuple(int(v) for v in rng.integers(1, 4, nd))
            dil = tuple(int(v) for v in rng.integers(1, 3, nd))
            stride = tuple(int(v) for v in rng.integers(1, 3, nd)) if rng.random() < 0.5 else (1,) * nd
            pad = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, (nd, 2)))
            size = tuple(max(int(s), d * (k - 1) + 1) for s, k, d in zip(rng.integers(1, 10, nd), kernel, dil))
            n = int(rng.integers(0, 4))
            x = randn(rng, (n, g * cg) + size)
            w = randn(rng, (g * kg, cg) + kernel)
            b = randn(rng, (g * kg,))
            spec, _ = make_spec(x.shape, w.shape, b.shape, stride, pad, dil, g, np.float64, nd)
            assert_close(cpu.conv(x, w, b, spec), reference.conv(x, w, b, spec), np.float64,
                         what=f"{nd}-D {spec}")


def test_public_decorator_passes_arguments_and_scope_is_a_no_op_on_the_cpu(rng):
    """engine.public passes every argument through and, for CPU arrays, enters no
    device (on a GPU it makes the input's device and torch's stream current: -m gpu)."""
    from gpuconv._array import device_scope
    from gpuconv.engine import public

    @public("b")
    def f(a, b=None, *, c=3):
        return a, b, c
    x = randn(rng, (2,))
    assert f(1, x, c=4) == (1, x, 4) and f(1) == (1, None, 3)
    with device_scope(x):
        pass
    with device_scope(torch.zeros(1)):
        pass


@pytest.mark.parametrize("padding", [4, (7, 2), (2, 9)])
def test_circular_padding_wraps_more_than_once(xp, rng, padding):
    """padding_mode='circular' wider than the input wraps again (torch refuses): the result
    is np.pad(mode='wrap') followed by a valid convolution."""
    x, w, b = randn(rng, (2, 4, 3, 5)), randn(rng, (6, 2, 3, 3)), randn(rng, (6,))
    got = gpuconv.conv2d(xp.asarray(x), xp.asarray(w), xp.asarray(b), 1, padding, 1, 2,
                         padding_mode="circular")
    p = (padding,) * 2 if isinstance(padding, int) else padding
    xw = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), mode="wrap")
    assert_close(to_numpy(got), torch_conv2d(xw, w, b, 1, 0, 1, 2), np.float64)
