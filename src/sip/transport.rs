//! The five transports Roundabout speaks, and how each is spelled in SIP.
//!
//! Via uses upper-case tokens (`UDP`, `TCP`, `TLS`, `WS`, `WSS`); a URI's `;transport=`
//! parameter uses lower case, and RFC 7118 spells both WS and WSS as `ws` there (security
//! comes from `sips:`), so the mapping is not symmetric.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    pub const ALL: [Transport; 5] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ];

    /// The token in a Via header's sent-protocol (`SIP/2.0/UDP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// The value of a URI `;transport=` parameter, `None` for UDP (the default, left out).
    pub fn uri_param(self) -> Option<&'static str> {
        match self {
            Transport::Udp => None,
            Transport::Tcp => Some("tcp"),
            Transport::Tls => Some("tls"),
            Transport::Ws | Transport::Wss => Some("ws"),
        }
    }

    /// Whether a URI naming this transport must use the `sips:` scheme.
    pub fn is_secure(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// Connection-oriented transports carry a flow; responses must return on it.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
            Transport::Ws => 80,
            Transport::Wss => 443,
        }
    }

    /// The lower-case name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// Reads a URI `;transport=` value. `ws` is ambiguous (WS or WSS); the scheme decides.
    pub fn from_uri_param(value: &str, sips: bool) -> Option<Transport> {
        let t: Transport = value.parse().ok()?;
        Some(match (t, sips) {
            (Transport::Ws, true) => Transport::Wss,
            (Transport::Tcp, true) => Transport::Tls,
            (t, _) => t,
        })
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTransport(pub String);

impl fmt::Display for UnknownTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown transport '{}' (expected udp, tcp, tls, ws or wss)",
            self.0
        )
    }
}

impl std::error::Error for UnknownTransport {}

impl FromStr for Transport {
    type Err = UnknownTransport;

    /// Any case: `udp`, `UDP`, `Wss`...
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Transport::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownTransport(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case() {
        assert_eq!("UDP".parse::<Transport>().unwrap(), Transport::Udp);
        assert_eq!("wSs".parse::<Transport>().unwrap(), Transport::Wss);
        assert!("sctp".parse::<Transport>().is_err());
        assert!("".parse::<Transport>().is_err());
    }

    #[test]
    fn uri_param_ws_depends_on_scheme() {
        assert_eq!(Transport::from_uri_param("ws", false), Some(Transport::Ws));
        assert_eq!(Transport::from_uri_param("WS", true), Some(Transport::Wss));
        assert_eq!(Transport::from_uri_param("tcp", true), Some(Transport::Tls));
        assert_eq!(Transport::Wss.uri_param(), Some("ws"));
        assert_eq!(Transport::Udp.uri_param(), None);
    }
}
