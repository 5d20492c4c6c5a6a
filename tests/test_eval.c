/*
 * Evaluation (lowbit_eval_text) and the eval/generate commands, on stories260K:
 * - perplexity over the first paragraphs of tinystories_eval.txt equals an independent
 *   computation here (own paragraph split, encoding, forward pass and log-softmax in double);
 * - paragraph counting on small synthetic texts: empty and blank pieces, "\n\n\n", trailing
 *   newlines, max_paragraphs, and (babyllama105, no byte fallback) skipped paragraphs;
 * - the model against itself: KLD exactly 0, top-1 100%, no change of p(correct);
 * - its Q8_0 quantization (written here) against it: small positive KLD, high top-1;
 * - logits saved to a file then used as base give the very same numbers as the base in process;
 *   a file for another token stream, a truncated one and a foreign one are rejected;
 * - the CLI: eval --json prints the same perplexity; greedy generate tells the known story.
 * The full-file figures (README: 5.6626 for stories260K) take too long for a test and are run by
 * hand with `lowbit eval`.
 */
#define _GNU_SOURCE
#include "testing.h"
#include "lowbit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_PARAGRAPHS 8

static char work_dir[256];

static const char *work_path(const char *name) { return lb_join_path(work_dir, name); }

typedef struct lm {
    lowbit_model *model;
    lowbit_tokenizer *tokenizer;
    lowbit_llama *llama;
} lm;

static int lm_open(const char *path, lm *m) {
    memset(m, 0, sizeof *m);
    lowbit_diag diag = {0};
    if (lowbit_model_open(path, NULL, &m->model, &diag) != LOWBIT_OK ||
        lowbit_tokenizer_create(m->model, &m->tokenizer, &diag) != LOWBIT_OK ||
        lowbit_llama_create(m->model, 1, &m->llama, &diag) != LOWBIT_OK) {
        fprintf(stderr, "%s: %s\n", path, diag.message);
        return 0;
    }
    return 1;
}

static void lm_close(lm *m) {
    lowbit_llama_free(m->llama);
    lowbit_tokenizer_free(m->tokenizer);
    lowbit_model_close(m->model);
}

/* ---- the independent computation ---- */

/* NLL sum and counts over the first n_paragraphs non-blank "\n\n"-separated pieces. */
static void reference_nll(const lm *m, const char *text, int n_paragraphs, double *nll_sum,
                          int64_t *scored, int64_t *paragraphs) {
    const lowbit_llama_config *config = lowbit_llama_get_config(m->llama);
    const int ctx = config->context_length, vocab = config->vocab_size;
    int32_t *tokens = malloc(sizeof(int32_t) * 100000);
    float *logits = malloc(sizeof(float) * (size_t)ctx * (size_t)vocab);
    *nll_sum = 0;
    *scored = *paragraphs = 0;
    const char *p = text;
    while (*paragraphs < n_paragraphs && *p) {
        const char *end = strstr(p, "\n\n");
        const size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0) {
            int64_t count = 0;
            lowbit_tokenizer_encode(m->tokenizer, p, n, 1, tokens, 100000, &count);
            const int used = count < ctx ? (int)count : ctx;
            lowbit_llama_forward(m->llama, tokens, used, 0, logits, NULL);
            for (int i = 0; i + 1 < used; i++) {
                const float *row = logits + (size_t)i * (size_t)vocab;
                double max = row[0], sum = 0;
                for (int v = 1; v < vocab; v++) max = row[v] > max ? row[v] : max;
                for (int v = 0; v < vocab; v++) sum += exp((double)row[v] - max);
                *nll_sum += max + log(sum) - (double)row[tokens[i + 1]];
            }
            *scored += used - 1;
            ++*paragraphs;
        }
        p = end ? end + 2 : p + n;
    }
    free(tokens);
    free(logits);
}

