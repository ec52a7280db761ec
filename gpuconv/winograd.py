"""Winograd F(2x2, 3x3) for 3x3 stride-1 2-D convolutions on the CPU path.

Each 2x2 block of outputs is computed from a 4x4 input tile as
    Y = A^T [ (G g G^T) (.) (B^T d B) ] A
so the channel reduction becomes 16 independent GEMMs (one per element of the
4x4 transformed tile), each (Kg x Cg) @ (Cg x tiles): 16 multiplies per 2x2
outputs instead of 36, 2.25x fewer GEMM FLOPs.  Dilation d is folded into the
batch by polyphase decomposition: the d_h*d_w phases (a, b) of the padded input
(rows a, a+d, a+2d, ...) are independent undilated 3x3 convolutions whose
outputs are the matching phases of the output.

Napkin math, 8x64x56x56 -> 64 (the cpu suite's 3x3_64_56), float32, 2 cores:
direct GEMM 2*64*576*25088 = 1.85 GFLOP, 12 ms at OpenBLAS's ~155 GFLOP/s;
Winograd 16 GEMMs of 64x64 @ 64x(8*29*29) = 0.88 GFLOP (0.82 useful, the rest is
the junk tile row/column below), plus the transforms: 24 passes over a quarter
of the input; the output transform is one (4x16) GEMM (_AT16) and four strided
copies.

Layout.  The input is gathered (one strided copy, padding and the N<->C
transpose folded in) into the four 2x2 phases X_pq[c, b, th, tw] =
xpad[n, c, a + d_h*(2 th + p), b + d_w*(2 tw + q)] of a (TH+1) x (TW+1) tile
grid per image-phase b = (n, a, b).  Tile (th, tw)'s input element (i, j) is
then X_{i%2, j%2} at flat position f + (i//2)*(TW+1) + j//2 (f = its flat index):
every transform operand is one contiguous shifted run over all channels and
images (the extra grid row and column are junk tiles, computed and dropped),
so each transform step is a single 1-D NumPy pass, never a loop over rows.
The transformed input V (16, C, B*T) is the GEMM's right operand as it stands.

Exact in floating point up to rounding (the transform matrices hold 0, +-1 and
+-1/2); integer dtypes stay on the GEMM path.
"""
from __future__ import annotations

import numpy as np

from ._cpu import run_jobs, scratch
from .reference import fill_extended
from .spec import ConvSpec

# G, the weight transform (B^T is written out as the adds below).
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
# The output transform A^T m A of every tile as one (4 x 16) @ (16 x K*B*T) GEMM:
# row 2i+j holds A^T[i, a] A^T[j, b] at column 4a+b, A^T = [[1,1,1,0],[0,1,-1,-1]].
# Measured per 64-channel 56x56 image (float32, 2 cores): GEMM 0.14 ms + the
# strided scatter 0.10, against 0.5 ms for the 24 element-wise passes it replaces
# (8x64x56x56: output transform 4.0 -> ~2 ms).
_AT = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]])
_AT16 = np.einsum("ia,jb->ijab", _AT, _AT).reshape(4, 16)


def usable(spec: ConvSpec, dt) -> bool:
    """3x3 stride 1 in 2-D, floating or complex compute dtype."""
    return (spec.nd == 2 and spec.kernel == (3, 3) and spec.stride == (1, 1)
            and np.dtype(dt).kind in "fc")


