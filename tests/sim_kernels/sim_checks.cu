// sim_checks.cu -- small kernels that exercise the simulator (tests/test_sim.py).
//
// Several are deliberately wrong (a missing __syncthreads, a barrier not every
// thread reaches, a write through a null pointer, a read past an array's end):
// the simulator must report each one.  All of them live in this one module so
// a test run from an empty cache compiles it once (plus once with ASan).
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// ---------------------------------------------------------------- convolutions
// y[n,k,p,q] = sum_{c,r,s} x[n,c,p+r,q+s] * w[k,c,r,s]; one thread per output.
template <typename T>
__global__ void conv_naive(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                           int N, int C, int H, int W, int K, int R, int S) {
    const int P = H - R + 1, Q = W - S + 1;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)N * K * P * Q) return;
    const int q = (int)(i % Q), p = (int)(i / Q % P), k = (int)(i / ((long long)Q * P) % K);
    const int n = (int)(i / ((long long)Q * P * K));
    T acc = T(0);
    for (int c = 0; c < C; ++c)
        for (int r = 0; r < R; ++r)
#pragma unroll 4
            for (int s = 0; s < S; ++s)
                acc += x[((n * C + c) * H + p + r) * W + q + s] * w[((k * C + c) * R + r) * S + s];
    y[i] = acc;
}

// TILE x TILE outputs per block: the input tile (halo included) in dynamic
// shared memory, the filter slice of one channel in static shared memory.
// SYNC bit 0: barrier between loading and computing; bit 1: barrier between
// computing and loading the next channel.  Only SYNC == 3 is correct.
template <int TILE, int R, int SYNC>
__global__ void __launch_bounds__(TILE * TILE)
conv_tiled(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
           int C, int H, int W, int K) {
    constexpr int IT = TILE + R - 1;
    extern __shared__ float s_in[];
    __shared__ float s_w[R * R];
    const int n = blockIdx.z / K, k = blockIdx.z % K;
    const int P = H - R + 1, Q = W - R + 1;
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * TILE + tx;
    const int p = blockIdx.y * TILE + ty, q = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int c = 0; c < C; ++c) {
        for (int i = tid; i < IT * IT; i += TILE * TILE) {
            const int h = blockIdx.y * TILE + i / IT, ww = blockIdx.x * TILE + i % IT;
            s_in[i] = (h < H && ww < W) ? x[((n * C + c) * H + h) * W + ww] : 0.0f;
        }
        if (tid < R * R) s_w[tid] = w[(k * C + c) * R * R + tid];
        if (SYNC & 1) __syncthreads();
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int s = 0; s < R; ++s) acc = fmaf(s_in[(ty + r) * IT + tx + s], s_w[r * R + s], acc);
        if (SYNC & 2) __syncthreads();
    }
    if (p < P && q < Q) y[((n * K + k) * P + p) * Q + q] = acc;
}

// ---------------------------------------------------------------- indices and shared memory
__global__ void indices(unsigned* out) {
    const unsigned b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const unsigned t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    unsigned* o = out + 12 * (b * blockDim.x * blockDim.y * blockDim.z + t);
    o[0] = blockIdx.x; o[1] = blockIdx.y; o[2] = blockIdx.z;
    o[3] = threadIdx.x; o[4] = threadIdx.y; o[5] = threadIdx.z;
    o[6] = blockDim.x; o[7] = blockDim.y; o[8] = blockDim.z;
    o[9] = gridDim.x; o[10] = gridDim.y; o[11] = gridDim.z;
}

// Reverses each block's slice through dynamic shared memory.
template <typename T>
__global__ void reverse_block(const T* __restrict__ x, T* __restrict__ y, int n) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* s = reinterpret_cast<T*>(smem_raw);
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = i < n ? x[i] : T(0);
    __syncthreads();
    const int j = blockIdx.x * blockDim.x + (blockDim.x - 1 - threadIdx.x);
    if (j < n) y[j] = s[threadIdx.x];
}

