//! End-to-end transport tests: the real `roundabout` binary between small SIP peers written
//! on plain sockets (`tests/transport_peers`), on the loopback addresses of `tests/common`
//! (Roundabout 127.0.0.1, client 127.0.0.2, server 127.0.0.3).
//!
//! - every pairing of client side {UDP, TCP, TLS, WS, WSS} with server side {UDP, TCP, TLS,
//!   WSS} carries a call (INVITE, 200, ACK, BYE, 200), each message checked on arrival;
//! - a REGISTER over WSS, then calls from the server to that client, before and after its
//!   connection is gone;
//! - the WebSocket handshake rules, keep-alives, idle connections, and the certificate
//!   options (outbound verification, explicit chains, exit 2 on bad files).
//!
//! Every read has a timeout (`transport_peers::IO_TIMEOUT`); nothing is skipped.

mod common;
mod transport_peers;

use common::{Peers, Proc, UAC_IP};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport_peers::*;

/// Host a browser client writes into its Via and Contact (JsSIP style).
const INVALID_HOST: &str = "df7jal23ls0d.invalid";

/// Roundabout with all five listeners of `proxy` and `extra` flags.
fn start_roundabout(peers: &Peers, proxy: &ProxyPorts, extra: &[String]) -> Proc {
    proxy.start_roundabout(peers, extra, None)
}

/// Flags for one trusted server (`-strict-host`, so nothing else is reachable).
fn trusted(server: SocketAddr, fqdn: &str, kind: Kind) -> Vec<String> {
    vec![
        "-strict-host".into(),
        "-trusted-server".into(),
        format!("{}:{fqdn}:{}:{}:", server.ip(), server.port(), kind.name()),
    ]
}

