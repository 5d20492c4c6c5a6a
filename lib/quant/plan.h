/*
 * Choosing each tensor's type: presets named as llama.cpp names them (Q4_K_M, Q3_K_S, ...),
 * their per-tensor rules by role and layer, --tensor-type overrides, and the fallback chain for
 * row lengths a type cannot hold. See docs/PRESETS.md.
 */
#ifndef LOWBIT_PLAN_H
#define LOWBIT_PLAN_H

#include "../io/model.h"

typedef struct lb_preset {
    const char *name;       /* "Q4_K_M" */
    lowbit_type base_type;  /* the type a tensor gets when no rule says otherwise */
    uint32_t file_type;     /* general.file_type (llama_ftype value) */
} lb_preset;

/* The preset named `name` (case-insensitive; the aliases Q3_K, Q4_K, Q5_K mean the _M presets),
   or NULL. */
const lb_preset *lb_preset_find(const char *name);
/* LOWBIT_OK for a preset lowbit can write; otherwise an error whose message lists the supported
   presets (and says when a llama.cpp preset is known but not supported yet). */
lowbit_status lb_preset_check(const char *name, lowbit_diag *diag);
/* All presets, for listing: count and i-th. */
int lb_preset_count(void);
const lb_preset *lb_preset_at(int i);

/*
 * Fills plan[i] (name, source_type, type, n_dims, ne, n_bytes, fell_back, note) for every tensor
 * of the model, in the model's order; plan holds m->n_tensors entries. has_imatrix says whether
 * an imatrix was given at all (some preset rules depend on it, as in llama.cpp);
 * uses_importance is left 0 for the caller to set. Offsets are left for the writer's layout.
 * A plan entry whose type equals its source_type is a byte-for-byte copy. Errors: unknown
 * preset, an override pattern that does not compile or matches no quantizable tensor, a
 * requested output/embedding type that cannot hold the row length, a type lowbit cannot write,
 * a source lowbit cannot decode where it must be converted.
 */
lowbit_status lb_plan_types(const lb_model *m, const lowbit_quantize_options *options,
                            int has_imatrix, lowbit_tensor_plan *plan, lowbit_diag *diag);

#endif
