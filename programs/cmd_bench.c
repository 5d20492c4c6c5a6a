/*
 * `lowbit bench`: matrix-vector (GEMV) and small matrix-matrix (GEMM) speed of every format, with
 * the fastest kernels of this CPU (lowbit_matmul) beside the scalar reference of the type table
 * (its vec_dot, run by a plain loop here), measured in the same run so that the ratio holds on a
 * noisy machine. bench/bench_gemv.c builds the same code as its own program.
 *
 * Per format, on a rows x cols matrix (default 4096 x 4096) of normal weights encoded by the
 * reference encoder; the formats that lowbit decodes but does not encode (IQ1_S, IQ1_M, IQ2_XXS,
 * IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) get a synthetic matrix of random valid blocks instead, marked
 * "*" in the table and "weights": "synthetic" in the JSON (only speed is measured):
 *   - GEMV on one thread and on all cores, median time of --reps calls, as GFLOP/s-equivalent
 *     (2 rows cols / time) and weight bytes read per second;
 *     warm: repeated on the same matrix (it stays in cache when it fits);
 *     cold: cycling over copies of the matrix totalling --cold-mib (far beyond the last-level
 *     cache), so every call streams its weights from memory;
 *   - GEMM throughput for 32 and 512 activation rows on all cores, on the first --gemm-rows weight
 *     rows (the rate does not depend on how many rows there are once they outnumber the threads).
 *     The scalar loop, 10-50x slower, runs fewer rows and samples.
 * Beside the table: the memory read bandwidth (a streaming sum over a buffer far larger than the
 * last-level cache, one core and all cores, the fastest of plain and prefetching reads:
 * programs/measure.h), the ceiling of a cold GEMV; and per format the read rate of the same sum
 * over a cache-resident buffer of the matrix's size, the ceiling of a warm GEMV. A warm 4096 x
 * 4096 matrix does not fit a core's L2, so on most machines it is served from a shared L3 whose
 * per-core rate bounds the warm figures of the formats that decode quickly.
 *
 * Formats with an interleaved in-memory layout that this CPU's kernels prefer (Q4_0, Q8_0,
 * IQ4_NL, MXFP4, Q4_K: lib/kernels/interleaved.h, made when a model is prepared) get a second
 * row, e.g. "q4_0x8", measured the same way on the repacked matrices; its speedup is over the
 * same scalar reference, so the two rows compare the layouts side by side.
 *
 * Only the public API is used, and the interleaved layouts' header (they are internal to the
 * library: the forward pass repacks its own weights).
 */

#include "cli.h"
#include "measure.h"
#include "lowbit.h"
#include "../lib/kernels/interleaved.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024.0 * 1024.0)

/* Formats of --quick: the common ones (legacy, K-quants, non-linear, FP4, floats). */
static const char *const quick_types = "q4_0,q8_0,q4_K,q6_K,iq4_nl,mxfp4,f16";

typedef struct bench_options {
    const char *types; /* comma-separated, NULL for every format with a dot product */
    int reps;
    int quick, json;
    int threads;
    int64_t rows, cols;
    int64_t cold_mib, bandwidth_mib;
    int64_t gemm_rows;
} bench_options;

static void print_usage(FILE *out) {
    fprintf(out,
            "usage: lowbit bench [options]\n"
            "  GEMV/GEMM speed per format, SIMD kernels beside the scalar reference.\n"
            "  --types LIST      formats to run, e.g. q4_0,q4_K (default: all with a dot product;\n"
            "                    those without an encoder, IQ1-IQ3, on random valid blocks)\n"
            "  --reps N          timing samples per figure, median reported (default 15)\n"
            "  --quick           a few formats, fewer samples, smaller cold set\n"
            "  --threads N       threads of the all-core runs (default: all cores)\n"
            "  --rows N --cols N matrix shape (default 4096 x 4096)\n"
            "  --cold-mib N      total size of the matrix copies of the cold runs (default: 4x the\n"
            "                    last-level cache, at least 512)\n"
            "  --bandwidth-mib N buffer of the bandwidth test (default as --cold-mib, 0 skips)\n"
            "  --gemm-rows N     weight rows of the GEMM runs (default 512)\n"
            "  --json            machine-readable output\n");
}

