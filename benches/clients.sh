#!/usr/bin/env bash
# Roundabout connected-clients benchmark: N WSS clients registered through the proxy,
# Roundabout and Kamailio (as a WSS edge) side by side, same machine, same run.
#
#   bash benches/clients.sh            # N = 10,000 and 50,000 -> benches/results/clients.md
#   bash benches/clients.sh --quick    # N = 2,000             -> benches/results/clients-quick.md
#
# Options: --quick, --sizes 10000,50000, --proxies roundabout,kamailio, --no-build,
#          --hold S (keep the clients connected S s more after the calls; default 0),
#          --calls K (sampled users called; default 200), --keep (keep the raw logs dir),
#          --storm-cap C (reconnections in flight during the storm, over all generator
#          processes; default 2000).
# Needs: kamailio with kamailio-tls-modules and kamailio-websocket-modules, openssl, taskset,
#        ss; the file-descriptor limit is raised with `ulimit -n 200000` (root with
#        CAP_SYS_RESOURCE). When the hard limit cannot be raised and N does not fit in one
#        process, K instances of the proxy (each its own address, registrar port and
#        generator process) carry the N clients between them on the same core, all connected
#        at the same time, and the table says so ("roundabout (3 processes)").
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
#   Then the reconnect storm (wss_clients --storm): once every generator has registered its
#   clients, this script names a moment 1 s ahead in the release file and at that moment
#   every client of every generator drops its connection (TCP close, no WebSocket or TLS
#   goodbye, as after a restart or a network change); when all are dropped, all reconnect
#   (TCP + TLS + WebSocket + REGISTER), at most --storm-cap in flight over all generators,
#   a failed attempt retried after 200 ms doubling up to 3.2 s, until 120 s; then the 200
#   sampled users are called again and must arrive on their new connections.
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

ARGS="$*"
QUICK=0 BUILD=1 KEEP=0 HOLD=0 CALLS=200 STORM_CAP=2000 STORM_TIMEOUT=120
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
        --storm-cap) STORM_CAP=$2; shift ;;
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
# (for trying the K-process path on a small N: BENCH_MAX_PER_PROCESS=1000)
MAX_N=${BENCH_MAX_PER_PROCESS:-$MAX_N}

STAMP=$(date +%Y%m%d-%H%M%S)
RUN=$ROOT/target/bench/clients-$STAMP-$MODE
mkdir -p "$RUN" benches/results || exit 2
LOG=$RUN/steps.log
T0=$(date +%s)
say() { echo "$*" | tee -a "$LOG"; }
kib() { awk -v b="$1" 'BEGIN{ if (b == "") print "-"; else printf "%.1f", b / 1024 }'; }
mib() { awk -v k="$1" 'BEGIN{ if (k == "") print "-"; else printf "%.0f", k / 1024 }'; }
. "$ROOT/benches/lib.sh"


if [ $BUILD = 1 ]; then
    say "building: cargo build --release --locked --bin roundabout --example wss_clients"
    cargo build --release --locked --bin roundabout --example wss_clients 2>&1 | tail -1
fi
# our own copies: the shared target dir may be rebuilt by someone else during the run
cp target/release/roundabout "$RUN/roundabout" || exit 2
cp target/release/examples/wss_clients "$RUN/wss_clients" || exit 2


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
# instance J of a proxy: its own loopback address (127.0.3.1, .11, .21... for Roundabout;
# .5, .15, .25... for Kamailio) and its own registrar port (PORT_REG + J)
start_proxy() { # $1 proxy, $2 dir, $3 max connections, $4 instance J
    local j=${4:-0} ip
    mkdir -p "$2"
    if [ "$1" = roundabout ]; then
        ip=127.0.3.$((1 + 10 * j))
        PROXY_WSS=$ip:$PORT_WSS
        (cd "$2" && exec taskset -c 0 "$RUN/roundabout" -local-ip $ip \
            -udp-port $PORT_RBT_UDP -tcp-port 0 -tls-port 0 -ws-port 0 -wss-port $PORT_WSS \
            -strict-host -trusted-server "$IP_REG::$((PORT_REG + j)):udp:" \
            -max-connections 0 -max-connections-per-ip 0 -pike-limit 0 -log-level warn \
            >"$2/proxy.log" 2>&1) &
        PROXY_PID=$!
        wait_listen udp $ip:$PORT_RBT_UDP && wait_listen tcp $PROXY_WSS || {
            say "!! roundabout did not start"; tail -5 "$2/proxy.log"; return 1; }
    else
        ip=127.0.3.$((5 + 10 * j))
        PROXY_WSS=$ip:$PORT_WSS
        (cd "$2" && exec taskset -c 0 kamailio -f "$ROOT/benches/kamailio-wss.cfg" -DD -E \
            -m 6144 -M 32 -w "$2" -Y "$2" -P "$2/kamailio.pid" \
            -A "TLS_CFG=\"$KDIR/tls.cfg\"" -A "MAX_CONN=$(( $3 + 1000 ))" \
            -l udp:$ip:$PORT_KAM_UDP -l tls:$PROXY_WSS >"$2/proxy.log" 2>&1) &
        PROXY_PID=$!
        wait_listen udp $ip:$PORT_KAM_UDP && wait_listen tcp $PROXY_WSS || {
            say "!! kamailio did not start"; tail -5 "$2/proxy.log"; return 1; }
    fi
    sleep 1.5 # let it finish starting (Kamailio forks its workers)
}
# server-side WSS connections established right now, over every instance
established() { ss -Htn state established "( sport = :$PORT_WSS )" 2>/dev/null | wc -l; }

