/*
 * AVX2 (+FMA, F16C) kernels of the lattice formats with sign bits, IQ2_XXS, IQ2_XS, IQ2_S,
 * IQ3_XXS and IQ3_S, with Q8_K activations (one-token kernels only).
 *
 * Each group of 8 elements is a codebook entry of 8 (IQ2) or two of 4 (IQ3) magnitudes and a
 * sign byte, bit j for element j. The sub-block scales are odd integers 2s + 1 over a power of
 * two, so the kernels sum (2s + 1) * (integer dot) exactly and apply d / 8 (or / 4, or 1) once:
 * the results differ from the references (iquants_lattice.c, which sum in float per group) by
 * rounding only. The layouts are summed up in lattice_x86.h.
 */
#include "../../formats/blocks.h"
#include "../../formats/iq_grids.h"
#include "../kernels.h"
#include "x86_common.h"
#include "kquants_x86.h"
#include "lattice_x86.h"

#include <immintrin.h>

/* 32 magnitudes negated where their bit of the four sign bytes is set. */
static inline __m256i apply_signs(__m256i magnitudes, uint32_t signs4) {
    static const uint8_t byte_of_element[32] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    const __m256i bits = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i spread =
        _mm256_shuffle_epi8(_mm256_set1_epi32((int)signs4), load32(byte_of_element));
    const __m256i negative = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
    return _mm256_sub_epi8(_mm256_xor_si256(magnitudes, negative), negative);
}

/* Pairwise s16 sums of w * a for signed w with |w| < 128 and any s8 a (|a| is exact as u8). */
static inline __m256i signed_pairs(__m256i w, const int8_t *activations) {
    const __m256i a = load32(activations);
    return _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w, a));
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

/* The 16 odd sub-scales 2s + 1 of IQ2_XS/IQ2_S as 16-bit scales (widen_scales16). */
static inline void odd_scales16(const uint8_t scales[8], __m256i halves[2]) {
    widen_scales16(iq2_odd_half_scales(scales), halves);
}

static float vec_dot_iq2_xxs_avx2(int64_t n, const void *weights, const void *activations) {
    const block_iq2_xxs *x = weights;
    const block_q8_K *y = activations;
    __m256 acc_f = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const uint8_t *bytes = (const uint8_t *)x[b].qs;
        __m256i acc = _mm256_setzero_si256();
        for (int ib = 0; ib < 8; ib++) {
            const uint8_t *p = bytes + 8 * ib; /* 4 grid indices, then 4 x 7 sign bits, a scale */
            const uint32_t signs_and_scale = load_u32(p + 4);
            const __m256i w = apply_signs(grid8x4(lb_iq2xxs_grid, p[0], p[1], p[2], p[3]),
                                          ksigns4(signs_and_scale));
            const __m256i scale = _mm256_set1_epi16((int16_t)(2 * (signs_and_scale >> 28) + 1));
            acc = _mm256_add_epi32(acc,
                                   _mm256_madd_epi16(signed_pairs(w, y[b].qs + 32 * ib), scale));
        }
        acc_f = accumulate_scaled(acc_f, acc, 0.125f * half_to_float(x[b].d) * y[b].d);
    }
    return hsum_ps(acc_f);
}

static float vec_dot_iq2_xs_avx2(int64_t n, const void *weights, const void *activations) {
    const block_iq2_xs *x = weights;
    const block_q8_K *y = activations;
    __m256 acc_f = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        __m256i halves[2];
        odd_scales16(x[b].scales, halves);
        __m256i acc = _mm256_setzero_si256();
        for (int ib = 0; ib < 8; ib++) {
            const uint16_t *v = x[b].qs + 4 * ib; /* 9-bit index and 7 sign bits each */
            const uint32_t signs = (uint32_t)lb_ksigns_iq2xs[v[0] >> 9] |
                                   (uint32_t)lb_ksigns_iq2xs[v[1] >> 9] << 8 |
                                   (uint32_t)lb_ksigns_iq2xs[v[2] >> 9] << 16 |
                                   (uint32_t)lb_ksigns_iq2xs[v[3] >> 9] << 24;
            const __m256i w = apply_signs(
                grid8x4(lb_iq2xs_grid, v[0] & 511, v[1] & 511, v[2] & 511, v[3] & 511), signs);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(signed_pairs(w, y[b].qs + 32 * ib),
                                                          pick_pair(halves[ib / 4], ib % 4)));
        }
        acc_f = accumulate_scaled(acc_f, acc, 0.125f * half_to_float(x[b].d) * y[b].d);
    }
    return hsum_ps(acc_f);
}

