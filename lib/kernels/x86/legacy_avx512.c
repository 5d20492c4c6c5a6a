/*
 * AVX-512 VL + BW + VNNI kernels of the 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * IQ4_NL, MXFP4 and NVFP4 (256-bit registers), and of F32 (512-bit registers).
 * lb_register_legacy_avx512 is called only on a CPU with VNNI; the AVX2 kernels of legacy_avx2.c
 * stay the fallback (F16 and BF16 keep them at every level), the type table's scalar references
 * the ground truth.
 *
 * Block formats. A block's integer work is small (one VPDPBUSD for 32 products), so what it
 * costs around that decides the speed. The AVX2 kernels pay per block two fp16 scale
 * conversions, a multiply, a broadcast, an int->float conversion and an FMA into a float
 * accumulator (plus an add for the min term of Q4_1/Q5_1). Here blocks go eight at a time:
 * - each block's product is one VPDPBUSD (u8 x s8, four products per s32 lane), which replaces
 *   VPMADDUBSW + VPMADDWD of AVX2;
 * - the eight blocks' 8-lane sums are folded into one vector, lane i = block i's exact total,
 *   by a tree of VPHADDD (reduce_8_blocks: 9 instructions for 8 blocks), or where the levels
 *   are small enough of VPACKSSDW + VPMADDWD (reduce_8_small_blocks, fewer micro-ops);
 * - the eight scales are gathered by plain loads and unpacks, converted with one VCVTPH2PS per
 *   operand and multiplied at once, and one int->float conversion and one FMA per 8 blocks
 *   meet them;
 * - the min terms m_x * s_y of Q4_1/Q5_1 ride along in the same conversions (d and m are
 *   adjacent in the weight block, d and s in Q8_1's) into a float vector of their own.
 * The float lanes are added up once per row. The integer totals are exact (the references'
 * own), so results differ from the references only by the order of the float operations.
 * Signed weights (Q8_0, IQ4_NL) use the sign trick (|w| unsigned, the activation taking w's
 * sign), exact since the activation quantizers never produce -128; so does Q5_0, whose
 * magnitudes and signs come from its high bits by two masked subtractions (sums_q5_0). Q4_0's
 * levels travel as their unsigned stored values q = w + 8, the offset coming off through a
 * second VPDPBUSD of 8 against the same activations (exact for any activation byte). NVFP4 goes
 * four blocks (eight activation blocks) at a time, see dot_nvfp4.
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
 * before -> after the scale gathering by unpacks, the small-level tree, sums_q5_0's masked
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
 * L1, and 512-bit loads did not make them faster (they keep the AVX2 kernels). The block kernels
 * prefetch a group's lines 8 KiB ahead as well (prefetch_weights, x86_common.h).
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

/* Eight E8M0 bytes at `stride` bytes apart (MXFP4's first field), each as e8m0_half gives it:
   2^(e - 128), with e = 0 and 1 as the float subnormals 2^-128 and 2^-127. */
static inline __m256 eight_e8m0_halves(const uint8_t *p, size_t stride) {
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
#define E8M0_SCALE(block) e8m0_half((block).e)
#define E8M0_SCALES_8(p, stride) eight_e8m0_halves(p, stride)

/* ------------------------------------------------------------------------------------------ */
/* Per-block integer sums (8 s32 lanes, exact)                                                 */
/* ------------------------------------------------------------------------------------------ */

static inline __m256i sums_q4_1(const block_q4_1 *x, const block_q8_1 *y) {
    return dot_u8(unpack_nibbles(x->qs), y->qs);
}

static inline __m256i sums_q5_1(const block_q5_1 *x, const block_q8_1 *y) {
    return dot_u8(unpack_5bit(x->qs, x->qh), y->qs);
}

static inline __m256i sums_q4_0(const block_q4_0 *x, const block_q8_0 *y) {
    /* (q - 8) * a as q * a - 8 * a: exact for any activation byte */
    const __m256i a = in_register(load_i8x32(y->qs));
    const __m256i zero = _mm256_setzero_si256();
    return _mm256_sub_epi32(_mm256_dpbusd_epi32(zero, unpack_nibbles(x->qs), a),
                            _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(8), a));
}

/* Q5_0's levels w = q - 16 by magnitude and sign, like the sign trick: where the high bit is
   clear, w = nibble - 16 < 0, so |w| = 16 - nibble and the activation is negated; where it is
   set, w = nibble. Two masked subtractions, one VPDPBUSD: a micro-op fewer than q * a - 16 * a
   (Q5_0 1.07 -> 1.03 ns per block in L2), exact while no activation byte is -128 (never, from
   the activation quantizers). */
