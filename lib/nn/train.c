/*
 * Training an image classifier: shuffled mini-batches, softmax cross-entropy, SGD with momentum
 * or Adam under a cosine learning-rate decay with decoupled weight decay, and quantization-aware
 * training (fake quantization of weights and activations with the straight-through estimator).
 *
 * The forward and backward passes of each layer live in train_layers.c; this file owns the
 * buffers of one batch, the order of the layers, the optimizer and the QAT state. Nothing here
 * depends on the pool's size: the layers are deterministic, and every reduction this file does
 * itself (range statistics, range gradients) runs on the calling thread in a fixed order.
 */
#include "train.h"

#include <stdlib.h>

#define ADAM_BETA1 0.9
#define ADAM_BETA2 0.999
#define ADAM_EPS 1e-8
#define MAX_BATCH_SIZE (1 << 16)
/* The smallest activation range width, as lb_int_net_convert widens a constant output. */
#define MIN_RANGE_WIDTH 1e-6f
/* |x / s| is clamped below this before rounding (float to int32 stays exact and in range);
   any value that far out is clamped to the code range anyway. */
#define ROUND_LIMIT 2097152.0f

/* ---- seeded shuffling ----------------------------------------------------------------------- */

/* splitmix64 (Steele, Lea, Flood 2014): a fixed sequence per seed on every machine. */
static uint64_t splitmix64_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Fisher-Yates over the current order, so each epoch continues from the last one's. The index
   below i + 1 is the high half of a 64 x 64-bit product (Lemire): no modulo bias to speak of. */
static void shuffle_order(int64_t *order, int64_t n, uint64_t *rng) {
    for (int64_t i = n - 1; i > 0; i--) {
        const uint64_t r = splitmix64_next(rng);
        const uint64_t bound = (uint64_t)i + 1;
        /* (r * bound) >> 64 without 128-bit types: split r into 32-bit halves. */
        const uint64_t hi = (r >> 32) * bound, lo = (r & 0xffffffffull) * bound;
        const int64_t j = (int64_t)((hi + (lo >> 32)) >> 32);
        const int64_t tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
}

/* ---- fake quantization ------------------------------------------------------------------- */

void lb_fake_quantize_weights(const float *w, int64_t rows, int64_t cols, int bits, float *out) {
    const int32_t qmax = (1 << (bits - 1)) - 1;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = w + r * cols;
        float *dst = out + r * cols;
        double amax = 0.0;
        for (int64_t k = 0; k < cols; k++) amax = LB_MAX(amax, fabs((double)row[k]));
        float scale = (float)(amax / qmax);
        if (!(scale > 0.0f)) scale = 1.0f; /* an all-zero row: any scale represents it */
        for (int64_t k = 0; k < cols; k++) {
            double q = round((double)row[k] / (double)scale);
            q = LB_MAX(-(double)qmax, LB_MIN((double)qmax, q));
            dst[k] = (float)(q * (double)scale);
        }
    }
}

/* Affine parameters of a range exactly as lb_int_net_convert derives them. */
static lowbit_status activation_qparams(float lo, float hi, int bits, lb_qparams *qp,
                                        lowbit_diag *diag) {
    lo = LB_MIN(lo, 0.0f);
    hi = LB_MAX(hi, 0.0f);
    if (hi - lo < MIN_RANGE_WIDTH) hi = lo + MIN_RANGE_WIDTH;
    return lb_qparams_affine(lo, hi, 0, (1 << bits) - 1, qp, diag);
}

/* round(t) with ties away from zero, as round() and lb_int_net_convert do, for |t| <= 2^21.
   (lb_nearest_int's float-add trick rounds ties to even.) The fraction t - trunc(t) is exact,
   and the whole is branch-free so the loops over a tensor vectorize. */
static inline int32_t round_half_away(float t) {
    const int32_t whole = (int32_t)t;
    const float frac = t - (float)whole;
    return whole + (frac >= 0.5f) - (frac <= -0.5f);
}

/* round(x / s) + z before clamping, x / s in float. */
static inline int32_t activation_code(float x, float scale, int32_t zero_point) {
    float t = x / scale;
    t = t > ROUND_LIMIT ? ROUND_LIMIT : (t < -ROUND_LIMIT ? -ROUND_LIMIT : t);
    return round_half_away(t) + zero_point;
}

