/*
 * AVX-512 F + BW + VL + VNNI kernels of the lattice formats with sign bits, IQ2_XXS, IQ2_XS,
 * IQ2_S, IQ3_XXS and IQ3_S, with Q8_K activations (layouts: lattice_x86.h).
 * lb_register_lattice_avx512 is called only on a CPU with VNNI; the AVX2 kernels of
 * lattice_avx2.c stay the fallback, the scalar references (iquants_lattice.c) the ground truth.
 *
 * The sums are lattice_avx2.c's: each sub-block's (or 16 weights') integer dot product exactly,
 * times its odd scale 2s + 1, and d * a.d / 8 (IQ2), / 4 (IQ3_XXS) or 1 (IQ3_S) once per
 * super-block; so the results differ from the references by the order of the float additions.
 *
 * The AVX2 kernels spend their time assembling the signed weights: a scalar load and an insert
 * per codebook entry, a handful of shuffles per 32 weights, and for the formats with 7-bit sign
 * fields a scalar table lookup per group. Here 64 weights (two sub-blocks) at a time:
 * - one gather fetches their codebook entries (eight of 8 magnitudes, or sixteen of 4) from a
 *   copy of the codebook with every magnitude u stored as 64 + u;
 * - their 64 signs are one mask register, loaded straight from the block (IQ2_S, IQ3_S) or taken
 *   from 32 sign bytes that the kernel makes once per super-block in a dozen vector operations
 *   (the 8th sign of a 7-bit field is the field's parity, which one shuffle of a 16-entry table
 *   gives);
 * - one masked byte subtraction turns the entries of the negative weights into 128 - (64 + u), so
 *   that every weight w is the unsigned 64 + w (1..126) that VPMADDUBSW multiplies with the
 *   activations; its pairs of products cannot saturate (2 * 126 * 128 < 2^15), and one VPDPWSSD
 *   multiplies them by the 16-bit scales and accumulates (VPDPBUSD's sums of four products, as
 *   the IQ1 kernels take them, could reach 4 * 126 * 128 here: too much for the 16 bits that
 *   VPDPWSSD reads). The 64's share, 64 (2s + 1) times the
 *   activations' sums, comes off through the Q8_K bsums (so these kernels expect bsums to hold
 *   the sums of qs, as every Q8_K block the quantizer writes does). The sums stay exact for every
 *   activation, -128 included, which negating the activations instead would not.
 * Measured on an Intel Xeon (Sapphire Rapids class; lowbit_matmul, 4096 x 4096 one-thread GEMV
 * with a warm matrix, AVX2 kernel -> this file's, medians of seven alternating runs): IQ2_XXS
 * 1.36 -> 0.74 ms, IQ2_XS 1.66 -> 0.67, IQ2_S 1.48 -> 0.60, IQ3_XXS 1.75 -> 0.86, IQ3_S 2.22 ->
 * 0.87. Plain loads in place of the gathers (wrong sums, for the timing) ran 15-20% faster for
 * IQ2 and 35% for IQ3, whose sixteen-element gathers fill the load ports: the rest is shuffles
 * and multiplies, about evenly.
 *
 * Each kernel is one body (NAME_dot_tokens) for up to LB_DOT_TOKENS activation rows, the
 * one-token kernel being it with one token (DEFINE_DOT_ENTRY_POINTS; with one token it compiles
 * to the plain GEMV loop, so the GEMV keeps its speed and every token gets its result bit for
 * bit). The several tokens share all the weight work: the sign masks
 * and scales of each super-block, each step's gather, its masked subtraction and its scales;
 * per token and step there remain a load, VPMADDUBSW and VPDPWSSD, and per super-block the
 * bsum offsets and the float accumulation. lowbit_matmul with 32 tokens on two threads (same
 * CPU, busy with other work, medians of five alternating runs, one-token kernels -> these, in
 * GFLOP/s): IQ2_XXS 30 -> 65, IQ2_XS 32 -> 64, IQ2_S 36 -> 69, IQ3_XXS 26 -> 60, IQ3_S 25 -> 65;
 * in quieter runs 45-56 -> 93-107. The GEMV: IQ2_XXS 0.72 -> 0.75 ms, IQ2_XS 0.66 -> 0.66,
 * IQ2_S 0.60 -> 0.60, IQ3_XXS 0.84 -> 0.84, IQ3_S 0.85 -> 0.85 (the same instructions: noise).
 */
