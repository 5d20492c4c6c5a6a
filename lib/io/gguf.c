/*
 * GGUF reader (versions 2 and 3) over a read-only memory map.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count; the
 * metadata as (string key, u32 value type, value); the tensor infos as (string name, u32 n_dims,
 * u64 ne[n_dims], u32 type, u64 offset); then, aligned to general.alignment (default 32), the
 * tensor data, each tensor at its offset from the data start. A string is a u64 length and
 * that many bytes (no NUL).
 *
 * Every count, length, dimension and offset is checked against the file before it is used, so a
 * truncated or hostile file is reported with the byte offset of the problem, never read past.
 */
#include "../common/common.h"
#include "file.h"
#include "model.h"

#include <stdlib.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_NAME 256       /* ggml itself allows 63 bytes; we accept longer, within reason */
#define GGUF_MAX_ARRAY_DEPTH 8  /* nested arrays deeper than this are rejected, not recursed */

typedef struct gguf_kv {
    const char *key;            /* points into the map, not NUL-terminated */
    uint64_t key_length;
    uint32_t type;              /* lowbit_gguf_value_type */
    const uint8_t *value;       /* the value's bytes in the map (after the type field) */
    uint64_t value_size;        /* how many bytes the value takes, nested arrays included */
    uint32_t array_type;        /* for arrays: element type */
    uint64_t array_count;       /* for arrays: element count */
} gguf_kv;

struct lowbit_gguf {
    lb_mapped_file file;
    int owns_map;               /* 0 when the bytes were lent by lowbit_gguf_open_memory */
    uint32_t version;
    int64_t n_kv;
    gguf_kv *kvs;
    const gguf_kv **kv_by_key;  /* kvs sorted by key, for lookup and finding duplicates */
    int64_t n_tensors;
    lowbit_tensor_info *tensors;
    char *names;                /* NUL-terminated copies of the tensor names */
    const lowbit_tensor_info **tensor_by_name; /* tensors sorted by name */
    uint64_t alignment;
    uint64_t data_offset;
};

typedef struct cursor {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    lowbit_diag *diag;
} cursor;

static lowbit_status truncated(cursor *c, const char *what) {
    return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, c->pos,
                       "file truncated at byte %llu while reading %s", (unsigned long long)c->pos,
                       what);
}

static lowbit_status need(cursor *c, uint64_t n, const char *what) {
    return (c->size - c->pos < n) ? truncated(c, what) : LOWBIT_OK;
}

static lowbit_status read_u32(cursor *c, uint32_t *v, const char *what) {
    lowbit_status st = need(c, 4, what);
    if (st != LOWBIT_OK) return st;
    *v = lb_load_u32(c->base + c->pos);
    c->pos += 4;
    return LOWBIT_OK;
}

static lowbit_status read_u64(cursor *c, uint64_t *v, const char *what) {
    lowbit_status st = need(c, 8, what);
    if (st != LOWBIT_OK) return st;
    *v = lb_load_u64(c->base + c->pos);
    c->pos += 8;
    return LOWBIT_OK;
}

static lowbit_status read_string(cursor *c, const char **s, uint64_t *length, const char *what) {
    lowbit_status st = read_u64(c, length, what);
    if (st != LOWBIT_OK) return st;
    st = need(c, *length, what);
    if (st != LOWBIT_OK) return st;
    *s = (const char *)c->base + c->pos;
    c->pos += *length;
    return LOWBIT_OK;
}

/* Bytes of a scalar value type, 0 for string/array, -1 for an unknown type. */
int lb_gguf_scalar_bytes(uint32_t type) {
    switch (type) {
    case LOWBIT_GGUF_UINT8: case LOWBIT_GGUF_INT8: case LOWBIT_GGUF_BOOL: return 1;
    case LOWBIT_GGUF_UINT16: case LOWBIT_GGUF_INT16: return 2;
    case LOWBIT_GGUF_UINT32: case LOWBIT_GGUF_INT32: case LOWBIT_GGUF_FLOAT32: return 4;
    case LOWBIT_GGUF_UINT64: case LOWBIT_GGUF_INT64: case LOWBIT_GGUF_FLOAT64: return 8;
    case LOWBIT_GGUF_STRING: case LOWBIT_GGUF_ARRAY: return 0;
    default: return -1;
    }
}

