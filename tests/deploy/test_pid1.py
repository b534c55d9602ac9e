"""sidecar as PID 1, as deploy/Containerfile runs it (an exec-form ENTRYPOINT, no init): in a
PID namespace of its own (`unshare --pid --fork --mount-proc`), the kernel delivers it only
the signals it handles.  It must still drain on SIGTERM and exit 0, reload on SIGHUP, and
reap and replace a worker that dies, leaving no zombie.  (No container engine runs here; the
PID namespace is the part of one that decides how PID 1 sees signals.)"""
from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tests.server import ROOT, children


def get(uds: str, path: str, timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("localhost", timeout=timeout)
    conn.sock = socket.socket(socket.AF_UNIX)
    conn.sock.settimeout(timeout)
    conn.sock.connect(uds)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_for(what, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := what():
            return value
        time.sleep(0.05)
    return what()


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rpartition(")")[2].split()[0]


@pytest.fixture
def pid1():
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is missing"
    tmp = tempfile.mkdtemp(prefix="sc-pid1-")
    uds = os.path.join(tmp, "s.sock")
    # as root, a PID namespace needs nothing more; otherwise a user namespace maps us to root
    userns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    log = open(os.path.join(tmp, "log"), "wb")
    proc = subprocess.Popen([unshare, *userns, "--pid", "--fork", "--mount-proc",
                             sys.executable, "-m", "sidecar", "tests.deploy.probe_app:app",
                             "--uds", uds, "--workers", "2", "--app-dir", str(ROOT),
                             "--no-access-log", "--timeout-graceful-shutdown", "10"],
                            stdout=log, stderr=log, cwd=tmp)
    try:
        front = wait_for(lambda: children(proc.pid))
        assert front, "unshare started nothing"
        front = front[0]
        assert wait_for(lambda: os.path.exists(uds) and get(uds, "/")[0] == 200)
        yield proc, front, uds
    finally:
        if proc.poll() is None:
            for pid in [front] + children(front):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, TypeError):
                    pass
            proc.wait(10)
        log.close()
        with open(os.path.join(tmp, "log"), errors="replace") as fh:
            text = fh.read()
        shutil.rmtree(tmp, ignore_errors=True)
        assert "Traceback" not in text, text


def test_sidecar_as_pid_1_restarts_reloads_and_drains(pid1):
    proc, front, uds = pid1
    with open(f"/proc/{front}/status") as fh:
        nspid = next(line.split()[1:] for line in fh if line.startswith("NSpid:"))
    assert nspid == [str(front), "1"], nspid          # PID 1 in its namespace
    assert get(uds, "/parent") == (200, b"1")         # its workers' parent is PID 1
    # a worker killed: reaped (no zombie) and replaced
    victim = children(front)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: victim not in children(front) and len(children(front)) == 2)
    assert [p for p in children(front) if state(p) == "Z"] == []
    assert get(uds, "/")[0] == 200
    # SIGHUP: a reload, as under systemd
    before = set(children(front))
    os.kill(front, signal.SIGHUP)
    assert wait_for(lambda: len(set(children(front))) == 2 and not set(children(front)) & before
                    and all(state(p) != "Z" for p in children(front)))
    assert get(uds, "/")[0] == 200
    # SIGTERM with a request in flight: it finishes, sidecar exits 0 (unshare passes it on)
    result: list = []
    slow = threading.Thread(target=lambda: result.append(get(uds, "/sleep?s=2")))
    slow.start()
    time.sleep(0.5)
    os.kill(front, signal.SIGTERM)
    assert proc.wait(30) == 0
    slow.join(10)
    assert result and result[0][0] == 200, result
    assert not os.path.exists(uds)
