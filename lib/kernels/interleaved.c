/*
 * Interleaved Q4_0 / Q8_0 / IQ4_NL / MXFP4 / Q4_K layouts (see interleaved.h): repacking, the
 * scalar reference kernels the SIMD ones are checked against, and the threaded matrix product.
 */
#include "interleaved.h"

#include "../formats/blocks.h"
#include "../formats/fp4.h"

#include <stdlib.h>

/* Tokens per pass over a thread's groups: their quantized activations (34 bytes per 32 columns,
   about 140 KiB for 32 rows of 4096) stay in the L2 cache while every group of the thread meets
   them, and each group's weights are read once per pass. */
#define TOKEN_CHUNK 32

/* ------------------------------------------------------------------------------------------ */
/* Layouts                                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct layout_info {
    lowbit_type type;
    int rows;        /* R */
    int scale_bytes; /* scale bytes of one plain block, first in it: 2 (fp16 d), 1 (E8M0 e) or
                        4 (Q4_K's fp16 d and dmin) */
    int qs_bytes;    /* the rest of one plain block: 16 (Q4_0, IQ4_NL, MXFP4), 32 (Q8_0) or 140
                        (Q4_K's 12 packed scale bytes and 128 quant bytes) */
    int block_cols;  /* columns of one block: 32, Q4_K's 256 */
    lowbit_type activation; /* Q8_0, Q4_K's Q8_K */
} layout_info;

static const layout_info layouts[LB_IL_COUNT] = {
    [LB_IL_Q4_0_X4] = {LOWBIT_TYPE_Q4_0, 4, sizeof(lb_half), QK4_0 / 2, 32, LOWBIT_TYPE_Q8_0},
    [LB_IL_Q4_0_X8] = {LOWBIT_TYPE_Q4_0, 8, sizeof(lb_half), QK4_0 / 2, 32, LOWBIT_TYPE_Q8_0},
    [LB_IL_Q8_0_X4] = {LOWBIT_TYPE_Q8_0, 4, sizeof(lb_half), QK8_0, 32, LOWBIT_TYPE_Q8_0},
    [LB_IL_Q8_0_X8] = {LOWBIT_TYPE_Q8_0, 8, sizeof(lb_half), QK8_0, 32, LOWBIT_TYPE_Q8_0},
    [LB_IL_IQ4_NL_X4] = {LOWBIT_TYPE_IQ4_NL, 4, sizeof(lb_half), QK4_NL / 2, 32, LOWBIT_TYPE_Q8_0},
    [LB_IL_IQ4_NL_X8] = {LOWBIT_TYPE_IQ4_NL, 8, sizeof(lb_half), QK4_NL / 2, 32, LOWBIT_TYPE_Q8_0},
    [LB_IL_MXFP4_X4] = {LOWBIT_TYPE_MXFP4, 4, 1, QK_MXFP4 / 2, 32, LOWBIT_TYPE_Q8_0},
    [LB_IL_MXFP4_X8] = {LOWBIT_TYPE_MXFP4, 8, 1, QK_MXFP4 / 2, 32, LOWBIT_TYPE_Q8_0},
    [LB_IL_Q4_K_X4] = {LOWBIT_TYPE_Q4_K, 4, 2 * sizeof(lb_half), K_SCALE_SIZE + QK_K / 2, QK_K,
                       LOWBIT_TYPE_Q8_K},
    [LB_IL_Q4_K_X8] = {LOWBIT_TYPE_Q4_K, 8, 2 * sizeof(lb_half), K_SCALE_SIZE + QK_K / 2, QK_K,
                       LOWBIT_TYPE_Q8_K},
};

static_assert(sizeof(block_q4_K) == 2 * sizeof(lb_half) + K_SCALE_SIZE + QK_K / 2,
              "Q4_K: d, dmin, then the scale and quant bytes the chunks permute");
/* lb_interleaved_scratch_bytes counts Q8_0 blocks and their sums: room for Q8_K's too */
static_assert(sizeof(block_q8_K) + sizeof(int32_t) <=
                  (QK_K / QK8_0) * (sizeof(block_q8_0) + sizeof(int32_t)),
              "Q8_K activations fit the scratch");

int lb_interleaved_layout_of(lowbit_type type, int rows_per_group) {
    for (int i = 0; i < LB_IL_COUNT; i++) {
        if (layouts[i].type == type && layouts[i].rows == rows_per_group) return i;
    }
    return -1;
}

