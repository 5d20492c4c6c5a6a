/* Read-only memory maps of input files. */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

lowbit_status lb_map_file(const char *path, lb_mapped_file *file, lowbit_diag *diag) {
    file->data = NULL;
    file->size = 0;
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return lb_diag_set(diag, LOWBIT_ERR_IO, -1, UINT64_MAX, "cannot open '%s': %s", path,
                           strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return lb_diag_set(diag, LOWBIT_ERR_IO, -1, UINT64_MAX, "'%s' is not a regular file", path);
    }
    file->size = (uint64_t)st.st_size;
    if (file->size > 0) {
        void *p = mmap(NULL, (size_t)file->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            const int err = errno;
            close(fd);
            file->size = 0;
            return lb_diag_set(diag, LOWBIT_ERR_IO, -1, UINT64_MAX, "cannot map '%s': %s", path,
                               strerror(err));
        }
        file->data = p;
    }
    close(fd);
    return LOWBIT_OK;
}

void lb_unmap_file(lb_mapped_file *file) {
    if (file->data) munmap((void *)file->data, (size_t)file->size);
    file->data = NULL;
    file->size = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Atomic output files                                                                          */
/* ------------------------------------------------------------------------------------------ */

#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ATOMIC_BUFFER_BYTES ((size_t)1 << 20)
#define TEMP_SUFFIX ".tmp"
#define TEMP_RANDOM_CHARS 6
#define TEMP_NAME_TRIES 100

/* The registry a signal handler walks: a slot is claimed (FILLING) while its path is copied in,
   and only then published (LIVE), so the handler never reads a half-written path. Lock-free
   atomics are async-signal-safe; a mutex would not be. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the temporary-file registry needs lock-free ints");
enum { SLOT_FREE = 0, SLOT_FILLING = 1, SLOT_LIVE = 2 };

typedef struct temp_slot {
    atomic_int state;
    char path[PATH_MAX];
} temp_slot;

static temp_slot live_temporaries[LB_ATOMIC_MAX_LIVE];

/* Claims a slot and copies the path in; the handler ignores it until publish_temporary. */
static int claim_slot(const char *path) {
    for (int i = 0; i < LB_ATOMIC_MAX_LIVE; i++) {
        int expected = SLOT_FREE;
        if (atomic_compare_exchange_strong(&live_temporaries[i].state, &expected, SLOT_FILLING)) {
            strcpy(live_temporaries[i].path, path); /* the caller checked it fits PATH_MAX */
            return i;
        }
    }
    return -1;
}

static void publish_temporary(int slot) { atomic_store(&live_temporaries[slot].state, SLOT_LIVE); }

static void unregister_temporary(int slot) {
    if (slot >= 0) atomic_store(&live_temporaries[slot].state, SLOT_FREE);
}

void lb_atomic_remove_all_temporaries(void) {
    for (int i = 0; i < LB_ATOMIC_MAX_LIVE; i++) {
        if (atomic_load(&live_temporaries[i].state) == SLOT_LIVE) unlink(live_temporaries[i].path);
    }
}

struct lb_atomic_file {
    int fd;                    /* -1 once closed */
    int slot;                  /* registry slot, -1 once unregistered */
    lowbit_status failed;      /* the first error; LOWBIT_OK while all is well */
    char failure[256];         /* its message, repeated by later calls */
    uint64_t size;             /* bytes accepted so far */
    size_t buffered;
    uint8_t *buffer;
    char *dest_path;
    char *folder;
    char temp_path[PATH_MAX];
};

/* The folder holding `path`: everything before the last '/', "/" or ".". */
static char *folder_of(const char *path) {
    const char *slash = strrchr(path, '/');
    const size_t length = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
    char *folder = malloc(length + 1);
    if (!folder) return NULL;
    if (!slash) {
        strcpy(folder, ".");
    } else {
        memcpy(folder, slash == path ? "/" : path, length);
        folder[length] = '\0';
    }
    return folder;
}

static lowbit_status io_error(lowbit_diag *diag, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static lowbit_status io_error(lowbit_diag *diag, const char *fmt, ...) {
    char message[256];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    return lb_diag_set(diag, LOWBIT_ERR_IO, -1, UINT64_MAX, "%s", message);
}

static lowbit_status check_destination(const char *dest, const char *folder, lowbit_diag *diag) {
    const size_t length = strlen(dest);
    if (length == 0) return io_error(diag, "the output path is empty");
    if (dest[length - 1] == '/') return io_error(diag, "output '%s' names a folder, not a file", dest);
    if (length + 1 + TEMP_RANDOM_CHARS + strlen(TEMP_SUFFIX) >= PATH_MAX) {
        return io_error(diag, "output path '%.64s...' is too long", dest);
    }
    struct stat st;
    if (stat(folder, &st) != 0) {
        const int err = errno;
        if (err == ENOENT) {
            return io_error(diag, "cannot write '%s': its folder '%s' does not exist", dest, folder);
        }
        return io_error(diag, "cannot write '%s': folder '%s': %s", dest, folder, strerror(err));
    }
    if (!S_ISDIR(st.st_mode)) {
        return io_error(diag, "cannot write '%s': '%s' is not a folder", dest, folder);
    }
    if (stat(dest, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return io_error(diag, "cannot write '%s': it is a directory", dest);
        if (!S_ISREG(st.st_mode)) {
            return io_error(diag, "cannot write '%s': it exists and is not a regular file", dest);
        }
    } else if (errno != ENOENT) {
        return io_error(diag, "cannot write '%s': %s", dest, strerror(errno));
    }
    return LOWBIT_OK;
}

/* splitmix64: spreads the seed's bits so consecutive seeds give unrelated names. */
static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Creates "<dest>.XXXXXX.tmp" with O_EXCL, so an existing file is never reused or truncated.
   The mode 0644 is reduced by the umask, as for any new file. */
static lowbit_status create_temporary(lb_atomic_file *f, lowbit_diag *diag) {
    static atomic_uint_fast64_t counter;
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    for (int attempt = 0; attempt < TEMP_NAME_TRIES; attempt++) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        uint64_t bits = mix64((uint64_t)now.tv_nsec ^ ((uint64_t)now.tv_sec << 30) ^
                              ((uint64_t)getpid() << 40) ^ atomic_fetch_add(&counter, 1) ^
                              (uint64_t)(uintptr_t)f);
        char random_part[TEMP_RANDOM_CHARS + 1];
        for (int i = 0; i < TEMP_RANDOM_CHARS; i++) {
            random_part[i] = alphabet[bits % (sizeof alphabet - 1)];
            bits /= sizeof alphabet - 1;
        }
        random_part[TEMP_RANDOM_CHARS] = '\0';
        snprintf(f->temp_path, sizeof f->temp_path, "%s.%s%s", f->dest_path, random_part,
                 TEMP_SUFFIX);
        /* published only once the file is ours: the handler must never remove a file that
           merely had the same name (EEXIST) */
        f->slot = claim_slot(f->temp_path);
        if (f->slot < 0) {
            return io_error(diag, "cannot write '%s': more than %d output files open at once",
                            f->dest_path, LB_ATOMIC_MAX_LIVE);
        }
        f->fd = open(f->temp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (f->fd >= 0) {
            publish_temporary(f->slot);
            return LOWBIT_OK;
        }
        const int err = errno;
        unregister_temporary(f->slot);
        f->slot = -1;
        if (err != EEXIST) {
            return io_error(diag, "cannot create '%s' (temporary file for '%s'): %s", f->temp_path,
                            f->dest_path, strerror(err));
        }
    }
    return io_error(diag, "cannot find a free temporary name for '%s'", f->dest_path);
}

static void free_atomic(lb_atomic_file *f) {
    free(f->buffer);
    free(f->dest_path);
    free(f->folder);
    free(f);
}

/* Closes and removes the temporary file (if still there) and takes it out of the registry. */
static void discard_temporary(lb_atomic_file *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    if (f->slot >= 0) {
        unlink(f->temp_path);
        unregister_temporary(f->slot);
        f->slot = -1;
    }
    f->buffered = 0;
}

lowbit_status lb_atomic_open(const char *dest_path, lb_atomic_file **out, lowbit_diag *diag) {
    if (!dest_path || !out) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "no output path");
    }
    *out = NULL;
    lb_atomic_file *f = calloc(1, sizeof *f);
    if (!f) return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    f->fd = -1;
    f->slot = -1;
    f->buffer = malloc(ATOMIC_BUFFER_BYTES);
    f->dest_path = malloc(strlen(dest_path) + 1);
    f->folder = folder_of(dest_path);
    if (!f->buffer || !f->dest_path || !f->folder) {
        free_atomic(f);
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX, "out of memory");
    }
    strcpy(f->dest_path, dest_path);
    lowbit_status st = check_destination(dest_path, f->folder, diag);
    if (st == LOWBIT_OK) st = create_temporary(f, diag);
    if (st != LOWBIT_OK) {
        discard_temporary(f);
        free_atomic(f);
        return st;
    }
    *out = f;
    return LOWBIT_OK;
}

