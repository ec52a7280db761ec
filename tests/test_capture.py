"""CUDA-graph capture: while the stream captures, only capture-safe kernels run (no cuBLAS,
no host synchronisation, no out-of-memory retry, no per-call cudaMemGetInfo).

In the simulator, SimBackend(capturing=True) pretends to capture: every public operation
must give the float64 reference's result without ever asking for the im2col module (its
GEMM is cuBLAS on a GPU).  On a GPU (-m gpu) the operations are captured into a
cupy.cuda.Graph, the inputs are overwritten in place, the graph is replayed and the results
compared with the reference of the new inputs."""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from gpuconv import reference
from gpuconv.cuda import conv as cuda_conv, dispatch
from gpuconv.cuda.backend import CupyBackend, device_facts, is_capturing
from gpuconv.cuda.facts import DeviceFacts
from gpuconv.spec import make_spec

from util import assert_close, randn


def _spec(x, w, stride=1, padding=0, groups=1, dtype=np.float64):
    return make_spec(x, w, None, stride, padding, 1, groups, np.dtype(dtype), len(w) - 2)[0]


def test_backend_capture_interface():
    """is_capturing reads a backend's is_capturing() or its `capturing` attribute; the
    simulator's flag is a constructor argument and an attribute."""
    from gpuconv.sim import SimBackend
    assert not is_capturing(SimBackend()) and is_capturing(SimBackend(capturing=True))
    be = SimBackend()
    be.capturing = True
    assert is_capturing(be) and device_facts(be).capturing
    assert not device_facts(SimBackend()).capturing
    assert callable(getattr(CupyBackend, "is_capturing")) and callable(getattr(CupyBackend, "total_memory"))


@pytest.mark.sim
def test_capture_in_the_simulator_avoids_cublas(rng, monkeypatch):
    from gpuconv.sim import SimBackend
    monkeypatch.setattr(cuda_conv, "POISON_OUTPUT", True)
    be = SimBackend(capturing=True)
    modules = []
    real = be.get_function
    monkeypatch.setattr(be, "get_function", lambda m, names, name: (modules.append(m), real(m, names, name))[1])
    f64 = np.float64

    # pointwise float64 with a large GEMM: im2col (cuBLAS DGEMM) outside a capture
    x = randn(rng, (4, 64, 29, 31), f64)
    w = randn(rng, (48, 64, 1, 1), f64)
    b = randn(rng, (48,), f64)
    sp = _spec(x.shape, w.shape)
    assert dispatch.choose(sp, DeviceFacts())[0] == "im2col"
    assert dispatch.choose(sp, DeviceFacts(capturing=True))[0] != "im2col"
    with gpuconv.use_backend(be):
        y = gpuconv.conv2d(x, w, b)
    assert_close(y, reference.conv(x, w, b, sp), f64, what="conv2d pointwise")

    # 3x3 float32, the input gradient, a transposed conv, the weight gradient (2-D kernel and
    # the 3-D fallback through a forward conv), a separable conv (two passes), convolve2d
    x = randn(rng, (2, 6, 13, 11), np.float32)
    w = randn(rng, (5, 6, 3, 3), np.float32)
    sp = _spec(x.shape, w.shape, stride=2, padding=1, dtype=np.float32)
    dy = randn(rng, sp.output_shape, np.float32)
    x3 = randn(rng, (2, 3, 6, 5, 7), f64)
    w3 = randn(rng, (4, 3, 2, 3, 2), f64)
    sp3 = _spec(x3.shape, w3.shape)
    dy3 = randn(rng, sp3.output_shape, f64)
    xs = randn(rng, (2, 4, 12, 10), f64)
    dws = randn(rng, (4, 1, 3, 3), f64)
    pws = randn(rng, (40, 4, 1, 1), f64)
    a = randn(rng, (17, 23), f64)
    k = randn(rng, (4, 3), f64)
    with gpuconv.use_backend(be):
        y = gpuconv.conv2d(x, w, stride=2, padding=1)
        dx = gpuconv.conv2d_input(x.shape, w, dy, stride=2, padding=1)
        ct = gpuconv.conv_transpose2d(dy, w, stride=2, padding=1)     # 13x11 again: dgrad's shape
        dw = gpuconv.conv2d_weight(x, w.shape, dy, stride=2, padding=1)
        dw3 = gpuconv.conv3d_weight(x3, w3.shape, dy3)
        sep = gpuconv.separable_conv2d(xs, dws, pws, padding=1, algorithm="two_pass")
        cv = gpuconv.convolve2d(a, k, mode="same")
    assert_close(y, reference.conv(x.astype(f64), w.astype(f64), None, sp), np.float32, what="conv2d")
    ref_dx = reference.dgrad(dy.astype(f64), w.astype(f64), sp)
    assert_close(dx, ref_dx, np.float32, what="conv2d_input")
    assert_close(ct, ref_dx, np.float32, what="conv_transpose2d")
    assert_close(dw, reference.wgrad(x.astype(f64), dy.astype(f64), sp), np.float32, what="conv2d_weight")
    assert_close(dw3, reference.wgrad(x3, dy3, sp3), f64, what="conv3d_weight")
    import scipy.signal
    assert_close(sep, _separable_ref(xs, dws, pws), f64, what="separable_conv2d")
    assert_close(cv, scipy.signal.convolve2d(a, k, mode="same"), f64, what="convolve2d")
    assert modules and "im2col.cu" not in modules, sorted(set(modules))

    # complex: its only kernel is im2col -> a clear error, nothing launched
    xc = (randn(rng, (1, 2, 6, 6), f64) + 1j).astype(np.complex128)
    wc = (randn(rng, (3, 2, 3, 3), f64) + 1j).astype(np.complex128)
    with gpuconv.use_backend(be), pytest.raises(ValueError, match="captured into a CUDA graph"):
        gpuconv.conv2d(xc, wc)
    with gpuconv.use_backend(be), pytest.raises(ValueError, match="captured into a CUDA graph"):
        gpuconv.conv2d(x, w, algorithm="im2col")


