/*
 * The K-quants without a min: Q3_K and Q6_K, and Q8_K, the activation format every 256-element
 * weight format is multiplied with.
 *
 * Q3_K and Q6_K share one shape: a 256-element super-block holds an fp16 scale d and 16 signed
 * integer sub-scales, one per 16 elements; element i decodes to d * scale[i/16] * q[i] with q a
 * signed integer level (Q3_K: -4..3, Q6_K: -32..31) and the sub-scales 6-bit (Q3_K, -32..31) or
 * 8-bit (Q6_K, -128..127). Only the bit packing differs, so both formats go through the same
 * encoder on unpacked arrays and differ only in their pack/unpack functions.
 */
#include "blocks.h"

#include <float.h>

#define SUB 16                   /* elements per sub-block (one sub-scale) */
#define NSUB (QK_K / SUB)        /* sub-blocks per super-block */

/* Rounding to nearest (ties to even) kept in float: adding 1.5 * 2^23 pushes the fraction out of
   the mantissa. Exact for |v| < 2^22; beyond, the result keeps the sign and size of v, which the
   clamp that always follows maps to the right end of the range. Unlike a conversion to int it
   vectorizes on any SIMD level. */
static inline float round_in_float(float v) {
    const float magic = 12582912.0f;
    return (v + magic) - magic;
}

