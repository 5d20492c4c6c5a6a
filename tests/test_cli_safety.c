/*
 * `lowbit quantize` when writing fails or is interrupted: into a missing folder, a read-only
 * folder, a full disk, past a file-size limit (RLIMIT_FSIZE), and stopped by SIGINT (once, and
 * twice) or SIGTERM in the middle. Each time the CLI must exit non-zero (130 for SIGINT) with a
 * clear message on stderr, leave no output and no temporary file, and leave an output file that
 * already existed as it was. The input (lit3m.bin from the shared models) must never be opened
 * for writing: inotify sees no write, its content and mtime are unchanged, and quantizing it from
 * a read-only mount works.
 *
 * Tests run as root, where permission bits do not stop writes: the read-only folder and the full
 * disk are tmpfs mounts made in a private mount namespace of a forked child (a user namespace when
 * plain unshare is refused), and the CLI is run from that child. If neither works the test fails:
 * it never skips.
 */
#define _GNU_SOURCE /* mkdtemp, unshare, struct timespec in stat */
#include "testing.h"
#include "testing_process.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CANNOT_SET_UP 2 /* a child's exit code: no private mounts here */
#define OLD_CONTENT "old content, must survive\n"

static char root[] = "/tmp/lowbit_cli_safety.XXXXXX";
static char model_path[4096];  /* lit3m.bin */
static char model_folder[4096];

/* The size of the first file in the folder whose name ends in ".tmp" (a temporary file left
   behind or being written), or -1 when there is none. */
static long long temporary_size(const char *folder) {
    DIR *d = opendir(folder);
    long long size = -1;
    if (!d) return -1;
    for (struct dirent *e; size < 0 && (e = readdir(d));) {
        const size_t n = strlen(e->d_name);
        struct stat st;
        if (n > 4 && strcmp(e->d_name + n - 4, ".tmp") == 0) {
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", folder, e->d_name);
            size = stat(path, &st) == 0 ? (long long)st.st_size : 0;
        }
    }
    closedir(d);
    return size;
}

static int has_temporary(const char *folder) { return temporary_size(folder) >= 0; }

typedef struct file_state {
    off_t size;
    struct timespec mtime, ctime;
    uint64_t hash;
} file_state;

static file_state state_of(const char *path) {
    file_state s = {0};
    struct stat st;
    if (stat(path, &st) == 0) {
        s.size = st.st_size;
        s.mtime = st.st_mtim;
        s.ctime = st.st_ctim;
    }
    s.hash = 1469598103934665603ull; /* FNV-1a, a word at a time */
    FILE *f = fopen(path, "rb");
    static uint64_t buf[8192];
    for (size_t n; f && (n = fread(buf, 1, sizeof buf, f)) > 0;) {
        for (size_t i = 0; i < n / 8; i++) s.hash = (s.hash ^ buf[i]) * 1099511628211ull;
        s.hash ^= n;
    }
    if (f) fclose(f);
    return s;
}

static int same_state(file_state a, file_state b) {
    return a.size == b.size && a.hash == b.hash && a.mtime.tv_sec == b.mtime.tv_sec &&
           a.mtime.tv_nsec == b.mtime.tv_nsec && a.ctime.tv_sec == b.ctime.tv_sec &&
           a.ctime.tv_nsec == b.ctime.tv_nsec;
}

static rlim_t child_file_size_limit; /* start_quantize's, for prepare_quantize in the child */

/* In the CLI's process before exec: SIGXFSZ at its default (the CLI must ignore it itself), SIGINT
   at its default, and the file-size limit. */
