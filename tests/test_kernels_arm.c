/*
 * The per-architecture kernel sets at every level the hardware has, whatever LOWBIT_CPU says:
 * on AArch64 scalar, NEON and (when HWCAP reports it) NEON with the dot-product extension; on
 * x86-64 the AVX-512 levels (and AVX2 below them); elsewhere the scalar set alone.
 *
 * For every level and every format with a kernel of lib/kernels/arm or of the AVX-512 files of
 * lib/kernels/x86 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL with Q8_0/Q8_1 activations; Q2_K..Q6_K,
 * IQ4_XS with Q8_K):
 * 1. Dot products on random blocks (random bytes, finite fp16 scales), extreme blocks (all quants
 *    at one byte pattern against activations at the ends of their range) and the golden files'
 *    rows (q and q_imx against y quantized by the reference) agree with the type table's scalar
 *    reference within 1e-5 of the sum of |terms|. The kernels' integer sums are exact, so only
 *    the order of float additions may differ.
 * 2. The activation quantizers Q8_0, Q8_1, Q8_K write the reference's bytes with its status on
 *    random rows over twelve decades, the golden y rows, rounding ties, zeros, denormals, values
 *    whose scale overflows fp16, and (Q8_K, whose reference rounding is defined for them)
 *    infinities and NaN.
 * 3. The dispatch: each level above scalar replaces the hot formats' references, and a CPU
 *    without the dot-product extension (QEMU_CPU=cortex-a53) is never given the dotprod level.
 * Activations of the 32-element formats stay in -127..127 (the quantizers' range; the AVX2
 * kernels below AVX-512 rely on it); Q8_K activations use -128 too.
 */
#include "testing.h"
#include "lowbit.h"
#include "formats/blocks.h"
#include "kernels/kernels.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

enum { MAX_BLOCKS = 8, N_RANDOM_TRIALS = 40, MAX_LEVELS = 4 };

static uint64_t rng_state = 0xD1B54A32D192ED03ULL;

static uint32_t next_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static float uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)(next_u32() & 0xFFFFFF) / 16777216.0f;
}

/* A finite fp16 value of either sign, magnitude in [2^(lo-15), 2^(hi-15+1)). */
static lb_half random_half(int lo_exponent, int hi_exponent) {
    const uint32_t sign = next_u32() & 1;
    const uint32_t exponent =
        (uint32_t)lo_exponent + next_u32() % (uint32_t)(hi_exponent - lo_exponent + 1);
    return (lb_half)((sign << 15) | (exponent << 10) | (next_u32() & 0x3FF));
}

/* ------------------------------------------------------------------------------------------ */
/* Formats and levels                                                                           */
/* ------------------------------------------------------------------------------------------ */

typedef struct format_case {
    lowbit_type type;
    int half_offset[2]; /* the fp16 fields of a block, -1: none */
} format_case;

static const format_case kFormats[] = {
    {LOWBIT_TYPE_Q4_0, {offsetof(block_q4_0, d), -1}},
    {LOWBIT_TYPE_Q4_1, {offsetof(block_q4_1, d), offsetof(block_q4_1, m)}},
    {LOWBIT_TYPE_Q5_0, {offsetof(block_q5_0, d), -1}},
    {LOWBIT_TYPE_Q5_1, {offsetof(block_q5_1, d), offsetof(block_q5_1, m)}},
    {LOWBIT_TYPE_Q8_0, {offsetof(block_q8_0, d), -1}},
    {LOWBIT_TYPE_IQ4_NL, {offsetof(block_iq4_nl, d), -1}},
    {LOWBIT_TYPE_Q2_K, {offsetof(block_q2_K, d), offsetof(block_q2_K, dmin)}},
    {LOWBIT_TYPE_Q3_K, {offsetof(block_q3_K, d), -1}},
    {LOWBIT_TYPE_Q4_K, {offsetof(block_q4_K, d), offsetof(block_q4_K, dmin)}},
    {LOWBIT_TYPE_Q5_K, {offsetof(block_q5_K, d), offsetof(block_q5_K, dmin)}},
    {LOWBIT_TYPE_Q6_K, {offsetof(block_q6_K, d), -1}},
    {LOWBIT_TYPE_IQ4_XS, {offsetof(block_iq4_xs, d), -1}},
};
enum { N_FORMATS = sizeof kFormats / sizeof kFormats[0] };

