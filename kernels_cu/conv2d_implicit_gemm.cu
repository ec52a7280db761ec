// conv2d_implicit_gemm.cu -- tensor-core implicit GEMM (fp16/bf16 in, fp32 accumulate).
//
// Variants (registry name "implicit_gemm"; launcher gpuconv/cuda/families/conv2d_implicit_gemm.py):
//   1. conv2d_implicit_gemm<T, ACT, BM=128, BN=128, BK=32, WM=64, WN=32, STAGES=3>:
//      8 warps (2 x 4), each a 64x32 warp tile = 4x4 mma.sync.m16n8k16 per k16 step;
//      3-stage cp.async pipeline, ldmatrix.x4 to registers, fp32 accumulators, bias +
//      activation + conversion fused into the store.  T = __half (registered) here;
//      T = __nv_bfloat16 in conv2d_implicit_gemm_bf16.cu (a module of its own because
//      CuPy ships no cuda_bf16.h; compiled, spill-checked and simulated, but NumPy has
//      no bfloat16, so no API dtype and no registration).
//   Staging kernels (run by the same launcher before variant 1):
//      igemm_stage_input<T>:  x NCHW -> xs [N][H][W][G][Cgp], Cgp = Cg rounded up to 8,
//                             zeros in the pad channels (32x32 shared-memory transpose).
//      igemm_stage_weight<T>: w [K][Cg][R][S] -> ws [K][R][S][Cgp], zero pad channels.
//
// GEMM view per group g:  D[m][k] = sum_kk A[m][kk] * B[kk][k],
//   m = (n, p, q) in 0..N*P*Q-1  (GEMM M),   k = output channel in 0..Kg-1  (GEMM N),
//   kk = (r, s, c) in 0..R*S*Cgp-1          (GEMM K, c fastest),
//   A[m][(r,s,c)] = xs[n][p*sh-ph+r*dh][q*sw-pw+s*dw][g][c] (0 outside the image),
//   B[(r,s,c)][k] = ws[g*Kg+k][r][s][c].
// Why an NHWC staging copy instead of gathering NCHW directly: tensor cores want 16-byte
// k-contiguous rows in shared memory, and cp.async moves 16 bytes.  In NCHW the 8
// consecutive kk of one pixel are 8 channels H*W elements apart: every element would be
// its own 2-byte load through registers (no cp.async, 8x the load instructions).  In
// [pixel][channel] order with channels padded to 8, every 16-byte chunk of an A row is
// one aligned cp.async of 8 channels of one tap, zero-filled (src_size 0) at the image
// border, past M and past the K tail -- so the K tail (C*R*S not a multiple of 32), M
// and N tails need no special code path beyond the predicate.
//
// Shared memory: per stage A BM x BK and B BN x BK halves, rows of 64 bytes = 4 chunks of
// 16 bytes.  XOR swizzle, no padding: chunk c of row r is stored at chunk c ^ ((r>>1)&3).
// ldmatrix reads 8 rows of one chunk column; unswizzled, rows r and r+2 are 128 bytes
// apart and hit the same banks (4-way conflict); swizzled, the 8 rows land in 8 distinct
// 16-byte bank groups (conflict-free).  3 stages x (128 + 128) x 32 x 2 B = 48 KiB, the
// default per-block limit without the opt-in attribute (padding rows would exceed it).
//
// Napkin math (ResNet-50 3x3, N=32, C=K=256, 14x14, fp16; 29.6 GFLOP):
//   minimum bytes 2*(N*C*H*W + K*C*9 + N*K*P*Q) = 2*(1.6M + 0.59M + 1.6M) = 7.6 MB;
//   staging adds a read + write of x (2 * 3.2 MB) and of w (2 * 1.2 MB): ~8.8 MB more,
//   ~3 us at 3 TB/s against ~75 us of tensor-core time at ~400 TFLOP/s (mma.sync on
//   H100 reaches a third to a half of the ~790 a wgmma bf16 GEMM reaches, a published
//   figure): ~4%, an estimate.  For C=3 (a first
//   layer) Cgp = 8 inflates x by 8/3 and GEMM K from 27 to 72 (2.7x the MMA work) --
//   still fast, but such layers are better left to the FMA kernels (dispatcher).
//   Per k-tile a block moves (128+128)*32*2 B = 16 KB for 2*128*128*32 = 1 MFLOP: 64
//   FLOP/B of shared-memory fill, far above the H100's ~25 FLOP/B of L2 bandwidth.
//   Registers: 64 fp32 accumulators + 16 A + 8 B fragment registers + addressing.
//   Stores: one warp store covers 8 consecutive pixels x 4 channels (four 16-byte
//   pieces): half of each 32-byte sector.  MEASURE: staging D through shared memory for
//   full-sector stores once a GPU shows the epilogue matters.
#include "common.cuh"
#include "epilogue.cuh"
#include "mma.cuh"

