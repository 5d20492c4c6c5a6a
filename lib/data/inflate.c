/*
 * DEFLATE decoding (RFC 1951) and the gzip wrapper (RFC 1952).
 *
 * Input is hostile: every bit is fetched through a reader that knows the input's end, every
 * Huffman code set is checked for over-subscription and (but for the one-code case the RFC
 * allows) incompleteness, every back-reference is checked against the output produced so far,
 * and the output never grows beyond the caller's bound.
 *
 * Huffman codes are decoded with a 9-bit lookup table for the common short codes and a
 * canonical-code walk (one bit at a time, by code length) for the rest, which also handles the
 * last few bits of a stream where fewer than 9 bits remain.
 */
#include "data.h"

#include <stdlib.h>

#define MAX_CODE_BITS 15
#define FAST_BITS 9
#define MAX_LITLEN_SYMBOLS 288 /* 286 usable; the fixed code defines 288 */
#define MAX_DIST_SYMBOLS 32    /* 30 usable; the fixed code defines 32 */

/* ---- bit reader ------------------------------------------------------------------------------ */

/* DEFLATE packs bits from the least significant bit of each byte; Huffman codes are stored most
   significant bit first within that stream. */
typedef struct bit_reader {
    const uint8_t *in;
    size_t size, pos; /* bytes loaded into buf so far */
    uint64_t buf;
    int count; /* valid bits in buf */
} bit_reader;

static void br_fill(bit_reader *br) {
    while (br->count <= 56 && br->pos < br->size) {
        br->buf |= (uint64_t)br->in[br->pos++] << br->count;
        br->count += 8;
    }
}

/* n <= 32 bits, or -1 when the input ends first. */
static int64_t br_bits(bit_reader *br, int n) {
    if (br->count < n) br_fill(br);
    if (br->count < n) return -1;
    uint64_t v = br->buf & (((uint64_t)1 << n) - 1);
    br->buf >>= n;
    br->count -= n;
    return (int64_t)v;
}

/* Input bytes used so far: loaded bytes minus whole bytes still unread in the buffer. */
static size_t br_consumed(const bit_reader *br) { return br->pos - (size_t)(br->count / 8); }

/* ---- Huffman codes --------------------------------------------------------------------------- */

typedef struct huffman {
    uint16_t count[MAX_CODE_BITS + 1];       /* codes of each length */
    uint16_t symbols[MAX_LITLEN_SYMBOLS];    /* symbols ordered by (length, value) */
    uint16_t fast[1 << FAST_BITS];           /* (symbol << 4) | length; 0 = not a short code */
} huffman;

static unsigned reverse_bits(unsigned code, int len) {
    unsigned r = 0;
    for (int i = 0; i < len; i++) {
        r = (r << 1) | (code & 1);
        code >>= 1;
    }
    return r;
}

/* Builds the canonical code of n symbols' lengths (0 = unused). Returns 0 for a valid code set:
   not over-subscribed, and complete unless it has a single code of length 1 (RFC 1951 3.2.7
   allows one distance code) or no code at all (allowed for distances, checked by the caller). */
static int huffman_build(huffman *h, const uint8_t *lengths, int n) {
    memset(h, 0, sizeof *h);
    for (int s = 0; s < n; s++) h->count[lengths[s]]++;
    int used = n - h->count[0];
    h->count[0] = 0;
    int left = 1; /* codes of the current length still unassigned */
    for (int len = 1; len <= MAX_CODE_BITS; len++) {
        left = left * 2 - h->count[len];
        if (left < 0) return -1; /* over-subscribed */
    }
    if (left > 0 && !(used == 0 || (used == 1 && h->count[1] == 1))) return -1; /* incomplete */
    uint16_t offset[MAX_CODE_BITS + 2];
    uint16_t next_code[MAX_CODE_BITS + 1];
    offset[1] = 0;
    unsigned code = 0;
    for (int len = 1; len <= MAX_CODE_BITS; len++) {
        offset[len + 1] = (uint16_t)(offset[len] + h->count[len]);
        next_code[len] = (uint16_t)code;
        code = (code + h->count[len]) << 1;
    }
    for (int s = 0; s < n; s++) {
        int len = lengths[s];
        if (len == 0) continue;
        h->symbols[offset[len]++] = (uint16_t)s;
        unsigned c = next_code[len]++;
        if (len <= FAST_BITS) {
            unsigned r = reverse_bits(c, len);
            for (unsigned k = r; k < (1u << FAST_BITS); k += 1u << len) {
                h->fast[k] = (uint16_t)((s << 4) | len);
            }
        }
    }
    return 0;
}

