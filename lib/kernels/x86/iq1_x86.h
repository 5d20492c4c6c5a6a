/*
 * Pieces shared by the x86 kernels of IQ1_S and IQ1_M (iq1_avx2.c and iq1_avx512.c): the odd
 * sub-block scales 2s + 1, IQ1_M's super-scale, and the shares of the constants that make the
 * weights unsigned, which the kernels take out through Q8_K's bsums: their factors per block
 * (iq1_s_offset_scales, iq1_m_offset_scales), which the multi-token kernels compute once and
 * meet with each token's bsums. AVX2 + F16C only, so either file can include it.
 */
#ifndef LOWBIT_IQ1_X86_H
#define LOWBIT_IQ1_X86_H

#include "../../formats/blocks.h"
#include "x86_common.h"

#include <immintrin.h>

/* Every 16-bit value of v in both halves of a 32-bit lane: madd with it weights both s16 of a
   pair alike. */
static inline __m256i pair_each16(__m128i v) {
    const __m256i wide = _mm256_cvtepu16_epi32(v);
    return _mm256_or_si256(wide, _mm256_slli_epi32(wide, 16));
}

/* IQ1_S: the odd scales 2s + 1 of the eight sub-blocks (s16, sub-block ib in slot ib), s being
   bits 12-14 of qh[ib]. */
static inline __m128i iq1_s_odd_scales(__m128i qh) {
    return _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qh, 11), _mm_set1_epi16(14)),
                        _mm_set1_epi16(1));
}

/* IQ1_S: with u = q + 1, 8q + delta = 8u - (8 - delta), 8 - delta being 7 or 9 (bit 15 of
   qh[ib] set: delta negative). Lane ib: (2s + 1) (8 - delta) in both words, for the sub-block's
   two bsums; a block's, shared by the tokens of the multi-token kernels. */
static inline __m256i iq1_s_offset_scales(__m128i qh, __m128i odd) {
    const __m128i eight_minus_delta =
        _mm_add_epi16(_mm_slli_epi16(_mm_srli_epi16(qh, 15), 1), _mm_set1_epi16(7));
    return pair_each16(_mm_mullo_epi16(odd, eight_minus_delta));
}

/* IQ1_M: the 16 odd scales 2s + 1 (s16, half j of the block in slot j): s = bits 3 (j % 4) .. +2
   of scale word j / 4, moved to the top by mullo and down again. */
static inline __m256i iq1_m_odd_scales(uint64_t words) {
    const __m256i w = _mm256_set1_epi64x((long long)words);
    const __m256i pick = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3,
                                          4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7);
    const __m256i mult = _mm256_setr_epi16(1 << 13, 1 << 10, 1 << 7, 1 << 4, 1 << 13, 1 << 10,
                                           1 << 7, 1 << 4, 1 << 13, 1 << 10, 1 << 7, 1 << 4,
                                           1 << 13, 1 << 10, 1 << 7, 1 << 4);
    const __m256i s = _mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(w, pick), mult), 13);
    return _mm256_add_epi16(_mm256_add_epi16(s, s), _mm256_set1_epi16(1));
}

/* IQ1_M keeps its fp16 super-scale in the top nibbles of the four scale words. */
static inline float iq1_m_super_scale(uint64_t words) {
    const uint16_t bits = (uint16_t)(((words >> 12) & 0x000F) | ((words >> 24) & 0x00F0) |
                                     ((words >> 36) & 0x0F00) | ((words >> 48) & 0xF000));
    return half_to_float(bits);
}

/* IQ1_M: the share of the constant 9 in the unsigned stand-in 8q + delta + 9 (0..18) is
   9 (2s + 1) times each half's bsum: these factors, madd with the bsums giving lane i the
   offsets of halves 2i and 2i + 1. */
static inline __m256i iq1_m_offset_scales(__m256i odd) {
    return _mm256_mullo_epi16(odd, _mm256_set1_epi16(9));
}

#endif
