#!/usr/bin/env bash
# Roundabout connected-clients benchmark: N WSS clients registered through the proxy,
# Roundabout and Kamailio (as a WSS edge) side by side, same machine, same run.
#
#   bash benches/clients.sh            # N = 10,000 and 50,000 -> benches/results/clients.md
#   bash benches/clients.sh --quick    # N = 2,000             -> benches/results/clients-quick.md
#
# Options: --quick, --sizes 10000,50000, --proxies roundabout,kamailio, --no-build,
#          --hold S (keep the clients connected S s more after the calls; default 0),
#          --calls K (sampled users called; default 200), --keep (keep the raw logs dir).
# Needs: kamailio with kamailio-tls-modules and kamailio-websocket-modules, openssl, taskset,
#        ss; the file-descriptor limit is raised with `ulimit -n 200000` (root with
#        CAP_SYS_RESOURCE); when the hard limit cannot be raised, a size that does not fit is
#        run at the largest one that does, and the table says so.
#
# What runs, for each proxy and size N (a fresh proxy each time):
#   target/release/examples/wss_clients (examples/wss_clients.rs, CPU 1) opens N WSS
#   connections from 127.0.1.1-8 (bound before connect; the ephemeral port range is per
#   source address) to the proxy (CPU 0), 200 handshakes + registrations in flight, and
#   registers sip:uNNNNN@127.0.3.4:15070 over each; the generator is also the registrar
#   (UDP 127.0.3.4:15070: 200 with the Contact echoed, expires=3600, Path kept). Then every
#   client re-registers once over its open connection, the registrar calls 200 sampled
#   users (INVITE/200/ACK/BYE/200 through the proxy; each must arrive on the connection of
#   its user), and the clients stay connected with WebSocket pings (every 25 s each).
#   Roundabout: 127.0.3.1, WSS 15443, UDP 15061, run from an empty temp dir (so it makes its
#     self-signed certificate), -trusted-server 127.0.3.4::15070:udp: -strict-host
#     -max-connections 0 -max-connections-per-ip 0 -pike-limit 0 -log-level warn, taskset -c 0.
#   Kamailio: 127.0.3.5, benches/kamailio-wss.cfg (tls + xhttp + websocket, Path with
#     received, nathelper alias), self-signed P-256 certificate made with openssl (the same
#     kind as Roundabout's), 1 UDP + 1 TCP worker, -m 6144 -M 32, taskset -c 0.
# Measured (by the generator, from /proc): registrations per second (first registration,
# including TCP + TLS + WebSocket handshakes, and re-registration over open connections);
# proxy CPU per registration; the proxy's memory idle (before the first connection) and
# after the registrations and calls: VmRSS and PSS summed over its processes (Kamailio:
# main, workers, timers, TCP main...; its shared memory is counted once per process in RSS,
# once in all in PSS). Per client = (after - idle) / N.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2

QUICK=0 BUILD=1 KEEP=0 HOLD=0 CALLS=200
SIZES="10000,50000"
PROXIES="roundabout,kamailio"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; SIZES=2000 ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --sizes) SIZES=$2; shift ;;
        --proxies) PROXIES=$2; shift ;;
        --hold) HOLD=$2; shift ;;
        --calls) CALLS=$2; shift ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed 's/^# \{0,1\}//; /^set -u/d'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ $QUICK = 1 ]; then OUT_MD=benches/results/clients-quick.md MODE=quick
else OUT_MD=benches/results/clients.md MODE=full; fi

IP_RBT=127.0.3.1 IP_REG=127.0.3.4 IP_KAM=127.0.3.5
PORT_WSS=15443 PORT_RBT_UDP=15061 PORT_REG=15070 PORT_KAM_UDP=15080
SOURCES=127.0.1.1-8

for tool in kamailio openssl taskset ss awk; do
    command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 2; }
done

# file descriptors: one per connection in the proxy (Kamailio: in its TCP main process) and
# in the generator
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)
MAX_N=$(( (FD_LIMIT - 500) / 1000 * 1000 ))

STAMP=$(date +%Y%m%d-%H%M%S)
RUN=$ROOT/target/bench/clients-$STAMP-$MODE
mkdir -p "$RUN" benches/results || exit 2
LOG=$RUN/steps.log
T0=$(date +%s)
say() { echo "$*" | tee -a "$LOG"; }

STARTED=()
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 0.5
    for pid in "${STARTED[@]}"; do kill -9 "$pid" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ $BUILD = 1 ]; then
    say "building: cargo build --release --locked --bin roundabout --example wss_clients"
    cargo build --release --locked --bin roundabout --example wss_clients 2>&1 | tail -1
