/*
 * Evaluation of language models: perplexity by the protocol of
 * ../shared/golden/llama/README.md, and, against a base model (run in the same pass or saved
 * earlier), the KL-divergence, top-1 agreement and change of the correct token's probability.
 *
 * Paragraphs. The text is split on every "\n\n"; a piece is taken verbatim (a leading newline
 * left by "\n\n\n", newlines inside it and the text's trailing newline included) unless it is
 * empty or holds only whitespace (space, tab, CR, LF, VT, FF), which is no paragraph and is not
 * counted anywhere. A tokenizer without byte fallback skips (and counts) every paragraph it
 * cannot encode. This reproduces the README's counts (stories260K: 3572 paragraphs, 311496
 * scored tokens; lit3m on austen_eval.txt: 1035, 132863, its last piece "Finis\n" keeping its
 * newline). max_paragraphs limits the paragraphs evaluated (skipped ones do not count).
 *
 * Scoring. Each paragraph is encoded with BOS first, no EOS, cut at the context length, and run
 * as one batch from position 0; row i of the logits predicts token i + 1. The NLL is
 * logsumexp(row) - row[target] in double. For the comparison with a base, both next-token
 * distributions are represented as float32 log-probabilities (computed in double, then rounded):
 * that is what a saved-logits file holds, so an in-process base and the same base read back
 * from its file give identical numbers, and a model compared with itself gives exactly 0.
 *   KLD(i)  = sum_v p_base(v) * (log p_base(v) - log p_model(v)), summed in double;
 *   top-1   = the argmaxes (first maximum) of the two float32 rows agree;
 *   delta_p = p_model(correct) - p_base(correct).
 * Statistics: the mean; the median (the mean of the two middle values for an even count); the
 * 99th percentile by nearest rank (the ceil(0.99 n)-th smallest value); the maximum.
 *
 * Saved-logits file (little-endian), version 1:
 *   offset  0  char[8]  magic "LBLOGPRB"
 *           8  uint32   version (1)
 *          12  uint32   vocab size
 *          16  uint64   number of scored positions
 *          24  uint64   number of paragraphs evaluated
 *          32  uint64   FNV-1a 64 hash of the token stream (vocab, then per paragraph its token
 *                       count and tokens as little-endian int32)
 *          40  uint32   value format (0: float32 log-probabilities)
 *          44  20 bytes reserved, zero
 *          64  positions x vocab float32 log-probabilities, in scoring order
 * Its size is 64 + 4 * positions * vocab bytes: 638 MB for stories260K over the whole of
 * tinystories_eval.txt (311496 x 512), 1.09 GB for lit3m over austen_eval.txt.
 */
#include "../common/common.h"
#include "../io/file.h"

#include <stdlib.h>
#include <time.h>

#define LOGITS_MAGIC "LBLOGPRB"
#define LOGITS_VERSION 1u
#define LOGITS_HEADER_BYTES 64u
#define LOGITS_FORMAT_F32 0u

/* ---- paragraphs and their tokens ---- */

typedef struct corpus {
    int32_t *tokens;        /* every evaluated paragraph's tokens, one after the other */
    int64_t *starts;        /* paragraph p is tokens[starts[p] .. starts[p + 1]) */
    int64_t n_paragraphs;
    int64_t n_skipped;
    int64_t n_scored;       /* sum over paragraphs of (tokens - 1) */
    int64_t longest;        /* tokens of the longest paragraph */
    int64_t token_capacity, start_capacity;
} corpus;

static void corpus_free(corpus *c) {
    free(c->tokens);
    free(c->starts);
    memset(c, 0, sizeof *c);
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char ch = s[i];
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r' && ch != '\v' && ch != '\f') return 0;
    }
    return 1;
}

