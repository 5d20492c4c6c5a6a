/*
 * Ternary formats: every weight is d * t with t in {-1, 0, +1} and one fp16 scale d per
 * 256-element block. Both dot with Q8_K activations.
 *
 * TQ2_0 (2.0625 bpw) stores each trit as a 2-bit code t + 1. A block holds two 128-element
 * halves of 32 bytes each; within a half, byte j carries elements j, j + 32, j + 64 and j + 96 in
 * its bit pairs 0-1, 2-3, 4-5 and 6-7.
 *
 * TQ1_0 (1.6875 bpw) packs trits in base 3: five per byte in qs, four per byte in qh. A byte does
 * not hold the base-3 number itself but that number as a fixed-point fraction of 3^5 = 243,
 * rounded up: byte = ceil(v * 256 / 243). Then the leading trit is (byte * 3) >> 8, and
 * multiplying the byte by 3 modulo 256 shifts the next trit into the leading position, so
 * decoding needs only multiplications and shifts. Element order:
 *   qs[0..31]  byte m: elements m + 32 n      (n = 0..4, n = 0 the most significant trit)
 *   qs[32..47] byte m: elements 160 + m + 16 n
 *   qh[0..3]   byte m: elements 240 + m + 4 n (n = 0..3; the value is multiplied by 3 first so
 *              that its four trits also start at the most significant position)
 */
#include "blocks.h"

/* ------------------------------------------------------------------------------------------ */
/* Trit packing                                                                                */
/* ------------------------------------------------------------------------------------------ */

enum { TQ1_QS_WIDE = 32, TQ1_QS_NARROW = 16, TQ1_QH = QK_K / 64 };

/* The byte whose five base-3 digits, most significant first, are the codes c[0..4] (0..2). */
static uint8_t tq1_pack5(const uint8_t c[5]) {
    unsigned v = 0;
    for (int n = 0; n < 5; n++) v = v * 3 + c[n];
    return (uint8_t)((v * 256 + 242) / 243); /* ceiling of v / 243 in units of 1/256 */
}

/* The n-th base-3 digit (0..2) of a byte packed by tq1_pack5. */
static inline int tq1_digit(uint8_t byte, int n) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    const uint8_t shifted = (uint8_t)(byte * pow3[n]); /* modulo 256 drops the leading digits */
    return (shifted * 3) >> 8;
}

/* Packs 256 codes (t + 1, in 0..2, in element order) into a TQ1_0 block's qs and qh. */
static void tq1_pack_block(const uint8_t codes[QK_K], block_tq1_0 *y) {
    uint8_t c[5];
    for (int m = 0; m < TQ1_QS_WIDE; m++) {
        for (int n = 0; n < 5; n++) c[n] = codes[m + TQ1_QS_WIDE * n];
        y->qs[m] = tq1_pack5(c);
    }
    for (int m = 0; m < TQ1_QS_NARROW; m++) {
        for (int n = 0; n < 5; n++) c[n] = codes[160 + m + TQ1_QS_NARROW * n];
        y->qs[TQ1_QS_WIDE + m] = tq1_pack5(c);
    }
    for (int m = 0; m < TQ1_QH; m++) {
        for (int n = 0; n < 4; n++) c[n] = codes[240 + m + TQ1_QH * n];
        c[4] = 0; /* the fifth, least significant digit is a padding zero */
        y->qh[m] = tq1_pack5(c);
    }
}

/* Unpacks a TQ1_0 block's trits into t[0..255] in {-1, 0, +1}, in element order. */
static void tq1_unpack_block(const block_tq1_0 *x, int8_t t[QK_K]) {
    for (int n = 0; n < 5; n++) {
        for (int m = 0; m < TQ1_QS_WIDE; m++) {
            t[m + TQ1_QS_WIDE * n] = (int8_t)(tq1_digit(x->qs[m], n) - 1);
        }
    }
    for (int n = 0; n < 5; n++) {
        for (int m = 0; m < TQ1_QS_NARROW; m++) {
            t[160 + m + TQ1_QS_NARROW * n] = (int8_t)(tq1_digit(x->qs[TQ1_QS_WIDE + m], n) - 1);
        }
    }
    for (int n = 0; n < 4; n++) {
        for (int m = 0; m < TQ1_QH; m++) {
            t[240 + m + TQ1_QH * n] = (int8_t)(tq1_digit(x->qh[m], n) - 1);
        }
    }
}

/* Packs 256 codes (t + 1) into a TQ2_0 block's qs. */
static void tq2_pack_block(const uint8_t codes[QK_K], block_tq2_0 *y) {
    for (int half = 0; half < 2; half++) {
        const uint8_t *c = codes + 128 * half;
        for (int j = 0; j < 32; j++) {
            y->qs[32 * half + j] =
                (uint8_t)(c[j] | (c[j + 32] << 2) | (c[j + 64] << 4) | (c[j + 96] << 6));
        }
    }
}

