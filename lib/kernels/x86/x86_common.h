/*
 * The small helpers every x86 kernel file needs (AVX2 + F16C only, so files compiled for AVX2
 * and for AVX-512 can include it): horizontal sums, fp16 scales, unaligned loads, the folding
 * of eight blocks' sums and the gathering of their scales, weight prefetches, and the bodies of
 * the 32-element formats' kernels, one-token and multi-token alike.
 */
#ifndef LOWBIT_X86_COMMON_H
#define LOWBIT_X86_COMMON_H

#include "../../formats/blocks.h"
#include "../../formats/fp4.h"
#include "../kernels.h"
#include "../multi_token.h"

#include <immintrin.h>
#include <string.h>

/* fp16 -> fp32 is exact, so F16C gives the scalar converter's value. */
static inline float half_to_float(lb_half h) { return _cvtsh_ss(h); }

static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* lb_fp4_doubled + 12: the FP4 levels as unsigned bytes (VPDPBUSD, VPMADDUBSW operands), the 12
   taken back through the activations' level sums or a second product. */
static const int8_t fp4_doubled_plus12[16] = {12, 13, 14, 15, 16, 18, 20, 24,
                                              12, 11, 10, 9,  8,  6,  4,  0};

/* Four UE4M3 bytes -> their values halved, as fp4.c decodes them: bit 7 ignored by the fields,
   exponent 0 subnormal (m * 2^-9), exactly 0x7F (NaN) read as 0. Branch-free on four lanes,
   since each NVFP4 block has four. */
static inline __m128 ue4m3_half_x4(const uint8_t codes[4]) {
    int32_t packed;
    memcpy(&packed, codes, sizeof packed);
    const __m128i c = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(packed));
    const __m128i e = _mm_and_si128(_mm_srli_epi32(c, 3), _mm_set1_epi32(15));
    const __m128i m = _mm_and_si128(c, _mm_set1_epi32(7));
    const __m128 normal = _mm_castsi128_ps(_mm_or_si128(
        _mm_slli_epi32(_mm_add_epi32(e, _mm_set1_epi32(120)), 23), _mm_slli_epi32(m, 20)));
    const __m128 subnormal = _mm_mul_ps(_mm_cvtepi32_ps(m), _mm_set1_ps(0x1p-9f));
    const __m128 is_subnormal = _mm_castsi128_ps(_mm_cmpeq_epi32(e, _mm_setzero_si128()));
    const __m128 is_nan = _mm_castsi128_ps(_mm_cmpeq_epi32(c, _mm_set1_epi32(0x7F)));
    const __m128 value = _mm_andnot_ps(is_nan, _mm_blendv_ps(normal, subnormal, is_subnormal));
    return _mm_mul_ps(value, _mm_set1_ps(0.5f));
}

/* The four sub-block scales of an NVFP4 block times its two Q8_0 activation blocks' scales,
   spread for the two halves' dot products (whose lanes 0-3 belong to the half's first sub-block
   and 4-7 to its second): scales[h] = [s(2h) x4, s(2h + 1) x4]. */
static inline void nvfp4_half_scales(const block_nvfp4 *x, const block_q8_0 y[2],
                                     __m256 scales[2]) {
    const float dy0 = half_to_float(y[0].d), dy1 = half_to_float(y[1].d);
    const __m128 s = _mm_mul_ps(ue4m3_half_x4(x->d), _mm_set_ps(dy1, dy1, dy0, dy0));
    scales[0] = _mm256_set_m128(_mm_shuffle_ps(s, s, 0x55), _mm_shuffle_ps(s, s, 0x00));
    scales[1] = _mm256_set_m128(_mm_shuffle_ps(s, s, 0xFF), _mm_shuffle_ps(s, s, 0xAA));
}

static inline __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

