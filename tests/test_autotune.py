"""Autotuning (gpuconv.set_autotune): candidates, selection with an injected timer, the JSON
cache per device (atomic, corrupt files ignored and rewritten), and the forward path in the
simulator.  No real time is measured: every timer here is a table."""
from __future__ import annotations

import json

import numpy as np
import pytest

import gpuconv
from gpuconv import reference
from gpuconv.cuda import autotune, conv as cuda_conv, dispatch, variants
from gpuconv.cuda.facts import DeviceFacts
from gpuconv.spec import make_spec

from util import assert_close, randn


def spec2d(x, w, stride=1, padding=0, groups=1, dtype=np.float32):
    return make_spec(x, w, None, stride, padding, 1, groups, np.dtype(dtype), len(w) - 2)[0]


FACTS = DeviceFacts(name="Test GPU 80GB (sm_90)")


class TableTimer:
    """timer(run, candidate): seconds from a table keyed by variant (or (variant, tile, split)),
    counting calls; runs each candidate once when `launch` is set."""

    def __init__(self, table, default=1.0, launch=False):
        self.table, self.default, self.launch, self.calls = table, default, launch, []

    def __call__(self, run, candidate):
        name, config = candidate
        self.calls.append((name, dict(config)))
        if self.launch:
            run()
        k = (name, config.get("tile"), config.get("split_k")) if name == "implicit_gemm" else name
        return self.table.get(k, self.table.get(name, self.default))


@pytest.fixture
def cache(tmp_path):
    return autotune.Cache(tmp_path)


def test_candidates_cover_supported_variants_and_igemm_plans():
    sp = spec2d((4, 64, 14, 14), (64, 64, 3, 3), padding=1, dtype=np.float16)
    cands = autotune.candidates(sp, FACTS)
    names = [n for n, _ in cands]
    assert set(names) == {n for n, (ok, _) in dispatch.supported_variants(sp, FACTS).items() if ok}
    ig = [c for n, c in cands if n == "implicit_gemm"]
    assert 1 < len(ig) <= autotune.IGEMM_CANDIDATES
    plan = dispatch._igemm.plan(sp, FACTS)
    assert ig[0] == {"tile": plan["tile"], "split_k": plan["split_k"]}          # the plan's pick first
    assert len({(c["tile"], c["split_k"]) for c in ig}) == len(ig)
    # while capturing: no cuBLAS candidate
    assert "im2col" in names and "im2col" not in [n for n, _ in autotune.candidates(
        sp, DeviceFacts(capturing=True))]


def test_tune_picks_the_fastest_records_and_reuses(cache, tmp_path):
    sp = spec2d((2, 16, 9, 11), (24, 16, 3, 3), padding=1)
    ran = []
    timer = TableTimer({"direct": 3e-6, "tiled_smem": 5e-6, "tiled_smem_small": 2e-6, "im2col": 4e-6})
    got = autotune.tune(sp, "highest", FACTS, lambda n, c: ran.append(n), timer=timer, cache=cache)
    assert got[0] == "tiled_smem_small" and got[1] == variants.get("tiled_smem_small").default_config(sp, FACTS)
    assert sorted(n for n, _ in timer.calls) == sorted(n for n, _ in autotune.candidates(sp, FACTS))
    path = autotune.device_file(FACTS.name, tmp_path)
    assert path.parent == tmp_path / "autotune" and path.name == "Test_GPU_80GB_sm_90.json"
    data = json.loads(path.read_text())
    entry = data["entries"][autotune.key(sp, "highest")]
    assert data["format"] == 1 and data["device"] == FACTS.name
    assert entry["variant"] == "tiled_smem_small" and entry["times_us"]["direct"] == pytest.approx(3.0)
    # reused: in memory, then from the file by a fresh cache (another process); no timing
    again = TableTimer({})
    assert autotune.tune(sp, "highest", FACTS, None, timer=again, cache=cache) == got
    assert autotune.tune(sp, "highest", FACTS, None, timer=again, cache=autotune.Cache(tmp_path)) == got
    assert again.calls == []
    # another precision, dtype or device is another problem
    assert autotune.key(sp, "medium") != autotune.key(sp, "highest")
    other = DeviceFacts(name="Other GPU")
    t2 = TableTimer({"direct": 1e-6})
    assert autotune.tune(sp, "highest", other, lambda n, c: None, timer=t2, cache=cache)[0] == "direct"
    assert t2.calls and autotune.device_file("Other GPU", tmp_path).exists()
    assert not [p for p in (tmp_path / "autotune").iterdir() if p.suffix != ".json"]   # no temporaries left


