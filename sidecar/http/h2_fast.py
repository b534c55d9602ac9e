"""The common frames of an HTTP/2 response past h2's per-frame machinery, and HPACK blocks that
repeat decoded or encoded once (the fast path of sidecar/http/h2_connection.py).

h2 spends most of an ordinary request's CPU in layers that do nothing for it: frame objects,
two state machines stepped per frame, debug logging per header, and hpack walking a header
list it saw a moment ago.  Measured in-process (``python -m benchmarks.h2frontend``), about
three quarters of the front-end's HTTP/2 cost per request was there.  So:

- ``response_headers`` and ``response_data`` write a response's HEADERS (+ CONTINUATION) and
  its DATA frames as bytes, and set the stream's state as h2's own ``send_headers`` /
  ``send_data`` / ``end_stream`` would (headers_sent; the flow-control windows; CLOSED,
  closed by END_STREAM).  They act only in the states where those h2 calls do exactly that
  (the connection open, the stream open or half-closed by the client, no trailers, the bytes
  within the windows): anything else returns None and h2 does it, as before.
- ``Decoder`` remembers the header lists of blocks that did not change the HPACK table (a
  block of indexed fields: the same request from a client or proxy, again and again) while the
  table stays as it was, and ``Encoder.encode_block`` likewise the response blocks.  An HPACK
  block's meaning depends on nothing but its bytes and the table, so a block seen with this
  same table decodes (encodes) to the same list (bytes); a table change forgets them all.

``speedups = False`` (``SIDECAR_NO_SPEEDUPS=1``) leaves every frame and block to h2 and hpack:
tests/http run both ways, and tests/http/test_h2_fast.py compares the bytes of the two paths.
"""
from __future__ import annotations

import os

from h2.connection import ConnectionState
from h2.stream import StreamClosedBy, StreamState
from hpack import Decoder as _Decoder, Encoder as _Encoder

__all__ = ["speedups", "Decoder", "Encoder", "response_headers", "response_data"]

#: Whether H2Connection uses the paths of this module; tests run both ways.
speedups = os.environ.get("SIDECAR_NO_SPEEDUPS", "") in ("", "0")

_CACHE_MAX = 64          # blocks remembered per connection and direction
_BLOCK_MAX = 1024        # longer blocks are decoded every time (they are rarely repeated)
_OPEN = ConnectionState.SERVER_OPEN
_SENDING = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)
_HALF_CLOSED_REMOTE = StreamState.HALF_CLOSED_REMOTE
_CLOSED = StreamState.CLOSED
_BY_END_STREAM = StreamClosedBy.SEND_END_STREAM


def _table_state(table) -> tuple:
    """What an HPACK table's meaning depends on, cheaply: its newest entry (each added entry
    is a new tuple, kept alive by the cache's reference, so ``is`` tells a change), its length
    and size limit, and a pending size update."""
    entries = table.dynamic_entries
    return (entries[0] if entries else None, len(entries), table._maxsize, table.resized)


def _same(a: tuple, b: tuple) -> bool:
    return a[0] is b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]


class Decoder(_Decoder):
    """hpack's decoder, remembering the lists of the blocks that left its table as it was."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cache: dict[bytes, list] = {}
        self._cache_key: tuple = (None, -1, -1, False, -1, -1)

    def decode(self, data, raw: bool = False):
        if not speedups or not raw or type(data) is not bytes or len(data) > _BLOCK_MAX:
            return super().decode(data, raw)
        table = self.header_table
        state = _table_state(table) + (self.max_allowed_table_size, self.max_header_list_size)
        if not (_same(state, self._cache_key) and state[4:] == self._cache_key[4:]):
            self._cache.clear()
            self._cache_key = state
        else:
            headers = self._cache.get(data)
            if headers is not None:
                return list(headers)
        headers = super().decode(data, raw)
        after = _table_state(table)
        if _same(after, state):
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[data] = tuple(headers)
        return headers


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


def _frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    n = len(payload)
    return bytes((n >> 16, (n >> 8) & 0xFF, n & 0xFF, kind, flags)) + sid.to_bytes(4, "big") \
        + payload


def response_headers(conn, sid: int, fields: list) -> bytes | None:
    """The HEADERS (and CONTINUATION) frames of a response head on stream ``sid`` of the h2
    server connection ``conn``, its state moved as ``conn.send_headers`` would; None where
    h2 must do it (not ``speedups``, the connection or the stream not in a sending state, the
    head already sent)."""
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
    size = conn.max_outbound_frame_size
    if len(block) <= size:
        return _frame(0x1, 0x4, sid, block)   # HEADERS, END_HEADERS
    parts = [block[i:i + size] for i in range(0, len(block), size)]
    out = [_frame(0x1, 0, sid, parts[0])]
    out.extend(_frame(0x9, 0, sid, part) for part in parts[1:-1])
    out.append(_frame(0x9, 0x4, sid, parts[-1]))
    return b"".join(out)


def response_data(conn, sid: int, data: bytes, end: bool) -> bytes | None:
    """The DATA frame carrying ``data`` of a response (with END_STREAM if ``end``: one empty
    frame for no data), the windows and the stream's state (closed, if ``end``) moved as
    h2's ``send_data`` or ``end_stream`` would; None where h2 must do it (the data past the
    windows or the frame size, the head not sent, ``end`` before the client's END_STREAM)."""
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
