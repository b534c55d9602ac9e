/*
 * ring_bench: the C ring between two processes (fork + a shared anonymous mapping).
 *
 *   ring_bench throughput <record_bytes> <records> <capacity> spin|eventfd [batch]
 *   ring_bench pingpong   <round_trips>  spin|eventfd [max_seconds]
 *
 * Prints one JSON object on stdout.  benchmarks/ring.py compiles and drives this.
 *
 * throughput: the parent produces <records> records of <record_bytes> payload (a u64 sequence
 *   number first, the rest a fixed pattern), one ring_try_write each; the child consumes them
 *   in batches of up to 256 views, checks every sequence number and copies each payload out
 *   (a consumer that never touches the bytes would measure nothing), releasing once a batch.
 *   With [batch] > 1 the producer publishes groups of that many records with one
 *   ring_try_write_many (one release store of tail per group instead of per record).
 *   spin: both sides busy-wait (pause) when empty/full; a full producer waits until a
 *   quarter of the ring is free, the hysteresis the doorbell protocol has built in (refilling
 *   each released batch at once makes both cores fight over the same cache lines: ~8x less
 *   throughput at 1 KiB).  eventfd: the real doorbell protocol -- the consumer sleeps in
 *   read(2) on an eventfd after ring_consumer_prepare_sleep, the producer asks
 *   ring_producer_must_wake after every write and sleeps on the space eventfd after
 *   ring_producer_prepare_wait when full.
 * pingpong: one 64-byte record each way per round trip over two 64 KiB rings, until
 *   <round_trips> or [max_seconds] (default 10), whichever comes first.
 *
 *   ring_bench minimal <record_bytes> <records> <capacity>
 *
 * minimal: the baseline -- the same workload (records of [u32 len][u32 type] + payload padded
 *   to 8, one release of tail per record, the same consumer copying and checking every record
 *   and releasing head once per batch of up to 256, the same spin waits and hysteresis) over
 *   the smallest correct SPSC byte ring, written here in ~50 lines: head and tail on their own
 *   cache lines, each side caching the other's, and nothing else (no validation of the
 *   peer's positions, no counters, no doorbell flags).  What the machine gives; the ring's
 *   figures are read against it.
 */
#define _GNU_SOURCE
#include "../ring.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

#define BATCH 256

/* Shared between parent and child: a start line and the child's verdict. */
struct control {
    _Atomic int ready;
    _Atomic int go;
    _Atomic uint64_t t_end;
    _Atomic uint64_t errors;
    _Atomic uint64_t received;
};

static void die(const char *what, int rc) {
    fprintf(stderr, "ring_bench: %s: %s\n", what, rc < 0 ? ring_strerror(rc) : strerror(errno));
    exit(2);
}

static void *map_shared(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap", 0);
    return p;
}

static void bell_ring(int fd) {
    uint64_t one = 1;
    while (write(fd, &one, sizeof one) < 0 && errno == EINTR) {}
}

static void bell_wait(int fd) {
    uint64_t v;
    while (read(fd, &v, sizeof v) < 0 && errno == EINTR) {}
}

struct bells { int data, space; };

static struct bells new_bells(void) {
    struct bells b = {eventfd(0, 0), eventfd(0, 0)};
    if (b.data < 0 || b.space < 0) die("eventfd", 0);
    return b;
}

/* Spin-wait for free space with the doorbell protocol's hysteresis (a quarter of the ring). */
static void spin_for_space(ring_t *r, uint64_t need) {
    uint64_t want = r->capacity / 4 > need ? r->capacity / 4 : need;
    while (ring_free_space(r) < want) cpu_relax();
}

/* Producer side: write one record, waiting (spin or doorbell) while the ring is full. */
static void produce(ring_t *r, const struct bells *b, int sleepy, const void *p, uint32_t len) {
    for (;;) {
        int rc = ring_try_write(r, 1, p, len);
        if (rc == RING_OK) break;
        if (rc != RING_AGAIN) die("ring_try_write", rc);
        if (sleepy) {
            if (ring_producer_prepare_wait(r, len + 16)) bell_wait(b->space);
        } else {
            spin_for_space(r, 2 * ((uint64_t)len + 16));
        }
    }
    if (sleepy && ring_producer_must_wake(r)) bell_ring(b->data);
}

