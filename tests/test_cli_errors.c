/*
 * The command line on bad input: every file of the malformed corpus (tests/data/malformed, made
 * by tests/data/make_malformed.py) through `lowbit inspect FILE` and `lowbit quantize FILE OUT
 * Q8_0`, then usage errors. Each run is a real process (fork/exec of the built CLI), so a crash
 * shows up as a signal, not as a failed check in this process.
 *
 * A failed run must: exit with status exactly 1 (2 for usage errors), print one line on stderr
 * that starts with "lowbit" and holds the word the table names for that file (searched with the
 * file's own name blanked out, so "gguf_truncated_data.gguf" cannot supply "truncated"), print
 * nothing on stdout, and leave the output folder empty (no output, no temporary file). The
 * corpus files themselves must be left unmodified.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "testing.h"
#include "testing_process.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CORPUS LOWBIT_TEST_DATA "/malformed"

static char root[] = "/tmp/lowbit_cli_errors.XXXXXX";
static char out_folder[256]; /* root/out: where quantize writes; must stay empty on failure */
static char out_path[300];   /* Runs the CLI with argv (argv[0] is "lowbit"), stdin from /dev/null, capturing both streams. */
static void run_cli(const char *const *argv, lb_cli_result *r) {
    lb_finish_cli(lb_start_cli(argv, root, NULL), root, r);
}

/* One line: non-empty, ends with '\n', no other '\n'. */
static int is_one_line(const char *s) {
    const char *nl = strchr(s, '\n');
    return s[0] != '\0' && s[0] != '\n' && nl && nl[1] == '\0';
}

/* Whether `message` holds `word` once every occurrence of `name` (a file name) is blanked out. */
static int mentions(const char *message, const char *word, const char *name) {
    char copy[LB_CAPTURE_BYTES];
    snprintf(copy, sizeof copy, "%s", message);
    const size_t name_length = name ? strlen(name) : 0;
    for (char *p = name_length ? strstr(copy, name) : NULL; p; p = strstr(p, name)) {
        memset(p, '#', name_length);
    }
    return strstr(copy, word) != NULL;
}

static const char *corpus_path(const char *file) {
    static char paths[4][1024];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, 1024, "%s/%s", CORPUS, file);
    return p;
}

/* The checks every failed run gets. `label` says which run; `name` is blanked in the message. */
static void expect_failure(const lb_cli_result *r, int code, const char *label, const char *name,
                           const char *word, const char *also) {
    CHECK(r->exited && r->code == code, "%s: %s %d (want exit %d); stderr: %s", label,
          r->exited ? "exit" : "killed by signal", r->code, code, r->err);
    CHECK(strncmp(r->err, "lowbit", 6) == 0 || (code == 2 && strncmp(r->err, "usage:", 6) == 0),
          "%s: stderr starts with 'lowbit': %s", label, r->err);
    if (code == 1) CHECK(is_one_line(r->err), "%s: a one-line message: '%s'", label, r->err);
    CHECK(mentions(r->err, word, name), "%s: the message names '%s': %s", label, word, r->err);
    if (also) CHECK(mentions(r->err, also, name), "%s: the message names '%s': %s", label, also, r->err);
    CHECK(r->out[0] == '\0', "%s: nothing on stdout: '%.200s'", label, r->out);
    CHECK(strcmp(lb_listing(out_folder), "") == 0, "%s: the output folder is left empty: %s", label,
          lb_listing(out_folder));
}

static void inspect(const char *path, lb_cli_result *r) {
    const char *argv[] = {"lowbit", "inspect", path, NULL};
    run_cli(argv, r);
}

static void quantize(const char *path, lb_cli_result *r) {
    const char *argv[] = {"lowbit", "quantize", path, out_path, "Q8_0", NULL};
    run_cli(argv, r);
}

/* ---- the corpus ---- */

typedef struct corpus_case {
    const char *file;
    const char *word; /* both commands' messages must hold it */
    const char *also; /* and this too, when not NULL */
} corpus_case;

