"""The stream layer: one stream (an HTTP exchange, a WebSocket) between its connection and
its worker.

    connection protocol (H1Connection, WSConnection, ...) <-> stream <-> WorkerLink (records)

``StreamBase`` owns what every kind of stream shares: its id and its worker (``dispatch``: the
dispatcher picks the link), and credit both ways.  Client data (a request body, WebSocket
messages): at most ``window`` units go to the worker before it grants more (RECV_CREDIT);
past one window more, the connection stops reading for it.  Response data: credit
(SEND_CREDIT) is granted only for bytes the connection could write now, else owed until
``flush_owed``: a slow client costs one window of buffer, never a worker.

``Stream`` is an HTTP exchange on it (HTTP/1.1 today, HTTP/2 streams the same way); it adds
the error policy, in one place: the app failed or its worker was lost before the response
started -> 500 / 502; no response start within --timeout-request -> 504 (the app is told
http.disconnect; the worker cancels it after a grace); after it started -> the connection
protocol aborts the response (a truncated body, never a second status line); the drain notice
for event streams, and the access record.  A WebSocket's stream is ``frontend/ws_stream.py``.

``Stream`` talks to its connection only through the protocol's stream interface
(``start_response``, ``send_data``, ``send_trailers``, ``end_response``,
``end_open_response``, ``error_response``, ``abort_response``, ``writable``,
``send_continue``, ``pause_body``, ``resume_body``, and ``closed``; ``body_read`` where the
protocol has flow control of its own, as HTTP/2 has; ``respond``, a whole response in one
call, where it offers one, as HTTP/1.1 does), and the protocol calls back
``on_body``, ``client_gone``, ``flush_owed``, ``finished`` and ``request_timed_out`` (the
protocol owns the deadlines).  HTTP/2 plugs in by offering the same interface per stream
(each HTTP/2 stream is its own ``proto``: sidecar/http/h2_exchange.py).
"""
from __future__ import annotations

import logging
import time
from collections import deque

from sidecar.events import (APP_DONE, DISCONNECT, HTTP_BODY, RECV_CREDIT, RESPONSE_BODY,
                            RESPONSE_PATHSEND, RESPONSE_START, RESPONSE_TRAILERS, SEND_CREDIT)
from sidecar.frontend import file_send
from sidecar.frontend.cost import route_of
from sidecar.http.h1_response import RETRY_AFTER

log = logging.getLogger("sidecar.frontend")



def _is_event_stream(headers) -> bool:
    """Whether the app's response headers say ``Content-Type: text/event-stream``."""
    for name, value in headers:
        if len(name) == 12 and name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"text/event-stream"
    return False


