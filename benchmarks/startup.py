"""Start-up benchmark: time from exec to the first 200, sidecar against uvicorn, same app,
same machine, same run.

    python -m benchmarks.startup                          # demo app, 1, 2 and 4 workers
    python -m benchmarks.startup --servers sidecar,sidecar@/work/main,uvicorn --rounds 7
    python -m benchmarks.startup --json > result.json

Each measurement execs the server (``python -m ...``, as systemd or a shell would), then
asks ``GET /`` on its TCP port every 5 ms (a plain socket: a cheap probe, so that the server
starting beside it loses little CPU) until one answers 200: that is "ready", what a client,
a load balancer's health check or systemd's READY=1 waits for.  Then SIGTERM, and the time
to exit is the "stop" column.  Servers and worker counts are interleaved in each round (the
machine's load drifts alike for all of them) and the median of the rounds is shown, with the
process CPU it took (user + system of the server and its children, from its exit).

The app is ``examples.demo:app`` (Starlette, a lifespan handler), served from this checkout;
``sidecar@DIR`` runs the sidecar of another checkout (its own .venv), e.g. the previous main,
to compare a change with what it replaces in one run.  Absolute numbers drift on shared
machines: compare rows of one run, not runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._servers import (HOST, REPO_ROOT, base_kind, check_kinds, checkout_of,
                                 free_port, server_argv)

POLL = 0.005     # seconds between readiness probes
TIMEOUT = 60.0   # seconds a server gets to answer 200


def _answers_200(port: int, path: str) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as s:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      % path.encode())
            return s.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(kind: str, app: str, workers: int, path: str = "/") -> dict:
    """One start of ``kind``: seconds to the first 200, seconds from SIGTERM to exit, and the
    CPU seconds its processes used in all."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-start-{base_kind(kind)}-"))
    argv = server_argv(kind, app, port, workers, workdir)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paths = [str(checkout_of(kind) or REPO_ROOT), str(REPO_ROOT), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    cpu0 = _children_cpu()
    with open(workdir / "server.log", "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, cwd=checkout_of(kind) or REPO_ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        ready = None
        while time.monotonic() - t0 < TIMEOUT:
            if _answers_200(port, path):
                ready = time.monotonic() - t0
                break
            if proc.poll() is not None:
                break
            time.sleep(POLL)
        t1 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        stop = time.monotonic() - t1
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # whatever the leader left behind
        except ProcessLookupError:
            pass
        proc.wait()
        tail = (workdir / "server.log").read_text(errors="replace").strip().splitlines()[-3:]
        for f in workdir.iterdir():
            f.unlink()
        workdir.rmdir()
    if ready is None:
        return {"error": " | ".join(tail) or f"exit {proc.returncode}"}
    # a killed worker's CPU is not counted by RUSAGE_CHILDREN: the leader reaps its own
    return {"ready_s": ready, "stop_s": stop, "cpu_s": _children_cpu() - cpu0}


def run(servers: list[str], workers: list[int], rounds: int, app: str) -> list[dict]:
    samples: dict[tuple[str, int], list[dict]] = {(s, w): [] for w in workers for s in servers}
    for r in range(rounds):
        for w in workers:
            order = servers if r % 2 == 0 else servers[::-1]
            for s in order:
                samples[(s, w)].append(measure(s, app, w))
    rows = []
    for (s, w), got in samples.items():
        ok = [g for g in got if "error" not in g]
        row = {"server": s, "workers": w, "rounds": len(got), "failed": len(got) - len(ok)}
        for key in ("ready_s", "stop_s", "cpu_s"):
            values = [g[key] for g in ok]
            row[key] = statistics.median(values) if values else None
            row[key + "_all"] = values
        if len(ok) < len(got):
            row["error"] = next(g["error"] for g in got if "error" in g)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    out = [f"{'server':<28} {'workers':>7} {'ready ms':>9} {'stop ms':>8} {'CPU ms':>7}"
           f" {'min..max ready':>16}"]
    for row in rows:
        if row["ready_s"] is None:
            out.append(f"{row['server']:<28} {row['workers']:>7}   failed: {row.get('error')}")
            continue
        lo, hi = min(row["ready_s_all"]), max(row["ready_s_all"])
        out.append(f"{row['server']:<28} {row['workers']:>7} {row['ready_s'] * 1e3:>9.0f} "
                   f"{row['stop_s'] * 1e3:>8.0f} {row['cpu_s'] * 1e3:>7.0f} "
                   f"{lo * 1e3:>7.0f}..{hi * 1e3:<7.0f}"
                   + (f"  ({row['failed']} failed)" if row["failed"] else ""))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="sidecar,uvicorn",
                    help="comma-separated: sidecar, uvicorn, sidecar@DIR ... (sidecar,uvicorn)")
    ap.add_argument("--workers", default="1,2,4", help="comma-separated worker counts (1,2,4)")
    ap.add_argument("--rounds", type=int, default=5, help="starts per server and count (5)")
    ap.add_argument("--app", default="examples.demo:app")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    error = check_kinds(servers)
    if error:
        print(f"startup: {error}", file=sys.stderr)
        return 2
    try:
        workers = [int(w) for w in args.workers.split(",") if w]
    except ValueError:
        print(f"startup: --workers: not a list of numbers: {args.workers!r}", file=sys.stderr)
        return 2
    rows = run(servers, workers, max(1, args.rounds), args.app)
    if args.json:
        json.dump({"machine": platform.machine(), "cpus": os.cpu_count(),
                   "load": os.getloadavg(), "rounds": args.rounds, "app": args.app,
                   "rows": rows}, sys.stdout, indent=2)
        print()
    else:
        print(f"time from exec to the first 200 of GET / ({args.app}), medians of "
              f"{args.rounds} rounds; load average {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} CPUs")
        print(table(rows))
    return 0 if all(r["failed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
