"""Start and stop the servers under test, and drive them with wrk.

Every server runs with the current interpreter, in its own process group, with its output in a
temporary log file (a pipe nobody reads would eventually block it).  Readiness is a TCP connect
plus a GET that answers, polled until a deadline; stopping is SIGTERM to the whole group, then
SIGKILL after a timeout, so no worker outlives a benchmark.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
KINDS = ("sidecar", "uvicorn", "granian", "hypercorn", "gunicorn", "gunicorn-gthread",
         "floor", "nginx")
# Baselines, not ASGI servers: they answer every request with a canned hello and ignore the
# app, so they belong beside the bare app only.  ``floor``: uvloop and a protocol that writes
# the answer (benchmarks/floor.py), the cost of the loop and the socket calls a front-end on
# uvloop cannot go below; ``nginx``: nginx's own ``return 200``, the same floor in C.
BASELINES = ("floor", "nginx")
GTHREADS = 8   # gunicorn's gthread threads, as sidecar's --wsgi-threads default


def sidecar_flags(kind: str) -> tuple[str, list[str]]:
    """``sidecar+NAME=VALUE+...`` (or ``sidecar@DIR+...``): a sidecar started with
    ``--NAME VALUE`` too, e.g. ``sidecar+frontends=2`` beside ``sidecar`` in one run.
    Returns the kind without its flags, and the flags."""
    base, *extra = kind.split("+")
    flags = []
    for item in extra:
        name, _, value = item.partition("=")
        flags += [f"--{name}"] + ([value] if value else [])
    return base, flags


def checkout_of(kind: str) -> Path | None:
    """``sidecar@DIR``: the sidecar of another checkout (its own .venv), e.g. a worktree of
    the previous main, measured beside this one in the same run; None for any other kind."""
    kind = sidecar_flags(kind)[0]
    if kind.startswith("sidecar@"):
        return Path(kind[len("sidecar@"):]).resolve()
    return None


def base_kind(kind: str) -> str:
    """The server a kind runs: ``sidecar@DIR`` and ``sidecar+...`` are sidecars."""
    return "sidecar" if checkout_of(kind) is not None else sidecar_flags(kind)[0]


def check_kinds(kinds: list[str]) -> str | None:
    """An error message for the first kind that is neither known nor a usable checkout."""
    for kind in kinds:
        root = checkout_of(kind)
        if root is not None:
            if not (root / ".venv" / "bin" / "python").exists():
                return f"{kind}: no .venv/bin/python in {root} (run scripts/setup.sh there)"
        elif sidecar_flags(kind)[0] not in KINDS:
            return f"unknown server {kind!r}; expected some of {','.join(KINDS)} or sidecar@DIR"
        elif "+" in kind and base_kind(kind) != "sidecar":
            return f"{kind}: only sidecar takes +FLAG=VALUE"
    return None


class ServerStartError(RuntimeError):
    """The server exited or did not answer before the deadline."""


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed something we cannot parse."""


