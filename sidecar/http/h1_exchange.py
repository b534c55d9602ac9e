"""One HTTP/1.1 request and its response on a connection (``Exchange``), and the client
deadlines a connection keeps (``Timeouts``): the state ``sidecar.http.h1_connection`` keeps per
exchange, apart from the machine that moves it."""
from __future__ import annotations

from dataclasses import dataclass

from . import h1

__all__ = ["Exchange", "Timeouts"]


@dataclass(slots=True)
class Timeouts:
    """The client deadlines, seconds (sidecar.config.Config has their precedents)."""
    header: float = 60.0
    body: float = 60.0
    keepalive: float = 75.0
    send: float = 60.0
    request: float = 0.0     # no response start this long after the request: 504 (0: off)


class Exchange:
    """One request and its response on the connection; ``stream`` is the stream layer's."""

    __slots__ = ("req", "stream", "key", "keep_alive", "body_done", "started", "complete",
                 "chunked", "head_only", "buffer", "status", "sent_bytes", "continue_sent",
                 "since", "want_trailers")

    def __init__(self, req: h1.Request, key: int, since: float = 0.0):
        self.req = req
        self.stream = None
        self.key = key                # reading paused for it under this key
        self.keep_alive = req.keep_alive
        self.body_done = False        # the parser saw the end of the request body
        self.started = False          # a status line went out (or was buffered)
        self.complete = False         # the whole response went out (or was buffered)
        self.chunked = False
        self.head_only = req.method == b"HEAD"
        self.buffer: list[bytes] | None = None  # response bytes while not at the head
        self.status = 0
        self.sent_bytes = 0           # body bytes, for the access line
        self.continue_sent = False
        self.since = since            # received whole (head, or body end): request_timeout
        self.want_trailers = False    # the last chunk waits for the app's trailers
