//! The record a stateful proxy keeps per forwarded request (RFC 3261 section 17 and 16.7):
//! the server side (where the request came from, the last response sent back) and the client
//! side (where it went, with which branch, to retransmit, ACK non-2xx finals and CANCEL).

use super::rewrite::RegisteredContact;
use crate::routing::{Destination, Source};
use crate::sip::via::Via;
use crate::sip::SipMessage;
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// RFC 3261 timer values.
pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
/// Timer B / F: 64*T1 without a (final) response.
pub const TIMER_B: Duration = Duration::from_secs(32);
/// Timer C: a proxy gives up on a ringing INVITE after more than 3 minutes.
pub const TIMER_C: Duration = Duration::from_secs(181);
/// How long a finished transaction stays to absorb retransmissions (64*T1 for UDP).
pub const LINGER_UDP: Duration = Duration::from_secs(32);
pub const LINGER_STREAM: Duration = Duration::from_secs(5);

pub type TxId = u64;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxState {
    /// Waiting for the ServerTable/Registrar to name the next hop.
    Resolving,
    /// Sent downstream, no response yet.
    Calling,
    /// A provisional response came back.
    Proceeding,
    /// A final response went upstream; only retransmissions are absorbed now.
    Completed,
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

/// One forwarded request, both sides.
#[derive(Debug)]
pub struct ProxyTransaction {
    pub id: TxId,
    pub key: ServerKey,
    /// The request as received; dropped once it is answered (see [`ProxyTransaction::shrink`]).
    pub request: Option<SipMessage>,
    /// Its method, for logs after the request is dropped.
    pub method: String,
    pub source: Source,
    /// Our Via value for the incoming top Via with received/rport, for our own responses.
    pub source_via: Option<String>,
    pub state: TxState,
    pub destination: Option<Destination>,
    pub branch: String,
    /// The request as sent, for retransmission over UDP.
    pub sent: Option<Bytes>,
    pub hop: OutgoingHop,
    pub last_response: Option<Bytes>,
    pub final_status: Option<u16>,
    pub cancelled: bool,
    pub register: Option<RegisterContext>,
    pub retransmit_interval: Duration,
}

impl ProxyTransaction {
    pub fn is_invite(&self) -> bool {
        self.key.class == MethodClass::Invite
    }

    /// Once the final answer is out, only retransmissions are absorbed: keep what that
    /// needs (the key, the last response, and for a non-2xx INVITE what its ACK needs) and
    /// drop the rest, so the many lingering transactions of a busy proxy stay small.
    pub fn shrink(&mut self) {
        self.request = None;
        self.sent = None;
        self.source_via = None;
        self.register = None;
        let acks_downstream = self.is_invite() && self.final_status.is_some_and(|s| s >= 300);
        if !acks_downstream {
            self.hop = OutgoingHop::default();
        }
    }

    /// Next retransmission interval: doubling, capped at T2 except for INVITE (Timer A).
    pub fn next_interval(&self) -> Duration {
        let doubled = self.retransmit_interval * 2;
        if self.is_invite() {
            doubled
        } else {
            doubled.min(T2)
        }
    }
}

/// The timers a transaction runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// Timer A/E: retransmit the request over UDP.
    Retransmit,
    /// Timer B/F: no (final) answer in time.
    Timeout,
    /// Timer C: a ringing INVITE lasts too long.
    Ringing,
    /// The linger after the final answer is over: forget the transaction.
    Remove,
}

/// All timers of a Router shard in one heap, served by one periodic tick: far cheaper than
/// a runtime timer (and a boxed closure) per transaction and timer.
#[derive(Debug, Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, TxId, TimerKind)>>,
}

impl TimerQueue {
    pub fn schedule(&mut self, at: Instant, tx: TxId, kind: TimerKind) {
        self.heap.push(Reverse((at, tx, kind)));
    }

    /// Removes and returns the timers due at `now`, earliest first.
    pub fn due(&mut self, now: Instant) -> Vec<(TxId, TimerKind)> {
        let mut out = Vec::new();
        while let Some(Reverse((at, tx, kind))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            out.push((tx, kind));
        }
        out
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_queue_pops_due_timers_in_order() {
        let mut q = TimerQueue::default();
        let t0 = Instant::now();
        q.schedule(t0 + T2, 1, TimerKind::Timeout);
        q.schedule(t0 + T1, 2, TimerKind::Retransmit);
        q.schedule(t0, 3, TimerKind::Remove);
        assert_eq!(q.due(t0), vec![(3, TimerKind::Remove)]);
        assert_eq!(
            q.due(t0 + T2),
            vec![(2, TimerKind::Retransmit), (1, TimerKind::Timeout)]
        );
        assert!(q.is_empty());
    }

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
