"""Access log lines: nginx's "combined" format plus the duration, one line per response (for
a WebSocket, one when its connection ends: frontend/ws_conn.py).

    127.0.0.1:53422 - - [02/Dec/2026:05:55:33 +0000] "GET /a?b=1 HTTP/1.1" 200 27 "-" "curl/7.88.1" 0.6ms

Fields: client (``host:port``, or ``unix`` for a Unix-socket peer), ident and user (always
``-``), local time, request line, status, body bytes sent, Referer, User-Agent, milliseconds from
the parsed request head to the last byte handed to the socket.  Written to stdout (journald
keeps it apart from the server's own log on stderr).  As nginx does (``escape=default``), ``"``,
``\\`` and bytes outside printable ASCII are written as ``\\xHH``, so a line is always one
line and its quoted fields always split cleanly.
"""
from __future__ import annotations

import re
import time

_UNSAFE = re.compile(rb'[^\x20-\x7e]|["\\]')


def _esc(value: bytes) -> str:
    if _UNSAFE.search(value):
        value = _UNSAFE.sub(lambda m: b"\\x%02X" % m.group()[0], value)
    return value.decode("ascii")


class _ClockCache:
    """``[02/Dec/2026:05:55:33 +0000]``, formatted at most once per second."""

    def __init__(self):
        self._second = -1
        self._text = ""

    def get(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._text = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(now))
        return self._text


_clock = _ClockCache()


def line(client, req, status: int, sent: int, seconds: float) -> str:
    referer = agent = b"-"
    for name, value in req.headers:
        if name == b"referer":
            referer = value
        elif name == b"user-agent":
            agent = value
    who = f"{client[0]}:{client[1]}" if client else "unix"
    return (f'{who} - - {_clock.get()} "{_esc(req.method)} {_esc(req.target)} '
            f'HTTP/{req.http_version}" {status} {sent} "{_esc(referer)}" "{_esc(agent)}" '
            f'{seconds * 1000:.1f}ms')
