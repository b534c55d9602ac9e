"""One HTTP/1.1 server connection as a state machine, without I/O.

    bytes in (``receive_data``)                 -> requests and their bodies, to the streams
    responses in (``start_response`` ... ``end_response``) -> bytes out (``io.write``), in order

It owns every HTTP/1.1 rule about a connection: pipelining order, keep-alive and the close
rules, 100-continue, the unread body of an answered request, lingering close, and every client
timeout.  It reads no clock (the time is passed in), touches no socket and runs no event
loop: it acts through the two objects it is given --

    io        write(bytes) (gathered, sent at the end of the loop iteration),
              pause_reading(), resume_reading(), close() (once written),
              linger() (half-close once written, keep reading to drop), abort(),
              can_linger(), now() (the clock), peer (the client, for log lines)
    handler   on_request(ex, body, more) -- a new exchange; the handler sets ``ex.stream``
              on_upgrade(req)            -- a WebSocket (or h2c) upgrade, to be taken over
    ex.stream on_body(data, more), client_gone(), flush_owed(), finished(),
              request_timed_out(seconds) -- answer the exchange (504) and tell the app

The pipeline
------------
Every parsed request becomes an ``Exchange`` at once (the stream layer dispatches it), but
only the oldest unfinished one (the head) writes to the socket; the others buffer, bounded by
the stream window (a worker sends only a window of bytes without credit, and credit is given
only for bytes that reached the socket: ``writable``).  Past MAX_PIPELINE unanswered requests
the connection stops reading.

Reading is paused for a set of reasons (``paused_by``): the pipeline is full (key 0), or an
exchange's body is a window ahead of the app (its ``sid``-like key, ``pause_body``).

Deadlines (``tick(now)``, about once a second) and the graceful shutdown (``start_drain``,
``stop_now``) are in sidecar/http/h1_deadlines.py, with their table.

Close rules
-----------
After a response whose exchange is not keep-alive (the request's or the app's Connection:
close, an HTTP/1.0 body delimited by the close, an error the server answered, an announced
100-continue body that never came) the connection closes once the bytes are written --
lingering (FIN, then read and drop) if the client may still be sending, so that it reads its
answer instead of a reset (nginx lingering_close).  A request body the app left unread when
its response completed is read and dropped up to DISCARD_MAX and the connection kept, or, known
or found to be longer, the connection closes lingering.
"""
from __future__ import annotations

import logging
from collections import deque
from http import HTTPStatus

from . import h1, h1_deadlines, h1_response
# the closing states, the lingering close's limits and idle_since's unstamped mark are the
# deadlines' (h1_deadlines.py); the connection's too
from .h1_deadlines import CLOSED, LINGER_TIME, LINGER_TIMEOUT, LINGERING, OPEN, UNSTAMPED
from .h1_response import _api_response
from .h1_exchange import Exchange, Timeouts

log = logging.getLogger("sidecar.frontend")

__all__ = ["H1Connection", "Exchange", "Timeouts", "MAX_PIPELINE", "DISCARD_MAX",
           "LINGER_TIME", "LINGER_TIMEOUT", "CONTINUE"]

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_PIPELINE = 32  # requests parsed ahead of their responses before we stop reading
# A request body the app left unread when its response completed (a 404 for a large POST) is
# read and dropped up to DISCARD_MAX bytes, keeping the connection alive, as uvicorn and
# nginx (ngx_http_discard_request_body) do; a body known or found to be larger closes the
# connection after the answer, lingering, instead of reading on for the client's sake.
DISCARD_MAX = 4 * 1024 * 1024

# reading states
HEAD, BODY, STOPPED, UPGRADED = range(4)


def _h2c_settings(req: h1.Request) -> bool:
    """Whether an Upgrade: h2c request carries exactly one HTTP2-Settings field."""
    return sum(1 for name, _ in req.headers if name == b"http2-settings") == 1


_WS = frozenset((b"websocket",))             # the Upgrade protocols taken over
_WITH_H2C = frozenset((b"websocket", b"h2c"))


