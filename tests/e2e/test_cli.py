"""The command line, end to end (issue #3): mistakes give a clear line and the documented exit
code (sidecar/config.py EXIT_*), never a traceback; every source of settings is honoured."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sidecar.config import EXIT_IMPORT_FAILED, EXIT_STARTUP_FAILED, EXIT_USAGE
from tests.e2e.extra_apps import STARTUP_FAILURE
from tests.e2e.util import serving_pids
from tests.server import ROOT, Sidecar, free_port

SIDECAR_SCRIPT = shutil.which("sidecar", path=os.path.dirname(sys.executable))


def run(tmp_path: Path, *args: str, env: dict | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m sidecar ARGS`` in tmp_path (so default listeners land there), to the end."""
    return subprocess.run([sys.executable, "-m", "sidecar", *args], cwd=tmp_path,
                          env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                          timeout=timeout)


def lines_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def assert_one_clear_line(out: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == code, (out.returncode, out.stderr)
    lines = lines_of(out.stderr)
    assert len(lines) == 1, out.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# --- usage and socket errors: exactly one line, exit 2 ---------------------------------------

@pytest.mark.parametrize("args, words", [
    (["tests.e2e.apps:app", "--no-such-flag"], ["unrecognized arguments", "--no-such-flag"]),
    (["tests.e2e.apps:app", "--workers", "many"], ["--workers", "many"]),
    (["tests.e2e.apps:app", "--bind", "localhost"], ["--bind", "localhost", "HOST:PORT"]),
    (["tests.e2e.apps:app", "--bind", "127.0.0.1:99999"], ["--bind", "99999"]),
    (["tests.e2e.apps:app", "--bind", "unix:/tmp/x.sock"], ["--uds"]),
    (["no_colon_here"], ["MODULE:ATTRIBUTE"]),
    (["tests.e2e.apps:app", "--config", "/nonexistent/sidecar.toml"], ["/nonexistent"]),
    (["tests.e2e.apps:app", "--env-file", "/nonexistent/.env"], ["/nonexistent/.env"]),
    (["tests.e2e.apps:app", "--timeout-worker-hang", "0.2"], ["--timeout-worker-hang"]),
    (["tests.e2e.apps:app", "--max-requests", "-1"], ["--max-requests"]),
    (["tests.e2e.apps:app", "--max-worker-memory", "lots"], ["--max-worker-memory", "lots"]),
    (["tests.e2e.apps:app", "--header", "no colon"], ["--header", "NAME: VALUE"]),
    (["tests.e2e.apps:app", "--header", "bad name: x"], ["--header", "invalid header name"]),
    (["tests.e2e.apps:app", "--header", "X-A: caf\u00e9"], ["--header", "printable ASCII"]),
    (["tests.e2e.apps:app", "--header", "Content-Length: 5"], ["--header", "server's"]),
    (["tests.e2e.apps:app", "--frontends", "31"], ["--frontends", "30"]),
    (["tests.e2e.apps:app", "--frontend-balance", "even"], ["--frontend-balance", "even"]),
], ids=["flag", "int", "bind", "port-range", "bind-unix", "app-spec", "config-file", "env-file",
        "hang-timeout", "max-requests", "max-memory", "header-colon", "header-name",
        "header-value", "header-framing", "frontends", "frontend-balance"])
def test_usage_errors(tmp_path, args, words):
    out = run(tmp_path, *args, "--uds", str(tmp_path / "s.sock"))
    line = assert_one_clear_line(out, EXIT_USAGE, *words)
    assert line.startswith("sidecar: error: ")
    assert not (tmp_path / "s.sock").exists()


def test_pid_file_names_the_front_end_and_goes_at_exit(tmp_path):
    pid_file = tmp_path / "sidecar.pid"
    sc = CustomSidecar("tests.e2e.extra_apps:app", "--pid", str(pid_file), ready_path="/pid")
    with sc:
        assert pid_file.read_text() == f"{sc.proc.pid}\n"
        os.kill(sc.proc.pid, signal.SIGHUP)   # a reload keeps the front-end, and the file
        time.sleep(0.5)
        assert pid_file.read_text() == f"{sc.proc.pid}\n"
    assert not pid_file.exists()
    # a failed start removes it too, and a pid file that cannot be written stops the start
    out = run(tmp_path, "tests.e2e.apps:app", "--pid", str(pid_file), "--bind", "256.0.0.1:1")
    assert out.returncode == EXIT_USAGE and not pid_file.exists()
    out = run(tmp_path, "tests.e2e.apps:app", "--pid", str(tmp_path / "no" / "x.pid"))
    assert_one_clear_line(out, EXIT_USAGE, "cannot write the pid file", "No such file")


def test_socket_in_missing_directory(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "s.sock"
    out = run(tmp_path, "tests.e2e.apps:app", "--uds", str(path), "--app-dir", str(ROOT))
    assert_one_clear_line(out, EXIT_USAGE, str(path), "No such file or directory")


def test_port_already_in_use(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = run(tmp_path, "tests.e2e.apps:app", "--bind", f"127.0.0.1:{port}",
                  "--app-dir", str(ROOT))
    assert_one_clear_line(out, EXIT_USAGE, f"127.0.0.1:{port}", "address already in use")


def test_bind_port_0_takes_a_free_port_and_logs_it(tmp_path):
    """``--bind 127.0.0.1:0`` (as uvicorn's ``--port 0``): the kernel picks the port, and the
    ready line names the one it picked, so a script can find it."""
    proc = subprocess.Popen([sys.executable, "-m", "sidecar", "tests.e2e.apps:app", "--bind",
                             "127.0.0.1:0", "--workers", "1", "--app-dir", str(ROOT)],
                            cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    try:
        port = None
        for line in proc.stderr:  # ends if the server exits
            m = re.search(r"ready on .*http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "no ready line"
        assert port != 0
        assert httpx.get(f"http://127.0.0.1:{port}/pid", timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stderr.close()


def test_uds_path_taken_by_a_live_server(tmp_path):
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as holder:
        holder.bind(path)
        holder.listen()
        out = run(tmp_path, "tests.e2e.apps:app", "--uds", path, "--app-dir", str(ROOT))
    assert_one_clear_line(out, EXIT_USAGE, path, "another server")


def test_help_exits_0(tmp_path):
    out = run(tmp_path, "--help")
    assert out.returncode == 0
    assert out.stdout.startswith("usage: sidecar")
    assert "--workers" in out.stdout and out.stderr == ""


def test_console_script_help():
    assert SIDECAR_SCRIPT, "the `sidecar` console script is not installed next to python"
    out = subprocess.run([SIDECAR_SCRIPT, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("usage: sidecar")


# --- the app cannot start: the reason in one short line, exit 4 / 3 ---------------

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[(worker \d+ )?\d+\] (ERROR|CRITICAL) ")


def assert_startup_failure(out: subprocess.CompletedProcess, code: int, reason: str,
                           workers: int) -> None:
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == code, (out.returncode, out.stderr)
    lines = lines_of(out.stderr)
    assert all(LOG_LINE.match(line) for line in lines), out.stderr
    assert all(len(line) < 300 for line in lines), out.stderr
    # one line, the supervisor's, however many workers failed alike: the verdict and why
    assert len(lines) == 1, out.stderr
    assert "startup failed" in lines[0] and reason in lines[0], out.stderr


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("app, code, reason", [
    ("tests.e2e.no_such_module:app", EXIT_IMPORT_FAILED,
     "no module named 'tests.e2e.no_such_module'"),
    ("tests.e2e.apps:no_such_app", EXIT_IMPORT_FAILED, "has no attribute 'no_such_app'"),
    ("tests.e2e.broken_app:app", EXIT_IMPORT_FAILED,
     "RuntimeError: cannot reach the settings service (test)"),
    ("tests.e2e.extra_apps:failing_startup", EXIT_STARTUP_FAILED, STARTUP_FAILURE),
], ids=["module", "attribute", "import-raises", "lifespan-startup"])
def test_app_that_cannot_start(tmp_path, app, code, reason, workers):
    uds = tmp_path / "s.sock"
    out = run(tmp_path, app, "--uds", str(uds), "--app-dir", str(ROOT), "--workers",
              str(workers))
    assert_startup_failure(out, code, reason, workers)
    assert not uds.exists()  # the socket it had opened is gone


# --- settings from every source ---------------------------------------------------------------

class CustomSidecar(Sidecar):
    """A Sidecar whose command line is exactly what the test says (no --workers by default),
    optionally through the console script instead of ``python -m sidecar``."""

    def __init__(self, app: str, *args: str, script: str | None = None,
                 workers_flag: bool = False, **kw):
        super().__init__(app, *args, **kw)
        self.script = script
        self.workers_flag = workers_flag

    def command(self) -> list[str]:
        cmd = super().command()
        if not self.workers_flag:
            i = cmd.index("--workers")
            del cmd[i:i + 2]
        if self.script:
            cmd = [self.script, *cmd[3:]]  # instead of: python -m sidecar
        return cmd


def test_python_dash_m_serves(tmp_path):
    with Sidecar("tests.e2e.extra_apps:app", ready_path="/pid", workers=2) as sc:
        assert serving_pids(sc, 2) == set(sc.worker_pids())
        assert len(sc.worker_pids()) == 2


def test_console_script_serves():
    with CustomSidecar("tests.e2e.extra_apps:app", script=SIDECAR_SCRIPT, workers_flag=True,
                       ready_path="/pid", workers=2) as sc:
        assert Path(sc.proc.args[0]).name == "sidecar"
        assert serving_pids(sc, 2) == set(sc.worker_pids())
        assert len(sc.worker_pids()) == 2


def test_workers_from_environment():
    with CustomSidecar("tests.e2e.extra_apps:app", ready_path="/pid",
                       env={"SIDECAR_WORKERS": "1"}) as sc:
        assert len(sc.worker_pids()) == 1
        assert serving_pids(sc, 2) == set(sc.worker_pids())


def test_flag_beats_environment():
    with CustomSidecar("tests.e2e.extra_apps:app", workers_flag=True, ready_path="/pid",
                       workers=2, env={"SIDECAR_WORKERS": "1"}) as sc:
        assert len(sc.worker_pids()) == 2
        assert serving_pids(sc, 2) == set(sc.worker_pids())


def test_web_concurrency_is_the_workers_default(tmp_path):
    """uvicorn's and gunicorn's WEB_CONCURRENCY: below sidecar's own settings."""
    from sidecar.cli import UsageError, load_config
    assert load_config(["x:app"], environ={"WEB_CONCURRENCY": "3"}).workers == 3
    assert load_config(["x:app"], environ={"WEB_CONCURRENCY": "3",
                                           "SIDECAR_WORKERS": "2"}).workers == 2
    assert load_config(["x:app", "-w", "1"], environ={"WEB_CONCURRENCY": "3"}).workers == 1
    conf = tmp_path / "sidecar.toml"
    conf.write_text("workers = 4\n")
    assert load_config(["x:app", "--config", str(conf)],
                       environ={"WEB_CONCURRENCY": "3"}).workers == 4
    with pytest.raises(UsageError, match="WEB_CONCURRENCY"):
        load_config(["x:app"], environ={"WEB_CONCURRENCY": "many"})
    with CustomSidecar("tests.e2e.extra_apps:app", ready_path="/pid",
                       env={"WEB_CONCURRENCY": "1"}) as sc:
        assert len(sc.worker_pids()) == 1


def test_toml_config_file(tmp_path):
    conf = tmp_path / "sidecar.toml"
    conf.write_text('workers = 1\nroot-path = "/from-toml"\naccess_log = false\n')
    with CustomSidecar("tests.e2e.extra_apps:app", "--config", str(conf),
                       ready_path="/pid") as sc:
        assert len(sc.worker_pids()) == 1
        with sc.client(timeout=10) as c:
            who = c.get("/whoami").json()
            assert who["pid"] == sc.worker_pids()[0]
        assert who["root_path"] == "/from-toml"


def test_uvicorn_spelling_of_max_requests():
    from sidecar.cli import load_config
    assert load_config(["m:app", "--limit-max-requests", "5"], environ={}).max_requests == 5


def test_host_and_port_as_uvicorn_spells_them(tmp_path):
    """--host/--port: one more TCP listener, IPv6 literals included; a bad port is one line."""
    port = free_port()
    with Sidecar("tests.e2e.apps:app", "--host", "::1", "--port", str(port), ready_path="/pid",
                 workers=1) as sc:
        assert httpx.get(sc.url + "/pid").status_code == 200        # its --bind still serves
        assert httpx.get(f"http://[::1]:{port}/pid").status_code == 200
    out = run(tmp_path, "tests.e2e.apps:app", "--port", "99999", "--uds", str(tmp_path / "s"))
    assert_one_clear_line(out, EXIT_USAGE, "99999")


def test_positive_forms_of_the_boolean_flags_beat_the_environment():
    """--server-header / --date-header / --proxy-headers (uvicorn's spellings of the defaults)
    are accepted and, like every flag, beat SIDECAR_* settings."""
    env = {"SIDECAR_SERVER_HEADER": "false", "SIDECAR_DATE_HEADER": "false"}
    with Sidecar("tests.e2e.apps:app", "--server-header", "--proxy-headers", ready_path="/pid",
                 workers=1, env=env) as sc:
        r = httpx.get(sc.url + "/pid")
    assert r.headers["server"] == "sidecar" and "date" not in r.headers


def test_headers_from_the_environment_one_per_line():
    """SIDECAR_HEADERS takes one field per line: a value may hold commas."""
    with Sidecar("tests.e2e.apps:app", ready_path="/pid", workers=1,
                 env={"SIDECAR_HEADERS": "Cache-Control: no-cache, no-store\nX-B: 2\n"}) as sc:
        r = httpx.get(sc.url + "/pid")
    assert r.headers["cache-control"] == "no-cache, no-store" and r.headers["x-b"] == "2"


def test_header_flag_adds_fields_to_app_responses():
    """--header (uvicorn's): every response from the app carries the fields, before the
    app's own; "Server:" replaces sidecar's; SIDECAR_HEADERS (comma-separated) too."""
    with Sidecar("tests.e2e.apps:app", "--header", "X-Frame-Options: DENY",
                 "--header", "Server:edge/1", ready_path="/pid", workers=1,
                 env={"SIDECAR_HEADERS": "X-From-Env: yes"}) as sc:
        for uds in (False, True):
            with sc.client(uds=uds, timeout=10) as c:
                r = c.get("/pid")
                assert r.status_code == 200
                assert r.headers["x-frame-options"] == "DENY"
                assert r.headers.get_list("server") == ["edge/1"]
                assert "x-from-env" not in r.headers   # the flag beats the environment
                names = [k.lower() for k, _ in r.headers.raw]
                assert names.index(b"x-frame-options") < names.index(b"content-type")


def test_env_file_reaches_the_app(tmp_path):
    env_file = tmp_path / "app.env"
    env_file.write_text("# comment\nSIDECAR_E2E_GREETING='hello world'\n"
                        "export SIDECAR_E2E_OTHER=42\n")
    with Sidecar("tests.e2e.extra_apps:app", "--env-file", str(env_file), ready_path="/pid",
                 workers=2) as sc:
        with sc.client(timeout=10) as c:
            for _ in range(4):  # every worker has it
                assert c.get("/whoami?env=SIDECAR_E2E_GREETING").json()["env"] == "hello world"
                assert c.get("/whoami?env=SIDECAR_E2E_OTHER").json()["env"] == "42"


def test_bad_env_file_line(tmp_path):
    env_file = tmp_path / "app.env"
    env_file.write_text("GOOD=1\nthis is not an assignment\n")
    out = run(tmp_path, "tests.e2e.apps:app", "--env-file", str(env_file), "--uds",
              str(tmp_path / "s.sock"))
    assert_one_clear_line(out, EXIT_USAGE, f"{env_file}:2")


def test_root_path(tmp_path):
    with Sidecar("tests.e2e.extra_apps:app", "--root-path", "/api", ready_path="/pid",
                 workers=1) as sc:
        who = httpx.get(sc.url + "/whoami", timeout=10).json()
        assert who["root_path"] == "/api"
        assert who["path"] == "/api/whoami"
        assert who["raw_path"] == "/api/whoami"


def test_websocket_settings():
    from sidecar.cli import load_config
    c = load_config(["x:app"], environ={})
    assert (c.ws_max_size, c.ws_ping_interval, c.ws_ping_timeout, c.ws_per_message_deflate) \
        == (16 << 20, 20.0, 20.0, True)
    c = load_config(["x:app", "--ws-max-size", "1m", "--ws-ping-interval", "5",
                     "--ws-ping-timeout", "2.5", "--no-ws-per-message-deflate"], environ={})
    assert (c.ws_max_size, c.ws_ping_interval, c.ws_ping_timeout, c.ws_per_message_deflate) \
        == (1 << 20, 5.0, 2.5, False)
    c = load_config(["x:app"], environ={"SIDECAR_WS_PER_MESSAGE_DEFLATE": "off",
                                        "SIDECAR_WS_MAX_SIZE": "64k"})
    assert c.ws_per_message_deflate is False and c.ws_max_size == 65536
    assert load_config(["x:app", "--no-ws-per-message-deflate", "--ws-per-message-deflate"],
                       environ={}).ws_per_message_deflate is True


def test_lifecycle_settings(tmp_path):
    from sidecar.cli import load_config
    c = load_config(["x:app"], environ={})
    assert (c.worker_hang_timeout, c.max_requests, c.max_requests_jitter,
            c.max_worker_memory) == (30.0, 0, 0, 0)
    c = load_config(["x:app", "--timeout-worker-hang", "0", "--max-requests", "1000",
                     "--max-requests-jitter", "50", "--max-worker-memory", "512"], environ={})
    assert (c.worker_hang_timeout, c.max_requests, c.max_requests_jitter,
            c.max_worker_memory) == (0.0, 1000, 50, 512)
    assert load_config(["x:app", "--max-worker-memory", "2g"], environ={}).max_worker_memory \
        == 2048
    c = load_config(["x:app"], environ={"SIDECAR_MAX_WORKER_MEMORY": "1g",
                                        "SIDECAR_WORKER_HANG_TIMEOUT": "10",
                                        "SIDECAR_MAX_REQUESTS": "7"})
    assert (c.max_worker_memory, c.worker_hang_timeout, c.max_requests) == (1024, 10.0, 7)
    toml = tmp_path / "s.toml"
    toml.write_text("max-worker-memory = 300\nmax-requests-jitter = 9\n")
    c = load_config(["x:app", "--config", str(toml)], environ={})
    assert (c.max_worker_memory, c.max_requests_jitter) == (300, 9)
