/*
 * Tokenizer: the sample models' tokens for the golden logits' paragraphs come out exactly; over
 * the whole evaluation files, the paragraph counts, the paragraphs tok105 cannot encode and the
 * number of scored tokens match the golden README's perplexity table (which pins the encoding of
 * every paragraph down in aggregate); paragraphs and random strings encode exactly as a plain
 * quadratic reference (llama2.c's loop, written here) does, which the aggregate figures alone
 * would not catch for the tie rule; every paragraph decodes back to its text; byte fallback,
 * empty text and short output buffers; merge order (score, then leftmost) on a hand-made
 * vocabulary; broken tokenizer metadata in GGUF files is refused. Prints the encoding speed.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "testing.h"
#include "lowbit.h"
#include "io/gguf_write.h"
#include "io/model.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char folder[] = "/tmp/lowbit_test_tokenizer.XXXXXX";

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The next non-empty piece of text split on "\n\n" (as Python's str.split), from *pos. */
static int next_paragraph(const char *text, size_t size, size_t *pos, size_t *start,
                          size_t *length) {
    while (*pos <= size) {
        size_t end = *pos;
        while (end < size && !(text[end] == '\n' && end + 1 < size && text[end + 1] == '\n')) end++;
        *start = *pos;
        *length = end - *pos;
        *pos = end + 2;
        if (*length > 0) return 1;
    }
    return 0;
}

static lowbit_model *open_model(const char *name, lowbit_tokenizer **tok) {
    char relative[256];
    snprintf(relative, sizeof relative, "models/%s.bin", name);
    lowbit_model *model = NULL;
    lowbit_diag diag = {0};
    *tok = NULL;
    CHECK(lowbit_model_open(lb_shared_path(relative), NULL, &model, &diag) == LOWBIT_OK,
          "%s: %s", name, diag.message);
    if (!model) return NULL;
    CHECK(lowbit_tokenizer_create(model, tok, &diag) == LOWBIT_OK, "%s tokenizer: %s", name,
          diag.message);
    return model;
}

static int64_t context_length(const lowbit_model *model) {
    uint64_t v = 0;
    CHECK(lb_kv_get_u64(lb_model_find_kv(lb_model_of(model), "llama.context_length"), &v),
          "llama.context_length");
    return (int64_t)v;
}

/* The golden file's tokens (its header's n_tokens of them). */
static int32_t *read_golden_tokens(const char *name, int32_t *n_tokens) {
    char relative[256];
    snprintf(relative, sizeof relative, "golden/llama/%s.logits.bin", name);
    size_t size = 0;
    char *bytes = lb_read_whole_file(lb_shared_path(relative), &size);
    *n_tokens = 0;
    CHECK(bytes && size >= 8, "%s: golden file", name);
    if (!bytes || size < 8) {
        free(bytes);
        return NULL;
    }
    int32_t header[2];
    memcpy(header, bytes, sizeof header);
    int32_t *tokens = NULL;
    if (header[0] > 0 && (size_t)header[0] * 4 + 8 <= size) {
        tokens = malloc((size_t)header[0] * sizeof *tokens);
        memcpy(tokens, bytes + 8, (size_t)header[0] * sizeof *tokens);
        *n_tokens = header[0];
    }
    free(bytes);
    return tokens;
}

/* Decodes tokens after BOS and compares with the text. */
static int decodes_to(const lowbit_tokenizer *tok, const int32_t *tokens, int64_t n,
                      const char *text, size_t length) {
    size_t at = 0;
    for (int64_t i = 1; i < n; i++) {
        char buf[8];
        size_t piece_length = 0;
        const char *piece = lowbit_tokenizer_decode(tok, tokens[i - 1], tokens[i], buf,
                                                    &piece_length);
        if (at + piece_length > length || memcmp(text + at, piece, piece_length) != 0) return 0;
        at += piece_length;
    }
    return at == length;
}

/* ------------------------------------------------------------------------------------------ */
/* The sample models on their evaluation texts                                                 */
/* ------------------------------------------------------------------------------------------ */

