/* The safetensors reader: a tiny 2-layer Llama written here in F32, F16 and BF16 (with its
   config.json) is read back with GGUF names, reversed shapes, exact values, the RoPE row
   permutation of Q and K, and llama.* metadata; hostile and inconsistent variants are refused
   with a message naming the problem. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "io/model.h"
#include "io/safetensors.h"
#include "testing.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The model: hidden 16, 2 heads of 8, 1 KV head, FFN 32, vocabulary 20, 2 layers. */
enum { HIDDEN = 16, HEADS = 2, KV_HEADS = 1, HEAD_DIM = 8, FFN = 32, VOCAB = 20, LAYERS = 2 };
#define MAX_RECORDS 32

typedef struct rec {
    char name[96];
    char dtype[16];
    int n_dims;
    int64_t shape[4];
    uint64_t begin, end;
} rec;

typedef struct checkpoint {
    rec recs[MAX_RECORDS];
    int n;
    uint8_t *data;      /* the tensor bytes, laid out as the records first said */
    uint64_t data_size;
} checkpoint;

static char folder[256];
static const char *metadata_json = "{\"format\":\"pt\"}"; /* the header's __metadata__ */
static char model_path[300];
static char config_path[300];

/* Exactly representable in F16 and BF16: multiples of 1/8 below 4 in magnitude. */
static float value_of(int tensor, int64_t i) { return (float)((tensor * 7 + i * 5) % 61 - 30) / 8.0f; }

static int element_bytes(const char *dtype) { return strcmp(dtype, "F32") == 0 ? 4 : 2; }

static void add_rec(checkpoint *c, const char *name, const char *dtype, int n_dims, int64_t d0, int64_t d1) {
    rec *r = &c->recs[c->n++];
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->dtype, sizeof r->dtype, "%s", dtype);
    r->n_dims = n_dims;
    r->shape[0] = d0;
    r->shape[1] = d1;
}

/* The tiny Llama with matrices in `dtype` and norms in `norm_dtype`; tied: no lm_head. */
static void build_checkpoint(checkpoint *c, const char *dtype, const char *norm_dtype, int tied) {
    memset(c, 0, sizeof *c);
    add_rec(c, "model.embed_tokens.weight", dtype, 2, VOCAB, HIDDEN);
    for (int l = 0; l < LAYERS; l++) {
        char name[96];
#define LAYER_REC(suffix, dt, nd, a, b)                                                            \
    snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);                                  \
    add_rec(c, name, dt, nd, a, b)
        LAYER_REC("input_layernorm.weight", norm_dtype, 1, HIDDEN, 0);
        LAYER_REC("self_attn.q_proj.weight", dtype, 2, HEADS * HEAD_DIM, HIDDEN);
        LAYER_REC("self_attn.k_proj.weight", dtype, 2, KV_HEADS * HEAD_DIM, HIDDEN);
        LAYER_REC("self_attn.v_proj.weight", dtype, 2, KV_HEADS * HEAD_DIM, HIDDEN);
        LAYER_REC("self_attn.o_proj.weight", dtype, 2, HIDDEN, HEADS * HEAD_DIM);
        LAYER_REC("post_attention_layernorm.weight", norm_dtype, 1, HIDDEN, 0);
        LAYER_REC("mlp.gate_proj.weight", dtype, 2, FFN, HIDDEN);
        LAYER_REC("mlp.up_proj.weight", dtype, 2, FFN, HIDDEN);
        LAYER_REC("mlp.down_proj.weight", dtype, 2, HIDDEN, FFN);
#undef LAYER_REC
    }
    add_rec(c, "model.norm.weight", norm_dtype, 1, HIDDEN, 0);
    if (!tied) add_rec(c, "lm_head.weight", dtype, 2, VOCAB, HIDDEN);
    /* lay the data out: the F32 tensors first so every tensor stays aligned */
    uint64_t offset = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int t = 0; t < c->n; t++) {
            rec *r = &c->recs[t];
            if ((element_bytes(r->dtype) == 4) != (pass == 0)) continue;
            const int64_t elements = r->shape[0] * (r->n_dims == 2 ? r->shape[1] : 1);
            r->begin = offset;
            r->end = offset + (uint64_t)elements * (uint64_t)element_bytes(r->dtype);
            offset = r->end;
        }
    }
    c->data_size = offset;
    c->data = calloc((size_t)offset, 1);
    for (int t = 0; t < c->n; t++) {
        const rec *r = &c->recs[t];
        const int64_t elements = (int64_t)(r->end - r->begin) / element_bytes(r->dtype);
        for (int64_t i = 0; i < elements; i++) {
            const float v = value_of(t, i);
            uint8_t *p = c->data + r->begin + (uint64_t)i * (uint64_t)element_bytes(r->dtype);
            if (strcmp(r->dtype, "F32") == 0) {
                memcpy(p, &v, 4);
            } else {
                const uint16_t h = strcmp(r->dtype, "F16") == 0 ? lowbit_fp32_to_fp16(v) : lowbit_fp32_to_bf16(v);
                memcpy(p, &h, 2);
            }
        }
    }
}