static inline uint32_t load_u32(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* The four bytes at p in the low lane of a vector: a load alone (VMOVD), no shuffle, from which
   unpacks gather scale fields of several blocks. */
static inline __m128i dword_at(const void *p) { return _mm_cvtsi32_si128((int)load_u32(p)); }

/* ------------------------------------------------------------------------------------------ */
/* Blocks eight at a time: their sums folded into one vector, their scales gathered together    */
/* ------------------------------------------------------------------------------------------ */

/* Folding eight blocks' 8-lane partial sums into one vector, lane i holding block i's total:
   VPHADDD pairs neighbouring lanes within each 128-bit half; three rounds leave block i's
   low-half and high-half totals in lane i % 4 of the two halves of vector i / 4 (q0 for blocks
   0-3, q1 for 4-7), which join_block_quads adds across the halves. */
static inline __m256i join_block_quads(__m256i q0, __m256i q1) {
    /* low lanes: q0's two halves; high lanes: q1's */
    const __m256i crossed = _mm256_permute2x128_si256(q0, q1, 0x21);
    return _mm256_add_epi32(crossed, _mm256_blend_epi32(q0, q1, 0xF0));
}

/* VPHADDD for sums whose lanes fit 16 bits (the 4- and 5-bit formats, MXFP4; the kernels state
   their bounds): VPACKSSDW + VPMADDWD by ones sums the same lanes into the same places, exactly
   (packing saturates nothing), in two micro-ops where VPHADDD takes three: Q5_0 1.17 -> 1.08 ns
   per block (AVX-512 kernel, a GEMV over a matrix in L2, Intel Xeon, min of 5 alternating
   runs). */
static inline __m256i hadd_small(__m256i a, __m256i b) {
    return _mm256_madd_epi16(_mm256_packs_epi32(a, b), _mm256_set1_epi16(1));
}

/* Eight fp16 scales at `stride` bytes apart (the first field of each block), as floats. Each is
   loaded with the two bytes after it (VMOVD, a plain load) and a tree of unpacks gathers the low
   words: 7 shuffles, where inserting them one by one (VPINSRW: a shuffle and a load each, plus
   the moves from general registers GCC makes of half of them) took 11. */
static inline __m256 eight_halves(const void *first, size_t stride) {
    const uint8_t *p = first;
    const __m128i h01 = _mm_unpacklo_epi16(dword_at(p), dword_at(p + stride));
    const __m128i h23 = _mm_unpacklo_epi16(dword_at(p + 2 * stride), dword_at(p + 3 * stride));
    const __m128i h45 = _mm_unpacklo_epi16(dword_at(p + 4 * stride), dword_at(p + 5 * stride));
    const __m128i h67 = _mm_unpacklo_epi16(dword_at(p + 6 * stride), dword_at(p + 7 * stride));
    return _mm256_cvtph_ps(
        _mm_unpacklo_epi64(_mm_unpacklo_epi32(h01, h23), _mm_unpacklo_epi32(h45, h67)));
}

/* The leading fp16 pairs (d, m of a weight block; d, s of Q8_1) of blocks `first`, first + 1,
   first + 4 and first + 5 as floats in that order: d m d m | d m d m. */
static inline __m256 four_half_pairs(const void *blocks, size_t stride, int first) {
    const uint8_t *p = (const uint8_t *)blocks + first * stride;
    const __m128i pairs =
        _mm_unpacklo_epi64(_mm_unpacklo_epi32(dword_at(p), dword_at(p + stride)),
                           _mm_unpacklo_epi32(dword_at(p + 4 * stride), dword_at(p + 5 * stride)));
    return _mm256_cvtph_ps(pairs);
}

/* For blocks with a min (Q4_1, Q5_1 against Q8_1): the weights' (d, m) pairs of eight blocks as
   floats, gathered as blocks 0 1 4 5 and 2 3 6 7 (see scales_and_mins_8_from). */
static inline void weight_half_pairs_8(const void *x, size_t x_stride, __m256 pairs[2]) {
    pairs[0] = four_half_pairs(x, x_stride, 0);
    pairs[1] = four_half_pairs(x, x_stride, 2);
}

/* Returns d_x * d_y of eight blocks and adds their m_x * s_y to *mins, lane by lane, from the
   weights' pairs (weight_half_pairs_8, decoded once for all the activation rows of a
   multi-token kernel) and the activations' (d, s) pairs, gathered alike, so that SHUFPS picks
   the products of each kind in block order. */
static inline __m256 scales_and_mins_8_from(const __m256 x_pairs[2], const void *y,
                                            size_t y_stride, __m256 *mins) {
    const __m256 p0 = _mm256_mul_ps(x_pairs[0], four_half_pairs(y, y_stride, 0));
    const __m256 p1 = _mm256_mul_ps(x_pairs[1], four_half_pairs(y, y_stride, 2));
    *mins = _mm256_add_ps(*mins, _mm256_shuffle_ps(p0, p1, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm256_shuffle_ps(p0, p1, _MM_SHUFFLE(2, 0, 2, 0));
}

/* Eight E8M0 bytes at `stride` bytes apart (MXFP4's first field), each as e8m0_half gives it:
   2^(e - 128), with e = 0 and 1 as the float subnormals 2^-128 and 2^-127. Without a compare or
   a blend: the normal part (max(e, 1) - 1) << 23 is 0 for e < 2, and the subnormal part
   0x00400000 >> (1 - e) is 0 for e >= 2, where 1 - e wraps to a shift count above 31. */
static inline __m256 eight_e8m0_halves(const uint8_t *p, size_t stride) {
    uint8_t e[8];
    for (int i = 0; i < 8; i++) e[i] = p[i * stride];
    const __m256i wide = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)e));
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i normal =
        _mm256_slli_epi32(_mm256_sub_epi32(_mm256_max_epu32(wide, one), one), 23);
    const __m256i subnormal =
        _mm256_srlv_epi32(_mm256_set1_epi32(0x00400000), _mm256_sub_epi32(one, wide));
    return _mm256_castsi256_ps(_mm256_or_si256(normal, subnormal));
}

