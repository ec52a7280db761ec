// im2col.cu -- lowering to a GEMM, for cuBLAS (the launcher calls xp.matmul).
//
// Variants (registry name "im2col"; launcher gpuconv/cuda/families/im2col.py):
//   1. im2col<T> (im2col_i64<T>: 64-bit in-plane offsets; im2col_pm / im2col_i64_pm: a
//      non-zero padding mode): a chunk of nb images -> column matrix cols[C*taps][nb*L]
//      (row = (c, kd, r, s), column = (image, od, p, q); L = OD*P*Q), so that
//      for group g rows g*Cg*taps .. form the (Cg*taps x nb*L) right operand of
//      out_g (Kg x nb*L) = W_g (Kg x Cg*taps) @ cols_g: one strided-batched GEMM.
//      Grid (column blocks, row splits): a thread owns one column, decodes it once
//      (3 32-bit divisions), decodes its first row once (3 more), then walks
//      rows_per_split rows carrying (s, r, kd, c) digit by digit: no division and no
//      64-bit multiply per element.  Consecutive threads write consecutive columns
//      (coalesced) and read inputs sw apart.  1-D/2-D/3-D, all T, every padding mode.
//   2. col2out<T, ACT>: GEMM result [K][nb][L] -> y[n0+b][K][L] with bias +
//      activation fused: the transposition and the epilogue in one pass, both
//      sides coalesced along L; grid (L blocks, K, images), no division.
//   (1x1, stride 1, unpadded layers skip im2col: x itself is the column matrix,
//   the GEMM writes y in place and bias_act<T, ACT> finishes it.)
//
// SASS, sm_90, nvcc 13 (`gpuconv kernels --sass --module im2col.cu`), fp32, before -> after:
//   im2col: 190-261 instructions per element written, 3 div32 + 5 64-bit division calls
//     per element -> 17-36 (4 elements per unrolled iteration; the long path carries r/kd/c),
//     0 divisions in the loop, 3 div32 per thread before it; im2col_i64
//     22.5-42.5.
//   col2out: 68-83 per element, 8 64-bit division calls per 4 elements -> 26-29, none;
//   bias_act: 34-58 -> 16, none.
//
// Napkin math (estimates, MEASURE).  Lowering traffic per column element: write + read
//   back by the GEMM = 2 x itemsize, plus the input gather (L1/L2 hits for taps > 1).
//   Issue: ~20 instructions per element at 3.3e13 thread-instr/s (132 SMs x 4 x 32 x
//   1.98 GHz) = 1.6e12 elements/s, above the ~4.8e12/8 = 6e11 elements/s a 4.8 TB/s H200
//   writes and re-reads in fp32: bandwidth-bound (the old ~220 instructions per element
//   gave ~1.5e11 elements/s, about 1.2 TB/s of column traffic at best).
//   ResNet-50 3x3, N=32 C=K=256 14x14, float32: cols = C*9*N*196 = 14.5M floats = 58 MB
//   written + read once: 116 MB / 4.8 TB/s = 24 us (H200; 39 us at an H100's 3.0 TB/s);
//   GEMM 29.6 GFLOP at ~50 TFLOP/s = 0.6 ms: the lowering costs ~4-6%.
//   The SGEMM per column element is 2*Kg FLOPs; the lowering 8 B at 4.8 TB/s = 1.7 ps,
//   the GEMM 2*Kg / 5.7e13 s: lowering/GEMM = 47/Kg (H200), 76/Kg (H100).  The
//   dispatcher's IM2COL_MIN_KG is derived from this (gpuconv/cuda/dispatch.py).
//   For depthwise (Cg*taps = 9) the GEMM has inner size 9 and the lowering dominates:
//   never dispatched there.
// Complex dtypes run here only (cuBLAS cgemm/zgemm); ACT is 0 for them.
#include "common.cuh"
#include "epilogue.cuh"

