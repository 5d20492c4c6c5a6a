/*
 * The public face of the image classifiers (lowbit.h): datasets, the float network and its
 * training, calibration with observers, conversion to the integer model, prediction and accuracy.
 * The work itself happens in classifier_net.c, train*.c, quant_convert.c, integer_net.c and
 * classifier_dynamic.c; this file only checks arguments, chooses defaults and wires them up.
 */
#include "classifier.h"
#include "../data/data.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct lowbit_dataset {
    lb_image_set set;
};

struct lowbit_classifier {
    int is_int;
    lb_net net;          /* is_int == 0 */
    lb_int_net int_net;  /* is_int == 1 */
};

/* ---- datasets ------------------------------------------------------------------------------ */

static lowbit_status wrap_image_set(lb_image_set *set, lowbit_dataset **out, lowbit_diag *diag) {
    lowbit_dataset *d = calloc(1, sizeof *d);
    if (!d) {
        lb_image_set_free(set);
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    }
    d->set = *set;
    *out = d;
    return LOWBIT_OK;
}

lowbit_status lowbit_dataset_open_fashion_mnist(const char *dir, int train, lowbit_dataset **out,
                                                lowbit_diag *diag) {
    if (!dir || !out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    lb_image_set set;
    lowbit_status st = lb_image_set_load_fashion_mnist(dir, train, &set, diag);
    return st == LOWBIT_OK ? wrap_image_set(&set, out, diag) : st;
}

lowbit_status lowbit_dataset_open_idx(const char *images_path, const char *labels_path,
                                      lowbit_dataset **out, lowbit_diag *diag) {
    if (!images_path || !labels_path || !out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    lb_image_set set;
    lowbit_status st = lb_image_set_load_idx(images_path, labels_path, &set, diag);
    return st == LOWBIT_OK ? wrap_image_set(&set, out, diag) : st;
}

void lowbit_dataset_free(lowbit_dataset *dataset) {
    if (!dataset) return;
    lb_image_set_free(&dataset->set);
    free(dataset);
}

int64_t lowbit_dataset_count(const lowbit_dataset *dataset) {
    return dataset ? dataset->set.count : 0;
}

const uint8_t *lowbit_dataset_images(const lowbit_dataset *dataset) {
    return dataset ? dataset->set.images : NULL;
}

const uint8_t *lowbit_dataset_labels(const lowbit_dataset *dataset) {
    return dataset ? dataset->set.labels : NULL;
}

static lb_shape dataset_shape(const lowbit_dataset *d) {
    return (lb_shape){.h = d->set.h, .w = d->set.w, .c = d->set.c};
}

static lb_shape classifier_input(const lowbit_classifier *c) {
    return c->is_int ? c->int_net.input : c->net.input;
}

static int32_t classifier_classes(const lowbit_classifier *c) {
    return c->is_int ? c->int_net.classes : c->net.classes;
}

/* A dataset fits a classifier when its images have the input's shape and its labels name
   classes the classifier has. */
static lowbit_status check_dataset_fits(const lowbit_classifier *c, const lowbit_dataset *d,
                                        lowbit_diag *diag) {
    const lb_shape in = classifier_input(c), ds = dataset_shape(d);
    if (in.h != ds.h || in.w != ds.w || in.c != ds.c) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "the images are %dx%dx%d but the classifier takes %dx%dx%d", (int)ds.h,
                           (int)ds.w, (int)ds.c, (int)in.h, (int)in.w, (int)in.c);
    }
    if (d->set.classes > classifier_classes(c)) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "the labels name %d classes but the classifier has %d",
                           (int)d->set.classes, (int)classifier_classes(c));
    }
    return LOWBIT_OK;
}

/* ---- classifiers --------------------------------------------------------------------------- */

