/*
 * GGUF's legacy 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the activation format
 * Q8_1.
 *
 * Values (q is the stored unsigned level, d and m fp16):
 *   Q4_0  x = d * (q - 8)        q in 0..15
 *   Q4_1  x = d * q + m          q in 0..15
 *   Q5_0  x = d * (q - 16)       q in 0..31, 5th bit in qh
 *   Q5_1  x = d * q + m          q in 0..31, 5th bit in qh
 *   Q8_0  x = d * q              q in -128..127 (the encoders use -127..127)
 *   Q8_1  x = d * q, plus s = d * sum(q) for the min term of dot products with Q4_1/Q5_1
 * In the 4- and 5-bit formats byte j of qs holds element j in its low nibble and element j + 16
 * in its high nibble; qh is a little-endian 32-bit word whose bit j is the 5th bit of element j.
 *
 * The searching encoders minimise sum_i w_i (x_i - dequant_i)^2 per block. Each candidate's
 * integer levels come from one rounding pass at a candidate step; the closed-form least-squares
 * scale (and, for Q4_1/Q5_1, min: a 2x2 normal system) for those levels is rounded to fp16 as
 * stored and the candidate is ranked by its exact error at those stored values. The first
 * candidate is always the reference's own rounding (its scale from the block's extreme or range),
 * and a later one must beat it by more than float noise, so that no block encodes worse than the
 * reference encodes it. Further candidates are steps slightly off the reference's (and, with a
 * min, grids anchored at the min, the max or the centre), then Lloyd steps (re-round at the best
 * stored values so far, re-fit). Last, every element is rounded to its nearest level for the
 * stored values, which can only lower the error. Without importance the searches are short (one
 * to five passes, see the plans) so that the encoders cost about what plain rounding does; with
 * importance they try a fine grid of steps. Q8_0's passes sum residuals instead of raw products,
 * as its error is too small for float sums of x l to rank candidates.
 *
 * The search works on eight blocks at a time, each a vector lane (see lane_blocks): every loop
 * runs over fixed-size rows of eight lanes with lane-wise sums, so that gcc vectorizes it (SSE2 is
 * enough) with no horizontal reduction and a fixed order of float additions.
 */
#include "blocks.h"

#define BLOCK 32
#define HALF_BLOCK (BLOCK / 2)

/* ------------------------------------------------------------------------------------------ */
/* Small helpers shared by every format                                                         */
/* ------------------------------------------------------------------------------------------ */

/* The reference's choice of extreme: the first element of largest magnitude, signed. */
static float first_signed_extreme(const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < BLOCK; j++) {
        const float ax = fabsf(x[j]);
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    return max;
}

/* The block's min and max by pairwise halving (element-wise stages that vectorize, unlike the
   serial compare chain of a plain loop). */
static void block_min_max(const float *x, float *min_out, float *max_out) {
    float lo[HALF_BLOCK], hi[HALF_BLOCK];
    for (int k = 0; k < HALF_BLOCK; k++) {
        const float a = x[k], b = x[k + HALF_BLOCK];
        lo[k] = b < a ? b : a;
        hi[k] = b > a ? b : a;
    }
    for (int k = 0; k < 8; k++) {
        lo[k] = lo[k + 8] < lo[k] ? lo[k + 8] : lo[k];
        hi[k] = hi[k + 8] > hi[k] ? hi[k + 8] : hi[k];
    }
    for (int k = 0; k < 4; k++) {
        lo[k] = lo[k + 4] < lo[k] ? lo[k + 4] : lo[k];
        hi[k] = hi[k + 4] > hi[k] ? hi[k + 4] : hi[k];
    }
    const float lo01 = lo[1] < lo[0] ? lo[1] : lo[0], lo23 = lo[3] < lo[2] ? lo[3] : lo[2];
    const float hi01 = hi[1] > hi[0] ? hi[1] : hi[0], hi23 = hi[3] > hi[2] ? hi[3] : hi[2];
    *min_out = lo23 < lo01 ? lo23 : lo01;
    *max_out = hi23 > hi01 ? hi23 : hi01;
}

/* 1/d, or 0 where d is 0 or so small that 1/d overflows (the block then encodes to zero levels). */
static inline float safe_inverse(float d) {
    if (d == 0.0f) return 0.0f;
    const float id = 1.0f / d;
    return isfinite(id) ? id : 0.0f;
}

static inline uint32_t load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static inline void store_qh(uint8_t qh[4], uint32_t bits) {
    for (int i = 0; i < 4; i++) qh[i] = (uint8_t)(bits >> (8 * i));
}

/* Packs unsigned levels 0..15 (or the low 4 bits of 0..31): element j low nibble, j+16 high.
   Levels travel as int32 so that the float-to-int conversions before vectorize. */
static void pack_nibbles(const int32_t levels[BLOCK], uint8_t qs[HALF_BLOCK]) {
    for (int j = 0; j < HALF_BLOCK; j++) {
        qs[j] = (uint8_t)((levels[j] & 0x0F) | (levels[j + HALF_BLOCK] & 0x0F) << 4);
    }
}

static const uint32_t bit_of_element[BLOCK] = {
    1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
    1u << 8,  1u << 9,  1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15,
    1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21, 1u << 22, 1u << 23,
    1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31};

/* The 5th bits of levels 0..31, bit j for element j: masks from a table OR-ed by halving, as
   SSE2 has no per-lane variable shift. */
static uint32_t fifth_bits(const int32_t levels[BLOCK]) {
    uint32_t bits[BLOCK];
    for (int j = 0; j < BLOCK; j++) {
        bits[j] = (0u - (uint32_t)((levels[j] >> 4) & 1)) & bit_of_element[j];
    }
    for (int k = 0; k < 16; k++) bits[k] |= bits[k + 16];
    for (int k = 0; k < 8; k++) bits[k] |= bits[k + 8];
    for (int k = 0; k < 4; k++) bits[k] |= bits[k + 4];
    return (bits[0] | bits[1]) | (bits[2] | bits[3]);
}

/* ------------------------------------------------------------------------------------------ */
/* The searching encoders: eight blocks at a time, each block a vector lane                     */
/* ------------------------------------------------------------------------------------------ */

/*
 * The blocks are transposed so that element j of eight consecutive blocks forms one row of eight
 * lanes. Every loop over elements then runs over rows, each block keeping its own running sums
 * in its own lane: the loops vectorize (SSE2 is enough) with no horizontal float reduction, the
 * order of every addition is fixed (results do not depend on the vector width), and the work
 * between passes (fits, fp16 rounding, scoring) runs on the eight blocks at once too.
 */
#define LANES 8

/* A lane loop kept rolled: unrolled early, gcc would not vectorize it. */
#if defined(__GNUC__)
#define KEEP_LOOP_ROLLED _Pragma("GCC unroll 1")
#else
#define KEEP_LOOP_ROLLED
#endif

/* A pass kept out of line and unspecialized: inlined or cloned for constant arguments, its lane
   loops get unrolled or jump-threaded before gcc vectorizes them, and then they are not. */
#if defined(__GNUC__) && !defined(__clang__)
#define LANE_KERNEL __attribute__((noipa))
#elif defined(__GNUC__)
#define LANE_KERNEL __attribute__((noinline))
#else
#define LANE_KERNEL
#endif

/* Adding 1.5 * 2^23 leaves no fraction bits (round to nearest even); the sum is clamped while
   still offset, so rounding and clamping cost an add, a max, a min and a subtract. */
#define ROUNDING_MAGIC 12582912.0f

/* The integer levels lo..hi offset by ROUNDING_MAGIC. Passed at run time: with constant bounds
   gcc turns the clamp into compare-and-blend sequences. */
typedef struct {
    float lo, hi;
} level_range;

static inline level_range levels_between(float lo, float hi) {
    const level_range r = {ROUNDING_MAGIC + lo, ROUNDING_MAGIC + hi};
    return r;
}

static inline float clamp_float(float v, float lo, float hi) {
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
}

/* round(v) clamped to the range. */
static inline float round_in_range(float v, level_range r) {
    return clamp_float(v + ROUNDING_MAGIC, r.lo, r.hi) - ROUNDING_MAGIC;
}

