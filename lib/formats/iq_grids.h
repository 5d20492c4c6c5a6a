/* Codebooks of the lattice formats (generated into iq_grids.c by scripts/gen_grids.py). Each
   grid entry packs 8 (IQ2, IQ1) or 4 (IQ3) magnitudes, one per byte, element 0 in the low byte. */
#ifndef LOWBIT_IQ_GRIDS_H
#define LOWBIT_IQ_GRIDS_H

#include <stdint.h>

extern const uint64_t lb_iq2xxs_grid[256];
extern const uint64_t lb_iq2xs_grid[512];
extern const uint64_t lb_iq2s_grid[1024];
extern const uint32_t lb_iq3xxs_grid[256];
extern const uint32_t lb_iq3s_grid[512];
extern const uint64_t lb_iq1s_grid[2048]; /* signed bytes -1, 0, +1 */
/* 7 sign bits -> 8 sign bits with even parity (the 8th sign is implied by the other 7) */
extern const uint8_t lb_ksigns_iq2xs[128];

#endif
