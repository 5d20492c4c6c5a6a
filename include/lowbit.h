/*
 * lowbit: low-bit quantization of neural-network weights.
 *
 * The one public header of liblowbit. Every exported function is declared here with what it
 * takes, what it returns and how it fails. Errors are values: functions return a lowbit_status
 * (LOWBIT_OK on success); lowbit_status_name() names a code, and functions that can say more fill
 * an optional lowbit_diag with a human-readable message. The library never exits or aborts.
 *
 * Formats follow GGUF/ggml exactly: the same type ids and the same block byte layouts, so that
 * what lowbit writes is read by every GGUF tool and the other way round.
 */
#ifndef LOWBIT_H
#define LOWBIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LOWBIT_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef enum lowbit_status {
    LOWBIT_OK = 0,
    LOWBIT_ERR_INVALID_ARGUMENT, /* a caller error: NULL pointer, bad size, unknown option */
    LOWBIT_ERR_NO_MEMORY,        /* an allocation failed */
    LOWBIT_ERR_IO,               /* open/read/write/rename failed */
    LOWBIT_ERR_BAD_FILE,         /* a file is truncated, malformed or hostile */
    LOWBIT_ERR_UNSUPPORTED,      /* a valid request lowbit cannot do (type without quantizer...) */
    LOWBIT_ERR_SHAPE,            /* a row length that is not a multiple of the block size */
    LOWBIT_ERR_NONFINITE,        /* NaN or Inf in an input tensor */
    LOWBIT_ERR_SCALE_OVERFLOW,   /* a block scale does not fit its storage type (fp16, e8m0...) */
    LOWBIT_ERR_NOT_FOUND,        /* a named tensor or key does not exist */
    LOWBIT_ERR_CANCELLED,        /* the caller asked to stop (e.g. SIGINT); nothing was written */
    LOWBIT_ERR_COUNT_
} lowbit_status;

/* A constant, never NULL, name of a status ("ok", "bad file", ...). */
const char *lowbit_status_name(lowbit_status status);

/* Optional detail for a failure: filled by functions that take a lowbit_diag*, may be NULL. */
typedef struct lowbit_diag {
    lowbit_status status;
    int64_t row;          /* the row (of a tensor) the error was found in, or -1 */
    uint64_t offset;      /* byte offset in a file the error was found at, or UINT64_MAX */
    char message[256];    /* a sentence saying what is wrong */
} lowbit_diag;

/* ------------------------------------------------------------------------------------------ */
/* Types: GGUF/ggml type ids, exactly ggml's numbering                                         */
/* ------------------------------------------------------------------------------------------ */

typedef enum lowbit_type {
    LOWBIT_TYPE_F32 = 0,
    LOWBIT_TYPE_F16 = 1,
    LOWBIT_TYPE_Q4_0 = 2,
    LOWBIT_TYPE_Q4_1 = 3,
    LOWBIT_TYPE_Q5_0 = 6,
    LOWBIT_TYPE_Q5_1 = 7,
    LOWBIT_TYPE_Q8_0 = 8,
    LOWBIT_TYPE_Q8_1 = 9,
    LOWBIT_TYPE_Q2_K = 10,
    LOWBIT_TYPE_Q3_K = 11,
    LOWBIT_TYPE_Q4_K = 12,
    LOWBIT_TYPE_Q5_K = 13,
    LOWBIT_TYPE_Q6_K = 14,
    LOWBIT_TYPE_Q8_K = 15,
    LOWBIT_TYPE_IQ2_XXS = 16,
    LOWBIT_TYPE_IQ2_XS = 17,
    LOWBIT_TYPE_IQ3_XXS = 18,
    LOWBIT_TYPE_IQ1_S = 19,
    LOWBIT_TYPE_IQ4_NL = 20,
    LOWBIT_TYPE_IQ3_S = 21,
    LOWBIT_TYPE_IQ2_S = 22,
    LOWBIT_TYPE_IQ4_XS = 23,
    LOWBIT_TYPE_I8 = 24,
    LOWBIT_TYPE_I16 = 25,
    LOWBIT_TYPE_I32 = 26,
    LOWBIT_TYPE_I64 = 27,
    LOWBIT_TYPE_F64 = 28,
    LOWBIT_TYPE_IQ1_M = 29,
    LOWBIT_TYPE_BF16 = 30,
    LOWBIT_TYPE_TQ1_0 = 34,
    LOWBIT_TYPE_TQ2_0 = 35,
    LOWBIT_TYPE_MXFP4 = 39,
    LOWBIT_TYPE_NVFP4 = 40,
    LOWBIT_TYPE_COUNT = 43 /* one past the largest id ggml defines */
} lowbit_type;

