/*
 * The small helpers every x86 kernel file needs (AVX2 + F16C only, so files compiled for AVX2
 * and for AVX-512 can include it): horizontal sums, fp16 scales, unaligned loads, the folding
 * of eight blocks' sums and the gathering of their scales, weight prefetches.
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

/* The four bytes at p in the low lane of a vector: a load alone (VMOVD), no shuffle, from which
   unpacks gather scale fields of several blocks. */
static inline __m128i dword_at(const void *p) { return _mm_cvtsi32_si128((int)load_u32(p)); }

/* ------------------------------------------------------------------------------------------ */
/* Blocks eight at a time: their sums folded into one vector, their scales gathered together    */
/* ------------------------------------------------------------------------------------------ */

/* s[i] are eight blocks' 8-lane partial sums; the result's lane i is block i's total. VPHADDD
   pairs neighbouring lanes within each 128-bit half: three rounds leave block i's low-half and
   high-half totals in lane i % 4 of the two halves of vector i / 4, which a cross-half add
   joins. */
static inline __m256i reduce_8_blocks(const __m256i s[8]) {
    const __m256i h01 = _mm256_hadd_epi32(s[0], s[1]), h23 = _mm256_hadd_epi32(s[2], s[3]);
    const __m256i h45 = _mm256_hadd_epi32(s[4], s[5]), h67 = _mm256_hadd_epi32(s[6], s[7]);
    const __m256i q0 = _mm256_hadd_epi32(h01, h23), q1 = _mm256_hadd_epi32(h45, h67);
    /* low lanes: q0's two halves; high lanes: q1's */
    const __m256i crossed = _mm256_permute2x128_si256(q0, q1, 0x21);
    return _mm256_add_epi32(crossed, _mm256_blend_epi32(q0, q1, 0xF0));
}

/* reduce_8_blocks for sums whose lanes stay within 16 bits: each lane of s[i] below 2^14 in
   magnitude, as for levels below 32 in magnitude (4 * 31 * 128 < 2^14: the 4- and 5-bit
   formats, MXFP4). VPACKSSDW + VPMADDWD by ones then does what VPHADDD does, the same lanes
   summed into the same places, exactly (packing saturates nothing: no sum of two lanes reaches
   2^15), in two micro-ops where VPHADDD takes three: Q5_0 1.17 -> 1.08 ns per block (AVX-512
   kernel, a GEMV over a matrix in L2, Intel Xeon, min of 5 alternating runs). */
static inline __m256i hadd_small(__m256i a, __m256i b) {
    return _mm256_madd_epi16(_mm256_packs_epi32(a, b), _mm256_set1_epi16(1));
}

static inline __m256i reduce_8_small_blocks(const __m256i s[8]) {
    const __m256i q0 = hadd_small(hadd_small(s[0], s[1]), hadd_small(s[2], s[3]));
    const __m256i q1 = hadd_small(hadd_small(s[4], s[5]), hadd_small(s[6], s[7]));
    const __m256i crossed = _mm256_permute2x128_si256(q0, q1, 0x21);
    return _mm256_add_epi32(crossed, _mm256_blend_epi32(q0, q1, 0xF0));
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

/* For blocks with a min (Q4_1, Q5_1 against Q8_1): returns d_x * d_y of eight blocks and adds
   their m_x * s_y to *mins, lane by lane. The pairs are gathered as blocks 0 1 4 5 and 2 3 6 7,
   so that SHUFPS picks the products of each kind in block order. */
static inline __m256 scales_and_mins_8(const void *x, size_t x_stride, const void *y,
                                       size_t y_stride, __m256 *mins) {
    const __m256 p0 =
        _mm256_mul_ps(four_half_pairs(x, x_stride, 0), four_half_pairs(y, y_stride, 0));
    const __m256 p1 =
        _mm256_mul_ps(four_half_pairs(x, x_stride, 2), four_half_pairs(y, y_stride, 2));
    *mins = _mm256_add_ps(*mins, _mm256_shuffle_ps(p0, p1, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm256_shuffle_ps(p0, p1, _MM_SHUFFLE(2, 0, 2, 0));
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