/* Producer side, batched: n records of len bytes back to back in buf, one publish per call. */
static void produce_many(ring_t *r, const struct bells *b, int sleepy, const uint8_t *buf,
                         const uint32_t *lens, int n, uint32_t len) {
    while (n > 0) {
        int rc = ring_try_write_many(r, 1, buf, lens, n);
        if (rc > 0) {
            buf += (size_t)rc * len;
            lens += rc;
            n -= rc;
            if (sleepy && ring_producer_must_wake(r)) bell_ring(b->data);
            continue;
        }
        if (rc != RING_AGAIN) die("ring_try_write_many", rc);
        if (sleepy) {
            if (ring_producer_prepare_wait(r, len + 16)) bell_wait(b->space);
        } else {
            spin_for_space(r, 2 * ((uint64_t)len + 16));
        }
    }
}

/* Consumer side: a batch of at least one record, waiting (spin or doorbell) while empty. */
static int consume_batch(ring_t *r, const struct bells *b, int sleepy, ring_view_t *views) {
    for (;;) {
        int n = ring_read(r, views, BATCH);
        if (n < 0) die("ring_read", n);
        if (n > 0) return n;
        if (sleepy) {
            if (ring_consumer_prepare_sleep(r)) bell_wait(b->data);
        } else {
            cpu_relax();
        }
    }
}

static void release(ring_t *r, const struct bells *b, int sleepy) {
    ring_release(r);
    if (sleepy && ring_consumer_must_wake(r)) bell_ring(b->space);
}

/* Consumer side, both rings: copy each record of a batch out (a consumer that never touches
 * the bytes would measure nothing) and check its sequence number and length; errors found. */
static uint64_t check_batch(const uint8_t *data, const ring_view_t *views, int n, uint8_t *sink,
                            uint32_t size, uint64_t *expect) {
    uint64_t errors = 0;
    for (int i = 0; i < n; i++) {
        uint64_t seq;
        memcpy(sink, data + views[i].offset, views[i].len);
        memcpy(&seq, sink, 8);
        errors += (seq != *expect) | (views[i].len != size);
        (*expect)++;
    }
    return errors;
}

