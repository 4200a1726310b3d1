//! End-to-end tests of what Roundabout does at its edges (issue 11, part 2), with the real
//! `roundabout` binary and peers on raw sockets (`tests/transport_peers`), on the loopback
//! addresses of `tests/common` (Roundabout 127.0.0.1, client 127.0.0.2, server 127.0.0.3):
//!
//! - a listener that is off (`-tls-port 0` while a trusted server is reached over TLS) is
//!   never named in Via, Record-Route or Contact, and what is named there brings the
//!   server's in-dialog requests back through Roundabout;
//! - with `-bind-ip ::` IPv4 peers are IPv4 everywhere: trusted servers are exempt from
//!   flood protection, `-trusted-client-ip` networks match, `received=` and STUN's mapped
//!   address are dotted IPv4, and answers and outbound TCP reach IPv4 peers;
//! - STUN Binding requests on the UDP port are answered, and are neither flood nor
//!   unparseable SIP.
//!
//! Every read has a timeout (`transport_peers::IO_TIMEOUT`); nothing is skipped.

mod common;
mod transport_peers;

use common::{Peers, Proc, Transport, PROXY_IP, UAC_IP, UAS_IP};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use transport_peers::*;

/// A client outside `-trusted-client-ip`.
const STRANGER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// A second trusted server, reached over TCP.
const TCP_SERVER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

/// Roundabout's ports with only UDP and TCP on (TLS, WS and WSS off).
fn udp_tcp_only(peers: &Peers) -> ProxyPorts {
    ProxyPorts {
        ip: PROXY_IP.into(),
        udp_tcp: peers.proxy.port(),
        tls: 0,
        ws: 0,
        wss: 0,
    }
}

/// Starts Roundabout with [`ProxyPorts::flags`] and `extra`, and waits for UDP and TCP.
fn start(peers: &Peers, proxy: &ProxyPorts, extra: &[&str]) -> Proc {
    let mut args = proxy.flags();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let at = proxy.addr(Kind::Udp);
    peers.roundabout(&args, &[(at, Transport::Udp), (at, Transport::Tcp)])
}

