/*
 * GGUF v3 writing: the layout of a file (where every tensor's data goes, how large the file is)
 * and a streaming writer that fills it through an atomic file (a temporary file in the
 * destination folder, fsynced and renamed only when complete).
 */
#ifndef LOWBIT_GGUF_WRITE_H
#define LOWBIT_GGUF_WRITE_H

#include "model.h"

/* The tensor infos of the file to write: name, type, dims (data comes later, in this order). */
typedef struct lb_out_tensor {
    const char *name;
    lowbit_type type;
    int n_dims;
    int64_t ne[LB_MAX_DIMS];
    uint64_t n_bytes;
    uint64_t offset; /* filled by lb_gguf_layout, from the start of the data section */
} lb_out_tensor;

/* Computes every tensor's offset (each aligned to `alignment`) and the exact file size. */
lowbit_status lb_gguf_layout(const lb_kv *kvs, int64_t n_kv, lb_out_tensor *tensors,
                             int64_t n_tensors, uint32_t alignment, uint64_t *file_size);

typedef struct lb_gguf_writer lb_gguf_writer;

/* Creates the temporary file next to final_path and writes the header, metadata and tensor
   infos (offsets from lb_gguf_layout). */
lowbit_status lb_gguf_writer_open(const char *final_path, const lb_kv *kvs, int64_t n_kv,
                                  const lb_out_tensor *tensors, int64_t n_tensors,
                                  uint32_t alignment, lb_gguf_writer **out, lowbit_diag *diag);
/* Appends the data of the next tensor (in order; exactly its n_bytes, in any number of calls),
   padding before it as its offset requires. */
lowbit_status lb_gguf_writer_write(lb_gguf_writer *w, const void *data, uint64_t n_bytes,
                                   lowbit_diag *diag);
/* Checks that every tensor was written in full, fsyncs, renames over final_path. Frees w. */
lowbit_status lb_gguf_writer_commit(lb_gguf_writer *w, lowbit_diag *diag);
/* Removes the temporary file; final_path is untouched. Frees w. NULL is fine. */
void lb_gguf_writer_abort(lb_gguf_writer *w);

#endif
