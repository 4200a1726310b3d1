//! Next-hop decisions as plain functions: who a request is for and how to reach it.
//!
//! The Router turns a request into a [`RouteTarget`] (what the message itself says: a Route,
//! a contact token, the Request-URI) and the ServerTable turns that into a [`Decision`] with
//! [`decide`], knowing the trusted servers and the strictness flags. Nothing here touches a
//! socket, so every rule is unit-tested below.

use crate::config::{Config, Ports, TrustedServer};
use crate::dns::{Query, Resolution, Target};
use crate::sip::uri::{host_ip, SipUri};
use crate::sip::Transport;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The id of one connection (a "flow", RFC 5626). UDP traffic has flow 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FlowId(pub u64);

impl FlowId {
    pub const UDP: FlowId = FlowId(0);
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow#{}", self.0)
    }
}

/// Where a message came from: responses go back exactly there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    pub transport: Transport,
    pub remote: SocketAddr,
    pub flow: FlowId,
}

impl Source {
    /// Back the way a message came: down the same connection for stream peers, to the
    /// address it came from (symmetric, RFC 3581) for UDP.
    pub fn reply_destination(&self) -> Destination {
        if self.transport.is_stream() {
            Destination::Flow {
                flow: self.flow,
                transport: self.transport,
                remote: self.remote,
            }
        } else {
            Destination::Address {
                transport: Transport::Udp,
                addr: self.remote,
                tls_name: None,
            }
        }
    }
}

/// A client reached through Roundabout, as the client cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientBinding {
    /// The Contact URI the client registered (the Request-URI of requests for it).
    pub contact_uri: String,
    pub source: Source,
}

/// Why a message could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryError {
    /// The client's connection is closed (480).
    FlowGone,
    /// Connecting, resolving or the TLS handshake failed (503).
    Unreachable,
}

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Down one existing connection only (a client that registered over TCP/TLS/WS/WSS);
    /// when it is gone the request fails with 480.
    Flow {
        flow: FlowId,
        transport: Transport,
        remote: SocketAddr,
    },
    /// To an address: UDP datagram, or a connection reused or opened for it.
    Address {
        transport: Transport,
        addr: SocketAddr,
        /// The name for TLS SNI and certificate checks (the trusted server's first FQDN).
        tls_name: Option<String>,
    },
    /// To a host name that must be resolved first (only without -strict-host).
    Name {
        transport: Transport,
        host: String,
        port: u16,
    },
}

impl Destination {
    /// Whether a message from `source` comes from this destination: the same connection,
    /// or the same transport and address (for a name, the transport and port: the
    /// Dispatcher resolved it).
    pub fn sent_to(&self, source: &Source) -> bool {
        match self {
            Destination::Flow { flow, .. } => source.flow == *flow,
            Destination::Address {
                transport, addr, ..
            } => source.transport == *transport && source.remote == *addr,
            Destination::Name {
                transport, port, ..
            } => source.transport == *transport && source.remote.port() == *port,
        }
    }

    pub fn transport(&self) -> Transport {
        match self {
            Destination::Flow { transport, .. }
            | Destination::Address { transport, .. }
            | Destination::Name { transport, .. } => *transport,
        }
    }

    /// A trusted server named by IP, at its configured port and protocol.
    fn to_server(s: &TrustedServer) -> Destination {
        let ip = s.ip().expect("only for servers named by IP");
        Destination::Address {
            transport: s.transport,
            addr: SocketAddr::new(ip, s.port),
            tls_name: Some(s.tls_name()),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Flow {
                flow,
                transport,
                remote,
            } => write!(f, "{transport}:{remote} ({flow})"),
            Destination::Address {
                transport, addr, ..
            } => write!(f, "{transport}:{addr}"),
            Destination::Name {
                transport,
                host,
                port,
            } => write!(f, "{transport}:{host}:{port}"),
        }
    }
}

/// Roundabout's own names and ports: used to recognise "this is for me".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalIdentity {
    pub ip: IpAddr,
    pub fqdn: Option<String>,
    pub bind_ip: IpAddr,
    pub ports: Ports,
}

impl LocalIdentity {
    pub fn from_config(c: &Config) -> LocalIdentity {
        LocalIdentity {
            ip: c.local_ip,
            fqdn: c.local_fqdn.clone(),
            bind_ip: c.bind_ip,
            ports: c.ports,
        }
    }

