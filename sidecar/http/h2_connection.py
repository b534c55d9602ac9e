"""One HTTP/2 server connection as a state machine, without I/O (over python-hyper's ``h2``).

    bytes in (``receive_data``)    -> h2 events -> requests and bodies, to the streams
    responses in (the stream interface, per HTTP/2 stream) -> h2 frames -> bytes out (``io``)

``h2`` owns the framing, HPACK and the RFC 9113 stream states; this module owns what h2 leaves
to the server: our limits and deadlines, flow control tied to the app, the floods to refuse,
and the graceful GOAWAY.  Like ``H1Connection`` it reads no clock (the time is passed in or
read from ``io.now``), touches no socket and runs no event loop: it is given

    io        write(bytes), close() (once written), abort(), now(), peer
    handler   on_request(ex, body, more) -- a new stream; the handler sets ``ex.stream``
              on_websocket(ex) -- an extended CONNECT (RFC 8441): the handler makes it one
    ex.stream on_body(data, more), client_gone(), flush_owed(), finished()

Each HTTP/2 stream is an ``H2Exchange``, and it is its own port of the stream interface
(``sidecar/frontend/stream.py``): the stream layer calls ``proto.start_response(ex, ...)``
with ``proto is ex``, and ``ex.closed`` is true once the client reset the stream or the
connection is gone -- one stream's end is never another's.

Flow control, end to end (DESIGN.md: "WINDOW_UPDATE only for what the app read")
----------------------------------------------------------------------------------
- Request bodies: a stream's receive window is the ring window (``window``); DATA goes to the
  stream layer as it comes, and WINDOW_UPDATE is sent only for the bytes the app took
  (``body_read``, called for each RECV_CREDIT).  The connection window is ``window`` times
  the stream limit, so a stream the app does not read never stalls another.  Bytes nobody
  will read (the response completed, the stream was reset) are acknowledged at once.
- Response bodies: bytes go into h2 only as far as the client's stream and connection windows
  allow; the rest waits in the exchange (``out``), and ``writable`` is false until it left, so
  the stream layer grants ring credit only for bytes the client's window took.

Deadlines: ``tick(now)``, about once a second (sidecar/http/h2_deadlines.py has their table).

WebSockets (RFC 8441): SETTINGS_ENABLE_CONNECT_PROTOCOL is 1 (``extended_connect``), and a
CONNECT with ``:protocol websocket`` goes to ``handler.on_websocket(ex)``, which makes the
exchange's stream an ``H2WSConnection`` (http/h2_ws.py); another ``:protocol`` is 501.

Floods (counted per tick, about a second; each limit is an ``H2Limits`` field with a flag):
frames that cost us work but carry no request -- SETTINGS, PING, PRIORITY, empty DATA
without END_STREAM -- past ``max_control_frames``; client resets past
``max_resets`` (rapid reset, CVE-2023-44487).  Either is GOAWAY ENHANCE_YOUR_CALM, a log
line, and the close.  CONTINUATION floods (CVE-2024-27316) and HPACK bombs are bounded in h2
(64 CONTINUATION frames, ``max_header_list`` decoded bytes): COMPRESSION_ERROR or
PROTOCOL_ERROR GOAWAY.
"""
from __future__ import annotations

import logging
from http import HTTPStatus

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from . import h1, h2_deadlines, h2_fast
from .fields import check_fields
from .h2_checks import goaway_frame as _goaway, rfc_code, valid_fields
from .h2_exchange import H2Exchange, request_head, response_fields
from .h2_preface import PREFACE, PREFACE_HEAD
from .limits import H2Limits
from .h1_connection import Timeouts

log = logging.getLogger("sidecar.frontend")

__all__ = ["H2Connection", "H2Exchange", "H2Limits", "PREFACE", "PREFACE_HEAD",
           "BAD_PREFACE"]

# the request of a stream whose head was too large to keep (H2Connection._oversized)
_NO_REQUEST = h1.Request(b"GET", b"/", "/", b"/", b"", "2", [], True, False, None, None, False)


