/*
 * SIMD kernels against the scalar references of the type table, at every instruction-set level
 * this CPU has (lb_cpu_level_detected() and all below it; under qemu-aarch64 that is scalar and
 * NEON, on an AVX2 machine scalar and AVX2).
 *
 * 1. Activation quantizers: bytes identical to the type table's quantize_ref (and the same
 *    status), on random rows, heavy tails, rounding ties, zero / denormal / huge blocks.
 * 2. Dot products of every type with one: the integer parts are exact, so a kernel may differ
 *    from the reference only by the order of its float additions. Bound: a fraction of the
 *    magnitude of the float terms (see rounding_scale), 1e-6 for one block at a time (every
 *    block of each row is also checked alone, which catches any wrong element) and 1e-5 for
 *    whole rows. Weights come from quantize_ref on random rows, and from the golden files'
 *    reference encodings q / q_imx against their y vectors (also the lattice formats lowbit
 *    cannot encode).
 * 3. lowbit_matmul: bit-identical output on no pool and on 1, 2 and 3 threads, equal to a plain
 *    loop over the active single-token kernels (so the multi-token kernels reproduce them), and
 *    within the dot bound of every level's kernels (the LOWBIT_CPU cap cannot be changed
 *    in-process, so the level sets are compared directly).
 * Buffers have their exact sizes so that AddressSanitizer sees any over-read.
 */
#include "testing.h"
#include "lowbit.h"
#include "kernels/kernels.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROW_TOLERANCE 1e-5
#define BLOCK_TOLERANCE 1e-6

/* ------------------------------------------------------------------------------------------ */
/* Test data                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng_next(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static float rng_uniform(void) { return (float)((rng_next() >> 40) + 0.5) / 16777216.0f; }

static float rng_normal(void) {
    return sqrtf(-2.0f * logf(rng_uniform())) * cosf(6.2831853f * rng_uniform());
}

typedef enum data_kind {
    DATA_NORMAL,   /* N(0, 1) */
    DATA_HEAVY,    /* normal / uniform: heavy tails with occasional large outliers */
    DATA_TIES,     /* x / d lands on .5 exactly: roundf and round-to-even differ here */
    DATA_EXTREME,  /* blocks of zeros, denormal-scale blocks, +-30000, equal-magnitude extremes */
    DATA_OVERFLOW, /* a block whose 8-bit scale exceeds fp16: the quantizers must fail alike */
    DATA_KINDS
} data_kind;

static const char *const data_names[DATA_KINDS] = {"normal", "heavy", "ties", "extreme",
                                                   "overflow"};

static void fill(float *x, int64_t n, data_kind kind) {
    for (int64_t i = 0; i < n; i++) {
        switch (kind) {
        case DATA_NORMAL: x[i] = rng_normal(); break;
        case DATA_HEAVY: x[i] = rng_normal() / (rng_uniform() + 0.01f); break;
        case DATA_TIES:
            /* |x| <= 127 with +-127 in every block (d = 1 for Q8_0/Q8_1, iscale = +-1 for Q8_K:
               -127 comes first in each 256 block, +127 first in odd 32 blocks), others k + 0.5 */
            if (i % 32 == 0) x[i] = (i / 32) % 2 ? 127.0f : -127.0f;
            else x[i] = (float)((int)(rng_next() % 253) - 126) + ((i % 3) ? 0.5f : 0.0f);
            break;
        case DATA_EXTREME: {
            const int64_t block = (i / 32) % 5;
            x[i] = block == 0   ? 0.0f
                   : block == 1 ? 1e-37f * rng_normal() /* 1 / scale overflows */
                   : block == 2 ? 30000.0f * (rng_uniform() * 2.0f - 1.0f)
                   : block == 3 ? ((i % 2) ? 5.0f : -5.0f)
                                : rng_normal() * 1e3f;
            break;
        }
        default: x[i] = (i == n / 2) ? 2e7f : rng_normal(); break;
        }
    }
}

static float *new_floats(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }

/* ------------------------------------------------------------------------------------------ */
/* Comparisons                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* The scale of the float rounding a dot product can have: sum over weight blocks of
   3 max|w| * sum |a| over the block (dequantized). A block's float terms are bounded by it even
   for the formats with a min, whose d * sum(l q) and m * s can each exceed sum |w_i a_i| a lot
   (|d l| <= max - min <= 2 max|w|, |m| <= max|w| for the encoders' m = min). */
