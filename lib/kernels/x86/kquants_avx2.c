/*
 * AVX2 (+FMA, F16C) kernels of the 256-element formats: the dot products of Q2_K, Q3_K, Q4_K,
 * Q5_K, Q6_K, IQ4_XS, TQ1_0, TQ2_0 and Q8_K (as weights) with Q8_K activations, and the Q8_K
 * activation quantizer.
 *
 * Every dot product computes each super-block's integer sums exactly (the same integers as the
 * scalar references of the type table), keeps them in vector lanes, and scales them into float
 * vector accumulators (accumulate_scaled, kquants_x86.h) with one horizontal sum per row: the
 * results differ from the references only by the order of the float additions. Each also has a
 * multi-token version (one weight row against up to 4 activation rows, the weights unpacked once
 * for all), which runs each token through the one-token kernel's exact operations: the one-token
 * kernel is its one-token instance.
 *
 * The unpacking follows one pattern: a 32-byte vector of unsigned levels u (0..63) meets 32
 * activations in maddubs (u8 x s8 -> pairs summed to s16, which cannot saturate for these
 * ranges), then madd with the 16-bit sub-block scales sums pairs again into s32 lanes. Formats
 * whose levels are signed store them with an offset (Q3_K: u - 4, Q6_K: u - 32, ternary: u - 1);
 * the offset's share, offset * sum of activations, comes from Q8_K's bsums, as do the min terms
 * of Q2_K/Q4_K/Q5_K. The kernels therefore expect bsums to hold the sums of qs, as every Q8_K
 * block the quantizer writes does. The ternary formats, whose levels have no scales, add their
 * maddubs products in 16-bit lanes and widen once per block.
 *
 * What bounds these loops is the number of vector instructions (the matrix in cache): the
 * unpacking is arranged to save them, e.g. levels taken in place at 4 times their value (Q2_K,
 * TQ2_0), scales assembled by vector shifts rather than scalar code (IQ4_XS), one byte shuffle
 * per scale vector. (Q3_K's planes taken in place and its scales unpacked in vectors, as in
 * kquants_avx512.c, measured no faster here: 0.57 -> 0.58-0.62 ms, 4096 x 4096 on one thread.)
 */
#include "../../formats/blocks.h"
#include "../kernels.h"
#include "x86_common.h"
#include "kquants_x86.h"

#include <assert.h>
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Shared helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Sum of u * a over 32 bytes, with each 16-element half weighted by its own 16-bit scale
   (`scales` holds the first half's scale in its low 128 bits, the second's in the high ones):
   eight s32 partial sums. */
static inline __m256i scaled_dot32(__m256i u, __m256i a, __m256i scales) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), scales);
}

/* pick_one(v, i) spreads word i of each 128-bit lane over that lane. */
static inline __m256i pick_one(__m256i scales8x2, int i) {
    const int16_t lo = (int16_t)(2 * i), hi = (int16_t)(2 * i + 1);
    return _mm256_shuffle_epi8(scales8x2, _mm256_set1_epi16((int16_t)(lo | (hi << 8))));
}

/* ------------------------------------------------------------------------------------------ */
/* Q8_K activation quantizer                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* The element of largest magnitude, signed; the first one when several share it, as the
   reference finds it. NaNs never win (max_ps keeps its second operand when one is NaN). */
static float q8_K_signed_max(const float *x) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 amax = _mm256_setzero_ps();
    for (int j = 0; j < QK_K; j += 8) {
        amax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), abs_mask), amax);
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    const float best = _mm_cvtss_f32(m);
    if (best == 0.0f) return 0.0f;
    const __m256 target = _mm256_set1_ps(best);
    for (int j = 0; j < QK_K; j += 8) {
        const __m256 ax = _mm256_and_ps(_mm256_loadu_ps(x + j), abs_mask);
        const int hits = _mm256_movemask_ps(_mm256_cmp_ps(ax, target, _CMP_EQ_OQ));
        if (hits) return x[j + __builtin_ctz((unsigned)hits)];
    }
    return 0.0f; /* not reached: best is one of the magnitudes */
}

/* lb_nearest_int's rounding (add 1.5 * 2^23, read the low mantissa bits) on eight lanes, then
   the reference's min(v, 127); exact for every input, NaN and infinities included. */
