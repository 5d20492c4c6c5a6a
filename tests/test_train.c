/* Training: finite-difference gradient checks of every layer kind (conv padding and stride, both
   pools, batch norm in training mode) and of softmax cross-entropy; the matrix product against a
   naive one; bit-identical training with 1 and 3 threads; an MLP and a CNN lowering the loss on
   synthetic images; QAT lowering the loss, setting the ranges, and its forward equal to a plain
   float forward of fake-quantized weights and activations. */
#include "nn/train.h"
#include "testing.h"

#include <stdlib.h>

static uint64_t rng_state;
static uint64_t next_u64(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double uniform01(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)uniform01(); }

static void fill_uniform(float *x, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) x[i] = uniform(lo, hi);
}

/* Values at least `gap` apart from each other (a shuffled ladder), so a small step changes no
   maximum and crosses no ReLU kink. */
static void fill_distinct(float *x, int64_t n, float start, float gap) {
    for (int64_t i = 0; i < n; i++) x[i] = start + gap * (float)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(next_u64() % (uint64_t)(i + 1));
        float t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

/* ---- gradient checks ----------------------------------------------------------------------- */

typedef struct grad_case {
    lb_layer layer;
    int64_t n;
    float *params; /* weight, bias, gamma as the layer points into it */
    int64_t n_params;
    float *state;
} grad_case;

/* L = sum(out * r), evaluated in double from a training-mode forward. */
static double probe_loss(grad_case *g, const float *in, const float *r, float *out, float *cols,
                         lb_layer_cache *cache) {
    /* batch norm updates its running statistics on every training forward: keep them fixed */
    float saved[64];
    if (g->state) memcpy(saved, g->state, sizeof saved);
    lb_layer_forward(&g->layer, in, out, g->n, 1, cache, cols, NULL);
    if (g->state) memcpy(g->state, saved, sizeof saved);
    const int64_t size = g->n * lb_shape_size(g->layer.out);
    double sum = 0.0;
    for (int64_t e = 0; e < size; e++) sum += (double)out[e] * r[e];
    return sum;
}

static int close_enough(double numeric, double analytic) {
    return fabs(numeric - analytic) <= 2e-3 + 2e-2 * fabs(analytic);
}

static void check_gradients(const char *what, grad_case *g, float *in) {
    lb_layer *l = &g->layer;
    const int64_t in_size = g->n * lb_shape_size(l->in), out_size = g->n * lb_shape_size(l->out);
    float *out = calloc((size_t)out_size, sizeof(float));
    float *r = malloc((size_t)out_size * sizeof(float));
    float *din = calloc((size_t)in_size, sizeof(float));
    const int64_t cols_size = LB_MAX(lb_layer_cols_size(l, g->n), 1);
    float *cols = calloc((size_t)cols_size, sizeof(float));
    float *pgrad = calloc((size_t)LB_MAX(g->n_params, 1), sizeof(float));
    lb_layer_cache cache = {calloc((size_t)out_size, sizeof(float)),
                            calloc((size_t)LB_MAX(l->in.c, 1), sizeof(float)),
                            calloc((size_t)out_size, sizeof(int32_t))};
    fill_uniform(r, out_size, -1.0f, 1.0f);
    probe_loss(g, in, r, out, cols, &cache);
    lb_layer_grads grads = {NULL, NULL, NULL};
    if (l->weight) grads.weight = pgrad + (l->weight - g->params);
    if (l->bias) grads.bias = pgrad + (l->bias - g->params);
    if (l->gamma) grads.gamma = pgrad + (l->gamma - g->params);
    lb_layer_backward(l, in, out, r, din, g->n, &grads, &cache, cols, NULL);

    const float h = 1e-2f;
    int bad = 0;
    for (int64_t i = 0; i < in_size; i++) {
        const float keep = in[i];
        in[i] = keep + h;
        const double up = probe_loss(g, in, r, out, cols, &cache);
        in[i] = keep - h;
        const double down = probe_loss(g, in, r, out, cols, &cache);
        in[i] = keep;
        const double numeric = (up - down) / (2.0 * h);
        if (!close_enough(numeric, din[i]) && bad++ < 3)
            CHECK(0, "%s: dL/din[%lld] numeric %.6f analytic %.6f", what, (long long)i, numeric,
                  (double)din[i]);
    }
    for (int64_t i = 0; i < g->n_params; i++) {
        const float keep = g->params[i];
        g->params[i] = keep + h;
        const double up = probe_loss(g, in, r, out, cols, &cache);
        g->params[i] = keep - h;
        const double down = probe_loss(g, in, r, out, cols, &cache);
        g->params[i] = keep;
        const double numeric = (up - down) / (2.0 * h);
        if (!close_enough(numeric, pgrad[i]) && bad++ < 3)
            CHECK(0, "%s: dL/dparam[%lld] numeric %.6f analytic %.6f", what, (long long)i,
                  numeric, (double)pgrad[i]);
    }
    CHECK(bad == 0, "%s: %d gradient mismatches", what, bad);
    free(out);
    free(r);
    free(din);
    free(cols);
    free(pgrad);
    free(cache.normalized);
    free(cache.inv_std);
    free(cache.argmax);
}

static lb_shape shp(int32_t h, int32_t w, int32_t c) { return (lb_shape){h, w, c}; }

static void gradcheck_linear(void) {
    grad_case g = {.n = 3};
    g.layer = (lb_layer){.kind = LB_LAYER_LINEAR, .in = shp(1, 1, 5), .out = shp(1, 1, 4)};
    g.n_params = 5 * 4 + 4;
    g.params = malloc((size_t)g.n_params * sizeof(float));
    fill_uniform(g.params, g.n_params, -1.0f, 1.0f);
    g.layer.weight = g.params;
    g.layer.bias = g.params + 20;
    float in[15];
    fill_uniform(in, 15, -1.0f, 1.0f);
    check_gradients("linear", &g, in);
    free(g.params);
}

static void gradcheck_conv(int32_t h, int32_t w, int32_t cin, int32_t cout, int32_t k,
                           int32_t stride, int32_t pad) {
    grad_case g = {.n = 2};
    const int32_t oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    g.layer = (lb_layer){.kind = LB_LAYER_CONV2D, .in = shp(h, w, cin), .out = shp(oh, ow, cout),
                         .kernel = k, .stride = stride, .pad = pad};
    const int64_t wsize = (int64_t)cout * k * k * cin;
    g.n_params = wsize + cout;
    g.params = malloc((size_t)g.n_params * sizeof(float));
    fill_uniform(g.params, g.n_params, -1.0f, 1.0f);
    g.layer.weight = g.params;
    g.layer.bias = g.params + wsize;
    const int64_t in_size = g.n * h * w * cin;
    float *in = malloc((size_t)in_size * sizeof(float));
    fill_uniform(in, in_size, -1.0f, 1.0f);
    char what[96];
    snprintf(what, sizeof what, "conv2d %dx%dx%d k%d s%d p%d", h, w, cin, k, stride, pad);
    check_gradients(what, &g, in);
    free(in);
    free(g.params);
}

/* A convolution against a direct loop over the padded window, on values exact in float (small
   integers), so the comparison is exact. */
static void conv_matches_direct(void) {
    const int32_t h = 6, w = 5, cin = 3, cout = 4, k = 3, stride = 2, pad = 1, n = 2;
    const int32_t oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    lb_layer l = {.kind = LB_LAYER_CONV2D, .in = shp(h, w, cin), .out = shp(oh, ow, cout),
                  .kernel = k, .stride = stride, .pad = pad};
    float weight[4 * 27], bias[4], in[2 * 6 * 5 * 3], out[2 * 3 * 3 * 4];
    float cols[2 * 3 * 3 * 27];
    for (int i = 0; i < 4 * 27; i++) weight[i] = (float)((int)(next_u64() % 7) - 3);
    for (int i = 0; i < 4; i++) bias[i] = (float)i;
    for (int i = 0; i < 2 * 6 * 5 * 3; i++) in[i] = (float)((int)(next_u64() % 9) - 4);
    l.weight = weight;
    l.bias = bias;
    lb_layer_forward(&l, in, out, n, 0, NULL, cols, NULL);
    int bad = 0;
    for (int s = 0; s < n; s++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int o = 0; o < cout; o++) {
                    float acc = bias[o];
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++)
                            for (int c = 0; c < cin; c++) {
                                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                acc += in[((s * h + iy) * w + ix) * cin + c] *
                                       weight[((o * k + ky) * k + kx) * cin + c];
                            }
                    bad += out[((s * oh + oy) * ow + ox) * cout + o] != acc;
                }
    CHECK(bad == 0, "conv2d differs from the direct loop in %d outputs", bad);
}

