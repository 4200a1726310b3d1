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
    /// An accepted connection that has not sent a SIP message yet is closed at this time.
    first_message_due: Option<Instant>,
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
            first_message_due: slot
                .is_accepted()
                .then(|| Instant::now() + FIRST_MESSAGE_TIMEOUT),
            last_heard: Instant::now(),
            slot,
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
        self.first_message_due = None;
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

    /// When the actor has something of its own to do next (the WebSocket ping): the
    /// connection's timer then calls [`FlowActor::duty`]. Nothing by default.
    fn next_duty(&self) -> Option<Instant> {
        None
    }

    /// The actor's own periodic work; it must move [`FlowActor::next_duty`] on.
    fn duty(&mut self, _ctx: &mut Context<Self>) {}

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

/// Logs the opening and starts the connection's timer; called from the actor's `started`.
///
/// One timer serves the first-message timeout, the idle timeout and the actor's own duty: it
/// sleeps until the earliest of them, does what is due and sleeps again. A timer is a future
/// spawned on the actor's context (a boxed future, and past three of them a larger list in
/// the context, for every one of tens of thousands of idle connections), and none of these
/// deadlines can come sooner than when it was armed: the first-message one is fixed, the
/// idle one only moves later (a shorter `-idle-timeout` from a reload holds from the next
/// look, as it did with a timer of its own), and the duty is periodic.
pub fn watch<A: FlowActor>(act: &mut A, ctx: &mut Context<A>) {
    debug!("{} open", act.flow());
    tick(act, ctx);
}

fn tick<A: FlowActor>(act: &mut A, ctx: &mut Context<A>) {
    loop {
        let flow = act.flow();
        let deadlines = Deadlines {
            first_message: flow.first_message_due,
            idle: flow
                .guard()
                .limits()
                .idle_timeout
                .map(|idle| (flow.last_heard + idle, idle)),
            duty: act.next_duty(),
        };
        match deadlines.due(Instant::now()) {
            Due::FirstMessageLate => {
                return act.close(
                    ctx,
                    &format!("no SIP message within {FIRST_MESSAGE_TIMEOUT:?}"),
                )
            }
            Due::Idle(idle) => {
                return act.close(
                    ctx,
                    &format!("nothing received for {idle:?} (-idle-timeout)"),
                )
            }
            Due::Duty => act.duty(ctx),
            Due::Sleep(after) => {
                ctx.run_later(after, tick::<A>);
                return;
            }
            Due::Nothing => return,
        }
    }
}

/// The deadlines of one connection.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    /// When an accepted connection that has sent no SIP message yet is closed.
    first_message: Option<Instant>,
    /// When the idle timeout closes it, and the timeout (`-idle-timeout` after it last heard
    /// from the peer).
    idle: Option<(Instant, Duration)>,
    /// The actor's next duty.
    duty: Option<Instant>,
}

/// What the timer does now.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    FirstMessageLate,
    /// Idle for this long (`-idle-timeout`).
    Idle(Duration),
    Duty,
    /// Nothing is due yet: look again after this long.
    Sleep(Duration),
    /// No deadline at all.
    Nothing,
}

impl Deadlines {
    fn due(&self, now: Instant) -> Due {
        if self.first_message.is_some_and(|t| t <= now) {
            return Due::FirstMessageLate;
        }
        if let Some((t, idle)) = self.idle {
            if t <= now {
                return Due::Idle(idle);
            }
        }
        if self.duty.is_some_and(|t| t <= now) {
            return Due::Duty;
        }
        [self.first_message, self.idle.map(|(t, _)| t), self.duty]
            .into_iter()
            .flatten()
            .min()
            .map_or(Due::Nothing, |t| Due::Sleep(t - now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_deadline_wakes_the_timer_and_closing_ones_come_first() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let idle = s(10);
        let none = Deadlines {
            first_message: None,
            idle: None,
            duty: None,
        };
        assert_eq!(none.due(t0), Due::Nothing);
        let d = Deadlines {
            first_message: Some(t0 + s(30)),
            idle: Some((t0 + idle, idle)),
            duty: Some(t0 + s(25)),
        };
        assert_eq!(d.due(t0 + s(4)), Due::Sleep(s(6)));
        assert_eq!(d.due(t0 + idle), Due::Idle(idle));
        // The peer was heard: the idle deadline moved past the duty.
        let heard = Deadlines {
            idle: Some((t0 + s(22) + idle, idle)),
            ..d
        };
        assert_eq!(heard.due(t0 + s(10)), Due::Sleep(s(15)));
        assert_eq!(heard.due(t0 + s(25)), Due::Duty);
        let duty_done = Deadlines {
            duty: Some(t0 + s(50)),
            ..heard
        };
        assert_eq!(duty_done.due(t0 + s(25)), Due::Sleep(s(5)));
        assert_eq!(duty_done.due(t0 + s(30)), Due::FirstMessageLate);
        // A message came: only the idle timeout and the duty are left.
        let answered = Deadlines {
            first_message: None,
            ..duty_done
        };
        assert_eq!(answered.due(t0 + s(30)), Due::Sleep(s(2)));
        let no_idle = Deadlines {
            idle: None,
            ..answered
        };
        assert_eq!(no_idle.due(t0 + s(30)), Due::Sleep(s(20)));
    }
}
