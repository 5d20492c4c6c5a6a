/*
 * Peak memory of quantizing a model far larger than one tensor.
 *
 *   bench_quantize_memory [--gb N] [--dir DIR] [--preset P] [--threads T] [--keep]
 *
 * Writes a synthetic Llama-shaped GGUF of N GB of F32 weights (default 2) into DIR, then
 * quantizes it with PRESET (default Q4_K_M) in a child process and reports the child's peak
 * resident set (getrusage via wait4) next to the largest tensor's float size and the model's
 * size. Quantization streams tensor by tensor, so the peak should stay near the largest tensor's
 * float size times a small constant, whatever the model's size.
 */
#define _GNU_SOURCE
#include "io/gguf_write.h"
#include "io/model.h"
#include "lowbit.h"
#include "measure.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct options {
    double gb;
    const char *dir;
    const char *preset;
    int threads;
    int keep;
} options;

/* Llama-like shapes (dim 2048, FFN 5632, vocabulary 32000) with as many layers as the size asks. */
enum { DIM = 2048, FFN = 5632, VOCAB = 32000 };

typedef struct synthetic_tensor {
    char name[64];
    int n_dims;
    int64_t ne[2];
} synthetic_tensor;

static int add(synthetic_tensor *t, int n, const char *name, int n_dims, int64_t ne0, int64_t ne1) {
    snprintf(t[n].name, sizeof t[n].name, "%s", name);
    t[n].n_dims = n_dims;
    t[n].ne[0] = ne0;
    t[n].ne[1] = ne1;
    return n + 1;
}

static int layer_count_for(double gb) {
    const double per_layer = 4.0 * (4.0 * DIM * DIM + 3.0 * DIM * FFN + 2.0 * DIM);
    const double fixed = 4.0 * (2.0 * (double)VOCAB * DIM + DIM);
    const int layers = (int)((gb * 1e9 - fixed) / per_layer + 0.999);
    return layers < 1 ? 1 : layers;
}

static int describe_model(int layers, synthetic_tensor *t) {
    int n = add(t, 0, "token_embd.weight", 2, DIM, VOCAB);
    for (int l = 0; l < layers; l++) {
        char name[64];
        static const char *const square[] = {"attn_q", "attn_k", "attn_v", "attn_output"};
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        n = add(t, n, name, 1, DIM, 1);
        for (int k = 0; k < 4; k++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, square[k]);
            n = add(t, n, name, 2, DIM, DIM);
        }
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        n = add(t, n, name, 1, DIM, 1);
        snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", l);
        n = add(t, n, name, 2, DIM, FFN);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        n = add(t, n, name, 2, FFN, DIM);
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", l);
        n = add(t, n, name, 2, DIM, FFN);
    }
    n = add(t, n, "output_norm.weight", 1, DIM, 1);
    return add(t, n, "output.weight", 2, DIM, VOCAB);
}

static void fill(float *x, int64_t count, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < count; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = ((float)(s >> 40) / (float)(1u << 24) - 0.5f) * 0.1f;
    }
}

/* Writes the synthetic model tensor by tensor; returns the largest tensor's float bytes. */
static int write_model(const char *path, int layers, uint64_t *largest, uint64_t *total) {
    synthetic_tensor *desc = calloc((size_t)(9 * layers + 3), sizeof *desc);
    const int n = describe_model(layers, desc);
    lb_model meta = {0};
    lb_model_set_string(&meta, "general.architecture", "llama");
    lb_model_set_u32(&meta, "llama.block_count", (uint32_t)layers);
    lb_model_set_u32(&meta, "llama.embedding_length", DIM);
    lb_model_set_u32(&meta, "llama.feed_forward_length", FFN);
    lb_model_set_u32(&meta, "llama.attention.head_count", 16);
    lb_model_set_u32(&meta, "llama.attention.head_count_kv", 16);
    lb_out_tensor *out = calloc((size_t)n, sizeof *out);
    *largest = *total = 0;
    for (int i = 0; i < n; i++) {
        out[i] = (lb_out_tensor){.name = desc[i].name, .type = LOWBIT_TYPE_F32,
                                 .n_dims = desc[i].n_dims, .ne = {desc[i].ne[0], desc[i].ne[1], 1, 1}};
        out[i].n_bytes = 4ull * (uint64_t)(desc[i].ne[0] * desc[i].ne[1]);
        if (out[i].n_bytes > *largest) *largest = out[i].n_bytes;
        *total += out[i].n_bytes;
    }
    uint64_t file_size = 0;
    lowbit_diag diag = {0};
    lb_gguf_writer *w = NULL;
    int ok = lb_gguf_layout(meta.kvs, meta.n_kv, out, n, 32, &file_size) == LOWBIT_OK &&
             lb_gguf_writer_open(path, meta.kvs, meta.n_kv, out, n, 32, &w, &diag) == LOWBIT_OK;
    float *buffer = ok ? malloc(*largest) : NULL;
    for (int i = 0; ok && buffer && i < n; i++) {
        fill(buffer, (int64_t)(out[i].n_bytes / 4), (uint64_t)i);
        ok = lb_gguf_writer_write(w, buffer, out[i].n_bytes, &diag) == LOWBIT_OK;
    }
    if (ok && buffer) {
        ok = lb_gguf_writer_commit(w, &diag) == LOWBIT_OK;
    } else {
        lb_gguf_writer_abort(w);
        ok = 0;
    }
    if (!ok) fprintf(stderr, "writing %s failed: %s\n", path, diag.message);
    free(buffer);
    free(out);
    free(desc);
    lb_model_free(&meta);
    return ok;
}

