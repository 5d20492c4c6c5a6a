/* The in-memory model every reader fills: metadata builders, tensor registry, reading as floats. */
#include "model.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

void lb_model_free(lb_model *m) {
    if (!m) return;
    for (int64_t i = 0; i < m->n_kv; i++) {
        free(m->kvs[i].key);
        free(m->kvs[i].value);
    }
    free(m->kvs);
    free(m->tensors);
    for (int f = 0; f < LB_ARRAY_LEN(m->files); f++) lb_unmap_file(&m->files[f]);
    memset(m, 0, sizeof *m);
}

/* Grows an array of `size`-byte items to hold one more; doubles its capacity. */
static int reserve_one(void **items, int64_t count, int64_t *capacity, size_t size) {
    if (count < *capacity) return 1;
    const int64_t wanted = *capacity ? 2 * *capacity : 16;
    void *grown = realloc(*items, (size_t)wanted * size);
    if (!grown) return 0;
    *items = grown;
    *capacity = wanted;
    return 1;
}

static lb_kv *find_kv_mutable(const lb_model *m, const char *key) {
    for (int64_t i = 0; i < m->n_kv; i++) {
        if (strcmp(m->kvs[i].key, key) == 0) return &m->kvs[i];
    }
    return NULL;
}

const lb_kv *lb_model_find_kv(const lb_model *m, const char *key) { return find_kv_mutable(m, key); }

lowbit_status lb_model_set_raw(lb_model *m, const char *key, uint32_t type, const void *value,
                               uint64_t value_size) {
    uint8_t *copy = malloc(value_size ? (size_t)value_size : 1);
    if (!copy) return LOWBIT_ERR_NO_MEMORY;
    if (value_size) memcpy(copy, value, (size_t)value_size);
    lb_kv *kv = find_kv_mutable(m, key);
    if (kv) {
        free(kv->value);
    } else {
        char *key_copy = malloc(strlen(key) + 1);
        if (!key_copy || !reserve_one((void **)&m->kvs, m->n_kv, &m->kv_capacity, sizeof *m->kvs)) {
            free(key_copy);
            free(copy);
            return LOWBIT_ERR_NO_MEMORY;
        }
        strcpy(key_copy, key);
        kv = &m->kvs[m->n_kv++];
        kv->key = key_copy;
    }
    kv->type = type;
    kv->value = copy;
    kv->value_size = value_size;
    return LOWBIT_OK;
}

lowbit_status lb_model_set_u32(lb_model *m, const char *key, uint32_t v) {
    uint8_t b[4];
    lb_store_le(b, v, 4);
    return lb_model_set_raw(m, key, LOWBIT_GGUF_UINT32, b, 4);
}

lowbit_status lb_model_set_i32(lb_model *m, const char *key, int32_t v) {
    uint8_t b[4];
    lb_store_le(b, (uint32_t)v, 4);
    return lb_model_set_raw(m, key, LOWBIT_GGUF_INT32, b, 4);
}

lowbit_status lb_model_set_f32(lb_model *m, const char *key, float v) {
    uint8_t b[4];
    lb_store_le(b, lb_float_to_bits(v), 4);
    return lb_model_set_raw(m, key, LOWBIT_GGUF_FLOAT32, b, 4);
}

lowbit_status lb_model_set_bool(lb_model *m, const char *key, int v) {
    const uint8_t b = v ? 1 : 0;
    return lb_model_set_raw(m, key, LOWBIT_GGUF_BOOL, &b, 1);
}

lowbit_status lb_model_set_string(lb_model *m, const char *key, const char *s) {
    const uint64_t length = strlen(s);
    uint8_t *buf = malloc(8 + (size_t)length);
    if (!buf) return LOWBIT_ERR_NO_MEMORY;
    lb_store_le(buf, length, 8);
    memcpy(buf + 8, s, (size_t)length);
    const lowbit_status st = lb_model_set_raw(m, key, LOWBIT_GGUF_STRING, buf, 8 + length);
    free(buf);
    return st;
}

/* An array value: element type, count, then `payload_size` bytes of elements. */
static uint8_t *new_array(uint32_t elem_type, uint64_t count, uint64_t payload_size) {
    uint8_t *buf = malloc(12 + (size_t)payload_size);
    if (!buf) return NULL;
    lb_store_le(buf, elem_type, 4);
    lb_store_le(buf + 4, count, 8);
    return buf;
}

