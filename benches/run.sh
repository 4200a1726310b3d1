#!/usr/bin/env bash
# Roundabout call benchmark: Roundabout and Kamailio side by side, same machine, same run.
#
#   bash benches/run.sh            # full run, about 12-15 min -> benches/results/latest.md
#   bash benches/run.sh --quick    # short steps, under 3 min  -> benches/results/latest-quick.md
#
# Options: --quick, --scenarios udp-tcp,tcp-udp,udp-udp, --proxies roundabout,kamailio,
#          --fixed-rate N (calls/s, default 1000), --no-build, --keep (keep the raw logs dir),
#          --wait-quiet S (before each proxy x scenario, wait up to S s for both CPUs to be
#          idle; default 30, 2 with --quick).
# Needs: sipp (Debian sip-tester), kamailio, taskset, ss, awk; root not required.
#
# What runs, for each scenario (caller transport -> callee transport) and each proxy:
#   SIPp UAC (127.0.2.2, CPU 1) -> proxy (CPU 0) -> SIPp UAS (127.0.2.3, CPU 1)
#   INVITE/100/180/200/ACK/hold 500 ms/BYE/200; ACK and BYE follow the Record-Route set
#   through the proxy (benches/sipp/uac.xml, uas.xml). The R-URI is sip:bob@UAS;transport=X,
#   which both proxies route on (Roundabout also has the UAS as -trusted-server with -strict-host).
#   Roundabout: 127.0.2.1, `taskset -c 0` (it then sees one CPU and runs one Router shard),
#               -pike-limit 0 (its flood protection would take one SIPp for a flood; the
#               Kamailio config has no pike either).
#   Kamailio:   127.0.2.4, `taskset -c 0`, benches/kamailio-relay.cfg (tm relay, double RR,
#               loose_route, 1 UDP + 1 TCP worker, -m 1024 MB shm, -M 32 MB pkg).
# Measured, per proxy and scenario:
#   1. fixed rate (--fixed-rate, the same for both proxies): CPU seconds per 1,000 calls
#      (utime+stime from /proc/PID/stat, summed over every process of the proxy, from the
#      first call to SETTLE s after the last), p50/p99 setup time (INVITE sent -> 200
#      received, SIPp -trace_rtt, whole milliseconds), peak RSS (VmHWM, summed over the
#      proxy's processes) and PSS (smaps_rollup, summed: shared pages divided among the
#      processes that map them; for a single process it is about its RSS).
#   2. rate sweep: steps of STEP s at rising rates (x FACTOR) until a step fails, then
#      bisection. A step passes with every call successful (UAC and UAS) and p99 setup
#      < 50 ms. The result is the highest passing rate. When the two SIPps together use
#      >= 85 % of CPU 1 while the calls are offered (the first STEP s) at the failing step,
#      the limit is SIPp's, not the proxy's: the result is then marked "SIPp-bound" and
#      reads ">= N". "cps/core est." is 1000 / (CPU s per 1000 calls): the rate at
#      which the proxy would fill its core, from the fixed-rate measure.
# Machine load: `uptime` and the CPU used on CPU 0 by other processes are logged per run;
# numbers taken while others compile are noisy (the table says how busy CPU 0 was).
# Raw logs: target/bench/<date>/ (kept with --keep or when something failed).
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2

QUICK=0 BUILD=1 KEEP=0 QUIET_ARG=""
SCENARIOS="udp-tcp,tcp-udp,udp-udp"
PROXIES="roundabout,kamailio"
FIXED_RATE=1000
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --scenarios) SCENARIOS=$2; shift ;;
        --proxies) PROXIES=$2; shift ;;
        --fixed-rate) FIXED_RATE=$2; shift ;;
        --wait-quiet) QUIET_ARG=$2; shift ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed 's/^# \{0,1\}//; /^set -u/d'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ $QUICK = 1 ]; then
    FIXED_SECS=4 STEP_SECS=2 START_RATE=2000 FACTOR=1.6 MAX_UP=4 BISECT=1 SETTLE=0.5 QUIET_MAX=2
    OUT_MD=benches/results/latest-quick.md MODE=quick
else
    # the fixed run outlasts the transactions' lifetimes (Roundabout keeps a UDP non-INVITE
    # transaction 32 s after its answer, Kamailio 5 s): its memory is the steady state
    FIXED_SECS=36 STEP_SECS=8 START_RATE=1000 FACTOR=1.4 MAX_UP=8 BISECT=2 SETTLE=2 QUIET_MAX=30
    OUT_MD=benches/results/latest.md MODE=full