static lowbit_status skip_value(cursor *c, uint32_t type, int depth);

static lowbit_status skip_array(cursor *c, int depth, uint32_t *elem_type, uint64_t *count) {
    const uint64_t at = c->pos;
    lowbit_status st = read_u32(c, elem_type, "array element type");
    if (st == LOWBIT_OK) st = read_u64(c, count, "array length");
    if (st != LOWBIT_OK) return st;
    const int elem = lb_gguf_scalar_bytes(*elem_type);
    if (elem < 0) {
        return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, at,
                           "unknown array element type %u at byte %llu", *elem_type,
                           (unsigned long long)at);
    }
    if (elem > 0) {
        /* a count that does not fit in the rest of the file is caught before any multiply */
        if (*count > (c->size - c->pos) / (uint64_t)elem) return truncated(c, "array data");
        c->pos += *count * (uint64_t)elem;
        return LOWBIT_OK;
    }
    if (depth >= GGUF_MAX_ARRAY_DEPTH) {
        return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, at,
                           "arrays nested deeper than %d at byte %llu", GGUF_MAX_ARRAY_DEPTH,
                           (unsigned long long)at);
    }
    /* strings and arrays take at least 8 bytes each: a cheap bound on hostile counts */
    if (*count > (c->size - c->pos) / 8) return truncated(c, "array data");
    for (uint64_t i = 0; i < *count; i++) {
        st = skip_value(c, *elem_type, depth + 1);
        if (st != LOWBIT_OK) return st;
    }
    return LOWBIT_OK;
}

static lowbit_status skip_value(cursor *c, uint32_t type, int depth) {
    const int size = lb_gguf_scalar_bytes(type);
    if (size > 0) {
        lowbit_status st = need(c, (uint64_t)size, "metadata value");
        if (st == LOWBIT_OK) c->pos += (uint64_t)size;
        return st;
    }
    if (type == LOWBIT_GGUF_STRING) {
        const char *s;
        uint64_t length;
        return read_string(c, &s, &length, "metadata string");
    }
    if (type == LOWBIT_GGUF_ARRAY) {
        uint32_t elem_type;
        uint64_t count;
        return skip_array(c, depth, &elem_type, &count);
    }
    return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, c->pos - 4,
                       "unknown metadata value type %u at byte %llu", type,
                       (unsigned long long)(c->pos - 4));
}

static int compare_bytes(const char *a, uint64_t na, const char *b, uint64_t nb) {
    const int cmp = memcmp(a, b, na < nb ? na : nb);
    if (cmp != 0) return cmp;
    return na < nb ? -1 : na > nb ? 1 : 0;
}

/* The lookup indexes hold pointers, so qsort's comparators need no context (and no global). */
static int compare_kv_pointers(const void *a, const void *b) {
    const gguf_kv *x = *(const gguf_kv *const *)a, *y = *(const gguf_kv *const *)b;
    return compare_bytes(x->key, x->key_length, y->key, y->key_length);
}

static int compare_tensor_pointers(const void *a, const void *b) {
    return strcmp((*(const lowbit_tensor_info *const *)a)->name,
                  (*(const lowbit_tensor_info *const *)b)->name);
}

static lowbit_status read_metadata(lowbit_gguf *g, cursor *c) {
    for (int64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kvs[i];
        lowbit_status st = read_string(c, &kv->key, &kv->key_length, "metadata key");
        if (st == LOWBIT_OK) st = read_u32(c, &kv->type, "metadata value type");
        if (st != LOWBIT_OK) return st;
        kv->value = c->base + c->pos;
        if (kv->type == LOWBIT_GGUF_ARRAY) {
            st = skip_array(c, 0, &kv->array_type, &kv->array_count);
        } else {
            st = skip_value(c, kv->type, 0);
        }
        if (st != LOWBIT_OK) return st;
        kv->value_size = (uint64_t)(c->base + c->pos - kv->value);
    }
    return LOWBIT_OK;
}

