/*
 * `lowbit quantize IN OUT PRESET [options]`: a GGUF, llama2.c or safetensors model in, a GGUF
 * file out, each tensor's type chosen by the preset's rules (llama.cpp's names and rules),
 * overrides and fallbacks. The output appears only when complete; Ctrl-C, a full disk or any
 * other failure leaves no partial file behind.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"
#include "lowbit.h"

#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_OVERRIDES 64

typedef struct quantize_args {
    const char *input, *output, *preset;
    const char *tokenizer;
    int dry_run, json;
    lowbit_quantize_options options;
    lowbit_tensor_type_override overrides[MAX_OVERRIDES];
    char *override_text[MAX_OVERRIDES]; /* owned copies, split at '=' */
} quantize_args;

static void print_quantize_usage(FILE *out) {
    fprintf(out,
            "usage: lowbit quantize IN OUT PRESET [options]\n"
            "  IN      a GGUF, llama2.c or safetensors model (format found from the content)\n"
            "  OUT     the GGUF file to write\n"
            "  PRESET  Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q8_0 Q4_0 Q4_1\n"
            "          Q5_0 Q5_1 IQ4_XS IQ4_NL TQ1_0 TQ2_0 F16 BF16 F32\n"
            "options:\n"
            "  --tensor-type REGEX=TYPE   give tensors whose name matches REGEX this type\n"
            "                             (repeatable; first match wins; unmatched is an error)\n"
            "  --output-tensor-type TYPE  type of output.weight\n"
            "  --token-embedding-type TYPE type of token_embd.weight\n"
            "  --imatrix FILE             importance matrix (GGUF imatrix or legacy .dat)\n"
            "  --pure                     one type for every quantizable tensor\n"
            "  --threads N                worker threads (default: one per CPU)\n"
            "  --tokenizer FILE           llama2.c tokenizer (default: tok<vocab>.bin beside IN)\n"
            "  --dry-run                  print the plan and the file size; write nothing\n"
            "  --json                     machine-readable summary on stdout\n");
}

static int parse_type(const char *name, int *type) {
    lowbit_type t;
    if (lowbit_type_from_name(name, &t) != LOWBIT_OK) {
        fprintf(stderr, "lowbit quantize: unknown type '%s'\n", name);
        return 0;
    }
    *type = (int)t;
    return 1;
}

static int add_override(quantize_args *a, const char *spec) {
    const char *eq = strrchr(spec, '=');
    if (!eq || eq == spec || !eq[1]) {
        fprintf(stderr, "lowbit quantize: --tensor-type wants REGEX=TYPE, got '%s'\n", spec);
        return 0;
    }
    if (a->options.n_overrides == MAX_OVERRIDES) {
        fprintf(stderr, "lowbit quantize: more than %d --tensor-type options\n", MAX_OVERRIDES);
        return 0;
    }
    int type;
    if (!parse_type(eq + 1, &type)) return 0;
    const int k = a->options.n_overrides++;
    a->override_text[k] = strndup(spec, (size_t)(eq - spec));
    if (!a->override_text[k]) return 0;
    regex_t compiled; /* compiled here only to report a bad pattern as a usage error */
    if (regcomp(&compiled, a->override_text[k], REG_EXTENDED | REG_NOSUB) != 0) {
        fprintf(stderr, "lowbit quantize: --tensor-type: '%s' is not a valid regular expression\n",
                a->override_text[k]);
        return 0;
    }
    regfree(&compiled);
    a->overrides[k] = (lowbit_tensor_type_override){a->override_text[k], (lowbit_type)type};
    return 1;
}

static int parse_count(const char *text, int *value) {
    char *end;
    const long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v < 1 || v > 1024) return 0;
    *value = (int)v;
    return 1;
}

/* Returns CLI_OK, CLI_USAGE, or -1 for --help. */
static int parse_quantize_args(int argc, char **argv, quantize_args *a) {
    memset(a, 0, sizeof *a);
    lowbit_quantize_options_init(&a->options);
    a->options.overrides = a->overrides;
    const char *positional[3];
    int n_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return -1;
        if (!strcmp(arg, "--dry-run")) a->dry_run = 1;
        else if (!strcmp(arg, "--json")) a->json = 1;
        else if (!strcmp(arg, "--pure")) a->options.pure = 1;
        else if (arg[0] == '-' && arg[1] == '-' && !value) ok = 0;
        else if (!strcmp(arg, "--tensor-type")) ok = add_override(a, argv[++i]);
        else if (!strcmp(arg, "--output-tensor-type")) ok = parse_type(argv[++i], &a->options.output_tensor_type);
        else if (!strcmp(arg, "--token-embedding-type")) ok = parse_type(argv[++i], &a->options.token_embedding_type);
        else if (!strcmp(arg, "--imatrix")) a->options.imatrix_path = argv[++i];
        else if (!strcmp(arg, "--tokenizer")) a->tokenizer = argv[++i];
        else if (!strcmp(arg, "--threads")) {
            ok = parse_count(argv[++i], &a->options.n_threads);
            if (!ok) fprintf(stderr, "lowbit quantize: --threads wants a number from 1 to 1024\n");
        }
        else if (arg[0] == '-' && arg[1] != '\0') ok = 0;
        else if (n_positional < 3) positional[n_positional++] = arg;
        else ok = 0;
        if (!ok) {
            fprintf(stderr, "lowbit quantize: bad or incomplete option '%s'\n", arg);
            return CLI_USAGE;
        }
    }
    if (n_positional != 3) {
        print_quantize_usage(stderr);
        return CLI_USAGE;
    }
    a->input = positional[0];
    a->output = positional[1];
    a->preset = positional[2];
    a->options.preset = a->preset;
    lowbit_diag diag = {0};
    if (lowbit_preset_check(a->preset, &diag) != LOWBIT_OK) {
        fprintf(stderr, "lowbit quantize: %s\n", diag.message);
        return CLI_USAGE;
    }
    return CLI_OK;
}

