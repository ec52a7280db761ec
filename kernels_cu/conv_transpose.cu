// conv_transpose.cu -- transposed convolution (= the data gradient of a forward convolution)
// as a gather: no zero-upsampled input, no scatter, no atomics.
//
// Described by the FORWARD convolution whose transpose it is (gpuconv/cuda/transpose.py):
// forward input (N, C, D, H, W) <- our output dx; forward output (N, K, OD, P, Q) <- our
// input dy; weight (K, C/groups, KD, R, S) (torch's transposed-conv weight layout
// (C_in, C_out/groups, ...) is exactly this with K = C_in, C = C_out).
//
//   dx[n, g*Cg + c, h] = sum_{k < Kg} sum_{r, p : p*sh - ph + r*dh == h} dy[n, g*Kg + k, p] * w[g*Kg + k, c, r]
//   (and likewise for the depth and width dimensions; output_padding is in H: the caller's size)
//
// Only the taps r whose residue matches contribute: p = (h + ph - r*dh) / sh must be an
// integer, i.e. r*dh == h + ph (mod sh).  With g = gcd(sh, dh) that needs g | h + ph and
// then r == r0 (mod sh/g), r0 = ((h + ph)/g mod sh/g) * inv(dh/g mod sh/g) (the modular
// inverse is passed in by the launcher); p falls by dh/g from one valid r to the next.
// A stride-2 4x4 upsampling layer thus runs 2x2 taps per output, not 4x4 over zeros.
//
// Variants (launcher gpuconv/cuda/families/conv_transpose.py):
//   1. conv_transpose<T, ACT, CPT=1>: one thread per output element (depthwise-transposed,
//      C/groups < 4).
//   2. conv_transpose<T, ACT, CPT=4>: one thread per 4 output channels of one position:
//      each dy value loaded feeds 4 FMAs (weights of neighbouring c sit R*S apart, a
//      warp reads at most sh*sw distinct weight addresses per step: L1 broadcasts).
// 1-D, 2-D, 3-D; T in {__half (float accumulate), float, double}; bias + activation fused.
//
// Napkin math (DCGAN-style 4x4/2 up-sampling, N=32, K=256 -> C=128, 16x16 -> 32x32, fp32):
//   FLOPs = 2*N*K*16*16*C*16 (the forward conv's) = 8.6 GFLOP; each output position sees
//   2x2 taps per input channel.  Loads per FMA (CPT=4): (1 dy + 4 w) / 4 = 1.25, all L1/L2
//   hits after the first: like conv2d_direct it is load-issue bound, ~1/4 of FP32 peak at
//   best (~15 TFLOP/s, 0.6 ms).  The zero-upsampled forward form would do the same
//   work over 4x the taps (3/4 of them multiplying zeros) plus an upsampled copy of dy.
//   A shared-memory tiled version per residue class is the next step (MEASURE first).
#include "common.cuh"
#include "epilogue.cuh"

// The valid taps of one dimension for output coordinate h: r = r0 + i*step, input
// coordinate p = p0 - i*dp, for i in [0, count).
struct TapRun { int r0, step, count, p0, dp; };

__device__ __forceinline__ TapRun tap_run(int h, int pad, int stride, int dil, int R, int P,
                                          int g, int inv) {
    TapRun t; t.count = 0; t.r0 = 0; t.p0 = 0;
    const int st = stride / g;
    t.step = st; t.dp = dil / g;
    const int v = h + pad;                                  // = p*stride + r*dil, v >= 0
    if (v % g != 0) return t;
    int r0 = ((v / g) % st) * inv % st;                     // < st*st: stride <= 46340 (launcher)
    // p < P  <=>  r*dil > v - P*stride
    const int lo = v - P * stride;
    const int rmin = lo < 0 ? 0 : lo / dil + 1;
    if (r0 < rmin) r0 += ((rmin - r0 + st - 1) / st) * st;
    const int rmax = min(R - 1, v / dil);                   // p >= 0
    if (r0 > rmax) return t;
    t.r0 = r0;
    t.count = (rmax - r0) / st + 1;
    t.p0 = (v - r0 * dil) / stride;
    return t;
}

