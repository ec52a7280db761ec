// gpuconv_sim.h -- the CUDA device environment, re-created for g++ on the CPU.
//
// Force-included (g++ -include gpuconv_sim.h) in front of every kernels_cu
// module that gpuconv.sim builds, so the same .cu sources compile unchanged.
// cuda_runtime.h / cuda_fp16.h / cuda_bf16.h in this directory only include
// this file.
//
// Execution model (implemented in ../src/gpuconv_sim_runtime.inc):
//   * blocks run one after another; the threads of a block are user-level
//     fibers.  The schedule (SimBackend(schedule=...)) picks which fiber runs
//     next whenever one blocks at a barrier (__syncthreads, a warp operation):
//     "default" runs each in thread order to its next barrier, alternating the
//     direction after every block-wide barrier; "reversed" starts from the last
//     thread; "warp-greedy" runs one warp until all its lanes wait at a block
//     barrier before the next warp starts; "random" picks a runnable fiber at
//     random (seeded) and also switches after every completed barrier and warp
//     operation;
//   * threadIdx/blockIdx/blockDim/gridDim read the scheduler's state;
//   * shared memory is one window per launch: static `__shared__` variables
//     (rewritten by gpuconv/sim/_build.py into references into its first 48 KiB,
//     allocated on first use, key: the declaration in its template instance)
//     and `extern __shared__ T name[];` (a pointer to the dynamic part); both
//     are filled with 0xFF bytes -- NaN for floating point, -1 for integers --
//     at the start of every block;
//   * cp.async (kernels_cu/mma.cuh) queues 16-byte copies per thread; the
//     destination holds poison from issue until the issuing thread's
//     cp.async.wait_group completes the copy's group (or the thread exits);
//   * warp operations exchange values through per-lane slots and complete when
//     every live lane named in the mask has arrived at the same operation;
//   * atomics are plain read-modify-writes: fibers switch only at barriers, so
//     nothing can interleave with them;
//   * with GPUCONV_SIM_RACE (SimBackend(racecheck=True)) the compiler calls the
//     runtime on every load and store (-fsanitize=kernel-address with calls),
//     and the runtime checks shared-memory accesses for races (see the runtime).
// GPU-only code (inline PTX) must sit behind `#ifdef GPUCONV_SIM`;
// __CUDA_ARCH__ is not defined here.
#pragma once
#define GPUCONV_SIM 1

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <assert.h>
#include <cmath>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __launch_bounds__(...)       // checked: _build.py calls gpuconv_sim::launch_bounds in the body
#define __maxnreg__(n)
#define __constant__
#define __managed__
#define __grid_constant__
#define __shared__ static
#define __align__(n) alignas(n)
#define __builtin_align__(n) alignas(n)
#define __CUDA_ALIGN__(n) alignas(n)

// ---------------------------------------------------------------- vector types
struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

#define GPUCONV_SIM_VEC1(T, N, A) \
    struct alignas(A) N##1 { T x; }; \
    static inline N##1 make_##N##1(T x) { N##1 r; r.x = x; return r; }
#define GPUCONV_SIM_VEC2(T, N, A) \
    struct alignas(A) N##2 { T x, y; }; \
    static inline N##2 make_##N##2(T x, T y) { N##2 r; r.x = x; r.y = y; return r; }
#define GPUCONV_SIM_VEC3(T, N) \
    struct N##3 { T x, y, z; }; \
    static inline N##3 make_##N##3(T x, T y, T z) { N##3 r; r.x = x; r.y = y; r.z = z; return r; }
#define GPUCONV_SIM_VEC4(T, N, A) \
    struct alignas(A) N##4 { T x, y, z, w; }; \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { N##4 r; r.x = x; r.y = y; r.z = z; r.w = w; return r; }
