/*
 * The interleaved Q4_0 / Q8_0 / IQ4_NL / MXFP4 / Q4_K layouts (lib/kernels/interleaved.h):
 * 1. Repacking: lb_deinterleave gives back the plain bytes exactly, for row counts that are and
 *    are not multiples of the group (tail rows), and a group's bytes sit where the layout says.
 * 2. Kernels at every instruction-set level this CPU has, called directly on random block bytes
 *    (any scale, any level, Q8_0 weights of -128, Q4_0 and MXFP4 activations of -128, every
 *    IQ4_NL code against activations of +-127, MXFP4 E8M0 scales 0 and 1 (float subnormals), 2,
 *    mid-range and up to 255): bit-identical to the scalar interleaved reference, token counts
 *    1..9 (whole tiles and every remainder). Q4_K: any packed scale and min bytes (6-bit values
 *    up to 63), Q8_K activations of -128 and 127 with their bsums.
 * 3. lb_interleaved_matmul at every level: each grouped row's output is the type table's scalar
 *    reference dot product bit for bit (exact integer parts, the reference's float order), each
 *    tail row the level's plain kernel's; the same bytes on no pool and on 1, 2 and 3 threads.
 *    MXFP4 matrices have rows whose E8M0 scales are all 0..2 (subnormal products) and rows with
 *    large ones (up to 220). Q4_K matrices have some blocks with random packed scale bytes.
 */
#include "testing.h"
#include "lowbit.h"
#include "kernels/interleaved.h"
#include "formats/blocks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

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

static const lowbit_type types[] = {LOWBIT_TYPE_Q4_0, LOWBIT_TYPE_Q8_0, LOWBIT_TYPE_IQ4_NL,
                                    LOWBIT_TYPE_MXFP4, LOWBIT_TYPE_Q4_K};

/* Bytes of the scale that opens a plain block (and of each row's scale in a block group):
   Q4_K's d and dmin together. */
static int scale_bytes(lowbit_type type) {
    return type == LOWBIT_TYPE_MXFP4 ? 1 : type == LOWBIT_TYPE_Q4_K ? 4 : 2;
}

/* The shapes below are in 32-column blocks; Q4_K's 256-column super-blocks take 8 times the
   columns where that is not already a multiple of 256. */
static int64_t columns_for(lowbit_type type, int64_t cols) {
    return type == LOWBIT_TYPE_Q4_K && cols % QK_K != 0 ? cols * 8 : cols;
}

/* The E8M0 byte of MXFP4 block b of row r in the random matrices: every 4th row the scales
   0..2 (2^-128 .. 2^-126 halved: products with the activation scale are float subnormals),
   every 4th the large 200..220 (2^72 .. 2^92: results far above the encoded ones, still
   finite), the rest as encoded. */
static int special_e8m0(int64_t r, int64_t b) {
    if (r % 4 == 1) return (int)((r + b) % 3);
    if (r % 4 == 2) return 200 + (int)((r * 7 + b) % 21);
    return -1;
}
static const int group_rows[] = {4, 8};

/* A plain matrix encoded by the reference encoder from normal floats, with some outliers; for Q8_0
   a few levels are then set to -128 (valid bytes the encoder never writes), for MXFP4 some rows'
   E8M0 scales to the extremes of special_e8m0. */
