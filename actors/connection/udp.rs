//! The UDP socket's actor: every datagram is one SIP message (RFC 3261 18.3).

use super::parse_and_route;
use crate::actors::messages::RouterPool;
use crate::routing::{FlowId, Source};
use crate::sip::Transport;
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use log::debug;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio_util::codec::BytesCodec;
use tokio_util::udp::UdpFramed;

pub struct UdpConnection {
    routers: RouterPool,
}

impl UdpConnection {
    pub fn start(socket: Arc<UdpSocket>, routers: RouterPool) -> Addr<UdpConnection> {
        UdpConnection::create(|ctx| {
            ctx.add_stream(UdpFramed::new(socket, BytesCodec::new()));
            UdpConnection { routers }
        })
    }
}

impl Actor for UdpConnection {
    type Context = Context<Self>;
}

impl StreamHandler<Result<(BytesMut, SocketAddr), std::io::Error>> for UdpConnection {
    fn handle(&mut self, item: Result<(BytesMut, SocketAddr), std::io::Error>, _: &mut Context<Self>) {
        match item {
            Ok((data, remote)) => {
                // CRLF keep-alives from NATed phones carry no message.
                if data.iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
                    return;
                }
                let source = Source {
                    transport: Transport::Udp,
                    remote,
                    flow: FlowId::UDP,
                };
                // Copied to its exact size: a split of the 64 KiB read buffer would keep the
                // whole buffer alive for as long as the transaction holds the message.
                parse_and_route(Bytes::copy_from_slice(&data), source, &self.routers);
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
