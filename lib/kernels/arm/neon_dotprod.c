/*
 * AArch64 kernels with the dot-product extension (SDOT, armv8.2-a+dotprod; this file alone is
 * built with it): the dot products of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and IQ4_NL with Q8_0/Q8_1
 * activations and of Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS with Q8_K activations, replacing
 * neon.c's at this level. The activation quantizers stay with neon.c.
 *
 * Integer parts, exact: a block's weights are unpacked to bytes laid out like the activation
 * block's qs (element j in byte j) and SDOT sums four s8 x s8 products into each s32 lane
 * without rounding or overflow. Where it saves instructions a format is unpacked to its levels
 * plus a constant (taken off through Q8_K's bsums: Q3_K, Q6_K) or times a power of two (Q4_0,
 * Q2_K, Q3_K), which comes off exactly in the int -> float conversion (SCVTF with fraction bits).
 * The four lanes of each block (or sub-block) are summed by pairwise adds, four blocks to a
 * vector, and the K-quants' sub-scales, mins and offsets applied in int32, so every block's
 * integer sum is the scalar reference's.
 *
 * Float parts, equal to the references to rounding, not bit for bit: instead of reducing each
 * block to a scalar and adding it into one float chain, the exact integer sums are converted to
 * float vectors and multiply-added (FMLA) with their block scales into float32x4 accumulators,
 * with one horizontal sum per row at the end. Only the order and the fusing of the float
 * operations differ from the references.
 *
 * Not yet measured on AArch64 hardware (tested under qemu only): the choices between ways of
 * unpacking were made by the instruction counts of the loops.
 */
#include "../../formats/blocks.h"
#include "../kernels.h"
#include "neon_common.h"

#include <arm_neon.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static inline __fp16 load_half(const void *p) {
    __fp16 f;
    memcpy(&f, p, sizeof f);
    return f;
}

/* The fp16 fields p, p + stride, p + 2 stride, p + 3 stride (bytes) of four blocks, as floats:
   four scalar loads with immediate offsets, put together in one vector. */
static inline float32x4_t halves4(const lb_half *p, size_t stride) {
    const uint8_t *b = (const uint8_t *)p;
    const float16x4_t h = {load_half(b), load_half(b + stride), load_half(b + 2 * stride),
                           load_half(b + 3 * stride)};
    return vcvt_f32_f16(h);
}

/* Two adjacent fp16 fields (d and m, d and s, d and dmin) as one 32-bit word. */
static inline uint32_t half_pair_bits(const lb_half *p) {
    uint32_t bits;
    memcpy(&bits, p, sizeof bits);
    return bits;
}

/* The adjacent fp16 pairs [d, m] of four blocks `stride` bytes apart: [d0, m0, d1, m1] in
   out[0] and [d2, m2, d3, m3] in out[1]. */
static inline void half_pairs4(const lb_half *p, size_t stride, float32x4_t out[2]) {
    const uint8_t *b = (const uint8_t *)p;
    const uint32x4_t v = {half_pair_bits(p), half_pair_bits((const lb_half *)(b + stride)),
                          half_pair_bits((const lb_half *)(b + 2 * stride)),
                          half_pair_bits((const lb_half *)(b + 3 * stride))};
    const float16x8_t h = vreinterpretq_f16_u32(v);
    out[0] = vcvt_f32_f16(vget_low_f16(h));
    out[1] = vcvt_high_f32_f16(h);
}

/* A K-quant's super-block scales [d, dmin] times the activation's scale. */
static inline float32x2_t scale_pair(const lb_half *d_dmin, float activation_d) {
    const uint32x2_t bits = {half_pair_bits(d_dmin), 0};
    return vmul_n_f32(vget_low_f32(vcvt_f32_f16(vreinterpret_f16_u32(bits))), activation_d);
}

static inline int8x16_t as_i8(uint8x16_t v) { return vreinterpretq_s8_u8(v); }

static inline uint8x16_t low_nibbles(uint8x16_t q) { return vandq_u8(q, vdupq_n_u8(0x0F)); }
static inline uint8x16_t high_nibbles(uint8x16_t q) { return vshrq_n_u8(q, 4); }

/* SDOT of 32 weight bytes (two vectors) with 32 activation bytes, into a fresh accumulator. */
static inline int32x4_t dot32(int8x16_t w0, int8x16_t w1, const int8_t *a) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, load_i8(a)), w1, load_i8(a + 16));
}

/* The same with the activations already loaded. */
static inline int32x4_t dot2(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, a0), w1, a1);
}

/* SDOT of 16 weight bytes with 16 activation bytes, into a fresh accumulator. */
static inline int32x4_t dot1(uint8x16_t w, int8x16_t a) {
    return vdotq_s32(vdupq_n_s32(0), as_i8(w), a);
}

