//! `-trusted-server` datasets: `ip:fqdn-list:port:protocol:route-list`.
//!
//! Exactly five `:`-separated fields, `/` between several FQDNs or routes. An IPv6 address
//! is written in brackets (`[2001:db8::1]::5060:udp:`) so its colons are not field separators.

use crate::sip::Transport;
use std::fmt;
use std::net::IpAddr;

/// A server Roundabout knows: where and how to reach it, and the names it goes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedServer {
    pub ip: IpAddr,
    pub fqdns: Vec<String>,
    pub port: u16,
    pub transport: Transport,
    /// Parsed and shown, not yet used for routing (as in the original program).
    pub routes: Vec<String>,
}

impl TrustedServer {
    /// Whether a Request-URI host names this server (its IP or any FQDN, case-insensitive).
    pub fn matches_host(&self, host: &str) -> bool {
        crate::sip::uri::host_ip(host).is_some_and(|ip| ip.to_canonical() == self.ip)
            || self.fqdns.iter().any(|f| f.eq_ignore_ascii_case(host))
    }

    /// The name to present in TLS SNI and to check its certificate against.
    pub fn tls_name(&self) -> String {
        self.fqdns
            .first()
            .cloned()
            .unwrap_or_else(|| self.ip.to_string())
    }
}

impl fmt::Display for TrustedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = match self.ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        write!(f, "{ip}:{} over {}", self.port, self.transport)?;
        if !self.fqdns.is_empty() {
            write!(f, ", names {}", self.fqdns.join(", "))?;
        }
        if !self.routes.is_empty() {
            write!(f, ", routes {} (not used yet)", self.routes.join(", "))?;
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
    Whitespace,
}

impl fmt::Display for DatasetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetError::FieldCount(n) => write!(
                f,
                "has {n} field(s), needs exactly 5 (ip:fqdn-list:port:protocol:route-list, keep empty fields' ':')"
            ),
            DatasetError::BadIp(v) => write!(f, "field 1 (ip): '{v}' is not an IP address"),
            DatasetError::BadFqdn(v) => write!(f, "field 2 (fqdn-list): '{v}' is not a host name"),
            DatasetError::BadPort(v) => write!(f, "field 3 (port): '{v}' is not a port from 1 to 65535"),
            DatasetError::BadProtocol(v) => write!(
                f,
                "field 4 (protocol): '{v}' is not one of udp, tcp, tls, ws, wss"
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
    let ip = ip_str
        .parse::<IpAddr>()
        .map_err(|_| DatasetError::BadIp(ip_str.to_string()))?
        .to_canonical();
    let fqdns = list(fields[0]);
    if let Some(bad) = fqdns.iter().find(|f| !is_hostname(f)) {
        return Err(DatasetError::BadFqdn(bad.clone()));
    }
    let transport: Transport = fields[2]
        .parse()
        .map_err(|_| DatasetError::BadProtocol(fields[2].to_string()))?;
    let port = if fields[1].is_empty() {
        transport.default_port()
    } else {
        match fields[1].parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(DatasetError::BadPort(fields[1].to_string())),
        }
    };
    Ok(TrustedServer {
        ip,
        fqdns,
        port,
        transport,
        routes: list(fields[3]),
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
        assert_eq!(s.ip.to_string(), "203.0.113.20");
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
        assert_eq!(s.ip.to_string(), "2001:db8::1");
        assert_eq!(s.port, 5061);
        assert!(s.matches_host("[2001:db8::1]"));
        assert_eq!(s.tls_name(), "2001:db8::1");
    }

    #[test]
    fn ipv4_mapped_server_is_ipv4() {
        let s = parse_dataset("[::ffff:192.0.2.20]::5060:udp:").unwrap();
        assert_eq!(s.ip.to_string(), "192.0.2.20");
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
    fn list_keeps_good_and_warns_bad() {
        let (servers, warnings) =
            parse_trusted_servers("203.0.113.20::5060:tcp:,bogus,203.0.113.21::5062:udp:");
        assert_eq!(servers.len(), 2);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("dataset 2 'bogus'"), "{}", warnings[0]);
        assert!(warnings[0].contains("exactly 5"), "{}", warnings[0]);
    }
}