def _separable_ref(x, dw, pw):
    sp = _spec(x.shape, dw.shape, padding=1, groups=x.shape[1])
    mid = reference.conv(x, dw, None, sp)
    return reference.conv(mid, pw, None, _spec(mid.shape, pw.shape))


@pytest.mark.gpu
def test_graph_capture_and_replay_on_the_gpu(rng):
    """conv2d (float32 pointwise: im2col outside a capture; float16 3x3), conv_transpose2d,
    both gradients and convolve2d captured into one cupy.cuda.Graph on a non-blocking stream;
    the inputs are overwritten in place and the replay must give the new inputs' results."""
    import cupy
    f32 = np.float32
    x = randn(rng, (8, 64, 33, 31), f32)
    wp = randn(rng, (48, 64, 1, 1), f32)
    assert dispatch.choose(_spec(x.shape, wp.shape, dtype=f32), DeviceFacts())[0] == "im2col"
    xh = randn(rng, (2, 32, 14, 18), np.float16)
    wh = randn(rng, (64, 32, 3, 3), np.float16)
    w = randn(rng, (24, 64, 3, 3), f32)
    sp = _spec(x.shape, w.shape, stride=2, padding=1, dtype=f32)
    dy = randn(rng, sp.output_shape, f32)
    a = randn(rng, (61, 47), f32)
    k = randn(rng, (5, 4), f32)
    host = [x, wp, xh, wh, w, dy, a, k]
    dev = [cupy.asarray(v) for v in host]
    dx_, dwp, dxh, dwh, dw_, ddy, da, dk = dev

    def ops():
        return [gpuconv.conv2d(dx_, dwp),
                gpuconv.conv2d(dxh, dwh, padding=1),
                gpuconv.conv_transpose2d(ddy, dw_, stride=2, padding=1),
                gpuconv.conv2d_input(x.shape, dw_, ddy, stride=2, padding=1),
                gpuconv.conv2d_weight(dx_, w.shape, ddy, stride=2, padding=1),
                gpuconv.convolve2d(da, dk, mode="same")]

    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        ops()                                  # compile and fill CuPy's pool outside the capture
        s.synchronize()
        s.begin_capture()
        assert CupyBackend().is_capturing() and device_facts(CupyBackend()).capturing
        outs = ops()
        graph = s.end_capture()
    assert not CupyBackend().is_capturing()
    fresh = [randn(rng, v.shape, v.dtype) for v in host]
    for d, v in zip(dev, fresh):
        d.set(v)                               # new inputs in the captured buffers
    cupy.cuda.Device().synchronize()           # the copies ran on another stream than s
    graph.launch(stream=s)
    s.synchronize()
    x, wp, xh, wh, w, dy, a, k = (v.astype(np.float64) for v in fresh)
    import scipy.signal
    refs = [reference.conv(x, wp, None, _spec(x.shape, wp.shape)),
            reference.conv(xh, wh, None, _spec(xh.shape, wh.shape, padding=1)),
            reference.dgrad(dy, w, sp), reference.dgrad(dy, w, sp),
            reference.wgrad(x, dy, sp),
            scipy.signal.convolve2d(a, k, mode="same")]
    names = ["conv2d pointwise", "conv2d fp16", "conv_transpose2d", "conv2d_input", "conv2d_weight",
             "convolve2d"]
    for out, ref, name in zip(outs, refs, names):
        assert_close(cupy.asnumpy(out), ref, out.dtype, what=name)
    total = CupyBackend().total_memory()
    assert total == CupyBackend().total_memory() and total > 1 << 30