class H2Connection:
    """The HTTP/2 side of one client connection (see the module docstring)."""

    def __init__(self, io, handler, limits: H2Limits, timeouts: Timeouts, now: float, *,
                 head_fields, window: int, upgrade: h1.Request | None = None,
                 extended_connect: bool = True):
        self.io = io
        self.handler = handler
        self.limits = limits
        self.timeouts = timeouts
        self.head_fields = head_fields
        self.window = window
        self.extended_connect = extended_connect   # RFC 8441: WebSockets over streams
        # h2's outbound checks are off: _check_fields does them in a few C calls, where h2
        # spends more per response on them than on the rest of its work
        config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                           validate_outbound_headers=False,
                                           validate_inbound_headers=False,   # valid_fields
                                           normalize_inbound_headers=False,  # request_head
                                           normalize_outbound_headers=False,
                                           split_outbound_cookies=False)
        self.h2 = conn = h2.connection.H2Connection(config=config)
        conn.encoder = h2_fast.Encoder()   # HPACK blocks that repeat, decoded/encoded once
        conn.decoder = h2_fast.Decoder()
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: int(extended_connect),
        })
        conn.decoder.max_header_list_size = limits.max_header_list
        self.exchanges: dict[int, H2Exchange] = {}
        self.heads = h2_fast.RequestHeads(self._request)   # request heads seen, by fields
        self.responses = h2_fast.ResponseHeads(response_fields)   # response heads, likewise
        self.closed = False
        self.draining = False
        self.goaway_sent = False
        self.write_blocked_since: float | None = None
        self.idle_since: float | None = now
        self.control_frames = 0       # this tick's frames without a request
        self.resets = 0               # this tick's client resets
        self.streams_total = 0        # for status and the access log's neighbours
        self.bad_upgrade = False
        if upgrade is not None:   # Upgrade: h2c; H1Connection checked there is one
            settings = next(v for n, v in upgrade.headers if n == b"http2-settings")
            try:
                conn.initiate_upgrade_connection(settings)
            except Exception as exc:   # bad base64 or SETTINGS: PROTOCOL_ERROR below
                log.info("HTTP/2 upgrade from %s: bad HTTP2-Settings (%s)", io.peer, exc)
                conn.initiate_connection()
                self.bad_upgrade = True
        else:
            conn.initiate_connection()
        # the connection window: one stream window per allowed stream, so that a stream
        # whose app does not read never holds the others' bytes back
        conn.increment_flow_control_window(window * limits.max_streams - 65535)
        self._flush()

    # --- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            evs, used = h2_fast.requests_received(self.h2, data)   # the common frames
            if used < len(data):
                rest = self.h2.receive_data(data[used:] if used else data)
                evs = evs + rest if evs else rest
        except h2.exceptions.ProtocolError as exc:
            code = getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)
            rfc = rfc_code(exc)   # where h2 says PROTOCOL_ERROR and the RFC another code
            if rfc is not None:
                out = self.h2.data_to_send()   # ends with h2's GOAWAY: 17 bytes, type 7
                if len(out) >= 17 and out[-14] == 0x7:
                    out = out[:-17]
                self.io.write(out + _goaway(self.h2.highest_inbound_stream_id, rfc))
                code = rfc
            log.info("HTTP/2 connection error from %s: %s (%s)", self.io.peer,
                     exc or type(exc).__name__, ErrorCodes(code).name
                     if code in ErrorCodes._value2member_map_ else code)
            self._flush()   # h2 queued the GOAWAY
            self._close()
            return
        except Exception:   # an h2 bug must not take the process down
            log.exception("HTTP/2 connection from %s failed", self.io.peer)
            self.goaway(ErrorCodes.INTERNAL_ERROR, "internal error")
            return
        now = self.io.now()
        limits = self.limits
        for ev in evs:
            if type(ev) is tuple:   # h2_fast.requests_received's: a request without a body
                self._request_in(ev[0], ev[1], False, now)
            else:
                handler = _HANDLERS.get(type(ev))
                if handler is not None:
                    handler(self, ev, now)
            if self.closed:
                return
            # checked per event: a read holds thousands of frames, and the streams of a
            # rapid reset must not reach the workers past the limit
            if self.control_frames > limits.max_control_frames:
                self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, f"control frame flood "
                            f"({self.control_frames} frames without a request)")
                return
            if self.resets > limits.max_resets:
                self.goaway(ErrorCodes.ENHANCE_YOUR_CALM,
                            f"rapid reset ({self.resets} streams reset by the client)")
                return
        self._flush()

    def _on_request(self, ev: h2.events.RequestReceived, now: float) -> None:
        self._request_in(ev.stream_id, ev.headers, ev.stream_ended is None, now)

    def _request_in(self, sid: int, headers, more: bool, now: float) -> None:
        if self.draining:   # after our GOAWAY: refused, the client retries elsewhere
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        if headers and headers[0] is h2_fast.OVERSIZED:
            self._oversized(sid, more, now)
            return
        req = self.heads.of(headers) if h2_fast.speedups else _request(headers)
        if req is None or req.upgrade is not None and not self.extended_connect:
            log.info("HTTP/2 malformed request from %s on stream %d", self.io.peer, sid)
            self.h2.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)
            return
        ex = H2Exchange(self, sid, req, now)
        self.exchanges[sid] = ex
        self.idle_since = None
        self.streams_total += 1
        ex.body_done = not more
        if req.upgrade is None:
            self.handler.on_request(ex, b"", more)
        elif req.upgrade == b"websocket" and more:
            self.handler.on_websocket(ex)   # it makes the stream an H2WSConnection (h2_ws.py)
        else:   # RFC 8441 section 4: a protocol we do not speak, or a tunnel already ended
            status = 400 if req.upgrade == b"websocket" else 501
            log.info("HTTP/2 extended CONNECT for %r from %s: %d", req.upgrade, self.io.peer,
                     status)
            self.error_response(ex, status)

    def _request(self, headers) -> h1.Request | None:
        """A request's head for RequestHeads (once per distinct head): with its HTTP_REQUEST
        scope packed by the handler's ``pack_scope``, if it has one (frontend/h2_conn.py)."""
        req = _request(headers)
        pack_scope = getattr(self.handler, "pack_scope", None)
        if req is not None and req.upgrade is None and pack_scope is not None:
            req = req._replace(packed=pack_scope(req))
        return req

    def _oversized(self, sid: int, more: bool, now: float) -> None:
        """A header list over --max-header-bytes (h2_fast.Decoder finished its block): 431 on
        that stream, as HTTP/1.1 answers, and the connection goes on; a body still coming is
        refused with RST_STREAM NO_ERROR after the answer (RFC 9113 8.1)."""
        log.info("HTTP/2 header list over --max-header-bytes (%d) from %s on stream %d: 431",
                 self.limits.max_header_list, self.io.peer, sid)
        ex = H2Exchange(self, sid, _NO_REQUEST, now)
        ex.body_done = not more
        self.exchanges[sid] = ex
        self.idle_since = None
        self.error_response(ex, 431)
        if more and not self.closed:
            try:
                self.h2.reset_stream(sid, ErrorCodes.NO_ERROR)
            except h2.exceptions.ProtocolError:
                pass

    def upgraded_request(self, req: h1.Request) -> None:
        """The HTTP/1.1 request of an ``Upgrade: h2c``: stream 1, its body complete."""
        if self.bad_upgrade:
            self.goaway(ErrorCodes.PROTOCOL_ERROR, "bad HTTP2-Settings in an h2c upgrade")
            return
        drop = (b"connection", b"upgrade", b"http2-settings", b"keep-alive")
        req = req._replace(http_version="2", upgrade=None, packed=None, headers=[
            (n, v) for n, v in req.headers if n not in drop])
        ex = H2Exchange(self, 1, req, self.io.now())
        ex.body_done = True
        self.exchanges[1] = ex
        self.idle_since = None
        self.streams_total += 1
        self.handler.on_request(ex, b"", False)
        self._flush()

    def _on_data(self, ev: h2.events.DataReceived, now: float) -> None:
        n = ev.flow_controlled_length
        ex = self.exchanges.get(ev.stream_id)
        data = ev.data
        if not data and ev.stream_ended is None:
            self.control_frames += 1   # empty DATA (a flood's favourite)
        if ex is None or ex.complete or ex.closed:
            if n:   # nobody will read it: the connection's window gets it back now
                self.h2.acknowledge_received_data(n, ev.stream_id)
            return
        pad = n - len(data)
        ex.unacked += len(data)
        if pad:
            self.h2.acknowledge_received_data(pad, ev.stream_id)
        ex.last_read = now
        ex.body_bytes += len(data)
        max_body = self.limits.max_body
        if max_body is not None and ex.body_bytes > max_body and ex.ws is None:
            log.info("HTTP/2 request body over --max-body (%d) from %s", max_body, self.io.peer)
            ex.stream.client_gone()
            if ex.started:
                self.reset(ex, ErrorCodes.CANCEL, "request body too large")
            else:
                self.error_response(ex, 413)
            return
        more = ev.stream_ended is None
        if not more:
            ex.body_done = True
        ex.stream.on_body(data, more)

    def _on_stream_ended(self, ev, now: float) -> None:
        ex = self.exchanges.get(ev.stream_id)
        if ex is not None and not ex.body_done and not ex.closed and not ex.complete:
            ex.body_done = True
            ex.stream.on_body(b"", False)   # END_STREAM on an empty DATA or trailers

    def _on_trailers(self, ev: h2.events.TrailersReceived, now: float) -> None:
        ex = self.exchanges.get(ev.stream_id)
        if ex is not None and not valid_fields(ev.headers, trailers=True):
            self.reset(ex, ErrorCodes.PROTOCOL_ERROR, "malformed trailers")

    def _on_reset(self, ev: h2.events.StreamReset, now: float) -> None:
        if not ev.remote_reset:
            return
        log.debug("HTTP/2 stream %d from %s reset by the client (%s)", ev.stream_id,
                  self.io.peer, ev.error_code)
        self.resets += 1
        ex = self.exchanges.get(ev.stream_id)
        if ex is not None:
            self._stream_gone(ex)

    def _on_window(self, ev: h2.events.WindowUpdated, now: float) -> None:
        # not counted as a flood: a client reading a large body sends one per few frames
        if ev.stream_id == 0:
            self._pump_all()
        else:
            ex = self.exchanges.get(ev.stream_id)
            if ex is not None and ex.out:
                ex.pump()

    def _on_settings(self, ev, now: float) -> None:
        self.control_frames += 1
        self._pump_all()   # INITIAL_WINDOW_SIZE or MAX_FRAME_SIZE may have changed

    def _on_control(self, ev, now: float) -> None:
        self.control_frames += 1

    def _on_goaway(self, ev: h2.events.ConnectionTerminated, now: float) -> None:
        # the client is leaving: what is in flight finishes, then we close (or it does).
        # h2 takes a GOAWAY received for the end (its state CLOSED): it would refuse the
        # responses in flight, and a response head refused blames the worker (killed for
        # a protocol error).  RFC 9113 6.8: the streams up to it still complete, so its
        # state is open again; new streams are refused (draining).
        self.draining = True
        if not self.exchanges:
            self._close()
        elif self.h2.state_machine.state is h2.connection.ConnectionState.CLOSED:
            self.h2.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN

    # --- output: the stream interface (through each H2Exchange) --------------------------

    def start_response(self, ex: H2Exchange, status: int, headers, trailers: bool = False
                       ) -> bool:
        open_ended = self._start(ex, status, headers, trailers)
        self._flush()
        return open_ended

    def _start(self, ex: H2Exchange, status: int, headers, trailers: bool = False) -> bool:
        """start_response without the flush."""
        if ex.closed:
            ex.started = True
            return False
        if not 200 <= status <= 999:
            raise ValueError(f"status {status} cannot start an HTTP/2 response")
        if h2_fast.speedups:
            fields, length = self.responses.of(status, headers, self.head_fields)
        else:
            fields, length = response_fields(status, headers, self.head_fields)
        try:
            frames = h2_fast.response_headers(self.h2, ex.sid, fields)
            if frames is None:
                self.h2.send_headers(ex.sid, list(fields))
            else:   # the common case, past h2's frame objects (h2_fast.py)
                self.h2._data_to_send += frames
        except (h2.exceptions.ProtocolError, ValueError, TypeError) as exc:
            raise ValueError(f"response head: {exc}") from None
        ex.started = True
        ex.status = status
        ex.want_trailers = trailers
        return length is None and not ex.head_only

    def send_data(self, ex: H2Exchange, data: bytes, end: bool = False) -> None:
        if ex.closed or ex.complete:
            return
        if data and not ex.head_only:
            ex.sent_bytes += len(data)
            ex.out.append(data)
        if end:
            ex.out_end = True
            ex.complete = not ex.want_trailers
        ex.pump()
        self._flush()

    def respond(self, ex: H2Exchange, status: int, headers, body: bytes) -> None:
        """A whole response (the app's start and last body in one batch, no trailers):
        ``start_response`` then ``send_data(ex, body, True)``, its HEADERS and DATA made by
        h2_fast in one step where they can be.  ValueError as start_response."""
        if h2_fast.speedups and not ex.closed and 200 <= status <= 999:
            fields, _ = self.responses.of(status, headers, self.head_fields)
            try:
                frames = h2_fast.response(self.h2, ex.sid, fields,
                                          b"" if ex.head_only else body)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"response head: {exc}") from None
            if frames is not None:   # the common case: HEADERS and DATA, END_STREAM
                ex.started = ex.out_end = ex.complete = True
                ex.status = status
                if not ex.head_only:
                    ex.sent_bytes += len(body)
                if self.h2._data_to_send:   # what h2 had queued goes first
                    self._flush()
                if not self.closed:
                    self.io.write(frames)
                self._ended(ex)
                return
        self._start(ex, status, headers)
        if ex.closed or ex.complete:
            self._flush()
            return
        frame = None
        if not ex.out and not ex.head_only:
            frame = h2_fast.response_data(self.h2, ex.sid, body, True)
        if frame is None:
            self.send_data(ex, body, True)
            return
        self.h2._data_to_send += frame
        ex.sent_bytes += len(body)
        ex.out_end = ex.complete = True
        self._ended(ex)
        self._flush()

    def send_trailers(self, ex: H2Exchange, headers) -> None:
        """The ASGI trailers of a response started with ``trailers``: they end the stream."""
        if ex.closed or ex.complete:
            return
        check_fields(headers)
        fields = [(name.lower(), value.strip(b" \t")) for name, value in headers
                  if name.lower() not in h1._FORBIDDEN_TRAILERS]   # RFC 9110 6.5.1
        ex.trailers = fields
        ex.out_end = True
        ex.complete = True
        ex.pump()
        self._flush()

    def error_response(self, ex: H2Exchange, status: int, extra_headers=()) -> None:
        """The server's own answer for a stream whose response has not started."""
        if ex.closed or ex.complete:
            return
        body = b"" if ex.head_only else HTTPStatus(status).phrase.encode("ascii")
        headers = [(b"content-type", b"text/plain; charset=utf-8"),
                   (b"content-length", b"%d" % len(body)), *extra_headers]
        self.start_response(ex, status, headers)
        ex.want_trailers = False
        self.send_data(ex, body, True)

    def reset(self, ex: H2Exchange, code: ErrorCodes, why: str) -> None:
        """End one stream with RST_STREAM (a response that cannot be finished): the others
        on the connection go on."""
        if ex.closed or ex.ended:
            return
        if code != ErrorCodes.CANCEL:
            log.warning("resetting HTTP/2 stream %d from %s: %s", ex.sid, self.io.peer, why)
        else:
            log.info("resetting HTTP/2 stream %d from %s: %s", ex.sid, self.io.peer, why)
        try:
            self.h2.reset_stream(ex.sid, code)
        except h2.exceptions.StreamClosedError:
            pass
        self._flush()
        if ex.stream is not None:
            ex.stream.client_gone()
        self._stream_gone(ex)

    def body_read(self, ex: H2Exchange, n: int) -> None:
        """The app took n request body bytes: the client may send that many more."""
        n = min(n, ex.unacked)
        if n <= 0 or ex.closed:
            return
        ex.unacked -= n
        self.h2.acknowledge_received_data(n, ex.sid)
        self._flush()

    # --- sending -------------------------------------------------------------------------

    def _pump_all(self) -> None:
        for ex in list(self.exchanges.values()):
            if ex.out or ex.out_end and not ex.ended:
                ex.pump()

    def _ended(self, ex: H2Exchange) -> None:
        """END_STREAM went out: the response is written."""
        ex.ended = True
        ex.out.clear()
        stream = ex.stream
        if stream is not None:
            stream.finished()
        self._release(ex)

    def _stream_gone(self, ex: H2Exchange) -> None:
        """The stream ended without a complete response (a reset either way)."""
        if ex.gone:
            return
        ex.closed = ex.ended = True
        ex.out.clear()
        if ex.stream is not None:
            ex.stream.client_gone()
        self._release(ex)

    def _release(self, ex: H2Exchange) -> None:
        if ex.gone:
            return
        ex.gone = True
        if ex.unacked:   # body nobody will read: the connection window gets it back
            try:
                self.h2.acknowledge_received_data(ex.unacked, ex.sid)
            except h2.exceptions.ProtocolError:
                pass
            ex.unacked = 0
        self.exchanges.pop(ex.sid, None)
        ex.stream = None
        if not self.exchanges:
            if self.draining:
                self._flush()
                self._close()
            else:
                self.idle_since = self.io.now()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.io.write(data)

    # --- the connection as a whole -------------------------------------------------------

    def goaway(self, code: ErrorCodes, why: str) -> None:
        """A connection error: GOAWAY with ``code``, a log line, every stream told, close."""
        log.warning("HTTP/2 GOAWAY %s to %s: %s", code.name, self.io.peer, why)
        self._flush()
        if not self.closed:
            self.io.write(_goaway(self.h2.highest_inbound_stream_id, code))
        self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._tell_streams()
        self.io.close()

    def _tell_streams(self) -> None:
        for ex in list(self.exchanges.values()):
            ex.closed = True
            if ex.stream is not None:
                ex.stream.client_gone()
                ex.stream = None
        self.exchanges.clear()

    def connection_lost(self) -> None:
        self.closed = True
        self._tell_streams()

    def write_blocked(self, now: float) -> None:
        self.write_blocked_since = now

    def write_unblocked(self) -> None:
        self.write_blocked_since = None
        for ex in list(self.exchanges.values()):
            if not ex.out and ex.stream is not None:
                ex.stream.flush_owed()

    def start_drain(self) -> None:
        """Shutdown/reload: GOAWAY NO_ERROR, the streams in flight finish (h2_deadlines.py)."""
        h2_deadlines.start_drain(self)

    def stop_now(self) -> None:
        """The graceful-shutdown timeout expired (h2_deadlines.py)."""
        h2_deadlines.stop_now(self)

    def tick(self, now: float) -> None:
        """Check the deadlines and start the flood counters over (h2_deadlines.py)."""
        h2_deadlines.tick(self, now)


def _request(headers) -> h1.Request | None:
    """A request's head, None if it is malformed (a stream error)."""
    return request_head(headers) if valid_fields(headers) else None


_HANDLERS = {
    h2.events.RequestReceived: H2Connection._on_request,
    h2.events.DataReceived: H2Connection._on_data,
    h2.events.StreamEnded: H2Connection._on_stream_ended,
    h2.events.TrailersReceived: H2Connection._on_trailers,
    h2.events.StreamReset: H2Connection._on_reset,
    h2.events.WindowUpdated: H2Connection._on_window,
    h2.events.RemoteSettingsChanged: H2Connection._on_settings,
    h2.events.SettingsAcknowledged: H2Connection._on_control,
    h2.events.PingReceived: H2Connection._on_control,
    h2.events.PingAckReceived: H2Connection._on_control,
    h2.events.PriorityUpdated: H2Connection._on_control,
    h2.events.ConnectionTerminated: H2Connection._on_goaway,
}


#: The answer to a bad client preface (RFC 9113 3.4): our SETTINGS (a server's preface comes
#: first), then GOAWAY PROTOCOL_ERROR naming no stream.
BAD_PREFACE = (b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
               + _goaway(0, ErrorCodes.PROTOCOL_ERROR))
