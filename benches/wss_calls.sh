#!/usr/bin/env bash
# Roundabout WSS call benchmark: WSS clients calling and being called through the proxy,
# Roundabout and Kamailio (as a WebRTC edge) side by side, same machine, same run.
#
#   bash benches/wss_calls.sh           # 1,000 clients, steps of 30 s -> benches/results/wss-calls.md
#   bash benches/wss_calls.sh --quick   # 200 clients, short steps     -> benches/results/wss-calls-quick.md
#
# Options: --quick, --proxies roundabout,kamailio, --clients N (default 1000, 200 with
#          --quick), --fixed-rate R (calls/s in all, half each way, even; default 400, 10
#          with --quick), --no-build, --keep (keep the per-call traces).
# Needs: sipp (Debian sip-tester), kamailio with kamailio-tls-modules and
#        kamailio-websocket-modules, openssl, taskset, ss, awk; root not required.
#
# What runs, for each proxy (a fresh proxy, and a fresh one again after a failed step):
#   target/release/examples/wss_calls (examples/wss_calls.rs, CPU 1) opens N WSS
#   connections from 127.0.5.1-8 (bound before connect) to the proxy (CPU 0) and registers
#   sip:uNNNNN@127.0.4.4:16070 over each (200 in flight). Then, for one step at a rate of R
#   calls/s, both at once for S s:
#   - WSS -> UDP, R/2 calls/s: the clients (in turn) call sip:svc@127.0.4.6:16060, a SIPp UAS
#     on UDP (benches/sipp/uas-wss.xml, CPU 1): INVITE/180/200/ACK along the Record-Route
#     set; after 500 ms the UAS hangs up (BYE through the proxy, the client answers 200).
#   - UDP -> WSS, R/2 calls/s: a SIPp UAC on UDP (benches/sipp/uac-wss.xml, 127.0.4.7:16062,
#     CPU 1) calls sip:uNNNNN@PROXY, users in turn from a CSV of the N users; each INVITE
#     must arrive on the connection of its user, which answers 180/200, takes the ACK,
#     holds 500 ms and hangs up (BYE through the proxy, along the Record-Route set).
#   The generator registers its N clients again for every step (a new process each time).
#   Roundabout: 127.0.4.1, WSS 16443, UDP 16061, run from an empty temp dir (so it makes its
#     self-signed certificate), -trusted-server for the registrar (the generator itself on
#     UDP 127.0.4.4:16070: 200 with the Contact echoed, Path kept), the SIPp UAS and the
#     SIPp UAC, -strict-host -max-connections 0 -max-connections-per-ip 0 -pike-limit 0
#     -max-transactions 2000000 -log-level warn, taskset -c 0. (The default
#     -max-transactions, 100,000, is reached near 1,560 calls/s: every call holds its INVITE
#     and BYE transactions for 32 s after their answers, the BYE's over UDP; the first full
#     run stopped there with 503s. Kamailio has no such cap.) It forwards REGISTER to the registrar and caches the
#     client from the 200; calls for sip:uNNNNN@127.0.4.1 go to the cached client.
#   Kamailio: 127.0.4.5, WSS 16443, UDP 16080, benches/kamailio-wss-calls.cfg: the usual
#     WebRTC edge that is its users' location service (tls + xhttp + websocket; REGISTER
#     saved in usrloc, in memory, with the connection as received; lookup("location") for
#     sip:uNNNNN@127.0.4.5; record_route with double RR; nathelper contact aliases; t_relay),
#     self-signed P-256 certificate made with openssl, 1 UDP + 1 TCP worker, -M 32,
#     taskset -c 0. It answers REGISTER itself, so the generator's registrar stays idle.
# Measured, per proxy:
#   1. fixed rate (--fixed-rate, the same for both proxies, FIXED_SECS s): proxy CPU ms per
#      call (utime+stime summed over its processes from /proc, from the first call to the
#      end of the last one, divided by the calls of both directions), setup time p50/p99
#      (WSS -> UDP: INVITE sent -> 200 received at the client, by the generator; UDP -> WSS:
#      SIPp -trace_rtt, whole ms), the proxy's RSS and PSS after the calls.
#   2. rate sweep: steps of STEP_SECS s at rising rates (x FACTOR) until a step fails, then
#      bisection. A step passes with every call of both directions complete on both sides
#      (generator, SIPp UAC, SIPp UAS), none on a wrong connection, no connection lost, and
#      p99 setup < P99_LIMIT ms both ways. The result is the highest passing rate.
#   The load generators (wss_calls + both SIPps) share CPU 1: when they used >= 85 % of it
#   at the failing step, the limit is theirs, not the proxy's, and the result reads
#   ">= R (generator-bound)". "calls/s per core est." = 1000 / (CPU ms per call).
# Raw logs: target/bench/wss-calls-<date>-<mode>/ (per-call traces deleted unless --keep).
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2

