/*
 * Choosing kernels at run time. For now every type uses its scalar reference dot product from
 * the type table; vectorized kernels register here as they are written.
 */
#include "kernels.h"

lowbit_vec_dot_fn lb_vec_dot_kernel(lowbit_type type) {
    const lowbit_type_traits *t = lowbit_type_info(type);
    return t ? t->vec_dot : NULL;
}
