import os
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="module")
def demo():
    """The bundled demo app behind a real sidecar with two workers (shared by a module)."""
    from tests.server import Sidecar

    with Sidecar("examples.demo:app", workers=2) as sc:
        yield sc


@pytest.fixture(scope="session", autouse=True)
def runtime_dir():
    """Servers started without a Unix socket put their control socket in the runtime
    directory (/run/sidecar for root): the tests' go to a directory of their own."""
    with tempfile.TemporaryDirectory(prefix="sc-rt-") as d:
        old = os.environ.get("SIDECAR_RUNTIME_DIR")
        os.environ["SIDECAR_RUNTIME_DIR"] = d
        try:
            yield d
        finally:
            if old is None:
                del os.environ["SIDECAR_RUNTIME_DIR"]
            else:
                os.environ["SIDECAR_RUNTIME_DIR"] = old


# Directories of in-process unit tests, run first: scripts/test.sh runs the wheel's smoke test
# on Python 3.12 and 3.13 (scripts/smoke.sh, about a minute of pip and compilers) beside the
# suite, and these tests neither time anything nor start servers, so sharing the CPU with it
# cannot make them fail.  The sort is stable: each module's tests stay together and in order.
FIRST = ("http", "frontend", "fuzz")


def pytest_collection_modifyitems(session, config, items):
    tests_dir = os.path.join(ROOT, "tests")

    def rank(item) -> int:
        rel = os.path.relpath(str(item.path), tests_dir).split(os.sep)
        return FIRST.index(rel[0]) if rel[0] in FIRST else len(FIRST)

    items.sort(key=rank)
