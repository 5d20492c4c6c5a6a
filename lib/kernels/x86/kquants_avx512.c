/*
 * AVX-512 VL + VNNI kernels of the 256-element formats, on 256-bit registers: Q2_K, Q3_K, Q4_K,
 * Q5_K, Q6_K, IQ4_XS, TQ1_0 and TQ2_0 with Q8_K activations, each but TQ1_0 also in a multi-token
 * version (DEFINE_DOT_ENTRY_POINTS). lb_register_kquants_avx512 is called only on a CPU with VNNI;
 * the AVX2 kernels of kquants_avx2.c stay the fallback, and the scalar references of the type
 * table the ground truth.
 *
 * Why VNNI helps here: these GEMVs are bound by the vector multiply units, not by memory, while
 * the matrix sits in cache. The AVX2 kernels spend two multiply-unit instructions per 32 weights
 * (maddubs to s16 pairs, then madd by the sub-block scale) plus an add. Here VPDPBUSD sums four
 * u8 x s8 products per s32 lane directly; for these formats a lane's sum is at most
 * 4 * 63 * 128 = 32256 in magnitude (levels u <= 31 for Q5_K, <= 63 in general), so two such
 * vectors pack into one of s16 without saturation (PACKSSDW, a shuffle-unit instruction), and one
 * VPDPWSSD multiplies both by their sub-block scales and accumulates: three multiply-unit
 * instructions per 64 weights instead of four, and no separate adds. 512-bit registers were not
 * used: Zen 4 splits them into two 256-bit halves, and pairing blocks costs more shuffles.
 *
 * The integer sums are exact and equal to the references'; each super-block's sums are scaled and
 * accumulated in float vectors (accumulate_scaled), so results differ from the references only by
 * the order of the float additions, as in kquants_avx2.c. IQ4_XS levels are signed, and a lane of
 * |a| x (w with a's sign) could reach 4 * 128 * 127, too much for s16: it keeps VPMADDUBSW pairs
 * and fuses only the scale multiply and the add into VPDPWSSD.
 */
#include "../../formats/blocks.h"
#include "../../formats/iq_grids.h"
#include "../kernels.h"
#include "kquants_x86.h"

#include <assert.h>
#include <immintrin.h>
#include <stddef.h>

static inline __m256i dot4_u8_i8(__m256i u, const int8_t *a) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, load32(a));
}

/* acc + the s32 lane sums of two dot4 vectors, each lane weighted by the 16-bit scale that
   `scale_words` holds at its position after the pack: per 128-bit lane the pack puts p's four
   lanes in words 0-3 and q's in words 4-7. */
static inline __m256i add_scaled_pair(__m256i acc, __m256i p, __m256i q, __m256i scale_words) {
    return _mm256_dpwssd_epi32(acc, _mm256_packs_epi32(p, q), scale_words);
}

/* Shuffles that spread 16-bit scales (eight per 128-bit lane) over the words of a packed pair.
   kSubPairs[c]: scale 2c to words 0-3 and 2c + 1 to words 4-7 of both lanes (32-element
   sub-blocks, the pair being a 32-byte load's low and high nibbles: IQ4_XS).
   kQuarterPairs[k / 2]: for planes k and k + 1 of 16-element sub-blocks (Q3_K, Q6_K), whose low
   128-bit lane holds sub-block 2k (then 2k + 2) and high lane 2k + 1 (then 2k + 3).
   Signed scales need these 16-bit sources; unsigned ones (Q2_K, Q4_K, Q5_K) are spread straight
   from their bytes by the patterns further down, which saves widening them first. */
#define WORD4(s) (2 * (s)), (2 * (s) + 1), (2 * (s)), (2 * (s) + 1), (2 * (s)), (2 * (s) + 1), \
                 (2 * (s)), (2 * (s) + 1)
static const uint8_t kSubPairs[4][32] = {
    {WORD4(0), WORD4(1), WORD4(0), WORD4(1)},
    {WORD4(2), WORD4(3), WORD4(2), WORD4(3)},
    {WORD4(4), WORD4(5), WORD4(4), WORD4(5)},
    {WORD4(6), WORD4(7), WORD4(6), WORD4(7)},
};
static const uint8_t kQuarterPairs[2][32] = {
    {WORD4(0), WORD4(2), WORD4(1), WORD4(3)},
    {WORD4(4), WORD4(6), WORD4(5), WORD4(7)},
};
/* The same patterns from bytes rather than 16-bit values (0x80 zeroes a word's high byte): the
   Q4_K/Q5_K scales of k4_scale_min_bytes (bytes 0-7, mins in 8-15), spread over a packed pair's
   words (kSubPairBytes) and the mins repeated for the two bsums of each sub-block, sub-blocks
   0-3 in the low lane and 4-7 in the high one (kMinsForBsums). */
