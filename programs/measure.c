/*
 * Clock, medians, memory read bandwidth and last-level cache size (see measure.h).
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include "measure.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK_WORDS (1 << 17)   /* 1 MiB of uint64: one unit of parallel work */
#define PREFETCH_BYTES 8192     /* the GEMV kernels' distance (lib/kernels/x86/x86_common.h) */

typedef struct sum_job {
    const uint64_t *data;
    uint64_t *partials; /* one per chunk, so the threads never share a counter */
    int prefetch;
    int wide; /* sum with the widest vectors (sum_chunk_wide) */
} sum_job;

/* Eight independent chains, so the sum runs at load speed, not at add latency. */
#define SUM_CHUNK_BODY                                                                           \
    uint64_t acc[8] = {0};                                                                       \
    for (int64_t i = 0; i < CHUNK_WORDS; i += 8) {                                               \
        /* one cache line per iteration; prefetches never fault, so the last chunk's run past   \
           the buffer's end is harmless */                                                       \
        if (prefetch) __builtin_prefetch((const char *)(w + i) + PREFETCH_BYTES, 0, 2);         \
        for (int k = 0; k < 8; k++) acc[k] += w[i + k];                                          \
    }                                                                                            \
    uint64_t total = 0;                                                                          \
    for (int k = 0; k < 8; k++) total += acc[k];                                                 \
    return total;

static uint64_t sum_chunk(const uint64_t *w, int prefetch) { SUM_CHUNK_BODY }

/*
 * The same sum with the widest vector loads this CPU has (one clone per x86 level, chosen when
 * the program starts). A cache-resident buffer is read faster than SSE2's 16-byte adds can sum
 * it (on an Intel Xeon with AVX-512, a 1 MiB buffer: 30 GB/s with SSE2, 90 with AVX-512), while
 * from memory the wide loads measured 5% slower there (17.0 against 17.8 GB/s): both sums are
 * timed and the faster one counts.
 */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static uint64_t sum_chunk_wide(const uint64_t *w, int prefetch) { SUM_CHUNK_BODY }

static void sum_chunks(void *p, int64_t begin, int64_t end) {
    sum_job *job = p;
    for (int64_t c = begin; c < end; c++) {
        const uint64_t *w = job->data + c * CHUNK_WORDS;
        job->partials[c] = job->wide ? sum_chunk_wide(w, job->prefetch)
                                     : sum_chunk(w, job->prefetch);
    }
}

double measure_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double measure_median(double *values, int n) {
    qsort(values, (size_t)n, sizeof *values, compare_doubles);
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

/* Median seconds of `reps` passes over all chunks; *check collects the sums so that the reads
   cannot be optimised away. */
static double median_pass_seconds(sum_job *job, int64_t chunks, lowbit_pool *pool, int reps,
                                  uint64_t *check) {
    double samples[64];
    if (reps > 64) reps = 64;
    if (reps < 1) reps = 1;
    for (int r = 0; r < reps; r++) {
        const double start = measure_now_seconds();
        lowbit_pool_run(pool, chunks, sum_chunks, job);
        samples[r] = measure_now_seconds() - start;
        for (int64_t c = 0; c < chunks; c++) *check += job->partials[c];
    }
    return measure_median(samples, reps);
}

/* The read rates over `chunks` MiB (see measure_read_bandwidth). */
static int read_rates(int64_t chunks, lowbit_pool *pool, int reps, double gbs[2]) {
    gbs[0] = gbs[1] = 0.0;
    uint64_t *data = malloc((size_t)(chunks > 0 ? chunks : 1) * CHUNK_WORDS * sizeof *data);
    uint64_t *partials = calloc((size_t)(chunks > 0 ? chunks : 1), sizeof *partials);
    if (chunks <= 0 || !data || !partials) {
        free(data);
        free(partials);
        return 0;
    }
    memset(data, 1, (size_t)chunks * CHUNK_WORDS * sizeof *data); /* fault every page in */
    uint64_t check = 0;
    for (int threads = 0; threads < 2; threads++) {
        lowbit_pool *p = threads ? pool : NULL;
        double best = 0.0;
        for (int variant = 0; variant < 4; variant++) {
            sum_job job = {data, partials, variant & 1, variant >> 1};
            const double rate = (double)chunks * CHUNK_WORDS * sizeof *data /
                                median_pass_seconds(&job, chunks, p, reps, &check) * 1e-9;
            if (rate > best) best = rate;
        }
        gbs[threads] = best;
    }
    free(data);
    free(partials);
    /* the checksum is used, so the sums are not optimised away (every word is 0x0101...01) */
    return check != 0;
}

int measure_read_bandwidth(int64_t mib, lowbit_pool *pool, int reps, double gbs[2]) {
    return read_rates(mib, pool, reps, gbs);
}

int measure_cache_read_bandwidth(int64_t bytes, lowbit_pool *pool, int reps, double gbs[2]) {
    const int64_t mib = 1 << 20;
    return read_rates(bytes > 0 ? (bytes + mib - 1) / mib : 0, pool, reps, gbs);
}

/* "480M", "2048K" or "32768" (bytes) -> bytes; 0 when unreadable. */
static int64_t parse_cache_size(const char *s) {
    char *end = NULL;
    const long long v = strtoll(s, &end, 10);
    if (end == s || v <= 0) return 0;
    if (*end == 'K') return (int64_t)v << 10;
    if (*end == 'M') return (int64_t)v << 20;
    if (*end == 'G') return (int64_t)v << 30;
    return (int64_t)v;
}

int64_t measure_last_level_cache_bytes(void) {
    int64_t largest = 0;
    for (int i = 0; i < 16; i++) {
        char path[96], text[64] = {0};
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        const int read = fgets(text, sizeof text, f) != NULL;
        fclose(f);
        if (!read) continue;
        const int64_t bytes = parse_cache_size(text);
        if (bytes > largest) largest = bytes;
    }
    return largest;
}

int64_t measure_beyond_cache_mib(int64_t min_mib) {
    const int64_t four_caches = 4 * measure_last_level_cache_bytes() >> 20;
    return four_caches > min_mib ? four_caches : min_mib;
}
