/*
 * Image data sets: IDX files (the MNIST / Fashion-MNIST format), raw or gzipped, read with
 * lowbit's own DEFLATE decoder (RFC 1951) and gzip wrapper (RFC 1952). Internal header.
 *
 * Every reader here treats its input as hostile: every length is checked before use, nothing is
 * read outside the input, output sizes are bounded by the caller, and each refusal says why.
 */
#ifndef LOWBIT_DATA_H
#define LOWBIT_DATA_H

#include "../common/common.h"

#include <stddef.h>

/* n images of h x w x c bytes (channel last, like lb_shape) with one label each. */
typedef struct lb_image_set {
    int64_t count;
    int32_t h, w, c;
    int32_t classes; /* max label + 1, at least 10 */
    uint8_t *images; /* count x h x w x c, owned */
    uint8_t *labels; /* count, each in [0, classes), owned */
} lb_image_set;

/* Loads an IDX image file (magic 0x00000803: count x rows x cols bytes) and its IDX label file
   (magic 0x00000801: count bytes), each raw or gzipped (recognized by content). The counts must
   agree. */
lowbit_status lb_image_set_load_idx(const char *images_path, const char *labels_path,
                                    lb_image_set *out, lowbit_diag *diag);
/* dir/train-images-idx3-ubyte.gz etc.; train = 1 for the 60,000 training images, 0 for the
   10,000 test images (t10k-*). */
lowbit_status lb_image_set_load_fashion_mnist(const char *dir, int train, lb_image_set *out,
                                              lowbit_diag *diag);
void lb_image_set_free(lb_image_set *set);

/* Decompresses one gzip member (RFC 1952; header flags FTEXT, FHCRC, FEXTRA, FNAME, FCOMMENT),
   checking the header CRC-16 when present, the CRC-32 and the length (ISIZE). More than
   max_out output bytes is an error (LOWBIT_ERR_BAD_FILE), as is any byte after the member.
   *out is malloc'ed (free it); on failure it is NULL. */
lowbit_status lb_gunzip(const uint8_t *in, size_t in_size, size_t max_out, uint8_t **out,
                        size_t *out_size, lowbit_diag *diag);

/* ---- internals, exposed for tests and fuzzing ----------------------------------------------- */

/* Raw DEFLATE (RFC 1951) of in into a malloc'ed buffer of at most max_out bytes; *consumed is
   the number of input bytes the stream used (through its last block's final byte). */
lowbit_status lb_inflate(const uint8_t *in, size_t in_size, size_t max_out, uint8_t **out,
                         size_t *out_size, size_t *consumed, lowbit_diag *diag);

/* CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) of n bytes, continuing from crc (0 to
   start). */
uint32_t lb_crc32(uint32_t crc, const uint8_t *data, size_t n);

/* An IDX file's header and the location of its data, parsed from memory. */
typedef struct lb_idx_view {
    uint8_t element_type; /* 0x08: unsigned bytes (the only one accepted) */
    int n_dims;           /* 1..3 */
    uint32_t dims[3];
    const uint8_t *data;  /* product(dims) bytes, inside the parsed buffer */
    uint64_t n_elements;
} lb_idx_view;

/* Parses an (already decompressed) IDX buffer: magic 0x0000 08 NN with NN dims (1 for labels,
   3 for images), big-endian uint32 dimensions, then exactly product(dims) bytes of data
   (trailing bytes are refused). expected_dims is 1 or 3. */
lowbit_status lb_idx_parse(const uint8_t *data, size_t size, int expected_dims, lb_idx_view *out,
                           lowbit_diag *diag);

/* Builds an image set from an image IDX buffer and a label IDX buffer, each raw or gzipped
   (decompressed up to max_bytes). The loaders above are this after reading the files. */
lowbit_status lb_image_set_from_memory(const uint8_t *images, size_t images_size,
                                       const uint8_t *labels, size_t labels_size,
                                       size_t max_bytes, lb_image_set *out, lowbit_diag *diag);

#endif /* LOWBIT_DATA_H */
