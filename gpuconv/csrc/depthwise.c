/* Depthwise convolution (one input channel per group, any multiplier) for the
 * CPU path: the forward pass and its two adjoints (the weight gradient and the
 * input gradient, which is also the transposed convolution).  Compiled at
 * first use by gpuconv._native with the machine's C compiler
 * (-O3 -march=native) and called through ctypes, which releases the GIL: the
 * caller splits the planes (or groups) over its thread pool.
 *
 * Layouts (C order, contiguous):
 *   x    (N, G, D, H, W)            the forward input, unpadded
 *   w    (G, KG, KD, KH, KW)        KG outputs per input channel
 *   bias (G * KG) or NULL
 *   y    (N, G, KG, OD, OH, OW)     the forward output (dy: its gradient)
 * 1-D and 2-D convolutions pass D = KD = 1 (and H = KH = 1).  The geometry is
 * that of the forward convolution in every kernel.
 *
 * The padded input plane lives in a buffer whose rows hold the sw column
 * phases of the padded row one after another, Wq = ceil(Wp / sw) each: padded
 * column k*sw + f sits at f*Wq + k.  Tap (t, r, s) of output row (od, oh) then
 * touches row (od*sd + t*dd, oh*sh + r*dh) from phase (s*dw) % sw, column
 * (s*dw) / sw on, contiguously in ow, whatever the stride, so the compiler
 * vectorises every tap loop (8x144x56x56 3x3 stride 2, one core: strided reads
 * 3.8 ms, phases 2.3 ms).  The border is zeroed once per call and a plane
 * rewrites only the interior (the input gradient, which accumulates into the
 * buffer, zeroes it per plane).  The lanes forms keep 8 groups' planes
 * interleaved position by position instead, with no column phases.
 *
 * Padding modes (pmode, ConvSpec.padding_mode_code: 0 zeros, 1 reflect,
 * 2 replicate, 3 circular): the forward and the weight gradient read the input
 * extended by the mode, so a non-zero mode fills the border rows and columns
 * of the buffer per plane from the plane itself through pad_index (the
 * border's elements, one row of the plane per border row: no padded copy of
 * the input).  The input gradient is the adjoint of zero padding only; its
 * caller refuses other modes.
 *
 * forward: every output row is accumulated in place (it stays in L1) over the
 *   taps; width-3 kernel rows are unrolled (one load and store of the output
 *   row per kernel row instead of per tap), and a 2-D 3x3 kernel computes each
 *   output row in one expression (8x128x56x56 float32, 2 cores: 1.95 ->
 *   1.73 ms).  Order: bias, then taps in (t, r, s) order.
 * forward, 8 lanes (DEFINE_FORWARD_LANES): 8 groups side by side in the vector
 *   lanes, for rows too short to vectorise along.
 * weight gradient: per group, over images, output rows and taps, dy rows
 *   times the input rows the tap read, in 8 lanes of T per tap kept over a
 *   whole plane (the lanes live in registers along a row), the lanes and the
 *   row tails summed in double per plane: a fixed order, so deterministic
 *   (8x128x56x56 3x3, 2 cores: a double sum per row 2.9 ms, per plane 2.1).
 * weight gradient, 8 lanes (DEFINE_WGRAD_LANES): the same with 8 groups in
 *   the vector lanes.
 * input gradient: the forward's scatter: each dy row times the tap weight is
 *   added into the padded buffer where the forward read, then the interior is
 *   read back out of the phases.  Order per element: k, od, oh, t, r, s.
 *   DEFINE_DGRAD_LANES: the same with 8 groups in the vector lanes.
 * The lanes forms are chosen by gpuconv.cpu.depthwise_kernel.
 *
 * Each returns 0, or -1 when a buffer cannot be allocated.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef ptrdiff_t idx;

typedef struct {
    idx D, H, W, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw, dd, dh, dw, pmode;
    idx Dp, Hp, Wp, Wq, Wr, buf_len, plane_in, plane_out, taps;
} geom;

#define GEOM_PARAMS idx D, idx H, idx W, idx KD, idx KH, idx KW, idx OD, idx OH, idx OW,       \
                    idx sd, idx sh, idx sw, idx pd, idx ph, idx pw,                           \
                    idx pd_hi, idx ph_hi, idx pw_hi, idx dd, idx dh, idx dw, idx pmode
#define GEOM_ARGS D, H, W, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw, pd_hi, ph_hi, pw_hi, \
                  dd, dh, dw, pmode

/* The input index that padded position i (0 <= i < n inside) reads in mode
 * pmode != 0, every period resolved (reflect: period 2n - 2, the edge not
 * repeated; replicate: the edge; circular: period n), as np.pad's reflect, edge
 * and wrap: positions past the padded extent (junk columns of the phases) map
 * inside too. */
