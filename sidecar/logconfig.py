"""``--log-config FILE``: the user's logging setup, applied on top of sidecar's defaults in the
front-end and in every worker (uvicorn's --log-config, gunicorn's --log-config-dict).

The file is a ``logging.config.dictConfig`` dictionary in JSON (``.json``) or TOML
(``.toml``), or a ``logging.config.fileConfig`` INI file (``.ini``, ``.conf``, ``.cfg``).
The front-end reads, checks and applies it at start (a bad file: one line, exit 2); each
worker reads and applies it when it starts, so a reload (SIGHUP, ``sidecar reload``) brings
an edited file to the workers, and a file broken meanwhile fails the reload (the old workers
serve on).
``disable_existing_loggers`` defaults to false here (Python's default, true, would silence
sidecar's own loggers, which exist before the file is applied).

sidecar's loggers: ``sidecar`` and its children in the front-end (``sidecar.supervisor``,
``sidecar.frontend``, ...), ``sidecar.access`` (one line per response), ``sidecar.worker`` in
the workers.  The app's own loggers are the app's.
"""
from __future__ import annotations

import configparser
import json
import logging.config
import os
import tomllib

INI_SUFFIXES = (".ini", ".conf", ".cfg")


class LogConfigError(ValueError):
    """The file cannot be read or is not a logging configuration (one line)."""


def load(path: str) -> dict:
    """The configuration, for ``apply``: ``{"dict": {...}}`` or ``{"ini": "/abs/path"}``.
    Raises LogConfigError, saying why, for a file that cannot be read or parsed."""
    suffix = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise LogConfigError(f"cannot read log config {path}: {exc.strerror}") from None
    if suffix in INI_SUFFIXES:
        parser = configparser.ConfigParser()
        try:
            parser.read_string(data.decode("utf-8"))
        except (UnicodeDecodeError, configparser.Error) as exc:
            raise LogConfigError(f"log config {path}: {' '.join(str(exc).split())}") from None
        if not parser.has_section("loggers"):
            raise LogConfigError(f"log config {path}: no [loggers] section (fileConfig format)")
        return {"ini": os.path.abspath(path)}
    try:
        if suffix == ".json":
            config = json.loads(data)
        elif suffix == ".toml":
            config = tomllib.loads(data.decode("utf-8"))
        else:
            raise LogConfigError(f"log config {path}: expected .json, .toml or .ini "
                                 f"(dictConfig or fileConfig)")
    except (ValueError, UnicodeDecodeError) as exc:   # JSONDecodeError, TOMLDecodeError
        raise LogConfigError(f"log config {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(config, dict) or config.get("version") != 1:
        raise LogConfigError(f"log config {path}: a dictConfig needs \"version\": 1")
    return {"dict": config}


def apply(spec: dict) -> None:
    """Apply what ``load`` returned.  Raises LogConfigError for a configuration logging
    refuses (an unknown handler class, a bad level, ...)."""
    try:
        if "ini" in spec:
            logging.config.fileConfig(spec["ini"], disable_existing_loggers=False)
        else:
            config = dict(spec["dict"])
            config.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(config)
    except Exception as exc:   # dictConfig raises ValueError, fileConfig KeyError and others
        raise LogConfigError(f"log config: {' '.join(str(exc).split())}") from None