static void free_quantize_args(quantize_args *a) {
    for (int i = 0; i < a->options.n_overrides; i++) free(a->override_text[i]);
}

/* ---- Ctrl-C: ask the library to stop; it removes the temporary file itself ---- */

/* The signal that asked us to stop, or 0. Written by the handler only; an int store is atomic on
   every platform lowbit supports. */
static volatile int interrupted;

static void on_interrupt(int signo) {
    if (interrupted) {
        /* a second signal while a large tensor is being encoded: leave at once, cleaning up */
        lowbit_remove_temporary_files();
        _exit(128 + signo);
    }
    interrupted = signo;
}

static void install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* past a file-size limit, write() must fail with EFBIG (and be reported), not kill us */
    signal(SIGXFSZ, SIG_IGN);
}

/* ---- progress ---- */

typedef struct progress_state {
    struct timespec start;
    int terminal;
} progress_state;

static double seconds_since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + 1e-9 * (double)(now.tv_nsec - t0->tv_nsec);
}

static void on_progress(void *ctx, int64_t index, int64_t n_tensors, uint64_t done, uint64_t total) {
    progress_state *p = ctx;
    const double elapsed = seconds_since(&p->start);
    const double rate = elapsed > 0 ? (double)done / elapsed : 0.0;
    const double left = rate > 0 ? (double)(total - (done < total ? done : total)) / rate : 0.0;
    if (p->terminal) {
        const int width = 30, filled = total ? (int)((double)width * (double)done / (double)total) : width;
        fprintf(stderr, "\r[%.*s%*s] tensor %lld/%lld  %.1f MB/s  %.0fs left ", filled,
                "##############################", width - filled, "", (long long)index + 1,
                (long long)n_tensors, rate / 1e6, left);
        if (index + 1 == n_tensors) fputc('\n', stderr);
    } else if ((index + 1) % 16 == 0 || index + 1 == n_tensors) {
        fprintf(stderr, "quantized %lld/%lld tensors, %.1f MB/s\n", (long long)index + 1,
                (long long)n_tensors, rate / 1e6);
    }
}

/* ---- the plan as text or JSON ---- */

static void format_shape(const lowbit_tensor_plan *t, char *buf, size_t size) {
    int n = snprintf(buf, size, "%lld", (long long)t->ne[0]);
    for (int d = 1; d < t->n_dims && n > 0 && (size_t)n < size; d++) {
        n += snprintf(buf + n, size - (size_t)n, " x %lld", (long long)t->ne[d]);
    }
}

static const char *type_name(lowbit_type type) {
    const lowbit_type_traits *t = lowbit_type_info(type);
    return t ? t->name : "?";
}