/* The end of the piece starting at `begin`: the next "\n\n" or the end of the text. */
static size_t piece_end(const char *text, size_t length, size_t begin) {
    for (size_t i = begin; i + 1 < length; i++) {
        const char *nl = memchr(text + i, '\n', length - 1 - i);
        if (!nl) break;
        i = (size_t)(nl - text);
        if (text[i + 1] == '\n') return i;
    }
    return length;
}

static lowbit_status reserve_tokens(corpus *c, int64_t needed, lowbit_diag *diag) {
    if (needed <= c->token_capacity) return LOWBIT_OK;
    int64_t capacity = c->token_capacity ? c->token_capacity : 4096;
    while (capacity < needed) capacity *= 2;
    int32_t *grown = realloc(c->tokens, (size_t)capacity * sizeof *grown);
    if (!grown) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory for tokens");
    c->tokens = grown;
    c->token_capacity = capacity;
    return LOWBIT_OK;
}

static lowbit_status reserve_starts(corpus *c, int64_t needed, lowbit_diag *diag) {
    if (needed <= c->start_capacity) return LOWBIT_OK;
    int64_t capacity = c->start_capacity ? c->start_capacity : 256;
    while (capacity < needed) capacity *= 2;
    int64_t *grown = realloc(c->starts, (size_t)capacity * sizeof *grown);
    if (!grown) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory for paragraphs");
    c->starts = grown;
    c->start_capacity = capacity;
    return LOWBIT_OK;
}

/* Encodes one paragraph after the corpus's tokens; *kept is 0 when it was skipped. */
static lowbit_status add_paragraph(corpus *c, const lowbit_tokenizer *tokenizer, const char *text,
                                   size_t n_bytes, uint64_t offset, int64_t context, int *kept,
                                   lowbit_diag *diag) {
    const int64_t at = c->starts[c->n_paragraphs];
    /* one token per byte at most, plus the added leading space and BOS */
    int64_t capacity = (int64_t)n_bytes + 2, needed = 0;
    lowbit_status st = reserve_tokens(c, at + capacity, diag);
    if (st != LOWBIT_OK) return st;
    st = lowbit_tokenizer_encode(tokenizer, text, n_bytes, 1, c->tokens + at, capacity, &needed);
    if (st == LOWBIT_OK && needed > capacity) { /* not expected, but never trust a bound */
        capacity = needed;
        if ((st = reserve_tokens(c, at + capacity, diag)) != LOWBIT_OK) return st;
        st = lowbit_tokenizer_encode(tokenizer, text, n_bytes, 1, c->tokens + at, capacity, &needed);
    }
    if (st == LOWBIT_ERR_UNSUPPORTED && !lowbit_tokenizer_has_byte_fallback(tokenizer)) {
        c->n_skipped++;
        *kept = 0;
        return LOWBIT_OK;
    }
    if (st != LOWBIT_OK) {
        return lb_diag_set(diag, st, -1, offset,
                           "the paragraph at byte %llu could not be encoded (%s)",
                           (unsigned long long)offset,
                           lowbit_status_name(st));
    }
    const int64_t m = LB_MIN(needed, context);
    if ((st = reserve_starts(c, c->n_paragraphs + 2, diag)) != LOWBIT_OK) return st;
    c->n_paragraphs++;
    c->starts[c->n_paragraphs] = at + m;
    c->n_scored += m > 1 ? m - 1 : 0;
    c->longest = LB_MAX(c->longest, m);
    *kept = 1;
    return LOWBIT_OK;
}

static lowbit_status build_corpus(const lowbit_tokenizer *tokenizer, const char *text,
                                  size_t length, int64_t context, int64_t max_paragraphs,
                                  corpus *c, lowbit_diag *diag) {
    memset(c, 0, sizeof *c);
    lowbit_status st = reserve_starts(c, 2, diag);
    if (st != LOWBIT_OK) return st;
    c->starts[0] = 0;
    for (size_t begin = 0; begin <= length;) {
        if (max_paragraphs > 0 && c->n_paragraphs >= max_paragraphs) break;
        const size_t end = piece_end(text, length, begin);
        if (!is_blank(text + begin, end - begin)) {
            int kept = 0;
            st = add_paragraph(c, tokenizer, text + begin, end - begin, begin, context, &kept, diag);
            if (st != LOWBIT_OK) return st;
        }
        begin = end + 2; /* past the "\n\n"; beyond length when the text ended */
    }
    return LOWBIT_OK;
}

