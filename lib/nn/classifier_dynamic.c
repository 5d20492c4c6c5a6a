/*
 * Logits of an integer model in each of its three modes (classifier.h, lb_int_net_forward):
 *   static       the integer-only runner (integer_net.c), then the last op's codes dequantized;
 *   dynamic      per sample and layer, the input's own min/max range quantizes it to
 *                activation_bits, the products with the int weights are exact integers, and the
 *                result is rescaled by input_scale * weight_scale[o] plus the float bias, ReLU
 *                in float;
 *   weight-only  float activations times the dequantized weights (scale[o] * w), plus the bias.
 * Both float modes run a whole batch (in chunks of samples) one layer at a time. Weight-only is
 * the training engine's float inference (lb_net_forward_layers: im2col and the blocked SGEMM)
 * over weights dequantized once by lb_int_net_prepare. Dynamic quantizes each sample of the
 * chunk on its own range, then runs the integer dot kernels over all output rows of the chunk
 * (every sample's pixels), threads over blocks of rows. Every output value is computed by the
 * same arithmetic in the same order whatever the pool's size, so the logits do not depend on it.
 */
#include "classifier.h"
#include "integer.h"
#include "train.h"
#include "../kernels/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
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

static float activate(const lb_int_op *op, float y) {
    if (op->fused_relu) y = LB_MAX(y, 0.0f);
    if (op->fused_relu == 6) y = LB_MIN(y, 6.0f);
    return y;
}

/* ---- weight-only mode: the float engine over dequantized weights ---------------------------- */

static void dequantize_op(const lb_int_op *op, float *dst) {
    const int64_t k = reduction_length(op);
    for (int64_t c = 0; c < op->out.c; c++) {
        const float scale = op->weight_scales[c];
        const int8_t *w = op->weights + c * k;
        for (int64_t j = 0; j < k; j++) dst[c * k + j] = scale * (float)w[j];
    }
}

/* Floats of an op's dequantized weights; 0 for an op without weights or with a shape no check
   has vetted yet (forward refuses such a model before it reads them). */
static int64_t dequantized_count(const lb_int_op *op) {
    if (!is_product(op) || !op->weights || !op->weight_scales) return 0;
    const int64_t k = reduction_length(op);
    if (op->out.c < 1 || k < 1 || k > LB_INT8_LINEAR_MAX_K || op->out.c > INT32_MAX / k) return 0;
    return op->out.c * k;
}

static void free_dequantized(lb_int_net *net) {
    for (int i = 0; i < LB_NET_MAX_LAYERS; i++) {
        free(net->ops[i].dequantized_weights);
        net->ops[i].dequantized_weights = NULL;
    }
}

lowbit_status lb_int_net_prepare(lb_int_net *net, lowbit_diag *diag) {
    if (!net)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "integer model: no model to prepare");
    free_dequantized(net);
    if (net->mode != LB_INT_MODE_WEIGHT_ONLY) return LOWBIT_OK;
    for (int i = 0; i < net->n_ops && i < LB_NET_MAX_LAYERS; i++) {
        lb_int_op *op = &net->ops[i];
        const int64_t count = dequantized_count(op);
        if (count == 0) continue;
        op->dequantized_weights = malloc((size_t)count * sizeof(float));
        if (!op->dequantized_weights) {
            free_dequantized(net);
            return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, i, UINT64_MAX,
                               "integer model: cannot allocate %lld dequantized weights",
                               (long long)count);
        }
        dequantize_op(op, op->dequantized_weights);
    }
    return LOWBIT_OK;
}

/* The fused ReLU/ReLU6 of op `layer`, applied in place to the float engine's output (its `post`
   hook), so the layers map one to one onto the ops. */
static void fused_activation(void *ctx, int layer, float *output, int64_t n) {
    const lb_int_op *op = &((const lb_int_net *)ctx)->ops[layer];
    if (!is_product(op) || !op->fused_relu) return;
    const int64_t count = n * lb_shape_size(op->out);
    for (int64_t e = 0; e < count; e++) output[e] = activate(op, output[e]);
}

static const lb_layer_kind float_kind_of_op[LB_INT_OP_KIND_COUNT] = {
    [LB_INT_LINEAR] = LB_LAYER_LINEAR,   [LB_INT_CONV2D] = LB_LAYER_CONV2D,
    [LB_INT_MAXPOOL] = LB_LAYER_MAXPOOL, [LB_INT_AVGPOOL] = LB_LAYER_AVGPOOL,
    [LB_INT_FLATTEN] = LB_LAYER_FLATTEN,
};