lowbit_status lowbit_classifier_create(const char *arch, const lowbit_dataset *dataset,
                                       uint64_t seed, lowbit_classifier **out, lowbit_diag *diag) {
    if (!arch || !dataset || !out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    lowbit_classifier *c = calloc(1, sizeof *c);
    if (!c) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    const int32_t classes = dataset->set.classes < 2 ? 2 : dataset->set.classes;
    lowbit_status st =
        lb_net_build_named(&c->net, arch, dataset_shape(dataset), classes, seed, diag);
    if (st != LOWBIT_OK) {
        free(c);
        return st;
    }
    *out = c;
    return LOWBIT_OK;
}

lowbit_status lowbit_classifier_load(const char *path, lowbit_classifier **out,
                                     lowbit_diag *diag) {
    if (!path || !out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    lowbit_classifier *c = calloc(1, sizeof *c);
    if (!c) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    lowbit_status st = lb_classifier_load(path, &c->is_int, &c->net, &c->int_net, diag);
    if (st != LOWBIT_OK) {
        free(c);
        return st;
    }
    *out = c;
    return LOWBIT_OK;
}

lowbit_status lowbit_classifier_save(const lowbit_classifier *classifier, const char *path,
                                     lowbit_diag *diag) {
    if (!classifier || !path) return LOWBIT_ERR_INVALID_ARGUMENT;
    return classifier->is_int ? lb_int_net_save(&classifier->int_net, path, diag)
                              : lb_net_save(&classifier->net, path, diag);
}

void lowbit_classifier_free(lowbit_classifier *classifier) {
    if (!classifier) return;
    if (classifier->is_int) lb_int_net_free(&classifier->int_net);
    else lb_net_free(&classifier->net);
    free(classifier);
}

static const char *const kind_names[] = {"float", "static", "dynamic", "weight-only"};

static lowbit_classifier_kind kind_of_mode(lb_int_mode mode) {
    switch (mode) {
    case LB_INT_MODE_STATIC: return LOWBIT_CLASSIFIER_STATIC;
    case LB_INT_MODE_DYNAMIC: return LOWBIT_CLASSIFIER_DYNAMIC;
    case LB_INT_MODE_WEIGHT_ONLY: return LOWBIT_CLASSIFIER_WEIGHT_ONLY;
    }
    return LOWBIT_CLASSIFIER_STATIC;
}

/* 1 when every quantization point of a float net has a range (calibrated or QAT-trained). */
static int net_has_ranges(const lb_net *net) {
    int points = 0;
    for (int i = 0; i < net->n_layers; i++) {
        if (!lb_net_is_quant_point(net, i)) continue;
        if (!net->layers[i].has_range) return 0;
        points++;
    }
    return points > 0;
}

static int64_t int_net_parameters(const lb_int_net *net) {
    int64_t n = 0;
    for (int i = 0; i < net->n_ops; i++) {
        const lb_int_op *op = &net->ops[i];
        if (op->kind == LB_INT_LINEAR) {
            n += (int64_t)op->out.c * (lb_shape_size(op->in) + 1);
        } else if (op->kind == LB_INT_CONV2D) {
            n += (int64_t)op->out.c * ((int64_t)op->kernel * op->kernel * op->in.c + 1);
        }
    }
    return n;
}

void lowbit_classifier_get_info(const lowbit_classifier *c, lowbit_classifier_info *info) {
    memset(info, 0, sizeof *info);
    if (!c) return;
    const lb_shape in = classifier_input(c);
    info->height = in.h;
    info->width = in.w;
    info->channels = in.c;
    info->classes = classifier_classes(c);
    if (c->is_int) {
        info->kind = kind_of_mode(c->int_net.mode);
        info->n_layers = c->int_net.n_ops;
        info->parameters = int_net_parameters(&c->int_net);
        info->parameter_bytes = lb_int_net_param_bytes(&c->int_net);
        info->weight_bits = c->int_net.weight_bits;
        info->activation_bits =
            c->int_net.mode == LB_INT_MODE_WEIGHT_ONLY ? 32 : c->int_net.activation_bits;
        info->integer_only = c->int_net.mode == LB_INT_MODE_STATIC;
    } else {
        info->kind = LOWBIT_CLASSIFIER_FLOAT;
        info->n_layers = c->net.n_layers;
        info->parameters = lb_net_param_count(&c->net);
        info->parameter_bytes = (int64_t)sizeof(float) * (c->net.n_params + c->net.n_state);
        info->weight_bits = 32;
        info->activation_bits = 32;
        info->has_ranges = net_has_ranges(&c->net);
    }
    info->kind_name = kind_names[info->kind];
}

/* Appends printf output to buf at *used, counting what did not fit. */
static void append(char *buf, size_t size, size_t *used, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static void append(char *buf, size_t size, size_t *used, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const size_t room = *used < size ? size - *used : 0;
    const int n = vsnprintf(room ? buf + *used : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) *used += (size_t)n;
}

static void describe_float_layer(const lb_net *net, int i, char *buf, size_t size, size_t *used) {
    const lb_layer *l = &net->layers[i];
    append(buf, size, used, "%2d %-9s %dx%dx%d -> %dx%dx%d", i, lb_layer_kind_name(l->kind),
           (int)l->in.h, (int)l->in.w, (int)l->in.c, (int)l->out.h, (int)l->out.w, (int)l->out.c);
    if (l->kind == LB_LAYER_CONV2D || l->kind == LB_LAYER_MAXPOOL || l->kind == LB_LAYER_AVGPOOL) {
        append(buf, size, used, "  kernel %d stride %d pad %d", (int)l->kernel, (int)l->stride,
               (int)l->pad);
    }
    if (l->has_range) append(buf, size, used, "  range [%.4g, %.4g]", l->range_lo, l->range_hi);
    append(buf, size, used, "\n");
}

static void describe_int_op(const lb_int_op *op, int i, char *buf, size_t size, size_t *used) {
    static const char *const names[] = {"linear", "conv2d", "maxpool", "avgpool", "flatten"};
    append(buf, size, used, "%2d %-9s %dx%dx%d -> %dx%dx%d", i,
           op->kind < LB_INT_OP_KIND_COUNT ? names[op->kind] : "?", (int)op->in.h, (int)op->in.w,
           (int)op->in.c, (int)op->out.h, (int)op->out.w, (int)op->out.c);
    if (op->fused_relu) append(buf, size, used, " +relu%s", op->fused_relu == 6 ? "6" : "");
    append(buf, size, used, "  out scale %.4g zero point %d clamp [%d, %d]\n", op->out_q.scale,
           (int)op->out_q.zero_point, (int)op->out_min, (int)op->out_max);
}

size_t lowbit_classifier_describe(const lowbit_classifier *c, char *buf, size_t size) {
    size_t used = 0;
    if (!c) return 0;
    if (size) buf[0] = '\0';
    if (c->is_int) {
        for (int i = 0; i < c->int_net.n_ops; i++) {
            describe_int_op(&c->int_net.ops[i], i, buf, size, &used);
        }
    } else {
        for (int i = 0; i < c->net.n_layers; i++) describe_float_layer(&c->net, i, buf, size, &used);
    }
    return used;
}

/* ---- training ------------------------------------------------------------------------------ */

static int net_has_conv(const lb_net *net) {
    for (int i = 0; i < net->n_layers; i++) {
        if (net->layers[i].kind == LB_LAYER_CONV2D) return 1;
    }
    return 0;
}

static int net_has_batchnorm(const lb_net *net) {
    for (int i = 0; i < net->n_layers; i++) {
        if (net->layers[i].kind == LB_LAYER_BATCHNORM) return 1;
    }
    return 0;
}

/* Defaults that reach the accuracy goals (MLP >= 88%, CNN >= 91% on the test images) in a few
   minutes on 2 cores, measured: MLP 5 epochs of batch 64 at Adam 1e-3 reach 88.7%, CNN 5 epochs
   of batch 128 at 3e-3 reach 91.2%; one more epoch each for margin.
   QAT at 8 bits only has to absorb rounding: 2 epochs at a tenth of the learning rate. Below 8
   bits the net must move across a coarse grid: 5 epochs at Adam 1e-3 with learned ranges
   (measured at W4A4: MLP 86.3% with tracked ranges, 2 epochs at 1e-4, but 88.4% learned, 5 epochs
   at 1e-3, against 86.97% for the best static PTQ; CNN 90.8% at 3e-3, 91.0% at 1e-3, against
   89.96% for the best static PTQ). */
static int qat_is_low_bit(const lowbit_train_options *o) {
    return (o->weight_bits > 0 && o->weight_bits < 8) ||
           (o->activation_bits > 0 && o->activation_bits < 8);
}

static void fill_train_defaults(const lb_net *net, const lowbit_train_options *o,
                                lb_train_config *cfg) {
    const int cnn = net_has_conv(net);
    const int low_bit_qat = o->qat && qat_is_low_bit(o);
    cfg->epochs = o->epochs > 0 ? o->epochs : (o->qat ? (low_bit_qat ? 5 : 2) : 6);
    cfg->batch_size = o->batch_size > 0 ? o->batch_size : (cnn ? 128 : 64);
    cfg->optimizer = LB_OPT_ADAM;
    if (o->optimizer && strcmp(o->optimizer, "sgd") == 0) cfg->optimizer = LB_OPT_SGD;
    const float default_lr = cfg->optimizer == LB_OPT_SGD ? 0.05f : (cnn ? 0.003f : 0.001f);
    float qat_lr = default_lr * 0.1f;
    if (low_bit_qat) qat_lr = cfg->optimizer == LB_OPT_ADAM ? 0.001f : default_lr;
    cfg->learning_rate = o->learning_rate > 0 ? o->learning_rate
                                               : (o->qat ? qat_lr : default_lr);
    cfg->momentum = o->momentum > 0 ? o->momentum : 0.9f;
    cfg->weight_decay = o->weight_decay < 0 ? 0.0f : (o->weight_decay > 0 ? o->weight_decay : 1e-4f);
    cfg->seed = o->seed;
    cfg->qat.enabled = o->qat != 0;
    cfg->qat.weight_bits = o->weight_bits > 0 ? o->weight_bits : 8;
    cfg->qat.activation_bits = o->activation_bits > 0 ? o->activation_bits : 8;
    cfg->qat.learn_ranges = o->learn_ranges > 0 || (o->learn_ranges == 0 && low_bit_qat);
    cfg->qat.range_momentum = 0.01f;
}

typedef struct progress_bridge {
    void (*fn)(void *ctx, const lowbit_train_progress *p);
    void *ctx;
} progress_bridge;

static void forward_progress(void *ctx, const lb_train_progress *p) {
    const progress_bridge *b = ctx;
    const lowbit_train_progress q = {.epoch = p->epoch, .epochs = p->epochs, .batch = p->batch,
                                     .batches = p->batches, .loss = p->loss,
                                     .accuracy = p->accuracy};
    b->fn(b->ctx, &q);
}

static lowbit_status check_train_options(const lowbit_train_options *o, lowbit_diag *diag) {
    if (o->optimizer && strcmp(o->optimizer, "sgd") != 0 && strcmp(o->optimizer, "adam") != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "unknown optimizer '%s' (known: sgd, adam)", o->optimizer);
    }
    if (o->qat && ((o->weight_bits && (o->weight_bits < 2 || o->weight_bits > 8)) ||
                   (o->activation_bits && (o->activation_bits < 2 || o->activation_bits > 8)))) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "QAT bit widths must lie in 2..8");
    }
    if (!(o->learning_rate >= 0) || !isfinite(o->learning_rate) || o->max_images < 0) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "bad training options");
    }
    return LOWBIT_OK;
}

