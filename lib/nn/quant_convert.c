/*
 * Float net -> integer model (classifier.h, lb_int_net_convert), the float side of Jacob et al.
 * 2018: batch norm folded into the layer before it, each linear/conv2d grouped with a following
 * ReLU/ReLU6 into one op (the ReLU becomes the output clamp), weights symmetric per output
 * channel, and in static mode uint8 output parameters from each quant point's range, int32
 * biases and fixed-point multipliers. Everything the integer runner needs is computed here,
 * once, so integer_net.c never touches a float.
 */
#include "classifier.h"
#include "integer.h"

#include <stdlib.h>

/* The input is the image's bytes: real value pixel / 255, so uint8 with scale 1/255 and zero
   point 0 represents it exactly. */
#define INPUT_LEVELS 255

/* A quant point's range narrower than this is widened to it: a step of ~4e-9 already resolves
   anything a classifier computes, and a narrower one would need a rescale above 2^31. */
#define MIN_RANGE_WIDTH 1e-6

/* Bounds that keep every channel's integer arithmetic representable (static mode):
   - |bias| / (S_in * S_w) at most 2^30, so the int32 bias (plus the accumulator) fits;
   - the rescale S_in * S_w / S_out at least 2^-40 (lb_quantize_multiplier needs >= ~2^-63).
   A channel whose weights are too small for either only gets a coarser weight scale: its
   weights then contribute less than an output step, which is what they were worth anyway. */
#define MAX_BIAS_UNITS 1073741824.0 /* 2^30 */
#define MIN_RESCALE 0x1p-40

/* One op of the integer model in terms of the nets' layers. */
typedef struct op_plan {
    lb_int_op_kind kind;
    int folded_layer; /* the linear/conv2d/pool/flatten layer in the folded net */
    int fused_relu;   /* 0, 1 (relu) or 6 (relu6) */
    int range_layer;  /* the quant point in the caller's net (whose range applies), or -1 */
} op_plan;

static const char *kind_name(lb_layer_kind kind) {
    const char *name = lb_layer_kind_name(kind);
    return name ? name : "?";
}

static lowbit_status check_config(const lb_net *net, const lb_convert_config *config,
                                  lb_int_net *out, lowbit_diag *diag) {
    const lowbit_status bad = LOWBIT_ERR_INVALID_ARGUMENT;
    if (!net || !config || !out)
        return lb_diag_set(diag, bad, -1, UINT64_MAX, "convert: missing net, config or output");
    if (config->mode < LB_INT_MODE_STATIC || config->mode > LB_INT_MODE_WEIGHT_ONLY)
        return lb_diag_set(diag, bad, -1, UINT64_MAX, "convert: unknown mode %d",
                           (int)config->mode);
    if (config->weight_bits < 2 || config->weight_bits > 8)
        return lb_diag_set(diag, bad, -1, UINT64_MAX, "convert: weight bits %d outside 2..8",
                           config->weight_bits);
    if (config->activation_bits < 2 || config->activation_bits > 8)
        return lb_diag_set(diag, bad, -1, UINT64_MAX,
                           "convert: activation bits %d outside 2..8", config->activation_bits);
    if (net->n_layers < 1 || net->n_layers > LB_NET_MAX_LAYERS)
        return lb_diag_set(diag, bad, -1, UINT64_MAX, "convert: net has %d layers",
                           net->n_layers);
    return LOWBIT_OK;
}

static int has_batchnorm(const lb_net *net) {
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].kind == LB_LAYER_BATCHNORM) return 1;
    return 0;
}

/* Groups the folded net's layers into ops. `original` is the caller's net: folding only removes
   its batch norms, so folded layer j is original layer orig[j], and an op's quant point is the
   last original layer before the next op's first one (a conv's batch norm or ReLU). */
