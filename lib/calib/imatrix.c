/*
 * Importance matrices from llama.cpp's two imatrix layouts, told apart by the GGUF magic.
 *
 * GGUF: per weight matrix <name>, the tensors <name>.in_sum2 (F32, ne = [n_cols, n_mat]: the sum
 * of x^2 per input column, per expert) and <name>.counts (F32, ne = [1, n_mat]: how many
 * activation rows each expert saw); the keys imatrix.datasets, imatrix.chunk_count and
 * imatrix.chunk_size. The importance is in_sum2 / count, slice by slice; a slice that saw no rows
 * gets all ones (no information: every column counts the same).
 *
 * Legacy .dat (little-endian int32 and float32): n_entries; per entry name_len, name, ncall,
 * nval, values[nval]; then optionally last_chunk, dataset_len, dataset. A stored value is the
 * mean x^2 times ncall, so the importance is value / ncall. The file does not say how many
 * columns a matrix has: the caller's column count splits the values into expert slices.
 *
 * A malformed file (bad lengths, counts, shapes, truncation) fails to load. A well-formed entry
 * with unusable numbers (NaN, Inf, negative, a non-positive ncall) loads but is reported, with
 * the reason, when the quantizer asks for it.
 */
#include "imatrix.h"

#include "../io/file.h"
#include "../io/model.h"

#include <stdio.h>
#include <stdlib.h>

#define DAT_MAX_NAME 4096

typedef struct im_entry {
    char *name;
    int64_t n_cols;      /* 0 when the file does not say (legacy .dat) */
    int64_t n_values;    /* every slice together */
    float *values;       /* the importance, already divided by the counts */
    char problem[160];   /* non-empty: why the entry cannot be used */
} im_entry;

struct lb_imatrix {
    im_entry *entries;   /* sorted by name once loaded */
    int64_t n_entries;
    char *dataset;
    int64_t chunk_count;
};

static lowbit_status no_memory(lowbit_diag *diag) {
    return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
}

static char *copy_string(const char *s, uint64_t n) {
    char *copy = malloc((size_t)n + 1);
    if (!copy) return NULL;
    memcpy(copy, s, (size_t)n);
    copy[n] = '\0';
    return copy;
}

static uint64_t load_le(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* A new entry at the end of the array (the array has room: callers size it up front). */
static im_entry *add_entry(lb_imatrix *im, const char *name, uint64_t name_length, int64_t n_values) {
    im_entry *e = &im->entries[im->n_entries];
    memset(e, 0, sizeof *e);
    e->name = copy_string(name, name_length);
    e->values = malloc((size_t)(n_values > 0 ? n_values : 1) * sizeof *e->values);
    if (!e->name || !e->values) {
        free(e->name);
        free(e->values);
        return NULL;
    }
    e->n_values = n_values;
    im->n_entries++;
    return e;
}

/* Marks values that are NaN, Inf or negative: the quantizer's weights must be finite and >= 0. */
static void check_values(im_entry *e) {
    for (int64_t i = 0; i < e->n_values && !e->problem[0]; i++) {
        if (!isfinite(e->values[i]) || e->values[i] < 0) {
            snprintf(e->problem, sizeof e->problem, "value %lld is %g (must be finite and >= 0)",
                     (long long)i, (double)e->values[i]);
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* GGUF                                                                                      */
/* ---------------------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix, size_t *stem_length) {
    const size_t n = strlen(s), k = strlen(suffix);
    if (n <= k || strcmp(s + n - k, suffix) != 0) return 0;
    *stem_length = n - k;
    return 1;
}

/* The first string of imatrix.datasets (the name the output's quantize.imatrix.dataset key
   takes); the array must hold strings only. Bounds are checked although the GGUF reader has
   already checked them: this code reads the encoding itself. */
static lowbit_status read_datasets(lb_imatrix *im, const lb_kv *kv, lowbit_diag *diag) {
    if (kv->type != LOWBIT_GGUF_ARRAY || kv->value_size < 12 ||
        load_le(kv->value, 4) != LOWBIT_GGUF_STRING) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "imatrix key imatrix.datasets is not an array of strings");
    }
    const uint64_t count = load_le(kv->value + 4, 8);
    uint64_t length = 0;
    const char *first = "";
    if (count > 0) {
        if (kv->value_size < 20 || (length = load_le(kv->value + 12, 8)) > kv->value_size - 20) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                               "imatrix key imatrix.datasets is truncated");
        }
        first = (const char *)kv->value + 20;
    }
    im->dataset = copy_string(first, length);
    return im->dataset ? LOWBIT_OK : no_memory(diag);
}

