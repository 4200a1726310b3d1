//! The UDP socket's actor: every datagram is one SIP message (RFC 3261 18.3). Datagrams over
//! `-max-udp-message` are dropped (logged once a second at most, with the count); what
//! [`handle_message`] refuses is answered from here, to the datagram's source address.
//!
//! Keep-alives are answered here, before any SIP parsing or flood counting: a CRLF carries
//! nothing to answer, and a STUN Binding request (RFC 5626 section 4.4.2; see
//! [`crate::sip::stun`]) gets its Binding response. A phone behind a NAT sends one every
//! 25 s or so, and a keep-alive is never a request: it is not counted by flood protection.
//! The source of each datagram is normalised ([`peer_address`]) before it goes any further.

use super::guard::{Guard, Noise};
use super::{handle_message, peer_address, Handled};
use crate::actors::messages::RouterPool;
use crate::routing::{FlowId, Source};
use crate::sip::{stun, Transport};
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use log::{debug, info};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio_util::codec::BytesCodec;
use tokio_util::udp::UdpFramed;

pub struct UdpConnection {
    routers: RouterPool,
    guard: Guard,
    socket: Arc<UdpSocket>,
}

impl UdpConnection {
    pub fn start(socket: Arc<UdpSocket>, routers: RouterPool, guard: Guard) -> Addr<UdpConnection> {
        UdpConnection::create(|ctx| {
            ctx.add_stream(UdpFramed::new(socket.clone(), BytesCodec::new()));
            UdpConnection {
                routers,
                guard,
                socket,
            }
        })
    }
}

impl UdpConnection {
    /// Answers a STUN Binding request from `remote` (as the socket reported it, so the
    /// answer goes back the same way); anything else STUN is dropped, at debug level only:
    /// a keep-alive is not worth a log line, a broken one is the client's business.
    fn answer_stun(&self, datagram: &[u8], remote: SocketAddr) {
        let peer = peer_address(remote);
        match stun::answer(datagram, peer) {
            Ok(Some(response)) => {
                if let Err(e) = self.socket.try_send_to(&response, remote) {
                    debug!("STUN answer to {peer} not sent: {e}");
                }
            }
            Ok(None) => debug!("STUN message from {peer} needs no answer"),
            Err(e) => debug!("dropped a STUN message from {peer}: {e}"),
        }
    }
}

impl Actor for UdpConnection {
    type Context = Context<Self>;
}

impl StreamHandler<Result<(BytesMut, SocketAddr), std::io::Error>> for UdpConnection {
    fn handle(
        &mut self,
        item: Result<(BytesMut, SocketAddr), std::io::Error>,
        _: &mut Context<Self>,
    ) {
        match item {
            Ok((data, remote)) => {
                // CRLF keep-alives from NATed phones carry no message.
                if data.iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
                    return;
                }
                if stun::looks_like_stun(&data) {
                    return self.answer_stun(&data, remote);
                }
                // `remote` as the socket sees it is where answers go; `peer` is what the
                // rest of Roundabout (and the log) knows the sender as.
                let peer = peer_address(remote);
                let limit = self.guard.limits().max_udp_message;
                if data.len() > limit {
                    let kind = Noise::on("datagram over -max-udp-message", Transport::Udp);
                    self.guard.peer_log(kind, |s| {
                        info!(
                            "dropped a {}-byte datagram from {peer}: over the limit of {limit} \
                             bytes (-max-udp-message){s}",
                            data.len()
                        )
                    });
                    return;
                }
                let source = Source {
                    transport: Transport::Udp,
                    remote: peer,
                    flow: FlowId::UDP,
                };
                // Copied to its exact size: a split of the 64 KiB read buffer would keep the
                // whole buffer alive for as long as the transaction holds the message.
                let bytes = Bytes::copy_from_slice(&data);
                if let Handled::Answered(answer) =
                    handle_message(bytes, source, &self.routers, &self.guard)
                {
                    // Best effort, like any UDP answer: a full socket buffer drops it.
                    if let Err(e) = self.socket.try_send_to(&answer, remote) {
                        debug!("udp answer to {peer} not sent: {e}");
                    }
                }
            }
            // ICMP errors for earlier sends surface here (e.g. connection refused): they
            // concern one peer, never the socket.
            Err(e) => debug!("udp receive error: {e}"),
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The socket stream never ends while the socket lives; nothing to do.
    }
}
