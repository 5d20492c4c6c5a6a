/* The imatrix reader: GGUF files written byte by byte here (v3 layout) and legacy .dat files;
   lookups, the division by counts / ncall, per-entry errors, and malformed files refused. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "calib/imatrix.h"
#include "testing.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char folder[256];
static char path[300];

/* A growable byte buffer. */
typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *bytes, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, bytes, n);
    b->n += n;
}

static void put_le(buf *b, uint64_t v, int bytes) {
    uint8_t le[8];
    for (int i = 0; i < bytes; i++) le[i] = (uint8_t)(v >> (8 * i));
    put(b, le, (size_t)bytes);
}

static void put_f32(buf *b, float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    put_le(b, bits, 4);
}

static void put_gguf_string(buf *b, const char *s) {
    put_le(b, strlen(s), 8);
    put(b, s, strlen(s));
}

static void write_file(const buf *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (n) fwrite(b->p, 1, n, f);
    fclose(f);
}

/* ---------------------------------------------------------------------------------------- */
/* GGUF                                                                                      */
/* ---------------------------------------------------------------------------------------- */

typedef struct gtensor {
    const char *name;
    uint32_t type;        /* 0 = F32, 1 = F16 */
    int n_dims;
    int64_t ne[2];
    const float *values;  /* ne[0] * ne[1] of them (written as F32 bits, or F16 halves) */
} gtensor;

enum { KEY_DATASETS = 1, KEY_CHUNK_COUNT = 2, KEY_CHUNK_SIZE = 4, DATASETS_NOT_STRINGS = 8 };

/* header, KVs, tensor infos, padding to 32, the data of each tensor at 32-byte aligned offsets */
static buf build_gguf(int keys, const gtensor *tensors, int n_tensors) {
    buf b = {0};
    int n_kv = 1 + !!(keys & KEY_DATASETS) + !!(keys & KEY_CHUNK_COUNT) + !!(keys & KEY_CHUNK_SIZE);
    put(&b, "GGUF", 4);
    put_le(&b, 3, 4);
    put_le(&b, (uint64_t)n_tensors, 8);
    put_le(&b, (uint64_t)n_kv, 8);
    put_gguf_string(&b, "general.type");
    put_le(&b, 8, 4);
    put_gguf_string(&b, "imatrix");
    if (keys & KEY_DATASETS) {
        put_gguf_string(&b, "imatrix.datasets");
        put_le(&b, 9, 4); /* array */
        if (keys & DATASETS_NOT_STRINGS) {
            put_le(&b, 4, 4); /* of u32 */
            put_le(&b, 1, 8);
            put_le(&b, 7, 4);
        } else {
            put_le(&b, 8, 4); /* of strings */
            put_le(&b, 2, 8);
            put_gguf_string(&b, "wiki.train.raw");
            put_gguf_string(&b, "extra.txt");
        }
    }
    if (keys & KEY_CHUNK_COUNT) {
        put_gguf_string(&b, "imatrix.chunk_count");
        put_le(&b, 4, 4);
        put_le(&b, 123, 4);
    }
    if (keys & KEY_CHUNK_SIZE) {
        put_gguf_string(&b, "imatrix.chunk_size");
        put_le(&b, 4, 4);
        put_le(&b, 512, 4);
    }
    uint64_t offset = 0;
    for (int t = 0; t < n_tensors; t++) {
        put_gguf_string(&b, tensors[t].name);
        put_le(&b, (uint64_t)tensors[t].n_dims, 4);
        for (int d = 0; d < tensors[t].n_dims; d++) put_le(&b, (uint64_t)tensors[t].ne[d], 8);
        put_le(&b, tensors[t].type, 4);
        put_le(&b, offset, 8);
        const uint64_t bytes = (uint64_t)(tensors[t].ne[0] * tensors[t].ne[1]) * (tensors[t].type ? 2 : 4);
        offset += (bytes + 31) / 32 * 32;
    }
    while (b.n % 32) put_le(&b, 0, 1);
    for (int t = 0; t < n_tensors; t++) {
        const int64_t n = tensors[t].ne[0] * tensors[t].ne[1];
        for (int64_t i = 0; i < n; i++) {
            if (tensors[t].type) {
                put_le(&b, lowbit_fp32_to_fp16(tensors[t].values[i]), 2);
            } else {
                put_f32(&b, tensors[t].values[i]);
            }
        }
        while (b.n % 32) put_le(&b, 0, 1);
    }
    return b;
}