#include "../../formats/blocks.h"
#include "../../formats/iq_grids.h"
#include "../kernels.h"
#include "lattice_x86.h"
#include "x86_common.h"

#include <immintrin.h>
#include <pthread.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* The codebooks as unsigned operands                                                          */
/* ------------------------------------------------------------------------------------------ */

/* Every magnitude of these codebooks is below 64, so adding 64 to each byte of an entry carries
   into no other byte. */
#define OFFSET_BYTES8 0x4040404040404040ULL
#define OFFSET_BYTES4 0x40404040U

static uint64_t iq2xxs_offset_grid[256];
static uint64_t iq2xs_offset_grid[512];
static uint64_t iq2s_offset_grid[1024];
static uint32_t iq3xxs_offset_grid[256];
static uint32_t iq3s_offset_grid[512];
static pthread_once_t offset_grids_once = PTHREAD_ONCE_INIT;

static void fill_offset_grids(void) {
    for (int i = 0; i < 256; i++) iq2xxs_offset_grid[i] = lb_iq2xxs_grid[i] + OFFSET_BYTES8;
    for (int i = 0; i < 512; i++) iq2xs_offset_grid[i] = lb_iq2xs_grid[i] + OFFSET_BYTES8;
    for (int i = 0; i < 1024; i++) iq2s_offset_grid[i] = lb_iq2s_grid[i] + OFFSET_BYTES8;
    for (int i = 0; i < 256; i++) iq3xxs_offset_grid[i] = lb_iq3xxs_grid[i] + OFFSET_BYTES4;
    for (int i = 0; i < 512; i++) iq3s_offset_grid[i] = lb_iq3s_grid[i] + OFFSET_BYTES4;
}

/* ------------------------------------------------------------------------------------------ */
/* The steps every kernel takes                                                                */
/* ------------------------------------------------------------------------------------------ */

/* Step p (weights 64p..64p + 63) takes the scale of half 4p + k (16 weights, 8 pairs) in its
   128-bit lane k. Two ways to spread them, each the faster for some formats: from the 16 half
   scales as bytes in every 128-bit lane, by VPSHUFB, where the scales arrive as bytes (by VPERMW
   IQ2_XS went 0.72 -> 0.74 ms, IQ2_S 0.65 -> 0.68, IQ3_S 0.93 -> 0.98); from them as 16-bit
   words, by VPERMW, where they arrive in 32-bit lanes and bytes would take three shuffles more
   (IQ2_XXS 0.80 -> 0.77; IQ3_XXS alike). */
#define BYTE8(h) (h), 0x80, (h), 0x80, (h), 0x80, (h), 0x80, (h), 0x80, (h), 0x80, (h), 0x80, \
                 (h), 0x80
static const uint8_t kStepScaleBytes[4][64] = {
    {BYTE8(0), BYTE8(1), BYTE8(2), BYTE8(3)},
    {BYTE8(4), BYTE8(5), BYTE8(6), BYTE8(7)},
    {BYTE8(8), BYTE8(9), BYTE8(10), BYTE8(11)},
    {BYTE8(12), BYTE8(13), BYTE8(14), BYTE8(15)},
};
#define WORD8(h) (h), (h), (h), (h), (h), (h), (h), (h)
static const uint16_t kStepScaleWords[4][32] = {
    {WORD8(0), WORD8(1), WORD8(2), WORD8(3)},
    {WORD8(4), WORD8(5), WORD8(6), WORD8(7)},
    {WORD8(8), WORD8(9), WORD8(10), WORD8(11)},
    {WORD8(12), WORD8(13), WORD8(14), WORD8(15)},
};

static inline __m512i step_scales_from_bytes(__m512i half_bytes_x4, int p) {
    return _mm512_shuffle_epi8(half_bytes_x4, _mm512_loadu_si512(kStepScaleBytes[p]));
}

static inline __m512i step_scales_from_words(__m256i half_words, int p) {
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(kStepScaleWords[p]),
                                    _mm512_zextsi256_si512(half_words));
}

/* The super-block's integer accumulators of the n_tokens activation rows y[t] (block b),
   starting at minus the share of the 64s: 64 times each half's odd scale (half_words, decoded
   once for all the tokens) times the token's bsum, in 8 lanes. */
