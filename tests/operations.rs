//! Operations (issue 14): the real `roundabout` binary with `-metrics-addr`, `-config` and
//! SIGHUP, on the loopback addresses of `tests/common`.
//!
//! - `/metrics` and `/health` over HTTP during a SIPp load: after N calls, N INVITEs (and N
//!   ACKs and BYEs) counted, responses by class, the latency histogram filled, nothing left
//!   in flight; every metric the Grafana dashboard queries is served;
//! - a WSS client connected before a certificate swap (SIGHUP) stays connected and keeps
//!   calling, while new TLS and WSS connections get the new certificate;
//! - a reload of the `-config` file that changes `-trusted-server` applies to the next
//!   request; a file that does not parse, or a key that does not match its certificate,
//!   changes nothing;
//! - a reload that lowers `-max-connections-per-ip` refuses the next connection while the
//!   one already open stays up and keeps working; raised again, new connections get in;
//! - each policy refusal (`-strict-client`, `-registered-only`, `-max-transactions`) is
//!   counted exactly once under its reason;
//! - `-config` with flags on the command line over it;
//! - `/health` answers 503 while draining after SIGTERM.
//!
//! Every wait is bounded; nothing is skipped.

mod common;
mod transport_peers;

use common::{Peers, Proc, Transport, SIPP_TIMEOUT, UAC_IP};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};
use transport_peers::*;

/// How long a log line or a metric may take to show up.
const WAIT: Duration = Duration::from_secs(5);