static const corpus_case corpus[] = {
    /* truncated at each section of a GGUF file */
    {"gguf_truncated_magic.gguf", "short", NULL},
    {"gguf_truncated_version.gguf", "truncated", "version"},
    {"gguf_truncated_counts.gguf", "truncated", "tensor count"},
    {"gguf_truncated_kv_key.gguf", "truncated", "metadata"},
    {"gguf_truncated_kv_value.gguf", "truncated", "metadata string"},
    {"gguf_truncated_array.gguf", "truncated", "array"},
    {"gguf_truncated_tensor_info.gguf", "truncated", "tensor infos"},
    {"gguf_truncated_padding.gguf", "truncated", "tensor data"},
    {"gguf_truncated_data.gguf", "past the end", "blk.0.attn_q.weight"},
    /* header */
    {"gguf_bad_magic.gguf", "magic", NULL},
    {"gguf_version1.gguf", "version 1", NULL},
    {"gguf_version4.gguf", "version 4", NULL},
    /* counts and lengths */
    {"gguf_huge_kv_count.gguf", "truncated", "metadata"},
    {"gguf_huge_tensor_count.gguf", "truncated", "tensor infos"},
    {"gguf_huge_string_length.gguf", "truncated", "metadata key"},
    {"gguf_huge_array_count.gguf", "truncated", "array"},
    {"gguf_string_past_end.gguf", "truncated", "metadata string"},
    /* metadata */
    {"gguf_unknown_value_type.gguf", "unknown metadata value type", "77"},
    {"gguf_unknown_array_type.gguf", "unknown array element type", "66"},
    {"gguf_deep_nested_array.gguf", "nested", NULL},
    {"gguf_duplicate_key.gguf", "duplicate", "general.name"},
    {"gguf_alignment_not_power_of_two.gguf", "power of two", "48"},
    {"gguf_alignment_wrong_type.gguf", "general.alignment", "uint32"},
    /* tensor infos */
    {"gguf_duplicate_tensor_name.gguf", "duplicate", "blk.0.attn_q.weight"},
    {"gguf_unknown_tensor_type.gguf", "unknown type", "99"},
    {"gguf_overflowing_dims.gguf", "overflowing", "blk.0.attn_q.weight"},
    {"gguf_zero_dim.gguf", "zero", "blk.0.attn_norm.weight"},
    {"gguf_five_dims.gguf", "5 dimensions", NULL},
    {"gguf_empty_tensor_name.gguf", "empty", NULL},
    {"gguf_row_not_block_multiple.gguf", "multiple of the block size", "48"},
    /* tensor offsets */
    {"gguf_misaligned_offset.gguf", "not aligned", "1028"},
    {"gguf_overlapping_tensors.gguf", "overlap", "blk.0.attn_norm.weight"},
    {"gguf_offset_past_end.gguf", "past the end", "blk.0.attn_norm.weight"},
    /* the offset 2^64 - 32: the message must give it as the file has it, not wrapped around */
    {"gguf_offset_wraps.gguf", "past the end", "18446744073709551584"},
    /* llama2.c checkpoints */
    {"llama2c_truncated_header.bin", "too short", "28"},
    {"llama2c_truncated_weights.bin", "truncated", "2844"},
    {"llama2c_trailing_bytes.bin", "trailing", "12"},
    {"llama2c_negative_dim.bin", "positive", "-8"},
    {"llama2c_zero_layers.bin", "n_layers", "positive"},
    {"llama2c_heads_not_dividing_dim.bin", "divisible", "n_heads"},
    {"llama2c_huge_dims.bin", "2^64", NULL},
    /* safetensors (config.json beside them is valid) */
    {"safetensors_header_past_end.safetensors", "past the end", "4000"},
    {"safetensors_bad_json.safetensors", "JSON", NULL},
    {"safetensors_truncated_data.safetensors", "past the end", "model.embed_tokens.weight"},
    {"safetensors_overlapping.safetensors", "overlap", "lm_head.weight"},
    /* nothing at all */
    {"zero_bytes.bin", "empty", NULL},
};

/* Files of the corpus folder that are not failure cases: checked on their own below. */
static const char *const other_files[] = {
    "config.json",                /* read beside the safetensors files */
    "gguf_valid_reference.gguf",  /* the file the GGUF cases break, intact */
    "gguf_nan_weight.gguf",       /* valid, but a weight is NaN */
    "gguf_inf_weight.gguf",       /* valid, but a weight is +Inf */
};

#define N_CORPUS ((int)(sizeof corpus / sizeof corpus[0]))
#define N_OTHER ((int)(sizeof other_files / sizeof other_files[0]))

static int listed(const char *name) {
    for (int i = 0; i < N_CORPUS; i++) if (!strcmp(corpus[i].file, name)) return 1;
    for (int i = 0; i < N_OTHER; i++) if (!strcmp(other_files[i], name)) return 1;
    return 0;
}

