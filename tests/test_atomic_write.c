/*
 * Atomic output files: a destination is replaced whole or not at all, and no temporary file is
 * ever left behind: after a missing folder, a directory as destination, a read-only folder, a
 * full disk, a file-size limit (EFBIG), an abort, or the signal-handler cleanup. The folder is
 * listed after each case.
 *
 * Tests run as root, where permission bits do not stop writes: the read-only folder and the full
 * disk are made with tmpfs mounts inside a private mount namespace of a forked child (nothing
 * outside the child sees them). When that cannot be set up, a user namespace is tried, then
 * (read-only case) dropping to uid 65534 on a 0555 folder. If no method works the test fails:
 * it never skips.
 */
#define _GNU_SOURCE /* mkdtemp, unshare, setresuid */
#include "testing.h"
#include "testing_process.h"
#include "lowbit.h"
#include "io/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CANNOT_SET_UP 2 /* a child's exit code: the method is not available here */

static char root[] = "/tmp/lowbit_test_atomic.XXXXXX";

/* A deterministic pattern of n bytes. */
static uint8_t *pattern(size_t n, unsigned seed) {
    uint8_t *p = malloc(n);
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)((i * 2654435761u + seed) >> 13);
    return p;
}

/* ---- cases run in the test process ---- */

static void test_refused_destinations(void) {
    lb_atomic_file *f = NULL;
    lowbit_diag diag = {0};
    const char *before = strdup(lb_listing(root));
    const char *missing = lb_join_path(root, "missing/out.bin");
    CHECK(lb_atomic_open(missing, &f, &diag) == LOWBIT_ERR_IO && !f &&
              strstr(diag.message, "does not exist") && strstr(diag.message, missing),
          "missing folder: %s", diag.message);
    CHECK(strcmp(lb_listing(root), before) == 0 && !lb_exists(lb_join_path(root, "missing")),
          "missing folder: nothing created");

    const char *folder = lb_make_folder(root, "dirs");
    const char *sub = lb_make_folder(root, "dirs/sub");
    CHECK(lb_atomic_open(sub, &f, &diag) == LOWBIT_ERR_IO && !f &&
              strstr(diag.message, "is a directory"), "directory: %s", diag.message);
    CHECK(lb_atomic_open(lb_join_path(folder, "new/"), &f, &diag) == LOWBIT_ERR_IO && !f &&
              strstr(diag.message, "names a folder"), "trailing slash: %s", diag.message);
    CHECK(lb_atomic_open("/dev/null", &f, &diag) == LOWBIT_ERR_IO && !f &&
              strstr(diag.message, "not a regular file"), "device: %s", diag.message);
    CHECK(lb_atomic_open("", &f, &diag) == LOWBIT_ERR_IO && !f, "empty path");
    CHECK(strcmp(lb_listing(folder), "sub") == 0 && strcmp(lb_listing(sub), "") == 0,
          "directory: nothing created (%s)", lb_listing(folder));
    free((void *)before);
}

