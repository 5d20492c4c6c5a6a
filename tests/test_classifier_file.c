/* Classifier files (lib/nn/classifier_file.c): round trips and hostile files. */
#define _GNU_SOURCE /* mkdtemp */
#include "nn/classifier.h"
#include "testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const lb_shape fashion = {28, 28, 1};

static char tmp_dir[256];

static const char *tmp_path(const char *name) { return lb_join_path(tmp_dir, name); }

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, n, f);
    fclose(f);
}

/* Fills every parameter and state value with distinct values, sets a few ranges. */
static void scramble(lb_net *net, uint32_t seed) {
    for (int64_t i = 0; i < net->n_params; i++) {
        seed = seed * 1664525u + 1013904223u;
        net->params[i] = (float)(int32_t)seed * 1e-9f;
    }
    for (int64_t i = 0; i < net->n_state; i++) {
        seed = seed * 1664525u + 1013904223u;
        net->state[i] = 0.5f + (float)(seed >> 8) * 1e-7f;
    }
    for (int i = 0; i < net->n_layers; i++) {
        if (lb_net_is_quant_point(net, i)) {
            net->layers[i].has_range = 1;
            net->layers[i].range_lo = -0.25f * (float)i;
            net->layers[i].range_hi = 1.0f + (float)i / 3.0f;
        }
        if (net->layers[i].kind == LB_LAYER_BATCHNORM) {
            net->layers[i].eps = 1e-3f;
            net->layers[i].momentum = 0.05f;
        }
    }
}

static int same_layers(const lb_net *a, const lb_net *b) {
    if (a->n_layers != b->n_layers) return 0;
    for (int i = 0; i < a->n_layers; i++) {
        const lb_layer *x = &a->layers[i], *y = &b->layers[i];
        if (x->kind != y->kind || memcmp(&x->in, &y->in, sizeof x->in) ||
            memcmp(&x->out, &y->out, sizeof x->out) || x->kernel != y->kernel ||
            x->stride != y->stride || x->pad != y->pad || x->has_range != y->has_range ||
            lb_float_to_bits(x->range_lo) != lb_float_to_bits(y->range_lo) ||
            lb_float_to_bits(x->range_hi) != lb_float_to_bits(y->range_hi)) {
            return 0;
        }
        if (x->kind == LB_LAYER_BATCHNORM &&
            (lb_float_to_bits(x->eps) != lb_float_to_bits(y->eps) ||
             lb_float_to_bits(x->momentum) != lb_float_to_bits(y->momentum))) {
            return 0;
        }
    }
    return 1;
}

static void test_float_round_trip(const char *arch) {
    lb_net net, loaded;
    lb_int_net int_net;
    lowbit_diag diag = {0};
    CHECK(lb_net_build_named(&net, arch, fashion, 10, 9, &diag) == LOWBIT_OK, "%s", diag.message);
    scramble(&net, 77);
    const char *path = tmp_path(arch);
    CHECK(lb_net_save(&net, path, &diag) == LOWBIT_OK, "%s: save: %s", arch, diag.message);
    int is_int = -1;
    CHECK(lb_classifier_load(path, &is_int, &loaded, &int_net, &diag) == LOWBIT_OK, "%s: load: %s",
          arch, diag.message);
    CHECK(is_int == 0, "%s loaded as integer", arch);
    CHECK(loaded.n_params == net.n_params && loaded.n_state == net.n_state, "%s sizes", arch);
    CHECK(loaded.classes == 10 && memcmp(&loaded.input, &net.input, sizeof net.input) == 0,
          "%s input and classes", arch);
    CHECK(loaded.n_params == net.n_params &&
              memcmp(loaded.params, net.params, (size_t)net.n_params * sizeof(float)) == 0,
          "%s params differ", arch);
    CHECK(loaded.n_state == net.n_state &&
              memcmp(loaded.state, net.state, (size_t)net.n_state * sizeof(float)) == 0,
          "%s state differs", arch);
    CHECK(same_layers(&net, &loaded), "%s layers (shapes, ranges, eps) differ", arch);
    /* the file is about the size of its floats */
    int64_t size = file_size(path);
    int64_t floats = 4 * (net.n_params + net.n_state);
    CHECK(size > floats && size < floats + 16384, "%s file of %lld bytes for %lld float bytes", arch,
          (long long)size, (long long)floats);
    lb_net_free(&loaded);
    lb_net_free(&net);
}

