/*
 * AVX-512 (F, BW, VL) + VNNI kernels of the most used formats, kept where they beat the AVX2
 * kernels they override: Q4_0 with Q8_0 activations and Q6_K with Q8_K activations. Q8_0 and
 * Q4_K were written too and measured slower than AVX2 (single-thread GEMV 4096 x 4096, AMD EPYC
 * with AVX-512: Q8_0 0.63 vs 0.60 ms, Q4_K 0.61 vs 0.54 ms; Q4_0 0.71 vs 0.75 ms, Q6_K 0.53 vs
 * 0.63 ms), so they were removed: those two GEMVs are bound by memory, and the 512-bit versions
 * only added the work of pairing blocks. lb_register_avx512_vnni installs them only where the CPU
 * has VNNI.
 *
 * Integer sums are exact and equal to the scalar references':
 * - Q4_0 takes two blocks per 512-bit register (each block's 32 elements in one 256-bit half).
 *   VPDPBUSD multiplies unsigned by signed bytes, so the weights travel as their stored nibble
 *   q = w + 8 and the offset comes out through a second VPDPBUSD of 8 against the same
 *   activations; exact for every activation byte, -128 included (unlike the sign trick). Each
 *   block's eight s32 lanes are converted to float and accumulated with FMA at the block's
 *   scale, so the result differs from the reference only by the order of the float additions.
 * - Q6_K takes 64 elements per register, four whole sub-blocks of 16: the unsigned levels
 *   u = w + 32 meet the activations in VPMADDUBSW (pairs to s16, no saturation:
 *   2 * 63 * 128 < 2^15) and VPDPWSSD multiplies those pairs by each lane's 16-bit sub-block
 *   scale and accumulates in s32. The offset's share, 32 * sum_j scale_j * bsum_j, comes off
 *   through Q8_K's bsums (which must hold the sums of qs, as in kquants_avx2.c), and the
 *   super-block's float combination is the reference's own, so the result is the reference's
 *   bit for bit.
 */
#include "../../formats/blocks.h"
#include "../kernels.h"

#include <immintrin.h>

static inline float half_to_float(lb_half h) { return _cvtsh_ss(h); }

/* Two 32-byte blocks' quants in one register: block p in the low half, block q in the high. */
static inline __m512i load_two_blocks(const void *p, const void *q) {
    const __m256i lo = _mm256_loadu_si256((const __m256i *)p);
    const __m256i hi = _mm256_loadu_si256((const __m256i *)q);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* Lanes 0..7 at scale s0, lanes 8..15 at s1. */
static inline __m512 two_scales(float s0, float s1) {
    return _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(s0), _mm512_set1_ps(s1));
}

/* ------------------------------------------------------------------------------------------ */
/* Q4_0 with Q8_0 activations                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Exact s32 sums of (u - offset) * a over four bytes per lane, u unsigned. */
static inline __m512i offset_dot(__m512i u, __m512i a, __m512i offset_bytes) {
    const __m512i zero = _mm512_setzero_si512();
    return _mm512_sub_epi32(_mm512_dpbusd_epi32(zero, u, a),
                            _mm512_dpbusd_epi32(zero, offset_bytes, a));
}

static inline __m256i offset_dot256(__m256i u, __m256i a, __m256i offset_bytes) {
    const __m256i zero = _mm256_setzero_si256();
    return _mm256_sub_epi32(_mm256_dpbusd_epi32(zero, u, a),
                            _mm256_dpbusd_epi32(zero, offset_bytes, a));
}

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline int32_t hsum256_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* Two Q4_0 blocks' nibbles in element order: block p's low nibbles (elements 0..15), its high
   nibbles (16..31), then block q's, one per 128-bit lane. */
static inline __m512i two_q4_0_levels(const uint8_t *p, const uint8_t *q) {
    const __m256i packed = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)q),
                                            _mm_loadu_si128((const __m128i *)p));
    const __m512i spread = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3),
                                                    _mm512_castsi256_si512(packed));
    const __m512i shifted = _mm512_srlv_epi64(spread, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
    return _mm512_and_si512(shifted, _mm512_set1_epi8(0x0F));
}

