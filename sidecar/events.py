"""ASGI events on the ring: msgpack-encoded positional arrays ``[kind, stream_id, ...]``.

Protocol version 1; docs/protocol.md is the reference a peer in another language implements.
Every ring record of type EVENT (1) holds exactly one msgpack array.  Strings are msgpack str
(UTF-8), byte strings are msgpack bin.  Stream ids are chosen by the host, unique per ring pair,
1 .. 2**63-1; id 0 is the ring itself (HELLO, PING).

    host -> worker
      HTTP_REQUEST   [1, sid, method, scheme, path, raw_path, query_string, headers,
                      client, server, http_version, root_path, body, more_body, (tls)]
      HTTP_BODY      [2, sid, body, more_body]
      DISCONNECT     [3, sid]                            client went away (http or websocket)
      WS_CONNECT     [4, sid, scheme, path, raw_path, query_string, headers, client, server,
                      http_version, root_path, subprotocols, (tls)]
      WS_RECEIVE     [5, sid, data, more]                bin -> bytes, str -> text; more: the
                                                         message continues in the next one
      WS_DISCONNECT  [6, sid, code, reason]
      SEND_CREDIT    [7, sid, n]                         worker may send n more body bytes
      PING           [8, 0, token]                       worker answers PONG (liveness)

    worker -> host
      HELLO          [32, 0, version, pid, window]      worker passed lifespan startup
      RESPONSE_START [33, sid, status, headers, trailers]
      RESPONSE_BODY  [34, sid, body, more_body]
      RECV_CREDIT    [35, sid, n]                        host may send n more request bytes;
                                                         the first one also means "app reads
                                                         the body" (100-continue)
      WS_ACCEPT      [36, sid, subprotocol, headers]
      WS_SEND        [37, sid, data, more]               (as WS_RECEIVE)
      WS_CLOSE       [38, sid, code, reason]
      APP_DONE       [39, sid, error]                    app returned (error: None or text)
      PONG           [40, 0, token]
      RESPONSE_TRAILERS [41, sid, headers, more]        ASGI http.response.trailers (after the
                                                         last body); more: more_trailers
      RESPONSE_PATHSEND [42, sid, path, length]         ASGI http.response.pathsend: the body
                                                         is this file (absolute path, str);
                                                         length: the Content-Length the app
                                                         sent, or nil (the whole file)

headers: array of [bin name, bin value]; client/server: [host, port] or nil (server on a Unix
socket: [path, nil]).  (tls): present only on a TLS connection, the ASGI tls extension as
[server_cert, client_cert_chain, client_cert_name, client_cert_error, tls_version,
cipher_suite] (TLS_FIELDS; str or nil, [str], str or nil, str or nil, int, int).  Flow control (per stream, per direction): the sender may have at most
``window`` (from HELLO) body bytes not yet credited back; credits are SEND_CREDIT/RECV_CREDIT.
"""
from __future__ import annotations

import msgpack

VERSION = 1

HTTP_REQUEST = 1
HTTP_BODY = 2
DISCONNECT = 3
WS_CONNECT = 4
WS_RECEIVE = 5
WS_DISCONNECT = 6
SEND_CREDIT = 7
PING = 8

HELLO = 32
RESPONSE_START = 33
RESPONSE_BODY = 34
RECV_CREDIT = 35
WS_ACCEPT = 36
WS_SEND = 37
WS_CLOSE = 38
APP_DONE = 39
PONG = 40
RESPONSE_TRAILERS = 41
RESPONSE_PATHSEND = 42

TO_WORKER = frozenset({HTTP_REQUEST, HTTP_BODY, DISCONNECT, WS_CONNECT, WS_RECEIVE,
                       WS_DISCONNECT, SEND_CREDIT, PING})
TO_HOST = frozenset({HELLO, RESPONSE_START, RESPONSE_BODY, RECV_CREDIT, WS_ACCEPT, WS_SEND,
                     WS_CLOSE, APP_DONE, PONG, RESPONSE_TRAILERS, RESPONSE_PATHSEND})

