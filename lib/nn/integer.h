/*
 * Integer-arithmetic-only inference (Jacob et al., "Quantization and Training of Neural Networks
 * for Efficient Integer-Arithmetic-Only Inference", CVPR 2018).
 *
 * A real value r is represented by a quantized integer q as r = S * (q - Z). A layer y = x W^T + b
 * then only needs integer arithmetic once its real rescale M = S_x * S_w / S_y is itself written
 * as a fixed-point number: M = M0 * 2^-31 * 2^-n with M0 a normalized int32 in [2^30, 2^31).
 *
 * Two files share this header:
 *   integer_kernels.c  integer only (compiled with -mgeneral-regs-only on x86-64, where any
 *                      float use is a compile error): requantization and the linear layer.
 *   quant_params.c     the float side run once at model load: multipliers from float scales.
 */
#ifndef LOWBIT_NN_INTEGER_H
#define LOWBIT_NN_INTEGER_H

#include "lowbit.h"

#include <stdint.h>

/* Shift range of a quantized multiplier: n < 0 is a left shift (M >= 1), up to 31 bits; a right
   shift is done in 64 bits, so any n up to 62 is exact (M down to about 2^-63). */
#define LB_MULTIPLIER_SHIFT_MIN (-31)
#define LB_MULTIPLIER_SHIFT_MAX 62

/* Largest reduction length of lb_int8_linear whose int32 accumulator cannot overflow: each term
   (a - za) * w has |a - za| <= 255 and |w| <= 128, so |acc| <= K * 32640 < 2^31 for
   K <= 65793. (With the paper's symmetric weights |w| <= 127 the bound is K * 255 * 127 < 2^31,
   K < 66,000.) The partial sums sum(a*w) and za*sum(w) obey the same bound. */
#define LB_INT8_LINEAR_MAX_K 65793

/* ---- float side (quant_params.c) ------------------------------------------------------------ */

/* Writes m as m0 * 2^-31 * 2^-shift with m0 in [2^30, 2^31), rounded to nearest (relative error
   at most 2^-31). LOWBIT_ERR_INVALID_ARGUMENT when m <= 0, m is not finite, or the shift falls
   outside [LB_MULTIPLIER_SHIFT_MIN, LB_MULTIPLIER_SHIFT_MAX] (m >= 2^31 or m < ~2^-63). */
lowbit_status lb_quantize_multiplier(double m, int32_t *m0, int *shift);

/* Per-output-channel multipliers of a linear layer: M[c] = input_scale * weight_scales[c] /
   output_scale, each through lb_quantize_multiplier. diag names the first failing channel. */
lowbit_status lb_linear_multipliers(float input_scale, const float *weight_scales,
                                    float output_scale, int64_t channels, int32_t *m0,
                                    int32_t *shift, lowbit_diag *diag);

/* ---- integer side (integer_kernels.c) ------------------------------------------------------- */

/* ARM SQRDMULH: the high 32 bits of 2*a*b, rounded: (a*b + 2^30) >> 31 (floor shift), with the
   one overflow case INT32_MIN * INT32_MIN saturated to INT32_MAX. */
int32_t lb_saturating_rounding_doubling_high_mul(int32_t a, int32_t b);

/* x / 2^exponent rounded to nearest, ties away from zero (gemmlowp's RoundingDivideByPOT), for
   exponent in [0, 62]. */
int32_t lb_rounding_divide_by_pot(int32_t x, int exponent);

/* round(x * m0 * 2^-31 * 2^-shift): for shift < 0 first x * 2^-shift (saturated to int32), then
   the doubling high multiply, then for shift > 0 the rounding right shift. shift must lie in
   [LB_MULTIPLIER_SHIFT_MIN, LB_MULTIPLIER_SHIFT_MAX]; the result is within 1 of round(x * M)
   whenever x * 2^max(-shift,0) fits in int32. */
int32_t lb_multiply_by_quantized_multiplier(int32_t x, int32_t m0, int shift);

/* Element type of quantized activations: both carry any zero point of their range. */
typedef enum lb_qtype { LB_QTYPE_U8 = 0, LB_QTYPE_I8 = 1 } lb_qtype;

