/*
 * The small helpers both AArch64 kernel files need (plain NEON only, so the file built without
 * the dot-product extension can include it): fp16 scales, byte loads, the sums of sub-block
 * scales times Q8_K's bsums (the multi-token plumbing is multi_token.h's).
 */
#ifndef LOWBIT_NEON_COMMON_H
#define LOWBIT_NEON_COMMON_H

#include "../../formats/blocks.h"
#include "../kernels.h"
#include "../multi_token.h"

#include <arm_neon.h>
#include <assert.h>
#include <string.h>

/* fp16 -> fp32 is exact, so one FCVT gives the scalar converter's value. */
static inline float half_to_float(lb_half h) {
    __fp16 f;
    memcpy(&f, &h, sizeof f);
    return (float)f;
}

static inline int8x16_t load_i8(const void *p) { return vld1q_s8((const int8_t *)p); }
static inline uint8x16_t load_u8(const void *p) { return vld1q_u8((const uint8_t *)p); }

/* Lane-wise partial sums of scales[j] * bsums[j] over the 16 sub-blocks of a Q8_K block (s16 x
   s16, exact); their total is the offset or min term of Q3_K, Q6_K and the K-quants with mins. */
static inline int32x4_t scaled_bsums16(int16x8_t scales_lo, int16x8_t scales_hi,
                                       const int16_t bsums[16]) {
    const int16x8_t b0 = vld1q_s16(bsums), b1 = vld1q_s16(bsums + 8);
    int32x4_t acc = vmull_s16(vget_low_s16(scales_lo), vget_low_s16(b0));
    acc = vmlal_high_s16(acc, scales_lo, b0);
    acc = vmlal_s16(acc, vget_low_s16(scales_hi), vget_low_s16(b1));
    return vmlal_high_s16(acc, scales_hi, b1);
}

/* The loops over tokens of the multi-token bodies (multi_token.h) are unrolled by request: left
   to GCC's heuristics the larger ones unroll only after its scalar replacement of arrays has
   run, and the per-token accumulators (arrays indexed by the token) then live on the stack. */
#define UNROLL_TOKENS _Pragma("GCC unroll 4")

#endif