class _FakeCupy:
    """Just enough of CuPy for CupyBackend's queries, counting the driver calls."""

    def __init__(self, capturing):
        import types
        self.calls = {"memGetInfo": 0, "props": 0}
        fake = self

        class Stream:
            def is_capturing(self):
                if isinstance(capturing, Exception):
                    raise capturing
                return capturing

        class Device:
            def __init__(self, dev):
                self.compute_capability = "90"
                self.attributes = {"MultiProcessorCount": 132, "MaxSharedMemoryPerBlock": 49152}

        def mem_get_info():
            fake.calls["memGetInfo"] += 1
            return 10 << 30, 80 << 30

        def props(dev):
            fake.calls["props"] += 1
            return {"name": b"Fake H100", "totalGlobalMem": 80 << 30}

        runtime = types.SimpleNamespace(getDevice=lambda: 0, memGetInfo=mem_get_info, getDeviceProperties=props)
        self.cuda = types.SimpleNamespace(runtime=runtime, Device=Device, get_current_stream=lambda: Stream())
        self.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 1 << 20)


@pytest.mark.parametrize("capturing", [False, True, RuntimeError("cudaErrorStreamCaptureImplicit")])
def test_cupy_backend_queries_without_a_gpu(capturing):
    """CupyBackend (with a stand-in for CuPy): is_capturing asks the current stream (a refused
    query counts as capturing); device_facts reads free memory per call except while capturing;
    total_memory is read once per device."""
    be = object.__new__(CupyBackend)
    be.xp, be._static = _FakeCupy(capturing), {}
    want = capturing is not False
    assert be.is_capturing() is want
    f = be.device_facts()
    assert f.capturing is want and f.name == "Fake H100" and f.sm_count == 132 and f.total_bytes == 80 << 30
    assert be.xp.calls["memGetInfo"] == (0 if want else 1)
    assert f.free_bytes == ((80 << 30) if want else (10 << 30) + (1 << 20))
    props = be.xp.calls["props"]
    assert be.total_memory() == 80 << 30 and be.total_memory() == 80 << 30
    assert be.xp.calls["props"] == props                     # cached per device
    name, _ = cuda_conv.resolve(_spec((8, 256, 28, 28), (512, 256, 1, 1), stride=2, dtype=np.float32), "auto", be)
    assert (name == "im2col") is (not want)


@pytest.mark.sim
def test_capture_keeps_large_kernels_off_the_fft(rng):
    """A layer the GPU cost model sends to the FFT (its contraction is a cuBLAS GEMM)
    stays off it while the stream captures; algorithm='fft' during a capture is a
    ValueError naming the reason, raised before anything runs."""
    from gpuconv import engine, fft
    from gpuconv.sim import SimBackend
    sp = _spec((8, 64, 128, 128), (64, 64, 31, 31), padding=15)
    assert fft.conv_cost_model(sp, "fprop", "gpu").use_fft
    free = engine.Path("device", np, SimBackend())
    captured = engine.Path("device", np, SimBackend(capturing=True))
    assert engine.use_fft("fprop", sp, free, "auto")
    assert not engine.use_fft("fprop", sp, captured, "auto")
    x, w = randn(rng, (1, 2, 12, 12)), randn(rng, (2, 2, 5, 5))
    with gpuconv.use_backend(SimBackend(capturing=True)):
        with pytest.raises(ValueError, match="captures a CUDA graph"):
            gpuconv.conv2d(x, w, padding=2, algorithm="fft")
