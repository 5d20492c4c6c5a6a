/*
 * Building and editing float classifier nets: shape inference, parameter allocation, seeded
 * initialization, the named architectures, cloning and batch-norm folding.
 *
 * The same shape rules serve lb_net_build and the file loader (classifier_file.c rebuilds a net
 * from the layer descriptions it reads, then fills in the stored values), so a file can never
 * describe a shape the builder would refuse.
 */
#include "classifier.h"

#include <stdlib.h>

/* Bounds that keep every size computation far from int32/int64 overflow and refuse absurd
   (hostile) descriptions before anything is allocated. */
#define LB_NET_MAX_DIM (1 << 15)            /* height or width */
#define LB_NET_MAX_CHANNELS (1 << 20)       /* channels or linear units */
#define LB_NET_MAX_ACTIVATION ((int64_t)1 << 26) /* elements of one sample's activation */
#define LB_NET_MAX_PARAMS ((int64_t)1 << 28)     /* floats in the params or state block */

static const char *const layer_kind_names[LB_LAYER_KIND_COUNT] = {
    [LB_LAYER_LINEAR] = "linear",   [LB_LAYER_CONV2D] = "conv2d", [LB_LAYER_BATCHNORM] = "batchnorm",
    [LB_LAYER_RELU] = "relu",       [LB_LAYER_RELU6] = "relu6",   [LB_LAYER_MAXPOOL] = "maxpool",
    [LB_LAYER_AVGPOOL] = "avgpool", [LB_LAYER_FLATTEN] = "flatten",
};

const char *lb_layer_kind_name(lb_layer_kind kind) {
    if ((int)kind < 0 || kind >= LB_LAYER_KIND_COUNT) return NULL;
    return layer_kind_names[kind];
}

int lb_layer_kind_from_name(const char *name) {
    if (!name) return -1;
    for (int k = 0; k < LB_LAYER_KIND_COUNT; k++) {
        if (strcmp(layer_kind_names[k], name) == 0) return k;
    }
    return -1;
}

/* ---- seeded initialization ----------------------------------------------------------------- */

/* splitmix64: a fixed sequence of 64-bit integers for a seed, identical on every machine. */
typedef struct lb_init_rng {
    uint64_t state;
} lb_init_rng;

static uint64_t rng_next(lb_init_rng *rng) {
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A standard normal value by Box-Muller in double (one value per two draws, so the sequence
   does not depend on any cached second value). u1 lies in (0, 1], so log(u1) is finite. */
static double rng_normal(lb_init_rng *rng) {
    const double two_pow_minus_53 = 1.0 / 9007199254740992.0;
    double u1 = (double)((rng_next(rng) >> 11) + 1) * two_pow_minus_53;
    double u2 = (double)(rng_next(rng) >> 11) * two_pow_minus_53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ---- shape inference ----------------------------------------------------------------------- */

static int shape_is_valid(lb_shape s) {
    return s.h >= 1 && s.w >= 1 && s.c >= 1 && s.h <= LB_NET_MAX_DIM && s.w <= LB_NET_MAX_DIM &&
           s.c <= LB_NET_MAX_CHANNELS && lb_shape_size(s) <= LB_NET_MAX_ACTIVATION;
}

/* Output size of a sliding window along one axis: floor((in + 2 pad - kernel) / stride) + 1. */
static int32_t window_output(int32_t in, int32_t kernel, int32_t stride, int32_t pad) {
    return (in + 2 * pad - kernel) / stride + 1;
}

static lowbit_status check_window(const lb_layer_spec *s, int index, lb_shape in, int padded,
                                  lowbit_diag *diag) {
    const char *name = lb_layer_kind_name(s->kind);
    if (s->kernel < 1 || s->kernel > LB_NET_MAX_DIM || s->stride < 1 ||
        s->stride > LB_NET_MAX_DIM) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "layer %d (%s): kernel %d and stride %d must be at least 1", index, name,
                           (int)s->kernel, (int)s->stride);
    }
    if (!padded && s->pad != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "layer %d (%s): pooling takes no padding (pad %d)", index, name,
                           (int)s->pad);
    }
    /* A pad of kernel or more would give output pixels that see only padding. */
    if (s->pad < 0 || s->pad >= s->kernel) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "layer %d (%s): pad %d must lie in [0, kernel - 1 = %d]", index, name,
                           (int)s->pad, (int)s->kernel - 1);
    }
    if (in.h + 2 * s->pad < s->kernel || in.w + 2 * s->pad < s->kernel) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "layer %d (%s): kernel %d is larger than its %dx%d input (pad %d)",
                           index, name, (int)s->kernel, (int)in.h, (int)in.w, (int)s->pad);
    }
    return LOWBIT_OK;
}

