"""Observability of a live sidecar (issue #6): the control socket and `sidecar status`, the
Prometheus endpoint scraped with httpx, and the access log line on stdout."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.util import wait_for
from tests.server import ROOT, Sidecar, free_port


@pytest.fixture(scope="module")
def sc():
    port = free_port()
    s = Sidecar("tests.e2e.apps:app", "--metrics", f"127.0.0.1:{port}", workers=2,
                ready_path="/scope")
    s.metrics_url = f"http://127.0.0.1:{port}/metrics"
    with s:
        yield s


def status(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sidecar", "status", *args],
                          capture_output=True, text=True, timeout=30, **kw)


def control(path: str, *lines: bytes) -> list[dict]:
    """Send request lines on one connection; one reply line each."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        f = s.makefile("rb")
        out = []
        for line in lines:
            s.sendall(line)
            out.append(json.loads(f.readline()))
        f.close()
        return out


def scrape(url: str) -> dict[str, float]:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_status_text_and_json(sc):
    ctl = sc.uds + ".ctl"
    assert stat.S_IMODE(os.stat(ctl).st_mode) == 0o600  # stricter than the app socket
    with sc.client() as c:
        for _ in range(6):
            assert c.get("/scope").status_code == 200
    def records_due(st) -> int:
        # out of the workers: a HELLO each, start + body + APP_DONE for each of our six
        # requests, and at least an APP_DONE for every other stream (a readiness probe that
        # gave up under load and left has no response: its app's send failed)
        return len(st["workers"]) + 3 * 6 + (st["requests"] - 6)

    def settled():
        # a response can reach the client before its stream's APP_DONE is in the ring (the
        # worker's next batch), and a stream leaves the in-flight count at its last body:
        # read the counters once no stream is in flight and the last records are in
        out = status("--control", ctl, "--json")
        assert out.returncode == 0, out.stderr
        st = json.loads(out.stdout)
        workers = st["workers"]
        return st if all(w["inflight"] == 0 for w in workers) and sum(
            w["rings"]["to_host"]["records"] for w in workers) >= records_due(st) else None

    st = wait_for(settled, 10, interval=0.05, what="no stream in flight")
    assert st["pid"] == sc.proc.pid and st["state"] == "ready"
    assert st["app"] == "tests.e2e.apps:app"
    assert f"unix:{sc.uds}" in st["listeners"]
    workers = st["workers"]
    assert sorted(w["pid"] for w in workers) == sorted(sc.worker_pids())
    assert all(w["state"] == "ready" and w["inflight"] == 0 for w in workers)
    assert st["requests"] == sum(w["requests"] for w in workers) >= 7  # ours + the ready probe
    for w in workers:
        for ring in w["rings"].values():
            assert ring["capacity"] == 4 << 20 and 0 <= ring["used"] < ring["capacity"]
            assert ring["full"] == 0 and ring["wakeups"] <= ring["records"]
        # a request is one HTTP_REQUEST record in; out, at least its APP_DONE and the HELLO
        assert w["rings"]["to_worker"]["records"] >= w["requests"]
        assert w["rings"]["to_host"]["records"] >= w["requests"] + 1
        assert w["rings"]["to_host"]["bytes"] > 0
    text = status("--control", ctl)
    assert text.returncode == 0, text.stderr
    assert f"sidecar pid {sc.proc.pid}  ready" in text.stdout
    header = next(line for line in text.stdout.splitlines() if line.startswith("worker"))
    assert header.split() == ["worker", "pid", "state", "inflight", "requests", "restarts",
                              "ring>worker", "ring>host"]
    for w in workers:
        assert re.search(rf"^{w['index']}\s+{w['pid']}\s+ready\s+0\s+\d+\s+0\s+0\.0%",
                         text.stdout, re.M), text.stdout
    # the default path: $SIDECAR_CONTROL
    env = dict(os.environ, SIDECAR_CONTROL=ctl)
    assert json.loads(status("--json", env=env).stdout)["pid"] == sc.proc.pid


