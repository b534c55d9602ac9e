"""An app module that fails while being imported (for tests/e2e/test_cli.py)."""
raise RuntimeError("cannot reach the settings service (test)")