fn write_file(peers: &Peers, name: &str, text: &str) -> String {
    let path = peers.dir().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The Via of a request a test peer sends on `link` (`sent_by` may differ from its address,
/// as behind a NAT, so that Roundabout adds `received=`).
fn via(link: &Link, sent_by: &str, branch: &str) -> String {
    format!(
        "SIP/2.0/{} {sent_by};branch=z9hG4bK{branch};rport",
        link.kind.via()
    )
}

/// An OPTIONS to Roundabout itself (answered 200 by Roundabout) from `local`.
fn options_to_roundabout(local: SocketAddr, proxy: SocketAddr, n: usize) -> String {
    Request {
        method: "OPTIONS",
        uri: &format!("sip:{proxy}"),
        via: format!("SIP/2.0/UDP {local};branch=z9hG4bKopt{n};rport"),
        from: format!("<sip:probe@{}>;tag=o{n}", local.ip()),
        to: format!("<sip:{proxy}>"),
        call_id: &format!("opt-{n}-{}@{}", local.port(), local.ip()),
        cseq: 1,
        headers: vec![],
        body: "",
    }
    .render()
}

/// Sends `count` OPTIONS to Roundabout from a new UDP socket on `ip`, while reading the
/// answers, and returns how many were answered 200 (answers stop coming for 1.5 s).
async fn options_answered(ip: Ipv4Addr, proxy: SocketAddr, count: usize) -> usize {
    let udp = std::sync::Arc::new(UdpSocket::bind((ip, 0)).await.unwrap());
    let local = udp.local_addr().unwrap();
    let reader = {
        let udp = udp.clone();
        tokio::spawn(async move {
            let mut ok = std::collections::HashSet::new();
            let mut buf = vec![0u8; 65536];
            while let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(1500), udp.recv_from(&mut buf)).await
            {
                let m = Msg::parse(&buf[..n]);
                if m.status() == Some(200) {
                    ok.insert(m.get("Call-ID"));
                }
            }
            ok.len()
        })
    };
    for n in 0..count {
        let m = options_to_roundabout(local, proxy, n);
        udp.send_to(m.as_bytes(), proxy).await.unwrap();
    }
    reader.await.unwrap()
}

/// Rule 1: `-tls-port 0` with a trusted TLS server. Roundabout connects to it over TLS; its
/// Via names TLS with a port it listens on, and its Record-Route and Contact name its TCP
/// listener (never 5061 nor port 0). The server, doing what those say, opens a plain TCP
/// connection for its BYE: Roundabout takes both Route entries as its own and relays the
/// BYE to the caller, and the 200 back to the server.
#[tokio::test]
async fn a_listener_that_is_off_is_never_named() {
    let peers = Peers::new();
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["127.0.0.3"]);
    let mut srv = Server::listen(Kind::Tls, peers.uas, Some((&cert, &key))).await;
    let proxy = udp_tcp_only(&peers);
    let port = proxy.udp_tcp;
    let ca_file = write_file(&peers, "ca.pem", &ca.pem);
    let dataset = format!("{}::{}:tls:", UAS_IP, peers.uas.port());
    let mut roundabout = start(
        &peers,
        &proxy,
        &[
            "-strict-host",
            "-trusted-server",
            &dataset,
            "-tls-ca",
            &ca_file,
        ],
    );
    if let Err(e) = roundabout.wait_for_output("the tls listener is off (-tls-port 0)", IO_TIMEOUT)
    {
        panic!("no start-up warning: {e}\n{}", roundabout.report());
    }

    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let client_contact = format!("sip:alice@{}", c.local);
    let from = "<sip:alice@127.0.0.2>;tag=a1".to_string();
    let call_id = "off-listener@test";
    let invite = Request {
        method: "INVITE",
        uri: "sip:bob@127.0.0.3",
        via: via(&c, &c.local.to_string(), "inv1"),
        from: from.clone(),
        to: "<sip:bob@127.0.0.3>".into(),
        call_id,
        cseq: 1,
        headers: vec![format!("Contact: <{client_contact}>")],
        body: "",
    };
    c.send(&invite.render()).await;

    let mut s = srv.link().await;
    let inv = s.recv_request("INVITE").await;
    // Via: the transport used (TLS), the port of a listener that is on.
    let top_via = &inv.all("Via")[0];
    assert!(
        top_via.starts_with(&format!("SIP/2.0/TLS 127.0.0.1:{port};branch=")),
        "{inv}"
    );
    // Record-Route: the TLS side names TCP, the caller's side UDP, both on `port`.
    let rr = inv.all("Record-Route");
    assert_eq!(
        rr,
        vec![
            format!("<sip:127.0.0.1:{port};transport=tcp;lr>"),
            format!("<sip:127.0.0.1:{port};lr>"),
        ],
        "{inv}"
    );
    // Contact: Roundabout's TCP listener, with the token that leads back to the caller.
    let contact = uri_of(&inv.get("Contact"));
    assert!(
        contact.starts_with(&format!("sip:alice@127.0.0.1:{port};transport=tcp;rbt=")),
        "{inv}"
    );
    for written in rr.iter().chain([top_via, &contact]) {
        assert!(
            !written.contains(":5061") && !written.contains(":0;") && !written.contains("=tls"),
            "{written}"
        );
    }
    let server_contact = format!("sip:bob@{};transport=tls", peers.uas);
    s.send(&response(
        &inv,
        200,
        "OK",
        "b1",
        &[format!("Contact: <{server_contact}>")],
    ))
    .await;
    let ok = c.recv_final().await;
    assert_eq!(ok.status(), Some(200), "{ok}");
    let ack = Request {
        method: "ACK",
        uri: &uri_of(&ok.get("Contact")),
        via: via(&c, &c.local.to_string(), "ack1"),
        from: from.clone(),
        to: ok.get("To"),
        call_id,
        cseq: 1,
        headers: ok.route_set(),
        body: "",
    };
    c.send(&ack.render()).await;
    let ack = s.recv_request("ACK").await;
    assert_eq!(ack.request_uri(), server_contact, "{ack}");

    // The server's BYE, sent the way its route set says: a new TCP connection to the top
    // Record-Route entry, both entries as Route, Roundabout's Contact as Request-URI.
    let mut bye_link = Link::connect(Kind::Tcp, UAS_IP.into(), &proxy).await;
    let bye = Request {
        method: "BYE",
        uri: &contact,
        via: via(&bye_link, &bye_link.local.to_string(), "bye1"),
        from: format!("{};tag=b1", inv.get("To")),
        to: from.clone(),
        call_id,
        cseq: 1,
        headers: rr.iter().map(|r| format!("Route: {r}")).collect(),
        body: "",
    };
    bye_link.send(&bye.render()).await;
    let got = c.recv_request("BYE").await;
    assert_eq!(got.request_uri(), client_contact, "{got}");
    assert!(
        got.all("Route").is_empty(),
        "Roundabout's routes are consumed:\n{got}"
    );
    c.send(&response(&got, 200, "OK", "a1", &[])).await;
    let bye_ok = bye_link.recv_final().await;
    assert_eq!(bye_ok.status(), Some(200), "{bye_ok}");
    assert_eq!(bye_ok.get("CSeq"), "1 BYE");
}

