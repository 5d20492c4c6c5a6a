/*
 * The classifier workflow end to end through the CLI, on the real Fashion-MNIST images (Debian's
 * dataset-fashion-mnist; the test fails when they are missing): a short float training run must
 * clear an accuracy floor, static PTQ (calibrate + convert) must stay close to it in integer-only
 * inference, dynamic and weight-only conversions and a short QAT run must work, training must give
 * the same bytes whatever the thread count, and bad requests must fail cleanly.
 *
 * The runs are short (a subset of the images, one epoch): accuracy floors are set well below what
 * those runs reach (MLP ~82% after one epoch on 10,000 images) so that only a real regression
 * trips them. Under an emulator (LOWBIT_TEST_QUICK) the subsets are smaller still.
 */
#define _POSIX_C_SOURCE 200809L

#include "testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DATA_DIR "/usr/share/datasets/fashion-mnist"

static char work[256];

/* Test images each evaluation reads: all 10,000 natively would cost the sanitizer and emulator
   runs minutes for no extra coverage. */
static int eval_images(void) { return lb_test_quick() ? 1000 : 4000; }

/* Accuracy of a model through `lowbit eval`; NaN when the command fails. */
static double eval_accuracy(const char *model);

static const char *in_work(const char *name) { return lb_join_path(work, name); }

/* Runs `lowbit ARGS --data DATA_DIR` and captures stdout (its last line: the JSON result). */
static int run_cli(const char *args, char *out, size_t size) {
    char command[2048];
    snprintf(command, sizeof command, "%s %s 2>%s", lb_cli_command(), args, in_work("stderr.txt"));
    FILE *p = popen(command, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, size - 1, p);
    out[n] = '\0';
    const int status = pclose(p);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code != 0) fprintf(stderr, "exit %d: %s\n", code, command);
    return code;
}

/* The number after "key": in a JSON line; NaN when absent. */
static double json_number(const char *json, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\": ", key);
    const char *p = strstr(json, pattern);
    return p ? strtod(p + strlen(pattern), NULL) : 0.0 / 0.0;
}

static int stderr_mentions(const char *text) {
    size_t size;
    char *err = lb_read_whole_file(in_work("stderr.txt"), &size);
    const int found = err && strstr(err, text) != NULL;
    free(err);
    return found;
}

static int files_equal(const char *a, const char *b) {
    size_t na, nb;
    char *x = lb_read_whole_file(a, &na), *y = lb_read_whole_file(b, &nb);
    const int equal = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return equal;
}

static void require_dataset(void) {
    if (access(DATA_DIR "/t10k-images-idx3-ubyte.gz", R_OK) != 0) {
        fprintf(stderr, "Fashion-MNIST is missing in " DATA_DIR
                        ": apt-get install dataset-fashion-mnist\n");
        lb_checks_failed++;
        exit(lb_test_summary());
    }
}

/* Static PTQ of a float model: calibrate with `observer`, convert, evaluate. */
static double static_ptq_accuracy(const char *model, const char *observer, int wbits, int abits) {
    char args[1024], out[4096];
    snprintf(args, sizeof args, "calibrate %s -o %s --observer %s --abits %d --images 200 --json",
             model, in_work("calibrated.gguf"), observer, abits);
    CHECK(run_cli(args, out, sizeof out) == 0, "calibrate %s", observer);
    snprintf(args, sizeof args, "convert %s -o %s --mode static --wbits %d --abits %d --json",
             in_work("calibrated.gguf"), in_work("static.gguf"), wbits, abits);
    CHECK(run_cli(args, out, sizeof out) == 0, "convert static %s", observer);
    CHECK(strstr(out, "\"integer_only\": true") != NULL, "static is integer-only: %s", out);
    return eval_accuracy(in_work("static.gguf"));
}

static double converted_accuracy(const char *model, const char *mode, int wbits) {
    char args[1024], out[4096];
    snprintf(args, sizeof args, "convert %s -o %s --mode %s --wbits %d --json", model,
             in_work("converted.gguf"), mode, wbits);
    CHECK(run_cli(args, out, sizeof out) == 0, "convert %s", mode);
    return eval_accuracy(in_work("converted.gguf"));
}

static double eval_accuracy(const char *model) {
    char args[1024], out[4096];
    snprintf(args, sizeof args, "eval %s --max-images %d --json", model, eval_images());
    CHECK(run_cli(args, out, sizeof out) == 0, "eval %s", model);
    return json_number(out, "accuracy");
}

static double train_mlp(const char *out_name, int images, int threads) {
    char args[1024], out[4096];
    snprintf(args, sizeof args,
             "train --arch mlp --epochs 1 --max-images %d --threads %d --seed 7 --no-test -o %s "
             "--json", images, threads, in_work(out_name));
    CHECK(run_cli(args, out, sizeof out) == 0, "train mlp");
    return eval_accuracy(in_work(out_name));
}

