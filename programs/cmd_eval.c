/*
 * `lowbit eval MODEL --text FILE [--base BASE | --base-logits FILE] [--save-logits FILE]`:
 * perplexity of a language model on a text by the protocol of lowbit_eval_text, and with a base
 * (another model run on the same tokens, or its logits saved earlier with --save-logits) the
 * KL-divergence from it, top-1 agreement and the change of the correct token's probability.
 *
 * The command dispatches on general.architecture: "llama" is evaluated here, image classifiers
 * ("lowbit-classifier", "lowbit-classifier-int") by cli_eval_classifier; other architectures are
 * refused with a clear message.
 *
 * Also the helpers the language-model commands (eval, generate, compare) share.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"
#include "lowbit.h"
#include "measure.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- shared helpers ---- */

int cli_parse_count(const char *text, int64_t max, int64_t *value) {
    char *end;
    const long long v = strtoll(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v < 0 || v > max) return 0;
    *value = v;
    return 1;
}

int cli_read_file(const char *command, const char *path, char **data, size_t *length) {
    *data = NULL;
    *length = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "lowbit %s: cannot open %s\n", command, path);
        return CLI_FAILED;
    }
    size_t capacity = 1 << 16, n = 0;
    char *buf = malloc(capacity);
    while (buf) {
        n += fread(buf + n, 1, capacity - n, f);
        if (n < capacity) break;
        char *grown = realloc(buf, capacity * 2);
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        capacity *= 2;
    }
    const int failed = !buf || ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        fprintf(stderr, "lowbit %s: cannot read %s\n", command, path);
        return CLI_FAILED;
    }
    *data = buf;
    *length = n;
    return CLI_OK;
}

/* The value of general.architecture, copied into buf ("" when the key is missing). */
void cli_model_architecture(const lowbit_model *model, char *buf, size_t size) {
    buf[0] = '\0';
    for (int64_t i = 0; i < lowbit_model_kv_count(model); i++) {
        lowbit_kv_info kv;
        if (lowbit_model_kv(model, i, &kv) != LOWBIT_OK || strcmp(kv.key, "general.architecture")) {
            continue;
        }
        if (kv.type != LOWBIT_GGUF_STRING || kv.value_size < 8) return;
        uint64_t n = 0;
        memcpy(&n, kv.value, 8); /* GGUF strings: uint64 length (little-endian), then bytes */
        if (n > kv.value_size - 8) return;
        const size_t copied = n < size - 1 ? (size_t)n : size - 1;
        memcpy(buf, (const char *)kv.value + 8, copied);
        buf[copied] = '\0';
        return;
    }
}

static int report_failure(const char *command, const char *path, lowbit_status st,
                          const lowbit_diag *diag) {
    fprintf(stderr, "lowbit %s: %s: %s\n", command, path,
            diag->message[0] ? diag->message : lowbit_status_name(st));
    return CLI_FAILED;
}

int cli_llm_open(const char *command, const char *path, int n_threads, int with_tokenizer,
                 cli_llm *llm) {
    memset(llm, 0, sizeof *llm);
    lowbit_diag diag = {0};
    lowbit_status st = lowbit_model_open(path, NULL, &llm->model, &diag);
    if (st != LOWBIT_OK) return report_failure(command, path, st, &diag);
    char arch[64];
    cli_model_architecture(llm->model, arch, sizeof arch);
    if (strcmp(arch, "llama") != 0) {
        fprintf(stderr, "lowbit %s: %s: architecture \"%s\" is not supported yet (only llama)\n",
                command, path, arch[0] ? arch : "(none: no general.architecture)");
        cli_llm_close(llm);
        return CLI_FAILED;
    }
    if (with_tokenizer && (st = lowbit_tokenizer_create(llm->model, &llm->tokenizer, &diag)) != LOWBIT_OK) {
        cli_llm_close(llm);
        return report_failure(command, path, st, &diag);
    }
    if ((st = lowbit_llama_create(llm->model, n_threads, &llm->llama, &diag)) != LOWBIT_OK) {
        cli_llm_close(llm);
        return report_failure(command, path, st, &diag);
    }
    return CLI_OK;
}

void cli_llm_close(cli_llm *llm) {
    lowbit_llama_free(llm->llama);
    lowbit_tokenizer_free(llm->tokenizer);
    lowbit_model_close(llm->model);
    memset(llm, 0, sizeof *llm);
}

/* Progress of an evaluation on stderr: a line redrawn at most 10 times a second on a terminal,
   a plain line every tenth of the work otherwise. */
