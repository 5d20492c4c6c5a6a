/*
 * SentencePiece-style BPE tokenizer (the "llama" vocabulary of GGUF's tokenizer.ggml.* keys),
 * following llama2.c's encoder, which the golden token files were made with:
 *
 *  - a space is prepended to non-empty text (SentencePiece's dummy prefix);
 *  - the text is cut into characters the way llama2.c does it: a byte and the UTF-8 continuation
 *    bytes (10xxxxxx) after it, at most 4 bytes in all; malformed text is cut the same way, so a
 *    stray continuation byte starts a character of its own;
 *  - each character becomes its piece, or, when the vocabulary has no such piece, one <0xNN>
 *    byte piece per byte (byte fallback); byte pieces never merge again;
 *  - then, until nothing changes, the adjacent pair whose concatenation is a piece with the
 *    highest score is merged, the leftmost one on equal scores.
 *
 * The merging keeps the symbols in a linked list and the candidate pairs in a binary heap
 * ordered by (score, leftmost position), dropping stale candidates when they surface: O(n log n)
 * instead of llama2.c's rescan of every pair after each merge. Positions stay ordered because a
 * merged symbol keeps the index of its left part.
 *
 * Only ordinary pieces (normal and user-defined) are looked up by text: control pieces (<s>),
 * <unk> and byte pieces are never produced by matching text.
 */
#include "../io/model.h"

#include <stdlib.h>

/* GGUF token types, as llama.cpp numbers them */
enum {
    TOKEN_UNDEFINED = 0,
    TOKEN_NORMAL = 1,
    TOKEN_UNKNOWN = 2,
    TOKEN_CONTROL = 3,
    TOKEN_USER_DEFINED = 4,
    TOKEN_UNUSED = 5,
    TOKEN_BYTE = 6
};

/* llama.cpp's defaults for SentencePiece vocabularies when the ids are not in the file */
enum { DEFAULT_BOS = 1, DEFAULT_EOS = 2 };

/* Bounds what a vocabulary may claim before anything is allocated for it. */
#define MAX_VOCAB (1 << 24)

struct lowbit_tokenizer {
    int32_t n_vocab;
    int32_t bos, eos;
    char *text;         /* every piece, each followed by a NUL */
    uint64_t *offsets;  /* piece i starts at text + offsets[i] */
    uint32_t *lengths;  /* in bytes, NUL excluded */
    float *scores;
    int32_t *types;
    int32_t *slots;     /* open-addressing hash of ordinary pieces: ids, -1 for empty slots */
    uint64_t slot_mask; /* slot count - 1 (a power of two) */
    uint32_t max_piece_length;
    int32_t byte_ids[256]; /* the <0xNN> piece of each byte, -1 when absent */
    int n_byte_pieces;
};

/* ------------------------------------------------------------------------------------------ */
/* Piece hash table                                                                            */
/* ------------------------------------------------------------------------------------------ */

/* FNV-1a: short keys, any bytes, no alignment needs */
static uint64_t hash_bytes(const char *bytes, size_t length) {
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < length; i++) {
        h ^= (uint8_t)bytes[i];
        h *= 0x100000001b3u;
    }
    return h;
}

static int32_t find_piece(const lowbit_tokenizer *t, const char *bytes, size_t length) {
    if (length == 0 || length > t->max_piece_length) return -1;
    for (uint64_t s = hash_bytes(bytes, length) & t->slot_mask;; s = (s + 1) & t->slot_mask) {
        const int32_t id = t->slots[s];
        if (id < 0) return -1;
        if (t->lengths[id] == length && memcmp(t->text + t->offsets[id], bytes, length) == 0) {
            return id;
        }
    }
}

static int is_ordinary(int32_t type) {
    return type == TOKEN_NORMAL || type == TOKEN_USER_DEFINED || type == TOKEN_UNDEFINED;
}

/* Duplicated pieces keep their first id, so that lookups do not depend on the table's order. */
static lowbit_status build_hash(lowbit_tokenizer *t) {
    uint64_t n_slots = 16;
    while (n_slots < 2 * (uint64_t)t->n_vocab) n_slots *= 2;
    t->slots = malloc(n_slots * sizeof *t->slots);
    if (!t->slots) return LOWBIT_ERR_NO_MEMORY;
    for (uint64_t s = 0; s < n_slots; s++) t->slots[s] = -1;
    t->slot_mask = n_slots - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const uint32_t length = t->lengths[id];
        if (!is_ordinary(t->types[id]) || length == 0) continue;
        if (length > t->max_piece_length) t->max_piece_length = length;
        const char *piece = t->text + t->offsets[id];
        if (find_piece(t, piece, length) >= 0) continue;
        uint64_t s = hash_bytes(piece, length) & t->slot_mask;
        while (t->slots[s] >= 0) s = (s + 1) & t->slot_mask;
        t->slots[s] = id;
    }
    return LOWBIT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Reading the metadata                                                                        */