fi
[ -n "$QUIET_ARG" ] && QUIET_MAX=$QUIET_ARG
HOLD_MS=500
P99_LIMIT=50
SIPP_BOUND_PCT=85
RTT_FREQ=200            # SIPp dumps response times by 200: calls are rounded to a multiple

IP_RBT=127.0.2.1 IP_UAC=127.0.2.2 IP_UAS=127.0.2.3 IP_KAM=127.0.2.4
BASE=${BENCH_PORT:-15060}
PORT_RBT=$((BASE + 1)) PORT_UAC=$((BASE + 2)) PORT_UAS=$((BASE + 3)) PORT_KAM=$((BASE + 4))
HZ=$(getconf CLK_TCK)

for tool in sipp kamailio taskset ss awk; do
    command -v $tool >/dev/null || { echo "missing $tool (apt-get install sip-tester kamailio util-linux iproute2)" >&2; exit 2; }
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
tree_pss_kb() {
    local t=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk '$1 == "Pss:" {print $2}' /proc/$p/smaps_rollup 2>/dev/null) && t=$((t + ${v:-0}))
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

# ---------------------------------------------------------------- proxies and callee

PROXY_PID="" PROXY_ADDR="" UAS_PID=""

start_proxy() { # $1 proxy, $2 out transport, $3 dir
    local dir=$3
    mkdir -p "$dir"
    if [ "$1" = roundabout ]; then
        PROXY_ADDR=$IP_RBT:$PORT_RBT
        (cd "$dir" && exec taskset -c 0 "$RUN/roundabout" -local-ip $IP_RBT \
            -udp-port $PORT_RBT -tcp-port $PORT_RBT -tls-port 0 -ws-port 0 -wss-port 0 \
            -strict-host -trusted-server "$IP_UAS::$PORT_UAS:$2:" -log-level warn \
            -pike-limit 0 \
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
}


start_uas() { # $1 transport, $2 dir
    (cd "$2" && exec taskset -c 1 sipp -sf "$ROOT/benches/sipp/uas.xml" -i $IP_UAS -p $PORT_UAS \
        -t "$(sipp_t "$1")" -bind_local -nostdin -buff_size 1048576 -reconnect_close false \
        -max_recv_loops 10000 -trace_err -error_file "$2/uas-errors.log" -timeout 3600s \
        >"$2/uas.out" 2>&1) &
    UAS_PID=$!
    wait_listen "$1" $IP_UAS:$PORT_UAS || { say "!! SIPp UAS did not start"; return 1; }
}

# ---------------------------------------------------------------- one load step

# run_calls RATE SECS IN OUT DIR: sets S_* results
run_calls() {
    local rate=$1 secs=$2 tin=$3 tout=$4 dir=$5
    local calls=$(( (rate * secs + RTT_FREQ - 1) / RTT_FREQ * RTT_FREQ ))
    mkdir -p "$dir"
    local uas_err0 uas_t0 uas_t1 p_t0 p_t1 c0_0 c0_1 tm rc
    uas_err0=$(file_size "$RUN/$CUR/uas-errors.log")
    uas_t0=$(ticks_of $UAS_PID)
    p_t0=$(tree_ticks $PROXY_PID)
    c0_0=$(cpu_busy 0)
    local dp0 ds0
    dp0=$(udp_drops $PROXY_ADDR)
    ds0=$(( $(udp_drops $IP_UAC:$PORT_UAC) + $(udp_drops $IP_UAS:$PORT_UAS) ))
    local w0 w1
    w0=$(date +%s%N)
    (cd "$dir" && exec taskset -c 1 sipp $IP_UAS:$PORT_UAS \
        -sf "$ROOT/benches/sipp/uac.xml" -i $IP_UAC -p $PORT_UAC -t "$(sipp_t "$tin")" \
        -rsa $PROXY_ADDR -s bob -key ruri_params ";transport=$tout" -d $HOLD_MS \
        -r "$rate" -m $calls -l $((rate * 4 + 100)) -buff_size 1048576 -max_recv_loops 10000 \
        -recv_timeout 4000 -timeout $((secs + 30))s -timeout_error \
        -bind_local -nostdin -reconnect_close false -trace_err -error_file uac-errors.log \
        -trace_rtt -rtt_freq $RTT_FREQ -trace_stat -stf uac-stats.csv -fd 30 \
        >uac.out 2>&1) &
    local uac=$!
    # the load window: CPU use of the SIPps and the proxy while calls are being offered
    sleep "$secs"
    local wu=$(ticks_of $uac) wa=$(ticks_of $UAS_PID) wp=$(tree_ticks $PROXY_PID)
    S_SIPP_PCT=$(( (wu + wa - uas_t0) * 100 / HZ / secs ))
    S_PROXY_PCT=$(( (wp - p_t0) * 100 / HZ / secs ))
    wait $uac
    rc=$?
    w1=$(date +%s%N)
    sleep "$SETTLE"
    p_t1=$(tree_ticks $PROXY_PID)
    c0_1=$(cpu_busy 0)
    uas_t1=$(ticks_of $UAS_PID)
    S_DROPS_PROXY=$(( $(udp_drops $PROXY_ADDR) - dp0 ))
    S_DROPS_SIPP=$(( $(udp_drops $IP_UAC:$PORT_UAC) + $(udp_drops $IP_UAS:$PORT_UAS) - ds0 ))
    S_CALLS=$calls
    S_RC=$rc
    S_WALL=$(awk -v a=$w0 -v b=$w1 'BEGIN{printf "%.2f", (b - a) / 1e9}')
    S_PROXY_S=$(awk -v t=$((p_t1 - p_t0)) -v hz=$HZ 'BEGIN{printf "%.2f", t / hz}')
    # CPU 0 used by others than the proxy, % of the measured window
    S_OTHER0=$(awk -v all=$((c0_1 - c0_0)) -v p=$((p_t1 - p_t0)) -v w=$S_WALL -v s=$SETTLE -v hz=$HZ \
        'BEGIN{o = (all - p) / hz / (w + s) * 100; if (o < 0) o = 0; printf "%.0f", o}')
    # counters from the last line of SIPp's statistics file
    read -r S_OK S_FAILED < <(awk -F';' 'NR == 1 {for (i = 1; i <= NF; i++) h[$i] = i; next}
        {l = $0} END {split(l, v, ";"); print v[h["SuccessfulCall(C)"]] + 0, v[h["FailedCall(C)"]] + 0}' \
        "$dir/uac-stats.csv" 2>/dev/null || echo "0 0")
    S_UAS_ERR=$(( $(file_size "$RUN/$CUR/uas-errors.log") - uas_err0 ))
    # setup times (whole ms) and the rate actually offered, from the per-call trace
    read -r S_N S_RATE < <(cat "$dir"/*_rtt.csv 2>/dev/null | awk -F';' '
        $3 == "1" {n++; if (n == 1 || $1 < lo) lo = $1; if ($1 > hi) hi = $1}
        END {printf "%d %.0f\n", n, (hi > lo ? (n - 1) / (hi - lo) * 1000 : 0)}')
    read -r S_P50 S_P99 S_MAX S_MEAN < <(cat "$dir"/*_rtt.csv 2>/dev/null | awk -F';' '$3 == "1" {print $2}' |
        sort -n | awk '{v[NR] = $1; s += $1} END {if (NR < 2) print "- - - -";
            else printf "%.0f %.0f %.0f %.2f\n", v[int((NR - 1) * 0.50) + 1], v[int((NR - 1) * 0.99) + 1], v[NR], s / NR}')
    S_PASS=1 S_WHY=""
    [ "$S_RC" = 0 ] || { S_PASS=0; S_WHY+=" sipp-exit=$S_RC"; }
    [ "$S_OK" = "$calls" ] || { S_PASS=0; S_WHY+=" successful=$S_OK/$calls"; }
    [ "$S_FAILED" = 0 ] || { S_PASS=0; S_WHY+=" failed=$S_FAILED"; }
    [ "$S_UAS_ERR" -le 0 ] || { S_PASS=0; S_WHY+=" uas-errors"; }
    if [ "$S_P99" = "-" ] || [ "$S_P99" -ge $P99_LIMIT ]; then S_PASS=0; S_WHY+=" p99=${S_P99}ms"; fi
    S_SIPP_BOUND=0
    [ "$S_SIPP_PCT" -ge $SIPP_BOUND_PCT ] && S_SIPP_BOUND=1
    local verdict=pass
    [ $S_PASS = 1 ] || verdict="FAIL:$S_WHY"
    say "  $(printf '%5d' "$rate") cps x ${secs}s: calls $S_OK/$calls mean ${S_MEAN} p50 ${S_P50} p99 ${S_P99} max ${S_MAX} ms, answered at $S_RATE cps; load window: proxy ${S_PROXY_PCT}% of CPU 0, SIPps ${S_SIPP_PCT}% of CPU 1; proxy ${S_PROXY_S} s CPU in all, others on CPU 0 ${S_OTHER0}%; UDP drops: proxy $S_DROPS_PROXY, UAS $S_DROPS_SIPP -> $verdict"
}

# ---------------------------------------------------------------- one proxy x scenario

NOTES=0
declare -A R_MAX R_BOUND R_CPU R_P50 R_P99 R_MEAN R_HWM R_PSS R_HWM_PEAK R_NOTE R_OTHER0 R_EST

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
    start_proxy "$proxy" "$tout" "$dir" || { R_NOTE[$key]="did not start"; NOTES=$((NOTES + 1)); return; }
    start_uas "$tout" "$dir" || { stop_pid $PROXY_PID; R_NOTE[$key]="UAS did not start"; NOTES=$((NOTES + 1)); return; }
    # warm-up: a few calls so connections exist before measuring
    run_calls 200 1 "$tin" "$tout" "$dir/warmup" >/dev/null
    say " fixed rate $FIXED_RATE cps:"
    run_calls "$FIXED_RATE" "$FIXED_SECS" "$tin" "$tout" "$dir/fixed"
    R_CPU[$key]=$(awk -v s=$S_PROXY_S -v n=$S_CALLS 'BEGIN{printf "%.3f", s / n * 1000}')
    R_EST[$key]=$(awk -v s=$S_PROXY_S -v n=$S_CALLS 'BEGIN{if (s > 0) printf "%.0f", n / s; else print "-"}')
    R_P50[$key]=$S_P50 R_P99[$key]=$S_P99 R_MEAN[$key]=$S_MEAN R_OTHER0[$key]=$S_OTHER0
    R_HWM[$key]=$(tree_status_kb $PROXY_PID VmHWM)
    R_PSS[$key]=$(tree_pss_kb $PROXY_PID)
    [ $S_PASS = 1 ] || { R_NOTE[$key]+="fixed rate failed:$S_WHY; "; NOTES=$((NOTES + 1)); }
    [ $S_PASS = 1 ] || restart_pair "$proxy" "$tout" "$dir" || return

    say " sweep:"
    local rate=$START_RATE pass=0 fail=0 fail_bound=0 i
    for i in $(seq $MAX_UP); do
        run_calls "$rate" "$STEP_SECS" "$tin" "$tout" "$dir/step-$rate"
        if [ $S_PASS = 1 ]; then
            pass=$rate
            [ $S_SIPP_BOUND = 1 ] && { fail=$rate; fail_bound=1; break; }
            rate=$(awk -v r=$rate -v f=$FACTOR 'BEGIN{printf "%d", int(r * f / 50 + 0.5) * 50}')
        else
            fail=$rate fail_bound=$S_SIPP_BOUND
            restart_pair "$proxy" "$tout" "$dir" || return
            break
        fi
    done
    if [ $pass = 0 ] && [ $fail != 0 ]; then # the first step failed: go down
        rate=$((fail / 2))
        for i in 1 2 3; do
            run_calls "$rate" "$STEP_SECS" "$tin" "$tout" "$dir/step-$rate"
            if [ $S_PASS = 1 ]; then pass=$rate; break; fi
            fail=$rate fail_bound=$S_SIPP_BOUND; rate=$((rate / 2))
            restart_pair "$proxy" "$tout" "$dir" || return
        done
    fi
    if [ $pass != 0 ] && [ $fail -gt $pass ]; then
        for i in $(seq $BISECT); do
            rate=$(( (pass + fail) / 2 / 50 * 50 ))
            [ $rate -le $pass ] && break
            run_calls "$rate" "$STEP_SECS" "$tin" "$tout" "$dir/step-$rate"
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

# ---------------------------------------------------------------- run

for a in $IP_RBT:$PORT_RBT $IP_UAC:$PORT_UAC $IP_UAS:$PORT_UAS $IP_KAM:$PORT_KAM; do
    port_busy $a && { echo "$a is in use (set BENCH_PORT to another base port)" >&2; exit 2; }
done

say "Roundabout call benchmark ($MODE), raw logs in $RUN"
say "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
for sc in ${SCENARIOS//,/ }; do
    for proxy in ${PROXIES//,/ }; do
        bench_one "$proxy" "$sc"
    done
done
T1=$(date +%s)

# ---------------------------------------------------------------- report

mib() { awk -v k="$1" 'BEGIN{ if (k == "" || k == 0) print "-"; else printf "%.1f", k / 1024 }'; }
maxcell() { # key
    local m=${R_MAX[$1]:-} b=${R_BOUND[$1]:-0}
    [ -z "$m" ] && { echo "-"; return; }
    case $b in 1) echo ">= $m (SIPp-bound)" ;; 2) echo ">= $m (top of sweep)" ;; *) echo "$m" ;; esac
}

RBT_VERSION=$("$RUN/roundabout" -version 2>&1 | head -1)
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src actors Cargo.toml 2>/dev/null || echo "+local changes")
{
echo "# Roundabout vs Kamailio: call benchmark ($MODE)"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), $((T1 - T0)) s"
echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)"
echo "- versions: $RBT_VERSION (git $GIT_REV), $(kamailio -v 2>/dev/null | head -1 | sed 's/^version: //'), $(sipp -v 2>/dev/null | grep -o 'SIPp v[^ ,]*' | head -1)"
echo "- pinning: proxy on CPU 0 (taskset), SIPp UAC + UAS on CPU 1; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- call: INVITE/100/180/200/ACK/500 ms/BYE/200 through the proxy (Record-Route followed); fixed rate $FIXED_RATE cps for ${FIXED_SECS} s; sweep steps ${STEP_SECS} s from $START_RATE cps x $FACTOR"
echo "- command: \`bash benches/run.sh$([ $QUICK = 1 ] && echo ' --quick')\`"
echo
echo "| scenario | proxy | max cps (0 failed, p99 < ${P99_LIMIT} ms) | CPU s / 1000 calls | cps/core est. | setup mean / p50 / p99 (ms) | peak RSS (MiB) | PSS (MiB) | peak RSS in sweep (MiB) | others on CPU 0 |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for sc in ${SCENARIOS//,/ }; do
    for proxy in ${PROXIES//,/ }; do
        k=$proxy/$sc
        echo "| ${sc/-/ -> } | $proxy | $(maxcell $k) | ${R_CPU[$k]:--} | ${R_EST[$k]:--} | ${R_MEAN[$k]:--} / ${R_P50[$k]:--} / ${R_P99[$k]:--} | $(mib "${R_HWM[$k]:-}") | $(mib "${R_PSS[$k]:-}") | $(mib "${R_HWM_PEAK[$k]:-}") | ${R_OTHER0[$k]:--} % |"
    done
    r=roundabout/$sc k=kamailio/$sc
    if [ -n "${R_CPU[$r]:-}" ] && [ -n "${R_CPU[$k]:-}" ]; then
        mr=$(ratio "${R_MAX[$r]:-}" "${R_MAX[$k]:-}")
        [ "${R_BOUND[$r]:-0}" != 0 ] && [ "${R_BOUND[$k]:-0}" != 0 ] && mr="n/a (both SIPp-bound)"
        [ "${R_BOUND[$r]:-0}" != 0 ] && [ "${R_BOUND[$k]:-0}" = 0 ] && mr=">= $mr"
        echo "| ${sc/-/ -> } | **Roundabout / Kamailio** | $mr | $(ratio "${R_CPU[$r]}" "${R_CPU[$k]}") | $(ratio "${R_EST[$r]}" "${R_EST[$k]}") | $(ratio "${R_MEAN[$r]}" "${R_MEAN[$k]}") / $(ratio "${R_P50[$r]}" "${R_P50[$k]}") / $(ratio "${R_P99[$r]}" "${R_P99[$k]}") | $(ratio "${R_HWM[$r]}" "${R_HWM[$k]}") | $(ratio "${R_PSS[$r]}" "${R_PSS[$k]}") | $(ratio "${R_HWM_PEAK[$r]}" "${R_HWM_PEAK[$k]}") | |"
    fi
done
echo
echo "How to read it: CPU, setup times and memory are taken at the fixed rate (the same for both"
echo "proxies). CPU s / 1000 calls: utime+stime of every process of the proxy (Kamailio: main,"
echo "UDP and TCP workers, timers, TCP main) from /proc/PID/stat. cps/core est. = 1000 / that."
echo "Setup time: INVITE sent -> 200 received at the caller, SIPp -trace_rtt: SIPp counts whole"
echo "milliseconds of its own clock, so p50/p99 are coarse and the mean (of those) is the finer"
echo "comparison; a ratio is \"-\" when a value is 0."
echo "Peak RSS: VmHWM summed over the proxy's processes (Kamailio's shared memory pool and"
echo "libraries are counted once per process that touched them: an upper bound); PSS: the same"
echo "pages divided among the processes that share them (smaps_rollup, after the fixed run)."
echo "\"SIPp-bound\": the two SIPps used >= ${SIPP_BOUND_PCT} % of CPU 1 while offering the calls at the"
echo "limit, so the proxy's own ceiling is higher. \"others on CPU 0\": CPU 0 time used by other"
echo "processes during the fixed-rate run (noise from other work on the machine)."
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
