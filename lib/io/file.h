/* Files: read-only memory maps of inputs; atomic (all-or-nothing) writing of outputs. */
#ifndef LOWBIT_FILE_H
#define LOWBIT_FILE_H

#include "../common/common.h"

typedef struct lb_mapped_file {
    const uint8_t *data; /* NULL for an empty file */
    uint64_t size;
} lb_mapped_file;

/* Maps a whole file read-only (private: the file is never modified). */
lowbit_status lb_map_file(const char *path, lb_mapped_file *file, lowbit_diag *diag);
void lb_unmap_file(lb_mapped_file *file);

/*
 * An output file that appears complete or not at all. Bytes go to a temporary file
 * "<dest>.XXXXXX.tmp" in the destination's folder (created with O_EXCL, mode 0644 less the
 * umask), through a buffer; commit flushes, fsyncs, renames it over the destination and fsyncs
 * the folder. On any error, or on abort, the temporary file is closed and removed: the
 * destination is untouched until the rename. The first write error (ENOSPC, EDQUOT, EFBIG with
 * SIGXFSZ ignored, EIO...) removes the temporary file at once; later writes and the commit then
 * fail with the same message. Errors name the path and the system's reason.
 *
 * Every live temporary file is also listed in a small process-wide registry so that a signal
 * handler can remove them all (lb_atomic_remove_all_temporaries).
 */
typedef struct lb_atomic_file lb_atomic_file;

#define LB_ATOMIC_MAX_LIVE 16 /* temporary files that may exist at once in a process */

/* Refuses a destination that is a directory or another non-regular file, or whose folder is
   missing. A symbolic link as destination is replaced by the new file, not written through. */
lowbit_status lb_atomic_open(const char *dest_path, lb_atomic_file **out, lowbit_diag *diag);
lowbit_status lb_atomic_write(lb_atomic_file *f, const void *data, size_t n_bytes,
                              lowbit_diag *diag);
/* Appends n_bytes zero bytes (padding). */
lowbit_status lb_atomic_write_zeros(lb_atomic_file *f, uint64_t n_bytes, lowbit_diag *diag);
/* Bytes accepted so far (buffered or on disk). */
uint64_t lb_atomic_size(const lb_atomic_file *f);
/* The temporary file's path ("" once it is gone). */
const char *lb_atomic_temp_path(const lb_atomic_file *f);
/* Makes the file the destination. Frees f, whatever the outcome. */
lowbit_status lb_atomic_commit(lb_atomic_file *f, lowbit_diag *diag);
/* Removes the temporary file; the destination is untouched. Frees f. NULL is fine. */
void lb_atomic_abort(lb_atomic_file *f);
/* Async-signal-safe (it only calls unlink): removes every temporary file still live. Meant for
   a SIGINT/SIGTERM handler that then exits; the lb_atomic_file objects are not freed. */
void lb_atomic_remove_all_temporaries(void);

#endif
