/*
 * ring_unit -- single-process unit tests of the sidecar ring (native/ring.c), pure C.
 *
 *   ring_unit                 run every regular test, print "N passed, M failed", exit 1 on failure
 *   ring_unit -k SUBSTRING    only the tests whose name contains SUBSTRING
 *   ring_unit --list          list the tests
 *   ring_unit --regressions   run only the regression tests of ring.c bugs this suite found
 *                             (fixed; also part of the default run; --known-bugs: same)
 *
 * The shared-header layout is pinned here on purpose (test "layout_matches_docs"): it is the
 * wire format a peer in another language implements (see the diagram at the top of ring.c).
 * Offsets, from that diagram:
 */
#define _GNU_SOURCE
#include "ring.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define OFF_MAGIC 0          /* u64 "SCRRING1" */
#define OFF_VERSION 8        /* u32 */
#define OFF_HEADER_SIZE 12   /* u32 */
#define OFF_CAPACITY 16      /* u64 */
#define OFF_MAX_RECORD 24    /* u32 */
#define OFF_GENERATION 32    /* u64 */
#define OFF_TAIL 128         /* u64 producer position */
#define OFF_HEAD 256         /* u64 consumer position */
#define OFF_SLEEPING 384     /* u32 consumer_sleeping */
#define OFF_WAITING 512      /* u32 producer_waiting */
#define OFF_NEED 516         /* u32 producer_need */
#define OFF_PHB 640          /* u64 producer heartbeat, u32 pid at +8 */
#define OFF_CHB 768          /* u64 consumer heartbeat, u32 pid at +8 */
#define OFF_PSTATS 896       /* u64 records_written, bytes_written, full_events, consumer_wakeups */
#define OFF_CSTATS 1024      /* u64 records_read, bytes_read, producer_wakeups, consumer_sleeps */

/* ------------------------------------------------------------------------------------------ */
/* mini framework                                                                              */

static const char *g_test;
static int g_failed_now;

#define FAILF(...)                                                                        \
    do {                                                                                  \
        fprintf(stderr, "FAIL %s (%s:%d): ", g_test, __FILE__, __LINE__);                \
        fprintf(stderr, __VA_ARGS__);                                                     \
        fprintf(stderr, "\n");                                                            \
        g_failed_now = 1;                                                                 \
        return;                                                                           \
    } while (0)
