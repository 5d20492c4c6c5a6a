/*
 * GGUF v3 writer.
 *
 * A file is: "GGUF", u32 version 3, u64 tensor count, u64 key-value count; each key-value as
 * (u64 key length, key bytes, u32 value type, value bytes); each tensor info as (u64 name
 * length, name bytes, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset); zero padding to the
 * alignment; then the data, each tensor at its offset from the data start and followed by zero
 * padding to the alignment. Everything is little-endian. Readers (llama.cpp's among them)
 * expect each offset to be exactly the previous offset plus the previous tensor's padded size,
 * and a data section whose size is the sum of the padded sizes: the layout here is that one.
 *
 * The layout is computed once, before anything is written, so `--dry-run` can print the exact
 * file size and the writer can check every byte it is given against it.
 */
#include "gguf_write.h"

#include "file.h"

#include <stdlib.h>

#define GGUF_VERSION 3
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_HEADER_BYTES 24       /* magic, version, tensor count, key-value count */
#define GGUF_MAX_NAME_BYTES 63     /* llama.cpp refuses tensor names of 64 bytes or more */
#define GGUF_MAX_ARRAY_DEPTH 8     /* How many bytes one encoded value of `type` takes at p (at most `available`); 0 when the bytes
   are not such a value. Every value takes at least one byte, so 0 is free to mean "bad". */
static uint64_t encoded_value_bytes(uint32_t type, const uint8_t *p, uint64_t available, int depth) {
    const int scalar = lb_gguf_scalar_bytes(type);
    if (scalar < 0) return 0;
    if (scalar > 0) return (uint64_t)scalar <= available ? (uint64_t)scalar : 0;
    if (type == LOWBIT_GGUF_STRING) {
        if (available < 8) return 0;
        const uint64_t length = lb_load_le(p, 8);
        return length <= available - 8 ? 8 + length : 0;
    }
    /* an array: u32 element type, u64 count, the elements */
    if (available < 12 || depth >= GGUF_MAX_ARRAY_DEPTH) return 0;
    const uint32_t elem_type = (uint32_t)lb_load_le(p, 4);
    const uint64_t count = lb_load_le(p + 4, 8);
    const int elem = lb_gguf_scalar_bytes(elem_type);
    if (elem < 0) return 0;
    if (elem > 0) return count <= (available - 12) / (uint64_t)elem ? 12 + count * (uint64_t)elem : 0;
    uint64_t used = 12;
    for (uint64_t i = 0; i < count; i++) {
        const uint64_t n = encoded_value_bytes(elem_type, p + used, available - used, depth + 1);
        if (n == 0) return 0;
        used += n;
    }
    return used;
}

static int is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

/* a + b into *sum; 0 on overflow. */
static int add_u64(uint64_t a, uint64_t b, uint64_t *sum) {
    if (a > UINT64_MAX - b) return 0;
    *sum = a + b;
    return 1;
}

static int compare_key_pointers(const void *a, const void *b) {
    return strcmp((*(const lb_kv *const *)a)->key, (*(const lb_kv *const *)b)->key);
}

static int compare_name_pointers(const void *a, const void *b) {
    return strcmp((*(const lb_out_tensor *const *)a)->name, (*(const lb_out_tensor *const *)b)->name);
}

static lowbit_status bad(lowbit_diag *diag, const char *fmt, const char *what) {
    return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, fmt, what);
}

/* The alignment to use: the argument, else general.alignment, else the default. */
static lowbit_status choose_alignment(const lb_kv *kvs, int64_t n_kv, uint32_t requested,
                                      uint32_t *alignment, lowbit_diag *diag) {
    *alignment = requested ? requested : GGUF_DEFAULT_ALIGNMENT;
    for (int64_t i = 0; i < n_kv; i++) {
        if (strcmp(kvs[i].key, "general.alignment") != 0) continue;
        if (kvs[i].type != LOWBIT_GGUF_UINT32 || kvs[i].value_size != 4 || !kvs[i].value) {
            return bad(diag, "%s is not a uint32", kvs[i].key);
        }
        const uint32_t stored = (uint32_t)lb_load_le(kvs[i].value, 4);
        if (requested && stored != requested) {
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                               "general.alignment is %u but the file is laid out with %u", stored,
                               requested);
        }
        *alignment = stored;
    }
    if (!is_power_of_two(*alignment)) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "alignment %u is not a power of two", *alignment);
    }
    return LOWBIT_OK;
}

