/*
 * AArch64 kernels with the dot-product extension (SDOT, armv8.2-a+dotprod) of the lattice
 * formats IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S and IQ1_M with Q8_K activations, each
 * with a multi-token version (kernels.h, lb_vec_dot_tokens_fn). The file is also built for plain
 * NEON with SDOT emulated (lattice_sdot_emulated.c), which serves the level below.
 *
 * The formats, per super-block of 256 weights (8 sub-blocks of 32, in groups of 8): a codebook
 * index per group of 8 (IQ2, IQ1: entries of 8 bytes) or per 4 (IQ3: entries of 4 bytes), sign
 * bits per group (7 of them with the 8th implied by even parity in IQ2_XXS, IQ2_XS and IQ3_XXS,
 * a plain byte in IQ2_S and IQ3_S, none in IQ1), and odd sub-scales 2s + 1 per 32 or 16 weights
 * over a power of two; IQ1 shifts each group by delta = +-1/8 instead of signing it.
 *
 * Integer parts, exact. Per super-block the parts shared by every group are worked out in
 * vectors first: the sign bytes (the 7-bit fields spread to bytes by shift-and-insert, their
 * parity from CNT inserted as bit 7), the odd scales, and for the formats whose indices span
 * more than a byte the indices themselves (low byte and high bits interleaved by ST2 into an
 * array of 16-bit indices). Each group's codebook entry is then one scalar load by its index,
 * two entries (IQ3: four) put together per vector of 16 weights; its sign byte is spread over
 * the group's 8 bytes by zips and turned into masks by CMTST, which negate the magnitudes
 * ((g ^ m) - m). The weights so unpacked are signed bytes laid out like the activations, and
 * SDOT sums four products into each s32 lane. The lanes are pairwise-added (to two per
 * sub-block of 32 weights, or one per 16 where the scales go per 16) and multiplied by their
 * odd scales in int32; the total of the lanes is 8, 4 or 1 times the reference's block sum (the
 * factor comes off exactly in SCVTF's fraction bits). IQ1 counts in eighths, 8q + sign(delta)
 * for q + delta: IQ1_S (a delta per 32 weights) dots the codebook values as they are, with 8
 * (2s + 1) as scales, and adds sign(delta) (2s + 1) times the activations' sums through Q8_K's
 * bsums (so, like the x86 kernels, it expects bsums to be the sums of qs, as the quantizer
 * writes them); IQ1_M (a delta per group of 8) puts 8q + sign(delta) into the weights.
 *
 * Float parts, equal to the references to rounding, not bit for bit: the reference adds each
 * group's float product into a block sum, these kernels convert each super-block's exact
 * integer sums (4 lanes) and multiply-add them with d times the activation scale into a float32x4
 * accumulator per token, with one horizontal sum per row at the end.
 *
 * Multi-token: one body serves a weight row against up to LB_DOT_TOKENS activation rows. The
 * codebook lookups, signs and scales are done once per super-block and the unpacked weights of
 * 64 elements at a time meet each token's activations in turn; each token's integer and float
 * operations are those of the one-token kernel, the same body instantiated with one token, so
 * the results agree bit for bit.
 *
 * Tested under qemu only (not measured on AArch64 hardware): the choices were made by the
 * instruction counts of the loops.
 */
#include "../../formats/blocks.h"
#include "../../formats/iq_grids.h"
#include "../kernels.h"
#include "dotprod_common.h"
#include "neon_common.h"

#include <arm_neon.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Helpers (the shared ones are in dotprod_common.h)                                           */
/* ------------------------------------------------------------------------------------------ */

/* The loops over a block's four chunks of 64 weights are unrolled by request like those over
   tokens (neon_common.h): every step depends on the chunk (which scales, which sums are
   live). */
#define UNROLL_CHUNKS _Pragma("GCC unroll 4")

/* SDOT of 16 weight bytes with 16 activation bytes, into a fresh accumulator. */
static inline int32x4_t dot1(int8x16_t w, int8x16_t a) {
    return sdot(vdupq_n_s32(0), w, a);
}

