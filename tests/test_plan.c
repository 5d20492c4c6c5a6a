/*
 * The preset planner: every tensor's type under every preset, checked against expectations
 * written here from llama.cpp's rules as docs/PRESETS.md states them (a second, independent
 * spelling of the rules: switches by preset name rather than the library's tables), plus
 * literal spot checks (layer lists, notes), options and errors.
 *
 * Models are synthetic: metadata and tensors whose data pointer is never read. Their shapes
 * follow Llama GGUF files, including the shapes of the sample models stories260K and lit3m.
 */
#include "testing.h"
#include "quant/plan.h"

#include <stdlib.h>
#include <string.h>

static const uint8_t dummy_bytes[16]; /* tensors point here; the planner never reads data */

/* ------------------------------------------------------------------------------------------ */
/* Synthetic models                                                                            */
/* ------------------------------------------------------------------------------------------ */

typedef enum role {
    R_NORM, R_EMBD, R_OUTPUT, R_ATTN_Q, R_ATTN_K, R_ATTN_V, R_ATTN_OUT, R_FFN_GATE, R_FFN_UP,
    R_FFN_DOWN
} role;

typedef struct shape {
    const char *label;
    const char *arch;
    int n_layer, dim, n_head, n_head_kv, ffn, vocab;
    int tied;          /* no output.weight: the embedding is the classifier */
    int n_expert;      /* expert_count metadata; > 1 writes ffn_*_exps and ffn_*_shexp */
    int name_order;    /* list tensors sorted by name (blk.1, blk.10, blk.11, ..., blk.2) */
} shape;

#define MAX_TENSORS 1024

typedef struct test_model {
    lb_model m;
    const shape *s;
    int64_t n;
    role roles[MAX_TENSORS];
    int layers[MAX_TENSORS];
} test_model;

typedef struct pending {
    char name[LB_MAX_TENSOR_NAME];
    role r;
    int layer, n_dims;
    int64_t ne[3];
} pending;

static int compare_pending(const void *a, const void *b) {
    return strcmp(((const pending *)a)->name, ((const pending *)b)->name);
}

static void push(pending *list, int *count, role r, int layer, const char *name, int n_dims,
                 int64_t ne0, int64_t ne1, int64_t ne2) {
    pending *p = &list[(*count)++];
    if (layer >= 0) {
        snprintf(p->name, sizeof p->name, "blk.%d.%s", layer, name);
    } else {
        snprintf(p->name, sizeof p->name, "%s", name);
    }
    p->r = r;
    p->layer = layer;
    p->n_dims = n_dims;
    p->ne[0] = ne0;
    p->ne[1] = ne1;
    p->ne[2] = ne2;
}

/* Tensors named and shaped as a Llama GGUF holds them: ne[0] is the row (input) length. */
static void build_model(test_model *tm, const shape *s) {
    memset(tm, 0, sizeof *tm);
    tm->s = s;
    static pending list[MAX_TENSORS];
    int count = 0;
    const int kv = s->dim * s->n_head_kv / s->n_head;
    push(list, &count, R_EMBD, -1, "token_embd.weight", 2, s->dim, s->vocab, 1);
    for (int l = 0; l < s->n_layer; l++) {
        push(list, &count, R_NORM, l, "attn_norm.weight", 1, s->dim, 1, 1);
        push(list, &count, R_ATTN_Q, l, "attn_q.weight", 2, s->dim, s->dim, 1);
        push(list, &count, R_ATTN_K, l, "attn_k.weight", 2, s->dim, kv, 1);
        push(list, &count, R_ATTN_V, l, "attn_v.weight", 2, s->dim, kv, 1);
        push(list, &count, R_ATTN_OUT, l, "attn_output.weight", 2, s->dim, s->dim, 1);
        push(list, &count, R_NORM, l, "ffn_norm.weight", 1, s->dim, 1, 1);
        if (s->n_expert > 1) {
            push(list, &count, R_FFN_GATE, l, "ffn_gate_exps.weight", 3, s->dim, s->ffn, s->n_expert);
            push(list, &count, R_FFN_DOWN, l, "ffn_down_exps.weight", 3, s->ffn, s->dim, s->n_expert);
            push(list, &count, R_FFN_UP, l, "ffn_up_exps.weight", 3, s->dim, s->ffn, s->n_expert);
            push(list, &count, R_FFN_GATE, l, "ffn_gate_shexp.weight", 2, s->dim, s->ffn, 1);
            push(list, &count, R_FFN_DOWN, l, "ffn_down_shexp.weight", 2, s->ffn, s->dim, 1);
            push(list, &count, R_FFN_UP, l, "ffn_up_shexp.weight", 2, s->dim, s->ffn, 1);
        } else {
            push(list, &count, R_FFN_GATE, l, "ffn_gate.weight", 2, s->dim, s->ffn, 1);
            push(list, &count, R_FFN_DOWN, l, "ffn_down.weight", 2, s->ffn, s->dim, 1);
            push(list, &count, R_FFN_UP, l, "ffn_up.weight", 2, s->dim, s->ffn, 1);
        }
    }
    push(list, &count, R_NORM, -1, "output_norm.weight", 1, s->dim, 1, 1);
    if (!s->tied) push(list, &count, R_OUTPUT, -1, "output.weight", 2, s->dim, s->vocab, 1);
    if (s->name_order) qsort(list, (size_t)count, sizeof *list, compare_pending);

    char key[96];
    lb_model_set_string(&tm->m, "general.architecture", s->arch);
    snprintf(key, sizeof key, "%s.block_count", s->arch);
    lb_model_set_u32(&tm->m, key, (uint32_t)s->n_layer);
    snprintf(key, sizeof key, "%s.attention.head_count", s->arch);
    lb_model_set_u32(&tm->m, key, (uint32_t)s->n_head);
    snprintf(key, sizeof key, "%s.attention.head_count_kv", s->arch);
    lb_model_set_u32(&tm->m, key, (uint32_t)s->n_head_kv);
    if (s->n_expert) {
        snprintf(key, sizeof key, "%s.expert_count", s->arch);
        lb_model_set_u32(&tm->m, key, (uint32_t)s->n_expert);
    }
    for (int i = 0; i < count; i++) {
        lowbit_diag diag;
        const lowbit_status st = lb_model_add_tensor(&tm->m, list[i].name, LOWBIT_TYPE_F32,
                                                     list[i].n_dims, list[i].ne, dummy_bytes, 0, &diag);
        CHECK(st == LOWBIT_OK, "add %s: %s", list[i].name, diag.message);
        tm->roles[i] = list[i].r;
        tm->layers[i] = list[i].layer;
    }
    tm->n = count;
}

static void init_options(lowbit_quantize_options *o, const char *preset) {
    memset(o, 0, sizeof *o);
    o->preset = preset;
    o->output_tensor_type = -1;
    o->token_embedding_type = -1;
}

/* Plans the model; the plan array is static (one plan is looked at at a time). */
static lowbit_tensor_plan *plan_model(const test_model *tm, const lowbit_quantize_options *o,
                                      int has_imatrix, lowbit_status *status, lowbit_diag *diag) {
    static lowbit_tensor_plan plan[MAX_TENSORS];
    memset(diag, 0, sizeof *diag);
    *status = lb_plan_types(&tm->m, o, has_imatrix, plan, diag);
    return plan;
}