size_t lb_interleaved_block_group_bytes(lb_interleaved_layout layout) {
    const layout_info *l = &layouts[layout];
    return (size_t)l->rows * (size_t)(l->scale_bytes + l->qs_bytes);
}

int lb_interleave_rows_preferred(lowbit_type type) {
    return (unsigned)type < LOWBIT_TYPE_COUNT ? lb_active_kernels()->interleave_rows[type] : 0;
}

/* All block types alike: the scale (S bytes), then the quant bytes (Q4_K: d and dmin, then the
   packed scales and the quants, each 4-byte chunk of its 140 bytes one chunk of the layout). */
static void interleave_block_column(const layout_info *l, const uint8_t *const *row_blocks,
                                    uint8_t *dst) {
    const int R = l->rows, S = l->scale_bytes;
    for (int r = 0; r < R; r++) memcpy(dst + S * r, row_blocks[r], (size_t)S);
    uint8_t *qs = dst + S * R;
    for (int c = 0; c < l->qs_bytes / 4; c++) {
        for (int r = 0; r < R; r++) {
            memcpy(qs + (size_t)(c * R + r) * 4, row_blocks[r] + S + 4 * c, 4);
        }
    }
}

static void deinterleave_block_column(const layout_info *l, const uint8_t *src,
                                      uint8_t *const *row_blocks) {
    const int R = l->rows, S = l->scale_bytes;
    for (int r = 0; r < R; r++) memcpy(row_blocks[r], src + S * r, (size_t)S);
    const uint8_t *qs = src + S * R;
    for (int c = 0; c < l->qs_bytes / 4; c++) {
        for (int r = 0; r < R; r++) {
            memcpy(row_blocks[r] + S + 4 * c, qs + (size_t)(c * R + r) * 4, 4);
        }
    }
}

typedef struct repack_job {
    const layout_info *l;
    const uint8_t *src;
    size_t row_bytes, block_bytes, bg_bytes;
    int64_t nb;
    lb_interleaved_matrix *out;
} repack_job;

static void repack_groups(void *p, int64_t begin, int64_t end) {
    const repack_job *job = p;
    const int R = job->l->rows;
    for (int64_t g = begin; g < end; g++) {
        for (int64_t b = 0; b < job->nb; b++) {
            const uint8_t *row_blocks[8];
            for (int r = 0; r < R; r++) {
                row_blocks[r] =
                    job->src + (size_t)(g * R + r) * job->row_bytes + (size_t)b * job->block_bytes;
            }
            interleave_block_column(job->l, row_blocks,
                                    job->out->groups + (size_t)g * job->out->group_bytes +
                                        (size_t)b * job->bg_bytes);
        }
    }
}

lowbit_status lb_interleave(lowbit_type type, int rows_per_group, const void *weights,
                            int64_t rows, int64_t cols, lowbit_pool *pool,
                            lb_interleaved_matrix *out) {
    if (!out) return LOWBIT_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    const int layout = lb_interleaved_layout_of(type, rows_per_group);
    if (layout < 0 || !weights || rows <= 0 || cols <= 0) return LOWBIT_ERR_INVALID_ARGUMENT;
    const layout_info *l = &layouts[layout];
    if (cols % l->block_cols != 0) return LOWBIT_ERR_SHAPE;
    const int64_t nb = cols / l->block_cols;
    const size_t block_bytes = (size_t)(l->scale_bytes + l->qs_bytes);
    const size_t row_bytes = lowbit_row_bytes(type, cols);
    *out = (lb_interleaved_matrix){type, l->rows, (lb_interleaved_layout)layout, rows, cols,
                                   rows / l->rows, 0, NULL, NULL, row_bytes};
    out->group_bytes = (size_t)nb * lb_interleaved_block_group_bytes((lb_interleaved_layout)layout);
    const int64_t tail_rows = rows - out->n_groups * l->rows;
    out->groups = malloc(out->n_groups > 0 ? out->group_bytes * (size_t)out->n_groups : 1);
    out->tail = tail_rows > 0 ? malloc(row_bytes * (size_t)tail_rows) : NULL;
    if (!out->groups || (tail_rows > 0 && !out->tail)) {
        lb_interleaved_free(out);
        return LOWBIT_ERR_NO_MEMORY;
    }
    const uint8_t *src = weights;
    repack_job job = {l, src, row_bytes, block_bytes,
                      lb_interleaved_block_group_bytes((lb_interleaved_layout)layout), nb, out};
    lowbit_pool_run(pool, out->n_groups, repack_groups, &job);
    if (tail_rows > 0) {
        memcpy(out->tail, src + (size_t)(out->n_groups * l->rows) * row_bytes,
               row_bytes * (size_t)tail_rows);
    }
    return LOWBIT_OK;
}