def test_tune_picks_among_igemm_configs(cache):
    sp = spec2d((4, 64, 14, 14), (64, 64, 3, 3), padding=1, dtype=np.float16)
    ig = [c for n, c in autotune.candidates(sp, FACTS) if n == "implicit_gemm"]
    want = ig[-1]                              # the estimate's last: timing overrules the napkin math
    timer = TableTimer({("implicit_gemm", want["tile"], want["split_k"]): 1e-6}, default=9e-6)
    assert autotune.tune(sp, "highest", FACTS, lambda n, c: None, timer=timer, cache=cache) == \
        ("implicit_gemm", want)


def test_failing_candidates_are_skipped(cache):
    sp = spec2d((2, 16, 9, 11), (24, 16, 3, 3), padding=1)

    def timer(run, cand):
        if cand[0] != "direct":
            raise MemoryError(f"{cand[0]}: out of memory")
        return 1e-3
    assert autotune.tune(sp, "highest", FACTS, None, timer=timer, cache=cache)[0] == "direct"
    entry = cache.get(FACTS.name, autotune.key(sp, "highest"))
    assert any("out of memory" in e for e in entry["errors"].values())

    def broken(run, cand):
        raise RuntimeError("launch refused")
    sp2 = spec2d((2, 16, 9, 13), (24, 16, 3, 3), padding=1)
    with pytest.raises(RuntimeError, match="launch refused"):
        autotune.tune(sp2, "highest", FACTS, None, timer=broken, cache=cache)


@pytest.mark.parametrize("content", [b"{not json", b"\x00" * 40, b'{"format": 99, "entries": {}}', b"[1, 2]"])
def test_corrupt_file_is_ignored_with_a_warning_and_rewritten(tmp_path, content):
    sp = spec2d((2, 16, 9, 11), (24, 16, 3, 3), padding=1)
    path = autotune.device_file(FACTS.name, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    cache = autotune.Cache(tmp_path)
    with pytest.warns(RuntimeWarning, match="autotune.*(corrupt|cannot read)"):
        got = autotune.tune(sp, "highest", FACTS, None, timer=TableTimer({"direct": 1e-6}), cache=cache)
    assert got[0] == "direct"
    data = json.loads(path.read_text())                # rewritten, valid
    assert data["entries"][autotune.key(sp, "highest")]["variant"] == "direct"


def test_stale_or_unsafe_winner_is_not_used(cache):
    sp = spec2d((2, 16, 9, 11), (24, 16, 3, 3), padding=1)
    k = autotune.key(sp, "highest")
    cache.put(FACTS.name, k, {"variant": "winograd", "config": {}})
    timer = TableTimer({"direct": 1e-6})
    assert autotune.tune(sp, "highest", FACTS, None, timer=timer, cache=cache)[0] == "direct" and timer.calls
    # while capturing: nothing is timed; a recorded cuBLAS winner is not used
    cache.put(FACTS.name, k, {"variant": "im2col", "config": {"chunk": 2}})
    cap = DeviceFacts(name=FACTS.name, capturing=True)
    t2 = TableTimer({})
    assert autotune.tune(sp, "highest", cap, None, timer=t2, cache=cache) is None and t2.calls == []
    cache.put(FACTS.name, k, {"variant": "direct", "config": {}})
    assert autotune.tune(sp, "highest", cap, None, timer=t2, cache=cache) == ("direct", {})


def test_set_autotune_flag():
    assert gpuconv.get_autotune() is False
    try:
        gpuconv.set_autotune(True)
        assert gpuconv.get_autotune() is True
    finally:
        gpuconv.set_autotune(False)
    with pytest.raises(TypeError, match="bool"):
        gpuconv.set_autotune(1)


@pytest.mark.sim
def test_forward_autotunes_in_the_simulator(tmp_path, monkeypatch, rng):
    """conv2d with autotuning on, in the simulator: the injected timer's fastest candidate is
    the one launched (seen through the backend's get_function), the result matches the float64
    reference, the winner is in the device's JSON file, and a second call times nothing."""
    from gpuconv.sim import SimBackend
    monkeypatch.setattr(autotune, "_default_cache", autotune.Cache(tmp_path))
    timer = TableTimer({"direct": 9e-6, "tiled_smem": 8e-6, "tiled_smem_small": 1e-6, "im2col": 7e-6},
                       launch=True)
    monkeypatch.setattr(autotune, "TIMER", timer)
    monkeypatch.setattr(cuda_conv, "POISON_OUTPUT", True)
    be = SimBackend()
    seen = []
    real = be.get_function
    monkeypatch.setattr(be, "get_function", lambda m, names, name: (seen.append(m), real(m, names, name))[1])
    x = randn(rng, (2, 5, 9, 11), np.float32)
    w = randn(rng, (6, 5, 3, 3), np.float32)
    b = randn(rng, (6,), np.float32)
    sp = spec2d(x.shape, w.shape, padding=1)
    ref = reference.conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), sp)
    gpuconv.set_autotune(True)
    try:
        with gpuconv.use_backend(be):
            y = gpuconv.conv2d(x, w, b, padding=1)
            assert {n for n, _ in timer.calls} == {n for n, _ in autotune.candidates(sp, DeviceFacts())}
            seen.clear()
            n_calls = len(timer.calls)
            y2 = gpuconv.conv2d(x, w, b, padding=1)
    finally:
        gpuconv.set_autotune(False)
    assert len(timer.calls) == n_calls                         # reused, not re-timed
    assert seen and set(seen) == {"conv2d_tiled_smem.cu"}      # the winner ran
    assert_close(y, ref, np.float32)
    assert_close(y2, ref, np.float32)
    data = json.loads(autotune.device_file(DeviceFacts().name, tmp_path).read_text())
    assert data["entries"][autotune.key(sp, "highest")]["variant"] == "tiled_smem_small"