static inline float clamp_float(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* cond ? a : b with bit masks: gcc turns a plain ?: that updates an array element into a
   conditional store, which stops the loop from vectorizing; this form always stores. */
static inline float select_float(int cond, float a, float b) {
    const uint32_t mask = (uint32_t)0 - (uint32_t)(cond != 0);
    return lb_bits_to_float((lb_float_to_bits(a) & mask) | (lb_float_to_bits(b) & ~mask));
}

static inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* ================================================================================================
 * Bit layouts (GGUF's Q3_K and Q6_K), as conversions to and from plain arrays of signed levels.
 * Within each half of 128 elements, element 32*k + l (k = 0..3, l = 0..31) shares a byte position
 * l with its three siblings: the layouts interleave four 32-element rows into the bit planes.
 * ============================================================================================== */

/* Q3_K sub-scales: 16 six-bit values stored with an offset of 32 in 12 bytes. Bytes 0..7 hold the
   low nibbles (scale j in byte j % 8, the low nibble for j < 8, the high one for j >= 8); byte
   8 + j % 4 holds the top two bits of scale j at bit 2 * (j / 4). */
static void q3_K_unpack_scales(const uint8_t packed[12], int scales[NSUB]) {
    for (int j = 0; j < NSUB; j++) {
        const int low = (packed[j % 8] >> (4 * (j / 8))) & 0xF;
        const int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        scales[j] = (low | (high << 4)) - 32;
    }
}

static void q3_K_pack_scales(const int scales[NSUB], uint8_t packed[12]) {
    memset(packed, 0, 12);
    for (int j = 0; j < NSUB; j++) {
        const int u = scales[j] + 32; /* 0..63 */
        packed[j % 8] |= (uint8_t)((u & 0xF) << (4 * (j / 8)));
        packed[8 + j % 4] |= (uint8_t)((u >> 4) << (2 * (j / 4)));
    }
}

/* Q3_K levels: the low 2 bits of element 128h + 32k + l sit in qs[32h + l] at bit 2k, and bit
   4h + k of hmask[l] is the third bit: set means the level is low2, clear means low2 - 4. */
static void q3_K_unpack_levels(const block_q3_K *b, int8_t q[QK_K]) {
    for (int h = 0; h < 2; h++) {
        for (int k = 0; k < 4; k++) {
            for (int l = 0; l < 32; l++) {
                const int low = (b->qs[32 * h + l] >> (2 * k)) & 3;
                const int high = (b->hmask[l] >> (4 * h + k)) & 1;
                q[128 * h + 32 * k + l] = (int8_t)(low - (high ? 0 : 4));
            }
        }
    }
}

/* Each output byte is built whole from its four (qs) or eight (hmask) levels, with l innermost
   so that the loops vectorize. */
static void q3_K_pack_levels(const int8_t q[QK_K], block_q3_K *b) {
    for (int h = 0; h < 2; h++) {
        const int8_t *r = q + 128 * h; /* rows k = 0..3 at r + 32k */
        for (int l = 0; l < 32; l++) {
            b->qs[32 * h + l] = (uint8_t)(((r[l] + 4) & 3) | (((r[32 + l] + 4) & 3) << 2) |
                                          (((r[64 + l] + 4) & 3) << 4) |
                                          (((r[96 + l] + 4) & 3) << 6));
        }
    }
    for (int l = 0; l < 32; l++) {
        int bits = 0;
        for (int row = 0; row < 8; row++) bits |= ((q[32 * row + l] + 4) >> 2) << row;
        b->hmask[l] = (uint8_t)bits;
    }
}

/* Q6_K levels: stored as level + 32 in 6 bits. Element 128h + 32k + l keeps its low nibble in
   ql[64h + 32(k % 2) + l] (low nibble for k < 2, high nibble for k >= 2) and its top two bits in
   qh[32h + l] at bit 2k. */
static void q6_K_unpack_levels(const block_q6_K *b, int8_t q[QK_K]) {
    for (int h = 0; h < 2; h++) {
        for (int k = 0; k < 4; k++) {
            for (int l = 0; l < 32; l++) {
                const int low = (b->ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0xF;
                const int high = (b->qh[32 * h + l] >> (2 * k)) & 3;
                q[128 * h + 32 * k + l] = (int8_t)((low | (high << 4)) - 32);
            }
        }
    }
}

static void q6_K_pack_levels(const int8_t q[QK_K], block_q6_K *b) {
    for (int h = 0; h < 2; h++) {
        const int8_t *r = q + 128 * h; /* rows k = 0..3 at r + 32k */
        for (int l = 0; l < 32; l++) {
            b->ql[64 * h + l] = (uint8_t)(((r[l] + 32) & 0xF) | (((r[64 + l] + 32) & 0xF) << 4));
            b->ql[64 * h + 32 + l] =
                (uint8_t)(((r[32 + l] + 32) & 0xF) | (((r[96 + l] + 32) & 0xF) << 4));
            b->qh[32 * h + l] = (uint8_t)(((r[l] + 32) >> 4) | (((r[32 + l] + 32) >> 4) << 2) |
                                          (((r[64 + l] + 32) >> 4) << 4) |
                                          (((r[96 + l] + 32) >> 4) << 6));
        }
    }
}

/* ================================================================================================
 * Decoding and dot products
 * ============================================================================================== */

/* x = (d * scale) * q, in this order and in float: the reference's rounding, so that decoding is
   bit-exact. */
static void dequantize_levels(float d, const int scales[NSUB], const int8_t q[QK_K], float *y) {
    for (int j = 0; j < NSUB; j++) {
        const float dl = d * (float)scales[j];
        for (int i = 0; i < SUB; i++) y[SUB * j + i] = dl * (float)q[SUB * j + i];
    }
}

/* Integer dot product of one super-block: each sub-block's sum of level * activation, times its
   sub-scale. Fits int32: at most 256 * 128 * 32 * 127 in magnitude. */
static int32_t dot_levels(const int scales[NSUB], const int8_t q[QK_K], const int8_t a[QK_K]) {
    int32_t total = 0;
    for (int j = 0; j < NSUB; j++) {
        int32_t sum = 0;
        for (int i = 0; i < SUB; i++) sum += q[SUB * j + i] * a[SUB * j + i];
        total += scales[j] * sum;
    }
    return total;
}

void lb_dequantize_q3_K(const void *src, float *dst, int64_t n) {
    const block_q3_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        int scales[NSUB];
        int8_t q[QK_K];
        q3_K_unpack_scales(x[b].scales, scales);
        q3_K_unpack_levels(&x[b], q);
        dequantize_levels(lb_fp16_to_fp32(x[b].d), scales, q, dst);
    }
}

float lb_vec_dot_q3_K(int64_t n, const void *weights, const void *activations) {
    const block_q3_K *x = weights;
    const block_q8_K *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int scales[NSUB];
        int8_t q[QK_K];
        q3_K_unpack_scales(x[b].scales, scales);
        q3_K_unpack_levels(&x[b], q);
        sum += lb_fp16_to_fp32(x[b].d) * y[b].d * (float)dot_levels(scales, q, y[b].qs);
    }
    return sum;
}

static void q6_K_unpack_scales(const block_q6_K *b, int scales[NSUB]) {
    for (int j = 0; j < NSUB; j++) scales[j] = b->scales[j];
}

void lb_dequantize_q6_K(const void *src, float *dst, int64_t n) {
    const block_q6_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        int scales[NSUB];
        int8_t q[QK_K];
        q6_K_unpack_scales(&x[b], scales);
        q6_K_unpack_levels(&x[b], q);
        dequantize_levels(lb_fp16_to_fp32(x[b].d), scales, q, dst);
    }
}

