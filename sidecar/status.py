"""``sidecar status [--control PATH] [--json]``: ask a running server over its control socket.

Exit codes: 0 the server answered; 1 it could not be reached or answered with an error;
2 usage.  One line on stderr for any failure, like the server's own CLI.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from sidecar.frontend.control import default_path

TIMEOUT = 5.0  # seconds; a live front-end answers in milliseconds


class StatusError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line, not usage + error
        raise StatusError(message)


def request(path: str, cmd: dict, timeout: float = TIMEOUT) -> dict:
    """One request/reply on the control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(json.dumps(cmd).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise StatusError(f"cannot reach {path}: {exc.strerror or exc}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise StatusError(f"{path}: not a sidecar control socket (bad reply)") from None
    if not reply.get("ok"):
        raise StatusError(f"{path}: {reply.get('error', 'error')}")
    return reply


def _ring(r: dict) -> str:
    pct = 100.0 * r["used"] / r["capacity"] if r["capacity"] else 0.0
    return f"{pct:.1f}%"


def render(st: dict) -> str:
    lines = [f"sidecar pid {st['pid']}  {st['state']}  up {st['uptime']:.0f}s  app {st['app']}",
             f"listening: {' '.join(st['listeners']) or '-'}",
             f"connections {st['connections']}  waiting {st['waiting']}  "
             f"requests {st['requests']}  restarts {st['restarts']}", ""]
    rows = [("worker", "pid", "state", "inflight", "requests", "restarts", "ring>worker",
             "ring>host")]
    for w in st["workers"]:
        rows.append((str(w["index"]), str(w["pid"] or "-"), w["state"], str(w["inflight"]),
                     str(w["requests"]), str(w["restarts"]), _ring(w["rings"]["to_worker"]),
                     _ring(w["rings"]["to_host"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  ".join(c.ljust(n) for c, n in zip(r, widths)).rstrip())
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = _Parser(prog="sidecar status", description="Show a running sidecar's workers.")
    p.add_argument("--control", metavar="PATH",
                   help="the server's control socket (default: $SIDECAR_CONTROL, "
                        "$RUNTIME_DIRECTORY/control.sock, ./sidecar.sock.ctl)")
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    try:
        args = p.parse_args(argv)
    except StatusError as exc:
        print(f"sidecar status: error: {exc}", file=sys.stderr)
        return 2
    try:
        path = args.control or os.environ.get("SIDECAR_CONTROL") \
            or default_path(os.environ.get("SIDECAR_UDS", "sidecar.sock"))
        st = request(path, {"cmd": "status"})["status"]
    except StatusError as exc:
        print(f"sidecar status: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(st, indent=2) if args.json else render(st))
    return 0
