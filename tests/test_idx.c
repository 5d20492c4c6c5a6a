/* The DEFLATE/gzip decoder and the IDX reader (lib/data). */
#include "data/data.h"
#include "testing.h"

#include <stdlib.h>

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

/* The plain text behind the compressed streams below (they were written at development time by
   zlib: gz_fixed with the fixed-Huffman strategy, gz_dynamic at level 9, gz_named by Python's
   gzip module, which also stores the file name "x.txt"). */
static size_t make_plain(uint8_t *buf, size_t cap) {
    size_t n = 0;
    for (int i = 0; i < 20; i++) {
        n += (size_t)snprintf((char *)buf + n, cap - n,
                              "line %d: the quick brown fox jumps over the lazy dog %d\n", i, i * i);
    }
    memset(buf + n, 'a', 300);
    n += 300;
    buf[n++] = '\n';
    return n;
}

static const uint8_t gz_fixed[208] = {
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xcb, 0xc9, 0xcc, 0x4b, 0x55, 0x30,
    0xb0, 0x52, 0x28, 0xc9, 0x48, 0x55, 0x28, 0x2c, 0xcd, 0x4c, 0xce, 0x56, 0x48, 0x2a, 0xca, 0x2f,
    0xcf, 0x53, 0x48, 0xcb, 0xaf, 0x50, 0xc8, 0x2a, 0xcd, 0x2d, 0x28, 0x56, 0xc8, 0x2f, 0x4b, 0x2d,
    0x02, 0x4b, 0xe7, 0x24, 0x56, 0x55, 0x2a, 0xa4, 0xe4, 0xa7, 0x2b, 0x18, 0x70, 0xe5, 0x80, 0x74,
    0x19, 0x92, 0xa6, 0xcb, 0x10, 0xa2, 0xcb, 0x88, 0x34, 0x5d, 0x26, 0x10, 0x5d, 0xc6, 0xa4, 0xe9,
    0xb2, 0x84, 0xe8, 0x32, 0x21, 0xd1, 0x85, 0x66, 0x10, 0x6d, 0xa6, 0xa4, 0x69, 0x33, 0x32, 0x85,
    0x68, 0x33, 0x23, 0x4d, 0x9b, 0x31, 0xd4, 0x36, 0x73, 0x12, 0x03, 0x04, 0xea, 0x37, 0x0b, 0xd2,
    0xb4, 0x99, 0x41, 0x03, 0xd2, 0x92, 0x34, 0x6d, 0x16, 0xd0, 0x58, 0x33, 0x24, 0x31, 0x89, 0x18,
    0x1a, 0xc0, 0x12, 0x09, 0xa9, 0xa9, 0xc4, 0x08, 0x66, 0x23, 0x89, 0x09, 0xc5, 0xd0, 0x04, 0xea,
    0x43, 0x43, 0x63, 0x52, 0x63, 0x1d, 0x1a, 0xa2, 0x86, 0xa4, 0x26, 0x17, 0x4b, 0x68, 0x0c, 0x1a,
    0x92, 0x9a, 0x60, 0x60, 0x29, 0xc6, 0xd0, 0x8c, 0xd4, 0x94, 0x06, 0xb3, 0x91, 0xc4, 0x44, 0x63,
    0x64, 0x01, 0xf3, 0x23, 0x89, 0xc9, 0xc6, 0xd8, 0x08, 0x16, 0xaa, 0x96, 0xa4, 0xa6, 0x6e, 0x43,
    0xae, 0xc4, 0x51, 0x40, 0x34, 0xe0, 0x02, 0x00, 0xe7, 0x9a, 0xb9, 0xb0, 0x89, 0x05, 0x00, 0x00,
};
static const uint8_t gz_dynamic[188] = {
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xed, 0x92, 0x4b, 0x12, 0xc2, 0x20,
    0x10, 0x44, 0xf7, 0x9c, 0x62, 0x8e, 0xc0, 0x00, 0x41, 0xf0, 0x36, 0x51, 0xa3, 0x46, 0x31, 0x68,
    0x62, 0xfc, 0x9d, 0xde, 0x52, 0x86, 0xbd, 0xbd, 0x77, 0xb6, 0xd4, 0xab, 0x66, 0x7a, 0x5e, 0xea,
    0x87, 0x8e, 0xf4, 0x92, 0xae, 0xfb, 0x8e, 0x2e, 0x73, 0xbf, 0x3e, 0xd2, 0x6a, 0xcc, 0xf7, 0x81,
    0xb6, 0xf9, 0x41, 0x87, 0xf9, 0x74, 0x9e, 0x28, 0xdf, 0xba, 0xf1, 0xfb, 0x9c, 0xda, 0xd7, 0x93,
    0x36, 0x79, 0x47, 0x5a, 0xa5, 0x0f, 0xc5, 0x18, 0xc5, 0x85, 0x32, 0x18, 0xe5, 0x0a, 0x65, 0x31,
    0x2a, 0x16, 0xca, 0x81, 0x3f, 0xf4, 0x05, 0x6b, 0x30, 0xcc, 0x34, 0x05, 0xf3, 0x18, 0x66, 0x25,
    0x6d, 0x01, 0x16, 0x22, 0xbb, 0x05, 0x0c, 0xf3, 0x52, 0x64, 0xc4, 0xb0, 0x20, 0x57, 0x63, 0x50,
    0x11, 0xd6, 0x55, 0x12, 0xd4, 0x12, 0x53, 0x13, 0x41, 0x51, 0xd8, 0xc9, 0x86, 0x6c, 0xd1, 0xab,
    0x4b, 0xa3, 0x8c, 0xea, 0x12, 0xe5, 0x82, 0x8c, 0x0a, 0x53, 0x8d, 0x61, 0x8f, 0x9a, 0x56, 0x13,
    0x41, 0x69, 0x4c, 0xa8, 0x3b, 0x82, 0xda, 0x58, 0x53, 0x5b, 0x8d, 0xa8, 0xdd, 0xac, 0xda, 0xff,
    0xfc, 0x3c, 0xea, 0x0d, 0xe7, 0x9a, 0xb9, 0xb0, 0x89, 0x05, 0x00, 0x00,
};
static const uint8_t gz_named[194] = {
    0x1f, 0x8b, 0x08, 0x08, 0x00, 0x00, 0x00, 0x00, 0x02, 0xff, 0x78, 0x2e, 0x74, 0x78, 0x74, 0x00,
    0xed, 0x92, 0x4b, 0x12, 0xc2, 0x20, 0x10, 0x44, 0xf7, 0x9c, 0x62, 0x8e, 0xc0, 0x00, 0x41, 0xf0,
    0x36, 0x51, 0xa3, 0x46, 0x31, 0x68, 0x62, 0xfc, 0x9d, 0xde, 0x52, 0x86, 0xbd, 0xbd, 0x77, 0xb6,
    0xd4, 0xab, 0x66, 0x7a, 0x5e, 0xea, 0x87, 0x8e, 0xf4, 0x92, 0xae, 0xfb, 0x8e, 0x2e, 0x73, 0xbf,
    0x3e, 0xd2, 0x6a, 0xcc, 0xf7, 0x81, 0xb6, 0xf9, 0x41, 0x87, 0xf9, 0x74, 0x9e, 0x28, 0xdf, 0xba,
    0xf1, 0xfb, 0x9c, 0xda, 0xd7, 0x93, 0x36, 0x79, 0x47, 0x5a, 0xa5, 0x0f, 0xc5, 0x18, 0xc5, 0x85,
    0x32, 0x18, 0xe5, 0x0a, 0x65, 0x31, 0x2a, 0x16, 0xca, 0x81, 0x3f, 0xf4, 0x05, 0x6b, 0x30, 0xcc,
    0x34, 0x05, 0xf3, 0x18, 0x66, 0x25, 0x6d, 0x01, 0x16, 0x22, 0xbb, 0x05, 0x0c, 0xf3, 0x52, 0x64,
    0xc4, 0xb0, 0x20, 0x57, 0x63, 0x50, 0x11, 0xd6, 0x55, 0x12, 0xd4, 0x12, 0x53, 0x13, 0x41, 0x51,
    0xd8, 0xc9, 0x86, 0x6c, 0xd1, 0xab, 0x4b, 0xa3, 0x8c, 0xea, 0x12, 0xe5, 0x82, 0x8c, 0x0a, 0x53,
    0x8d, 0x61, 0x8f, 0x9a, 0x56, 0x13, 0x41, 0x69, 0x4c, 0xa8, 0x3b, 0x82, 0xda, 0x58, 0x53, 0x5b,
    0x8d, 0xa8, 0xdd, 0xac, 0xda, 0xff, 0xfc, 0x3c, 0xea, 0x0d, 0xe7, 0x9a, 0xb9, 0xb0, 0x89, 0x05,
    0x00, 0x00,
};