/* Fills layer's kind, geometry and shapes from a spec and its input shape, and adds the floats
   it needs to *n_params and *n_state. */
static lowbit_status infer_layer(const lb_layer_spec *s, int index, lb_shape in, lb_layer *layer,
                                 int64_t *n_params, int64_t *n_state, lowbit_diag *diag) {
    memset(layer, 0, sizeof *layer);
    layer->kind = s->kind;
    layer->in = in;
    layer->out = in;
    const char *name = lb_layer_kind_name(s->kind);
    if (!name) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "layer %d: unknown kind %d", index, (int)s->kind);
    }
    lowbit_status st;
    switch (s->kind) {
    case LB_LAYER_LINEAR:
        if (in.h != 1 || in.w != 1) {
            return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                               "layer %d (linear): input is %dx%dx%d, not a vector (add a flatten "
                               "layer before it)",
                               index, (int)in.h, (int)in.w, (int)in.c);
        }
        if (s->units < 1 || s->units > LB_NET_MAX_CHANNELS) {
            return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                               "layer %d (linear): %d units is out of range", index,
                               (int)s->units);
        }
        layer->out = (lb_shape){1, 1, s->units};
        *n_params += (int64_t)s->units * in.c + s->units;
        break;
    case LB_LAYER_CONV2D:
        if (s->units < 1 || s->units > LB_NET_MAX_CHANNELS) {
            return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                               "layer %d (conv2d): %d output channels is out of range", index,
                               (int)s->units);
        }
        if ((st = check_window(s, index, in, 1, diag)) != LOWBIT_OK) return st;
        layer->kernel = s->kernel;
        layer->stride = s->stride;
        layer->pad = s->pad;
        layer->out = (lb_shape){window_output(in.h, s->kernel, s->stride, s->pad),
                                window_output(in.w, s->kernel, s->stride, s->pad), s->units};
        *n_params += (int64_t)s->units * s->kernel * s->kernel * in.c + s->units;
        break;
    case LB_LAYER_BATCHNORM:
        layer->eps = 1e-5f;
        layer->momentum = 0.1f;
        *n_params += 2 * (int64_t)in.c;
        *n_state += 2 * (int64_t)in.c;
        break;
    case LB_LAYER_RELU:
    case LB_LAYER_RELU6:
        break;
    case LB_LAYER_MAXPOOL:
    case LB_LAYER_AVGPOOL:
        if ((st = check_window(s, index, in, 0, diag)) != LOWBIT_OK) return st;
        layer->kernel = s->kernel;
        layer->stride = s->stride;
        layer->out = (lb_shape){window_output(in.h, s->kernel, s->stride, 0),
                                window_output(in.w, s->kernel, s->stride, 0), in.c};
        break;
    case LB_LAYER_FLATTEN:
        layer->out = (lb_shape){1, 1, (int32_t)lb_shape_size(in)};
        break;
    default:
        break;
    }
    if (!shape_is_valid(layer->out)) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "layer %d (%s): output %dx%dx%d is out of range", index, name,
                           (int)layer->out.h, (int)layer->out.w, (int)layer->out.c);
    }
    if (*n_params > LB_NET_MAX_PARAMS || *n_state > LB_NET_MAX_PARAMS) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "layer %d (%s): the net has more than %lld parameters", index, name,
                           (long long)LB_NET_MAX_PARAMS);
    }
    return LOWBIT_OK;
}

/* Points each layer's parameter pointers into the two blocks, in layer order: weight, bias
   (linear, conv2d); gamma, beta (batchnorm params); running mean, running var (state). */
static void assign_param_pointers(lb_net *net) {
    float *p = net->params, *s = net->state;
    for (int i = 0; i < net->n_layers; i++) {
        lb_layer *l = &net->layers[i];
        l->weight = l->bias = l->gamma = l->running_mean = l->running_var = NULL;
        if (l->kind == LB_LAYER_LINEAR || l->kind == LB_LAYER_CONV2D) {
            int64_t fan_in = lb_shape_size(l->in);
            if (l->kind == LB_LAYER_CONV2D) fan_in = (int64_t)l->kernel * l->kernel * l->in.c;
            l->weight = p;
            p += fan_in * l->out.c;
            l->bias = p;
            p += l->out.c;
        } else if (l->kind == LB_LAYER_BATCHNORM) {
            l->gamma = p;
            p += l->in.c;
            l->bias = p;
            p += l->in.c;
            l->running_mean = s;
            s += l->in.c;
            l->running_var = s;
            s += l->in.c;
        }
    }
}