/* The formats each level above scalar must provide its own kernel for. */
static const lowbit_type kHotTypes[] = {LOWBIT_TYPE_Q4_0, LOWBIT_TYPE_Q8_0, LOWBIT_TYPE_Q4_K,
                                        LOWBIT_TYPE_Q6_K};

typedef struct level_under_test {
    const char *name;
    lb_kernel_set set;
} level_under_test;

/* The levels this hardware can run, lowest first; returns how many. */
static int hardware_levels(level_under_test levels[MAX_LEVELS]) {
    int n = 0;
    lb_cpu_level list[MAX_LEVELS];
    list[n++] = LB_CPU_SCALAR;
#if defined(__aarch64__)
    list[n++] = LB_CPU_NEON;
#if defined(__linux__)
    const int has_dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
    if (has_dotprod) list[n++] = LB_CPU_NEON_DOTPROD;
    /* the dispatch must not hand the SDOT kernels to a CPU without them */
    CHECK(has_dotprod || lb_cpu_level_detected() < LB_CPU_NEON_DOTPROD,
          "dotprod level chosen without HWCAP_ASIMDDP");
    printf("dotprod: %s, detected level %s\n", has_dotprod ? "yes" : "no",
           lb_cpu_level_name(lb_cpu_level_detected()));
#endif
#elif defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        list[n++] = LB_CPU_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl")) {
            list[n++] = LB_CPU_AVX512;
            if (__builtin_cpu_supports("avx512vnni")) list[n++] = LB_CPU_AVX512_VNNI;
        }
    }
#endif
    for (int i = 0; i < n; i++) {
        levels[i].name = lb_cpu_level_name(list[i]);
        lb_kernels_for_level(list[i], &levels[i].set);
    }
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Dot products                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static lowbit_type activation_type(lowbit_type type) {
    return lowbit_type_info(type)->vec_dot_type;
}

/* Weight blocks of `fill` bytes (random when fill < 0) with random finite fp16 fields. */
static void make_weights(const format_case *f, int n_blocks, int fill, uint8_t *out) {
    const int block_bytes = lowbit_type_info(f->type)->block_bytes;
    for (int b = 0; b < n_blocks; b++) {
        uint8_t *block = out + (size_t)b * block_bytes;
        for (int i = 0; i < block_bytes; i++)
            block[i] = (uint8_t)(fill < 0 ? next_u32() : (uint32_t)fill);
        for (int k = 0; k < 2; k++) {
            if (f->half_offset[k] < 0) continue;
            const lb_half h = random_half(5, 20);
            memcpy(block + f->half_offset[k], &h, sizeof h);
        }
    }
}

/* The level of activation element j: random (mode 0), `value` (mode 1), or `value` and its
   opposite alternating (mode 2), within [lowest, 127]. */
static int activation_level(int mode, int value, int lowest, int j) {
    if (mode == 0) return lowest + (int)(next_u32() % (uint32_t)(128 - lowest));
    const int v = mode == 1 || j % 2 ? value : -value;
    return v < lowest ? lowest : (v > 127 ? 127 : v);
}

