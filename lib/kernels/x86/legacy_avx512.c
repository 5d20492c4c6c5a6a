/*
 * AVX-512 VL + BW + VNNI kernels of the 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * IQ4_NL, MXFP4, NVFP4 and Q8_1 as weights (256-bit registers), of F32 (512-bit registers), and
 * of F16 and BF16 (the AVX2 body on 256-bit registers, with more tokens at a time).
 * lb_register_legacy_avx512 is called only on a CPU with VNNI; the AVX2 kernels of legacy_avx2.c
 * stay the fallback, the type table's scalar references the ground truth.
 *
 * Block formats. A block's integer work is small (one VPDPBUSD for 32 products), so what it
 * costs around that decides the speed. The AVX2 kernels pay per block two fp16 scale
 * conversions, a multiply, a broadcast, an int->float conversion and an FMA into a float
 * accumulator (plus an add for the min term of Q4_1/Q5_1). Here blocks go eight at a time:
 * - each block's product is one VPDPBUSD (u8 x s8, four products per s32 lane), which replaces
 *   VPMADDUBSW + VPMADDWD of AVX2;
 * - the eight blocks' 8-lane sums are folded into one vector, lane i = block i's exact total,
 *   by a tree of VPHADDD (9 instructions for 8 blocks), or where the sums are small enough of
 *   VPACKSSDW + VPMADDWD (hadd_small, fewer micro-ops);
 * - the eight scales are gathered by plain loads and unpacks, converted with one VCVTPH2PS per
 *   operand and multiplied at once, and one int->float conversion and one FMA per 8 blocks
 *   meet them;
 * - the min terms m_x * s_y of Q4_1/Q5_1 ride along in the same conversions (d and m are
 *   adjacent in the weight block, d and s in Q8_1's) into a float vector of their own.
 * The float lanes are added up once per row. The integer totals are exact (the references'
 * own), so results differ from the references only by the order of the float operations.
 * Signed weights (Q8_0, IQ4_NL) use the sign trick (|w| unsigned, the activation taking w's
 * sign), exact since the activation quantizers never produce -128; so does Q5_0, whose
 * magnitudes and signs come from its high bits by masked subtractions (block_sums_q5_0). Q4_0's
 * levels travel as their unsigned stored values q = w + 8, the offset coming off through a
 * second VPDPBUSD of 8 against the same activations (exact for any activation byte). NVFP4 goes
 * four blocks (eight activation blocks) at a time, see nvfp4_dot_tokens.
 *
 * Multi-token kernels (lb_vec_dot_tokens_fn, what lowbit_matmul runs for batches): one weight
 * row against up to four activation rows, the weights' levels and scales decoded once for all
 * of them. The bodies are shared with the AVX2 kernels (x86_common.h, DEFINE_SCALED_DOT_TOKENS):
 * with several tokens, blocks k and k + 4 share a register so that each token's sums take three
 * folds per eight blocks instead of seven and a join; with one token they keep a block per
 * register (fewer loads). Both give the same exact totals in the same lanes, so each token's
 * result is the one-token kernel's bit for bit (tests/test_kernels.c checks it).
 *
 * Measured (single-thread GEMV 4096 x 4096, AMD EPYC Zen 4, AVX2 kernel -> this file's, min of
 * 20 alternating runs; `lowbit bench` medians agree): Q4_0 0.69 -> 0.56 ms (an earlier kernel
 * with two blocks per 512-bit register: 0.71), Q4_1 0.99 -> 0.47, Q5_0 0.95 -> 0.65, Q5_1
 * 1.21 -> 0.56, IQ4_NL 0.78 -> 0.61, Q8_0 0.60 -> 0.53 ms. MXFP4 (Intel Xeon, `lowbit bench`
 * medians of three alternating runs): 0.96 -> 0.67 ms; its E8M0 scales of eight blocks become
 * floats by shifts (eight_e8m0_halves), the subnormal exponents 0 and 1 included. 512-bit
 * versions of the block kernels measured slower: Zen 4 runs them as two 256-bit halves, and
 * pairing blocks costs shuffles.
 * On an Intel Xeon (where these kernels run out of the cache, bound by their micro-ops and
 * loads rather than by memory) a single 512-bit instruction in a 256-bit kernel cost as much:
 * decoding NVFP4's sixteen scales in one 512-bit register made its kernel 2.05 ns per block
 * against 1.49 with two 256-bit ones, the CPU closing a vector port to 256-bit work while
 * 512-bit work is in flight.
 * The same Xeon, `lowbit bench` warm single-thread GEMV, medians of 6-7 alternating runs,
 * before -> after the scale gathering by unpacks, the small-level tree, Q5_0's masked
 * form, one activation load in Q4_0 (in_register) and NVFP4's four-block kernel: NVFP4 1.45 ->
 * 0.60 ms, Q5_0 0.77 -> 0.65, Q4_0 0.64 -> 0.56, Q4_1 0.53 -> 0.50, IQ4_NL 0.66 -> 0.61,
 * MXFP4 0.66 -> 0.61, Q8_0 0.68 -> 0.66. Q5_1 stayed at 0.64-0.65: its kernel went 1.14 ->
 * 1.07 ns per block over a matrix in L2, but reading the last-level cache it runs at ~1.15 as
 * before (1.09 with the near prefetch alone, which leaves a cold matrix unprefetched; the far
 * one alone, into L1, made Q5_1's cold GEMV slower).
 *
 * F32. The GEMV streams the weights from memory while re-reading the 16 KiB activation row,
 * and row plus activations (32 KiB) just overflow L1: the activation lines are evicted by the
 * weights and their refills compete with the weight misses, which held the kernel to ~17 GB/s
 * against ~28 GB/s for a plain read of the same matrix (a 4 KiB activation row, or no
 * activations, gave the full rate). Prefetching the weights 8 KiB ahead into L2 (T1 hint)
 * shortens the weight misses and gives ~25 GB/s; 512-bit loads add a few percent over 256-bit
 * ones with the same prefetch (2.5-2.6 vs 2.6-2.75 ms). Tried and slower: T0 prefetch of the
 * weights (18 GB/s), NTA (12-20 GB/s), prefetching the activations (14-17 GB/s), 8
 * accumulators instead of 4 (no change). F16 and BF16 rows take 8 KiB, row plus activations fit
 * L1, and 512-bit loads did not make them faster (they keep the AVX2 body; with 32 vector
 * registers its multi-token kernel takes four tokens per pass where AVX2 takes two). The block
 * kernels prefetch a group's lines 8 KiB ahead as well (prefetch_weights, x86_common.h).
 */