/* QAT trains the net the integer model will run: batch norm folded into the convolutions. */
static lowbit_status fold_for_qat(lb_net *net, lowbit_diag *diag) {
    if (!net_has_batchnorm(net)) return LOWBIT_OK;
    lb_net folded;
    lowbit_status st = lb_net_fold_batchnorm(net, &folded, diag);
    if (st != LOWBIT_OK) return st;
    lb_net_free(net);
    *net = folded;
    return LOWBIT_OK;
}

/* QAT starts from the ranges static PTQ would use (the MSE-optimal ones at the activation bits,
   on the first 500 training images) unless the net has ranges already (calibrated, or an earlier
   QAT run): tracked or learned, they then start where the rounding error is smallest. */
static lowbit_status start_ranges_for_qat(lowbit_classifier *c, const lowbit_dataset *train,
                                          int activation_bits, lowbit_pool *pool,
                                          lowbit_diag *diag) {
    if (net_has_ranges(&c->net)) return LOWBIT_OK;
    const lowbit_calibrate_options o = {.observer = "mse", .activation_bits = activation_bits};
    return lowbit_classifier_calibrate(c, train, &o, pool, diag);
}

lowbit_status lowbit_classifier_train(lowbit_classifier *c, const lowbit_dataset *train,
                                      const lowbit_train_options *options, lowbit_pool *pool,
                                      lowbit_diag *diag) {
    if (!c || !train || !options) return LOWBIT_ERR_INVALID_ARGUMENT;
    if (c->is_int) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "a quantized classifier cannot be trained: train the float model "
                           "(with --qat for quantization-aware training), then convert it");
    }
    lowbit_status st = check_train_options(options, diag);
    if (st == LOWBIT_OK) st = check_dataset_fits(c, train, diag);
    if (st != LOWBIT_OK) return st;
    lb_train_config cfg;
    memset(&cfg, 0, sizeof cfg);
    fill_train_defaults(&c->net, options, &cfg);
    progress_bridge bridge = {.fn = options->progress, .ctx = options->progress_ctx};
    if (options->progress) {
        cfg.progress = forward_progress;
        cfg.progress_ctx = &bridge;
    }
    if (cfg.qat.enabled) {
        st = start_ranges_for_qat(c, train, cfg.qat.activation_bits, pool, diag);
        if (st == LOWBIT_OK) st = fold_for_qat(&c->net, diag);
        if (st != LOWBIT_OK) return st;
    }
    int64_t n = train->set.count;
    if (options->max_images > 0 && options->max_images < n) n = options->max_images;
    return lb_net_train(&c->net, train->set.images, train->set.labels, n, &cfg, pool, diag);
}