fn write_file(peers: &Peers, name: &str, text: &str) -> String {
    let path = peers.dir().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A Via for a request a test client sends on `link`.
fn client_via(link: &Link, branch: &str) -> String {
    let host = if link.kind.is_ws() {
        INVALID_HOST.to_string()
    } else {
        link.local.to_string()
    };
    format!(
        "SIP/2.0/{} {host};branch=z9hG4bK{branch};rport",
        link.kind.via()
    )
}

fn client_contact(link: &Link, user: &str) -> String {
    let host = if link.kind.is_ws() {
        INVALID_HOST.to_string()
    } else {
        link.local.to_string()
    };
    format!("<sip:{user}@{host}{}>", link.kind.uri_param())
}

fn branch_of(via: &str) -> String {
    param(via, "branch").unwrap_or_else(|| panic!("no branch in {via}"))
}

/// A plain INVITE from alice (the client on `c`) to bob at the server.
fn invite_bob(c: &Link, branch: &str, call_id: &str) -> String {
    Request {
        method: "INVITE",
        uri: "sip:bob@127.0.0.3",
        via: client_via(c, branch),
        from: "<sip:alice@127.0.0.2>;tag=a".into(),
        to: "<sip:bob@127.0.0.3>".into(),
        call_id,
        cseq: 1,
        headers: vec![format!("Contact: {}", client_contact(c, "alice"))],
        body: "",
    }
    .render()
}

/// The message arrived from Roundabout on `kind`: its Via is on top, then `below` more.
fn assert_roundabout_via(m: &Msg, kind: Kind, proxy: &ProxyPorts, below: usize) {
    let vias = m.all("Via");
    let ours = format!(
        "SIP/2.0/{} {}:{};branch=",
        kind.via(),
        proxy.ip,
        proxy.port(kind)
    );
    assert!(
        vias[0].starts_with(&ours),
        "top Via should start with {ours:?}:\n{m}"
    );
    assert_eq!(vias.len(), below + 1, "Via count:\n{m}");
}

/// The response reached the client with exactly the one Via it sent.
/// The registrar's side: 200 to `reg`, binding `contact` for 600 s.
async fn accept_registration(server: &mut Link, reg: &Msg, contact: &str) {
    let bound = format!("Contact: <{contact}>;expires=600");
    server
        .send(&response(reg, 200, "OK", "reg", &[bound]))
        .await;
}

fn assert_client_vias(m: &Msg, sent_branch: &str) {
    let vias = m.all("Via");
    assert_eq!(vias.len(), 1, "the client must get only its own Via:\n{m}");
    assert_eq!(branch_of(&vias[0]), sent_branch, "{m}");
}

/// A Record-Route entry of Roundabout for `kind`.
fn assert_record_route(rr: &str, kind: Kind, proxy: &ProxyPorts) {
    let uri = uri_of(rr);
    assert!(
        uri.starts_with(&format!("sip:{}:{}", proxy.ip, proxy.port(kind))),
        "{rr} for {kind:?}"
    );
    assert!(uri.contains(";lr"), "{rr}");
    match kind.uri_param() {
        "" => assert!(!uri.contains("transport="), "{rr} for UDP"),
        p => assert!(uri.contains(p), "{rr} should carry {p}"),
    }
}

/// A call from a client on `client` to a server on `server`, through Roundabout.
async fn call(client: Kind, server: Kind) {
    let peers = Peers::new();
    let ca = TestCa::new();
    let ca_file = write_file(&peers, "ca.pem", &ca.pem);
    let (cert, key) = ca.issue(&["127.0.0.3", "pbx.test"]);
    let tls = matches!(server, Kind::Tls | Kind::Wss);
    let mut srv = Server::listen(
        server,
        peers.uas,
        tls.then_some((cert.as_str(), key.as_str())),
    )
    .await;
    let proxy = ProxyPorts::new(&peers);
    let mut flags = trusted(peers.uas, "", server);
    flags.extend(["-tls-ca".to_string(), ca_file]);
    let _roundabout = start_roundabout(&peers, &proxy, &flags);

    let mut c = Link::connect(client, UAC_IP.into(), &proxy).await;
    let from = "<sip:alice@127.0.0.2>;tag=alice1".to_string();

    // First a REGISTER: the server sees Roundabout's Contact on its own transport, the
    // client gets its own Contact back with the granted expiry, and only its own Via.
    let own_contact = client_contact(&c, "alice");
    let register = Request {
        method: "REGISTER",
        uri: "sip:127.0.0.3",
        via: client_via(&c, "reg1"),
        from: "<sip:alice@127.0.0.3>;tag=reg".into(),
        to: "<sip:alice@127.0.0.3>".into(),
        call_id: &format!("reg-{client:?}-{server:?}@test"),
        cseq: 1,
        headers: vec![format!("Contact: {own_contact};expires=120")],
        body: "",
    };
    c.send(&register.render()).await;
    let mut s = srv.link().await;
    let reg = s.recv_request("REGISTER").await;
    assert_roundabout_via(&reg, server, &proxy, 1);
    let registered = uri_of(&reg.get("Contact"));
    // Roundabout's address on the server's side, and the token of this very client.
    let (ours, client_token) = registered
        .split_once(";rbc=")
        .unwrap_or_else(|| panic!("no client token in the REGISTER Contact:\n{reg}"));
    assert_eq!(
        ours,
        format!(
            "sip:alice@{}:{}{}",
            proxy.ip,
            proxy.port(server),
            server.uri_param()
        ),
        "REGISTER Contact for the server side:\n{reg}"
    );
    assert!(
        client_token.len() == 16 && client_token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{registered}"
    );
    s.send(&response(
        &reg,
        200,
        "OK",
        "reg1",
        &[format!("Contact: <{registered}>;expires=60")],
    ))
    .await;
    let reg_ok = c.recv_final().await;
    assert_eq!(reg_ok.status(), Some(200), "{reg_ok}");
    assert_client_vias(&reg_ok, "z9hG4bKreg1");
    assert_eq!(
        reg_ok.get("Contact"),
        format!("{own_contact};expires=60"),
        "{reg_ok}"
    );

    let call_id = format!("call-{client:?}-{server:?}@test");
    let sdp = big_sdp();
    let invite = Request {
        method: "INVITE",
        uri: "sip:bob@127.0.0.3",
        via: client_via(&c, "inv1"),
        from: from.clone(),
        to: "<sip:bob@127.0.0.3>".into(),
        call_id: &call_id,
        cseq: 1,
        headers: vec![format!("Contact: {}", client_contact(&c, "alice"))],
        body: &sdp,
    };
    c.send(&invite.render()).await;

    // The server side: the INVITE, on the server's transport, with Roundabout's Via on top.
    let inv = s.recv_request("INVITE").await;
    assert_roundabout_via(&inv, server, &proxy, 1);
    assert_eq!(branch_of(&inv.all("Via")[1]), "z9hG4bKinv1", "{inv}");
    assert_eq!(inv.body, sdp.as_bytes(), "the SDP must arrive intact");
    assert_eq!(inv.get("Max-Forwards"), "69");
    let rr = inv.all("Record-Route");
    assert_eq!(
        rr.len(),
        if client == server { 1 } else { 2 },
        "Record-Route entries:\n{inv}"
    );
    assert_record_route(&rr[0], server, &proxy);
    assert_record_route(rr.last().unwrap(), client, &proxy);
    let contact = uri_of(&inv.get("Contact"));
    assert!(
        contact.starts_with(&format!("sip:alice@{}:{}", proxy.ip, proxy.port(server))),
        "Contact for the server side: {contact}"
    );

    let server_contact = format!("sip:bob@{}{}", peers.uas, server.uri_param());
    s.send(&response(
        &inv,
        200,
        "OK",
        "bob1",
        &[format!("Contact: <{server_contact}>")],
    ))
    .await;

    // The client side: the 200 with only its own Via, and Roundabout's Contact.
    let ok = c.recv_final().await;
    assert_eq!(ok.status(), Some(200), "{ok}");
    assert_client_vias(&ok, "z9hG4bKinv1");
    assert_eq!(ok.all("Record-Route").len(), rr.len(), "{ok}");
    let target = uri_of(&ok.get("Contact"));
    assert!(
        target.starts_with(&format!("sip:bob@{}:{}", proxy.ip, proxy.port(client))),
        "Contact for the client side: {target}"
    );

    // ACK and BYE follow the route set to the server.
    let routes = ok.route_set();
    let in_dialog = |method, cseq, branch: &str, c: &Link| Request {
        method,
        uri: &target,
        via: client_via(c, branch),
        from: from.clone(),
        to: ok.get("To"),
        call_id: &call_id,
        cseq,
        headers: routes.clone(),
        body: "",
    };
    c.send(&in_dialog("ACK", 1, "ack1", &c).render()).await;
    let ack = s.recv_request("ACK").await;
    assert_roundabout_via(&ack, server, &proxy, 1);
    assert_eq!(
        ack.request_uri(),
        server_contact,
        "the server's own Contact is restored:\n{ack}"
    );
    assert!(
        ack.all("Route").is_empty(),
        "Roundabout's routes are consumed:\n{ack}"
    );

    c.send(&in_dialog("BYE", 2, "bye1", &c).render()).await;
    let bye = s.recv_request("BYE").await;
    assert_roundabout_via(&bye, server, &proxy, 1);
    assert_eq!(bye.request_uri(), server_contact);
    s.send(&response(&bye, 200, "OK", "bob1", &[])).await;
    let bye_ok = c.recv_final().await;
    assert_eq!(bye_ok.status(), Some(200), "{bye_ok}");
    assert_eq!(bye_ok.get("CSeq"), "2 BYE");
    assert_client_vias(&bye_ok, "z9hG4bKbye1");
}

macro_rules! pairings {
    ($($name:ident: $client:ident -> $server:ident,)*) => {$(
        #[tokio::test]
        async fn $name() {
            call(Kind::$client, Kind::$server).await;
        }
    )*};
}

pairings! {
    call_udp_to_udp: Udp -> Udp,
    call_udp_to_tcp: Udp -> Tcp,
    call_udp_to_tls: Udp -> Tls,
    call_udp_to_wss: Udp -> Wss,
    call_tcp_to_udp: Tcp -> Udp,
    call_tcp_to_tcp: Tcp -> Tcp,
    call_tcp_to_tls: Tcp -> Tls,
    call_tcp_to_wss: Tcp -> Wss,
    call_tls_to_udp: Tls -> Udp,
    call_tls_to_tcp: Tls -> Tcp,
    call_tls_to_tls: Tls -> Tls,
    call_tls_to_wss: Tls -> Wss,
    call_ws_to_udp: Ws -> Udp,
    call_ws_to_tcp: Ws -> Tcp,
    call_ws_to_tls: Ws -> Tls,
    call_ws_to_wss: Ws -> Wss,
    call_wss_to_udp: Wss -> Udp,
    call_wss_to_tcp: Wss -> Tcp,
    call_wss_to_tls: Wss -> Tls,
    call_wss_to_wss: Wss -> Wss,
}

/// A browser-like client registers over WSS with a UDP registrar, is called over its own
/// connection, and once that connection is gone a call for it gets 480, then 404.
#[tokio::test]
async fn wss_client_registers_and_is_reached_over_its_connection() {
    let peers = Peers::new();
    let mut registrar = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ProxyPorts::new(&peers);
    let _roundabout = start_roundabout(&peers, &proxy, &trusted(peers.uas, "", Kind::Udp));

    let mut c = Link::connect(Kind::Wss, UAC_IP.into(), &proxy).await;
    let contact = format!(
        "<sip:k3j2l1@{INVALID_HOST};transport=ws>;+sip.ice;reg-id=1;\
         +sip.instance=\"<urn:uuid:0e5e4f5c-1d3a-4b6a-9d7e-2f1f3c1e2a10>\";expires=600"
    );
    let register = Request {
        method: "REGISTER",
        uri: "sip:127.0.0.3",
        via: client_via(&c, "reg1"),
        from: "<sip:alice@127.0.0.3>;tag=r1".into(),
        to: "<sip:alice@127.0.0.3>".into(),
        call_id: "reg-alice@test",
        cseq: 1,
        headers: vec![format!("Contact: {contact}"), "Expires: 600".into()],
        body: "",
    };
    c.send(&register.render()).await;

    let mut s = registrar.link().await;
    let reg = s.recv_request("REGISTER").await;
    assert_roundabout_via(&reg, Kind::Udp, &proxy, 1);
    let bound = uri_of(&reg.get("Contact"));
    assert!(
        bound.starts_with(&format!("sip:k3j2l1@{}:{};rbc=", proxy.ip, proxy.udp_tcp)),
        "Contact towards the registrar (Roundabout's, with the client's token):\n{reg}"
    );
    accept_registration(&mut s, &reg, &bound).await;

    let ok = c.recv_final().await;
    assert_eq!(ok.status(), Some(200), "{ok}");
    assert_client_vias(&ok, "z9hG4bKreg1");
    let back = ok.get("Contact");
    for part in [
        format!("<sip:k3j2l1@{INVALID_HOST};transport=ws>"),
        "reg-id=1".into(),
        "+sip.instance=\"<urn:uuid:0e5e4f5c-1d3a-4b6a-9d7e-2f1f3c1e2a10>\"".into(),
        "expires=600".into(),
    ] {
        assert!(
            back.contains(&part),
            "the client's own Contact must come back with {part}: {back}"
        );
    }

    // The server calls the client: the INVITE goes down the client's WSS connection.
    let server_invite = |n: u32, call_id| {
        Request {
            method: "INVITE",
            uri: &bound,
            via: format!("SIP/2.0/UDP {};branch=z9hG4bKsrv{n};rport", peers.uas),
            from: format!("<sip:bob@127.0.0.3>;tag=b{n}"),
            to: "<sip:alice@127.0.0.3>".into(),
            call_id,
            cseq: 1,
            headers: vec![format!("Contact: <sip:bob@{}>", peers.uas)],
            body: "",
        }
        .render()
    };
    s.send(&server_invite(1, "in-1@test")).await;
    let inv = c.recv_request("INVITE").await;
    assert_eq!(
        inv.request_uri(),
        format!("sip:k3j2l1@{INVALID_HOST};transport=ws"),
        "{inv}"
    );
    assert_roundabout_via(&inv, Kind::Wss, &proxy, 1);
    c.send(&response(
        &inv,
        200,
        "OK",
        "a1",
        &[format!("Contact: {}", client_contact(&c, "k3j2l1"))],
    ))
    .await;
    let answered = s.recv_final().await;
    assert_eq!(answered.status(), Some(200), "{answered}");
    assert_eq!(answered.all("Via").len(), 1, "{answered}");
    // The server ACKs the 2xx; without it Roundabout, whose next hop (the WSS client) never
    // retransmits, would retransmit the 200 to this UDP caller until 64*T1.
    let client_target = uri_of(&answered.get("Contact"));
    let ack = Request {
        method: "ACK",
        uri: &client_target,
        via: format!("SIP/2.0/UDP {};branch=z9hG4bKsrvack1;rport", peers.uas),
        from: "<sip:bob@127.0.0.3>;tag=b1".into(),
        to: answered.get("To"),
        call_id: "in-1@test",
        cseq: 1,
        headers: answered.route_set(),
        body: "",
    };
    s.send(&ack.render()).await;
    let acked = c.recv_request("ACK").await;
    assert_eq!(acked.get("Call-ID"), "in-1@test", "{acked}");

    // The client goes away; its binding points at a dead connection.
    let _ = c.ws().close(None).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.send(&server_invite(2, "in-2@test")).await;
    let gone = s.recv_final().await;
    assert_eq!(
        gone.status(),
        Some(480),
        "a call for a client whose connection is gone:\n{gone}"
    );
    s.send(&server_invite(3, "in-3@test")).await;
    let unknown = s.recv_final().await;
    assert_eq!(
        unknown.status(),
        Some(404),
        "after the 480 the binding is removed:\n{unknown}"
    );
}

/// Reads an HTTP response head (up to the blank line) within the I/O timeout.
async fn http_head(io: &mut BoxRw) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            if io.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(IO_TIMEOUT, read)
        .await
        .expect("an HTTP answer in time");
    String::from_utf8_lossy(&head).to_string()
}

