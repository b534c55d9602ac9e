"""The Node.js package (node/, @sidecar/host) as part of the suite:

- its own tests (node --test node/test/*.test.js): the attached pool (buffered requests, SSE,
  uploads with backpressure, WebSockets, a killed worker, reconnecting after a restart), the
  python-node drop-in (`new Python()` and every gap of issue 26), python-node's documented
  examples run unchanged but for the import line, and a Node process killed with SIGKILL;
- its TypeScript declarations, checked by tsc against a usage file;
- the package as users get it: `npm pack`, installed into an empty directory, compiling
  libsidecar_ring.so there, and one clear line when there is no C compiler.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

from tests.server import ROOT

NODE_DIR = f"{ROOT}/node"


def _node() -> str:
    node = shutil.which("node")
    assert node, "node is not installed (scripts/setup.sh installs nodejs)"
    assert os.path.isdir(f"{NODE_DIR}/node_modules/koffi"), "run scripts/setup.sh (npm ci)"
    return node


def test_node_package():
    node = _node()
    files = sorted(glob.glob(f"{NODE_DIR}/test/*.test.js"))
    assert len(files) >= 4
    subprocess.run([node, "build.js"], cwd=NODE_DIR, check=True, timeout=120)
    done = subprocess.run([node, "--test", *files], cwd=NODE_DIR, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, SIDECAR_PYTHON=sys.executable))
    counts = dict(line[2:].split(" ", 1) for line in done.stdout.splitlines()
                  if line.startswith(("# pass ", "# fail ", "# skipped ", "# todo ")))
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
    assert int(counts["pass"]) >= 31 and counts["fail"] == counts["skipped"] == "0", counts


def _tsc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_node(), f"{NODE_DIR}/node_modules/typescript/bin/tsc", *args],
                          cwd=NODE_DIR, capture_output=True, text=True, timeout=120)


def test_node_type_declarations(tmp_path):
    """One tsc run: test/types/usage.ts against index.d.ts (its @ts-expect-error lines must
    stay errors), and index.d.ts itself checked as a source file (skipLibCheck, there for
    speed, skips every .d.ts)."""
    shutil.copy(f"{NODE_DIR}/index.d.ts", tmp_path / "index_decl.ts")
    (tmp_path / "tsconfig.json").write_text(json.dumps({
        "extends": f"{NODE_DIR}/test/types/tsconfig.json",
        "compilerOptions": {"typeRoots": [f"{NODE_DIR}/node_modules/@types"]},
        "files": [f"{NODE_DIR}/test/types/usage.ts", str(tmp_path / "index_decl.ts")]}))
    done = _tsc("--noEmit", "-p", str(tmp_path / "tsconfig.json"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_node_tarball_installs_and_builds(tmp_path):
    node = _node()
    npm = shutil.which("npm")
    assert npm
    packed = subprocess.run([npm, "pack", "--json", "--pack-destination", str(tmp_path)],
                            cwd=NODE_DIR, capture_output=True, text=True, timeout=120)
    assert packed.returncode == 0, packed.stderr
    tarball = next(tmp_path.glob("sidecar-host-*.tgz"))
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "user-app", "version": "1.0.0", "private": true}\n')
    # koffi and @msgpack/msgpack come from the npm cache that setup.sh's npm ci filled
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefer-offline",
                           str(tarball)], cwd=app, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    pkg = app / "node_modules" / "@sidecar" / "host"
    assert (pkg / "build" / "libsidecar_ring.so").is_file(), "npm install compiled the ring library"
    assert (pkg / "index.d.ts").is_file() and (pkg / "lib" / "launcher.py").is_file()
    assert not (pkg / "test").exists()
    # the installed package serves a request through new Python(), from the user's directory
    (app / "main.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'installed'})\n")
    (app / "run.mjs").write_text(
        "import { Python, Request } from '@sidecar/host'\n"
        "const python = new Python({ docroot: process.cwd(), appTarget: 'main:app', workers: 1 })\n"
        "const res = await python.handleRequest(new Request({ url: '/' }))\n"
        "console.log(res.status, res.body.toString())\n")
    run = subprocess.run([node, "run.mjs"], cwd=app, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, SIDECAR_PYTHON=sys.executable))
    assert run.stdout.strip() == "200 installed", run.stdout + run.stderr
    # no C compiler: one line that says so
    (pkg / "build" / "libsidecar_ring.so").unlink()
    bare = tempfile.mkdtemp(dir=tmp_path)
    os.symlink(node, os.path.join(bare, "node"))
    env = {k: v for k, v in os.environ.items() if k != "CC"}
    env["PATH"] = bare
    failed = subprocess.run([node, "build.js"], cwd=pkg, capture_output=True, text=True,
                            timeout=60, env=env)
    assert failed.returncode == 1
    assert failed.stdout == ""
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "gcc" in lines[0] and "not found" in lines[0], failed.stderr