// Index math in 32 bits: the launcher refuses (and gpuconv falls back to the forward-conv
// form) when N*groups*ceil(Cg/CPT)*D*H*W + the grid reaches 2^31.  No 64-bit index path
// like conv2d_direct's: 64-bit divisions are calls, and with them ptxas caps this kernel
// at 64 registers and spills 40-120 B (ptxas report).  Element offsets stay 64-bit.
template <typename T, int ACT, int CPT, typename I>
__device__ __forceinline__ void
conv_transpose_body(const T* __restrict__ dy, const T* __restrict__ w, const T* __restrict__ bias,
                    T* __restrict__ dx, CONV_GEOMETRY_PARAMS, int has_bias,
                    int gd, int gh, int gw, int invd, int invh, int invw) {
    typedef typename num<T>::acc A;
    const int Cg = C / groups, Kg = K / groups;
    const int CB = (Cg + CPT - 1) / CPT;
    const I total = (I)N * groups * CB * D * H * W;
    const int taps = KD * R * S;
    const i64 out_plane = (i64)OD * P * Q, in_plane = (i64)D * H * W;
    const int DHW = D * H * W;
    for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (I)gridDim.x * blockDim.x) {
        const int plane = idx / DHW;
        int t = idx - plane * DHW;
        const int xw = t % W; t /= W;
        const int xh = t % H;
        const int xd = t / H;
        const int cb = plane % CB;
        const int g = (plane / CB) % groups;
        const i64 n = plane / (CB * groups);
        const int c0 = cb * CPT;
        A acc[CPT];
#pragma unroll
        for (int j = 0; j < CPT; ++j) acc[j] = num<T>::zero();
        const TapRun ta = tap_run(xd, pd, sd, dd, KD, OD, gd, invd);
        const TapRun tr = tap_run(xh, ph, sh, dh, R, P, gh, invh);
        const TapRun ts = tap_run(xw, pw, sw, dw, S, Q, gw, invw);
        if (ta.count && tr.count && ts.count) {
            // no unrolling of the tap loops: counts are 1-3, and unrolled copies cost
            // registers (128 and spills on sm_80 without these pragmas)
#pragma unroll 1
            for (int k = 0; k < Kg; ++k) {
                const int kabs = g * Kg + k;
                const T* __restrict__ dyk = dy + (n * K + kabs) * out_plane;
                const T* __restrict__ wk = w + (i64)kabs * Cg * taps;
#pragma unroll 1
                for (int a = 0; a < ta.count; ++a) {
                    const int od = ta.p0 - a * ta.dp, ka = ta.r0 + a * ta.step;
#pragma unroll 1
                    for (int i = 0; i < tr.count; ++i) {
                        const int p = tr.p0 - i * tr.dp, kr = tr.r0 + i * tr.step;
                        const T* __restrict__ dyrow = dyk + ((i64)od * P + p) * Q;
                        const int tap_row = (ka * R + kr) * S;
#pragma unroll 1
                        for (int j2 = 0; j2 < ts.count; ++j2) {
                            const int q = ts.p0 - j2 * ts.dp, ks = ts.r0 + j2 * ts.step;
                            const A v = num<T>::load(dyrow[q]);
#pragma unroll
                            for (int j = 0; j < CPT; ++j) {
                                const int c = min(c0 + j, Cg - 1);   // past Cg: a harmless duplicate, never stored
                                acc[j] = acc[j] + v * num<T>::load(wk[(i64)c * taps + tap_row + ks]);
                            }
                        }
                    }
                }
            }
        }
        const i64 pos = ((i64)xd * H + xh) * W + xw;
#pragma unroll
        for (int j = 0; j < CPT; ++j) {
            const int c = c0 + j;
            if (c < Cg) {
                const int cabs = g * Cg + c;
                dx[(n * C + cabs) * in_plane + pos] = epilogue<T, ACT>(acc[j], bias, cabs, has_bias);
            }
        }
    }
}

template <typename T, int ACT, int CPT>
__global__ void __launch_bounds__(256)
conv_transpose(const T* __restrict__ dy, const T* __restrict__ w, const T* __restrict__ bias,
               T* __restrict__ dx, CONV_GEOMETRY_PARAMS, int has_bias,
               int gd, int gh, int gw, int invd, int invh, int invw) {
    conv_transpose_body<T, ACT, CPT, int>(dy, w, bias, dx, CONV_GEOMETRY_ARGS, has_bias,
                                          gd, gh, gw, invd, invh, invw);
}
