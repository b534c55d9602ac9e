/*
 * sidecar HTTP/1.1 request heads, fast path: the C speedup of sidecar/http/h1.py's
 * RequestParser, which stays the pure-Python twin and the only place that decides an error
 * status.  h1_parse_head accepts only heads it can prove the Python path would accept, and
 * then produces the same facts; everything else (any error, anything unusual, any limit that
 * would apply) is H1_DECLINE, and the Python path parses it as if this file did not exist.
 *
 * Accepted: GET HEAD POST PUT DELETE OPTIONS PATCH, an origin-form target of RFC 3986 path and
 * query characters (no '#', no non-ASCII), HTTP/1.1 or HTTP/1.0, then field lines
 * `token ":" OWS value OWS CRLF` whose values hold HTAB, SP, VCHAR or obs-text, and a valid
 * set of framing fields: one good Host (1.1; at most one on 1.0), at most one Content-Length
 * of 1-18 digits within max_body, or (1.1) exactly one `Transfer-Encoding: chunked` and no
 * Content-Length, at most one Upgrade.  No allocation, no recursion, no Python API; reads
 * only buf[start:len].
 *
 * The same file writes response heads (h1_response_head, below): the C speedup of
 * sidecar/http/h1.py's response_head, under the same rule.  The HTTP_REQUEST event of a
 * parsed head is packed by events.c (events.h: h1_pack_request).
 *
 * Everything between the cffi markers is parsed by build.py as part of the cffi cdef.
 */
#ifndef SIDECAR_H1_H
#define SIDECAR_H1_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* cffi:begin */

/* h1_parse_head results other than a head length */
#define H1_INCOMPLETE 0     /* no CRLF CRLF yet, and nothing seen so far is unusual */
#define H1_DECLINE -1       /* not for the fast path: let the Python parser decide */

/* Fields beyond this many are declined (and so are more than limits->max_headers). */
#define H1_MAX_FIELDS 128

/* Indices into the facts array (int64_t[H1_NFACTS]).  Offsets are into buf, like start. */
#define H1_METHOD_END 0     /* method = buf[start:METHOD_END]; SP follows */
#define H1_TARGET_END 1     /* target = buf[METHOD_END + 1:TARGET_END] */
#define H1_PATH_END 2       /* raw path = buf[METHOD_END + 1:PATH_END]; TARGET_END if no '?',
                               else the query is buf[PATH_END + 1:TARGET_END] */
#define H1_PATH_PERCENT 3   /* 1 if the raw path holds '%' (it needs percent-decoding) */
#define H1_MINOR 4          /* HTTP/1.x: 0 or 1 */
#define H1_FIELDS 5         /* number of field lines */
#define H1_FIELDS_LEN 6     /* bytes written to `fields` (see h1_parse_head) */
#define H1_CONTENT_LENGTH 7 /* -1: no Content-Length */
#define H1_CHUNKED 8        /* 1: Transfer-Encoding: chunked */
#define H1_KEEP_ALIVE 9
#define H1_EXPECT_CONTINUE 10
#define H1_UPGRADE_START 11 /* -1: not an upgrade request; else the Upgrade value's span */
#define H1_UPGRADE_END 12
#define H1_HOSTS 13         /* Host lines: 1 (or 0 on HTTP/1.0) */
#define H1_FORWARDED 14     /* 1 if a Forwarded, X-Forwarded-For or X-Forwarded-Proto line is
                               there (what proxy headers from a trusted peer would change) */
#define H1_PACKED 15        /* h1_parse_request (events.h): bytes of the packed HTTP_REQUEST
                               fields in its out buffer; -1: not packed */
#define H1_NFACTS 16

typedef struct {
    uint32_t max_request_line;  /* request line without CRLF; longer: declined */
    uint32_t max_header_bytes;  /* whole head with its CRLF CRLF; longer: declined */
    uint32_t max_headers;       /* field lines; more: declined */
    int64_t max_body;           /* Content-Length above it: declined; -1: no limit */
} h1_limits_t;

