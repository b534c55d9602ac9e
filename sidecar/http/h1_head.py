"""HTTP/1.1 request heads: what a complete head must be, checked after llhttp's grammar.

``sidecar.http.h1`` frames each head (finds CRLF CRLF, enforces the limits before buffering)
and hands it to llhttp (httptools) in strict mode for the grammar; ``check_head`` then applies
the RFC 9110/9112 semantics llhttp lacks, and decides every status a head can be refused with.
The C speedup (native/h1.c) takes only heads these rules accept, read the same way.
``PythonHeads`` is the parser's own Python path for a head (llhttp, then ``check_head``),
where the C speedup declines or is off.

Rules (RFC 9112 unless noted; "-> N" = ProtocolError with status N)
-------------------------------------------------------------------
Request line
  * ``method SP request-target SP HTTP/x.y CRLF``, single spaces. Longer than
    ``Limits.max_request_line`` -> 414.
  * A method llhttp does not know (RFC 9110 allows any token; llhttp knows ~35, including
    WebDAV's and QUERY; methods are case-sensitive) -> 501, as for any unimplemented method:
    that is, a token followed by SP. Anything else where the method should be -> 400.
    CONNECT -> 501: sidecar is not a proxy.
  * HTTP/1.0 and HTTP/1.1 only. Any other well-formed version (0.9, 1.2, 2.0, 3.0, including
    the HTTP/2 preface ``PRI * HTTP/2.0``) -> 505; anything else in that place -> 400.
  * request-target: origin-form ``/path?query``, absolute-form ``scheme://authority/path?q``
    (path taken from it; the Host header is still required and left as sent), or ``*`` with
    OPTIONS only. Characters outside RFC 3986 (CTL, SP, non-ASCII), a fragment ``#``, any
    other form -> 400.
  * ``path`` is percent-decoded, then UTF-8 decoded; if the bytes are not UTF-8 the whole path
    is decoded as latin-1 instead (never an error, every byte kept, and a str that msgpack can
    always encode, unlike surrogateescape). ``raw_path`` has the exact bytes.
  * CR LF before the request line are skipped (RFC 9112 section 2.2 "SHOULD ignore").
Header fields
  * Names are tokens with the colon right after them: whitespace before the colon, obs-fold
    (a line starting with SP/HTAB), a bare CR or a bare LF anywhere in the head, CTLs other
    than HTAB in values, NUL -> 400. (llhttp enforces these; the tests pin them.)
  * Names are lowercased, values have leading and trailing SP/HTAB removed; order and
    duplicates are kept. obs-text (0x80-0xFF) in values is allowed, as RFC 9110 says.
  * Head bigger than ``max_header_bytes`` or more than ``max_headers`` fields -> 431.
  * Host: an HTTP/1.1 request must have exactly one, HTTP/1.0 at most one; more, missing (1.1),
    or a value that is not ``uri-host [":" port]`` -> 400 (RFC 9112 section 3.2).
Framing (section 6)
  * Transfer-Encoding and Content-Length together -> 400 (request smuggling).
  * Transfer-Encoding (all its lines as one list, case-insensitive): exactly ``chunked`` ->
    chunked body. ``chunked`` not last or present twice -> 400. Any other coding (gzip,
    identity, ...) alone or before chunked -> 501. In an HTTP/1.0 request -> 400.
  * Content-Length: 1 to 18 digits. Anything else (``+5``, ``-1``, ``5, 10``, ``abc``,
    overflow) -> 400. Duplicates, even identical ones (``5, 5`` or two ``5`` lines) -> 400:
    RFC 9110 section 8.6 allows either rejecting or merging, and rejecting is the choice
    no front proxy can disagree with.
  * Neither: no body, on HTTP/1.0 as on 1.1 (a request body is never delimited by close).
  * Declared or decoded body bigger than ``max_body`` -> 413 (for Content-Length before the
    Request event, so before any 100 Continue would be sent).
Connection
  * keep_alive: HTTP/1.1 unless ``Connection: close``; HTTP/1.0 only with
    ``Connection: keep-alive`` (and no close).
  * expect_continue: ``Expect: 100-continue`` (case-insensitive) on HTTP/1.1. HTTP/1.0
    expectations and unknown expectations are ignored (RFC 9110 section 10.1.1 allows this).
  * upgrade: the lowercased Upgrade field value (b"websocket") when the request is HTTP/1.1,
    has ``Connection: upgrade`` and has no body; else None (an Upgrade on a request with a
    body, or on HTTP/1.0, is ignored as RFC 9110 section 7.8 allows). When one of its
    protocols is in ``upgrade_protocols`` (default: websocket), parsing stops after the
    head: no EndOfMessage follows, later bytes collect in ``take_trailing()``. A caller that
    refuses the upgrade calls ``decline_upgrade()`` to go on parsing HTTP/1.1.
"""
from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from httptools import HttpRequestParser
from httptools.parser.errors import (HttpParserError, HttpParserInvalidMethodError,
                                     HttpParserInvalidURLError, HttpParserUpgrade)

