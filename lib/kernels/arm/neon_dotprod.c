/*
 * AArch64 kernels with the dot-product extension (SDOT, armv8.2-a+dotprod; this file alone is
 * built with it): the hottest dot products, Q4_0 and Q8_0 with Q8_0 activations and Q4_K and Q6_K
 * with Q8_K activations. The rest stay with neon.c.
 *
 * SDOT sums four s8 x s8 products into each s32 lane in one instruction, exactly, so the integer
 * sums are the scalar references' and, combined with the block scales in the reference's float
 * order, so are the results, bit for bit (as with neon.c).
 */
#include "../../formats/blocks.h"
#include "../kernels.h"

#include <arm_neon.h>

static inline float half_to_float(lb_half h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

static inline int8x16_t load_i8(const void *p) { return vld1q_s8((const int8_t *)p); }
static inline uint8x16_t load_u8(const void *p) { return vld1q_u8((const uint8_t *)p); }

static inline int8x16_t low_nibbles(uint8x16_t q) {
    return vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F)));
}
static inline int8x16_t high_nibbles(uint8x16_t q) { return vreinterpretq_s8_u8(vshrq_n_u8(q, 4)); }

static float dot_q4_0(int64_t n, const void *weights, const void *activations) {
    const block_q4_0 *x = weights;
    const block_q8_0 *y = activations;
    const int8x16_t eight = vdupq_n_s8(8);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_0; b++) {
        const uint8x16_t q = load_u8(x[b].qs);
        int32x4_t acc =
            vdotq_s32(vdupq_n_s32(0), vsubq_s8(low_nibbles(q), eight), load_i8(y[b].qs));
        acc = vdotq_s32(acc, vsubq_s8(high_nibbles(q), eight), load_i8(y[b].qs + 16));
        sum += (float)vaddvq_s32(acc) * half_to_float(x[b].d) * half_to_float(y[b].d);
    }
    return sum;
}

static float dot_q8_0(int64_t n, const void *weights, const void *activations) {
    const block_q8_0 *x = weights, *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        int32x4_t acc = vdotq_s32(vdupq_n_s32(0), load_i8(x[b].qs), load_i8(y[b].qs));
        acc = vdotq_s32(acc, load_i8(x[b].qs + 16), load_i8(y[b].qs + 16));
        sum += (float)vaddvq_s32(acc) * (half_to_float(x[b].d) * half_to_float(y[b].d));
    }
    return sum;
}

/* Q4_K's eight 6-bit scales and mins (see kquants_minmax.c for the packing). */
static inline void k4_scales_mins(const uint8_t packed[12], int32_t sc[8], int32_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = packed[j] & 63;
        mn[j] = packed[j + 4] & 63;
        sc[j + 4] = (packed[j + 8] & 0x0F) | ((packed[j] >> 6) << 4);
        mn[j + 4] = (packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4);
    }
}

static float dot_q4_K(int64_t n, const void *weights, const void *activations) {
    const block_q4_K *x = weights;
    const block_q8_K *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t sc[8], mn[8];
        k4_scales_mins(x[b].scales, sc, mn);
        /* min term: mn[i] times the activation sum of sub-block i (two bsums) */
        const int16x8_t pairs = vpaddq_s16(vld1q_s16(y[b].bsums), vld1q_s16(y[b].bsums + 8));
        const int32x4_t mins = vmlaq_s32(vmulq_s32(vmovl_s16(vget_low_s16(pairs)), vld1q_s32(mn)),
                                         vmovl_high_s16(pairs), vld1q_s32(mn + 4));
        int32x4_t acc = vdupq_n_s32(0);
        for (int c = 0; c < 4; c++) {
            const uint8x16_t q0 = load_u8(x[b].qs + 32 * c), q1 = load_u8(x[b].qs + 32 * c + 16);
            const int8_t *a = y[b].qs + 64 * c;
            int32x4_t lo = vdotq_s32(vdupq_n_s32(0), low_nibbles(q0), load_i8(a));
            lo = vdotq_s32(lo, low_nibbles(q1), load_i8(a + 16));
            int32x4_t hi = vdotq_s32(vdupq_n_s32(0), high_nibbles(q0), load_i8(a + 32));
            hi = vdotq_s32(hi, high_nibbles(q1), load_i8(a + 48));
            acc = vmlaq_n_s32(acc, lo, sc[2 * c]);
            acc = vmlaq_n_s32(acc, hi, sc[2 * c + 1]);
        }
        const float d = half_to_float(x[b].d) * y[b].d;
        const float dmin = half_to_float(x[b].dmin) * y[b].d;
        sum += d * (float)vaddvq_s32(acc) - dmin * (float)vaddvq_s32(mins);
    }
    return sum;
}

