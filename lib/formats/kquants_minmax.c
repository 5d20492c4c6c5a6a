/*
 * K-quants with a scale and a min per sub-block: Q2_K, Q4_K and Q5_K (GGUF's layouts).
 *
 * A super-block holds 256 weights, split into sub-blocks (8 of 32 for Q4_K/Q5_K, 16 of 16 for
 * Q2_K). Each sub-block j has an integer scale sc_j and min m_j (6 bits for Q4_K/Q5_K, 4 bits
 * for Q2_K), themselves scaled by the super-block's fp16 d and dmin:
 *
 *     x ~ (d * sc_j) * q - (dmin * m_j),    q in 0..nmax (3, 15 or 31)
 *
 * The searching encoder (lb_quantize_T) minimises sum_i w_i (x_i - dequant_i)^2 in three steps.
 * It works across sub-blocks, each a vector lane (see superblock_lanes), and its unit of cost is
 * the pass: every element rounded to its sub-block's nearest level and the level sums taken.
 *   1. Per sub-block, a continuous grid dequant = s*q + b (b <= 0): a short fixed list of
 *      candidate grids (from the sub-block's range, then moves around the best so far), each a
 *      pass followed by the closed-form weighted least-squares refit of (s, b) to its levels
 *      (the 2x2 normal equations in the sums of w, wx, wq, wq^2, wxq). The lists were chosen
 *      greedily on normal data (log-normal importance for the weighted ones), 7-9 passes.
 *   2. The super-block d and dmin among a few candidates (the largest scale or min on the
 *      largest code, or slightly beyond), each pair scored with every sub-block's quadratic
 *      error model for its levels held fixed, at the integer codes the model prefers; no pass.
 *   3. Per sub-block, the model's two favourite integer codes (scale code just below or above
 *      s / d, min code just below or above the min refitted to that scale), scored exactly by a
 *      pass each. Then d and dmin are refitted by least squares to the codes and levels (the
 *      error is quadratic in them), rounded to fp16, and the same two passes decide whether they
 *      are kept. Last, every element is rounded for the final scales.
 * On normal data the result is about 1% above the error of the continuous fits of step 1: the
 * rounding of scales and mins to codes costs that much, and a far wider search of codes and of
 * (d, dmin) (hundreds of passes) recovers only about half of it.
 */
#include "blocks.h"

#include <float.h>

/* ------------------------------------------------------------------------------------------ */
/* GGUF's 12-byte packing of eight 6-bit scales and eight 6-bit mins (Q4_K, Q5_K)               */
/* ------------------------------------------------------------------------------------------ */

/* Bytes 0-3: scales 0-3 in the low 6 bits, the top 2 bits of scales 4-7 in bits 6-7.
   Bytes 4-7: mins 0-3 likewise, with the top 2 bits of mins 4-7.
   Bytes 8-11: low 4 bits of scale 4+i (low nibble) and of min 4+i (high nibble). */
static inline void unpack_scale_min_k4(int j, const uint8_t *packed, int *sc, int *mn) {
    if (j < 4) {
        *sc = packed[j] & 63;
        *mn = packed[j + 4] & 63;
    } else {
        *sc = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4);
        *mn = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
    }
}

