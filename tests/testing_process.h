/* Helpers for tests that look at folders, run the CLI as a real process, or need private tmpfs
   mounts in a forked child: shared by test_atomic_write, test_cli_safety and test_cli_errors. */
#ifndef LOWBIT_TESTING_PROCESS_H
#define LOWBIT_TESTING_PROCESS_H

#include <sys/types.h>

#define LB_CAPTURE_BYTES 16384

/* root/name, created (mode 0755) if missing; the path stays valid for 16 calls. */
const char *lb_make_folder(const char *root, const char *name);
/* The folder's entries, sorted and joined by commas ("" when empty); "?" if it cannot be read. */
const char *lb_listing(const char *folder);
int lb_write_text(const char *path, const char *text);
/* Whether the file holds exactly `text` (up to 255 bytes). */
int lb_holds_text(const char *path, const char *text);
/* Whether anything (a link included) is at path. */
int lb_exists(const char *path);

/* Runs fn(folder) in a forked child: its exit code (0: its checks passed), or 128 + signal. */
int lb_in_child(int (*fn)(const char *), const char *folder);
/* A mount namespace of this (child) process and what it runs, where mounts do not propagate
   out: as root, or else through a user namespace (where tmpfs may be mounted unprivileged). */
int lb_private_mounts(void);

typedef struct lb_cli_result {
    int exited;                  /* 1: exited normally; 0: killed by a signal */
    int code;                    /* the exit status, or the signal number */
    char out[LB_CAPTURE_BYTES];  /* stdout, NUL-terminated (cut) */
    char err[LB_CAPTURE_BYTES];  /* stderr, NUL-terminated (cut) */
} lb_cli_result;

/* Starts the built CLI with argv (argv[0] is "lowbit"), stdin from /dev/null, stdout and stderr
   into capture_folder/stdout.txt and stderr.txt. In the child, `prepare` (when not NULL) runs just
   before exec; a non-zero return ends the child with that status. */
pid_t lb_start_cli(const char *const *argv, const char *capture_folder, int (*prepare)(void));
/* Waits for the CLI started by lb_start_cli and reads what it printed. */
void lb_finish_cli(pid_t pid, const char *capture_folder, lb_cli_result *r);

#endif