/* ------------------------------------------------------------------------------------------ */

/* An array value's elements: checks the key exists, is an array of element_type, and (for
   fixed-size elements) that the value holds exactly count elements. */
typedef struct kv_array {
    const uint8_t *elements;
    uint64_t count;
    uint64_t bytes; /* of the elements */
} kv_array;

static lowbit_status find_array(const lb_model *m, const char *key, uint32_t element_type,
                                uint64_t element_size, kv_array *a, lowbit_diag *diag) {
    const lb_kv *kv = lb_model_find_kv(m, key);
    if (!kv) {
        return lb_diag_set(diag, LOWBIT_ERR_NOT_FOUND, -1, UINT64_MAX, "tokenizer: no %s", key);
    }
    if (kv->type != LOWBIT_GGUF_ARRAY || kv->value_size < 12 ||
        lb_load_u32(kv->value) != element_type) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "tokenizer: %s is not an array of GGUF type %u", key,
                           (unsigned)element_type);
    }
    a->count = lb_load_u64(kv->value + 4);
    a->elements = kv->value + 12;
    a->bytes = kv->value_size - 12;
    if (element_size && (a->count > a->bytes / element_size || a->count * element_size != a->bytes)) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "tokenizer: %s claims %llu elements in %llu bytes", key,
                           (unsigned long long)a->count, (unsigned long long)a->bytes);
    }
    return LOWBIT_OK;
}

static lowbit_status check_count(const char *key, uint64_t count, uint64_t n_vocab,
                                 lowbit_diag *diag) {
    if (count == n_vocab) return LOWBIT_OK;
    return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                       "tokenizer: %s has %llu entries, tokenizer.ggml.tokens has %llu", key,
                       (unsigned long long)count, (unsigned long long)n_vocab);
}

/* Copies the string array into one NUL-separated block, checking every length against the
   value's bytes. The block never outgrows the value: a NUL takes less than a length field. */
static lowbit_status copy_pieces(lowbit_tokenizer *t, const kv_array *a, lowbit_diag *diag) {
    t->text = malloc(a->bytes);
    if (!t->text) return LOWBIT_ERR_NO_MEMORY;
    uint64_t pos = 0, out = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const uint64_t left = a->bytes - pos;
        const uint64_t length = left >= 8 ? lb_load_u64(a->elements + pos) : UINT64_MAX;
        if (left < 8 || length > left - 8 || length > UINT32_MAX) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                               "tokenizer: piece %d runs past tokenizer.ggml.tokens", (int)id);
        }
        pos += 8;
        memcpy(t->text + out, a->elements + pos, length);
        t->text[out + length] = '\0';
        t->offsets[id] = out;
        t->lengths[id] = (uint32_t)length;
        pos += length;
        out += length + 1;
    }
    if (pos != a->bytes) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "tokenizer: %llu stray bytes after tokenizer.ggml.tokens",
                           (unsigned long long)(a->bytes - pos));
    }
    return LOWBIT_OK;
}

static int hex_value(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

/* The byte of a piece spelled "<0xNN>", or -1. */
static int byte_of_piece(const char *piece, uint32_t length) {
    if (length != 6 || memcmp(piece, "<0x", 3) != 0 || piece[5] != '>') return -1;
    const int hi = hex_value(piece[3]), lo = hex_value(piece[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static lowbit_status copy_scores_and_types(lowbit_tokenizer *t, const kv_array *scores,
                                           const kv_array *types, lowbit_diag *diag) {
    for (int32_t id = 0; id < t->n_vocab; id++) {
        t->scores[id] = lb_bits_to_float(lb_load_u32(scores->elements + 4 * (uint64_t)id));
        const uint32_t type_bits = lb_load_u32(types->elements + 4 * (uint64_t)id);
        int32_t type;
        memcpy(&type, &type_bits, sizeof type);
        t->types[id] = type;
        if (isnan(t->scores[id])) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                               "tokenizer: piece %d has a NaN score", (int)id);
        }
        if (type < TOKEN_UNDEFINED || type > TOKEN_BYTE) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                               "tokenizer: piece %d has token type %d, outside 0..6", (int)id,
                               (int)type);
        }
        if (type != TOKEN_BYTE) continue;
        const int byte = byte_of_piece(t->text + t->offsets[id], t->lengths[id]);
        if (byte < 0) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                               "tokenizer: byte piece %d is not spelled <0xNN>", (int)id);
        }
        if (t->byte_ids[byte] < 0) {
            t->byte_ids[byte] = id;
            t->n_byte_pieces++;
        }
    }
    return LOWBIT_OK;
}