typedef struct fake_quant_job {
    const float *x;
    float *y;
    lb_qparams qp;
} fake_quant_job;

static void fake_quant_range(void *ctx, int64_t begin, int64_t end) {
    const fake_quant_job *job = ctx;
    const float s = job->qp.scale;
    const int32_t z = job->qp.zero_point, qmax = job->qp.qmax;
    for (int64_t e = begin; e < end; e++) {
        int32_t q = activation_code(job->x[e], s, z);
        q = q < 0 ? 0 : (q > qmax ? qmax : q);
        job->y[e] = (float)(q - z) * s;
    }
}

static void fake_quantize_activations(const float *x, float *y, int64_t count, lb_qparams qp,
                                      lowbit_pool *pool) {
    fake_quant_job job = {x, y, qp};
    lowbit_pool_run(pool, count, fake_quant_range, &job);
}

/* ---- the inference-time view of a QAT net --------------------------------------------------- */

/* Copies of the layers whose linear/conv weights point at fake-quantized copies in `qparams`
   (a block as large as the net's params). */
static void point_layers_at(const lb_net *net, float *qparams, lb_layer *layers) {
    for (int i = 0; i < net->n_layers; i++) {
        layers[i] = net->layers[i];
        if (layers[i].weight) layers[i].weight = qparams + (net->layers[i].weight - net->params);
    }
}

static int64_t weight_rows(const lb_layer *l) { return l->out.c; }
static int64_t weight_cols(const lb_layer *l) {
    return l->kind == LB_LAYER_CONV2D ? (int64_t)l->kernel * l->kernel * l->in.c
                                      : lb_shape_size(l->in);
}

static int has_weights(const lb_layer *l) {
    return l->kind == LB_LAYER_LINEAR || l->kind == LB_LAYER_CONV2D;
}

static void fake_quantize_net_weights(const lb_net *net, const lb_layer *layers, int bits) {
    for (int i = 0; i < net->n_layers; i++) {
        const lb_layer *l = &net->layers[i];
        if (has_weights(l))
            lb_fake_quantize_weights(l->weight, weight_rows(l), weight_cols(l), bits,
                                     layers[i].weight);
    }
}

static int net_has_batchnorm(const lb_net *net) {
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].kind == LB_LAYER_BATCHNORM) return 1;
    return 0;
}

/* Fake quantization on each quant point's stored range (lb_net_forward_fake_quant). */
typedef struct fixed_range_run {
    const lb_net *net;
    lowbit_pool *pool;
    lb_qparams qp[LB_NET_MAX_LAYERS];
    int active[LB_NET_MAX_LAYERS];
} fixed_range_run;

static void fixed_range_apply(void *ctx, int layer, float *output, int64_t n) {
    const fixed_range_run *run = ctx;
    if (!run->active[layer]) return;
    const int64_t count = n * lb_shape_size(run->net->layers[layer].out);
    fake_quantize_activations(output, output, count, run->qp[layer], run->pool);
}

static lowbit_status check_qat_config(const lb_net *net, const lb_qat_config *qat,
                                      int need_momentum, lowbit_diag *diag) {
    if (qat->weight_bits < 2 || qat->weight_bits > 8 || qat->activation_bits < 2 ||
        qat->activation_bits > 8)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "QAT: weight and activation bits must be 2..8 (got %d and %d)",
                           qat->weight_bits, qat->activation_bits);
    if (need_momentum && !qat->learn_ranges &&
        !(qat->range_momentum > 0.0f && qat->range_momentum <= 1.0f))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "QAT: range momentum must be in (0, 1] (got %g)",
                           (double)qat->range_momentum);
    if (net_has_batchnorm(net))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "QAT needs a net without batch norm: fold it first "
                           "(lb_net_fold_batchnorm), so training sees the integer model's weights");
    return LOWBIT_OK;
}

