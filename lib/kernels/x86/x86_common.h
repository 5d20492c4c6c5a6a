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
#define WEIGHT_PREFETCH_NEAR_BYTES 1024

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

#endif
