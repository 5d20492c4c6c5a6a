/*
 * AArch64 kernels with the dot-product extension (SDOT, armv8.2-a+dotprod): the dot products of
 * Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, MXFP4 and NVFP4 with Q8_0/Q8_1 activations and of Q2_K,
 * Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS, TQ1_0 and TQ2_0 with Q8_K activations, replacing the plain
 * NEON level's at this level, each with a multi-token version (kernels.h, lb_vec_dot_tokens_fn).
 * The activation quantizers stay with neon.c. The file is also built for plain NEON with SDOT
 * emulated (neon_sdot_emulated.c), where it fills in the formats neon.c has no kernel for.
 *
 * Integer parts, exact: a block's weights are unpacked to bytes laid out like the activation
 * block's qs (element j in byte j) and SDOT sums four s8 x s8 products into each s32 lane
 * without rounding or overflow. Where it saves instructions a format is unpacked to its levels
 * plus a constant (taken off through Q8_K's bsums: Q3_K, Q6_K, TQ2_0) or times a power of two
 * (Q4_0, Q2_K, Q3_K, TQ2_0), which comes off exactly in the int -> float conversion (SCVTF with
 * fraction bits) or by an arithmetic shift of the int32 sums. The FP4 formats' codes go through
 * the table of doubled E2M1 values, their scales decoded halved as fp4.c does (exact powers of
 * two from E8M0, UE4M3 through fp16, subnormals included); TQ1_0's base-3 digits come from the
 * bytes times powers of 3 by two comparisons. The four lanes of each block (or sub-block) are
 * summed by pairwise adds, four blocks to a vector, and the K-quants' sub-scales, mins and
 * offsets applied in int32, so every block's integer sum is the scalar reference's.
 *
 * Float parts, equal to the references to rounding, not bit for bit: instead of reducing each
 * block to a scalar and adding it into one float chain, the exact integer sums are converted to
 * float vectors and multiply-added (FMLA) with their block scales into float32x4 accumulators
 * (the mins of Q2_K, Q4_K and Q5_K multiply-subtracted from the same one), with one horizontal
 * sum per row at the end. Only the order and the fusing of the float operations differ from the
 * references.
 *
 * Multi-token: every kernel is written for a weight row against up to LB_DOT_TOKENS activation
 * rows. The weights are unpacked once per block (or four blocks) and then meet each token's
 * activations, and each token's integer and float operations are those of the one-token kernel,
 * which is the same body instantiated with one token: the results agree bit for bit.
 *
 * Not yet measured on AArch64 hardware (tested under qemu only): the choices between ways of
 * unpacking were made by the instruction counts of the loops.
 */
#include "../../formats/blocks.h"
#include "../../formats/fp4.h"
#include "../kernels.h"
#include "dotprod_common.h"
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

/* A K-quant's super-block scales [d, dmin] as floats (exact), to be multiplied by each token's
   activation scale. */
static inline float32x2_t half_pair(const lb_half *d_dmin) {
    const uint32x2_t bits = {half_pair_bits(d_dmin), 0};
    return vget_low_f32(vcvt_f32_f16(vreinterpret_f16_u32(bits)));
}

static inline uint8x16_t low_nibbles(uint8x16_t q) { return vandq_u8(q, vdupq_n_u8(0x0F)); }
static inline uint8x16_t high_nibbles(uint8x16_t q) { return vshrq_n_u8(q, 4); }

/* SDOT of 32 weight bytes (two vectors) with 32 activation bytes, into a fresh accumulator. */
static inline int32x4_t dot32(int8x16_t w0, int8x16_t w1, const int8_t *a) {
    return sdot(sdot(vdupq_n_s32(0), w0, load_i8(a)), w1, load_i8(a + 16));
}

