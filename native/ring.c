/*
 * sidecar ring -- lock-free SPSC variable-length record ring over a caller-provided region.
 *
 * Region layout (all integers little-endian, as the host writes them; both peers share a host):
 *
 *   offset  line  contents (each hot field alone on a 128-byte line: no false sharing, and
 *                 128 covers the adjacent-line prefetcher pairing 64-byte lines)
 *   0       meta  u64 magic "SCRRING1" | u32 version | u32 header_size | u64 capacity |
 *                 u32 max_record | u32 reserved | u64 generation
 *   128     tail  u64 producer position (bytes ever published)       -- written by producer
 *   256     head  u64 consumer position (bytes ever released)        -- written by consumer
 *   384     slp   u32 consumer_sleeping (1 = consumer asleep on data doorbell)
 *   512     wait  u32 producer_waiting | u32 producer_need (free bytes wanted)
 *   640     phb   u64 producer heartbeat ns | u32 producer pid
 *   768     chb   u64 consumer heartbeat ns | u32 consumer pid
 *   896     pst   u64 records_written | bytes_written | full_events | consumer_wakeups
 *   1024    cst   u64 records_read | bytes_read | producer_wakeups | consumer_sleeps
 *   ...     (reserved up to RING_HEADER_SIZE = 2048)
 *   2048    data  capacity bytes (a power of two), records back to back
 *
 * Positions only grow (64-bit: no wrap in practice); index = position & (capacity - 1).
 * 0 <= tail - head <= capacity always.
 *
 * Record (8-byte aligned, never split across the end of the data area):
 *
 *    0                   4                   8
 *   +-------------------+-------------------+--------------------------+---------+
 *   | u32 length        | u32 type          | payload (length bytes)   | pad to 8|
 *   +-------------------+-------------------+--------------------------+---------+
 *
 * When a record does not fit between the write index and the end of the data area, the
 * producer writes a PADDING record (type 0xFFFFFFFF, length = bytes left after its header)
 * filling the rest of the area and writes the record at index 0.  Consumers skip PADDING.
 * The largest payload is capacity/8 (ring_max_record_for), so a record plus worst-case
 * padding always fits in an empty ring.
 *
 * Memory ordering: the producer fills payload + header with plain stores, then publishes tail
 * with a release store; the consumer loads tail with acquire (only when its cached copy says
 * empty) and releases head with a release store after it is done with the bytes; the producer
 * loads head with acquire only when its cached copy says full.
 *
 * Doorbells (the caller's eventfds): sleeping/waiting flags + a seq_cst fence on each side.
 * Consumer: sleeping=1; fence; re-check tail -> sleep only if still empty.
 * Producer: publish tail; fence; if sleeping: exchange(sleeping, 0) == 1 -> ring doorbell.
 * Either the producer sees sleeping==1 or the consumer's re-check sees the new tail; with
 * acquire/release alone both could miss (store->load reordering), hence the fences.
 * The space doorbell mirrors this with waiting/need, and the consumer only wakes a waiting
 * producer once max(need, capacity/4) bytes are free (hysteresis).
 */
#define _POSIX_C_SOURCE 200809L
#include "ring.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define LINE 128

/* Explicit padding places each field at its documented offset; the struct itself needs only
 * 8-byte alignment, so any 8-aligned region works (mmap gives 4096). */
struct ring_shared {
    /* meta, written once by ring_init (magic last, release) */
    _Atomic uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t capacity;
    uint32_t max_record;
    uint32_t reserved;
    _Atomic uint64_t generation;
    uint8_t pad0[LINE - 40];