/*
 * Row functions. A "row" is n consecutive elements, n a multiple of the type's block size.
 *
 * quantize: encodes n floats into n / block_size blocks at dst. `importance` is NULL (every
 *   element counts the same) or n non-negative weights; the error minimised is
 *   sum_i importance[i] * (x[i] - dequant[i])^2. Input must be finite (lowbit_quantize_rows
 *   checks that first). Returns LOWBIT_ERR_SCALE_OVERFLOW when a block scale does not fit its
 *   storage type; dst is then unspecified.
 * dequantize: decodes n elements.
 * vec_dot: the dot product of a weight row (this type) with an activation row already quantized
 *   to the type's vec_dot_type, in the integer arithmetic of the format.
 */
typedef lowbit_status (*lowbit_quantize_row_fn)(const float *src, void *dst, int64_t n,
                                                const float *importance);
typedef void (*lowbit_dequantize_row_fn)(const void *src, float *dst, int64_t n);
typedef float (*lowbit_vec_dot_fn)(int64_t n, const void *weights, const void *activations);

/* One row of the type table. Code that walks tensors looks the row up instead of switching. */
typedef struct lowbit_type_traits {
    const char *name;             /* ggml's name: "q4_0", "q4_K", "iq4_nl", "f16", ... */
    lowbit_type type;             /* GGUF type id */
    int32_t block_size;           /* elements per block */
    int32_t block_bytes;          /* bytes per block */
    int32_t is_quantized;         /* 1 for block formats, 0 for F32/F16/BF16 */
    lowbit_type vec_dot_type;     /* the activation format of the dot product */
    /* round-to-nearest from the block's max, as the reference does; importance is ignored.
       For the activation formats (Q8_0, Q8_1, Q8_K) the bytes are the reference's exactly.
       NULL (with quantize) for the formats lowbit decodes but cannot encode yet (IQ1-IQ3). */
    lowbit_quantize_row_fn quantize_ref;
    /* the best encoder: searches scales (and mins) to minimise the (weighted) squared error */
    lowbit_quantize_row_fn quantize;
    lowbit_dequantize_row_fn dequantize;
    lowbit_vec_dot_fn vec_dot;    /* NULL where the format has no dot product yet */
} lowbit_type_traits;

/* The table row of a type, or NULL for an id that is not a type lowbit knows. */
const lowbit_type_traits *lowbit_type_info(lowbit_type type);
/* The type whose name is `name` (case-insensitive, "q4_K" == "Q4_K"); LOWBIT_ERR_NOT_FOUND else. */
lowbit_status lowbit_type_from_name(const char *name, lowbit_type *type);
/* Number of rows in the table and the i-th of them, for listing every format. */
int lowbit_type_count(void);
const lowbit_type_traits *lowbit_type_at(int index);
/* Bytes of one row of n elements; 0 if n is not a multiple of the block size. */
size_t lowbit_row_bytes(lowbit_type type, int64_t n);
/* Bits per weight: 8 * block_bytes / block_size. */
double lowbit_bits_per_weight(lowbit_type type);

/* ------------------------------------------------------------------------------------------ */
/* Threads                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* A fixed pool of worker threads, created once and reused. Work is split into contiguous
   ranges, so results never depend on the number of threads. */
typedef struct lowbit_pool lowbit_pool;
/* n_threads <= 0 means one per online CPU. */
lowbit_status lowbit_pool_create(int n_threads, lowbit_pool **pool);
void lowbit_pool_destroy(lowbit_pool *pool);
int lowbit_pool_size(const lowbit_pool *pool);
/* Calls fn(ctx, begin, end) over [0, n_items) split into at most pool-size contiguous ranges,
   and waits. pool may be NULL (runs on the calling thread). */
typedef void (*lowbit_range_fn)(void *ctx, int64_t begin, int64_t end);
void lowbit_pool_run(lowbit_pool *pool, int64_t n_items, lowbit_range_fn fn, void *ctx);
int lowbit_cpu_count(void);

/* ------------------------------------------------------------------------------------------ */
/* Quantizing tensors                                                                          */
/* ------------------------------------------------------------------------------------------ */

