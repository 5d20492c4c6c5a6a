/*
 * The static-mode integer model run in integer arithmetic only (classifier.h, integer.h): uint8
 * activations from the pixels to the logits' codes, int8 weights, int32 accumulators, and
 * fixed-point requantization. This file is compiled with -mgeneral-regs-only on x86-64 as a
 * check: it must not use float or double anywhere (the model's float fields are never read).
 *
 * Convolutions are im2col products: blocks of ROW_BLOCK output pixels are unfolded into patch
 * rows (ordered ky, kx, ci like the weight rows, padding filled with the input zero point, whose
 * real value is exactly 0), then multiplied with all output channels at once. Samples go through
 * the net in sub-batches of SUB_BATCH so a linear layer's weights are read once per sub-batch.
 *
 * Every output value is computed from its own exact integer dot product, whatever the blocking
 * or the thread split, so the codes never depend on the pool's size.
 */
#include "classifier.h"
#include "integer.h"
#include "../kernels/kernels.h"

#include <limits.h>
#include <stdlib.h>

#define ROW_BLOCK 16
#define SUB_BATCH 8
#define DOT_ROWS (ROW_BLOCK > SUB_BATCH ? ROW_BLOCK : SUB_BATCH)
/* Largest activation of one sample the runner accepts (bytes). */
#define MAX_ACTIVATION ((int64_t)1 << 28)

/* ---- the requantizing arithmetic, inline (one call per output value) ------------------------
   The same operations as lb_multiply_by_quantized_multiplier and lb_int8_linear's output stage
   (integer_kernels.c), with what depends only on the channel computed once per run; the tests
   compare the runner with an independent simulation bit for bit. */

/* One output channel's requantization. */
typedef struct channel_q {
    int64_t offset; /* bias - Z_in * sum(w): sum (x - Z_in) w + bias = dot + offset, exactly */
    int32_t m0, shift;
} channel_q;

static inline int64_t clamp_int32(int64_t v) {
    return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : v;
}

/* Shifts here only ever see non-negative values: signed right shifts of negative values are
   implementation-defined in C. */
static inline uint8_t requantize(int32_t dot, const channel_q *q, int32_t zero, int32_t lo,
                                 int32_t hi) {
    /* The int32 accumulator plus the bias, saturated as lb_int8_linear does. */
    int64_t v = clamp_int32((int64_t)dot + q->offset);
    if (q->shift < 0) v = clamp_int32(v * ((int64_t)1 << -q->shift));
    /* SQRDMULH: floor((v * m0 + 2^30) / 2^31); |v * m0| < 2^62, so adding 2^62 makes the
       shifted value non-negative and keeps it below 2^63. m0 >= 2^30 rules out its overflow. */
    const int64_t p = v * q->m0 + ((int64_t)1 << 30);
    int64_t high = (int64_t)(((uint64_t)p + ((uint64_t)1 << 62)) >> 31) - ((int64_t)1 << 31);
    if (q->shift > 0) { /* divide by 2^shift, rounding half away from zero */
        const int64_t magnitude = high < 0 ? -high : high;
        const int64_t rounded = (magnitude + ((int64_t)1 << (q->shift - 1))) >> q->shift;
        high = high < 0 ? -rounded : rounded;
    }
    int64_t y = high + zero;
    y = y < lo ? lo : y > hi ? hi : y;
    return (uint8_t)y;
}

/* ---- checks --------------------------------------------------------------------------------- */

static int64_t reduction_length(const lb_int_op *op) {
    return op->kind == LB_INT_CONV2D ? (int64_t)op->kernel * op->kernel * op->in.c
                                     : lb_shape_size(op->in);
}

static int shape_valid(lb_shape s) {
    return s.h >= 1 && s.w >= 1 && s.c >= 1 && lb_shape_size(s) <= MAX_ACTIVATION;
}

static int same_shape(lb_shape a, lb_shape b) { return a.h == b.h && a.w == b.w && a.c == b.c; }