#include "../../formats/blocks.h"
#include "../kernels.h"
#include "x86_common.h"

#include <immintrin.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static inline __m256i load_i8x32(const int8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* 16 packed bytes -> 32 nibbles in element order: low nibbles (elements 0..15) in the low lane,
   high nibbles (16..31) in the high lane. */
static inline __m256i unpack_nibbles(const uint8_t *qs) {
    const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    const __m256i shifted = _mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4));
    return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
}

/* The 5-bit stored levels: the nibbles with 16 added where the block's qh bit is set. */
static inline __m256i unpack_5bit(const uint8_t *qs, const uint8_t qh[4]) {
    const __m256i low = unpack_nibbles(qs);
    /* qh's 32 bits are a byte mask as they stand: bit j belongs to element j */
    return _mm256_mask_add_epi8(low, (__mmask32)load_u32(qh), low, _mm256_set1_epi8(0x10));
}

/* v, kept in a register: GCC folds a load used by two VPDPBUSDs into both as a memory operand,
   reading it twice, and half the activation blocks (34 bytes apart) straddle two cache lines,
   which costs a load port a second cycle. Loaded once, Q4_0 went 1.10 -> 1.05 ns per block. */
static inline __m256i in_register(__m256i v) {
    __asm__("" : "+v"(v));
    return v;
}

/* 8 s32 sums of four products each, u unsigned, a signed: VPDPBUSD from zero. */
static inline __m256i dot_u8(__m256i u, const int8_t *a) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, load_i8x32(a));
}

/* The same for signed weights w, the sign moved onto the activations (never -128). */
static inline __m256i dot_i8(__m256i w, const int8_t *a) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(w),
                               _mm256_sign_epi8(load_i8x32(a), w));
}

/* ------------------------------------------------------------------------------------------ */
/* Scales of eight blocks                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* eight_e8m0_halves by a mask compare and a masked blend, which AVX-512 has: MXFP4's warm GEMV
   0.573 -> 0.562 ms against the shift form (medians of eight alternating runs). */
static inline __m256 eight_e8m0_halves_masked(const uint8_t *p, size_t stride) {
    uint8_t e[8];
    for (int i = 0; i < 8; i++) e[i] = p[i * stride];
    const __m256i wide = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)e));
    const __m256i normal = _mm256_slli_epi32(_mm256_sub_epi32(wide, _mm256_set1_epi32(1)), 23);
    const __m256i subnormal = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), wide);
    const __mmask8 tiny = _mm256_cmplt_epu32_mask(wide, _mm256_set1_epi32(2));
    return _mm256_castsi256_ps(_mm256_mask_blend_epi32(tiny, normal, subnormal));
}

