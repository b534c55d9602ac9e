"""The common frames of HTTP/2 past h2's per-frame machinery, and HPACK blocks that repeat
decoded or encoded once (the fast path of sidecar/http/h2_connection.py).

h2 spends most of an ordinary request's CPU in layers that do nothing for it: frame objects,
two state machines stepped per frame, debug logging per header (and a ``repr`` of each frame
received), a count of the open streams per new stream, and hpack walking a header list it
saw a moment ago.  So, measured with ``python -m benchmarks.frontend --http2``:

- ``requests_received`` takes the requests without a body at the start of a read (HEADERS
  with END_STREAM and END_HEADERS opening a new stream): the stream is made and its state
  moved by h2's own calls, without the frame objects and the per-frame dispatch.  Anything
  else, from the first other frame on, goes to h2's ``receive_data``.
- ``response_headers`` and ``response_data`` write a response's HEADERS (+ CONTINUATION) and
  its DATA frames as bytes, and set the stream's state as h2's own ``send_headers`` /
  ``send_data`` / ``end_stream`` would (headers_sent; the flow-control windows; CLOSED,
  closed by END_STREAM).  They act only in the states where those h2 calls do exactly that
  (the connection open, the stream open or half-closed by the client, no trailers, the bytes
  within the windows): anything else returns None and h2 does it, as before.  ``response``
  is the two for a whole response (H2Connection.respond), their guards taken once.
- ``RequestHeads`` makes each distinct request head of a connection once (checked, as an
  ``h1.Request``: request_head and valid_fields are pure functions of the fields), and
  ``ResponseHeads`` each distinct response head's HTTP/2 fields (response_fields is one of
  the status, the app's fields and the server's, whose Date changes once a second).
- ``Decoder`` remembers the header lists of blocks that did not change the HPACK table (a
  block of indexed fields: the same request from a client or proxy, again and again) while the
  table stays as it was, and ``Encoder.encode_block`` likewise the response blocks.  An HPACK
  block's meaning depends on nothing but its bytes and the table, so a block seen with this
  same table decodes (encodes) to the same list (bytes); a table change forgets them all.

``speedups = False`` (``SIDECAR_NO_SPEEDUPS=1``) leaves every frame and block to h2 and hpack:
tests/http run both ways, and tests/http/test_h2_fast.py compares the bytes of the two paths.
``Decoder`` also finishes a block whose list is over the limit, both ways (its docstring).
"""
from __future__ import annotations

import os
import struct

from h2.connection import (AllowedStreamIDs, ConnectionInputs, ConnectionState,
                           _decode_headers)
from h2.exceptions import ProtocolError
from h2.stream import H2Stream as _H2Stream, H2StreamStateMachine as _Machine
from h2.stream import STREAM_OPEN as _STREAM_OPEN, StreamClosedBy, StreamState
from h2.windows import WindowManager as _WindowManager
from hpack import Decoder as _Decoder, Encoder as _Encoder, HeaderTuple
from hpack.exceptions import HPACKDecodingError, OversizedHeaderListError

__all__ = ["speedups", "OVERSIZED", "OVERSIZE_FACTOR", "Decoder", "Encoder", "RequestHeads",
           "ResponseHeads",
           "requests_received",
           "response_headers", "response_data", "response"]

#: Whether H2Connection uses the paths of this module; tests run both ways.
speedups = os.environ.get("SIDECAR_NO_SPEEDUPS", "") in ("", "0")

#: The header list of a block over the limit (Decoder): the stream is answered 431.
OVERSIZED = HeaderTuple(b":oversized", b"")
#: A list past this many times the limit is a bomb, not a big cookie: the connection's error.
OVERSIZE_FACTOR = 4

try:   # Decoder._decode's C twin (native/hpack_api.c), on hpack's own table
    from sidecar import _hpackapi
except ImportError:
    _c_decode = None
