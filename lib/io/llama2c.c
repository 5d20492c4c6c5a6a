/*
 * llama2.c checkpoints (version 0) and tokenizers, read as a Llama model under GGUF's names.
 *
 * Checkpoint: 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 * seq_len), then float32 arrays: token embedding [vocab][dim]; per-layer stacks rms_att, wq, wk,
 * wv, wo, rms_ffn, w1, w2, w3 (each [n_layers][...], matrices [out][in]); rms_final [dim]; two
 * legacy RoPE tables [seq_len][head/2] (skipped); the classifier [vocab][dim] only when
 * vocab_size is negative (otherwise it is the embedding). The header alone fixes the file's
 * size, so the size is checked exactly: a mismatch means a truncated file or a different format.
 *
 * Tokenizer: int32 max_token_length, then per token a float32 score, an int32 byte length and
 * the bytes. It holds no count: the checkpoint's vocab says how many tokens there must be.
 *
 * A [out][in] row-major matrix is GGUF's ne = {in, out}, so tensors point straight into the
 * bytes, F32, unpermuted (llama2.c rotates adjacent pairs in RoPE, as GGUF's Llama does).
 */
#include "llama2c.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define L2C_HEADER_BYTES 28
#define L2C_HEADER_FIELDS 7

/* GGUF token types, as llama.cpp numbers them */
enum { TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_BYTE = 6 };
enum { TOKEN_ID_UNK = 0, TOKEN_ID_BOS = 1, TOKEN_ID_EOS = 2 };

typedef struct l2c_config {
    int64_t dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len;
    int separate_classifier; /* vocab_size was negative */
    int64_t head_size, kv_dim;
} l2c_config;

/* Where each array starts, counted in floats from the end of the header. */
typedef struct l2c_layout {
    uint64_t token_embd, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, rope, classifier;
    uint64_t n_floats;
} l2c_layout;

static const char *const header_field_names[L2C_HEADER_FIELDS] = {
    "dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};

static int32_t load_i32(const uint8_t *p) {
    const uint32_t u = lb_load_u32(p);
    int32_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static float load_f32(const uint8_t *p) { return lb_bits_to_float((uint32_t)load_i32(p)); }

/* ------------------------------------------------------------------------------------------ */
/* Checkpoint header and layout                                                                */
/* ------------------------------------------------------------------------------------------ */

static lowbit_status parse_header(const uint8_t *bytes, uint64_t size, const char *label,
                                  l2c_config *c, lowbit_diag *diag) {
    if (size == 0) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0, "%s: the file is empty", label);
    }
    if (size < L2C_HEADER_BYTES) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, size,
                           "%s: %llu bytes, too short for the 28-byte llama2.c header", label,
                           (unsigned long long)size);
    }
    int64_t f[L2C_HEADER_FIELDS];
    for (int i = 0; i < L2C_HEADER_FIELDS; i++) f[i] = load_i32(bytes + 4 * i);
    c->separate_classifier = f[5] < 0;
    if (f[5] < 0) f[5] = -f[5]; /* int64: INT32_MIN negates safely */
    for (int i = 0; i < L2C_HEADER_FIELDS; i++) {
        if (f[i] <= 0 || f[i] > INT32_MAX) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, (uint64_t)(4 * i),
                               "%s: header field %s (byte %d) is %d; it must be positive", label,
                               header_field_names[i], 4 * i, (int)load_i32(bytes + 4 * i));
        }
    }
    c->dim = f[0], c->hidden = f[1], c->n_layers = f[2], c->n_heads = f[3];
    c->n_kv_heads = f[4], c->vocab = f[5], c->seq_len = f[6];
    if (c->dim % c->n_heads) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0,
                           "%s: dim %lld is not divisible by n_heads %lld", label,
                           (long long)c->dim, (long long)c->n_heads);
    }
    if (c->n_heads % c->n_kv_heads) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 12,
                           "%s: n_heads %lld is not a multiple of n_kv_heads %lld", label,
                           (long long)c->n_heads, (long long)c->n_kv_heads);
    }
    c->head_size = c->dim / c->n_heads;
    if (c->head_size % 2) {
        /* RoPE rotates pairs within a head */
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0,
                           "%s: head size %lld (dim %lld / n_heads %lld) is odd", label,
                           (long long)c->head_size, (long long)c->dim, (long long)c->n_heads);
    }
    c->kv_dim = c->head_size * c->n_kv_heads;
    return LOWBIT_OK;
}