    _Atomic uint64_t tail;
    uint8_t pad1[LINE - 8];
    _Atomic uint64_t head;
    uint8_t pad2[LINE - 8];
    _Atomic uint32_t consumer_sleeping;
    uint8_t pad3[LINE - 4];
    _Atomic uint32_t producer_waiting;
    _Atomic uint32_t producer_need;
    uint8_t pad4[LINE - 8];
    _Atomic uint64_t producer_heartbeat;
    _Atomic uint32_t producer_pid;
    uint8_t pad5[LINE - 12];
    _Atomic uint64_t consumer_heartbeat;
    _Atomic uint32_t consumer_pid;
    uint8_t pad6[LINE - 12];
    _Atomic uint64_t records_written;
    _Atomic uint64_t bytes_written;
    _Atomic uint64_t full_events;
    _Atomic uint64_t consumer_wakeups;
    uint8_t pad7[LINE - 32];
    _Atomic uint64_t records_read;
    _Atomic uint64_t bytes_read;
    _Atomic uint64_t producer_wakeups;
    _Atomic uint64_t consumer_sleeps;
};

_Static_assert(sizeof(struct ring_shared) <= RING_HEADER_SIZE, "header overflows");
_Static_assert(offsetof(struct ring_shared, tail) == 128, "layout: tail");
_Static_assert(offsetof(struct ring_shared, head) == 256, "layout: head");
_Static_assert(offsetof(struct ring_shared, consumer_sleeping) == 384, "layout: sleeping");
_Static_assert(offsetof(struct ring_shared, producer_waiting) == 512, "layout: waiting");
_Static_assert(offsetof(struct ring_shared, producer_heartbeat) == 640, "layout: phb");
_Static_assert(offsetof(struct ring_shared, consumer_heartbeat) == 768, "layout: chb");
_Static_assert(offsetof(struct ring_shared, records_written) == 896, "layout: pstats");
_Static_assert(offsetof(struct ring_shared, records_read) == 1024, "layout: cstats");

#define RECORD_HEADER 8u
#define MAX_CAPACITY (1ull << 30) /* offsets in ring_read_flat are u32 */

#define RLX memory_order_relaxed
#define ACQ memory_order_acquire
#define REL memory_order_release

static inline struct ring_shared *sh(ring_t *r) { return (struct ring_shared *)r->shared; }
static inline uint64_t align8(uint64_t n) { return (n + 7u) & ~(uint64_t)7u; }

/* Single-writer counters: a relaxed load+store is enough and keeps the hot path RMW-free. */
static inline void bump(_Atomic uint64_t *c, uint64_t n) {
    atomic_store_explicit(c, atomic_load_explicit(c, RLX) + n, RLX);
}

static inline void put_header(uint8_t *at, uint32_t len, uint32_t type) {
    memcpy(at, &len, 4);
    memcpy(at + 4, &type, 4);
}

static int valid_capacity(uint64_t capacity) {
    return capacity >= RING_MIN_CAPACITY && capacity <= MAX_CAPACITY &&
           (capacity & (capacity - 1)) == 0;
}

size_t ring_region_size(uint64_t capacity) { return RING_HEADER_SIZE + (size_t)capacity; }

uint32_t ring_max_record_for(uint64_t capacity) {
    if (capacity < 8 * RECORD_HEADER) return 0;
    return (uint32_t)(capacity / 8 - RECORD_HEADER);
}

static void bind_handle(ring_t *r, void *region, uint64_t capacity, uint32_t max_record) {
    r->shared = region;
    r->data = (uint8_t *)region + RING_HEADER_SIZE;
    r->capacity = capacity;
    r->mask = capacity - 1;
    r->max_record = max_record;
    uint64_t tail = atomic_load_explicit(&sh(r)->tail, ACQ);
    uint64_t head = atomic_load_explicit(&sh(r)->head, ACQ);
    r->head_cache = head;
    r->tail_cache = tail;
    r->read_pos = head;
    r->released = head;
    r->write_pos = tail;
    r->broken = 0;
}

int ring_init(ring_t *r, void *region, size_t region_size, uint64_t capacity, uint64_t generation) {
    if (!r || !region || !valid_capacity(capacity)) return RING_EINVAL;
    if (region_size < ring_region_size(capacity)) return RING_EINVAL;
    if (((uintptr_t)region & 7u) != 0) return RING_EINVAL; /* 8-byte atomics */
    struct ring_shared *s = region;
    atomic_store_explicit(&s->magic, 0, REL); /* a re-init first invalidates the old ring */
    memset((uint8_t *)region + sizeof(s->magic), 0, RING_HEADER_SIZE - sizeof(s->magic));
    s->version = RING_VERSION;
    s->header_size = RING_HEADER_SIZE;
    s->capacity = capacity;
    s->max_record = ring_max_record_for(capacity);
    atomic_store_explicit(&s->generation, generation, RLX);
    atomic_store_explicit(&s->magic, RING_MAGIC, REL);
    bind_handle(r, region, capacity, s->max_record);
    return RING_OK;
}

