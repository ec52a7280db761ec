// conv2d_implicit_gemm.cu -- tensor-core implicit GEMM (fp16/bf16/fp32 in, fp32 accumulate).
//
// Variants (registry name "implicit_gemm"; launcher gpuconv/cuda/families/conv2d_implicit_gemm.py,
// whose plan() picks the tile and split-K):
//   1. conv2d_implicit_gemm<T, BM, BN, WM, WN, STAGES, MINB, PREC>: (BM/WM) x (BN/WN) warps,
//      each a WM x WN warp tile of m16n8 MMAs; 3-stage cp.async pipeline of 64-byte rows,
//      ldmatrix.x4 to registers, fp32 accumulators, bias + activation (a run-time code,
//      one switch at the store) + conversion fused into the store.
//      Tiles (BM x BN, warps of WM x WN): 128x128 (8 of 64x32), 128x64 (4 of 64x32),
//      64x128 (8 of 32x32), 64x64 (4 of 32x32); __launch_bounds__(threads, MINB) holds
//      ptxas to 65536 / (threads x MINB) registers (the launcher's TILES table).
//      T = __half here (PREC 0, m16n8k16 .f16); T = __nv_bfloat16 in
//      conv2d_implicit_gemm_bf16.cu (PREC 0, .bf16); T = float in conv2d_implicit_gemm_tf32.cu
//      with PREC 1 (TF32: operands cvt.rna'd to 10-bit mantissas, m16n8k8 .tf32) or PREC 2
//      (3xTF32: big/small split, three MMAs -- tc::split_tf32 in mma.cuh).
//      Split-K (`splits` > 1, gridDim.z = groups x splits): split z runs k-tiles
//      [z*ceil(KT/splits), ...) and stores its raw sums to part[z] (y's layout, float32);
//   2. igemm_splitk_reduce<T>: sums part[0..splits-1] in that fixed order (bit-identical run
//      to run, as conv_wgrad_reduce), then bias + activation + conversion.
//   Staging kernels (run by the same launcher before variant 1):
//      igemm_stage_input<T>:  x NCHW -> xs [N][H][W][G][Cgp], Cgp = Cg rounded up to a
//                             16-byte chunk (8 16-bit or 4 float channels), zeros in the pad
//                             channels (32x32 shared-memory transpose).  Skipped when x is
//                             already dense NHWC (channels_last) and Cg fills whole chunks:
//                             the GEMM then reads x in place (Cgp = Cg, pixel stride C).
//                             A padding mode (reflect / replicate / circular) is resolved
//                             here: xs holds the mode-extended image and the GEMM pads
//                             with zeros (never read in place then).
//      igemm_stage_weight<T>: w [K][Cg][R][S] -> ws [K][R][S][Cgp], zero pad channels.
//   Output: y NCHW, or NHWC (y_nhwc, the layout of a channels_last input) -- same kernel,
//   the element offset of (m, k) is m*K + k instead of (n*K + k)*PQ + pq.
//
// The gradients run here too, as forward problems (gpuconv/derived.py; the rule is
// gpuconv/cuda/dispatch.py grad_route):
//   dgrad (and conv_transpose*): one launch per stride phase a (prod(stride) of them),
//     A = dy (K channels), B = w with channel roles swapped and only the taps that reach
//     phase a, reversed; stride 1, dilation d/gcd(s, d).  3x3 stride 2: phases of 1, 2,
//     2 and 4 taps, 9 tap-GEMMs in all where a zero-upsampled dy would cost 36.
//   wgrad: one launch, GEMM M = Cg*R*S (the "pixels" are kernel taps), N = K/g, and the
//     reduction kk = (p, q, n) over N*P*Q (the "kernel" is the P x Q output; x staged as
//     [c][h][w][g][n]), split-K up to 64 ways in the fixed-order reduce.  Napkin math
//     (ResNet-50 3x3 64->64, 56x56, N=32, fp16; estimates): 7.4 GFLOP, ~12 us at ~600
//     TFLOP/s; 9 x 1 tiles of 64x64 need split 24 for 216 CTAs on 132 SMs (plan(): est.
//     46 us, 16% of the dense peak -- split 8 would leave 72 CTAs, est. 96 us); the x
//     transpose and the staging copy move ~4 x 12.8 MB, ~11 us at 4.8 TB/s.
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
// Shared memory: per stage A BM x BK and B BN x BK elements (BK = 32 halves or 16 floats),
// rows of 64 bytes = 4 chunks of 16 bytes.  The fragment loads are the same bytes for both:
// ldmatrix hands lane l row l/4, 32-bit column l%4 of an 8 x 16-byte matrix, which is an
// m16n8k16 register of two halves or an m16n8k8 .tf32 register of one float (mma.cuh).  XOR swizzle, no padding: chunk c of row r is stored at chunk c ^ ((r>>1)&3).
// ldmatrix reads 8 rows of one chunk column; unswizzled, rows r and r+2 are 128 bytes
// apart and hit the same banks (4-way conflict); swizzled, the 8 rows land in 8 distinct
// 16-byte bank groups (conflict-free).  3 stages x (BM + BN) x 64 B = 48 KiB for 128x128
// (36 for 128x64 / 64x128, 24 for 64x64), within the default per-block limit without the
// opt-in attribute (padding rows would exceed it).
//
// Napkin math (ResNet-50 3x3, N=32, C=K=256, 14x14, fp16; 29.6 GFLOP):
//   minimum bytes 2*(N*C*H*W + K*C*9 + N*K*P*Q) = 2*(1.6M + 0.59M + 1.6M) = 7.6 MB;
//   staging adds a read + write of x (2 * 3.2 MB) and of w (2 * 1.2 MB): ~8.8 MB more,
//   ~3 us at 3 TB/s against ~75 us of tensor-core time at ~400 TFLOP/s (mma.sync on
//   H100 reaches a third to a half of the ~790 a wgmma bf16 GEMM reaches, a published
//   figure): ~4%, an estimate.
//   Stems (C=3, 7x7 s2, K=64; estimates): Cgp = 8 (fp16/bf16) makes GEMM K 392 for 147
//   useful (37.5% of the MMA work is useful; 4 of 3 channels, 75%, for float's Cgp = 4).
//   At ~250 TFLOP/s of mma.sync that is ~95 TFLOP/s of useful work against ~35 for the
//   FMA kernels (67 TFLOP/s FP32 peak x ~0.55, kernels_cu/conv2d_tiled_smem.cu): the padded
//   MMA still wins ~2.7x, so stems go to this kernel (the dispatcher's rule needs only
//   Cg*taps >= 32 and Kg >= 32), and the x copy grows 8/3x (0.8 MB per 224x224 image,
//   ~0.5 us at 3 TB/s).
//   Per k-tile a 128x128 block moves (128+128)*64 B = 16 KB for 2*128*128*32 = 1 MFLOP
//   (fp16): 64 FLOP/B of shared-memory fill, far above the H100's ~25 FLOP/B of L2
//   bandwidth; 64x64 halves that to 32 FLOP/B, still above it.
//   Registers: 64 fp32 accumulators (64x32 warp tile) + 16 A + 8 B fragment registers +
//   addressing; 3xTF32 adds 16 small-A and 4 B registers, hence MINB 1 there (launcher).
//   Stores: a 16-bit fragment store covers 8 consecutive pixels x 4 channels (four
//   16-byte pieces in NCHW, half of each 32-byte sector), so the 16-bit NCHW epilogue
//   stages the block's results through shared memory and stores 16-byte runs of one
//   channel (whole sectors; scalar where PQ % 8 != 0).  float's fragment stores are
//   32-byte runs already and stay direct (staging them spilled 12 B at 128 registers).  NHWC: a pixel's 8
//   channels of one n8 block are 16 contiguous bytes (fp16), written by its 4 lanes in 2
//   stores, left direct; so are the split-K partials (float32, summed by the reduce).
//   Static figures (ptxas and `gpuconv kernels --sass`, sm_90; no spills on sm_80/sm_90):
//   registers f16/bf16 126 / 128 / 110 / 116 (128x128 / 128x64 / 64x128 / 64x64), TF32
//   128 / 159 / 104 / 114, 3xTF32 175 / 185 / 118 / 120.  Main loop per k-tile (64-byte
//   rows), shortest-longest path: f16 128x128 90-229 instructions, 32 HMMA (14%), 0.38
//   LDSM and 0.12 LDGSTS per HMMA, 2 32-bit divisions (the tap decode of the copy), 1
//   barrier; 64x64 58-193 (8% HMMA).  TF32 128x128 200-335 (the cvt.rna of 48 fragment
//   registers per k-tile), 3xTF32 508-643 for 96 HMMA (15%; the split costs 2 cvt + 1
//   FADD per register).  MEASURE on a GPU whether the TF32 rounding should move into the
//   staging copy (not possible for a channels-last x read in place).
#include "common.cuh"
#include "epilogue.cuh"
#include "mma.cuh"

