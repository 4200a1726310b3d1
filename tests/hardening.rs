//! Hostile input, limits and faults, end to end: the real `roundabout` binary on the
//! loopback addresses of `tests/common`, with SIPp calls and the small peers of
//! `tests/transport_peers`.
//!
//! - garbage on every listener (UDP, TCP, TLS, WS, WSS) is dropped or its connection closed,
//!   with a log line, while a SIPp call goes through, and another after it;
//! - the limits: slow-loris and idle connections closed, connections per IP capped, datagrams
//!   over the size limit dropped, floods dropped, counted and logged once;
//! - faults: servers refusing, failing TLS, blackholed or silent get 503 (quickly) or 408,
//!   and the stats line (SIGUSR1) shows transactions and connections back to zero; a TCP
//!   server restarting mid-call is reconnected to and the dialog goes on; 2,000 registered
//!   TCP clients dropping at once leave no connection and, after the grace, no binding;
//!   out of file descriptors, the listener neither spins nor stops.
//!
//! Every wait is bounded; nothing leaves loopback.

mod common;
mod transport_peers;

use async_tungstenite::tungstenite::Message;
use common::{Peers, Proc, SIPP_TIMEOUT, UAC_IP, UAS_IP};
use futures_util::StreamExt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport_peers::*;

/// A sender of garbage, on an address of its own (flood protection counts per address).
const GARBAGE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// Roundabout with all five listeners of `proxy` and `extra` flags.
fn start(peers: &Peers, proxy: &ProxyPorts, extra: &[&str]) -> Proc {
    proxy.start_roundabout(peers, extra, None)
}

/// The counts of the stats line, asked for with SIGUSR1.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    transactions: usize,
    in_flight: usize,
    connections: usize,
    dispatcher: usize,
    connecting: usize,
    clients: usize,
    flood_drops: usize,
}