static lowbit_status check_duplicate_keys(lowbit_gguf *g, lowbit_diag *diag) {
    g->kv_by_key = malloc((size_t)(g->n_kv > 0 ? g->n_kv : 1) * sizeof *g->kv_by_key);
    if (!g->kv_by_key) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    for (int64_t i = 0; i < g->n_kv; i++) g->kv_by_key[i] = &g->kvs[i];
    qsort(g->kv_by_key, (size_t)g->n_kv, sizeof *g->kv_by_key, compare_kv_pointers);
    for (int64_t i = 1; i < g->n_kv; i++) {
        const gguf_kv *a = g->kv_by_key[i - 1], *b = g->kv_by_key[i];
        if (compare_bytes(a->key, a->key_length, b->key, b->key_length) == 0) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1,
                               (uint64_t)((const uint8_t *)b->key - g->file.data),
                               "duplicate metadata key '%.*s'", (int)LB_MIN(b->key_length, 200),
                               b->key);
        }
    }
    return LOWBIT_OK;
}

static const gguf_kv *find_kv(const lowbit_gguf *g, const char *key) {
    const uint64_t key_length = strlen(key);
    int64_t lo = 0, hi = g->n_kv - 1;
    while (lo <= hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        const gguf_kv *kv = g->kv_by_key[mid];
        const int cmp = compare_bytes(kv->key, kv->key_length, key, key_length);
        if (cmp == 0) return kv;
        if (cmp < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

static lowbit_status read_alignment(lowbit_gguf *g, lowbit_diag *diag) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = find_kv(g, "general.alignment");
    if (!kv) return LOWBIT_OK;
    const uint64_t at = (uint64_t)(kv->value - g->file.data);
    if (kv->type != LOWBIT_GGUF_UINT32) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, at,
                           "general.alignment is not a uint32 (byte %llu)", (unsigned long long)at);
    }
    const uint32_t alignment = lb_load_u32(kv->value);
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, at,
                           "general.alignment %u is not a power of two (byte %llu)", alignment,
                           (unsigned long long)at);
    }
    g->alignment = alignment;
    return LOWBIT_OK;
}

static lowbit_status read_tensor_dims(cursor *c, lowbit_tensor_info *t, uint64_t at) {
    uint32_t n_dims;
    lowbit_status st = read_u32(c, &n_dims, "tensor dimension count");
    if (st != LOWBIT_OK) return st;
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS) {
        return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, at,
                           "tensor '%s' has %u dimensions (1..%d allowed)", t->name, n_dims,
                           GGUF_MAX_DIMS);
    }
    t->n_dims = (int)n_dims;
    t->n_elements = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne;
        st = read_u64(c, &ne, "tensor dimension");
        if (st != LOWBIT_OK) return st;
        if (ne == 0 || ne > (uint64_t)INT64_MAX / (uint64_t)t->n_elements) {
            return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, at,
                               "tensor '%s' has dimension %u of %llu: zero or overflowing", t->name,
                               d, (unsigned long long)ne);
        }
        t->ne[d] = (int64_t)ne;
        t->n_elements *= (int64_t)ne;
    }
    return LOWBIT_OK;
}

static lowbit_status read_tensor_info(cursor *c, lowbit_tensor_info *t,
                                      char *name_store, uint64_t *offset) {
    const uint64_t at = c->pos;
    const char *name;
    uint64_t name_length;
    lowbit_status st = read_string(c, &name, &name_length, "tensor name");
    if (st != LOWBIT_OK) return st;
    if (name_length == 0 || name_length >= GGUF_MAX_NAME || memchr(name, 0, name_length)) {
        return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, at,
                           "tensor name at byte %llu is empty, too long or holds a NUL",
                           (unsigned long long)at);
    }
    memcpy(name_store, name, name_length);
    name_store[name_length] = '\0';
    t->name = name_store;
    st = read_tensor_dims(c, t, at);
    uint32_t type;
    if (st == LOWBIT_OK) st = read_u32(c, &type, "tensor type");
    if (st == LOWBIT_OK) st = read_u64(c, offset, "tensor offset");
    if (st != LOWBIT_OK) return st;
    int block_size, block_bytes;
    if (!lb_ggml_type_geometry(type, &block_size, &block_bytes)) {
        return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, at,
                           "tensor '%s' has unknown type id %u", t->name, type);
    }
    if (t->ne[0] % block_size != 0) {
        return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, at,
                           "tensor '%s': row length %lld is not a multiple of the block size %d",
                           t->name, (long long)t->ne[0], block_size);
    }
    t->type = (lowbit_type)type;
    /* n_elements < 2^63 and block_bytes <= 292: the product fits in 64 bits unsigned */
    t->n_bytes = (uint64_t)(t->n_elements / block_size) * (uint64_t)block_bytes;
    return LOWBIT_OK;
}

