//! Responses Roundabout makes itself (100, 200 to CANCEL, 4xx/5xx), built from the request
//! as RFC 3261 section 8.2.6 says: Via, From, To, Call-ID and CSeq copied, a To tag added
//! to anything but 100.

use crate::sip::header::iter_values;
use crate::sip::uri::push_decimal;
use crate::sip::{HeaderName, SipMessage};
use bytes::Bytes;

/// The To tag Roundabout uses for its own answers; stable per transaction so that
/// retransmitted answers match (RFC 3261 8.2.6.2).
pub fn local_tag(call_id: &str, branch: &str) -> String {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one((call_id, branch));
    format!("rb{h:x}")
}

/// Whether the To tag of `req` (an ACK) is one Roundabout put into a final response it made
/// itself: an ACK for a non-2xx final keeps the INVITE's branch and Call-ID, so the tag can
/// be recomputed without keeping any state.
pub fn is_local_tag(req: &SipMessage) -> bool {
    let Some(tag) = crate::proxy::rewrite::to_tag(req) else {
        return false;
    };
    if !tag.starts_with("rb") {
        return false;
    }
    let branch = req.top_via().and_then(|v| v.branch().map(str::to_string));
    let branch = branch.as_deref().unwrap_or("");
    tag == local_tag(req.call_id().unwrap_or(""), branch)
}

/// Builds a response to `req`. `top_via` replaces the first Via value (with received/rport
/// filled in) when given.
pub fn build_response(req: &SipMessage, code: u16, reason: &str, top_via: Option<&str>) -> Bytes {
    build_response_with(req, code, reason, top_via, &[])
}

