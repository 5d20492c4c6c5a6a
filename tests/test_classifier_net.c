/* Building and editing float classifier nets (lib/nn/classifier_net.c). */
#include "nn/classifier.h"
#include "testing.h"

#include <stdlib.h>

static const lb_shape fashion = {28, 28, 1};

static int shape_is(lb_shape s, int h, int w, int c) { return s.h == h && s.w == w && s.c == c; }

static void test_kind_names(void) {
    for (int k = 0; k < LB_LAYER_KIND_COUNT; k++) {
        const char *name = lb_layer_kind_name((lb_layer_kind)k);
        CHECK(name != NULL, "kind %d has no name", k);
        CHECK(name && lb_layer_kind_from_name(name) == k, "name %s does not map back", name);
    }
    CHECK(lb_layer_kind_name(LB_LAYER_KIND_COUNT) == NULL, "out-of-range kind named");
    CHECK(lb_layer_kind_name((lb_layer_kind)-1) == NULL, "negative kind named");
    CHECK(lb_layer_kind_from_name("conv3d") == -1, "unknown name accepted");
    CHECK(lb_layer_kind_from_name(NULL) == -1, "NULL name accepted");
    CHECK(strcmp(lb_layer_kind_name(LB_LAYER_CONV2D), "conv2d") == 0, "conv2d name");
}

static void test_mlp_shapes(void) {
    lb_net net;
    lowbit_diag diag = {0};
    CHECK(lb_net_build_named(&net, "mlp", fashion, 10, 1, &diag) == LOWBIT_OK, "%s", diag.message);
    CHECK(net.n_layers == 6, "mlp has %d layers", net.n_layers);
    CHECK(net.classes == 10, "classes %d", (int)net.classes);
    CHECK(shape_is(net.layers[0].out, 1, 1, 784), "flatten output");
    CHECK(shape_is(net.layers[1].out, 1, 1, 256), "linear 1 output");
    CHECK(shape_is(net.layers[3].out, 1, 1, 128), "linear 2 output");
    CHECK(shape_is(net.layers[5].out, 1, 1, 10), "head output");
    int64_t expected = 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10;
    CHECK(lb_net_param_count(&net) == expected, "mlp params %lld, expected %lld",
          (long long)lb_net_param_count(&net), (long long)expected);
    CHECK(net.n_state == 0, "mlp has state %lld", (long long)net.n_state);
    CHECK(net.layers[2].weight == NULL && net.layers[0].bias == NULL, "relu/flatten have params");
    /* weights then bias, contiguous, layer after layer */
    CHECK(net.layers[1].weight == net.params && net.layers[1].bias == net.params + 784 * 256,
          "param layout");
    CHECK(net.layers[5].bias + 10 == net.params + net.n_params, "params end at the head's bias");
    for (int i = 1; i < 6; i += 2) {
        for (int o = 0; o < net.layers[i].out.c; o++) {
            CHECK(net.layers[i].bias[o] == 0.0f, "bias not zero");
        }
    }
    lb_net_free(&net);
    CHECK(net.params == NULL && net.n_layers == 0, "free clears the struct");
    lb_net_free(&net); /* twice is harmless */
}

