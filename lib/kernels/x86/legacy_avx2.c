/*
 * AVX2 (+FMA, F16C) kernels of the 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * IQ4_NL, MXFP4, and Q8_1 as weights), NVFP4, the float formats (F32, F16, BF16), and the
 * activation quantizers Q8_0, Q8_1 and Q8_K.
 *
 * Dot products: each block's weights are unpacked into 32 bytes laid out like the activation
 * block's qs (element j of the block in byte j), then multiplied by the activation bytes with
 * maddubs (unsigned x signed bytes, pairs summed to int16) and madd by ones (int16 pairs summed to
 * int32), giving 8 int32 partial sums that are exact. Signed weights use the sign trick: |w| is
 * unsigned and the activation takes w's sign, which is exact as long as no activation byte is
 * -128 (the activation quantizers produce -127..127 only; weights may be -128). The integer sums
 * are converted to float and accumulated with FMA at the block's scale, so results differ from
 * the scalar references only by the order of the float additions. The 32-element formats go
 * eight blocks at a time (DEFINE_GROUPED_DOT_TOKENS, x86_common.h), NVFP4 four: their sums are
 * folded into one vector and their scales decoded together, which per block had cost as much as
 * the products. Measured (`lowbit bench` at LOWBIT_CPU=avx2, warm single-thread GEMV 4096 x
 * 4096, Intel Xeon, medians of five alternating runs, before -> after): Q4_0 0.90 -> 0.70 ms,
 * Q4_1 1.32 -> 0.58, Q5_0 1.16 -> 0.91, Q5_1 1.57 -> 0.86, Q8_0 0.75 -> 0.63, IQ4_NL 0.97 ->
 * 0.70, NVFP4 1.60 -> 0.70 ms; MXFP4, block by block until its E8M0 scales were gathered eight
 * at a time too (eight_e8m0_halves), 0.95 -> 0.91 -> 0.67 ms.
 *
 * Multi-token kernels (lb_vec_dot_tokens_fn): one weight row against up to four activation rows,
 * the weights' levels and scales decoded once for all of them, in the bodies shared with the
 * AVX-512 kernels (x86_common.h); each token's result is the one-token kernel's bit for bit.
 *
 * Float formats: F32 prefetches the weights 8 KiB ahead into L2 (T1 hint). A 16 KiB F32 row and
 * the 16 KiB activation row overflow L1 together, the evicted activation lines' refills compete
 * with the weight misses, and the GEMV ran at ~17 GB/s where a plain read of the matrix reaches
 * ~28; with the prefetch ~23-25 GB/s (4096 x 4096, one thread, AMD EPYC Zen 4; 6 KiB to 16 KiB
 * ahead measured alike, T0 or NTA hints slower). F16 and BF16 rows are half the size and fit L1
 * with their activations; the prefetch gained them nothing there, but on an Intel Xeon, whose
 * hardware prefetchers fall behind a streaming kernel (x86_common.h), it took the cold F16 GEMV
 * from 2.97 to 2.3 ms, so they prefetch too. So do the block kernels, a line or so per block.
 * Their multi-token kernels (DEFINE_FLOAT_DOT_TOKENS) load and widen each weight vector once for
 * two tokens here, four at the AVX-512 level: `lowbit bench` GEMM, 512 weight rows x 512 tokens,
 * both cores, medians of three alternating runs on the Intel Xeon (VNNI level), one dot product
 * per token -> multi-token: F32 116 -> 64 ms, F16 68 -> 50, BF16 109 -> 54; the GEMVs alike.
 *
 * Activation quantizers: bytes identical to the type table's quantize_ref (same float operations
 * in the same order, the same rounding: roundf's ties away from zero for Q8_0/Q8_1, the
 * round-to-nearest-even of lb_nearest_int for Q8_K).
 */
#include "../../formats/blocks.h"
#include "../kernels.h"
#include "x86_common.h"
#include "../q8_rows.h"

