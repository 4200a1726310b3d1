#!/usr/bin/env bash
# Roundabout call benchmark: Roundabout and Kamailio side by side, same machine, same run.
#
#   bash benches/run.sh            # full run, about 30-45 min -> benches/results/latest.md
#   bash benches/run.sh --quick    # short runs, under 4 min   -> benches/results/latest-quick.md
#
# Options: --quick, --scenarios udp-tcp,tcp-udp,udp-udp, --proxies roundabout,kamailio,
#          --rates 1500,5000 (the fixed rates, calls/s), --parts calls,memory,loss (which
#          measurements), --no-build, --keep (keep the raw logs dir), --wait-quiet S (before
#          each proxy x scenario, wait up to S s for both CPUs to be idle; default 30, 2 with
#          --quick).
# Needs: sipp (Debian sip-tester), kamailio, taskset, ss, awk, curl; root not required.
#
# What runs, for each scenario (caller transport -> callee transport) and each proxy:
#   SIPp UAC (127.0.2.2, CPU 1) -> proxy (CPU 0) -> SIPp UAS (127.0.2.3, CPU 1)
#   INVITE/100/180/200/ACK/hold 500 ms/BYE/200; ACK and BYE follow the Record-Route set
#   through the proxy (benches/sipp/uac.xml, uas.xml). The R-URI is sip:bob@UAS;transport=X,
#   which both proxies route on (Roundabout also has the UAS as -trusted-server with -strict-host).
#   Roundabout: 127.0.2.1, `taskset -c 0` (it then sees one CPU and runs one Router shard),
#               -pike-limit 0 (its flood protection would take one SIPp for a flood; the
#               Kamailio config has no pike either), -max-transactions 2000000 (the default
#               100,000 is reached near 1,560 calls/s over UDP: every call holds its INVITE
#               and BYE transactions for 32 s after their answers; Kamailio has no such cap).
#   Kamailio:   127.0.2.4, `taskset -c 0`, benches/kamailio-relay.cfg (tm relay, double RR,
#               loose_route, 1 UDP + 1 TCP worker, -m 1024 MB shm, -M 32 MB pkg).
#   SIPp: -buff_size 4194304 (socket send and receive buffers, capped by the kernel at
#         net.core.rmem_max / wmem_max and doubled; both logged): the UDP receive buffers of
#         the proxies are as large (Roundabout asks 4 MiB, the Kamailio config has
#         maxbuffer=4194304), so no side of a link drops first for want of buffer. SIPp's
#         CPU share on CPU 1 and the datagrams the kernel dropped on its UDP sockets are in
#         the table next to the numbers they limit.
# Parts (--parts):
#   calls: 1. fixed rates (--rates, the same for both proxies), FIXED s each: CPU seconds per
#      1,000 calls (utime+stime from /proc/PID/stat, summed over every process of the proxy,
#      from the first call until DRAIN s after the last: the answered transactions' lingers
#      (Roundabout 32 s over UDP, Kamailio 5 s) expire inside the window, so their cost is
#      counted and the next rate starts clean), p50/p99 setup time (INVITE sent -> 200
#      received, SIPp -trace_rtt, whole milliseconds), PSS at the end of the calls
#      (smaps_rollup summed: shared pages divided among the processes that map them) and
#      peak RSS (VmHWM summed). A rate where a call failed shows its failed count, no CPU.
#      2. rate sweep, seeded by the fixed rates: up from the highest passing one (x FACTOR)
#      until a step fails, then bisection between the last pass and the first failure;
#      steps of STEP s. A step passes with every call successful (UAC and UAS) and p99
#      setup < 50 ms. When the two SIPps together use >= 85 % of CPU 1 while the calls are
#      offered at the failing step, the limit is SIPp's: the result reads ">= N (SIPp-bound)".
#   memory (UDP -> UDP, a fresh proxy per phase, MEM_RATE calls/s for MEM_SECS s, sampled
#      MEM_SECS + 2 s after the first call, before any call reaches its next step):
#      "ringing": the UAS answers 180 and holds its 200 for MEM_HOLD s (benches/sipp/
#      uas-ringing.xml), so every call started is an INVITE transaction waiting for its
#      answer; "calls up": answered at once, BYE after MEM_HOLD s, so every call started is
#      established. Per item = (memory then - memory idle) / calls started; idle is taken
#      after a 200-call warm-up whose lingering transactions are in both samples. RSS and
#      PSS for both proxies (PSS is the fair one for Kamailio's shared memory); Roundabout
#      is started with -metrics-addr and its own count of transactions held is logged.
#   loss: LOSS_RATE calls/s for LOSS_SECS s, UDP -> TCP and TCP -> UDP, SIPp `-lost 1` on
#      the UDP-side SIPp only (it drops 1 % of the messages it sends and receives): calls
#      completed / attempted at the caller and the callee, failures by cause (SIPp's error
#      log), retransmissions by each SIPp.
# Values (full / --quick): FIXED 36 / 3 s, DRAIN 34 / 0.5 s, STEP 30 / 2 s, FACTOR 1.4,
# MEM_RATE 1000 / 500 calls/s, MEM_SECS 25 / 3 s, MEM_HOLD 30 / 6 s, LOSS_RATE 100 calls/s,
# LOSS_SECS 30 / 4 s.
# Machine load: `uptime` and the CPU used on CPU 0 and CPU 1 by other processes are logged
# per run; numbers taken while others compile are noisy (the table says how busy each was).
# Expected full-run time: calls 4.5-7 min per proxy x scenario (2 x (36 + 34) s at the fixed
# rates, then 2-7 sweep steps of about 33 s), memory about 2.5 min, loss about 2.5 min:
# 30-45 min in all. --quick: about 3.5 min plus the build.
# Raw logs: target/bench/<date>/ (kept with --keep or when something failed).
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2

QUICK=0 BUILD=1 KEEP=0 QUIET_ARG=""
SCENARIOS="udp-tcp,tcp-udp,udp-udp"
PROXIES="roundabout,kamailio"
RATES="1500,5000"
PARTS="calls,memory,loss"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --scenarios) SCENARIOS=$2; shift ;;
        --proxies) PROXIES=$2; shift ;;
        --rates) RATES=$2; shift ;;
        --parts) PARTS=$2; shift ;;
        --wait-quiet) QUIET_ARG=$2; shift ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed 's/^# \{0,1\}//; /^set -u/d'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
