// mma.cuh -- the GPU-only instructions (tensor-core MMA, ldmatrix, cp.async), each behind
// a small device function, each with a CPU version for the simulator (GPUCONV_SIM).
//
// The CPU versions follow the PTX ISA's per-lane fragment layouts exactly, so a kernel
// that is right in the simulator puts every element in the register the GPU expects.
// They exchange registers between the lanes of a warp only through __shfl_sync, so the
// simulator's scheduler synchronises the warp at each call exactly as the .sync
// instructions do (every lane of the warp must arrive; a divergent call deadlocks there
// as it would hang or be undefined on the GPU).  tests/test_kernels_tc.py checks each
// wrapper against NumPy on fragments laid out per the formulas below; the same test
// under `-m gpu` checks the real instructions against the same formulas.
//
// Notation (PTX ISA 9.7.14.5, "Matrix Fragments for mma.m16n8k16 with floating point
// type", and 9.7.14.5.7 "Matrix Fragments for mma.m16n8k8"):
//   g = groupID = laneid >> 2,  t = threadID_in_group = laneid % 4.
//   A 32-bit register holding two 16-bit values holds element i in its low half and
//   element i+1 in its high half ("low to high").
//
// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32  D = A*B + C
//   A (16x16, row):  a[0] = A[g  ][2t, 2t+1]     a[1] = A[g+8][2t, 2t+1]
//                    a[2] = A[g  ][2t+8, 2t+9]   a[3] = A[g+8][2t+8, 2t+9]
//                    (PTX: row = g for a0,a1,a4,a5, else g+8; col = 2t + (i&1), +8 for i>=4)
//   B (16x8, col):   b[0] = B[2t, 2t+1][g]       b[1] = B[2t+8, 2t+9][g]
//                    (PTX: row = 2t + (i&1) for b0,b1, +8 for b2,b3; col = g)
//   C, D (16x8 f32): c[0] = C[g][2t]  c[1] = C[g][2t+1]  c[2] = C[g+8][2t]  c[3] = C[g+8][2t+1]
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
//   A (16x8):  a[0] = A[g][t]  a[1] = A[g+8][t]  a[2] = A[g][t+4]  a[3] = A[g+8][t+4]
//   B (8x8):   b[0] = B[t][g]  b[1] = B[t+4][g]
//   C, D: as m16n8k16.
//   Cross-check, CUTLASS cute/atom/mma_traits_sm80.hpp MMA_Traits<SM80_16x8x8_F32TF32TF32F32_TN>:
//   ALayout ((4,8),(2,2)):((16,1),(8,64)) maps (lane = t + 4g, value v0 + 2v1) to M16 x K8
//   index 16t + g + 8v0 + 64v1, i.e. row g + 8v0, column t + 4v1 -- a[v] above; BLayout
//   ((4,8),2):((8,1),32) maps to N8 x K8 index 8t + g + 32v: column g, row t + 4v -- b[v].
//   A 32-bit operand's 8x4 block is what ldmatrix (b16) hands out: lane l gets row l/4,
//   32-bit column l%4 (CUTLASS loads tf32 fragments with SM75_U32x4_LDSM_N the same way).
//
// ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16 (PTX ISA 9.7.14.5.15, "Warp-level
// matrix load instruction: ldmatrix"): four 8x8 matrices of 16-bit elements, each row
// 16 contiguous bytes (16-byte aligned) in shared memory.
//   Addresses: lane 8*i + j supplies the address of row j of matrix i (i, j = 0..7).
//   Without .trans: lane l receives in r[i] row l/4, columns 2*(l%4) and 2*(l%4)+1 of
//     matrix i (low, high half) -- exactly an A or B fragment register above when the
//     matrix is stored row-major along k.
//   With .trans: r[i] holds matrix i's elements [2*(l%4)][l/4] and [2*(l%4)+1][l/4].
//
// cp.async.cg.shared.global [dst], [src], 16, src_size (PTX ISA 9.7.9.25, "cp.async"):
//   16 bytes global -> shared, bypassing L1; src_size = 0 zero-fills the destination
//   without reading src (the predicated-off load of a tile edge or of the zero padding).
//   commit_group closes the group of copies issued so far; wait_group<N> waits until at
//   most N groups are pending.  The CPU version (gpuconv/sim runtime) queues each copy
//   per thread: the destination holds poison (0xFF bytes: NaN) from issue until the
//   issuing thread's wait_group completes its group (uncommitted copies are never
//   waited for; pending ones land when the thread exits), and it checks what the
//   hardware requires: 16-byte aligned source and destination, destination in shared
//   memory, source in global memory (an array argument) when src_size is 16.
//   ldmatrix's CPU version checks each lane's row address the same way (16-byte
//   aligned, 16 bytes of shared memory, no cp.async pending on it).
//
// Requires sm_80 (cp.async, m16n8k16 with f32 accumulators, bf16, tf32); ldmatrix sm_75.
// On an older device the GPU versions trap, and the launcher refuses first.
// No cuda_bf16.h here: the bf16 MMA takes its operands as raw 32-bit registers, and CuPy
// bundles only the fp16 headers for run-time compiles (cupy/cupy#8146: a CTK cuda_bf16.h
// beside CuPy's cuda_fp16.h may not even compile), so bf16 types stay in the files that
// need them (conv2d_implicit_gemm_bf16.cu).
#pragma once
#include <cuda_fp16.h>