static uint8_t *random_matrix(lowbit_type type, int64_t rows, int64_t cols) {
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    const size_t bytes = lowbit_row_bytes(type, cols) * (size_t)rows;
    uint8_t *m = malloc(bytes);
    for (int64_t i = 0; i < rows * cols; i++) {
        x[i] = rng_normal() * (i % 97 == 0 ? 40.0f : 1.0f);
    }
    CHECK(lowbit_quantize_rows_ref(type, x, m, rows, cols, NULL, NULL) == LOWBIT_OK,
          "encoding %lld x %lld", (long long)rows, (long long)cols);
    if (type == LOWBIT_TYPE_Q8_0) {
        block_q8_0 *blocks = (block_q8_0 *)m;
        for (int64_t b = 0; b < rows * cols / QK8_0; b += 3) blocks[b].qs[rng_next() % 32] = -128;
    }
    if (type == LOWBIT_TYPE_MXFP4) {
        block_mxfp4 *blocks = (block_mxfp4 *)m;
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t b = 0; b < cols / QK_MXFP4; b++) {
                const int e = special_e8m0(r, b);
                if (e >= 0) blocks[r * (cols / QK_MXFP4) + b].e = (uint8_t)e;
            }
        }
    }
    if (type == LOWBIT_TYPE_Q4_K) {
        /* any 12 bytes are valid packed scales and mins: the 6-bit extremes the encoder
           seldom writes */
        block_q4_K *blocks = (block_q4_K *)m;
        for (int64_t b = 0; b < rows * cols / QK_K; b += 3) {
            for (int i = 0; i < K_SCALE_SIZE; i++) blocks[b].scales[i] = (uint8_t)rng_next();
        }
    }
    free(x);
    return m;
}

/* ------------------------------------------------------------------------------------------ */
/* 1. Repacking                                                                                */
/* ------------------------------------------------------------------------------------------ */

static lowbit_pool *repack_pool;

static void check_round_trip(lowbit_type type, int R, int64_t rows, int64_t cols) {
    cols = columns_for(type, cols);
    uint8_t *plain = random_matrix(type, rows, cols);
    const size_t row_bytes = lowbit_row_bytes(type, cols), bytes = row_bytes * (size_t)rows;
    lb_interleaved_matrix m;
    CHECK(lb_interleave(type, R, plain, rows, cols, NULL, &m) == LOWBIT_OK, "interleave");
    CHECK(m.n_groups == rows / R && (m.tail != NULL) == (rows % R != 0), "groups %lld",
          (long long)m.n_groups);
    /* threads take ranges of groups: the same bytes */
    lb_interleaved_matrix threaded;
    CHECK(lb_interleave(type, R, plain, rows, cols, repack_pool, &threaded) == LOWBIT_OK,
          "interleave on threads");
    CHECK(memcmp(threaded.groups, m.groups, m.group_bytes * (size_t)m.n_groups) == 0,
          "%s x%d: threads change the repacked bytes", lowbit_type_info(type)->name, R);
    lb_interleaved_free(&threaded);
    uint8_t *back = malloc(bytes);
    memset(back, 0xA5, bytes);
    lb_deinterleave(&m, back);
    CHECK(memcmp(back, plain, bytes) == 0, "%s x%d %lld x %lld: round trip differs",
          lowbit_type_info(type)->name, R, (long long)rows, (long long)cols);
    if (m.n_groups > 0) {
        /* block column 1 (or 0) of group 0: scale of row r at S r, chunk c of row r at
           S R + (c R + r) 4, S the scale's bytes */
        const int S = scale_bytes(type);
        const size_t block_bytes = (size_t)lowbit_type_info(type)->block_bytes;
        const int64_t b = cols / lowbit_type_info(type)->block_size > 1 ? 1 : 0;
        const uint8_t *bg = m.groups + (size_t)b * lb_interleaved_block_group_bytes(m.layout);
        int ok = 1;
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = plain + (size_t)r * row_bytes + (size_t)b * block_bytes;
            ok &= memcmp(bg + S * r, blk, (size_t)S) == 0;
            for (int c = 0; c < (int)(block_bytes - (size_t)S) / 4; c++) {
                ok &= memcmp(bg + S * R + (c * R + r) * 4, blk + S + 4 * c, 4) == 0;
            }
        }
        CHECK(ok, "%s x%d: bytes not where the layout puts them", lowbit_type_info(type)->name, R);
    }
    lb_interleaved_free(&m);
    free(back);
    free(plain);
}

/* ------------------------------------------------------------------------------------------ */
/* 2. Kernels on random bytes                                                                  */
/* ------------------------------------------------------------------------------------------ */

static lb_half random_scale(void) {
    return lb_fp32_to_fp16(rng_normal() * 0.05f * (rng_next() % 8 == 0 ? 100.0f : 1.0f));
}