static inline __m256i q8_K_round8(__m256 scaled) {
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    const __m256i bits = _mm256_castps_si256(_mm256_add_ps(scaled, magic));
    const __m256i v = _mm256_sub_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
                                       _mm256_set1_epi32(0x00400000));
    return _mm256_min_epi32(v, _mm256_set1_epi32(127));
}

/* Low bytes of 32 s32 values (the reference's conversion to int8), in element order. Masking
   first makes both packs exact: no value saturates. */
static inline __m256i q8_K_low_bytes(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    const __m256i low = _mm256_set1_epi32(0xff);
    const __m256i p01 = _mm256_packus_epi32(_mm256_and_si256(v0, low), _mm256_and_si256(v1, low));
    const __m256i p23 = _mm256_packus_epi32(_mm256_and_si256(v2, low), _mm256_and_si256(v3, low));
    const __m256i bytes = _mm256_packus_epi16(p01, p23);
    /* the in-lane packs leave the 4-byte groups as v0 v1 v2 v3 (elements 0-3 of each), then
       v0 v1 v2 v3 (elements 4-7): interleave the two halves */
    return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static void q8_K_quantize_block(const float *x, block_q8_K *y) {
    const float max = q8_K_signed_max(x);
    if (max == 0.0f) {
        memset(y, 0, sizeof *y);
        return;
    }
    const float iscale = -127.0f / max;
    const __m256 vscale = _mm256_set1_ps(iscale);
    for (int j = 0; j < QK_K; j += 32) {
        __m256i v[4];
        for (int i = 0; i < 4; i++) {
            v[i] = q8_K_round8(_mm256_mul_ps(vscale, _mm256_loadu_ps(x + j + 8 * i)));
        }
        const __m256i q = q8_K_low_bytes(v[0], v[1], v[2], v[3]);
        _mm256_storeu_si256((__m256i *)(y->qs + j), q);
        /* bsums of the two 16-element groups: widen to s16 and sum adjacent pairs down */
        const __m256i ones = _mm256_set1_epi16(1);
        const __m128i q_lo = _mm256_castsi256_si128(q), q_hi = _mm256_extracti128_si256(q, 1);
        const __m256i s_lo = _mm256_madd_epi16(_mm256_cvtepi8_epi16(q_lo), ones);
        const __m256i s_hi = _mm256_madd_epi16(_mm256_cvtepi8_epi16(q_hi), ones);
        y->bsums[j / 16] = (int16_t)hsum_i32(s_lo);
        y->bsums[j / 16 + 1] = (int16_t)hsum_i32(s_hi);
    }
    y->d = 1.0f / iscale;
}

static lowbit_status quantize_q8_K_avx2(const float *src, void *dst, int64_t n,
                                        const float *importance) {
    (void)importance;
    block_q8_K *y = dst;
    for (int64_t b = 0; b < n / QK_K; b++) q8_K_quantize_block(src + b * QK_K, &y[b]);
    return LOWBIT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Q2_K: 2-bit levels, 4-bit scale and min per 16 elements                                     */
/* ------------------------------------------------------------------------------------------ */

/* The fp16 d and dmin of a block (side by side) as floats times `factor` (a power of 2, so
   exact), in lanes 0 and 1: converted once per block for all tokens. */
static inline __m128 d_dmin_times(const lb_half *d_then_dmin, float factor) {
    return _mm_mul_ps(_mm_cvtph_ps(dword_at(d_then_dmin)), _mm_set1_ps(factor));
}

/* acc_f + d * y_d * sums and mins_f + dmin * y_d * min_sums, lane by lane (d and dmin from
   d_dmin_times), as accumulate_scaled_mins. */
static inline void accumulate_d_dmin(__m256 *acc_f, __m256 *mins_f, __m128 d_dmin, float y_d,
                                     __m256i sums, __m256i min_sums) {
    const __m128 scales = _mm_mul_ps(d_dmin, _mm_set1_ps(y_d));
    *acc_f = _mm256_fmadd_ps(_mm256_broadcastss_ps(scales), _mm256_cvtepi32_ps(sums), *acc_f);
    *mins_f = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(scales)),
                              _mm256_cvtepi32_ps(min_sums), *mins_f);
}

/* Byte shuffles that widen two of the 16 scale bytes (held in both 128-bit lanes) to the 16-bit
   words of a vector, sub-block 2j in the low lane and 2j + 1 in the high one (0x80 zeroes the
   high byte of each word): the scales of Q2_K's plane k of half h, j = 4h + k. */
