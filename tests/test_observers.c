/* Calibration observers: exact min/max, moving averages, histogram percentile / KL / MSE ranges
   on fixed-seed uniform and normal samples (with and without outliers), split independence,
   per-channel ranges, and affine / symmetric quantization parameters. */
#include "calib/observers.h"
#include "testing.h"

#include <stdlib.h>

/* splitmix64: a fixed-seed generator, so every run sees the same data. */
static uint64_t rng_state;
static uint64_t next_u64(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double uniform01(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
/* Box-Muller normal(0, 1). */
static double normal01(void) {
    const double u1 = 1.0 - uniform01(), u2 = uniform01();
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static lb_observer *make_observer(int64_t channels, int64_t stride, float factor, int bins) {
    lb_observer_config cfg = {channels, stride, factor, bins};
    lb_observer *obs = NULL;
    lowbit_status st = lb_observer_create(&cfg, &obs, NULL);
    CHECK(st == LOWBIT_OK && obs, "create: %s", lowbit_status_name(st));
    return obs;
}

static void range_of(const lb_observer *obs, int64_t ch, lb_range_method m, double pct, int bits,
                     float *lo, float *hi) {
    lb_range_request req = {m, pct, bits};
    lowbit_status st = lb_observer_range(obs, ch, &req, lo, hi, NULL);
    CHECK(st == LOWBIT_OK, "range method %d: %s", (int)m, lowbit_status_name(st));
}

static void test_minmax_uniform(void) {
    rng_state = 1;
    enum { N = 10000 };
    static float x[N];
    float lo_true = INFINITY, hi_true = -INFINITY;
    for (int i = 0; i < N; i++) {
        x[i] = (float)(uniform01() * 7.0 - 2.0);
        lo_true = LB_MIN(lo_true, x[i]);
        hi_true = LB_MAX(hi_true, x[i]);
    }
    lb_observer *obs = make_observer(1, 1, 0.5f, 0);
    for (int i = 0; i < N; i += 1000) lb_observer_observe(obs, x + i, 1000, NULL);
    float lo, hi;
    range_of(obs, 0, LB_RANGE_MINMAX, 0, 8, &lo, &hi);
    CHECK(lo == lo_true && hi == hi_true, "min/max %g %g vs %g %g", lo, hi, lo_true, hi_true);
    CHECK(lb_observer_count(obs) == N, "count");
    /* A batch with a NaN is refused whole and changes nothing. */
    float bad[3] = {100.0f, NAN, -100.0f};
    CHECK(lb_observer_observe(obs, bad, 3, NULL) == LOWBIT_ERR_NONFINITE, "NaN refused");
    range_of(obs, 0, LB_RANGE_MINMAX, 0, 8, &lo, &hi);
    CHECK(lo == lo_true && hi == hi_true && lb_observer_count(obs) == N, "unchanged after NaN");
    /* Histogram methods need a histogram. */
    lb_range_request req = {LB_RANGE_KL, 0, 8};
    CHECK(lb_observer_range(obs, 0, &req, &lo, &hi, NULL) == LOWBIT_ERR_INVALID_ARGUMENT, "no hist");
    lb_observer_free(obs);
    /* Positive-only data: the range still includes 0. */
    obs = make_observer(1, 1, 1.0f, 0);
    float pos[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    lb_observer_observe(obs, pos, 4, NULL);
    range_of(obs, 0, LB_RANGE_MINMAX, 0, 8, &lo, &hi);
    CHECK(lo == 0.0f && hi == 4.0f, "positive data range [%g, %g]", lo, hi);
    lb_observer_free(obs);
}

static void test_moving_average(void) {
    lb_observer *last = make_observer(1, 1, 1.0f, 0);
    lb_observer *constant = make_observer(1, 1, 0.01f, 0);
    lb_observer *half = make_observer(1, 1, 0.5f, 0);
    float batch[4];
    float c[4] = {-0.3f, 1.7f, 0.2f, -0.3f};
    for (int b = 0; b < 20; b++) {
        for (int i = 0; i < 4; i++) batch[i] = (float)(b + 1) * (i - 1.5f) * 0.37f;
        lb_observer_observe(last, batch, 4, NULL);
        lb_observer_observe(constant, c, 4, NULL);
    }
    float lo, hi;
    range_of(last, 0, LB_RANGE_MOVING_AVERAGE, 0, 8, &lo, &hi);
    CHECK(lo == batch[0] && hi == batch[3], "factor 1: [%g, %g] vs last batch [%g, %g]", lo, hi,
          batch[0], batch[3]);
    range_of(constant, 0, LB_RANGE_MOVING_AVERAGE, 0, 8, &lo, &hi);
    CHECK(lo == -0.3f && hi == 1.7f, "constant stream: [%g, %g]", lo, hi);
    /* factor 0.5: max of batches 2, 4, 8 -> 2, then 3, then 5.5 (first batch initializes). */
    float b1[2] = {-1.0f, 2.0f}, b2[2] = {-1.0f, 4.0f}, b3[2] = {-1.0f, 8.0f};
    lb_observer_observe(half, b1, 2, NULL);
    lb_observer_observe(half, b2, 2, NULL);
    lb_observer_observe(half, b3, 2, NULL);
    range_of(half, 0, LB_RANGE_MOVING_AVERAGE, 0, 8, &lo, &hi);
    CHECK(lo == -1.0f && hi == 5.5f, "factor 0.5: [%g, %g]", lo, hi);
    lb_observer_free(last);
    lb_observer_free(constant);
    lb_observer_free(half);
}

enum { NORMAL_N = 1000000 };

static void fill_normal(float *x, int n) {
    rng_state = 12345;
    for (int i = 0; i < n; i++) x[i] = (float)normal01();
}

typedef struct ranges {
    float minmax, pct, kl, mse; /* hi of each (symmetric data, so enough) */
    float pct_lo;
} ranges;

static ranges observe_ranges(const float *x, int64_t n, int64_t batch, int bins) {
    lb_observer *obs = make_observer(1, 1, 0.1f, bins);
    for (int64_t i = 0; i < n; i += batch) lb_observer_observe(obs, x + i, LB_MIN(batch, n - i), NULL);
    ranges r;
    float lo;
    range_of(obs, 0, LB_RANGE_MINMAX, 0, 8, &lo, &r.minmax);
    range_of(obs, 0, LB_RANGE_PERCENTILE, 99.99, 8, &r.pct_lo, &r.pct);
    range_of(obs, 0, LB_RANGE_KL, 0, 8, &lo, &r.kl);
    range_of(obs, 0, LB_RANGE_MSE, 0, 8, &lo, &r.mse);
    lb_observer_free(obs);
    return r;
}

static void test_histogram_methods(void) {
    float *x = malloc(NORMAL_N * sizeof(float));
    if (!x) {
        CHECK(0, "out of memory");
        return;
    }
    fill_normal(x, NORMAL_N);
    ranges clean = observe_ranges(x, NORMAL_N, 65536, 2048);
    printf("normal(0,1) 1e6: max %.4f  p99.99 %.4f  KL(8 bit) %.4f  MSE(8 bit) %.4f\n",
           clean.minmax, clean.pct, clean.kl, clean.mse);
    CHECK(fabs(clean.pct - 3.8906) < 0.02 * 3.8906, "p99.99 |x| = %g", clean.pct);
    CHECK(fabs(clean.pct_lo + clean.pct) < 0.15, "percentile range symmetric: %g", clean.pct_lo);
    CHECK(clean.minmax > 4.4f && clean.minmax < 5.6f, "max |x| of 1e6 normals %g", clean.minmax);
    CHECK(clean.kl > 3.0f && clean.kl < 4.8f && clean.kl < clean.minmax, "KL threshold %g",
          clean.kl);
    CHECK(clean.mse > 3.5f && clean.mse < 4.5f && clean.mse < clean.minmax, "MSE threshold %g",
          clean.mse);

    /* The histogram does not depend on the batch split (R is a power of two, bins merge). */
    ranges split = observe_ranges(x, NORMAL_N, 1000, 2048);
    CHECK(split.pct == clean.pct && split.kl == clean.kl && split.mse == clean.mse,
          "split 1000: %g %g %g", split.pct, split.kl, split.mse);

    /* A few huge outliers (1000 sigma): min/max follows them, the percentile stays put. The
       histogram's range grows to 1024, so its bins are 0.5 wide: KL's threshold cannot go
       below levels * 0.5 there, and the squared error of clipping 1000s outweighs rounding
       1e6 values to 8 steps, so neither is asked to stay near the clean value here. */
    x[10] = 1000.0f;
    x[5000] = -800.0f;
    x[123456] = 950.0f;
    ranges dirty = observe_ranges(x, NORMAL_N, 65536, 2048);
    printf("outliers ~1000: max %.4f  p99.99 %.4f  KL %.4f  MSE %.4f\n", dirty.minmax, dirty.pct,
           dirty.kl, dirty.mse);
    CHECK(dirty.minmax == 1000.0f, "minmax %g", dirty.minmax);
    CHECK(fabs(dirty.pct - clean.pct) < 0.1, "percentile %g vs %g", dirty.pct, clean.pct);
    /* Outliers of 55-70 sigma with 8192 bins (0.0156 wide): percentile and KL stay near the
       clean values while min/max is 70. MSE rightly moves out: clipping three values by ~55
       costs ~10^4, more than the rounding error a wider range adds on 1e6 values. */
    x[10] = 60.0f;
    x[5000] = -55.0f;
    x[123456] = 70.0f;
    dirty = observe_ranges(x, NORMAL_N, 65536, 8192);
    printf("outliers ~60: max %.4f  p99.99 %.4f  KL %.4f  MSE %.4f\n", dirty.minmax, dirty.pct,
           dirty.kl, dirty.mse);
    CHECK(dirty.minmax == 70.0f, "minmax %g", dirty.minmax);
    CHECK(fabs(dirty.pct - clean.pct) < 0.05, "percentile %g vs %g", dirty.pct, clean.pct);
    CHECK(fabs(dirty.kl - clean.kl) < 0.5, "KL %g vs %g", dirty.kl, clean.kl);
    CHECK(dirty.mse > clean.mse + 5.0f && dirty.mse < 70.0f, "MSE %g vs %g", dirty.mse, clean.mse);
    /* Outliers of 13-15 sigma: percentile and KL stay, MSE moves only a little. */
    x[10] = 14.0f;
    x[5000] = -13.0f;
    x[123456] = 15.0f;
    dirty = observe_ranges(x, NORMAL_N, 65536, 4096);
    printf("outliers ~14: max %.4f  p99.99 %.4f  KL %.4f  MSE %.4f\n", dirty.minmax, dirty.pct,
           dirty.kl, dirty.mse);
    CHECK(dirty.minmax == 15.0f, "minmax %g", dirty.minmax);
    CHECK(fabs(dirty.pct - clean.pct) < 0.05, "percentile %g vs %g", dirty.pct, clean.pct);
    CHECK(fabs(dirty.kl - clean.kl) < 0.5, "KL %g vs %g", dirty.kl, clean.kl);
    /* MSE moves a little (clipping 13-15 to ~4 costs about what rounding 1e6 values with a
       30% wider step adds): it stays a third of the min/max range. */
    CHECK(dirty.mse >= clean.mse && dirty.mse < 5.5f, "MSE %g vs %g", dirty.mse, clean.mse);
    free(x);
}

static void test_qparams(void) {
    lb_qparams qp;
    /* Symmetric int8 on [-1, 1]: zero point 0, scale 1/127. */
    CHECK(lb_qparams_symmetric(-0.5f, 1.0f, -128, 127, &qp, NULL) == LOWBIT_OK, "sym");
    CHECK(qp.zero_point == 0 && qp.scale == (float)(1.0 / 127), "int8 sym zp %d scale %g",
          qp.zero_point, qp.scale);
    CHECK(lb_qparams_quantize(&qp, 1.0f) == 127 && lb_qparams_quantize(&qp, -1.0f) == -127,
          "sym ends");
    CHECK(lb_qparams_symmetric(-2.0f, 1.0f, 0, 255, &qp, NULL) == LOWBIT_OK, "sym u8");
    CHECK(qp.zero_point == 128 && qp.scale == (float)(2.0 / 127), "uint8 sym zp %d", qp.zero_point);
    /* Asymmetric uint8. */
    CHECK(lb_qparams_affine(0.0f, 6.0f, 0, 255, &qp, NULL) == LOWBIT_OK, "relu6");
    CHECK(qp.zero_point == 0 && qp.scale == (float)(6.0 / 255), "relu6 zp %d", qp.zero_point);
    CHECK(lb_qparams_affine(-6.0f, 0.0f, 0, 255, &qp, NULL) == LOWBIT_OK, "neg");
    CHECK(qp.zero_point == 255, "negative-only zp %d", qp.zero_point);
    CHECK(lb_qparams_affine(-1.0f, 3.0f, 0, 255, &qp, NULL) == LOWBIT_OK, "asym");
    CHECK(qp.zero_point == 64, "[-1,3] zp %d (0 - round(-63.75))", qp.zero_point);
    CHECK(lb_qparams_quantize(&qp, 0.0f) == 64 && lb_qparams_dequantize(&qp, 64) == 0.0f,
          "0.0 is exact");
    CHECK(lb_qparams_quantize(&qp, -1.0f) == 0 && lb_qparams_quantize(&qp, 3.0f) == 255, "ends");
    CHECK(lb_qparams_affine(-1.0f, 3.0f, -128, 127, &qp, NULL) == LOWBIT_OK, "asym int8");
    CHECK(qp.zero_point == -64 && lb_qparams_dequantize(&qp, qp.zero_point) == 0.0f,
          "int8 asym zp %d", qp.zero_point);
    /* A range that excludes 0 is widened to include it. */
    CHECK(lb_qparams_affine(2.0f, 5.0f, 0, 255, &qp, NULL) == LOWBIT_OK, "widen");
    CHECK(qp.zero_point == 0 && qp.scale == (float)(5.0 / 255), "widened zp %d scale %g",
          qp.zero_point, qp.scale);
    /* Constant zero: scale 1 (documented), zero exact. */
    CHECK(lb_qparams_affine(0.0f, 0.0f, 0, 255, &qp, NULL) == LOWBIT_OK && qp.scale == 1.0f &&
              qp.zero_point == 0, "zero tensor affine scale %g zp %d", qp.scale, qp.zero_point);
    CHECK(lb_qparams_symmetric(0.0f, 0.0f, -128, 127, &qp, NULL) == LOWBIT_OK && qp.scale == 1.0f,
          "zero tensor symmetric");
    CHECK(lb_qparams_affine(1.0f, 0.0f, 0, 255, &qp, NULL) == LOWBIT_ERR_INVALID_ARGUMENT, "lo>hi");

    /* A constant-zero tensor through an observer with a histogram. */
    lb_observer *obs = make_observer(1, 1, 0.5f, 256);
    float zeros[64] = {0};
    lb_observer_observe(obs, zeros, 64, NULL);
    float lo, hi;
    range_of(obs, 0, LB_RANGE_KL, 0, 8, &lo, &hi);
    CHECK(lo == 0.0f && hi == 0.0f, "zeros KL [%g, %g]", lo, hi);
    range_of(obs, 0, LB_RANGE_MSE, 0, 8, &lo, &hi);
    CHECK(lo == 0.0f && hi == 0.0f, "zeros MSE [%g, %g]", lo, hi);
    lb_observer_free(obs);
}

/* Per channel: a [rows=500][4 channels] tensor (channel axis last, stride 1) and the same data as
   [4][500] (channel axis first, stride 500); channel c is uniform on [-(c+1)^2, 2 (c+1)^2]. */
static void test_per_channel(void) {
    enum { ROWS = 500, CH = 4 };
    static float last_axis[ROWS * CH], first_axis[CH * ROWS];
    rng_state = 77;
    float lo_true[CH], hi_true[CH];
    for (int c = 0; c < CH; c++) {
        lo_true[c] = INFINITY;
        hi_true[c] = -INFINITY;
    }
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < CH; c++) {
            const float s = (float)((c + 1) * (c + 1));
            const float v = (float)((uniform01() * 3.0 - 1.0) * s);
            last_axis[r * CH + c] = first_axis[c * ROWS + r] = v;
            lo_true[c] = LB_MIN(lo_true[c], v);
            hi_true[c] = LB_MAX(hi_true[c], v);
        }
    lb_observer *a = make_observer(CH, 1, 1.0f, 1024);
    lb_observer *b = make_observer(CH, ROWS, 1.0f, 1024);
    for (int r = 0; r < ROWS; r += 100) lb_observer_observe(a, last_axis + r * CH, 100 * CH, NULL);
    lb_observer_observe(b, first_axis, CH * ROWS, NULL);
    CHECK(lb_observer_observe(a, last_axis, 3, NULL) == LOWBIT_ERR_SHAPE, "partial batch refused");
    for (int c = 0; c < CH; c++) {
        float lo_a, hi_a, lo_b, hi_b;
        range_of(a, c, LB_RANGE_MINMAX, 0, 8, &lo_a, &hi_a);
        range_of(b, c, LB_RANGE_MINMAX, 0, 8, &lo_b, &hi_b);
        CHECK(lo_a == lo_true[c] && hi_a == hi_true[c] && lo_b == lo_a && hi_b == hi_a,
              "channel %d min/max", c);
        lb_qparams qp;
        lb_qparams_symmetric(lo_a, hi_a, -128, 127, &qp, NULL);
        CHECK(qp.zero_point == 0 && qp.scale == (float)(LB_MAX(-lo_a, hi_a) / 127.0),
              "channel %d scale %g", c, qp.scale);
        range_of(a, c, LB_RANGE_PERCENTILE, 99.0, 8, &lo_a, &hi_a);
        range_of(b, c, LB_RANGE_PERCENTILE, 99.0, 8, &lo_b, &hi_b);
        const float s = (float)((c + 1) * (c + 1));
        CHECK(lo_a == lo_b && hi_a == hi_b, "channel %d percentile axis-independent", c);
        /* 99% of |x| for U[-s, 2s]: |x| > t has probability (2s - t) / 3s -> t = 1.97 s */
        CHECK(fabsf(hi_a - 1.97f * s) < 0.05f * s, "channel %d p99 %g vs %g", c, hi_a, 1.97f * s);
    }
    lb_observer_free(a);
    lb_observer_free(b);
}

/* ReLU outputs: 60% exact zeros, the rest |normal|. The zeros are exact under any affine
   quantizer, so they must not pull KL or MSE down (spread over the first quantization bin, a
   spike at zero made KL clip at a fraction of the data's range); the data are one-sided, so all
   256 levels lie on [0, T] and the thresholds sit further out than for symmetric data. */
static void test_relu_outputs(void) {
    float *x = malloc(NORMAL_N * sizeof(float));
    if (!x) {
        CHECK(0, "out of memory");
        return;
    }
    fill_normal(x, NORMAL_N);
    for (int i = 0; i < NORMAL_N; i++) x[i] = i % 5 < 3 ? 0.0f : fabsf(x[i]);
    lb_observer *obs = make_observer(1, 1, 0.1f, 2048);
    lb_observer_observe(obs, x, NORMAL_N, NULL);
    float lo, max, kl, mse, pct;
    range_of(obs, 0, LB_RANGE_MINMAX, 0, 8, &lo, &max);
    range_of(obs, 0, LB_RANGE_KL, 0, 8, &lo, &kl);
    CHECK(lo == 0.0f, "one-sided range starts at 0: %g", lo);
    range_of(obs, 0, LB_RANGE_MSE, 0, 8, &lo, &mse);
    range_of(obs, 0, LB_RANGE_PERCENTILE, 99.99, 8, &lo, &pct);
    printf("relu(normal), 60%% zeros: max %.4f  p99.99 %.4f  KL %.4f  MSE %.4f\n", max, pct, kl,
           mse);
    CHECK(kl > 3.3f && kl <= max, "KL threshold of ReLU outputs %g (max %g)", kl, max);
    CHECK(mse > 3.8f && mse <= max, "MSE threshold of ReLU outputs %g", mse);
    /* 99.99% of all values, zeros included: the 99.975th percentile of |normal| (3.66) */
    CHECK(fabsf(pct - 3.66f) < 0.08f, "percentile counts the zeros: %g", pct);
    lb_observer_free(obs);
    free(x);
}

int main(void) {
    test_minmax_uniform();
    test_relu_outputs();
    test_moving_average();
    test_histogram_methods();
    test_qparams();
    test_per_channel();
    return lb_test_summary();
}
