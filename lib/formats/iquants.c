/*
 * Non-linear 4-bit formats: IQ4_NL and IQ4_XS (GGUF layouts).
 *
 * Both store 4-bit indices into one fixed table of 16 signed code values (lb_kvalues_iq4nl); a
 * weight decodes as scale * kvalues[index].
 *   IQ4_NL: blocks of 32, an fp16 scale d and 16 bytes of indices. Byte j holds element j in its
 *           low nibble and element j + 16 in its high nibble.
 *   IQ4_XS: super-blocks of 256 = 8 sub-blocks of 32. An fp16 super-scale d and, per sub-block, a
 *           6-bit signed scale ls in [-32, 31] stored as ls + 32: its low 4 bits in scales_l (two
 *           sub-blocks per byte, even sub-block in the low nibble), its high 2 bits in scales_h
 *           (2 bits per sub-block, sub-block i at bits 2i..2i+1). Sub-block i decodes with
 *           (d * ls_i) * kvalues[index], indices packed as in IQ4_NL, 16 bytes per sub-block.
 *
 * The search encoder minimises sum_i w_i (x_i - s q_i)^2 over the scale s and the code values
 * q_i (w = importance, or 1). For a fixed assignment the best scale is the weighted least-squares
 * one, s = sum w x q / sum w q^2, and the error is sum w x^2 - (sum w x q)^2 / sum w q^2; for a
 * fixed scale the best assignment is the nearest code value. Per block of 32 we sweep a fine grid
 * of inverse scales (both signs, since the table is not symmetric) in time linear in the block,
 * keep the assignment with the largest (sum w x q)^2 / sum w q^2, and polish with a Lloyd step
 * (re-assign to the fitted scale, refit). IQ4_XS then chooses the super-scale and the 6-bit
 * sub-scales jointly with a quadratic model of each sub-block's error around its own best scale.
 */
#include "blocks.h"

#include <float.h>

const int8_t lb_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

/* ------------------------------------------------------------------------------------------ */
/* The code table: nearest values by midpoints, and a lookup table on a half-unit grid          */
/* ------------------------------------------------------------------------------------------ */

/* Midpoints (k[j] + k[j+1]) / 2; all are multiples of 0.5, so exact in float. */
static const float iq4_midpoints[15] = {-115.5f, -93.5f, -74.0f, -57.0f, -42.0f,
                                        -28.5f,  -16.0f, -4.5f,  7.0f,   19.0f,
                                        31.5f,   45.5f,  61.0f,  79.0f,  101.0f};

#define IQ4_BLOCK 32
#define IQ4_XS_SUBBLOCKS (QK_K / IQ4_BLOCK)

/* Index of the code value nearest to t (ties go to the lower value). */
static inline int iq4_nearest_index(float t) {
    int idx = 0;
    for (int j = 0; j < 15; j++) idx += t > iq4_midpoints[j];
    return idx;
}

/* Nearest indices for a final, stored scale (zero scale: every index decodes to zero anyway).
   Compare-and-count over the midpoints, so the loop over elements vectorizes. */
static void iq4_assign_indices(const float *x, float scale, int32_t *idx) {
    const float inv = scale != 0.0f ? 1.0f / scale : 0.0f;
    for (int i = 0; i < IQ4_BLOCK; i++) {
        const float t = x[i] * inv;
        int c = 0;
        for (int j = 0; j < 15; j++) c += t > iq4_midpoints[j];
        idx[i] = c;
    }
}

/* Packs 32 indices into 16 bytes: element j low nibble, element j + 16 high nibble. */
static void iq4_pack_indices(const int32_t *idx, uint8_t *qs) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)(idx[j] | (idx[j + 16] << 4));
}

/*
 * The search evaluates thousands of assignments, so it finds nearest values by table lookup:
 * every midpoint is a multiple of 0.5, hence all t in [h/2, h/2 + 1/2) share one nearest value,
 * and floor(2t) indexes it. t is clamped to [-128, 127.5] first (beyond the extremes the nearest
 * value is the extreme). Built once per row call on the stack: no global state.
 */
#define IQ4_LOOKUP_SIZE 512
typedef struct {
    float value[IQ4_LOOKUP_SIZE];
    uint8_t index[IQ4_LOOKUP_SIZE];
} iq4_lookup;

static void iq4_lookup_init(iq4_lookup *lu) {
    for (int h = 0; h < IQ4_LOOKUP_SIZE; h++) {
        const float t = 0.5f * (float)(h - IQ4_LOOKUP_SIZE / 2) + 0.25f; /* inside the cell */
        lu->index[h] = (uint8_t)iq4_nearest_index(t);
        lu->value[h] = lb_kvalues_iq4nl[lu->index[h]];
    }
}

