// gpuconv_sim_half.h -- __half / __half2 / __nv_bfloat16 for the simulator.
//
// __half is IEEE binary16.  Conversions round to nearest even and match NumPy's
// float16 bit for bit, NaN payloads included (NumPy keeps the top payload bits;
// tests/test_sim.py checks all 65536 patterns and random floats).  Arithmetic
// is done in float and rounded once to half: for +, -, *, / and sqrt of two
// halves the float result is exact or double rounding is innocuous (24 >= 2*11+2),
// so __hadd/__hmul/... are correctly rounded like the hardware; __hfma rounds
// a*b+c exactly once (product exact in double, the sum rounded to odd, then to half).
// __nv_bfloat16 rounds to nearest even; NaN becomes the canonical 0x7fff as on the GPU.
#pragma once

namespace gpuconv_sim {

enum { RN = 0, RZ = 1, RD = 2, RU = 3 };

// double -> binary16 bits.  float -> double is exact, so this serves both.
inline unsigned short double_to_half_bits(double d, int mode = RN) {
    unsigned long long b; memcpy(&b, &d, 8);
    const unsigned short sign = (unsigned short)((b >> 48) & 0x8000u);
    const int exp = (int)((b >> 52) & 0x7ff);
    const unsigned long long sig = b & ((1ull << 52) - 1);
    const bool neg = sign != 0;
    if (exp == 0x7ff) {
        if (sig == 0) return sign | 0x7c00u;
        unsigned short r = (unsigned short)(0x7c00u + (sig >> 42));   // NumPy keeps the top payload bits
        if (r == 0x7c00u) ++r;
        return sign | r;
    }
    // Round-away-from-zero is wanted when the mode rounds "up" in magnitude.
    const bool away = (mode == RU && !neg) || (mode == RD && neg);
    if (exp == 0 && sig == 0) return sign;
    const int e = exp == 0 ? -1075 : exp - 1023;          // double subnormals: far below half's range
    if (e >= 16) return (mode == RN || away) ? (sign | 0x7c00u) : (sign | 0x7bffu);
    if (e < -25) return away ? (sign | 1u) : sign;
    const unsigned long long m = (exp == 0 ? 0 : (1ull << 52)) | sig;
    const int shift = e >= -14 ? 42 : 28 - e;              // 42 .. 53
    unsigned long long q = m >> shift;
    const unsigned long long rem = m & ((1ull << shift) - 1), half = 1ull << (shift - 1);
    if (mode == RN) { if (rem > half || (rem == half && (q & 1))) ++q; }
    else if (away && rem) ++q;
    unsigned int h = e >= -14 ? (unsigned)(((e + 14) << 10) + q) : (unsigned)q;  // carries into the exponent
    if (h >= 0x7c00u) h = (mode == RN || away) ? 0x7c00u : 0x7bffu;
    return (unsigned short)(sign | h);
}

// float -> binary16 bits.  NaN is handled on the float's own bits: widening a
// signalling NaN to double would set its quiet bit, and NumPy keeps it clear.
inline unsigned short float_to_half_bits(float f, int mode = RN) {
    unsigned b; memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        unsigned short r = (unsigned short)(0x7c00u + ((b & 0x7fffffu) >> 13));
        if (r == 0x7c00u) ++r;
        return (unsigned short)(((b >> 16) & 0x8000u) | r);
    }
    return double_to_half_bits((double)f, mode);
}

inline float half_bits_to_float(unsigned short h) {
    const unsigned sign = (unsigned)(h & 0x8000u) << 16;
    const unsigned exp = (h >> 10) & 0x1fu, sig = h & 0x3ffu;
    unsigned bits;
    if (exp == 0x1f) bits = sign | 0x7f800000u | (sig << 13);
    else if (exp == 0) {
        if (sig == 0) bits = sign;
        else { float f = (float)sig * 5.9604644775390625e-08f; memcpy(&bits, &f, 4); bits |= sign; }  // sig * 2^-24
    } else bits = sign | ((exp + 112u) << 23) | (sig << 13);
    float f; memcpy(&f, &bits, 4); return f;
}