static void test_cnn_shapes(void) {
    lb_net net;
    lowbit_diag diag = {0};
    CHECK(lb_net_build_named(&net, "cnn", fashion, 10, 1, &diag) == LOWBIT_OK, "%s", diag.message);
    CHECK(net.n_layers == 14, "cnn has %d layers", net.n_layers);
    const int expect[14][3] = {{28, 28, 16}, {28, 28, 16}, {28, 28, 16}, {14, 14, 16},
                               {14, 14, 32}, {14, 14, 32}, {14, 14, 32}, {7, 7, 32},
                               {7, 7, 64},   {7, 7, 64},   {7, 7, 64},   {3, 3, 64},
                               {1, 1, 576},  {1, 1, 10}};
    for (int i = 0; i < net.n_layers && i < 14; i++) {
        lb_shape s = net.layers[i].out;
        CHECK(shape_is(s, expect[i][0], expect[i][1], expect[i][2]),
              "layer %d (%s) output %dx%dx%d", i, lb_layer_kind_name(net.layers[i].kind), s.h,
              s.w, s.c);
    }
    int64_t expected = (16 * 9 + 16) + 32 + (32 * 9 * 16 + 32) + 64 + (64 * 9 * 32 + 64) + 128 +
                       (576 * 10 + 10);
    CHECK(lb_net_param_count(&net) == expected, "cnn params %lld, expected %lld",
          (long long)lb_net_param_count(&net), (long long)expected);
    CHECK(net.n_state == 2 * (16 + 32 + 64), "cnn state %lld", (long long)net.n_state);
    const lb_layer *bn = &net.layers[1];
    CHECK(bn->kind == LB_LAYER_BATCHNORM && bn->gamma && bn->bias && bn->running_mean &&
              bn->running_var,
          "batchnorm parameters");
    for (int c = 0; c < 16; c++) {
        CHECK(bn->gamma[c] == 1.0f && bn->bias[c] == 0.0f && bn->running_mean[c] == 0.0f &&
                  bn->running_var[c] == 1.0f,
              "batchnorm init, channel %d", c);
    }
    CHECK(bn->eps > 0.0f && bn->momentum > 0.0f, "batchnorm eps and momentum");
    /* quant points: every relu and the last linear */
    for (int i = 0; i < net.n_layers; i++) {
        int expected_qp = net.layers[i].kind == LB_LAYER_RELU || i == net.n_layers - 1;
        CHECK(lb_net_is_quant_point(&net, i) == expected_qp, "layer %d quant point", i);
    }
    CHECK(!lb_net_is_quant_point(&net, -1) && !lb_net_is_quant_point(&net, 14), "out of range");
    lb_net_free(&net);

    /* a non-square input with 3 channels and 5 classes */
    CHECK(lb_net_build_named(&net, "cnn", (lb_shape){32, 20, 3}, 5, 2, &diag) == LOWBIT_OK, "%s",
          diag.message);
    CHECK(shape_is(net.layers[11].out, 4, 2, 64), "32x20 cnn features %dx%dx%d",
          net.layers[11].out.h, net.layers[11].out.w, net.layers[11].out.c);
    CHECK(net.classes == 5, "classes");
    lb_net_free(&net);
}

/* He-normal statistics (loose) and bytes identical for identical seeds. */
static void test_init_determinism(void) {
    lb_net a, b, c;
    lowbit_diag diag = {0};
    CHECK(lb_net_build_named(&a, "mlp", fashion, 10, 42, &diag) == LOWBIT_OK, "%s", diag.message);
    CHECK(lb_net_build_named(&b, "mlp", fashion, 10, 42, &diag) == LOWBIT_OK, "%s", diag.message);
    CHECK(lb_net_build_named(&c, "mlp", fashion, 10, 43, &diag) == LOWBIT_OK, "%s", diag.message);
    CHECK(memcmp(a.params, b.params, (size_t)a.n_params * sizeof(float)) == 0,
          "same seed, different params");
    CHECK(memcmp(a.params, c.params, (size_t)a.n_params * sizeof(float)) != 0,
          "different seeds, same params");
    /* first layer: fan_in 784, std sqrt(2/784) */
    const float *w = a.layers[1].weight;
    int64_t n = 784 * 256;
    double sum = 0, sum2 = 0;
    for (int64_t k = 0; k < n; k++) {
        sum += w[k];
        sum2 += (double)w[k] * w[k];
    }
    double mean = sum / n, var = sum2 / n - mean * mean, expected = 2.0 / 784.0;
    CHECK(fabs(mean) < 0.001, "weight mean %g", mean);
    CHECK(fabs(var / expected - 1.0) < 0.02, "weight variance %g, expected %g", var, expected);
    /* a few exact values pin the generator: splitmix64 + Box-Muller must never change silently,
       or saved seeds stop reproducing nets */
    /* (values computed independently: splitmix64 from 42, u1 = (x >> 11) + 1) * 2^-53,
       u2 = (x >> 11) * 2^-53, sqrt(2/784) * sqrt(-2 ln u1) * cos(2 pi u2)) */
    CHECK(lb_float_to_bits(w[0]) == 0x3cab9804u, "first weight 0x%08x", lb_float_to_bits(w[0]));
    CHECK(lb_float_to_bits(w[1]) == 0xbd388343u, "second weight 0x%08x", lb_float_to_bits(w[1]));
    CHECK(lb_float_to_bits(a.layers[5].weight[1279]) == 0xbdd5a343u, "last weight 0x%08x",
          lb_float_to_bits(a.layers[5].weight[1279]));
    lb_net d;
    CHECK(lb_net_build_named(&d, "mlp", fashion, 10, 42, &diag) == LOWBIT_OK, "%s", diag.message);
    lb_net_free(&a);
    lb_net_free(&b);
    lb_net_free(&c);
    lb_net_free(&d);
}

