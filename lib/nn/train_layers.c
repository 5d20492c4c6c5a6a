/*
 * The float layers of an image classifier: a cache-blocked matrix product, each layer kind's
 * forward and backward pass over a batch (HWC samples), softmax cross-entropy, and the
 * inference forward pass lb_net_forward.
 *
 * Determinism: every output element is computed by one thread with a fixed summation order.
 * The matrix product splits its output into tiles chosen from the shapes alone; reductions over
 * the batch (weight and bias gradients, batch-norm statistics) are done per output element in
 * increasing row order. So nothing depends on the pool's size.
 */
#include "train.h"

#include <float.h>
#include <stdlib.h>

/* ---- matrix product ------------------------------------------------------------------------ */

/* Register block of the inner kernel: 4 rows x 8 columns of C are 8 SSE registers of
   accumulators (16 on x86-64), leaving room for the B row and the broadcast A value. */
#define GEMM_MR 4
#define GEMM_NR 8
/* Cache blocks: a packed KC x NC slice of B (64 KiB) stays in L2 while every row of the tile
   streams past it. */
#define GEMM_KC 256
#define GEMM_NC 64
#define GEMM_MC 64
/* Enough tiles for the pool to balance even on a small product. */
#define GEMM_MIN_TILES 16

typedef struct gemm_job {
    int64_t m, n, k;
    lb_matrix_view a, b;
    float *c;
    int64_t ldc;
    int64_t mc, nc, tiles_n;
} gemm_job;

/* Copies B[k0 .. k0+kc) x [n0 .. n0+nc) into NR-wide panels, each kc x NR row-major and padded
   with zeros, so the kernel reads B contiguously whatever its strides. */
static void gemm_pack_b(const gemm_job *job, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                        float *dst) {
    const int64_t rs = job->b.row_stride, cs = job->b.col_stride;
    for (int64_t p = 0; p < nc; p += GEMM_NR) {
        const int64_t width = LB_MIN(GEMM_NR, nc - p);
        float *panel = dst + p * kc;
        for (int64_t kk = 0; kk < kc; kk++) {
            const float *src = job->b.p + (k0 + kk) * rs + (n0 + p) * cs;
            float *row = panel + kk * GEMM_NR;
            int64_t j = 0;
            if (cs == 1) {
                for (; j < width; j++) row[j] = src[j];
            } else {
                for (; j < width; j++) row[j] = src[j * cs];
            }
            for (; j < GEMM_NR; j++) row[j] = 0.0f;
        }
    }
}

/* c[4 x 8] (row stride ldc) = (first ? 0 : c) + sum over k of a_r[k * acs] * bp[k][j], terms
   added in increasing k, one multiply and one add each. gcc's auto-vectorizer turns the plain
   loop version into shuffles across k, so with GNU C the 8 accumulators are written as 4-float
   vectors (generic vector extensions, not intrinsics: SSE2 on x86-64, NEON on AArch64); the
   arithmetic per element is the same either way. */
#if defined(__GNUC__)
typedef float gemm_v4 __attribute__((vector_size(16)));

static inline gemm_v4 gemm_load(const float *p) {
    gemm_v4 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void gemm_store(float *p, gemm_v4 v) { memcpy(p, &v, sizeof v); }

static void gemm_kernel_4x8(int64_t kc, const float *a0, const float *a1, const float *a2,
                            const float *a3, int64_t acs, const float *bp, float *c,
                            int64_t ldc, int first) {
    gemm_v4 c00, c01, c10, c11, c20, c21, c30, c31;
    if (first) {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = (gemm_v4){0.0f, 0.0f, 0.0f, 0.0f};
    } else {
        c00 = gemm_load(c), c01 = gemm_load(c + 4);
        c10 = gemm_load(c + ldc), c11 = gemm_load(c + ldc + 4);
        c20 = gemm_load(c + 2 * ldc), c21 = gemm_load(c + 2 * ldc + 4);
        c30 = gemm_load(c + 3 * ldc), c31 = gemm_load(c + 3 * ldc + 4);
    }
    for (int64_t k = 0; k < kc; k++) {
        const gemm_v4 b0 = gemm_load(bp + k * GEMM_NR), b1 = gemm_load(bp + k * GEMM_NR + 4);
        const float x0 = a0[k * acs], x1 = a1[k * acs], x2 = a2[k * acs], x3 = a3[k * acs];
        c00 += x0 * b0;
        c01 += x0 * b1;
        c10 += x1 * b0;
        c11 += x1 * b1;
        c20 += x2 * b0;
        c21 += x2 * b1;
        c30 += x3 * b0;
        c31 += x3 * b1;
    }
    gemm_store(c, c00), gemm_store(c + 4, c01);
    gemm_store(c + ldc, c10), gemm_store(c + ldc + 4, c11);
    gemm_store(c + 2 * ldc, c20), gemm_store(c + 2 * ldc + 4, c21);
    gemm_store(c + 3 * ldc, c30), gemm_store(c + 3 * ldc + 4, c31);
}
#else
static void gemm_kernel_4x8(int64_t kc, const float *a0, const float *a1, const float *a2,
                            const float *a3, int64_t acs, const float *bp, float *c,
                            int64_t ldc, int first) {
    float acc[GEMM_MR][GEMM_NR];
    for (int r = 0; r < GEMM_MR; r++)
        for (int j = 0; j < GEMM_NR; j++) acc[r][j] = first ? 0.0f : c[r * ldc + j];
    for (int64_t k = 0; k < kc; k++) {
        const float *b = bp + k * GEMM_NR;
        const float x[GEMM_MR] = {a0[k * acs], a1[k * acs], a2[k * acs], a3[k * acs]};
        for (int r = 0; r < GEMM_MR; r++)
            for (int j = 0; j < GEMM_NR; j++) acc[r][j] += x[r] * b[j];
    }
    for (int r = 0; r < GEMM_MR; r++)
        for (int j = 0; j < GEMM_NR; j++) c[r * ldc + j] = acc[r][j];
}
#endif

/* One block of at most 4 x 8: a partial block goes through a full-size buffer (missing rows
   repeat the last row of A), so each element sees exactly the same operations either way. */
static void gemm_block(const gemm_job *job, int64_t i, int64_t rows, int64_t p, int64_t cols,
                       int64_t k0, int64_t kc, const float *bp) {
    const float *a_rows[GEMM_MR];
    for (int r = 0; r < GEMM_MR; r++) {
        const int64_t row = i + LB_MIN(r, rows - 1);
        a_rows[r] = job->a.p + row * job->a.row_stride + k0 * job->a.col_stride;
    }
    const int first = k0 == 0;
    float *c = job->c + i * job->ldc + p;
    if (rows == GEMM_MR && cols == GEMM_NR) {
        gemm_kernel_4x8(kc, a_rows[0], a_rows[1], a_rows[2], a_rows[3], job->a.col_stride, bp, c,
                        job->ldc, first);
        return;
    }
    float tile[GEMM_MR * GEMM_NR] = {0};
    if (!first) {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++) tile[r * GEMM_NR + j] = c[r * job->ldc + j];
    }
    gemm_kernel_4x8(kc, a_rows[0], a_rows[1], a_rows[2], a_rows[3], job->a.col_stride, bp, tile,
                    GEMM_NR, first);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) c[r * job->ldc + j] = tile[r * GEMM_NR + j];
}