/* cond ? a : b with bit masks, so that lane loops if-convert (gcc does not for a ?: between
   floats that a NaN could make trap). */
static inline float select_float(int cond, float a, float b) {
    const uint32_t mask = (uint32_t)0 - (uint32_t)(cond != 0);
    return lb_bits_to_float((lb_float_to_bits(a) & mask) | (lb_float_to_bits(b) & ~mask));
}

static inline double select_double(int cond, double a, double b) {
    const uint64_t mask = (uint64_t)0 - (uint64_t)(cond != 0);
    uint64_t ua, ub;
    memcpy(&ua, &a, sizeof ua);
    memcpy(&ub, &b, sizeof ub);
    const uint64_t r = (ua & mask) | (ub & ~mask);
    double out;
    memcpy(&out, &r, sizeof out);
    return out;
}

/* 1 / v, or 0 where |v| is so small (or 0) that the inverse would overflow: every element then
   gets level 0. */
static inline float inverse_or_zero(float v) {
    const int usable = fabsf(v) > 1e-30f;
    return select_float(usable, 1.0f / select_float(usable, v, 1.0f), 0.0f);
}

/* v limited to fp16's finite range (with selects: a clamp to constant bounds keeps gcc from
   vectorizing a lane loop). */
static inline float clamp_to_fp16_range(float v) {
    return select_float(fabsf(v) <= LB_FP16_MAX, v, copysignf(LB_FP16_MAX, v));
}

/* v rounded to the nearest fp16 value (ties to even), as a float, for |v| <= 65504: the same
   value as converting to fp16 and back, in bit operations that vectorize. Normal halves keep 11
   significant bits; below 2^-14 they are multiples of 2^-24, to which adding and subtracting
   0.75 (whose float ulp is 2^-24) rounds. */
static inline float round_to_fp16(float v) {
    const uint32_t u = lb_float_to_bits(v);
    const float normal = lb_bits_to_float((u + 0x0FFFu + ((u >> 13) & 1u)) & 0xFFFFE000u);
    const float subnormal = (v + 0.75f) - 0.75f;
    return select_float(fabsf(v) < 6.103515625e-05f, subnormal, normal);
}

/* ---- the blocks in lanes ---- */

typedef struct {
    float x[BLOCK][LANES];  /* element j of the block in lane k is x[j][k] */
    float w[BLOCK][LANES];  /* importance; only when weighted */
    float wx[BLOCK][LANES]; /* w * x; likewise */
    int weighted;
} lane_blocks;

/* Element j of block k to out[j][k] (gcc turns this loop order into unpack shuffles). */
LANE_KERNEL static void transpose_blocks(const float *restrict src, float out[BLOCK][LANES]) {
    for (int j = 0; j < BLOCK; j++) {
        for (int k = 0; k < LANES; k++) out[j][k] = src[k * BLOCK + j];
    }
}

LANE_KERNEL static void weigh_values(lane_blocks *t) {
    for (int j = 0; j < BLOCK; j++) {
        for (int k = 0; k < LANES; k++) t->wx[j][k] = t->w[j][k] * t->x[j][k];
    }
}

/* Transposes `count` blocks, and their importance; the other lanes get all-zero blocks. */
static void load_lanes(const float *src, const float *importance, int count, lane_blocks *t) {
    float padded[LANES * BLOCK];
    if (count < LANES) {
        memset(padded, 0, sizeof padded);
        memcpy(padded, src, sizeof(float) * BLOCK * (size_t)count);
        src = padded;
    }
    transpose_blocks(src, t->x);
    t->weighted = importance != NULL;
    if (t->weighted) {
        if (count < LANES) {
            memcpy(padded, importance, sizeof(float) * BLOCK * (size_t)count);
            importance = padded;
        }
        transpose_blocks(importance, t->w);
        weigh_values(t);
    }
}

/* Per lane: min and max. */
LANE_KERNEL static void lane_min_max(const lane_blocks *restrict t, float *restrict min_out,
                                     float *restrict max_out) {
    float lo[LANES], hi[LANES];
    for (int k = 0; k < LANES; k++) {
        lo[k] = INFINITY;
        hi[k] = -INFINITY;
    }
    for (int j = 0; j < BLOCK; j++) {
        KEEP_LOOP_ROLLED
        for (int k = 0; k < LANES; k++) {
            const float v = t->x[j][k];
            lo[k] = v < lo[k] ? v : lo[k];
            hi[k] = v > hi[k] ? v : hi[k];
        }
    }
    for (int k = 0; k < LANES; k++) {
        min_out[k] = lo[k];
        max_out[k] = hi[k];
    }
}

/* Per lane: min, max, sum w and the weighted mean of x (w = 1 when plain). */
static inline void lane_ranges_body(const lane_blocks *restrict t, int weighted,
                                    float *restrict min_out, float *restrict max_out,
                                    float *restrict sw_out, float *restrict mean_out) {
    float lo[LANES], hi[LANES], sw[LANES] = {0}, swx[LANES] = {0};
    for (int k = 0; k < LANES; k++) {
        lo[k] = INFINITY;
        hi[k] = -INFINITY;
    }
    for (int j = 0; j < BLOCK; j++) {
        KEEP_LOOP_ROLLED
        for (int k = 0; k < LANES; k++) {
            const float v = t->x[j][k];
            lo[k] = v < lo[k] ? v : lo[k];
            hi[k] = v > hi[k] ? v : hi[k];
            if (weighted) {
                sw[k] += t->w[j][k];
                swx[k] += t->wx[j][k];
            } else {
                swx[k] += v;
            }
        }
    }
    for (int k = 0; k < LANES; k++) {
        min_out[k] = lo[k];
        max_out[k] = hi[k];
        sw_out[k] = weighted ? sw[k] : (float)BLOCK;
        mean_out[k] = swx[k] / select_float(sw_out[k] > 0.0f, sw_out[k], 1.0f);
    }
}

LANE_KERNEL static void lane_ranges_plain(const lane_blocks *restrict t, float *restrict min,
                                          float *restrict max, float *restrict sw,
                                          float *restrict mean) {
    lane_ranges_body(t, 0, min, max, sw, mean);
}

LANE_KERNEL static void lane_ranges_weighted(const lane_blocks *restrict t, float *restrict min,
                                             float *restrict max, float *restrict sw,
                                             float *restrict mean) {
    lane_ranges_body(t, 1, min, max, sw, mean);
}

static void lane_ranges(const lane_blocks *t, float *min, float *max, float *sw, float *mean) {
    (t->weighted ? lane_ranges_weighted : lane_ranges_plain)(t, min, max, sw, mean);
}

/* Per lane: the reference's extreme, the first element of largest magnitude, signed. From the
   min and max; only where they tie in magnitude does the order of the elements decide. */
static void lane_first_extreme(const lane_blocks *t, float extreme[LANES]) {
    float min[LANES], max[LANES];
    lane_min_max(t, min, max);
    for (int k = 0; k < LANES; k++) {
        extreme[k] = max[k] >= -min[k] ? max[k] : min[k];
        if (max[k] == -min[k]) {
            for (int j = 0; j < BLOCK; j++) {
                if (fabsf(t->x[j][k]) == max[k]) {
                    extreme[k] = t->x[j][k];
                    break;
                }
            }
        }
    }
}

/* ---- passes: every element rounded to a level, and the level sums of each lane ---- */

/* The sums one assignment of levels l gives each lane: with sum w and sum w x they are all that
   the least-squares fit of the scale (and min) to those levels needs, and they give the error of
   any scale (and min) for those levels exactly. */
typedef struct {
    float swl[LANES], swll[LANES], swxl[LANES];
} lane_sums;

/* Levels round(x * id + shift) in the range (w = 1 when plain; shift 0 and no sum of w l for
   the symmetric formats). */