/* The output size of a window op along one axis, or -1 when the window does not fit. */
static int64_t window_out(int32_t in, int32_t kernel, int32_t stride, int32_t pad) {
    int64_t span = (int64_t)in + 2 * (int64_t)pad - kernel;
    return span < 0 ? -1 : span / stride + 1;
}

static const char *op_check_geometry(const lb_int_op *op) {
    if (!shape_valid(op->in) || !shape_valid(op->out)) return "invalid shape";
    switch (op->kind) {
    case LB_INT_LINEAR:
        if (op->out.h != 1 || op->out.w != 1) return "linear output is not a vector";
        break;
    case LB_INT_CONV2D:
    case LB_INT_MAXPOOL:
    case LB_INT_AVGPOOL:
        if (op->kernel < 1 || op->stride < 1 || op->pad < 0 || op->pad >= op->kernel)
            return "kernel, stride or padding out of range";
        if (op->kind != LB_INT_CONV2D && (op->pad != 0 || op->out.c != op->in.c))
            return "pool with padding or a channel change";
        if (window_out(op->in.h, op->kernel, op->stride, op->pad) != op->out.h ||
            window_out(op->in.w, op->kernel, op->stride, op->pad) != op->out.w)
            return "output size does not match kernel, stride and padding";
        break;
    case LB_INT_FLATTEN:
        if (op->out.h != 1 || op->out.w != 1 || op->out.c != lb_shape_size(op->in))
            return "flatten output is not the input's size";
        break;
    default: return "unknown op kind";
    }
    if (op->kind == LB_INT_LINEAR || op->kind == LB_INT_CONV2D) {
        int64_t k = reduction_length(op);
        if (k > LB_INT8_LINEAR_MAX_K) return "reduction longer than the int32 accumulator allows";
        if (!op->weights || !op->weight_sums || !op->bias || !op->multiplier || !op->shift)
            return "missing parameter array";
    }
    return NULL;
}

static int qparams_valid(const lb_qparams *q) {
    return q->qmin >= 0 && q->qmin <= q->qmax && q->qmax <= 255 && q->zero_point >= q->qmin &&
           q->zero_point <= q->qmax;
}

static const char *op_check_integers(const lb_int_op *op) {
    if (!qparams_valid(&op->out_q)) return "output zero point or range invalid";
    if (op->out_min < op->out_q.qmin || op->out_max > op->out_q.qmax || op->out_min > op->out_max)
        return "output clamp outside the output range";
    if (op->kind != LB_INT_LINEAR && op->kind != LB_INT_CONV2D) return NULL;
    for (int64_t c = 0; c < op->out.c; c++)
        if (op->multiplier[c] < ((int32_t)1 << 30) || op->shift[c] < LB_MULTIPLIER_SHIFT_MIN ||
            op->shift[c] > LB_MULTIPLIER_SHIFT_MAX)
            return "multiplier not normalized";
    return NULL;
}

lowbit_status lb_int_net_check(const lb_int_net *net, lowbit_diag *diag) {
    if (!net)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "integer model: missing");
    if (net->n_ops < 1 || net->n_ops > LB_NET_MAX_LAYERS || !shape_valid(net->input))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "integer model: %d ops on a %dx%dx%d input", net->n_ops,
                           (int)net->input.h, (int)net->input.w, (int)net->input.c);
    const int is_static = net->mode == LB_INT_MODE_STATIC;
    if (is_static && !qparams_valid(&net->input_q))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "integer model: input zero point or range invalid");
    lb_shape current = net->input;
    for (int i = 0; i < net->n_ops; i++) {
        const lb_int_op *op = &net->ops[i];
        const char *why = same_shape(op->in, current) ? op_check_geometry(op)
                                                      : "input shape is not the previous output";
        if (!why && is_static) why = op_check_integers(op);
        if (why)
            return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, i, UINT64_MAX,
                               "integer model: op %d: %s", i, why);
        current = op->out;
    }
    if (lb_shape_size(current) != net->classes)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "integer model: the last op gives %lld values for %d classes",
                           (long long)lb_shape_size(current), (int)net->classes);
    return LOWBIT_OK;
}