/* ---- a tiny encoder for test inputs ---------------------------------------------------------- */

typedef struct byte_buf {
    uint8_t data[1 << 17];
    size_t size;
    uint64_t bits;
    int n_bits;
} byte_buf;

static void put_byte(byte_buf *b, uint8_t v) {
    if (b->size < sizeof b->data) b->data[b->size++] = v;
}

static void put_le(byte_buf *b, uint32_t v, int bytes) {
    for (int i = 0; i < bytes; i++) put_byte(b, (uint8_t)(v >> (8 * i)));
}

/* DEFLATE bit order: values LSB first; Huffman codes MSB first. */
static void put_bits(byte_buf *b, uint32_t v, int n) {
    for (int i = 0; i < n; i++) {
        b->bits |= (uint64_t)((v >> i) & 1) << b->n_bits;
        if (++b->n_bits == 8) {
            put_byte(b, (uint8_t)b->bits);
            b->bits = 0;
            b->n_bits = 0;
        }
    }
}

static void put_code(byte_buf *b, uint32_t code, int len) {
    for (int i = len - 1; i >= 0; i--) put_bits(b, (code >> i) & 1, 1);
}

static void flush_bits(byte_buf *b) {
    if (b->n_bits > 0) put_bits(b, 0, 8 - b->n_bits);
}

