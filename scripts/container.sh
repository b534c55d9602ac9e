#!/usr/bin/env bash
# deploy/Containerfile built and run for real with podman, as the Kubernetes manifests run it.
#
#   sudo scripts/container.sh   # needs root, podman, mmdebstrap, Debian's mirror, pip's index
#
# No container registry is reachable here, so the base image is made locally: a minimal
# Debian 12 root (mmdebstrap --variant=minbase, with python3 and python3-venv), piped into
# `podman import` as localhost/sidecar-base:bookworm-YYYYMM-<packages' hash>.  It stays in
# podman's store and is reused by later runs that month (a fresh machine makes it: about a
# minute and a half).  Beside it, sidecar's wheel is built here with Debian's python3 (the
# base's: same Python, same glibc) and pip downloads its dependencies' wheels, as this host's
# pip is configured.  The image is built from this checkout with `--build-arg BASE=` that base
# (the Containerfile's default stays Docker Hub's python:3.11-slim-bookworm), those wheels
# mounted at /wheels and `--build-arg WHEELS=` their digest: the build stage installs them
# into /opt/sidecar with --no-index (no compiler, no apt, no network), and the runtime stage
# copies that venv.
# Then it runs with the pod's securityContext (uid 10001, read-only root, every
# capability dropped, no new privileges) and no network at all, its Unix socket in a volume
# mounted from here, and each check prints PASS or FAIL:
#   sidecar is PID 1, as uid 10001, with no capabilities and NoNewPrivs; the root is
#   read-only; the demo answers 200 through the socket in the volume, a WebSocket echoes;
#   the readiness probe's `sidecar status --ready` passes; `podman stop` (SIGTERM) lets the
#   response in flight finish, and sidecar exits 0 (not killed), leaving its socket removed
#   and /dev/shm (a volume, as the pod's emptyDir) empty.
# Exit status: 0 when every check passed, 1 otherwise, 2 when the image could not be built
# (or podman could not run it).  The last line is "container: N passed, M failed".
# Each step's time is printed.  SIDECAR_CONTAINER_KEEP=1 keeps the built image.  What stays
# in podman's store: the base, and the build stage as localhost/sidecar-build-cache:check
# (the next run's layer cache); the previous run's build layers are removed.
#
# The podman here: `--runtime runc` (crun refuses this machine's hybrid cgroup layout), and
# ulimits no higher than the caller's.  For a measurement from a cold store without
# touching the machine's: CONTAINERS_STORAGE_CONF (graphroot, runroot) and CONTAINERS_CONF
# ([engine] tmp_dir) naming directories of their own.
# One run at a time per machine (the image names are fixed).
set -uo pipefail
cd "$(dirname "$0")/.."
TAG="localhost/sidecar:check"
BUILD_CACHE="localhost/sidecar-build-cache:check"
CTR="sidecar-check-$$"
WORK="$(mktemp -d)"
passed=0
failed=0
started=$SECONDS

NAME=container
. scripts/lib.sh   # say, die, check, debian_mirror
step() { say "$1 ($(($SECONDS - $2)) s)"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap, podman)"
for tool in podman mmdebstrap runc curl; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/setup.sh installs it as root)"
done
# Debian's python3 builds the wheels: the base's Python (python3-venv: scripts/setup.sh)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || die "Debian's /usr/bin/python3 with venv not found"
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)

# podman keeps its locks in /dev/shm/libpod_lock, made by its first command: a run that made
# it removes it at the end (podman makes it again when next needed), so /dev/shm is left as
# it was found, as a sidecar must leave it
[ -e /dev/shm/libpod_lock ] && shm_lock_was_there=1 || shm_lock_was_there=0

cleanup() {
    [ -z "${wheels_pid:-}" ] || kill "$wheels_pid" 2>/dev/null
    "${PODMAN[@]}" rm -f -t 0 "$CTR" >/dev/null 2>&1
    if [ "${SIDECAR_CONTAINER_KEEP:-0}" != 1 ]; then
        "${PODMAN[@]}" rmi -f "$TAG" >/dev/null 2>&1
    fi
    # mmdebstrap's tmpfs, if it or the import failed: unmounted (with whatever is mounted
    # in it) before anything is removed
    if mountpoint -q "$WORK/tmpfs" 2>/dev/null && ! umount -R "$WORK/tmpfs"; then
        say "cannot unmount $WORK/tmpfs: left as it is" >&2
        return
    fi
    rm -rf "$WORK"
    [ "$shm_lock_was_there" = 1 ] || rm -f /dev/shm/libpod_lock
}
trap cleanup EXIT