int ring_attach(ring_t *r, void *region, size_t region_size, uint64_t expected_generation) {
    if (!r || !region || region_size < RING_HEADER_SIZE) return RING_EINVAL;
    if (((uintptr_t)region & 7u) != 0) return RING_EINVAL; /* 8-byte atomics */
    struct ring_shared *s = region;
    if (atomic_load_explicit(&s->magic, ACQ) != RING_MAGIC) return RING_EMAGIC;
    if (s->version != RING_VERSION || s->header_size != RING_HEADER_SIZE) return RING_EVERSION;
    uint64_t capacity = s->capacity;
    if (!valid_capacity(capacity) || region_size < ring_region_size(capacity)) return RING_ECAPACITY;
    if (s->max_record != ring_max_record_for(capacity)) return RING_ECAPACITY;
    uint64_t gen = atomic_load_explicit(&s->generation, RLX);
    if (expected_generation != 0 && gen != expected_generation) return RING_EGENERATION;
    bind_handle(r, region, capacity, s->max_record);
    if (r->write_pos - r->read_pos > capacity || ((r->write_pos | r->read_pos) & 7u))
        return RING_ECORRUPT;
    return RING_OK;
}

int ring_check(ring_t *r, uint64_t expected_generation) {
    struct ring_shared *s = sh(r);
    if (atomic_load_explicit(&s->magic, ACQ) != RING_MAGIC) return RING_EMAGIC;
    if (s->capacity != r->capacity) return RING_ECAPACITY;
    if (expected_generation != 0 &&
        atomic_load_explicit(&s->generation, RLX) != expected_generation)
        return RING_EGENERATION;
    return RING_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* producer                                                                                    */

/* The consumer's head is untrusted: one outside [write_pos - capacity, write_pos] would make
 * us overwrite unread bytes.  Returns 0 and refreshes head_cache, or RING_ECORRUPT. */
static int load_head(ring_t *r) {
    uint64_t head = atomic_load_explicit(&sh(r)->head, ACQ);
    if (r->write_pos - head > r->capacity) {
        r->broken = 1; /* sticky: every later call on this handle reports it */
        return RING_ECORRUPT;
    }
    r->head_cache = head;
    return 0;
}

/* Make room for a record of `total` aligned bytes at write_pos; returns its index, RING_AGAIN
 * or RING_ECORRUPT.  May first write a PADDING record up to the end of the data area (not yet
 * published).  The consumer's head is untrusted: one outside [write_pos - capacity, write_pos]
 * would make us overwrite unread bytes, so it is refused. */
static int64_t reserve(ring_t *r, uint64_t total) {
    if (r->broken) return RING_ECORRUPT;
    uint64_t pos = r->write_pos;
    uint64_t index = pos & r->mask;
    uint64_t to_end = r->capacity - index;
    uint64_t need = total <= to_end ? total : to_end + total;
    if (r->capacity - (pos - r->head_cache) < need) {
        if (load_head(r) < 0) return RING_ECORRUPT;
        if (r->capacity - (pos - r->head_cache) < need) {
            bump(&sh(r)->full_events, 1);
            return RING_AGAIN;
        }
    }
    if (total > to_end) {
        put_header(r->data + index, (uint32_t)(to_end - RECORD_HEADER), RING_TYPE_PADDING);
        r->write_pos = pos + to_end;
        index = 0;
    }
    return (int64_t)index;
}

static inline void publish(ring_t *r, uint64_t records, uint64_t bytes) {
    atomic_store_explicit(&sh(r)->tail, r->write_pos, REL);
    bump(&sh(r)->records_written, records);
    bump(&sh(r)->bytes_written, bytes);
}

int ring_try_write(ring_t *r, uint32_t type, const void *payload, uint32_t len) {
    if (len > r->max_record) return RING_ETOOBIG;
    if (type == RING_TYPE_PADDING) return RING_EINVAL;
    uint64_t total = align8(RECORD_HEADER + (uint64_t)len);
    int64_t index = reserve(r, total);
    if (index < 0) return (int)index;
    uint8_t *at = r->data + index;
    if (len) memcpy(at + RECORD_HEADER, payload, len);
    put_header(at, len, type);
    r->write_pos += total;
    publish(r, 1, len);
    return RING_OK;
}

int ring_try_write_many(ring_t *r, uint32_t type, const void *buf, const uint32_t *lens, int n) {
    if (type == RING_TYPE_PADDING || n < 0) return RING_EINVAL;
    const uint8_t *src = buf;
    int done = 0, rc = RING_AGAIN;
    uint64_t bytes = 0;
    for (; done < n; done++) {
        uint32_t len = lens[done];
        if (len > r->max_record) {
            if (done == 0) return RING_ETOOBIG;
            break;
        }
        uint64_t total = align8(RECORD_HEADER + len);
        int64_t index = reserve(r, total);
        if (index < 0) {
            rc = (int)index;
            break;
        }
        uint8_t *at = r->data + index;
        memcpy(at + RECORD_HEADER, src, len);
        put_header(at, len, type);
        r->write_pos += total;
        src += len;
        bytes += len;
    }
    if (done == 0) return n == 0 ? 0 : rc;
    publish(r, (uint64_t)done, bytes);
    return done;
}

uint64_t ring_space_needed(ring_t *r, uint32_t len) {
    uint64_t total = align8(RECORD_HEADER + (uint64_t)len);
    uint64_t to_end = r->capacity - (r->write_pos & r->mask);
    uint64_t need = total <= to_end ? total : to_end + total;
    return need < r->capacity ? need : r->capacity;
}

uint64_t ring_free_space(ring_t *r) {
    if (load_head(r) < 0) return 0; /* the next write reports RING_ECORRUPT */
    return r->capacity - (r->write_pos - r->head_cache);
}

int ring_producer_must_wake(ring_t *r) {
    struct ring_shared *s = sh(r);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&s->consumer_sleeping, RLX) &&
        atomic_exchange_explicit(&s->consumer_sleeping, 0, memory_order_acq_rel)) {
        bump(&s->consumer_wakeups, 1);
        return 1;
    }
    return 0;
}