static const lowbit_tensor_plan *find_plan(const test_model *tm, const lowbit_tensor_plan *plan,
                                           const char *name) {
    for (int64_t i = 0; i < tm->n; i++) {
        if (strcmp(plan[i].name, name) == 0) return &plan[i];
    }
    return NULL;
}

static lowbit_type type_of(const test_model *tm, const lowbit_tensor_plan *plan, const char *name) {
    const lowbit_tensor_plan *p = find_plan(tm, plan, name);
    CHECK(p != NULL, "no plan entry for %s", name);
    return p ? p->type : (lowbit_type)-1;
}

static lowbit_type layer_type(const test_model *tm, const lowbit_tensor_plan *plan, int layer,
                              const char *what) {
    char name[LB_MAX_TENSOR_NAME];
    snprintf(name, sizeof name, "blk.%d.%s", layer, what);
    return type_of(tm, plan, name);
}

/* ------------------------------------------------------------------------------------------ */
/* The rules, spelled out again                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct expected_preset {
    const char *name;
    lowbit_type base;
    uint32_t file_type;
} expected_preset;

/* Section 3 of the facts, and the base types of section 1. */
static const expected_preset all_presets[] = {
    {"Q2_K", LOWBIT_TYPE_Q2_K, 10},     {"Q3_K_S", LOWBIT_TYPE_Q3_K, 11},
    {"Q3_K_M", LOWBIT_TYPE_Q3_K, 12},   {"Q3_K_L", LOWBIT_TYPE_Q3_K, 13},
    {"Q4_K_S", LOWBIT_TYPE_Q4_K, 14},   {"Q4_K_M", LOWBIT_TYPE_Q4_K, 15},
    {"Q5_K_S", LOWBIT_TYPE_Q5_K, 16},   {"Q5_K_M", LOWBIT_TYPE_Q5_K, 17},
    {"Q6_K", LOWBIT_TYPE_Q6_K, 18},     {"Q8_0", LOWBIT_TYPE_Q8_0, 7},
    {"Q4_0", LOWBIT_TYPE_Q4_0, 2},      {"Q4_1", LOWBIT_TYPE_Q4_1, 3},
    {"Q5_0", LOWBIT_TYPE_Q5_0, 8},      {"Q5_1", LOWBIT_TYPE_Q5_1, 9},
    {"IQ4_XS", LOWBIT_TYPE_IQ4_XS, 30}, {"IQ4_NL", LOWBIT_TYPE_IQ4_NL, 25},
    {"TQ1_0", LOWBIT_TYPE_TQ1_0, 36},   {"TQ2_0", LOWBIT_TYPE_TQ2_0, 37},
    {"F32", LOWBIT_TYPE_F32, 0},        {"F16", LOWBIT_TYPE_F16, 1},
    {"BF16", LOWBIT_TYPE_BF16, 32},
};
#define N_PRESETS ((int)(sizeof all_presets / sizeof all_presets[0]))

static int block_of(lowbit_type t) {
    switch (t) {
    case LOWBIT_TYPE_F32: case LOWBIT_TYPE_F16: case LOWBIT_TYPE_BF16: return 1;
    case LOWBIT_TYPE_Q4_0: case LOWBIT_TYPE_Q4_1: case LOWBIT_TYPE_Q5_0: case LOWBIT_TYPE_Q5_1:
    case LOWBIT_TYPE_Q8_0: case LOWBIT_TYPE_IQ4_NL: return 32;
    default: return 256; /* K, IQ4_XS, TQ */
    }
}

static int is_float(lowbit_type t) { return block_of(t) == 1; }

static int more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* The type the rules choose (before any fallback) for a quantizable tensor. */
static lowbit_type expected_choice(const expected_preset *p, const shape *s, role r, int layer,
                                   int64_t ne0, int has_imatrix) {
#define IS(x) (strcmp(p->name, x) == 0)
    const lowbit_type base = p->base;
    const int gqa = s->n_head / s->n_head_kv, n = s->n_layer;
    const int falcon = strcmp(s->arch, "falcon") == 0, experts8 = s->n_expert == 8;
    const int is70b = strcmp(s->arch, "llama") == 0 && n == 80 && gqa > 1;
    if (r == R_EMBD && s->tied) r = R_OUTPUT;
    switch (r) {
    case R_OUTPUT:
        if (falcon || ne0 % block_of(base) != 0) return LOWBIT_TYPE_Q8_0;
        return base == LOWBIT_TYPE_Q8_0 ? LOWBIT_TYPE_Q8_0 : LOWBIT_TYPE_Q6_K;
    case R_EMBD:
        return IS("TQ1_0") || IS("TQ2_0") ? LOWBIT_TYPE_Q4_K : base;
    case R_ATTN_V: {
        lowbit_type t = base;
        if (IS("Q2_K")) t = gqa >= 4 ? LOWBIT_TYPE_Q4_K : LOWBIT_TYPE_Q3_K;
        if (IS("Q3_K_M")) t = layer < 2 ? LOWBIT_TYPE_Q5_K : LOWBIT_TYPE_Q4_K;
        if (IS("Q3_K_L")) t = LOWBIT_TYPE_Q5_K;
        if (IS("Q4_K_S") && layer < 4) t = LOWBIT_TYPE_Q5_K;
        if ((IS("Q4_K_M") || IS("Q5_K_M")) && more_bits(layer, n)) t = LOWBIT_TYPE_Q6_K;
        if ((IS("IQ4_NL") || IS("IQ4_XS")) && gqa >= 4) t = LOWBIT_TYPE_Q5_K;
        if (is70b && (t == LOWBIT_TYPE_Q3_K || t == LOWBIT_TYPE_Q4_K)) t = LOWBIT_TYPE_Q5_K;
        if (experts8) t = LOWBIT_TYPE_Q8_0;
        return t;
    }
    case R_ATTN_K:
        return experts8 ? LOWBIT_TYPE_Q8_0 : base;
    case R_FFN_DOWN:
        if (IS("Q2_K")) return LOWBIT_TYPE_Q3_K;
        if (IS("Q3_K_M")) {
            if (layer < n / 16) return LOWBIT_TYPE_Q5_K;
            return !falcon || more_bits(layer, n) ? LOWBIT_TYPE_Q4_K : LOWBIT_TYPE_Q3_K;
        }
        if (IS("Q3_K_L")) return falcon ? LOWBIT_TYPE_Q4_K : LOWBIT_TYPE_Q5_K;
        if (IS("Q4_K_S")) return !falcon && layer < n / 8 ? LOWBIT_TYPE_Q5_K : base;
        if (IS("Q4_K_M")) {
            if (!falcon) return more_bits(layer, n) ? LOWBIT_TYPE_Q6_K : base;
            if (layer < n / 16) return LOWBIT_TYPE_Q6_K;
            return more_bits(layer, n) ? LOWBIT_TYPE_Q5_K : base;
        }
        if (IS("Q5_K_M")) return more_bits(layer, n) ? LOWBIT_TYPE_Q6_K : base;
        if (IS("IQ4_NL") || IS("IQ4_XS")) return layer < n / 8 && !has_imatrix ? LOWBIT_TYPE_Q5_K : base;
        if (IS("Q4_0")) return layer < n / 8 && has_imatrix ? LOWBIT_TYPE_Q4_1 : base;
        if (IS("Q5_0")) return layer < n / 8 && has_imatrix ? LOWBIT_TYPE_Q5_1 : base;
        return base;
    case R_ATTN_OUT:
        if (falcon) return IS("Q3_K_L") ? LOWBIT_TYPE_Q4_K : base;
        if (experts8) {
            const int lifted = IS("Q2_K") || IS("Q3_K_S") || IS("Q3_K_M") || IS("Q4_K_S") ||
                               IS("Q4_K_M") || IS("IQ4_NL") || IS("IQ4_XS");
            return lifted ? LOWBIT_TYPE_Q5_K : base;
        }
        if (IS("Q2_K")) return LOWBIT_TYPE_Q3_K;
        if (IS("Q3_K_M")) return LOWBIT_TYPE_Q4_K;
        if (IS("Q3_K_L")) return LOWBIT_TYPE_Q5_K;
        return base;
    default:
        return base;
    }
#undef IS
}