float lb_vec_dot_q6_K(int64_t n, const void *weights, const void *activations) {
    const block_q6_K *x = weights;
    const block_q8_K *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int scales[NSUB];
        int8_t q[QK_K];
        q6_K_unpack_scales(&x[b], scales);
        q6_K_unpack_levels(&x[b], q);
        sum += lb_fp16_to_fp32(x[b].d) * y[b].d * (float)dot_levels(scales, q, y[b].qs);
    }
    return sum;
}

/* ================================================================================================
 * Encoding
 *
 * A super-block is encoded in unpacked form (fp16 d, integer sub-scales, integer levels), then
 * packed. Each format's geometry: levels -qn..qn-1, sub-scales -sn..sn-1, plus the candidate
 * lists of the search encoder (defined with it below).
 * ============================================================================================== */

typedef struct {
    int qn;                       /* levels -qn .. qn-1 */
    int sn;                       /* sub-scales -sn .. sn-1 */
    const float *plain_ratios;    /* search candidates without importance */
    int n_plain;
    const float *weighted_ratios; /* search candidates with importance */
    int n_weighted;
} kq_format;

typedef struct {
    float d;            /* the super-block scale, already rounded to fp16 */
    int scales[NSUB];
    int8_t q[QK_K];
} kq_unpacked;

/* Below this magnitude a sub-block is encoded as zeros: its scale would flush to zero in fp16
   anyway, and the inverse scales of the search would overflow. */
#define TINY_AMAX 1e-24f

/* ---- the reference encoder: scales from the maxima, round to nearest ---- */

/* The element of largest magnitude, with its sign (0 for an all-zero array). */
static float signed_max(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    return max;
}

/* Each element to its nearest level for a fixed scale, clamped. */
static void round_to_levels(const float *x, float scale, int qn, int8_t *q, int n) {
    if (scale == 0.0f) {
        memset(q, 0, (size_t)n);
        return;
    }
    const float inv = 1.0f / scale;
    for (int i = 0; i < n; i++) q[i] = (int8_t)clamp_int(lb_nearest_int(inv * x[i]), -qn, qn - 1);
}

/* Each sub-block's scale maps its largest-magnitude element to -qn (the longer side of the
   level range); d maps the largest sub-scale to -sn; levels are then rounded for the stored
   scales. */
static lowbit_status encode_reference(const float *x, const kq_format *f, kq_unpacked *out) {
    float sub_scale[NSUB];
    for (int j = 0; j < NSUB; j++) {
        const float max = signed_max(x + SUB * j, SUB);
        sub_scale[j] = fabsf(max) < TINY_AMAX ? 0.0f : max / (float)-f->qn;
    }
    const float smax = signed_max(sub_scale, NSUB);
    uint16_t dh = 0;
    if (lb_store_fp16_scale(smax / (float)-f->sn, &dh) != LOWBIT_OK) {
        return LOWBIT_ERR_SCALE_OVERFLOW;
    }
    out->d = lb_fp16_to_fp32(dh);
    for (int j = 0; j < NSUB; j++) {
        out->scales[j] = out->d == 0.0f
                             ? 0
                             : clamp_int(lb_nearest_int(sub_scale[j] / out->d), -f->sn, f->sn - 1);
        round_to_levels(x + SUB * j, out->d * (float)out->scales[j], f->qn, out->q + SUB * j, SUB);
    }
    return LOWBIT_OK;
}

/* ---- the search encoder ----
 *
 * It works on the super-block transposed, x[i][j] = element i of sub-block j, so that the inner
 * loops run across the 16 sub-blocks: each sub-block is a vector lane with its own running sums,
 * and no loop needs a horizontal reduction (which gcc would not vectorize without reassociating
 * float sums). Levels are kept as floats holding small integers. Conditions only ever select
 * between values computed in every lane: gcc does not vectorize a loop in which an operation that
 * might trap (a division, or any float operation) runs conditionally, nor one that stores to an
 * array conditionally. */