/* Unpacks a TQ2_0 block's trits into t[0..255] in {-1, 0, +1}. */
static void tq2_unpack_block(const block_tq2_0 *x, int8_t t[QK_K]) {
    for (int half = 0; half < 2; half++) {
        for (int l = 0; l < 4; l++) {
            for (int j = 0; j < 32; j++) {
                t[128 * half + 32 * l + j] = (int8_t)(((x->qs[32 * half + j] >> (2 * l)) & 3) - 1);
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Choosing the trits and the scale                                                            */
/* ------------------------------------------------------------------------------------------ */

/* Reductions are split into this many independent partial results: the compiler may not reorder
   a single float sum, but it vectorizes the lanes. */
enum { LANES = 8 };

static float block_abs_max(const float *x) {
    float lane_max[LANES] = {0};
    for (int j = 0; j < QK_K; j += LANES) {
        for (int l = 0; l < LANES; l++) {
            const float a = fabsf(x[j + l]);
            lane_max[l] = a > lane_max[l] ? a : lane_max[l];
        }
    }
    float amax = 0.0f;
    for (int l = 0; l < LANES; l++) amax = LB_MAX(amax, lane_max[l]);
    return amax;
}

/* Codes (t + 1) of the nearest ternary values d * t for a stored scale d >= 0: t = sign(x)
   where |x| > d / 2, else 0 (all zeros when d = 0). */
static void nearest_trits(const float *x, float d, uint8_t codes[QK_K]) {
    const float half = d > 0.0f ? 0.5f * d : INFINITY;
    for (int j = 0; j < QK_K; j++) {
        codes[j] = (uint8_t)(1 + (x[j] > half) - (x[j] < -half));
    }
}

enum { TERNARY_BUCKETS = 128, TERNARY_REFINE_STEPS = 6 };

/* sum w a and sum w over the elements with a > threshold. */
static void support_sums(const float *a, const float *w, float threshold, float *sum_wa,
                         float *sum_w) {
    float wa[LANES] = {0}, ww[LANES] = {0};
    for (int j = 0; j < QK_K; j += LANES) {
        for (int l = 0; l < LANES; l++) {
            const float wl = w[j + l]; /* loaded unconditionally so the select vectorizes */
            const float wj = a[j + l] > threshold ? wl : 0.0f;
            wa[l] += wj * a[j + l];
            ww[l] += wj;
        }
    }
    float swa = 0.0f, sw = 0.0f;
    for (int l = 0; l < LANES; l++) {
        swa += wa[l];
        sw += ww[l];
    }
    *sum_wa = swa;
    *sum_w = sw;
}

/*
 * The scale minimising sum_i w_i (x_i - d t_i)^2 over d and the trits.
 *
 * For a fixed set S of nonzero trits (t_i = sign x_i there), the error is
 * sum w x^2 - (sum_S w|x|)^2 / sum_S w, minimised by d = sum_S w|x| / sum_S w (weighted least
 * squares). For a fixed d the best S is {|x| > d/2}, always a set of the largest magnitudes, so
 * the optimum is one of the 256 "top-k" sets. Instead of sorting, magnitudes are bucketed on a
 * uniform grid of [0, amax] and the bucket boundaries are scanned as thresholds (prefix sums from
 * the top); then alternating steps (S from d, d from S: Lloyd's algorithm for the two-level
 * quantizer) move that near-optimal threshold to an exact fixed point. Each step can only lower
 * the error.
 */
static float optimal_ternary_scale(const float *x, const float *w, float amax) {
    /* magnitudes in units of amax keep every sum below finite-float limits whatever the input */
    float a[QK_K];
    const float inv_amax = 1.0f / amax;
    for (int j = 0; j < QK_K; j++) a[j] = fabsf(x[j]) * inv_amax;

    float sum_wa[TERNARY_BUCKETS] = {0}, sum_w[TERNARY_BUCKETS] = {0};
    for (int j = 0; j < QK_K; j++) {
        const int b = LB_MIN((int)(a[j] * TERNARY_BUCKETS), TERNARY_BUCKETS - 1);
        sum_wa[b] += w[j] * a[j];
        sum_w[b] += w[j];
    }
    /* maximise (sum w a)^2 / sum w over thresholds, written s_wa * mean so that it stays within
       the range of the weights: a <= 1 makes the mean at most 1 */
    float best = -1.0f, s_wa = 0.0f, s_w = 0.0f, d = 1.0f;
    for (int b = TERNARY_BUCKETS - 1; b >= 0; b--) {
        s_wa += sum_wa[b];
        s_w += sum_w[b];
        const float mean = s_w > 0.0f ? s_wa / s_w : 0.0f;
        if (s_wa * mean > best) {
            best = s_wa * mean;
            d = mean;
        }
    }
    for (int step = 0; step < TERNARY_REFINE_STEPS; step++) {
        float wa, ww;
        support_sums(a, w, 0.5f * d, &wa, &ww);
        if (!(ww > 0.0f)) break;
        const float next = wa / ww;
        if (next == d) break;
        d = next;
    }
    return d * amax;
}

/* Scale and codes of one block: reference or searched. Returns the status of the fp16 store. */
static lowbit_status choose_ternary_block(const float *x, const float *w, int search,
                                          uint8_t codes[QK_K], lb_half *d_out) {
    /* the reference rule is d = the block's largest magnitude, trits rounded from x / d */
    const float amax = block_abs_max(x);
    float d = amax;
    /* below 2^-25 every scale rounds to a zero fp16 anyway (and 1 / amax could overflow) */
    if (search && amax >= 0x1p-25f) {
        float unit_weights[QK_K];
        if (!w) {
            for (int j = 0; j < QK_K; j++) unit_weights[j] = 1.0f;
        }
        d = optimal_ternary_scale(x, w ? w : unit_weights, amax);
    }
    const lowbit_status st = lb_store_fp16_scale(d, d_out);
    if (st != LOWBIT_OK) return st;
    /* trits are chosen against the scale as stored, so that rounding d costs nothing more */
    nearest_trits(x, lb_fp16_to_fp32(*d_out), codes);
    return LOWBIT_OK;
}

static lowbit_status quantize_tq1_rows(const float *src, void *dst, int64_t n,
                                       const float *importance, int search) {
    block_tq1_0 *y = dst;
    uint8_t codes[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float *w = importance ? importance + b * QK_K : NULL;
        const lowbit_status st = choose_ternary_block(src + b * QK_K, w, search, codes, &y[b].d);
        if (st != LOWBIT_OK) return st;
        tq1_pack_block(codes, &y[b]);
    }
    return LOWBIT_OK;
}

static lowbit_status quantize_tq2_rows(const float *src, void *dst, int64_t n,
                                       const float *importance, int search) {
    block_tq2_0 *y = dst;
    uint8_t codes[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float *w = importance ? importance + b * QK_K : NULL;
        const lowbit_status st = choose_ternary_block(src + b * QK_K, w, search, codes, &y[b].d);
        if (st != LOWBIT_OK) return st;
        tq2_pack_block(codes, &y[b]);
    }
    return LOWBIT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding and dot products                                                                   */
/* ------------------------------------------------------------------------------------------ */

static void scale_trits(const int8_t t[QK_K], float d, float *dst) {
    for (int j = 0; j < QK_K; j++) dst[j] = (float)t[j] * d;
}

/* Integer dot product of one block's trits with a Q8_K block, scaled by both scales. */
static float ternary_block_dot(const int8_t t[QK_K], lb_half d, const block_q8_K *a) {
    int32_t sum = 0;
    for (int j = 0; j < QK_K; j++) sum += t[j] * a->qs[j];
    return (float)sum * (lb_fp16_to_fp32(d) * a->d);
}

/* ------------------------------------------------------------------------------------------ */
/* The row functions: the two formats differ only in how trits are packed                      */
/* ------------------------------------------------------------------------------------------ */

#define TERNARY_ROW_FUNCTIONS(T, quantize_rows, unpack_block)                                   \
    lowbit_status lb_quantize_ref_##T(const float *src, void *dst, int64_t n,                   \
                                      const float *importance) {                                \
        (void)importance;                                                                       \
        return quantize_rows(src, dst, n, NULL, 0);                                             \
    }                                                                                           \
    lowbit_status lb_quantize_##T(const float *src, void *dst, int64_t n,                       \
                                  const float *importance) {                                    \
        return quantize_rows(src, dst, n, importance, 1);                                       \
    }                                                                                           \
    void lb_dequantize_##T(const void *src, float *dst, int64_t n) {                            \
        const block_##T *x = src;                                                               \
        int8_t t[QK_K];                                                                         \
        for (int64_t b = 0; b < n / QK_K; b++) {                                                \
            unpack_block(&x[b], t);                                                             \
            scale_trits(t, lb_fp16_to_fp32(x[b].d), dst + b * QK_K);                            \
        }                                                                                       \
    }                                                                                           \
    float lb_vec_dot_##T(int64_t n, const void *weights, const void *activations) {             \
        const block_##T *x = weights;                                                           \
        const block_q8_K *a = activations;                                                      \
        int8_t t[QK_K];                                                                         \
        float sum = 0.0f;                                                                       \
        for (int64_t b = 0; b < n / QK_K; b++) {                                                \
            unpack_block(&x[b], t);                                                             \
            sum += ternary_block_dot(t, x[b].d, &a[b]);                                         \
        }                                                                                       \
        return sum;                                                                             \
    }

TERNARY_ROW_FUNCTIONS(tq1_0, quantize_tq1_rows, tq1_unpack_block)
TERNARY_ROW_FUNCTIONS(tq2_0, quantize_tq2_rows, tq2_unpack_block)
