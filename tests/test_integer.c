/*
 * Integer-arithmetic-only inference (lib/nn/integer.h): fixed-point multipliers, the
 * requantizing multiply, and the int8 linear layer.
 *
 * - lb_quantize_multiplier over thousands of log-spaced scales from 1e-10 to 1e3 (and the
 *   rounding-up edge): M0 normalized and M0 * 2^(-31-n) within 2^-31 relative of m; bad m rejected.
 * - lb_multiply_by_quantized_multiplier bit-exact against a reference written here with 64-bit
 *   integer division (a different formulation from the library's), and within 1 of round(x * M)
 *   in double, for random x plus INT32_MIN/INT32_MAX and other extremes; ties and the SQRDMULH
 *   saturation case explicitly.
 * - lb_int8_linear bit-exact against an int64 simulation of the same arithmetic, and within 1 LSB
 *   of the real-valued round(acc * M) + Z_y, for u8/i8 inputs and outputs, zero points 0 and 128
 *   (and others), no clamp / ReLU / ReLU6 (with the clamps shown to bite), at the K overflow
 *   bound, and the rejection of invalid layers.
 */
#include "testing.h"
#include "lowbit.h"
#include "nn/integer.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int32_t rng_range(int32_t lo, int32_t hi) { /* inclusive */
    return lo + (int32_t)(rng_next() % (uint64_t)((int64_t)hi - lo + 1));
}

static double rng_unit(void) { return (double)(rng_next() >> 11) * 0x1p-53; }

/* ---- reference arithmetic, with C's truncating division ------------------------------------ */

static int64_t ref_floor_div(int64_t v, int64_t d) { /* d > 0 */
    int64_t q = v / d;
    return (q * d > v) ? q - 1 : q;
}

static int32_t ref_high_mul(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    return (int32_t)ref_floor_div((int64_t)a * b + (1LL << 30), 1LL << 31);
}

static int64_t ref_round_away(int64_t v, int e) { /* round(v / 2^e), ties away from zero */
    if (e == 0) return v;
    int64_t d = (int64_t)1 << e, half = d / 2;
    return v >= 0 ? (v + half) / d : -((-v + half) / d);
}

static int32_t ref_multiply(int32_t x, int32_t m0, int shift) {
    int64_t v = x;
    if (shift < 0) {
        v *= (int64_t)1 << -shift;
        if (v > INT32_MAX) v = INT32_MAX;
        if (v < INT32_MIN) v = INT32_MIN;
    }
    return (int32_t)ref_round_away(ref_high_mul((int32_t)v, m0), shift > 0 ? shift : 0);
}

/* ---- lb_quantize_multiplier ----------------------------------------------------------------- */

static int check_one_multiplier(double m) {
    int32_t m0 = 0;
    int shift = 0;
    if (lb_quantize_multiplier(m, &m0, &shift) != LOWBIT_OK) return 0;
    double back = ldexp((double)m0, -31 - shift);
    return m0 >= (1 << 30) && m0 <= INT32_MAX && fabs(back - m) <= ldexp(m, -31);
}

