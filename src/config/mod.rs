//! Configuration: the command line turned into checked, typed settings.
//!
//! `flags` reads the Go-style command line; this module validates it into a [`Command`].
//! Anything that would make the proxy misbehave is a [`ConfigError`] (exit code 2);
//! a malformed trusted-server dataset is only a warning, as in the original program.

pub mod client_networks;
pub mod flags;
pub mod trusted_server;

use crate::sip::Transport;
use cidr::IpCidr;
pub use flags::Flags;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
pub use trusted_server::TrustedServer;

/// Listening ports; 0 disables a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub udp: u16,
    pub tcp: u16,
    pub tls: u16,
    pub ws: u16,
    pub wss: u16,
}

impl Ports {
    pub fn get(&self, t: Transport) -> u16 {
        match t {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
            Transport::Tls => self.tls,
            Transport::Ws => self.ws,
            Transport::Wss => self.wss,
        }
    }

    /// Whether some listener is on.
    pub fn any_on(&self) -> bool {
        Transport::ALL.iter().any(|t| self.get(*t) != 0)
    }

    /// The transport and port Roundabout names for itself (Record-Route, Contact, the port
    /// of its Via) towards a peer it reaches over `t`: `t` with its listener's port, or,
    /// when that listener is off, the first listener that is on in [`Ports::closest`].
    /// `None` only when every listener is off (then nothing comes in, nothing is written).
    ///
    /// The listener for `t` can be off while Roundabout still speaks `t`: it opens TLS, WS
    /// and WSS connections to trusted servers itself. Writing `t`'s default port then
    /// (5061 for TLS) would name a port nothing listens on — or another server on the same
    /// host, whose requests Roundabout would then take for its own.
    pub fn advertised(&self, t: Transport) -> Option<(Transport, u16)> {
        Self::closest(t)
            .into_iter()
            .find_map(|c| match self.get(c) {
                0 => None,
                port => Some((c, port)),
            })
    }

    /// `t` and then the transports that stand in for it when its listener is off, closest
    /// first. A peer that sends an in-dialog request on a new connection uses the transport
    /// written in Record-Route/Contact, so the stand-in must be one that peer can speak:
    ///
    /// - UDP and TCP stand in for each other (every SIP element speaks both, RFC 3261
    ///   section 18), then TLS.
    /// - TLS: TCP, then UDP. A TLS trunk cannot use a WebSocket entry, so there is no secure
    ///   stand-in it can reach: this is a downgrade for new connections, which the start-up
    ///   warning names (see `trusted_listener_warnings`).
    /// - WSS: WS, then TLS. A WS or WSS peer reaches Roundabout over the connection that
    ///   Roundabout opened (RFC 7118 section 5), so its entry only has to keep
    ///   `;transport=ws` (the same for WS and WSS) and name a port Roundabout recognises;
    ///   nothing is sent in clear because of it. TLS is next: it keeps the request secure.
    /// - WS: WSS, then TCP.
    pub fn closest(t: Transport) -> [Transport; 5] {
        use Transport::*;
        match t {
            Udp => [Udp, Tcp, Tls, Ws, Wss],
            Tcp => [Tcp, Udp, Tls, Ws, Wss],
            Tls => [Tls, Tcp, Udp, Wss, Ws],
            Ws => [Ws, Wss, Tcp, Udp, Tls],
            Wss => [Wss, Ws, Tls, Tcp, Udp],
        }
    }
}