/* Places an array of a*b*c floats at *pos, recording its start. 0 when the count overflows. */
static int place(uint64_t *pos, uint64_t *start, uint64_t a, uint64_t b, uint64_t c) {
    if (a && b > UINT64_MAX / a) return 0;
    const uint64_t ab = a * b;
    if (ab && c > UINT64_MAX / ab) return 0;
    const uint64_t n = ab * c;
    if (n > UINT64_MAX - *pos) return 0;
    *start = *pos;
    *pos += n;
    return 1;
}

static int compute_layout(const l2c_config *c, l2c_layout *l) {
    const uint64_t dim = (uint64_t)c->dim, hidden = (uint64_t)c->hidden,
                   layers = (uint64_t)c->n_layers, kv_dim = (uint64_t)c->kv_dim,
                   vocab = (uint64_t)c->vocab;
    uint64_t pos = 0;
    int ok = place(&pos, &l->token_embd, vocab, dim, 1) &&
             place(&pos, &l->rms_att, layers, dim, 1) && place(&pos, &l->wq, layers, dim, dim) &&
             place(&pos, &l->wk, layers, kv_dim, dim) && place(&pos, &l->wv, layers, kv_dim, dim) &&
             place(&pos, &l->wo, layers, dim, dim) && place(&pos, &l->rms_ffn, layers, dim, 1) &&
             place(&pos, &l->w1, layers, hidden, dim) && place(&pos, &l->w2, layers, dim, hidden) &&
             place(&pos, &l->w3, layers, hidden, dim) && place(&pos, &l->rms_final, dim, 1, 1) &&
             /* two tables of seq_len x head/2 */
             place(&pos, &l->rope, (uint64_t)c->seq_len, (uint64_t)c->head_size, 1);
    if (ok && c->separate_classifier) ok = place(&pos, &l->classifier, vocab, dim, 1);
    if (ok && !c->separate_classifier) l->classifier = l->token_embd;
    l->n_floats = pos;
    return ok;
}

/* The file must be exactly the header plus the arrays the header describes. */
static lowbit_status check_size(const l2c_config *c, const l2c_layout *l, int layout_ok,
                                uint64_t size, const char *label, lowbit_diag *diag) {
    if (!layout_ok || l->n_floats > (UINT64_MAX - L2C_HEADER_BYTES) / 4) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0,
                           "%s: the header (dim %lld, hidden_dim %lld, n_layers %lld, "
                           "n_kv_heads %lld, vocab %lld, seq_len %lld) implies over 2^64 bytes",
                           label, (long long)c->dim, (long long)c->hidden, (long long)c->n_layers,
                           (long long)c->n_kv_heads, (long long)c->vocab, (long long)c->seq_len);
    }
    const uint64_t expected = L2C_HEADER_BYTES + 4 * l->n_floats;
    if (size < expected) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, size,
                           "%s: truncated: header says %llu bytes, file has %llu", label,
                           (unsigned long long)expected, (unsigned long long)size);
    }
    if (size > expected) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, expected,
                           "%s: %llu trailing bytes: header says %llu bytes, file has %llu", label,
                           (unsigned long long)(size - expected), (unsigned long long)expected,
                           (unsigned long long)size);
    }
    return LOWBIT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Tensors                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* ne1 == 0: a vector. float_offset is counted from the end of the header. */
static lowbit_status add_f32(lb_model *m, const char *name, const uint8_t *bytes,
                             uint64_t float_offset, int64_t ne0, int64_t ne1, lowbit_diag *diag) {
    const int64_t ne[2] = {ne0, ne1};
    const uint8_t *data = bytes + L2C_HEADER_BYTES + (size_t)float_offset * 4;
    return lb_model_add_tensor(m, name, LOWBIT_TYPE_F32, ne1 ? 2 : 1, ne, data, 0, diag);
}

