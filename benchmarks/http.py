"""HTTP benchmark: sidecar against uvicorn, granian and hypercorn, same app, same machine, same
run.

    python -m benchmarks.http                      # every scenario, 10 s per measurement
    python -m benchmarks.http --duration 3 --only bare --servers sidecar,uvicorn
    python -m benchmarks.http --json > result.json

Scenarios (see SCENARIOS at the bottom; add one there, e.g. for WebSockets):

- ``bare``: the bare ASGI hello app, ``wrk -c64`` on ``/``. Server overhead only.  Under the
  servers, two baselines that ignore the app and answer a canned hello (``floor``: uvloop and
  a protocol that only writes, benchmarks/floor.py; ``nginx``: its own ``return 200``): the
  ceiling of this machine's loopback for a server that does nothing.
- ``close``: ``bare`` with ``Connection: close`` on every request, so each is a new
  connection: what accepting, setting up and closing one costs (nginx's ``proxy_pass``
  without ``keepalive`` upstreams, or past their idle cache, connects so).
- ``logged``: ``bare`` with every server's access log on, as sidecar and uvicorn start by
  default (granian's is off by default): one line per request to the server's stdout, a file.
- ``logged_json``: ``logged`` for sidecar alone, its lines in JSON (``--access-log-format
  json``): what the JSON mode costs, beside ``logged``'s default line.
- ``starlette``: the same through Starlette.
- ``dispatch``: 8 keep-alive connections send paced ``/fast`` requests; once they are open,
  a second wrk keeps ``/cpu`` busy (20 ms of CPU per request, blocking a worker's event loop).
  A server that dispatches each request to the least loaded worker keeps ``/fast`` quick; one
  whose workers each own the connections the kernel gave them makes part of ``/fast`` wait
  behind ``/cpu``. The figure is p99 of ``/fast``: lower is better. Where the kernel puts
  the connections of a per-connection server changes from start to start, so each server is
  measured three times (``--rounds``), interleaved, and its median round is shown.
- ``wsgi``: a bare WSGI hello: sidecar ``--interface wsgi`` (8 threads a worker) against
  gunicorn's sync worker, its gthread worker (8 threads) and granian's WSGI interface.
- ``h2_bare``, ``h2_starlette``: the same apps over HTTP/2 in cleartext (prior knowledge),
  ``h2load`` with ``--h2-connections`` (4) x ``--h2-streams`` (16); sidecar against the
  servers that speak HTTP/2, hypercorn and granian (``--http auto``); three rounds, the
  median shown. p50/p99 come from h2load's per-request log.  ``h2_paths``: ``h2_bare`` with
  each request one of 5000 paths, as an API's ids make them: every request head is new to
  the server (HPACK literals, a new request head to check and pack).
- ``ws_echo``: ``--connections`` WebSockets to the bare app's echo, each sending a 64-byte
  text message and awaiting its echo in a loop (a Python ``websockets`` client on uvloop, in
  this process: it costs CPU too, alike for every server). req/s = messages echoed per second.
  Also, per message, from the server's processes during the counted seconds
  (benchmarks/_procstat.py): bells/msg, the ring doorbells (eventfd writes to wake a sleeping
  reader, both directions; sidecar only, from its control socket); ctxsw/msg, context
  switches (voluntary + nonvoluntary, /proc/PID/status, every process of the server); CPU
  µs/msg of the server and of the client, and msgs/CPU-s (messages per second of the server's
  CPU: less disturbed by other load than msgs/s); cores busy, both together per second of
  the run.  Three rounds, interleaved: req/s is the median round's, and the per-message
  figures are each their own median over the rounds (each round's shown for msgs/CPU-s).

Absolute numbers drift on shared machines: compare rows of one run, not runs.
Every server runs over TCP loopback, started fresh for each measurement, stopped in a
``finally``. A server that fails to start gets a row saying so; the others still run.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks import _procstat
from benchmarks._servers import (
    KINDS,
    base_kind,
    check_kinds,
    ServerHandle,
    ServerStartError,
    WrkError,
    run_h2load,
    run_wrk,
    start_server,
    stop_server,
)


@dataclass
class Options:
    duration: float
    connections: int
    threads: int
    warmup: float
    cpu_connections: int
    fast_connections: int
    fast_delay_ms: int
    h2_connections: int = 4
    h2_streams: int = 16


@dataclass
class Scenario:
    """One measurement, repeated on each server of ``matrix``.

    ``measure(handle, options) -> dict`` must return at least ``req_s``, ``p50_ms``,
    ``p99_ms`` and ``errors``; ``compare`` names the figure the ratio column is made of.
    """

    name: str
    description: str
    app: str
    ready_path: str
    matrix: list[tuple[str, int]]  # (server kind, workers)
    measure: Callable[[ServerHandle, Options], dict]
    compare: str = "req_s"
    # (key, header) or (key, header, format spec; ",.0f" if none)
    extra_columns: list[tuple] = field(default_factory=list)
    rounds: int = 1  # measurements per server (each on a fresh start); the median is shown
    # extra columns shown as their own median over the rounds (not the median round's): figures
    # steadier than req/s on a shared machine; the first also with each round's figure
    medians: tuple[str, ...] = ()
    access_log: bool | str = False  # the servers' access logs on (to a file), as by default;
    # a string: sidecar's --access-log-format
    peers: bool = True  # sidecar@DIR checkouts run too (not for a flag they may not have)
    interface: str = "asgi"  # or wsgi: sidecar --interface wsgi, granian's, gunicorn
    http2: bool = False  # measured over HTTP/2 (h2c, prior knowledge) with h2load


# -- measurements ---------------------------------------------------------------------------


def _warm_up(url: str, options: Options) -> None:
    # Lets every worker finish importing and warm its caches before we count.
    if options.warmup > 0:
        run_wrk(url, options.connections, options.warmup, options.threads)


def measure_throughput(path: str, headers: tuple[str, ...] = ()
                       ) -> Callable[[ServerHandle, Options], dict]:
    def measure(handle: ServerHandle, options: Options) -> dict:
        url = handle.base_url + path
        _warm_up(url, options)
        return run_wrk(url, options.connections, options.duration, options.threads,
                       headers=headers)

    return measure


def measure_h2(path: str, paths: int = 0) -> Callable[[ServerHandle, Options], dict]:
    """h2load over h2c: ``--h2-connections`` connections x ``--h2-streams`` streams each
    (``paths``: over that many distinct paths under ``path``)."""
    def measure(handle: ServerHandle, options: Options) -> dict:
        return run_h2load(handle.base_url + path, options.h2_connections, options.h2_streams,
                          options.duration, options.warmup, options.threads, paths)

    return measure


# Paces each /fast connection: one request, then a pause.  Without it wrk's closed loop lets
# connections on an idle worker send thousands of requests while those stuck behind /cpu send
# fifty, and the slow ones vanish below p99.  wrk does not count the pause as latency.
FAST_PACING_LUA = """
function delay()
  return %d
