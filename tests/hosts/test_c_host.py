"""The C host example (examples/c-host, native/host.c) built with gcc and run against a live
sidecar: a GET and a streamed POST through the rings, output asserted."""
from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from tests.hosts.test_attach import attached
from tests.server import ROOT


@pytest.fixture(scope="module")
def c_host(tmp_path_factory):
    out = tmp_path_factory.mktemp("c-host") / "c-host"
    subprocess.run(["make", "-s", "-C", f"{ROOT}/examples/c-host", f"OUT={out}",
                    "CFLAGS=-std=c11 -O2 -Wall -Wextra -Werror"], check=True, timeout=120)
    return str(out)


@pytest.fixture(scope="module")
def sc():
    with attached() as s:
        yield s


def run(c_host, sc, *args):
    done = subprocess.run([c_host, sc.attach, *args], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_get(c_host, sc):
    lines = run(c_host, sc, "GET", "/pid")
    assert lines[0].startswith("attached as host ")
    pid = int(lines[0].split("(pid ")[1].split(",")[0])
    assert pid in sc.worker_pids()
    assert lines[1] == "status 200"
    assert "header content-type: application/json" in lines
    assert json.loads(lines[lines.index("header content-length: %d" % len(
        json.dumps({"pid": pid}))) + 1]) == {"pid": pid}


def test_streamed_post_larger_than_the_window(c_host, sc):
    size = 3 * 1024 * 1024 + 123  # 12 windows of 256 KiB: only credit lets it through
    lines = run(c_host, sc, "POST", "/hash", str(size))
    pattern = bytes(97 + i % 26 for i in range(65536))
    body = (pattern * (size // 65536 + 1))[:size]
    assert lines[1] == "status 200"
    reply = json.loads(lines[-2])
    assert reply == {"bytes": size, "sha256": hashlib.sha256(body).hexdigest()}
    assert lines[-1] == f"sent {size} body bytes in {size // 65536 + 1} chunks, received " \
                        f"{len(lines[-2])}"


def test_app_not_found_is_reported(c_host, sc):
    lines = run(c_host, sc, "GET", "/nope")
    assert lines[1] == "status 404"
