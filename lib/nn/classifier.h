/*
 * Image classifiers (MLP and CNN) as lowbit trains, quantizes and runs them. Internal header.
 *
 * Two representations of one network:
 *   lb_net      the float network: trained (train.c, train_layers.c), calibrated (observers on
 *               each layer's output), fine-tuned with fake quantization (QAT).
 *   lb_int_net  the quantized network (Jacob et al., CVPR 2018): batch norm folded into the
 *               convolutions, int8 (or int4) symmetric per-channel weights, int32 biases, uint8
 *               (or uint4) affine activations, fixed-point requantization, ReLU fused by
 *               clamping. Made by quant_convert.c (float side); static mode runs in integers only
 *               (integer_net.c, compiled under the integer-only check); dynamic and weight-only
 *               modes reuse its weights with float activations (classifier_dynamic.c).
 *
 * Activations are stored per sample as height x width x channels (channel last, "HWC"), so a
 * convolution is an im2col product whose rows are output pixels, and flattening is free: the
 * float and integer paths use the same element order everywhere. An image enters as its bytes:
 * the float input is pixel / 255, which the integer path represents exactly as uint8 with scale
 * 1/255 and zero point 0 (the input quantization is the identity on pixels).
 */
#ifndef LOWBIT_NN_CLASSIFIER_H
#define LOWBIT_NN_CLASSIFIER_H

#include "../common/common.h"
#include "../calib/observers.h"

#define LB_NET_MAX_LAYERS 32

typedef enum lb_layer_kind {
    LB_LAYER_LINEAR = 0,
    LB_LAYER_CONV2D,
    LB_LAYER_BATCHNORM, /* per channel, over every (sample, pixel) of the batch */
    LB_LAYER_RELU,
    LB_LAYER_RELU6,
    LB_LAYER_MAXPOOL,
    LB_LAYER_AVGPOOL,
    LB_LAYER_FLATTEN,   /* h x w x c -> 1 x 1 x (h*w*c); no data movement (HWC order) */
    LB_LAYER_KIND_COUNT
} lb_layer_kind;

/* Name of a kind as stored in files and printed ("linear", "conv2d", "batchnorm", "relu",
   "relu6", "maxpool", "avgpool", "flatten"); NULL for an invalid kind. */
const char *lb_layer_kind_name(lb_layer_kind kind);
/* The kind of a name, or -1. */
int lb_layer_kind_from_name(const char *name);

/* One sample's activation shape, stored h-major, channel last. A vector is 1 x 1 x c. */
typedef struct lb_shape {
    int32_t h, w, c;
} lb_shape;

static inline int64_t lb_shape_size(lb_shape s) { return (int64_t)s.h * s.w * s.c; }

typedef struct lb_layer {
    lb_layer_kind kind;
    lb_shape in, out;
    int32_t kernel, stride, pad; /* conv2d and pools: square kernel, zero padding (conv only) */
    /* Parameters: pointers into the net's params (trainable) and state blocks; NULL where the
       kind has none. */
    float *weight; /* linear: out.c x in.c (in.c = lb_shape_size(in)); conv2d: out.c x
                      (kernel * kernel * in.c), each row ordered (ky, kx, ci) like an im2col
                      patch of an HWC image */
    float *bias;   /* linear, conv2d: out.c values; batchnorm: beta (c values) */
    float *gamma;  /* batchnorm: c values */
    float *running_mean, *running_var; /* batchnorm state (c values each) */
    float eps;                         /* batchnorm, e.g. 1e-5 */
    float momentum;                    /* batchnorm running-statistics update, e.g. 0.1 */
    /* Range of this layer's output, as calibration observed it or QAT learned it (only quant
       points need one, see lb_net_is_quant_point). */
    int has_range;
    float range_lo, range_hi;
} lb_layer;