fn number_after(line: &str, key: &str) -> usize {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no '{key}' in {line}"));
    line[at + key.len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after '{key}' in {line}"))
}

/// The whole log (`Proc::output` keeps only its end, where older stats lines fall out).
fn whole_log(rb: &Proc) -> String {
    String::from_utf8_lossy(&std::fs::read(rb.log_path()).unwrap_or_default()).into_owned()
}

fn stats(rb: &mut Proc) -> Stats {
    let before = whole_log(rb).matches("stats: ").count();
    let sent = std::process::Command::new("kill")
        .args(["-USR1", &rb.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = whole_log(rb);
        if out.matches("stats: ").count() > before {
            let line = out.lines().rev().find(|l| l.contains("stats: ")).unwrap();
            return Stats {
                transactions: number_after(line, "transactions"),
                in_flight: number_after(line, "in flight"),
                connections: number_after(line, "connections"),
                dispatcher: number_after(line, "dispatcher"),
                connecting: number_after(line, "connecting"),
                clients: number_after(line, "clients"),
                flood_drops: number_after(line, "flood drops"),
            };
        }
        assert!(Instant::now() < deadline, "no stats line\n{}", rb.report());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls the stats until `done` holds, within `limit`.
async fn wait_stats(rb: &mut Proc, limit: Duration, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + limit;
    loop {
        let s = stats(rb);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "counts not back within {limit:?}: {s:?}\n{}",
            rb.report()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the other side closes `io` within `limit` (whatever it sends first is read).
async fn closed_within(io: &mut BoxRw, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Deterministic noise.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The start of a TLS 1.2 ClientHello.
const CLIENT_HELLO: &[u8] = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x5b\x90\x9d\x9b";

/// A request with everything an answer needs, from `local`.
fn options(
    local: SocketAddr,
    t: &str,
    branch: &str,
    extra: &str,
    declared_len: usize,
    body: &str,
) -> Vec<u8> {
    format!(
        "OPTIONS sip:nobody@192.0.2.99 SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch=z9hG4bK{branch}\r\n\
         From: <sip:g@example.com>;tag=g\r\nTo: <sip:nobody@192.0.2.99>\r\nCall-ID: {branch}@garbage\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{extra}Content-Length: {declared_len}\r\n\r\n{body}"
    )
    .into_bytes()
}

/// `msg` with its `@@` replaced by bytes that are not UTF-8.
fn not_utf8(msg: Vec<u8>) -> Vec<u8> {
    let at = msg
        .windows(2)
        .position(|w| w == b"@@")
        .expect("a @@ placeholder");
    [&msg[..at], &b"\xff\xfe"[..], &msg[at + 2..]].concat()
}

async fn tcp_from(ip: Ipv4Addr, kind: Kind, proxy: &ProxyPorts) -> (BoxRw, SocketAddr) {
    stream_to(kind, ip.into(), proxy.addr(kind), &insecure_connector()).await
}

/// Every kind of garbage on every listener; each stream case must end with the connection
/// closed (the caller checks the log lines).
async fn send_garbage(proxy: &ProxyPorts) {
    // UDP: datagrams are dropped (or answered 400 when they are a broken request).
    let udp = tokio::net::UdpSocket::bind((GARBAGE_IP, 0)).await.unwrap();
    let local = udp.local_addr().unwrap();
    let to = proxy.addr(Kind::Udp);
    for i in 0..30 {
        udp.send_to(&noise(i, 1 + (i as usize * 37) % 1400), to)
            .await
            .unwrap();
    }
    udp.send_to(
        b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP",
        to,
    )
    .await
    .unwrap();
    udp.send_to(&vec![b'A'; 20_000], to).await.unwrap(); // over -max-udp-message 16384
    let big_header = format!("X-Big: {}\r\n", "b".repeat(15_000));
    udp.send_to(&options(local, "UDP", "big", &big_header, 0, ""), to)
        .await
        .unwrap();
    // A Content-Length larger than the data, and invalid UTF-8: broken requests, answered 400.
    for (branch, msg) in [
        ("cl", options(local, "UDP", "cl", "", 500, "short")),
        (
            "utf8",
            not_utf8(options(local, "UDP", "utf8", "X-Bad: @@\r\n", 0, "")),
        ),
    ] {
        udp.send_to(&msg, to).await.unwrap();
        // Other answers (the 403 to the big OPTIONS) may come first: find this one's.
        let mut buf = vec![0u8; 65536];
        let answer = loop {
            let (n, _) = tokio::time::timeout(IO_TIMEOUT, udp.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no answer to the broken request '{branch}'"))
                .unwrap();
            let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            if answer.contains(&format!("Call-ID: {branch}@garbage")) {
                break answer;
            }
        };
        assert!(answer.starts_with("SIP/2.0 400 "), "{branch}: {answer}");
    }

    // Streams: each case on a connection of its own, all at once.
    let partial = b"OPTIONS sip:nobody@192.0.2.99 SIP/2.0\r\nVia: SIP/2.0/TCP".to_vec();
    let short_body = options(
        "127.0.0.5:9".parse().unwrap(),
        "TCP",
        "clt",
        "",
        1000,
        "short",
    );
    let mut cases: Vec<(&str, Kind, Vec<u8>, Duration)> = vec![
        (
            "tcp noise",
            Kind::Tcp,
            noise(99, 3000),
            Duration::from_secs(3),
        ),
        (
            "tcp TLS ClientHello",
            Kind::Tcp,
            CLIENT_HELLO.to_vec(),
            Duration::from_secs(3),
        ),
        (
            "tcp half message",
            Kind::Tcp,
            partial.clone(),
            Duration::from_secs(5),
        ),
        (
            "tcp Content-Length beyond the data",
            Kind::Tcp,
            short_body,
            Duration::from_secs(5),
        ),
        (
            "tcp huge header",
            Kind::Tcp,
            [b"OPTIONS sip:x SIP/2.0\r\nX: ".to_vec(), vec![b'h'; 70_000]].concat(),
            Duration::from_secs(3),
        ),
        (
            "tcp invalid UTF-8",
            Kind::Tcp,
            b"HELLO \xff\xfe\r\n\r\n".to_vec(),
            Duration::from_secs(3),
        ),
        (
            "tls noise",
            Kind::Tls,
            noise(7, 2000),
            Duration::from_secs(3),
        ),
        (
            "tls half message",
            Kind::Tls,
            partial,
            Duration::from_secs(5),
        ),
    ];
    let mut tasks = Vec::new();
    for (what, kind, bytes, limit) in cases.drain(..) {
        let proxy = *proxy;
        tasks.push(tokio::spawn(async move {
            let (mut io, _) = tcp_from(GARBAGE_IP, kind, &proxy).await;
            let _ = io.write_all(&bytes).await;
            let _ = io.flush().await;
            assert!(
                closed_within(&mut io, limit).await,
                "{what}: connection not closed within {limit:?}"
            );
        }));
    }
    // Plain bytes on the TLS and WSS ports (no handshake), an HTTP request that is not an
    // upgrade on the WS and WSS ports.
    for (what, kind, bytes) in [
        ("noise on the TLS port", Kind::Tcp, noise(5, 600)),
        (
            "HTTP GET on the WS port",
            Kind::Ws,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ] {
        let proxy = *proxy;
        tasks.push(tokio::spawn(async move {
            let port_kind = if what.contains("TLS") {
                Kind::Tls
            } else {
                kind
            };
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(GARBAGE_IP.into(), 0)).unwrap();
            let tcp = socket.connect(proxy.addr(port_kind)).await.unwrap();
            let mut io: BoxRw = Box::new(tcp);
            let _ = io.write_all(&bytes).await;
            assert!(
                closed_within(&mut io, Duration::from_secs(12)).await,
                "{what}: not closed"
            );
        }));
    }
    {
        let proxy = *proxy;
        tasks.push(tokio::spawn(async move {
            let (mut io, _) = tcp_from(GARBAGE_IP, Kind::Wss, &proxy).await;
            let _ = io.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert!(
                closed_within(&mut io, Duration::from_secs(12)).await,
                "HTTP GET on the WSS port: not closed"
            );
        }));
    }
    // WebSocket messages that are not SIP.
    for (kind, message) in [
        (Kind::Ws, Message::Binary(noise(3, 500).into())),
        (Kind::Ws, Message::text("hello, this is not SIP\r\n\r\n")),
        (Kind::Wss, Message::Binary(noise(4, 500).into())),
    ] {
        let proxy = *proxy;
        tasks.push(tokio::spawn(async move {
            let (io, _) = tcp_from(GARBAGE_IP, kind, &proxy).await;
            let (mut ws, _) = ws_client(io, kind, proxy.addr(kind), Some("sip"))
                .await
                .unwrap();
            ws.send(message).await.unwrap();
            let end = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match ws.next().await {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                        Some(Ok(_)) => continue,
                    }
                }
            })
            .await;
            assert!(
                end.is_ok(),
                "{kind:?}: a message that is not SIP must close the connection"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn garbage_on_every_listener_is_refused_while_calls_go_through() {
    let peers = Peers::new();
    let proxy = ProxyPorts::new(&peers);
    let server = format!("{}::{}:udp:", peers.uas.ip(), peers.uas.port());
    let mut rb = start(
        &peers,
        &proxy,
        &[
            "-strict-host",
            "-ack-ruri",
            "-trusted-server",
            &server,
            "-partial-message-timeout",
            "2",
            "-max-udp-message",
            "16384",
        ],
    );
    let uas = peers.sipp_server(
        "uas-call.xml",
        peers.uas,
        common::Transport::Udp,
        &["-m", "2"],
    );
    let rsa = proxy.addr(Kind::Udp).to_string();
    let caller_args = ["-s", "bob", "-rsa", &rsa];
    let during = peers.sipp_client(
        "uac-call.xml",
        peers.uas,
        peers.uac,
        common::Transport::Udp,
        &caller_args,
    );
    send_garbage(&proxy).await;
    during
        .wait_success(SIPP_TIMEOUT)
        .expect("the call placed during the garbage");
    peers
        .sipp_client(
            "uac-call.xml",
            peers.uas,
            peers.uac,
            common::Transport::Udp,
            &caller_args,
        )
        .wait_success(SIPP_TIMEOUT)
        .expect("the call placed after the garbage");
    uas.wait_success(SIPP_TIMEOUT)
        .expect("the callee took both calls");

    assert!(
        rb.try_status().is_none(),
        "roundabout exited\n{}",
        rb.report()
    );
    let log = rb.output();
    for line in [
        "dropped an unparseable message from udp 127.0.0.5",
        "over the limit of 16384 bytes (-max-udp-message)",
        "answered 400 Body Shorter Than Content-Length",
        "answered 400 Header Section Not UTF-8",
        "not SIP: a TLS handshake (byte 0x16) on a plain connection",
        "not SIP: a message cannot begin with byte",
        "still incomplete (-partial-message-timeout)",
        "message larger than the stream limit of 65536 bytes",
        "not a SIP message",
        "closing tls connection from 127.0.0.5",
        "closing ws connection from 127.0.0.5",
        "closing wss connection from 127.0.0.5",
    ] {
        assert!(
            log.contains(line),
            "no log line with '{line}'\n{}",
            rb.report()
        );
    }
    assert!(!log.contains("panicked"), "{}", rb.report());
    let s = wait_stats(&mut rb, Duration::from_secs(10), |s| s.connections == 0).await;
    assert_eq!(s.dispatcher, 0, "{s:?}");
}

#[tokio::test]
async fn slow_idle_and_crowded_connections_are_closed_and_keepalives_keep_them() {
    let peers = Peers::new();
    let proxy = ProxyPorts::new(&peers);
    let rb = start(
        &peers,
        &proxy,
        &[
            "-partial-message-timeout",
            "2",
            "-idle-timeout",
            "3",
            "-max-connections-per-ip",
            "3",
        ],
    );
    let started = Instant::now();
    // Slow-loris: a message begun and never finished.
    let (mut slow, _) = tcp_from(GARBAGE_IP, Kind::Tcp, &proxy).await;
    slow.write_all(
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.5:9;branch=z9hG4bKs",
    )
    .await
    .unwrap();
    // Idle: one request, then silence. Kept alive: one request, then CRLF keep-alives.
    let mut idle = Link::connect(Kind::Tcp, OTHER_IP.into(), &proxy).await;
    let mut kept = Link::connect(Kind::Tls, OTHER_IP.into(), &proxy).await;
    for (link, branch) in [(&mut idle, "idle"), (&mut kept, "kept")] {
        assert_eq!(
            options_to_roundabout(link, branch).await,
            Some(200),
            "OPTIONS to Roundabout itself"
        );
    }
    assert!(
        closed_within(&mut slow, Duration::from_secs(4)).await,
        "slow-loris connection kept"
    );
    let slow_after = started.elapsed();
    assert!(
        slow_after >= Duration::from_millis(1900),
        "closed too early: {slow_after:?}"
    );

    // Per-IP cap: three connections from one address, the fourth is closed at once; another
    // address is not affected.
    let mut crowd = Vec::new();
    for _ in 0..3 {
        crowd.push(tcp_from(GARBAGE_IP, Kind::Tcp, &proxy).await.0);
    }
    let (mut fourth, _) = tcp_from(GARBAGE_IP, Kind::Tcp, &proxy).await;
    assert!(
        closed_within(&mut fourth, Duration::from_secs(2)).await,
        "fourth connection from one IP kept"
    );
    let (mut other, _) = tcp_from(OTHER_IP, Kind::Tcp, &proxy).await;
    other.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(IO_TIMEOUT, other.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();

    // Keep-alives (CRLF on TLS) every second keep `kept` open past the idle timeout.
    // The close line names the connection ("closing tcp connection N with ADDR: why"), so
    // it is `idle`'s own, not that of another silent one.
    let idle_closed = |log: &str| {
        let idle_peer = format!(
            "with {}: nothing received for 3s (-idle-timeout)",
            idle.local
        );
        log.contains(&idle_peer)
    };
    let kept_io = &mut kept;
    let mut idle_closed_after = None;
    let idle_start = Instant::now();
    for _ in 0..6 {
        kept_io.send("\r\n\r\n").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if idle_closed_after.is_none() && idle_closed(&rb.output()) {
            idle_closed_after = Some(idle_start.elapsed());
        }
    }
    assert!(
        idle_closed_after.is_some(),
        "the idle connection was not closed\n{}",
        rb.report()
    );
    // `kept` still works: an OPTIONS through it is answered.
    assert_eq!(
        options_to_roundabout(kept_io, "kept2").await,
        Some(200),
        "kept-alive connection closed"
    );
    let log = rb.output();
    assert!(
        log.contains("refused 1 connection(s), the latest from 127.0.0.5"),
        "{}",
        rb.report()
    );
    assert!(log.contains("(-max-connections-per-ip)"), "{}", rb.report());
    drop(crowd);
}

#[tokio::test]
async fn a_flood_is_dropped_counted_and_logged_once_and_trusted_servers_are_exempt() {
    let peers = Peers::new();
    let proxy = ProxyPorts::new(&peers);
    let trusted = format!("{}::{}:udp:", UAS_IP, peers.uas.port());
    let mut rb = start(
        &peers,
        &proxy,
        &["-pike-limit", "20", "-trusted-server", &trusted],
    );
    let to = proxy.addr(Kind::Udp);
    let mut answered = std::collections::HashMap::new();
    for ip in [GARBAGE_IP, UAS_IP] {
        let udp = std::sync::Arc::new(tokio::net::UdpSocket::bind((ip, 0)).await.unwrap());
        let local = udp.local_addr().unwrap();
        // Answers are read while the requests go out, so no socket buffer overflows.
        let reader = {
            let udp = udp.clone();
            tokio::spawn(async move {
                let mut n = 0;
                let mut buf = vec![0u8; 65536];
                while let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(1500), udp.recv_from(&mut buf)).await
                {
                    n += 1;
                }
                n
            })
        };
        // 200 requests in about half a second.
        for i in 0..200 {
            if i % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let m = String::from_utf8(options(local, "UDP", &format!("f{i}"), "", 0, ""))
                .unwrap()
                .replace("nobody@192.0.2.99", "127.0.0.1");
            udp.send_to(m.as_bytes(), to).await.unwrap();
        }
        answered.insert(ip, reader.await.unwrap());
    }
    assert!(
        (20..=40).contains(&answered[&GARBAGE_IP]),
        "flooder answered {answered:?}"
    );
    assert_eq!(
        answered[&UAS_IP], 200,
        "a trusted server is exempt: {answered:?}"
    );
    // Another address is served meanwhile.
    let mut c = Link::connect(Kind::Udp, OTHER_IP.into(), &proxy).await;
    assert_eq!(options_to_roundabout(&mut c, "other").await, Some(200));
    let s = stats(&mut rb);
    assert!(s.flood_drops >= 160, "{s:?}");
    let log = rb.output();
    assert_eq!(
        log.matches("flood from 127.0.0.5: more than 20 requests")
            .count(),
        1,
        "{}",
        rb.report()
    );
    assert!(!log.contains("flood from 127.0.0.3"), "{}", rb.report());
}

/// A TCP client (transactions linger 5 s after a stream client's answer) sends a MESSAGE to
/// each broken server; the answers come in time, then everything goes back to zero.
#[tokio::test]
async fn down_servers_get_503_or_408_and_leave_nothing_behind() {
    let peers = Peers::new();
    let proxy = ProxyPorts::new(&peers);
    let refused = SocketAddr::new(UAS_IP.into(), peers.port());
    let bad_tls = SocketAddr::new(UAS_IP.into(), peers.port());
    let blackhole = SocketAddr::new(UAS_IP.into(), peers.port());
    let silent = SocketAddr::new(UAS_IP.into(), peers.port());
    // Answers TCP with noise: the TLS handshake fails.
    let bad_tls_listener = tokio::net::TcpListener::bind(bad_tls).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = bad_tls_listener.accept().await {
            let _ = s.write_all(b"this is no TLS server\r\n").await;
        }
    });
    // Listens and never accepts: the connection is made by the kernel, the handshake never.
    let blackhole_listener = std::net::TcpListener::bind(blackhole).unwrap();
    // Accepts and reads, never answers.
    let mut silent_server = Server::listen(Kind::Tcp, silent, None).await;
    let servers = [
        ("refused.test", refused, "tcp"),
        ("badtls.test", bad_tls, "tls"),
        ("blackhole.test", blackhole, "tls"),
        ("silent.test", silent, "tcp"),
    ]
    .map(|(name, addr, proto)| format!("{}:{name}:{}:{proto}:", addr.ip(), addr.port()))
    .join(",");
    let mut rb = start(
        &peers,
        &proxy,
        &["-strict-host", "-tls-insecure", "-trusted-server", &servers],
    );
    let mut c = Link::connect(Kind::Tcp, UAC_IP.into(), &proxy).await;
    let message = |c: &Link, host: &str| {
        let local = c.local;
        Request {
            method: "MESSAGE",
            uri: &format!("sip:bob@{host}"),
            via: format!(
                "SIP/2.0/TCP {local};branch=z9hG4bK{}",
                host.replace('.', "")
            ),
            from: "<sip:alice@example.com>;tag=a".into(),
            to: format!("<sip:bob@{host}>"),
            call_id: &format!("{host}@faults"),
            cseq: 1,
            headers: vec![],
            body: "hi",
        }
        .render()
    };
    // Refused and TLS failure: 503 at once.
    for host in ["refused.test", "badtls.test"] {
        let sent = Instant::now();
        c.send(&message(&c, host)).await;
        let answer = c.recv_final().await;
        assert_eq!(answer.status(), Some(503), "{host}: {answer}");
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "{host}: 503 after {:?}",
            sent.elapsed()
        );
    }
    // Blackholed (the TLS handshake never answered): 503 after the connect timeout (5 s).
    let sent = Instant::now();
    c.send(&message(&c, "blackhole.test")).await;
    c.send(&message(&c, "silent.test")).await;
    let started = Instant::now();
    let mut silent_link = silent_server.link().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answer = c.recv_final().await;
    assert_eq!(answer.status(), Some(503), "blackhole: {answer}");
    assert_eq!(answer.get("Call-ID"), "blackhole.test@faults");
    assert!(
        sent.elapsed() < Duration::from_secs(7),
        "blackhole: 503 after {:?}",
        sent.elapsed()
    );
    let forwarded = silent_link.recv_request("MESSAGE").await;
    assert_eq!(forwarded.get("Call-ID"), "silent.test@faults");
    let in_flight = stats(&mut rb);
    assert_eq!(
        in_flight.in_flight, 1,
        "only the silent server's: {in_flight:?}"
    );
    // Timer F: 32 s without an answer (each read waits 5 s at most).
    tokio::time::sleep(Duration::from_secs(29).saturating_sub(started.elapsed())).await;
    let timeout = c.recv_final().await;
    assert_eq!(timeout.status(), Some(408), "{timeout}");
    assert!(
        started.elapsed() >= Duration::from_secs(31),
        "{:?}",
        started.elapsed()
    );
    // The silent server goes away, and so does the client: nothing may be left.
    drop(silent_link);
    drop(c);
    drop(blackhole_listener);
    let s = wait_stats(&mut rb, Duration::from_secs(15), |s| {
        s.transactions == 0 && s.connections == 0 && s.dispatcher == 0 && s.connecting == 0
    })
    .await;
    assert_eq!(s.in_flight, 0, "{s:?}");
}

/// A TCP server closes its connection and comes back between INVITE and BYE: Roundabout
/// opens a new connection for the BYE and the dialog ends normally.
#[tokio::test]
async fn a_tcp_server_restarting_mid_call_is_reconnected() {
    let peers = Peers::new();
    let proxy = ProxyPorts::new(&peers);
    let mut srv = Server::listen(Kind::Tcp, peers.uas, None).await;
    let server = format!("{}:pbx.test:{}:tcp:", peers.uas.ip(), peers.uas.port());
    let _rb = start(
        &peers,
        &proxy,
        &["-strict-host", "-ack-ruri", "-trusted-server", &server],
    );
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let local = c.local;
    let via = |branch: &str| format!("SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport");
    let from = "<sip:alice@example.com>;tag=a1".to_string();
    let invite = Request {
        method: "INVITE",
        uri: "sip:bob@pbx.test",
        via: via("inv"),
        from: from.clone(),
        to: "<sip:bob@pbx.test>".into(),
        call_id: "restart@test",
        cseq: 1,
        headers: vec![format!("Contact: <sip:alice@{local}>")],
        body: "",
    };
    c.send(&invite.render()).await;
    let mut first = srv.link().await;
    let inv = first.recv_request("INVITE").await;
    let contact = format!("Contact: <sip:bob@{}>;transport=tcp", peers.uas);
    first
        .send(&response(&inv, 200, "OK", "b1", &[contact]))
        .await;
    let ok = c.recv_final().await;
    assert_eq!(ok.status(), Some(200), "{ok}");
    let target = uri_of(&ok.get("Contact"));
    let routes = ok.route_set();
    let in_dialog = |method, cseq, branch: &str| Request {
        method,
        uri: &target,
        via: via(branch),
        from: from.clone(),
        to: ok.get("To"),
        call_id: "restart@test",
        cseq,
        headers: routes.clone(),
        body: "",
    };
    c.send(&in_dialog("ACK", 1, "ack").render()).await;
    first.recv_request("ACK").await;

    // The server restarts: its connection and its listener go, then it listens again.
    drop(first);
    drop(srv);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut srv = Server::listen(Kind::Tcp, peers.uas, None).await;
    c.send(&in_dialog("BYE", 2, "bye").render()).await;
    let mut second = srv.link().await;
    let bye = second.recv_request("BYE").await;
    assert_eq!(bye.get("Call-ID"), "restart@test");
    second.send(&response(&bye, 200, "OK", "b1", &[])).await;
    let bye_ok = c.recv_final().await;
    assert_eq!(bye_ok.status(), Some(200), "{bye_ok}");
    assert_eq!(bye_ok.get("CSeq"), "2 BYE");
}

/// 2,000 clients register over TCP, then all their connections drop at once: the
/// connections are gone at once, the bindings after the grace (30 s), and Roundabout still
/// serves.
#[tokio::test]
async fn two_thousand_clients_dropping_at_once_leave_nothing_behind() {
    const CLIENTS: usize = 2000;
    let peers = Peers::new();
    let proxy = ProxyPorts::new(&peers);
    let registrar_addr = peers.uas;
    let server = format!("{}::{}:udp:", registrar_addr.ip(), registrar_addr.port());
    let mut rb = start(
        &peers,
        &proxy,
        &[
            "-strict-host",
            "-trusted-server",
            &server,
            "-max-connections-per-ip",
            "0",
            "-pike-limit",
            "0",
            "-log-level",
            "info",
        ],
    );
    // The registrar: every REGISTER gets 200 with the Contact it carries.
    let registrar = tokio::net::UdpSocket::bind(registrar_addr).await.unwrap();
    let registrar_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = registrar.recv_from(&mut buf).await else {
                return;
            };
            let req = Msg::parse(&buf[..n]);
            if req.method() != "REGISTER" {
                continue;
            }
            let contact = format!("Contact: {};expires=3600", req.get("Contact"));
            let _ = registrar
                .send_to(response(&req, 200, "OK", "r", &[contact]).as_bytes(), from)
                .await;
        }
    });
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 6) as u8));
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
            let mut io = tokio::time::timeout(IO_TIMEOUT, socket.connect(proxy.addr(Kind::Tcp)))
                .await
                .expect("connected in time")
                .unwrap();
            let local = io.local_addr().unwrap();
            let text = register_text(local, i, registrar_addr);
            io.write_all(text.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tokio::time::timeout(Duration::from_secs(20), io.read(&mut buf))
                    .await
                    .expect("an answer to the REGISTER in time")
                    .unwrap();
                assert!(n > 0, "client {i}: closed");
                got.extend_from_slice(&buf[..n]);
            }
            assert!(
                got.starts_with(b"SIP/2.0 200 "),
                "client {i}: {}",
                String::from_utf8_lossy(&got)
            );
            io
        }));
    }
    let mut connections = Vec::with_capacity(CLIENTS);
    for t in tasks {
        connections.push(t.await.unwrap());
    }
    let registered = wait_stats(&mut rb, Duration::from_secs(10), |s| s.clients == CLIENTS).await;
    assert_eq!(registered.connections, CLIENTS, "{registered:?}");
    eprintln!("{CLIENTS} clients registered in {:?}", started.elapsed());

    // All at once.
    drop(connections);
    let dropped = Instant::now();
    let s = wait_stats(&mut rb, Duration::from_secs(10), |s| {
        s.connections == 0 && s.dispatcher == 0
    })
    .await;
    eprintln!(
        "connections gone {:?} after the drop: {s:?}",
        dropped.elapsed()
    );
    let s = wait_stats(&mut rb, Duration::from_secs(45), |s| s.clients == 0).await;
    eprintln!(
        "bindings gone {:?} after the drop: {s:?}",
        dropped.elapsed()
    );
    let s = wait_stats(&mut rb, Duration::from_secs(15), |s| s.transactions == 0).await;
    assert_eq!(s.connections, 0, "{s:?}");
    let mut c = Link::connect(Kind::Udp, OTHER_IP.into(), &proxy).await;
    assert_eq!(options_to_roundabout(&mut c, "after").await, Some(200));
    registrar_task.abort();
}