/* SDOT of 16 weight bytes with 16 activation bytes, into a fresh accumulator. */
static inline int32x4_t dot1(uint8x16_t w, int8x16_t a) {
    return sdot(vdupq_n_s32(0), as_i8(w), a);
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

/* Each format's weights as two vectors of s8 laid out like the activation block's qs. */

/* 16 times Q4_0's levels q - 8: with each nibble's top bit flipped (q ^ 8) a nibble is its level
   in 4-bit two's complement, so moved to the top of a byte (low: << 4; high: & 0xF0) it is the
   level times 16 as an s8. */
static inline void q4_0_weights(const block_q4_0 *x, int8x16_t w[2]) {
    const uint8x16_t q = veorq_u8(load_u8(x->qs), vdupq_n_u8(0x88));
    w[0] = as_i8(vshlq_n_u8(q, 4));
    w[1] = as_i8(vandq_u8(q, vdupq_n_u8(0xF0)));
}

static inline void q4_1_weights(const block_q4_1 *x, int8x16_t w[2]) {
    const uint8x16_t q = load_u8(x->qs);
    w[0] = as_i8(low_nibbles(q));
    w[1] = as_i8(high_nibbles(q));
}

/* Q5_0's levels (q | fifth bit << 4) - 16: where the fifth bit is clear the level is the nibble
   minus 16, i.e. the nibble under 0xF0 as an s8; where set, the nibble itself. The all-ones
   masks of the clear bits supply the 0xF0, one insert per 16 weights. */
static inline void q5_0_weights(const block_q5_0 *x, int8x16_t w[2]) {
    uint8x16_t clear[2];
    q5_bit_masks(vmvnq_u8(load_u8(x->qh)), clear); /* 16 bytes: qh and the first 12 of qs */
    const uint8x16_t q = load_u8(x->qs);
    w[0] = as_i8(vbslq_u8(vdupq_n_u8(0x0F), q, clear[0]));
    w[1] = as_i8(vsriq_n_u8(clear[1], q, 4));
}

/* Q5_1's levels q | fifth bit << 4, 0..31: valid s8 as they are. The fifth bits (masked from
   the all-ones masks) take the nibbles inserted under them. */
static inline void q5_1_weights(const block_q5_1 *x, int8x16_t w[2]) {
    uint8x16_t set[2];
    q5_bit_masks(load_u8(x->qh), set); /* 16 bytes: qh and the first 12 of qs */
    const uint8x16_t q = load_u8(x->qs), bit4 = vdupq_n_u8(0x10);
    w[0] = as_i8(vbslq_u8(vdupq_n_u8(0x0F), q, vandq_u8(set[0], bit4)));
    w[1] = as_i8(vsriq_n_u8(vandq_u8(set[1], bit4), q, 4));
}

static inline void q8_0_weights(const block_q8_0 *x, int8x16_t w[2]) {
    w[0] = load_i8(x->qs);
    w[1] = load_i8(x->qs + 16);
}

static inline void iq4_nl_weights(const block_iq4_nl *x, int8x16_t w[2]) {
    const int8x16_t values = vld1q_s8(lb_kvalues_iq4nl);
    const uint8x16_t q = load_u8(x->qs);
    w[0] = vqtbl1q_s8(values, low_nibbles(q));
    w[1] = vqtbl1q_s8(values, high_nibbles(q));
}

/* MXFP4: element j in the low nibble of qs[j], element j + 16 in the high one. */
static inline void mxfp4_weights(const block_mxfp4 *x, int8x16_t w[2]) {
    const int8x16_t values = vld1q_s8(lb_fp4_doubled);
    const uint8x16_t q = load_u8(x->qs);
    w[0] = vqtbl1q_s8(values, low_nibbles(q));
    w[1] = vqtbl1q_s8(values, high_nibbles(q));
}

#define E8M0_HALF(p) lb_e8m0_half((p)->e)

/* The same for the E8M0 bytes of blocks x[0..3], the two cases chosen lane by lane. */
static inline float32x4_t e8m0_halves4(const block_mxfp4 *x) {
    const uint32x4_t e = {x[0].e, x[1].e, x[2].e, x[3].e};
    const uint32x4_t normal = vshlq_n_u32(vsubq_u32(e, vdupq_n_u32(1)), 23);
    const uint32x4_t subnormal = vshlq_u32(vdupq_n_u32(0x00200000u), vreinterpretq_s32_u32(e));
    return vreinterpretq_f32_u32(vbslq_u32(vcltq_u32(e, vdupq_n_u32(2)), subnormal, normal));
}

/* Four blocks' exact sums as floats, divided by 2^shift: 16 (shift 4) for Q4_0's weights,
   unpacked 16 times too large, which SCVTF's fraction bits take off exactly. */
static inline float32x4_t block_sums_float(int32x4_t sums, int shift) {
    return shift ? vcvtq_n_f32_s32(sums, 4) : vcvtq_f32_s32(sums);
}

/* acc + d_x d_y sumi + m_x s_y for four blocks, x_dm holding the weights' [d, m] pairs
   (half_pairs4): the products of their [d, m] and [d, s] pairs give both factors at once,
   separated by unzipping. */
static inline float32x4_t add_affine4(float32x4_t acc, int32x4_t sums, const float32x4_t x_dm[2],
                                      const lb_half *y_ds, size_t y_stride) {
    float32x4_t yf[2];
    half_pairs4(y_ds, y_stride, yf);
    const float32x4_t p0 = vmulq_f32(x_dm[0], yf[0]), p1 = vmulq_f32(x_dm[1], yf[1]);
    acc = vaddq_f32(acc, vuzp2q_f32(p0, p1)); /* m_x s_y */
    return vfmaq_f32(acc, vcvtq_f32_s32(sums), vuzp1q_f32(p0, p1));
}

/* Row bodies of the 32-element formats against n_tokens activation rows (NAME_tokens_body):
   four blocks per step, their weights unpacked once for all tokens, each token's four exact
   sums (lane_sums4) meeting its four scale products in one multiply-add; then the blocks left
   over one by one, into a scalar float chain per token. SCALED: d_x d_y sumi (Q4_0, Q5_0, Q8_0,
   IQ4_NL, MXFP4 against Q8_0; SHIFT as block_sums_float; SCALES4(p) the weight scales of blocks
   p..p + 3 as floats, SCALE(p) that of block p). AFFINE: d_x d_y sumi + m_x s_y (Q4_1, Q5_1
   against Q8_1). */
#define DEFINE_SCALED_BODY(NAME, WBLOCK, ELEMS, WEIGHTS_FN, SHIFT, SCALES4, SCALE)               \
    static inline ALWAYS_INLINE void NAME##_tokens_body(int64_t n, const void *weights,          \
                                                        const void *activations, size_t stride,  \
                                                        int n_tokens, float *out) {              \
        const WBLOCK *x = weights;                                                               \
        const int64_t nb = n / (ELEMS), nb4 = nb & ~(int64_t)3;                                  \
        float32x4_t acc[LB_DOT_TOKENS];                                                          \
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_f32(0.0f);             \
        int64_t b = 0;                                                                           \
        for (; b < nb4; b += 4) {                                                                \
            int8x16_t w[4][2];                                                                   \
            for (int i = 0; i < 4; i++) WEIGHTS_FN(x + b + i, w[i]);                             \
            const float32x4_t x_d = SCALES4(x + b);                                              \
            UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {                                   \
                const block_q8_0 *y = (const block_q8_0 *)token_row(activations, stride, t) + b; \
                int32x4_t d[4];                                                                  \
                for (int i = 0; i < 4; i++) d[i] = dot32(w[i][0], w[i][1], y[i].qs);             \
                const float32x4_t scale = vmulq_f32(x_d, halves4(&y->d, sizeof *y));             \
                acc[t] = vfmaq_f32(acc[t], block_sums_float(lane_sums4(d), SHIFT), scale);       \
            }                                                                                    \
        }                                                                                        \
        float sum[LB_DOT_TOKENS];                                                                \
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) sum[t] = vaddvq_f32(acc[t]);            \
        for (; b < nb; b++) {                                                                    \
            int8x16_t w[2];                                                                      \
            WEIGHTS_FN(x + b, w);                                                                \
            const float x_d = SCALE(x + b);                                                      \
            UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {                                   \
                const block_q8_0 *y = (const block_q8_0 *)token_row(activations, stride, t) + b; \
                const int32_t sumi = vaddvq_s32(dot32(w[0], w[1], y->qs)) / (1 << (SHIFT));      \
                sum[t] += (float)sumi * (x_d * half_to_float(y->d));                             \
            }                                                                                    \
        }                                                                                        \
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = sum[t];                        \
    }