// The MMA for element type T (the bf16 specialisation: conv2d_implicit_gemm_bf16.cu).
template <typename T> struct TcMma;
template <> struct TcMma<__half> {
    static __device__ __forceinline__ void run(float c[4], const unsigned a[4], const unsigned b[2]) {
        tc::mma_m16n8k16_f16(c, a, b);
    }
};

// x [N][C][H*W] -> xs [N][H*W][G*Cgp]; block (32, 8): 32 pixels x 32 staged channels.
template <typename T>
__global__ void __launch_bounds__(256)
igemm_stage_input(const T* __restrict__ x, T* __restrict__ xs, int N, int C, int HW, int G, int Cgp) {
    __shared__ T tile[32][33];
    const int Cg = C / G, Ctot = G * Cgp;
    const int tiles = (HW + 31) / 32;
    const int n = blockIdx.x / tiles, hw0 = (blockIdx.x % tiles) * 32, cc0 = blockIdx.y * 32;
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (int j = ty; j < 32; j += 8) {               // coalesced read along the pixels
        const int cc = cc0 + j, grp = cc / Cgp, cp = cc - grp * Cgp, hw = hw0 + tx;
        T v = num<T>::zero();
        if (cc < Ctot && cp < Cg && hw < HW) v = x[((i64)n * C + grp * Cg + cp) * HW + hw];
        tile[j][tx] = v;
    }
    __syncthreads();
    for (int j = ty; j < 32; j += 8) {               // coalesced write along the channels
        const int hw = hw0 + j, cc = cc0 + tx;
        if (hw < HW && cc < Ctot) xs[((i64)n * HW + hw) * Ctot + cc] = tile[tx][j];
    }
}

// w [K][Cg][RS] -> ws [K][RS][Cgp]
template <typename T>
__global__ void __launch_bounds__(256)
igemm_stage_weight(const T* __restrict__ w, T* __restrict__ ws, int K, int Cg, int RS, int Cgp) {
    const i64 total = (i64)K * RS * Cgp;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        const int cp = (int)(i % Cgp);
        const i64 krs = i / Cgp;
        const int rs = (int)(krs % RS);
        const i64 k = krs / RS;
        ws[i] = cp < Cg ? w[(k * Cg + cp) * RS + rs] : num<T>::zero();
    }
}

// halves offset of 16-byte chunk `ch` (0..3) of row `row` in a BK=32 tile
__device__ __forceinline__ int igemm_swz(int row, int ch) { return row * 32 + ((ch ^ ((row >> 1) & 3)) << 3); }

