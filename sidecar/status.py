"""Ask a running server over its control socket:

    sidecar status [--control PATH] [--json]     its workers, rings and counters
    sidecar reload [--control PATH] [--timeout S] the SIGHUP reload, returning when it is over

Exit codes: 0 the server answered (reload: the new workers serve); 1 it could not be reached
or answered with an error (reload: it failed, the old workers keep serving); 2 usage.  One
line on stderr for any failure, like the server's own CLI.
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
        except OSError as exc:
            raise StatusError(f"cannot reach {path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(json.dumps(cmd).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise StatusError(f"{path}: no answer within {timeout:g}s") from None
        except OSError as exc:
            raise StatusError(f"{path}: {exc.strerror or exc}") from None
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


def _parse(prog: str, description: str, argv: list[str], extra) -> argparse.Namespace | None:
    p = _Parser(prog=prog, description=description)
    p.add_argument("--control", metavar="PATH",
                   help="the server's control socket (default: $SIDECAR_CONTROL, "
                        "$RUNTIME_DIRECTORY/control.sock, ./sidecar.sock.ctl)")
    extra(p)
    try:
        args = p.parse_args(argv)
    except StatusError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return None
    args.control = args.control or os.environ.get("SIDECAR_CONTROL") \
        or default_path(os.environ.get("SIDECAR_UDS", "sidecar.sock"))
    return args


def main(argv: list[str]) -> int:
    args = _parse("sidecar status", "Show a running sidecar's workers.", argv,
                  lambda p: p.add_argument("--json", action="store_true",
                                           help="print the raw status as JSON"))
    if args is None:
        return 2
    try:
        st = request(args.control, {"cmd": "status"})["status"]
    except StatusError as exc:
        print(f"sidecar status: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(st, indent=2) if args.json else render(st))
    return 0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def reload_main(argv: list[str]) -> int:
    """``sidecar reload``: what systemd's ExecReload= runs.  Unlike ``kill -HUP``, it returns
    when the reload is over and fails when the new workers could not start."""
    args = _parse("sidecar reload", "Replace a running sidecar's workers (zero downtime), "
                  "waiting until the new ones serve.", argv,
                  lambda p: p.add_argument("--timeout", type=_positive, default=600.0,
                                           metavar="S", help="give up after S seconds (600)"))
    if args is None:
        return 2
    try:
        request(args.control, {"cmd": "reload"}, timeout=args.timeout)
    except StatusError as exc:
        print(f"sidecar reload: error: {exc}", file=sys.stderr)
        return 1
    print("sidecar reload: the new workers serve")
    return 0
