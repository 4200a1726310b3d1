//! What a message must carry before Roundabout proxies it (RFC 3261 16.3). A request that
//! fails here is answered 400 with the reason; a response is dropped.

use crate::sip::uri::NameAddr;
use crate::sip::{HeaderName, SipMessage};

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
    if let Some(Err(())) = msg.max_forwards() {
        return Err("Malformed Max-Forwards");
    }
    Ok(())
}

pub fn validate_response(msg: &SipMessage) -> Result<(), &'static str> {
    if msg.top_via().is_none() {
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
        assert_eq!(validate_request(&req("To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n")), Err("Missing From"));
        assert_eq!(
            validate_request(&req(&full.replace("1 INVITE", "1 BYE"))),
            Err("CSeq Method Does Not Match")
        );
        assert_eq!(validate_request(&req(&full.replace("1 INVITE", "x INVITE"))), Err("Malformed CSeq"));
        assert_eq!(
            validate_request(&req(&format!("{full}Max-Forwards: ten\r\n"))),
            Err("Malformed Max-Forwards")
        );
        assert_eq!(validate_request(&req(&full.replace("<sip:b@x>", "<sip:b@x"))), Err("Malformed From or To"));
    }
}