/* FNV-1a over bytes, continuing from `hash`. */
static uint64_t fnv1a(uint64_t hash, const void *data, size_t n) {
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) hash = (hash ^ p[i]) * 0x100000001b3ull;
    return hash;
}

static uint64_t fnv1a_u32(uint64_t hash, uint32_t v) {
    const uint8_t bytes[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return fnv1a(hash, bytes, 4);
}

/* Identifies the token stream a logits file belongs to: a different text, tokenizer, context
   cut or paragraph limit gives another hash. */
static uint64_t corpus_hash(const corpus *c, int32_t vocab) {
    uint64_t hash = fnv1a_u32(0xcbf29ce484222325ull, (uint32_t)vocab);
    for (int64_t p = 0; p < c->n_paragraphs; p++) {
        hash = fnv1a_u32(hash, (uint32_t)(c->starts[p + 1] - c->starts[p]));
        for (int64_t i = c->starts[p]; i < c->starts[p + 1]; i++) {
            hash = fnv1a_u32(hash, (uint32_t)c->tokens[i]);
        }
    }
    return hash;
}

/* ---- the saved-logits file ---- */

typedef struct logits_header {
    uint32_t vocab;
    uint64_t n_positions, n_paragraphs, token_hash;
} logits_header;

static void encode_header(const logits_header *h, uint8_t out[LOGITS_HEADER_BYTES]) {
    memset(out, 0, LOGITS_HEADER_BYTES);
    memcpy(out, LOGITS_MAGIC, 8);
    lb_store_le(out + 8, LOGITS_VERSION, 4);
    lb_store_le(out + 12, h->vocab, 4);
    lb_store_le(out + 16, h->n_positions, 8);
    lb_store_le(out + 24, h->n_paragraphs, 8);
    lb_store_le(out + 32, h->token_hash, 8);
    lb_store_le(out + 40, LOGITS_FORMAT_F32, 4);
}

/* Checks a mapped logits file against the positions this evaluation will score. */
static lowbit_status check_logits_file(const lb_mapped_file *file, const char *path,
                                       const logits_header *expected, lowbit_diag *diag) {
    const uint8_t *p = file->data;
    if (file->size < LOGITS_HEADER_BYTES || memcmp(p, LOGITS_MAGIC, 8) != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0, "%s is not a lowbit logits file", path);
    }
    if (lb_load_u32(p + 8) != LOGITS_VERSION || lb_load_u32(p + 40) != LOGITS_FORMAT_F32) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, 8,
                           "%s: logits file version %u, value format %u (only 1, 0 are known)",
                           path, lb_load_u32(p + 8), lb_load_u32(p + 40));
    }
    const uint32_t vocab = lb_load_u32(p + 12);
    if (vocab != expected->vocab) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, 12,
                           "%s holds logits over %u tokens, the model has %u", path, vocab,
                           expected->vocab);
    }
    const uint64_t positions = lb_load_u64(p + 16), paragraphs = lb_load_u64(p + 24);
    if (positions != expected->n_positions || paragraphs != expected->n_paragraphs ||
        lb_load_u64(p + 32) != expected->token_hash) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, 16,
                           "%s was saved for another token stream (%llu paragraphs, %llu "
                           "positions; this text gives %llu, %llu, or other tokens): the text, "
                           "tokenizer or --max-paragraphs differ",
                           path, (unsigned long long)paragraphs, (unsigned long long)positions,
                           (unsigned long long)expected->n_paragraphs,
                           (unsigned long long)expected->n_positions);
    }
    const uint64_t row_bytes = 4ull * vocab;
    if (positions > (file->size - LOGITS_HEADER_BYTES) / row_bytes ||
        file->size != LOGITS_HEADER_BYTES + positions * row_bytes) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, file->size,
                           "%s is %llu bytes, its header implies %llu", path,
                           (unsigned long long)file->size,
                           (unsigned long long)(LOGITS_HEADER_BYTES + positions * row_bytes));
    }
    return LOWBIT_OK;
}

