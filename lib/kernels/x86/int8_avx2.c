/*
 * AVX2 products of uint8 activation rows with int8 weight rows (lb_u8_i8_dots, integer.h), for
 * the integer classifier runner. Both operands are widened to int16 and multiplied with
 * vpmaddwd, which is exact: each pair sum is at most 2 * 255 * 128 < 2^31. (vpmaddubsw would
 * multiply the bytes directly but saturates its int16 pair sums, 2 * 255 * 127 > 32767, so it is
 * not used.) Tiles of 2 rows x 4 channels: each 16-element step loads 2 + 4 rows and does 8
 * multiply-adds. The last k_count % 16 elements are copied into zero-padded blocks, so no load
 * reads past a row. Sums are exact integers, so the results equal the scalar reference's.
 */
#include "../../nn/integer.h"

#include <immintrin.h>
#include <string.h>

/* The four horizontal sums of a, b, c, d as one vector {sum a, sum b, sum c, sum d}. */
static inline __m128i hsum4_epi32(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_hadd_epi32(a, b), cd = _mm256_hadd_epi32(c, d);
    const __m256i abcd = _mm256_hadd_epi32(ab, cd); /* per 128-bit half: a b c d */
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

static inline __m256i load_u8(const uint8_t *p) {
    return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)p));
}

static inline __m256i load_i8(const int8_t *p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)p));
}

/* up to 2 rows x up to 4 channels (n_rows, n_ch; missing ones read row/channel 0 and are
   discarded) of dot products. */
static void tile(const uint8_t *const x[2], int n_rows, const int8_t *const w[4], int n_ch,
                 int64_t k_count, int32_t *out, int64_t out_stride) {
    __m256i acc[2][4];
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = _mm256_setzero_si256();
    const int64_t body = k_count & ~(int64_t)15;
    for (int64_t k = 0; k < body; k += 16) {
        const __m256i a0 = load_u8(x[0] + k), a1 = load_u8(x[1] + k);
        for (int c = 0; c < 4; c++) {
            const __m256i wc = load_i8(w[c] + k);
            acc[0][c] = _mm256_add_epi32(acc[0][c], _mm256_madd_epi16(a0, wc));
            acc[1][c] = _mm256_add_epi32(acc[1][c], _mm256_madd_epi16(a1, wc));
        }
    }
    if (body < k_count) {
        const size_t tail = (size_t)(k_count - body);
        uint8_t xa[2][16] = {{0}};
        int8_t wa[4][16] = {{0}};
        for (int r = 0; r < 2; r++) memcpy(xa[r], x[r] + body, tail);
        for (int c = 0; c < 4; c++) memcpy(wa[c], w[c] + body, tail);
        const __m256i a0 = load_u8(xa[0]), a1 = load_u8(xa[1]);
        for (int c = 0; c < 4; c++) {
            const __m256i wc = load_i8(wa[c]);
            acc[0][c] = _mm256_add_epi32(acc[0][c], _mm256_madd_epi16(a0, wc));
            acc[1][c] = _mm256_add_epi32(acc[1][c], _mm256_madd_epi16(a1, wc));
        }
    }
    for (int r = 0; r < n_rows; r++) {
        int32_t sums[4];
        _mm_storeu_si128((__m128i *)(void *)sums,
                         hsum4_epi32(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
        memcpy(out + r * out_stride, sums, (size_t)n_ch * sizeof(int32_t));
    }
}

void lb_u8_i8_dots_avx2(const uint8_t *a, int64_t a_stride, int64_t rows, const int8_t *w,
                        int64_t k_count, int64_t channels, int32_t *dots) {
    for (int64_t r = 0; r < rows; r += 2) {
        const int n_rows = rows - r >= 2 ? 2 : 1;
        const uint8_t *x[2] = {a + r * a_stride, a + (r + n_rows - 1) * a_stride};
        for (int64_t c = 0; c < channels; c += 4) {
            const int n_ch = channels - c >= 4 ? 4 : (int)(channels - c);
            const int8_t *wr[4];
            for (int j = 0; j < 4; j++) wr[j] = w + (c + (j < n_ch ? j : 0)) * k_count;
            tile(x, n_rows, wr, n_ch, k_count, dots + r * channels + c, channels);
        }
    }
}

/* Eight channels at once of the runner's requantization (integer_net.c, requantize), for ops
   whose sums cannot saturate and whose shifts lie in [0, 31]:
     high = floor((v * m0 + 2^30) / 2^31)            (SQRDMULH; fits int32 as m0 < 2^31)
     y    = sign(high) * ((|high| + 2^(s-1)) >> s)   (rounding half away from zero)
   The 64-bit products come from vpmuldq on the even and (shifted down) odd lanes; bits 31..62
   of each product plus 2^30 are the floor-shifted result, taken with logical shifts, which give
   the same low 32 bits as an arithmetic shift. */
int64_t lb_requantize_avx2(const int32_t *dots, int64_t count, const int32_t *offset,
                           const int32_t *m0, const int32_t *shift, int32_t zero, int32_t lo,
                           int32_t hi, uint8_t *out) {
    const __m256i round30 = _mm256_set1_epi64x((int64_t)1 << 30);
    const __m256i one = _mm256_set1_epi32(1), vzero = _mm256_set1_epi32(zero);
    const __m256i vlo = _mm256_set1_epi32(lo), vhi = _mm256_set1_epi32(hi);
    int64_t c = 0;
    for (; c + 8 <= count; c += 8) {
        const __m256i v = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(dots + c)),
                                           _mm256_loadu_si256((const __m256i *)(const void *)(offset + c)));
        const __m256i m = _mm256_loadu_si256((const __m256i *)(const void *)(m0 + c));
        const __m256i s = _mm256_loadu_si256((const __m256i *)(const void *)(shift + c));
        const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(v, m), round30);
        const __m256i odd = _mm256_add_epi64(
            _mm256_mul_epi32(_mm256_srli_epi64(v, 32), _mm256_srli_epi64(m, 32)), round30);
        const __m256i high = _mm256_blend_epi32(_mm256_srli_epi64(even, 31),
                                                _mm256_slli_epi64(odd, 1), 0xAA);
        const __m256i half = _mm256_srli_epi32(_mm256_sllv_epi32(one, s), 1);
        const __m256i magnitude = _mm256_abs_epi32(high); /* 2^31 stays 2^31 as unsigned */
        const __m256i rounded = _mm256_srlv_epi32(_mm256_add_epi32(magnitude, half), s);
        __m256i y = _mm256_add_epi32(_mm256_sign_epi32(rounded, high), vzero);
        y = _mm256_min_epi32(_mm256_max_epi32(y, vlo), vhi);
        const __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(y, y), y);
        const int32_t low4 = _mm_cvtsi128_si32(_mm256_castsi256_si128(bytes));
        const int32_t high4 = _mm_cvtsi128_si32(_mm256_extracti128_si256(bytes, 1));
        memcpy(out + c, &low4, 4);
        memcpy(out + c + 4, &high4, 4);
    }
    return c;
}
