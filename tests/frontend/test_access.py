"""The access log writer (sidecar/frontend/access.py): lines skip the logging module only with
the setup sidecar makes itself, and are then written once per loop iteration, in order;
with any other setup every line is a logging call.  (tests/e2e/test_status.py checks the
line format through a real server, tests/e2e/test_log_config.py the logging route.)"""
from __future__ import annotations

import io
import logging

import pytest

from sidecar.frontend import access
from sidecar.frontend.access import AccessLog, StdoutHandler


class Batcher:
    def __init__(self):
        self.added = []

    def add(self, obj):
        self.added.append(obj)

    def run(self):
        added, self.added = self.added, []
        for obj in added:
            obj.flush()


class CountingStream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, s):
        self.writes += 1
        return super().write(s)


@pytest.fixture
def logger():
    """A logger of its own, outside logging's tree (pytest's capture handlers stay out),
    set up as setup_logging sets up sidecar.access, without the handler."""
    log = logging.Logger("sidecar.access.test", logging.INFO)
    log.propagate = False
    return log


def default_handler(stream) -> StdoutHandler:
    handler = StdoutHandler()
    handler.setStream(stream)
    return handler


def test_default_setup_writes_an_iterations_lines_at_once_in_order(logger):
    stream = CountingStream()
    logger.addHandler(default_handler(stream))
    batcher = Batcher()
    log = AccessLog(batcher, logger)
    assert log.direct
    for i in range(50):
        log.write(f"line {i}")
    assert stream.getvalue() == "" and batcher.added == [log]   # added once
    batcher.run()
    assert stream.getvalue() == "".join(f"line {i}\n" for i in range(50))
    assert stream.writes == 1
    log.write("next")
    batcher.run()
    assert stream.getvalue().endswith("line 49\nnext\n") and stream.writes == 2
    log.flush()   # nothing waiting: nothing written
    assert stream.writes == 2


@pytest.mark.parametrize("change", ["filter", "other handler", "two handlers", "level",
                                    "propagate"])
def test_any_other_setup_goes_through_logging(logger, change):
    stream = io.StringIO()
    handler = default_handler(stream)
    logger.addHandler(handler)
    seen = []
    if change == "filter":
        logger.addFilter(lambda record: seen.append(record.getMessage()) or True)
    elif change == "other handler":
        logger.removeHandler(handler)
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("X %(message)s"))
        logger.addHandler(handler)
    elif change == "two handlers":
        logger.addHandler(logging.NullHandler())
    elif change == "level":
        logger.setLevel(logging.WARNING)
    else:
        logger.propagate = True
    batcher = Batcher()
    log = AccessLog(batcher, logger)
    assert not log.direct
    log.write("a line")
    assert batcher.added == []
    out = stream.getvalue()
    if change == "level":
        assert out == ""
    else:
        assert out.endswith("a line\n")
    if change == "filter":
        assert seen == ["a line"]
    if change == "other handler":
        assert out == "X a line\n"


def test_a_broken_stdout_is_said_once_and_lines_are_dropped(logger, caplog):
    stream = io.StringIO()
    logger.addHandler(default_handler(stream))
    batcher = Batcher()
    log = AccessLog(batcher, logger)
    stream.close()
    with caplog.at_level(logging.WARNING, logger="sidecar.frontend"):
        for _ in range(3):
            log.write("x")
            batcher.run()
    assert [r.getMessage() for r in caplog.records].count(
        "access log: cannot write to stdout (I/O operation on closed file): lines are dropped"
    ) == 1


def test_escaping():
    assert access._esc(b"plain text") == "plain text"
    assert access._esc(b'x"y\\z\xe9\x00\x7f') == "x\\x22y\\x5Cz\\xE9\\x00\\x7F"
    assert access.who(["::1", 5]) == "::1:5" and access.who(None) == "unix"
