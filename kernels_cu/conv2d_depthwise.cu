// conv2d_depthwise.cu -- depthwise convolution (one input channel per group, C/groups == 1,
// any depth multiplier m = K/C), 2-D (1-D runs as H = R = 1): the forward pass and the data
// gradient from one kernel body.
//
// Variants (registry name "depthwise"; launcher gpuconv/cuda/families/conv2d_depthwise.py
// picks the tile by a cost model, the planes per block and the filter-size specialisation):
//   1. conv2d_depthwise<T, ACT, TP=16, TQ=32, QPT=8, KS, DG>: a 16x32 output tile per plane,
//      8 consecutive outputs per thread along a row, 4 planes per block (blockDim (4, 16, 4)):
//      maps that 16x32 tiles fit better than 8x8 ones (MobileNetV2: 28x28, 56->28 stride 2).
//      fp16: QPT=16, 16 outputs per thread, 8 planes per block (blockDim (2, 16, 8)).
//   2. conv2d_depthwise<T, ACT, TP=8, TQ=8, QPT=8, KS, DG>: an 8x8 tile per plane, one row of
//      8 outputs per thread, 32 planes per block (blockDim (1, 8, 32)): maps that are multiples of 8 and the small
//      late-network maps (MobileNetV2: 112, 56, 14, 7 and their stride-2 layers).
//   KS = 3 or 5: R = S = KS, the taps in registers (one broadcast load each), a register
//   window of QPT+KS-1 (stride 1) or 2*QPT+KS-2 (stride 2) inputs per filter row.  KS = 0:
//   any R, S, stride, dilation; taps in shared memory.
//   DG = 0: y = conv(x, w): output planes (n, k), input plane (n, k / m).
//   DG = 1: the data gradient dx = conv_transpose(dy, w) of the same FORWARD geometry (x is
//   dy, y is dx; bias/activation per input channel c): output planes (n, c) of H x W, summed
//   over the m planes (n, c*m + j) of dy, with the flipped taps, as a stride-1 correlation
//   of dy zero-upsampled by the stride (the zeros are written while staging, never read
//   from memory): padding (R-1)*dh - ph, dilation dh.  For stride 2 three quarters of the
//   FMAs multiply zeros -- 9 FMAs of the ~55 instructions an output may spend at copy
//   bandwidth (napkin math below); the uniform inner loop keeps the stride-1 window path.
//   T in {__half, float, double}; bias + activation fused (epilogue.cuh).  fp16 accumulates
//   in float (as torch and cuDNN do: a 5x5 sum in half would add ~25 roundings of 2^-11) and
//   is staged into shared memory as float, converted once per staged element (~1.2 per
//   output) instead of once per tap use (30 per 8 outputs for 3x3): its inner loop is the
//   fp32 loop, with 16-byte shared loads of the window (float rows 16-byte aligned).
//   The forward resolves the padding modes while staging (pmode: reflect, replicate,
//   circular; common.cuh pad_index).
//
// Index math: the block index decodes without divisions (blockIdx.x = plane block, .y = tile
// row, .z = tile column); one 32-bit division per thread splits the plane into (n, k) and one
// more (m > 1 only) gives c.  Staging is a two-dimensional loop (row, then columns in warp-wide
// steps of SC) with running pointers -- no division per staged element; the data gradient's
// upsampling phase advances by carries.  Shared rows have an odd pitch in 32-bit words so
// the QPT-apart row starts of a warp's threads fall in distinct banks (fp16's float rows: 4
// mod 8 words, conflict-free for the 16-byte window loads, dw_pitch); the small tile's
// planes sit 8 words apart mod 32 (conflict-free for 32-bit words).
// Full runs of 8 outputs store as 16-byte vectors when the row start is 16-byte aligned; the
// forward stages fp32/fp16 rows with 16-byte loads when W is a multiple of 4 (fp32) / 8 (fp16)
// elements (a vector is then wholly inside the row or wholly in the padding).
//
// SASS, sm_90, nvcc 13, `gpuconv kernels --sass` (float, ACT 0, KS 3; instructions per output
// = straight-line path / outputs per thread + staging loop x staged elements per output):
//   before (TP=8 TQ=32 QPT=4, TP=8 TQ=8 QPT=2): straight line 468 instr / 4 outputs = 117
//     (large), 413 / 2 = 207 (small); 2 div32 + 4 div64 routine calls in the setup; staging loop
//     38 instr per element with 3-4 div32 sequences, x 1.33 (large) / 1.56 (small) elements per
//     output: ~167 (large) and ~265 (small) instructions per output; FMA share 13% / 8%.
//   after (TP=16 TQ=32 QPT=8 and TP=8 TQ=8 QPT=8 give the same per-thread code): 3 div32, 0
//     div64 per thread (m = K/C, n = plane/K, c = k/m; the last skipped at run time for m = 1);
//     staging loop 35 instructions per 4 elements = 8.8 per staged element, 0 divisions;
//     longest straight-line path over all three compute paths 476 (fp32) / 578 (fp16)
//     instructions per 8 outputs = 59.5 / 72; with only the stride-1 window path compiled
//     (the MobileNet case, checked on a copy) 355 / 416 per 8 = 44.4 fp32 / 52.0 fp16 per
//     output (72 FFMA + 30 LDS + 2 STG.128), FMA share 20% / 17%.  Per output with staging
//     (x 1.20 large, 1.56 small): ~55 fp32 / ~63 fp16, 3.0x / 2.9x fewer than before (large).
//     16-byte staging loads (W a multiple of 4 fp32 / 8 fp16 elements): 53 instructions per
//     8 fp32 elements = 6.6 per element (9.4 at a tile edge), 36 per 8 fp16 = 4.5 (7.4), with
//     1/4 (fp32) and 1/8 (fp16) of the scalar path's load instructions; ~52 / ~59 per output.
//     The data gradient (DG = 1): staging loop 79 instructions per 4 elements = 19.8 (the
//     upsampling phase carries), 6 div32 in the setup.
//   fp16, KS 3, stride-1 window path only (on a copy), sm_90 SASS, two paths: "longest" (the
//   straight-line path counted above; with the padding modes' setup and 8 scalar stores) and
//   "MobileNet" (zeros padding, 16-byte staging loads and stores, the copy specialised so):
//   before (half rows, 8 outputs per thread, 64 registers): longest 486 instructions per 8
//   outputs (72 FFMA, 30 LDS.U16, 57 converts), MobileNet 406; staging 36 per 8 elements
//   (16-byte loads; scalar 35 per 4).  Per output, large tile (x 1.20 staged): longest
//   486/8 + 4.5 x 1.20 = 66.2, MobileNet 406/8 + 5.4 = 56.2; small (x 1.56): 67.8 / 57.8.
//   after (float rows; large tile 16 outputs per thread; 64 registers, __launch_bounds__):
//   large: longest 515 per 16 outputs (144 FFMA, 15 LDS (4 LDS.128 + 1 LDS.64 a row), 35
//   converts), MobileNet 441; staging 60 / 55 per 8 elements (8 converts; the 64-register
//   bound costs ~11 of them) = 7.5 / 6.9 per element.  Per output: longest 515/16 + 7.5 x
//   1.20 = 41.2 (-38%), MobileNet 441/16 + 6.9 x 1.20 = 35.8 (-36%); scalar staging (39 per
//   4 elements) 43.9 (-38%).  small (8 outputs per thread, 64 registers unbounded): longest
//   420 per 8 (72 FFMA, 9 LDS, 27 converts), MobileNet 344; staging 44 per 8 elements = 5.5;
//   per output 52.5 + 5.5 x 1.56 = 61.1 (-10%), MobileNet 43.0 + 8.6 = 51.6 (-11%).  The
//   setup (~200 instructions a thread: 3 div32, pointers, bounds) is the rest of the small
//   tile's figure; fp32 and fp64 code is unchanged (ptxas -v identical, sm_80 and sm_90).
//   Registers (ptxas -v, sm_80/sm_90): fp16 forward 63-64 -> 64 (4 resident blocks of 256,
//   as before; unbounded, 72-96 and 2-3 blocks), data gradient 66-80 -> 79-80 (3 blocks, as
//   before).  Shared memory per block for fp16 (float rows): 16x32 3x3, 8 planes 20.7 KB
//   (was 5.2 KB for 4 half planes), 5x5 23.8 KB (6.3); 8x8 3x3 17.4 KB (9.2), 5x5 21.5 KB
//   (13.3): 4 blocks use <= 96 KB of the H200's 228 KB per SM; one plane's tile reaches the
//   48 KB limit at fp32's extent (very large dilations go to the other families sooner).
//
// Napkin math (estimates; no GPU has run this kernel). MobileNetV2 block 3 depthwise:
//   N=32, C=K=144, 56x56, 3x3 s1 p1.  fp32 bytes = 4 * (14.45M in + 14.45M out) = 115.6 MB:
//   24 us at the H200's 4.8 TB/s (datasheet HBM), 38.5 us at the 3.0 TB/s device copy
//   measured on an H100 SXM (a published figure).  FLOPs 0.26 GFLOP: memory bound by 10x.  Instruction budget at 4.8 TB/s:
//   8 B per fp32 output -> 6.0e11 outputs/s; 132 SMs x 4 schedulers x 1.98 GHz = 1.05e12
//   warp-instr/s = 3.3e13 thread-instr/s -> 56 thread-instructions per output before issue,
//   not DRAM, is the bound (fp16: 4 B per output, 28 instructions).  The old kernel's
//   ~170-265 is 3-9x over (11-33% of bandwidth); the new ~55 meets fp32's budget (~100% by
//   issue alone, ~75-85% of the copy bandwidth expected after latency and tails).  fp16:
//   was ~56-66 per output, 2.0-2.4x over its 28 (~42-50% of 4.8 TB/s by issue); now ~36-41
//   on the large tile, 1.3-1.5x over (~68-78% by issue, estimate) and ~52-61 on the small
//   tile (~46-54%).  HFMA2 would halve the FMAs but accumulate in half (not done: accuracy);
//   the rest of fp16's gap is the per-thread setup and the staging.  Halo: a 16x32 tile stages 18x34 =
//   1.20 inputs per output; the re-read halos hit the 50 MB L2.  Shared loads per output:
//   3 x 10 / 8 = 3.75 (window), 132 SMs x 32 words/clk x 1.98 GHz = 8.4e12 words/s against
//   6.0e11 x 3.75 = 2.2e12: 27% of shared bandwidth.  MEASURE: GB/s vs the copy ceiling and
//   vs cuDNN through torch, fp16 and fp32, both tiles.
#include "common.cuh"
#include "epilogue.cuh"