static const float q_sums[4] = {2, 4, 6, 8}, q_count[1] = {2};
static const float exps_sums[6] = {3, 6, 1, 1, 10, 20}, exps_counts[3] = {3, 0, 5};
static float nan_sums[2] = {1, 0}; /* [1] set to NaN at run time */
static const float one_count[1] = {1}, neg_count[1] = {-1}, two_sums[2] = {1, 1};

#define GOOD_TENSORS                                                                               \
    {"blk.0.attn_q.weight.counts", 0, 2, {1, 1}, q_count},                                          \
    {"blk.0.attn_q.weight.in_sum2", 0, 2, {4, 1}, q_sums},                                          \
    {"blk.0.ffn_down_exps.weight.in_sum2", 0, 2, {2, 3}, exps_sums},                                \
    {"blk.0.ffn_down_exps.weight.counts", 0, 2, {1, 3}, exps_counts},                               \
    {"blk.1.attn_k.weight.in_sum2", 0, 2, {2, 1}, nan_sums},                                        \
    {"blk.1.attn_k.weight.counts", 0, 2, {1, 1}, one_count},                                        \
    {"blk.1.attn_v.weight.in_sum2", 0, 1, {2, 1}, two_sums},                                        \
    {"blk.1.attn_v.weight.counts", 0, 2, {1, 1}, neg_count}

static void check_slice(const lb_imatrix *im, const char *name, int64_t n_cols, int64_t slice,
                        const float *expected) {
    int error = -1;
    lowbit_diag diag = {0};
    const float *v = lb_imatrix_find(im, name, n_cols, slice, &error, &diag);
    CHECK(v != NULL && error == 0, "%s slice %lld: %s", name, (long long)slice, diag.message);
    for (int64_t i = 0; v && i < n_cols; i++) {
        CHECK(v[i] == expected[i], "%s slice %lld [%lld] = %g, expected %g", name, (long long)slice,
              (long long)i, (double)v[i], (double)expected[i]);
    }
}

static void check_find_error(const lb_imatrix *im, const char *name, int64_t n_cols, int64_t slice,
                             const char *fragment) {
    int error = 0;
    lowbit_diag diag = {0};
    const float *v = lb_imatrix_find(im, name, n_cols, slice, &error, &diag);
    CHECK(v == NULL && error == 1, "%s (%lld cols, slice %lld): not an error", name, (long long)n_cols, (long long)slice);
    CHECK(strstr(diag.message, name) && strstr(diag.message, fragment), "%s: message '%s' lacks '%s'", name,
          diag.message, fragment);
}

static void check_load_fails(const char *what, lowbit_status status, const char *fragment) {
    lb_imatrix *im = (lb_imatrix *)&im; /* a non-NULL value the call must clear */
    lowbit_diag diag = {0};
    const lowbit_status st = lb_imatrix_load(path, &im, &diag);
    CHECK(st == status && im == NULL, "%s: status %d (%s), expected %d", what, (int)st, diag.message, (int)status);
    CHECK(strstr(diag.message, fragment) != NULL, "%s: message '%s' lacks '%s'", what, diag.message, fragment);
    if (st == LOWBIT_OK) lb_imatrix_free(im);
}

static void test_gguf_good(void) {
    nan_sums[1] = NAN;
    const gtensor tensors[] = {GOOD_TENSORS};
    buf b = build_gguf(KEY_DATASETS | KEY_CHUNK_COUNT | KEY_CHUNK_SIZE, tensors, LB_ARRAY_LEN(tensors));
    write_file(&b, b.n);
    lb_imatrix *im = NULL;
    lowbit_diag diag = {0};
    CHECK(lb_imatrix_load(path, &im, &diag) == LOWBIT_OK, "load: %s", diag.message);
    if (im) {
        CHECK(lb_imatrix_entry_count(im) == 4, "%lld entries", (long long)lb_imatrix_entry_count(im));
        CHECK(strcmp(lb_imatrix_dataset(im), "wiki.train.raw") == 0, "dataset '%s'", lb_imatrix_dataset(im));
        CHECK(lb_imatrix_chunk_count(im) == 123, "chunk count");
        check_slice(im, "blk.0.attn_q.weight", 4, 0, (const float[]){1, 2, 3, 4});
        check_slice(im, "blk.0.ffn_down_exps.weight", 2, 0, (const float[]){1, 2});
        check_slice(im, "blk.0.ffn_down_exps.weight", 2, 1, (const float[]){1, 1}); /* count 0 */
        check_slice(im, "blk.0.ffn_down_exps.weight", 2, 2, (const float[]){2, 4});
        int error = -1;
        CHECK(lb_imatrix_find(im, "blk.9.attn_q.weight", 4, 0, &error, NULL) == NULL && error == 0, "absent entry");
        CHECK(lb_imatrix_find(im, "blk.0.attn_q.weight.in_sum2", 4, 0, &error, NULL) == NULL && error == 0,
              "tensor names are not entries");
        check_find_error(im, "blk.0.attn_q.weight", 8, 0, "columns");
        check_find_error(im, "blk.0.attn_q.weight", 2, 0, "columns"); /* divides, but the file says 4 */
        check_find_error(im, "blk.0.ffn_down_exps.weight", 2, 3, "slice 3");
        check_find_error(im, "blk.0.ffn_down_exps.weight", 2, -1, "slice -1");
        check_find_error(im, "blk.1.attn_k.weight", 2, 0, "nan");
        check_find_error(im, "blk.1.attn_v.weight", 2, 0, "count of slice 0 is -1");
        lb_imatrix_free(im);
    }
    free(b.p);
}