typedef struct lb_net {
    lb_shape input;  /* e.g. 28 x 28 x 1 */
    int32_t classes; /* the last layer's output size */
    int n_layers;
    lb_layer layers[LB_NET_MAX_LAYERS];
    float *params; /* every trainable value, one block (owned) */
    int64_t n_params;
    float *state;  /* batch-norm running statistics, one block (owned) */
    int64_t n_state;
} lb_net;

/* ---- building and editing (classifier_net.c) -------------------------------------------- */

/* A description of one layer for lb_net_build: only the fields its kind uses. */
typedef struct lb_layer_spec {
    lb_layer_kind kind;
    int32_t units;  /* linear: outputs; conv2d: output channels */
    int32_t kernel, stride, pad;
} lb_layer_spec;

/* Builds a net from an input shape and layer list: infers every shape, checks them (a conv or
   pool larger than its input, a linear after a non-flat input without flatten, ...), allocates
   the params and state, and initializes them from seed: He-normal weights (a fixed-sequence
   generator, so the same seed gives the same bytes on every machine), zero biases, BN gamma 1,
   beta 0, running mean 0, var 1. */
lowbit_status lb_net_build(lb_net *net, lb_shape input, const lb_layer_spec *specs, int n_specs,
                           uint64_t seed, lowbit_diag *diag);
/* The two architectures of the CLI: "mlp" (784-256-128-10 with ReLU) and "cnn" (conv-BN-ReLU
   stages with pooling and a linear head), for a given input shape and class count. */
lowbit_status lb_net_build_named(lb_net *net, const char *arch, lb_shape input, int32_t classes,
                                 uint64_t seed, lowbit_diag *diag);
/* Deep copy (params, state and ranges). */
lowbit_status lb_net_clone(const lb_net *src, lb_net *dst, lowbit_diag *diag);
void lb_net_free(lb_net *net);
/* Number of trainable weights (params) of the net. */
int64_t lb_net_param_count(const lb_net *net);

/* Folds every batch norm into the linear/conv2d layer right before it (running statistics):
   w'[o] = w[o] * gamma[o] / sqrt(var[o] + eps), b'[o] = (b[o] - mean[o]) * gamma[o] /
   sqrt(var[o] + eps) + beta[o]. The result has no batchnorm layers; in float it computes the
   same function as the original in inference mode (up to rounding). A batchnorm not right after
   a linear/conv2d is an error. `dst` is a new net (src unchanged). */
lowbit_status lb_net_fold_batchnorm(const lb_net *src, lb_net *dst, lowbit_diag *diag);

/* 1 when layer i's output is a quantization point of the integer model: layer i is a linear,
   conv2d, batchnorm, relu or relu6 and the next layer (if any) is none of batchnorm, relu,
   relu6. Pools and flatten keep their input's quantization. */
int lb_net_is_quant_point(const lb_net *net, int i);

/* ---- float inference (train_layers.c) ----------------------------------------------------- */

/* Logits (n x classes) of n images (n x lb_shape_size(input) bytes) in inference mode (batch
   norm with running statistics). When `observe` is non-NULL, it is called with every layer's
   output in layer order, e.g. to feed calibration observers. [train: the images are processed
   in chunks of at most 256 (fewer for huge activations), so observe runs once per layer per
   chunk with that chunk's n; the chunking depends on the net only.] Deterministic: the
   result does not depend on the pool's size. */
typedef void (*lb_layer_output_fn)(void *ctx, int layer, const float *output, int64_t n);
lowbit_status lb_net_forward(const lb_net *net, const uint8_t *images, int64_t n, float *logits,
                             lowbit_pool *pool, lb_layer_output_fn observe, void *observe_ctx,
                             lowbit_diag *diag);

/* ---- training (train.c) -------------------------------------------------------------------- */

typedef enum lb_optimizer { LB_OPT_SGD = 0, LB_OPT_ADAM = 1 } lb_optimizer;

