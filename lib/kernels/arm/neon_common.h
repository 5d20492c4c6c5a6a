/*
 * The small helpers both AArch64 kernel files need (plain NEON only, so the file built without
 * the dot-product extension can include it): fp16 scales, byte loads, the sums of sub-block
 * scales times Q8_K's bsums, and the plumbing of the multi-token kernels (entry points,
 * registration).
 */
#ifndef LOWBIT_NEON_COMMON_H
#define LOWBIT_NEON_COMMON_H

#include "../../formats/blocks.h"
#include "../kernels.h"

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

/* The multi-token bodies are inlined into each entry point with a constant token count, and
   their loops over tokens unrolled by request: left to GCC's heuristics the larger ones unroll
   only after its scalar replacement of arrays has run, and the per-token accumulators (arrays
   indexed by the token) then live on the stack. */
#define ALWAYS_INLINE __attribute__((always_inline))
#define UNROLL_TOKENS _Pragma("GCC unroll 4")

/* Activation row t of those lying `stride` bytes apart from `activations`. */
static inline const void *token_row(const void *activations, size_t stride, int t) {
    return (const uint8_t *)activations + (size_t)t * stride;
}

/* Block b of activation row t. */
static inline const block_q8_K *q8_K_block(const void *activations, size_t stride, int t,
                                           int64_t b) {
    return (const block_q8_K *)token_row(activations, stride, t) + b;
}

/* The entry points of a multi-token body CALL(n, weights, activations, stride, n_tokens, out):
   the one-token kernel dot_NAME, and dot_NAME_tokens with a constant count for each case. */
#define DEFINE_DOT_ENTRY_POINTS(NAME, CALL)                                                      \
    static float dot_##NAME(int64_t n, const void *weights, const void *activations) {           \
        float out;                                                                               \
        CALL(n, weights, activations, 0, 1, &out);                                               \
        return out;                                                                              \
    }                                                                                            \
    static void dot_##NAME##_tokens(int64_t n, const void *weights, const void *activations,     \
                                    size_t stride, int n_tokens, float *out) {                   \
        switch (n_tokens) {                                                                      \
        case 4: CALL(n, weights, activations, stride, 4, out); break;                            \
        case 3: CALL(n, weights, activations, stride, 3, out); break;                            \
        case 2: CALL(n, weights, activations, stride, 2, out); break;                            \
        default: CALL(n, weights, activations, stride, 1, out); break;                           \
        }                                                                                        \
    }
static_assert(LB_DOT_TOKENS == 4, "the entry points cover 1..LB_DOT_TOKENS tokens");

/* Installs a type's one-token kernel and the multi-token kernel that reproduces it. */
static inline void set_dot(lb_kernel_set *set, lowbit_type type, lowbit_vec_dot_fn dot,
                           lb_vec_dot_tokens_fn dot_tokens) {
    set->vec_dot[type] = set->tokens_pair[type] = dot;
    set->vec_dot_tokens[type] = dot_tokens;
}

#endif