/* The lookup cell of each x_i * inv_scale, computed 32-wide (vector friendly). */
static void iq4_lookup_cells(const float *x, float inv_scale, int32_t *cell) {
    const float a = 2.0f * inv_scale, b = (float)(IQ4_LOOKUP_SIZE / 2);
    for (int i = 0; i < IQ4_BLOCK; i++) {
        float u = x[i] * a + b;
        u = u < 0.0f ? 0.0f : u;
        u = u > (float)(IQ4_LOOKUP_SIZE - 1) ? (float)(IQ4_LOOKUP_SIZE - 1) : u;
        cell[i] = (int32_t)u; /* u >= 0, so truncation is floor */
    }
}

/* q_i = the code value nearest to x_i * inv_scale. */
static void iq4_lookup_values(const iq4_lookup *lu, const float *x, float inv_scale, float *q) {
    int32_t cell[IQ4_BLOCK];
    iq4_lookup_cells(x, inv_scale, cell);
    for (int i = 0; i < IQ4_BLOCK; i++) q[i] = lu->value[cell[i]];
}

/* idx_i = the index of the code value nearest to x_i * inv_scale. */
static void iq4_lookup_indices(const iq4_lookup *lu, const float *x, float inv_scale,
                               int32_t *idx) {
    int32_t cell[IQ4_BLOCK];
    iq4_lookup_cells(x, inv_scale, cell);
    for (int i = 0; i < IQ4_BLOCK; i++) idx[i] = lu->index[cell[i]];
}

/* Sum of 32 floats by pairwise halving: each level is a plain element-wise loop (so it
   vectorizes without reassociating a reduction) and the order is fixed (deterministic). */
static float iq4_sum_32(float *v) {
    for (int i = 0; i < 16; i++) v[i] += v[i + 16];
    for (int i = 0; i < 8; i++) v[i] += v[i + 8];
    for (int i = 0; i < 4; i++) v[i] += v[i + 4];
    return (v[0] + v[2]) + (v[1] + v[3]);
}

/* Sums the least-squares fit needs for an assignment q: sxq = sum w x q, sqq = sum w q^2. */
static void iq4_fit_sums(const float *wx, const float *w, const float *q, float *sxq, float *sqq) {
    float a[IQ4_BLOCK], b[IQ4_BLOCK];
    for (int i = 0; i < IQ4_BLOCK; i++) {
        a[i] = wx[i] * q[i];
        b[i] = w[i] * q[i] * q[i];
    }
    *sxq = iq4_sum_32(a);
    *sqq = iq4_sum_32(b);
}

/* Weighted squared error of 32 elements decoded at `scale` with nearest code values. */
static float iq4_error_at_scale(const iq4_lookup *lu, const float *x, const float *w, float scale) {
    float q[IQ4_BLOCK], e[IQ4_BLOCK];
    iq4_lookup_values(lu, x, scale != 0.0f ? 1.0f / scale : 0.0f, q);
    for (int i = 0; i < IQ4_BLOCK; i++) {
        const float r = x[i] - scale * q[i];
        e[i] = w[i] * r * r;
    }
    return iq4_sum_32(e);
}

/* ------------------------------------------------------------------------------------------ */
/* The per-block scale search, shared by both formats                                          */
/* ------------------------------------------------------------------------------------------ */

/* The signed element of largest magnitude and that magnitude. */
static float iq4_signed_absmax(const float *x, int n, float *amax_out) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    *amax_out = amax;
    return max;
}

/*
 * The weights of n elements: the importance scaled so that its largest value is 1 (any scale
 * gives the same minimiser; this one keeps sums of w q^2 far from overflow and underflow), or
 * ones without importance. All-zero importance would make every encoding equally good: plain
 * MSE is then the sensible tie-break.
 */
static void iq4_weights(const float *importance, int n, float *w) {
    float wmax = 0.0f;
    if (importance) {
        for (int i = 0; i < n; i++) wmax = importance[i] > wmax ? importance[i] : wmax;
    }
    if (wmax > 0.0f) {
        for (int i = 0; i < n; i++) w[i] = importance[i] / wmax;
    } else {
        for (int i = 0; i < n; i++) w[i] = 1.0f;
    }
}

/* The result of fitting one block: its scale and the fit sums of its assignment, in x's units
   (the error at any scale s near it is sum w x^2 - 2 s sxq + s^2 sqq for that assignment). */
