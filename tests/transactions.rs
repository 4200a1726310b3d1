//! End-to-end tests of the RFC 3261 transaction rules (sections 16 and 17) through the real
//! `roundabout` binary: raw-socket SIP peers (`tests/transport_peers`) on the loopback
//! addresses of `tests/common` (Roundabout 127.0.0.1, caller 127.0.0.2, trusted server
//! 127.0.0.3), and SIPp with Kamailio for a lossy run.
//!
//! The rules are the specification; each test names the one it checks:
//!
//! - a 2xx that comes after Roundabout answered the caller itself (Timer C, then 408) is
//!   still forwarded upstream, and Roundabout does not ACK it (16.7 step 5);
//! - Timer C restarts on every provisional; when it fires, the CANCEL's 487 reaches the
//!   caller and Roundabout ACKs the 487 hop by hop;
//! - a CANCEL is answered 200 at once but forwarded only after a provisional (9.1), and is
//!   retransmitted on UDP (Timer E);
//! - a CANCEL without an INVITE transaction is forwarded statelessly (16.10);
//! - a retransmitted INVITE gets the latest provisional and is not forwarded again;
//! - 2xx retransmissions from a UDP server reach a TCP or WS caller on its own connection;
//! - a 2xx from a reliable server is retransmitted to a UDP caller until its ACK;
//! - SIPp with 10 % loss on UDP calls a TCP SIPp through Roundabout (and through Kamailio,
//!   for comparison);
//! - an ACK for a final Roundabout sent statelessly is absorbed;
//! - a closed connection ends only the binding that was made on it.
//!
//! Timers are shortened with `-ringing-timeout` (Timer C) and `-transaction-timeout`
//! (Timer B/F). Every read is bounded; nothing is skipped.

mod common;
mod transport_peers;

use common::{sipp_call_counts, Peers, Proc, Transport, UAC_IP};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use transport_peers::*;

/// Host a browser client writes into its Via and Contact (JsSIP style).
const INVALID_HOST: &str = "df7jal23ls0d.invalid";

/// The caller's From (with its tag) and the To of its requests.
const FROM: &str = "<sip:alice@127.0.0.2>;tag=alice-tx";
const TO: &str = "<sip:bob@127.0.0.3>";

/// Request-URI of the calls: the trusted server by its IP (port and transport from the
/// `-trusted-server` dataset).
const BOB: &str = "sip:bob@127.0.0.3";

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
                   m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

// ----- set-up ----------------------------------------------------------------------------

/// Roundabout with all five listeners of `proxy`, `-strict-host`, one trusted server
/// (`server` over `kind`) and `extra` flags.
fn start(
    peers: &Peers,
    proxy: &ProxyPorts,
    server: SocketAddr,
    kind: Kind,
    extra: &[&str],
) -> Proc {
    let mut flags = vec![
        "-strict-host".to_string(),
        "-trusted-server".to_string(),
        format!("{}::{}:{}:", server.ip(), server.port(), kind.name()),
    ];
    flags.extend(extra.iter().map(|s| s.to_string()));
    proxy.start_roundabout(peers, &flags, None)
}

/// A Via a client on `link` writes (`;rport`, sent-by = its socket).
fn via(link: &Link, branch: &str) -> String {
    format!(
        "SIP/2.0/{} {};branch=z9hG4bK{branch};rport",
        link.kind.via(),
        link.local
    )
}

fn contact(link: &Link, user: &str) -> String {
    format!("<sip:{user}@{}{}>", link.local, link.kind.uri_param())
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

fn is_final_for(m: &Msg, method: &str) -> bool {
    m.status().is_some_and(|s| s >= 200) && cseq_method(m) == method
}

/// One call from the caller: what its INVITE, CANCEL and ACKs share.
struct Call {
    uri: String,
    /// The INVITE's Via (also the CANCEL's and the non-2xx ACK's).
    via: String,
    call_id: String,
    contact: String,
}

impl Call {
    fn new(uri: &str, via: String, call_id: &str, contact: String) -> Call {
        Call {
            uri: uri.to_string(),
            via,
            call_id: call_id.to_string(),
            contact,
        }
    }

    fn request(
        &self,
        method: &'static str,
        via: String,
        to: String,
        headers: Vec<String>,
    ) -> String {
        Request {
            method,
            uri: &self.uri,
            via,
            from: FROM.into(),
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
        self.request("INVITE", self.via.clone(), TO.into(), vec![contact])
    }

    /// CANCEL: same Request-URI, Call-ID, From, To, CSeq number and Via (RFC 3261 9.1).
    fn cancel(&self) -> String {
        self.request("CANCEL", self.via.clone(), TO.into(), vec![])
    }

    /// ACK for a non-2xx final: the INVITE's Via, the final's To (RFC 3261 17.1.1.3).
    fn ack_non_2xx(&self, fin: &Msg) -> String {
        self.request("ACK", self.via.clone(), fin.get("To"), vec![])
    }

    /// ACK for a 2xx: a new transaction (new branch) to the 2xx's Contact along its route
    /// set (RFC 3261 13.2.2.4).
    fn ack_2xx(&self, ok: &Msg, via: String) -> String {
        Request {
            method: "ACK",
            uri: &uri_of(&ok.get("Contact")),
            via,
            from: FROM.into(),
            to: ok.get("To"),
            call_id: &self.call_id,
            cseq: 1,
            headers: ok.route_set(),
            body: "",
        }
        .render()
    }
}

// ----- reading ---------------------------------------------------------------------------

/// Reads from `link` for `within`: every message with its arrival time.
async fn collect(link: &mut Link, within: Duration) -> Vec<(Msg, Instant)> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match link.recv_within(left).await {
            Some(m) => seen.push((m, Instant::now())),
            None => break,
        }
    }
    seen
}

/// Reads from `link` until a message satisfies `pred` (returned with its arrival time) or
/// `within` has passed; also returns what was read before it.
async fn wait_for(
    link: &mut Link,
    within: Duration,
    pred: impl Fn(&Msg) -> bool,
) -> (Option<(Msg, Instant)>, Vec<Msg>) {
    let deadline = Instant::now() + within;
    let mut before = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match link.recv_within(left).await {
            Some(m) if pred(&m) => return (Some((m, Instant::now())), before),
            Some(m) => before.push(m),
            None => break,
        }
    }
    (None, before)
}

