// conv2d_depthwise.cu -- depthwise convolution (one input channel per group, C/groups == 1,
// any depth multiplier m = K/C), 2-D (1-D runs as H = R = 1).
//
// Variants (registry name "depthwise"; launcher gpuconv/cuda/families/conv2d_depthwise.py
// chooses the tile, the planes per block and the filter-size specialisation at run time):
//   1. conv2d_depthwise<T, ACT, TP=8, TQ=32, QPT=4, KS>: 8 warps-worth of a plane tile of
//      8x32 outputs, 4 consecutive outputs per thread along a row, 4 planes per block
//      (blockDim = (8, 8, 4)): the large maps (112x112 .. 28x28).
//   2. conv2d_depthwise<T, ACT, TP=8, TQ=8, QPT=2, KS>: 8x8 outputs per plane, 8 planes per
//      block (blockDim = (4, 8, 8)): the small late-network maps (14x14, 7x7), where the
//      8x32 tile would leave 62% (14x14) to 81% (7x7) of the threads idle.
//   KS = 3 or 5: R = S = KS, the taps live in registers (a plane's threads read the same
//   KS*KS weights: one broadcast each); with stride 1 / dilation 1 along the row a thread
//   slides a register window of QPT+KS-1 inputs per filter row (QPT+KS-1 shared loads for
//   QPT*KS FMAs instead of QPT*KS).  KS = 0: any R, S, dilation; taps in shared memory.
// T in {__half (float accumulate), float, double}; stride, dilation and 4-sided zero padding
// (the high side only shapes P, Q); bias + activation fused (epilogue.cuh).
//
// Schedule of one block (planes (n, k) = blockIdx-derived base + threadIdx.z, one p,q tile):
//   stage the plane's input tile with its halo, IH x IW = ((TP-1)*sh + (R-1)*dh + 1) x
//   ((TQ-1)*sw + (S-1)*dw + 1), zero outside the image, each plane by its own threads
//   (flat index over the tile: consecutive threads read consecutive columns, coalesced);
//   one barrier; each thread computes QPT outputs of one row from shared memory into
//   registers and stores them (a warp writes 4 rows x 32 consecutive elements).
//
// Napkin math from the H100 datasheet; estimates, no GPU has run this kernel (MobileNetV2
// block 3 depthwise: N=32, C=K=144, 56x56, 3x3 s1 p1, float32):
//   bytes = 4 * (N*C*H*W + N*K*P*Q) = 4 * (14.45M + 14.45M) = 115.6 MB (weights 5 KB);
//   at ~3.0 TB/s of copy bandwidth (an H100 SXM's, estimated) that is 38.5 us, so the 75%
//   target is 51 us.
//   FLOPs = 2*9*14.45M = 0.26 GFLOP = 6.8 TFLOP/s at 38.5 us: 10% of FP32 peak; memory bound.
//   Halo overhead: a 8x32 tile reads 10x34 inputs = 1.33x its own; neighbours' halos hit
//   L2 (50 MB), so DRAM traffic stays ~input + output.  Shared loads per output: 3*(4+2)/4
//   = 4.5 (window path), 9 (strided path); 132 SMs x 32 words/clk x 1.98 GHz = 8.4e12
//   words/s against 3e12/8 B = 3.75e11 outputs/s x 4.5 = 1.7e12: 20% of shared bandwidth.
//   fp16 halves the bytes per output: 40% of shared bandwidth, still memory bound.
//   Registers (KS=3, fp32): 9 taps + 4 acc + 6-wide window + addressing, ~40/thread.
//   (MEASURE on a GPU: achieved GB/s vs the copy ceiling, and vs cuDNN via torch.)
#include "common.cuh"
#include "epilogue.cuh"