#define DEFINE_AFFINE_BODY(NAME, WBLOCK, ELEMS, WEIGHTS_FN)                                      \
    static inline ALWAYS_INLINE void NAME##_tokens_body(int64_t n, const void *weights,          \
                                                        const void *activations, size_t stride,  \
                                                        int n_tokens, float *out) {              \
        const WBLOCK *x = weights;                                                               \
        const int64_t nb = n / (ELEMS), nb4 = nb & ~(int64_t)3;                                  \
        float32x4_t acc[LB_DOT_TOKENS];                                                          \
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_f32(0.0f);             \
        int64_t b = 0;                                                                           \
        for (; b < nb4; b += 4) {                                                                \
            int8x16_t w[4][2];                                                                   \
            for (int i = 0; i < 4; i++) WEIGHTS_FN(x + b + i, w[i]);                             \
            float32x4_t x_dm[2];                                                                 \
            half_pairs4(&x[b].d, sizeof *x, x_dm);                                               \
            UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {                                   \
                const block_q8_1 *y = (const block_q8_1 *)token_row(activations, stride, t) + b; \
                int32x4_t d[4];                                                                  \
                for (int i = 0; i < 4; i++) d[i] = dot32(w[i][0], w[i][1], y[i].qs);             \
                acc[t] = add_affine4(acc[t], lane_sums4(d), x_dm, &y->d, sizeof *y);             \
            }                                                                                    \
        }                                                                                        \
        float sum[LB_DOT_TOKENS];                                                                \
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) sum[t] = vaddvq_f32(acc[t]);            \
        for (; b < nb; b++) {                                                                    \
            int8x16_t w[2];                                                                      \
            WEIGHTS_FN(x + b, w);                                                                \
            const float x_d = half_to_float(x[b].d), x_m = half_to_float(x[b].m);                \
            UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {                                   \
                const block_q8_1 *y = (const block_q8_1 *)token_row(activations, stride, t) + b; \
                const float sumi = (float)vaddvq_s32(dot32(w[0], w[1], y->qs));                  \
                sum[t] += x_d * half_to_float(y->d) * sumi + x_m * half_to_float(y->s);          \
            }                                                                                    \
        }                                                                                        \
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = sum[t];                        \
    }

/* The fp16 scales d of blocks p..p + 3, and of block p. */
#define FP16_SCALES4(p) halves4(&(p)->d, sizeof *(p))
#define FP16_SCALE(p) half_to_float((p)->d)

DEFINE_SCALED_BODY(q4_0, block_q4_0, QK4_0, q4_0_weights, 4, FP16_SCALES4, FP16_SCALE)
DEFINE_AFFINE_BODY(q4_1, block_q4_1, QK4_1, q4_1_weights)
DEFINE_SCALED_BODY(q5_0, block_q5_0, QK5_0, q5_0_weights, 0, FP16_SCALES4, FP16_SCALE)
DEFINE_AFFINE_BODY(q5_1, block_q5_1, QK5_1, q5_1_weights)
DEFINE_SCALED_BODY(q8_0, block_q8_0, QK8_0, q8_0_weights, 0, FP16_SCALES4, FP16_SCALE)
DEFINE_SCALED_BODY(iq4_nl, block_iq4_nl, QK4_NL, iq4_nl_weights, 0, FP16_SCALES4, FP16_SCALE)
DEFINE_SCALED_BODY(mxfp4, block_mxfp4, QK_MXFP4, mxfp4_weights, 0, e8m0_halves4, E8M0_HALF)
DEFINE_DOT_ENTRY_POINTS(q4_0, q4_0_tokens_body)
DEFINE_DOT_ENTRY_POINTS(q4_1, q4_1_tokens_body)
DEFINE_DOT_ENTRY_POINTS(q5_0, q5_0_tokens_body)
DEFINE_DOT_ENTRY_POINTS(q5_1, q5_1_tokens_body)
DEFINE_DOT_ENTRY_POINTS(q8_0, q8_0_tokens_body)
DEFINE_DOT_ENTRY_POINTS(iq4_nl, iq4_nl_tokens_body)
DEFINE_DOT_ENTRY_POINTS(mxfp4, mxfp4_tokens_body)

/* ------------------------------------------------------------------------------------------ */
/* NVFP4: 64-element blocks of four 16-element sub-blocks with UE4M3 scales, against two Q8_0  */
/* blocks each; two blocks (eight sub-blocks, four activation blocks) per step                 */
/* ------------------------------------------------------------------------------------------ */

/* The weights of one block in element order, sub-block s in w[s]: the 8 bytes of sub-block s
   hold its elements j (low nibble) and j + 8 (high), so the nibbles of 16 bytes (two
   sub-blocks) are looked up and their 8-byte halves interleaved. */
static inline void nvfp4_weights(const block_nvfp4 *x, int8x16_t w[4]) {
    const int8x16_t values = vld1q_s8(lb_fp4_doubled);
    for (int h = 0; h < 2; h++) {
        const uint8x16_t q = load_u8(x->qs + 16 * h);
        const int64x2_t low = vreinterpretq_s64_s8(vqtbl1q_s8(values, low_nibbles(q)));
        const int64x2_t high = vreinterpretq_s64_s8(vqtbl1q_s8(values, high_nibbles(q)));
        w[2 * h] = vreinterpretq_s8_s64(vzip1q_s64(low, high));
        w[2 * h + 1] = vreinterpretq_s8_s64(vzip2q_s64(low, high));
    }
}

/* The sub-block scales of two blocks (eight UE4M3 bytes, block 0's in the low half), halved
   as fp4.c decodes them, in out[0] and out[1]. A UE4M3 byte's 7 bits shifted left by 7 are
   the fp16 with the same exponent and mantissa fields: 2^-8 times its value, exactly,
   subnormals included (both formats' subnormals sit below the smallest exponent), so the
   fp16 -> fp32 conversion times 2^7 is the value halved. As fp4.c decodes them, bit 7 is
   ignored and 0x7F (E4M3's NaN) is zero, while 0xFF is not. */
static inline void nvfp4_scales8(uint8x8_t codes, float32x4_t out[2]) {
    const uint8x8_t nan = vceq_u8(codes, vdup_n_u8(0x7F));
    const uint8x8_t fields = vbic_u8(vand_u8(codes, vdup_n_u8(0x7F)), nan);
    const float16x8_t h = vreinterpretq_f16_u16(vshll_n_u8(fields, 7));
    out[0] = vmulq_n_f32(vcvt_f32_f16(vget_low_f16(h)), 128.0f);
    out[1] = vmulq_n_f32(vcvt_high_f32_f16(h), 128.0f);
}