#define BYTE8(s) (s), 0x80, (s), 0x80, (s), 0x80, (s), 0x80, (s), 0x80, (s), 0x80, (s), 0x80, \
                 (s), 0x80
#define PAIR(j) {BYTE8(2 * (j)), BYTE8(2 * (j) + 1)}
static const uint8_t kPairBytes[8][32] = {PAIR(0), PAIR(1), PAIR(2), PAIR(3),
                                          PAIR(4), PAIR(5), PAIR(6), PAIR(7)};
#undef PAIR
#undef BYTE8

/* A Q2_K row against n_tokens activation rows (as q4_K_dot_tokens below: the levels and scales
   unpacked once per block, each token running the one-token kernel's operations). Planes 0 and
   2 are bits 0-1 of q and of q >> 4; planes 1 and 3 are taken in place (bits 2-3), as 4 times
   their levels: one shift per 32 bytes instead of three. The plain planes get 4 times their
   scales (at most 60) and the mins are taken 4 times too, so that all sums are 4 times their
   value; d and dmin take the 1/4. */
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
        /* the scales (low nibbles) in both lanes, as bytes: the shuffles widen them */
        const __m256i sc = _mm256_and_si256(_mm256_broadcastsi128_si256(packed),
                                            _mm256_set1_epi8(0x0F));
        const __m256i sc4 = _mm256_slli_epi16(sc, 2);
        /* 4 times the mins (high nibbles), one per bsum */
        const __m256i mn4 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 2),
                                                               _mm_set1_epi8(0x3C)));
        const __m128 d_dmin = d_dmin_times(&x[b].d, 0.25f);
        __m256i acc[LB_DOT_TOKENS];
        for (int t = 0; t < n_tokens; t++) acc[t] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i q = load32(x[b].qs + 32 * h), q4 = _mm256_srli_epi16(q, 4);
            const __m256i planes[4] = {_mm256_and_si256(q, two_bits),
                                       _mm256_and_si256(q, high_pair),
                                       _mm256_and_si256(q4, two_bits),
                                       _mm256_and_si256(q4, high_pair)};
            for (int k = 0; k < 4; k++) {
                const __m256i scale_pair =
                    _mm256_shuffle_epi8(k % 2 ? sc : sc4, load32(kPairBytes[4 * h + k]));
                for (int t = 0; t < n_tokens; t++) {
                    const __m256i a =
                        load32(q8_K_block(activations, stride, t, b)->qs + 128 * h + 32 * k);
                    acc[t] = _mm256_add_epi32(acc[t], scaled_dot32(planes[k], a, scale_pair));
                }
            }
        }
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const __m256i sum_mins = _mm256_madd_epi16(mn4, load32(y->bsums));
            accumulate_d_dmin(&acc_f[t], &mins_f[t], d_dmin, y->d, acc[t], sum_mins);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(_mm256_sub_ps(acc_f[t], mins_f[t]));
}
DEFINE_DOT_ENTRY_POINTS(q2_K_avx2, q2_K_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* Q3_K and Q6_K: unsigned levels with an offset, signed scales per 16 elements                 */
/* ------------------------------------------------------------------------------------------ */

/* Q3_K plane k of half h (elements 128h + 32k..): u = two low bits + 4 * the hmask bit, in 0..7;
   the level is u - 4. q: the half's 32 bytes of low bits. */
static inline __m256i q3_K_plane(__m256i q, __m256i hmask, int h, int k) {
    const __m256i high = _mm256_and_si256(move_bit(hmask, 4 * h + k, 2), _mm256_set1_epi8(4));
    return _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * k), _mm256_set1_epi8(3)),
                           high);
}

/* Q6_K plane k of half h: u = level + 32 in 0..63, nibble k / 2 of ql[k % 2] and bits 2k, 2k + 1
   of the half's qh moved to bits 4, 5. */
static inline __m256i q6_K_plane(const __m256i ql[2], __m256i qh, int k) {
    const __m256i low = _mm256_and_si256(_mm256_srli_epi16(ql[k % 2], 4 * (k / 2)),
                                         _mm256_set1_epi8(0x0F));
    return _mm256_or_si256(low, _mm256_and_si256(move_bit(qh, 2 * k, 4), _mm256_set1_epi8(0x30)));
}