from .limits import Limits

__all__ = ["check_head", "decode_path", "transfer_coding", "PythonHeads"]

# --- grammar of heads ---------------------------------------------------------------------------

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = re.compile(rb"[%s]+" % _TCHAR)
_CRLFS = re.compile(rb"(?:\r\n)+")
# A request line whose version part is well formed (used to tell 505 from 400).
_VERSIONED_LINE = re.compile(rb"[%s]+ [\x21-\x7e]+ HTTP/([0-9])\.([0-9])" % _TCHAR)
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*://[^/?#]*")
# uri-host [":" port]: IP-literal, or reg-name / IPv4address (RFC 3986 section 3.2.2).
_HOST = re.compile(rb"(?:\[[0-9A-Za-z:.\-_~!$&'()*+,;=%]+\]|[0-9A-Za-z.\-_~!$&'()*+,;=%]*)"
                   rb"(?::[0-9]*)?")

# Chunked bodies (h1.RequestParser): chunk lines and trailer fields.
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*[%s]+(?:[ \t]*=[ \t]*(?:[%s]+|%s))?)*"
    % (_TCHAR, _TCHAR, _QUOTED))
_FIELD_LINE = re.compile(rb"([%s]+):[ \t]*[\t\x20-\x7e\x80-\xff]*" % _TCHAR)

# RFC 9110 section 6.5.1: fields that must not be in trailers. Receiving one means an attack
# (a second framing or routing opinion) or a broken client, so the request is refused.
_FORBIDDEN_TRAILERS = frozenset((
    b"content-length", b"transfer-encoding", b"host", b"connection", b"keep-alive",
    b"upgrade", b"te", b"trailer", b"expect", b"proxy-connection", b"content-type",
    b"content-encoding", b"content-range", b"authorization", b"proxy-authorization",
    b"cookie", b"cache-control", b"max-forwards", b"range", b"if-match", b"if-none-match",
    b"if-modified-since", b"if-unmodified-since", b"if-range"))

# Header fields the parser acts on (everything else is only passed along).
_FRAMING_FIELDS = frozenset((b"host", b"content-length", b"transfer-encoding", b"connection",
                             b"expect", b"upgrade"))


class _Reject(Exception):
    """Internal: the input is refused with this status (becomes a ProtocolError event)."""

    def __init__(self, status: int, reason: str):
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


class _Head:
    """httptools callback target collecting one request head."""
    __slots__ = ("headers", "framing", "complete")

    def __init__(self):
        self.headers: list[tuple[bytes, bytes]] = []
        self.framing: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        value = value.rstrip(b" \t")    # llhttp strips leading OWS only
        self.headers.append((name, value))
        if name in _FRAMING_FIELDS:
            self.framing.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True


def _llhttp(cb: _Head) -> HttpRequestParser:
    hp = HttpRequestParser(cb)
    # Keep-alive is decided here, and nothing is fed after a request that closes; without
    # this, llhttp would refuse the next request whenever its reading of Connection differs.
    hp.set_dangerous_leniencies(lenient_keep_alive=True)
    return hp


