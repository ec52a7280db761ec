"""gpuconv's version, defined once.

hatchling reads it from here at build time (pyproject.toml: dynamic version,
[tool.hatch.version] path), and `gpuconv.__version__` imports it, so the
version is right both in an installed wheel and in a source tree run with
PYTHONPATH=. (where importlib.metadata would find no installed distribution,
or a stale one).
"""
__version__ = "0.1.0"