static void gradcheck_batchnorm(void) {
    grad_case g = {.n = 3};
    const int32_t c = 3;
    g.layer = (lb_layer){.kind = LB_LAYER_BATCHNORM, .in = shp(2, 2, c), .out = shp(2, 2, c),
                         .eps = 1e-5f, .momentum = 0.1f};
    g.n_params = 2 * c;
    g.params = malloc((size_t)g.n_params * sizeof(float));
    fill_uniform(g.params, g.n_params, 0.5f, 1.5f);
    float state[64] = {0};
    g.state = state;
    g.layer.gamma = g.params;
    g.layer.bias = g.params + c;
    g.layer.running_mean = state;
    g.layer.running_var = state + c;
    for (int i = 0; i < c; i++) state[c + i] = 1.0f;
    float in[3 * 2 * 2 * 3];
    fill_uniform(in, LB_ARRAY_LEN(in), -2.0f, 2.0f);
    check_gradients("batchnorm", &g, in);
    free(g.params);
}

/* Batch norm's running statistics: the batch mean and the unbiased variance, with momentum. */
static void batchnorm_running_stats(void) {
    lb_layer l = {.kind = LB_LAYER_BATCHNORM, .in = shp(1, 2, 1), .out = shp(1, 2, 1),
                  .eps = 1e-5f, .momentum = 0.5f};
    float gamma = 1.0f, beta = 0.0f, mean = 0.0f, var = 1.0f, inv_std, normalized[4], out[4];
    l.gamma = &gamma;
    l.bias = &beta;
    l.running_mean = &mean;
    l.running_var = &var;
    lb_layer_cache cache = {normalized, &inv_std, NULL};
    const float in[4] = {1.0f, 2.0f, 3.0f, 6.0f}; /* mean 3, biased var 3.5, unbiased 14/3 */
    lb_layer_forward(&l, in, out, 2, 1, &cache, NULL, NULL);
    CHECK(fabsf(mean - 1.5f) < 1e-6f, "running mean %g, expected 1.5", (double)mean);
    CHECK(fabsf(var - (0.5f + 0.5f * 14.0f / 3.0f)) < 1e-5f, "running var %g", (double)var);
    CHECK(fabsf(out[3] - 3.0f / sqrtf(3.5f + 1e-5f)) < 1e-5f, "normalized %g", (double)out[3]);
    /* inference uses the running statistics */
    lb_layer_forward(&l, in, out, 2, 0, NULL, NULL, NULL);
    CHECK(fabsf(out[0] - (1.0f - mean) / sqrtf(var + 1e-5f)) < 1e-5f, "inference %g",
          (double)out[0]);
}