/* Walks the canonical code one bit at a time: the codes of each length are consecutive
   integers, so a prefix of `len` bits is a code iff it falls in that length's range. */
static int huffman_decode_slow(bit_reader *br, const huffman *h) {
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= MAX_CODE_BITS; len++) {
        int64_t bit = br_bits(br, 1);
        if (bit < 0) return -1;
        code |= (int)bit;
        int n = h->count[len];
        if (code - first < n) return h->symbols[index + code - first];
        index += n;
        first = (first + n) << 1;
        code <<= 1;
    }
    return -2; /* no code matches: only possible with an incomplete code set */
}

/* A symbol, -1 when the input ends, -2 for a bit pattern that is no code. */
static int huffman_decode(bit_reader *br, const huffman *h) {
    if (br->count < MAX_CODE_BITS) br_fill(br);
    uint16_t e = h->fast[br->buf & ((1u << FAST_BITS) - 1)];
    int len = e & 15;
    if (e != 0 && len <= br->count) {
        br->buf >>= len;
        br->count -= len;
        return e >> 4;
    }
    return huffman_decode_slow(br, h);
}

/* ---- output buffer --------------------------------------------------------------------------- */

typedef struct out_buffer {
    uint8_t *data;
    size_t size, capacity, max;
} out_buffer;

/* Makes room for n more bytes (doubling, capped at max). 0 on success, -1 over the bound, -2 out
   of memory. */
static int out_reserve(out_buffer *o, size_t n) {
    if (n > o->max - o->size) return -1;
    if (o->size + n <= o->capacity) return 0;
    size_t cap = o->capacity ? o->capacity : 4096;
    while (cap < o->size + n) cap = cap > o->max / 2 ? o->max : cap * 2;
    uint8_t *p = realloc(o->data, cap ? cap : 1);
    if (!p) return -2;
    o->data = p;
    o->capacity = cap;
    return 0;
}

/* ---- the decoder ----------------------------------------------------------------------------- */

typedef struct inflater {
    bit_reader br;
    out_buffer out;
    lowbit_diag *diag;
    huffman litlen, dist;
} inflater;

static lowbit_status fail(inflater *z, lowbit_status st, const char *what) {
    return lb_diag_set(z->diag, st, -1, br_consumed(&z->br), "deflate stream: %s (at input byte %zu)",
                       what, br_consumed(&z->br));
}

static lowbit_status fail_truncated(inflater *z) {
    return fail(z, LOWBIT_ERR_BAD_FILE, "truncated");
}

static lowbit_status reserve_or_fail(inflater *z, size_t n) {
    int r = out_reserve(&z->out, n);
    if (r == 0) return LOWBIT_OK;
    if (r == -2) return fail(z, LOWBIT_ERR_NO_MEMORY, "out of memory for the output");
    return lb_diag_set(z->diag, LOWBIT_ERR_BAD_FILE, -1, br_consumed(&z->br),
                       "deflate stream: output exceeds the limit of %zu bytes", z->out.max);
}

static lowbit_status inflate_stored(inflater *z) {
    bit_reader *br = &z->br;
    br_bits(br, br->count % 8); /* skip to the byte boundary */
    int64_t len = br_bits(br, 16), nlen = br_bits(br, 16);
    if (len < 0 || nlen < 0) return fail_truncated(z);
    if ((len ^ 0xffff) != nlen) return fail(z, LOWBIT_ERR_BAD_FILE, "stored block length check failed");
    lowbit_status st = reserve_or_fail(z, (size_t)len);
    if (st != LOWBIT_OK) return st;
    /* whole bytes still in the bit buffer come first, then straight from the input */
    while (len > 0 && br->count >= 8) {
        z->out.data[z->out.size++] = (uint8_t)br_bits(br, 8);
        len--;
    }
    if ((size_t)len > br->size - br->pos) return fail_truncated(z);
    if (len > 0) { /* an empty block may come before any output buffer exists */
        memcpy(z->out.data + z->out.size, br->in + br->pos, (size_t)len);
        z->out.size += (size_t)len;
        br->pos += (size_t)len;
    }
    return LOWBIT_OK;
}

