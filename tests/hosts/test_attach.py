"""Hosts attaching to a live sidecar's worker pool over the attach socket (frontend/attach.py,
worker/control.py), with the Python host of tests/hosts/pyhost.py."""
from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys

import pytest

from sidecar import events as ev
from tests.e2e.util import alive, wait_for
from tests.hosts.pyhost import PyHost
from tests.server import ROOT, Sidecar

APP = "tests.e2e.apps:app"


def attached(*args, workers=2):
    sc = Sidecar(APP, "--attach-socket", "PLACEHOLDER", *args, workers=workers)
    sc.attach = os.path.join(sc.tmp.name, "a.sock")
    sc.args[1] = sc.attach
    return sc


@pytest.fixture(scope="module")
def sc():
    with attached() as s:
        yield s


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_attach_socket_permissions_follow_uds_mode(sc, tmp_path):
    assert stat.S_IMODE(os.stat(sc.attach).st_mode) == 0o660
    with attached("--uds-mode", "600", workers=1) as strict:
        assert stat.S_IMODE(os.stat(strict.attach).st_mode) == 0o600


def test_host_gets_a_ring_pair_to_every_worker_and_serves_requests(sc):
    async def main():
        host = await PyHost().connect(sc.attach)
        ws = await host.ready_workers(2)
        assert host.host_id >= 1
        assert sorted(w.index for w in ws) == [0, 1]
        assert {w.pid for w in ws} == set(sc.worker_pids())
        for w in ws:
            status, _, body, err = await host.request(w, "GET", "/pid")
            assert (status, err) == (200, None)
            assert str(w.pid).encode() in body
            status, _, body, _ = await host.request(w, "POST", "/echo", b"hello" * 100)
            assert status == 200 and body == b"hello" * 100
        # the front-end's own HTTP keeps working alongside
        with sc.client() as c:
            assert c.get("/pid").status_code == 200
        host.close()
    run(main())


def test_two_hosts_have_separate_stream_ids(sc):
    async def main():
        a, b = await PyHost().connect(sc.attach), await PyHost().connect(sc.attach)
        wa, wb = (await a.ready_workers(2))[0], None
        for w in await b.ready_workers(2):
            if w.index == wa.index:
                wb = w
        assert a.host_id != b.host_id
        # both use stream id 1, 2, ... on the same worker at the same time
        ra = a.request(wa, "GET", "/sleep?t=0.2")
        rb = b.request(wb, "GET", "/sleep?t=0.2")
        (sa, *_), (sb, *_) = await asyncio.gather(ra, rb)
        assert sa == sb == 200
        a.close()
        b.close()
    run(main())


def test_killed_host_is_detached_and_its_streams_disconnected(sc, tmp_path):
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-m", "tests.hosts.pyhost", sc.attach, str(marker)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        pids = set(sc.worker_pids())
        proc.kill()
        proc.wait()
        # the app's receive() returned http.disconnect: the worker cancelled the host's stream
        wait_for(lambda: marker.exists() and marker.read_text(), 10, what="app disconnect")
        assert marker.read_text() == "http.disconnect"
        wait_for(lambda: "detached: its control connection closed" in sc.log(), 10,
                 what="cut-off log line")
        assert set(sc.worker_pids()) == pids  # no worker was replaced
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    async def other_host_still_served():
        host = await PyHost().connect(sc.attach)
        for w in await host.ready_workers(2):
            assert (await host.request(w, "GET", "/pid"))[0] == 200
        host.close()
    run(other_host_still_served())


def test_host_breaking_the_ring_protocol_is_cut_off_others_carry_on(sc):
    async def main():
        good = await PyHost().connect(sc.attach)
        bad = await PyHost().connect(sc.attach)
        await good.ready_workers(2)
        victim = (await bad.ready_workers(2))[0]
        pids = set(sc.worker_pids())
        victim.producer.try_write(b"\xc1 not msgpack")  # 0xc1 is never valid msgpack
        reason = await asyncio.wait_for(bad.closed, 10)
        assert "protocol error" in reason
        for w in good.workers.values():
            assert (await good.request(w, "GET", "/pid"))[0] == 200
        assert set(sc.worker_pids()) == pids  # the worker kept running
        good.close()
        bad.close()
    run(main())
    assert "detaching it" in sc.log()


def test_host_that_talks_on_the_control_connection_is_cut_off(sc):
    async def main():
        host = await PyHost().connect(sc.attach)
        await host.ready_workers(2)
        host.sock.send(b"\x91\x01")  # [1]: hosts only listen
        reason = await asyncio.wait_for(host.closed, 10)
        assert "hosts only listen" in reason
        host.close()
    run(main())


