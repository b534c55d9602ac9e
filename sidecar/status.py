"""Ask a running server over its control socket:

    sidecar status [WHICH] [--json]          its workers, rings and counters
    sidecar status [WHICH] --ready | --live  probes: exit 0 or 1, one line (Kubernetes)
    sidecar reload [WHICH] [--timeout S]     the SIGHUP reload, returning when it is over

WHICH names the server as it was started (``find_control``): ``--control PATH``, ``--uds
PATH`` (its control socket is ``PATH.ctl``), ``--bind HOST:PORT`` (a server without a Unix
socket has its control socket in the runtime directory, named after its first TCP listener:
``/run/sidecar/127.0.0.1:8000.ctl``) or ``--pid FILE`` (the process's own control socket).
Without one: ``$SIDECAR_CONTROL``, ``$RUNTIME_DIRECTORY/control.sock`` (systemd's
ExecReload=), ``$SIDECAR_UDS.ctl``, else the one server that answers in the default places
(``./sidecar.sock.ctl``, the runtime directory and the units' ``/run/sidecar/NAME/``); none
or several is an error that says which.

Exit codes: 0 the server answered (reload: the new workers serve); 1 it could not be found,
reached or answered with an error (reload: it failed, the old workers keep serving); 2 usage.
One line on stderr for any failure, like the server's own CLI.
"""
from __future__ import annotations

import argparse
import glob
import ipaddress
import json
import os
import socket
import sys

from sidecar.frontend.control import runtime_dir, tcp_name

TIMEOUT = 5.0  # seconds; a live front-end answers in milliseconds
PROBE_TIMEOUT = 2.0  # seconds, for each socket tried while looking for a server
HOW = "name it with --bind, --pid, --uds or --control"


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


# --- finding the server's control socket ------------------------------------------------------

def _probe(path: str) -> dict | None:
    """The status of the server on ``path``, or None if nothing answers there (a stale socket
    of a killed server, another user's, not a control socket)."""
    try:
        return request(path, {"cmd": "status"}, timeout=PROBE_TIMEOUT)["status"]
    except (StatusError, KeyError, TypeError):
        return None


def default_places(environ=os.environ) -> list[str]:
    """Every control socket that may belong to a server started with defaults: the one of
    ``./sidecar.sock``, and those in the runtime directory (TCP-only servers' ``*.ctl``, the
    systemd units' ``NAME/control.sock``)."""
    rundir = runtime_dir(environ)
    found = [p for p in ["sidecar.sock.ctl"] if os.path.lexists(p)]
    found += sorted(glob.glob(os.path.join(glob.escape(rundir), "*.ctl")))
    found += sorted(glob.glob(os.path.join(glob.escape(rundir), "*", "control.sock")))
    seen: set[str] = set()   # the same socket twice when run from the runtime directory
    return [p for p in found if not (os.path.abspath(p) in seen or seen.add(os.path.abspath(p)))]


def _live(paths: list[str]) -> list[tuple[str, dict]]:
    return [(p, st) for p in paths if (st := _probe(p)) is not None]


def _lone(environ=os.environ) -> str:
    live = _live(default_places(environ))
    if len(live) == 1:
        return live[0][0]
    if not live:
        raise StatusError(f"no running sidecar found (looked at ./sidecar.sock.ctl and "
                          f"{runtime_dir(environ)}/): {HOW}")
    servers = ", ".join(f"pid {st['pid']} at {p}" for p, st in live)
    raise StatusError(f"{len(live)} sidecars are running ({servers}): {HOW}")


def _addresses(spec: str) -> tuple[set[str], int]:
    """The ``HOST:PORT`` names (as ``tcp_name`` spells them, without ``.ctl``) a ``--bind``
    may have been bound as: an IP literal as is, a host name as it resolves."""
    from sidecar.frontend.listeners import ListenerError, parse_bind

    try:
        host, port = parse_bind(spec)
    except ListenerError as exc:
        raise StatusError(str(exc)) from None
    try:
        hosts = {str(ipaddress.ip_address(host))}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise StatusError(f"--bind {spec}: {exc.strerror}") from None
        hosts = {info[4][0] for info in infos}
    return {tcp_name(h, port).removesuffix(".ctl") for h in hosts}, port