static lowbit_status read_gguf_keys(lb_imatrix *im, const lb_model *g, lowbit_diag *diag) {
    static const char *const required[] = {"imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"};
    for (int i = 0; i < LB_ARRAY_LEN(required); i++) {
        if (!lb_model_find_kv(g, required[i])) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                               "imatrix file has no %s key (required)", required[i]);
        }
    }
    uint64_t chunk_count, chunk_size;
    if (!lb_kv_get_u64(lb_model_find_kv(g, "imatrix.chunk_count"), &chunk_count) || chunk_count > INT64_MAX) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "imatrix key imatrix.chunk_count is not a non-negative integer");
    }
    if (!lb_kv_get_u64(lb_model_find_kv(g, "imatrix.chunk_size"), &chunk_size)) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "imatrix key imatrix.chunk_size is not a non-negative integer");
    }
    im->chunk_count = (int64_t)chunk_count;
    return read_datasets(im, lb_model_find_kv(g, "imatrix.datasets"), diag);
}

static int is_plain_f32(const lb_tensor *t) {
    return t->type == LOWBIT_TYPE_F32 && t->ne[2] == 1 && t->ne[3] == 1;
}

/* One matrix: in_sum2 divided by its counts, slice by slice. */
static lowbit_status read_gguf_entry(lb_imatrix *im, const lb_tensor *sums, const lb_tensor *counts,
                                     size_t stem_length, lowbit_diag *diag) {
    if (!is_plain_f32(sums)) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "imatrix tensor '%s' is not a 2-D F32 tensor", sums->name);
    }
    const int64_t n_cols = sums->ne[0], n_mat = sums->ne[1];
    if (!is_plain_f32(counts) || counts->ne[0] != 1 || counts->ne[1] != n_mat) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "imatrix tensor '%s' is not F32 of shape [1, %lld] to match '%s'",
                           counts->name, (long long)n_mat, sums->name);
    }
    im_entry *e = add_entry(im, sums->name, stem_length, n_cols * n_mat);
    if (!e) return no_memory(diag);
    e->n_cols = n_cols;
    /* copied, not cast: the GGUF data need not be 4-byte aligned */
    memcpy(e->values, sums->data, (size_t)(n_cols * n_mat) * sizeof(float));
    for (int64_t j = 0; j < n_mat; j++) {
        float count;
        memcpy(&count, (const uint8_t *)counts->data + 4 * j, sizeof count);
        float *slice = e->values + j * n_cols;
        if (!isfinite(count) || count < 0) {
            snprintf(e->problem, sizeof e->problem, "count of slice %lld is %g", (long long)j, (double)count);
        } else if (count == 0) {
            for (int64_t i = 0; i < n_cols; i++) slice[i] = 1.0f;
        } else {
            for (int64_t i = 0; i < n_cols; i++) slice[i] /= count;
        }
    }
    check_values(e);
    return LOWBIT_OK;
}

static lowbit_status read_gguf_tensors(lb_imatrix *im, const lb_model *g, lowbit_diag *diag) {
    /* every entry takes two tensors: half the tensor count bounds the entries */
    im->entries = calloc((size_t)(g->n_tensors / 2 + 1), sizeof *im->entries);
    if (!im->entries) return no_memory(diag);
    char name[LB_MAX_TENSOR_NAME + 16];
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const lb_tensor *t = &g->tensors[i];
        size_t stem;
        if (ends_with(t->name, ".in_sum2", &stem)) {
            snprintf(name, sizeof name, "%.*s.counts", (int)stem, t->name);
            const lb_tensor *counts = lb_model_find_tensor(g, name);
            if (!counts) {
                return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                                   "imatrix tensor '%s' has no '%s' beside it", t->name, name);
            }
            const lowbit_status st = read_gguf_entry(im, t, counts, stem, diag);
            if (st != LOWBIT_OK) return st;
        } else if (ends_with(t->name, ".counts", &stem)) {
            snprintf(name, sizeof name, "%.*s.in_sum2", (int)stem, t->name);
            if (!lb_model_find_tensor(g, name)) {
                return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                                   "imatrix tensor '%s' has no '%s' beside it", t->name, name);
            }
        } else {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                               "imatrix tensor '%s' is neither <name>.in_sum2 nor <name>.counts", t->name);
        }
    }
    return LOWBIT_OK;
}

static lowbit_status load_gguf(lb_imatrix *im, const char *path, lowbit_diag *diag) {
    lb_model g = {0};
    lowbit_status st = lb_read_gguf_model(path, &g, diag);
    if (st != LOWBIT_OK) return st;
    st = read_gguf_keys(im, &g, diag);
    if (st == LOWBIT_OK) st = read_gguf_tensors(im, &g, diag);
    lb_model_free(&g);
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* Legacy .dat                                                                               */
/* ---------------------------------------------------------------------------------------- */

typedef struct dat_cursor {
    const uint8_t *base;
    uint64_t size, pos;
    lowbit_diag *diag;
} dat_cursor;

static lowbit_status dat_truncated(dat_cursor *c, const char *what) {
    return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, c->pos,
                       "imatrix file truncated at byte %llu while reading %s",
                       (unsigned long long)c->pos, what);
}

