/*
 * AVX2 kernels of the interleaved layouts Q4_0x8, Q8_0x8, IQ4_NLx8 and MXFP4x8 (interleaved.h):
 * one 256-bit register holds 4 bytes of each of the 8 rows of a group, so a broadcast of 4
 * activation bytes feeds all 8 rows and the 8 row sums come out in the 8 int32 lanes.
 *
 * Tokens go in tiles of up to 4: each weight chunk is loaded and decoded once per tile and meets
 * the tile's 4 activation quadruples, the 4 tokens' sums staying in registers.
 *
 * Exactness (the outputs are the scalar reference's bit for bit):
 * - Q4_0: the stored nibble q = w + 8 is unsigned, so maddubs(q, a) takes it directly; each int16
 *   lane sums two products (|.| <= 2 * 15 * 128) and 8 maddubs results per block add up in int16
 *   without overflow (8 * 3840 = 30720 < 32768), for every activation byte. madd by ones gives
 *   the row's sum of q * a in its int32 lane; 8 times the activation block's level sum (computed
 *   once per token by the caller) takes the offset off: sum (q - 8) a = sum q a - 8 sum a.
 * - Q8_0: the sign trick, maddubs(|w|, sign(a, w)), each maddubs widened by madd at once (two
 *   products reach 2 * 128 * 127); exact for activations in -127..127, which lowbit's Q8_0
 *   quantizers produce (as in legacy_avx2.c).
 * - IQ4_NL: the codes become signed levels (-127..113) through VPSHUFB of the table, then the
 *   sign trick as for Q8_0 (pairs reach 2 * 127 * 127, so each maddubs is widened at once). The
 *   unsigned form of the VNNI kernel (levels + 128) does not fit maddubs: its pairs would reach
 *   2 * 241 * 127 and saturate.
 * - MXFP4: the codes become the doubled E2M1 values plus 12 (0..24, unsigned) through VPSHUFB, the
 *   maddubs operand as is; pairs reach 2 * 24 * 128, so the 4 low-nibble and the 4 high-nibble
 *   results add up in int16 separately (4 * 6144 = 24576 < 32768) before madd widens them, for
 *   every activation byte; 12 times the activation block's level sum takes the offset off. The 8
 *   E8M0 scales become 2^(e - 128) by shifts (eight_e8m0_halves), subnormals included.
 * - The float side per lane is the reference's: sum = sum + (float)sumi * (d_w * d_a), separate
 *   multiplies and adds (no FMA), blocks in order.
 */
#include "../../formats/blocks.h"
#include "../../formats/fp4.h"
#include "../kernels.h"
#include "x86_common.h"

#include <immintrin.h>

/* One block group of 8 rows: 8 fp16 scales, then the chunks (32 bytes each). */
enum {
    Q4_0_X8_BYTES = 8 * 18,
    Q8_0_X8_BYTES = 8 * 34,
    IQ4_NL_X8_BYTES = 8 * 18,
    MXFP4_X8_BYTES = 8 * 17,
    SCALES_BYTES = 16,
    E8M0_SCALES_BYTES = 8
};

/* 4 activation bytes from q, broadcast to every int32 lane. */
static inline ALWAYS_INLINE __m256i broadcast4(const int8_t *q) {
    int32_t v;
    memcpy(&v, q, sizeof v);
    return _mm256_set1_epi32(v);
}

/* The 8 rows' fp16 scales times the activation block's scale (exact conversions, one rounding
   per product, as the reference's d_w * d_a). */
static inline ALWAYS_INLINE __m256 block_scales(const uint8_t *bg, const block_q8_0 *a) {
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)bg));
    return _mm256_mul_ps(dw, _mm256_set1_ps(_cvtsh_ss(a->d)));
}

/* acc + (float)sums * scales, the reference's unfused order. */
static inline ALWAYS_INLINE __m256 add_scaled(__m256 acc, __m256i sums, __m256 scales) {
    return _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sums), scales));
}

/* ------------------------------------------------------------------------------------------ */
/* Q4_0x8                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* nt (1..4, a constant after inlining) tokens against one group; token t's activation blocks at
   a + t * nb, its block sums at sums + t * nb. */