static int parse_int(const char *text, int64_t min, int64_t max, int64_t *value) {
    if (!text) return 0;
    errno = 0;
    char *end = NULL;
    const long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) return 0;
    *value = v;
    return 1;
}

/* Returns CLI_OK, CLI_USAGE, or -1 after --help. */
static int parse_options(int argc, char **argv, bench_options *o) {
    const int64_t beyond_cache = measure_beyond_cache_mib(512);
    *o = (bench_options){NULL, 15, 0, 0, 0, 4096, 4096, beyond_cache, beyond_cache, 512};
    int64_t reps = -1, cold = -1, bw_mib = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t n = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            print_usage(stdout);
            return -1;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--quick")) {
            o->quick = 1;
        } else if (!strcmp(a, "--types") && v) {
            o->types = v, i++;
        } else if (!strcmp(a, "--reps") && parse_int(v, 1, 10000, &reps)) {
            i++;
        } else if (!strcmp(a, "--threads") && parse_int(v, 1, 4096, &n)) {
            o->threads = (int)n, i++;
        } else if (!strcmp(a, "--rows") && parse_int(v, 1, 1 << 20, &o->rows)) {
            i++;
        } else if (!strcmp(a, "--cols") && parse_int(v, 256, 1 << 20, &o->cols)) {
            i++;
        } else if (!strcmp(a, "--cold-mib") && parse_int(v, 0, 1 << 20, &cold)) {
            i++;
        } else if (!strcmp(a, "--bandwidth-mib") && parse_int(v, 0, 1 << 16, &bw_mib)) {
            i++;
        } else if (!strcmp(a, "--gemm-rows") && parse_int(v, 1, 1 << 20, &o->gemm_rows)) {
            i++;
        } else {
            fprintf(stderr, "lowbit bench: bad or incomplete option '%s'\n", a);
            print_usage(stderr);
            return CLI_USAGE;
        }
    }
    if (o->quick) {
        if (!o->types) o->types = quick_types;
        o->reps = 5;
        o->cold_mib = o->bandwidth_mib = 256;
    }
    if (reps > 0) o->reps = (int)reps;
    if (cold >= 0) o->cold_mib = cold;
    if (bw_mib >= 0) o->bandwidth_mib = bw_mib;
    if (o->gemm_rows > o->rows) o->gemm_rows = o->rows;
    return CLI_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Timing                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* One GEMV/GEMM call on matrix copy `copy`; returns 0 on failure. */
typedef int (*gemv_call_fn)(void *ctx, int copy);

/* Median seconds per call over `reps` calls (after one untimed warm-up), each on the next of
   `copies` matrices; a negative value when a call fails. */
static double time_calls(gemv_call_fn call, void *ctx, int reps, int copies) {
    double *samples = malloc((size_t)reps * sizeof *samples);
    if (!samples || !call(ctx, 0)) {
        free(samples);
        return -1.0;
    }
    for (int r = 0; r < reps; r++) {
        const double start = measure_now_seconds();
        if (!call(ctx, (r + 1) % copies)) {
            free(samples);
            return -1.0;
        }
        samples[r] = measure_now_seconds() - start;
    }
    const double m = measure_median(samples, reps);
    free(samples);
    return m;
}

/* ------------------------------------------------------------------------------------------ */
/* The two implementations: lowbit_matmul, and the scalar reference in a plain loop            */
/* ------------------------------------------------------------------------------------------ */

typedef struct gemv_setup {
    const lowbit_type_traits *type, *activation;
    uint8_t *matrices;       /* `copies` copies of the weight matrix */
    size_t matrix_bytes, row_bytes;
    int64_t rows, cols;
    const float *x;          /* up to 512 activation rows */
    float *out;
    lowbit_pool *pool;       /* NULL for one thread */
    lowbit_matmul_scratch scratch;
    uint8_t *quantized;      /* activation rows of the scalar path */
    size_t activation_row_bytes;
    int64_t n_tokens, n_rows; /* this measurement's shape (n_rows <= rows) */
    lb_interleaved_matrix *interleaved; /* `copies` repacked copies, or NULL for the plain rows */
} gemv_setup;

/* The first n_rows rows of an interleaved matrix (whole groups: n_rows is a multiple of R or
   all rows), which lie at its start. */