def test_status_and_metrics_count_a_killed_worker(sc):
    before = scrape(sc.metrics_url)
    victim = json.loads(status("--control", sc.uds + ".ctl", "--json").stdout)["workers"][0]
    os.kill(victim["pid"], signal.SIGKILL)

    def restarted():
        st = json.loads(status("--control", sc.uds + ".ctl", "--json").stdout)
        w = st["workers"][0]
        return st if w["restarts"] == victim["restarts"] + 1 and w["state"] == "ready" \
            and w["pid"] != victim["pid"] else None

    st = wait_for(restarted, 30, interval=0.1, what="worker 0 restarted")
    assert st["restarts"] >= 1
    # its requests are still counted after its death: counters only grow
    assert st["workers"][0]["requests"] >= victim["requests"]
    after = scrape(sc.metrics_url)
    key = 'sidecar_worker_restarts_total{worker="0"}'
    assert after[key] == before[key] + 1
    assert after['sidecar_requests_total{worker="0"}'] >= before['sidecar_requests_total{worker="0"}']


def test_prometheus_endpoint(sc):
    m0 = scrape(sc.metrics_url)
    with sc.client(uds=True) as c:
        for _ in range(5):
            assert c.get("/scope").status_code == 200
    m = scrape(sc.metrics_url)
    total = lambda d: sum(v for k, v in d.items() if k.startswith("sidecar_requests_total"))  # noqa: E731
    assert total(m) - total(m0) == 5
    assert m['sidecar_workers{state="ready"}'] == 2
    for w in ("0", "1"):
        assert m[f'sidecar_worker_inflight{{worker="{w}"}}'] == 0
        for d in ("to_worker", "to_host"):
            assert m[f'sidecar_ring_capacity_bytes{{worker="{w}",direction="{d}"}}'] == 4 << 20
            assert 0 <= m[f'sidecar_ring_used_bytes{{worker="{w}",direction="{d}"}}'] < 4 << 20
    assert m["sidecar_uptime_seconds"] > 0
    text = httpx.get(sc.metrics_url, timeout=10).text
    for family in ("sidecar_workers", "sidecar_requests_total", "sidecar_worker_restarts_total"):
        assert f"# TYPE {family} " in text
    assert httpx.get(sc.metrics_url.replace("/metrics", "/other"), timeout=10).status_code == 404
    assert httpx.post(sc.metrics_url, timeout=10).status_code == 405


def test_control_protocol_errors_leave_the_connection_and_server_working(sc):
    ctl = sc.uds + ".ctl"
    bad_json, unknown, not_obj, ok = control(
        ctl, b"{nope\n", b'{"cmd": "frobnicate"}\n', b"[1, 2]\n", b'{"cmd": "ping"}\n')
    assert bad_json == {"ok": False, "error": "expected one JSON object per line"}
    assert unknown["ok"] is False and "unknown command 'frobnicate'" in unknown["error"]
    assert "status" in unknown["error"]  # the commands are listed
    assert not_obj["ok"] is False
    assert ok == {"ok": True, "pid": sc.proc.pid}
    assert control(ctl, b'{"cmd": "help"}\n')[0]["commands"] == ["help", "ping", "reload", "status"]
    # an oversized line: an error and the connection closed
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(ctl)
        s.sendall(b"x" * 70000)
        reply = s.makefile("rb").readline()
    assert json.loads(reply)["ok"] is False
    with sc.client() as c:
        assert c.get("/scope").status_code == 200
    log = sc.log()
    assert "control: unknown command 'frobnicate'" in log and "control: not a JSON line" in log


def test_status_cli_mistakes_are_one_line():
    out = status("--control", "/nonexistent/ctl.sock")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "sidecar status: error: cannot reach /nonexistent/ctl.sock: No such file or directory"]
    out = status("--bogus")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_metrics_on_a_unix_socket_and_no_control(tmp_path):
    metrics = os.path.join("/tmp", f"sc-m-{os.getpid()}.sock")
    with Sidecar("tests.e2e.apps:app", "--metrics", metrics, "--no-control", workers=1,
                 ready_path="/scope") as s:
        assert not os.path.exists(s.uds + ".ctl")
        assert stat.S_IMODE(os.stat(metrics).st_mode) == 0o600
        with httpx.Client(transport=httpx.HTTPTransport(uds=metrics), timeout=10) as c:
            r = c.get("http://metrics/metrics")
        assert r.status_code == 200 and 'sidecar_workers{state="ready"} 1' in r.text
    assert not os.path.exists(metrics)  # we created it: removed at exit


