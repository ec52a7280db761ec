"""bench/gpu_record.py, the GPU correctness record: every target it runs
under compute-sanitizer and compares between GPU and simulator works, here in the
simulator, and matches the float64 reference to its dtype's tolerance."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from util import TOLERANCE

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gpu_record", ROOT / "bench" / "gpu_record.py")
gpu_record = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_record)


def test_every_kernel_family_has_a_target():
    from gpuconv.cuda import variants
    names = set(gpu_record.targets())
    assert {f"conv:{v}" for v in variants.conv_variant_names()} <= names
    assert {"transpose", "wgrad", "separable", "signal"} <= names


@pytest.mark.sim
@pytest.mark.parametrize("name", list(gpu_record.targets()))
def test_target_runs_in_the_simulator(name):
    outs = gpu_record.run_target(name, "sim")
    assert outs, f"{name} ran no case"
    for case, out, ref in outs:
        dtype = np.dtype(case.split()[0])
        assert out.shape == ref.shape, case
        assert gpu_record.rel_err(out, ref) <= TOLERANCE[dtype], f"{name} {case}"


def test_rel_err_counts_nan_as_failure():
    assert gpu_record.rel_err(np.array([1.0, np.nan]), np.array([1.0, 2.0])) == float("inf")
    assert gpu_record.rel_err(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == 0.25