@dataclass
class ServerHandle:
    kind: str
    app: str
    port: int
    workers: int
    process: subprocess.Popen
    workdir: Path  # holds the log (and sidecar's Unix socket); removed by stop_server
    argv: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def server_argv(kind: str, app: str, port: int, workers: int, workdir: Path,
                access_log: bool | str = False, interface: str = "asgi",
                http2: bool = False) -> list[str]:
    """The command line for ``kind`` serving ``app`` on 127.0.0.1:``port``; with
    ``access_log``, each server's access log on (to its stdout: a file in ``workdir``); a
    string is sidecar's --access-log-format.  ``interface``: asgi, or wsgi (sidecar and
    granian; gunicorn is WSGI only).  ``http2``: HTTP/2 by prior knowledge too (sidecar and
    hypercorn always serve it)."""
    root = checkout_of(kind)
    python = [str(root / ".venv" / "bin" / "python") if root else sys.executable, "-m"]
    log = "--access-log" if access_log else "--no-access-log"
    if base_kind(kind) == "sidecar":
        # An explicit socket path in our own directory, so a benchmark never collides with a
        # demo running on the default ./sidecar.sock.
        return python + [
            "sidecar", app,
            "--bind", f"{HOST}:{port}",
            "--uds", str(workdir / "sidecar.sock"),
            "--workers", str(workers),
            log, "--log-level", "warning",
        ] + sidecar_flags(kind)[1] \
          + (["--access-log-format", access_log] if isinstance(access_log, str) else []) \
          + (["--interface", "wsgi"] if interface == "wsgi" else [])
    if kind == "uvicorn":
        return python + [
            "uvicorn", app,
            "--host", HOST, "--port", str(port),
            "--workers", str(workers),
            "--http", "httptools", "--loop", "uvloop",
            log, "--log-level", "warning",
        ]  # fmt: skip
    if kind == "granian":
        # granian's default interface is RSGI; its access log is off by default but we say
        # so.  --http 1: HTTP/1.1 only, like the others; WebSockets stay on, like the others.
        return python + [
            "granian", app,
            "--interface", interface,
            "--host", HOST, "--port", str(port),
            "--workers", str(workers),
            "--http", "auto" if http2 else "1", "--loop", "uvloop",
            log, "--log-level", "warning",
        ]  # fmt: skip
    if kind in ("gunicorn", "gunicorn-gthread"):
        worker = ["-k", "sync"] if kind == "gunicorn" else ["-k", "gthread", "--threads",
                                                           str(GTHREADS)]
        return python + [
            "gunicorn", app,
            "--bind", f"{HOST}:{port}",
            "--workers", str(workers), *worker,
            "--log-level", "warning",
        ] + (["--access-logfile", "-"] if access_log else [])
    if kind == "hypercorn":
        # HTTP/1.1 and h2c (prior knowledge) on one port; its access log only when asked.
        # Its keep_alive_max_requests (1000 by default, a config-file setting) closes a
        # connection after 1000 requests: h2load does not reconnect, so each of its
        # connections would stop there (a run of seconds served ~0-300 req/s, h2load
        # counting the rest failed).  None of the others caps requests per connection.
        conf = workdir / "hypercorn.toml"
        conf.write_text("keep_alive_max_requests = 1000000000\n")
        return python + [
            "hypercorn", app,
            "--config", str(conf),
            "--bind", f"{HOST}:{port}",
            "--workers", str(workers),
            "--worker-class", "uvloop",
            "--log-level", "warning",
        ] + (["--access-logfile", "-"] if access_log else [])  # fmt: skip
    if kind == "floor":
        return python + ["benchmarks.floor", "--host", HOST, "--port", str(port)]
    if kind == "nginx":
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(workers=workers, dir=workdir, host=HOST, port=port))
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", str(workdir),
                "-e", str(workdir / "error.log")]
    raise ValueError(f"unknown server kind {kind!r}; expected one of {KINDS}")


# The ``nginx`` baseline: ``workers`` worker processes answering a fixed hello, keep-alive
# without a request limit (wrk's connections stay open, as with the others), no access log.
NGINX_CONF = """
daemon off;
worker_processes {workers};
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port};
        location / {{ default_type text/plain; return 200 "Hello, world!"; }}
    }}
}}
"""


