/*
 * The integer classifier model (lib/nn/classifier.h: quant_convert.c, integer_net.c,
 * classifier_dynamic.c).
 *
 * - kernels: lb_u8_i8_dots_avx2 equals the scalar lb_u8_i8_dots for many shapes (x86-64 only).
 * - exact: the static integer runner's codes equal, byte for byte, a simulation written here in
 *   int64 with divisions (not the library's shifts) from the same integers and the real multiplier
 *   M0 * 2^(-31-shift), rounded in two steps as the kernels do; each simulated value is also
 *   within 1 of round(acc * M). Nets: conv with stride 2 / padding 1 and kernel 5 / padding 2 on
 *   a 3-channel input, max and average pools, ReLU6, linear layers, 8 and 4 bits. Linear ops are
 *   also compared with lb_int8_linear. The codes do not depend on the thread count (1, 2, 3) or
 *   on whether threads split samples or output rows.
 * - batch-norm folding: the folded net equals the original in inference mode (a float reference
 *   forward pass written here, in double, and lb_net_forward).
 * - accuracy: a random CNN converted with calibrated ranges; static-mode logits close to the float
 *   net's (argmax agreement, relative error); dynamic and weight-only modes closer.
 * - edge cases: an all-zero weight row (its output is exactly the rounded bias), a constant-zero
 *   range, a bias too large for the int32 at the natural weight scale.
 * - dynamic and weight-only modes: the batched runner against the one-sample scalar reference
 *   written here (the modes as first implemented): dynamic bit for bit, weight-only within float
 *   rounding; 1 to 3 threads and single images give the same bits; weight-only models carry
 *   dequantized weights (lb_int_net_prepare, also after loading), and unprepared ones give the
 *   same logits.
 * - errors: missing range (named), bits out of range, unknown mode, a lone ReLU, corrupted ops.
 */
#include "testing.h"
#include "lowbit.h"
#include "nn/classifier.h"
#include "nn/integer.h"
#include "kernels/kernels.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x243f6a8885a308d3ULL;

static uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_unit(void) { return (double)(rng_next() >> 11) * 0x1p-53; }
static int rng_int(int n) { return (int)(rng_next() % (uint64_t)n); }

