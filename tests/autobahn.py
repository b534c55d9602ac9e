"""Autobahn WebSocket conformance run against the demo app's echo endpoint.

    python -m tests.autobahn                      # every case (1-7, 9, 10, 12, 13): ~9 min here
    python -m tests.autobahn '1.*' '7.*'          # a selection (case ids or globs)
    python -m tests.autobahn --server nginx       # through nginx to sidecar's Unix socket
    python -m tests.autobahn --server uvicorn     # the same cases against uvicorn, to compare
    python -m tests.autobahn --markdown           # the table as docs/websocket.md shows it

The cases are Autobahn TestSuite's own case files (the fuzzing client), run by the ``kosoku``
package: Autobahn's Python 2 runner replaced by a Rust one that drives the same case files on
Python 3.  The server under test is a real sidecar serving ``examples.demo:app`` on TCP; each
case opens its own connection to ``/ws/echo``.

A case's verdict here is the worse of Autobahn's two: the message exchange (OK, NON-STRICT,
INFORMATIONAL, UNIMPLEMENTED, FAILED) and the closing handshake (a wrong close code or an
unclean close fails the case).  ``EXPLAINED`` says why each case that is not OK here stays so;
docs/websocket.md has the full report.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import subprocess
import sys
import time
from collections import Counter

from tests.server import ROOT, Sidecar, free_port

# The groups of the issue (#4), which are all that Autobahn has (it has no cases in 8 or 11).
ALL_CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", "12.*", "13.*"]

GROUPS = {
    "1": "framing", "2": "pings/pongs", "3": "reserved bits", "4": "opcodes",
    "5": "fragmentation", "6": "UTF-8 handling", "7": "close handling",
    "9": "limits/performance", "10": "misc (auto-fragmentation)",
    "12": "compression, payloads", "13": "compression, parameters",
}

VERDICTS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")

# Why the cases that are not OK here are so, and the verdicts each may have: a glob of case
# ids -> (verdicts, why).  The "echo lost" ones race: whether the echo wins depends on timing.
_ECHO_LOST = (("OK", "NON-STRICT"), (
    "a valid message comes in the same read as a bad frame; the front-end fails the "
    "connection at once (RFC 6455 7.1.7), before the app's echo of the valid message has made "
    "the round trip through the worker. Autobahn accepts that as NON-STRICT; a server that "
    "echoes from inside its frame parser gets OK."))
EXPLAINED = {
    "3.2": _ECHO_LOST, "3.3": _ECHO_LOST, "3.4": _ECHO_LOST,
    "4.1.3": _ECHO_LOST, "4.1.4": _ECHO_LOST, "4.1.5": _ECHO_LOST,
    "4.2.3": _ECHO_LOST, "4.2.4": _ECHO_LOST, "4.2.5": _ECHO_LOST,
    "5.15": _ECHO_LOST,
    "6.4.3": (("OK", "NON-STRICT"), (
        "invalid UTF-8 inside one frame that arrives in pieces: websockets checks a text frame "
        "once it is complete, so the connection fails when the frame ends, not at the first "
        "invalid byte (\"fail fast\" is a SHOULD). Across frames (6.4.1, 6.4.2) the front-end "
        "decodes incrementally and fails at once.")),
    "6.4.4": (("OK", "NON-STRICT"), "as 6.4.3."),
    "7.1.6": (("INFORMATIONAL",), (
        "a 256 KiB message, a close and a ping back to back: what comes back is left to the "
        "implementation (here: the echo, then the close).")),
    "7.13.*": (("INFORMATIONAL",), (
        "close codes 5000 and 65535 are undefined by the spec; the front-end answers 1002 "
        "(protocol error).")),
}


def explanation(case_id: str) -> tuple[tuple[str, ...], str] | None:
    """(verdicts allowed, why) for a case that may be other than OK, or None."""
    for pattern, entry in EXPLAINED.items():
        if fnmatch.fnmatchcase(case_id, pattern):
            return entry
    return None


def verdict(result) -> str:
    """One word for a kosoku CaseResult: the worse of the message and close verdicts."""
    behavior = result.behavior.value
    close = result.behavior_close.value
    if behavior in ("FAILED", "ERROR") or close not in ("OK", "INFORMATIONAL"):
        return "FAILED"
    return behavior


def group_of(case_id: str) -> str:
    return case_id.split(".", 1)[0]


def summarize(results) -> list[tuple[str, Counter, float]]:
    """[(group, Counter of verdicts, seconds)] in group order."""
    counts: dict[str, Counter] = {}
    seconds: dict[str, float] = {}
    for r in results:
        g = group_of(r.case_id)
        counts.setdefault(g, Counter())[verdict(r)] += 1
        seconds[g] = seconds.get(g, 0.0) + r.duration / 1000
    order = sorted(counts, key=int)
    return [(g, counts[g], seconds[g]) for g in order]


def table(results, markdown: bool = False) -> str:
    rows = [("group", "", "cases", *(v.lower() for v in VERDICTS), "case time")]
    total = Counter()
    total_s = 0.0
    for g, c, s in summarize(results):
        rows.append((g, GROUPS.get(g, ""), str(sum(c.values())), *(str(c[v]) for v in VERDICTS),
                     f"{s:.1f} s"))
        total += c
        total_s += s
    rows.append(("all", "", str(sum(total.values())), *(str(total[v]) for v in VERDICTS),
                 f"{total_s:.1f} s"))
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(r, widths))) for r in rows)


def not_ok(results, explain: bool = True) -> list[tuple[str, str, str]]:
    """[(case id, verdict, why)] of every case whose verdict is not OK; ``explain``: with
    sidecar's explanation where there is one, else what Autobahn says."""
    out = []
    for r in results:
        v = verdict(r)
        if v != "OK":
            entry = explanation(r.case_id) if explain else None
            why = entry[1] if entry and v in entry[0] else None
            if why is None:
                why = (f"{r.result} / {r.result_close} (close code "
                       f"{r.remote_close_code})")
            out.append((r.case_id, v, why))
    return out


