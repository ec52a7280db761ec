"""The README's Python examples run as written (those that need no GPU), and
its quickstart prints what it says."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_block_runs(i):
    code = BLOCKS[i]
    if "cupy" in code or ">>>" in code:
        pytest.skip("needs a GPU (CuPy) or is a doctest transcript")
    if "SimBackend" in code:
        from gpuconv.sim import sim_available
        if not sim_available():
            pytest.skip("needs the kernel simulator")
    exec(compile(code, f"README.md block {i}", "exec"), {})


def test_quickstart_claims():
    import gpuconv
    image = np.arange(1, 17, dtype=np.float64).reshape(4, 4)
    kernel = np.array([[1.0, 1.0], [-1.0, -1.0]])
    np.testing.assert_array_equal(gpuconv.conv2d(image[None, None], kernel[None, None])[0, 0], np.full((3, 3), -8.0))
    np.testing.assert_array_equal(gpuconv.correlate2d(image, kernel, mode="valid"), np.full((3, 3), -8.0))
    np.testing.assert_array_equal(gpuconv.convolve2d(image, kernel, mode="valid"), np.full((3, 3), 8.0))


def _tagged(tag: str) -> list[str]:
    """The README lines .ci/run reads: `grep -E "^[^#].*# <tag>$"`, the command before the '#'."""
    return [ln.split("#")[0].strip() for ln in README.read_text().splitlines()
            if re.match(rf"^[^#].*# {tag}$", ln)]


def test_install_line_installs_and_runs_the_benchmark():
    """The first command a newcomer runs installs gpuconv and runs its main job; the
    second runs the tests (CI runs both, from these lines)."""
    (install,) = _tagged("install")
    (test,) = _tagged("test")
    assert install.startswith('python -m pip install ".[') and install.endswith("&& gpuconv bench")
    extras = re.search(r'"\.\[([^]]+)\]"', install).group(1).split(",")
    assert {"test", "torch", "bench"} <= set(extras)
    assert test == "python -m pytest"
    ci = (README.parent / ".ci" / "run").read_text()
    assert "readme_cmd install" in ci and "readme_cmd test" in ci