static inline idx pad_index(idx i, idx n, idx pmode)
{
    if (i >= 0 && i < n) return i;
    if (pmode == 2) return i < 0 ? 0 : n - 1;
    const idx p = pmode == 1 ? 2 * n - 2 : n;
    if (p == 0) return 0;                               /* reflect of one element */
    idx u = i % p;
    if (u < 0) u += p;
    return u < n ? u : p - u;
}

static geom make_geom(GEOM_PARAMS)
{
    geom g = {D, H, W, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw, dd, dh, dw, pmode,
              0, 0, 0, 0, 0, 0, 0, 0, 0};
    g.Dp = D + pd + pd_hi;
    g.Hp = H + ph + ph_hi;
    g.Wp = W + pw + pw_hi;
    g.Wq = (g.Wp + sw - 1) / sw;
    g.Wr = sw * g.Wq;
    g.buf_len = g.Dp * g.Hp * g.Wr;
    g.plane_in = D * H * W;
    g.plane_out = OD * OH * OW;
    g.taps = KD * KH * KW;
    return g;
}

/* Row of padded depth od*sd + t*dd and padded height oh*sh + r*dh. */
static inline idx row_at(const geom *g, idx od, idx t, idx oh, idx r)
{
    return ((od * g->sd + t * g->dd) * g->Hp + oh * g->sh + r * g->dh) * g->Wr;
}

/* Offset, within a row, of tap column s: phase (s*dw) % sw, column (s*dw) / sw. */
static inline idx col_at(const geom *g, idx s)
{
    return (s * g->dw % g->sw) * g->Wq + s * g->dw / g->sw;
}