/* Records the first failure, removes the temporary file at once (a full disk gets its space
   back) and reports the failure. */
static lowbit_status fail(lb_atomic_file *f, lowbit_diag *diag, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static lowbit_status fail(lb_atomic_file *f, lowbit_diag *diag, const char *fmt, ...) {
    if (f->failed == LOWBIT_OK) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(f->failure, sizeof f->failure, fmt, args);
        va_end(args);
        f->failed = LOWBIT_ERR_IO;
    }
    discard_temporary(f);
    return lb_diag_set(diag, f->failed, -1, UINT64_MAX, "%s", f->failure);
}

static lowbit_status failed_before(lb_atomic_file *f, lowbit_diag *diag) {
    return lb_diag_set(diag, f->failed, -1, UINT64_MAX, "%s", f->failure);
}

/* write(2) until everything is written: a short write is followed by another write, which
   either makes progress or returns the reason (ENOSPC, EDQUOT, EFBIG, EIO...). 0 or errno. */
static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        const size_t chunk = LB_MIN(n, (size_t)1 << 30);
        const ssize_t written = write(fd, p, chunk);
        if (written < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (written == 0) return EIO; /* no progress and no reason: do not spin */
        p += written;
        n -= (size_t)written;
    }
    return 0;
}

static lowbit_status write_through(lb_atomic_file *f, const uint8_t *p, size_t n, lowbit_diag *diag) {
    const int err = write_all(f->fd, p, n);
    if (err) {
        return fail(f, diag, "cannot write '%s' (temporary file for '%s'): %s", f->temp_path,
                    f->dest_path, strerror(err));
    }
    return LOWBIT_OK;
}

