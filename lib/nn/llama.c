/*
 * The Llama-family forward pass (llama2.c's and llama.cpp's "llama" architecture), on weights of
 * any format of the type table, read in place from the model's maps.
 *
 * Per layer: h = rmsnorm(x) * w_attn_norm; q, k, v = Wq h, Wk h, Wv h; RoPE on q and k; causal
 * grouped-query attention; x += Wo attn; h = rmsnorm(x) * w_ffn_norm; x += Wdown (silu(Wgate h) *
 * Wup h). Finally logits = Wout (rmsnorm(x) * w_out_norm).
 *
 * Every matrix product is one lowbit_matmul over the whole batch of tokens (a GEMV when n = 1),
 * so each weight row is read once per batch. k and v are written by their matrix products
 * straight into the KV cache (its rows are kv_dim floats, one per position, as the products'
 * outputs are). All memory (activations for up to LLAMA_MAX_BATCH tokens, the KV cache, the
 * per-thread attention scores and the matmul scratch) is allocated at create time; a longer
 * batch is processed in chunks of that size, which gives the same logits.
 *
 * Q4_0, Q8_0, IQ4_NL, MXFP4 and Q4_K matrices are repacked at create time into the interleaved
 * layout this CPU's kernels prefer (lib/kernels/interleaved.h: groups of 4 or 8 rows, faster
 * where measured), a copy beside the mapped file; their products give the type table's reference dot products bit
 * for bit, so the logits differ from the plain SIMD path's only by float rounding.
 */
#include "../common/common.h"
#include "../io/model.h"
#include "../kernels/interleaved.h"

#include <stdio.h>
#include <stdlib.h>

/* The most tokens one chunk of a batch holds: bounds activation memory for long contexts (each
   weight row is still read once per 256 tokens). */
#define LLAMA_MAX_BATCH 256

/* A weight matrix as it lies in the model: `rows` outputs of `cols` inputs, in its own type. */
typedef struct llama_matrix {
    const char *name; /* the GGUF tensor name (owned by the model) */
    lowbit_type type;
    const void *data;
    int64_t rows, cols;
    lb_interleaved_matrix interleaved; /* groups != NULL: the products use this copy */
} llama_matrix;

typedef struct llama_layer {
    float *attn_norm, *ffn_norm; /* dim floats each, decoded at create time */
    llama_matrix q, k, v, o, gate, up, down;
    /* 1 when Q and K rows are stored in Hugging Face order (each head's first halves of the
       pairs, then the second halves): RoPE then rotates (i, i + head_dim/2), which is the same
       attention as adjacent pairs on the reordered rows (dot products ignore a permutation
       applied to both q and k). */
    int rope_halves;
} llama_layer;

struct lowbit_llama {
    lowbit_llama_config config;
    int64_t head_dim, kv_dim, max_batch;
    llama_layer *layers;
    llama_matrix embedding; /* token_embd.weight: vocab rows of dim */
    lowbit_dequantize_row_fn embedding_decode;
    size_t embedding_row_bytes;
    llama_matrix output; /* output.weight, or the tied embedding */
    float *output_norm;
    float *rope_freq;              /* head_dim / 2: theta^(-2i / head_dim) */
    float *rope_cos, *rope_sin;    /* max_batch x head_dim / 2: the chunk's positions */
    float *key_cache, *value_cache; /* n_layers x context x kv_dim */
    /* activations, max_batch rows each */
    float *x, *xn, *q, *att;        /* dim */
    float *gate, *up;               /* hidden_dim */
    float *scores;                  /* one row of context floats per thread */
    int n_threads;
    lowbit_pool *pool;
    lowbit_matmul_scratch scratch;
    lowbit_matmul_observer observer;
    void *observer_ctx;
};

/* ------------------------------------------------------------------------------------------ */
/* Configuration                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* An integer key in 1..INT32_MAX; `fallback` (if > 0) when it is absent. */
static lowbit_status read_size_key(const lb_model *m, const char *key, int64_t fallback,
                                   int32_t *out, lowbit_diag *diag) {
    const lb_kv *kv = lb_model_find_kv(m, key);
    if (!kv) {
        if (fallback > 0) {
            *out = (int32_t)fallback;
            return LOWBIT_OK;
        }
        return lb_diag_set(diag, LOWBIT_ERR_NOT_FOUND, -1, UINT64_MAX,
                           "the model has no '%s' metadata", key);
    }
    uint64_t v = 0;
    if (!lb_kv_get_u64(kv, &v) || v == 0 || v > INT32_MAX) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "metadata '%s' must be an integer in 1..%d", key, INT32_MAX);
    }
    *out = (int32_t)v;
    return LOWBIT_OK;
}