static void gemm_tiles(void *ctx, int64_t begin, int64_t end) {
    const gemm_job *job = ctx;
    _Alignas(64) float packed[GEMM_KC * GEMM_NC];
    for (int64_t t = begin; t < end; t++) {
        const int64_t m0 = (t / job->tiles_n) * job->mc, n0 = (t % job->tiles_n) * job->nc;
        const int64_t m1 = LB_MIN(job->m, m0 + job->mc), n1 = LB_MIN(job->n, n0 + job->nc);
        for (int64_t k0 = 0; k0 < job->k; k0 += GEMM_KC) {
            const int64_t kc = LB_MIN(GEMM_KC, job->k - k0);
            gemm_pack_b(job, k0, kc, n0, n1 - n0, packed);
            for (int64_t i = m0; i < m1; i += GEMM_MR) {
                for (int64_t p = n0; p < n1; p += GEMM_NR) {
                    gemm_block(job, i, LB_MIN(GEMM_MR, m1 - i), p, LB_MIN(GEMM_NR, n1 - p), k0,
                               kc, packed + (p - n0) * kc);
                }
            }
        }
    }
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void lb_sgemm(int64_t m, int64_t n, int64_t k, lb_matrix_view a, lb_matrix_view b, float *c,
              int64_t ldc, lowbit_pool *pool) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        for (int64_t i = 0; i < m; i++) memset(c + i * ldc, 0, (size_t)n * sizeof(float));
        return;
    }
    /* Shrink the tiles (keeping them multiples of the register block) until there are enough
       for the pool; the grid depends on m and n only. */
    int64_t mc = GEMM_MC, nc = GEMM_NC;
    while (ceil_div(m, mc) * ceil_div(n, nc) < GEMM_MIN_TILES) {
        const int can_n = nc > GEMM_NR && n > nc / 2;
        const int can_m = mc > GEMM_MR && m > mc / 2;
        if (can_n && (!can_m || nc >= mc)) {
            nc /= 2;
        } else if (can_m) {
            mc /= 2;
        } else {
            break;
        }
    }
    gemm_job job = {m, n, k, a, b, c, ldc, mc, nc, ceil_div(n, nc)};
    lowbit_pool_run(pool, ceil_div(m, mc) * job.tiles_n, gemm_tiles, &job);
}

/* ---- small shared pieces ------------------------------------------------------------------- */

void lb_images_to_float(const uint8_t *images, int64_t count, float *out) {
    for (int64_t i = 0; i < count; i++) out[i] = (float)images[i] / 255.0f;
}

/* sums[j] = sum over rows r of x[r * ld + j] for j < cols, added in increasing r (in double, so
   a reduction over tens of thousands of pixels keeps its precision). */
#define COLUMN_CHUNK 64
static void column_sums(const float *x, int64_t rows, int64_t cols, int64_t ld, float *sums) {
    for (int64_t c0 = 0; c0 < cols; c0 += COLUMN_CHUNK) {
        const int64_t width = LB_MIN(COLUMN_CHUNK, cols - c0);
        double acc[COLUMN_CHUNK] = {0};
        for (int64_t r = 0; r < rows; r++) {
            const float *row = x + r * ld + c0;
            for (int64_t j = 0; j < width; j++) acc[j] += row[j];
        }
        for (int64_t j = 0; j < width; j++) sums[c0 + j] = (float)acc[j];
    }
}