/* ---- calibration --------------------------------------------------------------------------- */

typedef struct calibration {
    const lb_net *net;
    lb_observer *observers[LB_NET_MAX_LAYERS]; /* one per quant point, NULL elsewhere */
    lowbit_status status;
    lowbit_diag *diag;
} calibration;

static void observe_layer(void *ctx, int layer, const float *output, int64_t n) {
    calibration *cal = ctx;
    if (cal->status != LOWBIT_OK || !cal->observers[layer]) return;
    const int64_t values = n * lb_shape_size(cal->net->layers[layer].out);
    cal->status = lb_observer_observe(cal->observers[layer], output, values, cal->diag);
}

static lowbit_status parse_observer(const char *name, double percentile, int bits,
                                    lb_range_request *req, lowbit_diag *diag) {
    static const struct {
        const char *name;
        lb_range_method method;
    } methods[] = {{"minmax", LB_RANGE_MINMAX},       {"moving-average", LB_RANGE_MOVING_AVERAGE},
                   {"percentile", LB_RANGE_PERCENTILE}, {"kl", LB_RANGE_KL},
                   {"mse", LB_RANGE_MSE}};
    if (!name) name = "minmax";
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        if (strcmp(methods[i].name, name) != 0) continue;
        *req = (lb_range_request){.method = methods[i].method,
                                  .percentile = percentile > 0 ? percentile : 99.99,
                                  .bits = bits};
        return LOWBIT_OK;
    }
    return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                       "unknown observer '%s' (known: minmax, moving-average, percentile, kl, "
                       "mse)",
                       name);
}

