// common.cuh -- types shared by every gpuconv kernel.
//
// * i64: every index that can pass 2^31 (element offsets into N*C*H*W tensors,
//   flat output indices) is computed in 64-bit; per-dimension sizes stay int.
// * cfloat / cdouble: a minimal complex type (layout-compatible with NumPy's
//   complex64 / complex128 and CuPy's arrays: {re, im}, aligned to its size) so
//   the signal kernels and the im2col path need no thrust/cuda::std headers.
// * num<T>: the accumulator type and the conversions around it.  float16 is
//   stored as __half and accumulated in float32 (as torch and cuDNN do);
//   integers accumulate in the unsigned type of the same width, so overflow
//   wraps exactly like NumPy (signed overflow would be undefined behaviour).
// * CONV_GEOMETRY_PARAMS: the one parameter list of a convolution's sizes, used by
//   every conv kernel's signature (after its pointers, before its own extras), so a
//   kernel cannot take ph where pw is passed.  1-D and 2-D problems arrive as 3-D
//   with unit leading dims (D = KD = OD = 1, sd = dd = 1, pd = 0); 2-D kernels
//   ignore the depth terms.  pmode is the padding mode (PAD_* below, pad_index);
//   a kernel that does not resolve it is refused for non-zero modes by the
//   dispatcher (Variant.padding_modes).  The values come from one function,
//   gpuconv/cuda/launch.py geometry_args, whose field order a test compares with
//   this list.  Input D x H x W, kernel KD x R x S, output OD x P x Q; stride,
//   low-side padding and dilation per dim; K output channels; groups.
#pragma once
#include <cuda_fp16.h>

#define CONV_GEOMETRY_PARAMS                                                      \
    int N, int C, int D, int H, int W, int K, int KD, int R, int S, int OD, int P, \
    int Q, int sd, int sh, int sw, int pd, int ph, int pw, int dd, int dh, int dw, \
    int groups, int pmode
#define CONV_GEOMETRY_ARGS \
    N, C, D, H, W, K, KD, R, S, OD, P, Q, sd, sh, sw, pd, ph, pw, dd, dh, dw, groups, pmode

// The padding modes (pmode, ConvSpec.padding_mode_code): what a padded position holds.
#define PAD_ZEROS 0
#define PAD_REFLECT 1      // x[-i] = x[i], x[n-1+i] = x[n-1-i]: the edge not repeated (torch's
                           // limit: padding < n, so one reflection reaches every position)
#define PAD_REPLICATE 2    // the edge element repeated
#define PAD_CIRCULAR 3     // x[i] = x[i mod n], any number of periods

// The input index a padded position i (any int, 0 <= i < n inside) reads in mode
// `pmode`: i itself for zeros (the caller's bounds test then reads 0 outside) and for
// every inside position, so a zeros-mode load is unchanged and an inside load pays one
// unsigned compare; outside, the reflected / clamped / wrapped index in [0, n).
__device__ __forceinline__ int pad_index(int i, int n, int pmode) {
    if (pmode == PAD_ZEROS || (unsigned)i < (unsigned)n) return i;
    if (pmode == PAD_REFLECT) return i < 0 ? -i : 2 * (n - 1) - i;
    if (pmode == PAD_REPLICATE) return i < 0 ? 0 : n - 1;
    int r = i % n;                                  // circular: C's % keeps the sign of i
    return r < 0 ? r + n : r;
}

typedef long long i64;

struct __align__(8) cfloat { float x, y; };
struct __align__(16) cdouble { double x, y; };

__device__ __forceinline__ cfloat operator+(cfloat a, cfloat b) { cfloat r; r.x = a.x + b.x; r.y = a.y + b.y; return r; }
__device__ __forceinline__ cfloat operator*(cfloat a, cfloat b) {
    cfloat r; r.x = a.x * b.x - a.y * b.y; r.y = a.x * b.y + a.y * b.x; return r;
}
__device__ __forceinline__ cdouble operator+(cdouble a, cdouble b) { cdouble r; r.x = a.x + b.x; r.y = a.y + b.y; return r; }
__device__ __forceinline__ cdouble operator*(cdouble a, cdouble b) {
    cdouble r; r.x = a.x * b.x - a.y * b.y; r.y = a.x * b.y + a.y * b.x; return r;
}

template <typename T> struct num {                 // float, double, cfloat, cdouble
    typedef T acc;
    static __device__ __forceinline__ acc load(T v) { return v; }
    static __device__ __forceinline__ T store(acc v) { return v; }
    static __device__ __forceinline__ T zero() { T z; z = T(); return z; }
};
template <> struct num<float> {
    typedef float acc;
    static __device__ __forceinline__ float load(float v) { return v; }
    static __device__ __forceinline__ float store(float v) { return v; }
    static __device__ __forceinline__ float zero() { return 0.0f; }
};
template <> struct num<double> {
    typedef double acc;
    static __device__ __forceinline__ double load(double v) { return v; }
    static __device__ __forceinline__ double store(double v) { return v; }
    static __device__ __forceinline__ double zero() { return 0.0; }
};
template <> struct num<cfloat> {
    typedef cfloat acc;
    static __device__ __forceinline__ cfloat load(cfloat v) { return v; }
    static __device__ __forceinline__ cfloat store(cfloat v) { return v; }
    static __device__ __forceinline__ cfloat zero() { cfloat z; z.x = 0.0f; z.y = 0.0f; return z; }
};
template <> struct num<cdouble> {
    typedef cdouble acc;
    static __device__ __forceinline__ cdouble load(cdouble v) { return v; }
    static __device__ __forceinline__ cdouble store(cdouble v) { return v; }
    static __device__ __forceinline__ cdouble zero() { cdouble z; z.x = 0.0; z.y = 0.0; return z; }
};
template <> struct num<__half> {
    typedef float acc;
    static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
    static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
    static __device__ __forceinline__ __half zero() { return __float2half_rn(0.0f); }
};
template <> struct num<int> {
    typedef unsigned int acc;
    static __device__ __forceinline__ unsigned int load(int v) { return (unsigned int)v; }
    static __device__ __forceinline__ int store(unsigned int v) { return (int)v; }
    static __device__ __forceinline__ int zero() { return 0; }
};
template <> struct num<long long> {
    typedef unsigned long long acc;
    static __device__ __forceinline__ unsigned long long load(long long v) { return (unsigned long long)v; }
    static __device__ __forceinline__ long long store(unsigned long long v) { return (long long)v; }
    static __device__ __forceinline__ long long zero() { return 0; }
};