template <typename T, int ACT, int TP, int TQ, int QPT, int KS>
__global__ void __launch_bounds__(256)
conv2d_depthwise(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                 T* __restrict__ y, CONV_GEOMETRY_PARAMS, int has_bias) {
    typedef typename num<T>::acc A;
    constexpr int TX = TQ / QPT;
    static_assert(TQ % QPT == 0, "a row of the tile must divide into per-thread runs");
    const int IH = (TP - 1) * sh + (R - 1) * dh + 1;
    const int IW = (TQ - 1) * sw + (S - 1) * dw + 1;
    const int plane_elems = IH * IW;

    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* s_in = reinterpret_cast<T*>(smem_raw) + threadIdx.z * plane_elems;
    T* s_w = reinterpret_cast<T*>(smem_raw) + blockDim.z * plane_elems + threadIdx.z * R * S;  // KS == 0

    const int tilesQ = (Q + TQ - 1) / TQ, tilesP = (P + TP - 1) / TP;
    i64 bx = blockIdx.x;
    const int tq = (int)(bx % tilesQ); bx /= tilesQ;
    const int tp = (int)(bx % tilesP); bx /= tilesP;
    const i64 plane = bx * blockDim.z + threadIdx.z;           // n * K + k
    const bool active = plane < (i64)N * K;
    const int k = active ? (int)(plane % K) : 0;
    const i64 n = plane / K;
    const int c = k / (K / C);                                  // input channel of output channel k
    const int tid = threadIdx.y * TX + threadIdx.x;             // within the plane
    const int p0 = tp * TP, q0 = tq * TQ;
    const int ih0 = p0 * sh - ph, iw0 = q0 * sw - pw;

    if (active) {
        const T* __restrict__ xc = x + (n * C + c) * ((i64)H * W);
        for (int i = tid; i < plane_elems; i += TX * TP) {
            const int yy = i / IW, xx = i - yy * IW;
            const int ih = ih0 + yy, iw = iw0 + xx;
            T v = num<T>::zero();
            if (ih >= 0 && ih < H && iw >= 0 && iw < W) v = xc[(i64)ih * W + iw];
            s_in[i] = v;
        }
        if (KS == 0)
            for (int i = tid; i < R * S; i += TX * TP) s_w[i] = w[(i64)k * R * S + i];
    }
    A wr[KS > 0 ? KS : 1][KS > 0 ? KS : 1];                     // taps in registers (KS > 0)
    if (KS > 0) {
#pragma unroll
        for (int r = 0; r < KS; ++r)
#pragma unroll
            for (int s = 0; s < KS; ++s) wr[r][s] = num<T>::load(w[(i64)k * KS * KS + r * KS + s]);
    }
    __syncthreads();
    const int p = p0 + threadIdx.y;
    if (!active || p >= P) return;

    A acc[QPT];
#pragma unroll
    for (int j = 0; j < QPT; ++j) acc[j] = num<T>::zero();
    const T* s0 = s_in + threadIdx.y * sh * IW + threadIdx.x * QPT * sw;
    if (KS > 0 && sw == 1 && dw == 1) {                          // register window along the row
        constexpr int WIN = QPT + (KS > 0 ? KS : 1) - 1;
#pragma unroll
        for (int r = 0; r < (KS > 0 ? KS : 1); ++r) {
            const T* srow = s0 + r * dh * IW;
            A v[WIN];
#pragma unroll
            for (int i = 0; i < WIN; ++i) v[i] = num<T>::load(srow[i]);
#pragma unroll
            for (int s = 0; s < (KS > 0 ? KS : 1); ++s)
#pragma unroll
                for (int j = 0; j < QPT; ++j) acc[j] = acc[j] + wr[r][s] * v[j + s];
        }
    } else if (KS > 0) {                                         // strided / dilated, taps in registers
#pragma unroll
        for (int r = 0; r < (KS > 0 ? KS : 1); ++r) {
            const T* srow = s0 + r * dh * IW;
#pragma unroll
            for (int s = 0; s < (KS > 0 ? KS : 1); ++s)
#pragma unroll
                for (int j = 0; j < QPT; ++j)
                    acc[j] = acc[j] + wr[r][s] * num<T>::load(srow[j * sw + s * dw]);
        }
    } else {                                                     // any R, S: taps from shared memory
        for (int r = 0; r < R; ++r) {
            const T* srow = s0 + r * dh * IW;
            for (int s = 0; s < S; ++s) {
                const A wv = num<T>::load(s_w[r * S + s]);
#pragma unroll
                for (int j = 0; j < QPT; ++j) acc[j] = acc[j] + wv * num<T>::load(srow[j * sw + s * dw]);
            }
        }
    }
    T* __restrict__ yrow = y + (plane * P + p) * (i64)Q;
    const int qb = q0 + threadIdx.x * QPT;
#pragma unroll
    for (int j = 0; j < QPT; ++j)
        if (qb + j < Q) yrow[qb + j] = epilogue<T, ACT>(acc[j], bias, k, has_bias);
}