#define CHECK(c)                                                                          \
    do {                                                                                  \
        if (!(c)) FAILF("CHECK(%s)", #c);                                                 \
    } while (0)
#define CHECK_EQ(a, b)                                                                    \
    do {                                                                                  \
        long long _a = (long long)(a), _b = (long long)(b);                               \
        if (_a != _b) FAILF("%s == %lld, expected %s == %lld", #a, _a, #b, _b);           \
    } while (0)
#define CHECK_RC(call, want)                                                              \
    do {                                                                                  \
        int _rc = (call);                                                                 \
        if (_rc != (want))                                                                \
            FAILF("%s returned %d (%s), expected %d (%s)", #call, _rc, ring_strerror(_rc), \
                  (int)(want), ring_strerror(want));                                      \
    } while (0)
/* run a helper that may fail, and stop the test if it did */
#define RUN(call)                                                                         \
    do {                                                                                  \
        call;                                                                             \
        if (g_failed_now) return;                                                         \
    } while (0)

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                     */

static inline uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }
static uint64_t rd64(const void *base, size_t off) {
    uint64_t v;
    memcpy(&v, (const uint8_t *)base + off, 8);
    return v;
}
static uint32_t rd32(const void *base, size_t off) {
    uint32_t v;
    memcpy(&v, (const uint8_t *)base + off, 4);
    return v;
}
static void wr64(void *base, size_t off, uint64_t v) { memcpy((uint8_t *)base + off, &v, 8); }
static void wr32(void *base, size_t off, uint32_t v) { memcpy((uint8_t *)base + off, &v, 4); }

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
static uint8_t pbyte(uint64_t seq, uint32_t i) { return (uint8_t)mix64(seq * 1315423911u + i); }
static void fill(uint8_t *p, uint64_t seq, uint32_t len) {
    for (uint32_t i = 0; i < len; i++) p[i] = pbyte(seq, i);
}
static int payload_ok(const uint8_t *p, uint64_t seq, uint32_t len) {
    for (uint32_t i = 0; i < len; i++)
        if (p[i] != pbyte(seq, i)) return 0;
    return 1;
}

#define MAXCAP_BUF (1u << 20)
static uint8_t g_buf[MAXCAP_BUF + 4096] __attribute__((aligned(128)));

typedef struct {
    uint8_t *base, *mem;
    size_t size;
    uint64_t cap;
    uint64_t gen;
    ring_t p, c;
} fx_t;

/* A ring in a malloc'ed region of exactly ring_region_size(cap) bytes (so ASan sees any
 * access past its end), pre-filled with garbage as a stale segment would be.  Deliberately
 * 8- but not 16-byte aligned: the weakest alignment ring_init accepts must work (see
 * regression_header_alignment). */
static void fx_open(fx_t *f, uint64_t cap) {
    memset(f, 0, sizeof *f);
    f->cap = cap;
    f->gen = 7;
    f->size = ring_region_size(cap);
    f->base = malloc(f->size + 8); /* malloc: 16-aligned */
    if (!f->base) FAILF("out of memory");
    f->mem = f->base + 8;
    memset(f->mem, 0xA5, f->size);
    CHECK_RC(ring_init(&f->p, f->mem, f->size, cap, f->gen), RING_OK);
    CHECK_RC(ring_attach(&f->c, f->mem, f->size, f->gen), RING_OK);
}
static void fx_close(fx_t *f) {
    free(f->base);
    f->base = f->mem = NULL;
}

static uint64_t fx_tail(fx_t *f) { return rd64(f->mem, OFF_TAIL); }
static uint64_t fx_head(fx_t *f) { return rd64(f->mem, OFF_HEAD); }

/* Write a record whose payload is derived from seq. */
static int put(fx_t *f, uint64_t seq, uint32_t len, uint32_t type) {
    static uint8_t tmp[MAXCAP_BUF];
    fill(tmp, seq, len);
    return ring_try_write(&f->p, type, tmp, len);
}

/* Read exactly one record and check it. */
static void get_one(fx_t *f, uint64_t seq, uint32_t len, uint32_t type, uint64_t *offset) {
    ring_view_t v[2];
    int n = ring_read(&f->c, v, 1);
    if (n != 1) FAILF("ring_read returned %d (%s), expected 1 record", n, ring_strerror(n));
    if (v[0].type != type || v[0].len != len)
        FAILF("record (type %u, len %u), expected (type %u, len %u)", v[0].type, v[0].len, type, len);
    if ((v[0].offset & 7) || v[0].offset < 8 || v[0].offset + len > f->cap)
        FAILF("bad offset %" PRIu64, v[0].offset);
    if (!payload_ok(ring_data(&f->c) + v[0].offset, seq, len)) FAILF("payload of seq %" PRIu64 " differs", seq);
    if (offset) *offset = v[0].offset;
}

/* Move an empty ring's positions forward until the write index is `idx` (multiple of 8),
 * through the public API only (filler records written, read and released). */
static void advance_to(fx_t *f, uint64_t idx) {
    uint64_t mask = f->cap - 1;
    for (int guard = 0; (fx_tail(f) & mask) != idx; guard++) {
        if (guard > (int)(2 * f->cap / 8) + 16) FAILF("advance_to loops");
        uint64_t cur = fx_tail(f) & mask;
        uint64_t dist = idx > cur ? idx - cur : f->cap - cur;
        uint64_t t = dist < 512 ? dist : 512;
        if (t > align8(8 + (uint64_t)f->p.max_record)) t = align8(8 + (uint64_t)f->p.max_record);
        int rc = put(f, 0, (uint32_t)(t - 8), 1);
        if (rc != RING_OK) FAILF("advance_to: write failed: %s", ring_strerror(rc));
        ring_view_t v;
        if (ring_read(&f->c, &v, 1) != 1) FAILF("advance_to: read failed");
        ring_release(&f->c);
    }
    if (ring_used(&f->p) != 0) FAILF("advance_to: ring not empty");
}

static void stats(ring_t *r, ring_stats_t *s) { ring_get_stats(r, s); }

/* ------------------------------------------------------------------------------------------ */
/* tests                                                                                       */

static void t_init_rejects_bad_args(void) {
    ring_t r;
    size_t big = ring_region_size(8192);
    CHECK(big <= sizeof g_buf);
    CHECK_RC(ring_init(&r, g_buf, big, 0, 1), RING_EINVAL);
    CHECK_RC(ring_init(&r, g_buf, big, 2048, 1), RING_EINVAL);       /* below minimum */
    CHECK_RC(ring_init(&r, g_buf, big, 4097, 1), RING_EINVAL);       /* not a power of two */
    CHECK_RC(ring_init(&r, g_buf, big, 6144, 1), RING_EINVAL);
    CHECK_RC(ring_init(&r, g_buf, big, 1ull << 32, 1), RING_EINVAL); /* flat offsets are u32 */
    CHECK_RC(ring_init(&r, g_buf, ring_region_size(8192) - 1, 8192, 1), RING_EINVAL);
    CHECK_RC(ring_init(&r, g_buf, RING_HEADER_SIZE, 4096, 1), RING_EINVAL);
    CHECK_RC(ring_init(&r, g_buf + 4, big, 4096, 1), RING_EINVAL); /* 8-byte atomics */
    CHECK_RC(ring_init(&r, NULL, big, 4096, 1), RING_EINVAL);
    CHECK_RC(ring_init(&r, g_buf, big, 4096, 1), RING_OK);
    CHECK_RC(ring_init(&r, g_buf, big, 8192, 1), RING_OK);
}

static void t_large_capacity(void) {
    /* 1 GiB: the region is reserved, not touched beyond the header */
    uint64_t cap = 1ull << 30;
    size_t sz = ring_region_size(cap);
    void *m = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return; /* no address space: nothing to test */
    ring_t p, c;
    int rc = ring_init(&p, m, sz, cap, 3);
    if (rc == RING_OK) {
        if (ring_attach(&c, m, sz, 3) != RING_OK) {
            munmap(m, sz);
            FAILF("attach 1 GiB ring");
        }
        uint8_t b[100];
        memset(b, 7, sizeof b);
        if (ring_try_write(&p, 1, b, 100) != RING_OK || p.max_record != ring_max_record_for(cap)) {
            munmap(m, sz);
            FAILF("write to a 1 GiB ring");
        }
        uint32_t flat[3];
        if (ring_read_flat(&c, flat, 1) != 1 || flat[1] != 100 || flat[2] != 8) {
            munmap(m, sz);
            FAILF("read_flat from a 1 GiB ring");
        }
    }
    munmap(m, sz);
    CHECK_RC(rc, RING_OK);
}

static void t_region_size_and_max_record(void) {
    for (uint64_t cap = 4096; cap <= (1ull << 30); cap <<= 1) {
        CHECK(ring_region_size(cap) >= RING_HEADER_SIZE + cap);
        uint32_t m = ring_max_record_for(cap);
        CHECK(m > 0);
        /* a max record plus the worst-case padding before it fits in an empty ring */
        CHECK(2 * align8(8 + (uint64_t)m) - 8 <= cap);
        CHECK(m + 8 <= cap / 2);
    }
    fx_t f;
    RUN(fx_open(&f, 16384));
    CHECK_EQ(f.p.max_record, ring_max_record_for(16384));
    CHECK_EQ(f.c.max_record, ring_max_record_for(16384));
    fx_close(&f);
}

static void t_fresh_ring_is_empty(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    ring_view_t v[4];
    uint32_t flat[12];
    CHECK_RC(ring_read(&f.c, v, 4), 0);
    CHECK_RC(ring_read_flat(&f.c, flat, 4), 0);
    CHECK_RC(ring_read(&f.c, v, 0), 0);
    CHECK_RC(ring_read_flat(&f.c, flat, 0), 0);
    ring_release(&f.c);
    CHECK_EQ(ring_used(&f.c), 0);
    CHECK_EQ(ring_used(&f.p), 0);
    CHECK_EQ(ring_free_space(&f.p), 4096);
    ring_stats_t s;
    stats(&f.c, &s);
    CHECK_EQ(s.capacity, 4096);
    CHECK_EQ(s.generation, 7);
    CHECK_EQ(s.used + s.records_written + s.records_read + s.bytes_written + s.bytes_read, 0);
    CHECK_EQ(s.full_events + s.consumer_wakeups + s.producer_wakeups + s.consumer_sleeps, 0);
    CHECK_EQ(s.consumer_sleeping + s.producer_waiting, 0);
    CHECK(ring_data(&f.c) == f.mem + RING_HEADER_SIZE);
    CHECK(ring_data(&f.p) == f.mem + RING_HEADER_SIZE);
    fx_close(&f);
}

static void t_roundtrip(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    static const uint32_t lens[] = {0, 1, 7, 8, 9, 15, 16, 17, 100, 255, 256, 504};
    uint64_t expect_off = 8;
    for (unsigned i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        CHECK_RC(put(&f, i, lens[i], 1000 + i), RING_OK);
    }
    uint64_t total = 0;
    for (unsigned i = 0; i < sizeof lens / sizeof lens[0]; i++) total += align8(8 + lens[i]);
    CHECK_EQ(ring_used(&f.c), total);
    CHECK_EQ(ring_free_space(&f.p), 4096 - total);
    for (unsigned i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint64_t off;
        RUN(get_one(&f, i, lens[i], 1000 + i, &off));
        CHECK_EQ(off, expect_off);
        expect_off += align8(8 + lens[i]);
    }
    ring_view_t v;
    CHECK_RC(ring_read(&f.c, &v, 1), 0);
    ring_release(&f.c);
    CHECK_EQ(ring_used(&f.c), 0);
    CHECK_EQ(ring_free_space(&f.p), 4096);
    /* types: anything but PADDING, including 0 and 0xFFFFFFFE */
    CHECK_RC(put(&f, 1, 3, 0), RING_OK);
    CHECK_RC(put(&f, 2, 3, 0xFFFFFFFEu), RING_OK);
    RUN(get_one(&f, 1, 3, 0, NULL));
    RUN(get_one(&f, 2, 3, 0xFFFFFFFEu, NULL));
    fx_close(&f);
}

static void t_max_record_and_etoobig(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    uint32_t M = f.p.max_record;
    static uint8_t buf[8192];
    fill(buf, 5, M);
    ring_stats_t s0, s1;
    stats(&f.p, &s0);
    CHECK_RC(ring_try_write(&f.p, 1, buf, M + 1), RING_ETOOBIG);
    CHECK_RC(ring_try_write(&f.p, 1, buf, 0xFFFFFFFFu), RING_ETOOBIG); /* no u32 wrap */
    uint32_t lens1[1] = {M + 1};
    CHECK_RC(ring_try_write_many(&f.p, 1, buf, lens1, 1), RING_ETOOBIG);
    stats(&f.p, &s1);
    CHECK_EQ(s1.records_written, s0.records_written);
    CHECK_EQ(s1.full_events, s0.full_events);
    CHECK_EQ(ring_used(&f.c), 0);
    /* exactly max_record through each API */
    CHECK_RC(ring_try_write(&f.p, 1, buf, M), RING_OK);
    uint32_t lensM[1] = {M};
    CHECK_RC(ring_try_write_many(&f.p, 2, buf, lensM, 1), 1);
    for (uint32_t t = 1; t <= 2; t++) RUN(get_one(&f, 5, M, t, NULL));
    ring_release(&f.c);
    fx_close(&f);
}

static void t_max_record_fits_empty_ring_at_every_index(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    uint32_t M = f.p.max_record;
    uint64_t total = align8(8 + (uint64_t)M);
    for (uint64_t idx = 0; idx < f.cap; idx += 8) {
        RUN(advance_to(&f, idx));
        uint64_t seq = 1000 + idx;
        int rc = put(&f, seq, M, 9);
        if (rc != RING_OK) FAILF("max record refused at index %" PRIu64 ": %s", idx, ring_strerror(rc));
        uint64_t to_end = f.cap - idx;
        uint64_t want_used = total <= to_end ? total : to_end + total;
        CHECK_EQ(ring_used(&f.c), want_used);
        uint64_t off;
        RUN(get_one(&f, seq, M, 9, &off));
        CHECK_EQ(off, total <= to_end ? idx + 8 : 8);
        ring_release(&f.c);
        CHECK_EQ(ring_used(&f.c), 0);
    }
    fx_close(&f);
}

static void t_exactly_full(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    uint32_t M = f.p.max_record; /* record of exactly capacity/8 bytes */
    CHECK_EQ(align8(8 + M), 4096 / 8);
    int n = 0;
    while (n < 100 && put(&f, (uint64_t)n, M, 1) == RING_OK) n++;
    CHECK_EQ(n, 8);
    CHECK_EQ(ring_free_space(&f.p), 0);
    CHECK_EQ(ring_used(&f.c), 4096);
    CHECK_RC(put(&f, 99, 0, 1), RING_AGAIN); /* not even an empty record */
    ring_stats_t s;
    stats(&f.p, &s);
    CHECK_EQ(s.full_events, 2);
    /* one released record makes exactly one record's room, at index 0 (exact fit) */
    RUN(get_one(&f, 0, M, 1, NULL));
    CHECK_RC(put(&f, 8, M, 1), RING_AGAIN); /* handed out is not released */
    ring_release(&f.c);
    CHECK_EQ(ring_free_space(&f.p), 512);
    CHECK_RC(put(&f, 8, M, 1), RING_OK);
    CHECK_EQ(ring_free_space(&f.p), 0);
    for (int i = 1; i <= 8; i++) {
        uint64_t off;
        RUN(get_one(&f, (uint64_t)i, M, 1, &off));
        CHECK_EQ(off, (uint64_t)(i % 8) * 512 + 8);
    }
    ring_release(&f.c);
    fx_close(&f);

    /* records that do not divide the area: 170 x 24 bytes leave 16 free at the end */
    RUN(fx_open(&f, 4096));
    n = 0;
    while (n < 1000 && put(&f, (uint64_t)n, 16, 2) == RING_OK) n++;
    CHECK_EQ(n, 170);
    CHECK_EQ(ring_free_space(&f.p), 16);
    CHECK_RC(put(&f, 500, 9, 2), RING_AGAIN);  /* 24 bytes do not fit in 16 */
    CHECK_RC(put(&f, 501, 8, 2), RING_OK);     /* 16 bytes fit exactly, ending at the end */
    CHECK_EQ(ring_free_space(&f.p), 0);
    CHECK_EQ(ring_used(&f.c), 4096);
    for (int i = 0; i < 170; i++) RUN(get_one(&f, (uint64_t)i, 16, 2, NULL));
    uint64_t off;
    RUN(get_one(&f, 501, 8, 2, &off));
    CHECK_EQ(off, 4096 - 16 + 8);
    ring_release(&f.c);
    /* the next record starts at index 0 with no padding */
    CHECK_RC(put(&f, 502, 40, 2), RING_OK);
    CHECK_EQ(ring_used(&f.c), 48);
    RUN(get_one(&f, 502, 40, 2, &off));
    CHECK_EQ(off, 8);
    ring_release(&f.c);
    fx_close(&f);
}

static void t_wrap_with_padding(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    uint8_t *d = ring_data(&f.p);
    /* 96 bytes left before the end, record needs 112: PADDING of 96 then the record at 0 */
    RUN(advance_to(&f, 4096 - 96));
    CHECK_RC(put(&f, 1, 100, 5), RING_OK);
    CHECK_EQ(ring_used(&f.c), 96 + 112);
    CHECK_EQ(rd32(d, 4096 - 96), 96 - 8);
    CHECK_EQ(rd32(d, 4096 - 96 + 4), RING_TYPE_PADDING);
    CHECK_EQ(rd32(d, 0), 100);
    CHECK_EQ(rd32(d, 4), 5);
    uint64_t off;
    RUN(get_one(&f, 1, 100, 5, &off));
    CHECK_EQ(off, 8);
    ring_view_t v;
    CHECK_RC(ring_read(&f.c, &v, 1), 0); /* the padding is never handed out */
    ring_release(&f.c);
    CHECK_EQ(ring_used(&f.c), 0);
    ring_stats_t s;
    stats(&f.c, &s);
    CHECK_EQ(s.bytes_written, s.bytes_read);

    /* 8 bytes left: a PADDING record with an empty payload */
    RUN(advance_to(&f, 4096 - 8));
    CHECK_RC(put(&f, 2, 1, 6), RING_OK);
    CHECK_EQ(rd32(d, 4096 - 8), 0);
    CHECK_EQ(rd32(d, 4096 - 4), RING_TYPE_PADDING);
    CHECK_EQ(ring_used(&f.c), 8 + 16);
    uint32_t flat[6];
    CHECK_RC(ring_read_flat(&f.c, flat, 2), 1);
    CHECK_EQ(flat[0], 6);
    CHECK_EQ(flat[1], 1);
    CHECK_EQ(flat[2], 8);
    ring_release(&f.c);

    /* exact fit: the record ends at the end of the area, no padding, next one at 0 */
    RUN(advance_to(&f, 4096 - 112));
    CHECK_RC(put(&f, 3, 104, 7), RING_OK);
    CHECK_EQ(ring_used(&f.c), 112);
    CHECK_RC(put(&f, 4, 1, 7), RING_OK);
    CHECK_EQ(ring_used(&f.c), 112 + 16);
    RUN(get_one(&f, 3, 104, 7, &off));
    CHECK_EQ(off, 4096 - 104);
    RUN(get_one(&f, 4, 1, 7, &off));
    CHECK_EQ(off, 8);
    ring_release(&f.c);
    fx_close(&f);
}

static void t_wrap_needs_room_for_padding(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    /* fill to 96 bytes before the end, all unread: 4000 used */
    int n = 0;
    while ((fx_tail(&f) & 4095) != 4096 - 96 && n < 100) {
        uint64_t left = 4096 - 96 - (fx_tail(&f) & 4095);
        uint32_t len = left >= 200 ? 192 : (uint32_t)left - 8;
        CHECK_RC(put(&f, (uint64_t)n, len, 1), RING_OK);
        n++;
    }
    CHECK_EQ(ring_used(&f.c), 4000);
    /* release the first record (200 bytes): 296 free, but only 96 at the end and 200 at the
     * start: a 112-byte record needs 96 (padding) + 112 = 208 of the 296 -> fits */
    RUN(get_one(&f, 0, 192, 1, NULL));
    /* before release: 96 free, need 208 */
    CHECK_RC(put(&f, 1000, 100, 2), RING_AGAIN);
    ring_release(&f.c);
    CHECK_EQ(ring_free_space(&f.p), 296);
    /* a 288-byte record: free 296 >= 288 but 96 + 288 > 296 -> must be refused */
    CHECK_RC(put(&f, 1001, 280, 2), RING_AGAIN);
    CHECK_RC(put(&f, 1000, 100, 2), RING_OK);
    CHECK_EQ(ring_free_space(&f.p), 296 - 208);
    /* everything still intact, in order */
    CHECK_EQ(n, 20);
    for (int i = 1; i < n; i++) {
        ring_view_t v;
        CHECK_RC(ring_read(&f.c, &v, 1), 1);
        CHECK(payload_ok(ring_data(&f.c) + v.offset, (uint64_t)i, v.len));
    }
    uint64_t off;
    RUN(get_one(&f, 1000, 100, 2, &off));
    CHECK_EQ(off, 8);
    ring_release(&f.c);
    CHECK_EQ(ring_used(&f.c), 0);
    fx_close(&f);
}

static void t_read_without_release(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    for (int i = 0; i < 10; i++) CHECK_RC(put(&f, (uint64_t)i, 40, 1), RING_OK);
    uint64_t used = ring_used(&f.c);
    CHECK_EQ(used, 480);
    ring_view_t v[16];
    CHECK_RC(ring_read(&f.c, v, 3), 3);
    CHECK_RC(ring_read(&f.c, v + 3, 3), 3);
    for (int i = 0; i < 6; i++) CHECK(payload_ok(ring_data(&f.c) + v[i].offset, (uint64_t)i, 40));
    CHECK_EQ(ring_used(&f.c), 480);          /* nothing released yet */
    CHECK_EQ(fx_head(&f), 0);
    CHECK_EQ(ring_free_space(&f.p), 4096 - 480);
    /* the producer fills the rest: it must not overwrite the handed-out records */
    int extra = 0;
    while (extra < 1000 && put(&f, 100 + (uint64_t)extra, 40, 1) == RING_OK) extra++;
    CHECK_EQ(extra, (4096 - 480) / 48);
    for (int i = 0; i < 6; i++) CHECK(payload_ok(ring_data(&f.c) + v[i].offset, (uint64_t)i, 40));
    ring_release(&f.c);
    CHECK_EQ(ring_free_space(&f.p), 4096 - 480 - (uint64_t)extra * 48 + 6 * 48);
    for (int i = 6; i < 10; i++) RUN(get_one(&f, (uint64_t)i, 40, 1, NULL));
    for (int i = 0; i < extra; i++) RUN(get_one(&f, 100 + (uint64_t)i, 40, 1, NULL));
    CHECK_RC(ring_read(&f.c, v, 16), 0);
    ring_release(&f.c);
    CHECK_EQ(ring_used(&f.c), 0);
    fx_close(&f);
}

/* Re-attaching a consumer resumes at the released position: unreleased records come again. */
static void t_consumer_reattach(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    for (int i = 0; i < 6; i++) CHECK_RC(put(&f, (uint64_t)i, 24, 1), RING_OK);
    RUN(get_one(&f, 0, 24, 1, NULL));
    RUN(get_one(&f, 1, 24, 1, NULL));
    ring_release(&f.c);
    RUN(get_one(&f, 2, 24, 1, NULL)); /* handed out, never released */
    ring_t c2;
    CHECK_RC(ring_attach(&c2, f.mem, f.size, f.gen), RING_OK);
    f.c = c2;
    for (int i = 2; i < 6; i++) RUN(get_one(&f, (uint64_t)i, 24, 1, NULL));
    ring_release(&f.c);
    CHECK_EQ(ring_used(&f.c), 0);
    fx_close(&f);
}

static void t_read_flat_matches_read(void) {
    fx_t f;
    RUN(fx_open(&f, 8192));
    uint8_t *copy = aligned_alloc(128, (f.size + 127) & ~(size_t)127);
    if (!copy) FAILF("out of memory");
    uint64_t seq = 0, rng = 12345;
    int compared = 0;
    for (int round = 0; round < 400 && !g_failed_now; round++) {
        /* write a random batch */
        for (;;) {
            rng = mix64(rng + 1);
            uint32_t len = (rng & 3) == 0 ? (uint32_t)(rng >> 8) % (f.p.max_record + 1) : (uint32_t)(rng >> 8) % 64;
            if (put(&f, seq, len, (uint32_t)(rng >> 40)) != RING_OK) break;
            seq++;
            if ((rng >> 20) % 8 == 0) break;
        }
        /* consume the same state twice: via ring_read here, via ring_read_flat in a copy */
        memcpy(copy, f.mem, f.size);
        ring_t c2;
        int rc = ring_attach(&c2, copy, f.size, f.gen);
        if (rc != RING_OK) {
            free(copy);
            FAILF("attach copy: %s", ring_strerror(rc));
        }
        for (int guard = 0;; guard++) {
            if (guard > 10000) {
                free(copy);
                FAILF("the reader never runs dry");
            }
            rng = mix64(rng + 7);
            int max = 1 + (int)(rng % 9);
            ring_view_t v[9];
            uint32_t flat[27];
            int a = ring_read(&f.c, v, max);
            int b = ring_read_flat(&c2, flat, max);
            if (a != b) {
                free(copy);
                FAILF("ring_read returned %d, ring_read_flat %d", a, b);
            }
            for (int i = 0; i < a; i++) {
                if (v[i].type != flat[3 * i] || v[i].len != flat[3 * i + 1] ||
                    v[i].offset != flat[3 * i + 2] ||
                    memcmp(ring_data(&f.c) + v[i].offset, ring_data(&c2) + flat[3 * i + 2], v[i].len)) {
                    free(copy);
                    FAILF("view %d differs between ring_read and ring_read_flat", i);
                }
                compared++;
            }
            if (a <= 0) break;
        }
        ring_release(&f.c);
        ring_release(&c2);
        ring_stats_t s1, s2;
        stats(&f.c, &s1);
        stats(&c2, &s2);
        if (s1.records_read != s2.records_read || s1.bytes_read != s2.bytes_read) {
            free(copy);
            FAILF("stats differ between ring_read and ring_read_flat");
        }
    }
    free(copy);
    CHECK(compared > 1000);
    fx_close(&f);
}

/* ring_read_gather hands out the same records as ring_read, copied back to back: same bytes,
 * same order, other types skipped, a record that does not fit in the buffer left unread. */
static void t_read_gather_matches_read(void) {
    fx_t f;
    RUN(fx_open(&f, 8192));
    uint8_t *copy = aligned_alloc(128, (f.size + 127) & ~(size_t)127);
    static uint8_t gbuf[8192];
    uint32_t ends[64];
    if (!copy) FAILF("out of memory");
    uint64_t seq = 0, rng = 4242;
    int compared = 0, too_big = 0, skipped = 0;
    for (int round = 0; round < 400 && !g_failed_now; round++) {
        for (;;) { /* a random batch, types 1 and 2 mixed */
            rng = mix64(rng + 1);
            uint32_t len = (rng & 3) == 0 ? (uint32_t)(rng >> 8) % (f.p.max_record + 1) : (uint32_t)(rng >> 8) % 64;
            if (put(&f, seq, len, 1 + (uint32_t)((rng >> 40) & 1)) != RING_OK) break;
            seq++;
            if ((rng >> 20) % 8 == 0) break;
        }
        /* the same state twice: ring_read here, ring_read_gather of type 1 in a copy */
        memcpy(copy, f.mem, f.size);
        ring_t c2;
        int rc = ring_attach(&c2, copy, f.size, f.gen);
        if (rc != RING_OK) {
            free(copy);
            FAILF("attach copy: %s", ring_strerror(rc));
        }
        ring_view_t v[1];
        int pending = 0; /* ring_read record (type 1) not yet matched */
        for (int guard = 0;; guard++) {
            if (guard > 10000) {
                free(copy);
                FAILF("the gathering reader never runs dry");
            }
            rng = mix64(rng + 7);
            int max = 1 + (int)(rng % 9);
            uint32_t cap = (rng >> 8) & 1 ? sizeof gbuf : (uint32_t)((rng >> 16) % 700);
            int n = ring_read_gather(&c2, 1, gbuf, cap, ends, max);
            if (n < 0 || n > max) {
                free(copy);
                FAILF("ring_read_gather returned %d (max %d)", n, max);
            }
            uint32_t at = 0;
            for (int i = 0; i < n; i++) {
                if (!pending) { /* the next type-1 record by ring_read */
                    for (;;) {
                        if (ring_read(&f.c, v, 1) != 1) {
                            free(copy);
                            FAILF("gather handed out a record ring_read does not see");
                        }
                        if (v[0].type == 1) break;
                        skipped++;
                    }
                }
                pending = 0;
                if (ends[i] < at || ends[i] - at != v[0].len || ends[i] > cap ||
                    memcmp(gbuf + at, ring_data(&f.c) + v[0].offset, v[0].len)) {
                    free(copy);
                    FAILF("gathered record %d differs from ring_read's", i);
                }
                at = ends[i];
                compared++;
            }
            if (n == 0) {
                /* empty, or the next type-1 record is larger than what cap allows */
                int left;
                while (!pending && (left = ring_read(&f.c, v, 1)) == 1 && v[0].type != 1) skipped++;
                if (!pending && left == 1) pending = 1;
                if (!pending) break;
                if (v[0].len <= cap) {
                    free(copy);
                    FAILF("gather returned 0 with a %u-byte record pending and cap %u", v[0].len, cap);
                }
                ring_view_t w;
                if (ring_read(&c2, &w, 1) != 1 || w.type != 1 || w.len != v[0].len) {
                    free(copy);
                    FAILF("the record gather left unread is not the next for ring_read");
                }
                pending = 0;
                too_big++;
            }
        }
        ring_release(&f.c);
        ring_release(&c2);
        ring_stats_t s1, s2;
        stats(&f.c, &s1);
        stats(&c2, &s2);
        if (s1.records_read != s2.records_read || s1.bytes_read != s2.bytes_read ||
            fx_head(&f) != rd64(copy, OFF_HEAD)) {
            free(copy);
            FAILF("stats or head differ between ring_read and ring_read_gather");
        }
    }
    free(copy);
    CHECK(compared > 1000);
    CHECK(too_big > 10);
    CHECK(skipped > 100);
    fx_close(&f);
}

static void t_empty_payload(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    CHECK_RC(ring_try_write(&f.p, 5, NULL, 0), RING_OK); /* no payload: NULL is fine */
    RUN(get_one(&f, 42, 0, 5, NULL));
    ring_release(&f.c);
    fx_close(&f);
}

static void t_write_many(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    uint8_t buf[4096];
    uint32_t lens[8] = {0, 5, 16, 100, 3, 300, 7, 64};
    size_t off = 0;
    for (int i = 0; i < 8; i++) {
        fill(buf + off, 200 + (uint64_t)i, lens[i]);
        off += lens[i];
    }
    CHECK_RC(ring_try_write_many(&f.p, 9, buf, lens, 0), 0);
    CHECK_RC(ring_try_write_many(&f.p, RING_TYPE_PADDING, buf, lens, 8), RING_EINVAL);
    CHECK_RC(ring_try_write_many(&f.p, 9, buf, lens, 8), 8);
    ring_stats_t s;
    stats(&f.p, &s);
    CHECK_EQ(s.records_written, 8);
    CHECK_EQ(s.bytes_written, off);
    for (int i = 0; i < 8; i++) RUN(get_one(&f, 200 + (uint64_t)i, lens[i], 9, NULL));
    ring_release(&f.c);
    /* a too-big record after the first: the ones before it are written */
    uint32_t lens2[3] = {5, f.p.max_record + 1, 5};
    fill(buf, 300, 5);
    CHECK_RC(ring_try_write_many(&f.p, 9, buf, lens2, 3), 1);
    RUN(get_one(&f, 300, 5, 9, NULL));
    ring_release(&f.c);
    /* partial: room for exactly 3 of 5 records of 512 bytes */
    RUN(advance_to(&f, 0));
    for (int i = 0; i < 5; i++) CHECK_RC(put(&f, 400 + (uint64_t)i, 504, 1), RING_OK);
    uint32_t lens3[5] = {504, 504, 504, 504, 504};
    static uint8_t big[5 * 504];
    for (int i = 0; i < 5; i++) fill(big + 504 * i, 500 + (uint64_t)i, 504);
    CHECK_RC(ring_try_write_many(&f.p, 8, big, lens3, 5), 3);
    CHECK_RC(ring_try_write_many(&f.p, 8, big + 3 * 504, lens3, 2), RING_AGAIN);
    CHECK_EQ(ring_free_space(&f.p), 0);
    for (int i = 0; i < 5; i++) RUN(get_one(&f, 400 + (uint64_t)i, 504, 1, NULL));
    ring_release(&f.c);
    CHECK_RC(ring_try_write_many(&f.p, 8, big + 3 * 504, lens3, 2), 2);
    for (int i = 0; i < 5; i++) RUN(get_one(&f, 500 + (uint64_t)i, 504, 8, NULL));
    ring_release(&f.c);
    CHECK_EQ(ring_used(&f.c), 0);
    /* write_many across the wrap point inserts one padding */
    RUN(advance_to(&f, 4096 - 40));
    uint32_t lens4[3] = {16, 16, 16};
    fill(buf, 600, 16);
    fill(buf + 16, 601, 16);
    fill(buf + 32, 602, 16);
    CHECK_RC(ring_try_write_many(&f.p, 3, buf, lens4, 3), 3);
    CHECK_EQ(ring_used(&f.c), 24 + 16 + 24 + 24);
    uint64_t o;
    RUN(get_one(&f, 600, 16, 3, &o));
    CHECK_EQ(o, 4096 - 40 + 8);
    RUN(get_one(&f, 601, 16, 3, &o));
    CHECK_EQ(o, 8);
    RUN(get_one(&f, 602, 16, 3, &o));
    CHECK_EQ(o, 32);
    ring_release(&f.c);
    fx_close(&f);
}

static void t_padding_type_refused(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    uint8_t b[8] = {0};
    uint32_t l[1] = {8};
    CHECK_RC(ring_try_write(&f.p, RING_TYPE_PADDING, b, 8), RING_EINVAL);
    CHECK_RC(ring_try_write_many(&f.p, RING_TYPE_PADDING, b, l, 1), RING_EINVAL);
    CHECK_EQ(ring_used(&f.c), 0);
    ring_stats_t s;
    stats(&f.p, &s);
    CHECK_EQ(s.records_written, 0);
    fx_close(&f);
}

static void t_attach_errors(void) {
    const uint64_t cap = 4096;
    size_t sz = ring_region_size(cap);
    uint8_t *m = aligned_alloc(128, sz + 128);
    uint8_t *good = malloc(sz);
    if (!m || !good) FAILF("out of memory");
    ring_t r;
    memset(m, 0, sz);
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_EMAGIC);
    memset(m, 0xA5, sz);
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_EMAGIC);
    CHECK_RC(ring_init(&r, m, sz, cap, 21), RING_OK);
    memcpy(good, m, sz);