#[tokio::test]
async fn websocket_handshake_rules() {
    let peers = Peers::new();
    let proxy = ProxyPorts::new(&peers);
    let _roundabout = start_roundabout(
        &peers,
        &proxy,
        &["-ws-path".to_string(), "/sip".to_string()],
    );
    let connector = insecure_connector();
    for kind in [Kind::Ws, Kind::Wss] {
        let to = proxy.addr(kind);
        let open = || stream_to(kind, UAC_IP.into(), to, &connector);

        // sip offered: 101 with sip echoed
        let (io, _) = open().await;
        let (_, resp) = ws_client_path(io, kind, to, "/sip", Some("chat, sip"))
            .await
            .expect("sip offered is accepted");
        assert_eq!(resp.headers()["sec-websocket-protocol"], "sip");

        // no subprotocol: accepted (leniently), none echoed
        let (io, _) = open().await;
        let (_, resp) = ws_client_path(io, kind, to, "/sip", None)
            .await
            .expect("no subprotocol is accepted");
        assert!(resp.headers().get("sec-websocket-protocol").is_none());

        // other subprotocols only: a clear 400
        let (mut io, _) = open().await;
        let request = format!(
            "GET /sip HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chat, mqtt\r\n\r\n"
        );
        io.write_all(request.as_bytes()).await.unwrap();
        let head = http_head(&mut io).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{kind:?}: {head}");
        let mut body = String::new();
        let _ = tokio::time::timeout(IO_TIMEOUT, io.read_to_string(&mut body)).await;
        assert!(
            body.contains("Sec-WebSocket-Protocol: sip"),
            "the refusal says what to do: {body}"
        );

        // wrong path: 404
        let (io, _) = open().await;
        match ws_client_path(io, kind, to, "/", Some("sip")).await {
            Err(async_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 404)
            }
            other => panic!(
                "{kind:?} on / with -ws-path /sip: {:?}",
                other.map(|(_, r)| r)
            ),
        }
    }
}

