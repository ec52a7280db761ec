// conv_wgrad.cu -- weight gradient of a 2-D forward convolution (1-D runs as H = R = 1):
//
//   dW[g*Kg + k, c, r, s] = sum_{n, p, q} dy[n, g*Kg + k, p, q] * x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw]
//
// A GEMM per group, dW_g (Kg x Cg*R*S) = dy_g (Kg x L) @ cols_g^T (L x Cg*R*S), L = N*P*Q,
// with the columns gathered from x on the fly (no im2col buffer).
//
// Variants (launcher gpuconv/cuda/families/conv_wgrad.py; J = Cg*R*S flattened as
// j = (c*R + r)*S + s):
//   1. conv_wgrad<T, TK=4, TJ=8, MODE>: a block owns a 4 (k) x 8 (j) tile of dW and one
//      fixed chunk of L (blockIdx.z = split); its 128 threads take positions l = start +
//      tid, start + tid + 128, ... (consecutive threads: consecutive q, coalesced loads),
//      each accumulating 32 partial sums in registers, 12 loads per 32 FMAs.
//   2. conv_wgrad<T, TK=1, TJ=16, MODE>: Kg < 4 (depthwise: Kg = m, J = R*S): 16 taps of
//      one k per block, 17 loads per 16 FMAs (memory bound like the layer itself).
//   MODE 0 (default, deterministic): after the loop the block sums its 128 threads' values
//      with a fixed shared-memory tree (7 levels, pairs (t, t + stride)) and writes the
//      tile to its own slice partial[split] of a workspace; conv_wgrad_reduce<T> then sums
//      the splits in ascending order and converts.  The chunking is a function of the
//      shape alone, so two runs -- on any GPU -- give bit-identical results.
//   MODE 1 (deterministic=False): the same block sums, then atomicAdd into one zeroed
//      accumulator buffer (no per-split workspace; run-to-run order varies with scheduling).
// Accumulation: float16 and float32 in float32, float64 in float64, partials in that same
// type, not fp64 for fp32: every partial is already a sum of <= chunk/128 serial
// products plus a 7-level tree, so the error grows like (chunk/128 + 7 + splits) ulps
// rather than L ulps; fp64 would double the workspace and run the FMAs at 1/2 (H100) to
// 1/64 (consumer parts) of the fp32 rate.
//
// Napkin math (ResNet-50 3x3 C=K=64 56x56 N=32, fp32): FLOPs = 2*64*576*100352 = 7.4 GFLOP.
//   Variant 1 re-reads x once per k-tile (Kg/4 = 16 times) and dy once per j-tile (72
//   times), through L2 (5.2 MB of dy + x per image set: L2 resident per split chunk) at
//   12 loads per 32 FMAs: load-issue bound near 1/3 of FP32 peak, ~0.4 ms.  A tiled
//   shared-memory GEMM (dy and the gathered columns staged per 16 positions) is the next
//   variant; MEASURE against cuDNN's wgrad before writing it.
//   Depthwise (MobileNetV2 N=32 C=144 56x56 3x3): bytes = x + dy = 115.6 MB -> 38.5 us at
//   3 TB/s; x re-reads across the 9 taps hit L1.
#include "common.cuh"

