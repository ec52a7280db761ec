"""The single-channel 2-D correlation core behind gpuconv.convolve2d / correlate2d.

    correlate_core(a, k, out_shape, origin, boundary, fillvalue, backend=None)

out[i, j] = sum_{r,s} ext(a)[i + origin[0] + r, j + origin[1] + s] * k[r, s] for
0 <= i < out_shape[-2], 0 <= j < out_shape[-1].  a (M, N) and k (kh, kw) share one
dtype (float32, float64, complex64, complex128, int32, int64 natively; other
integers through int32/int64; integers wrap like NumPy); k is used as given (the caller flips/conjugates).  ext(a) extends a by
boundary: 'fill' -> fillvalue, 'wrap' -> a[i mod M, j mod N], 'symm' ->
half-sample symmetric reflection, period 2M.  origin may be negative.  An empty
`a` is allowed with 'fill' (every tap reads fillvalue); an empty `k` gives zeros.
Returns a new array of out_shape on backend.xp (CuPy by default).  Batches: a
(..., M, N) and k (..., kh, kw) broadcast their leading dimensions (NumPy's rules)
and the output is (*batch, OM, ON), all images in one launch; a broadcast
operand is read in place, never copied per image.

Kernel choice (kernels_cu/signal2d.cu): square 3x3, 5x5 and 7x7 filters of
float32/int32 (3x3 and 5x5 of float64/int64) go to the register-blocked kernel
(taps in registers, 4 rows x one 16-byte vector of outputs per thread); other
filters to the shared-memory tiled kernel when the 32x32 output tile's input
halo plus the filter fit in 48 KB; larger ones to the direct kernel.
"""
from __future__ import annotations

import numpy as np

from ._types import CTYPES, ctype, expr
from .backend import default_backend
from .launch import INT32_MAX, SMEM_LIMIT, blocks as _blocks

SIGNAL_MODULE = "signal2d.cu"
SIGNAL_BOUNDARIES = {"fill": 0, "wrap": 1, "symm": 2}
SIGNAL_KERNELS = ("correlate2d_tiled", "correlate2d_direct")
# correlate2d_regblock<T, BOUNDARY, K>: the square filter sizes it is compiled for, per
# dtype.  Its taps live in registers: 8-byte 7x7 (98 tap registers) spills at the
# 128-register budget and complex would need twice that, so those keep the tiled kernel.
REGBLOCK_SIZES = {np.dtype(np.float32): (3, 5, 7), np.dtype(np.int32): (3, 5, 7),
                  np.dtype(np.float64): (3, 5), np.dtype(np.int64): (3, 5)}
# scipy.signal never computes in float16, so the signal core has no __half instantiation
SIGNAL_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128,
                                            np.int32, np.int64))
SIGNAL_INSTANTIATIONS = tuple(
    expr(k, CTYPES[dt], b) for k in SIGNAL_KERNELS for dt in SIGNAL_DTYPES
    for b in SIGNAL_BOUNDARIES.values()) + tuple(
    expr("correlate2d_regblock", CTYPES[dt], b, K) for dt, sizes in REGBLOCK_SIZES.items()
    for b in SIGNAL_BOUNDARIES.values() for K in sizes)

TILE_X, TILE_Y, ROWS = 32, 8, 4          # kernels_cu/signal2d.cu SIG_TX, SIG_TY, SIG_ROWS
TILE_H = TILE_Y * ROWS
RB_ROWS = 4                              # signal2d.cu RB_ROWS: output rows per thread (TILE_Y threads down)
GRID_Y_MAX = 65535                       # CUDA's limit on gridDim.y: larger batches loop in the kernel
POISON_OUTPUT = False                    # tests: allocate the output NaN-filled (see conv.POISON_OUTPUT)


def tiled_smem_bytes(kh: int, kw: int, itemsize: int) -> int:
    """Input tile with halo + filter + the int row/column maps."""
    th, tw = TILE_H + kh - 1, TILE_X + kw - 1
    return itemsize * (th * tw + kh * kw) + 4 * (th + tw)


