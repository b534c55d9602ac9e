/*
 * sidecar ring: a lock-free single-producer / single-consumer record ring laid over a
 * caller-provided memory region (typically a POSIX shared-memory mapping shared by two
 * processes).  No allocation, no syscalls, no Python.  See ring.c for the layout diagram and
 * docs/ring.md for the full protocol (enough to write a peer in another language).
 *
 * Threading model: exactly one producer and one consumer, each in its own thread or process,
 * each with its own ring_t handle over the same region.  Doorbells (eventfds, pipes, futexes...)
 * are the caller's business; this library only tells the caller *when* to ring or sleep.
 *
 * Everything between the cffi markers is parsed by build.py as the cffi cdef, so it must stay
 * plain C declarations (no macros with expressions, no attributes, no includes).
 */
#ifndef SIDECAR_RING_H
#define SIDECAR_RING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* cffi:begin */

/* Return codes.  >= 0 is success. */
#define RING_OK           0
#define RING_AGAIN       -1   /* full (writer) -- try again once there is space */
#define RING_ETOOBIG     -2   /* record larger than the ring's max_record */
#define RING_EINVAL      -3   /* bad argument (capacity not a power of two, region too small...) */
#define RING_EMAGIC      -4   /* region does not start with the ring magic */
#define RING_EVERSION    -5   /* layout version this library does not speak */
#define RING_EGENERATION -6   /* generation differs from the one expected: a re-created ring */
#define RING_ECAPACITY   -7   /* capacity in the header is invalid or does not fit the region */
#define RING_ECORRUPT    -8   /* positions or a record header are impossible: peer is broken */

#define RING_MAGIC       0x31474e4952524353  /* "SCRRING1" little-endian */
#define RING_VERSION     1
#define RING_HEADER_SIZE 2048                /* bytes before the data area */
#define RING_TYPE_PADDING 0xFFFFFFFF         /* filler to the end of the buffer at wrap */
#define RING_MIN_CAPACITY 4096

/* Process-local handle.  Plain memory owned by the caller; fields are private. */
typedef struct ring {
    void     *shared;      /* the header in the region */
    uint8_t  *data;        /* start of the data area */
    uint64_t  capacity;    /* bytes in the data area, a power of two */
    uint64_t  mask;
    uint32_t  max_record;  /* largest payload accepted */
    uint32_t  broken;      /* sticky: the peer wrote an impossible position (RING_ECORRUPT) */
    uint64_t  head_cache;  /* producer's copy of the consumer position */
    uint64_t  tail_cache;  /* consumer's copy of the producer position */
    uint64_t  read_pos;    /* consumer: position after the last record handed out */
    uint64_t  released;    /* consumer: position last released (published as head) */
    uint64_t  write_pos;   /* producer: private tail, published by ring_publish */
} ring_t;

/* One record handed out by ring_read: payload at data + offset, len bytes long. */
typedef struct ring_view {
    uint32_t type;
    uint32_t len;
    uint64_t offset;       /* from ring_data(); the payload never wraps */
} ring_view_t;

typedef struct ring_stats {
    uint64_t capacity;
    uint64_t used;               /* bytes published and not yet consumed */
    uint64_t generation;
    uint64_t records_written;
    uint64_t bytes_written;
    uint64_t full_events;        /* writes refused for lack of space */
    uint64_t consumer_wakeups;   /* doorbells the producer was told to ring */
    uint64_t records_read;
    uint64_t bytes_read;
    uint64_t producer_wakeups;   /* doorbells the consumer was told to ring */
    uint64_t consumer_sleeps;
    uint64_t producer_heartbeat; /* CLOCK_MONOTONIC ns written by each side */
    uint64_t consumer_heartbeat;
    uint32_t producer_pid;
    uint32_t consumer_pid;
    uint32_t consumer_sleeping;
    uint32_t producer_waiting;
} ring_stats_t;

/* Bytes of region needed for a ring with this capacity. */
size_t   ring_region_size(uint64_t capacity);
/* Largest payload a ring of this capacity accepts (a fixed fraction of it). */
uint32_t ring_max_record_for(uint64_t capacity);

/* Format a zeroed or stale region as an empty ring.  Writes the magic last (release). */
int ring_init(ring_t *r, void *region, size_t region_size, uint64_t capacity, uint64_t generation);
/* Attach to a formatted region; expected_generation 0 accepts any generation. */
int ring_attach(ring_t *r, void *region, size_t region_size, uint64_t expected_generation);
/* Re-validate magic/version/generation of an attached ring (a peer may have re-created it). */
int ring_check(ring_t *r, uint64_t expected_generation);

