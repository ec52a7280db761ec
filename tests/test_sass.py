"""`gpuconv kernels --sass` (gpuconv.cuda.sass): SASS parsing, control flow, loops, mix."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gpuconv.cuda import compile_check, sass

HAVE_NVCC = shutil.which("nvcc") is not None
TOOLS = [t for t in ("nvdisasm", "cuobjdump") if sass.find_tool(t)]
needs_nvcc = pytest.mark.skipif(not HAVE_NVCC or not TOOLS,
                                reason="needs nvcc and nvdisasm or cuobjdump (CUDA toolkit, or "
                                       "pip install nvidia-cuda-nvdisasm)")

# Two nested loops, written as nvdisasm prints them (labels, symbols) and as cuobjdump does
# (hex targets, encodings): inner 0x20-0x60, outer 0x10-0xa0.
NVDISASM = """
\t.section\t.text._Z1kPf,"ax",@progbits
        .type           _Z1kPf,@function
_Z1kPf:
.text._Z1kPf:
\t//## File "k.cu", line 3
        /*0000*/                   MOV R0, RZ ;
.L_x_0:
        /*0010*/                   MOV R1, RZ ;
.L_x_1:
\t//## File "k.cu", line 5
        /*0020*/                   FFMA R2, R3, R4, R2 ;
        /*0030*/                   LDS R3, [R5] ;
        /*0040*/                   IADD3 R1, R1, 0x1, RZ ;
        /*0050*/                   ISETP.GE.AND P0, PT, R1, R6, PT ;
        /*0060*/              @!P0 BRA `(.L_x_1) ;
\t//## File "k.cu", line 7
        /*0070*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0080*/                   IADD3 R0, R0, 0x1, RZ ;
        /*0090*/                   ISETP.GE.AND P1, PT, R0, R7, PT ;
        /*00a0*/              @!P1 BRA `(.L_x_0) ;
        /*00b0*/                   STG.E desc[UR4][R8.64], R2 ;
        /*00c0*/                   EXIT ;
.L_x_2:
        /*00d0*/                   BRA `(.L_x_2);
"""


def _cuobjdump_form(text: str) -> str:
    labels = {".L_x_0": "0x10", ".L_x_1": "0x20", ".L_x_2": "0xd0"}
    out = ["\tcode for sm_90", "\t\tFunction : _Z1kPf"]
    for line in text.splitlines():
        if "/*0" not in line:
            continue
        for k, v in labels.items():
            line = line.replace(f"`({k})", v)
        out += [line + "   /* 0x000fe20000000f00 */", " " * 89 + "/* 0x000fe20000000f00 */"]
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("form", ["nvdisasm", "cuobjdump"])
def test_parse_and_loops_hand_written(form):
    text = NVDISASM if form == "nvdisasm" else _cuobjdump_form(NVDISASM)
    secs = sass.parse_sass(text)
    assert list(secs) == ["_Z1kPf"]
    sec = secs["_Z1kPf"]
    assert len(sec.instrs) == 14 and sec.instrs[6].pred == "@!P0" and sec.instrs[6].opcode == "BRA"
    blocks, entry, indirect = sass.build_cfg(sec, 0)
    assert not indirect
    # entry | outer header | inner body | outer latch | store + EXIT; the BRA-to-self padding is
    # unreachable
    assert sorted(sec.instrs[b.start].addr for b in blocks) == [0x0, 0x10, 0x20, 0x70, 0xb0]
    loops = sass.find_loops(blocks, entry)
    assert len(loops) == 2
    outer, inner = sorted(loops, key=lambda lp: len(lp.body), reverse=True)
    assert sec.instrs[blocks[inner.header].start].addr == 0x20 and inner.body == {inner.header}
    assert inner.innermost and inner.depth == 2
    assert not outer.innermost and outer.depth == 1 and len(outer.body) == 3

    rep = sass.analyse_kernel(sec, "_Z1kPf", "k<float>")
    assert rep["loops"] == 2 and len(rep["innermost"]) == 1 and rep["hot"] == 0
    lp = rep["innermost"][0]
    assert (lp["iter_min"], lp["iter_max"], lp["instructions"]) == (5, 5, 5)
    assert lp["counts"] == {"fma": 1, "lds": 1, "control": 1, "alu": 2}
    assert lp["accumulators"] == 1 and lp["per_math"]["lds"] == 1.0 and lp["bar"] == 0
    assert lp["fma_share"] == 0.2
    if form == "nvdisasm":
        assert lp["source"] == "k.cu:5-5"
    line = rep["straight_line"]           # MOV, STG, EXIT: one float stored
    assert line["instructions"] == 3 and line["stored_elements"] == 1.0
    assert line["instr_per_element"] == [3.0, 3.0]


