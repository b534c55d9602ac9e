"""Several front-end processes in front of one worker pool (--frontends N, issue #27): both
serve, over TCP (SO_REUSEPORT) and the shared Unix socket; one killed with SIGKILL loses only
its own connections and is replaced; SIGHUP and SIGTERM reach both.  Which front-end served a
request is the access log's {frontend_pid}."""
from __future__ import annotations

import json
import os

import httpx
import pytest
import signal
import socket
import subprocess
import sys
import threading
import time

from websockets.sync.client import connect, unix_connect

from tests.e2e.fault_apps import tick_body
from tests.e2e.h2client import H2Client, get
from tests.e2e.lifecycle import read_chunked, settled_workers
from tests.e2e.util import alive, shm_entries, wait_for
from tests.server import Sidecar, free_port

LOG_FORMAT = "{frontend_pid} {worker_pid} {status} {path} {query}"


def _server(*args: str) -> Sidecar:
    """Two front-ends that share TCP connections by the kernel's hash, as a Unix socket's
    (the default, concentrate, sends a quiet server's all to front-end 0:
    test_frontend_balance.py)."""
    return Sidecar("tests.e2e.fault_apps:app", "--frontends", "2", "--frontend-balance",
                   "hash", "--access-log-format", LOG_FORMAT, *args, ready_path="/pid",
                   workers=2, capture_stdout=True)


def _access(sc) -> list[list[str]]:
    with open(sc.stdout_path, errors="replace") as fh:
        return [line.split() for line in fh if line.strip()]


