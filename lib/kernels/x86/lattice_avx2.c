/*
 * AVX2 (+FMA, F16C) kernels of the lattice formats with sign bits, IQ2_XXS, IQ2_XS, IQ2_S,
 * IQ3_XXS and IQ3_S, with Q8_K activations, each also in a multi-token version: one body per
 * format (NAME_dot_tokens), the one-token kernel being it with one token
 * (DEFINE_DOT_ENTRY_POINTS), so that every token gets the one-token kernel's result bit for bit.
 *
 * Each group of 8 elements is a codebook entry of 8 (IQ2) or two of 4 (IQ3) magnitudes and a
 * sign byte, bit j for element j. The sub-block scales are odd integers 2s + 1 over a power of
 * two, so the kernels sum (2s + 1) * (integer dot) exactly and apply d / 8 (or / 4, or 1) once:
 * the results differ from the references (iquants_lattice.c, which sum in float per group) by
 * rounding only. The layouts are summed up in lattice_x86.h.
 *
 * Most of the time goes into assembling the 32 signed weights of a sub-block: a scalar load and
 * an insert per codebook entry, a scalar table lookup per 7-bit sign field, a handful of
 * shuffles for the signs. The multi-token kernels do that once per weight row and share it: per
 * token and sub-block there remain one load, VPMADDUBSW, VPMADDWD by the scale and an add. For
 * that the weights are the unsigned 64 + w (offset_signed) that VPMADDUBSW multiplies with the
 * activations as they are, the 64's share coming off through the bsums once per super-block
 * (minus_offsets, lattice_x86.h), where the sign trick (|a| times w with a's sign) took two more
 * instructions per token. The sums stay exact: pairs of products below 2 * 127 * 128 < 2^15.
 * Measured on an Intel Xeon (Sapphire Rapids class, busy with other work; lowbit_matmul 4096 x
 * 4096, medians of alternating runs, sign trick -> these): one-thread GEMV IQ2_XXS 1.30 -> 1.27
 * ms, IQ2_XS 1.55 -> 1.54, IQ2_S 1.37 -> 1.37, IQ3_XXS 1.65 -> 1.67, IQ3_S 2.06 -> 2.04; 32
 * tokens on two threads 2.5-3 times as fast, IQ2_XXS 17 -> 42 GFLOP/s, IQ2_XS 14 -> 38, IQ2_S
 * 16 -> 41, IQ3_XXS 13 -> 36, IQ3_S 10 -> 31. IQ3_S takes its sub-block scales from the decoded
 * half scales by one shuffle (2.14 -> 2.09 ms against a scalar nibble and a broadcast); the same
 * for IQ2_XXS and IQ3_XXS, whose scalar scale comes with the sign word they load anyway, was
 * slower (1.30 -> 1.50, 1.70 -> 1.81 ms).
 */
#include "../../formats/blocks.h"
#include "../../formats/iq_grids.h"
#include "../kernels.h"
#include "x86_common.h"
#include "kquants_x86.h"
#include "lattice_x86.h"

#include <immintrin.h>

/* 32 magnitudes u as the unsigned 64 + w (lattice_x86.h), w = -u where their bit of the four
   sign bytes is set, u elsewhere. */
static inline __m256i offset_signed(__m256i magnitudes, uint32_t signs4) {
    static const uint8_t byte_of_element[32] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    const __m256i bits = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i spread =
        _mm256_shuffle_epi8(_mm256_set1_epi32((int)signs4), load32(byte_of_element));
    const __m256i negative = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
    /* (u ^ n) - n + 64 with n = -1 (negative) or 0 */
    return _mm256_add_epi8(_mm256_xor_si256(magnitudes, negative),
                           _mm256_sub_epi8(_mm256_set1_epi8(64), negative));
}

static inline __m256i grid8x4(const uint64_t *grid, int i0, int i1, int i2, int i3) {
    return _mm256_set_epi64x((long long)grid[i3], (long long)grid[i2], (long long)grid[i1],
                             (long long)grid[i0]);
}

