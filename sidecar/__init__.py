"""sidecar: an ASGI server (docs/architecture.md)."""


def version() -> str:
    """The installed distribution's version: pyproject.toml's ``version``, the one source."""
    from importlib import metadata  # here, not at import: workers import this package too

    try:
        return metadata.version("sidecar")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