static int throughput(uint32_t size, uint64_t count, uint64_t capacity, int sleepy, int batch) {
    if (batch < 1 || batch > BATCH) batch = 1;
    if (size < 8 || size > ring_max_record_for(capacity)) {
        fprintf(stderr, "ring_bench: record size must be 8..%u\n", ring_max_record_for(capacity));
        return 2;
    }
    size_t region_size = ring_region_size(capacity);
    void *region = map_shared(region_size);
    struct control *ctl = map_shared(sizeof *ctl);
    struct bells bells = new_bells();
    ring_t prod;
    int rc = ring_init(&prod, region, region_size, capacity, 1);
    if (rc < 0) die("ring_init", rc);

    pid_t pid = fork();
    if (pid < 0) die("fork", 0);
    if (pid == 0) {
        ring_t cons;
        if ((rc = ring_attach(&cons, region, region_size, 1)) < 0) die("ring_attach", rc);
        uint8_t *sink = malloc(size);
        ring_view_t *views = malloc(sizeof *views * BATCH);
        uint64_t expect = 0, errors = 0;
        atomic_store(&ctl->ready, 1);
        while (!atomic_load(&ctl->go)) cpu_relax();
        while (expect < count) {
            int n = consume_batch(&cons, &bells, sleepy, views);
            errors += check_batch(ring_data(&cons), views, n, sink, size, &expect);
            release(&cons, &bells, sleepy);
        }
        atomic_store(&ctl->t_end, ring_now_ns());
        atomic_store(&ctl->errors, errors + (sink[size - 1] != (uint8_t)(size - 1)));
        atomic_store(&ctl->received, expect);
        _exit(0);
    }

    uint8_t *payload = malloc((size_t)size * batch);
    uint32_t lens[BATCH];
    for (int k = 0; k < batch; k++) {
        lens[k] = size;
        for (uint32_t i = 0; i < size; i++) payload[(size_t)k * size + i] = (uint8_t)i;
    }
    while (!atomic_load(&ctl->ready)) cpu_relax();
    uint64_t t0 = ring_now_ns();
    atomic_store(&ctl->go, 1);
    if (batch == 1) {
        for (uint64_t seq = 0; seq < count; seq++) {
            memcpy(payload, &seq, 8);
            produce(&prod, &bells, sleepy, payload, size);
        }
    } else {
        for (uint64_t seq = 0; seq < count;) {
            int n = count - seq < (uint64_t)batch ? (int)(count - seq) : batch;
            for (int k = 0; k < n; k++, seq++) memcpy(payload + (size_t)k * size, &seq, 8);
            produce_many(&prod, &bells, sleepy, payload, lens, n, size);
        }
    }
    int status;
    waitpid(pid, &status, 0);
    double secs = (double)(atomic_load(&ctl->t_end) - t0) / 1e9;
    ring_stats_t st;
    ring_get_stats(&prod, &st);
    printf("{\"mode\": \"throughput\", \"wait\": \"%s\", \"batch\": %d, \"record_bytes\": %u, "
           "\"records\": %llu, \"capacity\": %llu, \"seconds\": %.6f, \"records_per_s\": %.1f, "
           "\"gb_per_s\": %.4f, "
           "\"errors\": %llu, \"received\": %llu, \"full_events\": %llu, "
           "\"consumer_wakeups\": %llu, \"producer_wakeups\": %llu, \"child_status\": %d}\n",
           sleepy ? "eventfd" : "spin", batch, size, (unsigned long long)count,
           (unsigned long long)capacity, secs, count / secs, count * (double)size / secs / 1e9,
           (unsigned long long)atomic_load(&ctl->errors),
           (unsigned long long)atomic_load(&ctl->received), (unsigned long long)st.full_events,
           (unsigned long long)st.consumer_wakeups, (unsigned long long)st.producer_wakeups,
           status);
    return atomic_load(&ctl->errors) == 0 && status == 0 ? 0 : 1;
}

/* --- the minimal ring (baseline) ------------------------------------------------------- */

struct mini_shared {
    _Alignas(128) _Atomic uint64_t tail;
    _Alignas(128) _Atomic uint64_t head;
    _Alignas(128) uint8_t data[];
};

struct mini {
    struct mini_shared *s;
    uint64_t mask, capacity, pos, other; /* own position, cached peer position */
};

#define MINI_PAD 0xffffffffu

static void mini_write(struct mini *m, const void *p, uint32_t len) {
    uint64_t total = (8u + len + 7u) & ~7ull;
    for (;;) {
        uint64_t index = m->pos & m->mask, to_end = m->capacity - index;
        uint64_t need = total <= to_end ? total : to_end + total;
        if (m->capacity - (m->pos - m->other) < need) {
            m->other = atomic_load_explicit(&m->s->head, memory_order_acquire);
            if (m->capacity - (m->pos - m->other) < need) { /* full: the same hysteresis */
                uint64_t want = m->capacity / 4 > need ? m->capacity / 4 : need;
                while (m->capacity - (m->pos - atomic_load_explicit(&m->s->head,
                                                                    memory_order_acquire)) < want)
                    cpu_relax();
                continue;
            }
        }
        if (total > to_end) {
            uint32_t pad[2] = {(uint32_t)(to_end - 8), MINI_PAD};
            memcpy(m->s->data + index, pad, 8);
            m->pos += to_end;
            index = 0;
        }
        uint32_t hdr[2] = {len, 1};
        memcpy(m->s->data + index, hdr, 8);
        memcpy(m->s->data + index + 8, p, len);
        m->pos += total;
        atomic_store_explicit(&m->s->tail, m->pos, memory_order_release);
        return;
    }
}

