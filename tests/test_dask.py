"""Dask arrays through gpuconv: lazy graphs whose results equal the single-array
calls (signal: bit for bit in float64, for every mode x boundary and chunkings
with chunks smaller than the kernel and uneven last chunks; conv: torch within
float64 tolerance), on dask's threaded scheduler and a 2-worker distributed
LocalCluster."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import gpuconv
from util import assert_close, randn

da = pytest.importorskip("dask.array", reason="dask is not installed (pip install 'gpuconv[dask]')")
torch = pytest.importorskip("torch")
from gpuconv import _dask as gd  # noqa: E402 - after the skip

F = torch.nn.functional
MODES = ("full", "same", "valid")
BOUNDARIES = ("fill", "wrap", "symm")
# (image chunks): one chunk; uneven chunks with a short last one; chunks smaller
# than the 5x4 kernel (halos gathered from several neighbours)
CHUNKINGS = [(19, 14), (8, 5), (3, 2)]


def _signal(fname):
    return getattr(gpuconv, fname), getattr(gd, fname)


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fname", ["convolve2d", "correlate2d"])
def test_signal_equals_single_array_exactly(rng, fname, mode, chunks):
    a = randn(rng, (19, 14))
    k = randn(rng, (5, 4))
    single, lazy = _signal(fname)
    for boundary in BOUNDARIES:
        out = lazy(da.from_array(a, chunks=chunks), k, mode, boundary, 1.25)
        ref = single(a, k, mode, boundary, 1.25)
        assert out.shape == ref.shape and out.dtype == ref.dtype
        got = out.compute(scheduler="threads")
        assert np.array_equal(got, ref), (boundary, np.abs(got - ref).max())


def test_signal_output_chunks_follow_the_image(rng):
    a = da.from_array(randn(rng, (37, 29)), chunks=(10, 8))
    k = randn(rng, (5, 4))
    assert gd.convolve2d(a, k, "same").chunks == a.chunks
    assert gd.convolve2d(a, k, "full").chunks == ((10, 10, 10, 11), (8, 8, 8, 8))
    # valid: 33 x 26, the short last chunks shrink (a 2-column chunk vanishes)
    assert gd.convolve2d(a, k, "valid").chunks == ((10, 10, 10, 3), (8, 8, 8, 2))
    b = da.from_array(randn(rng, (37, 29)), chunks=(36, 28))
    assert gd.correlate2d(b, k, "valid").chunks == ((33,), (26,))


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_signal_kernel_longer_than_image_and_lazy_kernel(rng, boundary):
    # periodic extension past the image (scipy's wrap/symm repeat), kernel given as dask
    a = randn(rng, (9, 13))
    k = randn(rng, (23, 3))
    for mode in ("full", "same"):
        out = gd.correlate2d(da.from_array(a, chunks=(2, 5)), da.from_array(k, chunks=(7, 2)),
                             mode, boundary, -0.5)
        assert np.array_equal(out.compute(), gpuconv.correlate2d(a, k, mode, boundary, -0.5))


def test_signal_valid_swap_complex_and_integer(rng):
    # scipy's 'valid' swap (in2 the larger: it becomes the chunked image), complex
    # conjugation and correlate2d's reversal after the swap; integers exact
    a = randn(rng, (6, 5), np.complex128)
    big = randn(rng, (31, 22), np.complex128)
    out = gd.correlate2d(a, da.from_array(big, chunks=(7, 6)), "valid")
    assert np.array_equal(out.compute(), gpuconv.correlate2d(a, big, "valid"))
    ai = rng.integers(-50, 50, (30, 17))
    ki = rng.integers(-5, 5, (3, 4))
    for boundary in BOUNDARIES:
        out = gd.convolve2d(da.from_array(ai, chunks=(4, 3)), ki, "same", boundary, 7)
        assert out.dtype == np.int64
        assert np.array_equal(out.compute(), gpuconv.convolve2d(ai, ki, "same", boundary, 7))


def test_signal_errors_before_compute(rng):
    a = da.from_array(randn(rng, (8, 8)), chunks=4)
    with pytest.raises(ValueError, match="mode"):
        gd.convolve2d(a, np.ones((3, 3)), mode="sometimes")
    with pytest.raises(ValueError, match="boundary"):
        gd.convolve2d(a, np.ones((3, 3)), boundary="reflect")
    with pytest.raises(ValueError, match="at least as large"):
        gd.convolve2d(a, np.ones((9, 3)), mode="valid")


# ----------------------------------------------------------------------------
# conv against torch


def _t(a):
    return None if a is None else torch.from_numpy(a)


CONV_CASES = [  # (nd, x shape, x chunks, weight shape, kwargs)
    (1, (3, 4, 41), (2, 4, 6), (6, 2, 5), dict(stride=3, padding=2, groups=2)),
    (2, (3, 4, 23, 19), (2, 4, 5, 7), (6, 2, 3, 4),
     dict(stride=2, padding=(2, 1), dilation=(1, 2), groups=2)),
    (2, (2, 3, 17, 16), (1, 3, 3, 2), (4, 3, 5, 3), dict(padding="same", dilation=(2, 1))),
    (2, (2, 3, 17, 16), (1, 3, 9, 5), (4, 3, 3, 3), dict(stride=(3, 1), padding="valid")),
    (3, (2, 2, 9, 8, 7), (1, 2, 4, 3, 5), (3, 2, 3, 2, 3), dict(padding=1, dilation=(1, 2, 1))),
]
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}d-{c[2]}")
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv_matches_torch(rng, case, padding_mode):
    nd, xs, ch, ws, kw = case
    x, w, b = randn(rng, xs), randn(rng, ws), randn(rng, (ws[0],))
    out = getattr(gd, f"conv{nd}d")(da.from_array(x, chunks=ch), w, b, padding_mode=padding_mode,
                                    activation="relu", **kw)
    mod = getattr(torch.nn, f"Conv{nd}d")(xs[1], ws[0], ws[2:], padding_mode=padding_mode,
                                         **kw).double()
    with torch.no_grad():
        mod.weight.copy_(_t(w))
        mod.bias.copy_(_t(b))
        ref = F.relu(mod(_t(x))).numpy()
    assert_close(out.compute(), ref)


def test_conv_unbatched_and_lazy_weight(rng):
    x, w = randn(rng, (3, 20, 14)), randn(rng, (5, 3, 3, 3))
    out = gd.conv2d(da.from_array(x, chunks=(3, 6, 4)), da.from_array(w, chunks=2), None, 1, 1)
    assert out.shape == (5, 20, 14)
    assert_close(out.compute(), F.conv2d(_t(x), _t(w), None, 1, 1).numpy())


TRANSPOSE_CASES = [
    (1, (2, 4, 13), (1, 4, 3), (4, 3, 4), dict(stride=3, padding=1, output_padding=2)),
    (2, (3, 4, 11, 9), (2, 4, 3, 4), (4, 3, 3, 2), dict(stride=2, padding=1, output_padding=1)),
    (2, (3, 4, 11, 9), (2, 4, 2, 5), (4, 3, 3, 2), dict(stride=(3, 2), padding=(0, 1),
                                                        dilation=(1, 2))),
    (2, (2, 4, 7, 6), (1, 4, 2, 3), (4, 3, 2, 2), dict(stride=4, output_padding=(3, 1))),
    (3, (2, 4, 5, 4, 6), (1, 4, 2, 3, 4), (4, 3, 2, 3, 2), dict(stride=2, padding=1)),
]


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=lambda c: f"{c[0]}d-{c[2]}")
def test_conv_transpose_matches_torch(rng, case):
    # stride 4 with a 2-tap kernel leaves outputs no input reaches: bias + activation only
    nd, xs, ch, ws, kw = case
    x, w, b = randn(rng, xs), randn(rng, ws), randn(rng, (ws[1] * 2,))
    out = getattr(gd, f"conv_transpose{nd}d")(da.from_array(x, chunks=ch), w, b, groups=2,
                                              activation="silu", **kw)
    ref = F.silu(CONV_T[nd](_t(x), _t(w), _t(b), groups=2, **kw)).numpy()
    assert_close(out.compute(), ref)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_gradients_match_torch(rng, nd):
    sizes = {1: (29,), 2: (15, 13), 3: (7, 6, 8)}[nd]
    kernel = {1: (4,), 2: (3, 2), 3: (2, 3, 2)}[nd]
    chunks = {1: (5,), 2: (4, 3), 3: (3, 2, 5)}[nd]
    kw = dict(stride=2, padding=1, dilation=(1, 2, 1)[:nd], groups=2)
    x = randn(rng, (3, 4) + sizes)
    w = randn(rng, (6, 2) + kernel)
    gy = CONV[nd](_t(x), _t(w), None, **kw).numpy()
    gy = randn(rng, gy.shape)
    X = da.from_array(x, chunks=(2, 4) + chunks)
    GY = da.from_array(gy, chunks=(1, 3) + chunks)
    gx = getattr(gd, f"conv{nd}d_input")(x.shape, w, GY, **kw)
    gw = getattr(gd, f"conv{nd}d_weight")(X, w.shape, GY, **kw)
    nn_grad = torch.nn.grad
    assert_close(gx.compute(), getattr(nn_grad, f"conv{nd}d_input")(x.shape, _t(w), _t(gy),
                                                                     **kw).numpy(), what="input")
    assert_close(gw.compute(), getattr(nn_grad, f"conv{nd}d_weight")(_t(x), w.shape, _t(gy),
                                                                      **kw).numpy(), what="weight")
    assert len(gw.chunks[0]) == 1      # the tree reduction leaves one chunk


def test_separable_matches_single_array(rng):
    x = randn(rng, (2, 4, 19, 17))
    dw, pw, b = randn(rng, (8, 1, 3, 3)), randn(rng, (5, 8, 1, 1)), randn(rng, (5,))
    for kw in (dict(stride=2, padding=1, padding_mode="reflect"), dict(padding="same", dilation=2)):
        out = gd.separable_conv2d(da.from_array(x, chunks=(1, 4, 4, 6)), dw, pw, b, **kw)
        assert_close(out.compute(), gpuconv.separable_conv2d(x, dw, pw, b, **kw))


def test_conv_errors_before_compute(rng):
    X = da.from_array(randn(rng, (2, 3, 8, 8)), chunks=(1, 3, 4, 4))
    with pytest.raises(ValueError, match="groups"):
        gd.conv2d(X, randn(rng, (4, 3, 3, 3)), groups=2)
    with pytest.raises(TypeError, match="dtype"):
        gd.conv2d(X, randn(rng, (4, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="padding_mode"):
        gd.conv2d(X, randn(rng, (4, 3, 3, 3)), padding=1, padding_mode="mirror")


# ----------------------------------------------------------------------------
# laziness and schedulers


def test_nothing_is_computed_before_compute(rng):
    calls = []
    lock = threading.Lock()
    a = randn(rng, (40, 30))
    x = randn(rng, (2, 3, 16, 12))

    def source(block):
        with lock:
            calls.append(block.shape)
        return block

    # meta given, so dask does not call `source` on empty stand-ins to infer it
    A = da.from_array(a, chunks=(9, 7)).map_blocks(source, meta=np.empty((0, 0)))
    X = da.from_array(x, chunks=(1, 3, 5, 5)).map_blocks(source, meta=np.empty((0,) * 4))
    w = randn(rng, (4, 3, 3, 3))
    graphs = [gd.convolve2d(A, np.ones((5, 5)), "same", "symm"),
              gd.correlate2d(A, np.ones((3, 2)), "valid"),
              gd.conv2d(X, w, None, 2, 1, padding_mode="reflect"),
              gd.conv_transpose2d(X, randn(rng, (3, 2, 3, 3)), stride=2),
              gd.conv2d_weight(X, w.shape, gd.conv2d(X, w, padding=1), padding=1)]
    assert calls == [], "a graph was computed while being built"
    results = [g.compute(scheduler="threads") for g in graphs]
    assert calls, "computing read no input chunk"
    assert np.array_equal(results[0], gpuconv.convolve2d(a, np.ones((5, 5)), "same", "symm"))


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    # threads, not processes: two workers start in well under a second here
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def test_distributed_two_workers(rng, client):
    assert len(client.scheduler_info()["workers"]) == 2
    a = randn(rng, (25, 21))
    k = randn(rng, (4, 5))
    A = da.from_array(a, chunks=(8, 11))
    for mode in MODES:
        for boundary in BOUNDARIES:
            out = client.compute(gd.convolve2d(A, k, mode, boundary, 0.5)).result()
            assert np.array_equal(out, gpuconv.convolve2d(a, k, mode, boundary, 0.5)), \
                (mode, boundary)
    x, w = randn(rng, (4, 3, 19, 15)), randn(rng, (5, 3, 3, 3))
    X = da.from_array(x, chunks=(2, 3, 7, 6))
    y = client.compute(gd.conv2d(X, w, None, 1, 1)).result()
    assert_close(y, F.conv2d(_t(x), _t(w), None, 1, 1).numpy())
    gw = client.compute(gd.conv2d_weight(X, w.shape, da.from_array(y, chunks=(1, 5, 5, 5)),
                                         padding=1)).result()
    assert_close(gw, torch.nn.grad.conv2d_weight(_t(x), w.shape, _t(y), padding=1).numpy())


def test_import_gpuconv_does_not_import_dask():
    import subprocess
    import sys
    code = "import sys, gpuconv; print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_functions_route_dask_arrays(rng):
    a = randn(rng, (21, 17))
    A = da.from_array(a, chunks=(6, 5))
    out = gpuconv.correlate2d(A, randn(rng, (3, 3)), mode="same", boundary="wrap")
    assert isinstance(out, da.Array)
    x, w = randn(rng, (2, 3, 11, 10)), randn(rng, (4, 3, 3, 3))
    y = gpuconv.conv2d(da.from_array(x, chunks=(1, 3, 4, 4)), w, padding=1)
    assert isinstance(y, da.Array)
    assert_close(y.compute(), F.conv2d(_t(x), _t(w), padding=1).numpy())
    gw = gpuconv.conv2d_weight(x, w.shape, y, padding=1)       # dask only in grad_output
    assert isinstance(gw, da.Array)
    assert_close(gw.compute(), torch.nn.grad.conv2d_weight(_t(x), w.shape, _t(y.compute()),
                                                            padding=1).numpy())


@pytest.mark.parametrize("shapes", [((3, 20, 17), (4, 3)), ((19, 16), (2, 3, 3)),
                                    ((2, 1, 15, 14), (3, 5, 4)), ((2, 4, 3), (2, 13, 11))],
                         ids=str)
def test_signal_batches_equal_single_array(rng, shapes):
    a, k = randn(rng, shapes[0]), randn(rng, shapes[1])
    chunks = (1,) * (a.ndim - 2) + (6, 5)
    for fname in ("convolve2d", "correlate2d"):
        single, lazy = _signal(fname)
        for mode in MODES:
            for boundary in BOUNDARIES:
                out = lazy(da.from_array(a, chunks=chunks), k, mode, boundary, 0.5)
                ref = single(a, k, mode, boundary, 0.5)
                assert out.shape == ref.shape
                assert np.array_equal(out.compute(), ref), (fname, mode, boundary)


def test_positional_parameters_match_the_public_functions():
    # the routing passes a public call's arguments as they came: positions must agree,
    # and keyword-only options (activation, precision, algorithm, method, ...) pass through
    import inspect
    for name in gd.__all__:
        public = inspect.signature(inspect.unwrap(getattr(gpuconv, name))).parameters.values()
        mine = inspect.signature(getattr(gd, name)).parameters.values()
        positional = [(p.name, p.default) for p in public if p.kind != p.KEYWORD_ONLY]
        assert positional == [(p.name, p.default) for p in mine
                              if p.kind not in (p.KEYWORD_ONLY, p.VAR_KEYWORD)], name
        assert any(p.kind == p.VAR_KEYWORD for p in mine) or all(
            p.name in inspect.signature(getattr(gd, name)).parameters for p in public), name


def test_options_reach_the_public_function(rng):
    a = randn(rng, (30, 26))
    k = randn(rng, (6, 5))
    A = da.from_array(a, chunks=(9, 8))
    direct = gd.convolve2d(A, k, "same", "wrap", 0, "direct").compute()
    assert np.array_equal(direct, gpuconv.convolve2d(a, k, "same", "wrap", method="direct"))
    fft = gd.convolve2d(A, k, "same", "wrap", method="fft").compute()
    assert_close(fft, direct)
    with pytest.raises(ValueError, match="method"):
        gd.convolve2d(A, k, method="winograd")
    with pytest.raises(ValueError, match="activation"):
        gd.conv2d(da.from_array(randn(rng, (1, 2, 5, 5))), randn(rng, (3, 2, 3, 3)),
                  activation="tanh")


def test_auto_method_decided_once_for_the_whole_image(rng, monkeypatch):
    # 'auto' asks gpuconv.fft.choose_method; here it sums directly for the whole image
    # and would pick FFT for any smaller window: every chunk must use the whole image's
    # choice, so the result is the single-array call's, bit for bit
    from gpuconv import fft
    a = randn(rng, (120, 100))
    k = randn(rng, (6, 5))
    monkeypatch.setattr(fft, "choose_method",
                        lambda a_shape, *rest: "direct" if tuple(a_shape) == a.shape else "fft")
    out = gd.convolve2d(da.from_array(a, chunks=(32, 32)), k, "same").compute()
    assert np.array_equal(out, gpuconv.convolve2d(a, k, "same"))