/* A float net whose layers are the ops, pointing at the dequantized weights (the prepared ones,
   or ones made for this call into `temporary` when the model was not prepared). */
static lowbit_status float_view(const lb_int_net *net, lb_net *view, float *dummy_params,
                                float **temporary, lowbit_diag *diag) {
    memset(view, 0, sizeof *view);
    view->input = net->input;
    view->classes = net->classes;
    view->n_layers = net->n_ops;
    view->params = dummy_params; /* the layers point at the model's arrays instead */
    for (int i = 0; i < net->n_ops; i++) {
        const lb_int_op *op = &net->ops[i];
        lb_layer *l = &view->layers[i];
        l->kind = float_kind_of_op[op->kind];
        l->in = op->in;
        l->out = op->out;
        l->kernel = op->kernel;
        l->stride = op->stride;
        l->pad = op->pad;
        if (!is_product(op)) continue;
        float *w = op->dequantized_weights;
        if (!w) {
            const int64_t count = op->out.c * reduction_length(op);
            w = temporary[i] = malloc((size_t)count * sizeof(float));
            if (!w)
                return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, i, UINT64_MAX,
                                   "integer model: cannot allocate %lld dequantized weights",
                                   (long long)count);
            dequantize_op(op, w);
        }
        /* lb_layer's pointers are not const, but inference only reads them. */
        l->weight = w;
        l->bias = op->float_bias;
    }
    return LOWBIT_OK;
}

static lowbit_status forward_weight_only(const lb_int_net *net, const uint8_t *images, int64_t n,
                                         float *logits, lowbit_pool *pool, lowbit_diag *diag) {
    lb_net view;
    float dummy = 0.0f;
    float *temporary[LB_NET_MAX_LAYERS] = {0};
    lowbit_status st = float_view(net, &view, &dummy, temporary, diag);
    if (st == LOWBIT_OK)
        st = lb_net_forward_layers(&view, view.layers, images, n, logits, pool, fused_activation,
                                   (void *)net, NULL, NULL, diag);
    for (int i = 0; i < LB_NET_MAX_LAYERS; i++) free(temporary[i]);
    return st;
}

/* Max or average over each window of one sample (pools never pad): per output value, the
   window is visited in (ky, kx) order, a maximum from -inf, a sum from 0 divided once at the
   end; the channel loop is innermost so it runs over contiguous values. */
static void pool_float(const lb_int_op *op, const float *restrict x, float *restrict y) {
    const int64_t cin = op->in.c, k = op->kernel;
    const int is_max = op->kind == LB_INT_MAXPOOL;
    const float count = (float)(k * k);
    for (int64_t oy = 0; oy < op->out.h; oy++)
        for (int64_t ox = 0; ox < op->out.w; ox++) {
            float *dst = y + (oy * op->out.w + ox) * cin;
            for (int64_t c = 0; c < cin; c++) dst[c] = is_max ? -INFINITY : 0.0f;
            for (int64_t ky = 0; ky < k; ky++)
                for (int64_t kx = 0; kx < k; kx++) {
                    const int64_t iy = oy * op->stride + ky, ix = ox * op->stride + kx;
                    const float *src = x + (iy * op->in.w + ix) * cin;
                    if (is_max) {
                        for (int64_t c = 0; c < cin; c++) dst[c] = LB_MAX(dst[c], src[c]);
                    } else {
                        for (int64_t c = 0; c < cin; c++) dst[c] += src[c];
                    }
                }
            if (!is_max)
                for (int64_t c = 0; c < cin; c++) dst[c] /= count;
        }
}

/* ---- dynamic mode: per-sample ranges, integer dot kernels over the whole chunk -------------- */

#define DYN_SAMPLE_CHUNK 256 /* samples taken through the layers together: bounds the memory */
#define DYN_ROW_BLOCK 32     /* output rows per dot-kernel call */

/* lb_qparams_quantize's arithmetic (round half away from zero of x / scale in double, plus the
   zero point, clamped), without a call or round() per value: v - trunc(v) is exact in double. */
