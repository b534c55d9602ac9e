/*
 * sidecar event framing: checks, without decoding, that ring records hold sidecar events --
 * exactly one msgpack value each, an array whose first two elements are integers
 * ([kind, stream_id, ...], docs/protocol.md).  With every record of a batch checked, the
 * records can be decoded by ONE msgpack call (see frame_gather_events) instead of one call per
 * record, which is most of what a record costs a Python consumer.  Optional: the ring
 * (ring.h) does not depend on this file, and a host that decodes record by record needs none
 * of it.
 *
 * Everything between the cffi markers is parsed by build.py as part of the cffi cdef.
 */
#ifndef SIDECAR_FRAME_H
#define SIDECAR_FRAME_H

#include <stdint.h>

#include "ring.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cffi:begin */

/* Bytes of the msgpack array32 header frame_gather_events puts in front of the payloads. */
#define FRAME_BATCH_HEADER 5

/* Length of the one well-formed msgpack value buf starts with, or 0 if the len bytes do not
 * start with a complete one (truncated, or the never-used byte 0xc1).  No recursion and no
 * allocation: a count of the values still owed, so nesting depth costs nothing. */
uint32_t frame_value_len(const uint8_t *buf, uint32_t len);

/* 1 if buf[0:len] is exactly one msgpack value that is an array of at least two elements whose
 * first two are integers (the head of every sidecar event), else 0. */
int frame_is_event(const uint8_t *buf, uint32_t len);

/* Records laid back to back in buf, record i ending at ends[i] (as ring_read_gather leaves
 * them): n if every one is an event (frame_is_event), else the index of the first that is
 * not. */
int frame_check_events(const uint8_t *buf, const uint32_t *ends, int n);

/* Consumer: ring_read_gather(r, type, buf + FRAME_BATCH_HEADER, cap - FRAME_BATCH_HEADER,
 * ends, max), then frame_check_events.  out[0] = how many leading records are events,
 * out[1] = FRAME_BATCH_HEADER + the payload bytes copied.  When out[0] equals the count, the
 * first FRAME_BATCH_HEADER bytes become a msgpack array32 header of that count, so
 * buf[0:out[1]] is one msgpack array of the events.  Returns the count, as ring_read_gather. */
int frame_gather_events(ring_t *r, uint32_t type, uint8_t *buf, uint32_t cap, uint32_t *ends,
                        int max, uint32_t *out);

/* Producer: buf[0:len] must be exactly one msgpack array (a list of events packed with one
 * call); lens[i] gets the length of element i and *header the length of the array header, so
 * the elements are buf[*header:] back to back, ready for ring_try_write_many.  Returns the
 * element count, or -1 if buf is not one array, if an element is not an event
 * (frame_is_event), or if there are more than max elements. */
int frame_split_events(const uint8_t *buf, uint32_t len, uint32_t *lens, int max,
                       uint32_t *header);

/* Returned by frame_write_events when buf is not one array of events (see above). */
#define FRAME_ENOTEVENTS -64

/* Producer, in one call: frame_split_events(buf, len, lens, max, ...), then
 * ring_try_write_many of the elements as records of this type, then ring_producer_must_wake
 * into *wake (0 when nothing was written).  An element may also be a msgpack bin whose
 * payload is exactly one event (a record packed beforehand, such as h1_pack_request's
 * HTTP_REQUEST): the payload is written as the record, in its place in the order.  Returns
 * the count written (0 when the ring is full), FRAME_ENOTEVENTS, or a ring error
 * (RING_ETOOBIG if the first element is too big). */
int frame_write_events(ring_t *r, uint32_t type, const uint8_t *buf, uint32_t len,
                       uint32_t *lens, int max, int *wake);

/* cffi:end */

#ifdef __cplusplus
}
#endif
#endif
