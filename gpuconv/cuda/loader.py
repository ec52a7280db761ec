"""The one place that builds CUDA modules (cupy.RawModule) from kernels_cu/.

Compile options live here and nowhere else.  Exact math: no --use_fast_math
(the tests compare against a float64 reference; expf/erff keep their ~2 ulp).

Local headers ("common.cuh", "epilogue.cuh") are inlined into the source
before it is handed to NVRTC, with #line directives so compiler messages
point at the real files.  Two reasons: CuPy's on-disk kernel cache is keyed
on the source text and options, not on included files, so an edited header
would otherwise be served stale from the cache; and no -I path into the
installed package is needed.

Modules are memoized per (device, module, name_expressions): a RawModule
compiles once per device on first use (CuPy's disk cache makes later
processes fast).
"""
from __future__ import annotations

import re
import threading
from pathlib import Path

from .._paths import kernels_dir

COMPILE_OPTIONS = ("-std=c++17",)

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
_lock = threading.Lock()
_modules: dict = {}


def read_source(module: str, root: Path | None = None) -> str:
    """Source of kernels_cu/<module> with its local "..." includes inlined (each once)."""
    root = kernels_dir() if root is None else Path(root)
    seen: set[str] = set()

    def expand(name: str) -> str:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"CUDA source {name!r} not found in {root}")
        out = [f'#line 1 "{name}"']
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            m = _INCLUDE.match(line)
            if m and (root / m.group(1)).is_file():
                inc = m.group(1)
                if inc not in seen:
                    seen.add(inc)
                    out.append(expand(inc))
                out.append(f'#line {lineno + 1} "{name}"')
            elif line.strip() == "#pragma once":
                out.append("")
            else:
                out.append(line)
        return "\n".join(out)

    seen.add(module)
    return expand(module) + "\n"


def get_module(module: str, name_expressions: tuple[str, ...]):
    """The RawModule of kernels_cu/<module> with all its instantiations, for the current device."""
    import cupy

    dev = cupy.cuda.runtime.getDevice()
    key = (dev, module, tuple(name_expressions))
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                mod = cupy.RawModule(code=read_source(module), options=COMPILE_OPTIONS,
                                     name_expressions=list(name_expressions))
                _modules[key] = mod
    return mod


_functions: dict = {}


def get_function(module: str, name_expressions: tuple[str, ...], name: str):
    """The kernel `name` (one of name_expressions), memoized per device: the hot path
    is one dict lookup."""
    import cupy

    key = (cupy.cuda.runtime.getDevice(), module, name)
    fn = _functions.get(key)
    if fn is None:
        if name not in name_expressions:
            raise KeyError(f"{name!r} is not among the instantiations of {module}: {name_expressions}")
        fn = get_module(module, tuple(name_expressions)).get_function(name)
        _functions[key] = fn
    return fn
