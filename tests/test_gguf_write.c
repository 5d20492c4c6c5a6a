/*
 * GGUF writer: the bytes of a small file are checked against a file built here, byte by byte,
 * from the GGUF v3 specification; lowbit's reader reads back every key and tensor; the layout's
 * size is the written size; a golden file (written by the reference writer) comes out
 * identical when read and written again; bad input is refused with nothing left on disk.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "testing.h"
#include "lowbit.h"
#include "io/gguf_write.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char folder[] = "/tmp/lowbit_test_gguf_write.XXXXXX";

static const char *out_path(const char *name) { return lb_join_path(folder, name); }

/* ---- the expected bytes, from the specification ---- */

typedef struct buffer {
    uint8_t data[4096];
    size_t size;
} buffer;

static void put(buffer *b, const void *p, size_t n) {
    memcpy(b->data + b->size, p, n);
    b->size += n;
}
static void put_le(buffer *b, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) b->data[b->size++] = (uint8_t)(v >> (8 * i));
}
static void put_str(buffer *b, const char *s) {
    put_le(b, strlen(s), 8);
    put(b, s, strlen(s));
}
static void put_key(buffer *b, const char *key, uint32_t type) {
    put_str(b, key);
    put_le(b, type, 4);
}
static void pad(buffer *b, size_t alignment) {
    while (b->size % alignment) b->data[b->size++] = 0;
}

/* Reads a whole file (at most `capacity` bytes); returns its size, or -1. */
static long read_file(const char *path, uint8_t *dst, size_t capacity) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    const size_t n = fread(dst, 1, capacity, f);
    const int more = fgetc(f) != EOF;
    fclose(f);
    return more ? -1 : (long)n;
}

/* Entries of the test folder other than . and .. */
static int count_entries(void) {
    DIR *d = opendir(folder);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    }
    closedir(d);
    return n;
}

static int no_temporaries(void) {
    DIR *d = opendir(folder);
    if (!d) return 0;
    int clean = 1;
    for (struct dirent *e; (e = readdir(d));) {
        if (strstr(e->d_name, ".tmp")) {
            fprintf(stderr, "left over: %s\n", e->d_name);
            clean = 0;
        }
    }
    closedir(d);
    return clean;
}

/* ---- the small file ---- */

#define N_KV 16
static uint16_t f16_data[6];
static uint8_t q8_data[68];