static void test_quantize_multiplier(void) {
    const int count = 5000;
    int bad = 0;
    for (int i = 0; i < count; i++) {
        double m = pow(10.0, -10.0 + 13.0 * i / (count - 1));
        if (!check_one_multiplier(m)) {
            if (bad++ < 5) CHECK(0, "m = %.17g", m);
        }
    }
    CHECK(bad == 0, "%d of %d scales off", bad, count);

    /* Just below a power of two M0 rounds up to 2^31 and must be renormalized. */
    int32_t m0 = 0;
    int shift = 0;
    double below_one = nextafter(1.0, 0.0);
    CHECK(lb_quantize_multiplier(below_one, &m0, &shift) == LOWBIT_OK && m0 == (1 << 30) &&
              shift == -1,
          "1-ulp: m0 %d shift %d", (int)m0, shift);
    CHECK(lb_quantize_multiplier(0.75, &m0, &shift) == LOWBIT_OK && m0 == 0x60000000 && shift == 0,
          "0.75: m0 %d shift %d", (int)m0, shift);
    CHECK(lb_quantize_multiplier(0x1p-20, &m0, &shift) == LOWBIT_OK && m0 == (1 << 30) &&
              shift == 19,
          "2^-20: m0 %d shift %d", (int)m0, shift);
    CHECK(check_one_multiplier(ldexp(1.0, 30) * 1.9999), "near the upper limit");
    CHECK(check_one_multiplier(0x1p-62), "near the lower limit");

    const double rejected[] = {0.0, -0.5, -0.0, NAN, INFINITY, -INFINITY, 0x1p31, 1e30, 1e-30,
                               5e-324};
    for (size_t i = 0; i < sizeof rejected / sizeof rejected[0]; i++)
        CHECK(lb_quantize_multiplier(rejected[i], &m0, &shift) == LOWBIT_ERR_INVALID_ARGUMENT,
              "m = %g accepted", rejected[i]);

    /* The per-channel helper agrees with the scalar one. */
    const float weight_scales[3] = {0.01f, 0.002f, 3.5f};
    int32_t m0s[3], shifts[3];
    CHECK(lb_linear_multipliers(0.05f, weight_scales, 0.1f, 3, m0s, shifts, NULL) == LOWBIT_OK,
          "linear multipliers");
    for (int c = 0; c < 3; c++) {
        lb_quantize_multiplier(0.05f * (double)weight_scales[c] / 0.1f, &m0, &shift);
        CHECK(m0s[c] == m0 && shifts[c] == shift, "channel %d", c);
    }
    const float zero_scale[1] = {0.0f};
    lowbit_diag diag;
    memset(&diag, 0, sizeof diag);
    CHECK(lb_linear_multipliers(0.05f, zero_scale, 0.1f, 1, m0s, shifts, &diag) ==
                  LOWBIT_ERR_INVALID_ARGUMENT && diag.row == 0,
          "zero scale accepted");
}

/* ---- the requantizing multiply -------------------------------------------------------------- */

static void test_fixed_point_primitives(void) {
    CHECK(lb_saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX, "saturation");
    CHECK(lb_saturating_rounding_doubling_high_mul(1, 1 << 30) == 1, "tie +0.5 rounds up");
    CHECK(lb_saturating_rounding_doubling_high_mul(-1, 1 << 30) == 0, "tie -0.5 rounds up");
    CHECK(lb_saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX) == -INT32_MAX, "min*max");
    CHECK(lb_saturating_rounding_doubling_high_mul(INT32_MAX, INT32_MAX) == INT32_MAX - 1, "max*max");
    const int32_t divide_cases[][3] = {{3, 1, 2},   {-3, 1, -2},  {5, 2, 1},   {-5, 2, -1},
                                       {6, 2, 2},   {-6, 2, -2},  {-7, 2, -2}, {7, 0, 7},
                                       {INT32_MIN, 31, -1}, {INT32_MAX, 31, 1}, {INT32_MIN, 32, -1},
                                       {INT32_MAX, 32, 0},  {-1, 62, 0}};
    for (size_t i = 0; i < sizeof divide_cases / sizeof divide_cases[0]; i++) {
        int32_t got = lb_rounding_divide_by_pot(divide_cases[i][0], divide_cases[i][1]);
        CHECK(got == divide_cases[i][2], "%d / 2^%d = %d, want %d", (int)divide_cases[i][0],
              (int)divide_cases[i][1], (int)got, (int)divide_cases[i][2]);
    }
}