def test_constant_moves_and_never_executed_are_not_math():
    ins = sass.Instr(0, None, "HFMA2.MMA", "R5, -RZ, RZ, 1.875, 0")
    assert sass.category(ins) == "alu"
    assert sass.category(sass.Instr(0, None, "HFMA2", "R5, R4, R3, -RZ")) == "fma"
    assert sass.category(sass.Instr(0, None, "HADD2.F32", "R0, -RZ, R2.H0_H0")) == "convert"
    assert sass.category(sass.Instr(0, "@!PT", "LDS", "RZ, [RZ]")) == "nop"
    assert sass.category(sass.Instr(0, None, "HMMA.16816.F32", "R4, R8, R12, R4")) == "tensor"
    assert sass.itemsize("conv2d_depthwise<__half, 0, 8, 32, 4, 3>") == 2
    assert sass.itemsize("im2col<long long>") == 8


# One loop per kernel, kept rolled (unroll 1) so the counts are exact.
KERNELS_CU = r"""
__global__ void dot_loop(const float* __restrict__ a, const float* __restrict__ b, float* out, int n) {
    float acc = 0.f;
#pragma unroll 1
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += a[i] * b[i];
    out[threadIdx.x] = acc;
}
__global__ void nested_loops(const float* __restrict__ a, float* out, int n, int m) {
    float acc = 0.f;
#pragma unroll 1
    for (int i = 0; i < n; ++i) {
#pragma unroll 1
        for (int j = threadIdx.x; j < m; j += blockDim.x) acc += a[i * m + j] * a[j];
    }
    out[threadIdx.x] = acc;
}
__global__ void div_invariant(const int* __restrict__ a, int* __restrict__ out, int n, int d) {
#pragma unroll 1
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = a[i] / d;
}
__global__ void div_varying(const int* __restrict__ a, int* __restrict__ out, int n) {
#pragma unroll 1
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = a[i] / (i + 1);
}
__global__ void div64_loop(const long long* __restrict__ a, long long* __restrict__ out, long long n) {
#pragma unroll 1
    for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = a[i] / (i + 3);
}
__global__ void smem_loop(const float* __restrict__ x, float* out, int n) {
    __shared__ float s[256];
    float acc = 0.f;
#pragma unroll 1
    for (int k = 0; k < n; ++k) {
        s[threadIdx.x] = x[k * 256 + threadIdx.x];
        __syncthreads();
        acc += s[(threadIdx.x + 1) & 255] * 2.0f;
        __syncthreads();
    }
    out[threadIdx.x] = acc;
}
"""


