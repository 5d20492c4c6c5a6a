/*
 * Importance-matrix collection (lib/calib/imatrix_collect.c, `lowbit imatrix`).
 *
 * On stories260K: a short text runs twice through the forward pass with a collector attached;
 * the saved file must hold exactly one in_sum2/counts pair per matrix the forward pass multiplies
 * (7 per layer, and the classifier, which is the tied token_embd.weight here), sorted by name,
 * with counts equal to the tokens run and the keys llama.cpp's quantizer requires. The sums of
 * blk.0.attn_q/k/v (whose input is rmsnorm(embedding) * attn_norm) are recomputed here from the
 * model's tensors and must agree to 1e-5 relative. lowbit's own imatrix reader must read the file
 * back (in_sum2 / count). Then the CLI: an imatrix of lit3m on Austen calibration text feeds
 * `lowbit quantize --imatrix`, which must mark every 2-D weight as using it; an output path equal
 * to the model is refused.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "testing.h"

#include "calib/imatrix.h"
#include "lowbit.h"

#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEXT "Once upon a time, there was a little girl named Lily. She loved to play outside."
#define MAX_TOKENS 256
#define CAPTURE_BYTES 65536

static char root[] = "/tmp/lowbit_imatrix_collect.XXXXXX";

/* ---- helpers ---- */

static int64_t tensor_index(const lowbit_model *m, const char *name) {
    for (int64_t i = 0; i < lowbit_model_tensor_count(m); i++) {
        lowbit_tensor_info info;
        if (lowbit_model_tensor(m, i, &info) == LOWBIT_OK && strcmp(info.name, name) == 0) return i;
    }
    return -1;
}

/* Tensor `name` as floats (malloc'd), or NULL. */
static float *read_tensor(const lowbit_model *m, const char *name) {
    const int64_t i = tensor_index(m, name);
    lowbit_tensor_info info;
    if (i < 0 || lowbit_model_tensor(m, i, &info) != LOWBIT_OK) return NULL;
    float *data = malloc((size_t)info.n_elements * sizeof *data);
    if (data && lowbit_model_read_f32(m, i, data, NULL) != LOWBIT_OK) {
        free(data);
        return NULL;
    }
    return data;
}

static float read_f32_at(const void *data, int64_t i) {
    float v;
    memcpy(&v, (const uint8_t *)data + 4 * i, sizeof v);
    return v;
}

/* The weight names the forward pass multiplies, with their input widths. */
typedef struct expected_entry {
    char name[64];
    int64_t n_cols;
} expected_entry;

static int expected_entries(const lowbit_model *m, const lowbit_llama_config *c, expected_entry *out) {
    static const char *const per_layer[] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                            "ffn_gate", "ffn_up", "ffn_down"};
    int n = 0;
    for (int l = 0; l < c->n_layers; l++) {
        for (int k = 0; k < 7; k++) {
            snprintf(out[n].name, sizeof out[n].name, "blk.%d.%s.weight", l, per_layer[k]);
            out[n++].n_cols = k == 6 ? c->hidden_dim : c->dim;
        }
    }
    const int tied = tensor_index(m, "output.weight") < 0;
    snprintf(out[n].name, sizeof out[n].name, "%s", tied ? "token_embd.weight" : "output.weight");
    out[n++].n_cols = c->dim;
    return n;
}

/* sum over tokens of (rmsnorm(embedding[token]) * attn_norm)^2 per column, in double */
static void reference_attn_sums(const float *embd, const float *norm, const int32_t *tokens,
                                int64_t n_tokens, int dim, float eps, double *sums) {
    for (int i = 0; i < dim; i++) sums[i] = 0.0;
    for (int64_t t = 0; t < n_tokens; t++) {
        const float *x = embd + (int64_t)tokens[t] * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++) ss += (double)x[i] * x[i];
        const double scale = 1.0 / sqrt(ss / dim + eps);
        for (int i = 0; i < dim; i++) {
            const double v = x[i] * scale * norm[i];
            sums[i] += v * v;
        }
    }
}

/* ---- collection on stories260K ---- */

