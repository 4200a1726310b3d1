//! Who Roundabout trusts, attacked as an attacker would, each attack next to a positive
//! control in the same test (README, Security):
//!
//! 1. toll fraud with `-strict-client`: INVITEs from outside the client networks get `403`
//!    and the PBX hears nothing; the same INVITE from a trusted client, and the PBX's own
//!    INVITE to a registered client, pass;
//! 2. toll fraud with `-registered-only`: only a client registered through Roundabout may
//!    send, from the very UDP address and port or TCP connection it registered on; REGISTER
//!    itself is forwarded;
//! 3. forged responses are never relayed by their Via (no datagram, no connection to the
//!    victims they name), while a genuine call works;
//! 4. a response with the right branch from the wrong place is dropped (counted), the real
//!    one from the PBX still reaches the caller; a forged 200 to a REGISTER binds nobody;
//! 5. a client cannot take over another's binding (bob registering a Contact with user
//!    `alice`; extension 100 on two PBXs);
//! 6. `-max-transactions` caps what is held (`503` with `Retry-After`), while Roundabout
//!    still answers and takes new calls once transactions are gone;
//! 7. `-token-key-file` keeps a dialog's Contact token valid across a restart; a random key
//!    does not.
//!
//! Addresses (see `tests/common`): Roundabout 127.0.0.1 (UDP and TCP only), trusted client
//! 127.0.0.2, PBX (a raw UDP peer) 127.0.0.3, a second PBX 127.0.0.5, attackers 127.0.0.6
//! and 127.0.0.7, victims 127.0.0.8 (UDP) and 127.0.0.9 (TCP). Every read is bounded;
//! nothing is skipped.

use crate::common::{Peers, Proc, PROXY_IP, UAC_IP, UAS_IP};
use crate::transport_peers::*;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The second PBX (two trusted servers each with an extension 100).
const PBX2_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// Attackers.
const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
const ATTACKER2_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
/// Victims whose addresses an attacker writes into forged Vias.
const VICTIM_UDP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 8);
const VICTIM_TCP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

/// How long "nothing arrives" is watched.
const SILENCE: Duration = Duration::from_secs(1);

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
                   m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

// ----- set-up ----------------------------------------------------------------------------

/// Roundabout's ports: UDP and TCP on the port of `peers.proxy`, TLS and WebSocket off.
fn ports(peers: &Peers) -> ProxyPorts {
    ProxyPorts {
        ip: PROXY_IP.into(),
        udp_tcp: peers.proxy.port(),
        tls: 0,
        ws: 0,
        wss: 0,
    }
}

/// Roundabout on UDP and TCP (`-local-ip 127.0.0.1`) with `-strict-host` and `extra`.
fn start(peers: &Peers, extra: &[String]) -> Proc {
    let mut args: Vec<&str> = vec!["-strict-host"];
    args.extend(extra.iter().map(String::as_str));
    peers.roundabout_udp_tcp(&args)
}

/// A `-trusted-server` dataset for a UDP server at `addr`.
fn udp_server(addr: SocketAddr) -> String {
    format!("{}::{}:udp:", addr.ip(), addr.port())
}

fn flags(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The PBX: a raw UDP peer, its socket as a link.
async fn pbx_at(addr: SocketAddr) -> Link {
    Server::listen(Kind::Udp, addr, None).await.link().await
}

// ----- messages --------------------------------------------------------------------------

fn via(link: &Link, branch: &str) -> String {
    via_from(link.kind, link.local, branch)
}

/// A Via with sent-by `local` (`;rport`).
fn via_from(kind: Kind, local: SocketAddr, branch: &str) -> String {
    format!(
        "SIP/2.0/{} {local};branch=z9hG4bK{branch};rport",
        kind.via()
    )
}

/// A client's own Contact URI (`sip:user@ip:port[;transport=tcp]`).
fn contact_uri(link: &Link, user: &str) -> String {
    format!("sip:{user}@{}{}", link.local, link.kind.uri_param())
}

fn branch_of(via: &str) -> String {
    param(via, "branch").unwrap_or_else(|| panic!("no branch in {via}"))
}

fn tag_of(name_addr: &str) -> Option<String> {
    param(name_addr, "tag")
}

fn cseq_method(m: &Msg) -> String {
    m.get("CSeq")
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// One request outside a dialog from a client link, and what its ACKs share.
struct Call {
    uri: String,
    via: String,
    from: String,
    to: String,
    call_id: String,
    contact: String,
}

impl Call {
    /// A call from `user` on `link` to `uri` (To = `uri` without parameters).
    fn new(link: &Link, user: &str, uri: &str, call_id: &str, branch: &str) -> Call {
        Call {
            uri: uri.to_string(),
            via: via(link, branch),
            from: format!("<sip:{user}@127.0.0.2>;tag={user}-{branch}"),
            to: format!("<{}>", uri.split(';').next().unwrap()),
            call_id: call_id.to_string(),
            contact: format!("<{}>", contact_uri(link, user)),
        }
    }

    /// The same To with a tag (a request that claims to be inside a dialog).
    fn with_to_tag(mut self, tag: &str) -> Call {
        self.to = format!("{};tag={tag}", self.to);
        self
    }

    fn request(&self, method: &str, via: String, to: String, headers: Vec<String>) -> String {
        Request {
            method,
            uri: &self.uri,
            via,
            from: self.from.clone(),
            to,
            call_id: &self.call_id,
            cseq: 1,
            headers,
            body: if method == "INVITE" { SDP } else { "" },
        }
        .render()
    }

    fn invite(&self) -> String {
        let contact = format!("Contact: {}", self.contact);
        self.request("INVITE", self.via.clone(), self.to.clone(), vec![contact])
    }

    fn message(&self) -> String {
        let contact = format!("Contact: {}", self.contact);
        self.request("MESSAGE", self.via.clone(), self.to.clone(), vec![contact])
    }

    /// ACK for a non-2xx final: the INVITE's Via, the final's To (RFC 3261 17.1.1.3).
    fn ack_non_2xx(&self, fin: &Msg) -> String {
        self.request("ACK", self.via.clone(), fin.get("To"), vec![])
    }

    /// ACK for a 2xx: a new branch, to the 2xx's Contact along its route set.
    fn ack_2xx(&self, ok: &Msg, via: String) -> String {
        Request {
            method: "ACK",
            uri: &uri_of(&ok.get("Contact")),
            via,
            from: self.from.clone(),
            to: ok.get("To"),
            call_id: &self.call_id,
            cseq: 1,
            headers: ok.route_set(),
            body: "",
        }
        .render()
    }
}

/// A REGISTER from `link` for the address-of-record `aor` (`user@host`) at `registrar`
/// (Request-URI host), binding `contact` (a whole Contact value) for 600 s.
fn register(link: &Link, aor: &str, registrar: &str, contact: &str, branch: &str) -> String {
    Request {
        method: "REGISTER",
        uri: &format!("sip:{registrar}"),
        via: via(link, branch),
        from: format!("<sip:{aor}>;tag=reg-{branch}"),
        to: format!("<sip:{aor}>"),
        call_id: &format!("reg-{branch}@security.test"),
        cseq: 1,
        headers: vec![format!("Contact: {contact}"), "Expires: 600".into()],
        body: "",
    }
    .render()
}

/// A request the PBX (on `pbx`) sends to `uri` on its own (a new transaction).
fn pbx_request(pbx: &Link, method: &str, uri: &str, call_id: &str, branch: &str) -> String {
    Request {
        method,
        uri,
        via: via(pbx, branch),
        from: format!("<sip:pbx@{}>;tag=pbx-{branch}", pbx.local.ip()),
        to: format!("<{}>", uri.split(';').next().unwrap()),
        call_id,
        cseq: 1,
        headers: vec![format!("Contact: <sip:pbx@{}>", pbx.local)],
        body: if method == "INVITE" { SDP } else { "" },
    }
    .render()
}

/// An ACK the PBX sends for a non-2xx final `fin` to its INVITE `invite` (same Via).
fn pbx_ack(invite: &str, fin: &Msg) -> String {
    let inv = Msg::parse(invite.as_bytes());
    Request {
        method: "ACK",
        uri: inv.request_uri(),
        via: inv.get("Via"),
        from: inv.get("From"),
        to: fin.get("To"),
        call_id: &inv.get("Call-ID"),
        cseq: 1,
        headers: vec![],
        body: "",
    }
    .render()
}

/// The registrar's 200 to a forwarded REGISTER: the Contact it got, for 600 s.
fn registered_ok(reg: &Msg) -> String {
    let contact = format!("Contact: <{}>;expires=600", uri_of(&reg.get("Contact")));
    response(reg, 200, "OK", "registrar", &[contact])
}

// ----- reading ---------------------------------------------------------------------------

/// Everything `link` receives within `within`.
async fn collect(link: &mut Link, within: Duration) -> Vec<Msg> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match link.recv_within(left).await {
            Some(m) => seen.push(m),
            None => break,
        }
    }
    seen
}