/// Rule 2: `-bind-ip ::` (dual stack). IPv4 peers arrive as `::ffff:a.b.c.d` and must be
/// treated as the IPv4 addresses they are.
#[tokio::test]
async fn with_bind_ip_any_ipv4_peers_stay_ipv4() {
    let peers = Peers::new();
    let mut udp_server = Server::listen(Kind::Udp, peers.uas, None).await;
    let tcp_server_addr = SocketAddr::new(TCP_SERVER_IP.into(), peers.port());
    let mut tcp_server = Server::listen(Kind::Tcp, tcp_server_addr, None).await;
    let proxy = udp_tcp_only(&peers);
    let to = proxy.addr(Kind::Udp);
    let servers = format!(
        "{}::{}:udp:,{}::{}:tcp:",
        UAS_IP,
        peers.uas.port(),
        TCP_SERVER_IP,
        tcp_server_addr.port()
    );
    let mut roundabout = start(
        &peers,
        &proxy,
        &[
            "-bind-ip",
            "::",
            "-strict-host",
            "-strict-client",
            "-trusted-client-ip",
            "127.0.0.2/32",
            "-pike-limit",
            "10",
            "-trusted-server",
            &servers,
        ],
    );
    if let Err(e) = roundabout.wait_for_output(&format!("[::]:{}", proxy.udp_tcp), IO_TIMEOUT) {
        panic!(
            "not listening on the IPv6 wildcard: {e}\n{}",
            roundabout.report()
        );
    }

    // A REGISTER over UDP from the trusted client network: accepted (the network matches),
    // `received=` is dotted IPv4, and the 200 reaches the client (a datagram to an IPv4
    // address on the IPv6 socket).
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let register = |link: &Link, branch: &str| {
        Request {
            method: "REGISTER",
            uri: "sip:127.0.0.3",
            via: via(link, "192.0.2.77:5060", branch),
            from: "<sip:alice@127.0.0.3>;tag=r".into(),
            to: "<sip:alice@127.0.0.3>".into(),
            call_id: &format!("reg-{branch}@test"),
            cseq: 1,
            headers: vec!["Contact: <sip:alice@192.0.2.77:5060>;expires=60".into()],
            body: "",
        }
        .render()
    };
    c.send(&register(&c, "reg1")).await;
    let mut s = udp_server.link().await;
    let reg = s.recv_request("REGISTER").await;
    let client_via = &reg.all("Via")[1];
    assert!(
        client_via.ends_with(&format!(";rport={};received=127.0.0.2", c.local.port())),
        "{reg}"
    );
    assert!(!reg.to_string().contains("ffff"), "{reg}");
    s.send(&response(
        &reg,
        200,
        "OK",
        "r1",
        &[format!(
            "Contact: <{}>;expires=60",
            uri_of(&reg.get("Contact"))
        )],
    ))
    .await;
    assert_eq!(c.recv_final().await.status(), Some(200));

    // From outside the network: 403.
    let mut stranger = Link::connect(Kind::Udp, STRANGER_IP.into(), &proxy).await;
    stranger.send(&register(&stranger, "reg2")).await;
    assert_eq!(stranger.recv_final().await.status(), Some(403));

    // Over TCP, to a trusted server reached over TCP: the outbound connection to an IPv4
    // address is made from the dual-stack proxy, and `received=` is IPv4 there too.
    let mut t = Link::connect(Kind::Tcp, UAC_IP.into(), &proxy).await;
    let message = Request {
        method: "MESSAGE",
        uri: &format!("sip:bob@{TCP_SERVER_IP}"),
        via: via(&t, "192.0.2.77:5060", "msg1"),
        from: "<sip:alice@127.0.0.2>;tag=m".into(),
        to: format!("<sip:bob@{TCP_SERVER_IP}>"),
        call_id: "msg-dual-stack@test",
        cseq: 1,
        headers: vec![],
        body: "",
    };
    t.send(&message.render()).await;
    let mut ts = tcp_server.link().await;
    let msg = ts.recv_request("MESSAGE").await;
    assert!(
        msg.all("Via")[1].ends_with(&format!(";rport={};received=127.0.0.2", t.local.port())),
        "{msg}"
    );
    ts.send(&response(&msg, 202, "Accepted", "m1", &[])).await;
    assert_eq!(t.recv_final().await.status(), Some(202));

    // STUN's mapped address of an IPv4 client is IPv4.
    let stun_client = UdpSocket::bind((UAC_IP, 0)).await.unwrap();
    let (kind, mapped, _) = stun_exchange(&stun_client, to, &binding_request(7, false)).await;
    assert_eq!(kind, 0x0101);
    assert_eq!(mapped, stun_client.local_addr().unwrap());

    // Flood protection (-pike-limit 10): the trusted server's address is exempt, so all of
    // its 30 requests are answered; a client's are cut after 10, counted under its IPv4
    // address.
    assert_eq!(options_answered(UAS_IP, to, 30).await, 30, "trusted server");
    let client_answered = options_answered(UAC_IP, to, 30).await;
    assert!(
        (1..=10).contains(&client_answered),
        "client answered {client_answered}:\n{}",
        roundabout.report()
    );
    let log = roundabout.output();
    assert!(
        log.contains("flood from 127.0.0.2:"),
        "{}",
        roundabout.report()
    );
    assert!(!log.contains("ffff"), "{}", roundabout.report());
}

