"""A throwaway nginx in front of a Unix socket, configured the way our docs tell users to.

    with NginxServer("/tmp/x/sidecar.sock") as base_url:
        httpx.get(base_url + "/api/hello")

Everything nginx writes (pid, logs, temp files) stays in one temporary directory, so it runs
as root or not without touching /etc or /var.  Not a test module: a helper for tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# The site is the example users install (examples/nginx/sidecar.conf), with only its socket
# path and listen address replaced; this wraps it in what a throwaway nginx needs around it.
EXAMPLE_SITE = Path(__file__).resolve().parent.parent / "examples" / "nginx" / "sidecar.conf"
EXAMPLE_SOCKET = "unix:/run/sidecar/sidecar.sock"

CONFIG_TEMPLATE = """\
daemon off;
master_process {master_process};
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log {log_level};

events {{
    worker_connections 1024;
}}

http {{
    access_log {access_log};
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    include {prefix}/site.conf;
}}
"""


def site_config(uds: str | os.PathLike, port: int, site: Path = EXAMPLE_SITE) -> str:
    """An example site (examples/nginx/sidecar.conf by default) for this socket and port
    (fails if the example changed so that the replacement no longer applies: the test must
    run the example, not a copy)."""
    text = site.read_text()
    for old in (EXAMPLE_SOCKET, "listen 80"):
        if text.count(old) != 1:
            raise AssertionError(f"{site}: expected {old!r} once")
    return text.replace(EXAMPLE_SOCKET, f"unix:{uds}").replace("listen 80",
                                                              f"listen 127.0.0.1:{port}")


def find_nginx() -> str:
    """Path of the nginx binary, or RuntimeError: tests that need nginx must not skip."""
    path = shutil.which("nginx")
    if path is None and os.access("/usr/sbin/nginx", os.X_OK):  # not on a non-root PATH
        path = "/usr/sbin/nginx"
    if path is None:
        raise RuntimeError("nginx is not installed: run scripts/setup.sh as root (nginx-light)")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NginxServer:
    """Context manager: nginx on 127.0.0.1:<free port> proxying to the Unix socket ``uds``.

    ``__enter__`` returns the base URL (``http://127.0.0.1:PORT``).  ``directory`` keeps the
    config and logs somewhere you choose (e.g. pytest's ``tmp_path``); otherwise a temporary
    directory is made and removed on exit.  ``error_log()`` returns nginx's error log.
    """

    def __init__(
        self,
        uds: str | os.PathLike,
        *,
        master_process: bool = False,
        directory: str | os.PathLike | None = None,
        access_log: bool = True,
        log_level: str = "info",
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        site: Path = EXAMPLE_SITE,
    ) -> None:
        self.uds = Path(uds)
        self.site = site
        self.master_process = master_process
        self.access_log = access_log
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._given_directory = Path(directory) if directory is not None else None
        self.prefix: Path | None = None
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.prefix / "nginx.conf"

    def error_log(self) -> str:
        try:
            return (self.prefix / "error.log").read_text(errors="replace")
        except (OSError, TypeError):
            return ""

    def __enter__(self) -> str:
        nginx = find_nginx()
        if self._given_directory is not None:
            self.prefix = self._given_directory.resolve()
            self.prefix.mkdir(parents=True, exist_ok=True)
        else:
            self.prefix = Path(tempfile.mkdtemp(prefix="nginx-"))
        try:
            # A port that was free can be taken before nginx binds it: try a few.
            for attempt in range(3):
                self.port = _free_port()
                self._write_config()
                if self._start(nginx, last_attempt=attempt == 2):
                    return self.url
        except BaseException:
            self._cleanup()
            raise
        raise AssertionError("unreachable")

    def __exit__(self, *exc_info) -> None:
        self._cleanup()

    def _write_config(self) -> None:
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / name).mkdir(exist_ok=True)
        # As root, a master process hands requests to workers running as `nobody`, who could
        # not reach a root-owned socket or temp directory; keep them root.  (Ignored, with a
        # warning, when not root, so only say it as root.)
        user = "user root;" if os.geteuid() == 0 else ""
        access_log = f"{self.prefix}/access.log" if self.access_log else "off"
        (self.prefix / "site.conf").write_text(site_config(self.uds, self.port, self.site))
        self.config_path.write_text(
            CONFIG_TEMPLATE.format(
                master_process="on" if self.master_process else "off",
                user=user,
                prefix=self.prefix,
                log_level=self.log_level,
                access_log=access_log,
            )
        )

    def _start(self, nginx: str, *, last_attempt: bool) -> bool:
        """Start nginx and wait for its port; False if the port was taken (retry)."""
        with open(self.prefix / "stderr.log", "ab") as stderr:
            self.process = subprocess.Popen(
                # -e: nginx opens its error log before reading the config; keep that one in
                # the prefix too instead of /var/log/nginx.
                [nginx, "-p", str(self.prefix), "-c", str(self.config_path),
                 "-e", str(self.prefix / "error.log")],  # fmt: skip
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                log = self.error_log()
                self.process = None
                if "Address already in use" in log and not last_attempt:
                    return False
                raise RuntimeError(f"nginx exited with code {code} at startup:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                pass
            if time.monotonic() >= deadline:
                self._stop()
                raise RuntimeError(
                    f"nginx did not accept on port {self.port} within {self.startup_timeout} s:\n"
                    f"{self.error_log()}"
                )
            time.sleep(0.02)

    def _stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        # SIGQUIT: graceful (lets in-flight requests finish); SIGTERM: fast; SIGKILL: last.
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(self.stop_timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        # A master's workers are in its process group; make sure none is left behind.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def _cleanup(self) -> None:
        try:
            self._stop()
        finally:
            if self._given_directory is None and self.prefix is not None:
                shutil.rmtree(self.prefix, ignore_errors=True)
