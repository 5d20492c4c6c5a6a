/*
 * What fp4.c's MXFP4 and NVFP4 codecs and every kernel of those formats share: the E2M1 values
 * doubled, so that they are integers (0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives, code bit 3
 * the sign; the kernels multiply these and take the half back in the block scale), and the E8M0
 * scale decoded halved to match.
 */
#ifndef LOWBIT_FP4_H
#define LOWBIT_FP4_H

#include "../common/common.h"

#include <stdint.h>

extern const int8_t lb_fp4_doubled[16];

/* 2^(e - 128), the E8M0 scale halved; e = 0 and 1 are float subnormals (2^21 << e as bits),
   from e = 2 up the exponent field is e - 1. */
static inline float lb_e8m0_half(uint8_t e) {
    return lb_bits_to_float(e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23);
}

#endif
