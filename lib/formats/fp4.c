/*
 * 4-bit float formats: every weight is an E2M1 value (sign, 2 exponent bits, 1 mantissa bit:
 * magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6) times a block scale. Both dot with Q8_0 activations.
 *
 * As GGUF does, the E2M1 values are kept doubled, as the integers {0, 1, 2, 3, 4, 6, 8, 12} (code
 * bit 3 is the sign), and every scale is decoded halved, so the products are the same and a dot
 * product stays an integer sum.
 *
 * MXFP4 (OCP microscaling, 4.25 bpw): 32 elements share one E8M0 byte e, a bare power of two
 * 2^(e - 127) (decoded halved: 2^(e - 128)). qs[j] holds element j in its low nibble and element
 * j + 16 in its high nibble.
 *
 * NVFP4 (4.5 bpw, as GGUF stores it): 64 elements in four 16-element sub-blocks, each with an
 * unsigned FP8 E4M3 (UE4M3) scale byte: 4 exponent bits with bias 7, 3 mantissa bits, subnormals
 * below exponent 1, 0x7F (E4M3's NaN) decoded as zero; largest finite value 448. Sub-block s uses
 * qs[8 s .. 8 s + 7]: byte j holds element j in its low nibble and element j + 8 in its high one.
 */
#include "blocks.h"
#include "fp4.h"