/* Number of weights per output row of a linear or conv2d layer. */
static int64_t layer_fan_in(const lb_layer *l) {
    if (l->kind == LB_LAYER_CONV2D) return (int64_t)l->kernel * l->kernel * l->in.c;
    return lb_shape_size(l->in);
}

static void initialize_params(lb_net *net, uint64_t seed) {
    lb_init_rng rng = {seed};
    for (int i = 0; i < net->n_layers; i++) {
        lb_layer *l = &net->layers[i];
        if (l->kind == LB_LAYER_LINEAR || l->kind == LB_LAYER_CONV2D) {
            /* He et al. 2015: variance 2 / fan_in keeps ReLU activations' scale layer to layer. */
            int64_t fan_in = layer_fan_in(l);
            double std = sqrt(2.0 / (double)fan_in);
            for (int64_t k = 0; k < fan_in * l->out.c; k++) {
                l->weight[k] = (float)(std * rng_normal(&rng));
            }
            memset(l->bias, 0, (size_t)l->out.c * sizeof(float));
        } else if (l->kind == LB_LAYER_BATCHNORM) {
            for (int32_t c = 0; c < l->in.c; c++) {
                l->gamma[c] = 1.0f;
                l->bias[c] = 0.0f;
                l->running_mean[c] = 0.0f;
                l->running_var[c] = 1.0f;
            }
        }
    }
}

/* Allocates both blocks (at least one float each, so a parameterless net still owns valid,
   distinct pointers) and points the layers into them. */
static lowbit_status allocate_blocks(lb_net *net, lowbit_diag *diag) {
    net->params = malloc((size_t)LB_MAX(net->n_params, 1) * sizeof(float));
    net->state = malloc((size_t)LB_MAX(net->n_state, 1) * sizeof(float));
    if (!net->params || !net->state) {
        free(net->params);
        free(net->state);
        net->params = net->state = NULL;
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "cannot allocate %lld parameters", (long long)net->n_params);
    }
    assign_param_pointers(net);
    return LOWBIT_OK;
}

lowbit_status lb_net_build(lb_net *net, lb_shape input, const lb_layer_spec *specs, int n_specs,
                           uint64_t seed, lowbit_diag *diag) {
    if (!net) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "no net to build");
    }
    memset(net, 0, sizeof *net);
    if (!specs || n_specs < 1 || n_specs > LB_NET_MAX_LAYERS) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "a net needs 1 to %d layers (got %d)", LB_NET_MAX_LAYERS, n_specs);
    }
    if (!shape_is_valid(input)) {
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, -1, UINT64_MAX,
                           "input shape %dx%dx%d is out of range", (int)input.h, (int)input.w,
                           (int)input.c);
    }
    lb_net built;
    memset(&built, 0, sizeof built);
    built.input = input;
    built.n_layers = n_specs;
    lb_shape shape = input;
    for (int i = 0; i < n_specs; i++) {
        lowbit_status st = infer_layer(&specs[i], i, shape, &built.layers[i], &built.n_params,
                                       &built.n_state, diag);
        if (st != LOWBIT_OK) return st;
        shape = built.layers[i].out;
    }
    built.classes = (int32_t)lb_shape_size(shape);
    lowbit_status st = allocate_blocks(&built, diag);
    if (st != LOWBIT_OK) return st;
    initialize_params(&built, seed);
    *net = built;
    return LOWBIT_OK;
}

/* ---- named architectures ------------------------------------------------------------------- */

static const char *const known_archs = "mlp, cnn";

