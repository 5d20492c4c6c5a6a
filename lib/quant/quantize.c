/*
 * Quantizing a whole model: the plan (every tensor's type, the output metadata and the file's
 * layout) and its execution, streamed tensor by tensor into an atomically written GGUF file.
 * Peak memory is one tensor as floats plus its encoding, whatever the model's size.
 */
#include "../calib/imatrix.h"
#include "../io/gguf_write.h"
#include "plan.h"

#include <stdio.h>
#include <stdlib.h>

#define GGUF_ALIGNMENT 32
#define QUANTIZATION_VERSION 2 /* the block layouts' version GGUF readers check */

struct lowbit_plan {
    lowbit_tensor_plan *tensors;
    int64_t n_tensors;
    lb_model metadata;      /* the output's key-value pairs (only the kvs are used) */
    lb_out_tensor *layout;  /* the output's tensor infos, offsets filled */
    uint64_t file_size;
    uint32_t file_type;
    uint32_t alignment;
    lb_imatrix *imatrix;    /* NULL without --imatrix */
    const float **importance; /* per tensor: the imatrix weights, or NULL */
};

lowbit_status lowbit_preset_check(const char *preset, lowbit_diag *diag) {
    return lb_preset_check(preset, diag);
}

void lowbit_quantize_options_init(lowbit_quantize_options *o) {
    memset(o, 0, sizeof *o);
    o->output_tensor_type = -1;
    o->token_embedding_type = -1;
}

void lowbit_plan_destroy(lowbit_plan *plan) {
    if (!plan) return;
    free(plan->tensors);
    free(plan->layout);
    free((void *)plan->importance);
    lb_model_free(&plan->metadata);
    lb_imatrix_free(plan->imatrix);
    free(plan);
}

int64_t lowbit_plan_tensor_count(const lowbit_plan *plan) { return plan ? plan->n_tensors : 0; }

const lowbit_tensor_plan *lowbit_plan_tensor(const lowbit_plan *plan, int64_t i) {
    return (plan && i >= 0 && i < plan->n_tensors) ? &plan->tensors[i] : NULL;
}

uint64_t lowbit_plan_file_size(const lowbit_plan *plan) { return plan ? plan->file_size : 0; }
uint32_t lowbit_plan_file_type(const lowbit_plan *plan) { return plan ? plan->file_type : 0; }

/* Looks up each quantized tensor's importance weights; an entry of the wrong size is an error. */
static lowbit_status attach_importance(lowbit_plan *plan, lowbit_diag *diag) {
    plan->importance = calloc((size_t)(plan->n_tensors ? plan->n_tensors : 1), sizeof *plan->importance);
    if (!plan->importance) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    for (int64_t i = 0; i < plan->n_tensors; i++) {
        lowbit_tensor_plan *t = &plan->tensors[i];
        const lowbit_type_traits *traits = lowbit_type_info(t->type);
        if (!traits || !traits->is_quantized || t->type == t->source_type) continue;
        int error = 0;
        plan->importance[i] = lb_imatrix_find(plan->imatrix, t->name, t->ne[0], 0, &error, diag);
        if (error) return diag ? diag->status : LOWBIT_ERR_BAD_FILE;
        t->uses_importance = plan->importance[i] != NULL;
    }
    return LOWBIT_OK;
}

/* The output's metadata: the source's, with the keys a quantizer owns brought up to date. */
static lowbit_status build_metadata(lowbit_plan *plan, const lb_model *source,
                                    const lowbit_quantize_options *options) {
    lb_model *out = &plan->metadata;
    lowbit_status st = LOWBIT_OK;
    for (int64_t i = 0; st == LOWBIT_OK && i < source->n_kv; i++) {
        const lb_kv *kv = &source->kvs[i];
        st = lb_model_set_raw(out, kv->key, kv->type, kv->value, kv->value_size);
    }
    if (st == LOWBIT_OK) st = lb_model_set_u32(out, "general.quantization_version", QUANTIZATION_VERSION);
    if (st == LOWBIT_OK) st = lb_model_set_u32(out, "general.file_type", plan->file_type);
    if (st == LOWBIT_OK) st = lb_model_set_string(out, "general.quantized_by", "lowbit " LOWBIT_VERSION_STRING);
    if (st == LOWBIT_OK && plan->imatrix) {
        int64_t entries = 0;
        for (int64_t i = 0; i < plan->n_tensors; i++) entries += plan->tensors[i].uses_importance;
        st = lb_model_set_string(out, "quantize.imatrix.file", options->imatrix_path);
        if (st == LOWBIT_OK) st = lb_model_set_string(out, "quantize.imatrix.dataset", lb_imatrix_dataset(plan->imatrix));
        if (st == LOWBIT_OK) st = lb_model_set_i32(out, "quantize.imatrix.entries_count", (int32_t)entries);
        if (st == LOWBIT_OK) st = lb_model_set_i32(out, "quantize.imatrix.chunks_count", (int32_t)lb_imatrix_chunk_count(plan->imatrix));
    }
    return st;
}