/* Each layer's tensors, in the order a converter to GGUF writes them. */
static lowbit_status add_layer(lb_model *m, const l2c_config *c, const l2c_layout *l,
                               const uint8_t *bytes, int64_t layer, lowbit_diag *diag) {
    const struct {
        const char *suffix;
        uint64_t stack_start; /* the [n_layers][...] array this tensor is one slice of */
        int64_t ne0, ne1;
    } parts[] = {
        {"attn_norm", l->rms_att, c->dim, 0},   {"attn_q", l->wq, c->dim, c->dim},
        {"attn_k", l->wk, c->dim, c->kv_dim},   {"attn_v", l->wv, c->dim, c->kv_dim},
        {"attn_output", l->wo, c->dim, c->dim}, {"ffn_norm", l->rms_ffn, c->dim, 0},
        {"ffn_gate", l->w1, c->dim, c->hidden}, {"ffn_down", l->w2, c->hidden, c->dim},
        {"ffn_up", l->w3, c->dim, c->hidden},
    };
    for (int p = 0; p < LB_ARRAY_LEN(parts); p++) {
        char name[LB_MAX_TENSOR_NAME];
        snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)layer, parts[p].suffix);
        /* the layout fits the file, so these products cannot overflow */
        const uint64_t per_layer = (uint64_t)parts[p].ne0 * (uint64_t)LB_MAX(parts[p].ne1, 1);
        const lowbit_status st =
            add_f32(m, name, bytes, parts[p].stack_start + (uint64_t)layer * per_layer,
                    parts[p].ne0, parts[p].ne1, diag);
        if (st != LOWBIT_OK) return st;
    }
    return LOWBIT_OK;
}

