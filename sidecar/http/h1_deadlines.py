"""The deadlines of an HTTP/1.1 connection (``H1Connection.tick``, sidecar/http/h1_connection.py),
checked about once a second by the server's sweep, and its graceful shutdown (``start_drain``,
``stop_now``); the time is passed in, as everywhere in the connection's state machine.

Deadlines (``tick(now)``, called about once a second), in the order they are checked.  None
of the client's deadlines runs while we ourselves stopped reading (backpressure); time we did
not read is not the client's, so they start over when reading resumes.

    state                  deadline                          then
    ---------------------  --------------------------------  ------------------------------------
    lingering (our answer  LINGER_TIME since it began, or    close
    is out)                LINGER_TIMEOUT since the last read
    output blocked         send_timeout since it blocked     abort; the streams are told
    (write_blocked)                                          (nginx send_timeout)
    a request received,    request_timeout (0: off) since    the stream answers 504 and tells
    no response start      the request was received whole:   the app (request_timed_out); the
                           its head, or its body's last      connection closes after it (nginx
                           byte (while the body arrives:     proxy_read_timeout); runs while
                           since the last byte read)         we do not read, too: the time is
                                                             the app's, not the client's
    a head begun, or a     header_timeout since its first    408 and close; a silent close if
    fresh connection       byte (the accept)                 nothing came (slowloris; nginx
                                                             client_header_timeout)
    reading a body         body_timeout since the last read  408 and close, or close if the
                                                             response started; the stream is told
                                                             (nginx client_body_timeout); not
                                                             while a 100-continue client waits
                                                             for the app
    idle: nothing in       keepalive_timeout since the       close
    flight                 last answer (stamped by the next
                           tick)

The lingering close's limits are nginx's lingering_time / lingering_timeout: after an early
answer, what the client still sends is read and dropped for at most LINGER_TIME seconds, or
until it pauses LINGER_TIMEOUT seconds, before the close.
"""
from __future__ import annotations

import logging

from . import h1

log = logging.getLogger("sidecar.frontend")

__all__ = ["tick", "start_drain", "stop_now", "LINGER_TIME", "LINGER_TIMEOUT", "UNSTAMPED",
           "OPEN", "CLOSING", "LINGERING", "CLOSED"]

LINGER_TIME = 30.0
LINGER_TIMEOUT = 5.0
UNSTAMPED = -1.0   # idle_since: idle since a moment the next tick will stamp
# a connection's closing states (H1Connection.closing)
OPEN, CLOSING, LINGERING, CLOSED = range(4)


def tick(conn, now: float) -> None:
    """Check the deadlines (the table above)."""
    closing = conn.closing
    if closing != OPEN:
        if closing == LINGERING and (now >= conn.lingering_until
                                     or now - conn.last_read >= LINGER_TIMEOUT):
            conn._set_closing(CLOSED)
            conn.lingering_until = None
            conn.io.close()
        return
    t = conn.timeouts
    blocked = conn.write_blocked_since
    if blocked is not None and now - blocked >= t.send:
        log.info("send timeout (%.0fs): client %s takes no response bytes", t.send,
                 conn.io.peer)
        # what is buffered would never leave; connection_lost tells the streams' apps
        conn._set_closing(CLOSED)
        conn.io.abort()
        return
    if t.request and conn.pipeline:
        _check_request_timeout(conn, now, t.request)
        if conn.closing != OPEN:
            return
    if conn.paused_by:
        return  # we are not reading: the client cannot be late
    if conn.head_since is not None and now - conn.head_since >= t.header:
        _header_timed_out(conn)
    elif conn.parser.expecting_body and now - conn.last_read >= t.body:
        ex = conn.current
        # a client that sent Expect: 100-continue waits for us until the app reads
        if ex is None or not ex.req.expect_continue or ex.continue_sent:
            log.info("request body timeout (%.0fs) from %s", t.body, conn.io.peer)
            conn.parser.stop()
            conn.current = None
            if ex is None:
                conn._close_after_write()
            else:
                conn._body_failed(ex, 408, "request body timeout")
    elif conn.idle_since is not None and not conn.pipeline:
        if conn.idle_since == UNSTAMPED:
            conn.idle_since = now
        elif now - conn.idle_since >= t.keepalive:
            conn._close_after_write()


def _check_request_timeout(conn, now: float, limit: float) -> None:
    """Every exchange with no response start ``limit`` seconds after it was received
    whole (``ex.since``; while its body still arrives, after the last byte read) is
    answered by its stream (504).  The app's time, not the client's: it runs whether or
    not we read."""
    current = conn.current
    for ex in list(conn.pipeline):
        if ex.started or ex.stream is None:
            continue
        since = conn.last_read if ex is current else ex.since
        if now - since >= limit:
            if ex is current:   # the rest of the body is nobody's: stop reading it
                conn.parser.stop()
                conn.current = None
            ex.stream.request_timed_out(limit)
            if conn.closing != OPEN:
                return


def _header_timed_out(conn) -> None:
    conn.head_since = None
    if not conn.parser.head_pending:   # a new connection that never sent a byte
        conn.parser.stop()
        conn._close_after_write()      # nothing to answer (nginx closes silently too)
        return
    conn.parser.stop()
    conn._on_protocol_error(h1.ProtocolError(408, "request header timeout"))


def start_drain(conn) -> None:
    """Shutdown/reload: finish what is in flight, then close; idle connections close now."""
    conn.draining = True
    if conn.closing == LINGERING:   # our answer is out: stop waiting for the client
        conn._set_closing(CLOSED)
        conn.lingering_until = None
        conn.io.close()
        return
    if not conn.pipeline and conn.closing == OPEN:
        conn._close_after_write()


def stop_now(conn) -> None:
    """The graceful-shutdown timeout expired: a request whose response never started gets
    503 (the client may retry elsewhere); anything else in flight is cut off."""
    if conn.closing != OPEN:
        return
    head = conn.pipeline[0] if conn.pipeline else None
    if head is not None and not head.started and head.buffer is None:
        if head.stream is not None:
            head.stream.client_gone()
        conn.error_response(head, 503, ((b"retry-after", b"1"),))
    conn._set_closing(CLOSED)
    conn.io.abort()
