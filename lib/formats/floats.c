/* The float formats F32, F16 and BF16: one element per "block", no scale. Also the integer
   storage types I8, I16, I32 (plain little-endian integers, e.g. the weights and biases of an
   integer-only model): they are only ever decoded, to show or check a tensor as floats. */
#include "blocks.h"

lowbit_status lb_quantize_ref_f32(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    memcpy(dst, src, (size_t)n * sizeof(float));
    return LOWBIT_OK;
}

lowbit_status lb_quantize_f32(const float *src, void *dst, int64_t n, const float *importance) {
    return lb_quantize_ref_f32(src, dst, n, importance);
}

void lb_dequantize_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

float lb_vec_dot_f32(int64_t n, const void *weights, const void *activations) {
    const float *w = weights, *a = activations;
    double sum = 0.0; /* double, as the reference's float dot product accumulates */
    for (int64_t i = 0; i < n; i++) sum += (double)w[i] * a[i];
    return (float)sum;
}

/* F16 cannot hold magnitudes above 65504: such a value is an overflow, not a silent Inf. */
lowbit_status lb_quantize_ref_f16(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    uint16_t *out = dst;
    for (int64_t i = 0; i < n; i++) {
        out[i] = lb_fp32_to_fp16(src[i]);
        if ((out[i] & 0x7fffu) == 0x7c00u) return LOWBIT_ERR_SCALE_OVERFLOW; /* finite -> Inf */
    }
    return LOWBIT_OK;
}

lowbit_status lb_quantize_f16(const float *src, void *dst, int64_t n, const float *importance) {
    return lb_quantize_ref_f16(src, dst, n, importance);
}

void lb_dequantize_f16(const void *src, float *dst, int64_t n) {
    const uint16_t *in = src;
    for (int64_t i = 0; i < n; i++) dst[i] = lb_fp16_to_fp32(in[i]);
}

float lb_vec_dot_f16(int64_t n, const void *weights, const void *activations) {
    const uint16_t *w = weights, *a = activations;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)lb_fp16_to_fp32(w[i]) * lb_fp16_to_fp32(a[i]);
    return (float)sum;
}

lowbit_status lb_quantize_ref_bf16(const float *src, void *dst, int64_t n, const float *importance) {
    (void)importance;
    uint16_t *out = dst;
    for (int64_t i = 0; i < n; i++) out[i] = lb_fp32_to_bf16(src[i]);
    return LOWBIT_OK;
}

lowbit_status lb_quantize_bf16(const float *src, void *dst, int64_t n, const float *importance) {
    return lb_quantize_ref_bf16(src, dst, n, importance);
}

void lb_dequantize_bf16(const void *src, float *dst, int64_t n) {
    const uint16_t *in = src;
    for (int64_t i = 0; i < n; i++) dst[i] = lb_bf16_to_fp32(in[i]);
}

float lb_vec_dot_bf16(int64_t n, const void *weights, const void *activations) {
    const uint16_t *w = weights, *a = activations;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)lb_bf16_to_fp32(w[i]) * lb_bf16_to_fp32(a[i]);
    return (float)sum;
}

/* Integer tensors decoded to floats: exact for I8/I16, and for I32 up to 2^24 in magnitude. */
void lb_dequantize_i8(const void *src, float *dst, int64_t n) {
    const int8_t *q = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)q[i];
}

void lb_dequantize_i16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)(int16_t)lb_load_le(p + 2 * i, 2);
}

void lb_dequantize_i32(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)(int32_t)lb_load_le(p + 4 * i, 4);
}
