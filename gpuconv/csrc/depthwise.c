/* Depthwise convolution (one input channel per group, any multiplier) for the
 * CPU path, compiled at first use by gpuconv._native with the machine's C
 * compiler (-O3 -march=native) and called through ctypes, which releases the
 * GIL: the caller splits the planes over its thread pool.
 *
 * Layouts (C order, contiguous):
 *   x    (N, G, D, H, W)            the input, unpadded
 *   w    (G, KG, KD, KH, KW)        KG outputs per input channel
 *   bias (G * KG) or NULL
 *   y    (N, G, KG, OD, OH, OW)
 * 1-D and 2-D convolutions pass D = KD = 1 (and H = KH = 1).
 *
 * A call computes the planes i in [i0, i1), plane i being (n, g) = (i / G, i % G).
 * Each plane is first copied into a zero-bordered buffer (the padding; the
 * border is zeroed once per call, every plane then writes only the interior)
 * whose rows hold the sw column phases of the padded row one after another,
 * Wq = ceil(Wp / sw) each: padded column k*sw + f sits at f*Wq + k.  Tap
 * (t, r, s) of output row (od, oh) then reads row (od*sd + t*dd, oh*sh + r*dh)
 * from phase (s*dw) % sw, column (s*dw) / sw on, contiguously in ow, whatever
 * the stride, so the compiler vectorises every tap loop (8x144x56x56 3x3
 * stride 2, one core: strided reads 3.8 ms, phases 2.3 ms).  Every output row
 * is accumulated in place (it stays in L1) over the kernel taps; width-3
 * kernel rows are unrolled (one load and store of the output row per kernel
 * row instead of per tap), and a 2-D 3x3 kernel computes each output row in
 * one expression (8x128x56x56 float32, 2 cores: 1.95 -> 1.73 ms).
 * The accumulation order is always bias, then taps in (t, r, s) order.
 *
 * Returns 0, or -1 when the padded-plane buffer cannot be allocated.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef ptrdiff_t idx;

#define DEFINE_DEPTHWISE(NAME, T)                                                      \
int NAME(const T *restrict x, const T *restrict w, const T *restrict bias,            \
         T *restrict y, idx i0, idx i1, idx G, idx KG,                                 \
         idx D, idx H, idx W, idx KD, idx KH, idx KW, idx OD, idx OH, idx OW,          \
         idx sd, idx sh, idx sw, idx pd, idx ph, idx pw,                               \
         idx pd_hi, idx ph_hi, idx pw_hi, idx dd, idx dh, idx dw)                      \
{                                                                                      \
    const idx Dp = D + pd + pd_hi, Hp = H + ph + ph_hi, Wp = W + pw + pw_hi;           \
    const idx Wq = (Wp + sw - 1) / sw, Wr = sw * Wq;   /* phase width, row length */  \
    const idx plane_in = D * H * W, plane_out = OD * OH * OW;                          \
    const idx taps = KD * KH * KW;                                                     \
    T *buf = (T *)malloc((size_t)(Dp * Hp * Wr) * sizeof(T));                          \
    if (buf == NULL) return -1;                                                        \
    memset(buf, 0, (size_t)(Dp * Hp * Wr) * sizeof(T));                                \
    for (idx i = i0; i < i1; ++i) {                                                    \
        const idx g = i % G;                                                           \
        const T *src = x + i * plane_in;                                               \
        /* the interior only: the border stays zero from the first memset */          \
        for (idx d = 0; d < D; ++d)                                                    \
            for (idx h = 0; h < H; ++h) {                                              \
                T *row = buf + ((d + pd) * Hp + h + ph) * Wr;                          \
                const T *in = src + (d * H + h) * W;                                   \
                if (sw == 1) {                                                         \
                    memcpy(row + pw, in, (size_t)W * sizeof(T));                       \
                    continue;                                                          \
                }                                                                      \
                for (idx f = 0; f < sw; ++f) {   /* phase f: padded columns k*sw + f */ \
                    T *dstp = row + f * Wq;                                            \
                    const idx off = f - pw;            /* input column k*sw + off */   \
                    idx lo = off >= 0 ? 0 : (-off + sw - 1) / sw;                      \
                    idx hi = W - 1 - off >= 0 ? (W - 1 - off) / sw + 1 : 0;            \
                    if (hi > Wq) hi = Wq;                                              \
                    if (lo > hi) lo = hi;                                              \
                    for (idx k = 0; k < lo; ++k) dstp[k] = (T)0;                       \
                    if (sw == 2)                       /* a constant stride vectorises */ \
                        for (idx k = lo; k < hi; ++k) dstp[k] = in[2 * k + off];       \
                    else                                                               \
                        for (idx k = lo; k < hi; ++k) dstp[k] = in[k * sw + off];      \
                    for (idx k = hi; k < Wq; ++k) dstp[k] = (T)0;                      \
                }                                                                      \
            }                                                                          \
        for (idx k = 0; k < KG; ++k) {                                                 \
            const T *wk = w + (g * KG + k) * taps;                                     \
            const T b = bias ? bias[g * KG + k] : (T)0;                                \
            T *dst = y + (i * KG + k) * plane_out;                                     \
            for (idx od = 0; od < OD; ++od)                                            \
            for (idx oh = 0; oh < OH; ++oh) {                                          \
                T *restrict row = dst + (od * OH + oh) * OW;                           \
                /* tap (t, r, s) reads row od*sd + t*dd, oh*sh + r*dh, phase         \
                   (s*dw) % sw from column (s*dw) / sw on: contiguous in ow */         \
                if (KD == 1 && KH == 3 && KW == 3) {                                   \
                    const T *r0 = buf + (od * sd * Hp + oh * sh) * Wr;                 \
                    const T *r1 = r0 + dh * Wr, *r2 = r1 + dh * Wr;                    \
                    const idx o1 = (dw % sw) * Wq + dw / sw;                           \
                    const idx o2 = (2 * dw % sw) * Wq + 2 * dw / sw;                   \
                    const T *wr = wk;                                                  \
                    for (idx q = 0; q < OW; ++q)                                       \
                        row[q] = b + wr[0] * r0[q] + wr[1] * r0[q + o1]                \
                                   + wr[2] * r0[q + o2] + wr[3] * r1[q]                \
                                   + wr[4] * r1[q + o1] + wr[5] * r1[q + o2]           \
                                   + wr[6] * r2[q] + wr[7] * r2[q + o1]                \
                                   + wr[8] * r2[q + o2];                               \
                    continue;                                                          \
                }                                                                      \
                for (idx q = 0; q < OW; ++q) row[q] = b;                               \
                for (idx t = 0; t < KD; ++t)                                           \
                for (idx r = 0; r < KH; ++r) {                                         \
                    const T *in = buf + ((od * sd + t * dd) * Hp + oh * sh + r * dh) * Wr; \
                    const T *wr = wk + (t * KH + r) * KW;                              \
                    if (KW == 3) {                                                     \
                        const T w0 = wr[0], w1 = wr[1], w2 = wr[2];                    \
                        const T *a = in, *bb = in + (dw % sw) * Wq + dw / sw;          \
                        const T *c = in + (2 * dw % sw) * Wq + 2 * dw / sw;            \
                        for (idx q = 0; q < OW; ++q)                                   \
                            row[q] = ((row[q] + w0 * a[q]) + w1 * bb[q]) + w2 * c[q];  \
                    } else {                                                           \
                        for (idx s = 0; s < KW; ++s) {                                 \
                            const T ws = wr[s];                                        \
                            const T *a = in + (s * dw % sw) * Wq + s * dw / sw;        \
                            for (idx q = 0; q < OW; ++q) row[q] += ws * a[q];          \
                        }                                                              \
                    }                                                                  \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    free(buf);                                                                         \
    return 0;                                                                          \
}

DEFINE_DEPTHWISE(gpuconv_depthwise_f32, float)
DEFINE_DEPTHWISE(gpuconv_depthwise_f64, double)