/* [sum of d[0]'s lanes, ..., sum of d[3]'s]: four blocks' (or sub-blocks') exact sums. */
static inline int32x4_t lane_sums4(const int32x4_t d[4]) {
    return vpaddq_s32(vpaddq_s32(d[0], d[1]), vpaddq_s32(d[2], d[3]));
}

/* The products of four weight blocks' and four activation blocks' fp16 scales. */
static inline float32x4_t block_scales4(const lb_half *x_d, size_t x_stride, const lb_half *y_d,
                                        size_t y_stride) {
    return vmulq_f32(halves4(x_d, x_stride), halves4(y_d, y_stride));
}

/* Where the qh bit of each element of a Q5 block goes: bits 0..7 of qh[0] for elements 0..7,
   of qh[1] for 8..15, and so on (two vectors of 16 lanes). */
static const uint8_t kQhByteLo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
static const uint8_t kQhByteHi[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
static const uint8_t kBitOfLane[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};

/* The fifth bits of a Q5 block's 32 elements as all-ones / zero bytes (elements 0..15 in
   set[0], 16..31 in set[1]); qh16 holds the 4 qh bytes in lanes 0..3. */
static inline void q5_bit_masks(uint8x16_t qh16, uint8x16_t set[2]) {
    const uint8x16_t bits = vld1q_u8(kBitOfLane);
    set[0] = vtstq_u8(vqtbl1q_u8(qh16, vld1q_u8(kQhByteLo)), bits);
    set[1] = vtstq_u8(vqtbl1q_u8(qh16, vld1q_u8(kQhByteHi)), bits);
}

/* ------------------------------------------------------------------------------------------ */
/* 32-element blocks with Q8_0 / Q8_1 activations: four blocks per step, their four exact      */
/* integer sums in one vector and their four scales in another; single blocks for the rest     */
/* ------------------------------------------------------------------------------------------ */

/* Row loops of the 32-element formats: four blocks per iteration, their exact sums in one
   vector (lane_sums4) meeting their four scale products in one multiply-add; the blocks left
   over one by one. ROW_LOOP_HEAD declares what they share. */
#define ROW_LOOP_HEAD(WBLOCK, ABLOCK, ELEMS)                                                       \
    const WBLOCK *x = weights;                                                                   \
    const ABLOCK *y = activations;                                                               \
    const WBLOCK *const end = x + n / (ELEMS), *const end4 = x + ((n / (ELEMS)) & ~(int64_t)3);  \
    float32x4_t acc = vdupq_n_f32(0.0f)

/* 16 times Q4_0's levels q - 8: with each nibble's top bit flipped (q ^ 8) a nibble is its level
   in 4-bit two's complement, so moved to the top of a byte (low: << 4; high: & 0xF0) it is the
   level times 16 as an s8. */
static inline int32x4_t q4_0_block16(const block_q4_0 *x, const block_q8_0 *y) {
    const uint8x16_t q = veorq_u8(load_u8(x->qs), vdupq_n_u8(0x88));
    return dot32(as_i8(vshlq_n_u8(q, 4)), as_i8(vandq_u8(q, vdupq_n_u8(0xF0))), y->qs);
}

static float dot_q4_0(int64_t n, const void *weights, const void *activations) {
    ROW_LOOP_HEAD(block_q4_0, block_q8_0, QK4_0);
    for (; x < end4; x += 4, y += 4) {
        int32x4_t d[4];
        for (int i = 0; i < 4; i++) d[i] = q4_0_block16(x + i, y + i);
        const float32x4_t scale = block_scales4(&x->d, sizeof *x, &y->d, sizeof *y);
        acc = vfmaq_f32(acc, vcvtq_n_f32_s32(lane_sums4(d), 4), scale);
    }
    float sum = vaddvq_f32(acc);
    for (; x < end; x++, y++) {
        const int32_t sumi = vaddvq_s32(q4_0_block16(x, y)) / 16; /* exact */
        sum += (float)sumi * half_to_float(x->d) * half_to_float(y->d);
    }
    return sum;
}

static inline int32x4_t q4_1_block(const block_q4_1 *x, const block_q8_1 *y) {
    const uint8x16_t q = load_u8(x->qs);
    return dot32(as_i8(low_nibbles(q)), as_i8(high_nibbles(q)), y->qs);
}

/* acc + d_x d_y sumi + m_x s_y for four blocks: the products of their [d, m] and [d, s] pairs
   give both factors at once, separated by unzipping. */
static inline float32x4_t add_affine4(float32x4_t acc, int32x4_t sums, const lb_half *x_dm,
                                      size_t x_stride, const lb_half *y_ds, size_t y_stride) {
    float32x4_t xf[2], yf[2];
    half_pairs4(x_dm, x_stride, xf);
    half_pairs4(y_ds, y_stride, yf);
    const float32x4_t p0 = vmulq_f32(xf[0], yf[0]), p1 = vmulq_f32(xf[1], yf[1]);
    acc = vaddq_f32(acc, vuzp2q_f32(p0, p1)); /* m_x s_y */
    return vfmaq_f32(acc, vcvtq_f32_s32(sums), vuzp1q_f32(p0, p1));
}

/* Q5_0's levels (q | fifth bit << 4) - 16: where the fifth bit is clear the level is the nibble
   minus 16, i.e. the nibble under 0xF0 as an s8; where set, the nibble itself. The all-ones
   masks of the clear bits supply the 0xF0, one insert per 16 weights. */
static inline int32x4_t q5_0_block(const block_q5_0 *x, const block_q8_0 *y) {
    uint8x16_t clear[2];
    q5_bit_masks(vmvnq_u8(load_u8(x->qh)), clear); /* 16 bytes: qh and the first 12 of qs */
    const uint8x16_t q = load_u8(x->qs);
    const uint8x16_t w0 = vbslq_u8(vdupq_n_u8(0x0F), q, clear[0]);
    const uint8x16_t w1 = vsriq_n_u8(clear[1], q, 4);
    return dot32(as_i8(w0), as_i8(w1), y->qs);
}

/* Q5_1's levels q | fifth bit << 4, 0..31: valid s8 as they are. The fifth bits (masked from
   the all-ones masks) take the nibbles inserted under them. */
static inline int32x4_t q5_1_block(const block_q5_1 *x, const block_q8_1 *y) {
    uint8x16_t set[2];
    q5_bit_masks(load_u8(x->qh), set); /* 16 bytes: qh and the first 12 of qs */
    const uint8x16_t q = load_u8(x->qs), bit4 = vdupq_n_u8(0x10);
    const uint8x16_t w0 = vbslq_u8(vdupq_n_u8(0x0F), q, vandq_u8(set[0], bit4));
    const uint8x16_t w1 = vsriq_n_u8(vandq_u8(set[1], bit4), q, 4);
    return dot32(as_i8(w0), as_i8(w1), y->qs);
}

static inline int32x4_t q8_0_block(const block_q8_0 *x, const block_q8_0 *y) {
    return dot32(load_i8(x->qs), load_i8(x->qs + 16), y->qs);
}

static inline int32x4_t iq4_nl_block(const block_iq4_nl *x, const block_q8_0 *y) {
    const int8x16_t values = vld1q_s8(lb_kvalues_iq4nl);
    const uint8x16_t q = load_u8(x->qs);
    return dot32(vqtbl1q_s8(values, low_nibbles(q)), vqtbl1q_s8(values, high_nibbles(q)), y->qs);
}

/* SCALED: d_x d_y sumi (Q5_0, Q8_0, IQ4_NL against Q8_0). AFFINE: d_x d_y sumi + m_x s_y (Q4_1,
   Q5_1 against Q8_1). */
#define DEFINE_SCALED_DOT(NAME, WBLOCK, ELEMS, BLOCK_FN)                                          \
    static float NAME(int64_t n, const void *weights, const void *activations) {                 \
        ROW_LOOP_HEAD(WBLOCK, block_q8_0, ELEMS);                                                \
        for (; x < end4; x += 4, y += 4) {                                                       \
            int32x4_t d[4];                                                                      \
            for (int i = 0; i < 4; i++) d[i] = BLOCK_FN(x + i, y + i);                           \
            const float32x4_t scale = block_scales4(&x->d, sizeof *x, &y->d, sizeof *y);         \
            acc = vfmaq_f32(acc, vcvtq_f32_s32(lane_sums4(d)), scale);                           \
        }                                                                                        \
        float sum = vaddvq_f32(acc);                                                             \
        for (; x < end; x++, y++) {                                                              \
            const float d = half_to_float(x->d) * half_to_float(y->d);                           \
            sum += (float)vaddvq_s32(BLOCK_FN(x, y)) * d;                                        \
        }                                                                                        \
        return sum;                                                                              \
    }

#define DEFINE_AFFINE_DOT(NAME, WBLOCK, ELEMS, BLOCK_FN)                                          \
    static float NAME(int64_t n, const void *weights, const void *activations) {                 \
        ROW_LOOP_HEAD(WBLOCK, block_q8_1, ELEMS);                                                \
        for (; x < end4; x += 4, y += 4) {                                                       \
            int32x4_t d[4];                                                                      \
            for (int i = 0; i < 4; i++) d[i] = BLOCK_FN(x + i, y + i);                           \
            acc = add_affine4(acc, lane_sums4(d), &x->d, sizeof *x, &y->d, sizeof *y);           \
        }                                                                                        \
        float sum = vaddvq_f32(acc);                                                             \
        for (; x < end; x++, y++) {                                                              \
            sum += half_to_float(x->d) * half_to_float(y->d) * (float)vaddvq_s32(BLOCK_FN(x, y)) + \
                   half_to_float(x->m) * half_to_float(y->s);                                    \
        }                                                                                        \
        return sum;                                                                              \
    }

DEFINE_AFFINE_DOT(dot_q4_1, block_q4_1, QK4_1, q4_1_block)
DEFINE_SCALED_DOT(dot_q5_0, block_q5_0, QK5_0, q5_0_block)
DEFINE_AFFINE_DOT(dot_q5_1, block_q5_1, QK5_1, q5_1_block)
DEFINE_SCALED_DOT(dot_q8_0, block_q8_0, QK8_0, q8_0_block)
DEFINE_SCALED_DOT(dot_iq4_nl, block_iq4_nl, QK4_NL, iq4_nl_block)

/* ------------------------------------------------------------------------------------------ */
/* 256-element formats with Q8_K activations: each sub-block's SDOT sum in its own accumulator, */
/* pairwise-added to one lane per sub-block, then times the sub-scales in int32                */
/* ------------------------------------------------------------------------------------------ */

/* 64 activation bytes (four vectors) in one load. */
static inline int8x16x4_t load_i8_x4(const int8_t *a) { return vld1q_s8_x4(a); }

/* sum_j scales[j] * s[j] over 16 sub-blocks of 16: s in four vectors of four, scales as two
   int16 vectors. */
static inline int32x4_t scale_sums16(const int32x4_t s[4], int16x8_t scales_lo,
                                     int16x8_t scales_hi) {
    int32x4_t acc = vmulq_s32(s[0], vmovl_s16(vget_low_s16(scales_lo)));
    acc = vmlaq_s32(acc, s[1], vmovl_high_s16(scales_lo));
    acc = vmlaq_s32(acc, s[2], vmovl_s16(vget_low_s16(scales_hi)));
    return vmlaq_s32(acc, s[3], vmovl_high_s16(scales_hi));
}

static inline int16x8_t widen_u8_lo(uint8x16_t v) {
    return vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(v)));
}
static inline int16x8_t widen_u8_hi(uint8x16_t v) {
    return vreinterpretq_s16_u16(vmovl_high_u8(v));
}

