/* A strict, bounded JSON parser into a tree of nodes (see json.h for what "strict" means). */
#include "json.h"

#include <locale.h>
#include <stdlib.h>

typedef struct parser {
    const unsigned char *text;
    uint64_t length;
    uint64_t pos;
    uint64_t base_offset;
    int max_depth;
    int64_t max_nodes;
    lb_json_doc *doc;
    lowbit_diag *diag;
} parser;

static lowbit_status fail(parser *p, uint64_t at, const char *what) {
    const uint64_t offset = p->base_offset + at;
    return lb_diag_set(p->diag, LOWBIT_ERR_BAD_FILE, -1, offset, "JSON error at byte %llu: %s",
                       (unsigned long long)offset, what);
}

static lowbit_status out_of_memory(parser *p) {
    return lb_diag_set(p->diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory parsing JSON");
}

static void skip_whitespace(parser *p) {
    while (p->pos < p->length) {
        const unsigned char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
        p->pos++;
    }
}

/* Appends a node and returns its index; nodes move when the array grows, so callers keep
   indices, never pointers, while parsing. */
static lowbit_status new_node(parser *p, lb_json_type type, int64_t *index) {
    lb_json_doc *doc = p->doc;
    if (doc->n_nodes >= p->max_nodes) return fail(p, p->pos, "too many values");
    if (doc->n_nodes == doc->node_capacity) {
        const int64_t wanted = doc->node_capacity ? 2 * doc->node_capacity : 64;
        lb_json_node *grown = realloc(doc->nodes, (size_t)wanted * sizeof *grown);
        if (!grown) return out_of_memory(p);
        doc->nodes = grown;
        doc->node_capacity = wanted;
    }
    lb_json_node *n = &doc->nodes[doc->n_nodes];
    memset(n, 0, sizeof *n);
    n->type = type;
    n->first_child = -1;
    n->next_sibling = -1;
    n->offset = p->base_offset + p->pos;
    *index = doc->n_nodes++;
    return LOWBIT_OK;
}

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits of a \u escape at pos (just after the 'u'). */
static lowbit_status read_hex4(parser *p, uint32_t *code) {
    if (p->length - p->pos < 4) return fail(p, p->pos, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        const int h = hex_value(p->text[p->pos + (uint64_t)i]);
        if (h < 0) return fail(p, p->pos + (uint64_t)i, "bad hex digit in \\u escape");
        v = v << 4 | (uint32_t)h;
    }
    p->pos += 4;
    *code = v;
    return LOWBIT_OK;
}

static uint64_t put_utf8(char *out, uint32_t code) {
    if (code < 0x80) {
        out[0] = (char)code;
        return 1;
    }
    if (code < 0x800) {
        out[0] = (char)(0xC0 | code >> 6);
        out[1] = (char)(0x80 | (code & 0x3F));
        return 2;
    }
    if (code < 0x10000) {
        out[0] = (char)(0xE0 | code >> 12);
        out[1] = (char)(0x80 | (code >> 6 & 0x3F));
        out[2] = (char)(0x80 | (code & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | code >> 18);
    out[1] = (char)(0x80 | (code >> 12 & 0x3F));
    out[2] = (char)(0x80 | (code >> 6 & 0x3F));
    out[3] = (char)(0x80 | (code & 0x3F));
    return 4;
}

/* A \uXXXX escape (pos just after the 'u'), a surrogate pair taking two; the code point is
   written as UTF-8. A decoded escape is never longer than its 6 (or 12) source bytes. */
static lowbit_status decode_unicode_escape(parser *p, char *out, uint64_t *written) {
    const uint64_t at = p->pos - 2;
    uint32_t code;
    lowbit_status st = read_hex4(p, &code);
    if (st != LOWBIT_OK) return st;
    if (code >= 0xDC00 && code <= 0xDFFF) return fail(p, at, "lone low surrogate in \\u escape");
    if (code >= 0xD800 && code <= 0xDBFF) {
        if (p->length - p->pos < 2 || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u') {
            return fail(p, at, "high surrogate not followed by a low surrogate");
        }
        p->pos += 2;
        uint32_t low;
        st = read_hex4(p, &low);
        if (st != LOWBIT_OK) return st;
        if (low < 0xDC00 || low > 0xDFFF) return fail(p, at, "high surrogate not followed by a low surrogate");
        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
    }
    *written = put_utf8(out, code);
    return LOWBIT_OK;
}

/* Length of the valid UTF-8 sequence starting at pos (lead byte >= 0x80), 0 if invalid:
   overlong forms, surrogates and code points above U+10FFFF are refused. */
static int utf8_sequence_length(const parser *p) {
    const unsigned char *s = p->text + p->pos;
    const uint64_t left = p->length - p->pos;
    const unsigned char c = s[0];
    int n;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (left < (uint64_t)n || s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    }
    return n;
}

static lowbit_status decode_escape(parser *p, char *out, uint64_t *written) {
    const uint64_t at = p->pos;
    p->pos++; /* the backslash */
    if (p->pos >= p->length) return fail(p, at, "unterminated string");
    const unsigned char c = p->text[p->pos++];
    char simple;
    switch (c) {
    case '"': simple = '"'; break;
    case '\\': simple = '\\'; break;
    case '/': simple = '/'; break;
    case 'b': simple = '\b'; break;
    case 'f': simple = '\f'; break;
    case 'n': simple = '\n'; break;
    case 'r': simple = '\r'; break;
    case 't': simple = '\t'; break;
    case 'u': return decode_unicode_escape(p, out, written);
    default: return fail(p, at, "unknown escape in string");
    }
    *out = simple;
    *written = 1;
    return LOWBIT_OK;
}

/* A string at pos (on its opening quote), decoded into the doc's string store. The store was
   sized to the text's length plus one: a decoded string plus its NUL never takes more bytes
   than it does in the text with its two quotes, so it never overflows. */
static lowbit_status parse_string(parser *p, const char **out, uint64_t *out_length) {
    const uint64_t start = p->pos;
    lb_json_doc *doc = p->doc;
    char *dest = doc->strings + doc->strings_used;
    uint64_t n = 0;
    p->pos++;
    for (;;) {
        if (p->pos >= p->length) return fail(p, start, "unterminated string");
        const unsigned char c = p->text[p->pos];
        if (c == '"') break;
        if (c < 0x20) return fail(p, p->pos, "control character in string");
        if (c == '\\') {
            uint64_t written = 0;
            const lowbit_status st = decode_escape(p, dest + n, &written);
            if (st != LOWBIT_OK) return st;
            n += written;
        } else if (c < 0x80) {
            dest[n++] = (char)c;
            p->pos++;
        } else {
            const int len = utf8_sequence_length(p);
            if (len == 0) return fail(p, p->pos, "invalid UTF-8 in string");
            memcpy(dest + n, p->text + p->pos, (size_t)len);
            n += (uint64_t)len;
            p->pos += (uint64_t)len;
        }
    }
    p->pos++; /* closing quote */
    dest[n] = '\0';
    doc->strings_used += n + 1;
    *out = dest;
    *out_length = n;
    return LOWBIT_OK;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static uint64_t skip_digits(parser *p) {
    const uint64_t start = p->pos;
    while (p->pos < p->length && is_digit(p->text[p->pos])) p->pos++;
    return p->pos - start;
}

/* Exact conversion of an integer literal (optional '-', digits); 0 if it does not fit int64. */
static int integer_value(const unsigned char *s, uint64_t n, int64_t *value) {
    const int negative = s[0] == '-';
    uint64_t magnitude = 0;
    const uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (uint64_t i = negative ? 1 : 0; i < n; i++) {
        const uint64_t digit = (uint64_t)(s[i] - '0');
        if (magnitude > (limit - digit) / 10) return 0;
        magnitude = magnitude * 10 + digit;
    }
    if (negative) {
        *value = magnitude == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)magnitude;
    } else {
        *value = (int64_t)magnitude;
    }
    return 1;
}

/* Decimal text to double. Numbers with at most 15 significant digits and a small decimal
   exponent are computed exactly with one rounding (both factors are exact doubles); the rest go
   through strtod on a copy whose '.' is replaced by the locale's decimal point, so that a caller's
   setlocale cannot change what a file means. */
static lowbit_status number_value(parser *p, uint64_t start, double *value) {
    const unsigned char *s = p->text + start;
    const uint64_t n = p->pos - start;
    uint64_t mantissa = 0;
    int digits = 0, exponent = 0, in_fraction = 0, negative = 0, fast = 1;
    uint64_t i = 0;
    if (s[0] == '-') {
        negative = 1;
        i = 1;
    }
    for (; i < n && s[i] != 'e' && s[i] != 'E'; i++) {
        if (s[i] == '.') {
            in_fraction = 1;
            continue;
        }
        if (digits == 0 && s[i] == '0') {
            if (in_fraction) exponent--;
            continue; /* leading zeros are not significant */
        }
        if (++digits > 15) fast = 0;
        if (fast) mantissa = mantissa * 10 + (uint64_t)(s[i] - '0');
        if (in_fraction) exponent--;
    }
    if (i < n) {
        int64_t written_exponent;
        if (!integer_value(s + i + 1 + (s[i + 1] == '+'), n - i - 1 - (s[i + 1] == '+'),
                           &written_exponent) ||
            written_exponent > 1000 || written_exponent < -1000) {
            fast = 0;
        } else {
            exponent += (int)written_exponent;
        }
    }
    static const double powers[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                    1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                    1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    if (fast && (mantissa == 0 || (exponent >= -22 && exponent <= 22))) {
        double v = (double)mantissa;
        if (mantissa != 0) v = exponent < 0 ? v / powers[-exponent] : v * powers[exponent];
        *value = negative ? -v : v;
        return LOWBIT_OK;
    }
    char *copy = malloc((size_t)n + 1);
    if (!copy) return out_of_memory(p);
    memcpy(copy, s, (size_t)n);
    copy[n] = '\0';
    const char point = localeconv()->decimal_point[0];
    for (uint64_t k = 0; k < n; k++) {
        if (copy[k] == '.') copy[k] = point;
    }
    const double v = strtod(copy, NULL);
    free(copy);
    if (!isfinite(v)) return fail(p, start, "number out of range");
    *value = v;
    return LOWBIT_OK;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static lowbit_status parse_number(parser *p, int64_t index) {
    const uint64_t start = p->pos;
    if (p->text[p->pos] == '-') p->pos++;
    if (p->pos >= p->length || !is_digit(p->text[p->pos])) return fail(p, start, "bad number");
    if (p->text[p->pos] == '0') {
        p->pos++;
    } else {
        skip_digits(p);
    }
    int integral = 1;
    if (p->pos < p->length && p->text[p->pos] == '.') {
        p->pos++;
        integral = 0;
        if (skip_digits(p) == 0) return fail(p, start, "bad number (no digits after '.')");
    }
    if (p->pos < p->length && (p->text[p->pos] == 'e' || p->text[p->pos] == 'E')) {
        p->pos++;
        integral = 0;
        if (p->pos < p->length && (p->text[p->pos] == '+' || p->text[p->pos] == '-')) p->pos++;
        if (skip_digits(p) == 0) return fail(p, start, "bad number (no exponent digits)");
    }
    lb_json_node *node = &p->doc->nodes[index];
    int64_t integer;
    if (integral && integer_value(p->text + start, p->pos - start, &integer)) {
        node->is_integer = 1;
        node->integer = integer;
        node->number = (double)integer;
        return LOWBIT_OK;
    }
    double v = 0;
    const lowbit_status st = number_value(p, start, &v);
    if (st == LOWBIT_OK) p->doc->nodes[index].number = v;
    return st;
}

static lowbit_status parse_literal(parser *p, int64_t index, const char *word) {
    const uint64_t n = strlen(word);
    if (p->length - p->pos < n || memcmp(p->text + p->pos, word, (size_t)n) != 0) {
        return fail(p, p->pos, "unexpected character");
    }
    p->pos += n;
    lb_json_node *node = &p->doc->nodes[index];
    if (word[0] == 'n') {
        node->type = LB_JSON_NULL;
    } else {
        node->type = LB_JSON_BOOL;
        node->boolean = word[0] == 't';
    }
    return LOWBIT_OK;
}

static lowbit_status parse_value(parser *p, int depth, int64_t *index);

/* Links child as the next element of parent; *last is the previous one (-1 at first). */
static void append_child(lb_json_doc *doc, int64_t parent, int64_t *last, int64_t child) {
    if (*last < 0) {
        doc->nodes[parent].first_child = child;
    } else {
        doc->nodes[*last].next_sibling = child;
    }
    *last = child;
    doc->nodes[parent].n_children++;
}

static lowbit_status parse_array(parser *p, int depth, int64_t index) {
    p->pos++; /* '[' */
    skip_whitespace(p);
    if (p->pos < p->length && p->text[p->pos] == ']') {
        p->pos++;
        return LOWBIT_OK;
    }
    int64_t last = -1;
    for (;;) {
        int64_t child;
        lowbit_status st = parse_value(p, depth + 1, &child);
        if (st != LOWBIT_OK) return st;
        append_child(p->doc, index, &last, child);
        skip_whitespace(p);
        if (p->pos >= p->length) return fail(p, p->pos, "unterminated array");
        const unsigned char c = p->text[p->pos++];
        if (c == ']') return LOWBIT_OK;
        if (c != ',') return fail(p, p->pos - 1, "expected ',' or ']' in array");
    }
}

static int compare_keys(const void *a, const void *b) {
    const lb_json_node *x = *(const lb_json_node *const *)a, *y = *(const lb_json_node *const *)b;
    const int cmp = memcmp(x->key, y->key, (size_t)LB_MIN(x->key_length, y->key_length));
    if (cmp != 0) return cmp;
    return x->key_length < y->key_length ? -1 : x->key_length > y->key_length ? 1 : 0;
}

/* Sorting the members by key finds repeats in n log n, even in a hostile million-key object. */
static lowbit_status check_unique_keys(parser *p, int64_t index) {
    const lb_json_doc *doc = p->doc;
    const int64_t n = doc->nodes[index].n_children;
    if (n < 2) return LOWBIT_OK;
    const lb_json_node **members = malloc((size_t)n * sizeof *members);
    if (!members) return out_of_memory(p);
    int64_t k = 0;
    for (int64_t c = doc->nodes[index].first_child; c >= 0; c = doc->nodes[c].next_sibling) {
        members[k++] = &doc->nodes[c];
    }
    qsort(members, (size_t)n, sizeof *members, compare_keys);
    lowbit_status st = LOWBIT_OK;
    for (int64_t i = 1; i < n && st == LOWBIT_OK; i++) {
        if (compare_keys(&members[i - 1], &members[i]) == 0) {
            const lb_json_node *later = members[i]->offset > members[i - 1]->offset ? members[i] : members[i - 1];
            st = lb_diag_set(p->diag, LOWBIT_ERR_BAD_FILE, -1, later->offset,
                             "JSON error at byte %llu: duplicate key '%.100s'",
                             (unsigned long long)later->offset, later->key);
        }
    }
    free(members);
    return st;
}

static lowbit_status parse_object(parser *p, int depth, int64_t index) {
    p->pos++; /* '{' */
    skip_whitespace(p);
    if (p->pos < p->length && p->text[p->pos] == '}') {
        p->pos++;
        return LOWBIT_OK;
    }
    int64_t last = -1;
    for (;;) {
        skip_whitespace(p);
        if (p->pos >= p->length || p->text[p->pos] != '"') return fail(p, p->pos, "expected a key string");
        const char *key;
        uint64_t key_length;
        lowbit_status st = parse_string(p, &key, &key_length);
        if (st != LOWBIT_OK) return st;
        skip_whitespace(p);
        if (p->pos >= p->length || p->text[p->pos] != ':') return fail(p, p->pos, "expected ':' after key");
        p->pos++;
        int64_t child;
        st = parse_value(p, depth + 1, &child);
        if (st != LOWBIT_OK) return st;
        p->doc->nodes[child].key = key;
        p->doc->nodes[child].key_length = key_length;
        append_child(p->doc, index, &last, child);
        skip_whitespace(p);
        if (p->pos >= p->length) return fail(p, p->pos, "unterminated object");
        const unsigned char c = p->text[p->pos++];
        if (c == '}') return check_unique_keys(p, index);
        if (c != ',') return fail(p, p->pos - 1, "expected ',' or '}' in object");
    }
}

static lowbit_status parse_value(parser *p, int depth, int64_t *index) {
    skip_whitespace(p);
    if (p->pos >= p->length) return fail(p, p->pos, "unexpected end of text");
    const unsigned char c = p->text[p->pos];
    if ((c == '[' || c == '{') && depth > p->max_depth) return fail(p, p->pos, "nesting too deep");
    lowbit_status st = new_node(p, LB_JSON_NULL, index);
    if (st != LOWBIT_OK) return st;
    lb_json_node *node = &p->doc->nodes[*index];
    switch (c) {
    case '{':
        node->type = LB_JSON_OBJECT;
        return parse_object(p, depth, *index);
    case '[':
        node->type = LB_JSON_ARRAY;
        return parse_array(p, depth, *index);
    case '"': {
        node->type = LB_JSON_STRING;
        const char *s;
        uint64_t n;
        st = parse_string(p, &s, &n);
        if (st == LOWBIT_OK) {
            p->doc->nodes[*index].string = s;
            p->doc->nodes[*index].string_length = n;
        }
        return st;
    }
    case 't': return parse_literal(p, *index, "true");
    case 'f': return parse_literal(p, *index, "false");
    case 'n': return parse_literal(p, *index, "null");
    default:
        if (c == '-' || is_digit(c)) {
            node->type = LB_JSON_NUMBER;
            return parse_number(p, *index);
        }
        return fail(p, p->pos, "unexpected character");
    }
}

lowbit_status lb_json_parse(const char *text, uint64_t length, uint64_t base_offset, int max_depth,
                            int64_t max_nodes, lb_json_doc *doc, lowbit_diag *diag) {
    memset(doc, 0, sizeof *doc);
    if ((!text && length) || max_depth < 1 || max_nodes < 1 || length >= SIZE_MAX) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "bad JSON parse arguments");
    }
    parser p = {(const unsigned char *)text, length, 0, base_offset, max_depth, max_nodes, doc, diag};
    doc->strings_capacity = length + 1;
    doc->strings = malloc((size_t)doc->strings_capacity);
    if (!doc->strings) return out_of_memory(&p);
    int64_t root;
    lowbit_status st = parse_value(&p, 1, &root);
    if (st == LOWBIT_OK) {
        skip_whitespace(&p);
        if (p.pos != length) st = fail(&p, p.pos, "unexpected text after the value");
    }
    if (st != LOWBIT_OK) lb_json_free(doc);
    return st;
}

void lb_json_free(lb_json_doc *doc) {
    if (!doc) return;
    free(doc->nodes);
    free(doc->strings);
    memset(doc, 0, sizeof *doc);
}

const lb_json_node *lb_json_root(const lb_json_doc *doc) {
    return doc && doc->n_nodes > 0 ? &doc->nodes[0] : NULL;
}

const lb_json_node *lb_json_first(const lb_json_doc *doc, const lb_json_node *node) {
    if (!node || (node->type != LB_JSON_ARRAY && node->type != LB_JSON_OBJECT)) return NULL;
    return node->first_child >= 0 ? &doc->nodes[node->first_child] : NULL;
}

const lb_json_node *lb_json_next(const lb_json_doc *doc, const lb_json_node *node) {
    return node && node->next_sibling >= 0 ? &doc->nodes[node->next_sibling] : NULL;
}

const lb_json_node *lb_json_get(const lb_json_doc *doc, const lb_json_node *object,
                                const char *key) {
    if (!object || object->type != LB_JSON_OBJECT) return NULL;
    const uint64_t n = strlen(key);
    for (const lb_json_node *c = lb_json_first(doc, object); c; c = lb_json_next(doc, c)) {
        if (c->key_length == n && memcmp(c->key, key, (size_t)n) == 0) return c;
    }
    return NULL;
}

int lb_json_string_is(const lb_json_node *node, const char *s) {
    return node && node->type == LB_JSON_STRING && node->string_length == strlen(s) &&
           memcmp(node->string, s, (size_t)node->string_length) == 0;
}
