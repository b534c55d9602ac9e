/*
 * ring_fuzz -- fuzz the sidecar ring (native/ring.c) against garbage in the shared region.
 *
 * The peer on the other side of a ring may be buggy or hostile and can write anything into the
 * shared mapping.  Whatever it writes, our side must never crash, never read or write outside
 * the region, never loop forever, and only ever return the documented codes.  Each input drives
 * one scenario (first bytes pick it):
 *
 *   reader  : format a ring, run some valid traffic, then overwrite tail/head and data bytes
 *             (forged record headers, PADDING records, random bytes) and drain with ring_read /
 *             ring_read_flat / ring_release, from the existing consumer handle (stale caches)
 *             or a freshly attached one.  Every call returns >= 0 or RING_ECORRUPT; every view
 *             lies inside the data area, 8-byte aligned, len <= max_record, never PADDING; the
 *             records handed out between two releases never exceed capacity/8 (each record
 *             takes >= 8 bytes and at most `capacity` bytes can be outstanding), and the drain
 *             ends (empty or error) within a bounded number of calls.
 *   attach  : garble the header (random bytes, chosen fields, or all of it) and pass a region
 *             size that may be smaller than the ring; ring_attach must return a documented code;
 *             when it accepts, the region (allocated with exactly the size given) must hold the
 *             data area, and reading and writing through the accepted handles must stay inside.
 *   writer  : garble the consumer position (head) and data, then write with every producer API;
 *             results are OK / AGAIN / ETOOBIG / EINVAL / ECORRUPT and nothing lands outside.
 *
 * Regions are allocated with exactly the byte count given to the library, so AddressSanitizer
 * reports any access past them.  Header offsets (from the layout diagram in ring.c):
 *   0 magic u64 | 8 version u32 | 12 header_size u32 | 16 capacity u64 | 24 max_record u32 |
 *   32 generation u64 | 128 tail u64 | 256 head u64 | 384 consumer_sleeping u32 |
 *   512 producer_waiting u32 | 516 producer_need u32 | 640.. heartbeats | 896.. stats
 *
 * Builds:
 *   clang -fsanitize=fuzzer,address,undefined -DRING_FUZZ_LIBFUZZER ...  (libFuzzer's main)
 *   gcc -fsanitize=address,undefined ...  standalone:
 *     ring_fuzz [--iterations N] [--seconds S] [--seed X] [--aligned-positions] [FILE...]
 *     ring_fuzz --repro-unaligned      deterministic repro of the unaligned-position overflow
 * RING_FUZZ_ALIGNED=1 in the environment (or --aligned-positions) keeps every position the
 * fuzzer writes 8-byte aligned (that was a ring.c bug, now fixed; the default fuzzes them).
 */
#define _GNU_SOURCE
#include "ring.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OFF_MAGIC 0
#define OFF_VERSION 8
#define OFF_HEADER_SIZE 12
#define OFF_CAPACITY 16
#define OFF_MAX_RECORD 24
#define OFF_GENERATION 32
#define OFF_TAIL 128
#define OFF_HEAD 256
#define OFF_SLEEPING 384
#define OFF_WAITING 512
#define OFF_NEED 516

static int g_aligned = -1; /* -1: read RING_FUZZ_ALIGNED once */

static struct {
    uint64_t inputs, records, views_checked, corrupt, attach_ok, attach_err[16];
    uint64_t writes_ok, writes_again, writes_corrupt, writes_other, drains_empty;
} g_count;