typedef struct {
    float scale;
    float sxq;
    float sqq;
} iq4_fit;

/*
 * Where the search puts the largest element on the code axis (|inverse scale| * amax): the range
 * [IQ4_SWEEP_LO, IQ4_SWEEP_HI] cut into IQ4_SWEEP_STEPS steps, both signs, since the table is
 * not symmetric (-127 .. 113; beyond an extreme the element clips). The range spans a ratio
 * below 1.56, the smallest ratio of any two midpoints two apart, so that over it each element
 * changes code value at most twice.
 */
#define IQ4_SWEEP_LO 100.0f
#define IQ4_SWEEP_HI 140.0f
#define IQ4_SWEEP_STEPS 20
#define IQ4_LLOYD_ITERATIONS 1
#define IQ4_TINY_BLOCK 1e-30f
/* Weight of a zero-importance sub-block of IQ4_XS in the choice of the super-scale. */
#define IQ4_UNWEIGHTED_SAY 1e-6f

/* Midpoints and values padded at both ends, so that "the next two midpoints" of any element is
   always a valid read; the padding midpoints are so far out that they never fall in range. */
static const float iq4_padded_midpoints[19] = {
    -1e30f, -1e30f, -115.5f, -93.5f, -74.0f, -57.0f, -42.0f, -28.5f, -16.0f, -4.5f,
    7.0f,   19.0f,  31.5f,   45.5f,  61.0f,  79.0f,  101.0f, 1e30f,  1e30f};
static const float iq4_padded_values[20] = {-127.0f, -127.0f, -127.0f, -104.0f, -83.0f,
                                            -65.0f,  -49.0f,  -35.0f,  -22.0f,  -10.0f,
                                            1.0f,    13.0f,   25.0f,   38.0f,   53.0f,
                                            69.0f,   89.0f,   113.0f,  113.0f,  113.0f};

/*
 * Exhaustive grid search over one sign of the scale in time linear in the block: as the inverse
 * scale p grows over the range, element i changes code value each time y_i * p crosses a
 * midpoint (at most twice). Each change is added to the grid step it falls in (its effect on
 * sum w y q and sum w q^2); a running sum over the steps then gives the exact fit sums of the
 * nearest assignment at every grid point, without re-assigning all 32 elements per point.
 * Branch-free: changes out of range go to a spare slot past the end. y = sign * x / amax.
 * Returns the (sxq, sqq) of the grid point with the largest sxq^2 / sqq, the error drop of its
 * least-squares scale.
 */
