//! The command line, spelled as the original Go program spelled it.
//!
//! Go's `flag` package accepts `-name value`, `-name=value`, `--name value`, `--name=value`,
//! and `-bool`/`-bool=false` for switches. argh accepts only `--name value` and bare
//! `--switch`, so [`go_style_to_argh`] rewrites the first set into the second before argh
//! sees it. Every flag is documented here once; `-h` prints these texts.

use argh::FromArgs;

/// roundabout: a SIP proxy that bridges UDP, TCP, TLS, WS and WSS between clients and servers.
/// With no flags it listens on 127.0.0.1 and relays to any host (an open relay, for a first try).
#[derive(FromArgs, Debug, Default, PartialEq)]
pub struct Flags {
    /// roundabout's own IP address: written into Via, Record-Route and Contact, and used to
    /// recognise requests addressed to roundabout itself (default: 127.0.0.1)
    #[argh(option)]
    pub local_ip: Option<String>,

    /// roundabout's FQDN / SIP domain, also recognised as "roundabout itself" in a
    /// Request-URI; written into Contact with -contact-header-fqdn (default: none)
    #[argh(option)]
    pub local_fqdn: Option<String>,

    /// write -local-fqdn instead of -local-ip into rewritten Contact headers (default: false)
    #[argh(switch)]
    pub contact_header_fqdn: bool,

    /// address to bind the listeners to, e.g. 0.0.0.0 behind NAT or in a container
    /// (default: the -local-ip)
    #[argh(option)]
    pub bind_ip: Option<String>,

    /// refuse (403) requests whose Request-URI host is not a trusted server or roundabout
    /// itself; without it roundabout is an open relay (default: false)
    #[argh(switch)]
    pub strict_host: bool,

    /// accept REGISTER and every request outside a dialog only from -trusted-client-ip
    /// networks (or trusted servers); others get 403 (default: false)
    #[argh(switch)]
    pub strict_client: bool,

    /// accept requests outside a dialog (INVITE, MESSAGE...) only from clients with a live
    /// registration made through roundabout (over their own connection, or for UDP from the
    /// address and port they registered from); others get 403. REGISTER stays subject to
    /// -strict-client only (default: false)
    #[argh(switch)]
    pub registered_only: bool,

    /// file with the secret key of contact tokens and branches (64 hex digits); created with
    /// mode 0600 when missing. Share it between restarts and between instances behind one name
    /// so in-dialog requests keep working (default: a new random key per start)
    #[argh(option)]
    pub token_key_file: Option<String>,

    /// route an ACK without Route headers by its Request-URI host instead of its To host
    /// (default: false, recommended: on)
    #[argh(switch)]
    pub ack_ruri: bool,

    /// comma-separated datasets ip:fqdn-list:port:protocol:route-list, e.g.
    /// 203.0.113.20:server.example.com:5060:tcp:  ('/' separates several fqdns or routes;
    /// protocol is udp, tcp, tls, ws or wss) (default: none)
    #[argh(option)]
    pub trusted_server: Option<String>,

    /// comma-separated client addresses or networks allowed to REGISTER with -strict-client,
    /// e.g. 192.0.2.0,198.51.100.7/32 (default: none)
    #[argh(option)]
    pub trusted_client_ip: Option<String>,

    /// prefix length for -trusted-client-ip entries written without one (default: 24)
    #[argh(option, default = "24")]
    pub trusted_client_mask: u8,

    /// trusted server (its IP or one of its FQDNs) that gets requests addressed to roundabout
    /// itself that are not for a registered client (default: none)
    #[argh(option)]
    pub default_sip_server: Option<String>,

    /// protocol towards hosts that are not trusted servers, without -strict-host: udp, tcp,
    /// tls, ws or wss (default: tcp)
    #[argh(option, default = "String::from(\"tcp\")")]
    pub default_network: String,

    /// port for UDP, 0 disables (default: 5060)
    #[argh(option, default = "5060")]
    pub udp_port: u16,