static int prepare_quantize(void) {
    signal(SIGXFSZ, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    if (child_file_size_limit > 0) {
        const struct rlimit limit = {child_file_size_limit, child_file_size_limit};
        if (setrlimit(RLIMIT_FSIZE, &limit) != 0) return 125;
    }
    return 0;
}

/* Starts `lowbit quantize IN OUT PRESET [--threads N]` with stdout and stderr going to files in
   root; file_size_limit > 0 sets RLIMIT_FSIZE in the new process only. */
static pid_t start_quantize(const char *in, const char *out, const char *preset, const char *threads,
                            rlim_t file_size_limit) {
    const char *argv[] = {"lowbit", "quantize", in, out, preset, threads ? "--threads" : NULL, threads, NULL};
    child_file_size_limit = file_size_limit;
    return lb_start_cli(argv, root, prepare_quantize);
}

static void finish(pid_t pid, lb_cli_result *r) { lb_finish_cli(pid, root, r); }

static void quantize(const char *in, const char *out, const char *preset, rlim_t file_size_limit,
                     lb_cli_result *r) {
    finish(start_quantize(in, out, preset, NULL, file_size_limit), r);
}

/* The last line of stderr (progress lines may come before the error). */
static const char *last_line(const char *text) {
    static char line[LB_CAPTURE_BYTES];
    size_t n = strlen(text);
    while (n > 0 && text[n - 1] == '\n') n--;
    size_t start = n;
    while (start > 0 && text[start - 1] != '\n') start--;
    snprintf(line, sizeof line, "%.*s", (int)(n - start), text + start);
    return line;
}

/* What every failed write must look like: the exit status, a "lowbit quantize:" message naming
   `reason`, nothing on stdout, and the folder holding exactly `expected_listing`. */
static void expect_failure(const char *label, const lb_cli_result *r, int code, const char *reason,
                           const char *folder, const char *expected_listing) {
    const char *message = last_line(r->err);
    CHECK(r->exited && r->code == code, "%s: %s %d (want exit %d); stderr: %s", label,
          r->exited ? "exit" : "killed by signal", r->code, code, r->err);
    CHECK(strncmp(message, "lowbit quantize: ", 17) == 0 && strstr(message, reason),
          "%s: the message names '%s': %s", label, reason, message);
    CHECK(r->out[0] == '\0', "%s: nothing on stdout: %.200s", label, r->out);
    CHECK(!has_temporary(folder), "%s: no temporary file left: %s", label, lb_listing(folder));
    CHECK(strcmp(lb_listing(folder), expected_listing) == 0, "%s: folder holds '%s', want '%s'", label,
          lb_listing(folder), expected_listing);
}

static int failed_since(int before) { return lb_checks_failed > before ? 1 : 0; }

/* (b) the output folder is a read-only tmpfs holding an older out.gguf */
static int read_only_folder(const char *folder) {
    if (!lb_private_mounts() || mount("tmpfs", folder, "tmpfs", 0, "size=1m") != 0) return CANNOT_SET_UP;
    const int before = lb_checks_failed;
    const char *dest = lb_join_path(folder, "out.gguf");
    CHECK(lb_write_text(dest, OLD_CONTENT), "old content");
    CHECK(mount(NULL, folder, NULL, MS_REMOUNT | MS_RDONLY, "size=1m") == 0, "remount read-only: %s",
          strerror(errno));
    lb_cli_result *r = malloc(sizeof *r);
    quantize(model_path, dest, "Q8_0", 0, r);
    expect_failure("read-only folder", r, 1, strerror(EROFS), folder, "out.gguf");
    CHECK(lb_holds_text(dest, OLD_CONTENT), "read-only folder: the old output is untouched");
    free(r);
    return failed_since(before);
}

/* (c) the output folder is a 1 MiB tmpfs; lit3m in Q8_0 takes about 4 MB */
static int full_disk(const char *folder) {
    if (!lb_private_mounts() || mount("tmpfs", folder, "tmpfs", 0, "size=1m") != 0) return CANNOT_SET_UP;
    const int before = lb_checks_failed;
    const char *dest = lb_join_path(folder, "out.gguf");
    CHECK(lb_write_text(dest, OLD_CONTENT), "old content");
    lb_cli_result *r = malloc(sizeof *r);
    quantize(model_path, dest, "Q8_0", 0, r);
    expect_failure("full disk", r, 1, strerror(ENOSPC), folder, "out.gguf");
    CHECK(lb_holds_text(dest, OLD_CONTENT), "full disk: the old output is untouched");
    free(r);
    return failed_since(before);
}

/* The input on a read-only bind mount of its folder: quantizing it still works. */
static int read_only_input(const char *folder) {
    char mounted[4096];
    snprintf(mounted, sizeof mounted, "%s/models", folder);
    mkdir(mounted, 0755);
    if (!lb_private_mounts() || mount(model_folder, mounted, NULL, MS_BIND, NULL) != 0) return CANNOT_SET_UP;
    const int before = lb_checks_failed;
    CHECK(mount(NULL, mounted, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) == 0,
          "remount the models read-only: %s", strerror(errno));
    const char *in = lb_join_path(mounted, "lit3m.bin");
    struct statvfs fs;
    CHECK(statvfs(mounted, &fs) == 0 && (fs.f_flag & ST_RDONLY), "the bind mount is read-only");
    const char *out_folder = lb_join_path(folder, "out");
    mkdir(out_folder, 0755);
    const char *dest = lb_join_path(out_folder, "out.gguf");
    lb_cli_result *r = malloc(sizeof *r);
    quantize(in, dest, "Q8_0", 0, r);
    CHECK(r->exited && r->code == 0 && strstr(r->out, "wrote"), "read-only input: exit %d: %s", r->code,
          r->err);
    CHECK(strcmp(lb_listing(out_folder), "out.gguf") == 0, "read-only input: output alone: %s",
          lb_listing(out_folder));
    struct stat st = {0};
    CHECK(stat(dest, &st) == 0 && st.st_size > 3000000 && st.st_size < 5000000,
          "read-only input: a Q8_0 file of lit3m's size (%lld bytes)", (long long)st.st_size);
    umount(mounted);
    free(r);
    return failed_since(before);
}

static const char *outcome(int child_exit) {
    return child_exit == 0 ? "passed" : child_exit == CANNOT_SET_UP ? "CANNOT SET UP" : "FAILED";
}

static void test_mounted_cases(void) {
    static const struct {
        const char *name;
        int (*fn)(const char *);
    } cases[] = {{"read-only folder", read_only_folder},
                 {"full disk", full_disk},
                 {"read-only input", read_only_input}};
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "mount%d", i);
        const char *folder = lb_make_folder(root, name);
        const int rc = lb_in_child(cases[i].fn, folder);
        CHECK(rc == 0, "%s: %s (child exit %d)", cases[i].name, outcome(rc), rc);
        CHECK(strcmp(lb_listing(folder), i == 2 ? "models,out" : "") == 0,
              "%s: the mount stayed in the child: %s", cases[i].name, lb_listing(folder));
        if (i == 2) {
            CHECK(strcmp(lb_listing(lb_join_path(folder, "models")), "") == 0,
                  "%s: the bind mount stayed in the child", cases[i].name);
        }
        printf("%s: %s\n", cases[i].name, outcome(rc));
    }
}