/* Sixteen UE4M3 bytes (NVFP4 sub-block scales) as fp16 words worth 2^-8 of their value, as
   fp4.c decodes it: the seven value bits go under fp16's exponent and mantissa fields, whose
   bias (15) is UE4M3's (7) plus 8, subnormals included (fp16's are UE4M3's shifted alike), so
   that F16C converts them exactly; bit 7 is dropped and 0x7F (NaN) becomes 0. Kernels that
   decode the scales of four blocks at once this way (two conversions of eight) spend far less on
   them than ue4m3_half_x4 per block, which cost more than the block's dot products. */
static inline __m256i ue4m3_as_fp16_x16(__m128i codes) {
    const __m256i c = _mm256_cvtepu8_epi16(codes);
    const __m256i nan = _mm256_cmpeq_epi16(c, _mm256_set1_epi16(0x7F));
    const __m256i fields = _mm256_and_si256(_mm256_slli_epi16(c, 7), _mm256_set1_epi16(0x7F << 7));
    return _mm256_andnot_si256(nan, fields);
}

/* Weight rows are read once, front to back, and a GEMV over a matrix larger than the last-level
   cache waits on memory. The hardware prefetchers alone do not keep ahead of it on every CPU: on
   an Intel Xeon VM (4096 x 4096, one thread) the Q2_K GEMV read a cold matrix at 3.5 GB/s, a
   plain streaming read reaching 13. So every kernel asks for the weights WEIGHT_PREFETCH_BYTES
   ahead of the block it is working on, into L2 (T1), a line or so per block, spread through the
   row: Q2_K cold went 1.59 -> 0.52 ms, Q4_0 1.97 -> 0.95, Q6_K 2.23 -> 1.2, and the warm GEMVs
   gained 0-10%. One burst of a whole row's lines per row, tried first, stalled the kernel's own
   loads and cost 10-30% warm. 4, 8 and 16 KiB ahead measured alike; T0 and T2 no better, NTA
   three times slower.
   The block kernels also ask for the lines WEIGHT_PREFETCH_NEAR_BYTES ahead into L1 (T0), which
   hides the latency of L2 and of the last-level cache, where a "warm" matrix lives: Q4_K warm
   0.445 -> 0.416 ms and cold 0.82 -> 0.71, Q8_0 0.68 -> 0.64 and 1.44 -> 1.33, Q6_K 0.567 ->
   0.548 and 1.36 -> 1.22 (medians of 3 alternating runs); the rest unchanged within noise. The
   float kernels, whose results with it were mixed, keep the far prefetch alone.
   Prefetches never fault, so running past a row's (or the matrix's) end is harmless.
   always_inline: GCC deems a function that only prefetches free of side effects and, once it is
   left out of line (as in the always-inline K-quant kernels), drops the calls to it. */