    /// Whether `host[:port]` names Roundabout: its IP, bind IP or FQDN, on the port of a
    /// listener that is on (or no port: the default port of some transport we may listen
    /// on). An IPv4-mapped IPv6 host (`[::ffff:192.0.2.5]`) is its IPv4 address. Every
    /// address Roundabout writes for itself passes: it names only listeners that are on
    /// (`Ports::advertised`), never port 0 nor the default port of a listener that is off.
    pub fn is_us(&self, host: &str, port: Option<u16>) -> bool {
        let host_matches = match host_ip(host) {
            Some(ip) => {
                let (ip, bind) = (ip.to_canonical(), self.bind_ip.to_canonical());
                ip == self.ip.to_canonical() || (!bind.is_unspecified() && ip == bind)
            }
            None => self
                .fqdn
                .as_deref()
                .is_some_and(|f| f.eq_ignore_ascii_case(host)),
        };
        host_matches
            && match port {
                None => true,
                // A listener that is off has port 0: `:0` names nothing.
                Some(0) => false,
                Some(p) => Transport::ALL.iter().any(|t| self.ports.get(*t) == p),
            }
    }
}

/// What a request names as its next hop, before the server table has its say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// A host from a Route header, the Request-URI, or (ACK) the To header.
    Host {
        host: String,
        port: Option<u16>,
        transport: Option<Transport>,
        /// The Request-URI user, for the client cache when the host is Roundabout.
        user: Option<String>,
        /// Named by a Route header: the request goes there as the route set says, without
        /// a trusted server's route-list.
        route: bool,
    },
    /// A peer Roundabout already knows, from the token in a contact it rewrote.
    Peer(Destination),
}

impl RouteTarget {
    pub fn from_uri(uri: &SipUri<'_>) -> RouteTarget {
        RouteTarget::Host {
            host: uri.host.to_string(),
            port: uri.port,
            transport: uri.transport(),
            user: uri.user.map(String::from),
            route: false,
        }
    }

    /// The target of a Route header's URI.
    pub fn from_route(uri: &SipUri<'_>) -> RouteTarget {
        match RouteTarget::from_uri(uri) {
            RouteTarget::Host {
                host,
                port,
                transport,
                user,
                ..
            } => RouteTarget::Host {
                host,
                port,
                transport,
                user,
                route: true,
            },
            peer => peer,
        }
    }
}

/// The ServerTable's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send there; replace the Request-URI when `request_uri` is set.
    Forward {
        destination: Destination,
        request_uri: Option<String>,
        /// Route header values to put on top of the request (a trusted server's
        /// route-list, RFC 3261 loose routing: `destination` is the first of them).
        routes: Vec<String>,
        /// Where to send it next, in order, if `destination` fails before answering
        /// (refused, TLS failure, no answer, 503): the other targets its DNS name resolved
        /// to (RFC 3263 section 4.3).
        alternates: Vec<Destination>,
    },
    /// The Request-URI names Roundabout: ask the client cache for `user`, and when it has no
    /// such client use `fallback` (the default SIP server), else answer 404.
    AskRegistrar {
        user: String,
        fallback: Option<Box<Decision>>,
    },
    Reject(Rejection),
}

/// Why a request cannot be routed; each maps to one SIP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 403: -strict-host and the host is not a trusted server.
    UnknownHost,
    /// 404: for Roundabout, but no such client and no default server.
    NoSuchUser,
    /// 480: the client's connection is gone.
    ClientGone,
    /// 416: not a sip:/sips: URI and no Route.
    UnsupportedScheme,
    /// 503: the host's name does not resolve (NAPTR, SRV, A/AAAA).
    Unresolvable,
}

impl Rejection {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Rejection::UnknownHost => (403, "Forbidden - Unknown Destination Host"),
            Rejection::NoSuchUser => (404, "Not Found"),
            Rejection::ClientGone => (480, "Temporarily Unavailable"),
            Rejection::UnsupportedScheme => (416, "Unsupported URI Scheme"),
            Rejection::Unresolvable => (503, "Service Unavailable - Cannot Resolve Host"),
        }
    }
}

/// The addresses whose requests come from trusted servers: the IPs of the datasets and
/// every address their DNS names resolve to now. One set shared (read-mostly) by the
/// Router shards (admission rules), the connection guard (per-IP caps, flood protection)
/// and the Dispatcher (outbound cap); the ServerTable updates it when a name resolves to
/// other addresses.
#[derive(Debug, Clone, Default)]
pub struct TrustedAddresses(std::sync::Arc<std::sync::RwLock<HashSet<IpAddr>>>);

impl TrustedAddresses {
    pub fn from_ips(ips: impl IntoIterator<Item = IpAddr>) -> TrustedAddresses {
        let set = ips.into_iter().map(|ip| ip.to_canonical()).collect();
        TrustedAddresses(std::sync::Arc::new(std::sync::RwLock::new(set)))
    }

