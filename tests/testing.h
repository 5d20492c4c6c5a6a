/* A minimal test harness: CHECK records a failure and goes on; the summary line is
   "N passed, N failed" and the exit code is non-zero when anything failed. */
#ifndef LOWBIT_TESTING_H
#define LOWBIT_TESTING_H

#include <stddef.h>
#include <stdio.h>

extern int lb_checks_passed;
extern int lb_checks_failed;

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        if (cond) {                                                                               \
            lb_checks_passed++;                                                                   \
        } else {                                                                                  \
            lb_checks_failed++;                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);             \
            fprintf(stderr, __VA_ARGS__);                                                         \
            fputc('\n', stderr);                                                                  \
        }                                                                                         \
    } while (0)

/* Path of a file under the shared folder (LOWBIT_SHARED or the build's default). Exits the test
   with a failure when the folder is missing: tests that need it never skip silently. */
const char *lb_shared_path(const char *relative);
/* 1 when LOWBIT_TEST_QUICK is set: the heaviest tests then cover a representative subset (the
   cross-architecture run under an emulator sets it; native and sanitizer runs cover everything). */
int lb_test_quick(void);
/* folder/name in one of 8 rotating buffers (folder may itself be an earlier result). */
const char *lb_join_path(const char *folder, const char *name);
/* A whole file, NUL-terminated (not counted in *size); NULL when it cannot be read. */
char *lb_read_whole_file(const char *path, size_t *size);
/* Runs the lowbit CLI in place of this process: argv[0] is replaced by the CLI's path (behind the
   emulator's command when the tests run under one, as cross-architecture builds do). Returns
   only on failure. */
void lb_exec_cli(const char *const *argv);
/* The shell words that start the CLI ("[emulator ...] /path/to/lowbit"), for popen/system. */
const char *lb_cli_command(void);
/* Prints the summary line and returns the process exit code. */
int lb_test_summary(void);

#endif