static int compare_data_pointers(const void *a, const void *b) {
    const uint8_t *x = (*(const lowbit_tensor_info *const *)a)->data;
    const uint8_t *y = (*(const lowbit_tensor_info *const *)b)->data;
    return x < y ? -1 : x > y;
}

/* Two tensors sharing bytes would alias each other's weights: a hostile or broken file. */
static lowbit_status check_overlaps(lowbit_gguf *g, lowbit_diag *diag) {
    if (g->n_tensors < 2) return LOWBIT_OK;
    const lowbit_tensor_info **by_offset = malloc((size_t)g->n_tensors * sizeof *by_offset);
    if (!by_offset) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    for (int64_t i = 0; i < g->n_tensors; i++) by_offset[i] = &g->tensors[i];
    qsort((void *)by_offset, (size_t)g->n_tensors, sizeof *by_offset, compare_data_pointers);
    lowbit_status st = LOWBIT_OK;
    for (int64_t i = 1; i < g->n_tensors && st == LOWBIT_OK; i++) {
        const lowbit_tensor_info *a = by_offset[i - 1], *b = by_offset[i];
        if ((const uint8_t *)a->data + a->n_bytes > (const uint8_t *)b->data) {
            st = lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1,
                             (uint64_t)((const uint8_t *)b->data - g->file.data),
                             "tensors '%s' and '%s' overlap (byte %llu)", a->name, b->name,
                             (unsigned long long)((const uint8_t *)b->data - g->file.data));
        }
    }
    free((void *)by_offset);
    return st;
}

static lowbit_status place_tensor_data(lowbit_gguf *g, const uint64_t *offsets, lowbit_diag *diag) {
    for (int64_t i = 0; i < g->n_tensors; i++) {
        lowbit_tensor_info *t = &g->tensors[i];
        const uint64_t available = g->file.size - g->data_offset;
        if (offsets[i] % g->alignment != 0) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                               "tensor '%s' offset %llu is not aligned to %llu", t->name,
                               (unsigned long long)offsets[i], (unsigned long long)g->alignment);
        }
        if (offsets[i] > available || t->n_bytes > available - offsets[i]) {
            /* the stored offset is printed as it is: adding the data start could wrap */
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                               "tensor '%s' data (%llu bytes at offset %llu of the data section, "
                               "which starts at byte %llu) runs past the end of the file "
                               "(%llu bytes)",
                               t->name, (unsigned long long)t->n_bytes,
                               (unsigned long long)offsets[i], (unsigned long long)g->data_offset,
                               (unsigned long long)g->file.size);
        }
        t->data = g->file.data + g->data_offset + offsets[i];
    }
    return check_overlaps(g, diag);
}

static lowbit_status check_duplicate_names(lowbit_gguf *g, lowbit_diag *diag) {
    const size_t n = (size_t)(g->n_tensors > 0 ? g->n_tensors : 1);
    g->tensor_by_name = malloc(n * sizeof *g->tensor_by_name);
    if (!g->tensor_by_name) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    for (int64_t i = 0; i < g->n_tensors; i++) g->tensor_by_name[i] = &g->tensors[i];
    qsort(g->tensor_by_name, (size_t)g->n_tensors, sizeof *g->tensor_by_name, compare_tensor_pointers);
    for (int64_t i = 1; i < g->n_tensors; i++) {
        if (strcmp(g->tensor_by_name[i - 1]->name, g->tensor_by_name[i]->name) == 0) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                               "duplicate tensor name '%s'", g->tensor_by_name[i]->name);
        }
    }
    return LOWBIT_OK;
}

