/*
 * AVX2 (+FMA, F16C) kernels of the 1-bit lattice formats IQ1_S and IQ1_M with Q8_K activations.
 *
 * Both formats pick, per group of 8 weights, an entry of the IQ1 codebook (8 values in -1, 0, +1)
 * and shift the whole group by delta = +-1/8 before scaling it by an odd integer 2s + 1 (per 32
 * weights in IQ1_S, per 16 in IQ1_M) and the super-block scale d. Times 8, every weight is the
 * integer 8q + sign(delta), so a super-block's dot product is exactly
 *     d * a.d / 8 * sum over sub-blocks of (2s + 1) * sum_j (8 q_j + sign(delta)) a_j,
 * and the kernels compute that integer sum exactly and apply d * a.d / 8 once per super-block.
 * The scalar reference (iquants_lattice.c) adds the same terms per group of 8 in float, so the
 * results differ from it by rounding only.
 *
 * maddubs needs unsigned weights, so each kernel multiplies the activations by an unsigned
 * stand-in of the weights (the codebook value plus a constant) and takes the constant's share out
 * through Q8_K's bsums (sums of 16 activations). The kernels therefore expect bsums to hold the
 * sums of qs, as every Q8_K block the quantizer writes does.
 *
 * Each format also has a multi-token kernel (DEFINE_DOT_ENTRY_POINTS: one weight row against up
 * to LB_DOT_TOKENS activation rows; the one-token kernel is the same body with one token, so
 * every token's result is the one-token kernel's bit for bit). The index assembly, the codebook
 * entries (the scalar loads and inserts that take most of the time), the stand-ins and the
 * sub-block scales are made once per block and shared; each token adds a maddubs, a madd and an
 * add per sub-block and its bsum offsets. Measured on an Intel Xeon (4096 x 4096, LOWBIT_CPU=avx2,
 * medians of five alternating runs, the machine shared with other work): 32-token GEMM on two
 * threads IQ1_S 30 -> 71, IQ1_M 24 -> 63 GFLOP/s (on a quieter machine 62 -> 148 and 49 -> 134),
 * the GEMV unchanged (1.07 -> 1.07 and 1.37 -> 1.40 ms, one-thread CPU time 1.41 -> 1.40).
 * Tried and not kept: for IQ1_S, multiplying the scales into the stand-ins once (q + 1 times
 * 2s + 1 fits a byte) and adding four sub-blocks' maddubs in 16 bits, which saves each token
 * three of twelve operations per four sub-blocks, measured no faster (one thread, 14.4 against
 * 14.3 ms): the entries' loads and inserts, on the shuffle port, bound these loops.
 */
#include "../../formats/blocks.h"
#include "../../formats/iq_grids.h"
#include "../kernels.h"
#include "x86_common.h"
#include "iq1_x86.h"
#include "kquants_x86.h"

#include <immintrin.h>
#include <string.h>

/* Four codebook entries (the groups of one 32-weight sub-block), in element order. */
static inline __m256i iq1_grid4(const uint16_t idx[4]) {
    return _mm256_set_epi64x((long long)lb_iq1s_grid[idx[3]], (long long)lb_iq1s_grid[idx[2]],
                             (long long)lb_iq1s_grid[idx[1]], (long long)lb_iq1s_grid[idx[0]]);
}

/* Lane ib's 32-bit value in every lane. */
static inline __m256i broadcast_lane(__m256i v, int ib) {
    return _mm256_permutevar8x32_epi32(v, _mm256_set1_epi32(ib));
}

/* ------------------------------------------------------------------------------------------ */
/* IQ1_S: qh[ib] holds four 3-bit index extensions, the 3-bit scale s and the delta's sign.     */
/* ------------------------------------------------------------------------------------------ */

