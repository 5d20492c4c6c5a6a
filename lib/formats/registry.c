/* The type table: one row per format. Everything that walks tensors looks its type up here. */
#include "blocks.h"

#include <ctype.h>

#define LB_ROW(T, ID, BLOCK, BYTES, QUANTIZED, DOT_TYPE)                                          \
    {.name = #T, .type = ID, .block_size = BLOCK, .block_bytes = BYTES, .is_quantized = QUANTIZED, \
     .vec_dot_type = DOT_TYPE, .quantize_ref = lb_quantize_ref_##T, .quantize = lb_quantize_##T,  \
     .dequantize = lb_dequantize_##T, .vec_dot = lb_vec_dot_##T}

/* A format lowbit decodes and multiplies but cannot encode yet. */
#define LB_DECODE_ONLY_ROW(T, ID, BLOCK, BYTES, DOT_TYPE)                                          \
    {.name = #T, .type = ID, .block_size = BLOCK, .block_bytes = BYTES, .is_quantized = 1,        \
     .vec_dot_type = DOT_TYPE, .dequantize = lb_dequantize_##T, .vec_dot = lb_vec_dot_##T}

static const lowbit_type_traits type_table[] = {
    LB_ROW(f32, LOWBIT_TYPE_F32, 1, 4, 0, LOWBIT_TYPE_F32),
    LB_ROW(f16, LOWBIT_TYPE_F16, 1, 2, 0, LOWBIT_TYPE_F16),
    LB_ROW(bf16, LOWBIT_TYPE_BF16, 1, 2, 0, LOWBIT_TYPE_BF16),
    LB_ROW(q8_0, LOWBIT_TYPE_Q8_0, QK8_0, sizeof(block_q8_0), 1, LOWBIT_TYPE_Q8_0),
    LB_ROW(q8_1, LOWBIT_TYPE_Q8_1, QK8_1, sizeof(block_q8_1), 1, LOWBIT_TYPE_Q8_1),
    LB_ROW(q4_0, LOWBIT_TYPE_Q4_0, QK4_0, sizeof(block_q4_0), 1, LOWBIT_TYPE_Q8_0),
    LB_ROW(q4_1, LOWBIT_TYPE_Q4_1, QK4_1, sizeof(block_q4_1), 1, LOWBIT_TYPE_Q8_1),
    LB_ROW(q5_0, LOWBIT_TYPE_Q5_0, QK5_0, sizeof(block_q5_0), 1, LOWBIT_TYPE_Q8_0),
    LB_ROW(q5_1, LOWBIT_TYPE_Q5_1, QK5_1, sizeof(block_q5_1), 1, LOWBIT_TYPE_Q8_1),
    LB_ROW(q2_K, LOWBIT_TYPE_Q2_K, QK_K, sizeof(block_q2_K), 1, LOWBIT_TYPE_Q8_K),
    LB_ROW(q3_K, LOWBIT_TYPE_Q3_K, QK_K, sizeof(block_q3_K), 1, LOWBIT_TYPE_Q8_K),
    LB_ROW(q4_K, LOWBIT_TYPE_Q4_K, QK_K, sizeof(block_q4_K), 1, LOWBIT_TYPE_Q8_K),
    LB_ROW(q5_K, LOWBIT_TYPE_Q5_K, QK_K, sizeof(block_q5_K), 1, LOWBIT_TYPE_Q8_K),
    LB_ROW(q6_K, LOWBIT_TYPE_Q6_K, QK_K, sizeof(block_q6_K), 1, LOWBIT_TYPE_Q8_K),
    LB_ROW(q8_K, LOWBIT_TYPE_Q8_K, QK_K, sizeof(block_q8_K), 1, LOWBIT_TYPE_Q8_K),
    LB_ROW(iq4_nl, LOWBIT_TYPE_IQ4_NL, QK4_NL, sizeof(block_iq4_nl), 1, LOWBIT_TYPE_Q8_0),
    LB_ROW(iq4_xs, LOWBIT_TYPE_IQ4_XS, QK_K, sizeof(block_iq4_xs), 1, LOWBIT_TYPE_Q8_K),
    LB_ROW(tq1_0, LOWBIT_TYPE_TQ1_0, QK_K, sizeof(block_tq1_0), 1, LOWBIT_TYPE_Q8_K),
    LB_ROW(tq2_0, LOWBIT_TYPE_TQ2_0, QK_K, sizeof(block_tq2_0), 1, LOWBIT_TYPE_Q8_K),
    LB_ROW(mxfp4, LOWBIT_TYPE_MXFP4, QK_MXFP4, sizeof(block_mxfp4), 1, LOWBIT_TYPE_Q8_0),
    LB_ROW(nvfp4, LOWBIT_TYPE_NVFP4, QK_NVFP4, sizeof(block_nvfp4), 1, LOWBIT_TYPE_Q8_0),
    LB_DECODE_ONLY_ROW(iq2_xxs, LOWBIT_TYPE_IQ2_XXS, QK_K, sizeof(block_iq2_xxs), LOWBIT_TYPE_Q8_K),
    LB_DECODE_ONLY_ROW(iq2_xs, LOWBIT_TYPE_IQ2_XS, QK_K, sizeof(block_iq2_xs), LOWBIT_TYPE_Q8_K),
    LB_DECODE_ONLY_ROW(iq2_s, LOWBIT_TYPE_IQ2_S, QK_K, sizeof(block_iq2_s), LOWBIT_TYPE_Q8_K),
    LB_DECODE_ONLY_ROW(iq3_xxs, LOWBIT_TYPE_IQ3_XXS, QK_K, sizeof(block_iq3_xxs), LOWBIT_TYPE_Q8_K),
    LB_DECODE_ONLY_ROW(iq3_s, LOWBIT_TYPE_IQ3_S, QK_K, sizeof(block_iq3_s), LOWBIT_TYPE_Q8_K),
    LB_DECODE_ONLY_ROW(iq1_s, LOWBIT_TYPE_IQ1_S, QK_K, sizeof(block_iq1_s), LOWBIT_TYPE_Q8_K),
    LB_DECODE_ONLY_ROW(iq1_m, LOWBIT_TYPE_IQ1_M, QK_K, sizeof(block_iq1_m), LOWBIT_TYPE_Q8_K),
};

/* Integer storage types: GGUF files hold them (an integer-only model's weights and biases), so
   lookups by id and name know them, but they are not formats: nothing encodes floats into them
   through the type table, and lowbit_type_count/lowbit_type_at list the formats only. */
#define LB_INTEGER_ROW(T, ID, BYTES)                                                              \
    {.name = #T, .type = ID, .block_size = 1, .block_bytes = BYTES, .is_quantized = 0,            \
     .vec_dot_type = ID, .dequantize = lb_dequantize_##T}

static const lowbit_type_traits integer_table[] = {
    LB_INTEGER_ROW(i8, LOWBIT_TYPE_I8, 1),
    LB_INTEGER_ROW(i16, LOWBIT_TYPE_I16, 2),
    LB_INTEGER_ROW(i32, LOWBIT_TYPE_I32, 4),
};

const lowbit_type_traits *lowbit_type_info(lowbit_type type) {
    for (int i = 0; i < LB_ARRAY_LEN(type_table); i++) {
        if (type_table[i].type == type) return &type_table[i];
    }
    for (int i = 0; i < LB_ARRAY_LEN(integer_table); i++) {
        if (integer_table[i].type == type) return &integer_table[i];
    }
    return NULL;
}

int lowbit_type_count(void) { return LB_ARRAY_LEN(type_table); }

const lowbit_type_traits *lowbit_type_at(int index) {
    if (index < 0 || index >= LB_ARRAY_LEN(type_table)) return NULL;
    return &type_table[index];
}

static int names_equal_ignoring_case(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    }
    return *a == *b;
}

lowbit_status lowbit_type_from_name(const char *name, lowbit_type *type) {
    if (!name || !type) return LOWBIT_ERR_INVALID_ARGUMENT;
    for (int i = 0; i < LB_ARRAY_LEN(type_table); i++) {
        if (names_equal_ignoring_case(type_table[i].name, name)) {
            *type = type_table[i].type;
            return LOWBIT_OK;
        }
    }
    for (int i = 0; i < LB_ARRAY_LEN(integer_table); i++) {
        if (names_equal_ignoring_case(integer_table[i].name, name)) {
            *type = integer_table[i].type;
            return LOWBIT_OK;
        }
    }
    return LOWBIT_ERR_NOT_FOUND;
}

size_t lowbit_row_bytes(lowbit_type type, int64_t n) {
    const lowbit_type_traits *t = lowbit_type_info(type);
    if (!t || n < 0 || n % t->block_size != 0) return 0;
    return (size_t)(n / t->block_size) * (size_t)t->block_bytes;
}

double lowbit_bits_per_weight(lowbit_type type) {
    const lowbit_type_traits *t = lowbit_type_info(type);
    return t ? 8.0 * t->block_bytes / t->block_size : 0.0;
}

/* Block geometry of every type id ggml defines, including those lowbit does not encode yet, so a
   file reader can validate tensor sizes of any GGUF file. */
typedef struct ggml_geometry {
    int16_t id;
    int16_t block_size;
    int16_t block_bytes;
} ggml_geometry;

static const ggml_geometry ggml_geometries[] = {
    {0, 1, 4},      {1, 1, 2},      {2, 32, 18},    {3, 32, 20},    {6, 32, 22},
    {7, 32, 24},    {8, 32, 34},    {9, 32, 36},    {10, 256, 84},  {11, 256, 110},
    {12, 256, 144}, {13, 256, 176}, {14, 256, 210}, {15, 256, 292}, {16, 256, 66},
    {17, 256, 74},  {18, 256, 98},  {19, 256, 50},  {20, 32, 18},   {21, 256, 110},
    {22, 256, 82},  {23, 256, 136}, {24, 1, 1},     {25, 1, 2},     {26, 1, 4},
    {27, 1, 8},     {28, 1, 8},     {29, 256, 56},  {30, 1, 2},     {34, 256, 54},
    {35, 256, 66},  {39, 32, 17},   {40, 64, 36},   {41, 128, 18},  {42, 64, 18},
};

int lb_ggml_type_geometry(uint32_t id, int *block_size, int *block_bytes) {
    for (int i = 0; i < LB_ARRAY_LEN(ggml_geometries); i++) {
        if ((uint32_t)ggml_geometries[i].id == id) {
            *block_size = ggml_geometries[i].block_size;
            *block_bytes = ggml_geometries[i].block_bytes;
            return 1;
        }
    }
    return 0;
}