static inline uint32_t load_u32(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* acc + one block's four sub-block sums times their scales: w its weights (nvfp4_weights), x_s
   its sub-block scales, y its two activation blocks and y_d their scales as [y0, y0, y1, y1]. */
static inline ALWAYS_INLINE float32x4_t nvfp4_add_block(float32x4_t acc, const int8x16_t w[4],
                                                        float32x4_t x_s, const block_q8_0 *y,
                                                        float32x4_t y_d) {
    int32x4_t d[4];
    for (int s = 0; s < 4; s++) {
        d[s] = sdot(vdupq_n_s32(0), w[s], load_i8(y[s / 2].qs + 16 * (s % 2)));
    }
    return vfmaq_f32(acc, vcvtq_f32_s32(lane_sums4(d)), vmulq_f32(x_s, y_d));
}

/* Two blocks per step: their weights and scales unpacked once for all tokens, and each token's
   four activation scales loaded together; a last odd block alone. */
static inline ALWAYS_INLINE void nvfp4_tokens_body(int64_t n, const void *weights,
                                                   const void *activations, size_t stride,
                                                   int n_tokens, float *out) {
    const block_nvfp4 *x = weights;
    const int64_t nb = n / QK_NVFP4;
    float32x4_t acc[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_f32(0.0f);
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        int8x16_t w[2][4];
        nvfp4_weights(x + b, w[0]);
        nvfp4_weights(x + b + 1, w[1]);
        const uint32x2_t codes = {load_u32(x[b].d), load_u32(x[b + 1].d)};
        float32x4_t x_s[2];
        nvfp4_scales8(vreinterpret_u8_u32(codes), x_s);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            const block_q8_0 *y = (const block_q8_0 *)token_row(activations, stride, t) + 2 * b;
            const float32x4_t y_d = halves4(&y->d, sizeof *y);
            acc[t] = nvfp4_add_block(acc[t], w[0], x_s[0], y, vzip1q_f32(y_d, y_d));
            acc[t] = nvfp4_add_block(acc[t], w[1], x_s[1], y + 2, vzip2q_f32(y_d, y_d));
        }
    }
    if (b < nb) {
        int8x16_t w[4];
        nvfp4_weights(x + b, w);
        const uint32x2_t codes = {load_u32(x[b].d), 0};
        float32x4_t x_s[2];
        nvfp4_scales8(vreinterpret_u8_u32(codes), x_s);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            const block_q8_0 *y = (const block_q8_0 *)token_row(activations, stride, t) + 2 * b;
            const float32x4_t y_d = vcombine_f32(vdup_n_f32(half_to_float(y[0].d)),
                                                 vdup_n_f32(half_to_float(y[1].d)));
            acc[t] = nvfp4_add_block(acc[t], w, x_s[0], y, y_d);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = vaddvq_f32(acc[t]);
}
DEFINE_DOT_ENTRY_POINTS(nvfp4, nvfp4_tokens_body)

/* ------------------------------------------------------------------------------------------ */
/* 256-element formats with Q8_K activations: each sub-block's SDOT sum in its own accumulator, */
/* pairwise-added to one lane per sub-block, then times the sub-scales in int32                */
/* ------------------------------------------------------------------------------------------ */

/* 64 activation bytes as four vectors, in one LD1 of four registers (x4 = 1) or in four plain
   loads: the same values. Where many vectors are live (the multi-token loops of the 16-element
   formats) GCC allocates the four-register tuples poorly, with copies and spills. */
static inline ALWAYS_INLINE void load_activations64(const int8_t *a, int x4, int8x16_t out[4]) {
    if (x4) {
        const int8x16x4_t v = vld1q_s8_x4(a);
        for (int i = 0; i < 4; i++) out[i] = v.val[i];
        return;
    }
    for (int i = 0; i < 4; i++) out[i] = load_i8(a + 16 * i);
}

static inline int16x8_t widen_u8_lo(uint8x16_t v) {
    return vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(v)));
}
static inline int16x8_t widen_u8_hi(uint8x16_t v) {
    return vreinterpretq_s16_u16(vmovl_high_u8(v));
}

/* 16 sub-scales (two s16 vectors) as four s32 vectors, sub-blocks 4i..4i+3 in out[i]. */
static inline void widen_scales16(int16x8_t lo, int16x8_t hi, int32x4_t out[4]) {
    out[0] = vmovl_s16(vget_low_s16(lo));
    out[1] = vmovl_high_s16(lo);
    out[2] = vmovl_s16(vget_low_s16(hi));
    out[3] = vmovl_high_s16(hi);
}

/* The 16-element sub-block formats Q2_K, Q3_K and Q6_K: sub-block j = 8h + 2k + p is row k of
   the weights' half h, bytes 16p..16p+15, against activations 16j..16j+15. */
enum sub16_format { SUB16_Q2_K, SUB16_Q3_K, SUB16_Q6_K };

/* Q2_K, Q3_K: the 2-bit field k of every byte of q. Fields 0..2 stay in place, each a level
   times f_k = 1, 4, 16 (masked: still an s8), field 3 is shifted down (f_3 = 1): one
   instruction per 16 weights. The sub-scales of row k are multiplied by 16 / f_k instead, so
   that every row's sum comes out 16 times too large, together. */
static inline ALWAYS_INLINE uint8x16_t two_bit_row(uint8x16_t q, int k) {
    return k == 3 ? vshrq_n_u8(q, 6) : vandq_u8(q, vdupq_n_u8((uint8_t)(3u << (2 * k))));
}

/* The shifts that multiply the sub-scale of sub-block j (row k = (j % 8) / 2) by 16 / f_k. */
static const int8_t kRowScaleShift[16] = {4, 4, 2, 2, 0, 0, 4, 4, 4, 4, 2, 2, 0, 0, 4, 4};

/* Q3_K: the stored 3 bits u = low2 | hbit << 2 are the level + 4, 0..7. Row k's low bits are
   two_bit_row's (the field times f_k); hmask bit 4h + k is moved next to them (to bit 2, 4, 6,
   2 for k = 0..3) and inserted, giving u f_k. The offset 4 comes off through the bsums. */
static inline ALWAYS_INLINE uint8x16_t q3_K_row(uint8x16_t q, uint8x16_t m, int h, int k) {
    static const int kPosition[4] = {2, 4, 6, 2};
    const int shift = kPosition[k] - 4 * h - k;
    const uint8x16_t bit = shift == 0 ? m : vshlq_u8(m, vdupq_n_s8((int8_t)shift));
    return vbslq_u8(vdupq_n_u8((uint8_t)(1u << kPosition[k])), bit, two_bit_row(q, k));
}

