/*
 * Importance matrices: per weight matrix, the mean of x^2 over each input column, collected on
 * calibration text. Read from llama.cpp's GGUF imatrix layout (<name>.in_sum2 and <name>.counts
 * tensors, imatrix.* keys) or its older binary .dat layout.
 */
#ifndef LOWBIT_IMATRIX_H
#define LOWBIT_IMATRIX_H

#include "../common/common.h"

typedef struct lb_imatrix lb_imatrix;

lowbit_status lb_imatrix_load(const char *path, lb_imatrix **out, lowbit_diag *diag);
void lb_imatrix_free(lb_imatrix *im);
/* The importance weights (n_cols values, the mean x^2 per column) of the matrix named
   tensor_name (e.g. "blk.0.attn_q.weight") for expert/slice `slice` (0 for ordinary matrices);
   NULL if the imatrix has no entry for it. *error is set to 1 (and diag filled) when an entry
   exists with the wrong number of columns or non-finite values. */
const float *lb_imatrix_find(const lb_imatrix *im, const char *tensor_name, int64_t n_cols,
                             int64_t slice, int *error, lowbit_diag *diag);
int64_t lb_imatrix_entry_count(const lb_imatrix *im);
/* Dataset names and chunk count, for the output's quantize.imatrix.* keys ("" / 0 if unknown). */
const char *lb_imatrix_dataset(const lb_imatrix *im);
int64_t lb_imatrix_chunk_count(const lb_imatrix *im);

#endif
