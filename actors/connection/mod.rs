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
//! - `guard`: connection caps, flood protection, the throttle of the log lines peers cause,
//!   and their counters, shared by all of them.
//! - `send_queue`: what waits to be written on one connection, bounded by `-max-send-queue`.
//! - `read_ahead`: one system call per burst under TLS and WebSocket, nothing held when idle.
//!
//! Every message goes through [`handle_message`]: flood check, parse, screening; what is
//! wrong with it is answered (400, 420, 505) or dropped right there, with a log line (at
//! most one a second per kind of problem: see [`guard::Guard::peer_log`]).
//!
//! Peer addresses are normalised where they enter ([`peer_address`]): with `-bind-ip ::` the
//! kernel reports an IPv4 peer as `::ffff:a.b.c.d`, and everything after the edge (trusted
//! servers, client networks, flood protection, `received=`, contact tokens) sees the IPv4
//! address it is. The way out maps it back for an IPv6 UDP socket ([`udp_destination`]).

pub mod flow;
pub mod guard;
pub mod read_ahead;
pub mod send_queue;
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
use guard::{Guard, Noise};
use log::info;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_FLOW: AtomicU64 = AtomicU64::new(1);

/// A fresh connection id (0 is UDP).
pub fn next_flow_id() -> FlowId {
    FlowId(NEXT_FLOW.fetch_add(1, Ordering::Relaxed))
}

/// A peer's address as Roundabout keeps it: an IPv4-mapped IPv6 address (a dual-stack
/// socket's view of an IPv4 peer) is the IPv4 address.
pub fn peer_address(remote: SocketAddr) -> SocketAddr {
    SocketAddr::new(remote.ip().to_canonical(), remote.port())
}

/// Where to send a datagram for `addr` on a UDP socket that is IPv6 or not: an IPv6 socket
/// (bound to `::`) reaches an IPv4 peer at its IPv4-mapped address (an IPv4 address handed
/// to it fails with EAFNOSUPPORT), an IPv4 socket reaches an IPv4-mapped one (say from a
/// Request-URI `[::ffff:192.0.2.9]`) at its IPv4 address.
pub fn udp_destination(addr: SocketAddr, socket_is_ipv6: bool) -> SocketAddr {
    match (addr.ip().to_canonical(), socket_is_ipv6) {
        (IpAddr::V4(v4), true) => SocketAddr::new(v4.to_ipv6_mapped().into(), addr.port()),
        (v4 @ IpAddr::V4(_), false) => SocketAddr::new(v4, addr.port()),
        (IpAddr::V6(_), _) => addr,
    }
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
/// cannot be parsed is dropped. Each refusal is logged with the sender and the reason, one
/// line a second at most per reason and transport (with the count of those not logged).
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
                    guard.peer_log(Noise::on(reason, source.transport), |s| {
                        info!(
                            "{} from {} {} answered {code} {reason}{s}",
                            msg.method(),
                            source.transport,
                            source.remote
                        )
                    });
                    return Handled::Answered(build_response_with(
                        &msg, code, reason, None, &extra,
                    ));
                }
            }
            routers.send(Inbound { msg, source });
            Handled::Routed
        }
        Err(e) => {
            let reason = reason_for(&e);
            match salvage(&raw, reason) {
                Some(s) => {
                    guard.peer_log(Noise::on(reason, source.transport), |more| {
                        info!(
                            "unparseable {} from {} {} answered {} {}: {e}{more}",
                            s.method, source.transport, source.remote, s.code, s.reason
                        )
                    });
                    Handled::Answered(build_salvaged_response(&s))
                }
                None => {
                    crate::ops::metrics::metrics().unparseable_dropped();
                    guard.peer_log(Noise::on("unparseable", source.transport), |more| {
                        info!(
                            "dropped an unparseable message from {} {}: {e}{more}",
                            source.transport, source.remote
                        )
                    });
                    Handled::Unparseable
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_peers_are_ipv4_inside_and_mapped_on_an_ipv6_socket() {
        assert_eq!(
            peer_address(a("[::ffff:127.0.0.2]:5060")),
            a("127.0.0.2:5060")
        );
        assert_eq!(peer_address(a("127.0.0.2:5060")), a("127.0.0.2:5060"));
        assert_eq!(
            peer_address(a("[2001:db8::1]:5060")),
            a("[2001:db8::1]:5060")
        );
        assert_eq!(peer_address(a("[::1]:5060")), a("[::1]:5060"));
        assert_eq!(
            udp_destination(a("127.0.0.2:5060"), true),
            a("[::ffff:127.0.0.2]:5060")
        );
        assert_eq!(
            udp_destination(a("127.0.0.2:5060"), false),
            a("127.0.0.2:5060")
        );
        assert_eq!(
            udp_destination(a("[2001:db8::1]:5060"), true),
            a("[2001:db8::1]:5060")
        );
        assert_eq!(
            udp_destination(a("[::ffff:127.0.0.2]:5060"), false),
            a("127.0.0.2:5060")
        );
        assert_eq!(
            udp_destination(a("[::ffff:127.0.0.2]:5060"), true),
            a("[::ffff:127.0.0.2]:5060")
        );
        // The round trip is the identity for what a dual-stack socket reports.
        let seen = a("[::ffff:192.0.2.9]:40000");
        assert_eq!(udp_destination(peer_address(seen), true), seen);
    }
}