static void gradcheck_simple(lb_layer_kind kind, lb_shape in_shape, int32_t k, int32_t stride,
                             const char *what) {
    grad_case g = {.n = 2};
    lb_shape out_shape = in_shape;
    if (kind == LB_LAYER_MAXPOOL || kind == LB_LAYER_AVGPOOL)
        out_shape = shp((in_shape.h - k) / stride + 1, (in_shape.w - k) / stride + 1, in_shape.c);
    if (kind == LB_LAYER_FLATTEN) out_shape = shp(1, 1, (int32_t)lb_shape_size(in_shape));
    g.layer = (lb_layer){.kind = kind, .in = in_shape, .out = out_shape, .kernel = k,
                         .stride = stride};
    const int64_t size = g.n * lb_shape_size(in_shape);
    float *in = malloc((size_t)size * sizeof(float));
    /* distinct values 0.05 apart, none within 0.025 of ReLU's kinks at 0 and 6 */
    fill_distinct(in, size, -1.4875f, 0.05f);
    if (kind == LB_LAYER_RELU6)
        for (int64_t i = 0; i < size; i++) in[i] *= 5.0f; /* spans both kinks */
    check_gradients(what, &g, in);
    free(in);
}

static void softmax_gradient(void) {
    const int32_t classes = 5;
    float logits[10], d[10];
    const uint8_t labels[2] = {3, 0};
    fill_uniform(logits, 10, -3.0f, 3.0f);
    lb_softmax_cross_entropy(logits, labels, 2, classes, 0.5f, d, NULL);
    const float h = 1e-2f;
    int bad = 0;
    for (int i = 0; i < 10; i++) {
        const float keep = logits[i];
        logits[i] = keep + h;
        const double up = lb_softmax_cross_entropy(logits, labels, 2, classes, 0.5f, NULL, NULL);
        logits[i] = keep - h;
        const double down = lb_softmax_cross_entropy(logits, labels, 2, classes, 0.5f, NULL, NULL);
        logits[i] = keep;
        bad += !close_enough(0.5 * (up - down) / (2.0 * h), d[i]);
    }
    CHECK(bad == 0, "softmax cross-entropy: %d gradient mismatches", bad);
    /* stable for huge logits: log-sum-exp of {1000, 0} is 1000 */
    float big[2] = {1000.0f, 0.0f};
    const uint8_t first = 0;
    int64_t correct = 0;
    const double loss = lb_softmax_cross_entropy(big, &first, 1, 2, 1.0f, NULL, &correct);
    CHECK(isfinite(loss) && loss < 1e-6 && correct == 1, "big logits: loss %g", loss);
}

