//! `-trusted-server` datasets: `host:fqdn-list:port:protocol:route-list`.
//!
//! Exactly five `:`-separated fields, `/` between several FQDNs or routes. An IPv6 address
//! is written in brackets (`[2001:db8::1]::5060:udp:`) so its colons are not field separators.
//!
//! The host is an IP address or a DNS name. A name is resolved per RFC 3263 (see
//! `crate::dns`): with the port empty its SRV records give the targets (and with the protocol
//! empty too, its NAPTR records choose the protocol first); with a port given only its
//! A/AAAA records are used. The route-list names the proxies a request for the server passes
//! first (Route headers, RFC 3261 loose routing).

use crate::sip::Transport;
use std::fmt;
use std::net::IpAddr;

/// How a trusted server is named in its dataset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerHost {
    Ip(IpAddr),
    /// A DNS name (lower case), resolved per RFC 3263.
    Name(String),
}

impl fmt::Display for ServerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerHost::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            ServerHost::Ip(v4) => write!(f, "{v4}"),
            ServerHost::Name(n) => f.write_str(n),
        }
    }
}

/// A server Roundabout knows: where and how to reach it, and the names it goes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedServer {
    pub host: ServerHost,
    pub fqdns: Vec<String>,
    /// The port given, else the protocol's default (for a name: used when it has no SRV
    /// records).
    pub port: u16,
    /// The protocol given; for a name with the field empty, UDP until NAPTR says otherwise.
    pub transport: Transport,
    /// Fields 3 and 4 as written (`None`: empty). For a name they choose the RFC 3263 steps:
    /// no port -> SRV, no protocol either -> NAPTR first.
    pub given_port: Option<u16>,
    pub given_transport: Option<Transport>,
    /// The proxies a request for this server goes through first, in order (IPv4 addresses
    /// or names: the dataset's `:` leaves no room for IPv6), each reached on the server's port
    /// and protocol.
    pub routes: Vec<String>,
}

impl TrustedServer {
    /// The server's IP address, when the dataset names it by one.
    pub fn ip(&self) -> Option<IpAddr> {
        match &self.host {
            ServerHost::Ip(ip) => Some(*ip),
            ServerHost::Name(_) => None,
        }
    }

    /// The DNS name the dataset names the server by, if any.
    pub fn dns_name(&self) -> Option<&str> {
        match &self.host {
            ServerHost::Name(n) => Some(n),
            ServerHost::Ip(_) => None,
        }
    }

    /// Whether a Request-URI host names this server: its IP, its DNS name or any FQDN
    /// (case-insensitive). Addresses a name resolved to are matched by the ServerTable.
    pub fn matches_host(&self, host: &str) -> bool {
        let by_host = match &self.host {
            ServerHost::Ip(ip) => {
                crate::sip::uri::host_ip(host).is_some_and(|h| h.to_canonical() == *ip)
            }
            ServerHost::Name(n) => n.eq_ignore_ascii_case(host),
        };
        by_host || self.fqdns.iter().any(|f| f.eq_ignore_ascii_case(host))
    }

    /// The name to present in TLS SNI and to check its certificate against: the first FQDN,
    /// else the dataset's name or IP (RFC 5922: the domain that was looked up, not an SRV
    /// target's name).
    pub fn tls_name(&self) -> String {
        self.fqdns
            .first()
            .cloned()
            .unwrap_or_else(|| match &self.host {
                ServerHost::Ip(ip) => ip.to_string(),
                ServerHost::Name(n) => n.clone(),
            })
    }

    /// The Route header value for route-list entry `entry`:
    /// `<sip:HOST:PORT;transport=PROTO;lr>` with this server's port and protocol.
    pub fn route_value(&self, entry: &str) -> String {
        let host = match entry.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => entry.to_string(),
        };
        format!(
            "<sip:{host}:{};transport={};lr>",
            self.port,
            self.transport.name()
        )
    }
}