lowbit_status lb_net_forward_fake_quant(const lb_net *net, const lb_qat_config *qat,
                                        const uint8_t *images, int64_t n, float *logits,
                                        lowbit_pool *pool, lowbit_diag *diag) {
    lowbit_status st = lb_net_check(net, diag);
    if (st != LOWBIT_OK) return st;
    if (!qat)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "no QAT config");
    if ((st = check_qat_config(net, qat, 0, diag)) != LOWBIT_OK) return st;
    fixed_range_run run;
    memset(&run, 0, sizeof run);
    run.net = net;
    run.pool = pool;
    for (int i = 0; i < net->n_layers; i++) {
        if (!lb_net_is_quant_point(net, i)) continue;
        const lb_layer *l = &net->layers[i];
        if (!l->has_range)
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, i, UINT64_MAX,
                               "layer %d is a quant point without a range", i);
        st = activation_qparams(l->range_lo, l->range_hi, qat->activation_bits, &run.qp[i],
                                diag);
        if (st != LOWBIT_OK) return st;
        run.active[i] = 1;
    }
    float *qparams = malloc((size_t)LB_MAX(net->n_params, 1) * sizeof(float));
    if (!qparams)
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "cannot allocate %lld parameters", (long long)net->n_params);
    memcpy(qparams, net->params, (size_t)net->n_params * sizeof(float));
    lb_layer layers[LB_NET_MAX_LAYERS];
    point_layers_at(net, qparams, layers);
    fake_quantize_net_weights(net, layers, qat->weight_bits);
    st = lb_net_forward_layers(net, layers, images, n, logits, pool, fixed_range_apply, &run,
                               NULL, NULL, diag);
    free(qparams);
    return st;
}

/* ---- training state ------------------------------------------------------------------------ */

/* One quant point's range under QAT. */
typedef struct qat_point {
    int layer;
    int fixed_lo;      /* a ReLU output: the range starts at 0 and stays there */
    int ready;         /* lo and hi hold a range */
    float grad_scale;  /* LSQ's 1 / sqrt(values per sample * qmax) */
    lb_qparams qp;     /* this batch's parameters */
} qat_point;

typedef struct trainer {
    lb_net *net;
    const lb_train_config *cfg;
    lowbit_pool *pool;
    int64_t capacity; /* samples per batch */
    lb_layer work[LB_NET_MAX_LAYERS]; /* the layers the passes run (weights maybe fake-quantized) */
    int need_din[LB_NET_MAX_LAYERS];  /* something below layer i needs its input gradient */
    /* buffers of one batch */
    float *input;
    uint8_t *labels;
    float *out[LB_NET_MAX_LAYERS];   /* each layer's output (flatten: its input, not owned) */
    float *quant[LB_NET_MAX_LAYERS]; /* what the next layer reads: the fake-quantized output at
                                        QAT quant points, else out[i] (not owned) */
    int owns_out[LB_NET_MAX_LAYERS], owns_quant[LB_NET_MAX_LAYERS];
    lb_layer_cache cache[LB_NET_MAX_LAYERS];
    float *cols;
    float *grad[2];
    /* parameters */
    float *grads, *opt_m, *opt_v;
    float *qparams; /* QAT: fake-quantized weights (and a copy of everything else) */
    /* QAT ranges as trainable values: ranges[2p] = lo, ranges[2p+1] = hi of point p */
    int n_points;
    int point_of_layer[LB_NET_MAX_LAYERS]; /* -1: not a QAT quant point */
    qat_point points[LB_NET_MAX_LAYERS];
    float ranges[2 * LB_NET_MAX_LAYERS], range_grads[2 * LB_NET_MAX_LAYERS];
    float range_m[2 * LB_NET_MAX_LAYERS], range_v[2 * LB_NET_MAX_LAYERS];
} trainer;

static void *alloc_floats(int64_t count) {
    return malloc((size_t)LB_MAX(count, 1) * sizeof(float));
}

static void trainer_free(trainer *t) {
    free(t->input);
    free(t->labels);
    for (int i = 0; i < LB_NET_MAX_LAYERS; i++) {
        if (t->owns_out[i]) free(t->out[i]);
        if (t->owns_quant[i]) free(t->quant[i]);
        free(t->cache[i].normalized);
        free(t->cache[i].inv_std);
        free(t->cache[i].argmax);
    }
    free(t->cols);
    free(t->grad[0]);
    free(t->grad[1]);
    free(t->grads);
    free(t->opt_m);
    free(t->opt_v);
    free(t->qparams);
}

