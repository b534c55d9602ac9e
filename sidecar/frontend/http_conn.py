"""One client connection speaking HTTP/1.1: the asyncio adapter of its state machine.

    socket -> Transport -> H1Connection (sidecar/http/h1_connection.py: every HTTP/1.1 rule)
           -> on_request -> Stream (sidecar/frontend/stream.py) -> pool -> WorkerLink -> ring

This module only joins the parts: it is the socket's asyncio protocol (bytes in, write
pressure, the close), the state machine's handler (a new exchange becomes a Stream and is
dispatched; an upgrade is handed to the WebSocket code), and it knows the connection's part
of each request's scope (client, server, scheme, trusted proxy headers) -- what
``request_event`` packs into the stream's HTTP_REQUEST record.
"""
from __future__ import annotations

import asyncio
import logging
import time

from sidecar import events
from sidecar.events import HTTP_REQUEST, MAX_CHUNK, pack, request_record
from sidecar.events import _EMPTY_BIN, _MORE, _REQUEST_PREFIX
from sidecar.frontend import access, tls
from sidecar.frontend.access_format import Entry
from sidecar.frontend.cost import route_of
from sidecar.frontend.stream import Stream
from sidecar.frontend.transport import Transport
from sidecar.frontend.server import PROXY_CACHE
from sidecar.http import h1
from sidecar.http.h1 import proxy_key
from sidecar.http.h1_connection import UPGRADED, H1Connection, Timeouts
from sidecar.http.h2_preface import PREFACE, PREFACE_HEAD

log = logging.getLogger("sidecar.frontend")

def HTTP2Connection(conn, *args, **kw):
    """frontend/h2_conn.py's, imported with h2 on the first HTTP/2 connection (not at
    start-up: about a fifth of the front-end's import time)."""
    from sidecar.frontend.h2_conn import HTTP2Connection
    return HTTP2Connection(conn, *args, **kw)


def _drop(data: bytes) -> None:
    """Bytes after a bad HTTP/2 preface, before the close: nobody's."""



_timeouts_of: list = [None, None]   # the last config and its Timeouts (one per process)


def timeouts(config) -> Timeouts:
    """The client deadlines of ``config``'s connections, made once (not per connection)."""
    if _timeouts_of[0] is not config:
        _timeouts_of[:] = config, Timeouts(
            header=config.header_timeout, body=config.body_timeout,
            keepalive=config.keepalive_timeout, send=config.send_timeout,
            request=config.request_timeout)
    return _timeouts_of[1]


