//! The SIP torture messages of RFC 4475 and the IPv6 ones of RFC 5118 (`tests/data/`), fed
//! to the real `roundabout` binary over UDP, and every one of them to the stream framer:
//! each valid request is forwarded to a test server (or answered as a proxy must, e.g. 483
//! for Max-Forwards 0), each invalid one is answered 400 (505 for another SIP version), a
//! response that is not Roundabout's is dropped, and Roundabout never panics: after all of
//! them it is alive, says nothing of a panic, and answers an OPTIONS.
//!
//! The table [`EXPECTED`] names each message and its outcome; a failure names the message.
//! Run with `--nocapture` to see the outcome of each and the totals.

mod common;

use bytes::{Bytes, BytesMut};
use common::{Peers, Proc};
use roundabout::sip::framing::{SipStreamCodec, StreamFrame};
use roundabout::sip::{HeaderName, SipMessage};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder;

/// What Roundabout must do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Forwarded to the trusted server (which answers it 486, relayed back).
    Forwarded,
    /// Answered by Roundabout itself with this status.
    Answered(u16),
    /// A response that is not Roundabout's, or bytes nothing can be answered to: dropped.
    Dropped,
}

use Outcome::*;

/// (file, valid per its RFC, outcome). Valid requests for hosts that are not the trusted
/// server (the IPv6 literals of RFC 5118, a Route to 127.0.0.1:5080) get 403, as every
/// such request does with -strict-host; unknown URI schemes 416; a required proxy
/// extension 420; Max-Forwards 0 483.
const EXPECTED: &[(&str, bool, Outcome)] = &[
    // RFC 4475 3.1.1: valid messages
    ("rfc4475/wsinv", true, Forwarded),
    ("rfc4475/intmeth", true, Forwarded),
    ("rfc4475/esc01", true, Forwarded),
    ("rfc4475/escnull", true, Forwarded),
    ("rfc4475/esc02", true, Forwarded),
    ("rfc4475/lwsdisp", true, Forwarded),
    ("rfc4475/longreq", true, Forwarded),
    ("rfc4475/dblreq", true, Forwarded),
    ("rfc4475/semiuri", true, Forwarded),
    ("rfc4475/transports", true, Forwarded),
    ("rfc4475/mpart01", true, Answered(403)),
    ("rfc4475/unreason", true, Dropped),
    ("rfc4475/noreason", true, Dropped),
    // RFC 4475 3.1.2: invalid messages
    ("rfc4475/badinv01", false, Answered(400)),
    ("rfc4475/clerr", false, Answered(400)),
    ("rfc4475/ncl", false, Answered(400)),
    ("rfc4475/scalar02", false, Answered(400)),
    ("rfc4475/scalarlg", false, Dropped),
    ("rfc4475/quotbal", false, Answered(400)),
    ("rfc4475/ltgtruri", false, Answered(400)),
    ("rfc4475/lwsruri", false, Answered(400)),
    ("rfc4475/lwsstart", false, Answered(400)),
    ("rfc4475/trws", false, Answered(400)),
    ("rfc4475/escruri", false, Answered(400)),
    ("rfc4475/baddate", false, Answered(400)),
    ("rfc4475/regbadct", false, Answered(400)),
    ("rfc4475/badaspec", false, Answered(400)),
    ("rfc4475/baddn", false, Answered(400)),
    ("rfc4475/badvers", false, Answered(505)),
    ("rfc4475/mismatch01", false, Answered(400)),
    ("rfc4475/mismatch02", false, Answered(400)),
    ("rfc4475/bigcode", false, Dropped),
    // RFC 4475 3.2: transaction layer
    ("rfc4475/badbranch", true, Forwarded),
    // RFC 4475 3.3: application layer (all parse; what they ask of an element varies)
    ("rfc4475/insuf", false, Answered(400)),
    ("rfc4475/unkscm", true, Answered(416)),
    ("rfc4475/novelsc", true, Answered(416)),
    ("rfc4475/unksm2", true, Forwarded),
    ("rfc4475/bext01", true, Answered(420)),
    ("rfc4475/invut", true, Forwarded),
    ("rfc4475/regaut01", true, Forwarded),
    ("rfc4475/multi01", false, Answered(400)),
    ("rfc4475/mcl01", false, Answered(400)),
    ("rfc4475/bcast", true, Dropped),
    ("rfc4475/zeromf", true, Answered(483)),
    ("rfc4475/cparam01", true, Forwarded),
    ("rfc4475/cparam02", true, Forwarded),
    ("rfc4475/regescrt", true, Forwarded),
    ("rfc4475/sdp01", true, Forwarded),
    // RFC 4475 3.4: backward compatibility
    ("rfc4475/inv2543", true, Forwarded),
    // RFC 5118: IPv6
    ("rfc5118/ipv6-good", true, Answered(403)),
    ("rfc5118/ipv6-bad", false, Answered(400)),
    ("rfc5118/port-ambiguous", true, Answered(403)),
    ("rfc5118/port-unambiguous", true, Answered(403)),
    ("rfc5118/via-received-param-with-delim", true, Answered(403)),
    ("rfc5118/via-received-param-no-delim", true, Answered(403)),
    ("rfc5118/ipv6-in-sdp", true, Answered(403)),
    ("rfc5118/mult-ip-in-header", true, Forwarded),
    ("rfc5118/mult-ip-in-sdp", true, Answered(403)),
    ("rfc5118/ipv4-mapped-ipv6", true, Forwarded),
    // "2001:db8:::192.0.2.1" is what the ABNF bug of RFC 3261 allowed, not an IPv6 address
    ("rfc5118/ipv6-bug-abnf-3-colons", false, Answered(400)),
    ("rfc5118/ipv6-correct-abnf-2-colons", true, Answered(403)),
];