static double rounding_scale(const lowbit_type_traits *t, const void *w, const void *a,
                             int64_t n) {
    const lowbit_type_traits *at = lowbit_type_info(t->vec_dot_type);
    float *dw = new_floats(n), *da = new_floats(n);
    t->dequantize(w, dw, n);
    at->dequantize(a, da, n);
    double sum = 0.0;
    for (int64_t b = 0; b < n; b += t->block_size) {
        double w_max = 0.0, a_abs = 0.0;
        for (int64_t i = b; i < b + t->block_size; i++) {
            w_max = fmax(w_max, fabs((double)dw[i]));
            a_abs += fabs((double)da[i]);
        }
        sum += 3.0 * w_max * a_abs;
    }
    free(dw);
    free(da);
    return sum;
}

static int close_enough(float got, float want, double scale, double relative) {
    if (isnan(want)) return isnan(got);
    return fabs((double)got - want) <= relative * scale + FLT_MIN;
}

/* One row's dot product by `kernel` against the reference: the whole row, then block by block. */
static void check_dot(const lowbit_type_traits *t, lowbit_vec_dot_fn kernel, const void *w,
                      const void *a, int64_t n, const char *what) {
    const float want = t->vec_dot(n, w, a), got = kernel(n, w, a);
    const double scale = rounding_scale(t, w, a, n);
    CHECK(close_enough(got, want, scale, ROW_TOLERANCE), "%s %s n=%lld: kernel %.9g, reference %.9g",
          t->name, what, (long long)n, got, want);
    const lowbit_type_traits *at = lowbit_type_info(t->vec_dot_type);
    /* one weight block per call (NVFP4's 64 span two activation blocks) */
    const int64_t step = t->block_size > at->block_size ? t->block_size : at->block_size;
    const int64_t w_step = lowbit_row_bytes(t->type, step), a_step = lowbit_row_bytes(at->type, step);
    int bad = 0;
    for (int64_t b = 0; b < n / step; b++) {
        const uint8_t *wb = (const uint8_t *)w + b * w_step, *ab = (const uint8_t *)a + b * a_step;
        const float r = t->vec_dot(step, wb, ab), k = kernel(step, wb, ab);
        if (!close_enough(k, r, rounding_scale(t, wb, ab, step), BLOCK_TOLERANCE)) {
            if (!bad) fprintf(stderr, "%s %s block %lld: kernel %.9g, reference %.9g\n", t->name,
                              what, (long long)b, k, r);
            bad++;
        }
    }
    CHECK(bad == 0, "%s %s n=%lld: %d blocks differ", t->name, what, (long long)n, bad);
}

/* The activation row of `t` for floats y: the reference bytes, and those of `quantize` which
   must be identical. Returns the reference bytes (NULL when the reference fails). */
static void *quantize_activation(const lowbit_type_traits *t, lowbit_quantize_row_fn quantize,
                                 const float *y, int64_t n, const char *what) {
    const lowbit_type_traits *at = lowbit_type_info(t->vec_dot_type);
    const size_t bytes = lowbit_row_bytes(at->type, n);
    uint8_t *want = malloc(bytes), *got = malloc(bytes);
    const lowbit_status sw = at->quantize_ref(y, want, n, NULL);
    const lowbit_status sg = quantize(y, got, n, NULL);
    CHECK(sw == sg, "%s activations %s n=%lld: status %d, reference %d", at->name, what,
          (long long)n, (int)sg, (int)sw);
    if (sw == LOWBIT_OK && sg == LOWBIT_OK) {
        size_t first = 0;
        while (first < bytes && want[first] == got[first]) first++;
        CHECK(first == bytes, "%s activations %s n=%lld: bytes differ from %zu of %zu", at->name,
              what, (long long)n, first, bytes);
    }
    free(got);
    if (sw != LOWBIT_OK) {
        free(want);
        return NULL;
    }
    return want;
}

