#!/usr/bin/env bash
# The wheel on other Pythons: for each version in $SIDECAR_SMOKE_PYTHONS (default "3.12 3.13"),
# build a wheel from the sdist with that Python, install it into a fresh venv and run
# scripts/smoke.py there (start, HTTP, a WebSocket, a worker crash, reload, SIGTERM).
# The whole suite runs on .venv's Python (3.11); tests/packaging covers its wheel.
#
# Interpreters: pythonX.Y on PATH, else pyenv's ($PYENV_ROOT, default ~/.pyenv). A version
# that is missing is a failure that says so, not a silent skip.
# Work files in build/smoke/ (git-ignored). One line per step; tools' output on failure only.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'smoke: %s\n' "$*"; }

quietly() {
    local log
    log="$(mktemp)"
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        say "FAILED: $*" >&2
        return 1
    fi
    rm -f "$log"
}

find_python() {  # prints the interpreter for version $1 (X.Y), or nothing
    local v="$1" p
    if p="$(command -v "python$v" 2>/dev/null)" && "$p" -c 'import venv' 2>/dev/null; then
        printf '%s\n' "$p"
        return
    fi
    for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v"; do
        [ -x "$p" ] && { printf '%s\n' "$p"; return; }
    done
}

pythons="${SIDECAR_SMOKE_PYTHONS:-3.12 3.13}"
version="$(.venv/bin/python -c 'import tomllib
print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
work=build/smoke
rm -rf "$work"
mkdir -p "$work"

started=$SECONDS
say "sdist of sidecar $version (python -m build --sdist)"
quietly .venv/bin/python -m build --sdist --outdir "$work" .
sdist="$(ls "$work"/sidecar-*.tar.gz)"

failed=()
for v in $pythons; do
    python="$(find_python "$v" || true)"
    if [ -z "$python" ]; then
        say "FAILED: Python $v not found (no python$v on PATH, none in" \
            "${PYENV_ROOT:-$HOME/.pyenv}/versions/$v.*): install it (pyenv install $v," \
            "or Debian's python$v) or leave it out of SIDECAR_SMOKE_PYTHONS" >&2
        failed+=("$v")
        continue
    fi
    t0=$SECONDS
    venv="$work/venv-$v"
    say "Python $v ($python): wheel from the sdist, fresh venv"
    quietly "$python" -m venv "$venv"
    quietly "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    quietly "$venv/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps \
        -w "$work/dist-$v" "$sdist"
    wheel="$(ls "$work/dist-$v"/sidecar-*.whl)"
    quietly "$venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel"
    if "$venv/bin/python" scripts/smoke.py --version "$version"; then
        say "Python $v: passed with $(basename "$wheel") in $((SECONDS - t0)) s"
    else
        failed+=("$v")
    fi
done
rm -rf "$work"
if [ ${#failed[@]} -gt 0 ]; then
    say "FAILED on Python ${failed[*]} ($((SECONDS - started)) s)" >&2
    exit 1
fi
say "the wheel serves on Python ${pythons// /, } ($((SECONDS - started)) s)"