else:
    from hpack.exceptions import InvalidTableIndex, InvalidTableSizeError
    from hpack.huffman_table import HUFFMAN_TABLE
    from hpack.struct import NeverIndexedHeaderTuple
    from hpack.table import HeaderTable
    _hpackapi.setup(HeaderTable.STATIC_TABLE, HUFFMAN_TABLE, HeaderTuple, NeverIndexedHeaderTuple,
                    HPACKDecodingError, InvalidTableIndex, InvalidTableSizeError,
                    OversizedHeaderListError, OVERSIZED, OVERSIZE_FACTOR)
    _c_decode = _hpackapi.decode_block

_CACHE_MAX = 64          # blocks remembered per connection and direction
_BLOCK_MAX = 1024        # longer blocks are decoded every time (they are rarely repeated)
_OPEN = ConnectionState.SERVER_OPEN
_SENDING = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)
_HALF_CLOSED_REMOTE = StreamState.HALF_CLOSED_REMOTE
_CLOSED = StreamState.CLOSED
_BY_END_STREAM = StreamClosedBy.SEND_END_STREAM
_RECV_HEADERS = ConnectionInputs.RECV_HEADERS
_CLIENT_STREAMS = AllowedStreamIDs.ODD
_new = object.__new__


def _table_state(table) -> tuple:
    """What an HPACK table's meaning depends on, cheaply: its newest entry (each added entry
    is a new tuple, kept alive by the cache's reference, so ``is`` tells a change), its length
    and size limit, and a pending size update."""
    entries = table.dynamic_entries
    return (entries[0] if entries else None, len(entries), table._maxsize, table.resized)


def _same(a: tuple, b: tuple) -> bool:
    return a[0] is b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]


