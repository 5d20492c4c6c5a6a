/*
 * AArch64 dot-product (SDOT) kernels of the interleaved layouts Q4_0x4, Q8_0x4, IQ4_NLx4 and
 * MXFP4x4 (interleaved.h): one 128-bit register holds 4 bytes of each of the 4 rows of a group,
 * and the by-lane form of SDOT multiplies it with one 4-byte quadruple of the activation block,
 * so the activation is loaded once per block and the 4 row sums come out in the 4 int32 lanes.
 * Tokens go in tiles of up to 4 (each weight chunk decoded once per tile).
 *
 * Exactness (the outputs are the scalar reference's bit for bit): SDOT's s8 x s8 sums are exact;
 * Q4_0's stored nibbles q = w + 8 (0..15, valid s8) meet the activations and 8 times the
 * activation block's level sum comes off; Q8_0 needs no offset, nor IQ4_NL and MXFP4, whose
 * codes become the signed levels through one TBL of their table (MXFP4's: the doubled E2M1
 * values, its E8M0 scales decoded halved as fp4.c does, subnormals included). The float side
 * per lane is sum = sum + (float)sumi * (d_w * d_a), separate multiplies and adds (the build's
 * ISO C mode keeps GCC from fusing them), blocks in order.
 *
 * Not yet measured on AArch64 hardware (only tested under qemu), so the plain layout stays the
 * forward pass's choice here: interleave_rows is left at 0 until a measurement says otherwise.
 */
#include "../../formats/blocks.h"
#include "../../formats/fp4.h"
#include "../kernels.h"

#include <arm_neon.h>

#define ALWAYS_INLINE inline __attribute__((always_inline))

enum {
    Q4_0_X4_BYTES = 4 * 18,
    Q8_0_X4_BYTES = 4 * 34,
    IQ4_NL_X4_BYTES = 4 * 18,
    MXFP4_X4_BYTES = 4 * 17,
    SCALES_BYTES = 8,
    E8M0_SCALES_BYTES = 4
};

/* The 4 rows' fp16 scales times the activation's (exact conversions, one rounding each). */
static ALWAYS_INLINE float32x4_t block_scales(const uint8_t *bg, const block_q8_0 *a) {
    const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)bg)));
    const float da = vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(a->d))), 0);
    return vmulq_f32(dw, vdupq_n_f32(da));
}

static ALWAYS_INLINE float32x4_t add_scaled(float32x4_t acc, int32x4_t sums, float32x4_t scales) {
    return vaddq_f32(acc, vmulq_f32(vcvtq_f32_s32(sums), scales));
}

/* Block column b of each of the nt tokens: its sums zeroed, its activation block's elements
   0..15 (which meet the low nibbles, or the first half of Q8_0's levels) in alo and 16..31 in
   ahi. */
static ALWAYS_INLINE void start_block_column(const block_q8_0 *a, int64_t nb, int64_t b, int nt,
                                             int32x4_t sumi[4], int8x16_t alo[4],
                                             int8x16_t ahi[4]) {
    for (int t = 0; t < nt; t++) {
        sumi[t] = vdupq_n_s32(0);
        alo[t] = vld1q_s8(a[t * nb + b].qs);
        ahi[t] = vld1q_s8(a[t * nb + b].qs + 16);
    }
}

/* Chunk c (a constant) of the 4 rows against quadruple `lane` of activation vector a. */
#define SDOT_LANE(acc, w, a, lane) vdotq_laneq_s32(acc, w, a, lane)

static ALWAYS_INLINE void q4_0_x4_tile(int64_t nb, const uint8_t *group, const block_q8_0 *a,
                                       const int32_t *sums, int nt, float *out,
                                       int64_t out_stride) {
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    float32x4_t acc[4];
    for (int t = 0; t < nt; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *bg = group + (size_t)b * Q4_0_X4_BYTES;
        int32x4_t sumi[4];
        int8x16_t alo[4], ahi[4];
        start_block_column(a, nb, b, nt, sumi, alo, ahi);
#define Q4_CHUNK(c)                                                                               \
    do {                                                                                          \
        const uint8x16_t packed = vld1q_u8(bg + SCALES_BYTES + 16 * (c));                         \
        const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(packed, low4));                         \
        const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(packed, 4));                          \
        for (int t = 0; t < nt; t++) {                                                            \
            sumi[t] = SDOT_LANE(sumi[t], lo, alo[t], c);                                          \
            sumi[t] = SDOT_LANE(sumi[t], hi, ahi[t], c);                                          \
        }                                                                                         \
    } while (0)
        Q4_CHUNK(0);
        Q4_CHUNK(1);
        Q4_CHUNK(2);
        Q4_CHUNK(3);
