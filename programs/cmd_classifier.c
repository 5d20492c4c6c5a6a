/*
 * The image-classifier commands: `lowbit train`, `lowbit calibrate`, `lowbit convert`, and the
 * classifier half of `lowbit eval` (cmd_eval.c hands models whose architecture is
 * lowbit-classifier* over to cli_eval_classifier).
 *
 *   lowbit train --arch cnn -o cnn.gguf                       float training
 *   lowbit calibrate cnn.gguf -o cnn-kl.gguf --observer kl    static PTQ, step 1: ranges
 *   lowbit convert cnn-kl.gguf -o cnn-w8a8.gguf --mode static static PTQ, step 2: integer model
 *   lowbit train --qat --from cnn.gguf -o cnn-qat.gguf        QAT (then convert --mode static)
 *   lowbit eval cnn-w8a8.gguf --latency                       accuracy on the test images
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"
#include "lowbit.h"
#include "measure.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

/* Options every classifier command understands. */
typedef struct common_args {
    const char *data_dir;
    int64_t threads;
    int json;
} common_args;

static int fail(const char *command, const char *what, lowbit_status st, const lowbit_diag *diag) {
    fprintf(stderr, "lowbit %s: %s: %s\n", command, what,
            diag->message[0] ? diag->message : lowbit_status_name(st));
    return CLI_FAILED;
}

/* Parses a common option at argv[*i] (advancing past its value). Returns 1 if it was one, 0 if
   not, -1 for a malformed value. */
static int parse_common(int argc, char **argv, int *i, common_args *c) {
    const char *arg = argv[*i];
    if (!strcmp(arg, "--json")) {
        c->json = 1;
        return 1;
    }
    if (*i + 1 >= argc) return 0;
    if (!strcmp(arg, "--data")) {
        c->data_dir = argv[++*i];
        return 1;
    }
    if (!strcmp(arg, "--threads")) return cli_parse_count(argv[++*i], 1024, &c->threads) ? 1 : -1;
    return 0;
}

static int parse_float(const char *s, float *out) {
    char *end;
    const double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !isfinite(v)) return 0;
    *out = (float)v;
    return 1;
}

static int open_dataset(const char *command, const common_args *c, int train,
                        lowbit_dataset **out) {
    lowbit_diag diag = {0};
    const char *dir = c->data_dir ? c->data_dir : DEFAULT_DATA_DIR;
    const lowbit_status st = lowbit_dataset_open_fashion_mnist(dir, train, out, &diag);
    if (st != LOWBIT_OK) {
        fail(command, dir, st, &diag);
        if (!c->data_dir) {
            fprintf(stderr, "lowbit %s: install the images with `apt-get install "
                            "dataset-fashion-mnist` or give --data DIR\n", command);
        }
        return CLI_FAILED;
    }
    return CLI_OK;
}

static int open_pool(const char *command, const common_args *c, lowbit_pool **pool) {
    if (lowbit_pool_create((int)c->threads, pool) != LOWBIT_OK) {
        fprintf(stderr, "lowbit %s: cannot start worker threads\n", command);
        return CLI_FAILED;
    }
    return CLI_OK;
}

static int load_classifier(const char *command, const char *path, lowbit_classifier **out) {
    lowbit_diag diag = {0};
    const lowbit_status st = lowbit_classifier_load(path, out, &diag);
    return st == LOWBIT_OK ? CLI_OK : fail(command, path, st, &diag);
}

static int save_classifier(const char *command, const lowbit_classifier *c, const char *path) {
    lowbit_diag diag = {0};
    const lowbit_status st = lowbit_classifier_save(c, path, &diag);
    return st == LOWBIT_OK ? CLI_OK : fail(command, path, st, &diag);
}

/* A classifier with the images it works on and the worker threads: what calibrate and eval open
   and close alike. */
typedef struct session {
    lowbit_classifier *classifier;
    lowbit_dataset *images;
    lowbit_pool *pool;
} session;

static int open_session(const char *command, const char *model, const common_args *c, int train,
                        session *s) {
    memset(s, 0, sizeof *s);
    int status = load_classifier(command, model, &s->classifier);
    if (status == CLI_OK) status = open_dataset(command, c, train, &s->images);
    if (status == CLI_OK) status = open_pool(command, c, &s->pool);
    return status;
}

