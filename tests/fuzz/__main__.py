"""Run a fuzz target long:  python -m tests.fuzz TARGET [--seconds N] [--atheris] [-- ARGS]

TARGET is h1_request or worker_events.  Without --atheris, the seeded mutation fuzzer of
tests/fuzz/engine.py runs for --seconds (default: SIDECAR_FUZZ_SECONDS or 600).  With
--atheris (``pip install atheris``: libFuzzer, coverage-guided), libFuzzer runs from the same
corpus, copied to a scratch directory so that the committed one only grows by hand; ARGS
after ``--`` go to libFuzzer (e.g. ``-max_total_time=600 -jobs=2``).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile

from tests.fuzz import engine, targets


def _target(name: str):
    if name == "h1_request":
        return targets.h1_request, targets.H1_TOKENS, None
    target = targets.WorkerEvents()
    return target, targets.WORKER_TOKENS, target.close


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz")
    p.add_argument("target", choices=["h1_request", "worker_events"])
    p.add_argument("--seconds", type=float, default=engine.fuzz_seconds(600.0))
    p.add_argument("--seed", type=int)
    p.add_argument("--atheris", action="store_true")
    p.add_argument("libfuzzer_args", nargs="*")
    args = p.parse_args(argv)
    target, tokens, close = _target(args.target)
    try:
        if not args.atheris:
            print(engine.run(args.target, target, tokens, seconds=args.seconds, seed=args.seed))
            return 0
        try:
            import atheris
        except ImportError:
            print("atheris is not installed: pip install atheris", file=sys.stderr)
            return 2
        scratch = tempfile.mkdtemp(prefix=f"fuzz-{args.target}-")
        shutil.copytree(engine.CORPUS / args.target, scratch, dirs_exist_ok=True)

        def one(data: bytes) -> None:
            target(data)

        atheris.instrument_all()   # coverage of the Python code already imported
        atheris.Setup([sys.argv[0], scratch, f"-max_total_time={int(args.seconds)}",
                       *args.libfuzzer_args], one)
        atheris.Fuzz()
        return 0
    finally:
        if close is not None:
            close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