static lowbit_status flush_buffer(lb_atomic_file *f, lowbit_diag *diag) {
    const size_t n = f->buffered;
    f->buffered = 0;
    return n ? write_through(f, f->buffer, n, diag) : LOWBIT_OK;
}

lowbit_status lb_atomic_write(lb_atomic_file *f, const void *data, size_t n_bytes,
                              lowbit_diag *diag) {
    if (!f || (!data && n_bytes)) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "no data to write");
    }
    if (f->failed != LOWBIT_OK) return failed_before(f, diag);
    const uint8_t *p = data;
    f->size += n_bytes;
    /* large writes skip the copy once the buffer is empty */
    if (n_bytes >= ATOMIC_BUFFER_BYTES) {
        lowbit_status st = flush_buffer(f, diag);
        return st == LOWBIT_OK ? write_through(f, p, n_bytes, diag) : st;
    }
    while (n_bytes > 0) {
        const size_t room = ATOMIC_BUFFER_BYTES - f->buffered;
        const size_t take = LB_MIN(room, n_bytes);
        memcpy(f->buffer + f->buffered, p, take);
        f->buffered += take;
        p += take;
        n_bytes -= take;
        if (f->buffered == ATOMIC_BUFFER_BYTES) {
            lowbit_status st = flush_buffer(f, diag);
            if (st != LOWBIT_OK) return st;
        }
    }
    return LOWBIT_OK;
}

lowbit_status lb_atomic_write_zeros(lb_atomic_file *f, uint64_t n_bytes, lowbit_diag *diag) {
    static const uint8_t zeros[4096];
    while (n_bytes > 0) {
        const size_t take = (size_t)LB_MIN(n_bytes, (uint64_t)sizeof zeros);
        lowbit_status st = lb_atomic_write(f, zeros, take, diag);
        if (st != LOWBIT_OK) return st;
        n_bytes -= take;
    }
    return LOWBIT_OK;
}

uint64_t lb_atomic_size(const lb_atomic_file *f) { return f ? f->size : 0; }

const char *lb_atomic_temp_path(const lb_atomic_file *f) {
    return f && f->slot >= 0 ? f->temp_path : "";
}

/* After the rename, the folder entry itself must reach the disk for the new name to survive a
   crash. File systems that cannot sync a folder say EINVAL: nothing more can be done there. */
static int sync_folder(const char *folder) {
    const int fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    int err = fsync(fd) != 0 && errno != EINVAL ? errno : 0;
    close(fd);
    return err;
}

lowbit_status lb_atomic_commit(lb_atomic_file *f, lowbit_diag *diag) {
    if (!f) return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX, "no file");
    lowbit_status st = f->failed != LOWBIT_OK ? failed_before(f, diag) : flush_buffer(f, diag);
    if (st == LOWBIT_OK && fsync(f->fd) != 0) {
        st = fail(f, diag, "cannot sync '%s' (temporary file for '%s'): %s", f->temp_path,
                  f->dest_path, strerror(errno));
    }
    if (st == LOWBIT_OK) {
        /* close can report a deferred write error (network file systems, quotas) */
        const int closed = close(f->fd);
        const int err = errno;
        f->fd = -1;
        if (closed != 0) {
            st = fail(f, diag, "cannot close '%s' (temporary file for '%s'): %s", f->temp_path,
                      f->dest_path, strerror(err));
        }
    }
    if (st == LOWBIT_OK && rename(f->temp_path, f->dest_path) != 0) {
        st = fail(f, diag, "cannot rename '%s' to '%s': %s", f->temp_path, f->dest_path,
                  strerror(errno));
    }
    if (st == LOWBIT_OK) {
        unregister_temporary(f->slot); /* the name now belongs to the destination */
        f->slot = -1;
        const int err = sync_folder(f->folder);
        if (err) {
            st = io_error(diag, "'%s' was written but its folder '%s' could not be synced: %s",
                          f->dest_path, f->folder, strerror(err));
        }
    }
    discard_temporary(f);
    free_atomic(f);
    return st;
}

void lb_atomic_abort(lb_atomic_file *f) {
    if (!f) return;
    discard_temporary(f);
    free_atomic(f);
}

/* The public, async-signal-safe entry point for signal handlers of programs using lowbit. */
void lowbit_remove_temporary_files(void) { lb_atomic_remove_all_temporaries(); }