declare -A R
ROWS=()
# One row: N clients against one proxy. One process may hold at most FD_LIMIT open files;
# when N needs more, K instances of the proxy (each its own address, registrar and
# generator) carry N between them on the same core, all clients connected at the same time.
bench_one() { # $1 proxy, $2 N
    local proxy=$1 n=$2 key="$1/$2" dir=$RUN/$1-$2
    local k=$(( (n + MAX_N - 1) / MAX_N )) j size note="" pids c0 c1 w0 w1 i
    local -a ppid gpid sizes
    [ "$k" -gt 1 ] && note="$k $proxy processes on the same core shared the $n clients (about $(( n / k )) each): one process may hold at most $FD_LIMIT open files here (hard limit; ulimit -n 200000 refused, no CAP_SYS_RESOURCE). With a higher limit the script runs one process."
    say "== $proxy, N = $n$([ "$k" -gt 1 ] && echo " in $k processes")"
    rm -f "$dir/release"
    for ((j = 0; j < k; j++)); do
        sizes[j]=$(( n / k + (j < n % k ? 1 : 0) ))
        start_proxy "$proxy" "$dir/i$j" "${sizes[j]}" "$j" || {
            R[$key.note]="did not start"; ROWS+=("$key")
            for i in "${ppid[@]}"; do stop_pid "$i"; done; return; }
        ppid[j]=$PROXY_PID
        R[$key.wss$j]=$PROXY_WSS
    done
    c0=$(cpu_busy 0) w0=$(date +%s%N)
    for ((j = 0; j < k; j++)); do
        size=${sizes[j]}
        pids=$(tree_pids "${ppid[j]}" | tr ' ' ',')
        # a job of this script itself (not of a subshell), so that cleanup stops it on exit
        timeout $(( n / 50 + 360 + STORM_TIMEOUT + HOLD )) taskset -c 1 "$RUN/wss_clients" -n "$size" \
            --proxy "${R[$key.wss$j]}" --registrar $IP_REG:$((PORT_REG + j)) --sources $SOURCES \
            --concurrency 200 --calls $(( CALLS / k + (j < CALLS % k ? 1 : 0) )) --pids "$pids" --settle 3 --hold "$HOLD" \
            --timeout $(( n / 50 + 300 + STORM_TIMEOUT + HOLD )) --ready-file "$dir/i$j/ready" \
            --release-file "$dir/release" --storm --storm-concurrency $(( (STORM_CAP + k - 1) / k )) \
            --storm-timeout $STORM_TIMEOUT >"$dir/i$j/gen.out" 2>"$dir/i$j/gen.err" &
        gpid[j]=$!
    done
    # every generator has registered its clients and read its proxy's memory: count the
    # connections all proxies hold at this moment, then let the generators finish
    local t_end=$(( $(date +%s) + n / 50 + 250 )) ready
    while [ "$(date +%s)" -lt $t_end ]; do
        ready=0
        for ((j = 0; j < k; j++)); do
            if [ -e "$dir/i$j/ready" ] || ! kill -0 "${gpid[j]}" 2>/dev/null; then
                ready=$((ready + 1)); fi
        done
        [ $ready = "$k" ] && break
        sleep 0.5
    done
    R[$key.at_once]=$(established)
    # the storm's moment, 1 s ahead (the generators look for the file every 200 ms), the
    # same for every generator; written whole (mv) so that none reads half of it
    echo $(( $(date +%s%3N) + 1000 )) >"$dir/release.tmp" && mv "$dir/release.tmp" "$dir/release"
    for ((j = 0; j < k; j++)); do wait "${gpid[j]}"; echo $? >"$dir/i$j/gen.rc"; done
    c1=$(cpu_busy 0) w1=$(date +%s%N)
    # sum the instances' results: counts and memory add up; the phases ran concurrently, so
    # rates add up too; CPU per registration is weighted by registrations
    local agg
    agg=$(for ((j = 0; j < k; j++)); do
            grep '^RESULT ' "$dir/i$j/gen.out"; echo "RESULT rc=$(cat "$dir/i$j/gen.rc" 2>/dev/null || echo 1)"
          done | awk '
        { split($2, kv, "="); v[kv[1]] += kv[2]; if (kv[1] == "rc" && kv[2] != 0) rc = kv[2]
          if (kv[1] == "reg_ok") ro = kv[2]; if (kv[1] == "rereg_ok") rro = kv[2]
          if (kv[1] == "cpu_ms_per_reg") creg += kv[2] * ro
          if (kv[1] == "cpu_ms_per_rereg") crereg += kv[2] * rro
          if (kv[1] == "all_ok") allok = allok (allok == "" ? "" : ",") kv[2]
          # the storms ran together: their times are the longest one
          if (kv[1] ~ /^storm_(secs|close_ms|wall_ms|pss_sample_ms_max)$/ && kv[2] + 0 > mx[kv[1]] + 0) mx[kv[1]] = kv[2]
          if (kv[1] == "storm_drop_unix_ms") { if (d0 == "" || kv[2] < d0) d0 = kv[2]; if (kv[2] > d1) d1 = kv[2] } }
        END {
          for (x in v) if (x !~ /^(cpu_ms_per_|per_client_|all_ok|rc$|reg_secs|rereg_secs|elapsed|storm_(secs|close_ms|wall_ms|pss_sample_ms_max|drop_unix_ms)$)/) printf "%s=%s\n", x, v[x]
          for (x in mx) printf "%s=%s\n", x, mx[x]
          if (d0 != "") printf "storm_drop_spread_ms=%d\n", d1 - d0
          w = mx["storm_wall_ms"]
          printf "storm_cpu_pct=%.0f\n", w ? v["storm_proxy_cpu_ms"] * 100 / w : 0
          printf "storm_gen_cpu_pct=%.0f\n", w ? v["storm_gen_cpu_ms"] * 100 / w : 0
          printf "storm_cpu_ms_per_reconnect=%.3f\n", v["storm_back"] ? v["storm_proxy_cpu_ms"] / v["storm_back"] : 0
          printf "storm_per_s=%.0f\n", mx["storm_secs"] ? v["storm_back"] / mx["storm_secs"] : 0
          printf "storm_failed=%d\n", v["storm_fail_connect"] + v["storm_fail_tls"] + v["storm_fail_ws"] + v["storm_fail_reg_answer"] + v["storm_fail_reg_timeout"]
          printf "rc=%d\nall_ok=%s\n", rc, allok
          printf "cpu_ms_per_reg=%.3f\n", v["reg_ok"] ? creg / v["reg_ok"] : 0
          printf "cpu_ms_per_rereg=%.3f\n", v["rereg_ok"] ? crereg / v["rereg_ok"] : 0
          printf "per_client_rss_bytes=%.0f\n", v["n"] ? (v["mem2_rss_kb"] - v["mem0_rss_kb"]) * 1024 / v["n"] : 0
          printf "per_client_pss_bytes=%.0f\n", v["n"] ? (v["mem2_pss_kb"] - v["mem0_pss_kb"]) * 1024 / v["n"] : 0
        }')
    local r
    while read -r r; do R[$key.${r%%=*}]=${r#*=}; done <<<"$agg"
    R[$key.n]=$n R[$key.k]=$k R[$key.note]=$note
    R[$key.load]=$(cut -d' ' -f1-3 /proc/loadavg)
    R[$key.cpu0]=$(awk -v b=$((c1 - c0)) -v w0=$w0 -v w1=$w1 -v hz="$(getconf CLK_TCK)" \
        'BEGIN{printf "%.0f", b / hz / ((w1 - w0) / 1e9) * 100}')
    ROWS+=("$key")
    for ((j = 0; j < k; j++)); do
        grep -v '^RESULT' "$dir/i$j/gen.err" | tail -8 | sed "s/^/   [$j] /" | tee -a "$LOG"
    done
    say "   storm: dropped ${R[$key.storm_dropped]:-?} (in ${R[$key.storm_close_ms]:-?} ms; drops ${R[$key.storm_drop_spread_ms]:-?} ms apart over the generators), back ${R[$key.storm_back]:-?}/$n in ${R[$key.storm_secs]:-?} s, failed attempts ${R[$key.storm_failed]:-?}, gave up ${R[$key.storm_gave_up]:-?}, proxy CPU ${R[$key.storm_cpu_pct]:-?} %, RSS $(mib "${R[$key.storm_rss_before_kb]:-}") -> peak $(mib "${R[$key.storm_peak_rss_kb]:-}") MiB, CLOSE_WAIT ${R[$key.storm_proxy_close_wait]:-?}, calls after ${R[$key.storm_calls_ok]:-?}/${R[$key.storm_calls]:-?}"
    say "   rc ${R[$key.rc]}: registered ${R[$key.reg_ok]:-?}/$n (${R[$key.reg_per_s]:-?}/s), connected at once ${R[$key.at_once]}, re-registered ${R[$key.rereg_ok]:-?} (${R[$key.rereg_per_s]:-?}/s), calls ${R[$key.calls_ok]:-?}/${R[$key.calls]:-?}, per client RSS ${R[$key.per_client_rss_bytes]:-?} B PSS ${R[$key.per_client_pss_bytes]:-?} B, lost ${R[$key.connections_lost]:-?}; CPU 0 busy ${R[$key.cpu0]}%"
    for i in "${ppid[@]}"; do stop_pid "$i"; done
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
echo "- command: \`$([ -n "${BENCH_MAX_PER_PROCESS:-}" ] && echo "BENCH_MAX_PER_PROCESS=$BENCH_MAX_PER_PROCESS ")bash benches/clients.sh${ARGS:+ $ARGS}\`"
echo
echo "| proxy | clients N | registered / failed | connected at once | registrations/s (connect+TLS+WS+REGISTER) | proxy CPU ms per registration | registrations/s per core est. | re-REGISTER/s | proxy CPU ms per re-REGISTER | calls answered on the right connection | connections lost | proxy RSS idle -> connected (MiB) | RSS per client (KiB) | PSS per client (KiB) | load avg / CPU 0 busy |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for key in "${ROWS[@]}"; do
    proxy=${key%/*}
    label=$proxy; [ "${R[$key.k]:-1}" -gt 1 ] && label="$proxy (${R[$key.k]} processes)"
    echo "| $label | ${R[$key.n]:-${key#*/}} | ${R[$key.reg_ok]:--} / ${R[$key.reg_failed]:--} | ${R[$key.at_once]:--} | $(bound "${R[$key.reg_per_s]:--}" "${R[$key.gen_cpu_pct_reg]:-0}") | ${R[$key.cpu_ms_per_reg]:--} | $(est "${R[$key.cpu_ms_per_reg]:-}") | $(bound "${R[$key.rereg_per_s]:--}" "${R[$key.gen_cpu_pct_rereg]:-0}") | ${R[$key.cpu_ms_per_rereg]:--} | ${R[$key.calls_ok]:--} / ${R[$key.calls]:--} | ${R[$key.connections_lost]:--} | $(mib "${R[$key.mem0_rss_kb]:-}") -> $(mib "${R[$key.mem2_rss_kb]:-}") | $(kib "${R[$key.per_client_rss_bytes]:-}") | $(kib "${R[$key.per_client_pss_bytes]:-}") | ${R[$key.load]:--} / ${R[$key.cpu0]:--} % |"
done
for n in ${SIZES//,/ }; do
    r=roundabout/$n k=kamailio/$n
    [ -n "${R[$r.reg_ok]:-}" ] && [ -n "${R[$k.reg_ok]:-}" ] || continue
    echo "| **Roundabout / Kamailio** | ${R[$r.n]} | | | $(rbound "${R[$r.reg_per_s]}" "${R[$k.reg_per_s]}" "${R[$r.gen_cpu_pct_reg]:-0}" "${R[$k.gen_cpu_pct_reg]:-0}") | $(ratio "${R[$r.cpu_ms_per_reg]}" "${R[$k.cpu_ms_per_reg]}") | $(ratio "$(est "${R[$r.cpu_ms_per_reg]}")" "$(est "${R[$k.cpu_ms_per_reg]}")") | $(rbound "${R[$r.rereg_per_s]}" "${R[$k.rereg_per_s]}" "${R[$r.gen_cpu_pct_rereg]:-0}" "${R[$k.gen_cpu_pct_rereg]:-0}") | $(ratio "${R[$r.cpu_ms_per_rereg]}" "${R[$k.cpu_ms_per_rereg]}") | | | | $(ratio "${R[$r.per_client_rss_bytes]}" "${R[$k.per_client_rss_bytes]}") | $(ratio "${R[$r.per_client_pss_bytes]}" "${R[$k.per_client_pss_bytes]}") | |"
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
echo "Connected at once: the proxy-side WSS connections in state ESTABLISHED (ss), counted when"
echo "every generator had registered its clients and read the memory. Where a row says"
echo "\"K processes\", one process could not hold N connections here (open-files limit"
echo "$FD_LIMIT): K instances on the same core, each with N/K clients, and the counts, rates,"
echo "CPU and memory above are their sums (per-client figures divide by N)."
for key in "${ROWS[@]}"; do
    [ -n "${R[$key.note]:-}" ] && echo "- note $key: ${R[$key.note]}"
    [ "${R[$key.rc]:-1}" != 0 ] && echo "- note $key: generator exit code ${R[$key.rc]:-?} (all_ok=${R[$key.all_ok]:-?}; fail: connect ${R[$key.fail_connect]:-?}, TLS ${R[$key.fail_tls]:-?}, WS ${R[$key.fail_ws]:-?}, answer ${R[$key.fail_reg_answer]:-?}, timeout ${R[$key.fail_reg_timeout]:-?}; re-register failed ${R[$key.rereg_failed]:-?})"
done
echo
echo "## Reconnect storm"
echo
echo "Every client of every generator drops its connection at the same moment (after the registrations and calls above), then all reconnect: TCP + TLS + WebSocket + REGISTER, at most $STORM_CAP in flight over all generators, a failed attempt retried after a backoff (200 ms doubling up to 3.2 s, times 0.5-1.0) until ${STORM_TIMEOUT} s. Goal: all back, no failed attempt, within 60 s."
echo
echo "| proxy | clients N | back / N | failed attempts: connect / TLS / WS / REGISTER answer / timeout | time to all registered (s) | reconnections/s | proxy CPU during the storm (% of a core) | proxy CPU ms per reconnection | proxy RSS connected -> storm peak -> after (MiB) | PSS connected -> storm peak -> after (MiB) | VmHWM after (MiB) | old connections still open (CLOSE_WAIT) when all were back | calls after the storm on the right connection | generator CPU (%) | goal met |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for key in "${ROWS[@]}"; do
    [ -n "${R[$key.storm_dropped]:-}" ] || continue
    proxy=${key%/*}
    label=$proxy; [ "${R[$key.k]:-1}" -gt 1 ] && label="$proxy (${R[$key.k]} processes)"
    goal=no
    [ "${R[$key.storm_back]}" = "${R[$key.n]}" ] && [ "${R[$key.storm_failed]}" = 0 ] \
        && awk -v s="${R[$key.storm_secs]}" 'BEGIN{ exit !(s <= 60) }' && goal=yes
    echo "| $label | ${R[$key.n]} | ${R[$key.storm_back]} / ${R[$key.n]} | ${R[$key.storm_failed]}: ${R[$key.storm_fail_connect]} / ${R[$key.storm_fail_tls]} / ${R[$key.storm_fail_ws]} / ${R[$key.storm_fail_reg_answer]} / ${R[$key.storm_fail_reg_timeout]} | ${R[$key.storm_secs]}$([ "${R[$key.storm_gen_cpu_pct]:-0}" -ge $GEN_BOUND ] && echo ' (generator-bound)') | ${R[$key.storm_per_s]} | ${R[$key.storm_cpu_pct]} | ${R[$key.storm_cpu_ms_per_reconnect]} | $(mib "${R[$key.storm_rss_before_kb]}") -> $(mib "${R[$key.storm_peak_rss_kb]}") -> $(mib "${R[$key.storm_rss_after_kb]:-}") | $(mib "${R[$key.storm_pss_before_kb]}") -> $(mib "${R[$key.storm_peak_pss_kb]}") -> $(mib "${R[$key.storm_pss_after_kb]:-}") | $(mib "${R[$key.storm_hwm_kb]}") | ${R[$key.storm_proxy_close_wait]} | ${R[$key.storm_calls_ok]} / ${R[$key.storm_calls]} | ${R[$key.storm_gen_cpu_pct]} | $goal |"
done
for n in ${SIZES//,/ }; do
    r=roundabout/$n k=kamailio/$n
    [ -n "${R[$r.storm_dropped]:-}" ] && [ -n "${R[$k.storm_dropped]:-}" ] || continue
    echo "| **Roundabout / Kamailio** | $n | | | $(ratio "${R[$r.storm_secs]}" "${R[$k.storm_secs]}") | $(ratio "${R[$r.storm_per_s]}" "${R[$k.storm_per_s]}") | | $(ratio "${R[$r.storm_cpu_ms_per_reconnect]}" "${R[$k.storm_cpu_ms_per_reconnect]}") | $(ratio "${R[$r.storm_peak_rss_kb]}" "${R[$k.storm_peak_rss_kb]}") | $(ratio "${R[$r.storm_peak_pss_kb]}" "${R[$k.storm_peak_pss_kb]}") | | | | | |"
done
echo
echo "How to read it: \"back / N\" counts the clients registered again on a new connection"
echo "(a client not back gave up at ${STORM_TIMEOUT} s). A failed attempt is one connection"
echo "that did not end in a 200 to its REGISTER: connect = TCP refused or not accepted within"
echo "10 s, TLS = handshake failed or over 10 s, WS = upgrade failed or over 10 s, REGISTER"
echo "answer = a non-2xx or the connection closed before the answer, timeout = no answer"
echo "within 34 s; each was retried. Time to all registered: from the drop to the last 200."
echo "Reconnections/s = N / that time. Proxy CPU: utime+stime of the proxy's processes"
echo "from the drop until the generators saw every client back, as % of one core and per"
echo "reconnection. Memory: VmRSS and PSS summed over the proxy's processes right before the"
echo "drop (connected) and their highest value during the storm (peak): VmRSS read every"
echo "100 ms, PSS too unless reading it (smaps_rollup) is slow, then at most a tenth of the"
echo "time (Kamailio's large shared memory: a reading every second or so); after = once"
echo "every client was back, the calls were made and 3 s had passed. VmHWM (summed), read"
echo "when all were back, is each process's highest RSS since it started, the first"
echo "registrations included. With K processes, each generator reads its own"
echo "proxy's peak and the table adds them up (an upper bound: the peaks may fall 100 ms"
echo "apart). Old connections still open: the proxy's sockets in CLOSE_WAIT (the client has"
echo "closed, the proxy has not) when every client was back; 0 means the proxy had let go of"
echo "every dropped connection. Calls after the storm: the same sampled users called again;"
echo "each must arrive on the new connection of its user, so the registrar's new bindings"
echo "(new Path, new flow) are the ones used. Generator CPU: the generators' own CPU (all on"
echo "CPU 1) over the storm; at >= ${GEN_BOUND} % the time says more about the generator (TLS"
echo "client handshakes included) than about the proxy: compare the proxy's CPU ms per"
echo "reconnection then. Goal met: all back, no failed attempt, all registered within 60 s."
for key in "${ROWS[@]}"; do
    [ -n "${R[$key.storm_dropped]:-}" ] || continue
    echo "- storm $key: ${R[$key.storm_dropped]} connections dropped in ${R[$key.storm_close_ms]} ms$([ "${R[$key.k]:-1}" -gt 1 ] && echo ", the ${R[$key.k]} generators' drops ${R[$key.storm_drop_spread_ms]:-?} ms apart"); ${R[$key.storm_gave_up]} clients gave up; proxy sockets ESTABLISHED when all were back: ${R[$key.storm_proxy_established]}; PSS read ${R[$key.storm_pss_samples]} times (slowest ${R[$key.storm_pss_sample_ms_max]} ms), VmRSS ${R[$key.storm_rss_samples]} times"
done
} >"$RUN/report.md"
cp "$RUN/report.md" "$OUT_MD"
cat "$OUT_MD"
echo
echo "written to $OUT_MD (raw logs: $RUN)"
