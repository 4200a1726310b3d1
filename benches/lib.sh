# Shell helpers shared by benches/run.sh and benches/clients.sh (sourced, not run).
#
# Processes: everything a benchmark starts runs as a background job of its script; on exit
# the jobs still running are stopped by PID (never by name: other programs on the machine
# are not ours; a job already waited for is not in the list, so its PID is never reused
# by mistake). Measurements read /proc.

cleanup() {
    local live
    live=$(jobs -pr)
    [ -n "$live" ] || return 0
    kill $live 2>/dev/null
    sleep 0.5
    live=$(jobs -pr)
    [ -n "$live" ] && kill -9 $live 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop one PID we started: SIGTERM, then SIGKILL after 5 s
stop_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

# every PID of the tree rooted at $1
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

# busy ticks of one CPU (user+nice+system+irq+softirq+steal) from /proc/stat
cpu_busy() { awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# wait (up to 10 s) until something listens on $2 (ip:port); $1 = udp|tcp
wait_listen() {
    local i flag
    [ "$1" = udp ] && flag=-uln || flag=-tln
    for i in $(seq 100); do
        ss -H $flag "src $2" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
