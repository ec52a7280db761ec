"""gpuconv.compat.cudnn: CuPy 13's cupyx.cudnn convolution calls, checked against
torch's conv, conv_transpose and autograd gradients (float64, NumPy arrays),
with outputs poisoned (NaN) before the call so an unwritten element fails."""
from __future__ import annotations

import numpy as np
import pytest

from gpuconv.compat import cudnn
from util import assert_close, randn

torch = pytest.importorskip("torch")
F = torch.nn.functional

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}

# (nd, N, C, K, in spatial, kernel, pad, stride, dilation, groups): irregular sizes,
# strides and dilations that do not divide the input, grouped and depthwise layers.
CASES = [
    (1, 2, 3, 4, (23,), (3,), (1,), (2,), (1,), 1),
    (1, 3, 6, 4, (17,), (5,), (3,), (1,), (2,), 2),
    (2, 2, 3, 5, (11, 9), (3, 2), (1, 0), (1, 2), (1, 1), 1),
    (2, 1, 4, 6, (13, 10), (3, 3), (2, 1), (2, 1), (2, 3), 2),
    (2, 2, 4, 8, (9, 12), (3, 3), (1, 1), (1, 1), (1, 1), 4),
    (3, 2, 2, 3, (6, 7, 5), (3, 2, 3), (1, 0, 1), (1, 2, 1), (1, 1, 2), 1),
    (3, 1, 4, 4, (7, 5, 6), (2, 3, 2), (0, 1, 1), (2, 1, 1), (1, 2, 1), 2),
]
IDS = [f"{c[0]}d-g{c[-1]}-s{c[7]}-d{c[8]}" for c in CASES]


def _nan(shape, dtype=np.float64):
    return np.full(shape, np.nan, dtype=dtype)


def _out(in_size, kernel, pad, stride, dil):
    return tuple((i + 2 * p - d * (k - 1) - 1) // s + 1
                 for i, k, p, s, d in zip(in_size, kernel, pad, stride, dil))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("with_bias", [False, True])
