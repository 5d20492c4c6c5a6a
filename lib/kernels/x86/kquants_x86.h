/*
 * Pieces shared by the x86 kernels of the 256-element formats (kquants_avx2.c and
 * kquants_avx512.c): unpacking of K-quant scales and of IQ4_XS weights, and the float
 * accumulation of exact per-super-block integer sums. AVX2 + FMA + F16C only, so either file
 * can include it.
 */
#ifndef LOWBIT_KQUANTS_X86_H
#define LOWBIT_KQUANTS_X86_H

#include "../../formats/blocks.h"
#include "../../formats/iq_grids.h"
#include "../kernels.h"
#include "x86_common.h"

#include <assert.h>
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

/* acc + scale * (float)sums, lane by lane: the super-block's exact integer sums meet its float
   scale in vector registers, and the lanes are added up once per row (hsum_ps), not per block.
   The per-block horizontal sum and scalar float chain cost more than the whole block's integer
   work (Q4_K GEMV 0.56 -> 0.39 ms single-threaded); the price is that the float additions run in
   another order than the reference's. */
static inline __m256 accumulate_scaled(__m256 acc, __m256i sums, float scale) {
    return _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(sums), acc);
}

/* The same for the formats with a scale and a min per block (Q2_K, Q4_K, Q5_K), whose fp16 d and
   dmin lie side by side: both are converted at once, and acc_f gains d * sums while mins_f gains
   dmin * min_sums (the caller subtracts mins_f at the end). */
static inline void accumulate_scaled_mins(__m256 *acc_f, __m256 *mins_f, const lb_half *d_then_dmin,
                                          float activation_scale, __m256i sums, __m256i min_sums) {
    uint32_t both;
    memcpy(&both, d_then_dmin, sizeof both);
    const __m128 scales = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)both)),
                                     _mm_set1_ps(activation_scale));
    *acc_f = _mm256_fmadd_ps(_mm256_broadcastss_ps(scales), _mm256_cvtepi32_ps(sums), *acc_f);
    *mins_f = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(scales)),
                              _mm256_cvtepi32_ps(min_sums), *mins_f);
}

/* 16 signed 8-bit sub-scales, as two vectors of 16-bit scales in both lanes: sub-blocks 0-7 and
   8-15 (the two 128-element halves of a super-block). */
static inline void widen_scales16(__m128i scales_i8, __m256i halves[2]) {
    const __m256i wide = _mm256_cvtepi8_epi16(scales_i8);
    halves[0] = _mm256_permute2x128_si256(wide, wide, 0x00);
    halves[1] = _mm256_permute2x128_si256(wide, wide, 0x11);
}

/* The 16 sub-scales as signed bytes: low nibbles in bytes 0-7 (high nibbles there for 8-15), top
   two bits in bytes 8-11 at bit 2 * (j / 4). Stored with an offset of 32. */
static inline __m128i q3_K_scales(const uint8_t packed[12]) {
    uint64_t low;
    uint32_t top;
    memcpy(&low, packed, 8);
    memcpy(&top, packed + 8, 4);
    const uint64_t nib = 0x0F0F0F0F0F0F0F0FULL;
    const uint64_t two = 0x03030303U;
    /* top bits of scales 0-7 (bytes 0-3: shift 0, bytes 4-7: shift 2) and of 8-15 (4 and 6) */
    const uint64_t top_lo = (top & two) | (((uint64_t)(top >> 2) & two) << 32);
    const uint64_t top_hi = ((top >> 4) & two) | (((uint64_t)(top >> 6) & two) << 32);
    const uint64_t s_lo = (low & nib) | (top_lo << 4);
    const uint64_t s_hi = ((low >> 4) & nib) | (top_hi << 4);
    return _mm_sub_epi8(_mm_set_epi64x((long long)s_hi, (long long)s_lo), _mm_set1_epi8(32));
}

