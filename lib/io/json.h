/*
 * A small, strict JSON parser (RFC 8259) for the few JSON files lowbit reads: safetensors headers
 * and Hugging Face config.json. The whole text is parsed into a tree of nodes held in one array.
 *
 * Strict: no comments, no trailing commas, no leading zeros, no control characters or invalid
 * UTF-8 in strings, no lone surrogates in \u escapes, nothing but whitespace after the value,
 * no duplicate keys in an object (the meaning of a repeated key is undefined, and for the files we
 * read a repeated name is always a mistake or an attack). Bounded: nesting deeper than the
 * caller's limit is rejected before it is recursed into, and numbers that overflow a double are
 * rejected. Every error names the byte offset where it was found.
 */
#ifndef LOWBIT_JSON_H
#define LOWBIT_JSON_H

#include "../common/common.h"

typedef enum lb_json_type {
    LB_JSON_NULL,
    LB_JSON_BOOL,
    LB_JSON_NUMBER,
    LB_JSON_STRING,
    LB_JSON_ARRAY,
    LB_JSON_OBJECT
} lb_json_type;

typedef struct lb_json_node {
    lb_json_type type;
    int boolean;             /* LB_JSON_BOOL */
    double number;           /* LB_JSON_NUMBER, always finite */
    int is_integer;          /* the number was written without fraction or exponent and fits int64 */
    int64_t integer;         /* its exact value when is_integer */
    const char *string;      /* LB_JSON_STRING: decoded UTF-8, NUL-terminated (may hold \u0000) */
    uint64_t string_length;
    const char *key;         /* for an object's member: its decoded key, NUL-terminated */
    uint64_t key_length;
    int64_t n_children;      /* arrays and objects */
    int64_t first_child;     /* index of the first element/member, -1 if none */
    int64_t next_sibling;    /* index of the next element/member of the parent, -1 if last */
    uint64_t offset;         /* byte offset of the value's first character, plus base_offset */
} lb_json_node;

typedef struct lb_json_doc {
    lb_json_node *nodes;     /* nodes[0] is the root */
    int64_t n_nodes, node_capacity;
    char *strings;           /* every decoded string and key, back to back */
    uint64_t strings_used, strings_capacity;
} lb_json_doc;

/* Parses `length` bytes of text into doc (zeroed by the call). base_offset is added to every
   offset reported (the position of the text in its file). max_depth bounds nesting (the root is
   depth 1); max_nodes bounds the number of values (each takes a node of about 100 bytes, so this
   bounds the memory a hostile text can make us allocate). On failure doc is left empty and diag
   names the problem and its byte offset. */
lowbit_status lb_json_parse(const char *text, uint64_t length, uint64_t base_offset, int max_depth,
                            int64_t max_nodes, lb_json_doc *doc, lowbit_diag *diag);
void lb_json_free(lb_json_doc *doc);

const lb_json_node *lb_json_root(const lb_json_doc *doc);
/* Iteration over an array's elements or an object's members: NULL after the last. */
const lb_json_node *lb_json_first(const lb_json_doc *doc, const lb_json_node *node);
const lb_json_node *lb_json_next(const lb_json_doc *doc, const lb_json_node *node);
/* An object's member by key (keys are unique); NULL if absent or node is not an object. */
const lb_json_node *lb_json_get(const lb_json_doc *doc, const lb_json_node *object,
                                const char *key);
/* A string node equal to s (whole, no embedded NUL). */
int lb_json_string_is(const lb_json_node *node, const char *s);

#endif
