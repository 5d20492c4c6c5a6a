/*
 * Kernels of the 256-element formats (Q2_K..Q6_K, IQ4_XS, TQ1_0, TQ2_0, IQ2_XXS, IQ2_XS, IQ2_S,
 * IQ3_XXS, IQ3_S, IQ1_S, IQ1_M) and of the Q8_K activation quantizer, against the scalar
 * references of the type table.
 *
 * For every kernel set this CPU can run (every level up to the detected one; on x86-64 the AVX2
 * set whenever the hardware has it, whatever LOWBIT_CPU says):
 * 1. Dot products on random blocks (random bytes are valid encodings; the fp16 scales are set to
 *    finite values), on extreme blocks (every quant at its largest level, activations at -128 or
 *    127: what would saturate a 16-bit intermediate) and on the golden files' rows with their
 *    activation vectors quantized to Q8_K, agree with the scalar reference within 1e-5 of the sum
 *    of |terms| (the kernels' integer sums are exact; they accumulate the super-blocks' float
 *    terms in vector lanes, in another order than the reference). On x86-64 the kernels of
 *    kquants_avx2.c (with iq1_avx2.c and lattice_avx2.c) and kquants_avx512.c are also checked
 *    alone over the scalar references, so that the AVX2 ones stay tested where AVX-512 kernels
 *    override them.
 *    Where a level has a multi-token kernel for a format, it gives the level's one-token results
 *    bit for bit, for 1..LB_DOT_TOKENS tokens.
 * 2. The Q8_K quantizer writes the reference's bytes on random rows, zeros, one huge value among
 *    small ones, denormals, ties of magnitude, infinities and NaN.
 */
#include "testing.h"
#include "lowbit.h"
#include "formats/blocks.h"
#include "kernels/kernels.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_BLOCKS = 8, N_RANDOM_TRIALS = 60 };

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint32_t next_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static float uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)(next_u32() & 0xFFFFFF) / 16777216.0f;
}

/* A finite fp16 value of either sign with magnitude between 2^-10 and 2^6. */
static lb_half random_half(void) {
    const uint32_t sign = next_u32() & 1, exponent = 5 + next_u32() % 16;
    const uint32_t mantissa = next_u32() & 0x3FF;
    return (lb_half)((sign << 15) | (exponent << 10) | mantissa);
}

/* IQ1_M has no fp16 field: its super-scale's 16 bits are the top nibbles of its four 16-bit
   scale words (the 3-bit sub-scales below them are left as they are). */
static void set_iq1_m_super_scale(uint8_t *block, lb_half h) {
    uint8_t *words = block + offsetof(block_iq1_m, scales);
    for (int k = 0; k < 4; k++) {
        words[2 * k + 1] = (uint8_t)((words[2 * k + 1] & 0x0F) | (((h >> (4 * k)) & 0xF) << 4));
    }
}

/* The formats of this file, with the offsets of their fp16 fields (-1: none; IQ1_M's scale is
   set by the function above). Random bytes are valid encodings of all of them (every index is
   inside its codebook). */
typedef struct kq_format {
    lowbit_type type;
    const char *name;
    int half_offset[2];
} kq_format;

static const kq_format kFormats[] = {
    {LOWBIT_TYPE_Q2_K, "q2_K", {offsetof(block_q2_K, d), offsetof(block_q2_K, dmin)}},
    {LOWBIT_TYPE_Q3_K, "q3_K", {offsetof(block_q3_K, d), -1}},
    {LOWBIT_TYPE_Q4_K, "q4_K", {offsetof(block_q4_K, d), offsetof(block_q4_K, dmin)}},
    {LOWBIT_TYPE_Q5_K, "q5_K", {offsetof(block_q5_K, d), offsetof(block_q5_K, dmin)}},
    {LOWBIT_TYPE_Q6_K, "q6_K", {offsetof(block_q6_K, d), -1}},
    {LOWBIT_TYPE_IQ4_XS, "iq4_xs", {offsetof(block_iq4_xs, d), -1}},
    {LOWBIT_TYPE_TQ1_0, "tq1_0", {offsetof(block_tq1_0, d), -1}},
    {LOWBIT_TYPE_TQ2_0, "tq2_0", {offsetof(block_tq2_0, d), -1}},
    {LOWBIT_TYPE_IQ2_XXS, "iq2_xxs", {offsetof(block_iq2_xxs, d), -1}},
    {LOWBIT_TYPE_IQ2_XS, "iq2_xs", {offsetof(block_iq2_xs, d), -1}},
    {LOWBIT_TYPE_IQ2_S, "iq2_s", {offsetof(block_iq2_s, d), -1}},
    {LOWBIT_TYPE_IQ3_XXS, "iq3_xxs", {offsetof(block_iq3_xxs, d), -1}},
    {LOWBIT_TYPE_IQ3_S, "iq3_s", {offsetof(block_iq3_s, d), -1}},
    {LOWBIT_TYPE_IQ1_S, "iq1_s", {offsetof(block_iq1_s, d), -1}},
    {LOWBIT_TYPE_IQ1_M, "iq1_m", {-1, -1}},
};
enum { N_FORMATS = sizeof kFormats / sizeof kFormats[0] };