/* Q2_K, Q3_K: the 2-bit field k of every byte of q. Fields 0..2 stay in place, each a level
   times f_k = 1, 4, 16 (masked: still an s8), field 3 is shifted down (f_3 = 1): one
   instruction per 16 weights. The sub-scales of row k are multiplied by 16 / f_k instead, so
   that every row's sum comes out 16 times too large, together. */
static inline void two_bit_rows(uint8x16_t q, uint8x16_t rows[4]) {
    rows[0] = vandq_u8(q, vdupq_n_u8(0x03));
    rows[1] = vandq_u8(q, vdupq_n_u8(0x0C));
    rows[2] = vandq_u8(q, vdupq_n_u8(0x30));
    rows[3] = vshrq_n_u8(q, 6);
}

/* The shifts that multiply the sub-scale of sub-block j (row k = (j % 8) / 2) by 16 / f_k. */
static const int8_t kRowScaleShift[16] = {4, 4, 2, 2, 0, 0, 4, 4, 4, 4, 2, 2, 0, 0, 4, 4};

/* The SDOT sums of a Q2_K/Q3_K super-block's rows, one lane per sub-block j (s[j / 4], lane
   j % 4). Sub-block j = 8h + 2k + p is row k of qs vector 2h + p (bytes 32h + 16p..) against
   activations 16j..16j+15. */