static int layer_has_params(const lb_layer *l) {
    return has_weights(l) || l->kind == LB_LAYER_BATCHNORM;
}

/* Finds the quant points QAT fake-quantizes and the layers whose input gradient is needed. */
static void plan_layers(trainer *t) {
    const lb_net *net = t->net;
    const lb_qat_config *qat = &t->cfg->qat;
    const int qat_bits = qat->enabled ? qat->activation_bits : 0;
    int below = 0; /* a layer below the current one wants gradients */
    t->n_points = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const lb_layer *l = &net->layers[i];
        t->need_din[i] = below;
        t->point_of_layer[i] = -1;
        if (qat->enabled && lb_net_is_quant_point(net, i)) {
            qat_point *p = &t->points[t->n_points];
            memset(p, 0, sizeof *p);
            p->layer = i;
            p->fixed_lo = l->kind == LB_LAYER_RELU || l->kind == LB_LAYER_RELU6;
            const double qmax = (double)((1 << qat_bits) - 1);
            p->grad_scale = (float)(1.0 / sqrt((double)lb_shape_size(l->out) * qmax));
            if (l->has_range) {
                t->ranges[2 * t->n_points] = p->fixed_lo ? 0.0f : LB_MIN(l->range_lo, 0.0f);
                t->ranges[2 * t->n_points + 1] = LB_MAX(l->range_hi, 0.0f);
                p->ready = 1;
            }
            t->point_of_layer[i] = t->n_points++;
            if (qat->learn_ranges) below = 1;
        }
        if (layer_has_params(l)) below = 1;
    }
}

static lowbit_status trainer_alloc(trainer *t, lowbit_diag *diag) {
    const lb_net *net = t->net;
    const int64_t cap = t->capacity;
    const int64_t in_size = lb_shape_size(net->input);
    int64_t widest = in_size, cols = 0;
    int failed = 0;
    t->input = alloc_floats(cap * in_size);
    t->labels = malloc((size_t)cap);
    failed |= !t->input || !t->labels;
    const float *prev = t->input;
    for (int i = 0; i < net->n_layers && !failed; i++) {
        const lb_layer *l = &net->layers[i];
        const int64_t size = cap * lb_shape_size(l->out);
        widest = LB_MAX(widest, lb_shape_size(l->out));
        cols = LB_MAX(cols, lb_layer_cols_size(l, cap));
        if (l->kind == LB_LAYER_FLATTEN) {
            t->out[i] = (float *)prev;
        } else {
            t->out[i] = alloc_floats(size);
            t->owns_out[i] = 1;
            failed |= !t->out[i];
        }
        if (t->point_of_layer[i] >= 0) {
            t->quant[i] = alloc_floats(size);
            t->owns_quant[i] = 1;
            failed |= !t->quant[i];
        } else {
            t->quant[i] = t->out[i];
        }
        if (l->kind == LB_LAYER_BATCHNORM) {
            t->cache[i].normalized = alloc_floats(size);
            t->cache[i].inv_std = alloc_floats(l->in.c);
            failed |= !t->cache[i].normalized || !t->cache[i].inv_std;
        } else if (l->kind == LB_LAYER_MAXPOOL) {
            t->cache[i].argmax = malloc((size_t)size * sizeof(int32_t));
            failed |= !t->cache[i].argmax;
        }
        prev = t->quant[i];
    }
    if (!failed) {
        t->cols = cols > 0 ? alloc_floats(cols) : NULL;
        t->grad[0] = alloc_floats(cap * widest);
        t->grad[1] = alloc_floats(cap * widest);
        t->grads = calloc((size_t)LB_MAX(net->n_params, 1), sizeof(float));
        t->opt_m = calloc((size_t)LB_MAX(net->n_params, 1), sizeof(float));
        t->opt_v = t->cfg->optimizer == LB_OPT_ADAM
                       ? calloc((size_t)LB_MAX(net->n_params, 1), sizeof(float))
                       : NULL;
        failed = (cols > 0 && !t->cols) || !t->grad[0] || !t->grad[1] || !t->grads ||
                 !t->opt_m || (t->cfg->optimizer == LB_OPT_ADAM && !t->opt_v);
    }
    if (!failed && t->cfg->qat.enabled) {
        t->qparams = alloc_floats(net->n_params);
        failed = !t->qparams;
    }
    if (failed)
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "train: cannot allocate the buffers of a batch of %lld",
                           (long long)cap);
    if (t->qparams) {
        memcpy(t->qparams, net->params, (size_t)net->n_params * sizeof(float));
        point_layers_at(net, t->qparams, t->work);
    } else {
        memcpy(t->work, net->layers, sizeof t->work);
    }
    return LOWBIT_OK;
}

