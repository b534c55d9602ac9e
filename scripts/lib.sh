# Shared by scripts/container.sh and scripts/systemd-container.sh (sourced, not run).
# The caller sets NAME (the prefix of its lines) and the counters passed=0 failed=0, and may
# set CHECK_TAIL (lines of a failed check's output shown; 40).

say() { printf '%s: %s\n' "$NAME" "$*"; }
die() { say "SETUP FAILED: $*" >&2; exit 2; }

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
        printf '%s\n' "$out" | tail -"${CHECK_TAIL:-40}" | sed 's/^/      /'
    fi
}

debian_mirror() {  # the host's Debian mirror, from /etc/apt (deb822 or one-line sources)
    local mirror
    mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
    [ -n "$mirror" ] || mirror="$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt"
    printf '%s\n' "$mirror"
}