// Shared memory holds the accumulation type num<T>::acc (fp16 is converted to float once
// while staging, not once per tap).  Row pitch (staged elements) of a tile of width n: odd
// in 32-bit words for float and double; fp16's float rows 4 mod 8 words, 16-byte aligned for
// the window's 16-byte loads and conflict-free for them: a quarter warp's 8 threads read
// 4 words each at 4*row + 16*tx mod 32 (large tile: 4 rows x 2 windows) or 4*row (mod 8
// rows, the small tile), 8 disjoint 4-word groups; the 8-byte tail load of a 3x3 window (18
// or 10 floats) meets 2-way conflicts (a half warp's 16 threads, 4 words apart).
template <typename T> __device__ __forceinline__ int dw_pitch(int n) {
    return sizeof(T) == 2 ? n + ((4 - n) & 7) : (n | 1);
}
// Plane stride (staged elements): at least rows*pitch, 8 words apart mod 32 (8-byte types:
// 8 elements mod 16, the banks of a half-warp's 64-bit accesses); fp16 (float rows, a
// multiple of 4 words) keeps the 16-byte alignment.
template <typename T> __device__ __forceinline__ int dw_plane_stride(int rows, int pitch) {
    const int e = rows * pitch;
    if (sizeof(T) == 8) return e + ((8 - e) & 15);
    return e + ((8 - e) & 31);
}

