"""The common WebSocket frames, without the ``websockets`` protocol object: the fast path of
``ws_connection.WSConnection`` (its ``_feed`` and ``send_message``).

An echo of a small message through websockets' sans-I/O ``Protocol`` costs the front-end
~20 µs of Python (a generator-driven parser, a Frame object, an enum lookup and a serializer
per frame, each way), more than the rest of the message's path through the front-end.  Most
frames are the plain case, and that case is a few bytes of header:

    in:  a whole client message in one frame (FIN, no RSV bits, TEXT or BINARY, masked,
         within the size limit, no fragmented message in progress, no extension)
    out: a whole server message in one frame (no extension: unmasked, no RSV bits)

Everything else -- control frames, fragments, bad or oversize frames, permessage-deflate,
anything after the close -- still goes through websockets, which stays the one definition of
behaviour: the connection hands it exactly the bytes of those frames, starting at a frame
boundary, so its parser never sees the frames taken here.  ``speedups = False`` turns the
fast path off: the tests in tests/http run both (tests/http/conftest.py).

The fast path's two per-message calls, ``plain_frames`` (every whole plain message of a read,
unmasked and decoded, in one call) and ``server_frame``, are C (native/ws_api.c,
``sidecar._wsapi``) where it is built, and these Python functions otherwise
(``SIDECAR_NO_SPEEDUPS=1``); tests/http/test_ws_frames.py holds the two to the same results.

RFC 6455 5.2:

     0                   1                   2                   3
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |            (16/64)            |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    |     Extended payload length continued, if payload len == 127  |
    + - - - - - - - - - - - - - - - +-------------------------------+
    |                               |Masking-key, if MASK set to 1  |
    +-------------------------------+-------------------------------+
    | Masking-key (continued)       |          Payload Data         |
    +-------------------------------- - - - - - - - - - - - - - - - +
"""
from __future__ import annotations

import os
import struct

try:
    from websockets.speedups import apply_mask   # C, as websockets itself uses
except ImportError:  # pragma: no cover - a websockets built without its speedups
    from websockets.utils import apply_mask

__all__ = ["speedups", "header", "plain_message", "plain_frames", "server_frame", "apply_mask"]

#: The fast path on (False: every frame through websockets, the reference).
speedups = True

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")
TEXT, BINARY = 0x1, 0x2
_FIN_TEXT, _FIN_BINARY = 0x80 | TEXT, 0x80 | BINARY


def header(data, pos: int, end: int) -> tuple[int, int, int, int] | None:
    """The frame starting at ``data[pos]``: (first byte, second byte, payload length, header
    length with the mask), or None while ``data[pos:end]`` is shorter than its header."""
    if end - pos < 2:
        return None
    b0 = data[pos]
    b1 = data[pos + 1]
    n = b1 & 0x7F
    size = 2
    if n == 126:
        if end - pos < 4:
            return None
        n = _U16.unpack_from(data, pos + 2)[0]
        size = 4
    elif n == 127:
        if end - pos < 10:
            return None
        n = _U64.unpack_from(data, pos + 2)[0]
        size = 10
    if b1 & 0x80:
        size += 4
    if end - pos < size:
        return None
    return b0, b1, n, size


def plain_message(b0: int, b1: int) -> bool:
    """A whole TEXT or BINARY message in one masked frame with no RSV bits."""
    return (b0 == _FIN_TEXT or b0 == _FIN_BINARY) and b1 & 0x80 != 0


def plain_frames_py(data, pos: int, max_frame: int) -> tuple[list, int]:
    """From ``data[pos]``, every whole frame that is a plain message (``plain_message``, a
    payload of at most ``max_frame`` bytes), unmasked, TEXT decoded as UTF-8, in order, and
    the offset of the first byte not taken: it stops at a frame that is not one, is not all
    there yet, or is TEXT that is not UTF-8 (websockets is handed that one, and fails it)."""
    out = []
    end = len(data)
    while True:
        head = header(data, pos, end)
        if head is None:
            break
        b0, b1, n, size = head
        if not plain_message(b0, b1) or n > max_frame or end - pos < size + n:
            break
        start = pos + size
        payload = apply_mask(data[start:start + n], data[start - 4:start])
        if b0 == _FIN_TEXT:
            try:
                payload = payload.decode()
            except UnicodeDecodeError:
                break
        out.append(payload)
        pos = start + n
    return out, pos


def server_frame_py(payload: bytes, text: bool) -> bytes:
    """One unmasked frame holding a whole message, as websockets serializes it."""
    op = _FIN_TEXT if text else _FIN_BINARY
    n = len(payload)
    if n < 126:
        return bytes((op, n)) + payload
    if n < 65536:
        return _HEAD16.pack(op, 126, n) + payload
    return _HEAD64.pack(op, 127, n) + payload


try:   # the C twins (native/ws_api.c)
    from sidecar import _wsapi
except ImportError:
    _wsapi = None
HAVE_C = _wsapi is not None
if HAVE_C and os.environ.get("SIDECAR_NO_SPEEDUPS", "") in ("", "0"):
    plain_frames, server_frame = _wsapi.plain_frames, _wsapi.server_frame
else:
    plain_frames, server_frame = plain_frames_py, server_frame_py