/* 64 activation bytes as four vectors, in one LD1 of four registers (x4 = 1) or in four plain
   loads (the same values), the latter where many vectors are live (several tokens). */
static inline ALWAYS_INLINE void load_activations64(const int8_t *a, int x4, int8x16_t out[4]) {
    if (x4) {
        const int8x16x4_t v = vld1q_s8_x4(a);
        for (int i = 0; i < 4; i++) out[i] = v.val[i];
        return;
    }
    for (int i = 0; i < 4; i++) out[i] = load_i8(a + 16 * i);
}

/* ------------------------------------------------------------------------------------------ */
/* Per super-block: signs, scales, indices                                                     */
/* ------------------------------------------------------------------------------------------ */

enum lattice_format { IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M };

/* The formats whose scales go per 16 weights (the others: per sub-block of 32). */
static inline int scales_per_16(int format) {
    return format == IQ2_XS || format == IQ2_S || format == IQ1_M;
}

/* What a super-block's groups share, unpacked once for all tokens. */
typedef struct lattice_block {
    /* group g's sign byte (bit j: element j negative) at byte g % 16 of signs[g / 16]; IQ1_M:
       its delta's sign as a byte, +1 or -1 */
    uint8x16_t signs[2];
    /* the formats with a scale per 32 weights: the odd scales 2s + 1 (IQ1_S: times 8) of
       sub-blocks 4i..4i+3 in scales[i] */
    int32x4_t scales[2];
    /* the formats with a scale per 16 weights: those of halves 8i..8i+7 in half_scales[i],
       kept narrow and widened where they are used, to leave registers to the tokens */
    uint16x8_t half_scales[2];
    /* IQ1_S: (2s + 1) sign(delta) per sub-block, 0..3 and 4..7 */
    int32x4_t delta_scales[2];
    /* the codebook indices of the formats whose indices span more than a byte, in order */
    uint16_t index[64];
} lattice_block;

/* Four 7-bit sign fields per 32-bit lane (bits 0..27) as even-parity sign bytes, field l of lane
   i in byte 4i + l: the fields are spread to bytes by two shift-and-inserts (pairs to 16-bit
   halves, then to bytes), and their parity (bit 0 of the population count) is inserted as
   bit 7. */
static inline uint8x16_t even_parity_signs(uint32x4_t packed) {
    const uint32x4_t halves = vsliq_n_u32(packed, vshrq_n_u32(packed, 14), 16);
    const uint16x8_t pairs = vreinterpretq_u16_u32(halves);
    const uint8x16_t bytes = vreinterpretq_u8_u16(vsliq_n_u16(pairs, vshrq_n_u16(pairs, 7), 8));
    const uint8x16_t fields = vandq_u8(bytes, vdupq_n_u8(0x7F));
    return vsliq_n_u8(fields, vcntq_u8(fields), 7);
}

/* IQ2_XS's 7-bit sign fields (the top of each 16-bit word; words 0..15 in w0, w1) likewise. */
static inline uint8x16_t word_parity_signs(uint16x8_t w0, uint16x8_t w1) {
    const uint8x16_t top = vuzp2q_u8(vreinterpretq_u8_u16(w0), vreinterpretq_u8_u16(w1));
    const uint8x16_t fields = vshrq_n_u8(top, 1);
    return vsliq_n_u8(fields, vcntq_u8(fields), 7);
}

/* The odd scales 2s + 1 of the 32-bit words' top nibbles s (IQ2_XXS, IQ3_XXS). */
static inline int32x4_t odd_top_nibbles(uint32x4_t packed) {
    return vreinterpretq_s32_u32(vsliq_n_u32(vdupq_n_u32(1), vshrq_n_u32(packed, 28), 1));
}

/* IQ2_XS, IQ2_S: the 16 odd scales 2s + 1 per 16 weights, s being the nibbles of the 8 scale
   bytes, low first. */
