/*
 * Classifier files: GGUF with general.architecture "lowbit-classifier" (float nets) or
 * "lowbit-classifier-int" (integer models). Keys and tensors: docs/CLASSIFIER_FILES.md.
 *
 * Loading never trusts a stored shape: the layer (or op) descriptions are rebuilt into a net by
 * lb_net_build, which re-derives every shape under the same rules and limits as a net built in
 * memory, and each tensor must then have exactly the type and dimensions those shapes imply.
 * The GGUF reader has already checked that every tensor's bytes lie inside the file.
 */
#include "classifier.h"

#include "../io/gguf_write.h"
#include "../io/model.h"
#include "integer.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>

#define ARCH_FLOAT "lowbit-classifier"
#define ARCH_INT "lowbit-classifier-int"
#define MAX_FILE_TENSORS (LB_NET_MAX_LAYERS * 6)

/* ---- small helpers --------------------------------------------------------------------------- */

/* "prefix.rest" formatted into a caller buffer (keys and tensor names are short). */
static const char *name_of(char *buf, size_t size, const char *prefix, const char *fmt, int index) {
    char tail[64];
    snprintf(tail, sizeof tail, fmt, index);
    snprintf(buf, size, "%s%s%s", prefix, prefix[0] ? "." : "", tail);
    return buf;
}

static lowbit_status bad_file(lowbit_diag *diag, const char *path, const char *fmt, const char *what) {
    char message[200];
    snprintf(message, sizeof message, fmt, what);
    return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX, "%s: %s", path, message);
}

static int64_t reduction_of(lb_layer_kind kind, int32_t kernel, lb_shape in) {
    return kind == LB_LAYER_CONV2D ? (int64_t)kernel * kernel * in.c : lb_shape_size(in);
}

/* ---- writing ----------------------------------------------------------------------------------- */

/* Tensors of a file being written: their infos for the layout and their bytes, in order. */
typedef struct tensor_list {
    lb_out_tensor infos[MAX_FILE_TENSORS];
    const void *data[MAX_FILE_TENSORS];
    char names[MAX_FILE_TENSORS][48];
    int n;
} tensor_list;

static lowbit_status add_tensor(tensor_list *t, const char *name, lowbit_type type, int64_t ne0,
                                int64_t ne1, const void *data, lowbit_diag *diag) {
    if (t->n >= MAX_FILE_TENSORS || !data) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "tensor '%s': %s", name, data ? "too many tensors" : "no data");
    }
    const int i = t->n;
    if (snprintf(t->names[i], sizeof t->names[i], "%s", name) >= (int)sizeof t->names[i]) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "tensor name '%s' is too long", name);
    }
    t->n++;
    const lowbit_type_traits *traits = lowbit_type_info(type);
    lb_out_tensor *o = &t->infos[i];
    memset(o, 0, sizeof *o);
    o->name = t->names[i];
    o->type = type;
    o->n_dims = ne1 > 1 ? 2 : 1;
    o->ne[0] = ne0;
    o->ne[1] = ne1;
    o->ne[2] = o->ne[3] = 1;
    o->n_bytes = (uint64_t)(ne0 * ne1) * (uint64_t)traits->block_bytes;
    t->data[i] = data;
    return LOWBIT_OK;
}

/* Lays the file out and streams it through the atomic GGUF writer. */
static lowbit_status write_file(const char *path, const lb_model *meta, tensor_list *t,
                                lowbit_diag *diag) {
    uint64_t file_size = 0;
    lowbit_status st = lb_gguf_layout_diag(meta->kvs, meta->n_kv, t->infos, t->n, 0, &file_size, diag);
    if (st != LOWBIT_OK) return st;
    lb_gguf_writer *w = NULL;
    st = lb_gguf_writer_open(path, meta->kvs, meta->n_kv, t->infos, t->n, 0, &w, diag);
    for (int i = 0; st == LOWBIT_OK && i < t->n; i++) {
        st = lb_gguf_writer_write(w, t->data[i], t->infos[i].n_bytes, diag);
    }
    if (st == LOWBIT_OK) return lb_gguf_writer_commit(w, diag);
    lb_gguf_writer_abort(w);
    return st;
}

static lowbit_status set_shape(lb_model *m, const char *key, lb_shape s) {
    const int32_t v[3] = {s.h, s.w, s.c};
    return lb_model_set_i32_array(m, key, v, 3);
}

/* Metadata of one float layer under ARCH_FLOAT.layer.N. */
static lowbit_status set_layer_keys(lb_model *m, const lb_layer *l, int i) {
    char key[96];
    const char *p = ARCH_FLOAT;
    lowbit_status st = lb_model_set_string(m, name_of(key, sizeof key, p, "layer.%d.kind", i),
                                           lb_layer_kind_name(l->kind));
    if (st == LOWBIT_OK && (l->kind == LB_LAYER_LINEAR || l->kind == LB_LAYER_CONV2D)) {
        st = lb_model_set_u32(m, name_of(key, sizeof key, p, "layer.%d.units", i), (uint32_t)l->out.c);
    }
    if (st == LOWBIT_OK && (l->kind == LB_LAYER_CONV2D || l->kind == LB_LAYER_MAXPOOL ||
                            l->kind == LB_LAYER_AVGPOOL)) {
        st = lb_model_set_u32(m, name_of(key, sizeof key, p, "layer.%d.kernel", i), (uint32_t)l->kernel);
        if (st == LOWBIT_OK)
            st = lb_model_set_u32(m, name_of(key, sizeof key, p, "layer.%d.stride", i), (uint32_t)l->stride);
        if (st == LOWBIT_OK)
            st = lb_model_set_u32(m, name_of(key, sizeof key, p, "layer.%d.pad", i), (uint32_t)l->pad);
    }
    if (st == LOWBIT_OK && l->kind == LB_LAYER_BATCHNORM) {
        st = lb_model_set_f32(m, name_of(key, sizeof key, p, "layer.%d.eps", i), l->eps);
        if (st == LOWBIT_OK)
            st = lb_model_set_f32(m, name_of(key, sizeof key, p, "layer.%d.momentum", i), l->momentum);
    }
    if (st == LOWBIT_OK && l->has_range) {
        const float range[2] = {l->range_lo, l->range_hi};
        st = lb_model_set_f32_array(m, name_of(key, sizeof key, p, "layer.%d.range", i), range, 2);
    }
    return st;
}