typedef struct {
    float x[SUB][NSUB];
    float w[SUB][NSUB];  /* weight of each element: importance (with a floor), or 1 */
    float wx[SUB][NSUB]; /* w * x, used by every least-squares sum */
    float max[NSUB];     /* each sub-block's element of largest magnitude, with its sign */
} kq_lanes;

/* The mean importance of a super-block (0 without one). Summed in 16 lanes to vectorize. */
static float mean_importance(const float *importance) {
    if (!importance) return 0.0f;
    float part[NSUB] = {0};
    for (int i = 0; i < SUB; i++) {
        for (int j = 0; j < NSUB; j++) part[j] += importance[NSUB * i + j];
    }
    float total = 0.0f;
    for (int j = 0; j < NSUB; j++) total += part[j];
    return total / (float)QK_K;
}

/* Transposes a super-block into lanes with its weights, and finds each sub-block's signed
   maximum from the lane-wise maximum and minimum. With importance, every weight gets a floor of
   1e-4 of the mean: elements of zero importance then still get levels that fit them, at no
   measurable cost to the weighted error. Without (floor 0), the weights are 1. */
static void load_lanes(const float *x, const float *importance, float weight_floor,
                       kq_lanes *t) {
    for (int i = 0; i < SUB; i++) {
        for (int j = 0; j < NSUB; j++) t->x[i][j] = x[SUB * j + i];
    }
    if (importance) {
        for (int i = 0; i < SUB; i++) {
            for (int j = 0; j < NSUB; j++) t->w[i][j] = importance[SUB * j + i] + weight_floor;
        }
    } else {
        for (int i = 0; i < SUB; i++) {
            for (int j = 0; j < NSUB; j++) t->w[i][j] = 1.0f;
        }
    }
    float hi[NSUB] = {0}, lo[NSUB] = {0};
    for (int i = 0; i < SUB; i++) {
        for (int j = 0; j < NSUB; j++) {
            t->wx[i][j] = t->w[i][j] * t->x[i][j];
            hi[j] = select_float(t->x[i][j] > hi[j], t->x[i][j], hi[j]);
            lo[j] = select_float(t->x[i][j] < lo[j], t->x[i][j], lo[j]);
        }
    }
    for (int j = 0; j < NSUB; j++) t->max[j] = select_float(-lo[j] > hi[j], lo[j], hi[j]);
}

/* Candidate inverse scales of a sub-block, given as the level its largest-magnitude element
   x_max is sent to: t = ratio / x_max. Negative ratios put x_max on the longer (negative) side of
   the level range, positive ones on the shorter side; magnitudes beyond the range clip x_max,
   which pays off when it stands far out or, with importance, when it matters little. Each list
   was chosen greedily (each entry the one lowering the total error most, given those before) on
   16-element sub-blocks from normal and Student-t(3) distributions, with importance drawn from a
   log-normal for the weighted lists. The plain lists are short because speed counts there; with
   importance the best scale strays further from x_max and more candidates pay off. */
static const float q3_K_plain_ratios[] = {-4.2f, -3.2f, -4.6f};
static const float q3_K_weighted_ratios[] = {-4.4f, -6.0f, -3.2f, -3.9f,
                                             -8.0f, 4.8f,  -5.1f, 6.1f};
static const float q6_K_plain_ratios[] = {-31.8f, 29.9f, -31.1f, -29.1f,
                                          27.9f,  -32.5f, -27.1f, 25.9f};
static const float q6_K_weighted_ratios[] = {-32.0f, -28.8f, -31.2f, -27.2f, -24.8f,
                                             -30.4f, -32.8f, -28.0f, -23.2f, -26.4f};

static const kq_format q3_K_format = {4, 32, q3_K_plain_ratios, LB_ARRAY_LEN(q3_K_plain_ratios),
                                      q3_K_weighted_ratios, LB_ARRAY_LEN(q3_K_weighted_ratios)};
static const kq_format q6_K_format = {32, 128, q6_K_plain_ratios, LB_ARRAY_LEN(q6_K_plain_ratios),
                                      q6_K_weighted_ratios, LB_ARRAY_LEN(q6_K_weighted_ratios)};

