"""File download benchmark: a large Starlette FileResponse, sidecar against uvicorn and granian.

    python -m benchmarks.files                     # 1 GiB, 3 rounds, sidecar/uvicorn/granian
    python -m benchmarks.files --size-mib 256 --rounds 5 --servers sidecar,uvicorn --json

Starlette's FileResponse sends ``http.response.pathsend`` when the server offers it (sidecar:
the front-end opens the file and sends it with sendfile(2), sidecar/frontend/file_send.py;
granian offers it too), else reads the file in 64 KiB chunks and sends them as body
messages (uvicorn).  Each round starts every server fresh (one worker), downloads the file
once with curl over TCP loopback (to /dev/null), and reads the CPU time (utime + stime from
/proc) of each process of the server's group before and after: the front-end and the worker
separately for sidecar.  The table shows each server's median round; ``x uvicorn`` is its
throughput over uvicorn's median.  The file is written once (a temporary file, in the page
cache for every round: the disk is not what is measured) and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from benchmarks._servers import check_kinds, start_server, stop_server
from benchmarks.cpu import CLK_TCK, _cpu_ticks, _group, _roles

MIB = 1024 * 1024

# --- the app the servers run (benchmarks.files:app) -----------------------------------------

try:
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, PlainTextResponse
    from starlette.routing import Route

    async def _file(request):
        return FileResponse(os.environ["BENCH_FILE"])

    async def _ready(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/file", _file), Route("/ready", _ready)])
except ImportError:   # (the benchmark driver itself does not need it)
    app = None


# --- the driver -----------------------------------------------------------------------------

def make_file(size: int) -> str:
    fd, path = tempfile.mkstemp(prefix="bench-file-")
    block = os.urandom(MIB)
    with os.fdopen(fd, "wb") as fh:
        for _ in range(size // MIB):
            fh.write(block)
        fh.write(block[:size % MIB])
    with open(path, "rb") as fh:   # into the page cache
        while fh.read(16 * MIB):
            pass
    return path


def download(url: str, size: int) -> float:
    """Seconds curl took for the whole body (checked: its size)."""
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w",
                          "%{size_download} %{time_total}", url],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"curl failed: {out.stderr.strip()}")
    got, seconds = out.stdout.split()
    if int(got) != size:
        raise RuntimeError(f"curl got {got} bytes, expected {size}")
    return float(seconds)


def measure(kind: str, path: str, size: int) -> dict:
    os.environ["BENCH_FILE"] = path   # (start_server passes our environment on)
    handle = start_server(kind, "benchmarks.files:app", workers=1, ready_path="/ready")
    try:
        url = handle.base_url + "/file"
        pids = _group(handle.process.pid)
        before = {p: _cpu_ticks(p) for p in pids}
        seconds = download(url, size)
        after = {p: _cpu_ticks(p) for p in pids}
    finally:
        stop_server(handle)
    cpu = [(after[p] - before[p]) / CLK_TCK for p in pids]
    return {"mb_s": size / seconds / 1e6, "seconds": seconds, "roles": _roles(kind, pids),
            "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--servers", default="sidecar,uvicorn,granian")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    kinds = args.servers.split(",")
    error = check_kinds(kinds)
    if error:
        print(error, file=sys.stderr)
        return 2
    size = args.size_mib * MIB
    path = make_file(size)
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    try:
        for r in range(args.rounds):   # interleaved: the machine's drift hits every server
            for kind in kinds:
                try:
                    res = measure(kind, path, size)
                except Exception as exc:  # noqa: BLE001 -- one server failing is a row
                    res = {"error": str(exc)}
                runs[kind].append(res)
                print(f"round {r + 1} {kind}: " + (f"{res['mb_s']:.0f} MB/s, cpu "
                      + ", ".join(f"{role} {c:.2f}s" for role, c in zip(res["roles"],
                                                                      res["cpu_s"]))
                      if "error" not in res else res["error"]), file=sys.stderr)
    finally:
        os.unlink(path)
    rows = []
    for kind in kinds:
        ok = [r for r in runs[kind] if "error" not in r]
        if not ok:
            rows.append({"server": kind, "error": runs[kind][0]["error"]})
            continue
        median = sorted(ok, key=lambda r: r["mb_s"])[len(ok) // 2]
        rows.append({"server": kind, **median,
                     "mb_s_rounds": [round(r["mb_s"]) for r in ok]})
    base = next((r["mb_s"] for r in rows if r["server"] == "uvicorn" and "mb_s" in r), None)
    if args.json:
        print(json.dumps({"size": size, "rounds": args.rounds, "rows": rows}, indent=2))
        return 0
    print(f"\n{args.size_mib} MiB Starlette FileResponse, curl over TCP loopback, one worker, "
          f"median of {args.rounds} rounds\n")
    print("| server | MB/s | x uvicorn | CPU s per process (median round) | CPU s total |")
    print("|---|---:|---:|---|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['server']} | failed: {row['error']} | | | |")
            continue
        ratio = f"{row['mb_s'] / base:.2f}" if base else "-"
        procs = ", ".join(f"{role} {c:.2f}" for role, c in zip(row["roles"], row["cpu_s"]))
        print(f"| {row['server']} | {row['mb_s']:,.0f} | {ratio} | {procs} | "
              f"{sum(row['cpu_s']):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