static void close_session(session *s) {
    lowbit_classifier_free(s->classifier);
    lowbit_pool_destroy(s->pool);
    lowbit_dataset_free(s->images);
    memset(s, 0, sizeof *s);
}

/* Test-set accuracy of a classifier, on stderr or into the JSON result. */
static int evaluate_on_test(const char *command, const lowbit_classifier *c,
                            const lowbit_dataset *test, lowbit_pool *pool,
                            lowbit_classifier_eval *r) {
    lowbit_diag diag = {0};
    const lowbit_status st = lowbit_classifier_evaluate(c, test, 0, 256, pool, r, &diag);
    return st == LOWBIT_OK ? CLI_OK : fail(command, "evaluation", st, &diag);
}

/* ---- train ---------------------------------------------------------------------------------- */

typedef struct train_args {
    common_args c;
    const char *arch, *out, *from, *optimizer;
    int64_t epochs, batch, seed, max_images, wbits, abits;
    float lr, momentum, weight_decay;
    int qat, learn_ranges, no_test;
} train_args;

static void print_train_usage(FILE *out) {
    fprintf(out,
            "usage: lowbit train --arch mlp|cnn -o OUT [options]\n"
            "       lowbit train --qat --from MODEL -o OUT [options]\n"
            "  --arch mlp|cnn        a new network: 784-256-128-10 MLP, or a 3-stage CNN\n"
            "  -o OUT                the trained model (GGUF)\n"
            "  --data DIR            Fashion-MNIST IDX files (default " DEFAULT_DATA_DIR ")\n"
            "  --epochs N --batch N --optimizer adam|sgd --lr X --momentum X --weight-decay X\n"
            "  --seed N              shuffling seed and initialization (default 1)\n"
            "  --max-images N        train on the first N training images only\n"
            "  --qat --from MODEL    quantization-aware fine-tuning of a trained float model\n"
            "                        (batch norm folded first); then `lowbit convert --mode static`\n"
            "  --wbits B --abits B   QAT bit widths (default 8)\n"
            "  --learn-ranges        QAT: learn the activation ranges (default below 8 bits)\n"
            "  --track-ranges        QAT: track them by a moving average of batch min/max\n"
            "                        (default at 8 bits); either starts from the model's ranges,\n"
            "                        or from an MSE calibration when it has none\n"
            "  --no-test             skip the test-set accuracy at the end\n"
            "  --threads N           worker threads (default: one per CPU); results do not\n"
            "                        depend on it\n"
            "  --json                print the result as JSON\n");
}

static int parse_train_option(int argc, char **argv, int *i, train_args *a) {
    const char *arg = argv[*i];
    if (!strcmp(arg, "--qat")) return a->qat = 1;
    if (!strcmp(arg, "--learn-ranges")) return a->learn_ranges = 1;
    if (!strcmp(arg, "--track-ranges")) return (a->learn_ranges = -1) != 0;
    if (!strcmp(arg, "--no-test")) return a->no_test = 1;
    if (*i + 1 >= argc) return 0;
    const char *v = argv[*i + 1];
    int ok = 1;
    if (!strcmp(arg, "--arch")) a->arch = v;
    else if (!strcmp(arg, "-o") || !strcmp(arg, "--output")) a->out = v;
    else if (!strcmp(arg, "--from")) a->from = v;
    else if (!strcmp(arg, "--optimizer")) a->optimizer = v;
    else if (!strcmp(arg, "--epochs")) ok = cli_parse_count(v, 10000, &a->epochs);
    else if (!strcmp(arg, "--batch")) ok = cli_parse_count(v, 65536, &a->batch) && a->batch > 0;
    else if (!strcmp(arg, "--seed")) ok = cli_parse_count(v, INT64_MAX, &a->seed);
    else if (!strcmp(arg, "--max-images")) ok = cli_parse_count(v, INT64_MAX, &a->max_images);
    else if (!strcmp(arg, "--wbits")) ok = cli_parse_count(v, 8, &a->wbits) && a->wbits >= 2;
    else if (!strcmp(arg, "--abits")) ok = cli_parse_count(v, 8, &a->abits) && a->abits >= 2;
    else if (!strcmp(arg, "--lr")) ok = parse_float(v, &a->lr) && a->lr > 0;
    else if (!strcmp(arg, "--momentum")) ok = parse_float(v, &a->momentum) && a->momentum >= 0;
    else if (!strcmp(arg, "--weight-decay")) ok = parse_float(v, &a->weight_decay) && a->weight_decay >= 0;
    else return 0;
    ++*i;
    return ok ? 1 : -1;
}