/// A plain HTTP request on the WS and WSS ports (a browser opening https://host:8443/ to
/// accept the certificate) is answered 426 with what the port is, then closed; WebSocket
/// clients register on those ports as before.
#[tokio::test]
async fn plain_http_on_websocket_ports_gets_426() {
    let peers = Peers::new();
    let mut registrar = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ProxyPorts::new(&peers);
    let roundabout = start_roundabout(&peers, &proxy, &trusted(peers.uas, "", Kind::Udp));
    let connector = insecure_connector();
    for kind in [Kind::Ws, Kind::Wss] {
        let to = proxy.addr(kind);
        let (mut io, _) = stream_to(kind, UAC_IP.into(), to, &connector).await;
        let request = format!("GET / HTTP/1.1\r\nHost: {to}\r\nAccept: text/html\r\n\r\n");
        io.write_all(request.as_bytes()).await.unwrap();
        let head = http_head(&mut io).await;
        assert!(
            head.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{kind:?}: {head}\n{}",
            roundabout.report()
        );
        let lower = head.to_ascii_lowercase();
        for header in [
            "upgrade: websocket",
            "sec-websocket-protocol: sip",
            "connection: close",
        ] {
            assert!(
                lower.contains(&format!("\r\n{header}\r\n")),
                "{kind:?}: no {header}: {head}"
            );
        }
        let mut body = Vec::new();
        let closed = tokio::time::timeout(IO_TIMEOUT, io.read_to_end(&mut body)).await;
        assert!(closed.is_ok(), "{kind:?}: not closed after the 426");
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("SIP over WebSocket") && body.contains("RFC 7118"),
            "{kind:?}: {body}"
        );
    }

    let mut s = registrar.link().await;
    for kind in [Kind::Ws, Kind::Wss] {
        let mut c = Link::connect(kind, UAC_IP.into(), &proxy).await;
        let user = format!("after-426-{}", kind.name());
        let register = Request {
            method: "REGISTER",
            uri: "sip:127.0.0.3",
            via: client_via(&c, &user),
            from: format!("<sip:{user}@127.0.0.3>;tag=r"),
            to: format!("<sip:{user}@127.0.0.3>"),
            call_id: &format!("{user}@test"),
            cseq: 1,
            headers: vec![
                format!("Contact: {};expires=600", client_contact(&c, &user)),
                "Expires: 600".into(),
            ],
            body: "",
        };
        c.send(&register.render()).await;
        let reg = s.recv_request("REGISTER").await;
        assert_roundabout_via(&reg, Kind::Udp, &proxy, 1);
        let bound = uri_of(&reg.get("Contact"));
        accept_registration(&mut s, &reg, &bound).await;
        let ok = c.recv_final().await;
        assert_eq!(ok.status(), Some(200), "{kind:?}: {ok}");
        assert_client_vias(&ok, &format!("z9hG4bK{user}"));
    }
}