static lowbit_status plan_ops(const lb_net *original, const lb_net *folded, op_plan *plan,
                              int *n_ops, lowbit_diag *diag) {
    int orig[LB_NET_MAX_LAYERS + 1];
    int j = 0;
    for (int i = 0; i < original->n_layers; i++)
        if (original->layers[i].kind != LB_LAYER_BATCHNORM) orig[j++] = i;
    if (j != folded->n_layers)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "convert: folding left %d layers, expected %d", folded->n_layers, j);
    orig[j] = original->n_layers;
    int count = 0;
    for (j = 0; j < folded->n_layers; j++) {
        const lb_layer *layer = &folded->layers[j];
        op_plan p = {.folded_layer = j, .range_layer = -1};
        switch (layer->kind) {
        case LB_LAYER_LINEAR:
        case LB_LAYER_CONV2D: {
            p.kind = layer->kind == LB_LAYER_LINEAR ? LB_INT_LINEAR : LB_INT_CONV2D;
            lb_layer_kind next = j + 1 < folded->n_layers ? folded->layers[j + 1].kind
                                                          : LB_LAYER_KIND_COUNT;
            if (next == LB_LAYER_RELU || next == LB_LAYER_RELU6) {
                p.fused_relu = next == LB_LAYER_RELU ? 1 : 6;
                j++;
            }
            p.range_layer = orig[j + 1] - 1;
            break;
        }
        case LB_LAYER_MAXPOOL: p.kind = LB_INT_MAXPOOL; break;
        case LB_LAYER_AVGPOOL: p.kind = LB_INT_AVGPOOL; break;
        case LB_LAYER_FLATTEN: p.kind = LB_INT_FLATTEN; break;
        default:
            return lb_diag_set(diag, LOWBIT_ERR_UNSUPPORTED, orig[j], UINT64_MAX,
                               "convert: layer %d (%s) does not follow a linear or conv2d layer; "
                               "the integer model fuses activations into them",
                               orig[j], kind_name(layer->kind));
        }
        plan[count++] = p;
    }
    *n_ops = count;
    return LOWBIT_OK;
}

/* ---- storage: every array of every op in one block ------------------------------------------ */

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

static size_t op_array_bytes(int64_t channels, int64_t k) {
    return align8((size_t)(channels * k)) + 6 * align8((size_t)channels * 4);
}

static void *carve(unsigned char **cursor, size_t bytes) {
    void *p = *cursor;
    *cursor += align8(bytes);
    return p;
}

static int64_t op_reduction(const lb_int_op *op) {
    return op->kind == LB_INT_CONV2D ? (int64_t)op->kernel * op->kernel * op->in.c
                                     : lb_shape_size(op->in);
}

static lowbit_status allocate_storage(lb_int_net *out, lowbit_diag *diag) {
    size_t total = 8;
    for (int i = 0; i < out->n_ops; i++) {
        const lb_int_op *op = &out->ops[i];
        if (op->kind == LB_INT_LINEAR || op->kind == LB_INT_CONV2D)
            total += op_array_bytes(op->out.c, op_reduction(op));
    }
    unsigned char *block = calloc(1, total);
    if (!block)
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "convert: cannot allocate %zu bytes", total);
    out->storage = block;
    for (int i = 0; i < out->n_ops; i++) {
        lb_int_op *op = &out->ops[i];
        if (op->kind != LB_INT_LINEAR && op->kind != LB_INT_CONV2D) continue;
        const size_t channels = (size_t)op->out.c;
        op->weights = carve(&block, channels * (size_t)op_reduction(op));
        op->weight_scales = carve(&block, channels * sizeof(float));
        op->weight_sums = carve(&block, channels * sizeof(int32_t));
        op->bias = carve(&block, channels * sizeof(int32_t));
        op->float_bias = carve(&block, channels * sizeof(float));
        op->multiplier = carve(&block, channels * sizeof(int32_t));
        op->shift = carve(&block, channels * sizeof(int32_t));
    }
    return LOWBIT_OK;
}

/* ---- quantization parameters ---------------------------------------------------------------- */

static lowbit_status output_qparams(const lb_net *net, int layer, int activation_bits,
                                    lb_qparams *q, lowbit_diag *diag) {
    const lb_layer *l = &net->layers[layer];
    if (!l->has_range)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, layer, UINT64_MAX,
                           "convert: layer %d (%s) has no activation range; static mode needs "
                           "every quant point calibrated or QAT-trained",
                           layer, kind_name(l->kind));
    double lo = LB_MIN((double)l->range_lo, 0.0), hi = LB_MAX((double)l->range_hi, 0.0);
    if (!isfinite(lo) || !isfinite(hi))
        return lb_diag_set(diag, LOWBIT_ERR_NONFINITE, layer, UINT64_MAX,
                           "convert: layer %d (%s) has range [%g, %g]", layer,
                           kind_name(l->kind), lo, hi);
    /* A constant output (a dead ReLU layer: [0, 0]) still needs a usable scale. */
    if (hi - lo < MIN_RANGE_WIDTH) hi = lo + MIN_RANGE_WIDTH;
    return lb_qparams_affine((float)lo, (float)hi, 0, (1 << activation_bits) - 1, q, diag);
}

/* Quantizes one layer's weights into op (per output channel, symmetric), its biases, and in
   static mode the int32 bias and multipliers for input scale s_in and output scale s_out. */
