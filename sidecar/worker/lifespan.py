"""The ASGI lifespan protocol: startup before the worker takes any stream, shutdown after it
drained.  ``state`` is the dict the app fills during startup; every request scope gets a
shallow copy of it (ASGI spec 2.4, "Lifespan State").

Modes (uvicorn's): "off" never calls the app with a lifespan scope; "on" treats any failure as
fatal; "auto" treats an app that raises before sending anything as one that does not support
lifespan -- the ASGI spec tells servers to carry on in that case.
"""
from __future__ import annotations

import asyncio
import logging

__all__ = ["Lifespan", "StartupFailed"]

_ASGI = {"version": "3.0", "spec_version": "2.0"}


class StartupFailed(Exception):
    """The app refused to start (lifespan.startup.failed) or raised during startup in "on"."""


class Lifespan:
    def __init__(self, app, mode: str = "auto", logger: logging.Logger | None = None):
        self.app = app
        self.mode = mode
        self.state: dict = {}
        self.log = logger or logging.getLogger("sidecar.worker")
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._phase = "idle"  # -> startup -> running -> shutdown
        self._sent_any = False
        self._startup_failed: str | None = None
        self._shutdown_failed: str | None = None
        self._error: BaseException | None = None
        self._task: asyncio.Task | None = None

    async def startup(self) -> None:
        """Return once the app is ready; raise StartupFailed if it must not serve."""
        if self.mode == "off":
            return
        self._phase = "startup"
        self._task = asyncio.get_running_loop().create_task(self._main())
        self._inbox.put_nowait({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self._startup_failed is not None:
            raise StartupFailed(f"application startup failed: {self._startup_failed}"
                                if self._startup_failed else "application startup failed")
        if self._error is not None and self.mode == "on":
            raise StartupFailed(f"application raised during lifespan startup: "
                                f"{type(self._error).__name__}: {self._error}")
        self._phase = "running"
        self.log.debug("application startup complete")

    async def shutdown(self, timeout: float) -> None:
        """Ask the app to shut down and wait up to ``timeout`` seconds.  Never raises."""
        task = self._task
        if task is None or task.done() or self._phase != "running":
            return
        self._phase = "shutdown"
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._shutdown_done.wait(), timeout)
        except TimeoutError:
            self.log.error("application shutdown did not complete within %gs", timeout)
        if self._shutdown_failed is not None:
            self.log.error("application shutdown failed: %s", self._shutdown_failed)
        if not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=1.0)  # an app may swallow the cancellation

    def abort(self) -> None:
        """Stop waiting for a startup that will not be needed (SIGTERM during startup)."""
        if self._task is not None:
            self._task.cancel()

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: B036 -- the app's failure is reported, not raised
            self._error = exc
            if self._startup_failed is not None or self._shutdown_failed is not None:
                pass  # the app said so already; raising afterwards is allowed
            elif self.mode == "auto" and not self._sent_any:
                self.log.info("ASGI 'lifespan' protocol appears unsupported by the app (%s: %s)",
                              type(exc).__name__, exc)
                self.log.debug("lifespan error", exc_info=exc)
            else:
                self.log.error("exception in lifespan %s", self._phase, exc_info=exc)
        finally:
            self._startup_done.set()
            self._shutdown_done.set()

    async def _receive(self) -> dict:
        return await self._inbox.get()

    async def _send(self, message: dict) -> None:
        kind = message["type"]
        self._sent_any = True
        if kind == "lifespan.startup.complete" and self._phase == "startup":
            self._startup_done.set()
        elif kind == "lifespan.startup.failed" and self._phase == "startup":
            self._startup_failed = str(message.get("message", ""))
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete" and self._phase == "shutdown":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed" and self._phase == "shutdown":
            self._shutdown_failed = str(message.get("message", ""))
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} during lifespan {self._phase}")