/* out[r][j] += bias[j] for every row. */
typedef struct bias_job {
    float *out;
    const float *bias;
    int64_t cols;
} bias_job;

static void add_bias_rows(void *ctx, int64_t begin, int64_t end) {
    const bias_job *job = ctx;
    for (int64_t r = begin; r < end; r++) {
        float *row = job->out + r * job->cols;
        for (int64_t j = 0; j < job->cols; j++) row[j] += job->bias[j];
    }
}

static void add_bias(float *out, const float *bias, int64_t rows, int64_t cols, lowbit_pool *pool) {
    bias_job job = {out, bias, cols};
    lowbit_pool_run(pool, rows, add_bias_rows, &job);
}

static int64_t conv_patch(const lb_layer *l) { return (int64_t)l->kernel * l->kernel * l->in.c; }

int64_t lb_layer_cols_size(const lb_layer *layer, int64_t n) {
    if (layer->kind != LB_LAYER_CONV2D) return 0;
    return n * layer->out.h * layer->out.w * conv_patch(layer);
}

/* ---- per-sample work (im2col, col2im, pools) ------------------------------------------------ */

typedef struct sample_job {
    const lb_layer *layer;
    const float *in;
    float *out;
    const float *dout;
    float *din;
    float *cols;
    int32_t *argmax;
} sample_job;

/* One sample's im2col: row (oy, ox) holds the patch (ky, kx, ci), zeros outside the image. */
static void im2col_sample(const lb_layer *l, const float *in, float *cols) {
    const int64_t c = l->in.c, patch = conv_patch(l);
    for (int32_t oy = 0; oy < l->out.h; oy++) {
        for (int32_t ox = 0; ox < l->out.w; ox++) {
            float *row = cols + ((int64_t)oy * l->out.w + ox) * patch;
            for (int32_t ky = 0; ky < l->kernel; ky++) {
                const int32_t iy = oy * l->stride - l->pad + ky;
                for (int32_t kx = 0; kx < l->kernel; kx++) {
                    const int32_t ix = ox * l->stride - l->pad + kx;
                    float *dst = row + ((int64_t)ky * l->kernel + kx) * c;
                    const int inside = iy >= 0 && iy < l->in.h && ix >= 0 && ix < l->in.w;
                    const float *src = inside ? in + ((int64_t)iy * l->in.w + ix) * c : NULL;
                    if (c == 1) { /* the first layer of a grey image: no call per pixel */
                        dst[0] = inside ? src[0] : 0.0f;
                    } else if (inside) {
                        memcpy(dst, src, (size_t)c * sizeof(float));
                    } else {
                        memset(dst, 0, (size_t)c * sizeof(float));
                    }
                }
            }
        }
    }
}

/* The adjoint of im2col: each patch entry's gradient is added back to its pixel (patch order,
   so the sum order is fixed). */
static void col2im_sample(const lb_layer *l, const float *cols, float *din) {
    const int64_t c = l->in.c, patch = conv_patch(l);
    memset(din, 0, (size_t)lb_shape_size(l->in) * sizeof(float));
    for (int32_t oy = 0; oy < l->out.h; oy++) {
        for (int32_t ox = 0; ox < l->out.w; ox++) {
            const float *row = cols + ((int64_t)oy * l->out.w + ox) * patch;
            for (int32_t ky = 0; ky < l->kernel; ky++) {
                const int32_t iy = oy * l->stride - l->pad + ky;
                if (iy < 0 || iy >= l->in.h) continue;
                for (int32_t kx = 0; kx < l->kernel; kx++) {
                    const int32_t ix = ox * l->stride - l->pad + kx;
                    if (ix < 0 || ix >= l->in.w) continue;
                    const float *src = row + ((int64_t)ky * l->kernel + kx) * c;
                    float *dst = din + ((int64_t)iy * l->in.w + ix) * c;
                    for (int64_t ci = 0; ci < c; ci++) dst[ci] += src[ci];
                }
            }
        }
    }
}

static void im2col_samples(void *ctx, int64_t begin, int64_t end) {
    const sample_job *job = ctx;
    const lb_layer *l = job->layer;
    const int64_t in_size = lb_shape_size(l->in);
    const int64_t cols_per_sample = (int64_t)l->out.h * l->out.w * conv_patch(l);
    for (int64_t s = begin; s < end; s++) {
        im2col_sample(l, job->in + s * in_size, job->cols + s * cols_per_sample);
    }
}

static void col2im_samples(void *ctx, int64_t begin, int64_t end) {
    const sample_job *job = ctx;
    const lb_layer *l = job->layer;
    const int64_t in_size = lb_shape_size(l->in);
    const int64_t cols_per_sample = (int64_t)l->out.h * l->out.w * conv_patch(l);
    for (int64_t s = begin; s < end; s++) {
        col2im_sample(l, job->cols + s * cols_per_sample, job->din + s * in_size);
    }
}

