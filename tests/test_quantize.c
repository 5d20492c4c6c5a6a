/*
 * Quantizing whole models, end to end, through the public API:
 * every sample model in ../shared/models (llama2.c) -> GGUF F32 -> every preset and every single
 * format (--pure). Each output is read back: the plan's file size is the file's size to the
 * byte; every tensor's bytes equal what lowbit_quantize_rows gives for the same floats in memory
 * (so the file holds exactly what the library computed); metadata is carried over and the
 * quantizer's keys are set; the same run on 1 and 2 threads writes identical files.
 * Also: cancellation leaves no file, and a NaN in a weight is an error naming the tensor.
 */
#define _GNU_SOURCE
#include "testing.h"
#include "lowbit.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char work_dir[256];

static char *path_in_work(const char *name) {
    static char paths[4][512];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, 512, "%s/%s", work_dir, name);
    return p;
}

static uint64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static int files_equal(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        const int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* Quantizes `in` with `preset` into `out`; returns the status, filling plan_size. */
static lowbit_status quantize(const char *in, const char *out, const char *preset, int pure,
                              int threads, uint64_t *plan_size, lowbit_diag *diag) {
    lowbit_model *model = NULL;
    lowbit_status st = lowbit_model_open(in, NULL, &model, diag);
    if (st != LOWBIT_OK) return st;
    lowbit_quantize_options options;
    lowbit_quantize_options_init(&options);
    options.preset = preset;
    options.pure = pure;
    options.n_threads = threads;
    lowbit_plan *plan = NULL;
    st = lowbit_plan_create(model, &options, &plan, diag);
    if (st == LOWBIT_OK) {
        if (plan_size) *plan_size = lowbit_plan_file_size(plan);
        st = lowbit_quantize_model(model, plan, out, &options, diag);
    }
    lowbit_plan_destroy(plan);
    lowbit_model_close(model);
    return st;
}

/* Every tensor of `out` holds exactly the library's encoding of the same tensor of `source`. */
static void check_tensors_match(const char *source_path, const char *out_path, const char *what) {
    lowbit_model *source = NULL, *out = NULL;
    lowbit_diag diag = {0};
    CHECK(lowbit_model_open(source_path, NULL, &source, &diag) == LOWBIT_OK, "%s", diag.message);
    CHECK(lowbit_model_open(out_path, NULL, &out, &diag) == LOWBIT_OK, "%s: reading back: %s", what,
          diag.message);
    if (!source || !out) goto done;
    CHECK(lowbit_model_tensor_count(source) == lowbit_model_tensor_count(out), "%s: tensor count", what);
    int mismatched = 0;
    for (int64_t i = 0; i < lowbit_model_tensor_count(out); i++) {
        lowbit_tensor_info s, o;
        lowbit_model_tensor(source, i, &s);
        lowbit_model_tensor(out, i, &o);
        if (strcmp(s.name, o.name) != 0 || memcmp(s.ne, o.ne, sizeof s.ne) != 0) {
            mismatched++;
            continue;
        }
        float *x = malloc((size_t)s.n_elements * sizeof *x);
        uint8_t *expected = malloc(o.n_bytes ? o.n_bytes : 1);
        lowbit_model_read_f32(source, i, x, NULL);
        const lowbit_status st = lowbit_quantize_rows(o.type, x, expected, s.n_elements / s.ne[0],
                                                      s.ne[0], NULL, NULL, NULL);
        if (st != LOWBIT_OK || memcmp(expected, o.data, o.n_bytes) != 0) {
            if (mismatched++ < 3) fprintf(stderr, "%s: tensor %s differs\n", what, o.name);
        }
        free(x);
        free(expected);
    }
    CHECK(mismatched == 0, "%s: %d tensors differ from the library's encoding", what, mismatched);
done:
    lowbit_model_close(source);
    lowbit_model_close(out);
}

static void check_metadata(const char *out_path, const char *what) {
    lowbit_gguf *g = NULL;
    CHECK(lowbit_gguf_open(out_path, &g, NULL) == LOWBIT_OK, "%s: GGUF reader", what);
    if (!g) return;
    uint64_t version = 0, block_count = 0;
    CHECK(lowbit_gguf_get_u64(g, "general.quantization_version", &version) == LOWBIT_OK &&
          version == 2, "%s: quantization_version", what);
    CHECK(lowbit_gguf_get_u64(g, "llama.block_count", &block_count) == LOWBIT_OK &&
          block_count > 0, "%s: llama.block_count carried over", what);
    const char *s;
    uint64_t n;
    CHECK(lowbit_gguf_get_string(g, "general.quantized_by", &s, &n) == LOWBIT_OK && n >= 6 &&
          memcmp(s, "lowbit", 6) == 0, "%s: quantized_by", what);
    CHECK(lowbit_gguf_get_string(g, "general.architecture", &s, &n) == LOWBIT_OK && n == 5 &&
          memcmp(s, "llama", 5) == 0, "%s: architecture", what);
    lowbit_gguf_close(g);
}

static const char *const presets[] = {"Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M",
                                      "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "Q4_1",
                                      "Q5_0", "Q5_1", "IQ4_XS", "IQ4_NL", "TQ1_0", "TQ2_0",
                                      "F16", "BF16"};

static void round_trip_model(const char *model_path, const char *stem) {
    char f32[256];
    snprintf(f32, sizeof f32, "%s", path_in_work("f32.gguf"));
    lowbit_diag diag = {0};
    uint64_t size = 0;
    CHECK(quantize(model_path, f32, "F32", 0, 2, &size, &diag) == LOWBIT_OK, "%s to F32: %s", stem,
          diag.message);
    CHECK(size == file_size(f32), "%s F32: planned %llu bytes, wrote %llu", stem,
          (unsigned long long)size, (unsigned long long)file_size(f32));
    check_tensors_match(model_path, f32, stem);
    for (int pure = 0; pure < 2; pure++) {
        for (int p = 0; p < (int)(sizeof presets / sizeof presets[0]); p++) {
            char what[96], out[256];
            snprintf(what, sizeof what, "%s %s%s", stem, presets[p], pure ? " --pure" : "");
            snprintf(out, sizeof out, "%s", path_in_work("out.gguf"));
            diag.message[0] = '\0';
            const lowbit_status st = quantize(f32, out, presets[p], pure, 2, &size, &diag);
            CHECK(st == LOWBIT_OK, "%s: %s", what, diag.message);
            if (st != LOWBIT_OK) continue;
            CHECK(size == file_size(out), "%s: planned %llu bytes, wrote %llu", what,
                  (unsigned long long)size, (unsigned long long)file_size(out));
            check_tensors_match(f32, out, what);
            check_metadata(out, what);
        }
    }
    /* the same bytes on 1 and 2 threads */
    char one[256], two[256];
    snprintf(one, sizeof one, "%s", path_in_work("one.gguf"));
    snprintf(two, sizeof two, "%s", path_in_work("two.gguf"));
    CHECK(quantize(f32, one, "Q4_K_M", 0, 1, NULL, &diag) == LOWBIT_OK, "%s", diag.message);
    CHECK(quantize(f32, two, "Q4_K_M", 0, 2, NULL, &diag) == LOWBIT_OK, "%s", diag.message);
    CHECK(files_equal(one, two), "%s: output depends on the thread count", stem);
}

/* Writes a legacy .dat imatrix with an entry for every 2-D tensor of the model: importance
   1 + (column % 7) for each column, stored times ncall = 2 as the format keeps sums. */
static void write_dat_imatrix(const char *model_path, const char *dat_path) {
    lowbit_model *model = NULL;
    CHECK(lowbit_model_open(model_path, NULL, &model, NULL) == LOWBIT_OK, "open %s", model_path);
    FILE *f = fopen(dat_path, "wb");
    if (!model || !f) return;
    int32_t entries = 0;
    for (int64_t i = 0; i < lowbit_model_tensor_count(model); i++) {
        lowbit_tensor_info t;
        lowbit_model_tensor(model, i, &t);
        entries += t.n_dims == 2;
    }
    fwrite(&entries, 4, 1, f);
    for (int64_t i = 0; i < lowbit_model_tensor_count(model); i++) {
        lowbit_tensor_info t;
        lowbit_model_tensor(model, i, &t);
        if (t.n_dims != 2) continue;
        const int32_t name_length = (int32_t)strlen(t.name), ncall = 2, nval = (int32_t)t.ne[0];
        fwrite(&name_length, 4, 1, f);
        fwrite(t.name, 1, (size_t)name_length, f);
        fwrite(&ncall, 4, 1, f);
        fwrite(&nval, 4, 1, f);
        for (int32_t c = 0; c < nval; c++) {
            const float v = 2.0f * (1.0f + (float)(c % 7));
            fwrite(&v, 4, 1, f);
        }
    }
    fclose(f);
    lowbit_model_close(model);
}

/* With --imatrix, every quantized tensor is encoded with the file's weights (mean x^2 per column)
   and the output records which imatrix was used. */
static void test_imatrix_is_applied(const char *model_path) {
    char f32[256], dat[256], out[256];
    snprintf(f32, sizeof f32, "%s", path_in_work("imx-f32.gguf"));
    snprintf(dat, sizeof dat, "%s", path_in_work("imx.dat"));
    snprintf(out, sizeof out, "%s", path_in_work("imx-q4km.gguf"));
    lowbit_diag diag = {0};
    CHECK(quantize(model_path, f32, "F32", 0, 2, NULL, &diag) == LOWBIT_OK, "%s", diag.message);
    write_dat_imatrix(f32, dat);
    lowbit_model *model = NULL, *written = NULL;
    CHECK(lowbit_model_open(f32, NULL, &model, &diag) == LOWBIT_OK, "%s", diag.message);
    lowbit_quantize_options options;
    lowbit_quantize_options_init(&options);
    options.preset = "Q4_K_M";
    options.imatrix_path = dat;
    lowbit_plan *plan = NULL;
    CHECK(lowbit_plan_create(model, &options, &plan, &diag) == LOWBIT_OK, "%s", diag.message);
    if (plan) CHECK(lowbit_quantize_model(model, plan, out, &options, &diag) == LOWBIT_OK, "%s", diag.message);
    CHECK(lowbit_model_open(out, NULL, &written, &diag) == LOWBIT_OK, "%s", diag.message);
    int weighted = 0, mismatched = 0;
    float importance[4096];
    for (int c = 0; c < 4096; c++) importance[c] = 1.0f + (float)(c % 7);
    for (int64_t i = 0; plan && written && i < lowbit_plan_tensor_count(plan); i++) {
        const lowbit_tensor_plan *t = lowbit_plan_tensor(plan, i);
        const lowbit_type_traits *traits = lowbit_type_info(t->type);
        if (!traits->is_quantized) continue;
        CHECK(t->uses_importance, "%s does not use the imatrix", t->name);
        weighted += t->uses_importance;
        lowbit_tensor_info o;
        lowbit_model_tensor(written, i, &o);
        const int64_t rows = o.n_elements / o.ne[0];
        float *x = malloc((size_t)o.n_elements * sizeof *x);
        uint8_t *expected = malloc(o.n_bytes);
        lowbit_model_read_f32(model, i, x, NULL);
        lowbit_quantize_rows(o.type, x, expected, rows, o.ne[0], importance, NULL, NULL);
        mismatched += memcmp(expected, o.data, o.n_bytes) != 0;
        free(x);
        free(expected);
    }
    CHECK(weighted > 0 && mismatched == 0, "%d weighted tensors, %d differ from the library's "
          "weighted encoding", weighted, mismatched);
    lowbit_gguf *g = NULL;
    CHECK(lowbit_gguf_open(out, &g, NULL) == LOWBIT_OK, "reopen");
    int64_t entries = 0;
    CHECK(g && lowbit_gguf_get_i64(g, "quantize.imatrix.entries_count", &entries) == LOWBIT_OK &&
          entries == weighted, "quantize.imatrix.entries_count %lld, expected %d",
          (long long)entries, weighted);
    lowbit_gguf_close(g);
    lowbit_model_close(written);
    lowbit_plan_destroy(plan);
    lowbit_model_close(model);
}

static int is_model_file(const char *name) {
    const size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".bin") == 0 && strncmp(name, "tok", 3) != 0;
}