/* A quantized linear layer y = x W^T + b with per-output-channel requantization. */
typedef struct lb_int8_linear_layer {
    int64_t in_features;        /* K, at most LB_INT8_LINEAR_MAX_K */
    int64_t out_features;       /* N */
    const int8_t *weights;      /* N x K row-major, symmetric (zero point 0) per channel */
    const int32_t *weight_sums; /* N: sum over k of weights[c][k] (lb_int8_weight_sums) */
    const int32_t *bias;        /* N, in units of S_x * S_w[c] (zero point 0); NULL for none */
    const int32_t *multiplier;  /* N: M0 of S_x * S_w[c] / S_y */
    const int32_t *shift;       /* N: its shift n */
    lb_qtype input_type;
    lb_qtype output_type;
    int32_t input_zero_point;   /* in the input type's range */
    int32_t output_zero_point;  /* in the output type's range */
    int32_t output_min;         /* clamp, in output units: the type's range for none, */
    int32_t output_max;         /* [Z_y, max] for ReLU, [Z_y, Z_y + round(6/S_y)] for ReLU6 */
} lb_int8_linear_layer;

/* sums[c] = sum_k weights[c * in_features + k], for c < out_features. */
void lb_int8_weight_sums(const int8_t *weights, int64_t out_features, int64_t in_features,
                         int32_t *sums);

/* Checks a layer's shape, zero points, clamp and multipliers (every channel). */
lowbit_status lb_int8_linear_check(const lb_int8_linear_layer *layer, lowbit_diag *diag);

/* output[r][c] = clamp(Z_y + M[c] * (sum_k (x[r][k] - Z_x) w[c][k] + bias[c]), min, max) for
   rows rows of input (rows x K elements of input_type) into output (rows x N of output_type).
   The accumulator is exact int32 (K bound above); adding the bias saturates to int32. Checks the
   layer first (lb_int8_linear_check). */
lowbit_status lb_int8_linear(const lb_int8_linear_layer *layer, const void *input, int64_t rows,
                             void *output, lowbit_diag *diag);

/* ---- integer-only classifier runner (integer_net.c) ----------------------------------------- */

/* dots[r * channels + c] = sum_k a[r * a_stride + k] * w[c * k_count + k] for r < rows and
   c < channels: the raw products of uint8 rows with int8 weight rows, exact in int32 for
   k_count <= LB_INT8_LINEAR_MAX_K. The scalar reference (integer_kernels.c) and the AVX2 version
   (lib/kernels/x86/int8_avx2.c, x86-64 only) give identical results. */
typedef void (*lb_u8_i8_dots_fn)(const uint8_t *a, int64_t a_stride, int64_t rows,
                                 const int8_t *w, int64_t k_count, int64_t channels,
                                 int32_t *dots);
void lb_u8_i8_dots(const uint8_t *a, int64_t a_stride, int64_t rows, const int8_t *w,
                   int64_t k_count, int64_t channels, int32_t *dots);
#if defined(__x86_64__)
void lb_u8_i8_dots_avx2(const uint8_t *a, int64_t a_stride, int64_t rows, const int8_t *w,
                        int64_t k_count, int64_t channels, int32_t *dots);
/* out[c] = clamp(zero + rescale(dots[c] + offset[c], m0[c], shift[c]), lo, hi) for the first
   count rounded down to 8 channels (returned), with lb_multiply_by_quantized_multiplier's
   rounding. Valid only when no dots[c] + offset[c] leaves int32 and every shift is in [0, 31]. */
int64_t lb_requantize_avx2(const int32_t *dots, int64_t count, const int32_t *offset,
                           const int32_t *m0, const int32_t *shift, int32_t zero, int32_t lo,
                           int32_t hi, uint8_t *out);
#endif

struct lb_int_net; /* classifier.h */

/* Checks an integer model's ops before it runs: the chain of shapes from the input to `classes`
   outputs, each op's geometry (kernel, stride, padding, output size), reduction lengths within
   LB_INT8_LINEAR_MAX_K, its arrays present, and in static mode the integer parameters (zero
   points and clamps in range, multipliers normalized). Reads no float. */
lowbit_status lb_int_net_check(const struct lb_int_net *net, lowbit_diag *diag);

/* Runs a static-mode model on n images (n x input size bytes) in integer arithmetic only and
   writes the last op's uint8 codes (n x classes; real value out_q.scale * (code - zero point)).
   Threads over samples, or over each op's output rows when there are fewer samples than
   threads; the codes never depend on the pool's size. */
lowbit_status lb_int_net_run_static(const struct lb_int_net *net, const uint8_t *images,
                                    int64_t n, uint8_t *codes, lowbit_pool *pool,
                                    lowbit_diag *diag);

#endif