/* Max over each window (the first maximum wins a tie); argmax (if any) records where it was. */
static void maxpool_samples(void *ctx, int64_t begin, int64_t end) {
    const sample_job *job = ctx;
    const lb_layer *l = job->layer;
    const int64_t c = l->in.c, in_size = lb_shape_size(l->in), out_size = lb_shape_size(l->out);
    for (int64_t s = begin; s < end; s++) {
        const float *in = job->in + s * in_size;
        float *out = job->out + s * out_size;
        int32_t *arg = job->argmax ? job->argmax + s * out_size : NULL;
        for (int32_t oy = 0; oy < l->out.h; oy++) {
            for (int32_t ox = 0; ox < l->out.w; ox++) {
                float *o = out + ((int64_t)oy * l->out.w + ox) * c;
                int32_t *a = arg ? arg + ((int64_t)oy * l->out.w + ox) * c : NULL;
                /* the window's first element, then strictly greater ones: branch-free
                   selects, so the channel loops vectorize */
                const int64_t first = ((int64_t)oy * l->stride * l->in.w + ox * l->stride) * c;
                for (int64_t ci = 0; ci < c; ci++) o[ci] = in[first + ci];
                if (a)
                    for (int64_t ci = 0; ci < c; ci++) a[ci] = (int32_t)(first + ci);
                for (int32_t ky = 0; ky < l->kernel; ky++) {
                    for (int32_t kx = 0; kx < l->kernel; kx++) {
                        const int64_t base =
                            ((int64_t)(oy * l->stride + ky) * l->in.w + ox * l->stride + kx) * c;
                        const float *src = in + base;
                        if (a) {
                            for (int64_t ci = 0; ci < c; ci++) {
                                const int better = src[ci] > o[ci];
                                a[ci] = better ? (int32_t)(base + ci) : a[ci];
                                o[ci] = better ? src[ci] : o[ci];
                            }
                        } else {
                            for (int64_t ci = 0; ci < c; ci++)
                                o[ci] = src[ci] > o[ci] ? src[ci] : o[ci];
                        }
                    }
                }
            }
        }
    }
}

static void maxpool_backward_samples(void *ctx, int64_t begin, int64_t end) {
    const sample_job *job = ctx;
    const lb_layer *l = job->layer;
    const int64_t in_size = lb_shape_size(l->in), out_size = lb_shape_size(l->out);
    for (int64_t s = begin; s < end; s++) {
        float *din = job->din + s * in_size;
        const float *dout = job->dout + s * out_size;
        const int32_t *arg = job->argmax + s * out_size;
        memset(din, 0, (size_t)in_size * sizeof(float));
        for (int64_t e = 0; e < out_size; e++) din[arg[e]] += dout[e];
    }
}

/* Mean of each window: the sum in window order, times 1 / kernel^2. */
static void avgpool_samples(void *ctx, int64_t begin, int64_t end) {
    const sample_job *job = ctx;
    const lb_layer *l = job->layer;
    const int64_t c = l->in.c, in_size = lb_shape_size(l->in), out_size = lb_shape_size(l->out);
    const float inv = 1.0f / (float)((int64_t)l->kernel * l->kernel);
    for (int64_t s = begin; s < end; s++) {
        const float *in = job->in + s * in_size;
        float *out = job->out + s * out_size;
        for (int32_t oy = 0; oy < l->out.h; oy++) {
            for (int32_t ox = 0; ox < l->out.w; ox++) {
                float *o = out + ((int64_t)oy * l->out.w + ox) * c;
                for (int64_t ci = 0; ci < c; ci++) o[ci] = 0.0f;
                for (int32_t ky = 0; ky < l->kernel; ky++) {
                    for (int32_t kx = 0; kx < l->kernel; kx++) {
                        const int64_t pixel = (int64_t)(oy * l->stride + ky) * l->in.w +
                                              ox * l->stride + kx;
                        const float *src = in + pixel * c;
                        for (int64_t ci = 0; ci < c; ci++) o[ci] += src[ci];
                    }
                }
                for (int64_t ci = 0; ci < c; ci++) o[ci] *= inv;
            }
        }
    }
}

static void avgpool_backward_samples(void *ctx, int64_t begin, int64_t end) {
    const sample_job *job = ctx;
    const lb_layer *l = job->layer;
    const int64_t c = l->in.c, in_size = lb_shape_size(l->in), out_size = lb_shape_size(l->out);
    const float inv = 1.0f / (float)((int64_t)l->kernel * l->kernel);
    for (int64_t s = begin; s < end; s++) {
        float *din = job->din + s * in_size;
        const float *dout = job->dout + s * out_size;
        memset(din, 0, (size_t)in_size * sizeof(float));
        for (int32_t oy = 0; oy < l->out.h; oy++) {
            for (int32_t ox = 0; ox < l->out.w; ox++) {
                const float *g = dout + ((int64_t)oy * l->out.w + ox) * c;
                for (int32_t ky = 0; ky < l->kernel; ky++) {
                    for (int32_t kx = 0; kx < l->kernel; kx++) {
                        float *dst = din + ((int64_t)(oy * l->stride + ky) * l->in.w +
                                            ox * l->stride + kx) * c;
                        for (int64_t ci = 0; ci < c; ci++) dst[ci] += g[ci] * inv;
                    }
                }
            }
        }
    }
}

/* ---- elementwise ----------------------------------------------------------------------------- */

typedef struct elementwise_job {
    lb_layer_kind kind;
    const float *in, *out, *dout;
    float *dst;
} elementwise_job;

