//! Connection actors: one per transport socket. They cut bytes into SIP messages, parse
//! them once, and pass them to the Router shard of their Call-ID; they write what the
//! Dispatcher sends them.
//!
//! - `udp`: the UDP socket (one actor; datagrams are messages).
//! - `stream`: one actor per TCP (later TLS) connection, accepted or opened by Roundabout.
//! - `tcp`: the TCP listener and the connector that opens outbound connections.

pub mod stream;
pub mod tcp;
pub mod udp;

use super::messages::{Inbound, RouterPool};
use crate::routing::{FlowId, Source};
use crate::sip::SipMessage;
use bytes::Bytes;
use log::info;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_FLOW: AtomicU64 = AtomicU64::new(1);

/// A fresh connection id (0 is UDP).
pub fn next_flow_id() -> FlowId {
    FlowId(NEXT_FLOW.fetch_add(1, Ordering::Relaxed))
}

/// Parses one message and hands it to its Router; a message that cannot be parsed is dropped
/// with a log line naming the sender and the reason.
pub fn parse_and_route(bytes: Bytes, source: Source, routers: &RouterPool) {
    match SipMessage::parse(bytes) {
        Ok(msg) => routers.send(Inbound { msg, source }),
        Err(e) => info!(
            "dropped an unparseable message from {} {}: {e}",
            source.transport, source.remote
        ),
    }
}
