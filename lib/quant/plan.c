/*
 * The preset planner: which type each tensor of a model is written in.
 *
 * The decisions follow llama.cpp's published quantization rules (see docs/PRESETS.md), in this
 * order for every tensor:
 *   1. tensors that are never quantized (1-D, norms, names not ending in "weight", ...) keep
 *      their type (1-D ones are stored as F32);
 *   2. an explicit --token-embedding-type / --output-tensor-type is used as given;
 *   3. for quantized presets only: the first matching override, else (unless --pure) the
 *      preset's rule for the tensor's role and layer, else the base type; then the fallback
 *      chain for row lengths the type cannot hold.
 * The rules are tables (rule_table, fallback_table); the code around them only walks them.
 */
#include "plan.h"

#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------------------------------------ */
/* Presets                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Indices into preset_table, so that rules can name presets. */
typedef enum preset_id {
    P_Q2_K, P_Q3_K_S, P_Q3_K_M, P_Q3_K_L, P_Q4_K_S, P_Q4_K_M, P_Q5_K_S, P_Q5_K_M, P_Q6_K,
    P_Q8_0, P_Q4_0, P_Q4_1, P_Q5_0, P_Q5_1, P_IQ4_XS, P_IQ4_NL, P_TQ1_0, P_TQ2_0,
    P_F32, P_F16, P_BF16,
    P_COUNT,
    P_ANY = -1 /* in a rule: whatever the preset */
} preset_id;

/* Base types and general.file_type values (llama_ftype) as llama.cpp defines them. */
static const lb_preset preset_table[P_COUNT] = {
    [P_Q2_K] = {"Q2_K", LOWBIT_TYPE_Q2_K, 10},
    [P_Q3_K_S] = {"Q3_K_S", LOWBIT_TYPE_Q3_K, 11},
    [P_Q3_K_M] = {"Q3_K_M", LOWBIT_TYPE_Q3_K, 12},
    [P_Q3_K_L] = {"Q3_K_L", LOWBIT_TYPE_Q3_K, 13},
    [P_Q4_K_S] = {"Q4_K_S", LOWBIT_TYPE_Q4_K, 14},
    [P_Q4_K_M] = {"Q4_K_M", LOWBIT_TYPE_Q4_K, 15},
    [P_Q5_K_S] = {"Q5_K_S", LOWBIT_TYPE_Q5_K, 16},
    [P_Q5_K_M] = {"Q5_K_M", LOWBIT_TYPE_Q5_K, 17},
    [P_Q6_K] = {"Q6_K", LOWBIT_TYPE_Q6_K, 18},
    [P_Q8_0] = {"Q8_0", LOWBIT_TYPE_Q8_0, 7},
    [P_Q4_0] = {"Q4_0", LOWBIT_TYPE_Q4_0, 2},
    [P_Q4_1] = {"Q4_1", LOWBIT_TYPE_Q4_1, 3},
    [P_Q5_0] = {"Q5_0", LOWBIT_TYPE_Q5_0, 8},
    [P_Q5_1] = {"Q5_1", LOWBIT_TYPE_Q5_1, 9},
    [P_IQ4_XS] = {"IQ4_XS", LOWBIT_TYPE_IQ4_XS, 30},
    [P_IQ4_NL] = {"IQ4_NL", LOWBIT_TYPE_IQ4_NL, 25},
    [P_TQ1_0] = {"TQ1_0", LOWBIT_TYPE_TQ1_0, 36},
    [P_TQ2_0] = {"TQ2_0", LOWBIT_TYPE_TQ2_0, 37},
    [P_F32] = {"F32", LOWBIT_TYPE_F32, 0},
    [P_F16] = {"F16", LOWBIT_TYPE_F16, 1},
    [P_BF16] = {"BF16", LOWBIT_TYPE_BF16, 32},
};

typedef struct preset_alias {
    const char *alias;
    preset_id preset;
} preset_alias;

static const preset_alias alias_table[] = {
    {"Q3_K", P_Q3_K_M},
    {"Q4_K", P_Q4_K_M},
    {"Q5_K", P_Q5_K_M},
};

/* llama.cpp presets lowbit knows of but cannot produce yet (their types have no encoder here, or
   they need rules not implemented): named in the error so the user knows it is not a typo. */
static const char *const unsupported_presets[] = {
    "Q2_K_S", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M",
    "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "MXFP4_MOE", "NVFP4",
};

static int equal_ignoring_case(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    }
    return *a == *b;
}

const lb_preset *lb_preset_find(const char *name) {
    if (!name) return NULL;
    for (int i = 0; i < P_COUNT; i++) {
        if (equal_ignoring_case(preset_table[i].name, name)) return &preset_table[i];
    }
    for (int i = 0; i < LB_ARRAY_LEN(alias_table); i++) {
        if (equal_ignoring_case(alias_table[i].alias, name)) return &preset_table[alias_table[i].preset];
    }
    return NULL;
}

int lb_preset_count(void) { return P_COUNT; }

const lb_preset *lb_preset_at(int i) { return i >= 0 && i < P_COUNT ? &preset_table[i] : NULL; }

static preset_id preset_id_of(const lb_preset *preset) { return (preset_id)(preset - preset_table); }

/* "Q2_K Q3_K_S ... BF16" into buf. */
static void list_presets(char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < P_COUNT && used < size; i++) {
        const int n = snprintf(buf + used, size - used, "%s%s", i ? " " : "", preset_table[i].name);
        if (n < 0) break;
        used += (size_t)n;
    }
}