/* ------------------------------------------------------------------------------------------ */
/* Random rows                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static const int64_t row_lengths[] = {1, 7, 33, 100, 32, 64, 96, 160, 256, 768, 4096, 4160};

static int length_fits(const lowbit_type_traits *t, int64_t n) {
    const lowbit_type_traits *at = lowbit_type_info(t->vec_dot_type);
    if (n < 32 && t->block_size > 1) return 0;
    return n % t->block_size == 0 && n % at->block_size == 0;
}

#define QK_MXFP4_ELEMS 32 /* MXFP4's block: its first byte is the E8M0 scale */

/* Formats whose every byte string is a valid row (8-bit scale codes; MXFP4's exponents are
   limited so that the sums stay finite). */
static int every_byte_valid(lowbit_type type) {
    return type == LOWBIT_TYPE_MXFP4 || type == LOWBIT_TYPE_NVFP4;
}

static void check_random_rows(const lowbit_type_traits *t, const lb_kernel_set *set,
                              const char *level) {
    const lowbit_vec_dot_fn kernel = set->vec_dot[t->type];
    const lowbit_quantize_row_fn quantize = set->quantize_activation[t->vec_dot_type];
    CHECK(kernel && quantize, "%s: level %s lacks a kernel", t->name, level);
    if (!kernel || !quantize || !t->quantize_ref) return;
    for (int li = 0; li < LB_ARRAY_LEN(row_lengths); li++) {
        const int64_t n = row_lengths[li];
        if (!length_fits(t, n)) continue;
        float *x = new_floats(n), *y = new_floats(n);
        void *w = malloc(lowbit_row_bytes(t->type, n));
        for (int kind = 0; kind < DATA_KINDS; kind++) {
            char what[64];
            snprintf(what, sizeof what, "[%s, %s]", level, data_names[kind]);
            fill(x, n, (data_kind)kind);
            fill(y, n, kind == DATA_OVERFLOW ? DATA_NORMAL : (data_kind)((kind + 1) % DATA_OVERFLOW));
            void *a = quantize_activation(t, quantize, y, n, what);
            /* the same data as activations too: ties and overflow reach the quantizer */
            free(quantize_activation(t, quantize, x, n, what));
            if (a && t->quantize_ref(x, w, n, NULL) == LOWBIT_OK) check_dot(t, kernel, w, a, n, what);
            if (a && every_byte_valid(t->type)) {
                /* every scale code too (subnormal, NaN 0x7F, bit 7 set), not just the encoders' */
                for (size_t i = 0; i < lowbit_row_bytes(t->type, n); i++) {
                    ((uint8_t *)w)[i] = (uint8_t)rng_next();
                }
                /* E8M0 exponents within +-40 of 2^0, so that the sums stay finite */
                for (int64_t b = 0; t->type == LOWBIT_TYPE_MXFP4 && b < n / QK_MXFP4_ELEMS; b++) {
                    uint8_t *e = (uint8_t *)w + b * (int64_t)t->block_bytes;
                    *e = (uint8_t)(88 + *e % 80);
                }
                check_dot(t, kernel, w, a, n, "random bytes");
            }
            free(a);
        }
        free(w);
        free(x);
        free(y);
    }
}

/* MXFP4 blocks with the smallest E8M0 exponents (0 and 1 are float subnormals, 2 and 3 the
   smallest normals) against activations large enough that every block's product is a normal
   float, so that a wrong subnormal scale shows in the relative comparison. */
static void check_mxfp4_tiny_scales(const lowbit_type_traits *t, const lb_kernel_set *set,
                                    const char *level) {
    if (t->type != LOWBIT_TYPE_MXFP4) return;
    const int64_t n = 1024; /* 32 blocks: four groups of eight and none left over */
    float *y = new_floats(n);
    uint8_t *w = malloc(lowbit_row_bytes(t->type, n));
    fill(y, n, DATA_NORMAL);
    for (int64_t i = 0; i < n; i++) y[i] *= 1e4f; /* Q8_0 scales near 1e2, fp16-representable */
    char what[64];
    snprintf(what, sizeof what, "[%s, tiny E8M0 scales]", level);
    void *a = quantize_activation(t, set->quantize_activation[t->vec_dot_type], y, n, what);
    for (size_t i = 0; i < lowbit_row_bytes(t->type, n); i++) w[i] = (uint8_t)rng_next();
    for (int64_t b = 0; b < n / QK_MXFP4_ELEMS; b++) w[b * (int64_t)t->block_bytes] = (uint8_t)(b % 4);
    if (a) check_dot(t, set->vec_dot[t->type], w, a, n, what);
    free(a);
    free(w);
    free(y);
}

