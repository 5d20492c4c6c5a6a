/*
 * GGUF's legacy 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the activation format
 * Q8_1.
 *
 * Values (q is the stored unsigned level, d and m fp16):
 *   Q4_0  x = d * (q - 8)        q in 0..15
 *   Q4_1  x = d * q + m          q in 0..15
 *   Q5_0  x = d * (q - 16)       q in 0..31, 5th bit in qh
 *   Q5_1  x = d * q + m          q in 0..31, 5th bit in qh
 *   Q8_0  x = d * q              q in -128..127 (the encoders use -127..127)
 *   Q8_1  x = d * q, plus s = d * sum(q) for the min term of dot products with Q4_1/Q5_1
 * In the 4- and 5-bit formats byte j of qs holds element j in its low nibble and element j + 16
 * in its high nibble; qh is a little-endian 32-bit word whose bit j is the 5th bit of element j.
 *
 * The searching encoders minimise sum_i w_i (x_i - dequant_i)^2 per block. Without an importance
 * matrix the 4- and 5-bit formats take a fast path that costs about what plain rounding does: one
 * rounding pass at a slightly clipped step that also gathers the sums of the closed-form
 * least-squares fit of the scale (and min) to those levels (Q5_0 and Q5_1 add one Lloyd step:
 * re-round at the fitted parameters and re-fit). With an importance matrix, and for Q8_0:
 *   - symmetric formats (Q4_0, Q5_0, Q8_0): candidate inverse scales around the one that maps
 *     the largest-magnitude element to the end of the range (a fine grid with importance); each candidate's integer levels
 *     are scored by the closed-form least-squares scale for those levels (error reduction
 *     (sum w x l)^2 / sum w l^2), the best is refined by Lloyd steps (re-round, re-fit), and the
 *     final levels are rounded against the scale as it is stored (fp16), where nearest rounding is
 *     optimal for each element.
 *   - formats with a min (Q4_1, Q5_1): candidate steps over [min, max], the grid anchored at the
 *     min, at the max and centred (clipping the lighter end pays with weights), each scored by the
 *     weighted least-squares fit of scale and min given its levels (a 2x2 normal system), then
 *     Lloyd steps and the final rounding against the stored fp16 scale and min.
 * All per-block loops run over fixed 32-element arrays and sum by pairwise halving, so that gcc
 * vectorizes them (SSE2 is enough) without reassociating float additions.
 */
#include "blocks.h"

#define BLOCK 32
#define HALF_BLOCK (BLOCK / 2)

/* ------------------------------------------------------------------------------------------ */
/* Small helpers shared by every format                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Round to nearest (even) in float arithmetic: adding 1.5 * 2^23 leaves no fraction bits, so the
   FPU rounds. Exact for |v| < 2^22 and monotonic beyond, which is all a clamp that follows needs;
   unlike a conversion to int it vectorizes with plain SSE2. */
static inline float round_to_level(float v) {
    const float magic = 12582912.0f;
    return (v + magic) - magic;
}