static lowbit_status add_layer_tensors(tensor_list *t, const lb_layer *l, int i, lowbit_diag *diag) {
    char name[64];
    lowbit_status st = LOWBIT_OK;
    if (l->kind == LB_LAYER_LINEAR || l->kind == LB_LAYER_CONV2D) {
        int64_t k = reduction_of(l->kind, l->kernel, l->in);
        st = add_tensor(t, name_of(name, sizeof name, "", "layer.%d.weight", i), LOWBIT_TYPE_F32, k,
                        l->out.c, l->weight, diag);
        if (st == LOWBIT_OK)
            st = add_tensor(t, name_of(name, sizeof name, "", "layer.%d.bias", i), LOWBIT_TYPE_F32,
                            l->out.c, 1, l->bias, diag);
    } else if (l->kind == LB_LAYER_BATCHNORM) {
        const char *names[4] = {"layer.%d.gamma", "layer.%d.bias", "layer.%d.running_mean",
                                "layer.%d.running_var"};
        const float *data[4] = {l->gamma, l->bias, l->running_mean, l->running_var};
        for (int j = 0; j < 4 && st == LOWBIT_OK; j++) {
            st = add_tensor(t, name_of(name, sizeof name, "", names[j], i), LOWBIT_TYPE_F32, l->in.c,
                            1, data[j], diag);
        }
    }
    return st;
}

static lowbit_status check_path(const char *path, const void *net, lowbit_diag *diag) {
    if (!path || !net) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "saving needs a net and a path");
    }
    return LOWBIT_OK;
}

lowbit_status lb_net_save(const lb_net *net, const char *path, lowbit_diag *diag) {
    lowbit_status st = check_path(path, net, diag);
    if (st != LOWBIT_OK) return st;
    if (net->n_layers < 1 || net->n_layers > LB_NET_MAX_LAYERS) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "a net to save needs 1 to %d layers", LB_NET_MAX_LAYERS);
    }
    lb_model meta;
    memset(&meta, 0, sizeof meta);
    tensor_list *t = calloc(1, sizeof *t);
    if (!t) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    st = lb_model_set_string(&meta, "general.architecture", ARCH_FLOAT);
    if (st == LOWBIT_OK) st = set_shape(&meta, ARCH_FLOAT ".input_shape", net->input);
    if (st == LOWBIT_OK) st = lb_model_set_u32(&meta, ARCH_FLOAT ".classes", (uint32_t)net->classes);
    if (st == LOWBIT_OK) st = lb_model_set_u32(&meta, ARCH_FLOAT ".layer_count", (uint32_t)net->n_layers);
    for (int i = 0; st == LOWBIT_OK && i < net->n_layers; i++) {
        st = set_layer_keys(&meta, &net->layers[i], i);
        if (st != LOWBIT_OK) {
            st = lb_diag_set(diag, st, -1, UINT64_MAX, "cannot describe layer %d", i);
            break;
        }
        st = add_layer_tensors(t, &net->layers[i], i, diag);
    }
    if (st == LOWBIT_OK) st = write_file(path, &meta, t, diag);
    free(t);
    lb_model_free(&meta);
    return st;
}

/* ---- integer models: writing ------------------------------------------------------------------ */

static const char *const int_kind_names[LB_INT_OP_KIND_COUNT] = {
    [LB_INT_LINEAR] = "linear", [LB_INT_CONV2D] = "conv2d", [LB_INT_MAXPOOL] = "maxpool",
    [LB_INT_AVGPOOL] = "avgpool", [LB_INT_FLATTEN] = "flatten"};
static const char *const mode_names[] = {[LB_INT_MODE_STATIC] = "static",
                                         [LB_INT_MODE_DYNAMIC] = "dynamic",
                                         [LB_INT_MODE_WEIGHT_ONLY] = "weight-only"};

static lb_layer_kind layer_kind_of_op(lb_int_op_kind kind) {
    switch (kind) {
    case LB_INT_LINEAR: return LB_LAYER_LINEAR;
    case LB_INT_CONV2D: return LB_LAYER_CONV2D;
    case LB_INT_MAXPOOL: return LB_LAYER_MAXPOOL;
    case LB_INT_AVGPOOL: return LB_LAYER_AVGPOOL;
    default: return LB_LAYER_FLATTEN;
    }
}

static int op_has_weights(lb_int_op_kind kind) { return kind == LB_INT_LINEAR || kind == LB_INT_CONV2D; }

/* Weights of 4 bits or fewer are stored two per byte (low nibble first), each row padded to a
   whole byte; wider weights one per byte. */
static int packs_nibbles(int weight_bits) { return weight_bits <= 4; }

static int64_t stored_row_bytes(int64_t k, int weight_bits) {
    return packs_nibbles(weight_bits) ? (k + 1) / 2 : k;
}

