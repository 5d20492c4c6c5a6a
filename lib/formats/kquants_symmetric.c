/* PLACEHOLDER: replaced by the real implementation of this family. */
#include "blocks.h"

lowbit_status lb_quantize_ref_q3_K(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
lowbit_status lb_quantize_q3_K(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
void lb_dequantize_q3_K(const void *src, float *dst, int64_t n) { (void)src; (void)dst; (void)n; }
float lb_vec_dot_q3_K(int64_t n, const void *w, const void *a) { (void)n; (void)w; (void)a; return 0.0f; }
lowbit_status lb_quantize_ref_q6_K(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
lowbit_status lb_quantize_q6_K(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
void lb_dequantize_q6_K(const void *src, float *dst, int64_t n) { (void)src; (void)dst; (void)n; }
float lb_vec_dot_q6_K(int64_t n, const void *w, const void *a) { (void)n; (void)w; (void)a; return 0.0f; }
/* ---- Q8_K: the activation format of every 256-block weight format ---- */

/* The reference encoder, byte for byte: the scale comes from the element of largest magnitude,
   signed, so that element maps to -127 exactly; bsums keep the sum of every 16 quants for the
   min terms of the formats with mins. */
lowbit_status lb_quantize_ref_q8_K(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    block_q8_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            const float ax = fabsf(src[j]);
            if (ax > amax) {
                amax = ax;
                max = src[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            const int v = lb_nearest_int(iscale * src[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[b].qs[16 * g + j];
            y[b].bsums[g] = (int16_t)sum;
        }
        y[b].d = 1.0f / iscale;
    }
    return LOWBIT_OK;
}

lowbit_status lb_quantize_q8_K(const float *src, void *dst, int64_t n, const float *importance) {
    return lb_quantize_ref_q8_K(src, dst, n, importance);
}

void lb_dequantize_q8_K(const void *src, float *dst, int64_t n) {
    const block_q8_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        for (int j = 0; j < QK_K; j++) *dst++ = x[b].d * x[b].qs[j];
    }
}

float lb_vec_dot_q8_K(int64_t n, const void *weights, const void *activations) {
    const block_q8_K *x = weights, *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t sumi = 0;
        for (int j = 0; j < QK_K; j++) sumi += x[b].qs[j] * y[b].qs[j];
        sum += x[b].d * y[b].d * (float)sumi;
    }
    return sum;
}