static int find_rec(const checkpoint *c, const char *name) {
    for (int t = 0; t < c->n; t++) {
        if (strcmp(c->recs[t].name, name) == 0) return t;
    }
    return -1;
}

/* The header JSON of the records (plus `extra` members), padded with spaces to 8 bytes. */
static char *header_json(const checkpoint *c, const char *extra, uint64_t *length) {
    const size_t capacity = 64 * 1024;
    char *h = malloc(capacity);
    size_t n = (size_t)snprintf(h, capacity, "{\"__metadata__\":%s%s", metadata_json, extra);
    for (int t = 0; t < c->n; t++) {
        const rec *r = &c->recs[t];
        n += (size_t)snprintf(h + n, capacity - n, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", r->name, r->dtype);
        for (int d = 0; d < r->n_dims; d++) {
            n += (size_t)snprintf(h + n, capacity - n, "%s%lld", d ? "," : "", (long long)r->shape[d]);
        }
        n += (size_t)snprintf(h + n, capacity - n, "],\"data_offsets\":[%llu,%llu]}",
                              (unsigned long long)r->begin, (unsigned long long)r->end);
    }
    n += (size_t)snprintf(h + n, capacity - n, "}");
    while (n % 8) h[n++] = ' ';
    h[n] = '\0';
    *length = n;
    return h;
}

static void write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (n) fwrite(bytes, 1, n, f);
    fclose(f);
}

/* Writes model.safetensors: header length (or `declared_length` if not UINT64_MAX), header
   text, the first `data_bytes` of data. */
static void write_model_raw(const char *header, uint64_t header_length, uint64_t declared_length,
                            const uint8_t *data, uint64_t data_bytes) {
    const uint64_t n = declared_length != UINT64_MAX ? declared_length : header_length;
    uint8_t *file = malloc((size_t)(8 + header_length + data_bytes));
    for (int i = 0; i < 8; i++) file[i] = (uint8_t)(n >> (8 * i));
    memcpy(file + 8, header, (size_t)header_length);
    if (data_bytes) memcpy(file + 8 + header_length, data, (size_t)data_bytes);
    write_bytes(model_path, file, (size_t)(8 + header_length + data_bytes));
    free(file);
}

static void write_model(const checkpoint *c, const char *extra) {
    uint64_t length;
    char *h = header_json(c, extra, &length);
    write_model_raw(h, length, UINT64_MAX, c->data, c->data_size);
    free(h);
}

static const char *config_text(int tied, const char *extra) {
    static char text[2048];
    snprintf(text, sizeof text,
             "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
             "  \"hidden_act\": \"silu\",\n  \"hidden_size\": %d,\n  \"num_hidden_layers\": %d,\n"
             "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n"
             "  \"intermediate_size\": %d,\n  \"max_position_embeddings\": 64,\n"
             "  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 500000.0,\n  \"vocab_size\": %d,\n"
             "  \"rope_scaling\": null,\n  \"torch_dtype\": \"bfloat16\",\n"
             "  \"tie_word_embeddings\": %s%s\n}\n",
             HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, VOCAB, tied ? "true" : "false", extra);
    return text;
}