enum { FTEXT = 1, FHCRC = 2, FEXTRA = 4, FNAME = 8, FCOMMENT = 16 };

static void put_gzip_header(byte_buf *b, int flags) {
    const uint8_t fixed[10] = {0x1f, 0x8b, 8, (uint8_t)flags, 1, 2, 3, 4, 0, 3};
    for (int i = 0; i < 10; i++) put_byte(b, fixed[i]);
    if (flags & FEXTRA) {
        put_le(b, 6, 2);
        for (int i = 0; i < 6; i++) put_byte(b, (uint8_t)('A' + i));
    }
    if (flags & FNAME) {
        for (const char *s = "name.idx"; *s; s++) put_byte(b, (uint8_t)*s);
        put_byte(b, 0);
    }
    if (flags & FCOMMENT) {
        for (const char *s = "a comment"; *s; s++) put_byte(b, (uint8_t)*s);
        put_byte(b, 0);
    }
    if (flags & FHCRC) put_le(b, lb_crc32(0, b->data, b->size) & 0xffff, 2);
}

/* A gzip member holding data in stored blocks of at most block bytes (one empty block when
   there is no data). */
static void put_gzip_stored(byte_buf *b, const uint8_t *data, size_t n, size_t block, int flags) {
    put_gzip_header(b, flags);
    size_t pos = 0;
    do {
        size_t len = LB_MIN(block, n - pos);
        put_bits(b, pos + len == n, 1);
        put_bits(b, 0, 2);
        flush_bits(b);
        put_le(b, (uint32_t)len, 2);
        put_le(b, (uint32_t)len ^ 0xffffu, 2);
        for (size_t i = 0; i < len; i++) put_byte(b, data[pos + i]);
        pos += len;
    } while (pos < n);
    put_le(b, lb_crc32(0, data, n), 4);
    put_le(b, (uint32_t)n, 4);
}

/* ---- gunzip ---------------------------------------------------------------------------------- */

static int gunzip_equals(const uint8_t *gz, size_t n, const uint8_t *want, size_t want_n,
                         const char *what) {
    uint8_t *out = NULL;
    size_t out_n = 0;
    lowbit_diag diag = {0};
    lowbit_status st = lb_gunzip(gz, n, 1 << 20, &out, &out_n, &diag);
    CHECK(st == LOWBIT_OK, "%s: %s", what, diag.message);
    int same = st == LOWBIT_OK && out_n == want_n && memcmp(out, want, want_n) == 0;
    CHECK(same, "%s: %zu bytes differ from the expected %zu", what, out_n, want_n);
    free(out);
    return same;
}

