"""All settings in one place, with defaults in units and the precedent they follow.

Sources, lowest to highest priority: defaults < TOML config file < SIDECAR_* environment
variables < command-line flags (sidecar.cli does the merging).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from sidecar.events import DEFAULT_WINDOW
from sidecar.ring import DEFAULT_CAPACITY

# Exit codes, shared by the server and its workers (systemd: RestartPreventExitStatus=3 4).
# Defined once, in sidecar/worker/config.py; EXIT_USAGE is argparse's convention.
from sidecar.worker.config import (EXIT_CONFIG_ERROR, EXIT_IMPORT_FAILED,  # noqa: E402
                                   EXIT_OK, EXIT_PROTOCOL_ERROR, EXIT_STARTUP_FAILED)

EXIT_USAGE = EXIT_CONFIG_ERROR  # bad flags, config or socket

# The front-end's share of the CPU a request costs, f / (f + w): f the front-end's CPU per
# request, w the worker's.  N front-ends keep up with the workers on C cores when
# N >= C * f / (f + w).  Measured with a small Starlette app (python -m benchmarks.cpu --app
# benchmarks.apps:starlette_app --path /plaintext, 2 vCPU): f 47.4 µs, w 51.3 µs -> 0.48
# (the bare hello: 42.3 and 19.8 -> 0.68; a real app's worker does more, so the share is
# lower).  docs/configuration.md, "Front-ends".
FRONTEND_SHARE = 0.48
SMALL_MACHINE = 3   # cores up to which one front-end is the default, whatever the share says


@dataclass
class Config:
    app: str = "examples.demo:app"
    factory: bool = False
    app_dir: str = "."

    # listeners; when none is given: ./sidecar.sock and 127.0.0.1:8000
    uds: str | None = None
    uds_mode: int = 0o660          # owner and group (the web server's) may connect
    bind: list[str] = field(default_factory=list)
    fd: list[int] = field(default_factory=list)
    backlog: int = 2048            # uvicorn/gunicorn: 2048
    # TLS on the TCP listeners (uvicorn's --ssl-* flags; sidecar/frontend/tls.py)
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: int = 0         # client certificates: 0 none, 1 optional, 2 required
    ssl_ciphers: str | None = None  # OpenSSL cipher list; None: OpenSSL's default
    attach_socket: str | None = None  # other hosts attach to the workers here (uds_mode)

    workers: int = 0               # 0 = one per core
    # front-end processes sharing the listeners and the workers; 0 = from the core count
    # (resolved_frontends; docs/configuration.md, "--frontends")
    frontends: int = 0
    # which front-end takes a new TCP connection: "concentrate" (front-end 0 until it is
    # saturated, then the next: sidecar/frontend/balance.py) or "hash" (the kernel's)
    frontend_balance: str = "concentrate"
    # development: reload the workers when a *.py file under reload_dirs (default: app_dir)
    # changes (sidecar/frontend/reloader.py)
    reload: bool = False
    reload_dirs: list[str] = field(default_factory=list)
    root_path: str = ""
    env_file: str | None = None
    log_level: str = "info"
    log_config: str | None = None  # dictConfig (.json/.toml) or fileConfig (.ini): logconfig.py
    access_log: bool = True
    # "combined" (nginx's combined line + duration), a template of {fields}, "json" or
    # "json:FIELDS" (sidecar/frontend/access_format.py)
    access_log_format: str = "combined"
    server_header: bool = True
    # "Name: Value" fields added to every response from the app (uvicorn's --header);
    # "Server: x" replaces sidecar's own Server value
    headers: list[str] = field(default_factory=list)
    date_header: bool = True
    forwarded_allow_ips: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1", "unix"])
    proxy_headers: bool = True
    lifespan: str = "auto"         # auto | on | off
    # auto | asgi | wsgi: a WSGI app runs on wsgi_threads threads per worker (auto: the rule
    # in sidecar/worker/wsgi.py, is_wsgi); with wsgi, a worker takes at most that many streams
    interface: str = "auto"
    wsgi_threads: int = 8

    # operations (docs/operations.md): the control socket for `sidecar status` ("auto": in
    # $RUNTIME_DIRECTORY, else next to the Unix socket; "off"; or a path) and Prometheus metrics
    # on their own socket (HOST:PORT or a path; none by default, like uvicorn and gunicorn)
    control: str = "auto"
    metrics: str | None = None
    pid_file: str | None = None    # gunicorn's --pid: the front-end's pid, removed at exit

    # flow control
    ring_capacity: int = DEFAULT_CAPACITY   # bytes per direction per worker
    window: int = DEFAULT_WINDOW            # per-stream body bytes in flight per direction

    # limits (the precedent for each is in sidecar/http/h1.py's Limits)
    max_request_line: int = 8192
    max_header_bytes: int = 65536
    max_headers: int = 100
    max_body: int | None = None
    # 0 = no limit.  Connections (WebSockets included) beyond limit_concurrency get 503 +
    # Retry-After at their first request, then close: uvicorn's --limit-concurrency (default
    # none); behind nginx, its worker_connections is the usual bound.
    limit_concurrency: int = 0
    # Streams (requests and WebSockets) in flight or waiting for a worker, in total; beyond:
    # 503 + Retry-After at once.  Off by default, as uvicorn's task limit.
    limit_streams: int = 0
    # Streams in flight on one worker: a full worker takes no more, and new streams wait for
    # one (503 after dispatch_timeout).  gunicorn's worker_connections for async workers: 1000.
    limit_worker_streams: int = 1000

    # WebSocket (the front-end owns the framing; websockets' defaults, but 16 MiB messages)
    ws_max_size: int = 16 * 1024 * 1024   # larger messages are refused with close code 1009
    ws_ping_interval: float = 20.0        # 0 = no keepalive pings
    ws_ping_timeout: float = 20.0         # no pong (nor any data) by then: the peer is gone
    ws_per_message_deflate: bool = True

    # HTTP/2 (sidecar/http/h2_connection.py; docs/operations.md, "HTTP/2 limits"): spoken by
    # prior knowledge on every listener and by ALPN on TLS ones unless http2 is off (hypercorn
    # and granian serve it by default too).  The header list size is max_header_bytes.
    http2: bool = True
    h2_max_concurrent_streams: int = 100  # nginx 128, hypercorn 100, Go 250
    h2_max_control_frames: int = 1000     # per second: SETTINGS, PING, PRIORITY, empty DATA...
    h2_max_resets: int = 200              # client RST_STREAMs per second (CVE-2023-44487)

    # timeouts, seconds
    keepalive_timeout: float = 75.0  # > nginx upstream keepalive_timeout (60 s): nginx closes first
    # A request head must arrive whole within this of its first byte (slowloris): nginx
    # client_header_timeout 60 s.  nginx in front sends a head in one piece, so this only
    # ever bites direct clients, and then as nginx itself would.
    header_timeout: float = 60.0
    # No request body byte for this long while the app waits for one: nginx
    # client_body_timeout 60 s (also between two reads, not for the whole body).
    body_timeout: float = 60.0
    # The client took none of the response for this long (our send buffer stayed full): abort.
    # nginx send_timeout 60 s.  Without it a client that stops reading holds a stream forever.
    send_timeout: float = 60.0
    # A request whose response has not started this long after it was received whole (its
    # head, or its body's last byte) gets 504 from the front-end; the app is told
    # http.disconnect and cancelled after a grace.  0 = off, as nginx's proxy_read_timeout is
    # what usually bounds it (60 s there).  Nothing bounds a response once it started.
    request_timeout: float = 0.0
    shutdown_timeout: float = 30.0   # systemd TimeoutStopSec default is 90 s
    # Event streams (text/event-stream responses) still running this long into a worker's
    # drain (shutdown, reload, recycle) are sent http.disconnect and, once their app stops,
    # ended cleanly, so EventSource clients reconnect (elsewhere) at once.  uvicorn has
    # sse-starlette stop at once through its exit flag; other responses are never told.
    drain_grace: float = 1.0
    worker_start_timeout: float = 60.0
    dispatch_timeout: float = 30.0   # wait for a ready worker before answering 503
    worker_hang_timeout: float = 30.0  # no heartbeat for this long: kill (gunicorn --timeout 30)

    # worker recycling (gunicorn's --max-requests/--max-requests-jitter; 0 = never)
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_worker_memory: int = 0       # MiB of RSS; above it the worker is recycled (0 = no limit)

    def resolved_workers(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    def resolved_frontends(self, cores: int | None = None) -> int:
        """--frontends, or its default: the front-end's share of a request's CPU times the
        cores, rounded down; 1 on up to SMALL_MACHINE cores; 30 at most (load_board)."""
        if self.frontends > 0:
            return self.frontends
        cores = cores or os.cpu_count() or 1
        if cores <= SMALL_MACHINE:
            return 1
        return max(1, min(int(cores * FRONTEND_SHARE), 30))

    def listeners(self) -> tuple[str | None, list[str], list[int]]:
        if self.uds is None and not self.bind and not self.fd:
            return "sidecar.sock", ["127.0.0.1:8000"], []
        return self.uds, list(self.bind), list(self.fd)