/* ---- cases without mounts ---- */

/* (a) */
static void test_missing_folder(void) {
    lb_cli_result *r = malloc(sizeof *r);
    const char *folder = lb_make_folder(root, "missing-parent");
    quantize(model_path, lb_join_path(folder, "missing/out.gguf"), "Q8_0", 0, r);
    expect_failure("missing folder", r, 1, "does not exist", folder, "");
    free(r);
}

/* (d) RLIMIT_FSIZE of 1 MB: write() fails with EFBIG, which the CLI reports (it ignores
   SIGXFSZ, so it is not killed by it). */
static void test_file_size_limit(void) {
    lb_cli_result *r = malloc(sizeof *r);
    const char *folder = lb_make_folder(root, "fsize");
    const char *dest = lb_join_path(folder, "out.gguf");
    CHECK(lb_write_text(dest, OLD_CONTENT), "old content");
    quantize(model_path, dest, "Q8_0", 1 << 20, r);
    CHECK(r->exited || r->code != SIGXFSZ, "file size limit: the CLI was killed by SIGXFSZ");
    expect_failure("file size limit", r, 1, strerror(EFBIG), folder, "out.gguf");
    CHECK(lb_holds_text(dest, OLD_CONTENT), "file size limit: the old output is untouched");
    free(r);
}

/* ---- interruption ---- */

static void put_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void put_u64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }
static void put_string(FILE *f, const char *s) {
    put_u64(f, strlen(s));
    fwrite(s, 1, strlen(s), f);
}

/* A GGUF file (little-endian host assumed, as everywhere lowbit runs) of n_tensors F32 tensors
   of rows x 4096 weights each: slow enough to quantize that a signal lands in the middle. */