static inline ALWAYS_INLINE void q4_0_x8_tile(int64_t nb, const uint8_t *group, const block_q8_0 *a,
                                       const int32_t *sums, int nt, float *out,
                                       int64_t out_stride) {
    const __m256i low4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *bg = group + (size_t)b * Q4_0_X8_BYTES;
        prefetch_weights(bg, Q4_0_X8_BYTES);
        __m256i pairs[4];
        for (int t = 0; t < nt; t++) pairs[t] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i packed =
                _mm256_loadu_si256((const __m256i *)(bg + SCALES_BYTES + 32 * c));
            const __m256i lo = _mm256_and_si256(packed, low4);                       /* elements 4c.. */
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4); /* 16 + 4c.. */
            for (int t = 0; t < nt; t++) {
                const int8_t *q = a[t * nb + b].qs;
                pairs[t] = _mm256_add_epi16(pairs[t], _mm256_maddubs_epi16(lo, broadcast4(q + 4 * c)));
                pairs[t] =
                    _mm256_add_epi16(pairs[t], _mm256_maddubs_epi16(hi, broadcast4(q + 16 + 4 * c)));
            }
        }
        for (int t = 0; t < nt; t++) {
            const __m256i sumi = _mm256_sub_epi32(_mm256_madd_epi16(pairs[t], ones),
                                                  _mm256_set1_epi32(8 * sums[t * nb + b]));
            acc[t] = add_scaled(acc[t], sumi, block_scales(bg, &a[t * nb + b]));
        }
    }
    for (int t = 0; t < nt; t++) _mm256_storeu_ps(out + t * out_stride, acc[t]);
}

/* ------------------------------------------------------------------------------------------ */
/* Q8_0x8                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static inline ALWAYS_INLINE void q8_0_x8_tile(int64_t nb, const uint8_t *group, const block_q8_0 *a,
                                       const int32_t *sums, int nt, float *out,
                                       int64_t out_stride) {
    (void)sums;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *bg = group + (size_t)b * Q8_0_X8_BYTES;
        prefetch_weights(bg, Q8_0_X8_BYTES);
        __m256i sumi[4];
        for (int t = 0; t < nt; t++) sumi[t] = _mm256_setzero_si256();
        for (int c = 0; c < 8; c++) {
            const __m256i w = _mm256_loadu_si256((const __m256i *)(bg + SCALES_BYTES + 32 * c));
            const __m256i magnitude = _mm256_sign_epi8(w, w);
            for (int t = 0; t < nt; t++) {
                const __m256i signed_a = _mm256_sign_epi8(broadcast4(a[t * nb + b].qs + 4 * c), w);
                sumi[t] = _mm256_add_epi32(
                    sumi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, signed_a), ones));
            }
        }
        for (int t = 0; t < nt; t++) {
            acc[t] = add_scaled(acc[t], sumi[t], block_scales(bg, &a[t * nb + b]));
        }
    }
    for (int t = 0; t < nt; t++) _mm256_storeu_ps(out + t * out_stride, acc[t]);
}

/* ------------------------------------------------------------------------------------------ */
/* IQ4_NLx8                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* One token's exact sum of one chunk half: levels w (signed, |w| = magnitude) times the
   broadcast activation quadruple. */
static inline ALWAYS_INLINE __m256i signed_chunk_sum(__m256i sumi, __m256i w, __m256i magnitude,
                                                     const int8_t *q) {
    const __m256i signed_a = _mm256_sign_epi8(broadcast4(q), w);
    return _mm256_add_epi32(
        sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, signed_a), _mm256_set1_epi16(1)));
}

static inline ALWAYS_INLINE void iq4_nl_x8_tile(int64_t nb, const uint8_t *group,
                                                const block_q8_0 *a, const int32_t *sums, int nt,
                                                float *out, int64_t out_stride) {
    (void)sums;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i levels =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lb_kvalues_iq4nl));
    __m256 acc[4];
    for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *bg = group + (size_t)b * IQ4_NL_X8_BYTES;
        prefetch_weights(bg, IQ4_NL_X8_BYTES);
        __m256i sumi[4];
        for (int t = 0; t < nt; t++) sumi[t] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i packed =
                _mm256_loadu_si256((const __m256i *)(bg + SCALES_BYTES + 32 * c));
            const __m256i lo = _mm256_shuffle_epi8(levels, _mm256_and_si256(packed, low4));
            const __m256i hi =
                _mm256_shuffle_epi8(levels, _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4));
            const __m256i lo_magnitude = _mm256_abs_epi8(lo), hi_magnitude = _mm256_abs_epi8(hi);
            for (int t = 0; t < nt; t++) {
                const int8_t *q = a[t * nb + b].qs;
                sumi[t] = signed_chunk_sum(sumi[t], lo, lo_magnitude, q + 4 * c);
                sumi[t] = signed_chunk_sum(sumi[t], hi, hi_magnitude, q + 16 + 4 * c);
            }
        }
        for (int t = 0; t < nt; t++) {
            acc[t] = add_scaled(acc[t], sumi[t], block_scales(bg, &a[t * nb + b]));
        }
    }
    for (int t = 0; t < nt; t++) _mm256_storeu_ps(out + t * out_stride, acc[t]);
}

/* ------------------------------------------------------------------------------------------ */
/* MXFP4x8                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* The 8 rows' E8M0 scales halved times the activation block's scale (one rounding per product,
   as the reference's d_a * d_w). */
static inline ALWAYS_INLINE __m256 e8m0_block_scales(const uint8_t *bg, const block_q8_0 *a) {
    return _mm256_mul_ps(eight_e8m0_halves(bg, 1), _mm256_set1_ps(_cvtsh_ss(a->d)));
}

