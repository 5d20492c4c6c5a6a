/* Error values and their names. */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const status_names[LOWBIT_ERR_COUNT_] = {
    [LOWBIT_OK] = "ok",
    [LOWBIT_ERR_INVALID_ARGUMENT] = "invalid argument",
    [LOWBIT_ERR_NO_MEMORY] = "out of memory",
    [LOWBIT_ERR_IO] = "input/output error",
    [LOWBIT_ERR_BAD_FILE] = "bad file",
    [LOWBIT_ERR_UNSUPPORTED] = "unsupported",
    [LOWBIT_ERR_SHAPE] = "bad shape",
    [LOWBIT_ERR_NONFINITE] = "NaN or Inf in input",
    [LOWBIT_ERR_SCALE_OVERFLOW] = "scale overflow",
    [LOWBIT_ERR_NOT_FOUND] = "not found",
    [LOWBIT_ERR_CANCELLED] = "cancelled",
};

const char *lowbit_status_name(lowbit_status status) {
    if ((int)status < 0 || status >= LOWBIT_ERR_COUNT_) return "unknown status";
    return status_names[status];
}

lowbit_status lb_diag_set(lowbit_diag *diag, lowbit_status status, int64_t row, uint64_t offset,
                          const char *fmt, ...) {
    if (diag) {
        diag->status = status;
        diag->row = row;
        diag->offset = offset;
        va_list args;
        va_start(args, fmt);
        vsnprintf(diag->message, sizeof diag->message, fmt, args);
        va_end(args);
    }
    return status;
}

uint16_t lowbit_fp32_to_fp16(float f) { return lb_fp32_to_fp16(f); }
float lowbit_fp16_to_fp32(uint16_t h) { return lb_fp16_to_fp32(h); }
uint16_t lowbit_fp32_to_bf16(float f) { return lb_fp32_to_bf16(f); }
float lowbit_bf16_to_fp32(uint16_t h) { return lb_bf16_to_fp32(h); }