static int write_big_gguf(const char *path, int n_tensors, int rows) {
    const uint64_t row_length = 4096, tensor_bytes = row_length * (uint64_t)rows * 4;
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite("GGUF", 1, 4, f);
    put_u32(f, 3);
    put_u64(f, (uint64_t)n_tensors);
    put_u64(f, 1);
    put_string(f, "general.architecture");
    put_u32(f, 8);
    put_string(f, "llama");
    for (int t = 0; t < n_tensors; t++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", t);
        put_string(f, name);
        put_u32(f, 2);
        put_u64(f, row_length);
        put_u64(f, (uint64_t)rows);
        put_u32(f, 0);
        put_u64(f, (uint64_t)t * tensor_bytes);
    }
    for (long pos = ftell(f); pos % 32; pos++) fputc(0, f);
    float *row = malloc(row_length * sizeof *row);
    uint32_t state = 12345;
    for (int t = 0; t < n_tensors; t++) {
        for (int r = 0; r < rows; r++) {
            for (uint64_t i = 0; i < row_length; i++) {
                state = state * 1664525u + 1013904223u;
                row[i] = (float)((int32_t)state >> 8) / (float)(1 << 23);
            }
            fwrite(row, sizeof *row, row_length, f);
        }
    }
    free(row);
    return fclose(f) == 0;
}

/* Removes the plain files of a folder. */
static void empty_folder(const char *folder) {
    DIR *d = opendir(folder);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", folder, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISREG(st.st_mode)) unlink(path);
    }
    closedir(d);
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Starts a quantization into folder/out.gguf (holding OLD_CONTENT), waits until its temporary
   file holds 256 KiB (some tensors are written, more are to come), sends the signals and
   collects the result. Returns 0 when the run finished before a signal could land (the input was
   too small to interrupt). */
static int interrupt_run(const char *in, const char *folder, const int *signals, int n_signals,
                         lb_cli_result *r) {
    empty_folder(folder); /* what an earlier, failed case left must not look like this run */
    const char *dest = lb_join_path(folder, "out.gguf");
    lb_write_text(dest, OLD_CONTENT);
    const pid_t pid = start_quantize(in, dest, "Q2_K", "1", 0);
    const double start = now_seconds();
    int started = 0, status = 0;
    while (!started && now_seconds() - start < 30) {
        if (temporary_size(folder) >= (256 << 10)) started = 1;
        else if (waitpid(pid, &status, WNOHANG) == pid) break;
        else usleep(200);
    }
    if (!started) {
        if (now_seconds() - start >= 30) kill(pid, SIGKILL);
        if (waitpid(pid, &status, WNOHANG) == 0) waitpid(pid, &status, 0);
        unlink(dest);
        return 0;
    }
    for (int i = 0; i < n_signals; i++) {
        kill(pid, signals[i]);
        usleep(1000);
    }
    finish(pid, r);
    if (r->exited && r->code == 0) { /* it completed before the signal was handled */
        unlink(dest);
        return 0;
    }
    return 1;
}

static void check_interrupted(const char *label, const lb_cli_result *r, const char *folder,
                              int single_sigint) {
    if (single_sigint) {
        /* the handler asks the library to stop at the next tensor: it reports and exits 130 */
        expect_failure(label, r, 130, "cancel", folder, "out.gguf");
    } else {
        /* a second signal leaves at once, with 130 or by the signal; no message is promised */
        CHECK((r->exited && r->code != 0) || !r->exited, "%s: a failure status (%d)", label, r->code);
        CHECK(!has_temporary(folder), "%s: no temporary file left: %s", label, lb_listing(folder));
        CHECK(strcmp(lb_listing(folder), "out.gguf") == 0, "%s: folder holds %s", label, lb_listing(folder));
        CHECK(r->out[0] == '\0', "%s: nothing on stdout: %.200s", label, r->out);
    }
    CHECK(lb_holds_text(lb_join_path(folder, "out.gguf"), OLD_CONTENT), "%s: the old output is untouched", label);
}

/* (e) SIGINT in the middle: lit3m first (Q2_K on one thread); when it is too quick to be caught,
   a synthetic GGUF of 16 Mi weights (64 MB), then one of 32 Mi (128 MB). Never passes without a signal
   having landed mid-run. */