/* ---- matrix product ------------------------------------------------------------------------ */

static void gemm_matches_naive(void) {
    const int64_t shapes[][3] = {{1, 1, 1}, {5, 3, 7}, {13, 17, 300}, {64, 40, 9}, {4, 8, 600}};
    lowbit_pool *pool = NULL;
    lowbit_pool_create(3, &pool);
    for (int s = 0; s < LB_ARRAY_LEN(shapes); s++) {
        const int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *a = malloc((size_t)(m * k) * sizeof(float)), *b = malloc((size_t)(k * n) * sizeof(float));
        float *c = malloc((size_t)(m * n) * sizeof(float)), *c1 = malloc((size_t)(m * n) * sizeof(float));
        fill_uniform(a, m * k, -1.0f, 1.0f);
        fill_uniform(b, k * n, -1.0f, 1.0f);
        /* B given transposed (n x k storage) through its strides */
        lb_sgemm(m, n, k, (lb_matrix_view){a, k, 1}, (lb_matrix_view){b, 1, k}, c, n, pool);
        lb_sgemm(m, n, k, (lb_matrix_view){a, k, 1}, (lb_matrix_view){b, 1, k}, c1, n, NULL);
        int bad = 0;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                float acc = 0.0f; /* the documented order: increasing k from 0 */
                for (int64_t kk = 0; kk < k; kk++) acc += a[i * k + kk] * b[j * k + kk];
                bad += c[i * n + j] != acc || c1[i * n + j] != acc;
            }
        CHECK(bad == 0, "gemm %lldx%lldx%lld: %d elements differ from the naive sum", (long long)m,
              (long long)n, (long long)k, bad);
        free(a);
        free(b);
        free(c);
        free(c1);
    }
    lowbit_pool_destroy(pool);
}

/* ---- training -------------------------------------------------------------------------------- */

/* Synthetic 12x12 images: class k has a bright 4x4 square at one of 4 positions (k % 4) and a
   brightness level (k / 4), plus noise. */
static void make_images(uint8_t *images, uint8_t *labels, int64_t n, int classes) {
    for (int64_t i = 0; i < n; i++) {
        const int label = (int)(next_u64() % (uint64_t)classes);
        labels[i] = (uint8_t)label;
        uint8_t *img = images + i * 144;
        for (int p = 0; p < 144; p++) img[p] = (uint8_t)(next_u64() % 60);
        const int y0 = (label % 4) / 2 * 6 + 1, x0 = (label % 4) % 2 * 6 + 1;
        const int level = 120 + 60 * (label / 4);
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++) img[(y0 + y) * 12 + x0 + x] = (uint8_t)level;
    }
}

typedef struct loss_log {
    double first_epoch, last_epoch, last_accuracy;
    int64_t calls;
} loss_log;

static void log_progress(void *ctx, const lb_train_progress *p) {
    loss_log *log = ctx;
    log->calls++;
    if (p->batch != p->batches) return;
    if (p->epoch == 1) log->first_epoch = p->loss;
    log->last_epoch = p->loss;
    log->last_accuracy = p->accuracy;
}

static lb_train_config base_config(int epochs, lb_optimizer opt, float lr, loss_log *log) {
    lb_train_config c;
    memset(&c, 0, sizeof c);
    c.epochs = epochs;
    c.batch_size = 32;
    c.optimizer = opt;
    c.learning_rate = lr;
    c.momentum = 0.9f;
    c.weight_decay = 1e-4f;
    c.seed = 7;
    c.progress = log_progress;
    c.progress_ctx = log;
    return c;
}

static const lb_layer_spec small_cnn[] = {
    {.kind = LB_LAYER_CONV2D, .units = 4, .kernel = 3, .stride = 1, .pad = 1},
    {.kind = LB_LAYER_BATCHNORM},
    {.kind = LB_LAYER_RELU},
    {.kind = LB_LAYER_MAXPOOL, .kernel = 2, .stride = 2},
    {.kind = LB_LAYER_CONV2D, .units = 8, .kernel = 3, .stride = 2, .pad = 1},
    {.kind = LB_LAYER_RELU6},
    {.kind = LB_LAYER_AVGPOOL, .kernel = 2, .stride = 1},
    {.kind = LB_LAYER_FLATTEN},
    {.kind = LB_LAYER_LINEAR, .units = 8},
};