static inline ALWAYS_INLINE void start_at_minus_offsets(__m512i acc[], __m256i half_words,
                                                        const block_q8_K *const y[], int64_t b,
                                                        int n_tokens) {
    UNROLL_SHORT
    for (int t = 0; t < n_tokens; t++) {
        acc[t] = _mm512_zextsi256_si512(minus_offsets(half_words, y[t][b].bsums));
    }
}

/* Step p's 64 weights w as the unsigned 64 + w, once for all the tokens. offset_u: their
   magnitudes as 64 + u; negative: their signs. */
static inline __m512i offset_weights(__m512i offset_u, __mmask64 negative) {
    /* 128 - (64 + u) = 64 - u where the weight is negative */
    return _mm512_mask_sub_epi8(offset_u, negative, _mm512_set1_epi8(-128), offset_u);
}

/* acc[t] + the products of step p's 64 weights (offset_weights) with token t's activations of
   block b, each pair times its 16-bit scale. */
static inline ALWAYS_INLINE void add_step(__m512i acc[], __m512i w, const block_q8_K *const y[],
                                          int64_t b, int p, __m512i scales, int n_tokens) {
    UNROLL_SHORT
    for (int t = 0; t < n_tokens; t++) {
        const __m512i a = _mm512_loadu_si512(y[t][b].qs + 64 * p);
        acc[t] = _mm512_dpwssd_epi32(acc[t], _mm512_maddubs_epi16(w, a), scales);
    }
}

/* acc_f[t] + scale_x * d_t * (float)acc[t], lane by lane (d_t: token t's block scale; scale_x
   times it first, as the one-token kernel multiplies them); the lanes are added up once per
   row. */
static inline ALWAYS_INLINE void accumulate_scaled16(__m512 acc_f[], const __m512i acc[],
                                                     float scale_x, const block_q8_K *const y[],
                                                     int64_t b, int n_tokens) {
    UNROLL_SHORT
    for (int t = 0; t < n_tokens; t++) {
        acc_f[t] = _mm512_fmadd_ps(_mm512_set1_ps(scale_x * y[t][b].d),
                                   _mm512_cvtepi32_ps(acc[t]), acc_f[t]);
    }
}

/* The activation rows of a multi-token call and their float accumulators, zeroed. */
static inline ALWAYS_INLINE void start_tokens(const void *activations, size_t stride,
                                              int n_tokens, const block_q8_K *y[],
                                              __m512 acc_f[]) {
    for (int t = 0; t < n_tokens; t++) {
        y[t] = token_row(activations, stride, t);
        acc_f[t] = _mm512_setzero_ps();
    }
}

static inline ALWAYS_INLINE void finish_tokens(const __m512 acc_f[], int n_tokens, float *out) {
    for (int t = 0; t < n_tokens; t++) out[t] = _mm512_reduce_add_ps(acc_f[t]);
}

static inline __mmask64 load_mask64(const void *p) {
    uint64_t bits;
    memcpy(&bits, p, sizeof bits);
    return _cvtu64_mask64(bits);
}

/* ------------------------------------------------------------------------------------------ */
/* Sign fields of 7 bits                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Bytes of 7 sign bits (bit 7 clear) completed with the 8th sign, the parity of the 7, in bit 7:
   the parity of the XOR of the byte's two nibbles, from a 16-entry table. */
static const int8_t kOddParity[16] = {0, -128, -128, 0, -128, 0, 0, -128,
                                      -128, 0, 0, -128, 0, -128, -128, 0};

static inline __m256i with_parity_bit(__m256i fields) {
    const __m256i odd_parity =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kOddParity));
    /* (fields ^ fields >> 4) & 15: truth table (A ^ B) & C = 0x28 */
    const __m256i folded = _mm256_ternarylogic_epi32(fields, _mm256_srli_epi16(fields, 4),
                                                     _mm256_set1_epi8(15), 0x28);
    return _mm256_or_si256(fields, _mm256_shuffle_epi8(odd_parity, folded));
}

/* IQ2_XXS and IQ3_XXS: the four 7-bit sign fields of each 32-bit word (bits 0-27) of aux spread
   to its four bytes, with their parity bits: the 32 sign bytes of a super-block. */
