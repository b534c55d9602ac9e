"""The worker process: exit codes, signals, draining, the parent going away."""
import asyncio
import os
import signal
import subprocess
import sys

from sidecar.events import APP_DONE, HTTP_BODY, HTTP_REQUEST, RECV_CREDIT, pack
from sidecar.worker.config import (
    EXIT_CONFIG_ERROR, EXIT_IMPORT_FAILED, EXIT_OK, EXIT_PROTOCOL_ERROR,
)

from .host import REPO, TIMEOUT, WorkerExited, run_host


def _exit_before_hello(expected_code: int):
    async def scenario(host):
        try:
            ev = await host.recv(0)
        except WorkerExited as exc:
            assert exc.code == expected_code
        else:
            raise AssertionError(f"worker answered {ev}")
        return host.log()
    return scenario


def test_missing_module_exits_4_with_one_clear_line():
    log = run_host(_exit_before_hello(EXIT_IMPORT_FAILED), "no_such_module:app")
    lines = log.strip().splitlines()
    assert len(lines) == 1, log
    assert "ERROR cannot import app module 'no_such_module'" in lines[0]


def test_missing_attribute_exits_4():
    log = run_host(_exit_before_hello(EXIT_IMPORT_FAILED), "apps:nothing_here")
    assert "module 'apps' has no attribute 'nothing_here'" in log
    assert "Traceback" not in log


def test_factory():
    async def scenario(host):
        await host.hello()
        assert (await host.response(host.request("GET", "/"))).body == b"Hello, world!"

    run_host(scenario, "apps:make_hello", factory=True)


def test_missing_config_exits_2():
    env = {k: v for k, v in os.environ.items() if k != "SIDECAR_WORKER"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-m", "sidecar.worker"], env=env,
                          capture_output=True, timeout=TIMEOUT)
    assert done.returncode == EXIT_CONFIG_ERROR
    assert b"SIDECAR_WORKER is not set" in done.stderr


def test_sigint_is_ignored():
    async def scenario(host):
        await host.hello()
        host.signal(signal.SIGINT)
        await host.ping()
        assert (await host.response(host.request("GET", "/hello"))).status == 200

    run_host(scenario, "apps:router")


def test_sigterm_drains_in_flight_streams_then_exits_0():
    async def scenario(host):
        await host.hello()
        sid = host.request("POST", "/slow", body=b"part1-", more=True)
        await host.ping()
        host.signal(signal.SIGTERM)
        await host.ping()  # still serving after SIGTERM...
        late = await host.response(host.request("GET", "/hello"))  # ...new streams too
        assert late.status == 200
        host.body(sid, b"part2")
        response = await host.response(sid)
        assert (response.body, response.error) == (b"done:part1-part2", None)
        assert await host.exit_code() == EXIT_OK
        assert "LIFESPAN SHUTDOWN RAN" in host.log()

    run_host(scenario, "apps:with_state", lifespan="on")


def test_sigterm_timeout_disconnects_then_cancels():
    async def scenario(host):
        await host.hello()
        waiting = host.request("POST", "/slow", body=b"", more=True)
        stuck = host.request("GET", "/ignores_everything")
        assert await host.recv(waiting) == [RECV_CREDIT, waiting, 0]  # it waits for body
        host.signal(signal.SIGTERM)
        assert await host.recv(waiting) == [APP_DONE, waiting,
                                            "RuntimeError: saw http.disconnect"]
        done = await host.recv(stuck)
        assert done[0] == APP_DONE and done[2].startswith("CancelledError")
        assert await host.exit_code() == EXIT_OK
        assert "LIFESPAN SHUTDOWN RAN" in host.log()

    run_host(scenario, "apps:with_state", lifespan="on", shutdown_timeout=0.2)


def test_sigterm_during_an_idle_period_exits_at_once():
    async def scenario(host):
        await host.hello()
        host.signal(signal.SIGTERM)
        assert await host.exit_code(timeout=2.0) == EXIT_OK

    run_host(scenario, "apps:router", shutdown_timeout=60)


_MIDDLE = """
import os, subprocess, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
worker = subprocess.Popen([sys.executable, "-m", "sidecar.worker"], pass_fds=fds, stdout=2)
print(worker.pid, flush=True)
sys.stdin.read()   # the test closes our stdin: we die, the worker is orphaned
os._exit(0)
"""


def test_worker_exits_when_its_parent_dies():
    async def scenario(host):
        await host.hello()
        host.release_parent()
        assert await host.exit_code() is None  # exited (its code went to its new parent)
        assert "is gone; exiting" in host.log()

    run_host(scenario, "apps:router", spawn=_MIDDLE)


def test_sigterm_during_startup_exits_0_without_serving():
    async def scenario(host):
        await host.wait_log("STARTUP BEGUN")
        host.signal(signal.SIGTERM)
        assert await host.exit_code() == EXIT_OK
        assert host.pending(0) == []  # never said HELLO
        # nothing was in flight: no "draining" line (beside a sibling's failed startup the
        # supervisor's verdict is the one line an operator reads)
        assert "draining" not in host.log()

    run_host(scenario, "apps:slow_startup", lifespan="on")


def test_rings_of_another_generation_exit_5():
    def mangle(config):
        config["links"][0]["to_worker"]["generation"] += 1

    log = run_host(_exit_before_hello(EXIT_PROTOCOL_ERROR), "apps:router", mangle=mangle)
    assert "cannot attach the rings of host 0" in log


def test_heartbeats_on_both_rings():
    async def scenario(host):
        await host.hello()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        first = host.to_host.stats()["producer_heartbeat"]
        while host.to_host.stats()["producer_heartbeat"] == first:  # beats every 0.5 s
            assert loop.time() < deadline, "no second heartbeat"
            await asyncio.sleep(0.05)
        assert host.to_host.stats()["producer_pid"] == host.worker_pid
        assert host.to_worker.stats()["consumer_pid"] == host.worker_pid
        assert host.to_worker.stats()["consumer_heartbeat"] > 0

    run_host(scenario, "apps:router")


def test_stream_failed_before_its_task_ran_does_not_hold_up_the_drain():
    # The request and a bad event for it are published together (one release), so the
    # stream fails -- and its task is cancelled -- before that task ever runs (3.11; from
    # 3.12 it is started eagerly, and has run its first step, up to its first wait); run()'s
    # finally never runs either, and the worker must still forget the task, or SIGTERM would
    # wait for it until shutdown_timeout (60 s here, beyond the test's deadline).
    async def scenario(host):
        await host.hello()
        sid = 1
        request = [HTTP_REQUEST, sid, "POST", "http", "/slow", b"/slow", b"",
                   [[b"host", b"test"]], None, None, "1.1", "", b"a", True]
        written = host.to_worker.try_write_many(
            [pack(request), pack([HTTP_BODY, sid, "text, not bytes", False])])
        assert written == 2
        done = await host.recv(sid)
        if done[0] == RECV_CREDIT:   # the app read "a" in its first step (3.12+, eager)
            done = await host.recv(sid)
        assert done[0] == APP_DONE and done[2].startswith("protocol error")
        await host.ping()  # the worker has handled both events
        host.signal(signal.SIGTERM)
        assert await host.exit_code() == EXIT_OK
        assert "draining: 0 stream(s) in flight" in host.log()

    run_host(scenario, "apps:router", shutdown_timeout=60)