/* A Q3_K (q6 = 0) or Q6_K row against n_tokens activation rows `stride` bytes apart: the planes'
   unsigned levels meet the activations, and the offset's share (4 or 32 times the sum of scale *
   bsum) comes off per block. Inlined with constant q6 and n_tokens. */
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
        __m256i halves[2];
        widen_scales16(scales, halves);
        const __m256i hmask = q6 ? _mm256_setzero_si256() : load32(x3->hmask);
        __m256i acc[LB_DOT_TOKENS];
        for (int t = 0; t < n_tokens; t++) acc[t] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i q = q6 ? _mm256_setzero_si256() : load32(x3->qs + 32 * h);
            const __m256i ql[2] = {q6 ? load32(x6->ql + 64 * h) : q,
                                   q6 ? load32(x6->ql + 64 * h + 32) : q};
            const __m256i qh = q6 ? load32(x6->qh + 32 * h) : hmask;
            for (int k = 0; k < 4; k++) {
                const __m256i u = q6 ? q6_K_plane(ql, qh, k) : q3_K_plane(q, hmask, h, k);
                const __m256i scale_pair = pick_pair(halves[h], k);
                for (int t = 0; t < n_tokens; t++) {
                    const __m256i a =
                        load32(q8_K_block(activations, stride, t, b)->qs + 128 * h + 32 * k);
                    acc[t] = _mm256_add_epi32(acc[t], scaled_dot32(u, a, scale_pair));
                }
            }
        }
        const __m256i scales16 = _mm256_cvtepi8_epi16(scales);
        const float d = half_to_float(q6 ? x6->d : x3->d);
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            /* the offset's share, offset * sum of scale * bsum, per lane (offset 4 or 32) */
            const __m256i offset =
                _mm256_slli_epi32(_mm256_madd_epi16(scales16, load32(y->bsums)), q6 ? 5 : 2);
            acc_f[t] = accumulate_scaled(acc_f[t], _mm256_sub_epi32(acc[t], offset), d * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}

#define Q3_K_CALL(n, w, a, stride, count, out) offset16_dot_tokens(n, w, 0, a, stride, count, out)
#define Q6_K_CALL(n, w, a, stride, count, out) offset16_dot_tokens(n, w, 1, a, stride, count, out)
DEFINE_DOT_ENTRY_POINTS(q3_K_avx2, Q3_K_CALL)
DEFINE_DOT_ENTRY_POINTS(q6_K_avx2, Q6_K_CALL)

/* ------------------------------------------------------------------------------------------ */
/* Q4_K and Q5_K: 4-bit (+ a high-bit plane) levels, 6-bit scale and min per 32 elements       */
/* ------------------------------------------------------------------------------------------ */

/* Sum of u * a over one 32-element sub-block with one scale for all 32. */
static inline __m256i sub32_dot(__m256i u, const int8_t *a, __m256i scale) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, load32(a)), scale);
}

/* Byte i of `bytes` (the same in both lanes), zero-extended into every 16-bit word. */
static inline __m256i widen_byte(__m256i bytes, int i) {
    return _mm256_shuffle_epi8(bytes, _mm256_set1_epi16((short)(0x8000 | i)));
}

/* The mins of k4_scale_min_bytes (bytes 8-15) repeated for the two bsums of their sub-blocks,
   as 16-bit words (0x80 zeroes the high bytes). */
#define MIN_TWICE(i) (i), 0x80, (i), 0x80
static const uint8_t kMinsForBsums[32] = {MIN_TWICE(8),  MIN_TWICE(9),  MIN_TWICE(10),
                                          MIN_TWICE(11), MIN_TWICE(12), MIN_TWICE(13),
                                          MIN_TWICE(14), MIN_TWICE(15)};
#undef MIN_TWICE

/* The levels of chunk c (sub-blocks 2c and 2c + 1) of a Q4_K block (qh NULL) or a Q5_K block,
   whose fifth bits join the nibbles. */
static inline ALWAYS_INLINE void k4_chunk_levels(const uint8_t *qs, const uint8_t *qh, int c,
                                                 __m256i *lo, __m256i *hi) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    const __m256i q = load32(qs + 32 * c);
    *lo = _mm256_and_si256(q, nibble);
    *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble);
    if (!qh) return;
    const __m256i sixteen = _mm256_set1_epi8(16), high = load32(qh);
    *lo = _mm256_or_si256(*lo, _mm256_and_si256(move_bit(high, 2 * c, 4), sixteen));
    *hi = _mm256_or_si256(*hi, _mm256_and_si256(move_bit(high, 2 * c + 1, 4), sixteen));
}