static int method_needs_histogram(lb_range_method m) {
    return m == LB_RANGE_PERCENTILE || m == LB_RANGE_KL || m == LB_RANGE_MSE;
}

static lowbit_status create_observers(calibration *cal, const lb_range_request *req,
                                      lowbit_diag *diag) {
    const lb_observer_config cfg = {.channels = 1,
                                    .channel_stride = 1,
                                    .moving_average_factor = 0.01f,
                                    .histogram_bins = method_needs_histogram(req->method) ? 2048 : 0};
    for (int i = 0; i < cal->net->n_layers; i++) {
        if (!lb_net_is_quant_point(cal->net, i)) continue;
        lowbit_status st = lb_observer_create(&cfg, &cal->observers[i], diag);
        if (st != LOWBIT_OK) return st;
    }
    return LOWBIT_OK;
}

/* Feeds the calibration images through the net batch by batch, every quant point observed. */
static lowbit_status run_calibration_batches(calibration *cal, const lb_image_set *set,
                                             int64_t images, int batch, lowbit_pool *pool,
                                             lowbit_diag *diag) {
    const lb_net *net = cal->net;
    const int64_t image_bytes = lb_shape_size(net->input);
    float *logits = malloc((size_t)batch * (size_t)net->classes * sizeof(float));
    if (!logits) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    lowbit_status st = LOWBIT_OK;
    for (int64_t start = 0; start < images && st == LOWBIT_OK; start += batch) {
        const int64_t n = images - start < batch ? images - start : batch;
        st = lb_net_forward(net, set->images + start * image_bytes, n, logits, pool,
                            observe_layer, cal, diag);
        if (st == LOWBIT_OK) st = cal->status;
    }
    free(logits);
    return st;
}