// 16x16 tile transpose through a 2-D dynamic shared array (row pitch 17).
__global__ void transpose16(const float* __restrict__ x, float* __restrict__ y, int n) {
    extern __shared__ float tile[][17];
    const int bx = blockIdx.x * 16, by = blockIdx.y * 16;
    tile[threadIdx.y][threadIdx.x] = x[(by + threadIdx.y) * n + bx + threadIdx.x];
    __syncthreads();
    y[(bx + threadIdx.y) * n + by + threadIdx.x] = tile[threadIdx.x][threadIdx.y];
}

// Block sum via __syncthreads_count/_and/_or and a shared-memory tree.
__global__ void block_votes(const int* __restrict__ x, int* __restrict__ out) {
    const int v = x[blockIdx.x * blockDim.x + threadIdx.x];
    const int cnt = __syncthreads_count(v > 0);
    const int all = __syncthreads_and(v > 0);
    const int any = __syncthreads_or(v > 0);
    if (threadIdx.x == 0) { out[3 * blockIdx.x] = cnt; out[3 * blockIdx.x + 1] = all; out[3 * blockIdx.x + 2] = any; }
}

// ---------------------------------------------------------------- warps
// Each lane named in masks[warp] runs every warp operation; others write nothing.
__global__ void warp_ops(const int* __restrict__ in, int* __restrict__ out, const unsigned* __restrict__ masks,
                         int width) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned lane = threadIdx.x & 31, mask = masks[threadIdx.x / 32];
    if (!((mask >> lane) & 1)) return;
    const int v = in[t];
    int* o = out + 9 * t;
    o[0] = __shfl_sync(mask, v, (int)((lane * 7 + 3) & 31), width);
    o[1] = __shfl_up_sync(mask, v, 3, width);
    o[2] = __shfl_down_sync(mask, v, 5, width);
    o[3] = __shfl_xor_sync(mask, v, 6, width);
    o[4] = (int)__ballot_sync(mask, v & 1);
    o[5] = __any_sync(mask, v > 90);
    o[6] = __all_sync(mask, v > 5);
    o[7] = (int)__match_any_sync(mask, v % 3);
    __syncwarp(mask);
    o[8] = __reduce_add_sync(mask, (unsigned)v);
}

// Butterfly sums of doubles and floats; lanes 0..15 and 16..31 of each warp
// take separate branches with half-warp masks.
__global__ void warp_reduce(const double* __restrict__ xd, const float* __restrict__ xf, double* __restrict__ yd,
                            float* __restrict__ yf, __half* __restrict__ yh) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    double d = xd[t];
    float f = xf[t];
    for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
    const unsigned lane = threadIdx.x & 31;
    if (lane < 16) {
        for (int o = 8; o > 0; o >>= 1) f += __shfl_down_sync(0x0000ffffu, f, o, 16);
    } else {
        for (int o = 8; o > 0; o >>= 1) f += __shfl_down_sync(0xffff0000u, f, o, 16);
    }
    __half h = __float2half(f);
    h = __shfl_sync(0xffffffffu, h, 16);
    yd[t] = d;
    yf[t] = f;
    yh[t] = h;
}

// ---------------------------------------------------------------- atomics
__global__ void atomics(const int* __restrict__ keys, const float* __restrict__ vals, int n, int* hist, float* fsum,
                        int* imax, unsigned* cas_count, int* exch_slot, int* exch_old, double* dsum) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    atomicAdd(&hist[keys[i]], 1);
    atomicAdd(fsum, vals[i]);
    atomicAdd(dsum, (double)vals[i]);
    atomicMax(imax, keys[i] * 3 - i);
    unsigned old = *cas_count, seen;
    while ((seen = atomicCAS(cas_count, old, old + 1u)) != old) old = seen;
    exch_old[i] = atomicExch(exch_slot, i);
}

