#!/usr/bin/env bash
# Sets up, then runs the test suite from the repository root.  Arguments go to pytest.
# Exits non-zero if pytest or the smoke test fails; pytest's 5 ("no tests collected") is a
# failure like any other.
# Without arguments (CI's run) it also runs the wheel's smoke test on Python 3.12 and 3.13
# (scripts/smoke.sh, about a minute of pip and compilers) beside the suite, in the
# background: its lines are printed when the suite ends, then pytest's summary line again, last.
# SIDECAR_SMOKE=0 leaves it out, SIDECAR_SMOKE=1 adds it to a run with arguments.  Likewise
# scripts/container.sh (deploy/Containerfile built with podman on a debootstrapped base and
# run as the pod runs it; niced; SIDECAR_CONTAINER=0/1), its lines printed after the smoke
# test's.  The whole
# suite runs on .venv's Python (3.11); tests/conftest.py runs the in-process unit tests first,
# while the smoke test shares the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
smoke_pid=""
if [ "${SIDECAR_SMOKE:-$([ $# -eq 0 ] && echo 1 || echo 0)}" = 1 ]; then
    bash scripts/smoke.sh >"$logs/smoke" 2>&1 &
    smoke_pid=$!
fi
container_pid=""
if [ "${SIDECAR_CONTAINER:-$([ $# -eq 0 ] && echo 1 || echo 0)}" = 1 ]; then
    nice -n 10 bash scripts/container.sh >"$logs/container" 2>&1 &
    container_pid=$!
fi
set +e
.venv/bin/python -m pytest -q "$@" 2>&1 | tee "$logs/pytest"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -eq 5 ]; then
    echo "test: pytest collected no tests" >&2
fi
if [ -n "$smoke_pid" ]; then
    smoke_status=0
    wait "$smoke_pid" || smoke_status=$?
    cat "$logs/smoke"
    if [ "$smoke_status" -ne 0 ]; then
        echo "test: the smoke test failed (exit $smoke_status)" >&2
        [ "$status" -ne 0 ] || status=$smoke_status
    fi
fi
if [ -n "$container_pid" ]; then
    container_status=0
    wait "$container_pid" || container_status=$?
    cat "$logs/container"
    if [ "$container_status" -ne 0 ]; then
        echo "test: the container test failed (exit $container_status)" >&2
        [ "$status" -ne 0 ] || status=$container_status
    fi
fi
if [ -n "$smoke_pid$container_pid" ]; then
    # pytest's summary line, last again
    grep -E ' in [0-9.]+s( \([0-9:]+\))?( =+)?$' "$logs/pytest" | tail -1 || true
fi
exit "$status"