static int64_t plan_elements(const lowbit_tensor_plan *t) {
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

static void print_plan_text(const lowbit_plan *plan, const quantize_args *a) {
    const int64_t n = lowbit_plan_tensor_count(plan);
    int64_t elements = 0, fallbacks = 0;
    uint64_t tensor_bytes = 0;
    printf("%-32s %-18s %-8s %-8s %7s %12s\n", "tensor", "shape", "from", "to", "bpw", "bytes");
    for (int64_t i = 0; i < n; i++) {
        const lowbit_tensor_plan *t = lowbit_plan_tensor(plan, i);
        char shape[64];
        format_shape(t, shape, sizeof shape);
        printf("%-32s %-18s %-8s %-8s %7.3f %12llu%s%s\n", t->name, shape, type_name(t->source_type),
               type_name(t->type), lowbit_bits_per_weight(t->type), (unsigned long long)t->n_bytes,
               t->uses_importance ? "  [imatrix]" : "", t->fell_back ? "  [fallback]" : "");
        elements += plan_elements(t);
        tensor_bytes += t->n_bytes;
    }
    for (int64_t i = 0; i < n; i++) {
        const lowbit_tensor_plan *t = lowbit_plan_tensor(plan, i);
        if (t->fell_back) printf("%s %s: %s\n", fallbacks++ ? "          " : "fallbacks:", t->name, t->note);
    }
    printf("%s %s -> %s: %lld tensors, %lld weights, %.3f bits per weight, file %llu bytes\n",
           a->preset, a->input, a->output, (long long)n, (long long)elements,
           elements ? 8.0 * (double)tensor_bytes / (double)elements : 0.0,
           (unsigned long long)lowbit_plan_file_size(plan));
}

static void print_plan_json(const lowbit_plan *plan, const quantize_args *a, int written,
                            double seconds) {
    const int64_t n = lowbit_plan_tensor_count(plan);
    printf("{\"input\": ");
    cli_print_json_string(a->input);
    printf(", \"output\": ");
    cli_print_json_string(a->output);
    printf(", \"preset\": ");
    cli_print_json_string(a->preset);
    printf(", \"written\": %s, \"seconds\": %.3f, \"file_size\": %llu, \"file_type\": %u, \"tensors\": [",
           written ? "true" : "false", seconds, (unsigned long long)lowbit_plan_file_size(plan),
           lowbit_plan_file_type(plan));
    for (int64_t i = 0; i < n; i++) {
        const lowbit_tensor_plan *t = lowbit_plan_tensor(plan, i);
        printf("%s\n  {\"name\": ", i ? "," : "");
        cli_print_json_string(t->name);
        printf(", \"shape\": [");
        for (int d = 0; d < t->n_dims; d++) printf("%s%lld", d ? ", " : "", (long long)t->ne[d]);
        printf("], \"from\": \"%s\", \"to\": \"%s\", \"bits_per_weight\": %.4f, \"bytes\": %llu, "
               "\"offset\": %llu, \"imatrix\": %s, \"fallback\": %s, \"note\": ",
               type_name(t->source_type), type_name(t->type), lowbit_bits_per_weight(t->type),
               (unsigned long long)t->n_bytes, (unsigned long long)t->offset,
               t->uses_importance ? "true" : "false", t->fell_back ? "true" : "false");
        cli_print_json_string(t->note);
        printf("}");
    }
    printf("\n]}\n");
}

/* One line on stderr; the file is named unless the message names it already. */
static int fail(const char *file, const lowbit_diag *diag, lowbit_status st) {
    const char *message = diag->message[0] ? diag->message : lowbit_status_name(st);
    if (strstr(message, file)) fprintf(stderr, "lowbit quantize: %s\n", message);
    else fprintf(stderr, "lowbit quantize: %s: %s\n", file, message);
    return CLI_FAILED;
}

/* Whether two paths name the same file (so writing one would replace the other). */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (strcmp(a, b) == 0) return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int cmd_quantize(int argc, char **argv) {
    quantize_args a;
    const int parsed = parse_quantize_args(argc, argv, &a);
    if (parsed != CLI_OK) {
        if (parsed < 0) print_quantize_usage(stdout);
        free_quantize_args(&a);
        return parsed < 0 ? CLI_OK : parsed;
    }
    install_signal_handlers();
    lowbit_diag diag = {0};
    lowbit_model *model = NULL;
    lowbit_plan *plan = NULL;
    const lowbit_open_options open_options = {a.tokenizer};
    int rc = CLI_OK;
    lowbit_status st = LOWBIT_OK;
    if (same_file(a.input, a.output)) {
        fprintf(stderr, "lowbit quantize: the output %s is the input file; refusing to replace it\n",
                a.output);
        rc = CLI_FAILED;
    }
    if (rc == CLI_OK && (st = lowbit_model_open(a.input, &open_options, &model, &diag)) != LOWBIT_OK) {
        rc = fail(a.input, &diag, st);
    }
    if (rc == CLI_OK && (st = lowbit_plan_create(model, &a.options, &plan, &diag)) != LOWBIT_OK) {
        rc = fail(a.input, &diag, st);
    }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    if (rc == CLI_OK && !a.dry_run) {
        progress_state progress = {start, isatty(STDERR_FILENO)};
        a.options.progress = on_progress;
        a.options.progress_ctx = &progress;
        a.options.cancel = &interrupted;
        st = lowbit_quantize_model(model, plan, a.output, &a.options, &diag);
        /* bad weights are the input's fault; everything else is about writing the output */
        if (st != LOWBIT_OK) rc = fail(st == LOWBIT_ERR_NONFINITE ? a.input : a.output, &diag, st);
    }
    if (rc == CLI_OK) {
        if (a.json) print_plan_json(plan, &a, !a.dry_run, seconds_since(&start));
        else print_plan_text(plan, &a);
        if (!a.dry_run && !a.json) printf("wrote %s in %.2f s\n", a.output, seconds_since(&start));
    }
    lowbit_plan_destroy(plan);
    lowbit_model_close(model);
    free_quantize_args(&a);
    if (rc != CLI_OK && st == LOWBIT_ERR_CANCELLED) return 128 + (interrupted ? interrupted : SIGINT);
    return rc;
}