/* ---- QAT activations ------------------------------------------------------------------------ */

/* Moving-average ranges follow each batch's min/max; learned ranges only start from the first
   batch's (when the layer had none). Then the batch is fake-quantized on the range. */
static lowbit_status qat_point_forward(trainer *t, int index, int64_t n, lowbit_diag *diag) {
    qat_point *p = &t->points[index];
    const lb_qat_config *qat = &t->cfg->qat;
    const float *x = t->out[p->layer];
    const int64_t count = n * lb_shape_size(t->net->layers[p->layer].out);
    float *lo = &t->ranges[2 * index], *hi = &t->ranges[2 * index + 1];
    if (!qat->learn_ranges || !p->ready) {
        float bmin = x[0], bmax = x[0];
        for (int64_t e = 1; e < count; e++) {
            bmin = x[e] < bmin ? x[e] : bmin;
            bmax = x[e] > bmax ? x[e] : bmax;
        }
        if (!isfinite(bmin) || !isfinite(bmax))
            return lb_diag_set(diag, LOWBIT_ERR_NONFINITE, p->layer, UINT64_MAX,
                               "train: layer %d's output is not finite (learning rate too high?)",
                               p->layer);
        if (p->fixed_lo) bmin = 0.0f;
        if (!p->ready) {
            *lo = bmin;
            *hi = bmax;
            p->ready = 1;
        } else {
            *lo += qat->range_momentum * (bmin - *lo);
            *hi += qat->range_momentum * (bmax - *hi);
        }
    }
    lowbit_status st = activation_qparams(*lo, *hi, qat->activation_bits, &p->qp, diag);
    if (st != LOWBIT_OK) return st;
    fake_quantize_activations(x, t->quant[p->layer], count, p->qp, t->pool);
    return LOWBIT_OK;
}

/* The STE runs over a fixed number of slices of the tensor (a count that depends on nothing
   but this constant), each reducing its own range-gradient partials; the partials are then
   added in slice order, so threads change nothing. */
#define STE_SLICES 64

typedef struct ste_job {
    const float *x;
    float *d;
    int64_t count;
    lb_qparams qp;
    double g_lo[STE_SLICES], g_s[STE_SLICES];
} ste_job;

/* Straight-through estimator: the gradient passes where the code was not clamped. For learned
   ranges, with x' = lo + s * clamp(round((x - lo) / s), 0, qmax) and s = (hi - lo) / qmax:
   dx'/ds = q - x/s inside (LSQ), qmax above, 0 below; dx'/dlo = 1 outside, 0 inside. */
static void ste_slices(void *ctx, int64_t begin, int64_t end) {
    ste_job *job = ctx;
    const float s = job->qp.scale;
    const int32_t z = job->qp.zero_point, qmax = job->qp.qmax;
    for (int64_t slice = begin; slice < end; slice++) {
        const int64_t e0 = job->count * slice / STE_SLICES;
        const int64_t e1 = job->count * (slice + 1) / STE_SLICES;
        double g_lo = 0.0, g_s = 0.0;
        for (int64_t e = e0; e < e1; e++) {
            const int32_t q = activation_code(job->x[e], s, z);
            if (q < 0) {
                g_lo += job->d[e];
                job->d[e] = 0.0f;
            } else if (q > qmax) {
                g_lo += job->d[e];
                g_s += (double)job->d[e] * qmax;
                job->d[e] = 0.0f;
            } else {
                g_s += (double)job->d[e] * ((double)(q - z) - (double)(job->x[e] / s));
            }
        }
        job->g_lo[slice] = g_lo;
        job->g_s[slice] = g_s;
    }
}