inline unsigned short float_to_bf16_bits(float f, int mode = RN) {
    unsigned b; memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    const bool neg = (b >> 31) != 0;
    const unsigned rem = b & 0xffffu;
    unsigned q = b >> 16;
    if (mode == RN) { if (rem > 0x8000u || (rem == 0x8000u && (q & 1))) ++q; }
    else if (((mode == RU && !neg) || (mode == RD && neg)) && rem) ++q;
    return (unsigned short)q;
}
inline unsigned short double_to_bf16_bits(double d) {
    // Round to odd in float (24 >= 8+2 bits), then to nearest even in bf16.
    float f = (float)d;
    if (std::isfinite(f) && (double)f != d) {
        unsigned b; memcpy(&b, &f, 4);
        if (!(b & 1)) {
            if (std::fabs((double)f) > std::fabs(d)) --b; else ++b;
        }
        memcpy(&f, &b, 4);
    }
    return float_to_bf16_bits(f);
}
inline float bf16_bits_to_float(unsigned short h) { unsigned b = (unsigned)h << 16; float f; memcpy(&f, &b, 4); return f; }

// a*b+c for operands that are halves (or bf16), rounded once by `to_bits`.
inline double fma_round_to_odd(double a, double b, double c) {
    const double p = a * b;                                  // exact: 11x11 (8x8) bit significands
    const double s = p + c;
    const double bp = s - p;
    const double e = (p - (s - bp)) + (c - bp);              // s + e == p + c exactly
    if (e != 0.0 && std::isfinite(s)) {
        unsigned long long bits; memcpy(&bits, &s, 8);
        if (!(bits & 1)) bits += ((e > 0) == (s > 0)) ? 1 : (unsigned long long)-1;
        double r; memcpy(&r, &bits, 8); return r;
    }
    return s;
}

}  // namespace gpuconv_sim

struct __half_raw { unsigned short x; };
struct __nv_bfloat16_raw { unsigned short x; };

struct __half {
    unsigned short __x;
    __half() = default;
    constexpr __half(__half_raw r) : __x(r.x) {}
    __half(float f) : __x(::gpuconv_sim::float_to_half_bits(f)) {}
    __half(double d) : __x(::gpuconv_sim::double_to_half_bits(d)) {}
    __half(int v) : __x(::gpuconv_sim::double_to_half_bits((double)v)) {}
    __half(unsigned v) : __x(::gpuconv_sim::double_to_half_bits((double)v)) {}
    __half(long long v) : __x(::gpuconv_sim::double_to_half_bits((double)v)) {}
    __half(unsigned long long v) : __x(::gpuconv_sim::double_to_half_bits((double)v)) {}
    __half(short v) : __x(::gpuconv_sim::double_to_half_bits((double)v)) {}
    __half(unsigned short v) : __x(::gpuconv_sim::double_to_half_bits((double)v)) {}
    operator float() const { return ::gpuconv_sim::half_bits_to_float(__x); }
    operator __half_raw() const { return __half_raw{__x}; }
    __half& operator=(__half_raw r) { __x = r.x; return *this; }
};
typedef __half half;
struct alignas(4) __half2 {
    __half x, y;
    __half2() = default;
    constexpr __half2(__half a, __half b) : x(a), y(b) {}
};
typedef __half2 half2;
struct __half2_raw { unsigned short x, y; };

struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    constexpr __nv_bfloat16(__nv_bfloat16_raw r) : __x(r.x) {}
    __nv_bfloat16(float f) : __x(::gpuconv_sim::float_to_bf16_bits(f)) {}
    __nv_bfloat16(double d) : __x(::gpuconv_sim::double_to_bf16_bits(d)) {}
    __nv_bfloat16(int v) : __x(::gpuconv_sim::double_to_bf16_bits((double)v)) {}
    __nv_bfloat16(unsigned v) : __x(::gpuconv_sim::double_to_bf16_bits((double)v)) {}
    __nv_bfloat16(long long v) : __x(::gpuconv_sim::double_to_bf16_bits((double)v)) {}
    operator float() const { return ::gpuconv_sim::bf16_bits_to_float(__x); }
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
};
typedef __nv_bfloat16 nv_bfloat16;
struct alignas(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
    __nv_bfloat162() = default;
    constexpr __nv_bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) : x(a), y(b) {}
};
typedef __nv_bfloat162 nv_bfloat162;

