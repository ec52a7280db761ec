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
//     stage CT x IH x IW inputs (IH = (TP-1)*sh + (R-1)*dh + 1, the halo included; outside
//     the image zero, or the reflected / replicated / wrapped input of pmode) as CT*IH rows of 16-lane column runs: consecutive threads read
//     consecutive columns (coalesced for stride 1); the (channel, row) pair and each
//     column's (phase, index) advance by carries -- no division per staged element;
//     a row's columns are stored de-interleaved by phase mod sw and the row pitch makes
//     sh*pitch an odd multiple of 4 words (tiled_pitch), so a warp's 8 rows x 4 columns of
//     input reads land in 32 distinct banks for every stride (fp32);
//     stage TK x CT x R x S weights as TK rows of 32-lane runs along the contiguous
//     (c, r, s) axis, stored transposed [c][r][s][k] with a row pitch of TK+1 words so the
//     transposing store hits 32 distinct banks;
//     each thread: for c, r, s: QPT inputs + KPT weights from shared -> QPT*KPT FMAs
//     into registers.  A warp is 32 (tx, ty) threads of one tz, so every weight
//     read is a broadcast.
//
// Bank conflicts of the input reads (fp32, 32 threads = 4 tx x 8 ty), before -> after:
//   3x3 s1: pitch 18 words, rows 18*ty apart: 2-way -> pitch 20: conflict-free;
//   3x3 s2: pitch 33, columns 2 apart: 4-way (only even banks, rows 66 apart) -> columns
//   de-interleaved (odd/even halves of 17), pitch 34 (2*34 = 68 = 4 mod 8): conflict-free;
//   1x1 s1: pitch 16: 4-way -> 20: conflict-free.
// SASS, sm_90, nvcc 13 (`gpuconv kernels --sass --module conv2d_tiled_smem.cu`, fp32), before ->
//   after: input staging loop 68.5 -> 18.5 instructions per staged element (8 -> 0 div32
//   sequences per 4 elements); weight staging 30-76 -> 8.2 (8 -> 0 div32); the hot c,r,s
//   loop of variant 1: 220 -> 225 instructions per iteration (the tap's phase carry), FMA
//   share 0.58 -> 0.57, 0.38 LDS per FMA, 6.9 -> 7.0 instructions per accumulator; variant 2:
//   260 -> 79 per (differently unrolled) iteration, 16.3 -> 4.9 per accumulator.
//
// Napkin math (ResNet-50 3x3, C=K=256, 14x14, float32, tiled_smem_small, CT=16):
//   per c,r,s step a thread issues QPT+KPT = 10 shared loads for 16 FMAs (1.6
//   FMA/load; variant 1: 12 loads for 32 FMAs, 2.7 FMA/load).  Shared memory
//   serves 32 words/clk/SM against 128 FMA/clk/SM, so variant 1 is bounded near
//   2.7*32/128 = 67% of FP32 peak by shared-load issue before latency effects (a
//   2-way conflict halved the input loads' rate: ~55% before, estimate).
//   Shared memory for 3x3 s1, CT=16: (16*10*20 + 16*9*33) * 4 B = 31.8 KB.
//   Registers: 32 float accumulators + 4 inputs + addressing -> ~80 regs, 128
//   threads -> up to 6 blocks/SM by registers (to be measured on a GPU).
#include "common.cuh"
#include "epilogue.cuh"

// Input tile layout: [c][row][phase][column / sw] -- the columns of one row de-interleaved by
// their phase mod sw, so the QPT outputs' inputs of consecutive tx sit in consecutive words
// for any stride; row pitch IWP >= sw * IWc with sh*IWP = 4 mod 8 words (an odd multiple of
// 4): the 8 rows (ty) of a warp start 4*odd words apart and the 4 columns (tx) fill them, so a
// warp's 32 input reads hit 32 distinct banks (fp32; found when sh is not a multiple of 8).
__device__ __forceinline__ int tiled_pitch(int cols, int sh) {
    for (int p = cols; p < cols + 8; ++p)
        if ((sh * p) % 8 == 4) return p;
    return cols;
}