end
"""


def measure_dispatch(handle: ServerHandle, options: Options) -> dict:
    """p99 of paced /fast requests while another client keeps /cpu (20 ms of CPU each) busy.

    The /fast connections open first, while every worker is idle, so they spread over the
    workers as a keep-alive pool (nginx's, say) would; then the /cpu load starts.  From then
    on a server that binds requests to the worker owning the connection makes some /fast
    requests wait behind /cpu; one that dispatches per request does not.
    """
    fast_url = handle.base_url + "/fast"
    cpu_url = handle.base_url + "/cpu"
    _warm_up(fast_url, options)

    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="pacing-") as script:
        script.write(FAST_PACING_LUA % options.fast_delay_ms)
        script.flush()
        fast = _Background(
            run_wrk, fast_url, options.fast_connections, options.duration, 1, script.name
        )
        # wrk gives no signal once it is connected; a moment is plenty on loopback, and the
        # few unloaded requests it lets in are the same for every server.
        time.sleep(0.3)
        cpu = _Background(run_wrk, cpu_url, options.cpu_connections, options.duration, 1)
        fast.join()
        cpu.join()  # both finished before either failure propagates
        result = fast.result()
        cpu_result = cpu.result()
    result["cpu_req_s"] = cpu_result["req_s"]
    return result


def measure_ws_echo(handle: ServerHandle, options: Options) -> dict:
    """Round trips of small WebSocket messages on many sockets (see the module docstring)."""
    import asyncio

    import uvloop
    from websockets.asyncio.client import connect

    url = handle.base_url.replace("http://", "ws://") + "/"
    payload = "x" * 64

    async def run() -> dict:
        conns = []
        for _ in range(options.connections):
            conns.append(await connect(url, compression=None, open_timeout=30))
        latencies: list[float] = []
        errors = 0
        stop_at = 0.0
        counting = False

        async def loop(ws) -> None:
            nonlocal errors
            perf = time.perf_counter
            while True:
                t0 = perf()
                if t0 >= stop_at:
                    return
                try:
                    await ws.send(payload)
                    await ws.recv()
                except Exception:
                    errors += 1
                    return
                if counting:
                    latencies.append(perf() - t0)

        stop_at = time.perf_counter() + options.warmup
        await asyncio.gather(*(loop(ws) for ws in conns))
        counting = True
        before = _server_snapshot(handle)
        client_cpu = time.process_time()
        started = time.perf_counter()
        stop_at = started + options.duration
        await asyncio.gather(*(loop(ws) for ws in conns))
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        after = _server_snapshot(handle)
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
        latencies.sort()
        n = len(latencies)

        def pct(q: float) -> float:
            return latencies[min(n - 1, int(q * n))] * 1000 if n else 0.0

        result = {"req_s": n / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                  "errors": errors}
        result |= wakeups(before, after, n, handle)
        # messages per second of the server's CPU: what it costs, less disturbed than msgs/s
        # by the other processes sharing the machine (they take the cores, not our CPU time)
        cpu = result["cpu_us_per_msg"]
        result["msgs_per_cpu_s"] = 1e6 / cpu if cpu else None
        # the client's (this process's) CPU too: with the server's, how busy the machine was
        result["client_cpu_us_per_msg"] = client_cpu / max(1, n) * 1e6
        result["cores_busy"] = (result["cpu_us_per_msg"] + result["client_cpu_us_per_msg"]) \
            * n / 1e6 / elapsed
        return result

    return uvloop.run(run())


def _server_snapshot(handle: ServerHandle) -> dict:
    control = handle.workdir / "sidecar.sock.ctl" if base_kind(handle.kind) == "sidecar" else None
    return _procstat.snapshot(_procstat.group(handle.process.pid), control)


def wakeups(before: dict, after: dict, n: int, handle: ServerHandle) -> dict:
    """The server's doorbells, context switches and CPU per message (benchmarks/_procstat.py)
    between two snapshots, for the extra columns of ws_echo."""
    roles = _procstat.roles(base_kind(handle.kind) == "sidecar", before["pids"])
    spent = _procstat.per(before, after, n, roles)
    return {"doorbells_per_msg": spent["doorbells"], "ctx_per_msg": spent["ctx_total"],
            "vol_per_msg": spent["vol"], "nonvol_per_msg": spent["nonvol"],
            "cpu_us_per_msg": spent["cpu_us_total"], "cpu_us_by_process": spent["cpu_us"],
            "ctx_by_process": spent["ctx"]}


class _Background:
    """Call ``fn(*args)`` in a thread; ``result()`` joins and returns or re-raises."""

    def __init__(self, fn: Callable, *args) -> None:
        self._outcome: dict = {}
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable, args: tuple) -> None:
        try:
            self._outcome["value"] = fn(*args)
        except BaseException as exc:  # handed to result(), never lost in the thread
            self._outcome["error"] = exc

    def join(self) -> None:
        # run_wrk bounds its own run time; this waits for exactly that.
        self._thread.join()

    def result(self):
        self.join()
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["value"]


# -- running ----------------------------------------------------------------------------------


def run_one(scenario: Scenario, kind: str, workers: int, options: Options) -> dict:
    """Start one server, measure, stop it.  Never raises for a server or wrk failure."""
    row = {"server": kind, "workers": workers, "status": "ok", "error": None}
    try:
        handle = start_server(kind, scenario.app, workers=workers, ready_path=scenario.ready_path,
                              access_log=scenario.access_log, interface=scenario.interface,
                              http2=scenario.http2)
    except ServerStartError as exc:
        return row | {"status": "failed to start", "error": str(exc)}
    except Exception as exc:  # a row, not a traceback; Ctrl-C still unwinds
        return row | {"status": "failed to start", "error": f"{type(exc).__name__}: {exc}"}
    try:
        row.update(scenario.measure(handle, options))
        if handle.process.poll() is not None:
            row.update(status="died", error=f"exited with {handle.process.returncode}")
    except WrkError as exc:
        row.update(status="failed", error=str(exc))
    except Exception as exc:
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        stop_server(handle)
    return row


def run_scenario(scenario: Scenario, kinds: list[str], options: Options, log,
                 rounds: int | None = None) -> dict:
    """Each server of the matrix, ``rounds`` times, interleaved (so a drift of the machine
    hits every server alike); each server's row is its median round by ``compare``."""
    rounds = rounds or scenario.rounds
    matrix = [(kind, workers) for kind, workers in scenario.matrix if kind in kinds]
    # each sidecar@DIR (another checkout) runs wherever this one's sidecar does
    for other in (k for k in kinds if base_kind(k) == "sidecar" and k != "sidecar"
                  and scenario.peers):
        matrix += [(other, workers) for kind, workers in scenario.matrix if kind == "sidecar"]
    runs: dict[tuple[str, int], list[dict]] = {entry: [] for entry in matrix}
    for n in range(rounds):
        for kind, workers in matrix:
            of = f" (round {n + 1} of {rounds})" if rounds > 1 else ""
            log(f"  {scenario.name}: {kind} --workers {workers}{of} ...")
            runs[(kind, workers)].append(run_one(scenario, kind, workers, options))
    rows = [_median_row(runs[entry], scenario.compare, scenario.medians) for entry in matrix]
    _add_ratios(rows, scenario.compare)
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "app": scenario.app,
        "compare": scenario.compare,
        "rounds": rounds,
        "rows": rows,
    }