has_part() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if [ $QUICK = 1 ]; then
    FIXED_SECS=3 DRAIN=0.5 STEP_SECS=2 FACTOR=1.4 MAX_UP=2 BISECT=1 SETTLE=0.5 QUIET_MAX=2
    MEM_RATE=500 MEM_SECS=3 MEM_HOLD=6 LOSS_RATE=100 LOSS_SECS=4
    OUT_MD=benches/results/latest-quick.md MODE=quick
else
    FIXED_SECS=36 DRAIN=34 STEP_SECS=30 FACTOR=1.4 MAX_UP=4 BISECT=3 SETTLE=2 QUIET_MAX=30
    MEM_RATE=1000 MEM_SECS=25 MEM_HOLD=30 LOSS_RATE=100 LOSS_SECS=30
    OUT_MD=benches/results/latest.md MODE=full
fi
[ -n "$QUIET_ARG" ] && QUIET_MAX=$QUIET_ARG
HOLD_MS=500
P99_LIMIT=50
SIPP_BOUND_PCT=85
RTT_FREQ=200            # SIPp dumps response times by 200: calls are rounded to a multiple
SIPP_BUFF=4194304       # = net.core.rmem_max here: 8 MiB granted, as both proxies get
LOSS_PCT=1
RBT_MAX_TX=2000000

IP_RBT=127.0.2.1 IP_UAC=127.0.2.2 IP_UAS=127.0.2.3 IP_KAM=127.0.2.4
BASE=${BENCH_PORT:-15060}
PORT_RBT=$((BASE + 1)) PORT_UAC=$((BASE + 2)) PORT_UAS=$((BASE + 3)) PORT_KAM=$((BASE + 4))
PORT_METRICS=$((BASE + 5))
HZ=$(getconf CLK_TCK)

for tool in sipp kamailio taskset ss awk curl; do
    command -v $tool >/dev/null || { echo "missing $tool (apt-get install sip-tester kamailio util-linux iproute2 curl)" >&2; exit 2; }
done

STAMP=$(date +%Y%m%d-%H%M%S)
RUN=$ROOT/target/bench/$STAMP-$MODE
mkdir -p "$RUN" benches/results || exit 2
LOG=$RUN/steps.log
T0=$(date +%s)

say() { echo "$*" | tee -a "$LOG"; }
. "$ROOT/benches/lib.sh"


if [ $BUILD = 1 ]; then
    say "building: cargo build --release --locked"
    cargo build --release --locked 2>&1 | tail -1
fi
# our own copy: the shared target dir may be rebuilt by someone else during the run
cp target/release/roundabout "$RUN/roundabout" || exit 2

# ---------------------------------------------------------------- process helpers

# utime+stime (ticks) summed over the tree
tree_ticks() {
    local t=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' /proc/$p/stat 2>/dev/null) && t=$((t + ${v:-0}))
    done
    echo $t
}
ticks_of() { awk '{sub(/^.*\) /, ""); print $12 + $13}' /proc/$1/stat 2>/dev/null || echo 0; }
# sum of a /proc/PID/status field (kB) over the tree
tree_status_kb() {
    local t=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk -v f="$2:" '$1 == f {print $2}' /proc/$p/status 2>/dev/null) && t=$((t + ${v:-0}))
    done
    echo $t
}
# sum of a smaps_rollup field (kB; default Pss) over the tree
tree_pss_kb() {
    local t=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk -v f="${2:-Pss}:" '$1 == f {print $2}' /proc/$p/smaps_rollup 2>/dev/null) && t=$((t + ${v:-0}))
    done
    echo $t
}

port_busy() { ss -H -uan "src $1" | grep -q . || ss -H -tln "src $1" | grep -q .; }

# datagrams dropped by the kernel (receive buffer full) on the UDP socket bound to ip:port
udp_drops() {
    local hex
    hex=$(printf '%02X%02X%02X%02X:%04X' $(echo "${1%:*}" | awk -F. '{print $4, $3, $2, $1}') "${1#*:}")
    awk -v a="$hex" '$2 == a {d += $NF} END {print d + 0}' /proc/net/udp
}

# "receive / send" buffer sizes (bytes) the kernel gave the UDP socket bound to ip:port
udp_bufs() {
    ss -H -uamn "src $1" 2>/dev/null | grep -o 'skmem:([^)]*)' | head -1 |
        awk -F'[(),]' '{for (i = 2; i <= NF; i++) {if ($i ~ /^rb/) r = substr($i, 3); if ($i ~ /^tb/) t = substr($i, 3)}}
            END {if (r == "") print "-"; else print r " / " t}'
}

file_size() { if [ -f "$1" ]; then stat -c %s "$1"; else echo 0; fi; }

# wait (at most QUIET_MAX s) until both CPUs are less than 15 % busy over half a second
wait_quiet() {
    local i a0 a1 b0 b1 busy0 busy1
    for i in $(seq $((QUIET_MAX * 2))); do
        a0=$(cpu_busy 0) a1=$(cpu_busy 1); sleep 0.5; b0=$(cpu_busy 0) b1=$(cpu_busy 1)
        busy0=$(( (b0 - a0) * 200 / HZ )) busy1=$(( (b1 - a1) * 200 / HZ ))
        [ $busy0 -lt 15 ] && [ $busy1 -lt 15 ] && { echo "quiet"; return; }
    done
    echo "NOT quiet after ${QUIET_MAX}s (CPU 0 ${busy0}%, CPU 1 ${busy1}% busy)"
}

sipp_t() { [ "$1" = udp ] && echo u1 || echo t1; }

# the last value of a column of a SIPp statistics file (-trace_stat; cumulative counters)
stat_col() { # $1 file, $2 column name
    awk -F';' -v c="$2" 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == c) k = i; next}
        {l = $0} END {split(l, v, ";"); print (k ? v[k] + 0 : 0)}' "$1" 2>/dev/null || echo 0
}

# ---------------------------------------------------------------- proxies and SIPps

PROXY_PID="" PROXY_ADDR="" UAS_PID="" UAC_PID=""
declare -A PROXY_UDP_BUFS   # per proxy: "receive / send" buffer bytes of its UDP socket
UAC_EXTRA=() UAS_EXTRA=()   # more SIPp arguments (the loss and memory parts)