static void relu_forward_range(void *ctx, int64_t begin, int64_t end) {
    const elementwise_job *job = ctx;
    if (job->kind == LB_LAYER_RELU) {
        for (int64_t e = begin; e < end; e++) job->dst[e] = job->in[e] > 0.0f ? job->in[e] : 0.0f;
    } else {
        for (int64_t e = begin; e < end; e++) {
            const float x = job->in[e] > 0.0f ? job->in[e] : 0.0f;
            job->dst[e] = x < 6.0f ? x : 6.0f;
        }
    }
}

/* The gradient passes where the output is strictly inside the activation's linear part. */
static void relu_backward_range(void *ctx, int64_t begin, int64_t end) {
    const elementwise_job *job = ctx;
    const float top = job->kind == LB_LAYER_RELU ? FLT_MAX : 6.0f;
    for (int64_t e = begin; e < end; e++) {
        const float y = job->out[e];
        job->dst[e] = (y > 0.0f && y < top) ? job->dout[e] : 0.0f;
    }
}

/* ---- batch norm ---------------------------------------------------------------------------- */

typedef struct bn_job {
    const lb_layer *layer;
    const float *in, *out, *dout;
    float *dst;
    int64_t rows; /* n * h * w */
    const lb_layer_cache *cache;
    const lb_layer_grads *grads;
} bn_job;

/* Training: statistics of the batch per channel (mean, biased variance for normalizing, the
   unbiased one for the running estimate), normalized output, running statistics update. Each
   channel is one thread's, reduced over rows in order. */
static void bn_train_channels(void *ctx, int64_t begin, int64_t end) {
    const bn_job *job = ctx;
    const lb_layer *l = job->layer;
    const int64_t ch = l->in.c, rows = job->rows;
    for (int64_t c0 = begin; c0 < end; c0 += COLUMN_CHUNK) {
        const int64_t width = LB_MIN(COLUMN_CHUNK, end - c0);
        double sum[COLUMN_CHUNK] = {0}, sq[COLUMN_CHUNK] = {0};
        float mean[COLUMN_CHUNK], inv[COLUMN_CHUNK];
        for (int64_t r = 0; r < rows; r++) {
            const float *x = job->in + r * ch + c0;
            for (int64_t j = 0; j < width; j++) sum[j] += x[j];
        }
        for (int64_t j = 0; j < width; j++) sum[j] /= (double)rows;
        for (int64_t r = 0; r < rows; r++) {
            const float *x = job->in + r * ch + c0;
            for (int64_t j = 0; j < width; j++) {
                const double d = x[j] - sum[j];
                sq[j] += d * d;
            }
        }
        for (int64_t j = 0; j < width; j++) {
            const double var = sq[j] / (double)rows;
            const double unbiased = rows > 1 ? sq[j] / (double)(rows - 1) : var;
            mean[j] = (float)sum[j];
            inv[j] = (float)(1.0 / sqrt(var + (double)l->eps));
            const int64_t c = c0 + j;
            const float m = l->momentum;
            l->running_mean[c] = (1.0f - m) * l->running_mean[c] + m * mean[j];
            l->running_var[c] = (1.0f - m) * l->running_var[c] + m * (float)unbiased;
            job->cache->inv_std[c] = inv[j];
        }
        const float *gamma = l->gamma + c0, *beta = l->bias + c0;
        for (int64_t r = 0; r < rows; r++) {
            const float *x = job->in + r * ch + c0;
            float *xh = job->cache->normalized + r * ch + c0;
            float *y = job->dst + r * ch + c0;
            for (int64_t j = 0; j < width; j++) {
                xh[j] = (x[j] - mean[j]) * inv[j];
                y[j] = gamma[j] * xh[j] + beta[j];
            }
        }
    }
}

/* Inference: y = x * a + b with a = gamma / sqrt(running_var + eps), b = beta - mean * a. */
static void bn_infer_channels(void *ctx, int64_t begin, int64_t end) {
    const bn_job *job = ctx;
    const lb_layer *l = job->layer;
    const int64_t ch = l->in.c;
    for (int64_t c0 = begin; c0 < end; c0 += COLUMN_CHUNK) {
        const int64_t width = LB_MIN(COLUMN_CHUNK, end - c0);
        float a[COLUMN_CHUNK], b[COLUMN_CHUNK];
        for (int64_t j = 0; j < width; j++) {
            const int64_t c = c0 + j;
            a[j] = (float)((double)l->gamma[c] / sqrt((double)l->running_var[c] + (double)l->eps));
            b[j] = l->bias[c] - l->running_mean[c] * a[j];
        }
        for (int64_t r = 0; r < job->rows; r++) {
            const float *x = job->in + r * ch + c0;
            float *y = job->dst + r * ch + c0;
            for (int64_t j = 0; j < width; j++) y[j] = x[j] * a[j] + b[j];
        }
    }
}

/* dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat)), the batch statistics'
   own gradients included; dgamma = sum dy * x_hat, dbeta = sum dy. */