impl fmt::Display for TrustedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.given_port, self.given_transport) {
            (ServerHost::Name(n), None, None) => write!(f, "{n} (DNS: NAPTR, SRV, A/AAAA)")?,
            (ServerHost::Name(n), None, Some(t)) => write!(f, "{n} over {t} (DNS: SRV, A/AAAA)")?,
            (ServerHost::Name(n), Some(p), _) => {
                write!(f, "{n}:{p} over {} (DNS: A/AAAA)", self.transport)?
            }
            (host, _, _) => write!(f, "{host}:{} over {}", self.port, self.transport)?,
        }
        if !self.fqdns.is_empty() {
            write!(f, ", names {}", self.fqdns.join(", "))?;
        }
        if !self.routes.is_empty() {
            write!(f, ", through {}", self.routes.join(", "))?;
        }
        Ok(())
    }
}

/// What is wrong with one dataset; shown as a warning and the dataset skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetError {
    FieldCount(usize),
    BadIp(String),
    BadFqdn(String),
    BadPort(String),
    BadProtocol(String),
    BadRoute(String),
    Whitespace,
}

impl fmt::Display for DatasetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetError::FieldCount(n) => write!(
                f,
                "has {n} field(s), needs exactly 5 (host:fqdn-list:port:protocol:route-list, keep empty fields' ':')"
            ),
            DatasetError::BadIp(v) => {
                write!(f, "field 1 (host): '{v}' is not an IP address or a DNS name")
            }
            DatasetError::BadFqdn(v) => write!(f, "field 2 (fqdn-list): '{v}' is not a host name"),
            DatasetError::BadPort(v) => write!(f, "field 3 (port): '{v}' is not a port from 1 to 65535"),
            DatasetError::BadProtocol(v) => write!(
                f,
                "field 4 (protocol): '{v}' is not one of udp, tcp, tls, ws, wss"
            ),
            DatasetError::BadRoute(v) => write!(
                f,
                "field 5 (route-list): '{v}' is not an IP address or a host name"
            ),
            DatasetError::Whitespace => write!(f, "contains spaces; datasets are separated by ',' without spaces"),
        }
    }
}

impl std::error::Error for DatasetError {}

/// Parses one dataset.
pub fn parse_dataset(s: &str) -> Result<TrustedServer, DatasetError> {
    if s.contains(char::is_whitespace) {
        return Err(DatasetError::Whitespace);
    }
    let (ip_str, rest) = if let Some(inner) = s.strip_prefix('[') {
        let end = inner
            .find(']')
            .ok_or_else(|| DatasetError::BadIp(s.to_string()))?;
        let rest = inner[end + 1..]
            .strip_prefix(':')
            .ok_or(DatasetError::FieldCount(1))?;
        (&inner[..end], rest)
    } else {
        match s.split_once(':') {
            Some((ip, rest)) => (ip, rest),
            None => return Err(DatasetError::FieldCount(1)),
        }
    };
    let fields: Vec<&str> = rest.split(':').collect();
    if fields.len() != 4 {
        return Err(DatasetError::FieldCount(fields.len() + 1));
    }
    // [::ffff:192.0.2.20] is the IPv4 server 192.0.2.20: sources are compared as IPv4.
    let bracketed = s.starts_with('[');
    let host = match ip_str.parse::<IpAddr>() {
        Ok(ip) => ServerHost::Ip(ip.to_canonical()),
        Err(_) if !bracketed && is_dns_name(ip_str) => {
            ServerHost::Name(ip_str.to_ascii_lowercase())
        }
        Err(_) => return Err(DatasetError::BadIp(ip_str.to_string())),
    };
    let fqdns = list(fields[0]);
    if let Some(bad) = fqdns.iter().find(|f| !is_hostname(f)) {
        return Err(DatasetError::BadFqdn(bad.clone()));
    }
    // A name may leave the protocol to NAPTR; an IP needs one.
    let given_transport = match (fields[2], &host) {
        ("", ServerHost::Name(_)) => None,
        (p, _) => Some(
            p.parse::<Transport>()
                .map_err(|_| DatasetError::BadProtocol(p.to_string()))?,
        ),
    };
    let transport = given_transport.unwrap_or(Transport::Udp);
    let given_port = if fields[1].is_empty() {
        None
    } else {
        match fields[1].parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => return Err(DatasetError::BadPort(fields[1].to_string())),
        }
    };
    let routes = list(fields[3]);
    if let Some(bad) = routes
        .iter()
        .find(|r| r.parse::<IpAddr>().is_err() && !is_dns_name(r))
    {
        return Err(DatasetError::BadRoute(bad.clone()));
    }
    Ok(TrustedServer {
        host,
        fqdns,
        port: given_port.unwrap_or(transport.default_port()),
        transport,
        given_port,
        given_transport,
        routes,
    })
}