start_proxy() { # $1 proxy, $2 out transport, $3 dir, $4 "metrics" to serve Roundabout's /metrics
    local dir=$3 metrics=()
    mkdir -p "$dir"
    if [ "$1" = roundabout ]; then
        PROXY_ADDR=$IP_RBT:$PORT_RBT
        [ "${4:-}" = metrics ] && metrics=(-metrics-addr "$IP_RBT:$PORT_METRICS")
        (cd "$dir" && exec taskset -c 0 "$RUN/roundabout" -local-ip $IP_RBT \
            -udp-port $PORT_RBT -tcp-port $PORT_RBT -tls-port 0 -ws-port 0 -wss-port 0 \
            -strict-host -trusted-server "$IP_UAS::$PORT_UAS:$2:" -log-level warn \
            -pike-limit 0 -max-transactions $RBT_MAX_TX "${metrics[@]}" \
            >"$dir/proxy.log" 2>&1) &
    else
        PROXY_ADDR=$IP_KAM:$PORT_KAM
        (cd "$dir" && exec taskset -c 0 kamailio -f "$ROOT/benches/kamailio-relay.cfg" -DD -E \
            -m 1024 -M 32 -w "$dir" -Y "$dir" -P "$dir/kamailio.pid" \
            -l udp:$PROXY_ADDR -l tcp:$PROXY_ADDR >"$dir/proxy.log" 2>&1) &
    fi
    PROXY_PID=$!
    wait_listen udp $PROXY_ADDR && wait_listen tcp $PROXY_ADDR || {
        say "!! $1 did not start; log: $dir/proxy.log"; tail -5 "$dir/proxy.log"; return 1; }
    sleep 0.3
    [ -n "${PROXY_UDP_BUFS[$1]:-}" ] || PROXY_UDP_BUFS[$1]=$(udp_bufs $PROXY_ADDR)
}

start_uas() { # $1 transport, $2 dir, $3 scenario file (default uas.xml); UAS_EXTRA appended
    (cd "$2" && exec taskset -c 1 sipp -sf "$ROOT/benches/sipp/${3:-uas.xml}" -i $IP_UAS -p $PORT_UAS \
        -t "$(sipp_t "$1")" -bind_local -nostdin -buff_size $SIPP_BUFF -reconnect_close false \
        -max_recv_loops 10000 -trace_err -error_file "$2/uas-errors.log" -timeout 3600s \
        "${UAS_EXTRA[@]}" >"$2/uas.out" 2>&1) &
    UAS_PID=$!
    wait_listen "$1" $IP_UAS:$PORT_UAS || { say "!! SIPp UAS did not start"; return 1; }
    [ -n "${SIPP_UDP_BUFS:-}" ] || [ "$1" != udp ] || SIPP_UDP_BUFS=$(udp_bufs $IP_UAS:$PORT_UAS)
}

# start the caller in the background (UAC_PID): RATE CALLS IN OUT DIR PAUSE_MS RECV_TIMEOUT_MS
# TIMEOUT_S [CALL_LIMIT]; UAC_EXTRA appended
start_uac() {
    local rate=$1 calls=$2 tin=$3 tout=$4 dir=$5
    (cd "$dir" && exec taskset -c 1 sipp $IP_UAS:$PORT_UAS \
        -sf "$ROOT/benches/sipp/uac.xml" -i $IP_UAC -p $PORT_UAC -t "$(sipp_t "$tin")" \
        -rsa $PROXY_ADDR -s bob -key ruri_params ";transport=$tout" -d "$6" \
        -r "$rate" -m "$calls" -l "${9:-$((rate * 4 + 100))}" -buff_size $SIPP_BUFF \
        -max_recv_loops 10000 -recv_timeout "$7" -timeout "$8s" -timeout_error \
        -bind_local -nostdin -reconnect_close false -trace_err -error_file uac-errors.log \
        -trace_rtt -rtt_freq $RTT_FREQ -trace_stat -stf uac-stats.csv -fd 1 "${UAC_EXTRA[@]}" \
        >uac.out 2>&1) &
    UAC_PID=$!
}

# ---------------------------------------------------------------- one load step

