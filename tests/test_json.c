/* The strict JSON parser: values, escapes, numbers, and every kind of malformed text rejected
   with the byte offset of the problem. */
#include "io/json.h"
#include "testing.h"

#include <string.h>

static lowbit_status parse(const char *text, lb_json_doc *doc, lowbit_diag *diag) {
    memset(diag, 0, sizeof *diag);
    return lb_json_parse(text, strlen(text), 0, 16, 1000, doc, diag);
}

/* Parses text expecting failure, with a message containing `fragment` at byte `offset`. */
static void check_rejected(const char *text, const char *fragment, uint64_t offset) {
    lb_json_doc doc;
    lowbit_diag diag;
    const lowbit_status st = parse(text, &doc, &diag);
    CHECK(st == LOWBIT_ERR_BAD_FILE, "'%s' accepted (status %d)", text, (int)st);
    CHECK(strstr(diag.message, fragment) != NULL, "'%s': message '%s' lacks '%s'", text, diag.message, fragment);
    CHECK(diag.offset == offset, "'%s': offset %llu, expected %llu (%s)", text,
          (unsigned long long)diag.offset, (unsigned long long)offset, diag.message);
    CHECK(doc.nodes == NULL && doc.n_nodes == 0, "'%s': doc not emptied", text);
}

static void test_values(void) {
    lb_json_doc doc;
    lowbit_diag diag;
    const char *text = " {\"a\": [1, -2, 3.5, true, false, null, \"x\"], \"b\": {\"c\": {}}, \"d\": []} ";
    CHECK(parse(text, &doc, &diag) == LOWBIT_OK, "parse: %s", diag.message);
    const lb_json_node *root = lb_json_root(&doc);
    CHECK(root && root->type == LB_JSON_OBJECT && root->n_children == 3, "root");
    CHECK(root->offset == 1, "root offset %llu", (unsigned long long)root->offset);
    const lb_json_node *a = lb_json_get(&doc, root, "a");
    CHECK(a && a->type == LB_JSON_ARRAY && a->n_children == 7, "a");
    const lb_json_node *e = lb_json_first(&doc, a);
    CHECK(e->type == LB_JSON_NUMBER && e->is_integer && e->integer == 1 && e->number == 1.0, "1");
    CHECK(e->offset == 8, "offset of 1: %llu", (unsigned long long)e->offset);
    e = lb_json_next(&doc, e);
    CHECK(e->is_integer && e->integer == -2, "-2");
    e = lb_json_next(&doc, e);
    CHECK(!e->is_integer && e->number == 3.5, "3.5");
    e = lb_json_next(&doc, e);
    CHECK(e->type == LB_JSON_BOOL && e->boolean == 1, "true");
    e = lb_json_next(&doc, e);
    CHECK(e->type == LB_JSON_BOOL && e->boolean == 0, "false");
    e = lb_json_next(&doc, e);
    CHECK(e->type == LB_JSON_NULL, "null");
    e = lb_json_next(&doc, e);
    CHECK(lb_json_string_is(e, "x"), "x");
    CHECK(lb_json_next(&doc, e) == NULL, "end of array");
    const lb_json_node *c = lb_json_get(&doc, lb_json_get(&doc, root, "b"), "c");
    CHECK(c && c->type == LB_JSON_OBJECT && c->n_children == 0 && lb_json_first(&doc, c) == NULL, "b.c");
    CHECK(lb_json_get(&doc, root, "missing") == NULL, "missing key");
    CHECK(lb_json_get(&doc, a, "a") == NULL, "get on an array");
    lb_json_free(&doc);
    CHECK(doc.nodes == NULL, "freed");
}