#[tokio::test]
async fn keepalives_are_answered() {
    let peers = Peers::new();
    let proxy = ProxyPorts::new(&peers);
    let _roundabout = start_roundabout(&peers, &proxy, &[]);
    let connector = insecure_connector();
    // RFC 5626: CRLFCRLF is answered with CRLF, on TCP and on TLS.
    for kind in [Kind::Tcp, Kind::Tls] {
        let (mut io, _) = stream_to(kind, UAC_IP.into(), proxy.addr(kind), &connector).await;
        for _ in 0..2 {
            io.write_all(b"\r\n\r\n").await.unwrap();
            let mut pong = [0u8; 2];
            tokio::time::timeout(IO_TIMEOUT, io.read_exact(&mut pong))
                .await
                .unwrap_or_else(|_| panic!("{kind:?}: no CRLF answer"))
                .unwrap();
            assert_eq!(&pong, b"\r\n", "{kind:?}");
        }
    }
    // WebSocket pings are answered with pongs carrying the same data.
    for kind in [Kind::Ws, Kind::Wss] {
        let mut c = Link::connect(kind, UAC_IP.into(), &proxy).await;
        use async_tungstenite::tungstenite::Message;
        use futures_util::StreamExt;
        c.ws()
            .send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
        let pong = tokio::time::timeout(IO_TIMEOUT, c.ws().next())
            .await
            .expect("a pong in time");
        match pong {
            Some(Ok(Message::Pong(data))) => assert_eq!(&data[..], b"are you there"),
            other => panic!("{kind:?}: {other:?}"),
        }
    }
}