typedef struct model_case {
    const char *model, *text;
    int64_t kept, skipped, scored; /* the golden README's perplexity table */
} model_case;

typedef struct run_totals {
    double seconds;
    uint64_t bytes, characters;
} run_totals;

static uint64_t count_characters(const char *text, size_t length) {
    uint64_t n = 0;
    for (size_t i = 0; i < length; i++) n += ((uint8_t)text[i] & 0xC0) != 0x80;
    return n;
}

static void check_model(const model_case *mc, run_totals *totals) {
    lowbit_tokenizer *tok = NULL;
    lowbit_model *model = open_model(mc->model, &tok);
    char relative[256];
    snprintf(relative, sizeof relative, "data/%s", mc->text);
    size_t size = 0;
    char *text = lb_read_whole_file(lb_shared_path(relative), &size);
    CHECK(text != NULL, "%s", relative);
    int32_t n_golden = 0;
    int32_t *golden = read_golden_tokens(mc->model, &n_golden);
    if (!model || !tok || !text || !golden) goto done;
    const int64_t context = context_length(model);
    int32_t *tokens = malloc((size + 2) * sizeof *tokens);
    int64_t kept = 0, skipped = 0, scored = 0, round_trips = 0, golden_at = -1;
    size_t pos = 0, start = 0, length = 0;
    while (next_paragraph(text, size, &pos, &start, &length)) {
        int64_t n = 0;
        const double t0 = now_seconds();
        const lowbit_status st =
            lowbit_tokenizer_encode(tok, text + start, length, 1, tokens, (int64_t)size + 2, &n);
        totals->seconds += now_seconds() - t0;
        totals->bytes += length;
        totals->characters += count_characters(text + start, length);
        if (st == LOWBIT_ERR_UNSUPPORTED && !lowbit_tokenizer_has_byte_fallback(tok)) {
            skipped++;
            continue;
        }
        CHECK(st == LOWBIT_OK, "%s: paragraph at byte %zu: %s", mc->model, start,
              lowbit_status_name(st));
        if (st != LOWBIT_OK) continue;
        kept++;
        const int64_t used = n < context ? n : context;
        scored += used - 1;
        round_trips += decodes_to(tok, tokens, n, text + start, length);
        if (golden_at < 0 && n >= 64) {
            golden_at = (int64_t)start;
            CHECK(used == n_golden && memcmp(tokens, golden, (size_t)used * 4) == 0,
                  "%s: the tokens of the paragraph at byte %zu (%lld of them, %d golden) differ",
                  mc->model, start, (long long)used, (int)n_golden);
        }
    }
    CHECK(golden_at >= 0, "%s: no paragraph of 64 tokens", mc->model);
    CHECK(kept == mc->kept && skipped == mc->skipped,
          "%s: %lld paragraphs kept, %lld skipped; expected %lld and %lld", mc->model,
          (long long)kept, (long long)skipped, (long long)mc->kept, (long long)mc->skipped);
    CHECK(scored == mc->scored, "%s: %lld scored tokens, expected %lld", mc->model,
          (long long)scored, (long long)mc->scored);
    CHECK(round_trips == kept, "%s: %lld of %lld paragraphs decode back to their text",
          mc->model, (long long)round_trips, (long long)kept);
    free(tokens);
done:
    free(golden);
    free(text);
    lowbit_tokenizer_free(tok);
    lowbit_model_close(model);
}

/* One long text: shows that merging does not grow quadratically. */
static void measure_whole_file(void) {
    lowbit_tokenizer *tok = NULL;
    lowbit_model *model = open_model("stories260K", &tok);
    size_t size = 0;
    char *text = lb_read_whole_file(lb_shared_path("data/tinystories_eval.txt"), &size);
    int32_t *tokens = text ? malloc((size + 2) * sizeof *tokens) : NULL;
    if (tok && tokens) {
        int64_t n = 0;
        const double t0 = now_seconds();
        const lowbit_status st = lowbit_tokenizer_encode(tok, text, size, 1, tokens,
                                                         (int64_t)size + 2, &n);
        const double seconds = now_seconds() - t0;
        CHECK(st == LOWBIT_OK && decodes_to(tok, tokens, n, text, size),
              "the whole evaluation file as one text");
        printf("whole tinystories_eval.txt as one text: %zu bytes -> %lld tokens in %.3f s "
               "(%.2f MB/s)\n",
               size, (long long)n, seconds, 1e-6 * (double)size / seconds);
    }
    free(tokens);
    free(text);
    lowbit_tokenizer_free(tok);
    lowbit_model_close(model);
}

