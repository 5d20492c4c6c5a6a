/*
 * bench_formats: accuracy and speed of every quantized format of the type table.
 *
 * For each format, on rows x cols matrices drawn from a normal and from a Student-t (3 dof)
 * distribution (fixed seed): relative RMSE (RMSE / std of the input) of the searching encoder
 * (lowbit_quantize_rows) and of the round-to-nearest reference encoder (lowbit_quantize_rows_ref);
 * quantize and dequantize time per weight on one thread and on a pool of all cores (median of
 * --reps samples). Beside the table: the memory read bandwidth of the machine (a streaming sum
 * over a buffer far larger than the last-level cache), and how close Q8_0 / Q4_0 quantization of a
 * large tensor comes to it, since a fast encoder of a big model is bound by reading its input.
 *
 * Only the public API is used. A format whose encoder fails (not written yet, scale overflow)
 * gets "n/a" in the table and its status on stderr.
 */
#define _POSIX_C_SOURCE 200809L

#include "bench_common.h"
#include "measure.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_SEED 0x6C6F77626974ull   /* "lowbit" */
#define MIN_SAMPLE_NS 20e6              /* one timing sample lasts at least 20 ms */
#define OP_BUDGET_NS 2e9                /* a slow operation gets fewer samples beyond this */

/* ------------------------------------------------------------------------------------------ */
/* Options                                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef struct options {
    int reps;
    int64_t rows, cols;
    const char *types;       /* comma-separated filter, NULL for all */
    int json;
    int threads;
    int64_t bandwidth_mib;   /* 0 skips the bandwidth measurement */
    int64_t large_rows, large_cols; /* 0 rows skips the large-tensor test */
} options;

static void print_usage(FILE *out) {
    fprintf(out,
            "usage: bench_formats [options]\n"
            "  --reps N           timing samples per measurement, median reported (default 5)\n"
            "  --rows N           rows of the test matrices (default 256)\n"
            "  --cols N           columns of the test matrices (default 4096)\n"
            "  --types LIST       only these formats, e.g. q4_K,q6_K\n"
            "  --threads N        threads of the parallel runs (default: all cores)\n"
            "  --bandwidth-mib N  buffer of the memory bandwidth test (default: 4x the last-level\n"
            "                     cache, at least 1024; 0 skips)\n"
            "  --large-rows N     rows of the large Q8_0/Q4_0 tensor (default 4096, 0 skips)\n"
            "  --large-cols N     its columns (default 16384)\n"
            "  --json             machine-readable output\n");
}

static int parse_count(const char *text, int64_t min, int64_t max, int64_t *value) {
    if (!text) return 0;
    errno = 0;
    char *end = NULL;
    const long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end != '\0' || v < min || v > max) return 0;
    *value = v;
    return 1;
}

/* Parses argv into opt; returns 0 to go on, 1 for --help (exit 0), 2 for a bad option. */
static int parse_options(int argc, char **argv, options *opt) {
    *opt = (options){.reps = 5, .rows = 256, .cols = 4096, .threads = lowbit_cpu_count(),
                     .bandwidth_mib = measure_beyond_cache_mib(1024), .large_rows = 4096,
                     .large_cols = 16384};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t v = 0;
        int ok = 1;
        if (!strcmp(arg, "--json")) {
            opt->json = 1;
            continue;
        }
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return 1;
        if (!strcmp(arg, "--types") && next) {
            opt->types = next;
        } else if (!strcmp(arg, "--reps")) {
            ok = parse_count(next, 1, 1000, &v);
            opt->reps = (int)v;
        } else if (!strcmp(arg, "--rows")) {
            ok = parse_count(next, 1, INT64_C(1) << 24, &opt->rows);
        } else if (!strcmp(arg, "--cols")) {
            ok = parse_count(next, 1, INT64_C(1) << 24, &opt->cols);
        } else if (!strcmp(arg, "--threads")) {
            ok = parse_count(next, 1, 1024, &v);
            opt->threads = (int)v;
        } else if (!strcmp(arg, "--bandwidth-mib")) {
            ok = parse_count(next, 0, INT64_C(1) << 20, &opt->bandwidth_mib);
        } else if (!strcmp(arg, "--large-rows")) {
            ok = parse_count(next, 0, INT64_C(1) << 24, &opt->large_rows);
        } else if (!strcmp(arg, "--large-cols")) {
            ok = parse_count(next, 1, INT64_C(1) << 24, &opt->large_cols);
        } else {
            fprintf(stderr, "bench_formats: unknown option or missing value: %s\n", arg);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "bench_formats: bad value for %s: %s\n", arg, next ? next : "(none)");
            return 2;
        }
        i++; /* consumed the value */
    }
    return 0;
}