static void fill_model(lb_model *m) {
    const uint8_t u8 = 200, i8 = (uint8_t)-7;
    const uint8_t u16[2] = {0x34, 0x12}, i16[2] = {0xfe, 0xff};
    const uint8_t u64[8] = {1, 2, 3, 4, 5, 6, 7, 0x80}, i64[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const double pi = 3.141592653589793;
    lb_model_set_u32(m, "general.alignment", 32);
    lb_model_set_string(m, "general.name", "tiny");
    lb_model_set_raw(m, "t.u8", LOWBIT_GGUF_UINT8, &u8, 1);
    lb_model_set_raw(m, "t.i8", LOWBIT_GGUF_INT8, &i8, 1);
    lb_model_set_raw(m, "t.u16", LOWBIT_GGUF_UINT16, u16, 2);
    lb_model_set_raw(m, "t.i16", LOWBIT_GGUF_INT16, i16, 2);
    lb_model_set_i32(m, "t.i32", -100000);
    lb_model_set_f32(m, "t.f32", 0.5f);
    lb_model_set_bool(m, "t.bool", 1);
    lb_model_set_raw(m, "t.u64", LOWBIT_GGUF_UINT64, u64, 8);
    lb_model_set_raw(m, "t.i64", LOWBIT_GGUF_INT64, i64, 8);
    uint8_t f64[8];
    memcpy(f64, &pi, 8); /* little-endian host, as every machine lowbit runs on */
    lb_model_set_raw(m, "t.f64", LOWBIT_GGUF_FLOAT64, f64, 8);
    const char *words[3] = {"a", "", "xyz"};
    const uint64_t lengths[3] = {1, 0, 3};
    lb_model_set_string_array(m, "t.strings", words, lengths, 3);
    const float floats[2] = {1.0f, -2.0f};
    lb_model_set_f32_array(m, "t.floats", floats, 2);
    /* an array of two arrays of i32: [[1, 2], [3]] */
    buffer nested = {.size = 0};
    put_le(&nested, LOWBIT_GGUF_ARRAY, 4);
    put_le(&nested, 2, 8);
    put_le(&nested, LOWBIT_GGUF_INT32, 4);
    put_le(&nested, 2, 8);
    put_le(&nested, 1, 4);
    put_le(&nested, 2, 4);
    put_le(&nested, LOWBIT_GGUF_INT32, 4);
    put_le(&nested, 1, 8);
    put_le(&nested, 3, 4);
    lb_model_set_raw(m, "t.nested", LOWBIT_GGUF_ARRAY, nested.data, nested.size);
    lb_model_set_u32(m, "t.u32", 7);
}

static void fill_tensors(lb_out_tensor *t) {
    for (int i = 0; i < 6; i++) f16_data[i] = (uint16_t)(0x3c00 + i);
    for (int i = 0; i < 68; i++) q8_data[i] = (uint8_t)(i * 7 + 1);
    /* 12 bytes (padded to 32), then 68 bytes (padded to 96): both need padding */
    t[0] = (lb_out_tensor){.name = "a.weight", .type = LOWBIT_TYPE_F16, .n_dims = 2,
                           .ne = {6, 1, 1, 1}, .n_bytes = 12};
    t[1] = (lb_out_tensor){.name = "blk.0.b", .type = LOWBIT_TYPE_Q8_0, .n_dims = 2,
                           .ne = {32, 2, 1, 1}, .n_bytes = 68};
}

static void expected_file(buffer *b) {
    const double pi = 3.141592653589793;
    uint64_t pi_bits;
    memcpy(&pi_bits, &pi, 8);
    b->size = 0;
    put(b, "GGUF", 4);
    put_le(b, 3, 4);
    put_le(b, 2, 8);
    put_le(b, N_KV, 8);
    put_key(b, "general.alignment", 4); put_le(b, 32, 4);
    put_key(b, "general.name", 8); put_str(b, "tiny");
    put_key(b, "t.u8", 0); put_le(b, 200, 1);
    put_key(b, "t.i8", 1); put_le(b, 0xf9, 1);
    put_key(b, "t.u16", 2); put_le(b, 0x1234, 2);
    put_key(b, "t.i16", 3); put_le(b, 0xfffe, 2);
    put_key(b, "t.i32", 5); put_le(b, (uint32_t)-100000, 4);
    put_key(b, "t.f32", 6); put_le(b, 0x3f000000, 4);
    put_key(b, "t.bool", 7); put_le(b, 1, 1);
    put_key(b, "t.u64", 10); put_le(b, 0x8007060504030201ull, 8);
    put_key(b, "t.i64", 11); put_le(b, UINT64_MAX, 8);
    put_key(b, "t.f64", 12); put_le(b, pi_bits, 8);
    put_key(b, "t.strings", 9); put_le(b, 8, 4); put_le(b, 3, 8);
    put_str(b, "a"); put_str(b, ""); put_str(b, "xyz");
    put_key(b, "t.floats", 9); put_le(b, 6, 4); put_le(b, 2, 8);
    put_le(b, 0x3f800000, 4); put_le(b, 0xc0000000, 4);
    put_key(b, "t.nested", 9); put_le(b, 9, 4); put_le(b, 2, 8);
    put_le(b, 5, 4); put_le(b, 2, 8); put_le(b, 1, 4); put_le(b, 2, 4);
    put_le(b, 5, 4); put_le(b, 1, 8); put_le(b, 3, 4);
    put_key(b, "t.u32", 4); put_le(b, 7, 4);
    /* tensor infos: name, n_dims, dims, type id, offset */
    put_str(b, "a.weight"); put_le(b, 2, 4); put_le(b, 6, 8); put_le(b, 1, 8);
    put_le(b, 1, 4); put_le(b, 0, 8);
    put_str(b, "blk.0.b"); put_le(b, 2, 4); put_le(b, 32, 8); put_le(b, 2, 8);
    put_le(b, 8, 4); put_le(b, 32, 8);
    pad(b, 32);
    for (int i = 0; i < 6; i++) put_le(b, f16_data[i], 2);
    pad(b, 32);
    put(b, q8_data, 68);
    pad(b, 32);
}

/* Writes the small file to `path`, tensor data in uneven pieces (one call spanning both). */
static lowbit_status write_small(const char *path, const lb_model *m, lb_out_tensor *t,
                                 uint64_t *layout_size) {
    lowbit_diag diag = {0};
    lowbit_status st = lb_gguf_layout(m->kvs, m->n_kv, t, 2, 32, layout_size);
    if (st != LOWBIT_OK) return st;
    lb_gguf_writer *w = NULL;
    st = lb_gguf_writer_open(path, m->kvs, m->n_kv, t, 2, 32, &w, &diag);
    if (st != LOWBIT_OK) {
        fprintf(stderr, "open: %s\n", diag.message);
        return st;
    }
    uint8_t joined[12 + 10];
    memcpy(joined, (const uint8_t *)f16_data + 5, 7);
    memcpy(joined + 7, q8_data, 10);
    st = lb_gguf_writer_write(w, f16_data, 5, &diag);
    if (st == LOWBIT_OK) st = lb_gguf_writer_write(w, joined, 17, &diag);
    if (st == LOWBIT_OK) st = lb_gguf_writer_write(w, q8_data + 10, 0, &diag);
    if (st == LOWBIT_OK) st = lb_gguf_writer_write(w, q8_data + 10, 58, &diag);
    if (st != LOWBIT_OK) {
        lb_gguf_writer_abort(w);
        return st;
    }
    return lb_gguf_writer_commit(w, &diag);
}

static int same_kv(const lb_kv *a, const lb_kv *b) {
    return a && b && strcmp(a->key, b->key) == 0 && a->type == b->type &&
           a->value_size == b->value_size && memcmp(a->value, b->value, a->value_size) == 0;
}

static void test_small_file(void) {
    lb_model m = {0};
    fill_model(&m);
    CHECK(m.n_kv == N_KV, "%lld keys", (long long)m.n_kv);
    lb_out_tensor t[2];
    fill_tensors(t);
    buffer want;
    expected_file(&want);
    const char *path = out_path("small.gguf");
    uint64_t layout_size = 0;
    CHECK(write_small(path, &m, t, &layout_size) == LOWBIT_OK, "writing the small file");
    CHECK(t[0].offset == 0 && t[1].offset == 32, "offsets %llu %llu",
          (unsigned long long)t[0].offset, (unsigned long long)t[1].offset);
    static uint8_t got[8192];
    const long size = read_file(path, got, sizeof got);
    CHECK(size == (long)want.size, "file size %ld, expected %zu", size, want.size);
    CHECK(layout_size == want.size, "layout size %llu, expected %zu",
          (unsigned long long)layout_size, want.size);
    CHECK(want.size % 32 == 0, "the last tensor is padded");
    if (size == (long)want.size) {
        size_t first_difference = 0;
        while (first_difference < want.size && got[first_difference] == want.data[first_difference]) {
            first_difference++;
        }
        CHECK(first_difference == want.size, "bytes differ from byte %zu", first_difference);
    }
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644, "mode %o",
          (unsigned)(st.st_mode & 0777));

    /* the public reader */
    lowbit_gguf *g = NULL;
    lowbit_diag diag = {0};
    CHECK(lowbit_gguf_open(path, &g, &diag) == LOWBIT_OK, "reading back: %s", diag.message);
    if (g) {
        CHECK(lowbit_gguf_version(g) == 3, "version");
        CHECK(lowbit_gguf_kv_count(g) == N_KV && lowbit_gguf_tensor_count(g) == 2, "counts");
        const char *s;
        uint64_t length, u;
        int64_t i;
        double d;
        CHECK(lowbit_gguf_get_string(g, "general.name", &s, &length) == LOWBIT_OK &&
                  length == 4 && memcmp(s, "tiny", 4) == 0, "general.name");
        CHECK(lowbit_gguf_get_u64(g, "t.u16", &u) == LOWBIT_OK && u == 0x1234, "t.u16");
        CHECK(lowbit_gguf_get_i64(g, "t.i16", &i) == LOWBIT_OK && i == -2, "t.i16");
        CHECK(lowbit_gguf_get_i64(g, "t.i64", &i) == LOWBIT_OK && i == -1, "t.i64");
        CHECK(lowbit_gguf_get_f64(g, "t.f64", &d) == LOWBIT_OK && d == 3.141592653589793, "t.f64");
        CHECK(lowbit_gguf_get_f64(g, "t.f32", &d) == LOWBIT_OK && d == 0.5, "t.f32");
        const lowbit_tensor_info *a = lowbit_gguf_find_tensor(g, "a.weight");
        const lowbit_tensor_info *b = lowbit_gguf_find_tensor(g, "blk.0.b");
        CHECK(a && a->type == LOWBIT_TYPE_F16 && a->n_dims == 2 && a->ne[0] == 6 && a->ne[1] == 1 &&
                  a->n_bytes == 12 && memcmp(a->data, f16_data, 12) == 0, "tensor a");
        CHECK(b && b->type == LOWBIT_TYPE_Q8_0 && b->n_dims == 2 && b->ne[0] == 32 &&
                  b->ne[1] == 2 && b->n_bytes == 68 && memcmp(b->data, q8_data, 68) == 0,
              "tensor b");
        lowbit_gguf_close(g);
    }
    /* every key, as a model: same types and bytes, same order */
    lb_model back = {0};
    CHECK(lb_read_gguf_model(path, &back, &diag) == LOWBIT_OK, "model: %s", diag.message);
    CHECK(back.n_kv == m.n_kv, "keys read back");
    for (int64_t k = 0; k < m.n_kv && k < back.n_kv; k++) {
        CHECK(same_kv(&m.kvs[k], &back.kvs[k]), "key %s", m.kvs[k].key);
    }
    lb_model_free(&back);

    /* twice: the same bytes */
    const char *again = out_path("again.gguf");
    CHECK(write_small(again, &m, t, &layout_size) == LOWBIT_OK, "writing again");
    static uint8_t got_again[8192];
    CHECK(read_file(again, got_again, sizeof got_again) == size &&
              memcmp(got, got_again, (size_t)size) == 0, "byte-identical when written twice");
    /* over an existing file */
    CHECK(write_small(again, &m, t, &layout_size) == LOWBIT_OK, "writing over a file");
    CHECK(read_file(again, got_again, sizeof got_again) == size &&
              memcmp(got, got_again, (size_t)size) == 0, "replaced with the same bytes");
    CHECK(no_temporaries(), "no temporary file left");
    unlink(again);
    unlink(path);
    lb_model_free(&m);
}