#: Body bytes a stream may have in flight per direction before it waits for credit.
DEFAULT_WINDOW = 256 * 1024
#: Largest body chunk put in one record (larger bodies are split into more_body chunks).
MAX_CHUNK = 64 * 1024
#: Upper bounds of the bytes msgpack adds around an event's fields, for sizing a record before
#: it is packed (``max_chunk``, ``RingLink.push``'s bound): the array header, kind, sid
#: (<= 9 bytes), a status, one bin/str header (<= 5 bytes), a bool -- 17 at most, with room;
#: and per header pair, its array header and two bin headers.
FRAMING = 32
HEADER_FRAMING = 11


#: The ASGI ``tls`` extension's fields, in the order an HTTP_REQUEST or WS_CONNECT carries them.
TLS_FIELDS = ("server_cert", "client_cert_chain", "client_cert_name", "client_cert_error",
              "tls_version", "cipher_suite")


def tls_scope(tls: list) -> dict:
    """scope["extensions"]["tls"] from a checked (tls) field."""
    return dict(zip(TLS_FIELDS, tls))


def _is_tls(v) -> bool:
    if type(v) is not list or len(v) != 6:
        return False
    server_cert, chain, name, error, version, cipher = v
    return ((server_cert is None or type(server_cert) is str) and type(chain) is list
            and all(type(c) is str for c in chain) and (name is None or type(name) is str)
            and (error is None or type(error) is str) and type(version) is int
            and type(cipher) is int)


def max_chunk(max_record: int, window: int) -> int:
    """The largest body piece one record carries: it must fit the ring's largest record with
    its framing, and the window, or it would wait for credit forever."""
    return min(MAX_CHUNK, window, max_record - FRAMING)


_packer = msgpack.Packer(use_bin_type=True, autoreset=True)
pack = _packer.pack


class ProtocolError(ValueError):
    """An event that does not follow docs/protocol.md.  ``sid`` is the stream it concerns,
    or None when the ring itself can no longer be trusted."""

    def __init__(self, message: str, sid: int | None = None):
        super().__init__(message)
        self.sid = sid


# HTTP_REQUEST as the C packer (native/h1.c h1_pack_request, sidecar.http.h1) gives it: the
# ten scope fields already packed; the record is these bytes around them, exactly what
# ``pack`` makes of the whole event (tests/http/test_h1_pack.py checks it over a corpus).
_REQUEST_PREFIX = b"\x9e\x01"   # a msgpack array of 14, kind 1
_MORE = (b"\xc2", b"\xc3")       # msgpack false, true
_EMPTY_BIN = b"\xc4\x00"          # msgpack b"" (most requests have no body)


def request_record(sid: int, packed_scope: bytes, body: bytes, more: bool) -> bytes:
    """The HTTP_REQUEST record of stream ``sid`` from its ten packed scope fields (method …
    root_path), with the first body bytes."""
    return b"".join((_REQUEST_PREFIX, pack(sid), packed_scope,
                     pack(body) if body else _EMPTY_BIN, _MORE[more]))