#undef Q4_CHUNK
        for (int t = 0; t < nt; t++) {
            const int32x4_t exact = vsubq_s32(sumi[t], vdupq_n_s32(8 * sums[t * nb + b]));
            acc[t] = add_scaled(acc[t], exact, block_scales(bg, &a[t * nb + b]));
        }
    }
    for (int t = 0; t < nt; t++) vst1q_f32(out + t * out_stride, acc[t]);
}

static ALWAYS_INLINE void q8_0_x4_tile(int64_t nb, const uint8_t *group, const block_q8_0 *a,
                                       const int32_t *sums, int nt, float *out,
                                       int64_t out_stride) {
    (void)sums;
    float32x4_t acc[4];
    for (int t = 0; t < nt; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *bg = group + (size_t)b * Q8_0_X4_BYTES;
        int32x4_t sumi[4];
        int8x16_t alo[4], ahi[4];
        start_block_column(a, nb, b, nt, sumi, alo, ahi);
#define Q8_CHUNK(c, half, lane)                                                                   \
    do {                                                                                          \
        const int8x16_t w = vld1q_s8((const int8_t *)bg + SCALES_BYTES + 16 * (c));               \
        for (int t = 0; t < nt; t++) sumi[t] = SDOT_LANE(sumi[t], w, half[t], lane);              \
    } while (0)
        Q8_CHUNK(0, alo, 0);
        Q8_CHUNK(1, alo, 1);
        Q8_CHUNK(2, alo, 2);
        Q8_CHUNK(3, alo, 3);
        Q8_CHUNK(4, ahi, 0);
        Q8_CHUNK(5, ahi, 1);
        Q8_CHUNK(6, ahi, 2);
        Q8_CHUNK(7, ahi, 3);
#undef Q8_CHUNK
        for (int t = 0; t < nt; t++) {
            acc[t] = add_scaled(acc[t], sumi[t], block_scales(bg, &a[t * nb + b]));
        }
    }
    for (int t = 0; t < nt; t++) vst1q_f32(out + t * out_stride, acc[t]);
}

/* The 4 rows' E8M0 bytes (the block group's first 4) as fp4.c decodes them, 2^(e - 128): the
   exponent field e - 1 from e = 2 up, the subnormals 2^21 << e below, chosen lane by lane; times
   the activation block's scale (one rounding per product, as the reference's d_a * d_w). */
static ALWAYS_INLINE float32x4_t e8m0_block_scales(const uint8_t *bg, const block_q8_0 *a) {
    uint32_t packed;
    memcpy(&packed, bg, sizeof packed);
    const uint32x4_t e =
        vmovl_u16(vget_low_u16(vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(packed)))));
    const uint32x4_t normal = vshlq_n_u32(vsubq_u32(e, vdupq_n_u32(1)), 23);
    const uint32x4_t subnormal = vshlq_u32(vdupq_n_u32(0x00200000u), vreinterpretq_s32_u32(e));
    const float32x4_t dw =
        vreinterpretq_f32_u32(vbslq_u32(vcltq_u32(e, vdupq_n_u32(2)), subnormal, normal));
    const float da = vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(a->d))), 0);
    return vmulq_f32(dw, vdupq_n_f32(da));
}

/* The tile of the formats whose 4-bit codes go through a 16-entry table of signed levels, like
   Q4_0x4's with no offset to take off: IQ4_NL (fp16 scales) and MXFP4 (the doubled E2M1 values,
   E8M0 scales). Inlined with constant arguments, so each format gets its own loop. */
