"""`python -m build` makes an sdist and a wheel, and the wheel serves from a clean venv.

The build (about 15 s: the sdist, then the wheel built from it, as `python -m build` does) is
made once per state of the build inputs and kept in build/dist-FINGERPRINT/ (git-ignored), so a
second run of the suite reuses it; the venv is made fresh every time (about 10 s with pip's
cache).  The same smoke checks run on Python 3.12 and 3.13 from scripts/smoke.sh.
"""
from __future__ import annotations

import email
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.server import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"


def build_inputs() -> list[Path]:
    files = [ROOT / name for name in ("pyproject.toml", "setup.py", "build_ffi.py",
                                      "MANIFEST.in", "README.md")]
    files += sorted((ROOT / "native").glob("*.[ch]")) + sorted((ROOT / "sidecar").rglob("*.py"))
    return files


@pytest.fixture(scope="module")
def dist() -> Path:
    digest = hashlib.sha256()
    for path in build_inputs():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    out = ROOT / "build" / f"dist-{TAG}-{digest.hexdigest()[:16]}"
    if not (list(out.glob("*.whl")) and list(out.glob("*.tar.gz"))):
        for old in out.parent.glob(f"dist-{TAG}-*"):  # builds of older inputs
            shutil.rmtree(old)
        done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def the(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def test_sdist_carries_what_builds_the_c_modules(dist):
    sdist = the(list(dist.glob(f"sidecar-{VERSION}.tar.gz")))
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = {"pyproject.toml", "setup.py", "build_ffi.py", "native/ring.c", "native/ring.h",
              "native/frame.c", "native/frame.h", "native/h1.c", "native/h1.h", "native/h1_api.c",
              "native/worker_api.c",
              "sidecar/cli.py", "sidecar/frontend/server.py", "sidecar/worker/process.py"}
    assert needed <= names, needed - names
    assert not [n for n in names if n.endswith((".so", ".o", ".pyc"))]


def test_wheel_holds_the_compiled_modules_for_this_python(dist):
    wheel = the(list(dist.glob(f"sidecar-{VERSION}-{TAG}-{TAG}-linux_*.whl")))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = email.message_from_bytes(zf.read(f"sidecar-{VERSION}.dist-info/METADATA"))
    for module in ("_ring", "_h1", "_h1api", "_workerapi", "_wsapi", "_hpackapi"):
        assert [n for n in names if n.startswith(f"sidecar/{module}.") and n.endswith(".so")], \
            (module, names)
    for package in ("sidecar/http/", "sidecar/frontend/", "sidecar/worker/"):
        assert any(n.startswith(package) for n in names), package
    assert not [n for n in names if n.startswith(("tests/", "native/", "benchmarks/"))]
    assert meta["Version"] == VERSION
    classifiers = meta.get_all("Classifier")
    for minor in (11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Source", "Documentation", "Issues"} <= set(urls), urls
    assert meta["Requires-Python"] == ">=3.11"


def test_wheel_serves_from_a_clean_venv(dist, tmp_path):
    """A fresh venv, the wheel and its dependencies from the index, then scripts/smoke.py:
    start, HTTP, a WebSocket, a worker crash, a reload and a SIGTERM drain, with the package
    imported from the venv (not from this tree)."""
    wheel = the(list(dist.glob("*.whl")))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    pip = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          str(wheel)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    smoke = subprocess.run([python, str(ROOT / "scripts" / "smoke.py"), "--version", VERSION],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert smoke.returncode == 0, smoke.stdout[-6000:] + smoke.stderr[-3000:]
    assert "all 9 checks passed" in smoke.stdout, smoke.stdout


def test_version_is_pyprojects():
    """The development install prints the same single version."""
    out = subprocess.run([sys.executable, "-m", "sidecar", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["sidecar", VERSION], out.stdout
