//! What identifies a transaction (RFC 3261 17.2.3) and what a forwarded request keeps for
//! later: the hop it went out on (to ACK a non-2xx final and to CANCEL it) and, for a
//! REGISTER, the Contacts it replaced.

use super::rewrite::RegisteredContact;
use crate::sip::via::Via;
use crate::sip::SipMessage;
use bytes::Bytes;

/// Transaction-matching class of a request method: ACK belongs to its INVITE, CANCEL is its
/// own transaction with the same branch (RFC 3261 17.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodClass {
    Invite,
    Cancel,
    Other,
}

impl MethodClass {
    pub fn of(method: &str) -> MethodClass {
        match method {
            "INVITE" | "ACK" => MethodClass::Invite,
            "CANCEL" => MethodClass::Cancel,
            _ => MethodClass::Other,
        }
    }
}

/// Identifies a server transaction: the sender's branch (with sent-by, since branches are
/// only unique per sender) and the method class.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub branch: String,
    pub sent_by: String,
    pub class: MethodClass,
}

impl ServerKey {
    /// `None` when the request has no usable top Via.
    pub fn of(msg: &SipMessage, method: &str) -> Option<ServerKey> {
        Some(ServerKey::with_top_via(msg, &msg.top_via()?, method))
    }

    /// [`ServerKey::of`] for a caller that has parsed the top Via already (the Router has,
    /// to check it): the Via is not parsed a second time.
    pub fn with_top_via(msg: &SipMessage, via: &Via<'_>, method: &str) -> ServerKey {
        let branch = match via.branch() {
            Some(b) if b.starts_with(super::branch::MAGIC) => b.to_string(),
            // RFC 2543 peers: no magic cookie; Call-ID and CSeq number stand in.
            _ => format!(
                "2543:{}:{}",
                msg.call_id().unwrap_or(""),
                msg.cseq().map_or(0, |c| c.0)
            ),
        };
        ServerKey {
            branch,
            sent_by: format!("{}:{}", via.host, via.port.unwrap_or(0)),
            class: MethodClass::of(method),
        }
    }
}

/// What the request looked like as it left, to build ACK (for non-2xx) and CANCEL for the
/// same hop (RFC 3261 9.1 and 17.1.1.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutgoingHop {
    pub request_uri: String,
    pub via: String,
    pub routes: Vec<String>,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
}

impl OutgoingHop {
    /// CANCEL for the forwarded INVITE: same Request-URI, Via branch, Route, From, To, Call-ID.
    pub fn cancel(&self) -> Bytes {
        self.hop_request("CANCEL", &self.to)
    }

    /// ACK for a non-2xx final response: the To comes from the response (it carries the tag).
    pub fn ack(&self, response_to: &str) -> Bytes {
        self.hop_request("ACK", response_to)
    }

    fn hop_request(&self, method: &str, to: &str) -> Bytes {
        let mut s = format!(
            "{method} {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n",
            self.request_uri, self.via
        );
        for r in &self.routes {
            s.push_str(&format!("Route: {r}\r\n"));
        }
        s.push_str(&format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\nContent-Length: 0\r\n\r\n",
            self.from, to, self.call_id, self.cseq
        ));
        Bytes::from(s)
    }
}

/// What a REGISTER passing through needs when its 2xx comes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterContext {
    pub contacts: Vec<RegisteredContact>,
    pub requested_expires: Option<u32>,
    /// `Contact: *` unregisters the To user.
    pub wildcard_user: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_requests_match_the_invite() {
        let hop = OutgoingHop {
            request_uri: "sip:bob@203.0.113.20".into(),
            via: "SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-rb1-2".into(),
            routes: vec!["<sip:198.51.100.1;lr>".into()],
            from: "<sip:a@x>;tag=1".into(),
            to: "<sip:bob@y>".into(),
            call_id: "cid".into(),
            cseq: 7,
        };
        let cancel = SipMessage::parse(hop.cancel()).unwrap();
        assert_eq!(cancel.method(), "CANCEL");
        assert_eq!(cancel.cseq(), Some((7, "CANCEL")));
        assert_eq!(cancel.top_via().unwrap().branch(), Some("z9hG4bK-rb1-2"));
        assert_eq!(
            cancel.first_value(crate::sip::HeaderName::Route),
            Some("<sip:198.51.100.1;lr>")
        );
        let ack = SipMessage::parse(hop.ack("<sip:bob@y>;tag=9")).unwrap();
        assert_eq!(ack.cseq(), Some((7, "ACK")));
        assert_eq!(
            ack.first_value(crate::sip::HeaderName::To),
            Some("<sip:bob@y>;tag=9")
        );
    }

    #[test]
    fn keys_match_ack_to_invite_not_cancel() {
        let m = SipMessage::parse(Bytes::from_static(b"ACK sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bKq\r\nCall-ID: c\r\nCSeq: 1 ACK\r\n\r\n")).unwrap();
        let ack = ServerKey::of(&m, "ACK").unwrap();
        let inv = ServerKey::of(&m, "INVITE").unwrap();
        let can = ServerKey::of(&m, "CANCEL").unwrap();
        assert_eq!(ack, inv);
        assert_ne!(ack, can);
        let old = SipMessage::parse(Bytes::from_static(b"BYE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nCall-ID: c\r\nCSeq: 4 BYE\r\n\r\n")).unwrap();
        assert_eq!(ServerKey::of(&old, "BYE").unwrap().branch, "2543:c:4");
    }
}