static lowbit_status unknown_preset_error(const char *name, lowbit_diag *diag) {
    char supported[160];
    list_presets(supported, sizeof supported);
    if (!name) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "no preset given; supported: %s", supported);
    }
    for (int i = 0; i < LB_ARRAY_LEN(unsupported_presets); i++) {
        if (equal_ignoring_case(unsupported_presets[i], name)) {
            return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                               "preset '%.40s' is not supported by lowbit yet; supported: %s", name,
                               supported);
        }
    }
    return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                       "unknown preset '%.40s'; supported: %s (Q3_K, Q4_K, Q5_K mean the _M ones)",
                       name, supported);
}

lowbit_status lb_preset_check(const char *name, lowbit_diag *diag) {
    return name && lb_preset_find(name) ? LOWBIT_OK : unknown_preset_error(name, diag);
}

/* ------------------------------------------------------------------------------------------ */
/* What the model is                                                                           */
/* ------------------------------------------------------------------------------------------ */

typedef struct model_facts {
    int64_t n_layer;  /* <arch>.block_count, else 1 + the largest blk.N in the tensor names */
    int64_t n_gqa;    /* head_count / head_count_kv (1 when unknown) */
    int64_t n_expert; /* <arch>.expert_count, 0 when absent */
    int is_falcon;
    int is_70b;       /* llama.cpp's "70B" model size, the one size its rules look at */
    int has_output;   /* an output.weight tensor exists; else token_embd.weight is the output */
} model_facts;

/* The string value of a key, copied into buf (truncated names are treated as unknown). */
static int kv_string(const lb_model *m, const char *key, char *buf, size_t size) {
    const lb_kv *kv = lb_model_find_kv(m, key);
    if (!kv || kv->type != LOWBIT_GGUF_STRING || kv->value_size < 8) return 0;
    const uint64_t length = lb_load_u64(kv->value);
    if (length > kv->value_size - 8 || length >= size) return 0;
    memcpy(buf, kv->value + 8, (size_t)length);
    buf[length] = '\0';
    return 1;
}

static int arch_u64(const lb_model *m, const char *arch, const char *suffix, uint64_t *v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return lb_kv_get_u64(lb_model_find_kv(m, key), v);
}

/* The N of a "blk.N." name, or -1 for tensors outside the blocks. */
static int64_t layer_of(const char *name) {
    if (strncmp(name, "blk.", 4) != 0) return -1;
    const char *p = name + 4;
    int64_t layer = 0;
    int digits = 0;
    for (; isdigit((unsigned char)*p) && digits < 9; p++, digits++) layer = 10 * layer + (*p - '0');
    return digits > 0 && *p == '.' ? layer : -1;
}