/* ---- ops over a range of output units ------------------------------------------------------- */

/* Per-thread work memory. */
typedef struct scratch {
    uint8_t *act[2];  /* SUB_BATCH samples of the largest activation each */
    uint8_t *patches; /* ROW_BLOCK im2col rows */
    int32_t *dots;    /* DOT_ROWS x the most output channels */
} scratch;

typedef struct runner {
    const lb_int_net *net;
    lb_u8_i8_dots_fn dots;
    int32_t in_zero[LB_NET_MAX_LAYERS];    /* each op's input zero point */
    const channel_q *chan[LB_NET_MAX_LAYERS]; /* linear/conv2d: per output channel */
    /* conv2d: the weights with rows padded by zeros to a multiple of 16 bytes (the op's own when
       already so), and the matching im2col row length: the vector kernel then has no tails. */
    const int8_t *conv_weights[LB_NET_MAX_LAYERS];
    /* The vector requantization (NULL without one) and, per op where it is exact (no sum can
       saturate, every shift in [0, 31]), the channel offsets as int32; NULL elsewhere. */
    int64_t (*requant)(const int32_t *, int64_t, const int32_t *, const int32_t *,
                       const int32_t *, int32_t, int32_t, int32_t, uint8_t *);
    const int32_t *offset32[LB_NET_MAX_LAYERS];
    int64_t patch_stride[LB_NET_MAX_LAYERS];
    int64_t act_bytes, patch_bytes, dot_count;
    int n_scratch;
    scratch *scratch;
    void *memory, *tables;
} runner;

/* Units an op's work is split into for `samples` samples: output pixels (over all samples) for
   convolutions and pools, output channels for linear layers. */
static int64_t op_units(const lb_int_op *op, int64_t samples) {
    switch (op->kind) {
    case LB_INT_LINEAR: return op->out.c;
    case LB_INT_FLATTEN: return 0;
    default: return samples * op->out.h * op->out.w;
    }
}

/* Copies and fills of a few bytes (a first convolution's one-channel pixels) cost more through
   the library calls than inline. */
