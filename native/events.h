/*
 * sidecar events in C: the C twin of sidecar/events.py (docs/protocol.md), beside the record
 * framing of frame.h.  Compiled into the cffi module ``sidecar._h1`` with the HTTP/1.1 parser
 * (build.py): its one event today is the HTTP_REQUEST of a head h1_parse_head parsed, so its
 * input is h1.h's h1_head_t, and the ring module (``sidecar._ring``) need not know HTTP.
 *
 * Everything between the cffi markers is parsed by build.py as part of the cffi cdef.
 */
#ifndef SIDECAR_EVENTS_H
#define SIDECAR_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "h1.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cffi:begin */

/* h1_pack_request: for the head h1_parse_head has just parsed into `head` (from the same buf
 * and start), the fields of sidecar's HTTP_REQUEST event (docs/protocol.md, sidecar/events.py)
 * packed as msgpack exactly as sidecar.events.pack packs them (shortest forms, str for text,
 * bin for bytes), so that the front-end sends a request with no Python object per field.
 *
 * Writes elements 2 to 11 of the event back to back -- method, scheme, path, raw_path,
 * query_string, headers, client, server, http_version, root_path -- and the caller puts the
 * array header, kind and stream id before them and body and more_body after.  The
 * connection's parts come pre-packed: `scheme` is one msgpack str, `addrs` two msgpack values
 * (client, then server).  `root` is the root path as UTF-8, put in front of path and raw_path
 * as sidecar/frontend/http_conn.py does.  The path is percent-decoded, then read as UTF-8, or
 * as latin-1 where it is not UTF-8 (sidecar/http/h1.py's _decode_path).
 * Returns the length written to out, or H1_DECLINE if out_cap is short (the path is decoded
 * in place: it asks for 5 + 2 x the path's length in slack).  No allocation. */
int64_t h1_pack_request(const char *buf, size_t start, const h1_head_t *head,
                        const char *scheme, size_t scheme_len, const char *addrs, size_t addrs_len,
                        const char *root, size_t root_len, char *out, size_t out_cap);

/* A connection's part of every request's HTTP_REQUEST, as h1_pack_request takes it: set once
 * per connection (the bytes stay the caller's, alive as long as the struct is used). */
typedef struct {
    const char *scheme;
    size_t scheme_len;
    const char *addrs;
    size_t addrs_len;
    const char *root;
    size_t root_len;
    int rescope;   /* 1: a request with proxy fields (H1_FORWARDED) is not packed here: the
                      caller may change its scheme and client first (a trusted peer's) */
} h1_scope_t;

/* h1_parse_head, then (a head parsed, scope not NULL) h1_pack_request into out, in one call:
 * the cycle of every keep-alive request.  head->facts[H1_PACKED] is the packed length, or -1
 * when it was not packed (no scope, out_cap short, or a forwarded request under rescope).
 * Returns what h1_parse_head returns. */
int64_t h1_parse_request(const char *buf, size_t start, size_t len, const h1_limits_t *limits,
                         h1_head_t *head, const h1_scope_t *scope, char *out, size_t out_cap);

/* cffi:end */

#ifdef __cplusplus
}
#endif
#endif
