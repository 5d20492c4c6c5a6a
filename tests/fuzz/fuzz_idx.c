/*
 * Fuzz target for the gzip/DEFLATE decoder and the IDX reader (lib/data). Input layout: a
 * 2-byte little-endian length L, then L bytes of "image file", then the rest as "label file"
 * (each raw IDX or gzipped). Both parts go through lb_gunzip, lb_idx_parse and, together,
 * lb_image_set_from_memory. Oracle: every rejection says why; every acceptance stays inside its
 * buffers (each part is an exactly sized heap copy, so ASan sees any overread) and is coherent.
 */
#include "data/data.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_OUT (1 << 22)

static uint8_t *exact_copy(const uint8_t *data, size_t size) {
    uint8_t *p = malloc(size ? size : 1);
    if (p && size) memcpy(p, data, size);
    return p;
}

static void check_gunzip(const uint8_t *data, size_t size) {
    uint8_t *out = NULL;
    size_t out_size = 0;
    lowbit_diag diag = {0};
    if (lb_gunzip(data, size, FUZZ_MAX_OUT, &out, &out_size, &diag) == LOWBIT_OK) {
        if (out_size > FUZZ_MAX_OUT || lb_crc32(0, out, out_size) != lb_load_u32(data + size - 8)) {
            abort();
        }
        free(out);
    } else if (diag.message[0] == '\0' || out != NULL) {
        abort();
    }
}

static void check_idx(const uint8_t *data, size_t size, int dims) {
    lb_idx_view view;
    lowbit_diag diag = {0};
    if (lb_idx_parse(data, size, dims, &view, &diag) == LOWBIT_OK) {
        if (view.data < data || view.n_elements > size ||
            (size_t)(view.data - data) + view.n_elements != size) {
            abort();
        }
    } else if (diag.message[0] == '\0') {
        abort();
    }
}

static void check_set(const uint8_t *images, size_t images_size, const uint8_t *labels,
                      size_t labels_size) {
    lb_image_set set;
    lowbit_diag diag = {0};
    if (lb_image_set_from_memory(images, images_size, labels, labels_size, FUZZ_MAX_OUT, &set,
                                 &diag) == LOWBIT_OK) {
        uint64_t sum = 0;
        for (int64_t i = 0; i < set.count; i++) {
            if (set.labels[i] >= set.classes) abort();
        }
        int64_t pixels = set.count * set.h * set.w * set.c;
        for (int64_t i = 0; i < pixels; i++) sum += set.images[i];
        (void)sum;
        lb_image_set_free(&set);
    } else if (diag.message[0] == '\0') {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t split = (size_t)lb_load_le(data, 2);
    size_t rest = size - 2;
    if (split > rest) split = rest;
    uint8_t *images = exact_copy(data + 2, split);
    uint8_t *labels = exact_copy(data + 2 + split, rest - split);
    if (images && labels) {
        check_gunzip(images, split);
        check_gunzip(labels, rest - split);
        check_idx(images, split, 3);
        check_idx(labels, rest - split, 1);
        check_set(images, split, labels, rest - split);
    }
    free(images);
    free(labels);
    return 0;
}