static inline void two_bit_sums(const uint8x16_t rows[2][2][4], const int8_t *qs,
                                int32x4_t s[4]) {
    for (int h = 0; h < 2; h++) {
        const int8x16x4_t a0 = load_i8_x4(qs + 128 * h), a1 = load_i8_x4(qs + 128 * h + 64);
        const int8x16_t a[8] = {a0.val[0], a0.val[1], a0.val[2], a0.val[3],
                                a1.val[0], a1.val[1], a1.val[2], a1.val[3]};
        int32x4_t d[8];
        for (int k = 0; k < 4; k++) {
            for (int p = 0; p < 2; p++) d[2 * k + p] = dot1(rows[h][p][k], a[2 * k + p]);
        }
        s[2 * h] = lane_sums4(d);
        s[2 * h + 1] = lane_sums4(d + 4);
    }
}

static float dot_q2_K(int64_t n, const void *weights, const void *activations) {
    const block_q2_K *x = weights;
    const block_q8_K *y = activations;
    const block_q2_K *const end = x + n / QK_K;
    const int8x16_t row_shift = vld1q_s8(kRowScaleShift);
    float32x4_t acc = vdupq_n_f32(0.0f), acc_mins = vdupq_n_f32(0.0f);
    for (; x < end; x++, y++) {
        const uint8x16_t packed = load_u8(x->scales); /* scale low, min high nibble */
        /* the scales times 16 / f_k, at most 15 * 16: still bytes */
        const uint8x16_t sc = vshlq_u8(low_nibbles(packed), row_shift);
        const uint8x16_t mn = high_nibbles(packed);
        const int32x4_t mins = scaled_bsums16(widen_u8_lo(mn), widen_u8_hi(mn), y->bsums);
        uint8x16_t rows[2][2][4];
        for (int h = 0; h < 2; h++) {
            for (int p = 0; p < 2; p++) two_bit_rows(load_u8(x->qs + 32 * h + 16 * p), rows[h][p]);
        }
        int32x4_t s[4];
        two_bit_sums(rows, y->qs, s);
        /* 16 times the reference's sum of scaled sub-block sums */
        const int32x4_t sumi16 = scale_sums16(s, widen_u8_lo(sc), widen_u8_hi(sc));
        const float32x2_t d = scale_pair(&x->d, y->d); /* [d, dmin] */
        acc = vfmaq_lane_f32(acc, vcvtq_n_f32_s32(sumi16, 4), d, 0);
        acc_mins = vfmaq_lane_f32(acc_mins, vcvtq_f32_s32(mins), d, 1);
    }
    return vaddvq_f32(acc) - vaddvq_f32(acc_mins);
}