def test_forward_matches_torch(rng, case, with_bias):
    nd, n, c, k, size, ker, pad, stride, dil, g = case
    x = randn(rng, (n, c) + size)
    w = randn(rng, (k, c // g) + ker)
    b = randn(rng, (k,)) if with_bias else None
    y = _nan((n, k) + _out(size, ker, pad, stride, dil))
    assert cudnn.convolution_forward(x, w, b, y, pad, stride, dil, g, auto_tune=True,
                                     tensor_core="auto") is None
    ref = CONV[nd](torch.from_numpy(x), torch.from_numpy(w),
                   None if b is None else torch.from_numpy(b), stride, pad, dil, g)
    assert_close(y, ref.numpy())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_match_torch_autograd(rng, case):
    nd, n, c, k, size, ker, pad, stride, dil, g = case
    xt = torch.from_numpy(randn(rng, (n, c) + size)).requires_grad_()
    wt = torch.from_numpy(randn(rng, (k, c // g) + ker)).requires_grad_()
    yt = CONV[nd](xt, wt, None, stride, pad, dil, g)
    gy = randn(rng, tuple(yt.shape))
    yt.backward(torch.from_numpy(gy))

    gx = _nan(tuple(xt.shape))
    cudnn.convolution_backward_data(wt.detach().numpy(), gy, None, gx, pad, stride, dil, g,
                                    deterministic=False, auto_tune=False, tensor_core="never")
    assert_close(gx, xt.grad.numpy(), what="gx")

    for det in (True, False):
        gw = _nan(tuple(wt.shape))
        cudnn.convolution_backward_filter(xt.detach().numpy(), gy, gw, pad, stride, dil, g,
                                          deterministic=det, auto_tune=False, tensor_core="auto")
        assert_close(gw, wt.grad.numpy(), what=f"gW (deterministic={det})")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_data_with_bias_is_conv_transpose(rng, case):
    # Chainer's deconvolution: backward_data with a bias, y sized by output_padding.
    nd, n, c, k, size, ker, pad, stride, dil, g = case
    gy = randn(rng, (n, k) + _out(size, ker, pad, stride, dil))
    w = randn(rng, (k, c // g) + ker)
    b = randn(rng, (c,))
    out_size = tuple(size)
    full = tuple((o - 1) * s - 2 * p + d * (kk - 1) + 1
                 for o, s, p, d, kk in zip(gy.shape[2:], stride, pad, dil, ker))
    opad = tuple(i - f for i, f in zip(out_size, full))
    ref = CONV_T[nd](torch.from_numpy(gy), torch.from_numpy(w), torch.from_numpy(b), stride, pad,
                     opad, g, dil)
    y = _nan(tuple(ref.shape))
    cudnn.convolution_backward_data(w, gy, b, y, pad, stride, dil, g)
    assert_close(y, ref.numpy())


def test_nhwc_layouts_match_nchw(rng):
    x = randn(rng, (2, 7, 9, 6))        # N, H, W, C
    w = randn(rng, (4, 3, 2, 3))        # K, R, S, C/groups (groups 2)
    b = randn(rng, (4,))
    nhwc = cudnn.CUDNN_TENSOR_NHWC
    y = _nan((2, 7, 4, 4))               # N, P, Q, K (pad (1, 0), stride (1, 2))
    cudnn.convolution_forward(x, w, b, y, (1, 0), (1, 2), (1, 1), 2, d_layout=nhwc, w_layout=nhwc)
    ref = F.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(w).permute(0, 3, 1, 2),
                   torch.from_numpy(b), (1, 2), (1, 0), 1, 2)
    assert_close(y, ref.permute(0, 2, 3, 1).numpy())

    gy = randn(rng, y.shape)
    gw = _nan(w.shape)
    cudnn.convolution_backward_filter(x, gy, gw, (1, 0), (1, 2), None, 2, d_layout=nhwc,
                                      w_layout=nhwc)
    gx = _nan(x.shape)
    cudnn.convolution_backward_data(w, gy, None, gx, (1, 0), (1, 2), None, 2, d_layout=nhwc,
                                    w_layout=nhwc)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().requires_grad_()
    wt = torch.from_numpy(w).permute(0, 3, 1, 2).contiguous().requires_grad_()
    F.conv2d(xt, wt, None, (1, 2), (1, 0), 1, 2).backward(
        torch.from_numpy(gy).permute(0, 3, 1, 2))
    assert_close(gw, wt.grad.permute(0, 2, 3, 1).numpy(), what="gW")
    assert_close(gx, xt.grad.permute(0, 2, 3, 1).numpy(), what="gx")


def test_outputs_written_in_place_into_strided_views(rng):
    x = randn(rng, (2, 3, 8, 8))
    w = randn(rng, (4, 3, 3, 3))
    big = _nan((2, 4, 6, 12))
    y = big[:, :, :, ::2]                # non-contiguous output view
    cudnn.convolution_forward(x, w, None, y, (0, 0), (1, 1), None, 1)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    assert_close(big[:, :, :, ::2], ref)
    assert np.isnan(big[:, :, :, 1::2]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_float32_and_float16(rng, dtype):
    x = randn(rng, (2, 4, 10, 9), dtype)
    w = randn(rng, (6, 2, 3, 3), dtype)
    y = _nan((2, 6, 10, 9), dtype)
    cudnn.convolution_forward(x, w, None, y, (1, 1), (1, 1), (1, 1), 2, tensor_core="never")
    ref = F.conv2d(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
                   None, 1, 1, 1, 2)
    assert y.dtype == dtype
    assert_close(y, ref.numpy(), dtype=dtype)


def _fwd_args(rng):
    x = randn(rng, (2, 3, 8, 8))
    w = randn(rng, (4, 3, 3, 3))
    y = _nan((2, 4, 8, 8))
    return x, w, y


@pytest.mark.parametrize("kwargs, exc, needle", [
    (dict(tensor_core="sometimes"), ValueError, "tensor_core"),
    (dict(auto_tune="yes"), TypeError, "auto_tune"),
    (dict(d_layout=cudnn.CUDNN_TENSOR_NCHW_VECT_C), ValueError, "d_layout=2"),
    (dict(w_layout=7), ValueError, "w_layout=7"),
    (dict(d_layout="NHWC"), TypeError, "d_layout"),
])
def test_bad_options_name_the_argument(rng, kwargs, exc, needle):
    x, w, y = _fwd_args(rng)
    with pytest.raises(exc, match=needle):
        cudnn.convolution_forward(x, w, None, y, (1, 1), (1, 1), (1, 1), 1, **kwargs)
    assert np.isnan(y).all()             # refused before anything was written


def test_bad_arguments_name_the_argument(rng):
    x, w, y = _fwd_args(rng)
    f = cudnn.convolution_forward
    with pytest.raises(ValueError, match=r"y has shape \(2, 4, 8, 8\).*give \(2, 4, 6, 6\)"):
        f(x, w, None, y, (0, 0), (1, 1), (1, 1), 1)
    with pytest.raises(ValueError, match="pad must have one entry per spatial dimension"):
        f(x, w, None, y, (1, 1, 1), (1, 1), (1, 1), 1)
    with pytest.raises(TypeError, match="stride must be a tuple of 2 ints"):
        f(x, w, None, y, (1, 1), (1.5, 1), (1, 1), 1)
    with pytest.raises(ValueError, match="stride must be positive"):
        f(x, w, None, y, (1, 1), (0, 1), (1, 1), 1)
    with pytest.raises(ValueError, match="groups"):
        f(x, w, None, y, (1, 1), (1, 1), (1, 1), 0)
    with pytest.raises(ValueError, match="W has 4 output channels, not divisible by groups=3"):
        f(x, w, None, y, (1, 1), (1, 1), (1, 1), 3)
    with pytest.raises(ValueError, match=r"x has 3 channels but W .* groups=2 expects 6"):
        f(x, w, None, y, (1, 1), (1, 1), (1, 1), 2)
    with pytest.raises(ValueError, match="b must hold one value per output channel"):
        f(x, w, np.ones(3), y, (1, 1), (1, 1), (1, 1), 1)
    with pytest.raises(TypeError, match="y has dtype float32 but x has float64"):
        f(x, w, None, y.astype(np.float32), (1, 1), (1, 1), (1, 1), 1)
    with pytest.raises(TypeError, match="x has dtype int64"):
        f(x.astype(np.int64), w, None, y, (1, 1), (1, 1), (1, 1), 1)
    with pytest.raises(ValueError, match="W of shape .* must have as many dimensions"):
        f(x, w[0], None, y, (1, 1), (1, 1), (1, 1), 1)
    with pytest.raises(ValueError, match="d_layout=CUDNN_TENSOR_NHWC applies to 4-D arrays"):
        f(x[:, :, 0], w[:, :, 0], None, y[:, :, 0], (1,), (1,), (1,), 1,
          d_layout=cudnn.CUDNN_TENSOR_NHWC)
    with pytest.raises(TypeError, match="W must be an array"):
        f(x, None, None, y, (1, 1), (1, 1), (1, 1), 1)
    ro = y.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="y receives the result but is read-only"):
        f(x, w, None, ro, (1, 1), (1, 1), (1, 1), 1)
    assert np.isnan(y).all()

    gy = randn(rng, (2, 4, 8, 8))
    with pytest.raises(ValueError, match="x has shape .* but the forward convolution of y"):
        cudnn.convolution_backward_data(w, gy, None, np.empty((2, 3, 9, 9)), (0, 0), (1, 1), None, 1)
    with pytest.raises(TypeError, match="deterministic must be a bool"):
        cudnn.convolution_backward_data(w, gy, None, x.copy(), (1, 1), (1, 1), None, 1,
                                        deterministic=None)
    with pytest.raises(ValueError, match="gy has shape .* but x"):
        cudnn.convolution_backward_filter(x, gy, np.empty((4, 3, 5, 5)), (1, 1), (1, 1), None, 1)


def test_workspace_and_tensor_core_queries():
    cudnn.set_max_workspace_size(1 << 20)
    assert cudnn.get_max_workspace_size() == 1 << 20
    with pytest.raises(ValueError, match="size"):
        cudnn.set_max_workspace_size(-1)
    assert cudnn.is_tensor_core_available(np.float64) is False


@pytest.mark.sim
def test_three_calls_on_the_simulator(rng):
    # the GPU path (kernels_cu) run by the CPU simulator, outputs poisoned
    from gpuconv.sim import SimBackend
    import gpuconv
    nd, n, c, k, size, ker, pad, stride, dil, g = CASES[3]
    x = randn(rng, (n, c) + size, np.float32)
    w = randn(rng, (k, c // g) + ker, np.float32)
    b = randn(rng, (k,), np.float32)
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    wt = torch.from_numpy(w.astype(np.float64)).requires_grad_()
    yt = CONV[nd](xt, wt, torch.from_numpy(b.astype(np.float64)), stride, pad, dil, g)
    gy = randn(rng, tuple(yt.shape), np.float32)
    yt.backward(torch.from_numpy(gy.astype(np.float64)))
    y, gx, gw = _nan(yt.shape, np.float32), _nan(x.shape, np.float32), _nan(w.shape, np.float32)
    with gpuconv.use_backend(SimBackend()):
        cudnn.convolution_forward(x, w, b, y, pad, stride, dil, g)
        cudnn.convolution_backward_data(w, gy, None, gx, pad, stride, dil, g)
        cudnn.convolution_backward_filter(x, gy, gw, pad, stride, dil, g, deterministic=True)
    assert_close(y, yt.detach().numpy(), dtype=np.float32, what="y")
    assert_close(gx, xt.grad.numpy(), dtype=np.float32, what="gx")
    assert_close(gw, wt.grad.numpy(), dtype=np.float32, what="gW")
