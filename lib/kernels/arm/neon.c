/*
 * AArch64 Advanced SIMD (baseline NEON) kernels: the dot products of Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, IQ4_NL and Q8_1 with Q8_0/Q8_1 activations, of Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS and
 * Q8_K with Q8_K activations, of the float formats F32, F16 and BF16 (with multi-token
 * versions), and the activation quantizers Q8_0, Q8_1 and Q8_K.
 *
 * Dot products: each block's weights are unpacked into signed bytes laid out like the activation
 * block's qs (element j in byte j), multiplied by the activation bytes with widening multiplies
 * (s8 x s8 -> s16, never saturating: |w * a| <= 128 * 128) and summed pairwise into s32 lanes
 * (vpadalq), so every block's integer sum is exactly the scalar reference's. Per-sub-block scales
 * of the K-quants are applied to those s32 lanes (vmlaq_n_s32), still in exact integers. The
 * integer sums are then combined with the block scales in float in the reference's own order, so
 * the results equal the references bit for bit. The float formats' sums go in vector lanes, so
 * theirs differ from the references by the order of the additions.
 *
 * Activation quantizers: bytes identical to quantize_ref, by doing the same float operations: the
 * largest magnitude is a max (order free), the rounding is roundf's ties-away (FCVTAS) for
 * Q8_0/Q8_1 and lb_nearest_int's magic-number trick, bit for bit, for Q8_K.
 *
 * neon_dotprod.c overrides the hottest of these with SDOT versions where the CPU has them.
 */
#include "../../formats/blocks.h"
#include "../kernels.h"
#include "neon_common.h"
#include "../q8_rows.h"

#include <arm_neon.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* acc += the 16 products w * a, summed pairwise into 4 s32 lanes. */
static inline int32x4_t dot16(int32x4_t acc, int8x16_t w, int8x16_t a) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w), vget_low_s8(a)));
    return vpadalq_s16(acc, vmull_high_s8(w, a));
}


static inline int8x16_t low_nibbles(uint8x16_t q) {
    return vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F)));
}
static inline int8x16_t high_nibbles(uint8x16_t q) { return vreinterpretq_s8_u8(vshrq_n_u8(q, 4)); }

/* Bit 0..7 in each group of 8 lanes: turns a replicated byte into 8 one-bit tests. */
static const uint8_t kBitOfLane[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};

/* The 5th bits of elements 16h..16h+15 of a Q5 block (qh bits 16h..16h+15) as 0 or 16 per byte. */
static inline int8x16_t fifth_bits16(const uint8_t qh[4], int h) {
    const uint8x8_t lo = vdup_n_u8(qh[2 * h]), hi = vdup_n_u8(qh[2 * h + 1]);
    const uint8x16_t set = vtstq_u8(vcombine_u8(lo, hi), vld1q_u8(kBitOfLane));
    return vreinterpretq_s8_u8(vandq_u8(set, vdupq_n_u8(16)));
}

/* ------------------------------------------------------------------------------------------ */
/* 32-element blocks with Q8_0 / Q8_1 activations                                             */
/* ------------------------------------------------------------------------------------------ */

static float dot_q4_0(int64_t n, const void *weights, const void *activations) {
    const block_q4_0 *x = weights;
    const block_q8_0 *y = activations;
    const int8x16_t eight = vdupq_n_s8(8);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_0; b++) {
        const uint8x16_t q = load_u8(x[b].qs);
        int32x4_t acc = dot16(vdupq_n_s32(0), vsubq_s8(low_nibbles(q), eight), load_i8(y[b].qs));
        acc = dot16(acc, vsubq_s8(high_nibbles(q), eight), load_i8(y[b].qs + 16));
        sum += (float)vaddvq_s32(acc) * half_to_float(x[b].d) * half_to_float(y[b].d);
    }
    return sum;
}

static float dot_q4_1(int64_t n, const void *weights, const void *activations) {
    const block_q4_1 *x = weights;
    const block_q8_1 *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_1; b++) {
        const uint8x16_t q = load_u8(x[b].qs);
        int32x4_t acc = dot16(vdupq_n_s32(0), low_nibbles(q), load_i8(y[b].qs));
        acc = dot16(acc, high_nibbles(q), load_i8(y[b].qs + 16));
        sum += half_to_float(x[b].d) * half_to_float(y[b].d) * (float)vaddvq_s32(acc) +
               half_to_float(x[b].m) * half_to_float(y[b].s);
    }
    return sum;
}

