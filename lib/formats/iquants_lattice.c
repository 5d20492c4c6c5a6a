/*
 * The lattice formats IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S and IQ1_M: decoders and dot
 * products with Q8_K. (Their encoders, which search the codebooks, are not written yet.)
 *
 * Each format stores, per group of 8 (IQ2, IQ1) or 4 (IQ3) elements, an index into a fixed
 * codebook of magnitude patterns (iq_grids.c) and, except IQ1, 7 sign bits whose 8th is implied
 * by even parity (the ksigns table). Every block is first unpacked into the same shape: one small
 * integer per element and, per group of 8 elements, a float multiplier and an additive offset
 * (non-zero only for IQ1's +-1/8 shift). Decoding and the dot product are then written once.
 * The multipliers are computed in the same float operations, in the same order, as the reference
 * decoder, so decoding is bit-exact.
 */
#include "blocks.h"
#include "iq_grids.h"

#define IQ1_DELTA 0.125f
#define GROUPS_PER_BLOCK (QK_K / 8)

typedef struct unpacked_block {
    int8_t q[QK_K];                 /* signed codebook values */
    float scale[GROUPS_PER_BLOCK];  /* multiplier of each group of 8 */
    float delta[GROUPS_PER_BLOCK];  /* offset added to each value of the group before scaling */
} unpacked_block;

static uint32_t load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t load_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* Writes n (4 or 8) values of a packed codebook entry, negating those whose sign bit is set. */
static void put_signed(int8_t *q, uint64_t entry, uint8_t signs, int n) {
    for (int j = 0; j < n; j++) {
        const int8_t magnitude = (int8_t)(uint8_t)(entry >> (8 * j));
        q[j] = (signs >> j) & 1 ? (int8_t)-magnitude : magnitude;
    }
}

static void set_group(unpacked_block *u, int group, float scale, float delta) {
    u->scale[group] = scale;
    u->delta[group] = delta;
}

static void unpack_iq2_xxs(const void *src, int64_t b, unpacked_block *u) {
    const block_iq2_xxs *x = (const block_iq2_xxs *)src + b;
    const float d = lb_fp16_to_fp32(x->d);
    const uint8_t *bytes = (const uint8_t *)x->qs;
    for (int ib = 0; ib < 8; ib++) {
        const uint8_t *p = bytes + 8 * ib; /* 4 grid indices, then 4 x 7 sign bits and a scale */
        const uint32_t signs_and_scale = load_le32(p + 4);
        const float db = d * (0.5f + (float)(signs_and_scale >> 28)) * 0.25f;
        for (int l = 0; l < 4; l++) {
            const uint8_t signs = lb_ksigns_iq2xs[(signs_and_scale >> (7 * l)) & 127];
            put_signed(u->q + 32 * ib + 8 * l, lb_iq2xxs_grid[p[l]], signs, 8);
            set_group(u, 4 * ib + l, db, 0.0f);
        }
    }
}

static void unpack_iq2_xs(const void *src, int64_t b, unpacked_block *u) {
    const block_iq2_xs *x = (const block_iq2_xs *)src + b;
    const float d = lb_fp16_to_fp32(x->d);
    const uint8_t *bytes = (const uint8_t *)x->qs;
    for (int ib = 0; ib < 8; ib++) {
        const float db[2] = {d * (0.5f + (float)(x->scales[ib] & 0xf)) * 0.25f,
                             d * (0.5f + (float)(x->scales[ib] >> 4)) * 0.25f};
        for (int l = 0; l < 4; l++) {
            const uint16_t v = load_le16(bytes + 2 * (4 * ib + l)); /* 9-bit index, 7 sign bits */
            put_signed(u->q + 32 * ib + 8 * l, lb_iq2xs_grid[v & 511], lb_ksigns_iq2xs[v >> 9], 8);
            set_group(u, 4 * ib + l, db[l / 2], 0.0f);
        }
    }
}