/// As [`wait_for`], panicking with `what` and the messages read when nothing matches.
async fn expect(
    link: &mut Link,
    within: Duration,
    what: &str,
    pred: impl Fn(&Msg) -> bool,
) -> (Msg, Instant) {
    match wait_for(link, within, pred).await {
        (Some(found), _) => found,
        (None, before) => panic!(
            "{what}: nothing within {within:?}; {} read instead: [{}]",
            link.kind.name(),
            starts(&before)
        ),
    }
}

async fn expect_request(link: &mut Link, method: &str, within: Duration) -> (Msg, Instant) {
    let what = format!("expected a {method}");
    expect(link, within, &what, |m| {
        m.is_request() && m.method() == method
    })
    .await
}

/// The start lines of `msgs` (with their CSeq), for failure messages.
fn starts(msgs: &[Msg]) -> String {
    msgs.iter()
        .map(|m| format!("{} ({})", m.start, m.first("CSeq").unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn starts_timed(msgs: &[(Msg, Instant)], since: Instant) -> String {
    msgs.iter()
        .map(|(m, t)| format!("{:.2}s {}", t.duration_since(since).as_secs_f64(), m.start))
        .collect::<Vec<_>>()
        .join("; ")
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ----- checks ----------------------------------------------------------------------------

/// The request came from Roundabout over `kind`: its Via on top, then `below` more.
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

/// A response reached the caller with exactly the one Via it sent.
fn assert_caller_via(m: &Msg, call: &Call) {
    let vias = m.all("Via");
    assert_eq!(vias.len(), 1, "the caller must get only its own Via:\n{m}");
    assert_eq!(branch_of(&vias[0]), branch_of(&call.via), "{m}");
}

/// Roundabout's CANCEL matches the INVITE it forwarded (RFC 3261 9.1): same Request-URI,
/// Call-ID, From, To, CSeq number, and one Via, the INVITE's top one (same branch).
fn assert_cancel_matches(cancel: &Msg, inv: &Msg) {
    assert_eq!(
        cancel.request_uri(),
        inv.request_uri(),
        "CANCEL R-URI:\n{cancel}"
    );
    let vias = cancel.all("Via");
    assert_eq!(
        vias.len(),
        1,
        "a CANCEL carries only the top Via of its INVITE:\n{cancel}"
    );
    assert_eq!(
        branch_of(&vias[0]),
        branch_of(&inv.all("Via")[0]),
        "the CANCEL's branch is the INVITE's:\n{cancel}\n--- INVITE:\n{inv}"
    );
    for h in ["Call-ID", "From", "To"] {
        assert_eq!(cancel.get(h), inv.get(h), "CANCEL {h}:\n{cancel}");
    }
    let number = inv
        .get("CSeq")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(cancel.get("CSeq"), format!("{number} CANCEL"), "{cancel}");
}

/// Roundabout's own ACK for a non-2xx final `to_tag` it got for `inv` (hop by hop, RFC
/// 3261 17.1.1.3): the INVITE's Request-URI, its top Via only, the final's To tag.
fn assert_hop_by_hop_ack(ack: &Msg, inv: &Msg, to_tag: &str) {
    assert_eq!(ack.request_uri(), inv.request_uri(), "ACK R-URI:\n{ack}");
    let vias = ack.all("Via");
    assert_eq!(
        vias.len(),
        1,
        "Roundabout's own ACK has only its Via:\n{ack}"
    );
    assert_eq!(
        branch_of(&vias[0]),
        branch_of(&inv.all("Via")[0]),
        "the ACK for a non-2xx has the INVITE's branch:\n{ack}"
    );
    assert_eq!(tag_of(&ack.get("To")).as_deref(), Some(to_tag), "{ack}");
    assert_eq!(cseq_method(ack), "ACK", "{ack}");
}

// ----- 1. a 2xx after a local final ------------------------------------------------------

/// RFC 3261 16.7 step 5 / 16.8: Timer C fires on a ringing INVITE: CANCEL to the server
/// (same branch and Request-URI); the server ignores it; after the transaction timeout the
/// caller gets 408. A 200 the server sends after that still goes to the caller, Roundabout
/// does not ACK it itself, and the caller's own ACK reaches the server.
#[tokio::test]
async fn late_2xx_after_local_final_is_forwarded() {
    let peers = Peers::new();
    let mut srv = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ProxyPorts::new(&peers);
    let _rb = start(
        &peers,
        &proxy,
        peers.uas,
        Kind::Udp,
        &["-ringing-timeout", "2", "-transaction-timeout", "3"],
    );
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let call = Call::new(BOB, via(&c, "late1"), "late-2xx@test", contact(&c, "alice"));
    c.send(&call.invite()).await;

    let mut s = srv.link().await;
    let (inv, _) = expect_request(&mut s, "INVITE", Duration::from_secs(5)).await;
    assert_roundabout_via(&inv, Kind::Udp, &proxy, 1);
    let bob_contact = format!("Contact: <sip:bob@{}>", peers.uas);
    s.send(&response(
        &inv,
        180,
        "Ringing",
        "bob-late",
        std::slice::from_ref(&bob_contact),
    ))
    .await;
    let rang = Instant::now();
    expect(
        &mut c,
        Duration::from_secs(5),
        "the caller should get the 180",
        |m| m.status() == Some(180),
    )
    .await;

    // Timer C (2 s): CANCEL for the INVITE Roundabout sent.
    let (cancel, cancelled) = expect_request(&mut s, "CANCEL", Duration::from_secs(5)).await;
    let after = cancelled - rang;
    assert!(
        (1.7..=3.5).contains(&secs(after)),
        "CANCEL {after:?} after the 180, Timer C is 2 s"
    );
    assert_cancel_matches(&cancel, &inv);

    // The server ignores the CANCEL: 408 to the caller once the transaction times out.
    let (timeout, answered) = expect(
        &mut c,
        Duration::from_secs(7),
        "the caller should get a final answer after the transaction timeout",
        |m| is_final_for(m, "INVITE"),
    )
    .await;
    assert_eq!(timeout.status(), Some(408), "{timeout}");
    let waited = answered - cancelled;
    assert!(
        secs(waited) >= 2.5,
        "408 only {waited:?} after the CANCEL: the transaction timeout (-transaction-timeout 3) \
         had not passed"
    );
    assert_caller_via(&timeout, &call);
    c.send(&call.ack_non_2xx(&timeout)).await;

    // The late 200: forwarded to the caller.
    s.send(&response(&inv, 200, "OK", "bob-late", &[bob_contact]))
        .await;
    let sent_200 = Instant::now();
    let (ok, _) = expect(
        &mut c,
        Duration::from_secs(3),
        "a 200 after the local 408 must still reach the caller (RFC 3261 16.7 step 5)",
        |m| m.status() == Some(200) && cseq_method(m) == "INVITE",
    )
    .await;
    assert_caller_via(&ok, &call);
    assert_eq!(tag_of(&ok.get("To")).as_deref(), Some("bob-late"), "{ok}");

    // Roundabout does not ACK a 2xx itself: the server hears no ACK (CANCEL retransmissions
    // are fine) until the caller sends one.
    let heard = collect(&mut s, Duration::from_secs(2)).await;
    assert!(
        !heard
            .iter()
            .any(|(m, _)| m.is_request() && m.method() == "ACK"),
        "the server got an ACK before the caller sent one for the 2xx (Roundabout must not \
         ACK a 2xx itself, nor forward the ACK for its own 408): [{}]",
        starts_timed(&heard, sent_200)
    );

    let ack_via = via(&c, "late1-ack");
    c.send(&call.ack_2xx(&ok, ack_via.clone())).await;
    let (ack, _) = expect_request(&mut s, "ACK", Duration::from_secs(3)).await;
    assert_roundabout_via(&ack, Kind::Udp, &proxy, 1);
    assert_eq!(branch_of(&ack.all("Via")[1]), branch_of(&ack_via), "{ack}");
    assert_eq!(ack.request_uri(), format!("sip:bob@{}", peers.uas), "{ack}");
    let more = collect(&mut s, Duration::from_secs(1)).await;
    let acks = more
        .iter()
        .filter(|(m, _)| m.is_request() && m.method() == "ACK")
        .count();
    assert_eq!(
        acks,
        0,
        "exactly the caller's ACK: [{}]",
        starts_timed(&more, sent_200)
    );
}

// ----- 2. Timer C restarts on every provisional; 487 forwarded ---------------------------

/// Timer C restarts with every provisional (RFC 3261 16.7 step 2): with
/// `-ringing-timeout 2`, a 183 at 1.5 s pushes the CANCEL to about 2 s after it. The
/// server's 487 then reaches the caller (not a 408), and Roundabout ACKs the 487 itself.
#[tokio::test]
async fn timer_c_cancel_forwards_487() {
    let peers = Peers::new();
    let mut srv = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ProxyPorts::new(&peers);
    let _rb = start(
        &peers,
        &proxy,
        peers.uas,
        Kind::Udp,
        &["-ringing-timeout", "2"],
    );
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let call = Call::new(
        BOB,
        via(&c, "timerc1"),
        "timer-c@test",
        contact(&c, "alice"),
    );
    c.send(&call.invite()).await;

    let mut s = srv.link().await;
    let (inv, _) = expect_request(&mut s, "INVITE", Duration::from_secs(5)).await;
    s.send(&response(&inv, 180, "Ringing", "bob-c", &[])).await;
    let rang = Instant::now();
    let early = collect(&mut s, Duration::from_millis(1500)).await;
    assert!(
        !early.iter().any(|(m, _)| m.method() == "CANCEL"),
        "CANCEL before Timer C could fire: [{}]",
        starts_timed(&early, rang)
    );
    s.send(&response(&inv, 183, "Session Progress", "bob-c", &[]))
        .await;
    let progressed = Instant::now();

    let (cancel, cancelled) = expect_request(&mut s, "CANCEL", Duration::from_secs(5)).await;
    let after = cancelled - progressed;
    assert!(
        secs(after) >= 1.8,
        "CANCEL {after:?} after the 183 ({:?} after the 180): Timer C must restart on every \
         provisional",
        cancelled - rang
    );
    assert!(
        secs(after) <= 3.5,
        "CANCEL {after:?} after the 183, Timer C is 2 s"
    );
    assert_cancel_matches(&cancel, &inv);

    s.send(&response(&cancel, 200, "OK", "bob-c", &[])).await;
    s.send(&response(&inv, 487, "Request Terminated", "bob-c", &[]))
        .await;
    let (fin, _) = expect(
        &mut c,
        Duration::from_secs(5),
        "the caller should get the server's 487",
        |m| is_final_for(m, "INVITE"),
    )
    .await;
    assert_eq!(
        fin.status(),
        Some(487),
        "the caller must get the 487, not a local answer:\n{fin}"
    );
    assert_caller_via(&fin, &call);

    let (ack, _) = expect_request(&mut s, "ACK", Duration::from_secs(3)).await;
    assert_hop_by_hop_ack(&ack, &inv, "bob-c");

    // The caller's own ACK for the 487 is absorbed (hop by hop).
    c.send(&call.ack_non_2xx(&fin)).await;
    let more = collect(&mut s, Duration::from_secs(1)).await;
    assert!(
        !more.iter().any(|(m, _)| m.method() == "ACK"),
        "the caller's ACK for the 487 must not be forwarded: [{}]",
        starts_timed(&more, cancelled)
    );
}

// ----- 3. CANCEL waits for a provisional --------------------------------------------------

/// RFC 3261 9.1 and 16.10: the caller's CANCEL is answered 200 at once, but the CANCEL
/// towards the server waits until the server has sent a provisional. Then 200 (CANCEL),
/// 487 (INVITE) to the caller, and Roundabout's ACK for the 487. On a UDP server that
/// never answers the CANCEL, Roundabout retransmits it (Timer E: 0.5 s, then 1 s).
async fn cancel_waits_for_a_provisional(server: Kind) {
    let peers = Peers::new();
    let mut srv = Server::listen(server, peers.uas, None).await;
    let proxy = ProxyPorts::new(&peers);
    let _rb = start(&peers, &proxy, peers.uas, server, &[]);
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let name = server.name();
    let call = Call::new(
        BOB,
        via(&c, &format!("cw-{name}")),
        &format!("cancel-wait-{name}@test"),
        contact(&c, "alice"),
    );
    c.send(&call.invite()).await;
    let mut s = srv.link().await;
    let (inv, _) = expect_request(&mut s, "INVITE", Duration::from_secs(5)).await;
    assert_roundabout_via(&inv, server, &proxy, 1);

    c.send(&call.cancel()).await;
    let (cancel_ok, _) = expect(
        &mut c,
        Duration::from_secs(1),
        "the caller's CANCEL should be answered at once",
        |m| is_final_for(m, "CANCEL"),
    )
    .await;
    assert_eq!(cancel_ok.status(), Some(200), "{cancel_ok}");
    assert_caller_via(&cancel_ok, &call);

    // No provisional yet: no CANCEL (on UDP the INVITE's own retransmissions may come).
    let quiet = collect(&mut s, Duration::from_secs(1)).await;
    assert!(
        !quiet.iter().any(|(m, _)| m.method() == "CANCEL"),
        "{name} server: CANCEL sent before any provisional (RFC 3261 9.1): [{}]",
        starts(&quiet.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>())
    );

    s.send(&response(&inv, 180, "Ringing", "bob-cw", &[])).await;
    let rang = Instant::now();
    let (cancel, first) = expect_request(&mut s, "CANCEL", Duration::from_secs(2)).await;
    assert!(
        secs(first - rang) <= 1.0,
        "the CANCEL came {:?} after the 180, not right after it",
        first - rang
    );
    assert_cancel_matches(&cancel, &inv);

    if server == Kind::Udp {
        // Unanswered: Timer E retransmits the CANCEL at T1, then 2*T1.
        let mut times = vec![first];
        for (m, t) in collect(&mut s, Duration::from_millis(2200)).await {
            if m.method() == "CANCEL" {
                assert_cancel_matches(&m, &inv);
                times.push(t);
            }
        }
        let gaps: Vec<f64> = times.windows(2).map(|w| secs(w[1] - w[0])).collect();
        assert!(
            gaps.len() >= 2,
            "an unanswered CANCEL on UDP must be retransmitted (Timer E); gaps {gaps:?}"
        );
        assert!(
            (0.3..=0.9).contains(&gaps[0]) && (0.7..=1.5).contains(&gaps[1]),
            "CANCEL retransmissions should come after ~0.5 s then ~1 s: {gaps:?}"
        );
    }

    s.send(&response(&cancel, 200, "OK", "bob-cw", &[])).await;
    s.send(&response(&inv, 487, "Request Terminated", "bob-cw", &[]))
        .await;
    let (fin, _) = expect(
        &mut c,
        Duration::from_secs(5),
        "the caller should get the 487",
        |m| is_final_for(m, "INVITE"),
    )
    .await;
    assert_eq!(fin.status(), Some(487), "{fin}");
    assert_caller_via(&fin, &call);
    let (ack, _) = expect_request(&mut s, "ACK", Duration::from_secs(3)).await;
    assert_hop_by_hop_ack(&ack, &inv, "bob-cw");
    c.send(&call.ack_non_2xx(&fin)).await;
}

#[tokio::test]
async fn cancel_waits_for_a_provisional_tcp_server() {
    cancel_waits_for_a_provisional(Kind::Tcp).await;
}

#[tokio::test]
async fn cancel_waits_for_a_provisional_udp_server_retransmitted() {
    cancel_waits_for_a_provisional(Kind::Udp).await;
}

// ----- 4. unmatched CANCEL ---------------------------------------------------------------

/// RFC 3261 16.10: a CANCEL that matches no INVITE transaction is forwarded statelessly,
/// not answered 481 by Roundabout. Whether the server's answer then reaches the caller is
/// not checked: a response that matches no transaction is dropped (README, Proxy
/// behaviour; RFC 3261 16.11 allows it), so the caller may hear nothing at all — but
/// nothing Roundabout made up itself.
#[tokio::test]
async fn unmatched_cancel_is_forwarded_statelessly() {
    let peers = Peers::new();
    let mut srv = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ProxyPorts::new(&peers);
    let _rb = start(&peers, &proxy, peers.uas, Kind::Udp, &[]);
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let call = Call::new(
        BOB,
        via(&c, "stray1"),
        "stray-cancel@test",
        contact(&c, "alice"),
    );
    c.send(&call.cancel()).await;

    let mut s = srv.link().await;
    let Some(cancel) = s.recv_within(Duration::from_secs(3)).await else {
        let got = c.recv_within(Duration::from_millis(500)).await;
        panic!(
            "a CANCEL without a transaction must be forwarded (RFC 3261 16.10); the server got \
             nothing, the caller got: {}",
            got.map_or("nothing".to_string(), |m| m.to_string())
        );
    };
    assert!(
        cancel.is_request() && cancel.method() == "CANCEL",
        "{cancel}"
    );
    assert_roundabout_via(&cancel, Kind::Udp, &proxy, 1);
    assert_eq!(
        branch_of(&cancel.all("Via")[1]),
        branch_of(&call.via),
        "{cancel}"
    );
    assert_eq!(cancel.request_uri(), BOB, "{cancel}");
    assert_eq!(cancel.get("Max-Forwards"), "69", "{cancel}");

    s.send(&response(
        &cancel,
        481,
        "Call/Transaction Does Not Exist",
        "srv481",
        &[],
    ))
    .await;
    // Anything the caller hears about its CANCEL must be the server's (To tag srv481).
    let heard = collect(&mut c, Duration::from_millis(1500)).await;
    for (m, _) in &heard {
        assert!(
            !(is_final_for(m, "CANCEL") && tag_of(&m.get("To")).as_deref() != Some("srv481")),
            "Roundabout answered the stray CANCEL itself:\n{m}"
        );
        if is_final_for(m, "CANCEL") {
            assert_eq!(m.status(), Some(481), "{m}");
            assert_caller_via(m, &call);
        }
    }
}

// ----- 5. INVITE retransmission -----------------------------------------------------------

/// RFC 3261 17.2.1: a retransmitted INVITE is answered with the latest provisional (the
/// 180, not a 100) and not forwarded again.
#[tokio::test]
async fn invite_retransmission_gets_latest_provisional() {
    let peers = Peers::new();
    let mut srv = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ProxyPorts::new(&peers);
    let _rb = start(&peers, &proxy, peers.uas, Kind::Udp, &[]);
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let call = Call::new(
        BOB,
        via(&c, "rtx1"),
        "invite-rtx@test",
        contact(&c, "alice"),
    );
    let invite = call.invite();
    c.send(&invite).await;

    let mut s = srv.link().await;
    let (inv, _) = expect_request(&mut s, "INVITE", Duration::from_secs(5)).await;
    s.send(&response(&inv, 180, "Ringing", "bob-rtx", &[]))
        .await;
    expect(
        &mut c,
        Duration::from_secs(5),
        "the caller should get the 180",
        |m| m.status() == Some(180),
    )
    .await;

    c.send(&invite).await;
    let again = c
        .recv_within(Duration::from_secs(2))
        .await
        .expect("a retransmitted INVITE must be answered with the last provisional");
    assert_eq!(
        again.status(),
        Some(180),
        "the retransmitted INVITE must get the latest provisional (180):\n{again}"
    );
    assert_caller_via(&again, &call);
    assert_eq!(
        tag_of(&again.get("To")).as_deref(),
        Some("bob-rtx"),
        "{again}"
    );

    let heard = collect(&mut s, Duration::from_millis(1500)).await;
    assert!(
        !heard.iter().any(|(m, _)| m.method() == "INVITE"),
        "the server must not get the INVITE twice: [{}]",
        starts(&heard.into_iter().map(|(m, _)| m).collect::<Vec<_>>())
    );
}

// ----- 6. 2xx retransmissions follow the caller's flow ------------------------------------

/// A UDP server retransmits its 200 (same bytes, 0.5 s apart): every copy reaches a TCP or
/// WS caller on the connection its INVITE came on, and Roundabout connects nowhere else
/// (for TCP, a listener on the port the caller's Via names, no `rport`, gets nothing).
async fn accepted_2xx_retransmissions_follow_the_flow(client: Kind) {
    let peers = Peers::new();
    let mut srv = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ProxyPorts::new(&peers);
    let _rb = start(&peers, &proxy, peers.uas, Kind::Udp, &[]);
    let decoy_addr = SocketAddr::new(UAC_IP.into(), peers.port());
    let decoy = tokio::net::TcpListener::bind(decoy_addr)
        .await
        .expect("binding the decoy listener");
    let mut c = Link::connect(client, UAC_IP.into(), &proxy).await;
    let name = client.name();
    // What a browser or a TCP phone writes: a Via that does not name the real source.
    let (via, contact) = if client.is_ws() {
        (
            format!(
                "SIP/2.0/{} {INVALID_HOST};branch=z9hG4bKflow-{name}",
                client.via()
            ),
            format!("<sip:alice@{INVALID_HOST};transport=ws>"),
        )
    } else {
        assert_ne!(c.local, decoy_addr);
        (
            format!(
                "SIP/2.0/{} {decoy_addr};branch=z9hG4bKflow-{name}",
                client.via()
            ),
            format!("<sip:alice@{decoy_addr};transport=tcp>"),
        )
    };
    let call = Call::new(BOB, via, &format!("flow-{name}@test"), contact);
    c.send(&call.invite()).await;

    let mut s = srv.link().await;
    let (inv, _) = expect_request(&mut s, "INVITE", Duration::from_secs(5)).await;
    assert_roundabout_via(&inv, Kind::Udp, &proxy, 1);
    let ok = response(
        &inv,
        200,
        "OK",
        "bob-flow",
        &[format!("Contact: <sip:bob@{}>", peers.uas)],
    );
    let start = Instant::now();
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        s.send(&ok).await;
    }

    let copies: Vec<(Msg, Instant)> = collect(&mut c, Duration::from_millis(2000))
        .await
        .into_iter()
        .filter(|(m, _)| m.status() == Some(200) && cseq_method(m) == "INVITE")
        .collect();
    assert_eq!(
        copies.len(),
        3,
        "{name} caller: each of the server's three 200s must reach it on its connection: [{}]",
        starts_timed(&copies, start)
    );
    let first = copies[0].0.to_string();
    for (m, _) in &copies {
        assert_caller_via(m, &call);
        assert_eq!(m.to_string(), first, "the copies must be the same 200");
    }
    let stray = tokio::time::timeout(Duration::from_millis(300), decoy.accept()).await;
    assert!(
        stray.is_err(),
        "Roundabout connected to the address of the caller's Via ({decoy_addr}) instead of \
         using the caller's connection"
    );

    let (ok, _) = &copies[0];
    let ack_via = if client.is_ws() {
        format!(
            "SIP/2.0/{} {INVALID_HOST};branch=z9hG4bKflow-{name}-ack",
            client.via()
        )
    } else {
        format!(
            "SIP/2.0/{} {decoy_addr};branch=z9hG4bKflow-{name}-ack",
            client.via()
        )
    };
    c.send(&call.ack_2xx(ok, ack_via)).await;
    let (ack, _) = expect_request(&mut s, "ACK", Duration::from_secs(3)).await;
    assert_roundabout_via(&ack, Kind::Udp, &proxy, 1);
}

#[tokio::test]
async fn accepted_2xx_retransmissions_follow_the_flow_tcp() {
    accepted_2xx_retransmissions_follow_the_flow(Kind::Tcp).await;
}

#[tokio::test]
async fn accepted_2xx_retransmissions_follow_the_flow_ws() {
    accepted_2xx_retransmissions_follow_the_flow(Kind::Ws).await;
}

// ----- 7. 2xx from a reliable server retransmitted to a UDP caller -------------------------

/// A TCP server sends its 200 once and never again; the UDP caller's copy may be lost, so
/// Roundabout retransmits it on the UDP leg: T1, 2*T1, 4*T1 (capped at T2) until the
/// caller's ACK, which stops them and reaches the server.
#[tokio::test]
async fn reliable_server_2xx_is_retransmitted_to_udp_caller() {
    let peers = Peers::new();
    let mut srv = Server::listen(Kind::Tcp, peers.uas, None).await;
    let proxy = ProxyPorts::new(&peers);
    let _rb = start(&peers, &proxy, peers.uas, Kind::Tcp, &[]);
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let call = Call::new(
        BOB,
        via(&c, "rel1"),
        "reliable-2xx@test",
        contact(&c, "alice"),
    );
    c.send(&call.invite()).await;

    let mut s = srv.link().await;
    let (inv, _) = expect_request(&mut s, "INVITE", Duration::from_secs(5)).await;
    assert_roundabout_via(&inv, Kind::Tcp, &proxy, 1);
    let server_contact = format!("sip:bob@{};transport=tcp", peers.uas);
    s.send(&response(
        &inv,
        200,
        "OK",
        "bob-rel",
        &[format!("Contact: <{server_contact}>")],
    ))
    .await;

    let is_ok = |m: &Msg| m.status() == Some(200) && cseq_method(m) == "INVITE";
    let (ok, first) = expect(
        &mut c,
        Duration::from_secs(5),
        "the caller should get the 200",
        is_ok,
    )
    .await;
    assert_caller_via(&ok, &call);
    let mut times = vec![first];
    while times.len() < 4 {
        match wait_for(&mut c, Duration::from_secs(3), is_ok).await {
            (Some((m, t)), _) => {
                assert_eq!(
                    m.to_string(),
                    ok.to_string(),
                    "a retransmission is the same 200"
                );
                times.push(t);
            }
            (None, _) => break,
        }
    }
    let gaps: Vec<f64> = times.windows(2).map(|w| secs(w[1] - w[0])).collect();
    assert_eq!(
        times.len(),
        4,
        "without an ACK the UDP caller must get the 200 again (T1, 2*T1, 4*T1); copies after \
         the first at gaps {gaps:?}"
    );
    for (gap, want) in gaps.iter().zip([0.5, 1.0, 2.0]) {
        assert!(
            (want * 0.6..=want * 1.6 + 0.1).contains(gap),
            "2xx retransmission gaps {gaps:?}, expected ~0.5, 1, 2 s"
        );
    }

    let ack_via = via(&c, "rel1-ack");
    c.send(&call.ack_2xx(&ok, ack_via.clone())).await;
    let acked = Instant::now();
    let (ack, _) = expect_request(&mut s, "ACK", Duration::from_secs(3)).await;
    assert_roundabout_via(&ack, Kind::Tcp, &proxy, 1);
    assert_eq!(branch_of(&ack.all("Via")[1]), branch_of(&ack_via), "{ack}");
    assert_eq!(ack.request_uri(), server_contact, "{ack}");

    // The next retransmission would have come 4 s after the last one.
    let after = collect(&mut c, Duration::from_millis(4500)).await;
    assert!(
        !after.iter().any(|(m, _)| is_ok(m)),
        "the ACK must stop the 2xx retransmissions: [{}]",
        starts_timed(&after, acked)
    );
}

// ----- 8. SIPp with loss, Roundabout and Kamailio ------------------------------------------

const LOSSY_CALLS: u64 = 50;

/// One run of [`LOSSY_CALLS`] calls from a SIPp UAC on UDP losing 10 % of its messages to a
/// SIPp UAS on TCP, through Roundabout or Kamailio. Returns the UAC's (successful, failed)
/// counts, its exit, the UAS's result, and the run's peers (their logs are kept if the test
/// fails after this returns).
fn lossy_run(through_kamailio: bool) -> ((u64, u64), Option<i32>, Result<(), String>, Peers) {
    let p = Peers::new();
    let server = format!("{}::{}:tcp:", p.uas.ip(), p.uas.port());
    let (middle, next_hop) = if through_kamailio {
        (
            p.kamailio_registrar(p.kamailio, &["NO_INVITE_AUTH"]),
            p.kamailio,
        )
    } else {
        (
            p.roundabout_udp_tcp(&["-strict-host", "-ack-ruri", "-trusted-server", &server]),
            p.proxy,
        )
    };
    let calls = LOSSY_CALLS.to_string();
    let uas = p.sipp_server(
        "uas-call-lossy.xml",
        p.uas,
        Transport::Tcp,
        &["-m", &calls, "-timeout", "60s"],
    );
    let stat = p.dir().join("uac-stat.csv");
    let stat_arg = stat.display().to_string();
    let rsa = next_hop.to_string();
    let mut uac = p.sipp_client(
        "uac-call-lossy.xml",
        p.uas,
        p.uac,
        Transport::Udp,
        &[
            "-s",
            "bob",
            "-rsa",
            &rsa,
            "-key",
            "uri_params",
            ";transport=tcp",
            "-m",
            &calls,
            "-r",
            "10",
            "-lost",
            "10",
            "-timeout",
            "60s",
            "-trace_stat",
            "-stf",
            &stat_arg,
            "-fd",
            "1",
        ],
    );
    let status = uac.wait_timeout(Duration::from_secs(75));
    assert!(
        status.is_some(),
        "the lossy SIPp run did not finish{}\n{}",
        if through_kamailio { " (Kamailio)" } else { "" },
        uac.report()
    );
    let counts = sipp_call_counts(&stat)
        .unwrap_or_else(|| panic!("no SIPp statistics in {}\n{}", stat.display(), uac.report()));
    let uas_result = uas.wait_success(Duration::from_secs(15));
    drop(uac);
    drop(middle);
    (counts, status.and_then(|s| s.code()), uas_result, p)
}

/// SIPp UAC on UDP with 10 % loss (`-lost 10`, 50 calls at 10/s; SIPp 3.6.1 cannot seed its
/// loss, so each run loses different messages) calling a SIPp UAS on TCP, through Roundabout
/// and then through Kamailio (a stateful relay, `kamailio-registrar.cfg` with
/// NO_INVITE_AUTH). The UAC's retransmissions cover a lost INVITE or BYE; a 200 lost on the
/// UDP leg is only made up for by the proxy retransmitting it. Roundabout must complete all
/// 50; Kamailio's count is printed for comparison.
#[test]
fn sipp_loss_udp_to_tcp_against_kamailio() {
    let ((rb_ok, rb_failed), rb_exit, rb_uas, _rb_logs) = lossy_run(false);
    let ((k_ok, k_failed), k_exit, k_uas, _k_logs) = lossy_run(true);
    let summary = format!(
        "lossy UDP->TCP calls completed: Roundabout {rb_ok}/{LOSSY_CALLS} ({rb_failed} failed, \
         UAC exit {rb_exit:?}, UAS {}); Kamailio {k_ok}/{LOSSY_CALLS} ({k_failed} failed, UAC \
         exit {k_exit:?}, UAS {})",
        if rb_uas.is_ok() { "ok" } else { "failed" },
        if k_uas.is_ok() { "ok" } else { "failed" },
    );
    println!("{summary}");
    eprintln!("{summary}");
    assert_eq!(rb_ok, LOSSY_CALLS, "{summary}");
    assert_eq!(rb_exit, Some(0), "{summary}");
    if let Err(e) = rb_uas {
        panic!("{summary}\nthe UAS behind Roundabout failed: {e}");
    }
}

// ----- 9. ACK for a stateless final --------------------------------------------------------

/// A request Roundabout refuses statelessly (483 for Max-Forwards: 0; 403 for a host that
/// is not a trusted server, with -strict-host) gets a final with a To tag Roundabout made;
/// the caller's ACK for it (same branch, that To tag) is absorbed: nothing reaches the
/// default server, to which an ACK for Roundabout itself would otherwise go. Control: the
/// ACK for a 2xx of a real dialog through the default server still passes.
#[tokio::test]
async fn ack_to_stateless_final_is_absorbed() {
    let peers = Peers::new();
    let mut srv = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ProxyPorts::new(&peers);
    let default_server = peers.uas.ip().to_string();
    let _rb = start(
        &peers,
        &proxy,
        peers.uas,
        Kind::Udp,
        &["-default-sip-server", &default_server],
    );
    let mut c = Link::connect(Kind::Udp, UAC_IP.into(), &proxy).await;
    let mut s = srv.link().await;
    // Roundabout itself: with no client "ghost", such a request goes to the default server.
    let for_us = format!("sip:ghost@{}:{}", proxy.ip, proxy.udp_tcp);
    let to_us = format!("<{for_us}>");

    // (what, Request-URI, expected status, Max-Forwards)
    let cases = [
        ("Max-Forwards: 0", for_us.clone(), 483, "0"),
        (
            "a host that is not trusted",
            "sip:ghost@192.0.2.99".to_string(),
            403,
            "70",
        ),
    ];
    for (i, (what, uri, code, max_forwards)) in cases.into_iter().enumerate() {
        let call = Call::new(
            &uri,
            via(&c, &format!("sl{i}")),
            &format!("stateless-{i}@test"),
            contact(&c, "alice"),
        );
        let invite = Request {
            method: "INVITE",
            uri: &uri,
            via: call.via.clone(),
            from: FROM.into(),
            to: to_us.clone(),
            call_id: &call.call_id,
            cseq: 1,
            headers: vec![format!("Contact: {}", call.contact)],
            body: SDP,
        }
        .render()
        .replace("Max-Forwards: 70", &format!("Max-Forwards: {max_forwards}"));
        c.send(&invite).await;
        let (fin, _) = expect(
            &mut c,
            Duration::from_secs(3),
            &format!("{what}: the caller should get {code}"),
            |m| is_final_for(m, "INVITE"),
        )
        .await;
        assert_eq!(fin.status(), Some(code), "{what}:\n{fin}");
        let tag = tag_of(&fin.get("To"));
        assert!(tag.is_some(), "{what}: a final must carry a To tag:\n{fin}");

        // The UAC's ACK for a non-2xx final: same Request-URI and branch, the final's To.
        let ack = Request {
            method: "ACK",
            uri: &uri,
            via: call.via.clone(),
            from: FROM.into(),
            to: fin.get("To"),
            call_id: &call.call_id,
            cseq: 1,
            headers: vec![],
            body: "",
        }
        .render();
        c.send(&ack).await;
        let leaked = collect(&mut s, Duration::from_secs(1)).await;
        assert!(
            leaked.is_empty(),
            "{what}: the ACK for Roundabout's own {code} must be absorbed, the default server \
             got: [{}]",
            starts(&leaked.into_iter().map(|(m, _)| m).collect::<Vec<_>>())
        );
    }

    // Control: a real call through the default server; its 2xx ACK passes.
    let call = Call::new(
        &for_us,
        via(&c, "sl-ok"),
        "stateless-control@test",
        contact(&c, "alice"),
    );
    let invite = Request {
        method: "INVITE",
        uri: &for_us,
        via: call.via.clone(),
        from: FROM.into(),
        to: to_us.clone(),
        call_id: &call.call_id,
        cseq: 1,
        headers: vec![format!("Contact: {}", call.contact)],
        body: SDP,
    }
    .render();
    c.send(&invite).await;
    let (inv, _) = expect_request(&mut s, "INVITE", Duration::from_secs(3)).await;
    assert_roundabout_via(&inv, Kind::Udp, &proxy, 1);
    s.send(&response(
        &inv,
        200,
        "OK",
        "ghost-ok",
        &[format!("Contact: <sip:ghost@{}>", peers.uas)],
    ))
    .await;
    let (ok, _) = expect(
        &mut c,
        Duration::from_secs(3),
        "the control call's 200",
        |m| is_final_for(m, "INVITE"),
    )
    .await;
    assert_eq!(ok.status(), Some(200), "{ok}");
    let ack_via = via(&c, "sl-ok-ack");
    c.send(&call.ack_2xx(&ok, ack_via.clone())).await;
    let (ack, _) = expect_request(&mut s, "ACK", Duration::from_secs(3)).await;
    assert_eq!(branch_of(&ack.all("Via")[1]), branch_of(&ack_via), "{ack}");
    assert_eq!(
        ack.request_uri(),
        format!("sip:ghost@{}", peers.uas),
        "{ack}"
    );
}

// ----- 10. a closed connection unbinds only its own binding ---------------------------------

/// alice registers over TCP connection 1 (to a UDP registrar) and takes a call from the
/// server on it; the 200's Contact carries Roundabout's token for connection 1. Connection 1
/// closes, alice registers again over connection 2. A BYE for the old dialog (to the old
/// Contact) gets 480 — its flow is gone — but that must not end the binding made on
/// connection 2: a new INVITE for alice still reaches her there.
#[tokio::test]
async fn closed_connection_unbinds_only_its_own_binding() {
    let peers = Peers::new();
    let mut registrar = Server::listen(Kind::Udp, peers.uas, None).await;
    let proxy = ProxyPorts::new(&peers);
    let _rb = start(&peers, &proxy, peers.uas, Kind::Udp, &[]);
    let mut s = registrar.link().await;

    let register = |c: &Link, cseq: u32| {
        Request {
            method: "REGISTER",
            uri: "sip:127.0.0.3",
            via: via(c, &format!("reg{cseq}")),
            from: "<sip:alice@127.0.0.3>;tag=reg".into(),
            to: "<sip:alice@127.0.0.3>".into(),
            call_id: "alice-reg@test",
            cseq,
            // +sip.instance (RFC 5626, as JsSIP sends it): the same client on a new
            // connection, so Roundabout registers the same Contact (same client token).
            headers: vec![format!(
                "Contact: {};+sip.instance=\"<urn:uuid:0c6b4e6a-1111-4d5e-9a1b-alice>\";expires=600",
                contact(c, "alice")
            )],
            body: "",
        }
        .render()
    };
    // Registers alice over `c`; returns the Contact Roundabout registered for her.
    async fn registered(c: &mut Link, s: &mut Link, text: String) -> String {
        c.send(&text).await;
        let (reg, _) = expect_request(s, "REGISTER", Duration::from_secs(5)).await;
        let bound = uri_of(&reg.get("Contact"));
        s.send(&response(
            &reg,
            200,
            "OK",
            "reg",
            &[format!("Contact: <{bound}>;expires=600")],
        ))
        .await;
        let (ok, _) = expect(
            c,
            Duration::from_secs(5),
            "alice's REGISTER answered",
            |m| is_final_for(m, "REGISTER"),
        )
        .await;
        assert_eq!(ok.status(), Some(200), "{ok}");
        bound
    }
    let server_invite = |n: &str, uri: &str| {
        Request {
            method: "INVITE",
            uri,
            via: format!("SIP/2.0/UDP {};branch=z9hG4bKsrv-{n};rport", peers.uas),
            from: format!("<sip:bob@127.0.0.3>;tag=bob-{n}"),
            to: "<sip:alice@127.0.0.3>".into(),
            call_id: &format!("dialog-{n}@test"),
            cseq: 1,
            headers: vec![format!("Contact: <sip:bob@{}>", peers.uas)],
            body: SDP,
        }
        .render()
    };

    // Connection 1: register, then a call from the server.
    let mut c1 = Link::connect(Kind::Tcp, UAC_IP.into(), &proxy).await;
    let first_register = register(&c1, 1);
    let bound = registered(&mut c1, &mut s, first_register).await;
    assert!(
        !bound.contains("rbt="),
        "the registered Contact has no token: {bound}"
    );
    s.send(&server_invite("old", &bound)).await;
    let (inv, _) = expect_request(&mut c1, "INVITE", Duration::from_secs(5)).await;
    assert_eq!(inv.request_uri(), uri_of(&contact(&c1, "alice")), "{inv}");
    c1.send(&response(
        &inv,
        200,
        "OK",
        "alice-old",
        &[format!("Contact: {}", contact(&c1, "alice"))],
    ))
    .await;
    let (ok, _) = expect(&mut s, Duration::from_secs(5), "alice's 200", |m| {
        is_final_for(m, "INVITE")
    })
    .await;
    assert_eq!(ok.status(), Some(200), "{ok}");
    let old_contact = uri_of(&ok.get("Contact"));
    assert!(
        old_contact.contains(";rbt="),
        "the 200's Contact should carry Roundabout's token: {old_contact}"
    );
    let in_dialog = |method: &'static str, cseq: u32, branch: &str| {
        Request {
            method,
            uri: &old_contact,
            via: format!("SIP/2.0/UDP {};branch=z9hG4bK{branch};rport", peers.uas),
            from: "<sip:bob@127.0.0.3>;tag=bob-old".into(),
            to: ok.get("To"),
            call_id: "dialog-old@test",
            cseq,
            headers: ok.route_set(),
            body: "",
        }
        .render()
    };
    s.send(&in_dialog("ACK", 1, "srv-old-ack")).await;
    expect_request(&mut c1, "ACK", Duration::from_secs(5)).await;

    // Connection 1 closes; alice registers again on connection 2.
    drop(c1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c2 = Link::connect(Kind::Tcp, UAC_IP.into(), &proxy).await;
    let second_register = register(&c2, 2);
    let bound2 = registered(&mut c2, &mut s, second_register).await;
    assert_eq!(bound2, bound, "the same Contact towards the registrar");

    // The old dialog's flow is gone: 480.
    s.send(&in_dialog("BYE", 2, "srv-old-bye")).await;
    let (gone, _) = expect(
        &mut s,
        Duration::from_secs(5),
        "an answer to the old dialog's BYE",
        |m| is_final_for(m, "BYE"),
    )
    .await;
    assert_eq!(
        gone.status(),
        Some(480),
        "the old dialog's connection is gone:\n{gone}"
    );

    // The binding made on connection 2 is still there.
    s.send(&server_invite("new", &bound)).await;
    let Some(first) = c2.recv_within(Duration::from_secs(3)).await else {
        let (answer, _) = wait_for(&mut s, Duration::from_secs(2), |m| {
            is_final_for(m, "INVITE")
        })
        .await;
        panic!(
            "a new INVITE for alice must reach her on connection 2; the server got: {}",
            answer.map_or("nothing".to_string(), |(m, _)| m.start)
        );
    };
    assert!(
        first.is_request() && first.method() == "INVITE",
        "connection 2 should get the new INVITE first (the old dialog's BYE was for connection \
         1):\n{first}"
    );
    assert_eq!(first.get("Call-ID"), "dialog-new@test", "{first}");
    assert_eq!(
        first.request_uri(),
        uri_of(&contact(&c2, "alice")),
        "{first}"
    );
    c2.send(&response(&first, 486, "Busy Here", "alice-new", &[]))
        .await;
    let (busy, _) = expect(&mut s, Duration::from_secs(5), "alice's 486", |m| {
        is_final_for(m, "INVITE")
    })
    .await;
    assert_eq!(busy.status(), Some(486), "{busy}");
}
