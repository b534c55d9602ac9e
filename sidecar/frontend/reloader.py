"""``--reload``: for development, replace the workers when a Python file changes.

The front-end polls the modification times of the ``*.py`` files under the watched
directories (``--reload-dir``, repeatable; the app's directory by default) every
``INTERVAL`` seconds, as uvicorn's StatReload does, and on a change runs the same
zero-downtime reload as SIGHUP: new workers import the app afresh and pass lifespan startup
before the old ones drain.  A change that breaks the import leaves the old workers serving
and logs why; the next save tries again.  Only the app is reloaded (it lives in the
workers): a change to sidecar itself needs a restart.

Not for production: the scan costs CPU in proportion to the files watched, and a reload
drains every worker.  Directories that never hold app code are skipped (``SKIP``).
"""
from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger("sidecar")

INTERVAL = 0.5   # seconds between scans
SKIP = frozenset((".git", ".hg", ".svn", ".venv", "venv", "__pycache__", "node_modules",
                  ".mypy_cache", ".pytest_cache", ".tox", "build", "dist"))


def snapshot(dirs: list[str]) -> dict[str, int]:
    """path -> st_mtime_ns of every ``*.py`` file under ``dirs`` (skipping SKIP and hidden
    directories); a file that vanishes while we look is left out."""
    found: dict[str, int] = {}
    for top in dirs:
        for root, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if d not in SKIP and not d.startswith(".")]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    try:
                        found[path] = os.stat(path).st_mtime_ns
                    except OSError:
                        pass
    return found


def changed(old: dict[str, int], new: dict[str, int]) -> list[str]:
    """Files added, removed or modified between two snapshots, sorted."""
    return sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))


class Reloader:
    def __init__(self, server, dirs: list[str], interval: float = INTERVAL):
        self.server = server
        self.dirs = [os.path.abspath(d) for d in dirs]
        self.interval = interval
        self.loop = server.loop
        self._files: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._scan: asyncio.Future | None = None

    def start(self) -> None:
        self._files = snapshot(self.dirs)
        log.info("--reload: watching %d Python files under %s", len(self._files),
                 ", ".join(self.dirs))
        self._timer = self.loop.call_later(self.interval, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        # the walk runs in a thread: a big tree must not stall the connections' loop
        self._scan = self.loop.run_in_executor(None, snapshot, self.dirs)
        self._scan.add_done_callback(self._scanned)

    def _scanned(self, fut: asyncio.Future) -> None:
        if self._timer is None:   # closed meanwhile
            return
        try:
            files = fut.result()
        except Exception:   # a bug here must not end the server
            log.exception("--reload: scanning failed")
            files = self._files
        diff = changed(self._files, files)
        self._files = files
        if diff:
            more = f" and {len(diff) - 1} more" if len(diff) > 1 else ""
            log.info("--reload: %s changed%s; reloading the workers",
                     os.path.relpath(diff[0]), more)
            self.server.request_reload()
        self._timer = self.loop.call_later(self.interval, self._tick)
