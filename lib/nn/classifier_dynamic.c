/*
 * Logits of an integer model in each of its three modes (classifier.h, lb_int_net_forward):
 *   static       the integer-only runner (integer_net.c), then the last op's codes dequantized;
 *   dynamic      per sample and layer, the input's own min/max range quantizes it to
 *                activation_bits, the products with the int weights are exact integers, and the
 *                result is rescaled by input_scale * weight_scale[o] plus the float bias, ReLU
 *                in float;
 *   weight-only  float activations times the dequantized weights (scale[o] * w), plus the bias.
 * The float modes work one sample at a time, threads over samples, in a fixed order per sample,
 * so the logits do not depend on the pool's size.
 */
#include "classifier.h"
#include "integer.h"

#include <stdlib.h>

static int is_product(const lb_int_op *op) {
    return op->kind == LB_INT_LINEAR || op->kind == LB_INT_CONV2D;
}

static int64_t reduction_length(const lb_int_op *op) {
    return op->kind == LB_INT_CONV2D ? (int64_t)op->kernel * op->kernel * op->in.c
                                     : lb_shape_size(op->in);
}

/* ---- static mode ------------------------------------------------------------------------------ */

static lowbit_status forward_static(const lb_int_net *net, const uint8_t *images, int64_t n,
                                    float *logits, lowbit_pool *pool, lowbit_diag *diag) {
    const int64_t count = n * net->classes;
    uint8_t *codes = malloc((size_t)LB_MAX(count, (int64_t)1));
    if (!codes)
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "integer model: cannot allocate %lld output codes", (long long)count);
    lowbit_status st = lb_int_net_run_static(net, images, n, codes, pool, diag);
    if (st == LOWBIT_OK) {
        const lb_qparams *q = &net->ops[net->n_ops - 1].out_q;
        for (int64_t i = 0; i < count; i++)
            logits[i] = q->scale * (float)((int32_t)codes[i] - q->zero_point);
    }
    free(codes);
    return st;
}

/* ---- dynamic and weight-only modes: one sample at a time in float --------------------------- */

typedef struct float_scratch {
    float *act[2];   /* the largest activation of one sample */
    uint8_t *codes;  /* that activation quantized (dynamic mode) */
    uint8_t *qpatch; /* one im2col row of codes (dynamic mode) */
    float *patch;    /* one im2col row of floats (weight-only mode) */
} float_scratch;

/* Quantizes x (n values) on its own [min, max] range; lb_qparams_affine widens it to hold 0, so
   zero padding is exactly the zero point. */
static lb_qparams quantize_by_range(const float *x, int64_t n, int bits, uint8_t *codes) {
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        lo = LB_MIN(lo, x[i]);
        hi = LB_MAX(hi, x[i]);
    }
    lb_qparams q;
    if (lb_qparams_affine(lo, hi, 0, (1 << bits) - 1, &q, NULL) != LOWBIT_OK)
        q = (lb_qparams){1.0f, 0, 0, (1 << bits) - 1}; /* unreachable for finite x */
    for (int64_t i = 0; i < n; i++) codes[i] = (uint8_t)lb_qparams_quantize(&q, x[i]);
    return q;
}

/* The patch of output pixel `pixel` (ky, kx, ci order), padding filled with `pad_value`; for
   element size 1 (codes) or 4 (floats). */
static void patch_row(const lb_int_op *op, const void *image, int64_t pixel, size_t elem,
                      const void *pad_value, void *row) {
    const int64_t oy = pixel / op->out.w, ox = pixel % op->out.w, cin = op->in.c;
    const int64_t k = op->kernel;
    unsigned char *dst = row;
    const unsigned char *src = image;
    for (int64_t ky = 0; ky < k; ky++)
        for (int64_t kx = 0; kx < k; kx++) {
            const int64_t iy = oy * op->stride - op->pad + ky, ix = ox * op->stride - op->pad + kx;
            unsigned char *d = dst + (size_t)((ky * k + kx) * cin) * elem;
            if (iy < 0 || iy >= op->in.h || ix < 0 || ix >= op->in.w) {
                for (int64_t c = 0; c < cin; c++) memcpy(d + (size_t)c * elem, pad_value, elem);
            } else {
                memcpy(d, src + (size_t)((iy * op->in.w + ix) * cin) * elem, (size_t)cin * elem);
            }
        }
}

static float activate(const lb_int_op *op, float y) {
    if (op->fused_relu) y = LB_MAX(y, 0.0f);
    if (op->fused_relu == 6) y = LB_MIN(y, 6.0f);
    return y;
}

