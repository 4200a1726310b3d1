//! SIP URIs and name-addr header values, parsed without copying.
//!
//! rsip 0.4 cannot be used here: it truncates `%`-escaped parameter values (which carry
//! Roundabout's contact tokens), drops URI headers and has no IPv6 hosts. These small parsers
//! borrow from the message and give back exactly the pieces a proxy needs.

use super::transport::Transport;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriError {
    NotSip(String),
    NoHost,
    BadHost(String),
    BadPort(String),
    Unterminated,
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UriError::NotSip(s) => write!(f, "not a sip: or sips: URI: '{s}'"),
            UriError::NoHost => write!(f, "URI has no host"),
            UriError::BadHost(h) => write!(f, "invalid host '{h}'"),
            UriError::BadPort(p) => write!(f, "invalid port '{p}'"),
            UriError::Unterminated => write!(f, "'<' without matching '>'"),
        }
    }
}

impl std::error::Error for UriError {}

/// A `sip:` or `sips:` URI. `host` keeps IPv6 brackets; `params` keeps its leading `;`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    pub sips: bool,
    pub user: Option<&'a str>,
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: &'a str,
    pub headers: &'a str,
}

impl<'a> SipUri<'a> {
    pub fn parse(s: &'a str) -> Result<SipUri<'a>, UriError> {
        let s = s.trim();
        let (sips, rest) = if let Some(r) = strip_prefix_ci(s, "sips:") {
            (true, r)
        } else if let Some(r) = strip_prefix_ci(s, "sip:") {
            (false, r)
        } else {
            return Err(UriError::NotSip(s.to_string()));
        };
        // The first '@' ends the userinfo: it may hold '?' (RFC 3261 user-unreserved), while
        // '@' cannot appear unescaped in the host, parameters or headers.
        let (user, rest) = match find_byte(rest, b'@') {
            Some(i) => {
                let userinfo = &rest[..i];
                let user = userinfo.split(':').next().unwrap_or("");
                (Some(user), &rest[i + 1..])
            }
            None => (None, rest),
        };
        let (hostport_params, headers) = match find_byte(rest, b'?') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, after_host) = if hostport_params.starts_with('[') {
            let end = hostport_params
                .find(']')
                .ok_or_else(|| UriError::BadHost(hostport_params.to_string()))?;
            (&hostport_params[..=end], &hostport_params[end + 1..])
        } else {
            let end = hostport_params
                .bytes()
                .position(|b| b == b':' || b == b';')
                .unwrap_or(hostport_params.len());
            (&hostport_params[..end], &hostport_params[end..])
        };
        if host.is_empty() {
            return Err(UriError::NoHost);
        }
        if !valid_host(host) {
            return Err(UriError::BadHost(host.to_string()));
        }
        let (port, params) = if let Some(p) = after_host.strip_prefix(':') {
            let end = find_byte(p, b';').unwrap_or(p.len());
            let port = p[..end]
                .parse::<u16>()
                .map_err(|_| UriError::BadPort(p[..end].to_string()))?;
            (Some(port), &p[end..])
        } else {
            (None, after_host)
        };
        if !params.is_empty() && !params.starts_with(';') {
            return Err(UriError::BadHost(host.to_string()));
        }
        Ok(SipUri {
            sips,
            user,
            host,
            port,
            params,
            headers,
        })
    }

    /// `Some(None)` for a flag parameter (`;lr`), `Some(Some(v))` for `;name=v`.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        find_param(self.params, name)
    }

    /// The transport named by `;transport=`, or the scheme's default (UDP, or TLS for sips).
    pub fn transport(&self) -> Option<Transport> {
        match self.param("transport") {
            Some(Some(v)) => Transport::from_uri_param(v, self.sips),
            Some(None) => None,
            None if self.sips => Some(Transport::Tls),
            None => None,
        }
    }

    /// The host as an IP address, without IPv6 brackets, when it is one.
    pub fn host_ip(&self) -> Option<IpAddr> {
        host_ip(self.host)
    }
}

/// Parses a host that may be an IPv4 address, a bracketed IPv6 address, or a name.
pub fn host_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    }
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// Looks up `name` in a `;a=b;c` parameter list (case-insensitive name).
pub fn find_param<'a>(params: &'a str, name: &str) -> Option<Option<&'a str>> {
    // The same as `split(';').map(str::trim).filter(non-empty).find_map(..)`, with byte
    // searches: `str::split` and `find` on a char set up a memchr search per piece, which
    // costs more than these short parameters take to scan.
    let mut rest = Some(params);
    while let Some(r) = rest {
        let (p, next) = match find_byte(r, b';') {
            Some(i) => (&r[..i], Some(&r[i + 1..])),
            None => (r, None),
        };
        rest = next;
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (n, v) = match find_byte(p, b'=') {
            Some(i) => (p[..i].trim(), Some(p[i + 1..].trim())),
            None => (p, None),
        };
        if n.eq_ignore_ascii_case(name) {
            return Some(v);
        }
    }
    None
}