// The MMA for element type T: m16n8k16 for the 16-bit types (the bf16 specialisation:
// conv2d_implicit_gemm_bf16.cu), m16n8k8 .tf32 for float (conv2d_implicit_gemm_tf32.cu).
template <typename T> struct TcMma;
template <> struct TcMma<__half> {
    static __device__ __forceinline__ void run(float c[4], const unsigned a[4], const unsigned b[2]) {
        tc::mma_m16n8k16_f16(c, a, b);
    }
};
template <> struct TcMma<float> {
    static __device__ __forceinline__ void run(float c[4], const unsigned a[4], const unsigned b[2]) {
        tc::mma_m16n8k8_tf32(c, a, b);
    }
};

// One k-step of a warp tile: MT x NT8 MMAs on fragments fresh from ldmatrix.
// PREC 0: the 16-bit MMA.  PREC 1 (TF32): each fragment register rounded once (cvt.rna), then
// MT x NT8 MMAs.  PREC 2 (3xTF32): A split into big/small once per k-step; B split per column
// block j (2 + 2 registers live, not 4 x NT8), then small*big + big*small + big*big, small
// products first so they are not lost under the big one's rounding (CUTLASS's order).
template <typename T, int PREC, int MT, int NT8>
__device__ __forceinline__ void igemm_warp_mma(float (&acc)[MT][NT8][4], unsigned (&af)[MT][4],
                                               unsigned (&bf)[NT8][2]) {
    if (PREC == 0 || PREC == 1) {
        if (PREC == 1) {
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) af[i][e] = tc::f32_to_tf32(__uint_as_float(af[i][e]));
#pragma unroll
            for (int j = 0; j < NT8; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) bf[j][e] = tc::f32_to_tf32(__uint_as_float(bf[j][e]));
        }
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int j = 0; j < NT8; ++j) TcMma<T>::run(acc[i][j], af[i], bf[j]);
    } else {
        unsigned as[MT][4];
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int e = 0; e < 4; ++e) tc::split_tf32(af[i][e], af[i][e], as[i][e]);
#pragma unroll
        for (int j = 0; j < NT8; ++j) {
            unsigned bb[2], bs[2];
            tc::split_tf32(bf[j][0], bb[0], bs[0]);
            tc::split_tf32(bf[j][1], bb[1], bs[1]);
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                tc::mma_m16n8k8_tf32(acc[i][j], as[i], bb);
                tc::mma_m16n8k8_tf32(acc[i][j], af[i], bs);
                tc::mma_m16n8k8_tf32(acc[i][j], af[i], bb);
            }
        }
    }
}

