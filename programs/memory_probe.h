/*
 * What the benchmarks compare memory-bound kernels with: the machine's read bandwidth, and the
 * size of its last-level cache (a "cold" matrix must be far larger). Shared by `lowbit bench` and
 * bench/bench_formats so that both quote the same ceiling.
 */
#ifndef LOWBIT_MEMORY_PROBE_H
#define LOWBIT_MEMORY_PROBE_H

#include "lowbit.h"

#include <stdint.h>

/*
 * Read bandwidth in GB/s (1e9 bytes per second) of a streaming sum over `mib` MiB, on one thread
 * (gbs[0]) and on the pool's threads (gbs[1]); each the median of `reps` passes.
 *
 * Two read loops are timed and the faster one counts: a plain sum with independent chains, and the
 * same sum prefetching 8 KiB ahead into L2, as the GEMV kernels do. Some machines stream faster with
 * the prefetch (an Intel Xeon VM: 13 -> 17 GB/s on one thread, 25 -> 33 GB/s on two), others less
 * so; either way the figure is the best rate a plain read reaches, so a kernel's
 * share of it means what it says. Returns 0 (and gbs[] = 0) when the buffer cannot be allocated.
 */
int memory_read_bandwidth(int64_t mib, lowbit_pool *pool, int reps, double gbs[2]);

/* The largest data cache this machine reports (sysfs), in bytes; 0 when unknown. */
int64_t memory_last_level_cache_bytes(void);

/* A buffer size in MiB far beyond the last-level cache: 4x its size, and at least min_mib. */
int64_t memory_beyond_cache_mib(int64_t min_mib);

#endif
