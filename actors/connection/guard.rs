//! What keeps one peer from costing Roundabout too much: the connection caps (in all and per
//! source IP), flood protection (per-IP request rate, like Kamailio's `pike`), and the
//! counters the stats line shows. See `crate::limits` for the values.
//!
//! One [`Guard`] is made by `actors::start` and shared by every listener and connection
//! actor. They all run on the sockets' thread, so it is a plain `Rc` with `RefCell`s: the
//! per-message check is one hash-map lookup, no lock and no allocation (only a new source
//! address adds an entry).
//!
//! Trusted servers are exempt from the per-IP cap and from flood protection.

use crate::limits::{Limits, PIKE_BLOCK, PIKE_WINDOW};
use log::{info, warn};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Refused connections are logged at most this often (with a count), so a flood of
/// connection attempts cannot flood the log too.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Flood-protection entries are swept this often, and when there are this many.
const PIKE_SWEEP: Duration = Duration::from_secs(10);
const PIKE_MAX_ENTRIES: usize = 100_000;

#[derive(Clone)]
pub struct Guard(Rc<Inner>);

struct Inner {
    limits: Limits,
    exempt: HashSet<IpAddr>,
    conns: RefCell<ConnectionTable>,
    pike: RefCell<Pike>,
    /// Connection actors alive now (accepted and opened by Roundabout).
    live: Cell<usize>,
}

#[derive(Default)]
struct ConnectionTable {
    accepted: usize,
    per_ip: HashMap<IpAddr, u32>,
    refused_total: u64,
    refused_unlogged: u64,
    last_refusal_log: Option<Instant>,
}

/// What the guard has counted, for the stats line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Connection actors alive (accepted and outbound).
    pub connections: usize,
    /// Accepted connections open (those the caps count).
    pub accepted: usize,
    /// Connections refused by the caps since start.
    pub refused: u64,
    /// Addresses whose requests are being dropped now.
    pub flooding: usize,
    /// Requests dropped by flood protection since start.
    pub flood_dropped: u64,
}

impl Guard {
    /// `exempt`: the trusted servers' addresses.
    pub fn new(limits: Limits, exempt: impl IntoIterator<Item = IpAddr>) -> Guard {
        Guard(Rc::new(Inner {
            limits,
            exempt: exempt.into_iter().collect(),
            conns: RefCell::default(),
            pike: RefCell::new(Pike::new(Instant::now())),
            live: Cell::new(0),
        }))
    }

    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    /// A slot for a connection accepted from `ip`, or `None` (logged) when a cap is reached.
    /// The slot is given back when dropped (with the connection actor that holds it).
    pub fn admit_connection(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let limits = &self.0.limits;
        let mut t = self.0.conns.borrow_mut();
        let from_ip = t.per_ip.get(&ip).copied().unwrap_or(0);
        let refusal = if limits.max_connections > 0 && t.accepted >= limits.max_connections {
            Some(format!(
                "{} connections open, the most allowed (-max-connections)",
                t.accepted
            ))
        } else if limits.max_connections_per_ip > 0
            && from_ip as usize >= limits.max_connections_per_ip
            && !self.0.exempt.contains(&ip)
        {
            Some(format!(
                "{from_ip} connections open from this address, the most allowed (-max-connections-per-ip)"
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            t.refused_total += 1;
            t.refused_unlogged += 1;
            let now = Instant::now();
            if t.last_refusal_log
                .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL)
            {
                info!(
                    "refused {} connection(s), the latest from {ip}: {why}",
                    t.refused_unlogged
                );
                t.refused_unlogged = 0;
                t.last_refusal_log = Some(now);
            }
            return None;
        }
        t.accepted += 1;
        *t.per_ip.entry(ip).or_insert(0) += 1;
        drop(t);
        Some(self.slot(Some(ip)))
    }

    /// A slot for a connection Roundabout opened: counted as alive, not against the caps.
    pub fn outbound_slot(&self) -> ConnectionSlot {
        self.slot(None)
    }

    fn slot(&self, accepted_from: Option<IpAddr>) -> ConnectionSlot {
        self.0.live.set(self.0.live.get() + 1);
        ConnectionSlot {
            guard: self.clone(),
            accepted_from,
        }
    }

    /// Flood protection: whether a request (or unparseable message) from `ip` may go on.
    /// Logs when an address starts and stops being blocked, and once per block interval in
    /// between with the count dropped.
    pub fn admit_request(&self, ip: IpAddr) -> bool {
        let limit = self.0.limits.pike_limit;
        if limit == 0 || self.0.exempt.contains(&ip) {
            return true;
        }
        self.0.pike.borrow_mut().admit(ip, Instant::now(), limit)
    }

    pub fn stats(&self) -> GuardStats {
        let t = self.0.conns.borrow();
        let p = self.0.pike.borrow();
        let now = Instant::now();
        GuardStats {
            connections: self.0.live.get(),
            accepted: t.accepted,
            refused: t.refused_total,
            flooding: p
                .entries
                .values()
                .filter(|e| e.blocked_until.is_some_and(|u| u > now))
                .count(),
            flood_dropped: p.dropped_total,
        }
    }
}

/// A connection's place under the caps; given back on drop.
pub struct ConnectionSlot {
    guard: Guard,
    accepted_from: Option<IpAddr>,
}

impl ConnectionSlot {
    /// Accepted by a listener (not opened by Roundabout).
    pub fn is_accepted(&self) -> bool {
        self.accepted_from.is_some()
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let inner = &self.guard.0;
        inner.live.set(inner.live.get().saturating_sub(1));
        if let Some(ip) = self.accepted_from {
            let mut t = inner.conns.borrow_mut();
            t.accepted = t.accepted.saturating_sub(1);
            if let Some(n) = t.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    t.per_ip.remove(&ip);
                }
            }
        }
    }
}

