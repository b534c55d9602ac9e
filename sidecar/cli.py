"""Command line: ``sidecar MODULE:APP [options]`` (uvicorn and gunicorn spellings).

Settings come from, lowest priority first: defaults, ``WEB_CONCURRENCY`` (the workers'
default, as uvicorn and gunicorn read it), ``--config FILE`` (TOML), ``SIDECAR_*``
environment variables, flags.  Any mistake is one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tomllib
from dataclasses import fields

from sidecar import version
from sidecar.config import EXIT_USAGE, Config


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line, not usage + error
        raise UsageError(message)


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = 1
    if t and t[-1] in units:
        mult, t = units[t[-1]], t[:-1]
    try:
        value = int(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 65536, 64k, 4m)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"negative size: {text!r}")
    return value


def _mode(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None


def _mib(text: str) -> int:
    """MiB: a plain number is MiB (512), a suffixed one a size (512m, 2g)."""
    t = text.strip()
    if t.isdigit():
        return int(t)
    value = _size(t)
    if value and value < 1 << 20:
        raise argparse.ArgumentTypeError(f"less than 1 MiB: {text!r}")
    return value >> 20


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sidecar", description="ASGI server: a front-end process and a worker pool "
                "joined by shared-memory rings.",
                epilog="`sidecar status --help`: ask a running server about its workers; "
                       "`sidecar reload --help`: replace them, waiting until the new ones serve.")
    p.add_argument("app", nargs="?", help="the ASGI app, MODULE:ATTRIBUTE (default: the demo)")
    p.add_argument("--version", "-V", action="version", version=f"sidecar {version()} "
                   f"(Python {sys.version.split()[0]})")
    p.add_argument("--config", metavar="FILE", help="TOML file with settings (keys as flags)")
    p.add_argument("--uds", metavar="PATH", help="listen on this Unix socket")
    p.add_argument("--uds-mode", type=_mode, metavar="OCTAL", help="Unix socket mode (660)")
    p.add_argument("--bind", "-b", action="append", metavar="HOST:PORT",
                   help="listen on TCP (repeatable)")
    p.add_argument("--host", metavar="HOST",
                   help="with --port: uvicorn's spelling of --bind HOST:PORT (127.0.0.1)")
    p.add_argument("--port", type=int, metavar="PORT",
                   help="with --host: uvicorn's spelling of --bind HOST:PORT (8000)")
    p.add_argument("--fd", action="append", type=int, metavar="N",
                   help="listen on an inherited socket descriptor (repeatable)")
    p.add_argument("--control", metavar="PATH",
                   help="control socket for `sidecar status` (auto: $RUNTIME_DIRECTORY/"
                        "control.sock, UDS.ctl, else HOST:PORT.ctl in /run/sidecar (root) or "
                        "$XDG_RUNTIME_DIR/sidecar; off)")
    p.add_argument("--no-control", dest="control", action="store_const", const="off")
    p.add_argument("--pid", dest="pid_file", metavar="FILE",
                   help="write the front-end's pid to FILE (removed at exit), as gunicorn's --pid")
    p.add_argument("--metrics", metavar="HOST:PORT|PATH",
                   help="serve Prometheus metrics at /metrics on this TCP address or Unix socket")
    p.add_argument("--ssl-certfile", metavar="FILE",
                   help="serve TLS on the TCP listeners with this PEM certificate (chain)")
    p.add_argument("--ssl-keyfile", metavar="FILE", help="its private key (if not in the certfile)")
    p.add_argument("--ssl-keyfile-password", metavar="PASSWORD", help="the key's password")
    p.add_argument("--ssl-ca-certs", metavar="FILE", help="CA certificates for client certificates")
    p.add_argument("--ssl-cert-reqs", type=int, metavar="N",
                   help="client certificates: 0 none, 1 optional, 2 required (0)")
    p.add_argument("--ssl-ciphers", metavar="LIST", help="OpenSSL cipher list (OpenSSL's default)")
    p.add_argument("--attach-socket", metavar="PATH",
                   help="let other hosts (C, Node.js) attach to the workers on this socket")
    p.add_argument("--workers", "-w", type=int, metavar="N", help="worker processes (cores)")
    p.add_argument("--frontends", type=int, metavar="N",
                   help="front-end processes sharing the listeners and the workers "
                        "(0: about half the cores, 1 on up to 3)")
    p.add_argument("--frontend-balance", choices=["concentrate", "hash"],
                   help="new TCP connections with several front-ends: to the first one "
                        "until it is saturated, or spread by the kernel's hash (concentrate)")
    p.add_argument("--factory", action="store_true", default=None,
                   help="APP is a callable returning the app")
    p.add_argument("--app-dir", metavar="DIR", help="put DIR on sys.path (.)")
    p.add_argument("--reload", action="store_true", default=None,
                   help="development: reload the workers when a .py file changes")
    p.add_argument("--reload-dir", dest="reload_dirs", action="append", metavar="DIR",
                   help="watch DIR for --reload (repeatable; default: --app-dir)")
    p.add_argument("--root-path", metavar="PATH", help="ASGI root_path (mounted under a prefix)")
    p.add_argument("--env-file", metavar="FILE", help="KEY=VALUE lines added to the environment")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--log-config", metavar="FILE",
                   help="logging setup applied over the defaults in every process: a "
                        "dictConfig in .json/.toml, or a fileConfig .ini")
    p.add_argument("--access-log", dest="access_log", action="store_true", default=None)
    p.add_argument("--no-access-log", dest="access_log", action="store_false")
    p.add_argument("--access-log-format", metavar="FORMAT",
                   help="combined (default), a template of {fields} ('{client} \"{request}\" "
                        "{status} {header:x-request-id}'), json, or json:FIELD,KEY=FIELD,...")
    p.add_argument("--lifespan", choices=["auto", "on", "off"])
    p.add_argument("--interface", choices=["auto", "asgi", "wsgi"],
                   help="the app's interface (auto: WSGI if it is a plain callable of two "
                        "positional parameters, else ASGI)")
    p.add_argument("--wsgi-threads", type=int, metavar="N",
                   help="threads per worker for a WSGI app (8); with --interface wsgi, also "
                        "the streams a worker takes at once")
    p.add_argument("--forwarded-allow-ips", metavar="LIST",
                   help="comma-separated peers trusted for X-Forwarded-*/Forwarded ('*', 'unix')")
    # the positive forms are the defaults, accepted as uvicorn accepts them
    p.add_argument("--proxy-headers", dest="proxy_headers", action="store_true", default=None)
    p.add_argument("--no-proxy-headers", dest="proxy_headers", action="store_false")
    p.add_argument("--server-header", dest="server_header", action="store_true", default=None)
    p.add_argument("--no-server-header", dest="server_header", action="store_false")
    p.add_argument("--header", dest="headers", action="append", metavar="'NAME: VALUE'",
                   help="add this field to every response from the app (repeatable)")
    p.add_argument("--date-header", dest="date_header", action="store_true", default=None)
    p.add_argument("--no-date-header", dest="date_header", action="store_false")
    p.add_argument("--backlog", type=int, metavar="N")
    p.add_argument("--ring-capacity", type=_size, metavar="BYTES", help="per ring (4m)")
    p.add_argument("--window", type=_size, metavar="BYTES", help="per-stream flow window (256k)")
    p.add_argument("--max-request-line", type=_size, metavar="BYTES")
    p.add_argument("--max-header-bytes", type=_size, metavar="BYTES")
    p.add_argument("--max-headers", type=int, metavar="N")
    p.add_argument("--max-body", type=_size, metavar="BYTES")
    p.add_argument("--limit-concurrency", type=int, metavar="N",
                   help="connections beyond N get 503 (0 = no limit)")
    p.add_argument("--limit-streams", type=int, metavar="N",
                   help="requests and WebSockets in flight beyond N get 503 (0 = no limit)")
    p.add_argument("--limit-worker-streams", type=int, metavar="N",
                   help="streams in flight per worker; more wait for a worker (1000)")
    p.add_argument("--ws-max-size", type=_size, metavar="BYTES",
                   help="largest WebSocket message (16m); larger: close 1009")
    p.add_argument("--ws-ping-interval", type=float, metavar="S",
                   help="WebSocket keepalive ping interval (20; 0 = off)")
    p.add_argument("--ws-ping-timeout", type=float, metavar="S",
                   help="close a WebSocket whose peer does not answer a ping in time (20)")
    p.add_argument("--ws-per-message-deflate", dest="ws_per_message_deflate",
                   action="store_true", default=None,
                   help="negotiate permessage-deflate compression (default)")
    p.add_argument("--no-ws-per-message-deflate", dest="ws_per_message_deflate",
                   action="store_false")
    p.add_argument("--http2", dest="http2", action="store_true", default=None,
                   help="serve HTTP/2: prior knowledge (h2c) and ALPN h2 (default)")
    p.add_argument("--no-http2", dest="http2", action="store_false",
                   help="HTTP/1.1 only")
    p.add_argument("--h2-max-concurrent-streams", type=int, metavar="N",
                   help="HTTP/2 streams open at once per connection (100)")
    p.add_argument("--h2-max-control-frames", type=int, metavar="N",
                   help="HTTP/2 SETTINGS/PING/PRIORITY/empty DATA frames a second "
                        "before GOAWAY (1000)")
    p.add_argument("--h2-max-resets", type=int, metavar="N",
                   help="HTTP/2 streams a client may reset a second before GOAWAY (200)")
    p.add_argument("--timeout-keep-alive", dest="keepalive_timeout", type=float, metavar="S")
    p.add_argument("--timeout-header", dest="header_timeout", type=float, metavar="S",
                   help="a request head must arrive within S of its first byte (60)")
    p.add_argument("--timeout-body", dest="body_timeout", type=float, metavar="S",
                   help="longest pause in a request body the app waits for (60)")
    p.add_argument("--timeout-send", dest="send_timeout", type=float, metavar="S",
                   help="abort a client that takes no response bytes for S (60)")
    p.add_argument("--timeout-request", dest="request_timeout", type=float, metavar="S",
                   help="504 for a request with no response start S seconds after it was "
                        "received; the app is told http.disconnect, then cancelled (0 = off)")
    p.add_argument("--timeout-graceful-shutdown", dest="shutdown_timeout", type=float,
                   metavar="S")
    p.add_argument("--drain-grace", dest="drain_grace", type=float, metavar="S",
                   help="event streams (SSE) still running S seconds into a drain are told "
                   "http.disconnect and ended cleanly (1)")
    p.add_argument("--timeout-worker-start", dest="worker_start_timeout", type=float,
                   metavar="S")
    p.add_argument("--timeout-dispatch", dest="dispatch_timeout", type=float, metavar="S",
                   help="a stream no worker can take waits this long, then 503 (30)")
    p.add_argument("--timeout-worker-hang", dest="worker_hang_timeout", type=float,
                   metavar="S", help="kill a worker whose event loop is blocked this long "
                   "(30; 0 = off)")
    p.add_argument("--max-requests", "--limit-max-requests", type=int, metavar="N",
                   help="recycle a worker after N requests (0 = never)")
    p.add_argument("--max-requests-jitter", type=int, metavar="N",
                   help="add 0..N (random, per worker) to --max-requests")
    p.add_argument("--max-worker-memory", type=_mib, metavar="MIB",
                   help="recycle a worker whose RSS goes above this many MiB (0 = no limit)")
    return p


def _coerce(name: str, value, default):
    """Turn a TOML or environment value into the type of the field's default."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{name}: expected true or false, got {value!r}")
    if isinstance(default, list):
        # a field value may hold commas: SIDECAR_HEADERS takes one field per line
        sep = "\n" if name == "headers" else ","
        items = value if isinstance(value, list) else [
            v for v in str(value).split(sep) if v.strip()]
        return [int(v) for v in items] if name == "fd" else [str(v) for v in items]
    if name == "uds_mode":
        return value if isinstance(value, int) else _mode(str(value))
    if name == "max_worker_memory" and not isinstance(value, int):
        try:
            return _mib(str(value))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"{name}: {exc}") from None
    if isinstance(default, int) and not isinstance(default, bool) or name == "max_body":
        if isinstance(value, int):
            return value
        try:
            return _size(str(value))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"{name}: {exc}") from None
    if isinstance(default, float):
        try:
            return float(value)
        except ValueError:
            raise UsageError(f"{name}: expected a number, got {value!r}") from None
    return str(value)


