"""bench/gpu_record.py, the GPU record on a time budget: its checks run (here in
the simulator) and match the float64 reference, its stages keep to their
deadlines, a child past its timeout is killed with its children, and a short
dry run writes its record within the budget."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gpu_record", ROOT / "bench" / "gpu_record.py")
gpu_record = importlib.util.module_from_spec(_spec)
sys.modules["gpu_record"] = gpu_record          # dataclasses look their module up by name
_spec.loader.exec_module(gpu_record)


def test_every_kernel_family_has_a_target():
    from gpuconv.cuda import variants
    t = gpu_record.targets()
    assert {f"conv:{v}" for v in variants.conv_variant_names()} <= set(t)
    assert {"transpose", "wgrad", "separable", "signal"} <= set(t)
    assert all(t.values()), [k for k, v in t.items() if not v]


def test_smoke_covers_every_variant_and_public_operation():
    import gpuconv
    checks = gpu_record.smoke_checks()
    families = {c.family for c in checks}
    assert set(gpu_record.targets()) <= families
    names = {c.name for c in checks if c.family == "public"}
    for op in ("conv", "transpose", "input", "weight", "separable"):
        for nd in (1, 2, 3):
            assert f"float32 {op} {nd}-D" in names
    # the public functions those checks call exist
    for fn in ("conv1d", "conv3d", "conv_transpose1d", "conv_transpose3d", "conv1d_input", "conv3d_weight",
               "separable_conv1d", "separable_conv3d", "convolve2d", "correlate2d"):
        assert callable(getattr(gpuconv, fn))


@pytest.mark.sim
@pytest.mark.parametrize("family", list(gpu_record.targets()))
def test_family_checks_pass_in_the_simulator(family):
    for check in gpu_record.targets()[family]:
        out, ref = gpu_record.run_check(check, "sim")
        assert out.shape == ref.shape, check.name
        err = gpu_record.rel_err(out, ref)
        assert err <= gpu_record.TOLERANCE[check.dtype], f"{family} {check.name}: {err:.3g}"


def test_rel_err_counts_nan_and_shape_as_failure():
    assert gpu_record.rel_err(np.array([1.0, np.nan]), np.array([1.0, 2.0])) == float("inf")
    assert gpu_record.rel_err(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == 0.25
    assert gpu_record.rel_err(np.zeros(3), np.zeros(4)) == float("inf")


def test_checks_are_seeded_per_check():
    """GPU and simulator runs of one check see the same inputs: the generator is
    seeded from the check's name, not from call order."""
    check = gpu_record.targets()["signal"][0]
    got = []

    def put(a):
        got.append(a.copy())
        return a
    for _ in range(2):
        rng = np.random.default_rng([0, *check.name.encode()])
        check.build(rng, put)
    half = len(got) // 2
    assert all(np.array_equal(a, b) for a, b in zip(got[:half], got[half:]))


def test_run_child_kills_the_whole_group_at_its_timeout(tmp_path):
    marker = tmp_path / "grandchild-alive"
    grandchild = tmp_path / "grandchild.py"
    grandchild.write_text(f"import time\ntime.sleep(3)\nopen({str(marker)!r}, 'w').close()\n")
    child = tmp_path / "child.py"
    child.write_text(f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, {str(grandchild)!r}])\n"
                     "print('started', flush=True)\ntime.sleep(30)\n")
    t0 = time.monotonic()
    rc, text, secs = gpu_record.run_child([sys.executable, str(child)], timeout=1.5)
    assert rc is None and "started" in text
    assert time.monotonic() - t0 < 1.5 + gpu_record.KILL_GRACE_S + 1.5
    time.sleep(3.5)
    assert not marker.exists(), "the grandchild outlived the timeout"
    rc, text, _ = gpu_record.run_child([sys.executable, "-c", "print('ok')"], timeout=30)
    assert rc == 0 and text.strip() == "ok"
    assert gpu_record.run_child(["true"], timeout=0)[0] is None