/* A positive finite float key, or `fallback` when absent. */
static lowbit_status read_float_key(const lb_model *m, const char *key, double fallback,
                                    float *out, lowbit_diag *diag) {
    const lb_kv *kv = lb_model_find_kv(m, key);
    double v = fallback;
    if (kv && (!lb_kv_get_f64(kv, &v) || !(v > 0) || !isfinite((float)v))) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "metadata '%s' must be a positive finite number", key);
    }
    *out = (float)v;
    return LOWBIT_OK;
}

static int architecture_is_llama(const lb_model *m) {
    const lb_kv *kv = lb_model_find_kv(m, "general.architecture");
    if (!kv || kv->type != LOWBIT_GGUF_STRING || kv->value_size < 8) return 0;
    const uint64_t length = lb_load_u64(kv->value);
    return length == 5 && kv->value_size == 13 && memcmp(kv->value + 8, "llama", 5) == 0;
}

static lowbit_status read_config(const lb_model *m, lowbit_llama_config *c, lowbit_diag *diag) {
    if (!architecture_is_llama(m)) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "general.architecture is not \"llama\": only Llama models run");
    }
    lowbit_status st = read_size_key(m, "llama.embedding_length", 0, &c->dim, diag);
    if (st == LOWBIT_OK) st = read_size_key(m, "llama.feed_forward_length", 0, &c->hidden_dim, diag);
    if (st == LOWBIT_OK) st = read_size_key(m, "llama.block_count", 0, &c->n_layers, diag);
    if (st == LOWBIT_OK) st = read_size_key(m, "llama.attention.head_count", 0, &c->n_heads, diag);
    if (st == LOWBIT_OK) {
        st = read_size_key(m, "llama.attention.head_count_kv", c->n_heads, &c->n_kv_heads, diag);
    }
    if (st == LOWBIT_OK) st = read_size_key(m, "llama.context_length", 0, &c->context_length, diag);
    if (st == LOWBIT_OK) {
        st = read_float_key(m, "llama.attention.layer_norm_rms_epsilon", 1e-5, &c->rms_norm_eps,
                            diag);
    }
    if (st == LOWBIT_OK) st = read_float_key(m, "llama.rope.freq_base", 10000.0, &c->rope_theta, diag);
    if (st != LOWBIT_OK) return st;
    if (c->dim % c->n_heads != 0 || (c->dim / c->n_heads) % 2 != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "embedding length %d does not split into %d heads of even size",
                           (int)c->dim, (int)c->n_heads);
    }
    if (c->n_heads % c->n_kv_heads != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "head count %d is not a multiple of the KV head count %d",
                           (int)c->n_heads, (int)c->n_kv_heads);
    }
    const lb_kv *rope_dims = lb_model_find_kv(m, "llama.rope.dimension_count");
    uint64_t rope_n = 0;
    if (rope_dims && (!lb_kv_get_u64(rope_dims, &rope_n) ||
                      rope_n != (uint64_t)(c->dim / c->n_heads))) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "llama.rope.dimension_count must equal the head size %d "
                           "(partial RoPE is not supported)", (int)(c->dim / c->n_heads));
    }
    return LOWBIT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Tensors                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* The tensor `name` with ne = {cols, rows} (rows 1 for a vector, n_dims then 1 or 2). */
static lowbit_status find_shaped(const lb_model *m, const char *name, int64_t cols, int64_t rows,
                                 const lb_tensor **out, lowbit_diag *diag) {
    const lb_tensor *t = lb_model_find_tensor(m, name);
    if (!t) {
        return lb_diag_set(diag, LOWBIT_ERR_NOT_FOUND, -1, UINT64_MAX,
                           "tensor '%s' is missing (expected shape [%lld, %lld])", name,
                           (long long)cols, (long long)rows);
    }
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "tensor '%s' has shape [%lld, %lld, %lld, %lld]; expected [%lld, %lld]",
                           name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                           (long long)t->ne[3], (long long)cols, (long long)rows);
    }
    *out = t;
    return LOWBIT_OK;
}