/* A weight block's scale, one block (the leftovers) or eight (the first field of each block). */
#define FP16_SCALE(block) half_to_float((block).d)
#define FP16_SCALES_8(p, stride) eight_halves(p, stride)
#define E8M0_SCALE(block) lb_e8m0_half((block).e)
#define E8M0_SCALES_8(p, stride) eight_e8m0_halves_masked((const uint8_t *)(p), stride)

/* ------------------------------------------------------------------------------------------ */
/* One block against one activation block (the one-token kernels and the leftover blocks):    */
/* 8 s32 lanes, exact                                                                          */
/* ------------------------------------------------------------------------------------------ */

static inline __m256i block_sums_q4_1(const block_q4_1 *x, const int8_t *qs) {
    return dot_u8(unpack_nibbles(x->qs), qs);
}

static inline __m256i block_sums_q5_1(const block_q5_1 *x, const int8_t *qs) {
    return dot_u8(unpack_5bit(x->qs, x->qh), qs);
}

static inline __m256i block_sums_q4_0(const block_q4_0 *x, const int8_t *qs) {
    /* (q - 8) * a as q * a - 8 * a: exact for any activation byte */
    const __m256i a = in_register(load_i8x32(qs));
    const __m256i zero = _mm256_setzero_si256();
    return _mm256_sub_epi32(_mm256_dpbusd_epi32(zero, unpack_nibbles(x->qs), a),
                            _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(8), a));
}

/* Q5_0's levels w = q - 16 by magnitude and sign, like the sign trick: where the high bit is
   clear, w = nibble - 16 < 0, so |w| = 16 - nibble and the activation is negated; where it is
   set, w = nibble. Two masked subtractions, one VPDPBUSD: a micro-op fewer than q * a - 16 * a
   (Q5_0 1.07 -> 1.03 ns per block in L2), exact while no activation byte is -128 (never, from
   the activation quantizers). pair_q5_0 does the same for two blocks. */
static inline __m256i block_sums_q5_0(const block_q5_0 *x, const int8_t *qs) {
    const __m256i nibbles = unpack_nibbles(x->qs);
    const __mmask32 negative = _knot_mask32(_cvtu32_mask32(load_u32(x->qh)));
    const __m256i magnitude =
        _mm256_mask_sub_epi8(nibbles, negative, _mm256_set1_epi8(16), nibbles);
    const __m256i a = load_i8x32(qs);
    const __m256i signed_a = _mm256_mask_sub_epi8(a, negative, _mm256_setzero_si256(), a);
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), magnitude, signed_a);
}

static inline __m256i block_sums_q8_0(const block_q8_0 *x, const int8_t *qs) {
    return dot_i8(_mm256_loadu_si256((const __m256i *)x->qs), qs);
}

static inline __m256i block_sums_q8_1(const block_q8_1 *x, const int8_t *qs) {
    return dot_i8(_mm256_loadu_si256((const __m256i *)x->qs), qs);
}

static inline __m256i block_sums_iq4_nl(const block_iq4_nl *x, const int8_t *qs) {
    const __m256i table =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lb_kvalues_iq4nl));
    return dot_i8(_mm256_shuffle_epi8(table, unpack_nibbles(x->qs)), qs);
}

/* FP4 codes through the doubled-value table (the half is in the scale), signed like IQ4_NL's. */
static inline __m256i block_sums_mxfp4(const block_mxfp4 *x, const int8_t *qs) {
    const __m256i table =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lb_fp4_doubled));
    return dot_i8(_mm256_shuffle_epi8(table, unpack_nibbles(x->qs)), qs);
}

/* ------------------------------------------------------------------------------------------ */
/* Block levels, decoded once for two weight blocks k and k + 4 (one per 128-bit half), and    */
/* their sums with a token's two activation blocks (x86_common.h, DEFINE_SCALED_DOT_TOKENS):   */
/* [k k k k | k+4 k+4 k+4 k+4], exact                                                          */
/* ------------------------------------------------------------------------------------------ */

/* A token's activation bytes that meet a nibble_pair: elements 0-15 (lo) and 16-31 (hi) of
   blocks k and k + 4, kept in registers (see in_register). */
static inline void activation_pair(const int8_t *qs_k, const int8_t *qs_k4, __m256i *lo,
                                   __m256i *hi) {
    *lo = in_register(load_2x16(qs_k, qs_k4));
    *hi = in_register(load_2x16(qs_k + 16, qs_k4 + 16));
}

/* Unsigned levels (Q4_1, Q5_1): VPDPBUSD straight, both halves into one accumulator. */
static inline __m256i sums_unsigned_pair(nibble_pair w, const int8_t *qs_k, const int8_t *qs_k4) {
    return _mm256_dpbusd_epi32(
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), w.lo, load_2x16(qs_k, qs_k4)), w.hi,
        load_2x16(qs_k + 16, qs_k4 + 16));
}

