/*
 * The lowbit command-line tool: one function per subcommand. Each takes the arguments after the
 * tool's name (argv[0] is the subcommand itself) and returns the process exit status: 0 on
 * success, 1 when the work failed, 2 for a usage error. Subcommands use only the public API.
 */
#ifndef LOWBIT_CLI_H
#define LOWBIT_CLI_H

/* Exit statuses shared by every subcommand. */
enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

/* `lowbit formats [--json] [--golden DIR]`: the type table, measured on the golden inputs. */
int cmd_formats(int argc, char **argv);

/* `lowbit quantize IN OUT PRESET [options]`: a model in, a quantized GGUF file out. */
int cmd_quantize(int argc, char **argv);

/* `lowbit inspect FILE [--json]`: metadata and tensors of a GGUF, llama2.c or safetensors file. */
int cmd_inspect(int argc, char **argv);

#endif /* LOWBIT_CLI_H */
