/* PLACEHOLDER: replaced by the real implementation of this family. */
#include "blocks.h"

lowbit_status lb_quantize_ref_q3_K(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
lowbit_status lb_quantize_q3_K(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
void lb_dequantize_q3_K(const void *src, float *dst, int64_t n) { (void)src; (void)dst; (void)n; }
float lb_vec_dot_q3_K(int64_t n, const void *w, const void *a) { (void)n; (void)w; (void)a; return 0.0f; }
lowbit_status lb_quantize_ref_q6_K(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
lowbit_status lb_quantize_q6_K(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
void lb_dequantize_q6_K(const void *src, float *dst, int64_t n) { (void)src; (void)dst; (void)n; }
float lb_vec_dot_q6_K(int64_t n, const void *w, const void *a) { (void)n; (void)w; (void)a; return 0.0f; }
lowbit_status lb_quantize_ref_q8_K(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
lowbit_status lb_quantize_q8_K(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
void lb_dequantize_q8_K(const void *src, float *dst, int64_t n) { (void)src; (void)dst; (void)n; }
float lb_vec_dot_q8_K(int64_t n, const void *w, const void *a) { (void)n; (void)w; (void)a; return 0.0f; }