static void test_multiply_by_quantized_multiplier(void) {
    const int m_count = lb_test_quick() ? 60 : 240, x_count = 2000;
    int32_t xs[2000];
    const int32_t extremes[] = {INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1, 0, 1, -1,
                                2, -2, 1 << 30, -(1 << 30), 65535, -65536, 12345678, -12345678};
    const int n_extremes = (int)(sizeof extremes / sizeof extremes[0]);
    for (int i = 0; i < x_count; i++) {
        if (i < n_extremes) xs[i] = extremes[i];
        else if (i % 3 == 0) xs[i] = (int32_t)(uint32_t)rng_next();           /* full range */
        else if (i % 3 == 1) xs[i] = rng_range(-(1 << 20), 1 << 20);           /* accumulators */
        else xs[i] = (int32_t)((int64_t)(int32_t)(uint32_t)rng_next() >> rng_range(0, 30));
    }
    int mismatches = 0, far = 0, checked_real = 0;
    for (int j = 0; j < m_count; j++) {
        double m = pow(10.0, -10.0 + 13.0 * j / (m_count - 1));
        if (j == 0) m = 0.5;
        if (j == 1) m = 1.0;
        if (j == 2) m = 0.999999999;
        int32_t m0;
        int shift;
        if (lb_quantize_multiplier(m, &m0, &shift) != LOWBIT_OK) {
            CHECK(0, "m %g", m);
            continue;
        }
        double quantized_m = ldexp((double)m0, -31 - shift);
        for (int i = 0; i < x_count; i++) {
            int32_t x = xs[i];
            int32_t got = lb_multiply_by_quantized_multiplier(x, m0, shift);
            if (got != ref_multiply(x, m0, shift) && mismatches++ < 5)
                CHECK(0, "x %d m0 %d shift %d: %d vs %d", (int)x, (int)m0, shift, (int)got,
                      (int)ref_multiply(x, m0, shift));
            /* Against the real product, where no saturation is involved. */
            double real = (double)x * quantized_m;
            double pre_shift = shift < 0 ? ldexp((double)x, -shift) : (double)x;
            if (fabs(pre_shift) > 2147483647.0 || fabs(real) > 2147483647.0) continue;
            checked_real++;
            double err_q = fabs((double)got - round(real));
            double err_m = fabs((double)got - round((double)x * m));
            /* 1 for the two roundings; vs the unquantized m also M's own 2^-31 relative error. */
            if ((err_q > 1.0 || err_m > 1.0 + fabs((double)x * m) * 0x1p-31) && far++ < 5)
                CHECK(0, "x %d m %.17g: got %d, real %.3f", (int)x, m, (int)got, (double)x * m);
        }
    }
    CHECK(mismatches == 0, "%d mismatches against the 64-bit reference", mismatches);
    CHECK(far == 0, "%d results more than 1 from round(x * M)", far);
    CHECK(checked_real > m_count * x_count / 2, "only %d real comparisons", checked_real);
}

/* ---- lb_int8_linear ------------------------------------------------------------------------- */

typedef struct linear_case {
    int64_t rows, k, n;
    lb_qtype in_type, out_type;
    int32_t in_zp, out_zp;
    int activation; /* 0 none, 1 ReLU, 2 ReLU6 */
} linear_case;

static int32_t load_q(lb_qtype t, const void *p, int64_t i) {
    return t == LB_QTYPE_U8 ? ((const uint8_t *)p)[i] : ((const int8_t *)p)[i];
}

