"""CPU cost per request of each server process, under wrk: where a request's time goes.

    python -m benchmarks.cpu                          # sidecar --workers 1, bare hello, 3 rounds
    python -m benchmarks.cpu --app benchmarks.apps:starlette_app --path /json
    python -m benchmarks.cpu --servers sidecar,uvicorn --rounds 5 --json
    python -m benchmarks.cpu --browser-headers        # requests with a browser's 12 fields
    python -m benchmarks.cpu --header 'Cookie: a=b'   # any field (repeatable; wrk -H)
    python -m benchmarks.cpu --access-log --servers sidecar,sidecar%json,sidecar@../main
                                                      # access lines on (to a file); KIND%FORMAT:
                                                      # this sidecar with --access-log-format
    python -m benchmarks.cpu --model [--json]         # sidecar's capacity model: MODEL_APPS,
                                                      # front-end and worker µs per request and
                                                      # what they predict on 8, 16, 64 cores

req/s moves with whatever else the machine runs; CPU time per request (utime + stime from
/proc, divided by the requests wrk completed) moves much less, so it is the figure to compare
two versions of the code by.  Each round starts the server fresh, warms it up, then runs wrk
while reading every process of the server's group before and after.  The table shows the
median round, per process role (sidecar: front-end and each worker; the others: their
processes), and the total, which is what the throughput on a machine with no spare core
is bound by.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from benchmarks import _procstat
from benchmarks._servers import KINDS, base_kind, check_kinds, run_wrk, start_server, stop_server


def _roles(kind: str, pids: list[int]) -> list[str]:
    if base_kind(kind) == "sidecar":   # (--frontends: front-end 1 ... are children too)
        roles, fe, wk = ["front-end"], 1, 1
        for pid in pids[1:]:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    child = b"sidecar.frontend.child" in fh.read()
            except OSError:
                child = False
            roles.append(f"front-end {fe}" if child else f"worker {wk}")
            fe, wk = (fe + 1, wk) if child else (fe, wk + 1)
        return roles
    return ["main"] + [f"proc {i}" for i in range(1, len(pids))]


# What Chromium sends for a subresource, besides Host (wrk adds that): request heads of this
# size, not wrk's bare one, are what the front-end's parser meets behind a browser.
BROWSER_HEADERS = (
    "Connection: keep-alive",
    'sec-ch-ua: "Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"',
    "sec-ch-ua-mobile: ?0",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    'sec-ch-ua-platform: "Linux"',
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Sec-Fetch-Site: same-origin",
    "Sec-Fetch-Mode: navigate",
    "Sec-Fetch-Dest: document",
    "Referer: http://127.0.0.1:8000/",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Accept-Language: en-US,en;q=0.9",
    "Cookie: session=3f2a9c1e8b7d4f60a5e2c9b1d8f7e6a4; theme=dark",
)


def measure(kind: str, app: str, path: str, workers: int, duration: float,
            connections: int, headers: tuple[str, ...] = (), access_log: bool = False) -> dict:
    kind, _, fmt = kind.partition("%")   # sidecar%json: --access-log-format json
    handle = start_server(kind, app, workers=workers, ready_path=path,
                          access_log=fmt or access_log)
    try:
        url = handle.base_url + path
        run_wrk(url, connections, 2, headers=headers)  # warm-up: caches, learned route costs
        pids = _procstat.group(handle.process.pid)
        control = handle.workdir / "sidecar.sock.ctl" if base_kind(kind) == "sidecar" else None
        wakes = _procstat.snapshot(pids, control)
        roles = _roles(kind, pids)   # (while they run: a role is read from /proc)
        before = {p: _procstat.cpu_split(p) for p in pids}
        result = run_wrk(url, connections, duration, headers=headers)
        after = {p: _procstat.cpu_split(p) for p in pids}
        wakes = _procstat.per(wakes, _procstat.snapshot(pids, control), result["requests"],
                              _roles(kind, pids))
    finally:
        stop_server(handle)
    n = result["requests"] or 1
    per = [(sum(after[p]) - sum(before[p])) / n * 1e6 for p in pids]
    kernel = [(after[p][1] - before[p][1]) / n * 1e6 for p in pids]
    return {"req_s": result["req_s"], "errors": result["errors"],
            "roles": roles, "us_per_req": per, "total": sum(per),
            # of that, in the kernel (stime): the socket calls, wake-ups, the loopback
            # delivery to wrk's sockets
            "kernel_per_req": kernel, "kernel": sum(kernel),
            # per request: ring doorbells (sidecar), context switches of each process
            "doorbells": wakes["doorbells"], "ctx": wakes["ctx"]}


# The capacity model's apps (docs/operations.md, "Capacity"): the server's own cost, a typical
# framework request, a page rendered from a template.  (name, app, path, the path the
# front-end's figure is taken from.)  A front-end that feeds many workers is busy: it handles
# many requests per loop iteration and sleeps little.  Behind one slow worker it is not (at
# ~1k req/s it wakes up for nearly every request, and those wake-ups land in its figure), so
# the template app's front-end figure comes from the same response rendered once, served at
# a cheap route's rate.
MODEL_APPS = (("bare", "benchmarks.apps:hello", "/", "/"),
              ("Starlette", "benchmarks.apps:starlette_app", "/", "/"),
              ("template", "benchmarks.apps:template_app", "/page", "/page-cached"))
MODEL_CORES = (8, 16, 64)


def capacity(f: float, w: float, cores: int, frontends: int) -> float:
    """req/s that ``frontends`` front-ends and ``cores - frontends`` workers can serve, each
    process on a core of its own, when a request costs ``f`` µs of a front-end's CPU and
    ``w`` µs of a worker's: the smaller of what the front-ends can feed and what the workers
    can run."""
    workers = cores - frontends
    if workers < 1 or frontends < 1:
        return 0.0
    return min(frontends * 1e6 / f, workers * 1e6 / w)


def predict(f: float, w: float, cores: int) -> dict:
    """One front-end against the best number of them on ``cores`` cores."""
    best = max(range(1, cores), key=lambda n: (capacity(f, w, cores, n), -n))
    one = capacity(f, w, cores, 1)
    top = capacity(f, w, cores, best)
    return {"cores": cores, "one_frontend_req_s": one, "best_frontends": best,
            "best_req_s": top, "gain": top / one if one else None}


def model(args) -> int:
    """Measure MODEL_APPS on sidecar and print what they predict."""
    def median(app: str, path: str, name: str) -> tuple[dict, list]:
        rounds = []
        for r in range(args.rounds):
            print(f"  {name} {path}: round {r + 1} ...", file=sys.stderr, flush=True)
            rounds.append(measure("sidecar", app, path, args.workers, args.duration,
                                  args.connections))
        return sorted(rounds, key=lambda m: m["total"])[len(rounds) // 2], rounds

    rows = []
    for name, app, path, fe_path in MODEL_APPS:
        med, rounds = median(app, path, name)
        fe = med if fe_path == path else median(app, fe_path, name)[0]
        f = fe["us_per_req"][0]
        w = sum(med["us_per_req"][1:])   # per request, whichever worker served it
        rows.append({"app": name, "spec": app, "path": path, "frontend_path": fe_path,
                     "frontend_us": f, "worker_us": w, "req_s": med["req_s"],
                     "frontend_us_here": med["us_per_req"][0], "workers_fed": w / f,
                     "doorbells": med["doorbells"], "frontend_ctx": med["ctx"]["front-end"],
                     "totals": [round(m["total"], 1) for m in rounds],
                     "predictions": [predict(f, w, c) for c in MODEL_CORES]})
    if args.json:
        json.dump({"workers": args.workers, "connections": args.connections,
                   "rounds": args.rounds, "apps": rows}, sys.stdout, indent=2)
        print()
        return 0
    print(f"== capacity model: sidecar --workers {args.workers}, wrk -c{args.connections}, "
          f"CPU µs per request, median of {args.rounds} rounds (by total)")
    print(f"{'app':<10} {'req/s':>7} {'FE here':>7} {'bells':>5} {'FE ctxsw':>8} "
          f"{'front-end':>9} {'worker':>7} {'workers fed':>11}  "
          + "  ".join(f"{c:>2} cores: 1 FE -> best" for c in MODEL_CORES))
    for row in rows:
        preds = "  ".join(f"{p['one_frontend_req_s'] / 1e3:>6.0f}k -> {p['best_frontends']:>2} FE "
                          f"{p['best_req_s'] / 1e3:>5.0f}k" for p in row["predictions"])
        print(f"{row['app']:<10} {row['req_s']:>7,.0f} {row['frontend_us_here']:>7.1f} "
              f"{row['doorbells'] or 0:>5.2f} {row['frontend_ctx']:>8.2f} "
              f"{row['frontend_us']:>9.1f} {row['worker_us']:>7.1f} {row['workers_fed']:>11.2f}"
              f"  {preds}")
    print("per request: FE here, bells, FE ctxsw: the front-end's CPU µs, ring doorbells and "
          "the front-end's context switches on the app's route; front-end: its CPU µs at a "
          "cheap route's rate (MODEL_APPS); worker: the workers' CPU µs; workers fed = worker "
          "/ front-end; req/s with 1 FE and F front-ends on C cores = min(F / front-end, "
          "(C - F) / worker)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cpu", description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default="sidecar", help="comma-separated subset of " + ",".join(KINDS)
                    + "; sidecar@DIR: the sidecar of the checkout in DIR, beside this one")
    ap.add_argument("--app", default="benchmarks.apps:hello")
    ap.add_argument("--path", default="/")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of wrk per round")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="fresh starts per server; median shown")
    ap.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                    help="a field added to every request (repeatable; wrk -H)")
    ap.add_argument("--browser-headers", action="store_true",
                    help=f"add the {len(BROWSER_HEADERS)} fields a browser sends (BROWSER_HEADERS)")
    ap.add_argument("--access-log", action="store_true",
                    help="every server's access log on (to a file); sidecar%%FORMAT also sets "
                         "its --access-log-format")
    ap.add_argument("--model", action="store_true",
                    help="sidecar's capacity model: MODEL_APPS' front-end and worker CPU per "
                         "request, and what they predict on 8, 16 and 64 cores")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.model:
        return model(args)
    headers = (BROWSER_HEADERS if args.browser_headers else ()) + tuple(args.header)
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    error = check_kinds([k.partition("%")[0] for k in kinds])
    if error:
        ap.error(error)
    rounds: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for kind in kinds:  # interleaved: drift hits every server alike
            print(f"  round {r + 1}: {kind} ...", file=sys.stderr, flush=True)
            rounds[kind].append(measure(kind, args.app, args.path, args.workers, args.duration,
                                        args.connections, headers, args.access_log))
    rows = []
    for kind in kinds:
        rs = sorted(rounds[kind], key=lambda m: m["total"])
        med = rs[len(rs) // 2]
        rows.append({"server": kind, "workers": args.workers, "median": med,
                     "totals": [round(m["total"], 1) for m in rounds[kind]],
                     "per_process": [[round(us, 1) for us in m["us_per_req"]]
                                     for m in rounds[kind]],
                     "kernel_per_process": [[round(us, 1) for us in m["kernel_per_req"]]
                                            for m in rounds[kind]],
                     "req_s_median": statistics.median(m["req_s"] for m in rounds[kind])})
    if args.json:
        json.dump({"app": args.app, "path": args.path, "headers": list(headers), "rows": rows},
                  sys.stdout, indent=2)
        print()
        return 0
    print(f"== CPU µs per request, {args.app} {args.path}, wrk -c{args.connections}"
          f"{f' +{len(headers)} header fields' if headers else ''}, "
          f"median of {args.rounds} rounds (by total)")
    print("(per process: its µs, and in brackets the part spent in the kernel)")
    width = max(8, *(len(row["server"]) for row in rows))
    print(f"{'server':<{width}} {'req/s':>8}  {'total':>6}  {'kernel':>6}  per process"
          f"                                 all rounds' totals")
    for row in rows:
        med = row["median"]
        parts = ", ".join(f"{role} {us:.1f} [{k:.1f}]" for role, us, k
                          in zip(med["roles"], med["us_per_req"], med["kernel_per_req"]))
        print(f"{row['server']:<{width}} {row['req_s_median']:>8,.0f}  {med['total']:>6.1f}  "
              f"{med['kernel']:>6.1f}  {parts:<43} {row['totals']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