/* ------------------------------------------------------------------------------------------ */
/* Golden rows                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static int golden_files_read;

/* Checks the golden rows of t if the shared folder has its file (not the float and activation
   formats; main checks that most formats had one). */
static void check_golden_rows(const lowbit_type_traits *t, const lb_kernel_set *set,
                              const char *level) {
    char relative[128];
    snprintf(relative, sizeof relative, "golden/%s.gguf", t->name);
    FILE *probe = fopen(lb_shared_path(relative), "rb");
    if (!probe) return;
    fclose(probe);
    golden_files_read++;
    lowbit_gguf *file = NULL;
    const lowbit_status st = lowbit_gguf_open(lb_shared_path(relative), &file, NULL);
    CHECK(st == LOWBIT_OK, "cannot open %s", relative);
    if (st != LOWBIT_OK) return;
    const lowbit_tensor_info *y = lowbit_gguf_find_tensor(file, "y");
    const char *names[] = {"q", "q_imx"};
    int rows_checked = 0;
    for (int v = 0; v < 2 && y; v++) {
        const lowbit_tensor_info *q = lowbit_gguf_find_tensor(file, names[v]);
        if (!q) continue;
        const int64_t n = q->ne[0];
        const size_t w_bytes = lowbit_row_bytes(t->type, n);
        for (int64_t j = 0; j < y->ne[1]; j++) {
            char what[64];
            snprintf(what, sizeof what, "[%s, golden %s, y%lld]", level, names[v], (long long)j);
            void *a = quantize_activation(t, set->quantize_activation[t->vec_dot_type],
                                          (const float *)y->data + j * n, n, what);
            for (int64_t r = 0; a && r < q->ne[1]; r++) {
                /* an exact-size copy, so that an over-read is caught */
                void *w = malloc(w_bytes);
                memcpy(w, (const uint8_t *)q->data + r * w_bytes, w_bytes);
                check_dot(t, set->vec_dot[t->type], w, a, n, what);
                free(w);
                rows_checked++;
            }
            free(a);
        }
    }
    CHECK(rows_checked > 0, "%s: no golden rows", t->name);
    lowbit_gguf_close(file);
}

/* ------------------------------------------------------------------------------------------ */
/* lowbit_matmul                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* 6 tokens: one full group of the multi-token kernels (LB_DOT_TOKENS) and a partial one */
enum { MM_ROWS = 7, MM_COLS = 512, MM_TOKENS = 6 };

/* Every level's multi-token kernel (not only the active level's, which matmul runs) against
   its one-token kernel, bit for bit, for each token count it takes, on whole rows and on their
   first n elements for the n below that are whole blocks: row lengths that leave the kernels'
   tail loops work (blocks after the groups of eight, float elements after the vectors). */
static void check_tokens_kernels(const lowbit_type_traits *t, const lb_kernel_set *sets,
                                 int n_levels, const uint8_t *w, size_t w_row, const uint8_t *qa,
                                 size_t a_row) {
    static const int64_t lengths[] = {MM_COLS, 1, 7, 23, 33, 79, 100, 192, 256, 288, 448, 480, 509};
    for (int l = 0; l < n_levels; l++) {
        const lb_vec_dot_tokens_fn tokens = sets[l].vec_dot_tokens[t->type];
        const lowbit_vec_dot_fn one = sets[l].vec_dot[t->type];
        if (!tokens || sets[l].tokens_pair[t->type] != one) continue;
        int differ = 0;
        for (size_t k = 0; k < sizeof lengths / sizeof lengths[0]; k++) {
            const int64_t n = lengths[k];
            if (n % t->block_size != 0) continue;
            for (int r = 0; r < MM_ROWS; r++) {
                for (int count = 1; count <= LB_DOT_TOKENS && count <= MM_TOKENS; count++) {
                    float got[LB_DOT_TOKENS];
                    tokens(n, w + r * w_row, qa, a_row, count, got);
                    for (int i = 0; i < count; i++) {
                        const float want = one(n, w + r * w_row, qa + i * a_row);
                        differ += memcmp(&got[i], &want, sizeof want) != 0;
                    }
                }
            }
        }
        CHECK(differ == 0, "%s: level %s multi-token kernel differs from its one-token kernel "
              "(%d values)", t->name, lb_cpu_level_name((lb_cpu_level)l), differ);
    }
}

