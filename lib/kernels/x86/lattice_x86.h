/*
 * Pieces shared by the x86 kernels of the lattice formats with sign bits, IQ2_XXS, IQ2_XS, IQ2_S,
 * IQ3_XXS and IQ3_S (lattice_avx2.c and lattice_avx512.c). AVX2 only, so either file can include
 * it.
 *
 * The layouts, per super-block of 256 weights (8 sub-blocks of 32, in groups of 8):
 * - IQ2_XXS: per sub-block 4 one-byte indices into a codebook of 256 entries of 8 magnitudes,
 *   then a 32-bit word of 4 x 7 sign bits and the 4-bit scale s (bits 28-31);
 * - IQ2_XS: per group a 16-bit word, a 9-bit index (512 entries of 8) and 7 sign bits; per
 *   sub-block a byte of two 4-bit scales, one per 16 weights;
 * - IQ2_S: 10-bit indices (a byte in qs, two bits in qh) into 1024 entries of 8, plain sign bytes
 *   (8 bits, one per weight), the scales of IQ2_XS;
 * - IQ3_XXS: 64 one-byte indices into 256 entries of 4 magnitudes, then per sub-block the 32-bit
 *   word of IQ2_XXS;
 * - IQ3_S: 9-bit indices (a byte in qs, one bit in qh) into 512 entries of 4, plain sign bytes,
 *   a 4-bit scale per sub-block.
 * A 7-bit sign field stands for 8 signs with even parity: the 8th is the parity of the 7. Every
 * scale is an odd integer 2s + 1; the codebooks hold the magnitudes (all below 64).
 */
#ifndef LOWBIT_LATTICE_X86_H
#define LOWBIT_LATTICE_X86_H

#include "../../formats/blocks.h"
#include "x86_common.h"

#include <immintrin.h>

/* IQ2_XS and IQ2_S: the 16 odd scales 2s + 1 as bytes, one per 16 weights (s: the nibbles of the
   8 scale bytes, low first). */
static inline __m128i iq2_odd_half_scales(const uint8_t scales[8]) {
    const __m128i packed = _mm_loadl_epi64((const __m128i *)scales);
    const __m128i nibbles = _mm_and_si128(_mm_unpacklo_epi8(packed, _mm_srli_epi16(packed, 4)),
                                          _mm_set1_epi8(0x0F));
    return _mm_add_epi8(_mm_add_epi8(nibbles, nibbles), _mm_set1_epi8(1));
}

/* IQ2_XXS and IQ3_XXS: the odd scales 2s + 1 of the eight sub-blocks (s: bits 28-31 of each word
   of aux) as the 16 half scales, sub-block ib's in words 2 ib and 2 ib + 1. */
static inline __m256i odd_half_words_of_words(__m256i aux) {
    /* (aux >> 27) | 1 = 2s + 1: bit 27 gives way to the 1 */
    const __m256i odd = _mm256_or_si256(_mm256_srli_epi32(aux, 27), _mm256_set1_epi32(1));
    return _mm256_or_si256(odd, _mm256_slli_epi32(odd, 16));
}

/* The 16 half scales of an IQ3_S block as bytes: sub-block ib's 2s + 1 (s: nibble ib % 2 of
   scales[ib / 2]) in bytes 2 ib and 2 ib + 1. */
static inline __m128i iq3_s_odd_half_scales(const uint8_t scales[4]) {
    const __m128i packed = _mm_cvtsi32_si128((int)load_u32(scales));
    const __m128i nibbles = _mm_and_si128(_mm_unpacklo_epi8(packed, _mm_srli_epi16(packed, 4)),
                                          _mm_set1_epi8(0x0F));
    const __m128i odd = _mm_add_epi8(_mm_add_epi8(nibbles, nibbles), _mm_set1_epi8(1));
    return _mm_unpacklo_epi8(odd, odd);
}

/* The kernels multiply every weight w as the unsigned 64 + w (below 128, the magnitudes being
   below 64), so that VPMADDUBSW takes the activations as they are. The 64's share of a
   super-block, 64 times each half's odd scale (half_words: the 16 as 16-bit words) times its
   bsum, comes off through this, in 8 lanes: minus 64 * sum (2s + 1) * bsum. So the kernels
   expect bsums to hold the sums of qs, as every Q8_K block the quantizer writes does. */
static inline __m256i minus_offsets(__m256i half_words, const int16_t bsums[16]) {
    const __m256i offsets = _mm256_slli_epi32(_mm256_madd_epi16(half_words, load32(bsums)), 6);
    return _mm256_sub_epi32(_mm256_setzero_si256(), offsets);
}

#endif