/* The stored Q6_K levels u = level + 32 (0..63, valid s8) of row k of half h, bytes
   16p..16p+15: low 4 bits from ql (the low nibbles of l0 = ql[64h + 16p..], l1 = ql[64h + 32 +
   16p..] for rows 0, 1, the high nibbles for rows 2, 3), high 2 bits from qh (bits 2k, 2k + 1),
   put together by shift-and-insert (SLI, SRI): two instructions a row. */
static inline ALWAYS_INLINE uint8x16_t q6_K_row(const block_q6_K *x, int h, int k, int p) {
    const uint8x16_t l = load_u8(x->ql + 64 * h + 32 * (k % 2) + 16 * p);
    const uint8x16_t hb = load_u8(x->qh + 32 * h + 16 * p);
    const uint8x16_t three = vdupq_n_u8(3);
    switch (k) {
    case 0: return vsliq_n_u8(l, vandq_u8(hb, three), 4);
    case 1: return vsliq_n_u8(l, vandq_u8(vshrq_n_u8(hb, 2), three), 4);
    case 2: return vsriq_n_u8(vandq_u8(hb, vdupq_n_u8(0x30)), l, 4);
    default: return vsriq_n_u8(vshrq_n_u8(hb, 2), l, 4); /* bits 6, 7 to 4, 5, zeros above */
    }
}

static inline ALWAYS_INLINE uint8x16_t sub16_weights(int format, const void *block, int h, int k,
                                                     int p) {
    if (format == SUB16_Q6_K) return q6_K_row(block, h, k, p);
    if (format == SUB16_Q2_K) {
        return two_bit_row(load_u8(((const block_q2_K *)block)->qs + 32 * h + 16 * p), k);
    }
    const block_q3_K *x = block;
    return q3_K_row(load_u8(x->qs + 32 * h + 16 * p), load_u8(x->hmask + 16 * p), h, k);
}

/* sumi[t] = sum_j scales[j] s_j(t) over sub-blocks 4i..4i+3 (rows 2i % 4 and 2i % 4 + 1 of
   half i / 2) added to sumi[t] (i > 0) or put there (i = 0), s_j(t) the exact SDOT sum of
   sub-block j with token t. The two rows' weights are unpacked once for all tokens; per token
   the four sub-blocks' sums are pairwise-added to one lane each and meet their scales at once,
   so that only sumi stays live per token. */
static inline ALWAYS_INLINE void sub16_scaled_sums4(int format, const void *block, int i,
                                                    int32x4_t scales, const void *activations,
                                                    size_t stride, int64_t b, int n_tokens,
                                                    int32x4_t sumi[]) {
    const int h = i / 2, k = 2 * (i % 2);
    uint8x16_t w[4];
    for (int r = 0; r < 2; r++) {
        for (int p = 0; p < 2; p++) w[2 * r + p] = sub16_weights(format, block, h, k + r, p);
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
        int8x16_t a[4];
        load_activations64(q8_K_block(activations, stride, t, b)->qs + 128 * h + 32 * k,
                           n_tokens == 1, a);
        int32x4_t d[4];
        for (int v = 0; v < 4; v++) d[v] = dot1(w[v], a[v]);
        const int32x4_t s = lane_sums4(d);
        sumi[t] = i == 0 ? vmulq_s32(s, scales) : vmlaq_s32(sumi[t], s, scales);
    }
}

/* sumi[t] = sum_j scales[j] s_j(t) over the 16 sub-blocks of a Q2_K, Q3_K or Q6_K block (block
   b of the row); scales[i] holds sub-blocks 4i..4i+3. Written out rather than as a loop over i,
   which GCC does not always unroll, while every step depends on i. */
static inline ALWAYS_INLINE void sub16_scaled_sums(int format, const void *block,
                                                   const int32x4_t scales[4],
                                                   const void *activations, size_t stride,
                                                   int64_t b, int n_tokens, int32x4_t sumi[]) {
    sub16_scaled_sums4(format, block, 0, scales[0], activations, stride, b, n_tokens, sumi);
    sub16_scaled_sums4(format, block, 1, scales[1], activations, stride, b, n_tokens, sumi);
    sub16_scaled_sums4(format, block, 2, scales[2], activations, stride, b, n_tokens, sumi);
    sub16_scaled_sums4(format, block, 3, scales[3], activations, stride, b, n_tokens, sumi);
}

