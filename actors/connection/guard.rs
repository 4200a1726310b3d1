//! What keeps one peer from costing Roundabout too much: the connection caps (in all and per
//! source), flood protection (per-source request rate, like Kamailio's `pike`), the throttle
//! of the log lines peers cause, and the counters the stats line shows. See `crate::limits`
//! for the values.
//!
//! A source is what one party controls ([`source_key`]): an IPv4 address, or the /64 an IPv6
//! address is in (a host, or one subscriber's LAN, may use any address of its /64, so
//! counting single IPv6 addresses would multiply its share by 2^64).
//!
//! One [`Guard`] is made by `actors::start` and shared by every listener and connection
//! actor, and by the Dispatcher (`-max-outbound-connections`). They all run on the sockets'
//! thread, so it is a plain `Rc` with `Cell`s and `RefCell`s: the per-message check is one
//! hash-map lookup, no lock and no allocation (only a new source adds an entry).
//!
//! The limits are read at each check, so a reload ([`Guard::set_limits`], SIGHUP with
//! `-config`) holds from the next one: a lower cap refuses new connections and never closes
//! one that is open (each slot is given back by the connection that holds it, whatever the
//! cap is by then).
//!
//! Trusted servers are exempt from the per-source cap and from flood protection (by their
//! exact address: their neighbours in a /64 are not).

use crate::limits::{Limits, PIKE_BLOCK, PIKE_WINDOW};
use crate::log_throttle::{LogThrottle, LogThrottles, Suppressed, PEER_LOG_INTERVAL};
use crate::sip::Transport;
use log::{info, warn};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Flood-protection entries are swept this often, and when there are this many.
const PIKE_SWEEP: Duration = Duration::from_secs(10);
const PIKE_MAX_ENTRIES: usize = 100_000;

/// The source the per-source limits count `ip` under: an IPv4 address is itself (also when a
/// dual-stack socket shows it as `::ffff:a.b.c.d`), an IPv6 address its /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// A source for log lines: `192.0.2.7`, or `2001:db8:1:2::/64`.
pub struct SourceName(pub IpAddr);

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match source_key(self.0) {
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
            v4 => write!(f, "{v4}"),
        }
    }
}

/// A kind of log line a peer can cause, throttled to one line per second
/// ([`Guard::peer_log`]): what happened (a fixed text of the code, e.g. a parse error's
/// reason) and, where it matters, on which transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Noise {
    what: &'static str,
    transport: Option<Transport>,
}

impl Noise {
    pub const fn of(what: &'static str) -> Noise {
        Noise {
            what,
            transport: None,
        }
    }

    pub const fn on(what: &'static str, transport: Transport) -> Noise {
        Noise {
            what,
            transport: Some(transport),
        }
    }
}

#[derive(Clone)]
pub struct Guard(Rc<Inner>);

struct Inner {
    /// The limits in force: replaced whole on reload, copied out at each check.
    limits: Cell<Limits>,
    /// Shared with the ServerTable, which adds the addresses trusted servers' DNS names
    /// resolve to (issue 15).
    exempt: crate::routing::TrustedAddresses,
    conns: RefCell<ConnectionTable>,
    pike: RefCell<Pike>,
    /// Connection actors alive now (accepted and opened by Roundabout).
    live: Cell<usize>,
    /// The throttles of the log lines peers cause.
    noise: RefCell<LogThrottles<Noise>>,
}

struct ConnectionTable {
    accepted: usize,
    /// Accepted connections per source ([`source_key`]), trusted servers not counted.
    per_source: HashMap<IpAddr, u32>,
    refused_total: u64,
    /// Refusals are logged once a second at most, with the count.
    refusal_log: LogThrottle,
}