static lowbit_type expected_fallback(lowbit_type t, int64_t ne0) {
    while (ne0 % block_of(t) != 0) {
        switch (t) {
        case LOWBIT_TYPE_Q2_K: case LOWBIT_TYPE_Q3_K: case LOWBIT_TYPE_TQ1_0: case LOWBIT_TYPE_TQ2_0:
            t = LOWBIT_TYPE_Q4_0; break;
        case LOWBIT_TYPE_Q4_K: t = LOWBIT_TYPE_Q5_0; break;
        case LOWBIT_TYPE_Q5_K: t = LOWBIT_TYPE_Q5_1; break;
        case LOWBIT_TYPE_Q6_K: t = LOWBIT_TYPE_Q8_0; break;
        case LOWBIT_TYPE_IQ4_XS: t = LOWBIT_TYPE_IQ4_NL; break;
        default: t = LOWBIT_TYPE_F16; break;
        }
    }
    return t;
}

/* Bytes of one row, from the block byte counts of the formats. */
static uint64_t expected_row_bytes(lowbit_type t, int64_t ne0) {
    int block_bytes = 0;
    switch (t) {
    case LOWBIT_TYPE_F32: block_bytes = 4; break;
    case LOWBIT_TYPE_F16: case LOWBIT_TYPE_BF16: block_bytes = 2; break;
    case LOWBIT_TYPE_Q4_0: case LOWBIT_TYPE_IQ4_NL: block_bytes = 18; break;
    case LOWBIT_TYPE_Q4_1: block_bytes = 20; break;
    case LOWBIT_TYPE_Q5_0: block_bytes = 22; break;
    case LOWBIT_TYPE_Q5_1: block_bytes = 24; break;
    case LOWBIT_TYPE_Q8_0: block_bytes = 34; break;
    case LOWBIT_TYPE_Q2_K: block_bytes = 84; break;
    case LOWBIT_TYPE_Q3_K: block_bytes = 110; break;
    case LOWBIT_TYPE_Q4_K: block_bytes = 144; break;
    case LOWBIT_TYPE_Q5_K: block_bytes = 176; break;
    case LOWBIT_TYPE_Q6_K: block_bytes = 210; break;
    case LOWBIT_TYPE_IQ4_XS: block_bytes = 136; break;
    case LOWBIT_TYPE_TQ1_0: block_bytes = 54; break;
    case LOWBIT_TYPE_TQ2_0: block_bytes = 66; break;
    default: break;
    }
    return (uint64_t)(ne0 / block_of(t)) * (uint64_t)block_bytes;
}

