#!/usr/bin/env bash
# The units in systemd/ run for real under systemd as PID 1, in a container.
#
#   sudo scripts/systemd-container.sh            # needs root and Debian's package mirror
#
# A minimal Debian 12 root (debootstrap, cached in $SIDECAR_CHECK_ROOT) gets sidecar from a
# wheel of this checkout, the unit files exactly as they are in systemd/, nginx with
# examples/nginx/sidecar.conf and a small app, and is booted with systemd-nspawn
# (--private-network: loopback only, nothing reaches the host's ports).  Then, from outside,
# each check runs a command in the container and prints PASS or FAIL:
#   socket activation, READY=1 and STATUS=, the dynamic user and the sandbox as applied,
#   socket and control-socket permissions, nginx -> socket incl. SSE event by event,
#   `systemctl reload` (returns when the new workers serve), a failed reload (it fails, the
#   old workers keep serving),
#   kill -9 (Restart=), the watchdog (a SIGSTOPped front-end is killed and restarted), the
#   exposure score, the template unit, stop (nothing left in /dev/shm) and start on demand.
# Exit status: 0 when every check passed, 1 otherwise, 2 when the container could not be
# set up.  The last line is "systemd-container: N passed, M failed".
set -uo pipefail  # (so no "| grep -q": its early exit would fail the pipeline with SIGPIPE)
cd "$(dirname "$0")/.."
REPO="$(pwd)"
ROOT="${SIDECAR_CHECK_ROOT:-/var/lib/machines/sidecar-check}"
PYTHON="${SIDECAR_CHECK_PYTHON:-$REPO/.venv/bin/python}"
LOG="$(mktemp -d)"
passed=0
failed=0

NAME=systemd-container
CHECK_TAIL=60
. scripts/lib.sh   # say, die, check, debian_mirror

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, systemd-nspawn)"
[ -x "$PYTHON" ] || die "$PYTHON not found (run scripts/setup.sh first)"

# -- the tools ------------------------------------------------------------------------------
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; } \
        >"$LOG/apt.log" 2>&1 || { cat "$LOG/apt.log" >&2; die "apt-get install ${need[*]}"; }
fi

# -- the root file system (cached: debootstrap takes a few minutes) -------------------------
if [ ! -f "$ROOT/.sidecar-check-root" ]; then
    say "debootstrap of a minimal Debian 12 into $ROOT"
    rm -rf "$ROOT"
    mkdir -p "$(dirname "$ROOT")"
    mirror="$(debian_mirror)" || exit 2
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,python3,python3-venv,nginx-light,curl \
        bookworm "$ROOT" "$mirror" >"$LOG/debootstrap.log" 2>&1 \
        || { tail -20 "$LOG/debootstrap.log" >&2; die "debootstrap"; }
    touch "$ROOT/.sidecar-check-root"
fi

# nspawn keeps per-container state under /run/systemd/nspawn and will only clean it on tmpfs
if ! mountpoint -q /run/systemd/nspawn 2>/dev/null \
        && [ "$(stat -f -c %T /run 2>/dev/null)" != tmpfs ]; then
    mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn \
        || die "cannot mount a tmpfs on /run/systemd/nspawn"
fi
NSPAWN=(systemd-nspawn -q --register=no --keep-unit -D "$ROOT")

# -- sidecar, the units, nginx and an app, as docs/deployment.md installs them --------------
say "installing sidecar from this checkout"
rm -rf "$ROOT/opt/whl" "$ROOT/opt/sidecar"
mkdir -p "$ROOT/opt/whl"
"$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps -w "$ROOT/opt/whl" "$REPO" \
    >"$LOG/wheel.log" 2>&1 || { cat "$LOG/wheel.log" >&2; die "pip wheel"; }
"$PYTHON" -m pip download -q --disable-pip-version-check -d "$ROOT/opt/whl" \
    "$ROOT"/opt/whl/sidecar-*.whl >"$LOG/download.log" 2>&1 \
    || { cat "$LOG/download.log" >&2; die "pip download"; }
"${NSPAWN[@]}" --pipe /bin/sh -c 'python3 -m venv /opt/sidecar/.venv &&
    /opt/sidecar/.venv/bin/pip install -q --no-index --find-links /opt/whl sidecar' \
    >"$LOG/venv.log" 2>&1 || { cat "$LOG/venv.log" >&2; die "venv in the container"; }