static void read_model_facts(const lb_model *m, model_facts *facts) {
    memset(facts, 0, sizeof *facts);
    char arch[64] = "llama";
    if (!kv_string(m, "general.architecture", arch, sizeof arch)) strcpy(arch, "llama");
    uint64_t v;
    if (arch_u64(m, arch, "block_count", &v) && v <= INT32_MAX) {
        facts->n_layer = (int64_t)v;
    } else {
        for (int64_t i = 0; i < m->n_tensors; i++) {
            facts->n_layer = LB_MAX(facts->n_layer, layer_of(m->tensors[i].name) + 1);
        }
    }
    uint64_t n_head = 0, n_head_kv = 0;
    const int has_head = arch_u64(m, arch, "attention.head_count", &n_head);
    /* a missing head_count_kv means no grouping, as llama.cpp assumes */
    if (!arch_u64(m, arch, "attention.head_count_kv", &n_head_kv)) n_head_kv = n_head;
    facts->n_gqa = has_head && n_head_kv > 0 && n_head >= n_head_kv ? (int64_t)(n_head / n_head_kv) : 1;
    if (arch_u64(m, arch, "expert_count", &v) && v <= INT32_MAX) facts->n_expert = (int64_t)v;
    facts->is_falcon = strcmp(arch, "falcon") == 0;
    /* llama.cpp calls an 80-layer Llama with grouped KV heads a 70B model */
    facts->is_70b = strcmp(arch, "llama") == 0 && facts->n_layer == 80 && facts->n_gqa > 1;
    facts->has_output = lb_model_find_tensor(m, "output.weight") != NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Which tensors are quantized at all                                                          */
/* ------------------------------------------------------------------------------------------ */

static int ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Weights that are kept as they are whatever the preset: small, or read by something other than
   a matrix product (routers, convolutions, positional tables, vision and audio parts). */
static const char *const never_quantized_substrings[] = {
    "_norm.weight", "ffn_gate_inp", "ffn_gate_tid2eid", "altup", "laurel", "per_layer_model_proj",
    "position_embd.weight", "token_types.weight", "ssm_conv1d", "shortconv.conv.weight",
    "indexer.k_proj", "indexer.q_proj", "time_mix_first", "time_mix_w0", "time_mix_w1",
    "time_mix_w2", "time_mix_decay_w1", "time_mix_decay_w2", "time_mix_lerp_fused", "attn_rel_b",
    ".position_embd", "sam.", ".rel_pos", ".patch_embd", ".patch_merger", "codebook",
};

/* NULL when the tensor may be quantized, else why not. */
static const char *why_not_quantized(const lb_tensor *t) {
    if (t->n_dims < 2) return "1-D tensor";
    if (!ends_with(t->name, "weight")) return "name does not end in 'weight'";
    for (int i = 0; i < LB_ARRAY_LEN(never_quantized_substrings); i++) {
        if (strstr(t->name, never_quantized_substrings[i])) return never_quantized_substrings[i];
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Roles                                                                                       */
/* ------------------------------------------------------------------------------------------ */

typedef enum category {
    CAT_OTHER, CAT_OUTPUT, CAT_TOKEN_EMBD, CAT_ATTN_V, CAT_ATTN_K, CAT_ATTN_Q, CAT_ATTN_OUTPUT,
    CAT_FFN_UP, CAT_FFN_GATE, CAT_FFN_DOWN, CAT_COUNT
} category;

typedef struct category_pattern {
    const char *substring;
    category cat;
} category_pattern;

/* Searched in this order; the fused QKV and MLA's kv_b play the role of attn_v. MoE experts
   (ffn_*_exps, ffn_*_shexp) land in the ffn categories. */
static const category_pattern category_patterns[] = {
    {"attn_qkv.weight", CAT_ATTN_V}, {"attn_kv_b.weight", CAT_ATTN_V},
    {"attn_v.weight", CAT_ATTN_V},   {"attn_k.weight", CAT_ATTN_K},
    {"attn_q.weight", CAT_ATTN_Q},   {"attn_output.weight", CAT_ATTN_OUTPUT},
    {"ffn_up", CAT_FFN_UP},          {"ffn_gate", CAT_FFN_GATE},
    {"ffn_down", CAT_FFN_DOWN},
};

static category category_of(const char *name) {
    if (strcmp(name, "output.weight") == 0) return CAT_OUTPUT;
    if (strcmp(name, "token_embd.weight") == 0 || strcmp(name, "per_layer_token_embd.weight") == 0) {
        return CAT_TOKEN_EMBD;
    }
    for (int i = 0; i < LB_ARRAY_LEN(category_patterns); i++) {
        if (strstr(name, category_patterns[i].substring)) return category_patterns[i].cat;
    }
    return CAT_OTHER;
}

/* ------------------------------------------------------------------------------------------ */
/* The preset rules                                                                            */
/* ------------------------------------------------------------------------------------------ */

typedef enum arch_filter { ARCH_ANY, ARCH_FALCON, ARCH_NOT_FALCON } arch_filter;

/* i is the tensor's position among its role (attn_v: the attn_v-like tensors so far; ffn: the
   layer), n the role's total. */
typedef enum condition {
    WHEN_ALWAYS,
    WHEN_GQA_AT_LEAST_4,          /* n_head / n_head_kv >= 4 */
    WHEN_FIRST_2,                 /* i < 2 */
    WHEN_FIRST_4,                 /* i < 4 */
    WHEN_MORE_BITS,               /* use_more_bits(i, n) */
    WHEN_FIRST_EIGHTH,            /* i < n/8 */
    WHEN_FIRST_SIXTEENTH,         /* i < n/16 */
    WHEN_FIRST_EIGHTH_NO_IMATRIX, /* i < n/8 and no imatrix was given */
    WHEN_FIRST_EIGHTH_IMATRIX,    /* i < n/8 and an imatrix was given */
    WHEN_8_EXPERTS,               /* expert_count == 8 */
    WHEN_NOT_8_EXPERTS,
    WHEN_BASE_MISFITS_ROW         /* the base type's block does not divide the row length */
} condition;

typedef struct rule {
    category cat;
    preset_id preset; /* or P_ANY */
    arch_filter arch;
    condition when;
    lowbit_type type;
} rule;

/* For a tensor, the first row of its role, preset and architecture whose condition holds gives
   its type; when none does, it gets the preset's base type. */
static const rule rule_table[] = {
    /* output.weight, and token_embd.weight when the embedding is also the output */
    {CAT_OUTPUT, P_ANY, ARCH_FALCON, WHEN_ALWAYS, LOWBIT_TYPE_Q8_0},
    {CAT_OUTPUT, P_ANY, ARCH_ANY, WHEN_BASE_MISFITS_ROW, LOWBIT_TYPE_Q8_0},
    {CAT_OUTPUT, P_Q8_0, ARCH_ANY, WHEN_ALWAYS, LOWBIT_TYPE_Q8_0},
    {CAT_OUTPUT, P_ANY, ARCH_ANY, WHEN_ALWAYS, LOWBIT_TYPE_Q6_K},

    /* token_embd.weight with a separate output */
    {CAT_TOKEN_EMBD, P_TQ1_0, ARCH_ANY, WHEN_ALWAYS, LOWBIT_TYPE_Q4_K},
    {CAT_TOKEN_EMBD, P_TQ2_0, ARCH_ANY, WHEN_ALWAYS, LOWBIT_TYPE_Q4_K},

    /* attn_v (before the 70B and 8-expert adjustments, see adjust_attn_v) */
    {CAT_ATTN_V, P_Q2_K, ARCH_ANY, WHEN_GQA_AT_LEAST_4, LOWBIT_TYPE_Q4_K},
    {CAT_ATTN_V, P_Q2_K, ARCH_ANY, WHEN_ALWAYS, LOWBIT_TYPE_Q3_K},
    {CAT_ATTN_V, P_Q3_K_M, ARCH_ANY, WHEN_FIRST_2, LOWBIT_TYPE_Q5_K},
    {CAT_ATTN_V, P_Q3_K_M, ARCH_ANY, WHEN_ALWAYS, LOWBIT_TYPE_Q4_K},
    {CAT_ATTN_V, P_Q3_K_L, ARCH_ANY, WHEN_ALWAYS, LOWBIT_TYPE_Q5_K},
    {CAT_ATTN_V, P_Q4_K_S, ARCH_ANY, WHEN_FIRST_4, LOWBIT_TYPE_Q5_K},
    {CAT_ATTN_V, P_Q4_K_M, ARCH_ANY, WHEN_MORE_BITS, LOWBIT_TYPE_Q6_K},
    {CAT_ATTN_V, P_Q5_K_M, ARCH_ANY, WHEN_MORE_BITS, LOWBIT_TYPE_Q6_K},
    {CAT_ATTN_V, P_IQ4_NL, ARCH_ANY, WHEN_GQA_AT_LEAST_4, LOWBIT_TYPE_Q5_K},
    {CAT_ATTN_V, P_IQ4_XS, ARCH_ANY, WHEN_GQA_AT_LEAST_4, LOWBIT_TYPE_Q5_K},

    /* attn_k (attn_q always gets the base type) */
    {CAT_ATTN_K, P_ANY, ARCH_ANY, WHEN_8_EXPERTS, LOWBIT_TYPE_Q8_0},

    /* ffn_down */
    {CAT_FFN_DOWN, P_Q2_K, ARCH_ANY, WHEN_ALWAYS, LOWBIT_TYPE_Q3_K},
    {CAT_FFN_DOWN, P_Q3_K_M, ARCH_ANY, WHEN_FIRST_SIXTEENTH, LOWBIT_TYPE_Q5_K},
    {CAT_FFN_DOWN, P_Q3_K_M, ARCH_NOT_FALCON, WHEN_ALWAYS, LOWBIT_TYPE_Q4_K},
    {CAT_FFN_DOWN, P_Q3_K_M, ARCH_FALCON, WHEN_MORE_BITS, LOWBIT_TYPE_Q4_K},
    {CAT_FFN_DOWN, P_Q3_K_L, ARCH_NOT_FALCON, WHEN_ALWAYS, LOWBIT_TYPE_Q5_K},
    {CAT_FFN_DOWN, P_Q3_K_L, ARCH_FALCON, WHEN_ALWAYS, LOWBIT_TYPE_Q4_K},
    {CAT_FFN_DOWN, P_Q4_K_S, ARCH_NOT_FALCON, WHEN_FIRST_EIGHTH, LOWBIT_TYPE_Q5_K},
    {CAT_FFN_DOWN, P_Q4_K_M, ARCH_NOT_FALCON, WHEN_MORE_BITS, LOWBIT_TYPE_Q6_K},
    {CAT_FFN_DOWN, P_Q4_K_M, ARCH_FALCON, WHEN_FIRST_SIXTEENTH, LOWBIT_TYPE_Q6_K},
    {CAT_FFN_DOWN, P_Q4_K_M, ARCH_FALCON, WHEN_MORE_BITS, LOWBIT_TYPE_Q5_K},
    {CAT_FFN_DOWN, P_Q5_K_M, ARCH_ANY, WHEN_MORE_BITS, LOWBIT_TYPE_Q6_K},
    {CAT_FFN_DOWN, P_IQ4_NL, ARCH_ANY, WHEN_FIRST_EIGHTH_NO_IMATRIX, LOWBIT_TYPE_Q5_K},
    {CAT_FFN_DOWN, P_IQ4_XS, ARCH_ANY, WHEN_FIRST_EIGHTH_NO_IMATRIX, LOWBIT_TYPE_Q5_K},
    {CAT_FFN_DOWN, P_Q4_0, ARCH_ANY, WHEN_FIRST_EIGHTH_IMATRIX, LOWBIT_TYPE_Q4_1},
    {CAT_FFN_DOWN, P_Q5_0, ARCH_ANY, WHEN_FIRST_EIGHTH_IMATRIX, LOWBIT_TYPE_Q5_1},

    /* attn_output */
    {CAT_ATTN_OUTPUT, P_Q2_K, ARCH_NOT_FALCON, WHEN_8_EXPERTS, LOWBIT_TYPE_Q5_K},
    {CAT_ATTN_OUTPUT, P_Q3_K_S, ARCH_NOT_FALCON, WHEN_8_EXPERTS, LOWBIT_TYPE_Q5_K},
    {CAT_ATTN_OUTPUT, P_Q3_K_M, ARCH_NOT_FALCON, WHEN_8_EXPERTS, LOWBIT_TYPE_Q5_K},
    {CAT_ATTN_OUTPUT, P_Q4_K_S, ARCH_NOT_FALCON, WHEN_8_EXPERTS, LOWBIT_TYPE_Q5_K},
    {CAT_ATTN_OUTPUT, P_Q4_K_M, ARCH_NOT_FALCON, WHEN_8_EXPERTS, LOWBIT_TYPE_Q5_K},
    {CAT_ATTN_OUTPUT, P_IQ4_NL, ARCH_NOT_FALCON, WHEN_8_EXPERTS, LOWBIT_TYPE_Q5_K},
    {CAT_ATTN_OUTPUT, P_IQ4_XS, ARCH_NOT_FALCON, WHEN_8_EXPERTS, LOWBIT_TYPE_Q5_K},
    {CAT_ATTN_OUTPUT, P_Q2_K, ARCH_NOT_FALCON, WHEN_NOT_8_EXPERTS, LOWBIT_TYPE_Q3_K},
    {CAT_ATTN_OUTPUT, P_Q3_K_M, ARCH_NOT_FALCON, WHEN_NOT_8_EXPERTS, LOWBIT_TYPE_Q4_K},
    {CAT_ATTN_OUTPUT, P_Q3_K_L, ARCH_NOT_FALCON, WHEN_NOT_8_EXPERTS, LOWBIT_TYPE_Q5_K},
    {CAT_ATTN_OUTPUT, P_Q3_K_L, ARCH_FALCON, WHEN_ALWAYS, LOWBIT_TYPE_Q4_K},

    /* ffn_gate and ffn_up: the base type for every preset lowbit supports */
};

/* What a rule's condition looks at. */
typedef struct rule_context {
    const model_facts *facts;
    preset_id preset;
    lowbit_type base_type;
    int64_t i, n; /* position within the role and the role's total (see condition) */
    int64_t row_length;
    int has_imatrix;
} rule_context;

/* llama.cpp's choice of layers that deserve more bits: the first and last eighth, and every
   third layer in between. Integer division throughout. */
static int use_more_bits(int64_t i, int64_t n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static int fits_row(lowbit_type type, int64_t row_length) {
    const lowbit_type_traits *traits = lowbit_type_info(type);
    return traits && row_length % traits->block_size == 0;
}

static int condition_holds(condition when, const rule_context *c) {
    switch (when) {
    case WHEN_ALWAYS: return 1;
    case WHEN_GQA_AT_LEAST_4: return c->facts->n_gqa >= 4;
    case WHEN_FIRST_2: return c->i < 2;
    case WHEN_FIRST_4: return c->i < 4;
    case WHEN_MORE_BITS: return use_more_bits(c->i, c->n);
    case WHEN_FIRST_EIGHTH: return c->i < c->n / 8;
    case WHEN_FIRST_SIXTEENTH: return c->i < c->n / 16;
    case WHEN_FIRST_EIGHTH_NO_IMATRIX: return c->i < c->n / 8 && !c->has_imatrix;
    case WHEN_FIRST_EIGHTH_IMATRIX: return c->i < c->n / 8 && c->has_imatrix;
    case WHEN_8_EXPERTS: return c->facts->n_expert == 8;
    case WHEN_NOT_8_EXPERTS: return c->facts->n_expert != 8;
    case WHEN_BASE_MISFITS_ROW: return !fits_row(c->base_type, c->row_length);
    }
    return 0;
}

static int arch_matches(arch_filter arch, const model_facts *facts) {
    if (arch == ARCH_FALCON) return facts->is_falcon;
    if (arch == ARCH_NOT_FALCON) return !facts->is_falcon;
    return 1;
}

/* After the attn_v rows: a 70B model lifts Q3_K/Q4_K to Q5_K, and an 8-expert model's attn_v
   is always Q8_0 (in this order, so the expert rule wins). */
static lowbit_type adjust_attn_v(lowbit_type type, const model_facts *facts) {
    if (facts->is_70b && (type == LOWBIT_TYPE_Q3_K || type == LOWBIT_TYPE_Q4_K)) type = LOWBIT_TYPE_Q5_K;
    if (facts->n_expert == 8) type = LOWBIT_TYPE_Q8_0;
    return type;
}

static lowbit_type rule_type(category cat, const rule_context *c) {
    lowbit_type type = c->base_type;
    for (int r = 0; r < LB_ARRAY_LEN(rule_table); r++) {
        const rule *row = &rule_table[r];
        if (row->cat != cat || (row->preset != P_ANY && row->preset != c->preset)) continue;
        if (!arch_matches(row->arch, c->facts) || !condition_holds(row->when, c)) continue;
        type = row->type;
        break;
    }
    return cat == CAT_ATTN_V ? adjust_attn_v(type, c->facts) : type;
}

/* ------------------------------------------------------------------------------------------ */
/* Fallback for row lengths a type cannot hold                                                 */
/* ------------------------------------------------------------------------------------------ */

typedef struct fallback {
    lowbit_type from, to;
} fallback;

/* llama.cpp's chain; a type not listed here (the 32-blocks among them) falls to F16, which
   holds any row. */
static const fallback fallback_table[] = {
    {LOWBIT_TYPE_Q2_K, LOWBIT_TYPE_Q4_0},    {LOWBIT_TYPE_Q3_K, LOWBIT_TYPE_Q4_0},
    {LOWBIT_TYPE_TQ1_0, LOWBIT_TYPE_Q4_0},   {LOWBIT_TYPE_TQ2_0, LOWBIT_TYPE_Q4_0},
    {LOWBIT_TYPE_Q4_K, LOWBIT_TYPE_Q5_0},    {LOWBIT_TYPE_Q5_K, LOWBIT_TYPE_Q5_1},
    {LOWBIT_TYPE_Q6_K, LOWBIT_TYPE_Q8_0},    {LOWBIT_TYPE_IQ4_XS, LOWBIT_TYPE_IQ4_NL},
    {LOWBIT_TYPE_IQ1_S, LOWBIT_TYPE_IQ4_NL}, {LOWBIT_TYPE_IQ1_M, LOWBIT_TYPE_IQ4_NL},
    {LOWBIT_TYPE_IQ2_XXS, LOWBIT_TYPE_IQ4_NL}, {LOWBIT_TYPE_IQ2_XS, LOWBIT_TYPE_IQ4_NL},
    {LOWBIT_TYPE_IQ2_S, LOWBIT_TYPE_IQ4_NL}, {LOWBIT_TYPE_IQ3_XXS, LOWBIT_TYPE_IQ4_NL},
    {LOWBIT_TYPE_IQ3_S, LOWBIT_TYPE_IQ4_NL},
};

static lowbit_type next_fallback(lowbit_type type) {
    for (int i = 0; i < LB_ARRAY_LEN(fallback_table); i++) {
        if (fallback_table[i].from == type) return fallback_table[i].to;
    }
    return LOWBIT_TYPE_F16;
}

static const char *type_name(lowbit_type type) {
    const lowbit_type_traits *traits = lowbit_type_info(type);
    return traits ? traits->name : "?";
}

/* The first type along the chain from `chosen` that holds rows of row_length; says why in note
   when it is not `chosen` itself. */
static lowbit_type apply_fallback(lowbit_type chosen, int64_t row_length, lowbit_tensor_plan *p) {
    if (fits_row(chosen, row_length)) return chosen;
    lowbit_type type = next_fallback(chosen);
    char skipped[64] = "";
    while (!fits_row(type, row_length)) {
        snprintf(skipped + strlen(skipped), sizeof skipped - strlen(skipped), "%s%s",
                 skipped[0] ? ", " : "", type_name(type));
        type = next_fallback(type);
    }
    const lowbit_type_traits *traits = lowbit_type_info(chosen);
    int n = snprintf(p->note, sizeof p->note, "%s does not fit row length %lld (block %d); fell back to %s",
                     type_name(chosen), (long long)row_length, traits ? (int)traits->block_size : 0,
                     type_name(type));
    if (skipped[0] && n > 0 && (size_t)n < sizeof p->note) {
        snprintf(p->note + n, sizeof p->note - (size_t)n, " (%s does not fit either)", skipped);
    }
    p->fell_back = 1;
    return type;
}

/* ------------------------------------------------------------------------------------------ */
/* Types the caller names                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* A type lowbit can write as tensor storage: a float type, or a block format with an encoder
   that is not one of the activation-only formats. */
static int can_write(lowbit_type type) {
    const lowbit_type_traits *traits = lowbit_type_info(type);
    if (!traits || !traits->quantize) return 0;
    return type != LOWBIT_TYPE_Q8_1 && type != LOWBIT_TYPE_Q8_K;
}

static lowbit_status check_writable(int type, const char *what, lowbit_diag *diag) {
    if (type < 0 || type >= LOWBIT_TYPE_COUNT || !lowbit_type_info((lowbit_type)type)) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "%s: %d is not a type lowbit knows", what, type);
    }
    if (!can_write((lowbit_type)type)) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "%s: lowbit cannot write %s tensors", what, type_name((lowbit_type)type));
    }
    return LOWBIT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Overrides                                                                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct compiled_overrides {
    regex_t *regexes;
    int64_t *matches; /* quantizable tensors whose name each pattern matches */
    int n;            /* compiled so far (freed on cleanup) */
} compiled_overrides;

static void free_overrides(compiled_overrides *co) {
    for (int i = 0; i < co->n; i++) regfree(&co->regexes[i]);
    free(co->regexes);
    free(co->matches);
    memset(co, 0, sizeof *co);
}

static lowbit_status compile_overrides(const lowbit_quantize_options *o, compiled_overrides *co,
                                       lowbit_diag *diag) {
    memset(co, 0, sizeof *co);
    if (o->n_overrides < 0 || (o->n_overrides > 0 && !o->overrides)) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "bad override list");
    }
    if (o->n_overrides == 0) return LOWBIT_OK;
    co->regexes = calloc((size_t)o->n_overrides, sizeof *co->regexes);
    co->matches = calloc((size_t)o->n_overrides, sizeof *co->matches);
    if (!co->regexes || !co->matches) {
        free_overrides(co);
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    }
    for (int i = 0; i < o->n_overrides; i++) {
        const lowbit_tensor_type_override *ov = &o->overrides[i];
        if (!ov->pattern) {
            free_overrides(co);
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "override %d has no pattern", i);
        }
        char what[96];
        snprintf(what, sizeof what, "override '%.60s'", ov->pattern);
        lowbit_status st = check_writable((int)ov->type, what, diag);
        if (st != LOWBIT_OK) {
            free_overrides(co);
            return st;
        }
        const int err = regcomp(&co->regexes[i], ov->pattern, REG_EXTENDED | REG_NOSUB);
        if (err != 0) {
            char reason[96];
            regerror(err, &co->regexes[i], reason, sizeof reason);
            free_overrides(co);
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                               "override pattern '%.60s' is not a valid regular expression: %s",
                               ov->pattern, reason);
        }
        co->n = i + 1;
    }
    return LOWBIT_OK;
}