/* The doubled E2M1 values by code: magnitudes 0..7, then the same negated (code 8 is -0). */
const int8_t lb_fp4_doubled[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* Largest doubled E2M1 magnitude. */
#define FP4_MAX_LEVEL 12.0f

/* ------------------------------------------------------------------------------------------ */
/* E2M1 codes                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Index (0..7) of the doubled E2M1 magnitude nearest to a >= 0: the count of midpoints between
   consecutive levels that lie below a. Branch-free, so loops over it vectorize. */
static inline int fp4_magnitude_index(float a) {
    return (a > 0.5f) + (a > 1.5f) + (a > 2.5f) + (a > 3.5f) + (a > 5.0f) + (a > 7.0f) +
           (a > 10.0f);
}

/* The 4-bit codes of the values nearest x[j] / s for 16 elements, given inv_s = 1 / s (-0 is
   never produced: small negatives get code 0). */
static void fp4_nearest_codes16(const float *x, float inv_s, int32_t codes[16]) {
    for (int j = 0; j < 16; j++) {
        const float a = fabsf(x[j]) * inv_s;
        const int32_t negative = (x[j] < 0.0f) & (a > 0.5f);
        codes[j] = fp4_magnitude_index(a) + 8 * negative;
    }
}

/* The doubled E2M1 magnitude nearest to u (0 <= u < 2^22; ties either way), branch-free and
   without a table lookup so that loops over it vectorize. Below 2 the levels are the integers:
   round with the 1.5 * 2^23 float trick. From 2 up they are exactly the floats with a single
   mantissa bit (2, 3, 4, 6, 8, 12): add half of that bit's weight to the bit pattern and clear
   the bits below it. The two are blended with an integer mask (a float select would become a
   branch), then clipped at 12. */
static inline float fp4_nearest_level(float u) {
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    const uint32_t small = lb_float_to_bits((u + magic) - magic);
    const uint32_t large = (lb_float_to_bits(u) + 0x00200000u) & 0xFFC00000u;
    const uint32_t use_small = (uint32_t) - (int32_t)(u < 2.0f);
    const float level = lb_bits_to_float((small & use_small) | (large & ~use_small));
    return level < FP4_MAX_LEVEL ? level : FP4_MAX_LEVEL;
}

/* Float sums are split into this many independent partial sums: the compiler may not reorder a
   single float sum, but it vectorizes the lanes. */
enum { LANES = 4 };

/* Weights of 1 for calls without an importance vector, as long as the largest block. */
static const float unit_weights[QK_MXFP4] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                             1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

/* sum_i w_i (a_i * inv_s - level_i)^2 over 16 magnitudes a with level_i the nearest doubled
   E2M1 magnitude: the (weighted) squared error of scale s = 1 / inv_s, in units of s^2. */
static float fp4_error16_in_units(const float *a, const float *w, float inv_s) {
    float lane_err[LANES] = {0};
    for (int j = 0; j < 16; j += LANES) {
        for (int l = 0; l < LANES; l++) {
            const float u = a[j + l] * inv_s;
            const float e = u - fp4_nearest_level(u);
            lane_err[l] += w[j + l] * e * e;
        }
    }
    return (lane_err[0] + lane_err[1]) + (lane_err[2] + lane_err[3]);
}

static void abs_values(const float *x, float *a, int n) {
    for (int j = 0; j < n; j++) a[j] = fabsf(x[j]);
}

static float abs_max(const float *x, int n) {
    float amax = 0.0f;
    for (int j = 0; j < n; j++) amax = LB_MAX(amax, fabsf(x[j]));
    return amax;
}

/* ------------------------------------------------------------------------------------------ */
/* E8M0 and UE4M3 scales                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Candidate E8M0 bytes stay in [1, 252]: 1 keeps 1 / scale finite, and with 252 the largest
   value 12 * 2^124 is still a finite float. */
enum { E8M0_LOWEST = 1, E8M0_HIGHEST = 252 };

/* The E8M0 byte that maps amax (> 0) into [8, 16) doubled units, floor(log2 amax) - 2 + 127:
   the reference's choice, clipping magnitudes above 1.5 * 2^floor(log2 amax). */
static int e8m0_for_abs_max(float amax) {
    const int biased_exponent = (int)(lb_float_to_bits(amax) >> 23); /* 0 for subnormals */
    const int e = biased_exponent - 127 - 2 + 127;
    return LB_MIN(LB_MAX(e, E8M0_LOWEST), E8M0_HIGHEST);
}

/* UE4M3 byte -> float, exactly as GGUF decodes it: bit 7 is ignored, 0 and 0x7F decode to 0. */
static inline float ue4m3_to_fp32(uint8_t x) {
    if (x == 0 || x == 0x7F) return 0.0f;
    const uint32_t exponent = (x >> 3) & 0xFu, mantissa = x & 7u;
    return exponent == 0 ? (float)mantissa * 0x1p-9f
                         : lb_bits_to_float(((exponent + 120u) << 23) | (mantissa << 20));
}

/* The UE4M3 scale halved, paired with the doubled E2M1 values. */
static inline float ue4m3_to_fp32_half(uint8_t x) { return 0.5f * ue4m3_to_fp32(x); }

/* Largest finite UE4M3 byte (448) */
#define UE4M3_MAX_CODE 0x7E
#define UE4M3_MAX 448.0f

/* The smallest UE4M3 byte (1..0x7E) whose value is >= v, for 0 < v <= 448. Bytes 1..0x7E
   decode to strictly increasing values: subnormals k * 2^-9 (k = 1..7), then normals whose
   byte is the biased exponent and the top 3 mantissa bits, so v's float bits give it directly
   (rounded up when lower mantissa bits are set; a carry moves on to the next binade). */
static int ue4m3_code_at_least(float v) {
    if (v <= 7.0f * 0x1p-9f) { /* ceil(v * 2^9), at least 1 */
        const int k = (int)(v * 512.0f);
        return LB_MAX(k + ((float)k < v * 512.0f), 1);
    }
    if (v <= 0x1p-6f) return 8; /* the smallest normal, 2^-6 */
    const uint32_t bits = lb_float_to_bits(v);
    const int exponent = (int)(bits >> 23) - 127;
    const int code = ((exponent + 7) << 3) | (int)((bits >> 20) & 7u);
    return code + ((bits & 0xFFFFFu) != 0);
}

/* The UE4M3 byte nearest v (0 < v <= 448), as the reference rounds: below the smallest normal
   it takes the nearest subnormal, saturating at 7 * 2^-9 rather than rounding up to 2^-6, and
   may give 0 (a zero scale) for v below 2^-10. */
static int ue4m3_nearest_code(float v) {
    if (v < 0x1p-6f) return LB_MIN(lb_nearest_int(v * 512.0f), 7);
    const int c = ue4m3_code_at_least(v);
    if (c > 1 && v - ue4m3_to_fp32((uint8_t)(c - 1)) < ue4m3_to_fp32((uint8_t)c) - v) return c - 1;
    return c;
}

/* ------------------------------------------------------------------------------------------ */
/* MXFP4                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static void mxfp4_pack(const float *x, uint8_t e, block_mxfp4 *y) {
    y->e = e;
    const float inv_s = 1.0f / lb_e8m0_half(e); /* an exact power of two for e >= 1 */
    int32_t low[16], high[16];
    fp4_nearest_codes16(x, inv_s, low);
    fp4_nearest_codes16(x + 16, inv_s, high);
    for (int j = 0; j < QK_MXFP4 / 2; j++) y->qs[j] = (uint8_t)(low[j] | (high[j] << 4));
}

/* The E8M0 byte with the least (weighted) error under nearest-value assignment. Scales are
   powers of two, so the reference's exponent and its two neighbours cover every useful choice:
   one lower clips the largest magnitudes harder, one higher clips nothing. Errors in units of
   each candidate's scale are brought to a common unit by exact factors of 4. */
