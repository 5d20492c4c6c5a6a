/*
 * Tensor-level entry points: quantize, dequantize and dot over many rows, threaded over row
 * ranges. Inputs are validated here once, so the per-format row functions can assume finite data
 * and whole blocks.
 */
#include "blocks.h"

#include <stdlib.h>

/* The first failure inside one thread's range of rows. */
typedef struct range_failure {
    lowbit_status status;
    int64_t row;
    int64_t column; /* the non-finite element, for LOWBIT_ERR_NONFINITE */
} range_failure;

typedef struct quantize_job {
    lowbit_quantize_row_fn quantize;
    const float *src;
    uint8_t *dst;
    int64_t n_per_row;
    size_t row_bytes;
    const float *importance;
    /* indexed by the first row of a range: each range writes only its own slot, and scanning the
       slots in order finds the lowest failing row, whatever the thread count */
    range_failure *failures;
} quantize_job;

/* The index of the first NaN or Inf, or -1. The common case (none) is one branch-free pass that
   the compiler vectorizes: a float is non-finite exactly when its exponent bits are all ones. */
static int64_t first_nonfinite(const float *x, int64_t n) {
    uint32_t any = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits); /* no aliasing of float as uint32_t */
        any |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (!any) return -1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return i;
    }
    return -1;
}

static void quantize_range(void *p, int64_t begin, int64_t end) {
    const quantize_job *job = p;
    for (int64_t r = begin; r < end; r++) {
        const float *row = job->src + r * job->n_per_row;
        const int64_t bad = first_nonfinite(row, job->n_per_row);
        const lowbit_status st =
            bad >= 0 ? LOWBIT_ERR_NONFINITE
                     : job->quantize(row, job->dst + (size_t)r * job->row_bytes, job->n_per_row,
                                     job->importance);
        if (st != LOWBIT_OK) {
            job->failures[begin] = (range_failure){st, r, bad};
            return; /* later rows of this range cannot be the first failure */
        }
    }
}

static lowbit_status check_quantize_args(const lowbit_type_traits *t, lowbit_type type,
                                         const float *src, const void *dst, int64_t n_rows,
                                         int64_t n_per_row, const float *importance,
                                         lowbit_diag *diag) {
    if (!t) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "unknown type id %d",
                           (int)type);
    }
    if (!src || !dst || n_rows < 0 || n_per_row <= 0) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "bad arguments to quantize %s", t->name);
    }
    if (!t->quantize || !t->quantize_ref) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "%s can be decoded but not encoded yet", t->name);
    }
    if (n_per_row % t->block_size != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "row length %lld is not a multiple of %s's block size %d",
                           (long long)n_per_row, t->name, t->block_size);
    }
    for (int64_t i = 0; importance && i < n_per_row; i++) {
        if (!isfinite(importance[i]) || importance[i] < 0.0f) {
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                               "importance weight %lld is negative or not finite", (long long)i);
        }
    }
    return LOWBIT_OK;
}

static lowbit_status report_failure(const range_failure *f, const char *type_name,
                                    lowbit_diag *diag) {
    if (f->status == LOWBIT_ERR_NONFINITE) {
        return lb_diag_set(diag, f->status, f->row, UINT64_MAX,
                           "row %lld holds NaN or Inf (column %lld)", (long long)f->row,
                           (long long)f->column);
    }
    if (f->status == LOWBIT_ERR_SCALE_OVERFLOW) {
        return lb_diag_set(diag, f->status, f->row, UINT64_MAX,
                           "row %lld: a block scale of %s would overflow its storage type "
                           "(values too large for the format)",
                           (long long)f->row, type_name);
    }
    return lb_diag_set(diag, f->status, f->row, UINT64_MAX, "row %lld: %s cannot be quantized: %s",
                       (long long)f->row, type_name, lowbit_status_name(f->status));
}