#define RESET() memcpy(m, good, sz)
    CHECK_RC(ring_attach(&r, m, sz, 21), RING_OK);
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_OK);
    CHECK_RC(ring_attach(&r, m, sz, 22), RING_EGENERATION);
    CHECK_RC(ring_attach(&r, m, RING_HEADER_SIZE - 1, 0), RING_EINVAL);
    CHECK_RC(ring_attach(&r, NULL, sz, 0), RING_EINVAL);
    CHECK_RC(ring_attach(&r, m, sz - 1, 0), RING_ECAPACITY); /* data area does not fit */
    m[OFF_MAGIC + 7] ^= 1;
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_EMAGIC);
    RESET();
    wr32(m, OFF_VERSION, RING_VERSION + 1);
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_EVERSION);
    RESET();
    wr32(m, OFF_HEADER_SIZE, 4096);
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_EVERSION);
    RESET();
    wr64(m, OFF_CAPACITY, 5000);
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_ECAPACITY);
    RESET();
    wr64(m, OFF_CAPACITY, 8192); /* bigger than the region */
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_ECAPACITY);
    RESET();
    wr64(m, OFF_CAPACITY, 0);
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_ECAPACITY);
    RESET();
    wr32(m, OFF_MAX_RECORD, ring_max_record_for(cap) + 8);
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_ECAPACITY);
    RESET();
    wr64(m, OFF_GENERATION, 99);
    CHECK_RC(ring_attach(&r, m, sz, 21), RING_EGENERATION);
    CHECK_RC(ring_attach(&r, m, sz, 99), RING_OK);
    RESET();
    wr64(m, OFF_TAIL, cap + 8); /* tail - head > capacity */
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_ECORRUPT);
    wr64(m, OFF_TAIL, cap);     /* exactly full is fine */
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_OK);
    wr64(m, OFF_TAIL, 64);
    wr64(m, OFF_HEAD, 128);     /* head ahead of tail */
    CHECK_RC(ring_attach(&r, m, sz, 0), RING_ECORRUPT);
    RESET();
    CHECK_RC(ring_attach(&r, m + 4, sz, 0), RING_EINVAL);