static_assert(offsetof(block_q5_K, dmin) == offsetof(block_q4_K, dmin) &&
                  offsetof(block_q5_K, scales) == offsetof(block_q4_K, scales),
              "Q4_K and Q5_K share their block header");

/* A Q4_K (q5 = 0) or Q5_K row against n_tokens activation rows `stride` bytes apart, its levels
   and scales unpacked once per block for all tokens (inlined with constant q5 and n_tokens, so
   each token runs the one-token kernel's operations). */
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
        /* the 8 scale and 8 min bytes in both lanes: each scale vector is one byte shuffle,
           which widens as it spreads (no widening and lane broadcasts first) */
        const __m256i scale_min_bytes = _mm256_broadcastsi128_si256(k4_scale_min_bytes(x->scales));
        const __m256i mins = _mm256_shuffle_epi8(scale_min_bytes, load32(kMinsForBsums));
        __m256i acc[LB_DOT_TOKENS];
        for (int t = 0; t < n_tokens; t++) acc[t] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i lo, hi;
            k4_chunk_levels(qs, qh, c, &lo, &hi);
            const __m256i scale_lo = widen_byte(scale_min_bytes, 2 * c);
            const __m256i scale_hi = widen_byte(scale_min_bytes, 2 * c + 1);
            for (int t = 0; t < n_tokens; t++) {
                const int8_t *a = q8_K_block(activations, stride, t, b)->qs + 64 * c;
                acc[t] = _mm256_add_epi32(acc[t], sub32_dot(lo, a, scale_lo));
                acc[t] = _mm256_add_epi32(acc[t], sub32_dot(hi, a + 32, scale_hi));
            }
        }
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const __m256i sum_mins = _mm256_madd_epi16(mins, load32(y->bsums));
            accumulate_scaled_mins(&acc_f[t], &mins_f[t], &x->d, y->d, acc[t], sum_mins);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(_mm256_sub_ps(acc_f[t], mins_f[t]));
}

#define Q4_K_CALL(n, w, a, stride, count, out) k4_dot_tokens(n, w, 0, a, stride, count, out)
#define Q5_K_CALL(n, w, a, stride, count, out) k4_dot_tokens(n, w, 1, a, stride, count, out)
DEFINE_DOT_ENTRY_POINTS(q4_K_avx2, Q4_K_CALL)
DEFINE_DOT_ENTRY_POINTS(q5_K_avx2, Q5_K_CALL)

/* ------------------------------------------------------------------------------------------ */
/* IQ4_XS: 4-bit indices into the non-linear IQ4 grid, 6-bit signed scales per 32 elements     */
/* ------------------------------------------------------------------------------------------ */

/* The eight sub-scales (stored with an offset of 32) as s16, from one 8-byte load of d, scales_h
   and scales_l: the even ones 2m in the low 128-bit lane, the odd ones 2m + 1 in the high lane,
   each in both words of 32-bit lane m, where pick_one(scales, 2m) finds them. Scale i gathers
   scales_l[i / 2] (low byte of the word), with nibble i % 2, and the byte of scales_h with bits
   2i, 2i + 1 (high byte); per-lane shifts (VPSRLVD: AVX2 has no per-word ones) bring the nibble
   to bits 0-3 and the two bits to bits 4-5. Shifts within a 32-bit lane carry no bit of one
   word into the bits kept of the other. Eight vector instructions, where the scalar assembly of
   the top bits took some thirty. */
