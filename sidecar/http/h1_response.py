"""HTTP/1.1 responses for the front-end, without I/O: status, headers -> head bytes; chunks.

``response_framing`` decides the body framing, ``serialize_response_head`` writes the head
(always ``HTTP/1.1``, as RFC 9110 section 2.5 says a server does), ``response_head`` does both
and says whether the connection stays open (what the front-end calls for every response; its
C speedup, ``h1_response_head``, takes ordinary heads and declines the rest),
``response_whole`` a head and its whole body in one buffer (C: ``h1_response``), ``encode_chunk``
and ``LAST_CHUNK`` frame chunked bodies, ``simple_response`` writes the server's own small
answers. The server owns the framing: an app's Transfer-Encoding header is dropped and its
Connection header replaced (except on 101, where both are the app's). An app's
``Connection: close`` is honoured in the head written, and ``response_head`` returns
keep_alive False: the caller closes after the body. A response to HTTP/1.0 without
Content-Length is delimited by closing the connection: ``response_framing`` returns
``(False, None)`` and the caller must close after the body.

The C speedup (``h1_response_head`` in sidecar._h1) is switched with the request parser's:
``sidecar.http.h1.speedups``.
"""
from __future__ import annotations

import struct
from http import HTTPStatus

from . import h1 as _h1
from .fields import CR_LF_NUL as _CR_LF_NUL, TCHARS as _TCHARS, field_error
from .h1 import HAVE_SPEEDUPS

if HAVE_SPEEDUPS:
    from .h1 import _ffi, _lib

__all__ = ["HeaderError", "serialize_response_head", "response_framing", "response_head",
           "response_whole",
           "encode_chunk", "LAST_CHUNK", "simple_response", "RETRY_AFTER", "takes_trailers",
           "last_chunk_with"]

# Retry-After (RFC 9110 section 10.2.3) on the server's own 503s: seconds before a retry.
RETRY_AFTER = ((b"retry-after", b"5"),)


def takes_trailers(request_headers) -> bool:
    """Whether the request said ``TE: trailers`` (RFC 9110 section 10.1.4): only then may a
    chunked response carry trailer fields."""
    for name, value in request_headers:
        if name == b"te" and b"trailers" in [v.strip().split(b";")[0].lower()
                                             for v in value.split(b",")]:
            return True
    return False


def last_chunk_with(trailers) -> bytes:
    """The last chunk of a chunked body with the app's trailer fields (ValueError for one
    that cannot be written; the fields RFC 9110 section 6.5.1 keeps out are dropped)."""
    lines = [b"0\r\n"]
    for name, value in trailers:
        error = field_error(name, value)
        if error is not None:
            raise HeaderError(error)
        name = bytes(name).lower()
        if name not in _h1._FORBIDDEN_TRAILERS:
            lines.append(b"%s: %s\r\n" % (name, bytes(value)))
    lines.append(b"\r\n")
    return b"".join(lines)


class HeaderError(ValueError):
    """The app's response head cannot be sent (bad status, name or value): answer 500."""


_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("ascii"))
                 for s in HTTPStatus}
_SPECIAL_RESPONSE_FIELDS = frozenset((b"date", b"server", b"connection", b"transfer-encoding"))
LAST_CHUNK = b"0\r\n\r\n"


def _status_line(status: int) -> bytes:
    if type(status) is not int or not 100 <= status <= 599:
        raise HeaderError(f"invalid status code {status!r}")
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status   # unknown code: empty reason phrase is allowed
    return line


def response_framing(status: int, headers, *, method: bytes,
                     http_version: str) -> tuple[bool, int | None]:
    """Decide how the response body is delimited: ``(chunked, content_length)``.

    * no body (HEAD, 1xx, 204, 304): ``(False, 0)``; the app's Content-Length is still sent.
    * the app set Content-Length: ``(False, n)`` (invalid or conflicting -> HeaderError).
    * else HTTP/1.1: ``(True, None)``; HTTP/1.0: ``(False, None)``, ended by closing.
    """
    content_length = None
    for name, value in headers:
        if len(name) == 14 and name.lower() == b"content-length":
            value = value.strip(b" \t")
            if not value.isdigit() or len(value) > 18:
                raise HeaderError(f"invalid content-length {value!r}")
            n = int(value)
            if content_length is not None and n != content_length:
                raise HeaderError("conflicting content-length headers")
            content_length = n
    if method == b"HEAD" or status < 200 or status == 204 or status == 304:
        return False, 0
    if content_length is not None:
        return False, content_length
    return http_version == "1.1", None