/* Checks every tensor of the plan against the rules above. */
static void check_whole_plan(const test_model *tm, const expected_preset *p, int has_imatrix,
                             int pure, const lowbit_tensor_plan *plan) {
    const shape *s = tm->s;
    for (int64_t i = 0; i < tm->n; i++) {
        const lb_tensor *t = &tm->m.tensors[i];
        const lowbit_tensor_plan *e = &plan[i];
        CHECK(strcmp(e->name, t->name) == 0, "%s: plan %lld is %s, not %s (model order)", s->label,
              (long long)i, e->name, t->name);
        lowbit_type chosen, want;
        if (tm->roles[i] == R_NORM) {
            chosen = want = LOWBIT_TYPE_F32;
        } else if (is_float(p->base)) {
            chosen = want = p->base;
        } else {
            chosen = pure ? p->base
                          : expected_choice(p, s, tm->roles[i], tm->layers[i], t->ne[0], has_imatrix);
            want = expected_fallback(chosen, t->ne[0]);
        }
        CHECK(e->type == want, "%s %s%s%s: %s got type %d, want %d", s->label, p->name,
              pure ? " pure" : "", has_imatrix ? " imatrix" : "", t->name, (int)e->type, (int)want);
        CHECK(e->fell_back == (want != chosen), "%s %s: %s fell_back %d", s->label, p->name,
              t->name, e->fell_back);
        CHECK(e->source_type == LOWBIT_TYPE_F32 && e->n_dims == t->n_dims && e->ne[0] == t->ne[0] &&
                  e->ne[1] == t->ne[1] && e->ne[2] == t->ne[2],
              "%s: %s shape or source copied wrong", s->label, t->name);
        const uint64_t rows = (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
        CHECK(e->n_bytes == expected_row_bytes(want, t->ne[0]) * rows, "%s %s: %s n_bytes %llu",
              s->label, p->name, t->name, (unsigned long long)e->n_bytes);
        if (want != chosen) {
            char prefix[96];
            snprintf(prefix, sizeof prefix, "%s does not fit row length %lld (block %d); fell back to",
                     lowbit_type_info(chosen)->name, (long long)t->ne[0], block_of(chosen));
            CHECK(strncmp(e->note, prefix, strlen(prefix)) == 0, "%s: %s note '%s'", s->label,
                  t->name, e->note);
        } else if (tm->roles[i] != R_NORM) {
            CHECK(e->note[0] == '\0', "%s: %s has note '%s'", s->label, t->name, e->note);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Shapes                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static const shape shapes[] = {
    /* every row a multiple of 256: no fallbacks */
    {"llama8-gqa1", "llama", 8, 256, 8, 8, 512, 1024, 0, 0, 0},
    {"llama32-gqa4", "llama", 32, 256, 32, 8, 768, 512, 0, 0, 0},
    /* the same listed in name order (blk.1, blk.10, ...): counters must follow layer numbers */
    {"llama32-gqa4-by-name", "llama", 32, 256, 32, 8, 768, 512, 0, 0, 1},
    /* rows of 64: 256-blocks fall back */
    {"llama8-dim64", "llama", 8, 64, 4, 1, 128, 256, 0, 0, 0},
    /* stories260K.bin: dim 64, 5 layers, 8/4 heads, FFN 172, vocab 512, shared classifier */
    {"stories260K", "llama", 5, 64, 8, 4, 172, 512, 1, 0, 0},
    /* lit3m.bin: dim 256, 4 layers, 8/4 heads, FFN 768, vocab 2048, shared classifier */
    {"lit3m", "llama", 4, 256, 8, 4, 768, 2048, 1, 0, 0},
    {"falcon16", "falcon", 16, 256, 8, 1, 512, 512, 0, 0, 0},
    {"moe8", "llama", 8, 256, 8, 2, 256, 512, 0, 8, 0},
    {"llama80-gqa8", "llama", 80, 256, 16, 2, 256, 256, 0, 0, 0},
};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

/* ------------------------------------------------------------------------------------------ */
/* Tests                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static void test_preset_table(void) {
    CHECK(lb_preset_count() == N_PRESETS, "preset count %d", lb_preset_count());
    for (int i = 0; i < N_PRESETS; i++) {
        const lb_preset *p = lb_preset_find(all_presets[i].name);
        CHECK(p && strcmp(p->name, all_presets[i].name) == 0, "find %s", all_presets[i].name);
        if (!p) continue;
        CHECK(p->base_type == all_presets[i].base, "%s base %d", p->name, (int)p->base_type);
        CHECK(p->file_type == all_presets[i].file_type, "%s file_type %u", p->name, p->file_type);
        CHECK(lb_preset_at(i) == p, "preset %d is %s", i, p->name);
    }
    CHECK(lb_preset_at(-1) == NULL && lb_preset_at(N_PRESETS) == NULL, "out of range");
    CHECK(lb_preset_find("q4_k_m") == lb_preset_find("Q4_K_M"), "case-insensitive");
    CHECK(lb_preset_find("Q3_K") == lb_preset_find("Q3_K_M"), "alias Q3_K");
    CHECK(lb_preset_find("q4_k") == lb_preset_find("Q4_K_M"), "alias Q4_K");
    CHECK(lb_preset_find("Q5_K") == lb_preset_find("Q5_K_M"), "alias Q5_K");
    CHECK(lb_preset_find("Q4_K_X") == NULL && lb_preset_find("") == NULL && lb_preset_find(NULL) == NULL,
          "unknown names");
    CHECK(lb_preset_find("IQ2_XXS") == NULL && lb_preset_find("Q2_K_S") == NULL, "unsupported");
    CHECK(lb_preset_find("Q4_K_M ") == NULL && lb_preset_find("Q4_K_MM") == NULL, "near misses");
}

/* Every shape x every preset (and alias) x imatrix x pure. */
static void test_every_tensor_every_preset(void) {
    static test_model tm;
    static const char *const aliases[][2] = {{"Q3_K", "Q3_K_M"}, {"Q4_K", "Q4_K_M"}, {"Q5_K", "Q5_K_M"}};
    for (int s = 0; s < N_SHAPES; s++) {
        build_model(&tm, &shapes[s]);
        for (int p = 0; p < N_PRESETS + 3; p++) {
            const expected_preset *ep = &all_presets[p < N_PRESETS ? p : 0];
            const char *asked = ep->name;
            if (p >= N_PRESETS) {
                asked = aliases[p - N_PRESETS][0];
                for (int k = 0; k < N_PRESETS; k++) {
                    if (strcmp(all_presets[k].name, aliases[p - N_PRESETS][1]) == 0) ep = &all_presets[k];
                }
            }
            for (int mode = 0; mode < 4; mode++) {
                const int has_imatrix = mode & 1, pure = mode >> 1;
                lowbit_quantize_options o;
                init_options(&o, asked);
                o.pure = pure;
                lowbit_status st;
                lowbit_diag diag;
                const lowbit_tensor_plan *plan = plan_model(&tm, &o, has_imatrix, &st, &diag);
                CHECK(st == LOWBIT_OK, "%s %s: %s", shapes[s].label, asked, diag.message);
                if (st == LOWBIT_OK) check_whole_plan(&tm, ep, has_imatrix, pure, plan);
            }
        }
        lb_model_free(&tm.m);
    }
}

/* The lists the brief and the facts give literally. */
static void check_layers(const test_model *tm, const lowbit_tensor_plan *plan, const char *what,
                         const int *special, int n_special, lowbit_type special_type,
                         lowbit_type other_type) {
    for (int l = 0; l < tm->s->n_layer; l++) {
        int is_special = 0;
        for (int k = 0; k < n_special; k++) is_special |= special[k] == l;
        const lowbit_type got = layer_type(tm, plan, l, what);
        CHECK(got == (is_special ? special_type : other_type), "%s layer %d %s: type %d",
              tm->s->label, l, what, (int)got);
    }
}

static void test_literal_layer_lists(void) {
    static test_model tm;
    lowbit_quantize_options o;
    lowbit_status st;
    lowbit_diag diag;

    /* Q4_K_M, 32 layers: Q6_K in 0-3, 6, 9, ..., 27, 28-31 (16 layers), in either file order */
    static const int more32[] = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};
    for (int by_name = 0; by_name < 2; by_name++) {
        build_model(&tm, &shapes[1 + by_name]);
        init_options(&o, "Q4_K_M");
        const lowbit_tensor_plan *plan = plan_model(&tm, &o, 0, &st, &diag);
        CHECK(st == LOWBIT_OK, "%s", diag.message);
        check_layers(&tm, plan, "attn_v.weight", more32, 16, LOWBIT_TYPE_Q6_K, LOWBIT_TYPE_Q4_K);
        check_layers(&tm, plan, "ffn_down.weight", more32, 16, LOWBIT_TYPE_Q6_K, LOWBIT_TYPE_Q4_K);
        check_layers(&tm, plan, "attn_q.weight", NULL, 0, 0, LOWBIT_TYPE_Q4_K);
        check_layers(&tm, plan, "ffn_up.weight", NULL, 0, 0, LOWBIT_TYPE_Q4_K);
        CHECK(type_of(&tm, plan, "output.weight") == LOWBIT_TYPE_Q6_K, "output");
        CHECK(type_of(&tm, plan, "token_embd.weight") == LOWBIT_TYPE_Q4_K, "token_embd");
        CHECK(type_of(&tm, plan, "output_norm.weight") == LOWBIT_TYPE_F32, "norm");

        /* IQ4_NL: ffn_down Q5_K in layers 0-3 without an imatrix only; attn_v Q5_K (GQA 4) */
        static const int first4[] = {0, 1, 2, 3};
        init_options(&o, "IQ4_NL");
        plan = plan_model(&tm, &o, 0, &st, &diag);
        check_layers(&tm, plan, "ffn_down.weight", first4, 4, LOWBIT_TYPE_Q5_K, LOWBIT_TYPE_IQ4_NL);
        check_layers(&tm, plan, "attn_v.weight", NULL, 0, 0, LOWBIT_TYPE_Q5_K);
        plan = plan_model(&tm, &o, 1, &st, &diag);
        check_layers(&tm, plan, "ffn_down.weight", NULL, 0, 0, LOWBIT_TYPE_IQ4_NL);
        /* Q4_0: ffn_down Q4_1 in layers 0-3 with an imatrix only */
        init_options(&o, "Q4_0");
        plan = plan_model(&tm, &o, 1, &st, &diag);
        check_layers(&tm, plan, "ffn_down.weight", first4, 4, LOWBIT_TYPE_Q4_1, LOWBIT_TYPE_Q4_0);
        plan = plan_model(&tm, &o, 0, &st, &diag);
        check_layers(&tm, plan, "ffn_down.weight", NULL, 0, 0, LOWBIT_TYPE_Q4_0);
        /* Q3_K_M: attn_v Q5_K in layers 0-1, then Q4_K; ffn_down Q5_K in layers 0-1 (n/16) */
        static const int first2[] = {0, 1};
        init_options(&o, "Q3_K_M");
        plan = plan_model(&tm, &o, 0, &st, &diag);
        check_layers(&tm, plan, "attn_v.weight", first2, 2, LOWBIT_TYPE_Q5_K, LOWBIT_TYPE_Q4_K);
        check_layers(&tm, plan, "ffn_down.weight", first2, 2, LOWBIT_TYPE_Q5_K, LOWBIT_TYPE_Q4_K);
        check_layers(&tm, plan, "attn_output.weight", NULL, 0, 0, LOWBIT_TYPE_Q4_K);
        check_layers(&tm, plan, "attn_k.weight", NULL, 0, 0, LOWBIT_TYPE_Q3_K);
        lb_model_free(&tm.m);
    }

    /* 8 layers: use_more_bits picks 0, 3, 6, 7 */
    static const int more8[] = {0, 3, 6, 7};
    build_model(&tm, &shapes[0]);
    init_options(&o, "Q5_K_M");
    const lowbit_tensor_plan *plan = plan_model(&tm, &o, 0, &st, &diag);
    check_layers(&tm, plan, "attn_v.weight", more8, 4, LOWBIT_TYPE_Q6_K, LOWBIT_TYPE_Q5_K);
    check_layers(&tm, plan, "ffn_down.weight", more8, 4, LOWBIT_TYPE_Q6_K, LOWBIT_TYPE_Q5_K);
    /* Q2_K with GQA 1: attn_v Q3_K; ffn_down and attn_output Q3_K; the rest Q2_K */
    init_options(&o, "Q2_K");
    plan = plan_model(&tm, &o, 0, &st, &diag);
    check_layers(&tm, plan, "attn_v.weight", NULL, 0, 0, LOWBIT_TYPE_Q3_K);
    check_layers(&tm, plan, "attn_output.weight", NULL, 0, 0, LOWBIT_TYPE_Q3_K);
    check_layers(&tm, plan, "ffn_gate.weight", NULL, 0, 0, LOWBIT_TYPE_Q2_K);
    CHECK(type_of(&tm, plan, "output.weight") == LOWBIT_TYPE_Q6_K, "Q2_K output");
    lb_model_free(&tm.m);
}

static void test_sample_model_shapes(void) {
    static test_model tm;
    lowbit_quantize_options o;
    lowbit_status st;
    lowbit_diag diag;

    /* stories260K, Q4_K_M: more bits in layers 2 and 4 of 5 */
    build_model(&tm, &shapes[4]);
    init_options(&o, "Q4_K_M");
    const lowbit_tensor_plan *plan = plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_OK, "%s", diag.message);
    static const int more5[] = {2, 4};
    check_layers(&tm, plan, "attn_v.weight", more5, 2, LOWBIT_TYPE_Q8_0, LOWBIT_TYPE_Q5_0);
    check_layers(&tm, plan, "ffn_down.weight", NULL, 0, 0, LOWBIT_TYPE_F16);
    check_layers(&tm, plan, "ffn_gate.weight", NULL, 0, 0, LOWBIT_TYPE_Q5_0);
    /* tied: the embedding follows the output rule, and Q4_K's block does not divide 64: Q8_0 */
    const lowbit_tensor_plan *e = find_plan(&tm, plan, "token_embd.weight");
    CHECK(e && e->type == LOWBIT_TYPE_Q8_0 && !e->fell_back && e->n_bytes == 512u * 2 * 34,
          "stories token_embd");
    e = find_plan(&tm, plan, "blk.0.attn_q.weight");
    CHECK(e && e->fell_back && strcmp(e->note, "q4_K does not fit row length 64 (block 256); fell back to q5_0") == 0,
          "note '%s'", e ? e->note : "");
    CHECK(e && e->n_bytes == 64u * 2 * 22, "attn_q bytes");
    e = find_plan(&tm, plan, "blk.2.ffn_down.weight");
    CHECK(e && e->fell_back &&
              strcmp(e->note, "q6_K does not fit row length 172 (block 256); fell back to f16 (q8_0 does not fit either)") == 0,
          "note '%s'", e ? e->note : "");
    CHECK(e && e->n_bytes == 64u * 172 * 2, "ffn_down bytes");
    e = find_plan(&tm, plan, "blk.1.ffn_down.weight");
    CHECK(e && strcmp(e->note, "q4_K does not fit row length 172 (block 256); fell back to f16 (q5_0 does not fit either)") == 0,
          "note '%s'", e ? e->note : "");
    e = find_plan(&tm, plan, "blk.3.attn_norm.weight");
    CHECK(e && e->type == LOWBIT_TYPE_F32 && e->n_bytes == 256 && !e->fell_back, "norm");

    init_options(&o, "Q8_0");
    plan = plan_model(&tm, &o, 0, &st, &diag);
    e = find_plan(&tm, plan, "blk.0.ffn_down.weight");
    CHECK(e && e->type == LOWBIT_TYPE_F16 &&
              strcmp(e->note, "q8_0 does not fit row length 172 (block 32); fell back to f16") == 0,
          "Q8_0 ffn_down note '%s'", e ? e->note : "");
    CHECK(type_of(&tm, plan, "token_embd.weight") == LOWBIT_TYPE_Q8_0, "Q8_0 token_embd");
    check_layers(&tm, plan, "attn_k.weight", NULL, 0, 0, LOWBIT_TYPE_Q8_0);

    init_options(&o, "Q2_K");
    plan = plan_model(&tm, &o, 0, &st, &diag);
    check_layers(&tm, plan, "attn_v.weight", NULL, 0, 0, LOWBIT_TYPE_Q4_0); /* Q3_K, GQA 2 */
    check_layers(&tm, plan, "attn_q.weight", NULL, 0, 0, LOWBIT_TYPE_Q4_0);
    check_layers(&tm, plan, "ffn_down.weight", NULL, 0, 0, LOWBIT_TYPE_F16);
    e = find_plan(&tm, plan, "blk.0.attn_output.weight");
    CHECK(e && strcmp(e->note, "q3_K does not fit row length 64 (block 256); fell back to q4_0") == 0,
          "Q2_K attn_output note '%s'", e ? e->note : "");

    init_options(&o, "IQ4_XS");
    plan = plan_model(&tm, &o, 0, &st, &diag);
    check_layers(&tm, plan, "attn_q.weight", NULL, 0, 0, LOWBIT_TYPE_IQ4_NL);
    check_layers(&tm, plan, "ffn_down.weight", NULL, 0, 0, LOWBIT_TYPE_F16);
    lb_model_free(&tm.m);

    /* lit3m: every row fits; tied embedding gets the output's Q6_K; more bits in layers 2, 3 */
    build_model(&tm, &shapes[5]);
    static const int more4[] = {2, 3};
    init_options(&o, "Q4_K_M");
    plan = plan_model(&tm, &o, 0, &st, &diag);
    check_layers(&tm, plan, "attn_v.weight", more4, 2, LOWBIT_TYPE_Q6_K, LOWBIT_TYPE_Q4_K);
    check_layers(&tm, plan, "ffn_down.weight", more4, 2, LOWBIT_TYPE_Q6_K, LOWBIT_TYPE_Q4_K);
    CHECK(type_of(&tm, plan, "token_embd.weight") == LOWBIT_TYPE_Q6_K, "lit3m embd");
    for (int64_t i = 0; i < tm.n; i++) CHECK(!plan[i].fell_back, "lit3m %s fell back", plan[i].name);
    init_options(&o, "TQ1_0");
    plan = plan_model(&tm, &o, 0, &st, &diag);
    CHECK(type_of(&tm, plan, "token_embd.weight") == LOWBIT_TYPE_Q6_K, "TQ1_0 tied embd is output");
    check_layers(&tm, plan, "ffn_down.weight", NULL, 0, 0, LOWBIT_TYPE_TQ1_0);
    init_options(&o, "BF16");
    plan = plan_model(&tm, &o, 0, &st, &diag);
    CHECK(type_of(&tm, plan, "token_embd.weight") == LOWBIT_TYPE_BF16, "BF16 embd");
    CHECK(type_of(&tm, plan, "output_norm.weight") == LOWBIT_TYPE_F32, "BF16 norm");
    lb_model_free(&tm.m);
}

static void test_special_models(void) {
    static test_model tm;
    lowbit_quantize_options o;
    lowbit_status st;
    lowbit_diag diag;

    /* Falcon: output Q8_0; Q3_K_L: attn_output and ffn_down Q4_K */
    build_model(&tm, &shapes[6]);
    init_options(&o, "Q3_K_L");
    const lowbit_tensor_plan *plan = plan_model(&tm, &o, 0, &st, &diag);
    CHECK(type_of(&tm, plan, "output.weight") == LOWBIT_TYPE_Q8_0, "falcon output");
    check_layers(&tm, plan, "attn_output.weight", NULL, 0, 0, LOWBIT_TYPE_Q4_K);
    check_layers(&tm, plan, "ffn_down.weight", NULL, 0, 0, LOWBIT_TYPE_Q4_K);
    check_layers(&tm, plan, "attn_v.weight", NULL, 0, 0, LOWBIT_TYPE_Q5_K);
    /* Falcon Q4_K_M, 16 layers: ffn_down Q6_K in layer 0, Q5_K where use_more_bits (1, 4, 7,
       10, 13, 14, 15), else Q4_K */
    init_options(&o, "Q4_K_M");
    plan = plan_model(&tm, &o, 0, &st, &diag);
    static const int falcon_q5[] = {1, 4, 7, 10, 13, 14, 15};
    CHECK(layer_type(&tm, plan, 0, "ffn_down.weight") == LOWBIT_TYPE_Q6_K, "falcon layer 0");
    for (int l = 1; l < 16; l++) {
        int q5 = 0;
        for (int k = 0; k < 7; k++) q5 |= falcon_q5[k] == l;
        CHECK(layer_type(&tm, plan, l, "ffn_down.weight") == (q5 ? LOWBIT_TYPE_Q5_K : LOWBIT_TYPE_Q4_K),
              "falcon ffn_down layer %d", l);
    }
    lb_model_free(&tm.m);

    /* 8 experts: attn_v and attn_k Q8_0, attn_output Q5_K; ffn_down by layer from the name
       (two ffn_down tensors per layer) */
    build_model(&tm, &shapes[7]);
    init_options(&o, "Q4_K_M");
    plan = plan_model(&tm, &o, 0, &st, &diag);
    check_layers(&tm, plan, "attn_v.weight", NULL, 0, 0, LOWBIT_TYPE_Q8_0);
    check_layers(&tm, plan, "attn_k.weight", NULL, 0, 0, LOWBIT_TYPE_Q8_0);
    check_layers(&tm, plan, "attn_output.weight", NULL, 0, 0, LOWBIT_TYPE_Q5_K);
    static const int more8[] = {0, 3, 6, 7};
    check_layers(&tm, plan, "ffn_down_exps.weight", more8, 4, LOWBIT_TYPE_Q6_K, LOWBIT_TYPE_Q4_K);
    check_layers(&tm, plan, "ffn_down_shexp.weight", more8, 4, LOWBIT_TYPE_Q6_K, LOWBIT_TYPE_Q4_K);
    const lowbit_tensor_plan *e = find_plan(&tm, plan, "blk.0.ffn_up_exps.weight");
    CHECK(e && e->n_dims == 3 && e->n_bytes == 256u * 8 * 144, "3-D expert bytes");
    lb_model_free(&tm.m);

    /* 80-layer Llama with GQA: the 70B lift of attn_v from Q4_K to Q5_K */
    build_model(&tm, &shapes[8]);
    plan = plan_model(&tm, &o, 0, &st, &diag);
    CHECK(layer_type(&tm, plan, 10, "attn_v.weight") == LOWBIT_TYPE_Q5_K, "70B lift");
    CHECK(layer_type(&tm, plan, 12, "attn_v.weight") == LOWBIT_TYPE_Q6_K, "70B more bits");
    CHECK(layer_type(&tm, plan, 10, "ffn_down.weight") == LOWBIT_TYPE_Q4_K, "70B ffn_down");
    lb_model_free(&tm.m);
}

static void test_pure(void) {
    static test_model tm;
    lowbit_quantize_options o;
    lowbit_status st;
    lowbit_diag diag;
    build_model(&tm, &shapes[1]);
    init_options(&o, "Q4_K_M");
    o.pure = 1;
    const lowbit_tensor_plan *plan = plan_model(&tm, &o, 0, &st, &diag);
    for (int64_t i = 0; i < tm.n; i++) {
        const lowbit_type want = tm.roles[i] == R_NORM ? LOWBIT_TYPE_F32 : LOWBIT_TYPE_Q4_K;
        CHECK(plan[i].type == want, "pure %s: %d", plan[i].name, (int)plan[i].type);
    }
    /* overrides still apply under --pure */
    lowbit_tensor_type_override ov[] = {{"output", LOWBIT_TYPE_Q8_0}};
    o.overrides = ov;
    o.n_overrides = 1;
    plan = plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_OK && type_of(&tm, plan, "output.weight") == LOWBIT_TYPE_Q8_0, "pure + override");
    CHECK(layer_type(&tm, plan, 0, "attn_output.weight") == LOWBIT_TYPE_Q8_0, "regex search, not full match");
    lb_model_free(&tm.m);
}

static void test_overrides(void) {
    static test_model tm;
    lowbit_quantize_options o;
    lowbit_status st;
    lowbit_diag diag;
    build_model(&tm, &shapes[1]);
    init_options(&o, "Q4_K_M");

    /* first match wins: blk.1.attn_v is Q8_0 (pattern 0), blk.1.ffn_down Q5_0 (pattern 1) */
    lowbit_tensor_type_override first[] = {
        {"attn_v", LOWBIT_TYPE_Q8_0}, {"^blk\\.1\\.", LOWBIT_TYPE_Q5_0}, {"ffn_(down|up)", LOWBIT_TYPE_IQ4_XS}};
    o.overrides = first;
    o.n_overrides = 3;
    const lowbit_tensor_plan *plan = plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_OK, "%s", diag.message);
    check_layers(&tm, plan, "attn_v.weight", NULL, 0, 0, LOWBIT_TYPE_Q8_0);
    CHECK(layer_type(&tm, plan, 1, "ffn_down.weight") == LOWBIT_TYPE_Q5_0, "blk.1 ffn_down");
    CHECK(layer_type(&tm, plan, 1, "attn_q.weight") == LOWBIT_TYPE_Q5_0, "blk.1 attn_q");
    CHECK(layer_type(&tm, plan, 10, "ffn_down.weight") == LOWBIT_TYPE_IQ4_XS, "blk.10 not blk.1");
    CHECK(layer_type(&tm, plan, 10, "ffn_up.weight") == LOWBIT_TYPE_IQ4_XS, "alternation");
    CHECK(layer_type(&tm, plan, 10, "ffn_gate.weight") == LOWBIT_TYPE_Q4_K, "gate untouched");
    CHECK(layer_type(&tm, plan, 1, "attn_norm.weight") == LOWBIT_TYPE_F32, "norms are never overridden");

    /* an override does not shift the layer counter of the rules */
    lowbit_tensor_type_override one[] = {{"blk\\.5\\.attn_v", LOWBIT_TYPE_Q8_0}};
    o.overrides = one;
    o.n_overrides = 1;
    plan = plan_model(&tm, &o, 0, &st, &diag);
    CHECK(layer_type(&tm, plan, 5, "attn_v.weight") == LOWBIT_TYPE_Q8_0, "blk.5");
    CHECK(layer_type(&tm, plan, 6, "attn_v.weight") == LOWBIT_TYPE_Q6_K, "blk.6");
    CHECK(layer_type(&tm, plan, 7, "attn_v.weight") == LOWBIT_TYPE_Q4_K, "blk.7");

    /* errors: bad regex, unmatched, matching only a norm, unwritable type, bad type id */
    static const struct { const char *pattern; int type; lowbit_status status; } bad[] = {
        {"ffn_(", LOWBIT_TYPE_Q8_0, LOWBIT_ERR_INVALID_ARGUMENT},
        {"no_such_tensor", LOWBIT_TYPE_Q8_0, LOWBIT_ERR_INVALID_ARGUMENT},
        {"attn_norm", LOWBIT_TYPE_Q8_0, LOWBIT_ERR_INVALID_ARGUMENT},
        {"attn_q", LOWBIT_TYPE_IQ2_XXS, LOWBIT_ERR_UNSUPPORTED},
        {"attn_q", LOWBIT_TYPE_Q8_K, LOWBIT_ERR_UNSUPPORTED},
        {"attn_q", 4, LOWBIT_ERR_INVALID_ARGUMENT},
        {"attn_q", 999, LOWBIT_ERR_INVALID_ARGUMENT},
    };
    for (int b = 0; b < (int)(sizeof bad / sizeof bad[0]); b++) {
        lowbit_tensor_type_override pair[] = {{"attn_k", LOWBIT_TYPE_Q8_0},
                                              {bad[b].pattern, (lowbit_type)bad[b].type}};
        o.overrides = pair;
        o.n_overrides = 2;
        plan_model(&tm, &o, 0, &st, &diag);
        CHECK(st == bad[b].status && diag.status == st, "override '%s' type %d: status %d",
              bad[b].pattern, bad[b].type, (int)st);
        CHECK(strstr(diag.message, bad[b].pattern) != NULL, "message names the pattern: %s", diag.message);
    }
    lowbit_tensor_type_override no_pattern[] = {{NULL, LOWBIT_TYPE_Q8_0}};
    o.overrides = no_pattern;
    o.n_overrides = 1;
    plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT, "NULL pattern");
    o.overrides = NULL;
    plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT, "NULL override list");

    /* overrides with a plain conversion are refused, not ignored */
    init_options(&o, "F16");
    o.overrides = one;
    o.n_overrides = 1;
    plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT && strstr(diag.message, "F16"), "%s", diag.message);
    lb_model_free(&tm.m);

    /* an override goes through the fallback chain too */
    build_model(&tm, &shapes[4]);
    init_options(&o, "Q8_0");
    lowbit_tensor_type_override small[] = {{"ffn_down", LOWBIT_TYPE_Q4_0}, {"ffn_up", LOWBIT_TYPE_Q6_K}};
    o.overrides = small;
    o.n_overrides = 2;
    plan = plan_model(&tm, &o, 0, &st, &diag);
    const lowbit_tensor_plan *e = find_plan(&tm, plan, "blk.0.ffn_down.weight");
    CHECK(e && e->type == LOWBIT_TYPE_F16 && e->fell_back &&
              strcmp(e->note, "q4_0 does not fit row length 172 (block 32); fell back to f16") == 0,
          "override fallback '%s'", e ? e->note : "");
    check_layers(&tm, plan, "ffn_up.weight", NULL, 0, 0, LOWBIT_TYPE_Q8_0);
    lb_model_free(&tm.m);
}