    /// Whether `ip` (an IPv4-mapped address counts as its IPv4) is a trusted server's.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.read().map(|s| s.contains(&ip)).unwrap_or(false)
    }

    /// Replaces the set; returns whether it changed.
    pub fn replace(&self, ips: impl IntoIterator<Item = IpAddr>) -> bool {
        let new: HashSet<IpAddr> = ips.into_iter().map(|ip| ip.to_canonical()).collect();
        match self.0.write() {
            Ok(mut s) if *s != new => {
                *s = new;
                true
            }
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.0.read().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The trusted servers, the rules for hosts that are not among them, and what DNS said.
#[derive(Debug, Clone)]
pub struct ServerTable {
    pub servers: Vec<TrustedServer>,
    pub default_server: Option<TrustedServer>,
    pub strict_host: bool,
    pub default_network: Transport,
    pub local: LocalIdentity,
    /// Names resolved (RFC 3263), filled by the ServerTable actor before it calls
    /// [`decide`]: the trusted servers' names (kept fresh in the background) and the hosts
    /// requests named (until their TTL).
    pub resolved: HashMap<Query, Resolution>,
    /// Targets that failed, until when they are tried last ([`Resolution::ordered`]).
    pub avoided: HashMap<Target, Instant>,
}

impl ServerTable {
    pub fn from_config(c: &Config) -> ServerTable {
        ServerTable {
            servers: c.trusted_servers.clone(),
            default_server: c.default_sip_server.clone(),
            strict_host: c.strict_host,
            default_network: c.default_network,
            local: LocalIdentity::from_config(c),
            resolved: HashMap::new(),
            avoided: HashMap::new(),
        }
    }

    pub fn server_for_host(&self, host: &str) -> Option<&TrustedServer> {
        self.servers.iter().find(|s| s.matches_host(host))
    }

    /// The trusted server with this address (its dataset's IP, or one its name resolved
    /// to), and the target it is reached at.
    pub fn server_for_ip(&self, ip: IpAddr) -> Option<(&TrustedServer, Destination)> {
        let ip = ip.to_canonical();
        for s in &self.servers {
            if s.ip() == Some(ip) {
                return Some((s, Destination::to_server(s)));
            }
        }
        for s in &self.servers {
            let Some(q) = server_query(s) else { continue };
            if let Some(t) = self
                .resolved
                .get(&q)
                .and_then(|r| r.targets().find(|t| t.addr.ip().to_canonical() == ip))
            {
                return Some((s, target_destination(t, Some(s.tls_name()))));
            }
        }
        None
    }

    /// Every address that counts as a trusted server now: the datasets' IPs and what their
    /// names resolved to.
    pub fn trusted_addresses(&self) -> HashSet<IpAddr> {
        let mut set: HashSet<IpAddr> = self.servers.iter().filter_map(|s| s.ip()).collect();
        for s in &self.servers {
            if let Some(r) = server_query(s).and_then(|q| self.resolved.get(&q)) {
                set.extend(r.addresses());
            }
        }
        set
    }

    /// The DNS names of the trusted servers (and of their route-list entries), as queries.
    pub fn server_queries(&self) -> Vec<Query> {
        let mut out = Vec::new();
        for s in self.servers.iter().chain(self.default_server.as_ref()) {
            for q in server_query(s).into_iter().chain(route_query(s)) {
                if !out.contains(&q) {
                    out.push(q);
                }
            }
        }
        out
    }

    fn is_avoided(&self, t: &Target, now: Instant) -> bool {
        self.avoided.get(t).is_some_and(|until| *until > now)
    }

    /// A route-list entry of some trusted server named by `host` (a Route of an in-dialog
    /// request through the server's proxies), and that server.
    fn route_entry(&self, host: &str) -> Option<&TrustedServer> {
        let ip = host_ip(host).map(|ip| ip.to_canonical());
        self.servers.iter().find(|s| {
            s.routes.iter().any(|r| match (ip, r.parse::<IpAddr>()) {
                (Some(ip), Ok(r)) => ip == r.to_canonical(),
                _ => r.eq_ignore_ascii_case(host),
            })
        })
    }
}

/// The query that resolves a trusted server's DNS name (`None` for a server named by IP).
pub fn server_query(s: &TrustedServer) -> Option<Query> {
    s.dns_name()
        .map(|n| Query::new(n, s.given_port, s.given_transport, s.transport))
}

/// The query for a server's first route-list entry when it is a name (A/AAAA at the
/// server's port and protocol).
fn route_query(s: &TrustedServer) -> Option<Query> {
    let first = s.routes.first()?;
    first
        .parse::<IpAddr>()
        .is_err()
        .then(|| Query::new(first, Some(s.port), Some(s.transport), s.transport))
}

/// The name [`decide`] needs resolved for `target` (the ServerTable actor looks it up
/// first when it has no fresh [`Resolution`] for it), if any.
pub fn dns_query(table: &ServerTable, target: &RouteTarget) -> Option<Query> {
    let RouteTarget::Host {
        host,
        port,
        transport,
        route,
        ..
    } = target
    else {
        return None;
    };
    if let Some(server) = table.server_for_host(host) {
        if !route {
            if let Some(q) = route_query(server) {
                return Some(q);
            }
        }
        return server_query(server);
    }
    if table.local.is_us(host, *port) {
        return table
            .default_server
            .as_ref()
            .and_then(|s| route_query(s).or_else(|| server_query(s)));
    }
    if host_ip(host).is_some() || table.route_entry(host).is_some() || table.strict_host {
        return None;
    }
    Some(Query::new(host, *port, *transport, table.default_network))
}

/// The routing rules, in order (README "Routing"):
/// 1. a known peer (contact token): a trusted server by its configured address (or the
///    target its name resolved to that has the peer's address), anyone else down their own
///    flow or to their address;
/// 2. a trusted server's IP, FQDN, DNS name or resolved address -> that server's port and
///    protocol (explicit URI port or transport win), through its route-list when the
///    request has no Route of its own; a DNS name gives its targets in RFC 3263 order, the
///    first as destination and the others as alternates;
/// 3. Roundabout itself -> the client cache by user, then -default-sip-server, else 404;
/// 4. a Route naming a trusted server's route-list entry -> that proxy;
/// 5. any other host -> 403 with -strict-host, else that host over its URI transport or
///    -default-network (a name resolved per RFC 3263).
pub fn decide(table: &ServerTable, target: &RouteTarget) -> Decision {
    decide_with(table, target, Instant::now(), &mut random_u32)
}

/// [`decide`] at time `now` (which failed targets are still avoided), with `random` for the
/// weighted order of SRV records.
pub fn decide_with(
    table: &ServerTable,
    target: &RouteTarget,
    now: Instant,
    random: &mut dyn FnMut() -> u32,
) -> Decision {
    match target {
        RouteTarget::Peer(dest) => {
            if let Destination::Flow { remote, .. } | Destination::Address { addr: remote, .. } =
                dest
            {
                if let Some((_, to)) = table.server_for_ip(remote.ip()) {
                    return forward(to);
                }
            }
            forward(dest.clone())
        }
        RouteTarget::Host {
            host,
            port,
            transport,
            user,
            route,
        } => {
            if let Some(server) = table.server_for_host(host) {
                return to_server(table, server, *port, *transport, !route, now, random);
            }
            // A resolved address of a DNS-named server: that very target.
            if let Some((
                _,
                Destination::Address {
                    addr,
                    transport: t,
                    tls_name,
                },
            )) = host_ip(host).and_then(|ip| table.server_for_ip(ip))
            {
                let t2 = transport.unwrap_or(t);
                let port = port.unwrap_or(if t2 == t {
                    addr.port()
                } else {
                    t2.default_port()
                });
                return forward(Destination::Address {
                    transport: t2,
                    addr: SocketAddr::new(addr.ip(), port),
                    tls_name,
                });
            }
            if table.local.is_us(host, *port) {
                let fallback = table
                    .default_server
                    .as_ref()
                    .map(|s| Box::new(to_server(table, s, None, None, true, now, random)));
                return match user {
                    Some(u) if !u.is_empty() => Decision::AskRegistrar {
                        user: u.clone(),
                        fallback,
                    },
                    _ => fallback
                        .map(|b| *b)
                        .unwrap_or(Decision::Reject(Rejection::NoSuchUser)),
                };
            }
            if let Some(server) = table.route_entry(host) {
                // A Route (Record-Route of a dialog) through a trusted server's proxy.
                let t = transport.unwrap_or(server.transport);
                let p = port.unwrap_or(if t == server.transport {
                    server.port
                } else {
                    t.default_port()
                });
                return match host_ip(host) {
                    Some(ip) => forward(Destination::Address {
                        transport: t,
                        addr: SocketAddr::new(ip, p),
                        tls_name: None,
                    }),
                    None => forward(Destination::Name {
                        transport: t,
                        host: host.clone(),
                        port: p,
                    }),
                };
            }
            if table.strict_host {
                return Decision::Reject(Rejection::UnknownHost);
            }
            let t = transport.unwrap_or(table.default_network);
            match host_ip(host) {
                Some(ip) => forward(Destination::Address {
                    transport: t,
                    addr: SocketAddr::new(ip, port.unwrap_or(t.default_port())),
                    tls_name: None,
                }),
                None => {
                    let q = Query::new(host, *port, *transport, table.default_network);
                    from_resolution(table, &q, Some(q.host.clone()), now, random)
                }
            }
        }
    }
}

/// To a trusted server: its address (or its name's targets), the URI's explicit port and
/// transport winning, through its route-list when `with_routes`.
fn to_server(
    table: &ServerTable,
    server: &TrustedServer,
    port: Option<u16>,
    transport: Option<Transport>,
    with_routes: bool,
    now: Instant,
    random: &mut dyn FnMut() -> u32,
) -> Decision {
    if with_routes && !server.routes.is_empty() {
        // RFC 3261 loose routing: every entry as a Route, the request to the first.
        let routes: Vec<String> = server
            .routes
            .iter()
            .map(|r| server.route_value(r))
            .collect();
        let first = &server.routes[0];
        let decision = match first.parse::<IpAddr>() {
            Ok(ip) => forward(Destination::Address {
                transport: server.transport,
                addr: SocketAddr::new(ip.to_canonical(), server.port),
                tls_name: None,
            }),
            Err(_) => {
                let q = Query::new(
                    first,
                    Some(server.port),
                    Some(server.transport),
                    server.transport,
                );
                from_resolution(table, &q, Some(q.host.clone()), now, random)
            }
        };
        return match decision {
            Decision::Forward {
                destination,
                request_uri,
                alternates,
                ..
            } => Decision::Forward {
                destination,
                request_uri,
                routes,
                alternates,
            },
            other => other,
        };
    }
    let Some(q) = server_query(server) else {
        let ip = server.ip().expect("a server without a name has an IP");
        let t = transport.unwrap_or(server.transport);
        let p = port.unwrap_or(if t == server.transport {
            server.port
        } else {
            t.default_port()
        });
        return forward(Destination::Address {
            transport: t,
            addr: SocketAddr::new(ip, p),
            tls_name: Some(server.tls_name()),
        });
    };
    let decision = from_resolution(table, &q, Some(server.tls_name()), now, random);
    if port.is_none() && transport.is_none() {
        return decision;
    }
    // An explicit URI port or transport applies to every target of the name.
    let adjust = |d: Destination| match d {
        Destination::Address {
            transport: t,
            addr,
            tls_name,
        } => {
            let t2 = transport.unwrap_or(t);
            let p = port.unwrap_or(if t2 == t {
                addr.port()
            } else {
                t2.default_port()
            });
            Destination::Address {
                transport: t2,
                addr: SocketAddr::new(addr.ip(), p),
                tls_name,
            }
        }
        other => other,
    };
    match decision {
        Decision::Forward {
            destination,
            request_uri,
            routes,
            alternates,
        } => Decision::Forward {
            destination: adjust(destination),
            request_uri,
            routes,
            alternates: alternates.into_iter().map(adjust).collect(),
        },
        other => other,
    }
}

/// At most this many targets of a name are tried for one request.
const MAX_TARGETS: usize = 8;

/// The targets of a resolved name in RFC 3263 order (failed ones last), as destination and
/// alternates; 503 when it does not resolve.
fn from_resolution(
    table: &ServerTable,
    q: &Query,
    tls_name: Option<String>,
    now: Instant,
    random: &mut dyn FnMut() -> u32,
) -> Decision {
    let Some(r) = table.resolved.get(q) else {
        return Decision::Reject(Rejection::Unresolvable);
    };
    let mut ordered = r
        .ordered(&mut *random, |t| table.is_avoided(t, now))
        .into_iter()
        .take(MAX_TARGETS)
        .map(|t| target_destination(&t, tls_name.clone()));
    match ordered.next() {
        Some(destination) => Decision::Forward {
            destination,
            request_uri: None,
            routes: Vec::new(),
            alternates: ordered.collect(),
        },
        None => Decision::Reject(Rejection::Unresolvable),
    }
}

fn target_destination(t: &Target, tls_name: Option<String>) -> Destination {
    Destination::Address {
        transport: t.transport,
        addr: t.addr,
        tls_name,
    }
}

/// A random number for the weighted order of SRV records: std's random hasher keys, so no
/// crate is needed for it.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: (std::collections::hash_map::RandomState, std::cell::Cell<u64>) =
            Default::default();
    }
    STATE.with(|(keys, counter)| {
        counter.set(counter.get().wrapping_add(1));
        let mut h = keys.build_hasher();
        h.write_u64(counter.get());
        h.finish() as u32
    })
}