/* Weight blocks of `fill` bytes (random when fill < 0) with random finite fp16 scales. */
static void make_weights(const kq_format *f, int n_blocks, int fill, uint8_t *out) {
    const int block_bytes = lowbit_type_info(f->type)->block_bytes;
    for (int b = 0; b < n_blocks; b++) {
        uint8_t *block = out + (size_t)b * block_bytes;
        for (int i = 0; i < block_bytes; i++) {
            block[i] = (uint8_t)(fill < 0 ? next_u32() : (uint32_t)fill);
        }
        for (int k = 0; k < 2; k++) {
            if (f->half_offset[k] < 0) continue;
            const lb_half h = random_half();
            memcpy(block + f->half_offset[k], &h, sizeof h);
        }
        if (f->type == LOWBIT_TYPE_IQ1_M) set_iq1_m_super_scale(block, random_half());
    }
}

/* Q8_K blocks with consistent bsums and a random scale; quants random in -128..127 (mode 0), all
   `value` (mode 1) or alternating `value` and -value - 1 (mode 2). */
static void make_activations(int n_blocks, int mode, int value, block_q8_K *y) {
    for (int b = 0; b < n_blocks; b++) {
        y[b].d = uniform(-0.05f, 0.05f);
        for (int j = 0; j < QK_K; j++) {
            const int random = (int)(next_u32() % 256) - 128;
            const int alternating = j % 2 ? value : -value - 1;
            y[b].qs[j] = (int8_t)(mode == 0 ? random : mode == 1 ? value : alternating);
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[b].qs[16 * g + j];
            y[b].bsums[g] = (int16_t)sum;
        }
    }
}

/* Sum of |w_i * a_i| over the row: the scale of the float rounding of any summation order. */
static double terms_magnitude(lowbit_type type, int64_t n, const void *w, const block_q8_K *a) {
    float *dw = malloc((size_t)n * sizeof *dw), *da = malloc((size_t)n * sizeof *da);
    lowbit_type_info(type)->dequantize(w, dw, n);
    lowbit_type_info(LOWBIT_TYPE_Q8_K)->dequantize(a, da, n);
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m += fabs((double)dw[i] * (double)da[i]);
    free(dw);
    free(da);
    return m;
}

typedef struct level_under_test {
    const char *name;
    lb_kernel_set set;
} level_under_test;

/* Compares one dot product of `level` with the reference; returns 1 when it agrees. */
static int dot_agrees(const level_under_test *level, const kq_format *f, int64_t n, const void *w,
                      const block_q8_K *a, const char *what) {
    const float ref = lowbit_type_info(f->type)->vec_dot(n, w, a);
    const float got = level->set.vec_dot[f->type](n, w, a);
    const double tolerance = 1e-5 * terms_magnitude(f->type, n, w, a) + 1e-30;
    const int ok = fabs((double)got - (double)ref) <= tolerance && isfinite(got) == isfinite(ref);
    if (!ok) {
        fprintf(stderr, "%s %s %s n=%lld: kernel %.9g reference %.9g (tolerance %.3g)\n",
                level->name, f->name, what, (long long)n, got, ref, tolerance);
    }
    return ok;
}

static void check_random_dots(const level_under_test *level, const kq_format *f) {
    static uint8_t w[MAX_BLOCKS * 256];
    static block_q8_K a[MAX_BLOCKS];
    int bad = 0, checked = 0;
    for (int trial = 0; trial < N_RANDOM_TRIALS; trial++) {
        const int n_blocks = 1 + trial % MAX_BLOCKS;
        make_weights(f, n_blocks, -1, w);
        make_activations(n_blocks, 0, 0, a);
        bad += !dot_agrees(level, f, (int64_t)n_blocks * QK_K, w, a, "random");
        checked++;
    }
    /* the largest levels against the largest activations of either sign, and zero weights */
    static const int fills[] = {0xFF, 0x00, 0xAA, 0x55};
    static const int values[] = {127, -128};
    for (size_t i = 0; i < sizeof fills / sizeof fills[0]; i++) {
        for (int mode = 1; mode <= 2; mode++) {
            for (size_t v = 0; v < 2; v++) {
                make_weights(f, 2, fills[i], w);
                make_activations(2, mode, values[v], a);
                bad += !dot_agrees(level, f, 2 * QK_K, w, a, "extreme");
                checked++;
            }
        }
    }
    CHECK(bad == 0, "%s %s: %d of %d random/extreme dot products differ", level->name, f->name, bad,
          checked);
}

