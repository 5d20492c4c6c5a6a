/* Calibration observers: min/max, moving-average min/max and |x| histograms per channel, and the
   range methods built on them (percentile, KL divergence, MSE). See observers.h. */
#include "observers.h"

#include <float.h>
#include <stdlib.h>

struct lb_observer {
    lb_observer_config config;
    int64_t count;       /* values per channel observed so far */
    float *min, *max;    /* exact, per channel */
    float *avg_min, *avg_max;     /* moving averages, per channel */
    float *batch_min, *batch_max; /* scratch for one batch, allocated once */
    uint64_t *hist;      /* channels * bins counts of |x|, exact zeros excluded */
    uint64_t *zeros;     /* per channel: exact zeros (e.g. ReLU outputs), kept out of the
                            histogram: zero is represented exactly by any affine quantizer, so
                            the KL and MSE searches must not see them as mass to spread or round */
    double *hist_range;  /* per channel: the histogram covers [0, R); 0 until a nonzero |x| */
    double *batch_absmax; /* scratch: one batch's max |x| per channel */
};

static int is_power_of_two(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

static lowbit_status check_config(const lb_observer_config *c, lowbit_diag *diag) {
    if (c->channels < 1 || c->channel_stride < 1 || c->channels > (INT64_C(1) << 32) ||
        c->channel_stride > (INT64_C(1) << 40))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "observer channels and channel stride must be at least 1");
    if (!(c->moving_average_factor > 0.0f && c->moving_average_factor <= 1.0f))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "moving average factor must be in (0, 1]");
    if (c->histogram_bins != 0 &&
        (!is_power_of_two(c->histogram_bins) || c->histogram_bins < 256 ||
         c->histogram_bins > 65536))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "histogram bins must be 0 or a power of two from 256 to 65536");
    return LOWBIT_OK;
}

void lb_observer_free(lb_observer *obs) {
    if (!obs) return;
    free(obs->min);
    free(obs->max);
    free(obs->avg_min);
    free(obs->avg_max);
    free(obs->batch_min);
    free(obs->batch_max);
    free(obs->hist);
    free(obs->zeros);
    free(obs->hist_range);
    free(obs->batch_absmax);
    free(obs);
}

lowbit_status lb_observer_create(const lb_observer_config *config, lb_observer **out,
                                 lowbit_diag *diag) {
    if (!config || !out)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "NULL argument");
    *out = NULL;
    lowbit_status st = check_config(config, diag);
    if (st != LOWBIT_OK) return st;
    lb_observer *obs = calloc(1, sizeof *obs);
    if (!obs) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    obs->config = *config;
    size_t ch = (size_t)config->channels;
    obs->min = malloc(ch * sizeof(float));
    obs->max = malloc(ch * sizeof(float));
    obs->avg_min = malloc(ch * sizeof(float));
    obs->avg_max = malloc(ch * sizeof(float));
    obs->batch_min = malloc(ch * sizeof(float));
    obs->batch_max = malloc(ch * sizeof(float));
    obs->batch_absmax = malloc(ch * sizeof(double));
    int ok = obs->min && obs->max && obs->avg_min && obs->avg_max && obs->batch_min &&
             obs->batch_max && obs->batch_absmax;
    if (config->histogram_bins) {
        obs->hist = calloc(ch * (size_t)config->histogram_bins, sizeof(uint64_t));
        obs->hist_range = calloc(ch, sizeof(double));
        obs->zeros = calloc(ch, sizeof(uint64_t));
        ok = ok && obs->hist && obs->hist_range && obs->zeros;
    }
    if (!ok) {
        lb_observer_free(obs);
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    }
    *out = obs;
    return LOWBIT_OK;
}

int64_t lb_observer_count(const lb_observer *obs) { return obs ? obs->count : 0; }