static void test_perplexity(const lm *m, const char *text, size_t length) {
    lowbit_eval_options options = {0};
    options.max_paragraphs = N_PARAGRAPHS;
    lowbit_eval_result r;
    lowbit_diag diag = {0};
    const lowbit_status st = lowbit_eval_text(m->llama, m->tokenizer, text, length, &options, &r, &diag);
    CHECK(st == LOWBIT_OK, "eval: %s", diag.message);
    double nll_sum;
    int64_t scored, paragraphs;
    reference_nll(m, text, N_PARAGRAPHS, &nll_sum, &scored, &paragraphs);
    CHECK(r.paragraphs == paragraphs && r.paragraphs == N_PARAGRAPHS, "%lld paragraphs", (long long)r.paragraphs);
    CHECK(r.scored_tokens == scored && scored > 200, "%lld scored, reference %lld",
          (long long)r.scored_tokens, (long long)scored);
    CHECK(r.skipped_paragraphs == 0, "%lld skipped", (long long)r.skipped_paragraphs);
    const double nll = nll_sum / (double)scored;
    CHECK(fabs(r.nll_per_token - nll) < 1e-12 * nll, "NLL %.15f, reference %.15f", r.nll_per_token, nll);
    CHECK(fabs(r.perplexity - exp(nll)) < 1e-10 * exp(nll), "perplexity %.12f", r.perplexity);
    CHECK(!r.has_base, "no base given");
    CHECK(r.perplexity > 3 && r.perplexity < 12, "perplexity %f of a trained model", r.perplexity);
    CHECK(r.tokens_per_second > 0 && r.seconds > 0, "speed measured");
}

/* ---- paragraph counting ---- */

static lowbit_eval_result eval_string(const lm *m, const char *text, int64_t max_paragraphs,
                                      lowbit_status *status) {
    lowbit_eval_options options = {0};
    options.max_paragraphs = max_paragraphs;
    lowbit_eval_result r;
    memset(&r, 0, sizeof r);
    *status = lowbit_eval_text(m->llama, m->tokenizer, text, strlen(text), &options, &r, NULL);
    return r;
}

static int64_t scored_of(const lm *m, const char *const *pieces, int n) {
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        int32_t tokens[512];
        int64_t count = 0;
        lowbit_tokenizer_encode(m->tokenizer, pieces[i], strlen(pieces[i]), 1, tokens, 512, &count);
        total += count - 1;
    }
    return total;
}

static void test_paragraph_counting(const lm *m) {
    lowbit_status st;
    /* empty pieces (leading "\n\n", "\n\n\n\n", trailing "\n\n"), a blank piece, "\n\n\n" leaving
       a newline at the start of the next piece, a trailing newline kept */
    const char *text = "\n\nOnce upon a time.\n\n\n\nThe end.\n\n  \t\n\nA cat\n\n\nsat.\n\nBye.\n";
    const char *pieces[] = {"Once upon a time.", "The end.", "A cat", "\nsat.", "Bye.\n"};
    lowbit_eval_result r = eval_string(m, text, 0, &st);
    CHECK(st == LOWBIT_OK && r.paragraphs == 5 && r.skipped_paragraphs == 0,
          "%lld paragraphs (%s)", (long long)r.paragraphs, lowbit_status_name(st));
    CHECK(r.scored_tokens == scored_of(m, pieces, 5), "%lld scored, expected %lld",
          (long long)r.scored_tokens, (long long)scored_of(m, pieces, 5));
    r = eval_string(m, text, 2, &st);
    CHECK(st == LOWBIT_OK && r.paragraphs == 2 && r.scored_tokens == scored_of(m, pieces, 2),
          "max_paragraphs 2: %lld paragraphs", (long long)r.paragraphs);
    r = eval_string(m, "One paragraph, no separator", 0, &st);
    CHECK(st == LOWBIT_OK && r.paragraphs == 1, "one paragraph: %lld", (long long)r.paragraphs);
    r = eval_string(m, "", 0, &st);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT, "an empty text: %s", lowbit_status_name(st));
    r = eval_string(m, "\n\n \n\n\n\n\t\n", 0, &st);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT, "a blank text: %s", lowbit_status_name(st));
}

/* babyllama105's tokenizer has no byte fallback: paragraphs it cannot encode (a newline inside
   one, a character it lacks) are skipped and counted. */
static void test_skipped_paragraphs(void) {
    lm m;
    if (!lm_open(lb_shared_path("models/babyllama105.bin"), &m)) {
        CHECK(0, "babyllama105 opens");
        return;
    }
    CHECK(!lowbit_tokenizer_has_byte_fallback(m.tokenizer), "tok105 has no byte fallback");
    lowbit_status st;
    const char *text = "Once upon a time.\n\nLine one\nline two.\n\nThe end.\n\nA # sign.\n\nBye";
    lowbit_eval_result r = eval_string(&m, text, 0, &st);
    CHECK(st == LOWBIT_OK && r.paragraphs == 3 && r.skipped_paragraphs == 2,
          "%lld kept, %lld skipped (%s)", (long long)r.paragraphs, (long long)r.skipped_paragraphs,
          lowbit_status_name(st));
    const char *pieces[] = {"Once upon a time.", "The end.", "Bye"};
    CHECK(r.scored_tokens == scored_of(&m, pieces, 3), "%lld scored", (long long)r.scored_tokens);
    lm_close(&m);
}