/* Returns CLI_OK, CLI_USAGE, or -1 for --help. */
static int parse_train_args(int argc, char **argv, train_args *a) {
    memset(a, 0, sizeof *a);
    a->seed = 1;
    a->weight_decay = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return -1;
        int r = parse_common(argc, argv, &i, &a->c);
        if (r == 0) r = parse_train_option(argc, argv, &i, a);
        if (r <= 0) {
            fprintf(stderr, "lowbit train: bad or incomplete option '%s'\n", argv[i]);
            return CLI_USAGE;
        }
    }
    if (!a->out || (!a->qat && !a->arch) || (a->qat && !a->from) || (!a->qat && a->from)) {
        print_train_usage(stderr);
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* A progress bar on a terminal (redrawn at most 10 times a second), a line per epoch otherwise. */
typedef struct train_progress {
    int terminal;
    double last_draw;
    int last_epoch_printed;
} train_progress;

static void draw_train_progress(void *ctx, const lowbit_train_progress *p) {
    train_progress *t = ctx;
    const int epoch_done = p->batch == p->batches;
    if (t->terminal) {
        const double now = measure_now_seconds();
        if (!epoch_done && now - t->last_draw < 0.1) return;
        t->last_draw = now;
        const int width = 30, filled = p->batches ? (int)(width * p->batch / p->batches) : width;
        fprintf(stderr, "\repoch %d/%d [%.*s%*s] %lld/%lld loss %.4f acc %.2f%%", p->epoch,
                p->epochs, filled, "##############################", width - filled, "",
                (long long)p->batch, (long long)p->batches, p->loss, 100.0 * p->accuracy);
        if (epoch_done) fputc('\n', stderr);
        return;
    }
    if (epoch_done && p->epoch != t->last_epoch_printed) {
        t->last_epoch_printed = p->epoch;
        fprintf(stderr, "epoch %d/%d: loss %.4f, training accuracy %.2f%%\n", p->epoch, p->epochs,
                p->loss, 100.0 * p->accuracy);
    }
}

static int create_or_load_for_training(const train_args *a, const lowbit_dataset *train,
                                       lowbit_classifier **c) {
    if (a->qat) return load_classifier("train", a->from, c);
    lowbit_diag diag = {0};
    const lowbit_status st = lowbit_classifier_create(a->arch, train, (uint64_t)a->seed, c, &diag);
    return st == LOWBIT_OK ? CLI_OK : fail("train", a->arch, st, &diag);
}

static void print_train_result(const train_args *a, const lowbit_classifier *c, double seconds,
                               const lowbit_classifier_eval *test) {
    lowbit_classifier_info info;
    lowbit_classifier_get_info(c, &info);
    if (a->c.json) {
        printf("{\"output\": ");
        cli_print_json_string(a->out);
        printf(", \"qat\": %s, \"parameters\": %lld, \"train_seconds\": %.3f", a->qat ? "true" : "false",
               (long long)info.parameters, seconds);
        if (test) printf(", \"test_accuracy\": %.6f, \"test_images\": %lld", test->accuracy,
                         (long long)test->images);
        printf("}\n");
        return;
    }
    printf("%s: %s model, %lld parameters, trained in %.1f s\n", a->out, a->qat ? "QAT" : "float",
           (long long)info.parameters, seconds);
    if (test) printf("test accuracy %.2f%% (%lld images)\n", 100.0 * test->accuracy,
                     (long long)test->images);
}

int cmd_train(int argc, char **argv) {
    train_args a;
    const int parsed = parse_train_args(argc, argv, &a);
    if (parsed != CLI_OK) {
        if (parsed < 0) print_train_usage(stdout);
        return parsed < 0 ? CLI_OK : parsed;
    }
    lowbit_dataset *train = NULL, *test = NULL;
    lowbit_classifier *c = NULL;
    lowbit_pool *pool = NULL;
    int status = open_dataset("train", &a.c, 1, &train);
    if (status == CLI_OK && !a.no_test) status = open_dataset("train", &a.c, 0, &test);
    if (status == CLI_OK) status = open_pool("train", &a.c, &pool);
    if (status == CLI_OK) status = create_or_load_for_training(&a, train, &c);
    double seconds = 0;
    if (status == CLI_OK) {
        train_progress progress = {.terminal = isatty(STDERR_FILENO)};
        lowbit_train_options o = {.epochs = (int)a.epochs, .batch_size = (int)a.batch,
                                  .optimizer = a.optimizer, .learning_rate = a.lr,
                                  .momentum = a.momentum, .weight_decay = a.weight_decay,
                                  .seed = (uint64_t)a.seed, .max_images = a.max_images,
                                  .qat = a.qat, .weight_bits = (int)a.wbits,
                                  .activation_bits = (int)a.abits, .learn_ranges = a.learn_ranges,
                                  .progress = draw_train_progress, .progress_ctx = &progress};
        lowbit_diag diag = {0};
        const double t0 = measure_now_seconds();
        const lowbit_status st = lowbit_classifier_train(c, train, &o, pool, &diag);
        seconds = measure_now_seconds() - t0;
        if (st != LOWBIT_OK) status = fail("train", "training", st, &diag);
    }
    if (status == CLI_OK) status = save_classifier("train", c, a.out);
    lowbit_classifier_eval r;
    if (status == CLI_OK && test) status = evaluate_on_test("train", c, test, pool, &r);
    if (status == CLI_OK) print_train_result(&a, c, seconds, test ? &r : NULL);
    lowbit_classifier_free(c);
    lowbit_pool_destroy(pool);
    lowbit_dataset_free(train);
    lowbit_dataset_free(test);
    return status;
}

/* The end of one argument's parsing in calibrate and eval: r > 0 means an option took it, r == 0
   that none did (then it is the model path, if that is still missing), r < 0 a malformed value.
   Returns 0 after printing the usage error. */
static int accept_argument(const char *command, const char *arg, int r, const char **model) {
    if (r == 0 && arg[0] != '-' && !*model) {
        *model = arg;
        r = 1;
    }
    if (r <= 0) fprintf(stderr, "lowbit %s: bad or incomplete option '%s'\n", command, arg);
    return r > 0;
}

/* ---- calibrate ------------------------------------------------------------------------------ */

typedef struct calibrate_args {
    common_args c;
    const char *model, *out, *observer;
    int64_t abits, images, batch;
    float percentile;
} calibrate_args;

static void print_calibrate_usage(FILE *out) {
    fprintf(out,
            "usage: lowbit calibrate MODEL -o OUT [options]\n"
            "  sets the activation range of every quantization point of a float classifier from\n"
            "  calibration images (the first N training images); then `lowbit convert`\n"
            "  --observer NAME   minmax (default), moving-average, percentile, kl, mse\n"
            "  --percentile P    for the percentile observer (default 99.99)\n"
            "  --abits B         activation bits the kl and mse observers choose for (default 8)\n"
            "  --images N        calibration images (default 500)\n"
            "  --batch N         images per observed batch (default 32)\n"
            "  --data DIR        Fashion-MNIST IDX files (default " DEFAULT_DATA_DIR ")\n"
            "  --threads N --json\n");
}

static int parse_calibrate_args(int argc, char **argv, calibrate_args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return -1;
        int r = parse_common(argc, argv, &i, &a->c);
        if (r == 0 && i + 1 < argc) {
            const char *v = argv[i + 1];
            r = 1;
            if (!strcmp(arg, "-o") || !strcmp(arg, "--output")) a->out = v;
            else if (!strcmp(arg, "--observer")) a->observer = v;
            else if (!strcmp(arg, "--percentile")) r = parse_float(v, &a->percentile) && a->percentile > 0 && a->percentile <= 100 ? 1 : -1;
            else if (!strcmp(arg, "--abits")) r = cli_parse_count(v, 16, &a->abits) && a->abits >= 2 ? 1 : -1;
            else if (!strcmp(arg, "--images")) r = cli_parse_count(v, INT64_MAX, &a->images) && a->images > 0 ? 1 : -1;
            else if (!strcmp(arg, "--batch")) r = cli_parse_count(v, 65536, &a->batch) && a->batch > 0 ? 1 : -1;
            else r = 0;
            if (r != 0) i++;
        }
        if (!accept_argument("calibrate", arg, r, &a->model)) return CLI_USAGE;
    }
    if (!a->model || !a->out) {
        print_calibrate_usage(stderr);
        return CLI_USAGE;
    }
    return CLI_OK;
}