/* Must fail with a message and leave no output. */
static void expect_gunzip_refused(const uint8_t *gz, size_t n, size_t max_out, const char *what,
                                  const char *message_part) {
    uint8_t *out = (uint8_t *)1;
    size_t out_n = 7;
    lowbit_diag diag = {0};
    lowbit_status st = lb_gunzip(gz, n, max_out, &out, &out_n, &diag);
    CHECK(st == LOWBIT_ERR_BAD_FILE, "%s: status %d", what, (int)st);
    CHECK(out == NULL && out_n == 0, "%s: output left behind", what);
    CHECK(diag.message[0] != '\0', "%s: no message", what);
    if (message_part) {
        CHECK(strstr(diag.message, message_part) != NULL, "%s: message '%s' lacks '%s'", what,
              diag.message, message_part);
    }
    if (st == LOWBIT_OK) free(out);
}

static void test_crc32(void) {
    CHECK(lb_crc32(0, (const uint8_t *)"123456789", 9) == 0xCBF43926u, "CRC-32 check value");
    CHECK(lb_crc32(lb_crc32(0, (const uint8_t *)"1234", 4), (const uint8_t *)"56789", 5) ==
              0xCBF43926u,
          "CRC-32 continued");
    CHECK(lb_crc32(0, NULL, 0) == 0, "CRC-32 of nothing");
}

static void test_zlib_streams(const uint8_t *plain, size_t n) {
    CHECK(((gz_fixed[10] >> 1) & 3) == 1 && ((gz_dynamic[10] >> 1) & 3) == 2,
          "test streams start with a fixed and a dynamic block");
    gunzip_equals(gz_fixed, sizeof gz_fixed, plain, n, "fixed Huffman");
    gunzip_equals(gz_dynamic, sizeof gz_dynamic, plain, n, "dynamic Huffman");
    gunzip_equals(gz_named, sizeof gz_named, plain, n, "gzip with FNAME");

    /* raw inflate reports how much input the stream used */
    uint8_t *out = NULL;
    size_t out_n = 0, used = 0;
    lowbit_diag diag = {0};
    CHECK(lb_inflate(gz_dynamic + 10, sizeof gz_dynamic - 10, 1 << 20, &out, &out_n, &used,
                     &diag) == LOWBIT_OK,
          "%s", diag.message);
    CHECK(used == sizeof gz_dynamic - 18, "inflate used %zu bytes of %zu", used,
          sizeof gz_dynamic - 18);
    free(out);
}

static void test_stored_and_headers(const uint8_t *plain, size_t n) {
    static byte_buf b;
    const int flag_sets[] = {0, FTEXT, FEXTRA, FNAME, FCOMMENT, FHCRC,
                             FEXTRA | FNAME | FCOMMENT | FHCRC};
    for (int f = 0; f < LB_ARRAY_LEN(flag_sets); f++) {
        memset(&b, 0, sizeof b);
        put_gzip_stored(&b, plain, n, 100, flag_sets[f]);
        char what[64];
        snprintf(what, sizeof what, "stored blocks, flags 0x%02x", flag_sets[f]);
        gunzip_equals(b.data, b.size, plain, n, what);
    }
    /* one stored block of the largest size, and an empty member */
    static uint8_t big[70000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7 + (i >> 9));
    memset(&b, 0, sizeof b);
    put_gzip_stored(&b, big, 65535, 65535, 0);
    gunzip_equals(b.data, b.size, big, 65535, "65535-byte stored block");
    memset(&b, 0, sizeof b);
    put_gzip_stored(&b, big, 0, 100, 0);
    gunzip_equals(b.data, b.size, big, 0, "empty member");

    /* header damage */
    memset(&b, 0, sizeof b);
    put_gzip_stored(&b, plain, n, 1000, FHCRC | FNAME);
    b.data[12] ^= 1; /* inside the name: the header CRC no longer matches */
    expect_gunzip_refused(b.data, b.size, 1 << 20, "bad header CRC", "header CRC");
    b.data[12] ^= 1;
    b.data[3] |= 0x20;
    expect_gunzip_refused(b.data, b.size, 1 << 20, "reserved flag", "reserved");
    b.data[3] &= 0x1f;
    b.data[2] = 7;
    expect_gunzip_refused(b.data, b.size, 1 << 20, "method 7", "deflate");
    b.data[2] = 8;
    b.data[0] = 0x1e;
    expect_gunzip_refused(b.data, b.size, 1 << 20, "bad magic", "magic");
    b.data[0] = 0x1f;
    gunzip_equals(b.data, b.size, plain, n, "restored header");
    /* an unterminated name runs to the end of the input */
    memset(&b, 0, sizeof b);
    put_gzip_header(&b, FNAME);
    b.size--; /* drop the terminator */
    expect_gunzip_refused(b.data, b.size, 1 << 20, "unterminated name", "name");
    /* stored block length check */
    memset(&b, 0, sizeof b);
    put_gzip_stored(&b, plain, 50, 1000, 0);
    b.data[13] ^= 0xff; /* NLEN's low byte */
    expect_gunzip_refused(b.data, b.size, 1 << 20, "stored NLEN", "stored block");
}