def _by_bind(spec: str, environ=os.environ) -> str:
    """The control socket named after ``spec`` in the runtime directory; failing that (the
    server listens there, but it was not its first --bind, or it listens on 0.0.0.0), the one
    server in the default places that says it listens on ``spec``'s port at that address or
    a wildcard one."""
    names, port = _addresses(spec)
    rundir = runtime_dir(environ)
    for name in sorted(names):
        path = os.path.join(rundir, name + ".ctl")
        if os.path.lexists(path):
            return path
    wildcard = {tcp_name(h, port).removesuffix(".ctl") for h in ("0.0.0.0", "::")}
    live = [p for p, st in _live(default_places(environ))
            if any(listener.split("://", 1)[-1] in names | wildcard
                   for listener in st.get("listeners", []))]
    if len(live) == 1:
        return live[0]
    if not live:
        raise StatusError(f"no running sidecar listens on {spec} (no {rundir}/"
                          f"{min(names)}.ctl; started as another user, or with --uds?)")
    raise StatusError(f"several sidecars listen on {spec} ({', '.join(live)}): use --control")


def _unix_listeners(pid: int) -> list[str]:
    """The paths of the listening Unix stream sockets process ``pid`` holds (Linux /proc)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open(f"/proc/{pid}/net/unix") as fh:
            rows = fh.read().splitlines()[1:]
    except OSError:
        return []
    paths = []
    for row in rows:
        cols = row.split()
        # Num RefCount Protocol Flags Type St Inode Path; Flags 0x10000: listening; Type 1: stream
        if len(cols) >= 8 and cols[6] in inodes and int(cols[3], 16) & 0x10000 \
                and int(cols[4], 16) == 1 and not cols[7].startswith("@"):
            paths.append(cols[7])
    return paths


def _by_pid(pid_file: str, environ=os.environ) -> str:
    """The control socket of the process whose pid ``pid_file`` holds (the server's --pid):
    among its listening sockets, the one with a control socket's default name that answers
    with that pid; else one in the default places that does."""
    try:
        with open(pid_file) as fh:
            pid = int(fh.read().strip())
    except OSError as exc:
        raise StatusError(f"cannot read the pid file {pid_file}: {exc.strerror}") from None
    except ValueError:
        raise StatusError(f"{pid_file}: not a pid file") from None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise StatusError(f"pid {pid} (from {pid_file}) is not running") from None
    except PermissionError:
        pass  # another user's: its socket (0600) will not answer either, and we say so below
    own = [p for p in _unix_listeners(pid) if p.endswith(".ctl") or
           os.path.basename(p) == "control.sock"]
    for path, st in _live(own) + _live([p for p in default_places(environ) if p not in own]):
        if st.get("pid") == pid:
            return path
    raise StatusError(f"pid {pid} (from {pid_file}) has no control socket that answers "
                      "(started with --no-control, or as another user?)")


def find_control(args: argparse.Namespace, environ=os.environ) -> str:
    """The control socket ``args`` (``--control``, ``--uds``, ``--bind``, ``--pid``) name, or
    the environment's, or the one server running in the default places."""
    if args.control:
        return args.control
    if args.uds:
        return args.uds + ".ctl"
    if args.bind:
        return _by_bind(args.bind, environ)
    if args.pid:
        return _by_pid(args.pid, environ)
    if environ.get("SIDECAR_CONTROL"):
        return environ["SIDECAR_CONTROL"]
    if environ.get("RUNTIME_DIRECTORY"):
        return os.path.join(environ["RUNTIME_DIRECTORY"].split(":")[0], "control.sock")
    if environ.get("SIDECAR_UDS"):
        return environ["SIDECAR_UDS"] + ".ctl"
    return _lone(environ)


def _ring(r: dict) -> str:
    pct = 100.0 * r["used"] / r["capacity"] if r["capacity"] else 0.0
    return f"{pct:.1f}%"


def render(st: dict) -> str:
    lines = [f"sidecar pid {st['pid']}  {st['state']}  up {st['uptime']:.0f}s  app {st['app']}",
             f"listening: {' '.join(st['listeners']) or '-'}",
             f"connections {st['connections']} (HTTP/2 {st.get('http2_connections', 0)}: "
             f"{st.get('http2_streams', 0)} streams, at most "
             f"{st.get('http2_streams_max', 0)} on one)  waiting {st['waiting']}  "
             f"requests {st['requests']}  restarts {st['restarts']}", ""]
    rows = [("worker", "pid", "state", "inflight", "requests", "restarts", "ring>worker",
             "ring>host")]
    for w in st["workers"]:
        rows.append((str(w["index"]), str(w["pid"] or "-"), w["state"], str(w["inflight"]),
                     str(w["requests"]), str(w["restarts"]), _ring(w["rings"]["to_worker"]),
                     _ring(w["rings"]["to_host"])))
    _table(lines, rows)
    if st.get("frontends"):   # --frontends N > 1
        rows = [("front-end", "pid", "state", "connections", "inflight", "requests",
                 "restarts", "busy", "shed")]
        for f in st["frontends"]:
            busy = f.get("busy")
            rows.append((str(f["index"]), str(f["pid"] or "-"), f["state"],
                         str(f["connections"]), str(f["inflight"]), str(f["requests"]),
                         str(f["restarts"]), "-" if busy is None else f"{busy:.2f}",
                         str(f.get("shed", 0))))
        lines += ["", _balance_line(st)]
        _table(lines, rows)
    return "\n".join(lines)


def _balance_line(st: dict) -> str:
    """``new TCP connections: front-end 0 (concentrate)``, or to the kernel's hash."""
    mode, target = st.get("frontend_balance", "hash"), st.get("frontend_target", "hash")
    if mode == "hash":
        return "new TCP connections: the kernel's hash (--frontend-balance hash)"
    if target == "hash":
        return "new TCP connections: the kernel's hash (concentrate: every front-end saturated)"
    return f"new TCP connections: front-end {target} (concentrate)"


def _table(lines: list[str], rows: list[tuple]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  ".join(c.ljust(n) for c, n in zip(r, widths)).rstrip())


def _parse(prog: str, description: str, argv: list[str], extra) -> argparse.Namespace | None:
    p = _Parser(prog=prog, description=description)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--control", metavar="PATH", help="the server's control socket")
    which.add_argument("--uds", metavar="PATH", help="the server's --uds (control: PATH.ctl)")
    which.add_argument("--bind", "-b", metavar="HOST:PORT",
                       help="the server listening there (one started with --bind alone)")
    which.add_argument("--pid", metavar="FILE", help="the server whose --pid FILE this is")
    extra(p)
    p.epilog = ("Without one: $SIDECAR_CONTROL, $RUNTIME_DIRECTORY/control.sock, "
                "$SIDECAR_UDS.ctl, else the one server running in ./sidecar.sock.ctl or "
                f"{runtime_dir()}/.")
    try:
        return p.parse_args(argv)
    except StatusError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return None


def readiness(st: dict) -> str | None:
    """Why the server should get no new requests now (None: it should): starting (no worker
    passed lifespan startup yet), stopping (draining for SIGTERM), or no worker ready (all
    down, restarting).  A reload keeps it ready: the old workers serve until the new do."""
    ready = sum(w["state"] == "ready" for w in st["workers"])
    if st["state"] != "ready":
        return f"{st['state']}, {ready}/{len(st['workers'])} workers ready"
    if not ready:
        return f"no worker ready (of {len(st['workers'])})"
    return None


def _status_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    probe = p.add_mutually_exclusive_group()
    probe.add_argument("--ready", action="store_true",
                       help="readiness probe: exit 0 if the server takes requests (ready, with a "
                            "ready worker), else 1")
    probe.add_argument("--live", action="store_true",
                       help="liveness probe: exit 0 if the front-end's event loop answers within "
                            "--timeout (what systemd's watchdog checks), else 1")
    p.add_argument("--timeout", type=_positive, default=TIMEOUT, metavar="S",
                   help=f"give up after S seconds ({TIMEOUT:g})")


def main(argv: list[str]) -> int:
    args = _parse("sidecar status", "Show a running sidecar's workers.", argv, _status_options)
    if args is None:
        return 2
    try:
        st = request(find_control(args), {"cmd": "status"}, timeout=args.timeout)["status"]
    except StatusError as exc:
        print(f"sidecar status: error: {exc}", file=sys.stderr)
        return 1
    if args.live:
        print(f"live: pid {st['pid']} answered ({st['state']})")
    elif args.ready:
        why = readiness(st)
        if why is not None:
            print(f"sidecar status: not ready: {why}", file=sys.stderr)
            return 1
        ready = sum(w["state"] == "ready" for w in st["workers"])
        print(f"ready: {ready}/{len(st['workers'])} workers ready")
    else:
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
        request(find_control(args), {"cmd": "reload"}, timeout=args.timeout)
    except StatusError as exc:
        print(f"sidecar reload: error: {exc}", file=sys.stderr)
        return 1
    print("sidecar reload: the new workers serve")
    return 0
