/*
 * A fixed pool of worker threads. lowbit_pool_run splits [0, n) into one contiguous range per
 * thread (the caller takes range 0), so which thread computes what depends only on n and the pool
 * size, and each item is computed by the same code whatever the split: results never depend on
 * the thread count.
 */
#include "common.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct lowbit_pool {
    int n_threads;          /* including the calling thread */
    pthread_t *workers;     /* n_threads - 1 of them */
    pthread_mutex_t lock;
    pthread_cond_t work_ready;
    pthread_cond_t work_done;
    uint64_t generation;    /* bumped for each job; workers wait for a new one */
    int pending;            /* workers still running the current job */
    int stopping;
    /* the current job */
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
        pthread_mutex_lock(&pool->lock);
        while (!pool->stopping && pool->generation == seen) {
            pthread_cond_wait(&pool->work_ready, &pool->lock);
        }
        if (pool->stopping) {
            pthread_mutex_unlock(&pool->lock);
            return NULL;
        }
        seen = pool->generation;
        pthread_mutex_unlock(&pool->lock);

        run_share(pool, index);

        pthread_mutex_lock(&pool->lock);
        if (--pool->pending == 0) pthread_cond_signal(&pool->work_done);
        pthread_mutex_unlock(&pool->lock);
    }
}

lowbit_status lowbit_pool_create(int n_threads, lowbit_pool **out) {
    if (!out) return LOWBIT_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (n_threads <= 0) n_threads = lowbit_cpu_count();
    lowbit_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return LOWBIT_ERR_NO_MEMORY;
    pool->n_threads = n_threads;
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
    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
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
    pool->pending = pool->n_threads - 1;
    pool->generation++;
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->lock);

    run_share(pool, 0);

    pthread_mutex_lock(&pool->lock);
    while (pool->pending > 0) pthread_cond_wait(&pool->work_done, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
}
