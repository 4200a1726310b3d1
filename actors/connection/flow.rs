//! What the two connection actors over TCP (TCP and TLS in `stream`, WS and WSS in `ws`)
//! share: the [`Flow`] they serve — who the peer is, its place under the connection caps,
//! telling the Dispatcher and the others that it opened and closed — and its two timeouts:
//! an accepted connection must send a SIP message within [`FIRST_MESSAGE_TIMEOUT`], and any
//! connection that receives nothing at all for `-idle-timeout` is closed.
//!
//! An actor keeps a [`Flow`], tells it what it hears ([`Flow::heard`],
//! [`Flow::got_message`]), implements [`FlowActor`] (how to close the connection) and calls
//! [`watch`] when it starts.

use super::guard::{ConnectionSlot, Guard};
use crate::actors::messages::{ConnectionEvents, FlowClosed, FlowOpened, SendFrame};
use crate::routing::{FlowId, Source};
use crate::sip::Transport;
use actix::prelude::*;
use log::{debug, info};
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

    /// Closes the connection with a log line that says `why`.
    fn close(&mut self, ctx: &mut Context<Self>, why: &str) {
        info!("closing {}: {why}", self.flow());
        self.end(ctx);
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