/* The 5-bit levels of a Q5 block, elements 0..15 and 16..31, minus `offset`. */
static inline void q5_levels(const uint8_t qs[16], const uint8_t qh[4], int8_t offset,
                             int8x16_t out[2]) {
    const uint8x16_t q = load_u8(qs);
    const int8x16_t off = vdupq_n_s8(offset);
    out[0] = vsubq_s8(vorrq_s8(low_nibbles(q), fifth_bits16(qh, 0)), off);
    out[1] = vsubq_s8(vorrq_s8(high_nibbles(q), fifth_bits16(qh, 1)), off);
}

static float dot_q5_0(int64_t n, const void *weights, const void *activations) {
    const block_q5_0 *x = weights;
    const block_q8_0 *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK5_0; b++) {
        int8x16_t w[2];
        q5_levels(x[b].qs, x[b].qh, 16, w);
        int32x4_t acc = dot16(vdupq_n_s32(0), w[0], load_i8(y[b].qs));
        acc = dot16(acc, w[1], load_i8(y[b].qs + 16));
        sum += (float)vaddvq_s32(acc) * half_to_float(x[b].d) * half_to_float(y[b].d);
    }
    return sum;
}

static float dot_q5_1(int64_t n, const void *weights, const void *activations) {
    const block_q5_1 *x = weights;
    const block_q8_1 *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK5_1; b++) {
        int8x16_t w[2];
        q5_levels(x[b].qs, x[b].qh, 0, w);
        int32x4_t acc = dot16(vdupq_n_s32(0), w[0], load_i8(y[b].qs));
        acc = dot16(acc, w[1], load_i8(y[b].qs + 16));
        sum += half_to_float(x[b].d) * half_to_float(y[b].d) * (float)vaddvq_s32(acc) +
               half_to_float(x[b].m) * half_to_float(y[b].s);
    }
    return sum;
}

static float dot_q8_0(int64_t n, const void *weights, const void *activations) {
    const block_q8_0 *x = weights, *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        int32x4_t acc = dot16(vdupq_n_s32(0), load_i8(x[b].qs), load_i8(y[b].qs));
        acc = dot16(acc, load_i8(x[b].qs + 16), load_i8(y[b].qs + 16));
        sum += (float)vaddvq_s32(acc) * (half_to_float(x[b].d) * half_to_float(y[b].d));
    }
    return sum;
}

/* Q8_1 as a weight format, against Q8_1 activations: Q8_0's products on Q8_1's blocks. */
static float dot_q8_1(int64_t n, const void *weights, const void *activations) {
    const block_q8_1 *x = weights, *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK8_1; b++) {
        int32x4_t acc = dot16(vdupq_n_s32(0), load_i8(x[b].qs), load_i8(y[b].qs));
        acc = dot16(acc, load_i8(x[b].qs + 16), load_i8(y[b].qs + 16));
        sum += (float)vaddvq_s32(acc) * (half_to_float(x[b].d) * half_to_float(y[b].d));
    }
    return sum;
}

