#!/usr/bin/env bash
# Idempotent setup behind scripts/demo.sh and scripts/test.sh:
#   1. Debian packages (only as root, only those missing): wrk, nginx, curl, compilers, headers,
#      chromium (the browser WebSocket tests)
#   2. .venv in the repository (python3.11, else python3)
#   3. pip install -e '.[test]' — skipped while the build inputs are unchanged since the last
#      install (SIDECAR_SETUP_FORCE=1 forces it)
# One line per step on stdout; the tools' own output only when they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }

# Runs "$@" with its output in a log that is shown only if it fails.
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

# -- 1. Debian packages ------------------------------------------------------------------------
# systemd: systemd-socket-activate and systemd-analyze (tests/e2e/test_systemd.py); caddy:
# tests/e2e/test_caddy.py; openssl: the certificates of tests/e2e/test_tls.py; nghttp2-client:
# h2load for benchmarks.http's HTTP/2 scenarios; podman, runc, mmdebstrap: scripts/container.sh;
# debootstrap: scripts/systemd-container.sh
packages=(wrk nginx-light curl gcc clang libclang-rt-14-dev python3-venv python3-dev libffi-dev
          chromium systemd caddy openssl nghttp2-client podman runc debootstrap
          mmdebstrap)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    say "system packages present"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    quietly apt-get update -q
    quietly apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "missing ${missing[*]} (run as root with apt-get to install them); continuing"
fi

# -- 2. virtualenv ------------------------------------------------------------------------------
if [ -x .venv/bin/python ]; then
    say ".venv present"
else
    python="$(command -v python3.11 || command -v python3 || true)"
    if [ -z "$python" ]; then
        say "FAILED: neither python3.11 nor python3 found" >&2
        exit 1
    fi
    say "creating .venv with $python"
    quietly "$python" -m venv .venv
fi

# -- 3. the package, editable, with its test extra ----------------------------------------------
# Whatever pip would build from: project metadata, the C ring and its cffi build script.
build_inputs() {
    {
        ls pyproject.toml setup.py setup.cfg build_ffi.py 2>/dev/null || true
        find native sidecar -type f \( -name '*.c' -o -name '*.h' -o -name '*build*.py' \) \
            2>/dev/null || true
    } | LC_ALL=C sort | xargs -r sha256sum
}
stamp=.venv/.sidecar-setup-stamp
fingerprint="$(build_inputs | sha256sum | cut -d' ' -f1)"
if [ "${SIDECAR_SETUP_FORCE:-0}" != 1 ] && [ -f "$stamp" ] \
        && [ "$(cat "$stamp")" = "$fingerprint" ]; then
    say "sidecar installed in .venv (build inputs unchanged)"
else
    say "pip install -e '.[test]'"
    quietly .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    printf '%s\n' "$fingerprint" >"$stamp"
fi
# A build of another suffix beside pip's (python build_ffi.py writes _ring.cpython-311-*.so,
# pip -e writes _ring.abi3.so) is imported first (EXTENSION_SUFFIXES' order), so an older one
# would silently run old C: keep only the newest build of each module.
for module in _ring _h1; do
    newest="$(ls -t sidecar/"$module".*.so 2>/dev/null | head -1)"
    for so in sidecar/"$module".*.so; do
        if [ -f "$so" ] && [ "$so" != "$newest" ]; then
            say "removing $so (older than $newest, which it would shadow or be shadowed by)"
            rm -f "$so"
        fi
    done
done

# -- 4. the Node.js host package (node/): koffi + @msgpack/msgpack from npm, and the ring
#       library as a shared object for koffi (gcc, no node-gyp) ----------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        say "installing nodejs npm"
        export DEBIAN_FRONTEND=noninteractive
        quietly apt-get update -q
        quietly apt-get install -y -q --no-install-recommends nodejs npm
    else
        say "FAILED: node and npm are needed for node/ (apt-get install nodejs npm)" >&2
        exit 1
    fi
fi
node_stamp=node/node_modules/.sidecar-setup-stamp
node_fingerprint="$(sha256sum node/package.json node/package-lock.json | sha256sum | cut -d' ' -f1)"
if [ -f "$node_stamp" ] && [ "$(cat "$node_stamp")" = "$node_fingerprint" ]; then
    say "node/ packages installed (package-lock.json unchanged)"
else
    say "npm ci in node/"
    (cd node && quietly npm ci --no-audit --no-fund)
    printf '%s\n' "$node_fingerprint" >"$node_stamp"
fi
(cd node && quietly node build.js)
say "node/build/libsidecar_ring.so built"