/* Whether the --types filter names t (case-insensitively, through the type table's lookup). */
static int type_selected(const char *filter, const lowbit_type_traits *t) {
    if (!filter) return 1;
    const char *p = filter;
    while (*p) {
        const size_t len = strcspn(p, ",");
        char name[32];
        if (len > 0 && len < sizeof name) {
            memcpy(name, p, len);
            name[len] = '\0';
            lowbit_type type;
            if (lowbit_type_from_name(name, &type) == LOWBIT_OK && type == t->type) return 1;
        }
        p += len + (p[len] == ',');
    }
    return 0;
}

/* Every name of the filter must be a known type: a typo should not silently measure nothing. */
static int check_type_filter(const char *filter) {
    if (!filter) return 1;
    const char *p = filter;
    while (*p) {
        const size_t len = strcspn(p, ",");
        char name[32];
        lowbit_type type;
        if (len == 0 || len >= sizeof name) {
            fprintf(stderr, "bench_formats: bad --types list: %s\n", filter);
            return 0;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        if (lowbit_type_from_name(name, &type) != LOWBIT_OK) {
            fprintf(stderr, "bench_formats: unknown type in --types: %s\n", name);
            return 0;
        }
        p += len + (p[len] == ',');
    }
    return 1;
}

/* Q8_1 and Q8_K exist only to hold quantized activations for dot products (no model stores its
   weights in them), so they are listed apart from the weight formats. Q8_0 is both. */
static int is_activation_only(const lowbit_type_traits *t) {
    return t->type == LOWBIT_TYPE_Q8_1 || t->type == LOWBIT_TYPE_Q8_K;
}

/* ------------------------------------------------------------------------------------------ */
/* Timed operations                                                                             */
/* ------------------------------------------------------------------------------------------ */

typedef struct quantize_op {
    lowbit_type type;
    const float *x;
    void *q;
    int64_t rows, cols;
    int use_reference;
    lowbit_pool *pool;
    lowbit_diag diag;
} quantize_op;

static lowbit_status run_quantize(void *p) {
    quantize_op *op = p;
    if (op->use_reference) {
        return lowbit_quantize_rows_ref(op->type, op->x, op->q, op->rows, op->cols, op->pool,
                                        &op->diag);
    }
    return lowbit_quantize_rows(op->type, op->x, op->q, op->rows, op->cols, NULL, op->pool,
                                &op->diag);
}

typedef struct dequantize_op {
    lowbit_type type;
    const void *q;
    float *dq;
    int64_t rows, cols;
    lowbit_pool *pool;
} dequantize_op;

static lowbit_status run_dequantize(void *p) {
    dequantize_op *op = p;
    return lowbit_dequantize_rows(op->type, op->q, op->dq, op->rows, op->cols, op->pool);
}

/* ------------------------------------------------------------------------------------------ */
/* Memory bandwidth                                                                             */
/* ------------------------------------------------------------------------------------------ */

typedef struct bandwidth_result {
    double gbps[2];          /* one thread, all threads; NaN when not measured */
    int64_t buffer_mib;
} bandwidth_result;

static bandwidth_result measure_bandwidth(const options *opt, lowbit_pool *pool) {
    bandwidth_result r = {{NAN, NAN}, opt->bandwidth_mib};
    if (opt->bandwidth_mib <= 0) return r;
    if (!measure_read_bandwidth(opt->bandwidth_mib, pool, opt->reps, r.gbps)) {
        fprintf(stderr, "bench_formats: cannot allocate %lld MiB for the bandwidth test\n",
                (long long)opt->bandwidth_mib);
        r.gbps[0] = r.gbps[1] = NAN;
    }
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* Per-format measurements                                                                      */
/* ------------------------------------------------------------------------------------------ */

enum { OURS = 0, REF = 1 };
enum { ONE_THREAD = 0, ALL_THREADS = 1 };

typedef struct format_result {
    const lowbit_type_traits *t;
    double rel_rmse[2][2];     /* [distribution][OURS/REF]; NaN for n/a */
    double quantize_ns[2];     /* ours, [ONE_THREAD/ALL_THREADS], per weight */
    double quantize_ref_ns;    /* reference encoder, one thread, per weight */
    double dequantize_ns[2];
    int samples;               /* fewest timing samples behind any figure of the row */
} format_result;

typedef struct workspace {
    const options *opt;
    lowbit_pool *pool;
    float *x[2];               /* [BENCH_NORMAL / BENCH_STUDENT_T3] */
    void *q;
    float *dq;
    int failure_reported[2];   /* one stderr line per encoder and format is enough */
} workspace;

static void report_failure(workspace *w, const lowbit_type_traits *t, int encoder,
                           const char *what, lowbit_status st, const lowbit_diag *diag) {
    if (encoder >= 0 && w->failure_reported[encoder]) return;
    if (encoder >= 0) w->failure_reported[encoder] = 1;
    fprintf(stderr, "bench_formats: %s: %s: %s%s%s\n", t->name, what, lowbit_status_name(st),
            diag && diag->status == st ? ": " : "", diag && diag->status == st ? diag->message : "");
}

static const char *encoder_name(int encoder) { return encoder == REF ? "reference encoder" : "encoder"; }

static double measure_rel_rmse(workspace *w, const lowbit_type_traits *t,
                               bench_distribution dist, int encoder) {
    quantize_op op = {t->type, w->x[dist], w->q, w->opt->rows, w->opt->cols, encoder == REF,
                      w->pool, {0}};
    lowbit_status st = run_quantize(&op);
    if (st != LOWBIT_OK) {
        report_failure(w, t, encoder, encoder_name(encoder), st, &op.diag);
        return NAN;
    }
    st = lowbit_dequantize_rows(t->type, w->q, w->dq, w->opt->rows, w->opt->cols, w->pool);
    if (st != LOWBIT_OK) {
        report_failure(w, t, -1, "dequantize", st, NULL);
        return NAN;
    }
    return bench_relative_rmse(w->x[dist], w->dq, w->opt->rows * w->opt->cols);
}

static int fewer(int a, int b) { return a < b ? a : b; }

/* Times one encoder on the normal matrix; leaves its encoding in w->q on success. */
static double time_quantize(workspace *w, format_result *r, int encoder, lowbit_pool *pool) {
    const int64_t weights = w->opt->rows * w->opt->cols;
    quantize_op op = {r->t->type, w->x[BENCH_NORMAL], w->q, w->opt->rows, w->opt->cols,
                      encoder == REF, pool, {0}};
    const bench_timing t =
        bench_time_op(run_quantize, &op, w->opt->reps, MIN_SAMPLE_NS, OP_BUDGET_NS);
    if (t.status != LOWBIT_OK) {
        report_failure(w, r->t, encoder, encoder_name(encoder), t.status, &op.diag);
        return NAN;
    }
    r->samples = fewer(r->samples, t.samples);
    return t.ns_per_call / (double)weights;
}

static double time_dequantize(workspace *w, format_result *r, lowbit_pool *pool) {
    const int64_t weights = w->opt->rows * w->opt->cols;
    dequantize_op op = {r->t->type, w->q, w->dq, w->opt->rows, w->opt->cols, pool};
    const bench_timing t =
        bench_time_op(run_dequantize, &op, w->opt->reps, MIN_SAMPLE_NS, OP_BUDGET_NS);
    if (t.status != LOWBIT_OK) {
        report_failure(w, r->t, -1, "dequantize", t.status, NULL);
        return NAN;
    }
    r->samples = fewer(r->samples, t.samples);
    return t.ns_per_call / (double)weights;
}

/* Dequantization needs valid blocks in w->q: the last timed encoder's, else the reference's. */
static int encoding_ready(workspace *w, const format_result *r) {
    if (!isnan(r->quantize_ns[ONE_THREAD])) return 1;
    if (isnan(r->quantize_ref_ns)) return 0;
    quantize_op op = {r->t->type, w->x[BENCH_NORMAL], w->q, w->opt->rows, w->opt->cols, 1,
                      w->pool, {0}};
    return run_quantize(&op) == LOWBIT_OK;
}

static format_result measure_format(workspace *w, const lowbit_type_traits *t) {
    format_result r = {.t = t, .samples = w->opt->reps};
    w->failure_reported[OURS] = w->failure_reported[REF] = 0;
    for (int d = 0; d < 2; d++) {
        for (int e = 0; e < 2; e++) r.rel_rmse[d][e] = measure_rel_rmse(w, t, d, e);
    }
    /* ours last, so that its encoding is what the dequantizer is timed on */
    r.quantize_ref_ns = time_quantize(w, &r, REF, NULL);
    r.quantize_ns[ALL_THREADS] = time_quantize(w, &r, OURS, w->pool);
    r.quantize_ns[ONE_THREAD] = time_quantize(w, &r, OURS, NULL);
    r.dequantize_ns[ONE_THREAD] = r.dequantize_ns[ALL_THREADS] = NAN;
    if (encoding_ready(w, &r)) {
        r.dequantize_ns[ONE_THREAD] = time_dequantize(w, &r, NULL);
        r.dequantize_ns[ALL_THREADS] = time_dequantize(w, &r, w->pool);
    }
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* Large tensor: how close quantization comes to the memory bandwidth                            */
/* ------------------------------------------------------------------------------------------ */

typedef struct large_result {
    const char *type_name;
    int encoder;
    double gbps;             /* input bytes read per second; NaN on failure */
    double fraction;         /* of the all-threads bandwidth */
} large_result;

/* Fills `results` (4 entries: Q8_0 and Q4_0, ours and reference); returns how many were run. */
static int measure_large(const options *opt, lowbit_pool *pool, const bandwidth_result *bw,
                         large_result *results) {
    if (opt->large_rows <= 0) return 0;
    const lowbit_type types[2] = {LOWBIT_TYPE_Q8_0, LOWBIT_TYPE_Q4_0};
    const int64_t n = opt->large_rows * opt->large_cols;
    float *x = malloc((size_t)n * sizeof *x);
    void *q = malloc(lowbit_row_bytes(LOWBIT_TYPE_Q8_0, opt->large_cols) *
                     (size_t)opt->large_rows);
    int count = 0;
    if (!x || !q || lowbit_row_bytes(LOWBIT_TYPE_Q4_0, opt->large_cols) == 0) {
        fprintf(stderr, "bench_formats: cannot run the large-tensor test (memory or shape)\n");
    } else {
        bench_fill_matrix(x, opt->large_rows, opt->large_cols, BENCH_NORMAL, BENCH_SEED + 2, pool);
        for (int i = 0; i < 2; i++) {
            for (int e = 0; e < 2; e++) {
                quantize_op op = {types[i], x, q, opt->large_rows, opt->large_cols, e == REF,
                                  pool, {0}};
                large_result *r = &results[count++];
                *r = (large_result){lowbit_type_info(types[i])->name, e, NAN, NAN};
                run_quantize(&op); /* warm-up: the output pages are touched once, untimed */
                const bench_timing t =
                    bench_time_op(run_quantize, &op, opt->reps, 0.0, 4.0 * OP_BUDGET_NS);
                if (t.status != LOWBIT_OK) {
                    fprintf(stderr, "bench_formats: large %s (%s): %s\n", r->type_name,
                            encoder_name(e), lowbit_status_name(t.status));
                    continue;
                }
                r->gbps = (double)n * sizeof *x / t.ns_per_call;
                r->fraction = r->gbps / bw->gbps[ALL_THREADS];
            }
        }
    }
    free(x);
    free(q);
    return count;
}

/* ------------------------------------------------------------------------------------------ */
/* Output                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* A number or "n/a", right-aligned in `width` columns. */
static void print_cell(double v, int width, int decimals) {
    if (isnan(v)) {
        printf(" %*s", width, "n/a");
    } else {
        printf(" %*.*f", width, decimals, v);
    }
}

static void print_table_header(const char *title, int threads) {
    char all[16];
    snprintf(all, sizeof all, "%d thr", threads);
    printf("\n%s\n", title);
    printf("%-13s | %-15s | %-15s | %-14s | %-7s | %-14s |\n", "", "relRMSE normal",
           "relRMSE t3", "quantize ns/w", "ref q", "dequant ns/w");
    printf("%-7s %5s | %7s %7s | %7s %7s | %6s %7s | %7s | %6s %7s | %s\n", "format", "bpw",
           "ours", "ref", "ours", "ref", "1 thr", all, "1 thr", "1 thr", all, "reps");
}

static void print_table_row(const format_result *r) {
    printf("%-7s %5.2f |", r->t->name, lowbit_bits_per_weight(r->t->type));
    print_cell(r->rel_rmse[BENCH_NORMAL][OURS], 7, 4);
    print_cell(r->rel_rmse[BENCH_NORMAL][REF], 7, 4);
    printf(" |");
    print_cell(r->rel_rmse[BENCH_STUDENT_T3][OURS], 7, 4);
    print_cell(r->rel_rmse[BENCH_STUDENT_T3][REF], 7, 4);
    printf(" |");
    print_cell(r->quantize_ns[ONE_THREAD], 6, 2);
    print_cell(r->quantize_ns[ALL_THREADS], 7, 2);
    printf(" |");
    print_cell(r->quantize_ref_ns, 7, 2);
    printf(" |");
    print_cell(r->dequantize_ns[ONE_THREAD], 6, 2);
    print_cell(r->dequantize_ns[ALL_THREADS], 7, 2);
    printf(" | %d\n", r->samples);
    fflush(stdout);
}

static void print_text_preamble(const options *opt, int threads, const bandwidth_result *bw) {
    printf("bench_formats (lowbit %s): %lld x %lld floats, normal and Student-t(3), fixed seed\n",
           LOWBIT_VERSION_STRING, (long long)opt->rows, (long long)opt->cols);
    printf("timings: median of up to %d samples, each >= %.0f ms; 1 thread and %d threads\n",
           opt->reps, MIN_SAMPLE_NS / 1e6, threads);
    printf("relRMSE = RMSE / std of the input; ours = searching encoder, ref = round-to-nearest\n");
    if (opt->bandwidth_mib > 0) {
        printf("memory read bandwidth (%lld MiB streaming sum): 1 thread %.2f GB/s, %d threads "
               "%.2f GB/s\n",
               (long long)bw->buffer_mib, bw->gbps[ONE_THREAD], threads, bw->gbps[ALL_THREADS]);
    }
    fflush(stdout);
}

static void print_large_text(const options *opt, int threads, const large_result *r, int n) {
    if (n == 0) return;
    printf("\nlarge tensor: %lld x %lld floats (%.0f MiB), %d threads, input read rate\n",
           (long long)opt->large_rows, (long long)opt->large_cols,
           (double)(opt->large_rows * opt->large_cols) * 4.0 / (1 << 20), threads);
    for (int i = 0; i < n; i++) {
        printf("  %-5s %-17s", r[i].type_name, encoder_name(r[i].encoder));
        print_cell(r[i].gbps, 7, 2);
        printf(" GB/s = ");
        print_cell(100.0 * r[i].fraction, 5, 1);
        printf(" %% of the measured bandwidth\n");
    }
}

/* A JSON number, or null for n/a. */
static void json_number(const char *key, double v, int last) {
    if (isnan(v) || isinf(v)) {
        printf("\"%s\": null%s", key, last ? "" : ", ");
    } else {
        printf("\"%s\": %.6g%s", key, v, last ? "" : ", ");
    }
}

static void print_json_format(const format_result *r, int last) {
    printf("    {\"name\": \"%s\", \"type_id\": %d, \"kind\": \"%s\", ", r->t->name,
           (int)r->t->type, is_activation_only(r->t) ? "activation" : "weight");
    json_number("bits_per_weight", lowbit_bits_per_weight(r->t->type), 0);
    json_number("rel_rmse_normal", r->rel_rmse[BENCH_NORMAL][OURS], 0);
    json_number("rel_rmse_normal_ref", r->rel_rmse[BENCH_NORMAL][REF], 0);
    json_number("rel_rmse_t3", r->rel_rmse[BENCH_STUDENT_T3][OURS], 0);
    json_number("rel_rmse_t3_ref", r->rel_rmse[BENCH_STUDENT_T3][REF], 0);
    json_number("quantize_ns_per_weight_1t", r->quantize_ns[ONE_THREAD], 0);
    json_number("quantize_ns_per_weight_nt", r->quantize_ns[ALL_THREADS], 0);
    json_number("quantize_ref_ns_per_weight_1t", r->quantize_ref_ns, 0);
    json_number("dequantize_ns_per_weight_1t", r->dequantize_ns[ONE_THREAD], 0);
    json_number("dequantize_ns_per_weight_nt", r->dequantize_ns[ALL_THREADS], 0);
    printf("\"samples\": %d}%s\n", r->samples, last ? "" : ",");
}

static void print_json(const options *opt, int threads, const bandwidth_result *bw,
                       const format_result *formats, int n_formats, const large_result *large,
                       int n_large) {
    printf("{\n  \"lowbit_version\": \"%s\", \"rows\": %lld, \"cols\": %lld, \"threads\": %d, "
           "\"reps\": %d,\n",
           LOWBIT_VERSION_STRING, (long long)opt->rows, (long long)opt->cols, threads, opt->reps);
    printf("  \"memory_bandwidth\": {\"buffer_mib\": %lld, ", (long long)bw->buffer_mib);
    json_number("gbps_1t", bw->gbps[ONE_THREAD], 0);
    json_number("gbps_nt", bw->gbps[ALL_THREADS], 1);
    printf("},\n  \"formats\": [\n");
    for (int i = 0; i < n_formats; i++) print_json_format(&formats[i], i == n_formats - 1);
    printf("  ],\n  \"large_tensor\": {\"rows\": %lld, \"cols\": %lld, \"runs\": [\n",
           (long long)opt->large_rows, (long long)opt->large_cols);
    for (int i = 0; i < n_large; i++) {
        printf("    {\"type\": \"%s\", \"encoder\": \"%s\", ", large[i].type_name,
               large[i].encoder == REF ? "reference" : "searching");
        json_number("input_gbps", large[i].gbps, 0);
        json_number("fraction_of_bandwidth", large[i].fraction, 1);
        printf("}%s\n", i == n_large - 1 ? "" : ",");
    }
    printf("  ]}\n}\n");
}

/* ------------------------------------------------------------------------------------------ */
/* Main                                                                                         */
/* ------------------------------------------------------------------------------------------ */

static int allocate_workspace(workspace *w, const options *opt, lowbit_pool *pool) {
    const size_t n = (size_t)(opt->rows * opt->cols);
    size_t max_row_bytes = 0;
    for (int i = 0; i < lowbit_type_count(); i++) {
        const size_t b = lowbit_row_bytes(lowbit_type_at(i)->type, opt->cols);
        if (b > max_row_bytes) max_row_bytes = b;
    }
    *w = (workspace){.opt = opt, .pool = pool};
    w->x[BENCH_NORMAL] = malloc(n * sizeof(float));
    w->x[BENCH_STUDENT_T3] = malloc(n * sizeof(float));
    w->dq = malloc(n * sizeof(float));
    w->q = malloc(max_row_bytes * (size_t)opt->rows + 64);
    if (!w->x[0] || !w->x[1] || !w->dq || !w->q) return 0;
    bench_fill_matrix(w->x[BENCH_NORMAL], opt->rows, opt->cols, BENCH_NORMAL, BENCH_SEED, pool);
    bench_fill_matrix(w->x[BENCH_STUDENT_T3], opt->rows, opt->cols, BENCH_STUDENT_T3,
                      BENCH_SEED + 1, pool);
    return 1;
}

static void free_workspace(workspace *w) {
    free(w->x[0]);
    free(w->x[1]);
    free(w->dq);
    free(w->q);
}

/* Measures the selected formats, weight formats first, then the activation-only ones.
   Returns how many results were written to `results`. */
static int measure_formats(workspace *w, int threads, format_result *results) {
    int n = 0;
    for (int pass = 0; pass < 2; pass++) {
        int header_printed = 0;
        for (int i = 0; i < lowbit_type_count(); i++) {
            const lowbit_type_traits *t = lowbit_type_at(i);
            if (!t->is_quantized || is_activation_only(t) != pass) continue;
            if (!type_selected(w->opt->types, t)) continue;
            if (lowbit_row_bytes(t->type, w->opt->cols) == 0) {
                fprintf(stderr, "bench_formats: %s skipped: %lld columns is not a multiple of %d\n",
                        t->name, (long long)w->opt->cols, t->block_size);
                continue;
            }
            if (!w->opt->json && !header_printed) {
                print_table_header(pass == 0 ? "weight formats"
                                             : "activation-only formats (quantized activations "
                                               "of dot products)",
                                   threads);
                header_printed = 1;
            }
            results[n] = measure_format(w, t);
            if (!w->opt->json) print_table_row(&results[n]);
            n++;
        }
    }
    return n;
}

int main(int argc, char **argv) {
    options opt;
    const int parsed = parse_options(argc, argv, &opt);
    if (parsed != 0) {
        print_usage(parsed == 1 ? stdout : stderr);
        return parsed == 1 ? 0 : 2;
    }
    if (!check_type_filter(opt.types)) return 2;

    lowbit_pool *pool = NULL;
    lowbit_status st = lowbit_pool_create(opt.threads, &pool);
    if (st != LOWBIT_OK) {
        fprintf(stderr, "bench_formats: cannot create a thread pool: %s\n",
                lowbit_status_name(st));
        return 1;
    }
    const int threads = lowbit_pool_size(pool);
    int rc = 0;
    workspace w = {0};
    format_result *results = calloc((size_t)lowbit_type_count(), sizeof *results);
    if (!results || !allocate_workspace(&w, &opt, pool)) {
        fprintf(stderr, "bench_formats: out of memory for %lld x %lld matrices\n",
                (long long)opt.rows, (long long)opt.cols);
        rc = 1;
    } else {
        const bandwidth_result bw = measure_bandwidth(&opt, pool);
        if (!opt.json) print_text_preamble(&opt, threads, &bw);
        const int n_formats = measure_formats(&w, threads, results);
        large_result large[4];
        const int n_large = measure_large(&opt, pool, &bw, large);
        if (opt.json) {
            print_json(&opt, threads, &bw, results, n_formats, large, n_large);
        } else {
            print_large_text(&opt, threads, large, n_large);
        }
    }
    free_workspace(&w);
    free(results);
    lowbit_pool_destroy(pool);
    return rc;
}