/* What h1_parse_head fills in.  The caller points `fields` at fields_cap bytes of its own
 * (the outputs are set up once and reused: one C call per head, few arguments). */
typedef struct {
    int64_t facts[H1_NFACTS];
    uint32_t spans[4 * H1_MAX_FIELDS];  /* field i: name start, name end, value start, value
                                           end (values trimmed of SP/HTAB; offsets into buf) */
    char *fields;      /* each field's lowercased name and its value, each followed by a NUL
                          byte except the last: a split at NUL gives name, value, name, ... */
    size_t fields_cap; /* a head whose fields need more is declined */
} h1_head_t;

/* Parse the request head that starts at buf[start] (buf[start:len] are the bytes received
 * after any previous request).  Returns its length in bytes, CRLF CRLF included, after
 * filling head->facts, head->spans[0:4 * FIELDS] and head->fields[0:FIELDS_LEN] (a head
 * without fields writes nothing there).  Otherwise H1_INCOMPLETE or H1_DECLINE, and the
 * outputs hold nothing meaningful. */
int64_t h1_parse_head(const char *buf, size_t start, size_t len, const h1_limits_t *limits,
                      h1_head_t *head);

/* --- response heads ---------------------------------------------------------------------
 * h1_response_head: the C speedup of sidecar/http/h1.py's response_head (framing and head
 * in one pass).  Same rule as above: anything the Python twin would refuse (a bad name or
 * value, a bad or conflicting Content-Length), anything unusual (a field count that does not
 * match, a head over out_cap) is H1_DECLINE and the Python path decides.
 *
 * Inputs: the status and its status line ("HTTP/1.1 200 OK\r\n", from the Python table);
 * the app's fields, each as its name, a NUL byte and its value, joined by LF bytes (nfields
 * pairs; a name or value holding a NUL or LF, or a pair of other than two items, shows up as a
 * line or a NUL too many or too few, and is declined); H1_RESP_* flags; Date and Server values to
 * add unless the app set its own (NULL: not sent).
 * Outputs: the head in out[0:result]; resp[H1_RESP_CHUNKED], resp[H1_RESP_LENGTH] (-1: none,
 * the body ends when the connection closes), resp[H1_RESP_KEEP] (cleared by a
 * close-delimited body and by an app's "close" in Connection). */
#define H1_RESP_HEAD_REQUEST 1  /* flag: the request was HEAD */
#define H1_RESP_HTTP10 2        /* flag: the request was HTTP/1.0 */
#define H1_RESP_KEEP_ALIVE 4    /* flag: the connection may stay open after this response */

#define H1_RESP_CHUNKED 0
#define H1_RESP_LENGTH 1
#define H1_RESP_KEEP 2
#define H1_RESP_NFACTS 3

int64_t h1_response_head(int status, const char *status_line, size_t status_line_len,
                         const char *fields, size_t fields_len, size_t nfields,
                         unsigned flags, const char *date, size_t date_len,
                         const char *server, size_t server_len,
                         char *out, size_t out_cap, int64_t *resp);

/* h1_response: h1_response_head, then the whole body after the head in the same buffer --
 * a response whose RESPONSE_START and last RESPONSE_BODY came together, written with one
 * call (sidecar/http/h1_response.py's response_whole is the Python twin).  The body is
 * written as the connection would write it: nothing for a HEAD request, one chunk and the
 * last chunk when chunked (an empty body: the last chunk alone), else as it is.  The caller
 * does not use it for a response that will carry trailers.  H1_DECLINE as h1_response_head,
 * and also when head and body do not fit in out_cap. */
int64_t h1_response(int status, const char *status_line, size_t status_line_len,
                    const char *fields, size_t fields_len, size_t nfields,
                    unsigned flags, const char *date, size_t date_len,
                    const char *server, size_t server_len, const char *body, size_t body_len,
                    char *out, size_t out_cap, int64_t *resp);

/* cffi:end */

#ifdef __cplusplus
}
#endif
#endif
