/*
 * Safetensors reader for Hugging Face Llama checkpoints (one file, with config.json beside it).
 *
 * Layout: u64 little-endian header length N; N bytes of JSON, an object mapping each tensor
 * name to {"dtype", "shape" (row-major, outermost first), "data_offsets": [begin, end]} with
 * offsets relative to the end of the header, plus an optional "__metadata__" object of strings;
 * then the tensor bytes. Everything in the header is checked against the file before use: the
 * length, the JSON, each dtype, shape and byte range (size agreeing with the shape, inside the
 * data, no two tensors overlapping, each aligned for its element type).
 *
 * The tensors are renamed to GGUF's Llama names, their shapes reversed into GGUF's ne order, the
 * Q and K projections marked for the RoPE row permutation (applied on read, in model.c), and the
 * llama.* metadata is derived from config.json after checking that it agrees with the tensors.
 *
 * No tokenizer is read: tokenizer.json is a different format (BPE merges, added tokens, pre-
 * tokenizer rules) and reading it is future work; the model has no tokenizer.* keys.
 */
#include "safetensors.h"

#include "json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define HEADER_MAX_DEPTH 8          /* root, tensor entry, shape array: 3 are needed */
#define HEADER_MAX_NODES (2 << 20)  /* ~7 nodes a tensor: 300k tensors, far beyond any real file */
#define CONFIG_MAX_BYTES (16u << 20)
#define CONFIG_MAX_DEPTH 32
#define CONFIG_MAX_NODES (1 << 20)
#define MAX_LAYERS 65536
#define MAX_DIMENSION INT32_MAX     /* config sizes are written as u32 */

typedef struct st_entry {
    const lb_json_node *node;       /* the tensor's header entry; its key is the tensor's name */
    lowbit_type type;
    int element_bytes;
    int n_dims;                     /* as written: 0 for a scalar */
    int64_t shape[LB_MAX_DIMS];     /* outermost first */
    uint64_t begin, end;            /* relative to the data start */
} st_entry;

typedef struct st_config {
    int64_t hidden, n_layers, n_heads, n_kv_heads, ffn, context, vocab, head_dim;
    double rms_eps, rope_theta;
    int tied;
} st_config;

/* Tensor slots in the order they are added to the model: three whole-model tensors, then the
   nine of each layer. */
enum { SLOT_TOKEN_EMBD, SLOT_OUTPUT_NORM, SLOT_OUTPUT, N_GLOBAL_SLOTS };
enum {
    L_ATTN_NORM, L_ATTN_Q, L_ATTN_K, L_ATTN_V, L_ATTN_OUTPUT,
    L_FFN_NORM, L_FFN_GATE, L_FFN_UP, L_FFN_DOWN, N_LAYER_SLOTS
};

static const char *const global_hf_names[N_GLOBAL_SLOTS] = {
    "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"};
static const char *const global_gguf_names[N_GLOBAL_SLOTS] = {
    "token_embd.weight", "output_norm.weight", "output.weight"};
static const char *const layer_hf_names[N_LAYER_SLOTS] = {
    "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"};
static const char *const layer_gguf_names[N_LAYER_SLOTS] = {
    "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
    "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};

/* Puts `prefix` before the message already in diag (which says where in its own text). */
static lowbit_status prefix_diag(lowbit_diag *diag, lowbit_status st, const char *prefix) {
    if (!diag) return st;
    char message[sizeof diag->message];
    memcpy(message, diag->message, sizeof message);
    message[sizeof message - 1] = '\0';
    return lb_diag_set(diag, st, diag->row, diag->offset, "%s%s", prefix, message);
}

/* ---------------------------------------------------------------------------------------- */
/* The header                                                                                */
/* ---------------------------------------------------------------------------------------- */

/* dtype names lowbit reads, and the other names the format defines (reported as unsupported
   rather than malformed). */
static int dtype_type(const lb_json_node *dtype, lowbit_type *type, int *bytes) {
    if (lb_json_string_is(dtype, "F32")) { *type = LOWBIT_TYPE_F32; *bytes = 4; return 1; }
    if (lb_json_string_is(dtype, "F16")) { *type = LOWBIT_TYPE_F16; *bytes = 2; return 1; }
    if (lb_json_string_is(dtype, "BF16")) { *type = LOWBIT_TYPE_BF16; *bytes = 2; return 1; }
    return 0;
}

static int dtype_is_other_known(const lb_json_node *dtype) {
    static const char *const others[] = {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64",
                                         "U64", "F64", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4",
                                         "F6_E2M3", "F6_E3M2"};
    for (int i = 0; i < LB_ARRAY_LEN(others); i++) {
        if (lb_json_string_is(dtype, others[i])) return 1;
    }
    return 0;
}

static lowbit_status entry_error(lowbit_diag *diag, const lb_json_node *node, const char *what) {
    return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, node->offset,
                       "safetensors tensor '%.100s' (header byte %llu): %s", node->key,
                       (unsigned long long)node->offset, what);
}

