/*
 * Kernels: the dot products and matrix products the runtime is built on. Each format's scalar
 * reference dot product lives in its format file (the type table's vec_dot); faster versions for
 * a CPU's vector extensions live in x86/ and arm/, one file per (format family, instruction set),
 * and are chosen at run time by the CPU's features (dispatch.c).
 */
#ifndef LOWBIT_KERNELS_H
#define LOWBIT_KERNELS_H

#include "../common/common.h"

/* Instruction-set levels, each including the ones below it on its architecture. */
typedef enum lb_cpu_level {
    LB_CPU_SCALAR = 0,
    LB_CPU_AVX2 = 1,        /* x86-64: AVX2 + FMA + F16C */
    LB_CPU_AVX512 = 2,      /* x86-64: AVX-512 F, BW, VL */
    LB_CPU_AVX512_VNNI = 3, /* x86-64: AVX-512 VNNI on top */
    LB_CPU_NEON = 1,        /* AArch64: Advanced SIMD (always present) */
    LB_CPU_NEON_DOTPROD = 2 /* AArch64: the SDOT/UDOT dot-product extension */
} lb_cpu_level;

/* The level this CPU supports, capped by the LOWBIT_CPU environment variable ("scalar", "avx2",
   "avx512", "avx512vnni", "neon", "dotprod"), read once. LOWBIT_INTERLEAVE=0 (also read once)
   turns the interleaved layouts off, leaving interleave_rows all 0 in the active set. */
lb_cpu_level lb_cpu_level_detected(void);
const char *lb_cpu_level_name(lb_cpu_level level);

/* The interleaved layouts of interleaved.h: R rows' blocks of one column side by side (IQ4_NL's
   blocks have Q4_0's shape and take its byte permutation; MXFP4's too, after one-byte scales;
   Q4_K's super-blocks take it with d and dmin as the scale and their Q8_K activations). */
typedef enum lb_interleaved_layout {
    LB_IL_Q4_0_X4,
    LB_IL_Q4_0_X8,
    LB_IL_Q8_0_X4,
    LB_IL_Q8_0_X8,
    LB_IL_IQ4_NL_X4,
    LB_IL_IQ4_NL_X8,
    LB_IL_MXFP4_X4,
    LB_IL_MXFP4_X8,
    LB_IL_Q4_K_X4,
    LB_IL_Q4_K_X8,
    LB_IL_COUNT
} lb_interleaved_layout;

/* One group of R interleaved weight rows (n_blocks block columns) times n_tokens Q8_0 activation
   rows (n_blocks blocks each, one after the other) into out[t * out_stride + r], r < R.
   activation_sums[t * n_blocks + b] is the sum of the 32 levels of activation block b of token t
   (kernels that need it take the weights' offset out through it). Every output is the type
   table's reference dot product bit for bit: exact integer block sums, then
   sum = sum + (float)sumi * (d_w * d_a) over the blocks in order, unfused (interleaved.h). */
typedef void (*lb_interleaved_fn)(int64_t n_blocks, const void *group, const void *activations,
                                  const int32_t *activation_sums, int64_t n_tokens, float *out,
                                  int64_t out_stride);

/* One weight row against n_tokens <= LB_DOT_TOKENS activation rows that lie activation_stride
   bytes apart: out[t] = the level's vec_dot of the row with activation row t, bit for bit (the
   same operations per token), while the row's unpacking (levels, scales) is done once for all
   of them. What makes batched products (prompts, perplexity) faster than one dot per token. */
#define LB_DOT_TOKENS 4
typedef void (*lb_vec_dot_tokens_fn)(int64_t n, const void *weights, const void *activations,
                                     size_t activation_stride, int n_tokens, float *out);

/* The kernels of one level: per type id, the dot product with its activation format and the
   activation quantizer (bytes identical to the type table's quantize_ref). NULL: not provided.
   interleaved: per layout (the scalar references of interleaved.c at least); interleave_rows:
   per type, the layout's row count (4 or 8) that the forward pass should repack into at this
   level because it measured faster than the plain kernels, 0 to keep the plain layout. */
typedef struct lb_kernel_set {
    lowbit_vec_dot_fn vec_dot[LOWBIT_TYPE_COUNT];
    /* vec_dot_tokens[t] is used only while vec_dot[t] is still tokens_pair[t], the single-token
       kernel it reproduces: a later level that overrides vec_dot alone disables it */
    lb_vec_dot_tokens_fn vec_dot_tokens[LOWBIT_TYPE_COUNT];
    lowbit_vec_dot_fn tokens_pair[LOWBIT_TYPE_COUNT];
    lowbit_quantize_row_fn quantize_activation[LOWBIT_TYPE_COUNT];
    lb_interleaved_fn interleaved[LB_IL_COUNT];
    uint8_t interleave_rows[LOWBIT_TYPE_COUNT];
} lb_kernel_set;

/* Fills `set` with the kernels available up to `level` (later levels override earlier ones), the
   type table's scalar references first. Tests call it for every level to compare kernels. */
void lb_kernels_for_level(lb_cpu_level level, lb_kernel_set *set);

/* The fastest dot product of `type` (weights) with its activation format on this CPU, and the
   activation quantizer of an activation format; NULL for a type without one. */
lowbit_vec_dot_fn lb_vec_dot_kernel(lowbit_type type);
/* The multi-token kernel of `type` that matches lb_vec_dot_kernel(type), or NULL. */
lb_vec_dot_tokens_fn lb_vec_dot_tokens_kernel(lowbit_type type);
lowbit_quantize_row_fn lb_quantize_activation_kernel(lowbit_type activation_type);
/* The active level's kernel set (detected once). */
const lb_kernel_set *lb_active_kernels(void);

/* The scalar references of the interleaved layouts (interleaved.c). */
void lb_register_interleaved_reference(lb_kernel_set *set);

/* Registration functions of the kernel files (each fills the entries it implements). */
#if defined(__x86_64__)
void lb_register_legacy_avx2(lb_kernel_set *set);
void lb_register_kquants_avx2(lb_kernel_set *set);
void lb_register_iq1_avx2(lb_kernel_set *set);
void lb_register_lattice_avx2(lb_kernel_set *set);
/* AVX-512 VNNI kernels of the 32-element block formats and F32 (called only with VNNI). */
void lb_register_legacy_avx512(lb_kernel_set *set);
void lb_register_interleaved_avx2(lb_kernel_set *set);
/* installs nothing on a CPU without VNNI */
void lb_register_interleaved_avx512(lb_kernel_set *set);
/* AVX-512 VL + VNNI kernels of the 256-element formats (256-bit registers); nothing without VNNI */
void lb_register_kquants_avx512(lb_kernel_set *set);
/* AVX-512 VNNI kernels of IQ1_S and IQ1_M (called only with VNNI) */
void lb_register_iq1_avx512(lb_kernel_set *set);
/* AVX-512 VNNI kernels of IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S (called only with VNNI) */
void lb_register_lattice_avx512(lb_kernel_set *set);
#endif
#if defined(__aarch64__)
void lb_register_neon(lb_kernel_set *set);
void lb_register_neon_dotprod(lb_kernel_set *set);
void lb_register_lattice_dotprod(lb_kernel_set *set);
/* the two above built for plain NEON, SDOT emulated: they fill the formats neon.c lacks */
void lb_register_neon_dotprod_emulated(lb_kernel_set *set);
void lb_register_lattice_dotprod_emulated(lb_kernel_set *set);
void lb_register_interleaved_dotprod(lb_kernel_set *set);
#endif

#endif