#define GPUCONV_SIM_VECS(T, N, S) \
    GPUCONV_SIM_VEC1(T, N, S) GPUCONV_SIM_VEC2(T, N, 2 * S) GPUCONV_SIM_VEC3(T, N) GPUCONV_SIM_VEC4(T, N, 4 * S)

GPUCONV_SIM_VECS(signed char, char, 1)
GPUCONV_SIM_VECS(unsigned char, uchar, 1)
GPUCONV_SIM_VECS(short, short, 2)
GPUCONV_SIM_VECS(unsigned short, ushort, 2)
GPUCONV_SIM_VECS(int, int, 4)
GPUCONV_SIM_VEC1(unsigned int, uint, 4)
GPUCONV_SIM_VEC2(unsigned int, uint, 8)
GPUCONV_SIM_VEC4(unsigned int, uint, 16)
static inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }
GPUCONV_SIM_VECS(long, long, 8)
GPUCONV_SIM_VECS(unsigned long, ulong, 8)
GPUCONV_SIM_VEC1(long long, longlong, 8)
GPUCONV_SIM_VEC2(long long, longlong, 16)
GPUCONV_SIM_VEC3(long long, longlong)
GPUCONV_SIM_VEC4(long long, longlong, 16)
GPUCONV_SIM_VEC1(unsigned long long, ulonglong, 8)
GPUCONV_SIM_VEC2(unsigned long long, ulonglong, 16)
GPUCONV_SIM_VEC3(unsigned long long, ulonglong)
GPUCONV_SIM_VEC4(unsigned long long, ulonglong, 16)
GPUCONV_SIM_VECS(float, float, 4)
GPUCONV_SIM_VEC1(double, double, 8)
GPUCONV_SIM_VEC2(double, double, 16)
GPUCONV_SIM_VEC3(double, double)
GPUCONV_SIM_VEC4(double, double, 16)
static inline dim3 make_dim3(unsigned x, unsigned y, unsigned z) { return dim3(x, y, z); }

// ---------------------------------------------------------------- scheduler state
namespace gpuconv_sim {

// One CUDA thread.  threadIdx is the first member so `threadIdx.x` is one
// load through the current-fiber pointer.
struct Fiber {
    ::uint3 tid;
    unsigned linear, lane, warp;
    void* sp;                      // saved stack pointer while switched out
    int state;
    const char* wait_file;         // where it waits (for deadlock reports)
    int wait_line;
    int wkind;                     // pending warp operation
    unsigned wmask;
    int wparam, wwidth;
    unsigned long long win, wout;
    void* uctx;                    // ucontext_t* when the portable switch is used
};

extern Fiber* g_cur;
extern unsigned char* g_win;                  // shared-memory window of this launch (race-check fast path)
extern size_t g_win_size;
extern ::uint3 g_block_idx;
extern ::dim3 g_block_dim, g_grid_dim;
extern unsigned char* g_dyn_smem;

void syncthreads(const char* file, int line);
int syncthreads_reduce(const char* file, int line, int op, int pred);
unsigned long long warp_op(const char* file, int line, int kind, unsigned mask,
                           unsigned long long value, int param, int width);
inline unsigned char* dynamic_smem() { return g_dyn_smem; }
// Storage of a static __shared__ variable (one per declaration and template
// instance, `key` is a function-local static of that instance), poisoned at
// every block start; fails the launch past 48 KiB of static shared memory or
// past the kernel's static + dynamic limit.
void* static_smem(const void* key, size_t size, size_t align, const char* name, const char* file, int line);
// __launch_bounds__(max_threads[, min_blocks[, max_cluster]]): a block larger
// than max_threads is a launch CUDA refuses.
void check_launch_bounds(const char* file, int line, long long max_threads);
template <class... A> inline void launch_bounds(const char* file, int line, long long max_threads, A...) {
    check_launch_bounds(file, line, max_threads);
}
// Support for kernels_cu/mma.cuh's CPU versions (file/line: the kernel's call site).
void cp_async_16(const char* file, int line, void* dst, const void* src, bool pred);
void cp_async_commit(const char* file, int line);
void cp_async_wait(const char* file, int line, int n);
void check_ldmatrix_row(const char* file, int line, const void* row, const char* what);

enum WarpKind { W_SYNC = 1, W_SHFL, W_SHFL_UP, W_SHFL_DOWN, W_SHFL_XOR, W_BALLOT, W_ANY, W_ALL,
                W_MATCH_ANY, W_MATCH_ALL, W_REDUCE_ADD, W_REDUCE_MIN, W_REDUCE_MAX,
                W_REDUCE_AND, W_REDUCE_OR, W_REDUCE_XOR };

template <class T> inline unsigned long long to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp exchange of a type larger than 8 bytes (CUDA shuffles 32/64-bit values)");
    unsigned long long b = 0; memcpy(&b, &v, sizeof(T)); return b;
}
template <class T> inline T from_bits(unsigned long long b) { T v; memcpy(&v, &b, sizeof(T)); return v; }