static lowbit_status read_dtype(const lb_json_node *node, const lb_json_node *dtype, st_entry *e,
                                lowbit_diag *diag) {
    if (!dtype || dtype->type != LB_JSON_STRING) return entry_error(diag, node, "no dtype string");
    if (dtype_type(dtype, &e->type, &e->element_bytes)) return LOWBIT_OK;
    return lb_diag_set(diag, dtype_is_other_known(dtype) ? LOWBIT_ERR_UNSUPPORTED : LOWBIT_ERR_BAD_FILE,
                       -1, dtype->offset,
                       "safetensors tensor '%.100s' has dtype '%.32s', which lowbit does not read "
                       "(F32, F16 and BF16 only)", node->key, dtype->string);
}

/* The shape, and its element count (checked for overflow, each step). */
static lowbit_status read_shape(const lb_json_doc *doc, const lb_json_node *node,
                                const lb_json_node *shape, st_entry *e, uint64_t *elements,
                                lowbit_diag *diag) {
    if (!shape || shape->type != LB_JSON_ARRAY) return entry_error(diag, node, "no shape array");
    if (shape->n_children > LB_MAX_DIMS) return entry_error(diag, node, "more than 4 dimensions");
    e->n_dims = (int)shape->n_children;
    *elements = 1;
    int d = 0;
    for (const lb_json_node *dim = lb_json_first(doc, shape); dim; dim = lb_json_next(doc, dim), d++) {
        if (dim->type != LB_JSON_NUMBER || !dim->is_integer || dim->integer < 0) {
            return entry_error(diag, node, "a dimension is not a non-negative integer");
        }
        if (dim->integer == 0) return entry_error(diag, node, "a dimension is 0 (an empty tensor)");
        if ((uint64_t)dim->integer > UINT64_MAX / *elements) {
            return entry_error(diag, node, "its shape's element count overflows");
        }
        *elements *= (uint64_t)dim->integer;
        e->shape[d] = dim->integer;
    }
    return LOWBIT_OK;
}

static lowbit_status read_offsets(const lb_json_doc *doc, const lb_json_node *node,
                                  const lb_json_node *offsets, st_entry *e, uint64_t data_size,
                                  lowbit_diag *diag) {
    if (!offsets || offsets->type != LB_JSON_ARRAY || offsets->n_children != 2) {
        return entry_error(diag, node, "data_offsets is not an array of two integers");
    }
    const lb_json_node *begin = lb_json_first(doc, offsets), *end = lb_json_next(doc, begin);
    if (begin->type != LB_JSON_NUMBER || !begin->is_integer || begin->integer < 0 ||
        end->type != LB_JSON_NUMBER || !end->is_integer || end->integer < 0) {
        return entry_error(diag, node, "data_offsets holds something other than two non-negative integers");
    }
    e->begin = (uint64_t)begin->integer;
    e->end = (uint64_t)end->integer;
    if (e->begin > e->end) return entry_error(diag, node, "data_offsets ends before it begins");
    if (e->end > data_size) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, node->offset,
                           "safetensors tensor '%.100s': data_offsets [%llu, %llu] run past the "
                           "end of the data (%llu bytes)", node->key,
                           (unsigned long long)e->begin, (unsigned long long)e->end,
                           (unsigned long long)data_size);
    }
    return LOWBIT_OK;
}

