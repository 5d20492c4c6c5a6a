/*
 * AVX-512 VL + VNNI kernels of the 256-element formats, on 256-bit registers: Q2_K, Q3_K, Q4_K,
 * Q5_K, Q6_K, IQ4_XS, TQ1_0, TQ2_0 and Q8_K (as weights) with Q8_K activations, each also in a
 * multi-token version (DEFINE_DOT_ENTRY_POINTS). lb_register_kquants_avx512 is called only on a
 * CPU with VNNI; the AVX2 kernels of kquants_avx2.c stay the fallback, and the scalar references
 * of the type table the ground truth.
 *
 * Why VNNI helps here: these GEMVs are bound by the vector multiply units, not by memory, while
 * the matrix sits in cache. The AVX2 kernels spend two multiply-unit instructions per 32 weights
 * (maddubs to s16 pairs, then madd by the sub-block scale) plus an add. Here VPDPBUSD sums four
 * u8 x s8 products per s32 lane directly; for these formats a lane's sum is at most
 * 4 * 63 * 128 = 32256 in magnitude (levels u <= 31 for Q5_K, <= 63 in general), so two such
 * vectors pack into one of s16 without saturation (PACKSSDW, a shuffle-unit instruction), and one
 * VPDPWSSD multiplies both by their sub-block scales and accumulates: three multiply-unit
 * instructions per 64 weights instead of four, and no separate adds. 512-bit registers were not
 * used: Zen 4 splits them into two 256-bit halves, and pairing blocks costs more shuffles; on an
 * Intel Xeon, where port 1's vector unit idles while 512-bit instructions are in flight, a 512-bit
 * TQ2_0 kernel with a third fewer instructions measured no faster than this one.
 *
 * What bounds these loops is the number of vector instructions, most of all of those that only
 * ports 0 and 1 run (multiplies, shifts, conversions): fewer of them, not more parallel chains,
 * is what made the kernels faster (partial sums in one chain rather than added up from zeroed
 * registers, scales assembled with per-word shifts rather than scalar code, a byte shuffle
 * rather than a shift where either does).
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
#include <string.h>

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
   kQuarterPairs[k / 2]: for planes k and k + 1 of 16-element sub-blocks (Q3_K, Q6_K), whose low
   128-bit lane holds sub-block 2k (then 2k + 2) and high lane 2k + 1 (then 2k + 3).
   Signed scales need these 16-bit sources; unsigned ones (Q2_K, Q4_K, Q5_K) are spread straight
   from their bytes by the patterns further down, which saves widening them first. */
#define WORD4(s) (2 * (s)), (2 * (s) + 1), (2 * (s)), (2 * (s) + 1), (2 * (s)), (2 * (s) + 1), \
                 (2 * (s)), (2 * (s) + 1)
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

static inline ALWAYS_INLINE void q2_K_dot_tokens(int64_t n, const void *weights,
                                                 const void *activations, size_t stride,
                                                 int n_tokens, float *out) {
    const block_q2_K *x = weights;
    const __m256i two_bits = _mm256_set1_epi8(3), high_pair = _mm256_set1_epi8(12);
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    __m256 acc_f[LB_DOT_TOKENS], mins_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = mins_f[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        /* The 16 scale bytes, loaded into both lanes: low nibbles the scales (widened to 16
           bits by the pattern shuffles below), high nibbles the mins (16-bit words >> 4). */
        const __m128i *packed = (const __m128i *)x[b].scales;
        const __m256i scale_bytes = _mm256_and_si256(_mm256_broadcastsi128_si256(
                                                         _mm_loadu_si128(packed)), nibble);
        const __m256i mn = _mm256_srli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(packed)), 4);
        /* Planes 0 and 2 are bits 0-1 of q and of q >> 4; planes 1 and 3 are taken in place
           (bits 2-3), as 4 times their levels: they pair with each other, and their sum is
           divided by 4 exactly. One shift per 32 bytes instead of three. */
        __m256i planes[2][4], pair_scales[2][2];
        for (int h = 0; h < 2; h++) {
            const __m256i q = load32(x[b].qs + 32 * h), q4 = _mm256_srli_epi16(q, 4);
            planes[h][0] = _mm256_and_si256(q, two_bits);
            planes[h][1] = _mm256_and_si256(q4, two_bits);
            planes[h][2] = _mm256_and_si256(q, high_pair);
            planes[h][3] = _mm256_and_si256(q4, high_pair);
            pair_scales[h][0] = spread_scales(scale_bytes, kQ2PlanePairBytes[h][0]);
            pair_scales[h][1] = spread_scales(scale_bytes, kQ2PlanePairBytes[h][1]);
        }
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            /* one chain of VPDPWSSD for the plain pairs and one for the quadrupled ones */
            __m256i even = _mm256_setzero_si256(), odd_x4 = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                const int8_t *a = y->qs + 128 * h;
                even = add_scaled_pair(even, dot4_u8_i8(planes[h][0], a),
                                       dot4_u8_i8(planes[h][1], a + 64), pair_scales[h][0]);
                odd_x4 = add_scaled_pair(odd_x4, dot4_u8_i8(planes[h][2], a + 32),
                                         dot4_u8_i8(planes[h][3], a + 96), pair_scales[h][1]);
            }
            const __m256i sum_mins = _mm256_madd_epi16(mn, load32(y->bsums));
            accumulate_scaled_mins(&acc_f[t], &mins_f[t], &x[b].d, y->d,
                                   _mm256_add_epi32(even, _mm256_srai_epi32(odd_x4, 2)),
                                   sum_mins);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(_mm256_sub_ps(acc_f[t], mins_f[t]));
}