static void write_config(const char *text) { write_bytes(config_path, text, strlen(text)); }

/* Reads the model on disk expecting failure with `status` and a message containing each of
   the (up to two) fragments. */
static void check_rejected(const char *what, lowbit_status status, const char *fragment, const char *fragment2) {
    lb_model m = {0};
    lowbit_diag diag = {0};
    const lowbit_status st = lb_read_safetensors_model(model_path, &m, &diag);
    CHECK(st == status, "%s: status %d (%s), expected %d", what, (int)st, diag.message, (int)status);
    CHECK(strstr(diag.message, fragment) != NULL, "%s: message '%s' lacks '%s'", what, diag.message, fragment);
    CHECK(!fragment2 || strstr(diag.message, fragment2) != NULL, "%s: message '%s' lacks '%s'", what,
          diag.message, fragment2);
    CHECK(m.n_tensors == 0 && m.n_kv == 0 && m.files[0].data == NULL, "%s: model not left empty", what);
    lb_model_free(&m);
}

static uint64_t kv_u64(const lb_model *m, const char *key) {
    uint64_t v = UINT64_MAX;
    if (!lb_kv_get_u64(lb_model_find_kv(m, key), &v)) return UINT64_MAX;
    return v;
}

static double kv_f64(const lb_model *m, const char *key) {
    double v = -1;
    if (!lb_kv_get_f64(lb_model_find_kv(m, key), &v)) return -1;
    return v;
}

static void check_metadata(const lb_model *m, uint64_t file_type) {
    const lb_kv *arch = lb_model_find_kv(m, "general.architecture");
    CHECK(arch && arch->type == LOWBIT_GGUF_STRING && arch->value_size == 13 &&
              memcmp(arch->value + 8, "llama", 5) == 0, "general.architecture");
    CHECK(kv_u64(m, "general.file_type") == file_type, "file_type %llu, expected %llu",
          (unsigned long long)kv_u64(m, "general.file_type"), (unsigned long long)file_type);
    CHECK(kv_u64(m, "llama.context_length") == 64, "context_length");
    CHECK(kv_u64(m, "llama.embedding_length") == HIDDEN, "embedding_length");
    CHECK(kv_u64(m, "llama.block_count") == LAYERS, "block_count");
    CHECK(kv_u64(m, "llama.feed_forward_length") == FFN, "feed_forward_length");
    CHECK(kv_u64(m, "llama.attention.head_count") == HEADS, "head_count");
    CHECK(kv_u64(m, "llama.attention.head_count_kv") == KV_HEADS, "head_count_kv");
    CHECK(kv_u64(m, "llama.rope.dimension_count") == HEAD_DIM, "rope.dimension_count");
    CHECK(kv_u64(m, "llama.vocab_size") == VOCAB, "vocab_size");
    CHECK(kv_f64(m, "llama.attention.layer_norm_rms_epsilon") == (double)1e-5f, "rms eps %g",
          kv_f64(m, "llama.attention.layer_norm_rms_epsilon"));
    CHECK(kv_f64(m, "llama.rope.freq_base") == 500000.0, "freq_base");
    CHECK(lb_model_find_kv(m, "llama.attention.key_length") == NULL, "no key_length when head_dim is implied");
    CHECK(lb_model_find_kv(m, "tokenizer.ggml.model") == NULL, "no tokenizer");
}

/* Q with 2 heads of 8 rows: GGUF row 2j+k of a head comes from row 4k+j of the checkpoint's,
   worked out by hand: */
static const int q_row_source[HEADS * HEAD_DIM] = {0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15};
static const int k_row_source[KV_HEADS * HEAD_DIM] = {0, 4, 1, 5, 2, 6, 3, 7};

/* Every tensor: name mapped, shape reversed, values equal to what was written (rows of Q and K
   in the permuted order). */
