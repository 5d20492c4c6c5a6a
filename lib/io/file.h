/* Files: read-only memory maps. */
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

#endif
