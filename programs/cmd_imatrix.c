/*
 * `lowbit imatrix MODEL --text FILE -o OUT`: runs calibration text through a model and writes
 * the importance matrix (per weight matrix, the sum of x^2 over each input column and the rows
 * seen) in llama.cpp's GGUF imatrix layout, for `lowbit quantize --imatrix`.
 *
 * As llama.cpp's imatrix tool does: the whole text is tokenized once (BOS first), cut into chunks
 * of chunk-size tokens (only whole chunks), and each chunk runs as one batch from an empty KV
 * cache with its first token replaced by BOS, so that every chunk starts like a sequence does.
 * The running perplexity of the chunks is printed as progress (a check that the model and text
 * agree). A tokenizer without byte fallback (a character-level one) that cannot encode the whole
 * text gets the paragraphs it can encode, the others skipped, as the evaluation protocol does.
 * The output appears only when complete.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"
#include "lowbit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef struct imatrix_args {
    const char *model, *text, *output, *tokenizer;
    int64_t chunk_size; /* 0: min(256, context length) */
    int64_t max_chunks; /* 0: every whole chunk */
    int n_threads;      /* 0: one per CPU */
} imatrix_args;

static void print_imatrix_usage(FILE *out) {
    fprintf(out,
            "usage: lowbit imatrix MODEL --text FILE -o OUT [options]\n"
            "  MODEL             a Llama-family model (GGUF, llama2.c or safetensors)\n"
            "  --text FILE       calibration text (UTF-8)\n"
            "  -o, --output OUT  the imatrix to write (GGUF, llama.cpp's imatrix layout)\n"
            "options:\n"
            "  --chunk-size N    tokens per chunk (default: 256, or the context length if smaller)\n"
            "  --chunks N        run at most N chunks (default: every whole chunk of the text)\n"
            "  --threads N       worker threads (default: one per CPU)\n"
            "  --tokenizer FILE  llama2.c tokenizer (default: tok<vocab>.bin beside MODEL)\n");
}

static int parse_positive(const char *text, int64_t max, int64_t *value) {
    int64_t v;
    if (!cli_parse_count(text, max, &v) || v < 1) return 0;
    *value = v;
    return 1;
}

/* Returns CLI_OK, CLI_USAGE, or -1 for --help. */
static int parse_imatrix_args(int argc, char **argv, imatrix_args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        int64_t n = 0;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return -1;
        if (arg[0] == '-' && arg[1] != '\0' && !value) ok = 0;
        else if (!strcmp(arg, "--text")) a->text = argv[++i];
        else if (!strcmp(arg, "-o") || !strcmp(arg, "--output")) a->output = argv[++i];
        else if (!strcmp(arg, "--tokenizer")) a->tokenizer = argv[++i];
        else if (!strcmp(arg, "--chunk-size")) ok = parse_positive(argv[++i], 1 << 20, &a->chunk_size);
        else if (!strcmp(arg, "--chunks")) ok = parse_positive(argv[++i], INT32_MAX, &a->max_chunks);
        else if (!strcmp(arg, "--threads")) {
            ok = parse_positive(argv[++i], 1024, &n);
            a->n_threads = (int)n;
        }
        else if (arg[0] == '-' && arg[1] != '\0') ok = 0;
        else if (!a->model) a->model = arg;
        else ok = 0;
        if (!ok) {
            fprintf(stderr, "lowbit imatrix: bad or incomplete option '%s'\n", arg);
            return CLI_USAGE;
        }
    }
    if (!a->model || !a->text || !a->output) {
        print_imatrix_usage(stderr);
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* Whether two paths name the same file (so writing one would replace the other). */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (strcmp(a, b) == 0) return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The whole file, NUL-terminated; NULL (with a message) on failure. */
static char *read_text_file(const char *path, size_t *length) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "lowbit imatrix: cannot open %s\n", path);
        return NULL;
    }
    size_t capacity = 1 << 16, n = 0;
    char *text = malloc(capacity);
    while (text) {
        n += fread(text + n, 1, capacity - 1 - n, f);
        if (n < capacity - 1) break;
        char *grown = realloc(text, 2 * capacity);
        if (!grown) {
            free(text);
            text = NULL;
        } else {
            text = grown;
            capacity *= 2;
        }
    }
    const int failed = ferror(f) || !text;
    fclose(f);
    if (failed) {
        free(text);
        fprintf(stderr, "lowbit imatrix: cannot read %s\n", path);
        return NULL;
    }
    text[n] = '\0';
    *length = n;
    return text;
}

/* Encodes text[0, length) into tokens (room for capacity ids), appending at *n_tokens. A token
   never covers less than one byte, and the tokenizer adds a leading space and maybe BOS, so
   length + 2 ids always suffice. */