static inline ALWAYS_INLINE void q2_K_tokens_body(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_q2_K *x = weights;
    const int8x16_t row_shift = vld1q_s8(kRowScaleShift);
    float32x4_t acc[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8x16_t packed = load_u8(x[b].scales); /* scale low, min high nibble */
        /* the scales times 16 / f_k, at most 15 * 16: still bytes */
        const uint8x16_t sc = vshlq_u8(low_nibbles(packed), row_shift);
        const uint8x16_t mn = high_nibbles(packed);
        const int16x8_t mn_lo = widen_u8_lo(mn), mn_hi = widen_u8_hi(mn);
        int32x4_t scales[4];
        widen_scales16(widen_u8_lo(sc), widen_u8_hi(sc), scales);
        /* 16 times the reference's sums of scaled sub-block sums */
        int32x4_t sumi16[LB_DOT_TOKENS];
        sub16_scaled_sums(SUB16_Q2_K, x + b, scales, activations, stride, b, n_tokens, sumi16);
        const float32x2_t d_dmin = half_pair(&x[b].d);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const int32x4_t mins = scaled_bsums16(mn_lo, mn_hi, y->bsums);
            const float32x2_t d = vmul_n_f32(d_dmin, y->d); /* [d, dmin] */
            acc[t] = vfmaq_lane_f32(acc[t], vcvtq_n_f32_s32(sumi16[t], 4), d, 0);
            acc[t] = vfmsq_lane_f32(acc[t], vcvtq_f32_s32(mins), d, 1);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = vaddvq_f32(acc[t]);
}
DEFINE_DOT_ENTRY_POINTS(q2_K, q2_K_tokens_body)

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

static inline ALWAYS_INLINE void q3_K_tokens_body(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_q3_K *x = weights;
    /* shifts from 1024 sc down to 256 sc / f_k */
    const int16x8_t row_shift = vaddq_s16(vmovl_s8(vld1_s8(kRowScaleShift)), vdupq_n_s16(-6));
    float32x4_t acc[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const int8x16_t sc4 = q3_K_scales4(x[b].scales);
        /* 1024 sc, in -32768..31744: an s16 */
        const int16x8_t sc1024_lo = vshll_n_s8(vget_low_s8(sc4), 8);
        const int16x8_t sc1024_hi = vshll_high_n_s8(sc4, 8);
        int32x4_t scales[4];
        widen_scales16(vshlq_s16(sc1024_lo, row_shift), vshlq_s16(sc1024_hi, row_shift), scales);
        int32x4_t sumi[LB_DOT_TOKENS];
        sub16_scaled_sums(SUB16_Q3_K, x + b, scales, activations, stride, b, n_tokens, sumi);
        const float x_d = half_to_float(x[b].d);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            /* 256 times the reference's sum: sum_j (256 sc_j / f_k) (f_k sum_i u_i a_i) - 1024
               sc_j bsum_j; every lane's total fits an int32 (the steps may wrap) */
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const int16x8_t b0 = vld1q_s16(y->bsums), b1 = vld1q_s16(y->bsums + 8);
            int32x4_t s = vmlsl_s16(sumi[t], vget_low_s16(sc1024_lo), vget_low_s16(b0));
            s = vmlsl_high_s16(s, sc1024_lo, b0);
            s = vmlsl_s16(s, vget_low_s16(sc1024_hi), vget_low_s16(b1));
            s = vmlsl_high_s16(s, sc1024_hi, b1);
            acc[t] = vfmaq_n_f32(acc[t], vcvtq_n_f32_s32(s, 8), x_d * y->d);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = vaddvq_f32(acc[t]);
}
DEFINE_DOT_ENTRY_POINTS(q3_K, q3_K_tokens_body)

static inline ALWAYS_INLINE void q6_K_tokens_body(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_q6_K *x = weights;
    float32x4_t acc[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const int8x16_t sc = load_i8(x[b].scales);
        const int16x8_t sc_lo = vmovl_s8(vget_low_s8(sc)), sc_hi = vmovl_high_s8(sc);
        int32x4_t scales[4];
        widen_scales16(sc_lo, sc_hi, scales);
        int32x4_t sumi[LB_DOT_TOKENS];
        sub16_scaled_sums(SUB16_Q6_K, x + b, scales, activations, stride, b, n_tokens, sumi);
        const float x_d = half_to_float(x[b].d);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            /* sum_j scale_j (sum_i u_i a_i - 32 bsum_j), exact in int32 */
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const int32x4_t offset = scaled_bsums16(sc_lo, sc_hi, y->bsums);
            const int32x4_t s = vsubq_s32(sumi[t], vshlq_n_s32(offset, 5));
            acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(s), x_d * y->d);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = vaddvq_f32(acc[t]);
}
DEFINE_DOT_ENTRY_POINTS(q6_K, q6_K_tokens_body)

/* The 32-element sub-block formats Q4_K, Q5_K and IQ4_XS: chunk c is elements 64c..64c+63,
   sub-blocks 2c and 2c + 1. */
enum sub32_format { SUB32_Q4_K, SUB32_Q5_K, SUB32_IQ4_XS };

/* Bit `bit` of every byte of h moved to bit 4 (the other bits are left as they fall). */
static inline uint8x16_t bit_to_4(uint8x16_t h, int bit) {
    return bit == 4 ? h : vshlq_u8(h, vdupq_n_s8((int8_t)(4 - bit)));
}

/* The weights of chunk c as four vectors of s8: w[0], w[1] for sub-block 2c, w[2], w[3] for
   2c + 1. Q4_K, Q5_K: elements 64c + l (low nibbles) and 64c + 32 + l (high nibbles) of byte
   32c + l, Q5_K's with the fifth bit inserted (levels 0..31: that of element 64c + l is qh[l]
   bit 2c, that of 64c + 32 + l bit 2c + 1). IQ4_XS: bytes 32c.. hold sub-block 2c (low nibbles
   first, then high), the next 16 bytes 2c + 1, looked up in the IQ4 grid. */
static inline ALWAYS_INLINE void sub32_weights(int format, const void *block, int c,
                                               int8x16_t w[4]) {
    if (format == SUB32_IQ4_XS) {
        const int8x16_t values = vld1q_s8(lb_kvalues_iq4nl);
        const block_iq4_xs *x = block;
        const uint8x16_t q0 = load_u8(x->qs + 32 * c), q1 = load_u8(x->qs + 32 * c + 16);
        w[0] = vqtbl1q_s8(values, low_nibbles(q0));
        w[1] = vqtbl1q_s8(values, high_nibbles(q0));
        w[2] = vqtbl1q_s8(values, low_nibbles(q1));
        w[3] = vqtbl1q_s8(values, high_nibbles(q1));
        return;
    }
    const uint8_t *qs = format == SUB32_Q5_K ? ((const block_q5_K *)block)->qs
                                             : ((const block_q4_K *)block)->qs;
    const uint8x16_t q0 = load_u8(qs + 32 * c), q1 = load_u8(qs + 32 * c + 16);
    uint8x16_t u[4] = {low_nibbles(q0), low_nibbles(q1), high_nibbles(q0), high_nibbles(q1)};
    if (format == SUB32_Q5_K) {
        const block_q5_K *x = block;
        const uint8x16_t h0 = load_u8(x->qh), h1 = load_u8(x->qh + 16), bit4 = vdupq_n_u8(0x10);
        u[0] = vbslq_u8(bit4, bit_to_4(h0, 2 * c), u[0]);
        u[1] = vbslq_u8(bit4, bit_to_4(h1, 2 * c), u[1]);
        u[2] = vbslq_u8(bit4, bit_to_4(h0, 2 * c + 1), u[2]);
        u[3] = vbslq_u8(bit4, bit_to_4(h1, 2 * c + 1), u[3]);
    }
    for (int i = 0; i < 4; i++) w[i] = as_i8(u[i]);
}

/* sumi[t] = sum_i scales[i / 4] s_i(t) over the 8 sub-blocks of a Q4_K, Q5_K or IQ4_XS block
   (block b of the row), s_i(t) the exact SDOT sum of sub-block i with token t. Each chunk's
   weights are unpacked once for all tokens; per token its two sub-blocks are pairwise-added at
   once and every two chunks (four sub-blocks, one lane each) meet their scales. Of the shapes
   tried for this loop, this one left GCC the fewest instructions and spills with 4 tokens. */
static inline ALWAYS_INLINE void sub32_scaled_sums(int format, const void *block,
                                                   const int32x4_t scales[2],
                                                   const void *activations, size_t stride,
                                                   int64_t b, int n_tokens, int32x4_t sumi[]) {
    /* zeroed only for the compiler's sake: where the loop over c is not unrolled (the plain NEON
       build, neon_sdot_emulated.c) it cannot see that c = 0 and 1 write them first */
    int32x4_t first_chunk[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) first_chunk[t] = sumi[t] = vdupq_n_s32(0);
    for (int c = 0; c < 4; c++) {
        int8x16_t w[4];
        sub32_weights(format, block, c, w);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            int8x16_t a[4];
            load_activations64(q8_K_block(activations, stride, t, b)->qs + 64 * c, 1, a);
            const int32x4_t chunk = vpaddq_s32(dot2(w[0], w[1], a[0], a[1]),
                                               dot2(w[2], w[3], a[2], a[3]));
            if (c % 2 == 0) {
                first_chunk[t] = chunk;
            } else {
                const int32x4_t s = vpaddq_s32(first_chunk[t], chunk);
                sumi[t] = c == 1 ? vmulq_s32(s, scales[0]) : vmlaq_s32(sumi[t], s, scales[1]);
            }
        }
    }
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

/* Lane-wise partial sums of mn[i] * (bsums[2i] + bsums[2i + 1]), exact (mn widened to s16). */
static inline int32x4_t k4_mins(int16x8_t mn16, const int16_t bsums[16]) {
    const int16x8_t pairs = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));
    return vmlal_high_s16(vmull_s16(vget_low_s16(pairs), vget_low_s16(mn16)), pairs, mn16);
}

