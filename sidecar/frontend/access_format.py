"""``--access-log-format``: access lines in the format an operator's tools already parse.

    combined (the default)   nginx's combined line plus the duration (access.line, the fast
                             path: nothing here runs for it)
    TEMPLATE                 text with named fields, nginx log_format / gunicorn
                             access_log_format style:
                             '{client} "{request}" {status} {bytes} {header:x-request-id}'
    json                     one JSON object per line with the DEFAULT_JSON fields
    json:FIELD,KEY=FIELD...  one JSON object per line with these fields (KEY renames one)

Fields (``FIELDS``; ``header:NAME`` and ``response_header:NAME`` take any header name).  In a
template every value is escaped as nginx's ``escape=default`` does (``"``, ``\\`` and bytes
outside printable ASCII as ``\\xHH``) and a missing one is ``-``; literal braces are ``{{``
and ``}}``.  In JSON, numbers are numbers, a missing value is ``null``, text is decoded as
UTF-8 with any other byte written ``\\xHH``, and the json module's string encoder (ASCII
only, as ``json.dumps`` writes strings) escapes quotes, backslashes and control characters: whatever a client puts in its headers, a line is one
JSON object with exactly the configured keys.

The values come from an ``Entry``, made per line only when the format is not the default.
"""
from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone

from sidecar.frontend.access import _clock, _esc

__all__ = ["AccessFormat", "Entry", "FIELDS", "DEFAULT_JSON", "compile_format"]


class Entry:
    """What one access line may show; the fields are computed from these."""

    __slots__ = ("req", "status", "sent", "seconds", "peer", "client", "scheme", "queue",
                 "ttfb", "worker", "worker_pid", "sid", "response_headers", "protocol")

    def __init__(self, req, status: int, sent: int, seconds: float, peer: str, client,
                 scheme: str, *, queue=None, ttfb=None, worker=None, worker_pid=None,
                 sid=None, response_headers=None, protocol=None):
        self.req = req
        self.status = status
        self.sent = sent
        self.seconds = seconds
        self.peer = peer              # the socket's peer: host:port, or unix
        self.client = client          # [host, port] the app saw (proxy headers), or None
        self.scheme = scheme
        self.queue = queue            # seconds from the request to a worker taking it
        self.ttfb = ttfb              # seconds from the request to the response start
        self.worker = worker
        self.worker_pid = worker_pid
        self.sid = sid
        self.response_headers = response_headers
        self.protocol = protocol or f"HTTP/{req.http_version}"


def _header(headers, name: bytes):
    """A request header (the parsers lower-case the names)."""
    found = None
    for n, v in headers:
        if n == name:
            found = v if found is None else found + b", " + v
    return found


def _response_header(headers, name: bytes):
    """A response header, as the app spelled its name."""
    if headers is None:
        return None
    found = None
    for n, v in headers:
        if len(n) == len(name) and n.lower() == name:
            found = v if found is None else found + b", " + v
    return found


def _target(e: Entry) -> bytes:
    return e.req.target


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 3)


def _client(e: Entry):
    c = e.client
    if not c:
        return None
    return c[0] if not c[1] else f"{c[0]}:{c[1]}"