/* A matrix of `rows` outputs over `cols` inputs whose type has a matrix product. */
static lowbit_status load_matrix(const lb_model *m, const char *name, int64_t cols, int64_t rows,
                                 llama_matrix *out, const lb_tensor **tensor, lowbit_diag *diag) {
    const lb_tensor *t = NULL;
    lowbit_status st = find_shaped(m, name, cols, rows, &t, diag);
    if (st != LOWBIT_OK) return st;
    const lowbit_type_traits *traits = lowbit_type_info(t->type);
    if (!traits || !traits->vec_dot) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "tensor '%s' has type %s, which has no matrix product", name,
                           traits ? traits->name : "unknown");
    }
    const lowbit_type_traits *act = lowbit_type_info(traits->vec_dot_type);
    if (cols % traits->block_size != 0 || !act || cols % act->block_size != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "tensor '%s': rows of %lld are not whole blocks of %s", name,
                           (long long)cols, traits->name);
    }
    *out = (llama_matrix){t->name, t->type, t->data, rows, cols, {0}};
    if (tensor) *tensor = t;
    return LOWBIT_OK;
}

/* A norm weight vector of n, decoded into owned floats. */
static lowbit_status load_vector(const lb_model *m, const char *name, int64_t n, float **out,
                                 lowbit_diag *diag) {
    const lb_tensor *t = NULL;
    lowbit_status st = find_shaped(m, name, n, 1, &t, diag);
    if (st != LOWBIT_OK) return st;
    const lowbit_type_traits *traits = lowbit_type_info(t->type);
    if (!traits || !traits->dequantize || n % traits->block_size != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "tensor '%s' has a type lowbit cannot decode here", name);
    }
    *out = malloc((size_t)n * sizeof(float));
    if (!*out) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    traits->dequantize(t->data, *out, n);
    return LOWBIT_OK;
}

static lowbit_status load_layer(const lb_model *m, const lowbit_llama_config *c, int64_t kv_dim,
                                int index, llama_layer *layer, lowbit_diag *diag) {
    char name[LB_MAX_TENSOR_NAME];
    const int64_t dim = c->dim, hidden = c->hidden_dim;
#define LAYER_NAME(suffix) (snprintf(name, sizeof name, "blk.%d." suffix ".weight", index), name)
    const lb_tensor *tq = NULL, *tk = NULL;
    lowbit_status st = load_vector(m, LAYER_NAME("attn_norm"), dim, &layer->attn_norm, diag);
    if (st == LOWBIT_OK) st = load_matrix(m, LAYER_NAME("attn_q"), dim, dim, &layer->q, &tq, diag);
    if (st == LOWBIT_OK) st = load_matrix(m, LAYER_NAME("attn_k"), dim, kv_dim, &layer->k, &tk, diag);
    if (st == LOWBIT_OK) st = load_matrix(m, LAYER_NAME("attn_v"), dim, kv_dim, &layer->v, NULL, diag);
    if (st == LOWBIT_OK) st = load_matrix(m, LAYER_NAME("attn_output"), dim, dim, &layer->o, NULL, diag);
    if (st == LOWBIT_OK) st = load_vector(m, LAYER_NAME("ffn_norm"), dim, &layer->ffn_norm, diag);
    if (st == LOWBIT_OK) st = load_matrix(m, LAYER_NAME("ffn_gate"), dim, hidden, &layer->gate, NULL, diag);
    if (st == LOWBIT_OK) st = load_matrix(m, LAYER_NAME("ffn_down"), hidden, dim, &layer->down, NULL, diag);
    if (st == LOWBIT_OK) st = load_matrix(m, LAYER_NAME("ffn_up"), dim, hidden, &layer->up, NULL, diag);
#undef LAYER_NAME
    if (st != LOWBIT_OK) return st;
    if (tq->permute_heads == 0 && tk->permute_heads == 0) {
        layer->rope_halves = 0;
    } else if (tq->permute_heads == c->n_heads && tk->permute_heads == c->n_kv_heads) {
        layer->rope_halves = 1;
    } else {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "layer %d: Q and K rows are ordered for different head counts", index);
    }
    return LOWBIT_OK;
}