#ifndef WEIGHT_PREFETCH_BYTES
#define WEIGHT_PREFETCH_BYTES 8192
#endif
#ifndef WEIGHT_PREFETCH_NEAR_BYTES
#define WEIGHT_PREFETCH_NEAR_BYTES 1024
#endif

static inline __attribute__((always_inline)) void prefetch_weights_to_l2(const void *block,
                                                                         size_t bytes) {
    const char *ahead = (const char *)block + WEIGHT_PREFETCH_BYTES;
    for (size_t k = 0; k < bytes; k += 64) _mm_prefetch(ahead + k, _MM_HINT_T1);
}

static inline __attribute__((always_inline)) void prefetch_weights(const void *block,
                                                                   size_t bytes) {
    prefetch_weights_to_l2(block, bytes);
    const char *near = (const char *)block + WEIGHT_PREFETCH_NEAR_BYTES;
    for (size_t k = 0; k < bytes; k += 64) _mm_prefetch(near + k, _MM_HINT_T0);
}

/* ------------------------------------------------------------------------------------------ */
/* Multi-token bodies of the 32-element formats (kernels.h, lb_vec_dot_tokens_fn)               */
/* ------------------------------------------------------------------------------------------ */

/* Signed levels w (any byte) split for the sign trick, once per weight block however many
   activation rows meet them: |w| as the unsigned operand, w giving the activations their
   sign. */
typedef struct signed_levels {
    __m256i magnitude, sign;
} signed_levels;

static inline signed_levels sign_split(__m256i w) {
    const signed_levels levels = {_mm256_abs_epi8(w), w};
    return levels;
}

/* 16 bytes at `lo` in the low 128-bit half and 16 at `hi` in the high one: a load and a
   VINSERTI128 from memory, which runs on any vector port, where the shuffles that would gather
   the same halves out of registers all take the one shuffle port. */
static inline __m256i load_2x16(const void *lo, const void *hi) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)lo)),
                                   _mm_loadu_si128((const __m128i *)hi), 1);
}

/* The codes of two blocks' 16 packed bytes (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, MXFP4): lo the low
   nibbles (elements 0-15), hi the high ones (elements 16-31), block k in the low half of each,
   block k + 4 in the high half (DEFINE_SCALED_DOT_TOKENS). */
typedef struct nibble_pair {
    __m256i lo, hi;
} nibble_pair;

static inline nibble_pair nibbles_of_pair(const uint8_t *qs_k, const uint8_t *qs_k4) {
    const __m256i packed = load_2x16(qs_k, qs_k4), low4 = _mm256_set1_epi8(0x0F);
    const nibble_pair codes = {_mm256_and_si256(packed, low4),
                               _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4)};
    return codes;
}

/* The qh bits (bit j: element j) of two blocks k and k + 4 as the bits of a nibble_pair's bytes:
   elements 0-15 of both blocks (*lo), then 16-31 (*hi). */
static inline void high_bits_of_pair(const uint8_t *qh_k, const uint8_t *qh_k4, uint32_t *lo,
                                     uint32_t *hi) {
    const uint32_t k = load_u32(qh_k), k4 = load_u32(qh_k4);
    *lo = (k & 0xFFFFu) | (k4 << 16);
    *hi = (k >> 16) | (k4 & 0xFFFF0000u);
}

/* Signed levels of a pair of blocks, elements 0-15 (lo) and 16-31 (hi), split for the sign
   trick. */
typedef struct signed_pair {
    signed_levels lo, hi;
} signed_pair;