/// [`build_response`] with `extra` header lines (e.g. `Unsupported: foo` for a 420).
pub fn build_response_with(
    req: &SipMessage,
    code: u16,
    reason: &str,
    top_via: Option<&str>,
    extra: &[String],
) -> Bytes {
    // Written piece by piece into one buffer (no `format!`): every INVITE gets a 100.
    let mut out = String::with_capacity(512);
    out.push_str("SIP/2.0 ");
    push_decimal(&mut out, code.into());
    out.push(' ');
    out.push_str(reason);
    out.push_str("\r\n");
    let mut first_via = true;
    for h in req.headers() {
        let value = req.value(h);
        match h.name {
            HeaderName::Via => {
                out.push_str("Via: ");
                match (first_via, top_via) {
                    (true, Some(v)) => {
                        // Replace only the first value of the first Via line.
                        out.push_str(v);
                        if let Some(second) = iter_values(value).nth(1) {
                            out.push_str(", ");
                            out.push_str(&value[second.start..]);
                        }
                    }
                    _ => out.push_str(value),
                }
                out.push_str("\r\n");
                first_via = false;
            }
            HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                out.push_str(h.name.as_str());
                out.push_str(": ");
                out.push_str(value);
                out.push_str("\r\n");
            }
            HeaderName::To => {
                out.push_str("To: ");
                out.push_str(value);
                let has_tag = crate::sip::uri::NameAddr::parse(value)
                    .map(|n| n.tag().is_some())
                    .unwrap_or(true);
                if code > 100 && !has_tag {
                    let branch = req.top_via().and_then(|v| v.branch()).unwrap_or("");
                    out.push_str(";tag=");
                    out.push_str(&local_tag(req.call_id().unwrap_or(""), branch));
                }
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    for line in extra {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Server: Roundabout\r\nContent-Length: 0\r\n\r\n");
    Bytes::from(out)
}

/// The answer to a request the parser refused, from what [`crate::sip::salvage`] could read
/// of it: every Via as it came, From, To (with a tag), Call-ID and CSeq copied.
pub fn build_salvaged_response(s: &crate::sip::salvage::Salvaged) -> Bytes {
    let mut out = String::with_capacity(512);
    out.push_str(&format!("SIP/2.0 {} {}\r\n", s.code, s.reason));
    for via in &s.vias {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    out.push_str(&format!("From: {}\r\nTo: {}", s.from, s.to));
    let has_tag = crate::sip::uri::NameAddr::parse(&s.to)
        .map(|n| n.tag().is_some())
        .unwrap_or(true);
    if !has_tag {
        let first = &s.vias[0];
        let branch = crate::sip::header::split_values(first)
            .into_iter()
            .next()
            .and_then(|r| crate::sip::via::Via::parse(&first[r]).ok())
            .and_then(|v| v.branch().map(String::from))
            .unwrap_or_default();
        out.push_str(";tag=");
        out.push_str(&local_tag(&s.call_id, &branch));
    }
    out.push_str(&format!(
        "\r\nCall-ID: {}\r\nCSeq: {}\r\nServer: Roundabout\r\nContent-Length: 0\r\n\r\n",
        s.call_id, s.cseq
    ));
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_tags_are_recognised_on_the_ack() {
        let invite = SipMessage::parse(Bytes::from_static(
            b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: cid\r\nCSeq: 1 INVITE\r\n\r\n",
        ))
        .unwrap();
        let answer = SipMessage::parse(build_response(&invite, 403, "Forbidden", None)).unwrap();
        let tag = crate::proxy::rewrite::to_tag(&answer).unwrap().to_string();
        let ack = |branch: &str, tag: &str| {
            SipMessage::parse(Bytes::from(format!(
                "ACK sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch={branch}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag={tag}\r\nCall-ID: cid\r\nCSeq: 1 ACK\r\n\r\n"
            )))
            .unwrap()
        };
        assert!(is_local_tag(&ack("z9hG4bK1", &tag)));
        assert!(!is_local_tag(&ack("z9hG4bK2", &tag)), "another transaction");
        assert!(!is_local_tag(&ack("z9hG4bK1", "rb123")), "a forged tag");
        assert!(!is_local_tag(&ack("z9hG4bK1", "callee")));
    }

    #[test]
    fn copies_dialog_headers_and_adds_tag() {
        let req = SipMessage::parse(Bytes::from_static(
            b"INVITE sip:b@x SIP/2.0\r\nv: SIP/2.0/UDP a:5060;branch=z9hG4bK1;rport, SIP/2.0/UDP c;branch=z9hG4bK0\r\n\
              Via: SIP/2.0/UDP d;branch=z9hG4bKd\r\nf: <sip:a@x>;tag=1\r\nt: <sip:b@x>\r\ni: cid\r\nCSeq: 1 INVITE\r\nX-No: copy\r\n\r\n",
        ))
        .unwrap();
        let r = build_response(
            &req,
            404,
            "Not Found",
            Some("SIP/2.0/UDP a:5060;branch=z9hG4bK1;rport=5060;received=1.2.3.4"),
        );
        let text = std::str::from_utf8(&r).unwrap();
        assert!(text.starts_with("SIP/2.0 404 Not Found\r\nVia: SIP/2.0/UDP a:5060;branch=z9hG4bK1;rport=5060;received=1.2.3.4, SIP/2.0/UDP c;branch=z9hG4bK0\r\nVia: SIP/2.0/UDP d;branch=z9hG4bKd\r\n"), "{text}");
        assert!(text.contains("To: <sip:b@x>;tag=rb"));
        assert!(text.contains("Call-ID: cid\r\nCSeq: 1 INVITE\r\n"));
        assert!(!text.contains("X-No"));
        let again = build_response(&req, 404, "Not Found", None);
        let tag = |t: &str| t.split("tag=").nth(2).map(|s| s[..10].to_string());
        assert_eq!(tag(text), tag(std::str::from_utf8(&again).unwrap()));
        let trying = build_response(&req, 100, "Trying", None);
        assert!(std::str::from_utf8(&trying)
            .unwrap()
            .contains("To: <sip:b@x>\r\n"));
        let parsed = SipMessage::parse(r).unwrap();
        assert_eq!(parsed.status(), Some(404));
    }

    #[test]
    fn salvaged_answer_parses_and_copies_every_via() {
        let broken = b"OPTIONS  sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
              Via: SIP/2.0/TCP c;branch=z9hG4bK0\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\n\
              Call-ID: cid\r\nCSeq: 2 OPTIONS\r\n\r\n";
        let s = crate::sip::salvage::salvage(broken, "Malformed Request-Line").unwrap();
        let r = build_salvaged_response(&s);
        let m = SipMessage::parse(r).unwrap();
        assert_eq!(m.status(), Some(400));
        assert_eq!(m.values(HeaderName::Via).count(), 2);
        assert!(m.first_value(HeaderName::To).unwrap().contains(";tag=rb"));
        assert_eq!(m.cseq(), Some((2, "OPTIONS")));
        assert!(std::str::from_utf8(m.raw())
            .unwrap()
            .starts_with("SIP/2.0 400 Malformed Request-Line\r\n"));
    }
}