/* ---- one position's scores ---- */

/* Writes the float32 log-probabilities of a row of logits and returns its log-sum-exp (double). */
static double log_softmax_row(const float *logits, int32_t vocab, float *logprob) {
    float max = logits[0];
    for (int32_t v = 1; v < vocab; v++) max = logits[v] > max ? logits[v] : max;
    double sum = 0.0;
    for (int32_t v = 0; v < vocab; v++) sum += exp((double)logits[v] - (double)max);
    const double lse = (double)max + log(sum);
    for (int32_t v = 0; v < vocab; v++) logprob[v] = (float)((double)logits[v] - lse);
    return lse;
}

static int32_t argmax_row(const float *row, int32_t vocab) {
    int32_t best = 0;
    for (int32_t v = 1; v < vocab; v++) {
        if (row[v] > row[best]) best = v;
    }
    return best;
}

/* KL(base || model) of two rows of float32 log-probabilities, summed in double. */
static double kl_divergence(const float *base_logprob, const float *model_logprob, int32_t vocab) {
    double kl = 0.0;
    for (int32_t v = 0; v < vocab; v++) {
        const double b = base_logprob[v];
        kl += exp(b) * (b - (double)model_logprob[v]);
    }
    return kl;
}

/* Sums over the scored positions, accumulated in position order (the same whatever threads). */
typedef struct tally {
    double nll_sum, base_nll_sum, kld_sum, delta_p_sq_sum;
    int64_t positions, top1_agree;
    double *kld;            /* every position's KLD, for the median and percentile */
} tally;

static void score_against_base(tally *t, const float *model_logprob, const float *base_logprob,
                               int32_t vocab, int32_t target) {
    const double kld = kl_divergence(base_logprob, model_logprob, vocab);
    t->kld[t->positions] = kld;
    t->kld_sum += kld;
    t->top1_agree += argmax_row(model_logprob, vocab) == argmax_row(base_logprob, vocab);
    const double delta_p = exp((double)model_logprob[target]) - exp((double)base_logprob[target]);
    t->delta_p_sq_sum += delta_p * delta_p;
    t->base_nll_sum += -(double)base_logprob[target];
}

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Mean, median, nearest-rank 99th percentile and maximum of the KLDs (sorted in place). */
static void kld_statistics(double *kld, int64_t n, lowbit_eval_result *r) {
    qsort(kld, (size_t)n, sizeof *kld, compare_doubles);
    r->kld_median = n % 2 ? kld[n / 2] : 0.5 * (kld[n / 2 - 1] + kld[n / 2]);
    int64_t rank = (int64_t)ceil(0.99 * (double)n); /* 1-based */
    if (rank < 1) rank = 1;
    r->kld_p99 = kld[rank - 1];
    r->kld_max = kld[n - 1];
}

/* ---- the evaluation ---- */

