"""HTTP/1.1 requests for the front-end, without I/O: request bytes in, events out.

Reading requests
================

``RequestParser.feed(data)`` returns a list of events, in order:

    Request          a complete, validated request head
    Body             request body bytes (decoded from chunked framing; never empty)
    EndOfMessage     the request (head and body) is complete
    ProtocolError    the input is not acceptable HTTP/1.1: answer ``status``, then close

Every request is ``Request, Body*, EndOfMessage``. A ProtocolError can come instead of a
Request or after one (a bad chunked body, a body over ``max_body``): if the response has not
started, answer with ``simple_response(status, reason)``, otherwise just close. After a
ProtocolError, and after a request that is not ``keep_alive``, feed() returns nothing more and
drops whatever it is given (bytes pipelined after ``Connection: close`` are never parsed).

``data`` is any split of the byte stream; the events, and the status of a ProtocolError,
are the same however the stream is split into reads (the tests feed every case whole, byte by
byte and in random pieces). Work is linear in the input, also when it comes byte by byte.

Division of labour: sidecar frames each head itself (finds CRLF CRLF, enforces the limits
before buffering), hands the head to llhttp (httptools) in strict mode for the grammar, then
applies RFC 9110/9112 semantics llhttp lacks. Bodies never pass through llhttp: Content-Length
bodies are sliced, chunked ones parsed here, so that sidecar always knows where the next request
begins and llhttp can never be tricked into reading a second message from a first one's body.
An incomplete head goes to llhttp line by line as it arrives, so garbage (TLS on the plain
port, a NUL in a field) is refused at once rather than at a limit; before a limit applies,
llhttp has seen exactly the bytes within it.

A C speedup comes first: when a whole head is in the bytes just received, ``h1_parse_head``
(native/h1.c, compiled as sidecar._h1) parses it in one pass and hands back spans and the
framing facts, with no Python call per field. It only takes heads it can prove this module
accepts (a known method, an origin-form target, the framing fields in their plain forms, within
every limit) and gives the very Request this module would; anything else, and every error, it
declines, and the Python path below parses the head as if the C code did not exist. So this
module stays the only place that decides a status, and its pure-Python path is the C code's
twin: the tests run every table against both (tests/http/conftest.py) and compare them on
mutated heads (tests/http/test_h1_speedups.py). ``SIDECAR_NO_SPEEDUPS=1`` in the environment,
or ``speedups = False`` here, turns the C path off.

The rules a request head must follow (request line, header fields, framing, connection)
are ``sidecar.http.h1_head``'s, which checks a complete head; the parser's Python path for a
head (llhttp fed as it arrives, then those checks) is there too (``PythonHeads``), as is the
grammar of chunk lines and trailer fields.  This module frames heads and bodies:

Chunked bodies (section 7.1)
  * chunk-size: 1 to 16 hex digits; chunk extensions are checked against the grammar and
    ignored; the line may not exceed ``MAX_CHUNK_LINE``; anything else -> 400. Each chunk's
    data must be followed by exactly CRLF -> else 400.
  * Trailer fields are checked like header fields, count against ``max_header_bytes`` /
    ``max_headers`` (-> 431), and are then dropped: ASGI has no request trailers. Trailers that
    could only mean an attack or a confused client (framing, routing, connection control,
    authentication, content metadata: see ``_FORBIDDEN_TRAILERS``) -> 400.

Responses are written by ``sidecar.http.h1_response``.
"""
from __future__ import annotations

import os
import struct
import threading

from httptools import HttpRequestParser

from .h1_events import Body, EndOfMessage, ProtocolError, Request
from .h1_events import _END, _body, _new_request
from .h1_head import (_CHUNK_LINE, _FIELD_LINE, _FORBIDDEN_TRAILERS, PythonHeads, _Head, _Reject,
                      decode_path)
from .limits import MAX_CHUNK_LINE, Limits

__all__ = ["Request", "Body", "EndOfMessage", "ProtocolError", "RequestParser", "Limits"]


