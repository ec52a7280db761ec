// signal2d.cu -- single-channel 2-D correlation with scipy.signal's boundaries,
// the core of gpuconv.convolve2d / correlate2d (gpuconv/cuda/signal.py).
//
//   out[i, j] = sum_{r,s} ext(a)[i + o0 + r, j + o1 + s] * k[r, s]
// ext: BOUNDARY 0 'fill' (fillvalue), 1 'wrap' (periodic), 2 'symm' (half-sample
// symmetric, period 2M).  The boundary is resolved while the input tile is
// staged, so the inner loop has no branches.
//
// Variants (same arguments; launcher picks by shared-memory fit):
//   1. correlate2d_tiled<T, BOUNDARY>: 32x8 threads, each 4 outputs down a
//      column -> a 32x32 output tile per block; the (32+kh-1) x (32+kw-1) input
//      tile with its halo and the whole filter in shared memory.  A warp reads
//      32 consecutive shared words (conflict-free); every filter tap is a
//      broadcast.  Used when tile + filter fit in 48 KB (float32: kh, kw <= ~60).
//   2. correlate2d_direct<T, BOUNDARY>: one output per thread, reads through
//      L1/L2; for filters too large for shared memory (e.g. correlating two
//      images), where the op is compute bound and staging buys little.
//
// Napkin math (4096^2 float32 image, 5x5 filter): bytes = 2*64 MB = 134 MB ->
//   45 us at 3 TB/s; FLOPs = 2*25*16.8M = 0.84 GFLOP -> 13 us at 67 TFLOP/s:
//   bandwidth bound.  The tile re-reads a (36*36)/(32*32) = 1.27x halo overhead,
//   served from L2.  Per output: 25 shared loads of input + 25 broadcasts.
// T: float, double, cfloat, cdouble, int, long long (integers wrap like NumPy).
//
// Batches (convolve2d on (..., H, W) inputs): B images in one launch.  Image b
// reads a + offs[b] and k + offs[B + b] (element offsets the launcher computes
// from NumPy's broadcasting, so a shared kernel or image is never copied) and
// writes out + b*OM*ON.  The tiled kernel walks images along grid y (stride
// gridDim.y, at most 65535); the direct one flattens (b, i, j) into its
// grid-stride loop.  One launch for the batch instead of B: at 256^2 and 5x5 a
// single image is ~3 us of work, the same order as a launch.
#include "common.cuh"

// Coordinates are int: the launcher checks that every index ext() is asked for,
// from o - 0 to OM + o + kh, fits in 32 bits (and 2M too).  64-bit % would be a
// ~70-instruction call with a stack frame (ptxas reports it as spills).
template <int BOUNDARY>
__device__ __forceinline__ int ext_index(int t, int M) {
    if (BOUNDARY == 1) { const int m = t % M; return m < 0 ? m + M : m; }
    if (BOUNDARY == 2) {
        int m = t % (2 * M);
        if (m < 0) m += 2 * M;
        return m >= M ? 2 * M - 1 - m : m;
    }
    return t;                                       // fill: caller checks bounds
}

template <typename T, int BOUNDARY>
__device__ __forceinline__ T ext_load(const T* __restrict__ a, int i, int j, int M, int N, T fill) {
    if (BOUNDARY == 0) {
        if (i < 0 || i >= M || j < 0 || j >= N) return fill;
        return a[(i64)i * N + j];
    }
    return a[(i64)ext_index<BOUNDARY>(i, M) * N + ext_index<BOUNDARY>(j, N)];
}

constexpr int SIG_TX = 32, SIG_TY = 8, SIG_ROWS = 4, SIG_TILE_H = SIG_TY * SIG_ROWS;