lowbit_status lowbit_classifier_calibrate(lowbit_classifier *c, const lowbit_dataset *images,
                                          const lowbit_calibrate_options *options,
                                          lowbit_pool *pool, lowbit_diag *diag) {
    if (!c || !images || !options) return LOWBIT_ERR_INVALID_ARGUMENT;
    if (c->is_int) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "only a float classifier can be calibrated");
    }
    const int bits = options->activation_bits > 0 ? options->activation_bits : 8;
    if (bits < 2 || bits > 16) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "activation bits must lie in 2..16");
    }
    lb_range_request req;
    lowbit_status st = parse_observer(options->observer, options->percentile, bits, &req, diag);
    if (st == LOWBIT_OK) st = check_dataset_fits(c, images, diag);
    if (st != LOWBIT_OK) return st;
    int64_t count = options->images > 0 ? options->images : 500;
    if (count > images->set.count) count = images->set.count;
    const int batch = options->batch_size > 0 ? options->batch_size : 32;
    calibration cal = {.net = &c->net, .status = LOWBIT_OK, .diag = diag};
    st = create_observers(&cal, &req, diag);
    if (st == LOWBIT_OK) st = run_calibration_batches(&cal, &images->set, count, batch, pool, diag);
    for (int i = 0; i < c->net.n_layers && st == LOWBIT_OK; i++) {
        if (!cal.observers[i]) continue;
        lb_layer *l = &c->net.layers[i];
        st = lb_observer_range(cal.observers[i], 0, &req, &l->range_lo, &l->range_hi, diag);
        l->has_range = st == LOWBIT_OK;
    }
    for (int i = 0; i < LB_NET_MAX_LAYERS; i++) lb_observer_free(cal.observers[i]);
    return st;
}

