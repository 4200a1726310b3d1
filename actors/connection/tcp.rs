//! The TCP listener actor, and the connector that opens outbound TCP connections.

use super::next_flow_id;
use super::stream::StreamConnection;
use crate::actors::messages::{ConnectionEvents, Connector, DeliveryError, FlowOpened, RouterPool};
use crate::sip::Transport;
use actix::prelude::*;
use log::warn;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How long opening a connection to a next hop may take before the request gets 503.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct TcpListenerActor {
    routers: RouterPool,
    events: ConnectionEvents,
}

impl TcpListenerActor {
    pub fn start(listener: TcpListener, routers: RouterPool, events: ConnectionEvents) -> Addr<Self> {
        TcpListenerActor::create(move |ctx| {
            let accepts = futures_util::stream::unfold(listener, |l| async move {
                let r = l.accept().await;
                Some((r, l))
            });
            ctx.add_stream(accepts);
            TcpListenerActor { routers, events }
        })
    }
}

impl Actor for TcpListenerActor {
    type Context = Context<Self>;
}

impl StreamHandler<std::io::Result<(TcpStream, SocketAddr)>> for TcpListenerActor {
    fn handle(&mut self, item: std::io::Result<(TcpStream, SocketAddr)>, _: &mut Context<Self>) {
        match item {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                StreamConnection::start(stream, next_flow_id(), Transport::Tcp, remote, self.routers.clone(), self.events.clone(), true);
            }
            // e.g. out of file descriptors: this accept fails, the listener goes on.
            Err(e) => warn!("tcp accept failed: {e}"),
        }
    }
}

/// Opens outbound connections from `bind_ip` (so peers see Roundabout's address).
pub fn connector(bind_ip: IpAddr, routers: RouterPool, events: ConnectionEvents) -> Connector {
    std::rc::Rc::new(move |transport, addr, _tls_name| {
        let routers = routers.clone();
        let events = events.clone();
        Box::pin(async move {
            match transport {
                Transport::Tcp => {
                    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect_tcp(bind_ip, addr))
                        .await
                        .map_err(|_| DeliveryError::Unreachable)?
                        .map_err(|e| {
                            warn!("tcp connect to {addr} failed: {e}");
                            DeliveryError::Unreachable
                        })?;
                    let _ = stream.set_nodelay(true);
                    let flow = next_flow_id();
                    let conn = StreamConnection::start(stream, flow, transport, addr, routers, events, false);
                    Ok(FlowOpened {
                        flow,
                        transport,
                        remote: addr,
                        writer: conn.recipient(),
                    })
                }
                other => {
                    warn!("outbound {other} connections are not supported yet");
                    Err(DeliveryError::Unreachable)
                }
            }
        })
    })
}

async fn connect_tcp(bind_ip: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if !bind_ip.is_unspecified() && bind_ip.is_ipv4() == addr.is_ipv4() {
        socket.bind(SocketAddr::new(bind_ip, 0))?;
    }
    socket.connect(addr).await
}