#undef RESET
    free(m);
    free(good);
}

static void t_layout_matches_docs(void) {
    fx_t f;
    RUN(fx_open(&f, 8192));
    uint8_t *m = f.mem;
    CHECK_EQ(rd64(m, OFF_MAGIC), RING_MAGIC);
    CHECK(memcmp(m, "SCRRING1", 8) == 0);
    CHECK_EQ(rd32(m, OFF_VERSION), RING_VERSION);
    CHECK_EQ(rd32(m, OFF_HEADER_SIZE), RING_HEADER_SIZE);
    CHECK_EQ(rd64(m, OFF_CAPACITY), 8192);
    CHECK_EQ(rd32(m, OFF_MAX_RECORD), ring_max_record_for(8192));
    CHECK_EQ(rd64(m, OFF_GENERATION), 7);
    /* the stale 0xA5 bytes of the header were cleared */
    for (size_t i = 40; i < RING_HEADER_SIZE; i++)
        if (m[i] != 0) FAILF("header byte %zu not zeroed by ring_init", i);
    CHECK_RC(put(&f, 1, 5, 0x01020304), RING_OK);
    CHECK_EQ(rd64(m, OFF_TAIL), 16);
    CHECK_EQ(rd32(m, RING_HEADER_SIZE), 5);
    CHECK_EQ(rd32(m, RING_HEADER_SIZE + 4), 0x01020304);
    CHECK(payload_ok(m + RING_HEADER_SIZE + 8, 1, 5));
    CHECK_EQ(rd64(m, OFF_PSTATS), 1);
    CHECK_EQ(rd64(m, OFF_PSTATS + 8), 5);
    CHECK_EQ(rd64(m, OFF_HEAD), 0);
    RUN(get_one(&f, 1, 5, 0x01020304, NULL));
    CHECK_EQ(rd64(m, OFF_HEAD), 0); /* handed out, not released */
    ring_release(&f.c);
    CHECK_EQ(rd64(m, OFF_HEAD), 16);
    CHECK_EQ(rd64(m, OFF_CSTATS), 1);
    CHECK_EQ(rd64(m, OFF_CSTATS + 8), 5);
    CHECK_RC(ring_consumer_prepare_sleep(&f.c), 1);
    CHECK_EQ(rd32(m, OFF_SLEEPING), 1);
    CHECK_EQ(rd64(m, OFF_CSTATS + 24), 1);
    CHECK_RC(ring_producer_must_wake(&f.p), 1);
    CHECK_EQ(rd32(m, OFF_SLEEPING), 0);
    CHECK_EQ(rd64(m, OFF_PSTATS + 24), 1); /* consumer_wakeups */
    /* producer waiting: fill, then announce */
    for (int i = 0; i < 100 && put(&f, 2, 1000, 1) == RING_OK; i++) {}
    CHECK_EQ(rd64(m, OFF_PSTATS + 16), 1); /* full_events */
    CHECK_RC(ring_producer_prepare_wait(&f.p, 1016), 1);
    CHECK_EQ(rd32(m, OFF_WAITING), 1);
    CHECK_EQ(rd32(m, OFF_NEED), 1016);
    ring_heartbeat_producer(&f.p, 0x1122334455667788ull, 4242);
    ring_heartbeat_consumer(&f.c, 0x8877665544332211ull, 4343);
    CHECK_EQ(rd64(m, OFF_PHB), 0x1122334455667788ll);
    CHECK_EQ(rd32(m, OFF_PHB + 8), 4242);
    CHECK_EQ(rd64(m, OFF_CHB), (long long)0x8877665544332211ull);
    CHECK_EQ(rd32(m, OFF_CHB + 8), 4343);
    fx_close(&f);
}