static lowbit_status add_tensors(lb_model *m, const l2c_config *c, const l2c_layout *l,
                                 const uint8_t *bytes, lowbit_diag *diag) {
    lowbit_status st =
        add_f32(m, "token_embd.weight", bytes, l->token_embd, c->dim, c->vocab, diag);
    for (int64_t layer = 0; st == LOWBIT_OK && layer < c->n_layers; layer++) {
        st = add_layer(m, c, l, bytes, layer, diag);
    }
    if (st == LOWBIT_OK)
        st = add_f32(m, "output_norm.weight", bytes, l->rms_final, c->dim, 0, diag);
    /* a shared classifier is GGUF's tied embedding: no output.weight at all */
    if (st == LOWBIT_OK && c->separate_classifier) {
        st = add_f32(m, "output.weight", bytes, l->classifier, c->dim, c->vocab, diag);
    }
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Metadata                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static lowbit_status set_hparams(lb_model *m, const l2c_config *c, const char *name) {
    lowbit_status st = lb_model_set_string(m, "general.architecture", "llama");
    if (st == LOWBIT_OK) st = lb_model_set_string(m, "general.name", name);
    const struct {
        const char *key;
        int64_t value;
    } sizes[] = {
        {"llama.context_length", c->seq_len},
        {"llama.embedding_length", c->dim},
        {"llama.block_count", c->n_layers},
        {"llama.feed_forward_length", c->hidden},
        {"llama.attention.head_count", c->n_heads},
        {"llama.attention.head_count_kv", c->n_kv_heads},
        {"llama.rope.dimension_count", c->head_size},
    };
    for (int i = 0; st == LOWBIT_OK && i < LB_ARRAY_LEN(sizes); i++) {
        st = lb_model_set_u32(m, sizes[i].key, (uint32_t)sizes[i].value);
    }
    /* llama2.c's fixed constants */
    if (st == LOWBIT_OK) st = lb_model_set_f32(m, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    if (st == LOWBIT_OK) st = lb_model_set_f32(m, "llama.rope.freq_base", 10000.0f);
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "general.file_type", 0); /* all F32 */
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "llama.vocab_size", (uint32_t)c->vocab);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Tokenizer                                                                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct l2c_vocab {
    const char **pieces; /* into the tokenizer bytes, or string literals for <s> and </s> */
    uint64_t *lengths;
    float *scores;
    int32_t *types;
} l2c_vocab;

static void free_vocab(l2c_vocab *v) {
    free(v->pieces);
    free(v->lengths);
    free(v->scores);
    free(v->types);
}

static int is_hex_digit(uint8_t ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F') || (ch >= 'a' && ch <= 'f');
}

/* SentencePiece's byte-fallback pieces are spelled "<0xNN>" */
static int is_byte_piece(const uint8_t *p, uint64_t length) {
    return length == 6 && memcmp(p, "<0x", 3) == 0 && is_hex_digit(p[3]) && is_hex_digit(p[4]) &&
           p[5] == '>';
}

static int32_t token_type(int64_t id, const uint8_t *piece, uint64_t length) {
    if (id == TOKEN_ID_UNK) return TOKEN_UNKNOWN;
    if (id == TOKEN_ID_BOS || id == TOKEN_ID_EOS) return TOKEN_CONTROL;
    return is_byte_piece(piece, length) ? TOKEN_BYTE : TOKEN_NORMAL;
}

/* llama2.c's exporter writes BOS and EOS as "\n<s>\n" and "\n</s>\n"; GGUF names them bare. */
static void store_piece(l2c_vocab *v, int64_t id, const uint8_t *piece, uint64_t length) {
    static const char bos[] = "<s>", eos[] = "</s>";
    if (length == 5 && memcmp(piece, "\n<s>\n", 5) == 0) {
        v->pieces[id] = bos, v->lengths[id] = sizeof bos - 1;
    } else if (length == 6 && memcmp(piece, "\n</s>\n", 6) == 0) {
        v->pieces[id] = eos, v->lengths[id] = sizeof eos - 1;
    } else {
        v->pieces[id] = (const char *)piece, v->lengths[id] = length;
    }
}

typedef struct token_record {
    float score;
    const uint8_t *piece; /* into the tokenizer bytes */
    uint64_t length;
} token_record;

/* Reads the token record at *pos and advances past it, after checking that it lies within the
   file and that its length is within 0..max_length. */
static lowbit_status read_token(const uint8_t *bytes, uint64_t size, uint64_t *pos,
                                int32_t max_length, int64_t id, const char *label, token_record *t,
                                lowbit_diag *diag) {
    if (size - *pos < 8) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, *pos,
                           "%s: truncated at byte %llu in token %lld's score and length", label,
                           (unsigned long long)*pos, (long long)id);
    }
    const int32_t length = load_i32(bytes + *pos + 4);
    if (length < 0 || length > max_length) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, *pos + 4,
                           "%s: token %lld (byte %llu) has length %d, outside 0..%d "
                           "(max_token_length)",
                           label, (long long)id, (unsigned long long)*pos, (int)length,
                           (int)max_length);
    }
    if (size - *pos - 8 < (uint64_t)length) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, *pos + 8,
                           "%s: token %lld's %d bytes at byte %llu run past the end of the file "
                           "(%llu bytes)",
                           label, (long long)id, (int)length, (unsigned long long)(*pos + 8),
                           (unsigned long long)size);
    }
    t->score = load_f32(bytes + *pos);
    t->piece = bytes + *pos + 8;
    t->length = (uint64_t)length;
    *pos += 8 + (uint64_t)length;
    return LOWBIT_OK;
}

/* Bytes left after the vocab's tokens: counts how many more well-formed tokens follow, to say
   whether the tokenizer belongs to a larger vocab or just has junk at its end. */
static lowbit_status report_extra(const uint8_t *bytes, uint64_t size, uint64_t pos,
                                  int32_t max_length, int64_t vocab, const char *label,
                                  lowbit_diag *diag) {
    const uint64_t extra_from = pos;
    int64_t count = vocab;
    token_record t = {0};
    while (pos < size &&
           read_token(bytes, size, &pos, max_length, count, label, &t, NULL) == LOWBIT_OK) {
        count++;
    }
    if (pos == size) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, extra_from,
                           "%s: holds %lld tokens, the model's vocab is %lld", label,
                           (long long)count, (long long)vocab);
    }
    return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, extra_from,
                       "%s: %llu trailing bytes after the model's %lld tokens (byte %llu)", label,
                       (unsigned long long)(size - extra_from), (long long)vocab,
                       (unsigned long long)extra_from);
}