// ---------------------------------------------------------------- half / bfloat16
__global__ void f32_to_f16(const float* __restrict__ x, unsigned short* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __half_as_ushort(__float2half_rn(x[i]));
}
__global__ void f64_to_f16(const double* __restrict__ x, __half* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __double2half(x[i]);
}
__global__ void f16_to_f32(const __half* __restrict__ x, float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __half2float(x[i]);
}
__global__ void half_ops(const __half* __restrict__ a, const __half* __restrict__ b, const __half* __restrict__ c,
                         __half* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[5 * i + 0] = __hadd(a[i], b[i]);
    y[5 * i + 1] = __hmul(a[i], b[i]);
    y[5 * i + 2] = __hsub(a[i], b[i]);
    y[5 * i + 3] = __hdiv(a[i], b[i]);
    y[5 * i + 4] = __hfma(a[i], b[i], c[i]);
}
__global__ void f32_to_bf16(const float* __restrict__ x, __nv_bfloat16* __restrict__ y, float* __restrict__ back,
                            int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = __float2bfloat16(x[i]);
    back[i] = __bfloat162float(y[i]);
}

// ---------------------------------------------------------------- scalar parameter types
struct Pair { float a, b; };
__global__ void scalars(double* out, int i, unsigned u, long long ll, float f, double d, __half h, Pair pr, bool flag) {
    out[0] = i; out[1] = u; out[2] = (double)ll; out[3] = f; out[4] = d; out[5] = __half2float(h);
    out[6] = pr.a; out[7] = pr.b; out[8] = flag ? 1.0 : 0.0;
}

// ---------------------------------------------------------------- deliberately broken kernels
// Threads >= 32 leave before the barrier the others wait at.
__global__ void exit_before_barrier(float* y) {
    if (threadIdx.x >= 32) return;
    __syncthreads();
    y[threadIdx.x] = 1.0f;
}

// Odd and even threads wait at two different barriers.
__global__ void divergent_barrier(float* y) {
    if (threadIdx.x & 1) {
        __syncthreads();
        y[threadIdx.x] = 1.0f;
    } else {
        __syncthreads();
        y[threadIdx.x] = 2.0f;
    }
}

// In block 1, lanes 0-15 shuffle with a full-warp mask while lanes 16-31 wait
// at a block barrier: nobody can move.  Block 0 is fine.
__global__ void warp_deadlock(int* y) {
    int v = threadIdx.x;
    if (blockIdx.x == 1 && (threadIdx.x & 31) < 16) v = __shfl_sync(0xffffffffu, v, 0);
    __syncthreads();
    y[threadIdx.x] = v;
}

// A warp mask that leaves out the calling lane.
__global__ void bad_mask(int* y) { y[threadIdx.x] = __shfl_sync(0xfffffffeu, (int)threadIdx.x, 0); }

// Writes through whatever pointer it is given (the test passes None: NULL).
__global__ void write_through(float* p, int i) {
    if (threadIdx.x == 3) p[i] = 1.0f;
}

// Reads one element past the end of x (y[n-1] = x[n]).
__global__ void read_past_end(const float* __restrict__ x, float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i + 1];
}

// Writes one element past the end of y.
__global__ void write_past_end(const float* __restrict__ x, float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = x[i < n ? i : 0];
}

// Reads dynamic shared memory one element past what the launch asked for.
__global__ void smem_past_end(float* y) {
    extern __shared__ float s[];
    s[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x + 1];
}

// Block 0 waits for a flag that only block 1 sets: blocks run one at a time.
__global__ void spin_on_other_block(volatile int* flag) {
    if (blockIdx.x == 1) flag[0] = 1;
    else
        while (flag[0] == 0) {}
}

// ---------------------------------------------------------------- cost of a barrier
__global__ void barrier_loop(int* y, int iters) {
    int v = threadIdx.x;
    for (int i = 0; i < iters; ++i) {
        v += i;
        __syncthreads();
    }
    y[blockIdx.x * blockDim.x + threadIdx.x] = v;
}