/* ------------------------------------------------------------------------------------------ */
/* A plain reference: llama2.c's quadratic loop, on the vocabulary read here from the metadata */
/* ------------------------------------------------------------------------------------------ */

typedef struct ref_vocab {
    int32_t n;
    const char **text;
    uint64_t *length;
    float *score;
    int32_t *type;
    int32_t *sorted;
} ref_vocab;

/* the vocabulary being sorted or searched (qsort takes no context) */
static const ref_vocab *sorting;
static int ref_order(const void *pa, const void *pb);

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int ref_read(const lowbit_model *model, ref_vocab *v) {
    const lb_model *m = lb_model_of(model);
    const lb_kv *tokens = lb_model_find_kv(m, "tokenizer.ggml.tokens");
    const lb_kv *scores = lb_model_find_kv(m, "tokenizer.ggml.scores");
    const lb_kv *types = lb_model_find_kv(m, "tokenizer.ggml.token_type");
    if (!tokens || !scores || !types) return 0;
    v->n = (int32_t)le64(tokens->value + 4);
    v->text = malloc((size_t)v->n * sizeof *v->text);
    v->length = malloc((size_t)v->n * sizeof *v->length);
    v->score = malloc((size_t)v->n * sizeof *v->score);
    v->type = malloc((size_t)v->n * sizeof *v->type);
    const uint8_t *p = tokens->value + 12;
    for (int32_t i = 0; i < v->n; i++) {
        v->length[i] = le64(p);
        v->text[i] = (const char *)p + 8;
        p += 8 + v->length[i];
    }
    memcpy(v->score, scores->value + 12, (size_t)v->n * 4);
    memcpy(v->type, types->value + 12, (size_t)v->n * 4);
    v->sorted = malloc((size_t)v->n * sizeof *v->sorted);
    for (int32_t i = 0; i < v->n; i++) v->sorted[i] = i;
    sorting = v;
    qsort(v->sorted, (size_t)v->n, sizeof *v->sorted, ref_order);
    return 1;
}

static void ref_free(ref_vocab *v) {
    free(v->text);
    free(v->length);
    free(v->score);
    free(v->type);
    free(v->sorted);
}

/* Pieces sorted by (type, length, bytes, id) for a binary search: the first of equal pieces. */

static int ref_compare(int32_t a_type, uint64_t a_length, const char *a_text, int32_t a_id,
                       int32_t b) {
    const ref_vocab *v = sorting;
    if (a_type != v->type[b]) return a_type < v->type[b] ? -1 : 1;
    if (a_length != v->length[b]) return a_length < v->length[b] ? -1 : 1;
    const int c = memcmp(a_text, v->text[b], a_length);
    if (c != 0 || a_id < 0) return c;
    return a_id < b ? -1 : a_id > b;
}

static int ref_order(const void *pa, const void *pb) {
    const int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    return ref_compare(sorting->type[a], sorting->length[a], sorting->text[a], a, b);
}

