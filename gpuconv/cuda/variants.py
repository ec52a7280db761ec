"""Registry of the conv-forward variants: name -> Variant, one calling convention.

    v = get("tiled_smem")
    ok, reason = v.supports(spec)
    config = v.default_config(spec, facts)
    v.workspace_bytes(spec, config)       # device bytes beyond the output
    v.launch(backend, x, w, b, y, spec, act, config)

`MODULES` lists, per file of kernels_cu/, every template instantiation any
launcher may ask for: the loader compiles them together (one RawModule per
file), the simulator builds them, and `gpuconv kernels` checks each for
registers and spills.  Tests and benchmarks loop over `conv_variant_names()`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import launchers as L
from ._types import CTYPES, expr
from .facts import DeviceFacts
from ..spec import ConvSpec

SIGNAL_MODULE = "signal2d.cu"
SIGNAL_BOUNDARIES = {"fill": 0, "wrap": 1, "symm": 2}
SIGNAL_KERNELS = ("correlate2d_tiled", "correlate2d_direct")
# scipy.signal never computes in float16, so the signal core has no __half instantiation
SIGNAL_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128,
                                            np.int32, np.int64))
SIGNAL_INSTANTIATIONS = tuple(
    expr(k, CTYPES[dt], b) for k in SIGNAL_KERNELS for dt in SIGNAL_DTYPES
    for b in SIGNAL_BOUNDARIES.values())

MODULES: dict[str, tuple[str, ...]] = {
    L.DIRECT_MODULE: L.DIRECT_INSTANTIATIONS,
    L.TILED_MODULE: L.TILED_INSTANTIATIONS,
    L.IM2COL_MODULE: L.IM2COL_INSTANTIATIONS,
    L.DEPTHWISE_MODULE: L.DEPTHWISE_INSTANTIATIONS,
    SIGNAL_MODULE: SIGNAL_INSTANTIATIONS,
}
# The operation kernels (transposed conv, weight gradient, fused separable) are not
# conv-forward variants, but their instantiations belong to the same compile check and
# simulator builds.
from .ops_modules import OPS_MODULES  # noqa: E402

MODULES.update(OPS_MODULES)


@dataclass(frozen=True)
class Variant:
    name: str
    module: str
    summary: str
    supports: Callable[[ConvSpec], tuple[bool, str]]
    default_config: Callable[[ConvSpec, DeviceFacts], dict]
    workspace_bytes: Callable[[ConvSpec, dict], int]
    launch: Callable

    @property
    def instantiations(self) -> tuple[str, ...]:
        return MODULES[self.module]


def _direct_supports(spec: ConvSpec):
    if spec.dtype not in L.REAL:
        return False, f"dtype {spec.dtype} (direct is real-only; complex runs on 'im2col')"
    return True, "any 1-D/2-D/3-D real geometry"


_REGISTRY: dict[str, Variant] = {}


def register(v: Variant) -> Variant:
    if v.name in _REGISTRY:
        raise ValueError(f"variant {v.name!r} registered twice")
    _REGISTRY[v.name] = v
    return v


register(Variant(
    name="direct", module=L.DIRECT_MODULE,
    summary="one thread per output; every geometry; the readable baseline",
    supports=_direct_supports,
    default_config=lambda spec, facts: {},
    workspace_bytes=lambda spec, config: 0,
    launch=L.launch_direct))

for _name, _tile in L.TILES.items():
    register(Variant(
        name=_name, module=L.TILED_MODULE,
        summary=(f"{_tile[0]}x{_tile[1]} output tile x {_tile[2]} channels per block, input halo "
                 f"and filter in shared memory, {_tile[3]}x{_tile[4]} outputs per thread"),
        supports=(lambda t: lambda spec: L.tiled_supports(t, spec))(_tile),
        default_config=(lambda t: lambda spec, facts: {"ct": L.tiled_ct(t, spec)})(_tile),
        workspace_bytes=lambda spec, config: 0,
        launch=L.make_launch_tiled(_tile)))

register(Variant(
    name="im2col", module=L.IM2COL_MODULE,
    summary="im2col lowering + GEMM through xp.matmul (cuBLAS), batch chunked to a bounded workspace",
    supports=L.im2col_supports,
    default_config=lambda spec, facts: {"chunk": L.im2col_chunk(spec, facts.free_bytes)},
    workspace_bytes=L.im2col_workspace,
    launch=L.launch_im2col))


register(Variant(
    name="depthwise", module=L.DEPTHWISE_MODULE,
    summary=("one input channel per group: a plane's input tile + halo in shared memory, "
             "2-4 outputs per thread along a row, 3x3/5x5 taps in registers"),
    supports=L.depthwise_supports,
    default_config=lambda spec, facts: L.depthwise_config(spec),
    workspace_bytes=lambda spec, config: 0,
    launch=L.launch_depthwise))


# Tensor-core implicit GEMM: its launcher and instantiation list live in their own module.
from . import launch_implicit_gemm as IG  # noqa: E402

MODULES[IG.IGEMM_MODULE] = IG.IGEMM_INSTANTIATIONS
MODULES[IG.IGEMM_BF16_MODULE] = IG.IGEMM_BF16_INSTANTIATIONS
MODULES[IG.MMA_CHECK_MODULE] = IG.MMA_CHECK_INSTANTIATIONS
register(Variant(
    name="implicit_gemm", module=IG.IGEMM_MODULE,
    summary=("tensor-core implicit GEMM (float16, fp32 accumulate): NHWC staging copy, 128x128x32 "
             "tile, 3-stage cp.async, ldmatrix + mma.sync m16n8k16, fused bias/activation"),
    supports=IG.igemm_supports,
    default_config=IG.igemm_config,
    workspace_bytes=IG.igemm_workspace,
    launch=IG.launch_implicit_gemm))


def conv_variant_names() -> tuple[str, ...]:
    """Registered conv-forward variants, in registration order (stable)."""
    return tuple(_REGISTRY)


def get(name: str) -> Variant:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown conv algorithm {name!r}; registered variants: "
                         f"{', '.join(conv_variant_names())}") from None


def supported(spec: ConvSpec) -> tuple[str, ...]:
    return tuple(n for n, v in _REGISTRY.items() if v.supports(spec)[0])
