"""The dispatcher and the registry, on the CPU (no GPU, no simulator needed)."""
from __future__ import annotations

import itertools
import re
from dataclasses import replace

import numpy as np
import pytest

import gpuconv.cuda as gcuda
from gpuconv._paths import kernels_dir
from gpuconv.cuda import dispatch, families, launch, variants
from gpuconv.cuda.facts import DeviceFacts
from gpuconv.cuda.families import conv2d_direct, conv2d_tiled_smem, im2col
from gpuconv.cuda.families.conv2d_tiled_smem import TILES
from gpuconv.cuda.launch import SMEM_LIMIT
from gpuconv.spec import PADDING_MODES, make_spec


def spec2d(x, w, stride=1, padding=0, dilation=1, groups=1, dtype=np.float32):
    return make_spec(x, w, None, stride, padding, dilation, groups, np.dtype(dtype), len(w) - 2)[0]


def test_registry_names_stable_and_complete():
    names = variants.conv_variant_names()
    assert names[:4] == ("direct", "tiled_smem", "tiled_smem_small", "im2col")   # later ones append
    assert "implicit_gemm" in names
    for n in names:
        v = variants.get(n)
        assert v.name == n and v.module in variants.MODULES and v.instantiations
    with pytest.raises(ValueError, match="registered variants: direct, tiled_smem"):
        variants.get("winograd")


def test_instantiation_names_unique_and_cover_launchers():
    for mod, exprs in variants.MODULES.items():
        assert len(set(exprs)) == len(exprs), mod
    for dt in (np.float16, np.float32, np.float64):
        for a in range(5):
            assert conv2d_direct.kernel_name(dt, a) in variants.MODULES[conv2d_direct.MODULE]
            assert im2col.col2out_name(dt, a) in variants.MODULES[im2col.MODULE]
            for t in TILES.values():
                assert conv2d_tiled_smem.kernel_name(t, dt, a) in variants.MODULES[conv2d_tiled_smem.MODULE]


def test_family_modules_match_kernel_files():
    """One family module per kernels_cu/*.cu, named after it (a .cu that includes another
    family's template belongs to that family); MODULES lists every .cu file."""
    cu = {p.name for p in kernels_dir().glob("*.cu")}
    assert set(variants.MODULES) == cu
    for fam in families.FAMILIES:
        assert fam.__name__.rsplit(".", 1)[1] + ".cu" in fam.SOURCES, fam.__name__
    assert [v.name for v in families.VARIANTS] == list(variants.conv_variant_names())


def _macro_params(text: str, name: str) -> list[str]:
    m = re.search(rf"#define {name}\b((?:.*\\\n)*.*)", text)
    assert m, name
    body = m.group(1).replace("\\\n", " ")
    return [p.split()[-1] for p in body.split(",")]


def test_geometry_order_matches_the_cuda_parameter_list():
    """geometry_args produces CONV_GEOMETRY_PARAMS's values in its order, from view3d."""
    common = (kernels_dir() / "common.cuh").read_text()
    assert _macro_params(common, "CONV_GEOMETRY_PARAMS") == list(launch.GEOMETRY_FIELDS)
    assert _macro_params(common, "CONV_GEOMETRY_ARGS") == list(launch.GEOMETRY_FIELDS)
    # every value lands in its named slot: distinct sizes, 2-D and 1-D as 3-D
    sp = make_spec((2, 9, 40, 31), (6, 3, 4, 5), None, (2, 3), ((1, 4), (3, 0)), (3, 2), 3,
                   np.float32, 2)[0]
    g = dict(zip(launch.GEOMETRY_FIELDS, (int(a) for a in launch.geometry_args(sp))))
    assert g == dict(N=2, C=9, D=1, H=40, W=31, K=6, KD=1, R=4, S=5, OD=1, P=sp.out_size[0],
                     Q=sp.out_size[1], sd=1, sh=2, sw=3, pd=0, ph=1, pw=3, dd=1, dh=3, dw=2, groups=3,
                     pmode=0)
    assert all(type(a) is np.int32 for a in launch.geometry_args(sp))
    for code, mode in enumerate(PADDING_MODES):
        assert launch.geometry(replace(sp, padding_mode=mode)).pmode == code
    s1 = make_spec((1, 2, 17), (4, 2, 3), None, 2, 1, 2, 1, np.float32, 1)[0]
    g1 = launch.geometry(s1)
    assert (g1.D, g1.H, g1.W, g1.KD, g1.R, g1.S, g1.sh, g1.sw, g1.ph, g1.pw, g1.dh, g1.dw) == \
        (1, 1, 17, 1, 1, 3, 1, 2, 0, 1, 1, 2)
    with pytest.raises(ValueError, match="N=2147483648"):
        launch.geometry_args(make_spec((2**31, 1, 4, 4), (1, 1, 3, 3), None, 1, 0, 1, 1, np.float32, 2)[0])