int ring_producer_prepare_wait(ring_t *r, uint32_t need) {
    struct ring_shared *s = sh(r);
    if (need > r->capacity) need = (uint32_t)r->capacity;
    atomic_store_explicit(&s->producer_need, need, RLX);
    atomic_store_explicit(&s->producer_waiting, 1, RLX);
    atomic_thread_fence(memory_order_seq_cst);
    /* a corrupt head: don't sleep; the retried write reports RING_ECORRUPT */
    if (load_head(r) < 0 || r->capacity - (r->write_pos - r->head_cache) >= need) {
        atomic_store_explicit(&s->producer_waiting, 0, RLX);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* consumer                                                                                    */

/* Validate and return the record at read_pos, or 0 when empty, RING_ECORRUPT when the bytes
 * cannot be a record.  Skips padding.  Never reads outside the data area. */
static int next_record(ring_t *r, uint32_t *type, uint32_t *len, uint64_t *offset) {
    if (r->broken) return RING_ECORRUPT;
    for (int hops = 0; hops < 2; hops++) { /* at most one padding record in a row */
        uint64_t pos = r->read_pos;
        if (pos == r->tail_cache) {
            uint64_t tail = atomic_load_explicit(&sh(r)->tail, ACQ);
            if (tail == pos) return 0;
            /* views handed out but not released still occupy the ring: more than a ring's
             * worth past the released head would overlap them */
            if (tail - pos > r->capacity || tail - r->released > r->capacity || (tail & 7u))
                return RING_ECORRUPT;
            r->tail_cache = tail;
        }
        uint64_t avail = r->tail_cache - pos;
        uint64_t index = pos & r->mask;
        if ((index & 7u) || avail < RECORD_HEADER) return RING_ECORRUPT;
        uint32_t l, t;
        memcpy(&l, r->data + index, 4);
        memcpy(&t, r->data + index + 4, 4);
        uint64_t to_end = r->capacity - index;
        if (t == RING_TYPE_PADDING) {
            if ((uint64_t)l + RECORD_HEADER != to_end || avail < to_end) return RING_ECORRUPT;
            r->read_pos = pos + to_end;
            continue;
        }
        uint64_t total = align8(RECORD_HEADER + (uint64_t)l);
        if (l > r->max_record || total > to_end || total > avail) return RING_ECORRUPT;
        *type = t;
        *len = l;
        *offset = index + RECORD_HEADER;
        r->read_pos = pos + total;
        return 1;
    }
    return RING_ECORRUPT; /* two paddings in a row cannot happen */
}

int ring_read(ring_t *r, ring_view_t *views, int max) {
    int n = 0;
    uint64_t bytes = 0;
    while (n < max) {
        int rc = next_record(r, &views[n].type, &views[n].len, &views[n].offset);
        if (rc < 0) {
            r->broken = 1;
            return rc;
        }
        if (rc == 0) break;
        bytes += views[n].len;
        n++;
    }
    if (n) {
        bump(&sh(r)->records_read, (uint64_t)n);
        bump(&sh(r)->bytes_read, bytes);
    }
    return n;
}

int ring_read_flat(ring_t *r, uint32_t *out, int max) {
    int n = 0;
    uint64_t bytes = 0;
    while (n < max) {
        uint32_t type, len;
        uint64_t offset;
        int rc = next_record(r, &type, &len, &offset);
        if (rc < 0) {
            r->broken = 1;
            return rc;
        }
        if (rc == 0) break;
        out[3 * n] = type;
        out[3 * n + 1] = len;
        out[3 * n + 2] = (uint32_t)offset;
        bytes += len;
        n++;
    }
    if (n) {
        bump(&sh(r)->records_read, (uint64_t)n);
        bump(&sh(r)->bytes_read, bytes);
    }
    return n;
}

int ring_read_gather(ring_t *r, uint32_t type, void *buf, uint32_t cap, uint32_t *ends,
                     int max) {
    uint8_t *out = buf;
    uint32_t used = 0;
    int n = 0, seen = 0;
    uint64_t bytes = 0;
    while (n < max) {
        uint64_t before = r->read_pos;
        uint32_t t, len;
        uint64_t offset;
        int rc = next_record(r, &t, &len, &offset);
        if (rc < 0) {
            r->broken = 1;
            return rc;
        }
        if (rc == 0) break;
        if (t != type) { /* consumed, like ring_read's caller skipping it */
            seen++;
            bytes += len;
            continue;
        }
        if (len > cap - used) {
            r->read_pos = before; /* unread: the next call (or ring_read) starts with it */
            break;
        }
        memcpy(out + used, r->data + offset, len);
        used += len;
        ends[n++] = used;
        seen++;
        bytes += len;
    }
    if (seen) {
        bump(&sh(r)->records_read, (uint64_t)seen);
        bump(&sh(r)->bytes_read, bytes);
    }
    return n;
}

void ring_release(ring_t *r) {
    r->released = r->read_pos;
    atomic_store_explicit(&sh(r)->head, r->read_pos, REL);
}

int ring_consumer_must_wake(ring_t *r) {
    struct ring_shared *s = sh(r);
    atomic_thread_fence(memory_order_seq_cst);
    if (!atomic_load_explicit(&s->producer_waiting, RLX)) return 0;
    uint64_t need = atomic_load_explicit(&s->producer_need, RLX);
    uint64_t quarter = r->capacity / 4;
    uint64_t want = need > quarter ? need : quarter;
    /* head as released by us; tail as last seen is a lower bound of what is used */
    uint64_t tail = atomic_load_explicit(&s->tail, ACQ);
    uint64_t used = tail - r->read_pos;
    if (used > r->capacity) used = r->capacity;
    if (r->capacity - used < want) return 0;
    if (atomic_exchange_explicit(&s->producer_waiting, 0, memory_order_acq_rel)) {
        bump(&s->producer_wakeups, 1);
        return 1;
    }
    return 0;
}

int ring_consumer_prepare_sleep(ring_t *r) {
    struct ring_shared *s = sh(r);
    atomic_store_explicit(&s->consumer_sleeping, 1, RLX);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&s->tail, ACQ) != r->read_pos) {
        atomic_store_explicit(&s->consumer_sleeping, 0, RLX);
        return 0;
    }
    bump(&s->consumer_sleeps, 1);
    return 1;
}

