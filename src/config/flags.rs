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

    /// comma-separated datasets host:fqdn-list:port:protocol:route-list, e.g.
    /// 203.0.113.20:server.example.com:5060:tcp:  ('/' separates several fqdns or routes;
    /// protocol is udp, tcp, tls, ws or wss). The host may be a DNS name, resolved per
    /// RFC 3263: leave the port empty for SRV, and the protocol too for NAPTR
    /// (sip.carrier.example:::udp:, carrier.example::::). route-list: proxies the requests
    /// for the server go through first (Route headers) (default: none)
    #[argh(option)]
    pub trusted_server: Option<String>,

    /// DNS server IP:PORT to resolve names with (NAPTR, SRV, A/AAAA), instead of the
    /// system's (/etc/resolv.conf) (default: the system's)
    #[argh(option)]
    pub dns_server: Option<String>,

    /// seconds a target that failed (refused, TLS failure, no answer, 503) is avoided when
    /// its name resolves to others: they are tried first (default: 30)
    #[argh(option, default = "30")]
    pub avoid_time: u64,

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

    /// connections accepted and open at once from one IP address, IPv6 counted per /64
    /// (trusted servers exempt); 0 no limit (default: 100)
    #[argh(option, default = "100")]
    pub max_connections_per_ip: usize,

    /// requests one IP address (IPv6: one /64) may send per 2 seconds; over it, its requests
    /// are dropped for 10 seconds (flood protection like Kamailio's pike; trusted servers
    /// exempt); 0 no limit (default: 300)
    #[argh(option, default = "300")]
    pub pike_limit: u32,

    /// bytes that may wait to be written on one TCP, TLS, WS or WSS connection; a peer that
    /// does not read and lets more pile up is closed (requests for a client on it then get
    /// 480), like Kamailio's tcp_conn_wq_max; 4096 to 1073741824 (default: 1048576)
    #[argh(option, default = "1048576")]
    pub max_send_queue: usize,

    /// connections roundabout opens itself, at once, to hosts that are not trusted servers
    /// (without -strict-host a Request-URI can name any host); over it such requests get 503;
    /// 0 no limit (default: 1000)
    #[argh(option, default = "1000")]
    pub max_outbound_connections: usize,

    /// log level: error, warn, info, debug or trace; RUST_LOG overrides it (default: info)
    #[argh(option, default = "String::from(\"info\")")]
    pub log_level: String,

    /// read flags from this file, one per line as in config-examples/*.args ('#' starts a
    /// comment line); flags given on the command line override the file's. SIGHUP re-reads
    /// it (default: none)
    #[argh(option)]
    pub config: Option<String>,

    /// serve GET /metrics (Prometheus text) and GET /health (200, or 503 while draining) over
    /// HTTP on this IP:PORT, e.g. 127.0.0.1:9090 (default: off)
    #[argh(option)]
    pub metrics_addr: Option<String>,

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

/// Reads the command line (without the program name). With `-config FILE`, the file's flags
/// come first and any flag also given on the command line is taken from the command line
/// only (see [`merge_config_file`]).
pub fn parse(args: &[String]) -> Parsed {
    let merged = match merge_config_file(args) {
        Ok(m) => m,
        Err(e) => return Parsed::Error(e),
    };
    let (args, from_file) = match &merged {
        Some((merged, path)) => (merged.as_slice(), Some(path)),
        None => (args, None),
    };
    match parse_args(args) {
        Parsed::Error(e) => match from_file {
            Some(path) => Parsed::Error(format!(
                "{e}\n(flags read from {path} and the command line)"
            )),
            None => Parsed::Error(e),
        },
        other => other,
    }
}

/// Reads a command line without looking at `-config`.
fn parse_args(args: &[String]) -> Parsed {
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

/// One flag as written: its name (empty for a stray argument) and its argument(s).
type FlagGroup = (String, Vec<String>);

/// Cuts a command line into flags, each with its value when it takes one (the Go spellings
/// of [`go_style_to_argh`]); nothing is checked here.
fn flag_groups(args: &[String]) -> Vec<FlagGroup> {
    let mut out = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            out.push((String::new(), iter.by_ref().cloned().collect()));
            break;
        }
        let name = match arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) {
            Some(n) if !n.is_empty() => n,
            _ => {
                out.push((String::new(), vec![arg.clone()]));
                continue;
            }
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, _)) => (n, true),
            None => (name, false),
        };
        let mut group = vec![arg.clone()];
        let takes_value = !SWITCHES.contains(&name) && !matches!(name, "h" | "help");
        if takes_value && !inline {
            group.extend(iter.next().cloned());
        }
        out.push((name.to_string(), group));
    }
    out
}