// ---------------------------------------------------------------- __half conversions
static inline __half gpuconv_sim_mk_half(unsigned short b) { return __half(__half_raw{b}); }
static inline float __half2float(__half h) { return ::gpuconv_sim::half_bits_to_float(h.__x); }
static inline __half __float2half(float f) { return gpuconv_sim_mk_half(::gpuconv_sim::float_to_half_bits(f)); }
static inline __half __float2half_rn(float f) { return __float2half(f); }
static inline __half __float2half_rz(float f) { return gpuconv_sim_mk_half(::gpuconv_sim::float_to_half_bits(f, ::gpuconv_sim::RZ)); }
static inline __half __float2half_rd(float f) { return gpuconv_sim_mk_half(::gpuconv_sim::float_to_half_bits(f, ::gpuconv_sim::RD)); }
static inline __half __float2half_ru(float f) { return gpuconv_sim_mk_half(::gpuconv_sim::float_to_half_bits(f, ::gpuconv_sim::RU)); }
static inline __half __double2half(double d) { return gpuconv_sim_mk_half(::gpuconv_sim::double_to_half_bits(d)); }
static inline __half __int2half_rn(int v) { return __double2half((double)v); }
static inline __half __uint2half_rn(unsigned v) { return __double2half((double)v); }
static inline __half __short2half_rn(short v) { return __double2half((double)v); }
static inline __half __ll2half_rn(long long v) { return __double2half((double)v); }
static inline int __half2int_rz(__half h) { return (int)__half2float(h); }
static inline int __half2int_rn(__half h) { return (int)nearbyintf(__half2float(h)); }
static inline int __half2int_rd(__half h) { return (int)floorf(__half2float(h)); }
static inline int __half2int_ru(__half h) { return (int)ceilf(__half2float(h)); }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
static inline short __half_as_short(__half h) { return (short)h.__x; }
static inline __half __ushort_as_half(unsigned short b) { return gpuconv_sim_mk_half(b); }
static inline __half __short_as_half(short b) { return gpuconv_sim_mk_half((unsigned short)b); }

// ---------------------------------------------------------------- __half arithmetic
#define GPUCONV_SIM_H1(name, expr) \
    static inline __half name(__half a) { const float x = __half2float(a); (void)x; return __float2half(expr); }
#define GPUCONV_SIM_H2(name, expr) \
    static inline __half name(__half a, __half b) { const float x = __half2float(a), y = __half2float(b); return __float2half(expr); }