static void check_kernel_bytes(const lb_kernel_set *set, const lb_kernel_set *ref,
                               lb_interleaved_layout layout, int R, lowbit_type type,
                               const char *level) {
    const int64_t nb = 5, max_tokens = 9;
    const size_t bg_bytes = lb_interleaved_block_group_bytes(layout);
    uint8_t *group = malloc(bg_bytes * (size_t)nb);
    block_q8_0 *act = malloc(sizeof *act * (size_t)(nb * max_tokens));
    int32_t *sums = malloc(sizeof *sums * (size_t)(nb * max_tokens));
    const size_t out_len = (size_t)(max_tokens * (R + 3));
    float *got = malloc(out_len * sizeof *got), *want = malloc(out_len * sizeof *want);
    for (size_t i = 0; i < bg_bytes * (size_t)nb; i++) group[i] = (uint8_t)rng_next();
    /* MXFP4's E8M0 bytes: the subnormal scales 0 and 1, the smallest normal 2, mid-range ones,
       large ones and the largest, 255 (2^127: outputs may overflow to infinity, identically);
       rows 1 and 5 only 0..2, so that their subnormal products are not lost in larger ones */
    static const uint8_t e8m0_cases[] = {0, 1, 2, 3, 120, 127, 128, 140, 240, 250, 254, 255};
    for (int64_t b = 0; b < nb; b++) {
        for (int r = 0; r < R; r++) {
            uint8_t *scale = group + (size_t)b * bg_bytes + (size_t)(scale_bytes(type) * r);
            if (type == LOWBIT_TYPE_MXFP4) {
                *scale = r % 4 == 1 ? (uint8_t)(rng_next() % 3)
                                    : e8m0_cases[rng_next() % sizeof e8m0_cases];
            } else {
                const lb_half d = random_scale();
                memcpy(scale, &d, 2);
            }
        }
    }
    /* the sign trick of the Q8_0 and AVX2 IQ4_NL kernels needs activations above -128 (the
       quantizers' range) */
    const int lowest = type == LOWBIT_TYPE_Q4_0 || type == LOWBIT_TYPE_MXFP4 ? -128 : -127;
    for (int64_t i = 0; i < nb * max_tokens; i++) {
        act[i].d = random_scale();
        int32_t s = 0;
        for (int j = 0; j < 32; j++) {
            const int v = i % 7 == 3 ? (j % 2 ? 127 : lowest)
                                     : lowest + (int)(rng_next() % (unsigned)(128 - lowest));
            act[i].qs[j] = (int8_t)v;
            s += v;
        }
        sums[i] = s;
    }
    for (int64_t nt = 1; nt <= max_tokens; nt++) {
        const int64_t stride = R + 3; /* outputs of other rows lie between: must stay untouched */
        for (size_t i = 0; i < out_len; i++) got[i] = want[i] = -1.0f;
        ref->interleaved[layout](nb, group, act, sums, nt, want, stride);
        set->interleaved[layout](nb, group, act, sums, nt, got, stride);
        CHECK(memcmp(got, want, out_len * sizeof *got) == 0,
              "%s x%d level %s, %lld tokens: kernel differs from the reference",
              lowbit_type_info(type)->name, R, level, (long long)nt);
    }
    free(group);
    free(act);
    free(sums);
    free(got);
    free(want);
}