static lowbit_status encode_append(const lowbit_tokenizer *tok, const char *text, size_t length,
                                   int add_bos, int32_t *tokens, int64_t capacity, int64_t *n_tokens) {
    int64_t n = 0;
    const lowbit_status st = lowbit_tokenizer_encode(tok, text, length, add_bos, tokens + *n_tokens,
                                                     capacity - *n_tokens, &n);
    if (st != LOWBIT_OK) return st;
    if (n > capacity - *n_tokens) return LOWBIT_ERR_NO_MEMORY; /* cannot happen (see above) */
    *n_tokens += n;
    return LOWBIT_OK;
}

/* For a tokenizer without byte fallback that cannot encode the whole text: the paragraphs
   (split on blank lines) it can encode, one after the other, BOS first; the others are skipped,
   as the evaluation protocol skips them. */
static lowbit_status encode_paragraphs(const lowbit_tokenizer *tok, const char *text, size_t length,
                                       int32_t *tokens, int64_t capacity, int64_t *n_tokens,
                                       int64_t *skipped) {
    *n_tokens = 0;
    *skipped = 0;
    size_t start = 0;
    while (start < length) {
        const char *blank = strstr(text + start, "\n\n");
        const size_t end = blank ? (size_t)(blank - text) : length;
        if (end > start) {
            const lowbit_status st = encode_append(tok, text + start, end - start, *n_tokens == 0,
                                                   tokens, capacity, n_tokens);
            if (st == LOWBIT_ERR_UNSUPPORTED) ++*skipped;
            else if (st != LOWBIT_OK) return st;
        }
        start = end + 2;
    }
    return LOWBIT_OK;
}

/* The text's tokens, BOS first; NULL (with a message) on failure. */
static int32_t *tokenize_text(const lowbit_tokenizer *tok, const char *text, size_t length,
                              int64_t *n_tokens) {
    const int64_t capacity = (int64_t)length + 2;
    int32_t *tokens = malloc((size_t)capacity * sizeof *tokens);
    if (!tokens) {
        fprintf(stderr, "lowbit imatrix: out of memory for %lld tokens\n", (long long)capacity);
        return NULL;
    }
    *n_tokens = 0;
    lowbit_status st = encode_append(tok, text, length, 1, tokens, capacity, n_tokens);
    if (st == LOWBIT_ERR_UNSUPPORTED && !lowbit_tokenizer_has_byte_fallback(tok)) {
        int64_t skipped = 0;
        st = encode_paragraphs(tok, text, length, tokens, capacity, n_tokens, &skipped);
        fprintf(stderr, "lowbit imatrix: the tokenizer (no byte fallback) cannot encode the whole text: "
                        "encoded paragraph by paragraph, skipping %lld it has no pieces for\n",
                (long long)skipped);
    }
    if (st != LOWBIT_OK) {
        fprintf(stderr, "lowbit imatrix: cannot tokenize the text: %s\n", lowbit_status_name(st));
        free(tokens);
        return NULL;
    }
    return tokens;
}

/* Negative log-likelihood of each next token of the chunk under its logits (n - 1 scores). */
static double chunk_nll(const float *logits, const int32_t *tokens, int64_t n, int64_t vocab) {
    double nll = 0.0;
    for (int64_t i = 0; i + 1 < n; i++) {
        const float *row = logits + i * vocab;
        float max = row[0];
        for (int64_t v = 1; v < vocab; v++) max = row[v] > max ? row[v] : max;
        double sum = 0.0;
        for (int64_t v = 0; v < vocab; v++) sum += exp((double)(row[v] - max));
        nll += log(sum) - (double)(row[tokens[i + 1]] - max);
    }
    return nll;
}

static double seconds_since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + 1e-9 * (double)(now.tv_nsec - t0->tv_nsec);
}

typedef struct imatrix_run {
    lowbit_model *model;
    lowbit_tokenizer *tokenizer;
    lowbit_llama *llama;
    lowbit_imatrix_collector *collector;
    char *text;
    int32_t *tokens;
    float *logits;
    int32_t *chunk;
} imatrix_run;

static void free_run(imatrix_run *r) {
    free(r->chunk);
    free(r->logits);
    free(r->tokens);
    free(r->text);
    lowbit_imatrix_collector_free(r->collector);
    lowbit_llama_free(r->llama);
    lowbit_tokenizer_free(r->tokenizer);
    lowbit_model_close(r->model);
}

/* One line on stderr; the file is named unless the message names it already. */
static int fail(const char *file, const lowbit_diag *diag, lowbit_status st) {
    const char *message = diag->message[0] ? diag->message : lowbit_status_name(st);
    if (strstr(message, file)) fprintf(stderr, "lowbit imatrix: %s\n", message);
    else fprintf(stderr, "lowbit imatrix: %s: %s\n", file, message);
    return CLI_FAILED;
}