/* One output row (all channels) of a product from its input row. */
static void product_row_dynamic(const lb_int_op *op, const uint8_t *codes, int64_t k_count,
                                const lb_qparams *q, float *y) {
    for (int64_t c = 0; c < op->out.c; c++) {
        const int8_t *w = op->weights + c * k_count;
        int32_t dot = 0;
        for (int64_t k = 0; k < k_count; k++) dot += (int32_t)codes[k] * w[k];
        /* sum (q - Z) w: exact in int32 within LB_INT8_LINEAR_MAX_K */
        int32_t acc = dot - q->zero_point * op->weight_sums[c];
        double real = (double)acc * (double)q->scale * (double)op->weight_scales[c];
        y[c] = activate(op, (float)real + op->float_bias[c]);
    }
}

static void product_row_weight_only(const lb_int_op *op, const float *x, int64_t k_count,
                                    float *y) {
    for (int64_t c = 0; c < op->out.c; c++) {
        const int8_t *w = op->weights + c * k_count;
        const float scale = op->weight_scales[c];
        float sum = 0.0f;
        for (int64_t k = 0; k < k_count; k++) sum += x[k] * (scale * (float)w[k]);
        y[c] = activate(op, sum + op->float_bias[c]);
    }
}

static void product_float(const lb_int_net *net, const lb_int_op *op, const float *x, float *y,
                          const float_scratch *s) {
    const int64_t k_count = reduction_length(op);
    const int64_t pixels = op->kind == LB_INT_CONV2D ? (int64_t)op->out.h * op->out.w : 1;
    if (net->mode == LB_INT_MODE_DYNAMIC) {
        const lb_qparams q =
            quantize_by_range(x, lb_shape_size(op->in), net->activation_bits, s->codes);
        const uint8_t zero = (uint8_t)q.zero_point;
        for (int64_t p = 0; p < pixels; p++) {
            const uint8_t *row = s->codes;
            if (op->kind == LB_INT_CONV2D) {
                patch_row(op, s->codes, p, 1, &zero, s->qpatch);
                row = s->qpatch;
            }
            product_row_dynamic(op, row, k_count, &q, y + p * op->out.c);
        }
    } else {
        const float zero = 0.0f;
        for (int64_t p = 0; p < pixels; p++) {
            const float *row = x;
            if (op->kind == LB_INT_CONV2D) {
                patch_row(op, x, p, sizeof(float), &zero, s->patch);
                row = s->patch;
            }
            product_row_weight_only(op, row, k_count, y + p * op->out.c);
        }
    }
}

static void pool_float(const lb_int_op *op, const float *x, float *y) {
    const int64_t cin = op->in.c, k = op->kernel;
    for (int64_t oy = 0; oy < op->out.h; oy++)
        for (int64_t ox = 0; ox < op->out.w; ox++)
            for (int64_t c = 0; c < cin; c++) {
                float best = -INFINITY, sum = 0.0f;
                for (int64_t ky = 0; ky < k; ky++)
                    for (int64_t kx = 0; kx < k; kx++) {
                        const int64_t iy = oy * op->stride + ky, ix = ox * op->stride + kx;
                        float v = x[(iy * op->in.w + ix) * cin + c];
                        best = LB_MAX(best, v);
                        sum += v;
                    }
                y[(oy * op->out.w + ox) * cin + c] =
                    op->kind == LB_INT_MAXPOOL ? best : sum / (float)(k * k);
            }
}

static void forward_one_float(const lb_int_net *net, const uint8_t *image, float *logits,
                              const float_scratch *s) {
    const int64_t in_size = lb_shape_size(net->input);
    float *x = s->act[0];
    for (int64_t i = 0; i < in_size; i++) x[i] = (float)image[i] / 255.0f;
    int which = 1;
    for (int i = 0; i < net->n_ops; i++) {
        const lb_int_op *op = &net->ops[i];
        if (op->kind == LB_INT_FLATTEN) continue; /* HWC: already the vector */
        float *y = s->act[which];
        if (is_product(op))
            product_float(net, op, x, y, s);
        else
            pool_float(op, x, y);
        x = y;
        which ^= 1;
    }
    memcpy(logits, x, (size_t)net->classes * sizeof(float));
}

typedef struct float_job {
    const lb_int_net *net;
    const uint8_t *images;
    float *logits;
    int64_t n;
    int chunks;
    float_scratch *scratch;
} float_job;