static inline void pass_body(const lane_blocks *restrict t, int weighted, int affine,
                             const float *restrict id, const float *restrict shift,
                             level_range r, lane_sums *restrict out) {
    float sl[LANES] = {0}, sll[LANES] = {0}, sxl[LANES] = {0};
    for (int j = 0; j < BLOCK; j++) {
        KEEP_LOOP_ROLLED
        for (int k = 0; k < LANES; k++) {
            const float v = affine ? t->x[j][k] * id[k] + shift[k] : t->x[j][k] * id[k];
            const float l = round_in_range(v, r);
            const float wl = weighted ? t->w[j][k] * l : l;
            if (affine) sl[k] += wl;
            sll[k] += wl * l;
            sxl[k] += (weighted ? t->wx[j][k] : t->x[j][k]) * l;
        }
    }
    for (int k = 0; k < LANES; k++) {
        out->swl[k] = sl[k];
        out->swll[k] = sll[k];
        out->swxl[k] = sxl[k];
    }
}

#define DEFINE_PASS(name, weighted, affine)                                                     \
    LANE_KERNEL static void name(const lane_blocks *restrict t, const float *restrict id,      \
                                 const float *restrict shift, level_range r,                  \
                                 lane_sums *restrict out) {                                   \
        pass_body(t, weighted, affine, id, shift, r, out);                                    \
    }
DEFINE_PASS(symmetric_pass_plain, 0, 0)
DEFINE_PASS(symmetric_pass_weighted, 1, 0)
DEFINE_PASS(affine_pass_plain, 0, 1)
DEFINE_PASS(affine_pass_weighted, 1, 1)

static void level_pass(const lane_blocks *t, int affine, const float *id, const float *shift,
                       level_range r, lane_sums *out) {
    if (affine) {
        (t->weighted ? affine_pass_weighted : affine_pass_plain)(t, id, shift, r, out);
    } else {
        (t->weighted ? symmetric_pass_weighted : symmetric_pass_plain)(t, id, shift, r, out);
    }
}

/* ---- 8-bit passes, in residuals ---- */

/*
 * With 255 levels the error is some 3e-5 of sum x^2, below what float sums of x l and l^2 can
 * resolve when candidates are compared. So these passes also take the candidate's own scale dc
 * (~ 1 / id) and sum the residuals r = x - dc l instead: sum w l^2, sum w l r and sum w r^2, from
 * which the error of any scale d near dc follows without cancellation:
 *     sum w (x - d l)^2 = sum w r^2 + 2 (dc - d) sum w l r + (dc - d)^2 sum w l^2.
 */
typedef struct {
    float dc[LANES];
    float swll[LANES], swlr[LANES], swrr[LANES];
} residual_sums;

/* Levels round(x * id) in the range, and their residual sums. */
static inline void residual_pass_body(const lane_blocks *restrict t, int weighted,
                                      const float *restrict id, level_range r,
                                      residual_sums *restrict out) {
    float sll[LANES] = {0}, slr[LANES] = {0}, srr[LANES] = {0};
    for (int j = 0; j < BLOCK; j++) {
        KEEP_LOOP_ROLLED
        for (int k = 0; k < LANES; k++) {
            const float l = round_in_range(t->x[j][k] * id[k], r);
            const float res = t->x[j][k] - out->dc[k] * l;
            const float wl = weighted ? t->w[j][k] * l : l;
            const float wr = weighted ? t->w[j][k] * res : res;
            sll[k] += wl * l;
            slr[k] += wl * res;
            srr[k] += wr * res;
        }
    }
    for (int k = 0; k < LANES; k++) {
        out->swll[k] = sll[k];
        out->swlr[k] = slr[k];
        out->swrr[k] = srr[k];
    }
}

LANE_KERNEL static void residual_pass_plain(const lane_blocks *restrict t,
                                            const float *restrict id, level_range r,
                                            residual_sums *restrict out) {
    residual_pass_body(t, 0, id, r, out);
}

LANE_KERNEL static void residual_pass_weighted(const lane_blocks *restrict t,
                                               const float *restrict id, level_range r,
                                               residual_sums *restrict out) {
    residual_pass_body(t, 1, id, r, out);
}

/* ---- the final levels, block by block ---- */

/* The fp16 bits of v, a value that fp16 represents exactly (see round_to_fp16), in operations
   that vectorize: normal halves rebias the exponent, subnormal ones are multiples of 2^-24. */
static inline uint16_t fp16_bits_of(float v) {
    const uint32_t u = lb_float_to_bits(v), magnitude = u & 0x7FFFFFFFu;
    const uint32_t normal = (magnitude >> 13) - ((127u - 15u) << 10);
    const uint32_t subnormal = (uint32_t)(int32_t)(fabsf(v) * 16777216.0f);
    const uint32_t is_normal = (uint32_t)0 - (uint32_t)((int32_t)magnitude >= 0x38800000);
    return (uint16_t)((u >> 16 & 0x8000u) | (normal & is_normal) | (subnormal & ~is_normal));
}

LANE_KERNEL static void lanes_to_fp16(const float *restrict v, uint16_t *restrict out) {
    for (int k = 0; k < LANES; k++) out[k] = fp16_bits_of(v[k]);
}

LANE_KERNEL static void two_lanes_to_fp16(const float *restrict a, const float *restrict b,
                                          uint16_t *restrict a_out, uint16_t *restrict b_out) {
    for (int k = 0; k < LANES; k++) {
        a_out[k] = fp16_bits_of(a[k]);
        b_out[k] = fp16_bits_of(b[k]);
    }
}

/*
 * The final levels of one block, round((x - origin) * id) + offset in the range, where the range
 * holds the stored (unsigned) levels offset by ROUNDING_MAGIC and `magic` is ROUNDING_MAGIC +
 * offset. They are left as the bit patterns of those floats: the low 23 bits of
 * ROUNDING_MAGIC + l are 2^22 + l, so that the low byte of the bits is the level l itself, which
 * is all the 4- and 5-bit packing needs.
 */
static inline void final_level_bits(const float *restrict x, int affine, float origin, float id,
                                    float magic, level_range r, uint32_t bits[BLOCK]) {
    for (int j = 0; j < BLOCK; j++) {
        const float v = (affine ? x[j] - origin : x[j]) * id + magic;
        bits[j] = lb_float_to_bits(clamp_float(v, r.lo, r.hi));
    }
}

/* Packs the low bytes of level bits 0..15 (or the low 4 bits of 0..31) as pack_nibbles does. */
static inline void pack_level_bits(const uint32_t bits[BLOCK], uint8_t qs[HALF_BLOCK]) {
    for (int j = 0; j < HALF_BLOCK; j++) {
        qs[j] = (uint8_t)((bits[j] & 0x0Fu) | bits[j + HALF_BLOCK] << 4);
    }
}

/* The 5th bits of level bits 0..31 (bit j for element j). */
static inline uint32_t fifth_level_bits(const uint32_t bits[BLOCK]) {
    int32_t levels[BLOCK];
    for (int j = 0; j < BLOCK; j++) levels[j] = (int32_t)(bits[j] & 0x1Fu);
    return fifth_bits(levels);
}

/* One block's stored 4- or 5-bit levels, rounded at the stored scale, packed into qs and, when
   qh is given, the fifth bits into qh; symmetric formats and those with a min (origin). Two
   functions rather than a flag, so that each loop is compiled for its own case. */
LANE_KERNEL static void final_levels_symmetric(const float *restrict x, float id, float magic,
                                               level_range r, uint8_t qs[HALF_BLOCK], uint8_t *qh) {
    uint32_t bits[BLOCK];
    final_level_bits(x, 0, 0.0f, id, magic, r, bits);
    pack_level_bits(bits, qs);
    if (qh) store_qh(qh, fifth_level_bits(bits));
}

LANE_KERNEL static void final_levels_affine(const float *restrict x, float origin, float id,
                                            float magic, level_range r, uint8_t qs[HALF_BLOCK],
                                            uint8_t *qh) {
    uint32_t bits[BLOCK];
    final_level_bits(x, 1, origin, id, magic, r, bits);
    pack_level_bits(bits, qs);
    if (qh) store_qh(qh, fifth_level_bits(bits));
}

