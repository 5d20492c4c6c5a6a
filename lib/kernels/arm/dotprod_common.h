/*
 * What the AArch64 files built with the dot-product extension share (neon_dotprod.c,
 * lattice_dotprod.c; only they may include it, since it uses SDOT): the inlining and unrolling
 * requests of the multi-token bodies, small SDOT helpers, and the entry points made from a
 * multi-token body.
 */
#ifndef LOWBIT_DOTPROD_COMMON_H
#define LOWBIT_DOTPROD_COMMON_H

#include "../kernels.h"
#include "neon_common.h"

#include <arm_neon.h>
#include <assert.h>

/* The multi-token bodies are inlined into each entry point with a constant token count, and
   their loops over tokens unrolled by request: left to GCC's heuristics the larger ones unroll
   only after its scalar replacement of arrays has run, and the per-token accumulators (arrays
   indexed by the token) then live on the stack. */
#define ALWAYS_INLINE __attribute__((always_inline))
#define UNROLL_TOKENS _Pragma("GCC unroll 4")

static inline int8x16_t as_i8(uint8x16_t v) { return vreinterpretq_s8_u8(v); }

/* SDOT of 32 weight bytes (two vectors) with 32 loaded activation bytes, into a fresh
   accumulator. */
static inline int32x4_t dot2(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, a0), w1, a1);
}

/* [sum of d[0]'s lanes, ..., sum of d[3]'s]: four blocks' (or sub-blocks') exact sums. */
static inline int32x4_t lane_sums4(const int32x4_t d[4]) {
    return vpaddq_s32(vpaddq_s32(d[0], d[1]), vpaddq_s32(d[2], d[3]));
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

#endif