/* Q3_K's 16 six-bit scales (stored + 32), four times, as s8: the 6 bits u are put together at
   the top of a byte (u << 2) and the top bit flipped, which is 4 (u - 32) in two's complement. */
static inline int8x16_t q3_K_scales4(const uint8_t packed[12]) {
    static const int8_t kHighShift[16] = {6, 6, 6, 6, 4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0};
    const uint8x8_t p0 = vld1_u8(packed), p4 = vld1_u8(packed + 4);
    /* low 4 bits of scale j: packed[j] low nibble (j < 8) or high nibble (j >= 8), at the top */
    const uint8x16_t low = vcombine_u8(vshl_n_u8(p0, 4), vand_u8(p0, vdup_n_u8(0xF0)));
    /* high 2 bits of scale j: bits 2 (j / 4) of packed[8 + j % 4], moved to bits 6..7 */
    const uint8x16_t bytes8_11 = vreinterpretq_u8_u32(vdupq_lane_u32(vreinterpret_u32_u8(p4), 1));
    const uint8x16_t high = vshlq_u8(bytes8_11, vld1q_s8(kHighShift));
    const uint8x16_t u4 = vsriq_n_u8(high, low, 2);
    return as_i8(veorq_u8(u4, vdupq_n_u8(0x80)));
}

/* Q3_K: the stored 3 bits u = low2 | hbit << 2 are the level + 4, 0..7. Row k's low bits are
   two_bit_rows' (the field times f_k); hmask bit 4h + k is moved next to them (to bit 2, 4, 6,
   2 for k = 0..3) and inserted, giving u f_k. The offset 4 comes off through the bsums. */
static inline void q3_K_rows(uint8x16_t q, uint8x16_t m, int h, uint8x16_t rows[4]) {
    static const int kPosition[4] = {2, 4, 6, 2};
    two_bit_rows(q, rows);
    for (int k = 0; k < 4; k++) {
        const int shift = kPosition[k] - 4 * h - k;
        const uint8x16_t bit = shift == 0 ? m : vshlq_u8(m, vdupq_n_s8((int8_t)shift));
        rows[k] = vbslq_u8(vdupq_n_u8((uint8_t)(1u << kPosition[k])), bit, rows[k]);
    }
}