static void test_gguf_bad(void) {
    const gtensor good[] = {GOOD_TENSORS};
    const int all = KEY_DATASETS | KEY_CHUNK_COUNT | KEY_CHUNK_SIZE;
    static const struct { int keys; const char *missing; } missing[] = {
        {KEY_CHUNK_COUNT | KEY_CHUNK_SIZE, "imatrix.datasets"},
        {KEY_DATASETS | KEY_CHUNK_SIZE, "imatrix.chunk_count"},
        {KEY_DATASETS | KEY_CHUNK_COUNT, "imatrix.chunk_size"},
    };
    for (int i = 0; i < LB_ARRAY_LEN(missing); i++) {
        buf b = build_gguf(missing[i].keys, good, LB_ARRAY_LEN(good));
        write_file(&b, b.n);
        check_load_fails(missing[i].missing, LOWBIT_ERR_BAD_FILE, missing[i].missing);
        free(b.p);
    }
    buf b = build_gguf(all | DATASETS_NOT_STRINGS, good, LB_ARRAY_LEN(good));
    write_file(&b, b.n);
    check_load_fails("datasets of u32", LOWBIT_ERR_BAD_FILE, "not an array of strings");
    free(b.p);

    static const struct { gtensor t[2]; const char *fragment; } bad[] = {
        {{{"a.in_sum2", 0, 2, {4, 1}, q_sums}, {"a.counts", 0, 2, {1, 2}, exps_counts}}, "shape [1, 1]"},
        {{{"a.in_sum2", 0, 2, {4, 1}, q_sums}, {"a.counts", 0, 2, {2, 1}, exps_counts}}, "'a.counts'"},
        {{{"a.in_sum2", 1, 2, {4, 1}, q_sums}, {"a.counts", 0, 2, {1, 1}, q_count}}, "not a 2-D F32"},
        {{{"a.in_sum2", 0, 2, {4, 1}, q_sums}, {"b.counts", 0, 2, {1, 1}, q_count}}, "no 'a.counts'"},
        {{{"b.counts", 0, 2, {1, 1}, q_count}, {"a.in_sum2", 0, 2, {4, 1}, q_sums}}, "no 'b.in_sum2'"},
        {{{"a.sums", 0, 2, {1, 1}, q_count}, {"a.in_sum2", 0, 2, {4, 1}, q_sums}}, "'a.sums' is neither"},
    };
    for (int i = 0; i < LB_ARRAY_LEN(bad); i++) {
        b = build_gguf(all, bad[i].t, 2);
        write_file(&b, b.n);
        check_load_fails(bad[i].fragment, LOWBIT_ERR_BAD_FILE, bad[i].fragment);
        free(b.p);
    }

    /* every truncation of a good file is refused (by the GGUF reader), up to the end of the
       last tensor's 4 bytes (the 28 bytes of padding after them are not needed) */
    b = build_gguf(all, good, LB_ARRAY_LEN(good));
    int refused = 0, cuts = 0;
    for (size_t cut = 0; cut < b.n - 28; cut += 3) {
        write_file(&b, cut);
        lb_imatrix *im = NULL;
        lowbit_diag diag = {0};
        const lowbit_status st = lb_imatrix_load(path, &im, &diag);
        refused += st != LOWBIT_OK && im == NULL && diag.message[0] != '\0';
        cuts++;
        lb_imatrix_free(im);
    }
    CHECK(refused == cuts, "%d of %d truncations refused", refused, cuts);
    free(b.p);
}

/* ---------------------------------------------------------------------------------------- */
/* Legacy .dat                                                                               */
/* ---------------------------------------------------------------------------------------- */