static void unpack_iq2_s(const void *src, int64_t b, unpacked_block *u) {
    const block_iq2_s *x = (const block_iq2_s *)src + b;
    const float d = lb_fp16_to_fp32(x->d);
    const uint8_t *signs = x->qs + QK_K / 8;
    for (int ib = 0; ib < 8; ib++) {
        const float db[2] = {d * (0.5f + (float)(x->scales[ib] & 0xf)) * 0.25f,
                             d * (0.5f + (float)(x->scales[ib] >> 4)) * 0.25f};
        for (int l = 0; l < 4; l++) {
            const int index = x->qs[4 * ib + l] | ((x->qh[ib] << (8 - 2 * l)) & 0x300);
            put_signed(u->q + 32 * ib + 8 * l, lb_iq2s_grid[index], signs[4 * ib + l], 8);
            set_group(u, 4 * ib + l, db[l / 2], 0.0f);
        }
    }
}

static void unpack_iq3_xxs(const void *src, int64_t b, unpacked_block *u) {
    const block_iq3_xxs *x = (const block_iq3_xxs *)src + b;
    const float d = lb_fp16_to_fp32(x->d);
    const uint8_t *scales_and_signs = x->qs + QK_K / 4;
    for (int ib = 0; ib < 8; ib++) {
        const uint32_t aux = load_le32(scales_and_signs + 4 * ib);
        const float db = d * (0.5f + (float)(aux >> 28)) * 0.5f;
        for (int l = 0; l < 4; l++) {
            const uint8_t signs = lb_ksigns_iq2xs[(aux >> (7 * l)) & 127];
            int8_t *q = u->q + 32 * ib + 8 * l;
            put_signed(q, lb_iq3xxs_grid[x->qs[8 * ib + 2 * l]], signs, 4);
            put_signed(q + 4, lb_iq3xxs_grid[x->qs[8 * ib + 2 * l + 1]], (uint8_t)(signs >> 4), 4);
            set_group(u, 4 * ib + l, db, 0.0f);
        }
    }
}

static void unpack_iq3_s(const void *src, int64_t b, unpacked_block *u) {
    const block_iq3_s *x = (const block_iq3_s *)src + b;
    const float d = lb_fp16_to_fp32(x->d);
    for (int ib = 0; ib < 8; ib++) {
        const int nibble = ib % 2 ? x->scales[ib / 2] >> 4 : x->scales[ib / 2] & 0xf;
        const float db = d * (float)(1 + 2 * nibble);
        const uint8_t *qs = x->qs + 8 * ib;
        const int qh = x->qh[ib];
        for (int l = 0; l < 4; l++) {
            const int index1 = qs[2 * l] | ((qh << (8 - 2 * l)) & 256);
            const int index2 = qs[2 * l + 1] | ((qh << (7 - 2 * l)) & 256);
            const uint8_t signs = x->signs[4 * ib + l];
            int8_t *q = u->q + 32 * ib + 8 * l;
            put_signed(q, lb_iq3s_grid[index1], signs, 4);
            put_signed(q + 4, lb_iq3s_grid[index2], (uint8_t)(signs >> 4), 4);
            set_group(u, 4 * ib + l, db, 0.0f);
        }
    }
}

static void unpack_iq1_s(const void *src, int64_t b, unpacked_block *u) {
    const block_iq1_s *x = (const block_iq1_s *)src + b;
    const float d = lb_fp16_to_fp32(x->d);
    for (int ib = 0; ib < 8; ib++) {
        const uint16_t qh = x->qh[ib]; /* 4 x 3 index bits, 3-bit scale, delta sign */
        const float dl = d * (float)(2 * ((qh >> 12) & 7) + 1);
        const float delta = qh & 0x8000 ? -IQ1_DELTA : IQ1_DELTA;
        for (int l = 0; l < 4; l++) {
            const int index = x->qs[4 * ib + l] | (((qh >> (3 * l)) & 7) << 8);
            put_signed(u->q + 32 * ib + 8 * l, lb_iq1s_grid[index], 0, 8);
            set_group(u, 4 * ib + l, dl, delta);
        }
    }
}