/* ---- against a base ---- */

static void test_self_comparison(const lm *m, const lm *twin, const char *text, size_t length) {
    lowbit_eval_options options = {0};
    options.max_paragraphs = N_PARAGRAPHS;
    options.base = twin->llama;
    lowbit_eval_result r;
    lowbit_diag diag = {0};
    const lowbit_status st = lowbit_eval_text(m->llama, m->tokenizer, text, length, &options, &r, &diag);
    CHECK(st == LOWBIT_OK, "self comparison: %s", diag.message);
    CHECK(r.has_base, "has_base");
    CHECK(r.kld_mean == 0 && r.kld_median == 0 && r.kld_p99 == 0 && r.kld_max == 0,
          "KLD of a model against itself: mean %g max %g", r.kld_mean, r.kld_max);
    CHECK(r.top1_agreement == 1.0, "top-1 %f", r.top1_agreement);
    CHECK(r.delta_p_rms == 0, "delta p %g", r.delta_p_rms);
    CHECK(fabs(r.base_perplexity - r.perplexity) < 1e-6 * r.perplexity, "base perplexity %f vs %f",
          r.base_perplexity, r.perplexity);
}

static int write_q8_0(const char *source, const char *out) {
    lowbit_model *model = NULL;
    lowbit_plan *plan = NULL;
    lowbit_diag diag = {0};
    lowbit_quantize_options options;
    lowbit_quantize_options_init(&options);
    options.preset = "Q8_0";
    options.n_threads = 1;
    int ok = lowbit_model_open(source, NULL, &model, &diag) == LOWBIT_OK &&
             lowbit_plan_create(model, &options, &plan, &diag) == LOWBIT_OK &&
             lowbit_quantize_model(model, plan, out, &options, &diag) == LOWBIT_OK;
    if (!ok) fprintf(stderr, "Q8_0: %s\n", diag.message);
    lowbit_plan_destroy(plan);
    lowbit_model_close(model);
    return ok;
}

static int same_comparison(const lowbit_eval_result *a, const lowbit_eval_result *b) {
    return a->paragraphs == b->paragraphs && a->scored_tokens == b->scored_tokens &&
           a->nll_per_token == b->nll_per_token && a->kld_mean == b->kld_mean &&
           a->kld_median == b->kld_median && a->kld_p99 == b->kld_p99 && a->kld_max == b->kld_max &&
           a->top1_agreement == b->top1_agreement && a->delta_p_rms == b->delta_p_rms &&
           a->base_perplexity == b->base_perplexity;
}

static lowbit_status eval_with(const lm *m, const char *text, size_t length, int64_t max_paragraphs,
                               lowbit_llama *base, const char *base_logits,
                               const char *save_logits, lowbit_eval_result *r, lowbit_diag *diag) {
    lowbit_eval_options options = {0};
    options.max_paragraphs = max_paragraphs;
    options.base = base;
    options.base_logits_path = base_logits;
    options.save_logits_path = save_logits;
    return lowbit_eval_text(m->llama, m->tokenizer, text, length, &options, r, diag);
}

