#!/usr/bin/env bash
# Profile Roundabout under a fixed call load (perf, CPU-clock sampling with DWARF call graphs).
#
#   bash benches/profile.sh [udp-udp|udp-tcp|tcp-udp] [RATE] [SECS]     (default udp-udp 1500 10)
#
# Runs the benchmark call (benches/sipp/uac.xml -> Roundabout -> uas.xml, RATE x SECS calls)
# with Roundabout on CPU 0 and the SIPps on CPU 1, records Roundabout with
# `perf record -e cpu-clock --call-graph dwarf`, and prints the 15 functions with the highest
# inclusive share ("children") and the 15 with the highest own share ("self").
# Output: target/bench/profile-<scenario>-<date>/ (perf.data, report-children.txt,
# report-self.txt). Needs linux-perf; hardware counters are not required (cpu-clock is a
# software event, which works in VMs). Build first: cargo build --release.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
SC=${1:-udp-udp} RATE=${2:-1500} SECS=${3:-10}
TIN=${SC%-*} TOUT=${SC#*-}
BASE=${BENCH_PORT:-15060}
IP_RBT=127.0.2.1 IP_UAC=127.0.2.2 IP_UAS=127.0.2.3
PORT_RBT=$((BASE + 1)) PORT_UAC=$((BASE + 2)) PORT_UAS=$((BASE + 3))
OUT=$ROOT/target/bench/profile-$SC-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT" || exit 2
t() { [ "$1" = udp ] && echo u1 || echo t1; }
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done' EXIT
cp target/release/roundabout "$OUT/roundabout" || exit 2

(cd "$OUT" && exec taskset -c 0 "$OUT/roundabout" -local-ip $IP_RBT -udp-port $PORT_RBT \
    -tcp-port $PORT_RBT -tls-port 0 -ws-port 0 -wss-port 0 -strict-host \
    -trusted-server "$IP_UAS::$PORT_UAS:$TOUT:" -log-level warn -pike-limit 0 >proxy.log 2>&1) &
RP=$!; PIDS+=("$RP")
(cd "$OUT" && exec taskset -c 1 sipp -sf "$ROOT/benches/sipp/uas.xml" -i $IP_UAS -p $PORT_UAS \
    -t "$(t "$TOUT")" -bind_local -nostdin -buff_size 1048576 -reconnect_close false \
    -timeout $((SECS + 60))s >uas.out 2>&1) &
PIDS+=("$!")
sleep 1
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/load.txt"
perf record -e cpu-clock -F 1999 --call-graph dwarf,32768 -p "$RP" -o "$OUT/perf.data" \
    -- sleep $((SECS + 2)) >"$OUT/perf-record.log" 2>&1 &
PERF=$!; PIDS+=("$PERF")
sleep 0.5
(cd "$OUT" && taskset -c 1 sipp $IP_UAS:$PORT_UAS -sf "$ROOT/benches/sipp/uac.xml" -i $IP_UAC \
    -p $PORT_UAC -t "$(t "$TIN")" -rsa $IP_RBT:$PORT_RBT -s bob -key ruri_params ";transport=$TOUT" \
    -d 500 -r "$RATE" -m $((RATE * SECS)) -bind_local -nostdin -reconnect_close false \
    -buff_size 1048576 -timeout $((SECS + 30))s -timeout_error >uac.out 2>&1)
echo "sipp exit $? ($(grep -E 'Successful call|Failed call' "$OUT/uac.out" | tail -2 | awk '{print $1, $2, $NF}' | paste -sd' '))" | tee -a "$OUT/load.txt"
wait $PERF
grep -E 'VmHWM|VmRSS' /proc/$RP/status | tee -a "$OUT/load.txt"
# inclusive ("children") and own ("self") shares; inlined frames folded into their caller
perf report -i "$OUT/perf.data" --children --no-inline --stdio --sort symbol -g none \
    --percent-limit 0.5 2>/dev/null >"$OUT/report-children.txt"
perf report -i "$OUT/perf.data" --no-children --no-inline --stdio --sort symbol -g none \
    --percent-limit 0.3 2>/dev/null >"$OUT/report-self.txt"
# the runtime's own frames (scheduler, actix envelopes, entry points) are left out of the top
GENERIC='tokio::runtime|tokio::task|actix::context_impl|actix::address::envelope|std::thread::local|__libc_start|\] _start$|\] main$|std::rt::|catch_unwind|call_once|LocalKey|std::sys::backtrace|entry_SYSCALL|do_syscall_64|ActorStream|actix::fut::|Harness|Core<T|roundabout::run::proxy|roundabout::main|__x64_sys|__sys_|\[k\]'
tidy() { grep -E '^ +[0-9.]+%' | sed -E 's/ +- +- +$//; s/ {2,}/ /g; s/^ //' | cut -c1-160; }
echo "== top 15 inclusive (children %, self %, function)"
tidy <"$OUT/report-children.txt" | grep -vE "$GENERIC" | head -15 | tee "$OUT/top15-children.txt"
echo "== top 15 self"
tidy <"$OUT/report-self.txt" | head -15 | tee "$OUT/top15-self.txt"
echo "(full reports in $OUT)"
