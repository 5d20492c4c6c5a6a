/*
 * IDX files (the MNIST family's format): a 4-byte magic 0x00 0x00 <type> <dims>, then <dims>
 * big-endian uint32 sizes, then the elements in row-major order. Only unsigned bytes (type
 * 0x08) are accepted: images with 3 dimensions (count, rows, cols), labels with 1 (count).
 * Files may be gzipped (recognized by the gzip magic) or raw.
 */
#include "data.h"

#include "../io/file.h"

#include <stdio.h>
#include <stdlib.h>

#define IDX_TYPE_UBYTE 0x08
#define IDX_MAX_IMAGE_DIM (1u << 15)
/* Decompressed size bound of one file: far above Fashion-MNIST's 47 MB, far below a decompression
   bomb's reach into the machine's memory. */
#define IDX_MAX_BYTES ((size_t)1 << 31)
#define IDX_MIN_CLASSES 10

static uint32_t load_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

lowbit_status lb_idx_parse(const uint8_t *data, size_t size, int expected_dims, lb_idx_view *out,
                           lowbit_diag *diag) {
    memset(out, 0, sizeof *out);
    if (!data || size < 4) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, size, "IDX: shorter than its magic");
    }
    if (data[0] != 0 || data[1] != 0) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 0,
                           "IDX: bad magic %02x %02x (expected 00 00)", data[0], data[1]);
    }
    if (data[2] != IDX_TYPE_UBYTE) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 2,
                           "IDX: element type 0x%02x is not unsigned bytes (0x08)", data[2]);
    }
    int n_dims = data[3];
    if (n_dims != expected_dims) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 3,
                           "IDX: %d dimensions where %d were expected (%s)", n_dims, expected_dims,
                           expected_dims == 1 ? "labels" : "images");
    }
    size_t header = 4 + 4 * (size_t)n_dims;
    if (size < header) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, size, "IDX: truncated header");
    }
    uint64_t n = 1;
    for (int d = 0; d < n_dims; d++) {
        uint32_t dim = load_be32(data + 4 + 4 * d);
        if (dim == 0) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, 4 + 4 * (uint64_t)d,
                               "IDX: dimension %d is 0", d);
        }
        out->dims[d] = dim;
        n *= dim; /* cannot overflow: checked against the size after every factor */
        if (n > size - header) {
            return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, size,
                               "IDX: dimensions need more data than the %zu bytes present",
                               size - header);
        }
    }
    if (n != size - header) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, header + n,
                           "IDX: %llu bytes after the data", (unsigned long long)(size - header - n));
    }
    out->element_type = data[2];
    out->n_dims = n_dims;
    out->data = data + header;
    out->n_elements = n;
    return LOWBIT_OK;
}

/* An IDX buffer ready to parse: the input itself when raw, a decompressed copy (*owned, to free)
   when gzipped. */
static lowbit_status decode_idx(const uint8_t *in, size_t size, size_t max_bytes,
                                int expected_dims, uint8_t **owned, lb_idx_view *view,
                                lowbit_diag *diag) {
    *owned = NULL;
    const uint8_t *data = in;
    size_t data_size = size;
    if (size >= 2 && in[0] == 0x1f && in[1] == 0x8b) {
        lowbit_status st = lb_gunzip(in, size, max_bytes, owned, &data_size, diag);
        if (st != LOWBIT_OK) return st;
        data = *owned;
    } else if (size > max_bytes) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "IDX: %zu bytes exceed the limit of %zu", size, max_bytes);
    }
    lowbit_status st = lb_idx_parse(data, data_size, expected_dims, view, diag);
    if (st != LOWBIT_OK) {
        free(*owned);
        *owned = NULL;
    }
    return st;
}