/// The first position of an ASCII byte in `s`. A plain loop: URIs and parameters are tens of
/// bytes, where `str::find(char)` spends more on setting up its memchr search than on the
/// scan (it showed as the top function under callgrind).
pub(crate) fn find_byte(s: &str, b: u8) -> Option<usize> {
    s.bytes().position(|c| c == b)
}

/// A name-addr or addr-spec header value (From, To, Contact, Route, Record-Route, Path).
///
/// In the bare addr-spec form (`sip:a@b;tag=x`) everything after the first `;` belongs to the
/// header, not the URI (RFC 3261 section 20), which is why the two forms are told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    pub value: &'a str,
    /// Where the URI sits inside `value`.
    pub uri_range: Range<usize>,
    /// Header parameters after the URI, with their leading `;`.
    pub params: &'a str,
    pub bracketed: bool,
}

impl<'a> NameAddr<'a> {
    pub fn parse(value: &'a str) -> Result<NameAddr<'a>, UriError> {
        let bytes = value.as_bytes();
        let mut in_quote = false;
        let mut lt = None;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_quote => i += 1,
                b'"' => in_quote = !in_quote,
                b'<' if !in_quote => {
                    lt = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        if let Some(lt) = lt {
            let gt = find_byte(&value[lt..], b'>').ok_or(UriError::Unterminated)? + lt;
            Ok(NameAddr {
                value,
                uri_range: lt + 1..gt,
                params: &value[gt + 1..],
                bracketed: true,
            })
        } else {
            let start = value.len() - value.trim_start().len();
            let end = find_byte(value, b';').unwrap_or(value.len());
            let end = start.max(end - (value[..end].len() - value[..end].trim_end().len()));
            Ok(NameAddr {
                value,
                uri_range: start..end,
                params: value.get(end..).map(|p| p.trim_start()).unwrap_or(""),
                bracketed: false,
            })
        }
    }

    pub fn uri_str(&self) -> &'a str {
        &self.value[self.uri_range.clone()]
    }

    pub fn uri(&self) -> Result<SipUri<'a>, UriError> {
        SipUri::parse(self.uri_str())
    }

    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        find_param(self.params, name)
    }

    pub fn tag(&self) -> Option<&'a str> {
        self.param("tag").flatten()
    }

    /// The same value with a new URI, always in the bracketed form so that URI parameters
    /// can never be mistaken for header parameters.
    pub fn with_uri(&self, uri: &str) -> String {
        self.with_uri_written(uri.len(), |out| out.push_str(uri))
    }

    /// [`NameAddr::with_uri`] with the URI written by `write_uri` into the value's own
    /// buffer (`uri_len` bytes reserved for it): no separate String for the URI.
    pub fn with_uri_written(&self, uri_len: usize, write_uri: impl FnOnce(&mut String)) -> String {
        let mut out = String::with_capacity(self.value.len() + uri_len + 2);
        if self.bracketed {
            out.push_str(&self.value[..self.uri_range.start]);
            write_uri(&mut out);
            out.push_str(&self.value[self.uri_range.end..]);
        } else {
            out.push('<');
            write_uri(&mut out);
            out.push('>');
            out.push_str(self.params);
        }
        out
    }
}

/// Percent-encodes everything outside RFC 3261's `paramchar` set so any string can ride
/// inside a URI parameter value.
pub fn escape_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    escape_param_into(&mut out, s);
    out
}

/// [`escape_param`] appended to `out` (no String of its own on the per-message path).
pub fn escape_param_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        let keep = PARAM_CHARS[usize::from(b)];
        if keep {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// The bytes [`escape_param`] keeps as they are, as a table (it runs per byte of every URI
/// put into a contact token).
const PARAM_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'!'
                    | b'~'
                    | b'*'
                    | b'\''
                    | b'('
                    | b')'
                    | b'['
                    | b']'
                    | b'/'
                    | b':'
                    | b'&'
                    | b'+'
                    | b'$'
            );
        i += 1;
    }
    t
};

