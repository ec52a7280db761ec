// conv2d_depthwise_wgrad.cu -- weight gradient of a depthwise convolution (C/groups == 1, any
// depth multiplier m = K/C), 2-D (1-D runs as H = R = 1):
//   dw[k][r][s] = sum over n, p, q of x[n][k/m][p*sh - ph + r*dh][q*sw - pw + s*dw] * dy[n][k][p][q].
//
// Variants (launcher gpuconv/cuda/families/conv2d_depthwise_wgrad.py, routed from
// gpuconv/cuda/wgrad.py for depthwise specs; the tiles are conv2d_depthwise.cu's):
//   1. conv2d_depthwise_wgrad<T, TP=16, TQ=32, QPT=8, KS>: blockDim (4, 16, PZ): PZ images of
//      one channel k at a time, a 16x32 dy tile each, 8 consecutive dy values per thread.
//   2. conv2d_depthwise_wgrad<T, TP=8, TQ=8, QPT=8, KS>: blockDim (1, 8, PZ): the 14x14 / 7x7
//      maps.
//   KS = 3 or 5: KS*KS accumulators per thread in registers; each filter row r reads a
//   register window of x (QPT+KS-1 at stride 1, 2*QPT+KS-2 at stride 2) for KS*QPT FMAs.
//   KS = 0: any R*S <= 256 taps, one tap at a time, a warp shuffle sum per tap and tile.
// Block (k, split): the images n of the split's chunk (a function of the spec alone), every
// tile of each plane, in a fixed order; then a fixed shuffle tree per warp and the warps
// summed in ascending order into ws[split][k][tap]; conv_wgrad_reduce<T> (conv_wgrad.cu) sums
// the splits in ascending order.  Bit-identical run to run and GPU to GPU (there is no atomic
// form: the workspace is splits*K*R*S accumulators, small for depthwise).
// Accumulation: float16/float32 in float32, float64 in float64.
// Index math: staging is the two-dimensional running-pointer loop of conv2d_depthwise.cu (no
// division per staged element); one division per thread (c = k / m, m > 1 only).
//
// Registers (ptxas, sm_80/sm_90): KS=3 128 (fp64 164), KS=0 48-63, KS=5 216-243: one block of
// 256 threads per SM (8 warps), likely latency-bound for 5x5; bounding it to 2 blocks/SM
// spills 140-264 B (checked).  Fewer dy values per thread for KS=5 is the fix to measure.
// SASS sm_90 fp32: x staging 6.6 and dy staging 20.5 instructions per staged element, no
// division in any loop; 2 div32 in the setup (m = K/C skipped at m = 1, c = k/m).
// Napkin math (estimates; MEASURE): MobileNetV2 N=32 C=K=144 56x56 3x3 s1, fp32: bytes = x +
// dy = 115.6 MB -> 24 us at 4.8 TB/s (H200), 38.5 us at 3.0 TB/s (H100); FLOPs 0.26 G.
// Per dy element: 3 rows x (10 LDS + 24 FFMA) / 8 = 12.75 instructions + 8 dy LDS / 8 + staging
// of ~2.2 elements (x tile with halo 18x34/512 + the dy tile) x ~8 instructions ~ 32
// instructions per dy element against the 56 an fp32 output may spend before issue (not
// DRAM) bounds it (conv2d_depthwise.cu header): bandwidth-bound by estimate.  Grid: K blocks x
// splits, splits = ceil(528 / K) (4 blocks per SM of 132), so 144 channels run 4 splits of 8
// images.
#include "common.cuh"