static void test_quantized_against_base(const lm *base, const char *text, size_t length) {
    const char *q8_path = work_path("q8_0.gguf");
    if (!write_q8_0(lb_shared_path("models/stories260K.bin"), q8_path)) {
        CHECK(0, "Q8_0 written");
        return;
    }
    lm q8;
    if (!lm_open(q8_path, &q8)) {
        CHECK(0, "Q8_0 opens");
        return;
    }
    lowbit_eval_result in_process, from_file, saved;
    lowbit_diag diag = {0};
    lowbit_status st = eval_with(&q8, text, length, N_PARAGRAPHS, base->llama, NULL, NULL, &in_process, &diag);
    CHECK(st == LOWBIT_OK, "Q8_0 vs base: %s", diag.message);
    CHECK(in_process.kld_mean > 1e-6 && in_process.kld_mean < 0.01, "Q8_0 KLD mean %g", in_process.kld_mean);
    CHECK(in_process.kld_median <= in_process.kld_p99 && in_process.kld_p99 <= in_process.kld_max &&
              in_process.kld_max < 0.5, "KLD median %g p99 %g max %g", in_process.kld_median,
          in_process.kld_p99, in_process.kld_max);
    CHECK(in_process.top1_agreement > 0.95 && in_process.top1_agreement < 1.0, "top-1 %f",
          in_process.top1_agreement);
    CHECK(in_process.delta_p_rms > 0 && in_process.delta_p_rms < 0.05, "delta p RMS %g", in_process.delta_p_rms);
    CHECK(fabs(in_process.perplexity / in_process.base_perplexity - 1) < 0.02, "Q8_0 %f, base %f",
          in_process.perplexity, in_process.base_perplexity);

    /* the base's logits saved, then read back */
    const char *logits_path = work_path("base.logits");
    st = eval_with(base, text, length, N_PARAGRAPHS, NULL, NULL, logits_path, &saved, &diag);
    CHECK(st == LOWBIT_OK, "save logits: %s", diag.message);
    CHECK(fabs(saved.perplexity - in_process.base_perplexity) < 1e-6 * saved.perplexity,
          "base perplexity %f, saved run %f", in_process.base_perplexity, saved.perplexity);
    st = eval_with(&q8, text, length, N_PARAGRAPHS, NULL, logits_path, NULL, &from_file, &diag);
    CHECK(st == LOWBIT_OK, "from saved logits: %s", diag.message);
    CHECK(from_file.has_base && same_comparison(&in_process, &from_file),
          "saved base: KLD %.12g vs %.12g, top-1 %f vs %f", from_file.kld_mean, in_process.kld_mean,
          from_file.top1_agreement, in_process.top1_agreement);

    /* rejected: another token stream (paragraph count, text), both bases, a truncated or foreign
       file, another vocabulary */
    st = eval_with(&q8, text, length, N_PARAGRAPHS - 1, NULL, logits_path, NULL, &from_file, &diag);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT && strstr(diag.message, "token stream"),
          "fewer paragraphs: %s", diag.message);
    st = eval_with(&q8, text + 1, length - 1, N_PARAGRAPHS, NULL, logits_path, NULL, &from_file, &diag);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT, "another text: %s", lowbit_status_name(st));
    st = eval_with(&q8, text, length, N_PARAGRAPHS, base->llama, logits_path, NULL, &from_file, &diag);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT, "two bases: %s", lowbit_status_name(st));
    st = eval_with(&q8, text, length, N_PARAGRAPHS, NULL, work_path("missing"), NULL, &from_file, &diag);
    CHECK(st == LOWBIT_ERR_IO, "missing file: %s", lowbit_status_name(st));
    CHECK(truncate(logits_path, 64 + 4 * 512 * 3) == 0, "truncate");
    st = eval_with(&q8, text, length, N_PARAGRAPHS, NULL, logits_path, NULL, &from_file, &diag);
    CHECK(st == LOWBIT_ERR_BAD_FILE, "truncated file: %s", lowbit_status_name(st));
    FILE *f = fopen(logits_path, "r+b");
    if (f) {
        const uint32_t vocab = 511;
        fseek(f, 12, SEEK_SET);
        fwrite(&vocab, 4, 1, f);
        fclose(f);
    }
    st = eval_with(&q8, text, length, N_PARAGRAPHS, NULL, logits_path, NULL, &from_file, &diag);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT && strstr(diag.message, "511"), "another vocab: %s", diag.message);
    st = eval_with(&q8, text, length, N_PARAGRAPHS, NULL, q8_path, NULL, &from_file, &diag);
    CHECK(st == LOWBIT_ERR_BAD_FILE, "a GGUF as logits: %s", lowbit_status_name(st));
    lm_close(&q8);
    unlink(q8_path);
    unlink(logits_path);
}

/* ---- the CLI ---- */

static char *run_command(const char *command) {
    FILE *p = popen(command, "r");
    if (!p) return NULL;
    size_t capacity = 1 << 16, n = 0;
    char *out = malloc(capacity);
    if (out) {
        n = fread(out, 1, capacity - 1, p);
        out[n] = '\0';
    }
    const int status = pclose(p);
    if (status != 0 && out) out[0] = '\0';
    return out;
}