static void cancel_after_first(void *ctx, int64_t index, int64_t n, uint64_t done, uint64_t total) {
    (void)index; (void)n; (void)done; (void)total;
    *(int *)ctx = 1;
}

static void test_cancel_leaves_nothing(const char *model_path) {
    lowbit_model *model = NULL;
    CHECK(lowbit_model_open(model_path, NULL, &model, NULL) == LOWBIT_OK, "open");
    if (!model) return;
    volatile int stop = 0;
    lowbit_quantize_options options;
    lowbit_quantize_options_init(&options);
    options.preset = "Q8_0";
    options.progress = cancel_after_first;
    options.progress_ctx = (void *)&stop;
    options.cancel = &stop;
    lowbit_plan *plan = NULL;
    lowbit_diag diag = {0};
    CHECK(lowbit_plan_create(model, &options, &plan, &diag) == LOWBIT_OK, "%s", diag.message);
    const char *out = path_in_work("cancelled.gguf");
    CHECK(lowbit_quantize_model(model, plan, out, &options, &diag) == LOWBIT_ERR_CANCELLED,
          "cancel: %s", diag.message);
    CHECK(access(out, F_OK) != 0, "a cancelled run left %s", out);
    DIR *d = opendir(work_dir);
    int leftovers = 0;
    for (struct dirent *e; d && (e = readdir(d));) leftovers += strstr(e->d_name, "cancelled") != NULL;
    if (d) closedir(d);
    CHECK(leftovers == 0, "a cancelled run left %d files", leftovers);
    lowbit_plan_destroy(plan);
    lowbit_model_close(model);
}