static void run_linear_case(const linear_case *lc) {
    const int64_t rows = lc->rows, k = lc->k, n = lc->n;
    int32_t in_lo = lc->in_type == LB_QTYPE_U8 ? 0 : -128, out_lo = lc->out_type == LB_QTYPE_U8 ? 0 : -128;
    int32_t out_hi = out_lo + 255;
    void *input = malloc((size_t)(rows * k));
    int8_t *weights = malloc((size_t)(n * k));
    int32_t *sums = malloc(sizeof(int32_t) * (size_t)n), *bias = malloc(sizeof(int32_t) * (size_t)n);
    int32_t *m0 = malloc(sizeof(int32_t) * (size_t)n), *shift = malloc(sizeof(int32_t) * (size_t)n);
    double *real_m = malloc(sizeof(double) * (size_t)n);
    int64_t *acc = malloc(sizeof(int64_t) * (size_t)(rows * n));
    void *output = malloc((size_t)(rows * n));
    for (int64_t i = 0; i < rows * k; i++) {
        int32_t v = rng_range(in_lo, in_lo + 255);
        if (lc->in_type == LB_QTYPE_U8) ((uint8_t *)input)[i] = (uint8_t)v;
        else ((int8_t *)input)[i] = (int8_t)v;
    }
    for (int64_t i = 0; i < n * k; i++) weights[i] = (int8_t)rng_range(-128, 127);
    for (int64_t c = 0; c < n; c++) bias[c] = rng_range(-(1 << 16), 1 << 16) * (int32_t)(k > 16 ? 8 : 1);
    lb_int8_weight_sums(weights, n, k, sums);

    /* Exact accumulators, then a multiplier per channel spreading outputs over about +-150 so
       the output range and the clamps are reached. */
    for (int64_t c = 0; c < n; c++) {
        int64_t wsum = 0, maxabs = 1;
        for (int64_t kk = 0; kk < k; kk++) wsum += weights[c * k + kk];
        CHECK(wsum == sums[c], "weight sum %lld", (long long)c);
        for (int64_t r = 0; r < rows; r++) {
            int64_t a = bias[c];
            for (int64_t kk = 0; kk < k; kk++)
                a += (int64_t)(load_q(lc->in_type, input, r * k + kk) - lc->in_zp) * weights[c * k + kk];
            acc[r * n + c] = a;
            if (llabs(a) > maxabs) maxabs = llabs(a);
        }
        real_m[c] = 150.0 / (double)maxabs * (0.5 + rng_unit());
        int s = 0;
        CHECK(lb_quantize_multiplier(real_m[c], &m0[c], &s) == LOWBIT_OK, "m %g", real_m[c]);
        shift[c] = s;
    }
    int32_t qmin = out_lo, qmax = out_hi;
    if (lc->activation >= 1) qmin = lc->out_zp;
    if (lc->activation == 2) { /* six real units at S_y = 6/100 */
        qmax = lc->out_zp + 100 < out_hi ? lc->out_zp + 100 : out_hi;
    }
    lb_int8_linear_layer layer = {
        .in_features = k, .out_features = n, .weights = weights, .weight_sums = sums, .bias = bias,
        .multiplier = m0, .shift = shift, .input_type = lc->in_type, .output_type = lc->out_type,
        .input_zero_point = lc->in_zp, .output_zero_point = lc->out_zp, .output_min = qmin,
        .output_max = qmax};
    lowbit_diag diag;
    memset(&diag, 0, sizeof diag);
    lowbit_status st = lb_int8_linear(&layer, input, rows, output, &diag);
    CHECK(st == LOWBIT_OK, "status %d: %s", (int)st, diag.message);
    int exact_bad = 0, real_bad = 0, clamped_low = 0, clamped_high = 0, in_range = 0;
    for (int64_t r = 0; r < rows && st == LOWBIT_OK; r++) {
        for (int64_t c = 0; c < n; c++) {
            int64_t a = acc[r * n + c];
            int32_t got = load_q(lc->out_type, output, r * n + c);
            int64_t fixed = (int64_t)ref_multiply((int32_t)a, m0[c], shift[c]) + lc->out_zp;
            int64_t want = fixed < qmin ? qmin : fixed > qmax ? qmax : fixed;
            double real = round((double)a * real_m[c]) + lc->out_zp;
            double real_clamped = real < qmin ? qmin : real > qmax ? qmax : real;
            clamped_low += fixed < qmin;
            clamped_high += fixed > qmax;
            in_range += fixed >= qmin && fixed <= qmax;
            if (got != want && exact_bad++ < 3)
                CHECK(0, "row %lld ch %lld: %d, want %lld", (long long)r, (long long)c, (int)got,
                      (long long)want);
            if (fabs(got - real_clamped) > 1.0 && real_bad++ < 3)
                CHECK(0, "row %lld ch %lld: %d, real %.2f", (long long)r, (long long)c, (int)got,
                      real_clamped);
            if (got < qmin || got > qmax) CHECK(0, "outside the clamp: %d", (int)got);
        }
    }
    CHECK(exact_bad == 0 && real_bad == 0, "k %lld n %lld zp %d/%d act %d: %d inexact, %d off",
          (long long)k, (long long)n, (int)lc->in_zp, (int)lc->out_zp, lc->activation, exact_bad,
          real_bad);
    CHECK(in_range > 0, "nothing inside the clamp");
    if (lc->activation >= 1 && rows * n >= 32)
        CHECK(clamped_low > 0, "ReLU never clamped (act %d)", lc->activation);
    if (lc->activation == 2 && rows * n >= 32 && lc->out_zp + 100 < out_hi)
        CHECK(clamped_high > 0, "ReLU6 never clamped at six");
    free(input); free(weights); free(sums); free(bias); free(m0); free(shift); free(real_m);
    free(acc); free(output);
}