#define BYTE4(s) (s), 0x80, (s), 0x80, (s), 0x80, (s), 0x80
#define BYTE2(s) (s), 0x80, (s), 0x80
static const uint8_t kSubPairBytes[4][32] = {
    {BYTE4(0), BYTE4(1), BYTE4(0), BYTE4(1)},
    {BYTE4(2), BYTE4(3), BYTE4(2), BYTE4(3)},
    {BYTE4(4), BYTE4(5), BYTE4(4), BYTE4(5)},
    {BYTE4(6), BYTE4(7), BYTE4(6), BYTE4(7)},
};
static const uint8_t kMinsForBsums[32] = {BYTE2(8),  BYTE2(9),  BYTE2(10), BYTE2(11),
                                          BYTE2(12), BYTE2(13), BYTE2(14), BYTE2(15)};
/* Q2_K pairs planes 0 with 2 and 1 with 3 (q2_K_dot_tokens); [h][pair] for half h, whose
   sub-blocks are 8h..8h + 7, from all 16 scale bytes. */
static const uint8_t kQ2PlanePairBytes[2][2][32] = {
    {{BYTE4(0), BYTE4(4), BYTE4(1), BYTE4(5)}, {BYTE4(2), BYTE4(6), BYTE4(3), BYTE4(7)}},
    {{BYTE4(8), BYTE4(12), BYTE4(9), BYTE4(13)}, {BYTE4(10), BYTE4(14), BYTE4(11), BYTE4(15)}},
};
#undef BYTE4
#undef BYTE2
#undef WORD4

static inline __m256i spread_scales(__m256i scales, const uint8_t pattern[32]) {
    return _mm256_shuffle_epi8(scales, load32(pattern));
}

/* ------------------------------------------------------------------------------------------ */
/* Q2_K and Q3_K: 2-bit planes, scales per 16 elements                                         */
/* ------------------------------------------------------------------------------------------ */

/* The integer sum of one 128-element half of a super-block: planes[k] holds the levels of
   elements 32k..32k + 31 (unsigned), `scales` the half's eight 16-bit sub-block scales. */
static inline __m256i half_sum_16(const __m256i planes[4], const int8_t *a,
                                  const __m256i pair_scales[2]) {
    __m256i pair[2];
    for (int k = 0; k < 4; k += 2) {
        pair[k / 2] = add_scaled_pair(_mm256_setzero_si256(), dot4_u8_i8(planes[k], a + 32 * k),
                                      dot4_u8_i8(planes[k + 1], a + 32 * (k + 1)),
                                      pair_scales[k / 2]);
    }
    return _mm256_add_epi32(pair[0], pair[1]);
}

