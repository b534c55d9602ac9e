"""Access log lines: nginx's "combined" format plus the duration, one line per response (for
a WebSocket, one when its connection ends: frontend/ws_conn.py).

    127.0.0.1:53422 - - [02/Dec/2026:05:55:33 +0000] "GET /a?b=1 HTTP/1.1" 200 27 "-" "curl/7.88.1" 0.6ms

Fields: client (``host:port``, or ``unix`` for a Unix-socket peer), ident and user (always
``-``), local time, request line, status, body bytes sent, Referer, User-Agent, milliseconds from
the parsed request head to the last byte handed to the socket.  Written to stdout (journald
keeps it apart from the server's own log on stderr).  As nginx does (``escape=default``), ``"``,
``\\`` and bytes outside printable ASCII are written as ``\\xHH``, so a line is always one
line and its quoted fields always split cleanly.

Other formats (``--access-log-format``: templates with named fields, JSON) are in
``access_format.py``; they get an ``Entry`` with every value and are slower by what they show.

Lines go out through ``AccessLog``.  With the logging setup sidecar makes itself
(``sidecar.cli.setup_logging``: the ``sidecar.access`` logger's one handler is a
``StdoutHandler``, writing the bare line), they skip the logging module and are written to
that stream together, once per event-loop iteration.  A LogRecord, the caller lookup and a
flush per line cost the front-end more than the rest of a request: under wrk, front-end CPU
per request went from ~37 to ~73 us with the access log on.  With any other setup
(``--log-config`` routing ``sidecar.access``, a filter, another level), every line is a
logging call, so its handlers, formatters and filters apply as configured.
"""
from __future__ import annotations

import logging
import re
import sys
import time

# printable ASCII but '"' and '\\': everything else is written \\xHH.  One character class
# (not an alternation, which the re module scans four times slower), and a translate() that
# deletes the safe bytes to see whether any other is there: a fraction of a search.
_SAFE = bytes(b for b in range(0x20, 0x7f) if b not in b'"\\')
_UNSAFE = re.compile(rb'[^\x20\x21\x23-\x5b\x5d-\x7e]')


def _esc(value: bytes) -> str:
    if value.translate(None, _SAFE):
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


def who(client) -> str:
    """The first field of a connection's lines: ``host:port``, or ``unix``."""
    return f"{client[0]}:{client[1]}" if client else "unix"


def line(who: str, req, status: int, sent: int, seconds: float) -> str:
    referer = agent = "-"
    for name, value in req.headers:
        if name == b"referer":
            referer = _esc(value)
        elif name == b"user-agent":
            agent = _esc(value)
    # the method is a token (the parsers take no other): nothing in it to escape; HTTP/2
    # is written HTTP/2.0, as nginx writes it
    version = req.http_version
    if version == "2":
        version = "2.0"
    return (f'{who} - - {_clock.get()} "{req.method.decode("ascii")} {_esc(req.target)} '
            f'HTTP/{version}" {status} {sent} "{referer}" "{agent}" '
            f'{seconds * 1000:.1f}ms')


class StdoutHandler(logging.StreamHandler):
    """The access logger's default handler (setup_logging): the bare line to stdout.  Its
    presence, alone and unfiltered, is what lets AccessLog write lines itself."""

    def __init__(self):
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))


class AccessLog:
    """Where the front-end's access lines go (see the module docstring): ``write(line)``,
    or ``write_entry(entry)`` formatted by ``format`` (--access-log-format; None: the
    default line, which callers build with ``line`` themselves)."""

    def __init__(self, batcher, logger: logging.Logger | None = None, format=None):
        self.logger = logger or logging.getLogger("sidecar.access")
        self.batcher = batcher
        self.format = format          # access_format.AccessFormat, or None
        self._lines: list[str] = []
        handlers = self.logger.handlers
        self.direct = (len(handlers) == 1 and type(handlers[0]) is StdoutHandler
                       and not handlers[0].filters and not self.logger.filters
                       and handlers[0].level <= logging.INFO
                       and self.logger.isEnabledFor(logging.INFO)
                       and not self.logger.propagate)
        self._stream = handlers[0].stream if self.direct else None
        self._failed = False

    def write(self, line: str) -> None:
        if not self.direct:
            self.logger.info(line)
            return
        lines = self._lines
        if not lines:
            self.batcher.add(self)
        lines.append(line)

    def write_websocket(self, client, req, status: int, sent: int, t0: float, link,
                        sid: int) -> None:
        """A WebSocket's line as its connection ends (frontend/ws_conn.py): the status
        answered (101, or a refusal's), every byte sent, the whole duration."""
        seconds = time.monotonic() - t0
        if self.format is None:
            self.write(line(who(client), req, status, sent, seconds))
            return
        from sidecar.frontend.access_format import Entry
        self.write_entry(Entry(req, status, sent, seconds, who(client), client,
                               None, worker=link.index if link is not None else None,
                               worker_pid=link.pid if link is not None else None,
                               sid=sid))

    def write_entry(self, entry) -> None:
        """A line in the configured format (a bug in it must not cost the response)."""
        try:
            text = self.format.line(entry)
        except Exception:
            logging.getLogger("sidecar.frontend").exception("access log format failed")
            return
        self.write(text)

    def flush(self) -> None:
        """Write this iteration's lines with one write (called by the Batcher, and at exit)."""
        lines = self._lines
        if not lines:
            return
        text = "\n".join(lines) + "\n"
        lines.clear()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError) as exc:   # stdout closed or broken: say it once
            if not self._failed:
                self._failed = True
                logging.getLogger("sidecar.frontend").warning(
                    "access log: cannot write to stdout (%s): lines are dropped", exc)

