/*
 * The Llama forward pass against the reference logits of every sample model
 * (../shared/golden/llama/<model>.logits.bin, made by llama2.c's float forward pass):
 * - one batch, token by token through the KV cache, and a split batch (first half as a batch,
 *   the rest token by token) each reproduce the reference within 1e-3, and agree with each other
 *   within 1e-4;
 * - a batch longer than the internal chunk equals the same tokens fed one by one, and one thread
 *   gives the same logits as two, bit for bit;
 * - the same model written as GGUF gives the same logits bit for bit, and as a Hugging Face
 *   checkpoint (Q and K rows in HF's RoPE order) the reference logits; quantized to Q8_0 and F16
 *   (lowbit's quantizer) it stays close to the float logits;
 * - the observer sees every matrix product, in order, with its weight name and input;
 * - a missing tensor, a mis-shaped tensor, another architecture, positions past the context and
 *   tokens outside the vocabulary are errors that say what is wrong.
 */
#define _GNU_SOURCE
#include "testing.h"
#include "lowbit.h"
#include "io/gguf_write.h"
#include "io/model.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char work_dir[256];

static const char *work_path(const char *name) { return lb_join_path(work_dir, name); }

typedef struct golden {
    char model[64];
    int32_t n, vocab;
    int32_t *tokens;
    float *logits; /* n x vocab */
} golden;

static int read_golden(const char *path, golden *g) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int ok = fread(&g->n, 4, 1, f) == 1 && fread(&g->vocab, 4, 1, f) == 1 && g->n > 0 &&
             g->vocab > 0 && g->n < 100000 && g->vocab < 1000000;
    if (ok) {
        g->tokens = malloc((size_t)g->n * sizeof *g->tokens);
        g->logits = malloc((size_t)g->n * (size_t)g->vocab * sizeof *g->logits);
        ok = g->tokens && g->logits &&
             fread(g->tokens, 4, (size_t)g->n, f) == (size_t)g->n &&
             fread(g->logits, 4, (size_t)g->n * (size_t)g->vocab, f) ==
                 (size_t)g->n * (size_t)g->vocab;
    }
    fclose(f);
    return ok;
}

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float worst = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float d = fabsf(a[i] - b[i]);
        if (!(d <= worst)) worst = d; /* a NaN makes it NaN, which fails every bound */
    }
    return worst;
}

static double mean_abs_diff(const float *a, const float *b, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += fabs((double)a[i] - b[i]);
    return sum / (double)n;
}

/* The standard deviation of every logit: the scale differences are judged against. */
static double spread(const float *v, size_t n) {
    double sum = 0, sum2 = 0;
    for (size_t i = 0; i < n; i++) sum += v[i], sum2 += (double)v[i] * v[i];
    return sqrt(LB_MAX(0.0, sum2 / (double)n - (sum / (double)n) * (sum / (double)n)));
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) {
        if (v[i] > v[best]) best = i;
    }
    return best;
}

/* The share of positions whose top-1 token agrees. */
static double top1_agreement(const float *a, const float *b, int n, int vocab) {
    int same = 0;
    for (int i = 0; i < n; i++) {
        same += argmax(a + (size_t)i * vocab, vocab) == argmax(b + (size_t)i * vocab, vocab);
    }
    return (double)same / n;
}

static lowbit_llama *open_llama(const char *path, int threads, lowbit_model **model) {
    lowbit_diag diag = {0};
    *model = NULL;
    CHECK(lowbit_model_open(path, NULL, model, &diag) == LOWBIT_OK, "%s: %s", path, diag.message);
    if (!*model) return NULL;
    lowbit_llama *llama = NULL;
    CHECK(lowbit_llama_create(*model, threads, &llama, &diag) == LOWBIT_OK, "%s: %s", path,
          diag.message);
    return llama;
}