/* One block's 8-bit levels (stored offset by 127 in the range); returns their sum. */
LANE_KERNEL static int32_t final_bytes(const float *restrict x, float id, float magic,
                                       level_range r, int8_t qs[BLOCK]) {
    const uint32_t zero_bits = lb_float_to_bits(ROUNDING_MAGIC + 127.0f);
    uint32_t bits[BLOCK];
    int32_t levels[BLOCK], sum = 0;
    final_level_bits(x, 0, 0.0f, id, magic, r, bits);
    for (int j = 0; j < BLOCK; j++) {
        levels[j] = (int32_t)(bits[j] - zero_bits);
        qs[j] = (int8_t)levels[j];
        sum += levels[j];
    }
    return sum;
}

/* ---- the searches ---- */

/*
 * A search: the reference's own levels first (so that no block ends up worse than the
 * reference's encoding; rounded to nearest, ties to even, where the reference rounds ties up or
 * away from zero: on a tie both levels cost the same at its scale), then candidate steps, then
 * Lloyd steps (re-round at the best scale so far, re-fit). Every candidate's levels get their
 * least-squares scale (and min), rounded to fp16 as stored, and are ranked by their error at
 * those stored values.
 */
typedef struct {
    float delta;  /* step = extent / (nmax + delta): positive deltas clip the extremes a little */
    float anchor; /* formats with a min: where in the range the grid sits, 0 at the min, 1 at
                     the max (with importance, clipping the lighter end pays) */
} candidate;

typedef struct {
    const candidate *candidates;
    int n_candidates;
    int lloyd_steps;
} search_plan;

#define SEARCH(list, lloyd_steps) {list, LB_ARRAY_LEN(list), lloyd_steps}

/* Ranks of the reference's levels against the candidates: the float sums and error expressions
   carry noise of about 1e-7 of sum w x^2, so a candidate has to beat the reference's levels by
   more than this share of the error expression to replace them. */
#define REFERENCE_PREFERENCE 1e-6f

/* ---- symmetric formats: x ~ d * l, l in [-nmax, hi] ---- */

typedef struct {
    float nmax, hi; /* levels -nmax..hi, stored as l + nmax */
} symmetric_shape;

typedef struct {
    float d[LANES];     /* the best stored (fp16) scale so far */
    float error[LANES]; /* its error less sum w x^2 */
} symmetric_best;

/* Scores the levels behind `s`: their least-squares scale d* = sxl / sll (or `fallback` where
   they have no weight), as stored (d), and the error sum w (x - d l)^2 - sum w x^2, written as
   sll (d - d*)^2 - sxl d*: the part that depends on d comes out exactly. */
LANE_KERNEL static void consider_symmetric(const lane_sums *restrict s,
                                           const float *restrict fallback,
                                           symmetric_best *restrict best) {
    for (int k = 0; k < LANES; k++) {
        const int fitted = s->swll[k] > 0.0f;
        const float d_fit = s->swxl[k] / select_float(fitted, s->swll[k], 1.0f);
        const float d_chosen = select_float(fitted, d_fit, fallback[k]);
        const float d = round_to_fp16(clamp_to_fp16_range(d_chosen));
        const float error = s->swll[k] * (d - d_fit) * (d - d_fit) - s->swxl[k] * d_fit;
        const int better = error < best->error[k];
        best->error[k] = select_float(better, error, best->error[k]);
        best->d[k] = select_float(better, d, best->d[k]);
    }
}

/* Per lane: the reference's scale extreme / -nmax and its inverse, and the inverse of the
   extreme. Returns whether the reference's scale of a used lane overflows fp16. */
LANE_KERNEL static int symmetric_setup(const float *restrict ext, float nmax, int count,
                                       float *restrict d_ref, float *restrict id_ref,
                                       float *restrict inv_ext) {
    int overflow = 0;
    for (int k = 0; k < LANES; k++) {
        d_ref[k] = ext[k] / -nmax;
        id_ref[k] = inverse_or_zero(d_ref[k]);
        inv_ext[k] = inverse_or_zero(ext[k]);
        overflow |= (k < count) & (fabsf(d_ref[k]) > LB_FP16_MAX);
    }
    return overflow;
}

/* Searches the stored scale of eight blocks: returns them (fp16 values as floats) in d_out. */
static lowbit_status search_symmetric_lanes(const lane_blocks *t, int count,
                                            const symmetric_shape *shape,
                                            const search_plan *plan, float d_out[LANES]) {
    const float nmax = shape->nmax;
    float ext[LANES], d_ref[LANES], id[LANES], inv_ext[LANES];
    const float zero[LANES] = {0};
    lane_first_extreme(t, ext);
    if (symmetric_setup(ext, nmax, count, d_ref, id, inv_ext)) return LOWBIT_ERR_SCALE_OVERFLOW;
    symmetric_best best;
    for (int k = 0; k < LANES; k++) best.error[k] = INFINITY;
    lane_sums s;
    const level_range r = levels_between(-nmax, shape->hi);
    level_pass(t, 0, id, zero, r, &s); /* the reference's levels */
    consider_symmetric(&s, d_ref, &best);
    for (int k = 0; k < LANES; k++) best.error[k] -= REFERENCE_PREFERENCE * fabsf(best.error[k]);
    for (int c = 0; c < plan->n_candidates; c++) {
        const float target = -(nmax + plan->candidates[c].delta);
        for (int k = 0; k < LANES; k++) id[k] = target * inv_ext[k];
        level_pass(t, 0, id, zero, r, &s);
        consider_symmetric(&s, d_ref, &best);
    }
    for (int step = 0; step < plan->lloyd_steps; step++) {
        for (int k = 0; k < LANES; k++) id[k] = inverse_or_zero(best.d[k]);
        level_pass(t, 0, id, zero, r, &s);
        consider_symmetric(&s, d_ref, &best);
    }
    for (int k = 0; k < LANES; k++) d_out[k] = best.d[k];
    return LOWBIT_OK;
}

/* ---- formats with a min: x ~ d * l + m, l in [0, nmax] ---- */

typedef struct {
    float sw[LANES], mean[LANES]; /* sum w, and the weighted mean of x */
    float d[LANES], m[LANES];     /* the best stored (fp16) scale and min so far */
    float error[LANES];           /* its error less sum w (x - mean)^2 */
} affine_best;

/*
 * The least-squares fit of scale and min to the levels behind `s` (the 2x2 normal equations
 * [sum w l^2, sum w l; sum w l, sum w] [d; m] = [sum w x l; sum w x]) and the error of stored
 * (d, m) for those levels. With x and l centred on their weighted means (mean, lm = sl / sw), the
 * error is
 *     sum w (x - d l - m)^2 = sum w (x - mean)^2 - num d* / sw + det / sw (d - d*)^2
 *                             + sw (m - mean + d lm)^2,
 * det = sw sll - sl^2, num = sw sxl - sx sl, d* = num / det: no term cancels against another, so
 * float suffices. Levels all equal (det 0) have no unique fit (solvable 0, d* taken as d).
 */
typedef struct {
    int solvable;
    float d_fit, m_fit;
    float curvature; /* det / sw */
    float gain;      /* num d* / sw */
    float lm, sw, mean;
} affine_fit;

static inline affine_fit fit_affine(const lane_sums *restrict s, const affine_best *restrict b,
                                    int k) {
    affine_fit f;
    const float sw = b->sw[k], sx = sw * b->mean[k];
    const float sl = s->swl[k], sll = s->swll[k], sxl = s->swxl[k];
    const float det = sw * sll - sl * sl, num = sw * sxl - sx * sl;
    const float inv_sw = 1.0f / sw;
    f.solvable = det > 1e-5f * sw * sll;
    const float inv_det = 1.0f / select_float(f.solvable, det, 1.0f);
    f.d_fit = select_float(f.solvable, num * inv_det, 0.0f);
    f.m_fit = (sll * sx - sl * sxl) * inv_det;
    f.curvature = det * inv_sw;
    f.gain = num * f.d_fit * inv_sw;
    f.lm = sl * inv_sw;
    f.sw = sw;
    f.mean = b->mean[k];
    return f;
}