typedef struct eval_state {
    lowbit_llama *llama, *base;
    int32_t vocab;
    float *logits, *base_logits;      /* longest x vocab each */
    float *logprob, *base_logprob;    /* one row each */
    lb_mapped_file base_file;
    const float *base_rows;           /* the mapped file's rows, or NULL */
    lb_atomic_file *save;
    tally t;
    double forward_seconds;
    int64_t tokens_fed;
} eval_state;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static lowbit_status eval_paragraph(eval_state *s, const int32_t *tokens, int64_t m,
                                    lowbit_diag *diag) {
    if (m < 2) return LOWBIT_OK; /* nothing to predict */
    const double t0 = now_seconds();
    lowbit_status st = lowbit_llama_forward(s->llama, tokens, (int)m, 0, s->logits, diag);
    s->forward_seconds += now_seconds() - t0;
    s->tokens_fed += m;
    if (st != LOWBIT_OK) return st;
    if (s->base && (st = lowbit_llama_forward(s->base, tokens, (int)m, 0, s->base_logits, diag)) != LOWBIT_OK) {
        return st;
    }
    const size_t vocab = (size_t)s->vocab;
    for (int64_t i = 0; i + 1 < m; i++) {
        const float *row = s->logits + (size_t)i * vocab;
        const int32_t target = tokens[i + 1];
        const double lse = log_softmax_row(row, s->vocab, s->logprob);
        s->t.nll_sum += lse - (double)row[target];
        if (s->save && (st = lb_atomic_write(s->save, s->logprob, vocab * sizeof(float), diag)) != LOWBIT_OK) {
            return st;
        }
        const float *base_row = NULL;
        if (s->base) {
            log_softmax_row(s->base_logits + (size_t)i * vocab, s->vocab, s->base_logprob);
            base_row = s->base_logprob;
        } else if (s->base_rows) {
            base_row = s->base_rows + (size_t)s->t.positions * vocab;
        }
        if (base_row) score_against_base(&s->t, s->logprob, base_row, s->vocab, target);
        s->t.positions++;
    }
    return LOWBIT_OK;
}

static void eval_state_free(eval_state *s) {
    free(s->logits);
    free(s->base_logits);
    free(s->logprob);
    free(s->base_logprob);
    free(s->t.kld);
    lb_unmap_file(&s->base_file);
    lb_atomic_abort(s->save);
    memset(s, 0, sizeof *s);
}

static lowbit_status check_arguments(const lowbit_llama *llama, const lowbit_tokenizer *tokenizer,
                                     const lowbit_eval_options *options,
                                     const lowbit_eval_result *result, lowbit_diag *diag) {
    if (!llama || !tokenizer || !result) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "lowbit_eval_text needs a model, a tokenizer and a result");
    }
    const lowbit_llama_config *config = lowbit_llama_get_config(llama);
    if (lowbit_tokenizer_vocab_size(tokenizer) != config->vocab_size) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "the tokenizer has %d tokens, the model %d",
                           (int)lowbit_tokenizer_vocab_size(tokenizer), (int)config->vocab_size);
    }
    if (options && options->base && options->base_logits_path) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "give a base model or a base's logits file, not both");
    }
    if (options && options->base) {
        const lowbit_llama_config *base = lowbit_llama_get_config(options->base);
        if (base->vocab_size != config->vocab_size || base->context_length != config->context_length) {
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                               "the base model (vocab %d, context %d) does not match the model "
                               "(vocab %d, context %d)",
                               (int)base->vocab_size, (int)base->context_length,
                               (int)config->vocab_size, (int)config->context_length);
        }
    }
    return LOWBIT_OK;
}

static lowbit_status allocate_state(eval_state *s, const corpus *c, int with_base, lowbit_diag *diag) {
    const size_t vocab = (size_t)s->vocab, rows = (size_t)LB_MAX(c->longest, 1);
    s->logits = malloc(rows * vocab * sizeof(float));
    s->logprob = malloc(vocab * sizeof(float));
    int ok = s->logits && s->logprob;
    if (with_base) {
        s->base_logprob = malloc(vocab * sizeof(float));
        s->t.kld = malloc((size_t)LB_MAX(c->n_scored, 1) * sizeof(double));
        ok = ok && s->base_logprob && s->t.kld;
    }
    if (s->base) {
        s->base_logits = malloc(rows * vocab * sizeof(float));
        ok = ok && s->base_logits;
    }
    return ok ? LOWBIT_OK
              : lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory for logits");
}

