/*
 * `lowbit generate MODEL [--prompt TEXT] [--temp T] [--top-p P] [--seed S] [-n N]`: text from a
 * language model, streamed to stdout as it is generated; prompt and generation speeds on stderr.
 *
 * The prompt is encoded with BOS first and run as one batch; then one token at a time. Sampling:
 * temperature 0 takes the most likely token (the first of equal ones); otherwise the logits are
 * divided by the temperature, turned into probabilities, and, with top-p < 1, restricted to the
 * smallest set of most likely tokens whose mass reaches p (ties broken by token id) before one is
 * drawn with a seeded generator (splitmix64), so a seed always gives the same text. Generation
 * stops at EOS or BOS (which separates stories), after N tokens, or at the context length.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"
#include "lowbit.h"
#include "measure.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct generate_args {
    const char *model, *prompt;
    double temperature, top_p;
    uint64_t seed;
    int64_t n_tokens, n_threads;
} generate_args;

static void print_generate_usage(FILE *out) {
    fprintf(out,
            "usage: lowbit generate MODEL [options]\n"
            "  MODEL           a language model (GGUF, llama2.c or safetensors)\n"
            "options:\n"
            "  --prompt TEXT   text to continue (default: none, start from BOS)\n"
            "  --temp T        sampling temperature; 0 takes the most likely token (default 0)\n"
            "  --top-p P       nucleus sampling: draw from the most likely tokens of mass P (default 0.9)\n"
            "  --seed S        seed of the sampler (default 1)\n"
            "  -n N            tokens to generate (default 256; at most the context length)\n"
            "  --threads N     worker threads (default: one per CPU)\n");
}

static int parse_real(const char *text, double min, double max, double *value) {
    char *end;
    const double v = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || !(v >= min && v <= max)) return 0;
    *value = v;
    return 1;
}

/* Returns CLI_OK, CLI_USAGE, or -1 for --help. */
static int parse_generate_args(int argc, char **argv, generate_args *a) {
    memset(a, 0, sizeof *a);
    a->top_p = 0.9;
    a->seed = 1;
    a->n_tokens = 256;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int ok = 1;
        int64_t seed = 0;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return -1;
        if (arg[0] == '-' && arg[1] != '\0' && i + 1 >= argc) ok = 0;
        else if (!strcmp(arg, "--prompt")) a->prompt = argv[++i];
        else if (!strcmp(arg, "--temp")) ok = parse_real(argv[++i], 0.0, 100.0, &a->temperature);
        else if (!strcmp(arg, "--top-p")) ok = parse_real(argv[++i], 1e-9, 1.0, &a->top_p);
        else if (!strcmp(arg, "--seed")) {
            ok = cli_parse_count(argv[++i], INT64_MAX, &seed);
            a->seed = (uint64_t)seed;
        }
        else if (!strcmp(arg, "-n")) ok = cli_parse_count(argv[++i], INT32_MAX, &a->n_tokens);
        else if (!strcmp(arg, "--threads")) ok = cli_parse_count(argv[++i], 1024, &a->n_threads);
        else if (arg[0] == '-' && arg[1] != '\0') ok = 0;
        else if (!a->model) a->model = arg;
        else ok = 0;
        if (!ok) {
            fprintf(stderr, "lowbit generate: bad or incomplete option '%s'\n", arg);
            return CLI_USAGE;
        }
    }
    if (!a->model) {
        print_generate_usage(stderr);
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* ---- sampling ---- */

typedef struct sampler {
    double temperature, top_p;
    uint64_t state;       /* splitmix64 */
    int32_t vocab;
    double *probs;        /* vocab, reused for every token */
    int32_t *order;       /* vocab */
} sampler;

static uint64_t next_random(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static double next_uniform(uint64_t *state) { return (double)(next_random(state) >> 11) * 0x1p-53; }

static int32_t argmax(const float *logits, int32_t vocab) {
    int32_t best = 0;
    for (int32_t v = 1; v < vocab; v++) {
        if (logits[v] > logits[best]) best = v;
    }
    return best;
}

static const double *sort_probs; /* qsort's comparator has no context argument */

static int by_probability(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (sort_probs[x] != sort_probs[y]) return sort_probs[x] > sort_probs[y] ? -1 : 1;
    return (x > y) - (x < y);
}

static int32_t sample(sampler *s, const float *logits) {
    if (s->temperature == 0.0) return argmax(logits, s->vocab);
    const float max = logits[argmax(logits, s->vocab)];
    double total = 0.0;
    for (int32_t v = 0; v < s->vocab; v++) {
        s->probs[v] = exp(((double)logits[v] - (double)max) / s->temperature);
        total += s->probs[v];
    }
    int32_t n_candidates = s->vocab;
    for (int32_t v = 0; v < s->vocab; v++) s->order[v] = v;
    if (s->top_p < 1.0) {
        sort_probs = s->probs;
        qsort(s->order, (size_t)s->vocab, sizeof *s->order, by_probability);
        double mass = 0.0;
        for (n_candidates = 0; n_candidates < s->vocab;) {
            mass += s->probs[s->order[n_candidates++]];
            if (mass >= s->top_p * total) break;
        }
        total = mass;
    }
    const double r = next_uniform(&s->state) * total;
    double cumulative = 0.0;
    for (int32_t i = 0; i < n_candidates; i++) {
        cumulative += s->probs[s->order[i]];
        if (r < cumulative) return s->order[i];
    }
    return s->order[n_candidates - 1]; /* r within rounding of the total */
}

/* ---- generation ---- */

static void emit(const lowbit_tokenizer *tokenizer, int32_t previous, int32_t token) {
    char buf[8];
    size_t length = 0;
    const char *piece = lowbit_tokenizer_decode(tokenizer, previous, token, buf, &length);
    if (piece && length) fwrite(piece, 1, length, stdout);
    fflush(stdout);
}

static int fail(const char *what, lowbit_status st, const lowbit_diag *diag) {
    fprintf(stderr, "lowbit generate: %s: %s\n", what, diag->message[0] ? diag->message : lowbit_status_name(st));
    return CLI_FAILED;
}

static int run_generation(const generate_args *a, cli_llm *llm, sampler *s, int32_t *tokens,
                          float *logits) {
    const lowbit_llama_config *config = lowbit_llama_get_config(llm->llama);
    const char *prompt = a->prompt ? a->prompt : "";
    int64_t n_prompt = 0;
    lowbit_diag diag = {0};
    lowbit_status st = lowbit_tokenizer_encode(llm->tokenizer, prompt, strlen(prompt), 1, tokens,
                                               config->context_length, &n_prompt);
    if (st != LOWBIT_OK) return fail("the prompt", st, &diag);
    if (n_prompt >= config->context_length) {
        fprintf(stderr, "lowbit generate: the prompt takes %lld tokens, the context holds %d\n",
                (long long)n_prompt, (int)config->context_length);
        return CLI_FAILED;
    }
    for (int64_t i = 1; i < n_prompt; i++) emit(llm->tokenizer, tokens[i - 1], tokens[i]);
    double t0 = measure_now_seconds();
    if ((st = lowbit_llama_forward(llm->llama, tokens, (int)n_prompt, 0, logits, &diag)) != LOWBIT_OK) {
        return fail("forward pass", st, &diag);
    }
    const double prompt_seconds = measure_now_seconds() - t0;
    const float *last = logits + (size_t)(n_prompt - 1) * (size_t)config->vocab_size;
    const int32_t bos = lowbit_tokenizer_bos(llm->tokenizer), eos = lowbit_tokenizer_eos(llm->tokenizer);
    int64_t pos = n_prompt, generated = 0;
    t0 = measure_now_seconds();
    while (generated < a->n_tokens && pos < config->context_length) {
        const int32_t next = sample(s, last);
        if (next == eos || next == bos) break;
        emit(llm->tokenizer, tokens[pos - 1], next);
        tokens[pos] = next;
        generated++;
        if (generated == a->n_tokens || pos + 1 >= config->context_length) break;
        if ((st = lowbit_llama_forward(llm->llama, &tokens[pos], 1, (int)pos, logits, &diag)) != LOWBIT_OK) {
            return fail("forward pass", st, &diag);
        }
        last = logits;
        pos++;
    }
    const double generate_seconds = measure_now_seconds() - t0;
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "prompt: %lld tokens, %.1f tokens/s; generation: %lld tokens, %.1f tokens/s\n",
            (long long)n_prompt, prompt_seconds > 0 ? (double)n_prompt / prompt_seconds : 0.0,
            (long long)generated, generate_seconds > 0 ? (double)generated / generate_seconds : 0.0);
    return CLI_OK;
}

int cmd_generate(int argc, char **argv) {
    generate_args a;
    const int parsed = parse_generate_args(argc, argv, &a);
    if (parsed != CLI_OK) {
        if (parsed < 0) print_generate_usage(stdout);
        return parsed < 0 ? CLI_OK : parsed;
    }
    cli_llm llm;
    int status = cli_llm_open("generate", a.model, (int)a.n_threads, 1, &llm);
    if (status != CLI_OK) return status;
    const lowbit_llama_config *config = lowbit_llama_get_config(llm.llama);
    const size_t vocab = (size_t)config->vocab_size, context = (size_t)config->context_length;
    sampler s = {a.temperature, a.top_p, a.seed, config->vocab_size, NULL, NULL};
    s.probs = malloc(vocab * sizeof *s.probs);
    s.order = malloc(vocab * sizeof *s.order);
    int32_t *tokens = malloc(context * sizeof *tokens);
    float *logits = malloc(context * vocab * sizeof *logits); /* the prompt's batch */
    if (!s.probs || !s.order || !tokens || !logits) {
        fprintf(stderr, "lowbit generate: out of memory\n");
        status = CLI_FAILED;
    } else {
        status = run_generation(&a, &llm, &s, tokens, logits);
    }
    free(s.probs);
    free(s.order);
    free(tokens);
    free(logits);
    cli_llm_close(&llm);
    return status;
}