static void iq4_sweep_sign(const iq4_lookup *lu, const float *y, const float *w, float *best_sxq,
                           float *best_sqq) {
    /* Slots 0 .. IQ4_SWEEP_STEPS hold the changes per grid step; each possible change also has
       a private spare slot after them, where it goes when out of range (one shared spare would
       chain every update through one memory cell). */
    enum { N_EVENTS = 2 * IQ4_BLOCK, N_SLOTS = IQ4_SWEEP_STEPS + 1 + N_EVENTS };
    const float step_inv = (float)IQ4_SWEEP_STEPS / (IQ4_SWEEP_HI - IQ4_SWEEP_LO);
    float slot_sxq[N_SLOTS] = {0}, slot_sqq[N_SLOTS] = {0};
    float q[IQ4_BLOCK], wy[IQ4_BLOCK];
    float ev_p[N_EVENTS], ev_sxq[N_EVENTS], ev_sqq[N_EVENTS];
    int32_t idx[IQ4_BLOCK], ev_slot[N_EVENTS];
    iq4_lookup_indices(lu, y, IQ4_SWEEP_LO, idx);
    for (int i = 0; i < IQ4_BLOCK; i++) wy[i] = w[i] * y[i];
    for (int i = 0; i < IQ4_BLOCK; i++) q[i] = iq4_padded_values[idx[i] + 2];
    float sxq, sqq;
    iq4_fit_sums(wy, w, q, &sxq, &sqq);
    /* The next two changes of each element: where (p) and by how much. */
    for (int i = 0; i < IQ4_BLOCK; i++) {
        const int dir = y[i] > 0.0f ? 1 : -1;
        const float inv_y = 1.0f / y[i];       /* +-inf for y == 0: never in range */
        const int m = idx[i] + 1 + (dir > 0);  /* padded index of the next midpoint */
        const int k = idx[i] + 2;              /* padded index of the current value */
        for (int e = 0; e < 2; e++) {
            const float k0 = iq4_padded_values[k + e * dir];
            const float k1 = iq4_padded_values[k + (e + 1) * dir];
            ev_p[2 * i + e] = iq4_padded_midpoints[m + e * dir] * inv_y;
            ev_sxq[2 * i + e] = wy[i] * (k1 - k0);
            ev_sqq[2 * i + e] = w[i] * (k1 * k1 - k0 * k0);
        }
    }
    /* Grid step of each change. A change is in range when IQ4_SWEEP_LO <= p <= IQ4_SWEEP_HI (p
       is +-inf for y == 0, and may fall a hair below IQ4_SWEEP_LO through rounding: it then
       counts from step 0 or 1). Written with integer masks rather than float selects, which gcc
       turns into mispredicted branches here; out-of-range changes go to their spare slot. */
    for (int e = 0; e < N_EVENTS; e++) {
        const int32_t valid = (ev_p[e] >= IQ4_SWEEP_LO - 0.01f) & (ev_p[e] <= IQ4_SWEEP_HI);
        const uint32_t keep = 0u - (uint32_t)valid;
        const float p = lb_bits_to_float((lb_float_to_bits(ev_p[e]) & keep) |
                                         (lb_float_to_bits(IQ4_SWEEP_LO) & ~keep));
        const int32_t step = (int32_t)((p - IQ4_SWEEP_LO) * step_inv + 1.0f);
        const int32_t spare = IQ4_SWEEP_STEPS + 1 + e;
        ev_slot[e] = (int32_t)(((uint32_t)step & keep) | ((uint32_t)spare & ~keep));
    }
    for (int e = 0; e < N_EVENTS; e++) {
        slot_sxq[ev_slot[e]] += ev_sxq[e];
        slot_sqq[ev_slot[e]] += ev_sqq[e];
    }
    /* Running sums give every grid point's fit sums; then pick the largest sxq^2 / sqq. (sqq is
       never 0: block weights are not all 0 and no code value is 0.) */
    float all_sxq[IQ4_SWEEP_STEPS + 1], all_sqq[IQ4_SWEEP_STEPS + 1];
    for (int g = 0; g <= IQ4_SWEEP_STEPS; g++) {
        sxq += slot_sxq[g];
        sqq += slot_sqq[g];
        all_sxq[g] = sxq;
        all_sqq[g] = sqq;
    }
    float score[IQ4_SWEEP_STEPS + 1];
    for (int g = 0; g <= IQ4_SWEEP_STEPS; g++) score[g] = all_sxq[g] * all_sxq[g] / all_sqq[g];
    int best = 0;
    for (int g = 1; g <= IQ4_SWEEP_STEPS; g++) best = score[g] > score[best] ? g : best;
    *best_sxq = all_sxq[best];
    *best_sqq = all_sqq[best];
}

/*
 * Best scale for one block of 32 under weights w: minimises sum w (x - s q)^2 over the scale s
 * and the code values q. For a fixed assignment the best s is the weighted least-squares one,
 * sxq / sqq, leaving the error sum w x^2 - sxq^2 / sqq; for a fixed s the best assignment is the
 * nearest code value. So: sweep a fine grid of inverse scales (both signs), keep the assignment
 * with the largest sxq^2 / sqq, then alternate the two optimal steps (Lloyd's iteration) while
 * the error falls. Works on x / amax so that small and huge blocks behave alike.
 */
static iq4_fit iq4_search_block(const iq4_lookup *lu, const float *x, const float *w) {
    iq4_fit fit = {0.0f, 0.0f, 0.0f};
    float amax, wsum = 0.0f;
    (void)iq4_signed_absmax(x, IQ4_BLOCK, &amax);
    for (int i = 0; i < IQ4_BLOCK; i++) wsum += w[i];
    /* Nothing to fit: all zero, or all weights zero (any code is as good), or so small that the
       smallest fp16 scale times the smallest code value (6e-8) is far above it, so zeros are
       the best encoding (this also keeps 1 / amax finite). */
    if (amax < IQ4_TINY_BLOCK || !(wsum > 0.0f)) return fit;
    const float inv_amax = 1.0f / amax;
    float xn[IQ4_BLOCK], xneg[IQ4_BLOCK], wx[IQ4_BLOCK], q[IQ4_BLOCK];
    for (int i = 0; i < IQ4_BLOCK; i++) {
        xn[i] = x[i] * inv_amax;
        xneg[i] = -xn[i];
        wx[i] = w[i] * xn[i];
    }
    float pos_sxq, pos_sqq, neg_sxq, neg_sqq;
    iq4_sweep_sign(lu, xn, w, &pos_sxq, &pos_sqq);
    iq4_sweep_sign(lu, xneg, w, &neg_sxq, &neg_sqq);
    /* the negative sweep's sums are for -x: flip sxq back */
    float best_sxq = pos_sxq, best_sqq = pos_sqq;
    if (neg_sqq > 0.0f &&
        (best_sqq == 0.0f || neg_sxq * neg_sxq * best_sqq > best_sxq * best_sxq * neg_sqq)) {
        best_sxq = -neg_sxq;
        best_sqq = neg_sqq;
    }
    for (int it = 0; it < IQ4_LLOYD_ITERATIONS && best_sxq != 0.0f; it++) {
        float sxq, sqq;
        iq4_lookup_values(lu, xn, best_sqq / best_sxq, q);
        iq4_fit_sums(wx, w, q, &sxq, &sqq);
        if (!(sqq > 0.0f && sxq * sxq * best_sqq > best_sxq * best_sxq * sqq)) break;
        best_sxq = sxq;
        best_sqq = sqq;
    }
    if (best_sqq > 0.0f) {
        fit.scale = best_sxq / best_sqq * amax;
        fit.sxq = best_sxq * amax;
        fit.sqq = best_sqq;
    }
    return fit;
}