static inline __m256i iq4_xs_split_scales16(const block_iq4_xs *x) {
    const __m256i words = iq4_xs_scale_words(x);
    const __m256i low = _mm256_srlv_epi32(words, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    const __m256i top = _mm256_srlv_epi32(words, _mm256_setr_epi32(4, 8, 4, 8, 6, 10, 6, 10));
    const __m256i biased = _mm256_or_si256(_mm256_and_si256(low, _mm256_set1_epi16(0x0F)),
                                           _mm256_and_si256(top, _mm256_set1_epi16(0x30)));
    return _mm256_sub_epi16(biased, _mm256_set1_epi16(32));
}

/* Sub-blocks 2p and 2p + 1 are taken together, one per 128-bit lane: the low nibbles of their 32
   bytes give their first 16 weights (lo), the high nibbles their last 16 (hi), with no lane
   crossing; the activations are loaded in that order by 16-byte halves (two loads and an insert
   per 32, no more instructions than the two lane permutes that the weights took when each
   sub-block filled a vector), and both products share one scale vector. */
static inline ALWAYS_INLINE void iq4_xs_dot_tokens(int64_t n, const void *weights,
                                                   const void *activations, size_t stride,
                                                   int n_tokens, float *out) {
    const block_iq4_xs *x = weights;
    const __m256i grid =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lb_kvalues_iq4nl));
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    __m256 acc_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const __m256i scales = iq4_xs_split_scales16(&x[b]);
        __m256i acc[LB_DOT_TOKENS];
        for (int t = 0; t < n_tokens; t++) acc[t] = _mm256_setzero_si256();
        for (int p = 0; p < 4; p++) {
            const __m256i q = load32(x[b].qs + 32 * p);
            const __m256i w[2] = {
                _mm256_shuffle_epi8(grid, _mm256_and_si256(q, nibble)),
                _mm256_shuffle_epi8(grid, _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble))};
            const __m256i scale_pair = pick_one(scales, 2 * p);
            for (int t = 0; t < n_tokens; t++) {
                const int8_t *qa = q8_K_block(activations, stride, t, b)->qs + 64 * p;
                for (int s = 0; s < 2; s++) {
                    /* both signed: |a| (exact as u8, even for -128) times w with a's sign */
                    const __m256i a = load_2x16(qa + 16 * s, qa + 32 + 16 * s);
                    const __m256i prod =
                        _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w[s], a));
                    acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(prod, scale_pair));
                }
            }
        }
        for (int t = 0; t < n_tokens; t++) {
            const float y_d = q8_K_block(activations, stride, t, b)->d;
            acc_f[t] = accumulate_scaled(acc_f[t], acc[t], half_to_float(x[b].d) * y_d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}
DEFINE_DOT_ENTRY_POINTS(iq4_xs_avx2, iq4_xs_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* TQ2_0 and TQ1_0: ternary levels t = u - 1                                                   */
/* ------------------------------------------------------------------------------------------ */

/* The ternary kernels add their VPMADDUBSW products in 16-bit lanes and widen once per block
   (one VPMADDWD), where widening every product took a VPMADDWD and an add per 32 weights. A
   product word is a0 * u0 + a1 * u1 with |a| <= 128: at most 2 * 2 * 128 = 512 for TQ1_0's
   digits, 2 * 12 * 128 = 3072 for TQ2_0's levels taken as 4u; the block's sums, less the bsums
   of the offset (each at most 16 * 128 = 2048), stay below 2^15 (checked where they are made). */

/* The 16-bit words of a block's sums less the activations' bsums (levels are u - 1), widened
   to eight s32 lanes. */
static inline __m256i ternary_widen(__m256i sums16, const block_q8_K *y) {
    return _mm256_madd_epi16(_mm256_sub_epi16(sums16, load32(y->bsums)), _mm256_set1_epi16(1));
}

static inline __m256i unsigned_dot16(__m256i u, const int8_t *a) {
    return _mm256_maddubs_epi16(u, load32(a));
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
        /* Planes 0 and 2 (bits 0-1 of q and of q >> 4) are the levels u; planes 1 and 3 are
           masked in place (bits 2-3), as 4u, and summed apart: one shift per 32 bytes instead
           of three. */
        __m256i planes[2][4];
        for (int h = 0; h < 2; h++) {
            const __m256i q = load32(x[b].qs + 32 * h), q4 = _mm256_srli_epi16(q, 4);
            planes[h][0] = _mm256_and_si256(q, two_bits);
            planes[h][1] = _mm256_and_si256(q, high_pair);
            planes[h][2] = _mm256_and_si256(q4, two_bits);
            planes[h][3] = _mm256_and_si256(q4, high_pair);
        }
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            /* four words of at most 2 * 3 * 128 in `plain`, four of 3072 in `quadrupled`: with
               quadrupled / 4 (exact) and the bsums, at most 3072 + 3072 + 2048 */
            __m256i plain = _mm256_setzero_si256(), quadrupled = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                const int8_t *a = y->qs + 128 * h;
                plain = _mm256_add_epi16(plain, unsigned_dot16(planes[h][0], a));
                quadrupled = _mm256_add_epi16(quadrupled, unsigned_dot16(planes[h][1], a + 32));
                plain = _mm256_add_epi16(plain, unsigned_dot16(planes[h][2], a + 64));
                quadrupled = _mm256_add_epi16(quadrupled, unsigned_dot16(planes[h][3], a + 96));
            }
            const __m256i sums16 = _mm256_add_epi16(plain, _mm256_srai_epi16(quadrupled, 2));
            acc_f[t] = accumulate_scaled(acc_f[t], ternary_widen(sums16, y),
                                         half_to_float(x[b].d) * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}
DEFINE_DOT_ENTRY_POINTS(tq2_0_avx2, tq2_0_dot_tokens)

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
            /* eight words of at most 512: with the bsums, at most 4096 + 2048 */
            __m256i sums16 = unsigned_dot16(digits[0], y->qs);
            for (int v = 1; v < 8; v++) {
                sums16 = _mm256_add_epi16(sums16, unsigned_dot16(digits[v], y->qs + 32 * v));
            }
            acc_f[t] = accumulate_scaled(acc_f[t], ternary_widen(sums16, y),
                                         half_to_float(x[b].d) * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}
DEFINE_DOT_ENTRY_POINTS(tq1_0_avx2, tq1_0_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* Q8_K as a weight format, against Q8_K activations                                           */
/* ------------------------------------------------------------------------------------------ */

/* Both operands may be -128 (Q8_K's quantizer uses the full byte range), so neither the sign
   trick nor an unsigned offset fits VPMADDUBSW's 16-bit pair sums: the bytes are widened to 16
   bits (the weights once per block for all tokens) and multiplied by VPMADDWD, exact. */
static inline ALWAYS_INLINE void q8_K_dot_tokens(int64_t n, const void *weights,
                                                 const void *activations, size_t stride,
                                                 int n_tokens, float *out) {
    const block_q8_K *x = weights;
    __m256 acc_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        __m256i acc[LB_DOT_TOKENS];
        for (int t = 0; t < n_tokens; t++) acc[t] = _mm256_setzero_si256();
        for (int k = 0; k < QK_K / 16; k++) {
            const __m128i bytes = _mm_loadu_si128((const __m128i *)(x[b].qs + 16 * k));
            const __m256i w = _mm256_cvtepi8_epi16(bytes);
            for (int t = 0; t < n_tokens; t++) {
                const int8_t *qa = q8_K_block(activations, stride, t, b)->qs + 16 * k;
                const __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)qa));
                acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(w, a));
            }
        }
        for (int t = 0; t < n_tokens; t++) {
            acc_f[t] = accumulate_scaled(acc_f[t], acc[t],
                                         x[b].d * q8_K_block(activations, stride, t, b)->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}

DEFINE_DOT_ENTRY_POINTS(q8_K_avx2, q8_K_dot_tokens)

/* ------------------------------------------------------------------------------------------ */

void lb_register_kquants_avx2(lb_kernel_set *set) {
    set->quantize_activation[LOWBIT_TYPE_Q8_K] = quantize_q8_K_avx2;
    set_dot(set, LOWBIT_TYPE_Q2_K, dot_q2_K_avx2, dot_q2_K_avx2_tokens);
    set_dot(set, LOWBIT_TYPE_Q3_K, dot_q3_K_avx2, dot_q3_K_avx2_tokens);
    set_dot(set, LOWBIT_TYPE_Q4_K, dot_q4_K_avx2, dot_q4_K_avx2_tokens);
    set_dot(set, LOWBIT_TYPE_Q5_K, dot_q5_K_avx2, dot_q5_K_avx2_tokens);
    set_dot(set, LOWBIT_TYPE_Q6_K, dot_q6_K_avx2, dot_q6_K_avx2_tokens);
    set_dot(set, LOWBIT_TYPE_IQ4_XS, dot_iq4_xs_avx2, dot_iq4_xs_avx2_tokens);
    set_dot(set, LOWBIT_TYPE_TQ1_0, dot_tq1_0_avx2, dot_tq1_0_avx2_tokens);
    set_dot(set, LOWBIT_TYPE_TQ2_0, dot_tq2_0_avx2, dot_tq2_0_avx2_tokens);
    set_dot(set, LOWBIT_TYPE_Q8_K, dot_q8_K_avx2, dot_q8_K_avx2_tokens);
}