# parser states
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER = range(6)
_UPGRADED, _CLOSED, _FAILED = 6, 7, 8    # >= _UPGRADED: stopped
_TERMINATOR = {_HEAD: b"\r\n\r\n"}       # all other waiting states wait for a CRLF line


# --- the C speedup -----------------------------------------------------------------------
# native/h1.c parses whole, ordinary heads; this module is its pure-Python twin and the only
# place that refuses anything. SIDECAR_NO_SPEEDUPS=1 in the environment (or setting
# ``speedups`` to False) leaves every head to the Python path.

try:
    from .._h1 import ffi as _ffi, lib as _lib
except ImportError:   # not built: the Python path alone
    _lib = None

#: True when the C fast path is available (sidecar._h1 is built).
HAVE_SPEEDUPS = _lib is not None
#: Whether RequestParser tries the C fast path first; tests run the tables both ways.
speedups = HAVE_SPEEDUPS and os.environ.get("SIDECAR_NO_SPEEDUPS", "") in ("", "0")

if HAVE_SPEEDUPS:
    _h1_parse_head = _lib.h1_parse_head
    _unpack_facts = struct.Struct(f"{_lib.H1_NFACTS}q").unpack_from   # cheaper than ffi.unpack
    _FIELDS_CAP = 1 << 16   # names and values of one head; a head needing more: Python path
    _C_LIMITS: dict = {}

    def _c_limits(limits: Limits):
        """The h1_limits_t for ``limits`` (one per distinct Limits, kept alive here)."""
        c = _C_LIMITS.get(limits)
        if c is None:
            c = _C_LIMITS[limits] = _ffi.new("h1_limits_t *", (
                min(limits.max_request_line, 0xFFFFFFFF), min(limits.max_header_bytes, 0xFFFFFFFF),
                min(limits.max_headers, 0xFFFFFFFF),
                -1 if limits.max_body is None else limits.max_body))
        return c

    _h1_pack_request = _lib.h1_pack_request
    _h1_parse_request = _lib.h1_parse_request
    _NULL_SCOPE = _ffi.NULL   # a parser without pack_requests: parse only
    _PACKED_CAP = 1 << 17   # a head's packed fields; more: packed stays None

    class _Scratch:
        """The C functions' outputs; one set per thread (cffi releases the GIL in calls)."""
        __slots__ = ("head", "facts", "fields", "_fields", "out", "out_buf")

        def __init__(self):
            self.head = _ffi.new("h1_head_t *")
            self._fields = _ffi.new("char[]", _FIELDS_CAP)   # kept alive with the head
            self.head.fields = self._fields
            self.head.fields_cap = _FIELDS_CAP
            self.facts = _ffi.buffer(self.head.facts)       # the int64 facts, unpacked at once
            self.fields = _ffi.buffer(self._fields)         # slicing it copies out bytes
            self.out = _ffi.new("char[]", _PACKED_CAP)       # h1_pack_request's
            self.out_buf = _ffi.buffer(self.out)

else:
    _NULL_SCOPE = None

try:   # _fast_head's parse in one C-API call (native/h1_api.c), built beside sidecar._h1
    from .._h1api import parse_request as _api_parse_request, set_request_type
except ImportError:
    _api_parse_request = None
else:
    set_request_type(Request)
    _API_LIMITS: dict = {}
    _API_LAST: list = [None, None]   # the last Limits asked for and its bytes

    def _api_limits(limits: Limits) -> bytes:
        """h1_limits_t's bytes for ``limits``, as _h1api.parse_request takes them (the
        server's Limits object, the same for every connection, is recognised without
        hashing it: a dataclass's hash is Python code)."""
        last = _API_LAST
        if last[0] is limits:
            return last[1]
        b = _API_LIMITS.get(limits)
        if b is None:
            b = _API_LIMITS[limits] = bytes(_ffi.buffer(_c_limits(limits)))
        last[:] = limits, b
        return b

_scratch = threading.local()


# --- parser ------------------------------------------------------------------------------

