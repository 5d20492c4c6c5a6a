/*
 * What the AArch64 files written for the dot-product extension share (neon_dotprod.c,
 * lattice_dotprod.c; built with +dotprod, or with LB_SDOT_EMULATED for plain NEON): SDOT or its
 * exact emulation, small SDOT helpers, and their registration. The multi-token plumbing they
 * share with neon.c is in neon_common.h.
 */
#ifndef LOWBIT_DOTPROD_COMMON_H
#define LOWBIT_DOTPROD_COMMON_H

#include "../kernels.h"
#include "neon_common.h"

#include <arm_neon.h>

static inline int8x16_t as_i8(uint8x16_t v) { return vreinterpretq_s8_u8(v); }

/* SDOT: each s32 lane of acc plus the four products of its bytes. Built for plain NEON
   (LB_SDOT_EMULATED: the *_sdot_emulated.c files) the same lane sums come from widening
   multiplies and pairwise adds (s8 x s8 fits s16, pairs of those s32): exact as well, so both
   builds of a kernel give the same results. */
#if defined(LB_SDOT_EMULATED)
static inline int32x4_t sdot(int32x4_t acc, int8x16_t a, int8x16_t b) {
    const int32x4_t low = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    const int32x4_t high = vpaddlq_s16(vmull_high_s8(a, b));
    return vaddq_s32(acc, vpaddq_s32(low, high));
}

/* At the plain NEON level these kernels only fill in the formats that neon.c has none for. */
static inline void register_dot(lb_kernel_set *set, lowbit_type type, lowbit_vec_dot_fn dot,
                                lb_vec_dot_tokens_fn dot_tokens) {
    if (set->vec_dot[type] == lowbit_type_info(type)->vec_dot) set_dot(set, type, dot, dot_tokens);
}
#else
static inline int32x4_t sdot(int32x4_t acc, int8x16_t a, int8x16_t b) {
    return vdotq_s32(acc, a, b);
}

static inline void register_dot(lb_kernel_set *set, lowbit_type type, lowbit_vec_dot_fn dot,
                                lb_vec_dot_tokens_fn dot_tokens) {
    set_dot(set, type, dot, dot_tokens);
}
#endif

/* SDOT of 32 weight bytes (two vectors) with 32 loaded activation bytes, into a fresh
   accumulator. */
static inline int32x4_t dot2(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
    return sdot(sdot(vdupq_n_s32(0), w0, a0), w1, a1);
}

/* [sum of d[0]'s lanes, ..., sum of d[3]'s]: four blocks' (or sub-blocks') exact sums. */
static inline int32x4_t lane_sums4(const int32x4_t d[4]) {
    return vpaddq_s32(vpaddq_s32(d[0], d[1]), vpaddq_s32(d[2], d[3]));
}

#endif