static const uint16_t length_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,
                                         15, 17, 19, 23, 27, 31, 35, 43, 51,  59,
                                         67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t length_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                         2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                       33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                       1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static lowbit_status symbol_error(inflater *z, int sym) {
    return sym == -1 ? fail_truncated(z) : fail(z, LOWBIT_ERR_BAD_FILE, "invalid Huffman code");
}

/* Literal/length and distance symbols until end of block. */
static lowbit_status inflate_codes(inflater *z) {
    for (;;) {
        int sym = huffman_decode(&z->br, &z->litlen);
        if (sym < 0) return symbol_error(z, sym);
        if (sym < 256) {
            lowbit_status st = reserve_or_fail(z, 1);
            if (st != LOWBIT_OK) return st;
            z->out.data[z->out.size++] = (uint8_t)sym;
            continue;
        }
        if (sym == 256) return LOWBIT_OK;
        sym -= 257;
        if (sym >= 29) return fail(z, LOWBIT_ERR_BAD_FILE, "invalid length symbol");
        int64_t extra = br_bits(&z->br, length_extra[sym]);
        if (extra < 0) return fail_truncated(z);
        size_t len = length_base[sym] + (size_t)extra;
        int dsym = huffman_decode(&z->br, &z->dist);
        if (dsym < 0) return symbol_error(z, dsym);
        if (dsym >= 30) return fail(z, LOWBIT_ERR_BAD_FILE, "invalid distance symbol");
        extra = br_bits(&z->br, dist_extra[dsym]);
        if (extra < 0) return fail_truncated(z);
        size_t dist = dist_base[dsym] + (size_t)extra;
        if (dist > z->out.size) return fail(z, LOWBIT_ERR_BAD_FILE, "distance too far back");
        lowbit_status st = reserve_or_fail(z, len);
        if (st != LOWBIT_OK) return st;
        /* byte by byte: source and destination overlap when dist < len (a run) */
        uint8_t *d = z->out.data + z->out.size;
        const uint8_t *s = d - dist;
        for (size_t i = 0; i < len; i++) d[i] = s[i];
        z->out.size += len;
    }
}

static lowbit_status inflate_fixed(inflater *z) {
    uint8_t lengths[MAX_LITLEN_SYMBOLS];
    int s = 0;
    for (; s < 144; s++) lengths[s] = 8;
    for (; s < 256; s++) lengths[s] = 9;
    for (; s < 280; s++) lengths[s] = 7;
    for (; s < 288; s++) lengths[s] = 8;
    huffman_build(&z->litlen, lengths, 288);
    /* 32 five-bit codes; symbols 30 and 31 exist in the code but are refused when used */
    uint8_t dist_lengths[MAX_DIST_SYMBOLS];
    for (s = 0; s < MAX_DIST_SYMBOLS; s++) dist_lengths[s] = 5;
    huffman_build(&z->dist, dist_lengths, MAX_DIST_SYMBOLS);
    return inflate_codes(z);
}