def test_replaced_worker_is_announced_with_new_rings(sc):
    async def main():
        host = await PyHost().connect(sc.attach)
        ws = await host.ready_workers(2)
        victim = ws[0]
        sid, q = host.open(victim, "GET", "/sleep?t=30")
        os.kill(victim.pid, signal.SIGKILL)
        assert await asyncio.wait_for(q.get(), 10) is None  # H_WORKER_GONE: stream lost
        assert victim.serial not in host.workers
        fresh = [w for w in await host.ready_workers(2) if w.index == victim.index][0]
        assert fresh.pid != victim.pid and fresh.serial != victim.serial
        assert (await host.request(fresh, "GET", "/pid"))[0] == 200
        host.close()
    run(main())
    wait_for(lambda: len(sc.worker_pids()) == 2, 10, what="two workers")


def test_attach_socket_removed_at_shutdown_and_hosts_told():
    sc = attached(workers=1)
    with sc:
        async def main():
            host = await PyHost().connect(sc.attach)
            await host.ready_workers(1)
            ids = set(host.workers)
            sc.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(host.closed, 20)
            host.close()
            return host.bye, host.draining, ids
        bye, draining, ids = run(main())
        assert bye == "shutting down"
        assert draining == ids  # WORKER_DRAINING first: no new streams to a stopping worker
        assert sc.proc.wait(20) == 0
        assert not os.path.exists(sc.attach)


def test_attach_socket_that_cannot_be_opened_is_one_clear_line(tmp_path):
    bad = str(tmp_path / "no" / "such" / "dir" / "a.sock")
    out = subprocess.run([sys.executable, "-m", "sidecar", APP, "--uds", str(tmp_path / "s"),
                          "--attach-socket", bad, "--app-dir", ROOT], cwd=tmp_path,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "attach socket" in out.stderr


def test_detached_host_rings_are_reclaimed_in_every_worker(sc):
    """Attach and detach hosts repeatedly: worker descriptors and shared mappings return to
    where they were (nothing accumulates per host)."""
    def fds(pid):
        return len(os.listdir(f"/proc/{pid}/fd"))

    def shm_maps(pid):
        with open(f"/proc/{pid}/maps") as fh:
            return sum(1 for line in fh if "/dev/shm/" in line)

    pids = sc.worker_pids()
    before = {pid: (fds(pid), shm_maps(pid)) for pid in pids}

    async def cycle():
        for _ in range(5):
            host = await PyHost().connect(sc.attach)
            for w in await host.ready_workers(2):
                assert (await host.request(w, "GET", "/pid"))[0] == 200
            during = {pid: (fds(pid), shm_maps(pid)) for pid in pids}
            assert all(during[p][0] >= before[p][0] + 6 for p in pids), (before, during)
            host.close()
    run(cycle())
    wait_for(lambda: {pid: (fds(pid), shm_maps(pid)) for pid in pids} == before, 10,
             what="worker descriptors and mappings back to their baseline")


def test_host_streams_over_limit_worker_streams_get_503_from_the_worker(tmp_path):
    """--limit-worker-streams counts on the worker for attached hosts: a host's stream past
    it is answered 503 by the worker (the app does not run); the front-end's own requests,
    which it holds back itself, are not refused, and the host is served again once streams
    end."""
    with attached("--limit-worker-streams", "2", workers=1) as sc:
        async def main():
            host = await PyHost().connect(sc.attach)
            (w,) = await host.ready_workers(1)
            held = []
            for i in range(2):  # two streams that stay open until we disconnect them
                sid, q = host.open(w, "GET", f"/disconnect?m={tmp_path / str(i)}")
                assert (await asyncio.wait_for(q.get(), 10))[:3] == [ev.RESPONSE_START, sid, 200]
                held.append(sid)
            status, headers, body, err = await host.request(w, "GET", "/pid")
            assert (status, err) == (503, None)
            assert body.startswith(b"Service Unavailable") and [b"retry-after", b"5"] in headers
            sid = next(host.sids)  # a WebSocket past the limit: a denial response
            q = w.streams[sid] = asyncio.Queue()
            w.send([ev.WS_CONNECT, sid, "ws", "/ws", b"/ws", b"", [[b"host", b"attached"]],
                    None, None, "1.1", "", []])
            assert (await asyncio.wait_for(q.get(), 10))[:3] == [ev.RESPONSE_START, sid, 503]
            assert (await asyncio.wait_for(q.get(), 10))[0] == ev.RESPONSE_BODY
            assert await asyncio.wait_for(q.get(), 10) == [ev.APP_DONE, sid, None]
            with sc.client() as c:  # the front-end's streams: its own limit, not refused
                assert c.get("/pid").status_code == 200
            for sid in held:
                w.send([ev.DISCONNECT, sid])
            w.publish()  # now: wait_for below blocks the loop, and with it the end-of-turn flush
            wait_for(lambda: all((tmp_path / str(i)).exists() for i in range(2)), 10,
                     what="held streams to end")
            for _ in range(50):  # APP_DONE of the held streams reaches the worker's count
                status, _, body, _ = await host.request(w, "GET", "/pid")
                if status == 200:
                    break
                await asyncio.sleep(0.1)
            assert status == 200 and str(w.pid).encode() in body
            host.close()
        run(main())
        wait_for(lambda: "(--limit-worker-streams): answering 503" in sc.log(), 10,
                 what="the refusal's log line")