static inline float affine_error(const affine_fit *f, float d, float m) {
    const float dd = d - select_float(f->solvable, f->d_fit, d);
    const float offset = m - f->mean + d * f->lm;
    return f->curvature * dd * dd - f->gain + f->sw * offset * offset;
}

static inline void keep_if_better(affine_best *restrict best, int k, int valid, float d,
                                  float m, float error) {
    const int better = valid & (error < best->error[k]);
    best->error[k] = select_float(better, error, best->error[k]);
    best->d[k] = select_float(better, d, best->d[k]);
    best->m[k] = select_float(better, m, best->m[k]);
}

/* Scores the levels behind `s` with their least-squares scale and min, as stored. */
LANE_KERNEL static void consider_affine(const lane_sums *restrict s, affine_best *restrict best) {
    for (int k = 0; k < LANES; k++) {
        const affine_fit f = fit_affine(s, best, k);
        const float d = round_to_fp16(clamp_to_fp16_range(f.d_fit));
        const float m = round_to_fp16(clamp_to_fp16_range(f.m_fit));
        keep_if_better(best, k, f.solvable, d, m, affine_error(&f, d, m));
    }
}

/* The reference's encoding as the first candidate: m = min, d = range / nmax, levels
   round((x - min) / d), scored with the reference's stored values and with their least-squares
   fit; then the preference for them (see REFERENCE_PREFERENCE). */
LANE_KERNEL static void consider_affine_reference(const lane_sums *restrict s,
                                                  const float *restrict d_ref,
                                                  const float *restrict min,
                                                  affine_best *restrict best) {
    for (int k = 0; k < LANES; k++) {
        const affine_fit f = fit_affine(s, best, k);
        const float d = round_to_fp16(d_ref[k]), m = round_to_fp16(min[k]);
        best->d[k] = d;
        best->m[k] = m;
        best->error[k] = affine_error(&f, d, m);
        const float d_fit = round_to_fp16(clamp_to_fp16_range(f.d_fit));
        const float m_fit = round_to_fp16(clamp_to_fp16_range(f.m_fit));
        keep_if_better(best, k, f.solvable, d_fit, m_fit, affine_error(&f, d_fit, m_fit));
        best->error[k] -= REFERENCE_PREFERENCE * fabsf(best->error[k]);
    }
}

/* Per lane: the range, the reference's scale range / nmax and its inverse, and the inverse of
   the range. Returns whether the reference's scale or min of a used lane overflows fp16. */
LANE_KERNEL static int affine_setup(const float *restrict min, const float *restrict max,
                                    float nmax, int count, float *restrict range,
                                    float *restrict d_ref, float *restrict id_ref,
                                    float *restrict inv_range) {
    int overflow = 0;
    for (int k = 0; k < LANES; k++) {
        range[k] = max[k] - min[k];
        d_ref[k] = range[k] / nmax;
        id_ref[k] = inverse_or_zero(d_ref[k]);
        inv_range[k] = inverse_or_zero(range[k]);
        overflow |= (k < count) & ((fabsf(min[k]) > LB_FP16_MAX) | (d_ref[k] > LB_FP16_MAX));
    }
    return overflow;
}

/* Searches the stored scale and min of eight blocks (fp16 values as floats). */
static lowbit_status search_affine_lanes(const lane_blocks *t, int count, float nmax,
                                         const search_plan *plan, float d_out[LANES],
                                         float m_out[LANES]) {
    float min[LANES], max[LANES], range[LANES], inv_range[LANES], d_ref[LANES], id[LANES];
    float shift[LANES];
    affine_best best;
    lane_ranges(t, min, max, best.sw, best.mean);
    if (affine_setup(min, max, nmax, count, range, d_ref, id, inv_range)) {
        return LOWBIT_ERR_SCALE_OVERFLOW;
    }
    lane_sums s;
    const level_range r = levels_between(0.0f, nmax);
    for (int k = 0; k < LANES; k++) shift[k] = -min[k] * id[k];
    level_pass(t, 1, id, shift, r, &s); /* the reference's levels */
    consider_affine_reference(&s, d_ref, min, &best);
    for (int c = 0; c < plan->n_candidates; c++) {
        const candidate cand = plan->candidates[c];
        /* the grid spans nmax / id; what it leaves of the range goes below it by `anchor` */
        const float scale = nmax + cand.delta, slack = cand.anchor * cand.delta / scale;
        for (int k = 0; k < LANES; k++) {
            id[k] = scale * inv_range[k];
            shift[k] = -(min[k] + slack * range[k]) * id[k];
        }
        level_pass(t, 1, id, shift, r, &s);
        consider_affine(&s, &best);
    }
    for (int step = 0; step < plan->lloyd_steps; step++) {
        for (int k = 0; k < LANES; k++) {
            id[k] = inverse_or_zero(best.d[k]);
            shift[k] = -best.m[k] * id[k];
        }
        level_pass(t, 1, id, shift, r, &s);
        consider_affine(&s, &best);
    }
    for (int k = 0; k < LANES; k++) {
        d_out[k] = best.d[k];
        m_out[k] = best.m[k];
    }
    return LOWBIT_OK;
}

/* ---- Q8_0 and Q8_1: levels -127..127 ---- */

typedef struct {
    float d[LANES];      /* the best stored (fp16) scale so far */
    double error[LANES]; /* its error sum w (x - d l)^2 */
} q8_best;

/* Scores the levels behind `s` (see residual_sums): their least-squares scale
   dc + sum w l r / sum w l^2, as stored, and its error. */
LANE_KERNEL static void consider_q8(const residual_sums *restrict s, q8_best *restrict best) {
    for (int k = 0; k < LANES; k++) {
        const int fitted = s->swll[k] > 0.0f;
        const float d_fit = s->dc[k] + s->swlr[k] / select_float(fitted, s->swll[k], 1.0f);
        const float d = round_to_fp16(clamp_to_fp16_range(d_fit));
        const double delta = (double)s->dc[k] - (double)d;
        const double error = s->swrr[k] + delta * (2.0 * s->swlr[k] + delta * s->swll[k]);
        const int better = error < best->error[k];
        best->error[k] = select_double(better, error, best->error[k]);
        best->d[k] = select_float(better, d, best->d[k]);
    }
}

static void q8_pass(const lane_blocks *t, const float *id, level_range r, residual_sums *s) {
    for (int k = 0; k < LANES; k++) s->dc[k] = inverse_or_zero(id[k]);
    (t->weighted ? residual_pass_weighted : residual_pass_plain)(t, id, r, s);
}

/* Searches the stored scale of eight 8-bit blocks (fp16 values as floats), the reference's
   levels (at d = amax / 127) first. Scored from residual sums, the ranking needs no preference
   for them. */
static lowbit_status search_q8_lanes(const lane_blocks *t, int count, const search_plan *plan,
                                     float d_out[LANES]) {
    float ext[LANES], id[LANES], inv_amax[LANES];
    lane_first_extreme(t, ext);
    int overflow = 0;
    for (int k = 0; k < LANES; k++) {
        const float d_ref = fabsf(ext[k]) / 127.0f;
        overflow |= (k < count) & !(d_ref <= LB_FP16_MAX);
        id[k] = inverse_or_zero(d_ref);
        inv_amax[k] = inverse_or_zero(fabsf(ext[k]));
    }
    if (overflow) return LOWBIT_ERR_SCALE_OVERFLOW;
    const level_range r = levels_between(-127.0f, 127.0f);
    q8_best best;
    for (int k = 0; k < LANES; k++) best.error[k] = INFINITY;
    residual_sums s;
    q8_pass(t, id, r, &s);
    consider_q8(&s, &best);
    for (int c = 0; c < plan->n_candidates; c++) {
        const float target = 127.0f + plan->candidates[c].delta;
        for (int k = 0; k < LANES; k++) id[k] = target * inv_amax[k];
        q8_pass(t, id, r, &s);
        consider_q8(&s, &best);
    }
    for (int step = 0; step < plan->lloyd_steps; step++) {
        for (int k = 0; k < LANES; k++) id[k] = inverse_or_zero(best.d[k]);
        q8_pass(t, id, r, &s);
        consider_q8(&s, &best);
    }
    for (int k = 0; k < LANES; k++) d_out[k] = best.d[k];
    return LOWBIT_OK;
}