// I: the type of an offset inside one image's channel (D*H*W elements): im2col<T> takes int,
// im2col_i64<T> long long, which the launcher picks only when that passes 2^31
// (im2col.py index_type).  Image and channel bases are 64-bit pointers, advanced by additions.
// PM: a non-zero padding mode (pmode, common.cuh pad_index), resolved in the lowering: the
// depth and row indices are mapped when their carry changes them (once per S or R*S rows),
// the column index once per element; every tap is then inside the image and the bounds test
// stays as a guard.  Cost per element in a mode: the column's pad_index, ~3 instructions
// inside the image (a pmode compare, an unsigned compare, a select) against the ~17-36 of
// the zeros loop (estimate from the source); PM = false is the zeros loop unchanged.
template <typename T, typename I, bool PM>
__device__ __forceinline__ void
im2col_body(const T* __restrict__ x, T* __restrict__ cols, CONV_GEOMETRY_PARAMS, int n0, int nb,
            int rows_per_split) {
    const int L = OD * P * Q;                       // < 2^31: the launcher's chunk bound
    const int ncol = nb * L;
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= ncol) return;
    const int taps = KD * R * S, rows = C * taps;
    // the column, decoded once: (image b, od, p, q)
    int t = col / Q;
    const int q = col - t * Q;
    int t2 = t / P;
    const int p = t - t2 * P;
    const int b = t2 / OD, od = t2 - b * OD;
    const int id0 = od * sd - pd, ih0 = p * sh - ph, iw0 = q * sw - pw;
    const I plane = (I)D * H * W;
    for (int row0 = blockIdx.y * rows_per_split; row0 < rows; row0 += gridDim.y * rows_per_split) {
        const int row1 = min(rows, row0 + rows_per_split);
        // the first row, decoded once: (c, a, r, s); later rows carry digit by digit
        int c = row0 / taps, tap = row0 - c * taps;
        int a = tap / (R * S); tap -= a * (R * S);
        int r = tap / S, s = tap - r * S;
        int id = id0 + a * dd, ih = ih0 + r * dh, iw = iw0 + s * dw;
        int mid = 0, mih = 0;                        // PM: id, ih mapped
        if (PM) { mid = pad_index(id, D, pmode); mih = pad_index(ih, H, pmode); }
        const T* __restrict__ xc = x + (((i64)n0 + b) * C + c) * (i64)plane;
        T* __restrict__ out = cols + (i64)row0 * ncol + col;
        for (int row = row0; row < row1; ++row) {
            T v = num<T>::zero();
            if (PM) {
                const int miw = pad_index(iw, W, pmode);
                if ((unsigned)mid < (unsigned)D && (unsigned)mih < (unsigned)H && (unsigned)miw < (unsigned)W)
                    v = xc[((I)mid * H + mih) * W + miw];
            } else if ((unsigned)id < (unsigned)D && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W) {
                v = xc[((I)id * H + ih) * W + iw];
            }
            *out = v;
            out += ncol;
            iw += dw;
            if (++s == S) {
                s = 0; iw = iw0; ih += dh;
                if (++r == R) {
                    r = 0; ih = ih0; id += dd;
                    if (++a == KD) { a = 0; id = id0; xc += plane; }
                    if (PM) mid = pad_index(id, D, pmode);
                }
                if (PM) mih = pad_index(ih, H, pmode);
            }
        }
    }
}

// im2col / im2col_i64 (zeros) and im2col_pm / im2col_i64_pm (a non-zero padding mode):
// kernels of their own, because compiled into the zeros kernel the mode's lowering raised it
// from 32 to 40 registers on sm_90 (ptxas -v): 8 -> 6 resident blocks of 256, a quarter of
// the threads a memory-bound loop hides latency with.
template <typename T>
__global__ void __launch_bounds__(256)
im2col(const T* __restrict__ x, T* __restrict__ cols, CONV_GEOMETRY_PARAMS, int n0, int nb,
       int rows_per_split) {
    im2col_body<T, int, false>(x, cols, CONV_GEOMETRY_ARGS, n0, nb, rows_per_split);
}

template <typename T>
__global__ void __launch_bounds__(256)
im2col_i64(const T* __restrict__ x, T* __restrict__ cols, CONV_GEOMETRY_PARAMS, int n0, int nb,
           int rows_per_split) {
    im2col_body<T, i64, false>(x, cols, CONV_GEOMETRY_ARGS, n0, nb, rows_per_split);
}

template <typename T>
__global__ void __launch_bounds__(256)
im2col_pm(const T* __restrict__ x, T* __restrict__ cols, CONV_GEOMETRY_PARAMS, int n0, int nb,
          int rows_per_split) {
    im2col_body<T, int, true>(x, cols, CONV_GEOMETRY_ARGS, n0, nb, rows_per_split);
}

template <typename T>
__global__ void __launch_bounds__(256)
im2col_i64_pm(const T* __restrict__ x, T* __restrict__ cols, CONV_GEOMETRY_PARAMS, int n0, int nb,
              int rows_per_split) {
    im2col_body<T, i64, true>(x, cols, CONV_GEOMETRY_ARGS, n0, nb, rows_per_split);
}

// grid (column blocks over L, K, images), each looping when the grid is capped: no division.
template <typename T, int ACT>
__global__ void __launch_bounds__(256)
col2out(const T* __restrict__ gemm, const T* __restrict__ bias, T* __restrict__ y, int n0, int nb,
        int K, int L, int has_bias) {
    const int l = blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= L) return;
    for (int b = blockIdx.z; b < nb; b += gridDim.z)
        for (int k = blockIdx.y; k < K; k += gridDim.y) {
            const T v = gemm[((i64)k * nb + b) * L + l];
            y[(((i64)n0 + b) * K + k) * L + l] = epilogue<T, ACT>(num<T>::load(v), bias, k, has_bias);
        }
}

template <typename T, int ACT>
__global__ void __launch_bounds__(256)
bias_act(T* __restrict__ y, const T* __restrict__ bias, int N, int K, int L, int has_bias) {
    const int l = blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= L) return;
    for (int n = blockIdx.z; n < N; n += gridDim.z)
        for (int k = blockIdx.y; k < K; k += gridDim.y) {
            const i64 i = ((i64)n * K + k) * L + l;
            y[i] = epilogue<T, ACT>(num<T>::load(y[i]), bias, k, has_bias);
        }
}