static void fill_result(const eval_state *s, const corpus *c, int with_base,
                        lowbit_eval_result *r) {
    memset(r, 0, sizeof *r);
    r->paragraphs = c->n_paragraphs;
    r->skipped_paragraphs = c->n_skipped;
    r->scored_tokens = s->t.positions;
    const double n = (double)s->t.positions;
    r->nll_per_token = s->t.nll_sum / n;
    r->perplexity = exp(r->nll_per_token);
    r->seconds = s->forward_seconds;
    r->tokens_per_second = s->forward_seconds > 0 ? (double)s->tokens_fed / s->forward_seconds : 0.0;
    if (!with_base) return;
    r->has_base = 1;
    r->kld_mean = s->t.kld_sum / n;
    kld_statistics(s->t.kld, s->t.positions, r);
    r->top1_agreement = (double)s->t.top1_agree / n;
    r->delta_p_rms = sqrt(s->t.delta_p_sq_sum / n);
    r->base_perplexity = exp(s->t.base_nll_sum / n);
}

lowbit_status lowbit_eval_text(lowbit_llama *llama, const lowbit_tokenizer *tokenizer,
                               const char *text, size_t length, const lowbit_eval_options *options,
                               lowbit_eval_result *result, lowbit_diag *diag) {
    lowbit_status st = check_arguments(llama, tokenizer, options, result, diag);
    if (st != LOWBIT_OK) return st;
    if (!text && length) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "no text to evaluate");
    }
    static const lowbit_eval_options defaults = {0};
    if (!options) options = &defaults;
    const lowbit_llama_config *config = lowbit_llama_get_config(llama);
    corpus c;
    st = build_corpus(tokenizer, text ? text : "", length, config->context_length,
                      options->max_paragraphs, &c, diag);
    if (st == LOWBIT_OK && c.n_scored == 0) {
        st = lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                         "the text holds no paragraph with a token to predict (%lld paragraphs, "
                         "%lld skipped)", (long long)c.n_paragraphs, (long long)c.n_skipped);
    }
    if (st != LOWBIT_OK) {
        corpus_free(&c);
        return st;
    }
    eval_state s;
    memset(&s, 0, sizeof s);
    s.llama = llama;
    s.base = options->base;
    s.vocab = config->vocab_size;
    const int with_base = options->base || options->base_logits_path;
    const logits_header header = {(uint32_t)s.vocab, (uint64_t)c.n_scored,
                                  (uint64_t)c.n_paragraphs, corpus_hash(&c, s.vocab)};
    st = allocate_state(&s, &c, with_base, diag);
    if (st == LOWBIT_OK && options->base_logits_path) {
        st = lb_map_file(options->base_logits_path, &s.base_file, diag);
        if (st == LOWBIT_OK) st = check_logits_file(&s.base_file, options->base_logits_path, &header, diag);
        if (st == LOWBIT_OK) s.base_rows = (const float *)(const void *)(s.base_file.data + LOGITS_HEADER_BYTES);
    }
    if (st == LOWBIT_OK && options->save_logits_path) {
        uint8_t bytes[LOGITS_HEADER_BYTES];
        encode_header(&header, bytes);
        st = lb_atomic_open(options->save_logits_path, &s.save, diag);
        if (st == LOWBIT_OK) st = lb_atomic_write(s.save, bytes, sizeof bytes, diag);
    }
    for (int64_t p = 0; st == LOWBIT_OK && p < c.n_paragraphs; p++) {
        st = eval_paragraph(&s, c.tokens + c.starts[p], c.starts[p + 1] - c.starts[p], diag);
        if (st == LOWBIT_OK && options->progress) options->progress(options->progress_ctx, p + 1, c.n_paragraphs);
    }
    if (st == LOWBIT_OK && s.save) {
        st = lb_atomic_commit(s.save, diag);
        s.save = NULL; /* commit frees it, whatever the outcome */
    }
    if (st == LOWBIT_OK) fill_result(&s, &c, with_base, result);
    eval_state_free(&s);
    corpus_free(&c);
    return st;
}