/// Per-address request counts over [`PIKE_WINDOW`]s.
struct Pike {
    entries: HashMap<IpAddr, PikeEntry>,
    last_sweep: Instant,
    dropped_total: u64,
}

struct PikeEntry {
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
    /// Dropped since the last log line about this address.
    dropped: u64,
    logged_at: Instant,
}

impl Pike {
    fn new(now: Instant) -> Pike {
        Pike {
            entries: HashMap::new(),
            last_sweep: now,
            dropped_total: 0,
        }
    }

    fn admit(&mut self, ip: IpAddr, now: Instant, limit: u32) -> bool {
        if now.duration_since(self.last_sweep) >= PIKE_SWEEP
            || self.entries.len() >= PIKE_MAX_ENTRIES
        {
            self.sweep(now);
        }
        let e = self.entries.entry(ip).or_insert(PikeEntry {
            window_start: now,
            count: 0,
            blocked_until: None,
            dropped: 0,
            logged_at: now,
        });
        if now.duration_since(e.window_start) >= PIKE_WINDOW {
            e.window_start = now;
            e.count = 0;
        }
        e.count = e.count.saturating_add(1);
        if e.count > limit {
            if e.blocked_until.is_none_or(|u| u <= now) {
                warn!(
                    "flood from {ip}: more than {limit} requests in {PIKE_WINDOW:?}; its requests \
                     are dropped until it stays under that for {PIKE_BLOCK:?} (-pike-limit)"
                );
                e.logged_at = now;
                e.dropped = 0;
            }
            e.blocked_until = Some(now + PIKE_BLOCK);
        }
        match e.blocked_until {
            Some(until) if now < until => {
                e.dropped += 1;
                self.dropped_total += 1;
                if now.duration_since(e.logged_at) >= PIKE_BLOCK {
                    info!(
                        "flood from {ip} goes on: {} requests dropped in the last {:?}",
                        e.dropped,
                        now.duration_since(e.logged_at)
                    );
                    e.dropped = 0;
                    e.logged_at = now;
                }
                false
            }
            Some(_) => {
                info!(
                    "flood from {ip} is over: its requests are taken again ({} more were dropped)",
                    e.dropped
                );
                e.blocked_until = None;
                e.dropped = 0;
                true
            }
            None => true,
        }
    }

    /// Forgets addresses that are quiet and not blocked.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        self.entries.retain(|_, e| {
            e.blocked_until.is_some_and(|u| u > now)
                || now.duration_since(e.window_start) < PIKE_WINDOW
        });
        if self.entries.len() >= PIKE_MAX_ENTRIES {
            // So many addresses at once (spoofed sources): keep only the blocked ones.
            self.entries.retain(|_, e| e.blocked_until.is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: usize, total: usize, pike: u32) -> Limits {
        Limits {
            max_connections_per_ip: per_ip,
            max_connections: total,
            pike_limit: pike,
            ..Limits::default()
        }
    }

    #[test]
    fn connection_caps_and_slots_given_back() {
        let trusted: IpAddr = "192.0.2.99".parse().unwrap();
        let g = Guard::new(limits(2, 5, 0), [trusted]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = g.admit_connection(a).unwrap();
        let _s2 = g.admit_connection(a).unwrap();
        assert!(g.admit_connection(a).is_none(), "per-IP cap");
        let _t: Vec<_> = (0..3)
            .map(|_| g.admit_connection(trusted).unwrap())
            .collect();
        assert!(g.admit_connection(b).is_none(), "total cap");
        drop(s1);
        let _s3 = g.admit_connection(b).expect("a slot came back");
        let out = g.outbound_slot();
        assert!(!out.is_accepted());
        let st = g.stats();
        assert_eq!((st.accepted, st.connections, st.refused), (5, 6, 2));
        drop(out);
        drop(_t);
        assert_eq!(g.stats().accepted, 2);
        let unlimited = Guard::new(limits(0, 0, 0), []);
        let many: Vec<_> = (0..1000)
            .map(|_| unlimited.admit_connection(a).unwrap())
            .collect();
        assert_eq!(unlimited.stats().accepted, many.len());
    }

    #[test]
    fn pike_blocks_a_flooder_then_lets_it_go() {
        let mut p = Pike::new(Instant::now());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..10).all(|_| p.admit(ip, t0, 10)));
        assert!(!p.admit(ip, t0, 10), "the 11th in the window");
        assert!(p.admit(other, t0, 10), "others are not affected");
        let later = t0 + PIKE_WINDOW + Duration::from_millis(1);
        assert!(!p.admit(ip, later, 10), "blocked for a while");
        assert!(p.admit(ip, later + PIKE_BLOCK, 10), "then taken again");
        assert_eq!(p.dropped_total, 2);
        p.sweep(later + PIKE_BLOCK + PIKE_SWEEP);
        assert!(p.entries.is_empty());
    }

    #[test]
    fn trusted_and_zero_are_exempt() {
        let trusted: IpAddr = "192.0.2.99".parse().unwrap();
        let g = Guard::new(limits(0, 0, 3), [trusted]);
        assert!((0..100).all(|_| g.admit_request(trusted)));
        let off = Guard::new(limits(0, 0, 0), []);
        assert!((0..100).all(|_| off.admit_request("192.0.2.1".parse().unwrap())));
    }
}
