"""`gpuconv kernels` (gpuconv.cuda.compile_check): compiles without a GPU."""
from __future__ import annotations

import json

import pytest

from gpuconv.cuda import compile_check
from gpuconv.cuda.variants import MODULES

HAVE_NVCC = compile_check.shutil.which("nvcc") is not None
HAVE_NVRTC = compile_check._load_nvrtc() is not None
needs_compiler = pytest.mark.skipif(not (HAVE_NVCC or HAVE_NVRTC), reason="neither nvcc nor NVRTC available")


def test_parse_ptxas_report():
    log = """ptxas info    : Compiling entry function '_Z3fooIfLi1EEvPf' for 'sm_80'
ptxas info    : Function properties for _Z3fooIfLi1EEvPf
    8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads
ptxas info    : Used 40 registers, 1024 bytes smem, 380 bytes cmem[0]
"""
    rep = compile_check.parse_ptxas(log)
    assert rep == {"_Z3fooIfLi1EEvPf": {"stack": 8, "spill_stores": 12, "spill_loads": 16,
                                        "registers": 40, "smem_static": 1024}}
    assert compile_check._template_id("void foo<float, 1>(float*)") == "foo<float,1>"


@needs_compiler
def test_compile_one_module_json(capsys):
    rc = compile_check.main(["--module", "conv2d_direct.cu", "--arch", "sm_80", "--json",
                             "--fail-on-spill", r"^conv_direct<float,"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = json.loads(out)
    assert {r["kernel"] for r in rows} == set(MODULES["conv2d_direct.cu"])
    for r in rows:
        assert r["arch"] == "sm_80" and r["registers"] > 0, r
        if r["kernel"].startswith("conv_direct<float,"):
            assert r["spill_stores"] == 0 and r["spill_loads"] == 0


@pytest.mark.skipif(not HAVE_NVRTC, reason="NVRTC (nvidia-cuda-nvrtc) not available")
def test_compile_nvrtc_path(capsys):
    rc = compile_check.main(["--compiler", "nvrtc", "--module", "im2col.cu", "--arch", "sm_90"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "im2col<float>" in out and "sm_90" in out


@needs_compiler
def test_compile_error_is_nonzero(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "broken.cu"
    bad.write_text("template <typename T> __global__ void k(T* p) { p[0] = undefined_name; }\n")
    monkeypatch.setattr(compile_check.loader, "kernels_dir", lambda: tmp_path)
    monkeypatch.setitem(compile_check.MODULES, "broken.cu", ("k<float>",))
    rc = compile_check.main(["--module", "broken.cu", "--arch", "sm_80"])
    assert rc == 1
    assert "FAILED" in capsys.readouterr().err


def test_unknown_module():
    assert compile_check.main(["--module", "nope.cu"]) == 1