static inline void iq2_half_scales(const uint8_t packed[8], uint16x8_t out[2]) {
    const uint8x8_t p = vld1_u8(packed);
    const uint8x8_t lo = vand_u8(p, vdup_n_u8(0x0F)), hi = vshr_n_u8(p, 4);
    const uint8x16_t nibbles = vcombine_u8(vzip1_u8(lo, hi), vzip2_u8(lo, hi));
    const uint8x16_t odd = vsliq_n_u8(vdupq_n_u8(1), nibbles, 1);
    out[0] = vmovl_u8(vget_low_u8(odd));
    out[1] = vmovl_high_u8(odd);
}

/* 16 indices of up to 16 bits, low bytes and high bytes given apart, stored interleaved. */
static inline void store_indices16(uint16_t *index, uint8x16_t low, uint8x16_t high) {
    const uint8x16x2_t pairs = {{low, high}};
    vst2q_u8((uint8_t *)index, pairs);
}

/* Bytes [v0 x4, v1 x4, v2 x4, v3 x4] (first) and [v4 x4, ..., v7 x4] (second) of the 8 bytes of
   v, zipped with themselves. */
static inline void repeat_bytes4(uint8x8_t v, uint8x16_t out[2]) {
    const uint8x16_t twice = vzip1q_u8(vcombine_u8(v, v), vcombine_u8(v, v));
    const uint16x8_t t16 = vreinterpretq_u16_u8(twice);
    out[0] = vreinterpretq_u8_u16(vzip1q_u16(t16, t16));
    out[1] = vreinterpretq_u8_u16(vzip2q_u16(t16, t16));
}

/* The 16-bit lanes [w0 x4, w1 x4], [w2 x4, w3 x4], ... of the words of w: out[i] holds words
   2i and 2i + 1, four times each, for words 0..3 (quads = 1) or 0..7 (quads = 2). */
static inline void repeat_words4(uint16x8_t w, int quads, uint16x8_t *out) {
    const uint16x8_t z[2] = {vzip1q_u16(w, w), vzip2q_u16(w, w)};
    for (int h = 0; h < quads; h++) {
        const uint32x4_t z32 = vreinterpretq_u32_u16(z[h]);
        out[2 * h] = vreinterpretq_u16_u32(vzip1q_u32(z32, z32));
        out[2 * h + 1] = vreinterpretq_u16_u32(vzip2q_u32(z32, z32));
    }
}

static inline void unpack_iq2_xxs(const block_iq2_xxs *x, lattice_block *u) {
    /* per sub-block two 32-bit words: 4 index bytes, then the sign fields and the scale */
    const uint8_t *q = (const uint8_t *)x->qs;
    for (int i = 0; i < 2; i++) {
        const uint32x4_t aux = vuzp2q_u32(vreinterpretq_u32_u8(load_u8(q + 32 * i)),
                                          vreinterpretq_u32_u8(load_u8(q + 32 * i + 16)));
        u->signs[i] = even_parity_signs(aux);
        u->scales[i] = odd_top_nibbles(aux);
    }
}

static inline void unpack_iq3_xxs(const block_iq3_xxs *x, lattice_block *u) {
    /* the 64 index bytes, then per sub-block the 32-bit word of IQ2_XXS */
    for (int i = 0; i < 2; i++) {
        const uint32x4_t aux = vreinterpretq_u32_u8(load_u8(x->qs + QK_K / 4 + 16 * i));
        u->signs[i] = even_parity_signs(aux);
        u->scales[i] = odd_top_nibbles(aux);
    }
}

static inline void unpack_iq2_xs(const block_iq2_xs *x, lattice_block *u) {
    /* per group a 16-bit word: the 9-bit index, then 7 sign bits */
    const uint8_t *q = (const uint8_t *)x->qs;
    const uint16x8_t nine_bits = vdupq_n_u16(511);
    for (int i = 0; i < 2; i++) {
        const uint16x8_t w0 = vreinterpretq_u16_u8(load_u8(q + 32 * i));
        const uint16x8_t w1 = vreinterpretq_u16_u8(load_u8(q + 32 * i + 16));
        u->signs[i] = word_parity_signs(w0, w1);
        vst1q_u16(u->index + 16 * i, vandq_u16(w0, nine_bits));
        vst1q_u16(u->index + 16 * i + 8, vandq_u16(w1, nine_bits));
    }
    iq2_half_scales(x->scales, u->half_scales);
}