/* Checks the pair and copies it into a new set. */
static lowbit_status build_set(const lb_idx_view *images, const lb_idx_view *labels,
                               lb_image_set *out, lowbit_diag *diag) {
    if (images->dims[0] != labels->dims[0]) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "IDX: %u images but %u labels", images->dims[0], labels->dims[0]);
    }
    if (images->dims[1] > IDX_MAX_IMAGE_DIM || images->dims[2] > IDX_MAX_IMAGE_DIM) {
        return lb_diag_set(diag, LOWBIT_ERR_BAD_FILE, -1, UINT64_MAX,
                           "IDX: image size %ux%u is out of range", images->dims[1],
                           images->dims[2]);
    }
    int max_label = 0;
    for (uint64_t i = 0; i < labels->n_elements; i++) max_label = LB_MAX(max_label, labels->data[i]);
    lb_image_set set = {
        .count = images->dims[0],
        .h = (int32_t)images->dims[1],
        .w = (int32_t)images->dims[2],
        .c = 1,
        .classes = LB_MAX(max_label + 1, IDX_MIN_CLASSES),
    };
    set.images = malloc((size_t)images->n_elements);
    set.labels = malloc((size_t)labels->n_elements);
    if (!set.images || !set.labels) {
        lb_image_set_free(&set);
        return lb_diag_set(diag, LOWBIT_ERR_NO_MEMORY, -1, UINT64_MAX,
                           "cannot allocate %llu image bytes",
                           (unsigned long long)images->n_elements);
    }
    memcpy(set.images, images->data, (size_t)images->n_elements);
    memcpy(set.labels, labels->data, (size_t)labels->n_elements);
    *out = set;
    return LOWBIT_OK;
}

lowbit_status lb_image_set_from_memory(const uint8_t *images, size_t images_size,
                                       const uint8_t *labels, size_t labels_size,
                                       size_t max_bytes, lb_image_set *out, lowbit_diag *diag) {
    memset(out, 0, sizeof *out);
    uint8_t *image_buf = NULL, *label_buf = NULL;
    lb_idx_view image_view, label_view;
    lowbit_status st = decode_idx(images, images_size, max_bytes, 3, &image_buf, &image_view, diag);
    if (st == LOWBIT_OK) {
        st = decode_idx(labels, labels_size, max_bytes, 1, &label_buf, &label_view, diag);
    }
    if (st == LOWBIT_OK) st = build_set(&image_view, &label_view, out, diag);
    free(image_buf);
    free(label_buf);
    return st;
}

/* Prefixes diag's message with a file's path, so a refusal names the file it is about. */
static lowbit_status name_file(lowbit_status st, const char *path, lowbit_diag *diag) {
    if (st != LOWBIT_OK && diag) {
        char message[sizeof diag->message];
        memcpy(message, diag->message, sizeof message);
        if (!strstr(message, path)) {
            lb_diag_set(diag, st, diag->row, diag->offset, "%s: %s", path, message);
        }
    }
    return st;
}

/* Maps and decodes one IDX file. */
static lowbit_status load_idx_file(const char *path, int expected_dims, lb_mapped_file *map,
                                   uint8_t **owned, lb_idx_view *view, lowbit_diag *diag) {
    lowbit_status st = lb_map_file(path, map, diag);
    if (st != LOWBIT_OK) return st;
    st = decode_idx(map->data, (size_t)map->size, IDX_MAX_BYTES, expected_dims, owned, view, diag);
    return name_file(st, path, diag);
}

lowbit_status lb_image_set_load_idx(const char *images_path, const char *labels_path,
                                    lb_image_set *out, lowbit_diag *diag) {
    if (!out || !images_path || !labels_path) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "image and label paths and an output are needed");
    }
    memset(out, 0, sizeof *out);
    lb_mapped_file image_map = {0}, label_map = {0};
    uint8_t *image_buf = NULL, *label_buf = NULL;
    lb_idx_view image_view, label_view;
    lowbit_status st =
        load_idx_file(images_path, 3, &image_map, &image_buf, &image_view, diag);
    if (st == LOWBIT_OK) {
        st = load_idx_file(labels_path, 1, &label_map, &label_buf, &label_view, diag);
    }
    if (st == LOWBIT_OK) {
        st = name_file(build_set(&image_view, &label_view, out, diag), images_path, diag);
    }
    free(image_buf);
    free(label_buf);
    lb_unmap_file(&image_map);
    lb_unmap_file(&label_map);
    return st;
}

lowbit_status lb_image_set_load_fashion_mnist(const char *dir, int train, lb_image_set *out,
                                              lowbit_diag *diag) {
    if (!dir || !out) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "a folder and an output are needed");
    }
    const char *prefix = train ? "train" : "t10k";
    char images[4096], labels[4096];
    int a = snprintf(images, sizeof images, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    int b = snprintf(labels, sizeof labels, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    if (a < 0 || b < 0 || (size_t)a >= sizeof images || (size_t)b >= sizeof labels) {
        return lb_diag_set(diag, LOWBIT_ERR_INVALID_ARGUMENT, -1, UINT64_MAX,
                           "folder path too long");
    }
    return lb_image_set_load_idx(images, labels, out, diag);
}

void lb_image_set_free(lb_image_set *set) {
    if (!set) return;
    free(set->images);
    free(set->labels);
    memset(set, 0, sizeof *set);
}