static void check_tensors(const lb_model *m, const checkpoint *c, int tied) {
    static const char *const globals[][2] = {{"model.embed_tokens.weight", "token_embd.weight"},
                                             {"model.norm.weight", "output_norm.weight"},
                                             {"lm_head.weight", "output.weight"}};
    static const char *const layer[][2] = {
        {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"}, {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"}, {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"}};
    CHECK(m->n_tensors == (tied ? 2 : 3) + 9 * LAYERS, "%lld tensors", (long long)m->n_tensors);
    CHECK(strcmp(m->tensors[0].name, "token_embd.weight") == 0, "first tensor '%s'", m->tensors[0].name);
    CHECK(strcmp(m->tensors[1].name, "blk.0.attn_norm.weight") == 0, "second tensor '%s'", m->tensors[1].name);
    CHECK(strcmp(m->tensors[9 * LAYERS + 1].name, "output_norm.weight") == 0, "output_norm after the blocks: '%s'",
          m->tensors[9 * LAYERS + 1].name);
    CHECK(lb_model_find_tensor(m, "output.weight") == NULL || !tied, "tied model has no output.weight");
    float *values = malloc(sizeof(float) * VOCAB * FFN * HIDDEN);
    for (int64_t i = 0; i < m->n_tensors; i++) {
        const lb_tensor *t = &m->tensors[i];
        char hf[96] = "";
        for (int g = 0; g < 3; g++) {
            if (strcmp(t->name, globals[g][1]) == 0) snprintf(hf, sizeof hf, "%s", globals[g][0]);
        }
        for (int l = 0; l < LAYERS; l++) {
            for (int k = 0; k < 9; k++) {
                char gguf[96];
                snprintf(gguf, sizeof gguf, "blk.%d.%s", l, layer[k][1]);
                if (strcmp(t->name, gguf) == 0) snprintf(hf, sizeof hf, "model.layers.%d.%s", l, layer[k][0]);
            }
        }
        const int r = find_rec(c, hf);
        CHECK(r >= 0, "tensor '%s' does not come from a checkpoint tensor", t->name);
        if (r < 0) continue;
        const rec *src = &c->recs[r];
        CHECK(t->n_dims == src->n_dims, "%s: %d dims", t->name, t->n_dims);
        CHECK(t->ne[0] == src->shape[src->n_dims - 1] && (src->n_dims == 1 || t->ne[1] == src->shape[0]),
              "%s: ne [%lld, %lld] is not the reversed shape", t->name, (long long)t->ne[0], (long long)t->ne[1]);
        const lowbit_type want_type = strcmp(src->dtype, "F32") == 0 ? LOWBIT_TYPE_F32
                                      : strcmp(src->dtype, "F16") == 0 ? LOWBIT_TYPE_F16 : LOWBIT_TYPE_BF16;
        CHECK(t->type == want_type, "%s: type %d", t->name, (int)t->type);
        const int is_q = strstr(t->name, "attn_q") != NULL, is_k = strstr(t->name, "attn_k") != NULL;
        CHECK(t->permute_heads == (is_q ? HEADS : is_k ? KV_HEADS : 0), "%s: permute_heads %d", t->name, t->permute_heads);
        lowbit_diag diag = {0};
        CHECK(lb_model_read_f32(m, i, values, &diag) == LOWBIT_OK, "%s: read: %s", t->name, diag.message);
        int mismatches = 0;
        const int64_t rows = lb_tensor_rows(t);
        for (int64_t row = 0; row < rows; row++) {
            const int64_t from = is_q ? q_row_source[row] : is_k ? k_row_source[row] : row;
            for (int64_t col = 0; col < t->ne[0]; col++) {
                mismatches += values[row * t->ne[0] + col] != value_of(r, from * t->ne[0] + col);
            }
        }
        CHECK(mismatches == 0, "%s: %d values differ", t->name, mismatches);
    }
    free(values);
}

static void test_good(const char *dtype, const char *norm_dtype, int tied, uint64_t file_type) {
    checkpoint c;
    build_checkpoint(&c, dtype, norm_dtype, tied);
    write_model(&c, "");
    write_config(config_text(tied, ""));
    lb_model m = {0};
    lowbit_diag diag = {0};
    const lowbit_status st = lb_read_safetensors_model(model_path, &m, &diag);
    CHECK(st == LOWBIT_OK, "%s/%s tied %d: %s", dtype, norm_dtype, tied, diag.message);
    if (st == LOWBIT_OK) {
        CHECK(m.format == LOWBIT_MODEL_SAFETENSORS, "format");
        CHECK(m.files[0].data != NULL, "the file is mapped into the model");
        check_metadata(&m, file_type);
        check_tensors(&m, &c, tied);
    }
    lb_model_free(&m);
    free(c.data);
}

/* A hostile or inconsistent variant of the F32 checkpoint: `edit` changes the records, `extra`
   adds header members, and the good config is written unless `config` is given. */
static void test_variant(const char *what, void (*edit)(checkpoint *), const char *extra,
                         const char *config, lowbit_status status, const char *fragment,
                         const char *fragment2) {
    checkpoint c;
    build_checkpoint(&c, "F32", "F32", 0);
    if (edit) edit(&c);
    write_model(&c, extra);
    write_config(config ? config : config_text(0, ""));
    check_rejected(what, status, fragment, fragment2);
    free(c.data);
}

static void overlap(checkpoint *c) {
    const int a = find_rec(c, "model.layers.0.self_attn.v_proj.weight");
    const int b = find_rec(c, "model.layers.0.self_attn.k_proj.weight");
    c->recs[a].begin = c->recs[b].begin + 4; /* same size, shifted by one element into k */
    c->recs[a].end = c->recs[b].end + 4;
}
static void past_end(checkpoint *c) { c->recs[0].begin += c->data_size; c->recs[0].end += c->data_size; }
static void reversed_offsets(checkpoint *c) {
    const uint64_t b = c->recs[0].begin;
    c->recs[0].begin = c->recs[0].end;
    c->recs[0].end = b;
}
static void wrong_size(checkpoint *c) { c->recs[find_rec(c, "model.norm.weight")].shape[0] = HIDDEN + 1; }
static void unknown_dtype(checkpoint *c) { snprintf(c->recs[3].dtype, sizeof c->recs[3].dtype, "I64"); }
static void garbage_dtype(checkpoint *c) { snprintf(c->recs[3].dtype, sizeof c->recs[3].dtype, "F33"); }
static void unknown_name(checkpoint *c) {
    snprintf(c->recs[2].name, sizeof c->recs[2].name, "model.layers.0.self_attn.q_proj.bias");
}
static void leading_zero_layer(checkpoint *c) {
    snprintf(c->recs[2].name, sizeof c->recs[2].name, "model.layers.00.self_attn.q_proj.weight");
}
static void layer_past_config(checkpoint *c) {
    snprintf(c->recs[2].name, sizeof c->recs[2].name, "model.layers.2.self_attn.q_proj.weight");
}
static void drop_lm_head(checkpoint *c) { c->n--; }
static void transposed_down(checkpoint *c) {
    rec *r = &c->recs[find_rec(c, "model.layers.1.mlp.down_proj.weight")];
    r->shape[0] = FFN;
    r->shape[1] = HIDDEN;
}
static void three_dims(checkpoint *c) {
    rec *r = &c->recs[find_rec(c, "model.layers.1.mlp.up_proj.weight")];
    r->n_dims = 3;
    r->shape[0] = FFN / 2;
    r->shape[1] = 2;
    r->shape[2] = HIDDEN;
}
static void zero_dim(checkpoint *c) {
    rec *r = &c->recs[find_rec(c, "model.norm.weight")];
    r->shape[0] = 0;
    r->end = r->begin;
}
static void misaligned(checkpoint *c) { c->recs[0].begin += 2; c->recs[0].end += 2; }

static void test_hostile_headers(void) {
    checkpoint c;
    build_checkpoint(&c, "F32", "F32", 0);
    write_config(config_text(0, ""));
    uint64_t length;
    char *h = header_json(&c, "", &length);

    write_bytes(model_path, "\x10\0\0", 3);
    check_rejected("3-byte file", LOWBIT_ERR_BAD_FILE, "too short", NULL);
    write_model_raw(h, length / 2, length, NULL, 0);
    check_rejected("truncated header", LOWBIT_ERR_BAD_FILE, "runs past the end of the file", NULL);
    write_model_raw(h, length, length + c.data_size + 1, c.data, c.data_size);
    check_rejected("N past the end", LOWBIT_ERR_BAD_FILE, "runs past the end of the file", NULL);
    write_model_raw(h, length, 100000001, c.data, c.data_size);
    check_rejected("N over 100 MB", LOWBIT_ERR_BAD_FILE, "over the format's limit", NULL);
    write_model_raw(h, length, UINT64_MAX - 3, c.data, c.data_size);
    check_rejected("N near 2^64", LOWBIT_ERR_BAD_FILE, "header length", NULL);
    write_model_raw(h, length - 8, UINT64_MAX, c.data, c.data_size); /* header cut mid-way */
    check_rejected("bad JSON", LOWBIT_ERR_BAD_FILE, "safetensors header: JSON error at byte", NULL);
    write_model_raw("[1, 2, 3]       ", 16, UINT64_MAX, NULL, 0);
    check_rejected("header not an object", LOWBIT_ERR_BAD_FILE, "not a JSON object", NULL);
    write_model_raw("{} x", 4, UINT64_MAX, NULL, 0);
    check_rejected("trailing garbage", LOWBIT_ERR_BAD_FILE, "unexpected text after the value", NULL);
    write_model_raw("", 0, UINT64_MAX, NULL, 0);
    check_rejected("empty header", LOWBIT_ERR_BAD_FILE, "unexpected end", NULL);
    free(h);
    free(c.data);
}

static void test_hostile_entries(void) {
    test_variant("overlap", overlap, "", NULL, LOWBIT_ERR_BAD_FILE, "overlap", "v_proj");
    test_variant("past the end", past_end, "", NULL, LOWBIT_ERR_BAD_FILE, "run past the end of the data",
                 "embed_tokens");
    test_variant("reversed offsets", reversed_offsets, "", NULL, LOWBIT_ERR_BAD_FILE, "ends before it begins", NULL);
    test_variant("wrong size", wrong_size, "", NULL, LOWBIT_ERR_BAD_FILE, "data_offsets span", "model.norm.weight");
    test_variant("unknown dtype", unknown_dtype, "", NULL, LOWBIT_ERR_UNSUPPORTED, "dtype 'I64'", "k_proj");
    test_variant("garbage dtype", garbage_dtype, "", NULL, LOWBIT_ERR_BAD_FILE, "dtype 'F33'", "k_proj");
    test_variant("duplicate name", NULL,
                 ",\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", NULL,
                 LOWBIT_ERR_BAD_FILE, "duplicate key 'model.norm.weight'", NULL);
    test_variant("unknown field", NULL, ",\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"y\":1}",
                 NULL, LOWBIT_ERR_BAD_FILE, "unknown field 'y'", NULL);
    test_variant("missing dtype", NULL, ",\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}", NULL,
                 LOWBIT_ERR_BAD_FILE, "no dtype", "'x'");
    test_variant("negative dimension", NULL, ",\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}",
                 NULL, LOWBIT_ERR_BAD_FILE, "not a non-negative integer", NULL);
    test_variant("fractional offset", NULL, ",\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}",
                 NULL, LOWBIT_ERR_BAD_FILE, "two non-negative integers", NULL);
    test_variant("three offsets", NULL, ",\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}",
                 NULL, LOWBIT_ERR_BAD_FILE, "array of two integers", NULL);
    test_variant("overflowing shape", NULL,
                 ",\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}",
                 NULL, LOWBIT_ERR_BAD_FILE, "overflows", NULL);
    test_variant("shape times size overflows", NULL,
                 ",\"x\":{\"dtype\":\"F32\",\"shape\":[4611686018427387905],\"data_offsets\":[0,4]}",
                 NULL, LOWBIT_ERR_BAD_FILE, "data_offsets span", NULL);
    test_variant("five dimensions", NULL,
                 ",\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}",
                 NULL, LOWBIT_ERR_BAD_FILE, "more than 4 dimensions", NULL);
    metadata_json = "{\"format\":\"pt\",\"a\":1}";
    test_variant("metadata not strings", NULL, "", NULL, LOWBIT_ERR_BAD_FILE, "__metadata__ value 'a'", NULL);
    metadata_json = "[]";
    test_variant("metadata an array", NULL, "", NULL, LOWBIT_ERR_BAD_FILE, "__metadata__", "not an object");
    metadata_json = "{\"format\":\"pt\"}";
    test_variant("zero dimension", zero_dim, "", NULL, LOWBIT_ERR_BAD_FILE, "dimension is 0", NULL);
    test_variant("misaligned", misaligned, "", NULL, LOWBIT_ERR_BAD_FILE, "not aligned", NULL);
}

static void test_names_and_config(void) {
    test_variant("unknown name", unknown_name, "", NULL, LOWBIT_ERR_UNSUPPORTED,
                 "'model.layers.0.self_attn.q_proj.bias'", "not a Llama tensor");
    test_variant("layer 00", leading_zero_layer, "", NULL, LOWBIT_ERR_UNSUPPORTED, "model.layers.00.", NULL);
    test_variant("layer past config", layer_past_config, "", NULL, LOWBIT_ERR_BAD_FILE, "layer 2", "2 layers");
    test_variant("missing lm_head", drop_lm_head, "", NULL, LOWBIT_ERR_BAD_FILE, "no tensor 'lm_head.weight'", NULL);
    test_variant("transposed down_proj", transposed_down, "", NULL, LOWBIT_ERR_BAD_FILE,
                 "'model.layers.1.mlp.down_proj.weight' has shape [32, 16] where config.json implies [16, 32]", NULL);
    test_variant("3-D up_proj", three_dims, "", NULL, LOWBIT_ERR_BAD_FILE, "has shape [16, 2, 16]", NULL);

    /* the same good checkpoint against configs that disagree with it or are malformed */
    char config[2048];
    snprintf(config, sizeof config, "%s", config_text(0, ""));
    char *p = strstr(config, "\"hidden_size\": 16");
    memcpy(p, "\"hidden_size\": 24", 17);
    test_variant("hidden_size disagrees", NULL, "", config, LOWBIT_ERR_BAD_FILE, "config.json implies", NULL);
    snprintf(config, sizeof config, "%s", config_text(0, ""));
    p = strstr(config, "\"vocab_size\": 20");
    memcpy(p, "\"vocab_size\": 21", 16);
    test_variant("vocab_size disagrees", NULL, "", config, LOWBIT_ERR_BAD_FILE, "embed_tokens", "[21, 16]");
    snprintf(config, sizeof config, "%s", config_text(0, ""));
    p = strstr(config, "\"num_key_value_heads\": 1");
    memcpy(p, "\"num_key_value_heads\": 2", 24);
    test_variant("kv heads disagree", NULL, "", config, LOWBIT_ERR_BAD_FILE, "k_proj", "[16, 16]");
    snprintf(config, sizeof config, "%s", config_text(0, ""));
    p = strstr(config, "\"num_key_value_heads\": 1");
    memcpy(p, "\"num_key_value_heads\": 3", 24);
    test_variant("kv heads do not divide", NULL, "", config, LOWBIT_ERR_BAD_FILE, "num_key_value_heads", NULL);
    snprintf(config, sizeof config, "%s", config_text(0, ""));
    p = strstr(config, "\"intermediate_size\"");
    memcpy(p, "\"intermediate_sizX\"", 19);
    test_variant("intermediate_size missing", NULL, "", config, LOWBIT_ERR_BAD_FILE,
                 "'intermediate_size' is missing", NULL);
    snprintf(config, sizeof config, "%s", config_text(0, ""));
    p = strstr(config, "\"hidden_size\": 16");
    memcpy(p, "\"hidden_size\": -1", 17);
    test_variant("negative hidden_size", NULL, "", config, LOWBIT_ERR_BAD_FILE, "'hidden_size' is not an integer", NULL);
    test_variant("config not JSON", NULL, "", "{\"hidden_size\": 16,", LOWBIT_ERR_BAD_FILE, "config.json: JSON error", NULL);
    test_variant("config an array", NULL, "", "[]", LOWBIT_ERR_BAD_FILE, "config.json is not a JSON object", NULL);
    snprintf(config, sizeof config, "%s", config_text(0, ""));
    p = strstr(config, "\"llama\"");
    memcpy(p, "\"gemma\"", 7);
    test_variant("gemma", NULL, "", config, LOWBIT_ERR_UNSUPPORTED, "model_type", NULL);
    snprintf(config, sizeof config, "%s", config_text(0, ""));
    p = strstr(config, "\"rope_scaling\": null");
    memcpy(p, "\"rope_scaling\": {  }", 20);
    test_variant("rope scaling", NULL, "", config, LOWBIT_ERR_UNSUPPORTED, "rope_scaling", NULL);

    /* no config.json at all */
    checkpoint c;
    build_checkpoint(&c, "F32", "F32", 0);
    write_model(&c, "");
    unlink(config_path);
    check_rejected("missing config.json", LOWBIT_ERR_IO, "config.json", NULL);
    free(c.data);
}

/* An old checkpoint's rotary inv_freq buffers are skipped; an explicit head_dim is honoured. */
static void test_extras(void) {
    checkpoint c;
    build_checkpoint(&c, "F32", "F32", 0);
    /* inv_freq: 4 floats placed after the data */
    add_rec(&c, "model.layers.1.self_attn.rotary_emb.inv_freq", "F32", 1, HEAD_DIM / 2, 0);
    c.recs[c.n - 1].begin = c.data_size;
    c.recs[c.n - 1].end = c.data_size + 16;
    c.data = realloc(c.data, (size_t)c.data_size + 16);
    memset(c.data + c.data_size, 0, 16);
    c.data_size += 16;
    write_model(&c, "");
    write_config(config_text(0, ", \"head_dim\": 8"));
    lb_model m = {0};
    lowbit_diag diag = {0};
    CHECK(lb_read_safetensors_model(model_path, &m, &diag) == LOWBIT_OK, "inv_freq: %s", diag.message);
    CHECK(m.n_tensors == 3 + 9 * LAYERS, "inv_freq is not a model tensor (%lld)", (long long)m.n_tensors);
    CHECK(kv_u64(&m, "llama.rope.dimension_count") == HEAD_DIM, "explicit head_dim");
    lb_model_free(&m);
    free(c.data);

    /* the memory entry point: tensors point into the caller's bytes */
    build_checkpoint(&c, "F16", "F32", 1);
    uint64_t length;
    char *h = header_json(&c, "", &length);
    uint8_t *bytes = malloc((size_t)(8 + length + c.data_size));
    for (int i = 0; i < 8; i++) bytes[i] = (uint8_t)(length >> (8 * i));
    memcpy(bytes + 8, h, (size_t)length);
    memcpy(bytes + 8 + length, c.data, (size_t)c.data_size);
    const char *config = config_text(1, "");
    CHECK(lb_read_safetensors_memory(bytes, 8 + length + c.data_size, config, strlen(config), &m, &diag) == LOWBIT_OK,
          "memory: %s", diag.message);
    CHECK(m.n_tensors == 2 + 9 * LAYERS && m.files[0].data == NULL, "memory model");
    CHECK(m.n_tensors > 0 && (const uint8_t *)m.tensors[0].data == bytes + 8 + length + c.recs[0].begin,
          "token_embd points into the caller's bytes");
    lb_model_free(&m);
    free(bytes);
    free(h);
    free(c.data);
}

int main(void) {
    snprintf(folder, sizeof folder, "/tmp/lowbit_safetensors_XXXXXX");
    if (!mkdtemp(folder)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(model_path, sizeof model_path, "%s/model.safetensors", folder);
    snprintf(config_path, sizeof config_path, "%s/config.json", folder);

    test_good("F32", "F32", 0, 0);
    test_good("F16", "F16", 0, 1);
    test_good("F16", "F32", 1, 1);   /* F16 matrices, F32 norms, tied embeddings */
    test_good("BF16", "BF16", 0, 32);
    test_hostile_headers();
    test_hostile_entries();
    test_names_and_config();
    test_extras();

    unlink(model_path);
    unlink(config_path);
    rmdir(folder);
    return lb_test_summary();
}