    /// port for TCP, 0 disables (default: 5060)
    #[argh(option, default = "5060")]
    pub tcp_port: u16,

    /// port for TLS, 0 disables (default: 5061)
    #[argh(option, default = "5061")]
    pub tls_port: u16,

    /// port for WebSocket (ws), 0 disables (default: 8080)
    #[argh(option, default = "8080")]
    pub ws_port: u16,

    /// secure WebSocket (wss) port, 0 disables (default: 8443)
    #[argh(option, default = "8443")]
    pub wss_port: u16,

    /// certificate (PEM, chain allowed) for TLS and WSS; when the default is missing a throw-away
    /// self-signed one is made (default: cert.pem)
    #[argh(option)]
    pub tls_cert: Option<String>,

    /// private key (PEM, RSA or ECDSA) for TLS, WSS and -csr (default: key.pem)
    #[argh(option)]
    pub tls_key: Option<String>,

    /// extra CA certificate(s) (PEM) trusted when checking the certificates of tls and wss
    /// trusted servers, besides the system's roots, e.g. a private PBX CA (default: none)
    #[argh(option)]
    pub tls_ca: Option<String>,

    /// do not verify the certificates of tls and wss servers roundabout connects to; for labs
    /// only, said in a warning at start (default: false)
    #[argh(switch)]
    pub tls_insecure: bool,

    /// HTTP path the ws and wss listeners accept, e.g. /ws; other paths get 404
    /// (default: any path)
    #[argh(option)]
    pub ws_path: Option<String>,

    /// largest UDP datagram taken as a SIP message, in bytes; larger ones are dropped with a
    /// log line (default: 65507, the most UDP over IPv4 carries)
    #[argh(option, default = "65507")]
    pub max_udp_message: usize,

    /// largest SIP message on a TCP, TLS, WS or WSS connection, in bytes; a larger one closes
    /// the connection (default: 65536)
    #[argh(option, default = "65536")]
    pub max_stream_message: usize,

    /// most header lines in one message; a request with more is answered 400 (default: 256)
    #[argh(option, default = "256")]
    pub max_headers: usize,

    /// seconds a TCP or TLS connection may take to finish a message it has begun; then it is
    /// closed (slow-loris protection) (default: 10)
    #[argh(option, default = "10")]
    pub partial_message_timeout: u64,

    /// most transactions held at once; above it new requests get 503 with Retry-After
    /// (default: 100000)
    #[argh(option, default = "100000")]
    pub max_transactions: usize,

    /// seconds the next hop has to answer a request at all (Timers B and F, 64*T1); also how
    /// long a finished transaction is kept to absorb retransmissions (default: 32)
    #[argh(option, default = "32")]
    pub transaction_timeout: u64,

    /// seconds a ringing INVITE may go without a final answer before roundabout CANCELs it
    /// (Timer C; RFC 3261 asks for more than 180) (default: 181)
    #[argh(option, default = "181")]
    pub ringing_timeout: u64,

    /// seconds a connection may receive nothing at all (no SIP, no CRLF keep-alive, no
    /// WebSocket pong) before it is closed; 0 never (default: 3600)
    #[argh(option, default = "3600")]
    pub idle_timeout: u64,

    /// connections accepted and open at once, from all addresses; 0 no limit (default: 50000)
    #[argh(option, default = "50000")]
    pub max_connections: usize,

    /// connections accepted and open at once from one IP address (trusted servers exempt);
    /// 0 no limit (default: 100)
    #[argh(option, default = "100")]
    pub max_connections_per_ip: usize,

    /// requests one IP address may send per 2 seconds; over it, its requests are dropped for
    /// 10 seconds (flood protection like Kamailio's pike; trusted servers exempt); 0 no limit
    /// (default: 300)
    #[argh(option, default = "300")]
    pub pike_limit: u32,