QUICK=0 BUILD=1 KEEP=0 CLIENTS="" FIXED_RATE=""
PROXIES="roundabout,kamailio"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --proxies) PROXIES=$2; shift ;;
        --clients) CLIENTS=$2; shift ;;
        --fixed-rate) FIXED_RATE=$2; shift ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed 's/^# \{0,1\}//; /^set -u/d'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ $QUICK = 1 ]; then
    DEF_CLIENTS=200 DEF_FIXED=10 FIXED_SECS=10 STEP_SECS=6 START_RATE=20 FACTOR=2 MAX_UP=3 BISECT=1
    OUT_MD=benches/results/wss-calls-quick.md MODE=quick
else
    DEF_CLIENTS=1000 DEF_FIXED=400 FIXED_SECS=36 STEP_SECS=30 START_RATE=100 FACTOR=1.5 MAX_UP=10 BISECT=2
    OUT_MD=benches/results/wss-calls.md MODE=full
fi
CLIENTS=${CLIENTS:-$DEF_CLIENTS} FIXED_RATE=${FIXED_RATE:-$DEF_FIXED}
HOLD_MS=500
P99_LIMIT=100
GEN_BOUND=85
RTT_FREQ=10             # SIPp dumps response times by 10: its calls are a multiple of it
HZ=$(getconf CLK_TCK)

IP_RBT=127.0.4.1 IP_REG=127.0.4.4 IP_KAM=127.0.4.5 IP_UAS=127.0.4.6 IP_UAC=127.0.4.7
PORT_WSS=16443 PORT_RBT_UDP=16061 PORT_KAM_UDP=16080 PORT_REG=16070 PORT_UAS=16060 PORT_UAC=16062
SOURCES=127.0.5.1-8

for tool in sipp kamailio openssl taskset ss awk; do
    command -v $tool >/dev/null || { echo "missing $tool (apt-get install sip-tester kamailio kamailio-tls-modules kamailio-websocket-modules openssl util-linux iproute2)" >&2; exit 2; }