def test_access_log_line_is_combined_with_duration():
    with Sidecar("tests.e2e.apps:app", workers=1, ready_path="/scope",
                 capture_stdout=True) as s:
        with s.client(uds=True, timeout=30) as c:
            c.get("/scope/a%22b?q=1",
                  headers={b"referer": b"http://r/", b"user-agent": b'x"y\xe9'})
        line = wait_for(lambda: [x for x in Path(s.stdout_path).read_text().splitlines()
                                 if "/scope/a" in x], 10, what="the access line")[0]
    pattern = (r'^unix - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] '
               r'"GET /scope/a%22b\?q=1 HTTP/1\.1" 200 \d+ "http://r/" "x\\x22y\\xE9" '
               r'\d+\.\dms$')
    assert re.match(pattern, line), line


def test_access_lines_of_pipelined_requests_are_each_whole():
    """Lines written together (one write per loop iteration) are each whole; with one worker
    the responses complete, and are logged, in the order of the requests."""
    with Sidecar("tests.e2e.apps:app", workers=1, ready_path="/scope",
                 capture_stdout=True) as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"".join(b"GET /pid?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
                               for i in range(60))
                      + b"GET /pid?n=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while c.recv(65536):
                pass

        def lines():
            out = [x for x in Path(s.stdout_path).read_text().splitlines() if "/pid?n=" in x]
            return out if len(out) == 61 else None
        found = wait_for(lines, 10, what="61 access lines")
    assert [x.split("/pid?n=")[1].split()[0] for x in found] == [str(i) for i in range(60)] + [
        "last"]
    assert all(re.search(r'" 200 \d+ "-" "-" \d+\.\dms$', x) for x in found), found[:3]