/// Everything the proxy needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub local_ip: IpAddr,
    pub local_fqdn: Option<String>,
    pub contact_header_fqdn: bool,
    pub bind_ip: IpAddr,
    pub ports: Ports,
    pub strict_host: bool,
    pub strict_client: bool,
    /// Requests outside a dialog only from clients registered through Roundabout.
    pub registered_only: bool,
    /// -token-key-file: the key of contact tokens and branches; `None`: random per start.
    pub token_key_file: Option<PathBuf>,
    pub ack_ruri: bool,
    pub trusted_servers: Vec<TrustedServer>,
    /// The addresses that count as trusted servers: the datasets' IPs at first; shared by
    /// every clone of this `Config` with the ServerTable, which adds what the servers'
    /// DNS names resolve to.
    pub trusted_addresses: crate::routing::TrustedAddresses,
    pub client_networks: Vec<IpCidr>,
    pub default_sip_server: Option<TrustedServer>,
    pub default_network: Transport,
    /// -dns-server: the DNS server names are resolved with; `None`: the system's.
    pub dns_server: Option<std::net::SocketAddr>,
    /// -avoid-time: how long a failed target is tried last among its name's targets.
    pub avoid_time: std::time::Duration,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Whether -tls-cert/-tls-key were given: then failing to load them is fatal.
    pub tls_files_explicit: bool,
    /// Extra CA certificates for outbound TLS/WSS (-tls-ca).
    pub tls_ca: Option<PathBuf>,
    /// Outbound TLS/WSS without certificate checks (-tls-insecure).
    pub tls_insecure: bool,
    /// The only HTTP path the WS/WSS listeners accept (-ws-path); `None`: any.
    pub ws_path: Option<String>,
    pub log_level: log::LevelFilter,
    /// Sizes, timeouts, connection caps and flood protection.
    pub limits: crate::limits::Limits,
    /// Said once at start-up (skipped datasets, open relay...).
    pub warnings: Vec<String>,
    /// -metrics-addr: where GET /metrics and /health are served; `None`: off.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// -config: the file the flags were read from (SIGHUP reads it again).
    pub config_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_flags(Flags::default_values()).expect("defaults are valid")
    }
}

