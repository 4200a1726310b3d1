//! The Via header value: `SIP/2.0/UDP host:port;branch=z9hG4bK...;rport`.

use super::transport::Transport;
use super::uri::find_param;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaError(pub String);

impl fmt::Display for ViaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid Via '{}'", self.0)
    }
}

impl std::error::Error for ViaError {}

/// One Via value. `transport` is `None` for a protocol Roundabout does not speak (e.g. SCTP):
/// such a Via can still be forwarded, only not answered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    pub transport: Option<Transport>,
    pub host: &'a str,
    pub port: Option<u16>,
    /// Parameters with their leading `;`.
    pub params: &'a str,
}

impl<'a> Via<'a> {
    pub fn parse(value: &'a str) -> Result<Via<'a>, ViaError> {
        let err = || ViaError(value.to_string());
        // sent-protocol: name SLASH version SLASH transport, LWS allowed around slashes.
        let mut rest = value.trim_start();
        let mut parts = [""; 3];
        for (i, part) in parts.iter_mut().enumerate() {
            let end = rest
                .find(|c: char| c == '/' || c.is_whitespace())
                .ok_or_else(err)?;
            *part = &rest[..end];
            rest = rest[end..].trim_start();
            if i < 2 {
                rest = rest.strip_prefix('/').ok_or_else(err)?.trim_start();
            }
        }
        if !parts[0].eq_ignore_ascii_case("SIP") || parts[1] != "2.0" || parts[2].is_empty() {
            return Err(err());
        }
        let transport = parts[2].parse().ok();
        let sent_by_end = super::uri::find_byte(rest, b';').unwrap_or(rest.len());
        let sent_by = rest[..sent_by_end].trim();
        let params = &rest[sent_by_end..];
        let (host, port) = split_host_port(sent_by).ok_or_else(err)?;
        Ok(Via {
            transport,
            host,
            port,
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        find_param(self.params, name)
    }

    pub fn branch(&self) -> Option<&'a str> {
        self.param("branch").flatten()
    }

    pub fn received(&self) -> Option<&'a str> {
        self.param("received").flatten()
    }

    /// `Some(None)` when the client asked for rport (RFC 3581) but it is not filled in yet.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport").map(|v| v.and_then(|p| p.parse().ok()))
    }
}

/// Splits `host[:port]`, with IPv6 in brackets.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']')?;
        (&s[..=end], s[end + 1..].strip_prefix(':'))
    } else {
        match s.rfind(':') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.trim().parse().ok()?),
        None => None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_via_forms() {
        let v = Via::parse("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport").unwrap();
        assert_eq!(v.transport, Some(Transport::Udp));
        assert_eq!(v.host, "127.0.0.1");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(v.rport(), Some(None));
        let v = Via::parse(
            "SIP / 2.0 / wss df7jal23ls0d.invalid;branch=z9hG4bKx;rport=5;received=1.2.3.4",
        )
        .unwrap();
        assert_eq!(v.transport, Some(Transport::Wss));
        assert_eq!(v.port, None);
        assert_eq!(v.rport(), Some(Some(5)));
        assert_eq!(v.received(), Some("1.2.3.4"));
        let v = Via::parse("SIP/2.0/TCP [2001:db8::1]:5070 ;branch=x").unwrap();
        assert_eq!(v.host, "[2001:db8::1]");
        assert_eq!(v.port, Some(5070));
        let v = Via::parse("SIP/2.0/SCTP h;branch=y").unwrap();
        assert_eq!(v.transport, None);
    }

    #[test]
    fn rejects_broken_via() {
        for bad in [
            "SIP/2.0/UDP",
            "SIP/3.0/UDP h",
            "HTTP/2.0/UDP h",
            "SIP/2.0/UDP h:x",
            "garbage",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }
}