/* ------------------------------------------------------------------------------------------ */
/* IQ4_NL                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Stores scale d (fp16) and the nearest indices for the stored d. */
static lowbit_status iq4_nl_store_block(const float *x, float d, block_iq4_nl *y) {
    const lowbit_status st = lb_store_fp16_scale(d, &y->d);
    if (st != LOWBIT_OK) return st;
    int32_t idx[IQ4_BLOCK];
    iq4_assign_indices(x, lb_fp16_to_fp32(y->d), idx);
    iq4_pack_indices(idx, y->qs);
    return LOWBIT_OK;
}

/* Round-to-nearest from the block's max: the largest element maps onto -127 exactly. */
lowbit_status lb_quantize_ref_iq4_nl(const float *src, void *dst, int64_t n,
                                     const float *importance) {
    (void)importance;
    block_iq4_nl *y = dst;
    for (int64_t b = 0; b < n / QK4_NL; b++, src += QK4_NL) {
        float amax;
        const float max = iq4_signed_absmax(src, QK4_NL, &amax);
        const lowbit_status st = iq4_nl_store_block(src, amax > 0.0f ? max / -127.0f : 0.0f, &y[b]);
        if (st != LOWBIT_OK) return st;
    }
    return LOWBIT_OK;
}

/* fp16 bits one step further from zero (+1) or closer (-1) in magnitude, sign kept; from zero,
   +1 gives the smallest subnormal with the sign of `toward`. */
static uint16_t iq4_fp16_step(uint16_t h, int dir, float toward) {
    const uint16_t sign = (h & 0x7fffu) == 0 ? (toward < 0.0f ? 0x8000u : 0u) : (h & 0x8000u);
    const int mag = (h & 0x7fff) + dir;
    return (uint16_t)(sign | (mag < 0 ? 0 : mag));
}

/*
 * The fp16 scale to store for a fitted scale: its rounding, except where fp16 is coarse (the
 * subnormal range, scales below 2^-14, or a scale that rounds to zero) where the neighbouring
 * fp16 values are measured too (exact error with nearest codes) and the best is kept.
 */
static lowbit_status iq4_nl_choose_scale(const iq4_lookup *lu, const float *x, const float *w,
                                         float scale, uint16_t *out) {
    lowbit_status st = lb_store_fp16_scale(scale, out);
    if (st != LOWBIT_OK || scale == 0.0f || (*out & 0x7c00u) != 0) return st;
    const uint16_t h0 = *out;
    float e_best = iq4_error_at_scale(lu, x, w, lb_fp16_to_fp32(h0));
    for (int dir = -1; dir <= 1; dir += 2) {
        const uint16_t h = iq4_fp16_step(h0, dir, scale);
        const float e = iq4_error_at_scale(lu, x, w, lb_fp16_to_fp32(h));
        if (e < e_best) {
            e_best = e;
            *out = h;
        }
    }
    return LOWBIT_OK;
}

