"""What the supervisor tells a worker process, and the exit codes a worker answers with.

The supervisor starts a worker as ``python -m sidecar.worker`` with the JSON of a
``WorkerConfig`` in the ``SIDECAR_WORKER`` environment variable and the ring descriptors in
``pass_fds``::

    {"app": "module:attr", "factory": false, "app_dir": "/abs/dir" | null,
     "index": 0, "window": 262144, "log_level": "info", "shutdown_timeout": 30.0,
     "lifespan": "auto" | "on" | "off", "root_path": "", "limit_streams": 1000,
     "interface": "auto" | "asgi" | "wsgi", "wsgi_threads": 8,
     "report_fd": 11 | null,
     "links": [{"host": 0,
                "to_worker": {"segment_fd": 5, "data_fd": 6, "space_fd": 7, "generation": 123},
                "to_host":   {"segment_fd": 8, "data_fd": 9, "space_fd": 10, "generation": 456},
                "frontend": true | false}],
     "control_fd": 11 | null}

``to_worker`` is the ring the worker consumes, ``to_host`` the ring it produces; ``frontend``
(optional, false) says the host is one of sidecar's front-ends, which send files themselves
(``http.response.pathsend`` is offered on its streams).  ``report_fd``
(optional) is a pipe: a worker that cannot start writes its one-line reason there and leaves
the logging of it to the supervisor, so N workers failing alike make one log line, not N.  More
host links come and go at run time over ``control_fd`` (sidecar/worker/control.py).  This module
imports nothing heavy, so the supervisor can use it to build the JSON and read exit codes.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from sidecar.events import DEFAULT_WINDOW
from sidecar.ring import RingSpec

__all__ = [
    "ENV_VAR", "EXIT_OK", "EXIT_INTERNAL_ERROR", "EXIT_CONFIG_ERROR", "EXIT_STARTUP_FAILED",
    "EXIT_IMPORT_FAILED", "EXIT_PROTOCOL_ERROR", "ConfigError", "LinkConfig", "WorkerConfig",
]

ENV_VAR = "SIDECAR_WORKER"

# Exit codes.  The supervisor restarts a worker that exits with 1 or 5 (or a signal); 2, 3 and 4
# mean "this configuration or app can never start": restarting would loop forever (uvicorn and
# gunicorn draw the same line for startup failures).
EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1   # a bug in the worker itself (uncaught exception)
EXIT_CONFIG_ERROR = 2     # SIDECAR_WORKER missing or malformed, like argparse's usage error
EXIT_STARTUP_FAILED = 3   # lifespan.startup.failed, or lifespan "on" and the app raised
EXIT_IMPORT_FAILED = 4    # the app could not be imported / built by its factory
EXIT_PROTOCOL_ERROR = 5   # a host broke the ring or the event protocol: replace this worker

LIFESPAN_MODES = ("auto", "on", "off")
INTERFACES = ("auto", "asgi", "wsgi")


class ConfigError(ValueError):
    """SIDECAR_WORKER is missing or does not describe a worker."""


@dataclass
class LinkConfig:
    """One host's ring pair: the worker consumes ``to_worker`` and produces ``to_host``."""

    host: int
    to_worker: RingSpec
    to_host: RingSpec
    #: the host is a sidecar front-end (host 0, or another one of --frontends): it sends
    #: files itself, so its streams are offered http.response.pathsend
    frontend: bool = False

    def fds(self) -> list[int]:
        return self.to_worker.fds() + self.to_host.fds()