static lowbit_status load_weights(const lb_model *m, lowbit_llama *L, lowbit_diag *diag) {
    lowbit_llama_config *c = &L->config;
    const lb_tensor *embd = lb_model_find_tensor(m, "token_embd.weight");
    if (!embd) {
        return lb_diag_set(diag, LOWBIT_ERR_NOT_FOUND, -1, UINT64_MAX,
                           "tensor 'token_embd.weight' is missing (expected shape [%d, vocab])",
                           (int)c->dim);
    }
    if (embd->ne[1] <= 0 || embd->ne[1] > INT32_MAX) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "tensor 'token_embd.weight' has %lld rows", (long long)embd->ne[1]);
    }
    c->vocab_size = (int32_t)embd->ne[1];
    lowbit_status st =
        find_shaped(m, "token_embd.weight", c->dim, c->vocab_size, &embd, diag);
    if (st != LOWBIT_OK) return st;
    const lowbit_type_traits *et = lowbit_type_info(embd->type);
    if (!et || !et->dequantize || c->dim % et->block_size != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "tensor 'token_embd.weight' has a type lowbit cannot decode");
    }
    L->embedding = (llama_matrix){embd->name, embd->type, embd->data, c->vocab_size, c->dim, {0}};
    L->embedding_decode = et->dequantize;
    L->embedding_row_bytes = lowbit_row_bytes(embd->type, c->dim);

    for (int i = 0; i < c->n_layers && st == LOWBIT_OK; i++) {
        st = load_layer(m, c, L->kv_dim, i, &L->layers[i], diag);
    }
    if (st == LOWBIT_OK) st = load_vector(m, "output_norm.weight", c->dim, &L->output_norm, diag);
    if (st != LOWBIT_OK) return st;
    /* no output.weight: the classifier is tied to the embedding */
    const char *classifier =
        lb_model_find_tensor(m, "output.weight") ? "output.weight" : "token_embd.weight";
    return load_matrix(m, classifier, c->dim, c->vocab_size, &L->output, NULL, diag);
}

/* ------------------------------------------------------------------------------------------ */
/* Working memory                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Allocates a * b floats, zeroed; 0 on overflow or failure. */
static int alloc_floats(float **out, size_t a, size_t b) {
    if (a != 0 && b > SIZE_MAX / sizeof(float) / a) return 0;
    const size_t count = a * b;
    *out = calloc(count > 0 ? count : 1, sizeof(float));
    return *out != NULL;
}

/* The activation bytes of the largest batch for one matrix (and their block sums when it is
   interleaved). */
static size_t matmul_scratch_bytes(const llama_matrix *w, int64_t batch) {
    const lowbit_type act = lowbit_type_info(w->type)->vec_dot_type;
    const size_t plain = lowbit_row_bytes(act, w->cols) * (size_t)batch;
    return w->interleaved.groups ? LB_MAX(plain, lb_interleaved_scratch_bytes(w->cols, batch))
                                 : plain;
}

/* The matrices of the products, layers first, the classifier last. */
static int all_matrices(lowbit_llama *L, llama_matrix **out, int capacity) {
    int n = 0;
    for (int i = 0; i < L->config.n_layers && n + 7 <= capacity; i++) {
        llama_layer *ly = &L->layers[i];
        llama_matrix *ms[] = {&ly->q, &ly->k, &ly->v, &ly->o, &ly->gate, &ly->up, &ly->down};
        for (int j = 0; j < LB_ARRAY_LEN(ms); j++) out[n++] = ms[j];
    }
    if (n < capacity) out[n++] = &L->output;
    return n;
}

/* Repacks every matrix whose type this CPU runs faster interleaved. The products never read the
   plain copy again, so its pages in the model's file map are released: the model is resident once,
   not twice (only the tied embedding's rows are read again, one row per token, and they fault
   back in from the page cache). */