static void check_file_entries(const lowbit_gguf *g, const expected_entry *want, int n_want,
                               int64_t n_rows) {
    CHECK(lowbit_gguf_tensor_count(g) == 2 * n_want, "%lld tensors, want %d",
          (long long)lowbit_gguf_tensor_count(g), 2 * n_want);
    for (int64_t i = 1; i < lowbit_gguf_tensor_count(g); i++) {
        CHECK(strcmp(lowbit_gguf_tensor_at(g, i - 1)->name, lowbit_gguf_tensor_at(g, i)->name) < 0,
              "tensors not sorted at %lld", (long long)i);
    }
    for (int e = 0; e < n_want; e++) {
        char name[96];
        snprintf(name, sizeof name, "%.63s.in_sum2", want[e].name);
        const lowbit_tensor_info *s = lowbit_gguf_find_tensor(g, name);
        snprintf(name, sizeof name, "%.63s.counts", want[e].name);
        const lowbit_tensor_info *c = lowbit_gguf_find_tensor(g, name);
        CHECK(s && s->type == LOWBIT_TYPE_F32 && s->n_dims == 2 && s->ne[0] == want[e].n_cols &&
                  s->ne[1] == 1, "%s.in_sum2 missing or mis-shaped", want[e].name);
        CHECK(c && c->type == LOWBIT_TYPE_F32 && c->n_dims == 2 && c->ne[0] == 1 && c->ne[1] == 1,
              "%s.counts missing or mis-shaped", want[e].name);
        if (c) CHECK(read_f32_at(c->data, 0) == (float)n_rows, "%s count %g, want %lld",
                     want[e].name, (double)read_f32_at(c->data, 0), (long long)n_rows);
        int positive = 1;
        for (int64_t i = 0; s && i < s->ne[0]; i++) positive &= read_f32_at(s->data, i) > 0;
        CHECK(positive, "%s has a column with no activation", want[e].name);
    }
}

static void check_file_keys(const lowbit_gguf *g) {
    const char *type = NULL;
    uint64_t length = 0, chunks = 0, chunk_size = 0;
    CHECK(lowbit_gguf_get_string(g, "general.type", &type, &length) == LOWBIT_OK && length == 7 &&
          memcmp(type, "imatrix", 7) == 0, "general.type");
    CHECK(lowbit_gguf_get_u64(g, "imatrix.chunk_count", &chunks) == LOWBIT_OK && chunks == 2,
          "chunk_count %llu", (unsigned long long)chunks);
    CHECK(lowbit_gguf_get_u64(g, "imatrix.chunk_size", &chunk_size) == LOWBIT_OK && chunk_size == 17,
          "chunk_size %llu", (unsigned long long)chunk_size);
}

/* in_sum2 of blk.0.attn_{q,k,v} against the sums recomputed from the model's own tensors */
static void check_first_layer_sums(const lowbit_gguf *g, const lowbit_model *model,
                                   const lowbit_llama_config *c, const int32_t *tokens,
                                   int64_t n_tokens) {
    float *embd = read_tensor(model, "token_embd.weight");
    float *norm = read_tensor(model, "blk.0.attn_norm.weight");
    double *want = malloc((size_t)c->dim * sizeof *want);
    CHECK(embd && norm && want, "cannot read token_embd / attn_norm");
    if (!embd || !norm || !want) goto done;
    reference_attn_sums(embd, norm, tokens, n_tokens, c->dim, c->rms_norm_eps, want);
    static const char *const names[] = {"blk.0.attn_q.weight.in_sum2", "blk.0.attn_k.weight.in_sum2",
                                        "blk.0.attn_v.weight.in_sum2"};
    for (int k = 0; k < 3; k++) {
        const lowbit_tensor_info *s = lowbit_gguf_find_tensor(g, names[k]);
        if (!s) continue;
        double worst = 0.0;
        for (int i = 0; i < c->dim; i++) {
            /* twice: the text ran twice */
            const double rel = fabs(read_f32_at(s->data, i) - 2 * want[i]) / (2 * want[i]);
            worst = rel > worst ? rel : worst;
        }
        /* float rmsnorm against double here: about 2e-7 seen; 1e-5 leaves room for other
           summation orders (SIMD, other CPUs) and still catches a wrong norm or a missed row */
        CHECK(worst < 1e-5, "%s: relative error %g against the recomputed sums", names[k], worst);
    }
done:
    free(embd);
    free(norm);
    free(want);
}