done
case $FIXED_RATE in *[!0-9]*|"") echo "--fixed-rate must be a whole even number" >&2; exit 2 ;; esac
[ $((FIXED_RATE % 2)) = 0 ] && [ "$FIXED_RATE" -gt 0 ] || { echo "--fixed-rate must be even (half each way)" >&2; exit 2; }
ulimit -n $((CLIENTS * 2 + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

STAMP=$(date +%Y%m%d-%H%M%S)
RUN=$ROOT/target/bench/wss-calls-$STAMP-$MODE
mkdir -p "$RUN/bin" benches/results || exit 2
LOG=$RUN/steps.log
T0=$(date +%s)
say() { echo "$*" | tee -a "$LOG"; }
. "$ROOT/benches/lib.sh"

if [ $BUILD = 1 ]; then
    say "building: cargo build --release --locked --bin roundabout --example wss_calls"
    cargo build --release --locked --bin roundabout --example wss_calls 2>&1 | tail -1
fi
# our own copies: the shared target dir may be rebuilt by someone else during the run
cp target/release/roundabout "$RUN/bin/roundabout" || exit 2
cp target/release/examples/wss_calls "$RUN/bin/wss_calls" || exit 2

# the UAC's users, in turn
{ echo SEQUENTIAL; for ((i = 1; i <= CLIENTS; i++)); do printf 'u%05d;\n' $i; done; } >"$RUN/users.csv"

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
EOF

ticks_of() { awk '{sub(/^.*\) /, ""); print $12 + $13}' /proc/$1/stat 2>/dev/null || echo 0; }
# a counter from the last line of a SIPp statistics file (0 when there is none yet)
sipp_stat() { # $1 file, $2 column
    awk -F';' -v c="$2" 'NR == 1 {for (i = 1; i <= NF; i++) h[$i] = i; next} {l = $0}
        END {split(l, v, ";"); print (c in h) ? v[h[c]] + 0 : 0}' "$1" 2>/dev/null || echo 0
}

# ---------------------------------------------------------------- proxy and UAS

PROXY_PID="" PROXY_WSS="" PROXY_UDP="" UAS_PID=""
start_proxy() { # $1 proxy, $2 dir
    mkdir -p "$2"
    if [ "$1" = roundabout ]; then
        PROXY_WSS=$IP_RBT:$PORT_WSS PROXY_UDP=$IP_RBT:$PORT_RBT_UDP
        (cd "$2" && exec taskset -c 0 "$RUN/bin/roundabout" -local-ip $IP_RBT \
            -udp-port $PORT_RBT_UDP -tcp-port 0 -tls-port 0 -ws-port 0 -wss-port $PORT_WSS \
            -strict-host \
            -trusted-server "$IP_REG::$PORT_REG:udp:,$IP_UAS::$PORT_UAS:udp:,$IP_UAC::$PORT_UAC:udp:" \
            -max-connections 0 -max-connections-per-ip 0 -pike-limit 0 \
            -max-transactions 2000000 -log-level warn >"$2/proxy.log" 2>&1) &
    else
        PROXY_WSS=$IP_KAM:$PORT_WSS PROXY_UDP=$IP_KAM:$PORT_KAM_UDP
        (cd "$2" && exec taskset -c 0 kamailio -f "$ROOT/benches/kamailio-wss-calls.cfg" -DD -E \
            -m $((1024 + CLIENTS / 5)) -M 32 -w "$2" -Y "$2" -P "$2/kamailio.pid" \
            -A "TLS_CFG=\"$KDIR/tls.cfg\"" -A "MAX_CONN=$((CLIENTS + 1000))" \
            -l udp:$PROXY_UDP -l tls:$PROXY_WSS >"$2/proxy.log" 2>&1) &
    fi
    PROXY_PID=$!
    wait_listen udp $PROXY_UDP && wait_listen tcp $PROXY_WSS || {
        say "!! $1 did not start; log: $2/proxy.log"; tail -5 "$2/proxy.log"; return 1; }
    sleep 1.5 # let it finish starting (Kamailio forks its workers)
}

start_uas() { # $1 dir
    (cd "$1" && exec taskset -c 1 sipp -sf "$ROOT/benches/sipp/uas-wss.xml" -i $IP_UAS \
        -p $PORT_UAS -t u1 -d $HOLD_MS -bind_local -nostdin -buff_size 1048576 \
        -max_recv_loops 10000 -recv_timeout 20000 -trace_err -error_file uas-errors.log \
        -trace_stat -stf uas-stats.csv -fd 1 -timeout 3600s >uas.out 2>&1) &
    UAS_PID=$!
    wait_listen udp $IP_UAS:$PORT_UAS || { say "!! SIPp UAS did not start"; return 1; }
}

restart_pair() { # $1 proxy, $2 dir
    stop_pid $UAS_PID
    stop_pid $PROXY_PID
    start_proxy "$1" "$2" && start_uas "$2"
}

# ---------------------------------------------------------------- one step

# run_step RATE SECS DIR (UAS in UAS_DIR): sets S_* results
run_step() {
    local rate=$1 secs=$2 dir=$3 half=$(( $1 / 2 ))
    local n_in=$(( (half * secs + RTT_FREQ - 1) / RTT_FREQ * RTT_FREQ ))
    mkdir -p "$dir"
    rm -f "$dir/ready" "$dir/go"
    local uas_ok0 uas_fail0 uas_t0 c0_0 c0_1 w0 w1 gen uac i
    timeout $((secs + CLIENTS / 50 + 180)) taskset -c 1 "$RUN/bin/wss_calls" -n "$CLIENTS" \
        --proxy "$PROXY_WSS" --registrar $IP_REG:$PORT_REG --uas $IP_UAS:$PORT_UAS \
        --sources $SOURCES --concurrency 200 --rate "$half" --secs "$secs" --hold-ms $HOLD_MS \
        --expect-in "$n_in" --pids "$(tree_pids "$PROXY_PID" | tr ' ' ',')" \
        --ready-file "$dir/ready" --go-file "$dir/go" --timeout $((secs + CLIENTS / 50 + 150)) \
        >"$dir/gen.out" 2>"$dir/gen.err" &
    gen=$!
    for ((i = 0; i < (CLIENTS / 50 + 60) * 10; i++)); do
        [ -e "$dir/ready" ] || ! kill -0 $gen 2>/dev/null && break
        sleep 0.1
    done
    uas_ok0=$(sipp_stat "$UAS_DIR/uas-stats.csv" 'SuccessfulCall(C)')
    uas_fail0=$(sipp_stat "$UAS_DIR/uas-stats.csv" 'FailedCall(C)')
    uas_t0=$(ticks_of $UAS_PID)
    c0_0=$(cpu_busy 0) w0=$(date +%s%N)
    (cd "$dir" && exec taskset -c 1 sipp $PROXY_UDP -sf "$ROOT/benches/sipp/uac-wss.xml" \
        -inf "$RUN/users.csv" -i $IP_UAC -p $PORT_UAC -t u1 -r "$half" -m "$n_in" \
        -l $((half * 4 + 100)) -buff_size 1048576 -max_recv_loops 10000 -recv_timeout 10000 \
        -timeout $((secs + 60))s -timeout_error -bind_local -nostdin -trace_err \
        -error_file uac-errors.log -trace_rtt -rtt_freq $RTT_FREQ -trace_stat -stf uac-stats.csv \
        -fd 1 >uac.out 2>&1) &
    uac=$!
    touch "$dir/go"
    # the load window: the SIPps' CPU while calls are offered
    sleep "$secs"
    S_SIPP_PCT=$(( ($(ticks_of $uac) + $(ticks_of $UAS_PID) - uas_t0) * 100 / HZ / secs ))
    wait $gen; S_GEN_RC=$?
    wait $uac; S_UAC_RC=$?
    c0_1=$(cpu_busy 0) w1=$(date +%s%N)
    sleep 1.5 # SIPp writes its statistics every second
    S_UAS_OK=$(( $(sipp_stat "$UAS_DIR/uas-stats.csv" 'SuccessfulCall(C)') - uas_ok0 ))
    S_UAS_FAIL=$(( $(sipp_stat "$UAS_DIR/uas-stats.csv" 'FailedCall(C)') - uas_fail0 ))
    S_UAC_OK=$(sipp_stat "$dir/uac-stats.csv" 'SuccessfulCall(C)')
    S_UAC_FAIL=$(sipp_stat "$dir/uac-stats.csv" 'FailedCall(C)')
    S_IN=$n_in
    unset G; declare -gA G=()
    local kv
    while read -r kv; do G[${kv%%=*}]=${kv#*=}; done < <(sed -n 's/^RESULT //p' "$dir/gen.out")
    read -r S_UAC_P50 S_UAC_P99 < <(cat "$dir"/*_rtt.csv 2>/dev/null | awk -F';' '$3 == "1" {print $2}' |
        sort -n | awk '{v[NR] = $1} END {if (NR < 1) print "- -";
            else printf "%d %d\n", v[int((NR - 1) * 0.50) + 1], v[int((NR - 1) * 0.99) + 1]}')
    S_CALLS=$(( ${G[out_calls]:-0} + ${G[in_calls]:-0} ))
    S_CPU_MS=$(awk -v s="${G[proxy_cpu_s]:-0}" -v n=$S_CALLS 'BEGIN{if (n > 0) printf "%.3f", s / n * 1000; else print "-"}')
    S_GEN_PCT=$(( ${G[gen_cpu_pct]:-0} + S_SIPP_PCT ))
    # CPU 0 used by others than the proxy, % of the call phase
    S_OTHER0=$(awk -v all=$((c0_1 - c0_0)) -v p="${G[proxy_cpu_s]:-0}" -v w=$((w1 - w0)) -v hz=$HZ \
        'BEGIN{o = (all / hz - p) / (w / 1e9) * 100; if (o < 0) o = 0; printf "%.0f", o}')
    S_PASS=1 S_WHY=""
    [ "$S_GEN_RC" = 0 ] || { S_PASS=0; S_WHY+=" generator-exit=$S_GEN_RC"; }
    [ "${G[reg_failed]:-1}" = 0 ] || { S_PASS=0; S_WHY+=" registrations-failed=${G[reg_failed]:-?}"; }
    [ "$S_UAC_RC" = 0 ] || { S_PASS=0; S_WHY+=" uac-exit=$S_UAC_RC"; }
    [ "$S_UAC_OK" = "$n_in" ] && [ "$S_UAC_FAIL" = 0 ] || { S_PASS=0; S_WHY+=" uac=$S_UAC_OK/$n_in(failed $S_UAC_FAIL)"; }
    [ "$S_UAS_OK" = "${G[out_calls]:-x}" ] && [ "$S_UAS_FAIL" = 0 ] || { S_PASS=0; S_WHY+=" uas=$S_UAS_OK/${G[out_calls]:-?}(failed $S_UAS_FAIL)"; }
    [ "${G[wrong_connection]:-1}" = 0 ] || { S_PASS=0; S_WHY+=" wrong-connection=${G[wrong_connection]:-?}"; }
    [ "${G[connections_lost]:-1}" = 0 ] || { S_PASS=0; S_WHY+=" lost=${G[connections_lost]:-?}"; }
    awk -v a="${G[setup_p99_ms]:-x}" -v b="$S_UAC_P99" -v l=$P99_LIMIT \
        'BEGIN{exit !(a ~ /^[0-9.]+$/ && b ~ /^[0-9]+$/ && a < l && b < l)}' ||
        { S_PASS=0; S_WHY+=" p99=${G[setup_p99_ms]:-?}/${S_UAC_P99}ms"; }
    S_BOUND=0
    [ "$S_GEN_PCT" -ge $GEN_BOUND ] && S_BOUND=1
    local verdict=pass
    [ $S_PASS = 1 ] || verdict="FAIL:$S_WHY"
    say "  $(printf '%5d' "$rate") calls/s x ${secs}s: WSS->UDP ${G[out_ok]:-?}/${G[out_calls]:-?} (UAS ${S_UAS_OK}) p50 ${G[setup_p50_ms]:--} p99 ${G[setup_p99_ms]:--} ms at ${G[out_rate]:-?}/s; UDP->WSS ${G[in_ok]:-?}/${G[in_calls]:-?} (UAC ${S_UAC_OK}/$n_in) p50 ${S_UAC_P50} p99 ${S_UAC_P99} ms; proxy ${G[proxy_cpu_s]:-?} s CPU = ${S_CPU_MS} ms/call; generator ${G[gen_cpu_pct]:-?}% + SIPps ${S_SIPP_PCT}% of CPU 1; others on CPU 0 ${S_OTHER0}% -> $verdict"
    [ $S_PASS = 1 ] || grep -v '^RESULT' "$dir/gen.err" | head -5 | sed 's/^/     /' | tee -a "$LOG"
}

# ---------------------------------------------------------------- one proxy

declare -A R
bench_one() { # $1 proxy
    local proxy=$1 dir=$RUN/$1
    UAS_DIR=$dir
    say "== $proxy (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    start_proxy "$proxy" "$dir" || { R[$proxy.note]="did not start"; return; }
    start_uas "$dir" || { stop_pid $PROXY_PID; R[$proxy.note]="SIPp UAS did not start"; return; }
    say " fixed rate $FIXED_RATE calls/s ($CLIENTS clients):"
    run_step "$FIXED_RATE" "$FIXED_SECS" "$dir/fixed"
    R[$proxy.cpu]=$S_CPU_MS R[$proxy.calls]=$S_CALLS R[$proxy.other0]=$S_OTHER0
    R[$proxy.est]=$(awk -v c="$S_CPU_MS" 'BEGIN{if (c + 0 > 0) printf "%.0f", 1000 / c; else print "-"}')
    R[$proxy.p50]=${G[setup_p50_ms]:--} R[$proxy.p99]=${G[setup_p99_ms]:--}
    R[$proxy.uac_p50]=$S_UAC_P50 R[$proxy.uac_p99]=$S_UAC_P99
    R[$proxy.ok]="$(( ${G[out_ok]:-0} + S_UAC_OK )) / $(( ${G[out_calls]:-0} + S_IN ))"
    R[$proxy.gen]="${G[gen_cpu_pct]:-?} / $S_SIPP_PCT"
    R[$proxy.rss]=${G[proxy_rss_kb]:-} R[$proxy.pss]=${G[proxy_pss_kb]:-}
    [ $S_PASS = 1 ] || { R[$proxy.note]+="fixed rate failed:$S_WHY; "; restart_pair "$proxy" "$dir" || return; }

    say " sweep:"
    local rate=$START_RATE pass=0 fail=0 fail_bound=0 i
    for ((i = 0; i < MAX_UP; i++)); do
        run_step "$rate" "$STEP_SECS" "$dir/step-$rate"
        if [ $S_PASS = 1 ]; then
            pass=$rate
            [ $S_BOUND = 1 ] && { fail=$rate fail_bound=1; break; }
            rate=$(awk -v r=$rate -v f=$FACTOR 'BEGIN{printf "%d", int(r * f / 2 + 0.5) * 2}')
        else
            fail=$rate fail_bound=$S_BOUND
            restart_pair "$proxy" "$dir" || return
            break
        fi
    done
    if [ $pass = 0 ] && [ $fail != 0 ]; then # the first step failed: go down
        rate=$(( fail / 4 * 2 ))
        for i in 1 2 3; do
            [ $rate -ge 2 ] || break
            run_step "$rate" "$STEP_SECS" "$dir/step-$rate"
            if [ $S_PASS = 1 ]; then pass=$rate; break; fi
            fail=$rate fail_bound=$S_BOUND rate=$(( rate / 4 * 2 ))
            restart_pair "$proxy" "$dir" || return
        done
    fi
    if [ $pass != 0 ] && [ $fail -gt $pass ]; then
        for ((i = 0; i < BISECT; i++)); do
            rate=$(( (pass + fail) / 4 * 2 ))
            [ $rate -le $pass ] && break
            run_step "$rate" "$STEP_SECS" "$dir/step-$rate"
            if [ $S_PASS = 1 ]; then pass=$rate; [ $S_BOUND = 1 ] && fail_bound=1
            else fail=$rate fail_bound=$S_BOUND; restart_pair "$proxy" "$dir" || return; fi
        done
    fi
    [ $fail = 0 ] && fail_bound=2 # never failed within MAX_UP steps
    R[$proxy.max]=$pass R[$proxy.bound]=$fail_bound
    stop_pid $UAS_PID
    stop_pid $PROXY_PID
    say " -> max $pass calls/s$([ $fail_bound = 1 ] && echo ' (generator-bound)')$([ $fail_bound = 2 ] && echo ' (top of the sweep)')"
}

# ---------------------------------------------------------------- run

for a in udp:$IP_RBT:$PORT_RBT_UDP udp:$IP_KAM:$PORT_KAM_UDP udp:$IP_REG:$PORT_REG udp:$IP_UAS:$PORT_UAS \
    udp:$IP_UAC:$PORT_UAC tcp:$IP_RBT:$PORT_WSS tcp:$IP_KAM:$PORT_WSS; do
    [ "${a%%:*}" = udp ] && flag=-uan || flag=-tln
    ss -H $flag "src ${a#*:}" 2>/dev/null | grep -q . && { echo "${a#*:} is in use" >&2; exit 2; }
done
say "Roundabout WSS call benchmark ($MODE), raw logs in $RUN"
say "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
for proxy in ${PROXIES//,/ }; do
    bench_one "$proxy"
done
T1=$(date +%s)

# ---------------------------------------------------------------- report

mib() { awk -v k="$1" 'BEGIN{ if (k == "" || k == 0) print "-"; else printf "%.1f", k / 1024 }'; }
maxcell() { # proxy
    local m=${R[$1.max]:-} b=${R[$1.bound]:-0}
    [ -z "$m" ] && { echo "-"; return; }
    case $b in 1) echo ">= $m (generator-bound)" ;; 2) echo ">= $m (top of sweep)" ;; *) echo "$m" ;; esac
}
RBT_VERSION=$("$RUN/bin/roundabout" -version 2>&1 | head -1)
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src actors Cargo.toml 2>/dev/null || echo "+local changes")
{
echo "# Roundabout vs Kamailio: WSS calls ($MODE)"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), $((T1 - T0)) s"
echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- versions: $RBT_VERSION (git $GIT_REV), $(kamailio -v 2>/dev/null | head -1 | sed 's/^version: //'), $(sipp -v 2>/dev/null | grep -o 'SIPp v[^ ,]*' | head -1), $(openssl version | cut -d' ' -f1-2)"
echo "- pinning: proxy on CPU 0 (taskset); generator (examples/wss_calls.rs), SIPp UAC and SIPp UAS on CPU 1"
echo "- load: $CLIENTS WSS clients registered (TLS, self-signed P-256 certificate, from 127.0.5.1-8); half the calls from the clients to a SIPp UAS on UDP (the UAS hangs up), half from a SIPp UAC on UDP to the clients (the client hangs up), 500 ms each; fixed rate $FIXED_RATE calls/s for ${FIXED_SECS} s; sweep steps ${STEP_SECS} s from $START_RATE calls/s x $FACTOR"
echo "- command: \`bash benches/wss_calls.sh$([ $QUICK = 1 ] && echo ' --quick')\`"
echo
echo "| proxy | max calls/s (0 failed, p99 < ${P99_LIMIT} ms) | proxy CPU ms / call at $FIXED_RATE calls/s | calls/s per core est. | setup p50 / p99 WSS -> UDP (ms) | setup p50 / p99 UDP -> WSS (ms, SIPp) | calls ok at $FIXED_RATE calls/s | generator / SIPps CPU 1 (%) | proxy RSS / PSS (MiB) | others on CPU 0 |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for proxy in ${PROXIES//,/ }; do
    echo "| $proxy | $(maxcell $proxy) | ${R[$proxy.cpu]:--} | ${R[$proxy.est]:--} | ${R[$proxy.p50]:--} / ${R[$proxy.p99]:--} | ${R[$proxy.uac_p50]:--} / ${R[$proxy.uac_p99]:--} | ${R[$proxy.ok]:--} | ${R[$proxy.gen]:--} | $(mib "${R[$proxy.rss]:-}") / $(mib "${R[$proxy.pss]:-}") | ${R[$proxy.other0]:--} % |"
done
r=roundabout k=kamailio
if [ -n "${R[$r.cpu]:-}" ] && [ -n "${R[$k.cpu]:-}" ]; then
    mr=$(ratio "${R[$r.max]:-}" "${R[$k.max]:-}")
    [ "${R[$r.bound]:-0}" != 0 ] && [ "${R[$k.bound]:-0}" != 0 ] && mr="n/a (neither proxy reached its limit)"
    [ "${R[$r.bound]:-0}" != 0 ] && [ "${R[$k.bound]:-0}" = 0 ] && mr=">= $mr"
    echo "| **Roundabout / Kamailio** | $mr | $(ratio "${R[$r.cpu]}" "${R[$k.cpu]}") | $(ratio "${R[$r.est]}" "${R[$k.est]}") | $(ratio "${R[$r.p50]}" "${R[$k.p50]}") / $(ratio "${R[$r.p99]}" "${R[$k.p99]}") | $(ratio "${R[$r.uac_p50]}" "${R[$k.uac_p50]}") / $(ratio "${R[$r.uac_p99]}" "${R[$k.uac_p99]}") | | | $(ratio "${R[$r.rss]}" "${R[$k.rss]}") / $(ratio "${R[$r.pss]}" "${R[$k.pss]}") | |"
fi
echo
echo "How to read it: a call is INVITE/180/200/ACK, 500 ms, BYE/200, all through the proxy"
echo "(ACK and BYE along the Record-Route set); half the calls go each way, so \"calls/s\" counts"
echo "both directions. CPU, setup times and memory are taken at the fixed rate (the same for both"
echo "proxies). Proxy CPU ms / call: utime+stime of every process of the proxy (Kamailio: main,"
echo "workers, timers, TCP main, WebSocket keep-alive) from /proc, over the call phase, divided"
echo "by the calls of both directions; per core est. = 1000 / that. Setup WSS -> UDP: INVITE sent"
echo "-> 200 received at the WSS client (generator clock, TLS and WebSocket included); UDP -> WSS:"
echo "SIPp -trace_rtt at the UAC (whole milliseconds; a ratio is \"-\" when a value is 0)."
echo "\"calls ok\": calls that completed on both sides (generator and SIPp) / calls placed."
echo "A sweep step fails on any failed or missing call on either side, a call on a wrong"
echo "connection, a lost connection, or p99 setup >= ${P99_LIMIT} ms either way; after a failure the"
echo "proxy is restarted. \"generator-bound\": the generator and both SIPps together used >= ${GEN_BOUND} %"
echo "of CPU 1 at the failing step (or at the last step, see \"top of sweep\"), so the proxy's own"
echo "ceiling is higher: compare its CPU per call instead. Generator CPU is its own over the call"
echo "phase, SIPp's while calls are offered. Proxy RSS / PSS: VmRSS and PSS (smaps_rollup)"
echo "summed over its processes after the fixed-rate calls, $CLIENTS clients connected. Others on"
echo "CPU 0: time used there by other processes during the fixed-rate calls (noise)."
for proxy in ${PROXIES//,/ }; do
    [ -n "${R[$proxy.note]:-}" ] && echo "- note $proxy: ${R[$proxy.note]}"
done
} >"$RUN/report.md"
cp "$RUN/report.md" "$OUT_MD"
cat "$OUT_MD"
echo
echo "written to $OUT_MD (raw logs: $RUN)"
if [ $KEEP = 0 ]; then
    # keep the step log, report and outputs; drop the bulky per-call traces
    find "$RUN" -name '*_rtt.csv' -delete
fi