/* Up to max records into views (offsets into data); 0 when empty. */
static int mini_read(struct mini *m, ring_view_t *views, int max) {
    int n = 0;
    while (n < max) {
        if (m->pos == m->other) {
            m->other = atomic_load_explicit(&m->s->tail, memory_order_acquire);
            if (m->pos == m->other) break;
        }
        uint64_t index = m->pos & m->mask;
        uint32_t hdr[2];
        memcpy(hdr, m->s->data + index, 8);
        if (hdr[1] == MINI_PAD) {
            m->pos += m->capacity - index;
            continue;
        }
        views[n].type = hdr[1];
        views[n].len = hdr[0];
        views[n].offset = index + 8;
        n++;
        m->pos += (8u + hdr[0] + 7u) & ~7ull;
    }
    return n;
}

static int minimal(uint32_t size, uint64_t count, uint64_t capacity) {
    if (size < 8 || capacity & (capacity - 1) || size > capacity / 8) {
        fprintf(stderr, "ring_bench: minimal: record size 8..capacity/8, capacity a power of 2\n");
        return 2;
    }
    struct mini_shared *s = map_shared(sizeof *s + capacity);
    struct control *ctl = map_shared(sizeof *ctl);
    struct mini m = {s, capacity - 1, capacity, 0, 0};
    pid_t pid = fork();
    if (pid < 0) die("fork", 0);
    if (pid == 0) {
        uint8_t *sink = malloc(size);
        ring_view_t *views = malloc(sizeof *views * BATCH);
        uint64_t expect = 0, errors = 0;
        atomic_store(&ctl->ready, 1);
        while (!atomic_load(&ctl->go)) cpu_relax();
        while (expect < count) {
            int n;
            while ((n = mini_read(&m, views, BATCH)) == 0) cpu_relax();
            errors += check_batch(s->data, views, n, sink, size, &expect);
            atomic_store_explicit(&s->head, m.pos, memory_order_release);
        }
        atomic_store(&ctl->t_end, ring_now_ns());
        atomic_store(&ctl->errors, errors + (sink[size - 1] != (uint8_t)(size - 1)));
        atomic_store(&ctl->received, expect);
        _exit(0);
    }
    uint8_t *payload = malloc(size);
    for (uint32_t i = 0; i < size; i++) payload[i] = (uint8_t)i;
    while (!atomic_load(&ctl->ready)) cpu_relax();
    uint64_t t0 = ring_now_ns();
    atomic_store(&ctl->go, 1);
    for (uint64_t seq = 0; seq < count; seq++) {
        memcpy(payload, &seq, 8);
        mini_write(&m, payload, size);
    }
    int status;
    waitpid(pid, &status, 0);
    double secs = (double)(atomic_load(&ctl->t_end) - t0) / 1e9;
    printf("{\"mode\": \"minimal\", \"wait\": \"spin\", \"batch\": 1, \"record_bytes\": %u, "
           "\"records\": %llu, \"capacity\": %llu, \"seconds\": %.6f, \"records_per_s\": %.1f, "
           "\"gb_per_s\": %.4f, \"errors\": %llu, \"received\": %llu, \"child_status\": %d}\n",
           size, (unsigned long long)count, (unsigned long long)capacity, secs, count / secs,
           count * (double)size / secs / 1e9, (unsigned long long)atomic_load(&ctl->errors),
           (unsigned long long)atomic_load(&ctl->received), status);
    return atomic_load(&ctl->errors) == 0 && status == 0 ? 0 : 1;
}

#define STOP UINT64_MAX /* sequence number that tells the echoing child to exit */