lowbit_status lb_quantize_iq4_nl(const float *src, void *dst, int64_t n, const float *importance) {
    block_iq4_nl *y = dst;
    float w[IQ4_BLOCK];
    iq4_lookup lu;
    iq4_lookup_init(&lu);
    for (int64_t b = 0; b < n / QK4_NL; b++) {
        const float *x = src + b * QK4_NL;
        iq4_weights(importance ? importance + b * QK4_NL : NULL, QK4_NL, w);
        const iq4_fit fit = iq4_search_block(&lu, x, w);
        const lowbit_status st = iq4_nl_choose_scale(&lu, x, w, fit.scale, &y[b].d);
        if (st != LOWBIT_OK) return st;
        int32_t idx[IQ4_BLOCK];
        const float d = lb_fp16_to_fp32(y[b].d);
        iq4_lookup_indices(&lu, x, d != 0.0f ? 1.0f / d : 0.0f, idx);
        iq4_pack_indices(idx, y[b].qs);
    }
    return LOWBIT_OK;
}

void lb_dequantize_iq4_nl(const void *src, float *dst, int64_t n) {
    const block_iq4_nl *x = src;
    for (int64_t b = 0; b < n / QK4_NL; b++, dst += QK4_NL) {
        const float d = lb_fp16_to_fp32(x[b].d);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)lb_kvalues_iq4nl[x[b].qs[j] & 0xf];
            dst[j + 16] = d * (float)lb_kvalues_iq4nl[x[b].qs[j] >> 4];
        }
    }
}

/* Integer dot product of one block's 32 code values with 32 int8 activations. */
static int32_t iq4_dot_32(const uint8_t *qs, const int8_t *a) {
    int32_t sum = 0;
    for (int j = 0; j < 16; j++) {
        sum += lb_kvalues_iq4nl[qs[j] & 0xf] * a[j];
        sum += lb_kvalues_iq4nl[qs[j] >> 4] * a[j + 16];
    }
    return sum;
}

