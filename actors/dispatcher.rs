//! The Dispatcher: owns the way out. It knows every open connection (accepted or opened by
//! Roundabout) by flow id and by (transport, address), reuses one connection per destination,
//! opens new ones on demand through the injected [`Connector`], and sends UDP datagrams.
//! When a destination cannot be reached it tells the Router that asked, so the caller gets
//! 503 (or 480 for a client whose connection is gone) instead of silence.
//!
//! Without `-strict-host` a Request-URI may name any host, and each new (transport, address)
//! makes Roundabout open a connection: `-max-outbound-connections` bounds how many of those,
//! to hosts that are not trusted servers, are open or being opened at once; over it a
//! request gets 503 at once. The cap and the trusted servers' addresses are the connection
//! guard's (`connection::guard`), read at each new connection, so a reload applies to the
//! next one and leaves those open alone.

use super::connection::guard::Guard;
use super::messages::*;
use crate::log_throttle::{LogThrottles, PEER_LOG_INTERVAL};
use crate::routing::{Destination, FlowId};
use crate::sip::Transport;
use actix::prelude::*;
use bytes::Bytes;
use log::{debug, warn};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
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
    /// `-max-outbound-connections`, and the trusted servers' addresses (not counted).
    guard: Guard,
    /// Connections opened by Roundabout to hosts that are not trusted servers, still open.
    dialed: HashSet<FlowId>,
    /// Such connections being opened.
    dialing: usize,
    /// Lines requests can cause (a host that does not resolve, the cap reached): one a
    /// second per kind.
    noise: LogThrottles<&'static str>,
}

impl Dispatcher {
    pub fn new(udp: Option<Arc<UdpSocket>>, connector: Connector, guard: Guard) -> Self {
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
            guard,
            dialed: HashSet::new(),
            dialing: 0,
            noise: LogThrottles::new(PEER_LOG_INTERVAL),
        }
    }

    /// Whether a new connection to `addr` counts under the cap (it is not a trusted
    /// server's), and `Err` with what is open when the cap is reached.
    fn may_dial(&self, addr: SocketAddr) -> Result<bool, usize> {
        if self.guard.is_exempt(addr.ip()) {
            return Ok(false);
        }
        let max = self.guard.limits().max_outbound_connections;
        let open = self.dialed.len() + self.dialing;
        if max > 0 && open >= max {
            return Err(open);
        }
        Ok(true)
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

    /// The writer of `flow`, if its connection actor is alive. One that has stopped (a
    /// connection given up for not reading, whose `FlowClosed` is still on its way) is
    /// forgotten at once: its requests get 480 now (or a new connection), not 408 at Timer F.
    fn writer(&mut self, flow: FlowId) -> Option<&Recipient<SendFrame>> {
        if !self.flows.get(&flow)?.writer.connected() {
            if let Some(f) = self.flows.remove(&flow) {
                self.forget(&f);
            }
            return None;
        }
        self.flows.get(&flow).map(|f| &f.writer)
    }

    /// Forgets what is known of a connection besides `flows`.
    fn forget(&mut self, f: &FlowOpened) {
        if self.by_addr.get(&(f.transport, f.remote)) == Some(&f.flow) {
            self.by_addr.remove(&(f.transport, f.remote));
        }
        self.dialed.remove(&f.flow);
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
        if let Some(writer) = self.by_addr.get(&key).copied().and_then(|f| self.writer(f)) {
            writer.do_send(SendFrame(bytes));
            return;
        }
        if let Some(queue) = self.connecting.get_mut(&key) {
            queue.push((bytes, notify));
            return;
        }
        let counted = match self.may_dial(addr) {
            Ok(counted) => counted,
            Err(open) => {
                if let Some(s) = self.noise.admit("outbound cap", Instant::now()) {
                    warn!(
                        "not connecting to {transport}:{addr}: {open} connections to hosts that \
                         are not trusted servers are open or being opened, the most allowed \
                         (-max-outbound-connections); the request gets 503{s}"
                    );
                }
                return Self::fail(notify, DeliveryError::Unreachable);
            }
        };
        self.dialing += usize::from(counted);
        self.connecting.insert(key, vec![(bytes, notify)]);
        debug!("connecting to {transport}:{addr}");
        let fut = (self.connector)(transport, addr, tls_name);
        ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
            let queued = act.connecting.remove(&key).unwrap_or_default();
            act.dialing -= usize::from(counted);
            match res {
                Ok(opened) => {
                    debug!("connected to {transport}:{addr} ({})", opened.flow);
                    for (bytes, _) in queued {
                        opened.writer.do_send(SendFrame(bytes));
                    }
                    if counted {
                        act.dialed.insert(opened.flow);
                    }
                    act.register(opened);
                }
                Err(e) => {
                    // The connector has said why (throttled).
                    debug!("cannot reach {transport}:{addr}: {e:?}");
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
            } => match self.writer(flow) {
                Some(writer) => writer.do_send(SendFrame(bytes)),
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
                            if let Some(s) = act.noise.admit("cannot resolve", Instant::now()) {
                                warn!("cannot resolve {host}{s}");
                            }
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
        if let Some(f) = self.flows.remove(&m.flow) {
            self.forget(&f);
        }
    }
}

impl Handler<CountFlows> for Dispatcher {
    type Result = MessageResult<CountFlows>;

    fn handle(&mut self, _: CountFlows, _: &mut Context<Self>) -> MessageResult<CountFlows> {
        MessageResult((self.flows.len(), self.connecting.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;

    fn dispatcher(guard: Guard) -> Dispatcher {
        let never: Connector =
            std::rc::Rc::new(|_, _, _| Box::pin(async { Err(DeliveryError::Unreachable) }));
        Dispatcher::new(None, never, guard)
    }

    #[test]
    fn the_outbound_cap_is_read_at_each_new_connection() {
        let trusted: SocketAddr = "192.0.2.99:5060".parse().unwrap();
        let host: SocketAddr = "198.51.100.1:5060".parse().unwrap();
        let cap = |max| Limits {
            max_outbound_connections: max,
            ..Limits::default()
        };
        let guard = Guard::new(cap(2), [trusted.ip()]);
        let mut d = dispatcher(guard.clone());
        d.dialing = 2;
        assert_eq!(d.may_dial(host), Err(2));
        assert_eq!(
            d.may_dial(trusted),
            Ok(false),
            "trusted servers are not counted"
        );
        guard.set_limits(cap(3));
        assert_eq!(d.may_dial(host), Ok(true), "raised by a reload");
        guard.set_limits(cap(1));
        assert_eq!(
            d.may_dial(host),
            Err(2),
            "lowered: the two stay, a third waits"
        );
        guard.set_limits(cap(0));
        assert_eq!(d.may_dial(host), Ok(true), "0: no limit");
    }
}