static ALWAYS_INLINE void table_x4_tile(int64_t nb, const uint8_t *group, const block_q8_0 *a,
                                        int nt, float *out, int64_t out_stride,
                                        const int8_t table[16], size_t group_bytes,
                                        int e8m0_scales) {
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    const int8x16_t levels = vld1q_s8(table);
    const size_t scales_bytes = e8m0_scales ? E8M0_SCALES_BYTES : SCALES_BYTES;
    float32x4_t acc[4];
    for (int t = 0; t < nt; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *bg = group + (size_t)b * group_bytes;
        int32x4_t sumi[4];
        int8x16_t alo[4], ahi[4];
        start_block_column(a, nb, b, nt, sumi, alo, ahi);
#define TABLE_CHUNK(c)                                                                            \
    do {                                                                                          \
        const uint8x16_t packed = vld1q_u8(bg + scales_bytes + 16 * (c));                         \
        const int8x16_t lo = vqtbl1q_s8(levels, vandq_u8(packed, low4));                          \
        const int8x16_t hi = vqtbl1q_s8(levels, vshrq_n_u8(packed, 4));                           \
        for (int t = 0; t < nt; t++) {                                                            \
            sumi[t] = SDOT_LANE(sumi[t], lo, alo[t], c);                                          \
            sumi[t] = SDOT_LANE(sumi[t], hi, ahi[t], c);                                          \
        }                                                                                         \
    } while (0)
        TABLE_CHUNK(0);
        TABLE_CHUNK(1);
        TABLE_CHUNK(2);
        TABLE_CHUNK(3);
#undef TABLE_CHUNK
        for (int t = 0; t < nt; t++) {
            const float32x4_t scales = e8m0_scales ? e8m0_block_scales(bg, &a[t * nb + b])
                                                   : block_scales(bg, &a[t * nb + b]);
            acc[t] = add_scaled(acc[t], sumi[t], scales);
        }
    }
    for (int t = 0; t < nt; t++) vst1q_f32(out + t * out_stride, acc[t]);
}

static ALWAYS_INLINE void iq4_nl_x4_tile(int64_t nb, const uint8_t *group, const block_q8_0 *a,
                                         const int32_t *sums, int nt, float *out,
                                         int64_t out_stride) {
    (void)sums;
    table_x4_tile(nb, group, a, nt, out, out_stride, lb_kvalues_iq4nl, IQ4_NL_X4_BYTES, 0);
}

static ALWAYS_INLINE void mxfp4_x4_tile(int64_t nb, const uint8_t *group, const block_q8_0 *a,
                                        const int32_t *sums, int nt, float *out,
                                        int64_t out_stride) {
    (void)sums;
    table_x4_tile(nb, group, a, nt, out, out_stride, lb_fp4_doubled, MXFP4_X4_BYTES, 1);
}

#define DEFINE_GROUP_KERNEL(NAME, TILE)                                                           \
    static void NAME(int64_t nb, const void *group, const void *activations,                     \
                     const int32_t *sums, int64_t n_tokens, float *out, int64_t out_stride) {    \
        const block_q8_0 *a = activations;                                                       \
        int64_t t = 0;                                                                           \
        for (; t + 4 <= n_tokens; t += 4) {                                                      \
            TILE(nb, group, a + t * nb, sums + t * nb, 4, out + t * out_stride, out_stride);     \
        }                                                                                        \
        switch (n_tokens - t) {                                                                  \
        case 3: TILE(nb, group, a + t * nb, sums + t * nb, 3, out + t * out_stride, out_stride); \
            break;                                                                               \
        case 2: TILE(nb, group, a + t * nb, sums + t * nb, 2, out + t * out_stride, out_stride); \
            break;                                                                               \
        case 1: TILE(nb, group, a + t * nb, sums + t * nb, 1, out + t * out_stride, out_stride); \
            break;                                                                               \
        default: break;                                                                          \
        }                                                                                        \
    }

DEFINE_GROUP_KERNEL(q4_0_x4, q4_0_x4_tile)
DEFINE_GROUP_KERNEL(q8_0_x4, q8_0_x4_tile)
DEFINE_GROUP_KERNEL(iq4_nl_x4, iq4_nl_x4_tile)
DEFINE_GROUP_KERNEL(mxfp4_x4, mxfp4_x4_tile)

void lb_register_interleaved_dotprod(lb_kernel_set *set) {
    set->interleaved[LB_IL_Q4_0_X4] = q4_0_x4;
    set->interleaved[LB_IL_Q8_0_X4] = q8_0_x4;
    set->interleaved[LB_IL_IQ4_NL_X4] = iq4_nl_x4;
    set->interleaved[LB_IL_MXFP4_X4] = mxfp4_x4;
}
