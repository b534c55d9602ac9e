"""Lifespan: startup before any stream, state in every request scope, failures by mode."""
import json
import signal

from sidecar.worker.config import EXIT_OK, EXIT_STARTUP_FAILED

from .host import WorkerExited, run_host


def test_state_from_startup_is_in_every_scope_as_a_copy():
    async def scenario(host):
        await host.hello()
        for _ in range(2):  # each request increments its own copy: both see 1
            response = await host.response(host.request("GET", "/"))
            assert json.loads(response.body) == {"greeting": "hello from lifespan",
                                                 "counter": 1}
        host.signal(signal.SIGTERM)
        assert await host.exit_code() == EXIT_OK
        assert "LIFESPAN SHUTDOWN RAN" in host.log()

    run_host(scenario, "apps:with_state", lifespan="on")


def _expect_exit_before_hello(code: int, text: str):
    async def scenario(host):
        try:
            ev = await host.recv(0)
        except WorkerExited as exc:
            assert exc.code == code
        else:
            raise AssertionError(f"worker answered {ev}")
        assert text in host.log()
    return scenario


def test_startup_failed_exits_3():
    run_host(_expect_exit_before_hello(EXIT_STARTUP_FAILED,
                                       "application startup failed: no database"),
             "apps:startup_fails")


def test_startup_raising_in_mode_on_exits_3():
    run_host(_expect_exit_before_hello(
        EXIT_STARTUP_FAILED,
        "application raised during lifespan startup: RuntimeError: cannot start: no database"),
        "apps:startup_raises", lifespan="on")


def test_startup_raising_in_mode_auto_means_unsupported():
    async def scenario(host):
        await host.hello()
        response = await host.response(host.request("GET", "/hello"))
        assert response.status == 200
        assert "lifespan' protocol appears unsupported" in host.log()
        assert "Traceback" not in host.log()

    run_host(scenario, "apps:startup_raises", lifespan="auto")


def test_lifespan_off_never_calls_the_app_with_it():
    async def scenario(host):
        await host.hello()
        host.signal(signal.SIGTERM)
        assert await host.exit_code() == EXIT_OK
        assert "lifespan" not in host.log()
        assert "LIFESPAN SHUTDOWN RAN" not in host.log()

    run_host(scenario, "apps:with_state", lifespan="off")