static void test_trailer_and_bounds(const uint8_t *plain, size_t n) {
    uint8_t copy[sizeof gz_dynamic + 1];
    memcpy(copy, gz_dynamic, sizeof gz_dynamic);
    size_t len = sizeof gz_dynamic;
    copy[len - 8] ^= 0x01;
    expect_gunzip_refused(copy, len, 1 << 20, "corrupted CRC-32", "CRC-32");
    copy[len - 8] ^= 0x01;
    copy[len - 4] ^= 0x01;
    expect_gunzip_refused(copy, len, 1 << 20, "corrupted ISIZE", "ISIZE");
    copy[len - 4] ^= 0x01;
    copy[len] = 0;
    expect_gunzip_refused(copy, len + 1, 1 << 20, "trailing byte", "after");
    /* the output bound: exactly enough passes, one byte less is refused */
    uint8_t *out = NULL;
    size_t out_n = 0;
    lowbit_diag diag = {0};
    CHECK(lb_gunzip(gz_dynamic, sizeof gz_dynamic, n, &out, &out_n, &diag) == LOWBIT_OK,
          "output of exactly max_out: %s", diag.message);
    free(out);
    expect_gunzip_refused(gz_dynamic, sizeof gz_dynamic, n - 1, "output over the bound", "limit");
    expect_gunzip_refused(gz_fixed, sizeof gz_fixed, 10, "fixed output over the bound", "limit");
    (void)plain;
}

/* Every proper prefix of a valid member is refused with a message (never a crash or read past
   the end: under ASan each prefix is an exactly sized heap copy). */
static void test_truncations(const uint8_t *stream, size_t n, const char *what) {
    int refused = 0;
    for (size_t len = 0; len < n; len++) {
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, stream, len);
        uint8_t *out = NULL;
        size_t out_n = 0;
        lowbit_diag diag = {0};
        lowbit_status st = lb_gunzip(copy, len, 1 << 20, &out, &out_n, &diag);
        refused += st != LOWBIT_OK && out == NULL && diag.message[0] != '\0';
        if (st == LOWBIT_OK) free(out);
        free(copy);
    }
    CHECK(refused == (int)n, "%s: %d of %zu truncations refused cleanly", what, refused, n);
}

/* Flipping any single bit either is refused or (in header fields nobody checks, like MTIME)
   still gives exactly the original data: the CRC-32 catches damaged content. */
static void test_bit_flips(const uint8_t *stream, size_t n, const uint8_t *plain, size_t plain_n,
                           const char *what) {
    int bad = 0;
    uint8_t *copy = malloc(n);
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(copy, stream, n);
            copy[i] ^= (uint8_t)(1u << bit);
            uint8_t *out = NULL;
            size_t out_n = 0;
            lowbit_diag diag = {0};
            if (lb_gunzip(copy, n, 1 << 20, &out, &out_n, &diag) == LOWBIT_OK) {
                bad += out_n != plain_n || memcmp(out, plain, plain_n) != 0;
                free(out);
            } else {
                bad += diag.message[0] == '\0';
            }
        }
    }
    free(copy);
    CHECK(bad == 0, "%s: %d bit flips accepted with wrong data or refused silently", what, bad);
}