static void pack_scales_mins_k4(const uint8_t sc[8], const uint8_t mn[8], uint8_t packed[12]) {
    for (int j = 0; j < 4; j++) {
        packed[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        packed[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        packed[j + 8] = (uint8_t)((sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The search, shared by the three formats                                                      */
/* ------------------------------------------------------------------------------------------ */

#define MAX_LANES 16 /* sub-blocks per super-block, at most */

/* A first guess of a sub-block's grid, relative to its range [lo, hi] (lo = min(x, 0)): level
   spacing s = (hi - lo) / (nmax + spread), lowest level b = lo + offset * s. */
typedef struct {
    float spread, offset;
} grid_start;

/* A move away from a sub-block's best grid (s, b) so far: s' = s * (1 + stretch),
   b' = b + shift * s. */
typedef struct {
    float stretch, shift;
} grid_move;

/* The candidate grids of step 1 for one kind of input (plain or importance-weighted). */
typedef struct {
    const grid_start *starts;
    int n_starts;
    const grid_move *moves;
    int n_moves;
} search_plan;

typedef struct {
    int sub_size; /* elements per sub-block: 32 or 16 */
    int n_sub;    /* sub-blocks per super-block: 8 or 16 */
    int nmax;     /* highest quant level: 31, 15 or 3 */
    int code_max; /* highest sub-block scale/min code: 63 or 15 */
    search_plan plain, weighted;
    const float *code_offsets; /* step 2: d = max scale / (code_max + offset), dmin likewise */
    int n_offsets;
} minmax_shape;

/* One super-block's encoding before it is packed into a format's bytes. */
typedef struct {
    uint16_t d, dmin; /* fp16 bits */
    uint8_t sc[MAX_LANES], mn[MAX_LANES];
    uint8_t levels[QK_K];
} minmax_code;

/* ---- vectorization helpers ---- */

/* The search works across sub-blocks: each sub-block is a vector lane with its own running
   sums, so that no loop needs a horizontal float reduction (which gcc would not vectorize
   without reordering sums). These keep gcc on that path. */

/* A lane loop kept rolled: unrolled early (it has 8 or 16 iterations), gcc vectorizes the loop
   around it instead, with shuffles. */
#if defined(__GNUC__)
#define KEEP_LOOP_ROLLED _Pragma("GCC unroll 1")
#else
#define KEEP_LOOP_ROLLED
#endif

/* A short loop over candidates inside a lane loop, unrolled before vectorization so that the
   lane loop around it is innermost. */
#if defined(__GNUC__)
#define UNROLL_CANDIDATES _Pragma("GCC unroll 4")
#else
#define UNROLL_CANDIDATES
#endif

/* A lane kernel kept out of line and unspecialized: inlined into its caller, or cloned for
   constant arguments, its lane loops get unrolled or jump-threaded before gcc vectorizes them,
   and then they are not vectorized at all. */
#if defined(__GNUC__) && !defined(__clang__)
#define LANE_KERNEL __attribute__((noipa))
#elif defined(__GNUC__)
#define LANE_KERNEL __attribute__((noinline))
#else
#define LANE_KERNEL
#endif

/* v clamped to [lo, hi], and lo for NaN. Comparisons rather than fminf/fmaxf, which gcc only
   inlines under -ffinite-math-only: with bounds known only at run time these compile to maxps
   and minps (see int_range); with constant bounds in a lane loop, use select_float instead. */
static inline float clamp_float(float v, float lo, float hi) {
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
}

/* cond ? a : b with bit masks: gcc does not if-convert (and so does not vectorize) a loop with
   a ?: between floats that a NaN could make trap, nor one updating an array element
   conditionally; this form is plain arithmetic. */
static inline float select_float(int cond, float a, float b) {
    const uint32_t mask = (uint32_t)0 - (uint32_t)(cond != 0);
    return lb_bits_to_float((lb_float_to_bits(a) & mask) | (lb_float_to_bits(b) & ~mask));
}

/* 1 / v, or 0 where v is 0 or so small that its inverse would overflow (the grid or scale is
   then empty: every element gets level 0). */
static inline float inverse_or_zero(float v) {
    const int usable = v > 1e-30f;
    return select_float(usable, 1.0f / select_float(usable, v, 1.0f), 0.0f);
}

/* Levels and codes are rounded in float: adding 1.5 * 2^23 pushes the fraction out of the
   mantissa (round to nearest, ties to even), and the sum is clamped while still offset, so
   that rounding and clamping cost an add, a max, a min and a subtract, all SSE2. Exact for
   |v| < 2^22; beyond, and for Inf, the clamp takes over; NaN goes to 0. */
#define ROUNDING_MAGIC 12582912.0f

/* The integers 0..top (levels or codes) as the range rounding clamps to, offset by
   ROUNDING_MAGIC. Kernels take it as run-time values: with compile-time bounds gcc compiles a
   clamp to compare-and-blend sequences instead of one maxps and one minps, or threads jumps
   through it and then does not vectorize the loop. */
typedef struct {
    float lo, hi;
} int_range;

static inline int_range integers_up_to(int top) {
    const int_range r = {ROUNDING_MAGIC, ROUNDING_MAGIC + (float)top};
    return r;
}

/* round(v) clamped to the range. */
static inline float round_in_range(float v, int_range r) {
    return clamp_float(v + ROUNDING_MAGIC, r.lo, r.hi) - ROUNDING_MAGIC;
}

/* The nearest level x * inv_s + shift (shift = -b * inv_s) of a grid, clamped to the range. */
static inline float level_of(float x, float inv_s, float shift, int_range r) {
    return round_in_range(x * inv_s + shift, r);
}

static inline float round_to_fp16(float v) { return lb_fp16_to_fp32(lb_fp32_to_fp16(v)); }

/* ---- the super-block in lanes ---- */

/* A super-block transposed into halves of 16 rows of 8 lanes: for Q4_K/Q5_K the first and
   last 16 elements of the 8 sub-blocks, for Q2_K sub-blocks 0-7 and 8-15. Element i of
   sub-block j is at lane_index(). */
#define HALF_LANES 8
#define HALF_ROWS 16
#define HALF_SIZE (HALF_ROWS * HALF_LANES)

static inline int lane_index(int rows, int i, int j) {
    return (j / HALF_LANES) * (HALF_LANES * rows) + i * HALF_LANES + j % HALF_LANES;
}

typedef struct {
    float x[QK_K];
    float w[QK_K];  /* importance (with a floor); only with importance */
    float wx[QK_K]; /* w * x; likewise */
    int weighted;
    float lo[MAX_LANES];  /* min(x, 0) of each sub-block */
    float hi[MAX_LANES];  /* max x */
    float sw[MAX_LANES];  /* sum of w */
    float swx[MAX_LANES]; /* sum of w x */
} superblock_lanes;

/* The level-dependent sums of every sub-block for one assignment of levels. With sw and swx
   they are all the closed-form weighted least-squares fit of dequant = s*q + b needs, and they
   give any grid's error for those levels exactly. */
typedef struct {
    float swq[MAX_LANES], swqq[MAX_LANES], swxq[MAX_LANES];
} lane_sums;

/* A grid per sub-block: dequant = s * q + b (b = -min <= 0). */
typedef struct {
    float s[MAX_LANES], b[MAX_LANES];
} lane_grids;

/* Adds the halves' per-lane values: with 8 sub-blocks both halves hold the same lanes, with 16
   the second holds lanes 8-15. */
static void fold_halves(int lanes, const float half[2][HALF_LANES], float *out) {
    for (int k = 0; k < HALF_LANES; k++) out[k] = half[0][k];
    if (lanes == HALF_LANES) {
        for (int k = 0; k < HALF_LANES; k++) out[k] += half[1][k];
    } else {
        for (int k = 0; k < HALF_LANES; k++) out[HALF_LANES + k] = half[1][k];
    }
}

/* Per lane of a half: min(x, 0), max x and sum x. */
LANE_KERNEL static void half_ranges(const float *restrict x, float *restrict lo_out,
                                    float *restrict hi_out, float *restrict sx_out) {
    float lo[HALF_LANES] = {0}, hi[HALF_LANES], sx[HALF_LANES] = {0};
    for (int j = 0; j < HALF_LANES; j++) hi[j] = x[j];
    for (int i = 0; i < HALF_ROWS; i++) {
        KEEP_LOOP_ROLLED
        for (int j = 0; j < HALF_LANES; j++) {
            const float v = x[i * HALF_LANES + j];
            lo[j] = v < lo[j] ? v : lo[j];
            hi[j] = v > hi[j] ? v : hi[j];
            sx[j] += v;
        }
    }
    for (int j = 0; j < HALF_LANES; j++) {
        lo_out[j] = lo[j];
        hi_out[j] = hi[j];
        sx_out[j] = sx[j];
    }
}

/* Per lane of a half: sum w and sum w x. */
LANE_KERNEL static void half_weights(const float *restrict w, const float *restrict wx,
                                     float *restrict sw_out, float *restrict swx_out) {
    float sw[HALF_LANES] = {0}, swx[HALF_LANES] = {0};
    for (int i = 0; i < HALF_ROWS; i++) {
        KEEP_LOOP_ROLLED
        for (int j = 0; j < HALF_LANES; j++) {
            sw[j] += w[i * HALF_LANES + j];
            swx[j] += wx[i * HALF_LANES + j];
        }
    }
    for (int j = 0; j < HALF_LANES; j++) {
        sw_out[j] = sw[j];
        swx_out[j] = swx[j];
    }
}

/* The mean importance of a super-block (0 without one). */
static float mean_importance(const float *importance) {
    if (!importance) return 0.0f;
    float part[16] = {0};
    for (int i = 0; i < QK_K; i += 16) {
        for (int k = 0; k < 16; k++) part[k] += importance[i + k];
    }
    float total = 0.0f;
    for (int k = 0; k < 16; k++) total += part[k];
    return total / (float)QK_K;
}

/* Transposes a super-block into lanes with its weights, and finds each sub-block's range and
   level-independent sums. With importance every weight gets a floor of 1e-4 of the mean, so
   that elements of zero importance still get levels that fit them. */
static void load_lanes(const minmax_shape *shape, const float *x, const float *importance,
                       superblock_lanes *t) {
    const int rows = shape->sub_size, lanes = shape->n_sub;
    const float mean = mean_importance(importance);
    t->weighted = mean > 0.0f; /* importance summing to zero says nothing: weigh uniformly */
    for (int j = 0; j < lanes; j++) {
        for (int i = 0; i < rows; i++) t->x[lane_index(rows, i, j)] = x[j * rows + i];
    }
    if (t->weighted) {
        const float floor_w = 1e-4f * mean;
        for (int j = 0; j < lanes; j++) {
            for (int i = 0; i < rows; i++) {
                t->w[lane_index(rows, i, j)] = importance[j * rows + i] + floor_w;
            }
        }
        for (int e = 0; e < QK_K; e++) t->wx[e] = t->w[e] * t->x[e];
    }
    float lo[2][HALF_LANES], hi[2][HALF_LANES], sw[2][HALF_LANES], swx[2][HALF_LANES];
    for (int h = 0; h < 2; h++) {
        const int at = h * HALF_SIZE;
        half_ranges(t->x + at, lo[h], hi[h], swx[h]); /* swx = sum x, right for w = 1 */
        if (t->weighted) {
            half_weights(t->w + at, t->wx + at, sw[h], swx[h]);
        } else {
            for (int k = 0; k < HALF_LANES; k++) sw[h][k] = (float)HALF_ROWS;
        }
    }
    fold_halves(lanes, sw, t->sw);
    fold_halves(lanes, swx, t->swx);
    for (int k = 0; k < HALF_LANES; k++) {
        const int j = (lanes - HALF_LANES) + k; /* the second half's lane */
        t->lo[k] = lo[0][k];
        t->hi[k] = hi[0][k];
        t->lo[j] = j == k ? LB_MIN(lo[0][k], lo[1][k]) : lo[1][k];
        t->hi[j] = j == k ? LB_MAX(hi[0][k], hi[1][k]) : hi[1][k];
    }
}

/* ---- the pass: every element rounded to its nearest level ---- */

/* Each element of a half rounded to its lane's nearest level, and the level sums of each lane:
   the one pass over the elements every candidate costs. Instantiated plain and weighted, so
   that the plain one reads no w. */
static inline void half_sums_body(const float *restrict x, const float *restrict w,
                                  const float *restrict wx, int weighted,
                                  const float *restrict inv_s, const float *restrict shift,
                                  int_range levels, float *restrict swq_out,
                                  float *restrict swqq_out, float *restrict swxq_out) {
    float swq[HALF_LANES] = {0}, swqq[HALF_LANES] = {0}, swxq[HALF_LANES] = {0};
    for (int i = 0; i < HALF_ROWS; i++) {
        KEEP_LOOP_ROLLED
        for (int j = 0; j < HALF_LANES; j++) {
            const int e = i * HALF_LANES + j;
            const float q = level_of(x[e], inv_s[j], shift[j], levels);
            if (weighted) {
                const float wq = w[e] * q;
                swq[j] += wq;
                swqq[j] += wq * q;
                swxq[j] += wx[e] * q;
            } else {
                swq[j] += q;
                swqq[j] += q * q;
                swxq[j] += x[e] * q;
            }
        }
    }
    for (int j = 0; j < HALF_LANES; j++) {
        swq_out[j] = swq[j];
        swqq_out[j] = swqq[j];
        swxq_out[j] = swxq[j];
    }
}

typedef void (*half_sums_fn)(const float *x, const float *w, const float *wx, const float *inv_s,
                             const float *shift, int_range levels, float *swq, float *swqq,
                             float *swxq);

LANE_KERNEL static void half_sums_plain(const float *x, const float *w, const float *wx,
                                        const float *inv_s, const float *shift,
                                        int_range levels, float *swq, float *swqq,
                                        float *swxq) {
    half_sums_body(x, w, wx, 0, inv_s, shift, levels, swq, swqq, swxq);
}

LANE_KERNEL static void half_sums_weighted(const float *x, const float *w, const float *wx,
                                           const float *inv_s, const float *shift,
                                           int_range levels, float *swq, float *swqq,
                                           float *swxq) {
    half_sums_body(x, w, wx, 1, inv_s, shift, levels, swq, swqq, swxq);
}

/* The level sums of every sub-block for the grids g (levels nearest to each element). */
static void level_sums(const minmax_shape *shape, const superblock_lanes *t, const lane_grids *g,
                       lane_sums *out) {
    const half_sums_fn half_sums = t->weighted ? half_sums_weighted : half_sums_plain;
    const int lanes = shape->n_sub;
    float inv_s[MAX_LANES], shift[MAX_LANES];
    for (int j = 0; j < lanes; j++) {
        inv_s[j] = inverse_or_zero(g->s[j]);
        shift[j] = -g->b[j] * inv_s[j];
    }
    float swq[2][HALF_LANES], swqq[2][HALF_LANES], swxq[2][HALF_LANES];
    for (int h = 0; h < 2; h++) {
        const int at = h * HALF_SIZE, lane0 = h * (lanes - HALF_LANES);
        half_sums(t->x + at, t->w + at, t->wx + at, inv_s + lane0, shift + lane0,
                  integers_up_to(shape->nmax), swq[h], swqq[h], swxq[h]);
    }
    fold_halves(lanes, swq, out->swq);
    fold_halves(lanes, swqq, out->swqq);
    fold_halves(lanes, swxq, out->swxq);
}

/* ---- step 1: a continuous grid per sub-block ---- */

/* The weighted least-squares grid (s >= 0, b <= 0) for levels with sums (swq, swqq, swxq), and
   its gain s * swxq + b * swx: at a least-squares solution the error is sum w x^2 minus the
   gain, so gains compare fits without the cancellation of the full error expression.
   The unconstrained solution comes from the 2x2 normal equations. Where it is infeasible (or
   singular: all levels equal), the error is a convex quadratic, so the constrained optimum lies
   on one of the two edges: b = 0 with s = swxq / swqq, or s = 0 with b the weighted mean; the
   one with the larger gain. */
static inline void fit_grid(float sw, float swx, float swq, float swqq, float swxq, float *s_out,
                            float *b_out, float *gain_out) {
    /* singular also when the determinant is only rounding noise (levels all equal, with weights
       whose sums are inexact): it is at least about 0.2 sw swqq for levels that differ */
    const float det = sw * swqq - swq * swq;
    const int solvable = det > 1e-5f * sw * swqq;
    const float inv_det = 1.0f / select_float(solvable, det, 1.0f);
    const float s2 = (sw * swxq - swq * swx) * inv_det;
    const float b2 = (swqq * swx - swq * swxq) * inv_det;
    const int inside = solvable & (s2 >= 0.0f) & (b2 <= 0.0f);
    const float s_free = swxq / select_float(swqq > 0.0f, swqq, 1.0f);
    const float s_edge = select_float(s_free > 0.0f, s_free, 0.0f);
    const float mean = swx / select_float(sw > 0.0f, sw, 1.0f);
    const float b_edge = select_float(mean < 0.0f, mean, 0.0f);
    const int on_s_edge = s_edge * swxq >= b_edge * swx;
    const float s = select_float(inside, s2, select_float(on_s_edge, s_edge, 0.0f));
    const float b = select_float(inside, b2, select_float(on_s_edge, 0.0f, b_edge));
    *s_out = s;
    *b_out = b;
    *gain_out = s * swxq + b * swx;
}

/* The best grid found so far for each sub-block, with the level sums it was fitted to. */
typedef struct {
    lane_grids g;
    lane_sums sums;
    float gain[MAX_LANES];
} lane_best;

/* Fits a grid to each sub-block's levels `u` and keeps it wherever it beats the best so far. */
LANE_KERNEL static void fit_and_keep(int lanes, const superblock_lanes *restrict t,
                                     const lane_sums *restrict u, lane_best *restrict best) {
    for (int j = 0; j < lanes; j++) {
        float s, b, gain;
        fit_grid(t->sw[j], t->swx[j], u->swq[j], u->swqq[j], u->swxq[j], &s, &b, &gain);
        const int better = gain > best->gain[j];
        best->gain[j] = select_float(better, gain, best->gain[j]);
        best->g.s[j] = select_float(better, s, best->g.s[j]);
        best->g.b[j] = select_float(better, b, best->g.b[j]);
        best->sums.swq[j] = select_float(better, u->swq[j], best->sums.swq[j]);
        best->sums.swqq[j] = select_float(better, u->swqq[j], best->sums.swqq[j]);
        best->sums.swxq[j] = select_float(better, u->swxq[j], best->sums.swxq[j]);
    }
}

/* Step 1: per sub-block, a continuous grid (s, b). Each candidate grid rounds the elements to
   levels, which are then fitted in closed form; the best fit is kept. The starts spread the
   levels over the sub-block's range in a few ways; the moves then try grids a little stretched
   or shifted from the best so far, each from the best the ones before found: a greedy local
   search that reaches fits the starts alone would need many more passes for. */
static void fit_subblocks(const minmax_shape *shape, const superblock_lanes *t,
                          const search_plan *plan, lane_best *best) {
    const int lanes = shape->n_sub;
    for (int j = 0; j < lanes; j++) {
        best->gain[j] = -1.0f; /* any fit beats it: a fit's gain is >= 0 */
        best->g.s[j] = 0.0f;
        best->g.b[j] = 0.0f;
        best->sums.swq[j] = best->sums.swqq[j] = best->sums.swxq[j] = 0.0f;
    }
    lane_grids g;
    lane_sums u;
    for (int k = 0; k < plan->n_starts; k++) {
        const float spread = (float)shape->nmax + plan->starts[k].spread;
        const float offset = plan->starts[k].offset;
        for (int j = 0; j < lanes; j++) {
            g.s[j] = (t->hi[j] - t->lo[j]) / spread;
            g.b[j] = t->lo[j] + offset * g.s[j];
        }
        level_sums(shape, t, &g, &u);
        fit_and_keep(lanes, t, &u, best);
    }
    for (int k = 0; k < plan->n_moves; k++) {
        const float stretch = 1.0f + plan->moves[k].stretch, shift = plan->moves[k].shift;
        for (int j = 0; j < lanes; j++) {
            g.s[j] = best->g.s[j] * stretch;
            g.b[j] = best->g.b[j] + shift * best->g.s[j];
        }
        level_sums(shape, t, &g, &u);
        fit_and_keep(lanes, t, &u, best);
    }
}

/* ---- step 2: the super-block scales d and dmin ---- */

/* For levels held fixed, a sub-block's error is a quadratic in its grid (s, b): the model of
   what codes near the fit cost. With s fixed it is, less sum w x^2,
       E(b) = s (s swqq - 2 swxq) + b (b sw - 2 (swx - s swq)),
   least at b = (swx - s swq) / sw, i.e. at the min m = (s swq - swx) / sw. */
static inline float error_at_scale(float s, float swqq, float swxq) {
    return s * (s * swqq - 2.0f * swxq);
}

static inline float error_of_offset(float base, float sw, float residual, float b) {
    return base + b * (b * sw - 2.0f * residual);
}

static float total_error(int lanes, const float *err) {
    float total = 0.0f;
    for (int j = 0; j < lanes; j++) total += err[j];
    return total;
}

/* The modelled error, summed over sub-blocks, of every pair (d[a], dmin[c]), into
   totals[a * n_dmin + c]: each sub-block takes the scale code just below or just above
   s_fit / d, whichever the model prefers, each with the min code nearest the min refitted to
   it. (The model's valley runs diagonally in (scale, min): the scale code that rounds nearer is
   not always the better one.) */
LANE_KERNEL static void score_scale_pairs(int lanes, int_range codes,
                                          const superblock_lanes *restrict t,
                                          const lane_sums *restrict u,
                                          const float *restrict s_fit, const float *restrict d,
                                          int n_d, const float *restrict dmin, int n_dmin,
                                          float *restrict totals) {
    for (int a = 0; a < n_d; a++) {
        /* per sub-block and scale code (below, above): E at b = 0, swx - s swq, the min fit */
        float base[2][MAX_LANES], residual[2][MAX_LANES], m_fit[2][MAX_LANES];
        const float inv_d = inverse_or_zero(d[a]);
        for (int j = 0; j < lanes; j++) {
            const float inv_sw = 1.0f / select_float(t->sw[j] > 0.0f, t->sw[j], 1.0f);
            const float below = round_in_range(s_fit[j] * inv_d - 0.5f, codes);
            UNROLL_CANDIDATES
            for (int side = 0; side < 2; side++) {
                const float s = d[a] * round_in_range(below + (float)side, codes);
                base[side][j] = error_at_scale(s, u->swqq[j], u->swxq[j]);
                residual[side][j] = t->swx[j] - s * u->swq[j];
                m_fit[side][j] = -residual[side][j] * inv_sw;
            }
        }
        for (int c = 0; c < n_dmin; c++) {
            const float inv_dmin = inverse_or_zero(dmin[c]);
            float err[MAX_LANES];
            for (int j = 0; j < lanes; j++) {
                float e[2];
                UNROLL_CANDIDATES
                for (int side = 0; side < 2; side++) {
                    const float b = -dmin[c] * round_in_range(m_fit[side][j] * inv_dmin, codes);
                    e[side] = error_of_offset(base[side][j], t->sw[j], residual[side][j], b);
                }
                err[j] = select_float(e[1] < e[0], e[1], e[0]);
            }
            totals[a * n_dmin + c] = total_error(lanes, err);
        }
    }
}

/* Candidate scale: v / (code_max + offset) in fp16, at most fp16's largest. */
static float super_scale_candidate(float v, float code_max, float offset) {
    return round_to_fp16(LB_MIN(v / (code_max + offset), LB_FP16_MAX));
}

/* Step 2: the (d, dmin) pair, among a few candidates, whose codes give the smallest modelled
   error with the levels of step 1 held fixed. The candidates put the largest scale (min) on the
   largest code, or a little beyond it: clipping the largest sub-block slightly can refine all
   the others. */
#define MAX_OFFSETS 8

/* The offsets of Q2_K and Q5_K; Q4_K, nearer its accuracy goal, tries one more. */
static const float kFourOffsets[] = {-0.5f, 0.0f, 0.5f, 1.0f};

static void choose_super_scales(const minmax_shape *shape, const superblock_lanes *t,
                                const lane_best *fit, float *d_out, float *dmin_out) {
    const int lanes = shape->n_sub, n = shape->n_offsets;
    const float code_max = (float)shape->code_max;
    float max_s = 0.0f, max_m = 0.0f;
    for (int j = 0; j < lanes; j++) {
        max_s = fit->g.s[j] > max_s ? fit->g.s[j] : max_s;
        max_m = -fit->g.b[j] > max_m ? -fit->g.b[j] : max_m;
    }
    float d[MAX_OFFSETS], dmin[MAX_OFFSETS];
    for (int a = 0; a < n; a++) {
        d[a] = super_scale_candidate(max_s, code_max, shape->code_offsets[a]);
        dmin[a] = super_scale_candidate(max_m, code_max, shape->code_offsets[a]);
    }
    float totals[MAX_OFFSETS * MAX_OFFSETS];
    score_scale_pairs(lanes, integers_up_to(shape->code_max), t, &fit->sums, fit->g.s, d, n, dmin,
                      n, totals);
    int best = 0;
    for (int k = 1; k < n * n; k++) best = totals[k] < totals[best] ? k : best;
    *d_out = d[best / n];
    *dmin_out = dmin[best % n];
}

/* ---- step 3: integer codes, scored exactly ---- */

/* Integer codes (small integers held in floats) and their error per sub-block. */
typedef struct {
    float sc[MAX_LANES], mn[MAX_LANES], err[MAX_LANES];
} lane_codes;

/* The best codes found so far, with the sums of their levels. */
typedef struct {
    lane_codes c;
    lane_sums sums;
} lane_exact;

/* No codes yet: any exact error beats these (codes 0 stay only if every error is NaN). */
static void reset_exact(int lanes, lane_exact *best) {
    for (int j = 0; j < lanes; j++) {
        best->c.err[j] = FLT_MAX;
        best->c.sc[j] = best->c.mn[j] = 0.0f;
        best->sums.swq[j] = best->sums.swqq[j] = best->sums.swxq[j] = 0.0f;
    }
}

/* Per sub-block, the best two codes (sc, mn) for scales d and dmin under the model of the
   levels `u`: among the scale codes just below and just above s_fit / d, each with the min
   codes just below and just above the min refitted to that scale. ("Just below" is rounded
   from v - 1/2, so for an integer v it may be v itself: either way the pair brackets v.) */
LANE_KERNEL static void model_codes(int lanes, int_range codes, const superblock_lanes *restrict t,
                                    const lane_sums *restrict u, const float *restrict s_fit,
                                    float d, float dmin, lane_codes *restrict best,
                                    lane_codes *restrict second) {
    const float inv_d = inverse_or_zero(d), inv_dmin = inverse_or_zero(dmin);
    for (int j = 0; j < lanes; j++) {
        const float sw = t->sw[j];
        const float inv_sw = 1.0f / select_float(sw > 0.0f, sw, 1.0f);
        const float sc_below = round_in_range(s_fit[j] * inv_d - 0.5f, codes);
        float e1 = FLT_MAX, sc1 = 0.0f, mn1 = 0.0f, e2 = FLT_MAX, sc2 = 0.0f, mn2 = 0.0f;
        UNROLL_CANDIDATES
        for (int ks = 0; ks < 2; ks++) {
            const float sc = round_in_range(sc_below + (float)ks, codes);
            const float s = d * sc;
            const float base = error_at_scale(s, u->swqq[j], u->swxq[j]);
            const float residual = t->swx[j] - s * u->swq[j];
            const float mn_below = round_in_range(-residual * inv_sw * inv_dmin - 0.5f, codes);
            UNROLL_CANDIDATES
            for (int km = 0; km < 2; km++) {
                const float mn = round_in_range(mn_below + (float)km, codes);
                /* codes clamped at the top repeat the ones before: not a second choice */
                const int repeat = ((float)ks > sc - sc_below) | ((float)km > mn - mn_below);
                const float e = select_float(repeat, FLT_MAX,
                                            error_of_offset(base, sw, residual, -dmin * mn));
                const int first = e < e1, runner_up = !first & (e < e2);
                e2 = select_float(first, e1, select_float(runner_up, e, e2));
                sc2 = select_float(first, sc1, select_float(runner_up, sc, sc2));
                mn2 = select_float(first, mn1, select_float(runner_up, mn, mn2));
                e1 = select_float(first, e, e1);
                sc1 = select_float(first, sc, sc1);
                mn1 = select_float(first, mn, mn1);
            }
        }
        best->sc[j] = sc1;
        best->mn[j] = mn1;
        second->sc[j] = select_float(e2 < FLT_MAX, sc2, sc1);
        second->mn[j] = select_float(e2 < FLT_MAX, mn2, mn1);
    }
}

/* The exact error of codes for every sub-block (one pass: every element at its nearest level),
   kept, with the level sums, wherever it beats `best`. */
LANE_KERNEL static void keep_better_codes(int lanes, const superblock_lanes *restrict t,
                                          const lane_grids *restrict g,
                                          const lane_codes *restrict codes,
                                          const lane_sums *restrict u,
                                          lane_exact *restrict best) {
    for (int j = 0; j < lanes; j++) {
        const float err = error_of_offset(error_at_scale(g->s[j], u->swqq[j], u->swxq[j]),
                                          t->sw[j], t->swx[j] - g->s[j] * u->swq[j], g->b[j]);
        const int better = err < best->c.err[j];
        best->c.err[j] = select_float(better, err, best->c.err[j]);
        best->c.sc[j] = select_float(better, codes->sc[j], best->c.sc[j]);
        best->c.mn[j] = select_float(better, codes->mn[j], best->c.mn[j]);
        best->sums.swq[j] = select_float(better, u->swq[j], best->sums.swq[j]);
        best->sums.swqq[j] = select_float(better, u->swqq[j], best->sums.swqq[j]);
        best->sums.swxq[j] = select_float(better, u->swxq[j], best->sums.swxq[j]);
    }
}

static void try_codes(const minmax_shape *shape, const superblock_lanes *t, float d, float dmin,
                      const lane_codes *codes, lane_exact *best) {
    const int lanes = shape->n_sub;
    lane_grids g;
    for (int j = 0; j < lanes; j++) {
        g.s[j] = d * codes->sc[j];
        g.b[j] = -(dmin * codes->mn[j]);
    }
    lane_sums u;
    level_sums(shape, t, &g, &u);
    keep_better_codes(lanes, t, &g, codes, &u, best);
}

/* The continuous least-squares scale of each sub-block's levels `u`. */
LANE_KERNEL static void fitted_scales(int lanes, const superblock_lanes *restrict t,
                                      const lane_sums *restrict u, float *restrict s_fit) {
    for (int j = 0; j < lanes; j++) {
        float b, gain;
        fit_grid(t->sw[j], t->swx[j], u->swq[j], u->swqq[j], u->swxq[j], &s_fit[j], &b, &gain);
    }
}

/* The two codes the model of the levels `u` prefers for (d, dmin), scored exactly into
   `best`. */
static void try_model_codes(const minmax_shape *shape, const superblock_lanes *t,
                            const lane_sums *u, float d, float dmin, lane_exact *best) {
    const int lanes = shape->n_sub;
    float s_fit[MAX_LANES];
    fitted_scales(lanes, t, u, s_fit);
    lane_codes first, second;
    model_codes(lanes, integers_up_to(shape->code_max), t, u, s_fit, d, dmin, &first, &second);
    try_codes(shape, t, d, dmin, &first, best);
    try_codes(shape, t, d, dmin, &second, best);
}

/* Given integer codes and levels the error is a quadratic in (d, dmin): the 2x2 normal
   equations give both. Returns 0 when the system is singular or the solution unusable. */
static int refit_super_scales(const minmax_shape *shape, const superblock_lanes *t,
                              const lane_exact *best, float *d_out, float *dmin_out) {
    double a11 = 0, a12 = 0, a22 = 0, r1 = 0, r2 = 0;
    for (int j = 0; j < shape->n_sub; j++) {
        const double c = best->c.sc[j], m = best->c.mn[j];
        /* dequant = d * (c q) - dmin * m */
        a11 += c * c * best->sums.swqq[j];
        a12 -= c * m * best->sums.swq[j];
        a22 += m * m * t->sw[j];
        r1 += c * best->sums.swxq[j];
        r2 -= m * t->swx[j];
    }
    const double det = a11 * a22 - a12 * a12;
    if (!(det > 1e-12 * a11 * a22) || !(a11 > 0) || !(a22 > 0)) return 0;
    const double d = (r1 * a22 - a12 * r2) / det;
    const double dmin = (a11 * r2 - a12 * r1) / det;
    if (!(d >= 0) || !(dmin >= 0) || d > LB_FP16_MAX || dmin > LB_FP16_MAX) return 0;
    *d_out = round_to_fp16((float)d);
    *dmin_out = round_to_fp16((float)dmin);
    return 1;
}

/* Step 3: integer codes for (d, dmin), scored exactly: the model's two favourites for the
   levels of step 1. Then d and dmin are refitted to those codes and their levels by least
   squares and kept if the model's favourites for them (with the levels re-rounded: they moved)
   do better in total. (Another round of either gained under 0.05% on normal data.) */
static void choose_codes(const minmax_shape *shape, const superblock_lanes *t,
                         const lane_sums *fit_levels, float *d, float *dmin, lane_exact *best) {
    const int lanes = shape->n_sub;
    reset_exact(lanes, best);
    try_model_codes(shape, t, fit_levels, *d, *dmin, best);
    float d2, dmin2;
    if (refit_super_scales(shape, t, best, &d2, &dmin2) && (d2 != *d || dmin2 != *dmin)) {
        lane_exact trial;
        reset_exact(lanes, &trial);
        try_model_codes(shape, t, &best->sums, d2, dmin2, &trial);
        if (total_error(lanes, trial.c.err) < total_error(lanes, best->c.err)) {
            *d = d2;
            *dmin = dmin2;
            *best = trial;
        }
    }
}

/* Every element at its nearest level for per-element inverse scales and shifts: one flat loop,
   which vectorizes whatever the sub-block size. */
LANE_KERNEL static void round_levels(const float *restrict x, const float *restrict inv_s,
                                     const float *restrict shift, int_range levels,
                                     uint8_t *restrict out) {
    for (int e = 0; e < QK_K; e++) {
        out[e] = (uint8_t)(int)level_of(x[e], inv_s[e], shift[e], levels);
    }
}

/* Every element at its nearest level for the final scales, in natural order. */
static void round_final_levels(const minmax_shape *shape, const float *x, float d, float dmin,
                               const lane_codes *codes, uint8_t *levels) {
    const int n = shape->sub_size;
    float inv_s[QK_K], shift[QK_K];
    for (int j = 0; j < shape->n_sub; j++) {
        const float inv_sj = inverse_or_zero(d * codes->sc[j]);
        const float shift_j = (dmin * codes->mn[j]) * inv_sj;
        for (int i = 0; i < n; i++) {
            inv_s[j * n + i] = inv_sj;
            shift[j * n + i] = shift_j;
        }
    }
    round_levels(x, inv_s, shift, integers_up_to(shape->nmax), levels);
}

/* Encodes one super-block of 256 weights. */
static lowbit_status search_superblock(const float *x, const float *importance,
                                       const minmax_shape *shape, minmax_code *code) {
    superblock_lanes t;
    load_lanes(shape, x, importance, &t);
    const int lanes = shape->n_sub;
    /* a sub-block whose level spacing or min would need d or dmin beyond fp16's range (checked
       on its raw range, so that Inf from a range beyond float's is caught too) */
    const float limit = LB_FP16_MAX * (float)shape->code_max;
    for (int j = 0; j < lanes; j++) {
        if (!((t.hi[j] - t.lo[j]) / (float)shape->nmax <= limit && -t.lo[j] <= limit)) {
            return LOWBIT_ERR_SCALE_OVERFLOW;
        }
    }

    lane_best fit;
    fit_subblocks(shape, &t, t.weighted ? &shape->weighted : &shape->plain, &fit);
    float d, dmin;
    choose_super_scales(shape, &t, &fit, &d, &dmin);
    lane_exact best;
    choose_codes(shape, &t, &fit.sums, &d, &dmin, &best);

    round_final_levels(shape, x, d, dmin, &best.c, code->levels);
    for (int j = 0; j < lanes; j++) {
        code->sc[j] = (uint8_t)best.c.sc[j];
        code->mn[j] = (uint8_t)best.c.mn[j];
    }
    code->d = lb_fp32_to_fp16(d);
    code->dmin = lb_fp32_to_fp16(dmin);
    return LOWBIT_OK;
}

/* Runs the search over a row, calling `pack` for every super-block. */
typedef void (*pack_code_fn)(const minmax_code *code, void *block);

static lowbit_status quantize_row_minmax(const float *src, void *dst, int64_t n,
                                         const float *importance, const minmax_shape *shape,
                                         size_t block_bytes, pack_code_fn pack) {
    minmax_code code;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float *w = importance ? importance + b * QK_K : NULL;
        const lowbit_status st = search_superblock(src + b * QK_K, w, shape, &code);
        if (st != LOWBIT_OK) return st;
        pack(&code, (uint8_t *)dst + b * block_bytes);
    }
    return LOWBIT_OK;
}

/* The reference encoder: per sub-block, the scale spreads [min(x,0), max x] over the levels;
   d and dmin put the largest scale and min on the largest code; elements round to nearest. */
static lowbit_status quantize_row_minmax_ref(const float *src, void *dst, int64_t n,
                                             const minmax_shape *shape, size_t block_bytes,
                                             pack_code_fn pack) {
    minmax_code code;
    const int sub = shape->sub_size;
    const float code_max = (float)shape->code_max;
    const int_range codes = integers_up_to(shape->code_max);
    for (int64_t blk = 0; blk < n / QK_K; blk++) {
        const float *x = src + blk * QK_K;
        float s[MAX_LANES], m[MAX_LANES], max_s = 0.0f, max_m = 0.0f;
        for (int j = 0; j < shape->n_sub; j++) {
            float lo = x[j * sub], hi = x[j * sub];
            for (int i = 1; i < sub; i++) {
                lo = x[j * sub + i] < lo ? x[j * sub + i] : lo;
                hi = x[j * sub + i] > hi ? x[j * sub + i] : hi;
            }
            if (lo > 0.0f) lo = 0.0f;
            s[j] = (hi - lo) / (float)shape->nmax;
            m[j] = -lo;
            max_s = s[j] > max_s ? s[j] : max_s;
            max_m = m[j] > max_m ? m[j] : max_m;
        }
        if (max_s / code_max > LB_FP16_MAX || max_m / code_max > LB_FP16_MAX) {
            return LOWBIT_ERR_SCALE_OVERFLOW;
        }
        const float d = round_to_fp16(max_s / code_max);
        const float dmin = round_to_fp16(max_m / code_max);
        const float inv_d = inverse_or_zero(d);
        const float inv_dmin = inverse_or_zero(dmin);
        for (int j = 0; j < shape->n_sub; j++) {
            const int sc = (int)round_in_range(s[j] * inv_d, codes);
            const int mn = (int)round_in_range(m[j] * inv_dmin, codes);
            const float inv_scale = inverse_or_zero(d * (float)sc);
            const float shift = (dmin * (float)mn) * inv_scale;
            const int_range range = integers_up_to(shape->nmax);
            for (int i = 0; i < sub; i++) {
                code.levels[j * sub + i] =
                    (uint8_t)(int)level_of(x[j * sub + i], inv_scale, shift, range);
            }
            code.sc[j] = (uint8_t)sc;
            code.mn[j] = (uint8_t)mn;
        }
        code.d = lb_fp32_to_fp16(d);
        code.dmin = lb_fp32_to_fp16(dmin);
        pack(&code, (uint8_t *)dst + blk * block_bytes);
    }
    return LOWBIT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Q2_K: 16 sub-blocks of 16, 4-bit scale (low nibble) and min (high nibble), 2-bit quants      */
/* ------------------------------------------------------------------------------------------ */

/* Quants are stored in 128-element halves: byte 32h + l holds, in bits 2k..2k+1, element
   128h + 32k + l (k = 0..3, l = 0..31). */
static void pack_q2_K(const minmax_code *code, void *block) {
    block_q2_K *y = block;
    for (int j = 0; j < 16; j++) y->scales[j] = (uint8_t)(code->sc[j] | (code->mn[j] << 4));
    for (int h = 0; h < 2; h++) {
        const uint8_t *q = code->levels + 128 * h;
        for (int l = 0; l < 32; l++) {
            y->qs[32 * h + l] =
                (uint8_t)(q[l] | (q[l + 32] << 2) | (q[l + 64] << 4) | (q[l + 96] << 6));
        }
    }
    y->d = code->d;
    y->dmin = code->dmin;
}

/* A format's two row encoders, lb_quantize_ref_<name> and lb_quantize_<name> (importance
   weighted), through its shape and pack_<name>. */
#define MINMAX_ROW_ENCODERS(name, shape)                                                           \
    lowbit_status lb_quantize_ref_##name(const float *src, void *dst, int64_t n,                   \
                                         const float *importance) {                                \
        (void)importance;                                                                          \
        return quantize_row_minmax_ref(src, dst, n, &shape, sizeof(block_##name), pack_##name);    \
    }                                                                                              \
                                                                                                   \
    lowbit_status lb_quantize_##name(const float *src, void *dst, int64_t n,                       \
                                     const float *importance) {                                    \
        return quantize_row_minmax(src, dst, n, importance, &shape, sizeof(block_##name),          \
                                   pack_##name);                                                   \
    }

static const grid_start kStartsQ2K[] = {{0.75f, 0.375f}, {0.75f, 0.625f}, {0.5f, 0.0f}};
static const grid_move kMovesQ2K[] = {{-0.01f, -0.1f}, {-0.005f, 0.1f}};
static const grid_start kStartsQ2KWeighted[] = {{0.75f, 0.375f}, {0.75f, 0.75f}, {1.0f, 0.125f},
                                                 {0.0f, -0.125f}};
static const grid_move kMovesQ2KWeighted[] = {{-0.015f, 0.0f}, {-0.03f, 0.2f}, {-0.03f, -0.15f}};
static const minmax_shape kShapeQ2K = {
    16, 16, 3, 15,
    {kStartsQ2K, LB_ARRAY_LEN(kStartsQ2K), kMovesQ2K, LB_ARRAY_LEN(kMovesQ2K)},
    {kStartsQ2KWeighted, LB_ARRAY_LEN(kStartsQ2KWeighted), kMovesQ2KWeighted,
     LB_ARRAY_LEN(kMovesQ2KWeighted)},
    kFourOffsets, LB_ARRAY_LEN(kFourOffsets)};

MINMAX_ROW_ENCODERS(q2_K, kShapeQ2K)

void lb_dequantize_q2_K(const void *src, float *dst, int64_t n) {
    const block_q2_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = lb_fp16_to_fp32(x[b].d);
        const float dmin = lb_fp16_to_fp32(x[b].dmin);
        for (int h = 0; h < 2; h++) {
            const uint8_t *q = x[b].qs + 32 * h;
            for (int k = 0; k < 4; k++) {
                for (int half = 0; half < 2; half++) {
                    const uint8_t sc = x[b].scales[8 * h + 2 * k + half];
                    const float scale = d * (float)(sc & 0x0F);
                    const float offset = dmin * (float)(sc >> 4);
                    for (int l = 0; l < 16; l++) {
                        const int level = (q[16 * half + l] >> (2 * k)) & 3;
                        *dst++ = scale * (float)level - offset;
                    }
                }
            }
        }
    }
}

float lb_vec_dot_q2_K(int64_t n, const void *weights, const void *activations) {
    const block_q2_K *x = weights;
    const block_q8_K *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t sum_scaled = 0, sum_mins = 0;
        for (int j = 0; j < 16; j++) {
            /* sub-block j: elements 16j..16j+15, in half h = j/8 at bit pair k = (j%8)/2 */
            const int h = j / 8, k = (j % 8) / 2, part = j % 2;
            const uint8_t *q = x[b].qs + 32 * h + 16 * part;
            const int8_t *a = y[b].qs + 16 * j;
            int32_t dot = 0;
            for (int l = 0; l < 16; l++) dot += ((q[l] >> (2 * k)) & 3) * a[l];
            sum_scaled += (x[b].scales[j] & 0x0F) * dot;
            /* the min term needs only the activation's sum over the sub-block: Q8_K's bsums */
            sum_mins += (x[b].scales[j] >> 4) * y[b].bsums[j];
        }
        const float d = lb_fp16_to_fp32(x[b].d) * y[b].d;
        const float dmin = lb_fp16_to_fp32(x[b].dmin) * y[b].d;
        sum += d * (float)sum_scaled - dmin * (float)sum_mins;
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* Q4_K: 8 sub-blocks of 32, 6-bit scales and mins, 4-bit quants                                */
/* ------------------------------------------------------------------------------------------ */

/* Quants in 64-element chunks: byte 32c + l holds element 64c + l (low nibble) and element
   64c + 32 + l (high nibble). */
static void pack_q4_K(const minmax_code *code, void *block) {
    block_q4_K *y = block;
    y->d = code->d;
    y->dmin = code->dmin;
    pack_scales_mins_k4(code->sc, code->mn, y->scales);
    for (int c = 0; c < 4; c++) {
        const uint8_t *q = code->levels + 64 * c;
        for (int l = 0; l < 32; l++) y->qs[32 * c + l] = (uint8_t)(q[l] | (q[l + 32] << 4));
    }
}

static const grid_start kStartsQ4K[] = {{0.25f, 0.125f}, {0.25f, -0.125f}, {0.25f, 0.375f},
                                         {-0.75f, 0.125f}};
static const grid_move kMovesQ4K[] = {{-0.01f, 0.05f}, {0.015f, -0.1f}, {-0.01f, 0.15f},
                                       {0.005f, -0.1f}};
static const grid_start kStartsQ4KWeighted[] = {{0.5f, 0.25f}, {0.25f, 0.5f}, {0.25f, -0.125f},
                                                 {-1.0f, 0.0f}, {-1.75f, 0.125f}};
static const grid_move kMovesQ4KWeighted[] = {{0.0f, 0.0f}, {-0.03f, 0.2f}, {0.025f, -0.15f},
                                               {-0.025f, 0.3f}};
static const float kFiveOffsets[] = {-0.5f, 0.0f, 0.5f, 1.0f, 2.0f};
static const minmax_shape kShapeQ4K = {
    32, 8, 15, 63,
    {kStartsQ4K, LB_ARRAY_LEN(kStartsQ4K), kMovesQ4K, LB_ARRAY_LEN(kMovesQ4K)},
    {kStartsQ4KWeighted, LB_ARRAY_LEN(kStartsQ4KWeighted), kMovesQ4KWeighted,
     LB_ARRAY_LEN(kMovesQ4KWeighted)},
    kFiveOffsets, LB_ARRAY_LEN(kFiveOffsets)};

MINMAX_ROW_ENCODERS(q4_K, kShapeQ4K)

void lb_dequantize_q4_K(const void *src, float *dst, int64_t n) {
    const block_q4_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = lb_fp16_to_fp32(x[b].d);
        const float dmin = lb_fp16_to_fp32(x[b].dmin);
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = x[b].qs + 32 * c;
            int sc, mn;
            unpack_scale_min_k4(2 * c, x[b].scales, &sc, &mn);
            const float scale_lo = d * (float)sc, offset_lo = dmin * (float)mn;
            unpack_scale_min_k4(2 * c + 1, x[b].scales, &sc, &mn);
            const float scale_hi = d * (float)sc, offset_hi = dmin * (float)mn;
            for (int l = 0; l < 32; l++) *dst++ = scale_lo * (float)(q[l] & 0x0F) - offset_lo;
            for (int l = 0; l < 32; l++) *dst++ = scale_hi * (float)(q[l] >> 4) - offset_hi;
        }
    }
}

float lb_vec_dot_q4_K(int64_t n, const void *weights, const void *activations) {
    const block_q4_K *x = weights;
    const block_q8_K *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t sum_scaled = 0, sum_mins = 0;
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = x[b].qs + 32 * c;
            const int8_t *a = y[b].qs + 64 * c;
            int32_t dot_lo = 0, dot_hi = 0;
            for (int l = 0; l < 32; l++) {
                dot_lo += (q[l] & 0x0F) * a[l];
                dot_hi += (q[l] >> 4) * a[l + 32];
            }
            int sc, mn;
            unpack_scale_min_k4(2 * c, x[b].scales, &sc, &mn);
            sum_scaled += sc * dot_lo;
            sum_mins += mn * (y[b].bsums[4 * c] + y[b].bsums[4 * c + 1]);
            unpack_scale_min_k4(2 * c + 1, x[b].scales, &sc, &mn);
            sum_scaled += sc * dot_hi;
            sum_mins += mn * (y[b].bsums[4 * c + 2] + y[b].bsums[4 * c + 3]);
        }
        const float d = lb_fp16_to_fp32(x[b].d) * y[b].d;
        const float dmin = lb_fp16_to_fp32(x[b].dmin) * y[b].d;
        sum += d * (float)sum_scaled - dmin * (float)sum_mins;
    }
    return sum;
}

/* ------------------------------------------------------------------------------------------ */
/* Q5_K: Q4_K's layout plus a fifth bit per quant in qh                                         */
/* ------------------------------------------------------------------------------------------ */

/* Low nibbles as in Q4_K; qh[l] bit 2c holds the high bit of element 64c + l and bit 2c + 1
   that of element 64c + 32 + l. */
static void pack_q5_K(const minmax_code *code, void *block) {
    block_q5_K *y = block;
    y->d = code->d;
    y->dmin = code->dmin;
    pack_scales_mins_k4(code->sc, code->mn, y->scales);
    memset(y->qh, 0, sizeof y->qh);
    for (int c = 0; c < 4; c++) {
        const uint8_t *q = code->levels + 64 * c;
        for (int l = 0; l < 32; l++) {
            y->qs[32 * c + l] = (uint8_t)((q[l] & 0x0F) | ((q[l + 32] & 0x0F) << 4));
            y->qh[l] |= (uint8_t)(((q[l] >> 4) << (2 * c)) | ((q[l + 32] >> 4) << (2 * c + 1)));
        }
    }
}

static const grid_start kStartsQ5K[] = {{0.25f, 0.125f}, {-0.75f, 0.125f}, {0.25f, 0.375f},
                                         {0.25f, -0.125f}};
static const grid_move kMovesQ5K[] = {{0.005f, -0.05f}, {-0.01f, 0.15f}, {0.01f, -0.2f}};
static const grid_start kStartsQ5KWeighted[] = {{0.0f, 0.0f}, {-0.5f, -0.75f}, {-2.0f, 0.0f},
                                                 {0.25f, -0.125f}};
static const grid_move kMovesQ5KWeighted[] = {{0.0f, 0.0f}, {-0.015f, 0.25f}, {0.015f, -0.3f}};
static const minmax_shape kShapeQ5K = {
    32, 8, 31, 63,
    {kStartsQ5K, LB_ARRAY_LEN(kStartsQ5K), kMovesQ5K, LB_ARRAY_LEN(kMovesQ5K)},
    {kStartsQ5KWeighted, LB_ARRAY_LEN(kStartsQ5KWeighted), kMovesQ5KWeighted,
     LB_ARRAY_LEN(kMovesQ5KWeighted)},
    kFourOffsets, LB_ARRAY_LEN(kFourOffsets)};

MINMAX_ROW_ENCODERS(q5_K, kShapeQ5K)

void lb_dequantize_q5_K(const void *src, float *dst, int64_t n) {
    const block_q5_K *x = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = lb_fp16_to_fp32(x[b].d);
        const float dmin = lb_fp16_to_fp32(x[b].dmin);
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = x[b].qs + 32 * c;
            const uint8_t *qh = x[b].qh;
            int sc, mn;
            unpack_scale_min_k4(2 * c, x[b].scales, &sc, &mn);
            const float scale_lo = d * (float)sc, offset_lo = dmin * (float)mn;
            unpack_scale_min_k4(2 * c + 1, x[b].scales, &sc, &mn);
            const float scale_hi = d * (float)sc, offset_hi = dmin * (float)mn;
            for (int l = 0; l < 32; l++) {
                const int level = (q[l] & 0x0F) | (((qh[l] >> (2 * c)) & 1) << 4);
                *dst++ = scale_lo * (float)level - offset_lo;
            }
            for (int l = 0; l < 32; l++) {
                const int level = (q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
                *dst++ = scale_hi * (float)level - offset_hi;
            }
        }
    }
}

float lb_vec_dot_q5_K(int64_t n, const void *weights, const void *activations) {
    const block_q5_K *x = weights;
    const block_q8_K *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32_t sum_scaled = 0, sum_mins = 0;
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = x[b].qs + 32 * c;
            const uint8_t *qh = x[b].qh;
            const int8_t *a = y[b].qs + 64 * c;
            int32_t dot_lo = 0, dot_hi = 0;
            for (int l = 0; l < 32; l++) {
                dot_lo += ((q[l] & 0x0F) | (((qh[l] >> (2 * c)) & 1) << 4)) * a[l];
                dot_hi += ((q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4)) * a[l + 32];
            }
            int sc, mn;
            unpack_scale_min_k4(2 * c, x[b].scales, &sc, &mn);
            sum_scaled += sc * dot_lo;
            sum_mins += mn * (y[b].bsums[4 * c] + y[b].bsums[4 * c + 1]);
            unpack_scale_min_k4(2 * c + 1, x[b].scales, &sc, &mn);
            sum_scaled += sc * dot_hi;
            sum_mins += mn * (y[b].bsums[4 * c + 2] + y[b].bsums[4 * c + 3]);
        }
        const float d = lb_fp16_to_fp32(x[b].d) * y[b].d;
        const float dmin = lb_fp16_to_fp32(x[b].dmin) * y[b].d;
        sum += d * (float)sum_scaled - dmin * (float)sum_mins;
    }
    return sum;
}
