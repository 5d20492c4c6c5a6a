/* The public face of lb_model: opening any supported file, listing tensors and metadata. */
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct lowbit_model {
    lb_model m;
};

/* The first bytes decide the reader: GGUF's magic, or safetensors' u64 header length followed
   by '{'. Anything else is tried as a llama2.c checkpoint, whose reader checks that the header
   and the file size agree (it has no magic of its own). */
static lowbit_status detect_format(const char *path, lowbit_model_format *format,
                                   lowbit_diag *diag) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return lb_diag_set(diag, LOWBIT_ERR_IO, -1, UINT64_MAX, "cannot open '%s': %s", path,
                           strerror(errno));
    }
    uint8_t head[9] = {0};
    const ssize_t got = read(fd, head, sizeof head);
    close(fd);
    if (got < 0) {
        return lb_diag_set(diag, LOWBIT_ERR_IO, -1, UINT64_MAX, "cannot read '%s': %s", path,
                           strerror(errno));
    }
    if (got >= 4 && memcmp(head, "GGUF", 4) == 0) {
        *format = LOWBIT_MODEL_GGUF;
    } else if (got == 9 && head[8] == '{' && head[6] == 0 && head[7] == 0) {
        *format = LOWBIT_MODEL_SAFETENSORS;
    } else {
        *format = LOWBIT_MODEL_LLAMA2C;
    }
    return LOWBIT_OK;
}

/* llama2.c checkpoints have no magic: when one does not read either, the file may be anything,
   so the message says what was tried before the llama2.c reader's own complaint. */
static void explain_unrecognised(lowbit_diag *diag) {
    if (!diag) return;
    char reason[sizeof diag->message];
    memcpy(reason, diag->message, sizeof reason);
    snprintf(diag->message, sizeof diag->message,
             "not a recognised model file: no GGUF magic, no safetensors header, and not a "
             "llama2.c checkpoint (%.150s)", reason);
}