def unexpected(results) -> list[tuple[str, str]]:
    """[(case id, verdict)] of the cases not OK and not explained with that verdict."""
    out = []
    for r in results:
        v = verdict(r)
        entry = explanation(r.case_id)
        if v != "OK" and (entry is None or v not in entry[0]):
            out.append((r.case_id, v))
    return out


async def run_cases(url: str, cases: list[str], parallel: int = 1) -> list:
    """Every result, passed or not (kosoku raises FailureError when one failed)."""
    from kosoku import FailureError, run_fuzzingclient

    try:
        return list(await run_fuzzingclient(url, cases, concurrency=parallel))
    except FailureError as failure:
        return list(failure.results)


@contextlib.contextmanager
def echo_server(server: str, workers: int):
    """The echo endpoint's URL, on a running sidecar (or uvicorn, to compare).  "nginx":
    sidecar behind nginx, through its Unix socket."""
    if server in ("sidecar", "nginx"):
        with Sidecar("examples.demo:app", workers=workers) as sc:
            if server == "sidecar":
                yield f"ws://127.0.0.1:{sc.port}/ws/echo"
                return
            from tests.nginx import NginxServer
            with NginxServer(sc.uds) as base:
                yield base.replace("http://", "ws://") + "/ws/echo"
        return
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.demo:app", "--port", str(port),
         "--workers", str(workers), "--log-level", "warning", "--app-dir", str(ROOT)],
        stdout=subprocess.DEVNULL)
    try:
        import httpx
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)  # (once uvicorn is up: few polls)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.05)
        yield f"ws://127.0.0.1:{port}/ws/echo"
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.autobahn", description=__doc__.split("\n")[0])
    p.add_argument("cases", nargs="*", help="case ids or globs (default: all of 1-7, 9, 10, 12, 13)")
    p.add_argument("--server", choices=("sidecar", "nginx", "uvicorn"), default="sidecar",
                   help="nginx: sidecar behind nginx, over the Unix socket")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--parallel", type=int, default=1, help="cases run at once")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument("--json", metavar="FILE", help="also write every case's verdict to FILE")
    args = p.parse_args(argv)
    cases = args.cases or ALL_CASES
    started = time.monotonic()
    with echo_server(args.server, args.workers) as url:
        results = asyncio.run(run_cases(url, cases, args.parallel))
    wall = time.monotonic() - started
    if not results:
        print(f"no case matches {' '.join(cases)}", file=sys.stderr)
        return 2
    agent = results[0].agent or args.server
    print(f"Autobahn fuzzing cases against {agent} ({args.server}, {args.workers} workers), "
          f"{len(results)} cases in {wall:.0f} s\n")
    print(table(results, args.markdown))
    rows = not_ok(results, explain=args.server != "uvicorn")
    if rows:
        print()
        if args.markdown:
            print("| case | verdict | why |\n|---|---|---|")
            for case_id, v, why in rows:
                print(f"| {case_id} | {v} | {why} |")
        else:
            for case_id, v, why in rows:
                print(f"{case_id:8} {v:13} {why}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({r.case_id: {"verdict": verdict(r), "behavior": r.behavior.value,
                                   "close": r.behavior_close.value, "ms": r.duration}
                       for r in results}, fh, indent=1)
    if args.server == "uvicorn":
        return 0
    bad = unexpected(results)
    if bad:
        print(f"\nnot OK and not explained: {' '.join(c for c, _v in bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