static void expect_refused(const char *what, lb_shape input, const lb_layer_spec *specs, int n) {
    lb_net net;
    lowbit_diag diag = {0};
    lowbit_status st = lb_net_build(&net, input, specs, n, 1, &diag);
    CHECK(st != LOWBIT_OK, "%s accepted", what);
    CHECK(diag.message[0] != '\0', "%s refused without a message", what);
    CHECK(net.params == NULL && net.n_layers == 0, "%s: refused net not empty", what);
    if (st == LOWBIT_OK) lb_net_free(&net);
}

static void test_bad_specs(void) {
    const lb_layer_spec linear_unflat[] = {{.kind = LB_LAYER_LINEAR, .units = 10}};
    expect_refused("linear on an image", fashion, linear_unflat, 1);
    const lb_layer_spec big_conv[] = {{.kind = LB_LAYER_CONV2D, .units = 4, .kernel = 5, .stride = 1}};
    expect_refused("conv larger than input", (lb_shape){4, 4, 1}, big_conv, 1);
    const lb_layer_spec big_pool[] = {{.kind = LB_LAYER_MAXPOOL, .kernel = 3, .stride = 3}};
    expect_refused("pool larger than input", (lb_shape){2, 2, 1}, big_pool, 1);
    const lb_layer_spec padded_pool[] = {{.kind = LB_LAYER_AVGPOOL, .kernel = 2, .stride = 2, .pad = 1}};
    expect_refused("padded pool", fashion, padded_pool, 1);
    const lb_layer_spec zero_stride[] = {{.kind = LB_LAYER_CONV2D, .units = 4, .kernel = 3}};
    expect_refused("stride 0", fashion, zero_stride, 1);
    const lb_layer_spec zero_units[] = {{.kind = LB_LAYER_FLATTEN}, {.kind = LB_LAYER_LINEAR}};
    expect_refused("linear with 0 units", fashion, zero_units, 2);
    const lb_layer_spec huge_pad[] = {{.kind = LB_LAYER_CONV2D, .units = 4, .kernel = 3, .stride = 1, .pad = 3}};
    expect_refused("pad >= kernel", fashion, huge_pad, 1);
    const lb_layer_spec bad_kind[] = {{.kind = (lb_layer_kind)99}};
    expect_refused("unknown kind", fashion, bad_kind, 1);
    const lb_layer_spec huge_linear[] = {{.kind = LB_LAYER_FLATTEN}, {.kind = LB_LAYER_LINEAR, .units = 1 << 20}};
    expect_refused("too many parameters", (lb_shape){64, 64, 64}, huge_linear, 2);
    const lb_layer_spec relu[] = {{.kind = LB_LAYER_RELU}};
    expect_refused("zero layers", fashion, relu, 0);
    expect_refused("bad input", (lb_shape){0, 28, 1}, relu, 1);
    lb_layer_spec many[LB_NET_MAX_LAYERS + 1];
    for (int i = 0; i <= LB_NET_MAX_LAYERS; i++) many[i] = (lb_layer_spec){.kind = LB_LAYER_RELU};
    expect_refused("too many layers", fashion, many, LB_NET_MAX_LAYERS + 1);

    lb_net net;
    lowbit_diag diag = {0};
    CHECK(lb_net_build_named(&net, "resnet", fashion, 10, 1, &diag) != LOWBIT_OK, "resnet built");
    CHECK(strstr(diag.message, "mlp") && strstr(diag.message, "cnn"),
          "unknown arch message lists the known ones: %s", diag.message);
    CHECK(lb_net_build_named(&net, "mlp", fashion, 0, 1, &diag) != LOWBIT_OK, "0 classes built");
    CHECK(lb_net_build_named(&net, "cnn", (lb_shape){4, 4, 1}, 10, 1, &diag) != LOWBIT_OK,
          "cnn on 4x4 built");

    /* strided conv and pool: floor division of the window count */
    const lb_layer_spec strided[] = {
        {.kind = LB_LAYER_CONV2D, .units = 2, .kernel = 3, .stride = 2, .pad = 1},
        {.kind = LB_LAYER_AVGPOOL, .kernel = 3, .stride = 2},
        {.kind = LB_LAYER_RELU6},
    };
    CHECK(lb_net_build(&net, (lb_shape){10, 9, 3}, strided, 3, 1, &diag) == LOWBIT_OK, "%s",
          diag.message);
    CHECK(shape_is(net.layers[0].out, 5, 5, 2), "strided conv output %dx%d", net.layers[0].out.h,
          net.layers[0].out.w);
    CHECK(shape_is(net.layers[1].out, 2, 2, 2), "strided pool output %dx%d", net.layers[1].out.h,
          net.layers[1].out.w);
    CHECK(net.classes == 8, "classes = last output size %d", (int)net.classes);
    CHECK(lb_net_is_quant_point(&net, 0) && !lb_net_is_quant_point(&net, 1) &&
              lb_net_is_quant_point(&net, 2),
          "quant points of conv-pool-relu6");
    lb_net_free(&net);
}