static inline __m256i sums_q5_0(const block_q5_0 *x, const block_q8_0 *y) {
    const __m256i nibbles = unpack_nibbles(x->qs);
    const __mmask32 negative = _knot_mask32(_cvtu32_mask32(load_u32(x->qh)));
    const __m256i magnitude =
        _mm256_mask_sub_epi8(nibbles, negative, _mm256_set1_epi8(16), nibbles);
    const __m256i a = load_i8x32(y->qs);
    const __m256i signed_a = _mm256_mask_sub_epi8(a, negative, _mm256_setzero_si256(), a);
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), magnitude, signed_a);
}

static inline __m256i sums_q8_0(const block_q8_0 *x, const block_q8_0 *y) {
    return dot_i8(_mm256_loadu_si256((const __m256i *)x->qs), y->qs);
}

static inline __m256i sums_iq4_nl(const block_iq4_nl *x, const block_q8_0 *y) {
    const __m256i table =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lb_kvalues_iq4nl));
    return dot_i8(_mm256_shuffle_epi8(table, unpack_nibbles(x->qs)), y->qs);
}

/* FP4 codes through the doubled-value table (the half is in the scale), signed like IQ4_NL's. */
static inline __m256i sums_mxfp4(const block_mxfp4 *x, const block_q8_0 *y) {
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)fp4_doubled));
    return dot_i8(_mm256_shuffle_epi8(table, unpack_nibbles(x->qs)), y->qs);
}

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
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)fp4_doubled));
    __m256 scales[2];
    nvfp4_half_scales(x, y, scales);
    for (int h = 0; h < 2; h++) {
        const __m256i w = _mm256_shuffle_epi8(table, nvfp4_codes32(x->qs + 16 * h));
        acc = _mm256_fmadd_ps(scales[h], _mm256_cvtepi32_ps(dot_i8(w, y[h].qs)), acc);
    }
    return acc;
}

/* fp4_doubled + 12: the FP4 levels as unsigned bytes, the 12 taken back by a second VPDPBUSD. */
static const int8_t fp4_doubled_plus12[16] = {12, 13, 14, 15, 16, 18, 20, 24,
                                              12, 11, 10, 9,  8,  6,  4,  0};

/* The sums of one NVFP4 block (four sub-blocks of 16, 32 bytes) against its two Q8_0 blocks, two
   lanes per sub-block: [s0 s0 s1 s1 | s2 s2 s3 s3]. Byte j of sub-block s holds element j in its
   low nibble and j + 8 in its high one, so the low nibbles of the 32 bytes are elements 0-7 of
   each sub-block in turn and the high nibbles elements 8-15: the activation quadwords are picked
   to match (0 and 2 of each Q8_0 block against the low nibbles, 1 and 3 against the high), and
   the two halves add up in one accumulator. Unpacking the whole block at once costs one shift
   and two quadword permutes where two 16-byte halves in element order took two shifts and six
   shuffles. The levels go in as unsigned fp4_doubled_plus12, 12 * a coming off through two more
   VPDPBUSDs and a subtraction (exact for any activation byte), an operation fewer than the sign
   trick's absolute values and signs (1.07 against 1.10 ns per 32 elements). */
static inline __m256i nvfp4_block_sums(const uint8_t *qs, const block_q8_0 y[2],
                                       __m256i table12) {
    const __m256i packed = in_register(_mm256_loadu_si256((const __m256i *)qs));
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i lo = _mm256_shuffle_epi8(table12, _mm256_and_si256(packed, low4));
    const __m256i hi =
        _mm256_shuffle_epi8(table12, _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4));
    const __m256i a0 = in_register(load_i8x32(y[0].qs)), a1 = in_register(load_i8x32(y[1].qs));
    const __m256i a_lo = _mm256_permutex2var_epi64(a0, _mm256_setr_epi64x(0, 2, 4, 6), a1);
    const __m256i a_hi = _mm256_permutex2var_epi64(a0, _mm256_setr_epi64x(1, 3, 5, 7), a1);
    const __m256i zero = _mm256_setzero_si256(), twelve = _mm256_set1_epi8(12);
    const __m256i sums = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, lo, a_lo), hi, a_hi);
    const __m256i offset =
        _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, twelve, a_lo), twelve, a_hi);
    return _mm256_sub_epi32(sums, offset);
}