static lowbit_status dat_i32(dat_cursor *c, int32_t *v, const char *what) {
    if (c->size - c->pos < 4) return dat_truncated(c, what);
    *v = (int32_t)(uint32_t)load_le(c->base + c->pos, 4);
    c->pos += 4;
    return LOWBIT_OK;
}

/* A length or count at the cursor, within [min, max] and leaving at least `each` bytes per unit
   in the rest of the file. */
static lowbit_status dat_count(dat_cursor *c, int32_t min, int32_t max, uint64_t each,
                               int32_t *v, const char *what) {
    const uint64_t at = c->pos;
    lowbit_status st = dat_i32(c, v, what);
    if (st != LOWBIT_OK) return st;
    if (*v < min || *v > max) {
        return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, at,
                           "imatrix %s %d at byte %llu is out of range [%d, %d]", what, (int)*v,
                           (unsigned long long)at, (int)min, (int)max);
    }
    if ((uint64_t)*v > (c->size - c->pos) / each) return dat_truncated(c, what);
    return LOWBIT_OK;
}

static lowbit_status read_dat_entry(lb_imatrix *im, dat_cursor *c) {
    int32_t name_length = 0, ncall = 0, nval = 0;
    const uint64_t at = c->pos;
    lowbit_status st = dat_count(c, 1, DAT_MAX_NAME, 1, &name_length, "entry name length");
    if (st != LOWBIT_OK) return st;
    const char *name = (const char *)c->base + c->pos;
    if (memchr(name, 0, (size_t)name_length)) {
        return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, at,
                           "imatrix entry name at byte %llu holds a NUL", (unsigned long long)at);
    }
    c->pos += (uint64_t)name_length;
    st = dat_i32(c, &ncall, "entry call count");
    if (st == LOWBIT_OK) st = dat_count(c, 1, INT32_MAX, 4, &nval, "entry value count");
    if (st != LOWBIT_OK) return st;
    im_entry *e = add_entry(im, name, (uint64_t)name_length, nval);
    if (!e) return no_memory(c->diag);
    memcpy(e->values, c->base + c->pos, (size_t)nval * sizeof(float));
    c->pos += 4 * (uint64_t)nval;
    if (ncall <= 0) {
        snprintf(e->problem, sizeof e->problem, "its call count is %d (must be positive)", (int)ncall);
        return LOWBIT_OK;
    }
    for (int32_t i = 0; i < nval; i++) e->values[i] /= (float)ncall;
    check_values(e);
    return LOWBIT_OK;
}

/* The optional trailer: last chunk and the dataset's name; nothing may follow it. */
static lowbit_status read_dat_trailer(lb_imatrix *im, dat_cursor *c) {
    if (c->pos == c->size) {
        im->dataset = copy_string("", 0);
        return im->dataset ? LOWBIT_OK : no_memory(c->diag);
    }
    int32_t last_chunk = 0, dataset_length = 0;
    const uint64_t at = c->pos;
    lowbit_status st = dat_i32(c, &last_chunk, "last chunk");
    if (st == LOWBIT_OK && last_chunk < 0) {
        st = lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, at, "imatrix last chunk %d at byte %llu is negative",
                         (int)last_chunk, (unsigned long long)at);
    }
    if (st == LOWBIT_OK) st = dat_count(c, 0, INT32_MAX, 1, &dataset_length, "dataset name length");
    if (st != LOWBIT_OK) return st;
    im->chunk_count = last_chunk;
    im->dataset = copy_string((const char *)c->base + c->pos, (uint64_t)dataset_length);
    if (!im->dataset) return no_memory(c->diag);
    c->pos += (uint64_t)dataset_length;
    if (c->pos != c->size) {
        return lb_diag_set(c->diag, LOWBIT_ERR_BAD_FILE, -1, c->pos,
                           "imatrix file has %llu unexpected bytes after its trailer at byte %llu",
                           (unsigned long long)(c->size - c->pos), (unsigned long long)c->pos);
    }
    return LOWBIT_OK;
}