static inline void unpack_iq2_s(const block_iq2_s *x, lattice_block *u) {
    /* 10-bit indices: a byte of qs and bits 2l, 2l + 1 of qh[ib] for group l of sub-block ib */
    static const int8_t kFieldShift[16] = {0, -2, -4, -6, 0, -2, -4, -6,
                                           0, -2, -4, -6, 0, -2, -4, -6};
    uint8x16_t qh[2];
    repeat_bytes4(vld1_u8(x->qh), qh);
    for (int i = 0; i < 2; i++) {
        const uint8x16_t high = vandq_u8(vshlq_u8(qh[i], vld1q_s8(kFieldShift)), vdupq_n_u8(3));
        store_indices16(u->index + 16 * i, load_u8(x->qs + 16 * i), high);
        u->signs[i] = load_u8(x->qs + QK_K / 8 + 16 * i);
    }
    iq2_half_scales(x->scales, u->half_scales);
}

static inline void unpack_iq3_s(const block_iq3_s *x, lattice_block *u) {
    /* 9-bit indices: a byte of qs and bit k of qh[ib] for entry k of sub-block ib */
    static const int8_t kBitShift[16] = {0, -1, -2, -3, -4, -5, -6, -7,
                                         0, -1, -2, -3, -4, -5, -6, -7};
    uint8x16_t qh4[2];
    repeat_bytes4(vld1_u8(x->qh), qh4);
    for (int i = 0; i < 4; i++) {
        /* qh[2i] eight times, then qh[2i + 1] */
        const uint32x4_t r = vreinterpretq_u32_u8(qh4[i / 2]);
        const uint8x16_t qh8 = vreinterpretq_u8_u32(i % 2 ? vzip2q_u32(r, r) : vzip1q_u32(r, r));
        const uint8x16_t high = vandq_u8(vshlq_u8(qh8, vld1q_s8(kBitShift)), vdupq_n_u8(1));
        store_indices16(u->index + 16 * i, load_u8(x->qs + 16 * i), high);
    }
    for (int i = 0; i < 2; i++) u->signs[i] = load_u8(x->signs + 16 * i);
    /* a 4-bit scale per sub-block, low nibble first */
    uint32_t packed;
    memcpy(&packed, x->scales, sizeof packed);
    const uint8x8_t p = vreinterpret_u8_u32(vdup_n_u32(packed));
    const uint8x8_t nibbles = vzip1_u8(vand_u8(p, vdup_n_u8(0x0F)), vshr_n_u8(p, 4));
    const uint16x8_t odd = vmovl_u8(vsli_n_u8(vdup_n_u8(1), nibbles, 1));
    u->scales[0] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(odd)));
    u->scales[1] = vreinterpretq_s32_u32(vmovl_high_u16(odd));
}

/* 16-bit fields moved down by per-lane shifts, narrowed to bytes and masked to `bits`. */
static inline uint8x16_t narrow_fields(uint16x8_t a, uint16x8_t b, int16x8_t shift, int bits) {
    const uint8x16_t n = vmovn_high_u16(vmovn_u16(vshlq_u16(a, shift)), vshlq_u16(b, shift));
    return vandq_u8(n, vdupq_n_u8((uint8_t)((1u << bits) - 1)));
}