static void test_output_and_embedding_types(void) {
    static test_model tm;
    lowbit_quantize_options o;
    lowbit_status st;
    lowbit_diag diag;

    build_model(&tm, &shapes[1]);
    init_options(&o, "Q4_K_M");
    o.output_tensor_type = LOWBIT_TYPE_Q8_0;
    o.token_embedding_type = LOWBIT_TYPE_Q5_K;
    /* the explicit types win over overrides too */
    lowbit_tensor_type_override all[] = {{"weight", LOWBIT_TYPE_Q5_0}};
    o.overrides = all;
    o.n_overrides = 1;
    const lowbit_tensor_plan *plan = plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_OK, "%s", diag.message);
    CHECK(type_of(&tm, plan, "output.weight") == LOWBIT_TYPE_Q8_0, "output type");
    CHECK(type_of(&tm, plan, "token_embd.weight") == LOWBIT_TYPE_Q5_K, "embedding type");
    CHECK(layer_type(&tm, plan, 3, "attn_q.weight") == LOWBIT_TYPE_Q5_0, "override elsewhere");
    /* with a plain conversion as well */
    init_options(&o, "F16");
    o.output_tensor_type = LOWBIT_TYPE_Q6_K;
    plan = plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_OK && type_of(&tm, plan, "output.weight") == LOWBIT_TYPE_Q6_K, "F16 + output type");
    CHECK(type_of(&tm, plan, "token_embd.weight") == LOWBIT_TYPE_F16, "F16 embd");
    /* bad type ids and unwritable types */
    init_options(&o, "Q4_K_M");
    o.output_tensor_type = 5;
    plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT && strstr(diag.message, "output"), "%s", diag.message);
    o.output_tensor_type = -1;
    o.token_embedding_type = LOWBIT_TYPE_IQ2_XS;
    plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_ERR_UNSUPPORTED && strstr(diag.message, "iq2_xs"), "%s", diag.message);
    lb_model_free(&tm.m);

    /* tied (stories260K shape, rows of 64) */
    build_model(&tm, &shapes[4]);
    init_options(&o, "Q4_K_M");
    o.output_tensor_type = LOWBIT_TYPE_Q4_0;
    plan = plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_OK && type_of(&tm, plan, "token_embd.weight") == LOWBIT_TYPE_Q4_0,
          "tied: output type applies to the embedding");
    o.token_embedding_type = LOWBIT_TYPE_Q5_1;
    plan = plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_OK && type_of(&tm, plan, "token_embd.weight") == LOWBIT_TYPE_Q5_1,
          "tied: embedding type first");
    /* a requested type that cannot hold the rows is an error, not a silent change */
    o.token_embedding_type = LOWBIT_TYPE_Q4_K;
    plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_ERR_SHAPE && strstr(diag.message, "token_embd.weight") &&
              strstr(diag.message, "64"), "%s", diag.message);
    o.token_embedding_type = -1;
    o.output_tensor_type = LOWBIT_TYPE_TQ2_0;
    plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_ERR_SHAPE, "tied output type misfit");
    lb_model_free(&tm.m);
}