static int pingpong(uint64_t rounds, int sleepy, double max_seconds) {
    const uint64_t capacity = 1 << 16;
    size_t region_size = ring_region_size(capacity);
    void *ra = map_shared(region_size), *rb = map_shared(region_size);
    struct control *ctl = map_shared(sizeof *ctl);
    struct bells ba = new_bells(), bb = new_bells();
    ring_t a, b;
    int rc;
    if ((rc = ring_init(&a, ra, region_size, capacity, 1)) < 0) die("ring_init", rc);
    if ((rc = ring_init(&b, rb, region_size, capacity, 1)) < 0) die("ring_init", rc);
    uint8_t msg[64] = {0};
    ring_view_t views[BATCH];

    pid_t pid = fork();
    if (pid < 0) die("fork", 0);
    if (pid == 0) { /* echo: consume a, produce b */
        ring_t in, out;
        if ((rc = ring_attach(&in, ra, region_size, 1)) < 0) die("ring_attach", rc);
        if ((rc = ring_attach(&out, rb, region_size, 1)) < 0) die("ring_attach", rc);
        atomic_store(&ctl->ready, 1);
        for (;;) {
            int n = consume_batch(&in, &ba, sleepy, views);
            memcpy(msg, ring_data(&in) + views[0].offset, views[0].len);
            release(&in, &ba, sleepy);
            if (n != 1) atomic_fetch_add(&ctl->errors, 1);
            uint64_t seq;
            memcpy(&seq, msg, 8);
            if (seq == STOP) _exit(0);
            produce(&out, &bb, sleepy, msg, sizeof msg);
        }
    }
    ring_t in, out;
    if ((rc = ring_attach(&out, ra, region_size, 1)) < 0) die("ring_attach", rc);
    if ((rc = ring_attach(&in, rb, region_size, 1)) < 0) die("ring_attach", rc);
    while (!atomic_load(&ctl->ready)) cpu_relax();
    uint64_t errors = 0, t0 = ring_now_ns();
    uint64_t limit = t0 + (uint64_t)(max_seconds * 1e9), done = 0;
    for (uint64_t i = 0; i < rounds; i++, done++) {
        if ((i & 255) == 255 && ring_now_ns() > limit) break;
        memcpy(msg, &i, 8);
        produce(&out, &ba, sleepy, msg, sizeof msg);
        int n = consume_batch(&in, &bb, sleepy, views);
        uint64_t seq;
        memcpy(&seq, ring_data(&in) + views[0].offset, 8);
        release(&in, &bb, sleepy);
        errors += (n != 1) | (seq != i);
    }
    uint64_t t1 = ring_now_ns();
    uint64_t stop = STOP;
    memcpy(msg, &stop, 8);
    produce(&out, &ba, sleepy, msg, sizeof msg);
    int status;
    waitpid(pid, &status, 0);
    errors += atomic_load(&ctl->errors);
    rounds = done;
    printf("{\"mode\": \"pingpong\", \"wait\": \"%s\", \"round_trips\": %llu, \"seconds\": %.6f, "
           "\"rtt_ns\": %.1f, \"errors\": %llu, \"child_status\": %d}\n",
           sleepy ? "eventfd" : "spin", (unsigned long long)rounds, (t1 - t0) / 1e9,
           (double)(t1 - t0) / rounds, (unsigned long long)errors, status);
    return errors == 0 && status == 0 ? 0 : 1;
}

static int wait_mode(const char *s) {
    if (strcmp(s, "spin") == 0) return 0;
    if (strcmp(s, "eventfd") == 0) return 1;
    fprintf(stderr, "ring_bench: wait mode is spin or eventfd, not %s\n", s);
    exit(2);
}

int main(int argc, char **argv) {
    if ((argc == 6 || argc == 7) && strcmp(argv[1], "throughput") == 0)
        return throughput((uint32_t)strtoul(argv[2], NULL, 0), strtoull(argv[3], NULL, 0),
                          strtoull(argv[4], NULL, 0), wait_mode(argv[5]),
                          argc == 7 ? atoi(argv[6]) : 1);
    if (argc == 5 && strcmp(argv[1], "minimal") == 0)
        return minimal((uint32_t)strtoul(argv[2], NULL, 0), strtoull(argv[3], NULL, 0),
                       strtoull(argv[4], NULL, 0));
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "pingpong") == 0)
        return pingpong(strtoull(argv[2], NULL, 0), wait_mode(argv[3]),
                        argc == 5 ? atof(argv[4]) : 10.0);
    fprintf(stderr,
            "usage: ring_bench throughput <record_bytes> <records> <capacity> spin|eventfd "
            "[batch]\n"
            "       ring_bench pingpong <round_trips> spin|eventfd [max_seconds]\n"
            "       ring_bench minimal <record_bytes> <records> <capacity>\n");
    return 2;
}
