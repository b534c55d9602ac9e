"""Find the ASGI application named by ``module:attribute`` (uvicorn's syntax)."""
from __future__ import annotations

import importlib
import sys
import traceback

__all__ = ["ImportFailed", "load_app"]


class ImportFailed(Exception):
    """The app could not be loaded; the message is one line meant for the operator."""


def load_app(spec: str, factory: bool = False, app_dir: str | None = None):
    """Import ``module:attr`` (attr may be dotted), call it if ``factory``, return the app."""
    if app_dir is not None and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    module_name, sep, attrs = spec.partition(":")
    if not sep or not module_name or not attrs:
        raise ImportFailed(f"app {spec!r} must be given as 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, ModuleNotFoundError) and exc.name and \
                (module_name + ".").startswith(exc.name + "."):  # the app's, not a dependency
            raise ImportFailed(f"cannot import app module {module_name!r}: "
                               f"no module named {exc.name!r}") from exc
        raise ImportFailed(f"cannot import app module {module_name!r}: "
                           f"{_describe(exc)}{_where(exc)}") from exc
    app = module
    for attr in attrs.split("."):
        try:
            app = getattr(app, attr)
        except AttributeError:
            raise ImportFailed(f"module {module_name!r} has no attribute {attrs!r}") from None
    if factory:
        try:
            app = app()
        except Exception as exc:
            raise ImportFailed(f"app factory {spec!r} raised {_describe(exc)}{_where(exc)}") \
                from exc
    if not callable(app):
        raise ImportFailed(f"app {spec!r} is not an ASGI callable but {type(app).__name__!r}")
    return app


def _describe(exc: BaseException) -> str:
    text = exc.msg if isinstance(exc, SyntaxError) else str(exc)  # _where() adds file:line
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where(exc: BaseException) -> str:
    """' (at file:line)' of the innermost frame, so one log line points at the culprit."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" (at {exc.filename}:{exc.lineno})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<frozen ")]  # importlib's machinery: no help
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {last.filename}:{last.lineno})"
