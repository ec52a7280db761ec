// signal2d.cu -- single-channel 2-D correlation with scipy.signal's boundaries,
// the core of gpuconv.convolve2d / correlate2d (gpuconv/cuda/signal.py).
//
//   out[i, j] = sum_{r,s} ext(a)[i + o0 + r, j + o1 + s] * k[r, s]
// ext: BOUNDARY 0 'fill' (fillvalue), 1 'wrap' (periodic), 2 'symm' (half-sample
// symmetric, period 2M).  The boundary is resolved while the input tile is
// staged, so the inner loop has no branches.
//
// Variants (same arguments; the launcher picks, gpuconv/cuda/signal.py choose_kernel):
//   1. correlate2d_tiled<T, BOUNDARY>: 32x8 threads, each 4 outputs down a
//      column -> a 32x32 output tile per block; the (32+kh-1) x (32+kw-1) input
//      tile with its halo and the whole filter in shared memory.  A warp reads
//      32 consecutive shared words (conflict-free); every filter tap is a
//      broadcast.  Any filter whose tile + filter fit in 48 KB (float32: kh, kw
//      <= ~60).  Hot loop (sm_90 SASS, float32): 195 instructions per 64 FMAs,
//      ~3 per tap per output.
//   2. correlate2d_direct<T, BOUNDARY>: one output per thread, reads through
//      L1/L2; for filters too large for shared memory (e.g. correlating two
//      images), where the op is compute bound and staging buys little.
//   3. correlate2d_regblock<T, BOUNDARY, K>: square K x K filters, K = 3, 5, 7 for
//      4-byte T (3, 5 for 8-byte).  Register blocking: each thread owns 4 rows x
//      V = 16/sizeof(T) adjacent outputs (a 32 x 128 float32 tile per block); the
//      K*K taps sit in registers; each staged input row is read once per thread
//      as ceil((V+K-1)/V) LDS.128 (a warp reads 512 contiguous bytes: conflict-free)
//      and feeds every output row it touches; outputs leave as one 16-byte store
//      per row where rows are 16-byte aligned (ON % V == 0), else scalar stores.
// All: the boundary is resolved by row and column maps computed once per block
// (one 32-bit % per staged row and column instead of one to four divisions per
// staged element);
// tiles whose columns lie inside the image stage as a plain copy.
//
// Napkin math, float32 4096^2 image ('same'), per output, H100/H200 (132 SMs):
//   bytes: 4 read + 4 written = 8 B (the staged halo, (32+K-1) x pitch / (32 x 128)
//     = 1.10x (3x3) to 1.26x (7x7) of the reads, hits L2: neighbouring tiles read
//     it).  134 MB per call -> 45 us at the H100's measured 3.0 TB/s, 28 us at the
//     H200's 4.8 TB/s (datasheet): 360 / 600 G outputs/s.
//   issue: 132 SMs x 4 schedulers x ~1.7 GHz x 32 lanes = 28.7 T thread-instr/s,
//     so bandwidth leaves 80 (H100) / 48 (H200) instructions per output at 100%
//     issue.  FMA pipe alone: K*K per output -> 7x7 (49) is at the H200's edge.
//   regblock, sm_90 SASS (static counts along the inside-the-image path, per
//     thread per image = 16 outputs): staging 149-188 instructions, taps + FMA
//     block 161 / 424 / 818 (144 / 400 / 784 FFMA), stores <= 98 ->
//     ~25 / ~43 / ~71 instructions per output for 3x3 / 5x5 / 7x7 (`gpuconv kernels
//     --sass`: image loop 151-562 / 173-849 / 225-1295 with 'fill', the longest
//     path an edge tile's mapped staging plus scalar stores, i.e. <= 35 / 53 / 81)
//     (the tiled kernel before the row/column maps: 2.5 ('fill') / 3.1 per tap and
//     39 / 70 / 76 per staged element ('fill' one division, 'wrap' three, 'symm'
//     four), 1.13-1.41 staged elements per output -> ~66 / ~111 / ~177 per output
//     for 3x3 / 5x5 / 7x7 with 'fill', ~108 / ~167 / ~249 with 'wrap'.  Its staging
//     now: 3.6 per element inside the image, 11.5 at the edges.)
//   Expected (estimates, no GPU run yet): 3x3 and 5x5 bandwidth-bound on both
//     (H200 5x5: 43 of 48 instructions, ~90% issue); 7x7 issue-bound on the H200
//     at ~48/71 = ~68% of 4.8 TB/s (~3.2 TB/s, about the H100's copy rate),
//     bandwidth-bound on the H100.  Occupancy: 64 registers (4-byte T) and
//     18-21 KB shared per 256-thread block -> 4 blocks = 32 warps per SM; each
//     thread issues all its ~19 staging loads before its first shared store.
//   Against cupyx.scipy.signal.convolve2d (one thread per output; the design's field
//     figure is 3-5% of FP32 peak, taken here as 4% = 2.7 TFLOP/s): 3x3 / 5x5 / 7x7
//     take ~110 / ~310 / ~610 us there against ~45 us here for each on an H100
//     (bandwidth) and ~28 / ~28 / ~41 us on an H200: ~2.4x / ~7x / ~14x (H100),
//     ~4x / ~11x / ~15x (H200), estimates; the >= 10x target is out of reach at
//     3x3 if cupyx really reaches 4% of peak there (it would then be near 40% of
//     the bandwidth itself).
// T: float, double, cfloat, cdouble, int, long long (integers wrap like NumPy).
//
// Batches (convolve2d on (..., H, W) inputs): B images in one launch.  Image b
// reads a + offs[b] and k + offs[B + b] (element offsets the launcher computes
// from NumPy's broadcasting, so a shared kernel or image is never copied) and
// writes out + b*OM*ON.  The tiled kernels walk images along grid y (stride
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

