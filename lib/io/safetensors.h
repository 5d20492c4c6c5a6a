/* The safetensors reader's entry point over memory (tests and fuzzing; lb_read_safetensors_model
   maps the files and calls it). */
#ifndef LOWBIT_SAFETENSORS_H
#define LOWBIT_SAFETENSORS_H

#include "model.h"

/* The largest header accepted, as the safetensors format itself specifies. */
#define LB_SAFETENSORS_MAX_HEADER (100u * 1000u * 1000u)

/* Reads a Llama checkpoint from a safetensors file's bytes and its config.json's text into an
   empty model. The tensors point into `data`, which the caller keeps valid and unchanged for
   the model's life (m->files are left unset). On failure the model is left empty. */
lowbit_status lb_read_safetensors_memory(const uint8_t *data, uint64_t size, const char *config,
                                         uint64_t config_length, lb_model *m, lowbit_diag *diag);

#endif