static float dot_q4_0(int64_t n, const void *weights, const void *activations) {
    const block_q4_0 *x = weights;
    const block_q8_0 *y = activations;
    const int64_t nb = n / QK4_0;
    const __m512i eight = _mm512_set1_epi8(8);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 3 < nb; b += 4) {
        const __m512i s0 = offset_dot(two_q4_0_levels(x[b].qs, x[b + 1].qs),
                                      load_two_blocks(y[b].qs, y[b + 1].qs), eight);
        const __m512i s1 = offset_dot(two_q4_0_levels(x[b + 2].qs, x[b + 3].qs),
                                      load_two_blocks(y[b + 2].qs, y[b + 3].qs), eight);
        const __m512 d0 = two_scales(half_to_float(x[b].d) * half_to_float(y[b].d),
                                     half_to_float(x[b + 1].d) * half_to_float(y[b + 1].d));
        const __m512 d1 = two_scales(half_to_float(x[b + 2].d) * half_to_float(y[b + 2].d),
                                     half_to_float(x[b + 3].d) * half_to_float(y[b + 3].d));
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0), d0, acc0);
        acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1), d1, acc1);
    }
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    __m256 tail = _mm256_setzero_ps();
    for (; b < nb; b++) {
        const __m128i packed = _mm_loadu_si128((const __m128i *)x[b].qs);
        const __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
                                           _mm256_set1_epi8(0x0F));
        const __m256i s = offset_dot256(u, _mm256_loadu_si256((const __m256i *)y[b].qs),
                                        _mm256_set1_epi8(8));
        const float d = half_to_float(x[b].d) * half_to_float(y[b].d);
        tail = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d), tail);
    }
    return sum + hsum256(tail);
}

/* ------------------------------------------------------------------------------------------ */
/* Q6_K with Q8_K activations                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Index vectors for VPERMW that give each s16 lane (a pair of elements) of a 64-element span
   its sub-block scale: quarter q of a Q6_K super-block covers sub-blocks 4q..4q + 3, 8 lanes
   each. */
static const int16_t kQ6KPick[4][32] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
     2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5,
     6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
    {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9,
     10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
    {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13,
     14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15},
};

static inline __m512i scales_for(const int16_t index[32], __m512i scales16) {
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(index), scales16);
}

static float dot_q6_K(int64_t n, const void *weights, const void *activations) {
    const block_q6_K *x = weights;
    const block_q8_K *y = activations;
    const __m512i shift01 = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
    const __m512i shift23 = _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6);
    const __m512i low4 = _mm512_set1_epi8(0x0F), top2 = _mm512_set1_epi8(0x30);
    __m512 facc = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        const __m256i scales_lo =
            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[b].scales));
        /* the offset's share: 32 * sum_j scale_j * bsum_j */
        const __m256i offset = _mm256_madd_epi16(scales_lo,
                                                 _mm256_loadu_si256((const __m256i *)y[b].bsums));
        const __m512i scales16 = _mm512_castsi256_si512(scales_lo);
        __m512i acc = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            /* ql[64h..64h+63]: rows 0 and 1 of this half in the low nibbles, rows 2 and 3 in the
               high ones; qh[32h + l] holds the top bits of row k at bit 2k */
            const __m512i low = _mm512_loadu_si512(x[b].ql + 64 * h);
            const __m256i hb = _mm256_loadu_si256((const __m256i *)(x[b].qh + 32 * h));
            const __m512i high = _mm512_inserti64x4(_mm512_castsi256_si512(hb), hb, 1);
            const __m512i u01 = _mm512_or_si512(
                _mm512_and_si512(low, low4),
                _mm512_and_si512(_mm512_slli_epi16(_mm512_srlv_epi64(high, shift01), 4), top2));
            const __m512i u23 = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16(low, 4), low4),
                _mm512_and_si512(_mm512_slli_epi16(_mm512_srlv_epi64(high, shift23), 4), top2));
            const int8_t *a = y[b].qs + 128 * h;
            const __m512i p01 = _mm512_maddubs_epi16(u01, _mm512_loadu_si512(a));
            const __m512i p23 = _mm512_maddubs_epi16(u23, _mm512_loadu_si512(a + 64));
            acc = _mm512_dpwssd_epi32(acc, p01, scales_for(kQ6KPick[2 * h], scales16));
            acc = _mm512_dpwssd_epi32(acc, p23,
                                      scales_for(kQ6KPick[2 * h + 1], scales16));
        }
        /* the lanes' exact sums, the offset's share taken off lane by lane, meet the
           super-block's scale in a float vector; the lanes are added up once per row */
        const __m512i sums = _mm512_sub_epi32(acc, _mm512_slli_epi32(_mm512_zextsi256_si512(offset), 5));
        facc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_set1_ps(half_to_float(x[b].d) * y[b].d),
                               facc);
    }
    return _mm512_reduce_add_ps(facc);
}

/* Registered at LB_CPU_AVX512_VNNI (the kernels use vpdpbusd/vpdpwssd). */
void lb_register_avx512_vnni(lb_kernel_set *set) {
    set->vec_dot[LOWBIT_TYPE_Q4_0] = dot_q4_0;
    set->vec_dot[LOWBIT_TYPE_Q6_K] = dot_q6_K;
    lb_register_legacy_avx512(set); /* legacy_avx512.c: the other 32-element and float formats */
}