// The row or column of `a` that extended coordinate t reads, -1 for 'fill' outside.
// Computed once per staged row and per staged column of a block (a 32-bit % is ~20
// instructions: once per element it was ~30% of the tiled kernel's instructions).
template <int BOUNDARY>
__device__ __forceinline__ int ext_map(int t, int M) {
    if (BOUNDARY == 0) return (t >= 0 && t < M) ? t : -1;
    return ext_index<BOUNDARY>(t, M);
}

template <typename T, int BOUNDARY>
__device__ __forceinline__ T ext_load(const T* __restrict__ a, int i, int j, int M, int N, T fill) {
    if (BOUNDARY == 0) {
        if (i < 0 || i >= M || j < 0 || j >= N) return fill;
        return a[(i64)i * N + j];
    }
    return a[(i64)ext_index<BOUNDARY>(i, M) * N + ext_index<BOUNDARY>(j, N)];
}

// Maps of the TH staged rows and TW staged columns of the tile at (i0 + o0, j0 + o1);
// they do not depend on the image, so a block computes them once for its whole batch.
template <int BOUNDARY>
__device__ __forceinline__ void stage_maps(int* s_row, int* s_col, int TH, int TW, int r0, int c0,
                                           int M, int N, int tid, int nthreads) {
    for (int t = tid; t < TH + TW; t += nthreads) {
        if (t < TH) s_row[t] = ext_map<BOUNDARY>(r0 + t, M);
        else        s_col[t - TH] = ext_map<BOUNDARY>(c0 + t - TH, N);
    }
}