/* Reads the code lengths of a dynamic block (RFC 1951 3.2.7) and builds its two codes. */
static lowbit_status read_dynamic_codes(inflater *z) {
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    int64_t hlit = br_bits(&z->br, 5), hdist = br_bits(&z->br, 5), hclen = br_bits(&z->br, 4);
    if (hlit < 0 || hdist < 0 || hclen < 0) return fail_truncated(z);
    int nlen = (int)hlit + 257, ndist = (int)hdist + 1, ncode = (int)hclen + 4;
    if (nlen > 286 || ndist > 30) return fail(z, LOWBIT_ERR_BAD_FILE, "too many length or distance codes");
    uint8_t lengths[286 + 30];
    memset(lengths, 0, 19);
    for (int i = 0; i < ncode; i++) {
        int64_t v = br_bits(&z->br, 3);
        if (v < 0) return fail_truncated(z);
        lengths[order[i]] = (uint8_t)v;
    }
    huffman lencode;
    if (huffman_build(&lencode, lengths, 19) != 0) {
        return fail(z, LOWBIT_ERR_BAD_FILE, "invalid code-length code");
    }
    int n = 0;
    while (n < nlen + ndist) {
        int sym = huffman_decode(&z->br, &lencode);
        if (sym < 0) return symbol_error(z, sym);
        if (sym < 16) {
            lengths[n++] = (uint8_t)sym;
            continue;
        }
        uint8_t value = 0;
        int64_t repeat;
        if (sym == 16) {
            if (n == 0) return fail(z, LOWBIT_ERR_BAD_FILE, "length repeat with no previous length");
            value = lengths[n - 1];
            repeat = br_bits(&z->br, 2);
            repeat = repeat < 0 ? -1 : 3 + repeat;
        } else if (sym == 17) {
            repeat = br_bits(&z->br, 3);
            repeat = repeat < 0 ? -1 : 3 + repeat;
        } else {
            repeat = br_bits(&z->br, 7);
            repeat = repeat < 0 ? -1 : 11 + repeat;
        }
        if (repeat < 0) return fail_truncated(z);
        if (n + repeat > nlen + ndist) return fail(z, LOWBIT_ERR_BAD_FILE, "code lengths overflow their table");
        while (repeat-- > 0) lengths[n++] = value;
    }
    if (lengths[256] == 0) return fail(z, LOWBIT_ERR_BAD_FILE, "no end-of-block code");
    if (huffman_build(&z->litlen, lengths, nlen) != 0) {
        return fail(z, LOWBIT_ERR_BAD_FILE, "invalid literal/length code");
    }
    /* A block of literals only may have no distance code at all; using one is then an error,
       which the decoder reports as an invalid code. */
    if (huffman_build(&z->dist, lengths + nlen, ndist) != 0) {
        return fail(z, LOWBIT_ERR_BAD_FILE, "invalid distance code");
    }
    return LOWBIT_OK;
}

static lowbit_status inflate_run(inflater *z) {
    for (;;) {
        int64_t final = br_bits(&z->br, 1), type = br_bits(&z->br, 2);
        if (final < 0 || type < 0) return fail_truncated(z);
        lowbit_status st;
        switch (type) {
        case 0: st = inflate_stored(z); break;
        case 1: st = inflate_fixed(z); break;
        case 2:
            st = read_dynamic_codes(z);
            if (st == LOWBIT_OK) st = inflate_codes(z);
            break;
        default: return fail(z, LOWBIT_ERR_BAD_FILE, "invalid block type 3");
        }
        if (st != LOWBIT_OK) return st;
        if (final) return LOWBIT_OK;
    }
}

/* Inflates with an initial output capacity hint (e.g. a gzip ISIZE), capped at max_out. */
static lowbit_status inflate_with_hint(const uint8_t *in, size_t in_size, size_t max_out,
                                       size_t hint, uint8_t **out, size_t *out_size,
                                       size_t *consumed, lowbit_diag *diag) {
    *out = NULL;
    *out_size = 0;
    if (consumed) *consumed = 0;
    inflater *z = calloc(1, sizeof *z);
    if (!z) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    z->br = (bit_reader){.in = in, .size = in ? in_size : 0};
    z->out.max = max_out;
    z->diag = diag;
    lowbit_status st = LOWBIT_OK;
    if (hint > 0) st = reserve_or_fail(z, LB_MIN(hint, max_out));
    if (st == LOWBIT_OK) st = inflate_run(z);
    if (st == LOWBIT_OK) {
        *out = z->out.data ? z->out.data : malloc(1); /* an empty result is still a buffer */
        *out_size = z->out.size;
        if (consumed) *consumed = br_consumed(&z->br);
        if (!*out) st = lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    } else {
        free(z->out.data);
    }
    free(z);
    return st;
}

lowbit_status lb_inflate(const uint8_t *in, size_t in_size, size_t max_out, uint8_t **out,
                         size_t *out_size, size_t *consumed, lowbit_diag *diag) {
    if (!out || !out_size) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "no output given");
    }
    return inflate_with_hint(in, in_size, max_out, 0, out, out_size, consumed, diag);
}

/* ---- CRC-32 and gzip ------------------------------------------------------------------------- */