/* Hand-made blocks exercising the decoder's checks. */
static void expect_inflate_refused(const byte_buf *b, const char *what, const char *message_part) {
    uint8_t *out = (uint8_t *)1;
    size_t out_n = 5, used = 9;
    lowbit_diag diag = {0};
    lowbit_status st = lb_inflate(b->data, b->size, 1 << 16, &out, &out_n, &used, &diag);
    CHECK(st == LOWBIT_ERR_BAD_FILE, "%s: status %d", what, (int)st);
    CHECK(out == NULL && out_n == 0, "%s: output left behind", what);
    CHECK(strstr(diag.message, message_part) != NULL, "%s: message '%s' lacks '%s'", what,
          diag.message, message_part);
}

static void test_crafted_blocks(void) {
    static byte_buf b;
    /* fixed block: a match before any output */
    memset(&b, 0, sizeof b);
    put_bits(&b, 1, 1);
    put_bits(&b, 1, 2);
    put_code(&b, 1, 7); /* length symbol 257: 0000001 */
    put_code(&b, 0, 5); /* distance 1 */
    put_code(&b, 0, 7); /* end of block */
    flush_bits(&b);
    expect_inflate_refused(&b, "match before output", "too far");
    /* fixed block: literal 'a', then distance symbol 30 */
    memset(&b, 0, sizeof b);
    put_bits(&b, 1, 1);
    put_bits(&b, 1, 2);
    put_code(&b, 0x30 + 'a', 8);
    put_code(&b, 1, 7);
    put_code(&b, 30, 5);
    flush_bits(&b);
    expect_inflate_refused(&b, "distance symbol 30", "distance symbol");
    /* fixed block: length symbol 286 (codes 280-287 are 11000000 + n) */
    memset(&b, 0, sizeof b);
    put_bits(&b, 1, 1);
    put_bits(&b, 1, 2);
    put_code(&b, 0xc0 + 6, 8);
    flush_bits(&b);
    expect_inflate_refused(&b, "length symbol 286", "length symbol");
    /* block type 3 */
    memset(&b, 0, sizeof b);
    put_bits(&b, 1, 1);
    put_bits(&b, 3, 2);
    flush_bits(&b);
    expect_inflate_refused(&b, "block type 3", "block type");
    /* dynamic block whose code-length code is over-subscribed (19 codes of 1 bit) */
    memset(&b, 0, sizeof b);
    put_bits(&b, 1, 1);
    put_bits(&b, 2, 2);
    put_bits(&b, 0, 5);
    put_bits(&b, 0, 5);
    put_bits(&b, 15, 4);
    for (int i = 0; i < 19; i++) put_bits(&b, 1, 3);
    flush_bits(&b);
    expect_inflate_refused(&b, "over-subscribed code", "code-length code");
    /* dynamic block: code-length code {0: 1 bit, 16: 1 bit}; the first length is a repeat */
    memset(&b, 0, sizeof b);
    put_bits(&b, 1, 1);
    put_bits(&b, 2, 2);
    put_bits(&b, 0, 5);
    put_bits(&b, 0, 5);
    put_bits(&b, 0, 4); /* 4 code-length lengths: for 16, 17, 18, 0 */
    put_bits(&b, 1, 3);
    put_bits(&b, 0, 3);
    put_bits(&b, 0, 3);
    put_bits(&b, 1, 3);
    put_code(&b, 1, 1); /* symbol 16 (0 gets code 0, 16 code 1) */
    put_bits(&b, 0, 2);
    flush_bits(&b);
    expect_inflate_refused(&b, "repeat of nothing", "no previous length");
    /* dynamic block: all 258 lengths zero (so no end-of-block code) via symbol 18 twice */
    memset(&b, 0, sizeof b);
    put_bits(&b, 1, 1);
    put_bits(&b, 2, 2);
    put_bits(&b, 0, 5);
    put_bits(&b, 0, 5);
    put_bits(&b, 0, 4);
    put_bits(&b, 0, 3); /* 16 */
    put_bits(&b, 0, 3); /* 17 */
    put_bits(&b, 1, 3); /* 18 */
    put_bits(&b, 1, 3); /* 0 */
    put_code(&b, 1, 1); /* 18: 11 + 127 zeros */
    put_bits(&b, 127, 7);
    put_code(&b, 1, 1); /* 18: 11 + 109 zeros = 258 in all */
    put_bits(&b, 109, 7);
    flush_bits(&b);
    expect_inflate_refused(&b, "no end-of-block code", "end-of-block");
    /* an empty input */
    memset(&b, 0, sizeof b);
    expect_inflate_refused(&b, "empty input", "truncated");
}

