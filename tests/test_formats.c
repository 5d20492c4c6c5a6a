/*
 * Every format of the type table, on edge cases and random data:
 * - all-zero rows decode to exact zeros; a single huge outlier and denormal inputs give finite,
 *   sensible decodings;
 * - values too large for a format's scale are an error naming the row, never a silent Inf;
 * - NaN or Inf in the input is an error naming the row;
 * - the searching encoder is never worse than the round-to-nearest one, with or without weights;
 * - output bytes are identical whatever the number of threads;
 * - a row length that is not a multiple of the block size is refused.
 */
#include "testing.h"
#include "lowbit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N_COLS 512 /* a multiple of every block size */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double uniform(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((rng_state >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static float normal(void) {
    return (float)(sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform()));
}

typedef struct coded {
    void *bytes;
    float *decoded;
    lowbit_status status;
    lowbit_diag diag;
} coded;

static coded encode(const lowbit_type_traits *t, const float *x, int64_t n_rows,
                    const float *importance, lowbit_pool *pool, int reference) {
    coded c = {0};
    c.bytes = calloc((size_t)n_rows, lowbit_row_bytes(t->type, N_COLS));
    c.decoded = calloc((size_t)(n_rows * N_COLS), sizeof(float));
    c.status = reference ? lowbit_quantize_rows_ref(t->type, x, c.bytes, n_rows, N_COLS, pool, &c.diag)
                         : lowbit_quantize_rows(t->type, x, c.bytes, n_rows, N_COLS, importance, pool,
                                                &c.diag);
    if (c.status == LOWBIT_OK) lowbit_dequantize_rows(t->type, c.bytes, c.decoded, n_rows, N_COLS, NULL);
    return c;
}

static void release(coded *c) {
    free(c->bytes);
    free(c->decoded);
}

static int all_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return 0;
    }
    return 1;
}

static void test_zero_row(const lowbit_type_traits *t) {
    float x[N_COLS] = {0};
    for (int reference = 0; reference < 2; reference++) {
        coded c = encode(t, x, 1, NULL, NULL, reference);
        int nonzero = 0;
        for (int i = 0; i < N_COLS; i++) nonzero += c.decoded[i] != 0.0f;
        CHECK(c.status == LOWBIT_OK && nonzero == 0, "%s zero row (ref %d): %s, %d nonzero",
              t->name, reference, lowbit_status_name(c.status), nonzero);
        release(&c);
    }
}

static void test_outlier(const lowbit_type_traits *t) {
    float x[N_COLS];
    for (int i = 0; i < N_COLS; i++) x[i] = 0.01f * normal();
    x[77] = 1000.0f;
    coded c = encode(t, x, 1, NULL, NULL, 0);
    CHECK(c.status == LOWBIT_OK && all_finite(c.decoded, N_COLS), "%s outlier: %s", t->name,
          lowbit_status_name(c.status));
    CHECK(fabsf(c.decoded[77] - 1000.0f) <= 250.0f, "%s outlier decoded as %g", t->name,
          c.decoded[77]);
    release(&c);
}

static void test_denormals(const lowbit_type_traits *t) {
    float x[N_COLS];
    for (int i = 0; i < N_COLS; i++) x[i] = 1e-39f * normal(); /* float denormals */
    coded c = encode(t, x, 1, NULL, NULL, 0);
    int wild = 0;
    for (int i = 0; i < N_COLS; i++) wild += !(fabsf(c.decoded[i]) <= 1e-37f);
    CHECK(c.status == LOWBIT_OK && wild == 0, "%s denormals: %s, %d wild values", t->name,
          lowbit_status_name(c.status), wild);
    release(&c);
}

/* Row 2 holds values near the float maximum: either the format holds them (then it must decode
   them faithfully) or the encoder refuses, naming row 2. Never an Inf written silently. */
static void test_scale_overflow(const lowbit_type_traits *t) {
    static float x[4 * N_COLS];
    for (int i = 0; i < 4 * N_COLS; i++) x[i] = normal();
    for (int i = 0; i < N_COLS; i++) x[2 * N_COLS + i] = 1e30f * (i % 2 ? 1.0f : -0.5f);
    coded c = encode(t, x, 4, NULL, NULL, 0);
    if (c.status == LOWBIT_OK) {
        const float *row = c.decoded + 2 * N_COLS;
        CHECK(all_finite(c.decoded, 4 * N_COLS) && fabsf(row[1] - 1e30f) <= 0.3e30f,
              "%s accepted 1e30 but decodes it as %g", t->name, row[1]);
    } else {
        CHECK(c.status == LOWBIT_ERR_SCALE_OVERFLOW && c.diag.row == 2,
              "%s: 1e30 gives '%s' at row %lld", t->name, lowbit_status_name(c.status),
              (long long)c.diag.row);
        CHECK(strstr(c.diag.message, "row 2") != NULL, "%s message: %s", t->name, c.diag.message);
    }
    release(&c);
}

static void test_nonfinite(const lowbit_type_traits *t) {
    static float x[5 * N_COLS];
    const float bad[2] = {NAN, INFINITY};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 5 * N_COLS; i++) x[i] = normal();
        x[3 * N_COLS + 7] = bad[k];
        x[4 * N_COLS + 9] = bad[k]; /* a later bad row must not be the one reported */
        lowbit_pool *pool = NULL;
        lowbit_pool_create(2, &pool);
        coded c = encode(t, x, 5, NULL, pool, 0);
        CHECK(c.status == LOWBIT_ERR_NONFINITE && c.diag.row == 3,
              "%s with %s: '%s' at row %lld", t->name, k ? "Inf" : "NaN",
              lowbit_status_name(c.status), (long long)c.diag.row);
        release(&c);
        lowbit_pool_destroy(pool);
    }
}