static void t_check_after_reinit(void) {
    fx_t f;
    RUN(fx_open(&f, 8192));
    for (int i = 0; i < 5; i++) CHECK_RC(put(&f, (uint64_t)i, 30, 1), RING_OK);
    CHECK_RC(ring_check(&f.p, 7), RING_OK);
    CHECK_RC(ring_check(&f.c, 7), RING_OK);
    CHECK_RC(ring_check(&f.c, 0), RING_OK);
    CHECK_RC(ring_check(&f.c, 8), RING_EGENERATION);
    /* the supervisor re-creates the ring with a new generation */
    ring_t n;
    CHECK_RC(ring_init(&n, f.mem, f.size, 8192, 8), RING_OK);
    CHECK_RC(ring_check(&f.p, 7), RING_EGENERATION);
    CHECK_RC(ring_check(&f.c, 7), RING_EGENERATION);
    CHECK_RC(ring_check(&f.c, 8), RING_OK);
    CHECK_RC(ring_attach(&n, f.mem, f.size, 7), RING_EGENERATION);
    CHECK_RC(ring_attach(&n, f.mem, f.size, 8), RING_OK);
    CHECK_EQ(ring_used(&n), 0); /* the new ring starts empty */
    ring_view_t v;
    CHECK_RC(ring_read(&n, &v, 1), 0);
    /* re-created with another capacity */
    CHECK_RC(ring_init(&n, f.mem, f.size, 4096, 9), RING_OK);
    CHECK_RC(ring_check(&f.c, 0), RING_ECAPACITY);
    CHECK_RC(ring_check(&f.c, 9), RING_ECAPACITY);
    /* destroyed */
    memset(f.mem, 0, 8);
    CHECK_RC(ring_check(&f.c, 0), RING_EMAGIC);
    CHECK_RC(ring_check(&n, 9), RING_EMAGIC);
    fx_close(&f);
}

