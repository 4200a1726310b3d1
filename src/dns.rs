//! Locating SIP servers by DNS (RFC 3263): a host name, with the port and transport its URI
//! or dataset gives, becomes an ordered list of [`Target`]s to try.
//!
//! - A port given: only the name's A/AAAA records (each address is a target, in turn).
//! - A transport but no port: the SRV records of `_sip._udp`, `_sip._tcp`, `_sips._tcp`
//!   (TLS), `_sip._ws` or `_sips._ws` (WSS), then A/AAAA at the transport's default port.
//! - Neither: NAPTR records choose the transport (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`,
//!   `SIP+D2W`, `SIPS+D2W`, in order and preference) and name the SRV records; without
//!   NAPTR the SRV records of UDP, TCP and TLS are tried in that order; without any, A/AAAA
//!   with the fallback transport at its default port.
//!
//! SRV records are ordered by priority, and by weight within a priority (RFC 2782's
//! weighted random choice), each time a list is asked for: calls spread over equal
//! targets. A [`Resolution`] is valid until the smallest TTL of the records it used.
//!
//! [`Resolver`] does the lookups with hickory-resolver, against the system's DNS servers
//! (`/etc/resolv.conf`, and `/etc/hosts`) or the one `-dns-server` names. The ordering is
//! plain code, unit-tested below.

use crate::sip::Transport;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How long a name that does not resolve is remembered as such (an unknown host; a trusted
/// server's name is asked again at this interval in the background).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// A resolution is never refreshed more often than this, whatever its TTL (a TTL of 0 would
/// otherwise mean a lookup per request).
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// One place to send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

/// What to resolve: a host name and what its URI (or dataset) says besides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    /// Lower case, without a trailing dot.
    pub host: String,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
    /// The transport when neither the query nor DNS gives one.
    pub fallback: Transport,
}

impl Query {
    pub fn new(
        host: &str,
        port: Option<u16>,
        transport: Option<Transport>,
        fallback: Transport,
    ) -> Query {
        Query {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
            transport,
            fallback,
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(t) = self.transport {
            write!(f, ";transport={t}")?;
        }
        Ok(())
    }
}

/// One SRV record (or the single A/AAAA step): its addresses, priority and weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub priority: u16,
    pub weight: u16,
    pub targets: Vec<Target>,
}

/// A name's targets, and until when they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Empty when the name did not resolve.
    pub entries: Vec<Entry>,
    pub valid_until: Instant,
    /// The steps taken, for the log (`NAPTR SIP+D2T -> SRV _sip._tcp.example.com -> ...`).
    pub how: String,
    /// Why nothing was found.
    pub error: Option<String>,
}

impl Resolution {
    pub fn failed(error: String, now: Instant) -> Resolution {
        Resolution {
            entries: Vec::new(),
            valid_until: now + NEGATIVE_TTL,
            how: String::new(),
            error: Some(error),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|e| e.targets.is_empty())
    }

    /// Every target, in record order (for the set of trusted addresses and for lookups by
    /// address).
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.entries.iter().flat_map(|e| e.targets.iter())
    }

    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.targets().map(|t| t.addr.ip().to_canonical())
    }

    /// The targets in the order to try them: by SRV priority, by weighted random choice
    /// within a priority (RFC 2782; `random` gives the random numbers), each record's
    /// addresses in turn; targets for which `avoided` holds go last (kept as a last resort),
    /// in the same order. Duplicates are left out.
    pub fn ordered(
        &self,
        mut random: impl FnMut() -> u32,
        avoided: impl Fn(&Target) -> bool,
    ) -> Vec<Target> {
        let mut by_priority: Vec<&Entry> = self.entries.iter().collect();
        by_priority.sort_by_key(|e| e.priority);
        let mut out: Vec<Target> = Vec::new();
        let mut i = 0;
        while i < by_priority.len() {
            let p = by_priority[i].priority;
            let mut group: Vec<&Entry> = Vec::new();
            while i < by_priority.len() && by_priority[i].priority == p {
                group.push(by_priority[i]);
                i += 1;
            }
            // RFC 2782: a random point in the running sum of the weights picks the next
            // record, so each comes first in proportion to its weight (records of weight 0
            // come after the others, in their order).
            while !group.is_empty() {
                let total: u32 = group.iter().map(|e| u32::from(e.weight)).sum();
                let pick = if total == 0 {
                    0
                } else {
                    let point = random() % total;
                    let mut running = 0;
                    group
                        .iter()
                        .position(|e| {
                            running += u32::from(e.weight);
                            running > point
                        })
                        .unwrap_or(0)
                };
                let entry = group.remove(pick);
                for t in &entry.targets {
                    if !out.contains(t) {
                        out.push(*t);
                    }
                }
            }
        }
        let (mut fine, last): (Vec<Target>, Vec<Target>) =
            out.into_iter().partition(|t| !avoided(t));
        fine.extend(last);
        fine
    }
}