/// A Binding request (RFC 5389) with a transaction id made of `n`, FINGERPRINT if asked.
fn binding_request(n: u32, fingerprint: bool) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(&[0xA5; 8]);
    m.extend_from_slice(&n.to_be_bytes());
    if fingerprint {
        m[3] = 8;
        let fp = crc32(&m) ^ 0x5354_554E;
        m.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
        m.extend_from_slice(&fp.to_be_bytes());
    }
    m
}

/// CRC-32 (IEEE), bit by bit: the test's own, independent of Roundabout's table.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A STUN response read apart: type, XOR-MAPPED-ADDRESS, and whether a FINGERPRINT came
/// (checked). Panics with what is wrong.
fn read_stun(response: &[u8], transaction: &[u8]) -> (u16, SocketAddr, bool) {
    assert!(response.len() >= 20, "{response:02x?}");
    let kind = u16::from_be_bytes([response[0], response[1]]);
    let length = usize::from(u16::from_be_bytes([response[2], response[3]]));
    assert_eq!(length, response.len() - 20, "{response:02x?}");
    assert_eq!(&response[4..8], &[0x21, 0x12, 0xA4, 0x42]);
    assert_eq!(&response[8..20], transaction, "same transaction id");
    let (mut mapped, mut fingerprint) = (None, false);
    let mut at = 20;
    while at < response.len() {
        let t = u16::from_be_bytes([response[at], response[at + 1]]);
        let len = usize::from(u16::from_be_bytes([response[at + 2], response[at + 3]]));
        let v = &response[at + 4..at + 4 + len];
        match t {
            0x0020 => {
                let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
                assert_eq!(v[1], 1, "IPv4 family: {v:02x?}");
                let ip: Vec<u8> = v[4..8]
                    .iter()
                    .zip([0x21, 0x12, 0xA4, 0x42])
                    .map(|(a, b)| a ^ b)
                    .collect();
                let ip = Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
                mapped = Some(SocketAddr::new(IpAddr::V4(ip), port));
            }
            0x8028 => {
                let want = crc32(&response[..at]) ^ 0x5354_554E;
                assert_eq!(v, want.to_be_bytes(), "FINGERPRINT");
                assert_eq!(at + 8, response.len(), "FINGERPRINT is last");
                fingerprint = true;
            }
            _ => {}
        }
        at += 4 + len.next_multiple_of(4);
    }
    (kind, mapped.expect("XOR-MAPPED-ADDRESS"), fingerprint)
}