int cmd_calibrate(int argc, char **argv) {
    calibrate_args a;
    const int parsed = parse_calibrate_args(argc, argv, &a);
    if (parsed != CLI_OK) {
        if (parsed < 0) print_calibrate_usage(stdout);
        return parsed < 0 ? CLI_OK : parsed;
    }
    session s;
    int status = open_session("calibrate", a.model, &a.c, 1, &s);
    lowbit_classifier *c = s.classifier;
    if (status == CLI_OK) {
        lowbit_calibrate_options o = {.observer = a.observer, .percentile = a.percentile,
                                      .activation_bits = (int)a.abits, .images = a.images,
                                      .batch_size = (int)a.batch};
        lowbit_diag diag = {0};
        const lowbit_status st = lowbit_classifier_calibrate(c, s.images, &o, s.pool, &diag);
        if (st != LOWBIT_OK) status = fail("calibrate", a.model, st, &diag);
    }
    if (status == CLI_OK) status = save_classifier("calibrate", c, a.out);
    if (status == CLI_OK) {
        if (a.c.json) {
            printf("{\"output\": ");
            cli_print_json_string(a.out);
            printf(", \"observer\": ");
            cli_print_json_string(a.observer ? a.observer : "minmax");
            printf("}\n");
        } else {
            static char text[8192];
            lowbit_classifier_describe(c, text, sizeof text);
            printf("%s: ranges from the %s observer\n%s", a.out,
                   a.observer ? a.observer : "minmax", text);
        }
    }
    close_session(&s);
    return status;
}