// 16 bytes of outputs as one vector store (dst 16-byte aligned).
__device__ __forceinline__ void store16(float* dst, const float* v) {
    *reinterpret_cast<uint4*>(dst) = make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]),
                                                __float_as_uint(v[2]), __float_as_uint(v[3]));
}
__device__ __forceinline__ void store16(double* dst, const double* v) {
    *reinterpret_cast<uint4*>(dst) = make_uint4((unsigned)__double2loint(v[0]), (unsigned)__double2hiint(v[0]),
                                                (unsigned)__double2loint(v[1]), (unsigned)__double2hiint(v[1]));
}
__device__ __forceinline__ unsigned pack_half2(__half a, __half b) {
    return (unsigned)__half_as_ushort(a) | ((unsigned)__half_as_ushort(b) << 16);
}
__device__ __forceinline__ void store16(__half* dst, const __half* v) {
    *reinterpret_cast<uint4*>(dst) = make_uint4(pack_half2(v[0], v[1]), pack_half2(v[2], v[3]),
                                                pack_half2(v[4], v[5]), pack_half2(v[6], v[7]));
}

// One 16-byte load unpacked into elements (the staging's vector path).
__device__ __forceinline__ void unpack16(const uint4& u, float* v) {
    v[0] = __uint_as_float(u.x); v[1] = __uint_as_float(u.y); v[2] = __uint_as_float(u.z); v[3] = __uint_as_float(u.w);
}
__device__ __forceinline__ void unpack16(const uint4& u, double* v) {
    v[0] = __hiloint2double((int)u.y, (int)u.x); v[1] = __hiloint2double((int)u.w, (int)u.z);
}
__device__ __forceinline__ void unpack16(const uint4& u, __half* v) {
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        v[2 * i] = __ushort_as_half((unsigned short)(w[i] & 0xffffu));
        v[2 * i + 1] = __ushort_as_half((unsigned short)(w[i] >> 16));
    }
}