/* Two blocks' 32 signed bytes each (Q8_0, Q8_1 weights), split for the sign trick. */
static inline signed_pair pair_of_i8_levels(const int8_t *qs_k, const int8_t *qs_k4) {
    const signed_pair levels = {sign_split(load_2x16(qs_k, qs_k4)),
                                sign_split(load_2x16(qs_k + 16, qs_k4 + 16))};
    return levels;
}

/* Before the short loops of the multi-token bodies (blocks, pairs, halves, tokens): GCC's own
   limits on complete unrolling leave them rolled once a body grows (four tokens of a sign-trick
   format), and their arrays then live in memory. */
#define UNROLL_SHORT _Pragma("GCC unroll 8")

/*
 * The exact integer totals of blocks b .. b + 7 of weight row x against activation rows y[t],
 * two ways that give the same totals in the same lanes (block i's in lane i):
 *
 * - One token: a block per register, BLOCK_SUMS(block, activation qs) giving eight s32 partial
 *   sums, single[k], folded by GROUP_TOTALS in three rounds of FOLD (hadd_small, or VPHADDD
 *   where the sums outgrow 16 bits) and a cross-half add (join_block_quads). The fewest loads,
 *   which the GEMV needs: over a matrix in the last-level cache the pair layout below made the
 *   one-token Q4_1 kernel 0.86 -> 0.99 ns per block (Q5_1 1.00 -> 1.17).
 * - Several tokens: blocks k and k + 4 in the two 128-bit halves of a register. PAIR unpacks the
 *   two weight blocks' levels once (into a LEVELS), PAIR_SUMS meets them with a token's two
 *   activation blocks, loaded side by side (load_2x16), giving four partial sums of each block,
 *   [k k k k | k+4 k+4 k+4 k+4]; FOLD puts two pairs together in halves[t][h], and
 *   GROUP_TOTALS the two halves in block order (FOLD_LAST). Per token and group that is three
 *   folds where a block per register takes seven and the join (Q4_1 with four tokens 0.70 ->
 *   0.61 ns per block and token, IQ4_NL 0.82 -> 0.69, over a matrix in L2).
 *
 * Tried for several tokens and slower or no better (ns per block and token, four tokens, AVX-512
 * kernels): the pair's activation halves from two 32-byte loads and two VPERM2I128 (Q4_1 0.62 ->
 * 0.72) or from four loads and two VPBLENDD (0.74); the activation scales gathered by broadcast
 * loads and VPBLENDD (Q5_1 0.72 -> 0.80) or VPGATHERDD (IQ4_NL 0.76 -> 0.91); prefetching the
 * activation rows (no change). What bounds them is not one port: dropping the activation
 * scales' gathering altogether gained 16-20%, the folds 3-8%.
 */
#define PARTIAL_SUMS_OF_8(single, halves, x, y, b, n_tokens, BLOCK_SUMS, LEVELS, PAIR,           \
                          PAIR_SUMS, FOLD)                                                        \
    do {                                                                                          \
        if ((n_tokens) == 1) {                                                                    \
            UNROLL_SHORT                                                                          \
            for (int k = 0; k < 8; k++) single[k] = BLOCK_SUMS(&(x)[(b) + k], (y)[0][(b) + k].qs); \
            break;                                                                                \
        }                                                                                         \
        UNROLL_SHORT                                                                              \
        for (int h = 0; h < 2; h++) {                                                             \
            __m256i pairs[LB_DOT_TOKENS][2];                                                      \
            UNROLL_SHORT                                                                          \
            for (int p = 0; p < 2; p++) {                                                         \
                const int64_t k = (b) + 2 * h + p;                                                \
                const LEVELS w = PAIR(&(x)[k], &(x)[k + 4]);                                      \
                UNROLL_SHORT                                                                      \
                for (int t = 0; t < (n_tokens); t++) {                                            \
                    pairs[t][p] = PAIR_SUMS(w, (y)[t][k].qs, (y)[t][k + 4].qs);                   \
                }                                                                                 \
            }                                                                                     \
            UNROLL_SHORT                                                                          \
            for (int t = 0; t < (n_tokens); t++) halves[t][h] = FOLD(pairs[t][0], pairs[t][1]);   \
        }                                                                                         \
    } while (0)