static inline uint8_t quantize_code(float x, double scale, const lb_qparams *q) {
    const double v = (double)x / scale;
    if (!(v > -1e9 && v < 1e9)) { /* NaN and far outside: what the clamp would give */
        return (uint8_t)(v > 0.0 ? q->qmax : q->qmin);
    }
    int64_t t = (int64_t)v;
    const double frac = v - (double)t;
    if (frac >= 0.5) t++;
    if (frac <= -0.5) t--;
    t += q->zero_point;
    return (uint8_t)LB_MIN(LB_MAX(t, (int64_t)q->qmin), (int64_t)q->qmax);
}

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
    const double scale = (double)q.scale;
    for (int64_t i = 0; i < n; i++) codes[i] = quantize_code(x[i], scale, &q);
    return q;
}

/* Work memory and tables of one dynamic forward call. */
typedef struct dyn_plan {
    const lb_int_net *net;
    lb_u8_i8_dots_fn dots;
    /* per op: the weights the kernel reads and their row length (conv2d rows padded with zeros
       to a multiple of 16, so the vector kernel has no tails; im2col rows match) */
    const int8_t *weights[LB_NET_MAX_LAYERS];
    int64_t k_stride[LB_NET_MAX_LAYERS];
    int parts;              /* scratch areas: the most blocks of rows run at once */
    uint8_t *patches;       /* parts x DYN_ROW_BLOCK x the longest conv row */
    int32_t *dots_memory;   /* parts x DYN_ROW_BLOCK x the most channels */
    int64_t patch_bytes, dot_count;
    int64_t act;            /* the largest activation of one sample */
    float *act_memory[2];   /* DYN_SAMPLE_CHUNK x act each */
    uint8_t *codes;         /* DYN_SAMPLE_CHUNK x act */
    lb_qparams *q;          /* DYN_SAMPLE_CHUNK: each sample's range at the current op */
    void *tables;
} dyn_plan;

static int64_t round_up16(int64_t v) { return (v + 15) & ~(int64_t)15; }

static void dyn_plan_free(dyn_plan *p) {
    free(p->patches);
    free(p->dots_memory);
    free(p->act_memory[0]);
    free(p->act_memory[1]);
    free(p->codes);
    free(p->q);
    free(p->tables);
}

static lowbit_status dyn_plan_init(dyn_plan *p, const lb_int_net *net, int threads,
                                   lowbit_diag *diag) {
    memset(p, 0, sizeof *p);
    p->net = net;
    p->dots = lb_u8_i8_dots;
#if defined(__x86_64__)
    if (lb_cpu_level_detected() >= LB_CPU_AVX2) p->dots = lb_u8_i8_dots_avx2;
#endif
    int64_t table_bytes = 0, k_max = 1, c_max = 1;
    p->act = lb_shape_size(net->input);
    for (int i = 0; i < net->n_ops; i++) {
        const lb_int_op *op = &net->ops[i];
        p->act = LB_MAX(p->act, lb_shape_size(op->out));
        if (!is_product(op)) continue;
        const int64_t k = reduction_length(op);
        p->k_stride[i] = op->kind == LB_INT_CONV2D ? round_up16(k) : k;
        if (p->k_stride[i] != k) table_bytes += op->out.c * p->k_stride[i];
        if (op->kind == LB_INT_CONV2D) k_max = LB_MAX(k_max, p->k_stride[i]);
        c_max = LB_MAX(c_max, (int64_t)op->out.c);
    }
    p->parts = LB_MAX(threads, 1);
    p->patch_bytes = (k_max * DYN_ROW_BLOCK + 63) & ~(int64_t)63;
    p->dot_count = (c_max * DYN_ROW_BLOCK + 15) & ~(int64_t)15;
    const size_t act_bytes = (size_t)(DYN_SAMPLE_CHUNK * p->act);
    p->patches = malloc((size_t)(p->patch_bytes * p->parts));
    p->dots_memory = malloc((size_t)(p->dot_count * p->parts) * sizeof(int32_t));
    p->act_memory[0] = malloc(act_bytes * sizeof(float));
    p->act_memory[1] = malloc(act_bytes * sizeof(float));
    p->codes = malloc(act_bytes);
    p->q = malloc(DYN_SAMPLE_CHUNK * sizeof *p->q);
    p->tables = malloc((size_t)LB_MAX(table_bytes, (int64_t)1));
    if (!p->patches || !p->dots_memory || !p->act_memory[0] || !p->act_memory[1] || !p->codes ||
        !p->q || !p->tables) {
        dyn_plan_free(p);
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "integer model: cannot allocate dynamic-mode work memory");
    }
    int8_t *padded = p->tables;
    for (int i = 0; i < net->n_ops; i++) {
        const lb_int_op *op = &net->ops[i];
        if (!is_product(op)) continue;
        const int64_t k = reduction_length(op), stride = p->k_stride[i];
        p->weights[i] = op->weights;
        if (stride == k) continue;
        for (int64_t c = 0; c < op->out.c; c++) {
            memcpy(padded + c * stride, op->weights + c * k, (size_t)k);
            memset(padded + c * stride + k, 0, (size_t)(stride - k));
        }
        p->weights[i] = padded;
        padded += op->out.c * stride;
    }
    return LOWBIT_OK;
}