template <typename T, int ACT, int BM, int BN, int BK, int WM, int WN, int STAGES>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)
conv2d_implicit_gemm(const T* __restrict__ xs, const T* __restrict__ ws, const T* __restrict__ bias,
                     T* __restrict__ y, CONV_GEOMETRY_PARAMS, int Cgp, int has_bias) {
    constexpr int NWM = BM / WM, NWN = BN / WN, NT = NWM * NWN * 32;
    constexpr int MT = WM / 16, NT8 = WN / 8, CH = BK / 8;
    constexpr int ROWS_PER_PASS = NT / CH, A_PER = BM / ROWS_PER_PASS, B_PER = BN / ROWS_PER_PASS;
    static_assert(BK == 32, "the swizzle is laid out for 64-byte rows");
    static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile: m16 x (pairs of) n8");
    static_assert(BM % ROWS_PER_PASS == 0 && BN % ROWS_PER_PASS == 0, "whole copy passes");

    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* sA = reinterpret_cast<T*>(smem_raw);          // [STAGES][BM][BK]
    T* sB = sA + STAGES * BM * BK;                   // [STAGES][BN][BK]

    const int Kg = K / groups, Ctot = groups * Cgp, Kdim = R * S * Cgp, PQ = P * Q;
    const i64 M = (i64)N * PQ;
    const int g = blockIdx.z;
    const i64 m0 = (i64)blockIdx.x * BM;
    const int n0 = blockIdx.y * BN;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp % NWM, wn = warp / NWM;

    // Producer: thread tid copies chunk `ch` of rows tid/CH + j*ROWS_PER_PASS of A and B.
    const int ch = tid % CH, row0 = tid / CH;
    const T* a_base[A_PER];
    int a_ih0[A_PER], a_iw0[A_PER];
#pragma unroll
    for (int j = 0; j < A_PER; ++j) {
        const i64 m = m0 + row0 + j * ROWS_PER_PASS;
        if (m < M) {
            const i64 n = m / PQ;
            const int pq = (int)(m - n * PQ), p = pq / Q, q = pq - p * Q;
            a_base[j] = xs + n * H * W * Ctot + g * Cgp;
            a_ih0[j] = p * sh - ph;
            a_iw0[j] = q * sw - pw;
        } else {                                     // past M: every tap out of bounds
            a_base[j] = xs;
            a_ih0[j] = -(1 << 30);
            a_iw0[j] = 0;
        }
    }
    const T* b_base[B_PER];
    bool b_ok[B_PER];
#pragma unroll
    for (int j = 0; j < B_PER; ++j) {
        const int k = n0 + row0 + j * ROWS_PER_PASS;
        b_ok[j] = k < Kg;
        b_base[j] = ws + ((i64)g * Kg + (b_ok[j] ? k : 0)) * Kdim;
    }

    auto load_stage = [&](int stage, int kt) {
        const int kk = kt * BK + ch * 8;             // first of 8 consecutive channels of one tap
        const bool kin = kk < Kdim;
        const int rs = kk / Cgp, c = kk - rs * Cgp;
        const int r = rs / S, s = rs - r * S;
        T* dA = sA + stage * BM * BK;
        T* dB = sB + stage * BN * BK;
#pragma unroll
        for (int j = 0; j < A_PER; ++j) {
            const int ih = a_ih0[j] + r * dh, iw = a_iw0[j] + s * dw;
            const bool ok = kin && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
            const T* src = ok ? a_base[j] + ((i64)ih * W + iw) * Ctot + c : xs;
            tc::cp_async_16(dA + igemm_swz(row0 + j * ROWS_PER_PASS, ch), src, ok);
        }
#pragma unroll
        for (int j = 0; j < B_PER; ++j) {
            const bool ok = kin && b_ok[j];
            tc::cp_async_16(dB + igemm_swz(row0 + j * ROWS_PER_PASS, ch), ok ? b_base[j] + kk : ws, ok);
        }
    };

    float acc[MT][NT8][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    const int KT = (Kdim + BK - 1) / BK;
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) load_stage(s, s);
        tc::cp_async_commit();                       // empty groups keep the count uniform
    }
    // ldmatrix row/chunk of this lane: A matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15);
    // B matrices (k 0-7 | 8-15) x (n 0-7 | 8-15) -- see mma.cuh for the fragment layouts.
    const int a_row = wm * WM + (lane & 15), a_kc = lane >> 4;
    const int b_row = wn * WN + ((lane >> 4) << 3) + (lane & 7), b_kc = (lane >> 3) & 1;

    for (int kt = 0; kt < KT; ++kt) {
        tc::cp_async_wait<STAGES - 2>();             // this thread's copies of stage kt landed
        __syncthreads();                             // ... everyone's; stage kt-1 is consumed
        const int nk = kt + STAGES - 1;
        if (nk < KT) load_stage(nk % STAGES, nk);
        tc::cp_async_commit();

        const T* tA = sA + (kt % STAGES) * BM * BK;
        const T* tB = sB + (kt % STAGES) * BN * BK;
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks) {
            unsigned af[MT][4], bf[NT8][2];
#pragma unroll
            for (int i = 0; i < MT; ++i)
                tc::ldmatrix_x4(af[i], tA + igemm_swz(a_row + i * 16, ks * 2 + a_kc));
#pragma unroll
            for (int jp = 0; jp < NT8 / 2; ++jp) {
                unsigned r4[4];
                tc::ldmatrix_x4(r4, tB + igemm_swz(b_row + jp * 16, ks * 2 + b_kc));
                bf[2 * jp][0] = r4[0]; bf[2 * jp][1] = r4[1];
                bf[2 * jp + 1][0] = r4[2]; bf[2 * jp + 1][1] = r4[3];
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT8; ++j) TcMma<T>::run(acc[i][j], af[i], bf[j]);
        }
    }
    tc::cp_async_wait<0>();

    // Epilogue: c[0..1] row g, c[2..3] row g+8; columns 2t, 2t+1 (mma.cuh).
    const int gi = lane >> 2, ti = lane & 3;
#pragma unroll
    for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const i64 m = m0 + wm * WM + i * 16 + gi + h * 8;
            if (m >= M) continue;
            const i64 n = m / PQ;
            const i64 pq = m - n * PQ;
            T* __restrict__ yp = y + ((n * K + (i64)g * Kg) * PQ + pq);
#pragma unroll
            for (int j = 0; j < NT8; ++j) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int k = n0 + wn * WN + j * 8 + ti * 2 + e;
                    if (k < Kg)
                        yp[(i64)k * PQ] = epilogue<T, ACT>(acc[i][j][h * 2 + e], bias, g * Kg + k, has_bias);
                }
            }
        }
    }
}
