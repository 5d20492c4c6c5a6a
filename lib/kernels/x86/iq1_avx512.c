/*
 * AVX-512 F + BW + VL + VNNI kernels of the 1-bit lattice formats IQ1_S and IQ1_M with Q8_K
 * activations. lb_register_iq1_avx512 is called only on a CPU with VNNI; the AVX2 kernels of
 * iq1_avx2.c stay the fallback, the scalar references (iquants_lattice.c) the ground truth.
 *
 * The arithmetic is iq1_avx2.c's: every weight times 8 is the integer 8q + delta (q in -1, 0, +1
 * from the codebook, delta = +-1), made unsigned by a constant whose share comes off through the
 * Q8_K bsums (so these kernels too expect bsums to hold the sums of qs); the super-block's
 * integer sum is exact and meets d * a.d / 8 once. So the results differ from the references by
 * the order of the float additions only.
 *
 * What the AVX2 kernels spend their time on is assembling the codebook entries: four scalar
 * loads and three shuffles (all on the one shuffle port) per 32 weights. Here two sub-blocks (8
 * groups, 64 weights) at a time:
 * - their eight 11-bit indices are built in one vector from the qs bytes and one 32-bit load of
 *   the index extensions (a rotate per lane moves each group's bits to 8-10), and one VPGATHERDQ
 *   fetches the eight entries into a 512-bit register;
 * - the gather reads a copy of the codebook with every value stored as 8 (q + 1) (0, 8, 16):
 *   the entries arrive as VPDPBUSD's unsigned operand with no arithmetic (IQ1_M ORs in its
 *   delta's 2 per group under a mask), which measured 6-8% faster than adding to the gathered
 *   signed values;
 * - one VPDPBUSD makes 16 lane sums of 4 products (at most 4 * 18 * 128 in magnitude, so each
 *   fits the low 16 bits of its lane) and one VPDPWSSD multiplies them by the sub-block (IQ1_S)
 *   or half (IQ1_M) scales 2s + 1, held in the low word of each lane with 0 above: the sign
 *   extension in the high word meets that 0.
 * The scales of a pair come from one per-block vector by one VPERMD, which measured faster than
 * shifting them out of the scale words pair by pair (two operations).
 * Measured on an Intel Xeon (Sapphire Rapids class; lowbit_matmul, 4096 x 4096 one-thread GEMV,
 * AVX2 kernel -> this file's, medians of seven alternating runs): IQ1_S 1.16 -> 0.58 ms, IQ1_M
 * 1.43 -> 0.66 ms, the same with the matrix out of cache; 32-token GEMM on two threads 60 -> 110
 * and 45 -> 97 GFLOP/s.
 *
 * Each format also has a multi-token kernel (DEFINE_DOT_ENTRY_POINTS: one weight row against up
 * to LB_DOT_TOKENS activation rows, the one-token kernel being the same body with one token).
 * The weight work is done once per row and shared by the tokens: the index assembly, the gather
 * and the delta bits of each sub-block pair, the odd scales, their spreading and the scales'
 * shares of the bsum offsets; each token is left its bsum madd, one VPDPBUSD per pair (the
 * scales are multiplied into the entries once, see iq1_s_dot_tokens) and one FMA per block.
 * Measured (same Xeon, shared with other work, so medians of five alternating runs; 32 tokens
 * with the multi-token kernels against one dot per token): GEMM on two threads IQ1_S 55 -> 109,
 * IQ1_M 49 -> 96 GFLOP/s (on a quieter machine, with a VPDPWSSD per token and pair, 119 -> 239
 * and 108 -> 225), and on one thread (CPU time) 57 -> 117 and 52 -> 102; the GEMV unchanged
 * (0.60 -> 0.59, 0.66 -> 0.65 ms).
 * Multiplying the scales in first, rather than one VPDPWSSD per token and pair, gave 6% (IQ1_S)
 * and 2-3% (IQ1_M) of that; for one token it measured slower (GEMV 0.59 -> 0.61 ms), so the
 * one-token kernel keeps VPDPWSSD: both give the same lane sums.
 */
#include "../../formats/blocks.h"
#include "../../formats/iq_grids.h"
#include "../kernels.h"
#include "iq1_x86.h"
#include "kquants_x86.h"
#include "x86_common.h"

