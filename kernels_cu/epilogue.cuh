// epilogue.cuh -- bias + activation, fused into every conv kernel's store.
//
// ACT codes are gpuconv/activations.py ACTIVATION_CODES: 0 none, 1 relu,
// 2 relu6, 3 silu, 4 gelu (erf form, torch's approximate='none').  The math is
// done in the accumulator type (float for float16/float32, double for double)
// with the exact library functions (no --use_fast_math): erff is ~2 ulp,
// expf ~2 ulp, well inside the float32 test tolerance.  NaN propagates like
// torch and NumPy (relu(NaN) = NaN), hence `v < 0 ? 0 : v` rather than fmaxf.
// Complex outputs only ever use ACT 0 (activations are refused for complex).
#pragma once
#include "common.cuh"

__device__ __forceinline__ float act_exp(float v) { return expf(v); }
__device__ __forceinline__ double act_exp(double v) { return exp(v); }
__device__ __forceinline__ float act_erf(float v) { return erff(v); }
__device__ __forceinline__ double act_erf(double v) { return erf(v); }

template <int ACT> struct Activation {                // 0: identity (any type)
    template <typename A> static __device__ __forceinline__ A apply(A v) { return v; }
};
template <> struct Activation<1> {                    // relu
    template <typename A> static __device__ __forceinline__ A apply(A v) { return v < A(0) ? A(0) : v; }
};
template <> struct Activation<2> {                    // relu6 = min(max(v, 0), 6)
    template <typename A> static __device__ __forceinline__ A apply(A v) {
        return v < A(0) ? A(0) : (v > A(6) ? A(6) : v);
    }
};
template <> struct Activation<3> {                    // silu = v * sigmoid(v); exp(-v) -> inf gives -0
    template <typename A> static __device__ __forceinline__ A apply(A v) { return v / (A(1) + act_exp(-v)); }
};
template <> struct Activation<4> {                    // gelu = v/2 * (1 + erf(v / sqrt 2))
    template <typename A> static __device__ __forceinline__ A apply(A v) {
        return A(0.5) * v * (A(1) + act_erf(v * A(0.70710678118654752440)));
    }
};

// The value stored for output channel k: activation(acc + bias[k]).
template <typename T, int ACT>
__device__ __forceinline__ T epilogue(typename num<T>::acc acc, const T* __restrict__ bias, int k, int has_bias) {
    if (has_bias) acc = acc + num<T>::load(bias[k]);
    return num<T>::store(Activation<ACT>::apply(acc));
}
