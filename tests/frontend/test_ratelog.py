"""RateLimitedLog: the first line of a burst at once, then at most one per interval, which
says how many were left out."""
import logging

from sidecar.frontend import ratelog
from sidecar.frontend.ratelog import RateLimitedLog


def test_burst_gives_one_line_then_a_count(caplog, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(ratelog.time, "monotonic", lambda: clock[0])
    logger = logging.getLogger("test.ratelog")
    say = RateLimitedLog(logger, interval=1.0)
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        assert say("refused %s", "a") is True
        for _ in range(41):
            clock[0] += 0.01
            assert say("refused %s", "b") is False
        clock[0] += 1.0
        assert say("refused %s", "c") is True
        clock[0] += 5.0
        assert say("refused %s", "d") is True
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused a", "refused c (and 41 more like it in the last 1s)",
                     "refused d"]
