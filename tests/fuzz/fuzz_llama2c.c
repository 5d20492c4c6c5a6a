/*
 * Fuzz target for the llama2.c checkpoint and tokenizer reader. Input: a flags byte, a u16
 * tokenizer length, that many tokenizer bytes, then the checkpoint. Flag bit 0: pass the
 * tokenizer (else none). Flag bit 1: resize the checkpoint to the size its header implies (when
 * the header is small), zero-padding or cutting it, so that the fuzzer also reaches the
 * tensors and the tokenizer instead of stopping at the size check.
 *
 * Oracle: any input is either rejected with a message, leaving the model empty, or accepted with
 * every tensor inside the checkpoint's bytes and readable as floats, and as many tokens as the
 * vocab.
 */
#include "io/llama2c.h"

#include <stdlib.h>
#include <string.h>

/* The checkpoint size a small header implies, or 0 when a field is outside 1..64. */
static size_t implied_size(const uint8_t *model, size_t size) {
    if (size < 28) return 0;
    int32_t f[7];
    memcpy(f, model, sizeof f);
    const int separate = f[5] < 0;
    if (separate && f[5] > -65) f[5] = -f[5];
    for (int i = 0; i < 7; i++) {
        if (f[i] < 1 || f[i] > 64) return 0;
    }
    const size_t dim = (size_t)f[0], hidden = (size_t)f[1], layers = (size_t)f[2];
    const size_t heads = (size_t)f[3], kv_heads = (size_t)f[4], vocab = (size_t)f[5];
    const size_t head = dim / heads, kv_dim = head * kv_heads;
    const size_t per_layer = 2 * dim + 2 * dim * dim + 2 * kv_dim * dim + 3 * hidden * dim;
    const size_t floats =
        vocab * dim * (separate ? 2 : 1) + layers * per_layer + dim + (size_t)f[6] * head;
    return 28 + 4 * floats;
}

static void check_accepted(const lb_model *m, const uint8_t *model, size_t size, int tokenizer) {
    for (int64_t i = 0; i < m->n_tensors; i++) {
        const lb_tensor *t = &m->tensors[i];
        const uint8_t *p = t->data;
        if (p < model || t->n_bytes > size || (size_t)(p - model) > size - t->n_bytes) abort();
        float *floats = malloc(t->n_bytes ? (size_t)t->n_bytes : 1);
        if (!floats || lb_model_read_f32(m, i, floats, NULL) != LOWBIT_OK) abort();
        if (memcmp(floats, p, (size_t)t->n_bytes) != 0) abort(); /* F32, unpermuted */
        free(floats);
    }
    uint64_t vocab = 0;
    if (!lb_kv_get_u64(lb_model_find_kv(m, "llama.vocab_size"), &vocab)) abort();
    const lb_kv *tokens = lb_model_find_kv(m, "tokenizer.ggml.tokens");
    if ((tokens != NULL) != (tokenizer != 0)) abort();
    if (tokens) {
        uint64_t count;
        memcpy(&count, tokens->value + 4, 8);
        if (count != vocab) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    const int flags = data[0];
    size_t tok_size = (size_t)data[1] | (size_t)data[2] << 8;
    data += 3, size -= 3;
    if (tok_size > size) tok_size = size;
    size_t model_size = size - tok_size;
    const size_t fitted = (flags & 2) ? implied_size(data + tok_size, model_size) : 0;
    const size_t copy_size = fitted ? fitted : model_size;
    /* exactly sized heap copies, so that reading one byte past either end is caught */
    uint8_t *tok = malloc(tok_size ? tok_size : 1);
    uint8_t *model = calloc(copy_size ? copy_size : 1, 1);
    if (!tok || !model) abort();
    memcpy(tok, data, tok_size);
    memcpy(model, data + tok_size, model_size < copy_size ? model_size : copy_size);
    lb_model m;
    memset(&m, 0, sizeof m);
    lowbit_diag diag = {0};
    const int with_tokenizer = flags & 1;
    if (lb_read_llama2c_model_memory(model, copy_size, with_tokenizer ? tok : NULL, tok_size, NULL,
                                     &m, &diag) == LOWBIT_OK) {
        check_accepted(&m, model, copy_size, with_tokenizer);
    } else if (diag.message[0] == '\0' || m.n_tensors || m.n_kv) {
        abort(); /* every rejection says why and leaves the model empty */
    }
    lb_model_free(&m);
    free(tok);
    free(model);
    return 0;
}