static inline ALWAYS_INLINE void q2_K_dot_tokens(int64_t n, const void *weights,
                                                 const void *activations, size_t stride,
                                                 int n_tokens, float *out) {
    const block_q2_K *x = weights;
    const __m256i two_bits = _mm256_set1_epi8(3), high_pair = _mm256_set1_epi8(12);
    __m256 acc_f[LB_DOT_TOKENS], mins_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = mins_f[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const __m128i packed = _mm_loadu_si128((const __m128i *)x[b].scales);
        /* the 16 scale bytes in both lanes, widened to 16 bits by the pattern shuffles below */
        const __m256i scale_bytes =
            _mm256_broadcastsi128_si256(_mm_and_si128(packed, _mm_set1_epi8(0x0F)));
        const __m256i mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4),
                                                              _mm_set1_epi8(0x0F)));
        __m256i half[LB_DOT_TOKENS][2];
        for (int h = 0; h < 2; h++) {
            /* Planes 0 and 2 are bits 0-1 of q and of q >> 4; planes 1 and 3 are taken in place
               (bits 2-3), as 4 times their levels: they pair with each other, and their sum is
               divided by 4 exactly. One shift per 32 bytes instead of three. */
            const __m256i q = load32(x[b].qs + 32 * h), q4 = _mm256_srli_epi16(q, 4);
            const __m256i planes[4] = {
                _mm256_and_si256(q, two_bits), _mm256_and_si256(q4, two_bits),
                _mm256_and_si256(q, high_pair), _mm256_and_si256(q4, high_pair)};
            const __m256i even_scales = spread_scales(scale_bytes, kQ2PlanePairBytes[h][0]);
            const __m256i odd_scales = spread_scales(scale_bytes, kQ2PlanePairBytes[h][1]);
            for (int t = 0; t < n_tokens; t++) {
                const int8_t *a = q8_K_block(activations, stride, t, b)->qs + 128 * h;
                const __m256i even =
                    add_scaled_pair(_mm256_setzero_si256(), dot4_u8_i8(planes[0], a),
                                    dot4_u8_i8(planes[1], a + 64), even_scales);
                const __m256i odd_x4 =
                    add_scaled_pair(_mm256_setzero_si256(), dot4_u8_i8(planes[2], a + 32),
                                    dot4_u8_i8(planes[3], a + 96), odd_scales);
                half[t][h] = _mm256_add_epi32(even, _mm256_srai_epi32(odd_x4, 2));
            }
        }
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const __m256i sum_mins = _mm256_madd_epi16(mn, load32(y->bsums));
            accumulate_scaled_mins(&acc_f[t], &mins_f[t], &x[b].d, y->d,
                                   _mm256_add_epi32(half[t][0], half[t][1]), sum_mins);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(_mm256_sub_ps(acc_f[t], mins_f[t]));
}

/* The planes of 128-element half h of a Q3_K block: u = low2 + 4 * high bit, in 0..7 (the level
   is u - 4). One VPTERNLOGD makes A | (B & C) (truth table 0xF0 | (0xCC & 0xAA) = 0xF8) from
   A = the high bit at bit 2, B = the shifted low bits, C = 3 in every byte. */
static inline void q3_K_planes(const block_q3_K *x, int h, __m256i planes[4]) {
    const __m256i two_bits = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    const __m256i q = load32(x->qs + 32 * h), hmask = load32(x->hmask);
    for (int k = 0; k < 4; k++) {
        const __m256i high = _mm256_and_si256(move_bit(hmask, 4 * h + k, 2), four);
        planes[k] =
            _mm256_ternarylogic_epi32(high, _mm256_srli_epi16(q, 2 * k), two_bits, 0xF8);
    }
}

/* The planes of half h of a Q6_K block: u = low nibble | 2 high bits << 4, in 0..63 (the level
   is u - 32); plane k is nibble k / 2 of ql[k % 2] with bits 2k, 2k + 1 of qh moved to 4, 5,
   joined by one VPTERNLOGD as in Q3_K. */
static inline void q6_K_planes(const block_q6_K *x, int h, __m256i planes[4]) {
    const __m256i nibble = _mm256_set1_epi8(0x0F), high_bits = _mm256_set1_epi8(0x30);
    const __m256i ql[2] = {load32(x->ql + 64 * h), load32(x->ql + 64 * h + 32)};
    const __m256i qh = load32(x->qh + 32 * h);
    for (int k = 0; k < 4; k++) {
        const __m256i low = k < 2 ? ql[k] : _mm256_srli_epi16(ql[k - 2], 4);
        const __m256i high = _mm256_and_si256(move_bit(qh, 2 * k, 4), high_bits);
        planes[k] = _mm256_ternarylogic_epi32(high, low, nibble, 0xF8);
    }
}

/* Q3_K (q6 = 0) or Q6_K rows against n_tokens activation rows: unsigned levels u with an offset
   (4 or 32) and signed scales per 16 elements, the offset's share taken off through the bsums. */