static float vec_dot_iq2_s_avx2(int64_t n, const void *weights, const void *activations) {
    const block_iq2_s *x = weights;
    const block_q8_K *y = activations;
    __m256 acc_f = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        __m256i halves[2];
        odd_scales16(x[b].scales, halves);
        const uint8_t *qs = x[b].qs, *signs = x[b].qs + QK_K / 8;
        __m256i acc = _mm256_setzero_si256();
        for (int ib = 0; ib < 8; ib++) {
            const int qh = x[b].qh[ib]; /* two more index bits per group */
            const __m256i g = grid8x4(lb_iq2s_grid, qs[4 * ib] | ((qh << 8) & 0x300),
                                      qs[4 * ib + 1] | ((qh << 6) & 0x300),
                                      qs[4 * ib + 2] | ((qh << 4) & 0x300),
                                      qs[4 * ib + 3] | ((qh << 2) & 0x300));
            const __m256i w = apply_signs(g, load_u32(signs + 4 * ib));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(signed_pairs(w, y[b].qs + 32 * ib),
                                                          pick_pair(halves[ib / 4], ib % 4)));
        }
        acc_f = accumulate_scaled(acc_f, acc, 0.125f * half_to_float(x[b].d) * y[b].d);
    }
    return hsum_ps(acc_f);
}

static float vec_dot_iq3_xxs_avx2(int64_t n, const void *weights, const void *activations) {
    const block_iq3_xxs *x = weights;
    const block_q8_K *y = activations;
    __m256 acc_f = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const uint8_t *scales_and_signs = x[b].qs + QK_K / 4;
        __m256i acc = _mm256_setzero_si256();
        for (int ib = 0; ib < 8; ib++) {
            const uint32_t aux = load_u32(scales_and_signs + 4 * ib);
            int idx[8];
            for (int i = 0; i < 8; i++) idx[i] = x[b].qs[8 * ib + i];
            const __m256i w = apply_signs(grid4x8(lb_iq3xxs_grid, idx), ksigns4(aux));
            const __m256i scale = _mm256_set1_epi16((int16_t)(2 * (aux >> 28) + 1));
            acc = _mm256_add_epi32(acc,
                                   _mm256_madd_epi16(signed_pairs(w, y[b].qs + 32 * ib), scale));
        }
        acc_f = accumulate_scaled(acc_f, acc, 0.25f * half_to_float(x[b].d) * y[b].d);
    }
    return hsum_ps(acc_f);
}

static float vec_dot_iq3_s_avx2(int64_t n, const void *weights, const void *activations) {
    const block_iq3_s *x = weights;
    const block_q8_K *y = activations;
    __m256 acc_f = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        __m256i acc = _mm256_setzero_si256();
        for (int ib = 0; ib < 8; ib++) {
            const int nibble = (x[b].scales[ib / 2] >> (4 * (ib % 2))) & 0xF;
            const uint8_t *qs = x[b].qs + 8 * ib;
            const int qh = x[b].qh[ib]; /* the ninth index bit of each of the 8 entries */
            int idx[8];
            for (int i = 0; i < 8; i++) idx[i] = qs[i] | (((qh >> i) & 1) << 8);
            const __m256i w =
                apply_signs(grid4x8(lb_iq3s_grid, idx), load_u32(x[b].signs + 4 * ib));
            const __m256i scale = _mm256_set1_epi16((int16_t)(2 * nibble + 1));
            acc = _mm256_add_epi32(acc,
                                   _mm256_madd_epi16(signed_pairs(w, y[b].qs + 32 * ib), scale));
        }
        acc_f = accumulate_scaled(acc_f, acc, half_to_float(x[b].d) * y[b].d);
    }
    return hsum_ps(acc_f);
}


/* ------------------------------------------------------------------------------------------ */

void lb_register_lattice_avx2(lb_kernel_set *set) {
    set->vec_dot[LOWBIT_TYPE_IQ2_XXS] = vec_dot_iq2_xxs_avx2;
    set->vec_dot[LOWBIT_TYPE_IQ2_XS] = vec_dot_iq2_xs_avx2;
    set->vec_dot[LOWBIT_TYPE_IQ2_S] = vec_dot_iq2_s_avx2;
    set->vec_dot[LOWBIT_TYPE_IQ3_XXS] = vec_dot_iq3_xxs_avx2;
    set->vec_dot[LOWBIT_TYPE_IQ3_S] = vec_dot_iq3_s_avx2;
}