/* The best scale found so far for each sub-block (lane). */
typedef struct {
    float gain[NSUB];      /* (sum w x q)^2 / sum w q^2: the error is sum w x^2 minus this */
    float scale[NSUB];     /* least-squares scale of the levels: sum w x q / sum w q^2 */
    float curvature[NSUB]; /* sum w q^2: how fast the error grows as the scale moves off */
} lane_best;

/* Rounds every lane to levels with its inverse scale inv[j], fits the weighted least-squares
   scale of those levels, and keeps it where it leaves a smaller error than the lane's best. */
static void try_inverse_scales(const kq_lanes *t, const float inv[NSUB], float qn,
                               lane_best *best) {
    float sxq[NSUB] = {0}, sqq[NSUB] = {0};
    for (int i = 0; i < SUB; i++) {
        for (int j = 0; j < NSUB; j++) {
            const float q = clamp_float(round_in_float(inv[j] * t->x[i][j]), -qn, qn - 1.0f);
            sxq[j] += t->wx[i][j] * q;
            sqq[j] += t->w[i][j] * q * q;
        }
    }
    for (int j = 0; j < NSUB; j++) {
        /* sum w q^2 is 0 only when every level rounded to 0 (or the weights vanish), and then
           sum w x q is 0 too: adding the smallest normal float to the denominator gives that
           candidate gain 0 and scale 0 without a 0/0. */
        const float fit = sxq[j] / (sqq[j] + FLT_MIN);
        const float gain = sxq[j] * fit;
        const int better = gain > best->gain[j];
        best->gain[j] = select_float(better, gain, best->gain[j]);
        best->scale[j] = select_float(better, fit, best->scale[j]);
        best->curvature[j] = select_float(better, sqq[j], best->curvature[j]);
    }
}

/* Per sub-block, the best of the candidate inverse scales ratio / x_max, each with its
   least-squares refit. Sub-blocks that are all (nearly) zero get scale 0. */
static void search_sub_scales(const kq_lanes *t, float qn, const float *ratios, int n_ratios,
                              lane_best *best) {
    float inv_max[NSUB], inv[NSUB];
    for (int j = 0; j < NSUB; j++) {
        const int tiny = fabsf(t->max[j]) < TINY_AMAX;
        inv_max[j] = select_float(tiny, 0.0f, 1.0f / (tiny ? 1.0f : t->max[j]));
        best->gain[j] = -1.0f;
        best->scale[j] = 0.0f;
        best->curvature[j] = 0.0f;
    }
    for (int k = 0; k < n_ratios; k++) {
        for (int j = 0; j < NSUB; j++) inv[j] = ratios[k] * inv_max[j];
        try_inverse_scales(t, inv, qn, best);
    }
}

/* Super-block scale: the largest sub-scale is sent to -sn (the longer side of the sub-scale
   range), the others rounded in proportion, and d is then the least-squares fit with each
   sub-block's error modelled as curvature * (s - d * l)^2, its levels held fixed. (Trying other
   ends of the range changed the error by under 0.1%: the sub-scales' own rounding costs little.)
   0 when every sub-block is zero. */
static float fit_super_scale(const lane_best *best, float sn) {
    const float smax = signed_max(best->scale, NSUB);
    if (smax == 0.0f) return 0.0f;
    const float to_end = -sn / smax;
    float num = 0.0f, den = 0.0f;
    for (int j = 0; j < NSUB; j++) {
        const float l = clamp_float(round_in_float(to_end * best->scale[j]), -sn, sn - 1.0f);
        num += best->curvature[j] * best->scale[j] * l;
        den += best->curvature[j] * l * l;
    }
    return den > 0.0f ? num / den : 0.0f;
}

/* Sub-scales for the stored d: with the levels of the search, each sub-block's least-squares
   scale is best->scale, and the nearest integer multiple of d is the best sub-scale for those
   levels (the error is a one-dimensional quadratic in it). */
static void round_sub_scales(const lane_best *best, float d, float sn, float sc[NSUB]) {
    const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < NSUB; j++) {
        sc[j] = clamp_float(round_in_float(best->scale[j] * inv_d), -sn, sn - 1.0f);
    }
}

/* One more step of coordinate descent: levels rounded for the stored scales d * sc[j], then each
   sub-scale refitted (least squares, rounded) to those levels. Each step can only lower the error
   with the other variables fixed. */