/* One layer over a chunk of samples: x (samples x in) to y (samples x out). */
typedef struct dyn_layer {
    const dyn_plan *plan;
    int index;
    const float *x;
    float *y;
    int64_t samples;
    int64_t units; /* product rows: samples x output pixels */
    int parts;
} dyn_layer;

static void quantize_samples(void *ctx, int64_t begin, int64_t end) {
    const dyn_layer *job = ctx;
    const lb_int_op *op = &job->plan->net->ops[job->index];
    const int64_t size = lb_shape_size(op->in);
    for (int64_t s = begin; s < end; s++)
        job->plan->q[s] = quantize_by_range(job->x + s * size, size,
                                            job->plan->net->activation_bits,
                                            job->plan->codes + s * size);
}

/* One im2col row of codes: the patch of output pixel `pixel` (ky, kx, ci order), padding the
   sample's zero point z, then zeros up to the padded row length (they meet zero weights). */
static void im2col_codes(const lb_int_op *op, const uint8_t *image, int64_t pixel, uint8_t z,
                         int64_t stride, uint8_t *row) {
    const int64_t oy = pixel / op->out.w, ox = pixel % op->out.w;
    const int64_t cin = op->in.c, k = op->kernel, x0 = ox * op->stride - op->pad;
    /* kernel columns [kx_lo, kx_hi) fall inside the image: one copy per kernel row */
    const int64_t kx_lo = LB_MIN(x0 < 0 ? -x0 : 0, k);
    const int64_t kx_hi = LB_MAX(LB_MIN(k, (int64_t)op->in.w - x0), kx_lo);
    for (int64_t ky = 0; ky < k; ky++) {
        uint8_t *dst = row + ky * k * cin;
        const int64_t iy = oy * op->stride - op->pad + ky;
        if (iy < 0 || iy >= op->in.h) {
            memset(dst, z, (size_t)(k * cin));
            continue;
        }
        memset(dst, z, (size_t)(kx_lo * cin));
        memcpy(dst + kx_lo * cin, image + (iy * op->in.w + x0 + kx_lo) * cin,
               (size_t)((kx_hi - kx_lo) * cin));
        memset(dst + kx_hi * cin, z, (size_t)((k - kx_hi) * cin));
    }
    const int64_t used = k * k * cin;
    memset(row + used, 0, (size_t)(stride - used));
}

/* Rows [u, u + rows) of the product from their integer dots: sum (q - Z) w = dot - Z sum w
   (exact), rescaled by the sample's scale and the channel's, plus the float bias. */
static void dequantize_rows(const dyn_layer *job, const lb_int_op *op, int64_t u, int64_t rows,
                            int64_t pixels, const int32_t *dots) {
    const int64_t channels = op->out.c;
    const int32_t *restrict sums = op->weight_sums;
    const float *restrict scales = op->weight_scales, *restrict bias = op->float_bias;
    for (int64_t j = 0; j < rows; j++) {
        const lb_qparams *q = &job->plan->q[(u + j) / pixels];
        const int32_t zero = q->zero_point;
        const double scale = (double)q->scale;
        const int32_t *restrict d = dots + j * channels;
        float *restrict y = job->y + (u + j) * channels;
        /* (acc * input scale) * weight scale in double, then the float bias: the order the
           modes define, element by element (so the loop may be vectorized without changing a
           bit) */
        for (int64_t c = 0; c < channels; c++) {
            const int32_t acc = d[c] - zero * sums[c];
            y[c] = (float)((double)acc * scale * (double)scales[c]) + bias[c];
        }
        if (op->fused_relu)
            for (int64_t c = 0; c < channels; c++) y[c] = activate(op, y[c]);
    }
}