template <class T> inline T shfl(const char* f, int l, int kind, unsigned mask, T v, int p, int width = 32) {
    return from_bits<T>(warp_op(f, l, kind, mask, to_bits(v), p, width));
}
template <class T> inline unsigned match(const char* f, int l, int kind, unsigned mask, T v, int* pred) {
    unsigned long long r = warp_op(f, l, kind, mask, to_bits(v), (int)sizeof(T), 32);
    if (kind == W_MATCH_ALL) { if (pred) *pred = r != 0; }
    return (unsigned)r;
}
template <class T> inline T reduce(const char* f, int l, int kind, unsigned mask, T v) {
    return from_bits<T>(warp_op(f, l, kind, mask, to_bits(v), std::is_signed<T>::value ? 1 : 0, 32));
}

}  // namespace gpuconv_sim

#define threadIdx (static_cast<const ::uint3&>(::gpuconv_sim::g_cur->tid))
#define blockIdx (static_cast<const ::uint3&>(::gpuconv_sim::g_block_idx))
#define blockDim (static_cast<const ::dim3&>(::gpuconv_sim::g_block_dim))
#define gridDim (static_cast<const ::dim3&>(::gpuconv_sim::g_grid_dim))
static constexpr int warpSize = 32;

// ---------------------------------------------------------------- barriers and warp operations
#define __syncthreads() ::gpuconv_sim::syncthreads(__FILE__, __LINE__)
#define __syncthreads_count(p) ::gpuconv_sim::syncthreads_reduce(__FILE__, __LINE__, 0, (p))
#define __syncthreads_and(p) ::gpuconv_sim::syncthreads_reduce(__FILE__, __LINE__, 1, (p))
#define __syncthreads_or(p) ::gpuconv_sim::syncthreads_reduce(__FILE__, __LINE__, 2, (p))
#define __syncwarp(...) ((void)::gpuconv_sim::warp_op(__FILE__, __LINE__, ::gpuconv_sim::W_SYNC, \
                                                       ::gpuconv_sim::syncwarp_mask(__VA_ARGS__), 0, 0, 32))
