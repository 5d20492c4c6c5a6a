/*
 * The small helpers every x86 kernel file needs (AVX2 + F16C only, so files compiled for AVX2
 * and for AVX-512 can include it): horizontal sums, fp16 scales, unaligned loads.
 */
#ifndef LOWBIT_X86_COMMON_H
#define LOWBIT_X86_COMMON_H

#include "../../formats/blocks.h"

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

static inline __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

static inline uint32_t load_u32(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

#endif