fn forward(destination: Destination) -> Decision {
    Decision::Forward {
        destination,
        request_uri: None,
        routes: Vec::new(),
        alternates: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::trusted_server::parse_dataset;

    fn table(strict: bool) -> ServerTable {
        ServerTable {
            servers: vec![
                parse_dataset("203.0.113.20:server.example.com:5060:tcp:").unwrap(),
                parse_dataset("203.0.113.110:pbx.example.com/srv.tel.example.com:5070:wss:")
                    .unwrap(),
            ],
            default_server: None,
            strict_host: strict,
            default_network: Transport::Tcp,
            local: LocalIdentity {
                ip: "203.0.113.5".parse().unwrap(),
                fqdn: Some("proxya.example.com".into()),
                bind_ip: "0.0.0.0".parse().unwrap(),
                ports: Ports {
                    udp: 5060,
                    tcp: 5060,
                    tls: 5061,
                    ws: 8080,
                    wss: 8443,
                },
            },
            resolved: HashMap::new(),
            avoided: HashMap::new(),
        }
    }

    fn host(h: &str, port: Option<u16>, user: Option<&str>) -> RouteTarget {
        RouteTarget::Host {
            host: h.into(),
            port,
            transport: None,
            user: user.map(String::from),
            route: false,
        }
    }

    fn addr(t: Transport, a: &str) -> Destination {
        Destination::Address {
            transport: t,
            addr: a.parse().unwrap(),
            tls_name: None,
        }
    }

    #[test]
    fn trusted_server_by_ip_or_any_fqdn() {
        let t = table(true);
        for h in ["203.0.113.110", "pbx.example.com", "SRV.TEL.example.com"] {
            match decide(&t, &host(h, None, Some("bob"))) {
                Decision::Forward {
                    destination:
                        Destination::Address {
                            transport,
                            addr,
                            tls_name,
                        },
                    ..
                } => {
                    assert_eq!(transport, Transport::Wss);
                    assert_eq!(addr.to_string(), "203.0.113.110:5070");
                    assert_eq!(tls_name.as_deref(), Some("pbx.example.com"));
                }
                other => panic!("{h}: {other:?}"),
            }
        }
    }

    #[test]
    fn roundabout_itself_goes_to_registrar_then_default() {
        let mut t = table(true);
        for h in ["203.0.113.5", "proxya.example.com"] {
            assert_eq!(
                decide(&t, &host(h, Some(5060), Some("alice"))),
                Decision::AskRegistrar {
                    user: "alice".into(),
                    fallback: None
                }
            );
        }
        assert_eq!(
            decide(&t, &host("203.0.113.5", None, None)),
            Decision::Reject(Rejection::NoSuchUser)
        );
        t.default_server = Some(t.servers[0].clone());
        match decide(&t, &host("203.0.113.5", None, Some("alice"))) {
            Decision::AskRegistrar {
                fallback: Some(f), ..
            } => assert!(matches!(
                *f,
                Decision::Forward {
                    destination: Destination::Address {
                        transport: Transport::Tcp,
                        ..
                    },
                    ..
                }
            )),
            other => panic!("{other:?}"),
        }
        // Our IP on a port we do not listen on is someone else.
        assert_eq!(
            decide(&t, &host("203.0.113.5", Some(5999), Some("a"))),
            Decision::Reject(Rejection::UnknownHost)
        );
    }

    #[test]
    fn unknown_host_strict_or_open() {
        assert_eq!(
            decide(&table(true), &host("198.51.100.1", None, None)),
            Decision::Reject(Rejection::UnknownHost)
        );
        assert_eq!(
            decide(&table(false), &host("198.51.100.1", None, None)),
            Decision::Forward {
                destination: addr(Transport::Tcp, "198.51.100.1:5060"),
                request_uri: None,
                routes: vec![],
                alternates: vec![]
            }
        );
        let explicit = RouteTarget::Host {
            host: "carrier.example.net".into(),
            port: Some(5080),
            transport: Some(Transport::Udp),
            user: None,
            route: false,
        };
        // A name: the ServerTable actor resolves it first (A/AAAA, the port is given).
        let mut t = table(false);
        let q = dns_query(&t, &explicit).expect("a name to resolve");
        assert_eq!(
            q,
            Query::new(
                "carrier.example.net",
                Some(5080),
                Some(Transport::Udp),
                Transport::Tcp
            )
        );
        assert_eq!(
            decide(&t, &explicit),
            Decision::Reject(Rejection::Unresolvable)
        );
        t.resolved.insert(
            q,
            resolution(vec![(
                0,
                0,
                vec![target(Transport::Udp, "198.51.100.7:5080")],
            )]),
        );
        assert_eq!(
            decide(&t, &explicit),
            Decision::Forward {
                destination: Destination::Address {
                    transport: Transport::Udp,
                    addr: "198.51.100.7:5080".parse().unwrap(),
                    tls_name: Some("carrier.example.net".into()),
                },
                request_uri: None,
                routes: vec![],
                alternates: vec![]
            }
        );
        // With -strict-host nothing is looked up.
        assert_eq!(dns_query(&table(true), &explicit), None);
    }

    fn target(t: Transport, a: &str) -> Target {
        Target {
            transport: t,
            addr: a.parse().unwrap(),
        }
    }

    fn resolution(entries: Vec<(u16, u16, Vec<Target>)>) -> Resolution {
        Resolution {
            entries: entries
                .into_iter()
                .map(|(priority, weight, targets)| crate::dns::Entry {
                    priority,
                    weight,
                    targets,
                })
                .collect(),
            valid_until: Instant::now() + std::time::Duration::from_secs(60),
            how: String::new(),
            error: None,
        }
    }

    fn dest(t: Transport, a: &str, tls: &str) -> Destination {
        Destination::Address {
            transport: t,
            addr: a.parse().unwrap(),
            tls_name: Some(tls.into()),
        }
    }

    /// A table with the SRV-named server `carrier.example` (two targets, priority 10 and
    /// 20) resolved.
    fn dns_table() -> ServerTable {
        let mut t = table(true);
        t.servers
            .push(parse_dataset("carrier.example:trunk.example:::").unwrap());
        let q = server_query(t.servers.last().unwrap()).unwrap();
        t.resolved.insert(
            q,
            resolution(vec![
                (20, 0, vec![target(Transport::Tcp, "198.51.100.2:5070")]),
                (10, 0, vec![target(Transport::Tcp, "198.51.100.1:5060")]),
            ]),
        );
        t
    }

    #[test]
    fn a_dns_named_server_gives_its_targets_in_order_and_avoids_failed_ones() {
        let mut t = dns_table();
        let first = dest(Transport::Tcp, "198.51.100.1:5060", "trunk.example");
        let second = dest(Transport::Tcp, "198.51.100.2:5070", "trunk.example");
        for h in ["carrier.example", "trunk.example"] {
            assert_eq!(
                dns_query(&t, &host(h, None, None)),
                Some(Query::new("carrier.example", None, None, Transport::Udp))
            );
            assert_eq!(
                decide(&t, &host(h, None, Some("bob"))),
                Decision::Forward {
                    destination: first.clone(),
                    request_uri: None,
                    routes: vec![],
                    alternates: vec![second.clone()]
                }
            );
        }
        // The preferred target failed: the other first, until the avoidance is over.
        let now = Instant::now();
        t.avoided.insert(
            target(Transport::Tcp, "198.51.100.1:5060"),
            now + std::time::Duration::from_secs(30),
        );
        let d = decide_with(&t, &host("carrier.example", None, None), now, &mut || 0);
        assert!(
            matches!(&d, Decision::Forward { destination, alternates, .. }
                if *destination == second && *alternates == [first.clone()]),
            "{d:?}"
        );
        let later = now + std::time::Duration::from_secs(31);
        let d = decide_with(&t, &host("carrier.example", None, None), later, &mut || 0);
        assert!(
            matches!(&d, Decision::Forward { destination, .. } if *destination == first),
            "{d:?}"
        );
        // Every address it resolved to is that trusted server.
        let addrs = t.trusted_addresses();
        for ip in [
            "198.51.100.1",
            "198.51.100.2",
            "203.0.113.20",
            "203.0.113.110",
        ] {
            assert!(addrs.contains(&ip.parse().unwrap()), "{ip}");
        }
        // A contact token of a server's connection leads back to that target's port.
        let from = Destination::Flow {
            flow: FlowId(3),
            transport: Transport::Tcp,
            remote: "198.51.100.2:41000".parse().unwrap(),
        };
        assert_eq!(
            decide(&t, &RouteTarget::Peer(from)),
            forward(second.clone())
        );
        // So does a Request-URI naming one of its addresses.
        assert_eq!(
            decide(&t, &host("198.51.100.2", None, None)),
            forward(second.clone())
        );
        // Not resolved (yet, or at all): 503, not 403.
        t.resolved.clear();
        assert_eq!(
            decide(&t, &host("carrier.example", None, None)),
            Decision::Reject(Rejection::Unresolvable)
        );
        assert_eq!(Rejection::Unresolvable.status().0, 503);
    }

    #[test]
    fn an_explicit_uri_transport_applies_to_every_target() {
        let t = dns_table();
        let target = RouteTarget::Host {
            host: "carrier.example".into(),
            port: None,
            transport: Some(Transport::Udp),
            user: None,
            route: false,
        };
        match decide(&t, &target) {
            Decision::Forward {
                destination,
                alternates,
                ..
            } => {
                assert_eq!(
                    destination,
                    dest(Transport::Udp, "198.51.100.1:5060", "trunk.example")
                );
                assert_eq!(
                    alternates,
                    [dest(Transport::Udp, "198.51.100.2:5060", "trunk.example")]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn route_list_adds_routes_and_goes_to_the_first_entry() {
        let mut t = table(true);
        t.servers
            .push(parse_dataset("192.0.2.20:pbx.test:5070:tcp:192.0.2.150/192.0.2.180").unwrap());
        assert_eq!(
            decide(&t, &host("pbx.test", None, Some("bob"))),
            Decision::Forward {
                destination: Destination::Address {
                    transport: Transport::Tcp,
                    addr: "192.0.2.150:5070".parse().unwrap(),
                    tls_name: None,
                },
                request_uri: None,
                routes: vec![
                    "<sip:192.0.2.150:5070;transport=tcp;lr>".into(),
                    "<sip:192.0.2.180:5070;transport=tcp;lr>".into()
                ],
                alternates: vec![]
            }
        );
        // A Route left in the request (a dialog's route set) is followed as it is.
        let by_route = RouteTarget::Host {
            host: "192.0.2.20".into(),
            port: Some(5070),
            transport: Some(Transport::Tcp),
            user: None,
            route: true,
        };
        assert_eq!(
            decide(&t, &by_route),
            forward(dest(Transport::Tcp, "192.0.2.20:5070", "pbx.test"))
        );
        // A Route naming one of the proxies passes -strict-host.
        let through_proxy = RouteTarget::Host {
            host: "192.0.2.180".into(),
            port: Some(5070),
            transport: Some(Transport::Tcp),
            user: None,
            route: true,
        };
        assert_eq!(
            decide(&t, &through_proxy),
            forward(Destination::Address {
                transport: Transport::Tcp,
                addr: "192.0.2.180:5070".parse().unwrap(),
                tls_name: None,
            })
        );
        assert_eq!(dns_query(&t, &through_proxy), None);
    }

    #[test]
    fn trusted_addresses_are_shared_and_replaced() {
        let a = TrustedAddresses::from_ips(["192.0.2.1".parse().unwrap()]);
        let b = a.clone();
        assert!(b.contains(&"::ffff:192.0.2.1".parse().unwrap()));
        assert!(a.replace(["192.0.2.2".parse().unwrap()]));
        assert!(!a.replace(["192.0.2.2".parse().unwrap()]));
        assert!(!b.contains(&"192.0.2.1".parse().unwrap()));
        assert!(b.contains(&"192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn explicit_uri_transport_and_port_override_server() {
        let target = RouteTarget::Host {
            host: "203.0.113.20".into(),
            port: Some(5099),
            transport: Some(Transport::Udp),
            user: None,
            route: false,
        };
        match decide(&table(true), &target) {
            Decision::Forward {
                destination:
                    Destination::Address {
                        transport, addr, ..
                    },
                ..
            } => assert_eq!((transport, addr.port()), (Transport::Udp, 5099)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn known_peer_prefers_trusted_server_address() {
        let t = table(true);
        let from_server = Destination::Flow {
            flow: FlowId(7),
            transport: Transport::Tcp,
            remote: "203.0.113.20:40000".parse().unwrap(),
        };
        match decide(&t, &RouteTarget::Peer(from_server)) {
            Decision::Forward {
                destination: Destination::Address { addr, .. },
                ..
            } => assert_eq!(addr.to_string(), "203.0.113.20:5060"),
            other => panic!("{other:?}"),
        }
        let client = Destination::Flow {
            flow: FlowId(9),
            transport: Transport::Wss,
            remote: "192.0.2.35:50000".parse().unwrap(),
        };
        assert_eq!(
            decide(&t, &RouteTarget::Peer(client.clone())),
            Decision::Forward {
                destination: client,
                request_uri: None,
                routes: vec![],
                alternates: vec![]
            }
        );
    }

    #[test]
    fn is_us_names_only_listeners_that_are_on() {
        let mut local = table(true).local;
        local.ports.tls = 0;
        local.ports.wss = 0;
        assert!(local.is_us("203.0.113.5", Some(5060)));
        assert!(local.is_us("203.0.113.5", Some(8080)));
        assert!(local.is_us("proxya.example.com", None));
        // A listener that is off: neither :0 nor its default port (5061 may be another
        // server on the same host) is Roundabout.
        assert!(!local.is_us("203.0.113.5", Some(0)));
        assert!(!local.is_us("203.0.113.5", Some(5061)));
        assert!(!local.is_us("203.0.113.5", Some(8443)));
        assert!(!local.is_us("203.0.113.6", Some(5060)));
    }

    #[test]
    fn is_us_takes_ipv4_mapped_hosts_as_ipv4() {
        let mut local = table(true).local;
        assert!(local.is_us("[::ffff:203.0.113.5]", Some(5060)));
        assert!(!local.is_us("[::ffff:203.0.113.6]", Some(5060)));
        // Bound to a specific address: that one is us too, in either spelling.
        local.bind_ip = "::ffff:198.51.100.5".parse().unwrap();
        assert!(local.is_us("198.51.100.5", None));
        assert!(local.is_us("[::ffff:198.51.100.5]", None));
        // `-bind-ip ::` (dual stack) is not an address of ours.
        local.bind_ip = "::".parse().unwrap();
        assert!(!local.is_us("[::]", None));
        assert!(!local.is_us("0.0.0.0", None));
    }
}