/* ---- a small integer model made by hand ---------------------------------------------------- */

/* 4x4x2 input -> conv 3x3 pad 1 (3 channels, relu) -> maxpool 2 -> flatten -> linear 5. */
static int make_int_net(lb_int_net *net, int weight_bits, lb_int_mode mode) {
    memset(net, 0, sizeof *net);
    net->mode = mode;
    net->input = (lb_shape){4, 4, 2};
    net->classes = 5;
    net->weight_bits = weight_bits;
    net->activation_bits = 8;
    net->input_q = (lb_qparams){1.0f / 255.0f, 0, 0, 255};
    net->n_ops = 4;
    lb_int_op *ops = net->ops;
    ops[0] = (lb_int_op){.kind = LB_INT_CONV2D, .in = {4, 4, 2}, .out = {4, 4, 3}, .kernel = 3,
                         .stride = 1, .pad = 1, .fused_relu = 1};
    ops[1] = (lb_int_op){.kind = LB_INT_MAXPOOL, .in = {4, 4, 3}, .out = {2, 2, 3}, .kernel = 2,
                         .stride = 2};
    ops[2] = (lb_int_op){.kind = LB_INT_FLATTEN, .in = {2, 2, 3}, .out = {1, 1, 12}};
    ops[3] = (lb_int_op){.kind = LB_INT_LINEAR, .in = {1, 1, 12}, .out = {1, 1, 5}};
    const int64_t k[4] = {18, 0, 0, 12};
    size_t total = 0;
    for (int i = 0; i < 4; i++) total += (size_t)(k[i] * ops[i].out.c) + 6 * 4 * (size_t)ops[i].out.c + 8;
    uint8_t *block = calloc(1, total);
    if (!block) return 0;
    net->storage = block;
    int limit = (1 << (weight_bits - 1)) - 1;
    uint32_t s = 99;
    for (int i = 0; i < 4; i++) {
        lb_int_op *op = &ops[i];
        op->out_q = (lb_qparams){0.05f + 0.01f * (float)i, 3 * i, 0, 255};
        op->out_min = op->fused_relu ? op->out_q.zero_point : 0;
        op->out_max = 255 - i;
        if (k[i] == 0) continue;
        int32_t n = op->out.c;
        op->weight_scales = (float *)block;
        op->weight_sums = (int32_t *)(block + 4 * n);
        op->bias = (int32_t *)(block + 8 * n);
        op->float_bias = (float *)(block + 12 * n);
        op->multiplier = (int32_t *)(block + 16 * n);
        op->shift = (int32_t *)(block + 20 * n);
        op->weights = (int8_t *)(block + 24 * n);
        block += (24 * n + k[i] * n + 7) / 8 * 8; /* keep the next op's arrays aligned */
        for (int64_t j = 0; j < k[i] * n; j++) {
            s = s * 1664525u + 1013904223u;
            op->weights[j] = (int8_t)((int)(s >> 16) % (2 * limit + 1) - limit);
        }
        op->weights[0] = (int8_t)-limit; /* both extremes present */
        op->weights[1] = (int8_t)limit;
        for (int32_t o = 0; o < n; o++) {
            int32_t sum = 0;
            for (int64_t j = 0; j < k[i]; j++) sum += op->weights[o * k[i] + j];
            op->weight_sums[o] = sum;
            op->weight_scales[o] = 0.01f * (float)(o + 1);
            op->bias[o] = -1000 + 777 * o;
            op->float_bias[o] = -0.5f + 0.125f * (float)o;
            op->multiplier[o] = (int32_t)(1u << 30) + 12345 * o;
            op->shift[o] = o - 2;
        }
    }
    return 1;
}