/* Every file in the folder is in a table (a new corpus file cannot go untested) and back. */
static void test_corpus_is_complete(void) {
    int n_files = 0;
    DIR *d = opendir(CORPUS);
    CHECK(d != NULL, "corpus folder %s: %s (run tests/data/make_malformed.py)", CORPUS, strerror(errno));
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        n_files++;
        CHECK(listed(e->d_name), "corpus file %s is in no table of this test", e->d_name);
    }
    closedir(d);
    CHECK(n_files == N_CORPUS + N_OTHER, "%d files in the corpus folder, %d in the tables", n_files,
          N_CORPUS + N_OTHER);
    struct stat st;
    for (int i = 0; i < N_CORPUS; i++) {
        const char *path = corpus_path(corpus[i].file);
        CHECK(stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size < 10000,
              "corpus file %s exists and is small", path);
    }
}

typedef struct file_state {
    off_t size;
    struct timespec mtime;
    unsigned long long hash;
} file_state;

static file_state state_of(const char *path) {
    file_state s = {0};
    struct stat st;
    if (stat(path, &st) == 0) {
        s.size = st.st_size;
        s.mtime = st.st_mtim;
    }
    s.hash = 1469598103934665603ull; /* FNV-1a over the content */
    FILE *f = fopen(path, "rb");
    for (int c; f && (c = fgetc(f)) != EOF;) s.hash = (s.hash ^ (unsigned char)c) * 1099511628211ull;
    if (f) fclose(f);
    return s;
}

static int same_state(file_state a, file_state b) {
    return a.size == b.size && a.hash == b.hash && a.mtime.tv_sec == b.mtime.tv_sec &&
           a.mtime.tv_nsec == b.mtime.tv_nsec;
}

static void test_corpus(void) {
    lb_cli_result *r = malloc(sizeof *r);
    for (int i = 0; i < N_CORPUS; i++) {
        const corpus_case *c = &corpus[i];
        const char *path = corpus_path(c->file);
        const file_state before = state_of(path);
        char label[160];
        snprintf(label, sizeof label, "inspect %s", c->file);
        inspect(path, r);
        expect_failure(r, 1, label, c->file, c->word, c->also);
        snprintf(label, sizeof label, "quantize %s", c->file);
        quantize(path, r);
        expect_failure(r, 1, label, c->file, c->word, c->also);
        CHECK(same_state(before, state_of(path)), "%s is left unmodified", c->file);
    }
    free(r);
}

/* The intact file: both commands succeed, so each failure above is due to its one defect. */
static void test_valid_reference(void) {
    lb_cli_result *r = malloc(sizeof *r);
    const char *path = corpus_path("gguf_valid_reference.gguf");
    inspect(path, r);
    CHECK(r->exited && r->code == 0 && strstr(r->out, "blk.0.attn_q.weight") && r->err[0] == '\0',
          "inspect the valid file: exit %d, stderr %s", r->code, r->err);
    quantize(path, r);
    CHECK(r->exited && r->code == 0 && strstr(r->out, "wrote"), "quantize the valid file: exit %d, %s",
          r->code, r->err);
    CHECK(strcmp(lb_listing(out_folder), "result.gguf") == 0, "the output alone: %s", lb_listing(out_folder));
    unlink(out_path);
    free(r);
}

/* A weight that is NaN or Inf: the file is well-formed (inspect reads it), but quantizing it must
   fail, naming the tensor and the row. */
static void test_non_finite_weights(void) {
    static const struct {
        const char *file, *word, *row;
    } cases[] = {{"gguf_nan_weight.gguf", "NaN", "row 2"}, {"gguf_inf_weight.gguf", "Inf", "row 3"}};
    lb_cli_result *r = malloc(sizeof *r);
    for (int i = 0; i < 2; i++) {
        const char *path = corpus_path(cases[i].file);
        char label[160];
        inspect(path, r);
        CHECK(r->exited && r->code == 0 && strstr(r->out, "blk.0.attn_q.weight") && r->err[0] == '\0',
              "inspect %s succeeds: exit %d, %s", cases[i].file, r->code, r->err);
        snprintf(label, sizeof label, "quantize %s", cases[i].file);
        quantize(path, r);
        expect_failure(r, 1, label, cases[i].file, cases[i].word, "blk.0.attn_q.weight");
        CHECK(mentions(r->err, cases[i].row, cases[i].file), "%s: names the row (%s): %s", label,
              cases[i].row, r->err);
        /* the fault is in the input: the message must say which file, not only the output */
        CHECK(strstr(r->err, cases[i].file) != NULL, "%s: names the input file: %s", label, r->err);
    }
    free(r);
}

/* The valid file cut short at many lengths (every 7th byte through the header, metadata and
   tensor infos, then a few inside the data): inspect must fail cleanly on each. */
