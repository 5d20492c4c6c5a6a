/*
 * Integer-only inference kernels (see integer.h). This file is compiled with
 * -mgeneral-regs-only on x86-64: it must not use float or double anywhere.
 *
 * Signed right shifts of negative values are implementation-defined in C, so shifts of signed
 * values go through floor_shift_right, which is defined for every input.
 */
#include "integer.h"
#include "../common/common.h"

#include <limits.h>
#include <stddef.h>

/* floor(v / 2^e) for 0 <= e <= 62 without shifting a negative value. */
static inline int64_t floor_shift_right(int64_t v, int e) {
    if (v >= 0) return v >> e;
    return -(((-(v + 1)) >> e)) - 1; /* -(v+1) >= 0 never overflows */
}

static inline int32_t saturate_to_int32(int64_t v) {
    if (v > INT32_MAX) return INT32_MAX;
    if (v < INT32_MIN) return INT32_MIN;
    return (int32_t)v;
}

int32_t lb_saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
    /* 2^31 * 2^31 = 2^62 is the only product whose doubled high half exceeds int32. */
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    int64_t product = (int64_t)a * (int64_t)b;
    return (int32_t)floor_shift_right(product + ((int64_t)1 << 30), 31);
}

int32_t lb_rounding_divide_by_pot(int32_t x, int exponent) {
    if (exponent <= 0) return x;
    int64_t wide = x;
    int64_t quotient = floor_shift_right(wide, exponent);
    int64_t remainder = wide - quotient * ((int64_t)1 << exponent); /* in [0, 2^exponent) */
    int64_t mask = ((int64_t)1 << exponent) - 1;
    /* Half of the divisor, plus one for negative x: ties then go away from zero. */
    int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (int32_t)(quotient + (remainder > threshold ? 1 : 0));
}

int32_t lb_multiply_by_quantized_multiplier(int32_t x, int32_t m0, int shift) {
    int left = shift < 0 ? -shift : 0;
    int right = shift > 0 ? shift : 0;
    int32_t scaled = left ? saturate_to_int32((int64_t)x * ((int64_t)1 << left)) : x;
    return lb_rounding_divide_by_pot(lb_saturating_rounding_doubling_high_mul(scaled, m0), right);
}

void lb_int8_weight_sums(const int8_t *weights, int64_t out_features, int64_t in_features,
                         int32_t *sums) {
    for (int64_t c = 0; c < out_features; c++) {
        const int8_t *w = weights + c * in_features;
        int32_t sum = 0;
        for (int64_t k = 0; k < in_features; k++) sum += w[k];
        sums[c] = sum;
    }
}

static void qtype_range(lb_qtype type, int32_t *lo, int32_t *hi) {
    *lo = type == LB_QTYPE_U8 ? 0 : -128;
    *hi = type == LB_QTYPE_U8 ? 255 : 127;
}

static int in_qtype_range(lb_qtype type, int32_t v) {
    int32_t lo, hi;
    qtype_range(type, &lo, &hi);
    return v >= lo && v <= hi;
}

lowbit_status lb_int8_linear_check(const lb_int8_linear_layer *layer, lowbit_diag *diag) {
    const lowbit_status bad = LOWBIT_ERR_INVALID_ARGUMENT;
    if (!layer || !layer->weights || !layer->weight_sums || !layer->multiplier || !layer->shift)
        return lb_diag_set(diag, bad, -1, UINT64_MAX, "int8 linear: missing layer array");
    if (layer->in_features < 1 || layer->in_features > LB_INT8_LINEAR_MAX_K ||
        layer->out_features < 1)
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "int8 linear: %lld x %lld weights (K must be in 1..%d)",
                           (long long)layer->out_features, (long long)layer->in_features,
                           LB_INT8_LINEAR_MAX_K);
    if ((layer->input_type != LB_QTYPE_U8 && layer->input_type != LB_QTYPE_I8) ||
        (layer->output_type != LB_QTYPE_U8 && layer->output_type != LB_QTYPE_I8))
        return lb_diag_set(diag, bad, -1, UINT64_MAX, "int8 linear: unknown element type");
    if (!in_qtype_range(layer->input_type, layer->input_zero_point) ||
        !in_qtype_range(layer->output_type, layer->output_zero_point))
        return lb_diag_set(diag, bad, -1, UINT64_MAX,
                           "int8 linear: zero point %d/%d outside its type's range",
                           (int)layer->input_zero_point, (int)layer->output_zero_point);
    if (!in_qtype_range(layer->output_type, layer->output_min) ||
        !in_qtype_range(layer->output_type, layer->output_max) ||
        layer->output_min > layer->output_max)
        return lb_diag_set(diag, bad, -1, UINT64_MAX, "int8 linear: clamp [%d, %d] invalid",
                           (int)layer->output_min, (int)layer->output_max);
    for (int64_t c = 0; c < layer->out_features; c++) {
        int32_t m0 = layer->multiplier[c], shift = layer->shift[c];
        if (m0 < ((int32_t)1 << 30) || shift < LB_MULTIPLIER_SHIFT_MIN ||
            shift > LB_MULTIPLIER_SHIFT_MAX)
            return lb_diag_set(diag, bad, c, UINT64_MAX,
                               "int8 linear: channel %lld multiplier %d shift %d not normalized",
                               (long long)c, (int)m0, (int)shift);
    }
    return LOWBIT_OK;
}