static void pack_nibbles(const int8_t *w, int64_t rows, int64_t k, uint8_t *out) {
    int64_t row_bytes = (k + 1) / 2;
    memset(out, 0, (size_t)(rows * row_bytes));
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < k; j++) {
            uint8_t nib = (uint8_t)w[r * k + j] & 0x0f;
            out[r * row_bytes + j / 2] |= (uint8_t)(j % 2 ? nib << 4 : nib);
        }
    }
}

static void unpack_nibbles(const uint8_t *in, int64_t rows, int64_t k, int8_t *w) {
    int64_t row_bytes = (k + 1) / 2;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < k; j++) {
            int v = (in[r * row_bytes + j / 2] >> (j % 2 ? 4 : 0)) & 0x0f;
            w[r * k + j] = (int8_t)(v >= 8 ? v - 16 : v); /* sign-extend the nibble */
        }
    }
}

static lowbit_status set_qparams(lb_model *m, const char *key_prefix, const lb_qparams *q) {
    char key[128];
    snprintf(key, sizeof key, "%s_scale", key_prefix);
    lowbit_status st = lb_model_set_f32(m, key, q->scale);
    const int32_t ints[3] = {q->zero_point, q->qmin, q->qmax};
    snprintf(key, sizeof key, "%s_zero_point_range", key_prefix);
    if (st == LOWBIT_OK) st = lb_model_set_i32_array(m, key, ints, 3);
    return st;
}

static lowbit_status set_op_keys(lb_model *m, const lb_int_op *op, int i) {
    char key[96], prefix[96];
    const char *p = ARCH_INT;
    lowbit_status st = lb_model_set_string(m, name_of(key, sizeof key, p, "op.%d.kind", i),
                                           int_kind_names[op->kind]);
    if (st == LOWBIT_OK && op_has_weights(op->kind)) {
        st = lb_model_set_u32(m, name_of(key, sizeof key, p, "op.%d.units", i), (uint32_t)op->out.c);
        if (st == LOWBIT_OK)
            st = lb_model_set_u32(m, name_of(key, sizeof key, p, "op.%d.fused_relu", i),
                                  (uint32_t)op->fused_relu);
    }
    if (st == LOWBIT_OK && (op->kind == LB_INT_CONV2D || op->kind == LB_INT_MAXPOOL ||
                            op->kind == LB_INT_AVGPOOL)) {
        st = lb_model_set_u32(m, name_of(key, sizeof key, p, "op.%d.kernel", i), (uint32_t)op->kernel);
        if (st == LOWBIT_OK)
            st = lb_model_set_u32(m, name_of(key, sizeof key, p, "op.%d.stride", i), (uint32_t)op->stride);
        if (st == LOWBIT_OK)
            st = lb_model_set_u32(m, name_of(key, sizeof key, p, "op.%d.pad", i), (uint32_t)op->pad);
    }
    if (st == LOWBIT_OK) st = set_qparams(m, name_of(prefix, sizeof prefix, p, "op.%d.out", i), &op->out_q);
    if (st == LOWBIT_OK) {
        const int32_t clamp[2] = {op->out_min, op->out_max};
        st = lb_model_set_i32_array(m, name_of(key, sizeof key, p, "op.%d.clamp", i), clamp, 2);
    }
    return st;
}

/* Packed copies of 4-bit weights live here until the file is written. */
typedef struct packed_weights {
    uint8_t *rows[LB_NET_MAX_LAYERS];
} packed_weights;

static lowbit_status add_op_tensors(tensor_list *t, const lb_int_net *net, int i,
                                    packed_weights *packed, lowbit_diag *diag) {
    const lb_int_op *op = &net->ops[i];
    if (!op_has_weights(op->kind)) return LOWBIT_OK;
    char name[64];
    int64_t k = reduction_of(layer_kind_of_op(op->kind), op->kernel, op->in);
    int64_t n = op->out.c;
    const void *weights = op->weights;
    if (packs_nibbles(net->weight_bits) && op->weights) {
        packed->rows[i] = malloc((size_t)(n * stored_row_bytes(k, net->weight_bits)));
        if (!packed->rows[i]) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
        pack_nibbles(op->weights, n, k, packed->rows[i]);
        weights = packed->rows[i];
    }
    lowbit_status st = add_tensor(t, name_of(name, sizeof name, "", "op.%d.weights", i), LOWBIT_TYPE_I8,
                                  stored_row_bytes(k, net->weight_bits), n, weights, diag);
    struct {
        const char *fmt;
        lowbit_type type;
        const void *data;
    } per_channel[5] = {
        {"op.%d.weight_scales", LOWBIT_TYPE_F32, op->weight_scales},
        {"op.%d.bias", LOWBIT_TYPE_I32, op->bias},
        {"op.%d.multiplier", LOWBIT_TYPE_I32, op->multiplier},
        {"op.%d.shift", LOWBIT_TYPE_I32, op->shift},
        {"op.%d.float_bias", LOWBIT_TYPE_F32, op->float_bias},
    };
    for (int j = 0; j < 5 && st == LOWBIT_OK; j++) {
        st = add_tensor(t, name_of(name, sizeof name, "", per_channel[j].fmt, i), per_channel[j].type,
                        n, 1, per_channel[j].data, diag);
    }
    return st;
}