lowbit_status lowbit_model_open(const char *path, const lowbit_open_options *options,
                                lowbit_model **out, lowbit_diag *diag) {
    if (!path || !out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    lowbit_model_format format = LOWBIT_MODEL_LLAMA2C;
    lowbit_status st = detect_format(path, &format, diag);
    if (st != LOWBIT_OK) return st;
    lowbit_model *model = calloc(1, sizeof *model);
    if (!model) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    switch (format) {
    case LOWBIT_MODEL_GGUF:
        st = lb_read_gguf_model(path, &model->m, diag);
        break;
    case LOWBIT_MODEL_SAFETENSORS:
        st = lb_read_safetensors_model(path, &model->m, diag);
        break;
    case LOWBIT_MODEL_LLAMA2C:
        st = lb_read_llama2c_model(path, options ? options->tokenizer_path : NULL, &model->m, diag);
        if (st == LOWBIT_ERR_BAD_FILE) explain_unrecognised(diag);
        break;
    }
    if (st != LOWBIT_OK) {
        free(model);
        return st;
    }
    model->m.format = (int)format;
    *out = model;
    return LOWBIT_OK;
}

void lowbit_model_close(lowbit_model *model) {
    if (!model) return;
    lb_model_free(&model->m);
    free(model);
}

const lb_model *lb_model_of(const lowbit_model *model) { return model ? &model->m : NULL; }

lowbit_model_format lowbit_model_get_format(const lowbit_model *model) {
    return (lowbit_model_format)model->m.format;
}

const char *lowbit_model_format_name(lowbit_model_format format) {
    switch (format) {
    case LOWBIT_MODEL_GGUF: return "gguf";
    case LOWBIT_MODEL_LLAMA2C: return "llama2.c";
    case LOWBIT_MODEL_SAFETENSORS: return "safetensors";
    }
    return "unknown";
}

int64_t lowbit_model_tensor_count(const lowbit_model *model) {
    return model ? model->m.n_tensors : 0;
}

lowbit_status lowbit_model_tensor(const lowbit_model *model, int64_t i, lowbit_tensor_info *info) {
    if (!model || !info || i < 0 || i >= model->m.n_tensors) return LOWBIT_ERR_INVALID_ARGUMENT;
    const lb_tensor *t = &model->m.tensors[i];
    info->name = t->name;
    info->type = t->type;
    info->n_dims = t->n_dims;
    int64_t elements = 1;
    for (int d = 0; d < 4; d++) {
        info->ne[d] = t->ne[d];
        elements *= t->ne[d];
    }
    info->n_elements = elements;
    info->n_bytes = t->n_bytes;
    info->data = t->data;
    return LOWBIT_OK;
}

lowbit_status lowbit_model_read_f32(const lowbit_model *model, int64_t i, float *dst,
                                    lowbit_diag *diag) {
    if (!model || !dst) return LOWBIT_ERR_INVALID_ARGUMENT;
    return lb_model_read_f32(&model->m, i, dst, diag);
}

int64_t lowbit_model_kv_count(const lowbit_model *model) { return model ? model->m.n_kv : 0; }

lowbit_status lowbit_model_kv(const lowbit_model *model, int64_t i, lowbit_kv_info *info) {
    if (!model || !info || i < 0 || i >= model->m.n_kv) return LOWBIT_ERR_INVALID_ARGUMENT;
    const lb_kv *kv = &model->m.kvs[i];
    info->key = kv->key;
    info->type = (lowbit_gguf_value_type)kv->type;
    info->value = kv->value;
    info->value_size = kv->value_size;
    info->array_type = 0;
    info->array_count = 0;
    if (kv->type == LOWBIT_GGUF_ARRAY && kv->value_size >= 12) {
        info->array_type = (lowbit_gguf_value_type)lb_load_le(kv->value, 4);
        info->array_count = lb_load_le(kv->value + 4, 8);
    }
    return LOWBIT_OK;
}

/* ---- rendering values for people ---- */

typedef struct text {
    char *buf;
    size_t size, length; /* length may exceed size: what would have been written */
} text;

static void put_text(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put_text(text *t, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    const size_t room = t->length < t->size ? t->size - t->length : 0;
    const int n = vsnprintf(room ? t->buf + t->length : NULL, room, fmt, args);
    va_end(args);
    if (n > 0) t->length += (size_t)n;
}

/* A string, quoted, with control characters and quotes escaped, cut after max_chars. */
static void put_quoted(text *t, const uint8_t *s, uint64_t n, uint64_t max_chars) {
    put_text(t, "\"");
    for (uint64_t i = 0; i < n && i < max_chars; i++) {
        const uint8_t c = s[i];
        if (c == '"' || c == '\\') put_text(t, "\\%c", c);
        else if (c == '\n') put_text(t, "\\n");
        else if (c < 0x20 || c == 0x7f) put_text(t, "\\x%02x", c);
        else put_text(t, "%c", c);
    }
    put_text(t, n > max_chars ? "\"..." : "\"");
}

/* Renders one scalar or string at p (within end); returns its encoded size, 0 if it overruns. */
static uint64_t put_value(text *t, uint32_t type, const uint8_t *p, const uint8_t *end) {
    const uint64_t room = (uint64_t)(end - p);
    switch (type) {
    case LOWBIT_GGUF_UINT8: if (room < 1) return 0; put_text(t, "%u", p[0]); return 1;
    case LOWBIT_GGUF_INT8: if (room < 1) return 0; put_text(t, "%d", (int8_t)p[0]); return 1;
    case LOWBIT_GGUF_BOOL: if (room < 1) return 0; put_text(t, "%s", p[0] ? "true" : "false"); return 1;
    case LOWBIT_GGUF_UINT16: if (room < 2) return 0; put_text(t, "%u", (unsigned)lb_load_le(p, 2)); return 2;
    case LOWBIT_GGUF_INT16: if (room < 2) return 0; put_text(t, "%d", (int16_t)lb_load_le(p, 2)); return 2;
    case LOWBIT_GGUF_UINT32: if (room < 4) return 0; put_text(t, "%u", (unsigned)lb_load_le(p, 4)); return 4;
    case LOWBIT_GGUF_INT32: if (room < 4) return 0; put_text(t, "%d", (int32_t)lb_load_le(p, 4)); return 4;
    case LOWBIT_GGUF_FLOAT32:
        if (room < 4) return 0;
        put_text(t, "%.9g", lb_bits_to_float((uint32_t)lb_load_le(p, 4)));
        return 4;
    case LOWBIT_GGUF_UINT64: if (room < 8) return 0; put_text(t, "%llu", (unsigned long long)lb_load_le(p, 8)); return 8;
    case LOWBIT_GGUF_INT64: if (room < 8) return 0; put_text(t, "%lld", (long long)lb_load_le(p, 8)); return 8;
    case LOWBIT_GGUF_FLOAT64: {
        if (room < 8) return 0;
        const uint64_t bits = lb_load_le(p, 8);
        double d;
        memcpy(&d, &bits, sizeof d);
        put_text(t, "%.17g", d);
        return 8;
    }
    case LOWBIT_GGUF_STRING: {
        if (room < 8) return 0;
        const uint64_t n = lb_load_le(p, 8);
        if (n > room - 8) return 0;
        put_quoted(t, p + 8, n, 60);
        return 8 + n;
    }
    default:
        return 0;
    }
}

static const char *value_type_name(uint32_t type) {
    static const char *const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                        "string", "array", "u64", "i64", "f64"};
    return type < sizeof names / sizeof names[0] ? names[type] : "?";
}

size_t lowbit_kv_format(const lowbit_kv_info *info, char *buf, size_t size) {
    text t = {buf, size, 0};
    if (size) buf[0] = '\0';
    if (!info) return 0;
    const uint8_t *p = info->value, *end = p + info->value_size;
    if (info->type != LOWBIT_GGUF_ARRAY) {
        put_value(&t, info->type, p, end);
    } else if (info->array_type == LOWBIT_GGUF_ARRAY) {
        put_text(&t, "[%llu arrays]", (unsigned long long)info->array_count);
    } else {
        put_text(&t, "[%llu %s: ", (unsigned long long)info->array_count,
                 value_type_name(info->array_type));
        p += 12;
        const uint64_t shown = info->array_count < 6 ? info->array_count : 6;
        for (uint64_t i = 0; i < shown; i++) {
            const uint64_t used = put_value(&t, info->array_type, p, end);
            if (!used) break;
            p += used;
            if (i + 1 < shown) put_text(&t, ", ");
        }
        put_text(&t, info->array_count > shown ? ", ...]" : "]");
    }
    if (size && t.length >= size) buf[size - 1] = '\0';
    return t.length < size ? t.length : (size ? size - 1 : 0);
}
