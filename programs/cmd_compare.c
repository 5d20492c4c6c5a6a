/*
 * `lowbit compare BASE MODEL... --text FILE`: variants of a model (quantized ones, typically)
 * side by side against their base: file size, bits per weight (tensor bytes over tensor
 * elements), perplexity, mean KL-divergence from the base, top-1 agreement and speed.
 *
 * The base runs once, saving its log-probabilities to a temporary file (removed at the end, and
 * on SIGINT/SIGTERM); every variant is then evaluated against that file, one model in memory at
 * a time.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"
#include "lowbit.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct compare_args {
    const char *text;
    const char **models; /* models[0] is the base */
    int n_models;
    int64_t n_threads, max_paragraphs;
    int json;
} compare_args;

typedef struct compare_row {
    const char *path;
    int ok;
    uint64_t file_bytes;
    double bits_per_weight;
    lowbit_eval_result result;
} compare_row;

static void print_compare_usage(FILE *out) {
    fprintf(out,
            "usage: lowbit compare BASE MODEL... --text FILE [options]\n"
            "  BASE              the reference model (e.g. the float one)\n"
            "  MODEL...          variants to compare with it (e.g. quantized GGUF files)\n"
            "  --text FILE       evaluation text; paragraphs are separated by blank lines\n"
            "options:\n"
            "  --max-paragraphs N  evaluate the first N paragraphs only\n"
            "  --threads N       worker threads (default: one per CPU)\n"
            "  --json            print the table as JSON\n");
}