#include <immintrin.h>

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* 8 int32 sums of 4 products each: unsigned bytes u times signed bytes s. */
static inline __m256i dot_u8_i8(__m256i u, __m256i s) {
    /* no saturation: u <= 128 here (|w| of a signed byte, or a 5-bit level), so each int16 pair
       sum is at most 2 * 128 * 128 */
    const __m256i pairs = _mm256_maddubs_epi16(u, s);
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

/* The same for signed weights w (any byte) and activations a (never -128). */
static inline __m256i dot_i8_i8(__m256i w, __m256i a) {
    return dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}

/* 16 packed bytes -> 32 nibbles: low nibbles (elements 0..15) in the low lane, high nibbles
   (elements 16..31) in the high lane, the order of the activation block. The bytes are loaded
   into both lanes at once (a load alone) and shifted by lane: two operations, where shifting a
   copy and inserting it took three. */
static inline __m256i unpack_nibbles_32(const uint8_t *qs) {
    const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    const __m256i shifted = _mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4));
    return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
}

/* 32 bits as 32 bytes, 0xFF where bit j is set. */
static inline __m256i expand_bits_32(uint32_t bits) {
    /* byte j gets byte j / 8 of the word, then tests bit j % 8 of it */
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int32_t)bits),
        _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0));
    const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201ULL);
    return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

/* A 16-entry signed byte table, in both lanes, for _mm256_shuffle_epi8 lookups by nibble. */
static inline __m256i table16(const int8_t values[16]) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)values));
}

/* ------------------------------------------------------------------------------------------ */
/* Legacy formats: one block against one activation block (the one-token kernels and the       */
/* leftover blocks), 8 int32 lanes, exact                                                      */
/* ------------------------------------------------------------------------------------------ */

static inline __m256i block_sums_q4_0(const block_q4_0 *x, const int8_t *qs) {
    /* (q - 8) * a pairs as q * a pairs minus 8 * a pairs: the stored nibble q is already
       unsigned, so this takes two maddubs and a subtraction where the sign trick takes a
       subtraction, two signs and a maddubs. Exact: each pair is at most 2 * 15 * 128 in
       magnitude, and it holds for every activation byte, -128 included. */
    const __m256i a = load32(qs);
    const __m256i pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(unpack_nibbles_32(x->qs), a),
                                           _mm256_maddubs_epi16(_mm256_set1_epi8(8), a));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

static inline __m256i block_sums_q4_1(const block_q4_1 *x, const int8_t *qs) {
    return dot_u8_i8(unpack_nibbles_32(x->qs), load32(qs));
}

static inline __m256i block_sums_q5_0(const block_q5_0 *x, const int8_t *qs) {
    /* q - 16 as a byte is the nibble with 0xF0 set where the 5th bit is clear */
    const __m256i high = _mm256_andnot_si256(expand_bits_32(load_u32(x->qh)),
                                             _mm256_set1_epi8((char)0xF0));
    return dot_i8_i8(_mm256_or_si256(unpack_nibbles_32(x->qs), high), load32(qs));
}

static inline __m256i block_sums_q5_1(const block_q5_1 *x, const int8_t *qs) {
    const __m256i high =
        _mm256_and_si256(expand_bits_32(load_u32(x->qh)), _mm256_set1_epi8(0x10));
    return dot_u8_i8(_mm256_or_si256(unpack_nibbles_32(x->qs), high), load32(qs));
}

static inline __m256i block_sums_q8_0(const block_q8_0 *x, const int8_t *qs) {
    return dot_i8_i8(load32(x->qs), load32(qs));
}

static inline __m256i block_sums_q8_1(const block_q8_1 *x, const int8_t *qs) {
    return dot_i8_i8(load32(x->qs), load32(qs));
}

static inline __m256i block_sums_iq4_nl(const block_iq4_nl *x, const int8_t *qs) {
    const __m256i w = _mm256_shuffle_epi8(table16(lb_kvalues_iq4nl), unpack_nibbles_32(x->qs));
    return dot_i8_i8(w, load32(qs));
}

/* MXFP4: the codes through the doubled E2M1 values (fp4.c decodes the scales halved to match). */
static inline __m256i block_sums_mxfp4(const block_mxfp4 *x, const int8_t *qs) {
    const __m256i w = _mm256_shuffle_epi8(table16(lb_fp4_doubled), unpack_nibbles_32(x->qs));
    return dot_i8_i8(w, load32(qs));
}

