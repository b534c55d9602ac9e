"""The fuzz targets, run for a bounded time from their committed corpora (tests/fuzz/engine.py:
SIDECAR_FUZZ_SECONDS=600 runs them long; ``python -m tests.fuzz`` runs them with atheris)."""
import resource

from tests.fuzz import engine, targets


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_fuzz_h1_request_parser():
    before = _rss_mib()
    stats = engine.run("h1_request", targets.h1_request, targets.H1_TOKENS)
    print(f"h1_request: {stats}")
    assert stats["inputs"] > stats["corpus"]   # it ran mutations, not just the corpus
    assert stats["outcomes"] > 10              # and they reached many different outcomes
    assert _rss_mib() - before < 200           # peak RSS: no input makes it balloon


def test_fuzz_worker_event_decoding():
    target = targets.WorkerEvents()
    before = _rss_mib()
    try:
        stats = engine.run("worker_events", target, targets.WORKER_TOKENS)
    finally:
        target.close()
    print(f"worker_events: {stats}")
    assert stats["inputs"] > stats["corpus"]
    assert stats["outcomes"] > 4
    assert _rss_mib() - before < 200


def test_corpus_entries_pass_and_a_broken_target_is_caught(tmp_path, monkeypatch):
    """The harness itself: a target that fails on some input is reported with that input."""
    monkeypatch.setenv("SIDECAR_FUZZ_CRASHES", str(tmp_path))

    def picky(data: bytes):
        assert b"Content-Length" not in data, "found it"

    try:
        engine.run("h1_request", picky, targets.H1_TOKENS, seconds=0.5)
    except AssertionError as exc:
        assert "found it" in str(exc)
        saved = list(tmp_path.iterdir())
        assert len(saved) == 1 and b"Content-Length" in saved[0].read_bytes()
    else:
        raise AssertionError("the harness missed a failing input")
