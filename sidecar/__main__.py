"""``python -m sidecar`` and the ``sidecar`` command (pyproject.toml's console script)."""
import sys


def main() -> int:
    from sidecar import gc_tuning
    gc_tuning.quiet_start()   # before the imports: until started (sidecar/gc_tuning.py)
    from sidecar.cli import main as cli_main
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