/* lowbit's imatrix reader: importance = in_sum2 / count, and entries for every matrix */
static void check_reader(const char *path, const lowbit_gguf *g, int n_want, int dim) {
    lb_imatrix *im = NULL;
    lowbit_diag diag = {0};
    CHECK(lb_imatrix_load(path, &im, &diag) == LOWBIT_OK, "lb_imatrix_load: %s", diag.message);
    if (!im) return;
    CHECK(lb_imatrix_entry_count(im) == n_want, "%lld entries", (long long)lb_imatrix_entry_count(im));
    CHECK(lb_imatrix_chunk_count(im) == 2, "chunk count %lld", (long long)lb_imatrix_chunk_count(im));
    CHECK(strcmp(lb_imatrix_dataset(im), "unit-test") == 0, "dataset '%s'", lb_imatrix_dataset(im));
    int error = 0;
    const float *w = lb_imatrix_find(im, "blk.0.attn_q.weight", dim, 0, &error, &diag);
    const lowbit_tensor_info *s = lowbit_gguf_find_tensor(g, "blk.0.attn_q.weight.in_sum2");
    const lowbit_tensor_info *c = lowbit_gguf_find_tensor(g, "blk.0.attn_q.weight.counts");
    CHECK(w && !error && s && c, "blk.0.attn_q.weight not found by lb_imatrix_find");
    if (w && s && c) {
        int same = 1;
        for (int i = 0; i < dim; i++) same &= w[i] == read_f32_at(s->data, i) / read_f32_at(c->data, 0);
        CHECK(same, "importance is not in_sum2 / count");
    }
    error = 0;
    CHECK(!lb_imatrix_find(im, "blk.0.attn_q.weight", dim + 1, 0, &error, NULL) && error == 1,
          "a wrong column count must be an error");
    lb_imatrix_free(im);
}

static void test_collect_stories260k(void) {
    lowbit_model *model = NULL;
    lowbit_tokenizer *tok = NULL;
    lowbit_llama *llama = NULL;
    lowbit_imatrix_collector *collector = NULL;
    lowbit_gguf *g = NULL;
    float *logits = NULL;
    lowbit_diag diag = {0};
    int32_t tokens[MAX_TOKENS];
    int64_t n_tokens = 0;
    lowbit_status st = lowbit_model_open(lb_shared_path("models/stories260K.bin"), NULL, &model, &diag);
    if (st == LOWBIT_OK) st = lowbit_tokenizer_create(model, &tok, &diag);
    if (st == LOWBIT_OK) st = lowbit_tokenizer_encode(tok, TEXT, strlen(TEXT), 1, tokens, MAX_TOKENS, &n_tokens);
    if (st == LOWBIT_OK) st = lowbit_llama_create(model, 1, &llama, &diag);
    if (st == LOWBIT_OK) st = lowbit_imatrix_collector_create(&collector);
    CHECK(st == LOWBIT_OK && n_tokens > 8 && n_tokens <= MAX_TOKENS, "setup: %s %s",
          lowbit_status_name(st), diag.message);
    if (st != LOWBIT_OK) goto done;
    const lowbit_llama_config *c = lowbit_llama_get_config(llama);
    logits = malloc((size_t)(n_tokens * c->vocab_size) * sizeof *logits);
    lowbit_imatrix_attach(collector, llama);
    /* twice from an empty cache: counts and sums must add up */
    for (int run = 0; run < 2 && st == LOWBIT_OK; run++) {
        st = lowbit_llama_forward(llama, tokens, (int)n_tokens, 0, logits, &diag);
    }
    CHECK(st == LOWBIT_OK, "forward: %s", diag.message);
    /* detached: this run must not count */
    lowbit_imatrix_attach(NULL, llama);
    CHECK(lowbit_llama_forward(llama, tokens, 3, 0, logits, &diag) == LOWBIT_OK, "forward 3");

    char path[300];
    snprintf(path, sizeof path, "%s/stories.imatrix", root);
    st = lowbit_imatrix_save(collector, path, "unit-test", 2, 17, &diag);
    CHECK(st == LOWBIT_OK, "save: %s", diag.message);
    CHECK(lowbit_gguf_open(path, &g, &diag) == LOWBIT_OK, "reopen: %s", diag.message);
    if (!g) goto done;
    expected_entry want[8 * 64 + 1];
    const int n_want = c->n_layers <= 64 ? expected_entries(model, c, want) : 0;
    CHECK(n_want == 36, "stories260K has 5 layers: %d entries", n_want);
    check_file_keys(g);
    check_file_entries(g, want, n_want, 2 * n_tokens);
    check_first_layer_sums(g, model, c, tokens, n_tokens);
    check_reader(path, g, n_want, c->dim);

    /* bad arguments: nothing written */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/bad.imatrix", root);
    CHECK(lowbit_imatrix_save(collector, bad, "x", -1, 17, &diag) == LOWBIT_ERR_INVALID_ARGUMENT,
          "negative chunk count");
    CHECK(lowbit_imatrix_save(collector, bad, "x", 1, (int64_t)1 << 33, &diag) == LOWBIT_ERR_INVALID_ARGUMENT,
          "chunk size past 32 bits");
    CHECK(access(bad, F_OK) != 0, "a failed save left %s", bad);
    snprintf(bad, sizeof bad, "%s/no/such/folder/x.imatrix", root);
    CHECK(lowbit_imatrix_save(collector, bad, "x", 1, 1, &diag) == LOWBIT_ERR_IO, "missing folder");
done:
    lowbit_gguf_close(g);
    free(logits);
    lowbit_imatrix_collector_free(collector);
    lowbit_llama_free(llama);
    lowbit_tokenizer_free(tok);
    lowbit_model_close(model);
}