static void test_write_and_commit(void) {
    const char *folder = lb_make_folder(root, "basic");
    const char *dest = lb_join_path(folder, "out.bin");
    lb_atomic_file *f = NULL;
    lowbit_diag diag = {0};
    CHECK(lb_atomic_open(dest, &f, &diag) == LOWBIT_OK, "open: %s", diag.message);
    if (!f) return;
    const char *temp = lb_atomic_temp_path(f);
    const size_t dest_length = strlen(dest);
    CHECK(strncmp(temp, dest, dest_length) == 0 && temp[dest_length] == '.' &&
              strlen(temp) == dest_length + 11 && strcmp(temp + dest_length + 7, ".tmp") == 0,
          "temporary name '%s'", temp);
    CHECK(lb_exists(temp) && !lb_exists(dest), "only the temporary file exists while writing");
    /* small writes (buffered), a large one (written through), padding */
    const size_t big = (size_t)3 << 20;
    uint8_t *data = pattern(big, 1);
    CHECK(lb_atomic_write(f, "hello", 5, &diag) == LOWBIT_OK, "small write");
    CHECK(lb_atomic_write(f, data, big, &diag) == LOWBIT_OK, "large write");
    CHECK(lb_atomic_write_zeros(f, 10, &diag) == LOWBIT_OK, "zeros");
    CHECK(lb_atomic_write(f, "!", 1, &diag) == LOWBIT_OK, "last write");
    CHECK(lb_atomic_size(f) == 5 + big + 11, "size %llu", (unsigned long long)lb_atomic_size(f));
    CHECK(!lb_exists(dest), "no destination before the commit");
    CHECK(lb_atomic_commit(f, &diag) == LOWBIT_OK, "commit: %s", diag.message);
    struct stat st;
    CHECK(stat(dest, &st) == 0 && (uint64_t)st.st_size == 5 + big + 11 &&
              (st.st_mode & 0777) == 0644, "size and mode 0644 (%o)", (unsigned)(st.st_mode & 0777));
    uint8_t *back = malloc(big + 16);
    FILE *in = fopen(dest, "rb");
    const size_t n = in ? fread(back, 1, big + 16, in) : 0;
    if (in) fclose(in);
    static const uint8_t zeros[10];
    CHECK(n == 5 + big + 11 && memcmp(back, "hello", 5) == 0 && memcmp(back + 5, data, big) == 0 &&
              memcmp(back + 5 + big, zeros, 10) == 0 && back[5 + big + 10] == '!', "content");
    CHECK(strcmp(lb_listing(folder), "out.bin") == 0, "listing: %s", lb_listing(folder));

    /* the umask applies: 077 gives 0600 */
    const mode_t old_mask = umask(077);
    const char *private_dest = lb_join_path(folder, "private.bin");
    CHECK(lb_atomic_open(private_dest, &f, &diag) == LOWBIT_OK &&
              lb_atomic_commit(f, &diag) == LOWBIT_OK, "empty file: %s", diag.message);
    umask(old_mask);
    CHECK(stat(private_dest, &st) == 0 && st.st_size == 0 && (st.st_mode & 0777) == 0600,
          "mode with umask 077: %o", (unsigned)(st.st_mode & 0777));

    /* a bare file name: the folder is the current one */
    char cwd[1024];
    CHECK(getcwd(cwd, sizeof cwd) && chdir(folder) == 0, "chdir");
    CHECK(lb_atomic_open("bare.bin", &f, &diag) == LOWBIT_OK &&
              lb_atomic_write(f, "bare", 4, &diag) == LOWBIT_OK &&
              lb_atomic_commit(f, &diag) == LOWBIT_OK && lb_holds_text("bare.bin", "bare"),
          "relative name: %s", diag.message);
    CHECK(unlink("bare.bin") == 0 && chdir(cwd) == 0, "chdir back");

    /* an existing destination keeps its content until the commit, and after an abort */
    CHECK(lb_write_text(dest, "old"), "old content");
    CHECK(lb_atomic_open(dest, &f, &diag) == LOWBIT_OK, "open over a file");
    CHECK(lb_atomic_write(f, "new content", 11, &diag) == LOWBIT_OK, "write");
    CHECK(lb_holds_text(dest, "old"), "untouched before the commit");
    CHECK(lb_atomic_commit(f, &diag) == LOWBIT_OK && lb_holds_text(dest, "new content"), "replaced");
    CHECK(lb_atomic_open(dest, &f, &diag) == LOWBIT_OK, "open again");
    temp = lb_atomic_temp_path(f);
    CHECK(lb_atomic_write(f, data, (size_t)5 << 19, &diag) == LOWBIT_OK, "2.5 MiB");
    CHECK(stat(temp, &st) == 0 && st.st_size >= (2 << 20), "data on disk before the abort");
    lb_atomic_abort(f);
    lb_atomic_abort(NULL);
    CHECK(lb_holds_text(dest, "new content"), "untouched by the abort");
    CHECK(strcmp(lb_listing(folder), "out.bin,private.bin") == 0, "after abort: %s", lb_listing(folder));
    free(back);
    free(data);
}