/* ---- convert -------------------------------------------------------------------------------- */

typedef struct convert_args {
    const char *model, *out, *mode;
    int64_t wbits, abits;
    int json;
} convert_args;

static void print_convert_usage(FILE *out) {
    fprintf(out,
            "usage: lowbit convert MODEL -o OUT --mode static|dynamic|weight-only [options]\n"
            "  a quantized classifier from a float one: batch norm folded, weights symmetric per\n"
            "  output channel. static: integer-only inference (MODEL needs ranges: calibrate or\n"
            "  QAT); dynamic: activation ranges per input at run time; weight-only: float\n"
            "  activations\n"
            "  --wbits B     weight bits, 2..8 (default 8)\n"
            "  --abits B     activation bits, 2..8 (default 8)\n"
            "  --json\n");
}

static int parse_convert_args(int argc, char **argv, convert_args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int ok = 1;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return -1;
        if (!strcmp(arg, "--json")) a->json = 1;
        else if (arg[0] == '-' && i + 1 >= argc) ok = 0;
        else if (!strcmp(arg, "-o") || !strcmp(arg, "--output")) a->out = argv[++i];
        else if (!strcmp(arg, "--mode")) a->mode = argv[++i];
        else if (!strcmp(arg, "--wbits")) ok = cli_parse_count(argv[++i], 8, &a->wbits) && a->wbits >= 2;
        else if (!strcmp(arg, "--abits")) ok = cli_parse_count(argv[++i], 8, &a->abits) && a->abits >= 2;
        else if (arg[0] != '-' && !a->model) a->model = arg;
        else ok = 0;
        if (!ok) {
            fprintf(stderr, "lowbit convert: bad or incomplete option '%s'\n", arg);
            return CLI_USAGE;
        }
    }
    if (!a->model || !a->out || !a->mode) {
        print_convert_usage(stderr);
        return CLI_USAGE;
    }
    return CLI_OK;
}

static int parse_mode(const char *mode, lowbit_classifier_kind *kind) {
    if (!strcmp(mode, "static")) *kind = LOWBIT_CLASSIFIER_STATIC;
    else if (!strcmp(mode, "dynamic")) *kind = LOWBIT_CLASSIFIER_DYNAMIC;
    else if (!strcmp(mode, "weight-only")) *kind = LOWBIT_CLASSIFIER_WEIGHT_ONLY;
    else return 0;
    return 1;
}