/// What the command line asks for.
pub enum Command {
    Proxy(Box<Config>),
    Csr(Box<crate::csr::CsrRequest>, Option<PathBuf>),
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    BadValue {
        flag: &'static str,
        value: String,
        reason: String,
    },
    DefaultServerNotTrusted(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadValue {
                flag,
                value,
                reason,
            } => write!(f, "invalid value '{value}' for -{flag}: {reason}"),
            ConfigError::DefaultServerNotTrusted(v) => write!(
                f,
                "-default-sip-server '{v}' is not a trusted server: add it to -trusted-server \
                 (its IP or one of its FQDNs) so roundabout knows its port and protocol"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Flags {
    /// The values argh gives when no flag is passed.
    pub fn default_values() -> Flags {
        match flags::parse(&[]) {
            flags::Parsed::Flags(f) => *f,
            other => unreachable!("empty command line is valid: {other:?}"),
        }
    }
}

impl Command {
    pub fn from_flags(f: Flags) -> Result<Command, ConfigError> {
        if f.version {
            return Ok(Command::Version);
        }
        if f.csr {
            let sans = f
                .csr_san
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let req = crate::csr::CsrRequest {
                country: f.csr_c,
                common_name: f.csr_cn,
                locality: f.csr_l,
                organization: f.csr_o,
                organizational_unit: f.csr_ou,
                province: f.csr_p,
                sans,
                key_path: PathBuf::from(f.tls_key.unwrap_or_else(|| "key.pem".into())),
            };
            return Ok(Command::Csr(Box::new(req), f.csr_out.map(PathBuf::from)));
        }
        Config::from_flags(f).map(|c| Command::Proxy(Box::new(c)))
    }
}

impl Config {
    pub fn from_flags(f: Flags) -> Result<Config, ConfigError> {
        // An IPv4-mapped address (::ffff:192.0.2.5) is the IPv4 address: peers see and
        // write the dotted form, and that is what Roundabout must write and recognise.
        let ip = |flag: &'static str, v: &str| -> Result<IpAddr, ConfigError> {
            v.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map(|ip: IpAddr| ip.to_canonical())
                .map_err(|_| ConfigError::BadValue {
                    flag,
                    value: v.into(),
                    reason: "not an IP address".into(),
                })
        };
        let local_ip = ip("local-ip", f.local_ip.as_deref().unwrap_or("127.0.0.1"))?;
        let bind_ip = match &f.bind_ip {
            Some(b) => ip("bind-ip", b)?,
            None => local_ip,
        };
        let default_network: Transport =
            f.default_network
                .parse()
                .map_err(
                    |e: crate::sip::transport::UnknownTransport| ConfigError::BadValue {
                        flag: "default-network",
                        value: f.default_network.clone(),
                        reason: e.to_string(),
                    },
                )?;
        let log_level = f.log_level.parse().map_err(|_| ConfigError::BadValue {
            flag: "log-level",
            value: f.log_level.clone(),
            reason: "use error, warn, info, debug or trace".into(),
        })?;
        if f.trusted_client_mask > 128 {
            return Err(ConfigError::BadValue {
                flag: "trusted-client-mask",
                value: f.trusted_client_mask.to_string(),
                reason: "a prefix length is at most 32 (IPv4) or 128 (IPv6)".into(),
            });
        }
        let mut warnings = Vec::new();
        let (trusted_servers, w) =
            trusted_server::parse_trusted_servers(f.trusted_server.as_deref().unwrap_or(""));
        warnings.extend(w);
        let client_networks = client_networks::parse_client_networks(
            f.trusted_client_ip.as_deref().unwrap_or(""),
            f.trusted_client_mask,
        )
        .map_err(|reason| ConfigError::BadValue {
            flag: "trusted-client-ip",
            value: f.trusted_client_ip.clone().unwrap_or_default(),
            reason,
        })?;
        let default_sip_server = match &f.default_sip_server {
            None => None,
            Some(name) => Some(
                trusted_servers
                    .iter()
                    .find(|s| s.matches_host(name))
                    .cloned()
                    .ok_or_else(|| ConfigError::DefaultServerNotTrusted(name.clone()))?,
            ),
        };
        if f.contact_header_fqdn && f.local_fqdn.is_none() {
            return Err(ConfigError::BadValue {
                flag: "contact-header-fqdn",
                value: "true".into(),
                reason: "needs -local-fqdn".into(),
            });
        }
        if !f.strict_host {
            warnings.push(format!(
                "open relay: without -strict-host, requests for any host are relayed (over {} to unknown hosts)",
                default_network
            ));
        }
        if !f.strict_client && !f.registered_only {
            warnings.push(
                "toll fraud: without -strict-client or -registered-only anyone on the network may \
                 send INVITEs (and REGISTERs) through roundabout to the servers that trust its \
                 address"
                    .into(),
            );
        } else if f.strict_client && client_networks.is_empty() {
            warnings.push(
                "-strict-client without -trusted-client-ip: every REGISTER will be refused".into(),
            );
        }
        if f.tls_insecure {
            warnings.push(
                "-tls-insecure: the certificates of tls and wss servers are not checked, so anyone \
                 on the path can pose as them (use -tls-ca for a private CA instead)"
                    .into(),
            );
        }
        if let Some(path) = &f.ws_path {
            if !path.starts_with('/') || path.contains(char::is_whitespace) {
                return Err(ConfigError::BadValue {
                    flag: "ws-path",
                    value: path.clone(),
                    reason: "an HTTP path starts with '/' and has no spaces, e.g. /ws".into(),
                });
            }
        }
        let dns_server = match &f.dns_server {
            None => None,
            Some(v) => Some(parse_dns_server(v).ok_or_else(|| ConfigError::BadValue {
                flag: "dns-server",
                value: v.clone(),
                reason: "use IP:PORT, e.g. 127.0.0.53:53 or [2001:db8::53]:53".into(),
            })?),
        };
        if !(1..=86400).contains(&f.avoid_time) {
            return Err(ConfigError::BadValue {
                flag: "avoid-time",
                value: f.avoid_time.to_string(),
                reason: "use 1 to 86400 seconds (default 30)".into(),
            });
        }
        let limits = limits_from_flags(&f)?;
        let metrics_addr = match &f.metrics_addr {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| ConfigError::BadValue {
                flag: "metrics-addr",
                value: v.clone(),
                reason: "use IP:PORT, e.g. 127.0.0.1:9090 ([::1]:9090 for IPv6)".into(),
            })?),
        };
        let ports = Ports {
            udp: f.udp_port,
            tcp: f.tcp_port,
            tls: f.tls_port,
            ws: f.ws_port,
            wss: f.wss_port,
        };
        if !ports.any_on() {
            // Allowed (it prints its banner and does nothing): some use it to check flags.
            warnings.push(
                "every listener is off (-udp-port, -tcp-port, -tls-port, -ws-port and -wss-port \
                 are all 0): roundabout can receive nothing"
                    .into(),
            );
        }
        warnings.extend(trusted_listener_warnings(&trusted_servers, &ports));
        Ok(Config {
            local_ip,
            local_fqdn: f.local_fqdn,
            contact_header_fqdn: f.contact_header_fqdn,
            bind_ip,
            ports,
            strict_host: f.strict_host,
            strict_client: f.strict_client,
            registered_only: f.registered_only,
            token_key_file: f.token_key_file.as_ref().map(PathBuf::from),
            ack_ruri: f.ack_ruri,
            trusted_addresses: crate::routing::TrustedAddresses::from_ips(
                trusted_servers.iter().filter_map(|s| s.ip()),
            ),
            trusted_servers,
            client_networks,
            default_sip_server,
            default_network,
            dns_server,
            avoid_time: std::time::Duration::from_secs(f.avoid_time),
            tls_files_explicit: f.tls_cert.is_some() || f.tls_key.is_some(),
            tls_cert: PathBuf::from(f.tls_cert.unwrap_or_else(|| "cert.pem".into())),
            tls_key: PathBuf::from(f.tls_key.unwrap_or_else(|| "key.pem".into())),
            tls_ca: f.tls_ca.map(PathBuf::from),
            tls_insecure: f.tls_insecure,
            ws_path: f.ws_path,
            log_level,
            limits,
            warnings,
            metrics_addr,
            config_file: f.config.map(PathBuf::from),
        })
    }
}

