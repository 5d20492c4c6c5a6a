/*
 * The plumbing of the multi-token kernels (kernels.h, lb_vec_dot_tokens_fn) that every
 * instruction set's kernel files share: each kernel is one body taking n_tokens, inlined into a
 * one-token entry point and into a multi-token one with a constant count for each case, so that
 * the loops over tokens unroll and keep their per-token accumulators in registers; the one-token
 * kernel being that body with one token, every token gets its result bit for bit.
 */
#ifndef LOWBIT_MULTI_TOKEN_H
#define LOWBIT_MULTI_TOKEN_H

#include "../formats/blocks.h"
#include "kernels.h"

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

/* For the bodies that every entry point instantiates with a constant token count. */
#define ALWAYS_INLINE __attribute__((always_inline))

/* Activation row t of a multi-token call, the rows lying `stride` bytes apart. */
static inline const void *token_row(const void *activations, size_t stride, int t) {
    return (const uint8_t *)activations + (size_t)t * stride;
}

/* Q8_K block b of activation row t. */
static inline const block_q8_K *q8_K_block(const void *activations, size_t stride, int t,
                                           int64_t b) {
    return (const block_q8_K *)token_row(activations, stride, t) + b;
}

/* The entry points of a body CALL(n, weights, activations, stride, n_tokens, out): the one-token
   kernel dot_NAME, and dot_NAME_tokens with a constant count for each case. */
#define DEFINE_DOT_ENTRY_POINTS(NAME, CALL)                                                      \
    static float dot_##NAME(int64_t n, const void *weights, const void *activations) {           \
        float out;                                                                               \
        CALL(n, weights, activations, 0, 1, &out);                                               \
        return out;                                                                              \
    }                                                                                            \
    static void dot_##NAME##_tokens(int64_t n, const void *weights, const void *activations,     \
                                    size_t stride, int n_tokens, float *out) {                   \
        switch (n_tokens) {                                                                      \
        case 4: CALL(n, weights, activations, stride, 4, out); break;                            \
        case 3: CALL(n, weights, activations, stride, 3, out); break;                            \
        case 2: CALL(n, weights, activations, stride, 2, out); break;                            \
        default: CALL(n, weights, activations, stride, 1, out); break;                           \
        }                                                                                        \
    }
static_assert(LB_DOT_TOKENS == 4, "the entry points cover 1..LB_DOT_TOKENS tokens");

/* Installs a type's one-token kernel and the multi-token kernel that reproduces it. */
static inline void set_dot(lb_kernel_set *set, lowbit_type type, lowbit_vec_dot_fn dot,
                           lb_vec_dot_tokens_fn dot_tokens) {
    set->vec_dot[type] = set->tokens_pair[type] = dot;
    set->vec_dot_tokens[type] = dot_tokens;
}

#endif
