"""pytest-benchmark entry points (not part of the default `pytest` run, whose
testpaths is tests/):

    pytest bench/ --benchmark-only                                  # cpu suite, or GPU suites on a GPU
    pytest bench/ --benchmark-only --gpuconv-suite resnet50_b32     # repeatable
    pytest bench/ --benchmark-only --benchmark-save=NAME            # compare commits:
    pytest bench/ --benchmark-only --benchmark-compare              #   pytest-benchmark's own store

`gpuconv bench` is the full report (ceilings, anchors, ratios); these are for
tracking gpuconv's own times across commits.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pytest_addoption(parser):
    parser.addoption("--gpuconv-suite", action="append", default=None,
                     help="gpuconv.bench suite to benchmark (repeatable)")
    parser.addoption("--gpuconv-dtype", default="float32",
                     help="dtype for cases without a fixed one (float32, float16, ... )")


def _on_gpu() -> bool:
    from gpuconv.bench.env import cuda_facts
    return bool(cuda_facts().get("available"))


def pytest_generate_tests(metafunc):
    if "bench_case" not in metafunc.fixturenames:
        return
    from gpuconv.bench import suites
    gpu = _on_gpu()
    names = metafunc.config.getoption("--gpuconv-suite") or (
        ["resnet50_b32", "mobilenetv2_dw", "signal"] if gpu else ["cpu"])
    cases = suites.get(names)
    metafunc.parametrize("bench_case", cases, ids=[c.id for c in cases])


def pytest_configure(config):
    # CPU timings: the same fixed malloc thresholds as `gpuconv bench` (see
    # gpuconv.bench.timing.steady_malloc), so times compare across commits.
    if not _on_gpu():
        from gpuconv.bench.timing import steady_malloc
        steady_malloc()