/* Opens the model, its tokenizer and forward pass, and attaches a fresh collector. */
static int prepare(const imatrix_args *a, imatrix_run *r) {
    lowbit_diag diag = {0};
    const lowbit_open_options options = {a->tokenizer};
    lowbit_status st = lowbit_model_open(a->model, &options, &r->model, &diag);
    if (st == LOWBIT_OK) st = lowbit_tokenizer_create(r->model, &r->tokenizer, &diag);
    if (st == LOWBIT_OK) st = lowbit_llama_create(r->model, a->n_threads, &r->llama, &diag);
    if (st != LOWBIT_OK) return fail(a->model, &diag, st);
    if (lowbit_imatrix_collector_create(&r->collector) != LOWBIT_OK) {
        fprintf(stderr, "lowbit imatrix: out of memory\n");
        return CLI_FAILED;
    }
    lowbit_imatrix_attach(r->collector, r->llama);
    return CLI_OK;
}

/* Runs every chunk through the model, printing progress. */
static int run_chunks(const imatrix_args *a, imatrix_run *r, int64_t n_tokens, int64_t chunk_size,
                      int64_t n_chunks) {
    const int64_t vocab = lowbit_llama_get_config(r->llama)->vocab_size;
    const int32_t bos = lowbit_tokenizer_bos(r->tokenizer);
    r->logits = malloc((size_t)(chunk_size * vocab) * sizeof *r->logits);
    r->chunk = malloc((size_t)chunk_size * sizeof *r->chunk);
    if (!r->logits || !r->chunk) {
        fprintf(stderr, "lowbit imatrix: out of memory for the logits\n");
        return CLI_FAILED;
    }
    fprintf(stderr, "lowbit imatrix: %lld tokens, %lld chunks of %lld\n", (long long)n_tokens,
            (long long)n_chunks, (long long)chunk_size);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    double nll = 0.0;
    int64_t scored = 0;
    for (int64_t c = 0; c < n_chunks; c++) {
        memcpy(r->chunk, r->tokens + c * chunk_size, (size_t)chunk_size * sizeof *r->chunk);
        r->chunk[0] = bos;
        lowbit_diag diag = {0};
        const lowbit_status st = lowbit_llama_forward(r->llama, r->chunk, (int)chunk_size, 0,
                                                      r->logits, &diag);
        if (st != LOWBIT_OK) return fail(a->model, &diag, st);
        nll += chunk_nll(r->logits, r->chunk, chunk_size, vocab);
        scored += chunk_size - 1;
        const double elapsed = seconds_since(&start);
        fprintf(stderr, "chunk %lld/%lld  perplexity %.4f  %.0f tokens/s\n", (long long)c + 1,
                (long long)n_chunks, exp(nll / (double)scored),
                elapsed > 0 ? (double)((c + 1) * chunk_size) / elapsed : 0.0);
    }
    return CLI_OK;
}

int cmd_imatrix(int argc, char **argv) {
    imatrix_args a;
    const int parsed = parse_imatrix_args(argc, argv, &a);
    if (parsed != CLI_OK) {
        if (parsed < 0) print_imatrix_usage(stdout);
        return parsed < 0 ? CLI_OK : parsed;
    }
    if (same_file(a.model, a.output) || same_file(a.text, a.output)) {
        fprintf(stderr, "lowbit imatrix: the output %s is an input file; refusing to replace it\n",
                a.output);
        return CLI_FAILED;
    }
    imatrix_run r = {0};
    int rc = prepare(&a, &r);
    size_t length = 0;
    int64_t n_tokens = 0, chunk_size = 0, n_chunks = 0;
    if (rc == CLI_OK && !(r.text = read_text_file(a.text, &length))) rc = CLI_FAILED;
    if (rc == CLI_OK && !(r.tokens = tokenize_text(r.tokenizer, r.text, length, &n_tokens))) rc = CLI_FAILED;
    if (rc == CLI_OK) {
        const int64_t context = lowbit_llama_get_config(r.llama)->context_length;
        chunk_size = a.chunk_size ? a.chunk_size : (context < 256 ? context : 256);
        n_chunks = n_tokens / chunk_size;
        if (a.max_chunks && n_chunks > a.max_chunks) n_chunks = a.max_chunks;
        if (chunk_size > context) {
            fprintf(stderr, "lowbit imatrix: --chunk-size %lld is larger than the model's context (%lld)\n",
                    (long long)chunk_size, (long long)context);
            rc = CLI_USAGE;
        } else if (n_chunks == 0) {
            fprintf(stderr, "lowbit imatrix: %s has %lld tokens, less than one chunk of %lld\n", a.text,
                    (long long)n_tokens, (long long)chunk_size);
            rc = CLI_FAILED;
        }
    }
    if (rc == CLI_OK) rc = run_chunks(&a, &r, n_tokens, chunk_size, n_chunks);
    if (rc == CLI_OK) {
        lowbit_diag diag = {0};
        const lowbit_status st = lowbit_imatrix_save(r.collector, a.output, a.text, n_chunks,
                                                     chunk_size, &diag);
        if (st != LOWBIT_OK) rc = fail(a.output, &diag, st);
        else printf("wrote %s: %lld chunks of %lld tokens\n", a.output, (long long)n_chunks,
                    (long long)chunk_size);
    }
    free_run(&r);
    return rc;
}