/* IQ1_M keeps no separate fp16 scale: its 16 bits are the top nibbles of the four scale words. */
static float iq1_m_super_scale(const uint16_t sc[4]) {
    const uint16_t bits = (uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) |
                                     ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
    return lb_fp16_to_fp32(bits);
}

static void unpack_iq1_m(const void *src, int64_t b, unpacked_block *u) {
    const block_iq1_m *x = (const block_iq1_m *)src + b;
    uint16_t sc[4];
    for (int i = 0; i < 4; i++) sc[i] = load_le16(x->scales + 2 * i);
    const float d = iq1_m_super_scale(sc);
    for (int ib = 0; ib < 8; ib++) {
        const int shift = 6 * (ib % 2);
        const float dl[2] = {d * (float)(2 * ((sc[ib / 2] >> shift) & 7) + 1),
                             d * (float)(2 * ((sc[ib / 2] >> (shift + 3)) & 7) + 1)};
        const uint8_t *qs = x->qs + 4 * ib;
        const uint8_t *qh = x->qh + 2 * ib;
        for (int l = 0; l < 4; l++) {
            const int h = qh[l / 2] >> (4 * (l % 2)); /* 3 index bits and a delta sign per nibble */
            const int index = qs[l] | ((h & 7) << 8);
            put_signed(u->q + 32 * ib + 8 * l, lb_iq1s_grid[index], 0, 8);
            set_group(u, 4 * ib + l, dl[l / 2], h & 8 ? -IQ1_DELTA : IQ1_DELTA);
        }
    }
}

typedef void (*unpack_fn)(const void *src, int64_t block, unpacked_block *u);

static void dequantize_unpacked(unpack_fn unpack, const void *src, float *dst, int64_t n) {
    unpacked_block u;
    for (int64_t b = 0; b < n / QK_K; b++) {
        unpack(src, b, &u);
        for (int i = 0; i < QK_K; i++) *dst++ = u.scale[i / 8] * ((float)u.q[i] + u.delta[i / 8]);
    }
}

/* sum_g scale_g * (sum_j q_j a_j + delta_g * sum_j a_j) * a.d: integer sums per group of 8 */
static float dot_unpacked(unpack_fn unpack, int64_t n, const void *weights, const void *act) {
    const block_q8_K *a = act;
    unpacked_block u;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        unpack(weights, b, &u);
        float block_sum = 0.0f;
        for (int g = 0; g < GROUPS_PER_BLOCK; g++) {
            int32_t qa = 0, sa = 0;
            for (int j = 0; j < 8; j++) {
                qa += u.q[8 * g + j] * a[b].qs[8 * g + j];
                sa += a[b].qs[8 * g + j];
            }
            block_sum += u.scale[g] * ((float)qa + u.delta[g] * (float)sa);
        }
        sum += block_sum * a[b].d;
    }
    return sum;
}

#define LB_LATTICE_FORMAT(T)                                                                     \
    void lb_dequantize_##T(const void *src, float *dst, int64_t n) {                             \
        dequantize_unpacked(unpack_##T, src, dst, n);                                            \
    }                                                                                            \
    float lb_vec_dot_##T(int64_t n, const void *weights, const void *activations) {              \
        return dot_unpacked(unpack_##T, n, weights, activations);                                \
    }

LB_LATTICE_FORMAT(iq2_xxs)
LB_LATTICE_FORMAT(iq2_xs)
LB_LATTICE_FORMAT(iq2_s)
LB_LATTICE_FORMAT(iq3_xxs)
LB_LATTICE_FORMAT(iq3_s)
LB_LATTICE_FORMAT(iq1_s)
LB_LATTICE_FORMAT(iq1_m)