static void bn_backward_channels(void *ctx, int64_t begin, int64_t end) {
    const bn_job *job = ctx;
    const lb_layer *l = job->layer;
    const int64_t ch = l->in.c, rows = job->rows;
    for (int64_t c0 = begin; c0 < end; c0 += COLUMN_CHUNK) {
        const int64_t width = LB_MIN(COLUMN_CHUNK, end - c0);
        double sdy[COLUMN_CHUNK] = {0}, sdyx[COLUMN_CHUNK] = {0};
        for (int64_t r = 0; r < rows; r++) {
            const float *dy = job->dout + r * ch + c0;
            const float *xh = job->cache->normalized + r * ch + c0;
            for (int64_t j = 0; j < width; j++) {
                sdy[j] += dy[j];
                sdyx[j] += (double)dy[j] * xh[j];
            }
        }
        float k[COLUMN_CHUNK], mdy[COLUMN_CHUNK], mdyx[COLUMN_CHUNK];
        for (int64_t j = 0; j < width; j++) {
            const int64_t c = c0 + j;
            job->grads->gamma[c] = (float)sdyx[j];
            job->grads->bias[c] = (float)sdy[j];
            k[j] = l->gamma[c] * job->cache->inv_std[c];
            mdy[j] = (float)(sdy[j] / (double)rows);
            mdyx[j] = (float)(sdyx[j] / (double)rows);
        }
        if (!job->dst) continue;
        for (int64_t r = 0; r < rows; r++) {
            const float *dy = job->dout + r * ch + c0;
            const float *xh = job->cache->normalized + r * ch + c0;
            float *dx = job->dst + r * ch + c0;
            for (int64_t j = 0; j < width; j++) dx[j] = k[j] * (dy[j] - mdy[j] - xh[j] * mdyx[j]);
        }
    }
}

/* ---- layer entry points ---------------------------------------------------------------------- */

/* Rows of the layer's matrix view: one per output pixel of every sample. */
static int64_t pixel_rows(lb_shape s, int64_t n) { return n * s.h * s.w; }

void lb_layer_forward(const lb_layer *layer, const float *in, float *out, int64_t n,
                      int training, const lb_layer_cache *cache, float *cols, lowbit_pool *pool) {
    const lb_layer *l = layer;
    switch (l->kind) {
    case LB_LAYER_LINEAR: {
        const int64_t k = lb_shape_size(l->in), units = l->out.c;
        /* Y = X W^T: W (units x k) read as a k x units matrix through its strides. */
        lb_sgemm(n, units, k, (lb_matrix_view){in, k, 1}, (lb_matrix_view){l->weight, 1, k}, out,
                 units, pool);
        add_bias(out, l->bias, n, units, pool);
        break;
    }
    case LB_LAYER_CONV2D: {
        const int64_t patch = conv_patch(l), rows = pixel_rows(l->out, n), units = l->out.c;
        sample_job job = {.layer = l, .in = in, .cols = cols};
        lowbit_pool_run(pool, n, im2col_samples, &job);
        lb_sgemm(rows, units, patch, (lb_matrix_view){cols, patch, 1},
                 (lb_matrix_view){l->weight, 1, patch}, out, units, pool);
        add_bias(out, l->bias, rows, units, pool);
        break;
    }
    case LB_LAYER_BATCHNORM: {
        bn_job job = {.layer = l, .in = in, .dst = out, .rows = pixel_rows(l->in, n),
                      .cache = cache};
        lowbit_pool_run(pool, l->in.c, training ? bn_train_channels : bn_infer_channels, &job);
        break;
    }
    case LB_LAYER_RELU:
    case LB_LAYER_RELU6: {
        elementwise_job job = {.kind = l->kind, .in = in, .dst = out};
        lowbit_pool_run(pool, n * lb_shape_size(l->in), relu_forward_range, &job);
        break;
    }
    case LB_LAYER_MAXPOOL: {
        sample_job job = {.layer = l, .in = in, .out = out,
                          .argmax = training && cache ? cache->argmax : NULL};
        lowbit_pool_run(pool, n, maxpool_samples, &job);
        break;
    }
    case LB_LAYER_AVGPOOL: {
        sample_job job = {.layer = l, .in = in, .out = out};
        lowbit_pool_run(pool, n, avgpool_samples, &job);
        break;
    }
    case LB_LAYER_FLATTEN:
        if (out != in) memcpy(out, in, (size_t)(n * lb_shape_size(l->in)) * sizeof(float));
        break;
    default:
        break;
    }
}