uint64_t ring_used(ring_t *r) {
    uint64_t tail = atomic_load_explicit(&sh(r)->tail, ACQ);
    uint64_t head = atomic_load_explicit(&sh(r)->head, ACQ);
    uint64_t used = tail - head;
    return used > r->capacity ? r->capacity : used;
}

/* ------------------------------------------------------------------------------------------ */

uint8_t *ring_data(ring_t *r) { return r->data; }

void ring_heartbeat_producer(ring_t *r, uint64_t now_ns, uint32_t pid) {
    atomic_store_explicit(&sh(r)->producer_heartbeat, now_ns, RLX);
    atomic_store_explicit(&sh(r)->producer_pid, pid, RLX);
}

void ring_heartbeat_consumer(ring_t *r, uint64_t now_ns, uint32_t pid) {
    atomic_store_explicit(&sh(r)->consumer_heartbeat, now_ns, RLX);
    atomic_store_explicit(&sh(r)->consumer_pid, pid, RLX);
}

uint64_t ring_producer_heartbeat_ns(ring_t *r) {
    return atomic_load_explicit(&sh(r)->producer_heartbeat, RLX);
}

uint64_t ring_consumer_heartbeat_ns(ring_t *r) {
    return atomic_load_explicit(&sh(r)->consumer_heartbeat, RLX);
}