typedef struct eval_progress {
    const char *label;
    int terminal;
    double last_draw;
    int64_t last_tenth;
} eval_progress;

void cli_eval_progress(void *ctx, int64_t done, int64_t total) {
    eval_progress *p = ctx;
    if (p->terminal) {
        const double now = measure_now_seconds();
        if (done < total && now - p->last_draw < 0.1) return;
        p->last_draw = now;
        fprintf(stderr, "\r%s: %lld/%lld paragraphs ", p->label, (long long)done, (long long)total);
        if (done == total) fprintf(stderr, "\r%*s\r", (int)strlen(p->label) + 40, "");
        return;
    }
    const int64_t tenth = total ? done * 10 / total : 10;
    if (tenth != p->last_tenth) {
        p->last_tenth = tenth;
        fprintf(stderr, "%s: %lld/%lld paragraphs\n", p->label, (long long)done, (long long)total);
    }
}

void *cli_eval_progress_create(const char *label) {
    eval_progress *p = calloc(1, sizeof *p);
    if (p) {
        p->label = label;
        p->terminal = isatty(STDERR_FILENO);
    }
    return p;
}

/* ---- eval ---- */

typedef struct eval_args {
    const char *model, *text, *base, *base_logits, *save_logits;
    int64_t n_threads, max_paragraphs;
    int json;
} eval_args;

static void print_eval_usage(FILE *out) {
    fprintf(out,
            "usage: lowbit eval MODEL --text FILE [options]\n"
            "  MODEL                  a language model (GGUF, llama2.c or safetensors)\n"
            "  --text FILE            evaluation text; paragraphs are separated by blank lines\n"
            "options:\n"
            "  --base BASE_MODEL      also compare with a base model run on the same tokens:\n"
            "                         KL-divergence, top-1 agreement, change of p(correct)\n"
            "  --base-logits FILE     the same from the base's logits saved with --save-logits\n"
            "  --save-logits FILE     save this model's log-probabilities (to serve as a base)\n"
            "  --max-paragraphs N     evaluate the first N paragraphs only\n"
            "  --threads N            worker threads (default: one per CPU)\n"
            "  --json                 print the result as JSON\n");
}

/* Returns CLI_OK, CLI_USAGE, or -1 for --help. */
static int parse_eval_args(int argc, char **argv, eval_args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const int has_value = i + 1 < argc;
        int ok = 1;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return -1;
        if (!strcmp(arg, "--json")) a->json = 1;
        else if (arg[0] == '-' && arg[1] != '\0' && !has_value) ok = 0;
        else if (!strcmp(arg, "--text")) a->text = argv[++i];
        else if (!strcmp(arg, "--base")) a->base = argv[++i];
        else if (!strcmp(arg, "--base-logits")) a->base_logits = argv[++i];
        else if (!strcmp(arg, "--save-logits")) a->save_logits = argv[++i];
        else if (!strcmp(arg, "--threads")) ok = cli_parse_count(argv[++i], 1024, &a->n_threads);
        else if (!strcmp(arg, "--max-paragraphs")) ok = cli_parse_count(argv[++i], INT64_MAX, &a->max_paragraphs);
        else if (arg[0] == '-' && arg[1] != '\0') ok = 0;
        else if (!a->model) a->model = arg;
        else ok = 0;
        if (!ok) {
            fprintf(stderr, "lowbit eval: bad or incomplete option '%s'\n", arg);
            return CLI_USAGE;
        }
    }
    if (!a->model || !a->text) {
        print_eval_usage(stderr);
        return CLI_USAGE;
    }
    if (a->base && a->base_logits) {
        fprintf(stderr, "lowbit eval: give --base or --base-logits, not both\n");
        return CLI_USAGE;
    }
    return CLI_OK;
}

void cli_print_json_string(const char *s) { cli_print_json_chars(s, strlen(s)); }

