/* The llama2.c checkpoint and tokenizer reader, over bytes in memory (tests and fuzzing use this
   entry; lb_read_llama2c_model in model.h maps files and calls it). */
#ifndef LOWBIT_LLAMA2C_H
#define LOWBIT_LLAMA2C_H

#include "model.h"

/* Reads a llama2.c checkpoint (and optionally its tokenizer) from memory into an empty model.
   The tensors point into `model_bytes`, which the model does not own: the bytes must stay valid
   and unchanged while the model is used. tokenizer_bytes NULL: no tokenizer keys are set (an
   empty tokenizer is given as a non-NULL pointer with size 0, and rejected). name: the value of
   general.name (NULL: "llama2c"). On failure the model is left empty and diag says why. */
lowbit_status lb_read_llama2c_model_memory(const void *model_bytes, size_t model_size,
                                           const void *tokenizer_bytes, size_t tokenizer_size,
                                           const char *name, lb_model *m, lowbit_diag *diag);

#endif