typedef struct lb_train_progress {
    int epoch, epochs;            /* 1-based epoch */
    int64_t batch, batches;       /* batches done in this epoch, of */
    double loss;                  /* mean loss over the epoch so far */
    double accuracy;              /* training accuracy over the epoch so far */
} lb_train_progress;

/* Fake quantization for QAT: the forward pass rounds weights and activations as the integer
   model will, the backward pass uses the straight-through estimator (gradient 1 inside the
   clamping range, 0 outside). Weights: symmetric per output channel, scale max|w[o]| /
   (2^(bits-1) - 1) recomputed every step. Activations at every quant point: affine on
   [0 or lo, hi] with 2^bits levels, the range tracked by a moving average of the batches'
   min/max (starting from the layer's range when it has one), or learned (LSQ-style gradient for
   the range ends) when learn_ranges. QAT requires a net without batchnorm (fold it first:
   lb_net_fold_batchnorm), so training sees exactly the weights the integer model will use. */
typedef struct lb_qat_config {
    int enabled;
    int weight_bits;       /* 2..8 */
    int activation_bits;   /* 2..8 */
    int learn_ranges;
    float range_momentum;  /* moving-average factor of the ranges, e.g. 0.01 */
} lb_qat_config;

typedef struct lb_train_config {
    int epochs;
    int batch_size;
    lb_optimizer optimizer;
    float learning_rate;     /* peak; cosine decay to 0 over the run */
    float momentum;          /* SGD */
    float weight_decay;      /* decoupled, on linear/conv weights only */
    uint64_t seed;           /* shuffling (and nothing else: init is lb_net_build's) */
    lb_qat_config qat;
    void (*progress)(void *ctx, const lb_train_progress *p);
    void *progress_ctx;
} lb_train_config;

/* Trains on n images (bytes, n x lb_shape_size(net->input)) with labels in [0, classes).
   Mini-batches in a seeded shuffled order; softmax cross-entropy loss. Deterministic for a given
   seed whatever the pool's size: work is split over output elements, never over a reduction.
   With qat.enabled, the ranges learned are written to the net's quant points (has_range). */
lowbit_status lb_net_train(lb_net *net, const uint8_t *images, const uint8_t *labels, int64_t n,
                           const lb_train_config *config, lowbit_pool *pool, lowbit_diag *diag);

/* ---- the integer model (quant_convert.c, integer_net.c, classifier_dynamic.c) -------------- */

typedef enum lb_int_op_kind {
    LB_INT_LINEAR = 0,
    LB_INT_CONV2D,
    LB_INT_MAXPOOL,
    LB_INT_AVGPOOL,
    LB_INT_FLATTEN,
    LB_INT_OP_KIND_COUNT
} lb_int_op_kind;

typedef struct lb_int_op {
    lb_int_op_kind kind;
    lb_shape in, out;
    int32_t kernel, stride, pad;
    /* linear / conv2d (NULL otherwise); K = in.c for linear, kernel * kernel * in.c for conv */
    int8_t *weights;         /* out.c x K, symmetric, |w| <= 2^(weight_bits-1) - 1 */
    float *weight_scales;    /* out.c: real weight = scale * w */
    int32_t *weight_sums;    /* out.c: sum over k of weights */
    int32_t *bias;           /* out.c, in units of input_scale * weight_scales[o] */
    float *float_bias;       /* out.c: the folded float bias (dynamic and weight-only modes) */
    int32_t *multiplier;     /* out.c: M0 of input_scale * weight_scales[o] / output scale */
    int32_t *shift;          /* out.c */
    int fused_relu;          /* 0 none, 1 relu, 6 relu6 (already in out_min/out_max) */
    /* output quantization (every op; pools and flatten copy their input's) */
    lb_qparams out_q;        /* uint8 affine: [0, 2^activation_bits - 1] */
    int32_t out_min, out_max; /* clamp, in output units (ReLU/ReLU6 fused here) */
    /* [modes: added] weight-only mode, linear / conv2d: out.c x K floats scale[o] * w, made by
       lb_int_net_prepare and owned by the model (not part of `storage`, never saved); NULL in
       the other modes or when not prepared (forward then dequantizes for the call). */
    float *dequantized_weights;
} lb_int_op;

