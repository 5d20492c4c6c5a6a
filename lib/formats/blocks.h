/*
 * Block layouts of every format, byte for byte as GGUF/ggml stores them, and the row functions
 * each format family file implements. registry.c puts them in the type table.
 */
#ifndef LOWBIT_BLOCKS_H
#define LOWBIT_BLOCKS_H

#include "../common/common.h"

#include <assert.h>
#include <stdint.h>

typedef uint16_t lb_half; /* IEEE binary16 bits, little-endian in files */

/* ---- legacy 32-element blocks (legacy.c) ---- */
#define QK4_0 32
typedef struct { lb_half d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
#define QK4_1 32
typedef struct { lb_half d; lb_half m; uint8_t qs[QK4_1 / 2]; } block_q4_1;
#define QK5_0 32
typedef struct { lb_half d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
#define QK5_1 32
typedef struct { lb_half d; lb_half m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
#define QK8_0 32
typedef struct { lb_half d; int8_t qs[QK8_0]; } block_q8_0;
#define QK8_1 32
/* s = d * sum(qs), kept so that dot products with Q4_1/Q5_1 can add the min term cheaply */
typedef struct { lb_half d; lb_half s; int8_t qs[QK8_1]; } block_q8_1;

/* ---- K-quants: 256-element super-blocks (kquants_minmax.c: Q2_K, Q4_K, Q5_K;
        kquants_symmetric.c: Q3_K, Q6_K and the activation format Q8_K) ---- */
#define QK_K 256
#define K_SCALE_SIZE 12
typedef struct {
    uint8_t scales[QK_K / 16]; /* 4-bit scale (low) and 4-bit min (high) per 16 elements */
    uint8_t qs[QK_K / 4];      /* 2-bit quants */
    lb_half d;                 /* super-block scale of the scales */
    lb_half dmin;              /* super-block scale of the mins */
} block_q2_K;
typedef struct {
    uint8_t hmask[QK_K / 8];   /* high bit of the 3-bit quants */
    uint8_t qs[QK_K / 4];      /* low 2 bits */
    uint8_t scales[12];        /* 16 six-bit scales */
    lb_half d;
} block_q3_K;
typedef struct {
    lb_half d;
    lb_half dmin;
    uint8_t scales[K_SCALE_SIZE]; /* 8 six-bit scales and 8 six-bit mins */
    uint8_t qs[QK_K / 2];
} block_q4_K;
typedef struct {
    lb_half d;
    lb_half dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
typedef struct {
    uint8_t ql[QK_K / 2];      /* low 4 bits */
    uint8_t qh[QK_K / 4];      /* high 2 bits */
    int8_t scales[QK_K / 16];  /* 8-bit scales per 16 elements */
    lb_half d;
} block_q6_K;
typedef struct {
    float d;                   /* fp32 scale: Q8_K is only an activation format */
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];  /* sums of each 16 quants */
} block_q8_K;

/* ---- non-linear 4-bit (iquants.c) ---- */
#define QK4_NL 32
typedef struct { lb_half d; uint8_t qs[QK4_NL / 2]; } block_iq4_nl;
typedef struct {
    lb_half d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
} block_iq4_xs;

/* ---- lattice formats, decode only for now (iquants_lattice.c) ---- */
typedef struct { lb_half d; uint16_t qs[QK_K / 8]; } block_iq2_xxs;
typedef struct { lb_half d; uint16_t qs[QK_K / 8]; uint8_t scales[QK_K / 32]; } block_iq2_xs;
typedef struct {
    lb_half d;
    uint8_t qs[QK_K / 4]; /* grid index low bits, then the signs */
    uint8_t qh[QK_K / 32];
    uint8_t scales[QK_K / 32];
} block_iq2_s;
typedef struct { lb_half d; uint8_t qs[3 * QK_K / 8]; } block_iq3_xxs;
typedef struct {
    lb_half d;
    uint8_t qs[QK_K / 4];
    uint8_t qh[QK_K / 32];
    uint8_t signs[QK_K / 8];
    uint8_t scales[QK_K / 64];
} block_iq3_s;
typedef struct { lb_half d; uint8_t qs[QK_K / 8]; uint16_t qh[QK_K / 32]; } block_iq1_s;
typedef struct {
    uint8_t qs[QK_K / 8];
    uint8_t qh[QK_K / 16];
    uint8_t scales[QK_K / 32]; /* 3-bit sub-scales; the fp16 super-scale is spread over the top nibbles */
} block_iq1_m;

/* ---- ternary (ternary.c) ---- */
typedef struct {
    uint8_t qs[(QK_K - 4 * QK_K / 64) / 5]; /* 5 trits per byte, base 3 */
    uint8_t qh[QK_K / 64];                  /* 4 trits per byte */
    lb_half d;
} block_tq1_0;
typedef struct { uint8_t qs[QK_K / 4]; lb_half d; } block_tq2_0;

/* ---- 4-bit floats, E2M1 (fp4.c) ---- */
#define QK_MXFP4 32
typedef struct { uint8_t e; uint8_t qs[QK_MXFP4 / 2]; } block_mxfp4; /* e: E8M0 shared scale */
#define QK_NVFP4 64
#define QK_NVFP4_SUB 16
typedef struct { uint8_t d[QK_NVFP4 / QK_NVFP4_SUB]; uint8_t qs[QK_NVFP4 / 2]; } block_nvfp4;

static_assert(sizeof(block_q4_0) == 18, "q4_0 layout");
static_assert(sizeof(block_q4_1) == 20, "q4_1 layout");
static_assert(sizeof(block_q5_0) == 22, "q5_0 layout");
static_assert(sizeof(block_q5_1) == 24, "q5_1 layout");
static_assert(sizeof(block_q8_0) == 34, "q8_0 layout");
static_assert(sizeof(block_q8_1) == 36, "q8_1 layout");
static_assert(sizeof(block_q2_K) == 84, "q2_K layout");
static_assert(sizeof(block_q3_K) == 110, "q3_K layout");
static_assert(sizeof(block_q4_K) == 144, "q4_K layout");
static_assert(sizeof(block_q5_K) == 176, "q5_K layout");
static_assert(sizeof(block_q6_K) == 210, "q6_K layout");
static_assert(sizeof(block_q8_K) == 292, "q8_K layout");
static_assert(sizeof(block_iq4_nl) == 18, "iq4_nl layout");
static_assert(sizeof(block_iq4_xs) == 136, "iq4_xs layout");
static_assert(sizeof(block_iq2_xxs) == 66, "iq2_xxs layout");
static_assert(sizeof(block_iq2_xs) == 74, "iq2_xs layout");
static_assert(sizeof(block_iq2_s) == 82, "iq2_s layout");
static_assert(sizeof(block_iq3_xxs) == 98, "iq3_xxs layout");
static_assert(sizeof(block_iq3_s) == 110, "iq3_s layout");
static_assert(sizeof(block_iq1_s) == 50, "iq1_s layout");
static_assert(sizeof(block_iq1_m) == 56, "iq1_m layout");
static_assert(sizeof(block_tq1_0) == 54, "tq1_0 layout");
static_assert(sizeof(block_tq2_0) == 66, "tq2_0 layout");
static_assert(sizeof(block_mxfp4) == 17, "mxfp4 layout");
static_assert(sizeof(block_nvfp4) == 36, "nvfp4 layout");

/*
 * Each format T provides (see lowbit_type_traits in lowbit.h for the contracts):
 *   lowbit_status lb_quantize_ref_T(const float *src, void *dst, int64_t n, const float *importance);
 *   lowbit_status lb_quantize_T(const float *src, void *dst, int64_t n, const float *importance);
 *   void lb_dequantize_T(const void *src, float *dst, int64_t n);
 *   float lb_vec_dot_T(int64_t n, const void *weights, const void *activations);
 */
#define LB_DECLARE_FORMAT(T)                                                                     \
    lowbit_status lb_quantize_ref_##T(const float *src, void *dst, int64_t n,                   \
                                      const float *importance);                                \
    lowbit_status lb_quantize_##T(const float *src, void *dst, int64_t n,                       \
                                  const float *importance);                                    \
    void lb_dequantize_##T(const void *src, float *dst, int64_t n);                             \
    float lb_vec_dot_##T(int64_t n, const void *weights, const void *activations)

/* floats.c */
LB_DECLARE_FORMAT(f32);
LB_DECLARE_FORMAT(f16);
LB_DECLARE_FORMAT(bf16);
void lb_dequantize_i8(const void *src, float *dst, int64_t n);
void lb_dequantize_i16(const void *src, float *dst, int64_t n);
void lb_dequantize_i32(const void *src, float *dst, int64_t n);
/* legacy.c */
LB_DECLARE_FORMAT(q4_0);
LB_DECLARE_FORMAT(q4_1);
LB_DECLARE_FORMAT(q5_0);
LB_DECLARE_FORMAT(q5_1);
LB_DECLARE_FORMAT(q8_0);
LB_DECLARE_FORMAT(q8_1);
/* kquants_minmax.c and kquants_symmetric.c */
LB_DECLARE_FORMAT(q2_K);
LB_DECLARE_FORMAT(q3_K);
LB_DECLARE_FORMAT(q4_K);
LB_DECLARE_FORMAT(q5_K);
LB_DECLARE_FORMAT(q6_K);
LB_DECLARE_FORMAT(q8_K);
/* iquants.c */
LB_DECLARE_FORMAT(iq4_nl);
LB_DECLARE_FORMAT(iq4_xs);
/* iquants_lattice.c: decoders and dot products only; no encoders yet */
#define LB_DECLARE_DECODER(T)                                                                    \
    void lb_dequantize_##T(const void *src, float *dst, int64_t n);                             \
    float lb_vec_dot_##T(int64_t n, const void *weights, const void *activations)
LB_DECLARE_DECODER(iq2_xxs);
LB_DECLARE_DECODER(iq2_xs);
LB_DECLARE_DECODER(iq2_s);
LB_DECLARE_DECODER(iq3_xxs);
LB_DECLARE_DECODER(iq3_s);
LB_DECLARE_DECODER(iq1_s);
LB_DECLARE_DECODER(iq1_m);
/* ternary.c */
LB_DECLARE_FORMAT(tq1_0);
LB_DECLARE_FORMAT(tq2_0);
/* fp4.c */
LB_DECLARE_FORMAT(mxfp4);
LB_DECLARE_FORMAT(nvfp4);

/* The 16 IQ4_NL/IQ4_XS code values (the non-linear grid), shared by both formats. */
extern const int8_t lb_kvalues_iq4nl[16];

#endif /* LOWBIT_BLOCKS_H */