/* Index of the first override whose pattern occurs in name, or -1. Counts every pattern's
   matches, shadowed or not. */
static int first_override(compiled_overrides *co, const char *name) {
    int first = -1;
    for (int i = 0; i < co->n; i++) {
        if (regexec(&co->regexes[i], name, 0, NULL, 0) == 0) {
            co->matches[i]++;
            if (first < 0) first = i;
        }
    }
    return first;
}

/* ------------------------------------------------------------------------------------------ */
/* Planning                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Tensors are visited by layer (non-block tensors first), then name, so that the role counters
   mean "layer" whatever order the file lists them in. */
typedef struct visit {
    int64_t layer;
    int64_t index;
    const char *name;
} visit;

static int compare_visits(const void *a, const void *b) {
    const visit *x = a, *y = b;
    if (x->layer != y->layer) return x->layer < y->layer ? -1 : 1;
    return strcmp(x->name, y->name);
}

typedef struct planner {
    const lb_model *m;
    const lowbit_quantize_options *o;
    const lb_preset *preset;
    model_facts facts;
    compiled_overrides overrides;
    int has_imatrix;
    int64_t seen[CAT_COUNT];  /* quantizable tensors of each role visited so far */
    int64_t total[CAT_COUNT]; /* quantizable tensors of each role */
} planner;

