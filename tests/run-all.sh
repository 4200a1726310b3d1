#!/usr/bin/env bash
# Roundabout's test command: bash tests/run-all.sh [FILTER / libtest args...]
#
# 1. installs what the end-to-end tests need when it is missing (Debian 12: SIPp, Kamailio
#    with WebSocket and TLS modules, Chromium, openssl, systemd-analyze, procps, dnsmasq; mmdebstrap,
#    podman and buildah for the container image test; the npm packages of tests/browser
#    from its lock file);
# 2. checks the loopback addresses 127.0.0.1-9 the peers bind to;
# 3. builds (cargo build --release --locked) and runs every test
#    (cargo test --release --locked -- --test-threads=4 ARGS), ARGS being this script's
#    arguments: a test name filter and/or libtest flags, e.g. `bash tests/run-all.sh sipp_call`
#    or `bash tests/run-all.sh --nocapture`;
# 4. ends every peer process a test left behind (their ids are under $ROUNDABOUT_E2E_DIR/pids).
#
# Idempotent: a second run installs nothing. Bounded: apt, npm, the build and the tests each
# run under `timeout` (RUN_ALL_BUILD_TIMEOUT, RUN_ALL_TEST_TIMEOUT seconds override the
# last two).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

build_timeout=${RUN_ALL_BUILD_TIMEOUT:-2400}
test_timeout=${RUN_ALL_TEST_TIMEOUT:-2400}

log() { printf 'run-all: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# --- 1. system packages -------------------------------------------------------------------

# kamailio lives in /usr/sbin, not always in a user's PATH
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin" ;; esac
export PATH

dpkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# package:command (the command proves the package; without one, dpkg is asked)
wanted=(
    sip-tester:sipp
    kamailio:kamailio
    kamailio-websocket-modules:
    kamailio-tls-modules:
    chromium:chromium
    openssl:openssl
    systemd:systemd-analyze
    procps:pgrep
    pkg-config:pkg-config
    libssl-dev:
    # tests/routing_dns.rs: a DNS server for NAPTR, SRV and A records (the binary only,
    # no system service)
    dnsmasq-base:
    # tests/container.rs: base image from Debian packages, image build, run in the image
    mmdebstrap:mmdebstrap
    podman:podman
    buildah:buildah
)
command -v npm >/dev/null 2>&1 || wanted+=(nodejs:node npm:npm)

missing=()
for entry in "${wanted[@]}"; do
    pkg=${entry%%:*}
    cmd=${entry#*:}
    if [ -n "$cmd" ]; then
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    else
        dpkg_installed "$pkg" || missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 -q)
    as_root timeout 600 "${apt[@]}" update
    as_root timeout 1200 "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
fi

# --- npm packages for the browser tests ----------------------------------------------------

browser="$repo/tests/browser"
# npm ci writes node_modules/.package-lock.json: older than the lock means out of date
if [ ! -f "$browser/node_modules/.package-lock.json" ] \
    || [ "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]; then
    log "npm ci in tests/browser"
    (cd "$browser" && timeout 600 npm ci --no-audit --no-fund --prefer-offline)
fi

# --- 2. loopback addresses -----------------------------------------------------------------

loopback_usable() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind((sys.argv[1], 0))' "$1" \
            2>/dev/null
    elif command -v ip >/dev/null 2>&1; then
        ip route get "$1" 2>/dev/null | grep -q '^local '
    else
        true # Linux routes all of 127.0.0.0/8 to lo
    fi
}
for n in 1 2 3 4 5 6 7 8 9; do
    addr=127.0.0.$n
    if ! loopback_usable "$addr"; then
        log "adding $addr to lo"
        as_root ip addr add "$addr/8" dev lo
        loopback_usable "$addr" || die "cannot bind $addr"
    fi
done

# --- peers' versions -----------------------------------------------------------------------

first_line() { "$@" 2>/dev/null | grep -m1 . | tr -s ' ' || true; }
npm_version() { node -p "require('$browser/node_modules/$1/package.json').version" 2>/dev/null || echo '?'; }
log "peers: $(first_line sipp -v | sed 's/^ //') | $(first_line kamailio -v) | $(first_line chromium --version) |" \
    "node $(node --version) | playwright-core $(npm_version playwright-core) | jssip $(npm_version jssip)"

# --- 4. leftover peers ---------------------------------------------------------------------

export ROUNDABOUT_E2E_DIR="$repo/target/tmp/e2e-run"

# Ends the process groups whose ids the tests recorded and did not remove (a test process
# that died, or was stopped by the timeout, before dropping its peers).
stop_leftovers() {
    local pids="$ROUNDABOUT_E2E_DIR/pids" file pgid left=()
    [ -d "$pids" ] || return 0
    for file in "$pids"/*; do
        [ -f "$file" ] || continue
        pgid=${file##*/}
        case "$pgid" in '' | *[!0-9]*) continue ;; esac
        if pgrep -g "$pgid" >/dev/null 2>&1; then
            log "stopping leftover process group $pgid ($(head -n1 "$file"))"
            kill -s TERM -- "-$pgid" 2>/dev/null || true
            left+=("$pgid")
        fi
        rm -f "$file"
    done
    [ ${#left[@]} -gt 0 ] || return 0
    local alive _
    for _ in $(seq 50); do # up to 5 s for SIGTERM to work
        alive=0
        for pgid in "${left[@]}"; do
            pgrep -g "$pgid" >/dev/null 2>&1 && alive=1
        done
        [ "$alive" = 0 ] && return 0
        sleep 0.1
    done
    for pgid in "${left[@]}"; do kill -s KILL -- "-$pgid" 2>/dev/null || true; done
}

stop_leftovers
rm -rf "$ROUNDABOUT_E2E_DIR"
mkdir -p "$ROUNDABOUT_E2E_DIR"
trap stop_leftovers EXIT

# --- 3. build and test ---------------------------------------------------------------------

timeout --kill-after=30 "$build_timeout" cargo build --release --locked
timeout --kill-after=30 "$test_timeout" cargo test --release --locked -- --test-threads=4 "$@"