/* ---- IDX ------------------------------------------------------------------------------------- */

/* An IDX file of unsigned bytes with the given dimensions, data i*31 + 7 (mod 256). */
static size_t make_idx(uint8_t *buf, int n_dims, const uint32_t *dims) {
    size_t n = 4;
    buf[0] = 0;
    buf[1] = 0;
    buf[2] = 8;
    buf[3] = (uint8_t)n_dims;
    uint64_t count = 1;
    for (int d = 0; d < n_dims; d++) {
        for (int k = 3; k >= 0; k--) buf[n++] = (uint8_t)(dims[d] >> (8 * k));
        count *= dims[d];
    }
    for (uint64_t i = 0; i < count; i++) buf[n++] = (uint8_t)(i * 31 + 7);
    return n;
}

static void expect_set_refused(const uint8_t *images, size_t images_n, const uint8_t *labels,
                               size_t labels_n, const char *what, const char *message_part) {
    lb_image_set set;
    lowbit_diag diag = {0};
    lowbit_status st = lb_image_set_from_memory(images, images_n, labels, labels_n, 1 << 20,
                                                &set, &diag);
    CHECK(st == LOWBIT_ERR_BAD_FILE, "%s: status %d", what, (int)st);
    CHECK(set.images == NULL && set.labels == NULL, "%s: set not empty", what);
    CHECK(strstr(diag.message, message_part) != NULL, "%s: message '%s' lacks '%s'", what,
          diag.message, message_part);
    if (st == LOWBIT_OK) lb_image_set_free(&set);
}

static void test_idx_memory(void) {
    static uint8_t images[4096], labels[256], gz_images[8192];
    const uint32_t image_dims[3] = {5, 4, 3};
    const uint32_t label_dims[1] = {5};
    size_t images_n = make_idx(images, 3, image_dims);
    size_t labels_n = make_idx(labels, 1, label_dims);
    for (int i = 0; i < 5; i++) labels[8 + i] = (uint8_t)(i * 3); /* 0..12: 13 classes */
    lb_image_set set;
    lowbit_diag diag = {0};
    CHECK(lb_image_set_from_memory(images, images_n, labels, labels_n, 1 << 20, &set, &diag) ==
              LOWBIT_OK,
          "%s", diag.message);
    CHECK(set.count == 5 && set.h == 4 && set.w == 3 && set.c == 1, "set shape");
    CHECK(set.classes == 13, "classes %d", (int)set.classes);
    CHECK(memcmp(set.images, images + 16, 60) == 0 && memcmp(set.labels, labels + 8, 5) == 0,
          "set bytes");
    lb_image_set_free(&set);
    CHECK(set.images == NULL && set.count == 0, "free clears the set");

    /* gzipped images, raw labels: recognized by content */
    static byte_buf b;
    memset(&b, 0, sizeof b);
    put_gzip_stored(&b, images, images_n, 17, FNAME);
    memcpy(gz_images, b.data, b.size);
    CHECK(lb_image_set_from_memory(gz_images, b.size, labels, labels_n, 1 << 20, &set, &diag) ==
              LOWBIT_OK,
          "gzipped: %s", diag.message);
    CHECK(set.count == 5 && memcmp(set.images, images + 16, 60) == 0, "gzipped set bytes");
    lb_image_set_free(&set);
    /* a decompressed size over the bound */
    CHECK(lb_image_set_from_memory(gz_images, b.size, labels, labels_n, 40, &set, &diag) ==
              LOWBIT_ERR_BAD_FILE,
          "bound on decompressed IDX");

    /* labels stay under 10 classes: still 10 */
    for (int i = 0; i < 5; i++) labels[8 + i] = (uint8_t)i;
    CHECK(lb_image_set_from_memory(images, images_n, labels, labels_n, 1 << 20, &set, &diag) ==
              LOWBIT_OK,
          "%s", diag.message);
    CHECK(set.classes == 10, "classes %d", (int)set.classes);
    lb_image_set_free(&set);

    expect_set_refused(images, images_n, labels, labels_n - 1, "labels truncated", "IDX");
    expect_set_refused(images, images_n - 1, labels, labels_n, "images truncated", "IDX");
    expect_set_refused(labels, labels_n, labels, labels_n, "labels as images", "dimensions");
    expect_set_refused(images, images_n, images, images_n, "images as labels", "dimensions");
    expect_set_refused(images, 10, labels, labels_n, "header cut", "truncated header");
    expect_set_refused(images, 3, labels, labels_n, "magic cut", "magic");
    uint8_t longer[4096];
    memcpy(longer, images, images_n);
    longer[images_n] = 0;
    expect_set_refused(longer, images_n + 1, labels, labels_n, "trailing byte", "after the data");
    longer[2] = 0x0d; /* floats */
    expect_set_refused(longer, images_n, labels, labels_n, "float elements", "element type");
    longer[2] = 8;
    longer[1] = 1;
    expect_set_refused(longer, images_n, labels, labels_n, "bad magic", "magic");
    longer[1] = 0;
    longer[7] = 0; /* count 0 */
    expect_set_refused(longer, images_n, labels, labels_n, "zero count", "is 0");
    /* dimensions whose product exceeds the data (and would overflow 32 bits) */
    memcpy(longer, images, images_n);
    for (int k = 4; k < 16; k++) longer[k] = 0xff;
    expect_set_refused(longer, images_n, labels, labels_n, "huge dims", "more data");
    /* counts disagree */
    const uint32_t six[1] = {6};
    size_t six_n = make_idx(labels, 1, six);
    expect_set_refused(images, images_n, labels, six_n, "count mismatch", "5 images but 6 labels");
    /* gzipped garbage */
    expect_set_refused(gz_images, 20, labels, labels_n, "gzip cut", "");
}

