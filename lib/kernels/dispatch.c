/*
 * Choosing kernels at run time: the CPU's features decide the level once, the LOWBIT_CPU
 * environment variable can lower it (to test the scalar and intermediate paths on a machine that
 * has more), and each level's kernel files register what they implement over the scalar
 * references of the type table.
 */
#include "kernels.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

const char *lb_cpu_level_name(lb_cpu_level level) {
#if defined(__x86_64__)
    static const char *const names[] = {"scalar", "avx2", "avx512", "avx512vnni"};
#elif defined(__aarch64__)
    static const char *const names[] = {"scalar", "neon", "dotprod", "dotprod"};
#else
    static const char *const names[] = {"scalar", "scalar", "scalar", "scalar"};
#endif
    return (unsigned)level < 4 ? names[level] : "unknown";
}

static lb_cpu_level hardware_level(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return LB_CPU_SCALAR;
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl"))) {
        return LB_CPU_AVX2;
    }
    return __builtin_cpu_supports("avx512vnni") ? LB_CPU_AVX512_VNNI : LB_CPU_AVX512;
#elif defined(__aarch64__) && defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) ? LB_CPU_NEON_DOTPROD : LB_CPU_NEON;
#elif defined(__aarch64__)
    return LB_CPU_NEON;
#else
    return LB_CPU_SCALAR;
#endif
}

/* The level named by LOWBIT_CPU, or -1 when it is unset or names nothing. */
static int requested_level(void) {
    const char *name = getenv("LOWBIT_CPU");
    if (!name || !*name) return -1;
    for (int level = 0; level < 4; level++) {
        if (strcmp(name, lb_cpu_level_name((lb_cpu_level)level)) == 0) return level;
    }
    return -1;
}

static lb_cpu_level detected;
static lb_kernel_set active;
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;

static void detect(void) {
    detected = hardware_level();
    const int requested = requested_level();
    if (requested >= 0 && requested < (int)detected) detected = (lb_cpu_level)requested;
    lb_kernels_for_level(detected, &active);
    /* LOWBIT_INTERLEAVE=0 keeps every matrix in the plain layout, to compare the two end to end */
    const char *interleave = getenv("LOWBIT_INTERLEAVE");
    if (interleave && strcmp(interleave, "0") == 0) {
        memset(active.interleave_rows, 0, sizeof active.interleave_rows);
    }
}

lb_cpu_level lb_cpu_level_detected(void) {
    pthread_once(&detect_once, detect);
    return detected;
}

void lb_kernels_for_level(lb_cpu_level level, lb_kernel_set *set) {
    memset(set, 0, sizeof *set);
    for (int i = 0; i < lowbit_type_count(); i++) {
        const lowbit_type_traits *t = lowbit_type_at(i);
        set->vec_dot[t->type] = t->vec_dot;
        set->quantize_activation[t->type] = t->quantize_ref;
    }
    lb_register_interleaved_reference(set);
#if defined(__x86_64__)
    if (level >= LB_CPU_AVX2) {
        lb_register_legacy_avx2(set);
        lb_register_kquants_avx2(set);
        lb_register_iq1_avx2(set);
        lb_register_lattice_avx2(set);
        lb_register_interleaved_avx2(set);
    }
    if (level >= LB_CPU_AVX512_VNNI) {
        lb_register_legacy_avx512(set);
        lb_register_interleaved_avx512(set);
        lb_register_kquants_avx512(set);
        lb_register_iq1_avx512(set);
        lb_register_lattice_avx512(set);
    }
#elif defined(__aarch64__)
    if (level >= LB_CPU_NEON) {
        lb_register_neon(set);
        lb_register_neon_dotprod_emulated(set);
        lb_register_lattice_dotprod_emulated(set);
    }
    if (level >= LB_CPU_NEON_DOTPROD) {
        lb_register_neon_dotprod(set);
        lb_register_lattice_dotprod(set);
        lb_register_interleaved_dotprod(set);
    }
#else
    (void)level;
#endif
}

lb_vec_dot_tokens_fn lb_vec_dot_tokens_kernel(lowbit_type type) {
    pthread_once(&detect_once, detect);
    if ((unsigned)type >= LOWBIT_TYPE_COUNT || !active.vec_dot_tokens[type]) return NULL;
    return active.tokens_pair[type] == active.vec_dot[type] ? active.vec_dot_tokens[type] : NULL;
}

lowbit_vec_dot_fn lb_vec_dot_kernel(lowbit_type type) {
    pthread_once(&detect_once, detect);
    return (unsigned)type < LOWBIT_TYPE_COUNT ? active.vec_dot[type] : NULL;
}

const lb_kernel_set *lb_active_kernels(void) {
    pthread_once(&detect_once, detect);
    return &active;
}

lowbit_quantize_row_fn lb_quantize_activation_kernel(lowbit_type type) {
    pthread_once(&detect_once, detect);
    return (unsigned)type < LOWBIT_TYPE_COUNT ? active.quantize_activation[type] : NULL;
}