static void test_kept_tensors(void) {
    lb_model m;
    memset(&m, 0, sizeof m);
    lowbit_diag diag;
    lb_model_set_string(&m, "general.architecture", "llama");
    const int64_t vec[1] = {256}, mat[2] = {256, 64}, pos[2] = {64, 16};
    lb_model_add_tensor(&m, "blk.0.attn_norm.weight", LOWBIT_TYPE_F16, 1, vec, dummy_bytes, 0, &diag);
    lb_model_add_tensor(&m, "rope_freqs.weight", LOWBIT_TYPE_BF16, 1, vec, dummy_bytes, 0, &diag);
    lb_model_add_tensor(&m, "position_embd.weight", LOWBIT_TYPE_F16, 2, pos, dummy_bytes, 0, &diag);
    lb_model_add_tensor(&m, "blk.0.attn_q.scale", LOWBIT_TYPE_F32, 2, mat, dummy_bytes, 0, &diag);
    lb_model_add_tensor(&m, "blk.0.ffn_gate_inp.weight", LOWBIT_TYPE_F32, 2, mat, dummy_bytes, 0, &diag);
    lb_model_add_tensor(&m, "blk.0.attn_q.weight", LOWBIT_TYPE_BF16, 2, mat, dummy_bytes, 0, &diag);
    lb_model_add_tensor(&m, "blk.0.attn_k.weight", LOWBIT_TYPE_Q8_0, 2, mat, dummy_bytes, 0, &diag);
    /* types lowbit cannot decode are copied when nothing asks to convert them */
    lb_model_add_tensor(&m, "blk.0.token_ids", LOWBIT_TYPE_I32, 1, vec, dummy_bytes, 0, &diag);
    lb_model_add_tensor(&m, "blk.0.lut", (lowbit_type)41, 2, mat, dummy_bytes, 0, &diag);
    CHECK(m.n_tensors == 9, "built %lld", (long long)m.n_tensors);

    lowbit_quantize_options o;
    init_options(&o, "Q5_0");
    lowbit_tensor_plan plan[16];
    lowbit_status st = lb_plan_types(&m, &o, 0, plan, &diag);
    CHECK(st == LOWBIT_OK, "%s", diag.message);
    CHECK(plan[0].type == LOWBIT_TYPE_F32 && plan[0].n_bytes == 1024 && plan[0].source_type == LOWBIT_TYPE_F16,
          "1-D F16 -> F32");
    CHECK(strcmp(plan[0].note, "not quantized: 1-D tensor, stored as f32") == 0, "'%s'", plan[0].note);
    CHECK(plan[1].type == LOWBIT_TYPE_F32 && plan[1].n_bytes == 1024, "1-D BF16 -> F32");
    CHECK(plan[2].type == LOWBIT_TYPE_F16 && plan[2].n_bytes == 64 * 16 * 2, "position_embd kept F16");
    CHECK(strstr(plan[2].note, "position_embd") != NULL, "'%s'", plan[2].note);
    CHECK(plan[3].type == LOWBIT_TYPE_F32 && strstr(plan[3].note, "weight"), "not a weight: '%s'", plan[3].note);
    CHECK(plan[4].type == LOWBIT_TYPE_F32 && strstr(plan[4].note, "ffn_gate_inp"), "router kept");
    CHECK(plan[5].type == LOWBIT_TYPE_Q5_0 && plan[5].n_bytes == 64u * 8 * 22 && !plan[5].fell_back, "BF16 -> Q5_0");
    CHECK(plan[6].type == LOWBIT_TYPE_Q5_0 && plan[6].source_type == LOWBIT_TYPE_Q8_0, "re-quantized");
    CHECK(plan[7].type == LOWBIT_TYPE_I32 && plan[7].n_bytes == 256 * 4, "1-D I32 copied");
    CHECK(plan[8].type == (lowbit_type)41 && plan[8].n_bytes == m.tensors[8].n_bytes &&
              plan[8].n_bytes == 64u * 2 * 18, "unknown type copied: %llu", (unsigned long long)plan[8].n_bytes);
    /* Q8_0 preset: the Q8_0 tensor is copied as it is */
    init_options(&o, "Q8_0");
    st = lb_plan_types(&m, &o, 0, plan, &diag);
    CHECK(st == LOWBIT_OK && plan[6].type == LOWBIT_TYPE_Q8_0 && plan[6].n_bytes == 64u * 8 * 34, "copy");

    /* a source lowbit cannot decode is an error when it would need converting */
    lb_model_add_tensor(&m, "blk.0.attn_v.weight", LOWBIT_TYPE_I32, 2, mat, dummy_bytes, 0, &diag);
    st = lb_plan_types(&m, &o, 0, plan, &diag);
    CHECK(st == LOWBIT_ERR_UNSUPPORTED && strstr(diag.message, "blk.0.attn_v.weight"), "%s", diag.message);
    lb_model_free(&m);

    /* no metadata at all: 8 layers counted from the names, no GQA */
    memset(&m, 0, sizeof m);
    for (int l = 0; l < 8; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);
        lb_model_add_tensor(&m, name, LOWBIT_TYPE_F32, 2, mat, dummy_bytes, 0, &diag);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        lb_model_add_tensor(&m, name, LOWBIT_TYPE_F32, 2, mat, dummy_bytes, 0, &diag);
    }
    lowbit_tensor_plan bare[16];
    init_options(&o, "Q4_K_M");
    st = lb_plan_types(&m, &o, 0, bare, &diag);
    CHECK(st == LOWBIT_OK, "%s", diag.message);
    for (int l = 0; l < 8; l++) {
        const lowbit_type want = l == 0 || l == 3 || l == 6 || l == 7 ? LOWBIT_TYPE_Q6_K : LOWBIT_TYPE_Q4_K;
        CHECK(bare[2 * l].type == want && bare[2 * l + 1].type == want, "bare layer %d", l);
    }
    init_options(&o, "Q2_K");
    st = lb_plan_types(&m, &o, 0, bare, &diag);
    CHECK(st == LOWBIT_OK && bare[0].type == LOWBIT_TYPE_Q3_K, "bare Q2_K attn_v: GQA 1");
    lb_model_free(&m);
}

