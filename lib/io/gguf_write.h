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

/*
 * Computes every tensor's offset (each aligned to `alignment`) and the exact file size, as the
 * reference writer lays a file out: header, key-values, tensor infos, zero padding to the
 * alignment, then each tensor's data followed by zero padding to the alignment (the last one
 * included, so the file size is a multiple of the alignment too).
 *
 * alignment: a power of two, or 0 for the general.alignment key (uint32) if the kvs hold one,
 * else 32. A general.alignment key that disagrees with a non-zero `alignment` is an error.
 * Also checks what would make a file others cannot read: every value's encoding, duplicate or
 * empty keys, duplicate names, names of 64 bytes or more (llama.cpp's limit), dimensions (1..4,
 * positive), type ids, row lengths that are not whole blocks, and n_bytes that disagree with
 * the type and dimensions.
 */
lowbit_status lb_gguf_layout(const lb_kv *kvs, int64_t n_kv, lb_out_tensor *tensors,
                             int64_t n_tensors, uint32_t alignment, uint64_t *file_size);
/* The same, saying what is wrong in diag. */
lowbit_status lb_gguf_layout_diag(const lb_kv *kvs, int64_t n_kv, lb_out_tensor *tensors,
                                  int64_t n_tensors, uint32_t alignment, uint64_t *file_size,
                                  lowbit_diag *diag);

typedef struct lb_gguf_writer lb_gguf_writer;

/* Creates the temporary file next to final_path and writes the header, metadata and tensor
   infos. The tensors' offsets must be those lb_gguf_layout computed (with the same alignment):
   they are checked again here. */
lowbit_status lb_gguf_writer_open(const char *final_path, const lb_kv *kvs, int64_t n_kv,
                                  const lb_out_tensor *tensors, int64_t n_tensors,
                                  uint32_t alignment, lb_gguf_writer **out, lowbit_diag *diag);
/* Appends the data of the next tensor (in order; exactly its n_bytes, in any number of calls;
   a call may run on into the next tensor), padding before it as its offset requires. More
   bytes than the tensors hold is an error. After any error the writer only accepts abort (or a
   commit, which fails and cleans up). */
lowbit_status lb_gguf_writer_write(lb_gguf_writer *w, const void *data, uint64_t n_bytes,
                                   lowbit_diag *diag);
/* Checks that every tensor was written in full, fsyncs, renames over final_path. Frees w. */
lowbit_status lb_gguf_writer_commit(lb_gguf_writer *w, lowbit_diag *diag);
/* Removes the temporary file; final_path is untouched. Frees w. NULL is fine. */
void lb_gguf_writer_abort(lb_gguf_writer *w);

#endif
