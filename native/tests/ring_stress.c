/*
 * ring_stress -- end-to-end proof of the sidecar SPSC ring (native/ring.c), pure C.
 *
 * Two rings in one MAP_SHARED|MAP_ANONYMOUS mapping: A carries records parent -> child, B child
 * -> parent.  The two sides run in two processes (fork, the default) or in two threads
 * (--threads, or a build with -DRING_STRESS_THREADS) so that ThreadSanitizer sees both sides.
 * Each side is producer on one ring and consumer on the other, driven by one event loop, with
 * real eventfd doorbells and the library's sleep/wake protocol:
 *
 *   consumer: ring empty -> ring_consumer_prepare_sleep -> poll(data eventfd)
 *   producer: after publishing -> ring_producer_must_wake -> write(data eventfd)
 *   producer: ring full -> ring_producer_prepare_wait(need) -> poll(space eventfd)
 *   consumer: after ring_release -> ring_consumer_must_wake -> write(space eventfd)
 *
 * poll() is called with an infinite timeout: a lost wake-up is a hang, and a watchdog (alarm,
 * every second) fails the program with a diagnostic dump once no side made progress for
 * --stall seconds.  --drop-doorbells deliberately never rings a doorbell, to prove that the
 * watchdog catches a lost wake-up (the program must then fail with "WATCHDOG").
 *
 * Records.  Everything about record `seq` of a direction is a pure function of (direction
 * seed, seq), so the reader can recompute what it must receive:
 *   - its length (skewed small, but also exactly max_record, near max, capacity/16.. sizes that
 *     divide the data area so records end exactly at its end, and the tiny 0/1/7/8/9.. sizes);
 *   - its payload: PRNG bytes; when len >= 16 the first 8 bytes are the seq and the next 8 a
 *     64-bit hash of the rest (seeded by seq); shorter payloads are compared byte for byte;
 *   - how it is written: the stream is cut into deterministic groups, each written with
 *     ring_try_write or ring_try_write_many (1..32 records, partial writes resumed); each group
 *     has its own record type (incl. 0 and 0xFFFFFFFE).
 * The reader uses ring_read and ring_read_flat with random batch sizes, sometimes reads several
 * batches before one ring_release, and checks: seq order (no loss, no duplicate, no extra),
 * type, length, payload, and the offset against its own model of the layout (8-byte aligned,
 * never wrapping, PADDING exactly when the record does not fit before the end of the area).
 * It counts paddings and exact fits.
 *
 * Modes:
 *   (default)   stream: N records each way at once, as fast as possible.
 *   --wakeups   ping-pong: the parent sends a burst (mostly 1 record, sometimes enough to fill
 *               the ring so the producer must wait for space), the child answers with one
 *               record; random busy-spins, sched_yield and usleep(0..50) on both sides so the
 *               consumers really sleep; prints ring_get_stats sleep/wake-up counts.
 *   --oneway    stream in direction A only (pure producer / pure consumer), for throughput
 *               (with --no-verify: payloads are copied in and every cache line is read, but
 *               not generated or checked; seq/type/length/offset are still checked).
 *   --litmus    the store-buffer (Dekker) litmus test of the doorbell protocol, in isolation:
 *               both sides meet at a spin barrier, then with random few-ns skews one side
 *               publishes a record + ring_producer_must_wake while the other calls
 *               ring_consumer_prepare_sleep (and, mirrored, ring_producer_prepare_wait on a
 *               full ring vs. drain + ring_release + ring_consumer_must_wake).  "Consumer may
 *               sleep" together with "producer need not ring" is a lost wake-up; it is counted
 *               exactly, no timeout needed.  Without the seq_cst fences this happens within
 *               thousands of rounds on x86; with them it must never happen.
 *
 * Output: one line "ring_stress OK ..." and exit 0, or a "ring_stress FAIL: ..." message and a
 * non-zero exit (1 = mismatch, 2 = usage/setup, 3 = watchdog).
 */
#define _GNU_SOURCE
#include "ring.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* configuration                                                                               */

enum { M_WRITE = 1, M_MANY = 2, M_ALL = 3 };

static struct {
    uint64_t records;      /* stream: records per direction; wakeups: ping-pongs */
    uint64_t capacity;
    uint32_t max_len;      /* largest payload generated (<= ring max_record) */
    long fixed_len;        /* -1: mixed lengths */
    int methods;
    int threads;
    int wakeups;
    int litmus;
    int oneway;
    int verify;            /* 0: --no-verify, payload neither generated nor checked */
    int spin;              /* idle loop iterations before sleeping (stream mode) */
    int stall;             /* watchdog: seconds without progress */
    int timeout;           /* watchdog: overall seconds */
    int drop_doorbells;
    int need;              /* 0: random, 1: record size, 2: worst case (record + padding) */
    uint64_t seed;
} cfg = {
    .records = 0, .capacity = 0, .max_len = 0, .fixed_len = -1, .methods = M_ALL,
    .threads = 0, .wakeups = 0, .oneway = 0, .verify = 1, .spin = 200, .stall = 10,
    .timeout = 300, .drop_doorbells = 0, .seed = 0x5eed5eedULL,
};

