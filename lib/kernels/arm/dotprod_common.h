/*
 * What the AArch64 files built with the dot-product extension share (neon_dotprod.c,
 * lattice_dotprod.c; only they may include it, since it uses SDOT): small SDOT helpers. The
 * multi-token plumbing they share with neon.c is in neon_common.h.
 */
#ifndef LOWBIT_DOTPROD_COMMON_H
#define LOWBIT_DOTPROD_COMMON_H

#include "../kernels.h"
#include "neon_common.h"

#include <arm_neon.h>

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

#endif