def test_stage_deadlines_share_what_is_left(tmp_path):
    args = gpu_record.main.__globals__["argparse"].Namespace(
        sim=True, out=str(tmp_path), budget=104.0, commit=None)
    rec = gpu_record.Record(args)
    weights = dict(gpu_record.STAGES)
    total = sum(weights.values())
    # the budget counts from the script's start (before its imports)
    assert rec.end == pytest.approx(gpu_record.T_START + 104.0 - gpu_record.RESERVE_S)
    now = time.monotonic()
    rec.end = now + 100.0               # as if the script had just started (this test module loaded long ago)
    left = rec.end - now
    assert rec.deadline("compile") - now == pytest.approx(left * weights["compile"] / (total - weights["env"]),
                                                          abs=0.5)
    # env's floor: 15 s, at most a quarter of what is left
    assert rec.deadline("env") - now == pytest.approx(max(left * weights["env"] / total, 15.0), abs=0.5)
    # the last stage gets all that is left
    assert rec.deadline("bench") == pytest.approx(rec.end, abs=0.5)
    # a stage that raises is recorded as an error and the record is still written
    rec.stage("smoke", lambda entry, deadline: 1 / 0)
    data = json.loads((tmp_path / "record.json").read_text())
    assert data["stages"]["smoke"]["status"] == "error" and "ZeroDivisionError" in data["stages"]["smoke"]["error"]


def test_bench_cases_put_one_case_per_family_and_dtype_first(monkeypatch):
    from gpuconv.bench import cases as C
    from gpuconv.bench import suites
    from gpuconv.cuda import dispatch
    from gpuconv.cuda.facts import DeviceFacts
    monkeypatch.setattr(C, "device_facts", lambda: DeviceFacts())
    cases = gpu_record.bench_cases(sim=False)
    rep = [c for c in cases if c.suite == "representative"]
    assert rep and cases[:len(rep)] == rep
    keys = set()
    for c in rep:
        if c.op == "conv2d":
            key = (dispatch.choose(C.conv_spec(c, np.dtype(c.dtype)), DeviceFacts())[0], c.dtype)
        else:
            key = (c.op, c.dtype)
        assert key not in keys, key
        keys.add(key)
    assert {"float32", "float16"} <= {c.dtype for c in rep}
    assert {"conv2d_input", "conv2d_weight", "separable_conv2d", "convolve2d"} <= {c.op for c in rep}
    whole = cases[len(rep):]
    assert {c.id for c in suites.get(suites.DEFAULT_GPU)} <= {c.id for c in whole}
    assert len({(c.id, c.dtype) for c in cases}) == len(cases)


def test_sim_bench_cases_are_small():
    for c in gpu_record.bench_cases(sim=True):
        assert c.dtype and c.suite == "sim"
        assert (np.prod(c.shape[:2]) if c.op in ("convolve2d", "correlate2d") else c.shape[0]) <= 64 * 64


def test_summary_from_a_record():
    rec = {"mode": "gpu", "started": "2026-12-01T10:00:00+00:00", "budget_s": 480, "elapsed_s": 470.2,
           "env": {"commit": "abc", "cuda": {"device": "NVIDIA H200"}, "torch": {}},
           "stages": {"env": {"status": "done", "seconds": 2, "allotted_s": 9},
                      "tests": {"status": "deadline", "seconds": 100, "allotted_s": 100,
                                "counts": {"passed": 300, "failed": 1}, "selected": 500,
                                "failed_tests": ["tests/test_kernels.py::test_x[a]"]},
                      "sanitizer": {"status": "done", "runs": {"wgrad": {"memcheck": "clean (3.0 s)"}},
                                    "clean": 1, "of": 1}}}
    md = gpu_record.summary(rec, None)
    assert "| tests | deadline | 100 | 100 | 300 passed, 1 failed of 500 selected |" in md
    assert "| compile | not reached |" in md
    assert "`tests/test_kernels.py::test_x[a]`" in md and "| wgrad | clean (3.0 s) |" in md


@pytest.mark.sim
def test_short_dry_run_keeps_its_budget(tmp_path):
    """`gpu_record.py --sim` with a 12 s budget: every stage starts or is recorded as
    having no time left, the run ends within the budget plus a few seconds, and
    record.json and summary.md are written.  (CI runs it with --budget 90.)"""
    budget = 12
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_record.py"), "--sim", "--budget", str(budget),
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=budget + 30, cwd=ROOT)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert took <= budget + 5, f"{took:.1f} s for a {budget} s budget"
    data = json.loads((tmp_path / "record.json").read_text())
    assert data["mode"] == "sim" and data.get("finished")
    assert [s for s, _ in gpu_record.STAGES] == list(data["stages"])
    assert data["stages"]["env"]["status"] in ("done", "deadline") and data["env"]["numpy"]
    assert "# gpuconv simulator dry run" in (tmp_path / "summary.md").read_text()