template <typename T, int ACT, int TP, int TQ, int TK, int QPT, int KPT, bool PM>
__device__ __forceinline__ void
conv2d_tiled_smem_body(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                       T* __restrict__ y, CONV_GEOMETRY_PARAMS, int has_bias, int CT) {
    typedef typename num<T>::acc A;
    constexpr int TX = TQ / QPT, TZ = TK / KPT, NT = TX * TP * TZ, TKP = TK + 1;
    constexpr int SCOL = 16, SROW = NT / SCOL;       // staging: 16 columns x NT/16 rows per pass
    static_assert(TQ % QPT == 0 && TK % KPT == 0 && NT % SCOL == 0, "tile must divide into per-thread work");

    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* s_in = reinterpret_cast<T*>(smem_raw);
    const int IH = (TP - 1) * sh + (R - 1) * dh + 1;
    const int IW = (TQ - 1) * sw + (S - 1) * dw + 1;
    const int IWc = (IW + sw - 1) / sw;              // columns per phase
    const int IWP = tiled_pitch(sw * IWc, sh);
    const int in_elems = CT * IH * IWP;
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
    // staging coordinates, decoded once: row (c, yy) of the tile, column xx = u*sw + f
    const int scol = tid % SCOL, srow0 = tid / SCOL;
    const int sc_q = SCOL / sw, sc_r = SCOL - sc_q * sw;
    const int f0 = scol % sw, u0 = scol / sw;
    const int dwq = dw / sw, dwr = dw - dwq * sw;     // a tap step in (column, phase)
    const int stage_rows = CT * IH;
    // Padding modes (PM, pmode != 0, common.cuh pad_index): resolved while staging, so the
    // hot c, r, s loop is the same for every mode.  A staged row's index is mapped once per
    // row, a column's once per staged element (~3 instructions inside the image: a pmode
    // compare, an unsigned compare, the select; on the ~18.5 of a staged element, estimate
    // from the source).  Mapping only the edge tiles' columns in a second copy of the loop
    // spilled 8-12 B (ptxas -v, float, 8x16 on sm_90 / 4x8 on sm_80); one loop is spill-free.
    // !PM (zeros) folds every map away at compile time and is its own kernel: compiled into
    // one kernel the mode's staging cost the zeros path 4-12 B of spills (float 4x8 tile on
    // sm_80: 64 -> 72 registers + 12 B; 8x16 on sm_90: 80 + 8 B).
    const int pm = PM ? pmode : PAD_ZEROS;

    A acc[KPT][QPT];
#pragma unroll
    for (int i = 0; i < KPT; ++i)
#pragma unroll
        for (int j = 0; j < QPT; ++j) acc[i][j] = num<T>::zero();

    for (int c0 = 0; c0 < Cg; c0 += CT) {
        const int cn = min(CT, Cg - c0);
        __syncthreads();                             // the previous stage is consumed
        {
            int c = srow0 / IH, yy = srow0 - c * IH;
            for (int row = srow0; row < stage_rows; row += SROW) {
                const int ih = pad_index(ih0 + yy, H, pm);       // once per staged row
                const bool rok = c < cn && (unsigned)ih < (unsigned)H;
                const T* __restrict__ src = xg + (rok ? ((i64)(c0 + c) * H + ih) * W : 0);
                T* dst = s_in + row * IWP;
                int f = f0, u = u0;
                for (int xx = scol; xx < IW; xx += SCOL) {
                    const int iw = PM ? pad_index(iw0 + xx, W, pm) : iw0 + xx;
                    T v = num<T>::zero();
                    if (rok && (unsigned)iw < (unsigned)W) v = src[iw];
                    dst[f * IWc + u] = v;
                    f += sc_r; u += sc_q;
                    if (f >= sw) { f -= sw; ++u; }
                }
                yy += SROW;
                while (yy >= IH) { yy -= IH; ++c; }
            }
        }
        const int wrow = CT * RS, wvalid = cn * RS;  // rem = c * RS + rs, contiguous in memory
        for (int kk = tid / 32; kk < TK; kk += NT / 32) {
            const bool kok = k0 + kk < Kg;
            const T* __restrict__ src = wg + ((i64)(k0 + kk) * Cg + c0) * RS;
            for (int rem = tid & 31; rem < wrow; rem += 32) {
                T v = num<T>::zero();
                if (kok && rem < wvalid) v = src[rem];
                s_w[rem * TKP + kk] = v;
            }
        }
        __syncthreads();

        for (int c = 0; c < cn; ++c) {
            for (int r = 0; r < R; ++r) {
                const T* si = s_in + (c * IH + ty * sh + r * dh) * IWP + tx;
                const T* sk = s_w + (c * RS + r * S) * TKP + tz * KPT;
                int f = 0, u = 0;                    // tap s's phase and column offset
                for (int s = 0; s < S; ++s) {
                    const T* sis = si + f * IWc + u;
                    A xv[QPT];
#pragma unroll
                    for (int j = 0; j < QPT; ++j) xv[j] = num<T>::load(sis[j * TX]);
#pragma unroll
                    for (int i = 0; i < KPT; ++i) {
                        const A wv = num<T>::load(sk[s * TKP + i]);
#pragma unroll
                        for (int j = 0; j < QPT; ++j) acc[i][j] = acc[i][j] + wv * xv[j];
                    }
                    f += dwr; u += dwq;
                    if (f >= sw) { f -= sw; ++u; }
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

// conv2d_tiled_smem (zeros) and conv2d_tiled_smem_pm (a non-zero padding mode): one body,
// two kernels (the staging comment above says why).
template <typename T, int ACT, int TP, int TQ, int TK, int QPT, int KPT>
__global__ void __launch_bounds__((TQ / QPT) * TP * (TK / KPT))
conv2d_tiled_smem(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                  T* __restrict__ y, CONV_GEOMETRY_PARAMS, int has_bias, int CT) {
    conv2d_tiled_smem_body<T, ACT, TP, TQ, TK, QPT, KPT, false>(x, w, bias, y, CONV_GEOMETRY_ARGS, has_bias, CT);
}

template <typename T, int ACT, int TP, int TQ, int TK, int QPT, int KPT>
__global__ void __launch_bounds__((TQ / QPT) * TP * (TK / KPT))
conv2d_tiled_smem_pm(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                     T* __restrict__ y, CONV_GEOMETRY_PARAMS, int has_bias, int CT) {
    conv2d_tiled_smem_body<T, ACT, TP, TQ, TK, QPT, KPT, true>(x, w, bias, y, CONV_GEOMETRY_ARGS, has_bias, CT);
}
