/*
 * Helpers shared by the benchmarks: a small seeded random generator (so every run measures the
 * same numbers), test matrices filled in parallel but independently of the thread count, a
 * monotonic clock, medians and a timing loop that repeats fast operations until one sample is
 * long enough to measure.
 */
#ifndef LOWBIT_BENCH_COMMON_H
#define LOWBIT_BENCH_COMMON_H

#include "lowbit.h"

#include <stddef.h>
#include <stdint.h>

/* xoshiro256** (Blackman & Vigna), seeded through splitmix64 as its authors recommend. */
typedef struct bench_rng {
    uint64_t s[4];
    int has_spare;   /* Box-Muller makes normals in pairs: the second one waits here */
    double spare;
} bench_rng;

void bench_rng_seed(bench_rng *rng, uint64_t seed);
uint64_t bench_rng_next(bench_rng *rng);
/* Uniform in the open interval (0, 1): never 0, so log() of it is finite. */
double bench_rng_uniform(bench_rng *rng);
/* Standard normal by the Box-Muller transform. */
double bench_rng_normal(bench_rng *rng);
/* Student-t with 3 degrees of freedom: normal / sqrt(chi2_3 / 3), chi2_3 a sum of 3 squared
   normals. Heavy tails (finite variance 3), like real weight matrices with outliers. */
double bench_rng_student_t3(bench_rng *rng);

typedef enum bench_distribution {
    BENCH_NORMAL,
    BENCH_STUDENT_T3,
} bench_distribution;

const char *bench_distribution_name(bench_distribution dist);

/* Fills a rows x cols matrix; row r comes from its own generator seeded by (seed, r), so the
   content does not depend on the pool's size. pool may be NULL. */
void bench_fill_matrix(float *x, int64_t rows, int64_t cols, bench_distribution dist,
                       uint64_t seed, lowbit_pool *pool);

/* Nanoseconds of CLOCK_MONOTONIC. */
double bench_now_ns(void);

/* Median of n values (sorts them in place); NaN for n == 0. */
double bench_median(double *values, int n);

/* Root mean square of (a - b) divided by the standard deviation of a. */
double bench_relative_rmse(const float *a, const float *b, int64_t n);

/* An operation to time: returns LOWBIT_OK or the status that stopped it. */
typedef lowbit_status (*bench_op_fn)(void *ctx);

typedef struct bench_timing {
    lowbit_status status;    /* the first failure of the operation, LOWBIT_OK else */
    double ns_per_call;      /* median over the samples; NaN on failure */
    int samples;             /* samples taken (fewer than asked for a slow operation) */
} bench_timing;

/*
 * Times op: `reps` samples, each running op often enough to last at least min_sample_ns (a
 * microsecond-long call cannot be timed alone), and returns the median time of one call. A slow
 * operation gets fewer samples so that all of them together stay near budget_ns (at least one).
 */
bench_timing bench_time_op(bench_op_fn op, void *ctx, int reps, double min_sample_ns,
                           double budget_ns);

#endif /* LOWBIT_BENCH_COMMON_H */