class Decoder(_Decoder):
    """hpack's decoder, remembering the lists of the blocks that left its table as it was,
    and finishing a block whose list is over ``max_header_list_size`` (up to
    ``OVERSIZE_FACTOR`` times it) so that the table stays in step with the client's: the
    list is then ``[OVERSIZED]``, for a 431 on that stream alone (RFC 9113 8.2.2 lets a
    server refuse a header list it will not handle; an HPACK decoding error would be the
    whole connection's).  Past that factor it is an HPACK bomb: hpack's
    OversizedHeaderListError, which h2 makes GOAWAY ENHANCE_YOUR_CALM."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cache: dict[bytes, list] = {}
        self._cache_key: tuple = (None, -1, -1, False, -1, -1)

    def decode(self, data, raw: bool = False):
        if not raw:
            return super().decode(data, raw)
        if not speedups or type(data) is not bytes or len(data) > _BLOCK_MAX:
            return self._decode(data)
        table = self.header_table
        state = _table_state(table) + (self.max_allowed_table_size, self.max_header_list_size)
        if not (_same(state, self._cache_key) and state[4:] == self._cache_key[4:]):
            self._cache.clear()
            self._cache_key = state
        else:
            headers = self._cache.get(data)
            if headers is not None:
                return list(headers)
        headers = self._decode(data)
        after = _table_state(table)
        if _same(after, state):
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[data] = tuple(headers)
        return headers


    def _decode(self, data) -> list:
        """hpack's ``decode(data, raw=True)``, but for a list over the limit (the class
        docstring).  In one C call (sidecar._hpackapi) where it is built; ``_decode_py``, its
        twin, otherwise and with ``speedups`` off."""
        if _c_decode is not None and speedups and type(data) is bytes:
            return _c_decode(self, data)
        return self._decode_py(data)

    def _decode_py(self, data) -> list:
        mem = memoryview(data)
        headers = []
        limit = self.max_header_list_size
        size = 0
        over = False
        i, n = 0, len(data)
        while i < n:
            c = data[i]
            if c & 0x80:
                header, used = self._decode_indexed(mem[i:])
            elif c & 0x40:
                header, used = self._decode_literal_index(mem[i:])
            elif c & 0x20:   # a table size update: only before the first field
                if headers or over:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                used = self._update_encoding_context(mem[i:])
                header = None
            else:
                header, used = self._decode_literal_no_index(mem[i:])
            i += used
            if header is None:
                continue
            size += len(header[0]) + len(header[1]) + 32   # RFC 7541 4.1
            if size > limit:
                if size > limit * OVERSIZE_FACTOR:
                    raise OversizedHeaderListError(
                        f"A header list larger than {limit} has been received")
                over = True
                headers.clear()
            if not over:
                headers.append(header)
        self._assert_valid_table_size()
        return [OVERSIZED] if over else headers


class Encoder(_Encoder):
    """hpack's encoder, with ``encode_block`` remembering the blocks that left its table as it
    was (``encode``, which h2 calls, is hpack's)."""

    def __init__(self):
        super().__init__()
        self._cache: dict[tuple, bytes] = {}
        self._cache_key: tuple = (None, -1, -1, False)

    def encode_block(self, fields: list) -> bytes:
        """The block of ``fields``: plain (name, value) tuples of bytes, as h2 would encode
        them (Huffman on)."""
        state = _table_state(self.header_table)
        if not _same(state, self._cache_key):
            self._cache.clear()
            self._cache_key = state
        else:
            key = tuple(fields)
            block = self._cache.get(key)
            if block is not None:
                return block
        block = self.encode(fields)
        if _same(_table_state(self.header_table), state):
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[tuple(fields)] = block
        return block


class RequestHeads(dict):
    """A connection's request heads by their fields (a proxy or client repeats a few): each
    checked and made once by ``make`` (its ``h1.Request``, None if malformed).  At most 64
    of at most 4 KiB each: a few pages per connection."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def of(self, headers):
        key = tuple(headers)
        req = self.get(key, _UNSEEN)
        if req is _UNSEEN:
            req = self.make(headers)
            if sum(len(n) + len(v) for n, v in headers) <= 4096:
                if len(self) >= _CACHE_MAX:
                    self.clear()
                self[key] = req
        return req


_UNSEEN = object()


class ResponseHeads(dict):
    """A connection's response heads by (status, the app's fields) -- an app repeats a few:
    each one's HTTP/2 fields made once by ``make`` (h2_exchange.response_fields: checked,
    the server's own fields added), as a tuple with its content-length.  The server's Date
    changes once a second: a new one forgets them all.  At most 64 of at most 4 KiB each."""

    def __init__(self, make):
        super().__init__()
        self.make = make
        self.date = None

    def of(self, status: int, headers, hf) -> tuple[tuple, bytes | None]:
        if hf.date_value is not self.date:
            self.clear()
            self.date = hf.date_value
        try:
            key = (status, *map(tuple, headers))
        except TypeError:   # not pairs: response_fields says what is wrong
            key = None
        got = self.get(key)
        if got is None:
            fields, length = self.make(status, headers, hf)
            got = tuple(fields), length
            if key is not None and sum(len(n) + len(v) for n, v in fields) <= 4096:
                if len(self) >= _CACHE_MAX:
                    self.clear()
                self[key] = got
        return got


_HEAD = struct.Struct(">BHBBL")   # a frame header: length (24 bits), type, flags, stream


def _frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    n = len(payload)
    return _HEAD.pack(n >> 16, n & 0xFFFF, kind, flags, sid) + payload


def _headers_frames(sid: int, block: bytes, size: int) -> bytes:
    """HEADERS, and CONTINUATION past the frame size ``size``, carrying ``block``."""
    n = len(block)
    if n <= size:
        return _HEAD.pack(n >> 16, n & 0xFFFF, 0x1, 0x4, sid) + block   # END_HEADERS
    parts = [block[i:i + size] for i in range(0, n, size)]
    out = [_frame(0x1, 0, sid, parts[0])]
    out.extend(_frame(0x9, 0, sid, part) for part in parts[1:-1])
    out.append(_frame(0x9, 0x4, sid, parts[-1]))
    return b"".join(out)


def response_headers(conn, sid: int, fields: list) -> bytes | None:
    """The HEADERS (and CONTINUATION) frames of a response head on stream ``sid`` of the h2
    server connection ``conn``, its state moved as ``conn.send_headers`` would; None where
    h2 must do it (not ``speedups``, the connection or the stream not in a sending state, the
    head already sent)."""
    # (the guard down to ``machine`` is written out here, in response_data and in response:
    # once a frame)
    if not speedups or conn.state_machine.state is not _OPEN:
        return None
    stream = conn.streams.get(sid)
    if stream is None:
        return None
    machine = stream.state_machine
    if machine.state not in _SENDING or machine.headers_sent or machine.client is not False:
        return None
    block = conn.encoder.encode_block(fields)
    machine.headers_sent = True
    return _headers_frames(sid, block, conn.max_outbound_frame_size)


def response(conn, sid: int, fields, body: bytes) -> bytes | None:
    """A whole response in one step: ``response_headers(conn, sid, fields)`` then
    ``response_data(conn, sid, body, True)``, their guards taken once, before anything is
    encoded; None where either would be (h2, or those two apart, must do it)."""
    if not speedups or conn.state_machine.state is not _OPEN:
        return None
    stream = conn.streams.get(sid)
    if stream is None:
        return None
    machine = stream.state_machine
    if (machine.state is not _HALF_CLOSED_REMOTE or machine.headers_sent
            or machine.client is not False):
        return None
    n = len(body)
    size = conn.max_outbound_frame_size
    if n and (n > conn.outbound_flow_control_window or n > stream.outbound_flow_control_window
              or n > size):
        return None
    out = _headers_frames(sid, conn.encoder.encode_block(fields), size)
    machine.headers_sent = True
    if n:
        conn.outbound_flow_control_window -= n
        stream.outbound_flow_control_window -= n
    machine.state = _CLOSED
    machine.stream_closed_by = _BY_END_STREAM
    return out + _HEAD.pack(n >> 16, n & 0xFFFF, 0x0, 0x1, sid) + body   # DATA, END_STREAM


def response_data(conn, sid: int, data: bytes, end: bool) -> bytes | None:
    """The DATA frame carrying ``data`` of a response (with END_STREAM if ``end``: one empty
    frame for no data), the windows and the stream's state (closed, if ``end``) moved as
    h2's ``send_data`` or ``end_stream`` would; None where h2 must do it (the data past the
    windows or the frame size, the head not sent, ``end`` before the client's END_STREAM)."""
    # (response_headers' guard, written out: once a frame)
    if not speedups or conn.state_machine.state is not _OPEN:
        return None
    stream = conn.streams.get(sid)
    if stream is None:
        return None
    machine = stream.state_machine
    state = machine.state
    if not machine.headers_sent or (state is not _HALF_CLOSED_REMOTE if end
                                    else state not in _SENDING):
        return None
    n = len(data)
    if n:
        if (n > conn.outbound_flow_control_window or n > stream.outbound_flow_control_window
                or n > conn.max_outbound_frame_size):
            return None
        conn.outbound_flow_control_window -= n
        stream.outbound_flow_control_window -= n
    if end:
        machine.state = _CLOSED
        machine.stream_closed_by = _BY_END_STREAM
        return _frame(0x0, 0x1, sid, data)   # DATA, END_STREAM
    return _frame(0x0, 0x0, sid, data)


