import functools
import os
import sys
import tempfile

import httpx._transports.default
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# Every httpx client builds an SSL context for its default transport (certifi's bundle:
# ~50 ms of CPU), even for plain http:// and Unix sockets, which is most of what the tests
# make; the suite makes hundreds of clients while servers start beside it on 2 cores.  The
# default contexts (verify True/False, no client certificate) are built once and shared:
# httpcore sets the ALPN list on the context right before each handshake.  Contexts made
# from a CA file or an SSLContext (the TLS tests') are not cached.
_create_ssl_context = httpx._transports.default.create_ssl_context


@functools.lru_cache(maxsize=None)
def _shared_default_context(verify: bool, trust_env: bool):
    return _create_ssl_context(verify=verify, cert=None, trust_env=trust_env)


def _ssl_context(verify=True, cert=None, trust_env=True):
    if cert is None and type(verify) is bool:
        return _shared_default_context(verify, bool(trust_env))
    return _create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


httpx._transports.default.create_ssl_context = _ssl_context


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


def pytest_terminal_summary(terminalreporter):
    """One line: how many servers tests/server.py started and how long they took to answer
    (their start-up is a large part of the suite's time: python -m benchmarks.startup)."""
    from tests.server import STARTS

    if STARTS:
        total = sum(s for _, s in STARTS)
        test, slowest = max(STARTS, key=lambda item: item[1])
        terminalreporter.write_line(
            f"sidecar servers started: {len(STARTS)}, {total:.1f} s to the first answer in all "
            f"(median {sorted(s for _, s in STARTS)[len(STARTS) // 2]:.2f} s; slowest "
            f"{slowest:.2f} s, {test})")


def pytest_collection_modifyitems(session, config, items):
    tests_dir = os.path.join(ROOT, "tests")

    def rank(item) -> int:
        rel = os.path.relpath(str(item.path), tests_dir).split(os.sep)
        return FIRST.index(rel[0]) if rel[0] in FIRST else len(FIRST)

    items.sort(key=rank)
