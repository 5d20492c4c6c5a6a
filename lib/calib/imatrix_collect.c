/*
 * Collecting an importance matrix: the forward pass calls an observer before every matrix product
 * with the weight's name and its float input rows; for each weight we add up x^2 per input column
 * and count the rows. Saved in llama.cpp's GGUF imatrix layout (what lib/calib/imatrix.c reads):
 * per weight <name>, <name>.in_sum2 (F32, ne = [n_cols, 1]: the raw sums) and <name>.counts (F32,
 * ne = [1, 1]: rows seen), sorted by name, with the keys general.type = "imatrix",
 * imatrix.datasets, imatrix.chunk_count and imatrix.chunk_size.
 *
 * Sums are kept in double: a column of a long calibration run adds up hundreds of thousands of
 * squares of very different sizes, which float would round away; they are stored as F32, as the
 * format wants.
 *
 * The observer runs on the forward pass's calling thread, once per product, so the collector
 * takes no locks. It cannot return an error: the first failure (out of memory, a weight whose
 * column count changes) is kept and reported by lowbit_imatrix_save.
 */
#include "../common/common.h"
#include "../io/gguf_write.h"
#include "../io/model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct collect_entry {
    char *name;        /* the weight's GGUF name, e.g. "blk.0.attn_q.weight" */
    int64_t n_cols;    /* its input width */
    double *sum2;      /* n_cols sums of x^2 */
    int64_t n_rows;    /* activation rows (tokens) seen */
} collect_entry;

struct lowbit_imatrix_collector {
    collect_entry *entries; /* sorted by name, so lookups are binary searches and saving is in order */
    int64_t n_entries, capacity;
    lowbit_status error;    /* the first failure inside the observer, or LOWBIT_OK */
    char error_message[200];
};