static void t_stats_add_up(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    uint64_t recs = 0, bytes = 0, full = 0, rrecs = 0, rbytes = 0;
    uint64_t seq = 0, rng = 99;
    for (int round = 0; round < 300; round++) {
        for (int guard = 0;; guard++) {
            if (guard > 10000) FAILF("the ring never fills up");
            rng = mix64(rng + 3);
            uint32_t len = (uint32_t)(rng % 700);
            int rc;
            switch ((rng >> 32) % 2) {
            case 0: rc = put(&f, seq, len, 1); break;
            default: {
                static uint8_t b[1400];
                uint32_t l2[2] = {len / 2, len - len / 2};
                rc = ring_try_write_many(&f.p, 1, b, l2, 2);
                if (rc == 2) rc = RING_OK, recs++, bytes += l2[0], len = l2[1];
                else if (rc == 1) { recs++, bytes += l2[0]; rc = RING_AGAIN; }
                break;
            }
            }
            if (rc == RING_ETOOBIG) continue;
            if (rc == RING_AGAIN) {
                full++;
                break;
            }
            if (rc != RING_OK) FAILF("write: %s", ring_strerror(rc));
            recs++;
            bytes += len;
            seq++;
        }
        ring_view_t v[8];
        int n = ring_read(&f.c, v, 1 + (int)(rng % 8));
        if (n < 0) FAILF("read: %s", ring_strerror(n));
        for (int i = 0; i < n; i++) rrecs++, rbytes += v[i].len;
        ring_release(&f.c);
    }
    ring_stats_t s;
    stats(&f.p, &s);
    CHECK_EQ(s.records_written, recs);
    CHECK_EQ(s.bytes_written, bytes);
    CHECK_EQ(s.full_events, full);
    CHECK_EQ(s.records_read, rrecs);
    CHECK_EQ(s.bytes_read, rbytes);
    CHECK_EQ(s.used, ring_used(&f.c));
    CHECK(s.used <= 4096);
    CHECK(full > 100);
    /* drain: everything written was read */
    ring_view_t v[64];
    int n, guard = 0;
    while ((n = ring_read(&f.c, v, 64)) > 0 && ++guard < 10000)
        for (int i = 0; i < n; i++) rrecs++, rbytes += v[i].len;
    CHECK_EQ(n, 0);
    ring_release(&f.c);
    stats(&f.c, &s);
    CHECK_EQ(s.records_read, recs);
    CHECK_EQ(s.bytes_read, bytes);
    CHECK_EQ(s.used, 0);
    fx_close(&f);
}