static inline nibble_pair pair_q4_1(const block_q4_1 *k, const block_q4_1 *k4) {
    return nibbles_of_pair(k->qs, k4->qs);
}

/* The qh bits of blocks k and k + 4 as the byte masks of a nibble_pair's halves. */
static inline void high_masks_of_pair(const uint8_t *qh_k, const uint8_t *qh_k4, __mmask32 *lo,
                                      __mmask32 *hi) {
    uint32_t lo_bits, hi_bits;
    high_bits_of_pair(qh_k, qh_k4, &lo_bits, &hi_bits);
    *lo = _cvtu32_mask32(lo_bits);
    *hi = _cvtu32_mask32(hi_bits);
}

/* Q5_1's levels: the nibbles with 16 added where the qh bit is set. */
static inline nibble_pair pair_q5_1(const block_q5_1 *k, const block_q5_1 *k4) {
    nibble_pair levels = nibbles_of_pair(k->qs, k4->qs);
    __mmask32 lo, hi;
    high_masks_of_pair(k->qh, k4->qh, &lo, &hi);
    const __m256i sixteen = _mm256_set1_epi8(0x10);
    levels.lo = _mm256_mask_add_epi8(levels.lo, lo, levels.lo, sixteen);
    levels.hi = _mm256_mask_add_epi8(levels.hi, hi, levels.hi, sixteen);
    return levels;
}

/* Q4_0's stored nibbles q = w + 8, unsigned: (q - 8) * a as q * a - 8 * a, exact for any
   activation byte, a VPDPBUSD of 8 against the same activations taking the offset off. */
static inline nibble_pair pair_q4_0(const block_q4_0 *k, const block_q4_0 *k4) {
    return nibbles_of_pair(k->qs, k4->qs);
}

static inline __m256i sums_q4_0_pair(nibble_pair q, const int8_t *qs_k, const int8_t *qs_k4) {
    __m256i a_lo, a_hi;
    activation_pair(qs_k, qs_k4, &a_lo, &a_hi);
    const __m256i zero = _mm256_setzero_si256(), eight = _mm256_set1_epi8(8);
    const __m256i sums = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, q.lo, a_lo), q.hi, a_hi);
    const __m256i offset =
        _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, eight, a_lo), eight, a_hi);
    return _mm256_sub_epi32(sums, offset);
}

/* Q5_0: magnitudes and signs as in block_sums_q5_0. */
typedef struct q5_0_pair {
    __m256i lo, hi;             /* magnitudes */
    __mmask32 lo_neg, hi_neg;   /* where the level is negative */
} q5_0_pair;

static inline q5_0_pair pair_q5_0(const block_q5_0 *k, const block_q5_0 *k4) {
    const nibble_pair nibbles = nibbles_of_pair(k->qs, k4->qs);
    __mmask32 lo_set, hi_set;
    high_masks_of_pair(k->qh, k4->qh, &lo_set, &hi_set);
    const __mmask32 lo_neg = _knot_mask32(lo_set), hi_neg = _knot_mask32(hi_set);
    const __m256i sixteen = _mm256_set1_epi8(16);
    const q5_0_pair levels = {_mm256_mask_sub_epi8(nibbles.lo, lo_neg, sixteen, nibbles.lo),
                              _mm256_mask_sub_epi8(nibbles.hi, hi_neg, sixteen, nibbles.hi),
                              lo_neg, hi_neg};
    return levels;
}

static inline __m256i sums_q5_0_pair(q5_0_pair w, const int8_t *qs_k, const int8_t *qs_k4) {
    const __m256i zero = _mm256_setzero_si256();
    const __m256i a_lo = load_2x16(qs_k, qs_k4), a_hi = load_2x16(qs_k + 16, qs_k4 + 16);
    const __m256i signed_lo = _mm256_mask_sub_epi8(a_lo, w.lo_neg, zero, a_lo);
    const __m256i signed_hi = _mm256_mask_sub_epi8(a_hi, w.hi_neg, zero, a_hi);
    return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, w.lo, signed_lo), w.hi, signed_hi);
}

/* Signed levels (Q8_0, IQ4_NL, MXFP4) by the sign trick, the activations taking the levels'
   signs (never -128). */
static inline __m256i sums_signed_pair(signed_pair w, const int8_t *qs_k, const int8_t *qs_k4) {
    const __m256i a_lo = _mm256_sign_epi8(load_2x16(qs_k, qs_k4), w.lo.sign);
    const __m256i a_hi = _mm256_sign_epi8(load_2x16(qs_k + 16, qs_k4 + 16), w.hi.sign);
    return _mm256_dpbusd_epi32(
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), w.lo.magnitude, a_lo), w.hi.magnitude, a_hi);
}