static void on_signal(int signal_number) {
    (void)signal_number;
    lb_atomic_remove_all_temporaries();
}

static void test_registry(void) {
    const char *folder = lb_make_folder(root, "registry");
    lb_atomic_file *a = NULL, *b = NULL, *c = NULL;
    lowbit_diag diag = {0};
    uint8_t *data = pattern((size_t)2 << 20, 2);
    CHECK(lb_atomic_open(lb_join_path(folder, "a.bin"), &a, &diag) == LOWBIT_OK &&
              lb_atomic_open(lb_join_path(folder, "b.bin"), &b, &diag) == LOWBIT_OK, "open two");
    if (!a || !b) return;
    lb_atomic_write(a, "a", 1, &diag);
    lb_atomic_write(b, data, (size_t)2 << 20, &diag);
    char temp_a[1024], temp_b[1024];
    snprintf(temp_a, sizeof temp_a, "%s", lb_atomic_temp_path(a));
    snprintf(temp_b, sizeof temp_b, "%s", lb_atomic_temp_path(b));
    CHECK(lb_exists(temp_a) && lb_exists(temp_b), "both temporaries exist");
    /* a committed file is no longer the registry's: the cleanup leaves it alone */
    CHECK(lb_atomic_open(lb_join_path(folder, "c.bin"), &c, &diag) == LOWBIT_OK &&
              lb_atomic_commit(c, &diag) == LOWBIT_OK, "commit c");
    lb_atomic_remove_all_temporaries();
    CHECK(!lb_exists(temp_a) && !lb_exists(temp_b), "the cleanup removed the temporaries");
    CHECK(strcmp(lb_listing(folder), "c.bin") == 0, "after cleanup: %s", lb_listing(folder));
    /* what was cleaned up cannot be committed */
    CHECK(lb_atomic_commit(a, &diag) == LOWBIT_ERR_IO && strstr(diag.message, "a.bin"),
          "commit after cleanup: %s", diag.message);
    lb_atomic_abort(b);
    CHECK(strcmp(lb_listing(folder), "c.bin") == 0, "after commit/abort: %s", lb_listing(folder));

    /* from a signal handler */
    struct sigaction action = {0};
    action.sa_handler = on_signal;
    sigaction(SIGUSR1, &action, NULL);
    CHECK(lb_atomic_open(lb_join_path(folder, "d.bin"), &a, &diag) == LOWBIT_OK, "open d");
    lb_atomic_write(a, data, (size_t)2 << 20, &diag);
    raise(SIGUSR1);
    CHECK(strcmp(lb_listing(folder), "c.bin") == 0, "after the signal: %s", lb_listing(folder));
    lb_atomic_abort(a);
    signal(SIGUSR1, SIG_DFL);

    /* a full registry is an error, with nothing created; freed slots are reused */
    lb_atomic_file *many[LB_ATOMIC_MAX_LIVE];
    int opened = 0;
    for (int i = 0; i < LB_ATOMIC_MAX_LIVE; i++) {
        char name[32];
        snprintf(name, sizeof name, "m%02d.bin", i);
        opened += lb_atomic_open(lb_join_path(folder, name), &many[i], &diag) == LOWBIT_OK;
    }
    CHECK(opened == LB_ATOMIC_MAX_LIVE, "opened %d", opened);
    CHECK(lb_atomic_open(lb_join_path(folder, "one-too-many.bin"), &a, &diag) == LOWBIT_ERR_IO && !a &&
              strstr(diag.message, "more than 16"), "full registry: %s", diag.message);
    for (int i = 0; i < opened; i++) lb_atomic_abort(many[i]);
    CHECK(strcmp(lb_listing(folder), "c.bin") == 0, "after the aborts: %s", lb_listing(folder));
    CHECK(lb_atomic_open(lb_join_path(folder, "e.bin"), &a, &diag) == LOWBIT_OK, "slots reused");
    lb_atomic_abort(a);
    free(data);
}

/* ---- cases run in a child ---- */