static void test_clone(void) {
    lb_net a, b;
    lowbit_diag diag = {0};
    CHECK(lb_net_build_named(&a, "cnn", fashion, 10, 7, &diag) == LOWBIT_OK, "%s", diag.message);
    a.layers[2].has_range = 1;
    a.layers[2].range_lo = 0.0f;
    a.layers[2].range_hi = 3.5f;
    a.layers[1].running_var[3] = 2.5f;
    CHECK(lb_net_clone(&a, &b, &diag) == LOWBIT_OK, "%s", diag.message);
    CHECK(b.params != a.params && b.state != a.state, "clone shares blocks");
    CHECK(b.n_params == a.n_params && b.n_state == a.n_state, "clone sizes");
    CHECK(memcmp(a.params, b.params, (size_t)a.n_params * sizeof(float)) == 0, "clone params");
    CHECK(memcmp(a.state, b.state, (size_t)a.n_state * sizeof(float)) == 0, "clone state");
    CHECK(b.layers[2].has_range && b.layers[2].range_hi == 3.5f, "clone range");
    for (int i = 0; i < b.n_layers; i++) {
        const lb_layer *la = &a.layers[i], *lb = &b.layers[i];
        CHECK((la->weight == NULL) == (lb->weight == NULL) &&
                  (!lb->weight || (lb->weight - b.params == la->weight - a.params)),
              "layer %d weight pointer", i);
        CHECK((la->running_var == NULL) == (lb->running_var == NULL) &&
                  (!lb->running_var || (lb->running_var - b.state == la->running_var - a.state)),
              "layer %d state pointer", i);
    }
    b.layers[0].weight[0] += 1.0f;
    b.layers[1].running_mean[0] = 9.0f;
    CHECK(a.layers[0].weight[0] + 1.0f == b.layers[0].weight[0], "clone not independent (params)");
    CHECK(a.layers[1].running_mean[0] == 0.0f, "clone not independent (state)");
    lb_net_free(&b);
    CHECK(a.layers[1].running_var[3] == 2.5f, "source damaged by freeing the clone");
    lb_net_free(&a);
}

