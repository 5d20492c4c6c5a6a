/*
 * K-quants with a scale and a min per sub-block: Q2_K, Q4_K and Q5_K (GGUF's layouts).
 *
 * A super-block holds 256 weights, split into sub-blocks (8 of 32 for Q4_K/Q5_K, 16 of 16 for
 * Q2_K). Each sub-block j has an integer scale sc_j and min m_j (6 bits for Q4_K/Q5_K, 4 bits
 * for Q2_K), themselves scaled by the super-block's fp16 d and dmin:
 *
 *     x ~ (d * sc_j) * q - (dmin * m_j),    q in 0..nmax (3, 15 or 31)
 *
 * The searching encoder (lb_quantize_T) minimises sum_i w_i (x_i - dequant_i)^2 in four steps:
 *   1. per sub-block, a continuous scale s and offset b (dequant = s*q + b, b <= 0) by weighted
 *      least squares over a few candidate level assignments (closed form given the levels:
 *      the 2x2 normal equations in the sums of w, wx, wq, wq^2, wxq);
 *   2. the super-block d and dmin by trying a few candidates and scoring each with the
 *      quadratic error model of every sub-block *after* its scale and min are rounded to codes;
 *   3. per sub-block, the best integer (sc, m) in a small neighbourhood, every element
 *      re-rounded to its best level for each, scored exactly;
 *   4. d and dmin refitted by least squares given the integer codes and levels (the error is
 *      linear in (d, dmin)), rounded to fp16, and step 3 repeated; kept only if better.
 */
#include "blocks.h"

#include <float.h>

/* ------------------------------------------------------------------------------------------ */
/* GGUF's 12-byte packing of eight 6-bit scales and eight 6-bit mins (Q4_K, Q5_K)               */
/* ------------------------------------------------------------------------------------------ */

/* Bytes 0-3: scales 0-3 in the low 6 bits, the top 2 bits of scales 4-7 in bits 6-7.
   Bytes 4-7: mins 0-3 likewise, with the top 2 bits of mins 4-7.
   Bytes 8-11: low 4 bits of scale 4+i (low nibble) and of min 4+i (high nibble). */
static inline void unpack_scale_min_k4(int j, const uint8_t *packed, int *sc, int *mn) {
    if (j < 4) {
        *sc = packed[j] & 63;
        *mn = packed[j + 4] & 63;
    } else {
        *sc = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4);
        *mn = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
    }
}