static lowbit_status interleave_weights(const lb_model *m, lowbit_llama *L, lowbit_diag *diag) {
    const int capacity = 7 * L->config.n_layers + 1;
    llama_matrix **ms = malloc((size_t)capacity * sizeof *ms);
    if (!ms) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    const int n = all_matrices(L, ms, capacity);
    lowbit_status st = LOWBIT_OK;
    for (int i = 0; i < n && st == LOWBIT_OK; i++) {
        const int R = lb_interleave_rows_preferred(ms[i]->type);
        if (R == 0) continue;
        st = lb_interleave(ms[i]->type, R, ms[i]->data, ms[i]->rows, ms[i]->cols, L->pool,
                           &ms[i]->interleaved);
        if (st != LOWBIT_OK) {
            lb_diag_set(diag, st, -1, UINT64_MAX, "cannot repack '%s' (interleaved layout): %s",
                        ms[i]->name, lowbit_status_name(st));
        } else {
            lb_model_release_bytes(m, ms[i]->data,
                                   lowbit_row_bytes(ms[i]->type, ms[i]->cols) * (size_t)ms[i]->rows);
        }
    }
    free(ms);
    return st;
}

static void free_interleaved(lowbit_llama *L) {
    lb_interleaved_free(&L->output.interleaved);
    for (int i = 0; L->layers && i < L->config.n_layers; i++) {
        llama_layer *ly = &L->layers[i];
        llama_matrix *ms[] = {&ly->q, &ly->k, &ly->v, &ly->o, &ly->gate, &ly->up, &ly->down};
        for (int j = 0; j < LB_ARRAY_LEN(ms); j++) lb_interleaved_free(&ms[j]->interleaved);
    }
}

/* Reserves lowbit_matmul's scratch for the largest product now, so forward never grows it. */
static int reserve_scratch(lowbit_llama *L) {
    size_t bytes = matmul_scratch_bytes(&L->output, L->max_batch);
    for (int i = 0; i < L->config.n_layers; i++) {
        const llama_layer *ly = &L->layers[i];
        const llama_matrix *ms[] = {&ly->q, &ly->k, &ly->v, &ly->o, &ly->gate, &ly->up, &ly->down};
        for (int j = 0; j < LB_ARRAY_LEN(ms); j++) {
            bytes = LB_MAX(bytes, matmul_scratch_bytes(ms[j], L->max_batch));
        }
    }
    L->scratch.buffer = malloc(bytes ? bytes : 1);
    L->scratch.capacity = L->scratch.buffer ? bytes : 0;
    return L->scratch.buffer != NULL;
}

static lowbit_status allocate_state(lowbit_llama *L, lowbit_diag *diag) {
    const lowbit_llama_config *c = &L->config;
    const size_t batch = (size_t)L->max_batch, half = (size_t)L->head_dim / 2;
    const size_t cache_rows = (size_t)c->n_layers * (size_t)c->context_length;
    int ok = alloc_floats(&L->rope_freq, half, 1) && alloc_floats(&L->rope_cos, batch, half) &&
             alloc_floats(&L->rope_sin, batch, half) &&
             alloc_floats(&L->key_cache, cache_rows, (size_t)L->kv_dim) &&
             alloc_floats(&L->value_cache, cache_rows, (size_t)L->kv_dim) &&
             alloc_floats(&L->x, batch, (size_t)c->dim) && alloc_floats(&L->xn, batch, (size_t)c->dim) &&
             alloc_floats(&L->q, batch, (size_t)c->dim) && alloc_floats(&L->att, batch, (size_t)c->dim) &&
             alloc_floats(&L->gate, batch, (size_t)c->hidden_dim) &&
             alloc_floats(&L->up, batch, (size_t)c->hidden_dim) &&
             alloc_floats(&L->scores, (size_t)L->n_threads, (size_t)c->context_length) &&
             reserve_scratch(L);
    if (!ok) {
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "out of memory for the KV cache and activations (context %d)",
                           (int)c->context_length);
    }
    /* theta^(-2i/head_dim), in float as llama2.c computes it */
    for (size_t i = 0; i < half; i++) {
        L->rope_freq[i] = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)L->head_dim);
    }
    return LOWBIT_OK;
}