static lowbit_status quantize_weights(const lb_layer *layer, int layer_index, int weight_bits,
                                      int is_static, double s_in, double s_out, lb_int_op *op,
                                      lowbit_diag *diag) {
    const int64_t channels = op->out.c, k_count = op_reduction(op);
    const int32_t q_max = (1 << (weight_bits - 1)) - 1;
    for (int64_t o = 0; o < channels; o++) {
        const float *w = layer->weight + o * k_count;
        const double b = layer->bias ? (double)layer->bias[o] : 0.0;
        double amax = 0.0;
        for (int64_t k = 0; k < k_count; k++) amax = LB_MAX(amax, fabs((double)w[k]));
        if (!isfinite(amax) || !isfinite(b))
            return lb_diag_set(diag, LOWBIT_ERR_NONFINITE, layer_index, UINT64_MAX,
                               "convert: layer %d (%s) channel %lld has a non-finite weight or "
                               "bias", layer_index, kind_name(layer->kind), (long long)o);
        double scale = amax / q_max;
        if (is_static) {
            /* An all-zero row has no scale of its own: S_out / S_in makes its rescale exactly 1,
               so the bias alone is rounded straight to output steps. */
            if (!(scale > 0.0)) scale = s_out / s_in;
            scale = LB_MAX(scale, fabs(b) / (s_in * MAX_BIAS_UNITS));
            scale = LB_MAX(scale, MIN_RESCALE * s_out / s_in);
        } else if (!((float)scale > 0.0f)) {
            scale = 1.0; /* zero weights: any scale represents them; 1 keeps dequantizing exact */
        }
        const float stored = (float)scale;
        op->weight_scales[o] = stored;
        op->float_bias[o] = (float)b;
        int8_t *q = op->weights + o * k_count;
        for (int64_t k = 0; k < k_count; k++) {
            double r = round((double)w[k] / (double)stored);
            q[k] = (int8_t)LB_MAX(-q_max, LB_MIN(q_max, r));
        }
        double bias_units = is_static ? round(b / (s_in * (double)stored)) : 0.0;
        op->bias[o] = (int32_t)LB_MAX(-MAX_BIAS_UNITS, LB_MIN(MAX_BIAS_UNITS, bias_units));
    }
    lb_int8_weight_sums(op->weights, channels, k_count, op->weight_sums);
    if (!is_static) {
        /* No output scale exists before run time: a valid placeholder rescale of 1/2. */
        for (int64_t o = 0; o < channels; o++) {
            op->multiplier[o] = (int32_t)1 << 30;
            op->shift[o] = 0;
        }
        return LOWBIT_OK;
    }
    lowbit_status st = lb_linear_multipliers((float)s_in, op->weight_scales, (float)s_out,
                                             channels, op->multiplier, op->shift, diag);
    if (st != LOWBIT_OK && diag) {
        char inner[sizeof diag->message];
        memcpy(inner, diag->message, sizeof inner);
        lb_diag_set(diag, st, layer_index, UINT64_MAX, "convert: layer %d (%s): %s",
                    layer_index, kind_name(layer->kind), inner);
    }
    return st;
}

/* The output clamp in output units: the type's range, cut at zero by ReLU and at 6 by ReLU6. */
static void set_clamp(lb_int_op *op) {
    op->out_min = op->out_q.qmin;
    op->out_max = op->out_q.qmax;
    if (op->fused_relu) op->out_min = LB_MAX(op->out_min, op->out_q.zero_point);
    if (op->fused_relu == 6) op->out_max = lb_qparams_quantize(&op->out_q, 6.0f);
}

static void describe_op(const lb_layer *layer, const op_plan *p, lb_int_op *op) {
    op->kind = p->kind;
    op->in = layer->in;
    op->out = layer->out;
    op->kernel = layer->kernel;
    op->stride = layer->stride;
    op->pad = layer->pad;
    op->fused_relu = p->fused_relu;
}

static lowbit_status check_op_shape(const lb_int_op *op, int layer_index, lowbit_diag *diag) {
    if (op->kind != LB_INT_LINEAR && op->kind != LB_INT_CONV2D) return LOWBIT_OK;
    int64_t k = op_reduction(op);
    if (op->out.c < 1 || k < 1 || k > LB_INT8_LINEAR_MAX_K)
        return lb_diag_set(diag, LOWBIT_ERR_SHAPE, layer_index, UINT64_MAX,
                           "convert: layer %d has %lld x %lld weights (the integer accumulator "
                           "allows a reduction of at most %d)",
                           layer_index, (long long)op->out.c, (long long)k, LB_INT8_LINEAR_MAX_K);
    return LOWBIT_OK;
}