fi
# our own copies: the shared target dir may be rebuilt by someone else during the run
cp target/release/roundabout "$RUN/roundabout" || exit 2
cp target/release/examples/wss_clients "$RUN/wss_clients" || exit 2

tree_pids() {
    local all=" $1 " frontier="$1" next p c
    while [ -n "$frontier" ]; do
        next=""
        for p in $frontier; do
            for c in $(cat /proc/$p/task/*/children 2>/dev/null); do
                case "$all" in *" $c "*) ;; *) all="$all$c "; next="$next $c" ;; esac
            done
        done
        frontier=$next
    done
    echo $all
}
wait_listen() { # proto ip:port
    local i flag
    [ "$1" = udp ] && flag=-uln || flag=-tln
    for i in $(seq 100); do
        ss -H $flag "src $2" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    return 1
}
stop_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}
cpu_busy() { awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# Kamailio's TLS identity: a throw-away self-signed P-256 certificate, as Roundabout makes
KDIR=$RUN/kamailio-tls
mkdir -p "$KDIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$KDIR/key.pem" -out "$KDIR/cert.pem" -days 2 -subj "/CN=$IP_KAM" 2>/dev/null || {
    echo "openssl could not make a certificate" >&2; exit 2; }
cat >"$KDIR/tls.cfg" <<EOF
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = $KDIR/key.pem
certificate = $KDIR/cert.pem

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
EOF

PROXY_PID="" PROXY_WSS=""
start_proxy() { # $1 proxy, $2 dir, $3 max connections
    mkdir -p "$2"
    if [ "$1" = roundabout ]; then
        PROXY_WSS=$IP_RBT:$PORT_WSS
        (cd "$2" && exec taskset -c 0 "$RUN/roundabout" -local-ip $IP_RBT \
            -udp-port $PORT_RBT_UDP -tcp-port 0 -tls-port 0 -ws-port 0 -wss-port $PORT_WSS \
            -strict-host -trusted-server "$IP_REG::$PORT_REG:udp:" \
            -max-connections 0 -max-connections-per-ip 0 -pike-limit 0 -log-level warn \
            >"$2/proxy.log" 2>&1) &
        PROXY_PID=$!
        STARTED+=("$PROXY_PID")
        wait_listen udp $IP_RBT:$PORT_RBT_UDP && wait_listen tcp $PROXY_WSS || {
            say "!! roundabout did not start"; tail -5 "$2/proxy.log"; return 1; }
    else
        PROXY_WSS=$IP_KAM:$PORT_WSS
        (cd "$2" && exec taskset -c 0 kamailio -f "$ROOT/benches/kamailio-wss.cfg" -DD -E \
            -m 6144 -M 32 -w "$2" -Y "$2" -P "$2/kamailio.pid" \
            -A "TLS_CFG=\"$KDIR/tls.cfg\"" -A "MAX_CONN=$(( $3 + 1000 ))" \
            -l udp:$IP_KAM:$PORT_KAM_UDP -l tls:$PROXY_WSS >"$2/proxy.log" 2>&1) &
        PROXY_PID=$!
        STARTED+=("$PROXY_PID")
        wait_listen udp $IP_KAM:$PORT_KAM_UDP && wait_listen tcp $PROXY_WSS || {
            say "!! kamailio did not start"; tail -5 "$2/proxy.log"; return 1; }
    fi
    sleep 1.5 # let it finish starting (Kamailio forks its workers)
}

declare -A R
ROWS=()
bench_one() { # $1 proxy, $2 requested N
    local proxy=$1 want=$2 n=$2 note="" dir
    if [ "$n" -gt "$MAX_N" ]; then
        n=$MAX_N
        note="ran $n, not $want: the file-descriptor hard limit is $FD_LIMIT (ulimit -n 200000 refused: no CAP_SYS_RESOURCE here)"
    fi
    local key="$proxy/$want"
    dir=$RUN/$proxy-$n
    say "== $proxy, N = $n$([ -n "$note" ] && echo " ($note)")"
    start_proxy "$proxy" "$dir" "$n" || { R[$key.note]="did not start"; ROWS+=("$key"); return; }
    local pids c0 c1 w0 w1 rc
    pids=$(tree_pids $PROXY_PID | tr ' ' ',')
    c0=$(cpu_busy 0) w0=$(date +%s%N)
    timeout $(( n / 50 + 300 )) taskset -c 1 "$RUN/wss_clients" -n "$n" --proxy "$PROXY_WSS" \
        --registrar $IP_REG:$PORT_REG --sources $SOURCES --concurrency 200 --calls "$CALLS" \
        --pids "$pids" --settle 3 --hold "$HOLD" --timeout $(( n / 50 + 240 )) \
        >"$dir/gen.out" 2>"$dir/gen.err"
    rc=$?
    c1=$(cpu_busy 0) w1=$(date +%s%N)
    local r
    while read -r _ r; do R[$key.${r%%=*}]=${r#*=}; done < <(grep '^RESULT ' "$dir/gen.out")
    R[$key.rc]=$rc R[$key.n]=$n R[$key.note]=$note
    R[$key.load]=$(cut -d' ' -f1-3 /proc/loadavg)
    R[$key.cpu0]=$(awk -v b=$((c1 - c0)) -v w0=$w0 -v w1=$w1 -v hz="$(getconf CLK_TCK)" \
        'BEGIN{printf "%.0f", b / hz / ((w1 - w0) / 1e9) * 100}')
    ROWS+=("$key")
    grep -v '^RESULT' "$dir/gen.err" | tail -8 | sed 's/^/   /' | tee -a "$LOG"
    say "   rc $rc: registered ${R[$key.reg_ok]:-?}/$n (${R[$key.reg_per_s]:-?}/s), re-registered ${R[$key.rereg_ok]:-?} (${R[$key.rereg_per_s]:-?}/s), calls ${R[$key.calls_ok]:-?}/${R[$key.calls]:-?}, per client RSS ${R[$key.per_client_rss_bytes]:-?} B PSS ${R[$key.per_client_pss_bytes]:-?} B, lost ${R[$key.connections_lost]:-?}; CPU 0 busy ${R[$key.cpu0]}%"
    stop_pid $PROXY_PID
    # the generator's connections linger in TIME_WAIT a while; the proxy's sockets must be gone
    sleep 2
}

say "Roundabout connected-clients benchmark ($MODE), raw logs in $RUN"
say "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg); fd limit $FD_LIMIT"
for n in ${SIZES//,/ }; do
    for proxy in ${PROXIES//,/ }; do
        bench_one "$proxy" "$n"
    done
done
T1=$(date +%s)

kib() { awk -v b="$1" 'BEGIN{ if (b == "") print "-"; else printf "%.1f", b / 1024 }'; }
mib() { awk -v k="$1" 'BEGIN{ if (k == "") print "-"; else printf "%.0f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
GEN_BOUND=85
est() { awk -v c="$1" 'BEGIN{ if (c + 0 > 0) printf "%.0f", 1000 / c; else print "-" }'; }
# a rate at which the generator used >= GEN_BOUND % of its CPU is its limit, not the proxy's
bound() { if [ "$2" -ge $GEN_BOUND ] 2>/dev/null; then echo ">= $1 (generator-bound)"; else echo "$1"; fi; }
rbound() { local r; r=$(ratio "$1" "$2")
    if [ "$3" -ge $GEN_BOUND ] && [ "$4" -ge $GEN_BOUND ]; then echo "n/a (both generator-bound)"
    elif [ "$3" -ge $GEN_BOUND ]; then echo ">= $r"; else echo "$r"; fi; }
RBT_VERSION=$("$RUN/roundabout" -version 2>&1 | head -1)
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src actors Cargo.toml 2>/dev/null || echo "+local changes")
{
echo "# Roundabout vs Kamailio: connected WSS clients ($MODE)"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), $((T1 - T0)) s"
echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r); open-files limit $FD_LIMIT"
echo "- versions: $RBT_VERSION (git $GIT_REV), $(kamailio -v 2>/dev/null | head -1 | sed 's/^version: //'), $(openssl version | cut -d' ' -f1-2)"
echo "- pinning: proxy on CPU 0 (taskset), generator + registrar (examples/wss_clients.rs) on CPU 1"
echo "- per client: TCP + TLS (self-signed P-256 certificate) + WebSocket (sip) from 127.0.1.1-8, REGISTER through the proxy to a UDP registrar (200, Contact echoed, expires 3600), one re-REGISTER over the open connection, WebSocket ping every 25 s; then $CALLS sampled users called from the registrar (INVITE/200/ACK/BYE/200)"
echo "- command: \`bash benches/clients.sh$([ $QUICK = 1 ] && echo ' --quick')\`"
echo
echo "| proxy | clients N | registered / failed | registrations/s (connect+TLS+WS+REGISTER) | proxy CPU ms per registration | registrations/s per core est. | re-REGISTER/s | proxy CPU ms per re-REGISTER | calls answered on the right connection | connections lost | proxy RSS idle -> connected (MiB) | RSS per client (KiB) | PSS per client (KiB) | load avg / CPU 0 busy |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for key in "${ROWS[@]}"; do
    proxy=${key%/*}
    echo "| $proxy | ${R[$key.n]:-${key#*/}} | ${R[$key.reg_ok]:--} / ${R[$key.reg_failed]:--} | $(bound "${R[$key.reg_per_s]:--}" "${R[$key.gen_cpu_pct_reg]:-0}") | ${R[$key.cpu_ms_per_reg]:--} | $(est "${R[$key.cpu_ms_per_reg]:-}") | $(bound "${R[$key.rereg_per_s]:--}" "${R[$key.gen_cpu_pct_rereg]:-0}") | ${R[$key.cpu_ms_per_rereg]:--} | ${R[$key.calls_ok]:--} / ${R[$key.calls]:--} | ${R[$key.connections_lost]:--} | $(mib "${R[$key.mem0_rss_kb]:-}") -> $(mib "${R[$key.mem2_rss_kb]:-}") | $(kib "${R[$key.per_client_rss_bytes]:-}") | $(kib "${R[$key.per_client_pss_bytes]:-}") | ${R[$key.load]:--} / ${R[$key.cpu0]:--} % |"