#include <immintrin.h>
#include <pthread.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* The codebook as unsigned operands                                                          */
/* ------------------------------------------------------------------------------------------ */

#define IQ1_GRID_SIZE 2048

/* lb_iq1s_grid with each value q stored as 8 (q + 1): byte-wise arithmetic that a 64-bit add
   cannot do on the gathered entries (the -1 bytes would carry). Filled once, on registration. */
static uint64_t eight_u_grid[IQ1_GRID_SIZE];
static pthread_once_t eight_u_grid_once = PTHREAD_ONCE_INIT;

static void fill_eight_u_grid(void) {
    for (int i = 0; i < IQ1_GRID_SIZE; i++) {
        uint64_t entry = 0;
        for (int j = 0; j < 8; j++) {
            const int q = (int8_t)(uint8_t)(lb_iq1s_grid[i] >> (8 * j));
            entry |= (uint64_t)(uint8_t)(8 * (q + 1)) << (8 * j);
        }
        eight_u_grid[i] = entry;
    }
}

/* The entries of eight groups: idx holds 8 indices < 2048. */
static inline __m512i gather_eight_u(__m256i idx) {
    return _mm512_i32gather_epi64(idx, (const void *)eight_u_grid, 8);
}

/* The indices of eight groups: qs[l] in bits 0-7, and the group's three extension bits of
   `extensions` (a 32-bit word in every lane) rotated by rot[l] into bits 8-10. */
static inline __m256i group_indices(const uint8_t qs[8], __m256i extensions, __m256i rot) {
    const __m256i low = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qs));
    /* (rotated & 0x700) | low: truth table (A & B) | C = 0xEA */
    return _mm256_ternarylogic_epi32(_mm256_rolv_epi32(extensions, rot),
                                     _mm256_set1_epi32(0x700), low, 0xEA);
}

/* 16 lane sums of 4 products each of 64 unsigned weights with 64 activations. */
static inline __m512i dot64(__m512i u, const int8_t *a) {
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_loadu_si512(a));
}

/* Lane r_i of `scales` (scales in the low words, 0 above) in lanes 4i..4i + 3. */
static inline __m512i spread_scales(__m512i scales, int r0, int r1, int r2, int r3) {
    const __m512i pattern = _mm512_setr_epi32(r0, r0, r0, r0, r1, r1, r1, r1, r2, r2, r2, r2,
                                              r3, r3, r3, r3);
    return _mm512_permutexvar_epi32(pattern, scales);
}

/* Each of the 16 words of v in both words of a 32-bit lane (as pair_each16, 16 lanes). */
static inline __m512i pair_each16_x16(__m256i v) {
    const __m512i wide = _mm512_cvtepu16_epi32(v);
    return _mm512_or_si512(wide, _mm512_slli_epi32(wide, 16));
}

/* acc_f + scale * (float)sums, lane by lane; the lanes are added up once per row. */
static inline __m512 accumulate_scaled16(__m512 acc_f, __m512i sums, float scale) {
    return _mm512_fmadd_ps(_mm512_set1_ps(scale), _mm512_cvtepi32_ps(sums), acc_f);
}

/* The integer accumulator of a super-block, starting at minus the bsum offsets (8 lanes). */
static inline __m512i start_at_minus(__m256i offsets) {
    return _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), offsets));
}

/* ------------------------------------------------------------------------------------------ */
/* IQ1_S: qh[ib] holds four 3-bit index extensions, the 3-bit scale s and the delta's sign.     */
/* ------------------------------------------------------------------------------------------ */

/* One row against n_tokens activation rows (DEFINE_DOT_ENTRY_POINTS; the one-token kernel is
   this with one token). Per sub-block pair the index assembly, the gather and the scales are
   done once for all tokens. One token takes VPDPBUSD and VPDPWSSD as described above; several
   multiply the scales into the entries once instead, 8 (q + 1) (2s + 1) <= 16 * 15 fitting a
   byte (VPMULLW on words whose two bytes each take the scale: no product carries into the next
   byte), which leaves each token one VPDPBUSD per pair. Both ways put the same exact sums in
   the same lanes, so every token gets the one-token kernel's float operations. */