static lowbit_status walk_tokens(const uint8_t *bytes, uint64_t size, int64_t vocab,
                                 const char *label, l2c_vocab *v, lowbit_diag *diag) {
    const int32_t max_length = load_i32(bytes);
    if (max_length <= 0) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0,
                           "%s: max_token_length is %d; it must be positive", label,
                           (int)max_length);
    }
    uint64_t pos = 4;
    for (int64_t id = 0; id < vocab; id++) {
        if (pos == size) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, pos,
                               "%s: holds %lld tokens, the model's vocab is %lld", label,
                               (long long)id, (long long)vocab);
        }
        token_record t = {0};
        const lowbit_status st = read_token(bytes, size, &pos, max_length, id, label, &t, diag);
        if (st != LOWBIT_OK) return st;
        store_piece(v, id, t.piece, t.length);
        v->scores[id] = t.score;
        v->types[id] = token_type(id, t.piece, t.length);
    }
    if (pos != size) return report_extra(bytes, size, pos, max_length, vocab, label, diag);
    return LOWBIT_OK;
}

static lowbit_status read_tokenizer(const uint8_t *bytes, uint64_t size, int64_t vocab,
                                    const char *label, l2c_vocab *v, lowbit_diag *diag) {
    if (size == 0) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0, "%s: the file is empty", label);
    }
    if (size < 4) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0,
                           "%s: %llu bytes, too short for max_token_length", label,
                           (unsigned long long)size);
    }
    if (vocab <= TOKEN_ID_EOS) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "%s: a vocab of %lld cannot hold <unk>, <s> and </s>", label,
                           (long long)vocab);
    }
    /* each token takes at least 8 bytes: bounds the allocation by the file's size */
    if ((size - 4) / 8 < (uint64_t)vocab) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, size,
                           "%s: %llu bytes cannot hold the model's %lld tokens", label,
                           (unsigned long long)size, (long long)vocab);
    }
    const size_t n = (size_t)vocab;
    v->pieces = malloc(n * sizeof *v->pieces);
    v->lengths = malloc(n * sizeof *v->lengths);
    v->scores = malloc(n * sizeof *v->scores);
    v->types = malloc(n * sizeof *v->types);
    if (!v->pieces || !v->lengths || !v->scores || !v->types) {
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    }
    return walk_tokens(bytes, size, vocab, label, v, diag);
}

static lowbit_status set_tokenizer(lb_model *m, const l2c_vocab *v, int64_t vocab) {
    const uint64_t n = (uint64_t)vocab;
    lowbit_status st = lb_model_set_string(m, "tokenizer.ggml.model", "llama");
    if (st == LOWBIT_OK) {
        st = lb_model_set_string_array(m, "tokenizer.ggml.tokens", v->pieces, v->lengths, n);
    }
    if (st == LOWBIT_OK) st = lb_model_set_f32_array(m, "tokenizer.ggml.scores", v->scores, n);
    if (st == LOWBIT_OK) st = lb_model_set_i32_array(m, "tokenizer.ggml.token_type", v->types, n);
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "tokenizer.ggml.bos_token_id", TOKEN_ID_BOS);
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "tokenizer.ggml.eos_token_id", TOKEN_ID_EOS);
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "tokenizer.ggml.unknown_token_id", TOKEN_ID_UNK);
    if (st == LOWBIT_OK) st = lb_model_set_bool(m, "tokenizer.ggml.add_bos_token", 1);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Entry points                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* Fills m (which the callers free on failure). Labels name the inputs in messages. */
static lowbit_status read_llama2c(const uint8_t *model_bytes, uint64_t model_size,
                                  const uint8_t *tok_bytes, uint64_t tok_size, const char *name,
                                  const char *model_label, const char *tok_label, lb_model *m,
                                  lowbit_diag *diag) {
    l2c_config c;
    l2c_layout l;
    memset(&l, 0, sizeof l);
    lowbit_status st = parse_header(model_bytes, model_size, model_label, &c, diag);
    if (st == LOWBIT_OK)
        st = check_size(&c, &l, compute_layout(&c, &l), model_size, model_label, diag);
    if (st != LOWBIT_OK) return st;
    m->format = LOWBIT_MODEL_LLAMA2C;
    l2c_vocab v = {0};
    if (tok_bytes) st = read_tokenizer(tok_bytes, tok_size, c.vocab, tok_label, &v, diag);
    if (st == LOWBIT_OK) {
        st = set_hparams(m, &c, name);
        if (st == LOWBIT_OK && tok_bytes) st = set_tokenizer(m, &v, c.vocab);
        if (st != LOWBIT_OK) lb_diag_set(diag, st, -1, UINT64_MAX, "out of memory");
    }
    free_vocab(&v);
    if (st == LOWBIT_OK) st = add_tensors(m, &c, &l, model_bytes, diag);
    return st;
}