    /// log level: error, warn, info, debug or trace; RUST_LOG overrides it (default: info)
    #[argh(option, default = "String::from(\"info\")")]
    pub log_level: String,

    /// write a Certificate Signing Request for -tls-key and exit
    #[argh(switch)]
    pub csr: bool,

    /// subject for -csr: country (C), e.g. US (default: none)
    #[argh(option)]
    pub csr_c: Option<String>,

    /// subject for -csr: common name (CN), e.g. proxya.example.com (default: none)
    #[argh(option)]
    pub csr_cn: Option<String>,

    /// subject for -csr: locality (L) (default: none)
    #[argh(option)]
    pub csr_l: Option<String>,

    /// subject for -csr: organisation (O) (default: none)
    #[argh(option)]
    pub csr_o: Option<String>,

    /// subject for -csr: organisational unit (OU) (default: none)
    #[argh(option)]
    pub csr_ou: Option<String>,

    /// subject for -csr: state or province (ST) (default: none)
    #[argh(option)]
    pub csr_p: Option<String>,

    /// subject for -csr: alternative names, comma-separated; IP addresses become IP SANs, the rest
    /// DNS SANs (default: none)
    #[argh(option)]
    pub csr_san: Option<String>,

    /// write the CSR to this file (default: standard output)
    #[argh(option)]
    pub csr_out: Option<String>,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

/// Names of the switches (flags without a value). Everything else takes a value.
const SWITCHES: &[&str] = &[
    "contact-header-fqdn",
    "strict-host",
    "strict-client",
    "registered-only",
    "ack-ruri",
    "tls-insecure",
    "csr",
    "version",
];

/// Why the command line could not be read; the process exits 2 with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagError {
    BadBool { flag: String, value: String },
}

impl std::fmt::Display for FlagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlagError::BadBool { flag, value } => write!(
                f,
                "invalid boolean value '{value}' for -{flag}: use true or false"
            ),
        }
    }
}

/// Rewrites Go `flag`-style arguments into the form argh reads. Values are never touched:
/// the argument after a value flag passes through as it is, even if it starts with '-'.
pub fn go_style_to_argh(args: &[String]) -> Result<Vec<String>, FlagError> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            out.extend(iter.by_ref().cloned());
            break;
        }
        let Some(stripped) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            out.push(arg.clone());
            continue;
        };
        if stripped.is_empty() {
            out.push(arg.clone());
            continue;
        }
        let (name, inline_value) = match stripped.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (stripped, None),
        };
        if matches!(name, "h" | "help") {
            out.push("--help".into());
            continue;
        }
        if SWITCHES.contains(&name) {
            match inline_value {
                None => out.push(format!("--{name}")),
                Some(v) => {
                    if parse_go_bool(v).ok_or_else(|| FlagError::BadBool {
                        flag: name.into(),
                        value: v.into(),
                    })? {
                        out.push(format!("--{name}"));
                    }
                }
            }
            continue;
        }
        out.push(format!("--{name}"));
        match inline_value {
            Some(v) => out.push(v.to_string()),
            None => {
                if let Some(v) = iter.next() {
                    out.push(v.clone());
                }
            }
        }
    }
    Ok(out)
}

/// The spellings Go's strconv.ParseBool accepts.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Outcome of reading the command line.
#[derive(Debug)]
pub enum Parsed {
    Flags(Box<Flags>),
    /// `-h`: print to stdout, exit 0.
    Help(String),
    /// A bad flag or value: print to stderr, exit 2.
    Error(String),
}

/// Reads the command line (without the program name).
pub fn parse(args: &[String]) -> Parsed {
    let normalized = match go_style_to_argh(args) {
        Ok(n) => n,
        Err(e) => return Parsed::Error(e.to_string()),
    };
    let refs: Vec<&str> = normalized.iter().map(String::as_str).collect();
    match Flags::from_args(&["roundabout"], &refs) {
        Ok(flags) => Parsed::Flags(Box::new(flags)),
        Err(early) => match early.status {
            Ok(()) => Parsed::Help(go_style_help(&early.output)),
            Err(()) => Parsed::Error(go_style_help(early.output.trim_end())),
        },
    }
}

