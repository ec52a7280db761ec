// sim_hazards.cu -- kernels with the defects a GPU punishes and the simulator must
// report (tests/test_sim_checks.py): cp.async groups waited for too early or never
// committed, misaligned or wrong-space cp.async / ldmatrix addresses, shared-memory
// races between warps and lanes, reads of shared memory nobody wrote, block sizes
// above __launch_bounds__, too much shared memory; and the correct versions of each.
#include <cuda_fp16.h>
#include "mma.cuh"

// ---------------------------------------------------------------- cp.async
// A 2-stage pipeline over `tiles` tiles of 32 x 4 floats (16 bytes per thread):
// y[t][i] = x[t][i] read back from shared memory by the neighbouring thread.
// WAIT: the wait_group argument (0 correct: with 2 stages and one group per
// tile, the tile just loaded is the only one that may be pending... none here);
// COMMIT 0: the copies are never committed; SYNC 0: no barrier between the wait
// and the read of another thread's copy.
template <int WAIT, int COMMIT, int SYNC>
__global__ void __launch_bounds__(32)
cp_pipeline(const float* __restrict__ x, float* __restrict__ y, int tiles) {
    __shared__ __align__(16) float buf[2][32 * 4];
    const int t = threadIdx.x;
    tc::cp_async_16(&buf[0][t * 4], x + t * 4, true);
    if (COMMIT) tc::cp_async_commit();
    for (int k = 0; k < tiles; ++k) {
        if (k + 1 < tiles) tc::cp_async_16(&buf[(k + 1) & 1][t * 4], x + (k + 1) * 128 + t * 4, true);
        if (COMMIT) tc::cp_async_commit();
        tc::cp_async_wait<WAIT + 1>();               // tile k landed, tile k+1 may still fly
        if (SYNC) __syncthreads();
        const int u = (t + 1) & 31;
        for (int e = 0; e < 4; ++e) y[k * 128 + t * 4 + e] = buf[k & 1][u * 4 + e];
        __syncthreads();
    }
}

// MODE 0: correct; 1: destination 8 bytes off; 2: source 4 bytes off; 3: destination
// in global memory; 4: source in shared memory; 5: zero fill (src not read).
template <int MODE>
__global__ void cp_async_addresses(const float* __restrict__ x, float* __restrict__ y) {
    __shared__ __align__(16) float s[2][128];
    const int t = threadIdx.x;
    if (MODE == 4) { for (int e = 0; e < 4; ++e) s[1][t * 4 + e] = 1.0f; __syncthreads(); }
    void* dst = MODE == 1 ? (void*)((char*)&s[0][t * 4] + 8) : MODE == 3 ? (void*)(y + t * 4) : (void*)&s[0][t * 4];
    const void* src = MODE == 2 ? (const void*)(x + t * 4 + 1) : MODE == 4 ? (const void*)&s[1][t * 4]
                                                                          : (const void*)(x + t * 4);
    tc::cp_async_16(dst, src, MODE != 5);
    tc::cp_async_commit();
    tc::cp_async_wait<0>();
    __syncthreads();
    for (int e = 0; e < 4; ++e) y[t * 4 + e] = s[0][t * 4 + e];
}

// ldmatrix.x4 of a 32 x 8 halves tile; OFFSET bytes added to every row address.
template <int OFFSET>
__global__ void ldmatrix_rows(const unsigned short* __restrict__ x, unsigned* __restrict__ y) {
    __shared__ __align__(16) unsigned short s[32 * 8 + 8];
    const int l = threadIdx.x;
    for (int e = 0; e < 8; ++e) s[l * 8 + e] = x[l * 8 + e];
    __syncwarp();
    unsigned r[4];
    tc::ldmatrix_x4(r, (const char*)&s[l * 8] + OFFSET);
    for (int i = 0; i < 4; ++i) y[l * 4 + i] = r[i];
}

// ---------------------------------------------------------------- races
// MODE 0: correct (barrier); 1: warp 1 reads what warp 0 wrote, no barrier (RAW);
// 2: lane 1 reads what lane 0 wrote, same warp, no __syncwarp (RAW);
// 3: the same with __syncwarp (correct); 4: two warps write one word (WAW);
// 5: after a barrier, warp 0 overwrites what warp 1 reads in the same epoch;
// 6: every thread atomicAdds one shared counter (no race);
// 7: a thread reads a static __shared__ word no thread wrote (uninitialised).
template <int MODE>
__global__ void shared_races(float* __restrict__ y) {
    __shared__ float s[64];
    __shared__ int counter;
    const int t = threadIdx.x;
    if (MODE == 6) {
        if (t == 0) counter = 0;
        __syncthreads();
        atomicAdd(&counter, 1);
        __syncthreads();
        y[t] = (float)counter;
        return;
    }
    if (MODE == 7) { y[t] = s[t]; return; }
    s[t] = (float)t;
    if (MODE == 0 || MODE == 5) __syncthreads();
    if (MODE == 3) __syncwarp();
    float v = 0.0f;
    if (MODE == 0 || MODE == 1 || MODE == 5) v = s[(t + 32) & 63];
    else if (MODE == 2 || MODE == 3) v = s[t ^ 1];
    else if (MODE == 4) { if (t == 0 || t == 32) s[63] = (float)t; v = 1.0f; }
    if (MODE == 5 && t < 32) s[t] = -1.0f;
    __syncthreads();
    y[t] = v;
}