static float dot_iq4_nl(int64_t n, const void *weights, const void *activations) {
    const block_iq4_nl *x = weights;
    const block_q8_0 *y = activations;
    const int8x16_t values = vld1q_s8(lb_kvalues_iq4nl);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_NL; b++) {
        const uint8x16_t q = load_u8(x[b].qs);
        const int8x16_t lo = vqtbl1q_s8(values, vandq_u8(q, vdupq_n_u8(0x0F)));
        const int8x16_t hi = vqtbl1q_s8(values, vshrq_n_u8(q, 4));
        int32x4_t acc = dot16(vdupq_n_s32(0), lo, load_i8(y[b].qs));
        acc = dot16(acc, hi, load_i8(y[b].qs + 16));
        const float d = half_to_float(y[b].d) * half_to_float(x[b].d);
        sum += d * (float)vaddvq_s32(acc);
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* 256-element formats with Q8_K activations                                                    */
/* ------------------------------------------------------------------------------------------ */

static float dot_q2_K(int64_t n, const void *weights, const void *activations) {
    const block_q2_K *x = weights;
    const block_q8_K *y = activations;
    const uint8x16_t three = vdupq_n_u8(3);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8x16_t packed = load_u8(x[b].scales);
        const int16x8_t mins_lo =
            vreinterpretq_s16_u16(vmovl_u8(vshr_n_u8(vget_low_u8(packed), 4)));
        const int16x8_t mins_hi = vreinterpretq_s16_u16(vmovl_high_u8(vshrq_n_u8(packed, 4)));
        const int32_t sum_mins = vaddvq_s32(scaled_bsums16(mins_lo, mins_hi, y[b].bsums));
        int32x4_t acc = vdupq_n_s32(0);
        const int8_t *a = y[b].qs;
        for (int h = 0; h < 2; h++) {
            uint8x16_t q0 = load_u8(x[b].qs + 32 * h), q1 = load_u8(x[b].qs + 32 * h + 16);
            for (int k = 0; k < 4; k++, a += 32) {
                /* sub-blocks j = 8h + 2k (bytes 0..15) and j + 1 (bytes 16..31) at bit pair k */
                const int j = 8 * h + 2 * k;
                const int32x4_t d0 = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(q0, three)),
                                           load_i8(a));
                const int32x4_t d1 = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(q1, three)),
                                           load_i8(a + 16));
                acc = vmlaq_n_s32(acc, d0, x[b].scales[j] & 0x0F);
                acc = vmlaq_n_s32(acc, d1, x[b].scales[j + 1] & 0x0F);
                q0 = vshrq_n_u8(q0, 2);
                q1 = vshrq_n_u8(q1, 2);
            }
        }
        const float d = half_to_float(x[b].d) * y[b].d;
        const float dmin = half_to_float(x[b].dmin) * y[b].d;
        sum += d * (float)vaddvq_s32(acc) - dmin * (float)sum_mins;
    }
    return sum;
}

/* Q3_K's 16 sub-scales (6 bits stored with an offset of 32). */
static inline void q3_K_scales(const uint8_t packed[12], int32_t scales[16]) {
    for (int j = 0; j < 16; j++) {
        const int low = (packed[j % 8] >> (4 * (j / 8))) & 0xF;
        const int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        scales[j] = (low | (high << 4)) - 32;
    }
}

static float dot_q3_K(int64_t n, const void *weights, const void *activations) {
    const block_q3_K *x = weights;
    const block_q8_K *y = activations;
    const uint8x16_t three = vdupq_n_u8(3);
    const int8x16_t four = vdupq_n_s8(4);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t scales[16];
        q3_K_scales(x[b].scales, scales);
        const uint8x16_t m0 = load_u8(x[b].hmask), m1 = load_u8(x[b].hmask + 16);
        int32x4_t acc = vdupq_n_s32(0);
        const int8_t *a = y[b].qs;
        for (int h = 0; h < 2; h++) {
            uint8x16_t q0 = load_u8(x[b].qs + 32 * h), q1 = load_u8(x[b].qs + 32 * h + 16);
            for (int k = 0; k < 4; k++, a += 32) {
                /* level = low2 - 4 where the hmask bit 4h + k is clear */
                const uint8x16_t bit = vdupq_n_u8((uint8_t)(1u << (4 * h + k)));
                const int8x16_t sub0 = vreinterpretq_s8_u8(vbicq_u8(vreinterpretq_u8_s8(four),
                                                                    vtstq_u8(m0, bit)));
                const int8x16_t sub1 = vreinterpretq_s8_u8(vbicq_u8(vreinterpretq_u8_s8(four),
                                                                    vtstq_u8(m1, bit)));
                const int8x16_t w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q0, three)), sub0);
                const int8x16_t w1 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q1, three)), sub1);
                const int j = 8 * h + 2 * k;
                acc = vmlaq_n_s32(acc, dot16(vdupq_n_s32(0), w0, load_i8(a)), scales[j]);
                acc = vmlaq_n_s32(acc, dot16(vdupq_n_s32(0), w1, load_i8(a + 16)), scales[j + 1]);
                q0 = vshrq_n_u8(q0, 2);
                q1 = vshrq_n_u8(q1, 2);
            }
        }
        sum += half_to_float(x[b].d) * y[b].d * (float)vaddvq_s32(acc);
    }
    return sum;
}