static lb_interleaved_matrix first_rows(const lb_interleaved_matrix *m, int64_t n_rows) {
    lb_interleaved_matrix view = *m;
    if (n_rows < m->rows) {
        view.rows = n_rows;
        view.n_groups = n_rows / m->rows_per_group;
        view.tail = NULL;
    }
    return view;
}

static int simd_call(void *p, int copy) {
    gemv_setup *s = p;
    if (s->interleaved) {
        const lb_interleaved_matrix view = first_rows(&s->interleaved[copy], s->n_rows);
        return lb_interleaved_matmul(&view, s->x, s->n_tokens, s->out, s->pool, &s->scratch) ==
               LOWBIT_OK;
    }
    return lowbit_matmul(s->type->type, s->matrices + (size_t)copy * s->matrix_bytes, s->n_rows,
                         s->cols, s->x, s->n_tokens, s->out, s->pool, &s->scratch) == LOWBIT_OK;
}

typedef struct scalar_job {
    const gemv_setup *setup;
    const uint8_t *weights;
} scalar_job;

static void scalar_rows(void *p, int64_t begin, int64_t end) {
    const scalar_job *job = p;
    const gemv_setup *s = job->setup;
    for (int64_t r = begin; r < end; r++) {
        const uint8_t *w = job->weights + (size_t)r * s->row_bytes;
        for (int64_t t = 0; t < s->n_tokens; t++) {
            s->out[t * s->n_rows + r] =
                s->type->vec_dot(s->cols, w, s->quantized + (size_t)t * s->activation_row_bytes);
        }
    }
}

