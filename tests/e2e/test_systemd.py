"""systemd integration without systemd as PID 1 (issue #6): the real protocols, real processes.

- socket activation through systemd-socket-activate (a Unix and a TCP socket, with names);
- sd_notify to a datagram socket of the test's (a path and an abstract ``@`` name): READY=1
  only after every worker's lifespan startup, STATUS=, WATCHDOG=1, STOPPING=1, their order,
  and a stalled event loop (stdout blocked, as when journald stops reading) stopping the pings;
- the unit files: ``systemd-analyze verify`` and the sandbox's exposure score.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.util import alive, wait_for
from tests.server import ROOT, children, free_port

SIDECAR_BIN = Path(sys.executable).parent / "sidecar"
UNITS = ROOT / "systemd"
APP = "tests.e2e.systemd_apps:app"
F_SETPIPE_SZ = 1031


class NotifyListener:
    """The service manager's end of sd_notify: a datagram socket, messages kept with the time
    they arrived.  ``address`` is what goes into NOTIFY_SOCKET."""

    def __init__(self, directory: str, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"sidecar-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = os.path.join(directory, "notify.sock")
            self.sock.bind(self.address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict, str]] = []
        self.on_message = None  # called in the reader thread, as the message arrives
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            text = data.decode()
            fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
            if self.on_message is not None:
                self.on_message(fields)
            self.messages.append((time.monotonic(), fields, text))

    def kinds(self) -> list[str]:
        """READY / STATUS / WATCHDOG / STOPPING / RELOADING, one per message (the first key)."""
        return [text.split("=", 1)[0] for _, _, text in self.messages]

    def since(self, index: int, key: str) -> list[dict]:
        return [f for _, f, _ in self.messages[index:] if key in f]

    def wait(self, key: str, timeout: float, after: int = 0) -> dict:
        return wait_for(lambda: (self.since(after, key) or [None])[0], timeout,
                        what=f"{key} from sd_notify")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _sidecar_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sidecar", APP, "--app-dir", str(ROOT), "--workers", "2",
            "--timeout-graceful-shutdown", "5", *args]


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in children(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
            raise
    return proc.returncode


@pytest.fixture
def tmp():
    with tempfile.TemporaryDirectory(prefix="sd-") as d:  # short: sun_path is 108 bytes
        yield d


# --- socket activation -----------------------------------------------------------------------

def test_socket_activation_unix_and_tcp(tmp):
    """systemd-socket-activate opens a Unix and a TCP socket, and execs sidecar on the first
    connection (which waits in the backlog meanwhile); both serve, workers do not inherit
    LISTEN_*, and the socket file is left for its owner when we exit."""
    uds, port = os.path.join(tmp, "app.sock"), free_port()
    err = open(os.path.join(tmp, "err.log"), "wb")
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", uds, "-l", f"127.0.0.1:{port}", "--fdname=web:tcp",
         "-E", "PYTHONUNBUFFERED=1", "-E", f"PATH={os.environ['PATH']}",
         *_sidecar_cmd("--no-access-log")],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: os.path.exists(uds), 10, what="the activated socket file")
        # the first connection starts the server: it is answered once the workers are ready
        with httpx.Client(transport=httpx.HTTPTransport(uds=uds), base_url="http://sc",
                          timeout=30) as c:
            r = c.get("/first")
        assert r.status_code == 200
        body = r.json()
        assert body["path"] == "/first"
        assert body["environ"] == []  # no LISTEN_* in the worker
        assert body["pid"] in children(proc.pid)
        r = httpx.get(f"http://127.0.0.1:{port}/tcp", timeout=10)
        assert r.status_code == 200 and r.json()["path"] == "/tcp"
        log = Path(tmp, "err.log").read_text()
        assert f"unix:{uds}" in log and f"http://127.0.0.1:{port}" in log  # "ready on ..."
        # no defaults on top of the activated sockets, and no control socket (no directory)
        made = sorted(n for n in os.listdir(tmp) if not n.startswith("started."))
        assert made == ["app.sock", "err.log"]
    finally:
        code = _stop(proc)
        err.close()
    assert code == 0, Path(tmp, "err.log").read_text()
    assert os.path.exists(uds)  # not ours: systemd's socket unit owns (and removes) it


def _run_with_env(tmp: str, script: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run sidecar from a shell that sets LISTEN_PID to the pid it execs sidecar in."""
    cmd = " ".join(f"'{a}'" for a in _sidecar_cmd("--uds", os.path.join(tmp, "s.sock")))
    return subprocess.run(["sh", "-c", f"{script} exec {cmd}"], cwd=tmp, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("script,message", [
    ("export LISTEN_PID=$$ LISTEN_FDS=two;", "LISTEN_FDS='two' is not a number"),
    ("exec 3</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1;",
     "descriptor 3 (unknown) is not a socket"),
    ("export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=a:b;", "LISTEN_FDNAMES has 2 names for 1"),
    ("export LISTEN_PID=$$ LISTEN_FDS=1;", "descriptor 3 is not open"),
])
def test_bad_activation_variables_are_one_line_and_exit_2(tmp, script, message):
    out = _run_with_env(tmp, script)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not os.path.exists(os.path.join(tmp, "s.sock"))


def test_listen_fds_for_another_pid_are_ignored(tmp):
    """A parent that did not clear its LISTEN_* (LISTEN_PID is not ours): ignored, warned."""
    proc = subprocess.Popen(_sidecar_cmd("--uds", os.path.join(tmp, "s.sock")), cwd=tmp,
                            env=dict(os.environ, LISTEN_FDS="1", LISTEN_PID="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    uds = os.path.join(tmp, "s.sock")
    try:
        # the socket listens from the start; a connection waits in its backlog until ready
        wait_for(lambda: os.path.exists(uds), 30, what="the server's own socket")
        with httpx.Client(transport=httpx.HTTPTransport(uds=uds), base_url="http://sc",
                          timeout=30) as c:
            assert c.get("/x").json()["environ"] == []
    finally:
        assert _stop(proc) == 0
    with proc.stderr:
        assert "LISTEN_FDS is meant for pid 1" in proc.stderr.read()


# --- sd_notify -------------------------------------------------------------------------------

def test_notify_ready_after_lifespan_status_watchdog_reload_stopping(tmp):
    """READY=1 arrives only once both workers finished lifespan startup (their marks exist
    when it arrives), carries a STATUS; WATCHDOG=1 comes every half WATCHDOG_USEC; a SIGHUP
    reload is RELOADING=1 ... READY=1 around the new workers' startup; SIGTERM sends
    STOPPING=1 last.  NOTIFY_SOCKET is an abstract name (``@...``)."""
    listener = NotifyListener(tmp, abstract=True)
    marks_at_ready: list[list[str]] = []
    listener.on_message = lambda f: marks_at_ready.append(
        sorted(n for n in os.listdir(tmp) if n.startswith("started."))) if "READY" in f else None
    uds = os.path.join(tmp, "s.sock")
    proc = subprocess.Popen(
        _sidecar_cmd("--uds", uds, "--no-access-log"), cwd=tmp, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="400000",
                 STARTUP_DELAY="2.0"))
    try:
        # during the (slow) lifespan startup: the control socket answers "starting", and the
        # first STATUS= says so too
        ctl = uds + ".ctl"
        wait_for(lambda: os.path.exists(ctl), 10, what="the control socket")
        out = subprocess.run([sys.executable, "-m", "sidecar", "status", "--control", ctl,
                              "--json"], capture_output=True, text=True, timeout=30)
        early = json.loads(out.stdout)
        assert early["state"] == "starting" and listener.since(0, "READY") == []
        assert [w["state"] for w in early["workers"]] == ["starting", "starting"]
        first_status = listener.wait("STATUS", 10)["STATUS"]
        assert first_status.startswith("starting: 0/2 workers ready"), first_status
        ready = listener.wait("READY", 30)
        workers = children(proc.pid)
        assert marks_at_ready == [sorted(f"started.{pid}" for pid in workers)]
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith("2/2 workers ready, 0 in flight"), ready
        # pings every 0.2 s, from the start (before READY too: start-up may be slow)
        kinds = listener.kinds()
        assert "WATCHDOG" in kinds[:kinds.index("READY")]
        n = len(listener.messages)
        wait_for(lambda: len(listener.since(n, "WATCHDOG")) >= 5, 10, what="5 more pings")
        # the periodic STATUS (every 5 s) says the same as the one with READY
        status = listener.wait("STATUS", 10, after=n)
        assert status["STATUS"].startswith("2/2 workers ready"), status
        with httpx.Client(transport=httpx.HTTPTransport(uds=uds), base_url="http://sc") as c:
            assert c.get("/").json()["environ"] == []  # workers: no NOTIFY_*/WATCHDOG_*
        # SIGHUP: RELOADING=1 (with the monotonic clock) at once, READY=1 only once the new
        # workers passed their (2 s) lifespan startup
        n = len(listener.messages)
        proc.send_signal(signal.SIGHUP)
        reloading = listener.wait("RELOADING", 10, after=n)
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 < now_usec - int(reloading["MONOTONIC_USEC"]) < 10_000_000
        listener.wait("READY", 60, after=n)
        assert len(marks_at_ready) == 2 and len(marks_at_ready[1]) == 4, marks_at_ready
        new = wait_for(lambda: set(children(proc.pid)) - set(workers) if len(
            set(children(proc.pid)) - set(workers)) == 2 else None, 30, what="the new workers")
        assert set(marks_at_ready[1]) - set(marks_at_ready[0]) == {f"started.{p}" for p in new}
    finally:
        code = _stop(proc)
        listener.close()
    assert code == 0
    kinds = [k for k in listener.kinds() if k in ("READY", "RELOADING", "STOPPING")]
    assert kinds == ["READY", "RELOADING", "READY", "STOPPING"], kinds


def test_watchdog_stops_while_the_event_loop_is_stalled(tmp):
    """Block the front-end's loop for real: its stdout (access log) is a pipe nobody reads, as
    when journald is stuck.  The loop then hangs in write(2) and the WATCHDOG=1 pings stop (a
    thread pinging would carry on), so systemd would restart the service.  Reading the pipe
    again unblocks the loop and the pings resume."""
    listener = NotifyListener(tmp)  # a path this time
    uds = os.path.join(tmp, "s.sock")
    rfd, wfd = os.pipe()
    fcntl.fcntl(wfd, F_SETPIPE_SZ, 4096)  # one page: a few dozen access lines fill it
    proc = subprocess.Popen(_sidecar_cmd("--uds", uds), cwd=tmp, stdout=wfd,
                            stderr=subprocess.DEVNULL,
                            env=dict(os.environ, NOTIFY_SOCKET=listener.address,
                                     WATCHDOG_USEC="400000", STARTUP_DELAY="0"))
    os.close(wfd)
    drained = threading.Event()
    try:
        listener.wait("READY", 30)
        # requests until one hangs with the pipe full: the loop is stuck writing to it (a
        # timeout with room left in the pipe is only a slow machine: go on)
        def pipe_full() -> bool:
            buf = fcntl.ioctl(rfd, termios.FIONREAD, b"\0\0\0\0")
            return int.from_bytes(buf, sys.byteorder) > 4096 - 512  # no room for one more line

        with httpx.Client(transport=httpx.HTTPTransport(uds=uds), base_url="http://sc",
                          timeout=3.0) as c:
            for i in range(2000):
                try:
                    c.get(f"/fill/{'x' * 200}")
                except httpx.TimeoutException:
                    if pipe_full():
                        break
            else:
                pytest.fail("2000 requests with nobody reading stdout, and no stall")
        time.sleep(0.5)  # pings sent before the stall have surely arrived by now
        mark = len(listener.messages)
        time.sleep(2.0)  # ten ping intervals
        assert listener.since(mark, "WATCHDOG") == [], "pings went on while the loop was stuck"
        assert alive(proc.pid)

        def drain():
            while os.read(rfd, 65536):
                pass
            drained.set()

        threading.Thread(target=drain, daemon=True).start()
        listener.wait("WATCHDOG", 10, after=mark)  # the loop runs again: pings are back
        with httpx.Client(transport=httpx.HTTPTransport(uds=uds), base_url="http://sc",
                          timeout=10) as c:
            assert c.get("/after").status_code == 200
    finally:
        code = _stop(proc)
        listener.close()
        if not drained.is_set():
            os.close(rfd)
    assert code == 0


# --- the unit files --------------------------------------------------------------------------

def _units_for_test(directory: str) -> Path:
    """The units with ExecStart pointing at this checkout's sidecar (verify wants it to exist)."""
    out = Path(directory)
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("/opt/sidecar/.venv/bin/sidecar", str(SIDECAR_BIN))
        (out / unit.name).write_text(text)
    return out


def test_every_unit_file_passes_systemd_analyze_verify(tmp):
    units = _units_for_test(tmp)
    names = sorted(p.name for p in units.iterdir())
    assert names == ["sidecar.service", "sidecar.socket", "sidecar@.service", "sidecar@.socket"]
    for args in (["sidecar.service", "sidecar.socket"], ["sidecar@app1.service",
                                                         "sidecar@app1.socket"]):
        out = subprocess.run(["systemd-analyze", "verify", *[f"./{a}" for a in args]],
                             cwd=units, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        ours = [line for line in out.stderr.splitlines() if "sidecar" in line]
        assert ours == [], "\n".join(ours)


def _exposure(unit: Path) -> float:
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                          str(unit)], cwd=unit.parent, capture_output=True, text=True,
                         timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert m, out.stdout + out.stderr
    return float(m.group(1))


@pytest.mark.parametrize("unit", ["sidecar.service", "sidecar@.service"])
def test_service_sandbox_exposure_is_2_or_lower(tmp, unit):
    units = _units_for_test(tmp)
    score = _exposure(units / unit)
    assert score <= 2.0, f"{unit}: exposure {score}"
    # the figure the docs give must be the one measured
    assert f"exposure level **{score}**" in (ROOT / "docs" / "deployment.md").read_text()


def _expand(group: str, seen: set | None = None) -> set[str]:
    seen = set() if seen is None else seen
    out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True,
                         text=True, timeout=30, check=True)
    names = set()
    for line in out.stdout.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("@"):
            if item not in seen:
                seen.add(item)
                names |= _expand(item, seen)
        else:
            names.add(item)
    return names


def test_system_call_filter_allows_what_the_rings_and_the_pool_use():
    """SystemCallFilter=@system-service minus @privileged must keep shared memory, eventfd
    doorbells, pidfds, descriptor passing and spawning workers working."""
    unit = (UNITS / "sidecar.service").read_text()
    assert "SystemCallFilter=@system-service\n" in unit
    denied = re.findall(r"^SystemCallFilter=~(.*)$", unit, re.M)
    allowed = _expand("@system-service")
    for group in " ".join(denied).split():
        allowed -= _expand(group) if group.startswith("@") else {group}
    needed = {"eventfd2", "pidfd_open", "mmap", "munmap", "ftruncate", "openat", "unlink",
              "sendmsg", "recvmsg", "epoll_wait", "epoll_ctl", "clone", "clone3", "execve",
              "wait4", "kill", "socket", "bind", "listen", "accept4", "sendto", "prlimit64"}
    assert needed - allowed == set()


# --- the notifier's protocol logic (in-process, a real datagram socket) ----------------------

def test_notifier_reload_watchdog_pid_and_no_socket(tmp):
    """RELOADING=1 with MONOTONIC_USEC, then READY=1 even when the reload fails; WATCHDOG_PID
    of another process disables the pings; without NOTIFY_SOCKET every call is a no-op; the
    variables are removed from the environment given."""
    import asyncio

    from sidecar.systemd import Notifier

    listener = NotifyListener(tmp)
    try:
        env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "2000000",
               "WATCHDOG_PID": str(os.getpid())}
        n = Notifier(env)
        assert env == {} and n.watchdog_interval == 1.0

        async def failing_reload():
            raise RuntimeError("new workers failed")

        with pytest.raises(RuntimeError):
            asyncio.run(n.around_reload(failing_reload()))
        wait_for(lambda: len(listener.messages) == 2, 5, what="two messages")
        (_, first, _), (_, second, _) = listener.messages
        assert first["RELOADING"] == "1"
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 < now_usec - int(first["MONOTONIC_USEC"]) < 5_000_000
        assert second == {"READY": "1"}
        # a reload cut short by shutdown: no READY=1 after STOPPING=1

        async def slow_reload():
            n.stopping()

        asyncio.run(n.around_reload(slow_reload()))
        wait_for(lambda: len(listener.messages) == 4, 5, what="RELOADING, STOPPING")
        time.sleep(0.2)  # a READY=1 would have arrived by now
        assert [k for k in listener.kinds()[2:]] == ["RELOADING", "STOPPING"]
        n.close()
        other = Notifier({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "2000000",
                          "WATCHDOG_PID": "1"})
        assert other.enabled and other.watchdog_interval is None
        off = Notifier({})
        assert not off.enabled and off.send("READY=1") is False
    finally:
        listener.close()