static void test_linear_cases(void) {
    const int64_t ks[] = {1, 7, 64, 257, 1000};
    const linear_case base[] = {
        {4, 0, 0, LB_QTYPE_U8, LB_QTYPE_U8, 0, 0, 0},
        {4, 0, 0, LB_QTYPE_U8, LB_QTYPE_U8, 128, 128, 0},
        {4, 0, 0, LB_QTYPE_U8, LB_QTYPE_U8, 128, 128, 1},
        {4, 0, 0, LB_QTYPE_U8, LB_QTYPE_U8, 0, 0, 2},
        {4, 0, 0, LB_QTYPE_U8, LB_QTYPE_U8, 128, 128, 2},
        {4, 0, 0, LB_QTYPE_U8, LB_QTYPE_I8, 37, -5, 1},
        {4, 0, 0, LB_QTYPE_I8, LB_QTYPE_I8, 0, 0, 0},
        {4, 0, 0, LB_QTYPE_I8, LB_QTYPE_U8, -128, 128, 2},
        {4, 0, 0, LB_QTYPE_I8, LB_QTYPE_I8, 127, -128, 1},
        {4, 0, 0, LB_QTYPE_U8, LB_QTYPE_U8, 255, 3, 0},
    };
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        for (size_t b = 0; b < sizeof base / sizeof base[0]; b++) {
            linear_case lc = base[b];
            lc.k = ks[ki];
            lc.n = 9 + (int64_t)b;
            run_linear_case(&lc);
        }
    }
}

/* The accumulator bound: K = LB_INT8_LINEAR_MAX_K with every term at +-255 * 128. */
static void test_linear_overflow_bound(void) {
    const int64_t k = LB_INT8_LINEAR_MAX_K;
    uint8_t *input = malloc((size_t)(2 * k));
    int8_t *weights = malloc((size_t)(2 * k));
    for (int64_t i = 0; i < k; i++) {
        input[i] = 255;          /* row 0 */
        input[k + i] = 0;        /* row 1 */
        weights[i] = -128;       /* channel 0 */
        weights[k + i] = 127;    /* channel 1 */
    }
    int32_t sums[2], m0[2], shift[2];
    lb_int8_weight_sums(weights, 2, k, sums);
    for (int c = 0; c < 2; c++) {
        int s;
        lb_quantize_multiplier(0x1p-24, &m0[c], &s);
        shift[c] = s;
    }
    const int32_t zero_points[2] = {0, 255};
    for (int z = 0; z < 2; z++) {
        lb_int8_linear_layer layer = {
            .in_features = k, .out_features = 2, .weights = weights, .weight_sums = sums,
            .multiplier = m0, .shift = shift, .input_type = LB_QTYPE_U8,
            .output_type = LB_QTYPE_I8, .input_zero_point = zero_points[z],
            .output_zero_point = 0, .output_min = -128, .output_max = 127};
        int8_t out[4];
        CHECK(lb_int8_linear(&layer, input, 2, out, NULL) == LOWBIT_OK, "bound K");
        for (int r = 0; r < 2; r++) {
            for (int c = 0; c < 2; c++) {
                int64_t a = (int64_t)((r == 0 ? 255 : 0) - zero_points[z]) * (c == 0 ? -128 : 127) * k;
                CHECK(a >= INT32_MIN && a <= INT32_MAX, "bound itself");
                int64_t want = ref_multiply((int32_t)a, m0[c], shift[c]);
                want = want < -128 ? -128 : want > 127 ? 127 : want;
                CHECK(out[r * 2 + c] == want, "zp %d row %d ch %d: %d want %lld",
                      (int)zero_points[z], r, c, (int)out[r * 2 + c], (long long)want);
            }
        }
        layer.in_features = k + 1;
        CHECK(lb_int8_linear(&layer, input, 1, out, NULL) == LOWBIT_ERR_SHAPE, "K above the bound");
    }
    free(input);
    free(weights);
}