/// `IP:PORT` (IPv6 in brackets), or a bare IP for port 53.
fn parse_dns_server(v: &str) -> Option<std::net::SocketAddr> {
    v.parse()
        .ok()
        .or_else(|| {
            v.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
        .filter(|a| a.port() != 0)
}

/// What a trusted server's protocol costs when Roundabout's listener for it is off: over UDP
/// it cannot be reached at all (the UDP socket is the listener); over TLS, WS or WSS
/// Roundabout opens the connection itself, and Record-Route and Contact towards the server
/// name the closest listener that is on ([`Ports::advertised`]).
fn trusted_listener_warnings(servers: &[TrustedServer], ports: &Ports) -> Vec<String> {
    let mut warnings = Vec::new();
    for s in servers {
        // A name whose protocol NAPTR chooses: not known before it is resolved.
        if s.dns_name().is_some() && s.given_transport.is_none() {
            continue;
        }
        let t = s.transport;
        if ports.get(t) != 0 {
            continue;
        }
        if t == Transport::Udp {
            warnings.push(format!(
                "trusted server {s}: the udp listener is off (-udp-port 0), so roundabout cannot \
                 send to it"
            ));
            continue;
        }
        let Some((stand_in, port)) = ports.advertised(t) else {
            continue;
        };
        let mut w = format!(
            "trusted server {s}: the {t} listener is off (-{t}-port 0); roundabout connects to \
             it over {t} itself, and its Record-Route and Contact towards it name {stand_in} \
             port {port}"
        );
        // WSS -> WS keeps `;transport=ws`: the server's requests still come over the
        // WebSocket connection Roundabout opened. TLS -> TCP invites a new, plain one.
        if t.is_secure() && !stand_in.is_secure() && stand_in.uri_param() != t.uri_param() {
            w.push_str(&format!(
                ": in-dialog requests it sends on a new connection are not encrypted \
                 (give -{t}-port to keep them on {t})"
            ));
        }
        warnings.push(w);
    }
    warnings
}

/// The limit flags, checked: a value that would stop Roundabout from working is an error.
fn limits_from_flags(f: &Flags) -> Result<crate::limits::Limits, ConfigError> {
    use crate::limits::{Limits, MAX_UDP_PAYLOAD};
    use std::time::Duration;
    let bad = |flag: &'static str, value: String, reason: &str| ConfigError::BadValue {
        flag,
        value,
        reason: reason.into(),
    };
    if !(1024..=MAX_UDP_PAYLOAD).contains(&f.max_udp_message) {
        return Err(bad(
            "max-udp-message",
            f.max_udp_message.to_string(),
            "use 1024 to 65507 bytes",
        ));
    }
    if !(1024..=16 * 1024 * 1024).contains(&f.max_stream_message) {
        return Err(bad(
            "max-stream-message",
            f.max_stream_message.to_string(),
            "use 1024 bytes to 16 MiB",
        ));
    }
    if !(16..=65536).contains(&f.max_headers) {
        return Err(bad(
            "max-headers",
            f.max_headers.to_string(),
            "use 16 to 65536 (a request needs at least Via, From, To, Call-ID and CSeq)",
        ));
    }
    if f.partial_message_timeout == 0 {
        return Err(bad(
            "partial-message-timeout",
            "0".into(),
            "use at least 1 second",
        ));
    }
    if !crate::limits::SEND_QUEUE_RANGE.contains(&f.max_send_queue) {
        return Err(bad(
            "max-send-queue",
            f.max_send_queue.to_string(),
            "use 4096 bytes to 1 GiB (1073741824); default 1048576",
        ));
    }
    if f.max_transactions == 0 {
        return Err(bad(
            "max-transactions",
            "0".into(),
            "use at least 1 (default 100000)",
        ));
    }
    if !(1..=3600).contains(&f.transaction_timeout) {
        return Err(bad(
            "transaction-timeout",
            f.transaction_timeout.to_string(),
            "use 1 to 3600 seconds (RFC 3261: 32)",
        ));
    }
    if !(1..=86400).contains(&f.ringing_timeout) {
        return Err(bad(
            "ringing-timeout",
            f.ringing_timeout.to_string(),
            "use 1 to 86400 seconds (RFC 3261: more than 180)",
        ));
    }
    Ok(Limits {
        max_udp_message: f.max_udp_message,
        max_stream_message: f.max_stream_message,
        max_headers: f.max_headers,
        partial_message_timeout: Duration::from_secs(f.partial_message_timeout),
        idle_timeout: (f.idle_timeout > 0).then(|| Duration::from_secs(f.idle_timeout)),
        max_connections: f.max_connections,
        max_connections_per_ip: f.max_connections_per_ip,
        pike_limit: f.pike_limit,
        max_send_queue: f.max_send_queue,
        max_outbound_connections: f.max_outbound_connections,
        transaction_timeout: Duration::from_secs(f.transaction_timeout),
        ringing_timeout: Duration::from_secs(f.ringing_timeout),
        max_transactions: f.max_transactions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &str) -> Result<Config, ConfigError> {
        let argv: Vec<String> = args.split_whitespace().map(String::from).collect();
        match flags::parse(&argv) {
            flags::Parsed::Flags(f) => Config::from_flags(*f),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_flags_is_loopback_open_relay() {
        let c = config("").unwrap();
        assert_eq!(c.local_ip.to_string(), "127.0.0.1");
        assert_eq!(c.bind_ip, c.local_ip);
        assert_eq!(c.default_network, Transport::Tcp);
        assert!(c.warnings.iter().any(|w| w.contains("open relay")));
        assert!(!c.tls_files_explicit);
    }

    #[test]
    fn dns_server_and_avoid_time() {
        let c = config("-dns-server 127.0.0.53:5353 -avoid-time 5").unwrap();
        assert_eq!(c.dns_server, Some("127.0.0.53:5353".parse().unwrap()));
        assert_eq!(c.avoid_time, std::time::Duration::from_secs(5));
        let c = config("-dns-server [::1]").unwrap();
        assert_eq!(c.dns_server, Some("[::1]:53".parse().unwrap()));
        let c = config("").unwrap();
        assert_eq!((c.dns_server, c.avoid_time.as_secs()), (None, 30));
        for bad in [
            "-dns-server dns.example:53",
            "-dns-server 1.2.3.4:0",
            "-avoid-time 0",
        ] {
            assert!(config(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_server_must_be_trusted() {
        let c = config("-trusted-server 203.0.113.110:pbx.example.com:5060:wss: -default-sip-server pbx.example.com").unwrap();
        assert_eq!(c.default_sip_server.unwrap().port, 5060);
        let e =
            config("-trusted-server 203.0.113.110::5060:wss: -default-sip-server 203.0.113.111")
                .unwrap_err();
        assert!(e.to_string().contains("203.0.113.111"), "{e}");
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            ("-local-ip nope", "-local-ip"),
            ("-bind-ip 1.2.3", "-bind-ip"),
            ("-default-network sctp", "-default-network"),
            ("-log-level loud", "-log-level"),
            ("-trusted-client-ip 1.2.3.4/99", "-trusted-client-ip"),
            ("-contact-header-fqdn", "-contact-header-fqdn"),
            ("-ws-path ws", "-ws-path"),
            ("-metrics-addr 9090", "-metrics-addr"),
            ("-max-udp-message 70000", "-max-udp-message"),
            ("-max-stream-message 10", "-max-stream-message"),
            ("-max-headers 3", "-max-headers"),
            ("-partial-message-timeout 0", "-partial-message-timeout"),
            ("-max-send-queue 100", "-max-send-queue"),
            ("-max-send-queue 2000000000", "-max-send-queue"),
        ] {
            let e = config(args).unwrap_err().to_string();
            assert!(e.contains(flag), "{args}: {e}");
        }
    }

    #[test]
    fn limits_have_documented_defaults_and_zero_means_off() {
        let c = config("").unwrap();
        assert_eq!(c.limits, crate::limits::Limits::default());
        assert_eq!(c.limits.max_udp_message, 65507);
        assert_eq!(c.limits.max_stream_message, 65536);
        assert_eq!(c.limits.max_connections_per_ip, 100);
        assert_eq!(c.limits.max_send_queue, 1 << 20);
        assert_eq!(c.limits.max_outbound_connections, 1000);
        let c = config("-max-send-queue 4096 -max-outbound-connections 0").unwrap();
        assert_eq!(c.limits.max_send_queue, 4096);
        assert_eq!(c.limits.max_outbound_connections, 0);
        let c = config("-idle-timeout 0 -pike-limit 0 -max-connections-per-ip 0").unwrap();
        assert_eq!(c.limits.idle_timeout, None);
        assert_eq!(c.limits.pike_limit, 0);
        assert_eq!(c.limits.max_connections_per_ip, 0);
    }

    #[test]
    fn every_listener_off_is_warned() {
        let c = config("-udp-port 0 -tcp-port 0 -tls-port 0 -ws-port 0 -wss-port 0").unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("every listener is off")),
            "{:?}",
            c.warnings
        );
        let c = config("-udp-port 0 -tcp-port 0 -tls-port 0 -ws-port 0").unwrap();
        assert!(!c.warnings.iter().any(|w| w.contains("every listener")));
    }

    #[test]
    fn listener_off_for_a_trusted_server_is_warned() {
        let servers =
            "-trusted-server 192.0.2.1::5061:tls:,192.0.2.2::443:wss:,192.0.2.3::5060:udp:";
        let c = config(&format!(
            "-tls-port 0 -wss-port 0 -udp-port 0 -tcp-port 5070 {servers}"
        ))
        .unwrap();
        let about = |ip: &str| {
            c.warnings
                .iter()
                .find(|w| w.contains(ip))
                .unwrap_or_else(|| panic!("no warning for {ip}: {:?}", c.warnings))
        };
        let tls = about("192.0.2.1");
        assert!(
            tls.contains("-tls-port 0") && tls.contains("tcp port 5070"),
            "{tls}"
        );
        assert!(tls.contains("not encrypted"), "{tls}");
        // WSS -> WS keeps the server's requests on the WebSocket connection: no downgrade.
        let wss = about("192.0.2.2");
        assert!(
            wss.contains("ws port 8080") && !wss.contains("encrypted"),
            "{wss}"
        );
        assert!(about("192.0.2.3").contains("cannot send to it"));
        // All listeners on: nothing to say about the servers.
        let c = config(&format!(
            "-strict-host -strict-client -trusted-client-ip 192.0.2.0 {servers}"
        ))
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn ipv4_mapped_local_and_bind_ip_are_ipv4() {
        let c = config("-local-ip ::ffff:192.0.2.5 -bind-ip [::ffff:0.0.0.0]").unwrap();
        assert_eq!(c.local_ip.to_string(), "192.0.2.5");
        assert_eq!(c.bind_ip.to_string(), "0.0.0.0");
        let c = config("-local-ip 192.0.2.5 -bind-ip ::").unwrap();
        assert_eq!(c.bind_ip.to_string(), "::");
    }

    #[test]
    fn strict_flags_quiet_the_warnings() {
        let c = config("-strict-host -strict-client -trusted-client-ip 192.0.2.0").unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.client_networks.len(), 1);
    }
}
