//! Property tests on stable Rust (proptest): arbitrary bytes and mutated valid messages
//! through everything that reads peer input without a socket in between: the stream framer
//! ([`SipStreamCodec`]), [`SipMessage::parse`] and `render`, the URI, name-addr and Via
//! parsers, validation and the salvage path, and the routing and rewrite functions.
//!
//! Properties: nothing panics; what parses renders to bytes that parse again to the same
//! start line, headers and body; whatever Roundabout would send (a rewritten request, its own
//! answers) parses.
//!
//! Each property runs `PROPTEST_CASES` cases (2,000 by default here: seconds in the test
//! command). A longer run: `PROPTEST_CASES=200000 cargo test --release --test fuzz`.
//! Inputs that once failed are kept in `tests/data/fuzz-regressions/` (one file each) and
//! replayed on every run by `regressions_replay`.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use roundabout::config::Config;
use roundabout::proxy::branch::is_loop;
use roundabout::proxy::contact_token::{ContactTokens, TokenKey};
use roundabout::proxy::responses::{build_response, build_salvaged_response};
use roundabout::proxy::rewrite::{self, ProxyAddress};
use roundabout::proxy::validate::{screen_request, validate_request};
use roundabout::routing::{decide, FlowId, LocalIdentity, RouteTarget, ServerTable, Source};
use roundabout::sip::framing::SipStreamCodec;
use roundabout::sip::salvage::{reason_for, salvage};
use roundabout::sip::uri::{NameAddr, SipUri};
use roundabout::sip::via::Via;
use roundabout::sip::{HeaderName, Rewrite, SipMessage, Transport};
use std::path::Path;
use tokio_util::codec::Decoder;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        // Shrinking a failure must stay bounded too.
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Valid messages to mutate: the RFC 4475/5118 corpus and two ordinary ones.
fn corpus() -> Vec<Vec<u8>> {
    let mut out = vec![
        b"INVITE sip:bob@203.0.113.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.35:5060;branch=z9hG4bK776;rport\r\n\
          Max-Forwards: 70\r\nTo: Bob <sip:bob@203.0.113.20>\r\nFrom: \"Alice\" <sip:alice@192.0.2.35>;tag=19\r\n\
          Call-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nContact: <sip:alice@192.0.2.35;transport=tcp>\r\n\
          Route: <sip:127.0.0.1;lr>, <sip:[2001:db8::1]:5070;lr>\r\nRecord-Route: <sip:p1.example.com;lr>\r\n\
          Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
            .to_vec(),
        b"SIP/2.0 200 OK\r\nv: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-rb1, SIP/2.0/UDP h;branch=z9hG4bK2;received=192.0.2.1;rport=9\r\n\
          f: <sip:a@x>;tag=1\r\nt: <sip:b@x>;tag=2\r\ni: cid\r\nCSeq: 1 REGISTER\r\nm: <sip:b@127.0.0.1;rbt=abc>;expires=60\r\nl: 0\r\n\r\n"
            .to_vec(),
    ];
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for dir in ["rfc4475", "rfc5118"] {
        let mut files: Vec<_> = std::fs::read_dir(data.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            out.push(std::fs::read(f).unwrap());
        }
    }
    out
}

/// Bytes that make parsers take unusual turns.
const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b"\"",
    b"\\",
    b"@",
    b"[",
    b"]",
    b"%",
    b"%00",
    b"=",
    b"?",
    b"/",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"SIP/2.0 ",
    b"Via: ",
    b"v: ",
    b"Content-Length: ",
    b"l: 99999999999999999999",
    b"-1",
    b";branch=",
    b";tag=",
    b"sip:",
    b"sips:",
    b"[::1]",
    b";rbt=",
    b"\r\n ",
    b"CSeq: 1 INVITE\r\n",
];