void lb_deinterleave(const lb_interleaved_matrix *m, void *plain) {
    const layout_info *l = &layouts[m->layout];
    const int64_t nb = m->cols / l->block_cols;
    const size_t block_bytes = (size_t)(l->scale_bytes + l->qs_bytes);
    const size_t bg_bytes = lb_interleaved_block_group_bytes(m->layout);
    uint8_t *dst = plain;
    for (int64_t g = 0; g < m->n_groups; g++) {
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *row_blocks[8];
            for (int r = 0; r < l->rows; r++) {
                row_blocks[r] = dst + (size_t)(g * l->rows + r) * m->tail_row_bytes +
                                (size_t)b * block_bytes;
            }
            deinterleave_block_column(
                l, m->groups + (size_t)g * m->group_bytes + (size_t)b * bg_bytes, row_blocks);
        }
    }
    const int64_t tail_rows = m->rows - m->n_groups * l->rows;
    if (tail_rows > 0) {
        memcpy(dst + (size_t)(m->n_groups * l->rows) * m->tail_row_bytes, m->tail,
               m->tail_row_bytes * (size_t)tail_rows);
    }
}

void lb_interleaved_free(lb_interleaved_matrix *m) {
    if (!m) return;
    free(m->groups);
    free(m->tail);
    m->groups = NULL;
    m->tail = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Scalar reference kernels                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Row r's scale in a block group: an fp16 d (Q4_0, Q8_0, IQ4_NL) ... */
static float fp16_scale(const uint8_t *bg, int r) {
    lb_half h;
    memcpy(&h, bg + 2 * r, sizeof h);
    return lb_fp16_to_fp32(h);
}

/* ... or MXFP4's E8M0 byte e decoded halved as fp4.c does, 2^(e - 128) (e = 0 and 1 are float
   subnormals), because its levels are the doubled E2M1 values. */
static float e8m0_half_scale(const uint8_t *bg, int r) {
    return lb_e8m0_half(bg[r]);
}

/* Row r of a Q4_0xR block group against one activation block: the exact integer sum. */
static int32_t q4_0_group_row_sum(const uint8_t *bg, int R, int r, const block_q8_0 *a) {
    const uint8_t *qs = bg + 2 * R;
    int32_t sum = 0;
    for (int c = 0; c < 4; c++) {
        for (int i = 0; i < 4; i++) {
            const uint8_t byte = qs[(c * R + r) * 4 + i];
            sum += ((byte & 0x0F) - 8) * a->qs[4 * c + i] + ((byte >> 4) - 8) * a->qs[16 + 4 * c + i];
        }
    }
    return sum;
}

static int32_t q8_0_group_row_sum(const uint8_t *bg, int R, int r, const block_q8_0 *a) {
    const int8_t *qs = (const int8_t *)(bg + 2 * R);
    int32_t sum = 0;
    for (int c = 0; c < 8; c++) {
        for (int i = 0; i < 4; i++) sum += qs[(c * R + r) * 4 + i] * a->qs[4 * c + i];
    }
    return sum;
}

/* IQ4_NL: the nibbles are codes into the signed level table, in Q4_0's places. */
static int32_t iq4_nl_group_row_sum(const uint8_t *bg, int R, int r, const block_q8_0 *a) {
    const uint8_t *qs = bg + 2 * R;
    int32_t sum = 0;
    for (int c = 0; c < 4; c++) {
        for (int i = 0; i < 4; i++) {
            const uint8_t byte = qs[(c * R + r) * 4 + i];
            sum += lb_kvalues_iq4nl[byte & 0x0F] * a->qs[4 * c + i] +
                   lb_kvalues_iq4nl[byte >> 4] * a->qs[16 + 4 * c + i];
        }
    }
    return sum;
}

/* MXFP4: Q4_0's places after R one-byte scales, the nibbles codes into the doubled values. */
static int32_t mxfp4_group_row_sum(const uint8_t *bg, int R, int r, const block_q8_0 *a) {
    const uint8_t *qs = bg + R;
    int32_t sum = 0;
    for (int c = 0; c < 4; c++) {
        for (int i = 0; i < 4; i++) {
            const uint8_t byte = qs[(c * R + r) * 4 + i];
            sum += lb_fp4_doubled[byte & 0x0F] * a->qs[4 * c + i] +
                   lb_fp4_doubled[byte >> 4] * a->qs[16 + 4 * c + i];
        }
    }
    return sum;
}

typedef int32_t (*group_row_sum_fn)(const uint8_t *bg, int R, int r, const block_q8_0 *a);
typedef float (*group_scale_fn)(const uint8_t *bg, int r);

/* The reference's float order: sum += (float)sumi * (d_w * d_a), block by block (MXFP4's
   reference computes sum += (d_a * d_w) * (float)sumi, the same bits: IEEE products and sums
   commute). The activation sums are not used: this also checks that the caller's are consistent
   with the kernels that take them. */
static void reference_group(group_row_sum_fn row_sum, group_scale_fn scale, int R,
                            size_t bg_bytes, int64_t nb,
                            const void *group, const void *activations, int64_t n_tokens,
                            float *out, int64_t out_stride) {
    const uint8_t *g = group;
    const block_q8_0 *act = activations;
    for (int64_t t = 0; t < n_tokens; t++) {
        const block_q8_0 *a = act + t * nb;
        for (int r = 0; r < R; r++) {
            float sum = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *bg = g + (size_t)b * bg_bytes;
                const int32_t sumi = row_sum(bg, R, r, &a[b]);
                sum += (float)sumi * (scale(bg, r) * lb_fp16_to_fp32(a[b].d));
            }
            out[t * out_stride + r] = sum;
        }
    }
}

