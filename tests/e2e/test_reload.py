"""Worker replacement without losing a request (issue #5): SIGHUP reload, SIGTTIN/SIGTTOU,
--max-requests (+ jitter), --max-worker-memory.  Real sidecar, real clients, real signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.e2e.fault_apps import tick_body
from tests.e2e.lifecycle import read_chunked, settled_workers, slow_stream
from tests.e2e.util import alive, serving_pids, wait_for
from tests.server import Sidecar


class Load:
    """Client threads looping requests until stopped; every outcome is kept.

        with Load(sc, threads=4) as load: ...
        load.failures  # [(path, repr(error or status)), ...]
    """

    def __init__(self, sc, threads: int = 4, uploads: int = 1, limit: float = 60.0):
        self.sc = sc
        self.ok = 0
        self.pids: set[int] = set()
        self.failures: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit  # bounded even if the test forgets to stop
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._get, args=(i % 2 == 0,), daemon=True)
                         for i in range(threads)]
        self._threads += [threading.Thread(target=self._upload, daemon=True)
                          for _ in range(uploads)]

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _record(self, path: str, r: httpx.Response | None, exc: Exception | None,
                check=None) -> None:
        with self._lock:
            if exc is not None:
                self.failures.append((path, repr(exc)))
            elif r.status_code != 200 or (check is not None and not check(r)):
                self.failures.append((path, f"{r.status_code} {r.content[:200]!r}"))
            else:
                self.ok += 1
                self.pids.add(r.json()["pid"])

    def _get(self, uds: bool) -> None:
        with self.sc.client(uds=uds, timeout=30) as c:
            while self._running():
                try:
                    r, exc = c.get("/pid"), None
                except httpx.HTTPError as e:
                    r, exc = None, e
                self._record("/pid", r, exc)

    def _upload(self) -> None:
        body = os.urandom(300_000)
        with self.sc.client(timeout=30) as c:
            while self._running():
                try:
                    r, exc = c.post("/upload", content=body), None
                except httpx.HTTPError as e:
                    r, exc = None, e
                self._record("/upload", r, exc, lambda r: r.json()["bytes"] == len(body))

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        wait_for(lambda: self.ok >= 10, 30, what="the load to get going")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def _log_has(sc, text: str, count: int = 1) -> bool:
    return sc.log().count(text) >= count


# --- SIGHUP ---------------------------------------------------------------------------------

def test_sighup_under_load_loses_nothing_and_replaces_every_worker():
    with Sidecar("tests.e2e.fault_apps:app", "--no-access-log", ready_path="/pid",
                 workers=2) as sc:
        old = set(sc.worker_pids())
        assert len(old) == 2
        stream, got = slow_stream(sc, 30, 0.1)  # ~3 s, spans the reload
        with Load(sc, threads=4, uploads=1) as load:
            sc.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: _log_has(sc, "reload complete"), 30, what="the reload")
            new = settled_workers(sc, 2, exclude=old)
            before = load.ok
            wait_for(lambda: load.ok >= before + 50, 30, what="requests after the reload")
        assert not load.failures, (load.failures[:10], sc.log())
        assert set(new) <= load.pids and load.pids & old  # served by both generations
        head, body, complete = read_chunked(stream, got)
        stream.close()
        assert head.startswith(b"HTTP/1.1 200") and complete and body == tick_body(30)
        log = sc.log()
        assert "reloading (SIGHUP)" in log and "Traceback" not in log, log
        assert "stream(s) lost" not in log, log


def test_reload_picks_up_new_code_and_a_failed_reload_keeps_the_old_workers(tmp_path):
    version = tmp_path / "version"
    version.write_text("1")
    with Sidecar("tests.e2e.reload_app:app", ready_path="/", workers=2,
                 env={"RELOAD_APP_VERSION": str(version)}) as sc:
        with sc.client(uds=True, timeout=10) as c:
            assert c.get("/").json()["version"] == "1"
            old = set(sc.worker_pids())

            version.write_text("2")
            sc.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: _log_has(sc, "reload complete"), 30, what="the reload")
            v2 = set(settled_workers(sc, 2, exclude=old))
            assert {c.get("/").json()["version"] for _ in range(10)} == {"2"}

            for n, (bad, reason) in enumerate([("fail", "version fail refuses to start"),
                                               ("broken", "version broken cannot be imported")]):
                version.write_text(bad)
                sc.proc.send_signal(signal.SIGHUP)
                wait_for(lambda: _log_has(sc, "reload failed", n + 1), 30,
                         what=f"the {bad} reload to fail")
                line = [ln for ln in sc.log().splitlines() if "reload failed" in ln][-1]
                assert reason in line and "the old workers keep serving" in line, line
                # the would-be successors are gone; the version-2 workers serve on
                assert set(settled_workers(sc, 2)) == v2
                for _ in range(10):
                    r = c.get("/")
                    assert r.status_code == 200 and r.json()["version"] == "2"
                    assert r.json()["pid"] in v2
        assert "Traceback" not in sc.log(), sc.log()


def _reload_cli(*args: str) -> "subprocess.CompletedProcess":
    return subprocess.run([sys.executable, "-m", "sidecar", "reload", *args],
                          capture_output=True, text=True, timeout=120)


def test_sidecar_reload_returns_when_the_new_workers_serve_and_fails_when_they_cannot(tmp_path):
    """`sidecar reload` (the units' ExecReload=) answers only once the reload is over: when
    it returns 0 every worker is new and serves the new code; when the new workers fail
    their startup it exits 1 with one line and the old workers serve on."""
    version = tmp_path / "version"
    version.write_text("1")
    with Sidecar("tests.e2e.reload_app:app", ready_path="/", workers=2,
                 env={"RELOAD_APP_VERSION": str(version)}) as sc:
        ctl = sc.uds + ".ctl"
        old = set(sc.worker_pids())
        version.write_text("2")
        out = _reload_cli("--control", ctl)
        assert out.returncode == 0, (out.stdout, out.stderr, sc.log())
        assert out.stdout.strip() == "sidecar reload: the new workers serve"
        # no waiting here: the reload is over when the command returns
        with sc.client(uds=True, timeout=10) as c:
            served = [c.get("/").json() for _ in range(10)]
        assert {r["version"] for r in served} == {"2"}
        assert not {r["pid"] for r in served} & old
        v2 = set(settled_workers(sc, 2, exclude=old))

        version.write_text("fail")
        out = _reload_cli("--control", ctl)
        assert out.returncode == 1
        assert out.stderr.strip().splitlines() == [
            f"sidecar reload: error: {ctl}: reload failed: the old workers keep serving "
            "(the server's log says why)"], out.stderr
        assert set(settled_workers(sc, 2)) == v2
        with sc.client(uds=True, timeout=10) as c:
            assert {c.get("/").json()["pid"] for _ in range(10)} <= v2
        log = sc.log()
        assert "reloading (control socket)" in log and "version fail refuses to start" in log
        assert "Traceback" not in log, log


def test_sidecar_reload_mistakes_are_one_line():
    out = _reload_cli("--control", "/nonexistent/ctl.sock")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "sidecar reload: error: cannot reach /nonexistent/ctl.sock: No such file or directory"]
    for bad in (["--timeout", "0"], ["--timeout", "soon"], ["--bogus"]):
        out = _reload_cli(*bad)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, (bad, out.stderr)
        assert out.stderr.startswith("sidecar reload: error: "), out.stderr


# --- SIGTTIN / SIGTTOU ----------------------------------------------------------------------

def test_sigttin_adds_and_sigttou_removes_a_worker_gracefully():
    with Sidecar("tests.e2e.fault_apps:app", ready_path="/pid", workers=2) as sc:
        sc.proc.send_signal(signal.SIGTTIN)
        three = settled_workers(sc, 3)
        wait_for(lambda: _log_has(sc, "worker 2 ready"), 30, what="the third worker")
        assert serving_pids(sc, 3) == set(three)
        # one slow stream per worker (a worker busy with one is passed over); the two
        # workers that go finish theirs before they stop
        streams = [slow_stream(sc, 20, 0.1) for _ in range(3)]
        for index in (2, 1):  # one at a time: a second signal sent while one is pending merges
            sc.proc.send_signal(signal.SIGTTOU)
            wait_for(lambda: _log_has(sc, f"removing worker {index}"), 30,
                     what=f"worker {index} to go")
        for stream, got in streams:
            head, body, complete = read_chunked(stream, got)
            stream.close()
            assert complete and body == tick_body(20), head
        one = settled_workers(sc, 1)
        sc.proc.send_signal(signal.SIGTTOU)  # never below one
        wait_for(lambda: _log_has(sc, "not removing the last worker"), 30, what="the refusal")
        with sc.client(timeout=10) as c:
            assert {c.get("/pid").json()["pid"] for _ in range(5)} == set(one)
        assert "stream(s) lost" not in sc.log(), sc.log()


# --- recycling ------------------------------------------------------------------------------

def test_max_requests_recycles_workers_without_failing_a_request():
    with Sidecar("tests.e2e.fault_apps:app", "--no-access-log", "--max-requests", "40",
                 "--max-requests-jitter", "10", ready_path="/pid", workers=2) as sc:
        first = set(sc.worker_pids())
        with Load(sc, threads=3, uploads=1) as load:
            wait_for(lambda: _log_has(sc, "(--max-requests): recycling", 4), 60,
                     what="four recycles")
            wait_for(lambda: len(load.pids) >= 5, 60, what="five worker generations serving")
        assert not load.failures, (load.failures[:10], sc.log())
        assert load.pids - first
        settled_workers(sc, 2)
        log = sc.log()
        assert "stream(s) lost" not in log and "Traceback" not in log, log


def test_max_worker_memory_recycles_a_worker_above_the_limit():
    with Sidecar("tests.e2e.fault_apps:app", "--max-worker-memory", "120", ready_path="/pid",
                 workers=1) as sc:
        (old,) = sc.worker_pids()
        with sc.client(timeout=30) as c:
            r = c.get("/grow", params={"mb": 150})
            assert r.status_code == 200 and r.json()["pid"] == old
            (new,) = settled_workers(sc, 1, exclude={old})
            assert c.get("/pid").json()["pid"] == new
        line = [ln for ln in sc.log().splitlines() if "--max-worker-memory" in ln][0]
        assert f"pid {old}" in line and "recycling" in line, line
        rss = json.loads(httpx.get(sc.url + "/grow?mb=1", timeout=10).text)
        assert rss["hoard_mib"] == 1  # a fresh worker: the hoard went with the old one


def test_reload_closes_websockets_of_the_old_workers_with_1012():
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with Sidecar("tests.e2e.ws_apps:app", ready_path="/", workers=1) as sc:
        (old,) = sc.worker_pids()
        with connect(f"ws://127.0.0.1:{sc.port}/echo") as ws:
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
            sc.proc.send_signal(signal.SIGHUP)
            try:
                while True:  # nothing else arrives: the close, once the new worker serves
                    ws.recv(timeout=30)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 1012, exc
        settled_workers(sc, 1, exclude={old})
        with connect(f"ws://127.0.0.1:{sc.port}/echo") as ws:  # the new worker takes them
            ws.send("after")
            assert ws.recv(timeout=10) == "after"
        assert "reload complete" in sc.log()


def test_sigterm_during_a_reload_stops_old_and_new_workers(tmp_path):
    version = tmp_path / "version"
    version.write_text("1")
    with Sidecar("tests.e2e.reload_app:app", ready_path="/", workers=2,
                 env={"RELOAD_APP_VERSION": str(version)}) as sc:
        old = sc.worker_pids()
        version.write_text("slow")  # the new workers hang in lifespan startup
        sc.proc.send_signal(signal.SIGHUP)
        starting = wait_for(lambda: [p for p in sc.worker_pids() if p not in old
                                     and alive(p)] if len(sc.worker_pids()) >= 4 else None,
                            30, what="the new workers to start")
        with sc.client(uds=True, timeout=10) as c:  # the old ones serve meanwhile
            assert c.get("/").json()["version"] == "1"
        sc.proc.send_signal(signal.SIGTERM)
        assert sc.proc.wait(30) == 0, sc.log()
        wait_for(lambda: not any(alive(p) for p in old + starting), 10,
                 what="every worker to exit")
        log = sc.log()
        assert "reload failed" not in log and "Traceback" not in log, log



def test_sigterm_during_a_sidecar_reload_answers_it_and_exits_cleanly(tmp_path):
    """Issue 22: a `sidecar reload` waiting on the control socket when SIGTERM comes gets one
    line and exit 1; the server exits 0 without a traceback."""
    version = tmp_path / "version"
    version.write_text("1")
    with Sidecar("tests.e2e.reload_app:app", ready_path="/", workers=1,
                 env={"RELOAD_APP_VERSION": str(version)}) as sc:
        old = sc.worker_pids()
        version.write_text("slow")  # the new worker hangs in lifespan startup
        reload = subprocess.Popen([sys.executable, "-m", "sidecar", "reload", "--uds", sc.uds],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: len(sc.worker_pids()) >= 2, 30, what="the new worker to start")
            assert reload.poll() is None
            sc.proc.send_signal(signal.SIGTERM)
            assert sc.proc.wait(30) == 0, sc.log()
            out, err = reload.communicate(timeout=30)
        finally:
            if reload.poll() is None:
                reload.kill()
                reload.communicate()
        assert reload.returncode == 1 and err.strip().splitlines() == [
            f"sidecar reload: error: {sc.uds}.ctl: the server is shutting down"], err
        wait_for(lambda: not any(alive(p) for p in old), 10, what="the old worker to exit")
        log = sc.log()
        assert "Traceback" not in log and " ERROR " not in log, log


# --- --reload: development mode -----------------------------------------------------------

_RELOAD_APP = '''import os
VERSION = {version!r}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = ("%s %d" % (VERSION, os.getpid())).encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
'''


def test_reload_flag_replaces_the_workers_when_the_app_changes(tmp_path):
    """--reload: saving the app's file brings new workers with the new code; a save that
    breaks the import keeps the old workers serving (and says so); fixing it reloads."""
    module = tmp_path / "devapp.py"
    module.write_text(_RELOAD_APP.format(version="v1"))
    with Sidecar("devapp:app", "--app-dir", str(tmp_path), "--reload", workers=1) as sc:
        with sc.client(timeout=10) as c:
            version, pid = c.get("/").text.split()
            assert version == "v1"
            module.write_text(_RELOAD_APP.format(version="v2-longer"))  # another size: no
            wait_for(lambda: c.get("/").text.startswith("v2-longer "), 30,   # stale .pyc
                     interval=0.1, what="the new code")
            assert c.get("/").text.split()[1] != pid
            assert "devapp.py changed; reloading the workers" in sc.log()

            module.write_text("this is not python\n")
            wait_for(lambda: "reload failed" in sc.log(), 30, interval=0.1,
                     what="the failed reload")
            assert c.get("/").text.startswith("v2-longer ")   # the old workers serve on

            module.write_text(_RELOAD_APP.format(version="v3-fixed-again"))
            wait_for(lambda: c.get("/").text.startswith("v3-fixed-again "), 30, interval=0.1,
                     what="the fixed code")
        assert sc.stop() == 0


def test_reload_dir_needs_reload_and_a_directory(tmp_path):
    for args, message in ((["--reload-dir", str(tmp_path)], "--reload-dir needs --reload"),
                          (["--reload", "--reload-dir", str(tmp_path / "nope")],
                           "not a directory")):
        proc = subprocess.run([sys.executable, "-m", "sidecar", "examples.demo:app", *args],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