lowbit_status lb_int_net_save(const lb_int_net *net, const char *path, lowbit_diag *diag) {
    lowbit_status st = check_path(path, net, diag);
    if (st != LOWBIT_OK) return st;
    if (net->n_ops < 1 || net->n_ops > LB_NET_MAX_LAYERS || net->weight_bits < 2 ||
        net->weight_bits > 8 || (int)net->mode < 0 || net->mode > LB_INT_MODE_WEIGHT_ONLY) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "an integer model to save needs 1 to %d ops, 2..8 weight bits and a mode",
                           LB_NET_MAX_LAYERS);
    }
    for (int i = 0; i < net->n_ops; i++) {
        if ((int)net->ops[i].kind < 0 || net->ops[i].kind >= LB_INT_OP_KIND_COUNT) {
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "op %d has an invalid kind", i);
        }
    }
    lb_model meta;
    memset(&meta, 0, sizeof meta);
    tensor_list *t = calloc(1, sizeof *t);
    packed_weights packed;
    memset(&packed, 0, sizeof packed);
    if (!t) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    st = lb_model_set_string(&meta, "general.architecture", ARCH_INT);
    if (st == LOWBIT_OK) st = lb_model_set_string(&meta, ARCH_INT ".mode", mode_names[net->mode]);
    if (st == LOWBIT_OK) st = lb_model_set_u32(&meta, ARCH_INT ".weight_bits", (uint32_t)net->weight_bits);
    if (st == LOWBIT_OK) st = lb_model_set_u32(&meta, ARCH_INT ".activation_bits", (uint32_t)net->activation_bits);
    if (st == LOWBIT_OK) st = set_shape(&meta, ARCH_INT ".input_shape", net->input);
    if (st == LOWBIT_OK) st = lb_model_set_u32(&meta, ARCH_INT ".classes", (uint32_t)net->classes);
    if (st == LOWBIT_OK) st = set_qparams(&meta, ARCH_INT ".input", &net->input_q);
    if (st == LOWBIT_OK) st = lb_model_set_u32(&meta, ARCH_INT ".op_count", (uint32_t)net->n_ops);
    for (int i = 0; st == LOWBIT_OK && i < net->n_ops; i++) {
        st = set_op_keys(&meta, &net->ops[i], i);
        if (st != LOWBIT_OK) {
            st = lb_diag_set(diag, st, -1, UINT64_MAX, "cannot describe op %d", i);
            break;
        }
        st = add_op_tensors(t, net, i, &packed, diag);
    }
    if (st == LOWBIT_OK) st = write_file(path, &meta, t, diag);
    for (int i = 0; i < LB_NET_MAX_LAYERS; i++) free(packed.rows[i]);
    free(t);
    lb_model_free(&meta);
    return st;
}

/* ---- reading ----------------------------------------------------------------------------------- */

typedef struct reader {
    const char *path;
    const lb_model *m;
    const char *prefix;
    lowbit_diag *diag;
    int tensors_used;
} reader;

static lowbit_status missing_key(reader *r, const char *key) {
    return bad_file(r->diag, r->path, "missing or mistyped key '%s'", key);
}

static lowbit_status read_u32(reader *r, const char *key, uint32_t max, int32_t *out) {
    uint64_t v;
    if (!lb_kv_get_u64(lb_model_find_kv(r->m, key), &v)) return missing_key(r, key);
    if (v > max) return bad_file(r->diag, r->path, "key '%s' is out of range", key);
    *out = (int32_t)v;
    return LOWBIT_OK;
}

static lowbit_status read_f32(reader *r, const char *key, float *out) {
    const lb_kv *kv = lb_model_find_kv(r->m, key);
    if (!kv || kv->type != LOWBIT_GGUF_FLOAT32 || kv->value_size != 4) return missing_key(r, key);
    *out = lb_bits_to_float(lb_load_u32(kv->value));
    if (!isfinite(*out)) return bad_file(r->diag, r->path, "key '%s' is not finite", key);
    return LOWBIT_OK;
}

/* An array of exactly n 4-byte elements of elem_type; raw little-endian words into out. */
static lowbit_status read_array32(reader *r, const char *key, uint32_t elem_type, int n, uint32_t *out) {
    const lb_kv *kv = lb_model_find_kv(r->m, key);
    if (!kv || kv->type != LOWBIT_GGUF_ARRAY || kv->value_size != 12 + 4 * (uint64_t)n ||
        lb_load_u32(kv->value) != elem_type || lb_load_u64(kv->value + 4) != (uint64_t)n) {
        return missing_key(r, key);
    }
    for (int i = 0; i < n; i++) out[i] = lb_load_u32(kv->value + 12 + 4 * i);
    return LOWBIT_OK;
}

/* The string value of key, compared against a table; its index or -1 (with diag set). */
static int read_enum(reader *r, const char *key, const char *const *names, int n_names) {
    const lb_kv *kv = lb_model_find_kv(r->m, key);
    if (!kv || kv->type != LOWBIT_GGUF_STRING || kv->value_size < 8 ||
        lb_load_u64(kv->value) != kv->value_size - 8) {
        missing_key(r, key);
        return -1;
    }
    size_t len = (size_t)(kv->value_size - 8);
    for (int i = 0; i < n_names; i++) {
        if (names[i] && strlen(names[i]) == len && memcmp(names[i], kv->value + 8, len) == 0) return i;
    }
    bad_file(r->diag, r->path, "key '%s' has an unknown value", key);
    return -1;
}

static lowbit_status read_shape(reader *r, const char *key, lb_shape *out) {
    uint32_t v[3];
    lowbit_status st = read_array32(r, key, LOWBIT_GGUF_INT32, 3, v);
    if (st != LOWBIT_OK) return st;
    *out = (lb_shape){(int32_t)v[0], (int32_t)v[1], (int32_t)v[2]};
    return LOWBIT_OK;
}