static lowbit_status read_entry(const lb_json_doc *doc, const lb_json_node *node, const uint8_t *data,
                                uint64_t data_size, st_entry *e, lowbit_diag *diag) {
    if (strlen(node->key) != node->key_length) return entry_error(diag, node, "its name holds a NUL");
    if (node->type != LB_JSON_OBJECT) return entry_error(diag, node, "its entry is not an object");
    for (const lb_json_node *f = lb_json_first(doc, node); f; f = lb_json_next(doc, f)) {
        if (strcmp(f->key, "dtype") && strcmp(f->key, "shape") && strcmp(f->key, "data_offsets")) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, f->offset,
                               "safetensors tensor '%.100s' has an unknown field '%.40s'", node->key, f->key);
        }
    }
    e->node = node;
    uint64_t elements = 0;
    lowbit_status st = read_dtype(node, lb_json_get(doc, node, "dtype"), e, diag);
    if (st == LOWBIT_OK) st = read_shape(doc, node, lb_json_get(doc, node, "shape"), e, &elements, diag);
    if (st == LOWBIT_OK) st = read_offsets(doc, node, lb_json_get(doc, node, "data_offsets"), e, data_size, diag);
    if (st != LOWBIT_OK) return st;
    /* elements <= 2^64 / 4 is checked before the multiply: a bigger one cannot fit anyway */
    if (elements > UINT64_MAX / (uint64_t)e->element_bytes ||
        elements * (uint64_t)e->element_bytes != e->end - e->begin) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, node->offset,
                           "safetensors tensor '%.100s': its shape holds %llu elements of %d bytes, "
                           "but data_offsets span %llu bytes", node->key, (unsigned long long)elements,
                           e->element_bytes, (unsigned long long)(e->end - e->begin));
    }
    /* the float decoders read 16- and 32-bit words: unaligned data would be undefined behaviour */
    if ((uintptr_t)(data + e->begin) % (uintptr_t)e->element_bytes != 0) {
        return entry_error(diag, node, "its data is not aligned to its element size");
    }
    return LOWBIT_OK;
}

static lowbit_status check_file_metadata(const lb_json_doc *doc, const lb_json_node *meta,
                                         lowbit_diag *diag) {
    if (meta->type != LB_JSON_OBJECT) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, meta->offset,
                           "safetensors __metadata__ (header byte %llu) is not an object",
                           (unsigned long long)meta->offset);
    }
    for (const lb_json_node *v = lb_json_first(doc, meta); v; v = lb_json_next(doc, v)) {
        if (v->type != LB_JSON_STRING) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, v->offset,
                               "safetensors __metadata__ value '%.100s' is not a string", v->key);
        }
    }
    return LOWBIT_OK;
}

static int compare_begin(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* Sorted by where they begin, no tensor may begin before the previous one ends. */
static lowbit_status check_overlaps(st_entry *entries, int64_t n, lowbit_diag *diag) {
    qsort(entries, (size_t)n, sizeof *entries, compare_begin);
    for (int64_t i = 1; i < n; i++) {
        if (entries[i].begin < entries[i - 1].end) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, entries[i].node->offset,
                               "safetensors tensors '%.80s' and '%.80s' overlap (data bytes "
                               "[%llu, %llu) and [%llu, %llu))", entries[i - 1].node->key,
                               entries[i].node->key, (unsigned long long)entries[i - 1].begin,
                               (unsigned long long)entries[i - 1].end,
                               (unsigned long long)entries[i].begin,
                               (unsigned long long)entries[i].end);
        }
    }
    return LOWBIT_OK;
}

/* Reads every tensor entry of the header (already parsed) into a new array. */
static lowbit_status read_entries(const lb_json_doc *doc, const uint8_t *data, uint64_t data_size,
                                  st_entry **out, int64_t *n_out, lowbit_diag *diag) {
    const lb_json_node *root = lb_json_root(doc);
    if (root->type != LB_JSON_OBJECT) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 8, "the safetensors header is not a JSON object");
    }
    st_entry *entries = calloc((size_t)(root->n_children > 0 ? root->n_children : 1), sizeof *entries);
    if (!entries) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    int64_t n = 0;
    lowbit_status st = LOWBIT_OK;
    for (const lb_json_node *t = lb_json_first(doc, root); t && st == LOWBIT_OK; t = lb_json_next(doc, t)) {
        if (strcmp(t->key, "__metadata__") == 0 && t->key_length == 12) {
            st = check_file_metadata(doc, t, diag);
        } else {
            st = read_entry(doc, t, data, data_size, &entries[n++], diag);
        }
    }
    if (st == LOWBIT_OK) st = check_overlaps(entries, n, diag);
    if (st != LOWBIT_OK) {
        free(entries);
        return st;
    }
    *out = entries;
    *n_out = n;
    return LOWBIT_OK;
}