void lb_layer_backward(const lb_layer *layer, const float *in, const float *out,
                       const float *dout, float *din, int64_t n, const lb_layer_grads *grads,
                       const lb_layer_cache *cache, float *cols, lowbit_pool *pool) {
    const lb_layer *l = layer;
    switch (l->kind) {
    case LB_LAYER_LINEAR: {
        const int64_t k = lb_shape_size(l->in), units = l->out.c;
        /* dW = dY^T X (reduced over the batch per element), db = column sums, dX = dY W. */
        lb_sgemm(units, k, n, (lb_matrix_view){dout, 1, units}, (lb_matrix_view){in, k, 1},
                 grads->weight, k, pool);
        column_sums(dout, n, units, units, grads->bias);
        if (din) {
            lb_sgemm(n, k, units, (lb_matrix_view){dout, units, 1},
                     (lb_matrix_view){l->weight, k, 1}, din, k, pool);
        }
        break;
    }
    case LB_LAYER_CONV2D: {
        const int64_t patch = conv_patch(l), rows = pixel_rows(l->out, n), units = l->out.c;
        /* The forward's patches were overwritten by later layers: rebuild them. */
        sample_job job = {.layer = l, .in = in, .cols = cols, .din = din};
        lowbit_pool_run(pool, n, im2col_samples, &job);
        lb_sgemm(units, patch, rows, (lb_matrix_view){dout, 1, units},
                 (lb_matrix_view){cols, patch, 1}, grads->weight, patch, pool);
        column_sums(dout, rows, units, units, grads->bias);
        if (din) {
            lb_sgemm(rows, patch, units, (lb_matrix_view){dout, units, 1},
                     (lb_matrix_view){l->weight, patch, 1}, cols, patch, pool);
            lowbit_pool_run(pool, n, col2im_samples, &job);
        }
        break;
    }
    case LB_LAYER_BATCHNORM: {
        bn_job job = {.layer = l, .dout = dout, .dst = din, .rows = pixel_rows(l->in, n),
                      .cache = cache, .grads = grads};
        lowbit_pool_run(pool, l->in.c, bn_backward_channels, &job);
        break;
    }
    case LB_LAYER_RELU:
    case LB_LAYER_RELU6: {
        if (!din) break;
        elementwise_job job = {.kind = l->kind, .out = out, .dout = dout, .dst = din};
        lowbit_pool_run(pool, n * lb_shape_size(l->in), relu_backward_range, &job);
        break;
    }
    case LB_LAYER_MAXPOOL: {
        if (!din) break;
        sample_job job = {.layer = l, .dout = dout, .din = din, .argmax = cache->argmax};
        lowbit_pool_run(pool, n, maxpool_backward_samples, &job);
        break;
    }
    case LB_LAYER_AVGPOOL: {
        if (!din) break;
        sample_job job = {.layer = l, .dout = dout, .din = din};
        lowbit_pool_run(pool, n, avgpool_backward_samples, &job);
        break;
    }
    case LB_LAYER_FLATTEN:
        if (din) memcpy(din, dout, (size_t)(n * lb_shape_size(l->in)) * sizeof(float));
        break;
    default:
        break;
    }
    (void)in;
}

/* ---- loss ----------------------------------------------------------------------------------- */

double lb_softmax_cross_entropy(const float *logits, const uint8_t *labels, int64_t n,
                                int32_t classes, float grad_scale, float *dlogits,
                                int64_t *correct) {
    double total = 0.0;
    for (int64_t s = 0; s < n; s++) {
        const float *z = logits + s * classes;
        int32_t best = 0;
        for (int32_t j = 1; j < classes; j++)
            if (z[j] > z[best]) best = j;
        const double zmax = z[best];
        double sum = 0.0;
        for (int32_t j = 0; j < classes; j++) sum += exp((double)z[j] - zmax);
        const double log_sum = zmax + log(sum);
        total += log_sum - (double)z[labels[s]];
        if (correct && best == labels[s]) (*correct)++;
        if (dlogits) {
            float *d = dlogits + s * classes;
            for (int32_t j = 0; j < classes; j++) {
                const double p = exp((double)z[j] - log_sum);
                d[j] = (float)(p - (j == labels[s] ? 1.0 : 0.0)) * grad_scale;
            }
        }
    }
    return total;
}

/* ---- checking a net -------------------------------------------------------------------------- */

static int shapes_equal(lb_shape a, lb_shape b) { return a.h == b.h && a.w == b.w && a.c == b.c; }

static int shape_positive(lb_shape s) { return s.h >= 1 && s.w >= 1 && s.c >= 1; }

/* A window layer's output must be exactly what its geometry gives, so no window reaches past
   the (padded) input. */
static int window_fits(const lb_layer *l, int32_t pad) {
    if (l->kernel < 1 || l->stride < 1 || pad < 0 || pad >= l->kernel) return 0;
    const int64_t h = (int64_t)l->in.h + 2 * pad - l->kernel;
    const int64_t w = (int64_t)l->in.w + 2 * pad - l->kernel;
    if (h < 0 || w < 0) return 0;
    return l->out.h == h / l->stride + 1 && l->out.w == w / l->stride + 1;
}

static lowbit_status layer_error(lowbit_diag *diag, int i, const lb_layer *l, const char *what) {
    const char *name = lb_layer_kind_name(l->kind);
    return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, i, UINT64_MAX, "layer %d (%s): %s", i,
                       name ? name : "unknown kind", what);
}

static lowbit_status check_layer(const lb_layer *l, int i, lowbit_diag *diag) {
    if (!lb_layer_kind_name(l->kind)) return layer_error(diag, i, l, "unknown layer kind");
    if (!shape_positive(l->in) || !shape_positive(l->out))
        return layer_error(diag, i, l, "empty shape");
    switch (l->kind) {
    case LB_LAYER_LINEAR:
        if (l->out.h != 1 || l->out.w != 1)
            return layer_error(diag, i, l, "output is not a vector");
        if (!l->weight || !l->bias) return layer_error(diag, i, l, "missing parameters");
        break;
    case LB_LAYER_CONV2D:
        if (!window_fits(l, l->pad))
            return layer_error(diag, i, l, "window geometry does not match its shapes");
        if (!l->weight || !l->bias) return layer_error(diag, i, l, "missing parameters");
        break;
    case LB_LAYER_MAXPOOL:
    case LB_LAYER_AVGPOOL:
        if (!window_fits(l, 0) || l->out.c != l->in.c)
            return layer_error(diag, i, l, "window geometry does not match its shapes");
        break;
    case LB_LAYER_BATCHNORM:
        if (!shapes_equal(l->in, l->out))
            return layer_error(diag, i, l, "output shape differs from input");
        if (!l->gamma || !l->bias || !l->running_mean || !l->running_var)
            return layer_error(diag, i, l, "missing parameters");
        if (!(l->eps > 0.0f) || !(l->momentum >= 0.0f && l->momentum <= 1.0f))
            return layer_error(diag, i, l, "eps or momentum out of range");
        break;
    case LB_LAYER_RELU:
    case LB_LAYER_RELU6:
        if (!shapes_equal(l->in, l->out))
            return layer_error(diag, i, l, "output shape differs from input");
        break;
    case LB_LAYER_FLATTEN:
        if (l->out.h != 1 || l->out.w != 1 || l->out.c != lb_shape_size(l->in))
            return layer_error(diag, i, l, "output is not the flattened input");
        break;
    default:
        break;
    }
    return LOWBIT_OK;
}