/* The tensor `name`, which must have exactly this type and ne0 x ne1 elements. */
static lowbit_status find_tensor(reader *r, const char *name, lowbit_type type, int64_t ne0,
                                 int64_t ne1, const lb_tensor **out) {
    const lb_tensor *t = lb_model_find_tensor(r->m, name);
    if (!t) return bad_file(r->diag, r->path, "missing tensor '%s'", name);
    const lowbit_type_traits *traits = lowbit_type_info(type);
    if (t->type != type || t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1 ||
        t->n_bytes != (uint64_t)(ne0 * ne1) * (uint64_t)traits->block_bytes) {
        char message[200];
        snprintf(message, sizeof message,
                 "tensor '%s' is %lldx%lld of type %d where %lldx%lld of type %d was expected", name,
                 (long long)t->ne[0], (long long)t->ne[1], (int)t->type, (long long)ne0,
                 (long long)ne1, (int)type);
        return bad_file(r->diag, r->path, "%s", message);
    }
    r->tensors_used++;
    *out = t;
    return LOWBIT_OK;
}

/* Copies a F32 tensor into dst, refusing NaN and infinity. */
static lowbit_status read_floats(reader *r, const char *name, int64_t ne0, int64_t ne1, float *dst) {
    const lb_tensor *t;
    lowbit_status st = find_tensor(r, name, LOWBIT_TYPE_F32, ne0, ne1, &t);
    if (st != LOWBIT_OK) return st;
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < ne0 * ne1; i++) {
        dst[i] = lb_bits_to_float(lb_load_u32(p + 4 * i));
        if (!isfinite(dst[i])) return bad_file(r->diag, r->path, "tensor '%s' holds NaN or Inf", name);
    }
    return LOWBIT_OK;
}

static lowbit_status read_ints(reader *r, const char *name, int64_t n, int32_t *dst) {
    const lb_tensor *t;
    lowbit_status st = find_tensor(r, name, LOWBIT_TYPE_I32, n, 1, &t);
    if (st != LOWBIT_OK) return st;
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < n; i++) dst[i] = (int32_t)lb_load_u32(p + 4 * i);
    return LOWBIT_OK;
}

/* Every tensor of the file must have been used: a file with extra tensors is not one we wrote. */
static lowbit_status check_all_tensors_used(reader *r) {
    if (r->tensors_used != r->m->n_tensors) {
        return bad_file(r->diag, r->path, "%s", "the file holds tensors no layer uses");
    }
    return LOWBIT_OK;
}

/* Layer i's spec from its keys (prefix.layer.i.* or prefix.op.i.*). */
static lowbit_status read_spec(reader *r, const char *what, int i, lb_layer_kind kind,
                               lb_layer_spec *spec) {
    char key[96], fmt[48];
    memset(spec, 0, sizeof *spec);
    spec->kind = kind;
    lowbit_status st = LOWBIT_OK;
    if (kind == LB_LAYER_LINEAR || kind == LB_LAYER_CONV2D) {
        snprintf(fmt, sizeof fmt, "%s.%%d.units", what);
        st = read_u32(r, name_of(key, sizeof key, r->prefix, fmt, i), INT32_MAX, &spec->units);
    }
    if (st == LOWBIT_OK &&
        (kind == LB_LAYER_CONV2D || kind == LB_LAYER_MAXPOOL || kind == LB_LAYER_AVGPOOL)) {
        snprintf(fmt, sizeof fmt, "%s.%%d.kernel", what);
        st = read_u32(r, name_of(key, sizeof key, r->prefix, fmt, i), INT32_MAX, &spec->kernel);
        snprintf(fmt, sizeof fmt, "%s.%%d.stride", what);
        if (st == LOWBIT_OK)
            st = read_u32(r, name_of(key, sizeof key, r->prefix, fmt, i), INT32_MAX, &spec->stride);
        snprintf(fmt, sizeof fmt, "%s.%%d.pad", what);
        if (st == LOWBIT_OK)
            st = read_u32(r, name_of(key, sizeof key, r->prefix, fmt, i), INT32_MAX, &spec->pad);
    }
    return st;
}

/* Builds the net the description implies (shapes re-derived and checked by lb_net_build). */
static lowbit_status build_described(reader *r, lb_shape input, const lb_layer_spec *specs, int n,
                                     lb_net *net) {
    lowbit_diag inner = {0};
    lowbit_status st = lb_net_build(net, input, specs, n, 0, &inner);
    if (st != LOWBIT_OK) {
        return lb_diag_set(r->diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX, "%s: %s", r->path,
                           inner.message);
    }
    return LOWBIT_OK;
}

