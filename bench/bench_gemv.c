/*
 * bench_gemv: GEMV/GEMM speed of every format, the SIMD kernels (lowbit_matmul) beside the scalar
 * reference, and the machine's memory read bandwidth. The same program as `lowbit bench` (whose
 * source it builds, so that the two can never measure different things); see
 * programs/cmd_bench.c for what each figure means, or run it with --help.
 */
#include "../programs/cmd_bench.c"

int main(int argc, char **argv) { return cmd_bench(argc, argv); }