/* general.alignment 64 chosen by the key (alignment argument 0); no tensors at all. */
static void test_alignment_and_empty(void) {
    lb_model m = {0};
    lb_model_set_u32(&m, "general.alignment", 64);
    lb_out_tensor t[2];
    fill_tensors(t);
    uint64_t size = 0;
    CHECK(lb_gguf_layout(m.kvs, m.n_kv, t, 2, 0, &size) == LOWBIT_OK, "layout at 64");
    CHECK(t[0].offset == 0 && t[1].offset == 64, "offsets at 64: %llu",
          (unsigned long long)t[1].offset);
    /* header 24, key 8 + 17 + 4 + 4, infos (8+8+4+16+4+8) + (8+7+4+16+4+8): 152 -> 192 */
    CHECK(size == 192 + 64 + 128, "size at 64: %llu", (unsigned long long)size);
    const char *path = out_path("aligned.gguf");
    lb_gguf_writer *w = NULL;
    lowbit_diag diag = {0};
    CHECK(lb_gguf_writer_open(path, m.kvs, m.n_kv, t, 2, 0, &w, &diag) == LOWBIT_OK, "open: %s",
          diag.message);
    if (w) {
        lb_gguf_writer_write(w, f16_data, 12, &diag);
        lb_gguf_writer_write(w, q8_data, 68, &diag);
        CHECK(lb_gguf_writer_commit(w, &diag) == LOWBIT_OK, "commit: %s", diag.message);
    }
    struct stat st;
    CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == size, "written size");
    lowbit_gguf *g = NULL;
    CHECK(lowbit_gguf_open(path, &g, &diag) == LOWBIT_OK, "read at 64: %s", diag.message);
    const lowbit_tensor_info *b = g ? lowbit_gguf_find_tensor(g, "blk.0.b") : NULL;
    CHECK(b && memcmp(b->data, q8_data, 68) == 0, "tensor at 64");
    lowbit_gguf_close(g);
    unlink(path);

    /* no tensors: the metadata padded to the alignment, nothing after */
    CHECK(lb_gguf_layout(m.kvs, m.n_kv, NULL, 0, 0, &size) == LOWBIT_OK && size == 64,
          "empty size %llu", (unsigned long long)size);
    CHECK(lb_gguf_writer_open(path, m.kvs, m.n_kv, NULL, 0, 0, &w, &diag) == LOWBIT_OK &&
              lb_gguf_writer_commit(w, &diag) == LOWBIT_OK, "empty file: %s", diag.message);
    CHECK(stat(path, &st) == 0 && st.st_size == 64, "empty file size");
    CHECK(lowbit_gguf_open(path, &g, &diag) == LOWBIT_OK && lowbit_gguf_tensor_count(g) == 0,
          "empty file read: %s", diag.message);
    lowbit_gguf_close(g);
    unlink(path);
    lb_model_free(&m);
}