/* Q4_K/Q5_K's eight 6-bit scales and mins (see kquants_minmax.c for the packing). */
static inline void k4_scales_mins(const uint8_t packed[12], int32_t sc[8], int32_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = packed[j] & 63;
        mn[j] = packed[j + 4] & 63;
        sc[j + 4] = (packed[j + 8] & 0x0F) | ((packed[j] >> 6) << 4);
        mn[j + 4] = (packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4);
    }
}

/* sum_i mn[i] * (bsums[2i] + bsums[2i + 1]). */
static inline int32_t k4_mins_sum(const int32_t mn[8], const int16_t bsums[16]) {
    const int16x8_t pairs = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));
    const int32x4_t p0 = vmovl_s16(vget_low_s16(pairs)), p1 = vmovl_high_s16(pairs);
    const int32x4_t acc = vmlaq_s32(vmulq_s32(p0, vld1q_s32(mn)), p1, vld1q_s32(mn + 4));
    return vaddvq_s32(acc);
}

static float dot_q4_K(int64_t n, const void *weights, const void *activations) {
    const block_q4_K *x = weights;
    const block_q8_K *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t sc[8], mn[8];
        k4_scales_mins(x[b].scales, sc, mn);
        const int32_t sum_mins = k4_mins_sum(mn, y[b].bsums);
        int32x4_t acc = vdupq_n_s32(0);
        for (int c = 0; c < 4; c++) {
            const uint8x16_t q0 = load_u8(x[b].qs + 32 * c), q1 = load_u8(x[b].qs + 32 * c + 16);
            const int8_t *a = y[b].qs + 64 * c;
            int32x4_t lo = dot16(vdupq_n_s32(0), low_nibbles(q0), load_i8(a));
            lo = dot16(lo, low_nibbles(q1), load_i8(a + 16));
            int32x4_t hi = dot16(vdupq_n_s32(0), high_nibbles(q0), load_i8(a + 32));
            hi = dot16(hi, high_nibbles(q1), load_i8(a + 48));
            acc = vmlaq_n_s32(acc, lo, sc[2 * c]);
            acc = vmlaq_n_s32(acc, hi, sc[2 * c + 1]);
        }
        const float d = half_to_float(x[b].d) * y[b].d;
        const float dmin = half_to_float(x[b].dmin) * y[b].d;
        sum += d * (float)vaddvq_s32(acc) - dmin * (float)sum_mins;
    }
    return sum;
}

static float dot_q5_K(int64_t n, const void *weights, const void *activations) {
    const block_q5_K *x = weights;
    const block_q8_K *y = activations;
    const uint8x16_t sixteen = vdupq_n_u8(16);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t sc[8], mn[8];
        k4_scales_mins(x[b].scales, sc, mn);
        const int32_t sum_mins = k4_mins_sum(mn, y[b].bsums);
        const uint8x16_t h0 = load_u8(x[b].qh), h1 = load_u8(x[b].qh + 16);
        int32x4_t acc = vdupq_n_s32(0);
        for (int c = 0; c < 4; c++) {
            const uint8x16_t q0 = load_u8(x[b].qs + 32 * c), q1 = load_u8(x[b].qs + 32 * c + 16);
            const uint8x16_t bit_lo = vdupq_n_u8((uint8_t)(1u << (2 * c)));
            const uint8x16_t bit_hi = vdupq_n_u8((uint8_t)(2u << (2 * c)));
            /* fifth bit of element 64c + l in qh[l] bit 2c, of 64c + 32 + l at bit 2c + 1 */
            const int8x16_t w0 = vorrq_s8(
                low_nibbles(q0), vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h0, bit_lo), sixteen)));
            const int8x16_t w1 = vorrq_s8(
                low_nibbles(q1), vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h1, bit_lo), sixteen)));
            const int8x16_t w2 = vorrq_s8(
                high_nibbles(q0), vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h0, bit_hi), sixteen)));
            const int8x16_t w3 = vorrq_s8(
                high_nibbles(q1), vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h1, bit_hi), sixteen)));
            const int8_t *a = y[b].qs + 64 * c;
            const int32x4_t lo = dot16(dot16(vdupq_n_s32(0), w0, load_i8(a)), w1, load_i8(a + 16));
            const int32x4_t hi = dot16(dot16(vdupq_n_s32(0), w2, load_i8(a + 32)), w3,
                                       load_i8(a + 48));
            acc = vmlaq_n_s32(acc, lo, sc[2 * c]);
            acc = vmlaq_n_s32(acc, hi, sc[2 * c + 1]);
        }
        const float d = half_to_float(x[b].d) * y[b].d;
        const float dmin = half_to_float(x[b].dmin) * y[b].d;
        sum += d * (float)vaddvq_s32(acc) - dmin * (float)sum_mins;
    }
    return sum;
}