static inline __m256i grid4x8(const uint32_t *grid, const int idx[8]) {
    return _mm256_set_epi32((int)grid[idx[7]], (int)grid[idx[6]], (int)grid[idx[5]],
                            (int)grid[idx[4]], (int)grid[idx[3]], (int)grid[idx[2]],
                            (int)grid[idx[1]], (int)grid[idx[0]]);
}

/* Four 7-bit sign fields (bits 0-27 of `packed`) expanded to even-parity sign bytes. */
static inline uint32_t ksigns4(uint32_t packed) {
    uint32_t out = 0;
    for (int l = 0; l < 4; l++) {
        out |= (uint32_t)lb_ksigns_iq2xs[(packed >> (7 * l)) & 127] << (8 * l);
    }
    return out;
}

/* The activation rows of a multi-token call, their float accumulators zeroed. */
static inline ALWAYS_INLINE void start_tokens(const void *activations, size_t stride,
                                              int n_tokens, const block_q8_K *y[],
                                              __m256 acc_f[]) {
    for (int t = 0; t < n_tokens; t++) {
        y[t] = token_row(activations, stride, t);
        acc_f[t] = _mm256_setzero_ps();
    }
}

/* The super-block's integer accumulators of the tokens, starting at minus the 64s' share
   (half_words: the 16 odd half scales, decoded once for all the tokens). */
static inline ALWAYS_INLINE void start_at_minus_offsets(__m256i acc[], __m256i half_words,
                                                        const block_q8_K *const y[], int64_t b,
                                                        int n_tokens) {
    UNROLL_SHORT
    for (int t = 0; t < n_tokens; t++) acc[t] = minus_offsets(half_words, y[t][b].bsums);
}

/* acc[t] + the products of sub-block ib's 32 weights (w: 64 + w, offset_signed, made once for
   all the tokens) with token t's activations, each pair times its 16-bit scale. */
static inline ALWAYS_INLINE void add_sub_block(__m256i acc[], __m256i w,
                                               const block_q8_K *const y[], int64_t b, int ib,
                                               __m256i scale, int n_tokens) {
    UNROLL_SHORT
    for (int t = 0; t < n_tokens; t++) {
        const __m256i pairs = _mm256_maddubs_epi16(w, load32(y[t][b].qs + 32 * ib));
        acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(pairs, scale));
    }
}

/* acc_f[t] + scale_x * d_t * (float)acc[t] (d_t: token t's block scale, scale_x times it
   first, as the one-token kernel multiplies them). */
static inline ALWAYS_INLINE void accumulate_tokens(__m256 acc_f[], const __m256i acc[],
                                                   float scale_x, const block_q8_K *const y[],
                                                   int64_t b, int n_tokens) {
    UNROLL_SHORT
    for (int t = 0; t < n_tokens; t++) {
        acc_f[t] = accumulate_scaled(acc_f[t], acc[t], scale_x * y[t][b].d);
    }
}

static inline ALWAYS_INLINE void finish_tokens(const __m256 acc_f[], int n_tokens, float *out) {
    for (int t = 0; t < n_tokens; t++) out[t] = hsum_ps(acc_f[t]);
}

/* IQ2_XXS: the eight sign and scale words of a block, every other 32-bit word of qs. */
static inline __m256i iq2_xxs_aux_words(const uint16_t qs[32]) {
    const __m256i odd_words = _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7);
    const __m256i low = _mm256_permutevar8x32_epi32(load32(qs), odd_words);
    const __m256i high = _mm256_permutevar8x32_epi32(load32(qs + 16), odd_words);
    return _mm256_blend_epi32(low, high, 0xF0);
}