/* bos/eos: an unsigned id below the vocabulary size; the SentencePiece default when absent. */
static lowbit_status special_id(const lb_model *m, const char *key, int32_t fallback,
                                int32_t n_vocab, int32_t *id, lowbit_diag *diag) {
    const lb_kv *kv = lb_model_find_kv(m, key);
    uint64_t v = (uint64_t)fallback;
    if (kv && !lb_kv_get_u64(kv, &v)) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "tokenizer: %s is not a non-negative integer", key);
    }
    if (v >= (uint64_t)n_vocab) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "tokenizer: %s is %llu, outside the vocabulary of %d", key,
                           (unsigned long long)v, (int)n_vocab);
    }
    *id = (int32_t)v;
    return LOWBIT_OK;
}

static lowbit_status check_model_name(const lb_model *m, lowbit_diag *diag) {
    const lb_kv *kv = lb_model_find_kv(m, "tokenizer.ggml.model");
    if (!kv) {
        return lb_diag_set(diag, LOWBIT_ERR_NOT_FOUND, -1, UINT64_MAX,
                           "the model has no tokenizer (no tokenizer.ggml.model)");
    }
    if (kv->type != LOWBIT_GGUF_STRING || kv->value_size < 8 ||
        lb_load_u64(kv->value) != kv->value_size - 8) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "tokenizer: tokenizer.ggml.model is not a string");
    }
    const uint64_t length = kv->value_size - 8;
    const char *name = (const char *)kv->value + 8;
    if (length != 5 || memcmp(name, "llama", 5) != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "tokenizer: model '%.*s' is not supported (only 'llama', "
                           "SentencePiece BPE)",
                           (int)LB_MIN(length, 40), name);
    }
    return LOWBIT_OK;
}

static lowbit_status allocate_tables(lowbit_tokenizer *t) {
    const size_t n = (size_t)t->n_vocab;
    t->offsets = malloc(n * sizeof *t->offsets);
    t->lengths = malloc(n * sizeof *t->lengths);
    t->scores = malloc(n * sizeof *t->scores);
    t->types = malloc(n * sizeof *t->types);
    if (!t->offsets || !t->lengths || !t->scores || !t->types) return LOWBIT_ERR_NO_MEMORY;
    for (int b = 0; b < 256; b++) t->byte_ids[b] = -1;
    return LOWBIT_OK;
}

static lowbit_status fill_tokenizer(const lb_model *m, lowbit_tokenizer *t, lowbit_diag *diag) {
    lowbit_status st = check_model_name(m, diag);
    kv_array tokens = {0}, scores = {0}, types = {0};
    if (st == LOWBIT_OK) st = find_array(m, "tokenizer.ggml.tokens", LOWBIT_GGUF_STRING, 0, &tokens, diag);
    if (st == LOWBIT_OK) st = find_array(m, "tokenizer.ggml.scores", LOWBIT_GGUF_FLOAT32, 4, &scores, diag);
    if (st == LOWBIT_OK) st = find_array(m, "tokenizer.ggml.token_type", LOWBIT_GGUF_INT32, 4, &types, diag);
    if (st != LOWBIT_OK) return st;
    /* each string takes at least its 8-byte length: bounds the count by the value's size */
    if (tokens.count == 0 || tokens.count > MAX_VOCAB || tokens.count > tokens.bytes / 8) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "tokenizer: tokenizer.ggml.tokens holds %llu pieces in %llu bytes",
                           (unsigned long long)tokens.count, (unsigned long long)tokens.bytes);
    }
    st = check_count("tokenizer.ggml.scores", scores.count, tokens.count, diag);
    if (st == LOWBIT_OK) st = check_count("tokenizer.ggml.token_type", types.count, tokens.count, diag);
    if (st != LOWBIT_OK) return st;
    t->n_vocab = (int32_t)tokens.count;
    if (allocate_tables(t) != LOWBIT_OK) {
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    }
    st = copy_pieces(t, &tokens, diag);
    if (st == LOWBIT_OK) st = copy_scores_and_types(t, &scores, &types, diag);
    if (st == LOWBIT_OK) st = special_id(m, "tokenizer.ggml.bos_token_id", DEFAULT_BOS, t->n_vocab, &t->bos, diag);
    if (st == LOWBIT_OK) st = special_id(m, "tokenizer.ggml.eos_token_id", DEFAULT_EOS, t->n_vocab, &t->eos, diag);
    if (st == LOWBIT_OK && build_hash(t) != LOWBIT_OK) {
        st = lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    }
    return st;
}