lowbit_status lb_net_build_named(lb_net *net, const char *arch, lb_shape input, int32_t classes,
                                 uint64_t seed, lowbit_diag *diag) {
    if (net) memset(net, 0, sizeof *net);
    if (classes < 1 || classes > LB_NET_MAX_CHANNELS) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "class count %d is out of range", (int)classes);
    }
    if (arch && strcmp(arch, "mlp") == 0) {
        const lb_layer_spec mlp[] = {
            {.kind = LB_LAYER_FLATTEN},
            {.kind = LB_LAYER_LINEAR, .units = 256},
            {.kind = LB_LAYER_RELU},
            {.kind = LB_LAYER_LINEAR, .units = 128},
            {.kind = LB_LAYER_RELU},
            {.kind = LB_LAYER_LINEAR, .units = classes},
        };
        return lb_net_build(net, input, mlp, LB_ARRAY_LEN(mlp), seed, diag);
    }
    if (arch && strcmp(arch, "cnn") == 0) {
        /* Three conv-BN-ReLU-pool stages (28 -> 14 -> 7 -> 3 for Fashion-MNIST), then a linear
           head on the flattened 3x3x64 features. */
#define LB_CNN_STAGE(channels)                                                                    \
    {.kind = LB_LAYER_CONV2D, .units = (channels), .kernel = 3, .stride = 1, .pad = 1},           \
        {.kind = LB_LAYER_BATCHNORM}, {.kind = LB_LAYER_RELU},                                    \
        {.kind = LB_LAYER_MAXPOOL, .kernel = 2, .stride = 2}
        const lb_layer_spec cnn[] = {
            LB_CNN_STAGE(16),
            LB_CNN_STAGE(32),
            LB_CNN_STAGE(64),
            {.kind = LB_LAYER_FLATTEN},
            {.kind = LB_LAYER_LINEAR, .units = classes},
        };
#undef LB_CNN_STAGE
        return lb_net_build(net, input, cnn, LB_ARRAY_LEN(cnn), seed, diag);
    }
    return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                       "unknown architecture '%s' (known: %s)", arch ? arch : "(null)",
                       known_archs);
}

/* ---- copies ---------------------------------------------------------------------------------- */

/* Re-points a pointer from one block into the same offset of another. */
static float *rebase(const float *p, const float *old_base, float *new_base) {
    return p ? new_base + (p - old_base) : NULL;
}

lowbit_status lb_net_clone(const lb_net *src, lb_net *dst, lowbit_diag *diag) {
    if (!src || !dst || src == dst) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "clone needs a distinct source and destination");
    }
    lb_net copy = *src;
    copy.params = copy.state = NULL;
    lowbit_status st = allocate_blocks(&copy, diag);
    if (st != LOWBIT_OK) {
        memset(dst, 0, sizeof *dst);
        return st;
    }
    if (src->n_params > 0) memcpy(copy.params, src->params, (size_t)src->n_params * sizeof(float));
    if (src->n_state > 0) memcpy(copy.state, src->state, (size_t)src->n_state * sizeof(float));
    /* Keep the source's own pointer layout rather than assuming lb_net_build's order. */
    for (int i = 0; i < copy.n_layers; i++) {
        const lb_layer *s = &src->layers[i];
        lb_layer *d = &copy.layers[i];
        d->weight = rebase(s->weight, src->params, copy.params);
        d->bias = rebase(s->bias, src->params, copy.params);
        d->gamma = rebase(s->gamma, src->params, copy.params);
        d->running_mean = rebase(s->running_mean, src->state, copy.state);
        d->running_var = rebase(s->running_var, src->state, copy.state);
    }
    *dst = copy;
    return LOWBIT_OK;
}

void lb_net_free(lb_net *net) {
    if (!net) return;
    free(net->params);
    free(net->state);
    memset(net, 0, sizeof *net);
}

int64_t lb_net_param_count(const lb_net *net) { return net ? net->n_params : 0; }

/* ---- batch-norm folding ---------------------------------------------------------------------- */

static int is_affine(lb_layer_kind kind) {
    return kind == LB_LAYER_LINEAR || kind == LB_LAYER_CONV2D;
}

/* Folds bn (over out.c channels) into the weights and bias of the affine layer before it:
   w'[o] = w[o] * s, b'[o] = (b[o] - mean[o]) * s + beta[o], s = gamma[o] / sqrt(var[o] + eps),
   in double, then rounded once to float. A missing bias counts as zero. */