/*
 * Quantizes n_rows rows of n_per_row floats (row-major, contiguous) to `type` at dst
 * (n_rows * lowbit_row_bytes(type, n_per_row) bytes). importance: NULL or n_per_row weights,
 * one per column, shared by every row (an imatrix). pool: NULL for the calling thread.
 * Every row is checked for NaN/Inf first. Fails with LOWBIT_ERR_NONFINITE or
 * LOWBIT_ERR_SCALE_OVERFLOW naming the first offending row in diag (lowest row index, whatever
 * the thread count), LOWBIT_ERR_SHAPE when n_per_row is not a multiple of the block size.
 */
lowbit_status lowbit_quantize_rows(lowbit_type type, const float *src, void *dst, int64_t n_rows,
                                   int64_t n_per_row, const float *importance, lowbit_pool *pool,
                                   lowbit_diag *diag);
/* Same with the reference round-to-nearest encoder (quantize_ref). */
lowbit_status lowbit_quantize_rows_ref(lowbit_type type, const float *src, void *dst,
                                       int64_t n_rows, int64_t n_per_row, lowbit_pool *pool,
                                       lowbit_diag *diag);
/* Decodes n_rows rows of n_per_row elements. */
lowbit_status lowbit_dequantize_rows(lowbit_type type, const void *src, float *dst,
                                     int64_t n_rows, int64_t n_per_row, lowbit_pool *pool);
/* Dot product of one weight row of `type` with a float activation row of n elements: the
   activation is quantized to the type's vec_dot_type (reference encoder) first. */
lowbit_status lowbit_dot_row(lowbit_type type, int64_t n, const void *weights,
                             const float *activations, float *result);

/* ------------------------------------------------------------------------------------------ */
/* Matrix products                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* Reusable working memory of lowbit_matmul (the quantized activations): zero-initialise it,
   reuse it across calls so that steady-state calls allocate nothing, free it at the end. */
typedef struct lowbit_matmul_scratch {
    void *buffer;
    size_t capacity;
} lowbit_matmul_scratch;

void lowbit_matmul_scratch_free(lowbit_matmul_scratch *scratch);

/* out[t * rows + r] = dot(weights row r, x row t) for t < n_tokens, r < rows: weights is rows x
   cols of `type` (row-major, lowbit_row_bytes(type, cols) per row), x is n_tokens x cols floats.
   The activations are quantized to the type's activation format first (as llama.cpp does), then
   multiplied in the format's integer arithmetic. Threaded over weight rows; the result does not
   depend on the number of threads. pool may be NULL. */
lowbit_status lowbit_matmul(lowbit_type type, const void *weights, int64_t rows, int64_t cols,
                            const float *x, int64_t n_tokens, float *out, lowbit_pool *pool,
                            lowbit_matmul_scratch *scratch);

/* ------------------------------------------------------------------------------------------ */
/* Half-precision conversions (round to nearest even, as IEEE 754 and F16C do)                  */
/* ------------------------------------------------------------------------------------------ */

uint16_t lowbit_fp32_to_fp16(float f);
float lowbit_fp16_to_fp32(uint16_t h);
uint16_t lowbit_fp32_to_bf16(float f);
float lowbit_bf16_to_fp32(uint16_t h);

/* ------------------------------------------------------------------------------------------ */
/* GGUF reading                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef enum lowbit_gguf_value_type {
    LOWBIT_GGUF_UINT8 = 0,
    LOWBIT_GGUF_INT8 = 1,
    LOWBIT_GGUF_UINT16 = 2,
    LOWBIT_GGUF_INT16 = 3,
    LOWBIT_GGUF_UINT32 = 4,
    LOWBIT_GGUF_INT32 = 5,
    LOWBIT_GGUF_FLOAT32 = 6,
    LOWBIT_GGUF_BOOL = 7,
    LOWBIT_GGUF_STRING = 8,
    LOWBIT_GGUF_ARRAY = 9,
    LOWBIT_GGUF_UINT64 = 10,
    LOWBIT_GGUF_INT64 = 11,
    LOWBIT_GGUF_FLOAT64 = 12
} lowbit_gguf_value_type;

typedef struct lowbit_gguf lowbit_gguf;

typedef struct lowbit_tensor_info {
    const char *name;        /* NUL-terminated copy of the tensor's name */
    lowbit_type type;
    int n_dims;
    int64_t ne[4];           /* ne[0] is the contiguous dimension; unused dims are 1 */
    int64_t n_elements;
    uint64_t n_bytes;
    const void *data;        /* points into the mapped file */
} lowbit_tensor_info;

/* Opens and validates a GGUF file (versions 2 and 3) read-only through mmap. On failure *out is
   NULL and diag (if given) names the problem and its byte offset. */
