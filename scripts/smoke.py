"""Smoke test of an installed sidecar: the wheel in a clean venv, on any supported Python.

    VENV/bin/python scripts/smoke.py [--version X.Y.Z]

Runs from a temporary directory, away from the source tree, so that what it imports is the
installed package (checked: its compiled ``_ring`` and ``_h1`` come from the venv's
site-packages).  Needs nothing but that package and its dependencies: the standard library's
http.client over the Unix socket, and ``websockets`` (a dependency of sidecar's) for the
WebSocket.  Each check is a line ``smoke: PASS name`` or ``smoke: FAIL name: why``; on a
failure the server's log follows and the exit code is 1.  scripts/smoke.sh runs it on Python
3.12 and 3.13 in CI, tests/packaging/test_wheel.py on the suite's own Python.

Checks: start (every worker ready), HTTP (GET, a 1 MiB POST echoed), a WebSocket echo, a
worker crash (the request gets 502, a new worker serves), a reload (`sidecar reload` returns
once new workers serve), SIGTERM (exit 0, in-flight request finished, /dev/shm as before).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

APP = textwrap.dedent('''
    import asyncio, os, signal

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    return
                await send({"type": "websocket.send", "text": msg.get("text"),
                            "bytes": msg.get("bytes")})
        path = scope["path"]
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if path == "/crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if path == "/slow":
            await asyncio.sleep(1.0)
        out = body if path == "/echo" else str(os.getpid()).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": out})
''')

RESULTS: list[tuple[str, str | None]] = []


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def request(uds: str, method: str, path: str, body: bytes | None = None,
            timeout: float = 10.0) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(uds, timeout)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def check(name: str, cond: bool, why: str = "") -> None:
    RESULTS.append((name, None if cond else (why or "failed")))
    print(f"smoke: {'PASS' if cond else 'FAIL'} {name}{'' if cond else ': ' + why}",
          flush=True)
    if not cond:
        raise SystemExit(1)


def wait_for(what, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(step)
    return what()


def status(sidecar: str, ctl: str) -> dict | None:
    out = subprocess.run([sidecar, "status", "--control", ctl, "--json"], capture_output=True,
                         text=True, timeout=30)
    return json.loads(out.stdout) if out.returncode == 0 else None


def ready_pids(sidecar: str, ctl: str, workers: int) -> set[int] | None:
    st = status(sidecar, ctl)
    if not st or st["state"] != "ready":
        return None
    pids = {w["pid"] for w in st["workers"] if w["state"] == "ready"}
    return pids if len(pids) == workers else None


def shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def run(args: argparse.Namespace, tmp: str) -> None:
    bindir = os.path.dirname(sys.executable)
    sidecar = os.path.join(bindir, "sidecar")
    import sidecar as pkg
    from sidecar import _h1, _ring

    prefix = os.path.realpath(sys.prefix)
    where = [os.path.realpath(m.__file__) for m in (pkg, _ring, _h1)]
    check("installed package", all(w.startswith(prefix + os.sep) for w in where),
          f"imported from {where}, not from {prefix}")
    out = subprocess.run([sidecar, "--version"], capture_output=True, text=True, timeout=30)
    version = out.stdout.split()[1] if out.returncode == 0 and out.stdout.split()[1:] else ""
    check("--version", out.returncode == 0 and (not args.version or version == args.version),
          f"{out.stdout.strip()!r} {out.stderr.strip()!r}, expected {args.version}")

    with open(os.path.join(tmp, "smoke_app.py"), "w") as fh:
        fh.write(APP)
    uds, ctl = os.path.join(tmp, "s.sock"), os.path.join(tmp, "s.ctl")
    log_path = os.path.join(tmp, "server.log")
    shm_before = shm()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sidecar, "smoke_app:app", "--uds", uds, "--control", ctl,
                                 "--workers", "2", "--app-dir", tmp, "--no-access-log",
                                 "--timeout-graceful-shutdown", "10"],
                                cwd=tmp, stdout=log, stderr=log,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        pids = wait_for(lambda: proc.poll() is None and ready_pids(sidecar, ctl, 2), 60, 0.2)
        check("start", bool(pids), f"not ready in 60 s (exit code {proc.poll()})")

        code, body = request(uds, "GET", "/")
        check("http get", code == 200 and int(body) in pids, f"{code} {body[:100]!r}")
        payload = os.urandom(1 << 20)
        code, body = request(uds, "POST", "/echo", payload)
        check("http post 1 MiB", code == 200 and body == payload, f"{code}, {len(body)} bytes")

        from websockets.sync.client import unix_connect
        with unix_connect(uds, "ws://localhost/ws") as ws:
            ws.send("hello")
            text = ws.recv(timeout=10)
            ws.send(b"\x00" * 100_000)
            data = ws.recv(timeout=10)
        check("websocket echo", text == "hello" and data == b"\x00" * 100_000,
              f"{text!r}, {len(data)} bytes")

        code, _ = request(uds, "GET", "/crash")
        after = wait_for(lambda: (p := ready_pids(sidecar, ctl, 2)) and p != pids and p, 30, 0.2)
        st = status(sidecar, ctl) or {}
        code2, body2 = request(uds, "GET", "/")
        check("worker crash", code == 502 and bool(after) and st.get("restarts") == 1
              and code2 == 200, f"crash answered {code}, workers then {after}, restarts "
              f"{st.get('restarts')}, next request {code2}")

        out = subprocess.run([sidecar, "reload", "--control", ctl], capture_output=True,
                             text=True, timeout=90)
        reloaded = ready_pids(sidecar, ctl, 2)
        code, body = request(uds, "GET", "/")
        check("reload", out.returncode == 0 and bool(reloaded) and not reloaded & after
              and code == 200 and int(body) in reloaded,
              f"exit {out.returncode} {out.stderr.strip()!r}, workers {after} -> {reloaded}")

        slow: list = []
        thread = threading.Thread(target=lambda: slow.append(request(uds, "GET", "/slow")))
        thread.start()
        time.sleep(0.3)  # the request is in flight on a worker (it sleeps 1 s)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        thread.join(10)
        leaked = shm() - shm_before
        check("sigterm drain", code == 0 and slow and slow[0][0] == 200 and not leaked
              and not os.path.exists(uds), f"exit {code}, in-flight {slow}, /dev/shm new "
              f"{sorted(leaked)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--version", help="the version `sidecar --version` must print")
    args = p.parse_args()
    label = f"Python {sys.version.split()[0]}"
    with tempfile.TemporaryDirectory(prefix="sc-smoke-") as tmp:
        os.chdir(tmp)
        try:
            run(args, tmp)
        except (SystemExit, Exception) as exc:  # a failed check, or an unexpected error
            if not isinstance(exc, SystemExit):
                print(f"smoke: FAIL {type(exc).__name__}: {exc}", flush=True)
            log = os.path.join(tmp, "server.log")
            if os.path.exists(log):
                with open(log, errors="replace") as fh:
                    sys.stdout.write(fh.read()[-6000:])
            print(f"smoke: {label}: FAILED", flush=True)
            return 1
    print(f"smoke: {label}: all {len(RESULTS)} checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