/* ---- the CLI ---- */

/* Runs the CLI (argv[0] is "lowbit"), stdout captured into out; returns the exit status or -1. */
static int run_cli(const char *const *argv, char *out) {
    char out_file[300];
    snprintf(out_file, sizeof out_file, "%s/stdout.txt", root);
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
        const int fd = open(out_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) _exit(126);
        dup2(fd, 1);
        setenv("ASAN_OPTIONS", "exitcode=99", 0);
        setenv("UBSAN_OPTIONS", "exitcode=99", 0);
        lb_exec_cli(argv);
        _exit(127);
    }
    int status = 0;
    if (pid <= 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    out[0] = '\0';
    FILE *f = fopen(out_file, "rb");
    if (f) {
        out[fread(out, 1, CAPTURE_BYTES - 1, f)] = '\0';
        fclose(f);
    }
    return WEXITSTATUS(status);
}

/* The JSON line of tensor `name` in quantize's --json output says "imatrix": true. */
static int uses_imatrix(const char *json, const char *name) {
    char key[160];
    snprintf(key, sizeof key, "{\"name\": \"%s\"", name);
    const char *line = strstr(json, key);
    if (!line) return 0;
    const char *end = strchr(line, '\n');
    const char *flag = strstr(line, "\"imatrix\": true");
    return flag && (!end || flag < end);
}

static void test_cli_lit3m(void) {
    static char out[CAPTURE_BYTES];
    char model[512], text[512], imatrix[300], quantized[300]; /* lb_shared_path reuses its buffer */
    snprintf(model, sizeof model, "%s", lb_shared_path("models/lit3m.bin"));
    snprintf(text, sizeof text, "%s", lb_shared_path("data/austen_calib.txt"));
    snprintf(imatrix, sizeof imatrix, "%s/lit3m.imatrix", root);
    snprintf(quantized, sizeof quantized, "%s/lit3m-q4_k_m.gguf", root);
    const char *collect[] = {"lowbit", "imatrix", model, "--text", text, "-o", imatrix,
                             "--chunks", "1", "--chunk-size", "64", "--threads", "1", NULL};
    CHECK(run_cli(collect, out) == 0, "lowbit imatrix failed");
    CHECK(strstr(out, "1 chunks of 64 tokens") != NULL, "imatrix output: %s", out);
    const char *quantize[] = {"lowbit", "quantize", model, quantized, "Q4_K_M", "--imatrix", imatrix,
                              "--threads", "1", "--json", NULL};
    CHECK(run_cli(quantize, out) == 0, "lowbit quantize --imatrix failed");
    static const char *const per_layer[] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                            "ffn_gate", "ffn_up", "ffn_down"};
    int marked = 0;
    for (int l = 0; l < 4; l++) {
        for (int k = 0; k < 7; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, per_layer[k]);
            marked += uses_imatrix(out, name);
        }
    }
    CHECK(marked == 28, "%d of lit3m's 28 layer matrices quantized with the imatrix", marked);
    /* the classifier is the tied embedding: its entry is token_embd.weight */
    CHECK(uses_imatrix(out, "token_embd.weight"), "token_embd.weight without the imatrix");
    CHECK(!uses_imatrix(out, "output_norm.weight"), "a norm vector marked [imatrix]");

    /* the output may not replace the model (checked before anything is read) */
    char victim[300];
    snprintf(victim, sizeof victim, "%s/victim.bin", root);
    FILE *f = fopen(victim, "wb");
    if (f) {
        fputs("not a model", f);
        fclose(f);
    }
    const char *refuse[] = {"lowbit", "imatrix", victim, "--text", text, "-o", victim, NULL};
    CHECK(run_cli(refuse, out) == 1, "an output equal to the model must be refused");
    char content[32] = {0};
    f = fopen(victim, "rb");
    if (f) {
        CHECK(fread(content, 1, sizeof content - 1, f) == 11 && !strcmp(content, "not a model"),
              "the model file was changed");
        fclose(f);
    }
}

int main(void) {
    if (!mkdtemp(root)) {
        fprintf(stderr, "cannot create %s\n", root);
        return 1;
    }
    test_collect_stories260k();
    test_cli_lit3m();
    char command[400];
    snprintf(command, sizeof command, "rm -rf '%s'", root);
    if (system(command) != 0) fprintf(stderr, "could not remove %s\n", root);
    return lb_test_summary();
}