/* A Q4_K or Q5_K row (format SUB32_Q4_K or SUB32_Q5_K) against n_tokens activation rows: d *
   sumi added to and dmin * mins taken from one accumulator per token (FMLA, FMLS). */
static inline ALWAYS_INLINE void k4_tokens_body(int64_t n, const void *weights, int format,
                                                const void *activations, size_t stride,
                                                int n_tokens, float *out) {
    const int q5 = format == SUB32_Q5_K;
    const size_t block_bytes = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    float32x4_t acc[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const void *block = (const uint8_t *)weights + b * block_bytes;
        const block_q4_K *x4 = block;
        const block_q5_K *x5 = block;
        uint8x8_t sc, mn;
        k4_scales_mins(q5 ? x5->scales : x4->scales, &sc, &mn);
        const uint16x8_t sc16 = vmovl_u8(sc);
        const int32x4_t scales[2] = {vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(sc16))),
                                     vreinterpretq_s32_u32(vmovl_high_u16(sc16))};
        const int16x8_t mn16 = vreinterpretq_s16_u16(vmovl_u8(mn));
        int32x4_t sumi[LB_DOT_TOKENS];
        sub32_scaled_sums(format, block, scales, activations, stride, b, n_tokens, sumi);
        const float32x2_t d_dmin = half_pair(q5 ? &x5->d : &x4->d);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const float32x2_t d = vmul_n_f32(d_dmin, y->d); /* [d, dmin] */
            acc[t] = vfmaq_lane_f32(acc[t], vcvtq_f32_s32(sumi[t]), d, 0);
            acc[t] = vfmsq_lane_f32(acc[t], vcvtq_f32_s32(k4_mins(mn16, y->bsums)), d, 1);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = vaddvq_f32(acc[t]);
}
#define Q4_K_CALL(n, w, a, s, count, out) k4_tokens_body(n, w, SUB32_Q4_K, a, s, count, out)
#define Q5_K_CALL(n, w, a, s, count, out) k4_tokens_body(n, w, SUB32_Q5_K, a, s, count, out)
DEFINE_DOT_ENTRY_POINTS(q4_K, Q4_K_CALL)
DEFINE_DOT_ENTRY_POINTS(q5_K, Q5_K_CALL)

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

static inline ALWAYS_INLINE void iq4_xs_tokens_body(int64_t n, const void *weights,
                                                    const void *activations, size_t stride,
                                                    int n_tokens, float *out) {
    const block_iq4_xs *x = weights;
    float32x4_t acc[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32x4_t scales[2];
        iq4_xs_scales(x + b, scales);
        int32x4_t sumi[LB_DOT_TOKENS];
        sub32_scaled_sums(SUB32_IQ4_XS, x + b, scales, activations, stride, b, n_tokens, sumi);
        const float x_d = half_to_float(x[b].d);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            const float y_d = q8_K_block(activations, stride, t, b)->d;
            acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(sumi[t]), x_d * y_d);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = vaddvq_f32(acc[t]);
}
DEFINE_DOT_ENTRY_POINTS(iq4_xs, iq4_xs_tokens_body)

/* ------------------------------------------------------------------------------------------ */
/* TQ1_0 and TQ2_0: ternary levels t = u - 1, one fp16 scale per 256 elements                  */
/* ------------------------------------------------------------------------------------------ */

/* The trits t of bytes s that carry a TQ1_0 digit at their top (ternary.c: the byte times 3^n
   modulo 256 brings digit n there): the digit is floor(3 s / 256), 1 from s = 86 on and 2
   from s = 171, so t = [s >= 171] - [s < 86]: as all-ones masks (-1), the mask of s < 171
   less that of s >= 86. */
static inline int8x16_t tq1_trits(uint8x16_t s) {
    return vsubq_s8(vreinterpretq_s8_u8(vcltq_u8(s, vdupq_n_u8(171))),
                    vreinterpretq_s8_u8(vcgeq_u8(s, vdupq_n_u8(86))));
}

/* The multipliers 3^n that bring the digits n = 0..3 of the four qh bytes (repeated) to the
   top: lanes 4n + m hold element 240 + 4n + m. */
static const uint8_t kQhPowers3[16] = {1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27};

/* SDOT of 16 trits with 16 activations into accumulator c of token t (two per token, for two
   chains of dependent SDOTs instead of one). */
#define TQ_DOT(t, c, w, a) (sums[t][c] = sdot(sums[t][c], (w), load_i8(a)))

