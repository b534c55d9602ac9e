"""Runs the private sidecar of @sidecar/host's ``new Python()`` and ties its life to Node's.

    python launcher.py PRIVATE_DIR GRACE_SECONDS -- SIDECAR_ARGS...

Node holds the write end of this process's stdin and never writes.  The kernel closes it
when Node exits, however it exits (SIGKILL included), and the read below returns EOF. That
becomes a SIGTERM to this process: sidecar's graceful shutdown (the workers see their host
gone, the sockets are removed). If that has not finished GRACE_SECONDS + 5 s later, SIGKILL;
the workers notice their parent is gone within half a second (sidecar.worker.process).

A pipe rather than PR_SET_PDEATHSIG: the death signal fires when the *thread* that forked
the child exits, and Node forks from whichever thread calls spawn() (a worker_threads thread
may); a pipe belongs to the process.  The shared-memory segments need no cleanup: sidecar
unlinks them the moment they are mapped (sidecar/ring.py).  PRIVATE_DIR (the sockets) is
removed on the way out.
"""
import os
import shutil
import signal
import sys
import threading
import time


def _watch_parent(private_dir: str, grace: float) -> None:
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace + 5)
    shutil.rmtree(private_dir, ignore_errors=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _stop(signum, frame):  # until sidecar installs its own handlers: leave through finally
    raise SystemExit(128 + signum)


def main() -> int:
    private_dir, grace = sys.argv[1], float(sys.argv[2])
    argv = sys.argv[sys.argv.index("--") + 1:]
    signal.signal(signal.SIGTERM, _stop)
    threading.Thread(target=_watch_parent, args=(private_dir, grace), daemon=True).start()
    try:
        try:
            from sidecar.cli import main as sidecar_main
        except ImportError as exc:
            print(f"@sidecar/host: {sys.executable} cannot import sidecar ({exc}): "
                  "pip install sidecar into that environment, or pass `python`",
                  file=sys.stderr)
            return 3
        return sidecar_main(argv)
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