/* --- producer side --- */
/* Copy one record in and publish it.  RING_AGAIN when full; RING_ECORRUPT when the consumer's
 * position is impossible (a broken or hostile peer). */
int ring_try_write(ring_t *r, uint32_t type, const void *payload, uint32_t len);
/* Write up to n records stored back to back in buf (lens[i] bytes each), publish once.
 * Returns how many were written (0..n), or a negative error for the first record. */
int ring_try_write_many(ring_t *r, uint32_t type, const void *buf, const uint32_t *lens, int n);
/* Free bytes as the producer sees them now (re-reads the consumer position). */
uint64_t ring_free_space(ring_t *r);
/* After publishing: 1 if the consumer was asleep and the caller must ring its doorbell. */
int ring_producer_must_wake(ring_t *r);
/* Free bytes a record with a payload of len bytes needs at the current write position,
 * including the padding to the end of the data area if it must wrap: the `need` to pass to
 * ring_producer_prepare_wait (passing just the record size can spin at the wrap). */
uint64_t ring_space_needed(ring_t *r, uint32_t len);
/* Before sleeping for space: announce that `need` free bytes are wanted.  Returns 1 if the
 * caller may sleep on the space doorbell, 0 if space appeared meanwhile (flag withdrawn).
 * A caller that then does not sleep after all leaves the flag set: it costs at most one
 * needless doorbell, which the consumer's ring_consumer_must_wake clears. */
int ring_producer_prepare_wait(ring_t *r, uint32_t need);

/* --- consumer side --- */
/* Hand out up to max records after the last ones handed out, skipping padding.  Nothing is
 * released to the producer until ring_release.  Returns the count or RING_ECORRUPT. */
int ring_read(ring_t *r, ring_view_t *views, int max);
/* Same, with views flattened into uint32 triples (type, len, offset) for cheap bulk access
 * from dynamic languages.  offset fits in 32 bits because capacity is at most 2^30. */
int ring_read_flat(ring_t *r, uint32_t *out, int max);
/* Copy the payloads of the next records of `type` back to back into buf and set ends[i] to
 * the offset in buf just past record i's payload; padding and records of other types are
 * skipped (consumed).  Stops after max records, when the ring is empty, or before a record of
 * `type` that does not fit in what is left of the cap bytes of buf -- that one stays unread,
 * so a record larger than cap must be read in place with ring_read.  The copies do not need
 * the ring: call ring_release at once and decode at leisure.  Returns the count (0: empty,
 * or the next record is larger than cap) or RING_ECORRUPT. */
int ring_read_gather(ring_t *r, uint32_t type, void *buf, uint32_t cap, uint32_t *ends, int max);
/* Release everything handed out so far (one release store of head). */
void ring_release(ring_t *r);
/* After releasing: 1 if the producer waits for space, enough is now free, and the caller must
 * ring the producer's space doorbell. */
int ring_consumer_must_wake(ring_t *r);
/* Before sleeping on the data doorbell: 1 if the caller may sleep (flag set, ring still empty
 * after a full fence), 0 if records arrived meanwhile (flag withdrawn).  As with
 * ring_producer_prepare_wait, a flag left set by a caller that did not sleep after all costs
 * at most one needless doorbell. */
int ring_consumer_prepare_sleep(ring_t *r);
/* Bytes published and not yet released (as the consumer sees them). */
uint64_t ring_used(ring_t *r);

/* --- either side --- */
uint8_t *ring_data(ring_t *r);
void ring_heartbeat_producer(ring_t *r, uint64_t now_ns, uint32_t pid);
void ring_heartbeat_consumer(ring_t *r, uint64_t now_ns, uint32_t pid);
/* Each side's last heartbeat (CLOCK_MONOTONIC ns; 0: it never beat), one relaxed load: cheap
 * enough for a host to read at every dispatch decision (a worker beats on the ring it
 * produces while its event loop runs; see docs/operations.md, "Dispatch"). */
uint64_t ring_producer_heartbeat_ns(ring_t *r);
uint64_t ring_consumer_heartbeat_ns(ring_t *r);
uint64_t ring_now_ns(void);
void ring_get_stats(ring_t *r, ring_stats_t *out);
const char *ring_strerror(int code);

/* cffi:end */

#ifdef __cplusplus
}
#endif
#endif