static inline void copy_bytes(uint8_t *dst, const uint8_t *src, int64_t n) {
    if (n > 16) {
        memcpy(dst, src, (size_t)n);
        return;
    }
    for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

static inline void fill_bytes(uint8_t *dst, uint8_t value, int64_t n) {
    if (n > 16) {
        memset(dst, value, (size_t)n);
        return;
    }
    for (int64_t i = 0; i < n; i++) dst[i] = value;
}

/* One im2col row: the patch of output pixel `pixel` of an HWC image. */
static void im2col_row(const lb_int_op *op, const uint8_t *image, int64_t pixel, uint8_t z,
                       uint8_t *row) {
    const int64_t oy = pixel / op->out.w, ox = pixel % op->out.w;
    const int64_t cin = op->in.c, k = op->kernel;
    const int64_t x0 = ox * op->stride - op->pad;
    /* Columns kx in [kx_lo, kx_hi) fall inside the image: one contiguous copy per kernel row. */
    const int64_t kx_lo = x0 < 0 ? -x0 : 0;
    const int64_t kx_hi = LB_MIN(k, (int64_t)op->in.w - x0);
    for (int64_t ky = 0; ky < k; ky++) {
        uint8_t *dst = row + ky * k * cin;
        const int64_t iy = oy * op->stride - op->pad + ky;
        if (iy < 0 || iy >= op->in.h || kx_hi <= kx_lo) {
            fill_bytes(dst, z, k * cin);
            continue;
        }
        fill_bytes(dst, z, kx_lo * cin);
        copy_bytes(dst + kx_lo * cin, image + (iy * op->in.w + x0 + kx_lo) * cin,
                   (kx_hi - kx_lo) * cin);
        fill_bytes(dst + kx_hi * cin, z, (k - kx_hi) * cin);
    }
}

static void conv_units(const runner *r, int index, const uint8_t *in, uint8_t *out, int64_t u0,
                       int64_t u1, const scratch *s) {
    const lb_int_op *op = &r->net->ops[index];
    const int64_t pixels = (int64_t)op->out.h * op->out.w, in_size = lb_shape_size(op->in);
    const int64_t stride = r->patch_stride[index], channels = op->out.c;
    const int32_t z = r->in_zero[index], zero = op->out_q.zero_point;
    const int32_t lo = op->out_min, hi = op->out_max;
    const channel_q *q = r->chan[index];
    for (int64_t u = u0; u < u1; u += ROW_BLOCK) {
        const int64_t rows = LB_MIN((int64_t)ROW_BLOCK, u1 - u);
        for (int64_t j = 0; j < rows; j++) {
            const int64_t sample = (u + j) / pixels, pixel = (u + j) % pixels;
            uint8_t *row = s->patches + j * stride;
            im2col_row(op, in + sample * in_size, pixel, (uint8_t)z, row);
            /* The padding columns meet zero weights: any value works, zero keeps it defined. */
            fill_bytes(row + reduction_length(op), 0, stride - reduction_length(op));
        }
        r->dots(s->patches, stride, rows, r->conv_weights[index], stride, channels, s->dots);
        for (int64_t j = 0; j < rows; j++) {
            uint8_t *y = out + (u + j) * channels;
            const int32_t *d = s->dots + j * channels;
            int64_t c = 0;
            if (r->offset32[index])
                c = r->requant(d, channels, r->offset32[index], op->multiplier, op->shift, zero,
                               lo, hi, y);
            for (; c < channels; c++) y[c] = requantize(d[c], &q[c], zero, lo, hi);
        }
    }
}

static void linear_units(const runner *r, int index, const uint8_t *in, int64_t samples,
                         uint8_t *out, int64_t c0, int64_t c1, const scratch *s) {
    const lb_int_op *op = &r->net->ops[index];
    const int64_t k_count = reduction_length(op), channels = op->out.c, width = c1 - c0;
    const int32_t zero = op->out_q.zero_point, lo = op->out_min, hi = op->out_max;
    const channel_q *q = r->chan[index];
    for (int64_t b = 0; b < samples; b += SUB_BATCH) {
        const int64_t rows = LB_MIN((int64_t)SUB_BATCH, samples - b);
        r->dots(in + b * k_count, k_count, rows, op->weights + c0 * k_count, k_count, width,
                s->dots);
        for (int64_t j = 0; j < rows; j++) {
            uint8_t *y = out + (b + j) * channels;
            const int32_t *d = s->dots + j * width - c0;
            int64_t c = c0;
            if (r->offset32[index])
                c += r->requant(d + c0, width, r->offset32[index] + c0, op->multiplier + c0,
                                op->shift + c0, zero, lo, hi, y + c0);
            for (; c < c1; c++) y[c] = requantize(d[c], &q[c], zero, lo, hi);
        }
    }
}

/* Max or average over each window (pools never pad). Both work on the codes directly: the
   input and output share their quantization, and the codes are monotonic in the real values. */
static void pool_units(const lb_int_op *op, const uint8_t *in, uint8_t *out, int64_t u0,
                       int64_t u1) {
    const int64_t pixels = (int64_t)op->out.h * op->out.w, in_size = lb_shape_size(op->in);
    const int64_t cin = op->in.c, k = op->kernel, count = k * k;
    for (int64_t u = u0; u < u1; u++) {
        const int64_t sample = u / pixels, pixel = u % pixels;
        const int64_t y0 = pixel / op->out.w * op->stride, x0 = pixel % op->out.w * op->stride;
        const uint8_t *image = in + sample * in_size;
        for (int64_t c = 0; c < cin; c++) {
            int32_t best = 0, sum = 0;
            for (int64_t ky = 0; ky < k; ky++)
                for (int64_t kx = 0; kx < k; kx++) {
                    int32_t v = image[((y0 + ky) * op->in.w + x0 + kx) * cin + c];
                    best = v > best ? v : best;
                    sum += v;
                }
            /* The mean of non-negative codes, rounded half up (= half away from zero). */
            out[u * cin + c] = (uint8_t)(op->kind == LB_INT_MAXPOOL
                                             ? best
                                             : (sum + (int32_t)(count / 2)) / (int32_t)count);
        }
    }
}

static void run_units(const runner *r, int index, const uint8_t *in, int64_t samples,
                      uint8_t *out, int64_t u0, int64_t u1, const scratch *s) {
    const lb_int_op *op = &r->net->ops[index];
    switch (op->kind) {
    case LB_INT_CONV2D: conv_units(r, index, in, out, u0, u1, s); break;
    case LB_INT_LINEAR: linear_units(r, index, in, samples, out, u0, u1, s); break;
    case LB_INT_MAXPOOL:
    case LB_INT_AVGPOOL: pool_units(op, in, out, u0, u1); break;
    default: break; /* flatten: the HWC bytes already are the vector */
    }
}

/* ---- driving: threads over samples, or over each op's units -------------------------------- */

/* Runs `samples` samples through every op on one thread; returns the last output. */
static const uint8_t *run_net(const runner *r, const uint8_t *images, int64_t samples,
                              const scratch *s) {
    const uint8_t *in = images;
    int which = 0;
    for (int i = 0; i < r->net->n_ops; i++) {
        const lb_int_op *op = &r->net->ops[i];
        if (op->kind == LB_INT_FLATTEN) continue;
        uint8_t *out = s->act[which];
        run_units(r, i, in, samples, out, 0, op_units(op, samples), s);
        in = out;
        which ^= 1;
    }
    return in;
}

typedef struct sample_job {
    const runner *r;
    const uint8_t *images;
    int64_t n;
    uint8_t *codes;
} sample_job;

/* Chunk c of the samples, with scratch c. */
static void sample_chunks(void *ctx, int64_t begin, int64_t end) {
    const sample_job *job = ctx;
    const runner *r = job->r;
    const int64_t in_size = lb_shape_size(r->net->input), classes = r->net->classes;
    for (int64_t c = begin; c < end; c++) {
        const int64_t first = job->n * c / r->n_scratch, last = job->n * (c + 1) / r->n_scratch;
        for (int64_t i = first; i < last; i += SUB_BATCH) {
            const int64_t count = LB_MIN((int64_t)SUB_BATCH, last - i);
            const uint8_t *y = run_net(r, job->images + i * in_size, count, &r->scratch[c]);
            memcpy(job->codes + i * classes, y, (size_t)(count * classes));
        }
    }
}

typedef struct unit_job {
    const runner *r;
    int index;
    const uint8_t *in;
    int64_t samples;
    uint8_t *out;
    int64_t units;
    int64_t chunks;
} unit_job;

static void unit_chunks(void *ctx, int64_t begin, int64_t end) {
    const unit_job *job = ctx;
    for (int64_t c = begin; c < end; c++)
        run_units(job->r, job->index, job->in, job->samples, job->out,
                  job->units * c / job->chunks, job->units * (c + 1) / job->chunks,
                  &job->r->scratch[c]);
}

/* Fewer samples than threads: each op is split over its output units instead. Small ops stay
   on one thread (a chunk below MIN_CHUNK_WORK multiply-adds costs more to hand out). */
#define MIN_CHUNK_WORK (1 << 18)

static void run_split_units(const runner *r, const uint8_t *images, int64_t n, uint8_t *codes,
                            lowbit_pool *pool) {
    const lb_int_net *net = r->net;
    const int64_t in_size = lb_shape_size(net->input);
    for (int64_t i = 0; i < n; i += SUB_BATCH) {
        const int64_t samples = LB_MIN((int64_t)SUB_BATCH, n - i);
        const uint8_t *in = images + i * in_size;
        int which = 0;
        for (int k = 0; k < net->n_ops; k++) {
            const lb_int_op *op = &net->ops[k];
            if (op->kind == LB_INT_FLATTEN) continue;
            const int64_t units = op_units(op, samples);
            int64_t work_per_unit = op->kind == LB_INT_LINEAR ? samples * reduction_length(op)
                                    : op->kind == LB_INT_CONV2D
                                        ? reduction_length(op) * op->out.c
                                        : (int64_t)op->kernel * op->kernel * op->out.c;
            int64_t chunks = LB_MAX((int64_t)1, units * work_per_unit / MIN_CHUNK_WORK);
            chunks = LB_MIN(LB_MIN(chunks, (int64_t)r->n_scratch), units);
            unit_job job = {r, k, in, samples, r->scratch[0].act[which], units, chunks};
            lowbit_pool_run(chunks > 1 ? pool : NULL, chunks, unit_chunks, &job);
            in = job.out;
            which ^= 1;
        }
        memcpy(codes + i * net->classes, in, (size_t)(samples * net->classes));
    }
}

static void runner_free(runner *r) {
    free(r->scratch);
    free(r->memory);
    free(r->tables);
}

static int64_t round_up16(int64_t v) { return (v + 15) & ~(int64_t)15; }
static size_t align8(size_t v) { return (v + 7) & ~(size_t)7; }

/* Whether the vector requantization is exact for op: |dot| <= K * 255 * 128, so when every
   |offset| is below INT32_MAX minus that, dot + offset never leaves int32 (nothing to saturate);
   and every shift lies in [0, 31]. Fills the int32 offsets. */
static int vector_exact(const lb_int_op *op, const channel_q *q, int32_t *offsets) {
    const int64_t limit = INT32_MAX - reduction_length(op) * 255 * 128;
    for (int64_t c = 0; c < op->out.c; c++) {
        if (q[c].offset > limit || q[c].offset < -limit || q[c].shift < 0 || q[c].shift > 31)
            return 0;
        offsets[c] = (int32_t)q[c].offset;
    }
    return 1;
}

/* Per-run tables: input zero points, each channel's requantization, padded conv weights. */
static lowbit_status build_tables(runner *r, const lb_int_net *net, lowbit_diag *diag) {
    size_t bytes = 8;
    for (int i = 0; i < net->n_ops; i++) {
        const lb_int_op *op = &net->ops[i];
        if (op->kind != LB_INT_LINEAR && op->kind != LB_INT_CONV2D) continue;
        bytes += (size_t)op->out.c * sizeof(channel_q) + align8((size_t)op->out.c * 4);
        if (op->kind == LB_INT_CONV2D && reduction_length(op) % 16)
            bytes += align8((size_t)(op->out.c * round_up16(reduction_length(op))));
    }
    unsigned char *p = malloc(bytes);
    if (!p)
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "integer model: cannot allocate %zu bytes of tables", bytes);
    r->tables = p;
    int32_t zero = net->input_q.zero_point;
    for (int i = 0; i < net->n_ops; i++) {
        const lb_int_op *op = &net->ops[i];
        r->in_zero[i] = zero;
        if (op->kind == LB_INT_LINEAR || op->kind == LB_INT_CONV2D) {
            channel_q *q = (channel_q *)(void *)p;
            p += (size_t)op->out.c * sizeof(channel_q);
            for (int64_t c = 0; c < op->out.c; c++)
                q[c] = (channel_q){(int64_t)op->bias[c] - (int64_t)zero * op->weight_sums[c],
                                   op->multiplier[c], op->shift[c]};
            r->chan[i] = q;
            int32_t *offsets = (int32_t *)(void *)p;
            p += align8((size_t)op->out.c * sizeof(int32_t)); /* keeps channel_q aligned */
            if (r->requant && vector_exact(op, q, offsets)) r->offset32[i] = offsets;
        }
        if (op->kind == LB_INT_CONV2D) {
            const int64_t k = reduction_length(op), padded = round_up16(k);
            r->patch_stride[i] = padded;
            r->conv_weights[i] = op->weights;
            if (padded != k) {
                int8_t *w = (int8_t *)p;
                p += align8((size_t)(op->out.c * padded));
                for (int64_t c = 0; c < op->out.c; c++) {
                    memcpy(w + c * padded, op->weights + c * k, (size_t)k);
                    memset(w + c * padded + k, 0, (size_t)(padded - k));
                }
                r->conv_weights[i] = w;
            }
        }
        zero = op->out_q.zero_point;
    }
    return LOWBIT_OK;
}