def _status(sc) -> dict:
    out = subprocess.run([sys.executable, "-m", "sidecar", "status", "--json", "--control",
                          sc.uds + ".ctl"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _raw_get(sc, uds: bool, query: str) -> bytes:
    """One request on a connection of its own (each new connection may go to either)."""
    family = socket.AF_UNIX if uds else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(10)
        s.connect(sc.uds if uds else ("127.0.0.1", sc.port))
        s.sendall(b"GET /pid?%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  % query.encode())
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    return got


def _lines(sc, tag: str) -> list[list[str]]:
    """Access lines of requests whose query starts with ``tag``."""
    return [f for f in _access(sc) if len(f) >= 5 and f[4].startswith(tag)]


def _slow_stream(sc, uds: bool, n: int = 25) -> tuple[socket.socket, bytes]:
    """An ``n`` / 10 s streamed response (/tick), read until it started."""
    s = socket.socket(socket.AF_UNIX if uds else socket.AF_INET)
    s.connect(sc.uds if uds else ("127.0.0.1", sc.port))
    s.settimeout(30)
    s.sendall(b"GET /tick?n=%d&d=0.1 HTTP/1.1\r\nHost: x\r\n\r\n" % n)
    got = b""
    while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < 10:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    return s, got


def _served_by(sc, tag: str) -> set[str]:
    """The front-ends (pids) that served those requests."""
    return {f[0] for f in _lines(sc, tag)}


@pytest.fixture(scope="module")
def fe2():
    """One server for the first four tests (the fourth kills a front-end: it goes last)."""
    port = free_port()
    with _server("--metrics", f"127.0.0.1:{port}") as sc:
        sc.metrics_url = f"http://127.0.0.1:{port}/metrics"
        yield sc


def test_both_frontends_serve_over_tcp_and_the_unix_socket_and_status_sums_them(fe2):
    sc = fe2
    main, (child,) = str(sc.proc.pid), sc.frontend_pids()
    both = {main, str(child)}
    for uds, tag in ((False, "tcp"), (True, "uds")):
        for i in range(1, 201):   # new connections until both front-ends took some
            assert _raw_get(sc, uds, f"{tag}={i}").startswith(b"HTTP/1.1 200")
            if i % 10 == 0:
                wait_for(lambda: len(_lines(sc, tag)) == i or None, 5, what="access lines")
                if len(_served_by(sc, tag)) == 2:
                    break
        assert _served_by(sc, tag) == both, (tag, both)
    # the status right after counts every request, front-end 1's too: the supervisor asks
    # it for its figures when asked itself (not its last once-a-second report)
    before = _status(sc)
    for i in range(1, 41):   # new connections until front-end 1 served some of them
        assert _raw_get(sc, i % 2 == 0, f"now={i}").startswith(b"HTTP/1.1 200")
        wait_for(lambda: len(_lines(sc, "now")) == i or None, 5, what="access lines")
        if i >= 4 and str(child) in _served_by(sc, "now"):
            break
    st = _status(sc)
    lines = _lines(sc, "now")
    for k, pid in enumerate((main, str(child))):
        served = sum(f[0] == pid for f in lines)
        assert st["frontends"][k]["requests"] - before["frontends"][k]["requests"] == served, \
            (k, served, before["frontends"], st["frontends"])
    assert st["requests"] - before["requests"] == len(lines)
    assert [f["pid"] for f in st["frontends"]] == [int(main), child]
    assert sum(f["requests"] for f in st["frontends"]) == st["requests"]
    assert sum(w["requests"] for w in st["workers"]) == st["requests"]
    assert all(f["state"] == "ready" for f in st["frontends"])


def test_http2_and_websockets_are_served_by_both_frontends(fe2):
    """h2c (prior knowledge) and WebSockets through front-end 1 as through front-end 0: new
    connections, over TCP and the Unix socket in turn, until each front-end served each."""
    sc = fe2
    both = {str(sc.proc.pid), str(sc.frontend_pids()[0])}
    for tag in ("h2", "ws"):
        for i in range(1, 121):
            uds = i % 2 == 0
            if tag == "h2":
                c = H2Client(uds=sc.uds) if uds else H2Client(sc.port)
                status, _, body = c.response(c.request(get(f"/pid?h2={i}")))
                c.sock.close()
                assert status == 200 and b"pid" in body
            else:
                path = f"/echo?ws={i}"
                with (unix_connect(sc.uds, f"ws://localhost{path}") if uds else
                      connect(f"ws://127.0.0.1:{sc.port}{path}")) as ws:
                    ws.send(f"m{i}")
                    assert ws.recv(10) == f"m{i}"
            if i % 10 == 0:
                wait_for(lambda: len(_lines(sc, tag)) == i or None, 5, what="access lines")
                if len(_served_by(sc, tag)) == 2:
                    break
        assert _served_by(sc, tag) == both, (tag, _lines(sc, tag)[-3:])


def test_status_and_metrics_right_after_count_both_frontends_and_a_stuck_one_is_not_waited_for(
        fe2):
    """A streamed response open on each front-end shows in the status and the scrape at once;
    with front-end 1 stopped (SIGSTOP), both answer after the short wait (1 s) with its last
    figures, their age given."""
    sc = fe2
    child = sc.frontend_pids()[0]
    streams, seen = [], set()
    for i in range(12):   # new connections until each front-end has one streaming
        streams.append(_slow_stream(sc, uds=i % 2 == 1, n=100)[0])   # 10 s
        st = _status(sc)
        assert sum(f["inflight"] for f in st["frontends"]) == len(streams), st["frontends"]
        seen = {f["index"] for f in st["frontends"] if f["inflight"]}
        if seen == {0, 1}:
            break
    assert seen == {0, 1}, st["frontends"]
    text = httpx.get(sc.metrics_url, timeout=10).text
    conns = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
             if line.startswith("sidecar_frontend_connections{")}
    assert all(conns[f'sidecar_frontend_connections{{frontend="{k}"}}'] >= 1
               for k in (0, 1)), conns
    # --frontend-balance hash: the kernel spreads them, nothing is sampled or shed
    assert (st["frontend_balance"], st["frontend_target"]) == ("hash", "hash")
    assert [(f["busy"], f["shed"]) for f in st["frontends"]] == [(None, 0), (None, 0)]
    assert 'sidecar_frontend_balance{mode="hash"} 1' in text
    assert 'sidecar_frontend_target{frontend="0"} 0' in text
    assert "sidecar_frontend_busy_ratio{" not in text
    assert 'sidecar_frontend_shed_total{frontend="1"} 0' in text
    os.kill(child, signal.SIGSTOP)
    try:
        st = _status(sc)
        assert st["frontends"][1]["inflight"] >= 1, st["frontends"]   # its last figures
        assert st["frontends"][1]["figures_age"] >= 0.9, st["frontends"]
        assert httpx.get(sc.metrics_url, timeout=10).status_code == 200
    finally:
        os.kill(child, signal.SIGCONT)
    for s in streams:
        s.close()
    st = wait_for(lambda: (lambda st: st if not sum(f["inflight"] for f in st["frontends"])
                           else None)(_status(sc)), 10, what="the streams to end")
    assert st["frontends"][1]["figures_age"] < 0.9, st["frontends"]   # it answers again
    assert "Traceback" not in sc.log()


class KeepAlive(threading.Thread):
    """One keep-alive connection looping GET /pid?c=NAME&n=I until stopped or it fails."""

    def __init__(self, sc, name: str, uds: bool):
        super().__init__(daemon=True)
        self.sc, self.name, self.uds = sc, name, uds
        self.ok = 0
        self.error: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        family = socket.AF_UNIX if self.uds else socket.AF_INET
        try:
            with socket.socket(family) as s:
                s.settimeout(10)
                s.connect(self.sc.uds if self.uds else ("127.0.0.1", self.sc.port))
                f = s.makefile("rb")
                while not self.stop.is_set() and self.ok < 5000:
                    s.sendall(b"GET /pid?c=%s&n=%d HTTP/1.1\r\nHost: x\r\n\r\n"
                              % (self.name.encode(), self.ok))
                    status = f.readline()
                    if not status.startswith(b"HTTP/1.1 200"):
                        raise ConnectionError(f"got {status!r}")
                    length = 0
                    while (line := f.readline()) not in (b"\r\n", b""):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    f.read(length)
                    self.ok += 1
        except (OSError, ConnectionError) as exc:
            self.error = repr(exc)


def test_kill9_of_one_frontend_loses_only_its_connections_and_it_is_replaced(fe2):
    shm_before = shm_entries()
    sc = fe2
    main, (child,) = str(sc.proc.pid), sc.frontend_pids()
    workers = set(sc.worker_pids())
    conns = [KeepAlive(sc, f"k{i}", uds=i % 2 == 1) for i in range(12)]
    for c in conns:
        c.start()
    wait_for(lambda: all(c.ok >= 3 for c in conns), 20, what="every connection served")
    owner = {}   # connection -> the front-end that serves it (from the access log)
    for f in _access(sc):
        if len(f) >= 5 and f[4].startswith("c="):
            owner[f[4].split("&")[0][2:]] = f[0]
    assert set(owner.values()) == {main, str(child)}, owner   # 12 connections: both
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: all(c.error or c.ok >= 30 for c in conns), 30,
             what="the connections to fail or carry on")
    for c in conns:
        c.stop.set()
    for c in conns:
        c.join(10)
    for c in conns:
        if owner[c.name] == main:
            assert c.error is None and c.ok >= 30, (c.name, c.error, sc.log())
        else:
            assert c.error is not None, c.name   # the killed front-end's own
    new = wait_for(lambda: (lambda p: p if p and p != [child] else None)(
        sc.frontend_pids()), 20, what="a new front-end")
    assert "front-end 1 (pid %d) killed by SIGKILL" % child in sc.log()
    wait_for(lambda: _raw_get(sc, False, "after=1").startswith(b"HTTP/1.1 200")
             and len(_status(sc)["frontends"]) == 2
             and _status(sc)["frontends"][1]["state"] == "ready", 20)
    assert set(sc.worker_pids()) == workers   # the workers carried on
    # the new front-end serves (new connections until it took one)
    for i in range(100):
        _raw_get(sc, i % 2 == 1, f"after={i}")
        if str(new[0]) in _served_by(sc, "after"):
            break
    wait_for(lambda: str(new[0]) in _served_by(sc, "after"), 5, what="the new one serving")
    assert sc.stop() == 0
    assert not shm_entries() - shm_before
    assert not alive(child) and not alive(new[0])


def test_sighup_reload_and_sigterm_drain_reach_both_frontends():
    shm_before = shm_entries()
    with _server() as sc:
        main, (child,) = str(sc.proc.pid), sc.frontend_pids()
        old = set(sc.worker_pids())
        # SIGHUP: new workers serve both front-ends; nothing fails meanwhile
        conns = [KeepAlive(sc, f"h{i}", uds=i % 2 == 0) for i in range(8)]
        for c in conns:
            c.start()
        wait_for(lambda: all(c.ok >= 3 for c in conns), 20, what="every connection served")
        sc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload complete" in sc.log(), 30, what="the reload")
        new = set(settled_workers(sc, 2, exclude=old))
        mark = {c.name: c.ok for c in conns}
        wait_for(lambda: all(c.ok >= mark[c.name] + 20 or c.error for c in conns), 20)
        for c in conns:
            c.stop.set()
        for c in conns:
            c.join(10)
        assert not [c.error for c in conns if c.error], sc.log()
        after = {(f[0], f[1]) for f in _access(sc) if len(f) >= 5 and f[4].startswith("c=h")
                 and int(f[1]) in new}
        assert {fe for fe, _ in after} == {main, str(child)}, after  # both use the new ones
        # SIGTERM: a long response on each front-end finishes, then everything exits
        streams = []
        for _ in range(3):   # batches of long responses until each front-end has one
            batch = [_slow_stream(sc, uds=i % 2 == 1) for i in range(6)]
            streams += batch
            st = _status(sc)   # the figures of the moment, front-end 1's too
            assert sum(f["inflight"] for f in st["frontends"]) >= len(batch), st
            if all(f["inflight"] for f in st["frontends"]):
                break
        assert all(f["inflight"] for f in st["frontends"]), st["frontends"]
        sc.proc.send_signal(signal.SIGTERM)
        for s, got in streams:
            head, body, complete = read_chunked(s, got)
            s.close()
            assert head.startswith(b"HTTP/1.1 200") and complete and body == tick_body(25)
        assert sc.proc.wait(20) == 0
        log = sc.log()
        assert log.count("shutting down (SIGTERM)") == 2 and "Traceback" not in log, log
        assert not alive(child)
    assert not shm_entries() - shm_before


def test_kill9_of_the_main_process_takes_every_front_end_and_worker_with_it():
    """The supervisor killed with SIGKILL (no handler of its runs): the extra front-end and
    the workers follow it at once (their death signal, sidecar/orphan.py), each front-end
    with a response in flight, and nothing is left in /dev/shm."""
    shm_before = shm_entries()
    with _server() as sc:
        # (and front-end 0 answers only once front-end 1 serves: a connection hashed to its
        # TCP socket is never left waiting for it to start)
        assert [f["state"] for f in _status(sc)["frontends"]] == ["ready", "ready"]
        main, (child,) = sc.proc.pid, sc.frontend_pids()
        workers = sc.worker_pids()
        streams = []
        for _ in range(3):   # long responses until each front-end has one in flight
            streams += [_slow_stream(sc, uds=i % 2 == 1)[0] for i in range(4)]
            if both := all(f["inflight"] for f in _status(sc)["frontends"]):   # (fresh)
                break
        assert both, _status(sc)["frontends"]
        t0 = time.monotonic()
        os.kill(main, signal.SIGKILL)
        sc.proc.wait(10)
        wait_for(lambda: not any(alive(p) for p in [child, *workers]) or None, 10,
                 what="the front-end and the workers to exit")
        took = time.monotonic() - t0
        for s in streams:
            s.close()
        assert took < 5.0, took   # the child's drain is ORPHAN_GRACE (1 s), not 5 s
    assert not shm_entries() - shm_before


def _get_on(s: socket.socket, f, query: str) -> tuple[bytes, bytes]:
    """GET /pid?QUERY on a keep-alive connection: (status line, body)."""
    s.sendall(b"GET /pid?%s HTTP/1.1\r\nHost: x\r\n\r\n" % query.encode())
    status, length = f.readline(), 0
    while (line := f.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, f.read(length)


def test_limit_concurrency_is_per_frontend_and_max_requests_counts_every_frontend():
    """--limit-concurrency 2 holds in each front-end (as nginx's worker_connections and
    uvicorn's --limit-concurrency with --workers): 16 connections, 2 served by each, the
    rest 503.  --max-requests 10 recycles the worker when only front-end 1 sends to it."""
    with Sidecar("tests.e2e.fault_apps:app", "--frontends", "2", "--frontend-balance",
                 "hash", "--access-log-format", LOG_FORMAT, "--limit-concurrency", "2",
                 "--max-requests", "10",
                 ready_path="/pid", workers=1, capture_stdout=True) as sc:
        main, child = str(sc.proc.pid), str(sc.frontend_pids()[0])
        socks = [socket.create_connection(("127.0.0.1", sc.port), timeout=10)
                 for _ in range(16)]
        statuses = [_get_on(s, s.makefile("rb"), f"lc={i}")[0]
                    for i, s in enumerate(socks)]
        ok = sum(st.startswith(b"HTTP/1.1 200") for st in statuses)
        assert ok + sum(st.startswith(b"HTTP/1.1 503") for st in statuses) == 16, statuses
        lines = wait_for(lambda: (lambda ls: ls if len(ls) == ok else None)(_lines(sc, "lc")),
                         5, what="access lines")
        per = {fe: sum(f[0] == fe for f in lines) for fe in (main, child)}
        # (front-end 1 may still hold a start-up probe that reached its backlog before it ran)
        assert max(per.values()) == 2 and sum(per.values()) >= 3, (per, statuses)
        for s in socks:
            s.close()
        # a keep-alive connection that front-end 1 serves, and only it
        for i in range(60):
            s = socket.create_connection(("127.0.0.1", sc.port), timeout=10)
            f = s.makefile("rb")
            if _get_on(s, f, f"mr=probe{i}")[0].startswith(b"HTTP/1.1 200"):   # (not 503:
                wait_for(lambda: _lines(sc, f"mr=probe{i}") or None, 5)   # closes pending)
                if _lines(sc, f"mr=probe{i}")[0][0] == child:
                    break
            s.close()
            time.sleep(0.02)
        else:
            raise AssertionError("no connection reached front-end 1")
        first = json.loads(_get_on(s, f, "mr=0")[1])["pid"]
        deadline, n = time.monotonic() + 20, 0
        while json.loads(_get_on(s, f, f"mr={n}")[1])["pid"] == first:
            n += 1
            assert time.monotonic() < deadline, (n, sc.log())
            time.sleep(0.01)
        s.close()
        assert "requests (--max-requests): recycling it" in sc.log()