GPUCONV_SIM_H2(__hadd, x + y)
GPUCONV_SIM_H2(__hsub, x - y)
GPUCONV_SIM_H2(__hmul, x * y)
GPUCONV_SIM_H2(__hdiv, x / y)
GPUCONV_SIM_H2(__hadd_rn, x + y)
GPUCONV_SIM_H2(__hsub_rn, x - y)
GPUCONV_SIM_H2(__hmul_rn, x * y)
GPUCONV_SIM_H2(__hadd_sat, __saturatef(x + y))
GPUCONV_SIM_H2(__hsub_sat, __saturatef(x - y))
GPUCONV_SIM_H2(__hmul_sat, __saturatef(x * y))
GPUCONV_SIM_H2(__hmax, (x != x) ? y : ((y != y) ? x : (x > y ? x : y)))
GPUCONV_SIM_H2(__hmin, (x != x) ? y : ((y != y) ? x : (x < y ? x : y)))
GPUCONV_SIM_H2(__hmax_nan, (x != x || y != y) ? NAN : (x > y ? x : y))
GPUCONV_SIM_H2(__hmin_nan, (x != x || y != y) ? NAN : (x < y ? x : y))
GPUCONV_SIM_H1(hsqrt, sqrtf(x))
GPUCONV_SIM_H1(hrsqrt, 1.0f / sqrtf(x))
GPUCONV_SIM_H1(hrcp, 1.0f / x)
GPUCONV_SIM_H1(hexp, expf(x))
GPUCONV_SIM_H1(hexp2, exp2f(x))
GPUCONV_SIM_H1(hlog, logf(x))
GPUCONV_SIM_H1(hlog2, log2f(x))
GPUCONV_SIM_H1(hsin, sinf(x))
GPUCONV_SIM_H1(hcos, cosf(x))
GPUCONV_SIM_H1(htanh, tanhf(x))
GPUCONV_SIM_H1(hfloor, floorf(x))
GPUCONV_SIM_H1(hceil, ceilf(x))
GPUCONV_SIM_H1(htrunc, truncf(x))
GPUCONV_SIM_H1(hrint, nearbyintf(x))
static inline __half __hneg(__half a) { return gpuconv_sim_mk_half(a.__x ^ 0x8000u); }
static inline __half __habs(__half a) { return gpuconv_sim_mk_half(a.__x & 0x7fffu); }
static inline __half __hfma(__half a, __half b, __half c) {
    return __double2half(::gpuconv_sim::fma_round_to_odd(__half2float(a), __half2float(b), __half2float(c)));
}
static inline __half __hfma_sat(__half a, __half b, __half c) {
    return __float2half(__saturatef(__half2float(__hfma(a, b, c))));
}
static inline __half __hfma_relu(__half a, __half b, __half c) {
    __half r = __hfma(a, b, c); float f = __half2float(r); return (f < 0.0f) ? gpuconv_sim_mk_half(0) : r;
}
static inline bool __hisnan(__half a) { return (a.__x & 0x7fffu) > 0x7c00u; }
static inline int __hisinf(__half a) { return a.__x == 0x7c00u ? 1 : (a.__x == 0xfc00u ? -1 : 0); }
#define GPUCONV_SIM_HCMP(name, op, unordered) \
    static inline bool name(__half a, __half b) { \
        const float x = __half2float(a), y = __half2float(b); \
        return (x != x || y != y) ? unordered : (x op y); }
GPUCONV_SIM_HCMP(__heq, ==, false) GPUCONV_SIM_HCMP(__hne, !=, false) GPUCONV_SIM_HCMP(__hlt, <, false)
GPUCONV_SIM_HCMP(__hle, <=, false) GPUCONV_SIM_HCMP(__hgt, >, false) GPUCONV_SIM_HCMP(__hge, >=, false)
GPUCONV_SIM_HCMP(__hequ, ==, true) GPUCONV_SIM_HCMP(__hneu, !=, true) GPUCONV_SIM_HCMP(__hltu, <, true)
GPUCONV_SIM_HCMP(__hleu, <=, true) GPUCONV_SIM_HCMP(__hgtu, >, true) GPUCONV_SIM_HCMP(__hgeu, >=, true)

static inline __half operator+(__half a, __half b) { return __hadd(a, b); }
static inline __half operator-(__half a, __half b) { return __hsub(a, b); }
static inline __half operator*(__half a, __half b) { return __hmul(a, b); }
static inline __half operator/(__half a, __half b) { return __hdiv(a, b); }
static inline __half operator-(__half a) { return __hneg(a); }
static inline __half operator+(__half a) { return a; }
static inline __half& operator+=(__half& a, __half b) { return a = __hadd(a, b); }
static inline __half& operator-=(__half& a, __half b) { return a = __hsub(a, b); }
static inline __half& operator*=(__half& a, __half b) { return a = __hmul(a, b); }
static inline __half& operator/=(__half& a, __half b) { return a = __hdiv(a, b); }
static inline bool operator==(__half a, __half b) { return __heq(a, b); }
static inline bool operator!=(__half a, __half b) { return __hneu(a, b); }
static inline bool operator<(__half a, __half b) { return __hlt(a, b); }
static inline bool operator<=(__half a, __half b) { return __hle(a, b); }
static inline bool operator>(__half a, __half b) { return __hgt(a, b); }
static inline bool operator>=(__half a, __half b) { return __hge(a, b); }