/// The flags of a `-config` file: one per line, optionally followed by one space and its
/// value, which runs verbatim to the end of the line (no quoting: a value may hold spaces).
/// Blank lines and lines starting with `#` are skipped. The format of `config-examples/`.
pub fn read_config_file(path: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the -config file {path}: {e}"))?;
    let mut args = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (flag, value) = match line.split_once(' ') {
            Some((f, v)) => (f, Some(v.trim_start())),
            None => (line, None),
        };
        if !flag.starts_with('-') || flag.trim_start_matches('-').is_empty() {
            return Err(format!(
                "{path} line {}: '{line}' is not a flag (one flag per line, e.g. -strict-host \
                 or -local-ip 192.0.2.5; '#' starts a comment)",
                n + 1
            ));
        }
        let name = flag.trim_start_matches('-');
        if name == "config" || name.starts_with("config=") {
            return Err(format!(
                "{path} line {}: -config cannot be used inside a -config file",
                n + 1
            ));
        }
        args.push(flag.to_string());
        args.extend(value.map(String::from));
    }
    Ok(args)
}

/// With `-config FILE` on the command line: the file's flags, minus those the command line
/// gives too, then the command line (so it wins); and the file's path. `None` without it.
pub fn merge_config_file(args: &[String]) -> Result<Option<(Vec<String>, String)>, String> {
    let cli = flag_groups(args);
    let Some(path) =
        cli.iter()
            .find(|(n, _)| n == "config")
            .and_then(|(_, g)| match g[0].split_once('=') {
                Some((_, v)) => Some(v.to_string()),
                None => g.get(1).cloned(),
            })
    else {
        return Ok(None); // none, or without its value: argh says so
    };
    let file = flag_groups(&read_config_file(&path)?);
    let mut merged: Vec<String> = file
        .into_iter()
        .filter(|(name, _)| name.is_empty() || !cli.iter().any(|(n, _)| n == name))
        .flat_map(|(_, g)| g)
        .collect();
    merged.extend(cli.into_iter().flat_map(|(_, g)| g));
    Ok(Some((merged, path)))
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

    /// A `-config` file in the target dir, emptied first.
    fn config_file(name: &str, text: &str) -> String {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp/flags-unit");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn config_file_flags_with_the_command_line_over_them() {
        let path = config_file(
            "merge.args",
            "# a comment\n\n-local-ip 192.0.2.5\n  -strict-host\n-udp-port 5070\n\
             -csr-l Mountain View\n-trusted-client-ip=192.0.2.0/24\n",
        );
        let f = flags(&format!("-config {path}"));
        assert_eq!(f.local_ip.as_deref(), Some("192.0.2.5"));
        assert!(f.strict_host);
        assert_eq!(f.udp_port, 5070);
        assert_eq!(
            f.csr_l.as_deref(),
            Some("Mountain View"),
            "values keep their spaces"
        );
        assert_eq!(f.trusted_client_ip.as_deref(), Some("192.0.2.0/24"));
        assert_eq!(f.config.as_deref(), Some(path.as_str()));
        // Every spelling on the command line wins, switches too.
        for cli in [
            "-udp-port 6000 -strict-host=false",
            "--udp-port=6000 --strict-host=false",
        ] {
            let f = flags(&format!("-config={path} {cli}"));
            assert_eq!(f.udp_port, 6000, "{cli}");
            assert!(!f.strict_host, "{cli}");
            assert_eq!(f.local_ip.as_deref(), Some("192.0.2.5"), "{cli}");
        }
    }

    #[test]
    fn config_file_errors_name_the_file_and_line() {
        let missing = "/nonexistent/roundabout.args";
        match parse(&args(&format!("-config {missing}"))) {
            Parsed::Error(e) => assert!(e.contains(missing) && e.contains("cannot read"), "{e}"),
            other => panic!("{other:?}"),
        }
        for (name, text, words) in [
            (
                "stray.args",
                "-strict-host\nstrict-client\n",
                vec!["line 2", "not a flag"],
            ),
            (
                "nested.args",
                "-config other.args\n",
                vec!["line 1", "-config"],
            ),
            (
                "unknown.args",
                "-no-such 1\n",
                vec!["-no-such", "unknown.args"],
            ),
        ] {
            let path = config_file(name, text);
            match parse(&args(&format!("-config {path}"))) {
                Parsed::Error(e) => {
                    for w in words {
                        assert!(e.contains(w), "{w:?} not in {e}");
                    }
                }
                other => panic!("{name}: {other:?}"),
            }
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