lowbit_status lb_model_set_string_array(lb_model *m, const char *key, const char *const *strings,
                                        const uint64_t *lengths, uint64_t count) {
    uint64_t payload = 0;
    for (uint64_t i = 0; i < count; i++) payload += 8 + lengths[i];
    uint8_t *buf = new_array(LOWBIT_GGUF_STRING, count, payload);
    if (!buf) return LOWBIT_ERR_NO_MEMORY;
    uint8_t *p = buf + 12;
    for (uint64_t i = 0; i < count; i++) {
        lb_store_le(p, lengths[i], 8);
        memcpy(p + 8, strings[i], (size_t)lengths[i]);
        p += 8 + lengths[i];
    }
    const lowbit_status st = lb_model_set_raw(m, key, LOWBIT_GGUF_ARRAY, buf, 12 + payload);
    free(buf);
    return st;
}

static lowbit_status set_u32_array(lb_model *m, const char *key, uint32_t elem_type,
                                   const uint32_t *bits, uint64_t count) {
    uint8_t *buf = new_array(elem_type, count, 4 * count);
    if (!buf) return LOWBIT_ERR_NO_MEMORY;
    for (uint64_t i = 0; i < count; i++) lb_store_le(buf + 12 + 4 * i, bits[i], 4);
    const lowbit_status st = lb_model_set_raw(m, key, LOWBIT_GGUF_ARRAY, buf, 12 + 4 * count);
    free(buf);
    return st;
}

lowbit_status lb_model_set_f32_array(lb_model *m, const char *key, const float *v, uint64_t count) {
    /* float and uint32 have the same size and the bits are copied as they are */
    _Static_assert(sizeof(float) == sizeof(uint32_t), "32-bit floats");
    return set_u32_array(m, key, LOWBIT_GGUF_FLOAT32, (const uint32_t *)(const void *)v, count);
}

lowbit_status lb_model_set_i32_array(lb_model *m, const char *key, const int32_t *v,
                                     uint64_t count) {
    return set_u32_array(m, key, LOWBIT_GGUF_INT32, (const uint32_t *)(const void *)v, count);
}

int lb_kv_get_u64(const lb_kv *kv, uint64_t *v) {
    if (!kv) return 0;
    switch (kv->type) {
    case LOWBIT_GGUF_UINT8: case LOWBIT_GGUF_UINT16: case LOWBIT_GGUF_UINT32:
    case LOWBIT_GGUF_UINT64:
        *v = lb_load_le(kv->value, (int)kv->value_size);
        return 1;
    case LOWBIT_GGUF_INT8: case LOWBIT_GGUF_INT16: case LOWBIT_GGUF_INT32: case LOWBIT_GGUF_INT64: {
        const int bits = 8 * (int)kv->value_size;
        const uint64_t raw = lb_load_le(kv->value, (int)kv->value_size);
        if (bits < 64 && (raw >> (bits - 1)) & 1) return 0; /* negative */
        if (bits == 64 && (raw >> 63)) return 0;
        *v = raw;
        return 1;
    }
    default:
        return 0;
    }
}

int lb_kv_get_f64(const lb_kv *kv, double *v) {
    if (!kv) return 0;
    if (kv->type == LOWBIT_GGUF_FLOAT32) {
        *v = lb_bits_to_float((uint32_t)lb_load_le(kv->value, 4));
        return 1;
    }
    if (kv->type == LOWBIT_GGUF_FLOAT64) {
        const uint64_t bits = lb_load_le(kv->value, 8);
        memcpy(v, &bits, sizeof *v);
        return 1;
    }
    uint64_t u;
    if (!lb_kv_get_u64(kv, &u)) return 0;
    *v = (double)u;
    return 1;
}

const lb_tensor *lb_model_find_tensor(const lb_model *m, const char *name) {
    for (int64_t i = 0; i < m->n_tensors; i++) {
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    }
    return NULL;
}

int64_t lb_tensor_rows(const lb_tensor *t) {
    int64_t rows = 1;
    for (int d = 1; d < t->n_dims; d++) rows *= t->ne[d];
    return rows;
}

