#define _POSIX_C_SOURCE 200809L /* strtok_r, execv */
#include "testing.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int lb_checks_passed;
int lb_checks_failed;

const char *lb_shared_path(const char *relative) {
    static char path[4096];
    const char *root = getenv("LOWBIT_SHARED");
    if (!root || !*root) root = LOWBIT_SHARED_DEFAULT;
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "the shared folder '%s' is missing (set LOWBIT_SHARED): cannot test\n", root);
        printf("0 passed, 1 failed\n");
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s", root, relative);
    return path;
}

int lb_test_quick(void) {
    const char *quick = getenv("LOWBIT_TEST_QUICK");
    return quick && *quick && strcmp(quick, "0") != 0;
}

const char *lb_join_path(const char *folder, const char *name) {
    static char paths[8][4200];
    static int next;
    char joined[4200];
    snprintf(joined, sizeof joined, "%s/%s", folder, name);
    char *p = paths[next++ % 8];
    memcpy(p, joined, sizeof joined);
    return p;
}

char *lb_read_whole_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)n + 1);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    if (data) data[n] = '\0';
    *size = (size_t)n;
    return data;
}

int lb_test_summary(void) {
    printf("%d passed, %d failed\n", lb_checks_passed, lb_checks_failed);
    return lb_checks_failed == 0 && lb_checks_passed > 0 ? 0 : 1;
}

#include <unistd.h>

/* The emulator command of a cross build ("" natively), split on spaces. */
static int emulator_words(char *buf, size_t size, char **words, int max_words) {
    snprintf(buf, size, "%s", LOWBIT_CLI_EMULATOR);
    int n = 0;
    for (char *save = NULL, *w = strtok_r(buf, " ", &save); w && n < max_words;
         w = strtok_r(NULL, " ", &save)) {
        words[n++] = w;
    }
    return n;
}

void lb_exec_cli(const char *const *argv) {
    char buf[512];
    char *args[64];
    int n = emulator_words(buf, sizeof buf, args, 8);
    args[n++] = (char *)LOWBIT_CLI_PATH;
    for (int i = 1; argv[i] && n < 63; i++) args[n++] = (char *)argv[i];
    args[n] = NULL;
    execvp(args[0], args); /* the emulator is found on PATH */
}

const char *lb_cli_command(void) {
    static char command[1024];
    snprintf(command, sizeof command, "%s%s%s", LOWBIT_CLI_EMULATOR,
             LOWBIT_CLI_EMULATOR[0] ? " " : "", LOWBIT_CLI_PATH);
    return command;
}
