//! Readings of other processes from /proc for the load generators: memory (VmRSS, VmHWM,
//! Pss) and CPU time, summed over a set of PIDs (Kamailio is many processes; Roundabout
//! one).

/// Memory in KiB and CPU time in clock ticks, summed over the PIDs read.
#[derive(Clone, Copy, Default, Debug)]
pub struct Usage {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub pss_kb: u64,
    /// utime + stime, clock ticks (100 per second on Linux)
    pub ticks: u64,
}

/// Clock ticks per second of `Usage::ticks` (USER_HZ, 100 on every Linux port in use).
pub const TICKS_PER_SEC: f64 = 100.0;

fn field_kb(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Sums the usage of `pids`; a PID that is gone counts 0.
pub fn usage(pids: &[u32]) -> Usage {
    let mut m = Usage::default();
    for p in pids {
        let st = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        m.rss_kb += field_kb(&st, "VmRSS:");
        m.hwm_kb += field_kb(&st, "VmHWM:");
        let sm = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        m.pss_kb += field_kb(&sm, "Pss:");
        m.ticks += cpu_ticks(*p);
    }
    m
}

/// utime + stime of one process (0 when it is gone); cheaper than `usage` for the
/// generator's own CPU.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the command name (field 2) may hold spaces: count fields after its closing paren
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let f: Vec<&str> = rest.split(' ').collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    num(11) + num(12)
}