#define GROUP_TOTALS(single, halves, t, n_tokens, FOLD, FOLD_LAST)                                \
    ((n_tokens) == 1                                                                              \
         ? join_block_quads(FOLD(FOLD(single[0], single[1]), FOLD(single[2], single[3])),         \
                            FOLD(FOLD(single[4], single[5]), FOLD(single[6], single[7])))         \
         : FOLD_LAST(halves[t][0], halves[t][1]))

/* The two ways the 32-element formats scale their blocks, each as three hooks of
   DEFINE_GROUPED_DOT_TOKENS: GROUP_SCALES_<KIND> puts the products of the weights' and each
   token's scales of blocks b .. b + 7 into d[t] (the weights' decoded once), BLOCK_TERM_<KIND>
   is one left-over block's float term from its exact integer sum, ROW_TOTAL_<KIND> a token's
   float lanes before they are added up.
   - SCALED: the fp16 or E8M0 scales of SCALES_8 (one block's: SCALE) against Q8_0's d.
   - MIN: the (d, m) pairs of Q4_1 and Q5_1 against Q8_1's (d, s), d_x d_y sum(l a) + m_x s_y per
     block; the m_x s_y are gathered with the scales (scales_and_mins_8_from) into a float vector
     of their own per token, mins[t], added to the main one at the end. */
#define GROUP_SCALES_SCALED(d, mins, x, y, b, n_tokens, ABLOCK, SCALES_8)                         \
    do {                                                                                          \
        const __m256 dx = SCALES_8(&(x)[b], sizeof *(x));                                         \
        UNROLL_SHORT                                                                              \
        for (int t = 0; t < (n_tokens); t++) {                                                    \
            (d)[t] = _mm256_mul_ps(dx, eight_halves(&(y)[t][b], sizeof(ABLOCK)));                 \
        }                                                                                         \
    } while (0)
#define BLOCK_TERM_SCALED(xb, yb, sum, SCALE) ((sum) * (SCALE(xb) * half_to_float((yb).d)))
#define ROW_TOTAL_SCALED(acc, mins) (acc)

#define GROUP_SCALES_MIN(d, mins, x, y, b, n_tokens, ABLOCK, SCALES_8)                            \
    do {                                                                                          \
        __m256 x_pairs[2];                                                                        \
        weight_half_pairs_8(&(x)[b], sizeof *(x), x_pairs);                                       \
        UNROLL_SHORT                                                                              \
        for (int t = 0; t < (n_tokens); t++) {                                                    \
            (d)[t] = scales_and_mins_8_from(x_pairs, &(y)[t][b], sizeof(ABLOCK), &(mins)[t]);     \
        }                                                                                         \
    } while (0)
#define BLOCK_TERM_MIN(xb, yb, sum, SCALE)                                                        \
    ((sum) * (half_to_float((xb).d) * half_to_float((yb).d)) +                                    \
     half_to_float((xb).m) * half_to_float((yb).s))
#define ROW_TOTAL_MIN(acc, mins) _mm256_add_ps((acc), (mins))

/*
 * NAME(n, weights, activations, stride, n_tokens, out): one weight row of a 32-element format
 * against n_tokens <= LB_DOT_TOKENS activation rows, eight blocks at a time (PARTIAL_SUMS_OF_8
 * and GROUP_TOTALS for the integer sums). The weights' eight scales are decoded once, met by
 * each token's (GROUP_SCALES_<KIND>, KIND being SCALED or MIN), and one conversion and one FMA
 * per token and group accumulate. The one-token kernel gathers the scales before the integer
 * work or after it as the file using these macros sets SCALES_FIRST (a constant, 1 or 0): the
 * same operations, in the order that measured faster at the file's level (see there), GCC
 * keeping the source order. With several tokens they come after, which keeps fewer registers
 * live across the integer work. Inlined with a constant n_tokens (DEFINE_DOT_ENTRY_POINTS), the
 * loops over tokens unroll into registers; the one-token kernel is this body with one token, and
 * since both ways of summing give the same exact totals in the same lanes, every token gets the
 * one-token kernel's float operations exactly. The float lanes are added up once per row; the
 * blocks left over after the groups of eight are added one by one. SCALE and SCALES_8 are the
 * SCALED kind's (one block's scale, eight blocks' scales); the MIN kind ignores them.
 */