def test_websockets_get_an_access_line_when_they_close():
    """As nginx logs a WebSocket: one line when the connection ends, with the status answered
    (101, or the refusal's), the bytes sent (handshake included) and the whole duration."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with Sidecar("tests.e2e.ws_apps:app", workers=1, ready_path="/", capture_stdout=True) as s:
        url = f"ws://127.0.0.1:{s.port}"
        with connect(url + "/echo?tag=log", additional_headers={"User-Agent": "wstest"}) as ws:
            ws.send("hello")
            assert ws.recv() == "hello"
        for path, status in (("/reject", 403), ("/deny", 418)):
            with pytest.raises(InvalidStatus) as info:
                connect(url + path)
            assert info.value.response.status_code == status

        def lines():
            # the three WebSockets' lines (the readiness probe's "GET /" is a line too, so a
            # count of lines could be reached before the last WebSocket's)
            out = [x for x in Path(s.stdout_path).read_text().splitlines() if '"GET /' in x]
            logged = "\n".join(out)
            return out if all(f'"GET {p} ' in logged for p in ("/echo?tag=log", "/reject",
                                                                "/deny")) else None
        found = wait_for(lines, 10, what="three access lines")
    by_path = {line.split('"GET ')[1].split()[0]: line for line in found}
    echo = by_path["/echo?tag=log"]
    assert re.search(r'HTTP/1\.1" 101 (\d+) "-" "wstest" \d+\.\dms$', echo), echo
    assert int(re.search(r'" 101 (\d+) ', echo).group(1)) > 100   # the 101 and the echo
    assert '" 403 ' in by_path["/reject"] and '" 418 ' in by_path["/deny"]


def test_counters_never_go_down_across_a_reload(sc):
    """SIGHUP replaces both workers; while the old ones drain and after they exit, the request
    counters only grow (Prometheus counters must), and status shows the new pids."""
    ctl = sc.uds + ".ctl"
    old = set(sc.worker_pids())
    with sc.client() as c:
        for _ in range(4):
            c.get("/scope")
    last = scrape(sc.metrics_url)
    keys = [k for k in last if k.startswith(("sidecar_requests_total", "sidecar_ring_records",
                                             "sidecar_ring_bytes", "sidecar_ring_wakeups"))]
    assert len(keys) == 2 + 3 * 4   # two workers; three ring counters a direction
    sc.proc.send_signal(signal.SIGHUP)

    def done():
        nonlocal last
        now = scrape(sc.metrics_url)
        for k in keys:
            assert now[k] >= last[k], (k, last[k], now[k])
        last = now
        st = json.loads(status("--control", ctl, "--json").stdout)
        pids = {w["pid"] for w in st["workers"]}
        return st if not pids & old and all(w["state"] == "ready" and not w["draining_pids"]
                                            for w in st["workers"]) else None

    st = wait_for(done, 60, interval=0.1, what="the reload, old workers gone")
    assert st["requests"] >= 4


def test_sigterm_with_control_clients_connected_is_clean():
    """Issue 22: a control client still connected at SIGTERM (an idle `nc -U`, a monitoring
    agent keeping its connection) is closed with the server: no ERROR, no traceback, exit 0."""
    with Sidecar("tests.e2e.apps:app", workers=1, ready_path="/scope") as s:
        ctl = s.uds + ".ctl"
        idle = socket.socket(socket.AF_UNIX)
        asked = socket.socket(socket.AF_UNIX)
        try:
            idle.connect(ctl)
            asked.settimeout(10)
            asked.connect(ctl)
            asked.sendall(b'{"cmd": "ping"}\n')
            assert json.loads(asked.makefile("rb").readline())["pid"] == s.proc.pid
            assert s.stop() == 0
            idle.settimeout(10)
            assert idle.recv(100) == b""       # closed by the server, not left hanging
        finally:
            idle.close()
            asked.close()
        log = s.log()
    assert "shutting down (SIGTERM)" in log
    assert "Traceback" not in log and " ERROR " not in log, log


class TCPSidecar(Sidecar):
    """A server started as uvicorn users start one: ``--bind HOST:PORT`` and no Unix socket,
    its control socket in ``rundir`` (``$SIDECAR_RUNTIME_DIR``)."""

    def __init__(self, rundir, *args: str, host: str = "127.0.0.1", **kw):
        env = dict(kw.pop("env", None) or {}, SIDECAR_RUNTIME_DIR=str(rundir))
        super().__init__("tests.e2e.apps:app", *args, workers=1, ready_path="/scope",
                         env=env, **kw)
        self.bind = f"{host}:{self.port}"

    def command(self) -> list[str]:
        cmd = super().command()
        del cmd[cmd.index("--uds"):cmd.index("--uds") + 2]
        cmd[cmd.index("--bind") + 1] = self.bind
        return cmd


def status_in(rundir, *args: str, cmd: str = "status", cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, SIDECAR_RUNTIME_DIR=str(rundir))
    for name in ("SIDECAR_CONTROL", "RUNTIME_DIRECTORY", "SIDECAR_UDS"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "sidecar", cmd, *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=cwd)


def one_line(out: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert out.returncode == code and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def test_status_finds_a_server_started_with_bind_alone(tmp_path):
    """Issue 22: `sidecar app:app --bind 127.0.0.1:PORT` (no --uds, not under systemd) has a
    control socket, found by `sidecar status` with no argument, by --bind and by --pid; and
    `sidecar reload` finds it the same ways."""
    rundir = tmp_path / "run"
    pid_file = tmp_path / "sidecar.pid"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with TCPSidecar(rundir, "--pid", str(pid_file)) as s:
        ctl = rundir / f"127.0.0.1:{s.port}.ctl"
        for args in ([], ["--bind", s.bind], ["--bind", f"localhost:{s.port}"],
                     ["-b", s.bind], ["--pid", str(pid_file)], ["--control", str(ctl)]):
            out = status_in(rundir, "--json", *args, cwd=elsewhere)
            assert out.returncode == 0, (args, out.stderr)
            st = json.loads(out.stdout)
            assert st["pid"] == s.proc.pid and st["listeners"] == [f"http://{s.bind}"]
        assert stat.S_IMODE(os.stat(ctl).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(rundir).st_mode) == 0o700
        out = status_in(rundir, "--bind", s.bind, cmd="reload", cwd=elsewhere)
        assert out.returncode == 0 and "the new workers serve" in out.stdout, out.stderr
        out = status_in(rundir, "--pid", str(pid_file), cmd="reload", cwd=elsewhere)
        assert out.returncode == 0, out.stderr
        one_line(status_in(rundir, "--bind", f"127.0.0.1:{free_port()}", cwd=elsewhere), 1,
                 "no running sidecar listens on 127.0.0.1:")
        assert s.stop() == 0
    assert not ctl.exists()   # removed at exit
    one_line(status_in(rundir, cwd=elsewhere), 1, "no running sidecar found", str(rundir))
    one_line(status_in(rundir, "--pid", str(pid_file), cwd=elsewhere), 1, str(pid_file))


def test_status_without_arguments_names_several_servers_and_picks_by_bind(tmp_path):
    rundir = tmp_path / "run"
    with TCPSidecar(rundir) as a, TCPSidecar(rundir, "--bind", "127.0.0.1:0") as b, \
            Sidecar("tests.e2e.apps:app", "--pid", str(tmp_path / "c.pid"), workers=1,
                    ready_path="/scope") as c:
        line = one_line(status_in(rundir, cwd=tmp_path), 1, "2 sidecars are running",
                        f"pid {a.proc.pid}", f"pid {b.proc.pid}", "--bind")
        assert str(c.proc.pid) not in line   # its control socket is next to its --uds
        for s in (a, b):
            out = status_in(rundir, "--json", "--bind", s.bind, cwd=tmp_path)
            assert json.loads(out.stdout)["pid"] == s.proc.pid, out.stderr
        # a server's second listener finds it too (its socket is named after the first)
        second = [x for x in json.loads(status_in(rundir, "--json", "--bind", b.bind).stdout)
                  ["listeners"] if x != f"http://{b.bind}"][0].removeprefix("http://")
        out = status_in(rundir, "--json", "--bind", second, cwd=tmp_path)
        assert json.loads(out.stdout)["pid"] == b.proc.pid, out.stderr
        # a --uds server: by its socket, or by its pid file (its own listening sockets)
        for args in (["--uds", c.uds], ["--pid", str(tmp_path / "c.pid")]):
            out = status_in(rundir, "--json", *args, cwd=tmp_path)
            assert json.loads(out.stdout)["pid"] == c.proc.pid, (args, out.stderr)


def test_stale_control_socket_is_replaced_and_a_live_one_refused(tmp_path):
    rundir = tmp_path / "run"
    s = TCPSidecar(rundir)
    rundir.mkdir(mode=0o700)
    ctl = str(rundir / f"127.0.0.1:{s.port}.ctl")
    with socket.socket(socket.AF_UNIX) as dead:   # a killed server's: bound, nobody listens
        dead.bind(ctl)
    with s:
        out = status_in(rundir, "--json", "--bind", s.bind)
        assert json.loads(out.stdout)["pid"] == s.proc.pid, out.stderr
    assert not os.path.exists(ctl)
    with socket.socket(socket.AF_UNIX) as live:   # another server's, alive
        live.bind(ctl)
        live.listen()
        out = subprocess.run(s.command(), capture_output=True, text=True, timeout=60,
                             cwd=tmp_path, env=dict(os.environ, SIDECAR_RUNTIME_DIR=str(rundir)))
    one_line(out, 2, f"control socket {ctl}", "another server is listening")


def test_an_unusable_runtime_directory_costs_only_the_control_socket(tmp_path):
    """A runtime directory others could write to is not trusted: the server warns, serves,
    and has no control socket (as when /run is read-only in a sandbox)."""
    rundir = tmp_path / "run"
    rundir.mkdir()
    rundir.chmod(0o777)
    with TCPSidecar(rundir) as s:
        with s.client() as c:
            assert c.get("/scope").status_code == 200
        assert os.listdir(rundir) == []
        assert f"WARNING sidecar: no control socket: {rundir} is writable by" in s.log()
        one_line(status_in(rundir, "--bind", s.bind), 1, "no running sidecar listens on")
