/*
 * A model as lowbit sees it, whatever file it came from: GGUF metadata (typed key-value pairs)
 * and tensors under GGUF's names (`token_embd.weight`, `blk.N.attn_q.weight`, ...). The readers
 * (gguf.c, llama2c.c, safetensors.c) fill one; the quantizer and `inspect` read it; the GGUF
 * writer writes one. Tensor bytes stay in the source file's read-only map: nothing is copied
 * until a tensor is read, one at a time, as floats (lb_model_read_f32).
 */
#ifndef LOWBIT_MODEL_H
#define LOWBIT_MODEL_H

#include "../common/common.h"
#include "file.h"

#define LB_MAX_TENSOR_NAME 128
#define LB_MAX_DIMS 4

/* A metadata value, encoded exactly as GGUF stores it after the type field: a scalar's bytes; a
   string's u64 length and bytes; an array's u32 element type, u64 count and elements. */
typedef struct lb_kv {
    char *key;        /* NUL-terminated, owned */
    uint32_t type;    /* lowbit_gguf_value_type */
    uint8_t *value;   /* owned */
    uint64_t value_size;
} lb_kv;

typedef struct lb_tensor {
    char name[LB_MAX_TENSOR_NAME];
    lowbit_type type;        /* storage type in the source file */
    int n_dims;
    int64_t ne[LB_MAX_DIMS]; /* ne[0] contiguous (a row); unused dimensions are 1 */
    const void *data;        /* the source bytes, in a map owned by the model */
    uint64_t n_bytes;
    /* Hugging Face checkpoints rotate halves of each head in RoPE where GGUF's Llama rotates
       adjacent pairs: their Q and K rows are reordered on read. 0: as stored; else the number of
       heads the rows are grouped in. */
    int32_t permute_heads;
} lb_tensor;

typedef struct lb_model {
    int format;                /* lowbit_model_format */
    lb_mapped_file files[2];   /* the maps the tensors point into (model, tokenizer or spare) */
    lb_kv *kvs;
    int64_t n_kv, kv_capacity;
    lb_tensor *tensors;
    int64_t n_tensors, tensor_capacity;
} lb_model;

/* Frees everything the model owns and unmaps its files; the struct is left zeroed. */
void lb_model_free(lb_model *m);

/* Metadata. Setting a key that exists replaces its value (keeping its position). */
lowbit_status lb_model_set_raw(lb_model *m, const char *key, uint32_t type, const void *value,
                               uint64_t value_size);
lowbit_status lb_model_set_u32(lb_model *m, const char *key, uint32_t v);
lowbit_status lb_model_set_i32(lb_model *m, const char *key, int32_t v);
lowbit_status lb_model_set_f32(lb_model *m, const char *key, float v);
lowbit_status lb_model_set_bool(lb_model *m, const char *key, int v);
lowbit_status lb_model_set_string(lb_model *m, const char *key, const char *s);
/* Arrays: strings (lengths given, so strings may hold any bytes), f32, i32. */
lowbit_status lb_model_set_string_array(lb_model *m, const char *key, const char *const *strings,
                                        const uint64_t *lengths, uint64_t count);
lowbit_status lb_model_set_f32_array(lb_model *m, const char *key, const float *v, uint64_t count);
lowbit_status lb_model_set_i32_array(lb_model *m, const char *key, const int32_t *v,
                                     uint64_t count);
const lb_kv *lb_model_find_kv(const lb_model *m, const char *key);
/* Scalar lookups (any integer type that fits; f64 also takes integers). 0 if missing/other type. */
int lb_kv_get_u64(const lb_kv *kv, uint64_t *v);
int lb_kv_get_f64(const lb_kv *kv, double *v);
/* Bytes of a GGUF scalar value type, 0 for string/array, -1 for an unknown type (gguf.c). */
int lb_gguf_scalar_bytes(uint32_t type);

/* Tensors. `data` must hold n_bytes = lowbit_row_bytes(type, ne[0]) * rows, inside a map the
   model owns. The name must be unique (LOWBIT_ERR_BAD_FILE otherwise). */
lowbit_status lb_model_add_tensor(lb_model *m, const char *name, lowbit_type type, int n_dims,
                                  const int64_t *ne, const void *data, int32_t permute_heads,
                                  lowbit_diag *diag);
const lb_tensor *lb_model_find_tensor(const lb_model *m, const char *name);
int64_t lb_tensor_rows(const lb_tensor *t);

/* Reads tensor i as floats (ne[0] * rows values), converting F16/BF16/quantized storage and
   applying the head permutation. Fails with LOWBIT_ERR_UNSUPPORTED for a type lowbit cannot
   decode. */
lowbit_status lb_model_read_f32(const lb_model *m, int64_t i, float *dst, lowbit_diag *diag);

/* Tells the kernel the pages of tensor i's source bytes are not needed for now, so that streaming
   a model larger than memory through the quantizer does not keep every page it has read resident
   (the map is private and read-only: the pages are simply read again if touched). */
void lb_model_release_tensor(const lb_model *m, int64_t i);
/* The same for any byte range of a mapped input file (nothing for memory the model does not map). */
void lb_model_release_bytes(const lb_model *m, const void *data, size_t n_bytes);

/* The model behind a public handle (model_api.c). */
const lb_model *lb_model_of(const lowbit_model *model);

/* The readers. Each fills an empty (zeroed) model, or leaves it empty and explains why. */
lowbit_status lb_read_gguf_model(const char *path, lb_model *m, lowbit_diag *diag);
/* The same over bytes in memory (not owned: they must outlive the model's tensors). */
lowbit_status lb_read_gguf_model_memory(const void *data, size_t size, lb_model *m,
                                        lowbit_diag *diag);
/* tokenizer_path: a llama2.c tokenizer file, or NULL to look for tok<vocab>.bin beside the model */
lowbit_status lb_read_llama2c_model(const char *path, const char *tokenizer_path, lb_model *m,
                                    lowbit_diag *diag);
/* reads config.json from the same folder */
lowbit_status lb_read_safetensors_model(const char *path, lb_model *m, lowbit_diag *diag);

#endif
