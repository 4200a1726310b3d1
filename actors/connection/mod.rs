//! Connection actors: one per transport socket. They cut bytes into SIP messages, parse
//! them once, and pass them to the Router shard of their Call-ID; they write what the
//! Dispatcher sends them.
//!
//! - `udp`: the UDP socket (one actor; datagrams are messages).
//! - `stream`: one actor per TCP or TLS connection, accepted or opened by Roundabout.
//! - `ws`: one actor per WS or WSS connection, and the WebSocket handshake rules.
//! - `tcp`: the listeners of the TCP-based transports (TCP, TLS, WS, WSS) and the connector
//!   that opens outbound connections of each.

pub mod stream;
pub mod tcp;
pub mod udp;
pub mod ws;

use super::messages::{Inbound, RouterPool};
use crate::routing::{FlowId, Source};
use crate::sip::SipMessage;
use bytes::Bytes;
use log::info;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// An accepted connection that has sent no valid SIP message this long after it was opened
/// is closed (a port scanner, a stuck client, a half-open socket), so idle sockets cannot
/// pile up. Connections Roundabout opened are exempt: it speaks first on them.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_FLOW: AtomicU64 = AtomicU64::new(1);

/// A fresh connection id (0 is UDP).
pub fn next_flow_id() -> FlowId {
    FlowId(NEXT_FLOW.fetch_add(1, Ordering::Relaxed))
}

/// Parses one message and hands it to its Router; a message that cannot be parsed is dropped
/// with a log line naming the sender and the reason. Returns whether it was a SIP message.
pub fn parse_and_route(bytes: Bytes, source: Source, routers: &RouterPool) -> bool {
    match SipMessage::parse(bytes) {
        Ok(msg) => {
            routers.send(Inbound { msg, source });
            true
        }
        Err(e) => {
            info!(
                "dropped an unparseable message from {} {}: {e}",
                source.transport, source.remote
            );
            false
        }
    }
}