static void check_matmul(const lowbit_type_traits *t, lowbit_pool *pools[3],
                         const lb_kernel_set *sets, int n_levels) {
    if (!t->quantize_ref || !t->vec_dot) return;
    const size_t w_row = lowbit_row_bytes(t->type, MM_COLS);
    float *x = new_floats((int64_t)MM_ROWS * MM_COLS), *act = new_floats(MM_TOKENS * MM_COLS);
    uint8_t *w = malloc(w_row * MM_ROWS);
    fill(x, (int64_t)MM_ROWS * MM_COLS, DATA_NORMAL);
    fill(act, MM_TOKENS * MM_COLS, DATA_HEAVY);
    if (t->quantize_ref(x, w, (int64_t)MM_ROWS * MM_COLS, NULL) != LOWBIT_OK) {
        CHECK(0, "%s: cannot encode the matmul weights", t->name);
        goto done;
    }
    lowbit_matmul_scratch scratch = {0};
    float single[MM_TOKENS * MM_ROWS], threaded[MM_TOKENS * MM_ROWS];
    CHECK(lowbit_matmul(t->type, w, MM_ROWS, MM_COLS, act, MM_TOKENS, single, NULL, &scratch) ==
              LOWBIT_OK, "%s: matmul failed", t->name);
    for (int p = 0; p < 3; p++) {
        memset(threaded, 0, sizeof threaded);
        CHECK(lowbit_matmul(t->type, w, MM_ROWS, MM_COLS, act, MM_TOKENS, threaded, pools[p],
                            &scratch) == LOWBIT_OK, "%s: matmul failed", t->name);
        CHECK(memcmp(single, threaded, sizeof single) == 0, "%s: matmul on %d threads differs",
              t->name, p + 1);
    }
    /* the same as a plain loop over the active kernels, and close to every level's */
    const lowbit_type_traits *at = lowbit_type_info(t->vec_dot_type);
    const size_t a_row = lowbit_row_bytes(at->type, MM_COLS);
    uint8_t *qa = malloc(a_row * MM_TOKENS);
    int exact = 1;
    for (int tok = 0; tok < MM_TOKENS; tok++) {
        lb_quantize_activation_kernel(at->type)(act + tok * MM_COLS, qa + tok * a_row, MM_COLS, NULL);
        for (int r = 0; r < MM_ROWS; r++) {
            const float v = lb_vec_dot_kernel(t->type)(MM_COLS, w + r * w_row, qa + tok * a_row);
            exact &= memcmp(&v, &single[tok * MM_ROWS + r], sizeof v) == 0;
            for (int l = 0; l < n_levels; l++) {
                const float lv = sets[l].vec_dot[t->type](MM_COLS, w + r * w_row, qa + tok * a_row);
                const double scale = rounding_scale(t, w + r * w_row, qa + tok * a_row, MM_COLS);
                CHECK(close_enough(lv, single[tok * MM_ROWS + r], scale, ROW_TOLERANCE),
                      "%s: matmul %.9g, level %s %.9g", t->name, single[tok * MM_ROWS + r],
                      lb_cpu_level_name((lb_cpu_level)l), lv);
            }
        }
    }
    CHECK(exact, "%s: matmul differs from the active kernel's dot products", t->name);
    check_tokens_kernels(t, sets, n_levels, w, w_row, qa, a_row);
    free(qa);
    lowbit_matmul_scratch_free(&scratch);
done:
    free(w);
    free(x);
    free(act);
}

/* A batch larger than one tile of lowbit_matmul (16 weight rows, 64 tokens), with partial tiles
   of both: every output equals the active kernel's dot product of its row and token, bit for
   bit, on one thread and on three. */
