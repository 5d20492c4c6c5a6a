/* PLACEHOLDER: replaced by the real implementation of this family. */
#include "blocks.h"

lowbit_status lb_quantize_ref_mxfp4(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
lowbit_status lb_quantize_mxfp4(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
void lb_dequantize_mxfp4(const void *src, float *dst, int64_t n) { (void)src; (void)dst; (void)n; }
float lb_vec_dot_mxfp4(int64_t n, const void *w, const void *a) { (void)n; (void)w; (void)a; return 0.0f; }
lowbit_status lb_quantize_ref_nvfp4(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
lowbit_status lb_quantize_nvfp4(const float *src, void *dst, int64_t n, const float *importance) { (void)src; (void)dst; (void)n; (void)importance; return LOWBIT_ERR_UNSUPPORTED; }
void lb_dequantize_nvfp4(const void *src, float *dst, int64_t n) { (void)src; (void)dst; (void)n; }
float lb_vec_dot_nvfp4(int64_t n, const void *w, const void *a) { (void)n; (void)w; (void)a; return 0.0f; }