static inline void unpack_iq1_s(const block_iq1_s *x, lattice_block *u) {
    /* qh[ib]: four 3-bit index extensions (bits 3l..3l+2), the 3-bit scale s (bits 12..14) and
       the delta's sign (bit 15) */
    static const int16_t kFieldShift[8] = {0, -3, -6, -9, 0, -3, -6, -9};
    const uint16x8_t qh = vld1q_u16(x->qh);
    uint16x8_t words[4];
    repeat_words4(qh, 2, words);
    const int16x8_t shift = vld1q_s16(kFieldShift);
    for (int i = 0; i < 2; i++) {
        const uint8x16_t high = narrow_fields(words[2 * i], words[2 * i + 1], shift, 3);
        store_indices16(u->index + 16 * i, load_u8(x->qs + 16 * i), high);
    }
    const uint16x8_t s = vandq_u16(vshrq_n_u16(qh, 12), vdupq_n_u16(7));
    const int16x8_t odd = vreinterpretq_s16_u16(vsliq_n_u16(vdupq_n_u16(1), s, 1));
    const int16x8_t negative = vshrq_n_s16(vreinterpretq_s16_u16(qh), 15);
    const int16x8_t signed_odd = vsubq_s16(veorq_s16(odd, negative), negative);
    const int16x8_t odd8 = vshlq_n_s16(odd, 3);
    u->scales[0] = vmovl_s16(vget_low_s16(odd8));
    u->scales[1] = vmovl_high_s16(odd8);
    u->delta_scales[0] = vmovl_s16(vget_low_s16(signed_odd));
    u->delta_scales[1] = vmovl_high_s16(signed_odd);
}

static inline void unpack_iq1_m(const block_iq1_m *x, lattice_block *u) {
    /* nibble g of qh (low first) belongs to group g: a 3-bit index extension and the delta's
       sign (bit 3) */
    const uint8x16_t qh = load_u8(x->qh), upper = vshrq_n_u8(qh, 4);
    const uint8x16_t nibbles[2] = {vzip1q_u8(qh, upper), vzip2q_u8(qh, upper)};
    for (int i = 0; i < 2; i++) {
        const uint8x16_t high = vandq_u8(nibbles[i], vdupq_n_u8(7));
        store_indices16(u->index + 16 * i, load_u8(x->qs + 16 * i), high);
        const uint8x16_t negative = vtstq_u8(nibbles[i], vdupq_n_u8(8));
        u->signs[i] = vorrq_u8(negative, vdupq_n_u8(1));
    }
    /* the 3-bit scale of half j: bits 3 (j % 4)..+2 of scale word j / 4 */
    static const int16_t kFieldShift[8] = {0, -3, -6, -9, 0, -3, -6, -9};
    const uint16x4_t w = vreinterpret_u16_u8(vld1_u8(x->scales));
    uint16x8_t words[2]; /* halves 0..7, 8..15 */
    repeat_words4(vcombine_u16(w, w), 1, words);
    for (int i = 0; i < 2; i++) {
        const uint16x8_t s = vandq_u16(vshlq_u16(words[i], vld1q_s16(kFieldShift)), vdupq_n_u16(7));
        u->half_scales[i] = vsliq_n_u16(vdupq_n_u16(1), s, 1);
    }
}

/* IQ1_M keeps no separate fp16 scale: its 16 bits are the top nibbles of the four scale words. */
static inline float iq1_m_super_scale(const block_iq1_m *x) {
    uint64_t words;
    memcpy(&words, x->scales, sizeof words);
    const uint16_t bits = (uint16_t)(((words >> 12) & 0x000F) | ((words >> 24) & 0x00F0) |
                                     ((words >> 36) & 0x0F00) | ((words >> 48) & 0xF000));
    return half_to_float(bits);
}

/* Unpacks what block `block` of a row shares (lattice_block) and returns its scale d. */
static inline ALWAYS_INLINE float unpack_block(int format, const void *block, lattice_block *u) {
    switch (format) {
    case IQ2_XXS: unpack_iq2_xxs(block, u); return half_to_float(((const block_iq2_xxs *)block)->d);
    case IQ2_XS: unpack_iq2_xs(block, u); return half_to_float(((const block_iq2_xs *)block)->d);
    case IQ2_S: unpack_iq2_s(block, u); return half_to_float(((const block_iq2_s *)block)->d);
    case IQ3_XXS: unpack_iq3_xxs(block, u); return half_to_float(((const block_iq3_xxs *)block)->d);
    case IQ3_S: unpack_iq3_s(block, u); return half_to_float(((const block_iq3_s *)block)->d);
    case IQ1_S: unpack_iq1_s(block, u); return half_to_float(((const block_iq1_s *)block)->d);
    default: unpack_iq1_m(block, u); return iq1_m_super_scale(block);
    }
}