/// Appends `n` in decimal, as `{n}` formats it. The per-message writers (contact tokens,
/// Via and Contact ports) use these instead of `write!`, whose formatting machinery cost
/// about 2,000 instructions per contact token.
pub fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// Appends `n` in lowercase hexadecimal without leading zeros, as `{n:x}` formats it.
pub fn push_hex(out: &mut String, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let nibbles = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for k in (0..nibbles).rev() {
        out.push(char::from(HEX[((n >> (4 * k)) & 15) as usize]));
    }
}

/// Appends an IP address as `{ip}` formats it (IPv4 written directly; IPv6, with its `::`
/// compression rules, through `Display`).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (k, octet) in v4.octets().into_iter().enumerate() {
                if k > 0 {
                    out.push('.');
                }
                push_decimal(out, u64::from(octet));
            }
        }
        IpAddr::V6(_) => {
            use std::fmt::Write;
            // Writing to a String cannot fail.
            let _ = write!(out, "{ip}");
        }
    }
}

/// Reverses [`escape_param`]; `None` for a broken escape or invalid UTF-8.
pub fn unescape_param(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_uris() {
        let u = SipUri::parse("sip:alice@127.0.0.1:5060;transport=tcp;lr").unwrap();
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.transport(), Some(Transport::Tcp));
        assert_eq!(u.param("lr"), Some(None));
        let u = SipUri::parse("sips:[2001:db8::1]:5061").unwrap();
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some(Transport::Tls));
        assert_eq!(u.host_ip(), Some("2001:db8::1".parse().unwrap()));
        let u = SipUri::parse("sip:+1-212-555-1212:1234@gateway.com;user=phone?Subject=x").unwrap();
        assert_eq!(u.user, Some("+1-212-555-1212"));
        assert_eq!(u.host, "gateway.com");
        assert_eq!(u.headers, "?Subject=x");
        let u = SipUri::parse("SIP:bob@df7jal23ls0d.invalid;transport=ws").unwrap();
        assert_eq!(u.transport(), Some(Transport::Ws));
    }

    #[test]
    fn number_and_ip_writers_match_format() {
        for n in [0u64, 1, 9, 10, 15, 16, 255, 5060, 65535, 1 << 32, u64::MAX] {
            let (mut d, mut h) = (String::new(), String::new());
            push_decimal(&mut d, n);
            push_hex(&mut h, n);
            assert_eq!(d, format!("{n}"));
            assert_eq!(h, format!("{n:x}"));
        }
        for ip in [
            "0.0.0.0",
            "127.0.2.1",
            "255.255.255.255",
            "::1",
            "2001:db8::5:0:1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }

    #[test]
    fn rejects_bad_uris() {
        assert!(matches!(
            SipUri::parse("tel:+123"),
            Err(UriError::NotSip(_))
        ));
        assert!(matches!(
            SipUri::parse("sip:a@:5060"),
            Err(UriError::NoHost)
        ));
        assert!(matches!(
            SipUri::parse("sip:a@h:99999"),
            Err(UriError::BadPort(_))
        ));
        assert!(matches!(
            SipUri::parse("sip:a@h o"),
            Err(UriError::BadHost(_))
        ));
        assert!(matches!(
            SipUri::parse("sip:[::zz]"),
            Err(UriError::BadHost(_))
        ));
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(r#""A <b>" <sip:a@x;lr>;tag=12"#).unwrap();
        assert_eq!(n.uri_str(), "sip:a@x;lr");
        assert_eq!(n.tag(), Some("12"));
        let n = NameAddr::parse(" sip:a@x;tag=9 ").unwrap();
        assert_eq!(n.uri_str(), "sip:a@x");
        assert_eq!(n.tag(), Some("9"));
        assert_eq!(
            n.with_uri("sip:b@y;transport=tcp"),
            "<sip:b@y;transport=tcp>;tag=9 "
        );
        let n = NameAddr::parse("<sip:c@z>;expires=60").unwrap();
        assert_eq!(n.with_uri("sip:q@r"), "<sip:q@r>;expires=60");
        assert!(NameAddr::parse("<sip:c@z").is_err());
    }

    #[test]
    fn param_escaping_round_trips() {
        let s = "sip:a@192.0.2.1:5060;transport=tcp;ob?x=y%";
        let e = escape_param(s);
        assert!(!e.contains(';') && !e.contains('=') && !e.contains('@') && !e.contains('?'));
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-_.!~*'()[]/:&+$".contains(&b);
            assert_eq!(PARAM_CHARS[usize::from(b)], expected, "{b}");
        }
        assert_eq!(unescape_param(&e).as_deref(), Some(s));
        assert_eq!(unescape_param("%4"), None);
    }
}