def unpack(view) -> list:
    """Decode one record; anything but a non-empty array led by an int kind and an int sid
    is a ProtocolError for the ring.  msgpack bounds every length by the record size, so
    no value can allocate more than the record holds."""
    try:
        ev = msgpack.unpackb(view, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # ExtraData, FormatError, StackError, UnicodeDecodeError ...
        raise ProtocolError(f"undecodable event: {exc.__class__.__name__}") from None
    if type(ev) is not list or len(ev) < 2 or type(ev[0]) is not int or type(ev[1]) is not int:
        raise ProtocolError("event is not [kind, stream_id, ...]")
    return ev


# --- validation of decoded events (strict: wrong types are a protocol error for the stream) --

def _is_headers(h) -> bool:
    if type(h) is not list:
        return False
    for pair in h:
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not bytes \
                or type(pair[1]) is not bytes:
            return False
    return True


def check_request(ev: list) -> list:
    """Validate HTTP_REQUEST (14 fields, 15 with tls) or WS_CONNECT (12, 13 with tls); return
    its headers as a new list of ``(name, value)`` tuples, as a scope holds them.  The worker
    calls it for every request it opens, so the common case is one pass; whatever it does
    not accept goes to ``_request_error``, which says what is wrong."""
    n = len(ev)
    if ev[0] == HTTP_REQUEST:
        if n != 14:
            if n != 15 or not _is_tls(ev[14]):
                _request_error(ev)
            ev = ev[:14]
        (_, _, method, scheme, path, raw_path, query, headers, client, server, version,
         root, body, more) = ev
        ok = type(method) is str and type(body) is bytes and type(more) is bool
    else:
        if n != 12:
            if n != 13 or not _is_tls(ev[12]):
                _request_error(ev)
            ev = ev[:12]
        (_, _, scheme, path, raw_path, query, headers, client, server, version, root,
         subprotocols) = ev
        ok = type(subprotocols) is list and all(type(s) is str for s in subprotocols)
    if not ok or type(headers) is not list:
        _request_error(ev)
    pairs = []
    append = pairs.append
    for pair in headers:
        if type(pair) is not list or len(pair) != 2:
            _request_error(ev)
        name, value = pair
        if type(name) is not bytes or type(value) is not bytes:
            _request_error(ev)
        append((name, value))
    # client: [host, port] or nil; server: the same, or [path, nil]
    if (type(scheme) is not str or type(path) is not str
            or type(raw_path) is not bytes or type(query) is not bytes
            or type(version) is not str or type(root) is not str
            or client is not None and (type(client) is not list or len(client) != 2
                                       or type(client[0]) is not str
                                       or type(client[1]) is not int)
            or server is not None and (type(server) is not list or len(server) != 2
                                       or type(server[0]) is not str
                                       or type(server[1]) is not int
                                       and server[1] is not None)):
        _request_error(ev)
    return pairs


def _request_error(ev: list) -> None:
    """Raise the ProtocolError saying what is wrong with the HTTP_REQUEST or WS_CONNECT
    ``check_request`` did not accept."""
    kind = ev[0]
    n = 14 if kind == HTTP_REQUEST else 12
    if len(ev) == n + 1:
        if not _is_tls(ev[n]):
            raise ProtocolError(f"kind {kind}: bad tls field", ev[1])
        ev = ev[:n]
    if len(ev) != n:
        raise ProtocolError(f"kind {kind}: expected {n} or {n + 1} fields, got {len(ev)}",
                            ev[1])
    if kind == HTTP_REQUEST:
        method, rest = ev[2], ev[3:12]
        if type(method) is not str or type(ev[12]) is not bytes or type(ev[13]) is not bool:
            raise ProtocolError("HTTP_REQUEST: bad method/body/more_body", ev[1])
    else:
        rest = ev[2:11]
        subprotocols = ev[11]
        if type(subprotocols) is not list or any(type(s) is not str for s in subprotocols):
            raise ProtocolError("WS_CONNECT: bad subprotocols", ev[1])
    raise ProtocolError(f"kind {kind}: bad scope field", ev[1])


_SHAPES = {
    # kind: tuple of allowed types per field after [kind, sid]
    HTTP_BODY: ((bytes,), (bool,)),
    DISCONNECT: (),
    WS_RECEIVE: ((bytes, str), (bool,)),
    WS_DISCONNECT: ((int,), (str,)),
    SEND_CREDIT: ((int,),),
    PING: ((int,),),
    HELLO: ((int,), (int,), (int,)),
    RESPONSE_START: ((int,), (list,), (bool,)),
    RESPONSE_BODY: ((bytes,), (bool,)),
    RECV_CREDIT: ((int,),),
    WS_ACCEPT: ((str, type(None)), (list,)),
    WS_SEND: ((bytes, str), (bool,)),
    WS_CLOSE: ((int,), (str,)),
    APP_DONE: ((str, type(None)),),
    PONG: ((int,),),
    RESPONSE_TRAILERS: ((list,), (bool,)),
    RESPONSE_PATHSEND: ((str,), (int, type(None))),
}


def check_all(evs: list) -> bool:
    """Whether every event of a batch is one of the kinds of every request or message,
    well-formed (``check``'s fast path, the same tests): one call a batch.  False: check
    each event with ``check``, which says what is wrong."""
    for ev in evs:
        kind = ev[0]
        n = len(ev)
        if kind == RESPONSE_BODY or kind == HTTP_BODY:
            if n == 4 and type(ev[2]) is bytes and type(ev[3]) is bool:
                continue
        elif kind == APP_DONE:
            if n == 3 and (ev[2] is None or type(ev[2]) is str):
                continue
        elif kind == RESPONSE_START:
            if n == 5 and type(ev[2]) is int and type(ev[4]) is bool and type(ev[3]) is list:
                for pair in ev[3]:
                    if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not bytes \
                            or type(pair[1]) is not bytes:
                        return False
                continue
        elif kind == WS_SEND or kind == WS_RECEIVE:
            if n == 4 and (type(ev[2]) is bytes or type(ev[2]) is str) and type(ev[3]) is bool:
                continue
        return False
    return True


def check(ev: list) -> None:
    """Validate the field count and types of any event kind (headers deep-checked)."""
    kind = ev[0]
    # Fast path for the kinds of every request, in the order they are most common; anything
    # it does not accept falls through to the table below, which says what is wrong.
    # (check_all has the same tests for a whole batch.)
    n = len(ev)
    if kind == RESPONSE_BODY or kind == HTTP_BODY:
        if n == 4 and type(ev[2]) is bytes and type(ev[3]) is bool:
            return
    elif kind == WS_SEND or kind == WS_RECEIVE:
        if n == 4 and (type(ev[2]) is bytes or type(ev[2]) is str) and type(ev[3]) is bool:
            return
    elif kind == APP_DONE:
        if n == 3 and (ev[2] is None or type(ev[2]) is str):
            return
    elif kind == RESPONSE_START:
        if n == 5 and type(ev[2]) is int and type(ev[4]) is bool and type(ev[3]) is list:
            for pair in ev[3]:
                if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not bytes \
                        or type(pair[1]) is not bytes:
                    break
            else:
                return
    if kind in (HTTP_REQUEST, WS_CONNECT):
        check_request(ev)
        return
    shape = _SHAPES.get(kind)
    if shape is None:
        raise ProtocolError(f"unknown event kind {kind}", ev[1])
    if len(ev) != 2 + len(shape):
        if (kind == WS_RECEIVE or kind == WS_SEND) and len(ev) == 3:
            ev.append(False)  # `more` is optional: a 3-field event is a whole message
        else:
            raise ProtocolError(f"kind {kind}: expected {2 + len(shape)} fields", ev[1])
    for value, types in zip(ev[2:], shape):
        if type(value) not in types:
            raise ProtocolError(f"kind {kind}: bad field type {type(value).__name__}", ev[1])
    if kind in (RESPONSE_START, WS_ACCEPT) and not _is_headers(ev[3]):
        raise ProtocolError(f"kind {kind}: bad headers", ev[1])
    if kind == RESPONSE_TRAILERS and not _is_headers(ev[2]):
        raise ProtocolError(f"kind {kind}: bad headers", ev[1])
    if kind in (SEND_CREDIT, RECV_CREDIT) and ev[2] < 0:
        raise ProtocolError("negative credit", ev[1])
    if kind == RESPONSE_PATHSEND and (not ev[2].startswith("/") or "\0" in ev[2]
                                      or ev[3] is not None and ev[3] < 0):
        raise ProtocolError("RESPONSE_PATHSEND: the path must be absolute, the length "
                            "nil or >= 0", ev[1])
