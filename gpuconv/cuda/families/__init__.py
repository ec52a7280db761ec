"""The kernel families: one Python module per kernels_cu/ file, named after it.

    kernels_cu/conv2d_direct.cu       <-> gpuconv/cuda/families/conv2d_direct.py

A family module holds everything Python knows about its kernels: the template
instantiations (`SOURCES`: kernels_cu file -> name expressions), the tile constants,
`supports(spec)`, the configuration (tile, stage depth, plan) and `launch`.  The name
match is the whole scheme: whoever edits a .cu file finds its launcher without a
search, and a kernel file without a module (or the reverse) shows in a directory
listing.  A .cu that is a variant of another's template (conv2d_implicit_gemm_bf16.cu)
belongs to that family's module.  The signal kernels (signal2d.cu) are launched by
gpuconv/cuda/signal.py, which holds their instantiations.

Conv-forward families also export `VARIANTS` (launch.Variant records): the registry
(gpuconv.cuda.variants) is the list of them, in the order below.  Operation families
(transposed conv, weight gradient, fused separable) and the mma.cuh self-test kernels
export an empty VARIANTS; their callers are gpuconv/cuda/{transpose,wgrad,separable}.py.

`MODULES` lists, per kernels_cu file, every instantiation any launcher may ask for: the
loader compiles them together (one RawModule per file), the simulator builds them, and
`gpuconv kernels` checks each for registers and spills.
"""
from __future__ import annotations

from .. import signal
from . import (conv2d_depthwise, conv2d_depthwise_wgrad, conv2d_direct, conv2d_implicit_gemm, conv2d_tiled_smem,
               conv_transpose, conv_wgrad, im2col, mma_check, separable_fused)

FAMILIES = (conv2d_direct, conv2d_tiled_smem, im2col, conv2d_depthwise, conv2d_implicit_gemm,
            conv_transpose, conv_wgrad, conv2d_depthwise_wgrad, separable_fused, mma_check)

MODULES: dict[str, tuple[str, ...]] = {
    **{src: names for family in FAMILIES for src, names in family.SOURCES.items()},
    signal.SIGNAL_MODULE: signal.SIGNAL_INSTANTIATIONS,
}

VARIANTS = tuple(v for family in FAMILIES for v in family.VARIANTS)
