/*
 * Kernels: the dot products and matrix products the runtime is built on. Each format's scalar
 * reference dot product lives in its format file (the type table's vec_dot); faster versions for
 * a CPU's vector extensions are chosen at run time by lb_vec_dot_kernel.
 */
#ifndef LOWBIT_KERNELS_H
#define LOWBIT_KERNELS_H

#include "../common/common.h"

/* The fastest dot product of `type` (weights) with its activation format on this CPU; the type
   table's scalar reference when no faster one exists. NULL for a type without a dot product. */
lowbit_vec_dot_fn lb_vec_dot_kernel(lowbit_type type);

#endif