/* The same product with the type table's scalar quantizer and dot product. */
static int scalar_call(void *p, int copy) {
    gemv_setup *s = p;
    for (int64_t t = 0; t < s->n_tokens; t++) {
        if (s->activation->quantize_ref(s->x + t * s->cols,
                                        s->quantized + (size_t)t * s->activation_row_bytes,
                                        s->cols, NULL) != LOWBIT_OK) {
            return 0;
        }
    }
    scalar_job job = {s, s->matrices + (size_t)copy * s->matrix_bytes};
    lowbit_pool_run(s->pool, s->n_rows, scalar_rows, &job);
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Measurements of one format                                                                  */
/* ------------------------------------------------------------------------------------------ */

enum { WARM_1, COLD_1, WARM_N, COLD_N, GEMM_32, GEMM_512, N_FIGURES };
static const char *const figure_names[N_FIGURES] = {"gemv_warm_1t", "gemv_cold_1t",
                                                    "gemv_warm_nt", "gemv_cold_nt",
                                                    "gemm32_nt",    "gemm512_nt"};

typedef struct format_result {
    const lowbit_type_traits *type;
    char name[16];                                 /* the type's name, or e.g. "q4_0x8" */
    double simd_s[N_FIGURES], scalar_s[N_FIGURES]; /* seconds per call, < 0: failed */
    int64_t rows[N_FIGURES], tokens[N_FIGURES];    /* the shape each was measured on */
    int64_t cols;
    int copies;
    double cache_gbs[2]; /* read rate of a cached buffer of the matrix's size (1t, nt); 0: not
                            measured */
} format_result;

static double gflops(const format_result *r, int f, double seconds) {
    return seconds > 0 ? 2.0 * (double)r->rows[f] * (double)r->cols * (double)r->tokens[f] /
                             seconds * 1e-9
                       : 0.0;
}

static double weight_gbs(const format_result *r, int f, double seconds) {
    return seconds > 0
               ? (double)lowbit_row_bytes(r->type->type, r->cols) * (double)r->rows[f] / seconds *
                     1e-9
               : 0.0;
}

/* Encodes a rows x cols matrix of normal-ish weights (a fixed sum of uniforms: no libm needed
   for speed, deterministic) with the type's reference encoder. */
static int encode_matrix(const lowbit_type_traits *t, int64_t rows, int64_t cols,
                         lowbit_pool *pool, uint8_t *m) {
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    if (!x) return 0;
    uint64_t state = 0x6C6F77626974ull;
    for (int64_t i = 0; i < rows * cols; i++) {
        float sum = 0.0f;
        for (int k = 0; k < 4; k++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            sum += (float)(state >> 40) / 16777216.0f;
        }
        x[i] = (sum - 2.0f) * 1.7f;
    }
    const int ok = lowbit_quantize_rows_ref(t->type, x, m, rows, cols, pool, NULL) == LOWBIT_OK;
    free(x);
    return ok;
}

/* Formats without an encoder (IQ1-IQ3) get a matrix of random blocks instead: their bytes are
   all valid encodings (every codebook index is in range), and only the scales need care. A
   block is redrawn until it decodes to finite values whose largest magnitude lies in
   [SYNTHETIC_MIN_PEAK, SYNTHETIC_MAX_PEAK]. The lower bound keeps the fp16 scale normal: in these
   formats no decoded value exceeds 500 times the scale, so a peak of 0.1 needs a scale above
   2e-4, past the fp16 subnormals (< 6.1e-5) whose conversion may take a slow path. The upper
   bound rules out infinities and NaN scales. About two in five random blocks pass, so the
   redraws cost little. */
#define SYNTHETIC_MIN_PEAK 0.1f
#define SYNTHETIC_MAX_PEAK 1000.0f
#define SYNTHETIC_MAX_DRAWS 10000 /* far beyond need: a format whose blocks never pass fails */

typedef struct synthetic_job {
    const lowbit_type_traits *type;
    uint8_t *matrix;
    size_t row_bytes;
    int64_t cols;
    atomic_int failed;
} synthetic_job;

/* splitmix64: a well-mixed stream from any seed, so each row can seed its own by its index. */
static uint64_t next_random(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int block_is_sane(const float *values, int n) {
    float peak = 0.0f;
    for (int i = 0; i < n; i++) {
        const float a = values[i] < 0 ? -values[i] : values[i];
        if (!(a <= SYNTHETIC_MAX_PEAK)) return 0; /* also NaN */
        peak = a > peak ? a : peak;
    }
    return peak >= SYNTHETIC_MIN_PEAK;
}

static int draw_sane_block(const lowbit_type_traits *t, uint64_t *state, uint8_t *block,
                           float *values) {
    for (int draw = 0; draw < SYNTHETIC_MAX_DRAWS; draw++) {
        for (int i = 0; i < t->block_bytes; i += 8) {
            const uint64_t bits = next_random(state);
            const int n = t->block_bytes - i < 8 ? t->block_bytes - i : 8;
            memcpy(block + i, &bits, (size_t)n); /* the byte order only changes the stream */
        }
        t->dequantize(block, values, t->block_size);
        if (block_is_sane(values, t->block_size)) return 1;
    }
    return 0;
}

static void synthesize_rows(void *p, int64_t begin, int64_t end) {
    synthetic_job *job = p;
    const lowbit_type_traits *t = job->type;
    float *values = malloc((size_t)t->block_size * sizeof *values);
    if (!values) {
        atomic_store(&job->failed, 1);
        return;
    }
    for (int64_t r = begin; r < end && !atomic_load(&job->failed); r++) {
        uint64_t state = 0x73796E746865ull ^ ((uint64_t)r << 20); /* the same for any pool */
        uint8_t *row = job->matrix + (size_t)r * job->row_bytes;
        for (int64_t b = 0; b < job->cols / t->block_size; b++) {
            if (!draw_sane_block(t, &state, row + (size_t)b * t->block_bytes, values)) {
                atomic_store(&job->failed, 1);
                break;
            }
        }
    }
    free(values);
}

static int synthesize_matrix(const lowbit_type_traits *t, int64_t rows, int64_t cols,
                             lowbit_pool *pool, uint8_t *m) {
    synthetic_job job = {t, m, lowbit_row_bytes(t->type, cols), cols, 0};
    lowbit_pool_run(pool, rows, synthesize_rows, &job);
    return !atomic_load(&job.failed);
}

/* Whether a format's matrix is made of random blocks rather than encoded weights. */
static int has_synthetic_weights(const lowbit_type_traits *t) { return !t->quantize_ref; }

/* Whether a format can be benchmarked: it has a dot product, and an encoder or a decoder to
   check its synthetic blocks with. */
static int is_benchable(const lowbit_type_traits *t) {
    return t->vec_dot && (t->quantize_ref || t->dequantize);
}

/* The weight matrix, encoded or synthetic, `copies` times over. */
static uint8_t *make_matrices(const lowbit_type_traits *t, int64_t rows, int64_t cols, int copies,
                              lowbit_pool *pool, size_t *matrix_bytes) {
    *matrix_bytes = lowbit_row_bytes(t->type, cols) * (size_t)rows;
    uint8_t *m = malloc(*matrix_bytes * (size_t)copies);
    if (!m) return NULL;
    const int ok = has_synthetic_weights(t) ? synthesize_matrix(t, rows, cols, pool, m)
                                            : encode_matrix(t, rows, cols, pool, m);
    if (!ok) {
        free(m);
        return NULL;
    }
    for (int c = 1; c < copies; c++) memcpy(m + (size_t)c * *matrix_bytes, m, *matrix_bytes);
    return m;
}

static void measure(gemv_setup *s, format_result *r, int f, lowbit_pool *pool, int64_t n_rows,
                    int64_t n_tokens, int copies, int reps, int scalar_reps, int64_t scalar_rows_n) {
    s->pool = pool;
    s->n_tokens = n_tokens;
    s->n_rows = n_rows;
    r->rows[f] = n_rows;
    r->tokens[f] = n_tokens;
    if (s->interleaved && n_rows < s->rows && n_rows % s->interleaved->rows_per_group != 0) {
        r->simd_s[f] = -1.0; /* no view of whole groups: not measured */
    } else {
        r->simd_s[f] = time_calls(simd_call, s, reps, copies);
    }
    if (s->interleaved) return; /* the plain row's scalar figures are copied */
    /* the scalar loop on fewer rows where that is much slower; its rate is what is compared */
    s->n_rows = scalar_rows_n;
    const double t = time_calls(scalar_call, s, scalar_reps, copies);
    r->scalar_s[f] = t > 0 ? t * (double)n_rows / (double)scalar_rows_n : t;
}

/* The interleaved twin of a measured format: the same measurements on repacked copies of the
   same matrices; returns 0 when this CPU prefers the plain layout (or memory runs out). */
static int bench_interleaved(gemv_setup *s, const format_result *plain, const bench_options *o,
                             lowbit_pool *pool, format_result *r) {
    const int R = lb_interleave_rows_preferred(s->type->type);
    if (R == 0) return 0;
    *r = *plain;
    snprintf(r->name, sizeof r->name, "%sx%d", plain->type->name, R);
    s->interleaved = calloc((size_t)plain->copies, sizeof *s->interleaved);
    int ok = s->interleaved != NULL;
    for (int c = 0; ok && c < plain->copies; c++) {
        ok = lb_interleave(s->type->type, R, s->matrices + (size_t)c * s->matrix_bytes, s->rows,
                           s->cols, pool, &s->interleaved[c]) == LOWBIT_OK;
    }
    if (ok) {
        const int reps = o->reps, gemm_reps = reps / 3 > 3 ? reps / 3 : 3;
        measure(s, r, WARM_1, NULL, s->rows, 1, 1, reps, 1, 1);
        measure(s, r, COLD_1, NULL, s->rows, 1, plain->copies, reps, 1, 1);
        measure(s, r, WARM_N, pool, s->rows, 1, 1, reps, 1, 1);
        measure(s, r, COLD_N, pool, s->rows, 1, plain->copies, reps, 1, 1);
        measure(s, r, GEMM_32, pool, o->gemm_rows, 32, 1, gemm_reps, 1, 1);
        measure(s, r, GEMM_512, pool, o->gemm_rows, 512, 1, 3, 1, 1);
    }
    for (int c = 0; s->interleaved && c < plain->copies; c++) lb_interleaved_free(&s->interleaved[c]);
    free(s->interleaved);
    s->interleaved = NULL;
    return ok;
}

/* Measures format t into r, and its interleaved layout into *il when this CPU prefers one
   (*has_il = 1). */
static int bench_format(const lowbit_type_traits *t, const bench_options *o, lowbit_pool *pool,
                        const float *x, float *out, format_result *r, format_result *il,
                        int *has_il) {
    memset(r, 0, sizeof *r);
    *has_il = 0;
    r->type = t;
    snprintf(r->name, sizeof r->name, "%s", t->name);
    r->cols = o->cols;
    if (lowbit_row_bytes(t->type, o->cols) == 0) return 0; /* cols not whole blocks */
    const double row_mib = (double)lowbit_row_bytes(t->type, o->cols) * (double)o->rows / MIB;
    int copies = (int)((double)o->cold_mib / row_mib + 0.999);
    copies = copies < 2 ? 2 : copies;
    gemv_setup s = {0};
    s.type = t;
    s.activation = lowbit_type_info(t->vec_dot_type);
    s.rows = o->rows;
    s.cols = o->cols;
    s.row_bytes = lowbit_row_bytes(t->type, o->cols);
    s.x = x;
    s.out = out;
    s.activation_row_bytes = lowbit_row_bytes(s.activation->type, o->cols);
    s.matrices = make_matrices(t, o->rows, o->cols, copies, pool, &s.matrix_bytes);
    s.quantized = malloc(s.activation_row_bytes * 512);
    if (!s.matrices || !s.quantized) {
        free(s.matrices);
        free(s.quantized);
        return 0;
    }
    r->copies = copies;
    if (o->bandwidth_mib > 0) measure_cache_read_bandwidth((int64_t)s.matrix_bytes, pool, 21,
                                                           r->cache_gbs);
    const int reps = o->reps, scalar_reps = o->reps / 3 > 3 ? o->reps / 3 : 3;
    const int64_t all = o->rows, gemm = o->gemm_rows;
    const int64_t gemm_scalar = gemm / 8 > 16 ? gemm / 8 : (gemm < 16 ? gemm : 16);
    measure(&s, r, WARM_1, NULL, all, 1, 1, reps, scalar_reps, all);
    measure(&s, r, COLD_1, NULL, all, 1, copies, reps, scalar_reps, all);
    measure(&s, r, WARM_N, pool, all, 1, 1, reps, scalar_reps, all);
    measure(&s, r, COLD_N, pool, all, 1, copies, reps, scalar_reps, all);
    const int gemm_reps = reps / 3 > 3 ? reps / 3 : 3;
    measure(&s, r, GEMM_32, pool, gemm, 32, 1, gemm_reps, 3, gemm_scalar);
    measure(&s, r, GEMM_512, pool, gemm, 512, 1, 3, 1, gemm_scalar / 4 > 4 ? gemm_scalar / 4 : 4);
    *has_il = bench_interleaved(&s, r, o, pool, il);
    lowbit_matmul_scratch_free(&s.scratch);
    free(s.matrices);
    free(s.quantized);
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Output                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Column widths: the GEMV cells also give the time and the weight read rate. */
static int cell_width(int figure) { return figure <= COLD_N ? 34 : 16; }

static void print_table_header(int threads, int with_bandwidth) {
    printf("GEMV: one row of activations; GEMM: 32 / 512 rows; 1t = one thread, nt = %d threads.\n"
           "GEMV cells: median ms, SIMD GFLOP/s, weight GB/s and the speedup over the scalar "
           "reference (x);\nGEMM cells: GFLOP/s and speedup.%s\n\n",
           threads,
           with_bandwidth ? "\ncold %bw: the cold GEMVs' weight read rate over the measured "
                            "memory read bandwidth (1t, nt); warm %bw: the warm GEMVs' over the "
                            "read rate of a\ncached buffer of the matrix's size (1t, nt)."
                          : "");
    printf("%-8s %6s", "format", "bpw");
    for (int f = 0; f < N_FIGURES; f++) printf(" %*s", cell_width(f), figure_names[f]);
    if (with_bandwidth) printf(" %13s %13s", "warm %bw", "cold %bw");
    printf("\n");
}

/* bw_1t, bw_nt: the measured read bandwidths (GB/s), 0 when not measured. */
static void print_table_row(const format_result *r, double bw_1t, double bw_nt) {
    char name[sizeof r->name + 1];
    snprintf(name, sizeof name, "%s%s", r->name, has_synthetic_weights(r->type) ? "*" : "");
    printf("%-8s %6.2f", name, lowbit_bits_per_weight(r->type->type));
    for (int f = 0; f < N_FIGURES; f++) {
        char cell[80];
        const double t = r->simd_s[f], ts = r->scalar_s[f];
        if (t <= 0) {
            snprintf(cell, sizeof cell, "n/a");
        } else if (f <= COLD_N) {
            snprintf(cell, sizeof cell, "%.3f ms %.1f (%.1f GB/s) %.1fx", t * 1e3, gflops(r, f, t),
                     weight_gbs(r, f, t), ts > 0 ? ts / t : 0.0);
        } else {
            snprintf(cell, sizeof cell, "%.1f %.1fx", gflops(r, f, t), ts > 0 ? ts / t : 0.0);
        }
        printf(" %*s", cell_width(f), cell);
    }
    if (bw_1t > 0 && bw_nt > 0) {
        char cell[40];
        snprintf(cell, sizeof cell, "%.0f%% %.0f%%",
                 100.0 * weight_gbs(r, WARM_1, r->simd_s[WARM_1]) / r->cache_gbs[0],
                 100.0 * weight_gbs(r, WARM_N, r->simd_s[WARM_N]) / r->cache_gbs[1]);
        printf(" %13s", r->cache_gbs[0] > 0 && r->cache_gbs[1] > 0 ? cell : "n/a");
        const double cold_1t = weight_gbs(r, COLD_1, r->simd_s[COLD_1]);
        const double cold_nt = weight_gbs(r, COLD_N, r->simd_s[COLD_N]);
        snprintf(cell, sizeof cell, "%.0f%% %.0f%%", 100.0 * cold_1t / bw_1t,
                 100.0 * cold_nt / bw_nt);
        printf(" %13s", cell);
    }
    printf("\n");
    fflush(stdout);
}

static void print_synthetic_footnote(void) {
    printf("\n* synthetic matrix: random valid blocks with sane scales, the format has no encoder "
           "here;\n  only the speed is measured.\n");
}

static void print_json_row(const format_result *r, int first) {
    printf("%s\n    {\"type\": \"%s\", \"weights\": \"%s\", \"bits_per_weight\": %.4f, "
           "\"cold_copies\": %d,\n     \"cache_read_gbs_1t\": %.3f, \"cache_read_gbs_nt\": %.3f",
           first ? "" : ",", r->name, has_synthetic_weights(r->type) ? "synthetic" : "encoded",
           lowbit_bits_per_weight(r->type->type), r->copies, r->cache_gbs[0], r->cache_gbs[1]);
    for (int f = 0; f < N_FIGURES; f++) {
        const double t = r->simd_s[f], ts = r->scalar_s[f];
        printf(",\n     \"%s\": {\"rows\": %lld, \"tokens\": %lld, \"simd_ms\": %.4f, "
               "\"scalar_ms\": %.4f, \"simd_gflops\": %.3f, \"scalar_gflops\": %.3f, "
               "\"simd_weight_gbs\": %.3f, \"speedup\": %.3f}",
               figure_names[f], (long long)r->rows[f], (long long)r->tokens[f], t * 1e3, ts * 1e3,
               gflops(r, f, t), gflops(r, f, ts), weight_gbs(r, f, t),
               t > 0 && ts > 0 ? ts / t : 0.0);
    }
    printf("}");
}

/* Whether `name` is in the comma-separated list (case-insensitive through the type lookup). */
static int type_selected(const char *list, const lowbit_type_traits *t) {
    if (!list) {
        /* every weight format with a dot product; Q8_1 and Q8_K are activation formats only */
        return is_benchable(t) && t->type != LOWBIT_TYPE_Q8_1 && t->type != LOWBIT_TYPE_Q8_K;
    }
    char name[32];
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (len < sizeof name) {
            memcpy(name, p, len);
            name[len] = '\0';
            lowbit_type type;
            if (lowbit_type_from_name(name, &type) == LOWBIT_OK && type == t->type) return 1;
        }
        p += len + (p[len] == ',');
    }
    return 0;
}

static int check_type_list(const char *list) {
    char name[32];
    for (const char *p = list; list && *p;) {
        size_t len = strcspn(p, ",");
        lowbit_type type;
        snprintf(name, sizeof name, "%.*s", (int)(len < 31 ? len : 31), p);
        if (lowbit_type_from_name(name, &type) != LOWBIT_OK ||
            !is_benchable(lowbit_type_info(type))) {
            fprintf(stderr, "lowbit bench: '%s' is not a format with a dot product\n", name);
            return 0;
        }
        p += len + (p[len] == ',');
    }
    return 1;
}

/* Whether every selected format (and its activation format) can have rows of `cols` columns:
   checked before anything is measured, so a wrong --cols fails at once. */
static int check_cols(const char *list, int64_t cols) {
    int selected = 0;
    for (int i = 0; i < LOWBIT_TYPE_COUNT; i++) {
        const lowbit_type_traits *t = lowbit_type_info((lowbit_type)i);
        if (!t || !type_selected(list, t)) continue;
        selected++;
        const lowbit_type_traits *a = lowbit_type_info(t->vec_dot_type);
        if (cols % t->block_size != 0 || (a && cols % a->block_size != 0)) {
            fprintf(stderr, "lowbit bench: --cols %lld is not a multiple of %s's block size %d\n",
                    (long long)cols, t->name, a && a->block_size > t->block_size ? a->block_size
                                                                             : t->block_size);
            return 0;
        }
    }
    if (selected == 0) fprintf(stderr, "lowbit bench: --types selects no format\n");
    return selected > 0;
}

int cmd_bench(int argc, char **argv) {
    bench_options o;
    const int parsed = parse_options(argc, argv, &o);
    if (parsed != CLI_OK) return parsed < 0 ? CLI_OK : parsed;
    if (!check_type_list(o.types) || !check_cols(o.types, o.cols)) return CLI_USAGE;
    lowbit_pool *pool = NULL;
    if (lowbit_pool_create(o.threads, &pool) != LOWBIT_OK) {
        fprintf(stderr, "lowbit bench: cannot create the thread pool\n");
        return CLI_FAILED;
    }
    const int threads = lowbit_pool_size(pool);
    float *x = malloc((size_t)(512 * o.cols) * sizeof *x);
    float *out = malloc((size_t)(512 * o.rows) * sizeof *out);
    if (!x || !out) {
        fprintf(stderr, "lowbit bench: out of memory\n");
        free(x);
        free(out);
        lowbit_pool_destroy(pool);
        return CLI_FAILED;
    }
    for (int64_t i = 0; i < 512 * o.cols; i++) x[i] = (float)((i * 7919) % 2001 - 1000) * 1e-3f;

    double bw[2] = {0.0, 0.0};
    if (o.bandwidth_mib > 0) measure_read_bandwidth(o.bandwidth_mib, pool, 5, bw);
    const double bw1 = bw[0], bwn = bw[1];
    if (o.json) {
        printf("{\n  \"rows\": %lld, \"cols\": %lld, \"threads\": %d, \"reps\": %d,\n"
               "  \"read_bandwidth_gbs_1t\": %.3f, \"read_bandwidth_gbs_nt\": %.3f,\n"
               "  \"formats\": [",
               (long long)o.rows, (long long)o.cols, threads, o.reps, bw1, bwn);
    } else {
        printf("lowbit bench: %lld x %lld weights, %d reps (median), cold set %lld MiB "
               "(last-level cache %lld MiB)\n",
               (long long)o.rows, (long long)o.cols, o.reps, (long long)o.cold_mib,
               (long long)(measure_last_level_cache_bytes() >> 20));
        if (o.bandwidth_mib > 0) {
            printf("memory read bandwidth: %.1f GB/s one thread, %.1f GB/s %d threads\n", bw1,
                   bwn, threads);
        }
        print_table_header(threads, o.bandwidth_mib > 0);
    }
    int status = CLI_OK, first = 1, any_synthetic = 0;
    for (int i = 0; i < lowbit_type_count(); i++) {
        const lowbit_type_traits *t = lowbit_type_at(i);
        if (!type_selected(o.types, t)) continue;
        format_result r, il;
        int has_il = 0;
        if (!bench_format(t, &o, pool, x, out, &r, &il, &has_il)) {
            fprintf(stderr, "lowbit bench: %s: cannot set up the matrices\n", t->name);
            status = CLI_FAILED;
            continue;
        }
        if (o.json) print_json_row(&r, first);
        else print_table_row(&r, bw1, bwn);
        first = 0;
        any_synthetic |= has_synthetic_weights(t);
        if (has_il && o.json) print_json_row(&il, 0);
        else if (has_il) print_table_row(&il, bw1, bwn);
    }
    if (o.json) printf("\n  ]\n}\n");
    else if (any_synthetic) print_synthetic_footnote();
    free(x);
    free(out);
    lowbit_pool_destroy(pool);
    return status;
}