static double weighted_sse(const float *x, const float *y, const float *w, int64_t n_rows) {
    double sum = 0.0;
    for (int64_t i = 0; i < n_rows * N_COLS; i++) {
        const double e = (double)x[i] - y[i];
        sum += (w ? w[i % N_COLS] : 1.0) * e * e;
    }
    return sum;
}

/* The searching encoder against round-to-nearest on random rows (normal and heavy-tailed),
   without and with importance weights; and its bytes are the same on 1, 2 and 3 threads. */
static void test_search_and_threads(const lowbit_type_traits *t) {
    enum { ROWS = 24 };
    static float x[ROWS * N_COLS], w[N_COLS];
    for (int i = 0; i < ROWS * N_COLS; i++) {
        /* the second half is Student-t with 3 degrees of freedom: normal / sqrt(chi2_3 / 3) */
        const float a = normal(), b = normal(), c = normal();
        const float chi2 = (a * a + b * b + c * c) / 3.0f;
        x[i] = i < ROWS * N_COLS / 2 ? normal() : normal() / sqrtf(chi2 + 1e-3f);
    }
    for (int i = 0; i < N_COLS; i++) w[i] = (float)(0.1 + 4.0 * uniform() * uniform());
    coded ref = encode(t, x, ROWS, NULL, NULL, 1);
    coded plain = encode(t, x, ROWS, NULL, NULL, 0);
    coded weighted = encode(t, x, ROWS, w, NULL, 0);
    CHECK(ref.status == LOWBIT_OK && plain.status == LOWBIT_OK && weighted.status == LOWBIT_OK,
          "%s random rows: %s / %s / %s", t->name, lowbit_status_name(ref.status),
          lowbit_status_name(plain.status), lowbit_status_name(weighted.status));
    const double e_ref = weighted_sse(x, ref.decoded, NULL, ROWS);
    const double e_plain = weighted_sse(x, plain.decoded, NULL, ROWS);
    const double ew_ref = weighted_sse(x, ref.decoded, w, ROWS);
    const double ew_weighted = weighted_sse(x, weighted.decoded, w, ROWS);
    CHECK(e_plain <= e_ref, "%s: search SSE %g above round-to-nearest %g", t->name, e_plain, e_ref);
    CHECK(ew_weighted <= ew_ref, "%s: weighted search %g above round-to-nearest %g", t->name,
          ew_weighted, ew_ref);
    const size_t bytes = (size_t)ROWS * lowbit_row_bytes(t->type, N_COLS);
    for (int threads = 2; threads <= 3; threads++) {
        lowbit_pool *pool = NULL;
        CHECK(lowbit_pool_create(threads, &pool) == LOWBIT_OK, "pool");
        coded again = encode(t, x, ROWS, w, pool, 0);
        CHECK(again.status == LOWBIT_OK && memcmp(again.bytes, weighted.bytes, bytes) == 0,
              "%s: bytes differ on %d threads", t->name, threads);
        release(&again);
        lowbit_pool_destroy(pool);
    }
    release(&ref);
    release(&plain);
    release(&weighted);
}

static void test_shape(const lowbit_type_traits *t) {
    if (t->block_size == 1) return;
    float x[N_COLS] = {0};
    uint8_t out[2 * N_COLS];
    lowbit_diag diag = {0};
    CHECK(lowbit_quantize_rows(t->type, x, out, 1, t->block_size + 1, NULL, NULL, &diag) ==
              LOWBIT_ERR_SHAPE, "%s accepted a partial block", t->name);
}

/* A format without an encoder says so; it is never a crash or silent garbage. */
static void test_decode_only(const lowbit_type_traits *t) {
    float x[N_COLS] = {0};
    uint8_t out[4 * N_COLS];
    lowbit_diag diag = {0};
    CHECK(lowbit_quantize_rows(t->type, x, out, 1, N_COLS, NULL, NULL, &diag) ==
              LOWBIT_ERR_UNSUPPORTED && strstr(diag.message, t->name) != NULL,
          "%s without an encoder: %s", t->name, diag.message);
    CHECK(t->dequantize != NULL && t->vec_dot != NULL, "%s decodes and multiplies", t->name);
}

int main(void) {
    CHECK(lowbit_type_count() >= 21, "the type table has %d rows", lowbit_type_count());
    for (int i = 0; i < lowbit_type_count(); i++) {
        const lowbit_type_traits *t = lowbit_type_at(i);
        CHECK(lowbit_type_info(t->type) == t, "%s: lookup by id", t->name);
        lowbit_type by_name;
        CHECK(lowbit_type_from_name(t->name, &by_name) == LOWBIT_OK && by_name == t->type,
              "%s: lookup by name", t->name);
        if (!t->quantize) {
            test_decode_only(t);
            continue;
        }
        test_zero_row(t);
        test_outlier(t);
        test_denormals(t);
        test_scale_overflow(t);
        test_nonfinite(t);
        test_search_and_threads(t);
        test_shape(t);
    }
    return lb_test_summary();
}