// Block b writes, from the second block on, only what it then reads -- except READ_PREVIOUS:
// thread 0 of blocks > 0 reads word 1 of the previous block (static shared memory
// does not survive a block on the GPU).
template <int READ_PREVIOUS>
__global__ void static_smem_per_block(float* __restrict__ y) {
    __shared__ float s[32];
    const int t = threadIdx.x;
    if (blockIdx.x == 0 || !READ_PREVIOUS || t != 0) s[t] = (float)(blockIdx.x * 32 + t);
    __syncthreads();
    y[blockIdx.x * 32 + t] = s[t ^ (READ_PREVIOUS ? 1 : 0)];
}

// ---------------------------------------------------------------- resources
__global__ void __launch_bounds__(64) bounded64(float* __restrict__ y) { y[threadIdx.x] = 1.0f; }

// 40 KiB static + the launch's dynamic shared memory.
__global__ void big_static(float* __restrict__ y) {
    __shared__ float s[10 * 1024];
    extern __shared__ float dyn[];
    s[threadIdx.x] = 1.0f;
    dyn[threadIdx.x] = 2.0f;
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x] + dyn[threadIdx.x];
}

// A float4 load from x + OFFSET floats (misaligned for OFFSET % 4 != 0).
template <int OFFSET>
__global__ void vector_load(const float* __restrict__ x, float* __restrict__ y) {
    const float4 v = reinterpret_cast<const float4*>(x + OFFSET)[threadIdx.x];
    y[threadIdx.x] = v.x + v.y + v.z + v.w;
}

// ---------------------------------------------------------------- schedules
// Each thread takes a ticket (its position in the run order) at three points
// separated by a warp shuffle and a barrier: the order differs per schedule.
__global__ void run_order(int* __restrict__ order) {
    __shared__ int next;
    if (threadIdx.x == 0) next = 0;
    __syncthreads();
    const int t = threadIdx.x;
    order[t] = atomicAdd(&next, 1);
    const int v = __shfl_sync(0xffffffffu, t, (t + 1) & 31);
    order[blockDim.x + t] = atomicAdd(&next, 1) + 0 * v;
    __syncthreads();
    order[2 * blockDim.x + t] = atomicAdd(&next, 1);
}

// ---------------------------------------------------------------- tensor-core numerics
// One m16n8k8 TF32 MMA of A (16x8) and B (8x8), fragments per mma.cuh; ROUND: the
// inputs go through f32_to_tf32 (cvt.rna) first, else the raw fp32 bits.
template <bool ROUND>
__global__ void mma_tf32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ d) {
    const int l = threadIdx.x, g = l >> 2, t = l & 3;
    auto in = [](float v) { return ROUND ? tc::f32_to_tf32(v) : __float_as_uint(v); };
    const unsigned af[4] = {in(a[g * 8 + t]), in(a[(g + 8) * 8 + t]), in(a[g * 8 + t + 4]), in(a[(g + 8) * 8 + t + 4])};
    const unsigned bf[2] = {in(b[t * 8 + g]), in(b[(t + 4) * 8 + g])};
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    tc::mma_m16n8k8_tf32(c, af, bf);
    d[g * 8 + 2 * t] = c[0]; d[g * 8 + 2 * t + 1] = c[1];
    d[(g + 8) * 8 + 2 * t] = c[2]; d[(g + 8) * 8 + 2 * t + 1] = c[3];
}

// One m16n8k16 fp16 MMA, A 16x16 and B 16x8 as fp16 bits, D = A*B in fp32.
__global__ void mma_f16(const unsigned short* __restrict__ a, const unsigned short* __restrict__ b,
                        float* __restrict__ d) {
    const int l = threadIdx.x, g = l >> 2, t = l & 3;
    auto pa = [&](int r, int c) { return (unsigned)a[r * 16 + c] | (unsigned)a[r * 16 + c + 1] << 16; };
    auto pb = [&](int r, int c) { return (unsigned)b[r * 8 + c] | (unsigned)b[(r + 1) * 8 + c] << 16; };
    const unsigned af[4] = {pa(g, 2 * t), pa(g + 8, 2 * t), pa(g, 2 * t + 8), pa(g + 8, 2 * t + 8)};
    const unsigned bf[2] = {pb(2 * t, g), pb(2 * t + 8, g)};
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    tc::mma_m16n8k16_f16(c, af, bf);
    d[g * 8 + 2 * t] = c[0]; d[g * 8 + 2 * t + 1] = c[1];
    d[(g + 8) * 8 + 2 * t] = c[2]; d[(g + 8) * 8 + 2 * t + 1] = c[3];
}