// ---------------------------------------------------------------- __half2
static inline __half2 __halves2half2(__half a, __half b) { return __half2(a, b); }
static inline __half2 make_half2(__half a, __half b) { return __half2(a, b); }
static inline __half2 __half2half2(__half a) { return __half2(a, a); }
static inline __half2 __float2half2_rn(float a) { return __half2(__float2half(a), __float2half(a)); }
static inline __half2 __floats2half2_rn(float a, float b) { return __half2(__float2half(a), __float2half(b)); }
static inline __half2 __float22half2_rn(float2 f) { return __half2(__float2half(f.x), __float2half(f.y)); }
static inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
static inline __half __low2half(__half2 h) { return h.x; }
static inline __half __high2half(__half2 h) { return h.y; }
static inline float __low2float(__half2 h) { return __half2float(h.x); }
static inline float __high2float(__half2 h) { return __half2float(h.y); }
static inline __half2 __lows2half2(__half2 a, __half2 b) { return __half2(a.x, b.x); }
static inline __half2 __highs2half2(__half2 a, __half2 b) { return __half2(a.y, b.y); }
static inline __half2 __low2half2(__half2 a) { return __half2(a.x, a.x); }
static inline __half2 __high2half2(__half2 a) { return __half2(a.y, a.y); }
static inline __half2 __lowhigh2highlow(__half2 a) { return __half2(a.y, a.x); }
#define GPUCONV_SIM_H2OP(name, f) \
    static inline __half2 name(__half2 a, __half2 b) { return __half2(f(a.x, b.x), f(a.y, b.y)); }
GPUCONV_SIM_H2OP(__hadd2, __hadd) GPUCONV_SIM_H2OP(__hsub2, __hsub) GPUCONV_SIM_H2OP(__hmul2, __hmul)
GPUCONV_SIM_H2OP(__h2div, __hdiv) GPUCONV_SIM_H2OP(__hmax2, __hmax) GPUCONV_SIM_H2OP(__hmin2, __hmin)
GPUCONV_SIM_H2OP(__hadd2_sat, __hadd_sat) GPUCONV_SIM_H2OP(__hmul2_sat, __hmul_sat)
static inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) { return __half2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)); }
static inline __half2 __hneg2(__half2 a) { return __half2(__hneg(a.x), __hneg(a.y)); }
static inline __half2 __habs2(__half2 a) { return __half2(__habs(a.x), __habs(a.y)); }
static inline __half2 operator+(__half2 a, __half2 b) { return __hadd2(a, b); }
static inline __half2 operator-(__half2 a, __half2 b) { return __hsub2(a, b); }
static inline __half2 operator*(__half2 a, __half2 b) { return __hmul2(a, b); }
static inline __half2 operator/(__half2 a, __half2 b) { return __h2div(a, b); }
static inline __half2& operator+=(__half2& a, __half2 b) { return a = __hadd2(a, b); }
static inline __half2& operator*=(__half2& a, __half2 b) { return a = __hmul2(a, b); }

GPUCONV_SIM_ATOMIC static inline __half atomicAdd(__half* p, __half v) { __half o = *p; *p = __hadd(o, v); return o; }
GPUCONV_SIM_ATOMIC static inline __half2 atomicAdd(__half2* p, __half2 v) { __half2 o = *p; *p = __hadd2(o, v); return o; }

