"""A headless Chromium driven over the DevTools protocol, for tests that need a real browser.

    with Chromium() as browser:
        page = browser.open("http://127.0.0.1:8000/ws/check")
        results = page.evaluate("window.wsCheck", timeout=120)   # awaits a promise
        png = page.screenshot()
        page.close()

The protocol runs over a pipe (``--remote-debugging-pipe``: commands on fd 3, replies on fd 4,
each a JSON text ended by a NUL byte), so there is no debugging port to find or to race for.
Chromium's profile, caches and crash dumps stay in one temporary directory; every process it
starts is in its own process group, killed on exit.  Not a test module: a helper for tests.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time


def find_chromium() -> str:
    """Path of Debian's chromium, or RuntimeError: tests that need it must not skip."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("chromium is not installed: run scripts/setup.sh as root")


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Until no process of the group is left (killed helpers are reaped by init, not us)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise BrowserError(f"Chromium's processes (group {pgid}) still there after {timeout}s")


class BrowserError(AssertionError):
    """A DevTools command failed, the page threw, or the browser went away."""


class Chromium:
    """One headless browser; ``open(url)`` gives a ``Page`` in a new tab."""

    def __init__(self, startup_timeout: float = 30.0, args=()):
        self.startup_timeout = startup_timeout
        self.extra_args = list(args)   # more command-line switches
        self.proc: subprocess.Popen | None = None
        self.tmp: tempfile.TemporaryDirectory | None = None
        self._ids = itertools.count(1)
        self._buffer = b""
        self._events: list[dict] = []   # events read while waiting for a reply

    def __enter__(self) -> "Chromium":
        self.tmp = tempfile.TemporaryDirectory(prefix="chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        args = [
            find_chromium(), "--headless=new", "--remote-debugging-pipe",
            "--no-sandbox",              # we run as root in the test environment
            "--disable-dev-shm-usage",   # tests leave nothing in /dev/shm
            "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--metrics-recording-only", "--password-store=basic",
            "--disable-breakpad", "--disable-crash-reporter",
            f"--user-data-dir={self.tmp.name}/profile", f"--crash-dumps-dir={self.tmp.name}",
            *self.extra_args,
            "about:blank",
        ]

        def pipes_to_3_and_4():
            # In the child, before exec.  Copies first: either pipe end may itself be 3 or 4.
            read_end, write_end = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self._stderr = open(os.path.join(self.tmp.name, "stderr.log"), "wb")
        # close_fds=False: fds 3 and 4 must survive; Python's other fds are not inheritable
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
            preexec_fn=pipes_to_3_and_4, close_fds=False, start_new_session=True,
            env=dict(os.environ, HOME=self.tmp.name))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        try:
            self.call("Browser.getVersion", timeout=self.startup_timeout)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        proc, self.proc = self.proc, None
        try:
            if proc is not None:
                self._stop(proc)
        finally:
            if self.tmp is not None:
                self.tmp.cleanup()
                self.tmp = None

    def _stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            try:
                self.send("Browser.close")
            except OSError:
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:  # the renderer, GPU and utility processes share the group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            os.close(fd)
        self._stderr.close()
        _wait_group_gone(proc.pid, 10.0)

    def log(self) -> str:
        try:
            with open(os.path.join(self.tmp.name, "stderr.log"), errors="replace") as fh:
                return fh.read()
        except (OSError, AttributeError):
            return ""

    # --- the DevTools protocol -----------------------------------------------------------

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        msg_id = next(self._ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        return msg_id

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("no answer from Chromium in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium went away:\n{self.log()[-4000:]}")
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        """Send a command and return its result (events that come meanwhile are kept)."""
        msg_id = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._events.append(msg)

    def wait_event(self, method: str, session: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self._events):
                if ev["method"] == method and ev.get("sessionId") == session:
                    return self._events.pop(i)
            msg = self._read(deadline)
            if "method" in msg:
                self._events.append(msg)

    def events(self, session: str) -> list[dict]:
        return [ev for ev in self._events if ev.get("sessionId") == session]

    def open(self, url: str, timeout: float = 30.0) -> "Page":
        """A new tab showing ``url``, returned once its load event fired."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, session["sessionId"], target)
        page.call("Page.enable")
        page.call("Runtime.enable")
        nav = page.call("Page.navigate", {"url": url}, timeout=timeout)
        if nav.get("errorText"):
            raise BrowserError(f"cannot load {url}: {nav['errorText']}")
        self.wait_event("Page.loadEventFired", page.session, timeout)
        return page


class Page:
    """One tab: ``evaluate`` JavaScript, take a ``screenshot``, read its console."""

    def __init__(self, browser: Chromium, session: str, target: str):
        self.browser = browser
        self.session = session
        self.target = target

    def close(self) -> None:
        """Close the tab (its sockets close as a browser's do when a page goes away)."""
        self.browser.call("Target.closeTarget", {"targetId": self.target})

    def call(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        return self.browser.call(method, params, self.session, timeout)

    def evaluate(self, expression: str, timeout: float = 30.0):
        """The value of ``expression`` (awaited if it is a promise), as JSON data."""
        result = self.call("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True,
            "timeout": int(timeout * 1000)}, timeout=timeout + 5)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression} threw: "
                               f"{details.get('exception', {}).get('description') or details}")
        return result["result"].get("value")

    def console(self) -> list[str]:
        """What the page logged (console.* calls and uncaught exceptions) so far."""
        out = []
        for ev in self.browser.events(self.session):
            if ev["method"] == "Runtime.consoleAPICalled":
                out.append(" ".join(str(a.get("value", a.get("description", "")))
                                    for a in ev["params"]["args"]))
            elif ev["method"] == "Runtime.exceptionThrown":
                out.append(str(ev["params"]["exceptionDetails"]))
        return out

    def screenshot(self) -> bytes:
        """The page as PNG bytes (the whole page, not only the viewport)."""
        result = self.call("Page.captureScreenshot", {"format": "png",
                                                      "captureBeyondViewport": True})
        return base64.b64decode(result["data"])