# run_calls RATE SECS IN OUT DIR TAIL: sets S_* results. The proxy's CPU is counted from the
# first call until TAIL s after the caller finished.
run_calls() {
    local rate=$1 secs=$2 tin=$3 tout=$4 dir=$5 tail=$6
    local calls=$(( (rate * secs + RTT_FREQ - 1) / RTT_FREQ * RTT_FREQ ))
    mkdir -p "$dir"
    local uas_err0 uas_t0 p_t0 p_t1 c0_0 c0_1 c1_0 rc dp0 ds0 w0 w1
    uas_err0=$(file_size "$RUN/$CUR/uas-errors.log")
    uas_t0=$(ticks_of $UAS_PID)
    p_t0=$(tree_ticks $PROXY_PID)
    c0_0=$(cpu_busy 0) c1_0=$(cpu_busy 1)
    dp0=$(udp_drops $PROXY_ADDR)
    ds0=$(( $(udp_drops $IP_UAC:$PORT_UAC) + $(udp_drops $IP_UAS:$PORT_UAS) ))
    w0=$(date +%s%N)
    start_uac "$rate" "$calls" "$tin" "$tout" "$dir" $HOLD_MS 4000 $((secs + 30))
    # the load window: CPU use of the SIPps and the proxy while calls are being offered
    sleep "$secs"
    local wu wa wp
    wu=$(ticks_of $UAC_PID) wa=$(ticks_of $UAS_PID) wp=$(tree_ticks $PROXY_PID)
    # CPU 1 used by others than the two SIPps while the calls are offered, %
    S_OTHER1=$(( ($(cpu_busy 1) - c1_0 - (wu + wa - uas_t0)) * 100 / HZ / secs ))
    [ $S_OTHER1 -lt 0 ] && S_OTHER1=0
    S_PSS=$(tree_pss_kb $PROXY_PID)
    [ -n "${SIPP_UDP_BUFS:-}" ] || [ "$tin" != udp ] || SIPP_UDP_BUFS=$(udp_bufs $IP_UAC:$PORT_UAC)
    S_SIPP_PCT=$(( (wu + wa - uas_t0) * 100 / HZ / secs ))
    S_PROXY_PCT=$(( (wp - p_t0) * 100 / HZ / secs ))
    wait $UAC_PID
    rc=$?
    w1=$(date +%s%N)
    sleep "$tail"
    p_t1=$(tree_ticks $PROXY_PID)
    c0_1=$(cpu_busy 0)
    S_DROPS_PROXY=$(( $(udp_drops $PROXY_ADDR) - dp0 ))
    S_DROPS_SIPP=$(( $(udp_drops $IP_UAC:$PORT_UAC) + $(udp_drops $IP_UAS:$PORT_UAS) - ds0 ))
    S_CALLS=$calls
    S_RC=$rc
    S_WALL=$(awk -v a=$w0 -v b=$w1 'BEGIN{printf "%.2f", (b - a) / 1e9}')
    S_PROXY_S=$(awk -v t=$((p_t1 - p_t0)) -v hz=$HZ 'BEGIN{printf "%.2f", t / hz}')
    # CPU 0 used by others than the proxy, % of the measured window
    S_OTHER0=$(awk -v all=$((c0_1 - c0_0)) -v p=$((p_t1 - p_t0)) -v w=$S_WALL -v s=$tail -v hz=$HZ \
        'BEGIN{o = (all - p) / hz / (w + s) * 100; if (o < 0) o = 0; printf "%.0f", o}')
    S_OK=$(stat_col "$dir/uac-stats.csv" "SuccessfulCall(C)")
    S_FAILED=$(stat_col "$dir/uac-stats.csv" "FailedCall(C)")
    S_RETRANS=$(stat_col "$dir/uac-stats.csv" "Retransmissions(C)")
    S_UAS_ERR=$(( $(file_size "$RUN/$CUR/uas-errors.log") - uas_err0 ))
    # setup times (whole ms) and the rate actually offered, from the per-call trace
    read -r S_N S_RATE < <(cat "$dir"/*_rtt.csv 2>/dev/null | awk -F';' '
        $3 == "1" {n++; if (n == 1 || $1 < lo) lo = $1; if ($1 > hi) hi = $1}
        END {printf "%d %.0f\n", n, (hi > lo ? (n - 1) / (hi - lo) * 1000 : 0)}')
    read -r S_P50 S_P99 S_MAX S_MEAN < <(cat "$dir"/*_rtt.csv 2>/dev/null | awk -F';' '$3 == "1" {print $2}' |
        sort -n | awk '{v[NR] = $1; s += $1} END {if (NR < 2) print "- - - -";
            else printf "%.0f %.0f %.0f %.2f\n", v[int((NR - 1) * 0.50) + 1], v[int((NR - 1) * 0.99) + 1], v[NR], s / NR}')
    S_CALLS_OK=1 S_PASS=1 S_WHY=""
    [ "$S_RC" = 0 ] || { S_CALLS_OK=0; S_WHY+=" sipp-exit=$S_RC"; }
    [ "$S_OK" = "$calls" ] || { S_CALLS_OK=0; S_WHY+=" successful=$S_OK/$calls"; }
    [ "$S_FAILED" = 0 ] || { S_CALLS_OK=0; S_WHY+=" failed=$S_FAILED"; }
    [ "$S_UAS_ERR" -le 0 ] || { S_CALLS_OK=0; S_WHY+=" uas-errors"; }
    S_PASS=$S_CALLS_OK
    if [ "$S_P99" = "-" ] || [ "$S_P99" -ge $P99_LIMIT ]; then S_PASS=0; S_WHY+=" p99=${S_P99}ms"; fi
    S_SIPP_BOUND=0
    [ "$S_SIPP_PCT" -ge $SIPP_BOUND_PCT ] && S_SIPP_BOUND=1
    local verdict=pass
    [ $S_PASS = 1 ] || verdict="FAIL:$S_WHY"
    say "  $(printf '%5d' "$rate") cps x ${secs}s: calls $S_OK/$calls mean ${S_MEAN} p50 ${S_P50} p99 ${S_P99} max ${S_MAX} ms, answered at $S_RATE cps; load window: proxy ${S_PROXY_PCT}% of CPU 0, SIPps ${S_SIPP_PCT}% of CPU 1 (others ${S_OTHER1}%); proxy ${S_PROXY_S} s CPU in all (+${tail} s), others on CPU 0 ${S_OTHER0}%; UDP drops: proxy $S_DROPS_PROXY, SIPps $S_DROPS_SIPP; SIPp retransmissions $S_RETRANS -> $verdict"
}

# ---------------------------------------------------------------- calls: fixed rates, then the sweep

NOTES=0
declare -A R_NOTE R_MAX R_BOUND R_HWM_PEAK
declare -A F_CALLS_OK F_PASS F_CPU F_EST F_OK F_N F_MEAN F_P50 F_P99 F_PSS F_SIPP F_OTHER1 F_SDROPS F_PDROPS F_OTHER0
note() { R_NOTE[$1]+="$2; "; NOTES=$((NOTES + 1)); }

# stop the proxy and the callee and start them again (after a failed step: no leftovers)
restart_pair() { # $1 proxy, $2 out transport, $3 dir
    local hwm
    hwm=$(tree_status_kb $PROXY_PID VmHWM)
    [ "$hwm" -gt "$HWM_MAX" ] && HWM_MAX=$hwm
    stop_pid $UAS_PID
    stop_pid $PROXY_PID
    start_proxy "$1" "$2" "$3" && start_uas "$2" "$3"
}

bench_one() { # $1 proxy, $2 scenario
    local proxy=$1 sc=$2 tin=${2%-*} tout=${2#*-} key="$1/$2"
    CUR=$proxy-$sc
    local dir=$RUN/$CUR
    mkdir -p "$dir"
    say "== $proxy $tin->$tout (load: $(cut -d' ' -f1-3 /proc/loadavg); machine $(wait_quiet))"
    HWM_MAX=0
    start_proxy "$proxy" "$tout" "$dir" || { note "$key" "did not start"; return; }
    start_uas "$tout" "$dir" || { stop_pid $PROXY_PID; note "$key" "UAS did not start"; return; }
    # warm-up: a few calls so connections exist before measuring
    run_calls 200 1 "$tin" "$tout" "$dir/warmup" "$SETTLE" >/dev/null

    # the fixed rates are also the sweep's first steps: pass = highest passing rate,
    # fail = lowest failing one above it
    local rate k pass=0 pass_bound=0 fail=0 fail_bound=0 i
    for rate in ${RATES//,/ }; do
        k=$key/$rate
        say " fixed rate $rate cps:"
        run_calls "$rate" "$FIXED_SECS" "$tin" "$tout" "$dir/fixed-$rate" "$DRAIN"
        F_CALLS_OK[$k]=$S_CALLS_OK F_PASS[$k]=$S_PASS F_OK[$k]=$S_OK F_N[$k]=$S_CALLS
        F_CPU[$k]=$(awk -v s=$S_PROXY_S -v n=$S_CALLS 'BEGIN{printf "%.3f", s / n * 1000}')
        F_EST[$k]=$(awk -v s=$S_PROXY_S -v n=$S_CALLS 'BEGIN{if (s > 0) printf "%.0f", n / s; else print "-"}')
        F_MEAN[$k]=$S_MEAN F_P50[$k]=$S_P50 F_P99[$k]=$S_P99 F_PSS[$k]=$S_PSS F_SIPP[$k]=$S_SIPP_PCT F_OTHER1[$k]=$S_OTHER1
        F_SDROPS[$k]=$S_DROPS_SIPP F_PDROPS[$k]=$S_DROPS_PROXY F_OTHER0[$k]=$S_OTHER0
        if [ $S_PASS = 1 ]; then
            [ "$rate" -gt $pass ] && pass=$rate pass_bound=$S_SIPP_BOUND
        else
            note "$key" "$rate cps failed:$S_WHY"
            { [ $fail = 0 ] || [ "$rate" -lt $fail ]; } && fail=$rate fail_bound=$S_SIPP_BOUND
            restart_pair "$proxy" "$tout" "$dir" || return
        fi
    done
    [ $fail != 0 ] && [ $fail -lt $pass ] && fail=0

    say " sweep:"
    if [ $pass != 0 ] && [ $fail = 0 ] && [ $pass_bound = 1 ]; then
        fail=$pass fail_bound=1             # the generator ran out before the proxy
    elif [ $pass != 0 ] && [ $fail = 0 ]; then
        rate=$pass
        for i in $(seq $MAX_UP); do
            rate=$(awk -v r=$rate -v f=$FACTOR 'BEGIN{printf "%d", int(r * f / 50 + 0.5) * 50}')
            run_calls "$rate" "$STEP_SECS" "$tin" "$tout" "$dir/step-$rate" "$SETTLE"
            if [ $S_PASS = 1 ]; then
                pass=$rate
                [ $S_SIPP_BOUND = 1 ] && { fail=$rate; fail_bound=1; break; }
            else
                fail=$rate fail_bound=$S_SIPP_BOUND
                restart_pair "$proxy" "$tout" "$dir" || return
                break
            fi
        done
    elif [ $pass = 0 ] && [ $fail != 0 ]; then # every fixed rate failed: go down
        rate=$((fail / 2))
        for i in 1 2 3; do
            run_calls "$rate" "$STEP_SECS" "$tin" "$tout" "$dir/step-$rate" "$SETTLE"
            if [ $S_PASS = 1 ]; then pass=$rate; break; fi
            fail=$rate fail_bound=$S_SIPP_BOUND; rate=$((rate / 2))
            restart_pair "$proxy" "$tout" "$dir" || return
        done
    fi
    if [ $pass != 0 ] && [ $fail -gt $pass ]; then
        for i in $(seq $BISECT); do
            rate=$(( (pass + fail) / 2 / 50 * 50 ))
            [ $rate -le $pass ] && break
            run_calls "$rate" "$STEP_SECS" "$tin" "$tout" "$dir/step-$rate" "$SETTLE"
            if [ $S_PASS = 1 ]; then pass=$rate; [ $S_SIPP_BOUND = 1 ] && fail_bound=1
            else fail=$rate fail_bound=$S_SIPP_BOUND; restart_pair "$proxy" "$tout" "$dir" || return; fi
        done
    fi
    [ $fail = 0 ] && fail_bound=2      # never failed within MAX_UP steps
    R_MAX[$key]=$pass R_BOUND[$key]=$fail_bound
    local hwm
    hwm=$(tree_status_kb $PROXY_PID VmHWM)
    [ "$hwm" -gt "$HWM_MAX" ] && HWM_MAX=$hwm
    R_HWM_PEAK[$key]=$HWM_MAX
    stop_pid $UAS_PID
    stop_pid $PROXY_PID
    say " -> max $pass cps$([ $fail_bound = 1 ] && echo ' (SIPp-bound)')$([ $fail_bound = 2 ] && echo ' (top of the sweep)')"
}

# ---------------------------------------------------------------- memory per transaction and per call

declare -A M_N M_IDLE_RSS M_IDLE_PSS M_RSS M_PSS M_HELD M_WAITING M_IDLE_ANON M_ANON M_IDLE_SHMEM M_SHMEM

# Roundabout's own gauge NAME from /metrics ("-" for Kamailio or when unreachable)
rbt_gauge() {
    [ "$1" = roundabout ] || { echo "-"; return; }
    curl -s --max-time 2 "http://$IP_RBT:$PORT_METRICS/metrics" |
        awk -v n="$2" '$1 == n {v = $2} END {print (v == "" ? "-" : v)}'
}

mem_phase() { # $1 proxy, $2 ringing|up
    local proxy=$1 kind=$2 key=$1/$2 uac_pause=$HOLD_MS
    CUR=memory-$proxy-$kind
    local dir=$RUN/$CUR
    mkdir -p "$dir/load"
    say "== memory, $kind: $proxy, $MEM_RATE cps x $MEM_SECS s, held $MEM_HOLD s (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    start_proxy "$proxy" udp "$dir" metrics || { note "memory $key" "did not start"; return; }
    start_uas udp "$dir" || { stop_pid $PROXY_PID; note "memory $key" "UAS did not start"; return; }
    run_calls 200 1 udp udp "$dir/warmup" "$SETTLE" >/dev/null
    if [ "$kind" = ringing ]; then
        stop_pid $UAS_PID
        UAS_EXTRA=(-d $((MEM_HOLD * 1000)))
        start_uas udp "$dir" uas-ringing.xml || { UAS_EXTRA=(); stop_pid $PROXY_PID; note "memory $key" "UAS did not start"; return; }
        UAS_EXTRA=()
    else
        uac_pause=$((MEM_HOLD * 1000))
    fi
    sleep 1
    M_IDLE_RSS[$key]=$(tree_status_kb $PROXY_PID VmRSS) M_IDLE_PSS[$key]=$(tree_pss_kb $PROXY_PID)
    M_IDLE_ANON[$key]=$(tree_pss_kb $PROXY_PID Pss_Anon) M_IDLE_SHMEM[$key]=$(tree_pss_kb $PROXY_PID Pss_Shmem)
    local n=$((MEM_RATE * MEM_SECS))
    start_uac $MEM_RATE $n udp udp "$dir/load" $uac_pause $(((MEM_HOLD + 10) * 1000)) $((MEM_HOLD + 60)) $((n + 100))
    # every call has started (MEM_SECS), none has been answered (ringing) or hung up (up) yet
    sleep $((MEM_SECS + 2))
    M_RSS[$key]=$(tree_status_kb $PROXY_PID VmRSS) M_PSS[$key]=$(tree_pss_kb $PROXY_PID)
    M_ANON[$key]=$(tree_pss_kb $PROXY_PID Pss_Anon) M_SHMEM[$key]=$(tree_pss_kb $PROXY_PID Pss_Shmem)
    M_HELD[$key]=$(rbt_gauge "$proxy" roundabout_transactions)
    M_WAITING[$key]=$(rbt_gauge "$proxy" roundabout_transactions_in_flight)
    local current failed
    current=$(stat_col "$dir/load/uac-stats.csv" "CurrentCall")
    failed=$(stat_col "$dir/load/uac-stats.csv" "FailedCall(C)")
    M_N[$key]=$current
    [ "$current" = $n ] && [ "$failed" = 0 ] || note "memory $key" "$current of $n calls in progress, $failed failed"
    say "  idle RSS $(mib ${M_IDLE_RSS[$key]}) MiB PSS $(mib ${M_IDLE_PSS[$key]}) MiB; with $current calls in progress ($failed failed): RSS $(mib ${M_RSS[$key]}) MiB PSS $(mib ${M_PSS[$key]}) MiB; Roundabout transactions held ${M_HELD[$key]}, awaiting a final answer ${M_WAITING[$key]}"
    stop_pid $UAC_PID
    stop_pid $UAS_PID
    stop_pid $PROXY_PID
}

# ---------------------------------------------------------------- calls under loss

declare -A L_N L_OK L_FAILED L_UAS_OK L_UAS_FAILED L_RETR_UAC L_RETR_UAS L_CAUSES L_MEAN L_P99

# SIPp error logs -> "N x event; ..." (call ids, times and the messages' bodies taken out;
# a message SIPp received is named by its first line and CSeq method)
error_causes() {
    cat "$@" 2>/dev/null | perl -0777 -ne '
        while (/\d{10}\.\d{6}: (.*?)(?=\d{4}-\d\d-\d\d\t\d|\z)/sg) {
            my $e = $1; my $m = $e =~ /CSeq: \d+ (\w+)/ ? " ($1)" : "";
            $e =~ s/\n.*//s; $e =~ s/Call-Id: \S+,\s*//; $e =~ s/ for call: \S+//; $e =~ s/call \S+@[\d.]+/call/;
            $e =~ s/\s*without label.*//; print "$e$m\n";
        }' | sort | uniq -c | sort -rn | head -5 |
        awk '{c = $1; $1 = ""; printf "%s%d x%s", (NR > 1 ? ", " : ""), c, $0} END {if (NR == 0) printf "none"}'
}