/* ------------------------------------------------------------------------------------------ */
/* Legacy formats: block levels, decoded once for two weight blocks k and k + 4 (one per       */
/* 128-bit half), and their sums with a token's two activation blocks (x86_common.h,          */
/* DEFINE_SCALED_DOT_TOKENS): [k k k k | k+4 k+4 k+4 k+4], exact                               */
/* ------------------------------------------------------------------------------------------ */

static inline __m256i madd_ones(__m256i pairs) {
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

/* Unsigned levels (Q4_1, Q5_1): the two halves' maddubs pair sums (at most 2 * 31 * 127 each)
   add up within 16 bits before one madd. */
static inline __m256i sums_unsigned_pair(nibble_pair w, const int8_t *qs_k, const int8_t *qs_k4) {
    const __m256i lo = _mm256_maddubs_epi16(w.lo, load_2x16(qs_k, qs_k4));
    const __m256i hi = _mm256_maddubs_epi16(w.hi, load_2x16(qs_k + 16, qs_k4 + 16));
    return madd_ones(_mm256_add_epi16(lo, hi));
}

/* Signed levels by the sign trick. Small ones (|w| <= 16: Q5_0, MXFP4) add up their halves'
   pair sums (2 * 16 * 127 at most each) in 16 bits; larger ones (Q8_0, IQ4_NL, whose pair sums
   reach 2 * 128 * 127) widen each half apart. */
static inline __m256i signed_half_pairs(signed_levels w, const int8_t *qs_k, const int8_t *qs_k4) {
    return _mm256_maddubs_epi16(w.magnitude, _mm256_sign_epi8(load_2x16(qs_k, qs_k4), w.sign));
}

static inline __m256i sums_signed_small_pair(signed_pair w, const int8_t *qs_k,
                                             const int8_t *qs_k4) {
    return madd_ones(_mm256_add_epi16(signed_half_pairs(w.lo, qs_k, qs_k4),
                                      signed_half_pairs(w.hi, qs_k + 16, qs_k4 + 16)));
}

static inline __m256i sums_signed_pair(signed_pair w, const int8_t *qs_k, const int8_t *qs_k4) {
    return _mm256_add_epi32(madd_ones(signed_half_pairs(w.lo, qs_k, qs_k4)),
                            madd_ones(signed_half_pairs(w.hi, qs_k + 16, qs_k4 + 16)));
}

/* Q4_0's stored nibbles q = w + 8, unsigned. */
static inline nibble_pair pair_q4_0(const block_q4_0 *k, const block_q4_0 *k4) {
    return nibbles_of_pair(k->qs, k4->qs);
}

static inline __m256i sums_q4_0_pair(nibble_pair q, const int8_t *qs_k, const int8_t *qs_k4) {
    /* (q - 8) * a pairs as q * a pairs minus 8 * a pairs: the stored nibble q is already
       unsigned, so this takes maddubs and subtractions where the sign trick takes subtractions,
       absolute values and signs. Exact: each pair is at most 2 * 15 * 128 in magnitude, two of
       them 7680, and it holds for every activation byte, -128 included. */
    const __m256i a_lo = load_2x16(qs_k, qs_k4), a_hi = load_2x16(qs_k + 16, qs_k4 + 16);
    const __m256i eight = _mm256_set1_epi8(8);
    const __m256i qa = _mm256_add_epi16(_mm256_maddubs_epi16(q.lo, a_lo),
                                        _mm256_maddubs_epi16(q.hi, a_hi));
    const __m256i offset = _mm256_add_epi16(_mm256_maddubs_epi16(eight, a_lo),
                                            _mm256_maddubs_epi16(eight, a_hi));
    return madd_ones(_mm256_sub_epi16(qa, offset));
}

static inline nibble_pair pair_q4_1(const block_q4_1 *k, const block_q4_1 *k4) {
    return nibbles_of_pair(k->qs, k4->qs);
}

static inline signed_pair pair_q5_0(const block_q5_0 *k, const block_q5_0 *k4) {
    const nibble_pair nibbles = nibbles_of_pair(k->qs, k4->qs);
    uint32_t lo, hi;
    high_bits_of_pair(k->qh, k4->qh, &lo, &hi);
    /* q - 16 as a byte is the nibble with 0xF0 set where the 5th bit is clear */
    const __m256i f0 = _mm256_set1_epi8((char)0xF0);
    const signed_pair levels = {
        sign_split(_mm256_or_si256(nibbles.lo, _mm256_andnot_si256(expand_bits_32(lo), f0))),
        sign_split(_mm256_or_si256(nibbles.hi, _mm256_andnot_si256(expand_bits_32(hi), f0)))};
    return levels;
}

static inline nibble_pair pair_q5_1(const block_q5_1 *k, const block_q5_1 *k4) {
    nibble_pair levels = nibbles_of_pair(k->qs, k4->qs);
    uint32_t lo, hi;
    high_bits_of_pair(k->qh, k4->qh, &lo, &hi);
    const __m256i sixteen = _mm256_set1_epi8(0x10);
    levels.lo = _mm256_or_si256(levels.lo, _mm256_and_si256(expand_bits_32(lo), sixteen));
    levels.hi = _mm256_or_si256(levels.hi, _mm256_and_si256(expand_bits_32(hi), sixteen));
    return levels;
}

static inline signed_pair pair_q8_0(const block_q8_0 *k, const block_q8_0 *k4) {
    return pair_of_i8_levels(k->qs, k4->qs);
}

static inline signed_pair pair_q8_1(const block_q8_1 *k, const block_q8_1 *k4) {
    return pair_of_i8_levels(k->qs, k4->qs);
}

/* Codes through a 16-entry table of signed levels. */
static inline signed_pair table_pair(const uint8_t *qs_k, const uint8_t *qs_k4,
                                     const int8_t values[16]) {
    const __m256i table = table16(values);
    const nibble_pair codes = nibbles_of_pair(qs_k, qs_k4);
    const signed_pair levels = {sign_split(_mm256_shuffle_epi8(table, codes.lo)),
                                sign_split(_mm256_shuffle_epi8(table, codes.hi))};
    return levels;
}

static inline signed_pair pair_iq4_nl(const block_iq4_nl *k, const block_iq4_nl *k4) {
    return table_pair(k->qs, k4->qs, lb_kvalues_iq4nl);
}

static inline signed_pair pair_mxfp4(const block_mxfp4 *k, const block_mxfp4 *k4) {
    return table_pair(k->qs, k4->qs, lb_fp4_doubled);
}

#define FP16_SCALE(block) half_to_float((block).d)
#define E8M0_SCALE(block) lb_e8m0_half((block).e)
#define E8M0_SCALES_8(p, stride) eight_e8m0_halves((const uint8_t *)(p), stride)

/*
 * Row loops (x86_common.h): blocks eight at a time, as the AVX-512 kernels do (legacy_avx512.c),
 * their exact integer sums folded into one vector (hadd_small while the sums fit 16 bits: see
 * legacy_avx512.c for the bounds, the same here), their eight scales gathered and converted
 * together, one conversion and one FMA per group, where per block the scales' conversions,
 * product and broadcast cost as much as the block's products. Each one-token kernel is the
 * multi-token body with one token.
 */

/* One token: a group's scales before its integer sums (x86_common.h): warm GEMVs, medians of
   six alternating runs against scales after the sums, Q8_0 0.69 -> 0.62 ms, Q4_0 0.70 -> 0.64,
   IQ4_NL 0.69 -> 0.66, the rest unchanged. */
enum { SCALES_FIRST = 1 };

DEFINE_SCALED_DOT_TOKENS(q4_0_dot_tokens, block_q4_0, block_q8_0, block_sums_q4_0, nibble_pair,
                         pair_q4_0, sums_q4_0_pair, hadd_small, hadd_small, FP16_SCALE,
                         eight_halves)
DEFINE_MIN_DOT_TOKENS(q4_1_dot_tokens, block_q4_1, block_sums_q4_1, nibble_pair, pair_q4_1,
                      sums_unsigned_pair, hadd_small, hadd_small)
DEFINE_SCALED_DOT_TOKENS(q5_0_dot_tokens, block_q5_0, block_q8_0, block_sums_q5_0, signed_pair,
                         pair_q5_0, sums_signed_small_pair, hadd_small, hadd_small, FP16_SCALE,
                         eight_halves)
DEFINE_MIN_DOT_TOKENS(q5_1_dot_tokens, block_q5_1, block_sums_q5_1, nibble_pair, pair_q5_1,
                      sums_unsigned_pair, hadd_small, _mm256_hadd_epi32)
DEFINE_SCALED_DOT_TOKENS(q8_0_dot_tokens, block_q8_0, block_q8_0, block_sums_q8_0, signed_pair,
                         pair_q8_0, sums_signed_pair, _mm256_hadd_epi32, _mm256_hadd_epi32,
                         FP16_SCALE, eight_halves)
DEFINE_SCALED_DOT_TOKENS(iq4_nl_dot_tokens, block_iq4_nl, block_q8_0, block_sums_iq4_nl,
                         signed_pair, pair_iq4_nl, sums_signed_pair, _mm256_hadd_epi32,
                         _mm256_hadd_epi32, FP16_SCALE, eight_halves)
DEFINE_SCALED_DOT_TOKENS(mxfp4_dot_tokens, block_mxfp4, block_q8_0, block_sums_mxfp4,
                         signed_pair, pair_mxfp4, sums_signed_small_pair, hadd_small, hadd_small,
                         E8M0_SCALE, E8M0_SCALES_8)

DEFINE_DOT_ENTRY_POINTS(q4_0, q4_0_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(q4_1, q4_1_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(q5_0, q5_0_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(q5_1, q5_1_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(q8_0, q8_0_dot_tokens)
/* Q8_1 as a weight format, against Q8_1 activations: Q8_0's kernel on Q8_1's blocks (its sum
   field s is not needed: the products are exact integers). */
DEFINE_SCALED_DOT_TOKENS(q8_1_dot_tokens, block_q8_1, block_q8_1, block_sums_q8_1, signed_pair,
                         pair_q8_1, sums_signed_pair, _mm256_hadd_epi32, _mm256_hadd_epi32,
                         FP16_SCALE, eight_halves)
DEFINE_DOT_ENTRY_POINTS(q8_1, q8_1_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(iq4_nl, iq4_nl_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(mxfp4, mxfp4_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* NVFP4                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Half of an NVFP4 block (two 16-element sub-blocks, 16 bytes) against one Q8_0 block. Sub-block
   bytes j hold element j (low nibble) and j + 8 (high nibble), so low and high nibbles are
   interleaved by 8 bytes to follow the activation order. The madd lanes 0-3 belong to the first
   sub-block and 4-7 to the second: `scales` holds each sub-block's scale times the activation's
   in its four lanes. */
static inline __m256 nvfp4_half(const uint8_t *qs, __m256 scales, const block_q8_0 *y,
                                __m256 acc) {
    const __m128i packed = _mm_loadu_si128((const __m128i *)qs);
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(packed, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
    const __m256i codes = _mm256_set_m128i(_mm_unpackhi_epi64(lo, hi), _mm_unpacklo_epi64(lo, hi));
    const __m256i w = _mm256_shuffle_epi8(table16(lb_fp4_doubled), codes);
    const __m256i sums = dot_i8_i8(w, load32(y->qs));
    return _mm256_fmadd_ps(scales, _mm256_cvtepi32_ps(sums), acc);
}

/* One NVFP4 block (64 elements) against two Q8_0 blocks, each half into its own accumulator: the
   blocks left over after the groups of four. */
static inline void block_nvfp4_q8_0(const block_nvfp4 *x, const block_q8_0 *y, __m256 acc[2]) {
    __m256 scales[2];
    nvfp4_half_scales(x, y, scales);
    acc[0] = nvfp4_half(x->qs, scales[0], &y[0], acc[0]);
    acc[1] = nvfp4_half(x->qs + 16, scales[1], &y[1], acc[1]);
}

/* The levels of one NVFP4 block (four sub-blocks of 16, 32 bytes), split for the sign trick.
   Byte j of sub-block s holds element j in its low nibble and j + 8 in its high one, so with the
   block's quadwords (one sub-block each) put in the order s0 s2 s1 s3, its low nibbles (lo) are
   elements 0-7 of those sub-blocks and its high nibbles (hi) elements 8-15, which is what
   unpacking the two activation blocks' quadwords gives (low: quadwords 0 and 2 of each, high: 1
   and 3). Whole-block unpacking costs a shift and three shuffles where two 16-byte halves in
   element order took two shifts and six shuffles. */
typedef struct nvfp4_levels {
    signed_levels lo, hi;
} nvfp4_levels;

static inline nvfp4_levels levels_nvfp4(const block_nvfp4 *x) {
    const __m256i packed = _mm256_permute4x64_epi64(load32(x->qs), _MM_SHUFFLE(3, 1, 2, 0));
    const __m256i low4 = _mm256_set1_epi8(0x0F), table = table16(lb_fp4_doubled);
    const nvfp4_levels levels = {
        sign_split(_mm256_shuffle_epi8(table, _mm256_and_si256(packed, low4))),
        sign_split(
            _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4)))};
    return levels;
}

/* The sums of an NVFP4 block's levels against its two Q8_0 blocks, two lanes per sub-block:
   [s0 s0 s2 s2 | s1 s1 s3 s3]. */
static inline __m256i nvfp4_block_sums(nvfp4_levels w, const block_q8_0 y[2]) {
    const __m256i a0 = load32(y[0].qs), a1 = load32(y[1].qs);
    const __m256i a_lo = _mm256_unpacklo_epi64(a0, a1), a_hi = _mm256_unpackhi_epi64(a0, a1);
    /* each int16 at most 4 * 12 * 128 */
    const __m256i pairs = _mm256_add_epi16(
        _mm256_maddubs_epi16(w.lo.magnitude, _mm256_sign_epi8(a_lo, w.lo.sign)),
        _mm256_maddubs_epi16(w.hi.magnitude, _mm256_sign_epi8(a_hi, w.hi.sign)));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

/* The sixteen sub-block scales of four NVFP4 blocks as floats 2^-8 times their UE4M3 values
   (ue4m3_as_fp16_x16), in the order of the folded sums of nvfp4_dot_tokens: [0] for blocks k = 0
   and 2, [1] for 1 and 3, each [k.s0 k.s2 k+2.s0 k+2.s2 | k.s1 k.s3 k+2.s1 k+2.s3]. */
static inline void nvfp4_weight_scales_4(const block_nvfp4 *x, __m256 scales[2]) {
    const __m128i codes = _mm_shuffle_epi8(
        _mm_unpacklo_epi64(_mm_unpacklo_epi32(dword_at(x[0].d), dword_at(x[1].d)),
                           _mm_unpacklo_epi32(dword_at(x[2].d), dword_at(x[3].d))),
        _mm_setr_epi8(0, 2, 8, 10, 1, 3, 9, 11, 4, 6, 12, 14, 5, 7, 13, 15));
    const __m256i halves = ue4m3_as_fp16_x16(codes);
    scales[0] = _mm256_cvtph_ps(_mm256_castsi256_si128(halves));
    scales[1] = _mm256_cvtph_ps(_mm256_extracti128_si256(halves, 1));
}

/* The scales of eight Q8_0 blocks in the order y0 y1 y4 y5 y2 y3 y6 y7, whose halves repeated in
   both lanes meet the weight scales of nvfp4_weight_scales_4. */
static inline __m256 nvfp4_activation_scales_8(const block_q8_0 *y) {
    const __m128i words = _mm_unpacklo_epi64(
        _mm_unpacklo_epi32(_mm_unpacklo_epi16(dword_at(&y[0]), dword_at(&y[1])),
                           _mm_unpacklo_epi16(dword_at(&y[4]), dword_at(&y[5]))),
        _mm_unpacklo_epi32(_mm_unpacklo_epi16(dword_at(&y[2]), dword_at(&y[3])),
                           _mm_unpacklo_epi16(dword_at(&y[6]), dword_at(&y[7]))));
    return _mm256_cvtph_ps(words);
}

/* NVFP4 reads two activation blocks per weight block: its own loop. Four blocks at a time, for
   their scales to be decoded together (per block they cost more than the dot products), each
   block's levels and the four blocks' scales once for all tokens. VPHADDD folds blocks k and
   k + 2 into [k.s0 k.s2 k+2.s0 k+2.s2 | k.s1 k.s3 k+2.s1 k+2.s3] (k.sS: sub-block S of block k).
   The scales are 2^-7 times the halved UE4M3 value, exactly, and the sum is scaled back at the
   end. The blocks left over take the per-block kernel. */
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
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) {
        prefetch_weights(&x[b], 4 * sizeof *x);
        __m256i folded[LB_DOT_TOKENS][2];
        UNROLL_SHORT
        for (int k = 0; k < 2; k++) {
            const nvfp4_levels w0 = levels_nvfp4(&x[b + k]), w2 = levels_nvfp4(&x[b + k + 2]);
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
            const __m256 d02 = _mm256_mul_ps(dx[0], _mm256_permute2f128_ps(dy, dy, 0x00));
            const __m256 d13 = _mm256_mul_ps(dx[1], _mm256_permute2f128_ps(dy, dy, 0x11));
            acc[t][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(folded[t][0]), d02, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(folded[t][1]), d13, acc[t][1]);
        }
    }
    /* apart, so that the first loop unrolls and the accumulators stay in registers */
    __m256 sum[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) sum[t] = _mm256_add_ps(acc[t][0], acc[t][1]);
    for (int t = 0; t < n_tokens; t++) {
        __m256 tail[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t c = b; c < nb; c++) block_nvfp4_q8_0(&x[c], &y[t][2 * c], tail);
        /* 2^7: the fp16 scale words are 2^-8 of the UE4M3 values, the kernel wants them halved */
        out[t] = hsum_ps(
            _mm256_fmadd_ps(sum[t], _mm256_set1_ps(128.0f), _mm256_add_ps(tail[0], tail[1])));
    }
}

DEFINE_DOT_ENTRY_POINTS(nvfp4, nvfp4_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* Float formats: 32 elements per iteration in four accumulators, the tail in scalar code       */
/* ------------------------------------------------------------------------------------------ */

/* Two tokens per pass: four accumulators per token, with the weights' vectors and the
   activations' loads, fill the sixteen vector registers; a third and fourth token take a second
   pass over the row, which is in L1 or L2 by then. */
DEFINE_FLOAT_DOT_TOKENS(f32_dot_tokens, float, load_f32x8, f32_identity, 2)
DEFINE_FLOAT_DOT_TOKENS(f16_dot_tokens, uint16_t, load_f16x8, lb_fp16_to_fp32, 2)
DEFINE_FLOAT_DOT_TOKENS(bf16_dot_tokens, uint16_t, load_bf16x8, lb_bf16_to_fp32, 2)
DEFINE_DOT_ENTRY_POINTS(f32, f32_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(f16, f16_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(bf16, bf16_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* Activation quantizers                                                                       */
/* ------------------------------------------------------------------------------------------ */

static inline __m256 abs_f32x8(__m256 v) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

static inline float hmax_f32x8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* roundf: nearest, ties away from zero. The fraction v - trunc(v) is exact, so comparing its
   magnitude with 0.5 decides exactly; the step of 1 takes v's sign. */
static inline __m256 round_half_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = abs_f32x8(_mm256_sub_ps(v, t));
    const __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 step = _mm256_or_ps(_mm256_set1_ps(1.0f),
                                     _mm256_and_ps(v, _mm256_set1_ps(-0.0f)));
    return _mm256_add_ps(t, _mm256_and_ps(up, step));
}

/* Four vectors of 8 int32 (values fitting int8) -> 32 int8 in element order. */
static inline __m256i pack_i32_to_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_packs_epi32(a, b); /* lane-interleaved: a0 b0 | a1 b1 */
    const __m256i cd = _mm256_packs_epi32(c, d);
    const __m256i bytes = _mm256_packs_epi16(ab, cd); /* a0 b0 c0 d0 | a1 b1 c1 d1 */
    return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* The Q8_0/Q8_1 reference levels of one block: d = amax / 127, q = roundf(x / d) with the
   inverse computed as the scalar code does (0 when d is 0 or 1 / d overflows). Returns the level
   sum (for Q8_1) and d unrounded. */
static int q8_block_levels(const float *x, float *d_out, int8_t qs[32]) {
    __m256 v[4], amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        amax = _mm256_max_ps(amax, abs_f32x8(v[k]));
    }
    const float d = hmax_f32x8(amax) / 127.0f;
    float id = d == 0.0f ? 0.0f : 1.0f / d;
    if (!isfinite(id)) id = 0.0f;
    __m256i q[4];
    for (int k = 0; k < 4; k++) {
        q[k] = _mm256_cvtps_epi32(round_half_away(_mm256_mul_ps(v[k], _mm256_set1_ps(id))));
    }
    const __m256i bytes = pack_i32_to_i8(q[0], q[1], q[2], q[3]);
    _mm256_storeu_si256((__m256i *)qs, bytes);
    *d_out = d;
    const __m256i sums =
        _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    return hsum_i32(sums);
}

LB_Q8_ROW_QUANTIZERS(q8_block_levels)

/* The first element of largest magnitude of a 256-element block (the reference keeps the first
   on ties, and its sign matters), with that magnitude; -1 when every element is 0. */
static int q8_K_first_extreme(const float *x, float *amax_out) {
    __m256 amax = _mm256_setzero_ps();
    for (int j = 0; j < QK_K; j += 8) amax = _mm256_max_ps(amax, abs_f32x8(_mm256_loadu_ps(x + j)));
    const float m = hmax_f32x8(amax);
    *amax_out = m;
    if (m == 0.0f) return -1;
    const __m256 target = _mm256_set1_ps(m);
    for (int j = 0; j < QK_K; j += 8) {
        const __m256 hit = _mm256_cmp_ps(abs_f32x8(_mm256_loadu_ps(x + j)), target, _CMP_EQ_OQ);
        const int bits = _mm256_movemask_ps(hit);
        if (bits) return j + __builtin_ctz((unsigned)bits);
    }
    return -1; /* not reached for finite input */
}

/* Sums of each 16 consecutive int8 of a 32-byte vector, as two int16 in lanes 0 and 8 of the
   result's two 128-bit halves (sad against zero works on |x|, so bias to unsigned first). */
static inline void bsums_of_32(__m256i q, int16_t out[2]) {
    const __m256i biased = _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80)); /* q + 128 */
    const __m256i sad = _mm256_sad_epu8(biased, _mm256_setzero_si256());   /* 4 sums of 8 */
    int64_t s[4];
    _mm256_storeu_si256((__m256i *)s, sad);
    out[0] = (int16_t)(s[0] + s[1] - 16 * 128);
    out[1] = (int16_t)(s[2] + s[3] - 16 * 128);
}

static void q8_K_levels(const float *x, float max, block_q8_K *y) {
    const float iscale = -127.0f / max;
    if (!isfinite(iscale)) {
        /* max below ~4e-37: every product is +-Inf or NaN, which lb_nearest_int's bit trick
           turns into levels whose low byte is 0 */
        memset(y->qs, 0, sizeof y->qs);
        memset(y->bsums, 0, sizeof y->bsums);
        y->d = 1.0f / iscale;
        return;
    }
    const __m256 scale = _mm256_set1_ps(iscale);
    for (int j = 0; j < QK_K; j += 32) {
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            /* lb_nearest_int's float-add trick rounds to nearest even, as the FPU does */
            const __m256 v = _mm256_round_ps(_mm256_mul_ps(scale, _mm256_loadu_ps(x + j + 8 * k)),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(127));
        }
        const __m256i bytes = pack_i32_to_i8(q[0], q[1], q[2], q[3]);
        _mm256_storeu_si256((__m256i *)(y->qs + j), bytes);
        bsums_of_32(bytes, &y->bsums[j / 16]);
    }
    y->d = 1.0f / iscale;
}

static lowbit_status quantize_q8_K(const float *src, void *dst, int64_t n,
                                   const float *importance) {
    (void)importance;
    block_q8_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float amax;
        const int at = q8_K_first_extreme(src, &amax);
        if (at < 0) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        q8_K_levels(src, src[at], &y[b]);
    }
    return LOWBIT_OK;
}

/* ------------------------------------------------------------------------------------------ */

void lb_register_legacy_avx2(lb_kernel_set *set) {
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
    set->quantize_activation[LOWBIT_TYPE_Q8_0] = quantize_q8_0;
    set->quantize_activation[LOWBIT_TYPE_Q8_1] = quantize_q8_1;
    set->quantize_activation[LOWBIT_TYPE_Q8_K] = quantize_q8_K;
}