static void refit_sub_scales(const kq_lanes *t, float d, float qn, float sn, float sc[NSUB]) {
    float inv[NSUB], sxq[NSUB] = {0}, sqq[NSUB] = {0};
    for (int j = 0; j < NSUB; j++) {
        const float dl = d * sc[j];
        inv[j] = select_float(dl != 0.0f, 1.0f / (dl != 0.0f ? dl : 1.0f), 0.0f);
    }
    for (int i = 0; i < SUB; i++) {
        for (int j = 0; j < NSUB; j++) {
            const float q = clamp_float(round_in_float(inv[j] * t->x[i][j]), -qn, qn - 1.0f);
            sxq[j] += t->wx[i][j] * q;
            sqq[j] += t->w[i][j] * q * q;
        }
    }
    for (int j = 0; j < NSUB; j++) {
        const float ls = sxq[j] / ((sqq[j] + FLT_MIN) * d);
        const float rounded = clamp_float(round_in_float(ls), -sn, sn - 1.0f);
        sc[j] = select_float(sqq[j] > 0.0f, rounded, sc[j]);
    }
}

/* Final levels, in natural order: every element to its nearest level for its stored scale. */
static void round_final_levels(const float *x, float d, const int scales[NSUB], float qn,
                               int8_t q[QK_K]) {
    float inv[NSUB];
    for (int j = 0; j < NSUB; j++) {
        const float dl = d * (float)scales[j];
        inv[j] = select_float(dl != 0.0f, 1.0f / (dl != 0.0f ? dl : 1.0f), 0.0f);
    }
    /* one inverse per element, so that the rounding is a single flat loop: nested loops over
       sub-blocks and their 16 elements get unrolled and vectorized across sub-blocks instead */
    float inv_e[QK_K];
    for (int j = 0; j < NSUB; j++) {
        for (int i = 0; i < SUB; i++) inv_e[SUB * j + i] = inv[j];
    }
    for (int e = 0; e < QK_K; e++) {
        q[e] = (int8_t)clamp_float(round_in_float(inv_e[e] * x[e]), -qn, qn - 1.0f);
    }
}

/* The search encoder of one super-block: per sub-block, the best of a set of candidate scales
   with least-squares refits; d fitted to the sub-scales and stored in fp16; sub-scales rounded for
   it (with importance, refitted once more to re-rounded levels: a pass that costs as much as one
   candidate and gained under 0.1% without importance, where speed matters); levels rounded for
   the final scales. */
static lowbit_status encode_search(const float *x, const float *importance, const kq_format *f,
                                   kq_unpacked *out) {
    /* an importance summing to zero says nothing: weigh uniformly */
    const float mean = mean_importance(importance);
    const int weighted = mean > 0.0f;
    kq_lanes t;
    load_lanes(x, weighted ? importance : NULL, 1e-4f * mean, &t);
    /* The level bounds go through a volatile so the compiler treats them as run-time values: with
       both bounds known at compile time gcc turns each clamp into compare-and-blend sequences
       instead of one min and one max instruction, and the search runs 30% slower. */
    volatile float opaque_qn = (float)f->qn, opaque_sn = (float)f->sn;
    const float qn = opaque_qn, sn = opaque_sn;
    lane_best best;
    if (weighted) {
        search_sub_scales(&t, qn, f->weighted_ratios, f->n_weighted, &best);
    } else {
        search_sub_scales(&t, qn, f->plain_ratios, f->n_plain, &best);
    }
    uint16_t dh = 0;
    const float d_fit = fit_super_scale(&best, sn);
    if (lb_store_fp16_scale(d_fit, &dh) != LOWBIT_OK) return LOWBIT_ERR_SCALE_OVERFLOW;
    /* a scale below fp16's range keeps its smallest subnormal: the sub-scales then make up what
       they can, instead of the whole super-block decoding to zeros */
    if ((dh & 0x7fffu) == 0 && d_fit != 0.0f) dh = (uint16_t)((dh & 0x8000u) | 1u);
    const float d = lb_fp16_to_fp32(dh);
    float sc[NSUB];
    round_sub_scales(&best, d, sn, sc);
    if (weighted && d != 0.0f) refit_sub_scales(&t, d, qn, sn, sc);
    out->d = d;
    for (int j = 0; j < NSUB; j++) out->scales[j] = (int)sc[j];
    round_final_levels(x, d, out->scales, qn, out->q);
    return LOWBIT_OK;
}