static lowbit_status read_layer_values(reader *r, lb_layer *l, int i) {
    char key[96], name[64];
    lowbit_status st = LOWBIT_OK;
    if (l->kind == LB_LAYER_LINEAR || l->kind == LB_LAYER_CONV2D) {
        int64_t k = reduction_of(l->kind, l->kernel, l->in);
        st = read_floats(r, name_of(name, sizeof name, "", "layer.%d.weight", i), k, l->out.c, l->weight);
        if (st == LOWBIT_OK)
            st = read_floats(r, name_of(name, sizeof name, "", "layer.%d.bias", i), l->out.c, 1, l->bias);
    } else if (l->kind == LB_LAYER_BATCHNORM) {
        const char *names[4] = {"layer.%d.gamma", "layer.%d.bias", "layer.%d.running_mean",
                                "layer.%d.running_var"};
        float *data[4] = {l->gamma, l->bias, l->running_mean, l->running_var};
        for (int j = 0; j < 4 && st == LOWBIT_OK; j++) {
            st = read_floats(r, name_of(name, sizeof name, "", names[j], i), l->in.c, 1, data[j]);
        }
        if (st == LOWBIT_OK) st = read_f32(r, name_of(key, sizeof key, r->prefix, "layer.%d.eps", i), &l->eps);
        if (st == LOWBIT_OK)
            st = read_f32(r, name_of(key, sizeof key, r->prefix, "layer.%d.momentum", i), &l->momentum);
    }
    name_of(key, sizeof key, r->prefix, "layer.%d.range", i);
    if (st == LOWBIT_OK && lb_model_find_kv(r->m, key)) {
        uint32_t v[2];
        st = read_array32(r, key, LOWBIT_GGUF_FLOAT32, 2, v);
        if (st != LOWBIT_OK) return st;
        l->has_range = 1;
        l->range_lo = lb_bits_to_float(v[0]);
        l->range_hi = lb_bits_to_float(v[1]);
        if (!(l->range_lo <= l->range_hi && isfinite(l->range_lo) &&
                                 isfinite(l->range_hi))) {
            st = bad_file(r->diag, r->path, "key '%s' is not a finite range", key);
        }
    }
    return st;
}

static lowbit_status load_float(reader *r, lb_net *net) {
    lb_shape input;
    int32_t n_layers = 0, classes = 0;
    lowbit_status st = read_shape(r, ARCH_FLOAT ".input_shape", &input);
    if (st == LOWBIT_OK) st = read_u32(r, ARCH_FLOAT ".classes", INT32_MAX, &classes);
    if (st == LOWBIT_OK) st = read_u32(r, ARCH_FLOAT ".layer_count", LB_NET_MAX_LAYERS, &n_layers);
    if (st != LOWBIT_OK) return st;
    lb_layer_spec specs[LB_NET_MAX_LAYERS];
    for (int i = 0; i < n_layers; i++) {
        char key[96];
        int kind = read_enum(r, name_of(key, sizeof key, r->prefix, "layer.%d.kind", i),
                             (const char *const[]){"linear", "conv2d", "batchnorm", "relu", "relu6",
                                                   "maxpool", "avgpool", "flatten"},
                             LB_LAYER_KIND_COUNT);
        if (kind < 0) return LOWBIT_ERR_BAD_FILE;
        st = read_spec(r, "layer", i, (lb_layer_kind)kind, &specs[i]);
        if (st != LOWBIT_OK) return st;
    }
    st = build_described(r, input, specs, n_layers, net);
    if (st != LOWBIT_OK) return st;
    if (net->classes != classes) {
        st = bad_file(r->diag, r->path, "%s", "the class count disagrees with the last layer");
    }
    for (int i = 0; st == LOWBIT_OK && i < n_layers; i++) st = read_layer_values(r, &net->layers[i], i);
    if (st == LOWBIT_OK) st = check_all_tensors_used(r);
    if (st != LOWBIT_OK) lb_net_free(net);
    return st;
}

/* ---- integer models: reading -------------------------------------------------------------- */

static lowbit_status read_qparams(reader *r, const char *key_prefix, int activation_bits,
                                  lb_qparams *q) {
    char key[128];
    snprintf(key, sizeof key, "%s_scale", key_prefix);
    lowbit_status st = read_f32(r, key, &q->scale);
    if (st != LOWBIT_OK) return st;
    uint32_t v[3];
    snprintf(key, sizeof key, "%s_zero_point_range", key_prefix);
    st = read_array32(r, key, LOWBIT_GGUF_INT32, 3, v);
    if (st != LOWBIT_OK) return st;
    q->zero_point = (int32_t)v[0];
    q->qmin = (int32_t)v[1];
    q->qmax = (int32_t)v[2];
    /* uint8 storage whatever activation_bits: pools before the first weighted op keep the
       input's [0, 255] */
    (void)activation_bits;
    /* every code's value (q - zero_point) * scale, |q - zero_point| <= 255, must be a finite
       float: the static model's logits are these values */
    if (!(q->scale > 0.0f) || !(q->scale <= FLT_MAX / 256.0f) || q->qmin < 0 || q->qmax > 255 ||
        q->qmin >= q->qmax || q->zero_point < q->qmin || q->zero_point > q->qmax) {
        return bad_file(r->diag, r->path, "quantization parameters '%s' are out of range", key_prefix);
    }
    return LOWBIT_OK;
}

/* One block for every array of every weighted op, as the converter lays them out. */
static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

static lowbit_status allocate_int_storage(lb_int_net *net, lowbit_diag *diag) {
    size_t total = 8;
    for (int i = 0; i < net->n_ops; i++) {
        const lb_int_op *op = &net->ops[i];
        if (!op_has_weights(op->kind)) continue;
        size_t k = (size_t)reduction_of(layer_kind_of_op(op->kind), op->kernel, op->in);
        total += align8((size_t)op->out.c * k) + 6 * align8((size_t)op->out.c * 4);
    }
    uint8_t *block = calloc(1, total);
    if (!block) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    net->storage = block;
    for (int i = 0; i < net->n_ops; i++) {
        lb_int_op *op = &net->ops[i];
        if (!op_has_weights(op->kind)) continue;
        size_t n = (size_t)op->out.c;
        size_t k = (size_t)reduction_of(layer_kind_of_op(op->kind), op->kernel, op->in);
        op->weights = (int8_t *)block;
        block += align8(n * k);
        void **arrays[6] = {(void **)&op->weight_scales, (void **)&op->weight_sums, (void **)&op->bias,
                            (void **)&op->float_bias, (void **)&op->multiplier, (void **)&op->shift};
        for (int j = 0; j < 6; j++) {
            *arrays[j] = block;
            block += align8(n * 4);
        }
    }
    return LOWBIT_OK;
}