/* Q4_K: random block groups with valid d and dmin, Q8_K activations with their bsums. */
static void check_kernel_bytes_q4_K(const lb_kernel_set *set, const lb_kernel_set *ref,
                                    lb_interleaved_layout layout, int R, const char *level) {
    const int64_t nb = 3, max_tokens = 9;
    const size_t bg_bytes = lb_interleaved_block_group_bytes(layout);
    uint8_t *group = malloc(bg_bytes * (size_t)nb);
    block_q8_K *act = malloc(sizeof *act * (size_t)(nb * max_tokens));
    const size_t out_len = (size_t)(max_tokens * (R + 3));
    float *got = malloc(out_len * sizeof *got), *want = malloc(out_len * sizeof *want);
    for (size_t i = 0; i < bg_bytes * (size_t)nb; i++) group[i] = (uint8_t)rng_next();
    for (int64_t b = 0; b < nb; b++) {
        for (int i = 0; i < 2 * R; i++) { /* row r's d at 4 r, its dmin at 4 r + 2 */
            const lb_half h = random_scale();
            memcpy(group + (size_t)b * bg_bytes + 2 * i, &h, 2);
        }
    }
    for (int64_t i = 0; i < nb * max_tokens; i++) {
        act[i].d = lb_fp16_to_fp32(random_scale());
        for (int j = 0; j < QK_K; j++) {
            const int v = i % 7 == 3 ? (j % 2 ? 127 : -128) : (int)(rng_next() % 256) - 128;
            act[i].qs[j] = (int8_t)v;
        }
        for (int k = 0; k < QK_K / 16; k++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += act[i].qs[16 * k + j];
            act[i].bsums[k] = (int16_t)s;
        }
    }
    for (int64_t nt = 1; nt <= max_tokens; nt++) {
        const int64_t stride = R + 3; /* outputs of other rows lie between: must stay untouched */
        for (size_t i = 0; i < out_len; i++) got[i] = want[i] = -1.0f;
        ref->interleaved[layout](nb, group, act, NULL, nt, want, stride);
        set->interleaved[layout](nb, group, act, NULL, nt, got, stride);
        CHECK(memcmp(got, want, out_len * sizeof *got) == 0,
              "q4_K x%d level %s, %lld tokens: kernel differs from the reference", R, level,
              (long long)nt);
    }
    free(group);
    free(act);
    free(got);
    free(want);
}

/* ------------------------------------------------------------------------------------------ */
/* 3. The matrix product                                                                       */
/* ------------------------------------------------------------------------------------------ */

static void check_matmul(const lb_kernel_set *set, lowbit_type type, int R, int64_t rows,
                         int64_t cols, int64_t n_tokens, lowbit_pool *const *pools, int n_pools,
                         const char *level) {
    const lowbit_type_traits *t = lowbit_type_info(type);
    cols = columns_for(type, cols);
    uint8_t *plain = random_matrix(type, rows, cols);
    float *x = malloc((size_t)(n_tokens * cols) * sizeof *x);
    for (int64_t i = 0; i < n_tokens * cols; i++) x[i] = rng_normal() * (i % 61 == 0 ? 9.0f : 1.0f);
    const size_t out_len = (size_t)(n_tokens * rows);
    float *got = malloc(out_len * sizeof *got), *want = malloc(out_len * sizeof *want);
    float *threaded = malloc(out_len * sizeof *threaded);
    const lowbit_type_traits *act_type = lowbit_type_info(t->vec_dot_type);
    const size_t act_bytes = lowbit_row_bytes(act_type->type, cols);
    uint8_t *act = malloc(act_bytes * (size_t)n_tokens);
    const size_t row_bytes = lowbit_row_bytes(type, cols);
    for (int64_t tok = 0; tok < n_tokens; tok++) {
        act_type->quantize_ref(x + tok * cols, act + (size_t)tok * act_bytes, cols, NULL);
    }
    const int64_t grouped = rows / R * R;
    for (int64_t tok = 0; tok < n_tokens; tok++) {
        for (int64_t r = 0; r < rows; r++) {
            const lowbit_vec_dot_fn dot = r < grouped ? t->vec_dot : set->vec_dot[type];
            want[tok * rows + r] =
                dot(cols, plain + (size_t)r * row_bytes, act + (size_t)tok * act_bytes);
        }
    }
    lb_interleaved_matrix m;
    lowbit_matmul_scratch scratch = {0};
    CHECK(lb_interleave(type, R, plain, rows, cols, NULL, &m) == LOWBIT_OK, "interleave");
    CHECK(lb_interleaved_matmul_with(set, &m, x, n_tokens, got, NULL, &scratch) == LOWBIT_OK,
          "matmul");
    int64_t first_bad = -1;
    for (size_t i = 0; i < out_len && first_bad < 0; i++) {
        if (memcmp(&got[i], &want[i], sizeof *got) != 0) first_bad = (int64_t)i;
    }
    CHECK(first_bad < 0, "%s x%d level %s %lld x %lld, %lld tokens: output %lld is %.9g, "
          "reference %.9g", t->name, R, level, (long long)rows, (long long)cols,
          (long long)n_tokens, (long long)first_bad, first_bad >= 0 ? got[first_bad] : 0.0f,
          first_bad >= 0 ? want[first_bad] : 0.0f);
    for (int p = 0; p < n_pools; p++) {
        CHECK(lb_interleaved_matmul_with(set, &m, x, n_tokens, threaded, pools[p], &scratch) ==
                  LOWBIT_OK, "threaded matmul");
        CHECK(memcmp(threaded, got, out_len * sizeof *got) == 0,
              "%s x%d level %s: %d threads change the output", t->name, R, level,
              lowbit_pool_size(pools[p]));
    }
    lowbit_matmul_scratch_free(&scratch);
    lb_interleaved_free(&m);
    free(plain);
    free(x);
    free(got);
    free(want);
    free(threaded);
    free(act);
}