/* The 32 grid indices of a block: qs[4 ib + l] plus bits 3l..3l+2 of qh[ib] as bits 8-10. */
static inline void iq1_s_indices(const block_iq1_s *x, uint16_t idx[32]) {
    /* qh[ib] in the four 16-bit slots of sub-block ib, each shifted so that its field l lands in
       the top three bits (mullo by 2^(13 - 3l)), then moved down to bits 8-10 */
    const __m256i qh = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x->qh));
    const __m256i mult = _mm256_setr_epi16(1 << 13, 1 << 10, 1 << 7, 1 << 4, 1 << 13, 1 << 10,
                                           1 << 7, 1 << 4, 1 << 13, 1 << 10, 1 << 7, 1 << 4,
                                           1 << 13, 1 << 10, 1 << 7, 1 << 4);
    const __m256i top3 = _mm256_set1_epi16((short)0xE000);
    /* 16-bit slots 0-3: word 0, 4-7: word 1 (low lane); 8-11: word 2, 12-15: word 3 (high lane) */
    const __m256i pick_lo = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 4, 5,
                                             4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7);
    const __m256i pick_hi = _mm256_add_epi8(pick_lo, _mm256_set1_epi8(8));
    const __m256i low = load32(x->qs);
    for (int half = 0; half < 2; half++) {
        const __m256i words = _mm256_shuffle_epi8(qh, half ? pick_hi : pick_lo);
        const __m256i ext =
            _mm256_srli_epi16(_mm256_and_si256(_mm256_mullo_epi16(words, mult), top3), 5);
        const __m128i bytes = half ? _mm256_extracti128_si256(low, 1) : _mm256_castsi256_si128(low);
        const __m256i indices = _mm256_or_si256(_mm256_cvtepu8_epi16(bytes), ext);
        _mm256_storeu_si256((__m256i *)(idx + 16 * half), indices);
    }
}

/* One row against n_tokens activation rows (DEFINE_DOT_ENTRY_POINTS): the indices, the codebook
   entries and the scales of each sub-block once, then per token a maddubs, a madd and an add. */
static inline ALWAYS_INLINE void iq1_s_dot_tokens(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_iq1_s *x = weights;
    const __m256i one = _mm256_set1_epi8(1);
    __m256 acc_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        uint16_t idx[32];
        iq1_s_indices(&x[b], idx);
        const __m128i qh = _mm_loadu_si128((const __m128i *)x[b].qh);
        const __m128i odd = iq1_s_odd_scales(qh);
        const __m256i scale8 = pair_each16(_mm_slli_epi16(odd, 3));
        __m256i acc[LB_DOT_TOKENS];
        for (int t = 0; t < n_tokens; t++) acc[t] = _mm256_setzero_si256();
        for (int ib = 0; ib < 8; ib++) {
            const __m256i u = _mm256_add_epi8(iq1_grid4(idx + 4 * ib), one);
            const __m256i scale = broadcast_lane(scale8, ib);
            for (int t = 0; t < n_tokens; t++) {
                const block_q8_K *y = q8_K_block(activations, stride, t, b);
                const __m256i pairs = _mm256_maddubs_epi16(u, load32(y->qs + 32 * ib));
                acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(pairs, scale));
            }
        }
        const __m256i offset_scales = iq1_s_offset_scales(qh, odd);
        const float dx = 0.125f * half_to_float(x[b].d);
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const __m256i offsets = _mm256_madd_epi16(load32(y->bsums), offset_scales);
            acc_f[t] = accumulate_scaled(acc_f[t], _mm256_sub_epi32(acc[t], offsets), dx * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}

