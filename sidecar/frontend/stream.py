"""The stream layer: one request (an HTTP exchange) between its connection and its worker.

    connection protocol (H1Connection, ...) <-> Stream <-> WorkerLink (ring records)

A ``Stream`` owns what every protocol shares, so that no protocol repeats it:

- its id, and its worker (``dispatch``: the pool picks the link; the link learns the cost);
- credit both ways.  Request body: at most ``window`` bytes go to the worker before it
  grants more (RECV_CREDIT); past one window more, the connection stops reading for it
  (``proto.pause_body``).  Response body: credit (SEND_CREDIT) is granted only for bytes the
  connection could write now (``proto.writable``), else owed until ``flush_owed``: a slow
  client costs one window of buffer, never a worker;
- the error policy, in one place: the app failed or its worker was lost before the response
  started -> 500 / 502; after it started -> the connection protocol aborts the response
  (a truncated body, never a second status line);
- the drain notice for event streams, and the access record.

It talks to its connection only through the protocol's stream interface (``start_response``,
``send_data``, ``send_trailers``, ``end_response``, ``end_open_response``, ``error_response``,
``abort_response``, ``writable``, ``send_continue``, ``pause_body``, ``resume_body``, and
``closed``; ``body_read`` where the protocol has flow control of its own, as HTTP/2 has),
and the protocol calls back ``on_body``, ``client_gone``, ``flush_owed`` and ``finished``.
HTTP/2 plugs in by offering the same interface per stream (each HTTP/2 stream is its own
``proto``: sidecar/http/h2_exchange.py).
"""
from __future__ import annotations

import logging
import time
from collections import deque

from sidecar.events import (APP_DONE, DISCONNECT, HTTP_BODY, MAX_CHUNK, RECV_CREDIT,
                            RESPONSE_BODY, RESPONSE_START, RESPONSE_TRAILERS, SEND_CREDIT)
from sidecar.http.h1_response import RETRY_AFTER

log = logging.getLogger("sidecar.frontend")



def _is_event_stream(headers) -> bool:
    """Whether the app's response headers say ``Content-Type: text/event-stream``."""
    for name, value in headers:
        if len(name) == 12 and name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"text/event-stream"
    return False