/* n elements of activations in `type` (Q8_0, Q8_1 or Q8_K) with consistent sums. */
static void make_activations(lowbit_type type, int64_t n, int mode, int value, void *out) {
    if (type == LOWBIT_TYPE_Q8_K) {
        block_q8_K *y = out;
        for (int64_t b = 0; b < n / QK_K; b++) {
            y[b].d = uniform(-0.05f, 0.05f);
            for (int j = 0; j < QK_K; j++)
                y[b].qs[j] = (int8_t)activation_level(mode, value, -128, j);
            for (int g = 0; g < QK_K / 16; g++) {
                int sum = 0;
                for (int j = 0; j < 16; j++) sum += y[b].qs[16 * g + j];
                y[b].bsums[g] = (int16_t)sum;
            }
        }
    } else if (type == LOWBIT_TYPE_Q8_1) {
        block_q8_1 *y = out;
        for (int64_t b = 0; b < n / QK8_1; b++) {
            y[b].d = random_half(5, 14);
            int sum = 0;
            for (int j = 0; j < QK8_1; j++) {
                y[b].qs[j] = (int8_t)activation_level(mode, value, -127, j);
                sum += y[b].qs[j];
            }
            y[b].s = lb_fp32_to_fp16((float)sum * lb_fp16_to_fp32(y[b].d));
        }
    } else {
        block_q8_0 *y = out;
        for (int64_t b = 0; b < n / QK8_0; b++) {
            y[b].d = random_half(5, 14);
            for (int j = 0; j < QK8_0; j++)
                y[b].qs[j] = (int8_t)activation_level(mode, value, -127, j);
        }
    }
}

/* Sum of |w_i * a_i| (and of the min terms' |m * s| for Q8_1): the scale of the float rounding
   of any summation order. */
static double terms_magnitude(lowbit_type type, int64_t n, const void *w, const void *a) {
    const lowbit_type act = activation_type(type);
    float *dw = malloc((size_t)n * sizeof *dw), *da = malloc((size_t)n * sizeof *da);
    lowbit_type_info(type)->dequantize(w, dw, n);
    lowbit_type_info(act)->dequantize(a, da, n);
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m += fabs((double)dw[i] * (double)da[i]);
    if (act == LOWBIT_TYPE_Q8_1) {
        for (int64_t b = 0; b < n / QK8_1; b++)
            m += fabs(lb_fp16_to_fp32(((const block_q8_1 *)a)[b].s));
    }
    free(dw);
    free(da);
    return m;
}

static int dot_agrees(const level_under_test *level, lowbit_type type, int64_t n, const void *w,
                      const void *a, const char *what) {
    const float ref = lowbit_type_info(type)->vec_dot(n, w, a);
    const float got = level->set.vec_dot[type](n, w, a);
    const double tolerance = 1e-5 * terms_magnitude(type, n, w, a) + 1e-30;
    const int ok = fabs((double)got - (double)ref) <= tolerance && isfinite(got) == isfinite(ref);
    if (!ok) {
        fprintf(stderr, "%s %s %s n=%lld: kernel %.9g reference %.9g (tolerance %.3g)\n",
                level->name, lowbit_type_info(type)->name, what, (long long)n, got, ref, tolerance);
    }
    return ok;
}

static void check_random_dots(const level_under_test *level, const format_case *f) {
    /* at most 2 bytes per element in every format here (Q8_0: 34 per 32, Q8_1: 36 per 32) */
    static uint8_t w[MAX_BLOCKS * QK_K * 2], a[MAX_BLOCKS * QK_K * 2];
    const lowbit_type_traits *t = lowbit_type_info(f->type);
    const lowbit_type act = activation_type(f->type);
    /* a row of several blocks each of 256 elements, so that every format fills whole blocks */
    int bad = 0, checked = 0;
    for (int trial = 0; trial < N_RANDOM_TRIALS; trial++) {
        const int64_t n = (int64_t)(1 + trial % MAX_BLOCKS) * QK_K;
        make_weights(f, (int)(n / t->block_size), -1, w);
        make_activations(act, n, 0, 0, a);
        bad += !dot_agrees(level, f->type, n, w, a, "random");
        checked++;
    }
    static const int fills[] = {0xFF, 0x00, 0xAA, 0x55, 0x88, 0x77};
    static const int values[] = {127, -128, 1};
    for (size_t i = 0; i < sizeof fills / sizeof fills[0]; i++) {
        for (int mode = 1; mode <= 2; mode++) {
            for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
                const int64_t n = 2 * QK_K;
                make_weights(f, (int)(n / t->block_size), fills[i], w);
                make_activations(act, n, mode, values[v], a);
                bad += !dot_agrees(level, f->type, n, w, a, "extreme");
                checked++;
            }
        }
    }
    CHECK(bad == 0, "%s %s: %d of %d random/extreme dot products differ", level->name, t->name,
          bad, checked);
}

