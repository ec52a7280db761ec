"""Every registered conv variant and the signal core, on every available backend
(the CPU simulator: -m sim; a GPU: -m gpu), against the float64 NumPy reference.

Outputs are poisoned with NaN before the kernels run, so an element a kernel
does not write fails; inputs are fresh random data (never zeros); shapes are
deliberately irregular (odd sizes, C and K not multiples of any tile).
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from gpuconv import activations, reference
from gpuconv.cuda import conv, variants
from gpuconv.cuda import signal as csignal
from gpuconv.spec import make_spec

from kernel_helpers import TOL, assert_close, backend_params, gpu_available, make_backend, to_host

BACKENDS = backend_params()
VARIANTS = variants.conv_variant_names()
REAL = ("float32", "float16", "float64")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return make_backend(request.param)


def _rand(rng, shape, dtype):
    dt = np.dtype(dtype)
    a = rng.uniform(-1.0, 1.0, size=shape)
    if dt.kind == "c":
        a = a + 1j * rng.uniform(-1.0, 1.0, size=shape)
    return a.astype(dt)


# (id, input shape, weight shape, stride, padding, dilation, groups, bias, activation)
CASES = [
    ("3x3_odd", (2, 3, 11, 13), (5, 3, 3, 3), 1, 1, 1, 1, True, None),
    ("7x7_s2", (1, 3, 19, 17), (6, 3, 7, 7), 2, 3, 1, 1, True, "relu"),
    ("dil2_pad4sided", (2, 4, 9, 12), (3, 4, 3, 2), 1, ((1, 2), (0, 3)), 2, 1, False, "gelu"),
    ("groups2", (1, 4, 8, 9), (6, 2, 3, 3), 1, 1, 1, 2, True, "silu"),
    ("depthwise_mult2", (2, 3, 10, 7), (6, 1, 3, 3), 2, 1, 1, 3, True, "relu6"),
    ("pointwise", (2, 5, 9, 10), (7, 5, 1, 1), 1, 0, 1, 1, True, "relu"),
    ("pointwise_groups", (1, 6, 5, 7), (4, 3, 1, 1), 1, 0, 1, 2, False, None),
    ("1x1_s2", (2, 5, 9, 10), (4, 5, 1, 1), 2, 0, 1, 1, False, None),
    ("batch0", (0, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1, 1, True, None),
    ("C37_K40", (1, 37, 6, 9), (40, 37, 3, 3), 1, 1, 1, 1, True, "gelu"),
    ("same_even_4x4", (1, 2, 7, 8), (3, 2, 4, 4), 1, "same", 1, 1, True, None),
    ("s3_d3", (1, 2, 17, 16), (3, 2, 2, 3), 3, 2, 3, 1, False, "relu"),
    ("multi_tile", (1, 2, 20, 35), (3, 2, 3, 3), 1, 1, 1, 1, True, None),
    ("kernel_eq_input", (2, 3, 4, 5), (2, 3, 4, 5), 1, 0, 1, 1, True, None),
    ("pad_exceeds_kernel", (1, 2, 3, 3), (2, 2, 2, 2), 1, 3, 1, 1, True, None),
]


def _run_case(backend, variant, case, dtype, nd=2):
    _, xs, ws, stride, padding, dilation, groups, has_bias, act = case
    dt = np.dtype(dtype)
    spec, _ = make_spec(xs, ws, (ws[0],) if has_bias else None, stride, padding, dilation, groups,
                        dt, nd)
    ok, why = variants.get(variant).supports(spec)
    if not ok:
        pytest.skip(f"{variant} refuses: {why}")
    rng = np.random.default_rng(zlib.crc32(f"{case[0]}/{variant}/{np.dtype(dtype)}".encode()))  # replayable
    x = _rand(rng, xs, dt)
    w = _rand(rng, ws, dt)
    b = _rand(rng, (ws[0],), dt) if has_bias else None
    ref = reference.conv(x, w, b, spec, accumulate="float64")
    ref = activations.apply(ref, act)
    xp = backend.xp
    out = xp.full(spec.output_shape, np.nan, dtype=dt)
    res = conv.forward(xp.asarray(x), xp.asarray(w), None if b is None else xp.asarray(b), spec,
                       activation=act, algorithm=variant, backend=backend, out=out)
    assert res is out
    assert_close(res, ref, TOL[dt], f"{variant} {case[0]} {dtype} act={act}")


@pytest.mark.parametrize("dtype", REAL)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("variant", VARIANTS)
def test_conv2d_variant(backend, variant, case, dtype):
    _run_case(backend, variant, case, dtype)


@pytest.mark.parametrize("act", ["relu", "relu6", "silu", "gelu"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_activations(backend, variant, act):
    # large-magnitude inputs reach every branch (relu6's 6, silu's exp overflow side)
    case = ("acts", (1, 4, 6, 7), (5, 4, 3, 3), 1, 1, 1, 1, True, act)
    _run_case(backend, variant, case, "float32")


CASES_1D = [
    ("1d_basic", (2, 3, 17), (4, 3, 3), 1, 1, 1, 1, True, "relu"),
    ("1d_s2_d2_groups", (1, 4, 23), (6, 2, 5), 2, ((3, 1),), 2, 2, False, None),
]
CASES_3D = [
    ("3d_basic", (1, 2, 5, 6, 7), (3, 2, 3, 3, 3), 1, 1, 1, 1, True, "silu"),
    ("3d_s2_d2_groups", (2, 4, 7, 6, 5), (4, 2, 2, 3, 2), (2, 1, 2), ((1, 0), (2, 2), (0, 1)),
     (1, 2, 1), 2, True, None),
    ("3d_pointwise", (2, 3, 3, 4, 5), (4, 3, 1, 1, 1), 1, 0, 1, 1, True, None),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES_1D + CASES_3D, ids=[c[0] for c in CASES_1D + CASES_3D])
@pytest.mark.parametrize("variant", VARIANTS)
def test_conv_1d_3d(backend, variant, case, dtype):
    _run_case(backend, variant, case, dtype, nd=len(case[2]) - 2)


def test_direct_supports_1d_3d():
    for case in CASES_1D + CASES_3D:
        _, xs, ws, stride, padding, dilation, groups, has_bias, _ = case
        spec, _ = make_spec(xs, ws, None, stride, padding, dilation, groups, np.float32, len(ws) - 2)
        assert variants.get("direct").supports(spec)[0]


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3], CASES[5]], ids=lambda c: c[0])
def test_complex_im2col(backend, case, dtype):
    case = case[:-1] + (None,)
    _run_case(backend, "im2col", case, dtype)


def test_im2col_64bit_offsets_and_row_splits(backend, monkeypatch):
    """The long long in-plane offset instantiation (the launcher takes it when one channel's
    D*H*W passes 2^31) and rows split over many grid rows (2 rows per thread) give the same
    results as the default on 2-D and 3-D cases."""
    from gpuconv.cuda.families import im2col as fam
    monkeypatch.setattr(fam, "index_type", lambda spec: "long long")
    monkeypatch.setattr(fam, "MIN_ROWS", 2)
    monkeypatch.setattr(fam, "TARGET_THREADS", 64)
    for case, nd in ((CASES[2], 2), (CASES[11], 2), (CASES_3D[1], 3)):
        _run_case(backend, "im2col", case, "float32", nd)


def test_im2col_chunks_and_oom_fallback(backend):
    """A batch larger than the chunk (partial last chunk), and a workspace that
    cannot be allocated at the configured chunk: the launcher halves it."""
    dt = np.dtype(np.float32)
    spec, _ = make_spec((5, 3, 7, 6), (4, 3, 3, 3), (4,), 1, 1, 1, 1, dt, 2)
    rng = np.random.default_rng(7)
    x, w, b = _rand(rng, spec.input_shape, dt), _rand(rng, spec.weight_shape, dt), _rand(rng, (4,), dt)
    ref = reference.conv(x, w, b, spec, accumulate="float64")
    xp = backend.xp
    v = variants.get("im2col")

    out = xp.full(spec.output_shape, np.nan, dtype=dt)
    v.launch(backend, xp.asarray(x), xp.asarray(w), xp.asarray(b), out, spec, 0, {"chunk": 2})
    assert_close(out, ref, TOL[dt], "im2col chunk=2 of N=5")

    per_image = v.workspace_bytes(spec, {"chunk": 1})
    allocs = []

    class TightXp:
        """backend.xp that refuses any workspace larger than two images."""
        def __getattr__(self, name):
            return getattr(xp, name)

        def empty(self, shape, dtype=None):
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            allocs.append(n)
            if n > 2 * per_image:
                raise MemoryError(f"test: {n} B refused")
            return xp.empty(shape, dtype=dtype)

    class TightBackend:
        name = backend.name
        xp = TightXp()
        get_function = staticmethod(backend.get_function)

    out = xp.full(spec.output_shape, np.nan, dtype=dt)
    v.launch(TightBackend(), xp.asarray(x), xp.asarray(w), xp.asarray(b), out, spec, 0, {"chunk": 5})
    assert_close(out, ref, TOL[dt], "im2col after out-of-memory fallback")
    assert any(n > 2 * per_image for n in allocs), "the fallback was not exercised"


def test_noncontiguous_inputs(backend):
    dt = np.dtype(np.float32)
    spec, _ = make_spec((2, 3, 9, 8), (4, 3, 3, 3), (4,), 1, 1, 1, 1, dt, 2)
    rng = np.random.default_rng(3)
    xbig = _rand(rng, (2, 3, 9, 16), dt)
    wbig = _rand(rng, (3, 3, 4, 3), dt)
    x = xbig[..., ::2]                       # strided
    w = wbig.transpose(2, 0, 1, 3)           # transposed (4, 3, 3, 3)
    bbig = _rand(rng, (8,), dt)
    b = bbig[::2]
    ref = reference.conv(x, w, b, spec, accumulate="float64")
    xp = backend.xp
    for variant in variants.supported(spec):         # variants that refuse float32 are skipped
        out = xp.full(spec.output_shape, np.nan, dtype=dt)
        conv.forward(xp.asarray(xbig)[..., ::2], xp.asarray(wbig).transpose(2, 0, 1, 3),
                     xp.asarray(bbig)[::2], spec, algorithm=variant, backend=backend, out=out)
        assert_close(out, ref, TOL[dt], f"{variant} non-contiguous")


def test_public_api_end_to_end(backend, monkeypatch):
    """gpuconv.api.conv_forward (torch semantics, padding modes, unbatched input)
    with each variant, outputs poisoned."""
    torch = pytest.importorskip("torch", reason="torch (the [torch] extra) is this test's oracle")
    F = torch.nn.functional

    import gpuconv
    from gpuconv.api import conv_forward

    monkeypatch.setattr(conv, "POISON_OUTPUT", True)
    # the variants that take this geometry and dtype (padding modes only change H and W)
    supporting = variants.supported(make_spec((2, 4, 9, 11), (6, 2, 3, 3), (6,), (1, 2), (2, 1), 1, 2,
                                              np.float32, 2)[0])
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 9, 11)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    for padding_mode in ("zeros", "reflect", "circular"):
        tx = torch.from_numpy(x)
        if padding_mode != "zeros":
            tx = F.pad(tx, (1, 1, 2, 2), mode=padding_mode)
            tpad = 0
        else:
            tpad = (2, 1)
        ref = F.conv2d(tx.double(), torch.from_numpy(w).double(), torch.from_numpy(b).double(),
                       stride=(1, 2), padding=tpad, groups=2)
        ref = F.silu(ref).numpy()
        for variant in supporting:
            with gpuconv.use_backend(backend):
                out = conv_forward(2, "conv2d", backend.xp.asarray(x), backend.xp.asarray(w),
                                   backend.xp.asarray(b), (1, 2), (2, 1), 1, 2, padding_mode, "silu",
                                   algorithm=variant)
            assert_close(out, ref, 1e-5, f"api {variant} padding_mode={padding_mode}")
    # unbatched
    with gpuconv.use_backend(backend):
        out = conv_forward(2, "conv2d", backend.xp.asarray(x[0]), backend.xp.asarray(w), None, 1, 1, 1, 2,
                           "zeros", None, algorithm="auto")
    ref = F.conv2d(torch.from_numpy(x[:1]).double(), torch.from_numpy(w).double(), padding=1, groups=2)
    assert_close(out, ref.numpy()[0], 1e-5, "api unbatched auto")


def test_algorithm_errors(backend):
    dt = np.dtype(np.complex64)
    spec, _ = make_spec((1, 2, 5, 5), (3, 2, 3, 3), None, 1, 0, 1, 1, dt, 2)
    xp = backend.xp
    x = xp.asarray(np.ones(spec.input_shape, dt))
    w = xp.asarray(np.ones(spec.weight_shape, dt))
    with pytest.raises(ValueError, match="im2col"):
        conv.forward(x, w, None, spec, algorithm="direct", backend=backend)
    with pytest.raises(ValueError, match="unknown algorithm 'winograd'.*im2col"):
        conv.forward(x, w, None, spec, algorithm="winograd", backend=backend)
    with pytest.raises(ValueError, match="shape"):
        conv.forward(x[:, :1], w, None, spec, algorithm="im2col", backend=backend)


def test_batch0_no_launch():
    """Zero-size batch: an empty output and no kernel launched (no backend call at all)."""
    class NoLaunch:
        name = "none"
        xp = np

        def get_function(self, *a):
            raise AssertionError("a kernel was requested for an empty output")

    spec, _ = make_spec((0, 3, 8, 8), (4, 3, 3, 3), None, 1, 1, 1, 1, np.float32, 2)
    for variant in variants.supported(spec):
        y = conv.forward(np.ones(spec.input_shape, np.float32), np.ones(spec.weight_shape, np.float32),
                         None, spec, algorithm=variant, backend=NoLaunch())
        assert y.shape == (0, 4, 8, 8)


# ---------------------------------------------------------------- signal core

def ref_correlate_core(a, k, out_shape, origin, boundary, fillvalue):
    M, N = a.shape
    kh, kw = k.shape
    OM, ON = out_shape
    ii = np.arange(origin[0], origin[0] + OM + kh - 1)
    jj = np.arange(origin[1], origin[1] + ON + kw - 1)

    def ext_idx(t, n):
        if boundary == "wrap":
            return t % n
        m = t % (2 * n)
        return np.where(m >= n, 2 * n - 1 - m, m)

    if a.dtype.kind in "iu":
        wide = np.int64
    elif a.dtype.kind == "c":
        wide = np.complex128
    else:
        wide = np.float64
    if boundary == "fill":
        ext = np.full((len(ii), len(jj)), fillvalue, dtype=a.dtype).astype(wide)
        vi = (ii >= 0) & (ii < M)
        vj = (jj >= 0) & (jj < N)
        ext[np.ix_(vi, vj)] = a[np.ix_(ii[vi], jj[vj])]
    else:
        ext = a[np.ix_(ext_idx(ii, M), ext_idx(jj, N))].astype(wide)
    kk = k.astype(wide)
    out = np.zeros((OM, ON), dtype=wide)
    with np.errstate(over="ignore"):
        for r in range(kh):
            for s in range(kw):
                out += ext[r:r + OM, s:s + ON] * kk[r, s]
    return out.astype(a.dtype) if a.dtype.kind in "iu" else out


def _signal_data(rng, shape, dtype):
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        return rng.integers(-2**20, 2**20, size=shape).astype(dt)   # products overflow int32: wraps
    return _rand(rng, shape, dt)


# (M, N), (kh, kw), out_shape, origin
SIGNAL_GEOMS = [
    ((13, 17), (3, 5), (11, 13), (0, 0)),          # valid
    ((13, 17), (3, 5), (15, 21), (-2, -4)),        # full
    ((13, 17), (4, 2), (13, 17), (-2, 0)),         # same, even kernel
    ((7, 5), (3, 3), (40, 9), (-17, 23)),          # far outside: several periods of wrap/symm
    ((37, 40), (1, 1), (37, 40), (0, 0)),          # 1x1, two tiles each way
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128", "int32", "int64"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
def test_signal_core(backend, boundary, dtype, monkeypatch):
    monkeypatch.setattr(csignal, "POISON_OUTPUT", True)
    rng = np.random.default_rng(5)
    dt = np.dtype(dtype)
    xp = backend.xp
    for (M, N), (kh, kw), out_shape, origin in SIGNAL_GEOMS:
        a = _signal_data(rng, (M, N), dt)
        k = _signal_data(rng, (kh, kw), dt)
        fill = dt.type(3) if dt.kind != "c" else dt.type(2 - 1j)
        ref = ref_correlate_core(a, k, out_shape, origin, boundary, fill)
        out = csignal.correlate_core(xp.asarray(a), xp.asarray(k), out_shape, origin, boundary, fill,
                                     backend=backend)
        what = f"signal {boundary} {dtype} a{(M, N)} k{(kh, kw)} out{out_shape} origin{origin}"
        if dt.kind in "iu":
            o = to_host(out)
            assert o.dtype == dt, what
            bad = np.argwhere(o != ref)
            assert bad.size == 0, f"{what}: first mismatch at {tuple(bad[0])}: {o[tuple(bad[0])]} != {ref[tuple(bad[0])]}"
        else:
            assert_close(out, ref, TOL[dt], what)


@pytest.mark.parametrize("boundary", ["fill", "symm"])
def test_signal_core_large_filter_direct_kernel(backend, boundary):
    """A filter too large for the shared-memory tile runs on the direct kernel."""
    dt = np.dtype(np.float64)
    kh, kw = 45, 44
    assert csignal.choose_kernel(kh, kw, dt) == "correlate2d_direct"
    rng = np.random.default_rng(9)
    a = _rand(rng, (30, 33), dt)
    k = _rand(rng, (kh, kw), dt)
    out_shape, origin = (9, 7), (-20, -3)
    ref = ref_correlate_core(a, k, out_shape, origin, boundary, 0.5)
    out = csignal.correlate_core(backend.xp.asarray(a), backend.xp.asarray(k), out_shape, origin, boundary,
                                 0.5, backend=backend)
    assert_close(out, ref, TOL[dt], f"signal direct {boundary}")


@pytest.mark.parametrize("dtype", ["int8", "uint16", "uint64"])
def test_signal_core_other_integers(backend, dtype):
    """Integers without a kernel of their own run widened and wrap like NumPy."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(2)
    info = np.iinfo(dt)
    a = rng.integers(info.min, info.max, size=(9, 11), dtype=dt, endpoint=True)
    k = rng.integers(info.min, info.max, size=(3, 4), dtype=dt, endpoint=True)
    ref = ref_correlate_core(a, k, (11, 14), (-1, -3), "wrap", dt.type(5))
    out = csignal.correlate_core(backend.xp.asarray(a), backend.xp.asarray(k), (11, 14), (-1, -3), "wrap",
                                 dt.type(5), backend=backend)
    o = to_host(out)
    assert o.dtype == dt
    bad = np.argwhere(o != ref)
    assert bad.size == 0, f"{dtype}: first mismatch at {tuple(bad[0])}"