static lowbit_status read_header_length(const uint8_t *data, uint64_t size, uint64_t *n_out,
                                        lowbit_diag *diag) {
    if (size < 8) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0,
                           "safetensors file of %llu bytes is too short for its header length",
                           (unsigned long long)size);
    }
    const uint64_t n = lb_load_u64(data);
    if (n > LB_SAFETENSORS_MAX_HEADER) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0,
                           "safetensors header length %llu is over the format's limit of %u bytes",
                           (unsigned long long)n, LB_SAFETENSORS_MAX_HEADER);
    }
    if (n > size - 8) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0,
                           "safetensors header length %llu runs past the end of the file (%llu bytes)",
                           (unsigned long long)n, (unsigned long long)size);
    }
    *n_out = n;
    return LOWBIT_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* config.json                                                                               */
/* ---------------------------------------------------------------------------------------- */

static lowbit_status config_error(lowbit_diag *diag, lowbit_status st, const char *key, const char *what) {
    return lb_diag_set(diag, st, -1, UINT64_MAX, "config.json: '%s' %s", key, what);
}

/* A positive integer field; default_value < 0 makes it required. */
static lowbit_status config_int(const lb_json_doc *doc, const char *key, int64_t default_value,
                                int64_t *out, lowbit_diag *diag) {
    const lb_json_node *v = lb_json_get(doc, lb_json_root(doc), key);
    if (!v || v->type == LB_JSON_NULL) {
        if (default_value < 0) return config_error(diag, LOWBIT_ERR_BAD_FILE, key, "is missing");
        *out = default_value;
        return LOWBIT_OK;
    }
    if (v->type != LB_JSON_NUMBER || !v->is_integer || v->integer < 1 || v->integer > MAX_DIMENSION) {
        return config_error(diag, LOWBIT_ERR_BAD_FILE, key, "is not an integer from 1 to 2^31-1");
    }
    *out = v->integer;
    return LOWBIT_OK;
}

/* A positive finite number field; default_value < 0 makes it required. */
static lowbit_status config_number(const lb_json_doc *doc, const char *key, double default_value,
                                   double *out, lowbit_diag *diag) {
    const lb_json_node *v = lb_json_get(doc, lb_json_root(doc), key);
    if (!v || v->type == LB_JSON_NULL) {
        if (default_value < 0) return config_error(diag, LOWBIT_ERR_BAD_FILE, key, "is missing");
        *out = default_value;
        return LOWBIT_OK;
    }
    if (v->type != LB_JSON_NUMBER || !(v->number > 0)) {
        return config_error(diag, LOWBIT_ERR_BAD_FILE, key, "is not a positive number");
    }
    *out = v->number;
    return LOWBIT_OK;
}

/* What the reader cannot represent is refused, not silently dropped: another architecture
   with the same tensor names (Gemma, Qwen...) would load but compute something else. */
static lowbit_status check_architecture(const lb_json_doc *doc, lowbit_diag *diag) {
    const lb_json_node *root = lb_json_root(doc);
    const lb_json_node *model_type = lb_json_get(doc, root, "model_type");
    if (model_type && !lb_json_string_is(model_type, "llama") && !lb_json_string_is(model_type, "mistral")) {
        return config_error(diag, LOWBIT_ERR_UNSUPPORTED, "model_type",
                            "is not \"llama\" or \"mistral\": only Llama checkpoints are read");
    }
    const lb_json_node *act = lb_json_get(doc, root, "hidden_act");
    if (act && !lb_json_string_is(act, "silu")) {
        return config_error(diag, LOWBIT_ERR_UNSUPPORTED, "hidden_act", "is not \"silu\"");
    }
    const lb_json_node *scaling = lb_json_get(doc, root, "rope_scaling");
    if (scaling && scaling->type != LB_JSON_NULL) {
        return config_error(diag, LOWBIT_ERR_UNSUPPORTED, "rope_scaling", "is set: RoPE scaling is not supported yet");
    }
    const lb_json_node *tied = lb_json_get(doc, root, "tie_word_embeddings");
    if (tied && tied->type != LB_JSON_BOOL && tied->type != LB_JSON_NULL) {
        return config_error(diag, LOWBIT_ERR_BAD_FILE, "tie_word_embeddings", "is not true or false");
    }
    return LOWBIT_OK;
}