static inline ALWAYS_INLINE void offset16_dot_tokens(int64_t n, const void *weights, int q6,
                                                     const void *activations, size_t stride,
                                                     int n_tokens, float *out) {
    __m256 acc_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        const block_q3_K *x3 = (const block_q3_K *)weights + b;
        const block_q6_K *x6 = (const block_q6_K *)weights + b;
        if (q6) prefetch_weights(x6, sizeof *x6);
        else prefetch_weights(x3, sizeof *x3);
        const __m128i scales =
            q6 ? _mm_loadu_si128((const __m128i *)x6->scales) : q3_K_scales(x3->scales);
        const float d = half_to_float(q6 ? x6->d : x3->d);
        __m256i halves[2];
        widen_scales16(scales, halves);
        __m256i half[LB_DOT_TOKENS][2];
        for (int h = 0; h < 2; h++) {
            __m256i planes[4];
            if (q6) q6_K_planes(x6, h, planes);
            else q3_K_planes(x3, h, planes);
            const __m256i pair_scales[2] = {spread_scales(halves[h], kQuarterPairs[0]),
                                            spread_scales(halves[h], kQuarterPairs[1])};
            for (int t = 0; t < n_tokens; t++) {
                const int8_t *a = q8_K_block(activations, stride, t, b)->qs + 128 * h;
                half[t][h] = half_sum_16(planes, a, pair_scales);
            }
        }
        const __m256i scales16 = _mm256_cvtepi8_epi16(scales);
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            /* the offset's share, offset * sum of scale * bsum, per lane (offset 4 or 32) */
            const __m256i offset =
                _mm256_slli_epi32(_mm256_madd_epi16(scales16, load32(y->bsums)), q6 ? 5 : 2);
            const __m256i acc = _mm256_add_epi32(half[t][0], half[t][1]);
            acc_f[t] = accumulate_scaled(acc_f[t], _mm256_sub_epi32(acc, offset), d * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}

/* ------------------------------------------------------------------------------------------ */
/* Q4_K and Q5_K: scale and min per 32 elements                                                */
/* ------------------------------------------------------------------------------------------ */

/* One 64-element chunk: lo holds the levels of its first 32-element sub-block, hi of its second;
   `pair_scales` their two scales spread over the pack's words (kSubPairs). */
static inline __m256i chunk_sum_32(__m256i lo, __m256i hi, const int8_t *a, __m256i pair_scales) {
    return add_scaled_pair(_mm256_setzero_si256(), dot4_u8_i8(lo, a), dot4_u8_i8(hi, a + 32),
                           pair_scales);
}

/* The four chunks' sums added as a tree: each chunk's VPDPWSSD starts from zero rather than from
   the previous chunk's result, so the four run in parallel instead of as one chain of
   multiply-add latencies. */
static inline __m256i add4(const __m256i s[4]) {
    return _mm256_add_epi32(_mm256_add_epi32(s[0], s[1]), _mm256_add_epi32(s[2], s[3]));
}

/* The levels of chunk c (sub-blocks 2c and 2c + 1) of a Q4_K block (qh NULL) or a Q5_K block,
   whose fifth bits join the nibbles with one VPTERNLOGD each, as in Q3_K (A | (B & C)). */
static inline ALWAYS_INLINE void k4_chunk_levels(const uint8_t *qs, const uint8_t *qh, int c,
                                                 __m256i *lo, __m256i *hi) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    const __m256i q = load32(qs + 32 * c);
    if (!qh) {
        *lo = _mm256_and_si256(q, nibble);
        *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble);
        return;
    }
    const __m256i sixteen = _mm256_set1_epi8(16), high = load32(qh);
    const __m256i high_lo = _mm256_and_si256(move_bit(high, 2 * c, 4), sixteen);
    const __m256i high_hi = _mm256_and_si256(move_bit(high, 2 * c + 1, 4), sixteen);
    *lo = _mm256_ternarylogic_epi32(high_lo, q, nibble, 0xF8);
    *hi = _mm256_ternarylogic_epi32(high_hi, _mm256_srli_epi16(q, 4), nibble, 0xF8);
}

static_assert(offsetof(block_q5_K, dmin) == offsetof(block_q4_K, dmin) &&
                  offsetof(block_q5_K, scales) == offsetof(block_q4_K, scales),
              "Q4_K and Q5_K share their block header");

/* A Q4_K (q5 = 0) or Q5_K row against n_tokens activation rows `stride` bytes apart; the row's
   scales, levels and scale patterns are unpacked once per block for all tokens. Inlined with
   constant q5 and n_tokens, so each token runs exactly the one-token kernel's operations. */