static void expect_layout_error(const lb_model *m, lb_out_tensor *t, int n, uint32_t alignment,
                                const char *needle, const char *what) {
    uint64_t size = 0;
    lowbit_diag diag = {0};
    const lowbit_status st = lb_gguf_layout_diag(m->kvs, m->n_kv, t, n, alignment, &size, &diag);
    CHECK(st != LOWBIT_OK && strstr(diag.message, needle), "%s: status %d, '%s'", what, (int)st,
          diag.message);
    CHECK(lb_gguf_layout(m->kvs, m->n_kv, t, n, alignment, &size) == st, "%s: same status", what);
    lb_gguf_writer *w = NULL;
    CHECK(lb_gguf_writer_open(out_path("bad.gguf"), m->kvs, m->n_kv, t, n, alignment, &w, &diag) == st &&
              !w, "%s: open refused", what);
    CHECK(count_entries() == 0, "%s: nothing written", what);
}

static void test_bad_input(void) {
    lb_model m = {0};
    fill_model(&m);
    lb_out_tensor t[2];
    fill_tensors(t);
    expect_layout_error(&m, t, 2, 64, "general.alignment is 32", "alignment disagreeing");
    lb_model plain = {0};
    lb_model_set_string(&plain, "general.name", "x");
    expect_layout_error(&plain, t, 2, 48, "power of two", "alignment 48");
    t[1].name = "a.weight";
    expect_layout_error(&m, t, 2, 32, "duplicate tensor name 'a.weight'", "duplicate name");
    fill_tensors(t);
    t[0].name = "a_name_of_exactly_sixty_four_bytes_which_llama_cpp_will_not_read";
    CHECK(strlen(t[0].name) == 64, "name length");
    expect_layout_error(&m, t, 2, 32, "longer than 63", "long name");
    fill_tensors(t);
    t[1].n_bytes = 69;
    expect_layout_error(&m, t, 2, 32, "take 68", "n_bytes");
    fill_tensors(t);
    t[1].ne[0] = 48;
    expect_layout_error(&m, t, 2, 32, "block size 32", "partial block");
    fill_tensors(t);
    t[1].type = (lowbit_type)4; /* a removed ggml type id */
    expect_layout_error(&m, t, 2, 32, "unknown type", "type id");
    fill_tensors(t);
    t[0].n_dims = 5;
    expect_layout_error(&m, t, 2, 32, "5 dimensions", "dims");
    fill_tensors(t);
    t[0].ne[1] = 0;
    expect_layout_error(&m, t, 2, 32, "dimension 1", "zero dim");
    fill_tensors(t);
    /* a string whose length runs past its value; then a duplicate key */
    lb_model broken = {0};
    const uint8_t bad_string[10] = {5, 0, 0, 0, 0, 0, 0, 0, 'a', 'b'};
    lb_model_set_raw(&broken, "k", LOWBIT_GGUF_STRING, bad_string, sizeof bad_string);
    expect_layout_error(&broken, t, 2, 32, "not a well-formed", "bad string");
    lb_model_set_u32(&broken, "k", 1);
    lb_model_set_u32(&broken, "k2", 1);
    free(broken.kvs[1].key);
    broken.kvs[1].key = malloc(2);
    strcpy(broken.kvs[1].key, "k");
    expect_layout_error(&broken, t, 2, 32, "duplicate metadata key 'k'", "duplicate key");
    lb_model_free(&broken);

    /* offsets not from the layout */
    uint64_t size;
    lowbit_diag diag = {0};
    lb_gguf_writer *w = NULL;
    CHECK(lb_gguf_layout(m.kvs, m.n_kv, t, 2, 32, &size) == LOWBIT_OK, "layout");
    t[1].offset = 12;
    CHECK(lb_gguf_writer_open(out_path("bad.gguf"), m.kvs, m.n_kv, t, 2, 32, &w, &diag) ==
                  LOWBIT_ERR_INVALID_ARGUMENT && strstr(diag.message, "layout puts it at 32"),
          "offset check: %s", diag.message);
    t[1].offset = 32;
    /* too many bytes, then too few: errors, and nothing on disk */
    CHECK(lb_gguf_writer_open(out_path("bad.gguf"), m.kvs, m.n_kv, t, 2, 32, &w, &diag) == LOWBIT_OK,
          "open");
    uint8_t big[100] = {0};
    CHECK(lb_gguf_writer_write(w, big, 81, &diag) == LOWBIT_ERR_INVALID_ARGUMENT &&
              strstr(diag.message, "1 bytes more"), "too much: %s", diag.message);
    lb_gguf_writer_abort(w);
    CHECK(count_entries() == 0, "abort leaves nothing");
    /* after a failed write, even a complete file is not committed */
    CHECK(lb_gguf_writer_open(out_path("bad.gguf"), m.kvs, m.n_kv, t, 2, 32, &w, &diag) == LOWBIT_OK,
          "open");
    CHECK(lb_gguf_writer_write(w, big, 80, &diag) == LOWBIT_OK, "all the data");
    CHECK(lb_gguf_writer_write(w, big, 1, &diag) == LOWBIT_ERR_INVALID_ARGUMENT, "one too many");
    CHECK(lb_gguf_writer_write(w, big, 0, &diag) == LOWBIT_ERR_INVALID_ARGUMENT &&
              strstr(diag.message, "earlier write"), "later writes refused: %s", diag.message);
    CHECK(lb_gguf_writer_commit(w, &diag) == LOWBIT_ERR_INVALID_ARGUMENT &&
              strstr(diag.message, "not written"), "commit refused: %s", diag.message);
    CHECK(count_entries() == 0, "a failed file is not committed");
    CHECK(lb_gguf_writer_open(out_path("bad.gguf"), m.kvs, m.n_kv, t, 2, 32, &w, &diag) == LOWBIT_OK,
          "open");
    lb_gguf_writer_write(w, big, 20, &diag);
    CHECK(lb_gguf_writer_commit(w, &diag) == LOWBIT_ERR_INVALID_ARGUMENT &&
              strstr(diag.message, "tensor 1 of 2 lacks 60 bytes"), "incomplete: %s", diag.message);
    CHECK(count_entries() == 0, "an incomplete file is not committed");
    /* a missing folder */
    CHECK(lb_gguf_writer_open("/nonexistent-lowbit/x.gguf", m.kvs, m.n_kv, t, 2, 32, &w, &diag) ==
                  LOWBIT_ERR_IO && strstr(diag.message, "does not exist") && !w,
          "missing folder: %s", diag.message);
    lb_model_free(&plain);
    lb_model_free(&m);
}