# -- 1. the wheels, made here (beside step 2): sidecar's and its dependencies' ----------------
# Built with Debian's python3 (the python3.11 the base carries: same ABI, same glibc), from a
# copy of what the Containerfile would copy (no .so or caches of the checkout's own build), by
# the host's pip with its configuration and caches; the dependencies as the host's pip
# downloads them for that Python.  The image's build stage then installs these with
# --no-index: no compiler, no apt, no network in the build (a compiler and its headers were
# most of a cold build's time: ~70 MB of packages to fetch and unpack, then the wheel).
wheels="$WORK/wheels"
make_wheels() {
    local t0=$SECONDS src="$WORK/src"
    mkdir -p "$wheels" "$src"
    tar -c --exclude='*.so' --exclude='*.o' --exclude=__pycache__ --exclude='*.egg-info' \
        pyproject.toml setup.py build_ffi.py MANIFEST.in README.md native sidecar \
        | tar -x -C "$src" || return 1
    /usr/bin/python3 -m venv "$WORK/venv" \
        && "$WORK/venv/bin/pip" wheel -q --disable-pip-version-check --no-deps -w "$wheels" \
            "$src" \
        && "$WORK/venv/bin/pip" download -q --disable-pip-version-check -d "$wheels" \
            "$wheels"/sidecar-*.whl starlette || return 1
    rm -rf "$src" "$WORK/venv"
    step "the wheels: $(ls "$wheels" | wc -l) files ($(du -sm "$wheels" | cut -f1) MB)" "$t0" \
        >"$WORK/wheels.step"
}
make_wheels >"$WORK/wheels.log" 2>&1 &
wheels_pid=$!

# -- 2. the base image: mmdebstrap | podman import (once a month) ---------------------------
# its tag: the month and the packages, so a new month or list makes a new one
PACKAGES="python3,python3-venv"
key="$(date -u +%Y%m)-$(printf %s "$PACKAGES" | sha256sum | cut -c1-8)"
BASE="localhost/sidecar-base:bookworm-$key"
if "${PODMAN[@]}" image exists "$BASE"; then
    say "base image $BASE present"
else
    t0=$SECONDS
    mirror="$(debian_mirror)" || exit 2
    # an old month's base goes: one base in the store at a time
    "${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}}' \
        | grep '^localhost/sidecar-base:' | xargs -r "${PODMAN[@]}" rmi -f >/dev/null 2>&1
    # mmdebstrap, not debootstrap: apt resolves and fetches (debootstrap spent 30 of its 80 s
    # here resolving dependencies in shell), the root goes to podman as a tar on a pipe, and
    # its work directory is a tmpfs (dpkg syncs what it unpacks).  merged-usr: bookworm's
    # layout without the usrmerge package (and the perl it pulls in).  What an image does
    # not carry: man pages, docs, logs, apt's lists and downloads (mmdebstrap's cleanup).
    mkdir "$WORK/tmpfs" && mount -t tmpfs -o size=1g,mode=0700 sidecar-base "$WORK/tmpfs" \
        || die "cannot mount a tmpfs on $WORK/tmpfs"
    TMPDIR="$WORK/tmpfs" mmdebstrap --variant=minbase --include="$PACKAGES" --mode=root \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --customize-hook='rm -f "$1"/var/log/*.log "$1"/var/log/apt/*' \
        bookworm - "$mirror" 2>"$WORK/mmdebstrap.log" \
        | "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
            - "$BASE" >"$WORK/import.log" 2>&1 \
        || { tail -20 "$WORK/mmdebstrap.log" "$WORK/import.log" >&2; die "mmdebstrap | podman import"; }
    umount "$WORK/tmpfs"
    step "mmdebstrap --variant=minbase bookworm ($PACKAGES) | podman import as $BASE" "$t0"
fi