def test_no_kernel_spells_the_geometry_by_hand():
    """Every conv kernel takes the geometry through CONV_GEOMETRY_PARAMS: no .cu file
    declares a padding parameter of its own."""
    for path in kernels_dir().glob("*.cu"):
        text = path.read_text()
        assert not re.search(r"\bint\s+ph\s*,\s*int\s+pw\b", text), path.name


# ResNet-50 / VGG / MobileNetV2 style layers and the expected family
LAYERS = [
    ("resnet 3x3 C=K=256 14x14 N=32", spec2d((32, 256, 14, 14), (256, 256, 3, 3), padding=1), "im2col"),
    ("resnet 1x1 C=64 K=256 56x56", spec2d((8, 64, 56, 56), (256, 64, 1, 1)), "im2col"),
    ("mobilenet depthwise 3x3", spec2d((8, 32, 112, 112), (32, 1, 3, 3), padding=1, groups=32), "depthwise"),
    ("depthwise mult 2 5x5", spec2d((8, 32, 56, 56), (64, 1, 5, 5), padding=2, groups=32), "depthwise"),
    ("3x3 C=K=64 56x56", spec2d((8, 64, 56, 56), (64, 64, 3, 3), padding=1), "tiled_smem"),
    ("3x3 C=K=128 28x28: knee 115 < 139", spec2d((8, 128, 28, 28), (128, 128, 3, 3), padding=1), "tiled_smem"),
    ("1x1 s2 downsample C=256 K=512", spec2d((8, 256, 28, 28), (512, 256, 1, 1), stride=2), "im2col"),
    ("3x3 C=K=64 7x7 N=8", spec2d((8, 64, 7, 7), (64, 64, 3, 3), padding=1), "tiled_smem_small"),
    ("tiny batch-1 layer", spec2d((1, 8, 8, 8), (8, 8, 3, 3), padding=1), "direct"),
    ("fp16 resnet 3x3", spec2d((32, 64, 56, 56), (64, 64, 3, 3), padding=1, dtype=np.float16), "implicit_gemm"),
    ("fp16 first layer 7x7 s2", spec2d((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3, dtype=np.float16),
     "implicit_gemm"),
    ("fp16 pointwise stays on cuBLAS", spec2d((8, 64, 56, 56), (256, 64, 1, 1), dtype=np.float16), "im2col"),
    ("fp16 Kg=16 < IGEMM_MIN_KG", spec2d((8, 64, 56, 56), (16, 64, 3, 3), padding=1, dtype=np.float16), "im2col"),
    ("fp64 3x3", spec2d((8, 64, 56, 56), (64, 64, 3, 3), padding=1, dtype=np.float64), "im2col"),
    ("complex", spec2d((2, 3, 17, 17), (5, 3, 3, 3), dtype=np.complex64), "im2col"),
    ("3-D large", spec2d((2, 64, 16, 28, 28), (64, 64, 3, 3, 3), padding=1), "im2col"),
    ("3-D small", spec2d((1, 2, 5, 6, 7), (3, 2, 3, 3, 3)), "direct"),
    ("1-D", spec2d((4, 64, 1000), (64, 64, 5), padding=2), "tiled_smem_small"),
    ("huge dilation: no tile fits", spec2d((1, 64, 600, 600), (64, 64, 3, 3), dilation=250), "direct"),
]


@pytest.mark.parametrize("label,spec,expected", LAYERS, ids=[l[0] for l in LAYERS])
def test_choose_layers(label, spec, expected):
    name, config, reasons = dispatch.choose(spec, DeviceFacts())
    assert name == expected, (label, name, reasons)
    assert variants.get(name).supports(spec)[0]
    assert reasons and all(isinstance(r, str) for r in reasons)


def test_im2col_knee_napkin_math():
    """IM2COL_KNEE is 8*67e12 / (2*(1/0.55 - 1/0.85)*BW) at an H100's 3.0 TB/s (an estimate,
    MEASURE); the rule is symmetric in Kg and inner and needs both large."""
    knee = 8 * 67e12 / (2 * (1 / 0.55 - 1 / 0.85) * 3.0e12)
    assert abs(dispatch.IM2COL_KNEE - knee) < 1.5
    assert dispatch.im2col_amortised(256, 2304) and not dispatch.im2col_amortised(128, 1152)
    assert dispatch.im2col_amortised(512, 256) == dispatch.im2col_amortised(256, 512)
    assert not dispatch.im2col_amortised(10_000, 100) and not dispatch.im2col_amortised(100, 10_000)
    assert dispatch.im2col_amortised(2 * 139, 2 * 139) and not dispatch.im2col_amortised(2 * 139 - 1, 2 * 139 - 1)


def test_depthwise_tile_cost_model():
    """The depthwise tile is the one of fewer estimated instructions per output (MEASURE):
    the 8x8 tile on the 7x7/14x14/56x56 maps that it divides, the 16x32 tile on a 64x128
    map (1.20 staged inputs per output against 1.56), ties to the large tile; the data
    gradient is costed on the input map at stride 1; the routing predicates agree."""
    from gpuconv.cuda.families import conv2d_depthwise as dw, conv2d_depthwise_wgrad as dww
    dws = lambda hw, s=1: spec2d((32, 144, hw, hw), (144, 1, 3, 3), stride=s, padding=1, groups=144)
    for hw in (7, 14, 56):
        assert dw.config(dws(hw))["tile"] == "small"
    big = spec2d((2, 16, 64, 128), (16, 1, 3, 3), padding=1, groups=16)
    assert dw.config(big)["tile"] == "large"
    assert dw.tile_cost("large", big) < dw.tile_cost("small", big)
    assert abs(dw.tile_cost("small", dws(56)) - (dw.INSTR_PER_SLOT + dw.INSTR_PER_STAGED * 100 / 64)) < 1e-9
    s2 = dws(56, 2)
    assert dw.tile_cost("small", s2, dgrad=True) == dw.tile_cost("small", dws(56))
    assert dw.dgrad_supports(s2)[0] and dww.supports(s2)[0]
    dense = spec2d((2, 8, 9, 9), (8, 8, 3, 3), padding=1)
    assert not dw.dgrad_supports(dense)[0] and not dww.supports(dense)[0]


def test_choose_is_pure_and_always_supported():
    """Deterministic, and never picks a variant that refuses the spec, over a grid of shapes."""
    facts = DeviceFacts()
    grid = itertools.product((1, 3), (1, 4, 33), (1, 8, 96), (1, 3, 7), (1, 2), (1, 2), (1, "g"),
                             ("float16", "float32", "float64", "complex128"))
    n = 0
    for N, C, K, R, s, d, g, dt in grid:
        groups = C if g == "g" and K % C == 0 else 1
        H = 2 * (d * (R - 1) + 1) + 3
        sp = spec2d((N, C, H, H + 2), (K, C // groups, R, R), stride=s, padding=R // 2, dilation=d,
                    groups=groups, dtype=dt)
        a = dispatch.choose(sp, facts)
        b = dispatch.choose(sp, facts)
        assert a == b
        assert variants.get(a[0]).supports(sp)[0], (sp, a)
        n += 1
    assert n > 500


def test_tiled_config_fits_shared_memory():
    for R, dil, s in ((3, 1, 1), (7, 1, 2), (11, 3, 1), (5, 5, 3)):
        sp = spec2d((1, 64, 200, 200), (32, 64, R, R), stride=s, dilation=dil)
        for name, tile in TILES.items():
            ok, _ = variants.get(name).supports(sp)
            if ok:
                cfg = variants.get(name).default_config(sp, DeviceFacts())
                assert 1 <= cfg["ct"] <= 16
                assert conv2d_tiled_smem.smem_bytes(tile, sp, cfg["ct"]) <= SMEM_LIMIT


def test_im2col_chunk_bounded_by_free_memory():
    sp = spec2d((256, 256, 56, 56), (256, 256, 3, 3), padding=1)
    per = im2col.image_bytes(sp)
    big = im2col.chunk(sp, 80 * 1024**3)
    assert big * per <= 1 << 30 and big >= 1
    small = im2col.chunk(sp, 8 * per)          # a quarter of "free" memory is 2 images
    assert small == 2
    assert im2col.chunk(sp, 0) == 1            # never zero: one image, OOM fallback reports clearly
    cfg = variants.get("im2col").default_config(sp, DeviceFacts(free_bytes=8 * per))
    assert variants.get("im2col").workspace_bytes(sp, cfg) == 2 * per
    pw = spec2d((256, 256, 56, 56), (256, 256, 1, 1))
    assert variants.get("im2col").workspace_bytes(pw, {"chunk": 256}) == 0


def test_explain_text():
    txt = gcuda.explain((32, 256, 14, 14), (256, 256, 3, 3), padding=1)
    assert "-> im2col" in txt and "because" in txt and "tiled_smem" in txt
    sp = spec2d((2, 3, 17, 17), (5, 3, 3, 3), dtype=np.complex64)
    txt = gcuda.explain(sp)
    assert "complex" in txt and "direct             refuses" in txt
    with pytest.raises(TypeError):
        gcuda.explain((1, 2, 3, 3))


def test_resolve_errors_name_working_variants():
    from gpuconv.cuda.conv import resolve

    class B:
        name, xp = "fake", np
    sp = spec2d((2, 3, 17, 17), (5, 3, 3, 3), dtype=np.complex64)
    with pytest.raises(ValueError, match="variants that do: im2col"):
        resolve(sp, "tiled_smem", B())
    with pytest.raises(ValueError, match="unknown algorithm 'fast'.*support this convolution: im2col"):
        resolve(sp, "fast", B())
    assert resolve(sp, "auto", B())[0] == "im2col"


def test_implicit_gemm_needs_sm80():
    """Before compute capability 8.0 (no cp.async / m16n8k16 f32) float16 stays on cuBLAS."""
    sp = spec2d((32, 64, 56, 56), (64, 64, 3, 3), padding=1, dtype=np.float16)
    assert dispatch.choose(sp, DeviceFacts(cc=(9, 0)))[0] == "implicit_gemm"
    assert dispatch.choose(sp, DeviceFacts(cc=(8, 0)))[0] == "implicit_gemm"
    assert dispatch.choose(sp, DeviceFacts(cc=(7, 5)))[0] == "im2col"


# ---------------------------------------------------------------- waves, dtypes, capture

def _suite_specs(dtype):
    from gpuconv.bench import suites
    for name in ("resnet50_b1", "resnet50_b32", "vgg16"):
        for case in suites.SUITES[name]:
            assert case.op == "conv2d", case.id
            n, c, h, w, k, r, s, st, pd, dl, g = case.shape
            yield case.id, spec2d((n, c, h, w), (k, c // g, r, s), stride=st, padding=pd, dilation=dl,
                                  groups=g, dtype=dtype)


def _bf16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return ml_dtypes.bfloat16


DTYPE_PRECISIONS = [("float16", "highest"), ("bfloat16", "highest"), ("float32", "highest"),
                    ("float32", "high"), ("float32", "medium"), ("float64", "highest")]


@pytest.mark.parametrize("dtype,precision", DTYPE_PRECISIONS, ids=[f"{d}-{p}" for d, p in DTYPE_PRECISIONS])
def test_suite_picks_fill_a_wave_or_say_why(dtype, precision):
    """Every resnet50_b1 / resnet50_b32 / vgg16 layer on H100 facts: the pick's grid is at least
    one full wave, or a reason line says why not; the grid line agrees with occupancy()."""
    dt = _bf16() if dtype == "bfloat16" else np.dtype(dtype)
    facts = DeviceFacts()
    below = 0
    for cid, sp in _suite_specs(dt):
        name, config, reasons = dispatch.choose(sp, facts, precision)
        assert variants.get(name).supports(sp, **({"precision": precision} if name == "implicit_gemm"
                                                   else {}))[0], (cid, name)
        occ = dispatch.occupancy(name, sp, facts, config, precision)
        grid = [r for r in reasons if r.startswith("grid:")]
        assert len(grid) == 1 and f"{occ['ctas']} CTAs" in grid[0] and f"{occ['waves']:.2f} waves" in grid[0]
        why = [r for r in reasons if r.startswith("below one wave:")]
        if occ["waves"] >= 1:
            assert not why, (cid, reasons)
            continue
        below += 1
        assert len(why) == 1 and len(why[0]) > 60, (cid, reasons)
        if name == "implicit_gemm":
            p = occ["plan"]
            assert "% of the dtype's dense tensor-core peak" in " ".join(reasons)
            # the plan is the cheapest priced grid: a fuller one is either still below a wave,
            # or was priced slower while the busiest SM keeps >= WARPS_TO_SATURATE warps
            if "smaller than the device" not in why[0]:
                assert "estimated slower" in why[0] and p["busiest_sm_warps"] >= 8, (cid, p)
    assert below < 3 * 23 + 9        # not every layer


def test_occupancy_counts_the_grid():
    """ResNet-50 14x14 K=256 at batch 32 in fp16, 128x128 tiles, no split: 49 x 2 = 98 CTAs
    (the figure that motivated the tile menu) at 2 per SM: 98/264 waves."""
    sp = spec2d((32, 256, 14, 14), (256, 256, 3, 3), padding=1, dtype=np.float16)
    occ = dispatch.occupancy("implicit_gemm", sp, DeviceFacts(), {"tile": "128x128", "split_k": 1})
    assert occ["ctas"] == 98 and occ["ctas_per_sm"] == 2 and abs(occ["waves"] - 98 / 264) < 1e-12
    occ2 = dispatch.occupancy("implicit_gemm", sp, DeviceFacts(), {"tile": "128x128", "split_k": 3})
    assert occ2["ctas"] == 3 * 98
    d = dispatch.occupancy("direct", spec2d((1, 8, 8, 8), (8, 8, 3, 3), padding=1), DeviceFacts())
    assert d["ctas"] == 2 and d["ctas_per_sm"] == 8          # 512 outputs / 256 threads


def test_explain_prints_tile_split_waves_estimate():
    sp = spec2d((32, 256, 14, 14), (256, 256, 3, 3), padding=1, dtype=np.float16)
    txt = dispatch.explain(sp)
    assert "-> implicit_gemm" in txt and "'tile'" in txt and "'split_k'" in txt
    assert "waves (estimate)" in txt and "% of the dtype's dense tensor-core peak" in txt
    assert "not measured on a GPU" in txt
    f32 = spec2d((32, 256, 14, 14), (256, 256, 3, 3), padding=1)
    assert "-> implicit_gemm" in gcuda.explain(f32, precision="medium")
    assert "-> implicit_gemm" not in gcuda.explain(f32, precision="highest")
    assert "precision=high " in gcuda.explain(f32, precision="high")


def test_supports_dtype_and_bfloat16_picks():
    """bfloat16 has one kernel (the implicit GEMM, 2-D, cc >= 8.0): the dispatcher picks it at
    any size; supports_dtype is False where it refuses, and choose then names the reason."""
    bf = _bf16()
    tiny = spec2d((1, 3, 5, 7), (2, 3, 3, 3), dtype=bf)
    assert dispatch.supports_dtype(tiny) and dispatch.choose(tiny, DeviceFacts())[0] == "implicit_gemm"
    three_d = spec2d((1, 4, 5, 6, 7), (8, 4, 3, 3, 3), dtype=bf)
    assert not dispatch.supports_dtype(three_d)
    with pytest.raises(ValueError, match="no bfloat16 kernel.*3-D"):
        dispatch.choose(three_d, DeviceFacts())
    old = DeviceFacts(cc=(7, 5))
    assert not dispatch.supports_dtype(tiny, facts=old)
    with pytest.raises(ValueError, match="compute capability 7.5"):
        dispatch.choose(tiny, old)
    for dt in (np.float16, np.float32, np.float64, np.complex64):
        assert dispatch.supports_dtype(spec2d((1, 3, 5, 7), (2, 3, 3, 3), dtype=dt))


CAPTURING = DeviceFacts(capturing=True)


def test_capture_rule_never_picks_cublas():
    """While the stream captures, the pick is capture-safe (no im2col: cuBLAS, OOM retry) over
    a grid of shapes and dtypes; outside capture the same grid does pick im2col somewhere;
    complex (im2col only) is a ValueError naming the capture."""
    grid = itertools.product((1, 3), (1, 4, 64), (1, 8, 96), (1, 3), (1, 2), (1, "g"),
                             ("float16", "float32", "float64"), ("highest", "medium"))
    seen_im2col = 0
    for N, C, K, R, s, g, dt, prec in grid:
        groups = C if g == "g" and K % C == 0 else 1
        sp = spec2d((N, C, 12, 40), (K, C // groups, R, R), stride=s, padding=R // 2, groups=groups, dtype=dt)
        free = dispatch.choose(sp, DeviceFacts(), prec)
        seen_im2col += free[0] == "im2col"
        name, config, reasons = dispatch.choose(sp, CAPTURING, prec)
        assert dispatch.capture_safe(name), (sp, name)
        assert variants.get(name).supports(sp, **({"precision": prec} if name == "implicit_gemm" else {}))[0]
    assert seen_im2col > 10
    for sp in LAYERS_CAPTURE:
        assert dispatch.choose(sp, CAPTURING)[0] != "im2col"
    cplx = spec2d((2, 3, 17, 17), (5, 3, 3, 3), dtype=np.complex64)
    with pytest.raises(ValueError, match="complex.*captured into a CUDA graph"):
        dispatch.choose(cplx, CAPTURING)
    assert "refuses : the stream is being captured" in dispatch.explain(LAYERS_CAPTURE[0], CAPTURING)


LAYERS_CAPTURE = [sp for _, sp, want in LAYERS if want == "im2col" and sp.dtype.kind != "c"]


def test_resolve_reads_the_backend_capture_flag():
    """resolve() asks the backend (is_capturing() or a `capturing` attribute) and refuses an
    explicit im2col while capturing."""
    from gpuconv.cuda.backend import device_facts, is_capturing
    from gpuconv.cuda.conv import resolve

    class B:
        name, xp, capturing = "fake", np, False
    b = B()
    sp = LAYERS_CAPTURE[0]
    assert resolve(sp, "auto", b)[0] == "im2col" and not is_capturing(b)
    b.capturing = True
    assert is_capturing(b) and device_facts(b).capturing
    assert resolve(sp, "auto", b)[0] != "im2col"
    with pytest.raises(ValueError, match="captured into a CUDA graph"):
        resolve(sp, "im2col", b)

    class C:
        name, xp = "fake", np

        def is_capturing(self):
            return True
    assert resolve(sp, "auto", C())[0] != "im2col"


def test_info_prints_waves_and_the_estimate(capsys, monkeypatch):
    from gpuconv import cli
    from gpuconv.bench import env
    monkeypatch.setattr(env, "cuda_facts", lambda: {"available": False, "reason": "test"})
    shape = "32,256,14,14,256,3,3,1,1,1,1"
    assert cli.main(["info", "--shape", shape, "--dtype", "float32", "--precision", "medium"]) == 0
    out = capsys.readouterr().out
    assert "dispatcher pick: implicit_gemm" in out and "'split_k'" in out
    assert "waves (estimate)" in out and "% of the dtype's dense tensor-core peak" in out
    assert "napkin-math estimates until a GPU measures them" in out
    assert cli.main(["info", "--shape", shape, "--dtype", "float32"]) == 0
    assert "dispatcher pick: implicit_gemm" not in capsys.readouterr().out


def test_bench_compares_like_with_like(monkeypatch):
    """--dtype tf32 runs gpuconv at 'medium' against cuDNN with TF32; 3xtf32 at 'high' against
    exact cuDNN (the same accuracy class); float32 exact against exact."""
    import gpuconv
    from gpuconv.bench import cases as C, runner
    from gpuconv.bench.suites import Case
    assert (C.PRECISION, C.CUDNN_TF32) == ({"float32": "highest", "tf32": "medium", "3xtf32": "high"},
                                           {"tf32": True})
    assert "3xtf32" in runner.DTYPES_GPU and C.TOLERANCE["3xtf32"] == C.TOLERANCE["float32"]
    case = Case("t", "c", "conv2d", (2, 8, 9, 9, 16, 3, 3, 1, 1, 1, 1))
    seen = []
    monkeypatch.setattr(gpuconv, "conv2d", lambda *a, **kw: seen.append(kw.get("precision")))
    for dt, want in (("float32", "highest"), ("tf32", "medium"), ("3xtf32", "high"), ("float16", None)):
        prep, host = C.prepare_host(case, dt)
        assert C.storage_dtype(dt) == (np.float16 if dt == "float16" else np.float32)
        C.gpuconv_call(prep, host, np.asarray)()
        assert seen[-1] == want, dt
    sp = C.conv_spec(case, np.float32)
    assert "implicit_gemm" in C.gpu_variants(sp, "medium")[0]
    assert "implicit_gemm" not in C.gpu_variants(sp, "highest")[0]
    assert C.explain(sp, None, "high")["precision"] == "high"


def test_choose_covers_dtype_x_precision_x_shape():
    """Over a grid of shapes, every dtype and float32 precision: the pick supports the spec at
    that precision, float32 'highest' never reaches the tensor cores, bfloat16 always does
    (2-D) and supports_dtype agrees with choose."""
    bf = _bf16()
    facts = DeviceFacts()
    grid = itertools.product((1, 3), (1, 8, 40), (1, 16, 72), (1, 3), (1, 2), (1, "g"))
    combos = [(np.float16, "highest"), (bf, "highest"), (np.float32, "highest"), (np.float32, "high"),
              (np.float32, "medium"), (np.float64, "highest"), (np.complex128, "highest")]
    n = tc = 0
    for (N, C, K, R, s, g), (dt, prec) in itertools.product(grid, combos):
        groups = C if g == "g" and K % C == 0 else 1
        sp = spec2d((N, C, 11, 13), (K, C // groups, R, R), stride=s, padding=R // 2, groups=groups, dtype=dt)
        assert dispatch.supports_dtype(sp, prec, facts)
        name, config, reasons = dispatch.choose(sp, facts, prec)
        kw = {"precision": prec} if name == "implicit_gemm" else {}
        assert variants.get(name).supports(sp, **kw)[0], (sp, prec, name)
        if np.dtype(dt) == np.float32 and prec == "highest" or np.dtype(dt).kind in "fc" and \
                np.dtype(dt).itemsize >= 8:
            assert name != "implicit_gemm"
        if np.dtype(dt) == np.dtype(bf):
            assert name == "implicit_gemm"
        tc += name == "implicit_gemm" and np.dtype(dt) == np.float32
        n += 1
    assert n == 7 * 2 * 3 * 3 * 2 * 2 * 2 and tc > 0


def test_depthwise_occupancy_counts_registers():
    """The depthwise kernel's registers (ptxas table in its family module) bound its blocks
    per SM: 64 per thread at 256 threads is 4 blocks, 96 is 2, 153 (float64 5x5) is 1 --
    not the 8 that threads and shared memory alone would allow."""
    from gpuconv.cuda.families import conv2d_depthwise as DW
    facts = DeviceFacts()
    for dt, r, want in ((np.float16, 3, 4), (np.float32, 3, 4), (np.float32, 5, 2), (np.float64, 5, 1)):
        sp = make_spec((32, 144, 56, 56), (144, 1, r, r), None, 1, r // 2, 1, 144, np.dtype(dt), 2)[0]
        occ = dispatch.occupancy("depthwise", sp, facts)
        assert occ["ctas_per_sm"] == want, (dt, r, occ)
        assert DW.registers(sp) * 256 * want <= 65536 < DW.registers(sp) * 256 * (want + 1)