template <typename T, int TP, int TQ, int QPT, int KS>
__global__ void __launch_bounds__(256)
conv2d_depthwise_wgrad(const T* __restrict__ x, const T* __restrict__ dy, typename num<T>::acc* __restrict__ ws,
                       CONV_GEOMETRY_PARAMS, int chunk) {
    typedef typename num<T>::acc A;
    constexpr int TX = TQ / QPT, NTP = TX * TP;
    constexpr int SC = NTP >= 32 ? 32 : NTP, SR = NTP / SC;
    constexpr int KR = KS > 0 ? KS : 1;
    static_assert(TQ % QPT == 0 && (SC & (SC - 1)) == 0 && NTP % SC == 0, "tile shape");
    const int RS = R * S;
    const int IH = (TP - 1) * sh + (R - 1) * dh + 1;
    const int IW = (TQ - 1) * sw + (S - 1) * dw + 1;
    const int IWP = IW | 1, DP = TQ + 1;                         // odd pitches: distinct banks
    const int XS = IH * IWP, YS = TP * DP;
    const int nwarps = (blockDim.x * blockDim.y * blockDim.z) >> 5;

    extern __shared__ __align__(16) unsigned char smem_raw[];
    A* s_acc = reinterpret_cast<A*>(smem_raw);                   // [warp][tap]
    T* s_x = reinterpret_cast<T*>(s_acc + nwarps * RS) + threadIdx.z * (XS + YS);
    T* s_dy = s_x + XS;

    const int k = blockIdx.x, split = blockIdx.y;
    const int m = K == C ? 1 : K / C;
    const int c = m == 1 ? k : k / m;
    const int nb = split * chunk, ne = min(N, nb + chunk);
    const int tid = threadIdx.y * TX + threadIdx.x;
    const int lin = (threadIdx.z * TP + threadIdx.y) * TX + threadIdx.x;
    const int lane = lin & 31, warp = lin >> 5;
    const int srow = tid / SC, scol = tid & (SC - 1);
    const int tilesP = (P + TP - 1) / TP, tilesQ = (Q + TQ - 1) / TQ;

    for (int i = lin; i < nwarps * RS; i += blockDim.x * blockDim.y * blockDim.z) s_acc[i] = A(0);
    A acc[KR][KR];
#pragma unroll
    for (int r = 0; r < KR; ++r)
#pragma unroll
        for (int s = 0; s < KR; ++s) acc[r][s] = A(0);

    for (int n0 = nb; n0 < ne; n0 += blockDim.z) {
        const int n = n0 + threadIdx.z;
        const bool active = n < ne;
        const T* __restrict__ xc = x + ((i64)n * C + c) * ((i64)H * W);
        const T* __restrict__ dyc = dy + ((i64)n * K + k) * ((i64)P * Q);
        for (int tp = 0; tp < tilesP; ++tp) {
            for (int tq = 0; tq < tilesQ; ++tq) {
                const int p0 = tp * TP, q0 = tq * TQ;
                const int ih0 = p0 * sh - ph, iw0 = q0 * sw - pw;
                __syncthreads();                                 // the previous tile is consumed
                if (active) {
                    for (int yy = srow; yy < IH; yy += SR) {
                        const int ih = ih0 + yy;
                        const bool rok = (unsigned)ih < (unsigned)H;
                        const T* __restrict__ src = xc + (rok ? (i64)ih * W : 0);
                        for (int xx = scol, iw = iw0 + scol; xx < IW; xx += SC, iw += SC) {
                            T v = num<T>::zero();
                            if (rok && (unsigned)iw < (unsigned)W) v = src[iw];
                            s_x[yy * IWP + xx] = v;
                        }
                    }
                    for (int yy = srow; yy < TP; yy += SR) {
                        const int pp = p0 + yy;
                        const T* __restrict__ src = dyc + (pp < P ? (i64)pp * Q : 0);
                        for (int xx = scol; xx < TQ; xx += SC) {
                            T v = num<T>::zero();
                            if (pp < P && q0 + xx < Q) v = src[q0 + xx];
                            s_dy[yy * DP + xx] = v;
                        }
                    }
                }
                __syncthreads();
                A d[QPT];
                const T* sd = s_dy + threadIdx.y * DP + threadIdx.x * QPT;
#pragma unroll
                for (int j = 0; j < QPT; ++j) d[j] = active ? num<T>::load(sd[j]) : A(0);
                const T* s0 = s_x + threadIdx.y * sh * IWP + threadIdx.x * QPT * sw;
                if (KS > 0 && sw == 1 && dw == 1) {
                    constexpr int WIN = QPT + KR - 1;
#pragma unroll
                    for (int r = 0; r < KR; ++r) {
                        A v[WIN];
#pragma unroll
                        for (int i = 0; i < WIN; ++i) v[i] = active ? num<T>::load(s0[r * dh * IWP + i]) : A(0);
#pragma unroll
                        for (int s = 0; s < KR; ++s)
#pragma unroll
                            for (int j = 0; j < QPT; ++j) acc[r][s] = acc[r][s] + d[j] * v[j + s];
                    }
                } else if (KS > 0 && sw == 2 && dw == 1) {
                    constexpr int WIN = 2 * QPT + KR - 2;
#pragma unroll
                    for (int r = 0; r < KR; ++r) {
                        A v[WIN];
#pragma unroll
                        for (int i = 0; i < WIN; ++i) v[i] = active ? num<T>::load(s0[r * dh * IWP + i]) : A(0);
#pragma unroll
                        for (int s = 0; s < KR; ++s)
#pragma unroll
                            for (int j = 0; j < QPT; ++j) acc[r][s] = acc[r][s] + d[j] * v[2 * j + s];
                    }
                } else if (KS > 0) {
                    if (active) {
#pragma unroll
                        for (int r = 0; r < KR; ++r)
#pragma unroll
                            for (int s = 0; s < KR; ++s)
#pragma unroll
                                for (int j = 0; j < QPT; ++j)
                                    acc[r][s] = acc[r][s] + d[j] * num<T>::load(s0[r * dh * IWP + j * sw + s * dw]);
                    }
                } else {                                         // any R, S: one tap at a time
                    for (int r = 0; r < R; ++r)
                        for (int s = 0; s < S; ++s) {
                            A a = A(0);
                            if (active) {
#pragma unroll
                                for (int j = 0; j < QPT; ++j)
                                    a = a + d[j] * num<T>::load(s0[r * dh * IWP + j * sw + s * dw]);
                            }
#pragma unroll
                            for (int o = 16; o > 0; o >>= 1) a = a + __shfl_xor_sync(0xffffffffu, a, o);
                            if (lane == 0) s_acc[warp * RS + r * S + s] += a;
                        }
                }
            }
        }
    }
    if (KS > 0) {                                                // the register sums, per warp
#pragma unroll
        for (int r = 0; r < KR; ++r)
#pragma unroll
            for (int s = 0; s < KR; ++s) {
                A a = acc[r][s];
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) a = a + __shfl_xor_sync(0xffffffffu, a, o);
                if (lane == 0) s_acc[warp * RS + r * KR + s] = a;
            }
    }
    __syncthreads();
    for (int t = lin; t < RS; t += blockDim.x * blockDim.y * blockDim.z) {
        A sum = s_acc[t];
        for (int wi = 1; wi < nwarps; ++wi) sum = sum + s_acc[wi * RS + t];
        ws[((i64)split * K + k) * RS + t] = sum;
    }
}