/* The golden rows (q and q_imx) against the golden y rows quantized by the reference. */
static void check_golden_dots(const level_under_test *level, const format_case *f) {
    const lowbit_type_traits *t = lowbit_type_info(f->type);
    const lowbit_type_traits *act = lowbit_type_info(t->vec_dot_type);
    char relative[64];
    snprintf(relative, sizeof relative, "golden/%s.gguf", t->name);
    lowbit_gguf *file = NULL;
    lowbit_diag diag = {0};
    const lowbit_status st = lowbit_gguf_open(lb_shared_path(relative), &file, &diag);
    CHECK(st == LOWBIT_OK, "cannot open %s: %s", relative, diag.message);
    if (st != LOWBIT_OK) return;
    const lowbit_tensor_info *y = lowbit_gguf_find_tensor(file, "y");
    const char *names[] = {"q", "q_imx"};
    int bad = 0, checked = 0;
    for (int k = 0; k < 2; k++) {
        const lowbit_tensor_info *q = lowbit_gguf_find_tensor(file, names[k]);
        if (!q || !y) continue;
        const int64_t cols = q->ne[0], rows = q->ne[1];
        const int shape_ok = q->type == f->type && y->ne[0] == cols && cols % QK_K == 0;
        CHECK(shape_ok, "%s: %s shape", t->name, names[k]);
        if (!shape_ok) continue;
        void *a = malloc(lowbit_row_bytes(act->type, cols));
        const size_t row_bytes = lowbit_row_bytes(f->type, cols);
        for (int64_t j = 0; j < y->ne[1]; j++) {
            act->quantize_ref((const float *)y->data + j * cols, a, cols, NULL);
            for (int64_t r = 0; r < rows; r++) {
                bad += !dot_agrees(level, f->type, cols, (const uint8_t *)q->data + r * row_bytes,
                                   a, names[k]);
                checked++;
            }
        }
        free(a);
    }
    CHECK(checked > 0, "%s: no golden rows", t->name);
    CHECK(bad == 0, "%s %s: %d of %d golden dot products differ", level->name, t->name, bad,
          checked);
    lowbit_gguf_close(file);
}

/* ------------------------------------------------------------------------------------------ */
/* Activation quantizers                                                                         */
/* ------------------------------------------------------------------------------------------ */

enum { Q_ROW = 4 * QK_K };

static const lowbit_type kActivationTypes[] = {LOWBIT_TYPE_Q8_0, LOWBIT_TYPE_Q8_1,
                                               LOWBIT_TYPE_Q8_K};

static void check_quantizer_row(const level_under_test *level, lowbit_type type, const float *x,
                                const char *what) {
    static uint8_t ref[Q_ROW * 2], got[Q_ROW * 2];
    const size_t bytes = lowbit_row_bytes(type, Q_ROW);
    memset(ref, 0x5A, bytes);
    memset(got, 0x5A, bytes);
    const lowbit_status st_ref = lowbit_type_info(type)->quantize_ref(x, ref, Q_ROW, NULL);
    const lowbit_status st_got = level->set.quantize_activation[type](x, got, Q_ROW, NULL);
    CHECK(st_ref == st_got && memcmp(ref, got, bytes) == 0, "%s %s quantizer differs on %s",
          level->name, lowbit_type_info(type)->name, what);
}