static int32_t ref_find(const ref_vocab *v, const char *text, size_t length, int32_t type) {
    int32_t lo = 0, hi = v->n; /* the first sorted entry not below the key */
    sorting = v;
    while (lo < hi) {
        const int32_t mid = lo + (hi - lo) / 2;
        if (ref_compare(type, length, text, -1, v->sorted[mid]) > 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < v->n && ref_compare(type, length, text, -1, v->sorted[lo]) == 0) return v->sorted[lo];
    return -1;
}

/* Symbols are (start, length, id); byte tokens get length 0 so that they never merge. */
static int64_t ref_encode(const ref_vocab *v, const char *raw, size_t raw_length, int32_t *ids,
                          size_t *starts, size_t *lengths) {
    char *text = malloc(raw_length + 1);
    text[0] = ' ';
    memcpy(text + 1, raw, raw_length);
    const size_t n_bytes = raw_length + 1;
    int64_t n = 0;
    for (size_t pos = 0; pos < n_bytes;) {
        size_t k = 1;
        while (k < 4 && pos + k < n_bytes && ((uint8_t)text[pos + k] & 0xC0) == 0x80) k++;
        const int32_t id = ref_find(v, text + pos, k, 1);
        if (id >= 0) {
            ids[n] = id, starts[n] = pos, lengths[n++] = k;
        } else {
            for (size_t b = 0; b < k; b++) {
                char spelled[8];
                snprintf(spelled, sizeof spelled, "<0x%02X>", (unsigned)(uint8_t)text[pos + b]);
                ids[n] = ref_find(v, spelled, 6, 6), starts[n] = pos + b, lengths[n++] = 0;
            }
        }
        pos += k;
    }
    for (;;) {
        int64_t best = -1;
        int32_t best_id = -1;
        for (int64_t i = 0; i + 1 < n; i++) {
            if (lengths[i] == 0 || lengths[i + 1] == 0) continue;
            const int32_t id = ref_find(v, text + starts[i], lengths[i] + lengths[i + 1], 1);
            if (id >= 0 && (best < 0 || v->score[id] > v->score[best_id])) best = i, best_id = id;
        }
        if (best < 0) break;
        ids[best] = best_id;
        lengths[best] += lengths[best + 1];
        memmove(ids + best + 1, ids + best + 2, (size_t)(n - best - 2) * sizeof *ids);
        memmove(starts + best + 1, starts + best + 2, (size_t)(n - best - 2) * sizeof *starts);
        memmove(lengths + best + 1, lengths + best + 2, (size_t)(n - best - 2) * sizeof *lengths);
        n--;
    }
    free(text);
    return n;
}

/* The first paragraphs of a text, and random strings of its most frequent characters (dense in
   ties and overlapping merges), encode as the reference does. */
static void check_against_reference(const char *model_name, const char *text_name,
                                    int n_paragraphs) {
    lowbit_tokenizer *tok = NULL;
    lowbit_model *model = open_model(model_name, &tok);
    char relative[256];
    snprintf(relative, sizeof relative, "data/%s", text_name);
    size_t size = 0;
    char *text = lb_read_whole_file(lb_shared_path(relative), &size);
    ref_vocab v = {0};
    if (!tok || !text || !ref_read(model, &v)) {
        CHECK(0, "%s: reference setup", model_name);
        goto done;
    }
    enum { CAP = 4096 };
    static int32_t got[CAP + 2], want[CAP + 2];
    static size_t starts[CAP + 2], lengths[CAP + 2];
    int agree = 0, tried = 0;
    size_t pos = 0, start = 0, length = 0;
    while (tried < n_paragraphs && next_paragraph(text, size, &pos, &start, &length)) {
        if (length > CAP) continue;
        int64_t n = 0;
        if (lowbit_tokenizer_encode(tok, text + start, length, 0, got, CAP + 2, &n) != LOWBIT_OK) {
            continue;
        }
        const int64_t n_ref = ref_encode(&v, text + start, length, want, starts, lengths);
        tried++;
        agree += n == n_ref && memcmp(got, want, (size_t)n * sizeof *got) == 0;
    }
    static const char alphabet[] = " etaoinshrdlu,.";
    uint32_t seed = 12345;
    char random_text[40];
    for (int r = 0; r < 300; r++, tried++) {
        const int len = 1 + r % 39;
        for (int i = 0; i < len; i++) {
            seed = seed * 1664525u + 1013904223u;
            random_text[i] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        int64_t n = 0;
        lowbit_tokenizer_encode(tok, random_text, (size_t)len, 0, got, CAP + 2, &n);
        const int64_t n_ref = ref_encode(&v, random_text, (size_t)len, want, starts, lengths);
        agree += n == n_ref && memcmp(got, want, (size_t)n * sizeof *got) == 0;
    }
    CHECK(agree == tried && tried > 300, "%s: %d of %d texts encode as the reference",
          model_name, agree, tried);
done:
    ref_free(&v);
    free(text);
    lowbit_tokenizer_free(tok);
    lowbit_model_close(model);
}

/* ------------------------------------------------------------------------------------------ */
/* Byte fallback, empty text, short buffers                                                    */
/* ------------------------------------------------------------------------------------------ */

static void check_byte_fallback(void) {
    static const char snowman[] = "\xe2\x98\x83"; /* U+2603, in none of the vocabularies */
    static const char *const with_bytes[] = {"stories260K", "lit3m"};
    for (int m = 0; m < 2; m++) {
        lowbit_tokenizer *tok = NULL;
        lowbit_model *model = open_model(with_bytes[m], &tok);
        if (!tok) {
            lowbit_model_close(model);
            continue;
        }
        CHECK(lowbit_tokenizer_has_byte_fallback(tok), "%s has byte pieces", with_bytes[m]);
        int32_t tokens[8];
        int64_t n = 0;
        CHECK(lowbit_tokenizer_encode(tok, snowman, 3, 1, tokens, 8, &n) == LOWBIT_OK && n == 5,
              "%s: snowman gives %lld tokens", with_bytes[m], (long long)n);
        /* SentencePiece puts <0xNN> at id 3 + NN */
        CHECK(n == 5 && tokens[0] == 1 && tokens[2] == 3 + 0xe2 && tokens[3] == 3 + 0x98 &&
                  tokens[4] == 3 + 0x83,
              "%s: byte tokens %d %d %d", with_bytes[m], (int)tokens[2], (int)tokens[3],
              (int)tokens[4]);
        CHECK(n == 5 && decodes_to(tok, tokens, n, snowman, 3), "%s: bytes decode",
              with_bytes[m]);
        /* malformed UTF-8, cut as llama2.c does: a continuation byte joins the byte before it
           whatever that is, so the dummy prefix and 0x80 form one unknown "character" */
        CHECK(lowbit_tokenizer_encode(tok, "\x80\xff", 2, 1, tokens, 8, &n) == LOWBIT_OK &&
                  n == 4 && tokens[1] == 3 + ' ' && tokens[2] == 3 + 0x80 &&
                  tokens[3] == 3 + 0xff,
              "%s: invalid UTF-8, %lld tokens", with_bytes[m], (long long)n);
        CHECK(n == 4 && decodes_to(tok, tokens, n, " \x80\xff", 3), "%s: invalid UTF-8 decodes",
              with_bytes[m]);
        lowbit_tokenizer_free(tok);
        lowbit_model_close(model);
    }
    lowbit_tokenizer *tok = NULL;
    lowbit_model *model = open_model("babyllama105", &tok);
    if (tok) {
        int32_t tokens[8];
        int64_t n = -1;
        CHECK(!lowbit_tokenizer_has_byte_fallback(tok), "tok105 has no byte pieces");
        CHECK(lowbit_tokenizer_encode(tok, snowman, 3, 1, tokens, 8, &n) == LOWBIT_ERR_UNSUPPORTED,
              "tok105: no piece for the snowman");
        CHECK(lowbit_tokenizer_encode(tok, "a\nb", 3, 1, tokens, 8, &n) == LOWBIT_ERR_UNSUPPORTED,
              "tok105: no piece for a newline");
        CHECK(lowbit_tokenizer_encode(tok, "ab", 2, 0, tokens, 8, &n) == LOWBIT_OK && n == 3,
              "tok105: characters, %lld tokens", (long long)n);
    }
    lowbit_tokenizer_free(tok);
    lowbit_model_close(model);
}

static void check_edges(void) {
    lowbit_tokenizer *tok = NULL;
    lowbit_model *model = open_model("stories260K", &tok);
    if (!tok) {
        lowbit_model_close(model);
        return;
    }
    CHECK(lowbit_tokenizer_vocab_size(tok) == 512 && lowbit_tokenizer_bos(tok) == 1 &&
              lowbit_tokenizer_eos(tok) == 2,
          "vocab %d bos %d eos %d", (int)lowbit_tokenizer_vocab_size(tok),
          (int)lowbit_tokenizer_bos(tok), (int)lowbit_tokenizer_eos(tok));
    int32_t tokens[64];
    int64_t n = -1;
    CHECK(lowbit_tokenizer_encode(tok, "", 0, 1, tokens, 64, &n) == LOWBIT_OK && n == 1 &&
              tokens[0] == 1,
          "empty text with BOS: %lld tokens", (long long)n);
    CHECK(lowbit_tokenizer_encode(tok, NULL, 0, 0, tokens, 64, &n) == LOWBIT_OK && n == 0,
          "empty text without BOS: %lld tokens", (long long)n);

    static const char text[] = "Once upon a time, there was a little girl named Lily.";
    const size_t length = sizeof text - 1;
    int64_t full = 0;
    CHECK(lowbit_tokenizer_encode(tok, text, length, 1, tokens, 64, &full) == LOWBIT_OK &&
              full > 8 && full < 64,
          "sentence: %lld tokens", (long long)full);
    int32_t few[8];
    for (int i = 0; i < 8; i++) few[i] = -7;
    CHECK(lowbit_tokenizer_encode(tok, text, length, 1, few, 5, &n) == LOWBIT_OK && n == full,
          "max_tokens 5: reports %lld, needs %lld", (long long)n, (long long)full);
    CHECK(memcmp(few, tokens, 5 * sizeof *few) == 0 && few[5] == -7,
          "max_tokens 5: the first 5 written, nothing after");
    CHECK(lowbit_tokenizer_encode(tok, text, length, 1, NULL, 0, &n) == LOWBIT_OK && n == full,
          "counting only");
    CHECK(lowbit_tokenizer_encode(tok, text, length, 1, NULL, 4, &n) ==
              LOWBIT_ERR_INVALID_ARGUMENT,
          "no buffer for 4 tokens");
    CHECK(decodes_to(tok, tokens, full, text, length), "the sentence decodes back");

    /* decoding: the space after BOS goes, not elsewhere; BOS itself and bad ids give nothing */
    char buf[8];
    size_t piece_length = 99;
    const char *piece = lowbit_tokenizer_decode(tok, 1, tokens[1], buf, &piece_length);
    CHECK(piece_length == 4 && memcmp(piece, "Once", 4) == 0, "after BOS: '%.*s'",
          (int)piece_length, piece);
    piece = lowbit_tokenizer_decode(tok, 5, tokens[1], buf, &piece_length);
    CHECK(piece_length == 5 && memcmp(piece, " Once", 5) == 0, "elsewhere: '%.*s'",
          (int)piece_length, piece);
    lowbit_tokenizer_decode(tok, 0, 1, buf, &piece_length);
    CHECK(piece_length == 0, "BOS decodes to nothing");
    lowbit_tokenizer_decode(tok, 0, 512, buf, &piece_length);
    CHECK(piece_length == 0, "an id past the vocabulary decodes to nothing");
    lowbit_tokenizer_free(tok);
    lowbit_model_close(model);
}

/* ------------------------------------------------------------------------------------------ */
/* Hand-made vocabularies in GGUF files                                                        */
/* ------------------------------------------------------------------------------------------ */

enum { T_NORMAL = 1, T_UNKNOWN = 2, T_CONTROL = 3, T_BYTE = 6 };

typedef struct vocab_spec {
    const char *model_name;       /* tokenizer.ggml.model, NULL for none */
    int64_t n_scores, n_types;    /* entries written (normally the piece count) */
    int scores_as_i32;            /* writes the scores with the wrong element type */
    uint32_t bos;
    const char *bad_byte_piece;   /* replaces piece 9 (a byte piece) when set */
} vocab_spec;

static const char *const pieces[] = {"<unk>", "<s>", "</s>", " ", "a", "b", "ab", "ba", " a",
                                     "<0x78>", "aba", " ab"};
static const float scores[] = {0, 0, 0, -1, -2, -3, -10, -10, -20, 0, -5, -4};
static const int32_t types[] = {T_UNKNOWN, T_CONTROL, T_CONTROL, T_NORMAL, T_NORMAL, T_NORMAL,
                                T_NORMAL, T_NORMAL, T_NORMAL, T_BYTE, T_NORMAL, T_NORMAL};
enum { N_PIECES = 12 };

static lowbit_status create_from_spec(const vocab_spec *spec, lowbit_tokenizer **tok,
                                      lowbit_model **model, lowbit_diag *diag) {
    lb_model m = {0};
    const char *texts[N_PIECES];
    uint64_t lengths[N_PIECES];
    for (int i = 0; i < N_PIECES; i++) {
        texts[i] = i == 9 && spec->bad_byte_piece ? spec->bad_byte_piece : pieces[i];
        lengths[i] = strlen(texts[i]);
    }
    lb_model_set_string(&m, "general.architecture", "llama");
    if (spec->model_name) lb_model_set_string(&m, "tokenizer.ggml.model", spec->model_name);
    lb_model_set_string_array(&m, "tokenizer.ggml.tokens", texts, lengths, N_PIECES);
    if (spec->scores_as_i32) {
        lb_model_set_i32_array(&m, "tokenizer.ggml.scores", types, (uint64_t)spec->n_scores);
    } else {
        lb_model_set_f32_array(&m, "tokenizer.ggml.scores", scores, (uint64_t)spec->n_scores);
    }
    lb_model_set_i32_array(&m, "tokenizer.ggml.token_type", types, (uint64_t)spec->n_types);
    lb_model_set_u32(&m, "tokenizer.ggml.bos_token_id", spec->bos);
    char path[256];
    snprintf(path, sizeof path, "%s/vocab.gguf", folder);
    lb_gguf_writer *w = NULL;
    lowbit_status st = lb_gguf_writer_open(path, m.kvs, m.n_kv, NULL, 0, 0, &w, diag);
    if (st == LOWBIT_OK) st = lb_gguf_writer_commit(w, diag);
    lb_model_free(&m);
    *model = NULL;
    *tok = NULL;
    if (st == LOWBIT_OK) st = lowbit_model_open(path, NULL, model, diag);
    if (st == LOWBIT_OK) st = lowbit_tokenizer_create(*model, tok, diag);
    unlink(path);
    return st;
}

static vocab_spec good_spec(void) {
    return (vocab_spec){"llama", N_PIECES, N_PIECES, 0, 1, NULL};
}

static void expect_tokens(const lowbit_tokenizer *tok, const char *text, const int32_t *want,
                          int64_t n_want) {
    int32_t got[16];
    int64_t n = 0;
    const lowbit_status st = lowbit_tokenizer_encode(tok, text, strlen(text), 0, got, 16, &n);
    CHECK(st == LOWBIT_OK && n == n_want && memcmp(got, want, (size_t)n_want * 4) == 0,
          "'%s': %s, %lld tokens (first %d), expected %lld", text, lowbit_status_name(st),
          (long long)n, n > 0 ? (int)got[0] : -1, (long long)n_want);
}

static void check_merge_order(void) {
    const vocab_spec spec = good_spec();
    lowbit_tokenizer *tok = NULL;
    lowbit_model *model = NULL;
    lowbit_diag diag = {0};
    CHECK(create_from_spec(&spec, &tok, &model, &diag) == LOWBIT_OK, "hand-made: %s",
          diag.message);
    if (tok) {
        /* " bab": "ba" and "ab" tie at -10, the leftmost merges */
        expect_tokens(tok, "bab", (const int32_t[]){3, 7, 5}, 3);
        /* " aba": " a" (-20) loses to "ab" (-10); then " ab" (-4) beats "aba" (-5) */
        expect_tokens(tok, "aba", (const int32_t[]){11, 4}, 2);
        /* "x" has a byte piece (only it): byte pieces never merge with their neighbours */
        expect_tokens(tok, "ax", (const int32_t[]){8, 9}, 2);
        int32_t t[4];
        int64_t n = 0;
        CHECK(!lowbit_tokenizer_has_byte_fallback(tok), "one byte piece is not a fallback");
        CHECK(lowbit_tokenizer_encode(tok, "ay", 2, 0, t, 4, &n) == LOWBIT_ERR_UNSUPPORTED,
              "no piece and no byte piece for 'y'");
        /* control pieces are not matched by text */
        CHECK(lowbit_tokenizer_encode(tok, "<s>", 3, 0, t, 4, &n) == LOWBIT_ERR_UNSUPPORTED,
              "'<s>' as text");
    }
    lowbit_tokenizer_free(tok);
    lowbit_model_close(model);
}

static void expect_refused(const vocab_spec *spec, lowbit_status want, const char *needle) {
    lowbit_tokenizer *tok = NULL;
    lowbit_model *model = NULL;
    lowbit_diag diag = {0};
    const lowbit_status st = create_from_spec(spec, &tok, &model, &diag);
    CHECK(st == want && !tok && strstr(diag.message, needle),
          "expected %s with '%s', got %s: %s", lowbit_status_name(want), needle,
          lowbit_status_name(st), diag.message);
    lowbit_tokenizer_free(tok);
    lowbit_model_close(model);
}

static void check_broken(void) {
    vocab_spec s = good_spec();
    s.n_scores = N_PIECES - 1;
    expect_refused(&s, LOWBIT_ERR_BAD_FILE, "tokenizer.ggml.scores has 11 entries");
    s = good_spec();
    s.n_types = N_PIECES - 2;
    expect_refused(&s, LOWBIT_ERR_BAD_FILE, "tokenizer.ggml.token_type has 10 entries");
    s = good_spec();
    s.scores_as_i32 = 1;
    expect_refused(&s, LOWBIT_ERR_BAD_FILE, "tokenizer.ggml.scores is not an array");
    s = good_spec();
    s.bos = N_PIECES;
    expect_refused(&s, LOWBIT_ERR_BAD_FILE, "bos_token_id is 12");
    s = good_spec();
    s.bad_byte_piece = "<0xZZ>";
    expect_refused(&s, LOWBIT_ERR_BAD_FILE, "byte piece 9");
    s = good_spec();
    s.model_name = "gpt2";
    expect_refused(&s, LOWBIT_ERR_UNSUPPORTED, "'gpt2'");
    s = good_spec();
    s.model_name = NULL;
    expect_refused(&s, LOWBIT_ERR_NOT_FOUND, "no tokenizer");
}

int main(void) {
    if (!mkdtemp(folder)) {
        perror("mkdtemp");
        return 1;
    }
    static const model_case cases[] = {
        {"stories260K", "tinystories_eval.txt", 3572, 0, 311496},
        {"llama2xs", "tinystories_eval.txt", 3572, 0, 309344},
        {"babyllama105", "tinystories_eval.txt", 3475, 97, 588742},
        {"lit3m", "austen_eval.txt", 1035, 0, 132863},
    };
    run_totals totals = {0, 0, 0};
    for (int i = 0; i < LB_ARRAY_LEN(cases); i++) check_model(&cases[i], &totals);
    printf("encoding paragraph by paragraph: %llu characters (%llu bytes) in %.3f s "
           "(%.2f M characters/s)\n",
           (unsigned long long)totals.characters, (unsigned long long)totals.bytes,
           totals.seconds, 1e-6 * (double)totals.characters / totals.seconds);
    measure_whole_file();
    check_against_reference("stories260K", "tinystories_eval.txt", 40);
    check_against_reference("lit3m", "austen_eval.txt", 40);
    check_byte_fallback();
    check_edges();
    check_merge_order();
    check_broken();
    rmdir(folder);
    return lb_test_summary();
}