static void test_fashion_mnist(void) {
    lb_image_set set;
    lowbit_diag diag = {0};
    lowbit_status st = lb_image_set_load_fashion_mnist(FASHION_DIR, 0, &set, &diag);
    CHECK(st == LOWBIT_OK,
          "cannot load the Fashion-MNIST test set from " FASHION_DIR
          " (install it: apt-get install dataset-fashion-mnist): %s",
          diag.message);
    if (st != LOWBIT_OK) return;
    CHECK(set.count == 10000 && set.h == 28 && set.w == 28 && set.c == 1 && set.classes == 10,
          "test set %lld x %dx%dx%d, %d classes", (long long)set.count, (int)set.h, (int)set.w,
          (int)set.c, (int)set.classes);
    int per_class[256] = {0};
    for (int64_t i = 0; i < set.count; i++) per_class[set.labels[i]]++;
    for (int c = 0; c < 10; c++) {
        CHECK(per_class[c] == 1000, "class %d has %d test images", c, per_class[c]);
    }
    /* sum of all pixels, computed independently with Python's gzip module */
    uint64_t sum = 0;
    for (int64_t i = 0; i < set.count * 784; i++) sum += set.images[i];
    CHECK(sum == 573469082ull, "pixel sum %llu", (unsigned long long)sum);
    lb_image_set_free(&set);

    /* a missing folder names the file */
    st = lb_image_set_load_fashion_mnist("/nonexistent-lowbit-folder", 0, &set, &diag);
    CHECK(st == LOWBIT_ERR_IO && strstr(diag.message, "t10k-images-idx3-ubyte.gz"),
          "missing files: %s", diag.message);
    /* a gzipped label file given as images is refused naming it */
    st = lb_image_set_load_idx(FASHION_DIR "/t10k-labels-idx1-ubyte.gz",
                               FASHION_DIR "/t10k-labels-idx1-ubyte.gz", &set, &diag);
    CHECK(st == LOWBIT_ERR_BAD_FILE && strstr(diag.message, "t10k-labels"), "labels as images: %s",
          diag.message);
}

int main(void) {
    uint8_t plain[2048];
    size_t n = make_plain(plain, sizeof plain);
    test_crc32();
    test_zlib_streams(plain, n);
    test_stored_and_headers(plain, n);
    test_trailer_and_bounds(plain, n);
    test_truncations(gz_fixed, sizeof gz_fixed, "fixed");
    test_truncations(gz_dynamic, sizeof gz_dynamic, "dynamic");
    test_truncations(gz_named, sizeof gz_named, "named");
    test_bit_flips(gz_dynamic, sizeof gz_dynamic, plain, n, "dynamic");
    test_bit_flips(gz_fixed, sizeof gz_fixed, plain, n, "fixed");
    test_crafted_blocks();
    test_idx_memory();
    test_fashion_mnist();
    return lb_test_summary();
}
