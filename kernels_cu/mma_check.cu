// mma_check.cu -- one-warp kernels that run each wrapper of mma.cuh on data laid out by
// the caller, so tests/test_kernels_tc.py can check the fragment layouts against NumPy:
// in the simulator (the CPU versions) and, under `-m gpu`, on the real instructions.
// Not a conv variant; its instantiations are compile-checked with the kernels.
//
//   mma_check<KIND>:      KIND 0 f16 m16n8k16, 1 bf16 m16n8k16, 2 tf32 m16n8k8.
//                         a [32][4], b [32][2] 32-bit registers per lane, c [32][4] floats in;
//                         d [32][4] out (D = A*B + C, registers as the lane holds them).
//   ldmatrix_check<TRANS>: src: 4 matrices x 8 rows x 8 16-bit elements; row j of matrix i
//                         is stored at shared row perm[8i+j] (so a wrong address lane
//                         shows); out [32][4] registers.
//   cp_async_check<N>:    32 threads each copy 16 bytes (pred[lane] = 0: zero fill) into
//                         shared memory in N commit groups, wait, and write it back.
//   tf32_round_check:     out[i] = cvt.rna.tf32.f32(in[i]) for 32 values.
#include "mma.cuh"

template <int KIND>
__global__ void __launch_bounds__(32)
mma_check(const unsigned int* __restrict__ a, const unsigned int* __restrict__ b, const float* __restrict__ c,
          float* __restrict__ d) {
    const int l = threadIdx.x;
    unsigned ra[4], rb[2];
    float rc[4];
    for (int i = 0; i < 4; ++i) { ra[i] = a[l * 4 + i]; rc[i] = c[l * 4 + i]; }
    for (int i = 0; i < 2; ++i) rb[i] = b[l * 2 + i];
    if (KIND == 0) tc::mma_m16n8k16_f16(rc, ra, rb);
    else if (KIND == 1) tc::mma_m16n8k16_bf16(rc, ra, rb);
    else tc::mma_m16n8k8_tf32(rc, ra, rb);
    for (int i = 0; i < 4; ++i) d[l * 4 + i] = rc[i];
}

template <int TRANS>
__global__ void __launch_bounds__(32)
ldmatrix_check(const unsigned short* __restrict__ src, const int* __restrict__ perm, unsigned int* __restrict__ out) {
    __align__(16) __shared__ unsigned short s[32 * 8];
    const int l = threadIdx.x;
    for (int e = 0; e < 8; ++e) s[perm[l] * 8 + e] = src[l * 8 + e];   // lane l stages row l
    __syncthreads();
    unsigned r[4];
    if (TRANS) tc::ldmatrix_x4_trans(r, s + perm[l] * 8);               // lane 8i+j: row j of matrix i
    else tc::ldmatrix_x4(r, s + perm[l] * 8);
    for (int i = 0; i < 4; ++i) out[l * 4 + i] = r[i];
}

template <int N>
__global__ void __launch_bounds__(32)
cp_async_check(const unsigned int* __restrict__ src, const int* __restrict__ pred, unsigned int* __restrict__ out) {
    __align__(16) __shared__ unsigned int s[32 * 4];
    const int l = threadIdx.x;
    for (int i = 0; i < 4; ++i) s[l * 4 + i] = 0xdeadbeefu;
    __syncthreads();
    // lane l copies chunk (l * 5) % 32 into slot l, in group l % N
    for (int grp = 0; grp < N; ++grp) {
        if (l % N == grp) tc::cp_async_16(s + l * 4, src + ((l * 5) % 32) * 4, pred[l] != 0);
        tc::cp_async_commit();
    }
    tc::cp_async_wait<0>();
    __syncthreads();
    for (int i = 0; i < 4; ++i) out[l * 4 + i] = s[l * 4 + i];
}

__global__ void __launch_bounds__(32)
tf32_round_check(const float* __restrict__ in, unsigned int* __restrict__ out) {
    out[threadIdx.x] = tc::f32_to_tf32(in[threadIdx.x]);
}