enum { BIG_ROWS = 21, BIG_COLS = 256, BIG_TOKENS = 70 };
static void check_matmul_tiles(const lowbit_type_traits *t, lowbit_pool *pool) {
    if (!t->quantize_ref || !t->vec_dot || BIG_COLS % t->block_size != 0) return;
    const lowbit_type_traits *at = lowbit_type_info(t->vec_dot_type);
    const size_t w_row = lowbit_row_bytes(t->type, BIG_COLS);
    const size_t a_row = lowbit_row_bytes(at->type, BIG_COLS);
    float *x = new_floats((int64_t)BIG_ROWS * BIG_COLS), *act = new_floats(BIG_TOKENS * BIG_COLS);
    float *out = new_floats(BIG_TOKENS * BIG_ROWS), *out_pool = new_floats(BIG_TOKENS * BIG_ROWS);
    uint8_t *w = malloc(w_row * BIG_ROWS), *qa = malloc(a_row * BIG_TOKENS);
    fill(x, (int64_t)BIG_ROWS * BIG_COLS, DATA_NORMAL);
    fill(act, BIG_TOKENS * BIG_COLS, DATA_HEAVY);
    lowbit_matmul_scratch scratch = {0};
    int differ = -1;
    if (t->quantize_ref(x, w, (int64_t)BIG_ROWS * BIG_COLS, NULL) == LOWBIT_OK &&
        lowbit_matmul(t->type, w, BIG_ROWS, BIG_COLS, act, BIG_TOKENS, out, NULL, &scratch) ==
            LOWBIT_OK &&
        lowbit_matmul(t->type, w, BIG_ROWS, BIG_COLS, act, BIG_TOKENS, out_pool, pool,
                      &scratch) == LOWBIT_OK) {
        differ = memcmp(out, out_pool, sizeof(float) * BIG_TOKENS * BIG_ROWS) != 0;
        for (int tok = 0; tok < BIG_TOKENS; tok++) {
            lb_quantize_activation_kernel(at->type)(act + tok * BIG_COLS, qa + tok * a_row,
                                                    BIG_COLS, NULL);
            for (int r = 0; r < BIG_ROWS; r++) {
                const lowbit_vec_dot_fn dot = lb_vec_dot_kernel(t->type);
                const float v = dot(BIG_COLS, w + r * w_row, qa + tok * a_row);
                differ += memcmp(&v, &out[tok * BIG_ROWS + r], sizeof v) != 0;
            }
        }
    }
    CHECK(differ == 0, "%s: %d x %d x %d matmul differs from the dot products (%d values)",
          t->name, BIG_ROWS, BIG_TOKENS, BIG_COLS, differ);
    lowbit_matmul_scratch_free(&scratch);
    free(x);
    free(act);
    free(out);
    free(out_pool);
    free(w);
    free(qa);
}

int main(void) {
    const int top = (int)lb_cpu_level_detected();
    printf("levels: scalar up to %s\n", lb_cpu_level_name((lb_cpu_level)top));
    lb_kernel_set *sets = calloc((size_t)top + 1, sizeof *sets);
    for (int level = 0; level <= top; level++) {
        lb_kernels_for_level((lb_cpu_level)level, &sets[level]);
        const char *name = lb_cpu_level_name((lb_cpu_level)level);
        for (int i = 0; i < lowbit_type_count(); i++) {
            const lowbit_type_traits *t = lowbit_type_at(i);
            if (!t->vec_dot) continue;
            check_random_rows(t, &sets[level], name);
            check_mxfp4_tiny_scales(t, &sets[level], name);
            check_golden_rows(t, &sets[level], name);
        }
    }
    CHECK(golden_files_read >= 20 * (top + 1), "only %d golden files read", golden_files_read);
    lowbit_pool *pools[3] = {NULL, NULL, NULL};
    for (int p = 0; p < 3; p++) {
        CHECK(lowbit_pool_create(p + 1, &pools[p]) == LOWBIT_OK, "pool of %d", p + 1);
    }
    if (pools[0] && pools[1] && pools[2]) {
        for (int i = 0; i < lowbit_type_count(); i++) {
            check_matmul(lowbit_type_at(i), pools, sets, top + 1);
            check_matmul_tiles(lowbit_type_at(i), pools[2]);
        }
    }
    for (int p = 0; p < 3; p++) lowbit_pool_destroy(pools[p]);
    free(sets);
    return lb_test_summary();
}
