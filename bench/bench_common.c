/* Helpers shared by the benchmarks (see bench_common.h). */

#include "bench_common.h"
#include "measure.h"

#include <math.h>
#include <stdlib.h>

#define BENCH_TWO_PI 6.283185307179586476925286766559

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void bench_rng_seed(bench_rng *rng, uint64_t seed) {
    uint64_t state = seed;
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&state);
    rng->has_spare = 0;
    rng->spare = 0.0;
}

static uint64_t rotate_left(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t bench_rng_next(bench_rng *rng) {
    uint64_t *s = rng->s;
    const uint64_t result = rotate_left(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotate_left(s[3], 45);
    return result;
}

double bench_rng_uniform(bench_rng *rng) {
    /* the top 53 bits plus half a step: exactly representable, strictly inside (0, 1) */
    return ((double)(bench_rng_next(rng) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

double bench_rng_normal(bench_rng *rng) {
    if (rng->has_spare) {
        rng->has_spare = 0;
        return rng->spare;
    }
    const double radius = sqrt(-2.0 * log(bench_rng_uniform(rng)));
    const double angle = BENCH_TWO_PI * bench_rng_uniform(rng);
    rng->spare = radius * sin(angle);
    rng->has_spare = 1;
    return radius * cos(angle);
}

double bench_rng_student_t3(bench_rng *rng) {
    const double z = bench_rng_normal(rng);
    double chi2 = 0.0;
    for (int i = 0; i < 3; i++) {
        const double g = bench_rng_normal(rng);
        chi2 += g * g;
    }
    return z / sqrt(chi2 / 3.0);
}

const char *bench_distribution_name(bench_distribution dist) {
    return dist == BENCH_STUDENT_T3 ? "student_t3" : "normal";
}

typedef struct fill_job {
    float *x;
    int64_t cols;
    bench_distribution dist;
    uint64_t seed;
} fill_job;

static void fill_rows(void *p, int64_t begin, int64_t end) {
    const fill_job *job = p;
    for (int64_t r = begin; r < end; r++) {
        bench_rng rng;
        bench_rng_seed(&rng, job->seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(r + 1)));
        float *row = job->x + r * job->cols;
        for (int64_t c = 0; c < job->cols; c++) {
            row[c] = (float)(job->dist == BENCH_STUDENT_T3 ? bench_rng_student_t3(&rng)
                                                           : bench_rng_normal(&rng));
        }
    }
}

void bench_fill_matrix(float *x, int64_t rows, int64_t cols, bench_distribution dist,
                       uint64_t seed, lowbit_pool *pool) {
    fill_job job = {x, cols, dist, seed};
    lowbit_pool_run(pool, rows, fill_rows, &job);
}

double bench_now_ns(void) { return measure_now_seconds() * 1e9; }

double bench_median(double *values, int n) { return n > 0 ? measure_median(values, n) : NAN; }

double bench_relative_rmse(const float *a, const float *b, int64_t n) {
    if (n <= 0) return NAN;
    double mean = 0.0;
    for (int64_t i = 0; i < n; i++) mean += a[i];
    mean /= (double)n;
    double var = 0.0, err = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double centred = a[i] - mean;
        const double diff = (double)a[i] - (double)b[i];
        var += centred * centred;
        err += diff * diff;
    }
    return var > 0.0 ? sqrt(err / var) : NAN;
}

/* Runs op `calls` times; the time of all of them, or a negative value on failure. */
static double run_sample(bench_op_fn op, void *ctx, int64_t calls, lowbit_status *status) {
    const double start = bench_now_ns();
    for (int64_t i = 0; i < calls; i++) {
        *status = op(ctx);
        if (*status != LOWBIT_OK) return -1.0;
    }
    return bench_now_ns() - start;
}

#define BENCH_MAX_SAMPLES 1000

bench_timing bench_time_op(bench_op_fn op, void *ctx, int reps, double min_sample_ns,
                           double budget_ns) {
    bench_timing result = {LOWBIT_OK, NAN, 0};
    if (reps < 1) reps = 1;
    if (reps > BENCH_MAX_SAMPLES) reps = BENCH_MAX_SAMPLES;
    double per_call[BENCH_MAX_SAMPLES];

    /* The first call calibrates; it counts as a sample when it is already long enough. */
    const double first = run_sample(op, ctx, 1, &result.status);
    if (first < 0.0) return result;
    int64_t calls = 1;
    if (first >= min_sample_ns) {
        per_call[result.samples++] = first;
    } else {
        calls = (int64_t)ceil(min_sample_ns / (first > 1.0 ? first : 1.0));
    }
    const double sample_ns = first * (double)calls;
    int wanted = (int)fmin((double)reps, floor(budget_ns / fmax(sample_ns, 1.0)));
    if (wanted < 1) wanted = 1;

    while (result.samples < wanted) {
        const double t = run_sample(op, ctx, calls, &result.status);
        if (t < 0.0) return result;
        per_call[result.samples++] = t / (double)calls;
    }
    result.ns_per_call = bench_median(per_call, result.samples);
    return result;
}