/* The Q6_K levels (stored + 32) of rows k = 0..3 of half h, bytes l = 16p..16p+15, unsigned. */
static inline void q6_K_rows(const block_q6_K *x, int h, int p, uint8x16_t rows[4]) {
    const uint8x16_t mask = vdupq_n_u8(0x0F), three = vdupq_n_u8(0x30);
    const uint8x16_t l0 = load_u8(x->ql + 64 * h + 16 * p),
                     l1 = load_u8(x->ql + 64 * h + 32 + 16 * p);
    const uint8x16_t hb = load_u8(x->qh + 32 * h + 16 * p);
    rows[0] = vorrq_u8(vandq_u8(l0, mask), vandq_u8(vshlq_n_u8(hb, 4), three));
    rows[1] = vorrq_u8(vandq_u8(l1, mask), vandq_u8(vshlq_n_u8(hb, 2), three));
    rows[2] = vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(hb, three));
    rows[3] = vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(vshrq_n_u8(hb, 2), three));
}

static float dot_q6_K(int64_t n, const void *weights, const void *activations) {
    const block_q6_K *x = weights;
    const block_q8_K *y = activations;
    const int8x16_t offset = vdupq_n_s8(32);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32x4_t acc = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {
            for (int p = 0; p < 2; p++) {
                uint8x16_t rows[4];
                q6_K_rows(&x[b], h, p, rows);
                for (int k = 0; k < 4; k++) {
                    /* element 128h + 32k + 16p + i: sub-block 8h + 2k + p */
                    const int8x16_t w = vsubq_s8(vreinterpretq_s8_u8(rows[k]), offset);
                    const int8_t *a = y[b].qs + 128 * h + 32 * k + 16 * p;
                    acc = vmlaq_n_s32(acc, dot16(vdupq_n_s32(0), w, load_i8(a)),
                                      x[b].scales[8 * h + 2 * k + p]);
                }
            }
        }
        sum += half_to_float(x[b].d) * y[b].d * (float)vaddvq_s32(acc);
    }
    return sum;
}