// ---------------------------------------------------------------- __nv_bfloat16
static inline __nv_bfloat16 gpuconv_sim_mk_bf16(unsigned short b) { return __nv_bfloat16(__nv_bfloat16_raw{b}); }
static inline float __bfloat162float(__nv_bfloat16 h) { return ::gpuconv_sim::bf16_bits_to_float(h.__x); }
static inline __nv_bfloat16 __float2bfloat16(float f) { return gpuconv_sim_mk_bf16(::gpuconv_sim::float_to_bf16_bits(f)); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
static inline __nv_bfloat16 __float2bfloat16_rz(float f) { return gpuconv_sim_mk_bf16(::gpuconv_sim::float_to_bf16_bits(f, ::gpuconv_sim::RZ)); }
static inline __nv_bfloat16 __float2bfloat16_rd(float f) { return gpuconv_sim_mk_bf16(::gpuconv_sim::float_to_bf16_bits(f, ::gpuconv_sim::RD)); }
static inline __nv_bfloat16 __float2bfloat16_ru(float f) { return gpuconv_sim_mk_bf16(::gpuconv_sim::float_to_bf16_bits(f, ::gpuconv_sim::RU)); }
static inline __nv_bfloat16 __double2bfloat16(double d) { return gpuconv_sim_mk_bf16(::gpuconv_sim::double_to_bf16_bits(d)); }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { return gpuconv_sim_mk_bf16(b); }
static inline __half __bfloat162half(__nv_bfloat16 h) { return __float2half(__bfloat162float(h)); }
#define GPUCONV_SIM_B2(name, expr) \
    static inline __nv_bfloat16 name(__nv_bfloat16 a, __nv_bfloat16 b) { \
        const float x = __bfloat162float(a), y = __bfloat162float(b); return __double2bfloat16(expr); }
GPUCONV_SIM_B2(__hadd, (double)x + y)
GPUCONV_SIM_B2(__hsub, (double)x - y)
GPUCONV_SIM_B2(__hmul, (double)x * y)
GPUCONV_SIM_B2(__hdiv, (double)x / y)
GPUCONV_SIM_B2(__hmax, (x != x) ? y : ((y != y) ? x : (x > y ? x : y)))
GPUCONV_SIM_B2(__hmin, (x != x) ? y : ((y != y) ? x : (x < y ? x : y)))
static inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
    return __double2bfloat16(::gpuconv_sim::fma_round_to_odd(__bfloat162float(a), __bfloat162float(b), __bfloat162float(c)));
}
static inline __nv_bfloat16 __hneg(__nv_bfloat16 a) { return gpuconv_sim_mk_bf16(a.__x ^ 0x8000u); }
static inline __nv_bfloat16 __habs(__nv_bfloat16 a) { return gpuconv_sim_mk_bf16(a.__x & 0x7fffu); }
static inline __nv_bfloat16 operator+(__nv_bfloat16 a, __nv_bfloat16 b) { return __hadd(a, b); }
static inline __nv_bfloat16 operator-(__nv_bfloat16 a, __nv_bfloat16 b) { return __hsub(a, b); }
static inline __nv_bfloat16 operator*(__nv_bfloat16 a, __nv_bfloat16 b) { return __hmul(a, b); }
static inline __nv_bfloat16 operator/(__nv_bfloat16 a, __nv_bfloat16 b) { return __hdiv(a, b); }
static inline __nv_bfloat16 operator-(__nv_bfloat16 a) { return __hneg(a); }
static inline __nv_bfloat16& operator+=(__nv_bfloat16& a, __nv_bfloat16 b) { return a = __hadd(a, b); }
static inline __nv_bfloat16& operator*=(__nv_bfloat16& a, __nv_bfloat16 b) { return a = __hmul(a, b); }
static inline bool operator<(__nv_bfloat16 a, __nv_bfloat16 b) { return __bfloat162float(a) < __bfloat162float(b); }
static inline bool operator>(__nv_bfloat16 a, __nv_bfloat16 b) { return __bfloat162float(a) > __bfloat162float(b); }
static inline bool operator<=(__nv_bfloat16 a, __nv_bfloat16 b) { return __bfloat162float(a) <= __bfloat162float(b); }
static inline bool operator>=(__nv_bfloat16 a, __nv_bfloat16 b) { return __bfloat162float(a) >= __bfloat162float(b); }
static inline bool operator==(__nv_bfloat16 a, __nv_bfloat16 b) { return __bfloat162float(a) == __bfloat162float(b); }
static inline bool operator!=(__nv_bfloat16 a, __nv_bfloat16 b) { return __bfloat162float(a) != __bfloat162float(b); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return __nv_bfloat162(__float2bfloat16(a), __float2bfloat16(b)); }
static inline __nv_bfloat162 __float2bfloat162_rn(float a) { return __floats2bfloat162_rn(a, a); }
static inline float2 __bfloat1622float2(__nv_bfloat162 h) { return make_float2(__bfloat162float(h.x), __bfloat162float(h.y)); }
static inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162(a, b); }
static inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
    return __nv_bfloat162(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y));
}
GPUCONV_SIM_ATOMIC static inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) { __nv_bfloat16 o = *p; *p = __hadd(o, v); return o; }