static inline signed_pair pair_q8_0(const block_q8_0 *k, const block_q8_0 *k4) {
    return pair_of_i8_levels(k->qs, k4->qs);
}

static inline signed_pair pair_q8_1(const block_q8_1 *k, const block_q8_1 *k4) {
    return pair_of_i8_levels(k->qs, k4->qs);
}

/* Codes through a 16-entry table of signed levels. */
static inline signed_pair table_pair(const uint8_t *qs_k, const uint8_t *qs_k4,
                                     const int8_t table16[16]) {
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)table16));
    const nibble_pair codes = nibbles_of_pair(qs_k, qs_k4);
    const signed_pair levels = {sign_split(_mm256_shuffle_epi8(table, codes.lo)),
                                sign_split(_mm256_shuffle_epi8(table, codes.hi))};
    return levels;
}

static inline signed_pair pair_iq4_nl(const block_iq4_nl *k, const block_iq4_nl *k4) {
    return table_pair(k->qs, k4->qs, lb_kvalues_iq4nl);
}

/* FP4 codes through the doubled-value table (the half is in the scale). */
static inline signed_pair pair_mxfp4(const block_mxfp4 *k, const block_mxfp4 *k4) {
    return table_pair(k->qs, k4->qs, lb_fp4_doubled);
}

/* ------------------------------------------------------------------------------------------ */
/* Row loops (x86_common.h), each one-token kernel the multi-token body with one token         */
/* ------------------------------------------------------------------------------------------ */

/* One token: a group's scales after its integer sums (x86_common.h): warm GEMVs, medians of
   six alternating runs against scales first, Q5_1 0.63 -> 0.60 ms, MXFP4 0.61 -> 0.58, Q4_0
   0.55 -> 0.53, the rest unchanged. */
enum { SCALES_FIRST = 0 };

/* The folds (FOLD, FOLD_LAST) by the size of the sums, hadd_small while they pack into 16 bits.
   A pair's lane sums eight products (a block's, in the one-token kernels, four, folded twice
   before the join): Q4_0 at most 8 * 8 * 127, Q4_1 8 * 15 * 127, Q5_0 8 * 16 * 127 = 16256
   (twice that, 32512, still packs), MXFP4 8 * 12 * 127; Q5_1's 8 * 31 * 127 packs once but not
   twice; IQ4_NL's and Q8_0's (8 * 128 * 127) take VPHADDD. */

DEFINE_MIN_DOT_TOKENS(q4_1_dot_tokens, block_q4_1, block_sums_q4_1, nibble_pair, pair_q4_1,
                      sums_unsigned_pair, hadd_small, hadd_small)
DEFINE_MIN_DOT_TOKENS(q5_1_dot_tokens, block_q5_1, block_sums_q5_1, nibble_pair, pair_q5_1,
                      sums_unsigned_pair, hadd_small, _mm256_hadd_epi32)
DEFINE_SCALED_DOT_TOKENS(q4_0_dot_tokens, block_q4_0, block_q8_0, block_sums_q4_0, nibble_pair,
                         pair_q4_0, sums_q4_0_pair, hadd_small, hadd_small, FP16_SCALE,
                         FP16_SCALES_8)
DEFINE_SCALED_DOT_TOKENS(q5_0_dot_tokens, block_q5_0, block_q8_0, block_sums_q5_0, q5_0_pair,
                         pair_q5_0, sums_q5_0_pair, hadd_small, hadd_small, FP16_SCALE,
                         FP16_SCALES_8)
DEFINE_SCALED_DOT_TOKENS(q8_0_dot_tokens, block_q8_0, block_q8_0, block_sums_q8_0, signed_pair,
                         pair_q8_0, sums_signed_pair, _mm256_hadd_epi32, _mm256_hadd_epi32,
                         FP16_SCALE, FP16_SCALES_8)
DEFINE_SCALED_DOT_TOKENS(iq4_nl_dot_tokens, block_iq4_nl, block_q8_0, block_sums_iq4_nl,
                         signed_pair, pair_iq4_nl, sums_signed_pair, _mm256_hadd_epi32,
                         _mm256_hadd_epi32, FP16_SCALE, FP16_SCALES_8)
DEFINE_SCALED_DOT_TOKENS(mxfp4_dot_tokens, block_mxfp4, block_q8_0, block_sums_mxfp4,
                         signed_pair, pair_mxfp4, sums_signed_pair, hadd_small, hadd_small,
                         E8M0_SCALE, E8M0_SCALES_8)