class Stream:
    """One request/response exchange, from the parsed head to APP_DONE."""

    __slots__ = ("conn", "proto", "ex", "sid", "req", "link", "recv_credit", "pending",
                 "pending_bytes", "body_sent_done", "credit_seen", "owed", "app_done", "t0",
                 "dispatched", "route", "cost", "t_dispatch", "event_stream", "told_to_end",
                 "pending_trailers")

    def __init__(self, conn, proto, ex, sid: int):
        self.conn = conn              # the connection adapter: scope, access, server
        self.proto = proto            # the connection protocol's stream interface
        self.ex = ex                  # the protocol's state of this exchange
        ex.stream = self
        self.sid = sid
        self.req = ex.req
        self.link = None
        self.recv_credit = 0
        # request body waiting for credit (a deque once there is some: most requests have
        # their whole body, if any, in the request record)
        self.pending: deque[tuple[bytes, bool]] | None = None
        self.pending_bytes = 0
        self.body_sent_done = False   # the worker got more_body=False
        self.credit_seen = False
        self.owed = 0
        self.app_done = False
        self.t0 = time.monotonic()
        self.dispatched = False
        self.event_stream = False     # a text/event-stream response (drain_notice)
        self.told_to_end = False      # drain_notice sent the app http.disconnect
        self.pending_trailers: list | None = None   # more_trailers gathered

    # --- request direction ---------------------------------------------------------------

    def dispatch(self, link, body: bytes, more: bool) -> None:
        """Send the scope (with the first body chunk) to the worker chosen for this stream."""
        self.link = link
        self.dispatched = True
        self.recv_credit = link.window - len(body)
        self.body_sent_done = not more
        link.open_stream(self.sid, self, self.conn.request_event(self, body, more))
        if self.pending:
            self._flush_body()

    def on_body(self, data: bytes, more: bool) -> None:
        """Request body from the connection (never after the response completed)."""
        if self.app_done:
            return  # the app is gone: the rest of the body is read and dropped
        if data or not more:
            if self.pending is None:
                self.pending = deque()
            self.pending.append((data, more))
            self.pending_bytes += len(data)
        if self.dispatched:
            self._flush_body()
        if self.pending_bytes > self.conn.window:
            self.proto.pause_body(self.ex)

    def _flush_body(self) -> None:
        chunk_max = min(MAX_CHUNK, self.link.window)
        pending, link, sid = self.pending, self.link, self.sid
        while pending:   # (not None: callers check)
            data, more = pending[0]
            if len(data) > chunk_max:
                # split to what the window lets a record carry
                pending[0] = (data[chunk_max:], more)
                data, more = data[:chunk_max], True
                pending.appendleft((data, True))
            if len(data) > self.recv_credit:
                break
            pending.popleft()
            self.pending_bytes -= len(data)
            self.recv_credit -= len(data)
            link.send([HTTP_BODY, sid, data, more])
            if not more:
                self.body_sent_done = True
        if self.pending_bytes <= self.conn.window:
            self.proto.resume_body(self.ex)

    # --- response direction --------------------------------------------------------------

    def on_worker_event(self, ev: list) -> None:
        kind = ev[0]
        if kind == RESPONSE_BODY:
            self._on_body(ev[2], ev[3])
        elif kind == RESPONSE_START:
            self._on_start(ev[2], ev[3], ev[4])
        elif kind == APP_DONE:
            self._on_app_done(ev[2])
        elif kind == RECV_CREDIT:
            self._on_recv_credit(ev[2])
        elif kind == RESPONSE_TRAILERS:
            self._on_trailers(ev[2], ev[3])
        else:
            self._fail(f"unexpected event kind {kind} on an HTTP stream")

    def _on_recv_credit(self, n: int) -> None:
        if not self.credit_seen:
            self.credit_seen = True
            self.proto.send_continue(self.ex)
        self.recv_credit += n
        body_read = getattr(self.proto, "body_read", None)
        if body_read is not None and n:
            # a protocol with its own flow control (HTTP/2) lets the client send n more
            body_read(self.ex, n)
        if self.pending:
            self._flush_body()

    def _on_start(self, status: int, headers: list, trailers: bool = False) -> None:
        proto = self.proto
        if proto.closed:
            return  # also after our own answer (a timeout): the app is being told
        ex = self.ex
        if ex.started:
            return self._fail("second http.response.start")
        try:
            # (the trailers flag only when set: a protocol without trailers takes three)
            open_ended = (proto.start_response(ex, status, headers, True) if trailers else
                          proto.start_response(ex, status, headers))
        except (ValueError, TypeError) as exc:
            req = self.req
            log.error("invalid response from the app for %s %s: %s", req.method.decode(),
                      req.target.decode("latin-1"), exc)
            proto.error_response(ex, 500)
            return
        if open_ended:   # is it an event stream? (drain_notice)
            self.event_stream = _is_event_stream(headers)
            if self.event_stream and self.link.draining:   # past the grace: told now
                self.drain_notice()

    def _on_body(self, data: bytes, more: bool) -> None:
        proto = self.proto
        if proto.closed:
            # the client left (the worker has been told) or we answered for the app (a
            # timeout): its start was dropped as well, and nothing can be written
            return
        ex = self.ex
        if not ex.started or ex.complete:
            return self._fail("response body outside a started response")
        if more:
            if data:
                proto.send_data(ex, data)
                self.grant(len(data))
            return
        proto.send_data(ex, data, True)

    def _on_trailers(self, headers: list, more: bool) -> None:
        """ASGI trailers, after the last body byte: the protocol sends them if it can (HTTP/2,
        HTTP/1.1 chunked to a client that sent TE: trailers) and completes the response."""
        proto, ex = self.proto, self.ex
        if proto.closed:
            return
        if not ex.started:
            return self._fail("response trailers before the response started")
        if ex.complete:
            return   # the protocol sent the response without them
        if more:   # more_trailers: gathered until the last
            if self.pending_trailers is None:
                self.pending_trailers = []
            self.pending_trailers += headers
            return
        if self.pending_trailers:
            headers = self.pending_trailers + headers
            self.pending_trailers = None
        try:
            proto.send_trailers(ex, headers)
        except (ValueError, TypeError) as exc:
            log.error("invalid response trailers from the app: %s", exc)
            proto.abort_response(ex, "invalid response trailers")

    def grant(self, n: int) -> None:
        """Response credit for n bytes: now if they left for the socket, else when they do."""
        if self.proto.writable(self.ex):
            self.link.send([SEND_CREDIT, self.sid, n])
        else:
            self.owed += n

    def flush_owed(self) -> None:
        """The connection can write this stream's bytes again: grant what is owed."""
        if self.owed and not self.ex.complete and self.link is not None:
            n, self.owed = self.owed, 0
            self.link.send([SEND_CREDIT, self.sid, n])

    def _on_app_done(self, error: str | None) -> None:
        self.app_done = True
        proto, ex, req = self.proto, self.ex, self.req
        if proto.closed or self.told_to_end and ex.started:
            if error:   # most often the app's send() raising ClientDisconnected
                log.info("app ended after %s, in %s %s: %s",
                         "its connection closed" if proto.closed else "a drain notice",
                         req.method.decode(), req.target.decode("latin-1"), error)
            if not proto.closed and not ex.complete:
                # events are whole messages: ending the body here loses nothing
                proto.end_open_response(ex)
            return
        if error:
            log.error("app error in %s %s: %s", req.method.decode(),
                      req.target.decode("latin-1"), error)
        if not ex.started:
            if not error:
                log.error("app returned without a response for %s %s",
                          req.method.decode(), req.target.decode("latin-1"))
            proto.error_response(ex, 500)
        elif not ex.complete:
            proto.abort_response(ex, "app ended mid-response")

    def on_worker_lost(self) -> None:
        """The worker died or broke the protocol: 502 if nothing was sent, else abort."""
        if self.app_done:
            return
        self.app_done = True
        proto, ex = self.proto, self.ex
        if proto.closed:
            return
        if not ex.started:
            proto.error_response(ex, 502)
        elif not ex.complete:
            proto.abort_response(ex, "worker lost mid-response")

    def _fail(self, why: str) -> None:
        log.error("protocol error from worker on stream %d: %s", self.sid, why)
        if self.link is not None:
            self.link.streams.pop(self.sid, None)
            self.link.send([DISCONNECT, self.sid])
        self.on_worker_lost()

    def drain_notice(self) -> None:
        """The stream's worker is draining: an event stream that is still running is told
        http.disconnect, so that an app that listens stops (sse-starlette, Starlette's
        StreamingResponse); its response is then ended cleanly (_on_app_done).  Other
        responses are left to finish: ending them early would cut a download short."""
        if (self.event_stream and not self.ex.complete and not self.app_done
                and not self.told_to_end and self.link is not None):
            self.told_to_end = True
            self.link.send([DISCONNECT, self.sid])

    def overloaded(self) -> None:
        """No worker could take the stream in time, or too many streams are in flight."""
        self.app_done = True
        if not self.proto.closed:
            self.proto.error_response(self.ex, 503, RETRY_AFTER)

    # --- the connection's side -----------------------------------------------------------

    def client_gone(self) -> None:
        """The client left, or the connection answered for the app (a timeout, a broken
        body): the app is told, and nothing it sends from now on reaches the client."""
        if self.dispatched and not self.app_done and self.link is not None:
            self.link.send([DISCONNECT, self.sid])
        self.app_done = True

    def finished(self) -> None:
        """The response is complete (written, or buffered behind the pipeline's head)."""
        if self.pending:   # request body the app did not read: nobody will
            self.pending.clear()
            self.pending_bytes = 0
        if self.conn.server.access is not None:
            self.conn.log_access(self)