int main(void) {
    snprintf(work_dir, sizeof work_dir, "/tmp/lowbit-test-quantize-XXXXXX");
    if (!mkdtemp(work_dir)) return 1;
    const char *models = lb_shared_path("models");
    char models_dir[512];
    snprintf(models_dir, sizeof models_dir, "%s", models);
    DIR *d = opendir(models_dir);
    CHECK(d != NULL, "cannot list %s", models_dir);
    int n_models = 0;
    char first[600] = "";
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!is_model_file(e->d_name)) continue;
        char path[600];
        if (snprintf(path, sizeof path, "%s/%s", models_dir, e->d_name) >= (int)sizeof path) {
            continue;
        }
        if (!first[0]) snprintf(first, sizeof first, "%s", path);
        /* under an emulator, the full preset matrix on the smallest model only */
        if (!lb_test_quick() || strcmp(e->d_name, "stories260K.bin") == 0) round_trip_model(path, e->d_name);
        n_models++;
    }
    if (d) closedir(d);
    CHECK(n_models >= 4, "found %d sample models", n_models);
    if (first[0]) test_cancel_leaves_nothing(first);
    char lit3m[600];
    snprintf(lit3m, sizeof lit3m, "%s/lit3m.bin", models_dir);
    test_imatrix_is_applied(lit3m);
    char command[700];
    snprintf(command, sizeof command, "rm -rf '%s'", work_dir);
    if (system(command) != 0) fprintf(stderr, "could not remove %s\n", work_dir);
    return lb_test_summary();
}