/* The role a tensor's rules are looked up under: the embedding stands in for a missing output. */
static category rule_category(const planner *pl, const lb_tensor *t) {
    const category cat = category_of(t->name);
    if (cat == CAT_TOKEN_EMBD && !pl->facts.has_output && strcmp(t->name, "token_embd.weight") == 0) {
        return CAT_OUTPUT;
    }
    return cat;
}

/* --token-embedding-type / --output-tensor-type for this tensor, or -1. */
static int explicit_type(const planner *pl, const lb_tensor *t, category cat) {
    if (category_of(t->name) == CAT_TOKEN_EMBD && pl->o->token_embedding_type >= 0) {
        return pl->o->token_embedding_type;
    }
    if (cat == CAT_OUTPUT && pl->o->output_tensor_type >= 0) return pl->o->output_tensor_type;
    return -1;
}

/* The preset's choice for a quantizable tensor (override, rule or base), before the fallback. */
static lowbit_type preset_choice(planner *pl, const lb_tensor *t, category cat, int ov) {
    if (ov >= 0) return pl->o->overrides[ov].type;
    if (pl->o->pure) return pl->preset->base_type;
    rule_context c = {
        .facts = &pl->facts, .preset = preset_id_of(pl->preset), .base_type = pl->preset->base_type,
        .i = 0, .n = 0, .row_length = t->ne[0], .has_imatrix = pl->has_imatrix,
    };
    if (cat == CAT_ATTN_V) {
        c.i = pl->seen[CAT_ATTN_V];
        c.n = pl->total[CAT_ATTN_V];
    } else if (cat == CAT_FFN_DOWN || cat == CAT_FFN_GATE || cat == CAT_FFN_UP) {
        /* with experts, a layer holds several ffn_down tensors (experts, shared expert): the
           layer comes from the name rather than from the count */
        c.i = pl->facts.n_expert > 1 ? LB_MAX(layer_of(t->name), 0) : pl->seen[cat];
        c.n = pl->facts.n_layer;
    }
    return rule_type(cat, &c);
}

