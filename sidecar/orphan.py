"""Dying with the supervisor: the processes it starts (workers, extra front-ends) ask the
kernel for a signal when it exits (PR_SET_PDEATHSIG), so that a supervisor killed with
SIGKILL, which runs no handler, leaves none of them behind.

The signal is SIGTERM: each one's own handler then stops it, sooner than a drain would
(``Worker.drain`` and ``FrontEnd.handle_sigterm`` ask ``orphaned``).  The workers' parent
check once a heartbeat (TICK) stays as the fallback where prctl is missing.
"""
from __future__ import annotations

import ctypes
import os
import signal

__all__ = ["die_with_parent", "orphaned"]

PR_SET_PDEATHSIG = 1   # <linux/prctl.h>


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> bool:
    """Ask for ``sig`` when the parent process exits.  False if ``parent_pid`` is no longer
    our parent (it died before the request took effect): the caller should exit now."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):   # not Linux: the parent checks remain
        pass
    return not orphaned(parent_pid)


def orphaned(parent_pid: int) -> bool:
    """Whether the process that started us (``parent_pid``) is gone."""
    return os.getppid() != parent_pid
