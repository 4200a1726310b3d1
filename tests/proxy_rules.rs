//! End-to-end checks of single proxy rules with hand-written SIP over raw loopback sockets:
//! the peers here are a few lines of Rust, because each test needs to see or craft exact
//! bytes (a missing header, a looping request, a retransmission schedule) that SIPp
//! scenarios cannot express. Calls between real peers are in `proxy_e2e.rs`.

mod common;

use common::{Peers, Proc};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Roundabout on UDP and TCP with -strict-host and `extra` flags.
fn roundabout(p: &Peers, extra: &[&str]) -> Proc {
    p.roundabout_udp_tcp(&[&["-strict-host"][..], extra].concat())
}

fn udp(addr: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn recv(s: &UdpSocket) -> (String, SocketAddr) {
    recv_within(s, Duration::from_secs(5)).expect("no datagram within 5 s")
}

fn recv_within(s: &UdpSocket, t: Duration) -> Option<(String, SocketAddr)> {
    s.set_read_timeout(Some(t)).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, from) = s.recv_from(&mut buf).ok()?;
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
}

/// A stream peer that keeps what it read past one message for the next.
struct Stream {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Stream {
    fn connect(addr: SocketAddr) -> Stream {
        Stream {
            s: TcpStream::connect(addr).unwrap(),
            buf: Vec::new(),
        }
    }

    fn local(&self) -> SocketAddr {
        self.s.local_addr().unwrap()
    }

    fn send(&mut self, msg: &str) {
        self.s.write_all(msg.as_bytes()).unwrap();
    }