static lowbit_status read_op_weights(reader *r, const lb_int_net *net, lb_int_op *op, int i) {
    char name[64];
    int64_t k = reduction_of(layer_kind_of_op(op->kind), op->kernel, op->in);
    int64_t n = op->out.c;
    if (k > LB_INT8_LINEAR_MAX_K) {
        return bad_file(r->diag, r->path, "%s", "a layer's reduction is too long for int32 sums");
    }
    const lb_tensor *t;
    lowbit_status st = find_tensor(r, name_of(name, sizeof name, "", "op.%d.weights", i), LOWBIT_TYPE_I8,
                                   stored_row_bytes(k, net->weight_bits), n, &t);
    if (st != LOWBIT_OK) return st;
    if (packs_nibbles(net->weight_bits)) {
        unpack_nibbles(t->data, n, k, op->weights);
    } else {
        memcpy(op->weights, t->data, (size_t)(n * k));
    }
    /* symmetric weights: |w| <= 2^(bits-1) - 1, which also bounds the int32 accumulators */
    int limit = (1 << (net->weight_bits - 1)) - 1;
    for (int64_t j = 0; j < n * k; j++) {
        if (op->weights[j] < -limit || op->weights[j] > limit) {
            return bad_file(r->diag, r->path, "tensor '%s' holds a weight outside its bit width", name);
        }
    }
    for (int64_t o = 0; o < n; o++) {
        int32_t sum = 0;
        for (int64_t j = 0; j < k; j++) sum += op->weights[o * k + j];
        op->weight_sums[o] = sum;
    }
    st = read_floats(r, name_of(name, sizeof name, "", "op.%d.weight_scales", i), n, 1, op->weight_scales);
    if (st == LOWBIT_OK) st = read_ints(r, name_of(name, sizeof name, "", "op.%d.bias", i), n, op->bias);
    if (st == LOWBIT_OK) st = read_ints(r, name_of(name, sizeof name, "", "op.%d.multiplier", i), n, op->multiplier);
    if (st == LOWBIT_OK) st = read_ints(r, name_of(name, sizeof name, "", "op.%d.shift", i), n, op->shift);
    if (st == LOWBIT_OK) st = read_floats(r, name_of(name, sizeof name, "", "op.%d.float_bias", i), n, 1, op->float_bias);
    for (int64_t o = 0; st == LOWBIT_OK && o < n; o++) {
        if (op->multiplier[o] < 0 || op->shift[o] < LB_MULTIPLIER_SHIFT_MIN ||
            op->shift[o] > LB_MULTIPLIER_SHIFT_MAX || !(op->weight_scales[o] >= 0.0f)) {
            st = bad_file(r->diag, r->path, "op %s has an invalid multiplier, shift or scale",
                          name_of(name, sizeof name, "", "%d", i));
        }
    }
    return st;
}

static lowbit_status read_op_keys(reader *r, const lb_int_net *net, lb_int_op *op, int i) {
    char key[96], prefix[96];
    lowbit_status st = read_qparams(r, name_of(prefix, sizeof prefix, r->prefix, "op.%d.out", i),
                                    net->activation_bits, &op->out_q);
    uint32_t clamp[2];
    if (st == LOWBIT_OK) st = read_array32(r, name_of(key, sizeof key, r->prefix, "op.%d.clamp", i), LOWBIT_GGUF_INT32, 2, clamp);
    if (st != LOWBIT_OK) return st;
    op->out_min = (int32_t)clamp[0];
    op->out_max = (int32_t)clamp[1];
    if (op->out_min < op->out_q.qmin || op->out_max > op->out_q.qmax || op->out_min > op->out_max) {
        return bad_file(r->diag, r->path, "op %s has a clamp outside its range", name_of(key, sizeof key, "", "%d", i));
    }
    if (op_has_weights(op->kind)) {
        int32_t relu = 0;
        st = read_u32(r, name_of(key, sizeof key, r->prefix, "op.%d.fused_relu", i), 6, &relu);
        if (st == LOWBIT_OK && relu != 0 && relu != 1 && relu != 6) {
            st = bad_file(r->diag, r->path, "key '%s' is not 0, 1 or 6", key);
        }
        op->fused_relu = relu;
    }
    return st;
}

