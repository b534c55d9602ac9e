#!/usr/bin/env bash
# Sets up, then serves the demo app (examples/demo.py) with sidecar on its defaults:
# the Unix socket ./sidecar.sock and http://127.0.0.1:8000/.  Extra arguments go to sidecar.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "demo: http://127.0.0.1:8000/ and unix:$PWD/sidecar.sock (Ctrl-C to stop)"
exec .venv/bin/python -m sidecar examples.demo:app "$@"