/* Bytes of the key-values; checks each value's encoding and that keys are unique. */
static lowbit_status measure_kvs(const lb_kv *kvs, int64_t n_kv, uint64_t *bytes, lowbit_diag *diag) {
    const lb_kv **sorted = malloc((size_t)(n_kv > 0 ? n_kv : 1) * sizeof *sorted);
    if (!sorted) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    lowbit_status st = LOWBIT_OK;
    *bytes = 0;
    for (int64_t i = 0; st == LOWBIT_OK && i < n_kv; i++) {
        const lb_kv *kv = &kvs[i];
        sorted[i] = kv;
        if (!kv->key || !kv->key[0]) {
            st = lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                             "metadata key %lld is empty", (long long)i);
        } else if ((!kv->value && kv->value_size) ||
                   encoded_value_bytes(kv->type, kv->value, kv->value_size, 0) != kv->value_size) {
            st = bad(diag, "metadata '%s': the value is not a well-formed GGUF value of its type",
                     kv->key);
        } else if (!add_u64(*bytes, 8 + 4 + strlen(kv->key), bytes) ||
                   !add_u64(*bytes, kv->value_size, bytes)) {
            st = bad(diag, "metadata '%s' overflows the file size", kv->key);
        }
    }
    if (st == LOWBIT_OK) {
        qsort(sorted, (size_t)n_kv, sizeof *sorted, compare_key_pointers);
        for (int64_t i = 1; st == LOWBIT_OK && i < n_kv; i++) {
            if (strcmp(sorted[i - 1]->key, sorted[i]->key) == 0) {
                st = bad(diag, "duplicate metadata key '%s'", sorted[i]->key);
            }
        }
    }
    free(sorted);
    return st;
}

/* Checks one tensor's name, dimensions, type and byte count. */
static lowbit_status check_tensor(const lb_out_tensor *t, int64_t index, lowbit_diag *diag) {
    if (!t->name || !t->name[0]) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "tensor %lld has no name", (long long)index);
    }
    if (strlen(t->name) > GGUF_MAX_NAME_BYTES) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "tensor name '%.80s' is longer than %d bytes", t->name,
                           GGUF_MAX_NAME_BYTES);
    }
    if (t->n_dims < 1 || t->n_dims > LB_MAX_DIMS) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "tensor '%s' has %d dimensions (1..%d allowed)", t->name, t->n_dims,
                           LB_MAX_DIMS);
    }
    int64_t elements = 1;
    for (int d = 0; d < t->n_dims; d++) {
        if (t->ne[d] <= 0 || t->ne[d] > INT64_MAX / elements) {
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                               "tensor '%s': dimension %d (%lld) is not positive or overflows",
                               t->name, d, (long long)t->ne[d]);
        }
        elements *= t->ne[d];
    }
    int block_size, block_bytes;
    if (!lb_ggml_type_geometry((uint32_t)t->type, &block_size, &block_bytes)) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "tensor '%s' has unknown type id %d", t->name, (int)t->type);
    }
    if (t->ne[0] % block_size != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "tensor '%s': row length %lld is not a multiple of the block size %d",
                           t->name, (long long)t->ne[0], block_size);
    }
    /* elements < 2^63 and block_bytes is a few hundred at most: no overflow in 64 bits */
    const uint64_t n_bytes = (uint64_t)(elements / block_size) * (uint64_t)block_bytes;
    if (t->n_bytes != n_bytes) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "tensor '%s' says %llu bytes but its type and dimensions take %llu",
                           t->name, (unsigned long long)t->n_bytes, (unsigned long long)n_bytes);
    }
    return LOWBIT_OK;
}

static lowbit_status check_unique_names(const lb_out_tensor *tensors, int64_t n_tensors,
                                        lowbit_diag *diag) {
    const lb_out_tensor **sorted = malloc((size_t)(n_tensors > 0 ? n_tensors : 1) * sizeof *sorted);
    if (!sorted) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    for (int64_t i = 0; i < n_tensors; i++) sorted[i] = &tensors[i];
    qsort(sorted, (size_t)n_tensors, sizeof *sorted, compare_name_pointers);
    lowbit_status st = LOWBIT_OK;
    for (int64_t i = 1; st == LOWBIT_OK && i < n_tensors; i++) {
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0) {
            st = bad(diag, "duplicate tensor name '%s'", sorted[i]->name);
        }
    }
    free(sorted);
    return st;
}