static lowbit_status load_dat(lb_imatrix *im, const lb_mapped_file *file, lowbit_diag *diag) {
    dat_cursor c = {file->data, file->size, 0, diag};
    int32_t n_entries = 0;
    /* an entry takes at least 4 + 1 + 4 + 4 + 4 bytes */
    lowbit_status st = dat_count(&c, 0, INT32_MAX, 17, &n_entries, "entry count");
    if (st != LOWBIT_OK) return st;
    im->entries = calloc((size_t)n_entries + 1, sizeof *im->entries);
    if (!im->entries) return no_memory(diag);
    for (int32_t i = 0; i < n_entries && st == LOWBIT_OK; i++) st = read_dat_entry(im, &c);
    if (st == LOWBIT_OK) st = read_dat_trailer(im, &c);
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* Loading and lookup                                                                        */
/* ---------------------------------------------------------------------------------------- */

static int compare_entries(const void *a, const void *b) {
    return strcmp(((const im_entry *)a)->name, ((const im_entry *)b)->name);
}

static lowbit_status sort_entries(lb_imatrix *im, lowbit_diag *diag) {
    if (im->n_entries > 1) qsort(im->entries, (size_t)im->n_entries, sizeof *im->entries, compare_entries);
    for (int64_t i = 1; i < im->n_entries; i++) {
        if (strcmp(im->entries[i - 1].name, im->entries[i].name) == 0) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                               "imatrix file has two entries named '%.200s'", im->entries[i].name);
        }
    }
    return LOWBIT_OK;
}

lowbit_status lb_imatrix_load(const char *path, lb_imatrix **out, lowbit_diag *diag) {
    if (!path || !out) return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "bad arguments");
    *out = NULL;
    lb_imatrix *im = calloc(1, sizeof *im);
    if (!im) return no_memory(diag);
    lb_mapped_file file;
    lowbit_status st = lb_map_file(path, &file, diag);
    if (st == LOWBIT_OK) {
        const int is_gguf = file.size >= 4 && memcmp(file.data, "GGUF", 4) == 0;
        if (is_gguf) {
            lb_unmap_file(&file); /* the GGUF reader maps it again itself */
            st = load_gguf(im, path, diag);
        } else {
            st = load_dat(im, &file, diag);
            lb_unmap_file(&file);
        }
    }
    if (st == LOWBIT_OK) st = sort_entries(im, diag);
    if (st != LOWBIT_OK) {
        lb_imatrix_free(im);
        return st;
    }
    *out = im;
    return LOWBIT_OK;
}

void lb_imatrix_free(lb_imatrix *im) {
    if (!im) return;
    for (int64_t i = 0; i < im->n_entries; i++) {
        free(im->entries[i].name);
        free(im->entries[i].values);
    }
    free(im->entries);
    free(im->dataset);
    free(im);
}

/* Reports an entry that exists but cannot serve the request. */
static const float *entry_error(int *error, lowbit_diag *diag, lowbit_status st, const im_entry *e,
                                const char *problem) {
    if (error) *error = 1;
    lb_diag_set(diag, st, -1, UINT64_MAX, "imatrix entry '%.100s': %s", e->name, problem);
    return NULL;
}

const float *lb_imatrix_find(const lb_imatrix *im, const char *tensor_name, int64_t n_cols,
                             int64_t slice, int *error, lowbit_diag *diag) {
    if (error) *error = 0;
    if (!im || !tensor_name || im->n_entries == 0) return NULL;
    const im_entry key = {.name = (char *)tensor_name};
    const im_entry *e = bsearch(&key, im->entries, (size_t)im->n_entries, sizeof *im->entries, compare_entries);
    if (!e) return NULL;
    if (e->problem[0]) return entry_error(error, diag, LOWBIT_ERR_NONFINITE, e, e->problem);
    char problem[160];
    if (n_cols <= 0 || (e->n_cols && e->n_cols != n_cols) || e->n_values % n_cols != 0) {
        snprintf(problem, sizeof problem, "its %lld values (%lld columns) do not fit rows of %lld columns",
                 (long long)e->n_values, (long long)e->n_cols, (long long)n_cols);
        return entry_error(error, diag, LOWBIT_ERR_SHAPE, e, problem);
    }
    if (slice < 0 || slice >= e->n_values / n_cols) {
        snprintf(problem, sizeof problem, "it has %lld slices, slice %lld was asked for",
                 (long long)(e->n_values / n_cols), (long long)slice);
        return entry_error(error, diag, LOWBIT_ERR_SHAPE, e, problem);
    }
    return e->values + slice * n_cols;
}

int64_t lb_imatrix_entry_count(const lb_imatrix *im) { return im ? im->n_entries : 0; }

const char *lb_imatrix_dataset(const lb_imatrix *im) { return im && im->dataset ? im->dataset : ""; }

int64_t lb_imatrix_chunk_count(const lb_imatrix *im) { return im ? im->chunk_count : 0; }
