#!/usr/bin/env bash
# Sets up, then runs the test suite from the repository root.  Arguments go to pytest.
# Exits with pytest's status; 5 ("no tests collected") is a failure like any other.
# Without arguments (CI's run) it first runs the wheel's smoke test on Python 3.12 and 3.13
# (scripts/smoke.sh, about a minute); SIDECAR_SMOKE=0 leaves it out, SIDECAR_SMOKE=1 adds it
# to a run with arguments.  The whole suite runs on .venv's Python (3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${SIDECAR_SMOKE:-$([ $# -eq 0 ] && echo 1 || echo 0)}" = 1 ]; then
    bash scripts/smoke.sh
fi
status=0
.venv/bin/python -m pytest -q "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test: pytest collected no tests" >&2
fi
exit "$status"