lowbit_status lowbit_gguf_open(const char *path, lowbit_gguf **out, lowbit_diag *diag);
/* The same over bytes in memory, which must stay valid and unchanged until lowbit_gguf_close. */
lowbit_status lowbit_gguf_open_memory(const void *data, size_t size, lowbit_gguf **out,
                                      lowbit_diag *diag);
void lowbit_gguf_close(lowbit_gguf *gguf);
uint32_t lowbit_gguf_version(const lowbit_gguf *gguf);
int64_t lowbit_gguf_tensor_count(const lowbit_gguf *gguf);
/* The i-th tensor's info (0 <= i < count), or NULL. */
const lowbit_tensor_info *lowbit_gguf_tensor_at(const lowbit_gguf *gguf, int64_t i);
/* The tensor named `name`, or NULL. */
const lowbit_tensor_info *lowbit_gguf_find_tensor(const lowbit_gguf *gguf, const char *name);
int64_t lowbit_gguf_kv_count(const lowbit_gguf *gguf);
/* Metadata by key. Each fails with LOWBIT_ERR_NOT_FOUND for a missing key and
   LOWBIT_ERR_INVALID_ARGUMENT when the value has another type. get_u64/get_i64 accept any
   integer type that fits; get_f64 accepts any float or integer type. */
lowbit_status lowbit_gguf_get_string(const lowbit_gguf *gguf, const char *key, const char **value,
                                     uint64_t *length);
lowbit_status lowbit_gguf_get_u64(const lowbit_gguf *gguf, const char *key, uint64_t *value);
lowbit_status lowbit_gguf_get_i64(const lowbit_gguf *gguf, const char *key, int64_t *value);
lowbit_status lowbit_gguf_get_f64(const lowbit_gguf *gguf, const char *key, double *value);


/* ------------------------------------------------------------------------------------------ */
/* Models: GGUF, llama2.c and safetensors, seen through GGUF's names                           */
/* ------------------------------------------------------------------------------------------ */

typedef enum lowbit_model_format {
    LOWBIT_MODEL_GGUF = 1,
    LOWBIT_MODEL_LLAMA2C = 2,
    LOWBIT_MODEL_SAFETENSORS = 3
} lowbit_model_format;

typedef struct lowbit_model lowbit_model;

typedef struct lowbit_open_options {
    /* llama2.c checkpoints carry no tokenizer: its file (llama2.c tokenizer format), or NULL to
       use tok<vocab_size>.bin in the model's folder when it exists */
    const char *tokenizer_path;
} lowbit_open_options;

/* Opens a model read-only, recognising its format by content (GGUF magic; safetensors' JSON
   header; otherwise a llama2.c checkpoint whose header and size agree). Tensors are mapped, not
   read. options may be NULL. On failure *out is NULL and diag says why. */
lowbit_status lowbit_model_open(const char *path, const lowbit_open_options *options,
                                lowbit_model **out, lowbit_diag *diag);
void lowbit_model_close(lowbit_model *model);
lowbit_model_format lowbit_model_get_format(const lowbit_model *model);
const char *lowbit_model_format_name(lowbit_model_format format); /* "gguf", "llama2.c", ... */
int64_t lowbit_model_tensor_count(const lowbit_model *model);
/* Fills *info for tensor i (its name and data stay valid while the model is open). */
lowbit_status lowbit_model_tensor(const lowbit_model *model, int64_t i, lowbit_tensor_info *info);
/* Tensor i as floats (ne[0] * rows values), whatever its storage type. */
lowbit_status lowbit_model_read_f32(const lowbit_model *model, int64_t i, float *dst,
                                    lowbit_diag *diag);

typedef struct lowbit_kv_info {
    const char *key;
    lowbit_gguf_value_type type;
    lowbit_gguf_value_type array_type; /* for arrays */
    uint64_t array_count;              /* for arrays */
    const void *value;                 /* GGUF encoding of the value (after the type field) */
    uint64_t value_size;
} lowbit_kv_info;

int64_t lowbit_model_kv_count(const lowbit_model *model);
lowbit_status lowbit_model_kv(const lowbit_model *model, int64_t i, lowbit_kv_info *info);
/* A one-line, printable rendering of a value (strings quoted and escaped, long arrays
   abbreviated), NUL-terminated and truncated to size. Returns the length written. */
size_t lowbit_kv_format(const lowbit_kv_info *info, char *buf, size_t size);

/* ------------------------------------------------------------------------------------------ */
/* Quantizing models                                                                           */
/* ------------------------------------------------------------------------------------------ */

