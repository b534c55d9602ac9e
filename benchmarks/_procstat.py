"""What a server's processes spent during a measurement: CPU time, context switches, and (for
sidecar) the ring doorbells its rings rang.  ``snapshot`` before, ``snapshot`` after, ``per``
divides the difference by the requests or messages served.

- CPU: utime + stime from ``/proc/PID/stat``.
- Context switches: ``voluntary_ctxt_switches`` (the process went to sleep: epoll_wait with
  nothing to do, a blocking call) + ``nonvoluntary_ctxt_switches`` (the scheduler took the CPU
  away) from ``/proc/PID/status``.  On a machine with fewer cores than busy processes, every
  voluntary switch of one process is a chance for another to run, and every wake-up that
  follows costs the scheduler's latency: the figure a round trip of two processes pays.
- Doorbells: the ``wakeups`` counter of each ring (``consumer_wakeups`` in the shared header:
  eventfd writes a producer made because its reader slept), both directions, every worker,
  read from the control socket (``sidecar status``'s data).  Only for sidecar; None else.
"""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def group(pgid: int) -> list[int]:
    """Every live process in process group ``pgid``, the leader first."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.getpgid(int(name)) == pgid:
                pids.append(int(name))
        except OSError:
            continue
    return sorted(pids, key=lambda p: (p != pgid, p))


def cpu_seconds(pid: int) -> float:
    user, kernel = cpu_split(pid)
    return user + kernel


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of ``pid`` so far: utime and stime (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def ctx_switches(pid: int) -> tuple[int, int]:
    """(voluntary, nonvoluntary) context switches of every thread of ``pid`` so far."""
    vol = nonvol = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = []
    for tid in tasks:   # the status of the process is its main thread's only
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        nonvol += int(line.split()[1])
        except OSError:
            continue   # a thread that just ended
    return vol, nonvol


def sidecar_doorbells(control: Path | str) -> int | None:
    """Data doorbells rung so far on every ring of the sidecar whose control socket is
    ``control`` (None if it does not answer)."""
    from sidecar.status import StatusError, request
    try:
        status = request(str(control), {"cmd": "status"}, timeout=2.0)["status"]
    except (StatusError, KeyError, TypeError, OSError):
        return None
    return sum(ring.get("wakeups", 0) for w in status["workers"]
               for ring in w["rings"].values())


def snapshot(pids: list[int], control: Path | str | None = None) -> dict:
    out = {"pids": list(pids), "cpu": {}, "ctx": {}}
    for pid in pids:
        try:
            out["cpu"][pid] = cpu_seconds(pid)
            out["ctx"][pid] = ctx_switches(pid)
        except OSError:
            continue
    out["doorbells"] = sidecar_doorbells(control) if control is not None else None
    return out


def per(before: dict, after: dict, n: int, roles: list[str] | None = None) -> dict:
    """What the processes of ``before`` spent between the two snapshots, per one of ``n``:
    ``cpu_us`` and ``ctx`` (voluntary + nonvoluntary) per process role and in total,
    ``vol`` and ``nonvol`` in total, and ``doorbells`` (None unless both snapshots had
    them)."""
    n = max(1, n)
    pids = [p for p in before["pids"] if p in before["cpu"] and p in after["cpu"]]
    roles = roles or [str(p) for p in before["pids"]]
    names = dict(zip(before["pids"], roles))
    cpu = {names[p]: (after["cpu"][p] - before["cpu"][p]) / n * 1e6 for p in pids}
    vol = {p: after["ctx"][p][0] - before["ctx"][p][0] for p in pids}
    nonvol = {p: after["ctx"][p][1] - before["ctx"][p][1] for p in pids}
    ctx = {names[p]: (vol[p] + nonvol[p]) / n for p in pids}
    bells = None
    if before.get("doorbells") is not None and after.get("doorbells") is not None:
        bells = (after["doorbells"] - before["doorbells"]) / n
    return {"cpu_us": cpu, "cpu_us_total": sum(cpu.values()), "ctx": ctx,
            "ctx_total": sum(ctx.values()), "vol": sum(vol.values()) / n,
            "nonvol": sum(nonvol.values()) / n, "doorbells": bells}


def roles(kind_is_sidecar: bool, pids: list[int]) -> list[str]:
    if kind_is_sidecar:
        return ["front-end"] + [f"worker {i}" for i in range(1, len(pids))]
    return ["main"] + [f"proc {i}" for i in range(1, len(pids))]