static lowbit_status fill_ops(const lb_net *original, const lb_net *folded, const op_plan *plan,
                              const lb_convert_config *config, lb_int_net *out,
                              lowbit_diag *diag) {
    const int is_static = config->mode == LB_INT_MODE_STATIC;
    const int32_t a_max = (1 << config->activation_bits) - 1;
    lb_qparams current = out->input_q;
    for (int i = 0; i < out->n_ops; i++) {
        lb_int_op *op = &out->ops[i];
        const lb_layer *layer = &folded->layers[plan[i].folded_layer];
        if (op->kind != LB_INT_LINEAR && op->kind != LB_INT_CONV2D) {
            op->out_q = current; /* pools and flatten keep their input's quantization */
            op->out_min = current.qmin;
            op->out_max = current.qmax;
            continue;
        }
        const int r = plan[i].range_layer;
        lowbit_status st;
        if (is_static || original->layers[r].has_range)
            st = output_qparams(original, r, config->activation_bits, &op->out_q, diag);
        else
            st = lb_qparams_affine(0.0f, 1.0f, 0, a_max, &op->out_q, diag); /* unused there */
        if (st != LOWBIT_OK) return st;
        if (!layer->weight)
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, r, UINT64_MAX,
                               "convert: layer %d has no weights", r);
        st = quantize_weights(layer, r, config->weight_bits, is_static, current.scale,
                              op->out_q.scale, op, diag);
        if (st != LOWBIT_OK) return st;
        set_clamp(op);
        current = op->out_q;
    }
    return LOWBIT_OK;
}

lowbit_status lb_int_net_convert(const lb_net *net, const lb_convert_config *config,
                                 lb_int_net *out, lowbit_diag *diag) {
    lowbit_status st = check_config(net, config, out, diag);
    if (st != LOWBIT_OK) return st;
    memset(out, 0, sizeof *out);
    lb_net folded_storage;
    const lb_net *folded = net;
    if (has_batchnorm(net)) {
        st = lb_net_fold_batchnorm(net, &folded_storage, diag);
        if (st != LOWBIT_OK) return st;
        folded = &folded_storage;
    }
    op_plan plan[LB_NET_MAX_LAYERS];
    int n_ops = 0;
    st = plan_ops(net, folded, plan, &n_ops, diag);
    if (st == LOWBIT_OK) {
        out->mode = config->mode;
        out->input = net->input;
        out->classes = net->classes;
        out->weight_bits = config->weight_bits;
        out->activation_bits = config->activation_bits;
        out->input_q = (lb_qparams){1.0f / INPUT_LEVELS, 0, 0, INPUT_LEVELS};
        out->n_ops = n_ops;
        for (int i = 0; i < n_ops && st == LOWBIT_OK; i++) {
            describe_op(&folded->layers[plan[i].folded_layer], &plan[i], &out->ops[i]);
            st = check_op_shape(&out->ops[i], plan[i].range_layer, diag);
        }
    }
    if (st == LOWBIT_OK) st = allocate_storage(out, diag);
    if (st == LOWBIT_OK) st = fill_ops(net, folded, plan, config, out, diag);
    if (st == LOWBIT_OK) st = lb_int_net_prepare(out, diag);
    if (folded != net) lb_net_free(&folded_storage);
    if (st != LOWBIT_OK) lb_int_net_free(out);
    return st;
}

void lb_int_net_free(lb_int_net *net) {
    if (!net) return;
    for (int i = 0; i < LB_NET_MAX_LAYERS; i++) free(net->ops[i].dequantized_weights);
    free(net->storage);
    memset(net, 0, sizeof *net);
}

int64_t lb_int_net_param_bytes(const lb_int_net *net) {
    if (!net) return 0;
    int64_t total = 0;
    for (int i = 0; i < net->n_ops; i++) {
        const lb_int_op *op = &net->ops[i];
        if (op->kind != LB_INT_LINEAR && op->kind != LB_INT_CONV2D) continue;
        const int64_t weights = op->out.c * op_reduction(op);
        /* Up to 4 bits pack two to a byte; more take a byte each. */
        total += net->weight_bits <= 4 ? (weights + 1) / 2 : weights;
        /* Per channel: the scale and the bias (int32 in static mode, float otherwise), and in
           static mode the multiplier and its shift. */
        total += op->out.c * (net->mode == LB_INT_MODE_STATIC ? 16 : 8);
    }
    return total;
}
