import os
import sys

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
