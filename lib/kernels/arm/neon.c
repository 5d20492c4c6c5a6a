/*
 * AArch64 Advanced SIMD (baseline NEON) kernels: the dot products of Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, IQ4_NL and Q8_1 with Q8_0/Q8_1 activations, of Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS and
 * Q8_K with Q8_K activations and of the float formats F32, F16 and BF16, each with a
 * multi-token version, and the activation quantizers Q8_0, Q8_1 and Q8_K.
 *
 * Dot products: each block's weights are unpacked into signed bytes laid out like the activation
 * block's qs (element j in byte j), multiplied by the activation bytes with widening multiplies
 * (s8 x s8 -> s16, never saturating: |w * a| <= 128 * 128) and summed pairwise into s32 lanes
 * (vpadalq), so every block's integer sum is exactly the scalar reference's. Per-sub-block scales
 * of the K-quants are applied to those s32 lanes (vmlaq_n_s32), still in exact integers. The
 * integer sums are then combined with the block scales in float in the reference's own order, so
 * the results equal the references bit for bit. Where the levels are small enough, two or four
 * products share an s16 lane (SMLAL) before the pairwise add, and Q2_K's and Q3_K's sub-scales
 * are multiplied into the weight bytes while unpacking (Q3_K's negated, to stay within s8):
 * other ways to the same exact integers. The float formats' sums go in vector lanes, so theirs
 * differ from the references by the order of the additions.
 *
 * Multi-token: every dot product is one body for a weight row against up to LB_DOT_TOKENS
 * activation rows (kernels.h, lb_vec_dot_tokens_fn), inlined with a constant token count. Each
 * block's weights are unpacked once and then meet each token's activations, and each token gets
 * the one-token kernel's integer and float operations (that kernel is the same body with one
 * token), so the results agree bit for bit and still equal the references.
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
#include <stddef.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* acc += the 16 products w * a, summed pairwise into 4 s32 lanes. */
static inline int32x4_t dot16(int32x4_t acc, int8x16_t w, int8x16_t a) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w), vget_low_s8(a)));
    return vpadalq_s16(acc, vmull_high_s8(w, a));
}

/* The same into a fresh accumulator: a pairwise add (SADDLP) in place of accumulating into a
   zeroed register, which GCC would copy from a zero vector each time. */
static inline int32x4_t dot16_new(int8x16_t w, int8x16_t a) {
    const int32x4_t acc = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(a)));
    return vpadalq_s16(acc, vmull_high_s8(w, a));
}

/* The 32 products w0 * a0 and w1 * a1 summed into 4 s32 lanes, for weights within -127..127
   (not -128): |w * a| <= 127 * 128, so two products share an s16 lane (SMLAL) before the
   pairwise adds, two fewer than dot16's. */