static inline ALWAYS_INLINE void k4_dot_tokens(int64_t n, const void *weights, int q5,
                                               const void *activations, size_t stride,
                                               int n_tokens, float *out) {
    __m256 acc_f[LB_DOT_TOKENS], mins_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = mins_f[t] = _mm256_setzero_ps();
    const size_t block_bytes = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    for (int64_t b = 0; b < n / QK_K; b++) {
        /* d, dmin and the scales lie at the same offsets in both block types */
        const block_q4_K *x = (const void *)((const uint8_t *)weights + b * block_bytes);
        prefetch_weights(x, block_bytes);
        const uint8_t *qs = q5 ? ((const block_q5_K *)(const void *)x)->qs : x->qs;
        const uint8_t *qh = q5 ? ((const block_q5_K *)(const void *)x)->qh : NULL;
        /* the scale and min bytes in both lanes; the shuffles below widen them to 16 bits */
        const __m256i scale_min_bytes = _mm256_broadcastsi128_si256(k4_scale_min_bytes(x->scales));
        const __m256i mins = spread_scales(scale_min_bytes, kMinsForBsums);
        __m256i chunk[LB_DOT_TOKENS][4];
        for (int c = 0; c < 4; c++) {
            __m256i lo, hi;
            k4_chunk_levels(qs, qh, c, &lo, &hi);
            const __m256i pair_scales = spread_scales(scale_min_bytes, kSubPairBytes[c]);
            for (int t = 0; t < n_tokens; t++) {
                const block_q8_K *y = q8_K_block(activations, stride, t, b);
                chunk[t][c] = chunk_sum_32(lo, hi, y->qs + 64 * c, pair_scales);
            }
        }
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const __m256i sum_mins = _mm256_madd_epi16(mins, load32(y->bsums));
            accumulate_scaled_mins(&acc_f[t], &mins_f[t], &x->d, y->d, add4(chunk[t]), sum_mins);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(_mm256_sub_ps(acc_f[t], mins_f[t]));
}

#define Q4_K_CALL(n, w, a, stride, count, out) k4_dot_tokens(n, w, 0, a, stride, count, out)
#define Q5_K_CALL(n, w, a, stride, count, out) k4_dot_tokens(n, w, 1, a, stride, count, out)
DEFINE_DOT_ENTRY_POINTS(q4_K, Q4_K_CALL)
DEFINE_DOT_ENTRY_POINTS(q5_K, Q5_K_CALL)

/* ------------------------------------------------------------------------------------------ */
/* IQ4_XS and TQ2_0                                                                            */
/* ------------------------------------------------------------------------------------------ */

static inline ALWAYS_INLINE void iq4_xs_dot_tokens(int64_t n, const void *weights,
                                                   const void *activations, size_t stride,
                                                   int n_tokens, float *out) {
    const block_iq4_xs *x = weights;
    __m256 acc_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const __m256i scales = iq4_xs_scales(&x[b]);
        /* one accumulator per sub-block of a pair: two chains of VPDPWSSD latencies, not one */
        __m256i acc2[LB_DOT_TOKENS][2];
        for (int t = 0; t < n_tokens; t++) acc2[t][0] = acc2[t][1] = _mm256_setzero_si256();
        for (int p = 0; p < 4; p++) {
            __m256i w[2];
            iq4_xs_pair_weights(&x[b], p, w);
            /* the pair pattern's words 0-3 carry scale 2p, 4-7 scale 2p + 1: one half each */
            const __m256i pair_scales = spread_scales(scales, kSubPairs[p]);
            const __m256i scale[2] = {_mm256_unpacklo_epi64(pair_scales, pair_scales),
                                      _mm256_unpackhi_epi64(pair_scales, pair_scales)};
            for (int t = 0; t < n_tokens; t++) {
                const int8_t *qa = q8_K_block(activations, stride, t, b)->qs + 64 * p;
                for (int s = 0; s < 2; s++) {
                    /* both signed: |a| (exact as u8, even for -128) times w with a's sign */
                    const __m256i a = load32(qa + 32 * s);
                    const __m256i prod =
                        _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w[s], a));
                    acc2[t][s] = _mm256_dpwssd_epi32(acc2[t][s], prod, scale[s]);
                }
            }
        }
        for (int t = 0; t < n_tokens; t++) {
            const __m256i acc = _mm256_add_epi32(acc2[t][0], acc2[t][1]);
            acc_f[t] = accumulate_scaled(acc_f[t], acc,
                                         half_to_float(x[b].d) *
                                             q8_K_block(activations, stride, t, b)->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}

static inline ALWAYS_INLINE void tq2_0_dot_tokens(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_tq2_0 *x = weights;
    const __m256i two_bits = _mm256_set1_epi8(3), high_pair = _mm256_set1_epi8(12);
    __m256 acc_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        /* Planes 0 and 2 (bits 0-1 of q and of q >> 4) are the levels u themselves; planes 1 and
           3 are masked in place (bits 2-3), which gives 4u: they go to their own sums, divided
           by 4 exactly at the end. One shift per 32 bytes instead of three, and four independent
           VPDPBUSD chains instead of one. */
        __m256i ones[LB_DOT_TOKENS][2], fours[LB_DOT_TOKENS][2];
        for (int h = 0; h < 2; h++) {
            const __m256i q = load32(x[b].qs + 32 * h);
            const __m256i q4 = _mm256_srli_epi16(q, 4);
            const __m256i planes[4] = {
                _mm256_and_si256(q, two_bits), _mm256_and_si256(q, high_pair),
                _mm256_and_si256(q4, two_bits), _mm256_and_si256(q4, high_pair)};
            for (int t = 0; t < n_tokens; t++) {
                const int8_t *a = q8_K_block(activations, stride, t, b)->qs + 128 * h;
                const __m256i zero = _mm256_setzero_si256();
                ones[t][h] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, planes[0], load32(a)),
                                                 planes[2], load32(a + 64));
                fours[t][h] =
                    _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, planes[1], load32(a + 32)),
                                        planes[3], load32(a + 96));
            }
        }
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const __m256i plain = _mm256_add_epi32(ones[t][0], ones[t][1]);
            const __m256i quadrupled = _mm256_add_epi32(fours[t][0], fours[t][1]);
            /* levels are u - 1: minus the sum of the activations */
            const __m256i acc = _mm256_sub_epi32(
                _mm256_add_epi32(plain, _mm256_srai_epi32(quadrupled, 2)), bsums_total8(y));
            acc_f[t] = accumulate_scaled(acc_f[t], acc, half_to_float(x[b].d) * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}