/* The smallest power of two strictly above v > 0 (frexp gives v = m * 2^e with m in [0.5, 1)). */
static double power_of_two_above(double v) {
    int e;
    frexp(v, &e);
    return ldexp(1.0, e);
}

/* Doubles a channel's histogram range until it exceeds absmax, merging bin pairs each time. */
static void grow_histogram(uint64_t *hist, int bins, double *range, double absmax) {
    if (absmax <= 0.0) return;
    if (*range == 0.0) { /* only zeros so far: they stay in bin 0 at any range */
        *range = power_of_two_above(absmax);
        return;
    }
    while (*range <= absmax) {
        for (int i = 0; i < bins / 2; i++) hist[i] = hist[2 * i] + hist[2 * i + 1];
        memset(hist + bins / 2, 0, (size_t)(bins / 2) * sizeof(uint64_t));
        *range *= 2.0;
    }
}

/* One pass per batch: per-channel min, max and max |x|; refuses non-finite values. */
static int64_t scan_batch(lb_observer *obs, const float *x, int64_t n) {
    const int64_t ch = obs->config.channels, stride = obs->config.channel_stride;
    for (int64_t c = 0; c < ch; c++) {
        obs->batch_min[c] = FLT_MAX;
        obs->batch_max[c] = -FLT_MAX;
    }
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        if (!isfinite(v)) return i;
        const int64_t c = (i / stride) % ch;
        if (v < obs->batch_min[c]) obs->batch_min[c] = v;
        if (v > obs->batch_max[c]) obs->batch_max[c] = v;
    }
    for (int64_t c = 0; c < ch; c++)
        obs->batch_absmax[c] = LB_MAX(fabs((double)obs->batch_min[c]),
                                      fabs((double)obs->batch_max[c]));
    return -1;
}

/* avg + factor * (batch - avg) leaves a constant stream exactly constant; factor 1 is taken
   separately because avg + (batch - avg) can differ from batch by rounding. */
static float moving_average(float avg, float batch, float factor) {
    if (factor == 1.0f) return batch;
    return (float)((double)avg + (double)factor * ((double)batch - (double)avg));
}

static void update_min_max(lb_observer *obs) {
    const float factor = obs->config.moving_average_factor;
    for (int64_t c = 0; c < obs->config.channels; c++) {
        const float bmin = obs->batch_min[c], bmax = obs->batch_max[c];
        if (obs->count == 0) {
            obs->min[c] = obs->avg_min[c] = bmin;
            obs->max[c] = obs->avg_max[c] = bmax;
            continue;
        }
        obs->min[c] = LB_MIN(obs->min[c], bmin);
        obs->max[c] = LB_MAX(obs->max[c], bmax);
        obs->avg_min[c] = moving_average(obs->avg_min[c], bmin, factor);
        obs->avg_max[c] = moving_average(obs->avg_max[c], bmax, factor);
    }
}

static void update_histograms(lb_observer *obs, const float *x, int64_t n) {
    const int64_t ch = obs->config.channels, stride = obs->config.channel_stride;
    const int bins = obs->config.histogram_bins;
    for (int64_t c = 0; c < ch; c++)
        grow_histogram(obs->hist + c * bins, bins, &obs->hist_range[c], obs->batch_absmax[c]);
    for (int64_t i = 0; i < n; i++) {
        const int64_t c = (i / stride) % ch;
        if (x[i] == 0.0f) {
            obs->zeros[c]++;
            continue;
        }
        const double range = obs->hist_range[c];
        int64_t bin = 0;
        /* bins / range is a power of two, so the product is exact: the bin does not depend on
           when the range last grew. */
        if (range > 0.0) bin = (int64_t)(fabs((double)x[i]) * ((double)bins / range));
        if (bin >= bins) bin = bins - 1; /* cannot happen (range > |x|); kept for safety */
        obs->hist[c * bins + bin]++;
    }
}