/// `GET path` on Roundabout's metrics listener: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT)
        .unwrap_or_else(|e| panic!("connecting to the metrics listener {addr}: {e}"));
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading GET {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one series (`name` or `name{labels}` exactly as served).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

fn metric_or_panic(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
}

/// Waits until `series` reads `want` (for gauges that settle), bounded by [`WAIT`].
fn wait_metric(addr: SocketAddr, series: &str, want: f64) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, text) = http_get(addr, "/metrics");
        if metric(&text, series) == Some(want) || Instant::now() >= deadline {
            assert_eq!(metric(&text, series), Some(want), "{series}:\n{text}");
            return text;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn send_signal(proc: &Proc, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args(["-s", signal, &proc.pid().to_string()])
        .status()
        .expect("running kill")
        .success();
    assert!(ok, "kill -s {signal} {}", proc.pid());
}

/// Sends SIGHUP and waits for the reload's verdict: the next line containing "reload done"
/// or "reload refused" (whichever `expect` names). Returns the whole output.
fn reload(proc: &Proc, expect: &str) -> String {
    let before = proc.output().matches(expect).count();
    send_signal(proc, "HUP");
    let deadline = Instant::now() + WAIT;
    loop {
        let out = proc.output();
        if out.matches(expect).count() > before {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "no new {expect:?} within {WAIT:?} after SIGHUP:\n{out}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Roundabout's output once its banner is whole (the sockets listen a moment before it is
/// printed; its `routing:` line comes after the listeners and the `flags from` line).
fn banner(proc: &mut Proc) -> String {
    proc.wait_for_output("routing: strict-host", WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.output()));
    proc.output()
}

fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn trusted_udp(server: SocketAddr) -> String {
    format!("{}::{}:udp:", server.ip(), server.port())
}

// ----- metrics and health under load ---------------------------------------------------

/// N SIPp calls, the caller on TCP and the callee on UDP: while they run `/health` is 200 and
/// `/metrics` shows the caller's TCP connection; after them, exactly N INVITEs, ACKs and BYEs
/// were received over TCP, the responses are counted by class, the latency histogram has
/// every message, and nothing is left in flight.
#[test]
fn metrics_and_health_during_a_sipp_load() {
    const CALLS: u64 = 40;
    let p = Peers::new();
    let metrics_addr = SocketAddr::from((common::PROXY_IP, p.port()));
    let server = trusted_udp(p.uas);
    let maddr = metrics_addr.to_string();
    let mut rb = p.roundabout_udp_tcp(&[
        "-strict-host",
        "-ack-ruri",
        "-trusted-server",
        &server,
        "-metrics-addr",
        &maddr,
    ]);
    let out = banner(&mut rb);
    assert!(
        out.contains(&format!("http {maddr} (GET /metrics, /health)")),
        "{out}"
    );
    let (status, text) = http_get(metrics_addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        metric(
            &text,
            r#"roundabout_requests_received_total{method="INVITE",transport="tcp"}"#
        ),
        Some(0.0),
        "{text}"
    );

    let calls = CALLS.to_string();
    let uas = p.sipp_server("uas-call.xml", p.uas, Transport::Udp, &["-m", &calls]);
    let rsa = p.proxy.to_string();
    let mut uac = p.sipp_client(
        "uac-call.xml",
        p.uas,
        p.uac,
        Transport::Tcp,
        &[
            "-s", "bob", "-rsa", &rsa, "-m", &calls, "-r", "20", "-l", "20",
        ],
    );
    // While the calls run (bounded by SIPp's own timeout).
    let deadline = Instant::now() + SIPP_TIMEOUT;
    let (mut scrapes, mut saw_connection) = (0, false);
    while uac.try_status().is_none() && Instant::now() < deadline {
        let (status, body) = http_get(metrics_addr, "/health");
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        let (status, text) = http_get(metrics_addr, "/metrics");
        assert_eq!(status, 200);
        metric_or_panic(&text, "roundabout_transactions_in_flight");
        saw_connection |=
            metric(&text, r#"roundabout_connections_open{transport="tcp"}"#) == Some(1.0);
        scrapes += 1;
        thread::sleep(Duration::from_millis(100));
    }
    uac.wait_success(SIPP_TIMEOUT).unwrap();
    uas.wait_success(SIPP_TIMEOUT).unwrap();
    assert!(scrapes >= 3, "only {scrapes} scrapes during the load");
    assert!(
        saw_connection,
        "the caller's TCP connection was never counted"
    );

    let text = wait_metric(metrics_addr, "roundabout_transactions_in_flight", 0.0);
    let n = CALLS as f64;
    for method in ["INVITE", "ACK", "BYE"] {
        let series =
            format!(r#"roundabout_requests_received_total{{method="{method}",transport="tcp"}}"#);
        assert_eq!(metric(&text, &series), Some(n), "{series}:\n{text}");
    }
    // 100 Trying and 180 to the caller for each INVITE; 200 for INVITE and BYE, both ways
    // counted once each (the Router sends each response once).
    let ones = metric_or_panic(&text, r#"roundabout_responses_sent_total{class="1xx"}"#);
    let twos = metric_or_panic(&text, r#"roundabout_responses_sent_total{class="2xx"}"#);
    assert!(ones >= 2.0 * n, "1xx {ones}:\n{text}");
    assert!(twos >= 2.0 * n, "2xx {twos}:\n{text}");
    for class in ["3xx", "4xx", "5xx", "6xx"] {
        let series = format!(r#"roundabout_responses_sent_total{{class="{class}"}}"#);
        assert_eq!(metric(&text, &series), Some(0.0), "{series}:\n{text}");
    }
    // Every request forwarded and response passed went through the histogram.
    let observed = metric_or_panic(&text, "roundabout_forwarding_seconds_count");
    assert!(observed >= 5.0 * n, "{observed} observations:\n{text}");
    let under_1s = metric_or_panic(&text, r#"roundabout_forwarding_seconds_bucket{le="1"}"#);
    assert_eq!(under_1s, observed, "{text}");
    assert_eq!(
        metric(&text, "roundabout_unparseable_dropped_total"),
        Some(0.0)
    );
    assert_eq!(metric(&text, "roundabout_draining"), Some(0.0));
    // The SIGUSR1 line comes from the same counts.
    let before = rb.output().matches("stats: ").count();
    send_signal(&rb, "USR1");
    let deadline = Instant::now() + WAIT;
    while rb.output().matches("stats: ").count() == before {
        assert!(Instant::now() < deadline, "no stats line:\n{}", rb.output());
        thread::sleep(Duration::from_millis(20));
    }
    let out = rb.output();
    let line = out.lines().rev().find(|l| l.contains("stats: ")).unwrap();
    assert!(
        line.contains("(in flight 0)") && line.contains("clients 0"),
        "{line}"
    );
    assert_eq!(metric(&text, "roundabout_registered_clients"), Some(0.0));
}

/// Every metric that `packaging/grafana-dashboard.json` queries is served by `/metrics`, and
/// the dashboard has the panels the issue asks for.
#[test]
fn dashboard_queries_only_served_metrics() {
    let p = Peers::new();
    let metrics_addr = SocketAddr::from((common::PROXY_IP, p.port()));
    let maddr = metrics_addr.to_string();
    let mut rb = p.roundabout_udp_tcp(&["-metrics-addr", &maddr]);
    banner(&mut rb); // the metrics listener opens just after the SIP ones
    let (_, text) = http_get(metrics_addr, "/metrics");
    let served: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/grafana-dashboard.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("valid JSON");
    let mut exprs = Vec::new();
    let mut titles = Vec::new();
    collect(&json, &mut exprs, &mut titles);
    assert!(exprs.len() >= 5, "{exprs:?}");
    let mut queried = 0;
    for expr in &exprs {
        for name in metric_names(expr) {
            queried += 1;
            assert!(
                served.contains(name.as_str()),
                "the dashboard queries {name} ({expr}), which /metrics does not serve:\n{text}"
            );
        }
    }
    assert!(queried >= 5, "{exprs:?}");
    let titles = titles.join(" | ").to_lowercase();
    for panel in [
        "calls per second",
        "failures by status class",
        "connections by transport",
        "registered clients",
        "latency",
    ] {
        assert!(titles.contains(panel), "no {panel:?} panel in: {titles}");
    }

    fn collect(v: &serde_json::Value, exprs: &mut Vec<String>, titles: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => exprs.push(s.clone()),
                        ("title", serde_json::Value::String(s)) => titles.push(s.clone()),
                        _ => collect(v, exprs, titles),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, exprs, titles)),
            _ => {}
        }
    }

    /// The `roundabout_*` names in a PromQL expression.
    fn metric_names(expr: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = expr;
        while let Some(i) = rest.find("roundabout_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_string());
            rest = &tail[end..];
        }
        names
    }
}

/// Connections to trusted servers that fail are counted by server and stage (a refused
/// connect, a TLS handshake with something that is not TLS), and a datagram that is not SIP
/// as unparseable.
#[tokio::test]
async fn outbound_failures_and_unparseable_messages_are_counted() {
    let p = Peers::new();
    let metrics_addr = SocketAddr::from((common::PROXY_IP, p.port()));
    let maddr = metrics_addr.to_string();
    // A TCP port with nothing behind it (127.0.0.3), and one that accepts and closes at
    // once (127.0.0.5; a server of its own: routing tells servers apart by host).
    let refused = SocketAddr::from((common::UAS_IP, p.port()));
    let not_tls = SocketAddr::from((std::net::Ipv4Addr::new(127, 0, 0, 5), p.port()));
    let closer = tokio::net::TcpListener::bind(not_tls).await.unwrap();
    let closing = tokio::spawn(async move {
        for _ in 0..10 {
            match closer.accept().await {
                Ok((stream, _)) => drop(stream),
                Err(_) => return,
            }
        }
    });
    let servers = format!(
        "{}::{}:tcp:,{}::{}:tls:",
        refused.ip(),
        refused.port(),
        not_tls.ip(),
        not_tls.port()
    );
    let mut rb = p.roundabout_udp_tcp(&[
        "-strict-host",
        "-trusted-server",
        &servers,
        "-metrics-addr",
        &maddr,
    ]);
    banner(&mut rb);
    let connect =
        format!(r#"roundabout_outbound_failures_total{{server="{refused}/tcp",stage="connect"}}"#);
    let tls =
        format!(r#"roundabout_outbound_failures_total{{server="{not_tls}/tls",stage="tls"}}"#);
    let (_, text) = http_get(metrics_addr, "/metrics");
    assert_eq!(metric(&text, &connect), Some(0.0), "{text}");
    assert_eq!(metric(&text, &tls), Some(0.0), "{text}");

    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &udp_only(&p)).await;
    assert_eq!(options(&mut c, refused, None, 1).await, 503);
    assert_eq!(options(&mut c, not_tls, None, 2).await, 503);
    wait_metric(metrics_addr, &connect, 1.0);
    wait_metric(metrics_addr, &tls, 1.0);
    let other = r#"roundabout_outbound_failures_total{server="other",stage="connect"}"#;
    wait_metric(metrics_addr, other, 0.0);

    let garbage = std::net::UdpSocket::bind((UAC_IP, 0)).unwrap();
    garbage
        .send_to(b"this is not SIP\r\n\r\n", p.proxy)
        .unwrap();
    wait_metric(metrics_addr, "roundabout_unparseable_dropped_total", 1.0);
    closing.abort();
}

// ----- certificate swap ------------------------------------------------------------------

/// The DER of the certificate a TLS server presents at `addr` (the handshake only).
async fn certificate_at(addr: SocketAddr) -> Vec<u8> {
    let tcp = tokio::time::timeout(IO_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let tls = tokio::time::timeout(
        IO_TIMEOUT,
        insecure_connector().connect(&addr.ip().to_string(), tcp),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake");
    tls.get_ref()
        .peer_certificate()
        .unwrap()
        .expect("a certificate")
        .to_der()
        .unwrap()
}

fn der_of(pem: &str) -> Vec<u8> {
    tokio_native_tls::native_tls::Certificate::from_pem(pem.as_bytes())
        .unwrap()
        .to_der()
        .unwrap()
}

/// A browser-like INVITE from the client on `c` to bob at the UDP server `server`; the
/// server answers 200 and the client must get it.
async fn call_once(c: &mut Link, s: &mut Link, server: SocketAddr, n: u32) {
    let call_id = format!("swap-{n}@test");
    let invite = Request {
        method: "INVITE",
        uri: &format!("sip:bob@{server}"),
        via: format!("SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKswap{n};rport"),
        from: format!("<sip:alice@{server}>;tag=a{n}"),
        to: format!("<sip:bob@{server}>"),
        call_id: &call_id,
        cseq: 1,
        headers: vec!["Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>".into()],
        body: "",
    };
    c.send(&invite.render()).await;
    let inv = loop {
        let m = s.recv_request("INVITE").await;
        if m.get("Call-ID") == call_id {
            break m;
        }
    };
    s.send(&response(
        &inv,
        200,
        "OK",
        &format!("b{n}"),
        &[format!("Contact: <sip:bob@{server}>")],
    ))
    .await;
    let ok = c.recv_final().await;
    assert_eq!(ok.status(), Some(200), "{ok}");
    assert_eq!(ok.get("Call-ID"), call_id);
}

/// SIGHUP after the certificate files were replaced: the WSS client connected before keeps
/// its connection and keeps calling; new TLS and WSS connections see the new certificate.
#[tokio::test]
async fn wss_client_keeps_calling_across_a_certificate_swap() {
    let peers = Peers::new();
    let ca = TestCa::new();
    let (cert_a, key_a) = ca.issue(&["127.0.0.1", "localhost"]);
    let (cert_b, key_b) = ca.issue(&["127.0.0.1", "localhost"]);
    let cert_file = write_file(peers.dir(), "cert.pem", &cert_a);
    let key_file = write_file(peers.dir(), "key.pem", &key_a);
    let mut srv = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ProxyPorts::new(&peers);
    let flags = [
        "-strict-host".to_string(),
        "-trusted-server".into(),
        trusted_udp(peers.uas),
        "-tls-cert".into(),
        cert_file.clone(),
        "-tls-key".into(),
        key_file.clone(),
    ];
    let rb = proxy.start_roundabout(&peers, &flags, None);
    for kind in [Kind::Tls, Kind::Wss] {
        assert_eq!(certificate_at(proxy.addr(kind)).await, der_of(&cert_a));
    }
    let mut old = Link::connect(Kind::Wss, UAC_IP.into(), &proxy).await;
    let mut s = srv.link().await;
    call_once(&mut old, &mut s, peers.uas, 1).await;

    std::fs::write(&cert_file, &cert_b).unwrap();
    std::fs::write(&key_file, &key_b).unwrap();
    let out = reload(
        &rb,
        "reload: new TLS and WSS connections get the certificate",
    );
    assert!(!out.contains("reload refused"), "{out}");

    for kind in [Kind::Tls, Kind::Wss] {
        assert_eq!(
            certificate_at(proxy.addr(kind)).await,
            der_of(&cert_b),
            "{kind:?}: a new connection must see the new certificate"
        );
    }
    // The old connection is still up and carries calls; a new one does too.
    for n in 2..5 {
        call_once(&mut old, &mut s, peers.uas, n).await;
    }
    let mut new = Link::connect(Kind::Wss, UAC_IP.into(), &proxy).await;
    call_once(&mut new, &mut s, peers.uas, 10).await;
    call_once(&mut old, &mut s, peers.uas, 11).await;
    let closed = format!("closing wss connection from {}", old.local);
    assert!(!rb.output().contains(&closed), "{}", rb.output());
}

// ----- reload of the -config file --------------------------------------------------------

/// The flags of a config file for Roundabout on `p.proxy` (UDP and TCP only), `-strict-host`,
/// and the trusted servers in `trusted`, with `extra` lines.
fn config_text(p: &Peers, trusted: &[SocketAddr], extra: &str) -> String {
    let servers: Vec<String> = trusted.iter().map(|s| trusted_udp(*s)).collect();
    format!(
        "# written by tests/operations.rs\n-local-ip 127.0.0.1\n-udp-port {port}\n\
         -tcp-port {port}\n-tls-port 0\n-ws-port 0\n-wss-port 0\n\n-strict-host\n\
         -trusted-server {}\n{extra}",
        servers.join(","),
        port = p.proxy.port()
    )
}

fn udp_only(p: &Peers) -> ProxyPorts {
    ProxyPorts {
        ip: common::PROXY_IP.into(),
        udp_tcp: p.proxy.port(),
        tls: 0,
        ws: 0,
        wss: 0,
    }
}

/// An OPTIONS from the client for `target` (a server's address): the final response the
/// client gets, and whether `server` (when given) received the request.
async fn options(c: &mut Link, target: SocketAddr, server: Option<&mut Link>, n: u32) -> u16 {
    let call_id = format!("opt-{n}@test");
    let req = Request {
        method: "OPTIONS",
        uri: &format!("sip:{target}"),
        via: format!(
            "SIP/2.0/{} {};branch=z9hG4bKopt{n};rport",
            c.kind.via(),
            c.local
        ),
        from: format!("<sip:alice@{}>;tag=o{n}", c.local),
        to: format!("<sip:{target}>"),
        call_id: &call_id,
        cseq: 1,
        headers: vec![],
        body: "",
    };
    c.send(&req.render()).await;
    if let Some(s) = server {
        let got = s.recv_request("OPTIONS").await;
        assert_eq!(got.get("Call-ID"), call_id);
        s.send(&response(&got, 200, "OK", "srv", &[])).await;
    }
    let answer = c.recv_final().await;
    assert_eq!(answer.get("Call-ID"), call_id, "{answer}");
    answer.status().unwrap()
}

/// A reload that swaps the trusted server: the next request for the old one gets 403, the
/// next for the new one is forwarded.
#[tokio::test]
async fn reload_of_trusted_servers_applies_to_the_next_request() {
    let p = Peers::new();
    let second: SocketAddr = (std::net::Ipv4Addr::new(127, 0, 0, 5), p.port()).into();
    let mut first_srv = Server::listen(Kind::Udp, p.uas, None).await;
    let mut second_srv = Server::listen(Kind::Udp, second, None).await;
    let file = write_file(p.dir(), "roundabout.args", &config_text(&p, &[p.uas], ""));
    let proxy = udp_only(&p);
    let mut rb = p.roundabout(
        &["-config", &file],
        &[(p.proxy, Transport::Udp), (p.proxy, Transport::Tcp)],
    );
    let out = banner(&mut rb);
    assert!(out.contains(&format!("flags from {file}")), "{out}");
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let mut first = first_srv.link().await;
    let mut second_link = second_srv.link().await;
    assert_eq!(options(&mut c, p.uas, Some(&mut first), 1).await, 200);
    assert_eq!(options(&mut c, second, None, 2).await, 403);

    std::fs::write(&file, config_text(&p, &[second], "")).unwrap();
    let out = reload(&rb, "reload done");
    assert!(out.contains("1 trusted server(s)"), "{out}");
    assert_eq!(options(&mut c, p.uas, None, 3).await, 403);
    assert_eq!(
        options(&mut c, second, Some(&mut second_link), 4).await,
        200
    );
    assert!(
        first
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "the old server must get nothing after the reload"
    );
}

/// A reload that turns -strict-client on (and then lets the client's network in) applies to
/// the next request, counted by reason in `/metrics`.
#[tokio::test]
async fn reload_of_admission_rules_applies_to_the_next_request() {
    let p = Peers::new();
    let mut srv = Server::listen(Kind::Udp, p.uas, None).await;
    let metrics_addr = SocketAddr::from((common::PROXY_IP, p.port()));
    let file = write_file(p.dir(), "roundabout.args", &config_text(&p, &[p.uas], ""));
    let proxy = udp_only(&p);
    let maddr = metrics_addr.to_string();
    let rb = p.roundabout(
        &["-config", &file, "-metrics-addr", &maddr],
        &[(p.proxy, Transport::Udp), (p.proxy, Transport::Tcp)],
    );
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let mut s = srv.link().await;
    assert_eq!(options(&mut c, p.uas, Some(&mut s), 1).await, 200);

    let strict = "-strict-client\n-trusted-client-ip 127.0.0.9/32\n";
    std::fs::write(&file, config_text(&p, &[p.uas], strict)).unwrap();
    let out = reload(&rb, "reload done");
    assert!(out.contains("strict-client on"), "{out}");
    assert_eq!(options(&mut c, p.uas, None, 2).await, 403);
    let series = r#"roundabout_requests_refused_total{reason="strict_client"}"#;
    wait_metric(metrics_addr, series, 1.0);

    let allowed = "-strict-client\n-trusted-client-ip 127.0.0.9/32,127.0.0.2/32\n";
    std::fs::write(&file, config_text(&p, &[p.uas], allowed)).unwrap();
    reload(&rb, "reload done");
    assert_eq!(options(&mut c, p.uas, Some(&mut s), 3).await, 200);
    wait_metric(metrics_addr, series, 1.0);
}

/// A reload that lowers `-max-connections-per-ip` under what a source has open: its next
/// connection is closed at once, the one it has stays up and keeps carrying requests; a
/// reload that raises it lets a new one in.
#[tokio::test]
async fn reload_of_connection_limits_applies_to_new_connections_only() {
    let p = Peers::new();
    let mut srv = Server::listen(Kind::Udp, p.uas, None).await;
    let metrics_addr = SocketAddr::from((common::PROXY_IP, p.port()));
    let cap = |n: u32| config_text(&p, &[p.uas], &format!("-max-connections-per-ip {n}\n"));
    let file = write_file(p.dir(), "roundabout.args", &cap(5));
    let proxy = udp_only(&p);
    let maddr = metrics_addr.to_string();
    let rb = p.roundabout(
        &["-config", &file, "-metrics-addr", &maddr],
        &[(p.proxy, Transport::Udp), (p.proxy, Transport::Tcp)],
    );
    let refused = "roundabout_connections_refused_total";
    let mut old = Link::connect(Kind::Tcp, UAC_IP.into(), &proxy).await;
    let mut s = srv.link().await;
    assert_eq!(options(&mut old, p.uas, Some(&mut s), 1).await, 200);

    std::fs::write(&file, cap(1)).unwrap();
    let out = reload(&rb, "reload done");
    assert!(
        out.contains(
            "reload: -max-connections-per-ip 5 -> 1 (for new connections; those open stay)"
        ),
        "{out}"
    );
    let mut second = Link::connect(Kind::Tcp, UAC_IP.into(), &proxy).await;
    assert!(
        second.drained_until_closed(WAIT).await.is_some(),
        "a second connection from {UAC_IP} must be closed at once:\n{}",
        rb.output()
    );
    wait_metric(metrics_addr, refused, 1.0);
    for n in 2..4 {
        assert_eq!(options(&mut old, p.uas, Some(&mut s), n).await, 200);
    }

    std::fs::write(&file, cap(2)).unwrap();
    let out = reload(&rb, "reload done");
    assert!(out.contains("-max-connections-per-ip 1 -> 2"), "{out}");
    let mut third = Link::connect(Kind::Tcp, UAC_IP.into(), &proxy).await;
    assert_eq!(options(&mut third, p.uas, Some(&mut s), 4).await, 200);
    assert_eq!(options(&mut old, p.uas, Some(&mut s), 5).await, 200);
    wait_metric(metrics_addr, refused, 1.0);
    let closed = format!("closing tcp connection from {}", old.local);
    assert!(!rb.output().contains(&closed), "{}", rb.output());
}

/// Each policy refusal is counted once under its reason, by the Router shard that refused
/// it: an outsider (`-strict-client`), a client that is not registered (`-registered-only`)
/// and a REGISTER over `-max-transactions 1` while one waits for the server. The stats line
/// sums the same counts.
#[tokio::test]
async fn each_refusal_reason_is_counted_exactly() {
    let p = Peers::new();
    // Hears the first REGISTER and never answers: its transaction stays in flight.
    let mut srv = Server::listen(Kind::Udp, p.uas, None).await;
    let metrics_addr = SocketAddr::from((common::PROXY_IP, p.port()));
    let maddr = metrics_addr.to_string();
    let server = trusted_udp(p.uas);
    let allowed = format!("{UAC_IP}/32");
    let mut rb = p.roundabout_udp_tcp(&[
        "-strict-host",
        "-trusted-server",
        &server,
        "-strict-client",
        "-trusted-client-ip",
        &allowed,
        "-registered-only",
        "-max-transactions",
        "1",
        "-metrics-addr",
        &maddr,
    ]);
    banner(&mut rb);
    let proxy = udp_only(&p);
    let counted = |want: [f64; 4]| {
        let reasons = [
            "strict_host",
            "strict_client",
            "registered_only",
            "max_transactions",
        ];
        for (reason, n) in reasons.into_iter().zip(want) {
            let series = format!(r#"roundabout_requests_refused_total{{reason="{reason}"}}"#);
            wait_metric(metrics_addr, &series, n);
        }
    };
    counted([0.0; 4]);

    let outsider_ip = std::net::Ipv4Addr::new(127, 0, 0, 6);
    let mut outsider = Link::connect(Kind::Udp, outsider_ip.into(), &proxy).await;
    assert_eq!(options(&mut outsider, p.uas, None, 1).await, 403);
    counted([0.0, 1.0, 0.0, 0.0]);

    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    assert_eq!(options(&mut c, p.uas, None, 2).await, 403);
    counted([0.0, 1.0, 1.0, 0.0]);

    let local = c.local;
    let register = |n: u32| {
        Request {
            method: "REGISTER",
            uri: &format!("sip:{}", p.uas),
            via: format!("SIP/2.0/UDP {local};branch=z9hG4bKreg{n};rport"),
            from: format!("<sip:alice@{}>;tag=r{n}", p.uas),
            to: format!("<sip:alice@{}>", p.uas),
            call_id: &format!("reg-{n}@test"),
            cseq: 1,
            headers: vec![format!("Contact: <sip:alice@{local}>")],
            body: "",
        }
        .render()
    };
    c.send(&register(1)).await;
    let mut s = srv.link().await;
    s.recv_request("REGISTER").await;
    wait_metric(metrics_addr, "roundabout_transactions_in_flight", 1.0);
    c.send(&register(2)).await;
    let answer = c.recv_final().await;
    assert_eq!(answer.status(), Some(503), "{answer}");
    assert_eq!(answer.get("Call-ID"), "reg-2@test");
    counted([0.0, 1.0, 1.0, 1.0]);

    let before = rb.output().matches("stats: ").count();
    send_signal(&rb, "USR1");
    let deadline = Instant::now() + WAIT;
    while rb.output().matches("stats: ").count() == before {
        assert!(Instant::now() < deadline, "no stats line:\n{}", rb.output());
        thread::sleep(Duration::from_millis(20));
    }
    let out = rb.output();
    let line = out.lines().rev().find(|l| l.contains("stats: ")).unwrap();
    assert!(line.contains("requests refused 3,"), "{line}");
}

/// A file that does not parse, a port change, and a key that does not match its
/// certificate: the first and last change nothing at all (not even the parts that would
/// load), the port change is said to wait for a restart.
#[tokio::test]
async fn bad_reload_changes_nothing() {
    let p = Peers::new();
    let second: SocketAddr = (std::net::Ipv4Addr::new(127, 0, 0, 5), p.port()).into();
    let mut first_srv = Server::listen(Kind::Udp, p.uas, None).await;
    let ca = TestCa::new();
    let (cert_a, key_a) = ca.issue(&["127.0.0.1"]);
    let (cert_b, _) = ca.issue(&["127.0.0.1"]);
    let cert_file = write_file(p.dir(), "cert.pem", &cert_a);
    let key_file = write_file(p.dir(), "key.pem", &key_a);
    let tls_port = p.port();
    let tls_addr = SocketAddr::from((common::PROXY_IP, tls_port));
    let tls_lines = format!("-tls-cert {cert_file}\n-tls-key {key_file}\n");
    let good = config_text(&p, &[p.uas], &tls_lines)
        .replace("-tls-port 0", &format!("-tls-port {tls_port}"));
    let file = write_file(p.dir(), "roundabout.args", &good);
    let proxy = udp_only(&p);
    let rb = p.roundabout(
        &["-config", &file],
        &[(p.proxy, Transport::Udp), (tls_addr, Transport::Tcp)],
    );
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let mut first = first_srv.link().await;
    assert_eq!(options(&mut c, p.uas, Some(&mut first), 1).await, 200);

    // 1. Not a valid file: an unknown flag, with a new trusted server beside it.
    let broken = format!(
        "{}-no-such-flag 1\n",
        config_text(&p, &[second], &tls_lines)
    );
    std::fs::write(&file, broken).unwrap();
    let out = reload(&rb, "reload refused");
    assert!(out.contains("no-such-flag"), "{out}");
    assert_eq!(options(&mut c, p.uas, Some(&mut first), 2).await, 200);
    assert_eq!(options(&mut c, second, None, 3).await, 403);

    // 2. A value that does not load: the same.
    std::fs::write(
        &file,
        good.replace("-strict-host", "-default-sip-server 192.0.2.99"),
    )
    .unwrap();
    let out = reload(&rb, "reload refused");
    assert!(out.contains("192.0.2.99"), "{out}");
    assert_eq!(options(&mut c, p.uas, Some(&mut first), 4).await, 200);

    // 3. A certificate whose key is not the key file's, with a new trusted server: neither.
    std::fs::write(&cert_file, &cert_b).unwrap();
    std::fs::write(
        &file,
        config_text(&p, &[second], &tls_lines)
            .replace("-tls-port 0", &format!("-tls-port {tls_port}")),
    )
    .unwrap();
    let out = reload(&rb, "reload refused");
    assert!(out.contains("do not work together"), "{out}");
    assert_eq!(certificate_at(tls_addr).await, der_of(&cert_a));
    assert_eq!(options(&mut c, p.uas, Some(&mut first), 5).await, 200);
    assert_eq!(options(&mut c, second, None, 6).await, 403);

    // 4. A port change is logged and ignored; the rest applies.
    std::fs::write(&cert_file, &cert_a).unwrap();
    let moved = good.replace(
        &format!("-tcp-port {}", p.proxy.port()),
        &format!("-tcp-port {}", p.port()),
    );
    std::fs::write(&file, moved).unwrap();
    let out = reload(&rb, "reload done");
    assert!(
        out.contains(&format!("-tcp-port changed from {}", p.proxy.port()))
            && out.contains("until a restart"),
        "{out}"
    );
    assert!(common::is_listening(p.proxy, Transport::Tcp));
    assert_eq!(options(&mut c, p.uas, Some(&mut first), 7).await, 200);
}

// ----- -config and the command line ------------------------------------------------------

/// Flags come from the file; the command line overrides values and switches.
#[test]
fn config_file_with_command_line_over_it() {
    let p = Peers::new();
    let other_port = p.port();
    let text = format!(
        "{}-log-level debug\n-default-network udp\n",
        config_text(&p, &[p.uas], "")
    )
    .replace(
        &format!("-udp-port {}", p.proxy.port()),
        &format!("-udp-port {other_port}"),
    );
    let file = write_file(p.dir(), "roundabout.args", &text);
    let port = p.proxy.port().to_string();
    let mut rb = p.roundabout(
        &["-config", &file, "-udp-port", &port, "-strict-host=false"],
        &[(p.proxy, Transport::Udp), (p.proxy, Transport::Tcp)],
    );
    let out = banner(&mut rb);
    assert!(out.contains(&format!("udp  127.0.0.1:{port}")), "{out}");
    assert!(!out.contains(&format!(":{other_port}")), "{out}");
    assert!(out.contains("strict-host off"), "{out}");
    assert!(out.contains("unknown hosts over udp"), "{out}");
    assert!(
        out.contains(&format!("trusted server {}", p.uas.ip())),
        "{out}"
    );

    // A file that cannot be read, or a line that is not a flag: exit 2 naming it.
    for (name, content, words) in [
        ("missing.args", None, vec!["missing.args", "cannot read"]),
        (
            "not-a-flag.args",
            Some("-strict-host\nstrict-client\n"),
            vec!["not-a-flag.args line 2", "not a flag"],
        ),
        (
            "unknown.args",
            Some("-no-such-flag 3\n"),
            vec!["no-such-flag", "unknown.args"],
        ),
    ] {
        let path = p.dir().join(name);
        if let Some(c) = content {
            std::fs::write(&path, c).unwrap();
        }
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roundabout"));
        cmd.arg("-config").arg(&path);
        let mut proc = Proc::spawn(&format!("roundabout-{name}"), cmd, p.dir());
        let status = proc.wait_timeout(WAIT).expect("exits at once");
        assert_eq!(status.code(), Some(2), "{}", proc.output());
        let out = proc.output();
        for w in words {
            assert!(out.contains(w), "{w:?} not in: {out}");
        }
    }
}

// ----- health while draining -------------------------------------------------------------

/// With an INVITE in flight (the server never answers), SIGTERM starts the drain: `/health`
/// answers 503 and `roundabout_draining` is 1 until the process exits.
#[tokio::test]
async fn health_is_503_while_draining() {
    let p = Peers::new();
    let metrics_addr = SocketAddr::from((common::PROXY_IP, p.port()));
    let maddr = metrics_addr.to_string();
    let mut srv = Server::listen(Kind::Udp, p.uas, None).await;
    let server = trusted_udp(p.uas);
    let mut rb = p.roundabout_udp_tcp(&[
        "-strict-host",
        "-trusted-server",
        &server,
        "-metrics-addr",
        &maddr,
    ]);
    banner(&mut rb);
    assert_eq!(http_get(metrics_addr, "/health"), (200, "ok\n".to_string()));
    let proxy = udp_only(&p);
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let invite = Request {
        method: "INVITE",
        uri: &format!("sip:bob@{}", p.uas),
        via: format!("SIP/2.0/UDP {};branch=z9hG4bKdrain;rport", c.local),
        from: format!("<sip:alice@{}>;tag=d", c.local),
        to: format!("<sip:bob@{}>", p.uas),
        call_id: "drain@test",
        cseq: 1,
        headers: vec![format!("Contact: <sip:alice@{}>", c.local)],
        body: "",
    };
    c.send(&invite.render()).await;
    let mut s = srv.link().await;
    s.recv_request("INVITE").await;
    assert_eq!(c.recv().await.status(), Some(100));
    wait_metric(metrics_addr, "roundabout_transactions_in_flight", 1.0);

    send_signal(&rb, "TERM");
    let deadline = Instant::now() + WAIT;
    let mut saw_503 = false;
    // The drain lasts up to 5 s while the INVITE waits for an answer.
    while rb.try_status().is_none() && Instant::now() < deadline {
        let (status, body) = http_get(metrics_addr, "/health");
        if status == 503 {
            assert_eq!(body, "draining\n");
            let (_, text) = http_get(metrics_addr, "/metrics");
            assert_eq!(metric(&text, "roundabout_draining"), Some(1.0), "{text}");
            saw_503 = true;
            break;
        }
        assert_eq!(status, 200);
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        saw_503,
        "no 503 from /health while draining:\n{}",
        rb.output()
    );
    let status = rb.wait_timeout(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{}", rb.output());
}