def regblock_geometry(K: int, itemsize: int) -> tuple[int, int, int, int]:
    """(tile height, tile width, staged rows, row pitch) of correlate2d_regblock<T, B, K>:
    V = 16 / itemsize outputs per thread along a row, RB_ROWS down; the pitch covers
    the last thread's window of ceil((V + K - 1) / V) vectors."""
    v = 16 // itemsize
    nv = -(-(v + K - 1) // v)
    return TILE_Y * RB_ROWS, TILE_X * v, TILE_Y * RB_ROWS + K - 1, (TILE_X + nv - 1) * v


def regblock_smem_bytes(K: int, itemsize: int) -> int:
    _, _, th, pitch = regblock_geometry(K, itemsize)
    return itemsize * th * pitch + 4 * (th + pitch)


def choose_kernel(kh: int, kw: int, dtype) -> str:
    dt = np.dtype(dtype)
    if kh == kw and kh in REGBLOCK_SIZES.get(dt, ()):
        return "correlate2d_regblock"
    if tiled_smem_bytes(kh, kw, dt.itemsize) <= SMEM_LIMIT:
        return "correlate2d_tiled"
    return "correlate2d_direct"


def correlate_core(a, k, out_shape, origin, boundary, fillvalue, backend=None):
    backend = default_backend() if backend is None else backend
    xp = backend.xp
    if boundary not in SIGNAL_BOUNDARIES:
        raise ValueError(f"boundary must be one of {tuple(SIGNAL_BOUNDARIES)}, got {boundary!r}")
    if a.ndim < 2 or k.ndim < 2:
        raise ValueError(f"correlate_core takes 2-D arrays or batches of them, got {a.ndim}-D "
                         f"and {k.ndim}-D")
    try:
        batch = tuple(np.broadcast_shapes(a.shape[:-2], k.shape[:-2]))
    except ValueError:
        raise ValueError(f"correlate_core: batch dimensions of a {a.shape} and k {k.shape} do "
                         f"not broadcast") from None
    dt = np.dtype(a.dtype)
    if np.dtype(k.dtype) != dt:
        raise TypeError(f"a ({a.dtype}) and k ({k.dtype}) must share one dtype")
    if dt.kind in "iu" and dt not in SIGNAL_DTYPES:
        # any other integer: wrapping arithmetic in a wider type, truncated back, is
        # the same arithmetic modulo 2^bits (int8 via int32, uint64 via int64)
        wide = np.dtype(np.int64 if dt.itemsize == 8 else np.int32)
        fill = np.array([fillvalue], dtype=dt).astype(wide)[0]
        out = correlate_core(a.astype(wide), k.astype(wide), out_shape, origin, boundary, fill, backend)
        return out.astype(dt)
    if dt not in SIGNAL_DTYPES:
        raise TypeError(f"dtype {dt} is not supported by the signal kernels "
                        f"(supported: {', '.join(str(d) for d in SIGNAL_DTYPES)} and other integers)")
    OM, ON = (int(s) for s in out_shape[-2:])
    if len(out_shape) > 2 and tuple(out_shape[:-2]) != batch:
        raise ValueError(f"out_shape {tuple(out_shape)} does not lead with the batch {batch}")
    o0, o1 = (int(o) for o in origin)
    M, N = (int(s) for s in a.shape[-2:])
    kh, kw = (int(s) for s in k.shape[-2:])
    if OM < 0 or ON < 0:
        raise ValueError(f"out_shape must be non-negative, got {tuple(out_shape)}")
    B = int(np.prod(batch, dtype=np.int64))
    shape = batch + (OM, ON)
    out = (xp.full(shape, np.nan, dtype=dt) if POISON_OUTPUT and dt.kind in "fc"
           else xp.empty(shape, dtype=dt))
    if out.size == 0:
        return out
    if (M == 0 or N == 0) and boundary != "fill":
        raise ValueError(f"boundary={boundary!r} cannot extend an empty array of shape {a.shape}")
    # every coordinate the kernels form (and 2*M, 2*N for 'symm') must fit in int32
    lo = min(o0, o1)
    hi = max(OM + o0 + kh, ON + o1 + kw, 2 * M, 2 * N)
    if lo < -INT32_MAX or hi > INT32_MAX:
        raise ValueError(f"correlate_core: coordinates up to {max(-lo, hi)} exceed the kernels' 32-bit range")

    if B > INT32_MAX:
        raise ValueError(f"correlate_core: a batch of {B} images exceeds the kernels' 32-bit range")

    a = xp.ascontiguousarray(a)
    k = xp.ascontiguousarray(k)
    fill = xp.asarray(np.array([fillvalue], dtype=dt))
    offs = xp.asarray(batch_offsets(a.shape, k.shape, batch))
    kernel = choose_kernel(kh, kw, dt)
    targs = (ctype(dt), SIGNAL_BOUNDARIES[boundary]) + ((kh,) if kernel == "correlate2d_regblock" else ())
    fn = backend.get_function(SIGNAL_MODULE, SIGNAL_INSTANTIATIONS, expr(kernel, *targs))
    i32 = np.int32
    args = (a, k, fill, out, i32(M), i32(N), i32(kh), i32(kw), i32(OM), i32(ON), i32(o0), i32(o1),
            offs, i32(B))
    if kernel == "correlate2d_regblock":
        tile_h, tile_w, _, _ = regblock_geometry(kh, dt.itemsize)
        blocks = -(-OM // tile_h) * -(-ON // tile_w)
        if blocks > INT32_MAX:
            raise ValueError(f"output {OM}x{ON} needs {blocks} blocks (> 2^31-1)")
        fn((blocks, min(B, GRID_Y_MAX)), (TILE_X, TILE_Y), args,
           shared_mem=regblock_smem_bytes(kh, dt.itemsize))
    elif kernel == "correlate2d_tiled":
        blocks = -(-OM // TILE_H) * -(-ON // TILE_X)
        if blocks > INT32_MAX:
            raise ValueError(f"output {OM}x{ON} needs {blocks} blocks (> 2^31-1)")
        fn((blocks, min(B, GRID_Y_MAX)), (TILE_X, TILE_Y), args,
           shared_mem=tiled_smem_bytes(kh, kw, dt.itemsize))
    else:
        fn((_blocks(B * OM * ON, TILE_X * TILE_Y),), (TILE_X, TILE_Y), args)
    return out


def batch_offsets(a_shape, k_shape, batch) -> np.ndarray:
    """int64 [a offsets of the B images..., k offsets...] in elements of the contiguous
    a and k: image b of the broadcast batch reads a + offs[b], k + offs[B + b]."""
    B = int(np.prod(batch, dtype=np.int64))
    out = []
    for shape in (a_shape, k_shape):
        lead = tuple(shape[:-2])
        plane = int(np.prod(shape[-2:], dtype=np.int64))
        idx = np.arange(int(np.prod(lead, dtype=np.int64)), dtype=np.int64).reshape(lead)
        out.append(np.broadcast_to(idx, batch).reshape(B) * plane)
    return np.concatenate(out)