static lowbit_status check_config_sizes(st_config *c, const lb_json_doc *doc, lowbit_diag *diag) {
    if (c->n_layers > MAX_LAYERS) return config_error(diag, LOWBIT_ERR_BAD_FILE, "num_hidden_layers", "is over 65536");
    if (c->n_heads % c->n_kv_heads != 0) {
        return config_error(diag, LOWBIT_ERR_BAD_FILE, "num_key_value_heads", "does not divide num_attention_heads");
    }
    if (!lb_json_get(doc, lb_json_root(doc), "head_dim") && c->hidden % c->n_heads != 0) {
        return config_error(diag, LOWBIT_ERR_BAD_FILE, "num_attention_heads", "does not divide hidden_size");
    }
    if (c->head_dim % 2 != 0) {
        return config_error(diag, LOWBIT_ERR_BAD_FILE, "head_dim", "(the head size) is odd: RoPE rotates pairs");
    }
    if (c->n_heads * c->head_dim > MAX_DIMENSION) {
        return config_error(diag, LOWBIT_ERR_BAD_FILE, "head_dim", "times the head count is too large");
    }
    return LOWBIT_OK;
}

static lowbit_status read_config(const char *text, uint64_t length, st_config *c, lowbit_diag *diag) {
    if (length > CONFIG_MAX_BYTES) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX, "config.json is over 16 MiB");
    }
    lb_json_doc doc;
    lowbit_status st = lb_json_parse(text, length, 0, CONFIG_MAX_DEPTH, CONFIG_MAX_NODES, &doc, diag);
    if (st != LOWBIT_OK) return prefix_diag(diag, st, "config.json: ");
    if (lb_json_root(&doc)->type != LB_JSON_OBJECT) {
        st = lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0, "config.json is not a JSON object");
    }
    memset(c, 0, sizeof *c);
    if (st == LOWBIT_OK) st = check_architecture(&doc, diag);
    if (st == LOWBIT_OK) st = config_int(&doc, "hidden_size", -1, &c->hidden, diag);
    if (st == LOWBIT_OK) st = config_int(&doc, "num_hidden_layers", -1, &c->n_layers, diag);
    if (st == LOWBIT_OK) st = config_int(&doc, "num_attention_heads", -1, &c->n_heads, diag);
    if (st == LOWBIT_OK) st = config_int(&doc, "num_key_value_heads", c->n_heads, &c->n_kv_heads, diag);
    if (st == LOWBIT_OK) st = config_int(&doc, "intermediate_size", -1, &c->ffn, diag);
    if (st == LOWBIT_OK) st = config_int(&doc, "max_position_embeddings", -1, &c->context, diag);
    if (st == LOWBIT_OK) st = config_int(&doc, "vocab_size", -1, &c->vocab, diag);
    if (st == LOWBIT_OK) st = config_int(&doc, "head_dim", c->hidden / c->n_heads, &c->head_dim, diag);
    if (st == LOWBIT_OK) st = config_number(&doc, "rms_norm_eps", -1, &c->rms_eps, diag);
    if (st == LOWBIT_OK) st = config_number(&doc, "rope_theta", 10000.0, &c->rope_theta, diag);
    if (st == LOWBIT_OK) {
        const lb_json_node *tied = lb_json_get(&doc, lb_json_root(&doc), "tie_word_embeddings");
        c->tied = tied && tied->type == LB_JSON_BOOL && tied->boolean;
        st = check_config_sizes(c, &doc, diag);
    }
    lb_json_free(&doc);
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* Names and shapes                                                                          */
/* ---------------------------------------------------------------------------------------- */

/* A decimal layer number without leading zeros, followed by '.'; its length, or 0. */
static int parse_layer_number(const char *s, int64_t *layer) {
    int n = 0;
    int64_t v = 0;
    while (s[n] >= '0' && s[n] <= '9') {
        if (n > 0 && v == 0) return 0; /* "01" */
        v = v * 10 + (s[n] - '0');
        if (v > MAX_LAYERS || ++n > 6) return 0;
    }
    if (n == 0 || s[n] != '.') return 0;
    *layer = v;
    return n;
}

/* The slot of a Hugging Face tensor name: 0..2 for the global tensors, then 9 per layer. -1 for
   an unknown name, -2 for a tensor deliberately skipped. */