static void put_dat_entry(buf *b, const char *name, int32_t ncall, int32_t nval, const float *values) {
    put_le(b, (uint32_t)strlen(name), 4);
    put(b, name, strlen(name));
    put_le(b, (uint32_t)ncall, 4);
    put_le(b, (uint32_t)nval, 4);
    for (int32_t i = 0; i < nval; i++) put_f32(b, values[i]);
}

static void put_trailer(buf *b, int32_t last_chunk, const char *dataset) {
    put_le(b, (uint32_t)last_chunk, 4);
    put_le(b, (uint32_t)strlen(dataset), 4);
    put(b, dataset, strlen(dataset));
}

/* Two good entries (stored values are mean * ncall), one with ncall 0, one with a negative
   value, one with Inf. Returns the offset where the entries end. */
static size_t build_dat(buf *b) {
    put_le(b, 5, 4);
    put_dat_entry(b, "blk.0.attn_q.weight", 2, 4, (const float[]){2, 4, 6, 8});
    put_dat_entry(b, "blk.0.ffn_down_exps.weight", 4, 6, (const float[]){4, 8, 12, 16, 2, 1});
    put_dat_entry(b, "blk.1.attn_q.weight", 0, 2, (const float[]){1, 1});
    put_dat_entry(b, "blk.1.attn_k.weight", 1, 2, (const float[]){1, -1});
    put_dat_entry(b, "blk.1.attn_v.weight", 1, 2, (const float[]){INFINITY, 1});
    return b->n;
}

static void test_dat_good(void) {
    buf b = {0};
    build_dat(&b);
    put_trailer(&b, 77, "calibration.txt");
    write_file(&b, b.n);
    lb_imatrix *im = NULL;
    lowbit_diag diag = {0};
    CHECK(lb_imatrix_load(path, &im, &diag) == LOWBIT_OK, "load .dat: %s", diag.message);
    if (im) {
        CHECK(lb_imatrix_entry_count(im) == 5, "%lld entries", (long long)lb_imatrix_entry_count(im));
        CHECK(strcmp(lb_imatrix_dataset(im), "calibration.txt") == 0, "dataset '%s'", lb_imatrix_dataset(im));
        CHECK(lb_imatrix_chunk_count(im) == 77, "last chunk");
        check_slice(im, "blk.0.attn_q.weight", 4, 0, (const float[]){1, 2, 3, 4});
        /* 6 values with 2 columns: 3 slices; or 3 columns: 2 slices */
        check_slice(im, "blk.0.ffn_down_exps.weight", 2, 0, (const float[]){1, 2});
        check_slice(im, "blk.0.ffn_down_exps.weight", 2, 2, (const float[]){0.5f, 0.25f});
        check_slice(im, "blk.0.ffn_down_exps.weight", 3, 1, (const float[]){4, 0.5f, 0.25f});
        check_find_error(im, "blk.0.ffn_down_exps.weight", 4, 0, "columns");
        check_find_error(im, "blk.0.ffn_down_exps.weight", 3, 2, "slice 2");
        check_find_error(im, "blk.1.attn_q.weight", 2, 0, "call count is 0");
        check_find_error(im, "blk.1.attn_k.weight", 2, 0, "value 1 is -1");
        check_find_error(im, "blk.1.attn_v.weight", 2, 0, "value 0 is inf");
        lb_imatrix_free(im);
    }
    free(b.p);

    /* without the trailer */
    b = (buf){0};
    build_dat(&b);
    write_file(&b, b.n);
    im = NULL;
    CHECK(lb_imatrix_load(path, &im, &diag) == LOWBIT_OK, "no trailer: %s", diag.message);
    if (im) {
        CHECK(strcmp(lb_imatrix_dataset(im), "") == 0 && lb_imatrix_chunk_count(im) == 0, "no dataset, no chunks");
        lb_imatrix_free(im);
    }
    free(b.p);

    /* no entries at all */
    b = (buf){0};
    put_le(&b, 0, 4);
    write_file(&b, b.n);
    im = NULL;
    CHECK(lb_imatrix_load(path, &im, &diag) == LOWBIT_OK && lb_imatrix_entry_count(im) == 0, "empty: %s", diag.message);
    CHECK(lb_imatrix_find(im, "x", 4, 0, NULL, NULL) == NULL, "find in an empty imatrix");
    lb_imatrix_free(im);
    free(b.p);
}

static void write_dat_and_fail(buf *b, const char *what, const char *fragment) {
    write_file(b, b->n);
    check_load_fails(what, LOWBIT_ERR_BAD_FILE, fragment);
    free(b->p);
    *b = (buf){0};
}