/* sum_k a[k] * w[k], exact in int32 for K within LB_INT8_LINEAR_MAX_K. Plain loops over one
   element type each, so the compiler can vectorize them. */
static int32_t dot_u8_i8(const uint8_t *a, const int8_t *w, int64_t k_count) {
    int32_t sum = 0;
    for (int64_t k = 0; k < k_count; k++) sum += (int32_t)a[k] * (int32_t)w[k];
    return sum;
}

static int32_t dot_i8_i8(const int8_t *a, const int8_t *w, int64_t k_count) {
    int32_t sum = 0;
    for (int64_t k = 0; k < k_count; k++) sum += (int32_t)a[k] * (int32_t)w[k];
    return sum;
}

/* One output value from the raw dot product sum a*w of channel c. */
static int32_t requantize_channel(const lb_int8_linear_layer *layer, int64_t c, int32_t dot) {
    /* sum (a - za) w = sum a w - za * sum w: both terms and the result are within the K bound. */
    int32_t acc = dot - layer->input_zero_point * layer->weight_sums[c];
    int32_t biased = layer->bias ? saturate_to_int32((int64_t)acc + layer->bias[c]) : acc;
    int32_t scaled =
        lb_multiply_by_quantized_multiplier(biased, layer->multiplier[c], (int)layer->shift[c]);
    int64_t y = (int64_t)scaled + layer->output_zero_point;
    if (y < layer->output_min) y = layer->output_min;
    if (y > layer->output_max) y = layer->output_max;
    return (int32_t)y;
}

lowbit_status lb_int8_linear(const lb_int8_linear_layer *layer, const void *input, int64_t rows,
                             void *output, lowbit_diag *diag) {
    lowbit_status status = lb_int8_linear_check(layer, diag);
    if (status != LOWBIT_OK) return status;
    if (rows < 0 || (rows > 0 && (!input || !output)))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "int8 linear: %lld rows with a missing buffer", (long long)rows);
    const int64_t k_count = layer->in_features, n_count = layer->out_features;
    for (int64_t r = 0; r < rows; r++) {
        const void *x_row = layer->input_type == LB_QTYPE_U8
                                ? (const void *)((const uint8_t *)input + r * k_count)
                                : (const void *)((const int8_t *)input + r * k_count);
        for (int64_t c = 0; c < n_count; c++) {
            const int8_t *w = layer->weights + c * k_count;
            int32_t dot = layer->input_type == LB_QTYPE_U8 ? dot_u8_i8(x_row, w, k_count)
                                                            : dot_i8_i8(x_row, w, k_count);
            int32_t y = requantize_channel(layer, c, dot);
            if (layer->output_type == LB_QTYPE_U8)
                ((uint8_t *)output)[r * n_count + c] = (uint8_t)y;
            else
                ((int8_t *)output)[r * n_count + c] = (int8_t)y;
        }
    }
    return LOWBIT_OK;
}

/* Four weight rows against one activation row at a time: the activation row is read once for
   four channels, and the four sums are independent, so the compiler can keep them in vector
   registers. */
void lb_u8_i8_dots(const uint8_t *a, int64_t a_stride, int64_t rows, const int8_t *w,
                   int64_t k_count, int64_t channels, int32_t *dots) {
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *x = a + r * a_stride;
        int32_t *out = dots + r * channels;
        int64_t c = 0;
        for (; c + 4 <= channels; c += 4) {
            const int8_t *w0 = w + c * k_count, *w1 = w0 + k_count, *w2 = w1 + k_count,
                         *w3 = w2 + k_count;
            int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (int64_t k = 0; k < k_count; k++) {
                int32_t v = x[k];
                s0 += v * w0[k];
                s1 += v * w1[k];
                s2 += v * w2[k];
                s3 += v * w3[k];
            }
            out[c] = s0;
            out[c + 1] = s1;
            out[c + 2] = s2;
            out[c + 3] = s3;
        }
        for (; c < channels; c++) out[c] = dot_u8_i8(x, w + c * k_count, k_count);
    }
}