#ifdef RING_STRESS_THREADS
#define DEFAULT_THREADS 1
#else
#define DEFAULT_THREADS 0
#endif

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                               */

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    fflush(stdout);
    if (write(2, buf, (size_t)n) < 0) { /* nothing to do */ }
    _exit(code);
}
#define FAIL(...) die(1, "ring_stress FAIL: " __VA_ARGS__)

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}
typedef struct { uint64_t s; } rng_t;
static inline uint64_t rng_next(rng_t *r) { return mix64(r->s += 0x9e3779b97f4a7c15ULL); }
static inline uint64_t rng_below(rng_t *r, uint64_t n) { return n ? rng_next(r) % n : 0; }
static inline uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* 64-bit word hash, xxhash-like (multiply / rotate per 8 bytes). */
static uint64_t hash64(uint64_t seed, const uint8_t *p, size_t n) {
    const uint64_t P1 = 0x9e3779b185ebca87ULL, P2 = 0xc2b2ae3d27d4eb4fULL;
    uint64_t h = seed ^ (n * P1);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h ^= w * P2;
        h = rotl(h, 31) * P1;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        h ^= w * P2;
        h = rotl(h, 31) * P1;
    }
    return mix64(h);
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed) {
    rng_t r = {seed};
    while (n >= 8) {
        uint64_t w = rng_next(&r);
        memcpy(p, &w, 8);
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = rng_next(&r);
        memcpy(p, &w, n);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* the deterministic record stream                                                             */

static uint32_t len_for(uint64_t dseed, uint64_t seq) {
    if (cfg.fixed_len >= 0) return (uint32_t)cfg.fixed_len;
    uint64_t h = mix64(dseed ^ (seq * 0xd6e8feb86659fd93ULL) ^ 0x1e11);
    uint64_t M = cfg.max_len;
    uint64_t u = h % 1000, v = h >> 20;
    uint64_t len;
    if (u < 450) len = v % 64;
    else if (u < 750) len = v % 512;
    else if (u < 900) len = v % 4096;
    else if (u < 960) len = v % (M + 1);
    else if (u < 975) len = M;                               /* exactly the maximum */
    else if (u < 985) len = M - 7 + v % 8;                   /* just under it */
    else if (u < 993) len = (cfg.capacity >> (4 + v % 4)) - 8; /* totals dividing the area */
    else {
        static const uint32_t tiny[] = {0, 1, 7, 8, 9, 15, 16, 17};
        len = tiny[v % 8];
    }
    return (uint32_t)(len > M ? M : len);
}

typedef struct {
    uint64_t start;
    uint32_t count;
    uint32_t method;
    uint32_t type;
} group_t;

static group_t plan_group(uint64_t dseed, uint64_t start, uint64_t total) {
    uint64_t h = mix64(dseed ^ (start * 0x8cb92ba72f3d8dd7ULL) ^ 0x9a0f);
    static const uint32_t order[] = {M_WRITE, M_MANY};
    uint32_t weights[2] = {60, 40};
    uint32_t sum = 0;
    for (int i = 0; i < 2; i++) {
        if (!(cfg.methods & (int)order[i])) weights[i] = 0;
        sum += weights[i];
    }
    uint32_t pick = (uint32_t)(h % sum), method = M_WRITE;
    for (int i = 0; i < 2; i++) {
        if (pick < weights[i]) {
            method = order[i];
            break;
        }
        pick -= weights[i];
    }
    group_t g;
    g.start = start;
    g.method = method;
    g.count = method == M_MANY ? 1 + (uint32_t)((h >> 16) % 32) : 1;
    if (g.count > total - start) g.count = (uint32_t)(total - start);
    switch ((h >> 40) & 15) {
    case 0: g.type = 0; break;
    case 1: g.type = 0xFFFFFFFEu; break; /* one below PADDING */
    default: g.type = (uint32_t)(h >> 8) & 0x7FFFFFFFu; break;
    }
    return g;
}

static inline uint64_t payload_seed(uint64_t dseed, uint64_t seq) {
    return mix64(dseed ^ (seq * 0xa0761d6478bd642fULL) ^ 0x7a7a);
}

static void gen_payload(uint64_t dseed, uint64_t seq, uint8_t *p, uint32_t len) {
    if (!cfg.verify) return;
    uint64_t s = payload_seed(dseed, seq);
    if (len < 16) {
        fill_random(p, len, s);
        return;
    }
    fill_random(p + 16, len - 16, s);
    uint64_t h = hash64(s, p + 16, len - 16);
    memcpy(p, &seq, 8);
    memcpy(p + 8, &h, 8);
}

static volatile uint64_t g_touch;

/* 0 if good, else a static description of what is wrong.  With --no-verify the bytes are
 * still read (one load per cache line), so throughput figures include the transfer. */
static const char *check_payload(uint64_t dseed, uint64_t seq, const uint8_t *p, uint32_t len) {
    if (!cfg.verify) {
        uint64_t acc = 0;
        for (uint32_t i = 0; i < len; i += 64) acc += p[i];
        if (len) acc += p[len - 1];
        g_touch += acc;
        return NULL;
    }
    uint64_t s = payload_seed(dseed, seq);
    if (len < 16) {
        uint8_t want[16];
        fill_random(want, len, s);
        return memcmp(want, p, len) ? "short payload bytes differ" : NULL;
    }
    uint64_t got_seq, got_h;
    memcpy(&got_seq, p, 8);
    memcpy(&got_h, p + 8, 8);
    if (got_seq != seq) return "payload carries another sequence number";
    if (hash64(s, p + 16, len - 16) != got_h) return "payload checksum mismatch";
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* shared results (in the mapping, so the child can report to the parent)                      */

typedef struct {
    uint64_t rx_records, rx_bytes, paddings, exact_fits;
    uint64_t tx_records, tx_bytes, many_partial, full_retries;
    uint64_t dozes, rx_sleeps, tx_waits, doorbells_rung, sleep_aborts, wait_aborts, eventfd_reads;
    uint64_t lit_rounds, lit_lost_data, lit_lost_space, lit_close_data, lit_close_space;
    uint64_t lit_first_lost;
    uint64_t done;
} side_result_t;

typedef struct {
    _Alignas(128) _Atomic uint64_t v;
} padded_u64_t;

typedef struct {
    side_result_t side[2];
    padded_u64_t bar[2]; /* litmus: barrier arrivals per side */
    padded_u64_t out[2]; /* litmus: each side's decision in the current phase */
} results_t;

/* ------------------------------------------------------------------------------------------ */
/* endpoint: one side, producer on `out`, consumer on `in`                                     */

typedef struct {
    const char *name;
    int index;
    ring_t out, in;
    int out_data_fd, out_space_fd, in_data_fd, in_space_fd;
    uint64_t tx_seed, rx_seed;
    uint64_t tx_total, rx_total;
    rng_t rng;

    /* producer */
    uint64_t tx_next;
    group_t tx_g;
    int tx_blocked;
    uint32_t tx_need;
    uint8_t *scratch;
    uint8_t *many_buf;
    uint32_t *many_lens;
    uint64_t many_first; /* seq of many_buf[0], or UINT64_MAX */
    size_t many_off;
    int many_count;

    /* consumer */
    uint64_t rx_expect;
    group_t rx_g;
    uint64_t rx_shadow; /* model of the consumer position */
    ring_view_t *views;
    uint32_t *flat;

    side_result_t res;
    _Atomic uint64_t progress;
    _Atomic int dozing;
    int wakeup_mode;
    unsigned beat;
} ep_t;

#define MAX_BATCH 256
#define MANY_MAX 32

static ep_t *g_eps[2];
static int g_neps;
static ring_t *g_rings_for_dump[2];
static pid_t g_child = 0;
static uint64_t g_wd_last = UINT64_MAX;
static int g_wd_stall = 0, g_wd_elapsed = 0;

static void doorbell(int fd) {
    uint64_t one = 1;
    if (write(fd, &one, 8) != 8) FAIL("eventfd write: %s", strerror(errno));
}

static int drain_eventfd(int fd) {
    uint64_t v;
    ssize_t n = read(fd, &v, 8);
    if (n == 8) return 1;
    if (n < 0 && errno == EAGAIN) return 0;
    FAIL("eventfd read: %s", n < 0 ? strerror(errno) : "short read");
}

/* A random pause (one cpu_relax is ~10-40 ns; usleep(n) is >= ~60 us with the default timer
 * slack): mostly short busy-spins, sometimes a yield or a real sleep. */
static void random_delay(rng_t *r) {
    uint64_t x = rng_below(r, 100);
    if (x < 70) {
        for (uint64_t i = rng_below(r, 64); i; i--) cpu_relax();
    } else if (x < 85) {
        for (uint64_t i = rng_below(r, 512); i; i--) cpu_relax();
    } else if (x < 93) {
        sched_yield();
    } else {
        usleep((useconds_t)rng_below(r, 51));
    }
}

/* --- producer ----------------------------------------------------------------------------- */

static int tx_step(ep_t *e, uint64_t limit) {
    int published = 0;
    ring_t *r = &e->out;
    e->tx_blocked = 0;
    while (e->tx_next < limit && published < 64) {
        uint64_t seq = e->tx_next;
        if (seq >= e->tx_g.start + e->tx_g.count || seq < e->tx_g.start)
            e->tx_g = plan_group(e->tx_seed, seq, e->tx_total);
        group_t g = e->tx_g;
        uint32_t len = len_for(e->tx_seed, seq);
        int rc, n = 0;
        uint64_t bytes = 0;
        switch (g.method) {
        case M_WRITE:
            gen_payload(e->tx_seed, seq, e->scratch, len);
            rc = ring_try_write(r, g.type, e->scratch, len);
            if (rc == RING_OK) n = 1, bytes = len;
            break;
        case M_MANY: {
            uint64_t end = g.start + g.count;
            if (end > limit) end = limit;
            if (e->many_first != seq) { /* (re)build the rest of the group back to back */
                e->many_first = seq;
                e->many_off = 0;
                e->many_count = (int)(end - seq);
                size_t off = 0;
                for (int i = 0; i < e->many_count; i++) {
                    uint32_t l = len_for(e->tx_seed, seq + (uint64_t)i);
                    e->many_lens[i] = l;
                    gen_payload(e->tx_seed, seq + (uint64_t)i, e->many_buf + off, l);
                    off += l;
                }
            }
            rc = ring_try_write_many(r, g.type, e->many_buf + e->many_off, e->many_lens,
                                     e->many_count);
            if (rc > e->many_count) FAIL("%s: ring_try_write_many returned %d > n=%d", e->name,
                                         rc, e->many_count);
            if (rc > 0) {
                n = rc;
                for (int i = 0; i < n; i++) bytes += e->many_lens[i];
                if (n < e->many_count) {
                    e->res.many_partial++;
                    memmove(e->many_lens, e->many_lens + n,
                            (size_t)(e->many_count - n) * sizeof(uint32_t));
                    e->many_off += bytes;
                    e->many_count -= n;
                    e->many_first = seq + (uint64_t)n;
                } else {
                    e->many_first = UINT64_MAX;
                }
                rc = RING_OK;
            } else if (rc == 0) {
                FAIL("%s: ring_try_write_many returned 0 for n=%d", e->name, e->many_count);
            }
            break;
        }
        default:
            FAIL("bad method");
        }
        if (rc == RING_AGAIN) {
            e->tx_blocked = 1;
            uint64_t total = align8(8 + (uint64_t)len);
            /* what a plain caller would say (the record), or the worst case with padding */
            int pol = cfg.need ? cfg.need : 1 + (int)rng_below(&e->rng, 2);
            e->tx_need = (uint32_t)(pol == 1 ? total : 2 * total - 8);
            e->res.full_retries++;
            break;
        }
        if (rc < 0) FAIL("%s: write of seq %" PRIu64 " (len %u, method %u): %s", e->name, seq, len,
                         g.method, ring_strerror(rc));
        e->tx_next += (uint64_t)n;
        published += n;
        e->res.tx_records += (uint64_t)n;
        e->res.tx_bytes += bytes;
    }
    if (published) {
        if (ring_free_space(r) > cfg.capacity) FAIL("%s: ring_free_space > capacity", e->name);
        if (ring_producer_must_wake(r)) {
            e->res.doorbells_rung++;
            if (!cfg.drop_doorbells) doorbell(e->out_data_fd);
        }
    }
    return published;
}

/* --- consumer ----------------------------------------------------------------------------- */

static void verify_record(ep_t *e, uint32_t type, uint32_t len, uint64_t off) {
    uint64_t seq = e->rx_expect;
    uint64_t cap = cfg.capacity;
    if (seq >= e->rx_total)
        FAIL("%s: extra record after the last one (seq would be %" PRIu64 ", type %u len %u)",
             e->name, seq, type, len);
    if (seq >= e->rx_g.start + e->rx_g.count || seq < e->rx_g.start)
        e->rx_g = plan_group(e->rx_seed, seq, e->rx_total);
    uint32_t want_len = len_for(e->rx_seed, seq);
    if (type == RING_TYPE_PADDING) FAIL("%s: PADDING record handed to the reader", e->name);
    if (len != want_len)
        FAIL("%s: seq %" PRIu64 ": length %u, expected %u (lost or duplicated record?)", e->name,
             seq, len, want_len);
    if (type != e->rx_g.type)
        FAIL("%s: seq %" PRIu64 ": type %u, expected %u", e->name, seq, type, e->rx_g.type);
    if ((off & 7) || off < 8 || off + len > cap)
        FAIL("%s: seq %" PRIu64 ": bad offset %" PRIu64 " for len %u", e->name, seq, off, len);
    /* layout model */
    uint64_t mask = cap - 1, idx = e->rx_shadow & mask, total = align8(8 + (uint64_t)len);
    if (total > cap - idx) { /* must have wrapped with a PADDING record */
        e->rx_shadow += cap - idx;
        e->res.paddings++;
        idx = 0;
    }
    if (off != idx + 8)
        FAIL("%s: seq %" PRIu64 ": payload at offset %" PRIu64 ", layout says %" PRIu64,
             e->name, seq, off, idx + 8);
    e->rx_shadow += total;
    if ((e->rx_shadow & mask) == 0) e->res.exact_fits++;
    const char *why = check_payload(e->rx_seed, seq, ring_data(&e->in) + off, len);
    if (why) FAIL("%s: seq %" PRIu64 " (len %u, offset %" PRIu64 "): %s", e->name, seq, len, off, why);
    e->rx_expect++;
    e->res.rx_records++;
    e->res.rx_bytes += len;
}

static int rx_step(ep_t *e) {
    ring_t *r = &e->in;
    int got = 0, held = 0;
    for (;;) {
        uint64_t pick = rng_below(&e->rng, 8);
        int max = pick < 3 ? 1 + (int)rng_below(&e->rng, 8)
                  : pick < 7 ? 1 + (int)rng_below(&e->rng, 64)
                             : 1 + (int)rng_below(&e->rng, MAX_BATCH);
        int flat = (int)rng_below(&e->rng, 2);
        int n = flat ? ring_read_flat(r, e->flat, max) : ring_read(r, e->views, max);
        if (n < 0) FAIL("%s: %s returned %s", e->name, flat ? "ring_read_flat" : "ring_read",
                        ring_strerror(n));
        if (n > max) FAIL("%s: read returned %d > max %d", e->name, n, max);
        for (int i = 0; i < n; i++) {
            if (flat) verify_record(e, e->flat[3 * i], e->flat[3 * i + 1], e->flat[3 * i + 2]);
            else verify_record(e, e->views[i].type, e->views[i].len, e->views[i].offset);
        }
        got += n;
        if (n) held++;
        /* release now, or keep the views and read more first (at most 4 batches) */
        if (held && (n == 0 || held >= 4 || rng_below(&e->rng, 4) != 0 || got >= 512)) {
            ring_release(r);
            held = 0;
            if (ring_consumer_must_wake(r)) {
                e->res.doorbells_rung++;
                if (!cfg.drop_doorbells) doorbell(e->in_space_fd);
            }
        }
        if (n == 0 || got >= 512) break;
        if (e->wakeup_mode && rng_below(&e->rng, 8) == 0) random_delay(&e->rng);
    }
    if (held) FAIL("internal: left records unreleased");
    return got;
}

/* --- event loop ---------------------------------------------------------------------------- */

static void doze(ep_t *e, uint64_t tx_limit, uint64_t rx_limit) {
    int want_rx = e->rx_expect < rx_limit;
    int want_tx = e->tx_next < tx_limit && e->tx_blocked;
    if (!want_rx && !want_tx) FAIL("internal: doze with nothing to wait for");
    if (want_rx && !ring_consumer_prepare_sleep(&e->in)) {
        e->res.sleep_aborts++;
        return;
    }
    if (want_tx && !ring_producer_prepare_wait(&e->out, e->tx_need)) {
        /* the consumer's sleeping flag stays set: one needless doorbell at most (ring.h) */
        e->res.wait_aborts++;
        return;
    }
    struct pollfd pf[2];
    int n = 0;
    if (want_rx) pf[n++] = (struct pollfd){.fd = e->in_data_fd, .events = POLLIN};
    if (want_tx) pf[n++] = (struct pollfd){.fd = e->out_space_fd, .events = POLLIN};
    atomic_store_explicit(&e->dozing, 1, memory_order_relaxed);
    for (;;) {
        int rc = poll(pf, (nfds_t)n, -1); /* no timeout: a lost wake-up hangs here */
        if (rc > 0) break;
        if (rc < 0 && errno == EINTR) continue;
        FAIL("%s: poll: %s", e->name, strerror(errno));
    }
    atomic_store_explicit(&e->dozing, 0, memory_order_relaxed);
    for (int i = 0; i < n; i++)
        if (pf[i].revents & POLLIN) e->res.eventfd_reads += (uint64_t)drain_eventfd(pf[i].fd);
    /* a flag whose doorbell did not ring stays set: one needless doorbell later at most */
    e->res.dozes++;
    e->res.rx_sleeps += (uint64_t)want_rx;
    e->res.tx_waits += (uint64_t)want_tx;
}

static void pump(ep_t *e, uint64_t tx_limit, uint64_t rx_limit) {
    int idle = 0, spin = cfg.spin;
    while (e->tx_next < tx_limit || e->rx_expect < rx_limit) {
        int p = 0;
        if (e->tx_next < tx_limit) p += tx_step(e, tx_limit);
        if (e->rx_expect < rx_limit) p += rx_step(e);
        if ((++e->beat & 1023) == 1) {
            uint64_t t = ring_now_ns();
            ring_heartbeat_producer(&e->out, t, (uint32_t)getpid());
            ring_heartbeat_consumer(&e->in, t, (uint32_t)getpid());
        }
        if (p) {
            atomic_store_explicit(&e->progress, e->res.tx_records + e->res.rx_records,
                                  memory_order_relaxed);
            idle = 0;
            if (e->wakeup_mode) spin = rng_below(&e->rng, 4) == 0 ? (int)rng_below(&e->rng, 200) : 0;
            continue;
        }
        if (idle < spin) {
            idle++;
            cpu_relax();
            continue;
        }
        idle = 0;
        doze(e, tx_limit, rx_limit);
    }
}

/* --- watchdog ------------------------------------------------------------------------------ */

static void wd_write(const char *s) {
    if (write(2, s, strlen(s)) < 0) { /* nothing to do */ }
}

static void watchdog(int sig) {
    (void)sig;
    char buf[512];
    g_wd_elapsed++;
    if (g_child > 0) { /* parent: a dead child can never make progress again */
        int st;
        pid_t p = waitpid(g_child, &st, WNOHANG);
        if (p == g_child) {
            g_child = -1;
            if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
                snprintf(buf, sizeof buf, "ring_stress FAIL: child died (%s %d) before the end\n",
                         WIFEXITED(st) ? "exit" : "signal",
                         WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
                wd_write(buf);
                _exit(1);
            }
        }
    }
    uint64_t prog = 0;
    for (int i = 0; i < g_neps; i++) prog += atomic_load_explicit(&g_eps[i]->progress, memory_order_relaxed);
    if (prog != g_wd_last) {
        g_wd_last = prog;
        g_wd_stall = 0;
    } else {
        g_wd_stall++;
    }
    int stalled = g_wd_stall >= cfg.stall, late = g_wd_elapsed >= cfg.timeout;
    if (stalled || late) {
        snprintf(buf, sizeof buf,
                 "ring_stress FAIL: WATCHDOG (pid %d): %s -- %s\n", (int)getpid(),
                 stalled ? "no progress" : "overall timeout",
                 stalled ? "a lost wake-up (both sides asleep) or a livelock" : "too slow");
        wd_write(buf);
        snprintf(buf, sizeof buf, "  stalled %d s, elapsed %d s (limits %d / %d)\n", g_wd_stall,
                 g_wd_elapsed, cfg.stall, cfg.timeout);
        wd_write(buf);
        for (int i = 0; i < g_neps; i++) {
            ep_t *e = g_eps[i];
            snprintf(buf, sizeof buf,
                     "  %s: sent %" PRIu64 "/%" PRIu64 " received %" PRIu64 "/%" PRIu64
                     " dozing=%d tx_blocked=%d need=%u\n",
                     e->name, e->tx_next, e->tx_total, e->rx_expect, e->rx_total,
                     atomic_load_explicit(&e->dozing, memory_order_relaxed), e->tx_blocked,
                     e->tx_need);
            wd_write(buf);
        }
        for (int i = 0; i < 2; i++) {
            ring_stats_t s;
            if (!g_rings_for_dump[i]) continue;
            ring_get_stats(g_rings_for_dump[i], &s);
            snprintf(buf, sizeof buf,
                     "  ring %c: used=%" PRIu64 " written=%" PRIu64 " read=%" PRIu64
                     " consumer_sleeping=%u producer_waiting=%u sleeps=%" PRIu64
                     " consumer_wakeups=%" PRIu64 " producer_wakeups=%" PRIu64 "\n",
                     "AB"[i], s.used, s.records_written, s.records_read, s.consumer_sleeping,
                     s.producer_waiting, s.consumer_sleeps, s.consumer_wakeups,
                     s.producer_wakeups);
            wd_write(buf);
        }
        if (g_child > 0) kill(g_child, SIGKILL);
        _exit(3);
    }
    alarm(1);
}

static void start_watchdog(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = watchdog;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    alarm(1);
}

/* ------------------------------------------------------------------------------------------ */
/* setup                                                                                       */

typedef struct {
    uint8_t *region_a, *region_b;
    size_t region_size;
    uint64_t gen_a, gen_b;
    int a_data, a_space, b_data, b_space;
    results_t *results;
    uint64_t *bursts; /* wakeups mode: burst size per ping */
    uint64_t pings;
    uint64_t a_total, b_total;
} world_t;

static world_t W;

/* --- litmus: the doorbell handshake in isolation ------------------------------------------- */

static void lit_barrier(ep_t *e, uint64_t k) {
    results_t *R = W.results;
    int me = e->index;
    atomic_store_explicit(&R->bar[me].v, k, memory_order_seq_cst);
    unsigned spins = 0;
    while (atomic_load_explicit(&R->bar[1 - me].v, memory_order_acquire) < k) {
        cpu_relax();
        if (++spins > 4096) {
            sched_yield();
            spins = 0;
        }
    }
}

static void lit_skew(rng_t *r) {
    /* 0..~100 ns: sweeps the two critical sequences across each other */
    for (uint64_t i = rng_below(r, 256); i; i--) __asm__ __volatile__("" ::: "memory");
}

static void lit_put(size_t slot, uint64_t v) {
    atomic_store_explicit(&W.results->out[slot].v, v, memory_order_release);
}
static uint64_t lit_get(size_t slot) {
    return atomic_load_explicit(&W.results->out[slot].v, memory_order_acquire);
}

/* parent (index 0): producer of A, consumer of B.  child (1): consumer of A, producer of B. */
static void run_litmus(ep_t *e) {
    const int parent = e->index == 0;
    ring_view_t v[16];
    uint8_t rec[8];
    uint32_t big = cfg.max_len;
    for (uint64_t r = 0; r < cfg.records; r++) {
        uint64_t k = 5 * r;
        /* phase A: data doorbell.  parent publishes one record; child checks before sleeping */
        lit_barrier(e, k + 1);
        if (parent) {
            lit_skew(&e->rng);
            memcpy(rec, &r, 8);
            int rc = ring_try_write(&e->out, 1, rec, 8);
            if (rc != RING_OK) FAIL("litmus: write: %s", ring_strerror(rc));
            lit_put(0, (uint64_t)ring_producer_must_wake(&e->out));
        } else {
            lit_skew(&e->rng);
            lit_put(1, (uint64_t)ring_consumer_prepare_sleep(&e->in));
        }
        lit_barrier(e, k + 2);
        if (!parent) {
            uint64_t sleep = lit_get(1), wake = lit_get(0);
            if (sleep && !wake) {
                if (!e->res.lit_lost_data++) e->res.lit_first_lost = r;
                /* withdraws the flag (the record is visible now), so the next round starts
                 * clean */
                if (ring_consumer_prepare_sleep(&e->in)) FAIL("litmus: record not visible");
            }
            if (sleep && wake) e->res.lit_close_data++;
            int n = ring_read(&e->in, v, 16);
            uint64_t got = 0;
            if (n == 1) memcpy(&got, ring_data(&e->in) + v[0].offset, 8);
            if (n != 1 || v[0].len != 8 || got != r)
                FAIL("litmus round %" PRIu64 ": read %d records (seq %" PRIu64 ")", r, n, got);
            ring_release(&e->in);
        }
        /* phase B: space doorbell.  child fills B, then announces it waits for space; parent
         * has read everything (handed out) and releases it all at once, then checks */
        if (!parent) {
            int rc;
            while ((rc = ring_try_write(&e->out, 2, e->scratch, big)) == RING_OK) {}
            if (rc != RING_AGAIN) FAIL("litmus: fill: %s", ring_strerror(rc));
        }
        lit_barrier(e, k + 3);
        if (parent) {
            int n, total = 0;
            while ((n = ring_read(&e->in, v, 16)) > 0) total += n;
            if (n < 0 || total == 0) FAIL("litmus round %" PRIu64 ": drain got %d (%d)", r, total, n);
        }
        lit_barrier(e, k + 4);
        if (!parent) {
            lit_skew(&e->rng);
            lit_put(1, (uint64_t)ring_producer_prepare_wait(&e->out, (uint32_t)align8(8 + (uint64_t)big)));
        } else {
            lit_skew(&e->rng);
            ring_release(&e->in);
            lit_put(0, (uint64_t)ring_consumer_must_wake(&e->in));
        }
        lit_barrier(e, k + 5);
        if (!parent) {
            uint64_t wait = lit_get(1), wake = lit_get(0);
            if (wait && !wake) {
                if (!e->res.lit_lost_space++) e->res.lit_first_lost = r;
                /* withdraws the flag (the space is visible now), so the next round starts
                 * clean */
                if (ring_producer_prepare_wait(&e->out, (uint32_t)align8(8 + (uint64_t)big)))
                    FAIL("litmus: space not visible");
            }
            if (wait && wake) e->res.lit_close_space++;
        }
        e->res.lit_rounds++;
        atomic_store_explicit(&e->progress, r + 1, memory_order_relaxed);
    }
}

static void ep_setup(ep_t *e, int index) {
    memset(e, 0, sizeof *e);
    e->index = index;
    e->name = index == 0 ? "parent" : "child";
    uint8_t *out = index == 0 ? W.region_a : W.region_b;
    uint8_t *in = index == 0 ? W.region_b : W.region_a;
    uint64_t gout = index == 0 ? W.gen_a : W.gen_b, gin = index == 0 ? W.gen_b : W.gen_a;
    int rc = ring_attach(&e->out, out, W.region_size, gout);
    if (rc != RING_OK) FAIL("%s: ring_attach(out): %s", e->name, ring_strerror(rc));
    rc = ring_attach(&e->in, in, W.region_size, gin);
    if (rc != RING_OK) FAIL("%s: ring_attach(in): %s", e->name, ring_strerror(rc));
    e->out_data_fd = index == 0 ? W.a_data : W.b_data;
    e->out_space_fd = index == 0 ? W.a_space : W.b_space;
    e->in_data_fd = index == 0 ? W.b_data : W.a_data;
    e->in_space_fd = index == 0 ? W.b_space : W.a_space;
    e->tx_seed = mix64(cfg.seed ^ (index == 0 ? 0xA : 0xB));
    e->rx_seed = mix64(cfg.seed ^ (index == 0 ? 0xB : 0xA));
    e->tx_total = index == 0 ? W.a_total : W.b_total;
    e->rx_total = index == 0 ? W.b_total : W.a_total;
    e->rng.s = mix64(cfg.seed ^ 0x51de ^ (uint64_t)index) ^ (uint64_t)getpid();
    e->scratch = malloc(cfg.max_len + 16);
    e->many_buf = malloc((size_t)MANY_MAX * (cfg.max_len + 16));
    e->many_lens = malloc(MANY_MAX * sizeof(uint32_t));
    e->views = malloc(MAX_BATCH * sizeof(ring_view_t));
    e->flat = malloc(3 * MAX_BATCH * sizeof(uint32_t));
    if (!e->scratch || !e->many_buf || !e->many_lens || !e->views || !e->flat) die(2, "out of memory");
    memset(e->scratch, 0, cfg.max_len + 16);
    memset(e->many_buf, 0, (size_t)MANY_MAX * (cfg.max_len + 16));
    e->many_first = UINT64_MAX;
    e->tx_g.count = 0;
    e->rx_g.count = 0;
    e->wakeup_mode = cfg.wakeups;
    if (cfg.wakeups) {
        e->tx_total = index == 0 ? W.a_total : W.b_total;
        e->rx_total = index == 0 ? W.b_total : W.a_total;
    }
}

static void ep_free(ep_t *e) {
    free(e->scratch);
    free(e->many_buf);
    free(e->many_lens);
    free(e->views);
    free(e->flat);
}

static void run_side(ep_t *e) {
    if (cfg.litmus) {
        run_litmus(e);
    } else if (!cfg.wakeups) {
        pump(e, e->tx_total, e->rx_total);
    } else if (e->index == 0) { /* parent: send burst k, wait for reply k */
        uint64_t sent = 0;
        for (uint64_t k = 0; k < W.pings; k++) {
            sent += W.bursts[k];
            random_delay(&e->rng);
            pump(e, sent, k + 1);
        }
    } else { /* child: receive burst k, think, reply */
        uint64_t got = 0;
        for (uint64_t k = 0; k < W.pings; k++) {
            got += W.bursts[k];
            pump(e, k, got);
            random_delay(&e->rng);
            pump(e, k + 1, got);
        }
    }
    e->res.done = 1;
    W.results->side[e->index] = e->res;
}

static void *thread_main(void *arg) {
    run_side(arg);
    return NULL;
}

static void usage(void) {
    fprintf(stderr,
            "usage: ring_stress [N] [--records N] [--capacity BYTES] [--max-len BYTES]\n"
            "                   [--len BYTES] [--methods write,many]\n"
            "                   [--threads|--fork] [--wakeups|--litmus|--oneway] [--no-verify]\n"
            "                   [--spin K] [--stall S] [--timeout S] [--seed X]\n"
            "                   [--need random|record|worst] [--drop-doorbells]\n");
    exit(2);
}

static uint64_t parse_u64(const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s) usage();
    if (*end == 'k' || *end == 'K') v <<= 10, end++;
    else if (*end == 'm' || *end == 'M') v <<= 20, end++;
    if (*end) usage();
    return v;
}

static void parse_args(int argc, char **argv) {
    cfg.threads = DEFAULT_THREADS;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
#define OPT(name) (strcmp(a, name) == 0 && (i + 1 < argc ? (val = argv[++i], 1) : (usage(), 0)))
        if (a[0] != '-') cfg.records = parse_u64(a);
        else if (OPT("--records")) cfg.records = parse_u64(val);
        else if (OPT("--capacity")) cfg.capacity = parse_u64(val);
        else if (OPT("--max-len")) cfg.max_len = (uint32_t)parse_u64(val);
        else if (OPT("--len")) cfg.fixed_len = (long)parse_u64(val);
        else if (OPT("--spin")) cfg.spin = (int)parse_u64(val);
        else if (OPT("--stall")) cfg.stall = (int)parse_u64(val);
        else if (OPT("--timeout")) cfg.timeout = (int)parse_u64(val);
        else if (OPT("--seed")) cfg.seed = parse_u64(val);
        else if (OPT("--need")) {
            if (!strcmp(val, "random")) cfg.need = 0;
            else if (!strcmp(val, "record")) cfg.need = 1;
            else if (!strcmp(val, "worst")) cfg.need = 2;
            else usage();
        }
        else if (OPT("--methods")) {
            cfg.methods = 0;
            char buf[128];
            snprintf(buf, sizeof buf, "%s", val);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (!strcmp(t, "write")) cfg.methods |= M_WRITE;
                else if (!strcmp(t, "many")) cfg.methods |= M_MANY;
                else if (!strcmp(t, "all")) cfg.methods |= M_ALL;
                else usage();
            }
            if (!cfg.methods) usage();
        }
        else if (!strcmp(a, "--threads")) cfg.threads = 1;
        else if (!strcmp(a, "--fork")) cfg.threads = 0;
        else if (!strcmp(a, "--wakeups")) cfg.wakeups = 1;
        else if (!strcmp(a, "--litmus")) cfg.litmus = 1;
        else if (!strcmp(a, "--oneway")) cfg.oneway = 1;
        else if (!strcmp(a, "--no-verify")) cfg.verify = 0;
        else if (!strcmp(a, "--drop-doorbells")) cfg.drop_doorbells = 1;
        else usage();
#undef OPT
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    parse_args(argc, argv);
    if (!cfg.records) cfg.records = cfg.wakeups ? 200000 : cfg.litmus ? 300000 : 4000000;
    if (!cfg.capacity) cfg.capacity = (cfg.wakeups || cfg.litmus) ? 4096 : 65536;
    uint32_t ring_max = ring_max_record_for(cfg.capacity);
    if (!cfg.max_len || cfg.max_len > ring_max) cfg.max_len = ring_max;
    if (cfg.fixed_len > (long)cfg.max_len) die(2, "ring_stress: --len %ld > max record %u", cfg.fixed_len, cfg.max_len);

    /* one mapping: ring A | ring B | results, each page aligned */
    size_t rs = ring_region_size(cfg.capacity);
    size_t slot = (rs + 4095) & ~(size_t)4095;
    size_t total = 2 * slot + ((sizeof(results_t) + 4095) & ~(size_t)4095);
    uint8_t *map = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) die(2, "mmap %zu: %s", total, strerror(errno));
    W.region_a = map;
    W.region_b = map + slot;
    W.region_size = rs;
    W.results = (results_t *)(map + 2 * slot);
    W.gen_a = mix64(cfg.seed ^ 0x6e6) | 1;
    W.gen_b = W.gen_a + 1;
    ring_t init_a, init_b;
    int rc = ring_init(&init_a, W.region_a, rs, cfg.capacity, W.gen_a);
    if (rc != RING_OK) die(2, "ring_init(capacity %" PRIu64 "): %s", cfg.capacity, ring_strerror(rc));
    rc = ring_init(&init_b, W.region_b, rs, cfg.capacity, W.gen_b);
    if (rc != RING_OK) die(2, "ring_init B: %s", ring_strerror(rc));
    g_rings_for_dump[0] = &init_a;
    g_rings_for_dump[1] = &init_b;
    W.a_data = eventfd(0, EFD_NONBLOCK);
    W.a_space = eventfd(0, EFD_NONBLOCK);
    W.b_data = eventfd(0, EFD_NONBLOCK);
    W.b_space = eventfd(0, EFD_NONBLOCK);
    if (W.a_data < 0 || W.a_space < 0 || W.b_data < 0 || W.b_space < 0)
        die(2, "eventfd: %s", strerror(errno));

    if (cfg.wakeups) {
        W.pings = cfg.records;
        W.bursts = malloc(W.pings * sizeof(uint64_t));
        if (!W.bursts) die(2, "out of memory");
        W.a_total = 0;
        for (uint64_t k = 0; k < W.pings; k++) {
            uint64_t h = mix64(cfg.seed ^ (k * 0x2545f4914f6cdd1dULL) ^ 0xb0b);
            /* mostly single records; 1 in 16 a burst big enough to fill the ring */
            W.bursts[k] = (h % 16 == 0) ? 16 + (h >> 8) % 128 : 1;
            W.a_total += W.bursts[k];
        }
        W.b_total = W.pings;
    } else {
        W.a_total = cfg.records;
        W.b_total = cfg.oneway ? 0 : cfg.records;
    }

    double t0 = now_s();
    static ep_t eps[2];
    if (cfg.threads) {
        ep_setup(&eps[0], 0);
        ep_setup(&eps[1], 1);
        g_eps[0] = &eps[0];
        g_eps[1] = &eps[1];
        g_neps = 2;
        start_watchdog();
        pthread_t th;
        if (pthread_create(&th, NULL, thread_main, &eps[1])) die(2, "pthread_create failed");
        run_side(&eps[0]);
        pthread_join(th, NULL);
        alarm(0);
    } else {
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) die(2, "fork: %s", strerror(errno));
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() == 1) _exit(1);
            ep_setup(&eps[1], 1);
            g_eps[0] = &eps[1];
            g_neps = 1;
            start_watchdog();
            run_side(&eps[1]);
            alarm(0);
            _exit(0);
        }
        g_child = pid;
        ep_setup(&eps[0], 0);
        g_eps[0] = &eps[0];
        g_neps = 1;
        start_watchdog();
        run_side(&eps[0]);
        /* wait for the child with the watchdog still armed */
        int st = 0;
        pid_t w;
        while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {}
        alarm(0);
        if (w == pid && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
            FAIL("child failed (%s %d)", WIFEXITED(st) ? "exit" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        /* w < 0 (ECHILD): the watchdog reaped a successful child */
    }
    double elapsed = now_s() - t0;

    side_result_t *P = &W.results->side[0], *C = &W.results->side[1];
    if (!P->done || !C->done) FAIL("a side did not finish");
    if (cfg.litmus) {
        uint64_t lost = C->lit_lost_data + C->lit_lost_space;
        printf("ring_stress %s mode=%s test=litmus rounds=%" PRIu64 " lost_data=%" PRIu64
               " lost_space=%" PRIu64 " close_data=%" PRIu64 " close_space=%" PRIu64
               " elapsed=%.3fs\n",
               lost ? "FAIL" : "OK", cfg.threads ? "threads" : "fork", C->lit_rounds,
               C->lit_lost_data, C->lit_lost_space, C->lit_close_data, C->lit_close_space, elapsed);
        if (lost)
            FAIL("litmus: %" PRIu64 " lost wake-ups (first in round %" PRIu64 "): a side decided to "
                 "sleep while the other decided not to ring -- missing seq_cst fence?",
                 lost, C->lit_first_lost);
        munmap(map, total);
        return 0;
    }
    if (P->rx_records != W.b_total || C->rx_records != W.a_total)
        FAIL("record counts: parent got %" PRIu64 "/%" PRIu64 ", child got %" PRIu64 "/%" PRIu64,
             P->rx_records, W.b_total, C->rx_records, W.a_total);
    ring_stats_t sa, sb;
    ring_get_stats(&init_a, &sa);
    ring_get_stats(&init_b, &sb);
    struct { const char *n; ring_stats_t *s; uint64_t recs, bytes; } chk[2] = {
        {"A", &sa, W.a_total, P->tx_bytes}, {"B", &sb, W.b_total, C->tx_bytes}};
    for (int i = 0; i < 2; i++) {
        ring_stats_t *s = chk[i].s;
        if (s->records_written != chk[i].recs || s->records_read != chk[i].recs)
            FAIL("ring %s stats: written %" PRIu64 " read %" PRIu64 ", expected %" PRIu64, chk[i].n,
                 s->records_written, s->records_read, chk[i].recs);
        if (s->bytes_written != chk[i].bytes || s->bytes_read != chk[i].bytes)
            FAIL("ring %s stats: bytes written %" PRIu64 " read %" PRIu64 ", expected %" PRIu64,
                 chk[i].n, s->bytes_written, s->bytes_read, chk[i].bytes);
        if (s->used != 0) FAIL("ring %s: %" PRIu64 " bytes still used at the end", chk[i].n, s->used);
        if (s->consumer_sleeping || s->producer_waiting)
            FAIL("ring %s: flags left set (sleeping=%u waiting=%u)", chk[i].n, s->consumer_sleeping,
                 s->producer_waiting);
        if (s->generation != (i ? W.gen_b : W.gen_a)) FAIL("ring %s: generation changed", chk[i].n);
        if (chk[i].recs > 2048 && (!s->producer_heartbeat || !s->consumer_heartbeat))
            FAIL("ring %s: heartbeats not recorded", chk[i].n);
    }
    uint64_t recs = P->rx_records + C->rx_records;
    uint64_t bytes = P->rx_bytes + C->rx_bytes;
    uint64_t sleeps = sa.consumer_sleeps + sb.consumer_sleeps;
    uint64_t cw = sa.consumer_wakeups + sb.consumer_wakeups;
    uint64_t pw = sa.producer_wakeups + sb.producer_wakeups;
    uint64_t full = sa.full_events + sb.full_events;
    const char *mode = cfg.threads ? "threads" : "fork";
    if (cfg.wakeups) {
        printf("ring_stress OK mode=%s test=wakeups pings=%" PRIu64 " records=%" PRIu64
               " bytes=%" PRIu64 " consumer_sleeps=%" PRIu64 " consumer_wakeups=%" PRIu64
               " producer_waits=%" PRIu64 " producer_wakeups=%" PRIu64 " wakeups=%" PRIu64
               " dozes=%" PRIu64 " sleep_aborts=%" PRIu64 " wait_aborts=%" PRIu64 " full=%" PRIu64
               " paddings=%" PRIu64 " exact_fits=%" PRIu64 " elapsed=%.3fs rtt=%.2fus\n",
               mode, W.pings, recs, bytes, sleeps, cw, P->tx_waits + C->tx_waits, pw, cw + pw,
               P->dozes + C->dozes, P->sleep_aborts + C->sleep_aborts,
               P->wait_aborts + C->wait_aborts, full, P->paddings + C->paddings,
               P->exact_fits + C->exact_fits, elapsed, elapsed * 1e6 / (double)W.pings);
    } else {
        printf("ring_stress OK mode=%s test=%s capacity=%" PRIu64 " max_len=%u records=%" PRIu64
               " bytes=%" PRIu64 " wakeups=%" PRIu64 " consumer_wakeups=%" PRIu64
               " producer_wakeups=%" PRIu64 " consumer_sleeps=%" PRIu64 " wait_aborts=%" PRIu64
               " full=%" PRIu64
               " paddings=%" PRIu64 " exact_fits=%" PRIu64
               " many_partial=%" PRIu64 " elapsed=%.3fs"
               " rate=%.2fMrec/s throughput=%.3fGB/s\n",
               mode, cfg.oneway ? "oneway" : "stream", cfg.capacity, cfg.max_len, recs, bytes,
               cw + pw, cw, pw, sleeps, P->wait_aborts + C->wait_aborts, full,
               P->paddings + C->paddings,
               P->exact_fits + C->exact_fits, P->many_partial + C->many_partial, elapsed,
               (double)recs / elapsed / 1e6, (double)bytes / elapsed / 1e9);
    }
    if (cfg.threads) {
        ep_free(&eps[0]);
        ep_free(&eps[1]);
    } else {
        ep_free(&eps[0]);
    }
    free(W.bursts);
    munmap(map, total);
    return 0;
}