static lowbit_status plan_quantizable(planner *pl, const lb_tensor *t, lowbit_tensor_plan *p,
                                      lowbit_diag *diag) {
    const category cat = rule_category(pl, t);
    /* matched first, whatever decides the type, so that unused patterns can be reported */
    const int ov = first_override(&pl->overrides, t->name);
    const int asked = explicit_type(pl, t, cat);
    if (asked >= 0) {
        /* an explicitly requested type is honoured or refused, never silently changed */
        if (!fits_row((lowbit_type)asked, t->ne[0])) {
            return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                               "requested type %s cannot hold tensor '%s': row length %lld is not a multiple of %d",
                               type_name((lowbit_type)asked), t->name, (long long)t->ne[0],
                               (int)lowbit_type_info((lowbit_type)asked)->block_size);
        }
        p->type = (lowbit_type)asked;
    } else if (!lowbit_type_info(pl->preset->base_type)->is_quantized) {
        p->type = pl->preset->base_type; /* a plain conversion: no rules, no overrides */
    } else {
        p->type = apply_fallback(preset_choice(pl, t, cat, ov), t->ne[0], p);
    }
    /* counters advance whatever decided the type, so that they keep meaning "layer" */
    pl->seen[cat]++;
    return LOWBIT_OK;
}

static int is_float_type(lowbit_type type) {
    return type == LOWBIT_TYPE_F32 || type == LOWBIT_TYPE_F16 || type == LOWBIT_TYPE_BF16;
}