static inline __m256i sign_bytes_of_words(__m256i aux) {
    /* each step moves the fields above the next byte boundary up by one bit: C ? A : B = 0xE4 */
    const __m256i r1 = _mm256_ternarylogic_epi32(aux, _mm256_slli_epi32(aux, 1),
                                                  _mm256_set1_epi32(0x0000007F), 0xE4);
    const __m256i r2 = _mm256_ternarylogic_epi32(r1, _mm256_slli_epi32(r1, 1),
                                                  _mm256_set1_epi32(0x00007FFF), 0xE4);
    const __m256i r3 = _mm256_ternarylogic_epi32(r2, _mm256_slli_epi32(r2, 1),
                                                  _mm256_set1_epi32(0x007FFFFF), 0xE4);
    return with_parity_bit(_mm256_and_si256(r3, _mm256_set1_epi8(0x7F)));
}

/* The four 64-bit sign masks of a super-block's steps from its 32 sign bytes, through memory: a
   mask register loads from memory in one load, where the compiler's way, taking each quarter out
   of the vector register, costs three shuffle-port instructions (the empty asm keeps it from
   that). IQ2_XXS 0.82 -> 0.80 ms, IQ2_XS 0.78 -> 0.72; IQ3_XXS, whose 16-element gathers the
   store seems to slow down, 0.88 -> 1.01, so it keeps the compiler's way. */
static inline void store_sign_masks(__m256i sign_bytes, __mmask64 masks[4]) {
    _mm256_storeu_si256((__m256i *)(void *)masks, sign_bytes);
    __asm__("" : "+m"(*(__mmask64(*)[4])masks));
}

/* ------------------------------------------------------------------------------------------ */
/* IQ2_XXS                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static inline ALWAYS_INLINE void iq2_xxs_dot_tokens(int64_t n, const void *weights,
                                                    const void *activations, size_t stride,
                                                    int n_tokens, float *out) {
    const block_iq2_xxs *x = weights;
    /* step p's 16 bytes: indices 0-3, a word, indices 4-7, a word; the indices made 32-bit */
    const __m256i index_bytes = _mm256_setr_epi8(
        0, -1, -1, -1, 1, -1, -1, -1, 2, -1, -1, -1, 3, -1, -1, -1,
        8, -1, -1, -1, 9, -1, -1, -1, 10, -1, -1, -1, 11, -1, -1, -1);
    const __m512i odd_words =
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 1, 3, 5, 7, 9, 11, 13, 15);
    const block_q8_K *y[LB_DOT_TOKENS];
    __m512 acc_f[LB_DOT_TOKENS];
    start_tokens(activations, stride, n_tokens, y, acc_f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const uint8_t *qs = (const uint8_t *)x[b].qs;
        /* the eight sign and scale words: every other 32-bit word of the block */
        const __m256i aux =
            _mm512_castsi512_si256(_mm512_permutexvar_epi32(odd_words, _mm512_loadu_si512(qs)));
        __mmask64 negative[4];
        store_sign_masks(sign_bytes_of_words(aux), negative);
        const __m256i half_words = odd_half_words_of_words(aux);
        __m512i acc[LB_DOT_TOKENS];
        start_at_minus_offsets(acc, half_words, y, b, n_tokens);
        for (int p = 0; p < 4; p++) {
            const __m256i idx = _mm256_shuffle_epi8(
                _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(qs + 16 * p))),
                index_bytes);
            const __m512i u = _mm512_i32gather_epi64(idx, (const void *)iq2xxs_offset_grid, 8);
            add_step(acc, offset_weights(u, negative[p]), y, b, p,
                     step_scales_from_words(half_words, p), n_tokens);
        }
        accumulate_scaled16(acc_f, acc, 0.125f * half_to_float(x[b].d), y, b, n_tokens);
    }
    finish_tokens(acc_f, n_tokens, out);
}

DEFINE_DOT_ENTRY_POINTS(iq2_xxs, iq2_xxs_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* IQ2_XS                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* The 32 sign bytes of an IQ2_XS block: the top 7 bits of each 16-bit word and their parity. */
static inline __m256i iq2_xs_sign_bytes(const uint16_t qs[32]) {
    const __m512i words = _mm512_loadu_si512(qs);
    const __m512i fields = _mm512_srli_epi16(words, 9);
    /* the field's two nibbles XORed (in the low byte; the high byte stays 0, of even parity) */
    const __m512i folded = _mm512_xor_si512(fields, _mm512_srli_epi16(words, 13));
    const __m512i odd_parity =
        _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)kOddParity));
    const __m512i full = _mm512_or_si512(fields, _mm512_shuffle_epi8(odd_parity, folded));
    return _mm512_cvtepi16_epi8(full);
}