static void test_strings(void) {
    lb_json_doc doc;
    lowbit_diag diag;
    /* escapes, a 2-byte and a 3-byte UTF-8 character as they are, a surrogate pair, \u0000 */
    const char *text = "[\"q\\\"b\\\\s\\/\\b\\f\\n\\r\\t\", \"\xc3\xa9\xe2\x82\xac\", "
                       "\"\\u00e9\\u20ac\\ud83d\\ude00\", \"a\\u0000b\"]";
    CHECK(parse(text, &doc, &diag) == LOWBIT_OK, "parse: %s", diag.message);
    const lb_json_node *s = lb_json_first(&doc, lb_json_root(&doc));
    CHECK(s->string_length == 11 && memcmp(s->string, "q\"b\\s/\b\f\n\r\t", 11) == 0, "escapes");
    s = lb_json_next(&doc, s);
    CHECK(strcmp(s->string, "\xc3\xa9\xe2\x82\xac") == 0, "raw UTF-8");
    s = lb_json_next(&doc, s);
    CHECK(strcmp(s->string, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80") == 0 && s->string_length == 9,
          "\\u escapes to UTF-8 (len %llu)", (unsigned long long)s->string_length);
    s = lb_json_next(&doc, s);
    CHECK(s->string_length == 3 && memcmp(s->string, "a\0b", 3) == 0, "embedded NUL");
    CHECK(!lb_json_string_is(s, "a"), "string_is respects length");
    lb_json_free(&doc);
}

static void test_numbers(void) {
    static const struct { const char *text; double value; int is_integer; } cases[] = {
        {"0", 0.0, 1}, {"-0", 0.0, 1}, {"10000", 1e4, 1}, {"1e-05", 1e-5, 0}, {"1e-6", 1e-6, 0},
        {"0.001", 0.001, 0}, {"10000.0", 1e4, 0}, {"500000.0", 5e5, 0}, {"1.5E+3", 1500.0, 0},
        {"-2.25", -2.25, 0}, {"9223372036854775807", 9223372036854775807.0, 1},
        {"-9223372036854775808", -9223372036854775808.0, 1},
        {"9223372036854775808", 9223372036854775808.0, 0}, /* too big for int64: a double */
        {"0.1234567890123456789", 0.1234567890123456789, 0}, /* > 15 digits: the slow path */
        {"1e-300", 1e-300, 0}, {"123456789012345678901234567890", 1.2345678901234568e29, 0},
    };
    for (int i = 0; i < LB_ARRAY_LEN(cases); i++) {
        lb_json_doc doc;
        lowbit_diag diag;
        CHECK(parse(cases[i].text, &doc, &diag) == LOWBIT_OK, "%s: %s", cases[i].text, diag.message);
        const lb_json_node *n = lb_json_root(&doc);
        CHECK(n && n->type == LB_JSON_NUMBER && n->number == cases[i].value &&
                  n->is_integer == cases[i].is_integer,
              "%s: got %.17g (integer %d)", cases[i].text, n ? n->number : -1.0, n ? n->is_integer : -1);
        lb_json_free(&doc);
    }
    lb_json_doc doc;
    lowbit_diag diag;
    CHECK(parse("-9223372036854775808", &doc, &diag) == LOWBIT_OK && doc.nodes[0].integer == INT64_MIN, "int64 min");
    lb_json_free(&doc);
}

static void test_rejected(void) {
    check_rejected("", "unexpected end", 0);
    check_rejected("   ", "unexpected end", 3);
    check_rejected("{\"a\":1,}", "expected a key", 7);
    check_rejected("[1,]", "unexpected character", 3);
    check_rejected("[1 2]", "expected ',' or ']'", 3);
    check_rejected("{\"a\" 1}", "expected ':'", 5);
    check_rejected("{\"a\":1 \"b\":2}", "expected ',' or '}'", 7);
    check_rejected("{a:1}", "expected a key", 1);
    check_rejected("[1", "unterminated array", 2);
    check_rejected("{\"a\":1", "unterminated object", 6);
    check_rejected("\"abc", "unterminated string", 0);
    check_rejected("{} x", "unexpected text after the value", 3);
    check_rejected("1 2", "unexpected text after the value", 2);
    check_rejected("01", "unexpected text after the value", 1);
    check_rejected("-", "bad number", 0);
    check_rejected("1.", "no digits after '.'", 0);
    check_rejected("1e", "no exponent digits", 0);
    check_rejected("+1", "unexpected character", 0);
    check_rejected(".5", "unexpected character", 0);
    check_rejected("1e400", "number out of range", 0);
    check_rejected("NaN", "unexpected character", 0);
    check_rejected("tru", "unexpected character", 0);
    check_rejected("nulL", "unexpected character", 0);
    check_rejected("// c\n1", "unexpected character", 0);
    check_rejected("\"a\tb\"", "control character", 2);
    check_rejected("\"\\x\"", "unknown escape", 1);
    check_rejected("\"\\u12g4\"", "bad hex digit", 5);
    check_rejected("\"\\u12\"", "truncated \\u escape", 3);
    check_rejected("\"\\udc00\"", "lone low surrogate", 1);
    check_rejected("\"\\ud800x\"", "high surrogate", 1);
    check_rejected("\"\\ud800\\u0041\"", "high surrogate", 1);
    check_rejected("\"\xc0\xaf\"", "invalid UTF-8", 1);          /* overlong '/' */
    check_rejected("\"\xed\xa0\x80\"", "invalid UTF-8", 1);      /* an encoded surrogate */
    check_rejected("\"\xf4\x90\x80\x80\"", "invalid UTF-8", 1);  /* above U+10FFFF */
    check_rejected("\"\xe2\x82\"", "invalid UTF-8", 1);          /* cut short */
    check_rejected("\"\x80\"", "invalid UTF-8", 1);              /* a stray continuation byte */
    check_rejected("{\"k\":1,\"j\":2,\"k\":3}", "duplicate key 'k'", 17); /* the repeated member's value */
    check_rejected("[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]", "nesting too deep", 16); /* depth 17 > 16 */
}

static void test_limits(void) {
    lb_json_doc doc;
    lowbit_diag diag = {0};
    /* depth exactly at the limit is fine */
    CHECK(lb_json_parse("[[[1]]]", 7, 0, 3, 100, &doc, &diag) == LOWBIT_OK, "depth 3 of 3: %s", diag.message);
    lb_json_free(&doc);
    CHECK(lb_json_parse("[[[1]]]", 7, 0, 2, 100, &doc, &diag) == LOWBIT_ERR_BAD_FILE, "depth 3 of 2");
    /* node limit: 4 values, 3 allowed */
    CHECK(lb_json_parse("[1,2,3]", 7, 0, 4, 3, &doc, &diag) == LOWBIT_ERR_BAD_FILE &&
              strstr(diag.message, "too many values"), "node limit: %s", diag.message);
    CHECK(lb_json_parse("[1,2,3]", 7, 0, 4, 4, &doc, &diag) == LOWBIT_OK, "4 of 4 nodes");
    lb_json_free(&doc);
    /* base offset shifts every reported offset; the text need not be NUL-terminated */
    const char text[] = {'[', '1', ',', ' ', 'x', ']'};
    CHECK(lb_json_parse(text, sizeof text, 100, 4, 10, &doc, &diag) == LOWBIT_ERR_BAD_FILE &&
              diag.offset == 104 && strstr(diag.message, "byte 104"), "base offset: %s", diag.message);
    CHECK(lb_json_parse("[1]", 2, 0, 4, 10, &doc, &diag) == LOWBIT_ERR_BAD_FILE, "length cuts the text");
    /* a deep hostile nest is refused by the limit, not by the stack */
    static char deep[200001];
    memset(deep, '[', sizeof deep - 1);
    CHECK(lb_json_parse(deep, sizeof deep - 1, 0, 64, 1 << 20, &doc, &diag) == LOWBIT_ERR_BAD_FILE &&
              strstr(diag.message, "nesting too deep"), "deep nest: %s", diag.message);
    /* a large object with a repeated key far apart */
    static char wide[20000];
    size_t used = 0;
    used += (size_t)snprintf(wide + used, sizeof wide - used, "{");
    for (int i = 0; i < 1000; i++) used += (size_t)snprintf(wide + used, sizeof wide - used, "\"k%d\":%d,", i, i);
    used += (size_t)snprintf(wide + used, sizeof wide - used, "\"k3\":0}");
    CHECK(lb_json_parse(wide, used, 0, 4, 10000, &doc, &diag) == LOWBIT_ERR_BAD_FILE &&
              strstr(diag.message, "duplicate key 'k3'"), "duplicate in a wide object: %s", diag.message);
}

int main(void) {
    test_values();
    test_strings();
    test_numbers();
    test_rejected();
    test_limits();
    return lb_test_summary();
}