#define __shfl_sync(m, v, ...) ::gpuconv_sim::shfl(__FILE__, __LINE__, ::gpuconv_sim::W_SHFL, (m), (v), __VA_ARGS__)
#define __shfl_up_sync(m, v, ...) ::gpuconv_sim::shfl(__FILE__, __LINE__, ::gpuconv_sim::W_SHFL_UP, (m), (v), __VA_ARGS__)
#define __shfl_down_sync(m, v, ...) ::gpuconv_sim::shfl(__FILE__, __LINE__, ::gpuconv_sim::W_SHFL_DOWN, (m), (v), __VA_ARGS__)
#define __shfl_xor_sync(m, v, ...) ::gpuconv_sim::shfl(__FILE__, __LINE__, ::gpuconv_sim::W_SHFL_XOR, (m), (v), __VA_ARGS__)
#define __ballot_sync(m, p) ((unsigned)::gpuconv_sim::warp_op(__FILE__, __LINE__, ::gpuconv_sim::W_BALLOT, (m), (p) ? 1u : 0u, 0, 32))
#define __any_sync(m, p) ((int)::gpuconv_sim::warp_op(__FILE__, __LINE__, ::gpuconv_sim::W_ANY, (m), (p) ? 1u : 0u, 0, 32))
#define __all_sync(m, p) ((int)::gpuconv_sim::warp_op(__FILE__, __LINE__, ::gpuconv_sim::W_ALL, (m), (p) ? 1u : 0u, 0, 32))
#define __match_any_sync(m, v) ::gpuconv_sim::match(__FILE__, __LINE__, ::gpuconv_sim::W_MATCH_ANY, (m), (v), nullptr)
#define __match_all_sync(m, v, pred) ::gpuconv_sim::match(__FILE__, __LINE__, ::gpuconv_sim::W_MATCH_ALL, (m), (v), (pred))
#define __reduce_add_sync(m, v) ::gpuconv_sim::reduce(__FILE__, __LINE__, ::gpuconv_sim::W_REDUCE_ADD, (m), (v))
#define __reduce_min_sync(m, v) ::gpuconv_sim::reduce(__FILE__, __LINE__, ::gpuconv_sim::W_REDUCE_MIN, (m), (v))
#define __reduce_max_sync(m, v) ::gpuconv_sim::reduce(__FILE__, __LINE__, ::gpuconv_sim::W_REDUCE_MAX, (m), (v))
#define __reduce_and_sync(m, v) ::gpuconv_sim::reduce(__FILE__, __LINE__, ::gpuconv_sim::W_REDUCE_AND, (m), (v))
#define __reduce_or_sync(m, v) ::gpuconv_sim::reduce(__FILE__, __LINE__, ::gpuconv_sim::W_REDUCE_OR, (m), (v))
#define __reduce_xor_sync(m, v) ::gpuconv_sim::reduce(__FILE__, __LINE__, ::gpuconv_sim::W_REDUCE_XOR, (m), (v))
namespace gpuconv_sim {
inline unsigned syncwarp_mask() { return 0xffffffffu; }
inline unsigned syncwarp_mask(unsigned m) { return m; }
}
// Which lanes are converged here is unknowable in the simulator; the caller's
// own lane is always a correct answer.
static inline unsigned __activemask() { return 1u << ::gpuconv_sim::g_cur->lane; }

static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __nanosleep(unsigned) {}
static inline long long clock64() { static long long c = 0; return c += 32; }
static inline long long clock() { return clock64(); }

// ---------------------------------------------------------------- memory access hints
template <class T> static inline T __ldg(const T* p) { return *p; }
template <class T> static inline T __ldcg(const T* p) { return *p; }
template <class T> static inline T __ldca(const T* p) { return *p; }
template <class T> static inline T __ldcs(const T* p) { return *p; }
template <class T> static inline T __ldlu(const T* p) { return *p; }
template <class T> static inline T __ldcv(const T* p) { return *p; }
template <class T> static inline void __stwb(T* p, T v) { *p = v; }
template <class T> static inline void __stcg(T* p, T v) { *p = v; }
template <class T> static inline void __stcs(T* p, T v) { *p = v; }
template <class T> static inline void __stwt(T* p, T v) { *p = v; }