static inline int32x4_t dot32_small(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
    int16x8_t lo = vmull_s8(vget_low_s8(w0), vget_low_s8(a0));
    int16x8_t hi = vmull_high_s8(w0, a0);
    lo = vmlal_s8(lo, vget_low_s8(w1), vget_low_s8(a1));
    hi = vmlal_high_s8(hi, w1, a1);
    return vpadalq_s16(vpaddlq_s16(lo), hi);
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

/* Each format's weights as two vectors of s8 laid out like the activation block's qs. */

static inline void q4_0_weights(const block_q4_0 *x, int8x16_t w[2]) {
    const uint8x16_t q = load_u8(x->qs);
    w[0] = vsubq_s8(low_nibbles(q), vdupq_n_s8(8));
    w[1] = vsubq_s8(high_nibbles(q), vdupq_n_s8(8));
}

static inline void q4_1_weights(const block_q4_1 *x, int8x16_t w[2]) {
    const uint8x16_t q = load_u8(x->qs);
    w[0] = low_nibbles(q);
    w[1] = high_nibbles(q);
}

/* The 5-bit levels of a Q5 block, elements 0..15 and 16..31, minus `offset`. */
static inline void q5_levels(const uint8_t qs[16], const uint8_t qh[4], int8_t offset,
                             int8x16_t out[2]) {
    const uint8x16_t q = load_u8(qs);
    const int8x16_t off = vdupq_n_s8(offset);
    out[0] = vsubq_s8(vorrq_s8(low_nibbles(q), fifth_bits16(qh, 0)), off);
    out[1] = vsubq_s8(vorrq_s8(high_nibbles(q), fifth_bits16(qh, 1)), off);
}

static inline void q5_0_weights(const block_q5_0 *x, int8x16_t w[2]) {
    q5_levels(x->qs, x->qh, 16, w);
}

static inline void q5_1_weights(const block_q5_1 *x, int8x16_t w[2]) {
    q5_levels(x->qs, x->qh, 0, w);
}

static inline void q8_0_weights(const block_q8_0 *x, int8x16_t w[2]) {
    w[0] = load_i8(x->qs);
    w[1] = load_i8(x->qs + 16);
}

static inline void q8_1_weights(const block_q8_1 *x, int8x16_t w[2]) {
    w[0] = load_i8(x->qs);
    w[1] = load_i8(x->qs + 16);
}

static inline void iq4_nl_weights(const block_iq4_nl *x, int8x16_t w[2]) {
    const int8x16_t values = vld1q_s8(lb_kvalues_iq4nl);
    const uint8x16_t q = load_u8(x->qs);
    w[0] = vqtbl1q_s8(values, vandq_u8(q, vdupq_n_u8(0x0F)));
    w[1] = vqtbl1q_s8(values, vshrq_n_u8(q, 4));
}

/* A block's exact integer sum: dot16 twice, or dot32_small for levels within -127..127 (all
   but the 8-bit formats, whose weights may hold -128). */
static inline int32_t block32_sum(int small, const int8x16_t w[2], const int8_t *a) {
    const int8x16_t a0 = load_i8(a), a1 = load_i8(a + 16);
    if (small) return vaddvq_s32(dot32_small(w[0], w[1], a0, a1));
    return vaddvq_s32(dot16(dot16_new(w[0], a0), w[1], a1));
}

/* Each format's float step, the reference's own expression: sum + (its block term). */
#define STEP_SUMI_DX_DY(sum, sumi, x, y)                                                          \
    ((sum) + (float)(sumi) * half_to_float((x)->d) * half_to_float((y)->d))
#define STEP_SUMI_DXY(sum, sumi, x, y)                                                            \
    ((sum) + (float)(sumi) * (half_to_float((x)->d) * half_to_float((y)->d)))
#define STEP_DYX_SUMI(sum, sumi, x, y)                                                            \
    ((sum) + half_to_float((y)->d) * half_to_float((x)->d) * (float)(sumi))
#define STEP_AFFINE(sum, sumi, x, y)                                                              \
    ((sum) + (half_to_float((x)->d) * half_to_float((y)->d) * (float)(sumi) +                   \
              half_to_float((x)->m) * half_to_float((y)->s)))

/*
 * Row bodies of the 32-element formats against n_tokens activation rows: each block's weights
 * unpacked once (WEIGHTS_FN), then its exact sum with every token's block, combined into that
 * token's float chain by STEP. The fp16 scales of the weights are the same loads for every
 * token and are converted once.
 */
#define DEFINE_BLOCK32_DOT(NAME, WBLOCK, ABLOCK, WEIGHTS_FN, SMALL, STEP)                        \
    static inline ALWAYS_INLINE void NAME##_tokens_body(int64_t n, const void *weights,          \
                                                        const void *activations, size_t stride,  \
                                                        int n_tokens, float *out) {              \
        const WBLOCK *x = weights;                                                               \
        float sum[LB_DOT_TOKENS];                                                                \
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) sum[t] = 0.0f;                          \
        for (int64_t b = 0; b < n / 32; b++) {                                                   \
            int8x16_t w[2];                                                                      \
            WEIGHTS_FN(&x[b], w);                                                                \
            UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {                                   \
                const ABLOCK *y = (const ABLOCK *)token_row(activations, stride, t) + b;         \
                sum[t] = STEP(sum[t], block32_sum(SMALL, w, y->qs), &x[b], y);                   \
            }                                                                                    \
        }                                                                                        \
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = sum[t];                        \
    }                                                                                            \
    DEFINE_DOT_ENTRY_POINTS(NAME, NAME##_tokens_body)

static_assert(QK4_0 == 32 && QK4_1 == 32 && QK5_0 == 32 && QK5_1 == 32, "32-element blocks");
static_assert(QK8_0 == 32 && QK8_1 == 32 && QK4_NL == 32, "32-element blocks");

DEFINE_BLOCK32_DOT(q4_0, block_q4_0, block_q8_0, q4_0_weights, 1, STEP_SUMI_DX_DY)
DEFINE_BLOCK32_DOT(q4_1, block_q4_1, block_q8_1, q4_1_weights, 1, STEP_AFFINE)
DEFINE_BLOCK32_DOT(q5_0, block_q5_0, block_q8_0, q5_0_weights, 1, STEP_SUMI_DX_DY)
DEFINE_BLOCK32_DOT(q5_1, block_q5_1, block_q8_1, q5_1_weights, 1, STEP_AFFINE)
DEFINE_BLOCK32_DOT(q8_0, block_q8_0, block_q8_0, q8_0_weights, 0, STEP_SUMI_DXY)
/* Q8_1 as a weight format, against Q8_1 activations: Q8_0's products on Q8_1's blocks. */
DEFINE_BLOCK32_DOT(q8_1, block_q8_1, block_q8_1, q8_1_weights, 0, STEP_SUMI_DXY)
DEFINE_BLOCK32_DOT(iq4_nl, block_iq4_nl, block_q8_0, iq4_nl_weights, 1, STEP_DYX_SUMI)

/* ------------------------------------------------------------------------------------------ */
/* 256-element formats with Q8_K activations                                                    */
/* ------------------------------------------------------------------------------------------ */

/* The K-quants with mins: sum + d_x d_y sumi - dmin_x d_y mins, the reference's expression. */
static inline float step_with_mins(float sum, int32_t sumi, int32_t mins, lb_half x_d,
                                   lb_half x_dmin, float y_d) {
    const float d = half_to_float(x_d) * y_d;
    const float dmin = half_to_float(x_dmin) * y_d;
    return sum + (d * (float)sumi - dmin * (float)mins);
}

/* Q2_K: each sub-block's 16 levels (0..3) are multiplied by its scale (0..15) while unpacked,
   once for all tokens, which leaves no scale to apply per token. The products of these weights
   (0..45) with activations stay within +-5760, so four of them (the four bit pairs k of a
   byte) share each s16 lane before the pairwise add into s32. */
static inline ALWAYS_INLINE void q2_K_tokens_body(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_q2_K *x = weights;
    const uint8x16_t three = vdupq_n_u8(3);
    float sum[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) sum[t] = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8x16_t packed = load_u8(x[b].scales);
        const uint8x16_t scales = vandq_u8(packed, vdupq_n_u8(0x0F));
        const int16x8_t mins_lo =
            vreinterpretq_s16_u16(vmovl_u8(vshr_n_u8(vget_low_u8(packed), 4)));
        const int16x8_t mins_hi = vreinterpretq_s16_u16(vmovl_high_u8(vshrq_n_u8(packed, 4)));
        int32x4_t acc[LB_DOT_TOKENS];
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {
            /* w[p][k]: sub-block j = 8h + 2k + p, bit pair k of bytes 16p..16p+15 */
            int8x16_t w[2][4];
            for (int p = 0; p < 2; p++) {
                uint8x16_t q = load_u8(x[b].qs + 32 * h + 16 * p);
                for (int k = 0; k < 4; k++, q = vshrq_n_u8(q, 2)) {
                    const uint8x16_t scale = vdupq_n_u8(scales[8 * h + 2 * k + p]);
                    w[p][k] = vreinterpretq_s8_u8(vmulq_u8(vandq_u8(q, three), scale));
                }
            }
            UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
                const int8_t *a = q8_K_block(activations, stride, t, b)->qs + 128 * h;
                for (int p = 0; p < 2; p++) {
                    int8x16_t av[4];
                    for (int k = 0; k < 4; k++) av[k] = load_i8(a + 32 * k + 16 * p);
                    int16x8_t lo = vmull_s8(vget_low_s8(w[p][0]), vget_low_s8(av[0]));
                    int16x8_t hi = vmull_high_s8(w[p][0], av[0]);
                    for (int k = 1; k < 4; k++) {
                        lo = vmlal_s8(lo, vget_low_s8(w[p][k]), vget_low_s8(av[k]));
                        hi = vmlal_high_s8(hi, w[p][k], av[k]);
                    }
                    acc[t] = vpadalq_s16(vpadalq_s16(acc[t], lo), hi);
                }
            }
        }
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const int32_t mins = vaddvq_s32(scaled_bsums16(mins_lo, mins_hi, y->bsums));
            sum[t] = step_with_mins(sum[t], vaddvq_s32(acc[t]), mins, x[b].d, x[b].dmin, y->d);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = sum[t];
}
DEFINE_DOT_ENTRY_POINTS(q2_K, q2_K_tokens_body)

