"""The CPU path's newer code paths against gpuconv.reference's definition:
Winograd F(2x2, 3x3) (with polyphase dilation) and the flat-run depthwise
kernel, on irregular shapes, every dtype, and with chunks and slabs small
enough that every chunk boundary and the thread pool are exercised."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpuconv import _cpu, _native, cpu, cpu_grad, reference, winograd
from gpuconv.spec import make_spec
from util import assert_close, randn

CHUNKING = ["default", "tiny_chunks_threaded"]


@pytest.fixture(params=CHUNKING)
def chunking(request, monkeypatch):
    if request.param == "tiny_chunks_threaded":
        monkeypatch.setattr(winograd, "_CHUNK_ELEMS", 40)
        monkeypatch.setattr(winograd, "_TRANSFORM_SLAB_ELEMS", 10)
        monkeypatch.setattr(cpu, "_DEPTHWISE_SLAB_ELEMS", 20)
        monkeypatch.setattr(_cpu, "n_threads", lambda: 2)
        monkeypatch.setattr(cpu, "n_threads", lambda: 2)
        run = _cpu.run_jobs
        monkeypatch.setattr(cpu, "run_jobs", lambda fn, jobs, n, **kw: run(fn, jobs, n, min_elements=0))
        monkeypatch.setattr(winograd, "run_jobs", lambda fn, jobs, n: run(fn, jobs, n, min_elements=0))
    return request.param


def _winograd_case(rng, dtype):
    n = int(rng.choice([0, 1, 2, 3]))
    g = int(rng.choice([1, 1, 2, 3]))
    cg, kg = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    dil = tuple(int(v) for v in rng.integers(1, 4, 2))
    pad = tuple((int(a), int(b)) for a, b in rng.integers(0, 4, (2, 2)))
    size = tuple(int(rng.integers(max(1, 2 * d + 1 - lo - hi), 16)) for d, (lo, hi) in zip(dil, pad))
    x = randn(rng, (n, g * cg) + size, dtype)
    w = randn(rng, (g * kg, cg, 3, 3), dtype)
    spec, _ = make_spec(x.shape, w.shape, None, 1, pad, dil, g, dtype, 2)
    return x, w, spec


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_winograd_matches_definition(rng, chunking, dtype):
    """Odd sizes, batch 0/1, groups, asymmetric padding, dilation (polyphase)."""
    for _ in range(60):
        x, w, spec = _winograd_case(rng, dtype)
        dt = reference.compute_dtype(spec.dtype)
        assert winograd.usable(spec, dt)
        got = winograd.conv_winograd(x.astype(dt), w.astype(dt), spec, dt)
        want = reference.conv(x, w, None, spec, accumulate=np.complex128 if np.dtype(dtype).kind == "c"
                              else np.float64)
        assert_close(got, want.astype(dt), dt, what=f"winograd {spec}")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64])
def test_cpu_conv_through_winograd(rng, monkeypatch, chunking, dtype):
    """cpu.conv dispatching to Winograd (threshold lowered) with bias; float16
    computes in float32."""
    monkeypatch.setattr(cpu, "_WINOGRAD_MIN_CHANNELS", 1)
    for _ in range(30):
        x, w, spec = _winograd_case(rng, dtype)
        b = randn(rng, (spec.k,), dtype)
        got = cpu.conv(x, w, b, spec)
        want = reference.conv(x, w, b, spec, accumulate="complex128" if np.dtype(dtype).kind == "c"
                              else "float64")
        dt = reference.compute_dtype(spec.dtype)
        assert got.dtype == dt
        assert_close(got.astype(dtype), want.astype(dtype), dtype, what=f"cpu.conv {spec}")


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
def test_integers_stay_exact_off_winograd(rng, monkeypatch, dtype):
    """Winograd's 1/2 weights are not exact in integers: ints take the GEMM path."""
    monkeypatch.setattr(cpu, "_WINOGRAD_MIN_CHANNELS", 1)
    x = rng.integers(-50, 50, (2, 4, 9, 7)).astype(dtype)
    w = rng.integers(-50, 50, (6, 4, 3, 3)).astype(dtype)
    spec, _ = make_spec(x.shape, w.shape, None, 1, 1, 1, 1, dtype, 2)
    assert not cpu.use_winograd(spec, reference.compute_dtype(dtype))
    np.testing.assert_array_equal(cpu.conv(x, w, None, spec), reference.conv(x, w, None, spec))