#define ASSERT(c, ...)                                                                     \
    do {                                                                                   \
        if (!(c)) {                                                                        \
            fprintf(stderr, "ring_fuzz ASSERT %s:%d: %s: ", __FILE__, __LINE__, #c);       \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fprintf(stderr, "\n");                                                         \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t n;
} in_t;

static uint8_t u8(in_t *in) {
    if (!in->n) return 0;
    in->n--;
    return *in->p++;
}
static uint16_t u16(in_t *in) { return (uint16_t)(u8(in) | (u8(in) << 8)); }
static uint32_t u32(in_t *in) { return (uint32_t)u16(in) | ((uint32_t)u16(in) << 16); }
static uint64_t u64(in_t *in) { return (uint64_t)u32(in) | ((uint64_t)u32(in) << 32); }

static uint64_t rd64(const uint8_t *b, size_t off) {
    uint64_t v;
    memcpy(&v, b + off, 8);
    return v;
}
static void wr64(uint8_t *b, size_t off, uint64_t v) { memcpy(b + off, &v, 8); }
static void wr32(uint8_t *b, size_t off, uint32_t v) { memcpy(b + off, &v, 4); }

static void fix_alignment(uint8_t *region) {
    if (!g_aligned) return;
    wr64(region, OFF_TAIL, rd64(region, OFF_TAIL) & ~(uint64_t)7);
    wr64(region, OFF_HEAD, rd64(region, OFF_HEAD) & ~(uint64_t)7);
}

static int is_code(int rc) { return rc <= 0 && rc >= RING_ECORRUPT; }

/* Exactly `size` bytes (ASan flags any access past them), only 8-byte aligned on purpose
 * (every 8-aligned region must work: the header used to need 128, a fixed ring.c bug). */
static uint8_t *region_alloc(size_t size) {
    void *p = NULL;
    if (posix_memalign(&p, 8, size ? size : 1)) return NULL;
    return p;
}

static volatile uint64_t g_sink;

/* A new garbage value for a position: raw, or near the current one (the interesting edges). */
static uint64_t fuzz_position(in_t *in, uint64_t cur, uint64_t other, uint64_t cap) {
    switch (u8(in) % 6) {
    case 0: return u64(in);
    case 1: return cur + (uint64_t)(int64_t)(int16_t)u16(in);
    case 2: return other + (uint64_t)(int64_t)(int16_t)u16(in);
    case 3: return other + cap + (uint64_t)(int64_t)(int8_t)u8(in);
    case 4: return other - (uint64_t)(u8(in) % 4) * 8;
    default: return cur + (uint64_t)(u8(in) % 16) * 8;
    }
}

/* Where to strike: anywhere, or where the consumer will look next (head, the old tail, the
 * last slots before the end of the area). */
static uint64_t target(in_t *in, const uint8_t *region, uint64_t cap) {
    uint64_t mask = cap - 1;
    switch (u8(in) % 4) {
    case 0: return u16(in) & mask;
    case 1: return rd64(region, OFF_HEAD) & mask;
    case 2: return rd64(region, OFF_TAIL) & mask;
    default: return (cap - 8 * (1 + (uint64_t)(u8(in) % 16))) & mask;
    }
}

static void garble_data(in_t *in, uint8_t *region, uint64_t cap, uint32_t max_record) {
    uint64_t mask = cap - 1;
    uint8_t *data = region + RING_HEADER_SIZE;
    switch (u8(in) % 5) {
    case 0: data[u16(in) & mask] = u8(in); break;
    case 1: wr32(data, target(in, region, cap) & ~(uint64_t)3, u32(in)); break;
    case 2: { /* forge a plausible record header */
        uint64_t at = target(in, region, cap) & ~(uint64_t)7;
        uint32_t len;
        switch (u8(in) % 4) {
        case 0: len = u32(in); break;
        case 1: len = max_record + (u8(in) % 3); break;
        case 2: len = (uint32_t)(cap - at - 8) + (uint32_t)(int32_t)(int8_t)u8(in); break;
        default: len = u8(in); break;
        }
        wr32(data, at, len);
        wr32(data, at + 4, (u8(in) & 1) ? RING_TYPE_PADDING : u32(in));
        break;
    }
    case 3: { /* a PADDING record that does or does not reach the end */
        uint64_t at = target(in, region, cap) & ~(uint64_t)7;
        wr32(data, at, (uint32_t)(cap - at - 8) + (uint32_t)((u8(in) % 3) * 8) - 8);
        wr32(data, at + 4, RING_TYPE_PADDING);
        break;
    }
    default: {
        uint64_t at = u16(in) & mask;
        uint64_t n = u8(in);
        if (at + n > cap) n = cap - at;
        memset(data + at, u8(in), n);
        break;
    }
    }
}

/* Drain as a consumer; everything handed out must be sane, and the drain must end.
 * bound: the most records that may come out between two releases: capacity/8, whatever the
 * handle had cached before: each record takes >= 8 bytes and the consumer refuses a tail more
 * than `capacity` past its released position (regression test for a fixed ring.c bug: it used
 * to check against the read position only).  The whole drain may hand out up to twice that:
 * a handle whose cached tail is stale reads up to that tail (at most a ring's worth past its
 * released position when it was loaded), releases, and then may load a tail up to a ring's
 * worth past the new release -- exactly what a producer writing meanwhile would give it
 * (found by libFuzzer: 514 records out of a 4096-byte ring, read=8 with a cached tail of 64,
 * released at 24, then a shared tail of 4120; corpus native/tests/ring_fuzz_corpus/). */
static uint32_t g_ends[65];

static void drain(in_t *in, ring_t *c, uint64_t cap, uint32_t max_record, uint64_t bound) {
    ring_view_t views[65];
    uint32_t flat[3 * 65];
    uint8_t *data = ring_data(c);
    uint64_t pass = 0, total = 0;
    const int limit = (int)(3 * bound) + 64;
    int it;
    for (it = 0; it < limit; it++) {
        int max = 1 + (in->n ? u8(in) % 64 : 63);
        int mode = in->n ? u8(in) % 3 : it % 3; /* 0 ring_read, 1 ring_read_flat, 2 gather */
        int use_flat = mode == 1;
        if (mode == 2) { /* copies: every byte lands inside gbuf[0:gcap] (ASan) */
            uint32_t gcap = in->n ? (uint32_t)u8(in) << 6 : max_record;
            if (gcap > max_record) gcap = max_record;
            uint8_t *gbuf = malloc(gcap + 1); /* exactly gcap usable bytes: ASan sees overflows */
            ASSERT(gbuf, "out of memory");
            int rc = ring_read_gather(c, in->n ? 1 + u8(in) % 2 : 1, gbuf, gcap, g_ends, max);
            free(gbuf);
            ASSERT(rc == RING_ECORRUPT || (rc >= 0 && rc <= max), "gather returned %d (max %d)", rc, max);
            if (rc == RING_ECORRUPT) {
                g_count.corrupt++;
                ring_release(c);
                return;
            }
            for (int i = 0; i < rc; i++)
                ASSERT(g_ends[i] <= gcap && (i == 0 || g_ends[i] >= g_ends[i - 1]),
                       "gather end %u outside [previous, cap %u]", g_ends[i], gcap);
            pass += (uint64_t)rc;
            total += (uint64_t)rc;
            g_count.records += (uint64_t)rc;
            ASSERT(pass <= bound && total <= 2 * bound,
                   "gathered %" PRIu64 " records, %" PRIu64 " since the last release (bound %" PRIu64 ")",
                   total, pass, bound);
            if (rc == 0) {
                ring_release(c);
                g_count.drains_empty++;
                return;
            }
            continue;
        }
        int rc = use_flat ? ring_read_flat(c, flat, max) : ring_read(c, views, max);
        ASSERT(rc == RING_ECORRUPT || (rc >= 0 && rc <= max), "read returned %d (max %d)", rc, max);
        if (rc == RING_ECORRUPT) {
            g_count.corrupt++;
            /* stays an error or an honest answer on the next call, never a crash */
            int rc2 = ring_read(c, views, 4);
            ASSERT(rc2 == RING_ECORRUPT || (rc2 >= 0 && rc2 <= 4), "read after ECORRUPT: %d", rc2);
            ring_release(c);
            return;
        }
        for (int i = 0; i < rc; i++) {
            uint32_t type = use_flat ? flat[3 * i] : views[i].type;
            uint32_t len = use_flat ? flat[3 * i + 1] : views[i].len;
            uint64_t off = use_flat ? flat[3 * i + 2] : views[i].offset;
            ASSERT(type != RING_TYPE_PADDING, "PADDING handed out");
            ASSERT(len <= max_record, "len %u > max_record %u", len, max_record);
            ASSERT(off >= 8 && (off & 7) == 0 && off + len <= cap,
                   "view outside the data area: offset %" PRIu64 " len %u cap %" PRIu64, off, len, cap);
            /* touch every byte: ASan checks the bounds */
            uint64_t s = 0;
            for (uint32_t k = 0; k < len; k += 1 + (len >> 6)) s += data[off + k];
            if (len) s += data[off + len - 1];
            g_sink += s;
            g_count.views_checked++;
        }
        pass += (uint64_t)rc;
        total += (uint64_t)rc;
        g_count.records += (uint64_t)rc;
        ASSERT(pass <= bound, "%" PRIu64 " records handed out without a release (bound %" PRIu64
               ", capacity %" PRIu64 ")", pass, bound, cap);
        if (rc == 0) {
            ring_release(c);
            g_count.drains_empty++;
            ASSERT(ring_used(c) <= cap, "ring_used > capacity");
            return;
        }
        ASSERT(total <= 2 * bound, "%" PRIu64 " records out of a %" PRIu64 "-byte ring (bound %" PRIu64 ")",
               total, cap, 2 * bound);
        if (in->n ? u8(in) % 4 == 0 : (it % 4) == 3) {
            ring_release(c);
            (void)ring_consumer_must_wake(c);
            pass = 0;
        }
    }
    ASSERT(it < limit, "drain did not end after %d calls (%" PRIu64 " records)", it, total);
}

/* Write with every producer API; nothing may land outside the region (ASan). */
static void produce(in_t *in, ring_t *p, uint32_t max_record, int rounds) {
    static uint8_t buf[1 << 16];
    for (int i = 0; i < rounds; i++) {
        uint32_t len;
        switch (u8(in) % 4) {
        case 0: len = u8(in); break;
        case 1: len = max_record; break;
        case 2: len = max_record + 1; break;
        default: len = u16(in) % (max_record + 2); break;
        }
        if (len > sizeof buf / 2) len = sizeof buf / 2;
        uint32_t type = u8(in) == 0xFF ? RING_TYPE_PADDING : 7;
        int rc;
        switch (u8(in) % 2) {
        case 0: rc = ring_try_write(p, type, buf, len); break;
        default: {
            uint32_t lens[3] = {len / 3, len / 3, len - 2 * (len / 3)};
            rc = ring_try_write_many(p, type, buf, lens, 3);
            ASSERT(rc <= 3, "write_many returned %d", rc);
            if (rc > 0) rc = RING_OK;
            break;
        }
        }
        ASSERT(is_code(rc), "producer call returned %d", rc);
        if (rc == RING_OK) g_count.writes_ok++;
        else if (rc == RING_AGAIN) g_count.writes_again++;
        else if (rc == RING_ECORRUPT) g_count.writes_corrupt++;
        else g_count.writes_other++;
        if (rc == RING_OK) (void)ring_producer_must_wake(p);
        if (rc == RING_AGAIN) (void)ring_producer_prepare_wait(p, len + 16);
        g_sink += ring_free_space(p);
    }
}

/* ------------------------------------------------------------------------------------------ */

static void scenario_reader(in_t *in, uint64_t cap) {
    size_t rs = ring_region_size(cap);
    uint8_t *region = region_alloc(rs);
    ASSERT(region, "malloc");
    memset(region, u8(in), rs);
    ring_t p, c;
    uint64_t gen = 1 + u8(in);
    ASSERT(ring_init(&p, region, rs, cap, gen) == RING_OK, "init");
    ASSERT(ring_attach(&c, region, rs, gen) == RING_OK, "attach");
    uint32_t M = ring_max_record_for(cap);
    /* valid traffic first, to move the positions around and leave real records behind */
    int k = u8(in) % 64;
    static uint8_t buf[1 << 16];
    for (int i = 0; i < k; i++) {
        uint32_t len = (u8(in) & 1) ? u8(in) : u16(in) % (M + 1);
        int rc = ring_try_write(&p, 1 + (uint32_t)i, buf, len);
        ASSERT(rc == RING_OK || rc == RING_AGAIN, "valid write: %d", rc);
        if (u8(in) & 1) {
            ring_view_t v[8];
            int n = ring_read(&c, v, 1 + u8(in) % 8);
            ASSERT(n >= 0, "valid read: %d", n);
            if (u8(in) & 1) ring_release(&c);
        }
    }
    /* the hostile producer strikes */
    int m = 1 + u8(in) % 8;
    for (int j = 0; j < m; j++) {
        uint64_t tail = rd64(region, OFF_TAIL), head = rd64(region, OFF_HEAD);
        switch (u8(in) % 4) {
        case 0: wr64(region, OFF_TAIL, fuzz_position(in, tail, head, cap)); break;
        case 1: wr64(region, OFF_HEAD, fuzz_position(in, head, tail, cap)); break;
        default: garble_data(in, region, cap, M); break;
        }
    }
    fix_alignment(region);
    ring_t *cons = &c, fresh;
    if (u8(in) & 1) {
        int rc = ring_attach(&fresh, region, rs, gen);
        ASSERT(rc == RING_OK || rc == RING_ECORRUPT, "attach after garbling positions: %d", rc);
        if (rc != RING_OK) {
            g_count.attach_err[-rc]++;
            free(region);
            return;
        }
        cons = &fresh;
    }
    if (u8(in) & 1) {
        (void)ring_consumer_prepare_sleep(cons);
    }
    drain(in, cons, cap, M, cap / 8);
    /* and once more after the producer side writes again (against a head that may be garbage) */
    produce(in, &p, M, u8(in) % 8);
    drain(in, cons, cap, M, cap / 8);
    free(region);
}

static void scenario_attach(in_t *in, uint64_t cap) {
    size_t rs = ring_region_size(cap);
    uint8_t *image = region_alloc(rs);
    ASSERT(image, "malloc");
    memset(image, 0, rs);
    ring_t p;
    uint64_t gen = 1 + u8(in);
    ASSERT(ring_init(&p, image, rs, cap, gen) == RING_OK, "init");
    static uint8_t buf[4096];
    for (int i = 0, k = u8(in) % 16; i < k; i++) (void)ring_try_write(&p, 3, buf, u8(in));
    switch (u8(in) % 3) {
    case 0: /* random header bytes */
        for (int i = 0, n = 1 + u8(in) % 16; i < n; i++) image[u16(in) % RING_HEADER_SIZE] = u8(in);
        break;
    case 1: { /* chosen fields */
        static const size_t offs[] = {OFF_MAGIC, OFF_VERSION, OFF_HEADER_SIZE, OFF_CAPACITY,
                                      OFF_MAX_RECORD, OFF_GENERATION, OFF_TAIL, OFF_HEAD,
                                      OFF_SLEEPING, OFF_WAITING, OFF_NEED};
        for (int i = 0, n = 1 + u8(in) % 4; i < n; i++) {
            size_t off = offs[u8(in) % (sizeof offs / sizeof offs[0])];
            uint64_t v;
            switch (u8(in) % 5) {
            case 0: v = u64(in); break;
            case 1: v = rd64(image, off) + (uint64_t)(int64_t)(int8_t)u8(in); break;
            case 2: v = (uint64_t)1 << (u8(in) % 64); break;
            case 3: v = rd64(image, off) ^ ((uint64_t)1 << (u8(in) % 64)); break;
            default: v = 0; break;
            }
            if (off == OFF_VERSION || off == OFF_HEADER_SIZE || off == OFF_MAX_RECORD ||
                off == OFF_SLEEPING || off == OFF_WAITING || off == OFF_NEED)
                wr32(image, off, (uint32_t)v);
            else
                wr64(image, off, v);
        }
        break;
    }
    default: /* all of it */
        for (size_t i = 0; i < RING_HEADER_SIZE; i++) image[i] = u8(in);
        break;
    }
    fix_alignment(image);
    /* the size we claim the region has, and a buffer of exactly that size */
    size_t given = rs;
    switch (u8(in) % 4) {
    case 0: given = RING_HEADER_SIZE + (size_t)(u16(in) % (cap + 1)); break;
    case 1: given = (size_t)u16(in) % (RING_HEADER_SIZE + 64); break;
    default: break;
    }
    if (given < 64) given = 64; /* malloc(0) games are not the point */
    uint8_t *region = region_alloc(given);
    ASSERT(region, "malloc");
    memcpy(region, image, given < rs ? given : rs);
    free(image);
    uint64_t expect = (u8(in) & 1) ? 0 : ((u8(in) & 1) ? gen : u64(in));
    ring_t r;
    int rc = ring_attach(&r, region, given, expect);
    ASSERT(is_code(rc) && rc != RING_AGAIN && rc != RING_ETOOBIG, "ring_attach returned %d", rc);
    if (rc != RING_OK) {
        g_count.attach_err[-rc]++;
        free(region);
        return;
    }
    g_count.attach_ok++;
    ring_stats_t s;
    ring_get_stats(&r, &s);
    ASSERT(s.capacity >= RING_MIN_CAPACITY && (s.capacity & (s.capacity - 1)) == 0,
           "accepted capacity %" PRIu64, s.capacity);
    ASSERT(ring_region_size(s.capacity) <= given, "accepted a ring larger than its region");
    uint32_t M = ring_max_record_for(s.capacity);
    int ck = ring_check(&r, expect);
    ASSERT(ck == RING_OK, "ring_check right after a successful attach: %d", ck);
    ring_t w;
    ASSERT(ring_attach(&w, region, given, expect) == RING_OK, "second attach");
    if (u8(in) & 1) {
        drain(in, &r, s.capacity, M, s.capacity / 8);
        produce(in, &w, M, 1 + u8(in) % 16);
    } else {
        produce(in, &w, M, 1 + u8(in) % 16);
        drain(in, &r, s.capacity, M, s.capacity / 8);
    }
    free(region);
}

static void scenario_writer(in_t *in, uint64_t cap) {
    size_t rs = ring_region_size(cap);
    uint8_t *region = region_alloc(rs);
    ASSERT(region, "malloc");
    memset(region, 0, rs);
    ring_t p, c;
    ASSERT(ring_init(&p, region, rs, cap, 5) == RING_OK, "init");
    ASSERT(ring_attach(&c, region, rs, 5) == RING_OK, "attach");
    uint32_t M = ring_max_record_for(cap);
    produce(in, &p, M, u8(in) % 32);
    drain(in, &c, cap, M, cap / 8);
    produce(in, &p, M, u8(in) % 32);
    /* the hostile consumer strikes: head anywhere, flags and need set */
    for (int j = 0, m = 1 + u8(in) % 4; j < m; j++) {
        uint64_t tail = rd64(region, OFF_TAIL), head = rd64(region, OFF_HEAD);
        switch (u8(in) % 3) {
        case 0: wr64(region, OFF_HEAD, fuzz_position(in, head, tail, cap)); break;
        case 1: wr32(region, OFF_NEED, u32(in)), wr32(region, OFF_WAITING, u32(in)); break;
        default: wr32(region, OFF_SLEEPING, u32(in)); break;
        }
    }
    fix_alignment(region);
    ring_t *prod = &p, fresh;
    if (u8(in) & 1) {
        int rc = ring_attach(&fresh, region, rs, 5);
        ASSERT(rc == RING_OK || rc == RING_ECORRUPT, "attach: %d", rc);
        if (rc != RING_OK) {
            g_count.attach_err[-rc]++;
            free(region);
            return;
        }
        prod = &fresh;
    }
    produce(in, prod, M, 1 + u8(in) % 64);
    free(region);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (g_aligned < 0) {
        const char *e = getenv("RING_FUZZ_ALIGNED");
        g_aligned = e && *e && *e != '0';
    }
    in_t in = {data, size};
    g_count.inputs++;
    uint8_t sel = u8(&in);
    uint64_t cap = (uint64_t)RING_MIN_CAPACITY << (sel % 3);
    switch ((sel >> 2) % 4) {
    case 0:
    case 1: scenario_reader(&in, cap); break;
    case 2: scenario_attach(&in, cap); break;
    default: scenario_writer(&in, cap); break;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
#ifndef RING_FUZZ_LIBFUZZER

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Regression (fixed ring.c bug): ring_attach accepted a tail that is not a multiple of 8; a
 * producer attached to it then wrote the PADDING header across the end of the data area.
 * Exit 0 if refused. */
static int repro_unaligned(void) {
    const uint64_t cap = 4096;
    size_t rs = ring_region_size(cap);
    uint8_t *region = region_alloc(rs); /* exactly the region: ASan sees the overflow */
    ring_t p;
    if (!region || ring_init(&p, region, rs, cap, 1) != RING_OK) return 2;
    wr64(region, OFF_TAIL, 3 * cap + 4093);
    wr64(region, OFF_HEAD, 3 * cap + 4093);
    int rc = ring_attach(&p, region, rs, 1);
    if (rc != RING_OK) {
        printf("ring_fuzz repro-unaligned: attach refused (%s): fixed\n", ring_strerror(rc));
        free(region);
        return 0;
    }
    fprintf(stderr, "ring_fuzz repro-unaligned: attach accepted tail=head=%" PRIu64 "; writing...\n",
            3 * cap + 4093);
    rc = ring_try_write(&p, 1, "", 0); /* PADDING header at data+4093: 5 bytes past the end */
    printf("ring_fuzz repro-unaligned: write returned %d and no overflow was detected\n", rc);
    free(region);
    return rc == RING_OK ? 1 : 0;
}

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 2;
    }
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    return 0;
}

int main(int argc, char **argv) {
    uint64_t iterations = 200000, seed = 1;
    double seconds = 20;
    int files = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iterations") && i + 1 < argc) iterations = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = strtod(argv[++i], NULL);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--aligned-positions")) g_aligned = 1;
        else if (!strcmp(argv[i], "--repro-unaligned")) return repro_unaligned();
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: ring_fuzz [--iterations N] [--seconds S] [--seed X] "
                            "[--aligned-positions] [--repro-unaligned] [FILE...]\n");
            return 2;
        } else {
            files++;
            if (run_file(argv[i])) return 2;
        }
    }
    if (files) {
        printf("ring_fuzz OK: %d file(s)\n", files);
        return 0;
    }
    double t0 = now_s(), elapsed = 0;
    static uint8_t buf[2048];
    uint64_t s = mix64(seed), it;
    for (it = 0; it < iterations; it++) {
        if ((it & 255) == 0 && (elapsed = now_s() - t0) > seconds) break;
        s = mix64(s + it);
        size_t len = (size_t)(s % 600);
        int style = (int)((s >> 32) % 4);
        for (size_t i = 0; i < len; i += 8) {
            uint64_t w = mix64(s ^ (i * 0x9e3779b97f4a7c15ULL));
            if (style == 1) w &= 0x0F0F0F0F0F0F0F0FULL;      /* small numbers */
            else if (style == 2) w &= 0x0101010101010101ULL; /* near-zero deltas */
            memcpy(buf + i, &w, 8);
        }
        LLVMFuzzerTestOneInput(buf, len);
    }
    elapsed = now_s() - t0;
    printf("ring_fuzz OK inputs=%" PRIu64 " elapsed=%.1fs records=%" PRIu64 " views=%" PRIu64
           " corrupt=%" PRIu64 " drains_empty=%" PRIu64 " attach_ok=%" PRIu64
           " emagic=%" PRIu64 " eversion=%" PRIu64 " egeneration=%" PRIu64 " ecapacity=%" PRIu64
           " ecorrupt_attach=%" PRIu64 " einval=%" PRIu64 " writes_ok=%" PRIu64
           " writes_again=%" PRIu64 " writes_corrupt=%" PRIu64 " writes_other=%" PRIu64
           " aligned=%d\n",
           g_count.inputs, elapsed, g_count.records, g_count.views_checked, g_count.corrupt,
           g_count.drains_empty, g_count.attach_ok, g_count.attach_err[-RING_EMAGIC],
           g_count.attach_err[-RING_EVERSION], g_count.attach_err[-RING_EGENERATION],
           g_count.attach_err[-RING_ECAPACITY], g_count.attach_err[-RING_ECORRUPT],
           g_count.attach_err[-RING_EINVAL], g_count.writes_ok, g_count.writes_again,
           g_count.writes_corrupt, g_count.writes_other, g_aligned > 0);
    return 0;
}
#endif
