#!/usr/bin/env bash
# deploy/Containerfile built and run for real with podman, as the Kubernetes manifests run it.
#
#   sudo scripts/container.sh         # needs root, podman, debootstrap, Debian's mirror, PyPI
#
# No container registry is reachable here, so the base image is made locally: a minimal
# Debian 12 root (debootstrap --variant=minbase, with python3 and python3-venv), imported
# with `podman import` as localhost/sidecar-base:bookworm-YYYYMM-<packages' hash>.  It stays in
# podman's store and is reused by later runs that month (a fresh machine makes it: 3 minutes
# alone, up to 9 beside the suite).  The image
# is built from this checkout with `--build-arg BASE=` that base (the Containerfile's default
# stays Docker Hub's python:3.11-slim-bookworm): the wheel is built in the build stage and
# installed into /opt/sidecar with its dependencies from PyPI, then copied into the runtime
# stage.  Then it runs with the pod's securityContext (uid 10001, read-only root, every
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
# ulimits no higher than the caller's.  pip in the build stage trusts the CA bundle of this
# host (mounted for the build only: a TLS-intercepting proxy's CA is in it where there is one).
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

say() { printf 'container: %s\n' "$*"; }
die() { say "SETUP FAILED: $*" >&2; exit 2; }
step() { say "$1 ($(($SECONDS - $2)) s)"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, podman)"
for tool in podman debootstrap runc curl; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/setup.sh installs it as root)"
done
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)

# podman keeps its locks in /dev/shm/libpod_lock, made by its first command: a run that made
# it removes it at the end (podman makes it again when next needed), so /dev/shm is left as
# it was found, as a sidecar must leave it
[ -e /dev/shm/libpod_lock ] && shm_lock_was_there=1 || shm_lock_was_there=0

cleanup() {
    "${PODMAN[@]}" rm -f -t 0 "$CTR" >/dev/null 2>&1
    if [ "${SIDECAR_CONTAINER_KEEP:-0}" != 1 ]; then
        "${PODMAN[@]}" rmi -f "$TAG" >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    [ "$shm_lock_was_there" = 1 ] || rm -f /dev/shm/libpod_lock
}
trap cleanup EXIT

# -- 1. the base image: debootstrap, podman import (once a month) ---------------------------
# its tag: the month and the packages, so a new month or list makes a new one
PACKAGES="python3,python3-venv"
key="$(date -u +%Y%m)-$(printf %s "$PACKAGES" | sha256sum | cut -c1-8)"
BASE="localhost/sidecar-base:bookworm-$key"
if "${PODMAN[@]}" image exists "$BASE"; then
    say "base image $BASE present"
else
    t0=$SECONDS
    mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
    [ -n "$mirror" ] || mirror="$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt"
    root="$WORK/rootfs"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$mirror" \
        >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap"; }
    step "debootstrap --variant=minbase bookworm ($PACKAGES)" "$t0"
    t0=$SECONDS
    # what an image does not carry: apt's downloads and lists, logs, man pages
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/var/log/*.log "$root"/usr/share/man/* "$root"/usr/share/doc/*
    printf 'deb %s bookworm main\n' "$mirror" >"$root/etc/apt/sources.list"
    # an old month's base goes: one base in the store at a time
    "${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}}' \
        | grep '^localhost/sidecar-base:' | xargs -r "${PODMAN[@]}" rmi -f >/dev/null 2>&1
    tar -C "$root" -c . | "${PODMAN[@]}" import \
        --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$BASE" \
        >"$WORK/import.log" 2>&1 || { cat "$WORK/import.log" >&2; die "podman import"; }
    rm -rf "$root"
    step "podman import as $BASE" "$t0"
fi

# -- 2. the image, from this checkout ----------------------------------------------------------
t0=$SECONDS
ca=/etc/ssl/certs/ca-certificates.crt
printf '[global]\ncert = /run/sidecar-build-ca.crt\n' >"$WORK/pip.conf"
build=("${PODMAN[@]}" build --pull=never --network host --layers
       -v "$ca:/run/sidecar-build-ca.crt:ro" -v "$WORK/pip.conf:/etc/pip.conf:ro"
       --build-arg BASE="$BASE"
       --build-arg BUILD_PACKAGES="gcc libc6-dev libffi-dev python3-dev"
       -f deploy/Containerfile)
"${build[@]}" -t "$TAG" . >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log" >&2; die "podman build"; }
# the build stage, tagged: its layers are the next run's cache (the compilers; the wheel and
# the venv while the sources are unchanged); the last run's, if they differ, go (with the
# layers no other image uses), so the store does not grow with each change of the sources
old_cache="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$BUILD_CACHE" 2>/dev/null)"
"${build[@]}" --target build -t "$BUILD_CACHE" . >"$WORK/build-cache.log" 2>&1 \
    || { tail -20 "$WORK/build-cache.log" >&2; die "podman build --target build"; }
if [ -n "$old_cache" ] && [ "$old_cache" != "$("${PODMAN[@]}" image inspect \
        --format '{{.Id}}' "$BUILD_CACHE")" ]; then
    "${PODMAN[@]}" rmi "$old_cache" >/dev/null 2>&1
fi
size="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%d", $1/1e6}')"
step "podman build -f deploy/Containerfile ($size MB)" "$t0"

# -- 3. run it as the pod does ---------------------------------------------------------------
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

check() {  # check NAME COMMAND...: PASS if the command succeeds
    local name="$1"
    shift
    local out
    if out="$("$@" 2>&1)"; then
        passed=$((passed + 1))
        say "PASS  $name"
    else
        failed=$((failed + 1))
        say "FAIL  $name"
        printf '%s\n' "$out" | tail -40 | sed 's/^/      /'
    fi
}
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