/* The golden rows (q and q_imx) with the golden activation vectors quantized to Q8_K. */
static void check_golden_dots(const level_under_test *level, const kq_format *f) {
    char relative[64];
    snprintf(relative, sizeof relative, "golden/%s.gguf", f->name);
    lowbit_gguf *file = NULL;
    lowbit_diag diag = {0};
    const lowbit_status st = lowbit_gguf_open(lb_shared_path(relative), &file, &diag);
    CHECK(st == LOWBIT_OK, "cannot open %s: %s", relative, diag.message);
    if (st != LOWBIT_OK) return;
    const lowbit_tensor_info *y = lowbit_gguf_find_tensor(file, "y");
    const char *names[] = {"q", "q_imx"};
    int bad = 0, checked = 0;
    for (int t = 0; t < 2; t++) {
        const lowbit_tensor_info *q = lowbit_gguf_find_tensor(file, names[t]);
        if (!q || !y) continue;
        const int64_t cols = q->ne[0], rows = q->ne[1];
        CHECK(q->type == f->type && y->ne[0] == cols && cols % QK_K == 0, "%s: %s shape", f->name,
              names[t]);
        if (q->type != f->type || y->ne[0] != cols || cols % QK_K != 0) continue;
        block_q8_K *a = malloc((size_t)(cols / QK_K) * sizeof *a);
        const size_t row_bytes = lowbit_row_bytes(f->type, cols);
        for (int64_t j = 0; j < y->ne[1]; j++) {
            const float *activation = (const float *)y->data + j * cols;
            lowbit_type_info(LOWBIT_TYPE_Q8_K)->quantize_ref(activation, a, cols, NULL);
            for (int64_t r = 0; r < rows; r++) {
                const uint8_t *row = (const uint8_t *)q->data + r * row_bytes;
                bad += !dot_agrees(level, f, cols, row, a, names[t]);
                checked++;
            }
        }
        free(a);
    }
    CHECK(checked > 0, "%s: no golden rows", f->name);
    CHECK(bad == 0, "%s %s: %d of %d golden dot products differ", level->name, f->name, bad,
          checked);
    lowbit_gguf_close(file);
}

/* ---- the Q8_K quantizer ---- */

enum { Q8_ROW = 4 * QK_K };

static void check_q8_K_row(const level_under_test *level, const float *x, const char *what) {
    static block_q8_K ref[Q8_ROW / QK_K], got[Q8_ROW / QK_K];
    memset(ref, 0x5A, sizeof ref);
    memset(got, 0xA5, sizeof got);
    lowbit_type_info(LOWBIT_TYPE_Q8_K)->quantize_ref(x, ref, Q8_ROW, NULL);
    const lowbit_status st = level->set.quantize_activation[LOWBIT_TYPE_Q8_K](x, got, Q8_ROW, NULL);
    CHECK(st == LOWBIT_OK && memcmp(ref, got, sizeof ref) == 0, "%s q8_K quantizer differs on %s",
          level->name, what);
}

static void check_q8_K_quantizer(const level_under_test *level) {
    static float x[Q8_ROW];
    for (int trial = 0; trial < 20; trial++) {
        const float scale = powf(10.0f, uniform(-6.0f, 6.0f));
        for (int i = 0; i < Q8_ROW; i++) x[i] = scale * uniform(-1.0f, 1.0f);
        check_q8_K_row(level, x, "random rows");
    }
    /* rounding ties: values at exact half steps of the scale that maps the max to -127 */
    for (int i = 0; i < Q8_ROW; i++) x[i] = (float)((int)(next_u32() % 255) - 127) * 0.5f;
    x[7] = 127.0f;
    check_q8_K_row(level, x, "half steps");
    memset(x, 0, sizeof x);
    check_q8_K_row(level, x, "zeros");
    x[300] = -0.0f;
    x[5] = 3.0e38f;
    x[600] = -3.0e38f;
    for (int i = QK_K * 2; i < QK_K * 3; i++) x[i] = uniform(-1e-3f, 1e-3f);
    x[QK_K * 2 + 17] = 1e30f;
    check_q8_K_row(level, x, "one huge value");
    for (int i = 0; i < Q8_ROW; i++) x[i] = uniform(-1.0f, 1.0f) * 1e-40f; /* denormals */
    x[QK_K + 3] = 1e-45f;
    check_q8_K_row(level, x, "denormals");
    for (int i = 0; i < Q8_ROW; i++) x[i] = (i % 3 == 0) ? 2.5f : (i % 3 == 1 ? -2.5f : 1.0f);
    check_q8_K_row(level, x, "ties of magnitude");
    for (int i = 0; i < Q8_ROW; i++) x[i] = uniform(-1.0f, 1.0f);
    x[10] = INFINITY;
    x[QK_K + 20] = -INFINITY;
    x[2 * QK_K + 30] = NAN;
    x[3 * QK_K] = NAN;
    x[3 * QK_K + 1] = -NAN;
    check_q8_K_row(level, x, "infinities and NaN");
}

