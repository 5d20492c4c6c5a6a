/* Shared internals of liblowbit: small helpers every part uses. Not part of the public API. */
#ifndef LOWBIT_COMMON_H
#define LOWBIT_COMMON_H

#include "lowbit.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define LB_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LB_MAX(a, b) ((a) > (b) ? (a) : (b))
#define LB_ARRAY_LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Round to the nearest integer, ties to even (the FPU's rounding of the add), for |x| < 2^22:
   the same rounding as the reference's nearest_int (a float-add trick, exact and fast). */
static inline int lb_nearest_int(float x) {
    float val = x + 12582912.f; /* 1.5 * 2^23 pushes the integer into the low mantissa bits */
    int32_t bits;
    memcpy(&bits, &val, sizeof bits);
    return (bits & 0x007fffff) - 0x00400000;
}

/* Little-endian integers of 1 to 8 bytes: every file format lowbit reads or writes stores them so,
   whatever the host's byte order. */
static inline uint64_t lb_load_le(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline void lb_store_le(uint8_t *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t lb_load_u32(const uint8_t *p) { return (uint32_t)lb_load_le(p, 4); }
static inline uint64_t lb_load_u64(const uint8_t *p) { return lb_load_le(p, 8); }

/* fp16 <-> fp32, round to nearest even, denormals included (bit manipulation, no F16C needed). */
static inline float lb_bits_to_float(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint32_t lb_float_to_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

static inline float lb_fp16_to_fp32(uint16_t h) {
    /* Shift the half's exponent and mantissa into a float's and rescale by 2^-112; denormal halves
       go through a magic-number subtraction (the "fp16" library's technique). */
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const uint32_t exp_offset = 0xE0u << 23;
    const float exp_scale = lb_bits_to_float(0x7800000u); /* 2^-112 */
    const float normalized = lb_bits_to_float((two_w >> 4) + exp_offset) * exp_scale;
    const uint32_t magic_mask = 126u << 23;
    const float magic_bias = 0.5f;
    const float denormalized = lb_bits_to_float((two_w >> 17) | magic_mask) - magic_bias;
    const uint32_t denormalized_cutoff = 1u << 27;
    const uint32_t result =
        sign | (two_w < denormalized_cutoff ? lb_float_to_bits(denormalized)
                                            : lb_float_to_bits(normalized));
    return lb_bits_to_float(result);
}

static inline uint16_t lb_fp32_to_fp16(float f) {
    /* Scaling by 2^112 then 2^-110 lets the FPU round the mantissa to 10 bits (nearest even). */
    const float scale_to_inf = lb_bits_to_float(0x77800000u);  /* 2^112 */
    const float scale_to_zero = lb_bits_to_float(0x08800000u); /* 2^-110 */
    float base = (fabsf(f) * scale_to_inf) * scale_to_zero;
    const uint32_t w = lb_float_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = lb_bits_to_float((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = lb_float_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

static inline float lb_bf16_to_fp32(uint16_t h) { return lb_bits_to_float((uint32_t)h << 16); }

static inline uint16_t lb_fp32_to_bf16(float f) {
    uint32_t u = lb_float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64); /* quiet NaN */
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);          /* nearest even */
}

/* The largest finite fp16 value: a block scale above it would be stored as Inf. */
#define LB_FP16_MAX 65504.0f

/* Stores a scale as fp16, or reports that it does not fit. */
static inline lowbit_status lb_store_fp16_scale(float d, uint16_t *out) {
    if (!(fabsf(d) <= LB_FP16_MAX)) return LOWBIT_ERR_SCALE_OVERFLOW;
    *out = lb_fp32_to_fp16(d);
    return LOWBIT_OK;
}

/* Fills a diag (if any) with a status and a printf-style message. Returns the status. */
lowbit_status lb_diag_set(lowbit_diag *diag, lowbit_status status, int64_t row, uint64_t offset,
                          const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* Block size and bytes per block of any type id ggml defines (registry.c); 0 if unknown. */
int lb_ggml_type_geometry(uint32_t id, int *block_size, int *block_bytes);

#endif /* LOWBIT_COMMON_H */