/// The SRV name of a transport (RFC 3263 section 4.2; `_ws` as RFC 7118 deployments use).
fn srv_name(t: Transport, host: &str) -> String {
    let prefix = match t {
        Transport::Udp => "_sip._udp",
        Transport::Tcp => "_sip._tcp",
        Transport::Tls => "_sips._tcp",
        Transport::Ws => "_sip._ws",
        Transport::Wss => "_sips._ws",
    };
    format!("{prefix}.{host}")
}

/// The transport of a NAPTR service field (RFC 3263 section 4.1, RFC 7118).
fn naptr_transport(service: &str) -> Option<Transport> {
    match service.to_ascii_uppercase().as_str() {
        "SIP+D2U" => Some(Transport::Udp),
        "SIP+D2T" => Some(Transport::Tcp),
        "SIPS+D2T" => Some(Transport::Tls),
        "SIP+D2W" => Some(Transport::Ws),
        "SIPS+D2W" => Some(Transport::Wss),
        _ => None,
    }
}

/// Looks names up: hickory-resolver, or (when no resolver configuration can be read) the
/// system's `getaddrinfo` for A/AAAA only.
#[derive(Clone)]
pub struct Resolver {
    inner: Option<hickory_resolver::TokioResolver>,
}

impl Resolver {
    /// A resolver asking `server` (IP:PORT), or the system's DNS servers. The second value
    /// is a warning for the log when the system's configuration could not be read.
    pub fn new(server: Option<SocketAddr>) -> (Resolver, Option<String>) {
        use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
        use hickory_resolver::name_server::TokioConnectionProvider;
        let builder = match server {
            Some(addr) => {
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                Ok(hickory_resolver::Resolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), servers),
                    TokioConnectionProvider::default(),
                ))
            }
            None => hickory_resolver::Resolver::builder_tokio(),
        };
        match builder {
            Ok(mut b) => {
                let o = b.options_mut();
                // Two tries of 2 s: a dead DNS server costs a request 4 s, not 10.
                o.timeout = Duration::from_secs(2);
                o.attempts = 2;
                (
                    Resolver {
                        inner: Some(b.build()),
                    },
                    None,
                )
            }
            Err(e) => (
                Resolver { inner: None },
                Some(format!(
                    "cannot read the system's DNS configuration ({e}): names are resolved \
                     with getaddrinfo, A/AAAA only (no NAPTR, SRV or TTL); give -dns-server"
                )),
            ),
        }
    }

    /// Resolves `q` per RFC 3263. Never fails: a name that does not resolve gives an empty
    /// [`Resolution`] with the reason.
    pub async fn resolve(&self, q: &Query) -> Resolution {
        let now = Instant::now();
        let Some(r) = &self.inner else {
            return self.resolve_system(q, now).await;
        };
        let mut steps = Steps {
            valid_until: None,
            how: Vec::new(),
        };
        let result = match (q.port, q.transport) {
            (Some(port), t) => {
                let t = t.unwrap_or(q.fallback);
                lookup_addresses(r, &q.host, port, t, &mut steps)
                    .await
                    .map(|targets| vec![single(targets)])
            }
            (None, Some(t)) => match lookup_srv(r, &srv_name(t, &q.host), t, &mut steps).await {
                Ok(entries) if !entries.is_empty() => Ok(entries),
                _ => lookup_addresses(r, &q.host, t.default_port(), t, &mut steps)
                    .await
                    .map(|targets| vec![single(targets)]),
            },
            (None, None) => resolve_naptr(r, q, &mut steps).await,
        };
        let valid_until = steps
            .valid_until
            .unwrap_or(now + NEGATIVE_TTL)
            .max(now + MIN_TTL);
        match result {
            Ok(entries) if entries.iter().any(|e| !e.targets.is_empty()) => Resolution {
                entries,
                valid_until,
                how: steps.how.join(" -> "),
                error: None,
            },
            Ok(_) => Resolution::failed("no address records".into(), now),
            Err(e) => Resolution::failed(e, now),
        }
    }

    /// Without a resolver configuration: A/AAAA through the system, at the given port or the
    /// transport's default.
    async fn resolve_system(&self, q: &Query, now: Instant) -> Resolution {
        let t = q.transport.unwrap_or(q.fallback);
        let port = q.port.unwrap_or(t.default_port());
        match tokio::net::lookup_host((q.host.as_str(), port)).await {
            Ok(addrs) => {
                let targets: Vec<Target> = addrs
                    .map(|addr| Target {
                        transport: t,
                        addr: SocketAddr::new(addr.ip().to_canonical(), addr.port()),
                    })
                    .collect();
                if targets.is_empty() {
                    return Resolution::failed("no address records".into(), now);
                }
                Resolution {
                    entries: vec![single(targets)],
                    // No TTL from getaddrinfo: asked again after the negative interval.
                    valid_until: now + NEGATIVE_TTL,
                    how: "getaddrinfo".into(),
                    error: None,
                }
            }
            Err(e) => Resolution::failed(e.to_string(), now),
        }
    }
}