lowbit_status lowbit_tokenizer_create(const lowbit_model *model, lowbit_tokenizer **out,
                                      lowbit_diag *diag) {
    if (!model || !out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    lowbit_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    const lowbit_status st = fill_tokenizer(lb_model_of(model), t, diag);
    if (st != LOWBIT_OK) {
        lowbit_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LOWBIT_OK;
}

void lowbit_tokenizer_free(lowbit_tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->offsets);
    free(t->lengths);
    free(t->scores);
    free(t->types);
    free(t->slots);
    free(t);
}

int32_t lowbit_tokenizer_vocab_size(const lowbit_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t lowbit_tokenizer_bos(const lowbit_tokenizer *t) { return t ? t->bos : -1; }
int32_t lowbit_tokenizer_eos(const lowbit_tokenizer *t) { return t ? t->eos : -1; }
int lowbit_tokenizer_has_byte_fallback(const lowbit_tokenizer *t) {
    return t && t->n_byte_pieces == 256;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* A run of the (prefixed) text that is one token for now. */
typedef struct symbol {
    size_t start, length; /* bytes of the text */
    int32_t id;
    int32_t prev, next;   /* neighbours in the list, -1 at the ends */
    int mergeable;        /* 0 for byte-fallback tokens and for symbols merged away */
} symbol;

/* A candidate merge of symbols left and left's next neighbour, valid while the pair is still
   adjacent and unchanged (their joint length is still `length`: symbols only grow). */
typedef struct candidate {
    float score;
    int32_t left, right;
    int32_t id;
    size_t length;
} candidate;

typedef struct merge_state {
    const lowbit_tokenizer *t;
    const char *text;
    symbol *symbols;
    candidate *heap;
    size_t n_heap;
} merge_state;

/* Heap order: the higher score first, then the leftmost pair (llama2.c's strict '>' keeps the
   first best pair it meets). */
static int before(const candidate *a, const candidate *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->left < b->left;
}

static void heap_push(merge_state *s, candidate c) {
    size_t i = s->n_heap++;
    while (i > 0) {
        const size_t parent = (i - 1) / 2;
        if (!before(&c, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = c;
}

static candidate heap_pop(merge_state *s) {
    const candidate top = s->heap[0];
    const candidate last = s->heap[--s->n_heap];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= s->n_heap) break;
        if (child + 1 < s->n_heap && before(&s->heap[child + 1], &s->heap[child])) child++;
        if (!before(&s->heap[child], &last)) break;
        s->heap[i] = s->heap[child];
        i = child;
    }
    if (s->n_heap > 0) s->heap[i] = last;
    return top;
}

/* Queues the pair (left, its next neighbour) when their joined text is a piece. */
static void consider_pair(merge_state *s, int32_t left) {
    if (left < 0) return;
    const symbol *a = &s->symbols[left];
    if (a->next < 0) return;
    const symbol *b = &s->symbols[a->next];
    if (!a->mergeable || !b->mergeable) return;
    const size_t length = a->length + b->length;
    const int32_t id = find_piece(s->t, s->text + a->start, length);
    if (id < 0) return;
    const candidate c = {s->t->scores[id], left, a->next, id, length};
    heap_push(s, c);
}

static void merge_all(merge_state *s, int32_t n_symbols) {
    for (int32_t i = 0; i + 1 < n_symbols; i++) consider_pair(s, i);
    while (s->n_heap > 0) {
        const candidate c = heap_pop(s);
        symbol *a = &s->symbols[c.left];
        symbol *b = &s->symbols[c.right];
        if (!a->mergeable || !b->mergeable || a->next != c.right ||
            a->length + b->length != c.length) {
            continue; /* stale: one side merged with something else since */
        }
        a->length = c.length;
        a->id = c.id;
        a->next = b->next;
        if (b->next >= 0) s->symbols[b->next].prev = c.left;
        b->mergeable = 0;
        b->length = 0;
        consider_pair(s, a->prev);
        consider_pair(s, c.left);
    }
}

/* llama2.c's character: a byte and up to three continuation bytes after it. */
static size_t character_length(const char *text, size_t pos, size_t end) {
    size_t n = 1;
    while (n < 4 && pos + n < end && ((uint8_t)text[pos + n] & 0xC0) == 0x80) n++;
    return n;
}

static void append_symbol(symbol *symbols, int32_t *n, size_t start, size_t length, int32_t id,
                          int mergeable) {
    const int32_t i = (*n)++;
    symbols[i] = (symbol){start, length, id, i - 1, -1, mergeable};
    if (i > 0) symbols[i - 1].next = i;
}

/* Cuts the text into characters, each its piece or its bytes' byte pieces. */
static lowbit_status split_characters(const lowbit_tokenizer *t, const char *text, size_t length,
                                      symbol *symbols, int32_t *n_symbols) {
    *n_symbols = 0;
    for (size_t pos = 0; pos < length;) {
        const size_t n = character_length(text, pos, length);
        const int32_t id = find_piece(t, text + pos, n);
        if (id >= 0) {
            append_symbol(symbols, n_symbols, pos, n, id, 1);
        } else {
            for (size_t k = 0; k < n; k++) {
                const int32_t byte_id = t->byte_ids[(uint8_t)text[pos + k]];
                if (byte_id < 0) return LOWBIT_ERR_UNSUPPORTED;
                append_symbol(symbols, n_symbols, pos + k, 1, byte_id, 0);
            }
        }
        pos += n;
    }
    return LOWBIT_OK;
}

static void write_tokens(const symbol *symbols, int32_t n_symbols, int32_t bos, int add_bos,
                         int32_t *tokens, int64_t max_tokens, int64_t *n_tokens) {
    int64_t n = 0;
    if (add_bos) {
        if (n < max_tokens) tokens[n] = bos;
        n++;
    }
    for (int32_t i = n_symbols > 0 ? 0 : -1; i >= 0; i = symbols[i].next) {
        if (n < max_tokens) tokens[n] = symbols[i].id;
        n++;
    }
    *n_tokens = n;
}

lowbit_status lowbit_tokenizer_encode(const lowbit_tokenizer *t, const char *text, size_t length,
                                      int add_bos, int32_t *tokens, int64_t max_tokens,
                                      int64_t *n_tokens) {
    if (!t || !n_tokens || (!text && length > 0) || max_tokens < 0 || (!tokens && max_tokens > 0)) {
        return LOWBIT_ERR_INVALID_ARGUMENT;
    }
    *n_tokens = 0;
    /* symbol indices are int32; the heap holds at most 3 candidates per symbol */
    if (length >= INT32_MAX / 4) return LOWBIT_ERR_INVALID_ARGUMENT;
    if (length == 0) {
        write_tokens(NULL, 0, t->bos, add_bos, tokens, max_tokens, n_tokens);
        return LOWBIT_OK;
    }
    const size_t n_bytes = length + 1; /* the dummy prefix */
    char *prefixed = malloc(n_bytes);
    symbol *symbols = malloc(n_bytes * sizeof *symbols);
    candidate *heap = malloc(3 * n_bytes * sizeof *heap);
    lowbit_status st = LOWBIT_ERR_NO_MEMORY;
    if (prefixed && symbols && heap) {
        prefixed[0] = ' ';
        memcpy(prefixed + 1, text, length);
        int32_t n_symbols = 0;
        st = split_characters(t, prefixed, n_bytes, symbols, &n_symbols);
        if (st == LOWBIT_OK) {
            merge_state s = {t, prefixed, symbols, heap, 0};
            merge_all(&s, n_symbols);
            write_tokens(symbols, n_symbols, t->bos, add_bos, tokens, max_tokens, n_tokens);
        }
    }
    free(prefixed);
    free(symbols);
    free(heap);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Control pieces (<s>, </s>) stand for no text; <unk> and ordinary pieces for their own. */
const char *lowbit_tokenizer_decode(const lowbit_tokenizer *t, int32_t previous, int32_t token,
                                    char buf[8], size_t *length) {
    size_t unused;
    if (!length) length = &unused;
    *length = 0;
    if (!t || token < 0 || token >= t->n_vocab || t->types[token] == TOKEN_CONTROL) return "";
    const char *piece = t->text + t->offsets[token];
    size_t n = t->lengths[token];
    if (t->types[token] == TOKEN_BYTE) {
        buf[0] = (char)byte_of_piece(piece, (uint32_t)n);
        buf[1] = '\0';
        *length = 1;
        return buf;
    }
    if (previous == t->bos && n > 0 && piece[0] == ' ') piece++, n--;
    *length = n;
    return piece;
}
