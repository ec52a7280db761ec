"""float64 references for the benchmark's verification step.

The forward conv is the CPU path, gpuconv.cpu.conv, with accumulate='float64'
(held to gpuconv.reference's definition by the tests, and fast on big layers).  The two
gradients are written here as the adjoints of that forward conv, one kernel
tap at a time (R*S BLAS contractions, no pixel loops):

    out[n, g*Kg+k, p, q] = sum_{c,r,s} x[n, g*Cg+c, p*sh - pt + r*dh, q*sw - pl + s*dw] w[g*Kg+k, c, r, s]

    dx = sum over taps of dy contracted with w[..., r, s], scattered to the
         strided positions the tap read;
    dw[..., r, s] = dy contracted with the input the tap read, over n, p, q.
"""
from __future__ import annotations

import numpy as np

from ..cpu import conv
from ..reference import pad_input, windows
from ..spec import ConvSpec


def conv2d_ref(x, w, spec: ConvSpec) -> np.ndarray:
    return conv(x, w, None, spec, accumulate="float64")


def conv2d_input_ref(dy, w, spec: ConvSpec) -> np.ndarray:
    """Gradient of the forward conv `spec` with respect to its input."""
    dy = np.asarray(dy, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n, g, cg, kg = spec.n, spec.groups, spec.c_per_group, spec.k_per_group
    (pt, pb), (pl, pr) = spec.pad
    sh, sw = spec.stride
    dh, dw = spec.dilation
    P, Q = spec.out_size
    dxp = np.zeros((n, spec.c, spec.H + pt + pb, spec.W + pl + pr))
    dyg = dy.reshape(n, g, kg, P, Q)
    wg = w.reshape(g, kg, cg, spec.R, spec.S)
    for r in range(spec.R):
        for s in range(spec.S):
            contrib = np.einsum("ngkpq,gkc->ngcpq", dyg, wg[..., r, s], optimize=True)
            dxp[:, :, r * dh: r * dh + (P - 1) * sh + 1: sh,
                s * dw: s * dw + (Q - 1) * sw + 1: sw] += contrib.reshape(n, spec.c, P, Q)
    return dxp[:, :, pt: pt + spec.H, pl: pl + spec.W]


def conv2d_weight_ref(x, dy, spec: ConvSpec) -> np.ndarray:
    """Gradient of the forward conv `spec` with respect to its weight."""
    x = np.asarray(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    n, g, cg, kg = spec.n, spec.groups, spec.c_per_group, spec.k_per_group
    P, Q = spec.out_size
    win = windows(pad_input(x, spec.pad), spec).reshape(n, g, cg, P, Q, spec.R, spec.S)
    dyg = dy.reshape(n, g, kg, P, Q)
    dwt = np.empty((g, kg, cg, spec.R, spec.S))
    for r in range(spec.R):
        for s in range(spec.S):
            dwt[..., r, s] = np.einsum("ngkpq,ngcpq->gkc", dyg, win[..., r, s], optimize=True)
    return dwt.reshape(spec.weight_shape)


def signal_ref(op: str, img, ker, mode: str) -> np.ndarray:
    """scipy.signal.convolve2d / correlate2d in float64; for large odd filters the
    same result through FFT (error ~1e-12 relative, direct would take seconds)."""
    import scipy.signal as ss
    img = np.asarray(img, dtype=np.float64)
    ker = np.asarray(ker, dtype=np.float64)
    r, s = ker.shape
    if img.size * ker.size > 5e7 and r % 2 == 1 and s % 2 == 1:
        k = ker if op == "convolve2d" else ker[::-1, ::-1]
        return ss.fftconvolve(img, k, mode=mode)
    return getattr(ss, op)(img, ker, mode=mode)