static void test_bad_arguments(void) {
    static test_model tm;
    lowbit_quantize_options o;
    lowbit_status st;
    lowbit_diag diag;
    build_model(&tm, &shapes[0]);

    init_options(&o, "Q4_K_X");
    plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT && strstr(diag.message, "Q4_K_X") && strstr(diag.message, "Q3_K,") &&
              strstr(diag.message, "Q4_K_M") && strstr(diag.message, "IQ4_XS") && strstr(diag.message, "BF16"),
          "%s", diag.message);
    init_options(&o, "IQ2_XXS");
    plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_ERR_UNSUPPORTED && strstr(diag.message, "IQ2_XXS") && strstr(diag.message, "Q4_K_M"),
          "%s", diag.message);
    init_options(&o, NULL);
    plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT, "NULL preset");
    init_options(&o, "q4_k");
    plan_model(&tm, &o, 0, &st, &diag);
    CHECK(st == LOWBIT_OK, "alias, lower case: %s", diag.message);
    CHECK(lb_plan_types(&tm.m, NULL, 0, NULL, &diag) == LOWBIT_ERR_INVALID_ARGUMENT, "NULL options");
    CHECK(lb_plan_types(NULL, &o, 0, NULL, NULL) == LOWBIT_ERR_INVALID_ARGUMENT, "NULL model");
    CHECK(lb_plan_types(&tm.m, &o, 0, NULL, NULL) == LOWBIT_ERR_INVALID_ARGUMENT, "NULL plan");
    lb_model_free(&tm.m);
}

int main(void) {
    test_preset_table();
    test_every_tensor_every_preset();
    test_literal_layer_lists();
    test_sample_model_shapes();
    test_special_models();
    test_pure();
    test_overrides();
    test_output_and_embedding_types();
    test_kept_tensors();
    test_bad_arguments();
    return lb_test_summary();
}