wait "$wheels_pid" || { wheels_pid=""; tail -30 "$WORK/wheels.log" >&2; die "the wheels (Debian's python3 -m venv, pip wheel)"; }
wheels_pid=""
cat "$WORK/wheels.step"
# the set's name: the build inputs' contents and the dependencies' wheels (sidecar's wheel
# differs from build to build in its timestamps; a name that did too would rebuild the venv
# layer every run)
digest="$({ find pyproject.toml setup.py build_ffi.py MANIFEST.in README.md native sidecar \
              -type f ! -name '*.so' ! -name '*.o' ! -name '*.pyc' | LC_ALL=C sort \
              | xargs sha256sum; (cd "$wheels" && sha256sum -- *.whl | grep -v ' sidecar-'); } \
          | sha256sum | cut -c1-16)"

# -- 3. the image, from this checkout and those wheels -------------------------------------------
t0=$SECONDS
build=("${PODMAN[@]}" build --pull=never --network none --layers
       -v "$wheels:/wheels:ro" --build-arg WHEELS="$digest"
       --build-arg BASE="$BASE" -f deploy/Containerfile)
"${build[@]}" -t "$TAG" . >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log" >&2; die "podman build"; }
# the build stage, tagged: its layers are the next run's cache (the venv while the wheels
# are unchanged); the last run's, if they differ, go (with the layers no other image uses),
# so the store does not grow with each change of the sources
old_cache="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$BUILD_CACHE" 2>/dev/null)"
"${build[@]}" --target build -t "$BUILD_CACHE" . >"$WORK/build-cache.log" 2>&1 \
    || { tail -20 "$WORK/build-cache.log" >&2; die "podman build --target build"; }
if [ -n "$old_cache" ] && [ "$old_cache" != "$("${PODMAN[@]}" image inspect \
        --format '{{.Id}}' "$BUILD_CACHE")" ]; then
    "${PODMAN[@]}" rmi "$old_cache" >/dev/null 2>&1
fi
size="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%d", $1/1e6}')"
step "podman build -f deploy/Containerfile ($size MB)" "$t0"

# -- 4. run it as the pod does ---------------------------------------------------------------
t0=$SECONDS
run="$WORK/run"
shm="$WORK/shm"   # the pod's emptyDir at /dev/shm: here, to see it empty after the stop
install -d -o 10001 -g 10001 -m 0750 "$run"
install -d -m 1777 "$shm"
sock="$run/sidecar.sock"
# limits no higher than ours: where root lacks CAP_SYS_RESOURCE (this machine), podman's
# defaults (nofile 1048576) cannot be set and runc fails with "error setting rlimit"
nofile="$(ulimit -Hn)"; [ "$nofile" = unlimited ] || [ "$nofile" -gt 16384 ] && nofile=16384
"${PODMAN[@]}" run -d --pull=never --name "$CTR" --network none \
    --ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096 \
    --user 10001:10001 --read-only --cap-drop all --security-opt no-new-privileges \
    --tmpfs /tmp:size=64m -v "$shm:/dev/shm" -v "$run:/run/sidecar" \
    -e SIDECAR_WORKERS=2 "$TAG" --uds-mode 660 --timeout-graceful-shutdown 20 \
    >"$WORK/run.log" 2>&1 || { cat "$WORK/run.log" >&2; die "podman run"; }
for _ in $(seq 300); do
    curl -sf -m 5 --unix-socket "$sock" http://sidecar/pid >/dev/null 2>&1 && break
    [ "$("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$CTR")" = true ] || break
    sleep 0.1
done
curl -sf -m 5 --unix-socket "$sock" http://sidecar/pid >/dev/null 2>&1 \
    || { "${PODMAN[@]}" logs "$CTR" 2>&1 | tail -30 >&2; die "sidecar did not serve in 30 s"; }
step "podman run: serving on the socket in the volume" "$t0"

C() { "${PODMAN[@]}" exec "$CTR" "$@"; }

