/*
 * A fixed pool of worker threads. lowbit_pool_run splits [0, n) into one contiguous range per
 * thread (the caller takes range 0), so which thread computes what depends only on n and the pool
 * size, and each item is computed by the same code whatever the split: results never depend on
 * the thread count.
 *
 * Handing out a job and waiting for it spin for a short while before sleeping. A GEMV of a
 * decode step takes tens to hundreds of microseconds, about what waking a sleeping thread costs
 * (a futex wake, and in a virtual machine an inter-processor interrupt): with sleeping alone, a
 * worker started its share late and a two-thread 4096 x 4096 Q2_K GEMV ran 1.25x faster than one
 * thread. Workers poll the job counter for up to SPIN_SECONDS after their last job, the caller
 * polls the count of running workers, and both fall back to the mutex and condition variables,
 * so an idle pool sleeps.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include "common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

/* How long a worker keeps polling for the next job, and the caller for the workers' end. */
#define SPIN_SECONDS 200e-6

struct lowbit_pool {
    int n_threads;          /* including the calling thread */
    pthread_t *workers;     /* n_threads - 1 of them */
    pthread_mutex_t lock;
    pthread_cond_t work_ready;
    pthread_cond_t work_done;
    /* bumped (under the lock, after the job's fields are set) for each job; workers wait for a
       new one */
    _Atomic uint64_t generation;
    _Atomic int pending;    /* workers still running the current job */
    int stopping;           /* under the lock */
    /* the current job: written before generation is bumped, read after it is seen */
    int64_t n_items;
    lowbit_range_fn fn;
    void *ctx;
};

typedef struct worker_arg {
    lowbit_pool *pool;
    int index;
} worker_arg;

int lowbit_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Polls until done(pool, arg) holds or SPIN_SECONDS pass; returns whether it held. The clock is
   read once every 64 polls. */
static int spin_until(int (*done)(lowbit_pool *, uint64_t), lowbit_pool *pool, uint64_t arg) {
    const double start = seconds_now();
    for (unsigned i = 1;; i++) {
        if (done(pool, arg)) return 1;
        cpu_relax();
        if (i % 64 == 0 && seconds_now() - start > SPIN_SECONDS) return 0;
    }
}

static int new_job(lowbit_pool *pool, uint64_t seen) {
    return atomic_load_explicit(&pool->generation, memory_order_acquire) != seen;
}

static int workers_done(lowbit_pool *pool, uint64_t unused) {
    (void)unused;
    return atomic_load_explicit(&pool->pending, memory_order_acquire) == 0;
}

static void run_share(lowbit_pool *pool, int index) {
    const int64_t n = pool->n_items;
    const int64_t parts = pool->n_threads;
    const int64_t begin = n * index / parts;
    const int64_t end = n * (index + 1) / parts;
    if (begin < end) pool->fn(pool->ctx, begin, end);
}

static void *worker_main(void *p) {
    worker_arg *arg = p;
    lowbit_pool *pool = arg->pool;
    const int index = arg->index;
    free(arg);
    uint64_t seen = 0;
    for (;;) {
        if (!spin_until(new_job, pool, seen)) {
            /* the generation only changes under the lock, so no job is missed while waiting */
            pthread_mutex_lock(&pool->lock);
            while (!pool->stopping && !new_job(pool, seen)) {
                pthread_cond_wait(&pool->work_ready, &pool->lock);
            }
            const int stopping = pool->stopping;
            pthread_mutex_unlock(&pool->lock);
            if (stopping) return NULL;
        }
        seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        if (pool->fn == NULL) return NULL; /* the stop job of lowbit_pool_destroy */

        run_share(pool, index);

        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
            /* the last worker: wake the caller if it stopped spinning (it waits under the lock,
               so taking the lock first means the signal cannot fall between its check and its
               wait) */
            pthread_mutex_lock(&pool->lock);
            pthread_cond_signal(&pool->work_done);
            pthread_mutex_unlock(&pool->lock);
        }
    }
}

lowbit_status lowbit_pool_create(int n_threads, lowbit_pool **out) {
    if (!out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (n_threads <= 0) n_threads = lowbit_cpu_count();
    lowbit_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return LOWBIT_ERR_NO_MEMORY;
    pool->n_threads = n_threads;
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->pending, 0);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->work_ready, NULL);
    pthread_cond_init(&pool->work_done, NULL);
    if (n_threads > 1) {
        pool->workers = calloc((size_t)n_threads - 1, sizeof *pool->workers);
        if (!pool->workers) {
            lowbit_pool_destroy(pool);
            return LOWBIT_ERR_NO_MEMORY;
        }
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *arg = malloc(sizeof *arg);
        if (arg) *arg = (worker_arg){pool, i};
        if (!arg || pthread_create(&pool->workers[i - 1], NULL, worker_main, arg) != 0) {
            free(arg);
            pool->n_threads = i; /* only the workers started so far are joined */
            lowbit_pool_destroy(pool);
            return LOWBIT_ERR_NO_MEMORY;
        }
    }
    *out = pool;
    return LOWBIT_OK;
}

void lowbit_pool_destroy(lowbit_pool *pool) {
    if (!pool) return;
    /* a job without a function: spinning workers see it as a new job, sleeping ones `stopping` */
    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
    pool->fn = NULL;
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 1; i < pool->n_threads; i++) pthread_join(pool->workers[i - 1], NULL);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->work_ready);
    pthread_cond_destroy(&pool->work_done);
    free(pool->workers);
    free(pool);
}

int lowbit_pool_size(const lowbit_pool *pool) { return pool ? pool->n_threads : 1; }

void lowbit_pool_run(lowbit_pool *pool, int64_t n_items, lowbit_range_fn fn, void *ctx) {
    if (n_items <= 0) return;
    if (!pool || pool->n_threads == 1) {
        fn(ctx, 0, n_items);
        return;
    }
    pthread_mutex_lock(&pool->lock);
    pool->n_items = n_items;
    pool->fn = fn;
    pool->ctx = ctx;
    atomic_store_explicit(&pool->pending, pool->n_threads - 1, memory_order_relaxed);
    /* release: a worker that sees the new generation sees the job's fields and `pending` */
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->lock);

    run_share(pool, 0);

    if (!spin_until(workers_done, pool, 0)) {
        pthread_mutex_lock(&pool->lock);
        while (!workers_done(pool, 0)) pthread_cond_wait(&pool->work_done, &pool->lock);
        pthread_mutex_unlock(&pool->lock);
    }
}