lowbit_status lb_read_llama2c_model_memory(const void *model_bytes, size_t model_size,
                                           const void *tokenizer_bytes, size_t tokenizer_size,
                                           const char *name, lb_model *m, lowbit_diag *diag) {
    static const uint8_t nothing[1] = {0};
    if (!model_bytes) model_bytes = nothing, model_size = 0;
    const lowbit_status st =
        read_llama2c(model_bytes, model_size, tokenizer_bytes, tokenizer_size,
                     name ? name : "llama2c", "llama2.c checkpoint", "llama2.c tokenizer", m, diag);
    if (st != LOWBIT_OK) lb_model_free(m);
    return st;
}

static const char *file_name_of(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* general.name: the file's name without its folder or last extension ("stories260K"). */
static char *model_name_of(const char *path) {
    const char *file = file_name_of(path);
    const char *dot = strrchr(file, '.');
    const size_t length = (dot && dot != file) ? (size_t)(dot - file) : strlen(file);
    char *name = malloc(length + 1);
    if (!name) return NULL;
    memcpy(name, file, length);
    name[length] = '\0';
    return name;
}

/* tok<vocab>.bin in the model's folder, if it is there as a regular file; else NULL. */
static char *find_tokenizer(const char *model_path, int64_t vocab) {
    const size_t folder_length = (size_t)(file_name_of(model_path) - model_path);
    const size_t capacity = folder_length + 32;
    char *path = malloc(capacity);
    if (!path) return NULL;
    memcpy(path, model_path, folder_length);
    snprintf(path + folder_length, capacity - folder_length, "tok%lld.bin", (long long)vocab);
    struct stat info;
    if (stat(path, &info) != 0 || !S_ISREG(info.st_mode)) {
        free(path);
        return NULL;
    }
    return path;
}

/* Maps the tokenizer named, or else the one found beside the model (its path, owned, in *found),
   into m->files[1]. Neither: nothing mapped, and no error. */
static lowbit_status map_tokenizer(const char *path, const char *tokenizer_path, lb_model *m,
                                   char **found, lowbit_diag *diag) {
    *found = NULL;
    if (!tokenizer_path) {
        l2c_config c;
        if (parse_header(m->files[0].data, m->files[0].size, "", &c, NULL) != LOWBIT_OK) {
            return LOWBIT_OK; /* the checkpoint's own error is reported next */
        }
        tokenizer_path = *found = find_tokenizer(path, c.vocab);
        if (!tokenizer_path) return LOWBIT_OK;
    }
    return lb_map_file(tokenizer_path, &m->files[1], diag);
}

lowbit_status lb_read_llama2c_model(const char *path, const char *tokenizer_path, lb_model *m,
                                    lowbit_diag *diag) {
    lowbit_status st = lb_map_file(path, &m->files[0], diag);
    if (st != LOWBIT_OK) return st;
    char *found_tokenizer = NULL;
    st = map_tokenizer(path, tokenizer_path, m, &found_tokenizer, diag);
    const int has_tokenizer = tokenizer_path || found_tokenizer;
    char *name = model_name_of(path);
    if (st == LOWBIT_OK && !name)
        st = lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    if (st == LOWBIT_OK) {
        /* an empty tokenizer maps to NULL bytes: still a tokenizer, and rejected as empty */
        static const uint8_t nothing[1] = {0};
        const uint8_t *tok_bytes = m->files[1].data ? m->files[1].data : nothing;
        const char *tok_source = found_tokenizer ? found_tokenizer : tokenizer_path;
        const char *tok_label = tok_source ? file_name_of(tok_source) : "";
        st = read_llama2c(m->files[0].data, m->files[0].size, has_tokenizer ? tok_bytes : NULL,
                          m->files[1].size, name, file_name_of(path), tok_label, m, diag);
    }
    free(name);
    free(found_tokenizer);
    if (st != LOWBIT_OK) lb_model_free(m);
    return st;
}
