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