/* The planes of 128-element half h of a Q3_K block: u = low2 + 4 * high bit, in 0..7 (the level
   is u - 4). Planes 1 and 3 are taken in place (bits 2-3 of q and of q >> 4), as 4u, their high
   bit moved to bit 4: one shift of q per half instead of three; the sums of those planes are
   divided by 4 once per block (q3_K_unscale). One VPTERNLOGD makes A | (B & C) (truth table
   0xF0 | (0xCC & 0xAA) = 0xF8) from A = the high bit in place, B = q or q >> 4, C = the mask of
   the plane's two bits. (Testing the high bits into mask registers and adding under them, in
   place of the shifts, measured slower: 0.49 against 0.46 ms, 4096 x 4096 GEMV on one thread.) */
static inline void q3_K_planes(const block_q3_K *x, int h, __m256i planes[4]) {
    const __m256i q = load32(x->qs + 32 * h), hmask = load32(x->hmask);
    const __m256i q4 = _mm256_srli_epi16(q, 4);
    for (int k = 0; k < 4; k++) {
        const int in_place = k % 2;
        const __m256i high = _mm256_and_si256(move_bit(hmask, 4 * h + k, in_place ? 4 : 2),
                                              _mm256_set1_epi8(in_place ? 16 : 4));
        planes[k] = _mm256_ternarylogic_epi32(high, k < 2 ? q : q4,
                                              _mm256_set1_epi8(in_place ? 12 : 3), 0xF8);
    }
}

/* The packed pairs put plane 2p's sums in lanes 0-1 of each 128-bit lane of the VPDPWSSD result
   and plane 2p + 1's in lanes 2-3: those are 4 times their value in Q3_K. */
static inline __m256i q3_K_unscale(__m256i sums) {
    return _mm256_srav_epi32(sums, _mm256_setr_epi32(0, 0, 2, 2, 0, 0, 2, 2));
}

/* The 16 Q3_K sub-scales as s16, sub-blocks 0-7 in the low 128-bit lane and 8-15 in the high
   one, from one 16-byte load that ends with d (the scales are its bytes 2-13). Word j gathers
   the byte with its low nibble (scales[j % 8], nibble j / 8) and the byte with its top two bits
   (scales[8 + j % 4], bits 2 * (j / 4)); per-word shifts bring both into place. The scalar
   assembly of the top bits took some twenty instructions per block. */