lowbit_status lowbit_imatrix_collector_create(lowbit_imatrix_collector **out) {
    if (!out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = calloc(1, sizeof **out);
    return *out ? LOWBIT_OK : LOWBIT_ERR_NO_MEMORY;
}

void lowbit_imatrix_collector_free(lowbit_imatrix_collector *collector) {
    if (!collector) return;
    for (int64_t i = 0; i < collector->n_entries; i++) {
        free(collector->entries[i].name);
        free(collector->entries[i].sum2);
    }
    free(collector->entries);
    free(collector);
}

/* Keeps the first failure only: later ones are usually its consequences. */
static void record_error(lowbit_imatrix_collector *c, lowbit_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void record_error(lowbit_imatrix_collector *c, lowbit_status status, const char *fmt, ...) {
    if (c->error != LOWBIT_OK) return;
    c->error = status;
    va_list args;
    va_start(args, fmt);
    vsnprintf(c->error_message, sizeof c->error_message, fmt, args);
    va_end(args);
}

/* Index of the entry named `name`, or -(insertion point) - 1 when there is none. */
static int64_t find_entry(const lowbit_imatrix_collector *c, const char *name) {
    int64_t lo = 0, hi = c->n_entries;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        const int cmp = strcmp(c->entries[mid].name, name);
        if (cmp == 0) return mid;
        if (cmp < 0) lo = mid + 1;
        else hi = mid;
    }
    return -lo - 1;
}

/* A new zeroed entry at `at`, keeping the array sorted; NULL when out of memory. Runs once per
   weight (the first product with it), never per token afterwards. */
static collect_entry *insert_entry(lowbit_imatrix_collector *c, int64_t at, const char *name,
                                   int64_t n_cols) {
    if (c->n_entries == c->capacity) {
        const int64_t wanted = c->capacity ? 2 * c->capacity : 64;
        collect_entry *grown = realloc(c->entries, (size_t)wanted * sizeof *grown);
        if (!grown) return NULL;
        c->entries = grown;
        c->capacity = wanted;
    }
    const size_t name_bytes = strlen(name) + 1;
    collect_entry fresh = {malloc(name_bytes), n_cols, calloc((size_t)n_cols, sizeof(double)), 0};
    if (!fresh.name || !fresh.sum2) {
        free(fresh.name);
        free(fresh.sum2);
        return NULL;
    }
    memcpy(fresh.name, name, name_bytes);
    memmove(&c->entries[at + 1], &c->entries[at], (size_t)(c->n_entries - at) * sizeof fresh);
    c->entries[at] = fresh;
    c->n_entries++;
    return &c->entries[at];
}

static void add_squares(collect_entry *e, const float *input, int64_t n_rows) {
    double *sum2 = e->sum2;
    for (int64_t r = 0; r < n_rows; r++) {
        const float *row = input + r * e->n_cols;
        for (int64_t i = 0; i < e->n_cols; i++) sum2[i] += (double)row[i] * (double)row[i];
    }
    e->n_rows += n_rows;
}

/* The lowbit_matmul_observer. */
static void observe_product(void *ctx, const char *weight_name, const float *input, int64_t n_rows,
                            int64_t n_cols) {
    lowbit_imatrix_collector *c = ctx;
    if (c->error != LOWBIT_OK || !weight_name || !input || n_rows <= 0 || n_cols <= 0) return;
    int64_t at = find_entry(c, weight_name);
    collect_entry *e;
    if (at >= 0) {
        e = &c->entries[at];
        if (e->n_cols != n_cols) {
            record_error(c, LOWBIT_ERR_SHAPE, "weight '%s' was multiplied with inputs of %lld and %lld columns",
                         weight_name, (long long)e->n_cols, (long long)n_cols);
            return;
        }
    } else if (strlen(weight_name) + sizeof ".in_sum2" > 64) {
        /* GGUF readers (llama.cpp's included) refuse tensor names of 64 bytes or more */
        record_error(c, LOWBIT_ERR_UNSUPPORTED, "weight name '%s' is too long for an imatrix tensor (%lld + %lld bytes)",
                     weight_name, (long long)strlen(weight_name), (long long)sizeof ".in_sum2" - 1);
        return;
    } else if (!(e = insert_entry(c, -at - 1, weight_name, n_cols))) {
        record_error(c, LOWBIT_ERR_NO_MEMORY, "out of memory collecting '%s' (%lld columns)",
                     weight_name, (long long)n_cols);
        return;
    }
    add_squares(e, input, n_rows);
}

void lowbit_imatrix_attach(lowbit_imatrix_collector *collector, lowbit_llama *llama) {
    if (!llama) return;
    if (collector) lowbit_llama_set_observer(llama, observe_product, collector);
    else lowbit_llama_set_observer(llama, NULL, NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* Saving                                                                                    */
/* ---------------------------------------------------------------------------------------- */

static lowbit_status build_metadata(lb_model *meta, const char *dataset_name, int64_t chunk_count,
                                    int64_t chunk_size) {
    const char *const datasets[1] = {dataset_name};
    const uint64_t lengths[1] = {strlen(dataset_name)};
    lowbit_status st = lb_model_set_string(meta, "general.type", "imatrix");
    if (st == LOWBIT_OK) st = lb_model_set_string_array(meta, "imatrix.datasets", datasets, lengths, 1);
    if (st == LOWBIT_OK) st = lb_model_set_u32(meta, "imatrix.chunk_count", (uint32_t)chunk_count);
    if (st == LOWBIT_OK) st = lb_model_set_u32(meta, "imatrix.chunk_size", (uint32_t)chunk_size);
    return st;
}

/* The file lists tensors sorted by their own names (as llama.cpp writes them); sorting the entries
   by weight name is not quite that (suffixes can interleave with longer weight names), so the
   tensor list is sorted itself. */
static int compare_out_tensors(const void *a, const void *b) {
    return strcmp(((const lb_out_tensor *)a)->name, ((const lb_out_tensor *)b)->name);
}

/* The tensor names ("<weight>.in_sum2" / "<weight>.counts"), 64 bytes each at most. */
typedef struct out_name {
    char text[64];
} out_name;

static void build_tensors(const lowbit_imatrix_collector *c, lb_out_tensor *tensors,
                          out_name *names) {
    for (int64_t i = 0; i < c->n_entries; i++) {
        const collect_entry *e = &c->entries[i];
        lb_out_tensor *sums = &tensors[2 * i], *counts = &tensors[2 * i + 1];
        snprintf(names[2 * i].text, sizeof names[2 * i].text, "%s.in_sum2", e->name);
        snprintf(names[2 * i + 1].text, sizeof names[2 * i + 1].text, "%s.counts", e->name);
        *sums = (lb_out_tensor){names[2 * i].text, LOWBIT_TYPE_F32, 2, {e->n_cols, 1, 1, 1},
                                (uint64_t)e->n_cols * sizeof(float), 0};
        *counts = (lb_out_tensor){names[2 * i + 1].text, LOWBIT_TYPE_F32, 2, {1, 1, 1, 1},
                                  sizeof(float), 0};
    }
    qsort(tensors, (size_t)(2 * c->n_entries), sizeof *tensors, compare_out_tensors);
}

/* The entry a tensor's data comes from: its name without the suffix. */
static const collect_entry *entry_of_tensor(const lowbit_imatrix_collector *c, const char *name,
                                            int *is_counts) {
    const size_t n = strlen(name);
    *is_counts = n > 7 && strcmp(name + n - 7, ".counts") == 0;
    const size_t stem = n - (*is_counts ? 7 : 8);
    char key[64];
    snprintf(key, sizeof key, "%.*s", (int)stem, name);
    const int64_t at = find_entry(c, key);
    return at >= 0 ? &c->entries[at] : NULL;
}

/* Streams each tensor's floats: sums narrowed from double, a chunk at a time. */
static lowbit_status write_tensors(const lowbit_imatrix_collector *c, const lb_out_tensor *tensors,
                                   lb_gguf_writer *w, lowbit_diag *diag) {
    float chunk[1024];
    for (int64_t t = 0; t < 2 * c->n_entries; t++) {
        int is_counts;
        const collect_entry *e = entry_of_tensor(c, tensors[t].name, &is_counts);
        if (!e) return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                                   "imatrix: no entry for tensor '%s'", tensors[t].name);
        if (is_counts) {
            const float rows = (float)e->n_rows;
            const lowbit_status st = lb_gguf_writer_write(w, &rows, sizeof rows, diag);
            if (st != LOWBIT_OK) return st;
            continue;
        }
        for (int64_t i = 0; i < e->n_cols; i += LB_ARRAY_LEN(chunk)) {
            const int64_t n = LB_MIN((int64_t)LB_ARRAY_LEN(chunk), e->n_cols - i);
            for (int64_t k = 0; k < n; k++) chunk[k] = (float)e->sum2[i + k];
            const lowbit_status st = lb_gguf_writer_write(w, chunk, (uint64_t)n * sizeof(float), diag);
            if (st != LOWBIT_OK) return st;
        }
    }
    return LOWBIT_OK;
}

lowbit_status lowbit_imatrix_save(const lowbit_imatrix_collector *collector, const char *path,
                                  const char *dataset_name, int64_t chunk_count,
                                  int64_t chunk_size, lowbit_diag *diag) {
    if (!collector || !path || !dataset_name) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "imatrix save: collector, path and dataset name are required");
    }
    if (chunk_count < 0 || chunk_count > UINT32_MAX || chunk_size < 0 || chunk_size > UINT32_MAX) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "imatrix save: chunk count %lld and chunk size %lld must fit in 32 bits",
                           (long long)chunk_count, (long long)chunk_size);
    }
    if (collector->error != LOWBIT_OK) {
        return lb_diag_set(diag, collector->error, -1, UINT64_MAX, "imatrix: %s",
                           collector->error_message);
    }
    lb_model meta = {0};
    lb_out_tensor *tensors = calloc((size_t)(2 * collector->n_entries + 1), sizeof *tensors);
    out_name *names = calloc((size_t)(2 * collector->n_entries + 1), sizeof *names);
    lowbit_status st = tensors && names ? LOWBIT_OK : LOWBIT_ERR_NO_MEMORY;
    if (st == LOWBIT_OK) st = build_metadata(&meta, dataset_name, chunk_count, chunk_size);
    if (st == LOWBIT_ERR_NO_MEMORY) {
        st = lb_diag_set(diag, st, -1, UINT64_MAX, "out of memory");
    } else if (st != LOWBIT_OK) {
        st = lb_diag_set(diag, st, -1, UINT64_MAX, "imatrix: cannot encode the metadata");
    }
    const int64_t n_tensors = 2 * collector->n_entries;
    uint64_t file_size = 0;
    if (st == LOWBIT_OK) {
        build_tensors(collector, tensors, names);
        st = lb_gguf_layout_diag(meta.kvs, meta.n_kv, tensors, n_tensors, 0, &file_size, diag);
    }
    lb_gguf_writer *w = NULL;
    if (st == LOWBIT_OK) {
        st = lb_gguf_writer_open(path, meta.kvs, meta.n_kv, tensors, n_tensors, 0, &w, diag);
    }
    if (st == LOWBIT_OK) st = write_tensors(collector, tensors, w, diag);
    if (st == LOWBIT_OK) {
        st = lb_gguf_writer_commit(w, diag); /* frees w, on success or failure */
    } else {
        lb_gguf_writer_abort(w);
    }
    lb_model_free(&meta);
    free(tensors);
    free(names);
    return st;
}