static lowbit_status quantize_rows_using(lowbit_type type, int use_reference, const float *src,
                                         void *dst, int64_t n_rows, int64_t n_per_row,
                                         const float *importance, lowbit_pool *pool,
                                         lowbit_diag *diag) {
    const lowbit_type_traits *t = lowbit_type_info(type);
    lowbit_status st =
        check_quantize_args(t, type, src, dst, n_rows, n_per_row, importance, diag);
    if (st != LOWBIT_OK || n_rows == 0) return st;
    range_failure *failures = calloc((size_t)n_rows, sizeof *failures);
    if (!failures) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    quantize_job job = {.quantize = use_reference ? t->quantize_ref : t->quantize,
                        .src = src,
                        .dst = dst,
                        .n_per_row = n_per_row,
                        .row_bytes = lowbit_row_bytes(type, n_per_row),
                        .importance = importance,
                        .failures = failures};
    lowbit_pool_run(pool, n_rows, quantize_range, &job);
    for (int64_t r = 0; r < n_rows && st == LOWBIT_OK; r++) {
        if (failures[r].status != LOWBIT_OK) st = report_failure(&failures[r], t->name, diag);
    }
    free(failures);
    return st;
}

lowbit_status lowbit_quantize_rows(lowbit_type type, const float *src, void *dst, int64_t n_rows,
                                   int64_t n_per_row, const float *importance, lowbit_pool *pool,
                                   lowbit_diag *diag) {
    return quantize_rows_using(type, 0, src, dst, n_rows, n_per_row, importance, pool, diag);
}

lowbit_status lowbit_quantize_rows_ref(lowbit_type type, const float *src, void *dst,
                                       int64_t n_rows, int64_t n_per_row, lowbit_pool *pool,
                                       lowbit_diag *diag) {
    return quantize_rows_using(type, 1, src, dst, n_rows, n_per_row, NULL, pool, diag);
}

typedef struct dequantize_job {
    lowbit_dequantize_row_fn dequantize;
    const uint8_t *src;
    float *dst;
    int64_t n_per_row;
    size_t row_bytes;
} dequantize_job;

static void dequantize_range(void *p, int64_t begin, int64_t end) {
    const dequantize_job *job = p;
    for (int64_t r = begin; r < end; r++) {
        job->dequantize(job->src + (size_t)r * job->row_bytes, job->dst + r * job->n_per_row,
                        job->n_per_row);
    }
}

lowbit_status lowbit_dequantize_rows(lowbit_type type, const void *src, float *dst,
                                     int64_t n_rows, int64_t n_per_row, lowbit_pool *pool) {
    const lowbit_type_traits *t = lowbit_type_info(type);
    if (!t || !src || !dst || n_rows < 0 || n_per_row <= 0) return LOWBIT_ERR_INVALID_ARGUMENT;
    if (n_per_row % t->block_size != 0) return LOWBIT_ERR_SHAPE;
    dequantize_job job = {t->dequantize, src, dst, n_per_row, lowbit_row_bytes(type, n_per_row)};
    lowbit_pool_run(pool, n_rows, dequantize_range, &job);
    return LOWBIT_OK;
}

lowbit_status lowbit_dot_row(lowbit_type type, int64_t n, const void *weights,
                             const float *activations, float *result) {
    const lowbit_type_traits *t = lowbit_type_info(type);
    if (!t || !weights || !activations || !result || n <= 0) return LOWBIT_ERR_INVALID_ARGUMENT;
    if (!t->vec_dot) return LOWBIT_ERR_UNSUPPORTED;
    const lowbit_type_traits *act = lowbit_type_info(t->vec_dot_type);
    if (n % t->block_size != 0 || n % act->block_size != 0) return LOWBIT_ERR_SHAPE;
    void *quantized = malloc(lowbit_row_bytes(act->type, n));
    if (!quantized) return LOWBIT_ERR_NO_MEMORY;
    lowbit_status st = act->quantize_ref(activations, quantized, n, NULL);
    if (st == LOWBIT_OK) *result = t->vec_dot(n, weights, quantized);
    free(quantized);
    return st;
}