def transform_weight(w: np.ndarray, g: int, dt) -> np.ndarray:
    """(K, Cg, 3, 3) -> (16, G, Kg, Cg): G w G^T per (k, c), element (a, b) -> 4a+b."""
    k, cg = w.shape[:2]
    u = np.einsum("ar,kcrs,bs->abkc", _G.astype(dt), w, _G.astype(dt), optimize=True)
    return np.ascontiguousarray(u.reshape(16, g, k // g, cg), dtype=dt)


def conv_winograd(x: np.ndarray, w: np.ndarray, spec: ConvSpec, dt) -> np.ndarray:
    """Forward conv of `spec` (usable(spec)) on unpadded x (N, C, H, W); returns (N, K, P, Q)."""
    n, c, k, g = spec.n, spec.c, spec.k, spec.groups
    cg = spec.c_per_group
    p_out, q_out = spec.out_size
    dh, dw = spec.dilation
    # Tiles per image-phase: phase 0 has the most output rows, ceil(P/dh).
    th_n = -(-(-(-p_out // dh)) // 2)
    tw_n = -(-(-(-q_out // dw)) // 2)
    geo = _Geometry(rows=th_n + 1, cols=tw_n + 1, dh=dh, dw=dw)   # + the row/column tiles overlap into
    t_n = geo.rows * geo.cols                       # grid cells per image-phase (junk included)
    per_image = 16 * max(c, k) * dh * dw * t_n
    nb = max(1, min(n, _CHUNK_ELEMS // max(per_image, 1)))
    u_w = transform_weight(w, g, dt)
    out = np.empty((n, k, p_out, q_out), dtype=dt)
    v_buf = scratch("winograd_v", 16 * c * nb * dh * dw * t_n, dt)
    m_buf = scratch("winograd_m", 16 * k * nb * dh * dw * t_n, dt)
    y_buf = scratch("winograd_y", 4 * k * nb * dh * dw * t_n, dt)
    at = _AT16.astype(dt)
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        bt = (n1 - n0) * dh * dw * t_n
        v = v_buf[:16 * c * bt].reshape(16, c * bt)
        run_jobs(lambda c0, c1: _input_transform(x[n0:n1], spec, geo, v, c0, c1, dt),
                 _slabs(c, bt), 16 * c * bt)
        mo = m_buf[:16 * k * bt].reshape(16, g, k // g, bt)
        np.matmul(u_w, v.reshape(16, g, cg, bt), out=mo)
        y = y_buf[:4 * k * bt].reshape(4, k * bt)
        np.matmul(at, mo.reshape(16, k * bt), out=y)
        _scatter_output(y, spec, geo, out[n0:n1])
    return out


class _Geometry:
    def __init__(self, rows, cols, dh, dw):
        self.rows, self.cols, self.dh, self.dw = rows, cols, dh, dw


def _input_transform(x, spec: ConvSpec, geo: _Geometry, v, c0, c1, dt):
    """Gather channels [c0, c1) of x into the four tile phases, then B^T d B into v
    (16, C*B*T).  B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]: rows, then columns."""
    n = x.shape[0]
    (pt, _), (pl, _) = spec.pad
    rows, cols, dh, dw = geo.rows, geo.cols, geo.dh, geo.dw
    bt = n * dh * dw * rows * cols
    m = (c1 - c0) * bt
    # X[pq][c, (n, a, b), th, tw] = xpad[n, c, a + dh*(2 th + p), b + dw*(2 tw + q)],
    # xpad the input padded in spec.padding_mode (zeros: only the interior is
    # copied; other modes gather the border by their index map, no padded copy of
    # x); `cols + 1` of tail for the shifted runs.
    xs = np.zeros((4, m + cols + 1), dtype=dt)
    src = x[:, c0:c1].swapaxes(0, 1)
    for p in range(2):
        for q in range(2):
            dst = xs[2 * p + q, :m].reshape(c1 - c0, n, dh, dw, rows, cols)
            for a in range(dh):
                for b in range(dw):
                    fill_extended(dst[:, :, a, b], src, (a + dh * p - pt, b + dw * q - pl),
                                  (2 * dh, 2 * dw), spec.padding_mode, border_zeroed=True)
    lo, hi = c0 * bt, c1 * bt
    u = np.empty((4, 2, m + 1), dtype=dt)          # tile rows transformed, per column phase
    for jp in (0, 1):
        x0, x1 = xs[jp, :m + 1], xs[2 + jp, :m + 1]               # tile rows 0, 1
        x2, x3 = xs[jp, cols:m + 1 + cols], xs[2 + jp, cols:m + 1 + cols]   # tile rows 2, 3
        np.subtract(x0, x2, out=u[0, jp])
        np.add(x1, x2, out=u[1, jp])
        np.subtract(x2, x1, out=u[2, jp])
        np.subtract(x1, x3, out=u[3, jp])
    for a in range(4):
        e0, e1 = u[a, 0, :m], u[a, 1, :m]                   # tile columns 0, 1
        e2, e3 = u[a, 0, 1:], u[a, 1, 1:]                   # tile columns 2, 3
        np.subtract(e0, e2, out=v[4 * a, lo:hi])
        np.add(e1, e2, out=v[4 * a + 1, lo:hi])
        np.subtract(e2, e1, out=v[4 * a + 2, lo:hi])
        np.subtract(e1, e3, out=v[4 * a + 3, lo:hi])


def _scatter_output(y, spec: ConvSpec, geo: _Geometry, out):
    """Output element (i, j) of every tile, y[2i+j] (K, (n, a, b, th, tw)), into
    out (n, K, P, Q) at rows a + dh*(2 th + i), columns b + dw*(2 tw + j): one
    strided copy per (i, j) and dilation phase, junk and partial tiles cropped."""
    n = out.shape[0]
    p_out, q_out = spec.out_size
    rows, cols, dh, dw = geo.rows, geo.cols, geo.dh, geo.dw
    grid = (out.shape[1], n, dh, dw, rows, cols)
    for i in range(2):
        for j in range(2):
            o = y[2 * i + j].reshape(grid)
            for a in range(dh):
                rr = range(a + dh * i, p_out, 2 * dh)
                for b in range(dw):
                    cc = range(b + dw * j, q_out, 2 * dw)
                    if len(rr) and len(cc):
                        out[:, :, rr.start::2 * dh, cc.start::2 * dw] = \
                            o[:, :, a, b, :len(rr), :len(cc)].swapaxes(0, 1)


# Elements of the transformed input (or output) per chunk of images.
_CHUNK_ELEMS = 1 << 20


# Elements per transform job (a slab of channels, all images); see cpu.py for
# the thread pool.  The slabs only need to amortise the per-call overhead.
_TRANSFORM_SLAB_ELEMS = 1 << 18


def _slabs(channels: int, per_channel: int):
    step = max(1, _TRANSFORM_SLAB_ELEMS // max(per_channel, 1))
    return [(c0, min(channels, c0 + step)) for c0 in range(0, channels, step)]
