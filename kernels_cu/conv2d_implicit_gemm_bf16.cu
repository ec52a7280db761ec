// conv2d_implicit_gemm_bf16.cu -- conv2d_implicit_gemm.cu for T = __nv_bfloat16.
//
// A module of its own: CuPy bundles only the fp16 headers for run-time compiles, so
// cuda_bf16.h may be missing (or mismatched) where the float16 module must still build.
// Variant 1 of conv2d_implicit_gemm.cu with the bf16 MMA (mma.sync m16n8k16 .bf16,
// same fragment layouts as .f16) and bf16 <-> float conversions in the epilogue.
#include <cuda_bf16.h>
#include "conv2d_implicit_gemm.cu"

template <> struct num<__nv_bfloat16> {
    typedef float acc;
    static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
    static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
    static __device__ __forceinline__ __nv_bfloat16 zero() { return __float2bfloat16_rn(0.0f); }
};

template <> struct TcMma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float c[4], const unsigned a[4], const unsigned b[2]) {
        tc::mma_m16n8k16_bf16(c, a, b);
    }
};