lowbit_status lb_net_check(const lb_net *net, lowbit_diag *diag) {
    if (!net) return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "no net");
    if (net->n_layers < 1 || net->n_layers > LB_NET_MAX_LAYERS)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "a net needs 1 to %d layers (has %d)", LB_NET_MAX_LAYERS, net->n_layers);
    if (!net->params)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "net has no parameters");
    lb_shape shape = net->input;
    for (int i = 0; i < net->n_layers; i++) {
        const lb_layer *l = &net->layers[i];
        if (!shapes_equal(l->in, shape))
            return layer_error(diag, i, l, "input shape does not match the previous output");
        lowbit_status st = check_layer(l, i, diag);
        if (st != LOWBIT_OK) return st;
        shape = l->out;
    }
    if (net->classes < 1 || lb_shape_size(shape) != net->classes)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "the last layer has %lld outputs, the net %d classes",
                           (long long)lb_shape_size(shape), (int)net->classes);
    return LOWBIT_OK;
}

/* ---- inference ------------------------------------------------------------------------------- */

/* Floats the inference buffers may take together; the chunk of samples shrinks to fit. */
#define FORWARD_BUDGET_FLOATS ((int64_t)48 << 20)
#define FORWARD_MAX_CHUNK 256

lowbit_status lb_net_forward_layers(const lb_net *net, const lb_layer *layers,
                                    const uint8_t *images, int64_t n, float *logits,
                                    lowbit_pool *pool, lb_layer_post_fn post, void *post_ctx,
                                    lb_layer_output_fn observe, void *observe_ctx,
                                    lowbit_diag *diag) {
    lowbit_status st = lb_net_check(net, diag);
    if (st != LOWBIT_OK) return st;
    if (n < 0 || (n > 0 && (!images || !logits)))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "forward: no images or no logits buffer");
    if (n == 0) return LOWBIT_OK;
    const int64_t in_size = lb_shape_size(net->input);
    int64_t act = in_size, cols = 0;
    for (int i = 0; i < net->n_layers; i++) {
        act = LB_MAX(act, lb_shape_size(layers[i].out));
        cols = LB_MAX(cols, lb_layer_cols_size(&layers[i], 1));
    }
    const int64_t per_sample = 2 * act + cols;
    const int64_t chunk = LB_MAX(1, LB_MIN(FORWARD_MAX_CHUNK, FORWARD_BUDGET_FLOATS / per_sample));
    float *buf[2] = {malloc((size_t)(chunk * act) * sizeof(float)),
                     malloc((size_t)(chunk * act) * sizeof(float))};
    float *col_buf = cols > 0 ? malloc((size_t)(chunk * cols) * sizeof(float)) : NULL;
    if (!buf[0] || !buf[1] || (cols > 0 && !col_buf)) {
        free(buf[0]);
        free(buf[1]);
        free(col_buf);
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "forward: cannot allocate activations for %lld samples",
                           (long long)chunk);
    }
    for (int64_t s0 = 0; s0 < n; s0 += chunk) {
        const int64_t count = LB_MIN(chunk, n - s0);
        float *cur = buf[0];
        int which = 0;
        lb_images_to_float(images + s0 * in_size, count * in_size, cur);
        for (int i = 0; i < net->n_layers; i++) {
            float *dst = cur;
            if (layers[i].kind != LB_LAYER_FLATTEN) { /* flatten moves no data */
                which ^= 1;
                dst = buf[which];
                lb_layer_forward(&layers[i], cur, dst, count, 0, NULL, col_buf, pool);
            }
            if (post) post(post_ctx, i, dst, count);
            if (observe) observe(observe_ctx, i, dst, count);
            cur = dst;
        }
        memcpy(logits + s0 * net->classes, cur, (size_t)(count * net->classes) * sizeof(float));
    }
    free(buf[0]);
    free(buf[1]);
    free(col_buf);
    return LOWBIT_OK;
}

lowbit_status lb_net_forward(const lb_net *net, const uint8_t *images, int64_t n, float *logits,
                             lowbit_pool *pool, lb_layer_output_fn observe, void *observe_ctx,
                             lowbit_diag *diag) {
    if (!net) return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "no net");
    return lb_net_forward_layers(net, net->layers, images, n, logits, pool, NULL, NULL, observe,
                                 observe_ctx, diag);
}