typedef struct lowbit_tensor_type_override {
    const char *pattern; /* POSIX extended regular expression, searched in the tensor name */
    lowbit_type type;
} lowbit_tensor_type_override;

typedef void (*lowbit_progress_fn)(void *ctx, int64_t tensor_index, int64_t n_tensors,
                                   uint64_t bytes_done, uint64_t bytes_total);

typedef struct lowbit_quantize_options {
    const char *preset;     /* llama.cpp's names: "Q4_K_M", "Q8_0", "IQ4_XS", ... */
    int pure;               /* every quantizable tensor gets the preset's base type */
    const lowbit_tensor_type_override *overrides; /* first match wins */
    int n_overrides;
    int output_tensor_type;       /* a lowbit_type for output.weight, or -1 */
    int token_embedding_type;     /* a lowbit_type for token_embd.weight, or -1 */
    const char *imatrix_path;     /* GGUF imatrix or legacy .dat, or NULL */
    int n_threads;                /* <= 0: one per CPU */
    lowbit_progress_fn progress;  /* called after each tensor, or NULL */
    void *progress_ctx;
    volatile const int *cancel;   /* when it becomes non-zero, quantization stops cleanly */
} lowbit_quantize_options;

void lowbit_quantize_options_init(lowbit_quantize_options *options);
/* LOWBIT_OK when `preset` names a preset lowbit can write; otherwise diag lists the supported ones. */
lowbit_status lowbit_preset_check(const char *preset, lowbit_diag *diag);

typedef struct lowbit_tensor_plan {
    char name[128];
    lowbit_type source_type;
    lowbit_type type;         /* what will be written */
    int n_dims;
    int64_t ne[4];
    uint64_t n_bytes;         /* bytes written for this tensor */
    uint64_t offset;          /* from the start of the data section */
    int fell_back;            /* 1 when the chosen type did not fit and another was used */
    int uses_importance;      /* 1 when an imatrix entry weights its encoding */
    char note[160];           /* why a fallback happened (or why a type was kept), else empty */
} lowbit_tensor_plan;

typedef struct lowbit_plan lowbit_plan;

/* Chooses every tensor's type (preset rules, overrides, fallbacks) and lays out the output
   file; nothing is written. Fails on an unknown preset, an invalid or unmatched override, an
   unreadable imatrix, or a tensor no format can hold. */
lowbit_status lowbit_plan_create(const lowbit_model *model, const lowbit_quantize_options *options,
                                 lowbit_plan **out, lowbit_diag *diag);
void lowbit_plan_destroy(lowbit_plan *plan);
int64_t lowbit_plan_tensor_count(const lowbit_plan *plan);
const lowbit_tensor_plan *lowbit_plan_tensor(const lowbit_plan *plan, int64_t i);
uint64_t lowbit_plan_file_size(const lowbit_plan *plan); /* exact size of the file to be written */
uint32_t lowbit_plan_file_type(const lowbit_plan *plan); /* general.file_type (llama_ftype) */

/* Writes the planned GGUF to out_path: streamed tensor by tensor into a temporary file in the
   same folder, fsynced and renamed over out_path only when complete. On any failure (including
   cancellation) the temporary file is removed and out_path is untouched. The model's file is
   never opened for writing. The bytes written do not depend on n_threads. */
lowbit_status lowbit_quantize_model(const lowbit_model *model, const lowbit_plan *plan,
                                    const char *out_path, const lowbit_quantize_options *options,
                                    lowbit_diag *diag);

/* Removes every temporary output file lowbit has open in this process. Async-signal-safe: for a
   SIGINT/SIGTERM handler that then exits (the files' owners must not be used afterwards). */
void lowbit_remove_temporary_files(void);

/* ------------------------------------------------------------------------------------------ */
/* Tokenizer (SentencePiece-style BPE by score, with byte fallback)                            */
/* ------------------------------------------------------------------------------------------ */

typedef struct lowbit_tokenizer lowbit_tokenizer;

/* Builds the tokenizer described by a model's tokenizer.ggml.* metadata (GGUF files, and
   llama2.c checkpoints opened with their tokenizer file). LOWBIT_ERR_NOT_FOUND if there is none. */
lowbit_status lowbit_tokenizer_create(const lowbit_model *model, lowbit_tokenizer **out,
                                      lowbit_diag *diag);