static int same_int_nets(const lb_int_net *a, const lb_int_net *b) {
    if (a->mode != b->mode || a->n_ops != b->n_ops || a->weight_bits != b->weight_bits ||
        a->activation_bits != b->activation_bits || a->classes != b->classes ||
        memcmp(&a->input, &b->input, sizeof a->input) ||
        memcmp(&a->input_q, &b->input_q, sizeof a->input_q)) {
        return 0;
    }
    for (int i = 0; i < a->n_ops; i++) {
        const lb_int_op *x = &a->ops[i], *y = &b->ops[i];
        if (x->kind != y->kind || memcmp(&x->in, &y->in, sizeof x->in) ||
            memcmp(&x->out, &y->out, sizeof x->out) || x->kernel != y->kernel ||
            x->stride != y->stride || x->pad != y->pad || x->fused_relu != y->fused_relu ||
            memcmp(&x->out_q, &y->out_q, sizeof x->out_q) || x->out_min != y->out_min ||
            x->out_max != y->out_max || (x->weights == NULL) != (y->weights == NULL)) {
            return 0;
        }
        if (!x->weights) continue;
        size_t n = (size_t)x->out.c;
        size_t k = x->kind == LB_INT_CONV2D ? (size_t)(x->kernel * x->kernel * x->in.c)
                                            : (size_t)x->in.c;
        if (memcmp(x->weights, y->weights, n * k) || memcmp(x->weight_scales, y->weight_scales, 4 * n) ||
            memcmp(x->weight_sums, y->weight_sums, 4 * n) || memcmp(x->bias, y->bias, 4 * n) ||
            memcmp(x->float_bias, y->float_bias, 4 * n) ||
            memcmp(x->multiplier, y->multiplier, 4 * n) || memcmp(x->shift, y->shift, 4 * n)) {
            return 0;
        }
    }
    return 1;
}

static void free_hand_made(lb_int_net *net) {
    free(net->storage);
    memset(net, 0, sizeof *net);
}

