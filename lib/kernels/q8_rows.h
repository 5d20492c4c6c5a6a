/*
 * The row loops of the Q8_0 and Q8_1 activation quantizers, shared by every instruction set:
 * each kernel file supplies only its vectorized block function
 *     int BLOCK_LEVELS(const float *x, float *d_out, int8_t qs[32])
 * (the block's levels, its unrounded scale, and the sum of the levels) and expands
 * LB_Q8_ROW_QUANTIZERS(BLOCK_LEVELS) to get static quantize_q8_0 and quantize_q8_1, whose bytes
 * and statuses match the type table's reference encoders.
 */
#ifndef LOWBIT_Q8_ROWS_H
#define LOWBIT_Q8_ROWS_H

#include "../formats/blocks.h"

#define LB_Q8_ROW_QUANTIZERS(BLOCK_LEVELS)                                                       \
    static lowbit_status quantize_q8_0(const float *src, void *dst, int64_t n,                    \
                                       const float *importance) {                                 \
        (void)importance;                                                                        \
        block_q8_0 *y = dst;                                                                     \
        for (int64_t b = 0; b < n / QK8_0; b++, src += QK8_0) {                                  \
            float d;                                                                             \
            (void)BLOCK_LEVELS(src, &d, y[b].qs);                                                \
            if (lb_store_fp16_scale(d, &y[b].d) != LOWBIT_OK) return LOWBIT_ERR_SCALE_OVERFLOW;  \
        }                                                                                        \
        return LOWBIT_OK;                                                                        \
    }                                                                                            \
    /* s = d * sum(q), with the unrounded d, as the reference stores it */                       \
    static lowbit_status quantize_q8_1(const float *src, void *dst, int64_t n,                    \
                                       const float *importance) {                                 \
        (void)importance;                                                                        \
        block_q8_1 *y = dst;                                                                     \
        for (int64_t b = 0; b < n / QK8_1; b++, src += QK8_1) {                                  \
            float d;                                                                             \
            const int sum = BLOCK_LEVELS(src, &d, y[b].qs);                                      \
            if (lb_store_fp16_scale(d, &y[b].d) != LOWBIT_OK ||                                  \
                lb_store_fp16_scale((float)sum * d, &y[b].s) != LOWBIT_OK) {                     \
                return LOWBIT_ERR_SCALE_OVERFLOW;                                                \
            }                                                                                    \
        }                                                                                        \
        return LOWBIT_OK;                                                                        \
    }

#endif