@dataclass
class WorkerConfig:
    app: str
    factory: bool = False
    app_dir: str | None = None
    index: int = 0
    window: int = DEFAULT_WINDOW
    log_level: str = "info"
    log_config: str | None = None   # --log-config's file (sidecar/logconfig.py), or None
    shutdown_timeout: float = 30.0
    lifespan: str = "auto"
    root_path: str = ""
    #: streams in flight (all hosts) from which an attached host's new stream is answered
    #: 503 by the worker itself (--limit-worker-streams); 0: no limit
    limit_streams: int = 0
    #: auto | asgi | wsgi (sidecar/worker/wsgi.py: the rule auto follows), and the threads a
    #: WSGI app runs on
    interface: str = "auto"
    wsgi_threads: int = 8
    links: list[LinkConfig] = field(default_factory=list)
    report_fd: int | None = None
    #: our end of the supervisor's control socketpair (hosts attached at run time), or None
    control_fd: int | None = None
    #: --frontends N > 1: the load board (sidecar/load_board.py, a memfd) and this worker's
    #: entry on it, where it publishes its streams in flight; None with one front-end
    board_fd: int | None = None
    board_entry: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def pass_fds(self) -> list[int]:
        """Every descriptor the worker must inherit (for ``Popen(pass_fds=...)``)."""
        fds = [fd for link in self.links for fd in link.fds()]
        extra = [fd for fd in (self.report_fd, self.control_fd, self.board_fd)
                 if fd is not None]
        return fds + extra

    @classmethod
    def from_json(cls, text: str) -> "WorkerConfig":
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{ENV_VAR} is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{ENV_VAR} must be a JSON object")
        try:
            links = [_link(d) for d in raw.pop("links", [])]
            config = cls(**raw, links=links)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"{ENV_VAR}: {exc}") from None
        config.validate()
        return config

    @classmethod
    def from_env(cls, environ=os.environ) -> "WorkerConfig":
        text = environ.get(ENV_VAR)
        if not text:
            raise ConfigError(f"{ENV_VAR} is not set (workers are started by the supervisor)")
        return cls.from_json(text)

    def validate(self) -> None:
        if not isinstance(self.app, str) or not self.app:
            raise ConfigError("app must be a non-empty 'module:attribute' string")
        if self.lifespan not in LIFESPAN_MODES:
            raise ConfigError(f"lifespan must be one of {LIFESPAN_MODES}, not {self.lifespan!r}")
        if type(self.window) is not int or self.window <= 0:
            raise ConfigError(f"window must be a positive int, not {self.window!r}")
        if not isinstance(self.shutdown_timeout, (int, float)) or self.shutdown_timeout < 0:
            raise ConfigError(f"shutdown_timeout must be >= 0, not {self.shutdown_timeout!r}")
        if type(self.limit_streams) is not int or self.limit_streams < 0:
            raise ConfigError(f"limit_streams must be an int >= 0, not {self.limit_streams!r}")
        if self.interface not in INTERFACES:
            raise ConfigError(f"interface must be one of {INTERFACES}, not {self.interface!r}")
        if type(self.wsgi_threads) is not int or self.wsgi_threads < 1:
            raise ConfigError(f"wsgi_threads must be an int >= 1, not {self.wsgi_threads!r}")
        if self.report_fd is not None and (type(self.report_fd) is not int
                                           or self.report_fd < 0):
            raise ConfigError(f"report_fd must be a descriptor, not {self.report_fd!r}")
        if self.control_fd is not None and (type(self.control_fd) is not int
                                            or self.control_fd < 0):
            raise ConfigError(f"control_fd must be a descriptor, not {self.control_fd!r}")
        if (self.board_fd is None) != (self.board_entry is None) or \
                self.board_fd is not None and (type(self.board_fd) is not int or
                                               type(self.board_entry) is not int or
                                               self.board_fd < 0 or self.board_entry < 0):
            raise ConfigError("board_fd and board_entry must both be set (ints >= 0) or neither")
        if self.log_config is not None and not isinstance(self.log_config, str):
            raise ConfigError(f"log_config must be a path, not {self.log_config!r}")
        if not self.links:
            raise ConfigError("no links: a worker needs at least one host ring pair")


def _link(d: dict) -> LinkConfig:
    return LinkConfig(host=d["host"], to_worker=RingSpec(**d["to_worker"]),
                      to_host=RingSpec(**d["to_host"]), frontend=d.get("frontend", False))
