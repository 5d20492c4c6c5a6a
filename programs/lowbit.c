/*
 * lowbit: the command-line tool. This file only dispatches: each subcommand lives in its own
 * cmd_*.c file, listed in the table below, so adding one is one line here.
 */
#include "cli.h"
#include "lowbit.h"

#include <stdio.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"bench", cmd_bench, "GEMV/GEMM speed of every format, SIMD kernels beside the scalar reference"},
    {"quantize", cmd_quantize, "quantize a model (GGUF, llama2.c, safetensors) into a GGUF file"},
    {"imatrix", cmd_imatrix, "collect an importance matrix by running calibration text through a model"},
    {"eval", cmd_eval, "perplexity of a language model (KL-divergence against a base), or a classifier's accuracy"},
    {"generate", cmd_generate, "generate text with a language model (greedy or top-p sampling)"},
    {"compare", cmd_compare, "compare variants of a model: size, perplexity, KL-divergence, speed"},
    {"train", cmd_train, "train an image classifier (MLP or CNN), or fine-tune it with QAT"},
    {"calibrate", cmd_calibrate, "set a classifier's activation ranges from calibration images"},
    {"convert", cmd_convert, "quantize a classifier: static (integer-only), dynamic, weight-only"},
    {"inspect", cmd_inspect, "show a model file's metadata and tensors"},
    {"formats", cmd_formats,
     "list every format: layout, bits per weight, and error and speed on the golden inputs"},
};

#define COMMAND_COUNT ((int)(sizeof commands / sizeof commands[0]))

static void print_usage(FILE *out) {
    fprintf(out, "usage: lowbit <command> [options]\n\ncommands:\n");
    for (int i = 0; i < COMMAND_COUNT; i++) {
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(out, "  %-10s %s\n", "help", "show this message");
    fprintf(out, "\n  lowbit --version         print the version\n");
    fprintf(out, "  lowbit help <command>    options of a command\n");
}

static const command *find_command(const char *name) {
    for (int i = 0; i < COMMAND_COUNT; i++) {
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    }
    return NULL;
}

/* `lowbit help [command]`: the tool's usage, or a command's own. */
static int show_help(const char *topic) {
    if (!topic) {
        print_usage(stdout);
        return CLI_OK;
    }
    const command *cmd = find_command(topic);
    if (!cmd) {
        fprintf(stderr, "lowbit: no help for unknown command '%s'\n", topic);
        return CLI_USAGE;
    }
    char name[32], help_flag[] = "--help";
    snprintf(name, sizeof name, "%s", cmd->name);
    char *args[] = {name, help_flag, NULL};
    return cmd->run(2, args);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_usage(stderr);
        return CLI_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--version") || !strcmp(name, "version")) {
        printf("lowbit %s\n", LOWBIT_VERSION_STRING);
        return CLI_OK;
    }
    if (!strcmp(name, "help") || !strcmp(name, "--help") || !strcmp(name, "-h")) {
        return show_help(argc > 2 ? argv[2] : NULL);
    }
    const command *cmd = find_command(name);
    if (!cmd) {
        fprintf(stderr, "lowbit: unknown command '%s'\n\n", name);
        print_usage(stderr);
        return CLI_USAGE;
    }
    return cmd->run(argc - 1, argv + 1);
}