/// What the lookups of one resolution found so far.
struct Steps {
    valid_until: Option<Instant>,
    how: Vec<String>,
}

impl Steps {
    fn seen(&mut self, valid_until: Instant, how: String) {
        self.valid_until = Some(self.valid_until.map_or(valid_until, |v| v.min(valid_until)));
        self.how.push(how);
    }
}

fn single(targets: Vec<Target>) -> Entry {
    Entry {
        priority: 0,
        weight: 0,
        targets,
    }
}

/// A fully qualified name: search domains are never appended.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn describe(e: &hickory_resolver::ResolveError) -> String {
    if e.is_nx_domain() {
        "no such name".into()
    } else if e.is_no_records_found() {
        "no records".into()
    } else {
        e.to_string()
    }
}

async fn lookup_addresses(
    r: &hickory_resolver::TokioResolver,
    host: &str,
    port: u16,
    transport: Transport,
    steps: &mut Steps,
) -> Result<Vec<Target>, String> {
    match r.lookup_ip(fqdn(host)).await {
        Ok(ips) => {
            let targets: Vec<Target> = ips
                .iter()
                .map(|ip| Target {
                    transport,
                    addr: SocketAddr::new(ip.to_canonical(), port),
                })
                .collect();
            steps.seen(
                ips.valid_until(),
                format!(
                    "A/AAAA {host} = {}",
                    targets
                        .iter()
                        .map(|t| t.addr.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            Ok(targets)
        }
        Err(e) => Err(format!("A/AAAA {host}: {}", describe(&e))),
    }
}

/// The SRV records of `name`, each with its addresses; empty when there are none.
async fn lookup_srv(
    r: &hickory_resolver::TokioResolver,
    name: &str,
    transport: Transport,
    steps: &mut Steps,
) -> Result<Vec<Entry>, String> {
    let srv = match r.srv_lookup(fqdn(name)).await {
        Ok(srv) => srv,
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => return Ok(Vec::new()),
        Err(e) => return Err(format!("SRV {name}: {}", describe(&e))),
    };
    steps.seen(srv.as_lookup().valid_until(), format!("SRV {name}"));
    let mut entries = Vec::new();
    for record in srv.iter() {
        let target = record.target().to_ascii();
        let target = target.trim_end_matches('.');
        // "." means "no service here" (RFC 2782).
        if target.is_empty() {
            continue;
        }
        let targets = lookup_addresses(r, target, record.port(), transport, steps)
            .await
            .unwrap_or_else(|e| {
                steps.how.push(e);
                Vec::new()
            });
        entries.push(Entry {
            priority: record.priority(),
            weight: record.weight(),
            targets,
        });
    }
    // In priority order (the DNS answer's order is arbitrary), for the logs; the order to
    // try them in is drawn per request by `Resolution::ordered`.
    entries.sort_by_key(|e| e.priority);
    Ok(entries)
}

/// RFC 3263 section 4.1: NAPTR, else SRV for UDP, TCP and TLS, else A/AAAA.
async fn resolve_naptr(
    r: &hickory_resolver::TokioResolver,
    q: &Query,
    steps: &mut Steps,
) -> Result<Vec<Entry>, String> {
    use hickory_resolver::proto::rr::{RData, RecordType};
    let mut naptr: Vec<(u16, u16, Transport, String)> = Vec::new();
    match r.lookup(fqdn(&q.host), RecordType::NAPTR).await {
        Ok(lookup) => {
            for rdata in lookup.iter() {
                let RData::NAPTR(n) = rdata else { continue };
                let service = String::from_utf8_lossy(n.services()).to_string();
                let flags_s = n.flags().eq_ignore_ascii_case(b"s");
                if let (true, Some(t)) = (flags_s, naptr_transport(&service)) {
                    let replacement = n.replacement().to_ascii();
                    naptr.push((n.order(), n.preference(), t, replacement));
                }
            }
            steps.seen(lookup.valid_until(), format!("NAPTR {}", q.host));
        }
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => {}
        Err(e) => return Err(format!("NAPTR {}: {}", q.host, describe(&e))),
    }
    naptr.sort_by_key(|(order, pref, _, _)| (*order, *pref));
    for (_, _, t, replacement) in &naptr {
        let name = replacement.trim_end_matches('.');
        steps.how.push(format!("{t}"));
        let entries = lookup_srv(r, name, *t, steps).await?;
        if entries.iter().any(|e| !e.targets.is_empty()) {
            return Ok(entries);
        }
    }
    if naptr.is_empty() {
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            let entries = lookup_srv(r, &srv_name(t, &q.host), t, steps).await?;
            if entries.iter().any(|e| !e.targets.is_empty()) {
                return Ok(entries);
            }
        }
    }
    let t = q.fallback;
    lookup_addresses(r, &q.host, t.default_port(), t, steps)
        .await
        .map(|targets| vec![single(targets)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(port: u16) -> Target {
        Target {
            transport: Transport::Udp,
            addr: SocketAddr::from(([192, 0, 2, 1], port)),
        }
    }

    fn entry(priority: u16, weight: u16, ports: &[u16]) -> Entry {
        Entry {
            priority,
            weight,
            targets: ports.iter().map(|p| t(*p)).collect(),
        }
    }

    fn resolution(entries: Vec<Entry>) -> Resolution {
        Resolution {
            entries,
            valid_until: Instant::now(),
            how: String::new(),
            error: None,
        }
    }

    #[test]
    fn priority_first_then_addresses_in_turn() {
        let r = resolution(vec![entry(20, 0, &[3]), entry(10, 0, &[1, 2])]);
        assert_eq!(r.ordered(|| 0, |_| false), vec![t(1), t(2), t(3)]);
    }

    #[test]
    fn weights_share_the_first_place() {
        // Weight 3 against 1: over many draws the heavier one comes first about 3/4 of the
        // time, and never is the lighter one left out.
        let r = resolution(vec![entry(10, 1, &[1]), entry(10, 3, &[2])]);
        let mut seed = 12345u32;
        let mut random = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut heavy_first = 0;
        for _ in 0..4000 {
            let order = r.ordered(&mut random, |_| false);
            assert_eq!(order.len(), 2);
            if order[0] == t(2) {
                heavy_first += 1;
            }
        }
        assert!((2700..3300).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn avoided_targets_go_last_and_duplicates_once() {
        let r = resolution(vec![entry(10, 0, &[1, 2]), entry(20, 0, &[2, 3])]);
        assert_eq!(r.ordered(|| 0, |x| *x == t(1)), vec![t(2), t(3), t(1)]);
        // Every target avoided: still all of them, in order.
        assert_eq!(r.ordered(|| 0, |_| true), vec![t(1), t(2), t(3)]);
    }

    #[test]
    fn naptr_services_and_srv_names() {
        assert_eq!(naptr_transport("SIPS+D2T"), Some(Transport::Tls));
        assert_eq!(naptr_transport("sip+d2u"), Some(Transport::Udp));
        assert_eq!(naptr_transport("SIP+D2S"), None); // SCTP
        assert_eq!(
            srv_name(Transport::Tls, "x.example"),
            "_sips._tcp.x.example"
        );
        assert_eq!(
            Query::new("X.Example.", None, None, Transport::Udp).host,
            "x.example"
        );
    }
}