int main(void) {
    const int quick = lb_test_quick();
    const int top = (int)lb_cpu_level_detected();
    printf("levels: scalar up to %s\n", lb_cpu_level_name((lb_cpu_level)top));

    CHECK(lowbit_pool_create(3, &repack_pool) == LOWBIT_OK, "pool");
    for (int ti = 0; ti < LB_ARRAY_LEN(types); ti++) {
        for (int ri = 0; ri < 2; ri++) {
            const int64_t shapes[][2] = {{1, 32}, {3, 64}, {8, 32}, {13, 96}, {21, 256}, {40, 64}};
            for (int s = 0; s < LB_ARRAY_LEN(shapes); s++) {
                check_round_trip(types[ti], group_rows[ri], shapes[s][0], shapes[s][1]);
            }
        }
    }

    lowbit_pool_destroy(repack_pool);

    lowbit_pool *pools[3];
    for (int p = 0; p < 3; p++) CHECK(lowbit_pool_create(p + 1, &pools[p]) == LOWBIT_OK, "pool");
    lb_kernel_set ref;
    lb_kernels_for_level(LB_CPU_SCALAR, &ref);
    for (int level = 0; level <= top; level++) {
        lb_kernel_set set;
        lb_kernels_for_level((lb_cpu_level)level, &set);
        const char *name = lb_cpu_level_name((lb_cpu_level)level);
        for (int ti = 0; ti < LB_ARRAY_LEN(types); ti++) {
            for (int ri = 0; ri < 2; ri++) {
                const lowbit_type type = types[ti];
                const int R = group_rows[ri];
                const lb_interleaved_layout layout =
                    (lb_interleaved_layout)lb_interleaved_layout_of(type, R);
                CHECK(set.interleaved[layout] != NULL, "level %s lacks a kernel", name);
                const int pref = set.interleave_rows[type];
                CHECK(pref == 0 || pref == 4 || pref == 8, "preferred rows %d", pref);
                if (type == LOWBIT_TYPE_Q4_K) check_kernel_bytes_q4_K(&set, &ref, layout, R, name);
                else check_kernel_bytes(&set, &ref, layout, R, type, name);
                const int64_t shapes[][3] = {{8, 32, 1},  {13, 64, 3},  {29, 256, 5},
                                             {64, 512, 1}, {37, 160, 37}, {256, 4096, 4}};
                const int n_shapes = quick ? 4 : LB_ARRAY_LEN(shapes);
                for (int s = 0; s < n_shapes; s++) {
                    check_matmul(&set, type, R, shapes[s][0], shapes[s][1], shapes[s][2], pools,
                                 quick ? 1 : 3, name);
                }
            }
        }
    }
    for (int p = 0; p < 3; p++) lowbit_pool_destroy(pools[p]);
    return lb_test_summary();
}