static void test_dat_bad(void) {
    buf b = {0};
    put_le(&b, (uint32_t)-1, 4);
    write_dat_and_fail(&b, "negative entry count", "entry count -1");
    put_le(&b, 1000000, 4);
    put_dat_entry(&b, "a", 1, 1, (const float[]){1});
    write_dat_and_fail(&b, "entry count past the file", "truncated");
    put_le(&b, 1, 4);
    put_dat_entry(&b, "", 1, 1, (const float[]){1});
    put(&b, "padding", 7); /* so that the entry count alone is plausible */
    write_dat_and_fail(&b, "empty name", "entry name length 0");
    put_le(&b, 1, 4);
    put_le(&b, (uint32_t)-5, 4);
    put(&b, "abcdefghijklmnop", 16);
    write_dat_and_fail(&b, "negative name length", "entry name length -5");
    put_le(&b, 1, 4);
    put_le(&b, 100, 4);
    put(&b, "abcdefghijklmnop", 16);
    write_dat_and_fail(&b, "name past the end", "truncated");
    put_le(&b, 1, 4);
    put_le(&b, 3, 4);
    put(&b, "a\0b", 3);
    put_le(&b, 1, 4);
    put_le(&b, 1, 4);
    put_f32(&b, 1);
    write_dat_and_fail(&b, "NUL in name", "holds a NUL");
    put_le(&b, 1, 4);
    put_dat_entry(&b, "a", 1, 0, NULL);
    put(&b, "padding", 7);
    write_dat_and_fail(&b, "no values", "value count 0");
    put_le(&b, 1, 4);
    put_dat_entry(&b, "a", 1, 1, (const float[]){1});
    b.p[b.n - 8] = 0xff; /* nval = 255 + ... > what is left */
    write_dat_and_fail(&b, "values past the end", "truncated");
    put_le(&b, 1, 4);
    put_dat_entry(&b, "a", 1, 1, (const float[]){1});
    memset(b.p + b.n - 8, 0xff, 4); /* nval = -1 */
    write_dat_and_fail(&b, "negative value count", "value count -1");
    put_le(&b, 2, 4);
    put_dat_entry(&b, "a", 1, 1, (const float[]){1});
    put_dat_entry(&b, "a", 1, 1, (const float[]){2});
    write_dat_and_fail(&b, "duplicate entries", "two entries named 'a'");
    put_le(&b, 1, 4);
    put_dat_entry(&b, "a", 1, 1, (const float[]){1});
    put_trailer(&b, 1, "d");
    put(&b, "x", 1);
    write_dat_and_fail(&b, "bytes after the trailer", "unexpected bytes");
    put_le(&b, 1, 4);
    put_dat_entry(&b, "a", 1, 1, (const float[]){1});
    put_trailer(&b, -2, "d");
    write_dat_and_fail(&b, "negative last chunk", "last chunk -2");
    put_le(&b, 1, 4);
    put_dat_entry(&b, "a", 1, 1, (const float[]){1});
    put_le(&b, 1, 4);
    put_le(&b, 50, 4);
    put(&b, "short", 5);
    write_dat_and_fail(&b, "dataset past the end", "truncated");
    write_dat_and_fail(&b, "empty file", "truncated at byte 0");

    /* every cut is refused except at the end of the entries (a file without trailer) */
    build_dat(&b);
    const size_t entries_end = b.n;
    put_trailer(&b, 3, "data.txt");
    int wrong = 0;
    for (size_t cut = 0; cut < b.n; cut++) {
        write_file(&b, cut);
        lb_imatrix *im = NULL;
        lowbit_diag diag = {0};
        const lowbit_status st = lb_imatrix_load(path, &im, &diag);
        const int ok = st == LOWBIT_OK && im != NULL;
        if (ok != (cut == entries_end) || (!ok && !strstr(diag.message, "truncated"))) {
            wrong++;
            fprintf(stderr, "cut at %zu: status %d, %s\n", cut, (int)st, diag.message);
        }
        lb_imatrix_free(im);
    }
    CHECK(wrong == 0, "%d of %zu cuts handled wrongly", wrong, b.n);
    free(b.p);

    snprintf(path + strlen(folder), sizeof path - strlen(folder), "/no-such-file.dat");
    check_load_fails("missing file", LOWBIT_ERR_IO, "no-such-file.dat");
    snprintf(path, sizeof path, "%s/imatrix", folder);
}

int main(void) {
    snprintf(folder, sizeof folder, "/tmp/lowbit_imatrix_XXXXXX");
    if (!mkdtemp(folder)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/imatrix", folder);
    test_gguf_good();
    test_gguf_bad();
    test_dat_good();
    test_dat_bad();
    unlink(path);
    rmdir(folder);
    return lb_test_summary();
}
