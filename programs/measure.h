/*
 * Measurement helpers of the commands that time things (`lowbit bench`, `lowbit classifier`) and
 * of bench/bench_formats: a monotonic clock, medians, and what memory-bound kernels are compared
 * with: the machine's read bandwidth and the size of its last-level cache (a "cold" matrix must
 * be far larger). One implementation, so that every benchmark quotes the same ceiling.
 */
#ifndef LOWBIT_MEASURE_H
#define LOWBIT_MEASURE_H

#include "lowbit.h"

#include <stdint.h>

/* Seconds on the monotonic clock. */
double measure_now_seconds(void);

/* The median of n > 0 values (sorts them in place; the mean of the middle two for even n). */
double measure_median(double *values, int n);

/*
 * Read bandwidth in GB/s (1e9 bytes per second) of a streaming sum over `mib` MiB, on one thread
 * (gbs[0]) and on the pool's threads (gbs[1]); each the median of `reps` passes.
 *
 * Four read loops are timed and the fastest one counts: a plain sum with independent chains, the
 * same sum prefetching 8 KiB ahead into L2, as the GEMV kernels do, and both again with the widest
 * vector loads. Some machines stream faster with the prefetch (an Intel Xeon VM: 13 -> 17 GB/s on
 * one thread, 25 -> 33 GB/s on two), others less so; either way the figure is the best rate a
 * plain read reaches, so a kernel's share of it means what it says. Returns 0 (and gbs[] = 0) when the buffer cannot be allocated.
 */
int measure_read_bandwidth(int64_t mib, lowbit_pool *pool, int reps, double gbs[2]);

/*
 * The same two read rates over a buffer of `bytes` (rounded up to whole MiB) read again and again,
 * so that it stays in cache when it fits: the ceiling of a warm GEMV over a matrix of that size
 * (on a machine whose cores share a large L3, a 4096 x 4096 matrix of 4-8 bits is served from L3,
 * whose per-core rate can be well below the core's arithmetic speed).
 */
int measure_cache_read_bandwidth(int64_t bytes, lowbit_pool *pool, int reps, double gbs[2]);

/* The largest data cache this machine reports (sysfs), in bytes; 0 when unknown. */
int64_t measure_last_level_cache_bytes(void);

/* A buffer size in MiB far beyond the last-level cache: 4x its size, and at least min_mib. */
int64_t measure_beyond_cache_mib(int64_t min_mib);

#endif