static void t_consumer_doorbell_protocol(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    ring_stats_t s;
    CHECK_RC(ring_consumer_prepare_sleep(&f.c), 1); /* empty: may sleep */
    stats(&f.c, &s);
    CHECK_EQ(s.consumer_sleeping, 1);
    CHECK_EQ(s.consumer_sleeps, 1);
    CHECK_RC(put(&f, 1, 8, 1), RING_OK);
    CHECK_RC(ring_producer_must_wake(&f.p), 1);   /* it slept: ring */
    CHECK_RC(ring_producer_must_wake(&f.p), 0);   /* only once */
    stats(&f.c, &s);
    CHECK_EQ(s.consumer_sleeping, 0);
    CHECK_EQ(s.consumer_wakeups, 1);
    CHECK_RC(ring_consumer_prepare_sleep(&f.c), 0); /* data present: flag withdrawn */
    stats(&f.c, &s);
    CHECK_EQ(s.consumer_sleeping, 0);
    CHECK_EQ(s.consumer_sleeps, 1);
    CHECK_RC(put(&f, 2, 8, 1), RING_OK);
    CHECK_RC(ring_producer_must_wake(&f.p), 0); /* awake consumer: no syscall */
    /* handed out but not released: the consumer's view is "empty", it may sleep */
    ring_view_t v[4];
    CHECK_RC(ring_read(&f.c, v, 4), 2);
    CHECK_RC(ring_consumer_prepare_sleep(&f.c), 1);
    CHECK_RC(put(&f, 3, 8, 1), RING_OK);
    CHECK_RC(ring_producer_must_wake(&f.p), 1);
    stats(&f.c, &s);
    CHECK_EQ(s.consumer_sleeping, 0);
    CHECK_EQ(s.consumer_wakeups, 2);
    ring_release(&f.c);
    fx_close(&f);
}

static void t_producer_doorbell_protocol(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    uint32_t M = f.p.max_record;
    ring_stats_t s;
    CHECK_RC(ring_producer_prepare_wait(&f.p, 512), 0); /* room already */
    stats(&f.p, &s);
    CHECK_EQ(s.producer_waiting, 0);
    for (int i = 0; i < 8; i++) CHECK_RC(put(&f, (uint64_t)i, M, 1), RING_OK);
    CHECK_RC(put(&f, 8, M, 1), RING_AGAIN);
    CHECK_RC(ring_producer_prepare_wait(&f.p, 512), 1);
    stats(&f.p, &s);
    CHECK_EQ(s.producer_waiting, 1);
    CHECK_RC(ring_consumer_must_wake(&f.c), 0); /* nothing released yet */
    /* hysteresis: wake only once max(need, capacity/4) = 1024 bytes are free */
    RUN(get_one(&f, 0, M, 1, NULL));
    ring_release(&f.c);
    CHECK_RC(ring_consumer_must_wake(&f.c), 0); /* 512 free */
    RUN(get_one(&f, 1, M, 1, NULL));
    ring_release(&f.c);
    CHECK_RC(ring_consumer_must_wake(&f.c), 1); /* 1024 free */
    CHECK_RC(ring_consumer_must_wake(&f.c), 0); /* only once */
    stats(&f.p, &s);
    CHECK_EQ(s.producer_waiting, 0);
    CHECK_EQ(s.producer_wakeups, 1);
    CHECK_RC(put(&f, 8, M, 1), RING_OK);
    CHECK_RC(put(&f, 9, M, 1), RING_OK);
    /* a need above capacity/4 raises the threshold */
    CHECK_RC(ring_producer_prepare_wait(&f.p, 1536), 1);
    for (int i = 2; i < 4; i++) RUN(get_one(&f, (uint64_t)i, M, 1, NULL));
    ring_release(&f.c);
    CHECK_RC(ring_consumer_must_wake(&f.c), 0); /* 1024 < 1536 */
    RUN(get_one(&f, 4, M, 1, NULL));
    ring_release(&f.c);
    CHECK_RC(ring_consumer_must_wake(&f.c), 1); /* 1536 */
    /* a need above capacity is clamped: wake once the ring is empty */
    CHECK_RC(ring_producer_prepare_wait(&f.p, 1u << 20), 1);
    int k = 5;
    while (k < 10) {
        RUN(get_one(&f, (uint64_t)k, M, 1, NULL));
        k++;
        ring_release(&f.c);
        if (k < 10) CHECK_RC(ring_consumer_must_wake(&f.c), 0);
    }
    CHECK_RC(ring_consumer_must_wake(&f.c), 1);
    stats(&f.p, &s);
    CHECK_EQ(s.producer_wakeups, 3);
    fx_close(&f);
}

static void t_positions_cross_2_pow_64(void) {
    /* Positions are u64 counters; make them wrap around 2^64 while streaming. */
    fx_t f;
    RUN(fx_open(&f, 4096));
    uint64_t start = (uint64_t)0 - 3 * 4096 - 8 * 37;
    wr64(f.mem, OFF_TAIL, start);
    wr64(f.mem, OFF_HEAD, start);
    CHECK_RC(ring_attach(&f.p, f.mem, f.size, f.gen), RING_OK);
    CHECK_RC(ring_attach(&f.c, f.mem, f.size, f.gen), RING_OK);
    uint64_t wseq = 0, rseq = 0, rng = 5;
    uint32_t lens[4096];
    while (rseq < 2000) {
        for (;;) {
            rng = mix64(rng + 1);
            uint32_t len = (uint32_t)(rng % (f.p.max_record + 1));
            if (wseq >= 2000 || put(&f, wseq, len, 3) != RING_OK) break;
            lens[wseq++] = len;
        }
        ring_view_t v[16];
        int n = ring_read(&f.c, v, 16);
        if (n <= 0) FAILF("read returned %d at seq %" PRIu64, n, rseq);
        for (int i = 0; i < n; i++, rseq++) {
            if (v[i].len != lens[rseq] || !payload_ok(ring_data(&f.c) + v[i].offset, rseq, v[i].len))
                FAILF("record %" PRIu64 " wrong after the 2^64 wrap", rseq);
        }
        ring_release(&f.c);
        CHECK(ring_used(&f.c) <= 4096);
        CHECK(ring_free_space(&f.p) <= 4096);
    }
    CHECK(fx_tail(&f) < start); /* it did wrap */
    CHECK_EQ(ring_used(&f.c), 0);
    fx_close(&f);
}