/* A golden file, written by the reference writer, read as a model and written again. */
static void test_golden_rewrite(void) {
    const char *golden = lb_shared_path("golden/q4_K.gguf");
    lb_model m = {0};
    lowbit_diag diag = {0};
    CHECK(lb_read_gguf_model(golden, &m, &diag) == LOWBIT_OK, "golden: %s", diag.message);
    if (m.n_tensors == 0) return;
    lb_out_tensor *t = calloc((size_t)m.n_tensors, sizeof *t);
    for (int64_t i = 0; i < m.n_tensors; i++) {
        const lb_tensor *src = &m.tensors[i];
        t[i] = (lb_out_tensor){.name = src->name, .type = src->type, .n_dims = src->n_dims,
                               .n_bytes = src->n_bytes};
        memcpy(t[i].ne, src->ne, sizeof t[i].ne);
    }
    uint64_t size = 0;
    CHECK(lb_gguf_layout(m.kvs, m.n_kv, t, m.n_tensors, 0, &size) == LOWBIT_OK, "layout");
    const char *path = out_path("golden.gguf");
    lb_gguf_writer *w = NULL;
    CHECK(lb_gguf_writer_open(path, m.kvs, m.n_kv, t, m.n_tensors, 0, &w, &diag) == LOWBIT_OK,
          "open: %s", diag.message);
    for (int64_t i = 0; w && i < m.n_tensors; i++) {
        CHECK(lb_gguf_writer_write(w, m.tensors[i].data, m.tensors[i].n_bytes, &diag) == LOWBIT_OK,
              "write: %s", diag.message);
    }
    if (w) CHECK(lb_gguf_writer_commit(w, &diag) == LOWBIT_OK, "commit: %s", diag.message);

    struct stat st;
    CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == size, "layout size %llu is the file's",
          (unsigned long long)size);
    lb_model back = {0};
    CHECK(lb_read_gguf_model(path, &back, &diag) == LOWBIT_OK, "read back: %s", diag.message);
    CHECK(back.n_kv == m.n_kv && back.n_tensors == m.n_tensors, "counts");
    for (int64_t i = 0; i < m.n_kv && i < back.n_kv; i++) {
        CHECK(same_kv(&m.kvs[i], &back.kvs[i]), "key %s", m.kvs[i].key);
    }
    for (int64_t i = 0; i < m.n_tensors && i < back.n_tensors; i++) {
        const lb_tensor *a = &m.tensors[i], *b = &back.tensors[i];
        CHECK(strcmp(a->name, b->name) == 0 && a->type == b->type && a->n_dims == b->n_dims &&
                  memcmp(a->ne, b->ne, sizeof a->ne) == 0 && a->n_bytes == b->n_bytes &&
                  memcmp(a->data, b->data, a->n_bytes) == 0,
              "tensor %s", a->name);
    }
    /* the reference writer's own file, byte for byte: the same layout and padding */
    CHECK(m.files[0].size == back.files[0].size &&
              memcmp(m.files[0].data, back.files[0].data, m.files[0].size) == 0,
          "identical to the golden file (%llu vs %llu bytes)",
          (unsigned long long)m.files[0].size, (unsigned long long)back.files[0].size);
    lb_model_free(&back);
    unlink(path);
    free(t);
    lb_model_free(&m);
}

int main(void) {
    umask(022);
    if (!mkdtemp(folder)) {
        perror("mkdtemp");
        return 1;
    }
    test_small_file();
    test_alignment_and_empty();
    test_bad_input();
    test_golden_rewrite();
    CHECK(count_entries() == 0, "the folder is empty at the end");
    rmdir(folder);
    return lb_test_summary();
}