static inline float clamp_level(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* Sum of a block's 32 terms by pairwise halving: each stage is an element-wise loop, so it
   vectorizes while the order of the float additions stays fixed (and deterministic). */
static inline float sum_block(float a[BLOCK]) {
    for (int k = 0; k < 16; k++) a[k] += a[k + 16];
    for (int k = 0; k < 8; k++) a[k] += a[k + 8];
    for (int k = 0; k < 4; k++) a[k] += a[k + 4];
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* The reference's choice of extreme: the first element of largest magnitude, signed. */
static float first_signed_extreme(const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < BLOCK; j++) {
        const float ax = fabsf(x[j]);
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    return max;
}

/* The block's min and max by pairwise halving (element-wise stages that vectorize, unlike the
   serial compare chain of a plain loop). */
static void block_min_max(const float *x, float *min_out, float *max_out) {
    float lo[HALF_BLOCK], hi[HALF_BLOCK];
    for (int k = 0; k < HALF_BLOCK; k++) {
        const float a = x[k], b = x[k + HALF_BLOCK];
        lo[k] = b < a ? b : a;
        hi[k] = b > a ? b : a;
    }
    for (int k = 0; k < 8; k++) {
        lo[k] = lo[k + 8] < lo[k] ? lo[k + 8] : lo[k];
        hi[k] = hi[k + 8] > hi[k] ? hi[k + 8] : hi[k];
    }
    for (int k = 0; k < 4; k++) {
        lo[k] = lo[k + 4] < lo[k] ? lo[k + 4] : lo[k];
        hi[k] = hi[k + 4] > hi[k] ? hi[k + 4] : hi[k];
    }
    const float lo01 = lo[1] < lo[0] ? lo[1] : lo[0], lo23 = lo[3] < lo[2] ? lo[3] : lo[2];
    const float hi01 = hi[1] > hi[0] ? hi[1] : hi[0], hi23 = hi[3] > hi[2] ? hi[3] : hi[2];
    *min_out = lo23 < lo01 ? lo23 : lo01;
    *max_out = hi23 > hi01 ? hi23 : hi01;
}

/* The signed value of largest magnitude (the max when magnitudes tie), for the search encoders. */
static float block_signed_extreme(const float *x, float *amax_out) {
    float min, max;
    block_min_max(x, &min, &max);
    *amax_out = max >= -min ? max : -min;
    return max >= -min ? max : min;
}

/* 1/d, or 0 where d is 0 or so small that 1/d overflows (the block then encodes to zero levels). */
static inline float safe_inverse(float d) {
    if (d == 0.0f) return 0.0f;
    const float id = 1.0f / d;
    return isfinite(id) ? id : 0.0f;
}

static inline uint32_t load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static inline void store_qh(uint8_t qh[4], uint32_t bits) {
    for (int i = 0; i < 4; i++) qh[i] = (uint8_t)(bits >> (8 * i));
}

/* Packs unsigned levels 0..15 (or the low 4 bits of 0..31): element j low nibble, j+16 high.
   Levels travel as int32 so that the float-to-int conversions before vectorize. */
static void pack_nibbles(const int32_t levels[BLOCK], uint8_t qs[HALF_BLOCK]) {
    for (int j = 0; j < HALF_BLOCK; j++) {
        qs[j] = (uint8_t)((levels[j] & 0x0F) | (levels[j + HALF_BLOCK] & 0x0F) << 4);
    }
}

static const uint32_t bit_of_element[BLOCK] = {
    1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
    1u << 8,  1u << 9,  1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15,
    1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21, 1u << 22, 1u << 23,
    1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31};

/* The 5th bits of levels 0..31, bit j for element j: masks from a table OR-ed by halving, as
   SSE2 has no per-lane variable shift. */
static uint32_t fifth_bits(const int32_t levels[BLOCK]) {
    uint32_t bits[BLOCK];
    for (int j = 0; j < BLOCK; j++) {
        bits[j] = (0u - (uint32_t)((levels[j] >> 4) & 1)) & bit_of_element[j];
    }
    for (int k = 0; k < 16; k++) bits[k] |= bits[k + 16];
    for (int k = 0; k < 8; k++) bits[k] |= bits[k + 8];
    for (int k = 0; k < 4; k++) bits[k] |= bits[k + 4];
    return (bits[0] | bits[1]) | (bits[2] | bits[3]);
}

/*
 * How hard the searching encoder works with an importance matrix (and for Q8_0). Candidates: the
 * step is the block's range over nmax + delta for each delta (positive deltas clip the extremes a
 * little); each candidate's levels get their least-squares scale (and min), which ranks them; then
 * Lloyd steps (re-round at the fitted parameters, re-fit: neither can increase the error); finally
 * the levels are rounded against the parameters as stored in fp16, where nearest rounding is
 * optimal for each element. Without an importance matrix the 4- and 5-bit formats take the fast
 * paths below instead, which must cost about what plain rounding does.
 */
typedef struct search_plan {
    const float *deltas;
    int n_deltas;
    int lloyd_steps;
} search_plan;

#define SEARCH(deltas, lloyd_steps) {deltas, LB_ARRAY_LEN(deltas), lloyd_steps}

/* ------------------------------------------------------------------------------------------ */
/* Formats without a min: x ~ d * l, l in [-nmax, hi]                                          */
/* ------------------------------------------------------------------------------------------ */

/* Rounds x * id to levels in [lo, hi] and returns sum w x l and sum w l^2 (w = 1 if w is NULL,
   a loop of its own as that case is the hot one); the levels plus `offset` (the stored unsigned
   values) go to `levels` unless it is NULL. */
static inline void symmetric_pass(const float *x, const float *w, float id, float lo, float hi,
                                  int32_t offset, int32_t *levels, float *sxl, float *sll) {
    float l[BLOCK], xl[BLOCK], ll[BLOCK];
    for (int j = 0; j < BLOCK; j++) l[j] = clamp_level(round_to_level(x[j] * id), lo, hi);
    if (w) {
        for (int j = 0; j < BLOCK; j++) {
            xl[j] = w[j] * l[j] * x[j];
            ll[j] = w[j] * l[j] * l[j];
        }
    } else {
        for (int j = 0; j < BLOCK; j++) {
            xl[j] = l[j] * x[j];
            ll[j] = l[j] * l[j];
        }
    }
    if (levels) {
        for (int j = 0; j < BLOCK; j++) levels[j] = (int32_t)l[j] + offset;
    }
    *sxl = sum_block(xl);
    *sll = sum_block(ll);
}

/* Least-squares scale sum w x l / sum w l^2 of a candidate if it reduces the error
   (sum w x l)^2 / sum w l^2 more than the best so far. */
static inline int better_symmetric_fit(float sxl, float sll, float *best_gain, float *best_d) {
    if (!(sll > 0.0f && sxl * sxl > *best_gain * sll)) return 0;
    *best_gain = sxl * sxl / sll;
    *best_d = sxl / sll;
    return 1;
}

/* The searched scale (see search_plan); 0 when no candidate has any weight. */
static float search_symmetric_scale(const float *x, const float *w, float max, float nmax, float hi,
                                    const search_plan *plan) {
    float best_d = 0.0f, best_gain = 0.0f, sxl, sll;
    for (int c = 0; c < plan->n_deltas; c++) {
        const float id = -(nmax + plan->deltas[c]) / max;
        symmetric_pass(x, w, id, -nmax, hi, 0, NULL, &sxl, &sll);
        better_symmetric_fit(sxl, sll, &best_gain, &best_d);
    }
    for (int s = 0; s < plan->lloyd_steps && best_d != 0.0f; s++) {
        symmetric_pass(x, w, safe_inverse(best_d), -nmax, hi, 0, NULL, &sxl, &sll);
        if (!better_symmetric_fit(sxl, sll, &best_gain, &best_d)) break;
    }
    return best_d;
}

/*
 * The fast path without an importance matrix, as one straight function: round at the single
 * candidate, fit the least-squares scale to those levels; with `lloyd_steps`, re-round at the
 * fitted scale and re-fit. The levels of the last rounding are kept (the scale is fitted to them).
 * Returns the unsigned levels.
 */
static lowbit_status fast_symmetric_block(const float *x, float nmax, float hi, float delta,
                                          int lloyd_steps, lb_half *d_out, int32_t levels[BLOCK]) {
    float min, max;
    block_min_max(x, &min, &max);
    const float extreme = max >= -min ? max : min;
    const float d_ref = extreme / -nmax;
    if (!(fabsf(d_ref) <= LB_FP16_MAX)) return LOWBIT_ERR_SCALE_OVERFLOW;
    /* denormal blocks: nmax / extreme could overflow, and their scale is 0 in fp16 anyway */
    float id = fabsf(extreme) >= 1e-30f ? -(nmax + delta) / extreme : 0.0f;
    float d = 0.0f;
    for (int step = 0; step <= lloyd_steps; step++) {
        float l[BLOCK], xl[BLOCK], ll[BLOCK];
        for (int j = 0; j < BLOCK; j++) l[j] = clamp_level(round_to_level(x[j] * id), -nmax, hi);
        for (int j = 0; j < BLOCK; j++) {
            xl[j] = l[j] * x[j];
            ll[j] = l[j] * l[j];
            levels[j] = (int32_t)l[j] + (int32_t)nmax;
        }
        const float sxl = sum_block(xl), sll = sum_block(ll);
        d = sll > 0.0f ? sxl / sll : 0.0f;
        id = safe_inverse(d);
    }
    *d_out = lb_fp32_to_fp16(clamp_level(d, -LB_FP16_MAX, LB_FP16_MAX));
    return LOWBIT_OK;
}

/*
 * Encodes one block with levels -nmax..hi: stores the fp16 scale and returns the unsigned levels
 * (level + nmax). The reference's own scale max / -nmax decides whether the block can be stored
 * at all; the searched one is clamped to fp16's range.
 */
static lowbit_status encode_symmetric_block(const float *x, const float *importance, float nmax,
                                            float hi, const search_plan *plan, lb_half *d_out,
                                            int32_t levels[BLOCK]) {
    float amax;
    const float max = block_signed_extreme(x, &amax);
    const float d_ref = max / -nmax;
    if (!(fabsf(d_ref) <= LB_FP16_MAX)) return LOWBIT_ERR_SCALE_OVERFLOW;
    const int32_t offset = (int32_t)nmax;
    /* a block whose scale is far below fp16's smallest step encodes to zero whatever a search
       says; skipping it also keeps nmax / max finite for denormal blocks */
    if (!(amax >= 1e-30f)) {
        *d_out = 0;
        for (int j = 0; j < BLOCK; j++) levels[j] = offset;
        return LOWBIT_OK;
    }
    float d;
    d = search_symmetric_scale(x, importance, max, nmax, hi, plan);
    if (d == 0.0f) d = d_ref;
    *d_out = lb_fp32_to_fp16(clamp_level(d, -LB_FP16_MAX, LB_FP16_MAX));
    const float id = safe_inverse(lb_fp16_to_fp32(*d_out));
    for (int j = 0; j < BLOCK; j++) {
        levels[j] = (int32_t)clamp_level(round_to_level(x[j] * id), -nmax, hi) + offset;
    }
    return LOWBIT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Formats with a min: x ~ d * l + m, l in [0, nmax]                                            */
/* ------------------------------------------------------------------------------------------ */

typedef struct affine_fit {
    float d, m;
    float gain; /* d * sum w x l + m * sum w x: the error is sum w x^2 minus this */
} affine_fit;

/* The sums a least-squares fit of d and m needs, for the levels of one candidate. */
typedef struct affine_sums {
    float sw, sx;   /* sum w, sum w x: the same for every candidate */
    float sl, sll, sxl;
} affine_sums;

/*
 * Weighted least-squares d and m for fixed levels l (the 2x2 normal equations
 * [sum w l^2, sum w l; sum w l, sum w] [d; m] = [sum w x l; sum w x]), in double because the
 * determinant cancels. Returns 0 when the levels are all equal (no unique fit).
 */
static int solve_affine(const affine_sums *s, affine_fit *fit) {
    const double sw = s->sw, sx = s->sx, sl = s->sl, sll = s->sll, sxl = s->sxl;
    const double det = sw * sll - sl * sl;
    if (!(det > 1e-12 * sw * sll)) return 0;
    const double d = (sw * sxl - sx * sl) / det;
    const double m = (sll * sx - sl * sxl) / det;
    fit->d = (float)d;
    fit->m = (float)m;
    fit->gain = (float)(d * sxl + m * sx);
    return 1;
}

/* Rounds (x - m) * id to levels in [0, nmax] and gathers sum w l, w l^2, w x l (w = 1 if w is
   NULL); the levels go to `levels` unless it is NULL. */
static inline void affine_pass(const float *x, const float *w, float m, float id, float nmax,
                               int32_t *levels, affine_sums *s) {
    float l[BLOCK], wl[BLOCK], ll[BLOCK], xl[BLOCK];
    for (int j = 0; j < BLOCK; j++) l[j] = clamp_level(round_to_level((x[j] - m) * id), 0.0f, nmax);
    if (w) {
        for (int j = 0; j < BLOCK; j++) {
            wl[j] = w[j] * l[j];
            ll[j] = wl[j] * l[j];
            xl[j] = wl[j] * x[j];
        }
    } else {
        for (int j = 0; j < BLOCK; j++) {
            wl[j] = l[j];
            ll[j] = l[j] * l[j];
            xl[j] = l[j] * x[j];
        }
    }
    if (levels) {
        for (int j = 0; j < BLOCK; j++) levels[j] = (int32_t)l[j];
    }
    s->sl = sum_block(wl);
    s->sll = sum_block(ll);
    s->sxl = sum_block(xl);
}

static void weight_sums(const float *x, const float *w, affine_sums *s) {
    float ws[BLOCK], wx[BLOCK];
    for (int j = 0; j < BLOCK; j++) {
        ws[j] = w ? w[j] : 1.0f;
        wx[j] = w ? w[j] * x[j] : x[j];
    }
    s->sw = sum_block(ws);
    s->sx = sum_block(wx);
}

/* The searched scale and min (see search_plan); `best` holds the fallback on entry. */
static void search_affine(const float *x, const float *w, float min, float max, float nmax,
                          const search_plan *plan, affine_sums *s, affine_fit *best) {
    best->gain = -INFINITY;
    affine_fit fit;
    for (int c = 0; c < plan->n_deltas; c++) {
        const float id = (nmax + plan->deltas[c]) / (max - min);
        /* the grid anchored at the min, at the max and centred: with weights, clipping the
           lighter end pays */
        const float anchors[3] = {min, max - nmax / id, 0.5f * (min + max) - 0.5f * nmax / id};
        for (int a = 0; a < 3; a++) {
            affine_pass(x, w, anchors[a], id, nmax, NULL, s);
            if (solve_affine(s, &fit) && fit.gain > best->gain) *best = fit;
        }
    }
    for (int step = 0; step < plan->lloyd_steps && best->gain > -INFINITY; step++) {
        affine_pass(x, w, best->m, safe_inverse(best->d), nmax, NULL, s);
        if (!(solve_affine(s, &fit) && fit.gain > best->gain)) break;
        *best = fit;
    }
}

/*
 * The fast path without an importance matrix: round at the single candidate step from the min,
 * fit scale and min by least squares to those levels (optionally re-round and re-fit), keep the
 * levels of the last rounding.
 */
static lowbit_status fast_affine_block(const float *x, float nmax, float delta, int lloyd_steps,
                                       lb_half *d_out, lb_half *m_out, int32_t levels[BLOCK]) {
    float min, max;
    block_min_max(x, &min, &max);
    if (!(fabsf(min) <= LB_FP16_MAX && (max - min) / nmax <= LB_FP16_MAX)) {
        return LOWBIT_ERR_SCALE_OVERFLOW;
    }
    /* a range far below fp16's smallest step: the block is its min (nmax / range could overflow) */
    float id = max - min >= 1e-30f ? (nmax + delta) / (max - min) : 0.0f;
    affine_fit fit = {0.0f, min, 0.0f};
    float xs[BLOCK];
    for (int j = 0; j < BLOCK; j++) xs[j] = x[j];
    const float sx = sum_block(xs);
    for (int step = 0; step <= lloyd_steps; step++) {
        const float m = fit.m;
        float l[BLOCK], ll[BLOCK], xl[BLOCK];
        for (int j = 0; j < BLOCK; j++) {
            l[j] = clamp_level(round_to_level((x[j] - m) * id), 0.0f, nmax);
        }
        for (int j = 0; j < BLOCK; j++) {
            ll[j] = l[j] * l[j];
            xl[j] = l[j] * x[j];
            levels[j] = (int32_t)l[j];
        }
        /* unweighted, the level sums are integers below 2^24, so the determinant is exact in
           float and the 2x2 solve needs no double */
        const float sll = sum_block(ll), sxl = sum_block(xl), sl = sum_block(l);
        const float det = (float)BLOCK * sll - sl * sl;
        if (!(det > 0.0f)) break; /* all levels equal: the block is (about) its min */
        const float inv_det = 1.0f / det;
        fit.d = ((float)BLOCK * sxl - sx * sl) * inv_det;
        fit.m = (sll * sx - sl * sxl) * inv_det;
        id = safe_inverse(fit.d);
    }
    *d_out = lb_fp32_to_fp16(clamp_level(fit.d, -LB_FP16_MAX, LB_FP16_MAX));
    *m_out = lb_fp32_to_fp16(clamp_level(fit.m, -LB_FP16_MAX, LB_FP16_MAX));
    return LOWBIT_OK;
}

/*
 * Encodes one block with levels 0..nmax: stores the fp16 scale and min and returns the levels.
 * The reference's (max - min) / nmax and min decide whether the block can be stored at all.
 */
static lowbit_status encode_affine_block(const float *x, const float *importance, float nmax,
                                         const search_plan *plan, lb_half *d_out,
                                         lb_half *m_out, int32_t levels[BLOCK]) {
    float min, max;
    block_min_max(x, &min, &max);
    if (!(fabsf(min) <= LB_FP16_MAX && (max - min) / nmax <= LB_FP16_MAX)) {
        return LOWBIT_ERR_SCALE_OVERFLOW;
    }
    affine_fit fit = {(max - min) / nmax, min, 0.0f};
    /* a range far below fp16's smallest step: the block is its min (and nmax / range could
       overflow) */
    if (!(max - min >= 1e-30f)) {
        *d_out = 0;
        *m_out = lb_fp32_to_fp16(min);
        for (int j = 0; j < BLOCK; j++) levels[j] = 0;
        return LOWBIT_OK;
    }
    affine_sums s;
    weight_sums(x, importance, &s);
    search_affine(x, importance, min, max, nmax, plan, &s, &fit);
    *d_out = lb_fp32_to_fp16(clamp_level(fit.d, -LB_FP16_MAX, LB_FP16_MAX));
    *m_out = lb_fp32_to_fp16(clamp_level(fit.m, -LB_FP16_MAX, LB_FP16_MAX));
    const float id = safe_inverse(lb_fp16_to_fp32(*d_out)), m = lb_fp16_to_fp32(*m_out);
    for (int j = 0; j < BLOCK; j++) {
        levels[j] = (int32_t)clamp_level(round_to_level((x[j] - m) * id), 0.0f, nmax);
    }
    return LOWBIT_OK;
}

/* Candidate offsets of the fast paths (tuned on normal and Student-t blocks) and the searches
   with importance: a fine grid, as with uneven weights the best level assignment changes at
   small steps of the scale. */
#define FAST_DELTA_Q4_0 0.25f
#define FAST_DELTA_Q5_0 0.5f
#define FAST_DELTA_Q4_1 0.5f
#define FAST_DELTA_Q5_1 0.5f
static const float fine_deltas[] = {-1.0f, -0.9f, -0.8f, -0.7f, -0.6f, -0.5f, -0.4f, -0.3f,
                                    -0.2f, -0.1f, 0.0f,  0.1f,  0.2f,  0.3f,  0.4f,  0.5f,
                                    0.6f,  0.7f,  0.8f,  0.9f,  1.0f,  1.1f,  1.2f,  1.3f,
                                    1.4f,  1.5f,  1.6f,  1.7f,  1.8f,  1.9f,  2.0f};
static const search_plan weighted_search = SEARCH(fine_deltas, 3);
static const float q8_deltas[] = {0.0f};
static const search_plan plain_search_q8 = SEARCH(q8_deltas, 0);
static const search_plan weighted_search_q8 = SEARCH(q8_deltas, 1);

/* ------------------------------------------------------------------------------------------ */
/* Q4_0                                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Reference: d = max / -8 (the largest-magnitude element maps to level 0), levels truncated from
   x / d + 8.5 and capped at 15. */
lowbit_status lb_quantize_ref_q4_0(const float *src, void *dst, int64_t n,
                                   const float *importance) {
    (void)importance;
    block_q4_0 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        const float max = first_signed_extreme(src);
        const float d = max / -8.0f;
        if (lb_store_fp16_scale(d, &y[b].d) != LOWBIT_OK) return LOWBIT_ERR_SCALE_OVERFLOW;
        const float id = safe_inverse(d);
        int32_t levels[BLOCK];
        for (int j = 0; j < BLOCK; j++) {
            const int q = (int)(src[j] * id + 8.5f);
            levels[j] = q < 15 ? q : 15;
        }
        pack_nibbles(levels, y[b].qs);
    }
    return LOWBIT_OK;
}

lowbit_status lb_quantize_q4_0(const float *src, void *dst, int64_t n, const float *importance) {
    block_q4_0 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        const float *imp = importance ? importance + b * BLOCK : NULL;
        int32_t levels[BLOCK];
        const lowbit_status st =
            imp ? encode_symmetric_block(src, imp, 8.0f, 7.0f, &weighted_search, &y[b].d, levels)
                : fast_symmetric_block(src, 8.0f, 7.0f, FAST_DELTA_Q4_0, 0, &y[b].d, levels);
        if (st != LOWBIT_OK) return st;
        pack_nibbles(levels, y[b].qs);
    }
    return LOWBIT_OK;
}

void lb_dequantize_q4_0(const void *src, float *dst, int64_t n) {
    const block_q4_0 *x = src;
    for (int64_t b = 0; b < n / BLOCK; b++, dst += BLOCK) {
        const float d = lb_fp16_to_fp32(x[b].d);
        for (int j = 0; j < HALF_BLOCK; j++) {
            dst[j] = (float)((x[b].qs[j] & 0x0F) - 8) * d;
            dst[j + HALF_BLOCK] = (float)((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

float lb_vec_dot_q4_0(int64_t n, const void *weights, const void *activations) {
    const block_q4_0 *x = weights;
    const block_q8_0 *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / BLOCK; b++) {
        int32_t sumi = 0;
        for (int j = 0; j < HALF_BLOCK; j++) {
            sumi += ((x[b].qs[j] & 0x0F) - 8) * y[b].qs[j];
            sumi += ((x[b].qs[j] >> 4) - 8) * y[b].qs[j + HALF_BLOCK];
        }
        sum += (float)sumi * lb_fp16_to_fp32(x[b].d) * lb_fp16_to_fp32(y[b].d);
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* Q4_1                                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Reference: m = min, d = (max - min) / 15, levels truncated from (x - min) / d + 0.5. */
lowbit_status lb_quantize_ref_q4_1(const float *src, void *dst, int64_t n,
                                   const float *importance) {
    (void)importance;
    block_q4_1 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        float min, max;
        block_min_max(src, &min, &max);
        const float d = (max - min) / 15.0f;
        if (lb_store_fp16_scale(d, &y[b].d) != LOWBIT_OK ||
            lb_store_fp16_scale(min, &y[b].m) != LOWBIT_OK) {
            return LOWBIT_ERR_SCALE_OVERFLOW;
        }
        const float id = safe_inverse(d);
        int32_t levels[BLOCK];
        for (int j = 0; j < BLOCK; j++) {
            const int q = (int)((src[j] - min) * id + 0.5f);
            levels[j] = q < 15 ? q : 15;
        }
        pack_nibbles(levels, y[b].qs);
    }
    return LOWBIT_OK;
}

lowbit_status lb_quantize_q4_1(const float *src, void *dst, int64_t n, const float *importance) {
    block_q4_1 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        const float *imp = importance ? importance + b * BLOCK : NULL;
        int32_t levels[BLOCK];
        const lowbit_status st =
            imp ? encode_affine_block(src, imp, 15.0f, &weighted_search, &y[b].d, &y[b].m, levels)
                : fast_affine_block(src, 15.0f, FAST_DELTA_Q4_1, 0, &y[b].d, &y[b].m, levels);
        if (st != LOWBIT_OK) return st;
        pack_nibbles(levels, y[b].qs);
    }
    return LOWBIT_OK;
}

void lb_dequantize_q4_1(const void *src, float *dst, int64_t n) {
    const block_q4_1 *x = src;
    for (int64_t b = 0; b < n / BLOCK; b++, dst += BLOCK) {
        const float d = lb_fp16_to_fp32(x[b].d), m = lb_fp16_to_fp32(x[b].m);
        for (int j = 0; j < HALF_BLOCK; j++) {
            dst[j] = (float)(x[b].qs[j] & 0x0F) * d + m;
            dst[j + HALF_BLOCK] = (float)(x[b].qs[j] >> 4) * d + m;
        }
    }
}

float lb_vec_dot_q4_1(int64_t n, const void *weights, const void *activations) {
    const block_q4_1 *x = weights;
    const block_q8_1 *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / BLOCK; b++) {
        int32_t sumi = 0;
        for (int j = 0; j < HALF_BLOCK; j++) {
            sumi += (x[b].qs[j] & 0x0F) * y[b].qs[j];
            sumi += (x[b].qs[j] >> 4) * y[b].qs[j + HALF_BLOCK];
        }
        /* sum (d l + m) (dy q) = d dy sum l q + m (dy sum q), the last factor being s */
        sum += lb_fp16_to_fp32(x[b].d) * lb_fp16_to_fp32(y[b].d) * (float)sumi +
               lb_fp16_to_fp32(x[b].m) * lb_fp16_to_fp32(y[b].s);
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* Q5_0                                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Reference: d = max / -16, levels truncated from x / d + 16.5 and capped at 31. */
lowbit_status lb_quantize_ref_q5_0(const float *src, void *dst, int64_t n,
                                   const float *importance) {
    (void)importance;
    block_q5_0 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        const float max = first_signed_extreme(src);
        const float d = max / -16.0f;
        if (lb_store_fp16_scale(d, &y[b].d) != LOWBIT_OK) return LOWBIT_ERR_SCALE_OVERFLOW;
        const float id = safe_inverse(d);
        int32_t levels[BLOCK];
        for (int j = 0; j < BLOCK; j++) {
            const int q = (int)(src[j] * id + 16.5f);
            levels[j] = q < 31 ? q : 31;
        }
        pack_nibbles(levels, y[b].qs);
        store_qh(y[b].qh, fifth_bits(levels));
    }
    return LOWBIT_OK;
}

lowbit_status lb_quantize_q5_0(const float *src, void *dst, int64_t n, const float *importance) {
    block_q5_0 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        const float *imp = importance ? importance + b * BLOCK : NULL;
        int32_t levels[BLOCK];
        const lowbit_status st =
            imp ? encode_symmetric_block(src, imp, 16.0f, 15.0f, &weighted_search, &y[b].d, levels)
                : fast_symmetric_block(src, 16.0f, 15.0f, FAST_DELTA_Q5_0, 1, &y[b].d, levels);
        if (st != LOWBIT_OK) return st;
        pack_nibbles(levels, y[b].qs);
        store_qh(y[b].qh, fifth_bits(levels));
    }
    return LOWBIT_OK;
}

void lb_dequantize_q5_0(const void *src, float *dst, int64_t n) {
    const block_q5_0 *x = src;
    for (int64_t b = 0; b < n / BLOCK; b++, dst += BLOCK) {
        const float d = lb_fp16_to_fp32(x[b].d);
        const uint32_t qh = load_qh(x[b].qh);
        for (int j = 0; j < HALF_BLOCK; j++) {
            const int lo = (x[b].qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
            const int hi = (x[b].qs[j] >> 4) | (int)((qh >> (j + HALF_BLOCK)) & 1) << 4;
            dst[j] = (float)(lo - 16) * d;
            dst[j + HALF_BLOCK] = (float)(hi - 16) * d;
        }
    }
}

float lb_vec_dot_q5_0(int64_t n, const void *weights, const void *activations) {
    const block_q5_0 *x = weights;
    const block_q8_0 *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / BLOCK; b++) {
        const uint32_t qh = load_qh(x[b].qh);
        int32_t sumi = 0;
        for (int j = 0; j < HALF_BLOCK; j++) {
            const int lo = (x[b].qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
            const int hi = (x[b].qs[j] >> 4) | (int)((qh >> (j + HALF_BLOCK)) & 1) << 4;
            sumi += (lo - 16) * y[b].qs[j] + (hi - 16) * y[b].qs[j + HALF_BLOCK];
        }
        sum += (float)sumi * lb_fp16_to_fp32(x[b].d) * lb_fp16_to_fp32(y[b].d);
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* Q5_1                                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Reference: m = min, d = (max - min) / 31, levels truncated from (x - min) / d + 0.5. */
lowbit_status lb_quantize_ref_q5_1(const float *src, void *dst, int64_t n,
                                   const float *importance) {
    (void)importance;
    block_q5_1 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        float min, max;
        block_min_max(src, &min, &max);
        const float d = (max - min) / 31.0f;
        if (lb_store_fp16_scale(d, &y[b].d) != LOWBIT_OK ||
            lb_store_fp16_scale(min, &y[b].m) != LOWBIT_OK) {
            return LOWBIT_ERR_SCALE_OVERFLOW;
        }
        const float id = safe_inverse(d);
        int32_t levels[BLOCK];
        for (int j = 0; j < BLOCK; j++) {
            const int q = (int)((src[j] - min) * id + 0.5f);
            levels[j] = q < 31 ? q : 31;
        }
        pack_nibbles(levels, y[b].qs);
        store_qh(y[b].qh, fifth_bits(levels));
    }
    return LOWBIT_OK;
}

lowbit_status lb_quantize_q5_1(const float *src, void *dst, int64_t n, const float *importance) {
    block_q5_1 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        const float *imp = importance ? importance + b * BLOCK : NULL;
        int32_t levels[BLOCK];
        const lowbit_status st =
            imp ? encode_affine_block(src, imp, 31.0f, &weighted_search, &y[b].d, &y[b].m, levels)
                : fast_affine_block(src, 31.0f, FAST_DELTA_Q5_1, 1, &y[b].d, &y[b].m, levels);
        if (st != LOWBIT_OK) return st;
        pack_nibbles(levels, y[b].qs);
        store_qh(y[b].qh, fifth_bits(levels));
    }
    return LOWBIT_OK;
}

void lb_dequantize_q5_1(const void *src, float *dst, int64_t n) {
    const block_q5_1 *x = src;
    for (int64_t b = 0; b < n / BLOCK; b++, dst += BLOCK) {
        const float d = lb_fp16_to_fp32(x[b].d), m = lb_fp16_to_fp32(x[b].m);
        const uint32_t qh = load_qh(x[b].qh);
        for (int j = 0; j < HALF_BLOCK; j++) {
            const int lo = (x[b].qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
            const int hi = (x[b].qs[j] >> 4) | (int)((qh >> (j + HALF_BLOCK)) & 1) << 4;
            dst[j] = (float)lo * d + m;
            dst[j + HALF_BLOCK] = (float)hi * d + m;
        }
    }
}

float lb_vec_dot_q5_1(int64_t n, const void *weights, const void *activations) {
    const block_q5_1 *x = weights;
    const block_q8_1 *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / BLOCK; b++) {
        const uint32_t qh = load_qh(x[b].qh);
        int32_t sumi = 0;
        for (int j = 0; j < HALF_BLOCK; j++) {
            const int lo = (x[b].qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
            const int hi = (x[b].qs[j] >> 4) | (int)((qh >> (j + HALF_BLOCK)) & 1) << 4;
            sumi += lo * y[b].qs[j] + hi * y[b].qs[j + HALF_BLOCK];
        }
        sum += lb_fp16_to_fp32(x[b].d) * lb_fp16_to_fp32(y[b].d) * (float)sumi +
               lb_fp16_to_fp32(x[b].m) * lb_fp16_to_fp32(y[b].s);
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* Q8_0 and Q8_1                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* The reference 8-bit encoding, byte for byte: d = amax / 127, q = round(x / d) with ties away from
   zero (roundf), d as fp16. Returns the level sum for Q8_1's s. */
static int reference_q8_levels(const float *x, float *d_out, int8_t qs[BLOCK]) {
    const float amax = fabsf(first_signed_extreme(x));
    const float d = amax / 127.0f;
    const float id = safe_inverse(d);
    int sum = 0;
    for (int j = 0; j < BLOCK; j++) {
        qs[j] = (int8_t)roundf(x[j] * id);
        sum += qs[j];
    }
    *d_out = d;
    return sum;
}

lowbit_status lb_quantize_ref_q8_0(const float *src, void *dst, int64_t n,
                                   const float *importance) {
    (void)importance;
    block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        float d;
        (void)reference_q8_levels(src, &d, y[b].qs);
        if (lb_store_fp16_scale(d, &y[b].d) != LOWBIT_OK) return LOWBIT_ERR_SCALE_OVERFLOW;
    }
    return LOWBIT_OK;
}

/* The searched 8-bit encoding shared by Q8_0 and Q8_1 (levels -127..127); returns the level sum. */
static lowbit_status search_q8_block(const float *x, const float *importance, lb_half *d_out,
                                     int8_t qs[BLOCK], int *level_sum) {
    int32_t levels[BLOCK];
    const lowbit_status st =
        encode_symmetric_block(x, importance, 127.0f, 127.0f,
                               importance ? &weighted_search_q8 : &plain_search_q8, d_out, levels);
    if (st != LOWBIT_OK) return st;
    int sum = 0;
    for (int j = 0; j < BLOCK; j++) {
        qs[j] = (int8_t)(levels[j] - 127);
        sum += qs[j];
    }
    *level_sum = sum;
    return LOWBIT_OK;
}

lowbit_status lb_quantize_q8_0(const float *src, void *dst, int64_t n, const float *importance) {
    block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        int sum;
        const lowbit_status st =
            search_q8_block(src, importance ? importance + b * BLOCK : NULL, &y[b].d,
                            y[b].qs, &sum);
        if (st != LOWBIT_OK) return st;
    }
    return LOWBIT_OK;
}

void lb_dequantize_q8_0(const void *src, float *dst, int64_t n) {
    const block_q8_0 *x = src;
    for (int64_t b = 0; b < n / BLOCK; b++, dst += BLOCK) {
        const float d = lb_fp16_to_fp32(x[b].d);
        for (int j = 0; j < BLOCK; j++) dst[j] = (float)x[b].qs[j] * d;
    }
}

float lb_vec_dot_q8_0(int64_t n, const void *weights, const void *activations) {
    const block_q8_0 *x = weights, *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / BLOCK; b++) {
        int32_t sumi = 0;
        for (int j = 0; j < BLOCK; j++) sumi += x[b].qs[j] * y[b].qs[j];
        sum += (float)sumi * (lb_fp16_to_fp32(x[b].d) * lb_fp16_to_fp32(y[b].d));
    }
    return sum;
}

/* Reference Q8_1: Q8_0's levels and scale plus s = fp16(d * sum q), with d the unrounded scale. */
lowbit_status lb_quantize_ref_q8_1(const float *src, void *dst, int64_t n,
                                   const float *importance) {
    (void)importance;
    block_q8_1 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        float d;
        const int sum = reference_q8_levels(src, &d, y[b].qs);
        if (lb_store_fp16_scale(d, &y[b].d) != LOWBIT_OK ||
            lb_store_fp16_scale((float)sum * d, &y[b].s) != LOWBIT_OK) {
            return LOWBIT_ERR_SCALE_OVERFLOW;
        }
    }
    return LOWBIT_OK;
}

lowbit_status lb_quantize_q8_1(const float *src, void *dst, int64_t n, const float *importance) {
    block_q8_1 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        int sum;
        const lowbit_status st =
            search_q8_block(src, importance ? importance + b * BLOCK : NULL, &y[b].d,
                            y[b].qs, &sum);
        if (st != LOWBIT_OK) return st;
        if (lb_store_fp16_scale((float)sum * lb_fp16_to_fp32(y[b].d), &y[b].s) != LOWBIT_OK) {
            return LOWBIT_ERR_SCALE_OVERFLOW;
        }
    }
    return LOWBIT_OK;
}

void lb_dequantize_q8_1(const void *src, float *dst, int64_t n) {
    const block_q8_1 *x = src;
    for (int64_t b = 0; b < n / BLOCK; b++, dst += BLOCK) {
        const float d = lb_fp16_to_fp32(x[b].d);
        for (int j = 0; j < BLOCK; j++) dst[j] = (float)x[b].qs[j] * d;
    }
}

float lb_vec_dot_q8_1(int64_t n, const void *weights, const void *activations) {
    const block_q8_1 *x = weights, *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / BLOCK; b++) {
        int32_t sumi = 0;
        for (int j = 0; j < BLOCK; j++) sumi += x[b].qs[j] * y[b].qs[j];
        sum += (float)sumi * (lb_fp16_to_fp32(x[b].d) * lb_fp16_to_fp32(y[b].d));
    }
    return sum;
}
