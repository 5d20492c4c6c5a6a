/*
 * `lowbit formats [--json] [--golden DIR]`: every format of the type table with its static
 * properties (GGUF type id, block size, bytes per block, bits per weight, activation type of the
 * dot product) and, measured on the golden inputs, the RMSE of lowbit's encoder on the golden
 * tensor `x` next to the reference encoder's (the file's `golden.rmse_plain`) and the encoder's
 * single-thread speed on those rows.
 *
 * The golden folder is DIR, else $LOWBIT_SHARED/golden, else ../shared/golden. Without it the
 * static columns are still printed. A cell that cannot be measured (encoder not written yet, bad
 * file) reads "n/a" and the reason goes to stderr; "-" means the format has no golden file.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, stat */

#include "cli.h"
#include "lowbit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define GOLDEN_INPUT "x"
#define GOLDEN_REF_RMSE_KEY "golden.rmse_plain"
#define GOLDEN_TYPE_ID_KEY "golden.ggml_type_id"
#define MIN_SAMPLE_NS 10e6 /* the golden rows are small: repeat until a sample lasts 10 ms */
#define SPEED_SAMPLES 3    /* median of three */

typedef struct formats_options {
    int json;
    const char *golden_arg; /* --golden DIR, or NULL */
} formats_options;

/* What the golden file of one format gave; NaN for a cell that could not be measured. */
typedef struct golden_figures {
    int has_file;          /* 0: no golden file for this format (the cells read "-") */
    double rmse_ours;
    double rmse_ref;
    double ns_per_weight;
} golden_figures;

/* ------------------------------------------------------------------------------------------ */
/* Options and the golden folder                                                               */
/* ------------------------------------------------------------------------------------------ */

static void print_formats_usage(FILE *out) {
    fprintf(out,
            "usage: lowbit formats [--json] [--golden DIR]\n"
            "  --json        machine-readable output\n"
            "  --golden DIR  folder of the golden GGUF files (default: $LOWBIT_SHARED/golden,\n"
            "                else ../shared/golden)\n");
}

/* Returns CLI_OK to go on, -1 for --help, CLI_USAGE for a bad argument. */
static int parse_formats_options(int argc, char **argv, formats_options *opt) {
    *opt = (formats_options){0, NULL};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            opt->json = 1;
        } else if (!strcmp(argv[i], "--golden") && i + 1 < argc) {
            opt->golden_arg = argv[++i];
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            return -1;
        } else {
            fprintf(stderr, "lowbit formats: unknown option or missing value: %s\n", argv[i]);
            return CLI_USAGE;
        }
    }
    return CLI_OK;
}

/* The golden folder: the option, else $LOWBIT_SHARED/golden, else ../shared/golden. */
static int resolve_golden_dir(const char *arg, char *buf, size_t size) {
    const char *shared = getenv("LOWBIT_SHARED");
    int n;
    if (arg) {
        n = snprintf(buf, size, "%s", arg);
    } else if (shared && *shared) {
        n = snprintf(buf, size, "%s/golden", shared);
    } else {
        n = snprintf(buf, size, "../shared/golden");
    }
    return n > 0 && (size_t)n < size;
}

static int is_directory(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_regular_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ------------------------------------------------------------------------------------------ */
/* Measuring on the golden input                                                               */
/* ------------------------------------------------------------------------------------------ */

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void report(const lowbit_type_traits *t, const char *what, lowbit_status st,
                   const lowbit_diag *diag) {
    const int detailed = diag && diag->status == st && diag->message[0];
    fprintf(stderr, "lowbit formats: %s: %s: %s%s%s\n", t->name, what, lowbit_status_name(st),
            detailed ? ": " : "", detailed ? diag->message : "");
}

/* The golden input as rows of a row length the format can encode; NULL (reported) otherwise. */
static const lowbit_tensor_info *golden_input(const lowbit_gguf *g, const lowbit_type_traits *t) {
    const lowbit_tensor_info *x = lowbit_gguf_find_tensor(g, GOLDEN_INPUT);
    if (!x) {
        report(t, "golden file has no tensor '" GOLDEN_INPUT "'", LOWBIT_ERR_BAD_FILE, NULL);
        return NULL;
    }
    if (x->type != LOWBIT_TYPE_F32 || x->ne[0] <= 0 || x->ne[0] % t->block_size != 0) {
        report(t, "golden tensor '" GOLDEN_INPUT "' is not f32 rows of whole blocks",
               LOWBIT_ERR_BAD_FILE, NULL);
        return NULL;
    }
    return x;
}

/* Root mean square of a - b over n elements. */
static double rmse(const float *a, const float *b, int64_t n) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (double)b[i];
        sum += d * d;
    }
    return sqrt(sum / (double)n);
}

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Single-thread encoding time per weight: median of SPEED_SAMPLES samples, each repeating the
   whole input until it lasts MIN_SAMPLE_NS (one pass over 8192 weights is too short to time). */