static inline ALWAYS_INLINE void iq2_xs_dot_tokens(int64_t n, const void *weights,
                                                   const void *activations, size_t stride,
                                                   int n_tokens, float *out) {
    const block_iq2_xs *x = weights;
    const __m256i nine_bits = _mm256_set1_epi32(511);
    const block_q8_K *y[LB_DOT_TOKENS];
    __m512 acc_f[LB_DOT_TOKENS];
    start_tokens(activations, stride, n_tokens, y, acc_f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        __mmask64 negative[4];
        store_sign_masks(iq2_xs_sign_bytes(x[b].qs), negative);
        const __m128i half_bytes = iq2_odd_half_scales(x[b].scales);
        const __m512i half_bytes_x4 = _mm512_broadcast_i32x4(half_bytes);
        __m512i acc[LB_DOT_TOKENS];
        start_at_minus_offsets(acc, _mm256_cvtepu8_epi16(half_bytes), y, b, n_tokens);
        for (int p = 0; p < 4; p++) {
            const __m128i group_words = _mm_loadu_si128((const __m128i *)(x[b].qs + 8 * p));
            const __m256i idx = _mm256_and_si256(_mm256_cvtepu16_epi32(group_words), nine_bits);
            const __m512i u = _mm512_i32gather_epi64(idx, (const void *)iq2xs_offset_grid, 8);
            add_step(acc, offset_weights(u, negative[p]), y, b, p,
                     step_scales_from_bytes(half_bytes_x4, p), n_tokens);
        }
        accumulate_scaled16(acc_f, acc, 0.125f * half_to_float(x[b].d), y, b, n_tokens);
    }
    finish_tokens(acc_f, n_tokens, out);
}

DEFINE_DOT_ENTRY_POINTS(iq2_xs, iq2_xs_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* IQ2_S                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static inline ALWAYS_INLINE void iq2_s_dot_tokens(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_iq2_s *x = weights;
    /* group l (0-15) of sub-blocks 4h..4h + 3: bits 2l, 2l + 1 of the 32-bit word at qh + 4h,
       rotated to bits 8-9 */
    const __m512i rot =
        _mm512_setr_epi32(8, 6, 4, 2, 0, 30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10);
    const __m512i two_bits = _mm512_set1_epi32(0x300);
    const block_q8_K *y[LB_DOT_TOKENS];
    __m512 acc_f[LB_DOT_TOKENS];
    start_tokens(activations, stride, n_tokens, y, acc_f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const uint8_t *signs = x[b].qs + QK_K / 8;
        const __m128i half_bytes = iq2_odd_half_scales(x[b].scales);
        const __m512i half_bytes_x4 = _mm512_broadcast_i32x4(half_bytes);
        __m512i acc[LB_DOT_TOKENS];
        start_at_minus_offsets(acc, _mm256_cvtepu8_epi16(half_bytes), y, b, n_tokens);
        /* the indices of 16 groups at a time: 0.67 -> 0.65 ms against 8 */
        for (int h = 0; h < 2; h++) {
            const __m512i low =
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(x[b].qs + 16 * h)));
            const __m512i ext = _mm512_set1_epi32((int)load_u32(x[b].qh + 4 * h));
            /* (rotated & 0x300) | low: truth table (A & B) | C = 0xEA */
            const __m512i idx =
                _mm512_ternarylogic_epi32(_mm512_rolv_epi32(ext, rot), two_bits, low, 0xEA);
            for (int i = 0; i < 2; i++) {
                const int p = 2 * h + i;
                const __m256i idx8 =
                    i ? _mm512_extracti64x4_epi64(idx, 1) : _mm512_castsi512_si256(idx);
                const __m512i u = _mm512_i32gather_epi64(idx8, (const void *)iq2s_offset_grid, 8);
                add_step(acc, offset_weights(u, load_mask64(signs + 8 * p)), y, b, p,
                         step_scales_from_bytes(half_bytes_x4, p), n_tokens);
            }
        }
        accumulate_scaled16(acc_f, acc, 0.125f * half_to_float(x[b].d), y, b, n_tokens);
    }
    finish_tokens(acc_f, n_tokens, out);
}