static inline __m256i q3_K_scales16(const block_q3_K *x) {
    static_assert(offsetof(block_q3_K, d) == offsetof(block_q3_K, scales) + 12 &&
                      sizeof(block_q3_K) == offsetof(block_q3_K, d) + 2,
                  "the 16 bytes before a Q3_K block's end hold the scales and d");
    const __m256i bytes =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(x->scales - 2)));
    const __m256i gather = _mm256_setr_epi8(2, 10, 3, 11, 4, 12, 5, 13, 6, 10, 7, 11, 8, 12, 9, 13,
                                            2, 10, 3, 11, 4, 12, 5, 13, 6, 10, 7, 11, 8, 12, 9, 13);
    const __m256i words = _mm256_shuffle_epi8(bytes, gather);
    const __m256i low = _mm256_srlv_epi16(words, _mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4,
                                                                   4, 4, 4, 4, 4));
    const __m256i top = _mm256_and_si256(
        _mm256_srlv_epi16(words, _mm256_setr_epi16(4, 4, 4, 4, 6, 6, 6, 6, 8, 8, 8, 8, 10, 10, 10,
                                                   10)),
        _mm256_set1_epi16(0x30));
    /* (low & 0x0F) | top: (A & C) | B, truth table (0xF0 & 0xAA) | 0xCC = 0xEC */
    const __m256i biased = _mm256_ternarylogic_epi32(low, top, _mm256_set1_epi16(0x0F), 0xEC);
    return _mm256_sub_epi16(biased, _mm256_set1_epi16(32));
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
        /* the 16 scales as s16: sub-blocks 0-7 in the low lane, 8-15 in the high one */
        const __m256i scales16 =
            q6 ? _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x6->scales))
               : q3_K_scales16(x3);
        const float d = half_to_float(q6 ? x6->d : x3->d);
        const __m256i halves[2] = {_mm256_permute4x64_epi64(scales16, 0x44),
                                   _mm256_permute4x64_epi64(scales16, 0xEE)};
        /* planes[h][k] holds the levels of elements 128h + 32k..128h + 32k + 31 (unsigned) */
        __m256i planes[2][4], pair_scales[2][2];
        for (int h = 0; h < 2; h++) {
            if (q6) q6_K_planes(x6, h, planes[h]);
            else q3_K_planes(x3, h, planes[h]);
            pair_scales[h][0] = spread_scales(halves[h], kQuarterPairs[0]);
            pair_scales[h][1] = spread_scales(halves[h], kQuarterPairs[1]);
        }
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            /* The block's one chain of VPDPWSSD starts from minus the offset's share, offset *
               sum of scale * bsum per lane (offset 4 or 32; in Q3_K 4 times that in the lanes
               that q3_K_unscale divides by 4) */
            const __m256i scaled_bsums = _mm256_madd_epi16(scales16, load32(y->bsums));
            const __m256i offset =
                q6 ? _mm256_slli_epi32(scaled_bsums, 5)
                   : _mm256_sllv_epi32(scaled_bsums, _mm256_setr_epi32(2, 2, 4, 4, 2, 2, 4, 4));
            __m256i sums = _mm256_sub_epi32(_mm256_setzero_si256(), offset);
            for (int h = 0; h < 2; h++) {
                for (int k = 0; k < 4; k += 2) {
                    const int8_t *a = y->qs + 128 * h + 32 * k;
                    sums = add_scaled_pair(sums, dot4_u8_i8(planes[h][k], a),
                                           dot4_u8_i8(planes[h][k + 1], a + 32),
                                           pair_scales[h][k / 2]);
                }
            }
            acc_f[t] = accumulate_scaled(acc_f[t], q6 ? sums : q3_K_unscale(sums), d * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}

/* ------------------------------------------------------------------------------------------ */
/* Q4_K and Q5_K: scale and min per 32 elements                                                */
/* ------------------------------------------------------------------------------------------ */

/* One 64-element chunk: lo holds the levels of its first 32-element sub-block, hi of its second;
   `pair_scales` their two scales spread over the pack's words (kSubPairBytes). */
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

/* The eight IQ4_XS sub-scales (stored with an offset of 32) as s16 in both lanes, from one
   8-byte load of d, scales_h and scales_l: word i gathers scales_l[i / 2] (low byte) and
   the byte of scales_h that holds bits 2i, 2i + 1 (high byte); per-word shifts bring nibble
   i % 2 down to bits 0-3 and those two bits to bits 4-5. The scalar assembly of the top bits
   took some thirty instructions per block. */