/// Parses the whole `-trusted-server` value: the valid servers, and a warning per bad one.
pub fn parse_trusted_servers(value: &str) -> (Vec<TrustedServer>, Vec<String>) {
    let mut servers = Vec::new();
    let mut warnings = Vec::new();
    for (i, dataset) in value.split(',').enumerate() {
        if dataset.is_empty() {
            continue;
        }
        match parse_dataset(dataset) {
            Ok(s) => servers.push(s),
            Err(e) => warnings.push(format!(
                "-trusted-server dataset {} '{dataset}' skipped: {e}",
                i + 1
            )),
        }
    }
    (servers, warnings)
}

fn list(field: &str) -> Vec<String> {
    field
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A name to look up: a host name with at least one letter (so that a mistyped address
/// such as `203.0.113.300` stays an error instead of a DNS query).
fn is_dns_name(s: &str) -> bool {
    is_hostname(s) && s.bytes().any(|b| b.is_ascii_alphabetic())
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_and_full_datasets() {
        let s = parse_dataset("203.0.113.20::5060:tcp:").unwrap();
        assert_eq!(s.ip().unwrap().to_string(), "203.0.113.20");
        assert!(s.fqdns.is_empty() && s.routes.is_empty());
        assert_eq!((s.port, s.transport), (5060, Transport::Tcp));
        let s = parse_dataset(
            "203.0.113.110:pbx.example.com/srv.tel.example.com:5060:WSS:203.0.113.150/203.0.113.180",
        )
        .unwrap();
        assert_eq!(s.fqdns, vec!["pbx.example.com", "srv.tel.example.com"]);
        assert_eq!(s.transport, Transport::Wss);
        assert_eq!(s.routes.len(), 2);
        assert!(s.matches_host("SRV.tel.example.com"));
        assert!(s.matches_host("203.0.113.110"));
        assert!(!s.matches_host("203.0.113.111"));
        assert_eq!(s.tls_name(), "pbx.example.com");
    }

    #[test]
    fn ipv6_and_default_port() {
        let s = parse_dataset("[2001:db8::1]:::tls:").unwrap();
        assert_eq!(s.ip().unwrap().to_string(), "2001:db8::1");
        assert_eq!(s.port, 5061);
        assert!(s.matches_host("[2001:db8::1]"));
        assert_eq!(s.tls_name(), "2001:db8::1");
    }

    #[test]
    fn ipv4_mapped_server_is_ipv4() {
        let s = parse_dataset("[::ffff:192.0.2.20]::5060:udp:").unwrap();
        assert_eq!(s.ip().unwrap().to_string(), "192.0.2.20");
        assert!(s.matches_host("192.0.2.20"));
        assert!(s.matches_host("[::ffff:192.0.2.20]"));
        let s = parse_dataset("192.0.2.20::5060:udp:").unwrap();
        assert!(s.matches_host("[::ffff:192.0.2.20]"));
    }

    #[test]
    fn each_error_names_its_field() {
        use DatasetError::*;
        assert_eq!(parse_dataset("203.0.113.20::5060:tcp"), Err(FieldCount(4)));
        assert_eq!(
            parse_dataset("203.0.113.20::5060:tcp::"),
            Err(FieldCount(6))
        );
        assert_eq!(parse_dataset("203.0.113.20"), Err(FieldCount(1)));
        assert_eq!(
            parse_dataset("203.0.113.300::5060:tcp:"),
            Err(BadIp("203.0.113.300".into()))
        );
        assert_eq!(parse_dataset("::5060:tcp:"), Err(BadIp("".into())));
        assert_eq!(
            parse_dataset("1.2.3.4:a..b:5060:tcp:"),
            Err(BadFqdn("a..b".into()))
        );
        assert_eq!(parse_dataset("1.2.3.4::0:tcp:"), Err(BadPort("0".into())));
        assert_eq!(
            parse_dataset("1.2.3.4::70000:tcp:"),
            Err(BadPort("70000".into()))
        );
        assert_eq!(
            parse_dataset("1.2.3.4::5060:sctp:"),
            Err(BadProtocol("sctp".into()))
        );
        assert_eq!(
            parse_dataset("1.2.3.4::5060::"),
            Err(BadProtocol("".into()))
        );
        assert_eq!(parse_dataset("1.2.3.4:: 5060:tcp:"), Err(Whitespace));
    }

    #[test]
    fn dns_names_choose_the_rfc3263_steps() {
        let s = parse_dataset("SIP.Carrier.example:carrier.example:5060:udp:").unwrap();
        assert_eq!(s.host, ServerHost::Name("sip.carrier.example".into()));
        assert_eq!(s.ip(), None);
        assert_eq!(
            (s.given_port, s.given_transport),
            (Some(5060), Some(Transport::Udp))
        );
        assert!(s.matches_host("sip.carrier.EXAMPLE"));
        assert!(s.matches_host("carrier.example"));
        assert_eq!(s.tls_name(), "carrier.example");
        let srv = parse_dataset("carrier.example::::").unwrap();
        assert_eq!((srv.given_port, srv.given_transport), (None, None));
        assert_eq!((srv.port, srv.transport), (5060, Transport::Udp));
        assert_eq!(srv.tls_name(), "carrier.example");
        assert!(srv.to_string().contains("NAPTR"), "{srv}");
        let srv = parse_dataset("carrier.example:::tls:").unwrap();
        assert_eq!((srv.given_port, srv.port), (None, 5061));
        // An IP needs its protocol; a mistyped address is not taken for a name.
        assert_eq!(
            parse_dataset("192.0.2.1::5060::"),
            Err(DatasetError::BadProtocol("".into()))
        );
        assert_eq!(
            parse_dataset("192.0.2.300::5060:udp:"),
            Err(DatasetError::BadIp("192.0.2.300".into()))
        );
    }

    #[test]
    fn route_list_entries_become_route_values() {
        let s = parse_dataset("192.0.2.20::5070:tcp:192.0.2.150/edge.example").unwrap();
        assert_eq!(s.routes, vec!["192.0.2.150", "edge.example"]);
        assert_eq!(
            s.route_value(&s.routes[0]),
            "<sip:192.0.2.150:5070;transport=tcp;lr>"
        );
        assert_eq!(
            s.route_value("2001:db8::5"),
            "<sip:[2001:db8::5]:5070;transport=tcp;lr>"
        );
        assert_eq!(
            parse_dataset("192.0.2.20::5070:tcp:a..b"),
            Err(DatasetError::BadRoute("a..b".into()))
        );
    }

    #[test]
    fn list_keeps_good_and_warns_bad() {
        let (servers, warnings) =
            parse_trusted_servers("203.0.113.20::5060:tcp:,bogus,203.0.113.21::5062:udp:");
        assert_eq!(servers.len(), 2);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("dataset 2 'bogus'"), "{}", warnings[0]);
        assert!(warnings[0].contains("exactly 5"), "{}", warnings[0]);
    }
}