/* ---- encoding eight blocks ---- */

/* Searches up to eight blocks of a symmetric 4- or 5-bit format: fp16 scales, and the inverses
   of the scales for the final rounding. */
static lowbit_status encode_symmetric_scales(const lane_blocks *t, int count,
                                             const symmetric_shape *shape,
                                             const search_plan *plan, uint16_t d_out[LANES],
                                             float id[LANES]) {
    float d[LANES];
    const lowbit_status st = search_symmetric_lanes(t, count, shape, plan, d);
    if (st != LOWBIT_OK) return st;
    lanes_to_fp16(d, d_out);
    for (int k = 0; k < LANES; k++) id[k] = inverse_or_zero(d[k]);
    return LOWBIT_OK;
}

/* Searches up to eight blocks of Q4_1 or Q5_1: fp16 scales and mins, the mins as floats and
   the inverses of the scales for the final rounding. */
static lowbit_status encode_affine_scales(const lane_blocks *t, int count, float nmax,
                                          const search_plan *plan, uint16_t d_out[LANES],
                                          uint16_t m_out[LANES], float m[LANES],
                                          float id[LANES]) {
    float d[LANES];
    const lowbit_status st = search_affine_lanes(t, count, nmax, plan, d, m);
    if (st != LOWBIT_OK) return st;
    two_lanes_to_fp16(d, m, d_out, m_out);
    for (int k = 0; k < LANES; k++) id[k] = inverse_or_zero(d[k]);
    return LOWBIT_OK;
}

/* The number of blocks from block b0 on that go into one set of lanes. */
static inline int lane_count(int64_t n_blocks, int64_t b0) {
    return n_blocks - b0 < LANES ? (int)(n_blocks - b0) : LANES;
}

/*
 * The searches, tuned on normal and Student-t (3 dof) blocks and, with importance, on the golden
 * set. Without importance the 4- and 5-bit encoders must cost about what plain rounding does, so
 * their searches are short: Q4_1 keeps the reference's levels with their least-squares scale and
 * min (one pass); Q4_0 adds one slightly clipping candidate; Q5_0 and Q5_1 two candidates and a
 * Lloyd step. In Q5_0 delta -1 maps the extreme to -15, which leaves level +15 to the other side.
 * For Q8_0, candidates with a slightly larger step (the extreme at 126 or 124) often round
 * better once the scale is refitted and stored in fp16. With importance, a fine grid of steps
 * (and for the formats with a min, three anchors), as with uneven weights the best level
 * assignment changes at small steps of the scale.
 */
static const candidate q4_0_candidates[] = {{0.5f, 0.0f}};
static const candidate q5_0_candidates[] = {{-1.0f, 0.0f}, {0.5f, 0.0f}};
static const candidate q5_1_candidates[] = {{1.0f, 0.5f}, {-1.0f, 0.5f}};
static const candidate q8_candidates[] = {{-1.0f, 0.0f}, {-3.0f, 0.0f}};
static const search_plan plain_search_q4_0 = SEARCH(q4_0_candidates, 0);
static const search_plan plain_search_q4_1 = {NULL, 0, 0};
static const search_plan plain_search_q5_0 = SEARCH(q5_0_candidates, 1);
static const search_plan plain_search_q5_1 = SEARCH(q5_1_candidates, 1);
static const search_plan search_q8 = SEARCH(q8_candidates, 0);

static const candidate fine_symmetric[] = {
    {-1.0f, 0}, {-0.9f, 0}, {-0.8f, 0}, {-0.7f, 0}, {-0.6f, 0}, {-0.5f, 0}, {-0.4f, 0},
    {-0.3f, 0}, {-0.2f, 0}, {-0.1f, 0}, {0.0f, 0},  {0.1f, 0},  {0.2f, 0},  {0.3f, 0},
    {0.4f, 0},  {0.5f, 0},  {0.6f, 0},  {0.7f, 0},  {0.8f, 0},  {0.9f, 0},  {1.0f, 0},
    {1.1f, 0},  {1.2f, 0},  {1.3f, 0},  {1.4f, 0},  {1.5f, 0},  {1.6f, 0},  {1.7f, 0},
    {1.8f, 0},  {1.9f, 0},  {2.0f, 0}};
#define AT_THREE_ANCHORS(delta) {delta, 0.0f}, {delta, 0.5f}, {delta, 1.0f}
static const candidate fine_affine[] = {
    AT_THREE_ANCHORS(-1.0f), AT_THREE_ANCHORS(-0.6f), AT_THREE_ANCHORS(-0.2f),
    AT_THREE_ANCHORS(0.2f),  AT_THREE_ANCHORS(0.6f),  AT_THREE_ANCHORS(1.0f),
    AT_THREE_ANCHORS(1.4f),  AT_THREE_ANCHORS(1.8f)};
static const search_plan weighted_symmetric = SEARCH(fine_symmetric, 3);
static const search_plan weighted_affine = SEARCH(fine_affine, 2);

static const symmetric_shape shape_q4_0 = {8.0f, 7.0f};
static const symmetric_shape shape_q5_0 = {16.0f, 15.0f};

/* ------------------------------------------------------------------------------------------ */
/* What the 4- and 5-bit formats share: levels from and to their bytes, the reference encoders,  */
/* decoding and the integer dot product, written once over the level width                     */
/* ------------------------------------------------------------------------------------------ */

/* The stored levels of a block (0..15, or 0..31 with the fifth bits of qh when qh is given). */
static void unpack_levels(const uint8_t qs[HALF_BLOCK], const uint8_t *qh, int32_t levels[BLOCK]) {
    const uint32_t high = qh ? load_qh(qh) : 0;
    for (int j = 0; j < HALF_BLOCK; j++) {
        levels[j] = (qs[j] & 0x0F) | (int32_t)((high >> j) & 1) << 4;
        levels[j + HALF_BLOCK] = (qs[j] >> 4) | (int32_t)((high >> (j + HALF_BLOCK)) & 1) << 4;
    }
}

static void pack_levels(const int32_t levels[BLOCK], uint8_t qs[HALF_BLOCK], uint8_t *qh) {
    pack_nibbles(levels, qs);
    if (qh) store_qh(qh, fifth_bits(levels));
}

/* The reference's symmetric rounding: d maps the signed extreme to -half, levels are truncated
   from x / d + half + 0.5 and capped at 2 * half - 1 (Q4_0: half 8, Q5_0: half 16). */
static lowbit_status reference_symmetric_block(const float *x, int half, lb_half *d_out,
                                               int32_t levels[BLOCK]) {
    const float d = first_signed_extreme(x) / (float)-half;
    if (lb_store_fp16_scale(d, d_out) != LOWBIT_OK) return LOWBIT_ERR_SCALE_OVERFLOW;
    const float id = safe_inverse(d);
    for (int j = 0; j < BLOCK; j++) {
        const int q = (int)(x[j] * id + ((float)half + 0.5f));
        levels[j] = q < 2 * half - 1 ? q : 2 * half - 1;
    }
    return LOWBIT_OK;
}

/* The reference's affine rounding: m = min, d = (max - min) / top, levels truncated from
   (x - min) / d + 0.5 and capped at top (Q4_1: 15, Q5_1: 31). */
static lowbit_status reference_affine_block(const float *x, int top, lb_half *d_out,
                                            lb_half *m_out, int32_t levels[BLOCK]) {
    float min, max;
    block_min_max(x, &min, &max);
    const float d = (max - min) / (float)top;
    if (lb_store_fp16_scale(d, d_out) != LOWBIT_OK || lb_store_fp16_scale(min, m_out) != LOWBIT_OK) {
        return LOWBIT_ERR_SCALE_OVERFLOW;
    }
    const float id = safe_inverse(d);
    for (int j = 0; j < BLOCK; j++) {
        const int q = (int)((x[j] - min) * id + 0.5f);
        levels[j] = q < top ? q : top;
    }
    return LOWBIT_OK;
}

