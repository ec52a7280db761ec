// conv2d_direct.cu -- the readable baseline convolution, kept forever.
//
// Variants (launcher: gpuconv/cuda/families/conv2d_direct.py, registry name "direct"):
//   1. conv_direct<T, ACT> (conv_direct_pm<T, ACT>: a non-zero padding mode): one thread per output element, grid-stride loop
//      over the flat output index (32-bit below 2^31 outputs, else 64-bit).  Handles every geometry the spec
//      allows -- 1-D, 2-D and 3-D (a 2-D spec is D=1, KD=1; 1-D also H=1, R=1),
//      stride, padding (the low side; the high side only shapes the output) in every
//      mode (zeros, reflect, replicate, circular: pmode, common.cuh pad_index), dilation,
//      groups -- and T in {__half, float, double}.
//
// Napkin math (ResNet-50 conv 3x3, N=32 C=K=256 H=W=14, float32):
//   FLOPs = 2*N*K*P*Q*C*R*S = 29.6 GFLOP; minimum bytes = 4*(1.6M+0.6M+1.6M) = 15 MB.
//   Each output reads C*R*S inputs and weights through L1/L2 (2 loads per FMA):
//   it is load-issue bound at roughly 1/4 of FP32 peak at best.  It exists to be
//   obviously right; the tiled and im2col variants are the fast ones.  Where it
//   wins: depthwise and other tiny-inner-product layers (Cg*R*S small), where
//   the output write dominates and consecutive threads (consecutive q) read
//   consecutive inputs, so loads coalesce.
#include "common.cuh"
#include "epilogue.cuh"

// The flat output index and its decomposition use I = int when the output has
// fewer than 2^31 elements (every realistic layer): 64-bit division is a
// ~70-instruction call, and a depthwise 3x3 output costs only 9 FMAs, so the
// index math would dominate.  Element offsets into x and w stay 64-bit.
// PM: a non-zero padding mode.  PM = false is the zeros body unchanged (padded taps skipped
// by the bounds tests); PM = true maps every tap index through pad_index, once per depth
// tap, once per row tap and once per element along the row (every tap is then valid, the
// bounds tests stay as a guard).  Cost of the mode, inside the image: a pmode compare and an
// unsigned compare per element (~3 instructions against the ~8 of a tap's load + FMA +
// bounds test; estimate from the source, the SASS is not inspected); the zeros body pays
// nothing (the launcher picks the kernel: conv_direct or conv_direct_pm below).
template <typename T, int ACT, typename I, bool PM>
__device__ __forceinline__ void
conv_direct_body(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                 T* __restrict__ y, CONV_GEOMETRY_PARAMS, int has_bias) {
    typedef typename num<T>::acc A;
    const int Cg = C / groups, Kg = K / groups;
    const I total = (I)N * K * OD * P * Q;
    const i64 in_plane = (i64)D * H * W;
    const i64 w_filter = (i64)KD * R * S;
    for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (I)gridDim.x * blockDim.x) {
        I t = idx;
        const int q = (int)(t % Q); t /= Q;
        const int p = (int)(t % P); t /= P;
        const int od = (int)(t % OD); t /= OD;
        const int k = (int)(t % K);
        const i64 n = t / K;
        const int g = k / Kg;
        const T* __restrict__ xg = x + (n * C + (i64)g * Cg) * in_plane;
        const T* __restrict__ wk = w + (i64)k * Cg * w_filter;
        const int id0 = od * sd - pd, ih0 = p * sh - ph, iw0 = q * sw - pw;
        A acc = num<T>::zero();
        for (int c = 0; c < Cg; ++c) {
            const T* __restrict__ xc = xg + (i64)c * in_plane;
            const T* __restrict__ wc = wk + (i64)c * w_filter;
            for (int a = 0; a < KD; ++a) {
                const int id = PM ? pad_index(id0 + a * dd, D, pmode) : id0 + a * dd;
                if (id < 0 || id >= D) continue;
                for (int r = 0; r < R; ++r) {
                    const int ih = PM ? pad_index(ih0 + r * dh, H, pmode) : ih0 + r * dh;
                    if (ih < 0 || ih >= H) continue;
                    const T* __restrict__ xrow = xc + ((i64)id * H + ih) * W;
                    const T* __restrict__ wrow = wc + (a * R + r) * S;
                    for (int s = 0; s < S; ++s) {
                        const int iw = PM ? pad_index(iw0 + s * dw, W, pmode) : iw0 + s * dw;
                        if (iw < 0 || iw >= W) continue;
                        acc = acc + num<T>::load(xrow[iw]) * num<T>::load(wrow[s]);
                    }
                }
            }
        }
        y[idx] = epilogue<T, ACT>(acc, bias, k, has_bias);
    }
}

// conv_direct (zeros) and conv_direct_pm (a non-zero padding mode): kernels of their own
// rather than a run-time branch between four inlined bodies: in one kernel ptxas allocated
// 40 registers and spilled 76-80 B on sm_90 (float, around the 64-bit body's division calls);
// as two kernels each is 48 registers, spill-free (float, __half; sm_80 and sm_90).
template <typename T, int ACT, bool PM>
__device__ __forceinline__ void
conv_direct_entry(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                  T* __restrict__ y, CONV_GEOMETRY_PARAMS, int has_bias) {
    // the grid-stride step must not overflow I either: blocks * 256 <= 2^28 (launcher cap)
    if ((i64)N * K * OD * P * Q + (i64)gridDim.x * blockDim.x <= 0x7fffffffLL)
        conv_direct_body<T, ACT, int, PM>(x, w, bias, y, CONV_GEOMETRY_ARGS, has_bias);
    else
        conv_direct_body<T, ACT, i64, PM>(x, w, bias, y, CONV_GEOMETRY_ARGS, has_bias);
}

template <typename T, int ACT>
__global__ void __launch_bounds__(256)
conv_direct(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
            T* __restrict__ y, CONV_GEOMETRY_PARAMS, int has_bias) {
    conv_direct_entry<T, ACT, false>(x, w, bias, y, CONV_GEOMETRY_ARGS, has_bias);
}

template <typename T, int ACT>
__global__ void __launch_bounds__(256)
conv_direct_pm(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
               T* __restrict__ y, CONV_GEOMETRY_PARAMS, int has_bias) {
    conv_direct_entry<T, ACT, true>(x, w, bias, y, CONV_GEOMETRY_ARGS, has_bias);
}