int cmd_convert(int argc, char **argv) {
    convert_args a;
    const int parsed = parse_convert_args(argc, argv, &a);
    if (parsed != CLI_OK) {
        if (parsed < 0) print_convert_usage(stdout);
        return parsed < 0 ? CLI_OK : parsed;
    }
    lowbit_convert_options o = {.weight_bits = (int)a.wbits, .activation_bits = (int)a.abits};
    if (!parse_mode(a.mode, &o.kind)) {
        fprintf(stderr, "lowbit convert: unknown mode '%s' (static, dynamic, weight-only)\n",
                a.mode);
        return CLI_USAGE;
    }
    lowbit_classifier *c = NULL, *q = NULL;
    int status = load_classifier("convert", a.model, &c);
    if (status == CLI_OK) {
        lowbit_diag diag = {0};
        const lowbit_status st = lowbit_classifier_convert(c, &o, &q, &diag);
        if (st != LOWBIT_OK) status = fail("convert", a.model, st, &diag);
    }
    if (status == CLI_OK) status = save_classifier("convert", q, a.out);
    if (status == CLI_OK) {
        lowbit_classifier_info info;
        lowbit_classifier_get_info(q, &info);
        if (a.json) {
            printf("{\"output\": ");
            cli_print_json_string(a.out);
            printf(", \"mode\": \"%s\", \"weight_bits\": %d, \"activation_bits\": %d, "
                   "\"parameter_bytes\": %lld, \"integer_only\": %s}\n",
                   info.kind_name, info.weight_bits, info.activation_bits,
                   (long long)info.parameter_bytes, info.integer_only ? "true" : "false");
        } else {
            printf("%s: %s W%dA%d, %lld parameter bytes, %s\n", a.out, info.kind_name,
                   info.weight_bits, info.activation_bits, (long long)info.parameter_bytes,
                   info.integer_only ? "integer-only inference" : "float activations");
        }
    }
    lowbit_classifier_free(q);
    lowbit_classifier_free(c);
    return status;
}

/* ---- eval ----------------------------------------------------------------------------------- */

typedef struct classifier_eval_args {
    common_args c;
    const char *model;
    int64_t max_images, batch, repeats;
    int latency;
} classifier_eval_args;

static void print_classifier_eval_usage(FILE *out) {
    fprintf(out,
            "usage: lowbit eval CLASSIFIER [options]\n"
            "  accuracy of an image classifier on the 10,000 test images\n"
            "  --data DIR         Fashion-MNIST IDX files (default " DEFAULT_DATA_DIR ")\n"
            "  --max-images N     the first N test images only\n"
            "  --batch N          images per prediction call (default 256)\n"
            "  --latency          also the median latency of one image and of a batch of 64\n"
            "  --repeats N        timed runs for --latency (default 200)\n"
            "  --threads N --json\n");
}