static uint8_t mxfp4_best_e8m0(const float *x, const float *w, float amax) {
    float a[QK_MXFP4];
    abs_values(x, a, QK_MXFP4);
    const int center = e8m0_for_abs_max(amax);
    int best = center;
    float best_err = INFINITY;
    for (int e = LB_MAX(center - 1, E8M0_LOWEST); e <= LB_MIN(center + 1, E8M0_HIGHEST); e++) {
        static const float unit_ratio[3] = {0.25f, 1.0f, 4.0f}; /* (s_e / s_center)^2 */
        const float inv_s = 1.0f / lb_e8m0_half((uint8_t)e);
        const float err_in_units =
            fp4_error16_in_units(a, w, inv_s) + fp4_error16_in_units(a + 16, w + 16, inv_s);
        const float err = unit_ratio[e - center + 1] * err_in_units;
        if (err < best_err) {
            best_err = err;
            best = e;
        }
    }
    return (uint8_t)best;
}

static lowbit_status quantize_mxfp4_rows(const float *src, void *dst, int64_t n,
                                         const float *importance, int search) {
    block_mxfp4 *y = dst;
    for (int64_t b = 0; b < n / QK_MXFP4; b++) {
        const float *x = src + b * QK_MXFP4;
        const float amax = abs_max(x, QK_MXFP4);
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float *w = importance ? importance + b * QK_MXFP4 : unit_weights;
        const int e = search ? mxfp4_best_e8m0(x, w, amax) : e8m0_for_abs_max(amax);
        mxfp4_pack(x, (uint8_t)e, &y[b]);
    }
    return LOWBIT_OK; /* every finite block fits: E8M0 reaches 2^127 */
}

lowbit_status lb_quantize_ref_mxfp4(const float *src, void *dst, int64_t n,
                                    const float *importance) {
    (void)importance;
    return quantize_mxfp4_rows(src, dst, n, NULL, 0);
}

lowbit_status lb_quantize_mxfp4(const float *src, void *dst, int64_t n, const float *importance) {
    return quantize_mxfp4_rows(src, dst, n, importance, 1);
}

void lb_dequantize_mxfp4(const void *src, float *dst, int64_t n) {
    const block_mxfp4 *x = src;
    for (int64_t b = 0; b < n / QK_MXFP4; b++, dst += QK_MXFP4) {
        const float d = lb_e8m0_half(x[b].e);
        for (int j = 0; j < QK_MXFP4 / 2; j++) {
            dst[j] = (float)lb_fp4_doubled[x[b].qs[j] & 0xF] * d;
            dst[j + QK_MXFP4 / 2] = (float)lb_fp4_doubled[x[b].qs[j] >> 4] * d;
        }
    }
}

