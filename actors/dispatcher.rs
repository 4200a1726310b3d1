//! The Dispatcher: owns the way out. It knows every open connection (accepted or opened by
//! Roundabout) by flow id and by (transport, address), reuses one connection per destination,
//! opens new ones on demand through the injected [`Connector`], and sends UDP datagrams.
//! When a destination cannot be reached it tells the Router that asked, so the caller gets
//! 503 (or 480 for a client whose connection is gone) instead of silence.

use super::messages::*;
use crate::routing::{Destination, FlowId};
use crate::sip::Transport;
use actix::prelude::*;
use bytes::Bytes;
use log::{debug, warn};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;

/// A message waiting for its connection, and whom to tell if it cannot be sent.
type Queued = (Bytes, Option<FailureNotice>);

pub struct Dispatcher {
    udp: Option<Arc<UdpSocket>>,
    /// Whether the UDP socket is IPv6 (`-bind-ip ::`): IPv4 peers are then sent to at their
    /// IPv4-mapped address.
    udp_is_ipv6: bool,
    connector: Connector,
    flows: HashMap<FlowId, FlowOpened>,
    by_addr: HashMap<(Transport, SocketAddr), FlowId>,
    /// Messages waiting for a connection being opened.
    connecting: HashMap<(Transport, SocketAddr), Vec<Queued>>,
}

impl Dispatcher {
    pub fn new(udp: Option<Arc<UdpSocket>>, connector: Connector) -> Self {
        let udp_is_ipv6 = udp
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .is_some_and(|a| a.is_ipv6());
        Dispatcher {
            udp,
            udp_is_ipv6,
            connector,
            flows: HashMap::new(),
            by_addr: HashMap::new(),
            connecting: HashMap::new(),
        }
    }

    fn fail(notify: Option<FailureNotice>, error: DeliveryError) {
        if let Some(n) = notify {
            n.router.do_send(DeliveryFailed { tx: n.tx, error });
        }
    }

    fn send_udp(
        &self,
        addr: SocketAddr,
        bytes: bytes::Bytes,
        notify: Option<FailureNotice>,
        ctx: &mut Context<Self>,
    ) {
        let Some(socket) = self.udp.clone() else {
            warn!("cannot send to udp:{addr}: the UDP listener is off (-udp-port 0)");
            return Self::fail(notify, DeliveryError::Unreachable);
        };
        // Peers are kept as IPv4 (connection::peer_address); the socket may be IPv6.
        let to = super::connection::udp_destination(addr, self.udp_is_ipv6);
        // One datagram whatever its size (up to 65,507 bytes): a 4 KB WebRTC INVITE is sent
        // whole and fragmented by IP, as Kamailio does, never refused.
        match socket.try_send_to(&bytes, to) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ctx.spawn(
                    async move {
                        if let Err(e) = socket.send_to(&bytes, to).await {
                            debug!("udp send to {addr} failed: {e}");
                        }
                    }
                    .into_actor(self),
                );
            }
            Err(e) => {
                debug!("udp send to {addr} failed: {e}");
                Self::fail(notify, DeliveryError::Unreachable);
            }
        }
    }

    fn register(&mut self, opened: FlowOpened) {
        self.by_addr
            .insert((opened.transport, opened.remote), opened.flow);
        self.flows.insert(opened.flow, opened);
    }

    fn send_stream(
        &mut self,
        transport: Transport,
        addr: SocketAddr,
        tls_name: Option<String>,
        (bytes, notify): Queued,
        ctx: &mut Context<Self>,
    ) {
        let key = (transport, addr);
        if let Some(flow) = self.by_addr.get(&key).and_then(|f| self.flows.get(f)) {
            flow.writer.do_send(SendFrame(bytes));
            return;
        }
        if let Some(queue) = self.connecting.get_mut(&key) {
            queue.push((bytes, notify));
            return;
        }
        self.connecting.insert(key, vec![(bytes, notify)]);
        debug!("connecting to {transport}:{addr}");
        let fut = (self.connector)(transport, addr, tls_name);
        ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
            let queued = act.connecting.remove(&key).unwrap_or_default();
            match res {
                Ok(opened) => {
                    debug!("connected to {transport}:{addr} ({})", opened.flow);
                    for (bytes, _) in queued {
                        opened.writer.do_send(SendFrame(bytes));
                    }
                    act.register(opened);
                }
                Err(e) => {
                    warn!("cannot reach {transport}:{addr}: {e:?}");
                    for (_, notify) in queued {
                        Self::fail(notify, e);
                    }
                }
            }
        }));
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Dispatcher {
    type Result = ();

    fn handle(&mut self, m: Deliver, ctx: &mut Context<Self>) {
        // Taken apart, not cloned: the destination may own a TLS name.
        let Deliver {
            destination,
            bytes,
            notify,
        } = m;
        match destination {
            Destination::Flow {
                flow,
                transport,
                remote,
            } => match self.flows.get(&flow) {
                Some(f) => f.writer.do_send(SendFrame(bytes)),
                None => {
                    debug!("{transport} connection {flow} to {remote} is gone");
                    Self::fail(notify, DeliveryError::FlowGone);
                }
            },
            Destination::Address {
                transport: Transport::Udp,
                addr,
                ..
            } => self.send_udp(addr, bytes, notify, ctx),
            Destination::Address {
                transport,
                addr,
                tls_name,
            } => self.send_stream(transport, addr, tls_name, (bytes, notify), ctx),
            Destination::Name {
                transport,
                host,
                port,
            } => {
                let lookup = tokio::net::lookup_host((host.clone(), port));
                ctx.spawn(lookup.into_actor(self).map(move |res, act, ctx| {
                    match res.ok().and_then(|mut addrs| addrs.next()) {
                        Some(addr) => {
                            let tls_name = Some(host);
                            let m = Deliver {
                                destination: Destination::Address {
                                    transport,
                                    addr,
                                    tls_name,
                                },
                                bytes,
                                notify,
                            };
                            act.handle(m, ctx);
                        }
                        None => {
                            warn!("cannot resolve {host}");
                            Self::fail(notify, DeliveryError::Unreachable);
                        }
                    }
                }));
            }
        }
    }
}

impl Handler<FlowOpened> for Dispatcher {
    type Result = ();

    fn handle(&mut self, m: FlowOpened, _: &mut Context<Self>) {
        self.register(m);
    }
}

impl Handler<FlowClosed> for Dispatcher {
    type Result = ();

    fn handle(&mut self, m: FlowClosed, _: &mut Context<Self>) {
        self.flows.remove(&m.flow);
        if self.by_addr.get(&(m.transport, m.remote)) == Some(&m.flow) {
            self.by_addr.remove(&(m.transport, m.remote));
        }
    }
}

impl Handler<CountFlows> for Dispatcher {
    type Result = MessageResult<CountFlows>;

    fn handle(&mut self, _: CountFlows, _: &mut Context<Self>) -> MessageResult<CountFlows> {
        MessageResult((self.flows.len(), self.connecting.len()))
    }
}