static float dot_q3_K(int64_t n, const void *weights, const void *activations) {
    const block_q3_K *x = weights;
    const block_q8_K *y = activations;
    const block_q3_K *const end = x + n / QK_K;
    /* shifts from 1024 sc down to 256 sc / f_k */
    const int16x8_t row_shift = vaddq_s16(vmovl_s8(vld1_s8(kRowScaleShift)), vdupq_n_s16(-6));
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (; x < end; x++, y++) {
        const int8x16_t sc4 = q3_K_scales4(x->scales);
        /* 1024 sc, in -32768..31744: an s16 */
        const int16x8_t sc1024_lo = vshll_n_s8(vget_low_s8(sc4), 8);
        const int16x8_t sc1024_hi = vshll_high_n_s8(sc4, 8);
        const int16x8_t scf_lo = vshlq_s16(sc1024_lo, row_shift);
        const int16x8_t scf_hi = vshlq_s16(sc1024_hi, row_shift);
        const uint8x16_t m[2] = {load_u8(x->hmask), load_u8(x->hmask + 16)};
        uint8x16_t rows[2][2][4];
        for (int h = 0; h < 2; h++) {
            for (int p = 0; p < 2; p++) {
                q3_K_rows(load_u8(x->qs + 32 * h + 16 * p), m[p], h, rows[h][p]);
            }
        }
        int32x4_t s[4];
        two_bit_sums(rows, y->qs, s);
        /* 256 times the reference's sum: sum_j (256 sc_j / f_k) (f_k sum_i u_i a_i) - 1024 sc_j
           bsum_j; every lane's total fits an int32 (the steps may wrap) */
        const int16x8_t b0 = vld1q_s16(y->bsums), b1 = vld1q_s16(y->bsums + 8);
        int32x4_t sumi = scale_sums16(s, scf_lo, scf_hi);
        sumi = vmlsl_s16(sumi, vget_low_s16(sc1024_lo), vget_low_s16(b0));
        sumi = vmlsl_high_s16(sumi, sc1024_lo, b0);
        sumi = vmlsl_s16(sumi, vget_low_s16(sc1024_hi), vget_low_s16(b1));
        sumi = vmlsl_high_s16(sumi, sc1024_hi, b1);
        acc = vfmaq_n_f32(acc, vcvtq_n_f32_s32(sumi, 8), half_to_float(x->d) * y->d);
    }
    return vaddvq_f32(acc);
}

/* Q4_K/Q5_K's eight 6-bit scales and mins (see kquants_minmax.c for the packing), as bytes:
   sc[i] = packed[i] & 63 and mn[i] = packed[i + 4] & 63 for i < 4; for i >= 4 the low (sc) or
   high (mn) nibble of packed[i + 4] under the top 2 bits of packed[i - 4] (sc) or packed[i]
   (mn). */
static inline void k4_scales_mins(const uint8_t packed[12], uint8x8_t *sc, uint8x8_t *mn) {
    static const int8_t kNibbleShift[8] = {0, 0, 0, 0, -4, -4, -4, -4};
    const uint8x16_t p = vld1q_u8(packed); /* the 12 bytes and 4 of the quants */
    const uint8x8_t p0_7 = vget_low_u8(p);
    const uint8x8_t low = vand_u8(p0_7, vdup_n_u8(63)); /* sc 0..3, mn 0..3 */
    const uint8x8_t p8_11 = vreinterpret_u8_u32(vdup_laneq_u32(vreinterpretq_u32_u8(p), 2));
    const uint8x8_t nibbles = vshl_u8(p8_11, vld1_s8(kNibbleShift)); /* low 4 bits valid */
    const uint8x8_t high = vsli_n_u8(nibbles, vshr_n_u8(p0_7, 6), 4); /* sc 4..7, mn 4..7 */
    *sc = vreinterpret_u8_u32(vzip1_u32(vreinterpret_u32_u8(low), vreinterpret_u32_u8(high)));
    *mn = vreinterpret_u8_u32(vzip2_u32(vreinterpret_u32_u8(low), vreinterpret_u32_u8(high)));
}

/* Lane-wise partial sums of mn[i] * (bsums[2i] + bsums[2i + 1]), exact. */
static inline int32x4_t k4_mins(uint8x8_t mn, const int16_t bsums[16]) {
    const int16x8_t pairs = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));
    const int16x8_t mn16 = vreinterpretq_s16_u16(vmovl_u8(mn));
    return vmlal_high_s16(vmull_s16(vget_low_s16(pairs), vget_low_s16(mn16)), pairs, mn16);
}

/* sum_i sc[i] * s[i] over 8 sub-blocks of 32 (s as two vectors of four). */
static inline int32x4_t k4_scaled(const int32x4_t s[2], uint8x8_t sc) {
    const uint16x8_t sc16 = vmovl_u8(sc);
    const int32x4_t acc = vmulq_s32(s[0], vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(sc16))));
    return vmlaq_s32(acc, s[1], vreinterpretq_s32_u32(vmovl_high_u16(sc16)));
}

/* The float accumulation of Q4_K and Q5_K: d * sumi into acc, dmin * mins into acc_mins. */
static inline void k4_accumulate(float32x4_t *acc, float32x4_t *acc_mins, int32x4_t sumi,
                                 int32x4_t mins, const lb_half *d_dmin, float activation_d) {
    const float32x2_t d = scale_pair(d_dmin, activation_d);
    *acc = vfmaq_lane_f32(*acc, vcvtq_f32_s32(sumi), d, 0);
    *acc_mins = vfmaq_lane_f32(*acc_mins, vcvtq_f32_s32(mins), d, 1);
}

