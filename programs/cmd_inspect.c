/*
 * `lowbit inspect FILE [--json]`: what a model file holds, whatever its format: the metadata
 * (key, type, value) and a tensor table (name, shape, type, bytes, bits per weight).
 */
#include "cli.h"
#include "lowbit.h"

#include <stdio.h>
#include <string.h>

static const char *value_type_name(lowbit_gguf_value_type type) {
    static const char *const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                        "string", "array", "u64", "i64", "f64"};
    return (unsigned)type < sizeof names / sizeof names[0] ? names[type] : "?";
}

static const char *tensor_type_name(lowbit_type type) {
    const lowbit_type_traits *t = lowbit_type_info(type);
    return t ? t->name : "unknown";
}

static double bits_per_weight(const lowbit_tensor_info *t) {
    return t->n_elements ? 8.0 * (double)t->n_bytes / (double)t->n_elements : 0.0;
}

static void print_text(const lowbit_model *model, const char *path) {
    const int64_t n_kv = lowbit_model_kv_count(model), n_tensors = lowbit_model_tensor_count(model);
    printf("%s: %s, %lld metadata keys, %lld tensors\n\n", path,
           lowbit_model_format_name(lowbit_model_get_format(model)), (long long)n_kv,
           (long long)n_tensors);
    for (int64_t i = 0; i < n_kv; i++) {
        lowbit_kv_info kv;
        char value[160];
        lowbit_model_kv(model, i, &kv);
        lowbit_kv_format(&kv, value, sizeof value);
        printf("  %-44s %-7s %s\n", kv.key, value_type_name(kv.type), value);
    }
    printf("\n  %-36s %-22s %-8s %12s %8s\n", "tensor", "shape", "type", "bytes", "bpw");
    uint64_t bytes = 0;
    int64_t elements = 0;
    for (int64_t i = 0; i < n_tensors; i++) {
        lowbit_tensor_info t;
        lowbit_model_tensor(model, i, &t);
        char shape[64];
        int n = snprintf(shape, sizeof shape, "%lld", (long long)t.ne[0]);
        for (int d = 1; d < t.n_dims && n > 0 && (size_t)n < sizeof shape; d++) {
            n += snprintf(shape + n, sizeof shape - (size_t)n, " x %lld", (long long)t.ne[d]);
        }
        printf("  %-36s %-22s %-8s %12llu %8.3f\n", t.name, shape, tensor_type_name(t.type),
               (unsigned long long)t.n_bytes, bits_per_weight(&t));
        bytes += t.n_bytes;
        elements += t.n_elements;
    }
    printf("\n  %lld weights in %llu bytes: %.3f bits per weight\n", (long long)elements,
           (unsigned long long)bytes, elements ? 8.0 * (double)bytes / (double)elements : 0.0);
}

static void print_json(const lowbit_model *model, const char *path) {
    printf("{\"file\": ");
    cli_print_json_chars(path, strlen(path));
    printf(", \"format\": \"%s\", \"metadata\": [",
           lowbit_model_format_name(lowbit_model_get_format(model)));
    for (int64_t i = 0; i < lowbit_model_kv_count(model); i++) {
        lowbit_kv_info kv;
        char value[160];
        lowbit_model_kv(model, i, &kv);
        const size_t length = lowbit_kv_format(&kv, value, sizeof value);
        printf("%s\n  {\"key\": ", i ? "," : "");
        cli_print_json_chars(kv.key, strlen(kv.key));
        printf(", \"type\": \"%s\", \"value\": ", value_type_name(kv.type));
        cli_print_json_chars(value, length);
        printf("}");
    }
    printf("\n], \"tensors\": [");
    for (int64_t i = 0; i < lowbit_model_tensor_count(model); i++) {
        lowbit_tensor_info t;
        lowbit_model_tensor(model, i, &t);
        printf("%s\n  {\"name\": ", i ? "," : "");
        cli_print_json_chars(t.name, strlen(t.name));
        printf(", \"shape\": [");
        for (int d = 0; d < t.n_dims; d++) printf("%s%lld", d ? ", " : "", (long long)t.ne[d]);
        printf("], \"type\": \"%s\", \"bytes\": %llu, \"bits_per_weight\": %.4f}",
               tensor_type_name(t.type), (unsigned long long)t.n_bytes, bits_per_weight(&t));
    }
    printf("\n]}\n");
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL, *tokenizer = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) {
            tokenizer = argv[++i];
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: lowbit inspect FILE [--json] [--tokenizer FILE]\n"
                   "  FILE: GGUF, llama2.c or safetensors\n");
            return CLI_OK;
        } else if (!path && argv[i][0] != '-') {
            path = argv[i];
        } else {
            fprintf(stderr, "lowbit inspect: unexpected argument '%s'\n", argv[i]);
            return CLI_USAGE;
        }
    }
    if (!path) {
        fprintf(stderr, "usage: lowbit inspect FILE [--json] [--tokenizer FILE]\n");
        return CLI_USAGE;
    }
    lowbit_model *model = NULL;
    lowbit_diag diag = {0};
    const lowbit_open_options options = {tokenizer};
    const lowbit_status st = lowbit_model_open(path, &options, &model, &diag);
    if (st != LOWBIT_OK) {
        const char *message = diag.message[0] ? diag.message : lowbit_status_name(st);
        if (strstr(message, path)) fprintf(stderr, "lowbit inspect: %s\n", message);
        else fprintf(stderr, "lowbit inspect: %s: %s\n", path, message);
        return CLI_FAILED;
    }
    if (json) print_json(model, path);
    else print_text(model, path);
    lowbit_model_close(model);
    return CLI_OK;
}