float lb_vec_dot_iq4_nl(int64_t n, const void *weights, const void *activations) {
    const block_iq4_nl *x = weights;
    const block_q8_0 *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_NL; b++) {
        const float d = lb_fp16_to_fp32(y[b].d) * lb_fp16_to_fp32(x[b].d);
        sum += d * (float)iq4_dot_32(x[b].qs, y[b].qs);
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* IQ4_XS                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* The 6-bit signed sub-block scale of sub-block ib, in [-32, 31]. */
static int iq4_xs_get_scale(const block_iq4_xs *x, int ib) {
    const int lo = (x->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf;
    const int hi = (x->scales_h >> (2 * ib)) & 3;
    return (lo | (hi << 4)) - 32;
}

static void iq4_xs_set_scales(block_iq4_xs *y, const int *ls) {
    uint16_t h = 0;
    for (int ib = 0; ib < IQ4_XS_SUBBLOCKS; ib += 2) {
        const int l0 = ls[ib] + 32, l1 = ls[ib + 1] + 32;
        y->scales_l[ib / 2] = (uint8_t)((l0 & 0xf) | ((l1 & 0xf) << 4));
        h |= (uint16_t)(((l0 >> 4) & 3) << (2 * ib));
        h |= (uint16_t)(((l1 >> 4) & 3) << (2 * (ib + 1)));
    }
    y->scales_h = h;
}

static int iq4_xs_clamp_scale(int ls) { return ls < -32 ? -32 : (ls > 31 ? 31 : ls); }

/* Writes a super-block given its super-scale d and the wanted sub-block scales (unrounded):
   each ls = round(scale / d), indices nearest for the decoded sub-block scale. */
static lowbit_status iq4_xs_store_block(const float *x, float d, const float *sub_scales,
                                        block_iq4_xs *y) {
    const lowbit_status st = lb_store_fp16_scale(d, &y->d);
    if (st != LOWBIT_OK) return st;
    const float dq = lb_fp16_to_fp32(y->d);
    const float inv = dq != 0.0f ? 1.0f / dq : 0.0f;
    int ls[IQ4_XS_SUBBLOCKS];
    for (int ib = 0; ib < IQ4_XS_SUBBLOCKS; ib++) {
        ls[ib] = iq4_xs_clamp_scale(lb_nearest_int(sub_scales[ib] * inv));
        int32_t idx[IQ4_BLOCK];
        iq4_assign_indices(x + ib * IQ4_BLOCK, dq * (float)ls[ib], idx);
        iq4_pack_indices(idx, y->qs + ib * 16);
    }
    iq4_xs_set_scales(y, ls);
    return LOWBIT_OK;
}

/* Round-to-nearest: each sub-block's scale maps its largest element to -127, the super-scale
   maps the largest sub-block scale to -32. */
lowbit_status lb_quantize_ref_iq4_xs(const float *src, void *dst, int64_t n,
                                     const float *importance) {
    (void)importance;
    block_iq4_xs *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float scales[IQ4_XS_SUBBLOCKS], amax_scale = 0.0f, max_scale = 0.0f;
        for (int ib = 0; ib < IQ4_XS_SUBBLOCKS; ib++) {
            float amax;
            scales[ib] = iq4_signed_absmax(src + ib * IQ4_BLOCK, IQ4_BLOCK, &amax) / -127.0f;
            if (fabsf(scales[ib]) > amax_scale) {
                amax_scale = fabsf(scales[ib]);
                max_scale = scales[ib];
            }
        }
        const float d = amax_scale > 0.0f ? max_scale / -32.0f : 0.0f; /* no -0 scale */
        const lowbit_status st = iq4_xs_store_block(src, d, scales, &y[b]);
        if (st != LOWBIT_OK) return st;
    }
    return LOWBIT_OK;
}

/* Candidate super-scales are the largest sub-block scale over these: the largest sub-block
   then takes 6-bit scale -32 .. -24 or 24 .. 31, and the rest round on a finer or coarser grid. */
static const float iq4_xs_denominators[] = {-32.0f, -31.5f, -31.0f, -30.5f, -30.0f, -29.0f,
                                            -28.0f, -27.0f, -26.0f, -24.0f, 31.0f,  30.5f,
                                            30.0f,  29.5f,  29.0f,  28.0f,  27.0f,  25.0f};

/* Weighted error, up to a constant, of a sub-block decoded at scale s with its fitted
   assignment kept: s^2 sqq - 2 s sxq. (Re-assigning afterwards only lowers it.) */
static float iq4_model_error(const iq4_fit *fit, float s) {
    return s * (s * fit->sqq - 2.0f * fit->sxq);
}

/* For super-scale d: each sub-block's 6-bit scale (the rounding of its fitted scale, which is
   the best integer under the quadratic model) and the summed model error. */
static float iq4_xs_round_scales(const iq4_fit *fits, float d, int *ls) {
    const float inv = 1.0f / d;
    float err = 0.0f;
    for (int ib = 0; ib < IQ4_XS_SUBBLOCKS; ib++) {
        ls[ib] = iq4_xs_clamp_scale(lb_nearest_int(fits[ib].scale * inv));
        err += iq4_model_error(&fits[ib], d * (float)ls[ib]);
    }
    return err;
}

/*
 * Chooses the super-scale and the 6-bit sub-scales jointly. Each sub-block first gets its own
 * best scale and assignment (iq4_search_block); then candidate super-scales d are scored by the
 * quadratic error model of each sub-block at its rounded scale d * ls, the last candidate being
 * the weighted least-squares d over the whole super-block for the best ls so far
 * (d = sum ls sxq / sum ls^2 sqq). For the chosen d, each sub-block's two integer scales around
 * scale / d are measured exactly, and indices are re-assigned for the decoded scales.
 */
static lowbit_status iq4_xs_quantize_block(const iq4_lookup *lu, const float *x,
                                           const float *importance, block_iq4_xs *y) {
    float w[QK_K];
    iq4_fit fits[IQ4_XS_SUBBLOCKS];
    float amax_scale = 0.0f, max_scale = 0.0f;
    /* One normalisation for the whole super-block: sub-block errors are compared and summed. */
    iq4_weights(importance, QK_K, w);
    for (int ib = 0; ib < IQ4_XS_SUBBLOCKS; ib++) {
        fits[ib] = iq4_search_block(lu, x + ib * IQ4_BLOCK, w + ib * IQ4_BLOCK);
        if (fits[ib].sqq == 0.0f) {
            /* No weight here: any code does, but give it a plain-MSE fit with (almost) no say
               in the super-scale, rather than zeros. */
            float ones[IQ4_BLOCK];
            for (int i = 0; i < IQ4_BLOCK; i++) ones[i] = 1.0f;
            fits[ib] = iq4_search_block(lu, x + ib * IQ4_BLOCK, ones);
            fits[ib].sxq *= IQ4_UNWEIGHTED_SAY;
            fits[ib].sqq *= IQ4_UNWEIGHTED_SAY;
        }
        if (fabsf(fits[ib].scale) > amax_scale) {
            amax_scale = fabsf(fits[ib].scale);
            max_scale = fits[ib].scale;
        }
    }
    float best_err = FLT_MAX;
    uint16_t best_d = 0;
    int best_ls[IQ4_XS_SUBBLOCKS] = {0};
    lowbit_status overflow = LOWBIT_OK;
    for (int c = 0; c <= LB_ARRAY_LEN(iq4_xs_denominators) && amax_scale > 0.0f; c++) {
        float d_try;
        if (c < LB_ARRAY_LEN(iq4_xs_denominators)) {
            d_try = max_scale / iq4_xs_denominators[c];
        } else {
            /* the least-squares super-scale for the best 6-bit scales found so far */
            float num = 0.0f, den = 0.0f;
            for (int ib = 0; ib < IQ4_XS_SUBBLOCKS; ib++) {
                num += (float)best_ls[ib] * fits[ib].sxq;
                den += (float)(best_ls[ib] * best_ls[ib]) * fits[ib].sqq;
            }
            if (!(den > 0.0f)) break;
            d_try = num / den;
        }
        uint16_t dh;
        if (lb_store_fp16_scale(d_try, &dh) != LOWBIT_OK) {
            overflow = LOWBIT_ERR_SCALE_OVERFLOW;
            continue;
        }
        if ((dh & 0x7fffu) == 0) dh = iq4_fp16_step(dh, 1, d_try); /* tiny: smallest fp16 */
        const float d = lb_fp16_to_fp32(dh);
        int ls[IQ4_XS_SUBBLOCKS];
        const float err = iq4_xs_round_scales(fits, d, ls);
        if (err < best_err) {
            best_err = err;
            best_d = dh;
            memcpy(best_ls, ls, sizeof ls);
        }
    }
    if (best_err == FLT_MAX && overflow != LOWBIT_OK) return overflow;
    /* best_d stays 0 (all-zero or negligible block): every sub-block decodes to zeros */
    y->d = best_d;
    const float d = lb_fp16_to_fp32(best_d);
    /* The model keeps each sub-block's assignment; measure the other integer next to
       scale / d exactly (with re-assignment) as well, and keep the better. */
    for (int ib = 0; ib < IQ4_XS_SUBBLOCKS && d != 0.0f; ib++) {
        const float *xb = x + ib * IQ4_BLOCK, *wb = w + ib * IQ4_BLOCK;
        const int l0 = best_ls[ib];
        const int l1 = iq4_xs_clamp_scale(fits[ib].scale / d > (float)l0 ? l0 + 1 : l0 - 1);
        if (l1 == l0) continue;
        if (iq4_error_at_scale(lu, xb, wb, d * (float)l1) <
            iq4_error_at_scale(lu, xb, wb, d * (float)l0)) {
            best_ls[ib] = l1;
        }
    }
    for (int ib = 0; ib < IQ4_XS_SUBBLOCKS; ib++) {
        int32_t idx[IQ4_BLOCK];
        const float dl = d * (float)best_ls[ib];
        iq4_lookup_indices(lu, x + ib * IQ4_BLOCK, dl != 0.0f ? 1.0f / dl : 0.0f, idx);
        iq4_pack_indices(idx, y->qs + ib * 16);
    }
    iq4_xs_set_scales(y, best_ls);
    return LOWBIT_OK;
}

lowbit_status lb_quantize_iq4_xs(const float *src, void *dst, int64_t n, const float *importance) {
    block_iq4_xs *y = dst;
    iq4_lookup lu;
    iq4_lookup_init(&lu);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const lowbit_status st = iq4_xs_quantize_block(
            &lu, src + b * QK_K, importance ? importance + b * QK_K : NULL, &y[b]);
        if (st != LOWBIT_OK) return st;
    }
    return LOWBIT_OK;
}