def _method_undecided(line: bytes) -> bool:
    """llhttp refused the method at its first unknown byte: is the token still running?"""
    m = _TOKEN.match(line)
    return m is not None and m.end() == len(line)


def _llhttp_reject(line: bytes, exc: Exception) -> _Reject:
    """Turn an llhttp error into a status; ``line`` is the request line so far.

    The status must not depend on how the bytes were split into reads, so it only uses what
    llhttp had seen when it failed: a bad method is judged before the version, as llhttp does.
    """
    if isinstance(exc, HttpParserInvalidMethodError):
        m = _TOKEN.match(line)
        if m is not None and line[m.end():m.end() + 1] == b" ":
            return _Reject(501, "method not implemented")
    elif not isinstance(exc, HttpParserInvalidURLError):
        m = _VERSIONED_LINE.match(line)   # a prefix: llhttp stops at the first bad byte
        if m is not None and m.group(1, 2) not in ((b"1", b"1"), (b"1", b"0")):
            return _Reject(505, "HTTP version not supported")
    return _Reject(400, f"invalid request: {exc}")


def decode_path(raw_path: bytes) -> str:
    if b"%" in raw_path:
        raw_path = unquote_to_bytes(raw_path)
        try:
            return raw_path.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return raw_path.decode("latin-1")   # ASCII here unless percent-decoded


def check_head(line: bytes, rl_end: int, headers: list, framing: list, limits: Limits,
               error: Exception | None) -> tuple:
    """The checks of a head llhttp parsed (the rules above), or a _Reject.

    ``line`` is the request line, ``rl_end`` its length; ``headers`` every field and
    ``framing`` those of _FRAMING_FIELDS, as llhttp gave them (``_Head``); ``error`` what
    llhttp refused after the head, if anything (our own checks come first).  Returns
    (method, target, raw_path, query_string, http_version, keep_alive, expect_continue,
    upgrade, content_length, chunked).
    """
    # request line: llhttp checked the characters, we check the shape it lets through
    # (it also takes runs of spaces, and RTSP/ and ICE/ versions)
    sp = line.find(b" ")
    target = line[sp + 1:rl_end - 9]
    if line[rl_end - 9:rl_end - 3] != b" HTTP/" or b" " in target or not target:
        raise _Reject(400, "invalid request line")
    version = line[rl_end - 3:]
    if version == b"1.1":
        http_version = "1.1"
    elif version == b"1.0":
        http_version = "1.0"
    elif _VERSIONED_LINE.fullmatch(line):
        raise _Reject(505, "HTTP version not supported")
    else:
        raise _Reject(400, "invalid HTTP version")
    method = line[:sp]
    if method == b"CONNECT":
        raise _Reject(501, "CONNECT not supported")
    if target[0] == 47:   # b"/": origin-form, the common case
        raw_path = target
    elif target == b"*":
        if method != b"OPTIONS":
            raise _Reject(400, "asterisk-form target is for OPTIONS only")
        raw_path = target
    else:
        m = _ABSOLUTE_FORM.match(target)
        if m is None:
            raise _Reject(400, "invalid request target")
        raw_path = target[m.end():]
        if raw_path[:1] != b"/":
            raw_path = b"/" + raw_path
    if b"#" in target:
        raise _Reject(400, "fragment in request target")
    q = raw_path.find(b"?")
    if q < 0:
        query_string = b""
    else:
        query_string = raw_path[q + 1:]
        raw_path = raw_path[:q]
    if len(headers) > limits.max_headers:
        raise _Reject(431, "too many header fields")

    # the fields that decide framing and connection handling
    hosts = 0
    host = cl = te = conn = expect = upgrade = None
    for name, value in framing:
        if name == b"host":
            hosts += 1
            host = value
        elif name == b"content-length":
            if cl is not None:
                raise _Reject(400, "duplicate Content-Length")
            cl = value
        elif name == b"transfer-encoding":
            te = value if te is None else te + b"," + value
        elif name == b"connection":
            conn = value if conn is None else conn + b"," + value
        elif name == b"expect":
            expect = value if expect is None else expect + b"," + value
        else:
            upgrade = value if upgrade is None else upgrade + b", " + value
    if hosts != 1:
        if hosts or http_version == "1.1":
            raise _Reject(400, "multiple Host headers" if hosts else "missing Host header")
    elif _HOST.fullmatch(host) is None:
        raise _Reject(400, "invalid Host header")

    chunked = False
    content_length = None
    if te is not None:
        chunked = transfer_coding(te, cl, http_version)
    elif cl is not None:
        if not cl.isdigit() or len(cl) > 18:
            raise _Reject(400, "invalid Content-Length")
        content_length = int(cl)
        if limits.max_body is not None and content_length > limits.max_body:
            raise _Reject(413, "request body too large")
    if error is not None:   # llhttp refused something after the head we did not
        raise _Reject(400, f"invalid request: {error}")

    if conn is None:
        tokens = ()
        keep_alive = http_version == "1.1"
    else:
        tokens = [t.strip(b" \t") for t in conn.lower().split(b",")]
        keep_alive = b"close" not in tokens and (
            http_version == "1.1" or b"keep-alive" in tokens)
    expect_continue = (expect is not None and http_version == "1.1"
                       and expect.strip(b" \t").lower() == b"100-continue")
    if upgrade is not None:
        if (b"upgrade" in tokens and http_version == "1.1" and not chunked
                and not content_length):
            upgrade = upgrade.lower()
        else:
            upgrade = None
    return (method, target, raw_path, query_string, http_version, keep_alive,
            expect_continue, upgrade, content_length, chunked)