static double encoder_speed(const lowbit_type_traits *t, const float *x, void *q, int64_t rows,
                            int64_t cols) {
    double samples[SPEED_SAMPLES];
    for (int s = 0; s < SPEED_SAMPLES; s++) {
        const double start = now_ns();
        int64_t passes = 0;
        double elapsed = 0.0;
        do {
            lowbit_diag diag = {0};
            const lowbit_status st = lowbit_quantize_rows(t->type, x, q, rows, cols, NULL, NULL,
                                                          &diag);
            if (st != LOWBIT_OK) return NAN; /* already reported by the accuracy run */
            passes++;
            elapsed = now_ns() - start;
        } while (elapsed < MIN_SAMPLE_NS);
        samples[s] = elapsed / (double)(passes * rows * cols);
    }
    qsort(samples, SPEED_SAMPLES, sizeof samples[0], compare_doubles);
    return samples[SPEED_SAMPLES / 2];
}

/* Encodes the golden input with lowbit's encoder: its RMSE and speed into fig. */
static void measure_encoder(const lowbit_type_traits *t, const lowbit_tensor_info *x,
                            golden_figures *fig) {
    const int64_t cols = x->ne[0];
    const int64_t rows = x->n_elements / cols;
    const float *src = x->data;
    void *q = malloc(lowbit_row_bytes(t->type, cols) * (size_t)rows);
    float *dq = malloc((size_t)x->n_elements * sizeof *dq);
    lowbit_diag diag = {0};
    lowbit_status st = (q && dq) ? LOWBIT_OK : LOWBIT_ERR_NO_MEMORY;
    if (st == LOWBIT_OK) st = lowbit_quantize_rows(t->type, src, q, rows, cols, NULL, NULL, &diag);
    if (st != LOWBIT_OK) {
        report(t, "encoding the golden input", st, &diag);
    } else if ((st = lowbit_dequantize_rows(t->type, q, dq, rows, cols, NULL)) != LOWBIT_OK) {
        report(t, "decoding", st, NULL);
    } else {
        fig->rmse_ours = rmse(src, dq, x->n_elements);
        fig->ns_per_weight = encoder_speed(t, src, q, rows, cols);
    }
    free(q);
    free(dq);
}

/* The reference's RMSE from the file's metadata (NaN is stored where the reference needs an
   importance matrix and has no plain encoding). */
static double reference_rmse(const lowbit_gguf *g, const lowbit_type_traits *t) {
    double v = NAN;
    const lowbit_status st = lowbit_gguf_get_f64(g, GOLDEN_REF_RMSE_KEY, &v);
    if (st != LOWBIT_OK) {
        report(t, "golden key " GOLDEN_REF_RMSE_KEY, st, NULL);
        return NAN;
    }
    return v;
}

/* A golden file made for another type would give meaningless figures. */
static int golden_type_matches(const lowbit_gguf *g, const lowbit_type_traits *t) {
    int64_t id = -1;
    if (lowbit_gguf_get_i64(g, GOLDEN_TYPE_ID_KEY, &id) != LOWBIT_OK) return 1; /* key optional */
    if (id == (int64_t)t->type) return 1;
    fprintf(stderr, "lowbit formats: %s: golden file is for type id %lld, not %d\n", t->name,
            (long long)id, (int)t->type);
    return 0;
}

static golden_figures measure_golden(const char *dir, const lowbit_type_traits *t) {
    golden_figures fig = {0, NAN, NAN, NAN};
    if (!dir) return fig;
    char path[4096];
    const int n = snprintf(path, sizeof path, "%s/%s.gguf", dir, t->name);
    if (n <= 0 || (size_t)n >= sizeof path || !is_regular_file(path)) return fig;
    fig.has_file = 1;
    lowbit_gguf *g = NULL;
    lowbit_diag diag = {0};
    const lowbit_status st = lowbit_gguf_open(path, &g, &diag);
    if (st != LOWBIT_OK) {
        report(t, path, st, &diag);
        return fig;
    }
    if (golden_type_matches(g, t)) {
        fig.rmse_ref = reference_rmse(g, t);
        const lowbit_tensor_info *x = golden_input(g, t);
        if (x) measure_encoder(t, x, &fig);
    }
    lowbit_gguf_close(g);
    return fig;
}

