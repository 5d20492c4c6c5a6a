/*
 * The llama2.c reader: every sample model loads with its tokenizer, tensors and metadata checked
 * against the raw files read here independently; hand-built checkpoints check the separate
 * classifier; hostile checkpoints and tokenizers are each rejected with a message.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */

#include "io/llama2c.h"
#include "io/model.h"
#include "testing.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static uint8_t *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static int write_file(const char *path, const void *bytes, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    const int ok = fwrite(bytes, 1, size, f) == size;
    return fclose(f) == 0 && ok;
}

static int32_t get_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4); /* the test machine is little-endian, as the files are */
    return v;
}

static float get_f32(const uint8_t *p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static int kv_is_u32(const lb_model *m, const char *key, uint32_t want) {
    const lb_kv *kv = lb_model_find_kv(m, key);
    uint32_t v;
    if (!kv || kv->type != LOWBIT_GGUF_UINT32 || kv->value_size != 4) return 0;
    memcpy(&v, kv->value, 4);
    return v == want;
}

static int kv_is_f32(const lb_model *m, const char *key, float want) {
    const lb_kv *kv = lb_model_find_kv(m, key);
    if (!kv || kv->type != LOWBIT_GGUF_FLOAT32 || kv->value_size != 4) return 0;
    return get_f32(kv->value) == want;
}

static int kv_is_string(const lb_model *m, const char *key, const char *want) {
    const lb_kv *kv = lb_model_find_kv(m, key);
    if (!kv || kv->type != LOWBIT_GGUF_STRING || kv->value_size < 8) return 0;
    const uint64_t n = get_u64(kv->value);
    return n == strlen(want) && kv->value_size == 8 + n && memcmp(kv->value + 8, want, n) == 0;
}

/* An array kv's element type and count; NULL when the key is missing or not an array. */
static const uint8_t *array_of(const lb_model *m, const char *key, uint32_t elem_type,
                               uint64_t *count) {
    const lb_kv *kv = lb_model_find_kv(m, key);
    if (!kv || kv->type != LOWBIT_GGUF_ARRAY || kv->value_size < 12) return NULL;
    uint32_t type;
    memcpy(&type, kv->value, 4);
    if (type != elem_type) return NULL;
    *count = get_u64(kv->value + 4);
    return kv->value + 12;
}

/* The i-th string of tokenizer.ggml.tokens. */
static int token_piece(const lb_model *m, uint64_t id, const uint8_t **piece, uint64_t *length) {
    uint64_t count;
    const uint8_t *p = array_of(m, "tokenizer.ggml.tokens", LOWBIT_GGUF_STRING, &count);
    if (!p || id >= count) return 0;
    for (uint64_t i = 0; i < id; i++) p += 8 + get_u64(p);
    *length = get_u64(p);
    *piece = p + 8;
    return 1;
}

static int token_is(const lb_model *m, uint64_t id, const char *want) {
    const uint8_t *piece;
    uint64_t length;
    return token_piece(m, id, &piece, &length) && length == strlen(want) &&
           memcmp(piece, want, length) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The expected layout, computed here independently of the reader                              */
/* ------------------------------------------------------------------------------------------ */

typedef struct expected_tensor {
    char name[64];
    int64_t ne0, ne1; /* ne1 0: a vector */
    size_t byte_offset;
} expected_tensor;

typedef struct header {
    int32_t dim, hidden, layers, heads, kv_heads, vocab, seq_len;
} header;

static header read_header(const uint8_t *bytes) {
    header h;
    h.dim = get_i32(bytes), h.hidden = get_i32(bytes + 4), h.layers = get_i32(bytes + 8);
    h.heads = get_i32(bytes + 12), h.kv_heads = get_i32(bytes + 16);
    h.vocab = get_i32(bytes + 20), h.seq_len = get_i32(bytes + 24);
    return h;
}

/* Fills the tensors a GGUF converter would write, in its order; returns their count and sets
 *file_bytes to the size the checkpoint must have. */
static int expected_tensors(header h, expected_tensor *out, size_t *file_bytes) {
    const int64_t dim = h.dim, hidden = h.hidden, L = h.layers, vocab = llabs(h.vocab);
    const int64_t kv_dim = dim / h.heads * h.kv_heads, head = dim / h.heads;
    /* float offsets of the stacked arrays, in file order */
    const int64_t embd = 0, rms_att = embd + vocab * dim, wq = rms_att + L * dim;
    const int64_t wk = wq + L * dim * dim, wv = wk + L * kv_dim * dim, wo = wv + L * kv_dim * dim;
    const int64_t rms_ffn = wo + L * dim * dim, w1 = rms_ffn + L * dim, w2 = w1 + L * hidden * dim;
    const int64_t w3 = w2 + L * dim * hidden, rms_final = w3 + L * hidden * dim;
    const int64_t rope = rms_final + dim, cls = rope + h.seq_len * head;
    const int64_t end = cls + (h.vocab < 0 ? vocab * dim : 0);
    int n = 0;
#define ADD(nm, a, b, off)                                                                         \
    do {                                                                                           \
        snprintf(out[n].name, sizeof out[n].name, "%s", nm);                                       \
        out[n].ne0 = a, out[n].ne1 = b, out[n].byte_offset = 28 + 4 * (size_t)(off);               \
        n++;                                                                                       \
    } while (0)
    ADD("token_embd.weight", dim, vocab, embd);
    for (int64_t l = 0; l < L; l++) {
        char nm[64];
#define LAYER(suffix, a, b, base)                                                                  \
    snprintf(nm, sizeof nm, "blk.%d.%s.weight", (int)l, suffix);                                   \
    ADD(nm, a, b, (base) + l * (a) * ((b) ? (b) : 1))
        LAYER("attn_norm", dim, 0, rms_att);
        LAYER("attn_q", dim, dim, wq);
        LAYER("attn_k", dim, kv_dim, wk);
        LAYER("attn_v", dim, kv_dim, wv);
        LAYER("attn_output", dim, dim, wo);
        LAYER("ffn_norm", dim, 0, rms_ffn);
        LAYER("ffn_gate", dim, hidden, w1);
        LAYER("ffn_down", hidden, dim, w2);
        LAYER("ffn_up", dim, hidden, w3);
#undef LAYER
    }
    ADD("output_norm.weight", dim, 0, rms_final);
    if (h.vocab < 0) ADD("output.weight", dim, vocab, cls);
#undef ADD
    *file_bytes = 28 + 4 * (size_t)end;
    return n;
}

/* Every tensor's name, order, shape and place (an offset from `map`, where the model's bytes are),
   and its first and last floats, against the raw file; one tensor read whole through
   lb_model_read_f32. */
static void check_tensors(const lb_model *m, const uint8_t *map, const uint8_t *raw,
                          size_t raw_size, const char *what) {
    const header h = read_header(raw);
    expected_tensor *want = calloc(2 + 9 * (size_t)h.layers + 1, sizeof *want);
    size_t file_bytes;
    const int n = expected_tensors(h, want, &file_bytes);
    CHECK(file_bytes == raw_size, "%s: size %zu, layout says %zu", what, raw_size, file_bytes);
    CHECK(m->n_tensors == n, "%s: %lld tensors, want %d", what, (long long)m->n_tensors, n);
    for (int i = 0; i < n && i < m->n_tensors; i++) {
        const lb_tensor *t = &m->tensors[i];
        const expected_tensor *e = &want[i];
        const int dims = e->ne1 ? 2 : 1;
        CHECK(strcmp(t->name, e->name) == 0, "%s: tensor %d is %s, want %s", what, i, t->name,
              e->name);
        CHECK(t->type == LOWBIT_TYPE_F32 && t->permute_heads == 0, "%s: %s type/permute", what,
              t->name);
        CHECK(t->n_dims == dims && t->ne[0] == e->ne0 && t->ne[1] == (dims == 2 ? e->ne1 : 1),
              "%s: %s shape %d [%lld, %lld], want [%lld, %lld]", what, t->name, t->n_dims,
              (long long)t->ne[0], (long long)t->ne[1], (long long)e->ne0, (long long)e->ne1);
        const size_t n_floats = (size_t)e->ne0 * (size_t)(e->ne1 ? e->ne1 : 1);
        CHECK(t->n_bytes == 4 * n_floats, "%s: %s has %llu bytes", what, t->name,
              (unsigned long long)t->n_bytes);
        CHECK((const uint8_t *)t->data == map + e->byte_offset,
              "%s: %s points at byte %lld, want %zu", what, t->name,
              (long long)((const uint8_t *)t->data - map), e->byte_offset);
        const float first = get_f32((const uint8_t *)t->data);
        const float last = get_f32((const uint8_t *)t->data + 4 * (n_floats - 1));
        CHECK(memcmp(&first, raw + e->byte_offset, 4) == 0 &&
                  memcmp(&last, raw + e->byte_offset + 4 * (n_floats - 1), 4) == 0,
              "%s: %s first/last floats %g %g differ from the file", what, t->name, first, last);
    }
    /* blk.0.attn_k read as floats is the raw file's [kv_dim][dim] block, unpermuted */
    const lb_tensor *k = lb_model_find_tensor(m, "blk.0.attn_k.weight");
    CHECK(k != NULL, "%s: no blk.0.attn_k.weight", what);
    if (k) {
        const int64_t index = k - m->tensors;
        float *floats = malloc((size_t)k->n_bytes);
        lowbit_diag diag = {0};
        CHECK(lb_model_read_f32(m, index, floats, &diag) == LOWBIT_OK, "%s: %s", what,
              diag.message);
        CHECK(memcmp(floats, raw + want[3].byte_offset, (size_t)k->n_bytes) == 0,
              "%s: attn_k floats differ from the file", what);
        free(floats);
    }
    free(want);
}

/* ------------------------------------------------------------------------------------------ */
/* The sample models                                                                           */
/* ------------------------------------------------------------------------------------------ */

/* Every token's piece, score and type against the raw tokenizer file. */
static void check_vocab(const lb_model *m, const uint8_t *tok, size_t tok_size, int32_t vocab,
                        const char *what) {
    uint64_t n_tokens = 0, n_scores = 0, n_types = 0;
    const uint8_t *scores = array_of(m, "tokenizer.ggml.scores", LOWBIT_GGUF_FLOAT32, &n_scores);
    const uint8_t *types = array_of(m, "tokenizer.ggml.token_type", LOWBIT_GGUF_INT32, &n_types);
    CHECK(array_of(m, "tokenizer.ggml.tokens", LOWBIT_GGUF_STRING, &n_tokens) != NULL &&
              n_tokens == (uint64_t)vocab,
          "%s: %llu tokens, want %d", what, (unsigned long long)n_tokens, vocab);
    CHECK(scores && n_scores == (uint64_t)vocab, "%s: scores", what);
    CHECK(types && n_types == (uint64_t)vocab, "%s: token types", what);
    if (!scores || !types || n_tokens != (uint64_t)vocab) return;
    int mismatches = 0, bytes_seen = 0;
    size_t pos = 4;
    for (int32_t id = 0; id < vocab && pos + 8 <= tok_size; id++) {
        const uint8_t *raw_piece = tok + pos + 8;
        const int32_t raw_length = get_i32(tok + pos + 4);
        const uint8_t *piece = NULL;
        uint64_t length = 0;
        token_piece(m, (uint64_t)id, &piece, &length);
        int32_t type;
        memcpy(&type, types + 4 * id, 4);
        const int is_byte = raw_length == 6 && memcmp(raw_piece, "<0x", 3) == 0;
        const int32_t want_type = id == 0 ? 2 : id <= 2 ? 3 : is_byte ? 6 : 1;
        bytes_seen += type == 6;
        if (memcmp(scores + 4 * id, tok + pos, 4) != 0 || type != want_type) mismatches++;
        if (id > 2 && (length != (uint64_t)raw_length || memcmp(piece, raw_piece, length) != 0)) {
            mismatches++;
        }
        pos += 8 + (size_t)raw_length;
    }
    CHECK(mismatches == 0, "%s: %d token mismatches against the file", what, mismatches);
    CHECK(pos == tok_size, "%s: test walked %zu of %zu tokenizer bytes", what, pos, tok_size);
    /* tok105 is character-level with no byte pieces; the others fall back to 256 bytes */
    CHECK(bytes_seen == (vocab == 105 ? 0 : 256), "%s: %d byte tokens", what, bytes_seen);
}

static void check_sample(const char *model_file, const char *tok_file, const char *name) {
    char model_rel[128], tok_rel[128];
    snprintf(model_rel, sizeof model_rel, "models/%s", model_file);
    snprintf(tok_rel, sizeof tok_rel, "models/%s", tok_file);
    char model_path[1024];
    snprintf(model_path, sizeof model_path, "%s", lb_shared_path(model_rel));
    size_t raw_size = 0, tok_size = 0;
    uint8_t *raw = slurp(model_path, &raw_size);
    uint8_t *tok = slurp(lb_shared_path(tok_rel), &tok_size);
    CHECK(raw && tok && raw_size >= 28, "%s: cannot read the files", model_file);
    if (!raw || !tok || raw_size < 28) {
        free(raw);
        free(tok);
        return;
    }
    const header h = read_header(raw);
    lb_model m = {0};
    lowbit_diag diag = {0};
    /* no tokenizer path given: tok<vocab>.bin is found beside the model */
    const lowbit_status st = lb_read_llama2c_model(model_path, NULL, &m, &diag);
    CHECK(st == LOWBIT_OK, "%s: %s", model_file, diag.message);
    if (st == LOWBIT_OK) {
        CHECK(m.format == LOWBIT_MODEL_LLAMA2C, "%s: format %d", model_file, m.format);
        check_tensors(&m, m.files[0].data, raw, raw_size, model_file);
        const int separate = h.vocab < 0;
        CHECK((lb_model_find_tensor(&m, "output.weight") != NULL) == separate,
              "%s: output.weight present must match a negative vocab (%d)", model_file, h.vocab);
        CHECK(kv_is_string(&m, "general.architecture", "llama"), "%s: architecture", model_file);
        CHECK(kv_is_string(&m, "general.name", name), "%s: general.name", model_file);
        CHECK(m.n_kv > 1 && strcmp(m.kvs[0].key, "general.architecture") == 0, "%s: first key",
              model_file);
        CHECK(kv_is_u32(&m, "llama.context_length", (uint32_t)h.seq_len), "%s: context",
              model_file);
        CHECK(kv_is_u32(&m, "llama.embedding_length", (uint32_t)h.dim), "%s: dim", model_file);
        CHECK(kv_is_u32(&m, "llama.block_count", (uint32_t)h.layers), "%s: layers", model_file);
        CHECK(kv_is_u32(&m, "llama.feed_forward_length", (uint32_t)h.hidden), "%s: ffn",
              model_file);
        CHECK(kv_is_u32(&m, "llama.attention.head_count", (uint32_t)h.heads), "%s: heads",
              model_file);
        CHECK(kv_is_u32(&m, "llama.attention.head_count_kv", (uint32_t)h.kv_heads), "%s: kv heads",
              model_file);
        CHECK(kv_is_u32(&m, "llama.rope.dimension_count", (uint32_t)(h.dim / h.heads)),
              "%s: rope dims", model_file);
        CHECK(kv_is_u32(&m, "llama.vocab_size", (uint32_t)abs(h.vocab)), "%s: vocab", model_file);
        CHECK(kv_is_u32(&m, "general.file_type", 0), "%s: file type", model_file);
        CHECK(kv_is_f32(&m, "llama.attention.layer_norm_rms_epsilon", 1e-5f), "%s: eps",
              model_file);
        CHECK(kv_is_f32(&m, "llama.rope.freq_base", 10000.0f), "%s: freq base", model_file);
        CHECK(kv_is_string(&m, "tokenizer.ggml.model", "llama"), "%s: tokenizer model", model_file);
        CHECK(token_is(&m, 0, "<unk>") && token_is(&m, 1, "<s>") && token_is(&m, 2, "</s>"),
              "%s: <unk> <s> </s>", model_file);
        CHECK(kv_is_u32(&m, "tokenizer.ggml.bos_token_id", 1) &&
                  kv_is_u32(&m, "tokenizer.ggml.eos_token_id", 2) &&
                  kv_is_u32(&m, "tokenizer.ggml.unknown_token_id", 0),
              "%s: special ids", model_file);
        const lb_kv *add_bos = lb_model_find_kv(&m, "tokenizer.ggml.add_bos_token");
        CHECK(add_bos && add_bos->type == LOWBIT_GGUF_BOOL && add_bos->value_size == 1 &&
                  add_bos->value[0] == 1,
              "%s: add_bos_token", model_file);
        check_vocab(&m, tok, tok_size, abs(h.vocab), model_file);
    }
    lb_model_free(&m);
    CHECK(m.n_tensors == 0 && m.files[0].data == NULL, "%s: freed", model_file);
    free(raw);
    free(tok);
}

/* Exact values from one file, as a check on the helpers above: tok512's byte piece <0x41> is id
   3 + 0x41 with type 6, and its last token's score is -252. */
static void check_stories_values(void) {
    char model_path[1024]; /* lb_shared_path's buffer is reused by the next call */
    snprintf(model_path, sizeof model_path, "%s", lb_shared_path("models/stories260K.bin"));
    lb_model m = {0};
    lowbit_diag diag = {0};
    CHECK(lb_read_llama2c_model(model_path, lb_shared_path("models/tok512.bin"), &m, &diag) ==
              LOWBIT_OK,
          "stories260K with its tokenizer named: %s", diag.message);
    uint64_t n = 0;
    const uint8_t *types = array_of(&m, "tokenizer.ggml.token_type", LOWBIT_GGUF_INT32, &n);
    const uint8_t *scores = array_of(&m, "tokenizer.ggml.scores", LOWBIT_GGUF_FLOAT32, &n);
    CHECK(types && get_i32(types + 4 * (3 + 0x41)) == 6 && token_is(&m, 3 + 0x41, "<0x41>"),
          "byte token <0x41>");
    CHECK(types && get_i32(types + 4 * 511) == 1, "token 511 is normal");
    CHECK(scores && n == 512 && get_f32(scores + 4 * 511) == -252.0f, "last score");
    CHECK(m.n_tensors == 1 + 5 * 9 + 1, "stories260K: %lld tensors", (long long)m.n_tensors);
    lb_model_free(&m);
    /* another model's tokenizer, named: the counts disagree */
    CHECK(lb_read_llama2c_model(model_path, lb_shared_path("models/tok2048.bin"), &m, &diag) ==
                  LOWBIT_ERR_BAD_FILE &&
              strstr(diag.message, "tok2048.bin: holds 2048 tokens, the model's vocab is 512"),
          "stories260K with tok2048: %s", diag.message);
    snprintf(model_path, sizeof model_path, "%s", lb_shared_path("models/lit3m.bin"));
    CHECK(lb_read_llama2c_model(model_path, lb_shared_path("models/tok512.bin"), &m, &diag) ==
                  LOWBIT_ERR_BAD_FILE &&
              strstr(diag.message, "tok512.bin: 6227 bytes cannot hold the model's 2048 tokens"),
          "lit3m with tok512: %s", diag.message);
    CHECK(m.n_tensors == 0 && m.n_kv == 0, "left empty after a tokenizer mismatch");
}

/* ------------------------------------------------------------------------------------------ */
/* Hand-built checkpoints and tokenizers                                                       */
/* ------------------------------------------------------------------------------------------ */

typedef struct buffer {
    uint8_t *bytes;
    size_t size;
} buffer;

/* A checkpoint with the given header, its floats counting 0.5, 1.0, 1.5, ... */
static buffer make_checkpoint(header h) {
    size_t size;
    expected_tensor scratch[2 + 9 * 4 + 1];
    expected_tensors(h, scratch, &size); /* used with at most 4 layers */
    buffer b = {malloc(size), size};
    memcpy(b.bytes, &h, 28);
    for (size_t i = 0; 28 + 4 * i < size; i++) {
        const float v = 0.5f * (float)(i + 1);
        memcpy(b.bytes + 28 + 4 * i, &v, 4);
    }
    return b;
}

/* A tokenizer: max length, then (score, length, bytes) per piece. */
static buffer make_tokenizer(int32_t max_length, const char *const *pieces, int count) {
    size_t size = 4;
    for (int i = 0; i < count; i++) size += 8 + strlen(pieces[i]);
    buffer b = {malloc(size), size};
    memcpy(b.bytes, &max_length, 4);
    size_t pos = 4;
    for (int i = 0; i < count; i++) {
        const float score = -(float)i;
        const int32_t length = (int32_t)strlen(pieces[i]);
        memcpy(b.bytes + pos, &score, 4);
        memcpy(b.bytes + pos + 4, &length, 4);
        memcpy(b.bytes + pos + 8, pieces[i], (size_t)length);
        pos += 8 + (size_t)length;
    }
    return b;
}

static const header tiny = {8, 12, 2, 2, 1, 5, 4}; /* head 4, kv_dim 4 */
static const char *const tiny_pieces[5] = {"<unk>", "\n<s>\n", "\n</s>\n", "<0xFF>", " the"};

/* Loads from an exact-size copy (so a sanitizer build catches any read past the end); expects
   failure with a message containing `want` (when given). */
static void expect_reject(const void *model, size_t size, const void *tok, size_t tok_size,
                          const char *want, const char *what) {
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, model, size);
    uint8_t *tok_copy = NULL;
    if (tok) {
        tok_copy = malloc(tok_size ? tok_size : 1);
        memcpy(tok_copy, tok, tok_size);
    }
    lb_model m = {0};
    lowbit_diag diag = {0};
    const lowbit_status st =
        lb_read_llama2c_model_memory(copy, size, tok_copy, tok_size, "x", &m, &diag);
    CHECK(st == LOWBIT_ERR_BAD_FILE, "%s: status %d (%s)", what, (int)st, diag.message);
    CHECK(diag.message[0] != '\0', "%s: no message", what);
    CHECK(!want || strstr(diag.message, want), "%s: message '%s' lacks '%s'", what, diag.message,
          want ? want : "");
    CHECK(m.n_tensors == 0 && m.n_kv == 0, "%s: model not left empty", what);
    free(copy);
    free(tok_copy);
}

static void test_separate_classifier(void) {
    header h = tiny;
    h.vocab = -5;
    buffer b = make_checkpoint(h);
    CHECK(b.size == 28 + 4 * (size_t)(5 * 8 + 2 * (8 + 64 + 32 + 32 + 64 + 8 + 96 * 3) + 8 + 4 * 4 +
                                      5 * 8),
          "hand layout size %zu", b.size);
    lb_model m = {0};
    lowbit_diag diag = {0};
    CHECK(lb_read_llama2c_model_memory(b.bytes, b.size, NULL, 0, NULL, &m, &diag) == LOWBIT_OK,
          "untied: %s", diag.message);
    const lb_tensor *out = lb_model_find_tensor(&m, "output.weight");
    CHECK(out && out == &m.tensors[m.n_tensors - 1], "untied: output.weight last");
    if (out) {
        /* the classifier is the file's last 40 floats, after the 16 RoPE floats */
        const size_t first_index = (b.size - 28) / 4 - 40;
        CHECK(out->ne[0] == 8 && out->ne[1] == 5 &&
                  get_f32(out->data) == 0.5f * (float)(first_index + 1),
              "untied: output.weight starts with %g", get_f32(out->data));
    }
    CHECK(kv_is_u32(&m, "llama.vocab_size", 5), "untied: vocab 5");
    CHECK(kv_is_string(&m, "general.name", "llama2c"), "untied: default name");
    CHECK(lb_model_find_kv(&m, "tokenizer.ggml.tokens") == NULL, "untied: no tokenizer keys");
    check_tensors(&m, b.bytes, b.bytes, b.size, "untied");
    lb_model_free(&m);
    free(b.bytes);
}

static void test_tied_memory_with_tokenizer(void) {
    buffer b = make_checkpoint(tiny);
    buffer t = make_tokenizer(6, tiny_pieces, 5);
    lb_model m = {0};
    lowbit_diag diag = {0};
    CHECK(lb_read_llama2c_model_memory(b.bytes, b.size, t.bytes, t.size, "tiny", &m, &diag) ==
              LOWBIT_OK,
          "tied: %s", diag.message);
    CHECK(lb_model_find_tensor(&m, "output.weight") == NULL, "tied: no output.weight");
    CHECK(m.n_tensors == 1 + 2 * 9 + 1, "tied: %lld tensors", (long long)m.n_tensors);
    CHECK(token_is(&m, 1, "<s>") && token_is(&m, 2, "</s>") && token_is(&m, 4, " the"),
          "tied: pieces");
    uint64_t n = 0;
    const uint8_t *types = array_of(&m, "tokenizer.ggml.token_type", LOWBIT_GGUF_INT32, &n);
    CHECK(types && n == 5 && get_i32(types) == 2 && get_i32(types + 4) == 3 &&
              get_i32(types + 8) == 3 && get_i32(types + 12) == 6 && get_i32(types + 16) == 1,
          "tied: token types");
    check_tensors(&m, b.bytes, b.bytes, b.size, "tied");
    lb_model_free(&m);
    free(b.bytes);
    free(t.bytes);
}

static void test_bad_checkpoints(void) {
    buffer b = make_checkpoint(tiny);
    char want[128];
    expect_reject(b.bytes, 0, NULL, 0, "empty", "empty checkpoint");
    expect_reject(b.bytes, 27, NULL, 0, "too short", "27-byte header");
    const size_t cuts[] = {28, 29, 100, b.size / 2, b.size - 4, b.size - 1};
    for (int i = 0; i < LB_ARRAY_LEN(cuts); i++) {
        snprintf(want, sizeof want, "truncated: header says %zu bytes, file has %zu", b.size,
                 cuts[i]);
        expect_reject(b.bytes, cuts[i], NULL, 0, want, "truncated checkpoint");
    }
    uint8_t *longer = calloc(b.size + 5, 1);
    memcpy(longer, b.bytes, b.size);
    snprintf(want, sizeof want, "5 trailing bytes: header says %zu bytes, file has %zu", b.size,
             b.size + 5);
    expect_reject(longer, b.size + 5, NULL, 0, want, "trailing bytes");
    free(longer);

    static const char *const fields[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                          "n_kv_heads", "vocab_size", "seq_len"};
    for (int f = 0; f < 7; f++) {
        const int32_t values[] = {0, -3, INT32_MIN};
        for (int v = 0; v < 3; v++) {
            if (f == 5 && v == 1) continue; /* a negative vocab is the separate classifier */
            uint8_t *changed = malloc(b.size);
            memcpy(changed, b.bytes, b.size);
            memcpy(changed + 4 * f, &values[v], 4);
            snprintf(want, sizeof want, "%s (byte %d) is %d", fields[f], 4 * f, (int)values[v]);
            expect_reject(changed, b.size, NULL, 0, want, "bad header field");
            free(changed);
        }
    }
    header h = tiny;
    h.heads = 3;
    expect_reject(&h, 28, NULL, 0, "dim 8 is not divisible by n_heads 3", "dim % heads");
    h = tiny;
    h.heads = 4, h.kv_heads = 3;
    expect_reject(&h, 28, NULL, 0, "n_heads 4 is not a multiple of n_kv_heads 3", "heads % kv");
    h = tiny;
    h.dim = 6, h.heads = 2, h.kv_heads = 1;
    expect_reject(&h, 28, NULL, 0, "head size 3", "odd head size");
    /* every field at its largest: the arrays would need more than 2^64 bytes */
    const header huge = {INT32_MAX - 1, INT32_MAX, INT32_MAX, 1, 1, INT32_MAX, INT32_MAX};
    expect_reject(&huge, 28, NULL, 0, "implies over 2^64 bytes", "overflowing sizes");
    const header huge_untied = {1 << 30, 1 << 30, 1 << 20, 1 << 29, 1 << 28, -(1 << 30), 2};
    expect_reject(&huge_untied, 28, NULL, 0, "implies over 2^64 bytes",
                  "overflowing sizes, untied");
    /* large but representable: a truncation with the exact number */
    const header big = {1 << 16, 1 << 16, 1 << 10, 1 << 10, 1 << 9, 1 << 20, 1 << 10};
    expect_reject(&big, 28, NULL, 0, "truncated: header says", "big sizes");
    free(b.bytes);
}

static void test_bad_tokenizers(void) {
    buffer b = make_checkpoint(tiny);
    buffer t = make_tokenizer(6, tiny_pieces, 5);
    char want[160];
    static const uint8_t something[1] = {0};
    expect_reject(b.bytes, b.size, something, 0, "tokenizer: the file is empty", "empty tokenizer");
    expect_reject(b.bytes, b.size, t.bytes, 3, "too short for max_token_length",
                  "3-byte tokenizer");
    /* a length field pointing past the end (token 4's length 4 raised to 40) */
    uint8_t *hostile = malloc(t.size);
    memcpy(hostile, t.bytes, t.size);
    const size_t last = t.size - 4 - 8; /* token 4 " the" starts here */
    const int32_t long_length = 6;
    memcpy(hostile + last + 4, &long_length, 4);
    snprintf(want, sizeof want, "token 4's 6 bytes at byte %zu run past the end", last + 8);
    expect_reject(b.bytes, b.size, hostile, t.size, want, "length past the end");
    const int32_t negative = -1, too_long = 7;
    memcpy(hostile + last + 4, &negative, 4);
    expect_reject(b.bytes, b.size, hostile, t.size, "has length -1, outside 0..6",
                  "negative length");
    memcpy(hostile + last + 4, &too_long, 4);
    expect_reject(b.bytes, b.size, hostile, t.size, "has length 7, outside 0..6", "length > max");
    memcpy(hostile, t.bytes, t.size);
    const int32_t zero = 0;
    memcpy(hostile, &zero, 4);
    expect_reject(b.bytes, b.size, hostile, t.size, "max_token_length is 0", "zero max length");
    free(hostile);
    /* cut inside a record */
    expect_reject(b.bytes, b.size, t.bytes, t.size - 2, "run past the end",
                  "tokenizer cut in a piece");
    expect_reject(b.bytes, b.size, t.bytes, last + 3, "truncated at byte",
                  "tokenizer cut in a record");

    /* wrong counts: 4 tokens for a vocab of 5; 6 for 5; junk after the 5 */
    buffer fewer = make_tokenizer(6, tiny_pieces, 4);
    expect_reject(b.bytes, b.size, fewer.bytes, fewer.size,
                  "holds 4 tokens, the model's vocab is 5", "too few tokens");
    const char *const six[6] = {"<unk>", "\n<s>\n", "\n</s>\n", "a", "b", "c"};
    buffer more = make_tokenizer(6, six, 6);
    expect_reject(b.bytes, b.size, more.bytes, more.size, "holds 6 tokens, the model's vocab is 5",
                  "too many tokens");
    uint8_t *junk = calloc(t.size + 3, 1);
    memcpy(junk, t.bytes, t.size);
    expect_reject(b.bytes, b.size, junk, t.size + 3, "3 trailing bytes after the model's 5 tokens",
                  "junk after tokens");
    free(junk);
    /* the checkpoint is checked before the tokenizer */
    expect_reject(b.bytes, b.size - 1, t.bytes, t.size, "truncated",
                  "bad checkpoint, good tokenizer");
    /* a vocab too small for the special tokens, when a tokenizer is given */
    header h2 = tiny;
    h2.vocab = 2;
    buffer small = make_checkpoint(h2);
    buffer two = make_tokenizer(6, tiny_pieces, 2);
    expect_reject(small.bytes, small.size, two.bytes, two.size, "cannot hold <unk>", "vocab 2");
    free(small.bytes);
    free(two.bytes);
    free(fewer.bytes);
    free(more.bytes);
    free(b.bytes);
    free(t.bytes);
}

/* Through files: an empty file, a directory, a missing or broken named tokenizer, a tokenizer
   found (or not) beside the model. */
static void test_files(void) {
    char dir[] = "/tmp/lowbit-l2c-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char model_path[128], tok_path[128], empty_path[128], bad_tok_path[128];
    snprintf(model_path, sizeof model_path, "%s/tiny.v1.bin", dir);
    snprintf(tok_path, sizeof tok_path, "%s/tok5.bin", dir);
    snprintf(empty_path, sizeof empty_path, "%s/empty.bin", dir);
    snprintf(bad_tok_path, sizeof bad_tok_path, "%s/bad_tok.bin", dir);
    buffer b = make_checkpoint(tiny);
    buffer t = make_tokenizer(6, tiny_pieces, 5);
    CHECK(write_file(model_path, b.bytes, b.size) && write_file(empty_path, "", 0) &&
              write_file(bad_tok_path, t.bytes, t.size - 1),
          "writing test files");
    lb_model m = {0};
    lowbit_diag diag = {0};

    /* no tok5.bin yet: loads without tokenizer keys */
    CHECK(lb_read_llama2c_model(model_path, NULL, &m, &diag) == LOWBIT_OK, "no tokenizer: %s",
          diag.message);
    CHECK(lb_model_find_kv(&m, "tokenizer.ggml.tokens") == NULL && m.n_tensors == 20,
          "no tokenizer keys");
    CHECK(kv_is_string(&m, "general.name", "tiny.v1"), "name without the last extension");
    lb_model_free(&m);

    CHECK(write_file(tok_path, t.bytes, t.size), "writing tok5.bin");
    CHECK(lb_read_llama2c_model(model_path, NULL, &m, &diag) == LOWBIT_OK, "tok5 found: %s",
          diag.message);
    CHECK(token_is(&m, 4, " the"), "tok5.bin found beside the model");
    lb_model_free(&m);

    const struct {
        const char *model, *tok, *want;
    } cases[] = {
        {empty_path, NULL, "empty.bin: the file is empty"},
        {dir, NULL, "not a regular file"},
        {model_path, empty_path, "empty.bin: the file is empty"},
        {model_path, dir, "not a regular file"},
        {model_path, "/nonexistent/tok5.bin", "cannot open '/nonexistent/tok5.bin'"},
        {model_path, bad_tok_path, "bad_tok.bin: token 4's 4 bytes"},
    };
    for (int i = 0; i < LB_ARRAY_LEN(cases); i++) {
        memset(&diag, 0, sizeof diag);
        const lowbit_status st = lb_read_llama2c_model(cases[i].model, cases[i].tok, &m, &diag);
        CHECK(st != LOWBIT_OK && strstr(diag.message, cases[i].want),
              "case %d: status %d, message '%s', want '%s'", i, (int)st, diag.message,
              cases[i].want);
        CHECK(m.n_tensors == 0 && m.n_kv == 0 && m.files[0].data == NULL && m.files[1].data == NULL,
              "case %d: model left empty", i);
    }
    /* a broken tok5.bin found beside the model is an error too, naming it */
    CHECK(write_file(tok_path, t.bytes, t.size - 1), "rewriting tok5.bin");
    CHECK(lb_read_llama2c_model(model_path, NULL, &m, &diag) == LOWBIT_ERR_BAD_FILE &&
              strstr(diag.message, "tok5.bin"),
          "broken tok5.bin: %s", diag.message);
    unlink(model_path);
    unlink(tok_path);
    unlink(empty_path);
    unlink(bad_tok_path);
    rmdir(dir);
    free(b.bytes);
    free(t.bytes);
}

int main(void) {
    check_sample("stories260K.bin", "tok512.bin", "stories260K");
    check_sample("llama2xs.bin", "tok512.bin", "llama2xs");
    check_sample("babyllama105.bin", "tok105.bin", "babyllama105");
    check_sample("lit3m.bin", "tok2048.bin", "lit3m");
    check_stories_values();
    test_separate_classifier();
    test_tied_memory_with_tokenizer();
    test_bad_checkpoints();
    test_bad_tokenizers();
    test_files();
    return lb_test_summary();
}