static inline ALWAYS_INLINE void iq1_s_dot_tokens(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_iq1_s *x = weights;
    /* group l of a sub-block pair: bits 16 (l / 4) + 3 (l % 4) of qh[2p] | qh[2p + 1] << 16 */
    const __m256i rot = _mm256_setr_epi32(8, 5, 2, 31, 24, 21, 18, 15);
    __m512 acc_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        const __m128i qh = _mm_loadu_si128((const __m128i *)x[b].qh);
        const __m128i odd = iq1_s_odd_scales(qh);
        /* one token: 2s + 1 in the low word of lane ib, for VPDPWSSD; several: in both words,
           for VPMULLW to multiply every byte by it */
        const __m512i odd32 = _mm512_zextsi256_si512(n_tokens == 1 ? _mm256_cvtepu16_epi32(odd)
                                                                    : pair_each16(odd));
        const __m256i offset_scales = iq1_s_offset_scales(qh, odd);
        __m512i acc[LB_DOT_TOKENS];
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            acc[t] = start_at_minus(_mm256_madd_epi16(load32(y->bsums), offset_scales));
        }
        /* the entries carry the 8 of 8u, so the sub-block scales are 2s + 1 alone */
        for (int p = 0; p < 4; p++) { /* sub-blocks 2p and 2p + 1 */
            const __m256i ext = _mm256_set1_epi32((int)load_u32(x[b].qh + 2 * p));
            const __m512i u = gather_eight_u(group_indices(x[b].qs + 8 * p, ext, rot));
            const __m512i scales = spread_scales(odd32, 2 * p, 2 * p, 2 * p + 1, 2 * p + 1);
            if (n_tokens == 1) {
                const block_q8_K *y = q8_K_block(activations, stride, 0, b);
                acc[0] = _mm512_dpwssd_epi32(acc[0], dot64(u, y->qs + 64 * p), scales);
                continue;
            }
            const __m512i scaled = _mm512_mullo_epi16(u, scales);
            for (int t = 0; t < n_tokens; t++) {
                const block_q8_K *y = q8_K_block(activations, stride, t, b);
                acc[t] = _mm512_dpbusd_epi32(acc[t], scaled, _mm512_loadu_si512(y->qs + 64 * p));
            }
        }
        const float dx = 0.125f * half_to_float(x[b].d);
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            acc_f[t] = accumulate_scaled16(acc_f[t], acc[t], dx * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = _mm512_reduce_add_ps(acc_f[t]);
}

DEFINE_DOT_ENTRY_POINTS(iq1_s_vnni, iq1_s_dot_tokens)

/* ------------------------------------------------------------------------------------------ */
/* IQ1_M: each qh nibble holds a group's 3-bit index extension and its delta's sign (bit 3); the */
/* 3-bit scales of the 16 halves fill the low 12 bits of the four scale words.                  */
/* ------------------------------------------------------------------------------------------ */

/* As iq1_s_dot_tokens: the indices, the gather, the deltas and the scales of a sub-block pair
   once for all tokens. 8q + delta + 9 (up to 18) times 2s + 1 (up to 15) would not fit a byte,
   so several tokens take half the stand-in, whose products with the scale do, each token adding
   one VPDPBUSD per pair and doubling its sums once per block, the offsets subtracted after. */