uint32_t lb_crc32(uint32_t crc, const uint8_t *data, size_t n) {
    /* The byte table is rebuilt per call (256 short loops): cheaper than any I/O this guards,
       and it keeps the library free of global mutable state. */
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

enum { GZ_FTEXT = 1, GZ_FHCRC = 2, GZ_FEXTRA = 4, GZ_FNAME = 8, GZ_FCOMMENT = 16 };

static lowbit_status gz_fail(lowbit_diag *diag, size_t offset, const char *what) {
    return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, offset, "gzip: %s (at byte %zu)", what, offset);
}

/* Skips a zero-terminated field; returns the position after its terminator, or 0 if none. */
static size_t skip_zero_terminated(const uint8_t *in, size_t size, size_t pos) {
    const uint8_t *end = memchr(in + pos, 0, size - pos);
    return end ? (size_t)(end - in) + 1 : 0;
}

/* Parses the member header; *data_start is where the DEFLATE stream begins. */
static lowbit_status gz_header(const uint8_t *in, size_t size, size_t *data_start,
                               lowbit_diag *diag) {
    if (size < 10) return gz_fail(diag, size, "file shorter than a gzip header");
    if (in[0] != 0x1f || in[1] != 0x8b) return gz_fail(diag, 0, "not a gzip file (bad magic)");
    if (in[2] != 8) return gz_fail(diag, 2, "compression method is not deflate");
    uint8_t flags = in[3];
    if (flags & 0xe0) return gz_fail(diag, 3, "reserved header flags set");
    size_t pos = 10;
    if (flags & GZ_FEXTRA) {
        if (size - pos < 2) return gz_fail(diag, pos, "truncated extra field length");
        size_t xlen = (size_t)lb_load_le(in + pos, 2);
        pos += 2;
        if (size - pos < xlen) return gz_fail(diag, pos, "truncated extra field");
        pos += xlen;
    }
    if (flags & GZ_FNAME) {
        size_t next = skip_zero_terminated(in, size, pos);
        if (!next) return gz_fail(diag, pos, "unterminated file name");
        pos = next;
    }
    if (flags & GZ_FCOMMENT) {
        size_t next = skip_zero_terminated(in, size, pos);
        if (!next) return gz_fail(diag, pos, "unterminated comment");
        pos = next;
    }
    if (flags & GZ_FHCRC) {
        if (size - pos < 2) return gz_fail(diag, pos, "truncated header CRC");
        uint32_t want = (uint32_t)lb_load_le(in + pos, 2);
        if ((lb_crc32(0, in, pos) & 0xffff) != want) return gz_fail(diag, pos, "header CRC mismatch");
        pos += 2;
    }
    *data_start = pos;
    return LOWBIT_OK;
}

lowbit_status lb_gunzip(const uint8_t *in, size_t in_size, size_t max_out, uint8_t **out,
                        size_t *out_size, lowbit_diag *diag) {
    if (!out || !out_size || (!in && in_size)) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "bad arguments");
    }
    *out = NULL;
    *out_size = 0;
    size_t start = 0;
    lowbit_status st = gz_header(in, in_size, &start, diag);
    if (st != LOWBIT_OK) return st;
    if (in_size - start < 8) return gz_fail(diag, in_size, "truncated (no room for the trailer)");
    /* ISIZE (the length mod 2^32) sizes the first allocation; it is checked, not trusted. */
    size_t hint = (size_t)lb_load_u32(in + in_size - 4);
    uint8_t *data;
    size_t size, used;
    st = inflate_with_hint(in + start, in_size - start - 8, max_out, hint, &data, &size, &used,
                           diag);
    if (st != LOWBIT_OK) {
        if (diag && diag->offset != UINT64_MAX) diag->offset += start; /* file offset */
        return st;
    }
    size_t trailer = start + used;
    if (trailer != in_size - 8) {
        free(data);
        return gz_fail(diag, trailer, "unexpected bytes after the compressed data");
    }
    if (lb_crc32(0, data, size) != lb_load_u32(in + trailer)) {
        free(data);
        return gz_fail(diag, trailer, "CRC-32 mismatch (corrupted data)");
    }
    if ((uint32_t)size != lb_load_u32(in + trailer + 4)) {
        free(data);
        return gz_fail(diag, trailer + 4, "length mismatch (ISIZE)");
    }
    *out = data;
    *out_size = size;
    return LOWBIT_OK;
}