static const lb_layer_spec small_mlp[] = {
    {.kind = LB_LAYER_FLATTEN},
    {.kind = LB_LAYER_LINEAR, .units = 32},
    {.kind = LB_LAYER_RELU},
    {.kind = LB_LAYER_LINEAR, .units = 8},
};

static void determinism_across_threads(const uint8_t *images, const uint8_t *labels) {
    lb_net nets[2];
    lowbit_diag diag;
    for (int t = 0; t < 2; t++) {
        lowbit_status st = lb_net_build(&nets[t], shp(12, 12, 1), small_cnn,
                                        LB_ARRAY_LEN(small_cnn), 3, &diag);
        CHECK(st == LOWBIT_OK, "build: %s", diag.message);
        if (st != LOWBIT_OK) return;
        lowbit_pool *pool = NULL;
        lowbit_pool_create(t == 0 ? 1 : 3, &pool);
        loss_log log = {0};
        lb_train_config c = base_config(1, LB_OPT_ADAM, 0.01f, &log);
        st = lb_net_train(&nets[t], images, labels, 96, &c, pool, &diag);
        CHECK(st == LOWBIT_OK, "train: %s", diag.message);
        CHECK(log.calls == 3, "progress called %lld times for 3 batches", (long long)log.calls);
        lowbit_pool_destroy(pool);
    }
    CHECK(memcmp(nets[0].params, nets[1].params, (size_t)nets[0].n_params * sizeof(float)) == 0,
          "params differ between 1 and 3 threads");
    CHECK(memcmp(nets[0].state, nets[1].state, (size_t)nets[0].n_state * sizeof(float)) == 0,
          "batch-norm state differs between 1 and 3 threads");
    /* inference too */
    float logits[2][20 * 8];
    lowbit_pool *pool = NULL;
    lowbit_pool_create(3, &pool);
    lb_net_forward(&nets[0], images, 20, logits[0], NULL, NULL, NULL, NULL);
    lb_net_forward(&nets[1], images, 20, logits[1], pool, NULL, NULL, NULL);
    CHECK(memcmp(logits[0], logits[1], sizeof logits[0]) == 0, "forward differs across threads");
    lowbit_pool_destroy(pool);
    lb_net_free(&nets[0]);
    lb_net_free(&nets[1]);
}

static double accuracy(const lb_net *net, const uint8_t *images, const uint8_t *labels, int64_t n) {
    float *logits = malloc((size_t)(n * net->classes) * sizeof(float));
    lowbit_status st = lb_net_forward(net, images, n, logits, NULL, NULL, NULL, NULL);
    CHECK(st == LOWBIT_OK, "forward: %s", lowbit_status_name(st));
    int64_t correct = 0;
    lb_softmax_cross_entropy(logits, labels, n, net->classes, 1.0f, NULL, &correct);
    free(logits);
    return (double)correct / (double)n;
}

static void training_lowers_loss(const lb_layer_spec *specs, int n_specs, lb_optimizer opt,
                                 float lr, const char *what, const uint8_t *images,
                                 const uint8_t *labels, int64_t n) {
    lb_net net;
    lowbit_diag diag;
    lowbit_status st = lb_net_build(&net, shp(12, 12, 1), specs, n_specs, 5, &diag);
    CHECK(st == LOWBIT_OK, "build: %s", diag.message);
    if (st != LOWBIT_OK) return;
    loss_log log = {0};
    lb_train_config c = base_config(10, opt, lr, &log);
    st = lb_net_train(&net, images, labels, n, &c, NULL, &diag);
    CHECK(st == LOWBIT_OK, "%s: train: %s", what, diag.message);
    CHECK(log.last_epoch < 0.5 * log.first_epoch, "%s: loss %g -> %g", what, log.first_epoch,
          log.last_epoch);
    const double acc = accuracy(&net, images, labels, n);
    CHECK(acc > 0.9, "%s: training accuracy %g", what, acc);
    lb_net_free(&net);
}

/* ---- QAT ------------------------------------------------------------------------------------ */

/* The reference: a plain float forward of flatten-linear-relu-linear with fake-quantized weights
   (own code, as documented) and fake-quantized activations at the two quant points. */