static void qat_point_backward(trainer *t, int index, float *d, int64_t n) {
    qat_point *p = &t->points[index];
    ste_job job;
    job.x = t->out[p->layer];
    job.d = d;
    job.count = n * lb_shape_size(t->net->layers[p->layer].out);
    job.qp = p->qp;
    lowbit_pool_run(t->pool, STE_SLICES, ste_slices, &job);
    double g_lo = 0.0, g_s = 0.0;
    for (int slice = 0; slice < STE_SLICES; slice++) {
        g_lo += job.g_lo[slice];
        g_s += job.g_s[slice];
    }
    const double scale = p->grad_scale, qmax = p->qp.qmax;
    t->range_grads[2 * index] = p->fixed_lo ? 0.0f : (float)((g_lo - g_s / qmax) * scale);
    t->range_grads[2 * index + 1] = (float)(g_s / qmax * scale);
}

/* Keeps a learned range valid: lo <= 0 <= hi (lo = 0 for ReLU outputs), some width. */
static void clamp_ranges(trainer *t) {
    for (int p = 0; p < t->n_points; p++) {
        float *lo = &t->ranges[2 * p], *hi = &t->ranges[2 * p + 1];
        *lo = t->points[p].fixed_lo ? 0.0f : LB_MIN(*lo, 0.0f);
        *hi = LB_MAX(*hi, 0.0f);
        if (*hi - *lo < MIN_RANGE_WIDTH) *hi = *lo + MIN_RANGE_WIDTH;
    }
}

/* ---- optimizer ------------------------------------------------------------------------------- */

/* One update of `count` values. Decoupled weight decay (Loshchilov & Hutter): w -= lr * decay * w
   apart from the gradient step. Adam (Kingma & Ba) with bias correction; SGD with classic
   momentum v = mu v + g, w -= lr v. */
static void optimizer_update(const lb_train_config *cfg, double lr, int64_t step, float *w,
                             const float *g, float *m, float *v, int64_t count, float decay) {
    const float lr_f = (float)lr;
    if (decay > 0.0f) {
        const float keep = 1.0f - lr_f * decay;
        for (int64_t i = 0; i < count; i++) w[i] *= keep;
    }
    if (cfg->optimizer == LB_OPT_ADAM) {
        const float b1 = (float)ADAM_BETA1, b2 = (float)ADAM_BETA2;
        const float c1 = (float)(1.0 / (1.0 - pow(ADAM_BETA1, (double)step)));
        const float c2 = (float)(1.0 / (1.0 - pow(ADAM_BETA2, (double)step)));
        const float eps = (float)ADAM_EPS;
        for (int64_t i = 0; i < count; i++) {
            m[i] = b1 * m[i] + (1.0f - b1) * g[i];
            v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
            w[i] -= lr_f * (m[i] * c1) / (sqrtf(v[i] * c2) + eps);
        }
    } else {
        const float mu = cfg->momentum;
        for (int64_t i = 0; i < count; i++) {
            m[i] = mu * m[i] + g[i];
            w[i] -= lr_f * m[i];
        }
    }
}

/* Updates every parameter: linear/conv weights with weight decay, biases and batch-norm
   parameters without; then the learned QAT ranges. */
static void update_params(trainer *t, double lr, int64_t step) {
    lb_net *net = t->net;
    const lb_train_config *cfg = t->cfg;
    for (int i = 0; i < net->n_layers; i++) {
        const lb_layer *l = &net->layers[i];
        float *blocks[3] = {l->weight, l->bias, l->gamma};
        int64_t sizes[3] = {0, 0, 0};
        if (has_weights(l)) {
            sizes[0] = weight_rows(l) * weight_cols(l);
            sizes[1] = l->out.c;
        } else if (l->kind == LB_LAYER_BATCHNORM) {
            sizes[1] = sizes[2] = l->in.c;
        }
        for (int b = 0; b < 3; b++) {
            if (!blocks[b] || sizes[b] == 0) continue;
            const int64_t off = blocks[b] - net->params;
            optimizer_update(cfg, lr, step, blocks[b], t->grads + off, t->opt_m + off,
                             t->opt_v ? t->opt_v + off : NULL, sizes[b],
                             b == 0 ? cfg->weight_decay : 0.0f);
        }
    }
    if (cfg->qat.enabled && cfg->qat.learn_ranges && t->n_points > 0) {
        optimizer_update(cfg, lr, step, t->ranges, t->range_grads, t->range_m, t->range_v,
                         2 * t->n_points, 0.0f);
        clamp_ranges(t);
    }
}