/* ---- conversion, prediction, accuracy ------------------------------------------------------ */

lowbit_status lowbit_classifier_convert(const lowbit_classifier *c,
                                        const lowbit_convert_options *options,
                                        lowbit_classifier **out, lowbit_diag *diag) {
    if (!c || !options || !out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (c->is_int) {
        return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                           "the classifier is already quantized: convert its float model");
    }
    lb_convert_config cfg = {.weight_bits = options->weight_bits > 0 ? options->weight_bits : 8,
                             .activation_bits =
                                 options->activation_bits > 0 ? options->activation_bits : 8};
    switch (options->kind) {
    case LOWBIT_CLASSIFIER_STATIC: cfg.mode = LB_INT_MODE_STATIC; break;
    case LOWBIT_CLASSIFIER_DYNAMIC: cfg.mode = LB_INT_MODE_DYNAMIC; break;
    case LOWBIT_CLASSIFIER_WEIGHT_ONLY: cfg.mode = LB_INT_MODE_WEIGHT_ONLY; break;
    default:
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "convert to static, dynamic or weight-only");
    }
    lowbit_classifier *q = calloc(1, sizeof *q);
    if (!q) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    q->is_int = 1;
    lowbit_status st = lb_int_net_convert(&c->net, &cfg, &q->int_net, diag);
    if (st != LOWBIT_OK) {
        free(q);
        return st;
    }
    *out = q;
    return LOWBIT_OK;
}

lowbit_status lowbit_classifier_predict(const lowbit_classifier *c, const uint8_t *images,
                                        int64_t n, float *logits, lowbit_pool *pool,
                                        lowbit_diag *diag) {
    if (!c || (!images && n > 0) || (!logits && n > 0) || n < 0) return LOWBIT_ERR_INVALID_ARGUMENT;
    if (n == 0) return LOWBIT_OK;
    return c->is_int ? lb_int_net_forward(&c->int_net, images, n, logits, pool, diag)
                     : lb_net_forward(&c->net, images, n, logits, pool, NULL, NULL, diag);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int32_t argmax(const float *v, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (v[i] > v[best]) best = i;
    }
    return best;
}

lowbit_status lowbit_classifier_evaluate(const lowbit_classifier *c, const lowbit_dataset *d,
                                         int64_t max_images, int batch_size, lowbit_pool *pool,
                                         lowbit_classifier_eval *result, lowbit_diag *diag) {
    if (!c || !d || !result || max_images < 0 || batch_size < 0) return LOWBIT_ERR_INVALID_ARGUMENT;
    memset(result, 0, sizeof *result);
    lowbit_status st = check_dataset_fits(c, d, diag);
    if (st != LOWBIT_OK) return st;
    const int64_t images = max_images > 0 && max_images < d->set.count ? max_images : d->set.count;
    const int batch = batch_size > 0 ? batch_size : 256;
    const int32_t classes = classifier_classes(c);
    const int64_t image_bytes = lb_shape_size(classifier_input(c));
    float *logits = malloc((size_t)batch * (size_t)classes * sizeof(float));
    if (!logits) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    for (int64_t start = 0; start < images && st == LOWBIT_OK; start += batch) {
        const int64_t n = images - start < batch ? images - start : batch;
        const double t0 = now_seconds();
        st = lowbit_classifier_predict(c, d->set.images + start * image_bytes, n, logits, pool,
                                       diag);
        result->seconds += now_seconds() - t0;
        for (int64_t i = 0; i < n && st == LOWBIT_OK; i++) {
            result->correct += argmax(logits + i * classes, classes) == d->set.labels[start + i];
        }
    }
    free(logits);
    result->images = images;
    result->accuracy = images ? (double)result->correct / (double)images : 0.0;
    return st;
}