static void test_prefixes(void) {
    lb_cli_result *r = malloc(sizeof *r);
    static char bytes[16384];
    FILE *f = fopen(corpus_path("gguf_valid_reference.gguf"), "rb");
    const size_t size = f ? fread(bytes, 1, sizeof bytes, f) : 0;
    if (f) fclose(f);
    CHECK(size > 1000, "read the valid file (%zu bytes)", size);
    char cut[320];
    snprintf(cut, sizeof cut, "%s/prefix.gguf", root);
    int failures = 0, runs = 0;
    for (size_t length = 0; length < size; length += length < 400 ? 7 : 97) {
        FILE *out = fopen(cut, "wb");
        if (!out) break;
        fwrite(bytes, 1, length, out);
        fclose(out);
        inspect(cut, r);
        runs++;
        const int ok = r->exited && r->code == 1 && strncmp(r->err, "lowbit inspect: ", 16) == 0 &&
                       is_one_line(r->err) && r->out[0] == '\0';
        if (!ok && failures++ < 5) {
            CHECK(ok, "the first %zu bytes: %s %d, stderr '%s'", length,
                  r->exited ? "exit" : "signal", r->code, r->err);
        }
    }
    CHECK(failures == 0, "%d of %d cut files were not refused cleanly", failures, runs);
    unlink(cut);
    free(r);
}

/* Inputs that are not model files at all, and outputs that cannot be files. */
static void test_bad_paths(void) {
    lb_cli_result *r = malloc(sizeof *r);
    char folder[300], missing[300];
    snprintf(folder, sizeof folder, "%s/a-folder", root);
    snprintf(missing, sizeof missing, "%s/no-such-file.gguf", root);
    mkdir(folder, 0755);
    inspect(folder, r);
    expect_failure(r, 1, "inspect a directory", NULL, "directory", NULL);
    quantize(folder, r);
    expect_failure(r, 1, "quantize a directory", NULL, "directory", NULL);
    inspect(missing, r);
    expect_failure(r, 1, "inspect a missing file", NULL, strerror(ENOENT), NULL);
    quantize(missing, r);
    expect_failure(r, 1, "quantize a missing file", NULL, strerror(ENOENT), NULL);

    const char *valid = corpus_path("gguf_valid_reference.gguf");
    const char *to_folder[] = {"lowbit", "quantize", valid, out_folder, "Q8_0", NULL};
    run_cli(to_folder, r);
    expect_failure(r, 1, "output is a directory", NULL, "directory", NULL);
    char slash[320];
    snprintf(slash, sizeof slash, "%s/new/", out_folder);
    const char *to_slash[] = {"lowbit", "quantize", valid, slash, "Q8_0", NULL};
    run_cli(to_slash, r);
    expect_failure(r, 1, "output ends in '/'", NULL, "folder", NULL);
    rmdir(folder);
    free(r);
}

/* OUT naming the input itself (the same path, or another path to the same file) must be refused:
   writing it would replace the input, which lowbit never modifies. */
static void test_output_is_input(void) {
    lb_cli_result *r = malloc(sizeof *r);
    char copy[320], other_spelling[400];
    snprintf(copy, sizeof copy, "%s/input.gguf", out_folder);
    snprintf(other_spelling, sizeof other_spelling, "%s/../out/./input.gguf", out_folder);
    FILE *in = fopen(corpus_path("gguf_valid_reference.gguf"), "rb");
    FILE *out = fopen(copy, "wb");
    char buf[16384];
    size_t n = in ? fread(buf, 1, sizeof buf, in) : 0;
    if (out) fwrite(buf, 1, n, out);
    if (in) fclose(in);
    if (out) fclose(out);
    const file_state before = state_of(copy);
    CHECK(n > 0 && before.size == (off_t)n, "copied the valid file (%zu bytes)", n);

    const char *same[] = {"lowbit", "quantize", copy, copy, "Q8_0", NULL};
    run_cli(same, r);
    CHECK(r->exited && r->code == 1 && strstr(r->err, "input") && is_one_line(r->err),
          "quantize IN IN: exit %d (want 1, 'input' named): %s", r->code, r->err);
    CHECK(same_state(before, state_of(copy)), "quantize IN IN leaves the input as it was");
    const char *aliased[] = {"lowbit", "quantize", copy, other_spelling, "Q8_0", NULL};
    run_cli(aliased, r);
    CHECK(r->exited && r->code == 1 && strstr(r->err, "input"),
          "quantize IN (IN spelled otherwise): exit %d (want 1): %s", r->code, r->err);
    CHECK(same_state(before, state_of(copy)), "the aliased path leaves the input as it was");
    CHECK(strcmp(lb_listing(out_folder), "input.gguf") == 0, "nothing else written: %s",
          lb_listing(out_folder));
    unlink(copy);
    free(r);
}