// DG: at least 3 blocks of 256 per SM (<= 85 registers; fp64: 2, <= 128): without the bound
// ptxas settles on 64 registers and spills 4-24 B on sm_80/sm_90 for the gradient's extra
// phase state; with it 64-80 registers (fp64 5x5: ~126) and no spill (ptxas -v).
// fp16 forward: at least 4 (<= 64 registers, no spill), the occupancy the fp16 kernels had
// with half rows in shared memory and 8 outputs per thread; unbounded, float rows and 16
// outputs per thread take 72 (16x32, 3x3), 96 (5x5) and 72-80 (KS = 0) registers, 2-3
// blocks.  Not for the 8x8 3x3 kernel: at 64 unbounded, and the bound lengthens its staging
// loop from 44 to 55-60 instructions per 8 elements (sm_90 SASS).
template <typename T, int ACT, int TP, int TQ, int QPT, int KS, int DG>
__global__ void __launch_bounds__(256, DG ? (sizeof(T) == 8 ? 2 : 3)
                                          : (sizeof(T) == 2 && !(QPT == 8 && KS == 3) ? 4 : 1))
conv2d_depthwise(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                 T* __restrict__ y, CONV_GEOMETRY_PARAMS, int has_bias) {
    typedef typename num<T>::acc A;
    constexpr int TX = TQ / QPT, NTP = TX * TP;                  // threads per plane
    constexpr int SC = NTP >= 32 ? 32 : NTP, SR = NTP / SC;      // staging: columns x rows per pass
    constexpr int KR = KS > 0 ? KS : 1;
    static_assert(TQ % QPT == 0 && (SC & (SC - 1)) == 0 && NTP % SC == 0, "tile shape");
    // DG: stride 1 over dy upsampled by (uh, uw) = the forward stride; DG = 0: uh = uw = 1
    const int st_h = DG ? 1 : sh, st_w = DG ? 1 : sw;
    const int uh = DG ? sh : 1, uw = DG ? sw : 1;
    const int Hi = DG ? P : H, Wi = DG ? Q : W;                  // input plane
    const int Ho = DG ? H : P, Wo = DG ? W : Q;                  // output plane
    const int KO = DG ? C : K;                                   // output channels
    const int m = K == C ? 1 : K / C;                          // depth multiplier (no division at m = 1)
    const int nin = DG ? m : 1;                                  // input planes per output plane
    const int IH = (TP - 1) * st_h + (R - 1) * dh + 1;
    const int IW = (TQ - 1) * st_w + (S - 1) * dw + 1;
    const int IWP = dw_pitch<T>(IW);
    const int PS = dw_plane_stride<T>(IH, IWP);

    extern __shared__ __align__(16) unsigned char smem_raw[];
    A* s_in = reinterpret_cast<A*>(smem_raw) + threadIdx.z * PS;
    A* s_w = reinterpret_cast<A*>(smem_raw) + blockDim.z * PS + threadIdx.z * R * S;   // KS == 0

    const int plane = blockIdx.x * blockDim.z + threadIdx.z;     // n * KO + ko  (< 2^31: launcher)
    const bool active = plane < N * KO;
    const int n = active ? plane / KO : 0;
    const int ko = active ? plane - n * KO : 0;
    const int tid = threadIdx.y * TX + threadIdx.x;              // within the plane
    const int p0 = blockIdx.y * TP, q0 = blockIdx.z * TQ;
    // tile origin in (upsampled) input coordinates
    const int ih0 = DG ? p0 + ph - (R - 1) * dh : p0 * sh - ph;
    const int iw0 = DG ? q0 + pw - (S - 1) * dw : q0 * sw - pw;
    const int srow = tid / SC, scol = tid & (SC - 1);
    // Padding modes (forward only: the data gradient's derived problem pads with zeros, and
    // pm = 0 is a compile-time constant there, so its staging compiles as before).  A staged
    // row's index is mapped once per row (pad_index: one uniform compare in zeros mode); a
    // column's only in tiles that reach past the left or right edge (remap_cols, uniform per
    // block), in a loop of their own: the zeros-mode and interior-tile loops are the loops
    // without a map, and keep the 16-byte path (an edge tile in a mode stages scalar, ~4 more
    // instructions per element for the map; estimate from the source).  The bounds tests
    // stay after the map: rows / columns past the last output may map outside the image in
    // reflect mode, and stage zeros that no output reads.  One kernel for every mode (unlike
    // direct / tiled / im2col): ptxas -v, forward, zeros path included: __half 56 -> 64
    // registers, float KS = 0 72 -> 79-80, no spills (sm_80, sm_90); at 256 threads that is 4
    // (__half) and 3 (float KS = 0) resident blocks before and after, so the same occupancy,
    // and the data gradient's registers are unchanged.
    const int pm = DG ? PAD_ZEROS : pmode;
    const bool remap_cols = pm != PAD_ZEROS && (iw0 < 0 || iw0 + IW > Wi);
    // upsampling phase of the first staged row/column: u = f*uh + r, 0 <= r < uh (floor)
    int fr0 = 0, rr0 = 0, fc0 = 0, rc0 = 0, srq = SR, srr = 0, scq = SC, scr = 0;
    {
        const int u = ih0 + srow, v = iw0 + scol;
        fr0 = u >= 0 ? u / uh : -((uh - 1 - u) / uh); rr0 = u - fr0 * uh;
        fc0 = v >= 0 ? v / uw : -((uw - 1 - v) / uw); rc0 = v - fc0 * uw;
        srq = SR / uh; srr = SR - srq * uh;
        scq = SC / uw; scr = SC - scq * uw;
    }

    A acc[QPT];
#pragma unroll
    for (int j = 0; j < QPT; ++j) acc[j] = num<T>::zero();
    const int p = p0 + threadIdx.y;

    for (int jm = 0; jm < nin; ++jm) {
        const int ci = DG ? ko * m + jm : (m == 1 ? ko : ko / m);   // input plane's channel
        const int cw = DG ? ci : ko;                                // filter of this pair
        if (jm > 0) __syncthreads();                                // the previous plane is consumed
        if (active) {
            const T* __restrict__ xc = x + ((i64)n * (DG ? K : C) + ci) * ((i64)Hi * Wi);
            constexpr int VEC = 16 / (int)sizeof(T);
            if (!DG && !remap_cols && sizeof(T) <= 4 && Wi % VEC == 0 &&
                (reinterpret_cast<unsigned long long>(xc) & 15) == 0) {
                // 16-byte loads (fp32, fp16; for fp64's 2-element vectors the unpacking costs
                // more than the loads save): from the VEC-aligned column a0 <= iw0; 0 and W are
                // multiples of VEC, so a vector lies wholly inside the row or in the padding
                const int a0 = iw0 & ~(VEC - 1), off = iw0 - a0;
                const int NV = (off + IW + VEC - 1) / VEC;            // vectors per row
                int lg = 0;
                while ((1 << lg) < NV && (1 << lg) < NTP) ++lg;       // lanes per row: 2^lg
                const int vl = tid & ((1 << lg) - 1);
                for (int yy = tid >> lg; yy < IH; yy += NTP >> lg) {
                    const int ih = pad_index(ih0 + yy, Hi, pm);
                    const bool rok = (unsigned)ih < (unsigned)Hi;
                    const T* __restrict__ src = xc + (rok ? (i64)ih * Wi : 0);
                    A* dst = s_in + yy * IWP;
                    for (int v = vl; v < NV; v += 1 << lg) {
                        const int col = a0 + v * VEC;
                        uint4 raw = make_uint4(0u, 0u, 0u, 0u);
                        if (rok && (unsigned)col < (unsigned)Wi) raw = *reinterpret_cast<const uint4*>(src + col);
                        T e[VEC];
                        unpack16(raw, e);
                        const int xb = v * VEC - off;                   // staged column of e[0]
                        if (xb >= 0 && xb + VEC <= IW) {
#pragma unroll
                            for (int i = 0; i < VEC; ++i) dst[xb + i] = num<T>::load(e[i]);
                        } else {
#pragma unroll
                            for (int i = 0; i < VEC; ++i)
                                if (xb + i >= 0 && xb + i < IW) dst[xb + i] = num<T>::load(e[i]);
                        }
                    }
                }
            } else {
                int fr = fr0, rr = rr0;
                for (int yy = srow; yy < IH; yy += SR) {
                    const int frm = pad_index(fr, Hi, pm);            // DG: fr itself
                    const bool rok = rr == 0 && frm >= 0 && frm < Hi;
                    const T* __restrict__ src = xc + (rok ? (i64)frm * Wi : 0);
                    A* dst = s_in + yy * IWP;
                    if (remap_cols) {                                 // forward: uw = 1, fc = iw0 + xx
                        for (int xx = scol; xx < IW; xx += SC) {
                            const int col = pad_index(iw0 + xx, Wi, pm);
                            A v = num<A>::zero();
                            if (rok && (unsigned)col < (unsigned)Wi) v = num<T>::load(src[col]);
                            dst[xx] = v;
                        }
                    } else {
                        int fc = fc0, rc = rc0;
                        for (int xx = scol; xx < IW; xx += SC) {
                            A v = num<A>::zero();
                            if (rok && rc == 0 && fc >= 0 && fc < Wi) v = num<T>::load(src[fc]);
                            dst[xx] = v;
                            fc += scq; rc += scr;
                            if (rc >= uw) { rc -= uw; ++fc; }
                        }
                    }
                    fr += srq; rr += srr;
                    if (rr >= uh) { rr -= uh; ++fr; }
                }
            }
            if (KS == 0)
                for (int i = tid; i < R * S; i += NTP)
                    s_w[i] = num<T>::load(w[(i64)cw * R * S + (DG ? R * S - 1 - i : i)]);
        }
        A wr[KR][KR];                                               // taps in registers (KS > 0)
        if (KS > 0) {
            const T* __restrict__ wk = w + (i64)cw * KS * KS;
#pragma unroll
            for (int r = 0; r < KR; ++r)
#pragma unroll
                for (int s = 0; s < KR; ++s)
                    wr[r][s] = num<T>::load(wk[DG ? (KR - 1 - r) * KR + (KR - 1 - s) : r * KR + s]);
        }
        __syncthreads();
        if (active && p < Ho) {
            const A* s0 = s_in + threadIdx.y * st_h * IWP + threadIdx.x * QPT * st_w;
            if (KS > 0 && st_w == 1 && dw == 1) {                   // register window, stride 1
                constexpr int WIN = QPT + KR - 1;
#pragma unroll
                for (int r = 0; r < KR; ++r) {
                    const A* srow_ = s0 + r * dh * IWP;
                    A v[WIN];
                    if (sizeof(T) == 2 && QPT % 4 == 0) {
                        // fp16 (float rows, pitch and window start multiples of 4 words):
                        // 16-byte loads, then 8 bytes and 4 -- KS = 3: 3 loads per row, not 10
                        const float* fr_ = reinterpret_cast<const float*>(srow_);
#pragma unroll
                        for (int i = 0; i + 4 <= WIN; i += 4) {
                            const float4 t = *reinterpret_cast<const float4*>(fr_ + i);
                            v[i] = t.x; v[i + 1] = t.y; v[i + 2] = t.z; v[i + 3] = t.w;
                        }
                        constexpr int I2 = WIN & ~3;
                        if (WIN - I2 >= 2) {
                            const float2 t = *reinterpret_cast<const float2*>(fr_ + I2);
                            v[I2] = t.x; v[I2 + 1] = t.y;
                        }
                        if ((WIN - I2) & 1) v[WIN - 1] = fr_[WIN - 1];
                    } else {
#pragma unroll
                        for (int i = 0; i < WIN; ++i) v[i] = srow_[i];
                    }
#pragma unroll
                    for (int s = 0; s < KR; ++s)
#pragma unroll
                        for (int j = 0; j < QPT; ++j) acc[j] = acc[j] + wr[r][s] * v[j + s];
                }
            } else if (KS > 0 && st_w == 2 && dw == 1) {            // register window, stride 2
                constexpr int WIN = 2 * QPT + KR - 2;
#pragma unroll
                for (int r = 0; r < KR; ++r) {
                    const A* srow_ = s0 + r * dh * IWP;
                    A v[WIN];
#pragma unroll
                    for (int i = 0; i < WIN; ++i) v[i] = srow_[i];
#pragma unroll
                    for (int s = 0; s < KR; ++s)
#pragma unroll
                        for (int j = 0; j < QPT; ++j) acc[j] = acc[j] + wr[r][s] * v[2 * j + s];
                }
            } else if (KS > 0) {                                    // any stride / dilation
#pragma unroll
                for (int r = 0; r < KR; ++r) {
                    const A* srow_ = s0 + r * dh * IWP;
#pragma unroll
                    for (int s = 0; s < KR; ++s)
#pragma unroll
                        for (int j = 0; j < QPT; ++j)
                            acc[j] = acc[j] + wr[r][s] * srow_[j * st_w + s * dw];
                }
            } else {                                                // any R, S: taps from shared
                for (int r = 0; r < R; ++r) {
                    const A* srow_ = s0 + r * dh * IWP;
                    for (int s = 0; s < S; ++s) {
                        const A wv = s_w[r * S + s];
#pragma unroll
                        for (int j = 0; j < QPT; ++j)
                            acc[j] = acc[j] + wv * srow_[j * st_w + s * dw];
                    }
                }
            }
        }
    }
    if (!active || p >= Ho) return;
    T* __restrict__ yrow = y + ((i64)plane * Ho + p) * (i64)Wo;
    const int qb = q0 + threadIdx.x * QPT;
    T out[QPT];
#pragma unroll
    for (int j = 0; j < QPT; ++j) out[j] = epilogue<T, ACT>(acc[j], bias, ko, has_bias);
    constexpr int E = 16 / (int)sizeof(T);                          // elements per 16 bytes
    if ((QPT * (int)sizeof(T)) % 16 == 0 && qb + QPT <= Wo &&
        (reinterpret_cast<unsigned long long>(yrow + qb) & 15) == 0) {
#pragma unroll
        for (int j = 0; j < QPT; j += E) store16(yrow + qb + j, out + j);
    } else {
#pragma unroll
        for (int j = 0; j < QPT; ++j)
            if (qb + j < Wo) yrow[qb + j] = out[j];
    }
}