static lowbit_status read_tensor_infos(lowbit_gguf *g, cursor *c, lowbit_diag *diag) {
    /* each info takes at least 8 (name length) + 1 + 4 + 8 + 4 + 8 bytes */
    if (g->n_tensors > (int64_t)((c->size - c->pos) / 33)) return truncated(c, "tensor infos");
    g->tensors = calloc((size_t)(g->n_tensors > 0 ? g->n_tensors : 1), sizeof *g->tensors);
    g->names = malloc((size_t)(g->n_tensors > 0 ? g->n_tensors : 1) * GGUF_MAX_NAME);
    uint64_t *offsets = malloc((size_t)(g->n_tensors > 0 ? g->n_tensors : 1) * sizeof *offsets);
    lowbit_status st = (g->tensors && g->names && offsets) ? LOWBIT_OK : LOWBIT_ERR_NO_MEMORY;
    if (st != LOWBIT_OK) lb_diag_set(diag, st, -1, UINT64_MAX, "out of memory");
    for (int64_t i = 0; st == LOWBIT_OK && i < g->n_tensors; i++) {
        st = read_tensor_info(c, &g->tensors[i], g->names + i * GGUF_MAX_NAME, &offsets[i]);
    }
    if (st == LOWBIT_OK) st = check_duplicate_names(g, diag);
    if (st == LOWBIT_OK) {
        const uint64_t aligned = (c->pos + g->alignment - 1) / g->alignment * g->alignment;
        /* a file with no tensors may end right after the infos, without padding */
        g->data_offset = aligned <= g->file.size ? aligned : g->file.size;
        if (g->n_tensors > 0 && aligned > g->file.size) st = truncated(c, "tensor data");
    }
    if (st == LOWBIT_OK) st = place_tensor_data(g, offsets, diag);
    free(offsets);
    return st;
}

static lowbit_status read_header(lowbit_gguf *g, cursor *c) {
    lowbit_status st = need(c, 4, "magic");
    if (st != LOWBIT_OK) return st;
    if (memcmp(c->base, "GGUF", 4) != 0) {
        return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, 0, "not a GGUF file (bad magic)");
    }
    c->pos = 4;
    uint64_t n_tensors, n_kv;
    st = read_u32(c, &g->version, "version");
    if (st != LOWBIT_OK) return st;
    if (g->version != 2 && g->version != 3) {
        return lb_diag_set(c->diag, LOWBIT_ERR_UNSUPPORTED, -1, 4,
                           "GGUF version %u is not supported (2 and 3 are)", g->version);
    }
    st = read_u64(c, &n_tensors, "tensor count");
    if (st == LOWBIT_OK) st = read_u64(c, &n_kv, "metadata count");
    if (st != LOWBIT_OK) return st;
    /* each key-value pair takes at least 8 + 4 + 1 bytes: bound the counts before allocating */
    if (n_kv > (c->size - c->pos) / 13) return truncated(c, "metadata");
    if (n_tensors > (c->size - c->pos) / 33) return truncated(c, "tensor infos");
    g->n_tensors = (int64_t)n_tensors;
    g->n_kv = (int64_t)n_kv;
    g->kvs = calloc((size_t)(n_kv > 0 ? n_kv : 1), sizeof *g->kvs);
    if (!g->kvs) return lb_diag_set(c->diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    return LOWBIT_OK;
}

/* Parses the file already mapped (or borrowed) in g->file; on failure g is freed. */
static lowbit_status parse(lowbit_gguf *g, lowbit_gguf **out, lowbit_diag *diag) {
    cursor c = {g->file.data, g->file.size, 0, diag};
    lowbit_status st = read_header(g, &c);
    if (st == LOWBIT_OK) st = read_metadata(g, &c);
    if (st == LOWBIT_OK) st = check_duplicate_keys(g, diag);
    if (st == LOWBIT_OK) st = read_alignment(g, diag);
    if (st == LOWBIT_OK) st = read_tensor_infos(g, &c, diag);
    if (st != LOWBIT_OK) {
        lowbit_gguf_close(g);
        return st;
    }
    *out = g;
    return LOWBIT_OK;
}