static inline __m256i iq4_xs_scales16(const block_iq4_xs *x) {
    const __m256i words = iq4_xs_scale_words(x);
    const __m256i low = _mm256_srlv_epi16(words, _mm256_setr_epi16(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0,
                                                                   4, 0, 4, 0, 4));
    const __m256i top = _mm256_and_si256(
        _mm256_srlv_epi16(words, _mm256_setr_epi16(4, 6, 8, 10, 4, 6, 8, 10, 4, 6, 8, 10, 4, 6, 8,
                                                   10)),
        _mm256_set1_epi16(0x30));
    /* (low & 0x0F) | top: (A & C) | B, truth table (0xF0 & 0xAA) | 0xCC = 0xEC */
    const __m256i biased = _mm256_ternarylogic_epi32(low, top, _mm256_set1_epi16(0x0F), 0xEC);
    return _mm256_sub_epi16(biased, _mm256_set1_epi16(32));
}

static inline ALWAYS_INLINE void iq4_xs_dot_tokens(int64_t n, const void *weights,
                                                   const void *activations, size_t stride,
                                                   int n_tokens, float *out) {
    const block_iq4_xs *x = weights;
    __m256 acc_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const __m256i scales = iq4_xs_scales16(&x[b]);
        /* one chain of VPDPWSSD per token: no adds of partial sums */
        __m256i acc[LB_DOT_TOKENS];
        for (int t = 0; t < n_tokens; t++) acc[t] = _mm256_setzero_si256();
        for (int p = 0; p < 4; p++) {
            /* Sub-blocks 2p and 2p + 1 as they come out of the 16-byte halves of one load: the
               low nibbles (elements 0-15 of each) in w[0], the high ones (16-31) in w[1], sub-block
               2p in the low 128-bit lane and 2p + 1 in the high one. The activations are loaded
               to match (load_2x16) rather than the weights permuted into element order: that
               takes two lane permutes and a scale shuffle off the shuffle port per 64 weights
               (warm GEMV 0.556 -> 0.520 ms, GEMM unchanged; Intel Xeon, five runs). */
            const __m256i grid =
                _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lb_kvalues_iq4nl));
            const __m256i q = load32(x[b].qs + 32 * p), nibble = _mm256_set1_epi8(0x0F);
            const __m256i w[2] = {
                _mm256_shuffle_epi8(grid, _mm256_and_si256(q, nibble)),
                _mm256_shuffle_epi8(grid, _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble))};
            const __m256i scale = pick_pair(scales, p);
            for (int t = 0; t < n_tokens; t++) {
                const int8_t *qa = q8_K_block(activations, stride, t, b)->qs + 64 * p;
                for (int s = 0; s < 2; s++) {
                    /* both signed: |a| (exact as u8, even for -128) times w with a's sign */
                    const __m256i a = load_2x16(qa + 16 * s, qa + 32 + 16 * s);
                    const __m256i prod =
                        _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w[s], a));
                    acc[t] = _mm256_dpwssd_epi32(acc[t], prod, scale);
                }
            }
        }
        for (int t = 0; t < n_tokens; t++) {
            acc_f[t] = accumulate_scaled(acc_f[t], acc[t],
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
           by 4 exactly at the end. One shift per 32 bytes instead of three. */
        __m256i planes[2][4];
        for (int h = 0; h < 2; h++) {
            const __m256i q = load32(x[b].qs + 32 * h);
            const __m256i q4 = _mm256_srli_epi16(q, 4);
            planes[h][0] = _mm256_and_si256(q, two_bits);
            planes[h][1] = _mm256_and_si256(q, high_pair);
            planes[h][2] = _mm256_and_si256(q4, two_bits);
            planes[h][3] = _mm256_and_si256(q4, high_pair);
        }
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            /* Levels are u - 1: the plain sums start from minus the activations' sums, and
               each of the two sums is one chain of four VPDPBUSD (no zeroed registers, no
               adds of partial sums) */
            __m256i plain = _mm256_madd_epi16(load32(y->bsums), _mm256_set1_epi16(-1));
            __m256i quadrupled = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                const int8_t *a = y->qs + 128 * h;
                plain = _mm256_dpbusd_epi32(plain, planes[h][0], load32(a));
                quadrupled = _mm256_dpbusd_epi32(quadrupled, planes[h][1], load32(a + 32));
                plain = _mm256_dpbusd_epi32(plain, planes[h][2], load32(a + 64));
                quadrupled = _mm256_dpbusd_epi32(quadrupled, planes[h][3], load32(a + 96));
            }
            const __m256i acc = _mm256_add_epi32(plain, _mm256_srai_epi32(quadrupled, 2));
            acc_f[t] = accumulate_scaled(acc_f[t], acc, half_to_float(x[b].d) * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}

static inline ALWAYS_INLINE void tq1_0_dot_tokens(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_tq1_0 *x = weights;
    __m256 acc_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        __m256i digits[8];
        tq1_digits_by_products(&x[b], digits);
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            /* levels are u - 1: one chain of VPDPBUSD from minus the sums of the activations */
            __m256i acc = _mm256_madd_epi16(load32(y->bsums), _mm256_set1_epi16(-1));
            for (int v = 0; v < 8; v++) {
                acc = _mm256_dpbusd_epi32(acc, digits[v], load32(y->qs + 32 * v));
            }
            acc_f[t] = accumulate_scaled(acc_f[t], acc, half_to_float(x[b].d) * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}

/* Q8_K as a weight format, against Q8_K activations. Both operands may be -128, so the weights
   travel as the unsigned u = w + 128 (one XOR of the sign bits, once per block for all tokens)
   and 128 times the activations' sum comes off through their bsums (which the quantizer writes
   as the sums of qs): sum(w a) = sum(u a) - 128 sum(a), exact in 32 bits. */
static inline ALWAYS_INLINE void q8_K_dot_tokens(int64_t n, const void *weights,
                                                 const void *activations, size_t stride,
                                                 int n_tokens, float *out) {
    const block_q8_K *x = weights;
    const __m256i sign_bits = _mm256_set1_epi8((char)0x80);
    __m256 acc_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        __m256i u[QK_K / 32];
        for (int v = 0; v < QK_K / 32; v++) {
            u[v] = _mm256_xor_si256(load32(x[b].qs + 32 * v), sign_bits);
        }
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            __m256i acc = _mm256_madd_epi16(load32(y->bsums), _mm256_set1_epi16(-128));
            for (int v = 0; v < QK_K / 32; v++) {
                acc = _mm256_dpbusd_epi32(acc, u[v], load32(y->qs + 32 * v));
            }
            acc_f[t] = accumulate_scaled(acc_f[t], acc, x[b].d * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}

DEFINE_DOT_ENTRY_POINTS(q2_K, q2_K_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(q8_K, q8_K_dot_tokens)
#define Q3_K_CALL(n, w, a, stride, count, out) offset16_dot_tokens(n, w, 0, a, stride, count, out)
#define Q6_K_CALL(n, w, a, stride, count, out) offset16_dot_tokens(n, w, 1, a, stride, count, out)
DEFINE_DOT_ENTRY_POINTS(q3_K, Q3_K_CALL)
DEFINE_DOT_ENTRY_POINTS(q6_K, Q6_K_CALL)
DEFINE_DOT_ENTRY_POINTS(iq4_xs, iq4_xs_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(tq1_0, tq1_0_dot_tokens)
DEFINE_DOT_ENTRY_POINTS(tq2_0, tq2_0_dot_tokens)

void lb_register_kquants_avx512(lb_kernel_set *set) {
    set_dot(set, LOWBIT_TYPE_Q2_K, dot_q2_K, dot_q2_K_tokens);
    set_dot(set, LOWBIT_TYPE_Q3_K, dot_q3_K, dot_q3_K_tokens);
    set_dot(set, LOWBIT_TYPE_Q4_K, dot_q4_K, dot_q4_K_tokens);
    set_dot(set, LOWBIT_TYPE_Q5_K, dot_q5_K, dot_q5_K_tokens);
    set_dot(set, LOWBIT_TYPE_Q6_K, dot_q6_K, dot_q6_K_tokens);
    set_dot(set, LOWBIT_TYPE_IQ4_XS, dot_iq4_xs, dot_iq4_xs_tokens);
    set_dot(set, LOWBIT_TYPE_TQ1_0, dot_tq1_0, dot_tq1_0_tokens);
    set_dot(set, LOWBIT_TYPE_TQ2_0, dot_tq2_0, dot_tq2_0_tokens);
    set_dot(set, LOWBIT_TYPE_Q8_K, dot_q8_K, dot_q8_K_tokens);
}