static float dot_tq1_0(int64_t n, const void *weights, const void *activations) {
    const block_tq1_0 *x = weights;
    const block_q8_K *y = activations;
    __m256 acc_f = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        __m256i digits[8];
        tq1_digits(&x[b], digits);
        /* two chains of VPDPBUSD; levels are u - 1: minus the sum of the activations */
        __m256i acc2[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int v = 0; v < 8; v++) {
            acc2[v % 2] = _mm256_dpbusd_epi32(acc2[v % 2], digits[v], load32(y[b].qs + 32 * v));
        }
        const __m256i acc =
            _mm256_sub_epi32(_mm256_add_epi32(acc2[0], acc2[1]), bsums_total8(&y[b]));
        acc_f = accumulate_scaled(acc_f, acc, half_to_float(x[b].d) * y[b].d);
    }
    return hsum_ps(acc_f);
}

DEFINE_DOT_ENTRY_POINTS(q2_K, q2_K_dot_tokens)
#define Q3_K_CALL(n, w, a, stride, count, out) offset16_dot_tokens(n, w, 0, a, stride, count, out)
#define Q6_K_CALL(n, w, a, stride, count, out) offset16_dot_tokens(n, w, 1, a, stride, count, out)
DEFINE_DOT_ENTRY_POINTS(q3_K, Q3_K_CALL)
DEFINE_DOT_ENTRY_POINTS(q6_K, Q6_K_CALL)
DEFINE_DOT_ENTRY_POINTS(iq4_xs, iq4_xs_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(tq2_0, tq2_0_dot_tokens)

void lb_register_kquants_avx512(lb_kernel_set *set) {
    set_dot(set, LOWBIT_TYPE_Q2_K, dot_q2_K, dot_q2_K_tokens);
    set_dot(set, LOWBIT_TYPE_Q3_K, dot_q3_K, dot_q3_K_tokens);
    set_dot(set, LOWBIT_TYPE_Q4_K, dot_q4_K, dot_q4_K_tokens);
    set_dot(set, LOWBIT_TYPE_Q5_K, dot_q5_K, dot_q5_K_tokens);
    set_dot(set, LOWBIT_TYPE_Q6_K, dot_q6_K, dot_q6_K_tokens);
    set_dot(set, LOWBIT_TYPE_IQ4_XS, dot_iq4_xs, dot_iq4_xs_tokens);
    set->vec_dot[LOWBIT_TYPE_TQ1_0] = dot_tq1_0;
    set_dot(set, LOWBIT_TYPE_TQ2_0, dot_tq2_0, dot_tq2_0_tokens);
}