static void t_strerror_and_clock(void) {
    const int codes[] = {RING_OK, RING_AGAIN, RING_ETOOBIG, RING_EINVAL, RING_EMAGIC,
                         RING_EVERSION, RING_EGENERATION, RING_ECAPACITY, RING_ECORRUPT};
    const int n = (int)(sizeof codes / sizeof codes[0]);
    for (int i = 0; i < n; i++) {
        const char *s = ring_strerror(codes[i]);
        CHECK(s && *s);
        for (int j = 0; j < i; j++) CHECK(strcmp(s, ring_strerror(codes[j])) != 0);
    }
    CHECK(ring_strerror(-1000) && *ring_strerror(-1000));
    CHECK(ring_strerror(12345) != NULL);
    uint64_t a = ring_now_ns();
    usleep(1000);
    uint64_t b = ring_now_ns();
    CHECK(a > 0 && b >= a + 900000 && b < a + 10000000000ull);
}

/* --- regressions: ring.c bugs this suite found (all fixed) -------------------------------- */

/* ring_attach accepted positions that are not multiples of 8.  A producer attached to such a
 * region computed to_end < 8 at the wrap and wrote the 8-byte PADDING header past the end of
 * the data area (heap/mapping overflow; ASan: ring_fuzz --repro-unaligned). */
static void kb_attach_rejects_unaligned_positions(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    uint64_t pos = 4096 * 3 + 4093;
    wr64(f.mem, OFF_TAIL, pos);
    wr64(f.mem, OFF_HEAD, pos);
    ring_t p;
    CHECK_RC(ring_attach(&p, f.mem, f.size, 0), RING_ECORRUPT);
    fx_close(&f);
}

/* reserve() refused a consumer position outside [write_pos - capacity, write_pos], but
 * ring_free_space() and ring_producer_prepare_wait() copied the shared head into head_cache
 * unchecked: free space then exceeded the capacity and the next write trusted the bogus cache. */
static void kb_producer_rejects_impossible_head(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    CHECK_RC(put(&f, 1, 100, 1), RING_OK);
    wr64(f.mem, OFF_HEAD, fx_tail(&f) + 64); /* consumer claims to be ahead of the producer */
    uint64_t free_space = ring_free_space(&f.p);
    CHECK(free_space <= 4096);
    CHECK_RC(put(&f, 2, 100, 1), RING_ECORRUPT);
    fx_close(&f);
}

/* next_record() validated a newly loaded tail against the consumer's read position, not
 * against the released head: a consumer still holding views could be handed records of a tail
 * more than `capacity` ahead of what it released (positions that cannot happen), so the views
 * it held overlapped; ECORRUPT is expected. */
static void kb_reader_checks_tail_against_released_head(void) {
    fx_t f;
    RUN(fx_open(&f, 4096));
    uint32_t M = f.p.max_record;
    for (int i = 0; i < 8; i++) CHECK_RC(put(&f, (uint64_t)i, M, 1), RING_OK);
    ring_view_t v[16];
    CHECK_RC(ring_read(&f.c, v, 16), 8); /* the whole ring handed out, nothing released */
    /* a broken producer publishes another lap over the bytes the consumer still holds */
    wr64(f.mem, OFF_TAIL, fx_tail(&f) + 4096);
    int n = ring_read(&f.c, v + 8, 8);
    if (n > 0) FAILF("ring_read handed out %d more records: %d outstanding in a ring of 8", n, 8 + n);
    CHECK_RC(n, RING_ECORRUPT);
    fx_close(&f);
}

/* ring_init/ring_attach accepted any 8-byte aligned region, but struct ring_shared had
 * _Alignas(128) members, so the type needed 128-byte alignment: every access through it on a
 * region only 8/16/64-aligned was undefined behaviour (UBSan: "member access within
 * misaligned address ... for type 'struct ring_shared', which requires 128 byte alignment").
 * Passes when such a region is refused with RING_EINVAL, or works with no UB (only the UBSan
 * build can tell the latter). */
static void kb_header_alignment(void) {
    size_t sz = ring_region_size(4096);
    uint8_t *m = aligned_alloc(128, sz + 128);
    if (!m) FAILF("out of memory");
    uint8_t *region = m + 8; /* 8-byte aligned, as ring_init requires */
    ring_t p, c;
    int rc = ring_init(&p, region, sz, 4096, 1);
    if (rc == RING_OK) {
        rc = ring_attach(&c, region, sz, 1);
        if (rc == RING_OK) {
            uint8_t b[16] = {0};
            ring_view_t v;
            if (ring_try_write(&p, 1, b, 16) != RING_OK || ring_read(&c, &v, 1) != 1) rc = -100;
            ring_release(&c);
        }
    }
    free(m);
    if (rc != RING_OK && rc != RING_EINVAL) FAILF("64-aligned region: rc %d", rc);
}

/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    void (*fn)(void);
    int regression;
} test_t;

static const test_t TESTS[] = {
    {"init_rejects_bad_args", t_init_rejects_bad_args, 0},
    {"large_capacity", t_large_capacity, 0},
    {"region_size_and_max_record", t_region_size_and_max_record, 0},
    {"fresh_ring_is_empty", t_fresh_ring_is_empty, 0},
    {"roundtrip", t_roundtrip, 0},
    {"max_record_and_etoobig", t_max_record_and_etoobig, 0},
    {"max_record_fits_empty_ring_at_every_index", t_max_record_fits_empty_ring_at_every_index, 0},
    {"exactly_full", t_exactly_full, 0},
    {"wrap_with_padding", t_wrap_with_padding, 0},
    {"wrap_needs_room_for_padding", t_wrap_needs_room_for_padding, 0},
    {"read_without_release", t_read_without_release, 0},
    {"consumer_reattach", t_consumer_reattach, 0},
    {"read_flat_matches_read", t_read_flat_matches_read, 0},
    {"read_gather_matches_read", t_read_gather_matches_read, 0},
    {"empty_payload", t_empty_payload, 0},
    {"write_many", t_write_many, 0},
    {"padding_type_refused", t_padding_type_refused, 0},
    {"attach_errors", t_attach_errors, 0},
    {"layout_matches_docs", t_layout_matches_docs, 0},
    {"check_after_reinit", t_check_after_reinit, 0},
    {"stats_add_up", t_stats_add_up, 0},
    {"consumer_doorbell_protocol", t_consumer_doorbell_protocol, 0},
    {"producer_doorbell_protocol", t_producer_doorbell_protocol, 0},
    {"positions_cross_2_pow_64", t_positions_cross_2_pow_64, 0},
    {"strerror_and_clock", t_strerror_and_clock, 0},
    {"regression_attach_rejects_unaligned_positions", kb_attach_rejects_unaligned_positions, 1},
    {"regression_producer_rejects_impossible_head", kb_producer_rejects_impossible_head, 1},
    {"regression_reader_checks_tail_against_released_head", kb_reader_checks_tail_against_released_head, 1},
    {"regression_header_alignment", kb_header_alignment, 1},
};

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "ring_unit: TIMEOUT (a test hangs): ";
    if (write(2, msg, sizeof msg - 1) < 0 || write(2, g_test, strlen(g_test)) < 0 || write(2, "\n", 1) < 0) {}
    _exit(3);
}

int main(int argc, char **argv) {
    signal(SIGALRM, on_alarm);
    alarm(120);
    const char *filter = NULL;
    int only_regressions = 0, list = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-k") && i + 1 < argc) filter = argv[++i];
        else if (!strcmp(argv[i], "--regressions") || !strcmp(argv[i], "--known-bugs"))
            only_regressions = 1;
        else if (!strcmp(argv[i], "--list")) list = 1;
        else {
            fprintf(stderr, "usage: ring_unit [-k SUBSTRING] [--regressions] [--list]\n");
            return 2;
        }
    }
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof TESTS / sizeof TESTS[0]; i++) {
        const test_t *t = &TESTS[i];
        if (only_regressions && !t->regression) continue;
        if (filter && !strstr(t->name, filter)) continue;
        if (list) {
            printf("%s\n", t->name);
            continue;
        }
        g_test = t->name;
        g_failed_now = 0;
        t->fn();
        if (g_failed_now) failed++;
        else passed++;
        printf("%s %s\n", g_failed_now ? "FAIL" : "ok  ", t->name);
    }
    if (list) return 0;
    printf("ring_unit: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