static int64_t slot_of(const char *name, int64_t *layer_out) {
    *layer_out = -1;
    for (int g = 0; g < N_GLOBAL_SLOTS; g++) {
        if (strcmp(name, global_hf_names[g]) == 0) return g;
    }
    static const char prefix[] = "model.layers.";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0) return -1;
    const char *rest = name + sizeof prefix - 1;
    int64_t layer;
    const int digits = parse_layer_number(rest, &layer);
    if (!digits) return -1;
    rest += digits + 1;
    /* older checkpoints store RoPE's inverse frequencies: derived from rope_theta, not a weight */
    if (strcmp(rest, "self_attn.rotary_emb.inv_freq") == 0) return -2;
    for (int k = 0; k < N_LAYER_SLOTS; k++) {
        if (strcmp(rest, layer_hf_names[k]) == 0) {
            *layer_out = layer;
            return N_GLOBAL_SLOTS + layer * N_LAYER_SLOTS + k;
        }
    }
    return -1;
}

/* The expected safetensors shape (outermost first) of a slot; returns its rank. */
static int expected_shape(const st_config *c, int64_t slot, int64_t shape[2]) {
    const int64_t q_rows = c->n_heads * c->head_dim, kv_rows = c->n_kv_heads * c->head_dim;
    if (slot < N_GLOBAL_SLOTS) {
        if (slot == SLOT_OUTPUT_NORM) {
            shape[0] = c->hidden;
            return 1;
        }
        shape[0] = c->vocab;
        shape[1] = c->hidden;
        return 2;
    }
    const int kind = (int)((slot - N_GLOBAL_SLOTS) % N_LAYER_SLOTS);
    switch (kind) {
    case L_ATTN_NORM: case L_FFN_NORM: shape[0] = c->hidden; return 1;
    case L_ATTN_Q: shape[0] = q_rows; shape[1] = c->hidden; return 2;
    case L_ATTN_K: case L_ATTN_V: shape[0] = kv_rows; shape[1] = c->hidden; return 2;
    case L_ATTN_OUTPUT: shape[0] = c->hidden; shape[1] = q_rows; return 2;
    case L_FFN_GATE: case L_FFN_UP: shape[0] = c->ffn; shape[1] = c->hidden; return 2;
    default: shape[0] = c->hidden; shape[1] = c->ffn; return 2; /* ffn_down */
    }
}

static void gguf_name_of(int64_t slot, char *out, size_t size) {
    if (slot < N_GLOBAL_SLOTS) {
        snprintf(out, size, "%s", global_gguf_names[slot]);
    } else {
        snprintf(out, size, "blk.%lld.%s", (long long)((slot - N_GLOBAL_SLOTS) / N_LAYER_SLOTS),
                 layer_gguf_names[(slot - N_GLOBAL_SLOTS) % N_LAYER_SLOTS]);
    }
}

static void hf_name_of(int64_t slot, char *out, size_t size) {
    if (slot < N_GLOBAL_SLOTS) {
        snprintf(out, size, "%s", global_hf_names[slot]);
    } else {
        snprintf(out, size, "model.layers.%lld.%s", (long long)((slot - N_GLOBAL_SLOTS) / N_LAYER_SLOTS),
                 layer_hf_names[(slot - N_GLOBAL_SLOTS) % N_LAYER_SLOTS]);
    }
}

static lowbit_status check_shape(const st_config *c, int64_t slot, const st_entry *e, lowbit_diag *diag) {
    int64_t want[2];
    const int rank = expected_shape(c, slot, want);
    int same = e->n_dims == rank;
    for (int d = 0; same && d < rank; d++) same = e->shape[d] == want[d];
    if (same) return LOWBIT_OK;
    char got[96] = "[", expected[64];
    for (int d = 0; d < e->n_dims; d++) {
        const size_t used = strlen(got);
        snprintf(got + used, sizeof got - used, "%s%lld", d ? ", " : "", (long long)e->shape[d]);
    }
    strncat(got, "]", sizeof got - strlen(got) - 1);
    if (rank == 1) {
        snprintf(expected, sizeof expected, "[%lld]", (long long)want[0]);
    } else {
        snprintf(expected, sizeof expected, "[%lld, %lld]", (long long)want[0], (long long)want[1]);
    }
    return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, e->node->offset,
                       "safetensors tensor '%.100s' has shape %s where config.json implies %s",
                       e->node->key, got, expected);
}