static uint32_t source_alignment(const lb_model *m) {
    uint64_t alignment = 0;
    return lb_kv_get_u64(lb_model_find_kv(m, "general.alignment"), &alignment) && alignment > 0 &&
                   alignment <= (1u << 20)
               ? (uint32_t)alignment
               : GGUF_ALIGNMENT;
}

static lowbit_status lay_out(lowbit_plan *plan) {
    plan->layout = calloc((size_t)(plan->n_tensors ? plan->n_tensors : 1), sizeof *plan->layout);
    if (!plan->layout) return LOWBIT_ERR_NO_MEMORY;
    for (int64_t i = 0; i < plan->n_tensors; i++) {
        const lowbit_tensor_plan *t = &plan->tensors[i];
        lb_out_tensor *o = &plan->layout[i];
        o->name = t->name;
        o->type = t->type;
        o->n_dims = t->n_dims;
        memcpy(o->ne, t->ne, sizeof o->ne);
        o->n_bytes = t->n_bytes;
    }
    lowbit_status st = lb_gguf_layout(plan->metadata.kvs, plan->metadata.n_kv, plan->layout,
                                      plan->n_tensors, plan->alignment, &plan->file_size);
    for (int64_t i = 0; st == LOWBIT_OK && i < plan->n_tensors; i++) {
        plan->tensors[i].offset = plan->layout[i].offset;
    }
    return st;
}

lowbit_status lowbit_plan_create(const lowbit_model *model, const lowbit_quantize_options *options,
                                 lowbit_plan **out, lowbit_diag *diag) {
    if (!model || !options || !out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    const lb_model *m = lb_model_of(model);
    const lowbit_status preset_status = lb_preset_check(options->preset, diag);
    if (preset_status != LOWBIT_OK) return preset_status;
    const lb_preset *preset = lb_preset_find(options->preset);
    lowbit_plan *plan = calloc(1, sizeof *plan);
    if (!plan) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    plan->n_tensors = m->n_tensors;
    plan->file_type = preset->file_type;
    plan->alignment = source_alignment(m);
    plan->tensors = calloc((size_t)(m->n_tensors ? m->n_tensors : 1), sizeof *plan->tensors);
    lowbit_status st = plan->tensors ? LOWBIT_OK : lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    if (st == LOWBIT_OK && options->imatrix_path) {
        st = lb_imatrix_load(options->imatrix_path, &plan->imatrix, diag);
    }
    if (st == LOWBIT_OK) st = lb_plan_types(m, options, plan->imatrix != NULL, plan->tensors, diag);
    if (st == LOWBIT_OK && plan->imatrix) st = attach_importance(plan, diag);
    if (st == LOWBIT_OK && build_metadata(plan, m, options) != LOWBIT_OK) {
        st = lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    }
    if (st == LOWBIT_OK && lay_out(plan) != LOWBIT_OK) {
        st = lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "cannot lay out the output file");
    }
    if (st != LOWBIT_OK) {
        lowbit_plan_destroy(plan);
        return st;
    }
    *out = plan;
    return LOWBIT_OK;
}

/* ---- execution ---- */

typedef struct work_buffers {
    float *floats;
    uint8_t *encoded;
    size_t float_capacity, encoded_capacity;
} work_buffers;

static int ensure_capacity(void **buf, size_t *capacity, size_t wanted) {
    if (wanted <= *capacity) return 1;
    void *grown = realloc(*buf, wanted ? wanted : 1);
    if (!grown) return 0;
    *buf = grown;
    *capacity = wanted;
    return 1;
}

/* Prefixes a diag message with the tensor it is about (cut to the message's size). */
static lowbit_status about_tensor(lowbit_diag *diag, lowbit_status st, const char *name) {
    if (diag) {
        char message[2 * sizeof diag->message + LB_MAX_TENSOR_NAME];
        const int n = snprintf(message, sizeof message, "tensor '%s': %s", name, diag->message);
        const size_t keep = n < 0 ? 0 : LB_MIN((size_t)n, sizeof diag->message - 1);
        memcpy(diag->message, message, keep);
        diag->message[keep] = '\0';
        diag->status = st;
    }
    return st;
}

/* A tensor whose bytes go out as they are: same type, no reordering of rows. */
static int copies_verbatim(const lb_tensor *source, const lowbit_tensor_plan *t) {
    return source->type == t->type && source->permute_heads == 0;
}

