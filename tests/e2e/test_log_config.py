"""--log-config: the user's logging setup in the front-end and in every worker.  Real sidecar,
real requests; the log files the configuration names are read back."""
from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.e2e.util import wait_for
from tests.server import Sidecar


def _dict_config(tmp_path) -> dict:
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(levelname)s|%(name)s|%(message)s"}},
        "handlers": {
            "events": {"class": "logging.FileHandler", "formatter": "plain",
                       "filename": str(tmp_path / "events.log")},
            "access": {"class": "logging.FileHandler", "formatter": "plain",
                       "filename": str(tmp_path / "access.log")},
        },
        "loggers": {
            "sidecar": {"handlers": ["events"], "level": "INFO", "propagate": False},
            "sidecar.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


def _toml(config: dict) -> str:
    lines = ["version = 1", "[formatters.plain]",
             f"format = {json.dumps(config['formatters']['plain']['format'])}"]
    for name, h in config["handlers"].items():
        lines += [f"[handlers.{name}]"] + [f"{k} = {json.dumps(v)}" for k, v in h.items()]
    for name, lg in config["loggers"].items():
        lines += [f'[loggers."{name}"]'] + [f"{k} = {json.dumps(v)}" for k, v in lg.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", ["json", "toml", "ini"])
def test_log_config_routes_front_end_worker_and_access_lines(tmp_path, kind):
    config = _dict_config(tmp_path)
    path = tmp_path / f"logging.{kind}"
    if kind == "json":
        path.write_text(json.dumps(config))
    elif kind == "toml":
        path.write_text(_toml(config))
    else:
        path.write_text(f"""[loggers]
keys = root,sidecar,access

[handlers]
keys = events,access

[formatters]
keys = plain

[logger_root]
handlers =

[logger_sidecar]
qualname = sidecar
handlers = events
level = INFO
propagate = 0

[logger_access]
qualname = sidecar.access
handlers = access
level = INFO
propagate = 0

[handler_events]
class = FileHandler
formatter = plain
args = ({str(tmp_path / 'events.log')!r},)

[handler_access]
class = FileHandler
formatter = plain
args = ({str(tmp_path / 'access.log')!r},)

[formatter_plain]
format = %(levelname)s|%(name)s|%(message)s
""")
    with Sidecar("tests.e2e.apps:app", "--log-config", str(path), ready_path="/pid",
                 workers=1) as sc:
        assert httpx.get(sc.url + "/pid?from=test").status_code == 200
        access = wait_for(lambda: (tmp_path / "access.log").read_text(), 10, what="access")
        assert "INFO|sidecar.access|127.0.0.1:" in access and '"GET /pid?from=test' in access
        events = (tmp_path / "events.log").read_text()
        assert "INFO|sidecar|sidecar ready on" in events            # the front-end
        assert "INFO|sidecar.worker|serving tests.e2e.apps:app" in events  # the worker
        assert "sidecar ready on" not in sc.log()   # not on stderr any more
    assert "INFO|sidecar|shutting down (SIGTERM)" in (tmp_path / "events.log").read_text()


@pytest.mark.parametrize("name,text,message", [
    ("missing.json", None, "cannot read log config"),
    ("bad.json", "{not json", "log config"),
    ("noversion.json", '{"loggers": {}}', '"version": 1'),
    ("bad.yaml", "version: 1\n", "expected .json, .toml or .ini"),
    ("badclass.json", '{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}',
     "log config"),
    ("nologgers.ini", "[handlers]\nkeys=\n", "no [loggers] section"),
])
def test_a_bad_log_config_is_one_line_and_exit_2(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "sidecar", "examples.demo:app",
                           "--log-config", str(path), "--bind", "127.0.0.1:0",
                           "--uds", str(tmp_path / "s.sock")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
