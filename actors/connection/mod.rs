//! Connection actors: one per transport socket. They cut bytes into SIP messages, parse
//! them once, and pass them to the Router shard of their Call-ID; they write what the
//! Dispatcher sends them.
//!
//! - `udp`: the UDP socket (one actor; datagrams are messages).
//! - `stream`: one actor per TCP or TLS connection, accepted or opened by Roundabout.
//! - `ws`: one actor per WS or WSS connection, and the WebSocket handshake rules.
//! - `tcp`: the listeners of the TCP-based transports (TCP, TLS, WS, WSS) and the connector
//!   that opens outbound connections of each.
//! - `flow`: what the `stream` and `ws` actors share: the peer, its announcements to the
//!   Dispatcher, and the first-message and idle timeouts.
//! - `guard`: connection caps, flood protection and their counters, shared by all of them.
//!
//! Every message goes through [`handle_message`]: flood check, parse, screening; what is
//! wrong with it is answered (400, 420, 505) or dropped right there, with a log line.

pub mod flow;
pub mod guard;
pub mod stream;
pub mod tcp;
pub mod udp;
pub mod ws;

use super::messages::{Inbound, RouterPool};
use crate::proxy::responses::{build_response_with, build_salvaged_response};
use crate::proxy::validate::screen_request;
use crate::routing::{FlowId, Source};
use crate::sip::salvage::{reason_for, salvage};
use crate::sip::SipMessage;
use bytes::Bytes;
use guard::Guard;
use log::info;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_FLOW: AtomicU64 = AtomicU64::new(1);

/// A fresh connection id (0 is UDP).
pub fn next_flow_id() -> FlowId {
    FlowId(NEXT_FLOW.fetch_add(1, Ordering::Relaxed))
}

/// What became of a message from a peer.
#[derive(Debug)]
pub enum Handled {
    /// Parsed and passed to its Router.
    Routed,
    /// Refused here: this answer goes back to the sender the way the message came.
    Answered(Bytes),
    /// Not SIP, and nothing could be answered (logged): a stream connection should close.
    Unparseable,
    /// Dropped by flood protection (logged by the guard).
    Flooding,
}

/// Checks one message from a peer and hands it to its Router: flood protection first (one
/// map lookup; responses are not counted), then the parse (at most `-max-headers` header
/// lines) and [`screen_request`]. A request the parser refuses is answered 400 (505 for
/// another SIP version) when [`salvage`] finds what the answer needs; anything else that
/// cannot be parsed is dropped. Each refusal is logged with the sender and the reason.
pub fn handle_message(
    bytes: Bytes,
    source: Source,
    routers: &RouterPool,
    guard: &Guard,
) -> Handled {
    if !bytes.starts_with(b"SIP/2.0 ") && !guard.admit_request(source.remote.ip()) {
        return Handled::Flooding;
    }
    // A clone of `Bytes` shares the buffer: kept for the salvage path only.
    let raw = bytes.clone();
    match SipMessage::parse_limited(bytes, guard.limits().max_headers) {
        Ok(msg) => {
            if msg.is_request() {
                if let Some((code, reason, extra)) = screen_request(&msg) {
                    info!(
                        "{} from {} {} answered {code} {reason}",
                        msg.method(),
                        source.transport,
                        source.remote
                    );
                    return Handled::Answered(build_response_with(
                        &msg, code, reason, None, &extra,
                    ));
                }
            }
            routers.send(Inbound { msg, source });
            Handled::Routed
        }
        Err(e) => match salvage(&raw, reason_for(&e)) {
            Some(s) => {
                info!(
                    "unparseable {} from {} {} answered {} {}: {e}",
                    s.method, source.transport, source.remote, s.code, s.reason
                );
                Handled::Answered(build_salvaged_response(&s))
            }
            None => {
                info!(
                    "dropped an unparseable message from {} {}: {e}",
                    source.transport, source.remote
                );
                Handled::Unparseable
            }
        },
    }
}