def start_server(
    kind: str,
    app: str,
    port: int | None = None,
    workers: int = 1,
    *,
    ready_path: str = "/",
    timeout: float = 30.0,
    access_log: bool | str = False,
    interface: str = "asgi",
    http2: bool = False,
) -> ServerHandle:
    """Start ``kind`` serving ``app`` and return once ``GET ready_path`` answers.

    Raises ServerStartError (with the end of the server's log) if it exits or is not ready
    within ``timeout`` seconds; the process group is stopped before raising.
    """
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{base_kind(kind)}-"))
    argv = server_argv(kind, app, port, workers, workdir, access_log, interface, http2)
    env = dict(os.environ)
    # the benchmark apps come from this checkout; a sidecar@DIR runs its own package
    paths = [str(checkout_of(kind) or REPO_ROOT), str(REPO_ROOT), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(workdir / "server.log", "wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=checkout_of(kind) or REPO_ROOT,  # python -m puts the cwd first on sys.path
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we can stop every worker at once
        )
    handle = ServerHandle(kind, app, port, workers, process, workdir, argv)
    try:
        _wait_ready(handle, ready_path, time.monotonic() + timeout)
    except BaseException:
        stop_server(handle)
        raise
    return handle


def _wait_ready(handle: ServerHandle, path: str, deadline: float) -> None:
    last_error = "no attempt"
    while True:
        code = handle.process.poll()
        if code is not None:
            raise ServerStartError(
                f"{handle.kind} exited with code {code}: {_last_line(handle.log_tail())}",
            )
        try:
            status = _probe(handle.port, path)
            if status < 500:
                return
            last_error = f"GET {path} answered {status}"
        except OSError as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise ServerStartError(f"{handle.kind} not ready in time ({last_error})")
        time.sleep(0.05)


def _probe(port: int, path: str) -> int:
    """TCP connect then one GET; return the status.  OSError if either fails."""
    with socket.create_connection((HOST, port), timeout=1.0):
        pass
    conn = http.client.HTTPConnection(HOST, port, timeout=5.0)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except http.client.HTTPException as exc:
        raise OSError(str(exc)) from exc
    finally:
        conn.close()


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def stop_server(handle: ServerHandle, timeout: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL whatever is left after ``timeout``."""
    process = handle.process
    try:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        # Also reaps workers the leader left behind, even after a clean exit.
        _signal_group(process, signal.SIGKILL)
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            pass
    finally:
        shutil.rmtree(handle.workdir, ignore_errors=True)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    # start_new_session made the server the leader of a group whose id is its pid.
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- wrk ------------------------------------------------------------------------------------

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_LATENCY_LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m|h)\s*$", re.M)
_REQ_S = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.M)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def run_wrk(
    url: str,
    connections: int,
    duration: float,
    threads: int = 2,
    script: str | None = None,
    *,
    timeout: float = 10.0,
    headers: tuple[str, ...] = (),
) -> dict:
    """Run ``wrk --latency`` against ``url`` and return its figures.

    Returns ``{"req_s", "p50_ms", "p99_ms", "errors", "requests"}``; errors counts socket
    errors (connect, read, write, timeout) plus non-2xx/3xx responses.  ``timeout`` is the
    slack allowed past ``duration`` before wrk is killed.  ``headers``: ``"Name: value"``
    lines added to every request (wrk -H).
    """
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkError("wrk is not installed (apt-get install wrk)")
    seconds = max(1, round(duration))
    threads = max(1, min(threads, connections))  # wrk refuses more threads than connections
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        argv += ["-s", script]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + timeout)
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish within {seconds + timeout:.0f} s") from None
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {(done.stderr or done.stdout).strip()}")
    return parse_wrk(done.stdout)


def parse_wrk(output: str) -> dict:
    """Parse the text of ``wrk --latency``; see run_wrk for the keys."""
    percentiles = {
        float(pct): float(value) * _UNITS_MS[unit]
        for pct, value, unit in _LATENCY_LINE.findall(output)
    }
    req_s = _REQ_S.search(output)
    if req_s is None or 50.0 not in percentiles or 99.0 not in percentiles:
        raise WrkError(f"unexpected wrk output:\n{output.strip()}")
    requests = _REQUESTS.search(output)
    errors = 0
    socket_errors = _SOCKET_ERRORS.search(output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = _NON_2XX.search(output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return {
        "req_s": float(req_s.group(1)),
        "p50_ms": percentiles[50.0],
        "p99_ms": percentiles[99.0],
        "errors": errors,
        "requests": int(requests.group(1)) if requests else None,
    }


# -- h2load ---------------------------------------------------------------------------------


def run_h2load(url: str, connections: int, streams: int, duration: float, warmup: float,
               threads: int = 2, paths: int = 0) -> dict:
    """h2load over h2c (prior knowledge): ``connections`` x ``streams`` concurrent requests
    for ``duration`` s after ``warmup`` s.  Latency percentiles come from its per-request
    log (h2load prints only min/max/mean).  ``paths``: each request one of that many URLs
    in turn, ``url``/i?page=i%7 (an API's ids: a new :path, as HPACK literals, each time)."""
    if shutil.which("h2load") is None:
        raise WrkError("h2load is not installed (apt-get install nghttp2-client)")
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        log_path = Path(tmp) / "requests.tsv"
        if paths:
            urls = Path(tmp) / "urls.txt"
            base = url.rstrip("/")
            urls.write_text("".join(f"{base}/{i}?page={i % 7}\n" for i in range(paths)))
            target = ["-i", str(urls)]
        else:
            target = [url]
        argv = ["h2load", "-c", str(connections), "-m", str(streams), "-t", str(threads),
                "-D", str(int(duration)), "--warm-up-time", str(int(warmup) or 1),
                "--log-file", str(log_path), *target]
        try:
            out = subprocess.run(argv, capture_output=True, text=True,
                                 timeout=duration + warmup + 60)
        except subprocess.TimeoutExpired:
            raise WrkError("h2load did not finish") from None
        text = out.stdout + out.stderr
        match = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", text)
        counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                           r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
        status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
        if out.returncode != 0 or not match or not counts:
            raise WrkError(f"h2load failed: {text.strip()[-300:]}")
        times = []
        try:
            for line in log_path.read_text().splitlines():
                fields = line.split("\t")
                if len(fields) >= 3:
                    times.append(int(fields[2]) / 1000.0)
        except OSError:
            pass
    times.sort()

    def pct(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")

    errors = int(counts.group(3)) + int(counts.group(4)) + int(counts.group(5))
    if status:
        errors += int(status.group(3)) + int(status.group(4))
    return {"req_s": float(match.group(1)), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "errors": errors}
