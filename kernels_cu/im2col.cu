// im2col.cu -- lowering to a GEMM, for cuBLAS (the launcher calls xp.matmul).
//
// Variants (registry name "im2col"; launcher gpuconv/cuda/families/im2col.py):
//   1. im2col<T>: a chunk of nb images -> column matrix cols[C*taps][nb*L]
//      (row = (c, kd, r, s), column = (image, od, p, q); L = OD*P*Q), so that
//      for group g rows g*Cg*taps .. form the (Cg*taps x nb*L) right operand of
//      out_g (Kg x nb*L) = W_g (Kg x Cg*taps) @ cols_g: one strided-batched GEMM.
//      One thread per column element; consecutive threads write consecutive
//      columns (coalesced) and read inputs sw apart.  1-D/2-D/3-D, all T.
//   2. col2out<T, ACT>: GEMM result [K][nb][L] -> y[n0+b][K][L] with bias +
//      activation fused: the transposition and the epilogue in one pass, both
//      sides coalesced along L.
//   (1x1, stride 1, unpadded layers skip im2col: x itself is the column matrix,
//   the GEMM writes y in place and bias_act<T, ACT> finishes it.)
//
// Napkin math (ResNet-50 3x3, N=32 C=K=256 14x14, float32): cols = C*9*N*196 =
//   14.5M floats = 58 MB written + read once, GEMM 29.6 GFLOP (~0.6 ms at 50
//   TFLOP/s) vs ~40 us of column traffic at 3 TB/s: the lowering costs ~7%.
//   For a 1x1 layer the GEMM is the whole cost.  For depthwise (Cg*taps = 9)
//   the GEMM has inner size 9 and the lowering dominates: never dispatch there.
// Complex dtypes run here only (cuBLAS cgemm/zgemm); ACT is 0 for them.
#include "common.cuh"
#include "epilogue.cuh"

template <typename T>
__global__ void __launch_bounds__(256)
im2col(const T* __restrict__ x, T* __restrict__ cols, CONV_GEOMETRY_PARAMS, int n0, int nb) {
    const i64 L = (i64)OD * P * Q;
    const i64 ncol = (i64)nb * L;
    const int taps = KD * R * S;
    const i64 total = (i64)C * taps * ncol;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (i64)gridDim.x * blockDim.x) {
        const i64 col = idx % ncol;
        const i64 row = idx / ncol;
        const int tap = (int)(row % taps);
        const int c = (int)(row / taps);
        const int s = tap % S, r = (tap / S) % R, a = tap / (S * R);
        const i64 b = col / L;
        i64 l = col - b * L;
        const int q = (int)(l % Q); l /= Q;
        const int p = (int)(l % P);
        const int od = (int)(l / P);
        const int id = od * sd - pd + a * dd, ih = p * sh - ph + r * dh, iw = q * sw - pw + s * dw;
        T v = num<T>::zero();
        if (id >= 0 && id < D && ih >= 0 && ih < H && iw >= 0 && iw < W)
            v = x[((((i64)n0 + b) * C + c) * D + id) * ((i64)H * W) + (i64)ih * W + iw];
        cols[idx] = v;
    }
}

template <typename T, int ACT>
__global__ void __launch_bounds__(256)
col2out(const T* __restrict__ gemm, const T* __restrict__ bias, T* __restrict__ y, int n0, int nb,
        int K, i64 L, int has_bias) {
    const i64 total = (i64)nb * K * L;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (i64)gridDim.x * blockDim.x) {       // idx walks y's chunk: (b, k, l)
        const i64 l = idx % L;
        const i64 bk = idx / L;
        const int k = (int)(bk % K);
        const i64 b = bk / K;
        const T v = gemm[((i64)k * nb + b) * L + l];
        y[(i64)n0 * K * L + idx] = epilogue<T, ACT>(num<T>::load(v), bias, k, has_bias);
    }
}

template <typename T, int ACT>
__global__ void __launch_bounds__(256)
bias_act(T* __restrict__ y, const T* __restrict__ bias, i64 total, int K, i64 L, int has_bias) {
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (i64)gridDim.x * blockDim.x) {
        const int k = (int)((idx / L) % K);
        y[idx] = epilogue<T, ACT>(num<T>::load(y[idx]), bias, k, has_bias);
    }
}