DEFINE_DOT_ENTRY_POINTS(q4_1, q4_1_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(q5_1, q5_1_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(q4_0, q4_0_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(q5_0, q5_0_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(q8_0, q8_0_dot_tokens)
/* Q8_1 as a weight format, against Q8_1 activations: Q8_0's kernel on Q8_1's blocks (its sum
   field s is not needed: the products are exact integers). */
DEFINE_SCALED_DOT_TOKENS(q8_1_dot_tokens, block_q8_1, block_q8_1, block_sums_q8_1, signed_pair,
                         pair_q8_1, sums_signed_pair, _mm256_hadd_epi32, _mm256_hadd_epi32,
                         FP16_SCALE, FP16_SCALES_8)
DEFINE_DOT_ENTRY_POINTS(q8_1, q8_1_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(iq4_nl, iq4_nl_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(mxfp4, mxfp4_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* NVFP4                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* NVFP4: 32 bytes of FP4 codes per 64 elements; sub-block s (16 elements) sits in bytes 8s..8s + 7,
   element j in byte j's low nibble and j + 8 in its high nibble. 16 bytes (two sub-blocks) as 32
   codes in element order: each sub-block's low nibbles, then its high nibbles. */
static inline __m256i nvfp4_codes32(const uint8_t *qs) {
    const __m128i b = _mm_loadu_si128((const __m128i *)qs), low4 = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(b, low4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low4);
    return _mm256_set_m128i(_mm_unpackhi_epi64(lo, hi), _mm_unpacklo_epi64(lo, hi));
}

/* One NVFP4 block against two Q8_0 blocks, the per-block kernel that the blocks left over after
   the groups of four take. VPDPBUSD's lanes 0-3 hold a half's first sub-block's sums and lanes
   4-7 its second's, so each half meets a vector of its two sub-block scales (times its activation
   block's) in one FMA. */
static inline __m256 nvfp4_block(const block_nvfp4 *x, const block_q8_0 y[2], __m256 acc) {
    const __m256i table =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lb_fp4_doubled));
    __m256 scales[2];
    nvfp4_half_scales(x, y, scales);
    for (int h = 0; h < 2; h++) {
        const __m256i w = _mm256_shuffle_epi8(table, nvfp4_codes32(x->qs + 16 * h));
        acc = _mm256_fmadd_ps(scales[h], _mm256_cvtepi32_ps(dot_i8(w, y[h].qs)), acc);
    }
    return acc;
}

/* The levels of one NVFP4 block (four sub-blocks of 16, 32 bytes) as unsigned fp4_doubled_plus12
   bytes: byte j of sub-block s holds element j in its low nibble and j + 8 in its high one, so
   the low nibbles of the 32 bytes (lo) are elements 0-7 of each sub-block in turn and the high
   nibbles (hi) elements 8-15. Unpacking the whole block at once costs one shift where two
   16-byte halves in element order took two shifts and six shuffles. */
typedef struct nvfp4_levels {
    __m256i lo, hi;
} nvfp4_levels;

static inline nvfp4_levels levels_nvfp4(const block_nvfp4 *x, __m256i table12) {
    const __m256i packed = in_register(_mm256_loadu_si256((const __m256i *)x->qs));
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const nvfp4_levels levels = {
        _mm256_shuffle_epi8(table12, _mm256_and_si256(packed, low4)),
        _mm256_shuffle_epi8(table12, _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4))};
    return levels;
}

/* The sums of an NVFP4 block's levels against its two Q8_0 blocks, two lanes per sub-block:
   [s0 s0 s1 s1 | s2 s2 s3 s3]. The activation quadwords are picked to match the levels (0 and 2
   of each Q8_0 block against the low nibbles, 1 and 3 against the high), and the two halves add
   up in one accumulator. The levels go in unsigned, 12 * a coming off through two more VPDPBUSDs
   and a subtraction (exact for any activation byte), an operation fewer than the sign trick's
   absolute values and signs (1.07 against 1.10 ns per 32 elements). */
static inline __m256i nvfp4_block_sums(nvfp4_levels w, const block_q8_0 y[2]) {
    const __m256i a0 = in_register(load_i8x32(y[0].qs)), a1 = in_register(load_i8x32(y[1].qs));
    const __m256i a_lo = _mm256_permutex2var_epi64(a0, _mm256_setr_epi64x(0, 2, 4, 6), a1);
    const __m256i a_hi = _mm256_permutex2var_epi64(a0, _mm256_setr_epi64x(1, 3, 5, 7), a1);
    const __m256i zero = _mm256_setzero_si256(), twelve = _mm256_set1_epi8(12);
    const __m256i sums = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, w.lo, a_lo), w.hi, a_hi);
    const __m256i offset =
        _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, twelve, a_lo), twelve, a_hi);
    return _mm256_sub_epi32(sums, offset);
}