/* Q6_K: the unsigned levels u = level + 32 meet the activations in SDOT, and the offset's share,
   32 * sum_j scale_j * bsum_j, comes off at the end (exact: all in int32). */
static float dot_q6_K(int64_t n, const void *weights, const void *activations) {
    const block_q6_K *x = weights;
    const block_q8_K *y = activations;
    const uint8x16_t mask = vdupq_n_u8(0x0F), top = vdupq_n_u8(0x30);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const int8x16_t scales8 = load_i8(x[b].scales);
        const int16x8_t s_lo = vmovl_s8(vget_low_s8(scales8)), s_hi = vmovl_high_s8(scales8);
        const int16x8_t b_lo = vld1q_s16(y[b].bsums), b_hi = vld1q_s16(y[b].bsums + 8);
        int32x4_t offset = vmull_s16(vget_low_s16(s_lo), vget_low_s16(b_lo));
        offset = vmlal_high_s16(offset, s_lo, b_lo);
        offset = vmlal_s16(offset, vget_low_s16(s_hi), vget_low_s16(b_hi));
        offset = vmlal_high_s16(offset, s_hi, b_hi);
        int32x4_t acc = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {
            for (int p = 0; p < 2; p++) {
                const uint8x16_t l0 = load_u8(x[b].ql + 64 * h + 16 * p);
                const uint8x16_t l1 = load_u8(x[b].ql + 64 * h + 32 + 16 * p);
                const uint8x16_t hb = load_u8(x[b].qh + 32 * h + 16 * p);
                uint8x16_t rows[4];
                rows[0] = vorrq_u8(vandq_u8(l0, mask), vandq_u8(vshlq_n_u8(hb, 4), top));
                rows[1] = vorrq_u8(vandq_u8(l1, mask), vandq_u8(vshlq_n_u8(hb, 2), top));
                rows[2] = vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(hb, top));
                rows[3] = vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(vshrq_n_u8(hb, 2), top));
                for (int k = 0; k < 4; k++) {
                    /* element 128h + 32k + 16p + i: sub-block 8h + 2k + p */
                    const int8_t *a = y[b].qs + 128 * h + 32 * k + 16 * p;
                    const int32x4_t dot = vdotq_s32(vdupq_n_s32(0), vreinterpretq_s8_u8(rows[k]),
                                                    load_i8(a));
                    acc = vmlaq_n_s32(acc, dot, x[b].scales[8 * h + 2 * k + p]);
                }
            }
        }
        const int32_t sumi = vaddvq_s32(acc) - 32 * vaddvq_s32(offset);
        sum += half_to_float(x[b].d) * y[b].d * (float)sumi;
    }
    return sum;
}

void lb_register_neon_dotprod(lb_kernel_set *set) {
    set->vec_dot[LOWBIT_TYPE_Q4_0] = dot_q4_0;
    set->vec_dot[LOWBIT_TYPE_Q8_0] = dot_q8_0;
    set->vec_dot[LOWBIT_TYPE_Q4_K] = dot_q4_K;
    set->vec_dot[LOWBIT_TYPE_Q6_K] = dot_q6_K;
}