done
for n in ${SIZES//,/ }; do
    r=roundabout/$n k=kamailio/$n
    [ -n "${R[$r.reg_ok]:-}" ] && [ -n "${R[$k.reg_ok]:-}" ] || continue
    echo "| **Roundabout / Kamailio** | ${R[$r.n]} | | $(rbound "${R[$r.reg_per_s]}" "${R[$k.reg_per_s]}" "${R[$r.gen_cpu_pct_reg]:-0}" "${R[$k.gen_cpu_pct_reg]:-0}") | $(ratio "${R[$r.cpu_ms_per_reg]}" "${R[$k.cpu_ms_per_reg]}") | $(ratio "$(est "${R[$r.cpu_ms_per_reg]}")" "$(est "${R[$k.cpu_ms_per_reg]}")") | $(rbound "${R[$r.rereg_per_s]}" "${R[$k.rereg_per_s]}" "${R[$r.gen_cpu_pct_rereg]:-0}" "${R[$k.gen_cpu_pct_rereg]:-0}") | $(ratio "${R[$r.cpu_ms_per_rereg]}" "${R[$k.cpu_ms_per_rereg]}") | | | | $(ratio "${R[$r.per_client_rss_bytes]}" "${R[$k.per_client_rss_bytes]}") | $(ratio "${R[$r.per_client_pss_bytes]}" "${R[$k.per_client_pss_bytes]}") | |"
done
echo
echo "How to read it: \"registered / failed\" counts first registrations (a failure is a refused"
echo "or broken TCP/TLS/WebSocket connection, a non-2xx or no answer within 34 s); every client"
echo "also re-registers once and all must succeed. Memory is read from /proc by the generator:"
echo "idle = before the first connection, connected = after the registrations, the calls and"
echo "3 s of settling, all clients still connected. RSS per client = (connected - idle) / N of"
echo "VmRSS summed over the proxy's processes; Kamailio's shared memory (TLS and connection"
echo "state live there) is resident in several of its processes, so its summed RSS counts it"
echo "more than once: PSS (smaps_rollup, shared pages divided among the processes mapping"
echo "them) is the fair comparison. For Roundabout (one process) RSS and PSS agree."
echo "Registrations/s: N / the time from the first connection to the last 200 (200 in flight)."
echo "Proxy CPU per registration: utime+stime of the proxy over that phase / N (same for"
echo "re-REGISTER). \"generator-bound\": the generator (one thread on CPU 1, TLS client side"
echo "included) used >= ${GEN_BOUND} % of its CPU during the phase, so the proxy's own ceiling is"
echo "higher: compare the proxy's CPU per registration instead. \"per core est.\" = 1000 / proxy"
echo "CPU ms per registration: the rate at which the proxy would fill its core."
for key in "${ROWS[@]}"; do
    [ -n "${R[$key.note]:-}" ] && echo "- note $key: ${R[$key.note]}"
    [ "${R[$key.rc]:-1}" != 0 ] && echo "- note $key: generator exit code ${R[$key.rc]:-?} (all_ok=${R[$key.all_ok]:-?}; fail: connect ${R[$key.fail_connect]:-?}, TLS ${R[$key.fail_tls]:-?}, WS ${R[$key.fail_ws]:-?}, answer ${R[$key.fail_reg_answer]:-?}, timeout ${R[$key.fail_reg_timeout]:-?}; re-register failed ${R[$key.rereg_failed]:-?})"
done
} >"$RUN/report.md"
cp "$RUN/report.md" "$OUT_MD"
cat "$OUT_MD"
echo
echo "written to $OUT_MD (raw logs: $RUN)"