/* Q3_K's 16 sub-scales s_j, negated: 32 - u_j for the stored 6 bits u_j = s_j + 32 (low 4 bits
   from scales[j % 8], nibble j / 8; high 2 bits from scales[8 + j % 4], pair j / 4). */
static inline int8x16_t q3_K_neg_scales(const uint8_t packed[12]) {
    static const int8_t kHighShift[16] = {4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0, -2, -2, -2, -2};
    const uint8x8_t l = vld1_u8(packed);
    const uint8x16_t low = vcombine_u8(vand_u8(l, vdup_n_u8(0x0F)), vshr_n_u8(l, 4));
    uint32_t h4;
    memcpy(&h4, packed + 8, sizeof h4);
    const uint8x16_t h = vreinterpretq_u8_u32(vdupq_n_u32(h4)); /* byte j: scales[8 + j % 4] */
    const uint8x16_t high = vandq_u8(vshlq_u8(h, vld1q_s8(kHighShift)), vdupq_n_u8(0x30));
    return vsubq_s8(vdupq_n_s8(32), vreinterpretq_s8_u8(vorrq_u8(low, high)));
}

/* Q3_K: each sub-block's levels (-4..3) are multiplied by its negated sub-scale (-31..32) while
   unpacked, once for all tokens: the products lie in -128..124, valid s8 (the scale itself
   would give 128 for -4 times -32), and the negation comes off the block's sum. A product with
   an activation may reach 16384, so each s16 lane holds one before the pairwise adds. */