def test_winograd_dispatch():
    f32 = np.dtype(np.float32)
    spec = lambda c, k, r=3, st=1, g=1: make_spec((2, c, 20, 20), (k, c // g, r, r), None, st, 1, 1, g,
                                                   f32, 2)[0]
    assert cpu.use_winograd(spec(64, 64), f32)
    assert not cpu.use_winograd(spec(32, 32), f32)          # measured slower than im2col
    assert not cpu.use_winograd(spec(64, 64, r=5), f32)
    assert not cpu.use_winograd(spec(64, 64, st=2), f32)
    assert not cpu.use_winograd(spec(128, 128, g=4), f32)   # 32 channels per group


@pytest.mark.parametrize("shape", [(1, 256, 14, 14, 256), (2, 512, 7, 7, 512), (1, 64, 57, 55, 64)])
def test_winograd_float32_accuracy_on_layer_shapes(rng, shape):
    """float32 stays within 1e-5 x max|ref| of the float64 definition on real layer widths."""
    n, c, h, wd, k = shape
    x = randn(rng, (n, c, h, wd), np.float32)
    w = randn(rng, (k, c, 3, 3), np.float32)
    spec, _ = make_spec(x.shape, w.shape, None, 1, 1, 1, 1, np.float32, 2)
    assert cpu.use_winograd(spec, np.float32)
    want = reference.conv(x, w, None, spec, accumulate="float64")
    assert_close(cpu.conv(x, w, None, spec), want.astype(np.float32), np.float32)


@pytest.fixture(params=["native_rows", "native_lanes", "numpy"])
def depthwise_impl(request, monkeypatch):
    """Each compiled depthwise forward kernel (gpuconv._native) for every shape
    (lanes: fewer than 8 groups leave lanes idle), or the NumPy passes they replace."""
    if request.param == "numpy":
        monkeypatch.setattr(_native, "kernel", lambda name, dt: None)
        return request.param
    if _native.kernel("depthwise", np.float32) is None:
        pytest.fail(f"compiled CPU kernels: {_native.status()}")
    name = {"native_rows": "depthwise", "native_lanes": "depthwise_lanes"}[request.param]
    monkeypatch.setattr(cpu, "depthwise_kernel", lambda spec: name)
    return request.param


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex128, np.int32])
def test_depthwise_matches_definition(rng, chunking, depthwise_impl, dtype):
    """groups == C: one image (broadcast weights) and several (weight tiles),
    multipliers Kg > 1, 1-D to 3-D, strides (3x3 unit-stride rows take the
    kernel's one-expression path), dilation, asymmetric padding, bias."""
    for nd in (1, 2, 3):
        for i in range(24):
            n = int(rng.choice([0, 1, 1, 2, 3]))
            g, kg = int(rng.integers(2, 6)), int(rng.choice([1, 1, 2, 3]))
            kernel = (3,) * nd if i % 3 == 0 else tuple(int(v) for v in rng.integers(1, 5, nd))
            dil = tuple(int(v) for v in rng.integers(1, 3, nd))
            stride = 1 if i % 2 else tuple(int(v) for v in rng.integers(1, 4, nd))
            pad = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, (nd, 2)))
            size = tuple(max(int(s), d * (k - 1) + 1) for s, k, d in zip(rng.integers(1, 12, nd), kernel, dil))
            if np.dtype(dtype).kind == "i":
                x = rng.integers(-100, 100, (n, g) + size).astype(dtype)
                w = rng.integers(-100, 100, (g * kg, 1) + kernel).astype(dtype)
            else:
                x = randn(rng, (n, g) + size, dtype)
                w = randn(rng, (g * kg, 1) + kernel, dtype)
            b = None
            if i % 4 == 1:
                b = (rng.integers(-9, 9, g * kg) if np.dtype(dtype).kind == "i"
                     else randn(rng, (g * kg,), dtype)).astype(dtype)
            spec, _ = make_spec(x.shape, w.shape, None if b is None else b.shape, stride, pad, dil, g,
                                dtype, nd)
            got = cpu.conv(x, w, b, spec)
            want = reference.conv(x, w, b, spec)
            if np.dtype(dtype).kind == "i":
                np.testing.assert_array_equal(got, want)
            else:
                assert_close(got, want, reference.compute_dtype(dtype), what=f"depthwise {spec}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128, np.int32])
@pytest.mark.parametrize("cols_elems", [None, 1, 3000])
def test_polyphase_im2col_matches_definition(rng, monkeypatch, dtype, cols_elems):
    """cpu._conv_im2col (polyphase shifted runs, any stride): strides up to 4 with
    and without dilation (stride 2 dilation 2 reads one phase; stride above the
    kernel extent leaves phases unread), padding wider than the input (phases
    entirely zero), groups, asymmetric padding, 1-D to 3-D, batch 0/1/odd; chunk
    sizes with a short last chunk reusing the phase buffer; integers exact."""
    if cols_elems is not None:
        monkeypatch.setattr(cpu, "_COLS_TARGET_ELEMS", cols_elems)
    monkeypatch.setattr(cpu, "_WINOGRAD_MIN_CHANNELS", 1 << 30)
    for nd in (1, 2, 3):
        for _ in range(25):
            g = int(rng.choice([1, 1, 2, 3]))
            cg, kg = int(rng.integers(2, 5)), int(rng.integers(1, 4))
            kernel = tuple(int(v) for v in rng.integers(1, 5, nd))
            dil = tuple(int(v) for v in rng.integers(1, 4, nd))
            stride = tuple(int(v) for v in rng.integers(1, 5, nd))
            pad = tuple((int(a), int(b)) for a, b in rng.integers(0, 5, (nd, 2)))
            size = tuple(max(int(s), d * (k - 1) + 1 - lo - hi, 1)
                         for s, k, d, (lo, hi) in zip(rng.integers(1, 12, nd), kernel, dil, pad))
            n = int(rng.choice([0, 1, 3, 5]))
            if np.dtype(dtype).kind == "i":
                x = rng.integers(-100, 100, (n, g * cg) + size).astype(dtype)
                w = rng.integers(-100, 100, (g * kg, cg) + kernel).astype(dtype)
            else:
                x = randn(rng, (n, g * cg) + size, dtype)
                w = randn(rng, (g * kg, cg) + kernel, dtype)
            spec, _ = make_spec(x.shape, w.shape, None, stride, pad, dil, g, dtype, nd)
            got = cpu.conv(x, w, None, spec)
            want = reference.conv(x, w, None, spec)
            if np.dtype(dtype).kind == "i":
                np.testing.assert_array_equal(got, want)
            else:
                assert_close(got, want, reference.compute_dtype(dtype), what=f"im2col {spec}")


def test_phase_geometry():
    """Stride 2 dilation 2 reads phase 0 only; 7x7 stride 2 all four phases, each
    tap a shifted run; stride 1 is the padded image itself."""
    f32 = np.float32
    geo = cpu._PhaseGeometry(make_spec((1, 3, 20, 20), (4, 3, 3, 3), None, 2, 1, 2, 1, f32, 2)[0])
    assert geo.phases == [(0, 0)]
    geo = cpu._PhaseGeometry(make_spec((1, 3, 224, 224), (64, 3, 7, 7), None, 2, 3, 1, 1, f32, 2)[0])
    assert sorted(geo.phases) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert geo.grid == (115, 115) and geo.length == 111 * 115 + 112
    assert geo.taps[8] == (geo.phases.index((1, 1)), 0)            # tap (1, 1)
    assert geo.taps[48] == (geo.phases.index((0, 0)), 3 * 115 + 3)  # tap (6, 6)
    geo = cpu._PhaseGeometry(make_spec((1, 3, 9, 7), (4, 3, 3, 3), None, 1, 1, 1, 1, f32, 2)[0])
    assert geo.phases == [(0, 0)] and geo.grid == (11, 9)


@pytest.mark.parametrize("impl", ["depthwise", "depthwise_lanes"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_native_stays_inside_its_arrays(rng, dtype, impl):
    """The compiled kernel reads only its input and weights and writes every
    output element and nothing else: the arrays sit inside NaN-filled buffers
    (an out-of-bounds read turns a result into NaN) and the output starts as
    NaN with sentinels on both sides (an unwritten element stays NaN, a stray
    write changes a sentinel)."""
    if _native.kernel("depthwise", dtype) is None:
        pytest.fail(f"compiled CPU kernels: {_native.status()}")

    def inside(shape, guard=257):
        buf = np.full(int(np.prod(shape)) + 2 * guard, np.nan, dtype=dtype)
        return buf, buf[guard:guard + int(np.prod(shape))].reshape(shape)

    for nd, kernel, stride, dil, pad in [(2, (3, 3), 1, 1, 1), (2, (3, 3), 2, 2, ((0, 2), (2, 1))),
                                         (2, (5, 2), 1, (1, 3), "same"), (1, (4,), 2, 3, 4),
                                         (3, (3, 3, 3), 1, (1, 2, 1), 1), (3, (2, 1, 3), 2, 1, 0),
                                         (2, (3, 3), (2, 3), 1, ((4, 0), (5, 2))),
                                         (2, (3, 4), (3, 2), (1, 2), ((1, 3), (0, 5)))]:
        g, kg, n = (3, 2, 2) if nd != 2 else (11, 2, 2)       # lanes: a full and a partial block
        size = (7, 9, 8)[-nd:]
        xbuf, x = inside((n, g) + size)
        wbuf, w = inside((g * kg, 1) + kernel)
        bbuf, b = inside((g * kg,))
        x[...] = randn(rng, x.shape, dtype)
        w[...] = randn(rng, w.shape, dtype)
        b[...] = randn(rng, b.shape, dtype)
        spec, _ = make_spec(x.shape, w.shape, b.shape, stride, pad, dil, g, dtype, nd)
        obuf, out = inside(spec.output_shape)
        obuf[:257] = obuf[-257:] = 12345.0
        cpu.depthwise_native(x, w, b, spec, dtype, out=out, kernel=impl)
        assert (obuf[:257] == 12345.0).all() and (obuf[-257:] == 12345.0).all(), spec
        assert_close(out, reference.conv(x, w, b, spec), dtype, what=f"depthwise native {spec}")


def test_native_switch_and_fallback(rng, monkeypatch, tmp_path):
    """GPUCONV_CPU_NATIVE=0 turns the compiled kernels off and a source that does
    not compile leaves them unavailable; either way the status says why and the
    NumPy path gives the same answer."""
    x = randn(rng, (2, 4, 9, 9), np.float32)
    w = randn(rng, (8, 1, 3, 3), np.float32)
    spec, _ = make_spec(x.shape, w.shape, None, 1, 1, 1, 4, np.float32, 2)
    want = reference.conv(x, w, None, spec, accumulate="float64").astype(np.float32)
    try:
        monkeypatch.setenv("GPUCONV_CPU_NATIVE", "0")
        _native.reset()
        assert _native.status().startswith("off") and _native.kernel("depthwise", np.float32) is None
        assert_close(cpu.conv(x, w, None, spec), want, np.float32)

        monkeypatch.delenv("GPUCONV_CPU_NATIVE")
        monkeypatch.setenv("GPUCONV_CACHE_DIR", str(tmp_path))
        bad = tmp_path / "bad.c"
        bad.write_text("int gpuconv_depthwise_f32(void) { return syntax error; }\n")
        monkeypatch.setattr(_native, "SOURCE", bad)
        _native.reset()
        assert _native.status().startswith("unavailable: build or load failed"), _native.status()
        assert "error" in _native.status()
        assert_close(cpu.conv(x, w, None, spec), want, np.float32)
    finally:
        monkeypatch.undo()
        _native.reset()
    assert _native.status().startswith("on"), _native.status()


def test_native_builds_where_a_compiler_exists():
    """A machine with a C compiler (CI's has gcc) must get the compiled kernels,
    not a silent fallback."""
    import shutil
    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler on this machine")
    assert _native.status().startswith("on"), _native.status()
    for name in ("depthwise", "depthwise_lanes", "depthwise_wgrad", "depthwise_wgrad_lanes",
                 "depthwise_dgrad", "depthwise_dgrad_lanes"):
        assert _native.kernel(name, np.float64) is not None and _native.kernel(name, np.float32) is not None
        assert _native.kernel(name, np.complex64) is None


WGRAD = {"rows": "depthwise_wgrad", "lanes": "depthwise_wgrad_lanes"}
DGRAD = {"rows": "depthwise_dgrad", "lanes": "depthwise_dgrad_lanes"}


def _depthwise_case(rng, nd, dtype):
    n, g, kg = int(rng.choice([1, 2, 3])), int(rng.choice([2, 3, 4, 8, 11])), int(rng.choice([1, 1, 2, 3]))
    kernel = tuple(int(v) for v in rng.integers(1, 5, nd))
    dil = tuple(int(v) for v in rng.integers(1, 3, nd))
    stride = tuple(int(v) for v in rng.integers(1, 4, nd))
    pad = tuple((int(a), int(b)) for a, b in rng.integers(0, 4, (nd, 2)))
    size = tuple(max(int(s), d * (k - 1) + 1) for s, k, d in zip(rng.integers(1, 12, nd), kernel, dil))
    x = randn(rng, (n, g) + size, dtype)
    w = randn(rng, (g * kg, 1) + kernel, dtype)
    spec, _ = make_spec(x.shape, w.shape, None, stride, pad, dil, g, dtype, nd)
    return x, w, randn(rng, spec.output_shape, dtype), spec


@pytest.mark.parametrize("form", ["rows", "lanes"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_adjoints_match_definition(rng, dtype, form):
    """The compiled weight and input gradients are the adjoints of the forward
    definition: <conv(x, w), dy> = <x, dgrad(dy, w)> = <w, wgrad(x, dy)> in
    float64 (1-D to 3-D, multipliers, strides, dilation, asymmetric padding);
    and they equal the NumPy paths they replace."""
    for _ in range(60):
        nd = int(rng.integers(1, 4))
        x, w, dy, spec = _depthwise_case(rng, nd, dtype)
        gw = cpu.depthwise_wgrad_native(x, dy, spec, dtype, kernel=WGRAD[form])
        gx = cpu.depthwise_dgrad_native(dy, w, spec, dtype, kernel=DGRAD[form])
        assert gw.shape == spec.weight_shape and gx.shape == spec.input_shape
        x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
        y = reference.conv(x64, w64, None, spec, accumulate="float64")
        lhs = float(np.vdot(y, dy64))
        scale = float(np.abs(y).ravel() @ np.abs(dy64).ravel()) + 1.0
        tol = 1e-5 if dtype == np.float32 else 1e-12
        assert abs(lhs - np.vdot(x64, gx)) <= tol * scale, f"input gradient {spec}"
        assert abs(lhs - np.vdot(w64, gw)) <= tol * scale, f"weight gradient {spec}"
    # against the NumPy paths, on the last cases' kind of shapes
    for _ in range(12):
        x, w, dy, spec = _depthwise_case(rng, 2, dtype)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_native, "kernel", lambda name, dt: None)
            want_w = cpu_grad.wgrad(x, dy, spec)
            want_x = cpu_grad.dgrad(dy, w, spec)
        assert_close(cpu.depthwise_wgrad_native(x, dy, spec, dtype, kernel=WGRAD[form]), want_w, dtype,
                     what=f"wgrad {spec}")
        assert_close(cpu.depthwise_dgrad_native(dy, w, spec, dtype, kernel=DGRAD[form]), want_x, dtype,
                     what=f"dgrad {spec}")


@pytest.mark.parametrize("form", ["rows", "lanes"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_adjoints_stay_inside_their_arrays(rng, dtype, form):
    """As for the forward kernel: operands inside NaN buffers, results start as
    NaN between sentinels."""
    def inside(shape, guard=129):
        buf = np.full(int(np.prod(shape)) + 2 * guard, np.nan, dtype=dtype)
        return buf, buf[guard:guard + int(np.prod(shape))].reshape(shape)

    for nd in (1, 2, 3, 2, 2):
        x0, w0, dy0, spec = _depthwise_case(rng, nd, dtype)
        (_, x), (_, w), (_, dy) = inside(x0.shape), inside(w0.shape), inside(dy0.shape)
        x[...], w[...], dy[...] = x0, w0, dy0
        for fn, args, shape, kw in [(cpu.depthwise_wgrad_native, (x, dy), spec.weight_shape,
                                     {"kernel": WGRAD[form]}),
                                    (cpu.depthwise_dgrad_native, (dy, w), spec.input_shape,
                                     {"kernel": DGRAD[form]})]:
            obuf, out = inside(shape)
            obuf[:129] = obuf[-129:] = 777.0
            fn(*args, spec, dtype, out=out, **kw)
            assert (obuf[:129] == 777.0).all() and (obuf[-129:] == 777.0).all(), (fn.__name__, spec)
            assert np.isfinite(out).all(), (fn.__name__, spec)


def test_depthwise_gradients_through_the_api_match_torch(rng):
    """conv2d_input / conv2d_weight / conv_transpose2d of depthwise layers (which
    take the compiled adjoints: strides > 1 for the input side, any stride for
    the weight side) against torch, float64; output_padding beyond the padding
    makes the forward spec's high padding negative."""
    torch = pytest.importorskip("torch")
    import gpuconv
    for stride, pad, dil, kg in [(2, 1, 1, 1), (3, 0, 2, 2), ((2, 1), (1, 2), 1, 1), (1, 1, 1, 3)]:
        x = randn(rng, (2, 4, 13, 11), np.float64)
        w = randn(rng, (4 * kg, 1, 3, 3), np.float64)
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        y = torch.nn.functional.conv2d(xt, wt, None, stride, pad, dil, 4)
        dy = randn(rng, tuple(y.shape), np.float64)
        dyt = torch.from_numpy(dy)
        assert_close(gpuconv.conv2d_input(x.shape, w, dy, stride, pad, dil, 4),
                     torch.nn.grad.conv2d_input(x.shape, wt, dyt, stride, pad, dil, 4).numpy(), np.float64)
        assert_close(gpuconv.conv2d_weight(x, w.shape, dy, stride, pad, dil, 4),
                     torch.nn.grad.conv2d_weight(xt, w.shape, dyt, stride, pad, dil, 4).numpy(), np.float64)
    xt = randn(rng, (2, 6, 5, 7), np.float64)
    wt = randn(rng, (6, 1, 3, 3), np.float64)
    for stride, pad, opad in [(2, 0, 1), (3, 1, 2), (2, 1, 0)]:
        want = torch.nn.functional.conv_transpose2d(torch.from_numpy(xt), torch.from_numpy(wt), None,
                                                    stride, pad, opad, 6).numpy()
        assert_close(gpuconv.conv_transpose2d(xt, wt, None, stride, pad, opad, 6), want, np.float64)


def test_depthwise_kernel_choice():
    """Lanes for strided layers and short rows with at least 8 groups, rows otherwise."""
    f32 = np.float32

    def pick(c, h, stride):
        return cpu.depthwise_kernel(make_spec((2, c, h, h), (c, 1, 3, 3), None, stride, 1, 1, c, f32, 2)[0])

    assert pick(960, 7, 1) == "depthwise_lanes" and pick(144, 56, 2) == "depthwise_lanes"
    assert pick(128, 56, 1) == "depthwise" and pick(192, 28, 1) == "depthwise"
    assert pick(96, 112, 2) == "depthwise"
    assert pick(4, 7, 1) == "depthwise" and pick(4, 56, 2) == "depthwise"


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_thread_pool_survives_fork(rng):
    """A process forked after the pool started (a DataLoader worker, say) runs
    threaded CPU work in a pool of its own instead of waiting on threads it did
    not inherit."""
    import os
    import signal
    x = randn(rng, (4, 64, 40, 40), np.float32)
    w = randn(rng, (64, 1, 3, 3), np.float32)
    spec, _ = make_spec(x.shape, w.shape, None, 1, 1, 1, 64, np.float32, 2)
    want = cpu.conv(x, w, None, spec)                 # starts the pool in this process
    pid = os.fork()
    if pid == 0:                                      # the child: exit code says it all
        signal.alarm(60)
        try:
            ok = np.array_equal(cpu.conv(x, w, None, spec), want)
            ok = ok and (_cpu.n_threads() == 1 or _cpu._pool is not None)   # threaded, new pool
        except BaseException:                         # noqa: BLE001
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


_ASAN_SCRIPT = r"""
import numpy as np
from gpuconv import _native, cpu, reference
from gpuconv.spec import make_spec
assert "AddressSanitizer" in _native.status(), _native.status()
rng = np.random.default_rng(int(__import__("sys").argv[1]))
for dtype in (np.float32, np.float64):
    for i in range(40):
        nd = 1 + i % 3
        n, g, kg = int(rng.integers(1, 3)), int(rng.choice([2, 5, 8, 11])), int(rng.integers(1, 3))
        kernel = tuple(int(v) for v in rng.integers(1, 4, nd))
        dil = tuple(int(v) for v in rng.integers(1, 3, nd))
        stride = tuple(int(v) for v in rng.integers(1, 4, nd))
        pad = tuple((int(a), int(b)) for a, b in rng.integers(0, 4, (nd, 2)))
        size = tuple(max(int(s), d * (k - 1) + 1) for s, k, d in zip(rng.integers(1, 10, nd), kernel, dil))
        x = rng.standard_normal((n, g) + size).astype(dtype)
        w = rng.standard_normal((g * kg, 1) + kernel).astype(dtype)
        b = rng.standard_normal(g * kg).astype(dtype)
        spec, _ = make_spec(x.shape, w.shape, b.shape, stride, pad, dil, g, dtype, nd)
        dy = rng.standard_normal(spec.output_shape).astype(dtype)
        want = reference.conv(x, w, b, spec, accumulate="float64")
        tol = 1e-4 if dtype == np.float32 else 1e-10
        for form in ("", "_lanes"):
            y = cpu.depthwise_native(x, w, b, spec, dtype, kernel="depthwise" + form)
            assert np.abs(y - want).max() <= tol * (1 + np.abs(want).max()), spec
            cpu.depthwise_wgrad_native(x, dy, spec, dtype, kernel="depthwise_wgrad" + form)
            cpu.depthwise_dgrad_native(dy, w, spec, dtype, kernel="depthwise_dgrad" + form)
print("asan ok")
"""


def test_native_kernels_under_address_sanitizer(rng, tmp_path):
    """Every compiled kernel, both forms, float32 and float64, on irregular 1-D
    to 3-D shapes (partial lane blocks, strides, dilation, asymmetric padding),
    built with AddressSanitizer (GPUCONV_CPU_NATIVE=asan) and run in a child
    process with libasan preloaded: an access past any array, the kernels'
    own scratch buffers included, fails it."""
    import os
    import shutil
    import subprocess
    import sys
    gcc = shutil.which("gcc")
    libasan = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True, text=True,
                             check=False).stdout.strip() if gcc else ""
    if not os.path.isabs(libasan) or not os.path.exists(libasan):
        pytest.skip("no gcc with libasan on this machine")
    env = dict(os.environ, GPUCONV_CPU_NATIVE="asan", GPUCONV_CACHE_DIR=str(tmp_path), CC=gcc,
               LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _ASAN_SCRIPT, str(int(rng.integers(1 << 30)))],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and "asan ok" in proc.stdout, (proc.stdout[-2000:], proc.stderr[-4000:])