static int read_only_by_mount(const char *folder) {
    if (!lb_private_mounts() || mount("tmpfs", folder, "tmpfs", 0, "size=1m") != 0) {
        return CANNOT_SET_UP;
    }
    const int failed_before = lb_checks_failed;
    const char *dest = lb_join_path(folder, "out.bin");
    CHECK(lb_write_text(dest, "old"), "old content");
    CHECK(mount(NULL, folder, NULL, MS_REMOUNT | MS_RDONLY, "size=1m") == 0, "remount read-only: %s",
          strerror(errno));
    lb_atomic_file *f = NULL;
    lowbit_diag diag = {0};
    CHECK(lb_atomic_open(dest, &f, &diag) == LOWBIT_ERR_IO && !f &&
              strstr(diag.message, strerror(EROFS)) && strstr(diag.message, dest),
          "read-only folder (tmpfs): %s", diag.message);
    CHECK(lb_holds_text(dest, "old"), "destination untouched");
    CHECK(strcmp(lb_listing(folder), "out.bin") == 0, "read-only listing: %s", lb_listing(folder));
    return lb_checks_failed > failed_before;
}

static int read_only_by_uid(const char *folder) {
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) {
        return CANNOT_SET_UP;
    }
    const int failed_before = lb_checks_failed;
    const char *dest = lb_join_path(folder, "out.bin");
    lb_atomic_file *f = NULL;
    lowbit_diag diag = {0};
    CHECK(lb_atomic_open(dest, &f, &diag) == LOWBIT_ERR_IO && !f &&
              strstr(diag.message, strerror(EACCES)) && strstr(diag.message, dest),
          "read-only folder (0555, uid 65534): %s", diag.message);
    CHECK(lb_holds_text(dest, "old"), "destination untouched");
    CHECK(strcmp(lb_listing(folder), "out.bin") == 0, "0555 listing: %s", lb_listing(folder));
    return lb_checks_failed > failed_before;
}

/* Writes 2 MiB to folder/out.bin (which holds "old") and expects `reason` on the way; then
   checks that nothing but the old file is left. */
static void expect_write_failure(const char *folder, const char *reason) {
    const char *dest = lb_join_path(folder, "out.bin");
    lb_atomic_file *f = NULL;
    lowbit_diag diag = {0};
    CHECK(lb_atomic_open(dest, &f, &diag) == LOWBIT_OK, "open: %s", diag.message);
    if (!f) return;
    char temp[1024];
    snprintf(temp, sizeof temp, "%s", lb_atomic_temp_path(f));
    uint8_t *data = pattern(64 << 10, 3);
    lowbit_status st = LOWBIT_OK;
    for (int i = 0; i < 32 && st == LOWBIT_OK; i++) st = lb_atomic_write(f, data, 64 << 10, &diag);
    if (st == LOWBIT_OK) st = lb_atomic_commit(f, &diag);
    else {
        CHECK(!lb_exists(temp), "the temporary file is removed at the first error");
        lowbit_diag again = {0};
        CHECK(lb_atomic_write(f, data, 1, &again) == LOWBIT_ERR_IO &&
                  strcmp(again.message, diag.message) == 0, "later writes fail the same way");
        st = lb_atomic_commit(f, &again);
        CHECK(st == LOWBIT_ERR_IO && strcmp(again.message, diag.message) == 0,
              "the commit fails the same way: %s", again.message);
    }
    CHECK(st == LOWBIT_ERR_IO && strstr(diag.message, reason) && strstr(diag.message, temp),
          "expected '%s': %s", reason, diag.message);
    CHECK(lb_holds_text(dest, "old"), "destination keeps its old content");
    CHECK(strcmp(lb_listing(folder), "out.bin") == 0, "listing: %s", lb_listing(folder));
    free(data);
}

static int full_disk_by_mount(const char *folder) {
    if (!lb_private_mounts() || mount("tmpfs", folder, "tmpfs", 0, "size=64k") != 0) {
        return CANNOT_SET_UP;
    }
    const int failed_before = lb_checks_failed;
    CHECK(lb_write_text(lb_join_path(folder, "out.bin"), "old"), "old content");
    expect_write_failure(folder, strerror(ENOSPC));
    return lb_checks_failed > failed_before;
}