lowbit_status lb_observer_observe(lb_observer *obs, const float *x, int64_t n, lowbit_diag *diag) {
    if (!obs || (!x && n > 0) || n < 0)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "bad argument");
    const int64_t group = obs->config.channels * obs->config.channel_stride;
    if (n == 0 || n % group != 0)
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "batch of %lld values is not a non-empty multiple of %lld "
                           "(channels * channel stride)",
                           (long long)n, (long long)group);
    const int64_t bad = scan_batch(obs, x, n);
    if (bad >= 0)
        return lb_diag_set(diag, LOWBIT_ERR_NONFINITE, -1, UINT64_MAX,
                           "value %lld of the batch is not finite", (long long)bad);
    update_min_max(obs);
    if (obs->hist) update_histograms(obs, x, n);
    obs->count += n / obs->config.channels;
    return LOWBIT_OK;
}

/* ---- thresholds from a histogram of |x| ---------------------------------------------------- */

/* The p-th percentile of |x|, interpolated linearly inside the bin where it falls. */
/* The zeros count as values at 0, below every bin. */
static double percentile_threshold(const uint64_t *hist, uint64_t zeros, int bins, double width,
                                   double percent) {
    uint64_t total = zeros;
    for (int i = 0; i < bins; i++) total += hist[i];
    const double target = (double)total * percent / 100.0;
    if ((double)zeros >= target) return 0.0;
    double below = (double)zeros;
    for (int i = 0; i < bins; i++) {
        const double in_bin = (double)hist[i];
        if (in_bin > 0 && below + in_bin >= target) {
            const double fraction = LB_MAX(0.0, (target - below) / in_bin);
            return (i + fraction) * width;
        }
        below += in_bin;
    }
    return bins * width;
}

/* KL(P || Q) for a threshold at bin `used` (TensorRT's entropy calibration): P is the histogram
   clipped there, everything above folded into its last bin; Q quantizes the clipped histogram
   without the folded outliers to `levels` groups, spreading each group's total evenly over the
   group's non-empty bins. Clipping too low thus shows as mass P has and Q lacks; a bin where Q
   is empty and P is not (only the last one can be) gets a tiny probability instead of zero. */
static double kl_divergence_at(const uint64_t *hist, int bins, int used, int levels) {
    uint64_t outliers = 0, p_total = 0, q_total = 0;
    for (int i = used; i < bins; i++) outliers += hist[i];
    for (int i = 0; i < used; i++) q_total += hist[i];
    p_total = q_total + outliers;
    if (q_total == 0) return INFINITY;
    const double q_floor = 1e-12;
    double kl = 0.0;
    for (int level = 0; level < levels; level++) {
        const int begin = (int)((int64_t)level * used / levels);
        const int end = (int)((int64_t)(level + 1) * used / levels);
        uint64_t group_sum = 0;
        int nonzero = 0;
        for (int i = begin; i < end; i++) {
            group_sum += hist[i];
            nonzero += hist[i] != 0;
        }
        const double q_each = nonzero ? (double)group_sum / nonzero / (double)q_total : 0.0;
        for (int i = begin; i < end; i++) {
            const uint64_t count = hist[i] + (i == used - 1 ? outliers : 0);
            if (!count) continue;
            const double p = (double)count / (double)p_total;
            const double q = hist[i] ? q_each : q_floor;
            kl += p * log(p / q);
        }
    }
    return kl;
}

static double kl_threshold(const uint64_t *hist, int bins, double width, int levels) {
    int last = 0; /* the highest non-empty bin: candidates beyond it all clip nothing */
    for (int i = 0; i < bins; i++)
        if (hist[i]) last = i;
    int best = LB_MIN(levels, bins);
    double best_kl = INFINITY;
    for (int used = LB_MIN(levels, bins); used <= LB_MIN(bins, last + 1); used++) {
        const double kl = kl_divergence_at(hist, bins, used, levels);
        if (kl < best_kl) { /* strict: the smallest threshold wins ties, deterministically */
            best_kl = kl;
            best = used;
        }
    }
    if (last + 1 < levels) best = last + 1; /* everything fits in fewer bins than levels */
    return best * width;
}