template <typename T, int BOUNDARY>
__global__ void __launch_bounds__(SIG_TX * SIG_TY)
correlate2d_tiled(const T* __restrict__ a, const T* __restrict__ k, const T* __restrict__ fillp,
                  T* __restrict__ out, int M, int N, int kh, int kw, int OM, int ON, int o0, int o1,
                  const i64* __restrict__ offs, int B) {
    typedef typename num<T>::acc A;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int TH = SIG_TILE_H + kh - 1, TW = SIG_TX + kw - 1;
    T* s_in = reinterpret_cast<T*>(smem_raw);        // TH x TW
    T* s_k = s_in + TH * TW;                          // kh x kw
    const int tilesJ = (ON + SIG_TX - 1) / SIG_TX;
    const int i0 = (int)(blockIdx.x / tilesJ) * SIG_TILE_H, j0 = (int)(blockIdx.x % tilesJ) * SIG_TX;
    const int tid = threadIdx.y * SIG_TX + threadIdx.x;
    const T fill = *fillp;
    const int j = j0 + threadIdx.x;
    for (int b = blockIdx.y; b < B; b += gridDim.y) {
        const T* ab = a + offs[b];
        const T* kb = k + offs[B + b];
        T* ob = out + (i64)b * OM * ON;
        for (int t = tid; t < kh * kw; t += SIG_TX * SIG_TY) s_k[t] = kb[t];
        for (int t = tid; t < TH * TW; t += SIG_TX * SIG_TY) {
            const int yy = t / TW, xx = t - yy * TW;
            s_in[t] = ext_load<T, BOUNDARY>(ab, i0 + o0 + yy, j0 + o1 + xx, M, N, fill);
        }
        __syncthreads();
        A acc[SIG_ROWS];
#pragma unroll
        for (int m = 0; m < SIG_ROWS; ++m) acc[m] = num<T>::zero();
        for (int r = 0; r < kh; ++r) {
            for (int s = 0; s < kw; ++s) {
                const A kv = num<T>::load(s_k[r * kw + s]);
                const T* si = s_in + (threadIdx.y + r) * TW + threadIdx.x + s;
#pragma unroll
                for (int m = 0; m < SIG_ROWS; ++m)
                    acc[m] = acc[m] + num<T>::load(si[m * SIG_TY * TW]) * kv;
            }
        }
        if (j < ON) {
#pragma unroll
            for (int m = 0; m < SIG_ROWS; ++m) {
                const int i = i0 + threadIdx.y + m * SIG_TY;
                if (i < OM) ob[(i64)i * ON + j] = num<T>::store(acc[m]);
            }
        }
        __syncthreads();                              // the next image restages the tiles
    }
}

template <typename T, int BOUNDARY>
__global__ void __launch_bounds__(SIG_TX * SIG_TY)
correlate2d_direct(const T* __restrict__ a, const T* __restrict__ k, const T* __restrict__ fillp,
                   T* __restrict__ out, int M, int N, int kh, int kw, int OM, int ON, int o0, int o1,
                   const i64* __restrict__ offs, int B) {
    typedef typename num<T>::acc A;
    const T fill = *fillp;
    const i64 plane = (i64)OM * ON, total = plane * B;
    for (i64 idx = (i64)blockIdx.x * blockDim.x * blockDim.y + threadIdx.y * blockDim.x + threadIdx.x;
         idx < total; idx += (i64)gridDim.x * blockDim.x * blockDim.y) {
        const int b = (int)(idx / plane);
        const i64 rem = idx - (i64)b * plane;
        const int i = (int)(rem / ON), j = (int)(rem - (rem / ON) * ON);
        const T* ab = a + offs[b];
        const T* kb = k + offs[B + b];
        A acc = num<T>::zero();
        for (int r = 0; r < kh; ++r)
            for (int s = 0; s < kw; ++s)
                acc = acc + num<T>::load(ext_load<T, BOUNDARY>(ab, i + o0 + r, j + o1 + s, M, N, fill))
                            * num<T>::load(kb[r * kw + s]);
        out[idx] = num<T>::store(acc);
    }
}