DEFINE_DOT_ENTRY_POINTS(iq1_s_avx2, iq1_s_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* IQ1_M: each qh nibble holds a group's 3-bit index extension and its delta's sign (bit 3); the */
/* 3-bit scales of the 16 halves fill the low 12 bits of the four scale words, whose top        */
/* nibbles make up the fp16 super-scale.                                                        */
/* ------------------------------------------------------------------------------------------ */

/* Computed in vectors for the whole block: the per-group scalar version ran 15% slower (4096 x
   4096 GEMV, 1.43 vs 1.22 ms).
   The 32 grid indices (qs[4 ib + l] plus the low 3 bits of nibble l of qh[2 ib], qh[2 ib + 1]),
   and per group the constant of its unsigned stand-in 8q + delta + 9: 10, or 8 where the delta is
   negative (bit 3 of the nibble). Byte g of the result belongs to group g (4 ib + l). */
static inline __m256i iq1_m_indices_and_shifts(const block_iq1_m *x, uint16_t idx[32]) {
    const __m128i qh = _mm_loadu_si128((const __m128i *)x->qh);
    const __m128i fifteen = _mm_set1_epi8(15);
    const __m128i lo = _mm_and_si128(qh, fifteen);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(qh, 4), fifteen);
    /* nibble 2i is qh[i]'s low one, 2i + 1 its high one: group order */
    const __m128i nibbles[2] = {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};
    const __m128i seven = _mm_set1_epi8(7);
    const __m256i low = load32(x->qs);
    for (int half = 0; half < 2; half++) {
        const __m128i bytes = half ? _mm256_extracti128_si256(low, 1) : _mm256_castsi256_si128(low);
        const __m256i ext = _mm256_cvtepu8_epi16(_mm_and_si128(nibbles[half], seven));
        const __m256i indices =
            _mm256_or_si256(_mm256_cvtepu8_epi16(bytes), _mm256_slli_epi16(ext, 8));
        _mm256_storeu_si256((__m256i *)(idx + 16 * half), indices);
    }
    const __m256i eight = _mm256_set1_epi8(8);
    const __m256i negative = _mm256_cmpeq_epi8(
        _mm256_and_si256(_mm256_set_m128i(nibbles[1], nibbles[0]), eight), eight);
    return _mm256_blendv_epi8(_mm256_set1_epi8(10), eight, negative);
}

/* As iq1_s_dot_tokens: each sub-block's unsigned stand-ins and half scales once, then per token
   a maddubs, a madd and an add. */
static inline ALWAYS_INLINE void iq1_m_dot_tokens(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_iq1_m *x = weights;
    const __m256i eight = _mm256_set1_epi8(8);
    /* byte j of a sub-block's stand-in takes the constant of group j / 8 */
    const __m256i group_of_byte = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                   2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    /* s16 j of a sub-block's pair sums takes the first half's scale (low 128 bits) or the
       second's (high 128 bits) */
    const __m256i half_of_pair = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
                                                  2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    __m256 acc_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        uint64_t words;
        memcpy(&words, x[b].scales, sizeof words);
        const __m256i odd = iq1_m_odd_scales(words); /* lane ib: the scales of its two halves */
        uint16_t idx[32];
        const __m256i shifts = iq1_m_indices_and_shifts(&x[b], idx); /* lane ib: its 4 groups' */
        __m256i acc[LB_DOT_TOKENS];
        for (int t = 0; t < n_tokens; t++) acc[t] = _mm256_setzero_si256();
        for (int ib = 0; ib < 8; ib++) {
            /* the unsigned stand-in 8q + delta + 9 (0..18) of the 32 weights */
            const __m256i u =
                _mm256_add_epi8(_mm256_sign_epi8(eight, iq1_grid4(idx + 4 * ib)),
                                _mm256_shuffle_epi8(broadcast_lane(shifts, ib), group_of_byte));
            const __m256i scale = _mm256_shuffle_epi8(broadcast_lane(odd, ib), half_of_pair);
            for (int t = 0; t < n_tokens; t++) {
                const block_q8_K *y = q8_K_block(activations, stride, t, b);
                const __m256i pairs = _mm256_maddubs_epi16(u, load32(y->qs + 32 * ib));
                acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(pairs, scale));
            }
        }
        const __m256i offset_scales = iq1_m_offset_scales(odd);
        const float dx = 0.125f * iq1_m_super_scale(words);
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            const __m256i offsets = _mm256_madd_epi16(load32(y->bsums), offset_scales);
            acc_f[t] = accumulate_scaled(acc_f[t], _mm256_sub_epi32(acc[t], offsets), dx * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}

DEFINE_DOT_ENTRY_POINTS(iq1_m_avx2, iq1_m_dot_tokens)

/* ------------------------------------------------------------------------------------------ */

void lb_register_iq1_avx2(lb_kernel_set *set) {
    set_dot(set, LOWBIT_TYPE_IQ1_S, dot_iq1_s_avx2, dot_iq1_s_avx2_tokens);
    set_dot(set, LOWBIT_TYPE_IQ1_M, dot_iq1_m_avx2, dot_iq1_m_avx2_tokens);
}