void lowbit_tokenizer_free(lowbit_tokenizer *tokenizer);
int32_t lowbit_tokenizer_vocab_size(const lowbit_tokenizer *tokenizer);
int32_t lowbit_tokenizer_bos(const lowbit_tokenizer *tokenizer);
int32_t lowbit_tokenizer_eos(const lowbit_tokenizer *tokenizer);
/* 1 when text bytes without a piece of their own fall back to <0xNN> byte tokens. */
int lowbit_tokenizer_has_byte_fallback(const lowbit_tokenizer *tokenizer);
/* Encodes text (length bytes; a leading space is added, as SentencePiece does), with BOS first
   when add_bos. Writes at most max_tokens ids and sets *n_tokens to the number the whole text
   needs. LOWBIT_ERR_UNSUPPORTED when a character has no piece and there is no byte fallback. */
lowbit_status lowbit_tokenizer_encode(const lowbit_tokenizer *tokenizer, const char *text,
                                      size_t length, int add_bos, int32_t *tokens,
                                      int64_t max_tokens, int64_t *n_tokens);
/* The text of `token` following `previous` (the leading space after BOS is dropped, byte tokens
   become their byte). Returns a pointer valid until the next call with the same buffer. */
const char *lowbit_tokenizer_decode(const lowbit_tokenizer *tokenizer, int32_t previous,
                                    int32_t token, char buf[8], size_t *length);

/* ------------------------------------------------------------------------------------------ */
/* Llama-family forward pass on weights of any format                                          */
/* ------------------------------------------------------------------------------------------ */

typedef struct lowbit_llama lowbit_llama;

typedef struct lowbit_llama_config {
    int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, context_length;
    float rms_norm_eps, rope_theta;
} lowbit_llama_config;

/* Prepares a model for inference: checks every tensor the architecture needs (by GGUF name, with
   the shape the configuration implies; a missing or mis-shaped one is an error naming it), keeps
   the weights where they are (mapped, in their formats) and allocates all working memory and the
   KV cache for the model's context length once. The model must stay open while it is used. */
lowbit_status lowbit_llama_create(const lowbit_model *model, int n_threads, lowbit_llama **out,
                                  lowbit_diag *diag);
void lowbit_llama_free(lowbit_llama *llama);
const lowbit_llama_config *lowbit_llama_get_config(const lowbit_llama *llama);

/* Feeds n tokens at positions pos .. pos + n - 1 (the KV cache must hold positions 0 .. pos - 1
   of the same sequence; pos = 0 starts a new one) as one batch, and writes n x vocab logits (row
   i: the prediction after token i). pos + n must not exceed the context length. */
lowbit_status lowbit_llama_forward(lowbit_llama *llama, const int32_t *tokens, int n, int pos,
                                   float *logits, lowbit_diag *diag);

/* Called before every matrix product with the product's weight name and its float input (n_rows
   x n_cols, row-major), e.g. to collect an importance matrix. NULL removes it. */
typedef void (*lowbit_matmul_observer)(void *ctx, const char *weight_name, const float *input,
                                       int64_t n_rows, int64_t n_cols);
void lowbit_llama_set_observer(lowbit_llama *llama, lowbit_matmul_observer observer, void *ctx);

/* ------------------------------------------------------------------------------------------ */
/* Evaluation of language models                                                               */
/* ------------------------------------------------------------------------------------------ */

/* Perplexity by the protocol of ../shared/golden/llama/README.md: the text is split on blank
   lines into paragraphs (empty ones skipped; with a tokenizer without byte fallback, paragraphs it
   cannot encode are skipped and counted), each encoded with BOS first and no EOS, cut at the
   context length, run from an empty KV cache, and every next-token prediction scored. With a base
   model (or the base's saved logits), the same positions also give the KL-divergence of the
   model's next-token distribution from the base's, top-1 agreement and the change of the correct
   token's probability. */
typedef struct lowbit_eval_result {
    int64_t paragraphs, skipped_paragraphs, scored_tokens;
    double nll_per_token, perplexity;
    int has_base;                       /* the fields below are set when a base was given */
    double kld_mean, kld_median, kld_p99, kld_max;
    double top1_agreement;              /* share of positions whose argmax agrees with the base */
    double delta_p_rms;                 /* RMS of p(correct) - p_base(correct) */
    double base_perplexity;
    double seconds, tokens_per_second;  /* of the evaluated model's forward passes */
} lowbit_eval_result;

typedef void (*lowbit_eval_progress_fn)(void *ctx, int64_t paragraphs_done, int64_t paragraphs);

