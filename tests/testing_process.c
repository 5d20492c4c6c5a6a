#define _GNU_SOURCE /* unshare */
#include "testing_process.h"
#include "testing.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *lb_make_folder(const char *root, const char *name) {
    static char folders[16][1024];
    static int count;
    char *path = folders[count++ % 16];
    snprintf(path, 1024, "%s/%s", root, name);
    mkdir(path, 0755);
    return path;
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char *lb_listing(const char *folder) {
    static char text[4096];
    char *names[512];
    int n = 0;
    DIR *d = opendir(folder);
    if (!d) return "?";
    for (struct dirent *e; (e = readdir(d)) && n < 512;) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, compare_strings);
    text[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (i) strncat(text, ",", sizeof text - strlen(text) - 1);
        strncat(text, names[i], sizeof text - strlen(text) - 1);
        free(names[i]);
    }
    return text;
}

int lb_write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    const int ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

int lb_holds_text(const char *path, const char *text) {
    char buf[256] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    return n == strlen(text) && memcmp(buf, text, n) == 0;
}

int lb_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

int lb_in_child(int (*fn)(const char *), const char *folder) {
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) _exit(fn(folder));
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int write_id_map(const char *file, const char *map) {
    const int fd = open(file, O_WRONLY);
    if (fd < 0) return 0;
    const ssize_t n = write(fd, map, strlen(map));
    close(fd);
    return n == (ssize_t)strlen(map);
}

int lb_private_mounts(void) {
    if (unshare(CLONE_NEWNS) != 0) {
        const uid_t uid = getuid();
        const gid_t gid = getgid();
        char map[64];
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return 0;
        write_id_map("/proc/self/setgroups", "deny");
        snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
        if (!write_id_map("/proc/self/uid_map", map)) return 0;
        snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
        if (!write_id_map("/proc/self/gid_map", map)) return 0;
    }
    return mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
}

pid_t lb_start_cli(const char *const *argv, const char *capture_folder, int (*prepare)(void)) {
    char out_file[4200], err_file[4200];
    snprintf(out_file, sizeof out_file, "%s/stdout.txt", capture_folder);
    snprintf(err_file, sizeof err_file, "%s/stderr.txt", capture_folder);
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid != 0) return pid;
    const int in = open("/dev/null", O_RDONLY);
    const int out = open(out_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = open(err_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0) _exit(126);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    if (prepare) {
        const int rc = prepare();
        if (rc != 0) _exit(rc);
    }
    /* under sanitizers, a report must not pass for the CLI's own exit status 1 */
    setenv("ASAN_OPTIONS", "exitcode=99", 0);
    setenv("UBSAN_OPTIONS", "exitcode=99", 0);
    lb_exec_cli(argv);
    _exit(127);
}

static void read_capture(const char *path, char *buf) {
    buf[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) return;
    const size_t n = fread(buf, 1, LB_CAPTURE_BYTES - 1, f);
    buf[n] = '\0';
    fclose(f);
}

void lb_finish_cli(pid_t pid, const char *capture_folder, lb_cli_result *r) {
    int status = 0;
    r->exited = 0;
    r->code = -1;
    if (pid > 0 && waitpid(pid, &status, 0) == pid) {
        r->exited = WIFEXITED(status);
        r->code = r->exited ? WEXITSTATUS(status) : WTERMSIG(status);
    }
    read_capture(lb_join_path(capture_folder, "stdout.txt"), r->out);
    read_capture(lb_join_path(capture_folder, "stderr.txt"), r->err);
}
