"""Units without a process: the SIDECAR_WORKER config and the app loader."""
import json
import sys

import pytest

from sidecar.ring import RingSpec
from sidecar.worker.config import ConfigError, LinkConfig, WorkerConfig
from sidecar.worker.loader import ImportFailed, load_app

from .host import HERE


def _raw(**overrides):
    raw = {"app": "apps:hello", "factory": False, "app_dir": None, "index": 2,
           "window": 262144, "log_level": "info", "shutdown_timeout": 30.0,
           "lifespan": "auto", "root_path": "",
           "links": [{"host": 0,
                      "to_worker": {"segment_fd": 5, "data_fd": 6, "space_fd": 7,
                                    "generation": 123},
                      "to_host": {"segment_fd": 8, "data_fd": 9, "space_fd": 10,
                                  "generation": 456}}]}
    raw.update(overrides)
    return raw


def test_config_from_the_documented_json():
    config = WorkerConfig.from_json(json.dumps(_raw()))
    assert config.index == 2
    assert config.links == [LinkConfig(0, RingSpec(5, 6, 7, 123), RingSpec(8, 9, 10, 456))]
    assert config.pass_fds() == [5, 6, 7, 8, 9, 10]
    assert WorkerConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize("overrides, message", [
    ({"lifespan": "maybe"}, "lifespan must be one of"),
    ({"window": 0}, "window must be a positive int"),
    ({"links": []}, "no links"),
    ({"unknown": 1}, "unexpected keyword argument 'unknown'"),
    ({"links": [{"host": 0}]}, "to_worker"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        WorkerConfig.from_json(json.dumps(_raw(**overrides)))


def test_config_not_json():
    with pytest.raises(ConfigError, match="not JSON"):
        WorkerConfig.from_json("{")


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "broken_at_import.py").write_text("x = 1\nraise KeyError('setting')\n")
    (tmp_path / "needs_a_dependency.py").write_text("import not_installed_anywhere\n")
    (tmp_path / "bad_syntax.py").write_text("def f(:\n")
    (tmp_path / "plain.py").write_text(
        "thing = 3\nclass Outer:\n    async def app(scope, receive, send): pass\n"
        "def factory():\n    raise OSError('no config file')\n")
    yield str(tmp_path)
    sys.path.remove(str(tmp_path))
    for name in ("broken_at_import", "bad_syntax", "plain", "needs_a_dependency"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("spec, factory, message", [
    ("plain", False, "must be given as 'module:attribute'"),
    ("nowhere_to_be_found:app", False, "no module named 'nowhere_to_be_found'"),
    ("nowhere_to_be_found.sub:app", False, "no module named 'nowhere_to_be_found'"),
    ("plain.sub:app", False, "no module named 'plain.sub'"),
    ("plain:missing", False, "module 'plain' has no attribute 'missing'"),
    ("plain:thing", False, "is not an ASGI callable but 'int'"),
    ("plain:factory", True, "app factory 'plain:factory' raised OSError: no config file "
                            "(at "),
    ("broken_at_import:app", False, "KeyError: 'setting' (at "),
    ("needs_a_dependency:app", False, "cannot import app module 'needs_a_dependency': "
     "ModuleNotFoundError: No module named 'not_installed_anywhere' (at "),
    ("bad_syntax:app", False, "SyntaxError: "),
])
def test_loader_errors_are_one_line(app_dir, spec, factory, message):
    with pytest.raises(ImportFailed) as info:
        load_app(spec, factory, app_dir)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_loader_dotted_attribute(app_dir):
    assert callable(load_app("plain:Outer.app", False, app_dir))


def test_loader_finds_test_apps(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    assert load_app("apps:make_hello", True, str(HERE)).__name__ == "hello"
    assert sys.path[0] == str(HERE)