typedef struct lowbit_eval_options {
    lowbit_llama *base;              /* a base model run in the same pass (its KV cache is used), or NULL */
    const char *base_logits_path;    /* logits of the base saved earlier, or NULL */
    const char *save_logits_path;    /* save this model's logits here (to serve as a base), or NULL */
    int64_t max_paragraphs;          /* 0: all */
    lowbit_eval_progress_fn progress;
    void *progress_ctx;
} lowbit_eval_options;

lowbit_status lowbit_eval_text(lowbit_llama *llama, const lowbit_tokenizer *tokenizer,
                               const char *text, size_t length, const lowbit_eval_options *options,
                               lowbit_eval_result *result, lowbit_diag *diag);

/* ------------------------------------------------------------------------------------------ */
/* Importance matrices (llama.cpp's GGUF imatrix layout)                                       */
/* ------------------------------------------------------------------------------------------ */

typedef struct lowbit_imatrix_collector lowbit_imatrix_collector;

/* Accumulates, for every matrix the forward pass multiplies, the sum of x^2 over each input
   column and the number of rows seen (attach it with lowbit_imatrix_attach, run text through the
   model, then save). */
lowbit_status lowbit_imatrix_collector_create(lowbit_imatrix_collector **out);
void lowbit_imatrix_collector_free(lowbit_imatrix_collector *collector);
void lowbit_imatrix_attach(lowbit_imatrix_collector *collector, lowbit_llama *llama);
/* Writes <name>.in_sum2 / <name>.counts tensors and the imatrix.datasets, imatrix.chunk_count,
   imatrix.chunk_size keys, atomically. */
lowbit_status lowbit_imatrix_save(const lowbit_imatrix_collector *collector, const char *path,
                                  const char *dataset_name, int64_t chunk_count,
                                  int64_t chunk_size, lowbit_diag *diag);

/* ------------------------------------------------------------------------------------------ */
/* Image classifiers: training, post-training quantization, QAT, integer-only inference        */
/* ------------------------------------------------------------------------------------------ */

/* A labelled image set (IDX files, gzipped or not: MNIST's and Fashion-MNIST's format). */
typedef struct lowbit_dataset lowbit_dataset;

/* `dir`/train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz (train = 1, 60,000 images), or
   the t10k-* files (train = 0, 10,000 images), as Debian's dataset-fashion-mnist installs them
   in /usr/share/datasets/fashion-mnist. */
lowbit_status lowbit_dataset_open_fashion_mnist(const char *dir, int train, lowbit_dataset **out,
                                                lowbit_diag *diag);
lowbit_status lowbit_dataset_open_idx(const char *images_path, const char *labels_path,
                                      lowbit_dataset **out, lowbit_diag *diag);
void lowbit_dataset_free(lowbit_dataset *dataset);
int64_t lowbit_dataset_count(const lowbit_dataset *dataset);

/* A classifier: a float network (trained, calibrated or QAT-trained) or a quantized one. */
typedef struct lowbit_classifier lowbit_classifier;

typedef enum lowbit_classifier_kind {
    LOWBIT_CLASSIFIER_FLOAT = 0,
    LOWBIT_CLASSIFIER_STATIC,      /* integer-only inference (static PTQ or converted QAT) */
    LOWBIT_CLASSIFIER_DYNAMIC,     /* int weights, activation ranges computed per input */
    LOWBIT_CLASSIFIER_WEIGHT_ONLY, /* int weights, float activations */
} lowbit_classifier_kind;

typedef struct lowbit_classifier_info {
    lowbit_classifier_kind kind;
    const char *kind_name;       /* "float", "static", "dynamic", "weight-only" */
    int32_t height, width, channels, classes;
    int n_layers;
    int64_t parameters;          /* weights and biases */
    int64_t parameter_bytes;     /* as stored (4-bit weights count half a byte) */
    int weight_bits, activation_bits; /* 32 for float */
    int integer_only;            /* inference uses integer arithmetic only */
    int has_ranges;              /* a float net whose every quant point has a range */
} lowbit_classifier_info;

/* A new float network, "mlp" or "cnn", sized for the dataset's images and classes, initialized
   from seed. */
lowbit_status lowbit_classifier_create(const char *arch, const lowbit_dataset *dataset,
                                       uint64_t seed, lowbit_classifier **out, lowbit_diag *diag);
/* Either kind, from the GGUF files lowbit writes (docs/CLASSIFIER_FILES.md); atomic save. */
lowbit_status lowbit_classifier_load(const char *path, lowbit_classifier **out, lowbit_diag *diag);
lowbit_status lowbit_classifier_save(const lowbit_classifier *classifier, const char *path,
                                     lowbit_diag *diag);