class StreamBase:
    """What the stream of every protocol shares: its id, its worker, and credit both ways.

    Client data (a request body, WebSocket messages) waits in ``pending`` for RECV_CREDIT
    and goes to the worker in records of at most ``chunk`` units; past one window of it
    waiting, the connection stops reading for the stream (``_pause``, ``_resume``).  Response
    data is credited back (SEND_CREDIT) once it could be written (``_writable``), in grants
    of at least ``credit_batch``; what is held is ``owed`` until ``flush_owed``.
    """

    __slots__ = ("conn", "proto", "sid", "req", "link", "recv_credit", "pending",
                 "pending_bytes", "owed", "app_done", "t0", "dispatched", "route", "cost",
                 "t_dispatch", "chunk")

    DATA = HTTP_BODY     # the record kind that carries client data to the app
    credit_batch = 1     # SEND_CREDIT is granted in amounts of at least this

    def __init__(self, conn, proto, sid: int, req):
        self.conn = conn              # the connection adapter: scope, access, window, server
        self.proto = proto            # the connection protocol's stream interface
        self.sid = sid
        self.req = req
        self.link = None
        self.recv_credit = 0
        # client data waiting for credit (a deque once there is some: most requests have
        # their whole body, if any, in the request record)
        self.pending: deque | None = None
        self.pending_bytes = 0
        self.owed = 0
        self.app_done = False
        self.t0 = time.monotonic()
        self.dispatched = False
        self.chunk = 0                # client data per record; 0: the link's chunk

    def _attach(self, link, first_event, first_bytes: int) -> None:
        """Open the stream on ``link`` with its first record."""
        self.link = link
        self.dispatched = True
        self.recv_credit = link.window - first_bytes
        self.route = route = route_of(self.req)
        self.cost, self.t_dispatch = link.open_stream(self.sid, self, first_event, route)
        if self.pending:
            self._flush_data()

    # --- client -> app -------------------------------------------------------------------

    def on_body(self, data, more: bool) -> None:
        """Client data from the connection: request body bytes, or a chunk of a WebSocket
        message (str or bytes); ``more``: not its end."""
        if self.app_done:
            return  # the app is gone: what still comes is read and dropped
        if data or not more:
            if self.pending is None:
                self.pending = deque()
            self.pending.append((data, more))
            self.pending_bytes += len(data)
        if self.dispatched:
            self._flush_data()
        if self.pending_bytes > self.conn.window:
            self._pause()

    def _flush_data(self) -> None:
        limit = self.chunk or self.link.chunk
        pending, link, sid, kind = self.pending, self.link, self.sid, self.DATA
        while pending:   # (not None: callers check)
            data, more = pending[0]
            # split to what a record carries (a str chunk must fit once UTF-8 encoded)
            n = limit if type(data) is bytes or data.isascii() else max(1, limit // 4)
            if len(data) > n:
                pending[0] = (data[n:], more)
                data, more = data[:n], True
                pending.appendleft((data, True))
            if len(data) > self.recv_credit:
                break
            pending.popleft()
            self.pending_bytes -= len(data)
            self.recv_credit -= len(data)
            link.send([kind, sid, data, more])
            if not more:
                self._data_done()
        if self.pending_bytes <= self.conn.window:
            self._resume()

    def _on_recv_credit(self, n: int) -> None:
        self.recv_credit += n
        if self.pending:
            self._flush_data()

    def _pause(self) -> None:
        raise NotImplementedError

    def _resume(self) -> None:
        raise NotImplementedError

    def _data_done(self) -> None:
        """The worker got the last of the client's data (more_body=False)."""

    # --- app -> client -------------------------------------------------------------------

    def grant(self, n: int) -> None:
        """Response credit for n bytes: now if they left for the socket, else when they do."""
        due = self.owed + n
        if due >= self.credit_batch and self._writable():
            self.owed = 0
            self.link.send([SEND_CREDIT, self.sid, due])
        else:
            self.owed = due

    def flush_owed(self) -> None:
        """The connection can write this stream's bytes again: grant what is owed."""
        if self.owed >= self.credit_batch and self._sending() and self.link is not None:
            n, self.owed = self.owed, 0
            self.link.send([SEND_CREDIT, self.sid, n])

    def _writable(self) -> bool:
        raise NotImplementedError

    def _sending(self) -> bool:
        """Whether the app may still be sending (credit is still worth granting)."""
        return not self.app_done

    def _fail(self, why: str) -> None:
        """The worker broke the protocol on this stream: it is dropped as if lost."""
        log.error("protocol error from worker on stream %d: %s", self.sid, why)
        if self.link is not None:
            self.link.streams.pop(self.sid, None)
            self.link.send([DISCONNECT, self.sid])
        self.on_worker_lost()

    def on_worker_lost(self) -> None:
        raise NotImplementedError

    def on_response(self, start: list, body: list) -> None:
        """A RESPONSE_START and the last RESPONSE_BODY of this stream, in one batch from the
        worker (the link's common case, ``WorkerLink._on_records``): by default, as two
        events, the second only if the first left the stream on its link (a protocol error
        drops it: ``_fail``)."""
        self.on_worker_event(start)
        if self.link is not None and self.link.streams.get(self.sid) is self:
            self.on_worker_event(body)

    # --- drains (the pool's side) --------------------------------------------------------

    def drain_start(self) -> None:
        """The stream's worker starts draining (nothing to do for most streams)."""

    def drain_notice(self) -> None:
        """--drain-grace into the drain (nothing to do for most streams)."""


class Stream(StreamBase):
    """One HTTP request/response exchange, from the parsed head to APP_DONE."""

    __slots__ = ("ex", "body_sent_done", "credit_seen", "event_stream", "told_to_end",
                 "expired", "t_taken", "t_first", "response_headers", "pending_trailers",
                 "sender")

    def __init__(self, conn, proto, ex, sid: int):
        # StreamBase.__init__ written out: one call less on every request's path
        self.conn = conn
        self.proto = proto
        self.sid = sid
        self.req = ex.req
        self.link = None
        self.recv_credit = 0
        self.pending = None
        self.pending_bytes = 0
        self.owed = 0
        self.app_done = False
        self.t0 = time.monotonic()
        self.dispatched = False
        self.chunk = 0
        self.ex = ex                  # the protocol's state of this exchange
        ex.stream = self
        self.body_sent_done = False   # the worker got more_body=False
        self.credit_seen = False
        self.event_stream = False     # a text/event-stream response (drain_notice)
        self.told_to_end = False      # drain_notice sent the app http.disconnect
        self.expired = False          # answered 504 for the app (request_timed_out)
        self.pending_trailers = None  # more_trailers gathered
        self.sender = None            # the file being sent as the body (file_send.py)

    # --- request direction ---------------------------------------------------------------

    def dispatch(self, link, body: bytes, more: bool) -> None:
        """Send the scope (with the first body chunk) to the worker chosen for this stream."""
        # StreamBase._attach written out: one call less on every request's path
        self.link = link
        self.dispatched = True
        self.body_sent_done = not more
        self.recv_credit = link.window - len(body)
        self.route = route = route_of(self.req)
        self.cost, self.t_dispatch = link.open_stream(
            self.sid, self, self.conn.request_event(self, body, more), route)
        if self.conn.server.access_detail:   # an --access-log-format that shows timings
            self.t_taken = time.monotonic()
        if self.pending:
            self._flush_data()

    def _pause(self) -> None:
        self.proto.pause_body(self.ex)

    def _resume(self) -> None:
        self.proto.resume_body(self.ex)

    def _data_done(self) -> None:
        self.body_sent_done = True

    # --- response direction --------------------------------------------------------------

    def on_worker_event(self, ev: list) -> None:
        kind = ev[0]
        if kind == RESPONSE_BODY:
            # _on_body's usual case written out: once or more a request
            proto, ex = self.proto, self.ex
            if proto.closed or not ex.started or ex.complete:
                self._on_body(ev[2], ev[3])
            elif ev[3]:
                data = ev[2]
                if data:
                    proto.send_data(ex, data)
                    self.grant(len(data))
            else:
                proto.send_data(ex, ev[2], True)
        elif kind == RESPONSE_START:
            self._on_start(ev[2], ev[3], ev[4])
        elif kind == APP_DONE:
            if ev[2] is None and self.ex.complete:
                # _on_app_done's usual case, written out: the app returned after its whole
                # response, and there is nothing more to do
                self.app_done = True
            else:
                self._on_app_done(ev[2])
        elif kind == RECV_CREDIT:
            self._on_recv_credit(ev[2])
        elif kind == RESPONSE_TRAILERS:
            self._on_trailers(ev[2], ev[3])
        elif kind == RESPONSE_PATHSEND:
            self._on_pathsend(ev[2], ev[3])
        else:
            self._fail(f"unexpected event kind {kind} on an HTTP stream")

    def on_response(self, start: list, body: list) -> bool | None:
        """A whole response (RESPONSE_START without trailers, then the last RESPONSE_BODY):
        a protocol that can (H1Connection.respond) writes it with one call; anything
        unusual goes event by event, as the twin of this path.  True when the response is
        complete by it: an APP_DONE without error after it then only marks the app done
        (WorkerLink._on_records does that without on_worker_event's call)."""
        proto, ex = self.proto, self.ex
        respond = getattr(proto, "respond", None)
        if respond is None or proto.closed or ex.started:
            StreamBase.on_response(self, start, body)
            return None
        headers = start[3]
        if self.conn.server.access_detail:
            self.t_first = time.monotonic()
            self.response_headers = headers
        try:
            respond(ex, start[2], headers, body[2])
        except (ValueError, TypeError) as exc:
            req = self.req
            log.error("invalid response from the app for %s %s: %s", req.method.decode(),
                      req.target.decode("latin-1"), exc)
            proto.error_response(ex, 500)
            self._on_body(body[2], False)   # as it comes after a refused start
            return None
        return ex.complete

    def _on_recv_credit(self, n: int) -> None:
        if not self.credit_seen:
            self.credit_seen = True
            self.proto.send_continue(self.ex)
        body_read = getattr(self.proto, "body_read", None)
        if body_read is not None and n:
            # a protocol with its own flow control (HTTP/2) lets the client send n more
            body_read(self.ex, n)
        StreamBase._on_recv_credit(self, n)

    def _on_start(self, status: int, headers: list, trailers: bool = False) -> None:
        proto = self.proto
        if proto.closed:
            return  # also after our own answer (a timeout): the app is being told
        ex = self.ex
        if ex.started:
            if self.expired:
                return   # we answered 504 for it (pipelined: the connection is still open)
            return self._fail("second http.response.start")
        if self.conn.server.access_detail:
            self.t_first = time.monotonic()
            self.response_headers = headers
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
            if self.expired:
                return
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

    def _on_pathsend(self, path: str, length: int | None) -> None:
        """ASGI http.response.pathsend: the body is the file at ``path``, sent by the
        front-end itself (frontend/file_send.py); the worker is done with the response."""
        proto, ex = self.proto, self.ex
        if proto.closed:
            return
        if not ex.started or ex.complete or self.sender is not None:
            if self.expired:
                return
            return self._fail("pathsend outside a started response")
        self.sender = file_send.start(self, path, length)

    def flush_owed(self) -> None:
        if self.sender is not None:   # the file goes on (its own pace: no credit)
            self.sender.schedule()
        StreamBase.flush_owed(self)

    def _writable(self) -> bool:
        return self.proto.writable(self.ex)

    def _sending(self) -> bool:
        return not self.ex.complete

    def _on_app_done(self, error: str | None) -> None:
        self.app_done = True
        proto, ex, req = self.proto, self.ex, self.req
        if self.sender is not None:   # the app named a file: its response goes on without it
            if error:
                log.error("app error after pathsend in %s %s: %s", req.method.decode(),
                          req.target.decode("latin-1"), error)
            return
        if self.expired:
            if error:
                log.info("app ended after its request timed out, in %s %s: %s",
                         req.method.decode(), req.target.decode("latin-1"), error)
            return
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
        if proto.closed or self.sender is not None:   # (a file needs no worker)
            return
        if not ex.started:
            proto.error_response(ex, 502)
        elif not ex.complete:
            proto.abort_response(ex, "worker lost mid-response")

    def drain_notice(self) -> None:
        """The stream's worker is draining: an event stream that is still running is told
        http.disconnect, so that an app that listens stops (sse-starlette, Starlette's
        StreamingResponse); its response is then ended cleanly (_on_app_done).  Other
        responses are left to finish: ending them early would cut a download short."""
        if (self.event_stream and not self.ex.complete and not self.app_done
                and not self.told_to_end and self.link is not None):
            self.told_to_end = True
            self.link.send([DISCONNECT, self.sid])

    def request_timed_out(self, seconds: float) -> None:
        """No response start ``seconds`` after the request was received (--timeout-request;
        the connection protocol keeps that deadline): 504, and the app is told
        http.disconnect (its worker cancels it if it does not return within a grace).  The
        worker and its other streams are not touched."""
        req = self.req
        link = self.link
        log.warning("request timeout (%gs): %s %s on %s: answering 504", seconds,
                    req.method.decode(), req.target.decode("latin-1"),
                    f"worker {link.index}" if link is not None else "no worker yet")
        self.expired = True
        self.conn.server.request_timeouts += 1
        self.client_gone()
        if not self.proto.closed:
            self.proto.error_response(self.ex, 504)

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
        if self.sender is not None:
            self.sender.close()

    def finished(self) -> None:
        """The response is complete (written, or buffered behind the pipeline's head)."""
        if self.pending:   # request body the app did not read: nobody will
            self.pending.clear()
            self.pending_bytes = 0
        if self.conn.server.access is not None:
            self.conn.log_access(self)