lowbit_status lowbit_gguf_open(const char *path, lowbit_gguf **out, lowbit_diag *diag) {
    if (!path || !out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    lowbit_gguf *g = calloc(1, sizeof *g);
    if (!g) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    g->owns_map = 1;
    const lowbit_status st = lb_map_file(path, &g->file, diag);
    if (st != LOWBIT_OK) {
        free(g);
        return st;
    }
    return parse(g, out, diag);
}

lowbit_status lowbit_gguf_open_memory(const void *data, size_t size, lowbit_gguf **out,
                                      lowbit_diag *diag) {
    if ((!data && size) || !out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    lowbit_gguf *g = calloc(1, sizeof *g);
    if (!g) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    g->file.data = data;
    g->file.size = size;
    return parse(g, out, diag);
}

void lowbit_gguf_close(lowbit_gguf *g) {
    if (!g) return;
    if (g->owns_map) lb_unmap_file(&g->file);
    free(g->kvs);
    free((void *)g->kv_by_key);
    free(g->tensors);
    free(g->names);
    free((void *)g->tensor_by_name);
    free(g);
}

uint32_t lowbit_gguf_version(const lowbit_gguf *g) { return g ? g->version : 0; }
int64_t lowbit_gguf_tensor_count(const lowbit_gguf *g) { return g ? g->n_tensors : 0; }
int64_t lowbit_gguf_kv_count(const lowbit_gguf *g) { return g ? g->n_kv : 0; }

const lowbit_tensor_info *lowbit_gguf_tensor_at(const lowbit_gguf *g, int64_t i) {
    return (g && i >= 0 && i < g->n_tensors) ? &g->tensors[i] : NULL;
}

const lowbit_tensor_info *lowbit_gguf_find_tensor(const lowbit_gguf *g, const char *name) {
    if (!g || !name) return NULL;
    int64_t lo = 0, hi = g->n_tensors - 1;
    while (lo <= hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        const lowbit_tensor_info *t = g->tensor_by_name[mid];
        const int cmp = strcmp(t->name, name);
        if (cmp == 0) return t;
        if (cmp < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

lowbit_status lowbit_gguf_get_string(const lowbit_gguf *g, const char *key, const char **value,
                                     uint64_t *length) {
    if (!g || !key || !value || !length) return LOWBIT_ERR_INVALID_ARGUMENT;
    const gguf_kv *kv = find_kv(g, key);
    if (!kv) return LOWBIT_ERR_NOT_FOUND;
    if (kv->type != LOWBIT_GGUF_STRING) return LOWBIT_ERR_INVALID_ARGUMENT;
    *length = lb_load_u64(kv->value);
    *value = (const char *)kv->value + 8;
    return LOWBIT_OK;
}

/* Reads any integer value as a signed and an unsigned 64-bit view; 0 if not an integer type. */
static int load_integer(const gguf_kv *kv, int64_t *as_signed, uint64_t *as_unsigned, int *negative) {
    const uint8_t *p = kv->value;
    int64_t s = 0;
    uint64_t u = 0;
    switch (kv->type) {
    case LOWBIT_GGUF_UINT8: case LOWBIT_GGUF_BOOL: u = p[0]; s = (int64_t)u; break;
    case LOWBIT_GGUF_INT8: s = (int8_t)p[0]; u = (uint64_t)s; break;
    case LOWBIT_GGUF_UINT16: u = (uint64_t)p[0] | (uint64_t)p[1] << 8; s = (int64_t)u; break;
    case LOWBIT_GGUF_INT16: s = (int16_t)(p[0] | p[1] << 8); u = (uint64_t)s; break;
    case LOWBIT_GGUF_UINT32: u = lb_load_u32(p); s = (int64_t)u; break;
    case LOWBIT_GGUF_INT32: s = (int32_t)lb_load_u32(p); u = (uint64_t)s; break;
    case LOWBIT_GGUF_UINT64: u = lb_load_u64(p); s = (int64_t)u; break;
    case LOWBIT_GGUF_INT64: s = (int64_t)lb_load_u64(p); u = (uint64_t)s; break;
    default: return 0;
    }
    *as_signed = s;
    *as_unsigned = u;
    *negative = (kv->type == LOWBIT_GGUF_INT8 || kv->type == LOWBIT_GGUF_INT16 ||
                 kv->type == LOWBIT_GGUF_INT32 || kv->type == LOWBIT_GGUF_INT64) && s < 0;
    return 1;
}

lowbit_status lowbit_gguf_get_u64(const lowbit_gguf *g, const char *key, uint64_t *value) {
    if (!g || !key || !value) return LOWBIT_ERR_INVALID_ARGUMENT;
    const gguf_kv *kv = find_kv(g, key);
    if (!kv) return LOWBIT_ERR_NOT_FOUND;
    int64_t s;
    uint64_t u;
    int negative;
    if (!load_integer(kv, &s, &u, &negative) || negative) return LOWBIT_ERR_INVALID_ARGUMENT;
    *value = u;
    return LOWBIT_OK;
}

lowbit_status lowbit_gguf_get_i64(const lowbit_gguf *g, const char *key, int64_t *value) {
    if (!g || !key || !value) return LOWBIT_ERR_INVALID_ARGUMENT;
    const gguf_kv *kv = find_kv(g, key);
    if (!kv) return LOWBIT_ERR_NOT_FOUND;
    int64_t s;
    uint64_t u;
    int negative;
    if (!load_integer(kv, &s, &u, &negative)) return LOWBIT_ERR_INVALID_ARGUMENT;
    if (kv->type == LOWBIT_GGUF_UINT64 && u > (uint64_t)INT64_MAX) return LOWBIT_ERR_INVALID_ARGUMENT;
    *value = s;
    return LOWBIT_OK;
}

lowbit_status lowbit_gguf_get_f64(const lowbit_gguf *g, const char *key, double *value) {
    if (!g || !key || !value) return LOWBIT_ERR_INVALID_ARGUMENT;
    const gguf_kv *kv = find_kv(g, key);
    if (!kv) return LOWBIT_ERR_NOT_FOUND;
    if (kv->type == LOWBIT_GGUF_FLOAT32) {
        *value = lb_bits_to_float(lb_load_u32(kv->value));
        return LOWBIT_OK;
    }
    if (kv->type == LOWBIT_GGUF_FLOAT64) {
        const uint64_t bits = lb_load_u64(kv->value);
        memcpy(value, &bits, sizeof *value);
        return LOWBIT_OK;
    }
    int64_t s;
    uint64_t u;
    int negative;
    if (!load_integer(kv, &s, &u, &negative)) return LOWBIT_ERR_INVALID_ARGUMENT;
    *value = negative ? (double)s : (double)u;
    return LOWBIT_OK;
}

/* GGUF as a model: metadata copied as encoded, tensors pointing into the model's own map. */
lowbit_status lb_read_gguf_model(const char *path, lb_model *m, lowbit_diag *diag) {
    lowbit_status st = lb_map_file(path, &m->files[0], diag);
    if (st != LOWBIT_OK) return st;
    return lb_read_gguf_model_memory(m->files[0].data, m->files[0].size, m, diag);
}

lowbit_status lb_read_gguf_model_memory(const void *data, size_t size, lb_model *m,
                                        lowbit_diag *diag) {
    lowbit_gguf *g = NULL;
    lowbit_status st = lowbit_gguf_open_memory(data, size, &g, diag);
    for (int64_t i = 0; st == LOWBIT_OK && i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kvs[i];
        char key[256];
        if (kv->key_length >= sizeof key || memchr(kv->key, 0, kv->key_length)) {
            st = lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, (uint64_t)((const uint8_t *)kv->key - g->file.data),
                             "metadata key at byte %llu is too long or holds a NUL",
                             (unsigned long long)((const uint8_t *)kv->key - g->file.data));
            break;
        }
        memcpy(key, kv->key, kv->key_length);
        key[kv->key_length] = '\0';
        st = lb_model_set_raw(m, key, kv->type, kv->value, kv->value_size);
        if (st != LOWBIT_OK) lb_diag_set(diag, st, -1, UINT64_MAX, "out of memory");
    }
    for (int64_t i = 0; st == LOWBIT_OK && i < g->n_tensors; i++) {
        const lowbit_tensor_info *t = &g->tensors[i];
        st = lb_model_add_tensor(m, t->name, t->type, t->n_dims, t->ne, t->data, 0, diag);
    }
    lowbit_gguf_close(g);
    if (st != LOWBIT_OK) lb_model_free(m);
    return st;
}