/* Puts every entry in its slot, checking names, layers and shapes. */
static lowbit_status assign_slots(const st_config *c, const st_entry *entries, int64_t n,
                                  const st_entry **slots, lowbit_diag *diag) {
    for (int64_t i = 0; i < n; i++) {
        const st_entry *e = &entries[i];
        int64_t layer;
        const int64_t slot = slot_of(e->node->key, &layer);
        if (slot == -2) continue;
        if (slot == -1) {
            return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, e->node->offset,
                               "safetensors tensor '%.100s' is not a Llama tensor lowbit knows",
                               e->node->key);
        }
        if (layer >= c->n_layers) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, e->node->offset,
                               "safetensors tensor '%.100s' is in layer %lld, but config.json has "
                               "%lld layers", e->node->key, (long long)layer, (long long)c->n_layers);
        }
        /* distinct names map to distinct slots, and names are unique: a slot is never reused */
        slots[slot] = e;
        const lowbit_status st = check_shape(c, slot, e, diag);
        if (st != LOWBIT_OK) return st;
    }
    const int64_t n_slots = N_GLOBAL_SLOTS + c->n_layers * N_LAYER_SLOTS;
    for (int64_t s = 0; s < n_slots; s++) {
        if (slots[s] || (s == SLOT_OUTPUT && c->tied)) continue;
        char name[96];
        hf_name_of(s, name, sizeof name);
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "safetensors file has no tensor '%s'%s", name,
                           s == SLOT_OUTPUT ? " (and config.json does not tie it to the embeddings)" : "");
    }
    return LOWBIT_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* The model                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* llama.cpp's file types: all F32, mostly F16, mostly BF16. Chosen by which storage type holds
   most of the bytes (the norms stay F32 in F16 checkpoints). */
static uint32_t file_type_of(const st_entry *entries, int64_t n) {
    uint64_t bytes[3] = {0, 0, 0}; /* F32, F16, BF16 */
    for (int64_t i = 0; i < n; i++) {
        const uint64_t size = entries[i].end - entries[i].begin;
        bytes[entries[i].type == LOWBIT_TYPE_F32 ? 0 : entries[i].type == LOWBIT_TYPE_F16 ? 1 : 2] += size;
    }
    if (bytes[1] >= bytes[0] && bytes[1] >= bytes[2] && bytes[1] > 0) return 1;
    if (bytes[2] > bytes[0]) return 32;
    return 0;
}

static lowbit_status write_metadata(lb_model *m, const st_config *c, uint32_t file_type) {
    lowbit_status st = lb_model_set_string(m, "general.architecture", "llama");
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "general.file_type", file_type);
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "llama.context_length", (uint32_t)c->context);
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "llama.embedding_length", (uint32_t)c->hidden);
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "llama.block_count", (uint32_t)c->n_layers);
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "llama.feed_forward_length", (uint32_t)c->ffn);
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "llama.attention.head_count", (uint32_t)c->n_heads);
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "llama.rope.dimension_count", (uint32_t)c->head_dim);
    if (st == LOWBIT_OK && c->head_dim * c->n_heads != c->hidden) {
        /* an explicit head size that is not hidden / heads must be stated */
        st = lb_model_set_u32(m, "llama.attention.key_length", (uint32_t)c->head_dim);
        if (st == LOWBIT_OK) st = lb_model_set_u32(m, "llama.attention.value_length", (uint32_t)c->head_dim);
    }
    if (st == LOWBIT_OK) st = lb_model_set_f32(m, "llama.attention.layer_norm_rms_epsilon", (float)c->rms_eps);
    if (st == LOWBIT_OK) st = lb_model_set_f32(m, "llama.rope.freq_base", (float)c->rope_theta);
    if (st == LOWBIT_OK) st = lb_model_set_u32(m, "llama.vocab_size", (uint32_t)c->vocab);
    return st;
}

/* The model's tensors in one fixed order, whatever the header's: the embeddings, the blocks in
   order, the final norm, the output. */
static int64_t slot_at_position(int64_t position, int64_t n_slots) {
    if (position == 0) return SLOT_TOKEN_EMBD;
    if (position < n_slots - 2) return position - 1 + N_GLOBAL_SLOTS;
    return position == n_slots - 2 ? SLOT_OUTPUT_NORM : SLOT_OUTPUT;
}