static inline size_t block_bytes(int format) {
    switch (format) {
    case IQ2_XXS: return sizeof(block_iq2_xxs);
    case IQ2_XS: return sizeof(block_iq2_xs);
    case IQ2_S: return sizeof(block_iq2_s);
    case IQ3_XXS: return sizeof(block_iq3_xxs);
    case IQ3_S: return sizeof(block_iq3_s);
    case IQ1_S: return sizeof(block_iq1_s);
    default: return sizeof(block_iq1_m);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The weights, 64 at a time, and their sums with each token                                   */
/* ------------------------------------------------------------------------------------------ */

/* Two codebook entries of 8 bytes as one vector. */
static inline uint8x16_t grid8_pair(const uint64_t *grid, unsigned i0, unsigned i1) {
    return vreinterpretq_u8_u64(vcombine_u64(vld1_u64(grid + i0), vld1_u64(grid + i1)));
}

/* Four codebook entries of 4 bytes as one vector (byte indices, 16-bit indices). */
static inline uint8x16_t grid4_quad(const uint32_t *grid, const uint8_t i[4]) {
    const uint32x4_t v = {grid[i[0]], grid[i[1]], grid[i[2]], grid[i[3]]};
    return vreinterpretq_u8_u32(v);
}
static inline uint8x16_t grid4_quad16(const uint32_t *grid, const uint16_t i[4]) {
    const uint32x4_t v = {grid[i[0]], grid[i[1]], grid[i[2]], grid[i[3]]};
    return vreinterpretq_u8_u32(v);
}

/* The sign bytes (IQ1_M: delta bytes) of groups 8h..8h+7 of `signs` (h = 0, 1), each spread
   over its group's 8 elements: out[k] holds groups 8h + 2k and 8h + 2k + 1. Three rounds of
   zips with itself, 7 instructions for 64 weights and no table indices to keep in registers. */
static inline void spread_signs64(uint8x16_t signs, int h, uint8x16_t out[4]) {
    const uint8x16_t twice = h ? vzip2q_u8(signs, signs) : vzip1q_u8(signs, signs);
    const uint16x8_t t = vreinterpretq_u16_u8(twice);
    const uint32x4_t four[2] = {vreinterpretq_u32_u16(vzip1q_u16(t, t)),
                                vreinterpretq_u32_u16(vzip2q_u16(t, t))};
    for (int i = 0; i < 2; i++) {
        out[2 * i] = vreinterpretq_u8_u32(vzip1q_u32(four[i], four[i]));
        out[2 * i + 1] = vreinterpretq_u8_u32(vzip2q_u32(four[i], four[i]));
    }
}

/* The bit of its sign byte that each of 16 weights (two groups) takes. */
static const uint8_t kBitOfElement[16] = {1, 2, 4, 8, 16, 32, 64, 128,
                                          1, 2, 4, 8, 16, 32, 64, 128};

/* The 16 magnitudes of groups g and g + 1 (g even) of a block. */
static inline ALWAYS_INLINE uint8x16_t magnitudes16(int format, const void *block,
                                                    const lattice_block *u, int g) {
    switch (format) {
    case IQ2_XXS: {
        /* sub-block g / 4 is 8 bytes: 4 index bytes first */
        const uint8_t *q = (const uint8_t *)((const block_iq2_xxs *)block)->qs + 8 * (g / 4);
        return grid8_pair(lb_iq2xxs_grid, q[g % 4], q[g % 4 + 1]);
    }
    case IQ2_XS: return grid8_pair(lb_iq2xs_grid, u->index[g], u->index[g + 1]);
    case IQ2_S: return grid8_pair(lb_iq2s_grid, u->index[g], u->index[g + 1]);
    case IQ3_XXS: return grid4_quad(lb_iq3xxs_grid, ((const block_iq3_xxs *)block)->qs + 2 * g);
    case IQ3_S: return grid4_quad16(lb_iq3s_grid, u->index + 2 * g);
    default: return grid8_pair(lb_iq1s_grid, u->index[g], u->index[g + 1]);
    }
}

/* The signed weights of elements 64c..64c+63 of a block (groups 8c..8c+7), 16 in each w[k]:
   the magnitudes negated under the masks of their sign bits; IQ1_S's codebook values as they
   are (the factor 8 is in its scales); IQ1_M's 8q + sign(delta). */
static inline ALWAYS_INLINE void block_weights64(int format, const void *block,
                                                 const lattice_block *u, int c, int8x16_t w[4]) {
    uint8x16_t spread[4];
    if (format != IQ1_S) spread_signs64(u->signs[c / 2], c % 2, spread);
    for (int k = 0; k < 4; k++) {
        const uint8x16_t m = magnitudes16(format, block, u, 8 * c + 2 * k);
        if (format == IQ1_S) {
            w[k] = as_i8(m);
        } else if (format == IQ1_M) {
            w[k] = as_i8(vmlaq_u8(spread[k], m, vdupq_n_u8(8)));
        } else {
            const uint8x16_t negative = vtstq_u8(spread[k], vld1q_u8(kBitOfElement));
            w[k] = as_i8(vsubq_u8(veorq_u8(m, negative), negative));
        }
    }
}

/* The scales that chunk c's sums meet: per 32 weights [s(2c), s(2c), s(2c + 1), s(2c + 1)], the
   lanes of the pairwise sums of the two sub-blocks' SDOT results; per 16 weights those of
   halves 4c..4c+3. */
static inline ALWAYS_INLINE int32x4_t chunk_scales(int format, const lattice_block *u, int c) {
    if (scales_per_16(format)) {
        const uint16x8_t h = u->half_scales[c / 2];
        return vreinterpretq_s32_u32(c % 2 ? vmovl_high_u16(h) : vmovl_u16(vget_low_u16(h)));
    }
    const int32x4_t s = u->scales[c / 2];
    return c % 2 ? vzip2q_s32(s, s) : vzip1q_s32(s, s);
}

/* sumi[t]: lanes that add up to the sum over the block's sub-blocks (or halves) of scale times
   the exact SDOT sum with token t's activations (block b of its row). Every 64 weights are
   unpacked once for all tokens; per token their SDOT sums are pairwise-added, to two lanes per
   sub-block (or one per half), and meet their scales in one multiply-add. Only the total of the
   lanes is used, so nothing else is kept per token across the chunks. */
static inline ALWAYS_INLINE void block_scaled_sums(int format, const void *block,
                                                   const lattice_block *u,
                                                   const void *activations, size_t stride,
                                                   int64_t b, int n_tokens, int32x4_t sumi[]) {
    UNROLL_CHUNKS for (int c = 0; c < 4; c++) {
        int8x16_t w[4];
        block_weights64(format, block, u, c, w);
        const int32x4_t scales = chunk_scales(format, u, c);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            int8x16_t a[4];
            load_activations64(q8_K_block(activations, stride, t, b)->qs + 64 * c,
                               n_tokens == 1, a);
            int32x4_t s;
            if (scales_per_16(format)) {
                int32x4_t d[4];
                for (int k = 0; k < 4; k++) d[k] = dot1(w[k], a[k]);
                s = lane_sums4(d);
            } else {
                s = vpaddq_s32(dot2(w[0], w[1], a[0], a[1]), dot2(w[2], w[3], a[2], a[3]));
            }
            sumi[t] = c == 0 ? vmulq_s32(s, scales) : vmlaq_s32(sumi[t], s, scales);
        }
    }
}

/* The power of two the integer sums are too large by: 8 for IQ2 (scales (2s + 1) / 8) and IQ1
   (weights 8q + sign(delta) for q + delta), 4 for IQ3_XXS (scales (2s + 1) / 4), 1 for IQ3_S
   (scales 2s + 1). */
static inline int sum_shift(int format) {
    return format == IQ3_S ? 0 : format == IQ3_XXS ? 2 : 3;
}

static inline ALWAYS_INLINE float32x4_t sums_to_float(int32x4_t sums, int shift) {
    switch (shift) {
    case 0: return vcvtq_f32_s32(sums);
    case 2: return vcvtq_n_f32_s32(sums, 2);
    default: return vcvtq_n_f32_s32(sums, 3);
    }
}

/* A row of `format` against n_tokens activation rows. */
static inline ALWAYS_INLINE void lattice_tokens_body(int format, int64_t n, const void *weights,
                                                     const void *activations, size_t stride,
                                                     int n_tokens, float *out) {
    const size_t bytes = block_bytes(format);
    float32x4_t acc[LB_DOT_TOKENS];
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const void *block = (const uint8_t *)weights + b * bytes;
        lattice_block u;
        const float x_d = unpack_block(format, block, &u);
        int32x4_t sumi[LB_DOT_TOKENS];
        block_scaled_sums(format, block, &u, activations, stride, b, n_tokens, sumi);
        UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) {
            const block_q8_K *y = q8_K_block(activations, stride, t, b);
            int32x4_t s = sumi[t];
            if (format == IQ1_S) {
                /* sign(delta) times the sums of the sub-blocks' activations */
                s = vmlaq_s32(s, vpaddlq_s16(vld1q_s16(y->bsums)), u.delta_scales[0]);
                s = vmlaq_s32(s, vpaddlq_s16(vld1q_s16(y->bsums + 8)), u.delta_scales[1]);
            }
            acc[t] = vfmaq_n_f32(acc[t], sums_to_float(s, sum_shift(format)), x_d * y->d);
        }
    }
    UNROLL_TOKENS for (int t = 0; t < n_tokens; t++) out[t] = vaddvq_f32(acc[t]);
}