static lowbit_status load_int(reader *r, lb_int_net *net) {
    memset(net, 0, sizeof *net);
    int mode = read_enum(r, ARCH_INT ".mode", mode_names, LB_ARRAY_LEN(mode_names));
    if (mode < 0) return LOWBIT_ERR_BAD_FILE;
    net->mode = (lb_int_mode)mode;
    int32_t n_ops = 0;
    lowbit_status st = read_u32(r, ARCH_INT ".weight_bits", 8, &net->weight_bits);
    if (st == LOWBIT_OK) st = read_u32(r, ARCH_INT ".activation_bits", 8, &net->activation_bits);
    if (st == LOWBIT_OK && (net->weight_bits < 2 || net->activation_bits < 2)) {
        st = bad_file(r->diag, r->path, "%s", "weight and activation bits must lie in 2..8");
    }
    if (st == LOWBIT_OK) st = read_shape(r, ARCH_INT ".input_shape", &net->input);
    if (st == LOWBIT_OK) st = read_u32(r, ARCH_INT ".classes", INT32_MAX, &net->classes);
    if (st == LOWBIT_OK) st = read_qparams(r, ARCH_INT ".input", 8, &net->input_q);
    if (st == LOWBIT_OK) st = read_u32(r, ARCH_INT ".op_count", LB_NET_MAX_LAYERS, &n_ops);
    if (st != LOWBIT_OK) return st;
    lb_layer_spec specs[LB_NET_MAX_LAYERS];
    for (int i = 0; i < n_ops; i++) {
        char key[96];
        int kind = read_enum(r, name_of(key, sizeof key, r->prefix, "op.%d.kind", i), int_kind_names,
                             LB_INT_OP_KIND_COUNT);
        if (kind < 0) return LOWBIT_ERR_BAD_FILE;
        net->ops[i].kind = (lb_int_op_kind)kind;
        st = read_spec(r, "op", i, layer_kind_of_op((lb_int_op_kind)kind), &specs[i]);
        if (st != LOWBIT_OK) return st;
    }
    /* the shapes: exactly those of the float net this description would build */
    lb_net shapes;
    st = build_described(r, net->input, specs, n_ops, &shapes);
    if (st != LOWBIT_OK) return st;
    net->n_ops = n_ops;
    for (int i = 0; i < n_ops; i++) {
        net->ops[i].in = shapes.layers[i].in;
        net->ops[i].out = shapes.layers[i].out;
        net->ops[i].kernel = shapes.layers[i].kernel;
        net->ops[i].stride = shapes.layers[i].stride;
        net->ops[i].pad = shapes.layers[i].pad;
    }
    if (shapes.classes != net->classes) {
        st = bad_file(r->diag, r->path, "%s", "the class count disagrees with the last op");
    }
    lb_net_free(&shapes);
    if (st == LOWBIT_OK) st = allocate_int_storage(net, r->diag);
    for (int i = 0; st == LOWBIT_OK && i < n_ops; i++) {
        st = read_op_keys(r, net, &net->ops[i], i);
        if (st == LOWBIT_OK && op_has_weights(net->ops[i].kind)) {
            st = read_op_weights(r, net, &net->ops[i], i);
        }
    }
    if (st == LOWBIT_OK) st = check_all_tensors_used(r);
    if (st != LOWBIT_OK) {
        free(net->storage);
        memset(net, 0, sizeof *net);
    }
    return st;
}

/* Loads from a model already read (a file's map or caller's memory); `path` names it in messages. */
static lowbit_status load_from_model(lb_model *m, const char *path, int *is_int, lb_net *net,
                                     lb_int_net *int_net, lowbit_diag *diag) {
    reader r = {.path = path, .m = m, .diag = diag};
    const char *const archs[2] = {ARCH_FLOAT, ARCH_INT};
    int arch = read_enum(&r, "general.architecture", archs, 2);
    lowbit_status st;
    if (arch < 0) {
        st = bad_file(diag, path, "%s", "not a lowbit classifier (general.architecture)");
    } else if (arch == 0) {
        r.prefix = ARCH_FLOAT;
        st = load_float(&r, net);
    } else {
        r.prefix = ARCH_INT;
        st = load_int(&r, int_net);
        if (st == LOWBIT_OK) st = lb_int_net_prepare(int_net, diag);
        if (st == LOWBIT_OK) *is_int = 1;
    }
    lb_model_free(m);
    if (st != LOWBIT_OK) { /* nothing half-loaded is left behind */
        *is_int = 0;
        free(int_net->storage);
        memset(int_net, 0, sizeof *int_net);
        lb_net_free(net);
    }
    return st;
}

static lowbit_status start_loading(int *is_int, lb_net *net, lb_int_net *int_net,
                                   lowbit_diag *diag) {
    if (!is_int || !net || !int_net) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "loading needs a source and both outputs");
    }
    *is_int = 0;
    memset(net, 0, sizeof *net);
    memset(int_net, 0, sizeof *int_net);
    return LOWBIT_OK;
}

/* A GGUF reading failure other than I/O or memory is a bad file, whatever the reader called it. */
static lowbit_status as_bad_file(lowbit_status st, lowbit_diag *diag) {
    if (st != LOWBIT_ERR_IO && st != LOWBIT_ERR_NO_MEMORY) st = LOWBIT_ERR_BAD_FILE;
    if (diag) diag->status = st;
    return st;
}

lowbit_status lb_classifier_load(const char *path, int *is_int, lb_net *net, lb_int_net *int_net,
                                 lowbit_diag *diag) {
    lowbit_status st = path ? start_loading(is_int, net, int_net, diag)
                            : lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                                          "loading needs a path");
    if (st != LOWBIT_OK) return st;
    lb_model m;
    memset(&m, 0, sizeof m);
    st = lb_read_gguf_model(path, &m, diag);
    if (st != LOWBIT_OK) return as_bad_file(st, diag);
    return load_from_model(&m, path, is_int, net, int_net, diag);
}

lowbit_status lb_classifier_load_memory(const void *data, size_t size, int *is_int, lb_net *net,
                                        lb_int_net *int_net, lowbit_diag *diag) {
    lowbit_status st = data ? start_loading(is_int, net, int_net, diag)
                            : lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                                          "loading needs bytes");
    if (st != LOWBIT_OK) return st;
    lb_model m;
    memset(&m, 0, sizeof m);
    st = lb_read_gguf_model_memory(data, size, &m, diag);
    if (st != LOWBIT_OK) return as_bad_file(st, diag);
    return load_from_model(&m, "(memory)", is_int, net, int_net, diag);
}