void cli_print_json_chars(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static void print_eval_text(const eval_args *a, const lowbit_eval_result *r) {
    printf("%s on %s: %lld paragraphs", a->model, a->text, (long long)r->paragraphs);
    if (r->skipped_paragraphs) printf(" (%lld skipped)", (long long)r->skipped_paragraphs);
    printf(", %lld scored tokens\n", (long long)r->scored_tokens);
    printf("perplexity   %.4f   (NLL %.5f per token)\n", r->perplexity, r->nll_per_token);
    if (r->has_base) {
        printf("base         %s, perplexity %.4f\n", a->base ? a->base : a->base_logits,
               r->base_perplexity);
        printf("KLD          mean %.6f  median %.6f  p99 %.6f  max %.6f\n", r->kld_mean,
               r->kld_median, r->kld_p99, r->kld_max);
        printf("top-1        %.3f%% agree with the base\n", 100.0 * r->top1_agreement);
        printf("delta p      RMS %.5f\n", r->delta_p_rms);
    }
    printf("speed        %.0f tokens/s (%.2f s in the forward pass)\n", r->tokens_per_second,
           r->seconds);
}

static void print_eval_json(const eval_args *a, const lowbit_eval_result *r) {
    printf("{\"model\": ");
    cli_print_json_string(a->model);
    printf(", \"text\": ");
    cli_print_json_string(a->text);
    printf(", \"paragraphs\": %lld, \"skipped_paragraphs\": %lld, \"scored_tokens\": %lld, "
           "\"nll_per_token\": %.9g, \"perplexity\": %.9g",
           (long long)r->paragraphs, (long long)r->skipped_paragraphs,
           (long long)r->scored_tokens, r->nll_per_token, r->perplexity);
    if (r->has_base) {
        printf(", \"base\": ");
        cli_print_json_string(a->base ? a->base : a->base_logits);
        printf(", \"base_perplexity\": %.9g, \"kld_mean\": %.9g, \"kld_median\": %.9g, "
               "\"kld_p99\": %.9g, \"kld_max\": %.9g, \"top1_agreement\": %.9g, "
               "\"delta_p_rms\": %.9g",
               r->base_perplexity, r->kld_mean, r->kld_median, r->kld_p99, r->kld_max,
               r->top1_agreement, r->delta_p_rms);
    }
    printf(", \"seconds\": %.4f, \"tokens_per_second\": %.1f}\n", r->seconds, r->tokens_per_second);
}

/* The model argument of an eval command line: the first argument that is neither an option nor
   the value of one (options of both the language-model and the classifier forms). */
static const char *find_model_argument(int argc, char **argv) {
    static const char *const with_value[] = {"--text", "--base", "--base-logits", "--save-logits",
                                             "--threads", "--max-paragraphs", "--data",
                                             "--max-images", "--batch", "--repeats"};
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] != '-' || argv[i][1] == '\0') return argv[i];
        for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++) {
            if (!strcmp(argv[i], with_value[k])) {
                i++;
                break;
            }
        }
    }
    return NULL;
}

/* 1 when the file is an image classifier lowbit wrote (its architecture key says so). */
static int is_classifier_file(const char *path) {
    lowbit_model *model = NULL;
    if (!path || lowbit_model_open(path, NULL, &model, NULL) != LOWBIT_OK) return 0;
    char arch[64];
    cli_model_architecture(model, arch, sizeof arch);
    lowbit_model_close(model);
    return strncmp(arch, "lowbit-classifier", 17) == 0;
}

int cmd_eval(int argc, char **argv) {
    if (is_classifier_file(find_model_argument(argc, argv))) return cli_eval_classifier(argc, argv);
    eval_args a;
    const int parsed = parse_eval_args(argc, argv, &a);
    if (parsed != CLI_OK) {
        if (parsed < 0) print_eval_usage(stdout);
        return parsed < 0 ? CLI_OK : parsed;
    }
    char *text = NULL;
    size_t length = 0;
    cli_llm model, base;
    memset(&base, 0, sizeof base);
    int status = cli_read_file("eval", a.text, &text, &length);
    if (status == CLI_OK) status = cli_llm_open("eval", a.model, (int)a.n_threads, 1, &model);
    else memset(&model, 0, sizeof model);
    if (status == CLI_OK && a.base) status = cli_llm_open("eval", a.base, (int)a.n_threads, 0, &base);
    if (status == CLI_OK) {
        eval_progress *progress = cli_eval_progress_create("eval");
        lowbit_eval_options options = {0};
        options.base = base.llama;
        options.base_logits_path = a.base_logits;
        options.save_logits_path = a.save_logits;
        options.max_paragraphs = a.max_paragraphs;
        options.progress = progress ? cli_eval_progress : NULL;
        options.progress_ctx = progress;
        lowbit_eval_result result;
        lowbit_diag diag = {0};
        const lowbit_status st =
            lowbit_eval_text(model.llama, model.tokenizer, text, length, &options, &result, &diag);
        free(progress);
        if (st != LOWBIT_OK) {
            status = report_failure("eval", a.model, st, &diag);
        } else if (a.json) {
            print_eval_json(&a, &result);
        } else {
            print_eval_text(&a, &result);
        }
    }
    cli_llm_close(&base);
    cli_llm_close(&model);
    free(text);
    return status;
}