def load_config(argv: list[str] | None = None, environ=os.environ) -> Config:
    args = build_parser().parse_args(argv)
    config = Config()
    defaults = {f.name: getattr(config, f.name) for f in fields(Config)}
    settings: dict = {}
    # WEB_CONCURRENCY (Heroku's convention, read by uvicorn and gunicorn): the workers' default,
    # under everything sidecar's own
    web_concurrency = environ.get("WEB_CONCURRENCY")
    if web_concurrency is not None:
        try:
            settings["workers"] = int(web_concurrency)
        except ValueError:
            raise UsageError(f"WEB_CONCURRENCY must be a number of workers, "
                             f"got {web_concurrency!r}") from None
    if args.config:
        try:
            with open(args.config, "rb") as fh:
                table = tomllib.load(fh)
        except OSError as exc:
            raise UsageError(f"cannot read config file {args.config}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"config file {args.config}: {exc}") from None
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in defaults:
                raise UsageError(f"config file {args.config}: unknown setting {key!r}")
            settings[name] = _coerce(name, value, defaults[name])
    for name in defaults:
        env = environ.get("SIDECAR_" + name.upper())
        if env is not None:
            settings[name] = _coerce(name, env, defaults[name])
    host, port = args.host, args.port
    for name, value in vars(args).items():
        if value is None or name in ("config", "host", "port"):
            continue
        if name == "forwarded_allow_ips":
            value = [v.strip() for v in value.split(",") if v.strip()]
        settings[name] = value
    for name, value in settings.items():
        setattr(config, name, value)
    if host is not None or port is not None:   # one more TCP listener, as uvicorn's flags
        host = "127.0.0.1" if host is None else host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        config.bind = [*config.bind, f"{host}:{8000 if port is None else port}"]
    if ":" not in config.app:
        raise UsageError(f"app must be MODULE:ATTRIBUTE, got {config.app!r}")
    if config.workers < 0:
        raise UsageError("--workers must be 0 (one per core) or more")
    from sidecar.load_board import MAX_FRONTENDS
    if not 0 <= config.frontends <= MAX_FRONTENDS:
        raise UsageError(f"--frontends must be 0 (from the core count) to {MAX_FRONTENDS}")
    if config.frontend_balance not in ("concentrate", "hash"):
        raise UsageError("--frontend-balance must be concentrate or hash, not "
                         f"{config.frontend_balance!r}")
    if config.window < 4096:
        raise UsageError("--window must be at least 4k")
    if config.ws_max_size < 1:
        raise UsageError("--ws-max-size must be at least 1")
    if config.ws_ping_interval < 0 or config.ws_ping_timeout <= 0:
        raise UsageError("--ws-ping-interval must be >= 0 and --ws-ping-timeout > 0")
    for name in ("h2_max_concurrent_streams", "h2_max_control_frames", "h2_max_resets"):
        if getattr(config, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("limit_concurrency", "limit_streams", "limit_worker_streams"):
        if getattr(config, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 (no limit) or more")
    for name, flag in (("header_timeout", "--timeout-header"),
                       ("body_timeout", "--timeout-body"),
                       ("send_timeout", "--timeout-send"),
                       ("keepalive_timeout", "--timeout-keep-alive"),
                       ("dispatch_timeout", "--timeout-dispatch")):
        if not getattr(config, name) > 0:
            raise UsageError(f"{flag} must be a positive number of seconds")
    if not config.request_timeout >= 0:
        raise UsageError("--timeout-request must be 0 (off) or a positive number of seconds")
    if config.interface not in ("auto", "asgi", "wsgi"):
        raise UsageError(f"--interface must be auto, asgi or wsgi, not {config.interface!r}")
    if config.wsgi_threads < 1:
        raise UsageError("--wsgi-threads must be at least 1")
    if config.interface == "wsgi" and not 0 < config.limit_worker_streams <= config.wsgi_threads:
        # a WSGI stream holds a thread to its end: more on one worker would only queue there,
        # while another worker may have a thread free (they wait in the front-end instead)
        config.limit_worker_streams = config.wsgi_threads
    if config.worker_hang_timeout != 0 and config.worker_hang_timeout < 1:
        raise UsageError("--timeout-worker-hang must be 0 (off) or at least 1 second")
    if config.max_requests < 0 or config.max_requests_jitter < 0 \
            or config.max_worker_memory < 0:
        raise UsageError("--max-requests, --max-requests-jitter and --max-worker-memory "
                         "must be 0 or more")
    config.headers = [check_header_flag(h) for h in config.headers]
    from sidecar.frontend.access_format import compile_format
    try:
        compile_format(config.access_log_format)
    except ValueError as exc:
        raise UsageError(f"--access-log-format: {exc}") from None
    if config.reload_dirs and not config.reload:
        raise UsageError("--reload-dir needs --reload")
    for d in config.reload_dirs:
        if not os.path.isdir(d):
            raise UsageError(f"--reload-dir {d}: not a directory")
    cap = config.ring_capacity
    if cap < 65536 or cap & (cap - 1) or cap > 1 << 30:
        raise UsageError("--ring-capacity must be a power of two from 64k to 1g")
    return config


#: fields a --header may not set: the server writes them from the response itself
FRAMING_FIELDS = ("content-length", "transfer-encoding", "connection", "date")


def check_header_flag(text: str) -> str:
    """A --header value, ``NAME: VALUE`` (or ``NAME:VALUE``), normalized to ``NAME: VALUE``;
    UsageError for a bad name or value, or a field the server owns."""
    from sidecar.http.fields import field_error

    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise UsageError(f"--header {text!r}: expected 'NAME: VALUE'")
    error = field_error(name.encode("latin-1", "replace"), value.encode("latin-1", "replace"))
    if error is not None or not value.isprintable() or not value.isascii():
        raise UsageError(f"--header {text!r}: {error or 'the value must be printable ASCII'}")
    if name.lower() in FRAMING_FIELDS:
        raise UsageError(f"--header {text!r}: {name} is the server's to write")
    return f"{name}: {value}"


def load_env_file(path: str) -> None:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read env file {path}: {exc.strerror}") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:]
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(f"env file {path}:{n}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ[key.strip()] = value


def apply_logging(config) -> str | None:
    """setup_logging, then --log-config's dictConfig over it (the front-end and every extra
    front-end process, sidecar/frontend/child.py); the error's text if that cannot be
    applied, else None."""
    setup_logging(config.log_level, config.access_log)
    if config.log_config:
        from sidecar import logconfig
        try:
            logconfig.apply(logconfig.load(config.log_config))
        except logconfig.LogConfigError as exc:
            return str(exc)
    return None


def setup_logging(level: str, access_log: bool) -> None:
    fmt = logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.handlers[:] = []
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    root.addHandler(err)
    root.setLevel(level.upper())
    access = logging.getLogger("sidecar.access")
    access.propagate = False
    access.handlers[:] = []
    if access_log:
        from sidecar.frontend.access import StdoutHandler
        access.addHandler(StdoutHandler())
        access.setLevel(logging.INFO)
    else:
        access.setLevel(logging.CRITICAL + 1)


def raise_fd_limit() -> None:
    """Every client connection is a descriptor: lift the soft RLIMIT_NOFILE to the hard limit
    (systemd and most shells start services with a soft limit of 1024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # keep the limit we have: it is not an error to run with it


def _open_ops(config: Config, uds: str | None, sockets: list[socket.socket]):
    """The control socket and the metrics endpoint (opened before the workers: fail fast)."""
    from sidecar.frontend import control, metrics

    path = config.control
    ctl = None
    if path == "auto":
        path = control.default_path(uds, sockets=sockets)
        if path and os.path.dirname(path) == control.runtime_dir():
            # a TCP-only server's: a runtime directory that cannot take it (a read-only /run
            # in a sandbox) only costs `sidecar status`, not the start
            try:
                ctl = control.open_in_runtime_dir(path, 64)
            except control.Unusable as exc:
                logging.getLogger("sidecar").warning("no control socket: %s", exc)
                path = None
    if ctl is None and path and path != "off":
        ctl = control.open_socket(path, 64)
    try:
        met = metrics.open_endpoint(config.metrics, 64) if config.metrics else None
    except BaseException:
        if ctl is not None:
            ctl.close()
            os.unlink(path)
        raise
    owned = ([path] if ctl is not None else []) + \
        ([config.metrics] if met is not None and met.family == socket.AF_UNIX else [])
    return ctl, met, owned


def _frontend_sockets(config: Config, sockets: list[socket.socket],
                      own_tcp: list[socket.socket]) -> list[list[socket.socket]] | None:
    """--frontends N > 1: the listeners of front-ends 1 … N-1.  A TCP socket sidecar opened
    itself (in ``own_tcp``, bound with SO_REUSEPORT) gets a twin per front-end, bound to the
    same address, in this order (socket k of the SO_REUSEPORT group is front-end k's:
    balance.py steers by it), and each front-end wakes only for its own.  A Unix socket and an inherited one are shared (a duplicate descriptor
    each): every front-end waits on the same queue (docs/operations.md, "Front-ends")."""
    from sidecar.frontend import listeners

    n = config.resolved_frontends()
    if n <= 1:
        return None
    out = []
    for _ in range(n - 1):
        mine = []
        try:
            for sock in sockets:
                mine.append(listeners.reuseport_twin(sock, config.backlog)
                            if any(sock is t for t in own_tcp) else sock.dup())
        except listeners.ListenerError:
            for s in mine + [s for each in out for s in each]:
                s.close()
            raise
        out.append(mine)
    return out


def write_pid_file(path: str) -> None:
    """The front-end's pid, written whole (a temporary file renamed over the path)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pid_file(path: str) -> None:
    """Remove the pid file if it still names this process (another may have taken it)."""
    try:
        with open(path) as fh:
            if fh.read().strip() == str(os.getpid()):
                os.unlink(path)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    from sidecar.frontend import listeners
    from sidecar.systemd import Notifier

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:
        from sidecar.status import main as status_main
        return status_main(argv[1:])
    if argv[:1] == ["reload"]:
        from sidecar.status import reload_main
        return reload_main(argv[1:])
    from sidecar.frontend import tls

    try:
        config = load_config(argv)
        if config.env_file:
            load_env_file(config.env_file)
        tls_context = tls.server_context(config)
    except (UsageError, tls.TLSConfigError) as exc:
        print(f"sidecar: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    error = apply_logging(config)
    if error is not None:
        print(f"sidecar: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if config.pid_file:
        try:
            write_pid_file(config.pid_file)
        except OSError as exc:
            print(f"sidecar: error: cannot write the pid file {config.pid_file}: "
                  f"{exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    try:
        raise_fd_limit()
        # systemd's variables are read (and removed, so workers do not inherit them) before anything
        notifier = Notifier()
        sockets = []
        try:
            sockets += listeners.from_systemd()
        except listeners.ListenerError as exc:
            print(f"sidecar: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        # socket activation replaces the default listeners; explicit ones are added to it
        uds, binds, fds = config.listeners() if not sockets else \
            (config.uds, list(config.bind), list(config.fd))
        ctl = met = None
        uds_opened = False
        attach_sock = None
        own_tcp: list[socket.socket] = []
        try:
            for fd in fds:
                sockets.append(listeners.from_fd(fd))
            reuseport = config.resolved_frontends() > 1
            for spec in binds:
                own_tcp.append(listeners.open_tcp(spec, config.backlog, reuseport=reuseport))
                sockets.append(own_tcp[-1])
            if uds:
                sockets.append(listeners.open_uds(uds, config.uds_mode, config.backlog))
                uds_opened = True
            if config.attach_socket:
                from sidecar.frontend.attach import open_attach_socket
                attach_sock = open_attach_socket(config.attach_socket, config.uds_mode)
            ctl, met, owned = _open_ops(config, uds, sockets)
            frontend_sockets = _frontend_sockets(config, sockets, own_tcp)
        except listeners.ListenerError as exc:
            for s in sockets:
                s.close()
            if attach_sock is not None:
                attach_sock.close()
                os.unlink(config.attach_socket)
            if uds_opened:
                os.unlink(uds)
            print(f"sidecar: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        import uvloop

        from sidecar.frontend.server import FrontEnd

        async def run() -> int:
            return await FrontEnd(config, sockets, owned_paths=([uds] if uds else []) + owned,
                                  notifier=notifier, control_sock=ctl, metrics_sock=met,
                                  attach_sock=attach_sock, tls=tls_context,
                                  frontend_sockets=frontend_sockets,
                                  balance_sockets=own_tcp).run()

        try:
            return uvloop.run(run())
        except KeyboardInterrupt:
            return 1
    finally:
        if config.pid_file:
            remove_pid_file(config.pid_file)


if __name__ == "__main__":
    sys.exit(main())