static float dot_q4_K(int64_t n, const void *weights, const void *activations) {
    const block_q4_K *x = weights;
    const block_q8_K *y = activations;
    const block_q4_K *const end = x + n / QK_K;
    float32x4_t acc = vdupq_n_f32(0.0f), acc_mins = vdupq_n_f32(0.0f);
    for (; x < end; x++, y++) {
        uint8x8_t sc, mn;
        k4_scales_mins(x->scales, &sc, &mn);
        int32x4_t d[8];
        for (int c = 0; c < 4; c++) {
            /* elements 64c + l (low nibbles) and 64c + 32 + l (high) of byte 32c + l */
            const uint8x16_t q0 = load_u8(x->qs + 32 * c), q1 = load_u8(x->qs + 32 * c + 16);
            const int8x16x4_t a = load_i8_x4(y->qs + 64 * c);
            d[2 * c] = dot2(as_i8(low_nibbles(q0)), as_i8(low_nibbles(q1)), a.val[0], a.val[1]);
            d[2 * c + 1] =
                dot2(as_i8(high_nibbles(q0)), as_i8(high_nibbles(q1)), a.val[2], a.val[3]);
        }
        const int32x4_t s[2] = {lane_sums4(d), lane_sums4(d + 4)};
        k4_accumulate(&acc, &acc_mins, k4_scaled(s, sc), k4_mins(mn, y->bsums), &x->d, y->d);
    }
    return vaddvq_f32(acc) - vaddvq_f32(acc_mins);
}

/* Bit `bit` of every byte of h moved to bit 4 (the other bits are left as they fall). */
static inline uint8x16_t bit_to_4(uint8x16_t h, int bit) {
    return bit == 4 ? h : vshlq_u8(h, vdupq_n_s8((int8_t)(4 - bit)));
}

static float dot_q5_K(int64_t n, const void *weights, const void *activations) {
    const block_q5_K *x = weights;
    const block_q8_K *y = activations;
    const block_q5_K *const end = x + n / QK_K;
    const uint8x16_t bit4 = vdupq_n_u8(0x10);
    float32x4_t acc = vdupq_n_f32(0.0f), acc_mins = vdupq_n_f32(0.0f);
    for (; x < end; x++, y++) {
        uint8x8_t sc, mn;
        k4_scales_mins(x->scales, &sc, &mn);
        const uint8x16_t h0 = load_u8(x->qh), h1 = load_u8(x->qh + 16);
        int32x4_t d[8];
        for (int c = 0; c < 4; c++) {
            /* Q4_K's nibbles with the fifth bit inserted (levels 0..31): that of element
               64c + l is qh[l] bit 2c, that of 64c + 32 + l bit 2c + 1 */
            const uint8x16_t q0 = load_u8(x->qs + 32 * c), q1 = load_u8(x->qs + 32 * c + 16);
            const uint8x16_t w0 = vbslq_u8(bit4, bit_to_4(h0, 2 * c), low_nibbles(q0));
            const uint8x16_t w1 = vbslq_u8(bit4, bit_to_4(h1, 2 * c), low_nibbles(q1));
            const uint8x16_t w2 = vbslq_u8(bit4, bit_to_4(h0, 2 * c + 1), high_nibbles(q0));
            const uint8x16_t w3 = vbslq_u8(bit4, bit_to_4(h1, 2 * c + 1), high_nibbles(q1));
            const int8x16x4_t a = load_i8_x4(y->qs + 64 * c);
            d[2 * c] = dot2(as_i8(w0), as_i8(w1), a.val[0], a.val[1]);
            d[2 * c + 1] = dot2(as_i8(w2), as_i8(w3), a.val[2], a.val[3]);
        }
        const int32x4_t s[2] = {lane_sums4(d), lane_sums4(d + 4)};
        k4_accumulate(&acc, &acc_mins, k4_scaled(s, sc), k4_mins(mn, y->bsums), &x->d, y->d);
    }
    return vaddvq_f32(acc) - vaddvq_f32(acc_mins);
}

/* The stored Q6_K levels u = level + 32 (0..63, valid s8) of rows k = 0..3 of half h, bytes
   16p..16p+15: low 4 bits from ql (the low nibbles of l0, l1 for rows 0, 1, the high nibbles for
   rows 2, 3), high 2 bits from qh (bits 2k, 2k + 1), put together by shift-and-insert (SLI,
   SRI): two instructions a row. */
static inline void q6_K_rows4(const block_q6_K *x, int h, int p, uint8x16_t rows[4]) {
    const uint8x16_t l0 = load_u8(x->ql + 64 * h + 16 * p);
    const uint8x16_t l1 = load_u8(x->ql + 64 * h + 32 + 16 * p);
    const uint8x16_t hb = load_u8(x->qh + 32 * h + 16 * p);
    const uint8x16_t three = vdupq_n_u8(3);
    const uint8x16_t hb2 = vshrq_n_u8(hb, 2); /* bits 2..7 down to 0..5, zeros above */
    rows[0] = vsliq_n_u8(l0, vandq_u8(hb, three), 4);
    rows[1] = vsliq_n_u8(l1, vandq_u8(hb2, three), 4);
    rows[2] = vsriq_n_u8(vandq_u8(hb, vdupq_n_u8(0x30)), l0, 4);
    rows[3] = vsriq_n_u8(hb2, l1, 4);
}