def _open_stream(conn, sid: int, inbound: int, outbound: int) -> None:
    """The stream ``sid`` of ``conn`` in the state h2's ``_begin_new_stream`` and then its
    ``receive_headers(headers, end_stream=True)`` leave it in for a request whose fields
    have no content-length and no :status (half-closed by the client, nothing expected),
    made without stepping its state machine: the attributes are H2Stream's and
    H2StreamStateMachine's own (tests/http/test_h2_fast.py compares them with h2's);
    ``inbound`` and ``outbound`` are the initial windows of our and the client's SETTINGS."""
    machine = _new(_Machine)
    machine.__dict__ = {"state": _HALF_CLOSED_REMOTE, "stream_id": sid, "client": False,
                        "headers_sent": None, "trailers_sent": None, "headers_received": True,
                        "trailers_received": None, "stream_closed_by": None}
    window = _new(_WindowManager)
    window.__dict__ = {"max_window_size": inbound, "current_window_size": inbound,
                       "_bytes_processed": 0}
    stream = _new(_H2Stream)
    stream.__dict__ = {"state_machine": machine, "stream_id": sid,
                       "max_outbound_frame_size": conn.max_outbound_frame_size,
                       "request_method": None,
                       "outbound_flow_control_window": outbound,
                       "_inbound_window_manager": window, "_expected_content_length": None,
                       "_actual_content_length": 0, "_authority": None, "config": conn.config}
    conn.streams[sid] = stream
    conn.highest_inbound_stream_id = sid


