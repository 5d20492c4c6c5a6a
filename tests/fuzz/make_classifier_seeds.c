/*
 * Writes the seeds of fuzz_classifier into tests/fuzz/seeds/fuzz_classifier/: a tiny float CNN
 * with ranges, and its static W8A8, static W4A4 and dynamic integer models, saved by the library
 * itself so the fuzzer starts from files that reach every part of the loader. Run from the
 * repository root after a build:
 *   cc -std=c11 -Iinclude -Ilib tests/fuzz/make_classifier_seeds.c build/liblowbit.a -lm -lpthread \
 *      -o /tmp/make_classifier_seeds && /tmp/make_classifier_seeds
 */
#include "lowbit.h"
#include "nn/classifier.h"

#include <stdio.h>

static int save_int(const lb_net *net, lb_int_mode mode, int wbits, int abits, const char *path) {
    lb_int_net q;
    lowbit_diag diag = {0};
    const lb_convert_config cfg = {.mode = mode, .weight_bits = wbits, .activation_bits = abits};
    if (lb_int_net_convert(net, &cfg, &q, &diag) != LOWBIT_OK ||
        lb_int_net_save(&q, path, &diag) != LOWBIT_OK) {
        fprintf(stderr, "%s: %s\n", path, diag.message);
        return 1;
    }
    lb_int_net_free(&q);
    return 0;
}

int main(void) {
    const lb_layer_spec specs[] = {
        {.kind = LB_LAYER_CONV2D, .units = 2, .kernel = 3, .stride = 1, .pad = 1},
        {.kind = LB_LAYER_BATCHNORM},
        {.kind = LB_LAYER_RELU},
        {.kind = LB_LAYER_MAXPOOL, .kernel = 2, .stride = 2},
        {.kind = LB_LAYER_AVGPOOL, .kernel = 2, .stride = 1},
        {.kind = LB_LAYER_FLATTEN},
        {.kind = LB_LAYER_LINEAR, .units = 3},
        {.kind = LB_LAYER_RELU6},
        {.kind = LB_LAYER_LINEAR, .units = 2},
    };
    lb_net net;
    lowbit_diag diag = {0};
    const lb_shape input = {.h = 6, .w = 6, .c = 1};
    if (lb_net_build(&net, input, specs, (int)(sizeof specs / sizeof specs[0]), 3, &diag) !=
        LOWBIT_OK) {
        fprintf(stderr, "%s\n", diag.message);
        return 1;
    }
    for (int i = 0; i < net.n_layers; i++) {
        if (!lb_net_is_quant_point(&net, i)) continue;
        net.layers[i].has_range = 1;
        net.layers[i].range_lo = net.layers[i].kind == LB_LAYER_LINEAR ? -2.0f : 0.0f;
        net.layers[i].range_hi = 3.0f;
    }
    const char *dir = "tests/fuzz/seeds/fuzz_classifier/";
    char path[256];
    int failed = 0;
    snprintf(path, sizeof path, "%sfloat", dir);
    if (lb_net_save(&net, path, &diag) != LOWBIT_OK) {
        fprintf(stderr, "%s: %s\n", path, diag.message);
        failed = 1;
    }
    snprintf(path, sizeof path, "%sstatic_w8a8", dir);
    failed |= save_int(&net, LB_INT_MODE_STATIC, 8, 8, path);
    snprintf(path, sizeof path, "%sstatic_w4a4", dir);
    failed |= save_int(&net, LB_INT_MODE_STATIC, 4, 4, path);
    snprintf(path, sizeof path, "%sdynamic_w8a8", dir);
    failed |= save_int(&net, LB_INT_MODE_DYNAMIC, 8, 8, path);
    lb_net_free(&net);
    return failed;
}