/* The eight 6-bit scales and the eight 6-bit mins of a Q4_K or Q5_K block, as bytes, from GGUF's
   12-byte packing: with a, b, c the three 32-bit words,
   scales 0-3 are a & 63 and mins 0-3 b & 63 (per byte); scales 4-7 are c's low nibbles with a's
   top two bits above them, mins 4-7 c's high nibbles with b's top bits. Reads 16 bytes: the 12
   scale bytes and the first 4 bytes that follow them in the block (levels or high bits), which is
   one vector load instead of three scalar loads and a dozen scalar operations. The 16 values
   come out as bytes: scales 0-7, then mins 0-7. */
static inline __m128i k4_scale_min_bytes(const uint8_t *scales_then_more) {
    const __m128i v = _mm_loadu_si128((const __m128i *)scales_then_more); /* a, b, c, - */
    const __m128i low = _mm_and_si128(v, _mm_set1_epi8(0x3F));             /* a & 63, b & 63 */
    const __m128i c = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 2, 2));
    const __m128i nibbles = _mm_and_si128(_mm_srlv_epi32(c, _mm_setr_epi32(0, 4, 0, 0)),
                                          _mm_set1_epi8(0x0F));       /* c low, c high nibbles */
    const __m128i top = _mm_and_si128(_mm_srli_epi32(v, 2), _mm_set1_epi8(0x30)); /* bits 6-7 */
    const __m128i high = _mm_or_si128(nibbles, top);                   /* scales 4-7, mins 4-7 */
    return _mm_unpacklo_epi32(low, high); /* scales 0-3, 4-7, mins 0-3, 4-7 */
}

/* Bit `from` of every byte moved to bit `to` (the other bits: garbage, for the caller to mask):
   how the high-bit planes of Q3_K (to bit 2) and Q5_K (to bit 4) join the low bits of a level.
   16-bit shifts carry bits across byte boundaries, but never into bit `to` of a byte, since the
   distance never exceeds `to` going up or 7 - `to` going down. Two instructions with the mask,
   where testing the bit (and, compare, and) takes three and a constant. */
static inline __m256i move_bit(__m256i v, int from, int to) {
    return from <= to ? _mm256_slli_epi16(v, to - from) : _mm256_srli_epi16(v, from - to);
}

/* The raw words of IQ4_XS's eight sub-scales, from one 8-byte load of d, scales_h and scales_l,
   in every 128-bit lane: word i holds scales_l[i / 2] (low byte, scale i's low nibble at bit
   4 (i % 2)) and the byte of scales_h with scale i's top bits 2i, 2i + 1 (high byte). Each level
   shifts the nibble and the two bits into place its own way. */
static inline __m256i iq4_xs_scale_words(const block_iq4_xs *x) {
    static_assert(offsetof(block_iq4_xs, scales_h) == 2 && offsetof(block_iq4_xs, scales_l) == 4,
                  "d, scales_h and scales_l fill the block's first 8 bytes");
    uint64_t head;
    memcpy(&head, x, sizeof head);
    const __m256i gather = _mm256_setr_epi8(4, 2, 4, 2, 5, 2, 5, 2, 6, 3, 6, 3, 7, 3, 7, 3, 4, 2,
                                            4, 2, 5, 2, 5, 2, 6, 3, 6, 3, 7, 3, 7, 3);
    return _mm256_shuffle_epi8(_mm256_set1_epi64x((long long)head), gather);
}

/* Multi-token kernels (kernels.h, lb_vec_dot_tokens_fn) */

/* Picking per-sub-block scales out of 8 sixteen-bit scales per 128-bit lane: kPairPick[k] gives
   scale 2k to the low lane and scale 2k + 1 to the high lane (the two 16-element sub-blocks of a
   32-element row), from scales held in both lanes (kquants_avx2.c, lattice_avx2.c). */
static const uint8_t kPairPick[4][32] = {
    {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
     2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3},
    {4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5,
     6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7},
    {8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9,
     10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11},
    {12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13,
     14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15},
};

static inline __m256i pick_pair(__m256i scales8x2, int k) {
    return _mm256_shuffle_epi8(scales8x2, load32(kPairPick[k]));
}