/* Bytes of the tensor infos; checks every tensor. */
static lowbit_status measure_tensor_infos(const lb_out_tensor *tensors, int64_t n_tensors,
                                          uint64_t *bytes, lowbit_diag *diag) {
    *bytes = 0;
    for (int64_t i = 0; i < n_tensors; i++) {
        const lb_out_tensor *t = &tensors[i];
        lowbit_status st = check_tensor(t, i, diag);
        if (st != LOWBIT_OK) return st;
        /* name length and name, n_dims, the dims, type, offset: no overflow, all are small */
        *bytes += 8 + strlen(t->name) + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
    }
    return check_unique_names(tensors, n_tensors, diag);
}

static uint64_t align_up(uint64_t x, uint64_t alignment) {
    return (x + alignment - 1) / alignment * alignment;
}

/* Where the data section starts, with the alignment chosen; the shared first half of the
   layout and of the writer. */
static lowbit_status measure_metadata(const lb_kv *kvs, int64_t n_kv, const lb_out_tensor *tensors,
                                      int64_t n_tensors, uint32_t *alignment, uint64_t *data_start,
                                      lowbit_diag *diag) {
    if (n_kv < 0 || n_tensors < 0 || (n_kv > 0 && !kvs) || (n_tensors > 0 && !tensors)) {
        return bad(diag, "%s", "bad key-value or tensor list");
    }
    for (int64_t i = 0; i < n_kv; i++) {
        if (!kvs[i].key) return bad(diag, "%s", "a metadata key is NULL");
    }
    uint64_t kv_bytes = 0, info_bytes = 0;
    lowbit_status st = choose_alignment(kvs, n_kv, *alignment, alignment, diag);
    if (st == LOWBIT_OK) st = measure_kvs(kvs, n_kv, &kv_bytes, diag);
    if (st == LOWBIT_OK) st = measure_tensor_infos(tensors, n_tensors, &info_bytes, diag);
    if (st != LOWBIT_OK) return st;
    uint64_t metadata_bytes;
    if (!add_u64(GGUF_HEADER_BYTES + info_bytes, kv_bytes, &metadata_bytes) ||
        metadata_bytes > UINT64_MAX - *alignment) {
        return bad(diag, "%s", "the metadata overflows the file size");
    }
    *data_start = align_up(metadata_bytes, *alignment);
    return LOWBIT_OK;
}

/* Each tensor's offset from the data start: the previous one's plus its padded size. */
static lowbit_status place_tensors(const lb_out_tensor *tensors, int64_t n_tensors,
                                   uint32_t alignment, uint64_t data_start, uint64_t *offsets,
                                   uint64_t *file_size, lowbit_diag *diag) {
    uint64_t position = 0;
    for (int64_t i = 0; i < n_tensors; i++) {
        offsets[i] = position;
        uint64_t end;
        if (!add_u64(position, tensors[i].n_bytes, &end) || end > UINT64_MAX - alignment ||
            align_up(end, alignment) > UINT64_MAX - data_start) {
            return bad(diag, "tensor '%s' overflows the file size", tensors[i].name);
        }
        position = align_up(end, alignment);
    }
    *file_size = data_start + position;
    return LOWBIT_OK;
}

lowbit_status lb_gguf_layout_diag(const lb_kv *kvs, int64_t n_kv, lb_out_tensor *tensors,
                                  int64_t n_tensors, uint32_t alignment, uint64_t *file_size,
                                  lowbit_diag *diag) {
    if (!file_size) return bad(diag, "%s", "no place for the file size");
    uint64_t data_start;
    lowbit_status st = measure_metadata(kvs, n_kv, tensors, n_tensors, &alignment, &data_start, diag);
    if (st != LOWBIT_OK) return st;
    uint64_t *offsets = malloc((size_t)(n_tensors > 0 ? n_tensors : 1) * sizeof *offsets);
    if (!offsets) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    st = place_tensors(tensors, n_tensors, alignment, data_start, offsets, file_size, diag);
    for (int64_t i = 0; st == LOWBIT_OK && i < n_tensors; i++) tensors[i].offset = offsets[i];
    free(offsets);
    return st;
}