def _median_row(runs: list[dict], key: str, medians: tuple[str, ...] = ()) -> dict:
    """The round whose ``key`` is the median (the lower of the middle two), with every
    round's figure in ``rounds``; each key of ``medians`` is its own median over the rounds
    (each round's in ``rounds_KEY``).  The first failure if no round succeeded."""
    ok = sorted((r for r in runs if r["status"] == "ok"), key=lambda r: r[key])
    if not ok:
        return runs[0]
    row = dict(ok[(len(ok) - 1) // 2])
    row["rounds"] = [r[key] if r["status"] == "ok" else None for r in runs]
    for other in medians:
        values = [r.get(other) for r in runs if r["status"] == "ok"]
        row[f"rounds_{other}"] = [r.get(other) if r["status"] == "ok" else None for r in runs]
        values = [v for v in values if v is not None]
        row[other] = statistics.median(values) if values else None
    return row


def _add_ratios(rows: list[dict], key: str) -> None:
    """ratio = this row's figure / sidecar's, with the same worker count when there is one."""
    sidecars = {r["workers"]: r for r in rows if r["server"] == "sidecar" and r["status"] == "ok"}
    for row in rows:
        reference = sidecars.get(row["workers"]) or next(iter(sidecars.values()), None)
        row["ratio"] = None
        if reference and row["status"] == "ok" and reference.get(key):
            row["ratio"] = row[key] / reference[key]


# -- output -----------------------------------------------------------------------------------


def format_table(result: dict, scenario: Scenario) -> str:
    ratio_header = "req/s ÷ sidecar" if scenario.compare == "req_s" else "p99 ÷ sidecar"
    headers = ["server", "workers", "req/s", "p50 ms", "p99 ms", "errors"]
    headers += [column[1] for column in scenario.extra_columns] + [ratio_header]
    rounds = result.get("rounds", 1) > 1
    if rounds:
        headers.append("each round (" + ("req/s" if scenario.compare == "req_s" else "p99 ms")
                       + ")")
        headers += [f"each round ({header})" for key, header, *_ in scenario.extra_columns
                    if key in scenario.medians[:1]]
    lines = []
    for row in result["rows"]:
        cells = [row["server"], str(row["workers"])]
        if row["status"] != "ok":
            lines.append((cells, f"{row['status'].upper()}: {row['error']}"))
            continue
        cells += [
            f"{row['req_s']:,.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            str(row["errors"]),
        ]
        for key, _, *fmt in scenario.extra_columns:
            value = row.get(key)
            cells.append("-" if value is None else format(value, fmt[0] if fmt else ",.0f"))
        cells.append("-" if row["ratio"] is None else f"{row['ratio']:.2f}")
        if rounds:
            cells.append(" ".join("failed" if v is None else _round_figure(v, scenario.compare)
                                  for v in row.get("rounds", ())))
            for key, _, *fmt in scenario.extra_columns:
                if key in scenario.medians[:1]:
                    cells.append(" ".join("-" if v is None else format(v, fmt[0] if fmt
                                                                        else ",.0f")
                                          for v in row.get(f"rounds_{key}", ())))
        lines.append((cells, None))
    widths = [len(h) for h in headers]
    for cells, _ in lines:
        for i, cell in enumerate(cells):
            widths[i] = max(widths[i], len(cell))

    def fmt(cells: list[str]) -> str:
        first = [cells[0].ljust(widths[0])]
        return "  ".join(first + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    out = [f"== {result['scenario']}: {result['description']}", fmt(headers)]
    out.append("  ".join("-" * w for w in widths))
    for cells, message in lines:
        out.append(fmt(cells) if message is None else fmt(cells) + "  " + message)
    return "\n".join(out)


def _round_figure(value: float, key: str) -> str:
    return f"{value:,.0f}" if key == "req_s" else f"{value:.2f}"


# -- scenarios --------------------------------------------------------------------------------

# every server at 1 and 2 workers: each is judged at its best count for this machine's 2 cores
THROUGHPUT_MATRIX = [("sidecar", 1), ("sidecar", 2), ("uvicorn", 1), ("uvicorn", 2), ("granian", 1),
                     ("granian", 2)]
# bare's, with the floor under it (benchmarks/_servers.py BASELINES: a canned hello from
# uvloop, and from nginx): what any server on this machine spends on the sockets alone
BARE_MATRIX = THROUGHPUT_MATRIX + [("floor", 1), ("nginx", 1)]

# HTTP/2: the servers that speak it (uvicorn does not)
H2_MATRIX = [("sidecar", 1), ("sidecar", 2), ("hypercorn", 1), ("hypercorn", 2), ("granian", 1),
             ("granian", 2)]

SCENARIOS: dict[str, Scenario] = {
    "bare": Scenario(
        name="bare",
        description="bare ASGI hello (benchmarks.apps:hello), GET /",
        app="benchmarks.apps:hello",
        ready_path="/",
        matrix=BARE_MATRIX,
        measure=measure_throughput("/"),
    ),
    "close": Scenario(
        name="close",
        description="bare ASGI hello, GET / with Connection: close (a new connection each)",
        app="benchmarks.apps:hello",
        ready_path="/",
        matrix=THROUGHPUT_MATRIX,
        measure=measure_throughput("/", headers=("Connection: close",)),
    ),
    "logged": Scenario(
        name="logged",
        description="bare ASGI hello, GET /, with each server's access log on (a file)",
        app="benchmarks.apps:hello",
        ready_path="/",
        matrix=THROUGHPUT_MATRIX,
        measure=measure_throughput("/"),
        access_log=True,
    ),
    "logged_json": Scenario(
        name="logged_json",
        description="logged, sidecar's access lines in JSON (--access-log-format json)",
        app="benchmarks.apps:hello",
        ready_path="/",
        matrix=[("sidecar", 1), ("sidecar", 2)],
        measure=measure_throughput("/"),
        access_log="json",
        peers=False,
    ),
    "starlette": Scenario(
        name="starlette",
        description="Starlette PlainTextResponse (benchmarks.apps:starlette_app), GET /",
        app="benchmarks.apps:starlette_app",
        ready_path="/",
        matrix=THROUGHPUT_MATRIX,
        measure=measure_throughput("/"),
    ),
    "dispatch": Scenario(
        name="dispatch",
        description="GET /fast while /cpu (20 ms CPU each) keeps workers busy; lower p99 wins",
        app="benchmarks.apps:starlette_app",
        ready_path="/fast",
        matrix=[("sidecar", 2), ("uvicorn", 2), ("granian", 2)],
        measure=measure_dispatch,
        compare="p99_ms",
        extra_columns=[("cpu_req_s", "/cpu req/s")],
        # Where the kernel puts a per-connection server's connections decides its figure
        # (all /fast ones on the worker /cpu does not use: no wait at all), and that changes
        # from start to start: one round is a coin toss, three give the median.
        rounds=3,
    ),
    "wsgi": Scenario(
        name="wsgi",
        description="bare WSGI hello (benchmarks.apps:wsgi_hello), GET /",
        app="benchmarks.apps:wsgi_hello",
        ready_path="/",
        matrix=[("sidecar", 1), ("sidecar", 2), ("gunicorn", 1), ("gunicorn", 2),
                ("gunicorn-gthread", 1), ("gunicorn-gthread", 2), ("granian", 1),
                ("granian", 2)],
        measure=measure_throughput("/"),
        interface="wsgi",
        peers=False,
    ),
    "h2_bare": Scenario(
        name="h2_bare",
        description="bare ASGI hello over HTTP/2 (h2c), h2load 4 connections x 16 streams",
        app="benchmarks.apps:hello",
        ready_path="/",
        matrix=H2_MATRIX,
        measure=measure_h2("/"),
        http2=True,
        rounds=3,
    ),
    "h2_paths": Scenario(
        name="h2_paths",
        description="bare ASGI hello over HTTP/2 (h2c), h2load 4 x 16 streams, each request "
                    "one of 5000 paths (/users/i?page=i%7)",
        app="benchmarks.apps:hello",
        ready_path="/",
        matrix=H2_MATRIX,
        measure=measure_h2("/users", paths=5000),
        http2=True,
        rounds=3,
    ),
    "h2_starlette": Scenario(
        name="h2_starlette",
        description="Starlette PlainTextResponse over HTTP/2 (h2c), h2load 4 x 16 streams",
        app="benchmarks.apps:starlette_app",
        ready_path="/",
        matrix=H2_MATRIX,
        measure=measure_h2("/"),
        http2=True,
        rounds=3,
    ),
    "ws_echo": Scenario(
        name="ws_echo",
        description="WebSocket echo of 64-byte text messages (benchmarks.apps:hello), msgs/s",
        app="benchmarks.apps:hello",
        ready_path="/",
        matrix=THROUGHPUT_MATRIX,
        measure=measure_ws_echo,
        # per echoed message, the server's processes together: ring doorbells (sidecar),
        # context switches (voluntary + not), CPU (benchmarks/_procstat.py)
        extra_columns=[("doorbells_per_msg", "bells/msg", ".2f"),
                       ("ctx_per_msg", "ctxsw/msg", ".2f"),
                       ("cpu_us_per_msg", "CPU µs/msg", ".1f"),
                       ("msgs_per_cpu_s", "msgs/CPU-s"),
                       ("client_cpu_us_per_msg", "client µs/msg", ".1f"),
                       ("cores_busy", "cores busy", ".2f")],
        # msgs/s of one round swung 13k-22k for every server on the shared machine: three
        # rounds, interleaved, and the per-CPU figure, each as its own median
        rounds=3,
        medians=("msgs_per_cpu_s", "cpu_us_per_msg", "doorbells_per_msg", "ctx_per_msg"),
    ),
}


# -- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http",
        description="Compare sidecar with uvicorn and granian over TCP loopback, with wrk.",
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of warm-up (0: none)")
    parser.add_argument(
        "--only", choices=sorted(SCENARIOS), action="append", help="run only this scenario"
    )
    parser.add_argument(
        "--servers", default=",".join(KINDS),
        help=f"comma-separated subset of {','.join(KINDS)}; sidecar@DIR adds the sidecar of "
        "the checkout in DIR (e.g. the previous main), run beside this one; sidecar+NAME=VALUE "
        "a sidecar with --NAME VALUE (e.g. sidecar+frontends=2)"
    )
    parser.add_argument(
        "--cpu-connections",
        type=int,
        default=1,
        help="dispatch: connections hammering /cpu (default 1: one worker busy, one free)",
    )
    parser.add_argument(
        "--fast-connections", type=int, default=8, help="dispatch: connections measuring /fast"
    )
    parser.add_argument(
        "--fast-delay-ms",
        type=int,
        default=10,
        help="dispatch: pause between /fast requests on each connection",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="measurements per server, each on a fresh start, median shown "
        "(default: 3 for dispatch, 1 for the others)",
    )
    parser.add_argument("--h2-connections", type=int, default=4,
                        help="h2_* scenarios: h2load connections (4)")
    parser.add_argument("--h2-streams", type=int, default=16,
                        help="h2_* scenarios: concurrent streams per connection (16)")
    parser.add_argument("--json", action="store_true", help="print a JSON document")
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    error = check_kinds(args.servers)
    if error:
        parser.error(error)
    if args.duration < 1 or args.connections < 1 or args.threads < 1:
        parser.error("--duration, --connections and --threads must be at least 1")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, through the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    names = args.only or list(SCENARIOS)
    needs = {"h2load" if SCENARIOS[name].http2 else "wrk" for name in names}
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if tool in needs and shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install {package})",
                  file=sys.stderr)
            return 2
    options = Options(
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        warmup=args.warmup,
        cpu_connections=args.cpu_connections,
        fast_connections=args.fast_connections,
        fast_delay_ms=args.fast_delay_ms,
        h2_connections=args.h2_connections,
        h2_streams=args.h2_streams,
    )

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = []
    for name in names:
        scenario = SCENARIOS[name]
        result = run_scenario(scenario, args.servers, options, log, args.rounds)
        results.append(result)
        if not args.json:
            print(format_table(result, scenario), end="\n\n", flush=True)
    if args.json:
        document = {
            "benchmark": "http",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "options": vars(options),
            "scenarios": results,
        }
        print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # servers were stopped by the finally blocks on the way out
        sys.exit(130)