static void plan_kept(const lb_tensor *t, const char *why, lowbit_tensor_plan *p) {
    if (t->n_dims < 2 && is_float_type(t->type)) {
        /* norms and other vectors are small and precision-sensitive: always F32 */
        p->type = LOWBIT_TYPE_F32;
        snprintf(p->note, sizeof p->note, "not quantized: 1-D tensor, stored as f32");
    } else {
        p->type = t->type; /* copied byte for byte */
        snprintf(p->note, sizeof p->note, "not quantized: %s", why);
    }
}

static lowbit_status fill_sizes(const lb_tensor *t, lowbit_tensor_plan *p, lowbit_diag *diag) {
    if (p->type == t->type) {
        p->n_bytes = t->n_bytes; /* a copy, whatever the type (even one lowbit cannot decode) */
        return LOWBIT_OK;
    }
    const uint64_t row_bytes = lowbit_row_bytes(p->type, t->ne[0]);
    const int64_t rows = lb_tensor_rows(t);
    if (row_bytes == 0 || rows <= 0 || (uint64_t)rows > UINT64_MAX / row_bytes) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "tensor '%s': %s cannot hold its shape", t->name, type_name(p->type));
    }
    p->n_bytes = row_bytes * (uint64_t)rows;
    return LOWBIT_OK;
}