lowbit_status lb_gguf_layout(const lb_kv *kvs, int64_t n_kv, lb_out_tensor *tensors,
                             int64_t n_tensors, uint32_t alignment, uint64_t *file_size) {
    return lb_gguf_layout_diag(kvs, n_kv, tensors, n_tensors, alignment, file_size, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* The streaming writer                                                                        */
/* ------------------------------------------------------------------------------------------ */

struct lb_gguf_writer {
    lb_atomic_file *file;
    int64_t n_tensors;
    uint64_t *data_ends;  /* per tensor: offset + n_bytes, from the data start */
    uint64_t *offsets;    /* per tensor, from the data start */
    uint64_t data_start;  /* absolute position of the data section */
    uint64_t file_size;
    int64_t current;      /* the tensor the next byte belongs to */
    lowbit_status failed; /* the first error of a write: the file can only be abandoned */
};

static lowbit_status put_u32(lb_atomic_file *f, uint32_t v, lowbit_diag *diag) {
    const uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return lb_atomic_write(f, le, 4, diag);
}

static lowbit_status put_u64(lb_atomic_file *f, uint64_t v, lowbit_diag *diag) {
    lowbit_status st = put_u32(f, (uint32_t)v, diag);
    return st == LOWBIT_OK ? put_u32(f, (uint32_t)(v >> 32), diag) : st;
}

static lowbit_status put_string(lb_atomic_file *f, const char *s, lowbit_diag *diag) {
    const size_t length = strlen(s);
    lowbit_status st = put_u64(f, length, diag);
    return st == LOWBIT_OK ? lb_atomic_write(f, s, length, diag) : st;
}

static lowbit_status put_metadata(lb_atomic_file *f, const lb_kv *kvs, int64_t n_kv,
                                  const lb_out_tensor *tensors, int64_t n_tensors,
                                  lowbit_diag *diag) {
    lowbit_status st = lb_atomic_write(f, "GGUF", 4, diag);
    if (st == LOWBIT_OK) st = put_u32(f, GGUF_VERSION, diag);
    if (st == LOWBIT_OK) st = put_u64(f, (uint64_t)n_tensors, diag);
    if (st == LOWBIT_OK) st = put_u64(f, (uint64_t)n_kv, diag);
    for (int64_t i = 0; st == LOWBIT_OK && i < n_kv; i++) {
        st = put_string(f, kvs[i].key, diag);
        if (st == LOWBIT_OK) st = put_u32(f, kvs[i].type, diag);
        if (st == LOWBIT_OK) st = lb_atomic_write(f, kvs[i].value, (size_t)kvs[i].value_size, diag);
    }
    for (int64_t i = 0; st == LOWBIT_OK && i < n_tensors; i++) {
        const lb_out_tensor *t = &tensors[i];
        st = put_string(f, t->name, diag);
        if (st == LOWBIT_OK) st = put_u32(f, (uint32_t)t->n_dims, diag);
        for (int d = 0; st == LOWBIT_OK && d < t->n_dims; d++) st = put_u64(f, (uint64_t)t->ne[d], diag);
        if (st == LOWBIT_OK) st = put_u32(f, (uint32_t)t->type, diag);
        if (st == LOWBIT_OK) st = put_u64(f, t->offset, diag);
    }
    return st;
}

static void free_writer(lb_gguf_writer *w) {
    free(w->data_ends);
    free(w->offsets);
    free(w);
}

/* Allocates the writer and records where every tensor goes, checking the caller's offsets. */
static lowbit_status new_writer(const lb_out_tensor *tensors, int64_t n_tensors, uint32_t alignment,
                                uint64_t data_start, lb_gguf_writer **out, lowbit_diag *diag) {
    lb_gguf_writer *w = calloc(1, sizeof *w);
    const size_t n = (size_t)(n_tensors > 0 ? n_tensors : 1);
    if (w) {
        w->data_ends = malloc(n * sizeof *w->data_ends);
        w->offsets = malloc(n * sizeof *w->offsets);
    }
    if (!w || !w->data_ends || !w->offsets) {
        if (w) free_writer(w);
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    }
    w->n_tensors = n_tensors;
    w->data_start = data_start;
    lowbit_status st = place_tensors(tensors, n_tensors, alignment, data_start, w->offsets,
                                     &w->file_size, diag);
    for (int64_t i = 0; st == LOWBIT_OK && i < n_tensors; i++) {
        if (tensors[i].offset != w->offsets[i]) {
            st = lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                             "tensor '%s' has offset %llu where the layout puts it at %llu",
                             tensors[i].name, (unsigned long long)tensors[i].offset,
                             (unsigned long long)w->offsets[i]);
        }
        w->data_ends[i] = w->offsets[i] + tensors[i].n_bytes;
    }
    if (st != LOWBIT_OK) {
        free_writer(w);
        return st;
    }
    *out = w;
    return LOWBIT_OK;
}

lowbit_status lb_gguf_writer_open(const char *final_path, const lb_kv *kvs, int64_t n_kv,
                                  const lb_out_tensor *tensors, int64_t n_tensors,
                                  uint32_t alignment, lb_gguf_writer **out, lowbit_diag *diag) {
    if (!out) return bad(diag, "%s", "no place for the writer");
    *out = NULL;
    uint64_t data_start;
    lowbit_status st = measure_metadata(kvs, n_kv, tensors, n_tensors, &alignment, &data_start, diag);
    lb_gguf_writer *w = NULL;
    if (st == LOWBIT_OK) st = new_writer(tensors, n_tensors, alignment, data_start, &w, diag);
    if (st == LOWBIT_OK) st = lb_atomic_open(final_path, &w->file, diag);
    if (st == LOWBIT_OK) st = put_metadata(w->file, kvs, n_kv, tensors, n_tensors, diag);
    /* the bytes just written were measured by measure_metadata: they cannot run past */
    if (st == LOWBIT_OK && lb_atomic_size(w->file) > data_start) {
        st = lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                         "the metadata changed while it was written");
    }
    if (st == LOWBIT_OK) {
        st = lb_atomic_write_zeros(w->file, data_start - lb_atomic_size(w->file), diag);
    }
    if (st != LOWBIT_OK) {
        lb_gguf_writer_abort(w);
        return st;
    }
    *out = w;
    return LOWBIT_OK;
}