void lowbit_llama_free(lowbit_llama *L) {
    if (!L) return;
    free_interleaved(L);
    if (L->layers) {
        for (int i = 0; i < L->config.n_layers; i++) {
            free(L->layers[i].attn_norm);
            free(L->layers[i].ffn_norm);
        }
    }
    free(L->layers);
    free(L->output_norm);
    free(L->rope_freq);
    free(L->rope_cos);
    free(L->rope_sin);
    free(L->key_cache);
    free(L->value_cache);
    free(L->x);
    free(L->xn);
    free(L->q);
    free(L->att);
    free(L->gate);
    free(L->up);
    free(L->scores);
    lowbit_matmul_scratch_free(&L->scratch);
    lowbit_pool_destroy(L->pool);
    free(L);
}

lowbit_status lowbit_llama_create(const lowbit_model *model, int n_threads, lowbit_llama **out,
                                  lowbit_diag *diag) {
    if (!out) return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "out is NULL");
    *out = NULL;
    const lb_model *m = lb_model_of(model);
    if (!m) return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "model is NULL");
    lowbit_llama *L = calloc(1, sizeof *L);
    if (!L) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    lowbit_status st = read_config(m, &L->config, diag);
    if (st == LOWBIT_OK) {
        L->head_dim = L->config.dim / L->config.n_heads;
        L->kv_dim = L->head_dim * L->config.n_kv_heads;
        L->max_batch = LB_MIN(L->config.context_length, LLAMA_MAX_BATCH);
        L->layers = calloc((size_t)L->config.n_layers, sizeof *L->layers);
        if (!L->layers) st = lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    }
    if (st == LOWBIT_OK) st = load_weights(m, L, diag);
    if (st == LOWBIT_OK) {
        st = lowbit_pool_create(n_threads, &L->pool);
        if (st != LOWBIT_OK) lb_diag_set(diag, st, -1, UINT64_MAX, "cannot start the threads");
    }
    if (st == LOWBIT_OK) st = interleave_weights(m, L, diag);
    if (st == LOWBIT_OK) {
        L->n_threads = lowbit_pool_size(L->pool);
        st = allocate_state(L, diag);
    }
    if (st != LOWBIT_OK) {
        lowbit_llama_free(L);
        return st;
    }
    *out = L;
    return LOWBIT_OK;
}

const lowbit_llama_config *lowbit_llama_get_config(const lowbit_llama *L) {
    return L ? &L->config : NULL;
}