/* d * (level - offset) for the symmetric formats, level * d + m for the affine ones: the float
   operations of the reference decoder, so decoding is bit-exact. */
static void decode_symmetric(const int32_t levels[BLOCK], int32_t offset, float d, float *dst) {
    for (int j = 0; j < BLOCK; j++) dst[j] = (float)(levels[j] - offset) * d;
}

static void decode_affine(const int32_t levels[BLOCK], float d, float m, float *dst) {
    for (int j = 0; j < BLOCK; j++) dst[j] = (float)levels[j] * d + m;
}

static int32_t level_dot(const int32_t levels[BLOCK], int32_t offset, const int8_t q[BLOCK]) {
    int32_t sum = 0;
    for (int j = 0; j < BLOCK; j++) sum += (levels[j] - offset) * q[j];
    return sum;
}

/* The row functions of a symmetric format T with `half` levels below zero. */
#define SYMMETRIC_ROW_FUNCTIONS(T, half, QH)                                                     \
    lowbit_status lb_quantize_ref_##T(const float *src, void *dst, int64_t n,                    \
                                      const float *importance) {                                 \
        (void)importance;                                                                        \
        block_##T *y = dst;                                                                      \
        for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {                                  \
            int32_t levels[BLOCK];                                                               \
            if (reference_symmetric_block(src, half, &y[b].d, levels) != LOWBIT_OK) {           \
                return LOWBIT_ERR_SCALE_OVERFLOW;                                                \
            }                                                                                    \
            pack_levels(levels, y[b].qs, QH(y[b]));                                              \
        }                                                                                        \
        return LOWBIT_OK;                                                                        \
    }                                                                                            \
    void lb_dequantize_##T(const void *src, float *dst, int64_t n) {                             \
        const block_##T *x = src;                                                                \
        for (int64_t b = 0; b < n / BLOCK; b++, dst += BLOCK) {                                  \
            int32_t levels[BLOCK];                                                               \
            unpack_levels(x[b].qs, QH(x[b]), levels);                                            \
            decode_symmetric(levels, half, lb_fp16_to_fp32(x[b].d), dst);                        \
        }                                                                                        \
    }                                                                                            \
    float lb_vec_dot_##T(int64_t n, const void *weights, const void *activations) {              \
        const block_##T *x = weights;                                                            \
        const block_q8_0 *y = activations;                                                       \
        float sum = 0.0f;                                                                        \
        for (int64_t b = 0; b < n / BLOCK; b++) {                                                \
            int32_t levels[BLOCK];                                                               \
            unpack_levels(x[b].qs, QH(x[b]), levels);                                            \
            sum += (float)level_dot(levels, half, y[b].qs) * lb_fp16_to_fp32(x[b].d) *            \
                   lb_fp16_to_fp32(y[b].d);                                                      \
        }                                                                                        \
        return sum;                                                                              \
    }

/* The row functions of an affine format T with levels 0..top. */
#define AFFINE_ROW_FUNCTIONS(T, top, QH)                                                         \
    lowbit_status lb_quantize_ref_##T(const float *src, void *dst, int64_t n,                    \
                                      const float *importance) {                                 \
        (void)importance;                                                                        \
        block_##T *y = dst;                                                                      \
        for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {                                  \
            int32_t levels[BLOCK];                                                               \
            if (reference_affine_block(src, top, &y[b].d, &y[b].m, levels) != LOWBIT_OK) {      \
                return LOWBIT_ERR_SCALE_OVERFLOW;                                                \
            }                                                                                    \
            pack_levels(levels, y[b].qs, QH(y[b]));                                              \
        }                                                                                        \
        return LOWBIT_OK;                                                                        \
    }                                                                                            \
    void lb_dequantize_##T(const void *src, float *dst, int64_t n) {                             \
        const block_##T *x = src;                                                                \
        for (int64_t b = 0; b < n / BLOCK; b++, dst += BLOCK) {                                  \
            int32_t levels[BLOCK];                                                               \
            unpack_levels(x[b].qs, QH(x[b]), levels);                                            \
            decode_affine(levels, lb_fp16_to_fp32(x[b].d), lb_fp16_to_fp32(x[b].m), dst);        \
        }                                                                                        \
    }                                                                                            \
    /* sum (d l + m)(dy q) = d dy sum l q + m (dy sum q), the last factor being Q8_1's s */      \
    float lb_vec_dot_##T(int64_t n, const void *weights, const void *activations) {              \
        const block_##T *x = weights;                                                            \
        const block_q8_1 *y = activations;                                                       \
        float sum = 0.0f;                                                                        \
        for (int64_t b = 0; b < n / BLOCK; b++) {                                                \
            int32_t levels[BLOCK];                                                               \
            unpack_levels(x[b].qs, QH(x[b]), levels);                                            \
            sum += lb_fp16_to_fp32(x[b].d) * lb_fp16_to_fp32(y[b].d) *                           \
                       (float)level_dot(levels, 0, y[b].qs) +                                    \
                   lb_fp16_to_fp32(x[b].m) * lb_fp16_to_fp32(y[b].s);                            \
        }                                                                                        \
        return sum;                                                                              \
    }

#define NO_FIFTH_BITS(block) ((uint8_t *)NULL)
#define FIFTH_BITS(block) ((block).qh)

SYMMETRIC_ROW_FUNCTIONS(q4_0, 8, NO_FIFTH_BITS)
SYMMETRIC_ROW_FUNCTIONS(q5_0, 16, FIFTH_BITS)
AFFINE_ROW_FUNCTIONS(q4_1, 15, NO_FIFTH_BITS)
AFFINE_ROW_FUNCTIONS(q5_1, 31, FIFTH_BITS)

/* ------------------------------------------------------------------------------------------ */
/* The searching encoders of Q4_0, Q5_0 (symmetric) and Q4_1, Q5_1 (with a min)                 */
/* ------------------------------------------------------------------------------------------ */

/* LANES blocks at a time: the scales are searched with each block in a vector lane, then every
   block's levels are rounded at its stored scale. */
#define SYMMETRIC_SEARCH_ENCODER(T, shape, plain_plan, top, QH)                                  \
    lowbit_status lb_quantize_##T(const float *src, void *dst, int64_t n,                        \
                                  const float *importance) {                                     \
        block_##T *y = dst;                                                                      \
        const int64_t n_blocks = n / BLOCK;                                                      \
        const search_plan *plan = importance ? &weighted_symmetric : &plain_plan;                \
        lane_blocks t;                                                                           \
        for (int64_t b0 = 0; b0 < n_blocks; b0 += LANES) {                                       \
            const int count = lane_count(n_blocks, b0);                                          \
            load_lanes(src + b0 * BLOCK, importance ? importance + b0 * BLOCK : NULL, count, &t); \
            uint16_t d[LANES];                                                                   \
            float id[LANES];                                                                     \
            const lowbit_status st = encode_symmetric_scales(&t, count, &shape, plan, d, id);    \
            if (st != LOWBIT_OK) return st;                                                      \
            for (int k = 0; k < count; k++) {                                                    \
                y[b0 + k].d = d[k];                                                              \
                final_levels_symmetric(src + (b0 + k) * BLOCK, id[k], ROUNDING_MAGIC + shape.nmax, \
                             levels_between(0.0f, top), y[b0 + k].qs, QH(y[b0 + k]));             \
            }                                                                                    \
        }                                                                                        \
        return LOWBIT_OK;                                                                        \
    }