namespace tc {

#ifdef GPUCONV_SIM
// ---------------------------------------------------------------- CPU versions (simulator)
namespace sim {
inline int lane() { return (int)::gpuconv_sim::g_cur->lane; }
inline float lo_f16(unsigned r) { return __half2float(__ushort_as_half((unsigned short)(r & 0xffffu))); }
inline float hi_f16(unsigned r) { return __half2float(__ushort_as_half((unsigned short)(r >> 16))); }
inline float lo_bf16(unsigned r) { return __bfloat162float(__ushort_as_bfloat16((unsigned short)(r & 0xffffu))); }
inline float hi_bf16(unsigned r) { return __bfloat162float(__ushort_as_bfloat16((unsigned short)(r >> 16))); }
inline unsigned long long pack2(unsigned lo, unsigned hi) { return (unsigned long long)hi << 32 | lo; }

// The 16x16 A and 16x8 B of one m16n8k16, from all lanes' registers, for the lane's own
// outputs: rows g, g+8 of A (held by lanes 4g..4g+3) and columns 2t, 2t+1 of B (held by
// lanes 4*(2t)+j and 4*(2t+1)+j).  16 shuffles of 64 bits, every lane participating.
template <bool BF16>
inline void mma_k16(float c[4], const unsigned a[4], const unsigned b[2]) {
    const int l = lane(), g = l >> 2, t = l & 3;
    const unsigned long long a01 = pack2(a[0], a[1]), a23 = pack2(a[2], a[3]);
    const unsigned long long b01 = pack2(b[0], b[1]);
    float arow[2][16], bcol[2][16];          // [row g / g+8][k], [col 2t / 2t+1][k]
    for (int j = 0; j < 4; ++j) {            // source lane 4g+j holds k = 2j, 2j+1, 2j+8, 2j+9
        const unsigned long long x01 = __shfl_sync(0xffffffffu, a01, 4 * g + j);
        const unsigned long long x23 = __shfl_sync(0xffffffffu, a23, 4 * g + j);
        const unsigned r0 = (unsigned)x01, r1 = (unsigned)(x01 >> 32);
        const unsigned r2 = (unsigned)x23, r3 = (unsigned)(x23 >> 32);
        arow[0][2 * j] = BF16 ? lo_bf16(r0) : lo_f16(r0);  arow[0][2 * j + 1] = BF16 ? hi_bf16(r0) : hi_f16(r0);
        arow[1][2 * j] = BF16 ? lo_bf16(r1) : lo_f16(r1);  arow[1][2 * j + 1] = BF16 ? hi_bf16(r1) : hi_f16(r1);
        arow[0][2 * j + 8] = BF16 ? lo_bf16(r2) : lo_f16(r2);  arow[0][2 * j + 9] = BF16 ? hi_bf16(r2) : hi_f16(r2);
        arow[1][2 * j + 8] = BF16 ? lo_bf16(r3) : lo_f16(r3);  arow[1][2 * j + 9] = BF16 ? hi_bf16(r3) : hi_f16(r3);
    }
    for (int cc = 0; cc < 2; ++cc)
        for (int j = 0; j < 4; ++j) {        // source lane 4*(2t+cc)+j holds column 2t+cc, k = 2j.., 2j+8..
            const unsigned long long x = __shfl_sync(0xffffffffu, b01, 4 * (2 * t + cc) + j);
            const unsigned r0 = (unsigned)x, r1 = (unsigned)(x >> 32);
            bcol[cc][2 * j] = BF16 ? lo_bf16(r0) : lo_f16(r0);  bcol[cc][2 * j + 1] = BF16 ? hi_bf16(r0) : hi_f16(r0);
            bcol[cc][2 * j + 8] = BF16 ? lo_bf16(r1) : lo_f16(r1);  bcol[cc][2 * j + 9] = BF16 ? hi_bf16(r1) : hi_f16(r1);
        }
    // products of 11-bit (8-bit for bf16) significands are exact in float; sum in k order
    for (int i = 0; i < 4; ++i) {
        float acc = c[i];
        for (int k = 0; k < 16; ++k) acc = acc + arow[i >> 1][k] * bcol[i & 1][k];
        c[i] = acc;
    }
}
inline float tf32_value(unsigned r) {        // the tensor core reads the top 19 bits only
    return __uint_as_float(r & 0xffffe000u);
}
}  // namespace sim

__device__ __forceinline__ void mma_m16n8k16_f16(float c[4], const unsigned a[4], const unsigned b[2]) {
    sim::mma_k16<false>(c, a, b);
}
__device__ __forceinline__ void mma_m16n8k16_bf16(float c[4], const unsigned a[4], const unsigned b[2]) {
    sim::mma_k16<true>(c, a, b);
}
__device__ __forceinline__ void mma_m16n8k8_tf32(float c[4], const unsigned a[4], const unsigned b[2]) {
    const int l = sim::lane(), g = l >> 2, t = l & 3;
    const unsigned long long a01 = sim::pack2(a[0], a[1]), a23 = sim::pack2(a[2], a[3]);
    const unsigned long long b01 = sim::pack2(b[0], b[1]);
    float arow[2][8], bcol[2][8];
    for (int j = 0; j < 4; ++j) {            // lane 4g+j: A[g][j], A[g+8][j], A[g][j+4], A[g+8][j+4]
        const unsigned long long x01 = __shfl_sync(0xffffffffu, a01, 4 * g + j);
        const unsigned long long x23 = __shfl_sync(0xffffffffu, a23, 4 * g + j);
        arow[0][j] = sim::tf32_value((unsigned)x01);      arow[1][j] = sim::tf32_value((unsigned)(x01 >> 32));
        arow[0][j + 4] = sim::tf32_value((unsigned)x23);  arow[1][j + 4] = sim::tf32_value((unsigned)(x23 >> 32));
    }
    for (int cc = 0; cc < 2; ++cc)
        for (int j = 0; j < 4; ++j) {        // lane 4*(2t+cc)+j: B[j][2t+cc], B[j+4][2t+cc]
            const unsigned long long x = __shfl_sync(0xffffffffu, b01, 4 * (2 * t + cc) + j);
            bcol[cc][j] = sim::tf32_value((unsigned)x);
            bcol[cc][j + 4] = sim::tf32_value((unsigned)(x >> 32));
        }
    for (int i = 0; i < 4; ++i) {            // 11-bit significands: products exact in float
        float acc = c[i];
        for (int k = 0; k < 8; ++k) acc = acc + arow[i >> 1][k] * bcol[i & 1][k];
        c[i] = acc;
    }
}
// cvt.rna.tf32.f32: round to nearest, ties away from zero, to a 10-bit mantissa
__device__ __forceinline__ unsigned f32_to_tf32(float x) {
    const unsigned u = __float_as_uint(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return u;      // inf / NaN unchanged
    return (u + 0x1000u) & 0xffffe000u;
}

template <bool TRANS>
__device__ __forceinline__ void ldmatrix_x4_impl(unsigned r[4], const void* row_addr, const char* file, int line) {
    ::gpuconv_sim::check_ldmatrix_row(file, line, row_addr, TRANS ? "ldmatrix.x4.trans" : "ldmatrix.x4");
    const int l = sim::lane();
    for (int i = 0; i < 4; ++i) {
        if (!TRANS) {                        // row l/4 of matrix i, supplied by lane 8i + l/4
            const unsigned short* p = (const unsigned short*)__shfl_sync(0xffffffffu, row_addr, 8 * i + (l >> 2));
            r[i] = (unsigned)p[2 * (l & 3)] | (unsigned)p[2 * (l & 3) + 1] << 16;
        } else {                             // column l/4 of rows 2(l%4), 2(l%4)+1 of matrix i
            const unsigned short* p0 = (const unsigned short*)__shfl_sync(0xffffffffu, row_addr, 8 * i + 2 * (l & 3));
            const unsigned short* p1 = (const unsigned short*)__shfl_sync(0xffffffffu, row_addr, 8 * i + 2 * (l & 3) + 1);
            r[i] = (unsigned)p0[l >> 2] | (unsigned)p1[l >> 2] << 16;
        }
    }
}
// file, line: the caller's (defaults evaluated at the call site), for the simulator's reports.
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* row_addr, const char* file = __builtin_FILE(),
                                            int line = __builtin_LINE()) {
    ldmatrix_x4_impl<false>(r, row_addr, file, line);
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const void* row_addr,
                                                  const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ldmatrix_x4_impl<true>(r, row_addr, file, line);
}

__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, bool pred,
                                            const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::gpuconv_sim::cp_async_16(file, line, smem_dst, gmem_src, pred);
}
__device__ __forceinline__ void cp_async_commit(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::gpuconv_sim::cp_async_commit(file, line);
}
template <int N>
__device__ __forceinline__ void cp_async_wait(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    static_assert(N >= 0, "cp.async.wait_group takes a non-negative constant");
    ::gpuconv_sim::cp_async_wait(file, line, N);
}