// ---------------------------------------------------------------- atomics
// Fibers switch only at barriers, so a plain read-modify-write is atomic here.
// GPUCONV_SIM_ATOMIC: not instrumented in race-check builds (an atomic is no race).
#define GPUCONV_SIM_ATOMIC __attribute__((no_sanitize_address))
template <class T> GPUCONV_SIM_ATOMIC static inline T atomicAdd(T* p, T v) { T o = *p; *p = o + v; return o; }
template <class T> GPUCONV_SIM_ATOMIC static inline T atomicSub(T* p, T v) { T o = *p; *p = o - v; return o; }
template <class T> GPUCONV_SIM_ATOMIC static inline T atomicExch(T* p, T v) { T o = *p; *p = v; return o; }
template <class T> GPUCONV_SIM_ATOMIC static inline T atomicMin(T* p, T v) { T o = *p; *p = v < o ? v : o; return o; }
template <class T> GPUCONV_SIM_ATOMIC static inline T atomicMax(T* p, T v) { T o = *p; *p = v > o ? v : o; return o; }
template <class T> GPUCONV_SIM_ATOMIC static inline T atomicAnd(T* p, T v) { T o = *p; *p = o & v; return o; }
template <class T> GPUCONV_SIM_ATOMIC static inline T atomicOr(T* p, T v) { T o = *p; *p = o | v; return o; }
template <class T> GPUCONV_SIM_ATOMIC static inline T atomicXor(T* p, T v) { T o = *p; *p = o ^ v; return o; }
template <class T> GPUCONV_SIM_ATOMIC static inline T atomicCAS(T* p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }
GPUCONV_SIM_ATOMIC static inline unsigned atomicInc(unsigned* p, unsigned v) { unsigned o = *p; *p = (o >= v) ? 0u : o + 1u; return o; }
GPUCONV_SIM_ATOMIC static inline unsigned atomicDec(unsigned* p, unsigned v) { unsigned o = *p; *p = (o == 0u || o > v) ? v : o - 1u; return o; }
#define GPUCONV_SIM_ATOMIC_SCOPES(name) \
    template <class... A> static inline auto name##_block(A... a) -> decltype(name(a...)) { return name(a...); } \
    template <class... A> static inline auto name##_system(A... a) -> decltype(name(a...)) { return name(a...); }
GPUCONV_SIM_ATOMIC_SCOPES(atomicAdd) GPUCONV_SIM_ATOMIC_SCOPES(atomicSub) GPUCONV_SIM_ATOMIC_SCOPES(atomicExch)
GPUCONV_SIM_ATOMIC_SCOPES(atomicMin) GPUCONV_SIM_ATOMIC_SCOPES(atomicMax) GPUCONV_SIM_ATOMIC_SCOPES(atomicCAS)
GPUCONV_SIM_ATOMIC_SCOPES(atomicAnd) GPUCONV_SIM_ATOMIC_SCOPES(atomicOr) GPUCONV_SIM_ATOMIC_SCOPES(atomicXor)