#define DEFINE_LATTICE(NAME, FORMAT)                                                             \
    static inline ALWAYS_INLINE void NAME##_body(int64_t n, const void *w, const void *a,         \
                                                 size_t stride, int n_tokens, float *out) {      \
        lattice_tokens_body(FORMAT, n, w, a, stride, n_tokens, out);                             \
    }                                                                                            \
    DEFINE_DOT_ENTRY_POINTS(NAME, NAME##_body)

DEFINE_LATTICE(iq2_xxs, IQ2_XXS)
DEFINE_LATTICE(iq2_xs, IQ2_XS)
DEFINE_LATTICE(iq2_s, IQ2_S)
DEFINE_LATTICE(iq3_xxs, IQ3_XXS)
DEFINE_LATTICE(iq3_s, IQ3_S)
DEFINE_LATTICE(iq1_s, IQ1_S)
DEFINE_LATTICE(iq1_m, IQ1_M)

void lb_register_lattice_dotprod(lb_kernel_set *set) {
    register_dot(set, LOWBIT_TYPE_IQ2_XXS, dot_iq2_xxs, dot_iq2_xxs_tokens);
    register_dot(set, LOWBIT_TYPE_IQ2_XS, dot_iq2_xs, dot_iq2_xs_tokens);
    register_dot(set, LOWBIT_TYPE_IQ2_S, dot_iq2_s, dot_iq2_s_tokens);
    register_dot(set, LOWBIT_TYPE_IQ3_XXS, dot_iq3_xxs, dot_iq3_xxs_tokens);
    register_dot(set, LOWBIT_TYPE_IQ3_S, dot_iq3_s, dot_iq3_s_tokens);
    register_dot(set, LOWBIT_TYPE_IQ1_S, dot_iq1_s, dot_iq1_s_tokens);
    register_dot(set, LOWBIT_TYPE_IQ1_M, dot_iq1_m, dot_iq1_m_tokens);
}
