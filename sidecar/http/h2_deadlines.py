"""The deadlines of an HTTP/2 connection (``H2Connection.tick``, sidecar/http/h2_connection.py),
checked about once a second by the server's sweep; the time is passed in, as everywhere in the
connection's state machine.

Deadlines (``tick(now)``, about once a second), in the order they are checked

    state                         deadline                       then
    ----------------------------  -----------------------------  -------------------------------
    output blocked (write_blocked) send_timeout since it blocked  abort; the streams are told
    a stream's bytes held by a    send_timeout since the window   RST_STREAM CANCEL; the app is
    zero window                   closed on them                  told (the others go on)
    a WebSocket (RFC 8441)        its own: keepalive, close       (http/ws_connection.py)
    no response start             timeout_request since the       the stream answers 504 (the
                                  request came whole (or its      app is told); RST_STREAM
                                  last DATA)                      NO_ERROR if its body still comes
    a stream awaiting its body,   body_timeout since its last     408 (not once the response
    the app having read it all    DATA                            started: a bidi stream may
                                                                  wait long for the client)
    no stream open                keepalive_timeout since the     GOAWAY NO_ERROR and close
                                  last one ended                  (nginx: keepalive_timeout)

The flood counters (control frames, client resets) start over at each tick.  The graceful
shutdown is here too: ``start_drain`` (GOAWAY NO_ERROR; the streams in flight finish) and
``stop_now``, when the shutdown's own timeout expired.
"""
from __future__ import annotations

import logging

import h2.exceptions
from h2.errors import ErrorCodes

from .h2_checks import goaway_frame as _goaway

log = logging.getLogger("sidecar.frontend")

__all__ = ["tick", "start_drain", "stop_now"]


def tick(conn, now: float) -> None:
    """H2Connection.tick: check ``conn``'s deadlines (the module docstring) and start its
    flood counters over."""
    conn.control_frames = 0
    conn.resets = 0
    if conn.closed:
        return
    t = conn.timeouts
    blocked = conn.write_blocked_since
    if blocked is not None and now - blocked >= t.send:
        log.info("send timeout (%.0fs): client %s takes no response bytes", t.send,
                 conn.io.peer)
        conn.closed = True
        conn._tell_streams()
        conn.io.abort()
        return
    for ex in list(conn.exchanges.values()):
        if ex.blocked_since is not None and now - ex.blocked_since >= t.send:
            conn.reset(ex, ErrorCodes.CANCEL, f"send timeout ({t.send:.0f}s): the client's "
                                              "window stayed closed")
        elif ex.ws is not None:
            ex.ws.tick(now)   # its keepalive and close deadlines (http/ws_connection.py)
        elif t.request and not ex.started and now - ex.last_read >= t.request:
            _request_timed_out(conn, ex, t.request)
        elif (not ex.body_done and not ex.unacked and not ex.started
              and now - ex.last_read >= t.body):
            # only before the response: a bidi stream (gRPC) that answers as the client
            # sends may rightly wait long for the client's next message
            log.info("request body timeout (%.0fs) from %s on stream %d", t.body,
                     conn.io.peer, ex.sid)
            ex.stream.client_gone()
            conn.error_response(ex, 408)
    if (not conn.exchanges and conn.idle_since is not None
            and now - conn.idle_since >= t.keepalive):
        conn._flush()
        conn.io.write(_goaway(conn.h2.highest_inbound_stream_id, ErrorCodes.NO_ERROR))
        conn._close()
    else:
        conn._flush()


def _request_timed_out(conn, ex, limit: float) -> None:
    """No response start ``limit`` seconds after the request came whole: the stream
    answers 504 and tells the app (as HTTP/1.1's); a body still coming is nobody's, and
    RST_STREAM NO_ERROR after the answer tells the client to stop it (RFC 9113 8.1)."""
    ex.stream.request_timed_out(limit)
    if not ex.body_done and ex.ended and not conn.closed:
        try:
            conn.h2.reset_stream(ex.sid, ErrorCodes.NO_ERROR)
        except h2.exceptions.ProtocolError:
            pass


def start_drain(conn) -> None:
    """Shutdown/reload: GOAWAY NO_ERROR naming the last stream we take; the streams in
    flight finish, then the connection closes (at once if none is)."""
    if conn.closed or conn.draining:
        return
    conn.draining = True
    conn._flush()
    conn.io.write(_goaway(conn.h2.highest_inbound_stream_id, ErrorCodes.NO_ERROR))
    conn.goaway_sent = True
    if not conn.exchanges:
        conn._close()
    for ex in list(conn.exchanges.values()):
        if ex.ws is not None:   # open WebSockets close 1012 (service restart), as on 1.1
            ex.ws.start_drain()


def stop_now(conn) -> None:
    """The graceful-shutdown timeout expired: streams that never started get 503; the
    connection closes."""
    if conn.closed:
        return
    for ex in list(conn.exchanges.values()):
        if not ex.started:
            if ex.stream is not None:
                ex.stream.client_gone()
            conn.error_response(ex, 503, ((b"retry-after", b"1"),))
    conn._flush()
    conn.closed = True
    conn._tell_streams()
    conn.io.close()   # the 503s go out; what the streams in flight had not sent is cut