/* The written type must be one lowbit can produce: encodable, and (unless copied as it is) from
   a source lowbit can decode as weights. Integer tensors (I8..I64) hold indices or integer-model
   parameters, not weights: they are only ever copied. */
static lowbit_status check_feasible(const lb_tensor *t, const lowbit_tensor_plan *p, lowbit_diag *diag) {
    if (p->type == t->type) return LOWBIT_OK; /* copied byte for byte */
    const lowbit_type_traits *source = lowbit_type_info(t->type);
    const int integer = t->type == LOWBIT_TYPE_I8 || t->type == LOWBIT_TYPE_I16 ||
                        t->type == LOWBIT_TYPE_I32 || t->type == LOWBIT_TYPE_I64;
    if (!source || !source->dequantize || integer) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "tensor '%s' is stored as type %d, which lowbit cannot convert to %s",
                           t->name, (int)t->type, type_name(p->type));
    }
    if (!can_write(p->type)) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "tensor '%s': lowbit cannot write %s", t->name, type_name(p->type));
    }
    return LOWBIT_OK;
}

static void begin_plan_entry(const lb_tensor *t, lowbit_tensor_plan *p) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", t->name);
    p->source_type = t->type;
    p->type = t->type;
    p->n_dims = t->n_dims;
    for (int d = 0; d < 4; d++) p->ne[d] = t->ne[d];
}

static lowbit_status plan_tensor(planner *pl, const lb_tensor *t, lowbit_tensor_plan *p,
                                 lowbit_diag *diag) {
    begin_plan_entry(t, p);
    const char *why = why_not_quantized(t);
    lowbit_status st = LOWBIT_OK;
    if (why) {
        plan_kept(t, why, p);
    } else {
        st = plan_quantizable(pl, t, p, diag);
    }
    if (st == LOWBIT_OK) st = check_feasible(t, p, diag);
    if (st == LOWBIT_OK) st = fill_sizes(t, p, diag);
    return st;
}

static void count_roles(planner *pl) {
    for (int64_t i = 0; i < pl->m->n_tensors; i++) {
        const lb_tensor *t = &pl->m->tensors[i];
        if (!why_not_quantized(t)) pl->total[rule_category(pl, t)]++;
    }
}

static lowbit_status check_options(const lowbit_quantize_options *o, lowbit_diag *diag) {
    if (o->output_tensor_type >= 0) {
        lowbit_status st = check_writable(o->output_tensor_type, "output tensor type", diag);
        if (st != LOWBIT_OK) return st;
    }
    if (o->token_embedding_type >= 0) {
        lowbit_status st = check_writable(o->token_embedding_type, "token embedding type", diag);
        if (st != LOWBIT_OK) return st;
    }
    return LOWBIT_OK;
}

static lowbit_status check_overrides_used(const planner *pl, lowbit_diag *diag) {
    for (int i = 0; i < pl->overrides.n; i++) {
        if (pl->overrides.matches[i] == 0) {
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                               "override pattern '%.80s' matches no quantizable tensor",
                               pl->o->overrides[i].pattern);
        }
    }
    return LOWBIT_OK;
}

static lowbit_status plan_all(planner *pl, lowbit_tensor_plan *plan, lowbit_diag *diag) {
    const int64_t n = pl->m->n_tensors;
    visit *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    if (!order) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        order[i] = (visit){layer_of(pl->m->tensors[i].name), i, pl->m->tensors[i].name};
    }
    qsort(order, (size_t)n, sizeof *order, compare_visits);
    lowbit_status st = LOWBIT_OK;
    for (int64_t k = 0; k < n && st == LOWBIT_OK; k++) {
        const int64_t i = order[k].index;
        st = plan_tensor(pl, &pl->m->tensors[i], &plan[i], diag);
    }
    free(order);
    return st;
}

lowbit_status lb_plan_types(const lb_model *m, const lowbit_quantize_options *options,
                            int has_imatrix, lowbit_tensor_plan *plan, lowbit_diag *diag) {
    if (!m || !options || (!plan && m->n_tensors > 0)) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "lb_plan_types: NULL argument");
    }
    planner pl = {.m = m, .o = options, .has_imatrix = has_imatrix != 0};
    pl.preset = lb_preset_find(options->preset);
    if (!pl.preset) return unknown_preset_error(options->preset, diag);
    lowbit_status st = check_options(options, diag);
    if (st != LOWBIT_OK) return st;
    if (options->n_overrides > 0 && !lowbit_type_info(pl.preset->base_type)->is_quantized) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "type overrides apply to quantized presets only; %s converts every tensor as it is",
                           pl.preset->name);
    }
    st = compile_overrides(options, &pl.overrides, diag);
    if (st != LOWBIT_OK) return st;
    read_model_facts(m, &pl.facts);
    count_roles(&pl);
    st = plan_all(&pl, plan, diag);
    if (st == LOWBIT_OK) st = check_overrides_used(&pl, diag);
    free_overrides(&pl.overrides);
    return st;
}
