"""A real sidecar process for end-to-end tests: start, wait until it answers, stop, inspect."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(p) for p in fh.read().split()]
        except FileNotFoundError:
            pass
    return out


def is_frontend(pid: int) -> bool:
    """Whether ``pid`` is an extra front-end process (sidecar.frontend.child)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"sidecar.frontend.child" in fh.read()
    except OSError:
        return False


class Sidecar:
    """``with Sidecar("examples.demo:app", workers=2) as sc:`` -> sc.url, sc.uds, sc.client()."""

    def __init__(self, app: str = "examples.demo:app", *args: str, workers: int = 2,
                 env: dict | None = None, ready_path: str = "/", start_timeout: float = 30.0,
                 capture_stdout: bool = False):
        self.app = app
        self.args = list(args)
        self.workers = workers
        self.env = env
        self.ready_path = ready_path
        self.start_timeout = start_timeout
        self.tmp = tempfile.TemporaryDirectory(prefix="sc-")  # short path: sun_path is 108 bytes
        self.uds = os.path.join(self.tmp.name, "s.sock")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.stderr_path = os.path.join(self.tmp.name, "stderr.log")
        self.stdout_path = os.path.join(self.tmp.name, "stdout.log") if capture_stdout else None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "sidecar", self.app, "--uds", self.uds,
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                "--app-dir", str(ROOT), "--timeout-graceful-shutdown", "5", *self.args]

    def start(self) -> "Sidecar":
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(self.env or {}))
        self._err = open(self.stderr_path, "wb")
        out = open(self.stdout_path, "wb") if self.stdout_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.command(), cwd=self.tmp.name, env=env,
                                         stdout=out, stderr=self._err)
        finally:
            if self.stdout_path:
                out.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sidecar exited with {self.proc.returncode}:\n{self.log()}")
            if self.answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sidecar not ready in {self.start_timeout}s:\n{self.log()}")

    def answers(self) -> bool:
        """Whether the server answers ready_path (any status) now.  A plain socket, not
        httpx: start() asks every 50 ms, and each httpx.get costs ~50 ms of CPU (a new client
        and its SSL context), which the starting server on this 2-core machine would lose."""
        url = urllib.parse.urlsplit(self.url)
        try:
            # a probe that gave up while its request was in flight would leave a stream the
            # app cannot answer: under load, wait for the answer (a refused connect is at once)
            with socket.create_connection((url.hostname, url.port), timeout=5.0) as s:
                s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          % self.ready_path.encode())
                return s.recv(16).startswith(b"HTTP/1.")
        except OSError:
            return False

    def log(self) -> str:
        try:
            return Path(self.stderr_path).read_text(errors="replace")
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        return [p for p in children(self.proc.pid) if not is_frontend(p)]

    def frontend_pids(self) -> list[int]:
        """The extra front-ends' pids (--frontends N > 1), not the main process's."""
        return [p for p in children(self.proc.pid) if is_frontend(p)]

    def client(self, uds: bool = False, **kw) -> httpx.Client:
        if uds:
            return httpx.Client(transport=httpx.HTTPTransport(uds=self.uds),
                                base_url="http://sidecar", **kw)
        return httpx.Client(base_url=self.url, **kw)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in self.worker_pids():
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"sidecar did not stop in {timeout}s:\n{self.log()}")
        self._err.close()
        return self.proc.returncode

    def __enter__(self) -> "Sidecar":
        return self.start()

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.tmp.cleanup()