def test_signal_core_empty_image_fill(backend):
    dt = np.dtype(np.float64)
    a = np.zeros((0, 5), dt)
    k = np.arange(6, dtype=dt).reshape(2, 3) + 1
    out = csignal.correlate_core(backend.xp.asarray(a), backend.xp.asarray(k), (3, 4), (-1, -2), "fill", 2.0,
                                 backend=backend)
    assert_close(out, np.full((3, 4), 2.0 * k.sum()), 1e-12, "empty image, fill")


@pytest.mark.gpu
def test_runs_on_the_inputs_device_and_torch_stream():
    """Output on the input's GPU even when another device is current; torch CUDA tensors
    in and out, zero-copy, ordered on torch's current stream."""
    if not gpu_available():
        pytest.skip("no CUDA device / CuPy")
    import cupy
    import gpuconv
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    want = reference.conv(x, w, None, make_spec(x.shape, w.shape, None, 1, 1, 1, 1, np.float32, 2)[0],
                          accumulate="float64")
    last = cupy.cuda.runtime.getDeviceCount() - 1
    with cupy.cuda.Device(last):
        xd, wd = cupy.asarray(x), cupy.asarray(w)
    with cupy.cuda.Device(0):
        y = gpuconv.conv2d(xd, wd, padding=1)
    assert y.device.id == last
    assert_close(y, want, TOL[np.dtype(np.float32)], "device of the input")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        xt = torch.from_numpy(x).cuda()
        yt = gpuconv.conv2d(xt, torch.from_numpy(w).cuda(), padding=1)
    assert isinstance(yt, torch.Tensor) and yt.is_cuda
    s.synchronize()
    assert_close(yt.cpu().numpy(), want, TOL[np.dtype(np.float32)], "torch stream")