static void pack_scales_mins_k4(const uint8_t sc[8], const uint8_t mn[8], uint8_t packed[12]) {
    for (int j = 0; j < 4; j++) {
        packed[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        packed[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        packed[j + 8] = (uint8_t)((sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The search, shared by the three formats                                                      */
/* ------------------------------------------------------------------------------------------ */

#define MAX_SUBBLOCKS 16

typedef struct {
    int sub_size;     /* elements per sub-block: 32 or 16 */
    int n_sub;        /* sub-blocks per super-block: 8 or 16 */
    int nmax;         /* highest quant level: 31, 15 or 3 */
    int code_max;     /* highest sub-block scale/min code: 63 or 15 */
    int n_starts;     /* step 1: candidate level spacings tried per sub-block */
    float start_lo;   /* the first spreads nmax + start_lo levels over the sub-block's range */
    float start_step; /* and the next ones start_step more each */
    int n_lloyd;      /* step 1: Lloyd refinements of every candidate */
    int n_refits;     /* step 4: rounds of refitting d and dmin */
} minmax_shape;

/* One super-block's encoding before it is packed into a format's bytes. */
typedef struct {
    uint16_t d, dmin; /* fp16 bits */
    uint8_t sc[MAX_SUBBLOCKS], mn[MAX_SUBBLOCKS];
    uint8_t levels[QK_K];
} minmax_code;

/* A super-block being searched: its elements and importance weights, and what every candidate
   needs of each sub-block j whatever its levels. */
typedef struct {
    const float *x, *w;
    float lo[MAX_SUBBLOCKS];  /* min(x, 0) of each sub-block */
    float hi[MAX_SUBBLOCKS];  /* max x */
    float sw[MAX_SUBBLOCKS];  /* sum of w */
    float swx[MAX_SUBBLOCKS]; /* sum of w x */
} superblock_work;

/* The level-dependent sums of every sub-block for one assignment of levels. With sw and swx
   they are all the closed-form weighted least-squares fit of dequant = s*q + b needs, and they
   give that fit's error exactly. */
typedef struct {
    float swq[MAX_SUBBLOCKS], swqq[MAX_SUBBLOCKS], swxq[MAX_SUBBLOCKS];
} lane_sums;

/* A grid per sub-block: dequant = s * q + b (b = -min <= 0). */
typedef struct {
    float s[MAX_SUBBLOCKS], b[MAX_SUBBLOCKS];
} lane_grids;

static inline float round_to_fp16(float v) { return lb_fp16_to_fp32(lb_fp32_to_fp16(v)); }

/* v clamped to [0, hi], and 0 for NaN. Written as comparisons rather than fminf/fmaxf, which
   gcc only inlines under -ffinite-math-only: these compile to maxps/minps and vectorize. */
static inline float clamp_level(float v, float hi) {
    v = v > 0.0f ? v : 0.0f;
    return v < hi ? v : hi;
}

/* The nearest level (x - b) * inv_s rounded and clamped to 0..nmax. Clamping before the
   conversion keeps Inf/NaN products (s = 0 or denormal) harmless. */
static inline float nearest_level(float x, float inv_s, float b, float nmax) {
    return (float)(int)(clamp_level((x - b) * inv_s, nmax) + 0.5f);
}

static inline float inverse_or_zero(float v) { return v > 0.0f ? 1.0f / v : 0.0f; }

/* gcc -O3 (the Release build) vectorizes these loops across sub-blocks, with strided loads and
   in-order float reductions, three to four times slower than the -O2 vectorization across
   elements; the kernels ask for -O2's. Kept out of line so that the choice stays theirs (a
   function is only inlined into one compiled with the same options). */
#if defined(__GNUC__) && !defined(__clang__)
#define KERNEL_OPTIONS __attribute__((optimize("O2")))
#define KERNEL __attribute__((noinline, optimize("O2")))
#elif defined(__GNUC__)
#define KERNEL_OPTIONS
#define KERNEL __attribute__((noinline))
#else
#define KERNEL_OPTIONS
#define KERNEL
#endif

/* Each sub-block's elements rounded to the nearest level of its grid, and the level sums: the
   one pass every candidate costs. Four partial sums per sub-block (consecutive elements in
   consecutive lanes) let gcc keep them in one vector register without reordering a float sum.
   The body is instantiated per shape so that its loops have constant trip counts. */
#define PARTIALS 4

static inline KERNEL_OPTIONS void grid_sums_body(const float *restrict x, const float *restrict w, int n,
                                  int n_sub, const float *restrict inv_s, const float *restrict b,
                                  float nmax, lane_sums *restrict out) {
    for (int j = 0; j < n_sub; j++) {
        const float *restrict xj = x + j * n;
        const float *restrict wj = w + j * n;
        const float inv_sj = inv_s[j], bj = b[j];
        float swq[PARTIALS] = {0}, swqq[PARTIALS] = {0}, swxq[PARTIALS] = {0};
        for (int i = 0; i < n; i += PARTIALS) {
            for (int u = 0; u < PARTIALS; u++) {
                const float q = nearest_level(xj[i + u], inv_sj, bj, nmax);
                const float wq = wj[i + u] * q;
                swq[u] += wq;
                swqq[u] += wq * q;
                swxq[u] += wq * xj[i + u];
            }
        }
        out->swq[j] = (swq[0] + swq[1]) + (swq[2] + swq[3]);
        out->swqq[j] = (swqq[0] + swqq[1]) + (swqq[2] + swqq[3]);
        out->swxq[j] = (swxq[0] + swxq[1]) + (swxq[2] + swxq[3]);
    }
}

static KERNEL void grid_sums_32x8(const superblock_work *wk, const float *inv_s, const float *b,
                                  float nmax, lane_sums *out) {
    grid_sums_body(wk->x, wk->w, 32, 8, inv_s, b, nmax, out);
}

static KERNEL void grid_sums_16x16(const superblock_work *wk, const float *inv_s, const float *b,
                                   float nmax, lane_sums *out) {
    grid_sums_body(wk->x, wk->w, 16, 16, inv_s, b, nmax, out);
}

/* One pass: the level sums of every sub-block for the grids g. */
static void grid_sums(const minmax_shape *shape, const superblock_work *wk, const lane_grids *g,
                      lane_sums *out) {
    float inv_s[MAX_SUBBLOCKS];
    for (int j = 0; j < shape->n_sub; j++) inv_s[j] = inverse_or_zero(g->s[j]);
    if (shape->n_sub == 8) {
        grid_sums_32x8(wk, inv_s, g->b, (float)shape->nmax, out);
    } else {
        grid_sums_16x16(wk, inv_s, g->b, (float)shape->nmax, out);
    }
}

/* Weighted squared error of sub-block j's levels dequantized as s*q + b, less the constant
   sum w x^2 (only differences matter). Exact when the levels are the nearest ones of that grid;
   in double because the terms cancel to a small remainder. */
static inline double model_error(const superblock_work *wk, const lane_sums *t, int j, float s,
                                 float b) {
    const double sd = s, bd = b;
    return sd * (sd * t->swqq[j] - 2.0 * t->swxq[j]) + bd * (bd * wk->sw[j] - 2.0 * wk->swx[j]) +
           2.0 * sd * bd * t->swq[j];
}

/* Closed-form weighted least squares for sub-block j's scale s >= 0 and offset b <= 0 given its
   levels (the 2x2 normal equations; on the boundary, the one-variable fit of the other). */
static inline void fit_scale_offset(const superblock_work *wk, const lane_sums *t, int j,
                                    float *s_out, float *b_out) {
    const float sw = wk->sw[j], swx = wk->swx[j];
    const float swq = t->swq[j], swqq = t->swqq[j], swxq = t->swxq[j];
    const float det = sw * swqq - swq * swq;
    float s = 0.0f, b = 0.0f;
    if (det > 0.0f) {
        s = (sw * swxq - swq * swx) / det;
        b = (swqq * swx - swq * swxq) / det;
    }
    if (!(b <= 0.0f)) { /* the min would be positive: pin it to zero */
        b = 0.0f;
        s = swqq > 0.0f ? swxq / swqq : 0.0f;
    }
    if (!(s >= 0.0f)) {
        s = 0.0f;
        b = sw > 0.0f ? LB_MIN(swx / sw, 0.0f) : 0.0f;
    }
    *s_out = s;
    *b_out = b;
}

/* Each sub-block's range [min(x, 0), max x] and its level-independent sums. */
static void load_superblock(const minmax_shape *shape, const float *x, const float *w,
                            superblock_work *wk) {
    const int n = shape->sub_size;
    wk->x = x;
    wk->w = w;
    for (int j = 0; j < shape->n_sub; j++) {
        float lo = 0.0f, hi = x[j * n], sw = 0.0f, swx = 0.0f;
        for (int i = 0; i < n; i++) {
            const float xv = x[j * n + i], wv = w[j * n + i];
            lo = xv < lo ? xv : lo;
            hi = xv > hi ? xv : hi;
            sw += wv;
            swx += wv * xv;
        }
        wk->lo[j] = lo;
        wk->hi[j] = hi;
        wk->sw[j] = sw;
        wk->swx[j] = swx;
    }
}

/* Per sub-block: the least-squares grid for the levels behind `sums`, kept (with its sums and
   error) wherever it beats the best so far. */
static void keep_better_fits(const minmax_shape *shape, const superblock_work *wk,
                             const lane_sums *sums, lane_grids *fit, lane_grids *best,
                             double *best_err, lane_sums *best_sums) {
    for (int j = 0; j < shape->n_sub; j++) {
        fit_scale_offset(wk, sums, j, &fit->s[j], &fit->b[j]);
        const double err = model_error(wk, sums, j, fit->s[j], fit->b[j]);
        if (err < best_err[j]) {
            best_err[j] = err;
            best->s[j] = fit->s[j];
            best->b[j] = fit->b[j];
            best_sums->swq[j] = sums->swq[j];
            best_sums->swqq[j] = sums->swqq[j];
            best_sums->swxq[j] = sums->swxq[j];
        }
    }
}

/* Step 1: a continuous grid (s, b) per sub-block. Each candidate spreads nmax + delta levels
   over the sub-block's range [min(x, 0), max x]; its levels are fitted in closed form and
   refined by Lloyd steps (nearest-level assignment, then least squares, alternately). */
static void fit_subblocks(const minmax_shape *shape, const superblock_work *wk, lane_grids *best,
                          lane_sums *best_sums) {
    const int n_sub = shape->n_sub;
    double best_err[MAX_SUBBLOCKS];
    for (int j = 0; j < n_sub; j++) {
        /* every element at level 0: the grid's offset alone */
        best->s[j] = 0.0f;
        best->b[j] = wk->lo[j];
        best_sums->swq[j] = best_sums->swqq[j] = best_sums->swxq[j] = 0.0f;
        best_err[j] = model_error(wk, best_sums, j, 0.0f, wk->lo[j]);
    }
    for (int k = 0; k < shape->n_starts; k++) {
        const float spread = (float)shape->nmax + shape->start_lo + shape->start_step * (float)k;
        lane_grids g;
        for (int j = 0; j < n_sub; j++) {
            const float range = wk->hi[j] - wk->lo[j];
            g.s[j] = range / spread;
            g.b[j] = wk->lo[j];
        }
        for (int iter = 0; iter <= shape->n_lloyd; iter++) {
            lane_sums sums;
            grid_sums(shape, wk, &g, &sums);
            keep_better_fits(shape, wk, &sums, &g, best, best_err, best_sums);
        }
    }
}

static inline int nearest_code(float v, float inv_unit, int code_max) {
    return (int)(clamp_level(v * inv_unit, (float)code_max) + 0.5f);
}

/* Step 2: the (d, dmin) pair, among a few candidates, whose rounded codes give the smallest
   modelled error (levels held fixed). For each d every sub-block's scale is rounded to its code
   and its min refitted to that scale in closed form; each dmin then rounds those mins. The
   candidates put the largest scale (min) on the largest code, or a little beyond it: clipping
   the largest sub-block slightly can refine all the others. */
static const float kCodeOffsets[] = {-0.5f, 0.0f, 0.5f, 1.0f, 2.0f};

static void choose_super_scales(const minmax_shape *shape, const superblock_work *wk,
                                const lane_grids *fit, const lane_sums *sums, float *d_out,
                                float *dmin_out, int *sc, int *mn) {
    const int n_sub = shape->n_sub, n_offsets = LB_ARRAY_LEN(kCodeOffsets);
    const float code_max = (float)shape->code_max;
    float max_s = 0.0f, max_m = 0.0f;
    for (int j = 0; j < n_sub; j++) {
        max_s = fit->s[j] > max_s ? fit->s[j] : max_s;
        max_m = -fit->b[j] > max_m ? -fit->b[j] : max_m;
    }
    float dmins[LB_ARRAY_LEN(kCodeOffsets)], inv_dmins[LB_ARRAY_LEN(kCodeOffsets)];
    for (int c = 0; c < n_offsets; c++) {
        dmins[c] = round_to_fp16(max_m / (code_max + kCodeOffsets[c]));
        inv_dmins[c] = inverse_or_zero(dmins[c]);
    }
    double best_score = DBL_MAX;
    *d_out = round_to_fp16(max_s / code_max);
    *dmin_out = dmins[1];
    for (int j = 0; j < n_sub; j++) sc[j] = mn[j] = 0;
    for (int a = 0; a < n_offsets; a++) {
        const float d = round_to_fp16(max_s / (code_max + kCodeOffsets[a]));
        const float inv_d = inverse_or_zero(d);
        float scale[MAX_SUBBLOCKS], m_fit[MAX_SUBBLOCKS];
        int sc_a[MAX_SUBBLOCKS];
        for (int j = 0; j < n_sub; j++) {
            sc_a[j] = nearest_code(fit->s[j], inv_d, shape->code_max);
            scale[j] = d * (float)sc_a[j];
            m_fit[j] = wk->sw[j] > 0.0f ? (scale[j] * sums->swq[j] - wk->swx[j]) / wk->sw[j]
                                        : -fit->b[j];
        }
        for (int c = 0; c < n_offsets; c++) {
            double score = 0.0;
            for (int j = 0; j < n_sub; j++) {
                const int code = nearest_code(m_fit[j], inv_dmins[c], shape->code_max);
                score += model_error(wk, sums, j, scale[j], -dmins[c] * (float)code);
            }
            if (score < best_score) {
                best_score = score;
                *d_out = d;
                *dmin_out = dmins[c];
                for (int j = 0; j < n_sub; j++) {
                    sc[j] = sc_a[j];
                    mn[j] = nearest_code(m_fit[j], inv_dmins[c], shape->code_max);
                }
            }
        }
    }
}

/* Integer codes of every sub-block and the exact error they give. */
typedef struct {
    int sc[MAX_SUBBLOCKS], mn[MAX_SUBBLOCKS];
    double err[MAX_SUBBLOCKS];
    lane_sums sums; /* of the levels those codes give */
} lane_codes;

/* Scores codes `trial` exactly (one pass) and keeps, per sub-block, whichever of `best` and
   `trial` is better. With `best` NULL... */
static void keep_better_codes(const minmax_shape *shape, const superblock_work *wk, float d,
                              float dmin, const int *sc, const int *mn, lane_codes *best) {
    lane_grids g;
    for (int j = 0; j < shape->n_sub; j++) {
        g.s[j] = d * (float)sc[j];
        g.b[j] = -(dmin * (float)mn[j]);
    }
    lane_sums sums;
    grid_sums(shape, wk, &g, &sums);
    for (int j = 0; j < shape->n_sub; j++) {
        const double err = model_error(wk, &sums, j, g.s[j], g.b[j]);
        if (err < best->err[j]) {
            best->err[j] = err;
            best->sc[j] = sc[j];
            best->mn[j] = mn[j];
            best->sums.swq[j] = sums.swq[j];
            best->sums.swqq[j] = sums.swqq[j];
            best->sums.swxq[j] = sums.swxq[j];
        }
    }
}

static inline int clamp_code(int v, int code_max) { return v < 0 ? 0 : v > code_max ? code_max : v; }

/* Step 3: per sub-block, the best integer codes near the given ones, each scored exactly (every
   element at its nearest level). From the levels of the current codes, the min is refitted in
   closed form for the scale codes one below, at and one above the current one; the codes that
   round to are tried, then the min code one either side of the best. */
static void choose_codes(const minmax_shape *shape, const superblock_work *wk, float d,
                         float dmin, lane_codes *best) {
    const int n_sub = shape->n_sub;
    for (int j = 0; j < n_sub; j++) best->err[j] = DBL_MAX;
    keep_better_codes(shape, wk, d, dmin, best->sc, best->mn, best);
    const float inv_dmin = inverse_or_zero(dmin);
    const lane_codes start = *best;
    int sc[MAX_SUBBLOCKS], mn[MAX_SUBBLOCKS];
    for (int dsc = -1; dsc <= 1; dsc++) {
        for (int j = 0; j < n_sub; j++) {
            sc[j] = clamp_code(start.sc[j] + dsc, shape->code_max);
            const float scale = d * (float)sc[j];
            const float m_fit = wk->sw[j] > 0.0f
                                    ? (scale * start.sums.swq[j] - wk->swx[j]) / wk->sw[j]
                                    : 0.0f;
            mn[j] = nearest_code(m_fit, inv_dmin, shape->code_max);
        }
        keep_better_codes(shape, wk, d, dmin, sc, mn, best);
    }
    for (int dmn = -1; dmn <= 1; dmn += 2) {
        for (int j = 0; j < n_sub; j++) {
            sc[j] = best->sc[j];
            mn[j] = clamp_code(best->mn[j] + dmn, shape->code_max);
        }
        keep_better_codes(shape, wk, d, dmin, sc, mn, best);
    }
}

/* Step 4: given integer codes and levels the error is a quadratic in (d, dmin): the 2x2 normal
   equations give both. Returns 0 when the system is singular or the solution unusable. */
static int refit_super_scales(const minmax_shape *shape, const superblock_work *wk,
                              const lane_codes *codes, float *d_out, float *dmin_out) {
    double a11 = 0, a12 = 0, a22 = 0, r1 = 0, r2 = 0;
    for (int j = 0; j < shape->n_sub; j++) {
        const double c = codes->sc[j], m = codes->mn[j];
        /* dequant = d * (c q) - dmin * m */
        a11 += c * c * codes->sums.swqq[j];
        a12 -= c * m * codes->sums.swq[j];
        a22 += m * m * wk->sw[j];
        r1 += c * codes->sums.swxq[j];
        r2 -= m * wk->swx[j];
    }
    const double det = a11 * a22 - a12 * a12;
    if (!(det > 1e-12 * a11 * a22) || !(a11 > 0) || !(a22 > 0)) return 0;
    const double d = (r1 * a22 - a12 * r2) / det;
    const double dmin = (a11 * r2 - a12 * r1) / det;
    if (!(d >= 0) || !(dmin >= 0) || d > LB_FP16_MAX || dmin > LB_FP16_MAX) return 0;
    *d_out = round_to_fp16((float)d);
    *dmin_out = round_to_fp16((float)dmin);
    return 1;
}

static double total_error(const minmax_shape *shape, const lane_codes *codes) {
    double total = 0.0;
    for (int j = 0; j < shape->n_sub; j++) total += codes->err[j];
    return total;
}

/* Encodes one super-block of 256 weights. */
static lowbit_status search_superblock(const float *x, const float *w, const minmax_shape *shape,
                                       minmax_code *code) {
    superblock_work wk;
    load_superblock(shape, x, w, &wk);

    lane_grids fit;
    lane_sums fit_sums;
    fit_subblocks(shape, &wk, &fit, &fit_sums);
    const float code_max = (float)shape->code_max;
    for (int j = 0; j < shape->n_sub; j++) {
        if (fit.s[j] / code_max > LB_FP16_MAX || -fit.b[j] / code_max > LB_FP16_MAX) {
            return LOWBIT_ERR_SCALE_OVERFLOW;
        }
    }

    float d, dmin;
    lane_codes codes;
    choose_super_scales(shape, &wk, &fit, &fit_sums, &d, &dmin, codes.sc, codes.mn);
    choose_codes(shape, &wk, d, dmin, &codes);
    double err = total_error(shape, &codes);

    for (int round = 0; round < shape->n_refits; round++) {
        float d2, dmin2;
        if (!refit_super_scales(shape, &wk, &codes, &d2, &dmin2)) break;
        if (d2 == d && dmin2 == dmin) break;
        lane_codes trial = codes;
        choose_codes(shape, &wk, d2, dmin2, &trial);
        const double err2 = total_error(shape, &trial);
        if (!(err2 < err)) break;
        err = err2;
        d = d2;
        dmin = dmin2;
        codes = trial;
    }

    const int n = shape->sub_size;
    for (int j = 0; j < shape->n_sub; j++) {
        const float scale = d * (float)codes.sc[j];
        const float inv_scale = inverse_or_zero(scale);
        const float b = -(dmin * (float)codes.mn[j]);
        for (int i = 0; i < n; i++) {
            code->levels[j * n + i] =
                (uint8_t)(int)nearest_level(x[j * n + i], inv_scale, b, (float)shape->nmax);
        }
        code->sc[j] = (uint8_t)codes.sc[j];
        code->mn[j] = (uint8_t)codes.mn[j];
    }
    code->d = lb_fp32_to_fp16(d);
    code->dmin = lb_fp32_to_fp16(dmin);
    return LOWBIT_OK;
}

/* Runs the search over a row, calling `pack` for every super-block. */
typedef void (*pack_code_fn)(const minmax_code *code, void *block);

static lowbit_status quantize_row_minmax(const float *src, void *dst, int64_t n,
                                         const float *importance, const minmax_shape *shape,
                                         size_t block_bytes, pack_code_fn pack) {
    float ones[QK_K];
    for (int i = 0; i < QK_K; i++) ones[i] = 1.0f;
    minmax_code code;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float *x = src + b * QK_K;
        const float *w = importance ? importance + b * QK_K : ones;
        const lowbit_status st = search_superblock(x, w, shape, &code);
        if (st != LOWBIT_OK) return st;
        pack(&code, (uint8_t *)dst + b * block_bytes);
    }
    return LOWBIT_OK;
}

/* The reference encoder: per sub-block, the scale spreads [min(x,0), max x] over the levels;
   d and dmin put the largest scale and min on the largest code; elements round to nearest. */
static lowbit_status quantize_row_minmax_ref(const float *src, void *dst, int64_t n,
                                             const minmax_shape *shape, size_t block_bytes,
                                             pack_code_fn pack) {
    minmax_code code;
    const int sub = shape->sub_size;
    const float code_max = (float)shape->code_max;
    for (int64_t blk = 0; blk < n / QK_K; blk++) {
        const float *x = src + blk * QK_K;
        float s[MAX_SUBBLOCKS], m[MAX_SUBBLOCKS], max_s = 0.0f, max_m = 0.0f;
        for (int j = 0; j < shape->n_sub; j++) {
            float lo = x[j * sub], hi = x[j * sub];
            for (int i = 1; i < sub; i++) {
                lo = x[j * sub + i] < lo ? x[j * sub + i] : lo;
                hi = x[j * sub + i] > hi ? x[j * sub + i] : hi;
            }
            if (lo > 0.0f) lo = 0.0f;
            s[j] = (hi - lo) / (float)shape->nmax;
            m[j] = -lo;
            max_s = s[j] > max_s ? s[j] : max_s;
            max_m = m[j] > max_m ? m[j] : max_m;
        }
        if (max_s / code_max > LB_FP16_MAX || max_m / code_max > LB_FP16_MAX) {
            return LOWBIT_ERR_SCALE_OVERFLOW;
        }
        const float d = round_to_fp16(max_s / code_max);
        const float dmin = round_to_fp16(max_m / code_max);
        const float inv_d = inverse_or_zero(d);
        const float inv_dmin = inverse_or_zero(dmin);
        for (int j = 0; j < shape->n_sub; j++) {
            const int sc = nearest_code(s[j], inv_d, shape->code_max);
            const int mn = nearest_code(m[j], inv_dmin, shape->code_max);
            const float inv_scale = inverse_or_zero(d * (float)sc);
            for (int i = 0; i < sub; i++) {
                code.levels[j * sub + i] = (uint8_t)(int)nearest_level(
                    x[j * sub + i], inv_scale, -(dmin * (float)mn), (float)shape->nmax);
            }
            code.sc[j] = (uint8_t)sc;
            code.mn[j] = (uint8_t)mn;
        }
        code.d = lb_fp32_to_fp16(d);
        code.dmin = lb_fp32_to_fp16(dmin);
        pack(&code, (uint8_t *)dst + blk * block_bytes);
    }
    return LOWBIT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Q2_K: 16 sub-blocks of 16, 4-bit scale (low nibble) and min (high nibble), 2-bit quants      */
/* ------------------------------------------------------------------------------------------ */

/* Quants are stored in 128-element halves: byte 32h + l holds, in bits 2k..2k+1, element
   128h + 32k + l (k = 0..3, l = 0..31). */
static void pack_q2_K(const minmax_code *code, void *block) {
    block_q2_K *y = block;
    for (int j = 0; j < 16; j++) y->scales[j] = (uint8_t)(code->sc[j] | (code->mn[j] << 4));
    for (int h = 0; h < 2; h++) {
        const uint8_t *q = code->levels + 128 * h;
        for (int l = 0; l < 32; l++) {
            y->qs[32 * h + l] =
                (uint8_t)(q[l] | (q[l + 32] << 2) | (q[l + 64] << 4) | (q[l + 96] << 6));
        }
    }
    y->d = code->d;
    y->dmin = code->dmin;
}

static const minmax_shape kShapeQ2K = {16, 16, 3, 15, 5, -0.5f, 0.25f, 1, 1};

lowbit_status lb_quantize_ref_q2_K(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    return quantize_row_minmax_ref(src, dst, n, &kShapeQ2K, sizeof(block_q2_K), pack_q2_K);
}

lowbit_status lb_quantize_q2_K(const float *src, void *dst, int64_t n, const float *importance) {
    return quantize_row_minmax(src, dst, n, importance, &kShapeQ2K, sizeof(block_q2_K),
                               pack_q2_K);
}

void lb_dequantize_q2_K(const void *src, float *dst, int64_t n) {
    const block_q2_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = lb_fp16_to_fp32(x[b].d);
        const float dmin = lb_fp16_to_fp32(x[b].dmin);
        for (int h = 0; h < 2; h++) {
            const uint8_t *q = x[b].qs + 32 * h;
            for (int k = 0; k < 4; k++) {
                for (int half = 0; half < 2; half++) {
                    const uint8_t sc = x[b].scales[8 * h + 2 * k + half];
                    const float scale = d * (float)(sc & 0x0F);
                    const float offset = dmin * (float)(sc >> 4);
                    for (int l = 0; l < 16; l++) {
                        const int level = (q[16 * half + l] >> (2 * k)) & 3;
                        *dst++ = scale * (float)level - offset;
                    }
                }
            }
        }
    }
}

float lb_vec_dot_q2_K(int64_t n, const void *weights, const void *activations) {
    const block_q2_K *x = weights;
    const block_q8_K *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t sum_scaled = 0, sum_mins = 0;
        for (int j = 0; j < 16; j++) {
            /* sub-block j: elements 16j..16j+15, in half h = j/8 at bit pair k = (j%8)/2 */
            const int h = j / 8, k = (j % 8) / 2, part = j % 2;
            const uint8_t *q = x[b].qs + 32 * h + 16 * part;
            const int8_t *a = y[b].qs + 16 * j;
            int32_t dot = 0;
            for (int l = 0; l < 16; l++) dot += ((q[l] >> (2 * k)) & 3) * a[l];
            sum_scaled += (x[b].scales[j] & 0x0F) * dot;
            /* the min term needs only the activation's sum over the sub-block: Q8_K's bsums */
            sum_mins += (x[b].scales[j] >> 4) * y[b].bsums[j];
        }
        const float d = lb_fp16_to_fp32(x[b].d) * y[b].d;
        const float dmin = lb_fp16_to_fp32(x[b].dmin) * y[b].d;
        sum += d * (float)sum_scaled - dmin * (float)sum_mins;
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* Q4_K: 8 sub-blocks of 32, 6-bit scales and mins, 4-bit quants                                */
/* ------------------------------------------------------------------------------------------ */

/* Quants in 64-element chunks: byte 32c + l holds element 64c + l (low nibble) and element
   64c + 32 + l (high nibble). */
static void pack_q4_K(const minmax_code *code, void *block) {
    block_q4_K *y = block;
    y->d = code->d;
    y->dmin = code->dmin;
    pack_scales_mins_k4(code->sc, code->mn, y->scales);
    for (int c = 0; c < 4; c++) {
        const uint8_t *q = code->levels + 64 * c;
        for (int l = 0; l < 32; l++) y->qs[32 * c + l] = (uint8_t)(q[l] | (q[l + 32] << 4));
    }
}

static const minmax_shape kShapeQ4K = {32, 8, 15, 63, 9, -1.0f, 0.25f, 2, 2};

lowbit_status lb_quantize_ref_q4_K(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    return quantize_row_minmax_ref(src, dst, n, &kShapeQ4K, sizeof(block_q4_K), pack_q4_K);
}

lowbit_status lb_quantize_q4_K(const float *src, void *dst, int64_t n, const float *importance) {
    return quantize_row_minmax(src, dst, n, importance, &kShapeQ4K, sizeof(block_q4_K),
                               pack_q4_K);
}

void lb_dequantize_q4_K(const void *src, float *dst, int64_t n) {
    const block_q4_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = lb_fp16_to_fp32(x[b].d);
        const float dmin = lb_fp16_to_fp32(x[b].dmin);
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = x[b].qs + 32 * c;
            int sc, mn;
            unpack_scale_min_k4(2 * c, x[b].scales, &sc, &mn);
            const float scale_lo = d * (float)sc, offset_lo = dmin * (float)mn;
            unpack_scale_min_k4(2 * c + 1, x[b].scales, &sc, &mn);
            const float scale_hi = d * (float)sc, offset_hi = dmin * (float)mn;
            for (int l = 0; l < 32; l++) *dst++ = scale_lo * (float)(q[l] & 0x0F) - offset_lo;
            for (int l = 0; l < 32; l++) *dst++ = scale_hi * (float)(q[l] >> 4) - offset_hi;
        }
    }
}

float lb_vec_dot_q4_K(int64_t n, const void *weights, const void *activations) {
    const block_q4_K *x = weights;
    const block_q8_K *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t sum_scaled = 0, sum_mins = 0;
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = x[b].qs + 32 * c;
            const int8_t *a = y[b].qs + 64 * c;
            int32_t dot_lo = 0, dot_hi = 0;
            for (int l = 0; l < 32; l++) {
                dot_lo += (q[l] & 0x0F) * a[l];
                dot_hi += (q[l] >> 4) * a[l + 32];
            }
            int sc, mn;
            unpack_scale_min_k4(2 * c, x[b].scales, &sc, &mn);
            sum_scaled += sc * dot_lo;
            sum_mins += mn * (y[b].bsums[4 * c] + y[b].bsums[4 * c + 1]);
            unpack_scale_min_k4(2 * c + 1, x[b].scales, &sc, &mn);
            sum_scaled += sc * dot_hi;
            sum_mins += mn * (y[b].bsums[4 * c + 2] + y[b].bsums[4 * c + 3]);
        }
        const float d = lb_fp16_to_fp32(x[b].d) * y[b].d;
        const float dmin = lb_fp16_to_fp32(x[b].dmin) * y[b].d;
        sum += d * (float)sum_scaled - dmin * (float)sum_mins;
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* Q5_K: Q4_K's layout plus a fifth bit per quant in qh                                         */
/* ------------------------------------------------------------------------------------------ */

/* Low nibbles as in Q4_K; qh[l] bit 2c holds the high bit of element 64c + l and bit 2c + 1
   that of element 64c + 32 + l. */
static void pack_q5_K(const minmax_code *code, void *block) {
    block_q5_K *y = block;
    y->d = code->d;
    y->dmin = code->dmin;
    pack_scales_mins_k4(code->sc, code->mn, y->scales);
    memset(y->qh, 0, sizeof y->qh);
    for (int c = 0; c < 4; c++) {
        const uint8_t *q = code->levels + 64 * c;
        for (int l = 0; l < 32; l++) {
            y->qs[32 * c + l] = (uint8_t)((q[l] & 0x0F) | ((q[l + 32] & 0x0F) << 4));
            y->qh[l] |= (uint8_t)(((q[l] >> 4) << (2 * c)) | ((q[l + 32] >> 4) << (2 * c + 1)));
        }
    }
}

static const minmax_shape kShapeQ5K = {32, 8, 31, 63, 5, -1.0f, 0.5f, 1, 1};

lowbit_status lb_quantize_ref_q5_K(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    return quantize_row_minmax_ref(src, dst, n, &kShapeQ5K, sizeof(block_q5_K), pack_q5_K);
}

lowbit_status lb_quantize_q5_K(const float *src, void *dst, int64_t n, const float *importance) {
    return quantize_row_minmax(src, dst, n, importance, &kShapeQ5K, sizeof(block_q5_K),
                               pack_q5_K);
}

void lb_dequantize_q5_K(const void *src, float *dst, int64_t n) {
    const block_q5_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = lb_fp16_to_fp32(x[b].d);
        const float dmin = lb_fp16_to_fp32(x[b].dmin);
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = x[b].qs + 32 * c;
            const uint8_t *qh = x[b].qh;
            int sc, mn;
            unpack_scale_min_k4(2 * c, x[b].scales, &sc, &mn);
            const float scale_lo = d * (float)sc, offset_lo = dmin * (float)mn;
            unpack_scale_min_k4(2 * c + 1, x[b].scales, &sc, &mn);
            const float scale_hi = d * (float)sc, offset_hi = dmin * (float)mn;
            for (int l = 0; l < 32; l++) {
                const int level = (q[l] & 0x0F) | (((qh[l] >> (2 * c)) & 1) << 4);
                *dst++ = scale_lo * (float)level - offset_lo;
            }
            for (int l = 0; l < 32; l++) {
                const int level = (q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
                *dst++ = scale_hi * (float)level - offset_hi;
            }
        }
    }
}

float lb_vec_dot_q5_K(int64_t n, const void *weights, const void *activations) {
    const block_q5_K *x = weights;
    const block_q8_K *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t sum_scaled = 0, sum_mins = 0;
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = x[b].qs + 32 * c;
            const uint8_t *qh = x[b].qh;
            const int8_t *a = y[b].qs + 64 * c;
            int32_t dot_lo = 0, dot_hi = 0;
            for (int l = 0; l < 32; l++) {
                dot_lo += ((q[l] & 0x0F) | (((qh[l] >> (2 * c)) & 1) << 4)) * a[l];
                dot_hi += ((q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4)) * a[l + 32];
            }
            int sc, mn;
            unpack_scale_min_k4(2 * c, x[b].scales, &sc, &mn);
            sum_scaled += sc * dot_lo;
            sum_mins += mn * (y[b].bsums[4 * c] + y[b].bsums[4 * c + 1]);
            unpack_scale_min_k4(2 * c + 1, x[b].scales, &sc, &mn);
            sum_scaled += sc * dot_hi;
            sum_mins += mn * (y[b].bsums[4 * c + 2] + y[b].bsums[4 * c + 3]);
        }
        const float d = lb_fp16_to_fp32(x[b].d) * y[b].d;
        const float dmin = lb_fp16_to_fp32(x[b].dmin) * y[b].d;
        sum += d * (float)sum_scaled - dmin * (float)sum_mins;
    }
    return sum;
}