#define DEFINE_GROUPED_DOT_TOKENS(NAME, KIND, WBLOCK, ABLOCK, BLOCK_SUMS, LEVELS, PAIR, PAIR_SUMS, \
                                  FOLD, FOLD_LAST, SCALE, SCALES_8)                               \
    static inline __attribute__((always_inline)) void NAME(                                       \
        int64_t n, const void *weights, const void *activations, size_t stride, int n_tokens,     \
        float *out) {                                                                             \
        const WBLOCK *x = weights;                                                                \
        const ABLOCK *y[LB_DOT_TOKENS];                                                           \
        __m256 acc[LB_DOT_TOKENS], mins[LB_DOT_TOKENS];                                           \
        for (int t = 0; t < n_tokens; t++) {                                                      \
            y[t] = token_row(activations, stride, t);                                             \
            acc[t] = mins[t] = _mm256_setzero_ps();                                               \
        }                                                                                         \
        const int64_t nb = n / 32;                                                                \
        const int scales_first = SCALES_FIRST && n_tokens == 1;                                   \
        int64_t b = 0;                                                                            \
        for (; b + 8 <= nb; b += 8) {                                                             \
            prefetch_weights(&x[b], 8 * sizeof *x);                                               \
            __m256 d[LB_DOT_TOKENS];                                                              \
            if (scales_first) GROUP_SCALES_##KIND(d, mins, x, y, b, n_tokens, ABLOCK, SCALES_8);  \
            __m256i single[8], halves[LB_DOT_TOKENS][2];                                          \
            PARTIAL_SUMS_OF_8(single, halves, x, y, b, n_tokens, BLOCK_SUMS, LEVELS, PAIR,        \
                              PAIR_SUMS, FOLD);                                                   \
            if (!scales_first) GROUP_SCALES_##KIND(d, mins, x, y, b, n_tokens, ABLOCK, SCALES_8); \
            UNROLL_SHORT                                                                          \
            for (int t = 0; t < n_tokens; t++) {                                                  \
                const __m256i sums = GROUP_TOTALS(single, halves, t, n_tokens, FOLD, FOLD_LAST);  \
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d[t], acc[t]);                 \
            }                                                                                     \
        }                                                                                         \
        /* apart, so that the first loop unrolls and the accumulators stay in registers */        \
        for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(ROW_TOTAL_##KIND(acc[t], mins[t]));  \
        for (int t = 0; t < n_tokens; t++) {                                                      \
            for (int64_t c = b; c < nb; c++) {                                                    \
                const float sum = (float)hsum_i32(BLOCK_SUMS(&x[c], y[t][c].qs));                 \
                out[t] += BLOCK_TERM_##KIND(x[c], y[t][c], sum, SCALE);                           \
            }                                                                                     \
        }                                                                                         \
    }

/* The formats scaled by d alone (SCALED) and those with a min against Q8_1 (MIN). The MIN kind's
   hooks never expand their SCALE and SCALES_8 arguments, so NO_SCALE and NO_SCALES_8 are names
   that are defined nowhere: a hook that used them would fail to compile. */
#define DEFINE_SCALED_DOT_TOKENS(NAME, WBLOCK, ABLOCK, BLOCK_SUMS, LEVELS, PAIR, PAIR_SUMS, FOLD, \
                                 FOLD_LAST, SCALE, SCALES_8)                                      \
    DEFINE_GROUPED_DOT_TOKENS(NAME, SCALED, WBLOCK, ABLOCK, BLOCK_SUMS, LEVELS, PAIR, PAIR_SUMS,  \
                              FOLD, FOLD_LAST, SCALE, SCALES_8)