/* Integral over [a, b] (b > a >= 0) of (x - q(x))^2, q rounding to the nearest multiple of step
   with at most max_steps steps (values beyond max_steps * step are clipped to it). */
static double squared_error_integral(double a, double b, double step, int max_steps) {
    double sum = 0.0;
    int64_t k = (int64_t)floor(a / step + 0.5);
    if (k > max_steps) k = max_steps;
    double lo = a;
    while (lo < b) {
        /* cell k covers [(k - 0.5) step, (k + 0.5) step); the last cell extends to infinity */
        const double cell_end = k >= max_steps ? b : LB_MIN(b, (k + 0.5) * step);
        const double q = (double)k * step;
        const double d1 = cell_end - q, d0 = lo - q;
        sum += (d1 * d1 * d1 - d0 * d0 * d0) / 3.0;
        lo = cell_end;
        k++;
    }
    return sum;
}

/* The threshold, among bin edges, minimizing the expected squared error of a symmetric
   quantizer with max_steps steps each side; values are taken as uniform inside their bin. */
static double mse_threshold(const uint64_t *hist, int bins, double width, int max_steps) {
    int last = 0;
    for (int i = 0; i < bins; i++)
        if (hist[i]) last = i;
    int best = last + 1;
    double best_error = INFINITY;
    for (int edge = 1; edge <= last + 1; edge++) {
        const double step = edge * width / max_steps;
        double error = 0.0;
        for (int i = 0; i <= last; i++) {
            if (!hist[i]) continue;
            error += (double)hist[i] *
                     squared_error_integral(i * width, (i + 1) * width, step, max_steps) / width;
        }
        if (error < best_error) {
            best_error = error;
            best = edge;
        }
    }
    return best * width;
}

static lowbit_status histogram_threshold(const lb_observer *obs, int64_t channel,
                                         const lb_range_request *request, double *threshold,
                                         lowbit_diag *diag) {
    const int bins = obs->config.histogram_bins;
    if (!bins)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "this range method needs an observer with a histogram");
    const uint64_t *hist = obs->hist + channel * bins;
    const double range = obs->hist_range[channel];
    if (range == 0.0) { /* all zeros */
        *threshold = 0.0;
        return LOWBIT_OK;
    }
    const double width = range / bins;
    if (request->method == LB_RANGE_PERCENTILE) {
        if (!(request->percentile > 0.0 && request->percentile <= 100.0))
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                               "percentile must be in (0, 100]");
        *threshold =
            percentile_threshold(hist, obs->zeros[channel], bins, width, request->percentile);
        return LOWBIT_OK;
    }
    if (request->bits < 2 || request->bits > 16)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "bits must be from 2 to 16");
    /* Data of one sign (ReLU outputs) gets every level of the affine quantizer on [0, T]; data
       of both signs half of them on each side. */
    const int one_sided = obs->min[channel] >= 0.0f || obs->max[channel] <= 0.0f;
    const int levels = one_sided ? 1 << request->bits : 1 << (request->bits - 1);
    *threshold = request->method == LB_RANGE_KL ? kl_threshold(hist, bins, width, levels)
                                                : mse_threshold(hist, bins, width, levels - 1);
    return LOWBIT_OK;
}