static lowbit_status add_tensors(lb_model *m, const st_config *c, const st_entry *const *slots,
                                 const uint8_t *data, lowbit_diag *diag) {
    const int64_t n_slots = N_GLOBAL_SLOTS + c->n_layers * N_LAYER_SLOTS;
    for (int64_t position = 0; position < n_slots; position++) {
        const int64_t s = slot_at_position(position, n_slots);
        const st_entry *e = slots[s];
        if (!e) continue;
        char name[LB_MAX_TENSOR_NAME];
        gguf_name_of(s, name, sizeof name);
        int64_t ne[LB_MAX_DIMS];
        for (int d = 0; d < e->n_dims; d++) ne[d] = e->shape[e->n_dims - 1 - d];
        int32_t permute = 0;
        if (s >= N_GLOBAL_SLOTS) {
            const int kind = (int)((s - N_GLOBAL_SLOTS) % N_LAYER_SLOTS);
            if (kind == L_ATTN_Q) permute = (int32_t)c->n_heads;
            if (kind == L_ATTN_K) permute = (int32_t)c->n_kv_heads;
        }
        const lowbit_status st = lb_model_add_tensor(m, name, e->type, e->n_dims, ne, data + e->begin,
                                                     permute, diag);
        if (st != LOWBIT_OK) return st;
    }
    return LOWBIT_OK;
}

static lowbit_status build_model(lb_model *m, const st_config *c, const st_entry *entries,
                                 int64_t n, const uint8_t *tensor_data, lowbit_diag *diag) {
    const int64_t n_slots = N_GLOBAL_SLOTS + c->n_layers * N_LAYER_SLOTS;
    const st_entry **slots = calloc((size_t)n_slots, sizeof *slots);
    if (!slots) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    lowbit_status st = assign_slots(c, entries, n, slots, diag);
    if (st == LOWBIT_OK) {
        st = write_metadata(m, c, file_type_of(entries, n));
        if (st != LOWBIT_OK) lb_diag_set(diag, st, -1, UINT64_MAX, "out of memory");
    }
    if (st == LOWBIT_OK) st = add_tensors(m, c, slots, tensor_data, diag);
    free(slots);
    return st;
}

lowbit_status lb_read_safetensors_memory(const uint8_t *data, uint64_t size, const char *config,
                                         uint64_t config_length, lb_model *m, lowbit_diag *diag) {
    if ((!data && size) || (!config && config_length) || !m) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "bad arguments");
    }
    uint64_t header_length = 0;
    lowbit_status st = read_header_length(data, size, &header_length, diag);
    lb_json_doc header = {0};
    if (st == LOWBIT_OK) {
        st = lb_json_parse((const char *)data + 8, header_length, 8, HEADER_MAX_DEPTH,
                           HEADER_MAX_NODES, &header, diag);
        if (st != LOWBIT_OK) prefix_diag(diag, st, "safetensors header: ");
    }
    st_entry *entries = NULL;
    int64_t n = 0;
    const uint8_t *tensor_data = st == LOWBIT_OK ? data + 8 + header_length : NULL;
    if (st == LOWBIT_OK) st = read_entries(&header, tensor_data, size - 8 - header_length, &entries, &n, diag);
    st_config c;
    if (st == LOWBIT_OK) st = read_config(config, config_length, &c, diag);
    if (st == LOWBIT_OK) st = build_model(m, &c, entries, n, tensor_data, diag);
    if (st == LOWBIT_OK) m->format = LOWBIT_MODEL_SAFETENSORS;
    free(entries);
    lb_json_free(&header);
    if (st != LOWBIT_OK) lb_model_free(m);
    return st;
}

/* config.json in the folder of `path`. */
static lowbit_status config_path(const char *path, char *out, size_t size, lowbit_diag *diag) {
    const char *slash = strrchr(path, '/');
    const int folder_length = slash ? (int)(slash - path + 1) : 0;
    const int written = snprintf(out, size, "%.*sconfig.json", folder_length, path);
    if (written < 0 || (size_t)written >= size) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "path '%.100s' is too long", path);
    }
    return LOWBIT_OK;
}

lowbit_status lb_read_safetensors_model(const char *path, lb_model *m, lowbit_diag *diag) {
    if (!path || !m) return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "bad arguments");
    char config_file[4096];
    lowbit_status st = config_path(path, config_file, sizeof config_file, diag);
    if (st != LOWBIT_OK) return st;
    lb_mapped_file config = {0};
    st = lb_map_file(config_file, &config, diag);
    if (st != LOWBIT_OK) return prefix_diag(diag, st, "a safetensors model needs config.json beside it: ");
    st = lb_map_file(path, &m->files[0], diag);
    if (st == LOWBIT_OK) {
        st = lb_read_safetensors_memory(m->files[0].data, m->files[0].size,
                                        (const char *)config.data, config.size, m, diag);
    }
    lb_unmap_file(&config);
    return st;
}