static void test_interrupt(void) {
    const char *folder = lb_make_folder(root, "interrupt");
    static const struct {
        const char *label;
        int signals[2];
        int n_signals;
        int single_sigint;
    } cases[] = {{"SIGINT", {SIGINT}, 1, 1},
                 {"SIGINT twice", {SIGINT, SIGINT}, 2, 0},
                 {"SIGTERM", {SIGTERM}, 1, 0}};
    const char *inputs[3] = {model_path, lb_join_path(root, "big16.gguf"), lb_join_path(root, "big32.gguf")};
    const int rows[3] = {0, 1024, 2048}; /* 4 tensors of rows x 4096: 64 MB, 128 MB */
    char input_paths[3][1024];
    for (int i = 0; i < 3; i++) snprintf(input_paths[i], sizeof input_paths[i], "%s", inputs[i]);
    lb_cli_result *r = malloc(sizeof *r);
    int size = 0;
    for (int c = 0; c < 3; c++) {
        int caught = 0;
        while (!caught && size < 3) {
            if (rows[size] && !lb_exists(input_paths[size])) {
                CHECK(write_big_gguf(input_paths[size], 4, rows[size]), "write %s", input_paths[size]);
            }
            const double start = now_seconds();
            caught = interrupt_run(input_paths[size], folder, cases[c].signals, cases[c].n_signals, r);
            if (caught) {
                printf("%s: caught mid-run on %s after %.2f s\n", cases[c].label,
                       size ? input_paths[size] : "lit3m.bin", now_seconds() - start);
            } else {
                size++;
            }
        }
        CHECK(caught, "%s: no input was slow enough to interrupt", cases[c].label);
        if (!caught) break;
        check_interrupted(cases[c].label, r, folder, cases[c].single_sigint);
        if (cases[c].signals[0] == SIGTERM) {
            CHECK((r->exited && (r->code == 130 || r->code == 143)) || (!r->exited && r->code == SIGTERM),
                  "SIGTERM: exit %d", r->code);
        } else if (!cases[c].single_sigint) {
            CHECK((r->exited && r->code == 130) || (!r->exited && r->code == SIGINT),
                  "SIGINT twice: exit 130 or killed by SIGINT (%s %d)", r->exited ? "exit" : "signal",
                  r->code);
        }
        unlink(lb_join_path(folder, "out.gguf"));
    }
    for (int i = 1; i < 3; i++) unlink(input_paths[i]);
    free(r);
}

/* Removes root and what the test made in it, never crossing into another file system (were a
   mount to leak out of its child, the shared models must not be deleted through it). */
static void remove_tree(const char *folder) {
    struct stat top, root_st;
    if (stat(folder, &top) != 0 || stat(root, &root_st) != 0 || top.st_dev != root_st.st_dev) return;
    DIR *d = opendir(folder);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", folder, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(path);
        else unlink(path);
    }
    closedir(d);
    rmdir(folder);
}

/* inotify events on the input: any write, attribute change, move or deletion is a failure. */
static void check_input_events(int watch_fd) {
    char buf[4096] __attribute__((aligned(8)));
    int writes = 0, others = 0;
    for (ssize_t n; (n = read(watch_fd, buf, sizeof buf)) > 0;) {
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            if (e->mask & (IN_MODIFY | IN_CLOSE_WRITE)) writes++;
            else others++;
            p += sizeof *e + e->len;
        }
    }
    CHECK(writes == 0, "the input was opened for writing (%d write events)", writes);
    CHECK(others == 0, "the input was changed, moved or deleted (%d events)", others);
}

int main(void) {
    umask(022);
    snprintf(model_path, sizeof model_path, "%s", lb_shared_path("models/lit3m.bin"));
    snprintf(model_folder, sizeof model_folder, "%s", lb_shared_path("models"));
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    chmod(root, 0755);
    const file_state input_before = state_of(model_path);
    CHECK(input_before.size > 14000000, "lit3m.bin is there (%lld bytes)", (long long)input_before.size);
    const int watch_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    CHECK(watch_fd >= 0 && inotify_add_watch(watch_fd, model_path, IN_MODIFY | IN_CLOSE_WRITE |
                                             IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF) >= 0,
          "watch the input: %s", strerror(errno));

    test_missing_folder();
    test_file_size_limit();
    test_mounted_cases();
    test_interrupt();

    if (watch_fd >= 0) {
        check_input_events(watch_fd);
        close(watch_fd);
    }
    CHECK(same_state(input_before, state_of(model_path)), "the input's content and times are unchanged");
    remove_tree(root);
    return lb_test_summary();
}