// ---------------------------------------------------------------- integer and float intrinsics
// min/max: CUDA overloads every arithmetic pair; the floating versions are
// fminf/fmaxf (a NaN operand yields the other one).
template <class A, class B, class = typename std::enable_if<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>::type>
static inline typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    if (std::is_floating_point<C>::value) return (C)std::fmin((C)a, (C)b);
    return (C)a < (C)b ? (C)a : (C)b;
}
template <class A, class B, class = typename std::enable_if<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>::type>
static inline typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    if (std::is_floating_point<C>::value) return (C)std::fmax((C)a, (C)b);
    return (C)a > (C)b ? (C)a : (C)b;
}
static inline unsigned umin(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned umax(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long llmin(long long a, long long b) { return a < b ? a : b; }
static inline long long llmax(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long ullmin(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long ullmax(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0
static inline float saturate(float x) { return __saturatef(x); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
static inline double rcbrt(double x) { return 1.0 / cbrt(x); }
// glibc declares these intrinsic names itself (its internal aliases); the GPU's
// fast approximations become the exact library functions.
#define __expf expf
#define __exp10f exp10f
#define __logf logf
#define __log2f log2f
#define __log10f log10f
#define __sinf sinf
#define __cosf cosf
#define __tanf tanf
#define __powf powf
#define __sincosf sincosf
static inline float sinpif(float x) { return sinf((float)M_PI * x); }
static inline float cospif(float x) { return cosf((float)M_PI * x); }
static inline double sinpi(double x) { return sin(M_PI * x); }
static inline double cospi(double x) { return cos(M_PI * x); }
static inline float normcdff(float x) { return 0.5f * erfcf(-x * (float)M_SQRT1_2); }
static inline double normcdf(double x) { return 0.5 * erfc(-x * M_SQRT1_2); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __frsqrt_rn(float a) { return 1.0f / sqrtf(a); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline double __drcp_rn(double a) { return 1.0 / a; }
static inline double __dsqrt_rn(double a) { return sqrt(a); }

static inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)floorf(x); }
static inline int __float2int_ru(float x) { return (int)ceilf(x); }
static inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
static inline unsigned __float2uint_rz(float x) { return (unsigned)x; }
static inline long long __float2ll_rn(float x) { return (long long)nearbyintf(x); }
static inline long long __float2ll_rz(float x) { return (long long)x; }
static inline int __double2int_rn(double x) { return (int)nearbyint(x); }
static inline int __double2int_rz(double x) { return (int)x; }
static inline long long __double2ll_rn(double x) { return (long long)nearbyint(x); }
static inline float __double2float_rn(double x) { return (float)x; }
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __uint2float_rn(unsigned x) { return (float)x; }
static inline double __int2double_rn(int x) { return (double)x; }
static inline float __ll2float_rn(long long x) { return (float)x; }
static inline double __ll2double_rn(long long x) { return (double)x; }
static inline int __float_as_int(float x) { int r; memcpy(&r, &x, 4); return r; }
static inline unsigned __float_as_uint(float x) { unsigned r; memcpy(&r, &x, 4); return r; }
static inline float __int_as_float(int x) { float r; memcpy(&r, &x, 4); return r; }
static inline float __uint_as_float(unsigned x) { float r; memcpy(&r, &x, 4); return r; }
static inline long long __double_as_longlong(double x) { long long r; memcpy(&r, &x, 8); return r; }
static inline double __longlong_as_double(long long x) { double r; memcpy(&r, &x, 8); return r; }
static inline int __double2hiint(double x) { return (int)(__double_as_longlong(x) >> 32); }
static inline int __double2loint(double x) { return (int)(unsigned)__double_as_longlong(x); }
static inline double __hiloint2double(int hi, int lo) {
    return __longlong_as_double((long long)(((unsigned long long)(unsigned)hi << 32) | (unsigned)lo));
}

static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    return __builtin_bswap32(x);
}
static inline unsigned long long __brevll(unsigned long long x) {
    return ((unsigned long long)__brev((unsigned)x) << 32) | __brev((unsigned)(x >> 32));
}
static inline int __mul24(int a, int b) { return (int)(((long long)(a << 8 >> 8)) * (b << 8 >> 8)); }
static inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
static inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline unsigned __sad(int a, int b, unsigned c) { return c + (unsigned)(a > b ? a - b : b - a); }
static inline unsigned __usad(unsigned a, unsigned b, unsigned c) { return c + (a > b ? a - b : b - a); }
static inline int __hadd(int a, int b) { return (int)(((long long)a + b) >> 1); }
static inline int __rhadd(int a, int b) { return (int)(((long long)a + b + 1) >> 1); }
static inline unsigned __uhadd(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a + b) >> 1); }
static inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo; return (unsigned)((v << (s & 31)) >> 32);
}
static inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo; return (unsigned)(v >> (s & 31));
}
static inline unsigned __funnelshift_lc(unsigned lo, unsigned hi, unsigned s) {
    return __funnelshift_l(lo, hi, s > 32 ? 32 : s) | (s >= 32 ? 0 : 0);
}
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    unsigned long long v = ((unsigned long long)y << 32) | x; unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xffu) << (8 * i);
    return r;
}

#include "gpuconv_sim_half.h"
