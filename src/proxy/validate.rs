//! What a message must carry before Roundabout proxies it (RFC 3261 16.3). A request that
//! fails here is answered 400 with the reason; a response is dropped. [`screen_request`]
//! runs first, in the connection that received the request: what it refuses is answered
//! there, without a trip to the Router.
//!
//! The checks follow the invalid messages of RFC 4475 (section 3.1.2): a value that cannot
//! be what its header says (two Call-IDs, a Max-Forwards of 300, a Date not in GMT, an
//! unbracketed Contact with URI headers...) is refused, because forwarding it would hand the
//! next element a message it must refuse anyway, after a longer way.

use crate::sip::uri::NameAddr;
use crate::sip::via::Via;
use crate::sip::{HeaderName, SipMessage};

/// A request the connection answers itself: `(code, reason, extra header lines)`.
pub type Screened = (u16, &'static str, Vec<String>);

/// The checks that need no routing state: a request whose Via cannot be read (400, sent
/// back the way it came) or that requires proxy extensions Roundabout has none of (420 with
/// `Unsupported`, RFC 3261 16.3 step 4). `None`: on to the Router.
pub fn screen_request(msg: &SipMessage) -> Option<Screened> {
    if msg.method() == "ACK" {
        return None;
    }
    let vias_ok = msg.first_value(HeaderName::Via).is_some()
        && msg.values(HeaderName::Via).all(|v| {
            Via::parse(v)
                .is_ok_and(|via| !via.params.split(';').skip(1).any(|p| p.trim().is_empty()))
        });
    if !vias_ok {
        return Some((400, "Malformed Via", Vec::new()));
    }
    let required: Vec<&str> = msg
        .headers()
        .iter()
        .filter(|h| msg.raw_name(h).eq_ignore_ascii_case("Proxy-Require"))
        .flat_map(|h| msg.value(h).split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if !required.is_empty() {
        let unsupported = format!("Unsupported: {}", required.join(", "));
        return Some((420, "Bad Extension", vec![unsupported]));
    }
    None
}

/// `Err(reason)` for the 400's reason phrase.
pub fn validate_request(msg: &SipMessage) -> Result<(), &'static str> {
    for (name, missing) in [
        (HeaderName::From, "Missing From"),
        (HeaderName::To, "Missing To"),
        (HeaderName::CallId, "Missing Call-ID"),
        (HeaderName::CSeq, "Missing CSeq"),
    ] {
        if msg.first_value(name).is_none_or(|v| v.is_empty()) {
            return Err(missing);
        }
    }
    for name in [HeaderName::From, HeaderName::To] {
        if NameAddr::parse(msg.first_value(name).unwrap_or("")).is_err() {
            return Err("Malformed From or To");
        }
    }
    match msg.cseq() {
        Some((_, m)) if m == msg.method() => {}
        Some(_) => return Err("CSeq Method Does Not Match"),
        None => return Err("Malformed CSeq"),
    }
    match msg.max_forwards() {
        Some(Err(())) => return Err("Malformed Max-Forwards"),
        Some(Ok(n)) if n > 255 => return Err("Malformed Max-Forwards"),
        _ => {}
    }
    // One pass over the header lines: single-valued headers must not repeat.
    let mut seen = [0u8; 6];
    for h in msg.headers() {
        let slot = match h.name {
            HeaderName::From => 0,
            HeaderName::To => 1,
            HeaderName::CallId => 2,
            HeaderName::CSeq => 3,
            HeaderName::MaxForwards => 4,
            HeaderName::ContentLength => 5,
            HeaderName::Other => {
                if msg.raw_name(h).eq_ignore_ascii_case("Date") && !msg.value(h).ends_with(" GMT") {
                    return Err("Malformed Date (not GMT)");
                }
                continue;
            }
            _ => continue,
        };
        seen[slot] += 1;
        if seen[slot] > 1 {
            return Err([
                "Multiple From",
                "Multiple To",
                "Multiple Call-ID",
                "Multiple CSeq",
                "Multiple Max-Forwards",
                "Multiple Content-Length",
            ][slot]);
        }
    }
    request_uri_ok(msg.request_uri())?;
    for name in [HeaderName::From, HeaderName::To] {
        if !name_addr_ok(msg.first_value(name).unwrap_or("")) {
            return Err("Malformed From or To");
        }
    }
    if !msg
        .values(HeaderName::Contact)
        .all(|c| c.trim() == "*" || name_addr_ok(c))
    {
        return Err("Malformed Contact");
    }
    if let Some(v) = msg.first_value(HeaderName::Expires) {
        if v.parse::<u32>().is_err() {
            return Err("Malformed Expires");
        }
    }
    Ok(())
}

/// A Request-URI has a scheme (`ALPHA *(ALPHA / DIGIT / "+" / "-" / ".")` and a colon) and,
/// for SIP, a readable host and no headers (RFC 3261 19.1.1: not allowed in a
/// Request-URI). Other schemes are left to routing (416).
fn request_uri_ok(uri: &str) -> Result<(), &'static str> {
    let scheme = uri.split(':').next().unwrap_or("");
    let scheme_ok = uri.contains(':')
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err("Malformed Request-URI");
    }
    let sip = scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips");
    if sip {
        // `?` may appear in the user part; after the host it starts URI headers.
        let host_part = uri.rsplit_once('@').map_or(uri, |(_, h)| h);
        if host_part.contains('?') {
            return Err("Request-URI With Headers");
        }
        if crate::sip::uri::SipUri::parse(uri).is_err() {
            return Err("Malformed Request-URI");
        }
    }
    Ok(())
}