static inline ALWAYS_INLINE void q3_K_tokens_body(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_q3_K *x = weights;
    const uint8x16_t three = vdupq_n_u8(3), four = vdupq_n_u8(4);
    float sum[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) sum[t] = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const int8x16_t neg_scales = q3_K_neg_scales(x[b].scales);
        const uint8x16_t m[2] = {load_u8(x[b].hmask), load_u8(x[b].hmask + 16)};
        int32x4_t acc[LB_DOT_TOKENS];
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {
            /* w[k][p]: sub-block j = 8h + 2k + p, bit pair k of bytes 16p..16p+15 */
            int8x16_t w[4][2];
            for (int p = 0; p < 2; p++) {
                uint8x16_t q = load_u8(x[b].qs + 32 * h + 16 * p);
                for (int k = 0; k < 4; k++, q = vshrq_n_u8(q, 2)) {
                    /* level = low2 - 4 where the hmask bit 4h + k is clear */
                    const uint8x16_t bit = vdupq_n_u8((uint8_t)(1u << (4 * h + k)));
                    const uint8x16_t sub = vbicq_u8(four, vtstq_u8(m[p], bit));
                    const int8x16_t level =
                        vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, three)), vreinterpretq_s8_u8(sub));
                    w[k][p] = vmulq_s8(level, vdupq_n_s8(neg_scales[8 * h + 2 * k + p]));
                }
            }
            UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
                const int8_t *a = q8_K_block(activations, stride, t, b)->qs + 128 * h;
                for (int k = 0; k < 4; k++) {
                    acc[t] = dot16(acc[t], w[k][0], load_i8(a + 32 * k));
                    acc[t] = dot16(acc[t], w[k][1], load_i8(a + 32 * k + 16));
                }
            }
        }
        const float x_d = half_to_float(x[b].d);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            sum[t] += x_d * y->d * (float)-vaddvq_s32(acc[t]);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = sum[t];
}
DEFINE_DOT_ENTRY_POINTS(q3_K, q3_K_tokens_body)

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

/* Q4_K and Q5_K: chunk c (64 elements, sub-blocks 2c and 2c + 1) is unpacked into four weight
   vectors once for all tokens; per token the two sub-blocks' exact sums (dot32_small: levels
   0..31) meet their scales. Q5_K's fifth bit of element 64c + l is qh[l] bit 2c, of
   64c + 32 + l bit 2c + 1. */
static inline ALWAYS_INLINE void k4_chunk_weights(const uint8_t *qs, const uint8_t *qh, int c,
                                                  int8x16_t w[4]) {
    const uint8x16_t q0 = load_u8(qs + 32 * c), q1 = load_u8(qs + 32 * c + 16);
    w[0] = low_nibbles(q0);
    w[1] = low_nibbles(q1);
    w[2] = high_nibbles(q0);
    w[3] = high_nibbles(q1);
    if (!qh) return;
    const uint8x16_t h[2] = {load_u8(qh), load_u8(qh + 16)}, sixteen = vdupq_n_u8(16);
    for (int i = 0; i < 4; i++) {
        const uint8x16_t bit = vdupq_n_u8((uint8_t)(1u << (2 * c + i / 2)));
        w[i] = vorrq_s8(w[i], vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h[i % 2], bit), sixteen)));
    }
}