static void test_linear_rejects(void) {
    int8_t w[4] = {1, 2, 3, 4};
    int32_t sums[2] = {3, 7}, m0[2] = {1 << 30, 1 << 30}, shift[2] = {3, 3};
    uint8_t in[2] = {1, 2}, out[2];
    const lb_int8_linear_layer good = {
        .in_features = 2, .out_features = 2, .weights = w, .weight_sums = sums, .multiplier = m0,
        .shift = shift, .input_type = LB_QTYPE_U8, .output_type = LB_QTYPE_U8,
        .input_zero_point = 128, .output_zero_point = 128, .output_min = 0, .output_max = 255};
    CHECK(lb_int8_linear(&good, in, 1, out, NULL) == LOWBIT_OK, "good layer");
    lb_int8_linear_layer l = good;
    l.input_zero_point = 256;
    CHECK(lb_int8_linear(&l, in, 1, out, NULL) == LOWBIT_ERR_INVALID_ARGUMENT, "u8 zp 256");
    l = good;
    l.output_type = LB_QTYPE_I8;
    CHECK(lb_int8_linear(&l, in, 1, out, NULL) == LOWBIT_ERR_INVALID_ARGUMENT, "i8 zp 128");
    l = good;
    l.output_min = 200;
    l.output_max = 100;
    CHECK(lb_int8_linear(&l, in, 1, out, NULL) == LOWBIT_ERR_INVALID_ARGUMENT, "empty clamp");
    int32_t bad_m0[2] = {1 << 30, (1 << 30) - 1};
    l = good;
    l.multiplier = bad_m0;
    lowbit_diag diag;
    memset(&diag, 0, sizeof diag);
    CHECK(lb_int8_linear(&l, in, 1, out, &diag) == LOWBIT_ERR_INVALID_ARGUMENT && diag.row == 1,
          "unnormalized m0");
    int32_t bad_shift[2] = {3, 63};
    l = good;
    l.shift = bad_shift;
    CHECK(lb_int8_linear(&l, in, 1, out, NULL) == LOWBIT_ERR_INVALID_ARGUMENT, "shift 63");
    l = good;
    l.in_features = 0;
    CHECK(lb_int8_linear(&l, in, 1, out, NULL) == LOWBIT_ERR_SHAPE, "K 0");
    CHECK(lb_int8_linear(&good, NULL, 1, out, NULL) == LOWBIT_ERR_INVALID_ARGUMENT, "NULL input");
    CHECK(lb_int8_linear(NULL, in, 1, out, NULL) == LOWBIT_ERR_INVALID_ARGUMENT, "NULL layer");
}

int main(void) {
    test_quantize_multiplier();
    test_fixed_point_primitives();
    test_multiply_by_quantized_multiplier();
    test_linear_cases();
    test_linear_overflow_bound();
    test_linear_rejects();
    return lb_test_summary();
}
