// separable_fused.cu -- depthwise (C -> C*m channels, any R x S) then pointwise 1x1
// (C*m -> KP) in one kernel: the depthwise result of a tile never goes to global memory.
// The geometry (CONV_GEOMETRY_PARAMS) is the depthwise step's: its K is C*m.
//
//   mid[cm, pos] = sum_{r, s} x[n, cm / m, p*sh - ph + r*dh, q*sw - pw + s*dw] * wd[cm, 0, r, s]
//   y[n, k, pos] = act(sum_cm wp[k, cm] * mid[cm, pos] + bias[k]),  k < KP
//
// Variants (launcher gpuconv/cuda/families/separable_fused.py; the two-pass path --
// depthwise kernel, then the 1x1 GEMM -- stays available as algorithm="two_pass"):
//   1. separable_fused<T, ACT, TP=4, TQ=8, KPT=4>: a block owns one image's 4x8 output tile
//      and ALL C*m intermediate channels of it: phase 1 computes mid[C*m][32] into shared
//      memory (in the accumulator type, so float16 is not rounded between the steps as
//      the two-pass path rounds it); phase 2 has 4 groups of 32 threads (one position
//      each) walk the KP output channels 4 at a time: per cm one conflict-free shared load
//      and 4 broadcast weight loads feed 4 FMAs.
// It applies only when C*m x 32 accumulators fit the 48 KB of shared memory (C*m <= 384
// for float16/float32, 192 for float64): the launcher refuses larger layers.
//
// Napkin math (a fusable pair: N=32, C*m=96, 28x28, 3x3 s1, KP=32, fp32): two passes move x (9.6 MB) + mid written and
//   read (2 x 9.6 MB) + y (3.2 MB) = 32 MB, fused moves 12.8 MB: 2.5x fewer bytes.  But the
//   pointwise step here is an FMA loop at ~1.25 loads per FMA (no tensor cores, no
//   register tile over positions): FLOPs 2*96*32*25088 = 0.15 GFLOP, ~10 us at ~15 TFLOP/s,
//   vs ~4 us for the 12.8 MB at 3 TB/s -- so the fused kernel wins only while KP*C*m is
//   small next to the bytes saved.  MEASURE against two passes on a GPU before making it
//   the default beyond the dispatcher's conservative rule (gpuconv/cuda/separable.py).
#include "common.cuh"
#include "epilogue.cuh"

template <typename T, int ACT, int TP, int TQ, int KPT>
__global__ void __launch_bounds__(128)
separable_fused(const T* __restrict__ x, const T* __restrict__ wd, const T* __restrict__ wp,
                const T* __restrict__ bias, T* __restrict__ y, CONV_GEOMETRY_PARAMS, int KP,
                int has_bias) {
    typedef typename num<T>::acc A;
    constexpr int NPOS = TP * TQ, NT = 128, KL = NT / NPOS;
    static_assert(NT % NPOS == 0, "whole groups of positions per block");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    A* mid = reinterpret_cast<A*>(smem_raw);                  // [CM][NPOS]

    const int tilesQ = (Q + TQ - 1) / TQ, tilesP = (P + TP - 1) / TP;
    i64 bx = blockIdx.x;
    const int tq = (int)(bx % tilesQ); bx /= tilesQ;
    const int tp = (int)(bx % tilesP);
    const i64 n = bx / tilesP;
    const int p0 = tp * TP, q0 = tq * TQ;
    const int CM = K, m = CM / C, RS = R * S;          // the geometry is the depthwise step's
    const int tid = threadIdx.x;

    // phase 1: the depthwise values of every (cm, position) of the tile
    for (int i = tid; i < CM * NPOS; i += NT) {
        const int cm = i / NPOS, pos = i - cm * NPOS;
        const int p = p0 + pos / TQ, q = q0 + pos % TQ;
        A acc = num<T>::zero();
        if (p < P && q < Q) {
            const T* __restrict__ xc = x + (n * C + cm / m) * ((i64)H * W);
            const T* __restrict__ wc = wd + (i64)cm * RS;
            for (int r = 0; r < R; ++r) {
                const int ih = p * sh - ph + r * dh;
                if (ih < 0 || ih >= H) continue;
                for (int s = 0; s < S; ++s) {
                    const int iw = q * sw - pw + s * dw;
                    if (iw < 0 || iw >= W) continue;
                    acc = acc + num<T>::load(xc[(i64)ih * W + iw]) * num<T>::load(wc[r * S + s]);
                }
            }
        }
        mid[i] = acc;
    }
    __syncthreads();

    // phase 2: the pointwise GEMM of the tile, KPT output channels per pass
    const int pos = tid % NPOS, kl = tid / NPOS;
    const int p = p0 + pos / TQ, q = q0 + pos % TQ;
    if (p >= P || q >= Q) return;
    for (int kb = kl * KPT; kb < KP; kb += KL * KPT) {
        A acc[KPT];
#pragma unroll
        for (int j = 0; j < KPT; ++j) acc[j] = num<T>::zero();
        for (int cm = 0; cm < CM; ++cm) {
            const A v = mid[cm * NPOS + pos];
#pragma unroll
            for (int j = 0; j < KPT; ++j) {
                const int k = min(kb + j, KP - 1);              // past KP: a duplicate, never stored
                acc[j] = acc[j] + v * num<T>::load(wp[(i64)k * CM + cm]);
            }
        }
#pragma unroll
        for (int j = 0; j < KPT; ++j) {
            const int k = kb + j;
            if (k < KP) y[((n * KP + k) * P + p) * (i64)Q + q] = epilogue<T, ACT>(acc[j], bias, k, has_bias);
        }
    }
}