fn starts(msgs: &[Msg]) -> String {
    msgs.iter()
        .map(|m| format!("{} ({})", m.start, m.first("CSeq").unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Nothing at all arrives on `link` for [`SILENCE`].
async fn assert_silent(link: &mut Link, what: &str) {
    let heard = collect(link, SILENCE).await;
    assert!(
        heard.is_empty(),
        "{what}: {} {} got [{}]",
        link.kind.name(),
        link.local,
        starts(&heard)
    );
}

/// The next request `method` on `link` (other messages are skipped), within 5 s.
async fn expect_request(link: &mut Link, method: &str) -> Msg {
    link.recv_request(method).await
}

/// The next message on `link` must be the final `code` with exactly `reason` (its start line);
/// provisional responses before it are skipped when `provisional_ok`, else they fail.
async fn expect_final(link: &mut Link, code: u16, reason: &str, provisional_ok: bool) -> Msg {
    loop {
        let m = link.recv().await;
        if provisional_ok && m.status().is_some_and(|s| s < 200) {
            continue;
        }
        assert_eq!(
            m.start,
            format!("SIP/2.0 {code} {reason}"),
            "expected {code} {reason}:\n{m}"
        );
        return m;
    }
}

// ----- the stats line --------------------------------------------------------------------

/// The numbers of the SIGUSR1 stats line this test reads.
#[derive(Debug, Clone, Copy)]
struct Stats {
    transactions: u64,
    responses_dropped: u64,
    requests_refused: u64,
}

fn number_after(line: &str, key: &str) -> u64 {
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

fn whole_log(rb: &Proc) -> String {
    String::from_utf8_lossy(&std::fs::read(rb.log_path()).unwrap_or_default()).into_owned()
}

/// Sends SIGUSR1 and reads the stats line it logs (within 5 s).
async fn stats(rb: &Proc) -> Stats {
    let before = whole_log(rb).matches("stats: ").count();
    let sent = std::process::Command::new("kill")
        .args(["-USR1", &rb.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(sent.success(), "kill -USR1 {}", rb.pid());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = whole_log(rb);
        if out.matches("stats: ").count() > before {
            let line = out.lines().rev().find(|l| l.contains("stats: ")).unwrap();
            let line = &line[line.find("stats: ").unwrap()..];
            return Stats {
                transactions: number_after(line, "transactions"),
                responses_dropped: number_after(line, "responses dropped"),
                requests_refused: number_after(line, "requests refused"),
            };
        }
        assert!(Instant::now() < deadline, "no stats line\n{}", rb.report());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ----- 1. toll fraud with -strict-client -------------------------------------------------

/// `-strict-client -trusted-client-ip 127.0.0.2/32`: an attacker (127.0.0.6 over UDP,
/// 127.0.0.7 over TCP) calling a premium number at the PBX, or Roundabout itself (which would take it to the
/// default server), gets `403 Forbidden - Not From A Trusted Network` at once (no 100), and
/// so do its REGISTER, a MESSAGE over TCP, an INVITE with a To tag but no Route of
/// Roundabout, and one with a forged Contact token; the PBX hears nothing, the ACK for the
/// 403 included. Each refusal is counted. Controls: the same INVITEs from the trusted
/// client reach the PBX, a client there registers, and the PBX's own INVITE reaches it.
#[tokio::test]
async fn toll_fraud_is_refused_with_strict_client() {
    let peers = Peers::new();
    let mut pbx = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ports(&peers);
    let rb = start(
        &peers,
        &[
            "-strict-client".into(),
            "-trusted-client-ip".into(),
            "127.0.0.2/32".into(),
            "-trusted-server".into(),
            udp_server(peers.uas),
            "-default-sip-server".into(),
            "127.0.0.3".into(),
        ],
    );
    let mut s = pbx.link().await;
    let premium = "sip:00900123456@127.0.0.3";
    let via_roundabout = format!("sip:x@{}", peers.proxy);
    const NOT_TRUSTED: &str = "Forbidden - Not From A Trusted Network";

    // The attacks.
    let mut attacker = Link::connect(Kind::Udp, ATTACKER_IP.into(), &proxy).await;
    let mut refused = 0;
    for (n, uri) in [premium, via_roundabout.as_str()].into_iter().enumerate() {
        let call = Call::new(
            &attacker,
            "mallory",
            uri,
            &format!("fraud-{n}@evil"),
            &format!("f{n}"),
        );
        attacker.send(&call.invite()).await;
        let answer = expect_final(&mut attacker, 403, NOT_TRUSTED, false).await;
        assert_eq!(
            branch_of(&answer.get("Via")),
            branch_of(&call.via),
            "{answer}"
        );
        // the ACK for the 403 is absorbed, not relayed
        attacker.send(&call.ack_non_2xx(&answer)).await;
        refused += 1;
    }
    let reg = register(
        &attacker,
        "mallory@127.0.0.3",
        "127.0.0.3",
        &format!("<{}>", contact_uri(&attacker, "mallory")),
        "freg",
    );
    attacker.send(&reg).await;
    expect_final(&mut attacker, 403, NOT_TRUSTED, false).await;
    refused += 1;
    // A To tag alone does not make a request "inside a dialog"; nor does a made-up token.
    let tagged =
        Call::new(&attacker, "mallory", premium, "fraud-tag@evil", "ftag").with_to_tag("x1");
    attacker.send(&tagged.invite()).await;
    expect_final(&mut attacker, 403, NOT_TRUSTED, false).await;
    refused += 1;
    let forged_token = format!(
        "sip:00900123456@{};rbt=udp~127.0.0.3~{}~0~0123456789abcdef~sip%3A00900123456%40127.0.0.3",
        peers.proxy,
        peers.uas.port()
    );
    let tokened = Call::new(
        &attacker,
        "mallory",
        &forged_token,
        "fraud-token@evil",
        "ftok",
    )
    .with_to_tag("x2");
    attacker.send(&tokened.invite()).await;
    expect_final(&mut attacker, 403, NOT_TRUSTED, false).await;
    refused += 1;
    let mut tcp_attacker = Link::connect(Kind::Tcp, ATTACKER2_IP.into(), &proxy).await;
    let msg = Call::new(&tcp_attacker, "mallory", premium, "fraud-tcp@evil", "ftcp");
    tcp_attacker.send(&msg.message()).await;
    expect_final(&mut tcp_attacker, 403, NOT_TRUSTED, false).await;
    refused += 1;
    let tcp_invite = Call::new(
        &tcp_attacker,
        "mallory",
        &via_roundabout,
        "fraud-tcp2@evil",
        "ftcp2",
    );
    tcp_attacker.send(&tcp_invite.invite()).await;
    expect_final(&mut tcp_attacker, 403, NOT_TRUSTED, false).await;
    refused += 1;

    assert_silent(
        &mut s,
        "the PBX must hear nothing of the attacker's requests",
    )
    .await;
    let st = stats(&rb).await;
    assert_eq!(
        st.requests_refused, refused,
        "every refusal is counted once: {st:?}"
    );

    // Controls: the very same INVITEs from the trusted client network reach the PBX.
    let mut client = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    for (n, uri) in [premium, via_roundabout.as_str()].into_iter().enumerate() {
        let call = Call::new(
            &client,
            "alice",
            uri,
            &format!("ok-{n}@test"),
            &format!("ok{n}"),
        );
        client.send(&call.invite()).await;
        let inv = expect_request(&mut s, "INVITE").await;
        assert_eq!(
            inv.request_uri(),
            uri,
            "the trusted client's INVITE:\n{inv}"
        );
        assert_eq!(inv.get("Call-ID"), call.call_id);
        s.send(&response(&inv, 486, "Busy Here", "pbx", &[])).await;
        let fin = expect_final(&mut client, 486, "Busy Here", true).await;
        client.send(&call.ack_non_2xx(&fin)).await;
        expect_request(&mut s, "ACK").await; // Roundabout's own, hop by hop
    }

    // The trusted client registers; the trusted server's INVITE reaches it.
    let own = contact_uri(&client, "alice");
    client
        .send(&register(
            &client,
            "alice@127.0.0.3",
            "127.0.0.3",
            &format!("<{own}>"),
            "reg1",
        ))
        .await;
    let reg = expect_request(&mut s, "REGISTER").await;
    let registered = uri_of(&reg.get("Contact"));
    s.send(&registered_ok(&reg)).await;
    expect_final(&mut client, 200, "OK", true).await;
    let invite = pbx_request(&s, "INVITE", &registered, "from-pbx@test", "pbxinv");
    s.send(&invite).await;
    let got = expect_request(&mut client, "INVITE").await;
    assert_eq!(got.request_uri(), own, "{got}");
    client
        .send(&response(&got, 486, "Busy Here", "alice", &[]))
        .await;
    let fin = expect_final(&mut s, 486, "Busy Here", true).await;
    s.send(&pbx_ack(&invite, &fin)).await;
    expect_request(&mut client, "ACK").await; // Roundabout's own for the 486

    let st = stats(&rb).await;
    assert_eq!(
        st.requests_refused, refused,
        "the controls must not be refused: {st:?}"
    );
}

// ----- 2. toll fraud with -registered-only -----------------------------------------------

/// `-registered-only`: an unregistered UDP client's INVITE gets `403 Forbidden - Not
/// Registered`; its REGISTER is forwarded nevertheless (exempt); a 401 binds nothing (still
/// 403); once the PBX answers 200 its INVITE passes, but the same IP on another port is
/// refused. Over TCP a client registered on connection A is refused on connection B, while
/// A's INVITE passes and the PBX's MESSAGE for it comes down A.
#[tokio::test]
async fn toll_fraud_is_refused_with_registered_only() {
    let peers = Peers::new();
    let mut pbx = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ports(&peers);
    let rb = start(
        &peers,
        &[
            "-registered-only".into(),
            "-trusted-server".into(),
            udp_server(peers.uas),
        ],
    );
    let mut s = pbx.link().await;
    const NOT_REGISTERED: &str = "Forbidden - Not Registered";
    let bob = "sip:bob@127.0.0.3";
    let mut refused = 0;

    // Unregistered: refused, the PBX hears nothing.
    let mut c1 = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let call = Call::new(&c1, "alice", bob, "ro-1@test", "ro1");
    c1.send(&call.invite()).await;
    let answer = expect_final(&mut c1, 403, NOT_REGISTERED, false).await;
    c1.send(&call.ack_non_2xx(&answer)).await;
    refused += 1;
    assert_silent(
        &mut s,
        "an unregistered client's INVITE must not reach the PBX",
    )
    .await;

    // REGISTER is exempt: forwarded. A 401 makes no binding.
    let own = format!("<{}>", contact_uri(&c1, "alice"));
    c1.send(&register(&c1, "alice@127.0.0.3", "127.0.0.3", &own, "ror1"))
        .await;
    let reg = expect_request(&mut s, "REGISTER").await;
    let challenge = "WWW-Authenticate: Digest realm=\"127.0.0.3\", nonce=\"n1\"".to_string();
    s.send(&response(
        &reg,
        401,
        "Unauthorized",
        "registrar",
        &[challenge],
    ))
    .await;
    expect_final(&mut c1, 401, "Unauthorized", true).await;
    let call = Call::new(&c1, "alice", bob, "ro-2@test", "ro2");
    c1.send(&call.invite()).await;
    let answer = expect_final(&mut c1, 403, NOT_REGISTERED, false).await;
    c1.send(&call.ack_non_2xx(&answer)).await;
    refused += 1;

    // Registered (the PBX's 200 passed through Roundabout): the INVITE passes.
    c1.send(&register(&c1, "alice@127.0.0.3", "127.0.0.3", &own, "ror2"))
        .await;
    let reg = expect_request(&mut s, "REGISTER").await;
    s.send(&registered_ok(&reg)).await;
    expect_final(&mut c1, 200, "OK", true).await;
    let call = Call::new(&c1, "alice", bob, "ro-3@test", "ro3");
    c1.send(&call.invite()).await;
    let inv = expect_request(&mut s, "INVITE").await;
    assert_eq!(inv.get("Call-ID"), "ro-3@test", "{inv}");
    s.send(&response(&inv, 486, "Busy Here", "bob", &[])).await;
    let fin = expect_final(&mut c1, 486, "Busy Here", true).await;
    c1.send(&call.ack_non_2xx(&fin)).await;
    expect_request(&mut s, "ACK").await;

    // The same IP on another port is someone else.
    let mut c2 = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    assert_ne!(c1.local.port(), c2.local.port());
    let call = Call::new(&c2, "alice", bob, "ro-4@test", "ro4");
    c2.send(&call.invite()).await;
    let answer = expect_final(&mut c2, 403, NOT_REGISTERED, false).await;
    c2.send(&call.ack_non_2xx(&answer)).await;
    refused += 1;
    assert_silent(
        &mut s,
        "the INVITE from another port must not reach the PBX",
    )
    .await;

    // TCP: registered over connection A, refused on connection B.
    let mut a = Link::connect(Kind::Tcp, UAC_IP.into(), &proxy).await;
    let mut b = Link::connect(Kind::Tcp, UAC_IP.into(), &proxy).await;
    let carol = contact_uri(&a, "carol");
    a.send(&register(
        &a,
        "carol@127.0.0.3",
        "127.0.0.3",
        &format!("<{carol}>"),
        "rot1",
    ))
    .await;
    let reg = expect_request(&mut s, "REGISTER").await;
    s.send(&registered_ok(&reg)).await;
    expect_final(&mut a, 200, "OK", true).await;
    let call_b = Call::new(&b, "carol", bob, "ro-5@test", "ro5");
    b.send(&call_b.invite()).await;
    expect_final(&mut b, 403, NOT_REGISTERED, false).await;
    refused += 1;
    assert_silent(&mut s, "the INVITE on connection B must not reach the PBX").await;
    let call_a = Call::new(&a, "carol", bob, "ro-6@test", "ro6");
    a.send(&call_a.invite()).await;
    let inv = expect_request(&mut s, "INVITE").await;
    assert_eq!(inv.get("Call-ID"), "ro-6@test", "{inv}");
    s.send(&response(&inv, 486, "Busy Here", "bob", &[])).await;
    let fin = expect_final(&mut a, 486, "Busy Here", true).await;
    a.send(&call_a.ack_non_2xx(&fin)).await;
    expect_request(&mut s, "ACK").await;
    // The PBX reaches carol down connection A (a trusted server is never gated).
    let message = pbx_request(
        &s,
        "MESSAGE",
        &format!("sip:carol@{}", peers.proxy),
        "ro-7@test",
        "ro7",
    );
    s.send(&message).await;
    let got = expect_request(&mut a, "MESSAGE").await;
    assert_eq!(got.request_uri(), carol, "{got}");
    a.send(&response(&got, 200, "OK", "carol", &[])).await;
    expect_final(&mut s, 200, "OK", false).await;
    assert_silent(&mut b, "nothing for carol may come down connection B").await;

    let st = stats(&rb).await;
    assert_eq!(st.requests_refused, refused, "{st:?}");
}

// ----- 3. forged responses are not relayed -----------------------------------------------

/// An attacker sends responses whose top Via looks like Roundabout's (`z9hG4bK-rb1-2`, no
/// such transaction) and whose next Via names a victim: a UDP listener (by sent-by, and by
/// `received`/`rport`) and a TCP listener; and one whose top Via is the victim itself; over
/// UDP and TCP. The victims get no datagram and no connection, the attacker no answer, and
/// every one is counted as dropped. Control: a genuine call through Roundabout works, and
/// its branch has the documented shape.
#[tokio::test]
async fn forged_responses_are_not_relayed() {
    let peers = Peers::new();
    let mut pbx = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ports(&peers);
    let rb = start(&peers, &["-trusted-server".into(), udp_server(peers.uas)]);
    let mut s = pbx.link().await;

    let victim_udp_addr = SocketAddr::from((VICTIM_UDP_IP, peers.port()));
    let victim_tcp_addr = SocketAddr::from((VICTIM_TCP_IP, peers.port()));
    let mut victim_udp = Server::listen(Kind::Udp, victim_udp_addr, None)
        .await
        .link()
        .await;
    let victim_tcp = tokio::net::TcpListener::bind(victim_tcp_addr)
        .await
        .expect("binding the victim's TCP listener");

    let ours = format!("SIP/2.0/UDP {};branch=z9hG4bK-rb1-2", peers.proxy);
    let second_vias = [
        format!("SIP/2.0/UDP {victim_udp_addr};branch=z9hG4bKvictim1"),
        format!(
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKvictim2;received={};rport={}",
            victim_udp_addr.ip(),
            victim_udp_addr.port()
        ),
        format!("SIP/2.0/TCP {victim_tcp_addr};branch=z9hG4bKvictim3"),
    ];
    let forged = |vias: &[&str], n: usize| {
        let mut m = "SIP/2.0 200 OK\r\n".to_string();
        for v in vias {
            m += &format!("Via: {v}\r\n");
        }
        m += &format!(
            "From: <sip:victim@127.0.0.8>;tag=v{n}\r\nTo: <sip:x@127.0.0.3>;tag=t{n}\r\n\
             Call-ID: forged-{n}@evil\r\nCSeq: 1 INVITE\r\nContact: <sip:x@127.0.0.6>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        );
        m
    };
    let mut forgeries = Vec::new();
    for v in &second_vias {
        forgeries.push(forged(&[ours.as_str(), v.as_str()], forgeries.len()));
    }
    forgeries.push(forged(&[second_vias[0].as_str()], forgeries.len()));
    forgeries.push(forged(&[second_vias[2].as_str()], forgeries.len()));

    let mut attacker = Link::connect(Kind::Udp, ATTACKER_IP.into(), &proxy).await;
    let mut tcp_attacker = Link::connect(Kind::Tcp, ATTACKER2_IP.into(), &proxy).await;
    for f in &forgeries {
        attacker.send(f).await;
        tcp_attacker.send(f).await;
    }
    let sent = 2 * forgeries.len() as u64;

    let accepted = tokio::time::timeout(SILENCE, victim_tcp.accept()).await;
    assert!(
        accepted.is_err(),
        "Roundabout opened a connection to the TCP victim named in a forged Via: {:?}",
        accepted.map(|r| r.map(|(_, from)| from))
    );
    assert_silent(&mut victim_udp, "the UDP victim named in a forged Via").await;
    assert_silent(&mut attacker, "a response is never answered").await;
    assert_silent(&mut tcp_attacker, "a response is never answered").await;
    assert_silent(&mut s, "the PBX").await;
    let st = stats(&rb).await;
    assert!(
        st.responses_dropped >= sent,
        "each of the {sent} forged responses is counted as dropped: {st:?}"
    );

    // Control: a genuine call, every message through Roundabout.
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let call = Call::new(&c, "alice", "sip:bob@127.0.0.3", "genuine@test", "gen1");
    c.send(&call.invite()).await;
    let inv = expect_request(&mut s, "INVITE").await;
    let top = branch_of(&inv.all("Via")[0]);
    let shape = top
        .strip_prefix("z9hG4bK-rb")
        .and_then(|rest| rest.split_once('-'))
        .filter(|(loop_hash, mac)| {
            let hex = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_hexdigit());
            hex(loop_hash) && hex(mac) && mac.len() <= 16
        });
    assert!(
        shape.is_some(),
        "branch {top} is not z9hG4bK-rb<hex>-<hex of a 64-bit MAC>"
    );
    let pbx_contact = format!("Contact: <sip:bob@{}>", peers.uas);
    s.send(&response(&inv, 180, "Ringing", "bob", &[])).await;
    let ringing = expect_status(&mut c, 180).await;
    assert_eq!(ringing.all("Via").len(), 1, "{ringing}");
    s.send(&response(&inv, 200, "OK", "bob", &[pbx_contact]))
        .await;
    let ok = expect_final(&mut c, 200, "OK", true).await;
    assert_eq!(tag_of(&ok.get("To")).as_deref(), Some("bob"), "{ok}");
    c.send(&call.ack_2xx(&ok, via(&c, "gen1-ack"))).await;
    let ack = expect_request(&mut s, "ACK").await;
    assert_eq!(ack.request_uri(), format!("sip:bob@{}", peers.uas), "{ack}");
    // BYE from the caller along the route set, and its 200 back.
    let bye = Request {
        method: "BYE",
        uri: &uri_of(&ok.get("Contact")),
        via: via(&c, "gen1-bye"),
        from: call.from.clone(),
        to: ok.get("To"),
        call_id: &call.call_id,
        cseq: 2,
        headers: ok.route_set(),
        body: "",
    }
    .render();
    c.send(&bye).await;
    let got = expect_request(&mut s, "BYE").await;
    s.send(&response(&got, 200, "OK", "bob", &[])).await;
    let fin = expect_final(&mut c, 200, "OK", false).await;
    assert_eq!(cseq_method(&fin), "BYE", "{fin}");
}

/// The next response with status `code` (smaller ones skipped; a larger one fails).
async fn expect_status(link: &mut Link, code: u16) -> Msg {
    loop {
        let m = link.recv().await;
        match m.status() {
            Some(s) if s == code => return m,
            Some(s) if s < code => continue,
            _ => panic!("expected a {code}, got:\n{m}"),
        }
    }
}

// ----- 4. responses from the wrong place -------------------------------------------------

/// The PBX got a real INVITE; someone copies its Vias and answers 200 from another port of
/// the PBX's address, from another address, and over TCP from the PBX's address: the caller
/// does not get it. The PBX's own 180 and 200 then reach the caller (with the PBX's tag).
/// A forged 200 to a REGISTER, arriving before the registrar's 401, binds nobody: the
/// client sees the 401, and a MESSAGE for that user from the PBX gets 404. The stats line
/// counts every forged response as dropped.
#[tokio::test]
async fn responses_from_the_wrong_place_are_dropped() {
    let peers = Peers::new();
    let mut pbx = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ports(&peers);
    let rb = start(&peers, &["-trusted-server".into(), udp_server(peers.uas)]);
    let mut s = pbx.link().await;

    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let call = Call::new(&c, "alice", "sip:bob@127.0.0.3", "misplaced@test", "mis1");
    c.send(&call.invite()).await;
    let inv = expect_request(&mut s, "INVITE").await;
    let trying = c.recv().await;
    assert_eq!(trying.status(), Some(100), "{trying}");

    let forged = response(
        &inv,
        200,
        "OK",
        "forged",
        &["Contact: <sip:mallory@127.0.0.6>".into()],
    );
    let mut same_ip_other_port = Link::connect(Kind::Udp, UAS_IP.into(), &proxy).await;
    let mut other_ip = Link::connect(Kind::Udp, ATTACKER_IP.into(), &proxy).await;
    let mut same_ip_tcp = Link::connect(Kind::Tcp, UAS_IP.into(), &proxy).await;
    assert_ne!(same_ip_other_port.local, peers.uas);
    same_ip_other_port.send(&forged).await;
    other_ip.send(&forged).await;
    same_ip_tcp.send(&forged).await;
    let mut forged_count = 3;
    let heard = collect(&mut c, SILENCE).await;
    assert!(
        heard.is_empty(),
        "the caller must not get a response from anywhere but the PBX's socket: [{}]",
        starts(&heard)
    );

    // The real answers, from the socket the INVITE went to.
    s.send(&response(&inv, 180, "Ringing", "bob", &[])).await;
    let ringing = expect_status(&mut c, 180).await;
    assert_eq!(
        tag_of(&ringing.get("To")).as_deref(),
        Some("bob"),
        "{ringing}"
    );
    let pbx_contact = format!("Contact: <sip:bob@{}>", peers.uas);
    s.send(&response(&inv, 200, "OK", "bob", &[pbx_contact]))
        .await;
    let ok = expect_final(&mut c, 200, "OK", true).await;
    assert_eq!(tag_of(&ok.get("To")).as_deref(), Some("bob"), "{ok}");
    assert_eq!(ok.all("Via").len(), 1, "{ok}");
    c.send(&call.ack_2xx(&ok, via(&c, "mis1-ack"))).await;
    expect_request(&mut s, "ACK").await;

    // A REGISTER whose forged 200 comes first (from the wrong address), then the 401.
    let mut r = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let own = format!("<{}>", contact_uri(&r, "dave"));
    r.send(&register(&r, "dave@127.0.0.3", "127.0.0.3", &own, "misreg"))
        .await;
    let reg = expect_request(&mut s, "REGISTER").await;
    other_ip.send(&registered_ok(&reg)).await;
    forged_count += 1;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let challenge = "WWW-Authenticate: Digest realm=\"127.0.0.3\", nonce=\"n2\"".to_string();
    s.send(&response(
        &reg,
        401,
        "Unauthorized",
        "registrar",
        &[challenge],
    ))
    .await;
    let first = r.recv().await;
    assert_eq!(
        first.start, "SIP/2.0 401 Unauthorized",
        "the client must see the registrar's 401, not the forged 200:\n{first}"
    );
    let message = pbx_request(
        &s,
        "MESSAGE",
        &format!("sip:dave@{}", peers.proxy),
        "misreg-m@test",
        "misregm",
    );
    s.send(&message).await;
    expect_final(&mut s, 404, "Not Found", false).await;
    assert_silent(&mut r, "the forged 200 must not have bound dave").await;

    let st = stats(&rb).await;
    assert!(
        st.responses_dropped >= forged_count,
        "the {forged_count} misplaced responses are counted as dropped: {st:?}"
    );
}

// ----- 5. binding takeover ---------------------------------------------------------------

/// alice registers (To alice, Contact user alice) from 127.0.0.2; then bob (To bob) from
/// 127.0.0.6 registers a Contact with user `alice` too. The two get different client tokens;
/// the PBX's MESSAGE to the Contact registered for alice reaches alice only, and the one to
/// bob's registered Contact reaches bob only. And extension 100 at two PBXs (two trusted
/// servers) are two clients: different tokens, each PBX's INVITE reaches its own.
#[tokio::test]
async fn binding_takeover_is_impossible() {
    let peers = Peers::new();
    let pbx2_addr = SocketAddr::from((PBX2_IP, peers.port()));
    let mut pbx1 = pbx_at(peers.uas).await;
    let mut pbx2 = pbx_at(pbx2_addr).await;
    let proxy = ports(&peers);
    let _rb = start(
        &peers,
        &[
            "-trusted-server".into(),
            format!("{},{}", udp_server(peers.uas), udp_server(pbx2_addr)),
        ],
    );

    /// Registers `link` for `aor` with `contact_user` at the PBX `pbx` (`host`): the Contact
    /// Roundabout registered for it (checked to carry `;rbc=`).
    async fn registered(
        link: &mut Link,
        pbx: &mut Link,
        aor: &str,
        host: &str,
        contact_user: &str,
        branch: &str,
        proxy: SocketAddr,
    ) -> String {
        let own = format!("<{}>", contact_uri(link, contact_user));
        link.send(&register(link, aor, host, &own, branch)).await;
        let reg = pbx.recv_request("REGISTER").await;
        let theirs = uri_of(&reg.get("Contact"));
        let prefix = format!("sip:{contact_user}@{proxy};rbc=");
        assert!(
            theirs.starts_with(&prefix),
            "{theirs} should start with {prefix}"
        );
        pbx.send(&registered_ok(&reg)).await;
        let ok = expect_final(link, 200, "OK", true).await;
        assert!(ok.get("Contact").starts_with(&own), "{ok}");
        theirs
    }
    let rbc = |uri: &str| -> String {
        let token = uri.split(";rbc=").nth(1).unwrap_or_default();
        token.split(';').next().unwrap_or_default().to_string()
    };

    let mut alice = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let mut bob = Link::connect(Kind::Udp, ATTACKER_IP.into(), &proxy).await;
    let for_alice = registered(
        &mut alice,
        &mut pbx1,
        "alice@127.0.0.3",
        "127.0.0.3",
        "alice",
        "tk-a",
        peers.proxy,
    )
    .await;
    // bob registers later: by user alone he would be alice's "newest" binding.
    let for_bob = registered(
        &mut bob,
        &mut pbx1,
        "bob@127.0.0.3",
        "127.0.0.3",
        "alice",
        "tk-b",
        peers.proxy,
    )
    .await;
    assert_ne!(rbc(&for_alice), rbc(&for_bob), "{for_alice} vs {for_bob}");

    for (target, who) in [(&for_alice, "alice"), (&for_bob, "bob")] {
        let m = pbx_request(
            &pbx1,
            "MESSAGE",
            target,
            &format!("tk-{who}@test"),
            &format!("tkm-{who}"),
        );
        pbx1.send(&m).await;
        let (to, other) = if who == "alice" {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        let expected_uri = contact_uri(to, "alice");
        let got = expect_request(to, "MESSAGE").await;
        assert_eq!(
            got.request_uri(),
            expected_uri,
            "the MESSAGE for {who}:\n{got}"
        );
        to.send(&response(&got, 200, "OK", who, &[])).await;
        expect_final(&mut pbx1, 200, "OK", false).await;
        assert_silent(
            other,
            &format!("the MESSAGE for {who} must reach {who} only"),
        )
        .await;
    }

    // Extension 100 at two PBXs.
    let mut x = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let mut y = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let pbx2_host = PBX2_IP.to_string();
    let for_x = registered(
        &mut x,
        &mut pbx1,
        "100@127.0.0.3",
        "127.0.0.3",
        "100",
        "tk-x",
        peers.proxy,
    )
    .await;
    let for_y = registered(
        &mut y,
        &mut pbx2,
        &format!("100@{pbx2_host}"),
        &pbx2_host,
        "100",
        "tk-y",
        peers.proxy,
    )
    .await;
    assert_ne!(rbc(&for_x), rbc(&for_y), "{for_x} vs {for_y}");

    for (n, (pbx, target)) in [(&mut pbx1, &for_x), (&mut pbx2, &for_y)]
        .into_iter()
        .enumerate()
    {
        let invite = pbx_request(
            pbx,
            "INVITE",
            target,
            &format!("ext100-{n}@test"),
            &format!("ext{n}"),
        );
        pbx.send(&invite).await;
        let (to, other) = if n == 0 {
            (&mut x, &mut y)
        } else {
            (&mut y, &mut x)
        };
        let got = expect_request(to, "INVITE").await;
        assert_eq!(
            got.request_uri(),
            contact_uri(to, "100"),
            "PBX {n}'s INVITE:\n{got}"
        );
        to.send(&response(&got, 486, "Busy Here", "ext100", &[]))
            .await;
        let fin = expect_final(pbx, 486, "Busy Here", true).await;
        pbx.send(&pbx_ack(&invite, &fin)).await;
        expect_request(to, "ACK").await; // Roundabout's own for the 486, hop by hop
                                         // the other extension 100 hears nothing of it
        let heard = collect(other, SILENCE).await;
        assert!(
            heard.is_empty(),
            "PBX {n}'s INVITE must reach its own extension 100 only; the other got [{}]",
            starts(&heard)
        );
    }
}

// ----- 6. the transaction cap ------------------------------------------------------------

/// `-max-transactions 10` with a PBX that never answers: 10 INVITEs (Call-IDs as a phone
/// makes them) each get 100 Trying and are forwarded; the 11th, and a MESSAGE, get `503
/// Service Unavailable - Too Many Transactions` with `Retry-After: 5` and no 100; OPTIONS to
/// Roundabout itself still gets 200; the PBX saw exactly the 10 Call-IDs. Once the
/// transactions are over (`-transaction-timeout 2`), a new INVITE goes through again.
#[tokio::test]
async fn transactions_are_capped() {
    let peers = Peers::new();
    let mut pbx = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ports(&peers);
    let rb = start(
        &peers,
        &flags(&["-max-transactions", "10", "-transaction-timeout", "2"])
            .into_iter()
            .chain(["-trusted-server".into(), udp_server(peers.uas)])
            .collect::<Vec<_>>(),
    );
    let mut s = pbx.link().await;
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    // Call-IDs as phones make them: random-looking hex (fixed here, so runs repeat).
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut call_id = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        format!("{seed:016x}@127.0.0.2")
    };

    let mut forwarded = BTreeSet::new();
    for n in 0..10 {
        let id = call_id();
        let call = Call::new(&c, "alice", "sip:bob@127.0.0.3", &id, &format!("cap{n}"));
        c.send(&call.invite()).await;
        let m = c.recv().await;
        assert_eq!(
            m.status(),
            Some(100),
            "INVITE {} of 10 (Call-ID {id}) must be taken (only {n} transactions held):\n{m}",
            n + 1
        );
        assert_eq!(m.get("Call-ID"), id);
        forwarded.insert(id);
    }
    let eleventh = call_id();
    let call = Call::new(&c, "alice", "sip:bob@127.0.0.3", &eleventh, "cap10");
    c.send(&call.invite()).await;
    let refused = expect_final(
        &mut c,
        503,
        "Service Unavailable - Too Many Transactions",
        false,
    )
    .await;
    assert_eq!(refused.get("Retry-After"), "5", "{refused}");
    c.send(&call.ack_non_2xx(&refused)).await;
    let message = Call::new(&c, "alice", "sip:bob@127.0.0.3", &call_id(), "cap11");
    c.send(&message.message()).await;
    let refused = expect_final(
        &mut c,
        503,
        "Service Unavailable - Too Many Transactions",
        false,
    )
    .await;
    assert_eq!(refused.get("Retry-After"), "5", "{refused}");

    // Roundabout itself still answers.
    let options = format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: {}\r\nFrom: <sip:alice@127.0.0.2>;tag=o1\r\n\
         To: <sip:{}>\r\nCall-ID: {}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        peers.proxy,
        via(&c, "capopt"),
        peers.proxy,
        call_id()
    );
    c.send(&options).await;
    expect_final(&mut c, 200, "OK", false).await;

    // The PBX saw exactly the 10 (retransmissions aside).
    let seen: BTreeSet<String> = collect(&mut s, Duration::from_millis(1500))
        .await
        .iter()
        .filter(|m| m.is_request() && m.method() == "INVITE")
        .map(|m| m.get("Call-ID"))
        .collect();
    assert_eq!(
        seen, forwarded,
        "the PBX must get the 10 taken INVITEs and no other"
    );
    let st = stats(&rb).await;
    assert_eq!(st.requests_refused, 2, "{st:?}");

    // Once they are over (408 after 2 s, then lingering), a new INVITE is taken again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = stats(&rb).await;
        if st.transactions == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "transactions still held: {st:?}");
        // the 408s (and their retransmissions) are ACKed so they end
        for m in collect(&mut c, Duration::from_millis(500)).await {
            if m.status() == Some(408) {
                let ack = Request {
                    method: "ACK",
                    uri: "sip:bob@127.0.0.3",
                    via: m.get("Via"),
                    from: m.get("From"),
                    to: m.get("To"),
                    call_id: &m.get("Call-ID"),
                    cseq: 1,
                    headers: vec![],
                    body: "",
                }
                .render();
                c.send(&ack).await;
            }
        }
    }
    let id = call_id();
    let call = Call::new(&c, "alice", "sip:bob@127.0.0.3", &id, "cap-again");
    c.send(&call.invite()).await;
    let trying = expect_status(&mut c, 100).await;
    assert_eq!(trying.get("Call-ID"), id);
    let inv = expect_request(&mut s, "INVITE").await;
    let inv = if inv.get("Call-ID") == id {
        inv
    } else {
        // an earlier INVITE's last retransmission may still be on its way
        let mut found = None;
        for _ in 0..20 {
            let m = expect_request(&mut s, "INVITE").await;
            if m.get("Call-ID") == id {
                found = Some(m);
                break;
            }
        }
        found.expect("the new INVITE must reach the PBX")
    };
    s.send(&response(&inv, 486, "Busy Here", "bob", &[])).await;
    let fin = expect_final(&mut c, 486, "Busy Here", true).await;
    c.send(&call.ack_non_2xx(&fin)).await;
}

// ----- 7. the token key across restarts --------------------------------------------------

/// `-token-key-file DIR/key`: made at start (mode 0600, 64 hex digits). A call from a UDP
/// client to the PBX: the PBX sees the client's Contact as Roundabout's with `;rbt=`, the
/// client the PBX's likewise. Roundabout is stopped (SIGTERM, exit 0) and started again with
/// the same file and ports: the PBX's BYE to that Contact, along the route set, reaches the
/// client with the client's own Contact as Request-URI, and the client's 200 gets back. The
/// file is unchanged. Control: started again without the file (a random key), the same BYE
/// does not reach the client (the token is ignored, so the Request-URI names Roundabout and
/// no client: 404).
#[tokio::test]
async fn token_key_file_keeps_dialogs_across_restarts() {
    use std::os::unix::fs::PermissionsExt as _;
    let peers = Peers::new();
    let mut pbx = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ports(&peers);
    let key_file = peers.dir().join("key");
    assert!(!key_file.exists());
    let with_key = vec![
        "-trusted-server".to_string(),
        udp_server(peers.uas),
        "-token-key-file".into(),
        key_file.display().to_string(),
    ];
    let mut rb = start(&peers, &with_key);
    let meta = std::fs::metadata(&key_file).expect("the key file must be created");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "key file mode {:o}",
        meta.permissions().mode()
    );
    let key = std::fs::read_to_string(&key_file).unwrap();
    let digits = key.trim();
    assert!(
        digits.len() == 64 && digits.chars().all(|c| c.is_ascii_hexdigit()),
        "the key file must hold 64 hex digits: {key:?}"
    );
    let mut s = pbx.link().await;

    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let call = Call::new(&c, "alice", "sip:bob@127.0.0.3", "restart@test", "rs1");
    c.send(&call.invite()).await;
    let inv = expect_request(&mut s, "INVITE").await;
    let alice_at_pbx = uri_of(&inv.get("Contact"));
    assert!(
        alice_at_pbx.starts_with(&format!("sip:alice@{};rbt=", peers.proxy)),
        "the PBX must see Roundabout's Contact with a token: {alice_at_pbx}"
    );
    let pbx_contact = format!("Contact: <sip:bob@{}>", peers.uas);
    s.send(&response(&inv, 200, "OK", "bob", &[pbx_contact]))
        .await;
    let ok = expect_final(&mut c, 200, "OK", true).await;
    assert!(
        uri_of(&ok.get("Contact")).contains(";rbt="),
        "the caller's 200 carries Roundabout's Contact with a token:\n{ok}"
    );
    c.send(&call.ack_2xx(&ok, via(&c, "rs1-ack"))).await;
    expect_request(&mut s, "ACK").await;

    // The PBX's BYE: to the Contact it got, along the Record-Route (a UAS keeps its order).
    let route: Vec<String> = inv
        .all("Record-Route")
        .into_iter()
        .map(|r| format!("Route: {r}"))
        .collect();
    assert!(
        !route.is_empty(),
        "Roundabout record-routes the INVITE:\n{inv}"
    );
    let pbx_local = s.local;
    let bye = |branch: &str| {
        Request {
            method: "BYE",
            uri: &alice_at_pbx,
            via: via_from(Kind::Udp, pbx_local, branch),
            from: ok.get("To"),
            to: call.from.clone(),
            call_id: &call.call_id,
            cseq: 1,
            headers: route.clone(),
            body: "",
        }
        .render()
    };

    let status = rb.stop().expect("roundabout stopped");
    assert_eq!(status.code(), Some(0), "{}", rb.report());
    let mut rb = start(&peers, &with_key);
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        key,
        "the key file must be read, not replaced"
    );
    s.send(&bye("rs-bye1")).await;
    let got = expect_request(&mut c, "BYE").await;
    assert_eq!(
        got.request_uri(),
        contact_uri(&c, "alice"),
        "after a restart with the same key the BYE reaches the client at its own Contact:\n{got}"
    );
    c.send(&response(&got, 200, "OK", "x", &[])).await;
    let fin = expect_final(&mut s, 200, "OK", false).await;
    assert_eq!(cseq_method(&fin), "BYE", "{fin}");

    // Control: a new random key. The token is not restored.
    let status = rb.stop().expect("roundabout stopped");
    assert_eq!(status.code(), Some(0), "{}", rb.report());
    let _rb = start(&peers, &["-trusted-server".into(), udp_server(peers.uas)]);
    s.send(&bye("rs-bye2")).await;
    let fin = expect_final(&mut s, 404, "Not Found", false).await;
    assert_eq!(cseq_method(&fin), "BYE", "{fin}");
    assert_silent(
        &mut c,
        "with another key the old token must not reach the client",
    )
    .await;
}