/* Four NVFP4 blocks at a time, for the scale decoding to be shared: per block (nvfp4_block) it
   cost more than the block's dot products. VPHADDD folds blocks k and k + 2 into
   [k.s0 k.s1 k+2.s0 k+2.s1 | k.s2 k.s3 k+2.s2 k+2.s3] (k.sS: sub-block S of block k), an order
   that two word unpacks give the scale bytes of blocks k and k + 2 and that unpacking the eight
   activation scales, gathered as y0 y4 y2 y6 y1 y5 y3 y7, with themselves gives theirs. The
   scales are 2^-7 times the halved UE4M3 value, exact, and the sum is scaled back at the end. */
static float dot_nvfp4(int64_t n, const void *weights, const void *activations) {
    const block_nvfp4 *x = weights;
    const block_q8_0 *y = activations;
    const int64_t nb = n / QK_NVFP4;
    const __m256i table12 =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)fp4_doubled_plus12));
    const size_t ys = sizeof *y;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4, x += 4, y += 8) {
        prefetch_weights(x, 4 * sizeof *x);
        __m256i s[4];
        for (int k = 0; k < 4; k++) s[k] = nvfp4_block_sums(x[k].qs, &y[2 * k], table12);
        const __m256i sums02 = _mm256_hadd_epi32(s[0], s[2]);
        const __m256i sums13 = _mm256_hadd_epi32(s[1], s[3]);
        const __m128i codes = _mm_unpacklo_epi64(
            _mm_unpacklo_epi16(dword_at(x[0].d), dword_at(x[2].d)),
            _mm_unpacklo_epi16(dword_at(x[1].d), dword_at(x[3].d)));
        const __m256i halves = ue4m3_as_fp16_x16(codes);
        const uint8_t *yb = (const uint8_t *)y;
        const __m128i dy_words = _mm_unpacklo_epi64(
            _mm_unpacklo_epi32(_mm_unpacklo_epi16(dword_at(yb), dword_at(yb + 4 * ys)),
                               _mm_unpacklo_epi16(dword_at(yb + 2 * ys), dword_at(yb + 6 * ys))),
            _mm_unpacklo_epi32(_mm_unpacklo_epi16(dword_at(yb + ys), dword_at(yb + 5 * ys)),
                               _mm_unpacklo_epi16(dword_at(yb + 3 * ys), dword_at(yb + 7 * ys))));
        const __m256 dy = _mm256_cvtph_ps(dy_words);
        const __m256 d02 = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(halves)),
                                         _mm256_unpacklo_ps(dy, dy));
        const __m256 d13 = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(halves, 1)),
                                         _mm256_unpackhi_ps(dy, dy));
        acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums02), d02, acc[0]);
        acc[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums13), d13, acc[1]);
    }
    __m256 tail = _mm256_setzero_ps();
    for (; b < nb; b++, x++, y += 2) tail = nvfp4_block(x, y, tail);
    /* 2^7: the fp16 scale words are 2^-8 of the UE4M3 values, the kernel wants them halved */
    return hsum_ps(_mm256_fmadd_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_set1_ps(128.0f), tail));
}

/* ------------------------------------------------------------------------------------------ */
/* Row loops                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Formats whose block scale is d_x * d_y alone (Q4_0, Q5_0, Q8_0, IQ4_NL, MXFP4 against Q8_0),
   d_x read by SCALE (one block) and SCALES_8 (eight), the eight blocks' sums folded by REDUCE.
   The blocks left over after the groups of eight are summed one by one. */
#define DEFINE_SCALED_DOT(NAME, WBLOCK, ABLOCK, ELEMS, SUMS, SCALE, SCALES_8, REDUCE)             \
    static float NAME(int64_t n, const void *weights, const void *activations) {                 \
        const WBLOCK *x = weights;                                                               \
        const ABLOCK *y = activations;                                                           \
        const int64_t nb = n / (ELEMS);                                                          \
        __m256 acc = _mm256_setzero_ps();                                                        \
        int64_t b = 0;                                                                           \
        for (; b + 8 <= nb; b += 8) {                                                            \
            prefetch_weights(&x[b], 8 * sizeof *x);                                              \
            __m256i s[8];                                                                        \
            for (int k = 0; k < 8; k++) s[k] = SUMS(&x[b + k], &y[b + k]);                       \
            const __m256 d = _mm256_mul_ps(SCALES_8((const uint8_t *)&x[b], sizeof *x),          \
                                           eight_halves((const uint8_t *)&y[b], sizeof *y));     \
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(REDUCE(s)), d, acc);                        \
        }                                                                                        \
        float sum = hsum_ps(acc);                                                                \
        for (; b < nb; b++) {                                                                    \
            sum += (float)hsum_i32(SUMS(&x[b], &y[b])) * (SCALE(x[b]) * half_to_float(y[b].d));  \
        }                                                                                        \
        return sum;                                                                              \
    }

