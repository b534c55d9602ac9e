#!/usr/bin/env bash
# Sets up, then runs the test suite from the repository root.  Arguments go to pytest.
# Exits with pytest's status; 5 ("no tests collected") is a failure like any other.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
.venv/bin/python -m pytest -q "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test: pytest collected no tests" >&2
fi
exit "$status"