static void test_mlp_workflow(void) {
    const int images = lb_test_quick() ? 3000 : 10000;
    const double floor = lb_test_quick() ? 0.70 : 0.78;
    const double fp = train_mlp("mlp.gguf", images, 2);
    CHECK(fp >= floor, "MLP float accuracy %.4f below the floor %.2f", fp, floor);
    char mlp[512]; /* in_work's buffers rotate: keep a copy */
    snprintf(mlp, sizeof mlp, "%s", in_work("mlp.gguf"));

    const double w8a8 = static_ptq_accuracy(mlp, "minmax", 8, 8);
    CHECK(w8a8 >= fp - 0.015, "W8A8 static PTQ %.4f vs float %.4f", w8a8, fp);
    const double kl = static_ptq_accuracy(mlp, "kl", 8, 8);
    CHECK(kl >= fp - 0.015, "W8A8 static PTQ (kl) %.4f vs float %.4f", kl, fp);
    const double dyn = converted_accuracy(mlp, "dynamic", 8);
    CHECK(dyn >= fp - 0.01, "W8 dynamic %.4f vs float %.4f", dyn, fp);
    const double wo = converted_accuracy(mlp, "weight-only", 8);
    CHECK(wo >= fp - 0.01, "W8 weight-only %.4f vs float %.4f", wo, fp);

    /* QAT at W4A4: one short epoch must give a working integer model */
    char args[1024], out[4096];
    snprintf(args, sizeof args,
             "train --qat --from %s --wbits 4 --abits 4 --epochs 1 --max-images %d --no-test -o %s "
             "--json",
             mlp, images / 2, in_work("qat.gguf"));
    CHECK(run_cli(args, out, sizeof out) == 0, "QAT training");
    snprintf(args, sizeof args, "convert %s -o %s --mode static --wbits 4 --abits 4 --json",
             in_work("qat.gguf"), in_work("qat-int.gguf"));
    CHECK(run_cli(args, out, sizeof out) == 0, "convert QAT model");
    const double qat = eval_accuracy(in_work("qat-int.gguf"));
    CHECK(qat >= floor - 0.05, "W4A4 QAT integer model accuracy %.4f", qat);
}

static void test_cnn_trains(void) {
    char args[1024], out[4096];
    const int images = lb_test_quick() ? 1000 : 3000;
    snprintf(args, sizeof args, "train --arch cnn --epochs 1 --max-images %d --no-test -o %s --json",
             images, in_work("cnn.gguf"));
    CHECK(run_cli(args, out, sizeof out) == 0, "train cnn");
    const double fp = eval_accuracy(in_work("cnn.gguf"));
    CHECK(fp >= (lb_test_quick() ? 0.50 : 0.65), "CNN accuracy %.4f after a short run", fp);
    char cnn[512];
    snprintf(cnn, sizeof cnn, "%s", in_work("cnn.gguf"));
    const double q = static_ptq_accuracy(cnn, "mse", 8, 8);
    CHECK(q >= fp - 0.02, "CNN W8A8 static PTQ %.4f vs float %.4f", q, fp);
}

static void test_threads_do_not_change_training(void) {
    train_mlp("t1.gguf", 1000, 1);
    train_mlp("t3.gguf", 1000, 3);
    CHECK(files_equal(in_work("t1.gguf"), in_work("t3.gguf")),
          "training with 1 and 3 threads gives different files");
}

static void test_bad_requests(void) {
    char args[1024], out[4096];
    /* static conversion needs ranges: an uncalibrated float model is refused, no file written */
    snprintf(args, sizeof args, "convert %s -o %s --mode static", in_work("mlp.gguf"),
             in_work("no.gguf"));
    CHECK(run_cli(args, out, sizeof out) == 1 && stderr_mentions("range"),
          "static conversion without ranges must fail naming the missing range");
    CHECK(access(in_work("no.gguf"), F_OK) != 0, "no output after a failed conversion");
    snprintf(args, sizeof args, "train --arch resnet -o %s", in_work("no.gguf"));
    CHECK(run_cli(args, out, sizeof out) == 1 && stderr_mentions("mlp"),
          "an unknown architecture names the known ones");
    snprintf(args, sizeof args, "calibrate %s -o %s --observer median", in_work("mlp.gguf"),
             in_work("no.gguf"));
    CHECK(run_cli(args, out, sizeof out) == 1 && stderr_mentions("kl"),
          "an unknown observer names the known ones");
    snprintf(args, sizeof args, "eval %s --data /nonexistent", in_work("mlp.gguf"));
    CHECK(run_cli(args, out, sizeof out) == 1, "a missing data folder fails");
    snprintf(args, sizeof args, "train --arch mlp -o %s --data /nonexistent", in_work("no.gguf"));
    CHECK(run_cli(args, out, sizeof out) == 1, "training without data fails");
    CHECK(access(in_work("no.gguf"), F_OK) != 0, "no output after failures");
}

int main(void) {
    require_dataset();
    snprintf(work, sizeof work, "/tmp/lowbit-classifier-cli-XXXXXX");
    if (!mkdtemp(work)) {
        perror("mkdtemp");
        return 1;
    }
    test_mlp_workflow();
    test_cnn_trains();
    test_threads_do_not_change_training();
    test_bad_requests();
    char command[512];
    snprintf(command, sizeof command, "rm -rf '%s'", work);
    if (system(command) != 0) fprintf(stderr, "could not remove %s\n", work);
    return lb_test_summary();
}