static void float_chunks(void *ctx, int64_t begin, int64_t end) {
    const float_job *job = ctx;
    const int64_t in_size = lb_shape_size(job->net->input);
    for (int64_t c = begin; c < end; c++)
        for (int64_t i = job->n * c / job->chunks; i < job->n * (c + 1) / job->chunks; i++)
            forward_one_float(job->net, job->images + i * in_size,
                              job->logits + i * job->net->classes, &job->scratch[c]);
}

static lowbit_status forward_float(const lb_int_net *net, const uint8_t *images, int64_t n,
                                   float *logits, lowbit_pool *pool, lowbit_diag *diag) {
    int64_t act = lb_shape_size(net->input), k_max = 1;
    for (int i = 0; i < net->n_ops; i++) {
        act = LB_MAX(act, lb_shape_size(net->ops[i].out));
        if (is_product(&net->ops[i])) k_max = LB_MAX(k_max, reduction_length(&net->ops[i]));
    }
    const int chunks = (int)LB_MIN((int64_t)lowbit_pool_size(pool), n);
    const size_t per_chunk = (size_t)(act * 2 * sizeof(float) + k_max * sizeof(float)) +
                             (size_t)((act + k_max + 15) & ~(int64_t)15);
    float_scratch *scratch = calloc((size_t)chunks, sizeof *scratch);
    unsigned char *memory = malloc(per_chunk * (size_t)chunks);
    if (!scratch || !memory) {
        free(scratch);
        free(memory);
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "integer model: cannot allocate work memory");
    }
    for (int c = 0; c < chunks; c++) {
        unsigned char *base = memory + per_chunk * (size_t)c;
        scratch[c].act[0] = (float *)(void *)base;
        scratch[c].act[1] = scratch[c].act[0] + act;
        scratch[c].patch = scratch[c].act[1] + act;
        scratch[c].codes = (uint8_t *)(scratch[c].patch + k_max);
        scratch[c].qpatch = scratch[c].codes + act;
    }
    float_job job = {net, images, logits, n, chunks, scratch};
    lowbit_pool_run(chunks > 1 ? pool : NULL, chunks, float_chunks, &job);
    free(scratch);
    free(memory);
    return LOWBIT_OK;
}

/* Scales and biases are read as floats here, so they are checked here (the integer check reads
   no float). */
static lowbit_status check_float_params(const lb_int_net *net, lowbit_diag *diag) {
    for (int i = 0; i < net->n_ops; i++) {
        const lb_int_op *op = &net->ops[i];
        if (!is_product(op)) continue;
        if (!op->weight_scales || !op->float_bias)
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, i, UINT64_MAX,
                               "integer model: op %d has no weight scales or float bias", i);
        for (int64_t c = 0; c < op->out.c; c++)
            if (!isfinite(op->weight_scales[c]) || !(op->weight_scales[c] > 0.0f) ||
                !isfinite(op->float_bias[c]))
                return lb_diag_set(diag, LOWBIT_ERR_NONFINITE, i, UINT64_MAX,
                                   "integer model: op %d channel %lld has scale %g, bias %g", i,
                                   (long long)c, (double)op->weight_scales[c],
                                   (double)op->float_bias[c]);
    }
    if (net->mode == LB_INT_MODE_STATIC) {
        const lb_qparams *q = &net->ops[net->n_ops - 1].out_q;
        if (!isfinite(q->scale) || !(q->scale > 0.0f))
            return lb_diag_set(diag, LOWBIT_ERR_NONFINITE, net->n_ops - 1, UINT64_MAX,
                               "integer model: output scale %g", (double)q->scale);
    }
    return LOWBIT_OK;
}

lowbit_status lb_int_net_forward(const lb_int_net *net, const uint8_t *images, int64_t n,
                                 float *logits, lowbit_pool *pool, lowbit_diag *diag) {
    lowbit_status st = lb_int_net_check(net, diag);
    if (st != LOWBIT_OK) return st;
    if (net->mode < LB_INT_MODE_STATIC || net->mode > LB_INT_MODE_WEIGHT_ONLY)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "integer model: unknown mode %d", (int)net->mode);
    if (net->mode != LB_INT_MODE_WEIGHT_ONLY &&
        (net->activation_bits < 2 || net->activation_bits > 8))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "integer model: activation bits %d outside 2..8",
                           net->activation_bits);
    if (n < 0 || (n > 0 && (!images || !logits)))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "integer model: %lld images with a missing buffer", (long long)n);
    st = check_float_params(net, diag);
    if (st != LOWBIT_OK || n == 0) return st;
    if (net->mode == LB_INT_MODE_STATIC)
        return forward_static(net, images, n, logits, pool, diag);
    return forward_float(net, images, n, logits, pool, diag);
}