/// One edit of a message.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, usize),
    Delete(usize, usize),
    Duplicate(usize, usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), 0..INTERESTING.len()).prop_map(|(i, w)| Mutation::Insert(i, w)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..64, any::<usize>())
            .prop_map(|(i, n, at)| Mutation::Duplicate(i, n, at)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut m: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for e in edits {
        let len = m.len().max(1);
        match *e {
            Mutation::Flip(i, b) => {
                if !m.is_empty() {
                    m[i % len] = b;
                }
            }
            Mutation::Insert(i, w) => {
                let at = i % (m.len() + 1);
                m.splice(at..at, INTERESTING[w].iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i % len;
                let end = (at + n).min(m.len());
                if at < end {
                    m.drain(at..end);
                }
            }
            Mutation::Duplicate(i, n, to) => {
                let at = i % len;
                let end = (at + n).min(m.len());
                let piece: Vec<u8> = m.get(at..end).unwrap_or(&[]).to_vec();
                let to = to % (m.len() + 1);
                m.splice(to..to, piece);
            }
            Mutation::Truncate(i) => m.truncate(i % (m.len() + 1)),
        }
    }
    m
}

/// Everything that reads one message, with the properties above.
fn exercise(input: &[u8]) {
    // The framer, on the whole input and on the input in two pieces.
    for split in [input.len(), input.len() / 2] {
        let mut codec = SipStreamCodec { max_message: 8192 };
        let mut buf = BytesMut::from(&input[..split]);
        let mut frames = 0;
        'outer: for part in [&input[split..], &[][..]] {
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => {
                        frames += 1;
                        assert!(frames <= input.len() + 1, "the framer must make progress");
                    }
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
            buf.extend_from_slice(part);
        }
    }

    let parsed = SipMessage::parse(Bytes::copy_from_slice(input));
    let msg = match parsed {
        Ok(m) => m,
        Err(e) => {
            if let Some(s) = salvage(input, reason_for(&e)) {
                let answer = build_salvaged_response(&s);
                let m = SipMessage::parse(answer.clone())
                    .unwrap_or_else(|e| panic!("salvaged answer does not parse ({e}): {answer:?}"));
                assert!(matches!(m.status(), Some(400 | 505)));
            }
            return;
        }
    };

    // render(parse(x)) parses to the same message.
    let out = msg.render(&Rewrite::default());
    let again = SipMessage::parse(out.clone())
        .unwrap_or_else(|e| panic!("rendered message does not parse ({e}): {out:?}"));
    assert_eq!(again.is_request(), msg.is_request());
    assert_eq!(again.method(), msg.method());
    assert_eq!(again.request_uri(), msg.request_uri());
    assert_eq!(again.status(), msg.status());
    let headers = |m: &SipMessage| -> Vec<(HeaderName, String)> {
        m.headers()
            .iter()
            .filter(|h| h.name != HeaderName::ContentLength)
            .map(|h| (h.name, m.value(h).to_string()))
            .collect()
    };
    assert_eq!(
        headers(&again),
        headers(&msg),
        "headers changed by render: {out:?}"
    );
    assert_eq!(again.body(), msg.body());

    // The value parsers on every value.
    for h in msg.headers() {
        let v = msg.value(h);
        let _ = NameAddr::parse(v).map(|n| (n.uri().ok().map(|u| u.transport()), n.tag()));
        let _ = Via::parse(v).map(|via| (via.branch(), via.received(), via.rport()));
        let _ = SipUri::parse(v).map(|u| (u.host_ip(), u.param("lr")));
    }
    let _ = msg.top_via();
    let _ = (msg.cseq(), msg.max_forwards(), msg.call_id());

    // Validation, routing and the rewrites a proxy does, and what it would send.
    let config = Config::default();
    let local = ProxyAddress::new(LocalIdentity::from_config(&config), false);
    let table = ServerTable::from_config(&config);
    let source = Source {
        transport: Transport::Tcp,
        remote: "192.0.2.1:5060".parse().unwrap(),
        flow: FlowId(7),
    };
    let key = ContactTokens::new(TokenKey::default());
    if let Ok(uri) = SipUri::parse(msg.request_uri()) {
        let _ = decide(&table, &RouteTarget::from_uri(&uri));
        if let Some(token) = rewrite::token_in_uri(&uri, &local) {
            let _ = key.decode(token);
        }
    }
    if msg.is_request() {
        let _ = screen_request(&msg);
        let valid = validate_request(&msg).is_ok();
        let _ = is_loop(&msg, &local);
        let (ours, _next) = rewrite::our_routes_on_top(&msg, &local);
        let mut rw = Rewrite {
            prepend: vec![format!(
                "Via: {}",
                local.via(Transport::Udp, "z9hG4bK-rb-fuzz")
            )],
            ..Rewrite::default()
        };
        rewrite::remove_first_values(&msg, HeaderName::Route, ours, &mut rw);
        rewrite::decrement_max_forwards(&msg, &mut rw);
        if let Some((i, line)) = msg.first(HeaderName::Via) {
            if let Some(v) = rewrite::via_with_received(line, &source) {
                rw.replace(i, v);
            }
        }
        if msg.method() == "REGISTER" {
            let _ =
                rewrite::rewrite_register_contact(&msg, &mut rw, &local, Transport::Udp, key.key());
            let _ = (rewrite::requested_expires(&msg), rewrite::to_user(&msg));
        } else {
            rewrite::rewrite_dialog_contact(&msg, &mut rw, &local, Transport::Udp, &source, &key);
        }
        let sent = msg.render(&rw);
        let sent_msg = SipMessage::parse(sent.clone());
        if valid {
            let sent_msg = sent_msg
                .unwrap_or_else(|e| panic!("forwarded request does not parse ({e}): {sent:?}"));
            assert_eq!(sent_msg.body(), msg.body());
        }
        if msg.top_via().is_some() {
            let answer = build_response(&msg, 400, "Bad Request", None);
            SipMessage::parse(answer.clone())
                .unwrap_or_else(|e| panic!("answer does not parse ({e}): {answer:?}"));
        }
    } else {
        let mut rw = Rewrite::default();
        rewrite::remove_first_values(&msg, HeaderName::Via, 1, &mut rw);
        rewrite::rewrite_dialog_contact(&msg, &mut rw, &local, Transport::Ws, &source, &key);
        let _ = SipMessage::parse(msg.render(&rw));
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&input);
    }

    #[test]
    fn fuzz_mutated_messages(
        pick in any::<usize>(),
        edits in proptest::collection::vec(mutation(), 1..8),
    ) {
        let corpus = corpus();
        let input = mutate(corpus[pick % corpus.len()].clone(), &edits);
        exercise(&input);
    }

    #[test]
    fn fuzz_sip_like_text(
        lines in proptest::collection::vec("[A-Za-z-]{1,12}[ \t]*:[ \t]*[ -~]{0,60}", 0..12),
        start in "(INVITE|REGISTER|OPTIONS|ACK|SIP/2.0 [1-7][0-9]{2}) [ -~]{0,40}",
    ) {
        let mut text = format!("{start}\r\n");
        for l in &lines {
            text.push_str(l);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        exercise(text.as_bytes());
    }
}

/// Inputs that once broke a property, replayed on every run.
#[test]
fn regressions_replay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sip") {
            exercise(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
    eprintln!("{n} regression inputs replayed");
    for m in corpus() {
        exercise(&m);
    }
}
