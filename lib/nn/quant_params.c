/*
 * The float side of integer-only inference (see integer.h): run once when a model is loaded,
 * it turns real rescale factors into the fixed-point multipliers the integer kernels use.
 */
#include "integer.h"
#include "../common/common.h"

#include <math.h>

lowbit_status lb_quantize_multiplier(double m, int32_t *m0, int *shift) {
    if (!m0 || !shift || !isfinite(m) || !(m > 0)) return LOWBIT_ERR_INVALID_ARGUMENT;
    int exponent;
    double fraction = frexp(m, &exponent); /* m = fraction * 2^exponent, fraction in [0.5, 1) */
    /* fraction * 2^31 is exact (a power-of-two scaling); llround rounds it to nearest. */
    long long q = llround(ldexp(fraction, 31));
    if (q == (1LL << 31)) { /* rounded up to 1.0: renormalize to 0.5 * 2^(exponent+1) */
        q = 1LL << 30;
        exponent++;
    }
    int n = -exponent;
    if (n < LB_MULTIPLIER_SHIFT_MIN || n > LB_MULTIPLIER_SHIFT_MAX)
        return LOWBIT_ERR_INVALID_ARGUMENT;
    *m0 = (int32_t)q;
    *shift = n;
    return LOWBIT_OK;
}

lowbit_status lb_linear_multipliers(float input_scale, const float *weight_scales,
                                    float output_scale, int64_t channels, int32_t *m0,
                                    int32_t *shift, lowbit_diag *diag) {
    if (!weight_scales || !m0 || !shift || channels < 0)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "linear multipliers: missing array");
    for (int64_t c = 0; c < channels; c++) {
        /* In double: the product of two floats and the division keep M to 2^-52 or better. */
        double m = (double)input_scale * (double)weight_scales[c] / (double)output_scale;
        int n = 0;
        if (lb_quantize_multiplier(m, &m0[c], &n) != LOWBIT_OK)
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, c, UINT64_MAX,
                               "linear multipliers: channel %lld has rescale %g (scales %g, %g, "
                               "%g), not a positive finite value in range",
                               (long long)c, m, (double)input_scale, (double)weight_scales[c],
                               (double)output_scale);
        shift[c] = n;
    }
    return LOWBIT_OK;
}