static float ref_fake_quant(float x, const lb_layer *l, int bits) {
    float lo = LB_MIN(l->range_lo, 0.0f), hi = LB_MAX(l->range_hi, 0.0f);
    if (hi - lo < 1e-6f) hi = lo + 1e-6f;
    lb_qparams qp;
    lb_qparams_affine(lo, hi, 0, (1 << bits) - 1, &qp, NULL);
    float q = roundf(x / qp.scale) + (float)qp.zero_point;
    q = LB_MAX(0.0f, LB_MIN((float)qp.qmax, q));
    return (q - (float)qp.zero_point) * qp.scale;
}

static void ref_weights(const lb_layer *l, int bits, float *out) {
    const int64_t k = lb_shape_size(l->in), qmax = (1 << (bits - 1)) - 1;
    for (int64_t o = 0; o < l->out.c; o++) {
        double amax = 0.0;
        for (int64_t i = 0; i < k; i++) amax = LB_MAX(amax, fabs((double)l->weight[o * k + i]));
        float s = (float)(amax / (double)qmax);
        if (!(s > 0.0f)) s = 1.0f;
        for (int64_t i = 0; i < k; i++) {
            double q = round((double)l->weight[o * k + i] / (double)s);
            q = LB_MAX(-(double)qmax, LB_MIN((double)qmax, q));
            out[o * k + i] = (float)(q * (double)s);
        }
    }
}

static void ref_linear(const lb_layer *l, const float *wq, const float *x, float *y) {
    const int64_t k = lb_shape_size(l->in);
    for (int64_t o = 0; o < l->out.c; o++) {
        float acc = 0.0f;
        for (int64_t i = 0; i < k; i++) acc += x[i] * wq[o * k + i];
        y[o] = acc + l->bias[o];
    }
}

static void qat_forward_matches_reference(const lb_net *net, const lb_qat_config *qat,
                                          const uint8_t *images, int64_t n) {
    float *logits = malloc((size_t)(n * net->classes) * sizeof(float));
    lowbit_pool *pool = NULL;
    lowbit_pool_create(3, &pool);
    lowbit_diag diag;
    lowbit_status st = lb_net_forward_fake_quant(net, qat, images, n, logits, pool, &diag);
    CHECK(st == LOWBIT_OK, "fake-quant forward: %s", diag.message);
    const lb_layer *l1 = &net->layers[1], *l2 = &net->layers[2], *l3 = &net->layers[3];
    float *w1 = malloc((size_t)(144 * 32) * sizeof(float)), *w3 = malloc(32 * 8 * sizeof(float));
    ref_weights(l1, qat->weight_bits, w1);
    ref_weights(l3, qat->weight_bits, w3);
    int bad = 0;
    for (int64_t s = 0; s < n; s++) {
        float x[144], h[32], y[8];
        for (int p = 0; p < 144; p++) x[p] = (float)images[s * 144 + p] / 255.0f;
        ref_linear(l1, w1, x, h);
        for (int j = 0; j < 32; j++) h[j] = ref_fake_quant(h[j] > 0.0f ? h[j] : 0.0f, l2, qat->activation_bits);
        ref_linear(l3, w3, h, y);
        for (int j = 0; j < 8; j++) {
            y[j] = ref_fake_quant(y[j], l3, qat->activation_bits);
            bad += y[j] != logits[s * 8 + j];
        }
    }
    CHECK(bad == 0, "QAT forward differs from the float forward of fake-quantized values in %d "
                    "logits", bad);
    free(w1);
    free(w3);
    free(logits);
    lowbit_pool_destroy(pool);
}

