/*
 * Calibration observers: they watch float tensors batch by batch and choose the range [lo, hi]
 * that a tensor (or each channel of it) is quantized to, then affine quantization parameters
 * (scale, zero point) for that range. Internal header, not part of the public API.
 *
 * One observer collects everything the range methods need, so a caller can compare methods on
 * one pass over the calibration data:
 *   - exact min and max per channel (independent of how the data is split into batches);
 *   - an exponential moving average of each batch's min and max (depends on the split, by design);
 *   - optionally a histogram of |x| per channel, for the percentile, KL (entropy) and MSE methods.
 *
 * The histogram covers [0, R) with R a power of two strictly above the largest |x| seen so far;
 * when a larger |x| arrives, R doubles (as often as needed) and pairs of bins merge. Because the
 * bin count is a power of two too, a value's bin after merging is exactly the bin it would have
 * had with the final R from the start, so the histogram (and every range computed from it) is
 * identical whatever the batch split: R always ends at the power of two above the global max |x|.
 *
 * Histogram methods return a symmetric threshold T on |x|; the range is [max(min, -T),
 * min(max, T)], widened to include 0. Observing allocates nothing: all state is allocated by
 * lb_observer_create.
 */
#ifndef LOWBIT_CALIB_OBSERVERS_H
#define LOWBIT_CALIB_OBSERVERS_H

#include "../common/common.h"

typedef struct lb_observer_config {
    /* Channels observed separately: 1 for a per-tensor range. Element i of a batch belongs to
       channel (i / channel_stride) % channels, so for a row-major tensor with the channel axis
       at dimension d, channel_stride is the product of the dimensions after d (1 for the last
       axis). A batch's length must be a multiple of channels * channel_stride. */
    int64_t channels;
    int64_t channel_stride;
    /* Weight of the newest batch in the moving average, in (0, 1]; 1 keeps the last batch's. */
    float moving_average_factor;
    /* Histogram bins per channel: 0 for none, else a power of two from 256 to 65536. */
    int histogram_bins;
} lb_observer_config;

typedef enum lb_range_method {
    LB_RANGE_MINMAX = 0,
    LB_RANGE_MOVING_AVERAGE,
    LB_RANGE_PERCENTILE, /* the given percentile of |x| */
    LB_RANGE_KL,         /* the threshold with minimal KL divergence (TensorRT's entropy method) */
    LB_RANGE_MSE,        /* the threshold with minimal expected squared quantization error */
} lb_range_method;

typedef struct lb_range_request {
    lb_range_method method;
    double percentile; /* LB_RANGE_PERCENTILE: in (0, 100], e.g. 99.99 */
    int bits;          /* LB_RANGE_KL / LB_RANGE_MSE: 2..16; KL uses 2^(bits-1) levels on |x|,
                          MSE a symmetric quantizer with 2^(bits-1)-1 steps each side; for data
                          of one sign (min >= 0 or max <= 0) all 2^bits levels (2^bits - 1
                          steps) lie on that side. Exact zeros are left out of both searches
                          (zero is always exact) but count for the percentile. */
} lb_range_request;

typedef struct lb_observer lb_observer;

lowbit_status lb_observer_create(const lb_observer_config *config, lb_observer **out,
                                 lowbit_diag *diag);
void lb_observer_free(lb_observer *obs);
/* Adds one batch of n values. A batch with NaN or Inf is refused whole (LOWBIT_ERR_NONFINITE)
   and changes nothing. */
lowbit_status lb_observer_observe(lb_observer *obs, const float *x, int64_t n, lowbit_diag *diag);
/* Values observed so far per channel (0 before the first batch). */
int64_t lb_observer_count(const lb_observer *obs);
/* The range of one channel by one method; always lo <= 0 <= hi. Fails with
   LOWBIT_ERR_INVALID_ARGUMENT before any value was observed, or for a histogram method when the
   observer keeps no histogram. */
lowbit_status lb_observer_range(const lb_observer *obs, int64_t channel,
                                const lb_range_request *request, float *lo, float *hi,
                                lowbit_diag *diag);

/* Affine quantization: q = clamp(round(x / scale) + zero_point, qmin, qmax). */
typedef struct lb_qparams {
    float scale;
    int32_t zero_point;
    int32_t qmin, qmax;
} lb_qparams;

/* Asymmetric parameters for [lo, hi] (widened to include 0) on [qmin, qmax], e.g. uint8 [0, 255]
   or int8 [-128, 127]. The zero point is an integer in [qmin, qmax], so 0.0 is exactly
   representable. A range that is exactly [0, 0] (a constant-zero tensor) gets scale 1: any
   positive scale represents it exactly, and 1 keeps the scale finite and its reciprocal too. */
lowbit_status lb_qparams_affine(float lo, float hi, int32_t qmin, int32_t qmax, lb_qparams *out,
                                lowbit_diag *diag);
/* Symmetric parameters (for weights): zero point (qmin + qmax + 1) / 2 (0 for int8, 128 for
   uint8) and scale max(|lo|, |hi|) / min(zp - qmin, qmax - zp), so both -amax and amax fit
   (int8: scale = amax / 127). Scale 1 for an all-zero range, as above. */
lowbit_status lb_qparams_symmetric(float lo, float hi, int32_t qmin, int32_t qmax,
                                   lb_qparams *out, lowbit_diag *diag);
/* q(x) and its dequantized value, for checks and reference paths. */
int32_t lb_qparams_quantize(const lb_qparams *qp, float x);
float lb_qparams_dequantize(const lb_qparams *qp, int32_t q);

#endif /* LOWBIT_CALIB_OBSERVERS_H */