install -m 644 "$REPO"/systemd/*.service "$REPO"/systemd/*.socket "$ROOT/etc/systemd/system/"
# the watchdog check waits WatchdogSec: a drop-in shortens it (the mechanism is what is tested)
mkdir -p "$ROOT/etc/systemd/system/sidecar.service.d"
printf '[Service]\nWatchdogSec=4\n' >"$ROOT/etc/systemd/system/sidecar.service.d/check.conf"
mkdir -p "$ROOT/etc/sidecar" "$ROOT/srv/sidecar" "$ROOT/srv/check"
printf 'SIDECAR_APP=app:app\nSIDECAR_WORKERS=2\n' >"$ROOT/etc/sidecar/sidecar.env"
printf 'SIDECAR_APP=app:app\nSIDECAR_WORKERS=1\n' >"$ROOT/etc/sidecar/check.env"
cat >"$ROOT/srv/sidecar/app.py" <<'EOF'
"""The check's app: who serves (pid, uid), an SSE stream, and a lifespan startup that the
check makes slow (/srv/sidecar/slow) or fail (/srv/sidecar/fail)."""
import asyncio
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.path.exists("/srv/sidecar/fail"):
                    await send({"type": "lifespan.startup.failed", "message": "db unreachable"})
                    return
                if os.path.exists("/srv/sidecar/slow"):
                    await asyncio.sleep(3)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/sse":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % i,
                        "more_body": True})
            await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"pid=%d uid=%d\n" % (os.getpid(), os.getuid())
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
EOF
cp "$ROOT/srv/sidecar/app.py" "$ROOT/srv/check/app.py"
rm -f "$ROOT"/srv/sidecar/slow "$ROOT"/srv/sidecar/fail
sed 's/listen 80;/listen 127.0.0.1:8088;/' "$REPO/examples/nginx/sidecar.conf" \
    >"$ROOT/etc/nginx/sites-available/sidecar"
ln -sf ../sites-available/sidecar "$ROOT/etc/nginx/sites-enabled/sidecar"
rm -f "$ROOT/etc/nginx/sites-enabled/default"
wants="$ROOT/etc/systemd/system"
mkdir -p "$wants/sockets.target.wants" "$wants/multi-user.target.wants"
ln -sf /etc/systemd/system/sidecar.socket "$wants/sockets.target.wants/sidecar.socket"
ln -sf /etc/systemd/system/sidecar.service "$wants/multi-user.target.wants/sidecar.service"
ln -sf /etc/systemd/system/sidecar@.socket "$wants/sockets.target.wants/sidecar@check.socket"

# -- boot ------------------------------------------------------------------------------------
say "booting the container"
"${NSPAWN[@]}" -b --private-network --console=pipe >"$LOG/boot.log" 2>&1 </dev/null &
nspawn=$!
leader=""
cleanup() {
    if [ -n "$leader" ]; then
        nsenter -t "$leader" -a systemctl poweroff >/dev/null 2>&1
    fi
    for _ in $(seq 100); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$nspawn" 2>/dev/null
    wait "$nspawn" 2>/dev/null
    rm -rf "$LOG"
}
trap cleanup EXIT
for _ in $(seq 300); do
    leader="$(pgrep -P "$nspawn" -x systemd | head -1)"
    [ -n "$leader" ] && break
    kill -0 "$nspawn" 2>/dev/null || { cat "$LOG/boot.log" >&2; die "systemd-nspawn exited"; }
    sleep 0.1
done
[ -n "$leader" ] || die "no systemd in the container"
C() { nsenter -t "$leader" -a "$@"; }
state=""
for _ in $(seq 300); do
    state="$(C systemctl is-system-running 2>/dev/null)"
    case "$state" in running|degraded) break ;; esac
    sleep 0.1
done
case "$state" in running|degraded) ;; *) die "the container did not boot (state: $state)" ;; esac

get() { C curl -sS -m 10 --unix-socket "$1" "http://sidecar$2"; }
main_pid() { C systemctl show -p MainPID --value sidecar.service; }
wait_active() {  # the service is active and answers on its socket
    for _ in $(seq 100); do
        [ "$(C systemctl is-active sidecar.service)" = active ] \
            && get /run/sidecar/sidecar.sock / >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    C systemctl status sidecar.service --no-pager
    return 1
}

t_ready() {
    C systemctl is-active sidecar.socket && wait_active || return 1
    C systemctl show -p StatusText --value sidecar.service | grep "2/2 workers ready" >/dev/null
}
t_user() {  # a dynamic user, no capabilities, no new privileges, a seccomp filter
    local out pid
    out="$(get /run/sidecar/sidecar.sock /)" && echo "$out"
    case "$out" in *"uid=0"*|"") return 1 ;; esac
    pid="$(main_pid)"
    C grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' "/proc/$pid/status" | tee /dev/stderr \
        | awk '/^CapEff/ && $2 != "0000000000000000" {bad=1}
               /^NoNewPrivs/ && $2 != 1 {bad=1} /^Seccomp:/ && $2 != 2 {bad=1}
               END {exit bad}'
}
t_perms() {
    C stat -c '%U:%G %a' /run/sidecar/sidecar.sock | grep -x 'root:www-data 660' \
        && [ "$(C stat -c '%a' /run/sidecar/sidecar/control.sock)" = 600 ] \
        && C /opt/sidecar/.venv/bin/sidecar status --control /run/sidecar/sidecar/control.sock
}
t_nginx() {  # www-data's nginx reaches the 0660 socket; SSE events arrive spread in time
    local t0 lines
    C systemctl is-active nginx && C curl -sS -m 10 http://127.0.0.1:8088/ | grep pid= >/dev/null \
        || return 1
    lines="$(C sh -c 'curl -sSN -m 10 http://127.0.0.1:8088/sse | while read -r l; do
                          [ -n "$l" ] && echo "$(date +%s%N) $l"; done')"
    echo "$lines"
    [ "$(echo "$lines" | grep -c data)" = 3 ] || return 1
    t0="$(echo "$lines" | head -1 | cut -d' ' -f1)"
    [ $(( ($(echo "$lines" | tail -1 | cut -d' ' -f1) - t0) / 1000000 )) -ge 450 ]
}
t_reload() {  # new workers, and `systemctl reload` returns only once they are ready
    local before after t0 ms
    before="$(get /run/sidecar/sidecar.sock / | tr -d '\n')"
    touch "$ROOT/srv/sidecar/slow"
    t0="$(date +%s%N)"
    C systemctl reload sidecar.service
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    rm -f "$ROOT/srv/sidecar/slow"
    after="$(get /run/sidecar/sidecar.sock / | tr -d '\n')"
    echo "reload took ${ms} ms; before: $before; after: $after"
    [ "$ms" -ge 2900 ] && [ -n "$after" ] && [ "$before" != "$after" ]
}
t_failed_reload() {  # systemctl reload fails; the old workers keep serving, the service is up
    local before after i
    before="$(for i in 1 2 3 4 5 6; do get /run/sidecar/sidecar.sock / | cut -d' ' -f1; done \
              | sort -u | tr '\n' ' ')"
    touch "$ROOT/srv/sidecar/fail"
    if C systemctl reload sidecar.service; then
        rm -f "$ROOT/srv/sidecar/fail"
        echo "systemctl reload succeeded although the new workers failed their startup"
        return 1
    fi
    rm -f "$ROOT/srv/sidecar/fail"
    after="$(for i in 1 2 3 4 5 6; do get /run/sidecar/sidecar.sock / | cut -d' ' -f1; done \
             | sort -u | tr '\n' ' ')"
    echo "before: $before after: $after"
    C journalctl -u sidecar.service --no-pager | grep "reload failed" >/dev/null \
        && [ "$(C systemctl is-active sidecar.service)" = active ] && [ -n "$after" ] \
        && [ "$before" = "$after" ] && return 0
    C journalctl -u sidecar.service --no-pager -n 40
    return 1
}
t_kill9() {
    local pid
    pid="$(main_pid)"
    C sh -c "kill -KILL $pid"  # the shell's kill: minbase has no procps
    for _ in $(seq 100); do
        [ "$(main_pid)" != "$pid" ] && [ "$(main_pid)" != 0 ] && break
        sleep 0.1
    done
    wait_active && [ "$(main_pid)" != "$pid" ]
}
t_watchdog() {  # WatchdogSec=4 (drop-in): a stopped loop stops the pings
    local pid
    pid="$(main_pid)"
    C sh -c "kill -STOP $pid"
    for _ in $(seq 300); do  # journald may log the result a moment after the restart
        [ "$(main_pid)" != "$pid" ] && [ "$(main_pid)" != 0 ] \
            && C journalctl -u sidecar.service --no-pager \
               | grep "Failed with result 'watchdog'" >/dev/null && wait_active && return 0
        sleep 0.1
    done
    echo "main pid before: $pid, now: $(main_pid)"
    C journalctl -u sidecar.service --no-pager | tail -15
    return 1
}
t_exposure() {
    local score
    score="$(C systemd-analyze security sidecar.service --no-pager 2>/dev/null \
             | sed -n 's/.*Overall exposure level for sidecar.service: \([0-9.]*\).*/\1/p')"
    echo "exposure $score"
    [ -n "$score" ] && awk -v s="$score" 'BEGIN {exit !(s <= 2.0)}'
}
t_template() {
    C systemctl is-active sidecar@check.socket \
        && get /run/sidecar/check.sock / | grep pid= >/dev/null \
        && C systemctl reload sidecar@check.service \
        && C /opt/sidecar/.venv/bin/sidecar status --control /run/sidecar/check/control.sock
}
t_stop_start() {  # a clean stop leaves no shared memory; the socket starts it again
    C systemctl stop sidecar.service sidecar@check.service || return 1
    C journalctl -u sidecar.service --no-pager | tail -3
    [ -z "$(C ls -A /dev/shm)" ] || { C ls -la /dev/shm; return 1; }
    [ "$(C systemctl is-active sidecar.socket)" = active ] || return 1
    get /run/sidecar/sidecar.sock / | grep pid= >/dev/null && wait_active
}

check "socket active, READY=1 after startup, STATUS= shows the workers" t_ready
check "dynamic user, no capabilities, NoNewPrivs, seccomp filter" t_user
check "socket root:www-data 0660, control socket 0600, sidecar status" t_perms
check "nginx -> socket: GET, SSE event by event" t_nginx
check "systemctl reload: new workers, returns once they serve" t_reload
check "failed reload: systemctl reload fails, the old workers keep serving" t_failed_reload
check "kill -9: restarted by Restart=on-failure" t_kill9
check "watchdog: a stopped front-end is killed and restarted" t_watchdog
check "systemd-analyze security: exposure <= 2.0" t_exposure
check "template unit sidecar@check" t_template
check "stop: /dev/shm empty; the socket starts the service again" t_stop_start

say "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