class HTTPConnection(asyncio.Protocol):
    """asyncio protocol for one client socket (TCP or Unix)."""

    def __init__(self, server):
        # made at the accept, before connection_made: the event loop binds data_received
        # when it sets the protocol, and the socket's bytes go straight to the state machine
        self.server = server
        config = server.config
        self.window = config.window
        self.transport: asyncio.Transport | None = None
        self.io = io = Transport(None, server.batcher, server.loop, "unix peer")
        self.h1 = H1Connection(io, self, server.limits, timeouts(config), io.now(),
                               head_fields=server,
                               upgrades=server.websocket_handler is not None,
                               h2c=server.h2_limits is not None,
                               max_first_body=MAX_CHUNK)
        # the first bytes say whether the client speaks HTTP/2 by prior knowledge (_sniff);
        # the loop binds data_received when the protocol is set, so after the sniff it is
        # bound again (set_protocol) to the one the connection keeps
        self.data_received = self._sniff if server.h2_limits is not None else self.h1.receive_data
        self._first = b""
        self.client = None
        self.server_addr = None
        self.scheme = "http"
        self.trusted = False
        self._proxy_answers: dict | None = None   # a trusted peer's (_proxy_scope's)
        self.tls = None   # a TLS connection's ASGI tls extension (frontend/tls.py), as a list

    @property
    def closed(self) -> bool:
        return self.h1.closed

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        server = self.server
        server.connections.add(self)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if isinstance(local, str) or isinstance(local, bytes):  # Unix socket
            path = local.decode() if isinstance(local, bytes) else local
            self.server_addr = [path, None]
            self.client = None
            self.trusted = server.trust_unix
        else:
            self.server_addr = [local[0], local[1]]
            self.client = [peer[0], peer[1]] if peer else None
            ctx = transport.get_extra_info("sslcontext")
            if ctx is not None:
                self.scheme = "https"   # wss for WebSockets (ws_conn)
                self.tls = tls.connection_info(transport.get_extra_info("ssl_object"), ctx)
                self._packed_tls = events.pack(self.tls)
                self.request_event = self._request_event_tls   # plain ones pay nothing
            self.trusted = server.is_trusted(peer[0] if peer else None)
            # (TCP_NODELAY: uvloop sets it on every TCP transport it makes;
            # tests/frontend/test_nodelay.py holds uvloop to that)
        self.who = access.who(self.client)   # the access lines' first field
        config = server.config
        self.io.transport = transport
        if self.client is not None:
            self.io.peer = self.client
        conn = self.h1
        # the C parser packs each request's HTTP_REQUEST fields with this connection's scope
        # (request_event); a trusted peer's proxy headers may change it per request
        pack = events.pack
        self._packed_server = pack(self.server_addr)
        rescope = proxy = None
        if self.trusted:
            # rescope's answers, read by the C parser too: a TCP connection's own (its
            # client's port is its alone), shared by every connection of a Unix socket
            # (behind nginx: all of them)
            rescope = self._proxy_scope
            if self.client is None:
                scopes = server.proxy_scopes
                kind = (self.scheme, self._packed_server)
                proxy = scopes.get(kind)
                if proxy is None:
                    if len(scopes) >= PROXY_CACHE:
                        scopes.clear()
                    proxy = scopes[kind] = {}
            else:
                proxy = {}
            self._proxy_answers = proxy
        conn.parser.pack_requests(pack(self.scheme), pack(self.client) + self._packed_server,
                                  config.root_path.encode(), rescope, proxy)
        limit = config.limit_concurrency
        if limit and len(server.connections) > limit:
            conn.over_limit = True
            server.log_over_concurrency("connection from %s over --limit-concurrency (%d): 503",
                                        self.client or "unix peer", limit)
        if server.h2_limits is not None and self.scheme == "https":
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                HTTP2Connection(self)   # TLS chose HTTP/2: it takes the socket over

    def data_received(self, data: bytes) -> None:   # (the instance's is h1.receive_data)
        self.h1.receive_data(data)

    def _sniff(self, data: bytes) -> None:
        """The connection's first bytes: the HTTP/2 client preface (RFC 9113 3.4) makes it
        an HTTP/2 connection; anything else is HTTP/1.1 (a request line starts with a method,
        which "PRI" is not).  A preface wrong after its "PRI * HTTP/2.0" head is an HTTP/2
        client's mistake: PROTOCOL_ERROR (3.4), a GOAWAY after our SETTINGS, and the close."""
        first = self._first + data
        n = min(len(first), len(PREFACE))
        if first[:n] == PREFACE[:n]:
            if n < len(PREFACE):
                self._first = first   # a prefix of the preface: wait for the rest
                return
            HTTP2Connection(self, first)
            return
        if first.startswith(PREFACE_HEAD):
            log.info("HTTP/2 connection error from %s: bad client preface %r (PROTOCOL_ERROR)",
                     self.client or "unix peer", first[:len(PREFACE)])
            self._first = b""
            self.data_received = _drop
            self.transport.set_protocol(self)
            from sidecar.http.h2_connection import BAD_PREFACE
            self.io.write(BAD_PREFACE)
            self.io.close()
            return
        self._first = b""
        self.data_received = self.h1.receive_data
        self.transport.set_protocol(self)
        self.h1.receive_data(first)

    def eof_received(self):
        # A client that shuts down its side is treated as gone (as uvicorn and nginx do): the
        # transport closes, connection_lost tells the workers, apps see http.disconnect.
        return False

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        if self.h1.read_state != UPGRADED:  # (after an upgrade the socket is a WebSocket's)
            self.h1.connection_lost()

    def pause_writing(self) -> None:
        self.h1.write_blocked(self.server.loop.time())

    def resume_writing(self) -> None:
        self.h1.write_unblocked()

    # --- H1Connection's handler ----------------------------------------------------------

    def on_request(self, ex, body: bytes, more: bool) -> None:
        server = self.server
        sid = server.next_sid()
        stream = Stream(self, self.h1, ex, sid)
        dispatcher = server.pool.dispatcher
        links = dispatcher.links
        packed = ex.req.packed
        config = dispatcher.config
        if (packed is not None and self.tls is None and not dispatcher.waiting
                and dispatcher.on_dispatched is None and not config.limit_streams):
            # The keep-alive cycle's hot path: a request the C parser packed, on a plain
            # connection, no stream waiting for a worker, no --limit-streams to count.  A
            # written-out copy of Dispatcher.dispatch, Stream.dispatch (StreamBase._attach),
            # request_event and events.request_record (change them together): four calls
            # less per request
            if len(links) == 1:   # pick()'s first rule, without the call: one worker
                link = links[0]
                cap = config.limit_worker_streams
                if cap and len(link.streams) >= cap:
                    link = None
            else:
                link = dispatcher.pick(stream)
            if link is None:   # every worker full: the stream waits (dispatch parks it)
                dispatcher.dispatch(stream, body, more)
                return
            stream.link = link
            stream.dispatched = True
            stream.body_sent_done = not more
            stream.recv_credit = link.window - len(body)
            stream.route = route = route_of(ex.req)
            stream.cost, stream.t_dispatch = link.open_stream(sid, stream, b"".join((
                _REQUEST_PREFIX, pack(sid), packed, pack(body) if body else _EMPTY_BIN,
                _MORE[more])), route)
            if server.access_detail:   # an --access-log-format that shows timings
                stream.t_taken = time.monotonic()
            return
        dispatcher.dispatch(stream, body, more)

    def on_upgrade(self, req: h1.Request) -> None:
        if req.upgrade == b"h2c":   # HTTP/2 from here on, the request its stream 1
            HTTP2Connection(self, self.h1.parser.take_trailing(), upgrade=req)
            return
        self.server.websocket_handler(self, req)

    # --- the scope of a request on this connection ---------------------------------------

    def request_event(self, stream: Stream, body: bytes, more: bool) -> list | bytes:
        """The stream's HTTP_REQUEST: the record itself when the C parser packed the scope
        (h1.Request.packed), else the event as a list."""
        packed = stream.req.packed
        if packed is not None:
            return request_record(stream.sid, packed, body, more)
        req = self.req_scope(stream.req)
        return [HTTP_REQUEST, stream.sid, req[0], req[1], req[2], req[3], req[4], req[5],
                req[6], req[7], req[8], req[9], body, more]

    def _request_event_tls(self, stream: Stream, body: bytes, more: bool) -> list | bytes:
        """request_event on a TLS connection: with the (tls) field (docs/protocol.md)."""
        ev = HTTPConnection.request_event(self, stream, body, more)
        if type(ev) is bytes:   # a fixarray of 14 (0x9e) becomes one of 15 (0x9f)
            return b"\x9f" + ev[1:] + self._packed_tls
        ev.append(self.tls)
        return ev

    def _proxy_scope(self, headers) -> tuple[bytes, bytes] | None:
        """For the C packer (h1.RequestParser.pack_requests): a trusted peer's request whose
        proxy headers change the scheme or the client gets them packed, else None.  The
        answer depends only on the proxy fields and this connection's scheme, client and
        server, so it is kept in _proxy_answers, keyed by h1.proxy_key, which the C parser
        reads itself (native/h1_api.c): a TCP connection's own dict, one shared by the
        connections of a Unix socket (server.proxy_scopes).  Behind nginx every request has
        the fields, and working them out each time cost ~35 us a request; asking this for
        each cost ~10 more."""
        answers = self._proxy_answers
        key = proxy_key(headers)
        try:
            return answers[key]
        except KeyError:
            pass
        scheme, client = self.server.apply_proxy_headers(headers, self.scheme, self.client)
        if scheme == self.scheme and client == self.client:
            mine = None
        else:
            pack = events.pack
            mine = pack(scheme), pack(client) + self._packed_server
        if len(answers) >= PROXY_CACHE:
            answers.clear()
        answers[key] = mine
        return mine

    def req_scope(self, req: h1.Request) -> tuple:
        """(method, scheme, path, raw_path, query, headers, client, server, version, root)."""
        root = self.server.config.root_path
        scheme, client = self.scheme, self.client
        headers = req.headers  # list of (name, value) tuples: msgpack packs them as arrays
        if self.trusted:
            scheme, client = self.server.apply_proxy_headers(req.headers, scheme, client)
        path = root + req.path if root else req.path
        raw_path = root.encode() + req.raw_path if root else req.raw_path
        return (req.method.decode("ascii"), scheme, path, raw_path, req.query_string, headers,
                client, self.server_addr, req.http_version, root)

    # --- the server's side: sweep, drain, access -----------------------------------------

    def close_if_idle(self, now: float, timeout: float) -> None:
        """The client deadlines, checked by the server's once-a-second sweep."""
        self.h1.tick(now)

    def start_drain(self) -> None:
        self.h1.start_drain()

    def close_after_response(self) -> bool:
        """Answer the request in flight with ``Connection: close`` and close after it (a
        busy front-end sheds connections to another: balance.py).  False, nothing done: no
        request waits for its response's start (idle, streaming), or already closing."""
        h1 = self.h1
        if h1.draining or h1.closed or h1.read_state == UPGRADED or not h1.pipeline \
                or h1.pipeline[0].started:
            return False
        h1.draining = True   # as a graceful shutdown does, for this connection only
        return True

    def stop_now(self) -> None:
        if self.transport is not None:
            self.h1.stop_now()

    def flush(self) -> None:
        self.io.flush()

    def log_access(self, stream: Stream) -> None:
        ex = stream.ex
        log = self.server.access
        if log.format is None:   # the default line: its own fast path
            log.write(access.line(self.who, stream.req, ex.status, ex.sent_bytes,
                                  time.monotonic() - stream.t0))
            return
        log.write_entry(self.access_entry(stream, ex.status, ex.sent_bytes))

    def access_entry(self, stream: Stream, status: int, sent: int) -> Entry:
        """Every value a --access-log-format may show of this stream's exchange."""
        t0, req = stream.t0, stream.req
        scheme, client = self.scheme, self.client
        if self.trusted and self.server.access.format.wants_client:
            scheme, client = self.server.apply_proxy_headers(req.headers, scheme, client)
        taken = getattr(stream, "t_taken", None)
        first = getattr(stream, "t_first", None)
        link = stream.link
        return Entry(
            req, status, sent, time.monotonic() - t0, self.who, client, scheme,
            queue=None if taken is None else taken - t0,
            ttfb=None if first is None else first - t0,
            worker=link.index if link is not None else None,
            worker_pid=link.pid if link is not None else None, sid=stream.sid,
            response_headers=getattr(stream, "response_headers", None))


__all__ = ["HTTPConnection", "Stream", "events"]