/// Sends one STUN message and reads the answer (within [`IO_TIMEOUT`]).
async fn stun_exchange(
    socket: &UdpSocket,
    to: SocketAddr,
    request: &[u8],
) -> (u16, SocketAddr, bool) {
    socket.send_to(request, to).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = tokio::time::timeout(IO_TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("a STUN answer in time")
        .unwrap();
    assert_eq!(from, to, "the answer comes from the SIP port");
    read_stun(&buf[..n], &request[8..20])
}

/// Rule 3: STUN keep-alives on the UDP port get Binding success responses, in bulk beyond
/// the flood limit, and the client's SIP is served afterwards; nothing is logged as
/// unparseable or flood.
#[tokio::test]
async fn stun_keepalives_are_answered_and_never_flood() {
    let peers = Peers::new();
    let proxy = udp_tcp_only(&peers);
    let to = proxy.addr(Kind::Udp);
    let roundabout = start(&peers, &proxy, &["-pike-limit", "50"]);
    let client = std::sync::Arc::new(UdpSocket::bind((UAC_IP, 0)).await.unwrap());
    let local = client.local_addr().unwrap();

    // One without, one with FINGERPRINT.
    let (kind, mapped, fp) = stun_exchange(&client, to, &binding_request(1, false)).await;
    assert_eq!((kind, mapped, fp), (0x0101, local, false));
    let (kind, mapped, fp) = stun_exchange(&client, to, &binding_request(2, true)).await;
    assert_eq!((kind, mapped, fp), (0x0101, local, true));

    // 200 in about a second (the flood limit is 50 per 2 s), every one answered.
    let reader = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut seen = std::collections::HashSet::new();
            let mut buf = [0u8; 1500];
            while let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(1500), client.recv_from(&mut buf)).await
            {
                let tx = buf[8..20].to_vec();
                let (kind, mapped, _) = read_stun(&buf[..n], &tx);
                assert_eq!((kind, mapped), (0x0101, local));
                seen.insert(tx);
            }
            seen.len()
        })
    };
    for i in 0..200u32 {
        let req = binding_request(1000 + i, i % 2 == 0);
        client.send_to(&req, to).await.unwrap();
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(reader.await.unwrap(), 200, "{}", roundabout.report());

    // The client's SIP is still served.
    let options = options_to_roundabout(local, to, 1);
    client.send_to(options.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(IO_TIMEOUT, client.recv_from(&mut buf))
        .await
        .expect("an answer to OPTIONS in time")
        .unwrap();
    let answer = Msg::parse(&buf[..n]);
    assert_eq!(answer.status(), Some(200), "{answer}");

    // An indication (an ICE keep-alive) and a broken message get no answer and no noise.
    let mut indication = binding_request(3, false);
    indication[1] = 0x11;
    let mut broken = binding_request(4, true);
    broken[27] ^= 0xff;
    for m in [&indication, &broken] {
        client.send_to(m, to).await.unwrap();
    }
    let quiet = tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf)).await;
    assert!(quiet.is_err(), "no answer expected: {quiet:?}");

    let log = roundabout.output();
    for noise in ["unparseable", "flood from"] {
        assert!(!log.contains(noise), "{noise}:\n{}", roundabout.report());
    }
}
