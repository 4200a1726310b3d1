//! Next-hop decisions as plain functions: who a request is for and how to reach it.
//!
//! The Router turns a request into a [`RouteTarget`] (what the message itself says: a Route,
//! a contact token, the Request-URI) and the ServerTable turns that into a [`Decision`] with
//! [`decide`], knowing the trusted servers and the strictness flags. Nothing here touches a
//! socket, so every rule is unit-tested below.

use crate::config::{Config, Ports, TrustedServer};
use crate::sip::uri::{host_ip, SipUri};
use crate::sip::Transport;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

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

    fn to_server(s: &TrustedServer) -> Destination {
        Destination::Address {
            transport: s.transport,
            addr: SocketAddr::new(s.ip, s.port),
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
}

impl Rejection {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Rejection::UnknownHost => (403, "Forbidden - Unknown Destination Host"),
            Rejection::NoSuchUser => (404, "Not Found"),
            Rejection::ClientGone => (480, "Temporarily Unavailable"),
            Rejection::UnsupportedScheme => (416, "Unsupported URI Scheme"),
        }
    }
}

/// The trusted servers and the rules for hosts that are not among them.
#[derive(Debug, Clone)]
pub struct ServerTable {
    pub servers: Vec<TrustedServer>,
    pub default_server: Option<TrustedServer>,
    pub strict_host: bool,
    pub default_network: Transport,
    pub local: LocalIdentity,
}

impl ServerTable {
    pub fn from_config(c: &Config) -> ServerTable {
        ServerTable {
            servers: c.trusted_servers.clone(),
            default_server: c.default_sip_server.clone(),
            strict_host: c.strict_host,
            default_network: c.default_network,
            local: LocalIdentity::from_config(c),
        }
    }

    pub fn server_for_host(&self, host: &str) -> Option<&TrustedServer> {
        self.servers.iter().find(|s| s.matches_host(host))
    }

    pub fn server_for_ip(&self, ip: IpAddr) -> Option<&TrustedServer> {
        self.servers.iter().find(|s| s.ip == ip)
    }
}

/// The routing rules, in order (README "Routing"):
/// 1. a known peer (contact token): a trusted server by its configured address, anyone else
///    down their own flow or to their address;
/// 2. a trusted server's IP or FQDN -> that server's port and protocol (explicit URI port or
///    transport win);
/// 3. Roundabout itself -> the client cache by user, then -default-sip-server, else 404;
/// 4. any other host -> 403 with -strict-host, else that host over its URI transport or
///    -default-network.
pub fn decide(table: &ServerTable, target: &RouteTarget) -> Decision {
    match target {
        RouteTarget::Peer(dest) => {
            if let Destination::Flow { remote, .. } | Destination::Address { addr: remote, .. } =
                dest
            {
                if let Some(server) = table.server_for_ip(remote.ip()) {
                    return forward(Destination::to_server(server));
                }
            }
            forward(dest.clone())
        }
        RouteTarget::Host {
            host,
            port,
            transport,
            user,
        } => {
            if let Some(server) = table.server_for_host(host) {
                let transport = transport.unwrap_or(server.transport);
                let port = port.unwrap_or(if transport == server.transport {
                    server.port
                } else {
                    transport.default_port()
                });
                return forward(Destination::Address {
                    transport,
                    addr: SocketAddr::new(server.ip, port),
                    tls_name: Some(server.tls_name()),
                });
            }
            if table.local.is_us(host, *port) {
                let fallback = table.default_server.as_ref().map(|s| {
                    Box::new(Decision::Forward {
                        destination: Destination::to_server(s),
                        request_uri: None,
                    })
                });
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
            if table.strict_host {
                return Decision::Reject(Rejection::UnknownHost);
            }
            let transport = transport.unwrap_or(table.default_network);
            let port = port.unwrap_or(transport.default_port());
            forward(match host_ip(host) {
                Some(ip) => Destination::Address {
                    transport,
                    addr: SocketAddr::new(ip, port),
                    tls_name: None,
                },
                None => Destination::Name {
                    transport,
                    host: host.clone(),
                    port,
                },
            })
        }
    }
}

fn forward(destination: Destination) -> Decision {
    Decision::Forward {
        destination,
        request_uri: None,
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
        }
    }

    fn host(h: &str, port: Option<u16>, user: Option<&str>) -> RouteTarget {
        RouteTarget::Host {
            host: h.into(),
            port,
            transport: None,
            user: user.map(String::from),
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
                request_uri: None
            }
        );
        let explicit = RouteTarget::Host {
            host: "carrier.example.net".into(),
            port: Some(5080),
            transport: Some(Transport::Udp),
            user: None,
        };
        assert_eq!(
            decide(&table(false), &explicit),
            Decision::Forward {
                destination: Destination::Name {
                    transport: Transport::Udp,
                    host: "carrier.example.net".into(),
                    port: 5080
                },
                request_uri: None
            }
        );
    }

    #[test]
    fn explicit_uri_transport_and_port_override_server() {
        let target = RouteTarget::Host {
            host: "203.0.113.20".into(),
            port: Some(5099),
            transport: Some(Transport::Udp),
            user: None,
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
                request_uri: None
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
