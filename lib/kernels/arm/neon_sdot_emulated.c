/*
 * neon_dotprod.c's kernels built a second time for plain NEON (ARMv8.0 cores without the
 * dot-product extension, such as the Cortex-A72), with SDOT emulated exactly (dotprod_common.h).
 * They are registered at the NEON level only for the formats neon.c has no kernel for (TQ1_0,
 * TQ2_0, MXFP4, NVFP4), which would otherwise run the scalar references there; for the others
 * neon.c's own kernels stay, written for widening multiplies from the start.
 */
#define LB_SDOT_EMULATED 1
#define lb_register_neon_dotprod lb_register_neon_dotprod_emulated
#include "neon_dotprod.c"