/* The child: open, plan, quantize; exit status 0 on success. */
static int quantize_in_child(const char *in, const char *out, const options *o) {
    lowbit_model *model = NULL;
    lowbit_plan *plan = NULL;
    lowbit_diag diag = {0};
    lowbit_quantize_options q;
    lowbit_quantize_options_init(&q);
    q.preset = o->preset;
    q.n_threads = o->threads;
    lowbit_status st = lowbit_model_open(in, NULL, &model, &diag);
    if (st == LOWBIT_OK) st = lowbit_plan_create(model, &q, &plan, &diag);
    if (st == LOWBIT_OK) st = lowbit_quantize_model(model, plan, out, &q, &diag);
    if (st != LOWBIT_OK) fprintf(stderr, "quantize: %s\n", diag.message);
    lowbit_plan_destroy(plan);
    lowbit_model_close(model);
    return st == LOWBIT_OK ? 0 : 1;
}

static int parse(int argc, char **argv, options *o) {
    *o = (options){2.0, "/tmp", "Q4_K_M", 0, 0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--gb") && i + 1 < argc) o->gb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) o->dir = argv[++i];
        else if (!strcmp(argv[i], "--preset") && i + 1 < argc) o->preset = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) o->threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep")) o->keep = 1;
        else return 0;
    }
    return o->gb > 0;
}

int main(int argc, char **argv) {
    options o;
    if (!parse(argc, argv, &o)) {
        fprintf(stderr, "usage: bench_quantize_memory [--gb N] [--dir DIR] [--preset P] [--threads T] [--keep]\n");
        return 2;
    }
    char in[512], out[512];
    snprintf(in, sizeof in, "%s/lowbit-memory-bench-f32.gguf", o.dir);
    snprintf(out, sizeof out, "%s/lowbit-memory-bench-%s.gguf", o.dir, o.preset);
    const int layers = layer_count_for(o.gb);
    uint64_t largest = 0, total = 0;
    printf("writing a synthetic model: %d layers, dim %d, FFN %d, vocabulary %d\n", layers, DIM, FFN, VOCAB);
    if (!write_model(in, layers, &largest, &total)) return 1;
    const double t0 = measure_now_seconds();
    const pid_t child = fork();
    if (child == 0) _exit(quantize_in_child(in, out, &o));
    int status = 0;
    struct rusage usage;
    if (child < 0 || wait4(child, &status, 0, &usage) != child) return 1;
    const double seconds = measure_now_seconds() - t0;
    const double peak = (double)usage.ru_maxrss * 1024.0;
    printf("model: %.2f GB of F32 weights; largest tensor %.1f MB as floats\n", (double)total / 1e9,
           (double)largest / 1e6);
    printf("quantize to %s: %s in %.1f s; peak RSS %.1f MB = %.2f x the largest tensor, %.3f x the model\n",
           o.preset, WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "ok" : "FAILED", seconds,
           peak / 1e6, peak / (double)largest, peak / (double)total);
    if (!o.keep) {
        unlink(in);
        unlink(out);
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