/* The level's multi-token kernel (where it has one for the format) against its one-token kernel,
   bit for bit, for every token count, on random rows and on extreme ones. Formats without an
   encoder (IQ1, the lattice formats) meet multi-token kernels only here: test_kernels' matmul
   checks start from encoded weights. */
static void check_tokens_dots(const level_under_test *level, const kq_format *f) {
    const lb_vec_dot_tokens_fn tokens = level->set.vec_dot_tokens[f->type];
    const lowbit_vec_dot_fn one = level->set.vec_dot[f->type];
    if (!tokens || level->set.tokens_pair[f->type] != one) return;
    static uint8_t w[MAX_BLOCKS * 256];
    static block_q8_K a[LB_DOT_TOKENS][MAX_BLOCKS];
    int differ = 0, checked = 0;
    for (int trial = 0; trial < 2 * MAX_BLOCKS + 2; trial++) {
        const int n_blocks = 1 + trial % MAX_BLOCKS, extreme = trial >= 2 * MAX_BLOCKS;
        make_weights(f, n_blocks, extreme ? 0xFF : -1, w);
        for (int t = 0; t < LB_DOT_TOKENS; t++) {
            make_activations(n_blocks, extreme ? 2 : 0, t % 2 ? 127 : -128, a[t]);
        }
        const int64_t n = (int64_t)n_blocks * QK_K;
        for (int count = 1; count <= LB_DOT_TOKENS; count++) {
            float got[LB_DOT_TOKENS];
            tokens(n, w, a[0], sizeof a[0], count, got);
            for (int t = 0; t < count; t++) {
                const float want = one(n, w, a[t]);
                differ += memcmp(&got[t], &want, sizeof want) != 0;
                checked++;
            }
        }
    }
    CHECK(differ == 0, "%s %s: multi-token kernel differs from the one-token kernel on %d of %d",
          level->name, f->name, differ, checked);
}

static void check_level(const level_under_test *level) {
    for (int i = 0; i < N_FORMATS; i++) {
        if (!level->set.vec_dot[kFormats[i].type]) continue;
        check_random_dots(level, &kFormats[i]);
        check_golden_dots(level, &kFormats[i]);
        check_tokens_dots(level, &kFormats[i]);
    }
    check_q8_K_quantizer(level);
}

int main(void) {
    level_under_test level;
    const lb_cpu_level detected = lb_cpu_level_detected();
    for (int l = LB_CPU_SCALAR; l <= (int)detected; l++) {
        level.name = lb_cpu_level_name((lb_cpu_level)l);
        lb_kernels_for_level((lb_cpu_level)l, &level.set);
        check_level(&level);
    }
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    /* as dispatch.c decides it: every CPU with AVX2 and FMA also has F16C */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        /* only the AVX2 kernels over the scalar references, whatever overrides them */
        level.name = "avx2 (kquants, iq1 and lattice only)";
        lb_kernels_for_level(LB_CPU_SCALAR, &level.set);
        lb_register_kquants_avx2(&level.set);
        lb_register_iq1_avx2(&level.set);
        lb_register_lattice_avx2(&level.set);
        check_level(&level);
        for (int i = 0; i < N_FORMATS; i++) {
            const lowbit_type type = kFormats[i].type;
            CHECK(level.set.vec_dot[type] != lowbit_type_info(type)->vec_dot,
                  "no AVX2 kernel for %s", kFormats[i].name);
        }
    } else {
        printf("no AVX2 on this CPU: only the dispatched kernels were checked\n");
    }
    if (detected >= LB_CPU_AVX512_VNNI) {
        level.name = "avx512vnni (kquants only)";
        lb_kernels_for_level(LB_CPU_SCALAR, &level.set);
        lb_register_kquants_avx512(&level.set);
        check_level(&level);
    }
#endif
    /* whatever the level, the dispatched kernels are the ones of the detected level */
    lb_kernels_for_level(detected, &level.set);
    for (int i = 0; i < N_FORMATS; i++) {
        CHECK(lb_vec_dot_kernel(kFormats[i].type) == level.set.vec_dot[kFormats[i].type],
              "dispatched %s kernel is not the detected level's", kFormats[i].name);
    }
    CHECK(lb_quantize_activation_kernel(LOWBIT_TYPE_Q8_K) ==
              level.set.quantize_activation[LOWBIT_TYPE_Q8_K],
          "dispatched q8_K quantizer is not the detected level's");
    return lb_test_summary();
}