#define DEFINE_REFERENCE(NAME, ROW_SUM, SCALE, R, SCALE_BYTES, QS_BYTES)                         \
    static void NAME(int64_t nb, const void *group, const void *activations,                     \
                     const int32_t *activation_sums, int64_t n_tokens, float *out,                \
                     int64_t out_stride) {                                                        \
        (void)activation_sums;                                                                   \
        reference_group(ROW_SUM, SCALE, R, (size_t)(R) * ((SCALE_BYTES) + (QS_BYTES)), nb,        \
                        group, activations, n_tokens, out, out_stride);                          \
    }

DEFINE_REFERENCE(reference_q4_0_x4, q4_0_group_row_sum, fp16_scale, 4, 2, 16)
DEFINE_REFERENCE(reference_q4_0_x8, q4_0_group_row_sum, fp16_scale, 8, 2, 16)
DEFINE_REFERENCE(reference_q8_0_x4, q8_0_group_row_sum, fp16_scale, 4, 2, 32)
DEFINE_REFERENCE(reference_q8_0_x8, q8_0_group_row_sum, fp16_scale, 8, 2, 32)
DEFINE_REFERENCE(reference_iq4_nl_x4, iq4_nl_group_row_sum, fp16_scale, 4, 2, 16)
DEFINE_REFERENCE(reference_iq4_nl_x8, iq4_nl_group_row_sum, fp16_scale, 8, 2, 16)
DEFINE_REFERENCE(reference_mxfp4_x4, mxfp4_group_row_sum, e8m0_half_scale, 4, 1, 16)
DEFINE_REFERENCE(reference_mxfp4_x8, mxfp4_group_row_sum, e8m0_half_scale, 8, 1, 16)

/* Q4_KxR: byte i of row r's 140 bytes after d and dmin (12 packed scale bytes, then qs) in a
   block group. */
static uint8_t q4_K_group_byte(const uint8_t *bg, int R, int r, int i) {
    return bg[4 * R + ((i / 4) * R + r) * 4 + i % 4];
}

/* Sub-block j's 6-bit scale and min from the 12 packed bytes (GGUF's packing, as
   kquants_minmax.c reads it). */
static void q4_K_scale_min(const uint8_t *bg, int R, int r, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = q4_K_group_byte(bg, R, r, j) & 63;
        *mn = q4_K_group_byte(bg, R, r, j + 4) & 63;
    } else {
        *sc = (q4_K_group_byte(bg, R, r, j + 4) & 0x0F) |
              ((q4_K_group_byte(bg, R, r, j - 4) >> 6) << 4);
        *mn = (q4_K_group_byte(bg, R, r, j + 4) >> 4) | ((q4_K_group_byte(bg, R, r, j) >> 6) << 4);
    }
}

/* Row r of a Q4_KxR block group against one Q8_K block: the reference's term
   d * (float)sum_scaled - dmin * (float)sum_mins, its integer sums exact. */