// One image's TH x TW input tile (row pitch P) into shared memory: a row pointer per
// staged row and no division.  Where the tile's columns c0 .. c0 + TW - 1 all lie
// inside the image (every block but the edge ones) a row is a plain copy: LDG + STS
// per element; elsewhere each element reads its column map.  Consecutive threads
// read consecutive columns (coalesced) and write consecutive words (conflict-free).
template <typename T, int BOUNDARY, int NTX, int NTY>
__device__ __forceinline__ void stage_tile(T* s_in, const int* s_row, const int* s_col, const T* ab,
                                           int TH, int TW, int P, int c0, int N, T fill) {
    const bool inside = c0 >= 0 && c0 + TW <= N;     // block-uniform
    for (int yy = threadIdx.y; yy < TH; yy += NTY) {
        const int gi = s_row[yy];
        const T* arow = ab + (i64)(gi < 0 ? 0 : gi) * N;
        T* srow = s_in + yy * P;
        if (BOUNDARY == 0 && gi < 0) {
            for (int xx = threadIdx.x; xx < TW; xx += NTX) srow[xx] = fill;
        } else if (inside) {
            const T* src = arow + c0;
            for (int xx = threadIdx.x; xx < TW; xx += NTX) srow[xx] = src[xx];
        } else {
            for (int xx = threadIdx.x; xx < TW; xx += NTX) {
                const int gj = s_col[xx];
                srow[xx] = (BOUNDARY != 0 || gj >= 0) ? arow[gj] : fill;
            }
        }
    }
}

// The same for a compile-time TH x TW tile (correlate2d_regblock): each thread's
// ROWS x COLS elements are first all loaded into registers, then stored, so the
// loads are in flight together (25 per thread for float32 5x5: a dependent LDG ->
// STS pair per element left ~1 load in flight per warp, far below the ~20 KB per SM
// that 4.8 TB/s x ~0.6 us of latency needs).  Inside the image every load is an LDG
// with an immediate offset from one row pointer.
template <typename T, int BOUNDARY, int NTX, int NTY, int TH, int TW>
__device__ __forceinline__ void stage_tile_fixed(T* s_in, const int* s_row, const int* s_col, const T* ab,
                                                 int c0, int N, T fill) {
    constexpr int ROWS = (TH + NTY - 1) / NTY, COLS = (TW + NTX - 1) / NTX;
    const bool inside = c0 >= 0 && c0 + TW <= N;     // block-uniform
    // the block is NTX x NTY (the launcher's): with tx < NTX known, the bounds tests
    // of all but the last row and column fold away
    const int tx = threadIdx.x % NTX, ty = threadIdx.y % NTY;
    T v[ROWS][COLS];
#pragma unroll
    for (int n = 0; n < ROWS; ++n) {
        const int yy = ty + n * NTY;
        const int gi = yy < TH ? s_row[yy] : -1;
        const bool row_ok = yy < TH && (BOUNDARY != 0 || gi >= 0);
        const T* arow = ab + (i64)(gi < 0 ? 0 : gi) * N;
        if (inside) {
            const T* src = arow + c0 + tx;
#pragma unroll
            for (int c = 0; c < COLS; ++c)
                v[n][c] = row_ok && tx + c * NTX < TW ? src[c * NTX] : fill;
        } else {
#pragma unroll
            for (int c = 0; c < COLS; ++c) {
                const int xx = tx + c * NTX;
                const int gj = xx < TW ? s_col[xx] : -1;
                v[n][c] = row_ok && xx < TW && (BOUNDARY != 0 || gj >= 0) ? arow[gj] : fill;
            }
        }
    }
#pragma unroll
    for (int n = 0; n < ROWS; ++n)
#pragma unroll
        for (int c = 0; c < COLS; ++c) {
            const int yy = ty + n * NTY, xx = tx + c * NTX;
            if (yy < TH && xx < TW) s_in[yy * TW + xx] = v[n][c];
        }
}

constexpr int SIG_TX = 32, SIG_TY = 8, SIG_ROWS = 4, SIG_TILE_H = SIG_TY * SIG_ROWS;
// Resident 256-thread blocks per SM promised to ptxas: a register budget of 64 (4-byte
// T), 80 (8-byte) or 128 (complex128) per thread.  Without it ptxas (CUDA 13) picked
// 32-48 and spilled 8-28 bytes in the 8- and 16-byte instantiations (the value of
// i0 + threadIdx.y kept across the image loop).
template <typename T> constexpr int sig_min_blocks() { return sizeof(T) <= 4 ? 4 : sizeof(T) == 8 ? 3 : 2; }
// The tiled kernel's 4-byte instantiations fit 32 registers without spilling: 8 blocks
// (64 registers bought nothing: its hot loop stayed at 195 instructions per 64 FMAs);
// the direct one's spill 36 bytes at 32 (wrap), so it keeps 64.
template <typename T> constexpr int sig_tiled_min_blocks() { return sizeof(T) <= 4 ? 8 : sig_min_blocks<T>(); }

