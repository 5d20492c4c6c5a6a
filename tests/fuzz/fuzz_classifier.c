/*
 * Fuzz target for classifier files (lowbit-classifier and lowbit-classifier-int GGUF files).
 * Oracle: any input is either rejected with a message, or loads into a model whose every shape
 * was re-derived and checked, so one forward pass over a blank image must run without reading or
 * writing out of bounds (the sanitizers watch) and give finite logits.
 */
#include "lowbit.h"
#include "nn/classifier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void run_one_image(const lb_shape input, int32_t classes, int is_int, const lb_net *net,
                          const lb_int_net *int_net) {
    const int64_t pixels = lb_shape_size(input);
    if (pixels <= 0 || pixels > (1 << 20) || classes <= 0 || classes > (1 << 16)) abort();
    uint8_t *image = calloc((size_t)pixels, 1);
    float *logits = malloc((size_t)classes * sizeof(float));
    if (image && logits) {
        const lowbit_status st = is_int ? lb_int_net_forward(int_net, image, 1, logits, NULL, NULL)
                                        : lb_net_forward(net, image, 1, logits, NULL, NULL, NULL, NULL);
        /* float weights are checked finite on load, but their products may still overflow:
           only the integer model's logits are bounded by construction */
        if (st == LOWBIT_OK && is_int) {
            for (int32_t i = 0; i < classes; i++) {
                if (!isfinite(logits[i])) abort();
            }
        }
    }
    free(image);
    free(logits);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1); /* exactly sized, so over-reads are caught */
    if (!copy) return 0;
    memcpy(copy, data, size);
    int is_int = 0;
    lb_net net;
    lb_int_net int_net;
    lowbit_diag diag = {0};
    if (lb_classifier_load_memory(copy, size, &is_int, &net, &int_net, &diag) == LOWBIT_OK) {
        if (is_int) {
            run_one_image(int_net.input, int_net.classes, 1, NULL, &int_net);
            lb_int_net_free(&int_net);
        } else {
            run_one_image(net.input, net.classes, 0, &net, NULL);
            lb_net_free(&net);
        }
    } else if (diag.message[0] == '\0') {
        abort(); /* every rejection says why */
    }
    free(copy);
    return 0;
}