static void qat_run(int learn_ranges, const uint8_t *images, const uint8_t *labels, int64_t n) {
    lb_net net;
    lowbit_diag diag;
    lowbit_status st = lb_net_build(&net, shp(12, 12, 1), small_mlp, LB_ARRAY_LEN(small_mlp), 9,
                                    &diag);
    CHECK(st == LOWBIT_OK, "build: %s", diag.message);
    if (st != LOWBIT_OK) return;
    loss_log log = {0};
    lb_train_config c = base_config(1, LB_OPT_ADAM, 0.003f, &log);
    lb_net_train(&net, images, labels, n, &c, NULL, &diag); /* a rough float start */
    /* 4-bit weights and activations, so fake quantization matters */
    c = base_config(4, LB_OPT_ADAM, 0.003f, &log);
    c.qat = (lb_qat_config){1, 4, 4, learn_ranges, 0.1f};
    st = lb_net_train(&net, images, labels, n, &c, NULL, &diag);
    const char *mode = learn_ranges ? "QAT learned ranges" : "QAT moving-average ranges";
    CHECK(st == LOWBIT_OK, "%s: %s", mode, diag.message);
    CHECK(log.last_epoch < 0.8 * log.first_epoch, "%s: loss %g -> %g", mode, log.first_epoch,
          log.last_epoch);
    for (int i = 0; i < net.n_layers; i++) {
        const lb_layer *l = &net.layers[i];
        if (!lb_net_is_quant_point(&net, i)) continue;
        CHECK(l->has_range && l->range_lo <= 0.0f && l->range_hi > 0.0f,
              "%s: layer %d range %d [%g, %g]", mode, i, l->has_range, (double)l->range_lo,
              (double)l->range_hi);
        if (l->kind == LB_LAYER_RELU)
            CHECK(l->range_lo == 0.0f, "%s: ReLU range starts at %g", mode, (double)l->range_lo);
    }
    qat_forward_matches_reference(&net, &c.qat, images, 64);
    lb_net_free(&net);
}

/* QAT (learned ranges: the range gradients are reductions too) gives the same bytes with 1 and
   3 threads. */
static void qat_determinism(const uint8_t *images, const uint8_t *labels) {
    lb_net nets[2];
    lowbit_diag diag;
    for (int t = 0; t < 2; t++) {
        if (lb_net_build(&nets[t], shp(12, 12, 1), small_mlp, LB_ARRAY_LEN(small_mlp), 4, &diag) !=
            LOWBIT_OK)
            return;
        lowbit_pool *pool = NULL;
        lowbit_pool_create(t == 0 ? 1 : 3, &pool);
        loss_log log = {0};
        lb_train_config c = base_config(1, LB_OPT_SGD, 0.05f, &log);
        c.qat = (lb_qat_config){1, 4, 6, 1, 0.1f};
        lowbit_status st = lb_net_train(&nets[t], images, labels, 128, &c, pool, &diag);
        CHECK(st == LOWBIT_OK, "QAT train: %s", diag.message);
        lowbit_pool_destroy(pool);
    }
    CHECK(memcmp(nets[0].params, nets[1].params, (size_t)nets[0].n_params * sizeof(float)) == 0,
          "QAT params differ between 1 and 3 threads");
    for (int i = 0; i < nets[0].n_layers; i++)
        CHECK(nets[0].layers[i].range_lo == nets[1].layers[i].range_lo &&
                  nets[0].layers[i].range_hi == nets[1].layers[i].range_hi,
              "QAT range of layer %d differs between 1 and 3 threads", i);
    lb_net_free(&nets[0]);
    lb_net_free(&nets[1]);
}

static void qat_refuses_batchnorm(const uint8_t *images, const uint8_t *labels) {
    lb_net net;
    lowbit_diag diag;
    if (lb_net_build(&net, shp(12, 12, 1), small_cnn, LB_ARRAY_LEN(small_cnn), 3, &diag) != LOWBIT_OK)
        return;
    loss_log log = {0};
    lb_train_config c = base_config(1, LB_OPT_SGD, 0.01f, &log);
    c.qat = (lb_qat_config){1, 8, 8, 0, 0.01f};
    lowbit_status st = lb_net_train(&net, images, labels, 32, &c, NULL, &diag);
    CHECK(st == LOWBIT_ERR_INVALID_ARGUMENT && strstr(diag.message, "fold"), "QAT with BN: %s",
          diag.message);
    lb_net_free(&net);
}

static void bad_arguments(const uint8_t *images, uint8_t *labels) {
    lb_net net;
    lowbit_diag diag;
    if (lb_net_build(&net, shp(12, 12, 1), small_mlp, LB_ARRAY_LEN(small_mlp), 1, &diag) != LOWBIT_OK)
        return;
    loss_log log = {0};
    lb_train_config c = base_config(1, LB_OPT_SGD, 0.01f, &log);
    const uint8_t keep = labels[5];
    labels[5] = 8; /* the net has 8 classes */
    CHECK(lb_net_train(&net, images, labels, 32, &c, NULL, &diag) == LOWBIT_ERR_INVALID_ARGUMENT,
          "a label out of range is refused");
    labels[5] = keep;
    c.batch_size = 0;
    CHECK(lb_net_train(&net, images, labels, 32, &c, NULL, &diag) == LOWBIT_ERR_INVALID_ARGUMENT,
          "batch size 0 is refused");
    c = base_config(1, LB_OPT_SGD, 1e30f, &log); /* diverges */
    c.weight_decay = 0.0f;
    lowbit_status st = lb_net_train(&net, images, labels, 64, &c, NULL, &diag);
    CHECK(st == LOWBIT_ERR_NONFINITE, "divergence is reported: %s", lowbit_status_name(st));
    lb_net broken = net;
    broken.layers[1].in.c = 100; /* no longer chained to the flatten */
    float logits[8];
    CHECK(lb_net_forward(&broken, images, 1, logits, NULL, NULL, NULL, &diag) ==
              LOWBIT_ERR_INVALID_ARGUMENT,
          "an inconsistent net is refused");
    lb_net_free(&net);
}

