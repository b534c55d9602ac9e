/* What the C unit tests (frame_unit.c, h1_unit.c) share: a failure that is counted, not
 * fatal, so one run reports every failing case; and a small deterministic PRNG (xorshift64)
 * for the mutation loops, so a failure reproduces. */
#ifndef SIDECAR_TESTS_UNIT_H
#define SIDECAR_TESTS_UNIT_H

#include <stdint.h>
#include <stdio.h>

static int g_failed;
#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fprintf(stderr, "\n"); g_failed = 1; } while (0)

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static inline uint64_t next(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

#endif