float lb_vec_dot_mxfp4(int64_t n, const void *weights, const void *activations) {
    const block_mxfp4 *x = weights;
    const block_q8_0 *a = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_MXFP4; b++) {
        int32_t sumi = 0;
        for (int j = 0; j < QK_MXFP4 / 2; j++) {
            sumi += lb_fp4_doubled[x[b].qs[j] & 0xF] * a[b].qs[j] +
                    lb_fp4_doubled[x[b].qs[j] >> 4] * a[b].qs[j + QK_MXFP4 / 2];
        }
        const float d = lb_fp16_to_fp32(a[b].d) * lb_e8m0_half(x[b].e);
        sum += d * (float)sumi;
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* NVFP4                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* The scale search: E2M1's levels are not evenly spaced, so which level hosts the largest
   magnitude changes how well the others fit, and the error over the scale has two clusters of
   minima: the largest magnitude near the top level 12 (raw scale near amax / 6, a little
   clipped or not), or near the level 8 (raw scale near 1.5 * amax / 6). Measured against a scan
   of all 126 scales on normal and heavy-tailed data, the best scale's ratio to amax / 6 lies in
   [0.84, 1.14] or [1.3, 1.68] in 99.7% of sub-blocks without weights; with importance weights
   the gap between is used too, so the whole range is scanned (about 9 codes). */
#define NVFP4_RATIO_LOW (1.0f / 1.2f)
#define NVFP4_RATIO_HIGH 1.68f

static void nvfp4_pack_sub(const float *x, uint8_t code, uint8_t *qs) {
    const float s = ue4m3_to_fp32_half(code);
    int32_t codes[QK_NVFP4_SUB];
    fp4_nearest_codes16(x, s > 0.0f ? 1.0f / s : 0.0f, codes);
    for (int j = 0; j < QK_NVFP4_SUB / 2; j++) {
        qs[j] = (uint8_t)(codes[j] | (codes[j + QK_NVFP4_SUB / 2] << 4));
    }
}

/* The UE4M3 byte of one 16-element sub-block: the reference's nearest to amax / 6 or, searching,
   the byte of least (weighted) squared error under nearest-value assignment among those whose
   ratio to amax / 6 lies in [NVFP4_RATIO_LOW, NVFP4_RATIO_HIGH]. */
static uint8_t nvfp4_sub_scale(const float *x, const float *w, float amax, int search) {
    const float raw = amax / (0.5f * FP4_MAX_LEVEL); /* amax / 6: the E2M1 (undoubled) scale */
    if (!search) return (uint8_t)ue4m3_nearest_code(raw);
    float a[QK_NVFP4_SUB];
    abs_values(x, a, QK_NVFP4_SUB);
    const int first = ue4m3_code_at_least(LB_MIN(raw * NVFP4_RATIO_LOW, UE4M3_MAX));
    const int last = ue4m3_code_at_least(LB_MIN(raw * NVFP4_RATIO_HIGH, UE4M3_MAX));
    int best = first;
    float best_err = INFINITY;
    for (int c = first; c <= last; c++) {
        const float s = ue4m3_to_fp32_half((uint8_t)c);
        const float err = s * s * fp4_error16_in_units(a, w, 1.0f / s);
        if (err < best_err) {
            best_err = err;
            best = c;
        }
    }
    return (uint8_t)best;
}

static lowbit_status quantize_nvfp4_rows(const float *src, void *dst, int64_t n,
                                         const float *importance, int search) {
    block_nvfp4 *y = dst;
    for (int64_t b = 0; b < n / QK_NVFP4; b++) {
        for (int s = 0; s < QK_NVFP4 / QK_NVFP4_SUB; s++) {
            const int64_t offset = b * QK_NVFP4 + s * QK_NVFP4_SUB;
            const float *x = src + offset;
            const float amax = abs_max(x, QK_NVFP4_SUB);
            /* the largest scale, 448, reaches 6 * 448; a larger magnitude cannot be held */
            if (amax > 0.5f * FP4_MAX_LEVEL * UE4M3_MAX) return LOWBIT_ERR_SCALE_OVERFLOW;
            uint8_t code = 0;
            if (amax > 0.0f) {
                code = nvfp4_sub_scale(x, importance ? importance + offset : unit_weights, amax,
                                       search);
            }
            y[b].d[s] = code;
            nvfp4_pack_sub(x, code, &y[b].qs[s * (QK_NVFP4_SUB / 2)]);
        }
    }
    return LOWBIT_OK;
}

lowbit_status lb_quantize_ref_nvfp4(const float *src, void *dst, int64_t n,
                                    const float *importance) {
    (void)importance;
    return quantize_nvfp4_rows(src, dst, n, NULL, 0);
}

lowbit_status lb_quantize_nvfp4(const float *src, void *dst, int64_t n, const float *importance) {
    return quantize_nvfp4_rows(src, dst, n, importance, 1);
}

void lb_dequantize_nvfp4(const void *src, float *dst, int64_t n) {
    const block_nvfp4 *x = src;
    for (int64_t b = 0; b < n / QK_NVFP4; b++) {
        for (int s = 0; s < QK_NVFP4 / QK_NVFP4_SUB; s++, dst += QK_NVFP4_SUB) {
            const float d = ue4m3_to_fp32_half(x[b].d[s]);
            const uint8_t *qs = &x[b].qs[s * (QK_NVFP4_SUB / 2)];
            for (int j = 0; j < QK_NVFP4_SUB / 2; j++) {
                dst[j] = (float)lb_fp4_doubled[qs[j] & 0xF] * d;
                dst[j + QK_NVFP4_SUB / 2] = (float)lb_fp4_doubled[qs[j] >> 4] * d;
            }
        }
    }
}

/* One NVFP4 block spans two Q8_0 blocks: sub-blocks 0-1 fall in the first, 2-3 in the second. */
float lb_vec_dot_nvfp4(int64_t n, const void *weights, const void *activations) {
    const block_nvfp4 *x = weights;
    const block_q8_0 *a = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_NVFP4; b++) {
        for (int s = 0; s < QK_NVFP4 / QK_NVFP4_SUB; s++) {
            const block_q8_0 *ab = &a[2 * b + s / 2];
            const int8_t *aq = ab->qs + (s % 2) * QK_NVFP4_SUB;
            const uint8_t *qs = &x[b].qs[s * (QK_NVFP4_SUB / 2)];
            int32_t sumi = 0;
            for (int j = 0; j < QK_NVFP4_SUB / 2; j++) {
                sumi += lb_fp4_doubled[qs[j] & 0xF] * aq[j] +
                        lb_fp4_doubled[qs[j] >> 4] * aq[j + QK_NVFP4_SUB / 2];
            }
            sum += lb_fp16_to_fp32(ab->d) * ue4m3_to_fp32_half(x[b].d[s]) * (float)sumi;
        }
    }
    return sum;
}