typedef struct observe_log {
    int calls[LB_NET_MAX_LAYERS];
    int64_t samples[LB_NET_MAX_LAYERS];
} observe_log;

static void observe_layer(void *ctx, int layer, const float *output, int64_t n) {
    observe_log *log = ctx;
    (void)output;
    log->calls[layer]++;
    log->samples[layer] += n;
}

static void forward_observes_every_layer(const uint8_t *images) {
    lb_net net;
    lowbit_diag diag;
    if (lb_net_build(&net, shp(12, 12, 1), small_cnn, LB_ARRAY_LEN(small_cnn), 3, &diag) != LOWBIT_OK)
        return;
    observe_log log;
    memset(&log, 0, sizeof log);
    float *logits = malloc(300 * 8 * sizeof(float));
    lowbit_status st = lb_net_forward(&net, images, 300, logits, NULL, observe_layer, &log, &diag);
    CHECK(st == LOWBIT_OK, "forward: %s", diag.message);
    for (int i = 0; i < net.n_layers; i++)
        CHECK(log.samples[i] == 300 && log.calls[i] >= 1, "layer %d observed %lld samples", i,
              (long long)log.samples[i]);
    free(logits);
    lb_net_free(&net);
}

int main(void) {
    rng_state = 12345;
    gradcheck_linear();
    gradcheck_conv(5, 5, 2, 3, 3, 2, 1);
    gradcheck_conv(4, 5, 2, 2, 3, 1, 0);
    gradcheck_conv(6, 6, 1, 3, 2, 2, 0);
    gradcheck_conv(3, 4, 3, 2, 1, 1, 0);
    gradcheck_conv(5, 4, 2, 2, 3, 1, 2);
    conv_matches_direct();
    gradcheck_batchnorm();
    batchnorm_running_stats();
    gradcheck_simple(LB_LAYER_RELU, shp(3, 3, 2), 0, 0, "relu");
    gradcheck_simple(LB_LAYER_RELU6, shp(3, 3, 2), 0, 0, "relu6");
    gradcheck_simple(LB_LAYER_MAXPOOL, shp(4, 4, 2), 2, 2, "maxpool k2 s2");
    gradcheck_simple(LB_LAYER_MAXPOOL, shp(5, 4, 2), 3, 1, "maxpool k3 s1 (overlapping)");
    gradcheck_simple(LB_LAYER_AVGPOOL, shp(4, 4, 2), 2, 2, "avgpool k2 s2");
    gradcheck_simple(LB_LAYER_AVGPOOL, shp(5, 5, 2), 3, 2, "avgpool k3 s2 (overlapping)");
    gradcheck_simple(LB_LAYER_FLATTEN, shp(2, 3, 2), 0, 0, "flatten");
    softmax_gradient();
    gemm_matches_naive();

    const int64_t n = 512; /* small enough for the emulator too */
    uint8_t *images = malloc((size_t)n * 144), *labels = malloc((size_t)n);
    make_images(images, labels, n, 8);
    determinism_across_threads(images, labels);
    training_lowers_loss(small_mlp, LB_ARRAY_LEN(small_mlp), LB_OPT_SGD, 0.05f, "MLP (SGD)",
                         images, labels, n);
    training_lowers_loss(small_mlp, LB_ARRAY_LEN(small_mlp), LB_OPT_ADAM, 0.003f, "MLP (Adam)",
                         images, labels, n);
    training_lowers_loss(small_cnn, LB_ARRAY_LEN(small_cnn), LB_OPT_ADAM, 0.01f, "CNN (Adam)",
                         images, labels, n);
    qat_run(0, images, labels, n);
    qat_run(1, images, labels, n);
    qat_determinism(images, labels);
    qat_refuses_batchnorm(images, labels);
    forward_observes_every_layer(images);
    bad_arguments(images, labels);
    free(images);
    free(labels);
    return lb_test_summary();
}