static void test_int_round_trip(void) {
    int64_t sizes[2] = {0, 0};
    const int bits[2] = {8, 4};
    for (int t = 0; t < 2; t++) {
        lb_int_net net, loaded;
        lb_net float_net;
        lowbit_diag diag = {0};
        CHECK(make_int_net(&net, bits[t], t ? LB_INT_MODE_DYNAMIC : LB_INT_MODE_STATIC), "alloc");
        char name[32];
        snprintf(name, sizeof name, "int%d.gguf", bits[t]);
        const char *path = tmp_path(name);
        CHECK(lb_int_net_save(&net, path, &diag) == LOWBIT_OK, "int%d save: %s", bits[t],
              diag.message);
        int is_int = -1;
        CHECK(lb_classifier_load(path, &is_int, &float_net, &loaded, &diag) == LOWBIT_OK,
              "int%d load: %s", bits[t], diag.message);
        CHECK(is_int == 1, "int%d loaded as float", bits[t]);
        CHECK(same_int_nets(&net, &loaded), "int%d round trip differs", bits[t]);
        sizes[t] = file_size(path);
        lb_int_net_free(&loaded);
        free_hand_made(&net);
    }
    /* 4-bit weights really take half the bytes: conv 3 x 18 -> 3 x 9, linear 5 x 12 -> 5 x 6 */
    CHECK(sizes[0] - sizes[1] >= 54 + 30 - 64 && sizes[1] < sizes[0], "8-bit file %lld, 4-bit %lld",
          (long long)sizes[0], (long long)sizes[1]);

    /* odd K packs with a padded last nibble: a linear 3 -> 2 at 3 bits */
    lb_int_net net, loaded;
    lb_net float_net;
    lowbit_diag diag = {0};
    memset(&net, 0, sizeof net);
    net.mode = LB_INT_MODE_WEIGHT_ONLY;
    net.input = (lb_shape){1, 1, 3};
    net.classes = 2;
    net.weight_bits = 3;
    net.activation_bits = 4;
    net.input_q = (lb_qparams){1.0f / 255.0f, 0, 0, 255};
    net.n_ops = 1;
    int8_t w[6] = {-3, 3, 0, 1, -1, -2};
    float scales[2] = {0.5f, 0.25f}, fb[2] = {1.0f, -1.0f};
    int32_t sums[2] = {0, -2}, zeros[2] = {0, 0}, mult[2] = {1 << 30, 1 << 30};
    net.ops[0] = (lb_int_op){.kind = LB_INT_LINEAR, .in = {1, 1, 3}, .out = {1, 1, 2},
                             .weights = w, .weight_scales = scales, .weight_sums = sums,
                             .bias = zeros, .float_bias = fb, .multiplier = mult, .shift = zeros,
                             .out_q = {0.1f, 2, 0, 15}, .out_min = 0, .out_max = 15};
    const char *path = tmp_path("odd.gguf");
    CHECK(lb_int_net_save(&net, path, &diag) == LOWBIT_OK, "odd save: %s", diag.message);
    int is_int = 0;
    CHECK(lb_classifier_load(path, &is_int, &float_net, &loaded, &diag) == LOWBIT_OK,
          "odd load: %s", diag.message);
    CHECK(is_int && same_int_nets(&net, &loaded), "odd-K 3-bit round trip differs");
    lb_int_net_free(&loaded);
    /* a weight outside its bit width is refused at save time? no: written as a nibble, it would
       come back different, so the loader's range check is what protects the kernels. */
    w[0] = -4; /* outside [-3, 3] for 3 bits: stored as nibble 0xC, read back as -4 */
    CHECK(lb_int_net_save(&net, path, &diag) == LOWBIT_OK, "save: %s", diag.message);
    CHECK(lb_classifier_load(path, &is_int, &float_net, &loaded, &diag) == LOWBIT_ERR_BAD_FILE,
          "weight outside its bit width loaded");
    CHECK(strstr(diag.message, "bit width") != NULL, "message: %s", diag.message);
    CHECK(loaded.storage == NULL && loaded.n_ops == 0, "refused load left an integer net");
    /* an output scale at which 255 codes overflow a float (logits would be infinite) */
    w[0] = -3;
    net.ops[0].out_q.scale = 1.0e38f;
    CHECK(lb_int_net_save(&net, path, &diag) == LOWBIT_OK, "save: %s", diag.message);
    CHECK(lb_classifier_load(path, &is_int, &float_net, &loaded, &diag) == LOWBIT_ERR_BAD_FILE,
          "output scale 1e38 loaded");
    CHECK(strstr(diag.message, "out of range") != NULL, "message: %s", diag.message);
}

/* ---- hostile files --------------------------------------------------------------------------- */

static void expect_load_refused(const char *path, const char *what, const char *message_part) {
    lb_net net;
    lb_int_net int_net;
    lowbit_diag diag = {0};
    int is_int = 7;
    lowbit_status st = lb_classifier_load(path, &is_int, &net, &int_net, &diag);
    CHECK(st == LOWBIT_ERR_BAD_FILE, "%s: status %d (%s)", what, (int)st, diag.message);
    CHECK(net.params == NULL && int_net.storage == NULL && is_int == 0, "%s: output left", what);
    CHECK(diag.message[0] != '\0', "%s: no message", what);
    if (message_part) {
        CHECK(strstr(diag.message, message_part) != NULL, "%s: message '%s' lacks '%s'", what,
              diag.message, message_part);
    }
    if (st == LOWBIT_OK) {
        lb_net_free(&net);
        lb_int_net_free(&int_net);
    }
}

/* Replaces the first occurrence of `from` (same length as `to`) in a buffer. */
static int patch(uint8_t *data, size_t n, const char *from, const char *to) {
    size_t len = strlen(from);
    for (size_t i = 0; i + len <= n; i++) {
        if (memcmp(data + i, from, len) == 0) {
            memcpy(data + i, to, len);
            return 1;
        }
    }
    return 0;
}