_PROXY_FIELDS = (b"forwarded", b"x-forwarded-for", b"x-forwarded-proto")


def proxy_key(headers) -> bytes:
    """A request's proxy fields (Forwarded, X-Forwarded-For, X-Forwarded-Proto), each
    name NUL value NUL in the head's order: the key of RequestParser.pack_requests' ``proxy``
    dict.  native/h1_api.c's proxy_key makes the same bytes from the parsed head (its twin;
    tests/http/test_h1_pack.py checks the two agree)."""
    return b"".join([name + b"\0" + value + b"\0" for name, value in headers
                     if name in _PROXY_FIELDS])


class RequestParser(PythonHeads):
    """Sans-I/O HTTP/1.1 request parser for one connection. See the module docstring.
    (Its Python path for heads, llhttp and check_head, is ``h1_head.PythonHeads``.)"""

    __slots__ = ("_limits", "_upgrade_protocols", "_hp", "_cb", "_state", "_buf", "_fed",
                 "_rl_len", "_error", "_keep_alive", "_remaining", "_body_seen", "_trailer_bytes",
                 "_trailer_count", "_trailing", "_climits", "_scope", "_rescope", "_cscope",
                 "_cscope_keep", "_api_scope", "head_pending")

    def __init__(self, limits: Limits = Limits(), *,
                 upgrade_protocols: frozenset[bytes] = frozenset((b"websocket",))):
        self._limits = limits
        self._upgrade_protocols = upgrade_protocols
        self._cb = _Head()
        self._hp: HttpRequestParser | None = None  # made on demand, dropped after a body
        self._state = _HEAD
        self._buf = bytearray()   # an incomplete head or line, waiting for more bytes
        self._fed = 0             # bytes of an incomplete head already given to llhttp
        self._rl_len = -1         # request line length of the incomplete head, once known
        self._error = None        # llhttp refused a method whose end has not arrived yet
        self._keep_alive = True
        self._remaining = 0       # body bytes left (Content-Length) or left in this chunk
        self._body_seen = 0
        self._trailer_bytes = 0
        self._trailer_count = 0
        self._trailing = b""
        self._climits = None      # the limits as the C speedup takes them, once needed
        self._scope = None        # h1_pack_request's connection arguments (pack_requests)
        self._rescope = None
        self._cscope = _NULL_SCOPE  # h1_parse_request's (pack_requests); NULL: not packed
        self._cscope_keep = None
        self._api_scope = None    # the same for _h1api.parse_request: (scheme, addrs, root, rescope)
        #: True while part of a request head has arrived and its end has not (the header
        #: timeout runs); empty lines before a request line do not count.  An attribute
        #: that feed() and stop() keep, not a property: the connection reads it per feed.
        self.head_pending = False

    # --- public API ----------------------------------------------------------------------

    def pack_requests(self, scheme: bytes, addrs: bytes, root_path: bytes,
                      rescope=None, proxy: dict | None = None) -> None:
        """Have each Request the C speedup parses carry ``packed``: its HTTP_REQUEST fields
        (docs/protocol.md) packed in C, for a connection whose scope parts are these --
        ``scheme`` one msgpack str, ``addrs`` two msgpack values (client, server), and the
        root path as UTF-8 (put in front of path and raw_path).  ``rescope(headers)``, if
        given, is asked for each request with a Forwarded, X-Forwarded-For or
        X-Forwarded-Proto field, and returns None or the (scheme, addrs) of that request
        instead (proxy headers from a trusted peer).  ``proxy``, if given, is where rescope
        keeps its answers, by ``proxy_key(headers)``: a head whose proxy fields are there is
        packed in C (native/h1_api.c) without asking rescope.  Requests the Python path
        parses, and all of them without the C speedup, have ``packed`` None."""
        if HAVE_SPEEDUPS:
            self._scope = (scheme, len(scheme), addrs, len(addrs), root_path, len(root_path))
            self._rescope = rescope
            # the same for the cffi path (h1_parse_request) is made when a head first needs
            # it (_c_scope): with the C-API module most connections never do, and four cffi
            # allocations were a tenth of a new connection's Python
            self._cscope = None
            self._api_scope = (scheme, addrs, root_path, rescope is not None, proxy)

    def _c_scope(self):
        """pack_requests' scope as h1_parse_request takes it (one C call parses and packs):
        the struct points into the char arrays, which the parser keeps alive."""
        scheme, _, addrs, _, root_path, _ = self._scope
        keep = self._cscope_keep = [_ffi.new("char[]", part)
                                    for part in (scheme, addrs, root_path)]
        self._cscope = _ffi.new("h1_scope_t *", (
            keep[0], len(scheme), keep[1], len(addrs), keep[2], len(root_path),
            self._rescope is not None))
        return self._cscope

    def feed_one(self, data: bytes) -> Request | list:
        """``feed(data)``, for the connection's usual read: where ``data`` is exactly one
        usual head (no body, no upgrade: what native/h1_api.c makes the Request of), that
        Request itself, without its EndOfMessage; else feed's list of events.  One call
        where feed and _fast_head were two: the keep-alive cycle's hot path
        (H1Connection.receive_data).  Without the C-API speedup, ``feed`` as it is."""
        if (self._state == _HEAD and not self._buf and speedups and type(data) is bytes
                and _api_parse_request is not None):
            # _fast_head's C-API case, written out (change both together)
            climits = self._climits
            if climits is None:
                climits = self._climits = _api_limits(self._limits)
            got = _api_parse_request(data, 0, climits, self._api_scope)
            if got is not None and got is not False:
                if len(got) == 2:   # the usual head: its Request made in C
                    size, req = got
                    self._keep_alive = keep_alive = req[7]
                    if not keep_alive:
                        self._state = _CLOSED
                    if size == len(data):
                        self.head_pending = False
                        return req
                    return self.feed(data, size, [req, _END])
                events: list = []
                size = self._fast_rest(data, 0, got[0], got[1], got[2], got[3], events)
                return self.feed(data, size, events)
        return self.feed(data)

    def feed(self, data: bytes, pos: int = 0, events: list | None = None
             ) -> list[Request | Body | EndOfMessage | ProtocolError]:
        """Parse ``data`` (any split of the stream) and return the events it completes.
        (``pos`` and ``events``: feed_one's, whose C call took data[:pos] with these.)"""
        if events is None:
            events = []
        state = self._state
        if state >= _UPGRADED:
            if state == _UPGRADED:
                self._trailing += data[pos:] if pos else data
            self.head_pending = False
            return events
        # the parse loop, written out here: one call less per receive
        try:
            n = len(data)
            if self._buf:
                pos = self._resume(data, events)
                if pos < 0:
                    pos = n   # the unit is still incomplete: all of data is buffered
            while pos < n:
                state = self._state
                if state == _HEAD:
                    if speedups and type(data) is bytes:
                        size = self._fast_head(data, pos, events)
                        if size:
                            pos += size
                            continue
                    end = data.find(b"\r\n\r\n", pos)
                    if end < 0:
                        self._stash(data, pos)
                        break
                    head, pos = data[pos:end + 4], end + 4
                    self._on_head(head, events)
                elif state == _BODY or state == _CHUNK_DATA:
                    remaining = self._remaining
                    if n - pos < remaining:
                        events.append(_body(data[pos:] if pos else data))
                        self._remaining = remaining - (n - pos)
                        break
                    if remaining:
                        events.append(_body(data[pos:pos + remaining]))
                        pos += remaining
                        self._remaining = 0
                    if state == _BODY:
                        self._end_message(events)
                    else:
                        self._state = _CHUNK_CRLF
                elif state == _CHUNK_CRLF:
                    if data.startswith(b"\r\n", pos):
                        pos += 2
                        self._state = _CHUNK_SIZE
                    elif n - pos == 1 and data[pos] == 13:
                        self._stash(data, pos)
                        break
                    else:
                        raise _Reject(400, "missing CRLF after chunk data")
                elif state <= _TRAILER:   # _CHUNK_SIZE or _TRAILER: a CRLF-terminated line
                    nl = data.find(b"\r\n", pos)
                    if nl < 0:
                        self._stash(data, pos)
                        break
                    line, pos = data[pos:nl], nl + 2
                    if state == _CHUNK_SIZE:
                        self._on_chunk_line(line)
                    else:
                        self._on_trailer_line(line, events)
                else:   # stopped inside this data
                    if state == _UPGRADED:
                        self._trailing += data[pos:]
                    break
        except _Reject as exc:
            self._fail(events, exc)
        self.head_pending = self._state == _HEAD and bool(self._buf)
        return events

    def take_trailing(self) -> bytes:
        """Bytes received after an upgrade request's head (cleared by this call)."""
        data, self._trailing = self._trailing, b""
        return data

    def decline_upgrade(self) -> list[Request | Body | EndOfMessage | ProtocolError]:
        """The upgrade was refused: go on with HTTP/1.1 from the bytes held back so far.

        Emits the EndOfMessage of the upgrade request first, then whatever follows.
        """
        if self._state != _UPGRADED:
            return []
        events: list = [_END]
        self._state = _HEAD if self._keep_alive else _CLOSED
        return events + self.feed(self.take_trailing())

    @property
    def expecting_body(self) -> bool:
        """True between a Request and its EndOfMessage (reading a request body)."""
        return _BODY <= self._state <= _TRAILER

    @property
    def mid_request(self) -> bool:
        """True when the client may still be sending the current request: its head or body
        is incomplete, or the input was refused part way (closing now could reset the
        connection under the client before it reads our answer: see lingering close)."""
        state = self._state
        return state == _FAILED or _BODY <= state <= _TRAILER or (
            state == _HEAD and bool(self._buf))

    @property
    def body_left(self) -> int | None:
        """Bytes of the current request body still to come when its length is known
        (Content-Length), else None (a chunked body, or no body being read)."""
        return self._remaining if self._state == _BODY else None

    def stop(self) -> None:
        """The connection is finished (a timeout, a refusal): parse nothing more."""
        if self._state < _UPGRADED:
            self._state = _CLOSED
            self._buf = bytearray()
            self._hp = None
            self.head_pending = False

    # --- the loop ------------------------------------------------------------------------

    def _stash(self, data: bytes, pos: int) -> None:
        """Keep an incomplete head or line for the next feed()."""
        self._buf = bytearray(memoryview(data)[pos:])
        self._check_incomplete(0)

    def _resume(self, data: bytes, events: list) -> int:
        """Complete the unit waiting in the buffer with the start of ``data``.

        Returns where parsing goes on in ``data``, or -1 if the unit is still incomplete.
        Only the new bytes are searched, so feeding byte by byte stays linear.
        """
        buf = self._buf
        state = self._state
        term = _TERMINATOR.get(state, b"\r\n")
        k = len(term) - 1
        tail = bytes(buf[-k:])
        i = (tail + data[:k]).find(term)
        if i >= 0:
            end = i - len(tail) + len(term)
        else:
            i = data.find(term)
            if i < 0:
                old = len(buf)
                buf += data
                self._check_incomplete(old)
                return -1
            end = i + len(term)
        unit = bytes(buf) + data[:end]
        self._buf = bytearray()
        if state == _HEAD:
            self._on_head(unit, events)
        elif state == _CHUNK_SIZE:
            self._on_chunk_line(unit[:-2])
        elif state == _TRAILER:
            self._on_trailer_line(unit[:-2], events)
        elif unit != b"\r\n":   # _CHUNK_CRLF
            raise _Reject(400, "missing CRLF after chunk data")
        else:
            self._state = _CHUNK_SIZE
        return end

    def _check_incomplete(self, old: int) -> None:
        """Limits on the buffered incomplete unit; ``old`` = bytes already checked."""
        state = self._state
        if state == _HEAD:
            self._head_incomplete(old)
        elif state == _CHUNK_SIZE:
            if len(self._buf) > MAX_CHUNK_LINE + 1:
                raise _Reject(400, "chunk size line too long")
        elif state == _TRAILER:
            if self._trailer_bytes + len(self._buf) > self._limits.max_header_bytes:
                raise _Reject(431, "trailer section too large")
        elif self._buf != b"\r":   # _CHUNK_CRLF
            raise _Reject(400, "missing CRLF after chunk data")

    def _fail(self, events: list, exc: _Reject) -> None:
        self._state = _FAILED
        self._buf = bytearray()
        self._hp = None
        events.append(ProtocolError(exc.status, exc.reason))

    def _end_message(self, events: list) -> None:
        events.append(_END)
        self._state = _HEAD if self._keep_alive else _CLOSED

    # --- heads ---------------------------------------------------------------------------

    def _fast_head(self, data: bytes, pos: int, events: list) -> int:
        """The C speedup (native/h1.c) on a head at ``data[pos:]``: its length once its
        Request is emitted, or 0 if the Python path must parse it (incomplete, unusual or
        refused: the C code only takes heads this parser would accept, read the same way).

        Only called where the Python path would frame a new head (nothing buffered, so
        llhttp has seen none of it): the C code needs the whole head in ``data``.
        """
        if _api_parse_request is not None:
            climits = self._climits
            if climits is None:
                climits = self._climits = _api_limits(self._limits)
            got = _api_parse_request(data, pos, climits, self._api_scope)
            if got is None:
                return 0
            if got is not False:
                if len(got) == 2:   # the usual head: its Request made in C
                    size, req = got
                    events.append(req)
                    events.append(_END)
                    self._keep_alive = keep_alive = req[7]
                    if not keep_alive:
                        self._state = _CLOSED
                    return size
                size, facts, headers, packed = got
                return self._fast_rest(data, pos, size, facts, headers, packed, events)
            # a forwarded head under rescope: the cffi path packs it with its new scope
            # (self._climits holds the C-API's bytes: the cffi struct is made for this rare head)
            climits = _c_limits(self._limits)
        else:
            climits = self._climits
            if climits is None:
                climits = self._climits = _c_limits(self._limits)
        try:
            scratch = _scratch.buffers
        except AttributeError:
            scratch = _scratch.buffers = _Scratch()
        # the head parsed and its HTTP_REQUEST fields packed, in one call
        cscope = self._cscope
        if cscope is None:
            cscope = self._c_scope()
        size = _h1_parse_request(data, pos, len(data), climits, scratch.head, cscope,
                                 scratch.out, _PACKED_CAP)
        if size <= 0:
            return 0
        facts = _unpack_facts(scratch.facts)
        nfields, fields_len, forwarded, packed_len = facts[5], facts[6], facts[14], facts[15]
        if nfields:   # lowercased names and trimmed values, NUL-separated
            parts = iter(scratch.fields[:fields_len].split(b"\0"))
            headers = list(zip(parts, parts))
        else:
            headers = []
        if packed_len >= 0:
            packed = scratch.out_buf[:packed_len]
        elif forwarded and self._rescope is not None:   # a trusted peer's proxy fields
            scope = self._scope
            mine = self._rescope(headers)
            if mine is not None:
                scope = (mine[0], len(mine[0]), mine[1], len(mine[1]), scope[4], scope[5])
            n = _h1_pack_request(data, pos, scratch.head, *scope, scratch.out, _PACKED_CAP)
            packed = scratch.out_buf[:n] if n > 0 else None
        else:
            packed = None
        return self._fast_rest(data, pos, size, facts, headers, packed, events)

    def _fast_rest(self, data: bytes, pos: int, size: int, facts: tuple, headers: list,
                   packed: bytes | None, events: list) -> int:
        """_fast_head's Request from a head the C code parsed: its ``facts`` (H1_NFACTS),
        ``headers`` and ``packed`` fields; returns ``size``."""
        (method_end, target_end, path_end, percent, minor, _nfields, _fields_len,
         content_length, chunked, keep_alive, expect_continue, upgrade_start, upgrade_end,
         _hosts, _forwarded, _packed_len) = facts
        target = data[method_end + 1:target_end]
        if path_end == target_end:
            raw_path = target
            query_string = b""
        else:
            raw_path = data[method_end + 1:path_end]
            query_string = data[path_end + 1:target_end]
        # _emit_request written out for the usual head (no body, no upgrade): once a request
        if content_length <= 0 and not chunked and upgrade_start < 0:
            keep_alive = keep_alive == 1
            events.append(_new_request(Request, (
                data[pos:method_end], target,
                decode_path(raw_path) if percent else raw_path.decode("latin-1"),
                raw_path, query_string, "1.1" if minor else "1.0", headers, keep_alive,
                expect_continue == 1, None, None if content_length < 0 else content_length,
                False, packed)))
            events.append(_END)
            self._keep_alive = keep_alive
            if not keep_alive:
                self._state = _CLOSED
            return size
        self._emit_request(
            events, data[pos:method_end], target,
            decode_path(raw_path) if percent else raw_path.decode("latin-1"),
            raw_path, query_string, "1.1" if minor else "1.0", headers, keep_alive == 1,
            expect_continue == 1,
            None if upgrade_start < 0 else data[upgrade_start:upgrade_end].lower(),
            None if content_length < 0 else content_length, chunked == 1, packed)
        return size

    def _emit_request(self, events: list, method: bytes, target: bytes, path: str,
                      raw_path: bytes, query_string: bytes, http_version: str, headers: list,
                      keep_alive: bool, expect_continue: bool, upgrade: bytes | None,
                      content_length: int | None, chunked: bool,
                      packed: bytes | None = None) -> None:
        """The Request of a head that passed every check (either path), and what follows."""
        events.append(_new_request(Request, (
            method, target, path, raw_path, query_string, http_version, headers, keep_alive,
            expect_continue, upgrade, content_length, chunked, packed)))

        self._keep_alive = keep_alive
        if content_length:
            self._state = _BODY
            self._remaining = content_length
            self._hp = None   # llhttp waits for a body it will never see
        elif chunked:
            self._state = _CHUNK_SIZE
            self._body_seen = self._trailer_bytes = self._trailer_count = 0
            self._hp = None
        elif upgrade is not None and self._upgrade_protocols.intersection(
                p.strip(b" \t") for p in upgrade.split(b",")):
            self._state = _UPGRADED
            self._hp = None
        else:
            events.append(_END)
            if not keep_alive:
                self._state = _CLOSED

    # --- chunked bodies ------------------------------------------------------------------

    def _on_chunk_line(self, line: bytes) -> None:
        if len(line) > MAX_CHUNK_LINE:
            raise _Reject(400, "chunk size line too long")
        m = _CHUNK_LINE.fullmatch(line)
        if m is None:
            raise _Reject(400, "invalid chunk size line")
        size = int(m.group(1), 16)
        max_body = self._limits.max_body
        if max_body is not None and self._body_seen + size > max_body:
            raise _Reject(413, "request body too large")
        self._body_seen += size
        if size:
            self._remaining = size
            self._state = _CHUNK_DATA
        else:
            self._state = _TRAILER

    def _on_trailer_line(self, line: bytes, events: list) -> None:
        if not line:
            self._end_message(events)
            return
        limits = self._limits
        self._trailer_bytes += len(line) + 2
        self._trailer_count += 1
        if self._trailer_bytes > limits.max_header_bytes:
            raise _Reject(431, "trailer section too large")
        if self._trailer_count > limits.max_headers:
            raise _Reject(431, "too many trailer fields")
        m = _FIELD_LINE.fullmatch(line)
        if m is None:
            raise _Reject(400, "invalid trailer field")
        if m.group(1).lower() in _FORBIDDEN_TRAILERS:
            raise _Reject(400, "forbidden trailer field")