def serialize_response_head(status: int, headers, *, http_version: str, keep_alive: bool,
                            chunked: bool, date: bytes | None, server: bytes | None,
                            head_request: bool = False) -> bytes:
    """``HTTP/1.1 <status> <reason>`` + the app's headers + what the server owes.

    Adds Server and Date unless the app set them (either may be None: not sent),
    ``Connection: close`` when not keep_alive (``keep-alive`` for a kept HTTP/1.0 client),
    ``Transfer-Encoding: chunked`` when chunked (never on a HEAD response). The app's own
    Transfer-Encoding and Connection are dropped (kept on a 101); an app's ``close`` wins.
    Raises HeaderError for a bad status, a name that is not a token, or CR/LF/NUL anywhere.
    """
    out = [_status_line(status)]
    has_date = date is None
    has_server = server is None
    switching = status == 101
    try:
        for name, value in headers:
            lname = name.lower()
            if lname in _SPECIAL_RESPONSE_FIELDS:
                if lname == b"date":
                    has_date = True
                elif lname == b"server":
                    has_server = True
                elif not switching:   # connection, transfer-encoding: ours to write
                    if lname == b"connection" and b"close" in value.lower():
                        keep_alive = False
                    continue
            out += (name, b": ", value, b"\r\n")
    except (TypeError, AttributeError, ValueError) as exc:   # not (bytes, bytes) pairs
        raise HeaderError(f"headers must be (bytes, bytes) pairs: {exc}") from None
    if not has_server:
        out += (b"server", b": ", server, b"\r\n")
    if not has_date:
        out += (b"date", b": ", date, b"\r\n")
    # Validate all names, then all values, in one C call each: this is per response.
    names = out[1::4]
    try:
        bad = (b"".join(names).translate(None, _TCHARS) or b"" in names
               or _CR_LF_NUL.search(b"".join(out[3::4])))
    except TypeError:
        bad = True
    if bad:
        raise _bad_header(names, out[3::4])
    if not switching:
        if not keep_alive:
            out.append(b"connection: close\r\n")
        elif http_version == "1.0":
            out.append(b"connection: keep-alive\r\n")
        if chunked and not head_request:
            out.append(b"transfer-encoding: chunked\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def response_head(status: int, headers, *, method: bytes, http_version: str,
                  keep_alive: bool, date: bytes | None, server: bytes | None,
                  extra: tuple = ()) -> tuple[bytes, bool, int | None, bool]:
    """``response_framing`` and ``serialize_response_head`` in one call, as the front-end
    needs them for each response: ``(head, chunked, content_length, keep_alive)``.
    ``extra``: (name, value) fields written before the app's (the server's --header ones).

    ``keep_alive`` comes back cleared when the body is delimited by closing (HTTP/1.0 with no
    Content-Length) or the app's Connection field says close: the caller closes after the
    body.  ``chunked`` is the body's framing (never on a HEAD response).  HeaderError as the
    two functions.  The C speedup (h1_response_head) does it in one pass; anything it does
    not accept, every error included, takes the Python path below.
    """
    if _h1.speedups and type(status) is int:
        # (response_whole writes this preparation out again for its own C call)
        line = _STATUS_LINES.get(status)
        if line is not None:
            try:   # name NUL value, LF between pairs (h1.h)
                fields = b"\n".join(map(_join_pair, _chain(extra, headers) if extra
                                         else headers))
            except TypeError:
                fields = None
            if fields is not None:
                s = _resp_scratch
                flags = ((_RESP_HEAD if method == b"HEAD" else 0)
                         | (_RESP_HTTP10 if http_version == "1.0" else 0)
                         | (_RESP_KEEP_ALIVE if keep_alive else 0))
                n = _h1_response_head(
                    status, line, len(line), fields, len(fields), len(headers) + len(extra),
                    flags,
                    _NULL if date is None else date, 0 if date is None else len(date),
                    _NULL if server is None else server, 0 if server is None else len(server),
                    s.out, _RESP_CAP, s.resp)
                if n > 0:
                    chunked, length, keep = _unpack_resp(s.resp_buf)
                    return s.out_buf[:n], chunked == 1, None if length < 0 else length, \
                        keep == 1
    if extra:
        try:
            headers = [*extra, *headers]
        except TypeError as exc:
            raise HeaderError(f"headers must be (bytes, bytes) pairs: {exc}") from None
    chunked, length = response_framing(status, headers, method=method,
                                       http_version=http_version)
    if not chunked and length is None:
        keep_alive = False   # close-delimited body
    head = serialize_response_head(status, headers, http_version=http_version,
                                   keep_alive=keep_alive, chunked=chunked, date=date,
                                   server=server, head_request=method == b"HEAD")
    if keep_alive and status != 101:
        for name, value in headers:
            if name.lower() == b"connection" and b"close" in value.lower():
                keep_alive = False   # the head says close: so does the connection
    return head, chunked, length, keep_alive


