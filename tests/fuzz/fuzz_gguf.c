/*
 * Fuzz target for the GGUF reader. Oracle: any input is either rejected with a message or
 * accepted with every tensor's bytes inside the input, its metadata readable, and its first row
 * decodable (for types lowbit decodes) without reading out of bounds.
 */
#include "lowbit.h"

#include <stdlib.h>
#include <string.h>

static void touch_tensor(const lowbit_tensor_info *t, const uint8_t *data, size_t size) {
    const uint8_t *p = t->data;
    if (p < data || t->n_bytes > size || (size_t)(p - data) > size - t->n_bytes) abort();
    const lowbit_type_traits *traits = lowbit_type_info(t->type);
    if (!traits || t->ne[0] > (1 << 16)) return;
    float *row = malloc((size_t)t->ne[0] * sizeof *row);
    if (row) lowbit_dequantize_rows(t->type, t->data, row, 1, t->ne[0], NULL);
    free(row);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* an exactly sized heap copy, so that reading one byte past the end is caught */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    lowbit_gguf *g = NULL;
    lowbit_diag diag = {0};
    if (lowbit_gguf_open_memory(copy, size, &g, &diag) == LOWBIT_OK) {
        for (int64_t i = 0; i < lowbit_gguf_tensor_count(g); i++) {
            touch_tensor(lowbit_gguf_tensor_at(g, i), copy, size);
        }
        const char *s;
        uint64_t n;
        double f;
        lowbit_gguf_get_string(g, "general.name", &s, &n);
        lowbit_gguf_get_f64(g, "general.alignment", &f);
        lowbit_gguf_close(g);
    } else if (diag.message[0] == '\0') {
        abort(); /* every rejection says why */
    }
    free(copy);
    return 0;
}