/// argh prints `--name`; the program's documented spelling is `-name`.
fn go_style_help(text: &str) -> String {
    text.replace("  --", "  -")
        .replace("Unrecognized argument: --", "Unrecognized argument: -")
        .replace("option '--", "option '-")
        .replace("Usage: roundabout [--", "Usage: roundabout [-")
        .replace(" [--", " [-")
        .replace("for --", "for -")
        .replace(
            "Required options not provided:\n    --",
            "Required options not provided:\n    -",
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn flags(s: &str) -> Flags {
        match parse(&args(s)) {
            Parsed::Flags(f) => *f,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn accepts_every_go_spelling() {
        for cmd in [
            "-local-ip 203.0.113.5 -strict-host",
            "-local-ip=203.0.113.5 -strict-host=true",
            "--local-ip 203.0.113.5 --strict-host",
            "--local-ip=203.0.113.5 -strict-host=1",
        ] {
            let f = flags(cmd);
            assert_eq!(f.local_ip.as_deref(), Some("203.0.113.5"), "{cmd}");
            assert!(f.strict_host, "{cmd}");
        }
        assert!(!flags("-strict-host=false").strict_host);
        assert!(!flags("-strict-host=F").strict_host);
    }

    #[test]
    fn seed_example_parses() {
        let f = flags("-local-ip 203.0.113.5 -local-fqdn proxya.example.com -strict-host -strict-client -ack-ruri -trusted-client-ip 192.0.2.35,192.0.2.14 -trusted-client-mask 32 -trusted-server 203.0.113.20:server.example.com:5060:tcp:,203.0.113.110:pbx.example.com/srv.tel.example.com:5060:wss: -default-sip-server 203.0.113.110");
        assert!(f.strict_client && f.ack_ruri);
        let g = flags("-registered-only -ack-ruri -token-key-file /var/lib/roundabout/token.key -max-transactions 5");
        assert!(g.registered_only && g.ack_ruri);
        assert_eq!(
            g.token_key_file.as_deref(),
            Some("/var/lib/roundabout/token.key")
        );
        assert_eq!(g.max_transactions, 5);
        assert_eq!(f.trusted_client_mask, 32);
        assert_eq!(f.default_sip_server.as_deref(), Some("203.0.113.110"));
        assert_eq!(f.udp_port, 5060);
        assert_eq!(f.default_network, "tcp");
    }

    #[test]
    fn value_starting_with_dash_is_kept() {
        let f = flags("-csr-l -weird -csr");
        assert_eq!(f.csr_l.as_deref(), Some("-weird"));
        assert!(f.csr);
    }

    #[test]
    fn errors_name_the_flag() {
        match parse(&args("-no-such-flag 1")) {
            Parsed::Error(e) => assert!(e.contains("-no-such-flag"), "{e}"),
            other => panic!("{other:?}"),
        }
        match parse(&args("-udp-port seventy")) {
            Parsed::Error(e) => assert!(e.contains("udp-port"), "{e}"),
            other => panic!("{other:?}"),
        }
        match parse(&args("-strict-host=maybe")) {
            Parsed::Error(e) => assert!(e.contains("-strict-host") && e.contains("maybe"), "{e}"),
            other => panic!("{other:?}"),
        }
        match parse(&args("-local-ip")) {
            Parsed::Error(e) => assert!(e.contains("local-ip"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_lists_flags_with_defaults() {
        for h in ["-h", "-help", "--help"] {
            match parse(&args(h)) {
                Parsed::Help(text) => {
                    assert!(text.contains("-trusted-server"), "{text}");
                    assert!(text.contains("(default: 5060)"), "{text}");
                    assert!(!text.contains("--local-ip"), "{text}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
