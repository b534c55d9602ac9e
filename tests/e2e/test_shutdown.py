"""Graceful shutdown and the front-end's death, end to end (issue #3; DESIGN.md "Failure
model"): SIGTERM/SIGINT let in-flight requests finish, then everything is gone -- the
process (exit 0), the Unix socket file, the workers, anything in /dev/shm.  After kill -9 of
the front-end the workers notice and exit by themselves."""
from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest

from tests.e2e.util import alive, recv_until_eof, shm_entries, wait_for
from tests.server import Sidecar


def _no_new_shm(before: set[str]) -> None:
    # rings are unlinked as soon as they are mapped; anything new must be someone else's and
    # transient (other tests on this machine), so wait for it to go rather than fail on sight
    wait_for(lambda: not (shm_entries() - before), 10, what=f"/dev/shm to lose "
             f"{sorted(shm_entries() - before)}")


def _refused(sc) -> bool:
    try:
        socket.create_connection(("127.0.0.1", sc.port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_in_flight_request_then_exits_clean(tmp_path, sig):
    shm_before = shm_entries()
    marker = tmp_path / "in-app"
    with Sidecar("tests.e2e.extra_apps:app", ready_path="/pid", workers=2) as sc:
        workers = sc.worker_pids()
        assert len(workers) == 2
        idle = socket.socket(socket.AF_UNIX)  # an idle keep-alive connection: closed at once
        idle.connect(sc.uds)
        idle.settimeout(30)
        s = socket.socket(socket.AF_UNIX)
        s.connect(sc.uds)
        s.settimeout(30)
        s.sendall(b"GET /sleep-marked?s=2&m=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                  % str(marker).encode())
        wait_for(marker.exists, 10, what="the request to reach the app")

        sc.proc.send_signal(sig)
        wait_for(lambda: _refused(sc), 5, what="the listener to close")  # stops accepting
        assert idle.recv(100) == b""  # the idle connection is closed, not kept for the drain
        idle.close()

        out = recv_until_eof(s)  # the in-flight request still gets its whole answer
        s.close()
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), out
        assert b"connection: close" in head.lower()
        assert b'"slept": true' in body

        assert sc.proc.wait(30) == 0, sc.log()
        assert not os.path.exists(sc.uds)
        wait_for(lambda: not any(alive(p) for p in workers), 10, what="the workers to exit")
        log = sc.log()
        assert "Traceback" not in log, log
        assert f"shutting down ({signal.Signals(sig).name})" in log
    _no_new_shm(shm_before)


def test_shutdown_timeout_bounds_the_drain(tmp_path):
    """A request that outlives --timeout-graceful-shutdown does not keep the server up."""
    marker = tmp_path / "in-app"
    with Sidecar("tests.e2e.extra_apps:app", "--timeout-graceful-shutdown", "1",
                 ready_path="/pid", workers=1) as sc:
        workers = sc.worker_pids()
        s = socket.create_connection(("127.0.0.1", sc.port))
        s.settimeout(60)
        s.sendall(b"GET /sleep-marked?s=600&m=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                  % str(marker).encode())
        wait_for(marker.exists, 10, what="the request to reach the app")
        sc.proc.send_signal(signal.SIGTERM)
        try:
            code = sc.proc.wait(30)  # 1 s drain + the worker's own grace: well under 30 s
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 30 s after SIGTERM:\n{sc.log()}") from None
        assert code == 0, sc.log()
        try:
            out = recv_until_eof(s)
        except ConnectionResetError:
            out = b""
        s.close()
        assert b"HTTP/1.1 200" not in out  # it was cut short, whatever the client saw
        assert not os.path.exists(sc.uds)
        wait_for(lambda: not any(alive(p) for p in workers), 10, what="the workers to exit")
        assert "Traceback" not in sc.log(), sc.log()


def test_workers_exit_when_the_frontend_is_killed():
    shm_before = shm_entries()
    with Sidecar("tests.e2e.extra_apps:app", ready_path="/pid", workers=2) as sc:
        workers = sc.worker_pids()
        assert len(workers) == 2
        uds = sc.uds
        with sc.client(uds=True, timeout=10) as c:
            assert c.get("/pid").status_code == 200
        sc.proc.kill()
        sc.proc.wait(10)
        wait_for(lambda: not any(alive(p) for p in workers), 10,
                 what="the orphaned workers to notice and exit")

        # the socket file is left behind by kill -9; the next server takes the stale path
        assert os.path.exists(uds)
        with Sidecar("tests.e2e.extra_apps:app", "--uds", uds, ready_path="/pid",
                     workers=1) as again:
            out = subprocess.run(["curl", "-sS", "--unix-socket", uds, "http://x/pid"],
                                 capture_output=True, timeout=30)
            assert out.returncode == 0 and b'"pid"' in out.stdout, out.stderr
            assert again.proc.pid != sc.proc.pid
    _no_new_shm(shm_before)