/* Parts [begin, end): each takes its contiguous share of the rows and its own scratch. */
static void product_parts(void *ctx, int64_t begin, int64_t end) {
    const dyn_layer *job = ctx;
    const dyn_plan *plan = job->plan;
    const lb_int_op *op = &plan->net->ops[job->index];
    const int64_t stride = plan->k_stride[job->index];
    const int is_conv = op->kind == LB_INT_CONV2D;
    const int64_t pixels = is_conv ? (int64_t)op->out.h * op->out.w : 1;
    const int64_t in_size = lb_shape_size(op->in);
    for (int64_t part = begin; part < end; part++) {
        uint8_t *patches = plan->patches + part * plan->patch_bytes;
        int32_t *dots = plan->dots_memory + part * plan->dot_count;
        const int64_t u0 = job->units * part / job->parts;
        const int64_t u1 = job->units * (part + 1) / job->parts;
        for (int64_t u = u0; u < u1; u += DYN_ROW_BLOCK) {
            const int64_t rows = LB_MIN((int64_t)DYN_ROW_BLOCK, u1 - u);
            const uint8_t *a = plan->codes + u * in_size; /* linear: the samples' codes */
            if (is_conv) {
                for (int64_t j = 0; j < rows; j++) {
                    const int64_t sample = (u + j) / pixels;
                    im2col_codes(op, plan->codes + sample * in_size, (u + j) % pixels,
                                 (uint8_t)plan->q[sample].zero_point, stride,
                                 patches + j * stride);
                }
                a = patches;
            }
            plan->dots(a, stride, rows, plan->weights[job->index], stride, op->out.c, dots);
            dequantize_rows(job, op, u, rows, pixels, dots);
        }
    }
}

static void pool_samples(void *ctx, int64_t begin, int64_t end) {
    const dyn_layer *job = ctx;
    const lb_int_op *op = &job->plan->net->ops[job->index];
    const int64_t in_size = lb_shape_size(op->in), out_size = lb_shape_size(op->out);
    for (int64_t s = begin; s < end; s++)
        pool_float(op, job->x + s * in_size, job->y + s * out_size);
}

static void dynamic_layer(const dyn_plan *plan, int index, const float *x, float *y,
                          int64_t samples, lowbit_pool *pool) {
    const lb_int_op *op = &plan->net->ops[index];
    dyn_layer job = {plan, index, x, y, samples, 0, 0};
    if (!is_product(op)) {
        lowbit_pool_run(pool, samples, pool_samples, &job);
        return;
    }
    lowbit_pool_run(pool, samples, quantize_samples, &job);
    const int64_t pixels = op->kind == LB_INT_CONV2D ? (int64_t)op->out.h * op->out.w : 1;
    job.units = samples * pixels;
    /* enough rows per part to fill the kernel's blocks; the split never changes a value */
    const int64_t blocks = (job.units + DYN_ROW_BLOCK - 1) / DYN_ROW_BLOCK;
    job.parts = (int)LB_MIN((int64_t)plan->parts, blocks);
    lowbit_pool_run(job.parts > 1 ? pool : NULL, job.parts, product_parts, &job);
}

static lowbit_status forward_dynamic(const lb_int_net *net, const uint8_t *images, int64_t n,
                                     float *logits, lowbit_pool *pool, lowbit_diag *diag) {
    dyn_plan plan;
    lowbit_status st = dyn_plan_init(&plan, net, lowbit_pool_size(pool), diag);
    if (st != LOWBIT_OK) return st;
    const int64_t in_size = lb_shape_size(net->input);
    for (int64_t s0 = 0; s0 < n; s0 += DYN_SAMPLE_CHUNK) {
        const int64_t count = LB_MIN((int64_t)DYN_SAMPLE_CHUNK, n - s0);
        float *x = plan.act_memory[0];
        lb_images_to_float(images + s0 * in_size, count * in_size, x);
        int which = 1;
        for (int i = 0; i < net->n_ops; i++) {
            if (net->ops[i].kind == LB_INT_FLATTEN) continue; /* HWC: already the vector */
            float *y = plan.act_memory[which];
            dynamic_layer(&plan, i, x, y, count, pool);
            x = y;
            which ^= 1;
        }
        memcpy(logits + s0 * net->classes, x, (size_t)(count * net->classes) * sizeof(float));
    }
    dyn_plan_free(&plan);
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
    if (net->mode == LB_INT_MODE_WEIGHT_ONLY)
        return forward_weight_only(net, images, n, logits, pool, diag);
    return forward_dynamic(net, images, n, logits, pool, diag);
}
