/*
 * Fuzz target for the safetensors reader and the JSON parser under it. The input is a whole
 * safetensors file, read against a fixed config.json of a tiny Llama (1 layer, hidden 4, 2 heads
 * of 2, FFN 4, vocabulary 4); the input is also parsed as JSON on its own. Oracle: any input is
 * either rejected with a message or accepted with every tensor's bytes inside the input and
 * every tensor readable as floats without reading out of bounds.
 */
#include "io/json.h"
#include "io/safetensors.h"

#include <stdlib.h>
#include <string.h>

static const char config[] =
    "{\"model_type\": \"llama\", \"hidden_size\": 4, \"num_hidden_layers\": 1, "
    "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"intermediate_size\": 4, "
    "\"max_position_embeddings\": 16, \"rms_norm_eps\": 1e-5, \"vocab_size\": 4, "
    "\"tie_word_embeddings\": true}";

static void check_model(const lb_model *m, const uint8_t *data, size_t size) {
    for (int64_t i = 0; i < m->n_tensors; i++) {
        const lb_tensor *t = &m->tensors[i];
        const uint8_t *p = t->data;
        if (p < data || t->n_bytes > size || (size_t)(p - data) > size - t->n_bytes) abort();
        if (t->ne[0] * lb_tensor_rows(t) > (1 << 16)) continue;
        float *values = malloc((size_t)(t->ne[0] * lb_tensor_rows(t)) * sizeof *values);
        lowbit_diag diag = {0};
        if (values && lb_model_read_f32(m, i, values, &diag) != LOWBIT_OK && diag.message[0] == '\0') abort();
        free(values);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* an exactly sized heap copy, so that reading one byte past the end is caught */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);

    lb_model m = {0};
    lowbit_diag diag = {0};
    if (lb_read_safetensors_memory(copy, size, config, sizeof config - 1, &m, &diag) == LOWBIT_OK) {
        check_model(&m, copy, size);
        lb_model_free(&m);
    } else if (diag.message[0] == '\0' || m.n_tensors != 0) {
        abort(); /* every rejection says why and leaves the model empty */
    }

    lb_json_doc doc;
    memset(&diag, 0, sizeof diag);
    if (lb_json_parse((const char *)copy, size, 0, 16, 1 << 16, &doc, &diag) == LOWBIT_OK) {
        /* walk every node's links: each must stay inside the node array */
        for (int64_t i = 0; i < doc.n_nodes; i++) {
            const lb_json_node *n = &doc.nodes[i];
            if (n->first_child >= doc.n_nodes || n->next_sibling >= doc.n_nodes) abort();
            if (n->type == LB_JSON_NUMBER && !isfinite(n->number)) abort();
        }
        lb_json_free(&doc);
    } else if (diag.message[0] == '\0') {
        abort();
    }
    free(copy);
    return 0;
}