/* TQ1_0 digits by 16-bit multiplies. A byte s of base-3 fixed point has the leading digit
   (3 * s) >> 8 and the rest 3 * s mod 256: the high and low bytes of the 16-bit product 3 * s.
   VPMADDUBSW with the weights (3, 0) forms 3 * s from the low byte of every 16-bit word and
   ignores the high byte, so one instruction yields the digit of each even element and the state
   that the next one starts from, with no masking between steps; another does the odd elements
   from (0, 3). Two multiplies, a byte shuffle, an and and an or (one VPTERNLOGD where AVX-512 VL
   is on) per 32 digits, where comparing
   against 86 and 171 took six instructions and the next state two. */

/* factor times the low (low = 1) or the high byte of each 16-bit word of s, as 16 bits */
static inline __m256i bytes_times(__m256i s, int low, int factor) {
    return _mm256_maddubs_epi16(s, _mm256_set1_epi16((short)(low ? factor : factor << 8)));
}

/* The 32 digits of the even and odd elements' products (their high bytes), in element order:
   the even ones moved down by a byte shuffle, the odd ones masked in place. */
static inline __m256i tq1_join_digits(__m256i even, __m256i odd) {
    const __m256i down = _mm256_shuffle_epi8(
        even, _mm256_setr_epi8(1, -1, 3, -1, 5, -1, 7, -1, 9, -1, 11, -1, 13, -1, 15, -1, 1, -1,
                               3, -1, 5, -1, 7, -1, 9, -1, 11, -1, 13, -1, 15, -1));
    return _mm256_or_si256(down, _mm256_and_si256(odd, _mm256_set1_epi16((short)0xFF00)));
}

/* The 256 unsigned digits u (the level is u - 1) of a TQ1_0 block, in element order, 32 per
   vector: qs[0..31] hold elements 32n + m as digit n of byte m (five vectors, each step's
   products being the next one's states); qs[32..47] hold 160 + 16n + m, two digits per vector,
   whose states come from one multiply by the power of 3 of each 128-bit lane; the fifth of those
   and qh's four digits of 4 bytes (240 + 4n + m) share the last vector. */
static inline void tq1_digits_by_products(const block_tq1_0 *x, __m256i digits[8]) {
    const __m256i q = load32(x->qs);
    __m256i even = bytes_times(q, 1, 3), odd = bytes_times(q, 0, 3);
    for (int d = 0; d < 5; d++) {
        digits[d] = tq1_join_digits(even, odd);
        if (d < 4) {
            even = bytes_times(even, 1, 3);
            odd = bytes_times(odd, 1, 3);
        }
    }
    const __m256i narrow =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(x->qs + 32)));
    const __m256i tail =
        _mm256_blend_epi32(narrow, _mm256_set1_epi32((int)load_u32(x->qh)), 0xF0);
    /* the multipliers 3^k of the even bytes (low bytes of the words) and of the odd ones (high
       bytes), per 128-bit lane: states 0 | 1, 2 | 3 of the narrow bytes, and state 4 | the qh
       bytes' states 0..3 */
#define X8(k) k, k, k, k, k, k, k, k
#define LANES(k0, k1) {{X8(k0), X8(k1)}, {X8((k0) << 8), X8((k1) << 8)}}
    static const int16_t kFactors[3][2][16] = {
        LANES(1, 3),
        LANES(9, 27),
        {{X8(81), 1, 1, 3, 3, 9, 9, 27, 27},
         {X8(81 << 8), 1 << 8, 1 << 8, 3 << 8, 3 << 8, 9 << 8, 9 << 8, 27 << 8, 27 << 8}},
    };
#undef LANES
#undef X8
    for (int v = 0; v < 3; v++) {
        const __m256i src = v < 2 ? narrow : tail;
        const __m256i e = _mm256_maddubs_epi16(src, load32(kFactors[v][0]));
        const __m256i o = _mm256_maddubs_epi16(src, load32(kFactors[v][1]));
        digits[5 + v] = tq1_join_digits(bytes_times(e, 1, 3), bytes_times(o, 1, 3));
    }
}

#endif