/// The hosts the valid messages are addressed (or routed) to: all names of the one trusted
/// server, the test's UDP server.
const TORTURE_HOSTS: &str = "example.com/example.net/example.org/chair-dnrc.example.com/\
     services.example.com/registrar.example.com/company.com/host.example.net";

fn data(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.sip"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn recv_within(s: &UdpSocket, t: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(t)).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// A 486 to a request as the server received it: its Vias, From, To (tagged), Call-ID, CSeq.
fn busy(req: &SipMessage) -> String {
    let mut out = String::from("SIP/2.0 486 Busy Here\r\n");
    for v in req.values(HeaderName::Via) {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    for (name, h) in [
        ("From", HeaderName::From),
        ("To", HeaderName::To),
        ("Call-ID", HeaderName::CallId),
        ("CSeq", HeaderName::CSeq),
    ] {
        let v = req.first_value(h).unwrap_or("");
        let tag = if h == HeaderName::To && !v.contains("tag") {
            ";tag=srv"
        } else {
            ""
        };
        out.push_str(&format!("{name}: {v}{tag}\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

fn status(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes.get(..12)?).ok()?;
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// Sends one message from a fresh socket and sees what happens within about two seconds.
fn outcome_of(
    name: &str,
    proxy: SocketAddr,
    client_ip: SocketAddr,
    server: &UdpSocket,
) -> (Outcome, String) {
    let client = UdpSocket::bind(client_ip).unwrap();
    client.send_to(&data(name), proxy).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut forwarded = false;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        // The server side: answer what arrives (retransmissions included) with 486.
        if let Some(m) = recv_within(server, Duration::from_millis(50)) {
            if status(&m).is_none() {
                let req =
                    SipMessage::parse(Bytes::from(m)).expect("Roundabout forwards what parses");
                if req.method() != "ACK" {
                    forwarded = true;
                    seen.push(format!("forwarded {}", req.method()));
                    server.send_to(busy(&req).as_bytes(), proxy).unwrap();
                }
            }
        }
        if let Some(m) = recv_within(&client, Duration::from_millis(50)) {
            let code = status(&m).unwrap_or(0);
            seen.push(format!(
                "client got {}",
                String::from_utf8_lossy(&m).lines().next().unwrap_or("")
            ));
            if code >= 200 {
                let outcome = if forwarded { Forwarded } else { Answered(code) };
                if forwarded {
                    assert_eq!(
                        code, 486,
                        "{name}: the server's answer must come back: {seen:?}"
                    );
                }
                return (outcome, seen.join("; "));
            }
        }
    }
    (if forwarded { Forwarded } else { Dropped }, seen.join("; "))
}

fn start(p: &Peers) -> Proc {
    let server = format!("{}:{TORTURE_HOSTS}:{}:udp:", p.uas.ip(), p.uas.port());
    p.roundabout_udp_tcp(&["-strict-host", "-trusted-server", &server])
}

/// Alive, no panic in its log, and still answering an OPTIONS; then stopped.
fn check_survived(mut rb: Proc, p: &Peers) {
    assert!(
        rb.try_status().is_none(),
        "roundabout exited\n{}",
        rb.report()
    );
    common::sip_ping(p.proxy, Duration::from_secs(3)).expect("OPTIONS answered after the torture");
    assert!(!rb.output().contains("panicked"), "{}", rb.report());
    rb.stop();
}

#[test]
fn torture_messages_over_udp() {
    let p = Peers::new();
    let mut rb = Some(start(&p));
    let srv = UdpSocket::bind(p.uas).unwrap();
    let mut failures = Vec::new();
    let (mut valid, mut invalid) = (0, 0);
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for (name, is_valid, expected) in EXPECTED {
        if name.starts_with("rfc5118/") {
            // The RFC 5118 messages share one Call-ID, branch and sent-by: to one proxy they
            // are retransmissions of a single request. Each gets a Roundabout of its own.
            check_survived(rb.take().expect("running"), &p);
            rb = Some(start(&p));
        }
        let client_ip = SocketAddr::from((common::UAC_IP, 0));
        let (got, trace) = outcome_of(name, p.proxy, client_ip, &srv);
        let validity = if *is_valid { "valid" } else { "invalid" };
        eprintln!("{name:45} {validity:8} {got:?}  [{trace}]");
        if got != *expected {
            failures.push(format!(
                "{name}: expected {expected:?}, got {got:?} [{trace}]"
            ));
        }
        if *is_valid {
            valid += 1;
        } else {
            invalid += 1;
        }
        *tally.entry(format!("{validity} {got:?}")).or_default() += 1;
    }
    eprintln!("{valid} valid and {invalid} invalid messages: {tally:?}");
    let rb = rb.take().expect("running");
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        rb.report()
    );
    check_survived(rb, &p);
    assert_eq!(EXPECTED.len(), 49 + 12, "every message of both RFCs");
}

/// Every torture message, whole and cut at every byte, through the stream framer: frames or
/// an error, never a panic; a message that parses is framed from its start as a message, and
/// fed byte by byte it gives the same frames.
#[test]
fn torture_messages_through_the_stream_framer() {
    for (name, _, _) in EXPECTED {
        let bytes = data(name);
        let mut codec = SipStreamCodec::default();
        let mut buf = BytesMut::from(&bytes[..]);
        let mut frames = Vec::new();
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            frames.push(f);
        }
        if let Ok(parsed) = SipMessage::parse(Bytes::from(bytes.clone())) {
            if parsed.raw().len() == bytes.len()
                && (parsed.has_content_length() || parsed.body().is_empty())
            {
                // A framed message: the start of the bytes, and itself a message (the rest,
                // if any, is a next message: rfc4475/dblreq holds two).
                let Some(StreamFrame::Message(m)) = frames.first() else {
                    panic!("{name}: no message framed: {frames:?}");
                };
                assert!(
                    bytes.starts_with(m),
                    "{name}: frame is not the message's start"
                );
                let framed = SipMessage::parse(m.clone())
                    .unwrap_or_else(|e| panic!("{name}: the framed message does not parse: {e}"));
                assert_eq!(framed.method(), parsed.method(), "{name}");
            }
        }
        // Byte by byte, as a slow peer would send it: the same frames, up to an error.
        let mut codec = SipStreamCodec::default();
        let mut buf = BytesMut::new();
        let mut slow = Vec::new();
        'feed: for b in &bytes {
            buf.extend_from_slice(&[*b]);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => slow.push(f),
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
        assert_eq!(slow, frames, "{name}: byte by byte is framed differently");
    }
}
