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