void lb_dequantize_iq4_xs(const void *src, float *dst, int64_t n) {
    const block_iq4_xs *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = lb_fp16_to_fp32(x[b].d);
        for (int ib = 0; ib < IQ4_XS_SUBBLOCKS; ib++, dst += IQ4_BLOCK) {
            const float dl = d * (float)iq4_xs_get_scale(&x[b], ib);
            const uint8_t *qs = x[b].qs + 16 * ib;
            for (int j = 0; j < 16; j++) {
                dst[j] = dl * (float)lb_kvalues_iq4nl[qs[j] & 0xf];
                dst[j + 16] = dl * (float)lb_kvalues_iq4nl[qs[j] >> 4];
            }
        }
    }
}

float lb_vec_dot_iq4_xs(int64_t n, const void *weights, const void *activations) {
    const block_iq4_xs *x = weights;
    const block_q8_K *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = lb_fp16_to_fp32(x[b].d) * y[b].d;
        for (int ib = 0; ib < IQ4_XS_SUBBLOCKS; ib++) {
            const int32_t sumi = iq4_dot_32(x[b].qs + 16 * ib, y[b].qs + IQ4_BLOCK * ib);
            sum += d * (float)iq4_xs_get_scale(&x[b], ib) * (float)sumi;
        }
    }
    return sum;
}