static inline ALWAYS_INLINE void iq2_xxs_dot_tokens(int64_t n, const void *weights,
                                                    const void *activations, size_t stride,
                                                    int n_tokens, float *out) {
    const block_iq2_xxs *x = weights;
    const block_q8_K *y[LB_DOT_TOKENS];
    __m256 acc_f[LB_DOT_TOKENS];
    start_tokens(activations, stride, n_tokens, y, acc_f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const uint8_t *bytes = (const uint8_t *)x[b].qs;
        __m256i acc[LB_DOT_TOKENS];
        start_at_minus_offsets(acc, odd_half_words_of_words(iq2_xxs_aux_words(x[b].qs)), y, b,
                               n_tokens);
        for (int ib = 0; ib < 8; ib++) {
            const uint8_t *p = bytes + 8 * ib; /* 4 grid indices, then 4 x 7 sign bits, a scale */
            const uint32_t signs_and_scale = load_u32(p + 4);
            const __m256i w = offset_signed(grid8x4(lb_iq2xxs_grid, p[0], p[1], p[2], p[3]),
                                            ksigns4(signs_and_scale));
            const __m256i scale = _mm256_set1_epi16((int16_t)(2 * (signs_and_scale >> 28) + 1));
            add_sub_block(acc, w, y, b, ib, scale, n_tokens);
        }
        accumulate_tokens(acc_f, acc, 0.125f * half_to_float(x[b].d), y, b, n_tokens);
    }
    finish_tokens(acc_f, n_tokens, out);
}

DEFINE_DOT_ENTRY_POINTS(iq2_xxs, iq2_xxs_dot_tokens)

static inline ALWAYS_INLINE void iq2_xs_dot_tokens(int64_t n, const void *weights,
                                                   const void *activations, size_t stride,
                                                   int n_tokens, float *out) {
    const block_iq2_xs *x = weights;
    const block_q8_K *y[LB_DOT_TOKENS];
    __m256 acc_f[LB_DOT_TOKENS];
    start_tokens(activations, stride, n_tokens, y, acc_f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const __m128i half_bytes = iq2_odd_half_scales(x[b].scales);
        __m256i halves[2];
        widen_scales16(half_bytes, halves);
        __m256i acc[LB_DOT_TOKENS];
        start_at_minus_offsets(acc, _mm256_cvtepu8_epi16(half_bytes), y, b, n_tokens);
        for (int ib = 0; ib < 8; ib++) {
            const uint16_t *v = x[b].qs + 4 * ib; /* 9-bit index and 7 sign bits each */
            const uint32_t signs = (uint32_t)lb_ksigns_iq2xs[v[0] >> 9] |
                                   (uint32_t)lb_ksigns_iq2xs[v[1] >> 9] << 8 |
                                   (uint32_t)lb_ksigns_iq2xs[v[2] >> 9] << 16 |
                                   (uint32_t)lb_ksigns_iq2xs[v[3] >> 9] << 24;
            const __m256i w = offset_signed(
                grid8x4(lb_iq2xs_grid, v[0] & 511, v[1] & 511, v[2] & 511, v[3] & 511), signs);
            add_sub_block(acc, w, y, b, ib, pick_pair(halves[ib / 4], ib % 4), n_tokens);
        }
        accumulate_tokens(acc_f, acc, 0.125f * half_to_float(x[b].d), y, b, n_tokens);
    }
    finish_tokens(acc_f, n_tokens, out);
}

DEFINE_DOT_ENTRY_POINTS(iq2_xs, iq2_xs_dot_tokens)

static inline ALWAYS_INLINE void iq2_s_dot_tokens(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_iq2_s *x = weights;
    const block_q8_K *y[LB_DOT_TOKENS];
    __m256 acc_f[LB_DOT_TOKENS];
    start_tokens(activations, stride, n_tokens, y, acc_f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const __m128i half_bytes = iq2_odd_half_scales(x[b].scales);
        __m256i halves[2];
        widen_scales16(half_bytes, halves);
        const uint8_t *qs = x[b].qs, *signs = x[b].qs + QK_K / 8;
        __m256i acc[LB_DOT_TOKENS];
        start_at_minus_offsets(acc, _mm256_cvtepu8_epi16(half_bytes), y, b, n_tokens);
        for (int ib = 0; ib < 8; ib++) {
            const int qh = x[b].qh[ib]; /* two more index bits per group */
            const __m256i g = grid8x4(lb_iq2s_grid, qs[4 * ib] | ((qh << 8) & 0x300),
                                      qs[4 * ib + 1] | ((qh << 6) & 0x300),
                                      qs[4 * ib + 2] | ((qh << 4) & 0x300),
                                      qs[4 * ib + 3] | ((qh << 2) & 0x300));
            const __m256i w = offset_signed(g, load_u32(signs + 4 * ib));
            add_sub_block(acc, w, y, b, ib, pick_pair(halves[ib / 4], ib % 4), n_tokens);
        }
        accumulate_tokens(acc_f, acc, 0.125f * half_to_float(x[b].d), y, b, n_tokens);
    }
    finish_tokens(acc_f, n_tokens, out);
}