/* Formats with a min against Q8_1 (Q4_1, Q5_1): d_x d_y sum(l a) + m_x s_y per block. */
#define DEFINE_MIN_DOT(NAME, WBLOCK, ELEMS, SUMS)                                                 \
    static float NAME(int64_t n, const void *weights, const void *activations) {                 \
        const WBLOCK *x = weights;                                                               \
        const block_q8_1 *y = activations;                                                       \
        const int64_t nb = n / (ELEMS);                                                          \
        __m256 acc = _mm256_setzero_ps(), mins = _mm256_setzero_ps();                            \
        int64_t b = 0;                                                                           \
        for (; b + 8 <= nb; b += 8) {                                                            \
            prefetch_weights(&x[b], 8 * sizeof *x);                                              \
            __m256i s[8];                                                                        \
            for (int k = 0; k < 8; k++) s[k] = SUMS(&x[b + k], &y[b + k]);                       \
            const __m256 d = scales_and_mins_8((const uint8_t *)&x[b], sizeof *x,               \
                                               (const uint8_t *)&y[b], sizeof *y, &mins);        \
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce_8_small_blocks(s)), d, acc);         \
        }                                                                                        \
        float sum = hsum_ps(_mm256_add_ps(acc, mins));                                           \
        for (; b < nb; b++) {                                                                    \
            sum += (float)hsum_i32(SUMS(&x[b], &y[b])) *                                         \
                       (half_to_float(x[b].d) * half_to_float(y[b].d)) +                         \
                   half_to_float(x[b].m) * half_to_float(y[b].s);                                \
        }                                                                                        \
        return sum;                                                                              \
    }

DEFINE_MIN_DOT(dot_q4_1, block_q4_1, QK4_1, sums_q4_1)
DEFINE_MIN_DOT(dot_q5_1, block_q5_1, QK5_1, sums_q5_1)
DEFINE_SCALED_DOT(dot_q4_0, block_q4_0, block_q8_0, QK4_0, sums_q4_0, FP16_SCALE, FP16_SCALES_8,
                  reduce_8_small_blocks)
DEFINE_SCALED_DOT(dot_q5_0, block_q5_0, block_q8_0, QK5_0, sums_q5_0, FP16_SCALE, FP16_SCALES_8,
                  reduce_8_small_blocks)
DEFINE_SCALED_DOT(dot_q8_0, block_q8_0, block_q8_0, QK8_0, sums_q8_0, FP16_SCALE, FP16_SCALES_8,
                  reduce_8_blocks)
DEFINE_SCALED_DOT(dot_iq4_nl, block_iq4_nl, block_q8_0, QK4_NL, sums_iq4_nl, FP16_SCALE,
                  FP16_SCALES_8, reduce_8_blocks)
DEFINE_SCALED_DOT(dot_mxfp4, block_mxfp4, block_q8_0, QK_MXFP4, sums_mxfp4, E8M0_SCALE,
                  E8M0_SCALES_8, reduce_8_small_blocks)

/* ------------------------------------------------------------------------------------------ */
/* F32                                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* 64 elements per iteration in four accumulators, the rest 16 at a time, then one by one. */
static float dot_f32(int64_t n, const void *weights, const void *activations) {
    const float *w = weights, *a = activations;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps()};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        prefetch_weights_to_l2(w + i, 256);
        for (int k = 0; k < 4; k++) {
            acc[k] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16 * k),
                                     _mm512_loadu_ps(a + i + 16 * k), acc[k]);
        }
    }
    for (; i + 16 <= n; i += 16) {
        acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(a + i), acc[0]);
    }
    float sum = _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
    for (; i < n; i++) sum += w[i] * a[i];
    return sum;
}

/* ------------------------------------------------------------------------------------------ */

void lb_register_legacy_avx512(lb_kernel_set *set) {
    set->vec_dot[LOWBIT_TYPE_Q4_0] = dot_q4_0;
    set->vec_dot[LOWBIT_TYPE_Q4_1] = dot_q4_1;
    set->vec_dot[LOWBIT_TYPE_Q5_0] = dot_q5_0;
    set->vec_dot[LOWBIT_TYPE_Q5_1] = dot_q5_1;
    set->vec_dot[LOWBIT_TYPE_Q8_0] = dot_q8_0;
    set->vec_dot[LOWBIT_TYPE_IQ4_NL] = dot_iq4_nl;
    set->vec_dot[LOWBIT_TYPE_MXFP4] = dot_mxfp4;
    set->vec_dot[LOWBIT_TYPE_NVFP4] = dot_nvfp4;
    set->vec_dot[LOWBIT_TYPE_F32] = dot_f32;
}