impl Default for ConnectionTable {
    fn default() -> Self {
        ConnectionTable {
            accepted: 0,
            per_source: HashMap::new(),
            refused_total: 0,
            refusal_log: LogThrottle::new(PEER_LOG_INTERVAL),
        }
    }
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
        Guard::sharing(limits, crate::routing::TrustedAddresses::from_ips(exempt))
    }

    /// A guard whose exempt addresses are the shared set of trusted-server addresses.
    pub fn sharing(limits: Limits, exempt: crate::routing::TrustedAddresses) -> Guard {
        Guard(Rc::new(Inner {
            limits: Cell::new(limits),
            exempt,
            conns: RefCell::default(),
            pike: RefCell::new(Pike::new(Instant::now())),
            live: Cell::new(0),
            noise: RefCell::new(LogThrottles::new(PEER_LOG_INTERVAL)),
        }))
    }

    /// The limits in force now.
    pub fn limits(&self) -> Limits {
        self.0.limits.get()
    }

    /// A reload: `limits` hold from the next check on (see the module documentation).
    pub fn set_limits(&self, limits: Limits) {
        self.0.limits.set(limits);
    }

    /// Whether `ip` is a trusted server's address.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.0.exempt.contains(&ip)
    }

    /// Logs a line a peer caused through `line`, unless a line of the same `kind` went out
    /// less than a second ago: then it is only counted, and the next one that goes out ends
    /// with the count (`line` gets it to print last).
    pub fn peer_log(&self, kind: Noise, line: impl FnOnce(Suppressed)) {
        let admitted = self.0.noise.borrow_mut().admit(kind, Instant::now());
        if let Some(suppressed) = admitted {
            line(suppressed);
        }
    }

    /// A slot for a connection accepted from `ip`, or `None` (logged) when a cap is reached.
    /// The slot is given back when dropped (with the connection actor that holds it).
    pub fn admit_connection(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let limits = self.limits();
        let exempt = self.is_exempt(ip);
        let source = source_key(ip);
        let mut t = self.0.conns.borrow_mut();
        let from_source = t.per_source.get(&source).copied().unwrap_or(0);
        let refusal = if limits.max_connections > 0 && t.accepted >= limits.max_connections {
            Some(format!(
                "{} connections open, the most allowed (-max-connections)",
                t.accepted
            ))
        } else if limits.max_connections_per_ip > 0
            && from_source as usize >= limits.max_connections_per_ip
            && !exempt
        {
            let whose = match source {
                IpAddr::V4(_) => "this address".to_string(),
                IpAddr::V6(_) => SourceName(ip).to_string(),
            };
            Some(format!(
                "{from_source} connections open from {whose}, the most allowed \
                 (-max-connections-per-ip)"
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            t.refused_total += 1;
            if let Some(Suppressed(before)) = t.refusal_log.admit(Instant::now()) {
                info!(
                    "refused {} connection(s), the latest from {ip}: {why}",
                    before + 1
                );
            }
            return None;
        }
        t.accepted += 1;
        if !exempt {
            *t.per_source.entry(source).or_insert(0) += 1;
        }
        drop(t);
        Some(self.slot(Some((ip, !exempt))))
    }

    /// A slot for a connection Roundabout opened: counted as alive, not against the caps.
    pub fn outbound_slot(&self) -> ConnectionSlot {
        self.slot(None)
    }

    /// `accepted_from`: the peer of an accepted connection, and whether it is counted under
    /// its source.
    fn slot(&self, accepted_from: Option<(IpAddr, bool)>) -> ConnectionSlot {
        self.0.live.set(self.0.live.get() + 1);
        ConnectionSlot {
            guard: self.clone(),
            accepted_from,
        }
    }

    /// Flood protection: whether a request (or unparseable message) from `ip` may go on.
    /// Counted per source ([`source_key`]). Logs when a source starts and stops being
    /// blocked, and once per block interval in between with the count dropped (each of
    /// these lines at most once a second, whatever the number of sources).
    pub fn admit_request(&self, ip: IpAddr) -> bool {
        let limit = self.limits().pike_limit;
        if limit == 0 || self.is_exempt(ip) {
            return true;
        }
        let verdict = self.0.pike.borrow_mut().admit(ip, Instant::now(), limit);
        match verdict {
            Verdict::Taken => true,
            Verdict::Dropped => false,
            Verdict::FloodStarts => {
                self.peer_log(Noise::of("flood starts"), |s| {
                    warn!(
                        "flood from {}: more than {limit} requests in {PIKE_WINDOW:?}; its \
                         requests are dropped until it stays under that for {PIKE_BLOCK:?} \
                         (-pike-limit){s}",
                        SourceName(ip)
                    )
                });
                false
            }
            Verdict::FloodGoesOn { dropped, over } => {
                self.peer_log(Noise::of("flood goes on"), |s| {
                    info!(
                        "flood from {} goes on: {dropped} requests dropped in the last {over:?}{s}",
                        SourceName(ip)
                    )
                });
                false
            }
            Verdict::FloodOver { dropped } => {
                self.peer_log(Noise::of("flood over"), |s| {
                    info!(
                        "flood from {} is over: its requests are taken again ({dropped} more \
                         were dropped){s}",
                        SourceName(ip)
                    )
                });
                true
            }
        }
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
    /// Accepted from this address (counted under its source when the flag is set).
    accepted_from: Option<(IpAddr, bool)>,
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
        if let Some((ip, counted)) = self.accepted_from {
            let mut t = inner.conns.borrow_mut();
            t.accepted = t.accepted.saturating_sub(1);
            let source = source_key(ip);
            if let Some(n) = t.per_source.get_mut(&source).filter(|_| counted) {
                *n -= 1;
                if *n == 0 {
                    t.per_source.remove(&source);
                }
            }
        }
    }
}

/// Per-source request counts over [`PIKE_WINDOW`]s.
struct Pike {
    entries: HashMap<IpAddr, PikeEntry>,
    last_sweep: Instant,
    dropped_total: u64,
}

struct PikeEntry {
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
    /// Dropped since the last log line about this source.
    dropped: u64,
    logged_at: Instant,
}

/// What flood protection decides for one request, and what there is to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Taken,
    Dropped,
    /// Dropped, and the source is blocked from now on.
    FloodStarts,
    /// Dropped; the source has been blocked for another [`PIKE_BLOCK`].
    FloodGoesOn {
        dropped: u64,
        over: Duration,
    },
    /// Taken: the block is over.
    FloodOver {
        dropped: u64,
    },
}

