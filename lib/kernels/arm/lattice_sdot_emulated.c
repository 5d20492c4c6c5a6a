/*
 * lattice_dotprod.c's kernels (IQ1_S, IQ1_M and the IQ2/IQ3 lattice formats) built a second time
 * for plain NEON (ARMv8.0 cores without the dot-product extension, such as the Cortex-A72), with
 * SDOT emulated exactly (dotprod_common.h), and registered at the NEON level, where these formats
 * would otherwise run the scalar references.
 */
#define LB_SDOT_EMULATED 1
#define lb_register_lattice_dotprod lb_register_lattice_dotprod_emulated
#include "lattice_dotprod.c"