#else
// ---------------------------------------------------------------- GPU versions
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GPUCONV_TC_OK 1
#endif

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void mma_m16n8k16_f16(float c[4], const unsigned a[4], const unsigned b[2]) {
#ifdef GPUCONV_TC_OK
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}
__device__ __forceinline__ void mma_m16n8k16_bf16(float c[4], const unsigned a[4], const unsigned b[2]) {
#ifdef GPUCONV_TC_OK
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}
__device__ __forceinline__ void mma_m16n8k8_tf32(float c[4], const unsigned a[4], const unsigned b[2]) {
#ifdef GPUCONV_TC_OK
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}
__device__ __forceinline__ unsigned f32_to_tf32(float x) {
#ifdef GPUCONV_TC_OK
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
#else
    __trap();
    return 0;
#endif
}

__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* row_addr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(row_addr)));
#else
    __trap();
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const void* row_addr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(row_addr)));
#else
    __trap();
#endif
}

__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, bool pred) {
#ifdef GPUCONV_TC_OK
    const int src_size = pred ? 16 : 0;      // 0: zero-fill, src not read
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(smem_addr(smem_dst)), "l"(gmem_src), "r"(src_size) : "memory");
#else
    __trap();
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef GPUCONV_TC_OK
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
#ifdef GPUCONV_TC_OK
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
#endif
}
#endif  // GPUCONV_SIM

// 3xTF32 operand split (both branches): x = big + small with big = cvt.rna.tf32(x) and small =
// cvt.rna.tf32(x - big).  x - big is exact in float (big holds x's top 11 significant bits), so
// big + small carries 22 of x's 24 bits and big*big + big*small + small*big misses only the
// small*small term (~2^-22 relative) and the small part's rounding (~2^-22): FP32-level
// products.  CUTLASS's 3xTF32 (include/cutlass/gemm/warp/mma_tensor_op_fast_f32.h, example
// 27_ampere_3xtf32_fast_accurate_tensorop_gemm) splits the same way and drops the same term.
// Inf/NaN: big = x, small = NaN (inf - inf): such inputs give NaN.
__device__ __forceinline__ void split_tf32(unsigned x, unsigned& big, unsigned& small) {
    const float f = __uint_as_float(x);
    big = f32_to_tf32(f);
    small = f32_to_tf32(f - __uint_as_float(big));
}

}  // namespace tc