def _bench_result():
    shape = [2, 16, 9, 11, 24, 3, 3, 1, 1, 1, 1]
    res = [{"impl": "gpuconv:auto", "status": "ok", "median_s": 1e-6},
           {"impl": "gpuconv:direct", "status": "ok", "median_s": 5e-6},
           {"impl": "gpuconv:tiled_smem_small", "status": "ok", "median_s": 3e-6},
           {"impl": "gpuconv:im2col", "status": "FAIL"},
           {"impl": "cudnn:nchw", "status": "ok", "median_s": 1e-7}]
    return {"cases": [{"suite": "s", "name": "c", "op": "conv2d", "shape": shape, "dtype": "tf32",
                       "results": res, "dispatch": {"pick": "tiled_smem"}, "error": None},
                      {"suite": "s", "name": "g", "op": "conv2d_weight", "shape": shape, "dtype": "float32",
                       "results": res, "error": None}]}


def test_bench_results_become_autotune_entries(tmp_path):
    """The benchmark's timed variants (CUDA-event medians) give the same entries tune() makes:
    the fastest named variant (not auto, not an anchor, not a failure) at its default config,
    keyed by shape, dtype and the --dtype's precision (tf32 -> 'medium')."""
    entries = autotune.entries_from_bench(_bench_result(), FACTS)
    sp = spec2d((2, 16, 9, 11), (24, 16, 3, 3), padding=1)
    assert list(entries) == [autotune.key(sp, "medium")]
    e = entries[autotune.key(sp, "medium")]
    assert e["variant"] == "tiled_smem_small" and e["source"] == "gpu_record" and e["dispatcher_pick"] == "tiled_smem"
    assert e["times_us"] == {"direct": pytest.approx(5.0), "tiled_smem_small": pytest.approx(3.0)}
    path = autotune.record_bench(_bench_result(), FACTS, tmp_path)
    cache = autotune.Cache(tmp_path)
    assert path == cache.path(FACTS.name)
    t = TableTimer({})
    assert autotune.tune(sp, "medium", FACTS, None, timer=t, cache=cache)[0] == "tiled_smem_small" and not t.calls


def test_gpu_record_bench_worker_writes_the_autotune_file(tmp_path, monkeypatch):
    import argparse
    import importlib.util
    import sys
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "gpu_record", Path(__file__).resolve().parent.parent / "bench" / "gpu_record.py")
    gpu_record = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_record", gpu_record)     # dataclasses look their module up
    spec.loader.exec_module(gpu_record)
    from gpuconv.bench import plot, runner
    monkeypatch.setattr(runner, "run", lambda cases, opts, on_case=None: _bench_result())
    monkeypatch.setattr(plot, "plot", lambda result, path: None)
    got = gpu_record._worker_bench(argparse.Namespace(out=str(tmp_path), sim=True, seconds=5.0))
    assert got["autotune"] == "autotune/simulator.json"
    data = json.loads((tmp_path / "autotune" / "simulator.json").read_text())
    assert data["device"] == "simulator" and len(data["entries"]) == 1


def test_disagreements_list_where_the_measurement_overrules_the_dispatcher(tmp_path, capsys):
    path = autotune.record_bench(_bench_result(), FACTS, tmp_path)
    sp = spec2d((2, 16, 9, 11), (24, 16, 3, 3), padding=1)
    pick = dispatch.choose(sp, DeviceFacts(), "medium")[0]
    rows = autotune.disagreements(path)
    assert pick != "tiled_smem_small" and len(rows) == 1
    assert rows[0]["winner"] == "tiled_smem_small" and rows[0]["pick"] == pick and rows[0]["case"] == "s/c"
    assert autotune._main([str(path)]) == 0 and "1 disagreement(s)" in capsys.readouterr().out
    cache = autotune.Cache(tmp_path)
    cache.put(FACTS.name, autotune.key(sp, "medium"), {"variant": pick, "config": {}, "times_us": {}})
    assert autotune.disagreements(path) == []