static float dot_iq4_xs(int64_t n, const void *weights, const void *activations) {
    const block_iq4_xs *x = weights;
    const block_q8_K *y = activations;
    const int8x16_t values = vld1q_s8(lb_kvalues_iq4nl);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = half_to_float(x[b].d) * y[b].d;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint8x16_t q = load_u8(x[b].qs + 16 * ib);
            const int8x16_t lo = vqtbl1q_s8(values, vandq_u8(q, vdupq_n_u8(0x0F)));
            const int8x16_t hi = vqtbl1q_s8(values, vshrq_n_u8(q, 4));
            const int8_t *a = y[b].qs + 32 * ib;
            const int32_t sumi = vaddvq_s32(dot16(dot16(vdupq_n_s32(0), lo, load_i8(a)), hi,
                                                  load_i8(a + 16)));
            const int low = (x[b].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
            const int high = (x[b].scales_h >> (2 * ib)) & 3;
            sum += d * (float)((low | (high << 4)) - 32) * (float)sumi;
        }
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* Activation quantizers                                                                        */
/* Q8_K as a weight format, against Q8_K activations: widening products (exact for -128 too). */
static float dot_q8_K(int64_t n, const void *weights, const void *activations) {
    const block_q8_K *x = weights, *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32x4_t acc = vdupq_n_s32(0);
        for (int k = 0; k < QK_K / 16; k++) {
            acc = dot16(acc, load_i8(x[b].qs + 16 * k), load_i8(y[b].qs + 16 * k));
        }
        sum += x[b].d * y[b].d * (float)vaddvq_s32(acc);
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* Float formats: F32, F16, BF16 against activations of their own type                         */
/* ------------------------------------------------------------------------------------------ */

static inline float32x4_t load_f32x4(const float *p) { return vld1q_f32(p); }

/* fp16 -> fp32 (FCVTL) and bf16 -> fp32 (a shift into the high half) are exact. */
static inline float32x4_t load_f16x4(const uint16_t *p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

static inline float32x4_t load_bf16x4(const uint16_t *p) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}

static inline float f32_identity(float v) { return v; }

/* Accumulators per token: 32 elements per iteration, element 4k + j of each 32 in lane j of
   accumulator k. Eight chains of FMLA hide its latency on cores with several FMA pipes. */
#define FLOAT_ACCS 8
/* Tokens per pass over the weights: two tokens' sixteen accumulators and the eight weight
   vectors fit the 32 vector registers; more tokens take further passes over the row. */
#define FLOAT_PASS 2

/*
 * NAME(n, weights, activations, stride, n_tokens, out): a float weight row against n_tokens
 * activation rows lying stride bytes apart. Each weight vector is loaded and widened once per
 * pass, for all its tokens; the rest after the 32-element steps goes 4 at a time into the first
 * accumulator, then one by one. Every token gets the one-token kernel's operations in its order,
 * so the results are bit-identical, and equal the references to the order of the additions.
 */
#define DEFINE_FLOAT_DOT(NAME, ELEM, LOAD, TO_F32)                                                \
    static inline __attribute__((always_inline)) void NAME##_pass(                               \
        int64_t n, const ELEM *w, const void *activations, size_t stride, int n_tokens,          \
        float *out) {                                                                             \
        const ELEM *a[FLOAT_PASS];                                                                \
        float32x4_t acc[FLOAT_PASS][FLOAT_ACCS];                                                  \
        for (int t = 0; t < n_tokens; t++) {                                                      \
            a[t] = (const ELEM *)((const uint8_t *)activations + (size_t)t * stride);             \
            for (int k = 0; k < FLOAT_ACCS; k++) acc[t][k] = vdupq_n_f32(0.0f);                   \
        }                                                                                         \
        int64_t i = 0;                                                                            \
        for (; i + 4 * FLOAT_ACCS <= n; i += 4 * FLOAT_ACCS) {                                    \
            for (int k = 0; k < FLOAT_ACCS; k++) {                                                \
                const float32x4_t wk = LOAD(w + i + 4 * k);                                       \
                for (int t = 0; t < n_tokens; t++) {                                              \
                    acc[t][k] = vfmaq_f32(acc[t][k], wk, LOAD(a[t] + i + 4 * k));                 \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        for (; i + 4 <= n; i += 4) {                                                              \
            const float32x4_t wk = LOAD(w + i);                                                   \
            for (int t = 0; t < n_tokens; t++) {                                                  \
                acc[t][0] = vfmaq_f32(acc[t][0], wk, LOAD(a[t] + i));                             \
            }                                                                                     \
        }                                                                                         \
        for (int t = 0; t < n_tokens; t++) {                                                      \
            for (int k = FLOAT_ACCS / 2; k > 0; k /= 2) {                                         \
                for (int j = 0; j < k; j++) acc[t][j] = vaddq_f32(acc[t][j], acc[t][j + k]);      \
            }                                                                                     \
            float sum = vaddvq_f32(acc[t][0]);                                                    \
            for (int64_t j = i; j < n; j++) sum += TO_F32(w[j]) * TO_F32(a[t][j]);                \
            out[t] = sum;                                                                         \
        }                                                                                         \
    }                                                                                             \
    static inline __attribute__((always_inline)) void NAME##_tokens_body(                        \
        int64_t n, const void *weights, const void *activations, size_t stride, int n_tokens,    \
        float *out) {                                                                             \
        const uint8_t *act = activations;                                                         \
        int t = 0;                                                                                \
        for (; t + FLOAT_PASS <= n_tokens; t += FLOAT_PASS) {                                     \
            NAME##_pass(n, weights, act + (size_t)t * stride, stride, FLOAT_PASS, out + t);       \
        }                                                                                         \
        if (t < n_tokens) {                                                                       \
            NAME##_pass(n, weights, act + (size_t)t * stride, stride, n_tokens - t, out + t);     \
        }                                                                                         \
    }                                                                                             \
    static float NAME(int64_t n, const void *weights, const void *activations) {                 \
        float out;                                                                                \
        NAME##_tokens_body(n, weights, activations, 0, 1, &out);                                  \
        return out;                                                                               \
    }                                                                                             \
    static void NAME##_tokens(int64_t n, const void *weights, const void *activations,           \
                              size_t stride, int n_tokens, float *out) {                          \
        switch (n_tokens) {                                                                       \
        case 4: NAME##_tokens_body(n, weights, activations, stride, 4, out); break;               \
        case 3: NAME##_tokens_body(n, weights, activations, stride, 3, out); break;               \
        case 2: NAME##_tokens_body(n, weights, activations, stride, 2, out); break;               \
        default: NAME##_tokens_body(n, weights, activations, stride, 1, out); break;              \
        }                                                                                         \
    }

DEFINE_FLOAT_DOT(dot_f32, float, load_f32x4, f32_identity)
DEFINE_FLOAT_DOT(dot_f16, uint16_t, load_f16x4, lb_fp16_to_fp32)
DEFINE_FLOAT_DOT(dot_bf16, uint16_t, load_bf16x4, lb_bf16_to_fp32)

/* ------------------------------------------------------------------------------------------ */

/* Largest |x| over n floats (n a multiple of 16). NaN never wins: FMAXNM returns the number, as
   the scalar loop's `ax > amax` skips NaN. */
static inline float max_abs(const float *x, int n) {
    float32x4_t m0 = vdupq_n_f32(0.0f), m1 = m0, m2 = m0, m3 = m0;
    for (int i = 0; i < n; i += 16) {
        m0 = vmaxnmq_f32(m0, vabsq_f32(vld1q_f32(x + i)));
        m1 = vmaxnmq_f32(m1, vabsq_f32(vld1q_f32(x + i + 4)));
        m2 = vmaxnmq_f32(m2, vabsq_f32(vld1q_f32(x + i + 8)));
        m3 = vmaxnmq_f32(m3, vabsq_f32(vld1q_f32(x + i + 12)));
    }
    return vmaxnmvq_f32(vmaxnmq_f32(vmaxnmq_f32(m0, m1), vmaxnmq_f32(m2, m3)));
}

/* Four int32 vectors to 16 bytes, each truncated to its low byte like a C cast to int8_t. */
static inline int8x16_t narrow_to_i8(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    const int16x8_t ab = vcombine_s16(vmovn_s32(a), vmovn_s32(b));
    const int16x8_t cd = vcombine_s16(vmovn_s32(c), vmovn_s32(d));
    return vcombine_s8(vmovn_s16(ab), vmovn_s16(cd));
}

/* The reference 8-bit levels of one 32-element block (roundf of x / d, ties away from zero);
   returns the level sum and the unrounded scale. */
static int q8_block_levels(const float *x, float *d_out, int8_t qs[32]) {
    const float d = max_abs(x, 32) / 127.0f;
    float id = 0.0f;
    if (d != 0.0f) {
        id = 1.0f / d;
        if (!isfinite(id)) id = 0.0f;
    }
    int32x4_t q[8];
    for (int i = 0; i < 8; i++) q[i] = vcvtaq_s32_f32(vmulq_n_f32(vld1q_f32(x + 4 * i), id));
    const int8x16_t q0 = narrow_to_i8(q[0], q[1], q[2], q[3]);
    const int8x16_t q1 = narrow_to_i8(q[4], q[5], q[6], q[7]);
    vst1q_s8(qs, q0);
    vst1q_s8(qs + 16, q1);
    *d_out = d;
    return vaddlvq_s8(q0) + vaddlvq_s8(q1);
}

LB_Q8_ROW_QUANTIZERS(q8_block_levels)

/* Q8_K: the first element of largest magnitude, signed, maps to -127; levels by lb_nearest_int's
   magic-number rounding (the same float add and the same bit arithmetic), capped at 127. */
static void q8_K_block(const float *x, float amax, block_q8_K *y) {
    int first = 0;
    while (fabsf(x[first]) != amax) first++;
    const float iscale = -127.0f / x[first];
    const float32x4_t magic = vdupq_n_f32(12582912.0f);
    const int32x4_t mantissa = vdupq_n_s32(0x007fffff), bias = vdupq_n_s32(0x00400000);
    const int32x4_t cap = vdupq_n_s32(127);
    for (int g = 0; g < QK_K / 16; g++) {
        int32x4_t q[4];
        for (int i = 0; i < 4; i++) {
            const float32x4_t v =
                vaddq_f32(vmulq_n_f32(vld1q_f32(x + 16 * g + 4 * i), iscale), magic);
            const int32x4_t bits = vandq_s32(vreinterpretq_s32_f32(v), mantissa);
            q[i] = vminq_s32(vsubq_s32(bits, bias), cap);
        }
        const int8x16_t levels = narrow_to_i8(q[0], q[1], q[2], q[3]);
        vst1q_s8(y->qs + 16 * g, levels);
        y->bsums[g] = vaddlvq_s8(levels);
    }
    y->d = 1.0f / iscale;
}

static lowbit_status quantize_q8_K(const float *src, void *dst, int64_t n,
                                   const float *importance) {
    (void)importance;
    block_q8_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        const float amax = max_abs(src, QK_K);
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        q8_K_block(src, amax, &y[b]);
    }
    return LOWBIT_OK;
}

void lb_register_neon(lb_kernel_set *set) {
    set->vec_dot[LOWBIT_TYPE_Q4_0] = dot_q4_0;
    set->vec_dot[LOWBIT_TYPE_Q4_1] = dot_q4_1;
    set->vec_dot[LOWBIT_TYPE_Q5_0] = dot_q5_0;
    set->vec_dot[LOWBIT_TYPE_Q5_1] = dot_q5_1;
    set->vec_dot[LOWBIT_TYPE_Q8_0] = dot_q8_0;
    set->vec_dot[LOWBIT_TYPE_IQ4_NL] = dot_iq4_nl;
    set->vec_dot[LOWBIT_TYPE_Q2_K] = dot_q2_K;
    set->vec_dot[LOWBIT_TYPE_Q3_K] = dot_q3_K;
    set->vec_dot[LOWBIT_TYPE_Q4_K] = dot_q4_K;
    set->vec_dot[LOWBIT_TYPE_Q5_K] = dot_q5_K;
    set->vec_dot[LOWBIT_TYPE_Q6_K] = dot_q6_K;
    set->vec_dot[LOWBIT_TYPE_IQ4_XS] = dot_iq4_xs;
    set->vec_dot[LOWBIT_TYPE_Q8_1] = dot_q8_1;
    set->vec_dot[LOWBIT_TYPE_Q8_K] = dot_q8_K;
    /* the float formats with their multi-token kernels (kernels.h) */
    set->vec_dot[LOWBIT_TYPE_F32] = set->tokens_pair[LOWBIT_TYPE_F32] = dot_f32;
    set->vec_dot_tokens[LOWBIT_TYPE_F32] = dot_f32_tokens;
    set->vec_dot[LOWBIT_TYPE_F16] = set->tokens_pair[LOWBIT_TYPE_F16] = dot_f16;
    set->vec_dot_tokens[LOWBIT_TYPE_F16] = dot_f16_tokens;
    set->vec_dot[LOWBIT_TYPE_BF16] = set->tokens_pair[LOWBIT_TYPE_BF16] = dot_bf16;
    set->vec_dot_tokens[LOWBIT_TYPE_BF16] = dot_bf16_tokens;
    set->quantize_activation[LOWBIT_TYPE_Q8_0] = quantize_q8_0;
    set->quantize_activation[LOWBIT_TYPE_Q8_1] = quantize_q8_1;
    set->quantize_activation[LOWBIT_TYPE_Q8_K] = quantize_q8_K;
}