/* The sixteen sub-block scales of four NVFP4 blocks as floats 2^-8 times their UE4M3 values
   (ue4m3_as_fp16_x16), in the order of the folded sums of nvfp4_dot_tokens' groups: [0] for blocks
   k = 0 and 2, [1] for 1 and 3, each [k.s0 k.s1 k+2.s0 k+2.s1 | k.s2 k.s3 k+2.s2 k+2.s3]. Two
   word unpacks give that order. */
static inline void nvfp4_weight_scales_4(const block_nvfp4 *x, __m256 scales[2]) {
    const __m128i codes =
        _mm_unpacklo_epi64(_mm_unpacklo_epi16(dword_at(x[0].d), dword_at(x[2].d)),
                           _mm_unpacklo_epi16(dword_at(x[1].d), dword_at(x[3].d)));
    const __m256i halves = ue4m3_as_fp16_x16(codes);
    scales[0] = _mm256_cvtph_ps(_mm256_castsi256_si128(halves));
    scales[1] = _mm256_cvtph_ps(_mm256_extracti128_si256(halves, 1));
}

/* The scales of eight Q8_0 blocks in the order y0 y4 y2 y6 y1 y5 y3 y7, which unpacked with
   themselves (low: y0 y0 y4 y4 | y1 y1 y5 y5, high: y2 y2 y6 y6 | y3 y3 y7 y7) meet the weight
   scales of nvfp4_weight_scales_4. */
static inline __m256 nvfp4_activation_scales_8(const block_q8_0 *y) {
    const uint8_t *yb = (const uint8_t *)y;
    const size_t ys = sizeof *y;
    const __m128i words = _mm_unpacklo_epi64(
        _mm_unpacklo_epi32(_mm_unpacklo_epi16(dword_at(yb), dword_at(yb + 4 * ys)),
                           _mm_unpacklo_epi16(dword_at(yb + 2 * ys), dword_at(yb + 6 * ys))),
        _mm_unpacklo_epi32(_mm_unpacklo_epi16(dword_at(yb + ys), dword_at(yb + 5 * ys)),
                           _mm_unpacklo_epi16(dword_at(yb + 3 * ys), dword_at(yb + 7 * ys))));
    return _mm256_cvtph_ps(words);
}

/* NVFP4 rows against n_tokens activation rows, four blocks (eight activation blocks) at a time,
   for the scale decoding to be shared: per block (nvfp4_block) it cost more than the block's dot
   products. Each block's levels and the four blocks' scales are decoded once for all tokens.
   VPHADDD folds blocks k and k + 2 into [k.s0 k.s1 k+2.s0 k+2.s1 | k.s2 k.s3 k+2.s2 k+2.s3]
   (k.sS: sub-block S of block k). The scales are 2^-7 times the halved UE4M3 value, exact, and
   the sum is scaled back at the end. Tried with several tokens and slower: the quadword
   permutes on the weights' side (once per block), each token's two activation blocks loaded
   half by half (load_2x16) against them with the sign trick, 1.49 -> 1.70 ns per block and
   token; VPACKSSDW + VPMADDWD for the VPHADDD (no change). */
static inline ALWAYS_INLINE void nvfp4_dot_tokens(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_nvfp4 *x = weights;
    const block_q8_0 *y[LB_DOT_TOKENS];
    __m256 acc[LB_DOT_TOKENS][2];
    for (int t = 0; t < n_tokens; t++) {
        y[t] = token_row(activations, stride, t);
        acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    }
    const int64_t nb = n / QK_NVFP4;
    const __m256i table12 =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)fp4_doubled_plus12));
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) {
        prefetch_weights(&x[b], 4 * sizeof *x);
        __m256i folded[LB_DOT_TOKENS][2];
        UNROLL_SHORT
        for (int k = 0; k < 2; k++) {
            const nvfp4_levels w0 = levels_nvfp4(&x[b + k], table12);
            const nvfp4_levels w2 = levels_nvfp4(&x[b + k + 2], table12);
            UNROLL_SHORT
            for (int t = 0; t < n_tokens; t++) {
                folded[t][k] = _mm256_hadd_epi32(nvfp4_block_sums(w0, &y[t][2 * (b + k)]),
                                                 nvfp4_block_sums(w2, &y[t][2 * (b + k + 2)]));
            }
        }
        __m256 dx[2];
        nvfp4_weight_scales_4(&x[b], dx);
        UNROLL_SHORT
        for (int t = 0; t < n_tokens; t++) {
            const __m256 dy = nvfp4_activation_scales_8(&y[t][2 * b]);
            const __m256 d02 = _mm256_mul_ps(dx[0], _mm256_unpacklo_ps(dy, dy));
            const __m256 d13 = _mm256_mul_ps(dx[1], _mm256_unpackhi_ps(dy, dy));
            acc[t][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(folded[t][0]), d02, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(folded[t][1]), d13, acc[t][1]);
        }
    }
    /* apart, so that the first loop unrolls and the accumulators stay in registers */
    __m256 sum[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) sum[t] = _mm256_add_ps(acc[t][0], acc[t][1]);
    for (int t = 0; t < n_tokens; t++) {
        __m256 tail = _mm256_setzero_ps();
        for (int64_t c = b; c < nb; c++) tail = nvfp4_block(&x[c], &y[t][2 * c], tail);
        /* 2^7: the fp16 scale words are 2^-8 of the UE4M3 values, the kernel wants them halved */
        out[t] = hsum_ps(_mm256_fmadd_ps(sum[t], _mm256_set1_ps(128.0f), tail));
    }
}

