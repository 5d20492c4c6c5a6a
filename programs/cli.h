/*
 * The lowbit command-line tool: one function per subcommand. Each takes the arguments after the
 * tool's name (argv[0] is the subcommand itself) and returns the process exit status: 0 on
 * success, 1 when the work failed, 2 for a usage error. Subcommands use only the public API.
 */
#ifndef LOWBIT_CLI_H
#define LOWBIT_CLI_H

#include "lowbit.h"

#include <stddef.h>
#include <stdint.h>

/* Exit statuses shared by every subcommand. */
enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

/* `lowbit formats [--json] [--golden DIR]`: the type table, measured on the golden inputs. */
int cmd_formats(int argc, char **argv);

/* `lowbit quantize IN OUT PRESET [options]`: a model in, a quantized GGUF file out. */
int cmd_quantize(int argc, char **argv);

/* `lowbit inspect FILE [--json]`: metadata and tensors of a GGUF, llama2.c or safetensors file. */
int cmd_inspect(int argc, char **argv);

/* `lowbit imatrix MODEL --text FILE -o OUT [options]`: an importance matrix from calibration text. */
int cmd_imatrix(int argc, char **argv);

/* `lowbit eval MODEL --text FILE [--base BASE | --base-logits FILE] [--save-logits FILE]`:
   perplexity of a language model, and KL-divergence and top-1 agreement against a base. */
int cmd_eval(int argc, char **argv);

/* `lowbit generate MODEL [--prompt TEXT] [--temp T] [--top-p P] [--seed S] [-n N]`: streamed text. */
int cmd_generate(int argc, char **argv);

/* `lowbit compare BASE MODEL... --text FILE`: variants side by side: size, bits per weight,
   perplexity, KL-divergence from BASE, top-1 agreement, speed. */
int cmd_compare(int argc, char **argv);

/* ---- helpers of the language-model commands (eval, generate, compare), in cmd_eval.c ---- */

/* A model opened for inference, with its tokenizer (when asked for) and forward pass. */
typedef struct cli_llm {
    lowbit_model *model;
    lowbit_tokenizer *tokenizer;
    lowbit_llama *llama;
} cli_llm;

/* Opens a model whose general.architecture is "llama" (anything else is refused as not
   supported yet); errors are printed as "lowbit COMMAND: PATH: reason". Returns a CLI status. */
int cli_llm_open(const char *command, const char *path, int n_threads, int with_tokenizer,
                 cli_llm *llm);
void cli_llm_close(cli_llm *llm);
/* The value of general.architecture ("" when missing), truncated to size. */
void cli_model_architecture(const lowbit_model *model, char *buf, size_t size);
/* A whole file into memory (malloc'd); errors printed. Returns a CLI status. */
int cli_read_file(const char *command, const char *path, char **data, size_t *length);
/* A decimal integer in [0, max]; 0 on a malformed one. */
int cli_parse_count(const char *text, int64_t max, int64_t *value);
/* A JSON string literal on stdout. */
void cli_print_json_string(const char *s);
/* The same for n bytes (NUL bytes included, escaped as \\u0000). */
void cli_print_json_chars(const char *s, size_t n);
/* Evaluation progress on stderr (a redrawn line on a terminal, plain lines otherwise): create a
   context labelled `label` (free() it), pass cli_eval_progress and it to lowbit_eval_text. */
void *cli_eval_progress_create(const char *label);
void cli_eval_progress(void *ctx, int64_t done, int64_t total);

/* ---- image classifiers (cmd_classifier.c) ---- */

/* `lowbit train --arch mlp|cnn -o OUT` or `lowbit train --qat --from MODEL -o OUT`. */
int cmd_train(int argc, char **argv);
/* `lowbit calibrate MODEL -o OUT --observer NAME`: activation ranges for static PTQ. */
int cmd_calibrate(int argc, char **argv);
/* `lowbit convert MODEL -o OUT --mode static|dynamic|weight-only`: the quantized classifier. */
int cmd_convert(int argc, char **argv);
/* `lowbit eval CLASSIFIER`: test-set accuracy (and latency); cmd_eval hands classifiers here. */
int cli_eval_classifier(int argc, char **argv);

/* `lowbit bench [options]`: GEMV/GEMM speed of every format, SIMD beside the scalar reference. */
int cmd_bench(int argc, char **argv);

#endif /* LOWBIT_CLI_H */