/// A From, To or Contact value: `display-name <URI>;params` with a display name that is a
/// quoted string or tokens, nothing but the URI inside the brackets; or a bare URI, which
/// cannot carry URI headers, commas or white space (RFC 3261 20.10).
fn name_addr_ok(value: &str) -> bool {
    let Ok(n) = NameAddr::parse(value) else {
        return false;
    };
    let uri = n.uri_str();
    if uri.is_empty() || uri.trim() != uri || uri.contains(char::is_whitespace) {
        return false;
    }
    if !n.bracketed {
        return !uri.contains(['?', ',', '"', '<', '>']);
    }
    let display = value[..n.uri_range.start - 1].trim();
    if display.starts_with('"') {
        display.len() >= 2 && display.ends_with('"')
    } else {
        display
            .bytes()
            .all(|b| crate::sip::message::is_token_char(b) || b == b' ' || b == b'\t')
    }
}

/// A response worth relaying: a usable top Via (`msg.top_via()`, parsed by the caller, who
/// needs it next for the branch) and CSeq.
pub fn validate_response(msg: &SipMessage, top_via: Option<&Via<'_>>) -> Result<(), &'static str> {
    if top_via.is_none() {
        return Err("no usable Via");
    }
    if msg.cseq().is_none() {
        return Err("no usable CSeq");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(extra: &str) -> SipMessage {
        SipMessage::parse(Bytes::from(format!(
            "INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n{extra}\r\n"
        )))
        .unwrap()
    }

    #[test]
    fn reasons() {
        let full = "From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n";
        assert_eq!(validate_request(&req(full)), Ok(()));
        assert_eq!(
            validate_request(&req("To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n")),
            Err("Missing From")
        );
        assert_eq!(
            validate_request(&req(&full.replace("1 INVITE", "1 BYE"))),
            Err("CSeq Method Does Not Match")
        );
        assert_eq!(
            validate_request(&req(&full.replace("1 INVITE", "x INVITE"))),
            Err("Malformed CSeq")
        );
        assert_eq!(
            validate_request(&req(&format!("{full}Max-Forwards: ten\r\n"))),
            Err("Malformed Max-Forwards")
        );
        assert_eq!(
            validate_request(&req(&full.replace("<sip:b@x>", "<sip:b@x"))),
            Err("Malformed From or To")
        );
    }

    #[test]
    fn rfc4475_style_values_are_refused() {
        let full = "From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n";
        let bad = |extra: &str| validate_request(&req(&format!("{full}{extra}")));
        assert_eq!(bad("Max-Forwards: 300\r\n"), Err("Malformed Max-Forwards"));
        assert_eq!(bad("Call-ID: d\r\n"), Err("Multiple Call-ID"));
        assert_eq!(
            bad("l: 0\r\nContent-Length: 0\r\n"),
            Err("Multiple Content-Length")
        );
        assert_eq!(
            bad("Date: Fri, 01 Jan 2010 16:00:00 EST\r\n"),
            Err("Malformed Date (not GMT)")
        );
        assert_eq!(bad("Date: Fri, 01 Jan 2010 16:00:00 GMT\r\n"), Ok(()));
        assert_eq!(
            bad("Contact: sip:a@x?Route=%3Csip:y%3E\r\n"),
            Err("Malformed Contact")
        );
        assert_eq!(bad("Contact: <sip:a@x?Route=%3Csip:y%3E>, *\r\n"), Ok(()));
        assert_eq!(
            bad("Expires: 100000000000000\r\n"),
            Err("Malformed Expires")
        );
        let with = |from: &str| validate_request(&req(&full.replace("<sip:a@x>;tag=1", from)));
        assert_eq!(
            with("Bell, Alexander <sip:a@x>;tag=1"),
            Err("Malformed From or To")
        );
        assert_eq!(
            with("\"Bell, Alexander\" < sip:a@x >;tag=1"),
            Err("Malformed From or To")
        );
        assert_eq!(with("\"Bell, Alexander\" <sip:a@x>;tag=1"), Ok(()));
        assert_eq!(with("token1~` token2'+_ <sip:a@x>;tag=1"), Ok(()));
        let ruri = |u: &str| {
            let m = SipMessage::parse(Bytes::from(format!(
                "INVITE {u} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n{full}\r\n"
            )))
            .unwrap();
            validate_request(&m)
        };
        assert_eq!(ruri("<sip:b@x>"), Err("Malformed Request-URI"));
        assert_eq!(
            ruri("sip:b@x?Route=%3Csip:y%3E"),
            Err("Request-URI With Headers")
        );
        assert_eq!(
            ruri("soap.beep://192.0.2.1:3002"),
            Ok(()),
            "unknown schemes get 416 later"
        );
        assert_eq!(ruri("sip:2001:db8::10"), Err("Malformed Request-URI"));
        assert_eq!(ruri("sip:a?b@x"), Ok(()), "? in the user part");
    }

    #[test]
    fn screening() {
        let m = |via: &str, extra: &str| {
            SipMessage::parse(Bytes::from(format!(
                "OPTIONS sip:b@x SIP/2.0\r\nVia: {via}\r\n{extra}\r\n"
            )))
            .unwrap()
        };
        assert_eq!(
            screen_request(&m("SIP/2.0/UDP h;branch=z9hG4bK1", "")),
            None
        );
        assert_eq!(
            screen_request(&m("SIP/2.0/UDP 192.0.2.15;;,;,,", ""))
                .unwrap()
                .0,
            400
        );
        assert_eq!(screen_request(&m("garbage", "")).unwrap().0, 400);
        let (code, _, extra) = screen_request(&m(
            "SIP/2.0/UDP h;branch=z9hG4bK1",
            "Proxy-Require: foo, bar\r\n",
        ))
        .unwrap();
        assert_eq!(
            (code, extra),
            (420, vec!["Unsupported: foo, bar".to_string()])
        );
    }
}
