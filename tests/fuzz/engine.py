"""A small seeded mutation fuzzer: corpus in, mutated inputs through a target, for a time.

A target is ``target(data: bytes) -> None`` that raises AssertionError (or anything else) when
an invariant breaks.  Inputs are the committed corpus (tests/fuzz/corpus/<target>/*) and
mutations of it: byte flips, inserts of interesting tokens, deletions, duplications, and
splices of two corpus entries.  Inputs that reach new outcomes (the target may return a
hashable "outcome" signature) join the working corpus, a cheap stand-in for coverage feedback.

    SIDECAR_FUZZ_SECONDS   how long each target runs (the suite: a few seconds)
    SIDECAR_FUZZ_SEED      the random seed (fixed by default: the suite is repeatable)

A failing input is written to $SIDECAR_FUZZ_CRASHES (default: the system temp dir) and named
in the error, so it can be added to the corpus once fixed.  ``python -m tests.fuzz`` runs the
targets long, with atheris (libFuzzer, coverage-guided) when it is installed.
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import tempfile
import time
from pathlib import Path
from typing import Callable

CORPUS = Path(__file__).resolve().parent / "corpus"
DEFAULT_SECONDS = 3.0
DEFAULT_SEED = 20261202
MAX_INPUT = 64 * 1024     # mutations never grow an input past this
PER_INPUT_SECONDS = 5.0   # one input taking longer than this is a hang


class Hang(Exception):
    """The target took longer than PER_INPUT_SECONDS on one input."""


def fuzz_seconds(default: float = DEFAULT_SECONDS) -> float:
    return float(os.environ.get("SIDECAR_FUZZ_SECONDS", default))


def load_corpus(name: str) -> list[bytes]:
    folder = CORPUS / name
    entries = [p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()]
    if not entries:
        raise RuntimeError(f"empty fuzz corpus {folder}")
    return entries


def mutate(rng: random.Random, data: bytes, corpus: list[bytes], tokens: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 4, 8))):
        op = rng.randrange(8)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:                       # flip bits of one byte
            i = min(at, len(out) - 1)
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and out:                     # any byte value
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif op == 2:                             # an interesting token
            out[at:at] = rng.choice(tokens)
        elif op == 3 and out:                     # delete a run
            del out[at:at + rng.randint(1, 16)]
        elif op == 4 and out:                     # duplicate a run (repetition, pipelining)
            end = min(len(out), at + rng.randint(1, 64))
            out[at:at] = out[at:end] * rng.randint(1, 4)
        elif op == 5:                             # splice in a piece of another entry
            other = rng.choice(corpus)
            i = rng.randrange(len(other) + 1)
            out[at:at] = other[i:i + rng.randint(1, 128)]
        elif op == 6 and out:                     # cut the input short
            del out[at:]
        else:                                     # a random byte
            out[at:at] = bytes([rng.randrange(256)])
    return bytes(out[:MAX_INPUT])


def _on_alarm(signum, frame):
    raise Hang(f"one input took more than {PER_INPUT_SECONDS}s")


def run(name: str, target: Callable[[bytes], object], tokens: list[bytes], *,
        seconds: float | None = None, seed: int | None = None) -> dict:
    """Fuzz ``target`` for ``seconds``; returns stats; raises on the first failing input."""
    seconds = fuzz_seconds() if seconds is None else seconds
    seed = int(os.environ.get("SIDECAR_FUZZ_SEED", DEFAULT_SEED)) if seed is None else seed
    rng = random.Random(seed)
    corpus = load_corpus(name)
    working = list(corpus)
    outcomes: set = set()
    stats = {"inputs": 0, "corpus": len(corpus), "outcomes": 0, "seed": seed}
    old = signal.signal(signal.SIGALRM, _on_alarm)
    deadline = time.monotonic() + seconds
    try:
        queue = list(corpus)   # every corpus entry runs once, unmutated, first
        while queue or time.monotonic() < deadline:
            data = queue.pop() if queue else mutate(rng, rng.choice(working), working, tokens)
            signal.setitimer(signal.ITIMER_REAL, PER_INPUT_SECONDS)
            try:
                outcome = target(data)
            except BaseException as exc:
                signal.setitimer(signal.ITIMER_REAL, 0)
                path = save_failure(name, data)
                raise AssertionError(f"fuzz target {name} failed on {path} "
                                     f"({len(data)} bytes: {data[:200]!r}): "
                                     f"{type(exc).__name__}: {exc}") from exc
            signal.setitimer(signal.ITIMER_REAL, 0)
            stats["inputs"] += 1
            if outcome is not None and outcome not in outcomes:
                outcomes.add(outcome)
                if len(working) < 5000:
                    working.append(data)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    stats["outcomes"] = len(outcomes)
    stats["working_corpus"] = len(working)
    return stats


def save_failure(name: str, data: bytes) -> str:
    folder = Path(os.environ.get("SIDECAR_FUZZ_CRASHES", tempfile.gettempdir()))
    path = folder / f"sidecar-fuzz-{name}-{hashlib.sha1(data).hexdigest()[:12]}"
    try:
        path.write_bytes(data)
    except OSError:
        return "(could not save)"
    return str(path)
