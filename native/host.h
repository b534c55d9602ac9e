/*
 * host.h -- attach a process to a running sidecar's worker pool (docs/protocol.md,
 * "Attaching a host").  C, no Python, no allocation on the data path.
 *
 *   int ctl = sc_connect("/run/sidecar/attach.sock");
 *   sc_recv(ctl, ...)            WELCOME, then WORKER messages with 6 descriptors each
 *   sc_pair_t *w = sc_pair_open(fds, gen_to_worker, gen_to_host, &err);
 *   sc_pair_write(w, msgpack, len)        events to the worker (RING_AGAIN: full, wait space)
 *   sc_pair_read(w, buf, cap)             events from the worker (0: empty)
 *   sc_pair_prepare_sleep(w) + sc_wait()  sleep on the doorbells when there is nothing to do
 *
 * Also a minimal msgpack writer/reader (sc_mp_*) for the few types events use: nil, bool,
 * int, str, bin, array.  The Node.js package (node/) loads this library, built with ring.c as
 * libsidecar_ring.so, through koffi.
 */
#ifndef SIDECAR_HOST_H
#define SIDECAR_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "ring.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Control message kinds (front-end -> host). */
#define SC_WELCOME     16
#define SC_WORKER      17
#define SC_WORKER_GONE 18
#define SC_BYE         19
#define SC_WORKER_DRAINING 20
#define SC_RING_FDS     6   /* to_worker segment, data, space; to_host segment, data, space */

typedef struct sc_pair sc_pair_t;  /* one worker's ring pair, mapped in this process */

/* Connect to the attach socket (SOCK_SEQPACKET).  Returns the descriptor or -errno. */
int sc_connect(const char *path);
/* Receive one control message (blocking unless the socket is non-blocking) into buf.  Up to
 * SC_RING_FDS descriptors land in fds (close-on-exec), their count in *nfds.  Returns the
 * message length, 0 at end of stream, -errno (-EAGAIN: nothing there; -EMSGSIZE: truncated). */
int sc_recv(int fd, void *buf, int cap, int *fds, int *nfds);

/* Map and attach a ring pair from the 6 descriptors of a WORKER message; the pair owns the
 * descriptors from then on (also on failure: they are closed).  NULL and *err (a RING_* code
 * or -errno) on failure. */
sc_pair_t *sc_pair_open(const int *fds, uint64_t gen_to_worker, uint64_t gen_to_host, int *err);
/* Unmap, close the descriptors, free. */
void sc_pair_close(sc_pair_t *p);
int sc_pair_data_fd(sc_pair_t *p);    /* to_host data doorbell: wait on it to read */
int sc_pair_space_fd(sc_pair_t *p);   /* to_worker space doorbell: wait on it to write */
uint32_t sc_pair_max_record(sc_pair_t *p);  /* largest event this host may write */

/* Publish one event (msgpack bytes) to the worker; rings its doorbell if it sleeps.
 * RING_OK, RING_AGAIN when the ring is full, RING_ETOOBIG, RING_ECORRUPT. */
int sc_pair_write(sc_pair_t *p, const void *data, uint32_t len);
/* Copy the next event from the worker into buf and give its bytes back.  cap must be at least
 * the ring's max_record (RING_EINVAL otherwise).  Returns its length, 0 when there is none,
 * RING_ECORRUPT. */
int sc_pair_read(sc_pair_t *p, void *buf, uint32_t cap);
/* Copy as many events as surely fit into buf, each as [u32 length][payload], and release
 * them with one store.  cap must be >= max_record + 4.  Returns bytes used (0: none), or
 * RING_ECORRUPT / RING_EINVAL. */
int sc_pair_read_many(sc_pair_t *p, void *buf, uint32_t cap);
/* 1 if the ring is empty with the sleeping flag set: wait on sc_pair_data_fd (the worker will
 * ring it).  0 if events arrived meanwhile: read again. */
int sc_pair_prepare_sleep(sc_pair_t *p);
/* 1 if an event of len bytes does not fit yet and the waiting flag is set: wait on
 * sc_pair_space_fd.  0 if it fits now. */
int sc_pair_prepare_wait_space(sc_pair_t *p, uint32_t len);

/* Block until one of fds[0..n) is readable, or timeout_ms (-1: forever).  Eventfds that fired
 * are drained; ready[i] is set to 1 for those.  Returns how many fired, 0 on timeout, -errno.
 * fds[i] < 0 are skipped.  Set is_eventfd[i] = 0 for descriptors that must not be drained
 * (the control socket). */
int sc_wait(const int *fds, const uint8_t *is_eventfd, int n, int timeout_ms, uint8_t *ready);
/* A new eventfd (non-blocking, close-on-exec) and a way to ring it: for waking a waiter. */
int sc_eventfd(void);
int sc_ring_bell(int fd);
int sc_close(int fd);
/* Make fd non-blocking (for sc_recv from an event loop).  0 or -errno. */
int sc_set_nonblocking(int fd);

/* --- msgpack, just enough for events --- */

typedef struct sc_mp_writer {
    uint8_t *buf;
    size_t cap, len;
    int overflow;        /* set when something did not fit: discard the result */
} sc_mp_writer_t;

void sc_mp_array(sc_mp_writer_t *w, uint32_t n);
void sc_mp_int(sc_mp_writer_t *w, int64_t v);
void sc_mp_nil(sc_mp_writer_t *w);
void sc_mp_bool(sc_mp_writer_t *w, int v);
void sc_mp_str(sc_mp_writer_t *w, const char *s, uint32_t n);
void sc_mp_bin(sc_mp_writer_t *w, const void *b, uint32_t n);

enum sc_mp_type { SC_MP_NONE, SC_MP_NIL, SC_MP_BOOL, SC_MP_INT, SC_MP_STR, SC_MP_BIN,
                  SC_MP_ARRAY, SC_MP_OTHER };

typedef struct sc_mp_value {
    int type;                /* enum sc_mp_type; SC_MP_NONE: end of input or malformed */
    int64_t i;               /* INT, BOOL; ARRAY: element count */
    const uint8_t *p;        /* STR, BIN: bytes in the input (not NUL-terminated) */
    uint32_t n;              /* STR, BIN: length */
} sc_mp_value_t;

typedef struct sc_mp_reader {
    const uint8_t *p, *end;
    int error;               /* sticky: malformed or truncated input */
} sc_mp_reader_t;

/* Next value (arrays: just the header; their elements follow). */
sc_mp_value_t sc_mp_next(sc_mp_reader_t *r);

#ifdef __cplusplus
}
#endif
#endif