template <typename T, int TK, int TJ, int MODE>
__global__ void __launch_bounds__(128)
conv_wgrad(const T* __restrict__ x, const T* __restrict__ dy, typename num<T>::acc* __restrict__ ws,
           CONV_GEOMETRY_PARAMS, i64 chunk) {
    typedef typename num<T>::acc A;
    constexpr int NT = 128;
    static_assert(TK * TJ <= NT, "one thread per tile element writes the result");
    __shared__ int s_c[TJ], s_r[TJ], s_s[TJ];
    __shared__ A s_red[TK * TJ][NT];

    const int Cg = C / groups, Kg = K / groups, RS = R * S, J = Cg * RS;
    const int j0 = blockIdx.x * TJ;
    const int ktiles = (Kg + TK - 1) / TK;
    const int g = blockIdx.y / ktiles, k0 = (blockIdx.y % ktiles) * TK;
    const i64 L = (i64)N * P * Q;
    const i64 lb = (i64)blockIdx.z * chunk;
    const i64 le = min(L, lb + chunk);
    const int tid = threadIdx.x;

    if (tid < TJ) {
        const int j = j0 + tid;
        const int jj = j < J ? j : 0;
        const int c = jj / RS, rs = jj - c * RS;
        const int r = rs / S, s = rs - r * S;
        s_c[tid] = j < J ? c : -1;
        s_r[tid] = r * dh - ph;
        s_s[tid] = s * dw - pw;
    }
    __syncthreads();

    A acc[TK][TJ];
#pragma unroll
    for (int i = 0; i < TK; ++i)
#pragma unroll
        for (int j = 0; j < TJ; ++j) acc[i][j] = num<T>::zero();

    // position l = (n*P + p)*Q + q, advanced by NT in mixed radix (no division in the loop)
    i64 l = lb + tid;
    int q = (int)(l % Q), p = (int)((l / Q) % P);
    i64 n = l / ((i64)P * Q);
    const int dq = NT % Q, dp = (NT / Q) % P, dn = NT / (Q * P);   // NT / (Q*P) is 0 unless tiny maps
    const i64 HW = (i64)H * W;
    for (; l < le; l += NT) {
        A dv[TK];
        const T* __restrict__ dyn = dy + ((n * K + g * Kg + k0) * P + p) * (i64)Q + q;
#pragma unroll
        for (int i = 0; i < TK; ++i)
            dv[i] = num<T>::load(k0 + i < Kg ? dyn[(i64)i * P * Q] : num<T>::zero());
        const T* __restrict__ xn = x + (n * C + (i64)g * Cg) * HW;
        const int ihb = p * sh, iwb = q * sw;
#pragma unroll
        for (int j = 0; j < TJ; ++j) {
            const int c = s_c[j], ih = ihb + s_r[j], iw = iwb + s_s[j];
            A xv = num<T>::zero();
            if (c >= 0 && ih >= 0 && ih < H && iw >= 0 && iw < W) xv = num<T>::load(xn[c * HW + (i64)ih * W + iw]);
#pragma unroll
            for (int i = 0; i < TK; ++i) acc[i][j] = acc[i][j] + dv[i] * xv;
        }
        q += dq; p += dp; n += dn;
        if (q >= Q) { q -= Q; ++p; }
        if (p >= P) { p -= P; ++n; }
    }

    // fixed-order tree over the block's threads: level by level, t += t + stride
#pragma unroll
    for (int i = 0; i < TK; ++i)
#pragma unroll
        for (int j = 0; j < TJ; ++j) s_red[i * TJ + j][tid] = acc[i][j];
    __syncthreads();
    for (int stride = NT / 2; stride > 0; stride >>= 1) {
        if (tid < stride)
            for (int e = 0; e < TK * TJ; ++e) s_red[e][tid] = s_red[e][tid] + s_red[e][tid + stride];
        __syncthreads();
    }
    if (tid < TK * TJ) {
        const int i = tid / TJ, jj = tid - i * TJ;
        const int k = k0 + i, j = j0 + jj;
        if (k < Kg && j < J) {
            const i64 o = (i64)(g * Kg + k) * J + j;
            if (MODE == 0) ws[(i64)blockIdx.z * K * J + o] = s_red[tid][0];
            else atomicAdd(&ws[o], s_red[tid][0]);
        }
    }
}

// dW[i] = sum over splits z = 0, 1, ... (this order) of partial[z][i], converted to T.
template <typename T>
__global__ void __launch_bounds__(256)
conv_wgrad_reduce(const typename num<T>::acc* __restrict__ ws, T* __restrict__ dw, i64 total, int splits) {
    typedef typename num<T>::acc A;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        A s = ws[i];
        for (int z = 1; z < splits; ++z) s = s + ws[(i64)z * total + i];
        dw[i] = num<T>::store(s);
    }
}