DEFINE_DOT_ENTRY_POINTS(iq2_s, iq2_s_dot_tokens)

static inline ALWAYS_INLINE void iq3_xxs_dot_tokens(int64_t n, const void *weights,
                                                    const void *activations, size_t stride,
                                                    int n_tokens, float *out) {
    const block_iq3_xxs *x = weights;
    const block_q8_K *y[LB_DOT_TOKENS];
    __m256 acc_f[LB_DOT_TOKENS];
    start_tokens(activations, stride, n_tokens, y, acc_f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const uint8_t *scales_and_signs = x[b].qs + QK_K / 4;
        __m256i acc[LB_DOT_TOKENS];
        start_at_minus_offsets(acc, odd_half_words_of_words(load32(scales_and_signs)), y, b,
                               n_tokens);
        for (int ib = 0; ib < 8; ib++) {
            const uint32_t aux = load_u32(scales_and_signs + 4 * ib);
            int idx[8];
            for (int i = 0; i < 8; i++) idx[i] = x[b].qs[8 * ib + i];
            const __m256i w = offset_signed(grid4x8(lb_iq3xxs_grid, idx), ksigns4(aux));
            const __m256i scale = _mm256_set1_epi16((int16_t)(2 * (aux >> 28) + 1));
            add_sub_block(acc, w, y, b, ib, scale, n_tokens);
        }
        accumulate_tokens(acc_f, acc, 0.25f * half_to_float(x[b].d), y, b, n_tokens);
    }
    finish_tokens(acc_f, n_tokens, out);
}

DEFINE_DOT_ENTRY_POINTS(iq3_xxs, iq3_xxs_dot_tokens)

static inline ALWAYS_INLINE void iq3_s_dot_tokens(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_iq3_s *x = weights;
    const block_q8_K *y[LB_DOT_TOKENS];
    __m256 acc_f[LB_DOT_TOKENS];
    start_tokens(activations, stride, n_tokens, y, acc_f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const __m128i half_bytes = iq3_s_odd_half_scales(x[b].scales);
        __m256i halves[2];
        widen_scales16(half_bytes, halves);
        __m256i acc[LB_DOT_TOKENS];
        start_at_minus_offsets(acc, _mm256_cvtepu8_epi16(half_bytes), y, b, n_tokens);
        for (int ib = 0; ib < 8; ib++) {
            const uint8_t *qs = x[b].qs + 8 * ib;
            const int qh = x[b].qh[ib]; /* the ninth index bit of each of the 8 entries */
            int idx[8];
            for (int i = 0; i < 8; i++) idx[i] = qs[i] | (((qh >> i) & 1) << 8);
            const __m256i w =
                offset_signed(grid4x8(lb_iq3s_grid, idx), load_u32(x[b].signs + 4 * ib));
            /* both halves of sub-block ib have its scale */
            add_sub_block(acc, w, y, b, ib, pick_pair(halves[ib / 4], ib % 4), n_tokens);
        }
        accumulate_tokens(acc_f, acc, half_to_float(x[b].d), y, b, n_tokens);
    }
    finish_tokens(acc_f, n_tokens, out);
}

DEFINE_DOT_ENTRY_POINTS(iq3_s, iq3_s_dot_tokens)

/* ------------------------------------------------------------------------------------------ */

void lb_register_lattice_avx2(lb_kernel_set *set) {
    set_dot(set, LOWBIT_TYPE_IQ2_XXS, dot_iq2_xxs, dot_iq2_xxs_tokens);
    set_dot(set, LOWBIT_TYPE_IQ2_XS, dot_iq2_xs, dot_iq2_xs_tokens);
    set_dot(set, LOWBIT_TYPE_IQ2_S, dot_iq2_s, dot_iq2_s_tokens);
    set_dot(set, LOWBIT_TYPE_IQ3_XXS, dot_iq3_xxs, dot_iq3_xxs_tokens);
    set_dot(set, LOWBIT_TYPE_IQ3_S, dot_iq3_s, dot_iq3_s_tokens);
}
