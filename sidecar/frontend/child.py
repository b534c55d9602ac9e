"""An extra front-end process (--frontends N), started by the supervisor (frontends.py).

    main()  SIDECAR_FRONTEND -> logging -> listeners, attach and figures channels
            -> uvloop.run(FrontEnd(..., pool=HostPool).run())

It serves connections as front-end 0 does (frontend/server.py) over the ring pairs the
supervisor gives it (host_pool.py).  The supervisor is in charge: SIGTERM drains and exits;
SIGINT is ignored (Ctrl-C reaches the whole process group, the supervisor decides);
SIGHUP, SIGTTIN and SIGTTOU are the supervisor's to handle (a line says so).  The
supervisor gone (its attach connection closed) means stop.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys

from sidecar.config import EXIT_CONFIG_ERROR, Config

log = logging.getLogger("sidecar.frontend")


def _config(raw: dict) -> Config:
    config = Config()
    for name, value in raw.items():
        setattr(config, name, value)
    config.reload = False        # the supervisor watches the files
    config.control = "off"
    config.metrics = None
    return config


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        spec = json.loads(os.environ.pop("SIDECAR_FRONTEND"))
        config = _config(spec["config"])
        index, frontends = int(spec["index"]), int(spec["frontends"])
    except (KeyError, ValueError, TypeError) as exc:
        print(f"sidecar front-end: bad SIDECAR_FRONTEND: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    from sidecar.orphan import die_with_parent
    if not die_with_parent(int(spec.get("supervisor_pid", os.getppid()))):
        return 0   # the supervisor is gone already
    from sidecar.cli import apply_logging
    error = apply_logging(config)
    if error is not None:
        log.error("%s", error)
        return EXIT_CONFIG_ERROR
    from sidecar.frontend import tls
    try:
        tls_context = tls.server_context(config)
    except tls.TLSConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG_ERROR
    sockets = []
    for fd in spec["listener_fds"]:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        sockets.append(sock)
    attach = socket.socket(fileno=spec["attach_fd"])
    stats = socket.socket(fileno=spec["stats_fd"])
    stats.setblocking(False)

    import uvloop

    from sidecar.frontend.server import FrontEnd
    from sidecar.load_board import Board

    async def run() -> int:
        board = Board(spec["board_fd"])
        frontend = FrontEnd(config, sockets, owned_paths=[], tls=tls_context,
                            child=(index, frontends, attach, stats, board))
        from sidecar.frontend.frontends import answer_asks
        answer_asks(frontend, stats)   # figures on demand, for a status or a scrape
        return await frontend.run()

    return uvloop.run(run())


if __name__ == "__main__":
    from sidecar import gc_tuning
    gc_tuning.quiet_start()   # until started, as python -m sidecar (sidecar/gc_tuning.py)
    sys.exit(main())