/* Images with some structure (a smooth gradient plus noise), so activations vary like real ones. */
static uint8_t *random_images(lb_shape shape, int64_t n) {
    const int64_t size = lb_shape_size(shape);
    uint8_t *images = malloc((size_t)(n * size));
    for (int64_t i = 0; i < n; i++) {
        double gx = rng_unit() * 2 - 1, gy = rng_unit() * 2 - 1, base = rng_unit() * 255;
        for (int64_t p = 0; p < size; p++) {
            int64_t pix = p / shape.c, y = pix / shape.w, x = pix % shape.w;
            double v = base + 20 * (gx * x + gy * y) + 60 * (rng_unit() - 0.5);
            images[i * size + p] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    return images;
}

/* ---- float reference forward pass (double), with range observation ------------------------ */

typedef struct observed {
    double lo[LB_NET_MAX_LAYERS], hi[LB_NET_MAX_LAYERS];
} observed;

static void ref_layer(const lb_layer *l, const double *x, double *y) {
    const lb_shape in = l->in, out = l->out;
    switch (l->kind) {
    case LB_LAYER_LINEAR: {
        const int64_t k_count = lb_shape_size(in);
        for (int64_t o = 0; o < out.c; o++) {
            double s = l->bias ? l->bias[o] : 0.0;
            for (int64_t k = 0; k < k_count; k++) s += (double)l->weight[o * k_count + k] * x[k];
            y[o] = s;
        }
        break;
    }
    case LB_LAYER_CONV2D: {
        const int64_t k = l->kernel, k_count = k * k * in.c;
        for (int64_t oy = 0; oy < out.h; oy++)
            for (int64_t ox = 0; ox < out.w; ox++)
                for (int64_t o = 0; o < out.c; o++) {
                    double s = l->bias ? l->bias[o] : 0.0;
                    for (int64_t ky = 0; ky < k; ky++)
                        for (int64_t kx = 0; kx < k; kx++) {
                            int64_t iy = oy * l->stride - l->pad + ky;
                            int64_t ix = ox * l->stride - l->pad + kx;
                            if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                            for (int64_t c = 0; c < in.c; c++)
                                s += (double)l->weight[o * k_count + (ky * k + kx) * in.c + c] *
                                     x[(iy * in.w + ix) * in.c + c];
                        }
                    y[(oy * out.w + ox) * out.c + o] = s;
                }
        break;
    }
    case LB_LAYER_BATCHNORM:
        for (int64_t i = 0; i < lb_shape_size(in); i++) {
            int64_t c = i % in.c;
            y[i] = (x[i] - l->running_mean[c]) / sqrt((double)l->running_var[c] + l->eps) *
                       l->gamma[c] +
                   l->bias[c];
        }
        break;
    case LB_LAYER_RELU:
    case LB_LAYER_RELU6:
        for (int64_t i = 0; i < lb_shape_size(in); i++) {
            y[i] = x[i] > 0 ? x[i] : 0;
            if (l->kind == LB_LAYER_RELU6 && y[i] > 6) y[i] = 6;
        }
        break;
    case LB_LAYER_MAXPOOL:
    case LB_LAYER_AVGPOOL:
        for (int64_t oy = 0; oy < out.h; oy++)
            for (int64_t ox = 0; ox < out.w; ox++)
                for (int64_t c = 0; c < in.c; c++) {
                    double best = -INFINITY, sum = 0;
                    for (int64_t ky = 0; ky < l->kernel; ky++)
                        for (int64_t kx = 0; kx < l->kernel; kx++) {
                            double v = x[((oy * l->stride + ky) * in.w + ox * l->stride + kx) *
                                             in.c + c];
                            best = v > best ? v : best;
                            sum += v;
                        }
                    y[(oy * out.w + ox) * in.c + c] =
                        l->kind == LB_LAYER_MAXPOOL ? best : sum / (double)(l->kernel * l->kernel);
                }
        break;
    case LB_LAYER_FLATTEN:
        memcpy(y, x, (size_t)lb_shape_size(in) * sizeof(double));
        break;
    default: break;
    }
}

/* Logits of n images; obs (if any) gets every layer's min/max over them. */
static void ref_forward(const lb_net *net, const uint8_t *images, int64_t n, double *logits,
                        observed *obs) {
    int64_t act = lb_shape_size(net->input);
    for (int i = 0; i < net->n_layers; i++)
        if (lb_shape_size(net->layers[i].out) > act) act = lb_shape_size(net->layers[i].out);
    double *a = malloc((size_t)act * sizeof(double)), *b = malloc((size_t)act * sizeof(double));
    if (obs)
        for (int i = 0; i < net->n_layers; i++) obs->lo[i] = obs->hi[i] = 0;
    const int64_t in_size = lb_shape_size(net->input);
    for (int64_t s = 0; s < n; s++) {
        for (int64_t p = 0; p < in_size; p++) a[p] = images[s * in_size + p] / 255.0;
        for (int i = 0; i < net->n_layers; i++) {
            ref_layer(&net->layers[i], a, b);
            double *t = a;
            a = b;
            b = t;
            if (obs)
                for (int64_t p = 0; p < lb_shape_size(net->layers[i].out); p++) {
                    if (a[p] < obs->lo[i]) obs->lo[i] = a[p];
                    if (a[p] > obs->hi[i]) obs->hi[i] = a[p];
                }
        }
        memcpy(logits + s * net->classes, a, (size_t)net->classes * sizeof(double));
    }
    free(a);
    free(b);
}

/* Calibrates every quant point with the reference's min/max over the images, narrowed by
   `shrink` (below 1 makes the clamps bite). */
static void calibrate(lb_net *net, const uint8_t *images, int64_t n, double shrink) {
    observed obs;
    double *logits = malloc((size_t)(n * net->classes) * sizeof(double));
    ref_forward(net, images, n, logits, &obs);
    free(logits);
    for (int i = 0; i < net->n_layers; i++) {
        net->layers[i].has_range = lb_net_is_quant_point(net, i);
        net->layers[i].range_lo = (float)(obs.lo[i] * shrink);
        net->layers[i].range_hi = (float)(obs.hi[i] * shrink);
    }
}

static void randomize_batchnorm(lb_net *net) {
    for (int i = 0; i < net->n_layers; i++) {
        lb_layer *l = &net->layers[i];
        if (l->kind != LB_LAYER_BATCHNORM) continue;
        for (int c = 0; c < l->in.c; c++) {
            l->gamma[c] = (float)(0.5 + rng_unit());
            l->bias[c] = (float)(rng_unit() - 0.3);
            l->running_mean[c] = (float)(rng_unit() - 0.5);
            l->running_var[c] = (float)(0.2 + rng_unit());
        }
    }
}

static void randomize_biases(lb_net *net, double amount) {
    for (int i = 0; i < net->n_layers; i++) {
        lb_layer *l = &net->layers[i];
        if (l->kind != LB_LAYER_LINEAR && l->kind != LB_LAYER_CONV2D) continue;
        for (int o = 0; o < l->out.c; o++) l->bias[o] = (float)(amount * (rng_unit() - 0.5));
    }
}

/* ---- integer simulation: int64 with divisions -------------------------------------------- */

static int64_t floor_div(int64_t v, int64_t d) {
    int64_t q = v / d;
    return q * d > v ? q - 1 : q;
}

/* The kernels' two roundings: the doubling high multiply (floor of v + 2^30 over 2^31), then
   the division by 2^shift rounded half away from zero. */
static int32_t sim_rescale(int32_t x, int32_t m0, int shift) {
    int64_t v = x;
    if (shift < 0) {
        v *= (int64_t)1 << -shift;
        v = v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : v;
    }
    int64_t high = floor_div(v * m0 + ((int64_t)1 << 30), (int64_t)1 << 31);
    if (shift <= 0) return (int32_t)high;
    int64_t d = (int64_t)1 << shift;
    return (int32_t)(high >= 0 ? (high + d / 2) / d : -((-high + d / 2) / d));
}

static int sim_far = 0; /* values more than 1 away from round(acc * M): must stay 0 */

static uint8_t sim_output(const lb_int_op *op, int64_t c, int64_t acc) {
    int64_t biased = acc + op->bias[c];
    biased = biased > INT32_MAX ? INT32_MAX : biased < INT32_MIN ? INT32_MIN : biased;
    int32_t scaled = sim_rescale((int32_t)biased, op->multiplier[c], (int)op->shift[c]);
    double m = ldexp((double)op->multiplier[c], -31 - (int)op->shift[c]);
    if (fabs((double)scaled - (double)biased * m) > 1.0) sim_far++;
    int64_t y = (int64_t)scaled + op->out_q.zero_point;
    return (uint8_t)(y < op->out_min ? op->out_min : y > op->out_max ? op->out_max : y);
}

static void sim_op(const lb_int_op *op, int32_t z, const uint8_t *x, uint8_t *y) {
    const lb_shape in = op->in, out = op->out;
    if (op->kind == LB_INT_LINEAR) {
        const int64_t k_count = lb_shape_size(in);
        for (int64_t o = 0; o < out.c; o++) {
            int64_t acc = 0;
            for (int64_t k = 0; k < k_count; k++)
                acc += ((int64_t)x[k] - z) * op->weights[o * k_count + k];
            y[o] = sim_output(op, o, acc);
        }
    } else if (op->kind == LB_INT_CONV2D) {
        const int64_t k = op->kernel, k_count = k * k * in.c;
        for (int64_t oy = 0; oy < out.h; oy++)
            for (int64_t ox = 0; ox < out.w; ox++)
                for (int64_t o = 0; o < out.c; o++) {
                    int64_t acc = 0; /* padding is the zero point: (z - z) * w = 0 */
                    for (int64_t ky = 0; ky < k; ky++)
                        for (int64_t kx = 0; kx < k; kx++) {
                            int64_t iy = oy * op->stride - op->pad + ky;
                            int64_t ix = ox * op->stride - op->pad + kx;
                            if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                            for (int64_t c = 0; c < in.c; c++)
                                acc += ((int64_t)x[(iy * in.w + ix) * in.c + c] - z) *
                                       op->weights[o * k_count + (ky * k + kx) * in.c + c];
                        }
                    y[(oy * out.w + ox) * out.c + o] = sim_output(op, o, acc);
                }
    } else if (op->kind == LB_INT_MAXPOOL || op->kind == LB_INT_AVGPOOL) {
        for (int64_t oy = 0; oy < out.h; oy++)
            for (int64_t ox = 0; ox < out.w; ox++)
                for (int64_t c = 0; c < in.c; c++) {
                    int64_t best = 0, sum = 0, count = (int64_t)op->kernel * op->kernel;
                    for (int64_t ky = 0; ky < op->kernel; ky++)
                        for (int64_t kx = 0; kx < op->kernel; kx++) {
                            int64_t v = x[((oy * op->stride + ky) * in.w + ox * op->stride + kx) *
                                              in.c + c];
                            best = v > best ? v : best;
                            sum += v;
                        }
                    y[(oy * out.w + ox) * in.c + c] =
                        (uint8_t)(op->kind == LB_INT_MAXPOOL ? best
                                                             : (int64_t)floor(
                                                                   (double)sum / count + 0.5));
                }
    } else {
        memcpy(y, x, (size_t)lb_shape_size(in));
    }
}

/* Simulated codes of n images; linear ops are also run through lb_int8_linear (counted in
   *linear_mismatch). */
static void sim_forward(const lb_int_net *net, const uint8_t *images, int64_t n, uint8_t *codes,
                        int *linear_mismatch) {
    int64_t act = lb_shape_size(net->input);
    for (int i = 0; i < net->n_ops; i++)
        if (lb_shape_size(net->ops[i].out) > act) act = lb_shape_size(net->ops[i].out);
    uint8_t *a = malloc((size_t)act), *b = malloc((size_t)act), *c = malloc((size_t)act);
    const int64_t in_size = lb_shape_size(net->input);
    for (int64_t s = 0; s < n; s++) {
        memcpy(a, images + s * in_size, (size_t)in_size);
        int32_t z = net->input_q.zero_point;
        for (int i = 0; i < net->n_ops; i++) {
            const lb_int_op *op = &net->ops[i];
            sim_op(op, z, a, b);
            if (op->kind == LB_INT_LINEAR) {
                lb_int8_linear_layer layer = {
                    lb_shape_size(op->in), op->out.c, op->weights, op->weight_sums, op->bias,
                    op->multiplier, op->shift, LB_QTYPE_U8, LB_QTYPE_U8, z,
                    op->out_q.zero_point, op->out_min, op->out_max};
                if (lb_int8_linear(&layer, a, 1, c, NULL) != LOWBIT_OK ||
                    memcmp(b, c, (size_t)op->out.c) != 0)
                    (*linear_mismatch)++;
            }
            z = op->out_q.zero_point;
            uint8_t *t = a;
            a = b;
            b = t;
        }
        memcpy(codes + s * net->classes, a, (size_t)net->classes);
    }
    free(a);
    free(b);
    free(c);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_dot_kernels(void) {
#if defined(__x86_64__)
    if (lb_cpu_level_detected() < LB_CPU_AVX2) return;
    int bad = 0;
    const int64_t ks[] = {1, 7, 9, 15, 16, 17, 31, 33, 144, 288, 301};
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        const int64_t k = ks[ki];
        for (int64_t rows = 1; rows <= 5; rows++)
            for (int64_t ch = 1; ch <= 9; ch++) {
                const int64_t stride = k + rng_int(5);
                uint8_t *a = malloc((size_t)(rows * stride));
                int8_t *w = malloc((size_t)(ch * k));
                int32_t *d0 = malloc((size_t)(rows * ch) * 4), *d1 = malloc((size_t)(rows * ch) * 4);
                for (int64_t i = 0; i < rows * stride; i++) a[i] = (uint8_t)rng_next();
                for (int64_t i = 0; i < ch * k; i++) w[i] = (int8_t)rng_next(); /* -128 too */
                lb_u8_i8_dots(a, stride, rows, w, k, ch, d0);
                lb_u8_i8_dots_avx2(a, stride, rows, w, k, ch, d1);
                if (memcmp(d0, d1, (size_t)(rows * ch) * 4) != 0) bad++;
                free(a);
                free(w);
                free(d0);
                free(d1);
            }
    }
    CHECK(bad == 0, "%d AVX2 dot shapes differ from the scalar reference", bad);
#endif
}

/* Runs the static model with pools of 1, 2, 3 threads, n images and one image at a time;
   every result must equal `expect`. */
static void check_runner(const lb_int_net *net, const uint8_t *images, int64_t n,
                         const uint8_t *expect, const char *what) {
    uint8_t *codes = malloc((size_t)(n * net->classes));
    const int64_t in_size = lb_shape_size(net->input);
    for (int threads = 1; threads <= 3; threads++) {
        lowbit_pool *pool = NULL;
        if (threads > 1 && lowbit_pool_create(threads, &pool) != LOWBIT_OK) continue;
        lowbit_diag diag = {0};
        memset(codes, 0xAA, (size_t)(n * net->classes));
        lowbit_status st = lb_int_net_run_static(net, images, n, codes, pool, &diag);
        CHECK(st == LOWBIT_OK, "%s: run: %s", what, diag.message);
        CHECK(memcmp(codes, expect, (size_t)(n * net->classes)) == 0,
              "%s: %d threads, batch of %lld: codes differ from the simulation", what, threads,
              (long long)n);
        /* One image at a time: fewer samples than threads splits each op's rows. */
        int single_ok = 1;
        for (int64_t i = 0; i < n && i < 5; i++) {
            st = lb_int_net_run_static(net, images + i * in_size, 1, codes, pool, &diag);
            single_ok &= st == LOWBIT_OK &&
                         memcmp(codes, expect + i * net->classes, (size_t)net->classes) == 0;
        }
        CHECK(single_ok, "%s: %d threads, single images differ", what, threads);
        lowbit_pool_destroy(pool);
    }
    free(codes);
}

static void exact_case(const char *what, lb_shape input, const lb_layer_spec *specs, int n_specs,
                       int weight_bits, int activation_bits, double shrink) {
    lb_net net;
    lowbit_diag diag = {0};
    lowbit_status st = lb_net_build(&net, input, specs, n_specs, 7, &diag);
    CHECK(st == LOWBIT_OK, "%s: build: %s", what, diag.message);
    if (st != LOWBIT_OK) return;
    randomize_batchnorm(&net);
    randomize_biases(&net, 0.4);
    const int64_t n = lb_test_quick() ? 6 : 17;
    uint8_t *images = random_images(input, n);
    calibrate(&net, images, n, shrink);
    lb_convert_config config = {LB_INT_MODE_STATIC, weight_bits, activation_bits};
    lb_int_net qnet;
    st = lb_int_net_convert(&net, &config, &qnet, &diag);
    CHECK(st == LOWBIT_OK, "%s: convert: %s", what, diag.message);
    if (st == LOWBIT_OK) {
        uint8_t *expect = malloc((size_t)(n * qnet.classes));
        int linear_mismatch = 0;
        sim_far = 0;
        sim_forward(&qnet, images, n, expect, &linear_mismatch);
        CHECK(linear_mismatch == 0, "%s: %d linear ops differ from lb_int8_linear", what,
              linear_mismatch);
        CHECK(sim_far == 0, "%s: %d values more than 1 from round(acc * M)", what, sim_far);
        /* The clamps keep every code within the activation bits. */
        int in_range = 1;
        for (int64_t i = 0; i < n * qnet.classes; i++)
            in_range &= expect[i] < (1 << activation_bits);
        CHECK(in_range, "%s: codes beyond %d bits", what, activation_bits);
        check_runner(&qnet, images, n, expect, what);
        free(expect);
        lb_int_net_free(&qnet);
    }
    free(images);
    lb_net_free(&net);
}

/* Nets both the exact integer tests and the float-mode tests run: a strided CNN with every op
   kind (conv with stride and padding, BN, ReLU, ReLU6, both pools) on a 19x17x3 input, and a
   small MLP on 9x9x1. */
static const lb_layer_spec strided[] = {
    {LB_LAYER_CONV2D, 6, 3, 2, 1}, {LB_LAYER_BATCHNORM, 0, 0, 0, 0},
    {LB_LAYER_RELU, 0, 0, 0, 0},   {LB_LAYER_CONV2D, 5, 5, 1, 2},
    {LB_LAYER_RELU6, 0, 0, 0, 0},  {LB_LAYER_MAXPOOL, 0, 2, 2, 0},
    {LB_LAYER_CONV2D, 7, 3, 1, 0}, {LB_LAYER_AVGPOOL, 0, 2, 1, 0},
    {LB_LAYER_FLATTEN, 0, 0, 0, 0}, {LB_LAYER_LINEAR, 20, 0, 0, 0},
    {LB_LAYER_RELU, 0, 0, 0, 0},   {LB_LAYER_LINEAR, 10, 0, 0, 0},
};
static const lb_shape in3 = {19, 17, 3};
static const lb_layer_spec mlp[] = {
    {LB_LAYER_FLATTEN, 0, 0, 0, 0}, {LB_LAYER_LINEAR, 37, 0, 0, 0},
    {LB_LAYER_RELU, 0, 0, 0, 0},    {LB_LAYER_LINEAR, 10, 0, 0, 0},
};

static void test_exact(void) {
    exact_case("strided 8/8", in3, strided, LB_ARRAY_LEN(strided), 8, 8, 1.0);
    exact_case("strided 8/8 clamped", in3, strided, LB_ARRAY_LEN(strided), 8, 8, 0.6);
    exact_case("strided 4/4", in3, strided, LB_ARRAY_LEN(strided), 4, 4, 1.0);
    exact_case("strided 4/8", in3, strided, LB_ARRAY_LEN(strided), 4, 8, 0.8);
    exact_case("strided 8/4", in3, strided, LB_ARRAY_LEN(strided), 8, 4, 1.0);
    const lb_layer_spec avg_first[] = {
        {LB_LAYER_AVGPOOL, 0, 3, 2, 0}, {LB_LAYER_CONV2D, 33, 3, 1, 1},
        {LB_LAYER_MAXPOOL, 0, 3, 3, 0}, {LB_LAYER_FLATTEN, 0, 0, 0, 0},
        {LB_LAYER_LINEAR, 3, 0, 0, 0},
    };
    exact_case("avgpool first", (lb_shape){15, 15, 2}, avg_first, LB_ARRAY_LEN(avg_first), 8, 8,
               1.0);
    exact_case("mlp 8/8", (lb_shape){9, 9, 1}, mlp, LB_ARRAY_LEN(mlp), 8, 8, 1.0);
    exact_case("mlp 3/5", (lb_shape){9, 9, 1}, mlp, LB_ARRAY_LEN(mlp), 3, 5, 0.9);
}

static void test_fold(void) {
    const lb_layer_spec specs[] = {
        {LB_LAYER_CONV2D, 8, 3, 1, 1}, {LB_LAYER_BATCHNORM, 0, 0, 0, 0},
        {LB_LAYER_RELU, 0, 0, 0, 0},   {LB_LAYER_MAXPOOL, 0, 2, 2, 0},
        {LB_LAYER_FLATTEN, 0, 0, 0, 0}, {LB_LAYER_LINEAR, 12, 0, 0, 0},
        {LB_LAYER_BATCHNORM, 0, 0, 0, 0}, {LB_LAYER_LINEAR, 5, 0, 0, 0},
    };
    const lb_shape input = {10, 10, 1};
    lb_net net, folded;
    lowbit_diag diag = {0};
    if (lb_net_build(&net, input, specs, LB_ARRAY_LEN(specs), 3, &diag) != LOWBIT_OK) {
        CHECK(0, "build: %s", diag.message);
        return;
    }
    randomize_batchnorm(&net);
    randomize_biases(&net, 0.5);
    CHECK(lb_net_fold_batchnorm(&net, &folded, &diag) == LOWBIT_OK, "fold: %s", diag.message);
    const int64_t n = 8;
    uint8_t *images = random_images(input, n);
    double a[8 * 5], b[8 * 5], worst = 0, scale = 0;
    ref_forward(&net, images, n, a, NULL);
    ref_forward(&folded, images, n, b, NULL);
    /* plain comparisons, not fmax: the AArch64 cross compiler's vectorizer fails on two fmax
       reductions in one loop */
    for (int i = 0; i < n * 5; i++) {
        if (fabs(a[i] - b[i]) > worst) worst = fabs(a[i] - b[i]);
        if (fabs(a[i]) > scale) scale = fabs(a[i]);
    }
    CHECK(folded.n_layers == net.n_layers - 2, "folded net has %d layers", folded.n_layers);
    /* The library's float forward pass agrees: original (inference-mode BN) vs folded, and
       with the reference here. */
    float fa[8 * 5], fb[8 * 5];
    double worst_lib = 0, worst_ref = 0;
    CHECK(lb_net_forward(&net, images, n, fa, NULL, NULL, NULL, &diag) == LOWBIT_OK &&
              lb_net_forward(&folded, images, n, fb, NULL, NULL, NULL, &diag) == LOWBIT_OK,
          "lb_net_forward: %s", diag.message);
    for (int i = 0; i < n * 5; i++) {
        if (fabs((double)fa[i] - (double)fb[i]) > worst_lib) worst_lib = fabs((double)fa[i] - (double)fb[i]);
        if (fabs((double)fa[i] - a[i]) > worst_ref) worst_ref = fabs((double)fa[i] - a[i]);
    }
    CHECK(worst_lib <= 1e-4 * fmax(scale, 1.0), "lb_net_forward: folded differs by %g",
          worst_lib);
    CHECK(worst_ref <= 1e-4 * fmax(scale, 1.0), "lb_net_forward vs reference: %g", worst_ref);
    CHECK(worst <= 1e-5 * fmax(scale, 1.0), "folded logits differ by %g (scale %g)", worst, scale);
    free(images);
    lb_net_free(&folded);
    lb_net_free(&net);
}

/* Relative L2 error of the logits and argmax agreement against the float reference. */
static void compare_logits(const float *q, const double *ref, int64_t n, int classes,
                           double *rel, double *agree) {
    double err = 0, norm = 0;
    int64_t same = 0;
    for (int64_t s = 0; s < n; s++) {
        int qa = 0, ra = 0;
        for (int c = 0; c < classes; c++) {
            double d = q[s * classes + c] - ref[s * classes + c];
            err += d * d;
            norm += ref[s * classes + c] * ref[s * classes + c];
            if (q[s * classes + c] > q[s * classes + qa]) qa = c;
            if (ref[s * classes + c] > ref[s * classes + ra]) ra = c;
        }
        same += qa == ra;
    }
    *rel = sqrt(err / norm);
    *agree = (double)same / (double)n;
}

static void test_accuracy(void) {
    const lb_layer_spec specs[] = {
        {LB_LAYER_CONV2D, 8, 3, 1, 1}, {LB_LAYER_BATCHNORM, 0, 0, 0, 0},
        {LB_LAYER_RELU, 0, 0, 0, 0},   {LB_LAYER_MAXPOOL, 0, 2, 2, 0},
        {LB_LAYER_CONV2D, 16, 3, 1, 1}, {LB_LAYER_BATCHNORM, 0, 0, 0, 0},
        {LB_LAYER_RELU, 0, 0, 0, 0},   {LB_LAYER_AVGPOOL, 0, 2, 2, 0},
        {LB_LAYER_FLATTEN, 0, 0, 0, 0}, {LB_LAYER_LINEAR, 10, 0, 0, 0},
    };
    const lb_shape input = {16, 16, 1};
    lb_net net;
    lowbit_diag diag = {0};
    if (lb_net_build(&net, input, specs, LB_ARRAY_LEN(specs), 11, &diag) != LOWBIT_OK) {
        CHECK(0, "build: %s", diag.message);
        return;
    }
    randomize_batchnorm(&net);
    randomize_biases(&net, 0.2);
    const int64_t n_cal = 64, n = lb_test_quick() ? 64 : 200;
    uint8_t *cal = random_images(input, n_cal), *images = random_images(input, n);
    calibrate(&net, cal, n_cal, 1.0);
    double *ref = malloc((size_t)(n * 10) * sizeof(double));
    float *logits = malloc((size_t)(n * 10) * sizeof(float));
    ref_forward(&net, images, n, ref, NULL);
    const lb_int_mode modes[3] = {LB_INT_MODE_STATIC, LB_INT_MODE_DYNAMIC,
                                  LB_INT_MODE_WEIGHT_ONLY};
    double rel[3] = {0}, agree[3] = {0};
    for (int m = 0; m < 3; m++) {
        lb_convert_config config = {modes[m], 8, 8};
        lb_int_net qnet;
        lowbit_status st = lb_int_net_convert(&net, &config, &qnet, &diag);
        CHECK(st == LOWBIT_OK, "mode %d: convert: %s", m, diag.message);
        if (st != LOWBIT_OK) continue;
        st = lb_int_net_forward(&qnet, images, n, logits, NULL, &diag);
        CHECK(st == LOWBIT_OK, "mode %d: forward: %s", m, diag.message);
        compare_logits(logits, ref, n, 10, &rel[m], &agree[m]);
        /* Threads split samples in the float modes too: same logits. */
        lowbit_pool *pool = NULL;
        if (lowbit_pool_create(3, &pool) == LOWBIT_OK) {
            float *again = malloc((size_t)(n * 10) * sizeof(float));
            st = lb_int_net_forward(&qnet, images, n, again, pool, &diag);
            CHECK(st == LOWBIT_OK && memcmp(again, logits, (size_t)(n * 10) * sizeof(float)) == 0,
                  "mode %d: logits depend on the thread count", m);
            free(again);
            lowbit_pool_destroy(pool);
        }
        CHECK(lb_int_net_param_bytes(&qnet) > 0, "param bytes");
        lb_int_net_free(&qnet);
    }
    if (getenv("LOWBIT_TEST_VERBOSE"))
        for (int m = 0; m < 3; m++)
            fprintf(stderr, "mode %d: relative error %.5f, argmax agreement %.3f\n", m, rel[m],
                    agree[m]);
    CHECK(rel[0] < 0.05 && agree[0] >= 0.9, "static: error %g, agreement %g", rel[0], agree[0]);
    CHECK(rel[1] < rel[0] && agree[1] >= 0.95, "dynamic: error %g (static %g), agreement %g",
          rel[1], rel[0], agree[1]);
    /* Weight-only keeps float activations, so it is at least about as close as dynamic. */
    CHECK(rel[2] < rel[0] && rel[2] < 1.1 * rel[1] && agree[2] >= 0.95,
          "weight-only: error %g (dynamic %g), agreement %g", rel[2], rel[1], agree[2]);
    free(cal);
    free(images);
    free(ref);
    free(logits);
    lb_net_free(&net);
}

/* A linear layer with an all-zero weight row (its output is the bias alone), a following layer
   whose range is [0, 0], and a channel with a bias far beyond its weights' scale. */
static void test_edge_cases(void) {
    const lb_layer_spec specs[] = {
        {LB_LAYER_FLATTEN, 0, 0, 0, 0}, {LB_LAYER_LINEAR, 4, 0, 0, 0},
        {LB_LAYER_LINEAR, 3, 0, 0, 0},  {LB_LAYER_RELU, 0, 0, 0, 0},
        {LB_LAYER_LINEAR, 2, 0, 0, 0},
    };
    lb_net net;
    lowbit_diag diag = {0};
    if (lb_net_build(&net, (lb_shape){4, 4, 1}, specs, LB_ARRAY_LEN(specs), 5, &diag) !=
        LOWBIT_OK) {
        CHECK(0, "build: %s", diag.message);
        return;
    }
    lb_layer *l1 = &net.layers[1], *l2 = &net.layers[2], *l4 = &net.layers[4];
    memset(l1->weight, 0, 16 * sizeof(float)); /* channel 0: zero row */
    l1->bias[0] = 0.37f;
    for (int k = 0; k < 16; k++) l1->weight[16 + k] = 1e-7f; /* channel 1: tiny weights */
    l1->bias[1] = -2.5f;
    l1->has_range = 1;
    l1->range_lo = -3.0f;
    l1->range_hi = 3.0f;
    /* Layer 2 + ReLU: everything negative, calibrated as constant zero. */
    for (int k = 0; k < 12; k++) l2->weight[k] = -0.01f;
    for (int o = 0; o < 3; o++) l2->bias[o] = -5.0f;
    net.layers[3].has_range = 1;
    net.layers[3].range_lo = net.layers[3].range_hi = 0.0f;
    l4->bias[0] = 1.0f;
    l4->bias[1] = -1.0f;
    l4->has_range = 1;
    l4->range_lo = -2.0f;
    l4->range_hi = 2.0f;
    lb_convert_config config = {LB_INT_MODE_STATIC, 8, 8};
    lb_int_net qnet;
    lowbit_status st = lb_int_net_convert(&net, &config, &qnet, &diag);
    CHECK(st == LOWBIT_OK, "edge: convert: %s", diag.message);
    if (st == LOWBIT_OK) {
        const lb_int_op *op = &qnet.ops[1];
        CHECK(qnet.n_ops == 4, "edge: %d ops", qnet.n_ops);
        CHECK(op->weight_scales[0] > 0 && op->weight_scales[1] > 0, "edge: scales %g %g",
              (double)op->weight_scales[0], (double)op->weight_scales[1]);
        uint8_t *images = random_images((lb_shape){4, 4, 1}, 4);
        uint8_t codes[4 * 2];
        st = lb_int_net_run_static(&qnet, images, 4, codes, NULL, &diag);
        CHECK(st == LOWBIT_OK, "edge: run: %s", diag.message);
        /* The zero row's code, checked by running op 1 alone through the simulation. */
        uint8_t y[4];
        sim_op(op, 0, images, y);
        int32_t expect0 = op->out_q.zero_point +
                          (int32_t)lround(0.37 / (double)op->out_q.scale);
        int32_t expect1 = op->out_q.zero_point +
                          (int32_t)lround(-2.5 / (double)op->out_q.scale);
        CHECK(y[0] == expect0, "edge: zero row gives %d, the bias is %d", y[0], (int)expect0);
        CHECK(abs((int)y[1] - (int)expect1) <= 1, "edge: large bias gives %d, expected ~%d", y[1],
              (int)expect1);
        /* The dead layer outputs its zero point, so the logits are the last biases. */
        float logits[4 * 2];
        st = lb_int_net_forward(&qnet, images, 4, logits, NULL, &diag);
        CHECK(st == LOWBIT_OK && fabsf(logits[0] - 1.0f) < 0.02f &&
                  fabsf(logits[1] + 1.0f) < 0.02f,
              "edge: logits %g %g", (double)logits[0], (double)logits[1]);
        free(images);
        lb_int_net_free(&qnet);
    }
    lb_net_free(&net);
}

/* ---- dynamic and weight-only modes against the one-sample-at-a-time reference ------------- */

/* The modes as first written (scalar, one sample at a time): the reference of the batched
   runner. Dynamic: each product's input quantized on the sample's own range, exact integer dots,
   (acc * input scale) * weight scale in double plus the float bias, then ReLU. Weight-only: float
   sums in k order of x * (scale * w). Pools in float. */
static void ref_patch(const lb_int_op *op, const void *image, int64_t pixel, size_t elem,
                      const void *pad_value, void *row) {
    const int64_t oy = pixel / op->out.w, ox = pixel % op->out.w, cin = op->in.c, k = op->kernel;
    for (int64_t ky = 0; ky < k; ky++)
        for (int64_t kx = 0; kx < k; kx++) {
            const int64_t iy = oy * op->stride - op->pad + ky, ix = ox * op->stride - op->pad + kx;
            unsigned char *d = (unsigned char *)row + (size_t)((ky * k + kx) * cin) * elem;
            for (int64_t c = 0; c < cin; c++) {
                const int inside = iy >= 0 && iy < op->in.h && ix >= 0 && ix < op->in.w;
                const size_t at = (size_t)((iy * op->in.w + ix) * cin + c) * elem;
                const unsigned char *src =
                    inside ? (const unsigned char *)image + at : (const unsigned char *)pad_value;
                memcpy(d + (size_t)c * elem, src, elem);
            }
        }
}

static float ref_activate(const lb_int_op *op, float y) {
    if (op->fused_relu) y = y > 0.0f ? y : 0.0f;
    if (op->fused_relu == 6) y = y < 6.0f ? y : 6.0f;
    return y;
}

static void ref_product(const lb_int_net *net, const lb_int_op *op, const float *x, float *y) {
    const int is_conv = op->kind == LB_INT_CONV2D;
    const int64_t in_size = lb_shape_size(op->in);
    const int64_t k_count = is_conv ? (int64_t)op->kernel * op->kernel * op->in.c : in_size;
    const int64_t pixels = is_conv ? (int64_t)op->out.h * op->out.w : 1;
    uint8_t *codes = malloc((size_t)in_size), *qrow = malloc((size_t)k_count);
    float *frow = malloc((size_t)k_count * sizeof(float));
    lb_qparams q = {1.0f, 0, 0, 255};
    if (net->mode == LB_INT_MODE_DYNAMIC) {
        float lo = 0.0f, hi = 0.0f;
        for (int64_t i = 0; i < in_size; i++) {
            lo = x[i] < lo ? x[i] : lo;
            hi = x[i] > hi ? x[i] : hi;
        }
        CHECK(lb_qparams_affine(lo, hi, 0, (1 << net->activation_bits) - 1, &q, NULL) ==
                  LOWBIT_OK, "reference range [%g, %g]", (double)lo, (double)hi);
        for (int64_t i = 0; i < in_size; i++) codes[i] = (uint8_t)lb_qparams_quantize(&q, x[i]);
    }
    const uint8_t zero = (uint8_t)q.zero_point;
    const float fzero = 0.0f;
    for (int64_t p = 0; p < pixels; p++) {
        const uint8_t *a = codes;
        const float *xf = x;
        if (is_conv) {
            ref_patch(op, codes, p, 1, &zero, qrow);
            ref_patch(op, x, p, sizeof(float), &fzero, frow);
            a = qrow;
            xf = frow;
        }
        for (int64_t c = 0; c < op->out.c; c++) {
            const int8_t *w = op->weights + c * k_count;
            float v;
            if (net->mode == LB_INT_MODE_DYNAMIC) {
                int32_t dot = 0;
                for (int64_t k = 0; k < k_count; k++) dot += (int32_t)a[k] * w[k];
                const int32_t acc = dot - q.zero_point * op->weight_sums[c];
                v = (float)((double)acc * (double)q.scale * (double)op->weight_scales[c]);
            } else {
                v = 0.0f;
                for (int64_t k = 0; k < k_count; k++)
                    v += xf[k] * (op->weight_scales[c] * (float)w[k]);
            }
            y[p * op->out.c + c] = ref_activate(op, v + op->float_bias[c]);
        }
    }
    free(codes);
    free(qrow);
    free(frow);
}

static void ref_pool(const lb_int_op *op, const float *x, float *y) {
    const int64_t cin = op->in.c, k = op->kernel;
    for (int64_t oy = 0; oy < op->out.h; oy++)
        for (int64_t ox = 0; ox < op->out.w; ox++)
            for (int64_t c = 0; c < cin; c++) {
                float best = -INFINITY, sum = 0.0f;
                for (int64_t ky = 0; ky < k; ky++)
                    for (int64_t kx = 0; kx < k; kx++) {
                        const float v =
                            x[((oy * op->stride + ky) * op->in.w + ox * op->stride + kx) * cin + c];
                        best = v > best ? v : best;
                        sum += v;
                    }
                y[(oy * op->out.w + ox) * cin + c] =
                    op->kind == LB_INT_MAXPOOL ? best : sum / (float)(k * k);
            }
}

static void ref_float_modes(const lb_int_net *net, const uint8_t *images, int64_t n,
                            float *logits) {
    int64_t act = lb_shape_size(net->input);
    for (int i = 0; i < net->n_ops; i++) act = LB_MAX(act, lb_shape_size(net->ops[i].out));
    float *buf[2] = {malloc((size_t)act * sizeof(float)), malloc((size_t)act * sizeof(float))};
    const int64_t in_size = lb_shape_size(net->input);
    for (int64_t s = 0; s < n; s++) {
        float *x = buf[0];
        for (int64_t i = 0; i < in_size; i++) x[i] = (float)images[s * in_size + i] / 255.0f;
        int which = 1;
        for (int i = 0; i < net->n_ops; i++) {
            const lb_int_op *op = &net->ops[i];
            if (op->kind == LB_INT_FLATTEN) continue;
            float *y = buf[which];
            if (op->kind == LB_INT_LINEAR || op->kind == LB_INT_CONV2D)
                ref_product(net, op, x, y);
            else
                ref_pool(op, x, y);
            x = y;
            which ^= 1;
        }
        memcpy(logits + s * net->classes, x, (size_t)net->classes * sizeof(float));
    }
    free(buf[0]);
    free(buf[1]);
}

/* Largest |a - b| over the logits, relative to 1 + |b|. */
static double max_relative_gap(const float *a, const float *b, int64_t count) {
    double worst = 0.0;
    for (int64_t i = 0; i < count; i++) {
        const double d = fabs((double)a[i] - (double)b[i]) / (1.0 + fabs((double)b[i]));
        if (d > worst) worst = d; /* not fmax: see test_fold */
    }
    return worst;
}

/* Runs the batched modes with 1 to 3 threads, as a batch and one image at a time, against the
   reference: dynamic bit for bit, weight-only within float rounding (the engine's blocked sums
   may associate differently) and identical across thread counts; a model whose weights were
   not prepared (dequantized on the fly) gives the same bits as a prepared one. */
static void check_float_mode(const char *what, lb_int_net *qnet, const uint8_t *images,
                             int64_t n) {
    const int64_t count = n * qnet->classes;
    const int64_t in_size = lb_shape_size(qnet->input);
    float *expect = malloc((size_t)count * sizeof(float));
    float *got = malloc((size_t)count * sizeof(float));
    float *first = malloc((size_t)count * sizeof(float));
    ref_float_modes(qnet, images, n, expect);
    const int dynamic = qnet->mode == LB_INT_MODE_DYNAMIC;
    for (int threads = 1; threads <= 3; threads++) {
        lowbit_pool *pool = NULL;
        if (threads > 1 && lowbit_pool_create(threads, &pool) != LOWBIT_OK) continue;
        lowbit_diag diag = {0};
        memset(got, 0xAA, (size_t)count * sizeof(float));
        lowbit_status st = lb_int_net_forward(qnet, images, n, got, pool, &diag);
        CHECK(st == LOWBIT_OK, "%s: forward: %s", what, diag.message);
        if (threads == 1) memcpy(first, got, (size_t)count * sizeof(float));
        CHECK(memcmp(got, first, (size_t)count * sizeof(float)) == 0,
              "%s: %d threads differ from 1", what, threads);
        if (dynamic) {
            CHECK(memcmp(got, expect, (size_t)count * sizeof(float)) == 0,
                  "%s: %d threads: differs from the per-sample reference (gap %g)", what,
                  threads, max_relative_gap(got, expect, count));
        } else {
            const double gap = max_relative_gap(got, expect, count);
            CHECK(gap < 1e-4, "%s: %d threads: %g from the reference", what, threads, gap);
        }
        int single_ok = 1;
        for (int64_t i = 0; i < n && i < 4; i++) {
            st = lb_int_net_forward(qnet, images + i * in_size, 1, got, pool, &diag);
            single_ok &= st == LOWBIT_OK && memcmp(got, first + i * qnet->classes,
                                                   (size_t)qnet->classes * sizeof(float)) == 0;
        }
        CHECK(single_ok, "%s: %d threads: single images differ from the batch", what, threads);
        lowbit_pool_destroy(pool);
    }
    if (!dynamic) {
        /* the same model without its prepared weights */
        float *saved[LB_NET_MAX_LAYERS];
        for (int i = 0; i < LB_NET_MAX_LAYERS; i++) {
            saved[i] = qnet->ops[i].dequantized_weights;
            qnet->ops[i].dequantized_weights = NULL;
        }
        lowbit_diag diag = {0};
        CHECK(lb_int_net_forward(qnet, images, n, got, NULL, &diag) == LOWBIT_OK &&
                  memcmp(got, first, (size_t)count * sizeof(float)) == 0,
              "%s: unprepared model differs: %s", what, diag.message);
        for (int i = 0; i < LB_NET_MAX_LAYERS; i++) qnet->ops[i].dequantized_weights = saved[i];
    }
    free(expect);
    free(got);
    free(first);
}

/* A saved and reloaded model is prepared by the loader: the same logits, bit for bit. */
static void check_reloaded(const char *what, const lb_int_net *qnet, const uint8_t *images,
                           int64_t n) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/lowbit_test_modes_%u.gguf", (unsigned)(rng_next() >> 40));
    lowbit_diag diag = {0};
    lb_int_net loaded;
    lb_net unused;
    int is_int = 0;
    CHECK(lb_int_net_save(qnet, path, &diag) == LOWBIT_OK, "%s: save: %s", what, diag.message);
    if (lb_classifier_load(path, &is_int, &unused, &loaded, &diag) != LOWBIT_OK || !is_int) {
        CHECK(0, "%s: load: %s", what, diag.message);
        remove(path);
        return;
    }
    remove(path);
    int prepared = 1;
    for (int i = 0; i < loaded.n_ops; i++)
        prepared &= (loaded.ops[i].dequantized_weights != NULL) ==
                    (qnet->ops[i].dequantized_weights != NULL);
    CHECK(prepared, "%s: the loaded model is not prepared like the converted one", what);
    const int64_t count = n * qnet->classes;
    float *a = malloc((size_t)count * sizeof(float)), *b = malloc((size_t)count * sizeof(float));
    CHECK(lb_int_net_forward(qnet, images, n, a, NULL, &diag) == LOWBIT_OK &&
              lb_int_net_forward(&loaded, images, n, b, NULL, &diag) == LOWBIT_OK &&
              memcmp(a, b, (size_t)count * sizeof(float)) == 0,
          "%s: the reloaded model's logits differ: %s", what, diag.message);
    free(a);
    free(b);
    lb_int_net_free(&loaded);
}

static void float_mode_case(const char *what, lb_shape input, const lb_layer_spec *specs,
                            int n_specs, int weight_bits, int activation_bits) {
    lb_net net;
    lowbit_diag diag = {0};
    lowbit_status st = lb_net_build(&net, input, specs, n_specs, 11, &diag);
    CHECK(st == LOWBIT_OK, "%s: build: %s", what, diag.message);
    if (st != LOWBIT_OK) return;
    randomize_batchnorm(&net);
    randomize_biases(&net, 0.4);
    /* more samples than one chunk of the runner (256) in the full run */
    const int64_t n = lb_test_quick() ? 7 : 300;
    uint8_t *images = random_images(input, n);
    for (int mode = LB_INT_MODE_DYNAMIC; mode <= LB_INT_MODE_WEIGHT_ONLY; mode++) {
        lb_convert_config config = {(lb_int_mode)mode, weight_bits, activation_bits};
        lb_int_net qnet;
        st = lb_int_net_convert(&net, &config, &qnet, &diag);
        CHECK(st == LOWBIT_OK, "%s: convert: %s", what, diag.message);
        if (st != LOWBIT_OK) continue;
        int prepared = 1;
        for (int i = 0; i < qnet.n_ops; i++) {
            const int weighted =
                qnet.ops[i].kind == LB_INT_LINEAR || qnet.ops[i].kind == LB_INT_CONV2D;
            prepared &= (qnet.ops[i].dequantized_weights != NULL) ==
                        (weighted && mode == LB_INT_MODE_WEIGHT_ONLY);
        }
        CHECK(prepared, "%s: dequantized weights where the mode needs them (mode %d)", what,
              mode);
        char name[96];
        snprintf(name, sizeof name, "%s %s", what,
                 mode == LB_INT_MODE_DYNAMIC ? "dynamic" : "weight-only");
        check_float_mode(name, &qnet, images, n);
        check_reloaded(name, &qnet, images, n);
        lb_int_net_free(&qnet);
    }
    free(images);
    lb_net_free(&net);
}

static void test_float_modes(void) {
    float_mode_case("strided 8/8", in3, strided, LB_ARRAY_LEN(strided), 8, 8);
    float_mode_case("strided 4/4", in3, strided, LB_ARRAY_LEN(strided), 4, 4);
    const lb_layer_spec avg_first[] = {
        {LB_LAYER_AVGPOOL, 0, 3, 2, 0}, {LB_LAYER_CONV2D, 33, 3, 1, 1},
        {LB_LAYER_RELU, 0, 0, 0, 0},    {LB_LAYER_MAXPOOL, 0, 3, 3, 0},
        {LB_LAYER_FLATTEN, 0, 0, 0, 0}, {LB_LAYER_LINEAR, 3, 0, 0, 0},
    };
    float_mode_case("avgpool first", (lb_shape){15, 15, 2}, avg_first, LB_ARRAY_LEN(avg_first), 8,
                    6);
    float_mode_case("mlp 8/8", (lb_shape){9, 9, 1}, mlp, LB_ARRAY_LEN(mlp), 8, 8);
    float_mode_case("mlp 3/5", (lb_shape){9, 9, 1}, mlp, LB_ARRAY_LEN(mlp), 3, 5);

    /* prepare follows the mode, and replaces what is there */
    lb_net net;
    lowbit_diag diag = {0};
    if (lb_net_build(&net, (lb_shape){9, 9, 1}, mlp, LB_ARRAY_LEN(mlp), 3, &diag) != LOWBIT_OK) {
        CHECK(0, "build: %s", diag.message);
        return;
    }
    lb_convert_config config = {LB_INT_MODE_DYNAMIC, 8, 8};
    lb_int_net qnet;
    CHECK(lb_int_net_convert(&net, &config, &qnet, &diag) == LOWBIT_OK, "convert: %s",
          diag.message);
    qnet.mode = LB_INT_MODE_WEIGHT_ONLY;
    CHECK(lb_int_net_prepare(&qnet, &diag) == LOWBIT_OK && qnet.ops[1].dequantized_weights &&
              qnet.ops[1].dequantized_weights[5] ==
                  qnet.ops[1].weight_scales[0] * (float)qnet.ops[1].weights[5],
          "prepare: %s", diag.message);
    CHECK(lb_int_net_prepare(&qnet, &diag) == LOWBIT_OK, "prepare again: %s", diag.message);
    qnet.mode = LB_INT_MODE_DYNAMIC;
    CHECK(lb_int_net_prepare(&qnet, &diag) == LOWBIT_OK && !qnet.ops[1].dequantized_weights,
          "dynamic mode kept dequantized weights");
    CHECK(lb_int_net_prepare(NULL, &diag) == LOWBIT_ERR_INVALID_ARGUMENT, "NULL prepared");
    lb_int_net_free(&qnet);
    lb_net_free(&net);
}

static void test_errors(void) {
    const lb_layer_spec specs[] = {
        {LB_LAYER_CONV2D, 4, 3, 1, 1}, {LB_LAYER_BATCHNORM, 0, 0, 0, 0},
        {LB_LAYER_RELU, 0, 0, 0, 0},   {LB_LAYER_FLATTEN, 0, 0, 0, 0},
        {LB_LAYER_LINEAR, 3, 0, 0, 0},
    };
    const lb_shape input = {5, 5, 1};
    lb_net net;
    lowbit_diag diag = {0};
    if (lb_net_build(&net, input, specs, LB_ARRAY_LEN(specs), 9, &diag) != LOWBIT_OK) {
        CHECK(0, "build: %s", diag.message);
        return;
    }
    lb_int_net qnet;
    lb_convert_config config = {LB_INT_MODE_STATIC, 8, 8};
    /* No ranges: the first quant point (layer 2, the ReLU) is named. */
    CHECK(lb_int_net_convert(&net, &config, &qnet, &diag) == LOWBIT_ERR_INVALID_ARGUMENT &&
              strstr(diag.message, "layer 2 (relu)"),
          "missing range: %s", diag.message);
    uint8_t *images = random_images(input, 4);
    calibrate(&net, images, 4, 1.0);
    net.layers[4].has_range = 0;
    CHECK(lb_int_net_convert(&net, &config, &qnet, &diag) == LOWBIT_ERR_INVALID_ARGUMENT &&
              strstr(diag.message, "layer 4 (linear)"),
          "missing last range: %s", diag.message);
    /* Dynamic and weight-only modes need no ranges. */
    config.mode = LB_INT_MODE_DYNAMIC;
    CHECK(lb_int_net_convert(&net, &config, &qnet, &diag) == LOWBIT_OK, "dynamic: %s",
          diag.message);
    lb_int_net_free(&qnet);
    config.mode = LB_INT_MODE_STATIC;
    net.layers[4].has_range = 1;
    const int bad_bits[] = {0, 1, 9, 16, -3};
    for (int i = 0; i < LB_ARRAY_LEN(bad_bits); i++) {
        lb_convert_config c1 = {LB_INT_MODE_STATIC, bad_bits[i], 8};
        lb_convert_config c2 = {LB_INT_MODE_STATIC, 8, bad_bits[i]};
        CHECK(lb_int_net_convert(&net, &c1, &qnet, &diag) == LOWBIT_ERR_INVALID_ARGUMENT,
              "weight bits %d accepted", bad_bits[i]);
        CHECK(lb_int_net_convert(&net, &c2, &qnet, &diag) == LOWBIT_ERR_INVALID_ARGUMENT,
              "activation bits %d accepted", bad_bits[i]);
    }
    lb_convert_config c3 = {(lb_int_mode)7, 8, 8};
    CHECK(lb_int_net_convert(&net, &c3, &qnet, &diag) == LOWBIT_ERR_INVALID_ARGUMENT,
          "unknown mode accepted");
    CHECK(lb_int_net_convert(NULL, &config, &qnet, &diag) == LOWBIT_ERR_INVALID_ARGUMENT,
          "NULL net accepted");

    /* A corrupted model is refused before it runs. */
    CHECK(lb_int_net_convert(&net, &config, &qnet, &diag) == LOWBIT_OK, "convert: %s",
          diag.message);
    uint8_t codes[4 * 3];
    float logits[4 * 3];
    CHECK(lb_int_net_run_static(&qnet, images, 4, codes, NULL, &diag) == LOWBIT_OK, "run: %s",
          diag.message);
    lb_int_op saved = qnet.ops[0];
    qnet.ops[0].out.h = 4; /* no longer what kernel 3, padding 1 give */
    CHECK(lb_int_net_forward(&qnet, images, 4, logits, NULL, &diag) ==
              LOWBIT_ERR_INVALID_ARGUMENT,
          "bad conv shape accepted");
    qnet.ops[0] = saved;
    qnet.ops[0].multiplier[1] = 5; /* not normalized */
    CHECK(lb_int_net_run_static(&qnet, images, 4, codes, NULL, &diag) ==
              LOWBIT_ERR_INVALID_ARGUMENT,
          "bad multiplier accepted");
    qnet.ops[0] = saved;
    qnet.ops[0].multiplier[1] = 1 << 30;
    qnet.ops[0].out_max = 300;
    CHECK(lb_int_net_run_static(&qnet, images, 4, codes, NULL, &diag) ==
              LOWBIT_ERR_INVALID_ARGUMENT,
          "bad clamp accepted");
    qnet.ops[0] = saved;
    qnet.classes = 4;
    CHECK(lb_int_net_forward(&qnet, images, 4, logits, NULL, &diag) ==
              LOWBIT_ERR_INVALID_ARGUMENT,
          "class count mismatch accepted");
    qnet.classes = 3;
    CHECK(lb_int_net_forward(&qnet, NULL, 4, logits, NULL, &diag) == LOWBIT_ERR_INVALID_ARGUMENT,
          "NULL images accepted");
    CHECK(lb_int_net_forward(&qnet, images, 0, logits, NULL, &diag) == LOWBIT_OK,
          "zero images refused");
    qnet.mode = LB_INT_MODE_DYNAMIC;
    CHECK(lb_int_net_run_static(&qnet, images, 4, codes, NULL, &diag) ==
              LOWBIT_ERR_INVALID_ARGUMENT,
          "the integer runner ran a dynamic model");
    lb_int_net_free(&qnet);
    lb_net_free(&net);

    /* A ReLU with no linear or conv2d before it cannot be fused. */
    const lb_layer_spec lone[] = {
        {LB_LAYER_MAXPOOL, 0, 2, 2, 0}, {LB_LAYER_RELU, 0, 0, 0, 0},
        {LB_LAYER_FLATTEN, 0, 0, 0, 0}, {LB_LAYER_LINEAR, 2, 0, 0, 0},
    };
    if (lb_net_build(&net, input, lone, LB_ARRAY_LEN(lone), 1, &diag) == LOWBIT_OK) {
        calibrate(&net, images, 4, 1.0);
        CHECK(lb_int_net_convert(&net, &config, &qnet, &diag) == LOWBIT_ERR_UNSUPPORTED &&
                  strstr(diag.message, "layer 1 (relu)"),
              "lone relu: %s", diag.message);
        lb_net_free(&net);
    }
    free(images);
}

int main(void) {
    test_dot_kernels();
    test_exact();
    test_fold();
    test_accuracy();
    test_edge_cases();
    test_float_modes();
    test_errors();
    return lb_test_summary();
}
