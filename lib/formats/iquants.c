/* PLACEHOLDER: replaced by the real implementation of this family. */
#include "blocks.h"

const int8_t lb_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
lowbit_status lb_quantize_ref_iq4_nl(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
lowbit_status lb_quantize_iq4_nl(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
void lb_dequantize_iq4_nl(const void *src, float *dst, int64_t n) { (void)src; (void)dst; (void)n; }
float lb_vec_dot_iq4_nl(int64_t n, const void *w, const void *a) { (void)n; (void)w; (void)a; return 0.0f; }
lowbit_status lb_quantize_ref_iq4_xs(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
lowbit_status lb_quantize_iq4_xs(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
void lb_dequantize_iq4_xs(const void *src, float *dst, int64_t n) { (void)src; (void)dst; (void)n; }
float lb_vec_dot_iq4_xs(int64_t n, const void *w, const void *a) { (void)n; (void)w; (void)a; return 0.0f; }
