// conv2d_tiled_smem.cu -- output tile per block, input tile + filter slice in shared memory.
//
// Variants (registry names; launcher gpuconv/cuda/families/conv2d_tiled_smem.py picks the
// dynamic shared memory and the input-channel stage depth CT at run time):
//   1. tiled_smem        <T, ACT, TP=8, TQ=16, TK=32, QPT=4, KPT=8>: 128 threads,
//      an 8x16 output tile x 32 output channels per block, 4x8 outputs per thread.
//   2. tiled_smem_small  <T, ACT, TP=4, TQ=8,  TK=32, QPT=2, KPT=8>: 64 threads,
//      4x8 tile for the small late-network maps (7x7, 14x14) where a 8x16 tile
//      would leave most threads idle (a 7x7 map in an 8x16 tile is 38% useful).
// Every variant takes the same arguments.  2-D only (1-D runs as H=1).
//
// Schedule of one block (image n, group g, channels k0..k0+TK-1, tile p0, q0):
//   for each stage of CT input channels:
//     stage CT x IH x IW inputs (IH = (TP-1)*sh + (R-1)*dh + 1, the halo
//     included, zero outside the image) -- consecutive threads read consecutive
//     columns, so global loads coalesce for stride 1;
//     stage TK x CT x R x S weights, read along the contiguous (c, r, s) axis and
//     stored transposed [c][r][s][k] with a row pitch of TK+1 words so the
//     transposing store hits 32 distinct banks;
//     each thread: for c, r, s: QPT inputs + KPT weights from shared -> QPT*KPT FMAs
//     into registers.  A warp is 32 (tx, ty) threads of one tz, so every weight
//     read is a broadcast; input reads of a warp cover TP rows x TX columns.
//
// Napkin math (ResNet-50 3x3, C=K=256, 14x14, float32, tiled_smem_small, CT=16):
//   per c,r,s step a thread issues QPT+KPT = 10 shared loads for 16 FMAs (1.6
//   FMA/load; variant 1: 12 loads for 32 FMAs, 2.7 FMA/load).  Shared memory
//   serves 32 words/clk/SM against 128 FMA/clk/SM, so variant 1 is bounded near
//   2.7*32/128 = 67% of FP32 peak by shared-load issue before latency effects.
//   Shared memory for 3x3 s1, CT=16: (16*10*18 + 16*9*33) * 4 B = 30.5 KB.
//   Registers: 32 float accumulators + 4 inputs + addressing -> ~80 regs, 128
//   threads -> up to 6 blocks/SM by registers (to be measured on a GPU).
#include "common.cuh"
#include "epilogue.cuh"

template <typename T, int ACT, int TP, int TQ, int TK, int QPT, int KPT>
__global__ void __launch_bounds__((TQ / QPT) * TP * (TK / KPT))
conv2d_tiled_smem(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                  T* __restrict__ y, CONV_GEOMETRY_PARAMS, int has_bias, int CT) {
    typedef typename num<T>::acc A;
    constexpr int TX = TQ / QPT, TZ = TK / KPT, NT = TX * TP * TZ, TKP = TK + 1;
    static_assert(TQ % QPT == 0 && TK % KPT == 0, "tile must divide into per-thread work");

    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* s_in = reinterpret_cast<T*>(smem_raw);
    const int IH = (TP - 1) * sh + (R - 1) * dh + 1;
    const int IW = (TQ - 1) * sw + (S - 1) * dw + 1;
    const int in_elems = CT * IH * IW;
    const int RS = R * S;
    T* s_w = s_in + in_elems;                        // CT*RS rows of TKP

    const int Cg = C / groups, Kg = K / groups;
    const int tilesQ = (Q + TQ - 1) / TQ, tilesP = (P + TP - 1) / TP;
    const int ktiles = (Kg + TK - 1) / TK;
    i64 bx = blockIdx.x;
    const int tq = (int)(bx % tilesQ); bx /= tilesQ;
    const int tp = (int)(bx % tilesP);
    const i64 n = bx / tilesP;
    const int g = blockIdx.y / ktiles, k0 = (blockIdx.y % ktiles) * TK;   // k0 within group

    const int tid = threadIdx.x;
    const int tx = tid % TX, ty = (tid / TX) % TP, tz = tid / (TX * TP);
    const int p0 = tp * TP, q0 = tq * TQ;
    const int ih0 = p0 * sh - ph, iw0 = q0 * sw - pw;
    const T* __restrict__ xg = x + (n * C + (i64)g * Cg) * H * W;
    const T* __restrict__ wg = w + (i64)g * Kg * Cg * RS;

    A acc[KPT][QPT];
#pragma unroll
    for (int i = 0; i < KPT; ++i)
#pragma unroll
        for (int j = 0; j < QPT; ++j) acc[i][j] = num<T>::zero();

    for (int c0 = 0; c0 < Cg; c0 += CT) {
        __syncthreads();                             // the previous stage is consumed
        for (int i = tid; i < in_elems; i += NT) {
            const int c = i / (IH * IW);
            const int rem = i - c * (IH * IW);
            const int yy = rem / IW, xx = rem - yy * IW;
            const int ih = ih0 + yy, iw = iw0 + xx;
            T v = num<T>::zero();
            if (c0 + c < Cg && ih >= 0 && ih < H && iw >= 0 && iw < W)
                v = xg[((i64)(c0 + c) * H + ih) * W + iw];
            s_in[i] = v;
        }
        const int w_elems = TK * CT * RS;
        for (int i = tid; i < w_elems; i += NT) {
            const int kk = i / (CT * RS);
            const int rem = i - kk * (CT * RS);      // c * RS + rs, contiguous in global memory
            T v = num<T>::zero();
            if (k0 + kk < Kg && c0 + rem / RS < Cg)
                v = wg[((i64)(k0 + kk) * Cg + c0) * RS + rem];
            s_w[rem * TKP + kk] = v;
        }
        __syncthreads();

        const int cn = min(CT, Cg - c0);
        for (int c = 0; c < cn; ++c) {
            for (int r = 0; r < R; ++r) {
                const T* si = s_in + (c * IH + ty * sh + r * dh) * IW + tx * sw;
                const T* sk = s_w + (c * RS + r * S) * TKP + tz * KPT;
                for (int s = 0; s < S; ++s) {
                    A xv[QPT];
#pragma unroll
                    for (int j = 0; j < QPT; ++j) xv[j] = num<T>::load(si[j * TX * sw + s * dw]);
#pragma unroll
                    for (int i = 0; i < KPT; ++i) {
                        const A wv = num<T>::load(sk[s * TKP + i]);
#pragma unroll
                        for (int j = 0; j < QPT; ++j) acc[i][j] = acc[i][j] + wv * xv[j];
                    }
                }
            }
        }
    }

    const int p = p0 + ty;
    if (p >= P) return;
#pragma unroll
    for (int i = 0; i < KPT; ++i) {
        const int k = k0 + tz * KPT + i;
        if (k >= Kg) break;
        const int kabs = g * Kg + k;
        T* __restrict__ yrow = y + ((n * K + kabs) * P + p) * (i64)Q;
#pragma unroll
        for (int j = 0; j < QPT; ++j) {
            const int q = q0 + tx + j * TX;
            if (q < Q) yrow[q] = epilogue<T, ACT>(acc[i][j], bias, kabs, has_bias);
        }
    }
}