/* The offset of a tensor info's dims: right after its name (u64 length, name, u32 n_dims). */
static size_t find_dims(const uint8_t *data, size_t n, const char *name) {
    size_t len = strlen(name);
    for (size_t i = 8; i + len + 4 <= n; i++) {
        if (memcmp(data + i, name, len) == 0 && lb_load_u64(data + i - 8) == len) {
            return i + len + 4;
        }
    }
    return 0;
}

static void test_hostile_files(void) {
    lb_net net;
    lowbit_diag diag = {0};
    CHECK(lb_net_build_named(&net, "cnn", (lb_shape){8, 8, 1}, 3, 1, &diag) == LOWBIT_OK, "%s",
          diag.message);
    scramble(&net, 5); /* no zero bytes at the end of the data */
    const char *path = tmp_path("small_cnn.gguf");
    CHECK(lb_net_save(&net, path, &diag) == LOWBIT_OK, "%s", diag.message);
    size_t n = 0;
    uint8_t *good = (uint8_t *)lb_read_whole_file(path, &n);
    CHECK(good != NULL && n > 0, "cannot read back %s", path);
    if (!good) return;
    uint8_t *bad = malloc(n);
    const char *bad_path = tmp_path("bad.gguf");

    /* truncations: any cut into the metadata or the tensor data (the zero padding after the
       last tensor is not needed to read it) */
    size_t data_end = n;
    while (data_end > 0 && good[data_end - 1] == 0) data_end--;
    CHECK(n - data_end < 32, "the file ends with %zu zero bytes", n - data_end);
    /* every length through the header, metadata and tensor infos; a sample through the data */
    size_t dense = lb_test_quick() ? 512 : 4096;
    for (size_t len = 0; len < data_end; len += len < dense ? 1 : 509) {
        write_file(bad_path, good, len);
        expect_load_refused(bad_path, "truncated file", NULL);
    }
    write_file(bad_path, good, data_end - 1);
    expect_load_refused(bad_path, "last data byte cut", NULL);

    /* a tensor whose size disagrees with the layer: conv 0 claims 10 instead of 9 weights per
       row (the tensor info says ne0 = 10; the layout below it no longer matches either, but the
       file reader accepts the sizes as long as they fit, so the classifier check must catch it) */
    memcpy(bad, good, n);
    size_t dims = find_dims(bad, n, "layer.4.weight");
    CHECK(dims != 0, "tensor info of layer.4.weight not found");
    if (dims) {
        CHECK(lb_load_u64(bad + dims) == 9 * 16, "layer.4.weight ne0 %llu",
              (unsigned long long)lb_load_u64(bad + dims));
        lb_store_le(bad + dims, 9 * 16 - 16, 8); /* 128 x 32: smaller, so it still fits */
        write_file(bad_path, bad, n);
        expect_load_refused(bad_path, "wrong tensor size", "layer.4.weight");
    }
    /* a missing layer key */
    memcpy(bad, good, n);
    CHECK(patch(bad, n, "lowbit-classifier.layer.0.units", "lowbit-classifier.layer.0.unitz"),
          "key not found");
    write_file(bad_path, bad, n);
    expect_load_refused(bad_path, "missing key", "layer.0.units");
    /* an unknown layer kind */
    memcpy(bad, good, n);
    CHECK(patch(bad, n, "maxpool", "maxpoo!"), "maxpool not found");
    write_file(bad_path, bad, n);
    expect_load_refused(bad_path, "unknown layer kind", "kind");
    /* another architecture */
    memcpy(bad, good, n);
    CHECK(patch(bad, n, "lowbit-classifier\x13", "lowbit-classifiex\x13") ||
              patch(bad, n, "general.architecture", "general.architectura"),
          "architecture not found");
    write_file(bad_path, bad, n);
    expect_load_refused(bad_path, "other architecture", "architecture");
    /* an extra, unused tensor: rename a tensor so that its layer misses it */
    memcpy(bad, good, n);
    CHECK(patch(bad, n, "layer.1.gamma", "layer.1.gamm@"), "gamma not found");
    write_file(bad_path, bad, n);
    expect_load_refused(bad_path, "renamed tensor", "layer.1.gamma");
    /* NaN in a weight */
    net.layers[0].weight[5] = NAN;
    CHECK(lb_net_save(&net, bad_path, &diag) == LOWBIT_OK, "%s", diag.message);
    expect_load_refused(bad_path, "NaN weight", "NaN");
    free(bad);
    free(good);
    lb_net_free(&net);

    /* an integer model whose linear weights claim 11 bytes per row instead of 12 */
    lb_int_net int_net;
    CHECK(make_int_net(&int_net, 8, LB_INT_MODE_STATIC), "alloc");
    CHECK(lb_int_net_save(&int_net, path, &diag) == LOWBIT_OK, "%s", diag.message);
    free_hand_made(&int_net);
    good = (uint8_t *)lb_read_whole_file(path, &n);
    size_t at = good ? find_dims(good, n, "op.3.weights") : 0;
    CHECK(at != 0 && lb_load_u64(good + at) == 12, "op.3.weights dims not found");
    if (at) {
        lb_store_le(good + at, 11, 8);
        write_file(bad_path, good, n);
        expect_load_refused(bad_path, "wrong integer tensor size", "op.3.weights");
    }
    free(good);

    /* not a GGUF file at all */
    write_file(bad_path, "hello", 5);
    expect_load_refused(bad_path, "text file", NULL);
    lb_net dummy;
    lb_int_net dummy_int;
    int is_int;
    CHECK(lb_classifier_load(tmp_path("missing.gguf"), &is_int, &dummy, &dummy_int, &diag) ==
              LOWBIT_ERR_IO,
          "missing file: %s", diag.message);
}