/* ------------------------------------------------------------------------------------------ */
/* Output                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static const char *dot_type_name(const lowbit_type_traits *t) {
    const lowbit_type_traits *act = lowbit_type_info(t->vec_dot_type);
    return act ? act->name : "?";
}

/* "-" when there is no golden file, "n/a" when the figure could not be had, else the number. */
static void print_golden_cell(const golden_figures *fig, double v, int width, int decimals) {
    if (!fig->has_file) {
        printf(" %*s", width, "-");
    } else if (isnan(v)) {
        printf(" %*s", width, "n/a");
    } else {
        printf(" %*.*f", width, decimals, v);
    }
}

static void print_text_header(const char *dir, int have_golden) {
    if (have_golden) {
        printf("golden inputs: %s (RMSE on tensor '%s', no importance matrix; ns/w: 1 thread)\n",
               dir, GOLDEN_INPUT);
    }
    printf("%-8s %4s %6s %6s %7s %-8s | %10s %10s %8s | %8s\n", "format", "id", "block", "bytes",
           "bpw", "vec_dot", "RMSE ours", "RMSE ref", "ours/ref", "ns/w");
}

static void print_text_row(const lowbit_type_traits *t, const golden_figures *fig) {
    printf("%-8s %4d %6d %6d %7.4f %-8s |", t->name, (int)t->type, (int)t->block_size,
           (int)t->block_bytes, lowbit_bits_per_weight(t->type), dot_type_name(t));
    print_golden_cell(fig, fig->rmse_ours, 10, 7);
    print_golden_cell(fig, fig->rmse_ref, 10, 7);
    print_golden_cell(fig, fig->rmse_ours / fig->rmse_ref, 8, 4);
    printf(" |");
    print_golden_cell(fig, fig->ns_per_weight, 8, 2);
    printf("\n");
}

static void print_json_number(const char *key, double v) {
    if (isnan(v) || isinf(v)) {
        printf(", \"%s\": null", key);
    } else {
        printf(", \"%s\": %.9g", key, v);
    }
}

static void print_json_row(const lowbit_type_traits *t, const golden_figures *fig, int last) {
    printf("    {\"name\": \"%s\", \"type_id\": %d, \"block_size\": %d, \"block_bytes\": %d", t->name,
           (int)t->type, (int)t->block_size, (int)t->block_bytes);
    print_json_number("bits_per_weight", lowbit_bits_per_weight(t->type));
    printf(", \"quantized\": %s, \"vec_dot_type\": \"%s\"", t->is_quantized ? "true" : "false",
           dot_type_name(t));
    printf(", \"golden\": %s", fig->has_file ? "true" : "false");
    print_json_number("rmse", fig->rmse_ours);
    print_json_number("rmse_reference", fig->rmse_ref);
    print_json_number("ns_per_weight", fig->ns_per_weight);
    printf("}%s\n", last ? "" : ",");
}

static void print_json_header(const char *dir, int have_golden) {
    printf("{\n  \"golden_dir\": ");
    cli_print_json_string(dir);
    printf(", \"golden_available\": %s,\n  \"formats\": [\n", have_golden ? "true" : "false");
}

/* ------------------------------------------------------------------------------------------ */
/* The command                                                                                 */
/* ------------------------------------------------------------------------------------------ */

int cmd_formats(int argc, char **argv) {
    formats_options opt;
    const int parsed = parse_formats_options(argc, argv, &opt);
    if (parsed != CLI_OK) {
        print_formats_usage(parsed < 0 ? stdout : stderr);
        return parsed < 0 ? CLI_OK : CLI_USAGE;
    }
    char dir[4096];
    if (!resolve_golden_dir(opt.golden_arg, dir, sizeof dir)) {
        fprintf(stderr, "lowbit formats: golden folder path too long\n");
        return CLI_USAGE;
    }
    const int have_golden = is_directory(dir);
    if (!have_golden) {
        fprintf(stderr,
                "lowbit formats: golden folder %s not found: printing the static columns only "
                "(use --golden DIR or set LOWBIT_SHARED)\n",
                dir);
    }

    if (opt.json) {
        print_json_header(dir, have_golden);
    } else {
        print_text_header(dir, have_golden);
    }
    const int count = lowbit_type_count();
    for (int i = 0; i < count; i++) {
        const lowbit_type_traits *t = lowbit_type_at(i);
        const golden_figures fig = measure_golden(have_golden ? dir : NULL, t);
        if (opt.json) {
            print_json_row(t, &fig, i == count - 1);
        } else {
            print_text_row(t, &fig);
        }
        fflush(stdout);
    }
    if (opt.json) printf("  ]\n}\n");
    return CLI_OK;
}