void lowbit_classifier_free(lowbit_classifier *classifier);
void lowbit_classifier_get_info(const lowbit_classifier *classifier, lowbit_classifier_info *info);
/* One line per layer (kind, shape, parameters, range) into buf; returns the length needed. */
size_t lowbit_classifier_describe(const lowbit_classifier *classifier, char *buf, size_t size);

typedef struct lowbit_train_progress {
    int epoch, epochs;
    int64_t batch, batches;
    double loss, accuracy;  /* over the epoch so far */
} lowbit_train_progress;

typedef struct lowbit_train_options {
    int epochs;               /* 0: the architecture's default */
    int batch_size;           /* 0: default */
    const char *optimizer;    /* "sgd" (with momentum) or "adam"; NULL: default */
    float learning_rate;      /* 0: default */
    float momentum;           /* SGD; 0: default 0.9 */
    float weight_decay;       /* <0: none, 0: default */
    uint64_t seed;
    int64_t max_images;       /* train on the first N images only; 0: all */
    /* Quantization-aware training: fine-tunes a float net with fake quantization (batch norm
       folded first), learning the activation ranges the integer model will use. The ranges
       start from the net's own (calibrated) or, when it has none, from an MSE calibration at
       the activation bits on the first 500 training images. */
    int qat;
    int weight_bits, activation_bits; /* QAT: 0 = 8 */
    int learn_ranges;                 /* QAT: 1 learned (LSQ-style) ranges, -1 moving-average
                                         ranges, 0 learned below 8 bits, else moving-average */
    void (*progress)(void *ctx, const lowbit_train_progress *progress);
    void *progress_ctx;
} lowbit_train_options;

/* Trains a float classifier in place. Deterministic for a given seed, whatever the pool size. */
lowbit_status lowbit_classifier_train(lowbit_classifier *classifier, const lowbit_dataset *train,
                                      const lowbit_train_options *options, lowbit_pool *pool,
                                      lowbit_diag *diag);

typedef struct lowbit_calibrate_options {
    const char *observer;     /* "minmax", "moving-average", "percentile", "kl", "mse"; NULL: minmax */
    double percentile;        /* "percentile": default 99.99 */
    int activation_bits;      /* the bits KL and MSE choose a range for; 0 = 8 */
    int64_t images;           /* calibration images (the dataset's first); 0: 500 */
    int batch_size;           /* images per observed batch (matters for moving-average); 0: 32 */
} lowbit_calibrate_options;

/* Runs calibration images through a float classifier and sets the range of every quantization
   point from the chosen observer (static PTQ's first step). */
lowbit_status lowbit_classifier_calibrate(lowbit_classifier *classifier,
                                          const lowbit_dataset *images,
                                          const lowbit_calibrate_options *options,
                                          lowbit_pool *pool, lowbit_diag *diag);

typedef struct lowbit_convert_options {
    lowbit_classifier_kind kind;  /* STATIC (needs ranges), DYNAMIC or WEIGHT_ONLY */
    int weight_bits;              /* 0 = 8 */
    int activation_bits;          /* 0 = 8 */
} lowbit_convert_options;

/* A quantized classifier from a float one (batch norm folded, weights per output channel). */
lowbit_status lowbit_classifier_convert(const lowbit_classifier *classifier,
                                        const lowbit_convert_options *options,
                                        lowbit_classifier **out, lowbit_diag *diag);

/* Logits (n x classes) of n images (n x height x width x channels bytes). */
lowbit_status lowbit_classifier_predict(const lowbit_classifier *classifier,
                                        const uint8_t *images, int64_t n, float *logits,
                                        lowbit_pool *pool, lowbit_diag *diag);

typedef struct lowbit_classifier_eval {
    int64_t images, correct;
    double accuracy;          /* correct / images */
    double seconds;           /* of the predictions */
} lowbit_classifier_eval;

/* Accuracy on the first max_images images (0: all), in batches of batch_size (0: 256). */
lowbit_status lowbit_classifier_evaluate(const lowbit_classifier *classifier,
                                         const lowbit_dataset *dataset, int64_t max_images,
                                         int batch_size, lowbit_pool *pool,
                                         lowbit_classifier_eval *result, lowbit_diag *diag);
/* The images of a dataset (count x height x width x channels bytes) and its labels. */
const uint8_t *lowbit_dataset_images(const lowbit_dataset *dataset);
const uint8_t *lowbit_dataset_labels(const lowbit_dataset *dataset);

#ifdef __cplusplus
}
#endif

#endif /* LOWBIT_H */