/* Columns k of phase f hold input column k*sw + f - pw: [lo, hi) of them exist. */
static inline void phase_range(const geom *g, idx f, idx *lo, idx *hi)
{
    const idx off = f - g->pw;
    idx a = off >= 0 ? 0 : (-off + g->sw - 1) / g->sw;
    idx b = g->W - 1 - off >= 0 ? (g->W - 1 - off) / g->sw + 1 : 0;
    if (b > g->Wq) b = g->Wq;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

#define DEFINE_HELPERS(SUF, T)                                                         \
/* Copy plane src (D, H, W) into buf, split into column phases: the interior    \
   (zeros mode; the border stays as zeroed), or every row and column, the border \
   read through pad_index (other modes). */                                         \
static void to_phases_##SUF(T *restrict buf, const T *restrict src, const geom *g)    \
{                                                                                      \
    const int all = g->pmode != 0;                                                     \
    const idx d0 = all ? 0 : g->pd, d1 = all ? g->Dp : g->pd + g->D;                   \
    const idx h0 = all ? 0 : g->ph, h1 = all ? g->Hp : g->ph + g->H;                   \
    for (idx dp = d0; dp < d1; ++dp)                                                   \
        for (idx hp = h0; hp < h1; ++hp) {                                             \
            T *row = buf + (dp * g->Hp + hp) * g->Wr;                                  \
            const idx d = pad_index(dp - g->pd, g->D, g->pmode);                       \
            const idx h = pad_index(hp - g->ph, g->H, g->pmode);                       \
            const T *in = src + (d * g->H + h) * g->W;                                 \
            if (g->sw == 1) {                                                          \
                memcpy(row + g->pw, in, (size_t)g->W * sizeof(T));                     \
                if (all) {                                                             \
                    for (idx c = 0; c < g->pw; ++c)                                    \
                        row[c] = in[pad_index(c - g->pw, g->W, g->pmode)];             \
                    for (idx c = g->pw + g->W; c < g->Wr; ++c)                         \
                        row[c] = in[pad_index(c - g->pw, g->W, g->pmode)];             \
                }                                                                      \
                continue;                                                              \
            }                                                                          \
            for (idx f = 0; f < g->sw; ++f) {                                          \
                T *ph = row + f * g->Wq;                                               \
                const idx off = f - g->pw;                                             \
                idx lo, hi;                                                            \
                phase_range(g, f, &lo, &hi);                                           \
                for (idx k = 0; k < lo; ++k)                                           \
                    ph[k] = all ? in[pad_index(k * g->sw + off, g->W, g->pmode)] : (T)0; \
                if (g->sw == 2)                    /* a constant stride vectorises */  \
                    for (idx k = lo; k < hi; ++k) ph[k] = in[2 * k + off];             \
                else                                                                   \
                    for (idx k = lo; k < hi; ++k) ph[k] = in[k * g->sw + off];         \
                for (idx k = hi; k < g->Wq; ++k)                                       \
                    ph[k] = all ? in[pad_index(k * g->sw + off, g->W, g->pmode)] : (T)0; \
            }                                                                          \
        }                                                                              \
}                                                                                      \
                                                                                       \
/* Planes first .. first + lanes - 1 of x (each D, H, W) into the interleaved  \
   buffer in (Dp, Hp, Wp, 8): the interior (zeros mode), or every position, the  \
   border read through pad_index (other modes); lanes past `lanes` hold zeros. */   \
static void to_lanes_##SUF(T *restrict in, const T *restrict x, idx first, idx lanes, \
                           const geom *g)                                              \
{                                                                                      \
    enum { V = 8 };                                                                    \
    const int all = g->pmode != 0;                                                     \
    const idx d0 = all ? 0 : g->pd, d1 = all ? g->Dp : g->pd + g->D;                   \
    const idx h0 = all ? 0 : g->ph, h1 = all ? g->Hp : g->ph + g->H;                   \
    for (idx dp = d0; dp < d1; ++dp)                                                   \
        for (idx hp = h0; hp < h1; ++hp) {                                             \
            T *dst = in + ((dp * g->Hp + hp) * g->Wp + g->pw) * V;                     \
            const idx d = pad_index(dp - g->pd, g->D, g->pmode);                       \
            const idx h = pad_index(hp - g->ph, g->H, g->pmode);                       \
            const T *src = x + first * g->plane_in + (d * g->H + h) * g->W;            \
            if (lanes == V) {                                                          \
                for (idx c = 0; c < g->W; ++c)                                         \
                    for (idx j = 0; j < V; ++j) dst[c * V + j] = src[j * g->plane_in + c]; \
            } else {                              /* no load from past the array */    \
                for (idx c = 0; c < g->W * V; ++c) dst[c] = (T)0;                      \
                for (idx j = 0; j < lanes; ++j)                                        \
                    for (idx c = 0; c < g->W; ++c) dst[c * V + j] = src[j * g->plane_in + c]; \
            }                                                                          \
            if (!all) continue;                                                        \
            for (int side = 0; side < 2; ++side) {     /* the border columns */        \
                const idx c0 = side ? g->W : -g->pw, c1 = side ? g->Wp - g->pw : 0;    \
                for (idx c = c0; c < c1; ++c) {                                        \
                    const idx sc = pad_index(c, g->W, g->pmode);                       \
                    for (idx j = 0; j < V; ++j)                                        \
                        dst[c * V + j] = j < lanes ? src[j * g->plane_in + sc] : (T)0; \
                }                                                                      \
            }                                                                          \
        }                                                                              \
}                                                                                      \
                                                                                       \
/* The inverse: the interior of buf back into plane dst (D, H, W). */                 \
static void from_phases_##SUF(T *restrict dst, const T *restrict buf, const geom *g)  \
{                                                                                      \
    for (idx d = 0; d < g->D; ++d)                                                     \
        for (idx h = 0; h < g->H; ++h) {                                               \
            const T *row = buf + ((d + g->pd) * g->Hp + h + g->ph) * g->Wr;            \
            T *out = dst + (d * g->H + h) * g->W;                                      \
            if (g->sw == 1) {                                                          \
                memcpy(out, row + g->pw, (size_t)g->W * sizeof(T));                    \
                continue;                                                              \
            }                                                                          \
            for (idx f = 0; f < g->sw; ++f) {                                          \
                const T *ph = row + f * g->Wq;                                         \
                const idx off = f - g->pw;                                             \
                idx lo, hi;                                                            \
                phase_range(g, f, &lo, &hi);                                           \
                if (g->sw == 2)                                                        \
                    for (idx k = lo; k < hi; ++k) out[2 * k + off] = ph[k];            \
                else                                                                   \
                    for (idx k = lo; k < hi; ++k) out[k * g->sw + off] = ph[k];        \
            }                                                                          \
        }                                                                              \
}