static lowbit_status runner_init(runner *r, const lb_int_net *net, int n_scratch,
                                 lowbit_diag *diag) {
    memset(r, 0, sizeof *r);
    r->net = net;
    r->dots = lb_u8_i8_dots;
#if defined(__x86_64__)
    if (lb_cpu_level_detected() >= LB_CPU_AVX2) {
        r->dots = lb_u8_i8_dots_avx2;
        r->requant = lb_requantize_avx2;
    }
#endif
    int64_t act = lb_shape_size(net->input), k_max = 1, c_max = 1;
    lowbit_status st = build_tables(r, net, diag);
    if (st != LOWBIT_OK) return st;
    for (int i = 0; i < net->n_ops; i++) {
        const lb_int_op *op = &net->ops[i];
        act = LB_MAX(act, lb_shape_size(op->out));
        if (op->kind == LB_INT_CONV2D) k_max = LB_MAX(k_max, r->patch_stride[i]);
        if (op->kind == LB_INT_CONV2D || op->kind == LB_INT_LINEAR)
            c_max = LB_MAX(c_max, (int64_t)op->out.c);
    }
    r->act_bytes = (act * SUB_BATCH + 63) & ~(int64_t)63;
    r->patch_bytes = (k_max * ROW_BLOCK + 63) & ~(int64_t)63;
    r->dot_count = (c_max * DOT_ROWS + 15) & ~(int64_t)15;
    const int64_t per_thread = 2 * r->act_bytes + r->patch_bytes + 4 * r->dot_count;
    r->n_scratch = n_scratch;
    r->scratch = calloc((size_t)n_scratch, sizeof *r->scratch);
    r->memory = malloc((size_t)(per_thread * n_scratch));
    if (!r->scratch || !r->memory) {
        runner_free(r);
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "integer model: cannot allocate %lld bytes of work memory",
                           (long long)(per_thread * n_scratch));
    }
    for (int t = 0; t < n_scratch; t++) {
        uint8_t *base = (uint8_t *)r->memory + per_thread * t;
        r->scratch[t].act[0] = base;
        r->scratch[t].act[1] = base + r->act_bytes;
        r->scratch[t].patches = base + 2 * r->act_bytes;
        r->scratch[t].dots = (int32_t *)(void *)(base + 2 * r->act_bytes + r->patch_bytes);
    }
    return LOWBIT_OK;
}

lowbit_status lb_int_net_run_static(const lb_int_net *net, const uint8_t *images, int64_t n,
                                    uint8_t *codes, lowbit_pool *pool, lowbit_diag *diag) {
    lowbit_status st = lb_int_net_check(net, diag);
    if (st != LOWBIT_OK) return st;
    if (net->mode != LB_INT_MODE_STATIC)
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "integer model: not a static-mode model");
    if (n < 0 || (n > 0 && (!images || !codes)))
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "integer model: %lld images with a missing buffer", (long long)n);
    if (n == 0) return LOWBIT_OK;
    const int threads = lowbit_pool_size(pool);
    const int by_samples = n >= threads;
    runner r;
    st = runner_init(&r, net, by_samples ? (int)LB_MIN((int64_t)threads, n) : threads, diag);
    if (st != LOWBIT_OK) return st;
    if (by_samples) {
        sample_job job = {&r, images, n, codes};
        lowbit_pool_run(r.n_scratch > 1 ? pool : NULL, r.n_scratch, sample_chunks, &job);
    } else {
        run_split_units(&r, images, n, codes, pool);
    }
    runner_free(&r);
    return LOWBIT_OK;
}