// activation(v + bias[k]) with the activation code chosen at run time (one switch per store,
// uniform across the grid; the template epilogue does the math).
template <typename T>
__device__ __forceinline__ T igemm_epilogue(float v, const T* __restrict__ bias, int k, int has_bias, int act) {
    switch (act) {
    case 1: return epilogue<T, 1>(v, bias, k, has_bias);
    case 2: return epilogue<T, 2>(v, bias, k, has_bias);
    case 3: return epilogue<T, 3>(v, bias, k, has_bias);
    case 4: return epilogue<T, 4>(v, bias, k, has_bias);
    default: return epilogue<T, 0>(v, bias, k, has_bias);
    }
}

// x [N][C][H][W] -> xs [N][Hs][Ws][G*Cgp]; block (32, 8): 32 staged pixels x 32 staged
// channels.  Zeros mode (pmode 0): Hs = H, Ws = W, ph = pw = 0, staged pixel = input pixel.
// A padding mode (reflect / replicate / circular) is resolved here, in the copy the GEMM
// needs anyway: xs is the mode-extended image, staged pixel (yy, xx) = input pixel
// (pad_index(yy - ph), pad_index(xx - pw)), Hs x Ws = the rows and columns the outputs read
// ((P-1)*sh + (R-1)*dh + 1, likewise for W), and the GEMM kernel then runs with zero padding
// over it.  Cost: a thread decodes its one pixel once (a 32-bit division and two pad_index,
// ~30 instructions for 4 staged elements) and the copy grows by the padded border
// (56x56 pad 1: 58*58/56^2 = +7% bytes).  Remapping in the GEMM's copy loop instead would put
// two pad_index (~8 instructions) on every A chunk of every k-tile, in the main loop: f16
// 128x128 has 2 A chunks per thread per k-tile, ~16 instructions on a 90-229 instruction
// k-tile (+7-18%, estimate), paid R*S*Cgp/32 times per pixel instead of once here.  Zeros
// mode takes a uniform branch around the decode.
template <typename T>
__global__ void __launch_bounds__(256)
igemm_stage_input(const T* __restrict__ x, T* __restrict__ xs, CONV_GEOMETRY_PARAMS, int Cgp) {
    __shared__ T tile[32][33];
    const int G = groups, Cg = C / G, Ctot = G * Cgp;
    const bool moded = pmode != PAD_ZEROS;          // the launcher's staged_extent, likewise
    const int Hs = moded ? (P - 1) * sh + (R - 1) * dh + 1 : H;
    const int Ws = moded ? (Q - 1) * sw + (S - 1) * dw + 1 : W;
    const int HW = H * W, HWs = Hs * Ws;
    const int tiles = (HWs + 31) / 32;
    const int n = blockIdx.x / tiles, hw0 = (blockIdx.x % tiles) * 32, cc0 = blockIdx.y * 32;
    const int tx = threadIdx.x, ty = threadIdx.y;
    int src = hw0 + tx;                              // this thread's input pixel (read phase)
    bool pok = src < HWs;
    if (moded && pok) {
        const int yy = src / Ws, xx = src - yy * Ws;
        const int ih = pad_index(yy - ph, H, pmode), iw = pad_index(xx - pw, W, pmode);
        pok = (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
        src = ih * W + iw;
    }
    for (int j = ty; j < 32; j += 8) {               // coalesced read along the pixels
        const int cc = cc0 + j, grp = cc / Cgp, cp = cc - grp * Cgp;
        T v = num<T>::zero();
        if (cc < Ctot && cp < Cg && pok) v = x[((i64)n * C + grp * Cg + cp) * HW + src];
        tile[j][tx] = v;
    }
    __syncthreads();
    for (int j = ty; j < 32; j += 8) {               // coalesced write along the channels
        const int hw = hw0 + j, cc = cc0 + tx;
        if (hw < HWs && cc < Ctot) xs[((i64)n * HWs + hw) * Ctot + cc] = tile[tx][j];
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

// Split-K: y[i] = epilogue(sum over splits z = 0, 1, ... (this order) of part[z][i]).  part has
// y's layout (NCHW, or NHWC when y_nhwc), so the pass is elementwise and coalesced both ways;
// the fixed order makes the result bit-identical run to run (as conv_wgrad_reduce).
template <typename T>
__global__ void __launch_bounds__(256)
igemm_splitk_reduce(const float* __restrict__ part, const T* __restrict__ bias, T* __restrict__ y, i64 total,
                    int K, int PQ, int splits, int has_bias, int act, int y_nhwc) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        float s = part[i];
        for (int z = 1; z < splits; ++z) s = s + part[(i64)z * total + i];
        // the channel: 32-bit divisions while the index fits (inline sequences; the two 64-bit
        // division calls cost ~100 instructions per element, more than 6 bytes of traffic buy)
        const int k = total <= 0x7fffffffLL
                          ? (y_nhwc ? (int)((unsigned)i % (unsigned)K) : (int)((unsigned)i / (unsigned)PQ % (unsigned)K))
                          : (y_nhwc ? (int)(i % K) : (int)((i / PQ) % K));
        y[i] = igemm_epilogue<T>(s, bias, k, has_bias, act);
    }
}

// element offset of 16-byte chunk `ch` (0..3) of row `row` in a tile of 64-byte rows
// (CE = elements per chunk: 8 halves or 4 floats)
template <int CE>
__device__ __forceinline__ int igemm_swz(int row, int ch) { return row * 4 * CE + ((ch ^ ((row >> 1) & 3)) * CE); }

template <typename T, int BM, int BN, int WM, int WN, int STAGES, int MINB, int PREC>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32, MINB)
conv2d_implicit_gemm(const T* __restrict__ xs, const T* __restrict__ ws, const T* __restrict__ bias,
                     T* __restrict__ y, float* __restrict__ part, CONV_GEOMETRY_PARAMS, int Cgp, int has_bias,
                     int act, int splits, int y_nhwc) {
    constexpr int NWM = BM / WM, NWN = BN / WN, NT = NWM * NWN * 32;
    constexpr int CE = 16 / (int)sizeof(T), BK = 4 * CE;    // 64-byte rows: 32 halves or 16 floats
    constexpr int MT = WM / 16, NT8 = WN / 8, CH = 4;
    constexpr int ROWS_PER_PASS = NT / CH, A_PER = BM / ROWS_PER_PASS, B_PER = BN / ROWS_PER_PASS;
    static_assert(sizeof(T) == 2 || (sizeof(T) == 4 && PREC != 0), "16-bit MMA, or float as TF32 / 3xTF32");
    static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile: m16 x (pairs of) n8");
    static_assert(BM % ROWS_PER_PASS == 0 && BN % ROWS_PER_PASS == 0, "whole copy passes");

    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* sA = reinterpret_cast<T*>(smem_raw);          // [STAGES][BM][BK]
    T* sB = sA + STAGES * BM * BK;                   // [STAGES][BN][BK]

    const int Kg = K / groups, Ctot = groups * Cgp, Kdim = R * S * Cgp, PQ = P * Q;
    const i64 M = (i64)N * PQ;
    const int g = blockIdx.z % groups, split = blockIdx.z / groups;
    const i64 m0 = (i64)blockIdx.x * BM;
    const int n0 = blockIdx.y * BN;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp % NWM, wn = warp / NWM;
    // this split's k-tiles: [kt0, kt0 + KT) of ceil(Kdim / BK), in chunks of ceil(all / splits)
    const int KT_ALL = (Kdim + BK - 1) / BK, KT_SPLIT = (KT_ALL + splits - 1) / splits;
    const int kt0 = split * KT_SPLIT;
    const int KT = KT_ALL - kt0 < KT_SPLIT ? (KT_ALL > kt0 ? KT_ALL - kt0 : 0) : KT_SPLIT;

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

    auto load_stage = [&](int stage, int kt) {       // kt: this split's k-tile index
        const int kk = (kt0 + kt) * BK + ch * CE;    // first of CE consecutive channels of one tap
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
            tc::cp_async_16(dA + igemm_swz<CE>(row0 + j * ROWS_PER_PASS, ch), src, ok);
        }
#pragma unroll
        for (int j = 0; j < B_PER; ++j) {
            const bool ok = kin && b_ok[j];
            tc::cp_async_16(dB + igemm_swz<CE>(row0 + j * ROWS_PER_PASS, ch), ok ? b_base[j] + kk : ws, ok);
        }
    };

    float acc[MT][NT8][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) load_stage(s, s);
        tc::cp_async_commit();                       // empty groups keep the count uniform
    }
    // ldmatrix row/chunk of this lane: A matrices (rows 0-7 | 8-15) x (chunk 0 | 1);
    // B matrices (chunk 0 | 1) x (n 0-7 | 8-15).  A chunk is 8 halves (k16: chunks 0,1 = k 0-7,
    // 8-15) or 4 floats (k8: k 0-3, 4-7); either way lane l receives row l/4, 32-bit column l%4
    // of each 8x16-byte matrix: the a0..a3 / b0,b1 registers of mma.cuh's layouts.
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
        for (int ks = 0; ks < 2; ++ks) {             // two MMA k-steps of 32 bytes per 64-byte row
            unsigned af[MT][4], bf[NT8][2];
#pragma unroll
            for (int i = 0; i < MT; ++i)
                tc::ldmatrix_x4(af[i], tA + igemm_swz<CE>(a_row + i * 16, ks * 2 + a_kc));
#pragma unroll
            for (int jp = 0; jp < NT8 / 2; ++jp) {
                unsigned r4[4];
                tc::ldmatrix_x4(r4, tB + igemm_swz<CE>(b_row + jp * 16, ks * 2 + b_kc));
                bf[2 * jp][0] = r4[0]; bf[2 * jp][1] = r4[1];
                bf[2 * jp + 1][0] = r4[2]; bf[2 * jp + 1][1] = r4[3];
            }
            igemm_warp_mma<T, PREC, MT, NT8>(acc, af, bf);
        }
    }
    tc::cp_async_wait<0>();

    // Epilogue: c[0..1] row g, c[2..3] row g+8; columns 2t, 2t+1 (mma.cuh).  Output element
    // (m = n*PQ + pq, channel g*Kg + k) lives at (n*K + g*Kg + k)*PQ + pq (NCHW) or
    // m*K + g*Kg + k (NHWC); with split-K the raw sum goes to part[split] at the same offset.
    const int gi = lane >> 2, ti = lane & 3;
    if (sizeof(T) == 2 && splits == 1 && !y_nhwc) {
        // 16-bit NCHW through shared memory (a float fragment store already writes 8
        // consecutive pixels x 4 B = a whole 32-byte sector per channel; a 16-bit one only
        // half).  The block's finished values (bias, activation, T) go to stile[k][m] (KC
        // channels per pass, rows of BM + CE elements), then every thread moves 16-byte runs
        // of CE consecutive m of one channel: whole sectors per pair of lanes.  Pitch BM + CE:
        // a fragment store's 4 t-groups land 32 bytes apart mod 128 (distinct banks) and
        // every row stays 16-byte aligned.  KC = BN: 128 x 136 x 2 B = 34 KiB <= 48 KiB.
        constexpr int PITCH = BM + CE;
        constexpr int KC = (BN * PITCH * (int)sizeof(T) <= STAGES * (BM + BN) * 64) ? BN : BN / 2;
        static_assert(sizeof(T) != 2 || (KC == BN && BN * PITCH * 2 <= STAGES * (BM + BN) * 64),
                      "the 16-bit epilogue tile fits in the pipeline's shared memory in one pass");
        constexpr int VPR = BM / CE;                 // 16-byte runs per channel row
        T* stile = reinterpret_cast<T*>(smem_raw);
        const bool vec_ok = PQ % CE == 0 && (reinterpret_cast<unsigned long long>(y) & 15) == 0;
        __syncthreads();                             // every warp is done reading the stages
#pragma unroll
        for (int pass = 0; pass < BN / KC; ++pass) {
            if (pass > 0) __syncthreads();           // the previous pass is copied out
            if (wn * WN / KC == pass) {
#pragma unroll
                for (int i = 0; i < MT; ++i)
#pragma unroll
                    for (int h = 0; h < 2; ++h)
#pragma unroll
                        for (int j = 0; j < NT8; ++j)
#pragma unroll
                            for (int e = 0; e < 2; ++e) {
                                const int kl = wn * WN - pass * KC + j * 8 + ti * 2 + e;
                                const int k = n0 + pass * KC + kl;
                                const int ml = wm * WM + i * 16 + gi + h * 8;
                                stile[kl * PITCH + ml] = k < Kg ? igemm_epilogue<T>(acc[i][j][h * 2 + e], bias,
                                                                                    g * Kg + k, has_bias, act)
                                                                : num<T>::zero();
                            }
            }
            __syncthreads();
            for (int v = tid; v < KC * VPR; v += NT) {
                const int kl = v / VPR, mv = v - kl * VPR;
                const int k = n0 + pass * KC + kl;
                const i64 m = m0 + mv * CE;
                if (k >= Kg || m >= M) continue;
                const T* src = stile + kl * PITCH + mv * CE;
                const i64 n = m / PQ, pq = m - n * PQ;
                if (vec_ok && m + CE <= M) {         // PQ % CE == 0: the run stays in image n
                    *reinterpret_cast<uint4*>(y + (n * K + (i64)g * Kg + k) * PQ + pq) =
                        *reinterpret_cast<const uint4*>(src);
                } else {
                    for (int e = 0; e < CE && m + e < M; ++e) {
                        const i64 me = m + e, ne = me / PQ;
                        y[(ne * K + (i64)g * Kg + k) * PQ + (me - ne * PQ)] = src[e];
                    }
                }
            }
        }
        return;
    }
    const i64 total = (i64)N * K * PQ;
#pragma unroll
    for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const i64 m = m0 + wm * WM + i * 16 + gi + h * 8;
            if (m >= M) continue;
            const i64 n = m / PQ;
            const i64 pq = m - n * PQ;
            const i64 base = y_nhwc ? m * K + (i64)g * Kg : (n * K + (i64)g * Kg) * PQ + pq;
            const i64 kstride = y_nhwc ? 1 : PQ;
#pragma unroll
            for (int j = 0; j < NT8; ++j) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int k = n0 + wn * WN + j * 8 + ti * 2 + e;
                    if (k >= Kg) continue;
                    const i64 off = base + (i64)k * kstride;
                    if (splits > 1)
                        part[split * total + off] = acc[i][j][h * 2 + e];
                    else
                        y[off] = igemm_epilogue<T>(acc[i][j][h * 2 + e], bias, g * Kg + k, has_bias, act);
                }
            }
        }
    }
}