#define DEFINE_FORWARD(NAME, SUF, T)                                                   \
int NAME(const T *restrict x, const T *restrict w, const T *restrict bias,            \
         T *restrict y, idx i0, idx i1, idx G, idx KG, GEOM_PARAMS)                    \
{                                                                                      \
    const geom gm = make_geom(GEOM_ARGS);                                              \
    const geom *g = &gm;                                                               \
    T *buf = (T *)calloc((size_t)gm.buf_len, sizeof(T));                               \
    if (buf == NULL) return -1;                                                        \
    for (idx i = i0; i < i1; ++i) {                                                    \
        const idx grp = i % G;                                                         \
        to_phases_##SUF(buf, x + i * gm.plane_in, g);                                  \
        for (idx k = 0; k < KG; ++k) {                                                 \
            const T *wk = w + (grp * KG + k) * gm.taps;                                \
            const T b = bias ? bias[grp * KG + k] : (T)0;                              \
            T *dst = y + (i * KG + k) * gm.plane_out;                                  \
            for (idx od = 0; od < OD; ++od)                                            \
            for (idx oh = 0; oh < OH; ++oh) {                                          \
                T *restrict row = dst + (od * OH + oh) * OW;                           \
                if (KD == 1 && KH == 3 && KW == 3) {                                   \
                    const T *r0 = buf + row_at(g, od, 0, oh, 0);                       \
                    const T *r1 = buf + row_at(g, od, 0, oh, 1);                       \
                    const T *r2 = buf + row_at(g, od, 0, oh, 2);                       \
                    const idx o1 = col_at(g, 1), o2 = col_at(g, 2);                    \
                    for (idx q = 0; q < OW; ++q)                                       \
                        row[q] = b + wk[0] * r0[q] + wk[1] * r0[q + o1]                \
                                   + wk[2] * r0[q + o2] + wk[3] * r1[q]                \
                                   + wk[4] * r1[q + o1] + wk[5] * r1[q + o2]           \
                                   + wk[6] * r2[q] + wk[7] * r2[q + o1]                \
                                   + wk[8] * r2[q + o2];                               \
                    continue;                                                          \
                }                                                                      \
                for (idx q = 0; q < OW; ++q) row[q] = b;                               \
                for (idx t = 0; t < KD; ++t)                                           \
                for (idx r = 0; r < KH; ++r) {                                         \
                    const T *in = buf + row_at(g, od, t, oh, r);                       \
                    const T *wr = wk + (t * KH + r) * KW;                              \
                    if (KW == 3) {                                                     \
                        const T *a = in, *bb = in + col_at(g, 1), *c = in + col_at(g, 2); \
                        for (idx q = 0; q < OW; ++q)                                   \
                            row[q] = ((row[q] + wr[0] * a[q]) + wr[1] * bb[q]) + wr[2] * c[q]; \
                    } else {                                                           \
                        for (idx s = 0; s < KW; ++s) {                                 \
                            const T ws = wr[s];                                        \
                            const T *a = in + col_at(g, s);                            \
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

/* gw (G, KG, taps) for the groups [g0, g1), over all N images. */
#define DEFINE_WGRAD(NAME, SUF, T)                                                     \
int NAME(const T *restrict x, const T *restrict dy, T *restrict gw,                   \
         idx N, idx g0, idx g1, idx G, idx KG, GEOM_PARAMS)                            \
{                                                                                      \
    const geom gm = make_geom(GEOM_ARGS);                                              \
    const geom *g = &gm;                                                               \
    const idx OW8 = OW - OW % 8;                                                       \
    T *buf = (T *)calloc((size_t)gm.buf_len, sizeof(T));                               \
    double *acc = (double *)malloc((size_t)(KG * gm.taps) * sizeof(double));           \
    T *lane = (T *)malloc((size_t)(gm.taps * 8) * sizeof(T));                          \
    if (buf == NULL || acc == NULL || lane == NULL) {                                  \
        free(buf); free(acc); free(lane); return -1;                                   \
    }                                                                                  \
    for (idx grp = g0; grp < g1; ++grp) {                                              \
        for (idx j = 0; j < KG * gm.taps; ++j) acc[j] = 0.0;                           \
        for (idx n = 0; n < N; ++n) {                                                  \
            const idx i = n * G + grp;                                                 \
            to_phases_##SUF(buf, x + i * gm.plane_in, g);                              \
            for (idx k = 0; k < KG; ++k) {                                             \
                const T *dyp = dy + (i * KG + k) * gm.plane_out;                       \
                double *a = acc + k * gm.taps;                                         \
                for (idx j = 0; j < gm.taps * 8; ++j) lane[j] = (T)0;                  \
                for (idx od = 0; od < OD; ++od)                                        \
                for (idx oh = 0; oh < OH; ++oh) {                                      \
                    const T *drow = dyp + (od * OH + oh) * OW;                         \
                    for (idx t = 0; t < KD; ++t)                                       \
                    for (idx r = 0; r < KH; ++r) {                                     \
                        const T *in = buf + row_at(g, od, t, oh, r);                   \
                        for (idx s = 0; s < KW; ++s) {                                 \
                            const idx tap = (t * KH + r) * KW + s;                     \
                            const T *b = in + col_at(g, s);                            \
                            T *L = lane + tap * 8, l[8];     /* in registers */       \
                            for (int j = 0; j < 8; ++j) l[j] = L[j];                   \
                            for (idx q = 0; q < OW8; q += 8)                           \
                                for (int j = 0; j < 8; ++j) l[j] += drow[q + j] * b[q + j]; \
                            for (int j = 0; j < 8; ++j) L[j] = l[j];                   \
                            for (idx q = OW8; q < OW; ++q)                             \
                                a[tap] += (double)drow[q] * (double)b[q];              \
                        }                                                              \
                    }                                                                  \
                }                                                                      \
                for (idx tap = 0; tap < gm.taps; ++tap)                                \
                    for (int j = 0; j < 8; ++j) a[tap] += (double)lane[tap * 8 + j];   \
            }                                                                          \
        }                                                                              \
        for (idx j = 0; j < KG * gm.taps; ++j) gw[grp * KG * gm.taps + j] = (T)acc[j];  \
    }                                                                                  \
    free(buf);                                                                         \
    free(acc);                                                                         \
    free(lane);                                                                        \
    return 0;                                                                          \
}

/* dx (N, G, D, H, W) for the planes [i0, i1) from dy and w. */
#define DEFINE_DGRAD(NAME, SUF, T)                                                     \
int NAME(const T *restrict dy, const T *restrict w, T *restrict dx,                   \
         idx i0, idx i1, idx G, idx KG, GEOM_PARAMS)                                   \
{                                                                                      \
    const geom gm = make_geom(GEOM_ARGS);                                              \
    const geom *g = &gm;                                                               \
    T *buf = (T *)malloc((size_t)gm.buf_len * sizeof(T));                              \
    if (buf == NULL) return -1;                                                        \
    for (idx i = i0; i < i1; ++i) {                                                    \
        const idx grp = i % G;                                                         \
        memset(buf, 0, (size_t)gm.buf_len * sizeof(T));                               \
        for (idx k = 0; k < KG; ++k) {                                                 \
            const T *wk = w + (grp * KG + k) * gm.taps;                                \
            const T *dyp = dy + (i * KG + k) * gm.plane_out;                           \
            for (idx od = 0; od < OD; ++od)                                            \
            for (idx oh = 0; oh < OH; ++oh) {                                          \
                const T *restrict drow = dyp + (od * OH + oh) * OW;                    \
                for (idx t = 0; t < KD; ++t)                                           \
                for (idx r = 0; r < KH; ++r) {                                         \
                    T *brow = buf + row_at(g, od, t, oh, r);                           \
                    for (idx s = 0; s < KW; ++s) {                                     \
                        const T ws = wk[(t * KH + r) * KW + s];                        \
                        T *restrict b = brow + col_at(g, s);                           \
                        for (idx q = 0; q < OW; ++q) b[q] += ws * drow[q];             \
                    }                                                                  \
                }                                                                      \
            }                                                                          \
        }                                                                              \
        from_phases_##SUF(dx + i * gm.plane_in, buf, g);                               \
    }                                                                                  \
    free(buf);                                                                         \
    return 0;                                                                          \
}

/* The forward pass with 8 groups in the vector lanes, for planes whose rows are
 * too short to vectorise along (7x7, 14x14): the planes of 8 consecutive groups
 * of one image are interleaved into a zero-bordered buffer (position-major, 8
 * lanes), every output position is 8 lanes of FMAs over the taps with a weight
 * vector per tap, and the lanes are written back to their planes.  Blocks
 * [b0, b1) of (image, 8 groups); a last block of fewer groups runs zero lanes.
 * Same accumulation order as the forward kernel. */
#define DEFINE_FORWARD_LANES(NAME, SUF, T)                                             \
int NAME(const T *restrict x, const T *restrict w, const T *restrict bias,            \
         T *restrict y, idx b0, idx b1, idx G, idx KG, GEOM_PARAMS)                    \
{                                                                                      \
    enum { V = 8 };                                                                    \
    const geom gm = make_geom(GEOM_ARGS);                                              \
    const idx Dp = gm.Dp, Hp = gm.Hp, Wp = gm.Wp;                                      \
    const idx gblocks = (G + V - 1) / V;                                               \
    T *in = (T *)calloc((size_t)(Dp * Hp * Wp * V), sizeof(T));                        \
    T *out = (T *)malloc((size_t)(gm.plane_out * V) * sizeof(T));                      \
    T *wv = (T *)malloc((size_t)(gm.taps * V + V) * sizeof(T));                        \
    if (in == NULL || out == NULL || wv == NULL) { free(in); free(out); free(wv); return -1; } \
    for (idx blk = b0; blk < b1; ++blk) {                                              \
        const idx n = blk / gblocks, g0 = (blk % gblocks) * V;                         \
        const idx lanes = G - g0 < V ? G - g0 : V;                                     \
        to_lanes_##SUF(in, x, n * G + g0, lanes, &gm);                                 \
        for (idx k = 0; k < KG; ++k) {                                                 \
            T *bv = wv + gm.taps * V;                                                  \
            for (idx j = 0; j < V; ++j) {                                              \
                for (idx t = 0; t < gm.taps; ++t)                                      \
                    wv[t * V + j] = (T)0;                                              \
                bv[j] = (T)0;                                                          \
            }                                                                          \
            for (idx j = 0; j < lanes; ++j) {                                          \
                for (idx t = 0; t < gm.taps; ++t)                                      \
                    wv[t * V + j] = w[((g0 + j) * KG + k) * gm.taps + t];              \
                if (bias) bv[j] = bias[(g0 + j) * KG + k];                             \
            }                                                                          \
            for (idx od = 0; od < OD; ++od)                                            \
            for (idx oh = 0; oh < OH; ++oh)                                            \
            for (idx ow = 0; ow < OW; ++ow) {                                          \
                T acc[V];                                                              \
                for (idx j = 0; j < V; ++j) acc[j] = bv[j];                            \
                for (idx t = 0; t < KD; ++t)                                           \
                for (idx r = 0; r < KH; ++r) {                                         \
                    const T *p = in + (((od * sd + t * dd) * Hp + oh * sh + r * dh) * Wp \
                                       + ow * sw) * V;                                 \
                    const T *wr = wv + (t * KH + r) * KW * V;                          \
                    for (idx s = 0; s < KW; ++s)                                       \
                        for (idx j = 0; j < V; ++j)                                    \
                            acc[j] += wr[s * V + j] * p[s * dw * V + j];               \
                }                                                                      \
                T *o = out + ((od * OH + oh) * OW + ow) * V;                           \
                for (idx j = 0; j < V; ++j) o[j] = acc[j];                             \
            }                                                                          \
            T *dst[V];                                                                 \
            for (idx j = 0; j < lanes; ++j)                                            \
                dst[j] = y + ((n * G + g0 + j) * KG + k) * gm.plane_out;               \
            if (lanes == V) {                                                          \
                for (idx q = 0; q < gm.plane_out; ++q)                                 \
                    for (idx j = 0; j < V; ++j) dst[j][q] = out[q * V + j];            \
            } else {                                                                   \
                for (idx j = 0; j < lanes; ++j)                                        \
                    for (idx q = 0; q < gm.plane_out; ++q) dst[j][q] = out[q * V + j]; \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    free(in);                                                                          \
    free(out);                                                                         \
    free(wv);                                                                          \
    return 0;                                                                          \
}

/* The weight gradient with 8 groups in the vector lanes (for short rows, as
 * the forward): input planes and dy planes of 8 groups interleaved, per output
 * position 8 lanes of products per tap, the lanes of a plane summed in double.
 * Blocks [b0, b1) of 8 groups, over all N images. */
#define DEFINE_WGRAD_LANES(NAME, SUF, T)                                               \
int NAME(const T *restrict x, const T *restrict dy, T *restrict gw,                   \
         idx N, idx b0, idx b1, idx G, idx KG, GEOM_PARAMS)                            \
{                                                                                      \
    enum { V = 8 };                                                                    \
    const geom gm = make_geom(GEOM_ARGS);                                              \
    const idx Dp = gm.Dp, Hp = gm.Hp, Wp = gm.Wp;                                      \
    T *in = (T *)calloc((size_t)(Dp * Hp * Wp * V), sizeof(T));                        \
    T *dv = (T *)malloc((size_t)(gm.plane_out * V) * sizeof(T));                       \
    T *lane = (T *)malloc((size_t)(gm.taps * V) * sizeof(T));                          \
    double *acc = (double *)malloc((size_t)(KG * gm.taps * V) * sizeof(double));       \
    if (in == NULL || dv == NULL || lane == NULL || acc == NULL) {                     \
        free(in); free(dv); free(lane); free(acc); return -1;                          \
    }                                                                                  \
    for (idx blk = b0; blk < b1; ++blk) {                                              \
        const idx g0 = blk * V, lanes = G - g0 < V ? G - g0 : V;                       \
        for (idx j = 0; j < KG * gm.taps * V; ++j) acc[j] = 0.0;                       \
        for (idx n = 0; n < N; ++n) {                                                  \
            to_lanes_##SUF(in, x, n * G + g0, lanes, &gm);                             \
            for (idx k = 0; k < KG; ++k) {                                             \
                if (lanes < V)                                                         \
                    for (idx q = 0; q < gm.plane_out * V; ++q) dv[q] = (T)0;           \
                for (idx j = 0; j < lanes; ++j) {                                      \
                    const T *e = dy + ((n * G + g0 + j) * KG + k) * gm.plane_out;      \
                    for (idx q = 0; q < gm.plane_out; ++q) dv[q * V + j] = e[q];       \
                }                                                                      \
                for (idx j = 0; j < gm.taps * V; ++j) lane[j] = (T)0;                  \
                for (idx od = 0; od < OD; ++od)                                        \
                for (idx oh = 0; oh < OH; ++oh)                                        \
                for (idx ow = 0; ow < OW; ++ow) {                                      \
                    const T *e = dv + ((od * OH + oh) * OW + ow) * V;                  \
                    for (idx t = 0; t < KD; ++t)                                       \
                    for (idx r = 0; r < KH; ++r) {                                     \
                        const T *p = in + (((od * sd + t * dd) * Hp + oh * sh + r * dh) * Wp \
                                           + ow * sw) * V;                             \
                        T *L = lane + (t * KH + r) * KW * V;                           \
                        for (idx s = 0; s < KW; ++s)                                   \
                            for (idx j = 0; j < V; ++j)                                \
                                L[s * V + j] += e[j] * p[s * dw * V + j];              \
                    }                                                                  \
                }                                                                      \
                double *a = acc + k * gm.taps * V;                                     \
                for (idx j = 0; j < gm.taps * V; ++j) a[j] += (double)lane[j];         \
            }                                                                          \
        }                                                                              \
        for (idx j = 0; j < lanes; ++j)                                                \
            for (idx k = 0; k < KG; ++k)                                               \
                for (idx t = 0; t < gm.taps; ++t)                                      \
                    gw[((g0 + j) * KG + k) * gm.taps + t] = (T)acc[(k * gm.taps + t) * V + j]; \
    }                                                                                  \
    free(in); free(dv); free(lane); free(acc);                                         \
    return 0;                                                                          \
}

/* The input gradient with 8 groups in the vector lanes: dy planes of 8 groups
 * interleaved, each output position's 8 lanes times the tap weights added into
 * an interleaved padded buffer, whose interior then goes back to the 8 planes.
 * Blocks [b0, b1) of (image, 8 groups). */
#define DEFINE_DGRAD_LANES(NAME, SUF, T)                                               \
int NAME(const T *restrict dy, const T *restrict w, T *restrict dx,                   \
         idx b0, idx b1, idx G, idx KG, GEOM_PARAMS)                                   \
{                                                                                      \
    enum { V = 8 };                                                                    \
    const geom gm = make_geom(GEOM_ARGS);                                              \
    const idx Dp = gm.Dp, Hp = gm.Hp, Wp = gm.Wp;                                      \
    const idx gblocks = (G + V - 1) / V, blen = Dp * Hp * Wp * V;                      \
    T *buf = (T *)malloc((size_t)blen * sizeof(T));                                    \
    T *dv = (T *)malloc((size_t)(gm.plane_out * V) * sizeof(T));                       \
    T *wv = (T *)malloc((size_t)(gm.taps * V) * sizeof(T));                            \
    if (buf == NULL || dv == NULL || wv == NULL) { free(buf); free(dv); free(wv); return -1; } \
    for (idx blk = b0; blk < b1; ++blk) {                                              \
        const idx n = blk / gblocks, g0 = (blk % gblocks) * V;                         \
        const idx lanes = G - g0 < V ? G - g0 : V;                                     \
        for (idx q = 0; q < blen; ++q) buf[q] = (T)0;                                  \
        for (idx k = 0; k < KG; ++k) {                                                 \
            if (lanes < V) {                                                           \
                for (idx q = 0; q < gm.plane_out * V; ++q) dv[q] = (T)0;               \
                for (idx q = 0; q < gm.taps * V; ++q) wv[q] = (T)0;                    \
            }                                                                          \
            for (idx j = 0; j < lanes; ++j) {                                          \
                const T *e = dy + ((n * G + g0 + j) * KG + k) * gm.plane_out;          \
                for (idx q = 0; q < gm.plane_out; ++q) dv[q * V + j] = e[q];           \
                for (idx t = 0; t < gm.taps; ++t)                                      \
                    wv[t * V + j] = w[((g0 + j) * KG + k) * gm.taps + t];              \
            }                                                                          \
            for (idx od = 0; od < OD; ++od)                                            \
            for (idx oh = 0; oh < OH; ++oh)                                            \
            for (idx ow = 0; ow < OW; ++ow) {                                          \
                const T *e = dv + ((od * OH + oh) * OW + ow) * V;                      \
                for (idx t = 0; t < KD; ++t)                                           \
                for (idx r = 0; r < KH; ++r) {                                         \
                    T *p = buf + (((od * sd + t * dd) * Hp + oh * sh + r * dh) * Wp    \
                                  + ow * sw) * V;                                      \
                    const T *wr = wv + (t * KH + r) * KW * V;                          \
                    for (idx s = 0; s < KW; ++s)                                       \
                        for (idx j = 0; j < V; ++j)                                    \
                            p[s * dw * V + j] += wr[s * V + j] * e[j];                 \
                }                                                                      \
            }                                                                          \
        }                                                                              \
        for (idx j = 0; j < lanes; ++j) {                                              \
            T *out = dx + (n * G + g0 + j) * gm.plane_in;                              \
            for (idx d = 0; d < D; ++d)                                                \
                for (idx h = 0; h < H; ++h) {                                          \
                    const T *src = buf + (((d + pd) * Hp + h + ph) * Wp + pw) * V + j; \
                    T *o = out + (d * H + h) * W;                                      \
                    for (idx c = 0; c < W; ++c) o[c] = src[c * V];                     \
                }                                                                      \
        }                                                                              \
    }                                                                                  \
    free(buf); free(dv); free(wv);                                                     \
    return 0;                                                                          \
}

DEFINE_HELPERS(f32, float)
DEFINE_HELPERS(f64, double)
DEFINE_FORWARD(gpuconv_depthwise_f32, f32, float)
DEFINE_FORWARD(gpuconv_depthwise_f64, f64, double)
DEFINE_WGRAD(gpuconv_depthwise_wgrad_f32, f32, float)
DEFINE_WGRAD(gpuconv_depthwise_wgrad_f64, f64, double)
DEFINE_DGRAD(gpuconv_depthwise_dgrad_f32, f32, float)
DEFINE_DGRAD(gpuconv_depthwise_dgrad_f64, f64, double)
DEFINE_FORWARD_LANES(gpuconv_depthwise_lanes_f32, f32, float)
DEFINE_FORWARD_LANES(gpuconv_depthwise_lanes_f64, f64, double)
DEFINE_WGRAD_LANES(gpuconv_depthwise_wgrad_lanes_f32, f32, float)
DEFINE_WGRAD_LANES(gpuconv_depthwise_wgrad_lanes_f64, f64, double)
DEFINE_DGRAD_LANES(gpuconv_depthwise_dgrad_lanes_f32, f32, float)
DEFINE_DGRAD_LANES(gpuconv_depthwise_dgrad_lanes_f64, f64, double)
