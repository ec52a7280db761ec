"""What every kernel family's launcher shares: the calling convention of a conv
variant, the one geometry, typed scalars, launch limits, argument checks.

    geometry(spec) -> Geometry           the 23 values of CONV_GEOMETRY_PARAMS, by name
    geometry_args(spec) -> tuple         the same as int32 kernel arguments, in order
    blocks(total, threads)               grid size of a grid-stride kernel
    bias_args(b, w)                      (pointer, has_bias) for the fused epilogue
    check_array / output_array           shapes and dtypes of a device operation's arrays

The geometry reaches every conv kernel from one place.  kernels_cu/common.cuh declares
the parameter list once (CONV_GEOMETRY_PARAMS: N, C, D, H, W, K, KD, R, S, OD, P, Q,
sd, sh, sw, pd, ph, pw, dd, dh, dw, groups, pmode) and every conv kernel's signature uses it;
`geometry_args` is the only code that produces those values, from spec.view3d() (1-D
and 2-D problems as 3-D with unit leading dims), in GEOMETRY_FIELDS order, which a test
compares with the macro's text.  No launcher orders a geometry by hand.  Scalars, not
one struct passed by value: CuPy copies a NumPy scalar argument into CScalar's inline
buffer of 64 bytes (cupy/_core/_scalar.pxd: clongdouble _data[2], and _scalar.pyx
asserts itemsize < its size), short of the geometry's 23 x 4 = 92 bytes.

Scalars go to the kernels as explicitly typed NumPy scalars (I32 for int, I64 for long
long): CuPy passes a NumPy scalar with its exact C type, and a Python int would arrive
as a 64-bit value.  The simulator checks every argument's type against the kernel's
C++ signature.  No launcher synchronises.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from ..spec import ConvSpec

I32 = np.int32
I64 = np.int64
INT32_MAX = 2**31 - 1
GRID_YZ_MAX = 65535              # gridDim.y and gridDim.z limit on every architecture
# Shared memory a block may use without cudaFuncSetAttribute's opt-in (48 KiB on every
# architecture since sm_20); no launcher opts in, so every tile is sized within it.
SMEM_LIMIT = 48 * 1024
# Grid-stride kernels: beyond ~8 blocks/SM x 132 SMs x ~1000 waves a larger grid buys
# nothing; the kernel's loop covers the rest.
GRIDSTRIDE_BLOCKS_MAX = 1 << 20


@dataclass(frozen=True)
class Variant:
    """One conv-forward variant: its kernel file, the instantiations it may launch and
    the four functions of the calling convention

        supports(spec) -> (ok, reason)
        default_config(spec, facts) -> dict
        workspace_bytes(spec, config) -> int        device bytes beyond the output
        launch(backend, x, w, b, y, spec, act, config) -> None

    padding_modes: whether the kernels resolve spec.padding_mode while loading (pmode,
    common.cuh pad_index); the dispatcher refuses the others for non-zero modes.

    x (N, C, *in), w (K, C/groups, *kernel), b (K,) or None: C-contiguous arrays of
    backend.xp; y: C-contiguous output of spec.output_shape, written in full; act: an
    activation code (gpuconv.activations.ACTIVATION_CODES)."""

    name: str
    module: str
    instantiations: tuple[str, ...]
    summary: str
    supports: Callable[[ConvSpec], tuple[bool, str]]
    default_config: Callable
    workspace_bytes: Callable[[ConvSpec, dict], int]
    launch: Callable
    padding_modes: bool = False


class Geometry(NamedTuple):
    """A convolution's sizes as 3-D, in the order of CONV_GEOMETRY_PARAMS."""

    N: int
    C: int
    D: int
    H: int
    W: int
    K: int
    KD: int
    R: int
    S: int
    OD: int
    P: int
    Q: int
    sd: int
    sh: int
    sw: int
    pd: int
    ph: int
    pw: int
    dd: int
    dh: int
    dw: int
    groups: int
    pmode: int          # ConvSpec.padding_mode_code (common.cuh PAD_*)


GEOMETRY_FIELDS = Geometry._fields


def geometry(spec: ConvSpec) -> Geometry:
    """spec.view3d() as named sizes (the low padding: the high side only sizes the output)."""
    v = spec.view3d()
    (D, H, W), (KD, R, S), (OD, P, Q) = v.in_size, v.kernel, v.out_size
    (sd, sh, sw), (dd, dh, dw) = v.stride, v.dilation
    pd, ph, pw = (lo for lo, _ in v.pad)
    return Geometry(v.n, v.c, D, H, W, v.k, KD, R, S, OD, P, Q, sd, sh, sw, pd, ph, pw, dd, dh, dw,
                    v.groups, v.padding_mode_code)


def geometry_args(spec: ConvSpec) -> tuple:
    """The kernel arguments of CONV_GEOMETRY_PARAMS: geometry(spec) as int32, or ValueError
    naming the first size the kernels' 32-bit parameters cannot hold."""
    g = geometry(spec)
    for name, v in zip(GEOMETRY_FIELDS, g):
        if not -INT32_MAX <= v <= INT32_MAX:
            raise ValueError(f"{name}={v} exceeds the kernels' 32-bit parameter range")
    return tuple(I32(v) for v in g)


def blocks(total: int, threads: int) -> int:
    """Blocks of a grid-stride kernel over `total` items: at least 1, at most
    GRIDSTRIDE_BLOCKS_MAX."""
    return max(1, min(GRIDSTRIDE_BLOCKS_MAX, -(-total // threads)))


def bias_args(b, w) -> tuple:
    """(bias pointer, has_bias): a valid pointer is always passed (w stands in when there
    is no bias); has_bias tells the kernel whether to read it."""
    return (w, I32(0)) if b is None else (b, I32(1))


def check_array(name, a, shape, dtype):
    """Shape and dtype of an argument of a device operation."""
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, the spec expects {tuple(shape)}")
    if np.dtype(a.dtype) != dtype:
        raise TypeError(f"{name} has dtype {a.dtype}, the spec expects {dtype}")


def output_array(xp, out, shape, dtype, poison=False):
    """`out` checked (shape, dtype, C order), or a new array: empty, or NaN-filled with
    `poison` (an element a kernel fails to write then fails the comparison)."""
    if out is None:
        return xp.full(shape, np.nan, dtype=dtype) if poison else xp.empty(shape, dtype=dtype)
    check_array("out", out, shape, dtype)
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    return out