class _IsoClock:
    """``2026-12-07T07:20:22.123+00:00``: the date, time and offset formatted once a second."""

    def __init__(self):
        self._second = -1
        self._head = self._tail = ""

    def get(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            text = datetime.fromtimestamp(second, timezone.utc).astimezone().isoformat()
            self._head, self._tail = text[:19], text[19:]
        return f"{self._head}.{int((now - second) * 1000):03d}{self._tail}"


_iso_clock = _IsoClock()


def _iso(e: Entry) -> str:
    return _iso_clock.get()


# name -> (getter(entry), numeric).  Getters return bytes, str, int, float or None.
FIELDS = {
    "request": (lambda e: b"%s %s %s" % (e.req.method, e.req.target, e.protocol.encode()),
                False),
    "method": (lambda e: e.req.method, False),
    "target": (_target, False),
    "path": (lambda e: e.req.target.partition(b"?")[0], False),
    "query": (lambda e: e.req.target.partition(b"?")[2] or None, False),
    "protocol": (lambda e: e.protocol, False),
    "scheme": (lambda e: e.scheme, False),
    "status": (lambda e: e.status, True),
    "bytes": (lambda e: e.sent, True),
    "referer": (lambda e: _header(e.req.headers, b"referer"), False),
    "user_agent": (lambda e: _header(e.req.headers, b"user-agent"), False),
    "peer": (lambda e: e.peer, False),
    "client": (_client, False),
    "time_local": (lambda e: _clock.get()[1:-1], False),
    "time_iso8601": (_iso, False),
    "msec": (lambda e: round(time.time(), 3), True),
    "duration": (lambda e: round(e.seconds, 6), True),
    "duration_ms": (lambda e: _ms(e.seconds), True),
    "queue_ms": (lambda e: _ms(e.queue), True),
    "ttfb_ms": (lambda e: _ms(e.ttfb), True),
    "worker": (lambda e: e.worker, True),
    "worker_pid": (lambda e: e.worker_pid, True),
    "frontend_pid": (lambda e: os.getpid(), True),   # which front-end (--frontends)
    "stream": (lambda e: e.sid, True),
}
HEADER_FIELDS = ("header", "response_header")

DEFAULT_JSON = ("time_iso8601", "peer", "client", "method", "path", "query", "protocol",
                "status", "bytes", "referer", "user_agent", "duration_ms", "queue_ms",
                "ttfb_ms", "worker", "stream")

_NAME = re.compile(r"[a-z_0-9]+(?::[!#$%&'*+.^_`|~0-9A-Za-z-]+)?\Z")


def _getter(field: str):
    """(getter, numeric) of a field name, or ValueError saying what is wrong."""
    if not _NAME.match(field):
        raise ValueError(f"not a field: {{{field}}}")
    kind, sep, header = field.partition(":")
    if sep:
        if kind not in HEADER_FIELDS:
            raise ValueError(f"unknown field {{{field}}} (header:NAME or "
                             f"response_header:NAME)")
        name = header.lower().encode("ascii")
        if kind == "header":
            return (lambda e: _header(e.req.headers, name)), False
        return (lambda e: _response_header(e.response_headers, name)), False
    if field not in FIELDS:
        raise ValueError(f"unknown field {{{field}}}; known: {', '.join(FIELDS)}, "
                         f"header:NAME, response_header:NAME")
    return FIELDS[field]


def _text(value) -> str:
    if value is None or value == b"" or value == "":
        return "-"
    if type(value) is bytes:
        return _esc(value)
    if type(value) is str:
        return _esc(value.encode("utf-8", "surrogateescape"))
    if type(value) is float:
        return f"{value:.3f}"
    return str(value)


_quote = json.encoder.encode_basestring_ascii   # '"text"', ASCII, every escape json.dumps makes


class AccessFormat:
    """A compiled --access-log-format: ``line(entry)`` -> str (one line, no newline)."""

    def __init__(self, spec: str, parts: list, json_keys: list | None):
        self.spec = spec
        self.parts = parts            # template: str literals and getters; json: getters
        self.json_keys = json_keys
        if json_keys is not None:
            self.json_parts = [(_quote(k) + ": ", g) for k, g in zip(json_keys, parts)]
        # what an Entry must carry (the stream records them only when asked)
        self.wants_response_headers = "response_header:" in spec
        # the client and scheme the app saw cost a pass over the proxy headers: only if shown
        self.wants_client = json_keys is None and ("{client}" in spec or "{scheme}" in spec) \
            or json_keys is not None and (spec == "json" or "client" in spec or "scheme" in spec)

    def line(self, e: Entry) -> str:
        if self.json_keys is not None:
            # written by hand, each value by the json module's own C string encoder: a
            # third of what building a dict for json.dumps cost
            out = []
            for prefix, get in self.json_parts:
                v = get(e)
                t = type(v)
                if t is bytes:
                    out.append(prefix + _quote(v.decode("utf-8", "backslashreplace")))
                elif t is str:
                    out.append(prefix + _quote(v))
                elif v is None:
                    out.append(prefix + "null")
                elif t is int:
                    out.append(prefix + str(v))
                else:
                    out.append(prefix + repr(float(v)))
            return "{" + ", ".join(out) + "}"
        return "".join(p if type(p) is str else _text(p(e)) for p in self.parts)


_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]|[^{}]+")


def compile_format(spec: str) -> AccessFormat | None:
    """None for the default (``combined``), else an AccessFormat; ValueError for a mistake."""
    if spec == "combined":
        return None
    if spec == "json" or spec.startswith("json:"):
        names = DEFAULT_JSON if spec == "json" else [
            f.strip() for f in spec[5:].split(",") if f.strip()]
        if not names:
            raise ValueError("json: needs at least one field")
        keys, getters = [], []
        for item in names:
            key, sep, field = item.partition("=")
            if not sep:
                key = field = item
            key, field = key.strip(), field.strip()
            if not key or key in keys:
                raise ValueError(f"json: empty or repeated key {key!r}")
            keys.append(key)
            getters.append(_getter(field)[0])
        return AccessFormat(spec, getters, keys)
    parts: list = []
    for m in _TOKEN.finditer(spec):
        text = m.group()
        if text == "{{":
            parts.append("{")
        elif text == "}}":
            parts.append("}")
        elif m.group(1) is not None:
            parts.append(_getter(m.group(1))[0])
        elif text in "{}":
            raise ValueError(f"unmatched {text!r} (write {text * 2} for a literal one)")
        else:
            if "\n" in text or "\r" in text:
                raise ValueError("a line break in the format")
            parts.append(text)
    if not any(type(p) is not str for p in parts):
        raise ValueError("no {field} in the format (or 'combined', 'json', 'json:FIELDS')")
    return AccessFormat(spec, parts, None)