/// An accepted connection that never sends SIP is closed after 30 s (TCP and WS alike).
#[tokio::test]
async fn silent_connections_are_closed() {
    let peers = Peers::new();
    let proxy = ProxyPorts::new(&peers);
    let _roundabout = start_roundabout(&peers, &proxy, &[]);
    let started = Instant::now();
    let limit = Duration::from_secs(40);
    let tcp = async {
        let (mut io, _) = stream_to(
            Kind::Tcp,
            UAC_IP.into(),
            proxy.addr(Kind::Tcp),
            &insecure_connector(),
        )
        .await;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(limit, io.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "TCP: expected the connection closed, got {n:?}"
        );
        started.elapsed()
    };
    let ws = async {
        let mut c = Link::connect(Kind::Ws, UAC_IP.into(), &proxy).await;
        use futures_util::StreamExt;
        loop {
            match tokio::time::timeout(limit, c.ws().next())
                .await
                .expect("closed in time")
            {
                Some(Ok(async_tungstenite::tungstenite::Message::Close(_)))
                | None
                | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            }
        }
        started.elapsed()
    };
    let (tcp_after, ws_after) = tokio::join!(tcp, ws);
    for (what, after) in [("TCP", tcp_after), ("WS", ws_after)] {
        assert!(
            after >= Duration::from_secs(29),
            "{what} closed too early: {after:?}"
        );
    }
}