static void check_quantizers(const level_under_test *level) {
    static float x[Q_ROW];
    for (size_t k = 0; k < sizeof kActivationTypes / sizeof kActivationTypes[0]; k++) {
        const lowbit_type type = kActivationTypes[k];
        for (int trial = 0; trial < 12; trial++) {
            const float scale = powf(10.0f, uniform(-7.0f, 5.0f));
            for (int i = 0; i < Q_ROW; i++) x[i] = scale * uniform(-1.0f, 1.0f);
            check_quantizer_row(level, type, x, "random rows");
        }
        /* exact half steps: every block's largest magnitude is 127 so levels hit .5 ties */
        for (int i = 0; i < Q_ROW; i++) x[i] = (float)((int)(next_u32() % 255) - 127) * 0.5f;
        for (int i = 0; i < Q_ROW; i += 32) x[i + 7] = (i / 32) % 2 ? 127.0f : -127.0f;
        check_quantizer_row(level, type, x, "half steps");
        memset(x, 0, sizeof x);
        x[40] = -0.0f;
        check_quantizer_row(level, type, x, "zeros");
        for (int i = 0; i < Q_ROW; i++) x[i] = uniform(-1.0f, 1.0f) * 1e-40f;
        x[QK_K + 3] = 1e-45f;
        check_quantizer_row(level, type, x, "denormals");
        for (int i = 0; i < Q_ROW; i++) x[i] = (i % 3 == 0) ? 2.5f : (i % 3 == 1 ? -2.5f : 1.0f);
        check_quantizer_row(level, type, x, "ties of magnitude");
        for (int i = 0; i < Q_ROW; i++) x[i] = uniform(-1e-3f, 1e-3f);
        x[QK_K * 2 + 17] = 3.0e38f; /* Q8_0/Q8_1: the block scale overflows fp16 */
        check_quantizer_row(level, type, x, "one huge value");
        if (type == LOWBIT_TYPE_Q8_K) {
            for (int i = 0; i < Q_ROW; i++) x[i] = uniform(-1.0f, 1.0f);
            x[10] = INFINITY;
            x[QK_K + 20] = -INFINITY;
            x[2 * QK_K + 30] = NAN;
            x[3 * QK_K] = NAN;
            check_quantizer_row(level, type, x, "infinities and NaN");
        }
    }
    /* the golden activation rows */
    lowbit_gguf *file = NULL;
    lowbit_diag diag = {0};
    if (lowbit_gguf_open(lb_shared_path("golden/q4_0.gguf"), &file, &diag) == LOWBIT_OK) {
        const lowbit_tensor_info *y = lowbit_gguf_find_tensor(file, "y");
        CHECK(y && y->ne[0] * y->ne[1] >= Q_ROW, "golden y too small");
        if (y && y->ne[0] * y->ne[1] >= Q_ROW) {
            for (size_t k = 0; k < sizeof kActivationTypes / sizeof kActivationTypes[0]; k++) {
                check_quantizer_row(level, kActivationTypes[k], (const float *)y->data, "golden y");
            }
        }
        lowbit_gguf_close(file);
    } else {
        CHECK(0, "cannot open golden/q4_0.gguf: %s", diag.message);
    }
}

int main(void) {
    static level_under_test levels[MAX_LEVELS];
    const int n_levels = hardware_levels(levels);
    for (int l = 0; l < n_levels; l++) {
        printf("level %s\n", levels[l].name);
        for (int i = 0; i < N_FORMATS; i++) {
            check_random_dots(&levels[l], &kFormats[i]);
            check_golden_dots(&levels[l], &kFormats[i]);
        }
        check_quantizers(&levels[l]);
        if (l == 0) continue;
        /* every level above scalar has its own kernels for the hot formats, each level above the
           first vector one its own versions of them (SDOT, AVX-512) */
        for (size_t k = 0; k < sizeof kHotTypes / sizeof kHotTypes[0]; k++) {
            const lowbit_type type = kHotTypes[k];
            CHECK(levels[l].set.vec_dot[type] != lowbit_type_info(type)->vec_dot,
                  "%s: no kernel of its own for %s", levels[l].name, lowbit_type_info(type)->name);
        }
    }
#if defined(__aarch64__)
    CHECK(n_levels >= 2, "NEON level missing");
    if (n_levels >= 3) {
        for (size_t k = 0; k < sizeof kHotTypes / sizeof kHotTypes[0]; k++) {
            const lowbit_type type = kHotTypes[k];
            CHECK(levels[2].set.vec_dot[type] != levels[1].set.vec_dot[type],
                  "dotprod: no SDOT kernel for %s", lowbit_type_info(type)->name);
        }
    }
#endif
    return lb_test_summary();
}