typedef enum lb_int_mode {
    LB_INT_MODE_STATIC = 0,  /* integer-only inference between input and logits */
    LB_INT_MODE_DYNAMIC,     /* int weights, activations quantized per input at run time */
    LB_INT_MODE_WEIGHT_ONLY, /* int weights dequantized, float activations */
} lb_int_mode;

typedef struct lb_int_net {
    lb_int_mode mode;
    lb_shape input;
    int32_t classes;
    int weight_bits, activation_bits;
    lb_qparams input_q;      /* scale 1/255, zero point 0 on [0, 255] */
    int n_ops;
    lb_int_op ops[LB_NET_MAX_LAYERS];
    void *storage;           /* owned: every array above */
} lb_int_net;

typedef struct lb_convert_config {
    lb_int_mode mode;
    int weight_bits;     /* 8 or 4 (2..8 accepted) */
    int activation_bits; /* 8 or 4 (2..8 accepted); static and dynamic modes */
} lb_convert_config;

/* Converts a float net to the integer model: folds batch norm, quantizes weights per output
   channel (symmetric, max-abs scale), and for static mode takes each quant point's range
   (has_range must be set: calibration or QAT) to uint8 affine parameters, computes int32 biases
   and fixed-point multipliers, and fuses ReLU/ReLU6 into the output clamp. */
lowbit_status lb_int_net_convert(const lb_net *net, const lb_convert_config *config,
                                 lb_int_net *out, lowbit_diag *diag);
void lb_int_net_free(lb_int_net *net);
/* [modes: added] Derived run-time data, made once when a model is converted or loaded: in
   weight-only mode each weighted op's dequantized_weights (replaced if already there); other
   modes get none. Call again after changing weights, scales or the mode. On failure nothing is
   left allocated. (classifier_dynamic.c) */
lowbit_status lb_int_net_prepare(lb_int_net *net, lowbit_diag *diag);
/* Bytes the model's parameters take when stored (packed 4-bit weights count half a byte). */
int64_t lb_int_net_param_bytes(const lb_int_net *net);

/* Logits (n x classes, float) of n images. Static mode: integer arithmetic only from the pixels
   to the last layer's uint8 output, which is then dequantized. Deterministic and independent of
   the pool's size. */
lowbit_status lb_int_net_forward(const lb_int_net *net, const uint8_t *images, int64_t n,
                                 float *logits, lowbit_pool *pool, lowbit_diag *diag);

/* ---- files (classifier_file.c) ------------------------------------------------------------- */

/* GGUF files with general.architecture "lowbit-classifier" (float nets, with their ranges when
   calibrated or QAT-trained) or "lowbit-classifier-int" (integer models); keys and tensors are
   documented in docs/CLASSIFIER_FILES.md. Written atomically (temporary file, then rename). */
lowbit_status lb_net_save(const lb_net *net, const char *path, lowbit_diag *diag);
lowbit_status lb_int_net_save(const lb_int_net *net, const char *path, lowbit_diag *diag);
/* Loads either kind: sets *is_int and fills the matching struct. Hostile files are refused with
   LOWBIT_ERR_BAD_FILE and a reason (shapes re-derived and checked, sizes bounded). */
lowbit_status lb_classifier_load(const char *path, int *is_int, lb_net *net, lb_int_net *int_net,
                                 lowbit_diag *diag);
/* The same from bytes in memory (copied: they may go away after the call); for fuzzing. */
lowbit_status lb_classifier_load_memory(const void *data, size_t size, int *is_int, lb_net *net,
                                        lb_int_net *int_net, lowbit_diag *diag);

#endif /* LOWBIT_NN_CLASSIFIER_H */