/// Outbound TLS checks the server's certificate against the trusted server's first FQDN
/// (else its IP), with the system roots plus -tls-ca; -tls-insecure skips the check.
#[tokio::test]
async fn outbound_tls_verifies_the_server() {
    let ca = TestCa::new();
    let (named_cert, named_key) = ca.issue(&["pbx.test"]);
    let (untrusted_cert, untrusted_key) = self_signed(&["127.0.0.3", "pbx.test"]);
    // (server certificate, dataset fqdn, extra flags, whether the INVITE gets through)
    let cases: [(&str, &str, &str, Vec<&str>, bool); 4] = [
        (
            "name matches the FQDN",
            &named_cert,
            "pbx.test",
            vec!["-tls-ca"],
            true,
        ),
        (
            "checked against the IP",
            &named_cert,
            "",
            vec!["-tls-ca"],
            false,
        ),
        ("unknown issuer", &untrusted_cert, "pbx.test", vec![], false),
        (
            "-tls-insecure",
            &untrusted_cert,
            "pbx.test",
            vec!["-tls-insecure"],
            true,
        ),
    ];
    for (what, cert, fqdn, flags, gets_through) in cases {
        let peers = Peers::new();
        let key = if cert == named_cert {
            &named_key
        } else {
            &untrusted_key
        };
        let mut srv = Server::listen(Kind::Tls, peers.uas, Some((cert, key))).await;
        let proxy = ProxyPorts::new(&peers);
        let mut args = trusted(peers.uas, fqdn, Kind::Tls);
        for f in flags {
            args.push(f.to_string());
            if f == "-tls-ca" {
                args.push(write_file(&peers, "ca.pem", &ca.pem));
            }
        }
        let roundabout = start_roundabout(&peers, &proxy, &args);
        let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
        c.send(&invite_bob(&c, "v1", "verify@test")).await;
        if gets_through {
            let mut s = srv.link().await;
            let inv = s.recv_request("INVITE").await;
            assert_roundabout_via(&inv, Kind::Tls, &proxy, 1);
            s.send(&response(&inv, 486, "Busy Here", "b", &[])).await;
            assert_eq!(c.recv_final().await.status(), Some(486), "{what}");
        } else {
            // Roundabout gives up on the handshake: the caller hears 503.
            let accept = tokio::spawn(async move {
                let _ = tokio::time::timeout(IO_TIMEOUT, srv.link()).await;
            });
            let answer = c.recv_final().await;
            assert_eq!(
                answer.status(),
                Some(503),
                "{what}: {answer}\n{}",
                roundabout.report()
            );
            accept.abort();
        }
    }
}