t_pid1() {  # PID 1 is sidecar itself (no shell, no init), as uid 10001, unprivileged
    local cmd status
    cmd="$(C cat /proc/1/cmdline | tr '\0' ' ')"
    status="$(C cat /proc/1/status)"
    echo "PID 1: $cmd"
    printf '%s\n' "$status" | grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs):'
    case "$cmd" in "/opt/sidecar/bin/python"*" /opt/sidecar/bin/sidecar "*) ;; *) return 1 ;; esac
    printf '%s\n' "$status" | awk '/^Uid:/ && $2 != 10001 {bad=1}
        /^(CapEff|CapBnd):/ && $2 != "0000000000000000" {bad=1}
        /^NoNewPrivs:/ && $2 != 1 {bad=1} END {exit bad}'
}
t_readonly() {  # nothing in the image is writable; the socket's volume and /tmp are
    if C sh -c 'echo x >/opt/sidecar/x' 2>/dev/null \
            || C sh -c 'echo x >/srv/app/x' 2>/dev/null; then
        echo "wrote into the image"
        return 1
    fi
    C sh -c 'echo x >/tmp/x && rm /tmp/x' && [ -S "$sock" ] \
        && stat -c '%u %a %n' "$sock" "$sock.ctl" \
        && [ "$(stat -c '%u %a' "$sock")" = "10001 660" ] \
        && [ "$(stat -c '%a' "$sock.ctl")" = 600 ]
}
t_http() {  # the demo: 200, JSON from a worker whose parent is PID 1
    local out code
    out="$(curl -sS -m 10 -w '\n%{http_code}' --unix-socket "$sock" http://sidecar/api/hello)"
    echo "$out"
    [ "${out##*$'\n'}" = 200 ] || return 1
    code="$(curl -sS -m 10 -o /dev/null -w '%{http_code}' --unix-socket "$sock" http://sidecar/)"
    [ "$code" = 200 ] || { echo "GET / -> $code"; return 1; }
    out="$(curl -sS -m 10 --unix-socket "$sock" http://sidecar/pid)" && echo "$out"
    pid="$(printf '%s' "$out" | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')"
    [ -n "$pid" ] && C sh -c "grep -E '^PPid:' /proc/$pid/status" | grep -qx $'PPid:\t1'
}
t_websocket() {  # /ws/echo over the socket, with the image's own Python (websockets)
    C /opt/sidecar/bin/python -c '
import sys
from websockets.sync.client import unix_connect
with unix_connect("/run/sidecar/sidecar.sock", "ws://sidecar/ws/echo") as ws:
    ws.send("ping")
    got = ws.recv(10)
print(got)
sys.exit(0 if "ping" in got else 1)'
}
t_probes() {  # the manifests' readiness and liveness commands
    C /opt/sidecar/bin/sidecar status --ready --control /run/sidecar/sidecar.sock.ctl \
        --timeout 4 \
        && C /opt/sidecar/bin/sidecar status --live --control /run/sidecar/sidecar.sock.ctl \
            --timeout 9
}
t_stop() {  # podman stop: SIGTERM to PID 1; the response in flight completes; exit 0
    local t0 code out
    curl -sS -m 30 --unix-socket "$sock" 'http://sidecar/ndjson/progress?steps=10&delay=0.2' \
        >"$WORK/inflight" 2>&1 &
    local client=$!
    sleep 0.5
    t0="$(date +%s%N)"
    "${PODMAN[@]}" stop -t 20 "$CTR" >/dev/null || return 1
    echo "$(( ($(date +%s%N) - t0) / 1000000 ))" >"$WORK/stop_ms"
    echo "podman stop took $(cat "$WORK/stop_ms") ms"
    wait "$client" || { echo "the client failed"; cat "$WORK/inflight"; return 1; }
    tail -1 "$WORK/inflight"
    grep -q '"done": *true' "$WORK/inflight" || return 1
    code="$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$CTR")"
    out="$("${PODMAN[@]}" logs "$CTR" 2>&1)"
    echo "exit code $code"
    printf '%s\n' "$out" | tail -4
    [ "$code" = 0 ] && printf '%s\n' "$out" | grep -q 'shutting down (SIGTERM)' \
        && ! printf '%s\n' "$out" | grep -q Traceback \
        && [ ! -e "$sock" ] && { ls -A "$shm"; [ -z "$(ls -A "$shm")" ]; }
}

t0=$SECONDS
check "sidecar is PID 1, uid 10001, no capabilities, NoNewPrivs" t_pid1
check "read-only root; socket 0660 and control socket 0600 in the volume" t_readonly
check "the demo through the socket in the volume: 200; workers are PID 1's" t_http
check "a WebSocket echoes" t_websocket
check "the probes: sidecar status --ready and --live" t_probes
check "podman stop: the response in flight completes, exit 0" t_stop
step "checks (podman stop: $(cat "$WORK/stop_ms" 2>/dev/null || echo ?) ms)" "$t0"

say "$passed passed, $failed failed ($((SECONDS - started)) s)"
[ "$failed" -eq 0 ]