static float q4_K_group_row_term(const uint8_t *bg, int R, int r, const block_q8_K *a) {
    int32_t sum_scaled = 0, sum_mins = 0;
    for (int j = 0; j < 8; j++) {
        const int c = j / 2, high = j % 2;
        int32_t dot = 0;
        for (int l = 0; l < 32; l++) {
            const uint8_t byte = q4_K_group_byte(bg, R, r, K_SCALE_SIZE + 32 * c + l);
            dot += (high ? byte >> 4 : byte & 0x0F) * a->qs[32 * j + l];
        }
        int sc, mn;
        q4_K_scale_min(bg, R, r, j, &sc, &mn);
        sum_scaled += sc * dot;
        sum_mins += mn * (a->bsums[2 * j] + a->bsums[2 * j + 1]);
    }
    lb_half d, dmin;
    memcpy(&d, bg + 4 * r, sizeof d);
    memcpy(&dmin, bg + 4 * r + 2, sizeof dmin);
    const float dd = lb_fp16_to_fp32(d) * a->d, dm = lb_fp16_to_fp32(dmin) * a->d;
    return dd * (float)sum_scaled - dm * (float)sum_mins;
}

/* The reference's float order: sum += term, super-block by super-block. */
static void reference_q4_K_group(int R, int64_t nb, const void *group, const void *activations,
                                 int64_t n_tokens, float *out, int64_t out_stride) {
    const uint8_t *g = group;
    const size_t bg_bytes = (size_t)R * sizeof(block_q4_K);
    for (int64_t t = 0; t < n_tokens; t++) {
        const block_q8_K *a = (const block_q8_K *)activations + t * nb;
        for (int r = 0; r < R; r++) {
            float sum = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                sum += q4_K_group_row_term(g + (size_t)b * bg_bytes, R, r, &a[b]);
            }
            out[t * out_stride + r] = sum;
        }
    }
}

#define DEFINE_Q4_K_REFERENCE(NAME, R)                                                           \
    static void NAME(int64_t nb, const void *group, const void *activations,                     \
                     const int32_t *activation_sums, int64_t n_tokens, float *out,                \
                     int64_t out_stride) {                                                        \
        (void)activation_sums;                                                                   \
        reference_q4_K_group(R, nb, group, activations, n_tokens, out, out_stride);             \
    }

DEFINE_Q4_K_REFERENCE(reference_q4_K_x4, 4)
DEFINE_Q4_K_REFERENCE(reference_q4_K_x8, 8)

/* The references are installed at every level; interleave_rows stays 0 (plain) until a SIMD file
   installs kernels that measured faster. */
void lb_register_interleaved_reference(lb_kernel_set *set) {
    set->interleaved[LB_IL_Q4_0_X4] = reference_q4_0_x4;
    set->interleaved[LB_IL_Q4_0_X8] = reference_q4_0_x8;
    set->interleaved[LB_IL_Q8_0_X4] = reference_q8_0_x4;
    set->interleaved[LB_IL_Q8_0_X8] = reference_q8_0_x8;
    set->interleaved[LB_IL_IQ4_NL_X4] = reference_iq4_nl_x4;
    set->interleaved[LB_IL_IQ4_NL_X8] = reference_iq4_nl_x8;
    set->interleaved[LB_IL_MXFP4_X4] = reference_mxfp4_x4;
    set->interleaved[LB_IL_MXFP4_X8] = reference_mxfp4_x8;
    set->interleaved[LB_IL_Q4_K_X4] = reference_q4_K_x4;
    set->interleaved[LB_IL_Q4_K_X8] = reference_q4_K_x8;
}

/* ------------------------------------------------------------------------------------------ */
/* The matrix product                                                                          */
/* ------------------------------------------------------------------------------------------ */

size_t lb_interleaved_scratch_bytes(int64_t cols, int64_t n_tokens) {
    const size_t nb = (size_t)(cols / 32);
    return (size_t)n_tokens * nb * (sizeof(block_q8_0) + sizeof(int32_t));
}

typedef struct quantize_job {
    lowbit_quantize_row_fn quantize;
    const float *x;
    uint8_t *act;
    size_t act_row_bytes;
    int32_t *sums; /* NULL for Q8_K activations: their blocks carry bsums */
    int64_t cols, nb;
} quantize_job;

