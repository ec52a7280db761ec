"""bfloat16 end to end (ml_dtypes NumPy arrays, torch bfloat16 tensors) and the
float32 precision policy (precision=, gpuconv.set_float32_precision).

bfloat16 results are computed in float32 and rounded once, on every path; they are
held to a float64 reference within bfloat16's tolerance.  The precision keyword is
accepted by every convolution, transposed convolution and gradient; on the CPU
path (and, until TF32 kernels are registered, on the device) every precision is
exact FP32.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from gpuconv import reference
from gpuconv.spec import make_spec, transpose_spec
from util import BFLOAT16, assert_close, randn

pytestmark = pytest.mark.skipif(BFLOAT16 is None, reason="needs ml_dtypes (pip install ml_dtypes)")


def bf16(rng, shape):
    return randn(rng, shape).astype(BFLOAT16)


def f64(a):
    return np.asarray(a).astype(np.float64)


def test_every_operation_keeps_bfloat16(rng, path):
    A = path.asarray
    x, w, b = bf16(rng, (2, 4, 9, 8)), bf16(rng, (6, 2, 3, 3)), bf16(rng, (6,))
    args = ((2, 1), 1, (1, 2), 2)
    spec, _ = make_spec(x.shape, w.shape, b.shape, *args, np.float64, 2)
    y = gpuconv.conv2d(A(x), A(w), A(b), *args)
    assert y.dtype == BFLOAT16
    assert_close(path.get(y), reference.conv(f64(x), f64(w), f64(b), spec), BFLOAT16, what="conv2d")
    dy = bf16(rng, spec.output_shape)
    gx = gpuconv.conv2d_input(x.shape, A(w), A(dy), *args)
    gw = gpuconv.conv2d_weight(A(x), w.shape, A(dy), *args)
    assert gx.dtype == gw.dtype == BFLOAT16
    assert_close(path.get(gx), reference.dgrad(f64(dy), f64(w), spec), BFLOAT16, what="conv2d_input")
    assert_close(path.get(gw), reference.wgrad(f64(x), f64(dy), spec), BFLOAT16, what="conv2d_weight")
    t = gpuconv.conv_transpose2d(A(dy), A(w), None, (2, 1), 1, (1, 0), 2, (1, 2))
    tspec, _ = transpose_spec(dy.shape, w.shape, None, (2, 1), 1, (1, 0), 2, (1, 2), np.float64, 2)
    assert t.dtype == BFLOAT16
    assert_close(path.get(t), reference.dgrad(f64(dy), f64(w), tspec), BFLOAT16, what="conv_transpose2d")
    dw, pw = bf16(rng, (8, 1, 3, 3)), bf16(rng, (5, 8, 1, 1))
    s = gpuconv.separable_conv2d(A(x), A(dw), A(pw), None, 1, 1)
    assert s.dtype == BFLOAT16
    mid = gpuconv.conv2d(f64(x), f64(dw), None, 1, 1, 1, 4).astype(BFLOAT16)   # rounded between steps
    assert_close(path.get(s), gpuconv.conv2d(f64(mid), f64(pw)), BFLOAT16, what="separable_conv2d")
    y1 = gpuconv.conv1d(A(x[:, :, 0]), A(w[:, :, 0]), None, 2, 1, 1, 2)
    y3 = gpuconv.conv3d(A(x[:, :, None]), A(w[:, :, None]), None, 1, 1, 1, 2)
    assert y1.dtype == y3.dtype == BFLOAT16


def test_bfloat16_torch_tensors_round_trip(rng):
    torch = pytest.importorskip("torch")
    x, w = bf16(rng, (2, 3, 7, 6)), bf16(rng, (4, 3, 3, 3))
    xt = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    wt = torch.from_numpy(w.view(np.int16)).view(torch.bfloat16)
    got = gpuconv.conv2d(xt, wt, padding=1)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.bfloat16
    want = torch.nn.functional.conv2d(xt.double(), wt.double(), padding=1).numpy()
    assert_close(got.float().numpy().astype(BFLOAT16), want, BFLOAT16)


def test_mixed_bfloat16_float16_names_both(rng):
    x, w = bf16(rng, (1, 2, 5, 5)), randn(rng, (3, 2, 3, 3), np.float16)
    with pytest.raises(TypeError, match="bfloat16.*float16"):
        gpuconv.conv2d(x, w)
    with pytest.raises(TypeError, match="bfloat16.*float16"):
        gpuconv.conv2d_weight(x, w.shape, randn(rng, (1, 3, 3, 3), np.float16))


def test_signal_functions_refuse_bfloat16_like_float16(rng):
    """scipy.signal has no float16 (or bfloat16) loop: refused the same way."""
    a = bf16(rng, (5, 5))
    with pytest.raises(ValueError, match="bfloat16"):
        gpuconv.correlate2d(a, a)


@pytest.mark.parametrize("precision", ["highest", "high", "medium"])
def test_precision_keyword_everywhere_exact_on_the_cpu(rng, path, precision):
    A = path.asarray
    x, w = randn(rng, (2, 4, 9, 8), np.float32), randn(rng, (6, 2, 3, 3), np.float32)
    spec, _ = make_spec(x.shape, w.shape, None, 1, 1, 1, 2, np.float64, 2)
    want = reference.conv(x, w, None, spec, accumulate="float64")
    assert_close(path.get(gpuconv.conv2d(A(x), A(w), None, 1, 1, 1, 2, precision=precision)), want,
                 np.float32)
    dy = randn(rng, spec.output_shape, np.float32)
    assert_close(path.get(gpuconv.conv2d_input(x.shape, A(w), A(dy), 1, 1, 1, 2, precision=precision)),
                 reference.dgrad(dy, w, spec, accumulate="float64"), np.float32)
    assert_close(path.get(gpuconv.conv2d_weight(A(x), w.shape, A(dy), 1, 1, 1, 2, precision=precision)),
                 reference.wgrad(x, dy, spec, accumulate="float64"), np.float32)
    assert path.get(gpuconv.conv_transpose2d(A(dy), A(w), None, 1, 1, 0, 2,
                                             precision=precision)).shape == x.shape
    dw, pw = randn(rng, (4, 1, 3, 3), np.float32), randn(rng, (3, 4, 1, 1), np.float32)
    assert gpuconv.separable_conv2d(A(x), A(dw), A(pw), padding=1,
                                    precision=precision).shape == (2, 3, 9, 8)


def test_process_wide_precision_and_errors():
    assert gpuconv.get_float32_precision() == "highest"
    gpuconv.set_float32_precision("medium")
    try:
        assert gpuconv.get_float32_precision() == "medium"
    finally:
        gpuconv.set_float32_precision("highest")
    x = np.ones((1, 2, 4, 4), np.float32)
    for bad in ("low", None, 3):
        with pytest.raises(ValueError, match="precision"):
            gpuconv.set_float32_precision(bad)
    with pytest.raises(ValueError, match="precision must be one of"):
        gpuconv.conv2d(x, x[:1, :, :2, :2], precision="fast")
    with pytest.raises(ValueError, match="precision"):
        gpuconv.conv2d_input(x.shape, x[:1, :, :2, :2], np.ones((1, 1, 3, 3), np.float32),
                             precision="HIGH")