/// Roundabout keeps its connection to a TLS or WSS server for the next requests, and opens
/// a new one when the server has closed it.
#[tokio::test]
async fn outbound_connections_are_reused_and_reopened() {
    for kind in [Kind::Tls, Kind::Wss] {
        let peers = Peers::new();
        let ca = TestCa::new();
        let (cert, key) = ca.issue(&["127.0.0.3"]);
        let mut srv = Server::listen(kind, peers.uas, Some((&cert, &key))).await;
        let proxy = ProxyPorts::new(&peers);
        let mut flags = trusted(peers.uas, "", kind);
        flags.extend(["-tls-ca".to_string(), write_file(&peers, "ca.pem", &ca.pem)]);
        let _roundabout = start_roundabout(&peers, &proxy, &flags);
        let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
        let invite =
            |c: &Link, n: u32| invite_bob(c, &format!("re{n}"), &format!("reuse-{n}@test"));
        c.send(&invite(&c, 1)).await;
        let mut first = srv.link().await;
        let inv = first.recv_request("INVITE").await;
        first
            .send(&response(&inv, 486, "Busy Here", "b", &[]))
            .await;
        assert_eq!(c.recv_final().await.status(), Some(486));

        // The next call uses the same connection.
        c.send(&invite(&c, 2)).await;
        let inv = first.recv_request("INVITE").await;
        assert_eq!(inv.get("Call-ID"), "reuse-2@test");
        first
            .send(&response(&inv, 486, "Busy Here", "b", &[]))
            .await;
        assert_eq!(c.recv_final().await.status(), Some(486));

        // The server closes it: the next call opens a new one.
        drop(first);
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.send(&invite(&c, 3)).await;
        let mut second = srv.link().await;
        let inv = second.recv_request("INVITE").await;
        assert_eq!(inv.get("Call-ID"), "reuse-3@test", "{kind:?}");
        assert_roundabout_via(&inv, kind, &proxy, 1);
        second
            .send(&response(&inv, 486, "Busy Here", "b", &[]))
            .await;
        assert_eq!(c.recv_final().await.status(), Some(486));
    }
}

/// Explicit -tls-cert/-tls-key: the chain in the file is sent (a client that trusts only the
/// root CA accepts it), and no self-signed warning is printed.
#[tokio::test]
async fn explicit_certificate_chain_is_sent() {
    let peers = Peers::new();
    let root = TestCa::new();
    let intermediate = root.intermediate();
    let (leaf, key) = intermediate.issue(&["127.0.0.1", "localhost"]);
    let cert_file = write_file(&peers, "chain.pem", &format!("{leaf}{}", intermediate.pem));
    let key_file = write_file(&peers, "leaf-key.pem", &key);
    let proxy = ProxyPorts::new(&peers);
    let roundabout = start_roundabout(
        &peers,
        &proxy,
        &["-tls-cert".into(), cert_file, "-tls-key".into(), key_file],
    );
    let verifying = verifying_connector(&root.pem);
    for kind in [Kind::Tls, Kind::Wss] {
        let (mut io, _) = stream_to(kind, UAC_IP.into(), proxy.addr(kind), &verifying).await;
        if kind == Kind::Tls {
            io.write_all(b"\r\n\r\n").await.unwrap();
            let mut pong = [0u8; 2];
            tokio::time::timeout(IO_TIMEOUT, io.read_exact(&mut pong))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&pong, b"\r\n");
        } else {
            ws_client(io, kind, proxy.addr(kind), Some("sip"))
                .await
                .expect("WSS with a verified chain");
        }
    }
    assert!(
        !roundabout.output().contains("self-signed"),
        "{}",
        roundabout.output()
    );
}

/// With explicit files that do not load, Roundabout exits 2 before listening and names the file.
#[test]
fn bad_explicit_certificate_exits_2() {
    let peers = Peers::new();
    let garbage = write_file(&peers, "garbage-cert.pem", "not PEM at all\n");
    let key = common_key(&peers);
    for (cert, key, word) in [
        (
            peers.dir().join("missing-cert.pem").display().to_string(),
            key.clone(),
            "missing-cert.pem",
        ),
        (garbage, key, "garbage-cert.pem"),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roundabout"));
        cmd.args([
            "-udp-port",
            "0",
            "-tcp-port",
            "0",
            "-ws-port",
            "0",
            "-tls-cert",
            &cert,
            "-tls-key",
            &key,
        ]);
        let mut proc = Proc::spawn(&format!("roundabout-{word}"), cmd, peers.dir());
        let status = proc
            .wait_timeout(Duration::from_secs(5))
            .expect("exits at once");
        assert_eq!(status.code(), Some(2), "{}", proc.output());
        let out = proc.output();
        assert!(out.contains(word) && !out.contains("listening"), "{out}");
    }
}

/// A usable key file for the exit-2 test (so only the certificate is at fault).
fn common_key(peers: &Peers) -> String {
    let (_, key) = self_signed(&["localhost"]);
    write_file(peers, "key.pem", &key)
}