/* ---- one batch ---------------------------------------------------------------------------- */

static lb_layer_grads grads_of(const trainer *t, const lb_layer *l) {
    lb_layer_grads g = {NULL, NULL, NULL};
    const lb_net *net = t->net;
    if (l->weight) g.weight = t->grads + (l->weight - net->params);
    if (l->bias) g.bias = t->grads + (l->bias - net->params);
    if (l->gamma) g.gamma = t->grads + (l->gamma - net->params);
    return g;
}

static lowbit_status forward_batch(trainer *t, int64_t n, lowbit_diag *diag) {
    const lb_net *net = t->net;
    for (int i = 0; i < net->n_layers; i++) {
        const float *in = i == 0 ? t->input : t->quant[i - 1];
        if (net->layers[i].kind != LB_LAYER_FLATTEN)
            lb_layer_forward(&t->work[i], in, t->out[i], n, 1, &t->cache[i], t->cols, t->pool);
        if (t->point_of_layer[i] >= 0) {
            lowbit_status st = qat_point_forward(t, t->point_of_layer[i], n, diag);
            if (st != LOWBIT_OK) return st;
        }
    }
    return LOWBIT_OK;
}

static void backward_batch(trainer *t, int64_t n) {
    const lb_net *net = t->net;
    float *d = t->grad[0], *spare = t->grad[1];
    for (int i = net->n_layers - 1; i >= 0; i--) {
        const lb_layer *l = &net->layers[i];
        if (t->point_of_layer[i] >= 0) qat_point_backward(t, t->point_of_layer[i], d, n);
        if (l->kind == LB_LAYER_FLATTEN) continue;
        float *din = t->need_din[i] ? spare : NULL;
        const float *in = i == 0 ? t->input : t->quant[i - 1];
        const lb_layer_grads g = grads_of(t, l);
        lb_layer_backward(&t->work[i], in, t->out[i], d, din, n, &g, &t->cache[i], t->cols,
                          t->pool);
        if (!din) break;
        spare = d;
        d = din;
    }
}

/* Gathers the batch's images (as floats) and labels in shuffled order. */
static void gather_batch(trainer *t, const uint8_t *images, const uint8_t *labels,
                         const int64_t *order, int64_t n) {
    const int64_t in_size = lb_shape_size(t->net->input);
    for (int64_t s = 0; s < n; s++) {
        lb_images_to_float(images + order[s] * in_size, in_size, t->input + s * in_size);
        t->labels[s] = labels[order[s]];
    }
}

/* ---- lb_net_train ------------------------------------------------------------------------- */

static lowbit_status check_train_args(const lb_net *net, const uint8_t *images,
                                      const uint8_t *labels, int64_t n,
                                      const lb_train_config *cfg, lowbit_diag *diag) {
    lowbit_status st = lb_net_check(net, diag);
    if (st != LOWBIT_OK) return st;
    if (!cfg || !images || !labels || n < 1)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "train: no images, labels or config");
    if (cfg->epochs < 1 || cfg->batch_size < 1 || cfg->batch_size > MAX_BATCH_SIZE)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "train: epochs must be >= 1 and batch size 1..%d (got %d and %d)",
                           MAX_BATCH_SIZE, cfg->epochs, cfg->batch_size);
    if (cfg->optimizer != LB_OPT_SGD && cfg->optimizer != LB_OPT_ADAM)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "train: unknown optimizer %d", (int)cfg->optimizer);
    if (!(cfg->learning_rate > 0.0f && isfinite(cfg->learning_rate)) ||
        !(cfg->momentum >= 0.0f && cfg->momentum < 1.0f) ||
        !(cfg->weight_decay >= 0.0f && cfg->weight_decay * cfg->learning_rate < 1.0f))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "train: learning rate must be > 0, momentum in [0, 1), weight decay "
                           ">= 0 with decay * rate < 1 (got %g, %g, %g)",
                           (double)cfg->learning_rate, (double)cfg->momentum,
                           (double)cfg->weight_decay);
    if (net->classes > 256)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "train: %d classes do not fit byte labels", (int)net->classes);
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] >= net->classes)
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, i, UINT64_MAX,
                               "train: label %d of image %lld is not below the class count %d",
                               labels[i], (long long)i, (int)net->classes);
    }
    if (cfg->qat.enabled) return check_qat_config(net, &cfg->qat, 1, diag);
    return LOWBIT_OK;
}