#define AFFINE_SEARCH_ENCODER(T, plain_plan, top, QH)                                            \
    lowbit_status lb_quantize_##T(const float *src, void *dst, int64_t n,                        \
                                  const float *importance) {                                     \
        block_##T *y = dst;                                                                      \
        const int64_t n_blocks = n / BLOCK;                                                      \
        const search_plan *plan = importance ? &weighted_affine : &plain_plan;                   \
        lane_blocks t;                                                                           \
        for (int64_t b0 = 0; b0 < n_blocks; b0 += LANES) {                                       \
            const int count = lane_count(n_blocks, b0);                                          \
            load_lanes(src + b0 * BLOCK, importance ? importance + b0 * BLOCK : NULL, count, &t); \
            uint16_t d[LANES], m[LANES];                                                         \
            float mf[LANES], id[LANES]; /* the mins as floats, the inverse scales */             \
            const lowbit_status st = encode_affine_scales(&t, count, top, plan, d, m, mf, id);   \
            if (st != LOWBIT_OK) return st;                                                      \
            for (int k = 0; k < count; k++) {                                                    \
                y[b0 + k].d = d[k];                                                              \
                y[b0 + k].m = m[k];                                                              \
                final_levels_affine(src + (b0 + k) * BLOCK, mf[k], id[k], ROUNDING_MAGIC,       \
                             levels_between(0.0f, top), y[b0 + k].qs, QH(y[b0 + k]));             \
            }                                                                                    \
        }                                                                                        \
        return LOWBIT_OK;                                                                        \
    }

SYMMETRIC_SEARCH_ENCODER(q4_0, shape_q4_0, plain_search_q4_0, 15.0f, NO_FIFTH_BITS)
SYMMETRIC_SEARCH_ENCODER(q5_0, shape_q5_0, plain_search_q5_0, 31.0f, FIFTH_BITS)
AFFINE_SEARCH_ENCODER(q4_1, plain_search_q4_1, 15.0f, NO_FIFTH_BITS)
AFFINE_SEARCH_ENCODER(q5_1, plain_search_q5_1, 31.0f, FIFTH_BITS)

/* ------------------------------------------------------------------------------------------ */
/* Q8_0 and Q8_1                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* The reference 8-bit encoding, byte for byte: d = amax / 127, q = round(x / d) with ties away from
   zero (roundf), d as fp16. Returns the level sum for Q8_1's s. */
static int reference_q8_levels(const float *x, float *d_out, int8_t qs[BLOCK]) {
    const float amax = fabsf(first_signed_extreme(x));
    const float d = amax / 127.0f;
    const float id = safe_inverse(d);
    int sum = 0;
    for (int j = 0; j < BLOCK; j++) {
        qs[j] = (int8_t)roundf(x[j] * id);
        sum += qs[j];
    }
    *d_out = d;
    return sum;
}

lowbit_status lb_quantize_ref_q8_0(const float *src, void *dst, int64_t n,
                                   const float *importance) {
    (void)importance;
    block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        float d;
        (void)reference_q8_levels(src, &d, y[b].qs);
        if (lb_store_fp16_scale(d, &y[b].d) != LOWBIT_OK) return LOWBIT_ERR_SCALE_OVERFLOW;
    }
    return LOWBIT_OK;
}

/* The searched 8-bit encoding shared by Q8_0 and Q8_1 (levels -127..127) of up to eight blocks:
   fp16 scales, levels and level sums. */
static lowbit_status encode_q8_lanes(const float *src, const float *importance, int count,
                                     uint16_t d_out[LANES], int8_t qs[LANES][BLOCK],
                                     int32_t level_sums[LANES]) {
    lane_blocks t;
    load_lanes(src, importance, count, &t);
    float d[LANES], id[LANES];
    const lowbit_status st =
        search_q8_lanes(&t, count, &search_q8, d);
    if (st != LOWBIT_OK) return st;
    lanes_to_fp16(d, d_out);
    for (int k = 0; k < LANES; k++) id[k] = inverse_or_zero(d[k]);
    const level_range r = levels_between(0.0f, 254.0f);
    for (int k = 0; k < count; k++) {
        level_sums[k] = final_bytes(src + k * BLOCK, id[k], ROUNDING_MAGIC + 127.0f, r, qs[k]);
    }
    return LOWBIT_OK;
}

lowbit_status lb_quantize_q8_0(const float *src, void *dst, int64_t n, const float *importance) {
    block_q8_0 *y = dst;
    const int64_t n_blocks = n / BLOCK;
    for (int64_t b0 = 0; b0 < n_blocks; b0 += LANES) {
        const int count = lane_count(n_blocks, b0);
        uint16_t d[LANES];
        int8_t qs[LANES][BLOCK];
        int32_t sums[LANES];
        const lowbit_status st = encode_q8_lanes(
            src + b0 * BLOCK, importance ? importance + b0 * BLOCK : NULL, count, d, qs, sums);
        if (st != LOWBIT_OK) return st;
        for (int k = 0; k < count; k++) {
            y[b0 + k].d = d[k];
            memcpy(y[b0 + k].qs, qs[k], BLOCK);
        }
    }
    return LOWBIT_OK;
}

void lb_dequantize_q8_0(const void *src, float *dst, int64_t n) {
    const block_q8_0 *x = src;
    for (int64_t b = 0; b < n / BLOCK; b++, dst += BLOCK) {
        const float d = lb_fp16_to_fp32(x[b].d);
        for (int j = 0; j < BLOCK; j++) dst[j] = (float)x[b].qs[j] * d;
    }
}

float lb_vec_dot_q8_0(int64_t n, const void *weights, const void *activations) {
    const block_q8_0 *x = weights, *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / BLOCK; b++) {
        int32_t sumi = 0;
        for (int j = 0; j < BLOCK; j++) sumi += x[b].qs[j] * y[b].qs[j];
        sum += (float)sumi * (lb_fp16_to_fp32(x[b].d) * lb_fp16_to_fp32(y[b].d));
    }
    return sum;
}

/* Reference Q8_1: Q8_0's levels and scale plus s = fp16(d * sum q), with d the unrounded scale. */
lowbit_status lb_quantize_ref_q8_1(const float *src, void *dst, int64_t n,
                                   const float *importance) {
    (void)importance;
    block_q8_1 *y = dst;
    for (int64_t b = 0; b < n / BLOCK; b++, src += BLOCK) {
        float d;
        const int sum = reference_q8_levels(src, &d, y[b].qs);
        if (lb_store_fp16_scale(d, &y[b].d) != LOWBIT_OK ||
            lb_store_fp16_scale((float)sum * d, &y[b].s) != LOWBIT_OK) {
            return LOWBIT_ERR_SCALE_OVERFLOW;
        }
    }
    return LOWBIT_OK;
}

lowbit_status lb_quantize_q8_1(const float *src, void *dst, int64_t n, const float *importance) {
    block_q8_1 *y = dst;
    const int64_t n_blocks = n / BLOCK;
    for (int64_t b0 = 0; b0 < n_blocks; b0 += LANES) {
        const int count = lane_count(n_blocks, b0);
        uint16_t d[LANES];
        int8_t qs[LANES][BLOCK];
        int32_t sums[LANES];
        const lowbit_status st = encode_q8_lanes(
            src + b0 * BLOCK, importance ? importance + b0 * BLOCK : NULL, count, d, qs, sums);
        if (st != LOWBIT_OK) return st;
        for (int k = 0; k < count; k++) {
            y[b0 + k].d = d[k];
            memcpy(y[b0 + k].qs, qs[k], BLOCK);
            if (lb_store_fp16_scale((float)sums[k] * lb_fp16_to_fp32(d[k]), &y[b0 + k].s) !=
                LOWBIT_OK) {
                return LOWBIT_ERR_SCALE_OVERFLOW;
            }
        }
    }
    return LOWBIT_OK;
}

void lb_dequantize_q8_1(const void *src, float *dst, int64_t n) {
    const block_q8_1 *x = src;
    for (int64_t b = 0; b < n / BLOCK; b++, dst += BLOCK) {
        const float d = lb_fp16_to_fp32(x[b].d);
        for (int j = 0; j < BLOCK; j++) dst[j] = (float)x[b].qs[j] * d;
    }
}

float lb_vec_dot_q8_1(int64_t n, const void *weights, const void *activations) {
    const block_q8_1 *x = weights, *y = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / BLOCK; b++) {
        int32_t sumi = 0;
        for (int j = 0; j < BLOCK; j++) sumi += x[b].qs[j] * y[b].qs[j];
        sum += (float)sumi * (lb_fp16_to_fp32(x[b].d) * lb_fp16_to_fp32(y[b].d));
    }
    return sum;
}