lowbit_status lb_model_add_tensor(lb_model *m, const char *name, lowbit_type type, int n_dims,
                                  const int64_t *ne, const void *data, int32_t permute_heads,
                                  lowbit_diag *diag) {
    if (strlen(name) >= LB_MAX_TENSOR_NAME) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX, "tensor name '%.60s...' is too long", name);
    }
    if (n_dims < 1 || n_dims > LB_MAX_DIMS) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX, "tensor '%s' has %d dimensions", name, n_dims);
    }
    if (lb_model_find_tensor(m, name)) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX, "duplicate tensor '%s'", name);
    }
    int block_size, block_bytes;
    if (!lb_ggml_type_geometry((uint32_t)type, &block_size, &block_bytes) || ne[0] % block_size) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "tensor '%s': type %d does not fit its row length %lld", name, (int)type,
                           (long long)ne[0]);
    }
    if (!reserve_one((void **)&m->tensors, m->n_tensors, &m->tensor_capacity, sizeof *m->tensors)) {
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    }
    lb_tensor *t = &m->tensors[m->n_tensors];
    memset(t, 0, sizeof *t);
    strcpy(t->name, name);
    t->type = type;
    t->n_dims = n_dims;
    int64_t elements = 1;
    for (int d = 0; d < LB_MAX_DIMS; d++) {
        t->ne[d] = d < n_dims ? ne[d] : 1;
        if (t->ne[d] <= 0 || t->ne[d] > INT64_MAX / elements) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                               "tensor '%s': bad or overflowing dimension %d", name, d);
        }
        elements *= t->ne[d];
    }
    t->n_bytes = (uint64_t)(elements / block_size) * (uint64_t)block_bytes;
    t->data = data;
    t->permute_heads = permute_heads;
    m->n_tensors++;
    return LOWBIT_OK;
}

/* Hugging Face Llama checkpoints order each head's rows as [first halves of the pairs, second
   halves] (RoPE rotating halves); GGUF's Llama expects the pairs adjacent. Output row
   h*D + 2j + k comes from input row h*D + k*D/2 + j (D rows per head). */
static int64_t permuted_source_row(int64_t row, int64_t rows_per_head) {
    const int64_t head = row / rows_per_head, within = row % rows_per_head;
    const int64_t pair = within / 2, half = within % 2;
    return head * rows_per_head + half * (rows_per_head / 2) + pair;
}

lowbit_status lb_model_read_f32(const lb_model *m, int64_t i, float *dst, lowbit_diag *diag) {
    if (i < 0 || i >= m->n_tensors) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "no tensor %lld", (long long)i);
    }
    const lb_tensor *t = &m->tensors[i];
    const lowbit_type_traits *traits = lowbit_type_info(t->type);
    if (!traits || !traits->dequantize) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "tensor '%s' has type id %d, which lowbit cannot decode", t->name, (int)t->type);
    }
    const int64_t rows = lb_tensor_rows(t), n = t->ne[0];
    const size_t row_bytes = lowbit_row_bytes(t->type, n);
    const int64_t heads = t->permute_heads;
    if (heads > 0 && (rows % heads != 0 || (rows / heads) % 2 != 0)) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "tensor '%s': %lld rows do not split into %lld heads of even size",
                           t->name, (long long)rows, (long long)heads);
    }
    for (int64_t r = 0; r < rows; r++) {
        const int64_t from = heads > 0 ? permuted_source_row(r, rows / heads) : r;
        traits->dequantize((const uint8_t *)t->data + (size_t)from * row_bytes, dst + r * n, n);
    }
    return LOWBIT_OK;
}

void lb_model_release_bytes(const lb_model *m, const void *data, size_t n_bytes) {
    for (int f = 0; f < LB_ARRAY_LEN(m->files); f++) {
        const uint8_t *base = m->files[f].data;
        const uint8_t *p = data;
        if (!base || !p || p < base || p + n_bytes > base + m->files[f].size) continue;
        /* whole pages inside the range only: a neighbour's bytes on a shared page stay */
        const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        const uintptr_t begin = ((uintptr_t)p + page - 1) / page * page;
        const uintptr_t end = ((uintptr_t)p + n_bytes) / page * page;
        if (end > begin) madvise((void *)begin, end - begin, MADV_DONTNEED);
        return;
    }
}

void lb_model_release_tensor(const lb_model *m, int64_t i) {
    if (i < 0 || i >= m->n_tensors || !m->tensors[i].data) return;
    lb_model_release_bytes(m, m->tensors[i].data, m->tensors[i].n_bytes);
}
