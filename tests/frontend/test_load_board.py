"""The load board (sidecar/load_board.py) between processes, and the --frontends default."""
from __future__ import annotations

import os

from sidecar.config import Config
from sidecar.load_board import ENTRIES, Board


def test_a_worker_and_two_frontends_share_an_entry_across_processes():
    board = Board.create()
    try:
        entry = board.assign(0)
        board.set_serial(entry, 42)
        pid = os.fork()
        if pid == 0:   # the "worker" and "front-end 1", in another process, on their own map
            theirs = Board(os.dup(board.fd))
            at = theirs.find(42)
            theirs.set_inflight(at, 7)
            theirs.set_load(at, 7, 30)
            theirs.view(at, 1, 2).publish(1000.5)
            os._exit(0 if at == entry else 1)
        assert os.waitpid(pid, 0)[1] == 0
        mine = board.view(entry, 0, 2)
        assert mine.inflight() == 7 and mine.opened() == 37   # --max-requests counts these
        assert mine.others_ahead(1000.0) == 0.5     # front-end 1's queued work, not ours
        mine.publish(2000.0)
        assert mine.others_ahead(1000.0) == 0.5
        assert board.view(entry, 1, 2).others_ahead(1000.0) == 1000.0
        assert mine.others_ahead(1001.0) == 0.0     # past: nothing ahead
        board.release(entry)
        assert board.find(42) is None and mine.inflight() == 0 and mine.opened() == 0
        again = board.assign(43)   # reused, zeroed
        assert board.view(again, 0, 2).others_ahead(0.0) == 0.0
    finally:
        board.close()


def test_every_entry_can_be_taken_then_none():
    board = Board.create()
    try:
        taken = [board.assign(i + 1) for i in range(ENTRIES)]
        assert sorted(taken) == list(range(ENTRIES)) and board.assign(999) is None
    finally:
        board.close()


def test_default_frontends_follow_the_cores():
    c = Config()
    assert [c.resolved_frontends(n) for n in (1, 2, 3, 4, 8, 16, 64)] == [1, 1, 1, 1, 3, 7, 30]
    c.frontends = 2
    assert c.resolved_frontends(64) == 2
