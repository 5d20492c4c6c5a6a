/*
 * Matrix products over any format of the type table: Y = X W^T, with W a matrix of weight rows
 * (rows x cols, any type) and X a batch of float activation rows (n_tokens x cols).
 *
 * The activations are quantized once per call to the weight type's activation format (Q8_0,
 * Q8_1, Q8_K, or the float type itself), then every (token, weight row) pair is one dot product
 * of the type table. Threads take contiguous ranges of weight rows and loop over all tokens, so
 * each weight row is read from memory once per call however many tokens there are, and every
 * output element is computed by the same code whatever the thread count.
 */
#include "kernels.h"

#include <assert.h>
#include <stdlib.h>

typedef struct matmul_job {
    lowbit_vec_dot_fn vec_dot;
    lb_vec_dot_tokens_fn vec_dot_tokens; /* NULL: one vec_dot per token */
    const uint8_t *weights;
    size_t weight_row_bytes;
    const uint8_t *activations; /* n_tokens quantized rows */
    size_t activation_row_bytes;
    int64_t cols, rows, n_tokens;
    float *out;                 /* n_tokens x rows */
} matmul_job;

/* Weight row r against one group of tokens [t, t + count), count <= LB_DOT_TOKENS: by the
   multi-token kernel where the format has one, else one dot product per token. */
static void row_times_token_group(const matmul_job *job, int64_t r, int64_t t, int count) {
    const uint8_t *w = job->weights + (size_t)r * job->weight_row_bytes;
    const uint8_t *a = job->activations + (size_t)t * job->activation_row_bytes;
    if (job->vec_dot_tokens && job->n_tokens > 1) {
        float dots[LB_DOT_TOKENS];
        job->vec_dot_tokens(job->cols, w, a, job->activation_row_bytes, count, dots);
        for (int i = 0; i < count; i++) job->out[(t + i) * job->rows + r] = dots[i];
        return;
    }
    for (int i = 0; i < count; i++) {
        job->out[(t + i) * job->rows + r] =
            job->vec_dot(job->cols, w, a + (size_t)i * job->activation_row_bytes);
    }
}

/* Rows and tokens go in tiles, ROW_TILE weight rows against TOKEN_TILE activation rows, so that a
   batch's activations are read from L2 for each weight row of a tile instead of from memory:
   512 Q8_K activation rows of 4096 take 2.3 MB, more than a core's L2. A tile's weight rows
   (under 64 KB for 4096 columns of any quantized format) stay in L2 across its token tiles.
   Within a tile a group of LB_DOT_TOKENS activation rows meets every weight row before the next
   group: the group (four rows, 18 KB for 4096 Q8_K columns) stays in L1, and each call reads one
   weight row from L2, where taking every group for one weight row read the whole token tile from
   L2 for each row (GEMM32 on two threads, Intel Xeon, four alternating runs: TQ2_0 311 -> 372
   GFLOP/s, Q6_K 238 -> 252, Q4_K 240 -> 246, the rest alike). The multi-token kernels reproduce
   the one-token kernel bit for bit, so the tiling changes no result. */
#define ROW_TILE 16
#define TOKEN_TILE 64
static_assert(TOKEN_TILE % LB_DOT_TOKENS == 0, "token tiles hold whole groups");

static void matmul_rows(void *p, int64_t begin, int64_t end) {
    const matmul_job *job = p;
    for (int64_t r0 = begin; r0 < end; r0 += ROW_TILE) {
        const int64_t r1 = LB_MIN(r0 + ROW_TILE, end);
        for (int64_t t0 = 0; t0 < job->n_tokens; t0 += TOKEN_TILE) {
            const int64_t t1 = LB_MIN(t0 + TOKEN_TILE, job->n_tokens);
            for (int64_t t = t0; t < t1; t += LB_DOT_TOKENS) {
                const int count = (int)LB_MIN(LB_DOT_TOKENS, t1 - t);
                for (int64_t r = r0; r < r1; r++) row_times_token_group(job, r, t, count);
            }
        }
    }
}

typedef struct quantize_job {
    lowbit_quantize_row_fn quantize;
    const float *x;
    uint8_t *out;
    int64_t cols;
    size_t row_bytes;
} quantize_job;

static void quantize_activation_rows(void *p, int64_t begin, int64_t end) {
    const quantize_job *job = p;
    for (int64_t t = begin; t < end; t++) {
        job->quantize(job->x + t * job->cols, job->out + (size_t)t * job->row_bytes, job->cols, NULL);
    }
}

void lowbit_matmul_scratch_free(lowbit_matmul_scratch *s) {
    if (!s) return;
    free(s->buffer);
    s->buffer = NULL;
    s->capacity = 0;
}

static int reserve(lowbit_matmul_scratch *s, size_t bytes) {
    if (bytes <= s->capacity) return 1;
    void *grown = realloc(s->buffer, bytes);
    if (!grown) return 0;
    s->buffer = grown;
    s->capacity = bytes;
    return 1;
}

lowbit_status lowbit_matmul(lowbit_type type, const void *weights, int64_t rows, int64_t cols,
                            const float *x, int64_t n_tokens, float *out, lowbit_pool *pool,
                            lowbit_matmul_scratch *scratch) {
    const lowbit_type_traits *t = lowbit_type_info(type);
    if (!t || !t->vec_dot || !weights || !x || !out || !scratch || rows <= 0 || cols <= 0 ||
        n_tokens <= 0) {
        return LOWBIT_ERR_INVALID_ARGUMENT;
    }
    const lowbit_type_traits *act = lowbit_type_info(t->vec_dot_type);
    if (cols % t->block_size != 0 || cols % act->block_size != 0) return LOWBIT_ERR_SHAPE;
    const size_t activation_row_bytes = lowbit_row_bytes(act->type, cols);
    if (!reserve(scratch, activation_row_bytes * (size_t)n_tokens)) return LOWBIT_ERR_NO_MEMORY;
    quantize_job q = {lb_quantize_activation_kernel(act->type), x, scratch->buffer, cols,
                      activation_row_bytes};
    lowbit_pool_run(n_tokens > 1 ? pool : NULL, n_tokens, quantize_activation_rows, &q);
    matmul_job job = {lb_vec_dot_kernel(type), lb_vec_dot_tokens_kernel(type), weights,
                      lowbit_row_bytes(type, cols),
                      scratch->buffer, activation_row_bytes, cols, rows, n_tokens, out};
    lowbit_pool_run(pool, rows, matmul_rows, &job);
    return LOWBIT_OK;
}