impl Pike {
    fn new(now: Instant) -> Pike {
        Pike {
            entries: HashMap::new(),
            last_sweep: now,
            dropped_total: 0,
        }
    }

    fn admit(&mut self, ip: IpAddr, now: Instant, limit: u32) -> Verdict {
        if now.duration_since(self.last_sweep) >= PIKE_SWEEP
            || self.entries.len() >= PIKE_MAX_ENTRIES
        {
            self.sweep(now);
        }
        let e = self.entries.entry(source_key(ip)).or_insert(PikeEntry {
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
        let mut starts = false;
        if e.count > limit {
            if e.blocked_until.is_none_or(|u| u <= now) {
                starts = true;
                e.logged_at = now;
                e.dropped = 0;
            }
            e.blocked_until = Some(now + PIKE_BLOCK);
        }
        match e.blocked_until {
            Some(until) if now < until => {
                e.dropped += 1;
                self.dropped_total += 1;
                if starts {
                    Verdict::FloodStarts
                } else if now.duration_since(e.logged_at) >= PIKE_BLOCK {
                    let over = now.duration_since(e.logged_at);
                    let dropped = std::mem::take(&mut e.dropped);
                    e.logged_at = now;
                    Verdict::FloodGoesOn { dropped, over }
                } else {
                    Verdict::Dropped
                }
            }
            Some(_) => {
                e.blocked_until = None;
                Verdict::FloodOver {
                    dropped: std::mem::take(&mut e.dropped),
                }
            }
            None => Verdict::Taken,
        }
    }

    /// Forgets sources that are quiet and not blocked.
    /// A source whose block ended less than [`PIKE_BLOCK`] ago is kept, so that its next
    /// request still says the flood is over.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        self.entries.retain(|_, e| {
            e.blocked_until.is_some_and(|u| u + PIKE_BLOCK > now)
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
    fn reloaded_caps_refuse_new_connections_and_keep_open_ones() {
        let g = Guard::new(limits(3, 0, 0), []);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let open: Vec<_> = (0..3).map(|_| g.admit_connection(a).unwrap()).collect();
        g.set_limits(limits(1, 0, 0));
        assert!(
            g.admit_connection(a).is_none(),
            "lowered under what is open"
        );
        assert_eq!(g.stats().accepted, 3, "the open ones stay");
        let mut open = open.into_iter();
        drop(open.next());
        drop(open.next());
        assert!(
            g.admit_connection(a).is_none(),
            "still one open: the new cap of 1 is reached"
        );
        g.set_limits(limits(5, 2, 0));
        let _b = g.admit_connection(a).expect("raised again");
        assert!(g.admit_connection(a).is_none(), "the new total cap of 2");
        drop(open);
        let _c = g.admit_connection(a).expect("a slot came back");
        assert_eq!(g.stats().refused, 3);
    }

    #[test]
    fn a_reloaded_flood_limit_holds_from_the_next_request() {
        let g = Guard::new(limits(0, 0, 100), []);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!((0..5).all(|_| g.admit_request(ip)));
        g.set_limits(limits(0, 0, 5));
        assert!(!g.admit_request(ip), "the 6th request of the window");
        assert_eq!(g.stats().flooding, 1);
        g.set_limits(limits(0, 0, 0));
        assert!(g.admit_request(ip), "flood protection off");
    }

    #[test]
    fn pike_blocks_a_flooder_then_lets_it_go() {
        let mut p = Pike::new(Instant::now());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..10).all(|_| p.admit(ip, t0, 10) == Verdict::Taken));
        assert_eq!(p.admit(ip, t0, 10), Verdict::FloodStarts, "the 11th");
        assert_eq!(p.admit(ip, t0, 10), Verdict::Dropped);
        assert_eq!(p.admit(other, t0, 10), Verdict::Taken, "others go on");
        let later = t0 + PIKE_WINDOW + Duration::from_millis(1);
        assert_eq!(p.admit(ip, later, 10), Verdict::Dropped, "blocked a while");
        assert_eq!(
            p.admit(ip, later + PIKE_BLOCK, 10),
            Verdict::FloodOver { dropped: 3 },
            "then taken again"
        );
        assert_eq!(p.dropped_total, 3);
        p.sweep(later + PIKE_BLOCK + PIKE_SWEEP);
        assert!(p.entries.is_empty());
        // A block that ended unseen is forgotten once it is long over.
        for _ in 0..11 {
            p.admit(ip, t0, 10);
        }
        p.sweep(t0 + PIKE_BLOCK + Duration::from_secs(1));
        assert_eq!(p.entries.len(), 1, "just over: kept to say so");
        p.sweep(t0 + 2 * PIKE_BLOCK);
        assert!(p.entries.is_empty());
    }

