"""Runs the Node.js package's own tests (node --test node/test/*.test.js) as part of the
suite: buffered requests, SSE, uploads with backpressure, WebSockets, a killed worker, and
reconnecting after a restart, against live sidecars that the Node tests start themselves."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

from tests.server import ROOT


def test_node_package():
    node = shutil.which("node")
    assert node, "node is not installed (scripts/setup.sh installs nodejs)"
    assert os.path.isdir(f"{ROOT}/node/node_modules/koffi"), "run scripts/setup.sh (npm ci)"
    files = sorted(glob.glob(f"{ROOT}/node/test/*.test.js"))
    assert files
    subprocess.run([node, "build.js"], cwd=f"{ROOT}/node", check=True, timeout=120)
    done = subprocess.run([node, "--test", *files], cwd=f"{ROOT}/node", capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, SIDECAR_PYTHON=sys.executable))
    counts = dict(line[2:].split(" ", 1) for line in done.stdout.splitlines()
                  if line.startswith(("# pass ", "# fail ", "# skipped ", "# todo ")))
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
    assert int(counts["pass"]) >= 8 and counts["fail"] == counts["skipped"] == "0", counts