static void test_unwritable(void) {
    lb_net net;
    lowbit_diag diag = {0};
    CHECK(lb_net_build_named(&net, "mlp", fashion, 10, 1, &diag) == LOWBIT_OK, "%s", diag.message);
    const char *path = tmp_path("no-such-folder/net.gguf");
    diag.message[0] = '\0';
    CHECK(lb_net_save(&net, path, &diag) != LOWBIT_OK, "saved into a missing folder");
    CHECK(diag.message[0] != '\0', "no message");
    CHECK(!file_exists(path), "a file was left behind");
    /* a folder as destination */
    CHECK(lb_net_save(&net, tmp_dir, &diag) != LOWBIT_OK, "saved over a folder");
    /* a read-only folder (as root, permissions do not stop writes: then only check cleanliness) */
    const char *ro = tmp_path("readonly");
    mkdir(ro, 0555);
    const char *ro_file = lb_join_path(ro, "net.gguf");
    lowbit_status st = lb_net_save(&net, ro_file, &diag);
    if (geteuid() != 0) CHECK(st != LOWBIT_OK, "saved into a read-only folder");
    if (st != LOWBIT_OK) CHECK(!file_exists(ro_file), "a file was left in the read-only folder");
    unlink(ro_file);
    rmdir(ro);
    /* the other file of the folder is untouched by a failed save */
    lb_net_free(&net);
}

static void remove_tmp_dir(void) {
    const char *names[] = {"mlp", "cnn", "int8.gguf", "int4.gguf", "odd.gguf", "small_cnn.gguf", "bad.gguf"};
    for (int i = 0; i < LB_ARRAY_LEN(names); i++) unlink(tmp_path(names[i]));
    rmdir(tmp_dir);
}

int main(void) {
    /* memory-backed when possible: the test writes thousands of small files and fsyncs */
    struct stat shm;
    const char *base = stat("/dev/shm", &shm) == 0 && S_ISDIR(shm.st_mode) && access("/dev/shm", W_OK) == 0
                           ? "/dev/shm"
                           : "/tmp";
    snprintf(tmp_dir, sizeof tmp_dir, "%s/lowbit_test_classifier_file_XXXXXX", base);
    if (!mkdtemp(tmp_dir)) {
        fprintf(stderr, "cannot create a temporary folder\n");
        return 1;
    }
    test_float_round_trip("mlp");
    test_float_round_trip("cnn");
    test_int_round_trip();
    test_hostile_files();
    test_unwritable();
    remove_tmp_dir();
    return lb_test_summary();
}