static inline ALWAYS_INLINE void k4_tokens_body(int64_t n, const uint8_t *block, size_t size,
                                                size_t qs_at, ptrdiff_t qh_at,
                                                const void *activations, size_t stride,
                                                int n_tokens, float *out) {
    float sum[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) sum[t] = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++, block += size) {
        /* d, dmin and the scales lead both formats' blocks */
        const block_q4_K *x = (const block_q4_K *)block;
        int32_t sc[8], mn[8];
        k4_scales_mins(x->scales, sc, mn);
        int32x4_t acc[LB_DOT_TOKENS];
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_s32(0);
        for (int c = 0; c < 4; c++) {
            int8x16_t w[4];
            k4_chunk_weights(block + qs_at, qh_at < 0 ? NULL : block + qh_at, c, w);
            UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
                const int8_t *a = q8_K_block(activations, stride, t, b)->qs + 64 * c;
                const int32x4_t lo = dot32_small(w[0], w[1], load_i8(a), load_i8(a + 16));
                const int32x4_t hi = dot32_small(w[2], w[3], load_i8(a + 32), load_i8(a + 48));
                acc[t] = vmlaq_n_s32(acc[t], lo, sc[2 * c]);
                acc[t] = vmlaq_n_s32(acc[t], hi, sc[2 * c + 1]);
            }
        }
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const int32_t mins = k4_mins_sum(mn, y->bsums);
            sum[t] = step_with_mins(sum[t], vaddvq_s32(acc[t]), mins, x->d, x->dmin, y->d);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = sum[t];
}

static inline ALWAYS_INLINE void q4_K_tokens_body(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    k4_tokens_body(n, weights, sizeof(block_q4_K), offsetof(block_q4_K, qs), -1, activations,
                   stride, n_tokens, out);
}

static inline ALWAYS_INLINE void q5_K_tokens_body(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    static_assert(offsetof(block_q5_K, d) == offsetof(block_q4_K, d) &&
                      offsetof(block_q5_K, dmin) == offsetof(block_q4_K, dmin) &&
                      offsetof(block_q5_K, scales) == offsetof(block_q4_K, scales),
                  "Q4_K and Q5_K blocks lead alike");
    k4_tokens_body(n, weights, sizeof(block_q5_K), offsetof(block_q5_K, qs),
                   offsetof(block_q5_K, qh), activations, stride, n_tokens, out);
}
DEFINE_DOT_ENTRY_POINTS(q4_K, q4_K_tokens_body)
DEFINE_DOT_ENTRY_POINTS(q5_K, q5_K_tokens_body)

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

/* Q6_K: four sub-blocks (rows k of half h, bytes 16p..) unpacked at a time, once for all
   tokens; per token each sub-block's exact sum meets its s8 sub-scale (levels -32..31 times
   scales up to 128 do not fit a byte, so the scales stay per token). */
static inline ALWAYS_INLINE void q6_K_tokens_body(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_q6_K *x = weights;
    const int8x16_t offset = vdupq_n_s8(32);
    float sum[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) sum[t] = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32x4_t acc[LB_DOT_TOKENS];
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {
            for (int p = 0; p < 2; p++) {
                uint8x16_t rows[4];
                q6_K_rows(&x[b], h, p, rows);
                int8x16_t w[4];
                for (int k = 0; k < 4; k++) w[k] = vsubq_s8(vreinterpretq_s8_u8(rows[k]), offset);
                UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
                    const int8_t *a =
                        q8_K_block(activations, stride, t, b)->qs + 128 * h + 16 * p;
                    for (int k = 0; k < 4; k++) {
                        /* element 128h + 32k + 16p + i: sub-block 8h + 2k + p */
                        acc[t] = vmlaq_n_s32(acc[t], dot16_new(w[k], load_i8(a + 32 * k)),
                                             x[b].scales[8 * h + 2 * k + p]);
                    }
                }
            }
        }
        const float x_d = half_to_float(x[b].d);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            sum[t] += x_d * y->d * (float)vaddvq_s32(acc[t]);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = sum[t];
}
DEFINE_DOT_ENTRY_POINTS(q6_K, q6_K_tokens_body)