static void test_cli(const lm *m, const char *text, size_t length) {
    const char *model = lb_shared_path("models/stories260K.bin");
    char model_path[4096], command[16384];
    snprintf(model_path, sizeof model_path, "%s", model);
    snprintf(command, sizeof command, "%s eval '%s' --text '%s' --max-paragraphs 3 --threads 1 --json 2>/dev/null",
             lb_cli_command(), model_path, lb_shared_path("data/tinystories_eval.txt"));
    char *out = run_command(command);
    lowbit_eval_result r;
    lowbit_status st;
    (void)text;
    (void)length;
    {
        lowbit_eval_options options = {0};
        options.max_paragraphs = 3;
        st = lowbit_eval_text(m->llama, m->tokenizer, text, length, &options, &r, NULL);
    }
    const char *field = out ? strstr(out, "\"perplexity\": ") : NULL;
    CHECK(st == LOWBIT_OK && field, "eval --json output: %s", out ? out : "(none)");
    if (field) {
        const double printed = strtod(field + strlen("\"perplexity\": "), NULL);
        CHECK(fabs(printed - r.perplexity) < 1e-7 * r.perplexity, "CLI perplexity %.9g, API %.9g",
              printed, r.perplexity);
        CHECK(strstr(out, "\"paragraphs\": 3,") != NULL, "paragraphs in %s", out);
    }
    free(out);

    snprintf(command, sizeof command, "%s generate '%s' -n 40 --threads 1 2>/dev/null",
             lb_cli_command(), model_path);
    out = run_command(command);
    const char *story = "Once upon a time, there was a little girl named Lily. She loved to play "
                        "outside in the park.";
    CHECK(out && strncmp(out, story, strlen(story)) == 0, "greedy story: %s", out ? out : "(none)");
    free(out);

    /* sampling is deterministic for a seed */
    snprintf(command, sizeof command,
             "%s generate '%s' -n 30 --temp 0.9 --top-p 0.9 --seed 42 --prompt 'The dog' 2>/dev/null",
             lb_cli_command(), model_path);
    char *first = run_command(command), *second = run_command(command);
    CHECK(first && second && first[0] && strcmp(first, second) == 0 && !strncmp(first, "The dog", 7),
          "seeded sampling: '%s' vs '%s'", first ? first : "", second ? second : "");
    free(first);
    free(second);

    /* compare: the model against itself through the saved-logits file */
    snprintf(command, sizeof command,
             "%s compare '%s' '%s' --text '%s' --max-paragraphs 2 --threads 1 --json 2>/dev/null",
             lb_cli_command(), model_path, model_path, lb_shared_path("data/tinystories_eval.txt"));
    out = run_command(command);
    CHECK(out && strstr(out, "\"kld_mean\": 0,") && strstr(out, "\"top1_agreement\": 1,") &&
              strstr(out, "\"bits_per_weight\": 32.0000"),
          "compare --json: %s", out ? out : "(none)");
    free(out);

    /* another architecture: a GGUF holding only general.architecture = "resnet" */
    const char *other = work_path("other.gguf");
    FILE *f = fopen(other, "wb");
    if (f) {
        const char key[] = "general.architecture", value[] = "resnet";
        const uint32_t version = 3, string_type = 8;
        const uint64_t n_tensors = 0, n_kv = 1, key_len = sizeof key - 1, value_len = sizeof value - 1;
        fwrite("GGUF", 1, 4, f);
        fwrite(&version, 4, 1, f);
        fwrite(&n_tensors, 8, 1, f);
        fwrite(&n_kv, 8, 1, f);
        fwrite(&key_len, 8, 1, f);
        fwrite(key, 1, key_len, f);
        fwrite(&string_type, 4, 1, f);
        fwrite(&value_len, 8, 1, f);
        fwrite(value, 1, value_len, f);
        fclose(f);
    }
    snprintf(command, sizeof command, "%s eval '%s' --text '%s' 2>&1; echo status $?",
             lb_cli_command(), other, lb_shared_path("data/tinystories_eval.txt"));
    out = run_command(command);
    CHECK(out && strstr(out, "\"resnet\" is not supported yet") && strstr(out, "status 1"),
          "another architecture: %s", out ? out : "(none)");
    free(out);
    unlink(other);

    snprintf(command, sizeof command, "%s eval '%s' 2>/dev/null; echo status $?", lb_cli_command(), model_path);
    out = run_command(command);
    CHECK(out && strstr(out, "status 2"), "eval without --text is a usage error: %s", out ? out : "");
    free(out);
}

int main(void) {
    snprintf(work_dir, sizeof work_dir, "/tmp/lowbit_test_eval_XXXXXX");
    if (!mkdtemp(work_dir)) {
        CHECK(0, "temporary folder");
        return lb_test_summary();
    }
    size_t length = 0;
    char *text = lb_read_whole_file(lb_shared_path("data/tinystories_eval.txt"), &length);
    lm m, twin;
    if (!text || !lm_open(lb_shared_path("models/stories260K.bin"), &m) ||
        !lm_open(lb_shared_path("models/stories260K.bin"), &twin)) {
        CHECK(0, "stories260K and its evaluation text open");
        return lb_test_summary();
    }
    test_perplexity(&m, text, length);
    test_paragraph_counting(&m);
    test_skipped_paragraphs();
    test_self_comparison(&m, &twin, text, length);
    test_quantized_against_base(&m, text, length);
    test_cli(&m, text, length);
    lm_close(&twin);
    lm_close(&m);
    free(text);
    rmdir(work_dir);
    return lb_test_summary();
}
