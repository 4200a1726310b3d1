#!/usr/bin/env bash
# Memory per connected WSS client, and where it goes (benches/results/memory.md).
#
#   bash benches/memory.sh                      # RSS per client at N = 2000 and 5000
#   bash benches/memory.sh --sizes 2000         # other sizes
#   bash benches/memory.sh --owners 500,1000    # plus the live heap per client by owner
#
# Options: --sizes N,N.. [2000,5000], --bin PROXY [target/release/roundabout],
#          --gen GENERATOR [target/release/examples/wss_clients], --owners N1,N2 (heaptrack
#          the proxy at N1 and at N2 clients; the breakdown is the difference / (N2 - N1), so
#          what every run holds anyway cancels out), --trim (also read the RSS after
#          malloc_trim(0), called in the proxy with gdb: what glibc holds free).
# Needs: ss; heaptrack and python3 for --owners; gdb for --trim.
#
# Each size runs a fresh proxy on 127.0.6.1 (WSS 17443, UDP 17061) from an empty temp dir
# (it makes its self-signed certificate), -trusted-server 127.0.6.4::17070:udp: -strict-host
# -max-connections 0 -max-connections-per-ip 0 -pike-limit 0 -log-level warn. The generator
# (examples/wss_clients.rs) opens N WSS connections from 127.0.7.1-8, registers one user on
# each through the proxy to its own UDP registrar (127.0.6.4:17070), re-registers each
# once, makes 20 calls, and reads the proxy's VmRSS before the first connection (idle) and
# with all N connected; RSS per client = (connected - idle) / N. For --owners the proxy
# runs under heaptrack and is killed (SIGKILL) while its N clients are connected, so what
# heaptrack reports as leaked is what was live; benches/memory_owners.py sorts it by owner.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZES=2000,5000 BIN=$ROOT/target/release/roundabout GEN=$ROOT/target/release/examples/wss_clients
OWNERS="" TRIM=0
while [ $# -gt 0 ]; do
    case $1 in
        --sizes) SIZES=$2; shift ;;
        --bin) BIN=$2; shift ;;
        --gen) GEN=$2; shift ;;
        --owners) OWNERS=$2; shift ;;
        --trim) TRIM=1 ;;
        *) echo "unknown option $1 (see the top of $0)" >&2; exit 2 ;;
    esac
    shift
done
for f in "$BIN" "$GEN"; do
    [ -x "$f" ] || { echo "$f is missing: cargo build --release --bin roundabout --example wss_clients" >&2; exit 2; }
done
WORK=$(mktemp -d /tmp/roundabout-memory.XXXXXX)
PROXY="" HT=""
cleanup() { [ -n "$PROXY" ] && kill "$PROXY" 2>/dev/null; [ -n "$HT" ] && kill "$HT" 2>/dev/null; }
trap cleanup EXIT

listening() { # wait up to 20 s for the WSS port
    local i
    for i in $(seq 100); do ss -Htln "( sport = :17443 )" | grep -q . && return 0; sleep 0.2; done
    return 1
}

# one run: $1 N, $2 dir, $3 "heaptrack" (or empty); sets PROXY (and HT)
run() {
    local n=$1 dir=$2 i
    mkdir -p "$dir"
    local args=(-local-ip 127.0.6.1 -udp-port 17061 -tcp-port 0 -tls-port 0 -ws-port 0
        -wss-port 17443 -trusted-server 127.0.6.4::17070:udp: -strict-host -max-connections 0
        -max-connections-per-ip 0 -pike-limit 0 -log-level warn)
    if [ "$3" = heaptrack ]; then
        (cd "$dir" && exec heaptrack -o "$dir/heap" "$BIN" "${args[@]}" >proxy.log 2>&1) &
        HT=$!
        listening || { echo "the proxy did not start: $dir/proxy.log" >&2; exit 1; }
        PROXY=$(pgrep -P "$HT" -n roundabout)
    else
        (cd "$dir" && exec "$BIN" "${args[@]}" >proxy.log 2>&1) &
        PROXY=$!
        listening || { echo "the proxy did not start: $dir/proxy.log" >&2; exit 1; }
    fi
    sleep 1
    timeout 300 "$GEN" --proxy 127.0.6.1:17443 --registrar 127.0.6.4:17070 \
        --sources 127.0.7.1-8 -n "$n" --pids "$PROXY" --calls 20 --timeout 240 \
        --ready-file "$dir/ready" --release-file "$dir/release" >"$dir/gen.out" 2>"$dir/gen.err" &
    local gen=$!
    for i in $(seq 1200); do [ -e "$dir/ready" ] || ! kill -0 $gen 2>/dev/null && break; sleep 0.2; done
    if [ "$3" = heaptrack ]; then
        kill -KILL "$PROXY"; wait "$HT" 2>/dev/null; HT=""
    elif [ $TRIM = 1 ]; then
        local before after
        before=$(awk '/^VmRSS/ {print $2}' /proc/$PROXY/status)
        gdb -p "$PROXY" -batch -ex 'call (int)malloc_trim(0)' >/dev/null 2>&1
        after=$(awk '/^VmRSS/ {print $2}' /proc/$PROXY/status)
        echo "RESULT trim_saved_per_client_bytes=$(( (before - after) * 1024 / n ))" >>"$dir/trim.out"
    fi
    touch "$dir/release"
    wait $gen
    kill "$PROXY" 2>/dev/null; wait "$PROXY" 2>/dev/null; PROXY=""
}

printf '| N | registered | idle RSS (KiB) | connected RSS (KiB) | RSS per client (bytes) | malloc_trim would free (bytes per client) |\n|---|---|---|---|---|---|\n'
for n in ${SIZES//,/ }; do
    d=$WORK/n$n
    run "$n" "$d" ""
    r() { sed -n "s/^RESULT $1=//p" "$d/gen.out" "$d/trim.out" 2>/dev/null | tail -1; }
    printf '| %s | %s | %s | %s | %s | %s |\n' "$n" "$(r reg_ok)" "$(r mem0_rss_kb)" \
        "$(r mem3_rss_kb)" "$(r per_client_rss_bytes)" "$(r trim_saved_per_client_bytes)"
done
if [ -n "$OWNERS" ]; then
    n1=${OWNERS%,*} n2=${OWNERS#*,}
    for n in "$n1" "$n2"; do
        run "$n" "$WORK/heap$n" heaptrack
        heaptrack_print -f "$WORK/heap$n/heap.zst" --print-peaks 0 --print-allocators 0 \
            --print-temporary 0 --print-leaks 0 --flamegraph-cost-type leaked \
            -F "$WORK/heap$n/live.txt" >/dev/null 2>&1
    done
    echo
    python3 "$ROOT/benches/memory_owners.py" "$WORK/heap$n1/live.txt" "$n1" "$WORK/heap$n2/live.txt" "$n2"
fi
echo "raw output: $WORK" >&2
