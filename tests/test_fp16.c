/* fp16/bf16 conversions: exhaustive round trips and rounding to nearest even. */
#include "testing.h"
#include "lowbit.h"

#include <math.h>
#include <string.h>

static float next_up(float f) { return nextafterf(f, INFINITY); }

int main(void) {
    /* every finite half survives half -> float -> half */
    int mismatches = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00) continue; /* Inf and NaN */
        const float f = lowbit_fp16_to_fp32((uint16_t)h);
        if (lowbit_fp32_to_fp16(f) != h) mismatches++;
    }
    CHECK(mismatches == 0, "%d halves changed in a round trip", mismatches);
    CHECK(lowbit_fp16_to_fp32(0x3c00) == 1.0f, "1.0");
    CHECK(lowbit_fp16_to_fp32(0x0001) == 5.9604644775390625e-8f, "smallest denormal");
    CHECK(lowbit_fp16_to_fp32(0x7bff) == 65504.0f, "largest finite");
    /* halfway between 1 and 1+2^-10 rounds to even (1); just above rounds up */
    CHECK(lowbit_fp32_to_fp16(1.0f + 0x1p-11f) == 0x3c00, "tie to even");
    CHECK(lowbit_fp32_to_fp16(next_up(1.0f + 0x1p-11f)) == 0x3c01, "above the tie");
    CHECK(lowbit_fp32_to_fp16(65520.0f) == 0x7c00, "overflow to Inf");
    CHECK(lowbit_fp32_to_fp16(1e-8f) == 0x0000, "underflow to zero");
    CHECK(lowbit_fp32_to_bf16(1.0f) == 0x3f80, "bf16 one");
    CHECK(lowbit_bf16_to_fp32(0x3f80) == 1.0f, "bf16 back");
    CHECK(lowbit_fp32_to_bf16(1.0f + 0x1p-8f) == 0x3f80, "bf16 tie to even");
    CHECK(isnan(lowbit_bf16_to_fp32(lowbit_fp32_to_bf16(NAN))), "bf16 NaN stays NaN");
    return lb_test_summary();
}