/* Logits of the golden tokens: first `batch` as one batch, the rest one at a time. */
static int run_tokens(lowbit_llama *llama, const golden *g, int batch, float *logits) {
    lowbit_diag diag = {0};
    if (batch > 0 && lowbit_llama_forward(llama, g->tokens, batch, 0, logits, &diag) != LOWBIT_OK) {
        fprintf(stderr, "forward: %s\n", diag.message);
        return 0;
    }
    for (int i = batch; i < g->n; i++) {
        if (lowbit_llama_forward(llama, g->tokens + i, 1, i, logits + (size_t)i * g->vocab,
                                 &diag) != LOWBIT_OK) {
            fprintf(stderr, "forward at %d: %s\n", i, diag.message);
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Reference logits                                                                            */
/* ------------------------------------------------------------------------------------------ */

static void check_against_golden(const golden *g, const char *model_path) {
    lowbit_model *model = NULL;
    lowbit_llama *llama = open_llama(model_path, 2, &model);
    if (!llama) goto done;
    const lowbit_llama_config *c = lowbit_llama_get_config(llama);
    CHECK(c->vocab_size == g->vocab && c->context_length >= g->n, "%s: vocab %d, context %d",
          g->model, (int)c->vocab_size, (int)c->context_length);
    if (c->vocab_size != g->vocab) goto done;
    const size_t count = (size_t)g->n * (size_t)g->vocab;
    float *batch = malloc(count * sizeof(float)), *incremental = malloc(count * sizeof(float));
    float *split = malloc(count * sizeof(float));
    CHECK(run_tokens(llama, g, g->n, batch), "%s: batch", g->model);
    CHECK(run_tokens(llama, g, 0, incremental), "%s: token by token", g->model);
    CHECK(run_tokens(llama, g, g->n / 2, split), "%s: split", g->model);
    const float d_batch = max_abs_diff(batch, g->logits, count);
    const float d_incremental = max_abs_diff(incremental, g->logits, count);
    const float d_split = max_abs_diff(split, g->logits, count);
    const float d_agree = LB_MAX(max_abs_diff(batch, incremental, count),
                                 max_abs_diff(batch, split, count));
    printf("%-14s %3d tokens: max |diff| to reference: batch %.2e, token by token %.2e, "
           "split %.2e; batch vs incremental %.2e\n",
           g->model, g->n, d_batch, d_incremental, d_split, d_agree);
    CHECK(d_batch <= 1e-3f, "%s: batch logits differ by %g", g->model, d_batch);
    CHECK(d_incremental <= 1e-3f, "%s: incremental logits differ by %g", g->model, d_incremental);
    CHECK(d_split <= 1e-3f, "%s: split logits differ by %g", g->model, d_split);
    CHECK(d_agree <= 1e-4f, "%s: batch and incremental differ by %g", g->model, d_agree);

    free(batch);
    free(incremental);
    free(split);
done:
    lowbit_llama_free(llama);
    lowbit_model_close(model);
}

/* A batch longer than the forward pass's internal chunk (256 tokens) equals token by token, and
   one thread gives the same logits as two, bit for bit. */
static void check_long_batch(const golden *g, const char *model_path) {
    lowbit_model *model = NULL;
    lowbit_llama *llama = open_llama(model_path, 2, &model);
    if (!llama) goto done;
    const int n = LB_MIN(300, (int)lowbit_llama_get_config(llama)->context_length);
    golden longer = *g;
    longer.n = n;
    longer.tokens = malloc((size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) longer.tokens[i] = g->tokens[i % g->n];
    const size_t count = (size_t)n * (size_t)g->vocab;
    float *batch = malloc(count * sizeof(float)), *incremental = malloc(count * sizeof(float));
    CHECK(run_tokens(llama, &longer, n, batch) && run_tokens(llama, &longer, 0, incremental),
          "%s: long batch", g->model);
    const float d = max_abs_diff(batch, incremental, count);
    CHECK(n > 256 && d <= 1e-4f, "%s: %d-token batch vs token by token: %g", g->model, n, d);
    lowbit_model *model1 = NULL;
    lowbit_llama *llama1 = open_llama(model_path, 1, &model1);
    float *one_thread = malloc(count * sizeof(float));
    CHECK(llama1 && run_tokens(llama1, &longer, n, one_thread) &&
              memcmp(one_thread, batch, count * sizeof(float)) == 0,
          "%s: 1 and 2 threads differ", g->model);
    lowbit_llama_free(llama1);
    lowbit_model_close(model1);
    free(one_thread);
    free(batch);
    free(incremental);
    free(longer.tokens);
done:
    lowbit_llama_free(llama);
    lowbit_model_close(model);
}

/* ------------------------------------------------------------------------------------------ */
/* Other formats                                                                               */
/* ------------------------------------------------------------------------------------------ */

static lowbit_status quantize_to(const char *in, const char *out, const char *preset) {
    lowbit_model *model = NULL;
    lowbit_diag diag = {0};
    lowbit_status st = lowbit_model_open(in, NULL, &model, &diag);
    lowbit_quantize_options options;
    lowbit_quantize_options_init(&options);
    options.preset = preset;
    options.n_threads = 2;
    lowbit_plan *plan = NULL;
    if (st == LOWBIT_OK) st = lowbit_plan_create(model, &options, &plan, &diag);
    if (st == LOWBIT_OK) st = lowbit_quantize_model(model, plan, out, &options, &diag);
    if (st != LOWBIT_OK) fprintf(stderr, "quantizing %s to %s: %s\n", in, preset, diag.message);
    lowbit_plan_destroy(plan);
    lowbit_model_close(model);
    return st;
}

/* Differences are bounded relative to the spread (standard deviation) of the float logits: the
   mean tightly, the largest loosely (one sensitive position of a tiny model can move by half a
   spread under Q8_0, as llama2xs does). F16 multiplies F16 activations too, as llama.cpp does,
   so its error is about fp16's rounding (2^-12) compounded, not zero. */
static void check_quantized(const golden *g, const char *model_path, const char *preset,
                            double max_rel, double mean_rel, double min_top1) {
    char name[128];
    snprintf(name, sizeof name, "%s-%s.gguf", g->model, preset);
    const char *path = work_path(name);
    CHECK(quantize_to(model_path, path, preset) == LOWBIT_OK, "%s: quantize %s", g->model, preset);
    lowbit_model *model = NULL;
    lowbit_llama *llama = open_llama(path, 2, &model);
    const size_t count = (size_t)g->n * (size_t)g->vocab;
    float *logits = malloc(count * sizeof(float));
    if (llama && run_tokens(llama, g, g->n, logits)) {
        const float d = max_abs_diff(logits, g->logits, count);
        const double top1 = top1_agreement(logits, g->logits, g->n, g->vocab);
        const double mean = mean_abs_diff(logits, g->logits, count);
        printf("%-14s %-5s |diff| to float32: max %.2e, mean %.2e (logit spread %.2f); top-1 "
               "agreement %.1f%%\n", g->model, preset, d, mean, spread(g->logits, count), 100 * top1);
        const double scale = spread(g->logits, count);
        CHECK(d <= max_rel * scale && mean <= mean_rel * scale && top1 >= min_top1,
              "%s %s: max diff %g, mean %g, spread %g, top-1 %.3f", g->model, preset, d, mean,
              scale, top1);
    } else {
        CHECK(0, "%s %s: no logits", g->model, preset);
    }
    free(logits);
    lowbit_llama_free(llama);
    lowbit_model_close(model);
    unlink(path);
}

/* ------------------------------------------------------------------------------------------ */
/* Hugging Face order                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* The Hugging Face name of a GGUF Llama tensor (NULL for one it does not have). */
static const char *hf_name(const char *gguf, char *buf, size_t size) {
    static const char *const pairs[][2] = {
        {"attn_norm", "input_layernorm"},      {"attn_q", "self_attn.q_proj"},
        {"attn_k", "self_attn.k_proj"},        {"attn_v", "self_attn.v_proj"},
        {"attn_output", "self_attn.o_proj"},   {"ffn_norm", "post_attention_layernorm"},
        {"ffn_gate", "mlp.gate_proj"},         {"ffn_up", "mlp.up_proj"},
        {"ffn_down", "mlp.down_proj"}};
    if (strcmp(gguf, "token_embd.weight") == 0) return "model.embed_tokens.weight";
    if (strcmp(gguf, "output_norm.weight") == 0) return "model.norm.weight";
    if (strcmp(gguf, "output.weight") == 0) return "lm_head.weight";
    int layer = 0;
    char part[64];
    if (sscanf(gguf, "blk.%d.%63[a-z_].weight", &layer, part) != 2) return NULL;
    for (int i = 0; i < LB_ARRAY_LEN(pairs); i++) {
        if (strcmp(part, pairs[i][0]) == 0) {
            snprintf(buf, size, "model.layers.%d.%s.weight", layer, pairs[i][1]);
            return buf;
        }
    }
    return NULL;
}

/* Writes an F32 GGUF-order Llama as a Hugging Face checkpoint (model.safetensors and
   config.json in `folder`): Q and K rows go back to HF's order, where each head holds the first
   elements of its RoPE pairs, then the second ones. */
static int write_hf(const lb_model *m, const char *folder, int n_heads, int n_kv_heads) {
    const lb_tensor *embd = lb_model_find_tensor(m, "token_embd.weight");
    uint64_t u = 0, layers = 0, hidden = 0, context = 0;
    lb_kv_get_u64(lb_model_find_kv(m, "llama.block_count"), &layers);
    lb_kv_get_u64(lb_model_find_kv(m, "llama.feed_forward_length"), &hidden);
    lb_kv_get_u64(lb_model_find_kv(m, "llama.context_length"), &context);
    size_t header_cap = 64 * 1024, header_n = 0, data_n = 0;
    char *header = malloc(header_cap);
    for (int64_t i = 0; i < m->n_tensors; i++) data_n += m->tensors[i].n_bytes;
    uint8_t *data = malloc(data_n);
    if (!header || !data || !embd) return 0;
    header_n = (size_t)snprintf(header, header_cap, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int64_t i = 0; i < m->n_tensors; i++) {
        const lb_tensor *t = &m->tensors[i];
        char buf[96];
        const char *name = hf_name(t->name, buf, sizeof buf);
        if (!name || t->type != LOWBIT_TYPE_F32) return 0;
        const int64_t rows = lb_tensor_rows(t), cols = t->ne[0];
        const int heads = strstr(t->name, "attn_q") ? n_heads : strstr(t->name, "attn_k") ? n_kv_heads : 0;
        for (int64_t r = 0; r < rows; r++) {
            int64_t to = r;
            if (heads) { /* GGUF row h*D + 2j + k is HF row h*D + k*D/2 + j */
                const int64_t d = rows / heads, h = r / d, w = r % d;
                to = h * d + (w % 2) * (d / 2) + w / 2;
            }
            memcpy(data + u + (size_t)to * (size_t)cols * 4, (const float *)t->data + r * cols,
                   (size_t)cols * 4);
        }
        header_n += (size_t)snprintf(header + header_n, header_cap - header_n,
                                     ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", name);
        header_n += (size_t)(t->n_dims == 2 ? snprintf(header + header_n, header_cap - header_n,
                                                      "%lld,%lld", (long long)rows, (long long)cols)
                                            : snprintf(header + header_n, header_cap - header_n,
                                                      "%lld", (long long)cols));
        header_n += (size_t)snprintf(header + header_n, header_cap - header_n,
                                     "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)u,
                                     (unsigned long long)(u + t->n_bytes));
        u += t->n_bytes;
    }
    header_n += (size_t)snprintf(header + header_n, header_cap - header_n, "}");
    while (header_n % 8) header[header_n++] = ' ';
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", folder);
    FILE *f = fopen(path, "wb");
    int ok = f != NULL;
    for (int i = 0; ok && i < 8; i++) ok = fputc((int)((uint64_t)header_n >> (8 * i) & 0xff), f) != EOF;
    ok = ok && fwrite(header, 1, header_n, f) == header_n && fwrite(data, 1, data_n, f) == data_n;
    if (f) ok = fclose(f) == 0 && ok;
    snprintf(path, sizeof path, "%s/config.json", folder);
    f = fopen(path, "w");
    ok = ok && f != NULL;
    if (f) {
        fprintf(f,
                "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
                "\"hidden_act\": \"silu\", \"hidden_size\": %lld, \"num_hidden_layers\": %llu, "
                "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
                "\"intermediate_size\": %llu, \"max_position_embeddings\": %llu, "
                "\"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"vocab_size\": %lld, "
                "\"torch_dtype\": \"float32\", \"tie_word_embeddings\": %s}\n",
                (long long)embd->ne[0], (unsigned long long)layers, n_heads, n_kv_heads,
                (unsigned long long)hidden, (unsigned long long)context, (long long)embd->ne[1],
                lb_model_find_tensor(m, "output.weight") ? "false" : "true");
        ok = fclose(f) == 0 && ok;
    }
    free(header);
    free(data);
    return ok;
}

/* The same model from a Hugging Face checkpoint (Q and K rows in HF's order, which the forward
   pass rotates as halves) gives the reference logits. */
static void check_hugging_face_order(const golden *g, const char *model_path) {
    lb_model m = {0};
    lowbit_diag diag = {0};
    CHECK(lb_read_llama2c_model(model_path, NULL, &m, &diag) == LOWBIT_OK, "%s", diag.message);
    uint64_t heads = 0, kv_heads = 0;
    lb_kv_get_u64(lb_model_find_kv(&m, "llama.attention.head_count"), &heads);
    lb_kv_get_u64(lb_model_find_kv(&m, "llama.attention.head_count_kv"), &kv_heads);
    const char *folder = work_path("hf");
    char hf_folder[512];
    snprintf(hf_folder, sizeof hf_folder, "%s", folder);
    mkdir(hf_folder, 0700);
    CHECK(write_hf(&m, hf_folder, (int)heads, (int)kv_heads), "writing the HF checkpoint");
    lb_model_free(&m);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", hf_folder);
    lowbit_model *model = NULL;
    lowbit_llama *llama = open_llama(path, 2, &model);
    const size_t count = (size_t)g->n * (size_t)g->vocab;
    float *logits = malloc(count * sizeof(float));
    if (llama) {
        CHECK(run_tokens(llama, g, g->n, logits), "HF forward");
        const float d = max_abs_diff(logits, g->logits, count);
        printf("%-14s from Hugging Face order: max |diff| to reference %.2e\n", g->model, d);
        CHECK(d <= 1e-3f, "%s: HF-order logits differ by %g", g->model, d);
    }
    free(logits);
    lowbit_llama_free(llama);
    lowbit_model_close(model);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", hf_folder);
    unlink(path);
    rmdir(hf_folder);
}

/* ------------------------------------------------------------------------------------------ */
/* The observer                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct observed {
    int calls;
    char first[64], last[64];
    int64_t first_rows, first_cols, down_cols;
    float first_input[64];
} observed;

static void observe(void *ctx, const char *name, const float *input, int64_t rows, int64_t cols) {
    observed *o = ctx;
    if (o->calls++ == 0) {
        snprintf(o->first, sizeof o->first, "%s", name);
        o->first_rows = rows;
        o->first_cols = cols;
        memcpy(o->first_input, input, (size_t)LB_MIN(cols, 64) * sizeof(float));
    }
    if (strcmp(name, "blk.0.ffn_down.weight") == 0) o->down_cols = cols;
    snprintf(o->last, sizeof o->last, "%s", name);
}

/* The first product's input is the attention norm of the first token's embedding. */
static void check_observer(const golden *g, const char *model_path) {
    lowbit_model *model = NULL;
    lowbit_llama *llama = open_llama(model_path, 1, &model);
    if (!llama) goto done;
    const lowbit_llama_config *c = lowbit_llama_get_config(llama);
    observed o = {0};
    lowbit_llama_set_observer(llama, observe, &o);
    float *logits = malloc(3 * (size_t)c->vocab_size * sizeof(float));
    CHECK(lowbit_llama_forward(llama, g->tokens, 3, 0, logits, NULL) == LOWBIT_OK, "forward");
    CHECK(o.calls == 7 * c->n_layers + 1, "%d products observed", o.calls);
    CHECK(strcmp(o.first, "blk.0.attn_q.weight") == 0 && o.first_rows == 3 &&
              o.first_cols == c->dim && o.down_cols == c->hidden_dim,
          "first product '%s' %lld x %lld", o.first, (long long)o.first_rows,
          (long long)o.first_cols);
    const lb_model *m = lb_model_of(model);
    const char *classifier = lb_model_find_tensor(m, "output.weight") ? "output.weight"
                                                                      : "token_embd.weight";
    CHECK(strcmp(o.last, classifier) == 0, "last product '%s'", o.last);
    /* rmsnorm(embedding of tokens[0]) * attn_norm, from the F32 sample's tensors */
    const lb_tensor *embd = lb_model_find_tensor(m, "token_embd.weight");
    const lb_tensor *norm = lb_model_find_tensor(m, "blk.0.attn_norm.weight");
    if (embd && norm && embd->type == LOWBIT_TYPE_F32 && c->dim <= 64) {
        const float *e = (const float *)embd->data + (size_t)g->tokens[0] * c->dim;
        const float *w = norm->data;
        double ss = 0;
        for (int i = 0; i < c->dim; i++) ss += (double)e[i] * e[i];
        const double scale = 1.0 / sqrt(ss / c->dim + c->rms_norm_eps);
        float worst = 0;
        for (int i = 0; i < c->dim; i++) {
            worst = LB_MAX(worst, fabsf(o.first_input[i] - (float)(w[i] * e[i] * scale)));
        }
        CHECK(worst < 1e-5f, "observed input differs from the normed embedding by %g", worst);
    }
    /* removed: no more calls */
    lowbit_llama_set_observer(llama, NULL, NULL);
    const int before = o.calls;
    CHECK(lowbit_llama_forward(llama, g->tokens, 1, 0, logits, NULL) == LOWBIT_OK &&
              o.calls == before, "observer removed");
    free(logits);
done:
    lowbit_llama_free(llama);
    lowbit_model_close(model);
}

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Writes m as GGUF at path, without the tensor `skip` and with `transpose`'s two dims swapped. */
static lowbit_status write_variant(const lb_model *m, const char *path, const char *skip,
                                   const char *transpose) {
    lb_out_tensor *t = calloc((size_t)m->n_tensors, sizeof *t);
    const void **data = calloc((size_t)m->n_tensors, sizeof *data);
    int64_t n = 0;
    for (int64_t i = 0; t && data && i < m->n_tensors; i++) {
        const lb_tensor *src = &m->tensors[i];
        if (skip && strcmp(src->name, skip) == 0) continue;
        t[n] = (lb_out_tensor){.name = src->name, .type = src->type, .n_dims = src->n_dims,
                               .n_bytes = src->n_bytes};
        memcpy(t[n].ne, src->ne, sizeof t[n].ne);
        if (transpose && strcmp(src->name, transpose) == 0) {
            t[n].ne[0] = src->ne[1];
            t[n].ne[1] = src->ne[0];
        }
        data[n++] = src->data;
    }
    lowbit_diag diag = {0};
    uint64_t size = 0;
    lb_gguf_writer *w = NULL;
    lowbit_status st = t && data ? lb_gguf_layout(m->kvs, m->n_kv, t, n, 0, &size)
                                 : LOWBIT_ERR_NO_MEMORY;
    if (st == LOWBIT_OK) st = lb_gguf_writer_open(path, m->kvs, m->n_kv, t, n, 0, &w, &diag);
    for (int64_t i = 0; st == LOWBIT_OK && i < n; i++) {
        st = lb_gguf_writer_write(w, data[i], t[i].n_bytes, &diag);
    }
    if (st == LOWBIT_OK) {
        st = lb_gguf_writer_commit(w, &diag);
    } else {
        lb_gguf_writer_abort(w);
    }
    if (st != LOWBIT_OK) fprintf(stderr, "writing %s: %s\n", path, diag.message);
    free(t);
    free(data);
    return st;
}

static void expect_create_error(const char *path, lowbit_status expected, const char *needle,
                                const char *needle2, const char *what) {
    lowbit_model *model = NULL;
    lowbit_diag diag = {0};
    CHECK(lowbit_model_open(path, NULL, &model, &diag) == LOWBIT_OK, "%s: %s", what, diag.message);
    lowbit_llama *llama = (lowbit_llama *)&diag; /* must be reset to NULL on failure */
    const lowbit_status st = lowbit_llama_create(model, 1, &llama, &diag);
    CHECK(st == expected && !llama && strstr(diag.message, needle) &&
              (!needle2 || strstr(diag.message, needle2)),
          "%s: status %s, '%s'", what, lowbit_status_name(st), diag.message);
    lowbit_model_close(model);
}

static void check_errors(const golden *g, const char *model_path) {
    lb_model m = {0};
    lowbit_diag diag = {0};
    CHECK(lb_read_llama2c_model(model_path, NULL, &m, &diag) == LOWBIT_OK, "%s", diag.message);
    const int64_t dim = lb_model_find_tensor(&m, "token_embd.weight")->ne[0];
    const int64_t kv_dim = lb_model_find_tensor(&m, "blk.1.attn_k.weight")->ne[1];

    /* the whole model as GGUF: the same logits, bit for bit */
    const char *whole = work_path("whole.gguf");
    CHECK(write_variant(&m, whole, NULL, NULL) == LOWBIT_OK, "write whole");
    {
        const size_t count = (size_t)g->n * (size_t)g->vocab;
        float *a = malloc(count * sizeof(float)), *b = malloc(count * sizeof(float));
        lowbit_model *ma = NULL, *mb = NULL;
        lowbit_llama *la = open_llama(model_path, 1, &ma), *lb = open_llama(whole, 1, &mb);
        CHECK(la && lb && run_tokens(la, g, g->n, a) && run_tokens(lb, g, g->n, b) &&
                  memcmp(a, b, count * sizeof(float)) == 0,
              "GGUF and llama2.c logits differ");
        lowbit_llama_free(la);
        lowbit_llama_free(lb);
        lowbit_model_close(ma);
        lowbit_model_close(mb);
        free(a);
        free(b);
    }

    const char *missing = work_path("missing.gguf");
    CHECK(write_variant(&m, missing, "blk.2.ffn_up.weight", NULL) == LOWBIT_OK, "write missing");
    expect_create_error(missing, LOWBIT_ERR_NOT_FOUND, "'blk.2.ffn_up.weight'", "missing",
                        "missing tensor");

    const char *transposed = work_path("transposed.gguf");
    char expected_shape[64];
    snprintf(expected_shape, sizeof expected_shape, "expected [%lld, %lld]", (long long)dim,
             (long long)kv_dim);
    CHECK(write_variant(&m, transposed, NULL, "blk.1.attn_k.weight") == LOWBIT_OK,
          "write transposed");
    expect_create_error(transposed, LOWBIT_ERR_SHAPE, "'blk.1.attn_k.weight'", expected_shape,
                        "mis-shaped tensor");

    const char *norm_missing = work_path("norm.gguf");
    CHECK(write_variant(&m, norm_missing, "output_norm.weight", NULL) == LOWBIT_OK, "write");
    expect_create_error(norm_missing, LOWBIT_ERR_NOT_FOUND, "'output_norm.weight'", NULL,
                        "missing norm");

    const char *other = work_path("other.gguf");
    lb_model_set_string(&m, "general.architecture", "gpt2");
    CHECK(write_variant(&m, other, NULL, NULL) == LOWBIT_OK, "write gpt2");
    expect_create_error(other, LOWBIT_ERR_UNSUPPORTED, "llama", NULL, "other architecture");
    lb_model_set_string(&m, "general.architecture", "llama");

    const char *no_layers = work_path("no_layers.gguf");
    lb_model_set_string(&m, "llama.block_count", "five");
    CHECK(write_variant(&m, no_layers, NULL, NULL) == LOWBIT_OK, "write bad block count");
    expect_create_error(no_layers, LOWBIT_ERR_BAD_FILE, "llama.block_count", NULL,
                        "block count of another type");
    lb_model_free(&m);
    unlink(whole);
    unlink(missing);
    unlink(transposed);
    unlink(norm_missing);
    unlink(other);
    unlink(no_layers);

    /* forward's own checks */
    lowbit_model *model = NULL;
    lowbit_llama *llama = open_llama(model_path, 1, &model);
    if (llama) {
        const lowbit_llama_config *c = lowbit_llama_get_config(llama);
        float *logits = malloc(2 * (size_t)c->vocab_size * sizeof(float));
        const int32_t tokens[2] = {1, 2};
        lowbit_status st = lowbit_llama_forward(llama, tokens, 2, c->context_length - 1, logits, &diag);
        CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT && strstr(diag.message, "context length"),
              "past the context: %s", diag.message);
        CHECK(lowbit_llama_forward(llama, tokens, 1, c->context_length - 1, logits, &diag) ==
                  LOWBIT_OK, "the last position: %s", diag.message);
        const int32_t bad[2] = {1, c->vocab_size};
        st = lowbit_llama_forward(llama, bad, 2, 0, logits, &diag);
        CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT && strstr(diag.message, "vocabulary") &&
                  diag.row == 1, "token out of range: %s", diag.message);
        CHECK(lowbit_llama_forward(llama, tokens, 0, 0, logits, &diag) ==
                  LOWBIT_ERR_INVALID_ARGUMENT, "no tokens");
        CHECK(lowbit_llama_forward(llama, tokens, 1, -1, logits, &diag) ==
                  LOWBIT_ERR_INVALID_ARGUMENT, "negative position");
        free(logits);
    }
    lowbit_llama_free(llama);
    lowbit_model_close(model);
}

/* ------------------------------------------------------------------------------------------ */

static int ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int main(void) {
    snprintf(work_dir, sizeof work_dir, "/tmp/lowbit-test-llama-XXXXXX");
    if (!mkdtemp(work_dir)) return 1;
    char golden_dir[1024];
    snprintf(golden_dir, sizeof golden_dir, "%s", lb_shared_path("golden/llama"));
    DIR *d = opendir(golden_dir);
    CHECK(d != NULL, "cannot list %s", golden_dir);
    int n_models = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!ends_with(e->d_name, ".logits.bin")) continue;
        golden g = {0};
        char path[2048], model_path[2048];
        snprintf(path, sizeof path, "%s/%s", golden_dir, e->d_name);
        snprintf(g.model, sizeof g.model, "%.*s", (int)(strlen(e->d_name) - strlen(".logits.bin")),
                 e->d_name);
        char relative[128];
        snprintf(relative, sizeof relative, "models/%s.bin", g.model);
        snprintf(model_path, sizeof model_path, "%s", lb_shared_path(relative));
        CHECK(read_golden(path, &g), "cannot read %s", path);
        if (g.tokens && g.logits) {
            n_models++;
            check_against_golden(&g, model_path);
            check_quantized(&g, model_path, "Q8_0", 0.5, 0.02, 0.9);
            check_quantized(&g, model_path, "F16", 0.01, 1e-3, 0.98);
            if (strcmp(g.model, "stories260K") == 0) {
                check_long_batch(&g, model_path);
                check_observer(&g, model_path);
                check_errors(&g, model_path);
                check_hugging_face_order(&g, model_path);
            }
        }
        free(g.tokens);
        free(g.logits);
    }
    if (d) closedir(d);
    CHECK(n_models >= 4, "only %d reference files", n_models);
    rmdir(work_dir);
    return lb_test_summary();
}