/* Cosine decay from the peak rate to 0 over the run (Loshchilov & Hutter, SGDR, one cycle). */
static double cosine_rate(double peak, int64_t step, int64_t total) {
    return 0.5 * peak * (1.0 + cos(3.14159265358979323846 * (double)step / (double)total));
}

/* Writes what training leaves in the net besides the parameters: QAT's ranges at the quant
   points; after float training, stale ranges are dropped (they described other weights). */
static void store_ranges(trainer *t) {
    lb_net *net = t->net;
    if (!t->cfg->qat.enabled) {
        for (int i = 0; i < net->n_layers; i++) net->layers[i].has_range = 0;
        return;
    }
    for (int p = 0; p < t->n_points; p++) {
        lb_layer *l = &net->layers[t->points[p].layer];
        if (!t->points[p].ready) continue;
        l->range_lo = t->ranges[2 * p];
        l->range_hi = t->ranges[2 * p + 1];
        l->has_range = 1;
    }
}

static lowbit_status run_epochs(trainer *t, const uint8_t *images, const uint8_t *labels,
                                int64_t n, int64_t *order, lowbit_diag *diag) {
    const lb_train_config *cfg = t->cfg;
    const int64_t batches = (n + t->capacity - 1) / t->capacity;
    const int64_t total = batches * cfg->epochs;
    uint64_t rng = cfg->seed;
    int64_t step = 0;
    for (int epoch = 1; epoch <= cfg->epochs; epoch++) {
        shuffle_order(order, n, &rng);
        double loss_sum = 0.0;
        int64_t correct = 0, seen = 0;
        for (int64_t b = 0; b < batches; b++) {
            const int64_t first = b * t->capacity, count = LB_MIN(t->capacity, n - first);
            gather_batch(t, images, labels, order + first, count);
            if (t->qparams) fake_quantize_net_weights(t->net, t->work, cfg->qat.weight_bits);
            lowbit_status st = forward_batch(t, count, diag);
            if (st != LOWBIT_OK) return st;
            const int last = t->net->n_layers - 1;
            const double loss =
                lb_softmax_cross_entropy(t->quant[last], t->labels, count, t->net->classes,
                                         1.0f / (float)count, t->grad[0], &correct);
            if (!isfinite(loss))
                return lb_diag_set(diag, LOWBIT_ERR_NONFINITE, -1, UINT64_MAX,
                                   "train: the loss diverged at epoch %d, batch %lld (learning "
                                   "rate too high?)", epoch, (long long)b + 1);
            backward_batch(t, count);
            step++;
            update_params(t, cosine_rate(cfg->learning_rate, step - 1, total), step);
            loss_sum += loss;
            seen += count;
            if (cfg->progress) {
                lb_train_progress p = {epoch, cfg->epochs, b + 1, batches, loss_sum / (double)seen,
                                       (double)correct / (double)seen};
                cfg->progress(cfg->progress_ctx, &p);
            }
        }
    }
    return LOWBIT_OK;
}

lowbit_status lb_net_train(lb_net *net, const uint8_t *images, const uint8_t *labels, int64_t n,
                           const lb_train_config *config, lowbit_pool *pool, lowbit_diag *diag) {
    lowbit_status st = check_train_args(net, images, labels, n, config, diag);
    if (st != LOWBIT_OK) return st;
    trainer *t = calloc(1, sizeof *t);
    int64_t *order = malloc((size_t)n * sizeof(int64_t));
    if (!t || !order) {
        free(t);
        free(order);
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "train: cannot allocate the order of %lld images", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) order[i] = i;
    t->net = net;
    t->cfg = config;
    t->pool = pool;
    t->capacity = LB_MIN((int64_t)config->batch_size, n);
    plan_layers(t);
    st = trainer_alloc(t, diag);
    if (st == LOWBIT_OK) st = run_epochs(t, images, labels, n, order, diag);
    if (st == LOWBIT_OK) store_ranges(t);
    trainer_free(t);
    free(t);
    free(order);
    return st;
}