/* Pseudo-random test values in [lo, hi) (a small LCG: the test needs variety, not quality). */
static float test_value(uint32_t *s, float lo, float hi) {
    *s = *s * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(*s >> 8) / 16777216.0f;
}

static void test_fold(void) {
    lb_net net, folded;
    lowbit_diag diag = {0};
    CHECK(lb_net_build_named(&net, "cnn", fashion, 10, 3, &diag) == LOWBIT_OK, "%s", diag.message);
    uint32_t s = 12345;
    for (int i = 0; i < net.n_layers; i++) {
        lb_layer *l = &net.layers[i];
        if (l->kind == LB_LAYER_CONV2D) {
            for (int o = 0; o < l->out.c; o++) l->bias[o] = test_value(&s, -0.5f, 0.5f);
        }
        if (l->kind != LB_LAYER_BATCHNORM) continue;
        for (int c = 0; c < l->in.c; c++) {
            l->gamma[c] = test_value(&s, 0.5f, 2.0f);
            l->bias[c] = test_value(&s, -1.0f, 1.0f);
            l->running_mean[c] = test_value(&s, -0.3f, 0.3f);
            l->running_var[c] = test_value(&s, 0.01f, 4.0f);
        }
        l->eps = 1e-3f;
        l->has_range = 1;
        l->range_lo = -1.0f;
        l->range_hi = (float)i;
    }
    net.layers[13].has_range = 1;
    net.layers[13].range_hi = 7.0f;
    CHECK(lb_net_fold_batchnorm(&net, &folded, &diag) == LOWBIT_OK, "%s", diag.message);
    CHECK(folded.n_layers == 11, "folded cnn has %d layers", folded.n_layers);
    CHECK(folded.n_state == 0, "folded net keeps state");
    for (int j = 0; j < folded.n_layers; j++) {
        CHECK(folded.layers[j].kind != LB_LAYER_BATCHNORM, "batchnorm left at %d", j);
    }
    /* conv stages at 0, 4, 8 in the source; 0, 3, 6 in the folded net */
    const int src_conv[3] = {0, 4, 8}, dst_conv[3] = {0, 3, 6};
    for (int t = 0; t < 3; t++) {
        const lb_layer *conv = &net.layers[src_conv[t]], *bn = &net.layers[src_conv[t] + 1];
        const lb_layer *f = &folded.layers[dst_conv[t]];
        CHECK(f->kind == LB_LAYER_CONV2D && shape_is(f->out, conv->out.h, conv->out.w, conv->out.c),
              "folded conv %d shape", t);
        int64_t fan_in = (int64_t)conv->kernel * conv->kernel * conv->in.c;
        int bad_w = 0, bad_b = 0;
        for (int o = 0; o < conv->out.c; o++) {
            double sc = (double)bn->gamma[o] / sqrt((double)bn->running_var[o] + (double)bn->eps);
            for (int64_t k = 0; k < fan_in; k++) {
                float w = (float)((double)conv->weight[o * fan_in + k] * sc);
                bad_w += f->weight[o * fan_in + k] != w;
            }
            float b = (float)(((double)conv->bias[o] - bn->running_mean[o]) * sc + bn->bias[o]);
            bad_b += f->bias[o] != b;
        }
        CHECK(bad_w == 0 && bad_b == 0, "stage %d: %d weights and %d biases off the formula", t,
              bad_w, bad_b);
        CHECK(f->has_range && f->range_lo == -1.0f && f->range_hi == (float)(src_conv[t] + 1),
              "folded conv %d takes the batchnorm's range", t);
    }
    /* the head is copied unchanged */
    const lb_layer *head = &net.layers[13], *fhead = &folded.layers[10];
    CHECK(memcmp(head->weight, fhead->weight, 5760 * sizeof(float)) == 0 &&
              memcmp(head->bias, fhead->bias, 10 * sizeof(float)) == 0,
          "head changed by folding");
    CHECK(fhead->has_range && fhead->range_hi == 7.0f, "head range");
    /* quant points of the folded cnn: conv outputs are followed by relu, so still the relus */
    for (int j = 0; j < folded.n_layers; j++) {
        int expected_qp = folded.layers[j].kind == LB_LAYER_RELU || j == folded.n_layers - 1;
        CHECK(lb_net_is_quant_point(&folded, j) == expected_qp, "folded layer %d quant point", j);
    }
    lb_net_free(&folded);

    /* a linear whose bias is missing gets one: b' = (0 - mean) * s + beta */
    const lb_layer_spec lin_bn[] = {{.kind = LB_LAYER_FLATTEN},
                                    {.kind = LB_LAYER_LINEAR, .units = 3},
                                    {.kind = LB_LAYER_BATCHNORM}};
    lb_net small;
    CHECK(lb_net_build(&small, (lb_shape){1, 1, 4}, lin_bn, 3, 5, &diag) == LOWBIT_OK, "%s",
          diag.message);
    lb_layer *bn = &small.layers[2];
    for (int c = 0; c < 3; c++) {
        bn->gamma[c] = 1.5f + (float)c;
        bn->bias[c] = 0.25f * (float)c;
        bn->running_mean[c] = 0.5f;
        bn->running_var[c] = 3.0f;
    }
    small.layers[1].bias = NULL;
    CHECK(lb_net_fold_batchnorm(&small, &folded, &diag) == LOWBIT_OK, "%s", diag.message);
    CHECK(folded.n_layers == 2 && folded.layers[1].bias != NULL, "folded bias created");
    for (int c = 0; c < 3 && folded.n_layers == 2; c++) {
        double sc = (double)bn->gamma[c] / sqrt(3.0 + (double)bn->eps);
        float b = (float)((0.0 - 0.5) * sc + bn->bias[c]);
        CHECK(folded.layers[1].bias[c] == b, "created bias %d: %g vs %g", c,
              folded.layers[1].bias[c], b);
    }
    lb_net_free(&folded);
    bn->running_var[1] = -1.0f;
    CHECK(lb_net_fold_batchnorm(&small, &folded, &diag) != LOWBIT_OK, "negative variance folded");
    lb_net_free(&small);

    /* a batchnorm after a relu cannot be folded */
    const lb_layer_spec relu_bn[] = {{.kind = LB_LAYER_RELU}, {.kind = LB_LAYER_BATCHNORM}};
    CHECK(lb_net_build(&small, fashion, relu_bn, 2, 5, &diag) == LOWBIT_OK, "%s", diag.message);
    diag.message[0] = '\0';
    CHECK(lb_net_fold_batchnorm(&small, &folded, &diag) != LOWBIT_OK, "bn after relu folded");
    CHECK(diag.message[0] != '\0', "no message");
    CHECK(lb_net_is_quant_point(&small, 1) && !lb_net_is_quant_point(&small, 0),
          "relu-bn quant points");
    lb_net_free(&small);
    lb_net_free(&net);
}

int main(void) {
    test_kind_names();
    test_mlp_shapes();
    test_cnn_shapes();
    test_init_determinism();
    test_bad_specs();
    test_clone();
    test_fold();
    return lb_test_summary();
}