/* RLIMIT_FSIZE with SIGXFSZ ignored (as the CLI does): write() returns EFBIG past the limit,
   after a short write up to it. */
static int file_size_limit(const char *folder) {
    const int failed_before = lb_checks_failed;
    CHECK(lb_write_text(lb_join_path(folder, "out.bin"), "old"), "old content");
    const struct rlimit limit = {300000, 300000};
    if (signal(SIGXFSZ, SIG_IGN) == SIG_ERR || setrlimit(RLIMIT_FSIZE, &limit) != 0) {
        return CANNOT_SET_UP;
    }
    expect_write_failure(folder, strerror(EFBIG));
    return lb_checks_failed > failed_before;
}

static const char *outcome(int child_exit) {
    return child_exit == 0 ? "passed" : child_exit == CANNOT_SET_UP ? "unavailable" : "FAILED";
}

static void test_read_only_folder(void) {
    const char *by_mount = lb_make_folder(root, "ro-mount");
    const int mount_rc = lb_in_child(read_only_by_mount, by_mount);
    CHECK(mount_rc == 0 || mount_rc == CANNOT_SET_UP, "read-only tmpfs case: exit %d", mount_rc);
    CHECK(strcmp(lb_listing(by_mount), "") == 0, "the mount stayed in the child: %s", lb_listing(by_mount));

    const char *by_uid = lb_make_folder(root, "ro-uid");
    CHECK(lb_write_text(lb_join_path(by_uid, "out.bin"), "old"), "old content");
    chmod(by_uid, 0555);
    const int uid_rc = lb_in_child(read_only_by_uid, by_uid);
    CHECK(uid_rc == 0 || uid_rc == CANNOT_SET_UP, "0555 folder case: exit %d", uid_rc);
    CHECK(strcmp(lb_listing(by_uid), "out.bin") == 0 && lb_holds_text(lb_join_path(by_uid, "out.bin"), "old"),
          "0555 folder afterwards: %s", lb_listing(by_uid));
    chmod(by_uid, 0755);
    CHECK(mount_rc != CANNOT_SET_UP || uid_rc != CANNOT_SET_UP,
          "no way to make a read-only folder here (mount namespace, user namespace, setresuid)");
    printf("read-only folder: tmpfs %s, uid 65534 %s\n", outcome(mount_rc), outcome(uid_rc));
}

static void test_full_disk(void) {
    const char *by_mount = lb_make_folder(root, "full-mount");
    const int mount_rc = lb_in_child(full_disk_by_mount, by_mount);
    CHECK(mount_rc == 0 || mount_rc == CANNOT_SET_UP, "full tmpfs case: exit %d", mount_rc);
    CHECK(strcmp(lb_listing(by_mount), "") == 0, "the mount stayed in the child: %s", lb_listing(by_mount));
    const char *by_limit = lb_make_folder(root, "fsize");
    const int limit_rc = lb_in_child(file_size_limit, by_limit);
    CHECK(limit_rc == 0, "file size limit case: exit %d", limit_rc);
    CHECK(strcmp(lb_listing(by_limit), "out.bin") == 0 && lb_holds_text(lb_join_path(by_limit, "out.bin"), "old"),
          "after EFBIG: %s", lb_listing(by_limit));
    printf("full disk: tmpfs %s, RLIMIT_FSIZE %s\n", outcome(mount_rc), outcome(limit_rc));
}

/* Removes the test's folders (two levels deep is all it makes). */
static void remove_tree(const char *folder) {
    DIR *d = opendir(folder);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", folder, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            remove_tree(path);
        } else {
            unlink(path);
        }
    }
    closedir(d);
    rmdir(folder);
}

int main(void) {
    umask(022);
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    chmod(root, 0755); /* the uid 65534 child must reach its folder */
    test_refused_destinations();
    test_write_and_commit();
    test_registry();
    test_read_only_folder();
    test_full_disk();
    remove_tree(root);
    return lb_test_summary();
}