/* IQ4_XS: each 32-element sub-block unpacked once; per token its exact sum (dot32_small: the
   table's levels lie in -127..113) goes into the float chain with its sub-scale, as the
   reference does, sub-block by sub-block. */
static inline ALWAYS_INLINE void iq4_xs_tokens_body(int64_t n, const void *weights,
                                                    const void *activations, size_t stride,
                                                    int n_tokens, float *out) {
    const block_iq4_xs *x = weights;
    const int8x16_t values = vld1q_s8(lb_kvalues_iq4nl);
    float sum[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) sum[t] = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float x_d = half_to_float(x[b].d);
        float d[LB_DOT_TOKENS];
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            d[t] = x_d * q8_K_block(activations, stride, t, b)->d;
        }
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint8x16_t q = load_u8(x[b].qs + 16 * ib);
            const int8x16_t lo = vqtbl1q_s8(values, vandq_u8(q, vdupq_n_u8(0x0F)));
            const int8x16_t hi = vqtbl1q_s8(values, vshrq_n_u8(q, 4));
            const int low = (x[b].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
            const int high = (x[b].scales_h >> (2 * ib)) & 3;
            const float scale = (float)((low | (high << 4)) - 32);
            UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
                const int8_t *a = q8_K_block(activations, stride, t, b)->qs + 32 * ib;
                const int32_t sumi =
                    vaddvq_s32(dot32_small(lo, hi, load_i8(a), load_i8(a + 16)));
                sum[t] += d[t] * scale * (float)sumi;
            }
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = sum[t];
}
DEFINE_DOT_ENTRY_POINTS(iq4_xs, iq4_xs_tokens_body)

/* Q8_K as a weight format, against Q8_K activations: widening products (exact for -128 too),
   each weight vector loaded once for all tokens. */
static inline ALWAYS_INLINE void q8_K_tokens_body(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_q8_K *x = weights;
    float sum[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) sum[t] = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32x4_t acc[LB_DOT_TOKENS];
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_s32(0);
        for (int k = 0; k < QK_K / 16; k++) {
            const int8x16_t w = load_i8(x[b].qs + 16 * k);
            UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
                const int8_t *a = q8_K_block(activations, stride, t, b)->qs + 16 * k;
                acc[t] = dot16(acc[t], w, load_i8(a));
            }
        }
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            sum[t] += x[b].d * y->d * (float)vaddvq_s32(acc[t]);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = sum[t];
}
DEFINE_DOT_ENTRY_POINTS(q8_K, q8_K_tokens_body)

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
static void quantize_q8_K_block(const float *x, float amax, block_q8_K *y) {
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
        quantize_q8_K_block(src, amax, &y[b]);
    }
    return LOWBIT_OK;
}

void lb_register_neon(lb_kernel_set *set) {
    /* every dot product with its multi-token kernel (kernels.h) */
#define REGISTER_DOT(TYPE, NAME) set_dot(set, LOWBIT_TYPE_##TYPE, dot_##NAME, dot_##NAME##_tokens)
    REGISTER_DOT(Q4_0, q4_0);
    REGISTER_DOT(Q4_1, q4_1);
    REGISTER_DOT(Q5_0, q5_0);
    REGISTER_DOT(Q5_1, q5_1);
    REGISTER_DOT(Q8_0, q8_0);
    REGISTER_DOT(IQ4_NL, iq4_nl);
    REGISTER_DOT(Q2_K, q2_K);
    REGISTER_DOT(Q3_K, q3_K);
    REGISTER_DOT(Q4_K, q4_K);
    REGISTER_DOT(Q5_K, q5_K);
    REGISTER_DOT(Q6_K, q6_K);
    REGISTER_DOT(IQ4_XS, iq4_xs);
    REGISTER_DOT(Q8_1, q8_1);
    REGISTER_DOT(Q8_K, q8_K);
    REGISTER_DOT(F32, f32);
    REGISTER_DOT(F16, f16);
    REGISTER_DOT(BF16, bf16);
#undef REGISTER_DOT
    set->quantize_activation[LOWBIT_TYPE_Q8_0] = quantize_q8_0;
    set->quantize_activation[LOWBIT_TYPE_Q8_1] = quantize_q8_1;
    set->quantize_activation[LOWBIT_TYPE_Q8_K] = quantize_q8_K;
}