void lowbit_llama_set_observer(lowbit_llama *L, lowbit_matmul_observer observer, void *ctx) {
    if (!L) return;
    L->observer = observer;
    L->observer_ctx = observer ? ctx : NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* The element-wise parts                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* out = x / sqrt(mean(x^2) + eps) * w, for n rows of dim. */
static void rmsnorm_rows(float *out, const float *x, const float *w, int64_t n, int64_t dim,
                         float eps) {
    for (int64_t t = 0; t < n; t++) {
        const float *xr = x + t * dim;
        float *o = out + t * dim;
        float sum_squares = 0.0f;
        for (int64_t i = 0; i < dim; i++) sum_squares += xr[i] * xr[i];
        const float scale = 1.0f / sqrtf(sum_squares / (float)dim + eps);
        for (int64_t i = 0; i < dim; i++) o[i] = w[i] * (scale * xr[i]);
    }
}

static void add_rows(float *x, const float *delta, int64_t count) {
    for (int64_t i = 0; i < count; i++) x[i] += delta[i];
}

/* gate = silu(gate) * up, silu(g) = g / (1 + e^-g) */
static void swiglu(float *gate, const float *up, int64_t count) {
    for (int64_t i = 0; i < count; i++) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* The rotation of each pair for positions pos .. pos + n - 1, shared by every head and layer. */
static void rope_tables(lowbit_llama *L, int64_t n, int64_t pos) {
    const int64_t half = L->head_dim / 2;
    for (int64_t t = 0; t < n; t++) {
        for (int64_t i = 0; i < half; i++) {
            const float angle = (float)(pos + t) * L->rope_freq[i];
            L->rope_cos[t * half + i] = cosf(angle);
            L->rope_sin[t * half + i] = sinf(angle);
        }
    }
}

/* Rotates n rows of n_heads heads (row stride `stride` floats): pair i of a head is (2i, 2i+1),
   or (i, i + head_dim/2) for rows in Hugging Face order. */
static void rope_rows(const lowbit_llama *L, float *rows, int64_t n, int64_t stride,
                      int64_t n_heads, int halves) {
    const int64_t hd = L->head_dim, half = hd / 2;
    const int64_t step = halves ? 1 : 2, partner = halves ? half : 1;
    for (int64_t t = 0; t < n; t++) {
        const float *cs = L->rope_cos + t * half, *sn = L->rope_sin + t * half;
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = rows + t * stride + h * hd;
            for (int64_t i = 0; i < half; i++) {
                float *a = v + i * step, *b = a + partner;
                const float a0 = *a, b0 = *b;
                *a = a0 * cs[i] - b0 * sn[i];
                *b = a0 * sn[i] + b0 * cs[i];
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Attention                                                                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct attention_job {
    const lowbit_llama *L;
    const float *keys, *values; /* this layer's cache: context x kv_dim */
    const float *q;             /* n x dim */
    float *out;                 /* n x dim */
    int64_t n, pos;
} attention_job;

/* One head of one token: softmax(q . k_j / sqrt(hd)) over j <= its position, times v. */
static void attend_one(const attention_job *job, int64_t t, int64_t h, float *scores) {
    const lowbit_llama *L = job->L;
    const int64_t hd = L->head_dim, kv_dim = L->kv_dim, dim = L->config.dim;
    const int64_t kv_head = h / (L->config.n_heads / L->config.n_kv_heads);
    const int64_t last = job->pos + t;
    const float *q = job->q + t * dim + h * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    float max_score = -INFINITY;
    for (int64_t j = 0; j <= last; j++) {
        const float *k = job->keys + j * kv_dim + kv_head * hd;
        float s = 0.0f;
        for (int64_t i = 0; i < hd; i++) s += q[i] * k[i];
        s *= scale;
        scores[j] = s;
        if (s > max_score) max_score = s;
    }
    float sum = 0.0f;
    for (int64_t j = 0; j <= last; j++) {
        scores[j] = expf(scores[j] - max_score);
        sum += scores[j];
    }
    const float inv_sum = 1.0f / sum;
    float *o = job->out + t * dim + h * hd;
    for (int64_t i = 0; i < hd; i++) o[i] = 0.0f;
    for (int64_t j = 0; j <= last; j++) {
        const float *v = job->values + j * kv_dim + kv_head * hd;
        const float p = scores[j] * inv_sum;
        for (int64_t i = 0; i < hd; i++) o[i] += p * v[i];
    }
}

/* The pool runs this with one item per thread, so item w owns score row w; thread w takes a
   contiguous share of the (token, head) pairs, each computed the same way whatever the split. */
static void attention_share(void *p, int64_t begin, int64_t end) {
    const attention_job *job = p;
    const lowbit_llama *L = job->L;
    const int64_t n_pairs = job->n * L->config.n_heads, parts = L->n_threads;
    for (int64_t w = begin; w < end; w++) {
        float *scores = L->scores + w * L->config.context_length;
        for (int64_t k = n_pairs * w / parts; k < n_pairs * (w + 1) / parts; k++) {
            attend_one(job, k / L->config.n_heads, k % L->config.n_heads, scores);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The forward pass                                                                            */
/* ------------------------------------------------------------------------------------------ */

static lowbit_status matmul(lowbit_llama *L, const llama_matrix *w, const float *x, int64_t n,
                            float *out, lowbit_diag *diag) {
    if (L->observer) L->observer(L->observer_ctx, w->name, x, n, w->cols);
    lowbit_status st =
        w->interleaved.groups
            ? lb_interleaved_matmul(&w->interleaved, x, n, out, L->pool, &L->scratch)
            : lowbit_matmul(w->type, w->data, w->rows, w->cols, x, n, out, L->pool, &L->scratch);
    if (st != LOWBIT_OK) {
        return lb_diag_set(diag, st, -1, UINT64_MAX, "matrix product with '%s' failed: %s",
                           w->name, lowbit_status_name(st));
    }
    return LOWBIT_OK;
}

static lowbit_status forward_layer(lowbit_llama *L, int layer, int64_t n, int64_t pos,
                                   lowbit_diag *diag) {
    const lowbit_llama_config *c = &L->config;
    const llama_layer *ly = &L->layers[layer];
    const int64_t dim = c->dim, hidden = c->hidden_dim;
    float *keys = L->key_cache + (size_t)layer * (size_t)c->context_length * (size_t)L->kv_dim;
    float *values = L->value_cache + (size_t)layer * (size_t)c->context_length * (size_t)L->kv_dim;

    rmsnorm_rows(L->xn, L->x, ly->attn_norm, n, dim, c->rms_norm_eps);
    lowbit_status st = matmul(L, &ly->q, L->xn, n, L->q, diag);
    /* k and v rows land in the cache at their positions */
    if (st == LOWBIT_OK) st = matmul(L, &ly->k, L->xn, n, keys + pos * L->kv_dim, diag);
    if (st == LOWBIT_OK) st = matmul(L, &ly->v, L->xn, n, values + pos * L->kv_dim, diag);
    if (st != LOWBIT_OK) return st;
    rope_rows(L, L->q, n, dim, c->n_heads, ly->rope_halves);
    rope_rows(L, keys + pos * L->kv_dim, n, L->kv_dim, c->n_kv_heads, ly->rope_halves);

    attention_job job = {L, keys, values, L->q, L->att, n, pos};
    lowbit_pool_run(L->pool, L->n_threads, attention_share, &job);
    st = matmul(L, &ly->o, L->att, n, L->xn, diag);
    if (st != LOWBIT_OK) return st;
    add_rows(L->x, L->xn, n * dim);

    rmsnorm_rows(L->xn, L->x, ly->ffn_norm, n, dim, c->rms_norm_eps);
    st = matmul(L, &ly->gate, L->xn, n, L->gate, diag);
    if (st == LOWBIT_OK) st = matmul(L, &ly->up, L->xn, n, L->up, diag);
    if (st != LOWBIT_OK) return st;
    swiglu(L->gate, L->up, n * hidden);
    st = matmul(L, &ly->down, L->gate, n, L->xn, diag);
    if (st != LOWBIT_OK) return st;
    add_rows(L->x, L->xn, n * dim);
    return LOWBIT_OK;
}

/* n <= max_batch tokens at positions pos.., logits n x vocab. */
static lowbit_status forward_chunk(lowbit_llama *L, const int32_t *tokens, int64_t n, int64_t pos,
                                   float *logits, lowbit_diag *diag) {
    const lowbit_llama_config *c = &L->config;
    for (int64_t t = 0; t < n; t++) {
        const uint8_t *row = (const uint8_t *)L->embedding.data +
                             (size_t)tokens[t] * L->embedding_row_bytes;
        L->embedding_decode(row, L->x + t * c->dim, c->dim);
    }
    rope_tables(L, n, pos);
    lowbit_status st = LOWBIT_OK;
    for (int l = 0; l < c->n_layers && st == LOWBIT_OK; l++) st = forward_layer(L, l, n, pos, diag);
    if (st != LOWBIT_OK) return st;
    rmsnorm_rows(L->xn, L->x, L->output_norm, n, c->dim, c->rms_norm_eps);
    return matmul(L, &L->output, L->xn, n, logits, diag);
}

lowbit_status lowbit_llama_forward(lowbit_llama *L, const int32_t *tokens, int n, int pos,
                                   float *logits, lowbit_diag *diag) {
    if (!L || !tokens || !logits || n <= 0 || pos < 0) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "forward needs a model, n > 0 tokens, pos >= 0 and a logits buffer");
    }
    const lowbit_llama_config *c = &L->config;
    if ((int64_t)pos + n > c->context_length) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "positions %d..%lld are past the context length %d", pos,
                           (long long)pos + n - 1, (int)c->context_length);
    }
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size) {
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, i, UINT64_MAX,
                               "token %d (at %d) is not in the vocabulary of %d", (int)tokens[i],
                               i, (int)c->vocab_size);
        }
    }
    for (int64_t done = 0; done < n;) {
        const int64_t chunk = LB_MIN((int64_t)n - done, L->max_batch);
        lowbit_status st = forward_chunk(L, tokens + done, chunk, pos + done,
                                         logits + (size_t)done * (size_t)c->vocab_size, diag);
        if (st != LOWBIT_OK) return st;
        done += chunk;
    }
    return LOWBIT_OK;
}