#define DEFINE_MIN_DOT_TOKENS(NAME, WBLOCK, BLOCK_SUMS, LEVELS, PAIR, PAIR_SUMS, FOLD, FOLD_LAST) \
    DEFINE_GROUPED_DOT_TOKENS(NAME, MIN, WBLOCK, block_q8_1, BLOCK_SUMS, LEVELS, PAIR, PAIR_SUMS, \
                              FOLD, FOLD_LAST, NO_SCALE, NO_SCALES_8)

/* ------------------------------------------------------------------------------------------ */
/* Float formats (F32, F16, BF16 against activations of their own type)                        */
/* ------------------------------------------------------------------------------------------ */

static inline __m256 load_f32x8(const float *p) { return _mm256_loadu_ps(p); }

static inline __m256 load_f16x8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline __m256 load_bf16x8(const uint16_t *p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

static inline float f32_identity(float v) { return v; }

/*
 * NAME(n, weights, activations, stride, n_tokens, out): a float weight row against n_tokens
 * activation rows, 32 elements per iteration in four accumulators per token (element 8k + j of
 * each 32 in lane j of accumulator k), the rest 8 at a time into the first, then one by one.
 * Each weight vector is loaded and widened once for all the tokens of a pass, PASS tokens at most
 * (as many as the registers hold); more tokens take further passes over the row. Every token
 * gets the one-token kernel's operations in its order, so the results are bit-identical.
 * The weights are prefetched 8 KiB ahead into L2 (legacy_avx2.c says why).
 */
#define DEFINE_FLOAT_DOT_TOKENS(NAME, ELEM, LOAD, TO_F32, PASS)                                   \
    static inline ALWAYS_INLINE void NAME##_pass(int64_t n, const ELEM *w,                       \
                                                 const void *activations, size_t stride,         \
                                                 int n_tokens, float *out) {                     \
        const ELEM *a[PASS];                                                                      \
        __m256 acc[PASS][4];                                                                      \
        for (int t = 0; t < n_tokens; t++) {                                                      \
            a[t] = token_row(activations, stride, t);                                             \
            for (int k = 0; k < 4; k++) acc[t][k] = _mm256_setzero_ps();                          \
        }                                                                                         \
        int64_t i = 0;                                                                            \
        for (; i + 32 <= n; i += 32) {                                                            \
            prefetch_weights_to_l2(w + i, 32 * sizeof(ELEM));                                     \
            for (int k = 0; k < 4; k++) {                                                         \
                const __m256 wk = LOAD(w + i + 8 * k);                                            \
                for (int t = 0; t < n_tokens; t++) {                                              \
                    acc[t][k] = _mm256_fmadd_ps(wk, LOAD(a[t] + i + 8 * k), acc[t][k]);           \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        for (; i + 8 <= n; i += 8) {                                                              \
            const __m256 wk = LOAD(w + i);                                                        \
            for (int t = 0; t < n_tokens; t++) {                                                  \
                acc[t][0] = _mm256_fmadd_ps(wk, LOAD(a[t] + i), acc[t][0]);                       \
            }                                                                                     \
        }                                                                                         \
        for (int t = 0; t < n_tokens; t++) {                                                      \
            float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[t][0], acc[t][1]),                \
                                              _mm256_add_ps(acc[t][2], acc[t][3])));              \
            for (int64_t j = i; j < n; j++) sum += TO_F32(w[j]) * TO_F32(a[t][j]);                \
            out[t] = sum;                                                                         \
        }                                                                                         \
    }                                                                                             \
    static inline ALWAYS_INLINE void NAME(int64_t n, const void *weights,                        \
                                          const void *activations, size_t stride, int n_tokens,  \
                                          float *out) {                                          \
        int t = 0;                                                                                \
        for (; t + (PASS) <= n_tokens; t += (PASS)) {                                             \
            NAME##_pass(n, weights, token_row(activations, stride, t), stride, PASS, out + t);    \
        }                                                                                         \
        if (t < n_tokens) {                                                                       \
            NAME##_pass(n, weights, token_row(activations, stride, t), stride, n_tokens - t,      \
                        out + t);                                                                 \
        }                                                                                         \
    }

#endif