loss_one() { # $1 proxy, $2 scenario
    local proxy=$1 sc=$2 tin=${2%-*} tout=${2#*-} key="$1/$2"
    CUR=loss-$proxy-$sc
    local dir=$RUN/$CUR
    mkdir -p "$dir"
    say "== loss $LOSS_PCT % on the UDP side: $proxy $tin->$tout, $LOSS_RATE cps x $LOSS_SECS s"
    start_proxy "$proxy" "$tout" "$dir" || { note "loss $key" "did not start"; return; }
    UAS_EXTRA=(-trace_stat -stf "$dir/uas-stats.csv" -fd 1)
    [ "$tout" = udp ] && UAS_EXTRA+=(-lost $LOSS_PCT)
    start_uas "$tout" "$dir" || { stop_pid $PROXY_PID; UAS_EXTRA=(); note "loss $key" "UAS did not start"; return; }
    UAS_EXTRA=()
    [ "$tin" = udp ] && UAC_EXTRA=(-lost $LOSS_PCT)
    run_calls $LOSS_RATE $LOSS_SECS "$tin" "$tout" "$dir/calls" "$SETTLE"
    UAC_EXTRA=()
    sleep 3 # the callee's last calls end 2 s after their BYE; its statistics are written each second
    L_N[$key]=$S_CALLS L_OK[$key]=$S_OK L_FAILED[$key]=$S_FAILED L_RETR_UAC[$key]=$S_RETRANS
    L_MEAN[$key]=$S_MEAN L_P99[$key]=$S_P99
    L_UAS_OK[$key]=$(stat_col "$dir/uas-stats.csv" "SuccessfulCall(C)")
    L_UAS_FAILED[$key]=$(stat_col "$dir/uas-stats.csv" "FailedCall(C)")
    L_RETR_UAS[$key]=$(stat_col "$dir/uas-stats.csv" "Retransmissions(C)")
    L_CAUSES[$key]="caller: $(error_causes "$dir/calls/uac-errors.log"); callee: $(error_causes "$dir/uas-errors.log")"
    say "  callee: ${L_UAS_OK[$key]} completed, ${L_UAS_FAILED[$key]} failed, ${L_RETR_UAS[$key]} retransmissions; SIPp errors: ${L_CAUSES[$key]}"
    stop_pid $UAS_PID
    stop_pid $PROXY_PID
}

# ---------------------------------------------------------------- run

mib() { awk -v k="$1" 'BEGIN{ if (k == "" || k == 0) print "-"; else printf "%.1f", k / 1024 }'; }

for a in $IP_RBT:$PORT_RBT $IP_UAC:$PORT_UAC $IP_UAS:$PORT_UAS $IP_KAM:$PORT_KAM $IP_RBT:$PORT_METRICS; do
    port_busy $a && { echo "$a is in use (set BENCH_PORT to another base port)" >&2; exit 2; }
done

say "Roundabout call benchmark ($MODE, parts $PARTS), raw logs in $RUN"
say "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
if has_part calls; then
    for sc in ${SCENARIOS//,/ }; do
        for proxy in ${PROXIES//,/ }; do bench_one "$proxy" "$sc"; done
    done
fi
if has_part memory; then
    for proxy in ${PROXIES//,/ }; do
        for kind in ringing up; do mem_phase "$proxy" $kind; done
    done
fi
if has_part loss; then
    for sc in udp-tcp tcp-udp; do
        for proxy in ${PROXIES//,/ }; do loss_one "$proxy" "$sc"; done
    done
fi
T1=$(date +%s)

# ---------------------------------------------------------------- report

maxcell() { # key
    local m=${R_MAX[$1]:-} b=${R_BOUND[$1]:-0}
    [ -z "$m" ] && { echo "-"; return; }
    case $b in 1) echo ">= $m (SIPp-bound)" ;; 2) echo ">= $m (top of sweep)" ;; *) echo "$m" ;; esac
}
kib_per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN{ if (n + 0 > 0) printf "%.2f", (b - a) / n; else print "-" }'; }

fixed_tables() {
    echo "Fixed rates ($FIXED_SECS s of calls each; CPU counted until $DRAIN s after the last call):"
    echo
    echo "| scenario | calls/s | proxy | calls (successful / offered) | CPU s / 1000 calls | cps/core est. | setup mean / p50 / p99 (ms) | PSS at the end of the calls (MiB) | SIPps: CPU 1 used / others on CPU 1 / SIPps' UDP drops | proxy UDP drops | others on CPU 0 |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    local sc rate proxy k r q cpu okc
    for sc in ${SCENARIOS//,/ }; do
        for rate in ${RATES//,/ }; do
            for proxy in ${PROXIES//,/ }; do
                k=$proxy/$sc/$rate
                [ -n "${F_N[$k]:-}" ] || continue
                if [ "${F_CALLS_OK[$k]}" = 1 ]; then
                    okc="${F_OK[$k]} / ${F_N[$k]}" cpu=${F_CPU[$k]}
                else
                    okc="**$((F_N[$k] - F_OK[$k])) not completed** (${F_OK[$k]} / ${F_N[$k]})" cpu="- (calls failed)"
                fi
                echo "| ${sc/-/ -> } | $rate | $proxy | $okc | $cpu | $([ "${F_CALLS_OK[$k]}" = 1 ] && echo "${F_EST[$k]}" || echo -) | ${F_MEAN[$k]} / ${F_P50[$k]} / ${F_P99[$k]}$([ "${F_PASS[$k]}" = 1 ] || [ "${F_CALLS_OK[$k]}" = 0 ] || echo " (p99 >= $P99_LIMIT)") | $(mib "${F_PSS[$k]}") | ${F_SIPP[$k]} % / ${F_OTHER1[$k]} % / ${F_SDROPS[$k]} | ${F_PDROPS[$k]} | ${F_OTHER0[$k]} % |"
            done
            r=roundabout/$sc/$rate q=kamailio/$sc/$rate
            if [ "${F_CALLS_OK[$r]:-0}" = 1 ] && [ "${F_CALLS_OK[$q]:-0}" = 1 ]; then
                echo "| ${sc/-/ -> } | $rate | **Roundabout / Kamailio** | | $(ratio "${F_CPU[$r]}" "${F_CPU[$q]}") | $(ratio "${F_EST[$r]}" "${F_EST[$q]}") | $(ratio "${F_MEAN[$r]}" "${F_MEAN[$q]}") / $(ratio "${F_P50[$r]}" "${F_P50[$q]}") / $(ratio "${F_P99[$r]}" "${F_P99[$q]}") | $(ratio "${F_PSS[$r]}" "${F_PSS[$q]}") | | | |"
            fi
        done
    done
    echo
    echo "Max rate (sweep steps of $STEP_SECS s, seeded by the fixed rates):"
    echo
    echo "| scenario | proxy | max cps (0 failed, p99 < ${P99_LIMIT} ms) | peak RSS over all steps (MiB) |"
    echo "|---|---|---|---|"
    local mr
    for sc in ${SCENARIOS//,/ }; do
        for proxy in ${PROXIES//,/ }; do
            k=$proxy/$sc
            [ -n "${R_MAX[$k]:-}" ] && echo "| ${sc/-/ -> } | $proxy | $(maxcell $k) | $(mib "${R_HWM_PEAK[$k]:-}") |"
        done
        r=roundabout/$sc q=kamailio/$sc
        if [ -n "${R_MAX[$r]:-}" ] && [ -n "${R_MAX[$q]:-}" ]; then
            mr=$(ratio "${R_MAX[$r]}" "${R_MAX[$q]}")
            [ "${R_BOUND[$r]}" != 0 ] && [ "${R_BOUND[$q]}" != 0 ] && mr="n/a (both SIPp-bound)"
            [ "${R_BOUND[$r]}" != 0 ] && [ "${R_BOUND[$q]}" = 0 ] && mr=">= $mr"
            echo "| ${sc/-/ -> } | **Roundabout / Kamailio** | $mr | $(ratio "${R_HWM_PEAK[$r]}" "${R_HWM_PEAK[$q]}") |"
        fi
    done
    echo
    echo "How to read it: CPU s / 1000 calls: utime+stime of every process of the proxy (Kamailio:"
    echo "main, UDP and TCP workers, timers, TCP main) from /proc/PID/stat, from the first call until"
    echo "$DRAIN s after the last (the lingering transactions' expiry included); cps/core est. = 1000 /"
    echo "that. A rate where a call failed has no CPU figure. Setup time: INVITE sent -> 200 received"
    echo "at the caller, SIPp -trace_rtt: SIPp counts whole milliseconds of its own clock, so p50/p99"
    echo "are coarse and the mean (of those) is the finer comparison; a ratio is \"-\" when a value is 0."
    echo "PSS: the proxy's pages, shared ones divided among the processes that map them (smaps_rollup)."
    echo "Peak RSS: VmHWM summed over the proxy's processes (Kamailio's shared memory is counted once per"
    echo "process that touched it: an upper bound). \"SIPps: CPU 1 used\": both SIPps while offering the"
    echo "calls; at >= ${SIPP_BOUND_PCT} % the generator, not the proxy, is the limit (\"SIPp-bound\"); CPU 1 used by"
    echo "other processes leaves the SIPps less of it. UDP drops:"
    echo "datagrams the kernel dropped on a full receive buffer (/proc/net/udp). \"others on CPU 0\":"
    echo "CPU 0 time used by other processes during the run (noise from other work on the machine)."
    echo "Goals (issue 13): CPU per call at 1,500 calls/s at most 0.25x Kamailio's, max rate at least 3x"
    echo "Kamailio's, at most 0.10 CPU s per 1,000 calls at 5,000 calls/s."
    echo
}

memory_table() {
    echo "Memory per INVITE transaction and per call in flight (UDP -> UDP, $MEM_RATE cps for $MEM_SECS s, sampled at $((MEM_SECS + 2)) s):"
    echo
    echo "| proxy | in flight | items | idle RSS / PSS (MiB) | with them RSS / PSS (MiB) | per item RSS / PSS (KiB) | per item PSS: private anonymous / shared memory (KiB) | Roundabout transactions held / awaiting a final answer |"
    echo "|---|---|---|---|---|---|---|---|"
    local proxy kind k what
    for kind in ringing up; do
        for proxy in ${PROXIES//,/ }; do
            k=$proxy/$kind
            [ -n "${M_N[$k]:-}" ] || continue
            what="INVITE transactions (ringing, 200 held $MEM_HOLD s)"
            [ $kind = up ] && what="established calls (BYE after $MEM_HOLD s)"
            echo "| $proxy | $what | ${M_N[$k]} | $(mib ${M_IDLE_RSS[$k]}) / $(mib ${M_IDLE_PSS[$k]}) | $(mib ${M_RSS[$k]}) / $(mib ${M_PSS[$k]}) | $(kib_per ${M_IDLE_RSS[$k]} ${M_RSS[$k]} ${M_N[$k]}) / $(kib_per ${M_IDLE_PSS[$k]} ${M_PSS[$k]} ${M_N[$k]}) | $(kib_per ${M_IDLE_ANON[$k]} ${M_ANON[$k]} ${M_N[$k]}) / $(kib_per ${M_IDLE_SHMEM[$k]} ${M_SHMEM[$k]} ${M_N[$k]}) | ${M_HELD[$k]} / ${M_WAITING[$k]} |"
        done
    done
    echo
    echo "Per item = (memory with them - memory idle) / calls in progress, from a fresh proxy after a"
    echo "200-call warm-up. A ringing call holds one INVITE transaction (server and client side) in each"
    echo "proxy. An established call holds no dialog state in either proxy (Record-Route only): what it"
    echo "costs is its answered INVITE transaction, kept to absorb 2xx retransmissions (Roundabout: 32 s,"
    echo "Timer L/M; Kamailio: 5 s, tm wait timer), so calls younger than that cost a transaction and"
    echo "older ones nothing. Where it goes: private anonymous memory is the heap (Roundabout: all of it;"
    echo "Kamailio: its per-process pkg memory), shared memory is Kamailio's shm pool (-m), where tm keeps"
    echo "its transactions (Pss_Anon / Pss_Shmem of smaps_rollup). Pages a process has touched stay"
    echo "counted after the chunks in them are freed (Kamailio's shm allocator and the system allocator"
    echo "Roundabout uses both keep them for reuse): the figures are what the process holds. Roundabout's"
    echo "own count of the transactions it holds includes the warm-up's (INVITE and BYE, still lingering)."
    echo
}

loss_table() {
    echo "Calls under loss: SIPp -lost $LOSS_PCT (1 % of the messages it sends and of those it receives) on the UDP side only, $LOSS_RATE cps for $LOSS_SECS s:"
    echo
    echo "| scenario | proxy | completed at the caller / attempted | failed at the caller | completed / failed at the callee | SIPp retransmissions caller / callee | setup mean / p99 (ms) | SIPp error log events |"
    echo "|---|---|---|---|---|---|---|---|"
    local sc proxy k
    for sc in udp-tcp tcp-udp; do
        for proxy in ${PROXIES//,/ }; do
            k=$proxy/$sc
            [ -n "${L_N[$k]:-}" ] || continue
            echo "| ${sc/-/ -> } | $proxy | ${L_OK[$k]} / ${L_N[$k]} | ${L_FAILED[$k]} | ${L_UAS_OK[$k]} / ${L_UAS_FAILED[$k]} | ${L_RETR_UAC[$k]} / ${L_RETR_UAS[$k]} | ${L_MEAN[$k]} / ${L_P99[$k]} | ${L_CAUSES[$k]} |"
        done
    done
    echo
    echo "SIPp retransmits over UDP only (T1 500 ms, doubling): a SIPp callee on TCP never retransmits"
    echo "its 2xx (RFC 3261 13.3.1.4 has a UAS do so whatever its transport). In UDP -> TCP a 2xx lost"
    echo "on its way to the caller is then recovered only if the proxy retransmits it (Roundabout does"
    echo "for a reliable-to-UDP bridge, Kamailio does not: the caller gives up after 4 s and CANCELs);"
    echo "an ACK lost on the UDP side is recovered by neither (the callee sees the BYE first: \"unexpected"
    echo "BYE\" at the callee, the call still completes at the caller). In TCP -> UDP the SIPp callee"
    echo "retransmits its 2xx until the ACK and the proxy retransmits the INVITE and BYE; an ACK lost"
    echo "there can still lose the race with the BYE (both come about 500 ms later): \"unexpected BYE\"."
    echo
}

RBT_VERSION=$("$RUN/roundabout" -version 2>&1 | head -1)
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src actors Cargo.toml 2>/dev/null || echo "+local changes")
CMD="bash benches/run.sh$([ $QUICK = 1 ] && echo ' --quick')"
[ "$PARTS" = calls,memory,loss ] || CMD+=" --parts $PARTS"
[ "$SCENARIOS" = udp-tcp,tcp-udp,udp-udp ] || CMD+=" --scenarios $SCENARIOS"
[ "$PROXIES" = roundabout,kamailio ] || CMD+=" --proxies $PROXIES"
[ "$RATES" = 1500,5000 ] || CMD+=" --rates $RATES"
{
echo "# Roundabout vs Kamailio: call benchmark ($MODE)"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), $((T1 - T0)) s"
echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)"
echo "- versions: $RBT_VERSION (git $GIT_REV), $(kamailio -v 2>/dev/null | head -1 | sed 's/^version: //'), $(sipp -v 2>/dev/null | grep -o 'SIPp v[^ ,]*' | head -1)"
echo "- pinning: proxy on CPU 0 (taskset), SIPp UAC + UAS on CPU 1; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- call: INVITE/100/180/200/ACK/500 ms/BYE/200 through the proxy (Record-Route followed); Roundabout with -pike-limit 0 -max-transactions $RBT_MAX_TX"
echo "- generator: SIPp -buff_size $SIPP_BUFF; its UDP socket got receive / send buffers of ${SIPP_UDP_BUFS:--} bytes (net.core.rmem_max $(cat /proc/sys/net/core/rmem_max), wmem_max $(cat /proc/sys/net/core/wmem_max)); its CPU share and UDP drops are in each row"
bufs=""
for proxy in ${PROXIES//,/ }; do bufs+="${bufs:+, }$proxy ${PROXY_UDP_BUFS[$proxy]:--}"; done
echo "- proxies' UDP socket receive / send buffers (bytes, as the kernel set them): $bufs"
echo "- command: \`$CMD\`"
echo
has_part calls && fixed_tables
has_part memory && memory_table
has_part loss && loss_table
[ $NOTES = 0 ] || for k in "${!R_NOTE[@]}"; do echo "- note $k: ${R_NOTE[$k]}"; done
} >"$RUN/report.md"
cp "$RUN/report.md" "$OUT_MD"
cat "$OUT_MD"
echo
echo "written to $OUT_MD (raw logs: $RUN)"
if [ $KEEP = 0 ] && [ $NOTES = 0 ]; then
    # keep the step log and report, drop the bulky per-call traces
    find "$RUN" -name '*_rtt.csv' -delete
fi