template <typename T, int BOUNDARY>
__global__ void __launch_bounds__(SIG_TX * SIG_TY, sig_tiled_min_blocks<T>())
correlate2d_tiled(const T* __restrict__ a, const T* __restrict__ k, const T* __restrict__ fillp,
                  T* __restrict__ out, int M, int N, int kh, int kw, int OM, int ON, int o0, int o1,
                  const i64* __restrict__ offs, int B) {
    typedef typename num<T>::acc A;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int TH = SIG_TILE_H + kh - 1, TW = SIG_TX + kw - 1;
    T* s_in = reinterpret_cast<T*>(smem_raw);        // TH x TW
    T* s_k = s_in + TH * TW;                          // kh x kw
    int* s_row = reinterpret_cast<int*>(s_k + kh * kw);  // TH, then TW
    int* s_col = s_row + TH;
    const int tilesJ = (ON + SIG_TX - 1) / SIG_TX;
    const int i0 = (int)(blockIdx.x / tilesJ) * SIG_TILE_H, j0 = (int)(blockIdx.x % tilesJ) * SIG_TX;
    const int tid = threadIdx.y * SIG_TX + threadIdx.x;
    stage_maps<BOUNDARY>(s_row, s_col, TH, TW, i0 + o0, j0 + o1, M, N, tid, SIG_TX * SIG_TY);
    const T fill = *fillp;
    const int j = j0 + threadIdx.x;
    __syncthreads();
    for (int b = blockIdx.y; b < B; b += gridDim.y) {
        const T* kb = k + offs[B + b];
        T* ob = out + (i64)b * OM * ON;
        for (int t = tid; t < kh * kw; t += SIG_TX * SIG_TY) s_k[t] = kb[t];
        stage_tile<T, BOUNDARY, SIG_TX, SIG_TY>(s_in, s_row, s_col, a + offs[b], TH, TW, TW, j0 + o1, N, fill);
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

// 16 bytes of T: one LDS.128 / STG.128.
template <typename T> struct __align__(16) vec16 { T v[16 / sizeof(T)]; };

constexpr int RB_TX = 32, RB_TY = 8, RB_ROWS = 4;
// Register budget: 64 for 4-byte T (56-64 used, 4 blocks = 32 warps per SM); 128 for
// 8-byte T (106-114 used at K = 5; at 80 ptxas spilled 8-48 bytes, and 7x7's 98 tap
// registers spill at 128 too, so 8-byte 7x7 stays on the tiled kernel).
template <typename T> constexpr int rb_min_blocks() { return sizeof(T) <= 4 ? 4 : 2; }

template <typename T, int BOUNDARY, int K>
__global__ void __launch_bounds__(RB_TX * RB_TY, rb_min_blocks<T>())
correlate2d_regblock(const T* __restrict__ a, const T* __restrict__ k, const T* __restrict__ fillp,
                     T* __restrict__ out, int M, int N, int kh, int kw, int OM, int ON, int o0, int o1,
                     const i64* __restrict__ offs, int B) {
    typedef typename num<T>::acc A;
    constexpr int V = 16 / (int)sizeof(T);            // outputs per thread along a row
    constexpr int NV = (V + K - 1 + V - 1) / V;      // 16-byte vectors in one window row
    constexpr int TILE_W = RB_TX * V, TILE_H = RB_TY * RB_ROWS;
    constexpr int TH = TILE_H + K - 1, P = (RB_TX + NV - 1) * V;   // P >= TILE_W + K - 1
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* s_in = reinterpret_cast<T*>(smem_raw);        // TH x P, every row 16-byte aligned
    int* s_row = reinterpret_cast<int*>(s_in + TH * P);
    int* s_col = s_row + TH;
    const int tilesJ = (ON + TILE_W - 1) / TILE_W;
    const int i0 = (int)(blockIdx.x / tilesJ) * TILE_H, j0 = (int)(blockIdx.x % tilesJ) * TILE_W;
    const int tid = threadIdx.y * RB_TX + threadIdx.x;
    // all P columns are staged (the last window's vectors read up to P - 1); one map
    // entry per thread (no loop: the image loop is then the kernel's only loop, and
    // `gpuconv kernels --sass` reports it as the hot loop, per image and thread)
    static_assert(TH + P <= RB_TX * RB_TY, "row and column maps: one entry per thread");
    if (tid < TH) s_row[tid] = ext_map<BOUNDARY>(i0 + o0 + tid, M);
    else if (tid < TH + P) s_col[tid - TH] = ext_map<BOUNDARY>(j0 + o1 + tid - TH, N);
    const T fill = *fillp;
    const int y0 = threadIdx.y * RB_ROWS, x0 = threadIdx.x * V, j = j0 + x0;
    // 16-byte stores when every output row starts 16-byte aligned (then j, a multiple
    // of V, is aligned too, and j < ON means all V outputs are inside the row)
    const bool vec_store = ON % V == 0 && (reinterpret_cast<size_t>(out) & 15) == 0;
    __syncthreads();
    for (int b = blockIdx.y; b < B; b += gridDim.y) {
        const T* kb = k + offs[B + b];
        T* ob = out + (i64)b * OM * ON;
        stage_tile_fixed<T, BOUNDARY, RB_TX, RB_TY, TH, P>(s_in, s_row, s_col, a + offs[b], j0 + o1, N, fill);
        A tap[K][K];                                  // uniform loads, L1 broadcast
#pragma unroll
        for (int r = 0; r < K; ++r)
#pragma unroll
            for (int s = 0; s < K; ++s) tap[r][s] = num<T>::load(kb[r * K + s]);
        __syncthreads();
        A acc[RB_ROWS][V];
#pragma unroll
        for (int m = 0; m < RB_ROWS; ++m)
#pragma unroll
            for (int q = 0; q < V; ++q) acc[m][q] = num<T>::zero();
        // input row y0 + t feeds output rows m = t - r: each window is read once for
        // the thread's RB_ROWS rows; taps stay in the same (r, s) order as the naive sum
#pragma unroll
        for (int t = 0; t < RB_ROWS + K - 1; ++t) {
            const vec16<T>* src = reinterpret_cast<const vec16<T>*>(s_in + (y0 + t) * P + x0);
            vec16<T> w[NV];
#pragma unroll
            for (int v = 0; v < NV; ++v) w[v] = src[v];
#pragma unroll
            for (int m = 0; m < RB_ROWS; ++m) {
                const int r = t - m;
                if (r < 0 || r >= K) continue;
#pragma unroll
                for (int s = 0; s < K; ++s)
#pragma unroll
                    for (int q = 0; q < V; ++q)
                        acc[m][q] = acc[m][q] + num<T>::load(w[(q + s) / V].v[(q + s) % V]) * tap[r][s];
            }
        }
        if (j < ON) {
#pragma unroll
            for (int m = 0; m < RB_ROWS; ++m) {
                const int i = i0 + y0 + m;
                if (i >= OM) break;
                T* orow = ob + (i64)i * ON + j;
                if (vec_store) {
                    vec16<T> o;
#pragma unroll
                    for (int q = 0; q < V; ++q) o.v[q] = num<T>::store(acc[m][q]);
                    *reinterpret_cast<vec16<T>*>(orow) = o;
                } else {
#pragma unroll
                    for (int q = 0; q < V; ++q)
                        if (j + q < ON) orow[q] = num<T>::store(acc[m][q]);
                }
            }
        }
        __syncthreads();                              // the next image restages the tile
    }
}

template <typename T, int BOUNDARY>
__global__ void __launch_bounds__(SIG_TX * SIG_TY, sig_min_blocks<T>())
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
