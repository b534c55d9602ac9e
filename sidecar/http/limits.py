"""Size limits of the HTTP/1.1 request parser and of an HTTP/2 connection, each with the
precedent it follows.

sidecar normally sits behind nginx, which enforces its own (smaller) limits first; these are
the last line of defence for direct clients and must never be the reason a request that nginx
accepted gets refused.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "H2Limits", "MAX_CHUNK_LINE"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits of :class:`sidecar.http.h1.RequestParser`.

    Every limit is checked before the bytes it covers are buffered past it, so a client can
    never make the parser hold more than about ``max_header_bytes`` of unparsed input.
    """

    # Request line (method SP target SP version), without its CRLF -> 414.
    # nginx: large_client_header_buffers 8k; tomcat maxHttpHeaderSize 8 KiB; apache
    # LimitRequestLine 8190.
    max_request_line: int = 8192
    # Whole head: request line, header lines, CRLFs, and also the trailer section of a chunked
    # body -> 431. nginx allows 4 x 8k buffers (32 KiB); node had 80 KiB until 2018 and has
    # 16 KiB since; h11 16 KiB. 64 KiB is above all of them so that big cookies / JWTs that
    # a proxy passed are never refused here.
    max_header_bytes: int = 65536
    # Header field lines in the head (and, separately, trailer lines) -> 431.
    # apache LimitRequestFields 100; h11, hyper and Go's textproto all cap near 100.
    max_headers: int = 100
    # Total request body bytes (decoded, i.e. without chunk framing) -> 413. None: unlimited;
    # bodies are streamed with backpressure, so the size is the app's business by default.
    # nginx client_max_body_size (1m) is the usual place to cap it.
    max_body: int | None = None


# A chunk-size line with its extensions, without CRLF -> 400. Go net/http: maxLineLength 4096.
MAX_CHUNK_LINE = 4096


@dataclass(frozen=True, slots=True)
class H2Limits:
    """What one HTTP/2 connection may make us spend (docs/operations.md, "HTTP/2 limits")."""
    # SETTINGS_MAX_CONCURRENT_STREAMS. nginx http2_max_concurrent_streams 128; h2o, Go 250;
    # hypercorn 100.  Each open stream may hold one ring window of request body.
    max_streams: int = 100
    # SETTINGS_MAX_HEADER_LIST_SIZE and h2's HPACK decoder cap (the HPACK bomb bound): the
    # HTTP/1.1 limit --max-header-bytes, so a request is refused on neither or both.
    max_header_list: int = 65536
    # request body bytes per stream -> 413 (None: unlimited), as --max-body for HTTP/1.1
    max_body: int | None = None
    # Frames without a request, per second: SETTINGS, PING, PRIORITY, empty DATA (not
    # WINDOW_UPDATE: a client reading a large body sends many).  nginx bounds these per
    # connection buffer; Go, a queue of 10000 control frames.
    max_control_frames: int = 1000
    # client RST_STREAMs per second (CVE-2023-44487).  Go http2 and h2o: streams reset by the
    # client count against the concurrency limit; nginx: 2 x max streams per read.
    max_resets: int = 200

    @classmethod
    def from_config(cls, config) -> "H2Limits":
        """The limits a sidecar.config.Config sets."""
        return cls(max_streams=config.h2_max_concurrent_streams,
                   max_header_list=config.max_header_bytes, max_body=config.max_body,
                   max_control_frames=config.h2_max_control_frames,
                   max_resets=config.h2_max_resets)