/* ---- usage errors ---- */

typedef struct usage_case {
    const char *args[10]; /* after "lowbit"; "IN" and "OUT" are replaced by real paths */
    int code;             /* 2: the command line is wrong; 1: it is right but the work failed */
    const char *word;
} usage_case;

static const usage_case usage_cases[] = {
    /* wrong whatever the files hold: usage errors */
    {{"quantize", "IN", "OUT", "Q9_9"}, 2, "Q9_9"},
    {{"quantize", "IN", "OUT", "Q8_0", "--tensor-type", "attn_q"}, 2, "REGEX=TYPE"},
    {{"quantize", "IN", "OUT", "Q8_0", "--tensor-type", "attn_q="}, 2, "REGEX=TYPE"},
    {{"quantize", "IN", "OUT", "Q8_0", "--tensor-type", "=q4_0"}, 2, "REGEX=TYPE"},
    {{"quantize", "IN", "OUT", "Q8_0", "--tensor-type", "attn_q=q9_9"}, 2, "q9_9"},
    {{"quantize", "IN", "OUT", "Q8_0", "--tensor-type", "attn_q(=q4_0"}, 2, "attn_q("},
    {{"quantize", "IN", "OUT", "Q8_0", "--output-tensor-type", "q9_9"}, 2, "q9_9"},
    {{"quantize", "IN", "OUT", "Q8_0", "--threads", "0"}, 2, "--threads"},
    {{"quantize", "IN", "OUT", "Q8_0", "--threads", "-3"}, 2, "--threads"},
    {{"quantize", "IN", "OUT", "Q8_0", "--threads", "four"}, 2, "--threads"},
    {{"quantize", "IN", "OUT", "Q8_0", "--threads"}, 2, "--threads"},
    {{"quantize", "IN", "OUT", "Q8_0", "--bogus"}, 2, "--bogus"},
    {{"quantize", "IN", "OUT", "Q8_0", "extra"}, 2, "extra"},
    {{"quantize", "IN", "OUT"}, 2, "usage"},
    {{"quantize", "IN"}, 2, "usage"},
    {{"quantize"}, 2, "usage"},
    {{"inspect"}, 2, "usage"},
    {{"inspect", "IN", "extra"}, 2, "extra"},
    {{"inspect", "IN", "--bogus"}, 2, "--bogus"},
    {{"inspect", "IN", "--tokenizer"}, 2, "--tokenizer"},
    /* a well-formed command line whose work fails: 1 */
    {{"quantize", "IN", "OUT", "Q8_0", "--tensor-type", "no_such_tensor=q4_0"}, 1, "no_such_tensor"},
    {{"quantize", "IN", "OUT", "Q8_0", "--imatrix", "MISSING"}, 1, "no-such-imatrix.dat"},
};

static void test_usage_errors(void) {
    lb_cli_result *r = malloc(sizeof *r);
    const char *valid = corpus_path("gguf_valid_reference.gguf");
    char missing[320];
    snprintf(missing, sizeof missing, "%s/no-such-imatrix.dat", root);
    for (size_t i = 0; i < sizeof usage_cases / sizeof usage_cases[0]; i++) {
        const usage_case *u = &usage_cases[i];
        const char *argv[12] = {"lowbit"};
        char label[256] = "lowbit";
        int n = 1;
        for (int k = 0; u->args[k]; k++) {
            const char *a = u->args[k];
            argv[n++] = !strcmp(a, "IN") ? valid : !strcmp(a, "OUT") ? out_path
                        : !strcmp(a, "MISSING") ? missing : a;
            strncat(label, " ", sizeof label - strlen(label) - 1);
            strncat(label, a, sizeof label - strlen(label) - 1);
        }
        argv[n] = NULL;
        run_cli(argv, r);
        expect_failure(r, u->code, label, NULL, u->word, NULL);
    }
    free(r);
}

/* Removes root and what the test made in it (two levels). */
static void remove_tree(const char *folder) {
    DIR *d = opendir(folder);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", folder, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(path);
        else unlink(path);
    }
    closedir(d);
    rmdir(folder);
}

int main(void) {
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(out_folder, sizeof out_folder, "%s/out", root);
    snprintf(out_path, sizeof out_path, "%s/result.gguf", out_folder);
    mkdir(out_folder, 0755);
    test_corpus_is_complete();
    test_corpus();
    test_valid_reference();
    test_non_finite_weights();
    test_prefixes();
    test_bad_paths();
    test_output_is_input();
    test_usage_errors();
    remove_tree(root);
    return lb_test_summary();
}
