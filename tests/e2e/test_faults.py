"""Worker faults, really done (issue #5): kill -9 under load with every outcome counted, a
SIGSTOPped or blocked worker caught by the hang watchdog, a worker that keeps crashing at
start, SIGTERM during a long streamed response."""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import socket
import time

import httpx

from tests.e2e.fault_apps import CHUNK, tick_body
from tests.e2e.lifecycle import read_chunked, settled_workers, slow_stream
from tests.e2e.util import alive, wait_for
from tests.server import Sidecar


def _marked(marks, ident: str) -> int | None:
    try:
        text = (marks / ident).read_text()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def _stamp(line: str) -> float:
    t = time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")
    return time.mktime(t) + int(line[20:23]) / 1000


def _replacement_delay(log: str) -> float | None:
    """Seconds from the supervisor's "killed by SIGKILL" line to the next "worker 0 ready"."""
    lines = log.splitlines()
    for k, line in enumerate(lines):
        if "killed by SIGKILL" in line:
            for later in lines[k:]:
                if "sidecar.supervisor: worker 0 ready" in later:
                    return max(_stamp(later) - _stamp(line), 0.001)
    return None


# --- kill -9 in the middle of 100 requests and streams --------------------------------------

async def _one(client, kind: str, i: int, marks) -> tuple[str, int, str, object]:
    """Run request i of ``kind``; returns (kind, i, outcome, detail) where outcome is
    "ok" (complete and correct), "502", "error" (a transport error the client saw) or "bad"."""
    q = {"m": str(marks), "id": f"{kind}-{i}"}
    try:
        if kind == "sleep":
            r = await client.get("/async-sleep", params=dict(q, s="4"))
            good = r.status_code == 200 and r.json()["slept"] is True
        elif kind in ("stream", "stream-cl"):
            n = 40  # 40 KiB over ~4 s
            params = dict(q, n=str(n), d="0.1", cl="1" if kind == "stream-cl" else "0")
            r = await client.get("/tick", params=params)
            good = r.status_code == 200 and r.content == tick_body(n)
        else:
            body = os.urandom(CHUNK * 64)

            async def slowly():  # ~4 s of upload: the response cannot have started
                for k in range(0, len(body), len(body) // 40):
                    yield body[k:k + len(body) // 40]
                    await asyncio.sleep(0.1)

            r = await client.post("/upload", params=q, content=slowly())
            good = (r.status_code == 200 and r.json()["bytes"] == len(body)
                    and r.json()["sha256"] == hashlib.sha256(body).hexdigest())
    except httpx.TransportError as exc:  # incl. a short Content-Length or chunked body
        return kind, i, "error", repr(exc)
    if good:
        return kind, i, "ok", None
    if r.status_code == 502:
        return kind, i, "502", None
    return kind, i, "bad", (r.status_code, r.content[:100])


async def _quick_gets(client, stop: asyncio.Event, outcomes: list) -> None:
    while not stop.is_set():
        try:
            r = await client.get("/pid")
            outcomes.append(r.status_code)
        except httpx.TransportError as exc:
            outcomes.append(repr(exc))


def test_kill9_during_100_requests_every_outcome_accounted(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    kinds = ["sleep"] * 30 + ["stream"] * 25 + ["stream-cl"] * 20 + ["upload"] * 25  # 100
    with Sidecar("tests.e2e.fault_apps:app", "--no-access-log", ready_path="/pid",
                 workers=2) as sc:
        workers = sc.worker_pids()

        async def scenario():
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            async with httpx.AsyncClient(base_url=sc.url, timeout=30, limits=limits) as client:
                stop, quick = asyncio.Event(), []
                getters = [asyncio.ensure_future(_quick_gets(client, stop, quick))
                           for _ in range(4)]
                tasks = [asyncio.ensure_future(_one(client, k, i, marks))
                         for i, k in enumerate(kinds)]
                t0 = time.monotonic()
                while len(os.listdir(marks)) < len(kinds):  # all 100 are in the app
                    assert time.monotonic() - t0 < 30, f"only {len(os.listdir(marks))} arrived"
                    await asyncio.sleep(0.02)
                victim = workers[0]
                os.kill(victim, signal.SIGKILL)
                results = await asyncio.wait_for(asyncio.gather(*tasks), 60)  # none hangs
                await asyncio.sleep(0.5)
                stop.set()
                await asyncio.wait_for(asyncio.gather(*getters), 30)
                return victim, results, quick

        victim, results, quick = asyncio.run(scenario())
        on_victim = {f"{k}-{i}" for k, i, *_ in results if _marked(marks, f"{k}-{i}") == victim}
        assert 10 < len(on_victim) < 90, len(on_victim)  # both workers had their share
        counts: dict[tuple[str, str, bool], int] = {}
        for kind, i, outcome, detail in results:
            mine = f"{kind}-{i}" in on_victim
            counts[kind, outcome, mine] = counts.get((kind, outcome, mine), 0) + 1
            if not mine:  # the other worker's streams are untouched
                assert outcome == "ok", (kind, i, outcome, detail)
            elif kind in ("sleep", "upload"):  # not started: 502 (an upload may see the close)
                assert outcome == "502" or kind == "upload" and outcome == "error", \
                    (kind, i, outcome, detail)
            else:  # streamed: cut short visibly (or 502 if the start had not left the worker)
                assert outcome in ("error", "502"), (kind, i, outcome, detail)
        assert all(q == 200 or q == 502 or isinstance(q, str) for q in quick), quick
        print(f"\n{len(on_victim)} of 100 on the killed worker; outcomes: {counts}; "
              f"{len(quick)} quick GETs")

        # a replacement serves, the survivor was never restarted
        new = settled_workers(sc, 2, exclude={victim})
        assert workers[1] in new
        gap = wait_for(lambda: _replacement_delay(sc.log()), 30, what="the ready line")
        print(f"replacement ready {gap:.2f}s after the supervisor saw the kill (log times)")
        with sc.client(timeout=10) as c:
            assert all(c.get("/pid").status_code == 200 for _ in range(20))
        log = sc.log()
        lost = re.search(rf"worker 0 \(pid {victim}\) killed by SIGKILL; (\d+) stream\(s\) "
                         rf"lost; restarting", log)
        assert lost and int(lost.group(1)) >= len(on_victim), log  # (+ quick GETs in flight)
        assert "Traceback" not in log, log


# --- the hang watchdog ----------------------------------------------------------------------

def test_sigstopped_worker_is_killed_and_replaced(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    with Sidecar("tests.e2e.fault_apps:app", "--timeout-worker-hang", "3", ready_path="/pid",
                 workers=2) as sc:
        workers = sc.worker_pids()
        with sc.client(timeout=30) as c:
            s = socket.create_connection(("127.0.0.1", sc.port))
            s.settimeout(30)
            s.sendall(b"GET /async-sleep?s=60&m=%s&id=x HTTP/1.1\r\nHost: x\r\n\r\n"
                      % str(marks).encode())
            victim = wait_for(lambda: _marked(marks, "x"), 10, what="the request in the app")
            (survivor,) = set(workers) - {victim}
            os.kill(victim, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                out = b""
                while not out.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in out:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
                waited = time.monotonic() - t0
                assert out.startswith(b"HTTP/1.1 502"), out  # its stream answered, not hung
                new = settled_workers(sc, 2, exclude={victim})
                assert survivor in new
                assert c.get("/pid").status_code == 200
            finally:
                if alive(victim):
                    os.kill(victim, signal.SIGCONT)  # never leave a stopped process behind
            s.close()
        print(f"\nstopped worker answered 502 after {waited:.1f}s (timeout 3s)")
        log = sc.log()
        assert f"worker {workers.index(victim)} (pid {victim}): no heartbeat for" in log, log
        assert f"(pid {victim}) killed by SIGKILL (hung: no heartbeat" in log, log


def test_watchdog_kills_a_blocked_event_loop_but_not_an_awaiting_one(tmp_path):
    """A request awaiting for longer than the hang timeout is fine; one that blocks the event
    loop that long is indistinguishable from a hang and is killed (gunicorn's --timeout)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    with Sidecar("tests.e2e.fault_apps:app", "--timeout-worker-hang", "3", ready_path="/pid",
                 workers=2) as sc:
        def get(path):
            with sc.client(timeout=30) as c:
                return c.get(path)

        async def scenario():
            awaiting = asyncio.ensure_future(asyncio.to_thread(
                get, f"/async-sleep?s=5&m={marks}&id=a"))
            await asyncio.to_thread(wait_for, lambda: _marked(marks, "a"), 10)
            blocking = asyncio.ensure_future(asyncio.to_thread(get, f"/block?s=8&m={marks}&id=b"))
            return await asyncio.wait_for(asyncio.gather(awaiting, blocking), 40)

        awaited, blocked = asyncio.run(scenario())
        assert _marked(marks, "a") != _marked(marks, "b")  # least-loaded: different workers
        assert awaited.status_code == 200 and awaited.json()["pid"] == _marked(marks, "a")
        assert blocked.status_code == 502
        settled_workers(sc, 2, exclude={_marked(marks, "b")})
        assert alive(_marked(marks, "a"))
        assert "no heartbeat for" in sc.log()


# --- a worker that keeps crashing at start ---------------------------------------------------

def test_crash_loop_backs_off_then_recovers(tmp_path):
    version = tmp_path / "version"
    version.write_text("1")
    with Sidecar("tests.e2e.reload_app:app", ready_path="/", workers=1,
                 env={"RELOAD_APP_VERSION": str(version)}) as sc:
        (first,) = sc.worker_pids()
        version.write_text("broken")  # every restart now fails to import the app
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: "keeps failing (4 in a row): next start in 0.4s" in sc.log(), 30,
                 what="the backoff to reach 0.4 s")
        log = sc.log()
        for n, delay in ((2, "0.1"), (3, "0.2")):
            assert f"worker 0 keeps failing ({n} in a row): next start in {delay}s" in log, log
        assert "could not import the app: cannot import app module 'tests.e2e.reload_app': " \
               "RuntimeError: version broken cannot be imported (test)" in log, log
        # a request meanwhile waits for a worker (no 502 for a stream no worker ever had)...
        with sc.client(uds=True, timeout=30) as c:
            version.write_text("2")
            r = c.get("/")  # ...and is served once the next restart succeeds
            assert r.status_code == 200 and r.json()["version"] == "2"
        assert "Traceback" not in sc.log()


# --- SIGTERM while a long streamed response is being sent ------------------------------------

def test_sigterm_lets_a_long_streamed_response_finish_then_closes():
    with Sidecar("tests.e2e.fault_apps:app", "--timeout-graceful-shutdown", "15",
                 ready_path="/pid", workers=2) as sc:
        stream, got = slow_stream(sc, 30, 0.1)  # ~3 s, well inside the drain timeout
        t0 = time.monotonic()
        sc.proc.send_signal(signal.SIGTERM)
        head, body, complete = read_chunked(stream, got)
        assert head.startswith(b"HTTP/1.1 200") and complete and body == tick_body(30)
        assert stream.recv(100) == b""  # then the connection closes
        stream.close()
        assert sc.proc.wait(30) == 0, sc.log()
        print(f"\nstream finished and server exited {time.monotonic() - t0:.1f}s after SIGTERM")
        assert "Traceback" not in sc.log()


def test_sigterm_cuts_a_stream_longer_than_the_drain_timeout():
    """Past --timeout-graceful-shutdown the stream is cut and the client can tell."""
    with Sidecar("tests.e2e.fault_apps:app", "--timeout-graceful-shutdown", "1",
                 ready_path="/pid", workers=1) as sc:
        stream, got = slow_stream(sc, 600, 0.1)  # a minute: far past the timeout
        sc.proc.send_signal(signal.SIGTERM)
        try:
            head, body, complete = read_chunked(stream, got)
        except ConnectionResetError:
            complete = False
        stream.close()
        assert not complete
        assert sc.proc.wait(30) == 0, sc.log()


# --- a worker that writes garbage into its ring -----------------------------------------------

def test_worker_writing_garbage_is_replaced_and_nothing_else_breaks(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    with Sidecar("tests.e2e.fault_apps:app", ready_path="/pid", workers=2) as sc:
        workers = sc.worker_pids()
        with sc.client(timeout=30) as c, sc.client(timeout=30) as other:
            async def scenario():
                slow = asyncio.ensure_future(asyncio.to_thread(
                    other.get, f"/async-sleep?s=2&m={marks}&id=slow"))
                await asyncio.to_thread(wait_for, lambda: _marked(marks, "slow"), 10)
                bad = await asyncio.to_thread(c.get, "/garbage")  # the least loaded: the other
                return await slow, bad

            slow, bad = asyncio.run(scenario())
            assert bad.status_code == 502
            assert slow.status_code == 200 and slow.json()["pid"] == _marked(marks, "slow")
            (victim,) = set(workers) - {_marked(marks, "slow")}
            new = settled_workers(sc, 2, exclude={victim})
            assert _marked(marks, "slow") in new
            assert all(c.get("/pid").status_code == 200 for _ in range(10))
        log = sc.log()
        assert "ring protocol error" in log and "killing it" in log, log
        assert f"(pid {victim}) killed by SIGKILL" in log and "Traceback" not in log, log