/* ---- per-format entry points ---- */

static void q3_K_pack(const kq_unpacked *u, block_q3_K *b) {
    b->d = lb_fp32_to_fp16(u->d);
    q3_K_pack_scales(u->scales, b->scales);
    q3_K_pack_levels(u->q, b);
}

static void q6_K_pack(const kq_unpacked *u, block_q6_K *b) {
    b->d = lb_fp32_to_fp16(u->d);
    for (int j = 0; j < NSUB; j++) b->scales[j] = (int8_t)u->scales[j];
    q6_K_pack_levels(u->q, b);
}

/* A format's two row encoders, lb_quantize_ref_<name> (the reference's choices) and
   lb_quantize_<name> (the importance-weighted search), block by block through <name>_format and
   <name>_pack. A macro rather than a function taking the pack: each pack stays inlined. */
#define SYMMETRIC_ROW_ENCODERS(name)                                                               \
    lowbit_status lb_quantize_ref_##name(const float *src, void *dst, int64_t n,                   \
                                         const float *importance) {                                \
        (void)importance;                                                                          \
        block_##name *y = dst;                                                                     \
        for (int64_t b = 0; b < n / QK_K; b++) {                                                   \
            kq_unpacked u;                                                                         \
            if (encode_reference(src + b * QK_K, &name##_format, &u) != LOWBIT_OK) {               \
                return LOWBIT_ERR_SCALE_OVERFLOW;                                                  \
            }                                                                                      \
            name##_pack(&u, &y[b]);                                                                \
        }                                                                                          \
        return LOWBIT_OK;                                                                          \
    }                                                                                              \
                                                                                                   \
    lowbit_status lb_quantize_##name(const float *src, void *dst, int64_t n,                       \
                                     const float *importance) {                                    \
        block_##name *y = dst;                                                                     \
        for (int64_t b = 0; b < n / QK_K; b++) {                                                   \
            kq_unpacked u;                                                                         \
            const float *w = importance ? importance + b * QK_K : NULL;                            \
            if (encode_search(src + b * QK_K, w, &name##_format, &u) != LOWBIT_OK) {               \
                return LOWBIT_ERR_SCALE_OVERFLOW;                                                  \
            }                                                                                      \
            name##_pack(&u, &y[b]);                                                                \
        }                                                                                          \
        return LOWBIT_OK;                                                                          \
    }

SYMMETRIC_ROW_ENCODERS(q3_K)
SYMMETRIC_ROW_ENCODERS(q6_K)

/* ================================================================================================
 * Q8_K: the activation format of every 256-block weight format
 * ============================================================================================== */

/* The reference encoder, byte for byte: the scale comes from the element of largest magnitude,
   signed, so that element maps to -127 exactly; bsums keep the sum of every 16 quants for the
   min terms of the formats with mins. */
lowbit_status lb_quantize_ref_q8_K(const float *src, void *dst, int64_t n,
                                   const float *importance) {
    (void)importance;
    block_q8_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            const float ax = fabsf(src[j]);
            if (ax > amax) {
                amax = ax;
                max = src[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            const int v = lb_nearest_int(iscale * src[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[b].qs[16 * g + j];
            y[b].bsums[g] = (int16_t)sum;
        }
        y[b].d = 1.0f / iscale;
    }
    return LOWBIT_OK;
}

lowbit_status lb_quantize_q8_K(const float *src, void *dst, int64_t n, const float *importance) {
    return lb_quantize_ref_q8_K(src, dst, n, importance);
}

void lb_dequantize_q8_K(const void *src, float *dst, int64_t n) {
    const block_q8_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        for (int j = 0; j < QK_K; j++) *dst++ = x[b].d * x[b].qs[j];
    }
}

float lb_vec_dot_q8_K(int64_t n, const void *weights, const void *activations) {
    const block_q8_K *x = weights, *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t sumi = 0;
        for (int j = 0; j < QK_K; j++) sumi += x[b].qs[j] * y[b].qs[j];
        sum += x[b].d * y[b].d * (float)sumi;
    }
    return sum;
}