static int parse_classifier_eval_args(int argc, char **argv, classifier_eval_args *a) {
    memset(a, 0, sizeof *a);
    a->repeats = 200;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return -1;
        int r = parse_common(argc, argv, &i, &a->c);
        if (r == 0 && !strcmp(arg, "--latency")) r = a->latency = 1;
        if (r == 0 && i + 1 < argc) {
            const char *v = argv[i + 1];
            r = 1;
            if (!strcmp(arg, "--max-images")) r = cli_parse_count(v, INT64_MAX, &a->max_images) ? 1 : -1;
            else if (!strcmp(arg, "--batch")) r = cli_parse_count(v, 65536, &a->batch) && a->batch > 0 ? 1 : -1;
            else if (!strcmp(arg, "--repeats")) r = cli_parse_count(v, 1000000, &a->repeats) && a->repeats > 0 ? 1 : -1;
            else r = 0;
            if (r != 0) i++;
        }
        if (!accept_argument("eval", arg, r, &a->model)) return CLI_USAGE;
    }
    if (!a->model) {
        print_classifier_eval_usage(stderr);
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* Median seconds of `repeats` predictions of n images (after one untimed warm-up run). */
static int median_latency(const lowbit_classifier *c, const uint8_t *images, int64_t n,
                          int64_t repeats, lowbit_pool *pool, double *median) {
    lowbit_classifier_info info;
    lowbit_classifier_get_info(c, &info);
    float *logits = malloc((size_t)n * (size_t)info.classes * sizeof(float));
    double *times = malloc((size_t)repeats * sizeof(double));
    int ok = logits && times;
    lowbit_diag diag = {0};
    ok = ok && lowbit_classifier_predict(c, images, n, logits, pool, &diag) == LOWBIT_OK;
    for (int64_t r = 0; ok && r < repeats; r++) {
        const double t0 = measure_now_seconds();
        ok = lowbit_classifier_predict(c, images, n, logits, pool, &diag) == LOWBIT_OK;
        times[r] = measure_now_seconds() - t0;
    }
    if (ok) {
        *median = measure_median(times, (int)repeats);
    }
    free(logits);
    free(times);
    return ok;
}

static void print_classifier_eval(const classifier_eval_args *a, const lowbit_classifier_info *info,
                                  const lowbit_classifier_eval *r, double single, double batch64) {
    if (a->c.json) {
        printf("{\"model\": ");
        cli_print_json_string(a->model);
        printf(", \"kind\": \"%s\", \"weight_bits\": %d, \"activation_bits\": %d, "
               "\"integer_only\": %s, \"parameters\": %lld, \"parameter_bytes\": %lld, "
               "\"images\": %lld, \"correct\": %lld, \"accuracy\": %.6f, \"seconds\": %.4f",
               info->kind_name, info->weight_bits, info->activation_bits,
               info->integer_only ? "true" : "false", (long long)info->parameters,
               (long long)info->parameter_bytes, (long long)r->images, (long long)r->correct,
               r->accuracy, r->seconds);
        if (a->latency) {
            printf(", \"latency_single_ms\": %.5f, \"latency_batch64_ms\": %.5f", 1e3 * single,
                   1e3 * batch64);
        }
        printf("}\n");
        return;
    }
    printf("%s: %s classifier, W%dA%d%s, %lld parameters in %lld bytes\n", a->model,
           info->kind_name, info->weight_bits, info->activation_bits,
           info->integer_only ? " (integer-only inference)" : "", (long long)info->parameters,
           (long long)info->parameter_bytes);
    printf("accuracy     %.2f%% (%lld of %lld test images)\n", 100.0 * r->accuracy,
           (long long)r->correct, (long long)r->images);
    if (a->latency) {
        printf("latency      %.4f ms one image, %.4f ms a batch of 64 (medians)\n", 1e3 * single,
               1e3 * batch64);
    }
}

int cli_eval_classifier(int argc, char **argv) {
    classifier_eval_args a;
    const int parsed = parse_classifier_eval_args(argc, argv, &a);
    if (parsed != CLI_OK) {
        if (parsed < 0) print_classifier_eval_usage(stdout);
        return parsed < 0 ? CLI_OK : parsed;
    }
    session s;
    int status = open_session("eval", a.model, &a.c, 0, &s);
    const lowbit_classifier *c = s.classifier;
    const lowbit_dataset *test = s.images;
    lowbit_pool *pool = s.pool;
    lowbit_classifier_eval r;
    if (status == CLI_OK) {
        lowbit_diag diag = {0};
        const lowbit_status st =
            lowbit_classifier_evaluate(c, test, a.max_images, (int)a.batch, pool, &r, &diag);
        if (st != LOWBIT_OK) status = fail("eval", a.model, st, &diag);
    }
    double single = 0, batch64 = 0;
    if (status == CLI_OK && a.latency) {
        const uint8_t *images = lowbit_dataset_images(test);
        if (lowbit_dataset_count(test) < 64 ||
            !median_latency(c, images, 1, a.repeats, pool, &single) ||
            !median_latency(c, images, 64, a.repeats / 4 + 1, pool, &batch64)) {
            fprintf(stderr, "lowbit eval: latency measurement failed\n");
            status = CLI_FAILED;
        }
    }
    if (status == CLI_OK) {
        lowbit_classifier_info info;
        lowbit_classifier_get_info(c, &info);
        print_classifier_eval(&a, &info, &r, single, batch64);
    }
    close_session(&s);
    return status;
}