/* Finds the first NaN/Inf of a float tensor (F32, F16 or BF16) stored as it is, row by row. */
static lowbit_status check_finite_floats(const lb_tensor *t, lowbit_diag *diag) {
    const int64_t rows = lb_tensor_rows(t), n = t->ne[0];
    const size_t row_bytes = lowbit_row_bytes(t->type, n);
    float *row = malloc((size_t)n * sizeof *row);
    if (!row) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    lowbit_status st = LOWBIT_OK;
    for (int64_t r = 0; r < rows && st == LOWBIT_OK; r++) {
        lowbit_type_info(t->type)->dequantize((const uint8_t *)t->data + (size_t)r * row_bytes, row, n);
        for (int64_t c = 0; c < n; c++) {
            if (!isfinite(row[c])) {
                st = lb_diag_set(diag, LOWBIT_ERR_NONFINITE, r, UINT64_MAX,
                                 "row %lld holds NaN or Inf (column %lld)", (long long)r, (long long)c);
                break;
            }
        }
    }
    free(row);
    return st;
}

static lowbit_status encode_tensor(const lb_model *m, int64_t i, const lowbit_tensor_plan *t,
                                   const float *importance, lowbit_pool *pool, work_buffers *w,
                                   const void **bytes, lowbit_diag *diag) {
    const lb_tensor *source = &m->tensors[i];
    if (copies_verbatim(source, t) && !lowbit_type_info(t->type)->is_quantized) {
        /* float tensors copied as they are still get the NaN/Inf check every encoded one gets */
        const lowbit_status st = check_finite_floats(source, diag);
        if (st != LOWBIT_OK) return about_tensor(diag, st, t->name);
    }
    if (copies_verbatim(source, t)) {
        *bytes = source->data;
        return LOWBIT_OK;
    }
    const int64_t rows = lb_tensor_rows(source), n = source->ne[0];
    if (!ensure_capacity((void **)&w->floats, &w->float_capacity, (size_t)(rows * n) * sizeof(float)) ||
        !ensure_capacity((void **)&w->encoded, &w->encoded_capacity, (size_t)t->n_bytes)) {
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory for tensor '%s'", t->name);
    }
    lowbit_status st = lb_model_read_f32(m, i, w->floats, diag);
    if (st == LOWBIT_OK) {
        st = lowbit_quantize_rows(t->type, w->floats, w->encoded, rows, n, importance, pool, diag);
    }
    if (st != LOWBIT_OK) return about_tensor(diag, st, t->name);
    *bytes = w->encoded;
    return LOWBIT_OK;
}

static int cancelled(const lowbit_quantize_options *options) {
    return options->cancel && *options->cancel;
}

lowbit_status lowbit_quantize_model(const lowbit_model *model, const lowbit_plan *plan,
                                    const char *out_path, const lowbit_quantize_options *options,
                                    lowbit_diag *diag) {
    if (!model || !plan || !out_path || !options) return LOWBIT_ERR_INVALID_ARGUMENT;
    const lb_model *m = lb_model_of(model);
    if (m->n_tensors != plan->n_tensors) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "the plan is for another model");
    }
    lowbit_pool *pool = NULL;
    lowbit_status st = lowbit_pool_create(options->n_threads, &pool);
    if (st != LOWBIT_OK) return lb_diag_set(diag, st, -1, UINT64_MAX, "cannot start threads");
    lb_gguf_writer *writer = NULL;
    st = lb_gguf_writer_open(out_path, plan->metadata.kvs, plan->metadata.n_kv, plan->layout,
                             plan->n_tensors, plan->alignment, &writer, diag);
    work_buffers buffers = {0};
    uint64_t done = 0;
    for (int64_t i = 0; st == LOWBIT_OK && i < plan->n_tensors; i++) {
        const void *bytes = NULL;
        if (cancelled(options)) {
            st = lb_diag_set(diag, LOWBIT_ERR_CANCELLED, -1, UINT64_MAX, "cancelled; nothing was written");
            break;
        }
        st = encode_tensor(m, i, &plan->tensors[i], plan->importance ? plan->importance[i] : NULL,
                           pool, &buffers, &bytes, diag);
        if (st == LOWBIT_OK) st = lb_gguf_writer_write(writer, bytes, plan->tensors[i].n_bytes, diag);
        lb_model_release_tensor(m, i);
        done += plan->tensors[i].n_bytes;
        if (st == LOWBIT_OK && options->progress) {
            options->progress(options->progress_ctx, i, plan->n_tensors, done, plan->file_size);
        }
    }
    if (st == LOWBIT_OK && cancelled(options)) {
        st = lb_diag_set(diag, LOWBIT_ERR_CANCELLED, -1, UINT64_MAX, "cancelled; nothing was written");
    }
    if (st == LOWBIT_OK) {
        st = lb_gguf_writer_commit(writer, diag);
    } else {
        lb_gguf_writer_abort(writer);
    }
    free(buffers.floats);
    free(buffers.encoded);
    lowbit_pool_destroy(pool);
    return st;
}