uint64_t ring_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void ring_get_stats(ring_t *r, ring_stats_t *o) {
    struct ring_shared *s = sh(r);
    memset(o, 0, sizeof *o);
    o->capacity = r->capacity;
    o->used = ring_used(r);
    o->generation = atomic_load_explicit(&s->generation, RLX);
    o->records_written = atomic_load_explicit(&s->records_written, RLX);
    o->bytes_written = atomic_load_explicit(&s->bytes_written, RLX);
    o->full_events = atomic_load_explicit(&s->full_events, RLX);
    o->consumer_wakeups = atomic_load_explicit(&s->consumer_wakeups, RLX);
    o->records_read = atomic_load_explicit(&s->records_read, RLX);
    o->bytes_read = atomic_load_explicit(&s->bytes_read, RLX);
    o->producer_wakeups = atomic_load_explicit(&s->producer_wakeups, RLX);
    o->consumer_sleeps = atomic_load_explicit(&s->consumer_sleeps, RLX);
    o->producer_heartbeat = atomic_load_explicit(&s->producer_heartbeat, RLX);
    o->consumer_heartbeat = atomic_load_explicit(&s->consumer_heartbeat, RLX);
    o->producer_pid = atomic_load_explicit(&s->producer_pid, RLX);
    o->consumer_pid = atomic_load_explicit(&s->consumer_pid, RLX);
    o->consumer_sleeping = atomic_load_explicit(&s->consumer_sleeping, RLX);
    o->producer_waiting = atomic_load_explicit(&s->producer_waiting, RLX);
}

const char *ring_strerror(int code) {
    switch (code) {
    case RING_OK: return "ok";
    case RING_AGAIN: return "ring full";
    case RING_ETOOBIG: return "record larger than the ring's maximum";
    case RING_EINVAL: return "invalid argument";
    case RING_EMAGIC: return "not a ring (bad magic)";
    case RING_EVERSION: return "unsupported ring layout version";
    case RING_EGENERATION: return "ring generation mismatch (re-created)";
    case RING_ECAPACITY: return "invalid ring capacity";
    case RING_ECORRUPT: return "ring corrupt";
    default: return "unknown ring error";
    }
}