DEFINE_DOT_ENTRY_POINTS(nvfp4, nvfp4_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* F32                                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* 64 elements per iteration in four accumulators per token, the rest 16 at a time into the
   first, then one by one. Each weight vector is loaded once for all the tokens: four tokens'
   sixteen accumulators and the weights fit the 32 vector registers. Every token gets the
   one-token kernel's operations in its order. */
static inline ALWAYS_INLINE void f32_dot_tokens(int64_t n, const void *weights,
                                                const void *activations, size_t stride,
                                                int n_tokens, float *out) {
    const float *w = weights, *a[LB_DOT_TOKENS];
    __m512 acc[LB_DOT_TOKENS][4];
    for (int t = 0; t < n_tokens; t++) {
        a[t] = token_row(activations, stride, t);
        for (int k = 0; k < 4; k++) acc[t][k] = _mm512_setzero_ps();
    }
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        prefetch_weights_to_l2(w + i, 256);
        for (int k = 0; k < 4; k++) {
            const __m512 wk = _mm512_loadu_ps(w + i + 16 * k);
            for (int t = 0; t < n_tokens; t++) {
                acc[t][k] = _mm512_fmadd_ps(wk, _mm512_loadu_ps(a[t] + i + 16 * k), acc[t][k]);
            }
        }
    }
    for (; i + 16 <= n; i += 16) {
        const __m512 wk = _mm512_loadu_ps(w + i);
        for (int t = 0; t < n_tokens; t++) {
            acc[t][0] = _mm512_fmadd_ps(wk, _mm512_loadu_ps(a[t] + i), acc[t][0]);
        }
    }
    for (int t = 0; t < n_tokens; t++) {
        float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]),
                                                       _mm512_add_ps(acc[t][2], acc[t][3])));
        for (int64_t j = i; j < n; j++) sum += w[j] * a[t][j];
        out[t] = sum;
    }
}

DEFINE_DOT_ENTRY_POINTS(f32, f32_dot_tokens)

/* F16 and BF16: the AVX2 kernels' 256-bit body, four tokens per pass where the AVX2 level, with
   sixteen registers, takes two. */
DEFINE_FLOAT_DOT_TOKENS(f16_dot_tokens, uint16_t, load_f16x8, lb_fp16_to_fp32, 4)
DEFINE_FLOAT_DOT_TOKENS(bf16_dot_tokens, uint16_t, load_bf16x8, lb_bf16_to_fp32, 4)
DEFINE_DOT_ENTRY_POINTS(f16, f16_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(bf16, bf16_dot_tokens)

/* ------------------------------------------------------------------------------------------ */

void lb_register_legacy_avx512(lb_kernel_set *set) {
    set_dot(set, LOWBIT_TYPE_Q4_0, dot_q4_0, dot_q4_0_tokens);
    set_dot(set, LOWBIT_TYPE_Q4_1, dot_q4_1, dot_q4_1_tokens);
    set_dot(set, LOWBIT_TYPE_Q5_0, dot_q5_0, dot_q5_0_tokens);
    set_dot(set, LOWBIT_TYPE_Q5_1, dot_q5_1, dot_q5_1_tokens);
    set_dot(set, LOWBIT_TYPE_Q8_0, dot_q8_0, dot_q8_0_tokens);
    set_dot(set, LOWBIT_TYPE_Q8_1, dot_q8_1, dot_q8_1_tokens);
    set_dot(set, LOWBIT_TYPE_IQ4_NL, dot_iq4_nl, dot_iq4_nl_tokens);
    set_dot(set, LOWBIT_TYPE_MXFP4, dot_mxfp4, dot_mxfp4_tokens);
    set_dot(set, LOWBIT_TYPE_NVFP4, dot_nvfp4, dot_nvfp4_tokens);
    set_dot(set, LOWBIT_TYPE_F32, dot_f32, dot_f32_tokens);
    set_dot(set, LOWBIT_TYPE_F16, dot_f16, dot_f16_tokens);
    set_dot(set, LOWBIT_TYPE_BF16, dot_bf16, dot_bf16_tokens);
}