DEFINE_DOT_ENTRY_POINTS(iq2_s, iq2_s_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* IQ3_XXS                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static inline ALWAYS_INLINE void iq3_xxs_dot_tokens(int64_t n, const void *weights,
                                                    const void *activations, size_t stride,
                                                    int n_tokens, float *out) {
    const block_iq3_xxs *x = weights;
    const block_q8_K *y[LB_DOT_TOKENS];
    __m512 acc_f[LB_DOT_TOKENS];
    start_tokens(activations, stride, n_tokens, y, acc_f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const __m256i aux = load32(x[b].qs + QK_K / 4);
        uint64_t negative[4]; /* not store_sign_masks: see there */
        _mm256_storeu_si256((__m256i *)(void *)negative, sign_bytes_of_words(aux));
        const __m256i half_words = odd_half_words_of_words(aux);
        __m512i acc[LB_DOT_TOKENS];
        start_at_minus_offsets(acc, half_words, y, b, n_tokens);
        for (int p = 0; p < 4; p++) {
            const __m512i idx =
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(x[b].qs + 16 * p)));
            const __m512i u = _mm512_i32gather_epi32(idx, (const void *)iq3xxs_offset_grid, 4);
            add_step(acc, offset_weights(u, _cvtu64_mask64(negative[p])), y, b, p,
                     step_scales_from_words(half_words, p), n_tokens);
        }
        accumulate_scaled16(acc_f, acc, 0.25f * half_to_float(x[b].d), y, b, n_tokens);
    }
    finish_tokens(acc_f, n_tokens, out);
}

DEFINE_DOT_ENTRY_POINTS(iq3_xxs, iq3_xxs_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* IQ3_S                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static inline ALWAYS_INLINE void iq3_s_dot_tokens(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_iq3_s *x = weights;
    const __m512i ninth_bit = _mm512_set1_epi32(256);
    const block_q8_K *y[LB_DOT_TOKENS];
    __m512 acc_f[LB_DOT_TOKENS];
    start_tokens(activations, stride, n_tokens, y, acc_f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const __m128i half_bytes = iq3_s_odd_half_scales(x[b].scales);
        const __m512i half_bytes_x4 = _mm512_broadcast_i32x4(half_bytes);
        __m512i acc[LB_DOT_TOKENS];
        start_at_minus_offsets(acc, _mm256_cvtepu8_epi16(half_bytes), y, b, n_tokens);
        for (int p = 0; p < 4; p++) {
            /* entry i of the step takes bit i of qh[2p] | qh[2p + 1] << 8 as its ninth bit */
            uint16_t ninth_bits;
            memcpy(&ninth_bits, x[b].qh + 2 * p, sizeof ninth_bits);
            const __m512i low =
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(x[b].qs + 16 * p)));
            const __m512i idx =
                _mm512_mask_or_epi32(low, _cvtu32_mask16(ninth_bits), low, ninth_bit);
            const __m512i u = _mm512_i32gather_epi32(idx, (const void *)iq3s_offset_grid, 4);
            add_step(acc, offset_weights(u, load_mask64(x[b].signs + 8 * p)), y, b, p,
                     step_scales_from_bytes(half_bytes_x4, p), n_tokens);
        }
        accumulate_scaled16(acc_f, acc, half_to_float(x[b].d), y, b, n_tokens);
    }
    finish_tokens(acc_f, n_tokens, out);
}

DEFINE_DOT_ENTRY_POINTS(iq3_s, iq3_s_dot_tokens)

/* ------------------------------------------------------------------------------------------ */

void lb_register_lattice_avx512(lb_kernel_set *set) {
    pthread_once(&offset_grids_once, fill_offset_grids);
    set_dot(set, LOWBIT_TYPE_IQ2_XXS, dot_iq2_xxs, dot_iq2_xxs_tokens);
    set_dot(set, LOWBIT_TYPE_IQ2_XS, dot_iq2_xs, dot_iq2_xs_tokens);
    set_dot(set, LOWBIT_TYPE_IQ2_S, dot_iq2_s, dot_iq2_s_tokens);
    set_dot(set, LOWBIT_TYPE_IQ3_XXS, dot_iq3_xxs, dot_iq3_xxs_tokens);
    set_dot(set, LOWBIT_TYPE_IQ3_S, dot_iq3_s, dot_iq3_s_tokens);
}