def response_whole(status: int, headers, body: bytes, *, method: bytes, http_version: str,
                   keep_alive: bool, date: bytes | None, server: bytes | None,
                   extra: tuple = ()) -> tuple[bytes, bool, bool]:
    """A whole response in one buffer: ``response_head``, then ``body`` framed as the
    connection writes a body it was given whole (nothing for HEAD; one chunk and the last
    chunk when chunked; else as it is).  ``(data, chunked, keep_alive)``, HeaderError as
    ``response_head``.  Not for a response that carries trailers (its last chunk waits for
    them).  The C speedup (h1_response) does it in one pass, head and body into one buffer;
    what it declines takes the Python path below, its twin."""
    if _h1.speedups and _api_response is not None:
        # the usual case, in one C-API call (native/h1_api.c): the status line, the fields
        # and h1_response; None where it declines, and the Python path below decides
        whole = _api_response(status, headers, body, method, http_version, keep_alive, date,
                              server, extra)
        if whole is not None:
            return whole
    elif _h1.speedups and type(status) is int and type(body) is bytes:
        # without sidecar._h1api: response_head's preparation of the C call, written out: as a shared helper it cost
        # 2.2k instructions per request (callgrind, 230.5k -> 232.7k); change both together
        line = _STATUS_LINES.get(status)
        if line is not None:
            try:   # name NUL value, LF between pairs (h1.h)
                fields = b"\n".join(map(_join_pair, _chain(extra, headers) if extra
                                         else headers))
            except TypeError:
                fields = None
            if fields is not None:
                s = _resp_scratch
                flags = ((_RESP_HEAD if method == b"HEAD" else 0)
                         | (_RESP_HTTP10 if http_version == "1.0" else 0)
                         | (_RESP_KEEP_ALIVE if keep_alive else 0))
                n = _h1_response(
                    status, line, len(line), fields, len(fields), len(headers) + len(extra),
                    flags,
                    _NULL if date is None else date, 0 if date is None else len(date),
                    _NULL if server is None else server, 0 if server is None else len(server),
                    body, len(body), s.out, _RESP_CAP, s.resp)
                if n > 0:
                    chunked, _length, keep = _unpack_resp(s.resp_buf)
                    return s.out_buf[:n], chunked == 1, keep == 1
    head, chunked, _length, keep_alive = response_head(
        status, headers, method=method, http_version=http_version, keep_alive=keep_alive,
        date=date, server=server, extra=extra)
    if method == b"HEAD":
        return head, chunked, keep_alive
    if chunked:
        return b"".join((head, encode_chunk(body), LAST_CHUNK)), chunked, keep_alive
    return head + body, chunked, keep_alive


try:   # the C-API twin of the cffi call below, built with it (setup.py)
    from .._h1api import response as _api_response, set_status_lines as _set_status_lines
except ImportError:
    _api_response = None
else:
    _set_status_lines(_STATUS_LINES)

if HAVE_SPEEDUPS:
    from itertools import chain as _chain
    _h1_response = _lib.h1_response
    _join_pair = b"\0".join
    _h1_response_head = _lib.h1_response_head
    _NULL = _ffi.NULL
    _RESP_HEAD, _RESP_HTTP10, _RESP_KEEP_ALIVE = (
        _lib.H1_RESP_HEAD_REQUEST, _lib.H1_RESP_HTTP10, _lib.H1_RESP_KEEP_ALIVE)
    _RESP_CAP = 1 << 16   # a bigger head takes the Python path
    _unpack_resp = struct.Struct(f"{_lib.H1_RESP_NFACTS}q").unpack_from

    class _RespScratch:
        __slots__ = ("out", "out_buf", "resp", "resp_buf")

        def __init__(self):
            self.out = _ffi.new("char[]", _RESP_CAP)
            self.out_buf = _ffi.buffer(self.out)   # slicing it copies out bytes
            self.resp = _ffi.new("int64_t[]", _lib.H1_RESP_NFACTS)
            self.resp_buf = _ffi.buffer(self.resp)

    # The front-end calls this from its event loop's thread only (the request parser's
    # scratch is per thread because tests parse from several).
    _resp_scratch = _RespScratch()


def _bad_header(names: list, values: list) -> HeaderError:
    """The error for the first bad field (the slow path of serialize_response_head)."""
    for name, value in zip(names, values):
        error = field_error(name, value)
        if error is not None:
            return HeaderError(error)
    return HeaderError("invalid header")


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body. Empty data gives b"" (never the last-chunk marker)."""
    if not data:
        return b""
    return b"".join((b"%x\r\n" % len(data), data, b"\r\n"))


def simple_response(status: int, reason_text: str, *, date: bytes | None,
                    keep_alive: bool = False, extra_headers=()) -> bytes:
    """A whole small text/plain response from the server itself (400, 413, 500, 503, ...).

    ``date`` is the Date value, as for ``serialize_response_head`` (the front-end's, ticked
    once a second); None: no Date field (--no-date-header)."""
    body = reason_text.encode("utf-8", "replace") + b"\n"
    out = [_status_line(status),
           b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body)]
    if date is not None:
        out.append(b"date: %s\r\n" % date)
    if not keep_alive:
        out.append(b"connection: close\r\n")
    for name, value in extra_headers:
        out.append(b"%s: %s\r\n" % (name, value))
    out.append(b"\r\n")
    out.append(body)
    return b"".join(out)