static lowbit_status fold_one(const lb_layer *affine, const lb_layer *bn, int bn_index,
                              lb_layer *out, lowbit_diag *diag) {
    int64_t fan_in = layer_fan_in(affine);
    for (int32_t o = 0; o < affine->out.c; o++) {
        double var_eps = (double)bn->running_var[o] + (double)bn->eps;
        if (!(var_eps > 0.0) || !isfinite(var_eps)) {
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, o, UINT64_MAX,
                               "layer %d (batchnorm): channel %d has variance + eps %g, not "
                               "positive",
                               bn_index, (int)o, var_eps);
        }
        double s = (double)bn->gamma[o] / sqrt(var_eps);
        const float *w = affine->weight + (int64_t)o * fan_in;
        float *wo = out->weight + (int64_t)o * fan_in;
        for (int64_t k = 0; k < fan_in; k++) wo[k] = (float)((double)w[k] * s);
        double b = affine->bias ? (double)affine->bias[o] : 0.0;
        out->bias[o] = (float)((b - (double)bn->running_mean[o]) * s + (double)bn->bias[o]);
    }
    return LOWBIT_OK;
}

lowbit_status lb_net_fold_batchnorm(const lb_net *src, lb_net *dst, lowbit_diag *diag) {
    if (!src || !dst || src == dst) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "folding needs a distinct source and destination");
    }
    memset(dst, 0, sizeof *dst);
    if (src->n_layers < 1 || src->n_layers > LB_NET_MAX_LAYERS) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "a net needs 1 to %d layers (got %d)", LB_NET_MAX_LAYERS,
                           src->n_layers);
    }
    lb_layer_spec specs[LB_NET_MAX_LAYERS] = {{0}};
    int kept_from[LB_NET_MAX_LAYERS]; /* the src layer each dst layer comes from */
    int n = 0;
    for (int i = 0; i < src->n_layers; i++) {
        const lb_layer *l = &src->layers[i];
        if (l->kind == LB_LAYER_BATCHNORM) {
            if (i == 0 || !is_affine(src->layers[i - 1].kind)) {
                return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, -1, UINT64_MAX,
                                   "layer %d (batchnorm) does not follow a linear or conv2d "
                                   "layer, so it cannot be folded",
                                   i);
            }
            continue;
        }
        specs[n] = (lb_layer_spec){l->kind, l->out.c, l->kernel, l->stride, l->pad};
        kept_from[n++] = i;
    }
    lb_net folded;
    lowbit_status st = lb_net_build(&folded, src->input, specs, n, 0, diag);
    if (st != LOWBIT_OK) return st;
    for (int j = 0; j < n; j++) {
        int i = kept_from[j];
        const lb_layer *l = &src->layers[i];
        lb_layer *d = &folded.layers[j];
        const lb_layer *bn = i + 1 < src->n_layers && src->layers[i + 1].kind == LB_LAYER_BATCHNORM
                                 ? &src->layers[i + 1]
                                 : NULL;
        /* The folded layer outputs what the batch norm did, so it takes the BN's range. */
        const lb_layer *range_from = bn ? bn : l;
        d->has_range = range_from->has_range;
        d->range_lo = range_from->range_lo;
        d->range_hi = range_from->range_hi;
        if (memcmp(&d->in, &l->in, sizeof d->in) != 0 ||
            memcmp(&d->out, &l->out, sizeof d->out) != 0) {
            lb_net_free(&folded);
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                               "layer %d: its shapes disagree with its description", i);
        }
        if (!is_affine(l->kind)) continue;
        if (!l->weight || (bn && (!bn->gamma || !bn->bias || !bn->running_mean ||
                                  !bn->running_var))) {
            lb_net_free(&folded);
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                               "layer %d: missing parameters", i);
        }
        if (bn) {
            st = fold_one(l, bn, i + 1, d, diag);
            if (st != LOWBIT_OK) {
                lb_net_free(&folded);
                return st;
            }
        } else {
            memcpy(d->weight, l->weight, (size_t)(layer_fan_in(l) * l->out.c) * sizeof(float));
            if (l->bias) {
                memcpy(d->bias, l->bias, (size_t)l->out.c * sizeof(float));
            } else {
                memset(d->bias, 0, (size_t)l->out.c * sizeof(float));
            }
        }
    }
    *dst = folded;
    return LOWBIT_OK;
}

int lb_net_is_quant_point(const lb_net *net, int i) {
    if (!net || i < 0 || i >= net->n_layers) return 0;
    lb_layer_kind k = net->layers[i].kind;
    if (!(is_affine(k) || k == LB_LAYER_BATCHNORM || k == LB_LAYER_RELU || k == LB_LAYER_RELU6)) {
        return 0;
    }
    if (i + 1 >= net->n_layers) return 1;
    lb_layer_kind next = net->layers[i + 1].kind;
    return !(next == LB_LAYER_BATCHNORM || next == LB_LAYER_RELU || next == LB_LAYER_RELU6);
}