@pytest.fixture(scope="module")
def cubin(tmp_path_factory):
    if not HAVE_NVCC:
        pytest.skip("nvcc not on PATH")
    d = tmp_path_factory.mktemp("sass")
    (d / "k.cu").write_text(KERNELS_CU)
    res = subprocess.run(["nvcc", "-cubin", "-arch=sm_90", "-lineinfo", "-o", str(d / "k.cubin"),
                          str(d / "k.cu")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return d / "k.cubin"


_SECTIONS: dict = {}


def _loops(cubin: Path, tool: str, kernel: str, mangled: str) -> dict:
    if tool not in _SECTIONS:               # one disassembly per tool
        _SECTIONS[tool] = sass.parse_sass(sass.disassemble(cubin, (tool, sass.find_tool(tool))))
    secs = _SECTIONS[tool]
    return sass.analyse_kernel(secs[mangled], mangled, kernel)


@needs_nvcc
@pytest.mark.parametrize("tool", TOOLS)
def test_compiled_loops(cubin, tool):
    rep = _loops(cubin, tool, "dot_loop<float>", "_Z8dot_loopPKfS0_Pfi")
    assert rep["loops"] == 1
    (lp,) = rep["innermost"]
    assert lp["depth"] == 1 and lp["blocks"] == 1 and lp["iter_min"] == lp["iter_max"] <= 16
    assert lp["counts"]["fma"] == 1 and lp["counts"]["ldg"] == 2 and lp["accumulators"] == 1
    assert lp["div_sequences"] == 0 and lp["bar"] == 0 and lp["per_math"]["ldg"] == 2.0
    if tool == "nvdisasm":
        assert lp["source"].startswith("k.cu:5")

    rep = _loops(cubin, tool, "nested_loops<float>", "_Z12nested_loopsPKfPfii")
    assert rep["loops"] == 2 and len(rep["innermost"]) == 1
    (lp,) = rep["innermost"]
    assert lp["depth"] == 2 and lp["counts"]["fma"] == 1 and lp["counts"]["ldg"] == 2

    rep = _loops(cubin, tool, "smem_loop<float>", "_Z9smem_loopPKfPfi")
    (lp,) = rep["innermost"]
    c = lp["counts"]
    assert (c["bar"], c["sts"], c["lds"], c["ldg"], c["fma"]) == (2, 1, 1, 1, 1)
    assert lp["stored_elements"] == 1.0 and lp["accumulators"] == 1


@needs_nvcc
@pytest.mark.parametrize("tool", TOOLS)
def test_compiled_divisions(cubin, tool):
    # loop-invariant divisor: ptxas hoists the reciprocal, ~10 instructions stay in the loop
    (lp,) = _loops(cubin, tool, "div_invariant<int>", "_Z13div_invariantPKiPiii")["innermost"]
    assert (lp["div_sequences"], lp["div_rcp"], lp["div32"], lp["div64"]) == (1, 0, 1, 0)
    assert lp["stored_elements"] == 1.0 and lp["instr_per_element"][0] == lp["iter_min"]
    # a divisor that changes every iteration: the reciprocal (I2F.RP) is in the loop
    (lp,) = _loops(cubin, tool, "div_varying<int>", "_Z11div_varyingPKiPii")["innermost"]
    assert (lp["div_sequences"], lp["div_rcp"], lp["div32"], lp["div64"]) == (1, 1, 1, 0)
    # 64-bit: a call to the division routine beside an inline 32-bit fast path
    (lp,) = _loops(cubin, tool, "div64_loop<long long>", "_Z10div64_loopPKxPxx")["innermost"]
    assert (lp["div_sequences"], lp["div_calls"], lp["div32"], lp["div64"]) == (1, 1, 0, 1)
    assert lp["calls"][0]["division"] and lp["iter_min"] < lp["iter_max"]
    if tool == "nvdisasm":
        assert "div_s64" in lp["calls"][0]["callee"]


@needs_nvcc
def test_kernels_sass_one_module(tmp_path, monkeypatch, capsys):
    """`gpuconv kernels --sass` on one real instantiation, then again from the cache."""
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(compile_check.MODULES, "im2col.cu", ("im2col<float>",))
    argv = ["--sass", "--compiler", "nvcc", "--module", "im2col.cu", "--arch", "sm_90", "--json"]
    assert compile_check.main(argv) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["kernel"] == "im2col<float>" and row["arch"] == "sm_90" and not row["cached"]
    hot = row["innermost"][row["hot"]]
    # the row loop writes column elements (one STG each, unrolled) and carries its (s, r, kd,
    # c) digits: no division in it (the column and first row are decoded before it)
    assert hot["source"].startswith("im2col.cu:") and hot["stored_elements"] == hot["counts"]["stg"] >= 1
    assert hot["div32"] == hot["div64"] == 0
    assert 5 < hot["instr_per_element"][0] <= hot["instr_per_element"][1] < 40
    assert compile_check.main(argv) == 0
    (again,) = json.loads(capsys.readouterr().out)
    assert again["cached"] and again["innermost"] == row["innermost"]
    assert compile_check.main(argv[:-1]) == 0            # the table
    out = capsys.readouterr().out
    assert "im2col<float>" in out and "im2col.cu:" in out and "1 from the cache" not in out.split("\n")[0]