static inline ALWAYS_INLINE void mxfp4_x8_tile(int64_t nb, const uint8_t *group,
                                               const block_q8_0 *a, const int32_t *sums, int nt,
                                               float *out, int64_t out_stride) {
    const __m256i low4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const __m256i unsigned_levels =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)fp4_doubled_plus12));
    __m256 acc[4];
    for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *bg = group + (size_t)b * MXFP4_X8_BYTES;
        prefetch_weights(bg, MXFP4_X8_BYTES);
        __m256i lo_pairs[4], hi_pairs[4];
        for (int t = 0; t < nt; t++) lo_pairs[t] = hi_pairs[t] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i packed =
                _mm256_loadu_si256((const __m256i *)(bg + E8M0_SCALES_BYTES + 32 * c));
            const __m256i lo = _mm256_shuffle_epi8(unsigned_levels, _mm256_and_si256(packed, low4));
            const __m256i hi = _mm256_shuffle_epi8(
                unsigned_levels, _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4));
            for (int t = 0; t < nt; t++) {
                const int8_t *q = a[t * nb + b].qs;
                lo_pairs[t] =
                    _mm256_add_epi16(lo_pairs[t], _mm256_maddubs_epi16(lo, broadcast4(q + 4 * c)));
                hi_pairs[t] = _mm256_add_epi16(
                    hi_pairs[t], _mm256_maddubs_epi16(hi, broadcast4(q + 16 + 4 * c)));
            }
        }
        for (int t = 0; t < nt; t++) {
            const __m256i offset_sums = _mm256_add_epi32(_mm256_madd_epi16(lo_pairs[t], ones),
                                                         _mm256_madd_epi16(hi_pairs[t], ones));
            const __m256i sumi =
                _mm256_sub_epi32(offset_sums, _mm256_set1_epi32(12 * sums[t * nb + b]));
            acc[t] = add_scaled(acc[t], sumi, e8m0_block_scales(bg, &a[t * nb + b]));
        }
    }
    for (int t = 0; t < nt; t++) _mm256_storeu_ps(out + t * out_stride, acc[t]);
}

/* Whole tiles of MAX tokens, then one tile of the rest; each call of TILE has a constant token
   count, so its token loops unroll. */
#define DEFINE_GROUP_KERNEL(NAME, TILE, MAX)                                                      \
    static void NAME(int64_t nb, const void *group, const void *activations,                     \
                     const int32_t *sums, int64_t n_tokens, float *out, int64_t out_stride) {    \
        const block_q8_0 *a = activations;                                                       \
        int64_t t = 0;                                                                           \
        for (; t + (MAX) <= n_tokens; t += (MAX)) {                                              \
            TILE(nb, group, a + t * nb, sums + t * nb, MAX, out + t * out_stride, out_stride);   \
        }                                                                                        \
        switch (n_tokens - t) {                                                                  \
        case 3: TILE(nb, group, a + t * nb, sums + t * nb, 3, out + t * out_stride, out_stride); \
            break;                                                                               \
        case 2: TILE(nb, group, a + t * nb, sums + t * nb, 2, out + t * out_stride, out_stride); \
            break;                                                                               \
        case 1: TILE(nb, group, a + t * nb, sums + t * nb, 1, out + t * out_stride, out_stride); \
            break;                                                                               \
        default: break;                                                                          \
        }                                                                                        \
    }

DEFINE_GROUP_KERNEL(q4_0_x8, q4_0_x8_tile, 4)
DEFINE_GROUP_KERNEL(q8_0_x8, q8_0_x8_tile, 4)
DEFINE_GROUP_KERNEL(iq4_nl_x8, iq4_nl_x8_tile, 4)
DEFINE_GROUP_KERNEL(mxfp4_x8, mxfp4_x8_tile, 4)

void lb_register_interleaved_avx2(lb_kernel_set *set) {
    set->interleaved[LB_IL_Q4_0_X8] = q4_0_x8;
    set->interleaved[LB_IL_Q8_0_X8] = q8_0_x8;
    set->interleaved[LB_IL_IQ4_NL_X8] = iq4_nl_x8;
    set->interleave_rows[LOWBIT_TYPE_Q4_0] = 8;
    set->interleave_rows[LOWBIT_TYPE_Q8_0] = 8;
    /* IQ4_NLx8 measured faster than the plain AVX2 kernel: 4096 x 4096 GEMV 0.41 against 0.61 ms
       warm on one thread, 0.79 against 0.89 ms cold; 32-token GEMM 1.4x */
    set->interleave_rows[LOWBIT_TYPE_IQ4_NL] = 8;
    set->interleaved[LB_IL_MXFP4_X8] = mxfp4_x8;
    /* MXFP4x8 likewise: GEMV 0.34 against 0.67 ms warm, 0.72 against 0.87 ms cold; 32-token GEMM
       1.4x (medians of five runs alternating with the plain layout) */
    set->interleave_rows[LOWBIT_TYPE_MXFP4] = 8;
}
