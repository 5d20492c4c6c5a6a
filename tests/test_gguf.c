/*
 * GGUF reader: valid files parse to the right values; truncated and hostile files are rejected
 * with an error (never a crash or an out-of-bounds read, which the sanitizer build would catch).
 * Files are built byte by byte here, following the GGUF specification.
 */
#include "testing.h"
#include "lowbit.h"

#include <stdlib.h>
#include <string.h>

typedef struct buffer {
    uint8_t data[8192];
    size_t size;
} buffer;

static void put(buffer *b, const void *p, size_t n) {
    memcpy(b->data + b->size, p, n);
    b->size += n;
}
static void put_u32(buffer *b, uint32_t v) {
    uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, le, 4);
}
static void put_u64(buffer *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}
static void put_string(buffer *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_f32(buffer *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}
static void pad_to(buffer *b, size_t alignment) {
    while (b->size % alignment) b->data[b->size++] = 0;
}

/* Options that break one thing at a time in an otherwise valid file. */
typedef struct spec {
    uint32_t version;
    int duplicate_key;
    int duplicate_tensor;
    uint32_t tensor_type;
    uint64_t second_offset;
    uint64_t dim0;
    uint32_t alignment;
    int nesting;
} spec;

static spec valid_spec(void) {
    return (spec){.version = 3, .tensor_type = LOWBIT_TYPE_Q8_0, .second_offset = 32, .dim0 = 64,
                  .alignment = 32, .nesting = 2};
}

/* Two tensors: "a" f32 [4, 2] at offset 0, "b" (type, [dim0, 1]) at second_offset. */
static void build(buffer *b, spec s) {
    b->size = 0;
    put(b, "GGUF", 4);
    put_u32(b, s.version);
    put_u64(b, 2);                        /* tensors */
    put_u64(b, s.duplicate_key ? 5 : 4);  /* key-value pairs */
    put_string(b, "general.alignment");
    put_u32(b, LOWBIT_GGUF_UINT32);
    put_u32(b, s.alignment);
    put_string(b, "general.name");
    put_u32(b, LOWBIT_GGUF_STRING);
    put_string(b, "tiny");
    put_string(b, "test.scale");
    put_u32(b, LOWBIT_GGUF_FLOAT32);
    put_f32(b, 0.5f);
    put_string(b, "test.nested");         /* array of arrays of u16, `nesting` levels deep */
    put_u32(b, LOWBIT_GGUF_ARRAY);
    for (int level = 1; level < s.nesting; level++) {
        put_u32(b, LOWBIT_GGUF_ARRAY);
        put_u64(b, 1);
    }
    put_u32(b, LOWBIT_GGUF_UINT16);
    put_u64(b, 3);
    put(b, "\1\0\2\0\3\0", 6);
    if (s.duplicate_key) {
        put_string(b, "general.name");
        put_u32(b, LOWBIT_GGUF_INT32);
        put_u32(b, 7);
    }
    put_string(b, "a");
    put_u32(b, 2);
    put_u64(b, 4);
    put_u64(b, 2);
    put_u32(b, LOWBIT_TYPE_F32);
    put_u64(b, 0);
    put_string(b, s.duplicate_tensor ? "a" : "b");
    put_u32(b, 2);
    put_u64(b, s.dim0);
    put_u64(b, 1);
    put_u32(b, s.tensor_type);
    put_u64(b, s.second_offset);
    pad_to(b, s.alignment ? s.alignment : 32);
    const size_t data_start = b->size;
    for (int i = 0; i < 8; i++) put_f32(b, (float)i);
    b->size = data_start + 32;
    /* two q8_0 blocks of 34 bytes each */
    memset(b->data + b->size, 0, 68);
    b->size += 68;
}

/* The reader borrows the bytes: keep a heap copy of exactly the file's size alive while it is
   open, so the sanitizer build catches any read past the end. */
static void *open_copy;

static lowbit_status open_buffer(const buffer *b, lowbit_gguf **g, lowbit_diag *diag) {
    free(open_copy);
    open_copy = malloc(b->size ? b->size : 1);
    memcpy(open_copy, b->data, b->size);
    return lowbit_gguf_open_memory(open_copy, b->size, g, diag);
}

static void test_valid_file(void) {
    buffer b;
    build(&b, valid_spec());
    lowbit_gguf *g = NULL;
    lowbit_diag diag = {0};
    CHECK(open_buffer(&b, &g, &diag) == LOWBIT_OK, "valid file rejected: %s", diag.message);
    if (!g) return;
    CHECK(lowbit_gguf_version(g) == 3, "version");
    CHECK(lowbit_gguf_kv_count(g) == 4, "kv count");
    CHECK(lowbit_gguf_tensor_count(g) == 2, "tensor count");
    const char *name;
    uint64_t length;
    CHECK(lowbit_gguf_get_string(g, "general.name", &name, &length) == LOWBIT_OK && length == 4 &&
          memcmp(name, "tiny", 4) == 0, "general.name");
    double scale = 0.0;
    CHECK(lowbit_gguf_get_f64(g, "test.scale", &scale) == LOWBIT_OK && scale == 0.5, "f32 key");
    uint64_t alignment = 0;
    CHECK(lowbit_gguf_get_u64(g, "general.alignment", &alignment) == LOWBIT_OK && alignment == 32,
          "alignment");
    CHECK(lowbit_gguf_get_u64(g, "missing.key", &alignment) == LOWBIT_ERR_NOT_FOUND, "missing");
    CHECK(lowbit_gguf_get_u64(g, "general.name", &alignment) == LOWBIT_ERR_INVALID_ARGUMENT,
          "string read as integer");
    const lowbit_tensor_info *a = lowbit_gguf_find_tensor(g, "a");
    CHECK(a && a->type == LOWBIT_TYPE_F32 && a->ne[0] == 4 && a->ne[1] == 2 && a->n_bytes == 32,
          "tensor a");
    CHECK(a && ((const float *)a->data)[5] == 5.0f, "tensor a data");
    const lowbit_tensor_info *t = lowbit_gguf_find_tensor(g, "b");
    CHECK(t && t->type == LOWBIT_TYPE_Q8_0 && t->n_bytes == 68, "tensor b");
    CHECK(lowbit_gguf_find_tensor(g, "c") == NULL, "no tensor c");
    lowbit_gguf_close(g);
}

static void expect_rejected(spec s, lowbit_status expected, const char *what) {
    buffer b;
    build(&b, s);
    lowbit_gguf *g = NULL;
    lowbit_diag diag = {0};
    const lowbit_status st = open_buffer(&b, &g, &diag);
    CHECK(st == expected && g == NULL, "%s: got '%s' (%s)", what, lowbit_status_name(st),
          diag.message);
    CHECK(diag.message[0] != '\0', "%s: no message", what);
    lowbit_gguf_close(g);
}

static void test_hostile_files(void) {
    spec s = valid_spec();
    s.version = 1;
    expect_rejected(s, LOWBIT_ERR_UNSUPPORTED, "version 1");
    s = valid_spec();
    s.duplicate_key = 1;
    expect_rejected(s, LOWBIT_ERR_BAD_FILE, "duplicate key");
    s = valid_spec();
    s.duplicate_tensor = 1;
    expect_rejected(s, LOWBIT_ERR_BAD_FILE, "duplicate tensor");
    s = valid_spec();
    s.tensor_type = 31;
    expect_rejected(s, LOWBIT_ERR_BAD_FILE, "unknown type");
    s = valid_spec();
    s.second_offset = 16;
    expect_rejected(s, LOWBIT_ERR_BAD_FILE, "misaligned offset");
    s = valid_spec();
    s.second_offset = 0; /* "b" would share "a"'s bytes */
    expect_rejected(s, LOWBIT_ERR_BAD_FILE, "overlapping tensors");
    s = valid_spec();
    s.second_offset = 1u << 20;
    expect_rejected(s, LOWBIT_ERR_BAD_FILE, "offset past the end");
    s = valid_spec();
    s.dim0 = 48;
    expect_rejected(s, LOWBIT_ERR_BAD_FILE, "row not a multiple of the block");
    s = valid_spec();
    s.dim0 = UINT64_MAX - 31;
    expect_rejected(s, LOWBIT_ERR_BAD_FILE, "dimension overflow");
    s = valid_spec();
    s.alignment = 24;
    expect_rejected(s, LOWBIT_ERR_BAD_FILE, "alignment not a power of two");
    s = valid_spec();
    s.nesting = 40;
    expect_rejected(s, LOWBIT_ERR_BAD_FILE, "arrays nested too deep");

    buffer b;
    build(&b, valid_spec());
    memcpy(b.data, "GGUX", 4);
    lowbit_gguf *g = NULL;
    CHECK(open_buffer(&b, &g, NULL) == LOWBIT_ERR_BAD_FILE, "bad magic");
    /* a huge key count must be refused before anything is allocated for it */
    build(&b, valid_spec());
    for (int i = 0; i < 8; i++) b.data[16 + i] = 0xff;
    CHECK(open_buffer(&b, &g, NULL) == LOWBIT_ERR_BAD_FILE, "huge key count");
}

static void test_every_truncation(void) {
    buffer full;
    build(&full, valid_spec());
    int accepted = 0;
    for (size_t size = 0; size < full.size; size++) {
        buffer b = full;
        b.size = size;
        lowbit_gguf *g = NULL;
        if (open_buffer(&b, &g, NULL) == LOWBIT_OK) accepted++;
        lowbit_gguf_close(g);
    }
    CHECK(accepted == 0, "%d truncated files were accepted", accepted);
}

static void test_golden_file(void) {
    lowbit_gguf *g = NULL;
    lowbit_diag diag = {0};
    CHECK(lowbit_gguf_open(lb_shared_path("golden/q4_K.gguf"), &g, &diag) == LOWBIT_OK, "%s",
          diag.message);
    if (!g) return;
    const lowbit_tensor_info *x = lowbit_gguf_find_tensor(g, "x");
    CHECK(x && x->type == LOWBIT_TYPE_F32 && x->ne[0] == 512 && x->ne[1] == 16, "x");
    const lowbit_tensor_info *q = lowbit_gguf_find_tensor(g, "q");
    CHECK(q && q->type == LOWBIT_TYPE_Q4_K && q->n_bytes == 16 * 2 * 144, "q");
    const char *type;
    uint64_t length;
    CHECK(lowbit_gguf_get_string(g, "golden.type", &type, &length) == LOWBIT_OK &&
          length == 4 && memcmp(type, "q4_K", 4) == 0, "golden.type");
    lowbit_gguf_close(g);
    CHECK(lowbit_gguf_open("/nonexistent/file.gguf", &g, &diag) == LOWBIT_ERR_IO, "missing file");
}

int main(void) {
    test_valid_file();
    test_hostile_files();
    test_every_truncation();
    test_golden_file();
    free(open_copy);
    return lb_test_summary();
}
