//! What the two connection actors over TCP (TCP and TLS in `stream`, WS and WSS in `ws`)
//! share: the [`Flow`] they serve — who the peer is, its place under the connection caps,
//! telling the Dispatcher and the others that it opened and closed — and its two timeouts:
//! an accepted connection must send a SIP message within [`FIRST_MESSAGE_TIMEOUT`], and any
//! connection that receives nothing at all for `-idle-timeout` is closed.
//!
//! An actor keeps a [`Flow`], tells it what it hears ([`Flow::heard`],
//! [`Flow::got_message`]), implements [`FlowActor`] (how to close the connection, and how to
//! give it up at once) and calls [`watch`] when it starts. What it writes goes through a
//! [`SendQueue`](super::send_queue::SendQueue); a peer that lets more than `-max-send-queue`
//! wait is given up ([`FlowActor::overflow`]).

use super::guard::{ConnectionSlot, Guard, Noise};
use crate::actors::messages::{ConnectionEvents, FlowClosed, FlowOpened, SendFrame};
use crate::routing::{FlowId, Source};
use crate::sip::Transport;
use actix::prelude::*;
use log::{debug, info, warn};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// An accepted connection that has sent no valid SIP message this long after it was opened
/// is closed (a port scanner, a stuck client, a half-open socket), so idle sockets cannot
/// pile up. Connections Roundabout opened are exempt: it speaks first on them.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection as its actor sees it, apart from the bytes.
pub struct Flow {
    /// What messages from it are tagged with (transport, remote address, flow id).
    source: Source,
    events: ConnectionEvents,
    /// Its place under the connection caps (accepted ones) and in the live count.
    slot: ConnectionSlot,
    got_message: bool,
    /// When the peer last sent anything.
    last_heard: Instant,
    /// Counts it in `roundabout_connections_open` while it lives.
    _open: crate::ops::metrics::OpenConnection,
}

impl Flow {
    /// A `slot` from the guard's `admit_connection` marks a connection accepted by a
    /// listener: it announces itself ([`Flow::opened`]) and must send SIP soon; the
    /// connector reports outbound ones (with an `outbound_slot`) itself.
    pub fn new(
        id: FlowId,
        transport: Transport,
        remote: SocketAddr,
        events: ConnectionEvents,
        slot: ConnectionSlot,
    ) -> Flow {
        Flow {
            // An IPv4 peer on a dual-stack socket is kept as IPv4 (see `peer_address`).
            source: Source {
                transport,
                remote: super::peer_address(remote),
                flow: id,
            },
            events,
            slot,
            got_message: false,
            last_heard: Instant::now(),
            _open: crate::ops::metrics::metrics().connection_opened(transport),
        }
    }

    pub fn source(&self) -> Source {
        self.source
    }

    pub fn transport(&self) -> Transport {
        self.source.transport
    }

    pub fn remote(&self) -> SocketAddr {
        self.source.remote
    }

    pub fn guard(&self) -> &Guard {
        self.slot.guard()
    }

    /// Tells the Dispatcher that an accepted connection can be written to through `writer`.
    pub fn opened(&self, writer: Recipient<SendFrame>) {
        if self.slot.is_accepted() {
            self.events.opened.do_send(FlowOpened {
                flow: self.source.flow,
                transport: self.source.transport,
                remote: self.source.remote,
                writer,
            });
        }
    }

    /// Tells everyone who keeps state about the connection that it is gone.
    pub fn closed(&self) {
        self.events.report_closed(FlowClosed {
            flow: self.source.flow,
            transport: self.source.transport,
            remote: self.source.remote,
        });
    }

    /// The peer sent something: a message, part of one, a keep-alive, a ping or a pong.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// The peer sent a SIP message (routed, or answered on the connection).
    pub fn got_message(&mut self) {
        self.got_message = true;
    }
}

/// `tcp connection 7 with 192.0.2.1:5060`, for log lines.
impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.source;
        write!(f, "{} connection {} with {}", s.transport, s.flow, s.remote)
    }
}

/// A connection actor: its flow, and how it ends the connection.
pub trait FlowActor: Actor<Context = Context<Self>> {
    fn flow(&self) -> &Flow;

    /// Ends the connection (the actor stops). The caller has logged why.
    fn end(&mut self, ctx: &mut Context<Self>);

    /// Drops what waits to be written and stops the actor at once (no goodbye: the peer
    /// would not read it).
    fn give_up(&mut self, ctx: &mut Context<Self>);

    /// Closes the connection with a log line that says `why`.
    fn close(&mut self, ctx: &mut Context<Self>, why: &str) {
        info!("closing {}: {why}", self.flow());
        self.end(ctx);
    }

    /// Closes the connection for something its peer sent (not SIP, too large...): as
    /// [`FlowActor::close`], but the line is throttled per `what` and transport (one a
    /// second, see `Guard::peer_log`), so a peer opening connection after connection to send
    /// garbage cannot flood the log.
    fn close_for(&mut self, ctx: &mut Context<Self>, what: &'static str, why: &str) {
        let flow = self.flow();
        let kind = Noise::on(what, flow.transport());
        flow.guard()
            .peer_log(kind, |s| info!("closing {flow}: {why}{s}"));
        self.end(ctx);
    }

    /// The peer does not read: `queued` bytes wait already and one more message would take
    /// them over `-max-send-queue`. The connection is given up (a throttled log line), which
    /// reports the flow closed, so requests for a client on it get 480.
    fn overflow(&mut self, ctx: &mut Context<Self>, queued: usize) {
        let flow = self.flow();
        let limit = flow.guard().limits().max_send_queue;
        let kind = Noise::on("send queue over the limit", flow.transport());
        flow.guard().peer_log(kind, |s| {
            warn!(
                "closing {flow}: the peer does not read: {queued} bytes wait to be written and \
                 the next message would take them over {limit} (-max-send-queue){s}"
            )
        });
        self.give_up(ctx);
    }
}

/// Logs the opening and arms both timeouts; called from the actor's `started`.
pub fn watch<A: FlowActor>(act: &mut A, ctx: &mut Context<A>) {
    debug!("{} open", act.flow());
    if act.flow().slot.is_accepted() {
        ctx.run_later(FIRST_MESSAGE_TIMEOUT, |act, ctx| {
            if !act.flow().got_message {
                act.close(
                    ctx,
                    &format!("no SIP message within {FIRST_MESSAGE_TIMEOUT:?}"),
                );
            }
        });
    }
    check_idle(act, ctx);
}

/// Closes the connection when it has received nothing for `-idle-timeout`; else looks
/// again when that would be the case.
fn check_idle<A: FlowActor>(act: &mut A, ctx: &mut Context<A>) {
    let Some(idle) = act.flow().guard().limits().idle_timeout else {
        return;
    };
    match idle_check(act.flow().last_heard, Instant::now(), idle) {
        Some(after) => {
            ctx.run_later(after, check_idle::<A>);
        }
        None => act.close(
            ctx,
            &format!("nothing received for {idle:?} (-idle-timeout)"),
        ),
    }
}

/// When a connection that last heard from its peer at `last` must be looked at again for
/// the idle timeout, or `None` when it has been idle too long now.
fn idle_check(last: Instant, now: Instant, idle: Duration) -> Option<Duration> {
    let quiet = now.saturating_duration_since(last);
    (quiet < idle).then(|| idle - quiet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_deadline() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(10);
        assert_eq!(
            idle_check(t0, t0 + Duration::from_secs(4), idle),
            Some(Duration::from_secs(6))
        );
        assert_eq!(idle_check(t0, t0 + idle, idle), None);
    }
}