static inline ALWAYS_INLINE void iq1_m_dot_tokens(int64_t n, const void *weights,
                                                  const void *activations, size_t stride,
                                                  int n_tokens, float *out) {
    const block_iq1_m *x = weights;
    /* group l of a sub-block pair: nibble l of the 32-bit word at qh + 4p */
    const __m256i rot = _mm256_setr_epi32(8, 4, 0, 28, 24, 20, 16, 12);
    const __m512i sign_bits = _mm512_setr_epi64(1 << 3, 1 << 7, 1 << 11, 1 << 15, 1 << 19,
                                                1 << 23, 1 << 27, 1u << 31);
    const __m512i one = _mm512_set1_epi8(1), two = _mm512_set1_epi8(2);
    __m512 acc_f[LB_DOT_TOKENS];
    for (int t = 0; t < n_tokens; t++) acc_f[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        prefetch_weights(&x[b], sizeof *x);
        uint64_t words;
        memcpy(&words, x[b].scales, sizeof words);
        const __m256i odd = iq1_m_odd_scales(words);
        /* one token: 2s + 1 in the low word of lane j, for VPDPWSSD; several: in both words,
           for VPMULLW to multiply every byte by it */
        const __m512i odd32 = n_tokens == 1 ? _mm512_cvtepu16_epi32(odd) : pair_each16_x16(odd);
        const __m256i offset_scales = iq1_m_offset_scales(odd);
        __m256i offsets[LB_DOT_TOKENS];
        __m512i acc[LB_DOT_TOKENS];
        for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            offsets[t] = _mm256_madd_epi16(load32(y->bsums), offset_scales);
            acc[t] = n_tokens == 1 ? start_at_minus(offsets[t]) : _mm512_setzero_si512();
        }
        for (int p = 0; p < 4; p++) { /* sub-blocks 2p and 2p + 1: halves 4p .. 4p + 3 */
            /* one broadcast serves the indices (low half) and the delta signs */
            const __m512i nibbles = _mm512_set1_epi32((int)load_u32(x[b].qh + 4 * p));
            const __m256i ext = _mm512_castsi512_si256(nibbles);
            const __m512i eight_u = gather_eight_u(group_indices(x[b].qs + 8 * p, ext, rot));
            const __mmask8 positive = _mm512_testn_epi64_mask(nibbles, sign_bits);
            const __m512i scales = spread_scales(odd32, 4 * p, 4 * p + 1, 4 * p + 2, 4 * p + 3);
            if (n_tokens == 1) {
                /* the stand-in 8q + delta + 9 = 8 (q + 1) + (delta + 1): 2 more where the
                   delta's sign bit is clear */
                const __m512i u = _mm512_mask_or_epi64(eight_u, positive, eight_u, two);
                const block_q8_K *y = q8_K_block(activations, stride, 0, b);
                acc[0] = _mm512_dpwssd_epi32(acc[0], dot64(u, y->qs + 64 * p), scales);
                continue;
            }
            /* half the stand-in, 4 (q + 1) + (delta + 1) / 2 (0..9), times 2s + 1 fits a byte:
               multiplied in once, it leaves each token one VPDPBUSD (the halving of the 8 (q + 1)
               bytes, all even, shifts no bit across a byte) */
            const __m512i four_u = _mm512_srli_epi16(eight_u, 1);
            const __m512i half_u = _mm512_mask_or_epi64(four_u, positive, four_u, one);
            const __m512i scaled = _mm512_mullo_epi16(half_u, scales);
            for (int t = 0; t < n_tokens; t++) {
                const block_q8_K *y = q8_K_block(activations, stride, t, b);
                acc[t] = _mm512_dpbusd_epi32(acc[t], scaled, _mm512_loadu_si512(y->qs + 64 * p));
            }
        }
        const float dx = 0.125f * iq1_m_super_scale(words);
        for (int t = 0; t < n_tokens; t++) {
            /* several tokens: the halves doubled, less the offsets: the one-token lanes */
            if (n_tokens > 1) acc[t] = _mm512_sub_epi32(_mm512_slli_epi32(acc[t], 1),
                                                        _mm512_zextsi256_si512(offsets[t]));
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            acc_f[t] = accumulate_scaled16(acc_f[t], acc[t], dx * y->d);
        }
    }
    for (int t = 0; t < n_tokens; t++) out[t] = _mm512_reduce_add_ps(acc_f[t]);
}

DEFINE_DOT_ENTRY_POINTS(iq1_m_vnni, iq1_m_dot_tokens)

/* ------------------------------------------------------------------------------------------ */

void lb_register_iq1_avx512(lb_kernel_set *set) {
    pthread_once(&eight_u_grid_once, fill_eight_u_grid);
    set_dot(set, LOWBIT_TYPE_IQ1_S, dot_iq1_s_vnni, dot_iq1_s_vnni_tokens);
    set_dot(set, LOWBIT_TYPE_IQ1_M, dot_iq1_m_vnni, dot_iq1_m_vnni_tokens);
}