    /// One SIP message (headers, then Content-Length bytes), within `t`.
    fn read(&mut self, t: Duration) -> String {
        let deadline = Instant::now() + t;
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let len = header(&head, "Content-Length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0usize);
                if self.buf.len() >= end + 4 + len {
                    let msg: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return String::from_utf8_lossy(&msg).into_owned();
                }
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| {
                    panic!(
                        "no whole message within {t:?}: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )
                });
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let n = self.s.read(&mut chunk).expect("stream read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The first value of a header (full name, case-insensitive).
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

fn status(msg: &str) -> u16 {
    msg.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A request from `from` (Via sent-by) with the usual headers, `extra` lines and `body`.
fn request(
    method: &str,
    ruri: &str,
    t: &str,
    from: SocketAddr,
    branch: &str,
    extra: &str,
    body: &str,
) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{t} {from};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\nCall-ID: {branch}@test\r\n\
         CSeq: 1 {method}\r\nContact: <sip:alice@{from}>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A response to `req` (as received by a server: Vias copied in order).
fn response(req: &str, code: u16, reason: &str) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for v in headers(req, "Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    for h in ["From", "To", "Call-ID", "CSeq"] {
        let v = header(req, h).unwrap();
        let tag = if h == "To" && !v.contains("tag=") {
            ";tag=srv"
        } else {
            ""
        };
        out.push_str(&format!("{h}: {v}{tag}\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

#[test]
fn unreachable_next_hop_gets_503() {
    let p = Peers::new();
    // Nobody listens on the trusted server's TCP port.
    let server = format!("{}::{}:tcp:", p.uas.ip(), p.uas.port());
    let _rb = roundabout(&p, &["-trusted-server", &server]);
    let client = udp(p.uac);
    let ruri = format!("sip:bob@{}", p.uas);
    client
        .send_to(
            request("MESSAGE", &ruri, "UDP", p.uac, "u503", "", "hi").as_bytes(),
            p.proxy,
        )
        .unwrap();
    let (answer, _) = recv(&client);
    assert_eq!(status(&answer), 503, "{answer}");
}

/// A 5 KB request from a stream leaves on UDP as one datagram, body intact, with two
/// Record-Route entries (TCP side and UDP side) and received/rport on the sender's Via.
#[test]
fn large_request_from_tcp_leaves_on_udp_whole() {
    let p = Peers::new();
    let server = format!("{}::{}:udp:", p.uas.ip(), p.uas.port());
    let _rb = roundabout(&p, &["-trusted-server", &server]);
    let srv = udp(p.uas);
    let mut client = Stream::connect(p.proxy);
    let body: String = (0..5000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let ruri = format!("sip:bob@{}", p.uas);
    let local = client.local();
    client.send(&request(
        "INVITE",
        &ruri,
        "TCP",
        local,
        "big",
        "Content-Type: application/sdp\r\n",
        &body,
    ));

    let trying = client.read(Duration::from_secs(5));
    assert_eq!(status(&trying), 100, "{trying}");
    let (fwd, _) = recv(&srv);
    assert!(
        fwd.ends_with(&format!("\r\n\r\n{body}")),
        "body changed or cut"
    );
    assert_eq!(header(&fwd, "Content-Length"), Some("5000"));
    let vias = headers(&fwd, "Via");
    assert!(
        vias[0].starts_with(&format!(
            "SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK",
            p.proxy.port()
        )),
        "{fwd}"
    );
    assert!(
        vias[1].contains(&format!("rport={};received=127.0.0.1", local.port())),
        "{fwd}"
    );
    let rr = headers(&fwd, "Record-Route");
    assert_eq!(rr.len(), 2, "{fwd}");
    assert_eq!(rr[0], format!("<sip:127.0.0.1:{};lr>", p.proxy.port()));
    assert_eq!(
        rr[1],
        format!("<sip:127.0.0.1:{};transport=tcp;lr>", p.proxy.port())
    );
    assert_eq!(header(&fwd, "Max-Forwards"), Some("69"));
    let contact = header(&fwd, "Contact").unwrap();
    assert!(
        contact.starts_with(&format!("<sip:alice@127.0.0.1:{};rbt=tcp~", p.proxy.port())),
        "{contact}"
    );

    srv.send_to(response(&fwd, 486, "Busy Here").as_bytes(), p.proxy)
        .unwrap();
    let busy = client.read(Duration::from_secs(5));
    assert_eq!(status(&busy), 486, "{busy}");
    assert_eq!(
        headers(&busy, "Via").len(),
        1,
        "only the client's own Via comes back: {busy}"
    );
    // Roundabout ACKs the non-2xx itself, hop by hop, with the INVITE's branch.
    let (ack, _) = recv(&srv);
    assert!(ack.starts_with("ACK "), "{ack}");
    assert_eq!(headers(&ack, "Via")[0], vias[0]);
}

/// Extension methods, compact header names, folded lines and unknown headers pass through;
/// headers Roundabout does not own go out byte for byte.
#[test]
fn unknown_method_compact_and_folded_headers_pass_untouched() {
    let p = Peers::new();
    let server = format!("{}::{}:udp:", p.uas.ip(), p.uas.port());
    let _rb = roundabout(&p, &["-trusted-server", &server]);
    let srv = udp(p.uas);
    let client = udp(p.uac);
    let msg = format!(
        "FOO sip:bob@{} SIP/2.0\r\nv: SIP/2.0/UDP {};branch=z9hG4bKfoo1\r\nf: <sip:alice@example.com>;tag=x\r\n\
         t: <sip:bob@example.com>\r\ni: foo-1@test\r\nCSeq: 7 FOO\r\nX-Odd:   spaced  value \r\n\
         Subject: folded\r\n  continued\r\nm: <sip:alice@{}>\r\nl: 3\r\n\r\nabc",
        p.uas, p.uac, p.uac
    );
    client.send_to(msg.as_bytes(), p.proxy).unwrap();
    let (fwd, _) = recv(&srv);
    assert!(
        fwd.starts_with(&format!("FOO sip:bob@{} SIP/2.0\r\n", p.uas)),
        "{fwd}"
    );
    for line in [
        "X-Odd:   spaced  value \r\n",
        "Subject: folded\r\n  continued\r\n",
        "i: foo-1@test\r\n",
        "l: 3\r\n",
    ] {
        assert!(fwd.contains(line), "'{line}' changed:\n{fwd}");
    }
    assert!(fwd.ends_with("\r\n\r\nabc"));
    assert!(
        fwd.contains("Max-Forwards: 70\r\n"),
        "added when missing: {fwd}"
    );
    let full_names = [("v", "Via"), ("f", "From"), ("t", "To"), ("i", "Call-ID")]
        .iter()
        .fold(fwd.clone(), |m, (short, long)| {
            m.replace(&format!("\r\n{short}:"), &format!("\r\n{long}:"))
        });
    srv.send_to(response(&full_names, 200, "OK").as_bytes(), p.proxy)
        .unwrap();
    let (ok, _) = recv(&client);
    assert_eq!(status(&ok), 200, "{ok}");
}

#[test]
fn malformed_requests_get_400_with_the_reason() {
    let p = Peers::new();
    let _rb = roundabout(&p, &[]);
    let client = udp(p.uac);
    let no_cseq = request("MESSAGE", "sip:bob@127.0.0.9", "UDP", p.uac, "bad1", "", "")
        .replace("CSeq: 1 MESSAGE\r\n", "");
    client.send_to(no_cseq.as_bytes(), p.proxy).unwrap();
    let (answer, _) = recv(&client);
    assert_eq!(status(&answer), 400, "{answer}");
    assert!(answer.starts_with("SIP/2.0 400 Missing CSeq"), "{answer}");
    // Garbage gets no answer and breaks nothing: the next good request is answered.
    client.send_to(b"\x00\x01garbage\r\n\r\n", p.proxy).unwrap();
    let ping = format!("OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKping\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:{}>\r\nCall-ID: ping@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", p.proxy, p.uac, p.proxy);
    client.send_to(ping.as_bytes(), p.proxy).unwrap();
    let (answer, _) = recv(&client);
    assert_eq!(
        status(&answer),
        200,
        "OPTIONS to Roundabout itself: {answer}"
    );
}

#[test]
fn max_forwards_zero_gets_483_and_loops_get_482() {
    let p = Peers::new();
    let server = format!("{}::{}:udp:", p.uas.ip(), p.uas.port());
    let _rb = roundabout(&p, &["-trusted-server", &server]);
    let client = udp(p.uac);
    let ruri = format!("sip:bob@{}", p.uas);
    let dead = request("MESSAGE", &ruri, "UDP", p.uac, "mf0", "", "")
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    client.send_to(dead.as_bytes(), p.proxy).unwrap();
    let (answer, _) = recv(&client);
    assert_eq!(status(&answer), 483, "{answer}");

    // The "server" sends the forwarded request straight back: Roundabout sees its own Via
    // with the same request and answers 482 to it.
    let srv = udp(p.uas);
    client
        .send_to(
            request("MESSAGE", &ruri, "UDP", p.uac, "loop", "", "x").as_bytes(),
            p.proxy,
        )
        .unwrap();
    let (fwd, _) = recv(&srv);
    let looped = fwd.replacen(
        "Via: ",
        &format!("Via: SIP/2.0/UDP {};branch=z9hG4bKsrv1\r\nVia: ", p.uas),
        1,
    );
    srv.send_to(looped.as_bytes(), p.proxy).unwrap();
    let (answer, _) = recv(&srv);
    assert_eq!(status(&answer), 482, "{answer}");
}

/// The seed's rule: an ACK without Route goes to its To host (the default) even when the
/// Request-URI names someone else.
#[test]
fn ack_without_route_follows_the_to_host() {
    let p = Peers::new();
    let server = format!("{}::{}:udp:", p.uas.ip(), p.uas.port());
    let _rb = roundabout(&p, &["-trusted-server", &server]);
    let srv = udp(p.uas);
    let client = udp(p.uac);
    let ack = request(
        "ACK",
        "sip:bob@127.0.0.9:5099",
        "UDP",
        p.uac,
        "ack1",
        "",
        "",
    )
    .replace(
        "To: <sip:bob@example.com>",
        &format!("To: <sip:bob@{}>;tag=9", p.uas),
    );
    client.send_to(ack.as_bytes(), p.proxy).unwrap();
    let (fwd, _) = recv(&srv);
    assert!(
        fwd.starts_with("ACK sip:bob@127.0.0.9:5099 SIP/2.0"),
        "{fwd}"
    );
}

/// A UDP next hop that never answers: Roundabout retransmits (Timer A doubling for INVITE,
/// Timer E capped at T2 for others) and answers 408 after 32 s (Timer B/F). The client is on
/// TCP, which never retransmits, so everything the server sees comes from Roundabout.
#[test]
fn silent_udp_next_hop_is_retransmitted_then_408() {
    let p = Peers::new();
    let server = format!("{}::{}:udp:", p.uas.ip(), p.uas.port());
    let _rb = roundabout(&p, &["-trusted-server", &server]);
    let srv = udp(p.uas);
    let ruri = format!("sip:bob@{}", p.uas);
    let mut clients = Vec::new();
    for (method, branch) in [("INVITE", "tb"), ("MESSAGE", "tf")] {
        let mut c = Stream::connect(p.proxy);
        let local = c.local();
        c.send(&request(method, &ruri, "TCP", local, branch, "", ""));
        clients.push((method, c));
    }
    let start = Instant::now();
    let mut arrivals: Vec<(String, Duration)> = Vec::new();
    while start.elapsed() < Duration::from_secs(34) {
        if let Some((m, _)) = recv_within(&srv, Duration::from_millis(500)) {
            arrivals.push((m.split(' ').next().unwrap().to_string(), start.elapsed()));
        }
    }
    let count = |m: &str| arrivals.iter().filter(|(x, _)| x == m).count();
    // INVITE: 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s -> 7; MESSAGE: 0, .5, 1.5, 3.5, 7.5, 11.5, ... -> 11.
    assert!((6..=7).contains(&count("INVITE")), "{arrivals:?}");
    assert!((10..=11).contains(&count("MESSAGE")), "{arrivals:?}");
    for (method, mut c) in clients {
        let mut seen = Vec::new();
        loop {
            let m = c.read(Duration::from_secs(5));
            seen.push(status(&m));
            if status(&m) >= 200 {
                break;
            }
        }
        assert_eq!(seen.last(), Some(&408), "{method}: {seen:?}");
    }
}

/// The client cache: bound only when the server answers 2xx (a 401 binds nothing), the 2xx
/// carries the client's own Contact back, requests from the server by user reach the
/// client at its registered Contact, `Expires: 0` unbinds, and for a stream client the
/// binding goes with its connection.
#[test]
fn client_cache_binds_on_2xx_and_unbinds() {
    let p = Peers::new();
    let registrar = format!("{}::{}:udp:", p.uas.ip(), p.uas.port());
    let _rb = roundabout(&p, &["-trusted-server", &registrar]);
    let srv = udp(p.uas);
    let client = udp(p.uac);
    let ruri = format!("sip:{}", p.uas);
    let contact = format!(
        "<sip:carol@{};ob>;+sip.instance=\"<urn:uuid:1>\";reg-id=1",
        p.uac
    );
    let register = |branch: &str, expires: u32| {
        request(
            "REGISTER",
            &ruri,
            "UDP",
            p.uac,
            branch,
            &format!("Expires: {expires}\r\n"),
            "",
        )
        .replace(
            &format!("Contact: <sip:alice@{}>", p.uac),
            &format!("Contact: {contact}"),
        )
    };
    let message_for_carol = |branch: &str| {
        request(
            "MESSAGE",
            &format!("sip:carol@{}", p.proxy),
            "UDP",
            p.uas,
            branch,
            "",
            "hello",
        )
    };

    // 1. Challenged: nothing is bound.
    client
        .send_to(register("r1", 60).as_bytes(), p.proxy)
        .unwrap();
    let (fwd, _) = recv(&srv);
    srv.send_to(response(&fwd, 401, "Unauthorized").as_bytes(), p.proxy)
        .unwrap();
    assert_eq!(status(&recv(&client).0), 401);
    srv.send_to(message_for_carol("m1").as_bytes(), p.proxy)
        .unwrap();
    assert_eq!(status(&recv(&srv).0), 404, "a 401 must not bind carol");

    // 2. Accepted: the registrar sees Roundabout's Contact, the client gets its own back.
    client
        .send_to(register("r2", 60).as_bytes(), p.proxy)
        .unwrap();
    let (fwd, _) = recv(&srv);
    let ours = header(&fwd, "Contact").unwrap().to_string();
    // Roundabout's address, and the token that names this very client (one binding each).
    assert!(
        ours.starts_with(&format!("<sip:carol@127.0.0.1:{};rbc=", p.proxy.port())),
        "{ours}"
    );
    let ok = response(&fwd, 200, "OK").replace(
        "Content-Length: 0",
        &format!("Contact: {ours};expires=45\r\nContent-Length: 0"),
    );
    srv.send_to(ok.as_bytes(), p.proxy).unwrap();
    let (ok, _) = recv(&client);
    assert_eq!(status(&ok), 200);
    assert_eq!(
        header(&ok, "Contact"),
        Some(format!("{contact};expires=45").as_str()),
        "{ok}"
    );

    // 3. The server reaches carol by user, with her Contact as Request-URI.
    srv.send_to(message_for_carol("m2").as_bytes(), p.proxy)
        .unwrap();
    let (delivered, _) = recv(&client);
    assert!(
        delivered.starts_with(&format!("MESSAGE sip:carol@{};ob SIP/2.0", p.uac)),
        "{delivered}"
    );
    client
        .send_to(response(&delivered, 200, "OK").as_bytes(), p.proxy)
        .unwrap();
    assert_eq!(status(&recv(&srv).0), 200);

    // 4. Expires: 0 unbinds.
    client
        .send_to(register("r3", 0).as_bytes(), p.proxy)
        .unwrap();
    let (fwd, _) = recv(&srv);
    srv.send_to(response(&fwd, 200, "OK").as_bytes(), p.proxy)
        .unwrap();
    assert_eq!(status(&recv(&client).0), 200);
    srv.send_to(message_for_carol("m3").as_bytes(), p.proxy)
        .unwrap();
    assert_eq!(status(&recv(&srv).0), 404, "carol unregistered");

    // 5. Over TCP: bound to the connection, gone with it.
    let mut tcp = Stream::connect(p.proxy);
    let local = tcp.local();
    let reg = request("REGISTER", &ruri, "TCP", local, "r4", "Expires: 60\r\n", "")
        .replace("Contact: <sip:alice@", "Contact: <sip:dave@");
    tcp.send(&reg);
    let (fwd, _) = recv(&srv);
    srv.send_to(response(&fwd, 200, "OK").as_bytes(), p.proxy)
        .unwrap();
    assert_eq!(status(&tcp.read(Duration::from_secs(5))), 200);
    let for_dave = request(
        "MESSAGE",
        &format!("sip:dave@{}", p.proxy),
        "UDP",
        p.uas,
        "m4",
        "",
        "hi",
    );
    srv.send_to(for_dave.as_bytes(), p.proxy).unwrap();
    let delivered = tcp.read(Duration::from_secs(5));
    assert!(delivered.starts_with("MESSAGE sip:dave@"), "{delivered}");
    drop(tcp);
    std::thread::sleep(Duration::from_millis(300));
    srv.send_to(
        for_dave.replace("z9hG4bKm4", "z9hG4bKm5").as_bytes(),
        p.proxy,
    )
    .unwrap();
    let (gone, _) = recv(&srv);
    // the binding outlives its connection (30 s), so the server hears 480, not 404
    assert_eq!(status(&gone), 480, "{gone}");
}

/// SIGTERM: new transactions get 503, the one in flight finishes, then exit 0.
#[test]
fn sigterm_drains_transactions_in_flight_then_exits_0() {
    let p = Peers::new();
    let server = format!("{}::{}:udp:", p.uas.ip(), p.uas.port());
    let mut rb = roundabout(&p, &["-trusted-server", &server]);
    let srv = udp(p.uas);
    let client = udp(p.uac);
    let ruri = format!("sip:bob@{}", p.uas);
    client
        .send_to(
            request("MESSAGE", &ruri, "UDP", p.uac, "d1", "", "first").as_bytes(),
            p.proxy,
        )
        .unwrap();
    let (fwd, _) = recv(&srv);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &rb.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(300));
    client
        .send_to(
            request("MESSAGE", &ruri, "UDP", p.uac, "d2", "", "second").as_bytes(),
            p.proxy,
        )
        .unwrap();
    let (refused, _) = recv(&client);
    assert_eq!(status(&refused), 503, "{refused}");
    srv.send_to(response(&fwd, 200, "OK").as_bytes(), p.proxy)
        .unwrap();
    let (ok, _) = recv(&client);
    assert_eq!(
        status(&ok),
        200,
        "the transaction in flight must finish: {ok}"
    );
    let exit = rb
        .wait_timeout(Duration::from_secs(8))
        .expect("roundabout did not exit after SIGTERM");
    assert_eq!(exit.code(), Some(0), "{}", rb.report());
}
