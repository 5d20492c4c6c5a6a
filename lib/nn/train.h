/*
 * Internals shared by train_layers.c (the float matrix product, each layer's forward and
 * backward pass, lb_net_forward) and train.c (lb_net_train: batches, loss, optimizers, QAT).
 * Not part of the public API; tests include it to check each layer's gradients.
 *
 * A batch of activations is n samples one after another, each stored h x w x c (HWC), so a
 * conv2d output is an (n * out.h * out.w) x out.c matrix and a linear output an n x out.c one.
 */
#ifndef LOWBIT_NN_TRAIN_H
#define LOWBIT_NN_TRAIN_H

#include "classifier.h"

/* ---- matrix product ------------------------------------------------------------------------ */

/* A read-only matrix given by its first element and strides: element (r, k) is at
   p[r * row_stride + k * col_stride], so a transposed operand is just swapped strides. */
typedef struct lb_matrix_view {
    const float *p;
    int64_t row_stride, col_stride;
} lb_matrix_view;

/* C (m x n, row stride ldc) = A (m x k) B (k x n). Every element is summed in increasing k from
   0.0f with one multiply and one add per term, by the same code whatever the pool's size: the
   output is split into a grid of tiles that depends on (m, n) only, and threads take whole
   tiles. */
void lb_sgemm(int64_t m, int64_t n, int64_t k, lb_matrix_view a, lb_matrix_view b, float *c,
              int64_t ldc, lowbit_pool *pool);

/* ---- layers -------------------------------------------------------------------------------- */

/* What a layer's training forward pass keeps for its backward pass (NULL where unused). */
typedef struct lb_layer_cache {
    float *normalized;  /* batchnorm: x-hat, same size as the output */
    float *inv_std;     /* batchnorm: 1 / sqrt(var + eps) per channel of the batch */
    int32_t *argmax;    /* maxpool: index within the sample's input of each output's maximum */
} lb_layer_cache;

/* Gradients of a layer's parameters (NULL where the layer has none); overwritten, not added. */
typedef struct lb_layer_grads {
    float *weight, *bias, *gamma;
} lb_layer_grads;

/* Floats of im2col scratch a layer needs for n samples (0 but for conv2d). */
int64_t lb_layer_cols_size(const lb_layer *layer, int64_t n);

/* out = layer(in) for n samples. training: batch norm uses (and updates the running statistics
   with) the batch's statistics and fills cache; otherwise the running statistics. Flatten
   copies. cols: lb_layer_cols_size floats. */
void lb_layer_forward(const lb_layer *layer, const float *in, float *out, int64_t n,
                      int training, const lb_layer_cache *cache, float *cols, lowbit_pool *pool);

/* Given dout = dL/dout, writes dL/dparams into grads and, when din is non-NULL, dL/din (din
   may not alias dout). in and out are the training forward's; cols is scratch as above. */
void lb_layer_backward(const lb_layer *layer, const float *in, const float *out,
                       const float *dout, float *din, int64_t n, const lb_layer_grads *grads,
                       const lb_layer_cache *cache, float *cols, lowbit_pool *pool);

/* Softmax cross-entropy of n rows of logits against labels: returns the summed loss, adds the
   correct top-1 predictions to *correct, and when dlogits is non-NULL writes
   (softmax - onehot) * grad_scale there. Log-sum-exp with the row maximum subtracted. */
double lb_softmax_cross_entropy(const float *logits, const uint8_t *labels, int64_t n,
                                int32_t classes, float grad_scale, float *dlogits,
                                int64_t *correct);

/* Checks that a net is complete and consistent: layer count, every shape chained from the input
   to the classes, window geometry (so no kernel reads outside its input), parameter pointers. */
lowbit_status lb_net_check(const lb_net *net, lowbit_diag *diag);

/* Pixels to floats: x = byte / 255. */
void lb_images_to_float(const uint8_t *images, int64_t count, float *out);

/* The inference forward pass behind lb_net_forward, over `layers` (net's, or copies pointing
   at other weights) in chunks of samples: after each layer, `post` (when non-NULL) may rewrite
   the chunk's output in place (fake quantization), then `observe` sees it. */
typedef void (*lb_layer_post_fn)(void *ctx, int layer, float *output, int64_t n);
lowbit_status lb_net_forward_layers(const lb_net *net, const lb_layer *layers,
                                    const uint8_t *images, int64_t n, float *logits,
                                    lowbit_pool *pool, lb_layer_post_fn post, void *post_ctx,
                                    lb_layer_output_fn observe, void *observe_ctx,
                                    lowbit_diag *diag);

/* ---- fake quantization (train.c) ----------------------------------------------------------- */

/* Quantizes weights exactly as lb_int_net_convert does and writes back the represented values:
   per row of `cols` weights, s = (float)(max|w| / qmax) (1 for an all-zero row) with qmax =
   2^(bits-1) - 1, q = clamp(round(w / s), -qmax, qmax) (round half away from zero, in double),
   w' = q * s. */
void lb_fake_quantize_weights(const float *w, int64_t rows, int64_t cols, int bits, float *out);

/* The float forward of a QAT-trained net as QAT sees it: weights fake-quantized per output
   channel, and every quant point's output fake-quantized on its stored range (has_range must be
   set) with qp = lb_qparams_affine(min(lo, 0), max(hi, 0), 0, 2^bits - 1) (a range narrower
   than 1e-6 widened as lb_int_net_convert does): x' = (clamp(round(x / s) + z, 0, 2^bits - 1)
   - z) * s, x / s computed in float, round half away from zero. Logits are n x classes. Needs a
   net without batch norm. */
lowbit_status lb_net_forward_fake_quant(const lb_net *net, const lb_qat_config *qat,
                                        const uint8_t *images, int64_t n, float *logits,
                                        lowbit_pool *pool, lowbit_diag *diag);

#endif /* LOWBIT_NN_TRAIN_H */
