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

/* The FP4 (E2M1) values doubled, so that they are integers: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their
   negatives. The kernels multiply these and take the half back in the block scale. */
static const int8_t fp4_doubled[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* E8M0 byte e -> 2^(e - 128), the MXFP4 scale halved (e = 0, 1 give float subnormals). */
static inline float e8m0_half(uint8_t e) {
    return lb_bits_to_float(e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23);
}

static inline __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

static inline uint32_t load_u32(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
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
   Prefetches never fault, so running past a row's (or the matrix's) end is harmless.
   always_inline: GCC deems a function that only prefetches free of side effects and, once it is
   left out of line (as in the always-inline K-quant kernels), drops the calls to it. */
#ifndef WEIGHT_PREFETCH_BYTES
#define WEIGHT_PREFETCH_BYTES 8192
#endif

static inline __attribute__((always_inline)) void prefetch_weights(const void *block, size_t bytes) {
    const char *ahead = (const char *)block + WEIGHT_PREFETCH_BYTES;
    for (size_t k = 0; k < bytes; k += 64) _mm_prefetch(ahead + k, _MM_HINT_T1);
}

#endif