fn register_text(local: SocketAddr, i: usize, registrar: SocketAddr) -> String {
    Request {
        method: "REGISTER",
        uri: &format!("sip:{registrar}"),
        via: format!("SIP/2.0/TCP {local};branch=z9hG4bKreg{i}"),
        from: format!("<sip:user{i}@example.com>;tag=r{i}"),
        to: format!("<sip:user{i}@example.com>"),
        call_id: &format!("reg{i}@crowd"),
        cseq: 1,
        headers: vec![
            format!("Contact: <sip:user{i}@{local};transport=tcp>"),
            "Expires: 3600".into(),
        ],
        body: "",
    }
    .render()
}

/// Sends an OPTIONS for Roundabout itself over `link`; the final answer's status.
async fn options_to_roundabout(link: &mut Link, branch: &str) -> Option<u16> {
    let request = options(link.local, link.kind.via(), branch, "", 0, "");
    let request = String::from_utf8(request)
        .unwrap()
        .replace("nobody@192.0.2.99", "127.0.0.1");
    link.send(&request).await;
    link.recv_final().await.status()
}

/// utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // the command name (field 2) may hold spaces: count from the ')' that ends it
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Out of file descriptors: a failed accept leaves the connection in the backlog, so a
/// listener that retried at once would spin a core and flood the log. Roundabout pauses
/// after a failed accept, logs the failures at most once a second, answers UDP meanwhile,
/// and serves new connections once descriptors are free again. Its banner says the limit.
#[tokio::test]
async fn running_out_of_file_descriptors_neither_spins_nor_stops_the_listener() {
    let peers = Peers::new();
    let proxy = ProxyPorts::new(&peers);
    let no_caps = [
        "-max-connections",
        "0",
        "-max-connections-per-ip",
        "0",
        "-pike-limit",
        "0",
    ];
    let rb = proxy.start_roundabout(&peers, &no_caps, Some((64, 64)));
    assert!(
        rb.output().contains("open files: up to 64"),
        "banner without the open-files limit\n{}",
        rb.report()
    );

    // More connections than the proxy has descriptors for: the kernel completes them all
    // (the listen backlog), the proxy cannot accept the later ones.
    let mut held = Vec::new();
    for _ in 0..120 {
        let c = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(proxy.addr(Kind::Tcp)),
        )
        .await;
        match c {
            Ok(Ok(s)) => held.push(s),
            _ => break,
        }
    }
    assert!(held.len() >= 100, "only {} connections opened", held.len());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !whole_log(&rb).contains("accept failed") {
        assert!(
            Instant::now() < deadline,
            "no failed accept logged\n{}",
            rb.report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        whole_log(&rb).contains("out of file descriptors"),
        "the log does not say why\n{}",
        rb.report()
    );

    // Two seconds out of descriptors: little CPU (a spinning listener would use a whole
    // core, ~200 ticks), few log lines, and UDP still answered.
    let lines_before = whole_log(&rb).matches("accept failed").count();
    let ticks_before = cpu_ticks(rb.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks = cpu_ticks(rb.pid()) - ticks_before;
    let lines = whole_log(&rb).matches("accept failed").count() - lines_before;
    assert!(
        ticks < 60,
        "{ticks} ticks of CPU in 2 s without descriptors"
    );
    assert!(lines <= 4, "{lines} 'accept failed' lines in 2 s");
    let udp = proxy.addr(Kind::Udp);
    tokio::task::spawn_blocking(move || common::sip_ping(udp, Duration::from_secs(3)))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("UDP not answered while out of descriptors: {e}"));

    // Descriptors free again: a new TCP connection is served.
    drop(held);
    let mut link = Link::connect(Kind::Tcp, OTHER_IP.into(), &proxy).await;
    assert_eq!(
        options_to_roundabout(&mut link, "after").await,
        Some(200),
        "OPTIONS over a new connection once descriptors are free\n{}",
        rb.report()
    );
}