class H1Connection:
    """The HTTP/1.1 side of one client connection (see the module docstring)."""

    def __init__(self, io, handler, limits: h1.Limits, timeouts: Timeouts, now: float, *,
                 head_fields, upgrades: bool = True, h2c: bool = False,
                 max_first_body: int = 64 * 1024):
        self.io = io
        # a whole body up to this size is handed over with its request (one record)
        self.max_first_body = max_first_body
        self.handler = handler
        self.timeouts = timeouts
        # date_value, server_header, extra_fields: the server's fields for response heads
        self.head_fields = head_fields
        self.upgrades = upgrades      # whether Upgrade: websocket is taken over
        self.h2c = h2c                # whether Upgrade: h2c is (RFC 7540 section 3.2)
        self.parser = h1.RequestParser(limits, upgrade_protocols=_WITH_H2C if h2c else _WS)
        self.pipeline: deque[Exchange] = deque()
        self.current: Exchange | None = None   # the exchange whose body is being read
        self.read_state = HEAD
        self.closing = OPEN
        self.closed = False           # closing != OPEN (an attribute: read per event)
        self.paused_by: set[int] = set()
        self.write_blocked_since: float | None = None
        self.draining = False
        self.over_limit = False       # accepted beyond limit_concurrency: 503 and close
        self.next_key = 1
        self.discard_bytes = 0        # of an answered request's body, read and dropped
        # deadlines' clocks: nginx's client_header_timeout bounds a new connection's first
        # request too, so the head clock starts at the accept
        self.head_since: float | None = now
        self.idle_since: float | None = now
        self.last_read = now
        self.lingering_until: float | None = None

    def _set_closing(self, state: int) -> None:
        self.closing = state
        self.closed = True

    # --- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client (``io.now`` tells the time they came)."""
        self.last_read = now = self.io.now()
        if self.closed:
            return   # lingering: dropped (the parser is stopped)
        parser = self.parser
        try:
            evs = parser.feed_one(data)
        except Exception:  # a parser bug must not take the process down
            log.exception("request parser failed")
            evs = [h1.ProtocolError(400, "unparseable request")]
        if type(evs) is h1.Request:
            # The keep-alive cycle's hot path: the read was exactly one usual head (no body,
            # no upgrade; RequestParser.feed_one).  A written-out copy of the loop below and
            # _on_request for that case (change them together): with nothing in flight, the
            # exchange goes to the handler at once.
            self.head_since = None
            self.idle_since = None
            pipeline = self.pipeline
            if not pipeline and not self.over_limit:
                ex = Exchange(evs, self.next_key, now)
                self.next_key += 1
                if self.draining:
                    ex.keep_alive = False
                ex.body_done = True
                pipeline.append(ex)
                self.handler.on_request(ex, b"", False)
                return
            evs = [evs, h1._END]
        if parser.head_pending:   # a head began: its deadline runs from its first byte
            if self.head_since is None:
                self.head_since = now
            self.idle_since = None
        else:
            self.head_since = None
        i, n = 0, len(evs)
        Request, Body, EndOfMessage = h1.Request, h1.Body, h1.EndOfMessage
        while i < n:
            ev = evs[i]
            t = type(ev)
            if t is Request:
                if (ev.upgrade == b"websocket" and not self.upgrades
                        or ev.upgrade == b"h2c" and self.h2c and not _h2c_settings(ev)):
                    # no WebSocket support, or an h2c upgrade without its one HTTP2-Settings:
                    # serve it as plain HTTP and keep parsing
                    evs[i + 1:] = parser.decline_upgrade()
                    n = len(evs)
                # piggyback the whole body on the request when it is already here
                body, more = b"", True
                if i + 1 < n and type(evs[i + 1]) is EndOfMessage:
                    body, more, i = b"", False, i + 1
                elif (i + 2 < n and type(evs[i + 1]) is Body
                      and type(evs[i + 2]) is EndOfMessage
                      and len(evs[i + 1].data) <= self.max_first_body):
                    body, more, i = evs[i + 1].data, False, i + 2
                self._on_request(ev, body, more, now)
            elif t is Body:
                if self.current is not None:
                    self._on_body(self.current, ev.data, True)
            elif t is EndOfMessage:
                if self.current is not None:
                    ex, self.current = self.current, None
                    self._on_body(ex, b"", False)
            else:
                self._on_protocol_error(ev)
                return
            if self.closed:
                return
            i += 1

    def _on_request(self, req: h1.Request, body: bytes, more: bool, now: float) -> None:
        self.idle_since = None
        if self.over_limit:
            self.parser.stop()
            self.io.write(h1_response.simple_response(
                503, "Service Unavailable", keep_alive=False, date=self.head_fields.date_value,
                extra_headers=h1_response.RETRY_AFTER))
            self._close_after_write()
            return
        if req.upgrade is not None and (req.upgrade == b"websocket" and self.upgrades
                                        or req.upgrade == b"h2c" and self.h2c
                                        and _h2c_settings(req)):
            if self.pipeline:
                # an upgrade pipelined behind unfinished requests: answer it after them
                self._on_protocol_error(h1.ProtocolError(400, "upgrade behind pipelined "
                                                              "requests"))
                return
            self.read_state = UPGRADED
            self._set_closing(CLOSED)   # the socket is the WebSocket's (or HTTP/2's) now
            self.handler.on_upgrade(req)
            return
        ex = Exchange(req, self.next_key, now)
        self.next_key += 1
        if self.draining:
            ex.keep_alive = False
        pipeline = self.pipeline
        pipeline.append(ex)
        if more:
            self.current = ex
        else:
            ex.body_done = True
        if len(pipeline) > 1:
            ex.buffer = []
        if len(pipeline) >= MAX_PIPELINE:
            self._pause(0)
        self.handler.on_request(ex, body, more)

    def _on_body(self, ex: Exchange, data: bytes, more: bool) -> None:
        if not more:
            ex.body_done = True
            ex.since = self.last_read   # received whole: request_timeout runs from now
        if ex.complete:   # answered already: the rest is read and dropped
            self.discard_bytes += len(data)
            if self.discard_bytes > DISCARD_MAX and ex.keep_alive:
                ex.keep_alive = False
                if ex not in self.pipeline:   # its answer is out already: close now
                    self._close_after_write()
            return
        ex.stream.on_body(data, more)

    def _on_protocol_error(self, err: h1.ProtocolError) -> None:
        log.info("bad request from %s: %d %s", self.io.peer, err.status, err.reason)
        self._pause(0)
        ex, self.current = self.current, None
        if ex is not None:   # the error is in this request's body: it is the answer
            self._body_failed(ex, err.status, err.reason)
            return
        data = h1_response.simple_response(
            err.status, err.reason, keep_alive=False, date=self.head_fields.date_value)
        if not self.pipeline:
            self.io.write(data)
            self._close_after_write()
            return
        # answer after the responses already in flight, then close
        ex = Exchange(self.pipeline[-1].req, 0)
        ex.keep_alive = False
        ex.started = ex.complete = ex.body_done = True
        ex.buffer = [data]
        self.pipeline.append(ex)

    def _body_failed(self, ex: Exchange, status: int, why: str) -> None:
        """The request body broke off (a timeout, bad chunked framing, over max_body): answer
        ``status`` if nothing was sent yet, else close; the app is told the client is gone,
        and the connection closes after this exchange."""
        if ex.complete:   # answered already: only the rest of the body was awaited
            ex.keep_alive = False
            if ex not in self.pipeline:
                self._close_after_write()
            return
        ex.stream.client_gone()
        if ex.started:
            self.abort_response(ex, why)
        else:
            self.error_response(ex, status)

    # --- output: what the stream layer calls ---------------------------------------------

    def start_response(self, ex: Exchange, status: int, headers, trailers: bool = False
                       ) -> bool:
        """Write (or buffer) the response head; returns whether the body is open-ended (no
        Content-Length: chunked, or delimited by the close).  ValueError or TypeError for a
        head that must not be written (h1_response.response_head): nothing was written then.
        ``trailers``: the app will send trailers (ASGI), which go in the last chunk of a
        chunked response to a request with ``TE: trailers`` and are dropped otherwise."""
        req = ex.req
        keep_alive = ex.keep_alive and not self.draining
        if not ex.body_done and req.expect_continue and not ex.continue_sent:
            keep_alive = False  # the client never sent the body it announced
        fields = self.head_fields
        # keep_alive comes back cleared for a close-delimited body (HTTP/1.0 without a
        # length) and for an app's Connection: close
        head, chunked, length, keep_alive = h1_response.response_head(
            status, headers, method=req.method, http_version=req.http_version,
            keep_alive=keep_alive, date=fields.date_value, server=fields.server_header,
            extra=fields.extra_fields)
        ex.started = True
        ex.status = status
        ex.chunked = chunked and not ex.head_only
        ex.keep_alive = keep_alive
        if trailers and ex.chunked:
            ex.want_trailers = h1_response.takes_trailers(req.headers)
        # _write_for(ex, head), written out: once a request
        if not self.closed:
            if ex.buffer is None:
                self.io.write(head)
            else:
                ex.buffer.append(head)
        return length is None and not ex.head_only

    def respond(self, ex: Exchange, status: int, headers, body: bytes) -> None:
        """A whole response: ``start_response(ex, status, headers)`` then ``send_data(ex,
        body, True)``, the bytes made by one call and written once (the app's start and its
        last body came together, without trailers: the common case).  ValueError or
        TypeError as start_response: nothing was written then."""
        req = ex.req
        keep_alive = ex.keep_alive and not self.draining
        if not ex.body_done and req.expect_continue and not ex.continue_sent:
            keep_alive = False  # the client never sent the body it announced
        fields = self.head_fields
        # h1_response.response_whole's C-API call, written out (change both together): the
        # usual response in one C call, its Python twin where it declines
        whole = (_api_response(status, headers, body, req.method, req.http_version, keep_alive,
                               fields.date_value, fields.server_header, fields.extra_fields)
                 if _api_response is not None and h1.speedups else None)
        if whole is None:
            whole = h1_response.response_whole(
                status, headers, body, method=req.method, http_version=req.http_version,
                keep_alive=keep_alive, date=fields.date_value, server=fields.server_header,
                extra=fields.extra_fields)
        data, chunked, keep_alive = whole
        ex.started = True
        ex.status = status
        ex.chunked = chunked and not ex.head_only
        ex.keep_alive = keep_alive
        if not ex.head_only:
            ex.sent_bytes += len(body)
        ex.complete = True
        if self.closed:
            return   # (_exchange_complete does nothing on a closed connection either)
        pipeline = self.pipeline
        if (ex.buffer is None and keep_alive and ex.body_done and not self.draining
                and not self.paused_by and len(pipeline) == 1):
            # The keep-alive cycle's hot path: the only exchange in flight, its request read
            # whole, the connection kept.  A written-out copy of _exchange_complete for that
            # case (change them together): the stream is told, the pipeline is empty, the
            # connection idle.
            self.io.write(data)
            stream = ex.stream
            if stream is not None:
                stream.finished()
            pipeline.popleft()
            ex.stream = None   # no reference cycle (see _exchange_complete)
            self.idle_since = UNSTAMPED
            return
        if ex.buffer is None:
            self.io.write(data)
        else:
            ex.buffer.append(data)
        self._exchange_complete(ex)

    def send_data(self, ex: Exchange, data: bytes, end: bool = False) -> None:
        """Body bytes of a started response; ``end``: and that is the whole body."""
        if data and not ex.head_only:
            ex.sent_bytes += len(data)
            if ex.chunked:
                data = h1_response.encode_chunk(data)
            # _write_for(ex, data), written out: once or more a request
            if not self.closed:
                if ex.buffer is None:
                    self.io.write(data)
                else:
                    ex.buffer.append(data)
        if end:   # end_response, spelled out: once a request
            if ex.want_trailers:
                return   # the last chunk carries the trailers (send_trailers)
            if ex.chunked:
                self._write_for(ex, h1_response.LAST_CHUNK)
            ex.complete = True
            self._exchange_complete(ex)

    def send_trailers(self, ex: Exchange, headers) -> None:
        """The app's trailers, in the last chunk (ValueError for a field that cannot be
        written; fields RFC 9110 6.5.1 keeps out of trailers are dropped)."""
        if not ex.want_trailers or ex.complete:
            return
        ex.want_trailers = False
        self._write_for(ex, h1_response.last_chunk_with(headers))
        ex.complete = True
        self._exchange_complete(ex)

    def end_response(self, ex: Exchange) -> None:
        """The response's body is complete (a close-delimited one ends with the close)."""
        self.send_data(ex, b"", True)

    def end_open_response(self, ex: Exchange) -> None:
        """End a started open-ended body before the app finished it (an event stream told to
        stop): the last chunk, or the close for a close-delimited body."""
        if not ex.chunked:
            ex.keep_alive = False
        ex.want_trailers = False
        self.end_response(ex)

    def error_response(self, ex: Exchange, status: int, extra_headers=()) -> None:
        """The server's own answer for an exchange whose response has not started."""
        ex.started = True
        ex.status = status
        ex.keep_alive = False
        self._write_for(ex, h1_response.simple_response(
            status, HTTPStatus(status).phrase, date=self.head_fields.date_value, keep_alive=False,
            extra_headers=extra_headers))
        ex.complete = True
        self._exchange_complete(ex)

    def abort_response(self, ex: Exchange, why: str) -> None:
        """A started response cannot be finished: close the connection (what was written
        stays written; a truncated body shows as a short read), or reset it if the response
        never reached the socket."""
        log.warning("closing connection from %s: %s (stream %d)", self.io.peer, why,
                    ex.stream.sid if ex.stream is not None else 0)
        closing = self.closing
        self._set_closing(CLOSED)
        if ex.buffer is None and closing == OPEN:
            self.io.close()
        else:
            self.io.abort()

    def writable(self, ex: Exchange) -> bool:
        """Whether bytes of ``ex`` reach the socket now (credit may be granted for them)."""
        return ex.buffer is None and self.write_blocked_since is None

    def send_continue(self, ex: Exchange) -> None:
        """The app asked for the body: a client that sent Expect: 100-continue gets it."""
        if not ex.continue_sent:
            ex.continue_sent = True
            if ex.req.expect_continue and not ex.started:
                self._write_for(ex, CONTINUE)

    def pause_body(self, ex: Exchange) -> None:
        self._pause(ex.key)

    def resume_body(self, ex: Exchange) -> None:
        self._resume(ex.key)

    def _write_for(self, ex: Exchange, data: bytes) -> None:
        if self.closed:
            return
        if ex.buffer is None:
            self.io.write(data)
        else:
            ex.buffer.append(data)

    def _exchange_complete(self, ex: Exchange) -> None:
        """The response is fully written (or buffered): advance the pipeline."""
        if self.closed:
            return
        if ex.stream is not None:
            ex.stream.finished()
        if not ex.body_done and ex is self.current:
            # the app did not read its body: drop the rest (_on_body), unless it is known
            # to be too long to be worth reading
            self.discard_bytes = 0
            left = self.parser.body_left
            if left is not None and left > DISCARD_MAX:
                ex.keep_alive = False
            self._resume(ex.key)
        pipeline = self.pipeline
        while pipeline and pipeline[0].complete:
            done = pipeline.popleft()
            # the stream keeps its exchange (for its last events); the exchange lets go of
            # the stream, so that the two are no reference cycle: freed at once, not by the
            # cyclic GC (whose passes over every request's objects cost ~5% of the path)
            done.stream = None
            if not done.keep_alive:
                self._close_after_write()
                return
            if (not done.body_done and done.req.expect_continue and not done.continue_sent):
                self._close_after_write()  # the announced body never came
                return
            if not pipeline:
                break
            nxt = pipeline[0]
            buffered, nxt.buffer = nxt.buffer, None
            if buffered:
                self.io.write(b"".join(buffered))
            if nxt.stream is not None:
                nxt.stream.flush_owed()
        if self.paused_by and len(pipeline) < MAX_PIPELINE:
            self._resume(0)
        if not pipeline:
            if self.draining:
                self._close_after_write()
            else:
                # stamped by the next tick: the keep-alive deadline is checked once a second
                # anyway, and a clock read per response is saved
                self.idle_since = UNSTAMPED

    # --- reading control -----------------------------------------------------------------

    def _pause(self, key: int) -> None:
        if not self.paused_by:
            self.io.pause_reading()
        self.paused_by.add(key)

    def _resume(self, key: int) -> None:
        paused = self.paused_by
        if key in paused:
            paused.discard(key)
            if not paused and self.closing == OPEN:
                self.io.resume_reading()
                # time we did not read is not the client's: its timeouts start over
                now = self.io.now()
                self.last_read = now
                if self.head_since is not None:
                    self.head_since = now

    # --- closing -------------------------------------------------------------------------

    def _close_after_write(self) -> None:
        """Close once our bytes are written; lingering if the client may still be sending
        the request we answered (see the module docstring)."""
        self._set_closing(CLOSED)
        if self.parser.mid_request and self.io.can_linger():
            self.parser.stop()    # every byte from now on is dropped unparsed
            now = self.io.now()
            self._set_closing(LINGERING)
            self.lingering_until = now + LINGER_TIME
            self.last_read = now
            self.paused_by.clear()
            self.io.linger()
            return
        self.io.close()

    def connection_lost(self) -> None:
        """The socket is gone: every exchange still in flight tells its stream."""
        self._set_closing(CLOSED)
        for ex in self.pipeline:
            if ex.stream is not None:
                ex.stream.client_gone()
                ex.stream = None
        self.pipeline.clear()
        self.current = None

    def write_blocked(self, now: float) -> None:
        self.write_blocked_since = now

    def write_unblocked(self) -> None:
        self.write_blocked_since = None
        if self.pipeline and self.pipeline[0].stream is not None:
            self.pipeline[0].stream.flush_owed()

    # --- deadlines and draining (h1_deadlines.py) ------------------------------------------

    def tick(self, now: float) -> None:
        """Check the deadlines (h1_deadlines.py has their table)."""
        h1_deadlines.tick(self, now)

    def start_drain(self) -> None:
        """Shutdown/reload: finish what is in flight, then close; idle connections close now."""
        h1_deadlines.start_drain(self)

    def stop_now(self) -> None:
        """The graceful-shutdown timeout expired: a request whose response never started gets
        503 (the client may retry elsewhere); anything else in flight is cut off."""
        h1_deadlines.stop_now(self)
