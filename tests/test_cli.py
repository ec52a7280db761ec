"""The `gpuconv` command on a CPU-only machine: parsing, bench in CPU mode,
info, the kernels pass-through."""
from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from gpuconv import cli
from gpuconv.bench import report

ROOT = Path(__file__).resolve().parents[1]


def _has_gpu() -> bool:
    from gpuconv.bench.env import cuda_facts
    return bool(cuda_facts().get("available"))


def run_cli(*args, timeout=300):
    """`gpuconv ARGS` as the console script runs it (python -m keeps it working
    from a source checkout without an install)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "gpuconv.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_version_is_the_package_version():
    import gpuconv
    from gpuconv import _version
    assert gpuconv.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", gpuconv.__version__)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for cmd in (["-m", "gpuconv", "--version"], ["-m", "gpuconv.cli", "--version"]):
        r = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"gpuconv {gpuconv.__version__}"
    # pyproject takes it from the one file (hatch's dynamic version)
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'path = "gpuconv/_version.py"' in text
    assert not re.search(r"^version\s*=", text, flags=re.M)


def test_output_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = cli._parser()
    now = datetime.datetime(2026, 11, 29, 12, 5, 9)
    j, png = cli.output_paths(p.parse_args(["bench"]), now=now)
    assert j == tmp_path / "gpuconv-bench-2026-11-29-120509" / "bench.json"
    assert png == j.with_name("bench.png")
    j, png = cli.output_paths(p.parse_args(["bench", "--out", "r"]), now=now)
    assert (j, png) == (Path("r") / "bench.json", Path("r") / "bench.png")
    j, png = cli.output_paths(p.parse_args(["bench", "--json", "a.json"]), now=now)
    assert (j, png) == (Path("a.json"), None)
    j, png = cli.output_paths(p.parse_args(["bench", "--json", "a.json", "--out", "r"]), now=now)
    assert (j, png) == (Path("a.json"), Path("r") / "bench.png")


def test_parse_shape():
    assert cli.parse_shape("32,64,56,56,64,3,3") == (32, 64, 56, 56, 64, 3, 3, 1, 0, 1, 1)
    assert cli.parse_shape("8,128,56,56,128,3,3,1,1,1,128") == (8, 128, 56, 56, 128, 3, 3, 1, 1, 1, 128)
    assert cli.parse_shape("1,3,224,224,64,7,7,2,3") == (1, 3, 224, 224, 64, 7, 7, 2, 3, 1, 1)
    with pytest.raises(ValueError, match="7 to 11"):
        cli.parse_shape("1,2,3")
    with pytest.raises(ValueError, match="integers"):
        cli.parse_shape("1,a,3,4,5,6,7")


def test_parser_options():
    p = cli._parser()
    a = p.parse_args(["bench", "--suite", "cpu", "--suite", "quick", "--dtype", "float64",
                      "--variant", "direct", "--variant", "im2col", "--repeats", "5", "--no-anchors",
                      "--json", "o.json", "--plot", "o.png", "--quick"])
    assert a.suite == ["cpu", "quick"] and a.variant == ["direct", "im2col"]
    assert a.dtype == "float64" and a.repeats == 5 and a.no_anchors and a.quick
    assert a.json == "o.json" and a.plot == "o.png"
    with pytest.raises(SystemExit):
        p.parse_args(["bench", "--dtype", "int8"])
    assert p.parse_args(["info", "--shape", "1,2,3,4,5,6,7"]).shape == "1,2,3,4,5,6,7"


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "bench" in capsys.readouterr().out


def test_bench_list(capsys):
    assert cli.main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("resnet50_b32", "vgg16", "mobilenetv2_dw", "deepbench", "signal", "cpu", "quick"):
        assert name in out


@pytest.mark.skipif(_has_gpu(), reason="CPU-path dtype rules")
def test_bench_rejects_gpu_dtypes_on_cpu(capsys):
    assert cli.main(["bench", "--quick", "--dtype", "float16"]) == 2
    assert "not available on the CPU path" in capsys.readouterr().err


def test_bench_rejects_bad_suite_and_repeats(capsys):
    assert cli.main(["bench", "--suite", "nope"]) == 2
    assert "unknown suite" in capsys.readouterr().err
    assert cli.main(["bench", "--repeats", "0"]) == 2


def test_bench_quick_writes_valid_json(tmp_path):
    """The CI command: `gpuconv bench --quick --json out.json` on this machine."""
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    r = run_cli("bench", "--quick", "--json", str(out), "--plot", str(png), timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert report.validate(result) == []
    assert result["suites"] == ["quick"]
    names = {c["name"] for c in result["cases"]}
    assert len(names) == len(result["cases"]) >= 5
    env = result["env"]
    for key in ("numpy", "cpu_model", "timestamp", "cuda", "torch", "git_commit"):
        assert key in env
    ok = [x for c in result["cases"] for x in c["results"] if x["role"] == "gpuconv" and x["status"] == "ok"]
    assert ok, "no gpuconv result was timed"
    assert all(len(x["times_s"]) >= 1 and x["tflops"] > 0 for x in ok)
    assert "geomean" in r.stdout
    if result["mode"] == "cpu":
        assert "no CUDA device" in r.stdout
    try:
        import matplotlib  # noqa: F401
        assert png.read_bytes()[:4] == b"\x89PNG"
    except ImportError:
        assert "needs matplotlib" in r.stderr
    assert f"wrote {out}" in r.stdout


def test_bench_without_rich_or_torch_degrades(tmp_path):
    """No rich: plain text; no torch: the torch anchors are skipped with a note.
    Without --json/--plot the results go to a dated folder under the current
    directory, named at the end."""
    code = ("import sys; sys.modules['rich'] = None; sys.modules['torch'] = None; "
            "from gpuconv.cli import main; "
            "sys.exit(main(['bench', '--suite', 'quick', '--quick', '--cpu', '--repeats', '1', "
            "'--min-time', '0']))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (folder,) = tmp_path.glob("gpuconv-bench-*")
    out = folder / "bench.json"
    assert f"wrote {out}" in r.stdout
    result = json.loads(out.read_text())
    assert report.validate(result) == []
    assert any("torch not installed" in n for n in result["notes"])
    conv = next(c for c in result["cases"] if c["op"] == "conv2d")
    assert conv["skipped"].get("torch-cpu") == "torch not installed"
    assert "suite quick" in r.stdout and "\t" in r.stdout


def test_info_on_cpu():
    r = run_cli("info")
    assert r.returncode == 0, r.stderr
    assert "kernel cache:" in r.stdout and "CPU:" in r.stdout
    if not _has_gpu():
        assert "no CUDA device" in r.stdout


def test_info_explains_a_shape():
    r = run_cli("info", "--shape", "8,128,56,56,128,3,3,1,1,1,128", "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    assert "dispatcher pick:" in r.stdout and "GFLOP" in r.stdout
    assert "(8, 128, 56, 56)" in r.stdout


def test_info_rejects_a_bad_shape():
    r = run_cli("info", "--shape", "1,2,3")
    assert r.returncode == 2 and "7 to 11" in r.stderr
    r = run_cli("info", "--shape", "1,6,8,8,4,3,3,1,1,1,4")      # groups does not divide C
    assert r.returncode == 2


def test_kernels_passes_argv_through(monkeypatch):
    seen = []
    fake = types.ModuleType("gpuconv.cuda.compile_check")
    fake.main = lambda argv: seen.append(argv) or 3
    import gpuconv.cuda
    monkeypatch.setitem(sys.modules, "gpuconv.cuda.compile_check", fake)
    monkeypatch.setattr(gpuconv.cuda, "compile_check", fake, raising=False)
    assert cli.main(["kernels", "--arch", "sm_90", "--json"]) == 3
    assert seen == [["--arch", "sm_90", "--json"]]


def test_kernels_missing_module_is_reported(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gpuconv.cuda.compile_check", None)
    import gpuconv.cuda
    monkeypatch.delattr(gpuconv.cuda, "compile_check", raising=False)
    assert cli.main(["kernels"]) == 2
    assert "not available" in capsys.readouterr().err


def test_progress_without_a_terminal_prints_one_line_per_case(capsys):
    """In a pipe or a CI log there is no live bar: one line per step, on stderr."""
    p = cli._Progress()
    p.start("cases", 2)
    p.case("cpu/a [float32]")
    p.describe("cpu/a [float32] gpuconv:numpy")
    p.advance()
    p.stop()
    err = capsys.readouterr().err
    assert "[gpuconv bench] cases (2)" in err and "[gpuconv bench] cpu/a [float32]" in err
    assert "gpuconv:numpy" not in err          # the implementation is shown on the live bar only


def test_progress_bar_on_a_terminal_shows_the_case_and_time_left(monkeypatch):
    rich_console = pytest.importorskip("rich.console")
    monkeypatch.setattr(rich_console.Console, "is_terminal", property(lambda self: True))
    p = cli._Progress()
    try:
        assert p._p is not None
        p.start("cases", 3)
        p.describe("cpu/a [float32] gpuconv:numpy")
        task = p._p.tasks[0]
        assert task.description == "cases: cpu/a [float32] gpuconv:numpy" and task.total == 3
        from rich.progress import TimeRemainingColumn
        assert any(isinstance(c, TimeRemainingColumn) for c in p._p.columns)
    finally:
        p.stop()