static lowbit_status write_data(lb_gguf_writer *w, const uint8_t *p, uint64_t n_bytes,
                                lowbit_diag *diag) {
    while (n_bytes > 0) {
        if (w->current >= w->n_tensors) {
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                               "%llu bytes more than the %lld tensors hold",
                               (unsigned long long)n_bytes, (long long)w->n_tensors);
        }
        const uint64_t position = lb_atomic_size(w->file) - w->data_start;
        const uint64_t start = w->offsets[w->current];
        lowbit_status st = LOWBIT_OK;
        if (position < start) st = lb_atomic_write_zeros(w->file, start - position, diag);
        const uint64_t at = LB_MAX(position, start);
        const uint64_t take = LB_MIN(n_bytes, w->data_ends[w->current] - at);
        if (st == LOWBIT_OK) st = lb_atomic_write(w->file, p, (size_t)take, diag);
        if (st != LOWBIT_OK) return st;
        if (at + take == w->data_ends[w->current]) w->current++;
        p += take;
        n_bytes -= take;
    }
    return LOWBIT_OK;
}

lowbit_status lb_gguf_writer_write(lb_gguf_writer *w, const void *data, uint64_t n_bytes,
                                   lowbit_diag *diag) {
    if (!w || (!data && n_bytes)) return bad(diag, "%s", "no writer or no data");
    if (w->failed != LOWBIT_OK) {
        return lb_diag_set(diag, w->failed, -1, UINT64_MAX, "an earlier write to this file failed");
    }
    const lowbit_status st = write_data(w, data, n_bytes, diag);
    if (st != LOWBIT_OK) w->failed = st;
    return st;
}

lowbit_status lb_gguf_writer_commit(lb_gguf_writer *w, lowbit_diag *diag) {
    if (!w) return bad(diag, "%s", "no writer");
    lowbit_status st = LOWBIT_OK;
    if (w->failed != LOWBIT_OK) {
        st = lb_diag_set(diag, w->failed, -1, UINT64_MAX,
                         "not written: an earlier write to this file failed");
    } else if (w->current < w->n_tensors) {
        const uint64_t position = lb_atomic_size(w->file) - w->data_start;
        const uint64_t missing =
            w->data_ends[w->current] - LB_MAX(position, w->offsets[w->current]);
        st = lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                         "the file is incomplete: tensor %lld of %lld lacks %llu bytes",
                         (long long)w->current, (long long)w->n_tensors,
                         (unsigned long long)missing);
    }
    /* the last tensor is padded too: the data section is a whole number of alignments */
    if (st == LOWBIT_OK) {
        st = lb_atomic_write_zeros(w->file, w->file_size - lb_atomic_size(w->file), diag);
    }
    if (st == LOWBIT_OK) {
        st = lb_atomic_commit(w->file, diag);
    } else {
        lb_atomic_abort(w->file);
    }
    free_writer(w);
    return st;
}

void lb_gguf_writer_abort(lb_gguf_writer *w) {
    if (!w) return;
    lb_atomic_abort(w->file);
    free_writer(w);
}