    #[test]
    fn ipv6_sources_are_their_64_and_ipv4_their_address() {
        let key = |s: &str| source_key(s.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:3::1"), "2001:db8:1:3::", "the next /64");
        assert_eq!(key("::1"), "::");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(
            key("::ffff:192.0.2.7"),
            "192.0.2.7",
            "IPv4 on a dual-stack socket"
        );
        let name = |s: &str| SourceName(s.parse().unwrap()).to_string();
        assert_eq!(name("2001:db8:1:2::99"), "2001:db8:1:2::/64");
        assert_eq!(name("192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_the_per_source_cap() {
        let trusted: IpAddr = "2001:db8:0:1::99".parse().unwrap();
        let g = Guard::new(limits(2, 0, 0), [trusted]);
        let in_64 = |i: u16| -> IpAddr { format!("2001:db8:0:1::{i:x}").parse().unwrap() };
        let _a = g.admit_connection(in_64(1)).unwrap();
        let _b = g.admit_connection(in_64(2)).unwrap();
        assert!(
            g.admit_connection(in_64(3)).is_none(),
            "a third address of the same /64"
        );
        let other: IpAddr = "2001:db8:0:2::1".parse().unwrap();
        let _c = g
            .admit_connection(other)
            .expect("another /64 has its own share");
        // The trusted server is exempt, and its connections take nothing from its /64.
        let _t: Vec<_> = (0..5)
            .map(|_| g.admit_connection(trusted).unwrap())
            .collect();
        drop(_a);
        let _d = g
            .admit_connection(in_64(4))
            .expect("a slot of the /64 came back");
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_the_flood_limit() {
        let g = Guard::new(limits(0, 0, 10), []);
        let in_64 = |i: u16| -> IpAddr { format!("2001:db8:0:1::{i:x}").parse().unwrap() };
        // Ten requests from ten addresses of one /64 use up its share...
        assert!((0..10).all(|i| g.admit_request(in_64(i))));
        // ...so an eleventh address of that /64 is a flood, another /64 is not.
        assert!(!g.admit_request(in_64(1000)));
        assert!(g.admit_request("2001:db8:0:2::1".parse().unwrap()));
        assert_eq!(g.stats().flooding, 1);
        // IPv4 stays per address.
        let v4 = Guard::new(limits(0, 0, 10), []);
        assert!((1..=10).all(|i| v4.admit_request(format!("192.0.2.{i}").parse().unwrap())));
        assert!(v4.admit_request("192.0.2.11".parse().unwrap()));
    }

    #[test]
    fn peer_lines_are_throttled_per_kind() {
        let g = Guard::new(limits(0, 0, 0), []);
        let mut logged = Vec::new();
        for _ in 0..500 {
            g.peer_log(Noise::on("unparseable", Transport::Udp), |s| {
                logged.push(("udp", s))
            });
            g.peer_log(Noise::on("unparseable", Transport::Tcp), |s| {
                logged.push(("tcp", s))
            });
        }
        assert_eq!(
            logged,
            [("udp", Suppressed(0)), ("tcp", Suppressed(0))],
            "one line per kind within a second"
        );
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