static inline ALWAYS_INLINE void tq1_0_tokens_body(int64_t n, const void *weights,
                                                   const void *activations, size_t stride,
                                                   int n_tokens, float *out) {
    const block_tq1_0 *x = weights;
    static const uint8_t kPowers3[5] = {1, 3, 9, 27, 81};
    float32x4_t acc[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const int8_t *a[LB_DOT_TOKENS];
        int32x4_t sums[LB_DOT_TOKENS][2];
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            a[t] = q8_K_block(activations, stride, t, b)->qs;
            sums[t][0] = sums[t][1] = vdupq_n_s32(0);
        }
        /* qs[0..31]: digit n of byte m is element 32 n + m; qs[32..47]: element 160 + 16 n + m */
        const uint8x16_t wide0 = load_u8(x[b].qs), wide1 = load_u8(x[b].qs + 16);
        const uint8x16_t narrow = load_u8(x[b].qs + 32);
        _Pragma("GCC unroll 5") for (int d = 0; d < 5; d++) {
            /* each from the stored bytes, not a chain of products by 3 */
            const uint8x16_t power = vdupq_n_u8(kPowers3[d]);
            const int8x16_t w0 = tq1_trits(vmulq_u8(wide0, power));
            const int8x16_t w1 = tq1_trits(vmulq_u8(wide1, power));
            const int8x16_t w2 = tq1_trits(vmulq_u8(narrow, power));
            UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
                TQ_DOT(t, 0, w0, a[t] + 32 * d);
                TQ_DOT(t, 1, w1, a[t] + 32 * d + 16);
                TQ_DOT(t, d % 2, w2, a[t] + 160 + 16 * d);
            }
        }
        /* qh: digit n of byte m is element 240 + 4 n + m */
        const uint8x16_t qh = vreinterpretq_u8_u32(vdupq_n_u32(load_u32(x[b].qh)));
        const int8x16_t w3 = tq1_trits(vmulq_u8(qh, vld1q_u8(kQhPowers3)));
        const float x_d = half_to_float(x[b].d);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            TQ_DOT(t, 1, w3, a[t] + 240);
            const int32x4_t sumi = vaddq_s32(sums[t][0], sums[t][1]);
            const float y_d = q8_K_block(activations, stride, t, b)->d;
            acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(sumi), x_d * y_d);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = vaddvq_f32(acc[t]);
}
#undef TQ_DOT
DEFINE_DOT_ENTRY_POINTS(tq1_0, tq1_0_tokens_body)

/* TQ2_0: byte j of half h (32 bytes) holds elements 128 h + 32 l + j in bit pairs l, levels
   u = t + 1. As in Q2_K, pairs 0..2 are masked in place (u times 1, 4, 16: still s8) and pair 3
   shifted down, one instruction per 16 weights; their sums, kept apart, come together exactly
   by arithmetic shifts (every lane of the x4 sums is a multiple of 4, of the x16 ones of 16),
   and the offset 1 comes off through the Q8_K bsums. */
static inline ALWAYS_INLINE void tq2_0_tokens_body(int64_t n, const void *weights,
                                                   const void *activations, size_t stride,
                                                   int n_tokens, float *out) {
    const block_tq2_0 *x = weights;
    float32x4_t acc[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        /* per token the sums of the pairs taken times 1 (pairs 0 and 3), 4 and 16 */
        int32x4_t sums[LB_DOT_TOKENS][3];
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            sums[t][0] = sums[t][1] = sums[t][2] = vdupq_n_s32(0);
        }
        for (int h = 0; h < 2; h++) {
            for (int p = 0; p < 2; p++) {
                const uint8x16_t q = load_u8(x[b].qs + 32 * h + 16 * p);
                const int8x16_t w[4] = {as_i8(vandq_u8(q, vdupq_n_u8(0x03))),
                                        as_i8(vandq_u8(q, vdupq_n_u8(0x0C))),
                                        as_i8(vandq_u8(q, vdupq_n_u8(0x30))),
                                        as_i8(vshrq_n_u8(q, 6))};
                UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
                    const int8_t *a = q8_K_block(activations, stride, t, b)->qs + 128 * h + 16 * p;
                    for (int l = 0; l < 4; l++) {
                        int32x4_t *s = &sums[t][l == 3 ? 0 : l];
                        *s = sdot(*s, w[l], load_i8(a + 32 * l));
                    }
                }
            }
        }
        const float x_d = half_to_float(x[b].d);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            int32x4_t sumi = vsraq_n_s32(vsraq_n_s32(sums[t][0], sums[t][1], 2), sums[t][2], 4);
            const int32x4_t bsums = vpadalq_s16(vpaddlq_s16(vld1q_s16(y->bsums)),
                                                vld1q_s16(y->bsums + 8));
            sumi = vsubq_s32(sumi, bsums);
            acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(sumi), x_d * y->d);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = vaddvq_f32(acc[t]);
}
DEFINE_DOT_ENTRY_POINTS(tq2_0, tq2_0_tokens_body)

void lb_register_neon_dotprod(lb_kernel_set *set) {
    register_dot(set, LOWBIT_TYPE_Q4_0, dot_q4_0, dot_q4_0_tokens);
    register_dot(set, LOWBIT_TYPE_Q4_1, dot_q4_1, dot_q4_1_tokens);
    register_dot(set, LOWBIT_TYPE_Q5_0, dot_q5_0, dot_q5_0_tokens);
    register_dot(set, LOWBIT_TYPE_Q5_1, dot_q5_1, dot_q5_1_tokens);
    register_dot(set, LOWBIT_TYPE_Q8_0, dot_q8_0, dot_q8_0_tokens);
    register_dot(set, LOWBIT_TYPE_IQ4_NL, dot_iq4_nl, dot_iq4_nl_tokens);
    register_dot(set, LOWBIT_TYPE_MXFP4, dot_mxfp4, dot_mxfp4_tokens);
    register_dot(set, LOWBIT_TYPE_NVFP4, dot_nvfp4, dot_nvfp4_tokens);
    register_dot(set, LOWBIT_TYPE_Q2_K, dot_q2_K, dot_q2_K_tokens);
    register_dot(set, LOWBIT_TYPE_Q3_K, dot_q3_K, dot_q3_K_tokens);
    register_dot(set, LOWBIT_TYPE_Q4_K, dot_q4_K, dot_q4_K_tokens);
    register_dot(set, LOWBIT_TYPE_Q5_K, dot_q5_K, dot_q5_K_tokens);
    register_dot(set, LOWBIT_TYPE_Q6_K, dot_q6_K, dot_q6_K_tokens);
    register_dot(set, LOWBIT_TYPE_IQ4_XS, dot_iq4_xs, dot_iq4_xs_tokens);
    register_dot(set, LOWBIT_TYPE_TQ1_0, dot_tq1_0, dot_tq1_0_tokens);
    register_dot(set, LOWBIT_TYPE_TQ2_0, dot_tq2_0, dot_tq2_0_tokens);
}