static float dot_q6_K(int64_t n, const void *weights, const void *activations) {
    const block_q6_K *x = weights;
    const block_q8_K *y = activations;
    const block_q6_K *const end = x + n / QK_K;
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (; x < end; x++, y++) {
        int32x4_t s[4];
        for (int h = 0; h < 2; h++) {
            /* element 128h + 32k + 16p + i: sub-block 8h + 2k + p, activation vector 2k + p */
            const int8x16x4_t a0 = load_i8_x4(y->qs + 128 * h);
            const int8x16x4_t a1 = load_i8_x4(y->qs + 128 * h + 64);
            const int8x16_t a[8] = {a0.val[0], a0.val[1], a0.val[2], a0.val[3],
                                    a1.val[0], a1.val[1], a1.val[2], a1.val[3]};
            int32x4_t d[8];
            for (int p = 0; p < 2; p++) {
                uint8x16_t rows[4];
                q6_K_rows4(x, h, p, rows);
                for (int k = 0; k < 4; k++) d[2 * k + p] = dot1(rows[k], a[2 * k + p]);
            }
            s[2 * h] = lane_sums4(d);
            s[2 * h + 1] = lane_sums4(d + 4);
        }
        /* sum_j scale_j (sum_i u_i a_i - 32 bsum_j), exact in int32 */
        const int8x16_t sc = load_i8(x->scales);
        const int16x8_t sc_lo = vmovl_s8(vget_low_s8(sc)), sc_hi = vmovl_high_s8(sc);
        const int32x4_t offset = scaled_bsums16(sc_lo, sc_hi, y->bsums);
        const int32x4_t sumi = vsubq_s32(scale_sums16(s, sc_lo, sc_hi), vshlq_n_s32(offset, 5));
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(sumi), half_to_float(x->d) * y->d);
    }
    return vaddvq_f32(acc);
}

/* IQ4_XS's eight 6-bit sub-block scales (stored + 32), as s32 in two vectors. */
static inline void iq4_xs_scales(const block_iq4_xs *x, int32x4_t out[2]) {
    static const int16_t kPairShift[8] = {0, -2, -4, -6, -8, -10, -12, -14};
    const uint8x8_t l = vld1_u8(x->scales_l); /* the 4 bytes and 4 of the quants */
    /* low 4 bits of scale ib: the low (ib even) or high nibble of scales_l[ib / 2] */
    const uint8x8_t low = vzip1_u8(vand_u8(l, vdup_n_u8(0x0F)), vshr_n_u8(l, 4));
    /* high 2 bits: bits 2 ib of scales_h */
    const uint16x8_t h = vshlq_u16(vdupq_n_u16(x->scales_h), vld1q_s16(kPairShift));
    const uint16x8_t u = vsliq_n_u16(vmovl_u8(low), vandq_u16(h, vdupq_n_u16(3)), 4);
    const int16x8_t sc = vsubq_s16(vreinterpretq_s16_u16(u), vdupq_n_s16(32));
    out[0] = vmovl_s16(vget_low_s16(sc));
    out[1] = vmovl_high_s16(sc);
}

static float dot_iq4_xs(int64_t n, const void *weights, const void *activations) {
    const block_iq4_xs *x = weights;
    const block_q8_K *y = activations;
    const block_iq4_xs *const end = x + n / QK_K;
    const int8x16_t values = vld1q_s8(lb_kvalues_iq4nl);
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (; x < end; x++, y++) {
        int32x4_t d[8];
        for (int c = 0; c < 4; c++) {
            /* sub-blocks 2c and 2c + 1: elements 64c..64c+63 */
            const uint8x16_t q0 = load_u8(x->qs + 32 * c), q1 = load_u8(x->qs + 32 * c + 16);
            const int8x16x4_t a = load_i8_x4(y->qs + 64 * c);
            d[2 * c] = dot2(vqtbl1q_s8(values, low_nibbles(q0)),
                            vqtbl1q_s8(values, high_nibbles(q0)), a.val[0], a.val[1]);
            d[2 * c + 1] = dot2(vqtbl1q_s8(values, low_nibbles(q1)),
                                vqtbl1q_s8(values, high_nibbles(q1)), a.val[2], a.val[3]);
        }
        int32x4_t sc[2];
        iq4_xs_scales(x, sc);
        const int32x4_t sumi = vmlaq_s32(vmulq_s32(lane_sums4(d), sc[0]), lane_sums4(d + 4), sc[1]);
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(sumi), half_to_float(x->d) * y->d);
    }
    return vaddvq_f32(acc);
}

void lb_register_neon_dotprod(lb_kernel_set *set) {
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
}