/* Returns CLI_OK, CLI_USAGE, or -1 for --help. */
static int parse_compare_args(int argc, char **argv, compare_args *a) {
    memset(a, 0, sizeof *a);
    a->models = calloc((size_t)argc, sizeof *a->models);
    if (!a->models) return CLI_USAGE;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int ok = 1;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return -1;
        if (!strcmp(arg, "--json")) a->json = 1;
        else if (arg[0] == '-' && arg[1] != '\0' && i + 1 >= argc) ok = 0;
        else if (!strcmp(arg, "--text")) a->text = argv[++i];
        else if (!strcmp(arg, "--threads")) ok = cli_parse_count(argv[++i], 1024, &a->n_threads);
        else if (!strcmp(arg, "--max-paragraphs")) ok = cli_parse_count(argv[++i], INT64_MAX, &a->max_paragraphs);
        else if (arg[0] == '-' && arg[1] != '\0') ok = 0;
        else a->models[a->n_models++] = arg;
        if (!ok) {
            fprintf(stderr, "lowbit compare: bad or incomplete option '%s'\n", arg);
            return CLI_USAGE;
        }
    }
    if (a->n_models < 2 || !a->text) {
        print_compare_usage(stderr);
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* ---- the temporary logits file, removed even on an interrupt ---- */

static char temp_logits_path[4096];

static void on_signal(int signo) {
    if (temp_logits_path[0]) unlink(temp_logits_path);
    lowbit_remove_temporary_files();
    signal(signo, SIG_DFL);
    raise(signo);
}

static int make_temp_logits_path(void) {
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    char path[sizeof temp_logits_path];
    if (snprintf(path, sizeof path, "%s/lowbit-compare-XXXXXX", dir) >= (int)sizeof path) return 0;
    const int fd = mkstemp(path);
    if (fd < 0) return 0;
    close(fd);
    memcpy(temp_logits_path, path, sizeof path);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    return 1;
}

/* ---- one row ---- */

static void describe_file(const cli_llm *llm, compare_row *row) {
    struct stat st;
    row->file_bytes = stat(row->path, &st) == 0 ? (uint64_t)st.st_size : 0;
    uint64_t bytes = 0;
    int64_t elements = 0;
    for (int64_t i = 0; i < lowbit_model_tensor_count(llm->model); i++) {
        lowbit_tensor_info t;
        if (lowbit_model_tensor(llm->model, i, &t) != LOWBIT_OK) continue;
        bytes += t.n_bytes;
        elements += t.n_elements;
    }
    row->bits_per_weight = elements ? 8.0 * (double)bytes / (double)elements : 0.0;
}

static int evaluate_row(const compare_args *a, const char *text, size_t length, int is_base,
                        compare_row *row) {
    cli_llm llm;
    if (cli_llm_open("compare", row->path, (int)a->n_threads, 1, &llm) != CLI_OK) return CLI_FAILED;
    describe_file(&llm, row);
    void *progress = cli_eval_progress_create(row->path);
    lowbit_eval_options options = {0};
    options.save_logits_path = is_base ? temp_logits_path : NULL;
    options.base_logits_path = is_base ? NULL : temp_logits_path;
    options.max_paragraphs = a->max_paragraphs;
    options.progress = progress ? cli_eval_progress : NULL;
    options.progress_ctx = progress;
    lowbit_diag diag = {0};
    const lowbit_status st =
        lowbit_eval_text(llm.llama, llm.tokenizer, text, length, &options, &row->result, &diag);
    free(progress);
    cli_llm_close(&llm);
    if (st != LOWBIT_OK) {
        fprintf(stderr, "lowbit compare: %s: %s\n", row->path,
                diag.message[0] ? diag.message : lowbit_status_name(st));
        return CLI_FAILED;
    }
    row->ok = 1;
    return CLI_OK;
}

/* ---- output ---- */

static void print_table(const compare_row *rows, int n) {
    printf("%-40s %10s %7s %10s %11s %8s %10s\n", "model", "size MB", "bpw", "perplexity",
           "KLD mean", "top-1 %", "tokens/s");
    for (int i = 0; i < n; i++) {
        const compare_row *r = &rows[i];
        if (!r->ok) {
            printf("%-40s %10s\n", r->path, "failed");
            continue;
        }
        printf("%-40s %10.3f %7.3f %10.4f ", r->path, (double)r->file_bytes / 1e6,
               r->bits_per_weight, r->result.perplexity);
        if (i == 0) printf("%11s %8s", "(base)", "");
        else printf("%11.6f %8.3f", r->result.kld_mean, 100.0 * r->result.top1_agreement);
        printf(" %10.0f\n", r->result.tokens_per_second);
    }
    if (rows[0].ok) {
        printf("\n%lld paragraphs, %lld scored tokens\n", (long long)rows[0].result.paragraphs,
               (long long)rows[0].result.scored_tokens);
    }
}

static void print_json(const compare_args *a, const compare_row *rows, int n) {
    printf("{\"text\": ");
    cli_print_json_string(a->text);
    printf(", \"rows\": [");
    for (int i = 0; i < n; i++) {
        const compare_row *r = &rows[i];
        printf("%s\n  {\"model\": ", i ? "," : "");
        cli_print_json_string(r->path);
        printf(", \"base\": %s, \"ok\": %s", i == 0 ? "true" : "false", r->ok ? "true" : "false");
        if (r->ok) {
            const lowbit_eval_result *e = &r->result;
            printf(", \"file_bytes\": %llu, \"bits_per_weight\": %.4f, \"paragraphs\": %lld, "
                   "\"scored_tokens\": %lld, \"perplexity\": %.9g",
                   (unsigned long long)r->file_bytes, r->bits_per_weight, (long long)e->paragraphs,
                   (long long)e->scored_tokens, e->perplexity);
            if (e->has_base) {
                printf(", \"kld_mean\": %.9g, \"kld_median\": %.9g, \"kld_p99\": %.9g, "
                       "\"kld_max\": %.9g, \"top1_agreement\": %.9g, \"delta_p_rms\": %.9g",
                       e->kld_mean, e->kld_median, e->kld_p99, e->kld_max, e->top1_agreement,
                       e->delta_p_rms);
            }
            printf(", \"tokens_per_second\": %.1f", e->tokens_per_second);
        }
        printf("}");
    }
    printf("\n]}\n");
}

int cmd_compare(int argc, char **argv) {
    compare_args a;
    const int parsed = parse_compare_args(argc, argv, &a);
    if (parsed != CLI_OK) {
        if (parsed < 0) print_compare_usage(stdout);
        free(a.models);
        return parsed < 0 ? CLI_OK : parsed;
    }
    char *text = NULL;
    size_t length = 0;
    compare_row *rows = calloc((size_t)a.n_models, sizeof *rows);
    int status = rows ? cli_read_file("compare", a.text, &text, &length) : CLI_FAILED;
    if (status == CLI_OK && !make_temp_logits_path()) {
        fprintf(stderr, "lowbit compare: cannot create a temporary file (set TMPDIR)\n");
        status = CLI_FAILED;
    }
    for (int i = 0; status == CLI_OK && i < a.n_models; i++) rows[i].path = a.models[i];
    if (status == CLI_OK) status = evaluate_row(&a, text, length, 1, &rows[0]);
    /* a variant that fails is reported and the others still run */
    for (int i = 1; rows && rows[0].ok && i < a.n_models; i++) {
        if (evaluate_row(&a, text, length, 0, &rows[i]) != CLI_OK) status = CLI_FAILED;
    }
    if (temp_logits_path[0]) unlink(temp_logits_path);
    temp_logits_path[0] = '\0';
    if (rows && rows[0].ok) {
        if (a.json) print_json(&a, rows, a.n_models);
        else print_table(rows, a.n_models);
    }
    free(rows);
    free(text);
    free(a.models);
    return status;
}