static void quantize_tokens(void *p, int64_t begin, int64_t end) {
    quantize_job *job = p;
    for (int64_t t = begin; t < end; t++) {
        uint8_t *row = job->act + (size_t)t * job->act_row_bytes;
        /* the status is not checked, as in lowbit_matmul: a block whose scale would exceed fp16
           (|x| above 127 * 65504) is beyond what the plain path handles either */
        (void)job->quantize(job->x + t * job->cols, row, job->cols, NULL);
        if (!job->sums) continue;
        const block_q8_0 *a = (const block_q8_0 *)row;
        int32_t *s = job->sums + t * job->nb;
        for (int64_t b = 0; b < job->nb; b++) {
            int32_t sum = 0;
            for (int j = 0; j < QK8_0; j++) sum += a[b].qs[j];
            s[b] = sum;
        }
    }
}

typedef struct product_job {
    const lb_interleaved_matrix *m;
    lb_interleaved_fn kernel;
    lowbit_vec_dot_fn tail_dot;
    const uint8_t *act;
    size_t act_row_bytes;
    const int32_t *sums;
    int64_t nb, n_tokens;
    float *out;
} product_job;

/* Items are the groups, then the tail rows one by one. */
static void product_items(void *p, int64_t begin, int64_t end) {
    const product_job *job = p;
    const lb_interleaved_matrix *m = job->m;
    const int R = m->rows_per_group;
    const int64_t group_end = LB_MIN(end, m->n_groups);
    for (int64_t t0 = 0; t0 < job->n_tokens; t0 += TOKEN_CHUNK) {
        const int64_t nt = LB_MIN(TOKEN_CHUNK, job->n_tokens - t0);
        for (int64_t g = begin; g < group_end; g++) {
            job->kernel(job->nb, m->groups + (size_t)g * m->group_bytes,
                        job->act + (size_t)t0 * job->act_row_bytes,
                        job->sums + t0 * job->nb, nt, job->out + t0 * m->rows + g * R, m->rows);
        }
    }
    for (int64_t item = LB_MAX(begin, m->n_groups); item < end; item++) {
        const int64_t tail_row = item - m->n_groups;
        const uint8_t *w = m->tail + (size_t)tail_row * m->tail_row_bytes;
        for (int64_t t = 0; t < job->n_tokens; t++) {
            job->out[t * m->rows + m->n_groups * R + tail_row] =
                job->tail_dot(m->cols, w, job->act + (size_t)t * job->act_row_bytes);
        }
    }
}

static int reserve(lowbit_matmul_scratch *s, size_t bytes) {
    if (bytes <= s->capacity) return 1;
    void *grown = realloc(s->buffer, bytes);
    if (!grown) return 0;
    s->buffer = grown;
    s->capacity = bytes;
    return 1;
}

lowbit_status lb_interleaved_matmul_with(const lb_kernel_set *set, const lb_interleaved_matrix *m,
                                         const float *x, int64_t n_tokens, float *out,
                                         lowbit_pool *pool, lowbit_matmul_scratch *scratch) {
    if (!set || !m || !m->groups || !x || !out || !scratch || n_tokens <= 0) {
        return LOWBIT_ERR_INVALID_ARGUMENT;
    }
    const layout_info *l = &layouts[m->layout];
    const int64_t nb = m->cols / l->block_cols;
    if (!reserve(scratch, lb_interleaved_scratch_bytes(m->cols, n_tokens))) {
        return LOWBIT_ERR_NO_MEMORY;
    }
    /* the sums first: they need 4-byte alignment, Q8_0 blocks only 2 (Q8_K's 292 bytes keep
       their float d aligned) */
    int32_t *sums = scratch->buffer;
    uint8_t *act = (uint8_t *)(sums + n_tokens * nb);
    const size_t act_row_bytes = lowbit_row_bytes(l->activation, m->cols);
    quantize_job q = {set->quantize_activation[l->activation], x, act, act_row_bytes,
                      l->activation == LOWBIT_TYPE_Q8_0 ? sums : NULL, m->cols, nb};
    lowbit_pool_run(n_tokens > 1 ? pool : NULL, n_tokens, quantize_tokens, &q);
    product_job job = {m, set->interleaved[m->layout], set->vec_dot[m->type], act,
                       act_row_bytes, sums, nb, n_tokens, out};
    const int64_t tail_rows = m->rows - m->n_groups * m->rows_per_group;
    lowbit_pool_run(pool, m->n_groups + tail_rows, product_items, &job);
    return LOWBIT_OK;
}

lowbit_status lb_interleaved_matmul(const lb_interleaved_matrix *m, const float *x,
                                    int64_t n_tokens, float *out, lowbit_pool *pool,
                                    lowbit_matmul_scratch *scratch) {
    return lb_interleaved_matmul_with(lb_active_kernels(), m, x, n_tokens, out, pool, scratch);
}