def _open_inbound(conn) -> int:
    """h2's ``open_inbound_streams`` (the client's streams open in any sense, the closed
    ones forgotten as h2 forgets them, into ``_closed_streams``) without its two property
    calls per stream."""
    count = 0
    gone = []
    for sid, stream in conn.streams.items():
        state = stream.state_machine.state
        if state is _CLOSED:
            gone.append(sid)
        elif sid & 1 and _STREAM_OPEN[state]:
            count += 1
    if gone:
        streams, closed = conn.streams, conn._closed_streams
        for sid in gone:
            closed[sid] = streams.pop(sid).state_machine.stream_closed_by
    return count


def requests_received(conn, data: bytes) -> tuple[list, int]:
    """The whole requests without a body at the start of ``data`` (HEADERS with END_STREAM
    and END_HEADERS, no padding or priority, opening a new stream within the concurrency
    limit) taken as the h2 server connection ``conn`` takes them, past its frame objects,
    and the bytes they took: h2 is given the rest (from the first other frame).  Each is a
    ``(stream_id, headers)`` tuple, in place of h2's RequestReceived and StreamEnded events,
    its stream made by ``_open_stream``; a head with content-length or :status (which h2
    checks) is h2's events, its stream made and moved by h2's own calls.  What is skipped is
    the frame parsing, the per-frame dispatch and the count of open streams (once per read
    here), and h2's stream state machine stepped per request.  ([], 0) where h2 must do it
    all (not ``speedups``, a preface, a partial frame or header block in h2's buffer, the
    connection not open)."""
    buf = conn.incoming_buffer
    if (not speedups or buf._preamble_len or buf._data or buf._headers_buffer
            or conn.state_machine.state is not _OPEN):
        return [], 0
    events: list = []
    i, end = 0, len(data)
    max_size = conn.max_inbound_frame_size
    streams = conn.streams
    opened = -1
    max_streams = conn.local_settings.max_concurrent_streams
    while i + 9 <= end and data[i + 3] == 0x1 and data[i + 4] == 0x5:   # END_STREAM|HEADERS
        length = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2]
        sid = int.from_bytes(data[i + 5:i + 9], "big")
        if (length > max_size or i + 9 + length > end or sid & 0x80000001 != 1
                or sid <= conn.highest_inbound_stream_id or sid in streams):
            break
        if opened < 0:
            opened = _open_inbound(conn)
            windows = (conn.local_settings.initial_window_size,
                       conn.remote_settings.initial_window_size)
        if opened >= max_streams:
            break   # h2 refuses it
        try:
            headers = _decode_headers(conn.decoder, data[i + 9:i + 9 + length])
            for name, _ in headers:
                if name == b"content-length" or name == b":status":   # h2 checks these
                    conn.state_machine.process_input(_RECV_HEADERS)
                    stream = conn._begin_new_stream(sid, _CLIENT_STREAMS)
                    events += stream.receive_headers(headers, True,
                                                     conn.config.header_encoding)[1]
                    break
            else:
                _open_stream(conn, sid, *windows)
                events.append((sid, headers))
        except ProtocolError as exc:   # as h2's receive_data: its GOAWAY queued, then raised
            conn._terminate_connection(exc.error_code)
            raise
        opened += 1
        i += 9 + length
    return events, i