lowbit_status lb_observer_range(const lb_observer *obs, int64_t channel,
                                const lb_range_request *request, float *lo, float *hi,
                                lowbit_diag *diag) {
    if (!obs || !request || !lo || !hi || channel < 0 || channel >= obs->config.channels)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "bad argument");
    if (obs->count == 0)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "no values observed yet");
    float range_lo = obs->min[channel], range_hi = obs->max[channel];
    switch (request->method) {
    case LB_RANGE_MINMAX:
        break;
    case LB_RANGE_MOVING_AVERAGE:
        range_lo = obs->avg_min[channel];
        range_hi = obs->avg_max[channel];
        break;
    case LB_RANGE_PERCENTILE:
    case LB_RANGE_KL:
    case LB_RANGE_MSE: {
        double threshold = 0.0;
        lowbit_status st = histogram_threshold(obs, channel, request, &threshold, diag);
        if (st != LOWBIT_OK) return st;
        range_lo = (float)LB_MAX((double)range_lo, -threshold);
        range_hi = (float)LB_MIN((double)range_hi, threshold);
        break;
    }
    default:
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "unknown range method %d", (int)request->method);
    }
    *lo = LB_MIN(range_lo, 0.0f); /* zero must be exactly representable */
    *hi = LB_MAX(range_hi, 0.0f);
    return LOWBIT_OK;
}

/* ---- quantization parameters ---------------------------------------------------------------- */

static lowbit_status check_qrange(float lo, float hi, int32_t qmin, int32_t qmax,
                                  const lb_qparams *out, lowbit_diag *diag) {
    if (!out || !(qmin < qmax) || !isfinite(lo) || !isfinite(hi) || lo > hi)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "bad quantization range [%g, %g] on [%d, %d]", (double)lo, (double)hi,
                           (int)qmin, (int)qmax);
    return LOWBIT_OK;
}

lowbit_status lb_qparams_affine(float lo, float hi, int32_t qmin, int32_t qmax, lb_qparams *out,
                                lowbit_diag *diag) {
    lowbit_status st = check_qrange(lo, hi, qmin, qmax, out, diag);
    if (st != LOWBIT_OK) return st;
    const double lo0 = LB_MIN((double)lo, 0.0), hi0 = LB_MAX((double)hi, 0.0);
    double scale = (hi0 - lo0) / ((double)qmax - (double)qmin);
    if (!(scale > 0.0) || !((float)scale > 0.0f)) scale = 1.0; /* constant zero (see header) */
    /* The zero point is the integer that 0.0 maps to; rounding it moves the represented range
       by under half a step, and the clamp keeps it a valid code. */
    double zero_point = (double)qmin - round(lo0 / scale);
    zero_point = LB_MAX((double)qmin, LB_MIN((double)qmax, zero_point));
    out->scale = (float)scale;
    out->zero_point = (int32_t)zero_point;
    out->qmin = qmin;
    out->qmax = qmax;
    return LOWBIT_OK;
}

lowbit_status lb_qparams_symmetric(float lo, float hi, int32_t qmin, int32_t qmax,
                                   lb_qparams *out, lowbit_diag *diag) {
    lowbit_status st = check_qrange(lo, hi, qmin, qmax, out, diag);
    if (st != LOWBIT_OK) return st;
    const int64_t zero_point = ((int64_t)qmin + (int64_t)qmax + 1) / 2;
    const int64_t steps = LB_MIN(zero_point - qmin, (int64_t)qmax - zero_point);
    const double amax = LB_MAX(fabs((double)lo), fabs((double)hi));
    double scale = steps > 0 ? amax / (double)steps : 0.0;
    if (!(scale > 0.0) || !((float)scale > 0.0f)) scale = 1.0;
    out->scale = (float)scale;
    out->zero_point = (int32_t)zero_point;
    out->qmin = qmin;
    out->qmax = qmax;
    return LOWBIT_OK;
}

int32_t lb_qparams_quantize(const lb_qparams *qp, float x) {
    double q = round((double)x / (double)qp->scale) + (double)qp->zero_point;
    if (!(q >= (double)qp->qmin)) q = qp->qmin; /* NaN goes to qmin */
    if (q > (double)qp->qmax) q = qp->qmax;
    return (int32_t)q;
}

float lb_qparams_dequantize(const lb_qparams *qp, int32_t q) {
    return (float)(((double)q - (double)qp->zero_point) * (double)qp->scale);
}