def transfer_coding(te: bytes, cl: bytes | None, http_version: str) -> bool:
    """Transfer-Encoding of a request: True for chunked, else a _Reject."""
    if cl is not None:
        raise _Reject(400, "both Transfer-Encoding and Content-Length")
    if http_version == "1.0":
        raise _Reject(400, "Transfer-Encoding in an HTTP/1.0 request")
    codings = [c.strip(b" \t") for c in te.lower().split(b",")]
    codings = [c for c in codings if c]   # empty list elements are allowed and ignored
    if not codings:
        raise _Reject(400, "empty Transfer-Encoding")
    if codings.count(b"chunked") > 1:
        raise _Reject(400, "chunked applied more than once")
    if codings[-1] != b"chunked":
        if b"chunked" in codings:
            raise _Reject(400, "chunked is not the final transfer coding")
        raise _Reject(501, "unsupported transfer coding")
    if len(codings) > 1:
        raise _Reject(501, "unsupported transfer coding")
    return True


# --- the Python path for heads ------------------------------------------------------------

class PythonHeads:
    """``h1.RequestParser``'s Python path for a head (split off from it, where the C
    speedup declines or is off): an incomplete head goes to llhttp line by line as it
    arrives, a whole one at once, and ``check_head`` applies what llhttp does not; the
    Request comes from the parser's ``_emit_request``.  Its state is the parser's (slots
    there)."""

    __slots__ = ()

    def _head_incomplete(self, old: int) -> None:
        """The head in the buffer has no end yet; ``old`` = its bytes already looked at."""
        buf = self._buf
        if self._fed == 0:   # nothing of this head parsed yet: skip empty lines before it
            if buf.startswith(b"\r\n"):
                del buf[:_CRLFS.match(buf).end()]
                old = 0
            if not buf or buf == b"\r":
                return
        self._head_progress(buf, old, False)

    def _head_progress(self, buf, old: int, final: bool) -> HttpParserError | None:
        """Give llhttp what it may see of the head in ``buf`` and apply the limits.

        ``final``: buf is the whole head (CRLF CRLF included); returns what llhttp refused
        after the head, if anything. Otherwise feeds the partial request line (llhttp's
        method and URL states are pure C) and whole header lines only (httptools
        concatenates partial names and values, quadratic byte by byte). Before a limit is
        applied llhttp has seen exactly the bytes within it, so the status never depends on
        how the input was split into reads.
        """
        limits = self._limits
        rl = self._rl_len
        if rl < 0:
            rl = self._rl_len = buf.find(b"\r\n", max(0, old - 1))
        window = limits.max_request_line + 1
        if rl >= window or (rl < 0 and len(buf) > window):
            self._feed_head(buf, window, buf[:window], False)
            raise _Reject(414, "request line too long")
        if len(buf) > limits.max_header_bytes:
            window = limits.max_header_bytes + 1
            self._feed_head(buf, buf.rfind(b"\n", 0, window) + 1, buf[:rl], False)
            raise _Reject(431, "request header section too large")
        if final:
            return self._feed_head(buf, len(buf), buf[:rl], False)
        if rl < 0:
            return self._feed_head(buf, len(buf), buf, True)
        return self._feed_head(buf, buf.rfind(b"\n", max(self._fed, old)) + 1, buf[:rl], False)

    def _feed_head(self, buf, upto: int, line, wait: bool) -> HttpParserError | None:
        """Feed llhttp ``buf[fed:upto]``; a refusal before the head's end raises _Reject.

        ``line``: the request line (or what there is of it) for classifying a refusal.
        ``wait``: more bytes may come, so a refused method whose token is still running is
        held back (501 or 400 depends on the byte after it).
        Returns what llhttp refused after a complete head (the caller's checks come first).
        """
        exc = self._error
        fed = self._fed
        if exc is None and upto > fed:
            self._fed = upto
            hp = self._hp
            if hp is None:
                hp = self._hp = _llhttp(self._cb)
            try:
                hp.feed_data(buf if fed == 0 and upto == len(buf) and type(buf) is bytes
                             else bytes(buf[fed:upto]))
            except HttpParserUpgrade:
                self._hp = None   # llhttp stopped after the head; never reuse it
                return None
            except HttpParserError as error:
                self._hp = None
                if self._cb.complete:
                    return error
                exc = error
        if exc is None:
            return None
        line = bytes(line)
        if wait and isinstance(exc, HttpParserInvalidMethodError) and _method_undecided(line):
            self._error = exc
            return None
        raise _llhttp_reject(line, exc)

    def _on_head(self, head: bytes, events: list) -> None:
        """``head`` runs from the request line to CRLF CRLF inclusive."""
        rl_end = head.find(b"\r\n")
        if rl_end == 0:   # empty lines before the request line: skip them
            head = head[_CRLFS.match(head).end():]
            if not head:
                return
            rl_end = head.find(b"\r\n")
        limits = self._limits
        cb = self._cb
        line = head[:rl_end]
        error = None
        if (self._fed or self._error is not None or rl_end > limits.max_request_line
                or len(head) > limits.max_header_bytes):
            self._rl_len = rl_end
            error = self._head_progress(head, 0, True)
            self._fed = 0
            self._rl_len = -1
        else:   # the usual case: a whole head within the limits, in one piece
            hp = self._hp
            if hp is None:
                hp = self._hp = _llhttp(cb)
            try:
                hp.feed_data(head)
            except HttpParserUpgrade:
                self._hp = None   # llhttp stopped after the head; never reuse it
            except HttpParserError as exc:
                self._hp = None
                if not cb.complete:
                    raise _llhttp_reject(line, exc) from None
                error = exc
        if not cb.complete:   # llhttp holds some heads back, e.g. the HTTP/2 preface's
            raise _llhttp_reject(line, "head not complete")
        headers = cb.headers
        framing = cb.framing
        cb.headers = []
        cb.framing = []
        cb.complete = False

        (method, target, raw_path, query_string, http_version, keep_alive, expect_continue,
         upgrade, content_length, chunked) = check_head(line, rl_end, headers, framing, limits,
                                                        error)
        self._emit_request(events, method, target,
                           decode_path(raw_path) if b"%" in raw_path
                           else raw_path.decode("latin-1"),   # llhttp allows ASCII only
                           raw_path, query_string, http_version, headers, keep_alive,
                           expect_continue, upgrade, content_length, chunked)
