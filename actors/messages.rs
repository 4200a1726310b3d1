//! The typed messages the actors exchange. Reading this file tells how data flows:
//!
//! ```text
//!  connection ──Inbound──▶ Router ──ResolveNextHop/TargetFailed──▶ ServerTable
//!      ▲                    │  └───LookupClient/BindClient/UnbindClient──▶ Registrar
//!      │                    └──Deliver──▶ Dispatcher ──SendFrame──▶ connection ──▶ socket
//!      └──FlowOpened/FlowClosed──▶ Dispatcher, Registrar       DeliveryFailed ──▶ Router
//! ```
//!
//! Actors know each other only through these types and `Recipient`s handed out by
//! `actors::start`, never by importing each other's files.

use crate::proxy::timers::TxId;
pub use crate::routing::{ClientBinding, DeliveryError};
use crate::routing::{Decision, Destination, FlowId, RouteTarget, Source};
use crate::sip::{SipMessage, Transport};
use actix::prelude::*;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;

/// A parsed message from a connection, for the Router shard that owns its Call-ID.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound {
    pub msg: SipMessage,
    pub source: Source,
}

/// One whole SIP message (or keep-alive) to write on a connection.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct SendFrame(pub Bytes);

/// A connection is up and can be written to through `writer`.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct FlowOpened {
    pub flow: FlowId,
    pub transport: Transport,
    pub remote: SocketAddr,
    pub writer: Recipient<SendFrame>,
}

/// A connection is gone: forget it. Clients bound to it stay cached, so that a request for
/// them fails with 480 (and then unbinds them) rather than 404.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct FlowClosed {
    pub flow: FlowId,
    pub transport: Transport,
    pub remote: SocketAddr,
}

/// Send bytes to a destination. When it cannot be reached and `notify` is set, the Router
/// hears of it (to answer 503 or 480 upstream).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub destination: Destination,
    pub bytes: Bytes,
    pub notify: Option<FailureNotice>,
}

pub struct FailureNotice {
    pub router: Recipient<DeliveryFailed>,
    pub tx: TxId,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliveryFailed {
    pub tx: TxId,
    pub error: DeliveryError,
}

/// Router -> ServerTable: which way for this target?
#[derive(Message)]
#[rtype(result = "Decision")]
pub struct ResolveNextHop(pub RouteTarget);

/// Router -> ServerTable: a target of a name resolved by DNS failed before answering
/// (refused or unreachable, no answer, 503); it is tried last for -avoid-time.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TargetFailed {
    pub destination: Destination,
    pub reason: &'static str,
}

/// Router -> Registrar: the client named by `client` (the `;rbc=` token of the Contact
/// Roundabout registered for it), else the newest client registered as `user`, if any.
#[derive(Message)]
#[rtype(result = "Option<ClientBinding>")]
pub struct LookupClient {
    pub user: String,
    pub client: Option<String>,
}

/// Router -> Registrar: the server accepted a registration (2xx).
#[derive(Message)]
#[rtype(result = "()")]
pub struct BindClient {
    pub user: String,
    /// The client token: one binding per client.
    pub client: String,
    pub binding: ClientBinding,
    pub expires: Duration,
}

/// Router -> Registrar: unregistered (expires 0), or a request found the flow gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnbindClient {
    pub user: String,
    /// Only this client's binding; `None`: every binding of `user`.
    pub client: Option<String>,
    /// Only if the binding uses this connection: a client that registered again on a new
    /// connection keeps its new binding when a request for the old one fails.
    pub only_flow: Option<FlowId>,
}

/// Router -> Registrar: is `source` a client registered through Roundabout, over this very
/// connection or (UDP) from this address and port? (-registered-only)
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsRegistered {
    pub source: Source,
}

/// Registrar -> anyone (tests, logs): how many clients are cached.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountClients;

/// Anyone -> Router shard: its transactions and what it dropped or refused, for the stats
/// line (`actors/stats.rs`).
#[derive(Message, Clone, Copy)]
#[rtype(result = "crate::proxy::core::ShardCounts")]
pub struct CountTransactions;

/// Anyone -> Dispatcher: `(connections it can write to, destinations being connected)`, for
/// the stats line.
#[derive(Message, Clone, Copy)]
#[rtype(result = "(usize, usize)")]
pub struct CountFlows;

/// Opens a connection of a stream transport to an address (TLS name for SNI), starts its
/// connection actor and reports it opened. Made by `connection::connector`, used by the
/// Dispatcher, which so never needs to know the connection actors' types.
pub type Connector = std::rc::Rc<
    dyn Fn(
        Transport,
        SocketAddr,
        Option<String>,
    ) -> futures_util::future::LocalBoxFuture<'static, Result<FlowOpened, DeliveryError>>,
>;

/// The Router shards, picked by Call-ID so a call's messages always meet the same one.
#[derive(Clone)]
pub struct RouterPool {
    shards: std::sync::Arc<[Recipient<Inbound>]>,
}

impl RouterPool {
    pub fn new(shards: Vec<Recipient<Inbound>>) -> Self {
        assert!(!shards.is_empty(), "at least one router");
        RouterPool {
            shards: shards.into(),
        }
    }

    pub fn send(&self, inbound: Inbound) {
        let i = match inbound.msg.call_id() {
            Some(id) if self.shards.len() > 1 => shard_of(id, self.shards.len()),
            _ => 0,
        };
        self.shards[i].do_send(inbound);
    }
}

/// FNV-1a: cheap, stable, good enough to spread Call-IDs.
fn shard_of(call_id: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in call_id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    (h % n as u64) as usize
}

/// Where connection actors report their life: opened to the Dispatcher, closed to the
/// Dispatcher and the Registrar.
#[derive(Clone)]
pub struct ConnectionEvents {
    pub opened: Recipient<FlowOpened>,
    pub closed: Vec<Recipient<FlowClosed>>,
}

impl ConnectionEvents {
    /// Tells everyone who keeps state about a connection that it is gone.
    pub fn report_closed(&self, closed: FlowClosed) {
        log::debug!(
            "{} connection {} with {} closed",
            closed.transport,
            closed.flow,
            closed.remote
        );
        for r in &self.closed {
            r.do_send(closed);
        }
    }
}

/// SIGHUP with -config: the settings read again from the file (and the command line). The
/// ServerTable takes its trusted servers, -strict-host, -default-sip-server and
/// -default-network from it; ports and addresses in it are ignored (they cannot change while
/// running: `ops::reload` says so in the log).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Reload(pub std::sync::Arc<crate::config::Config>);

/// Shutting down: a Router stops taking new transactions (answers them 503) and reports how
/// many it still has in flight. Sent again to poll until that is 0 or time is up.
#[derive(Message, Clone, Copy)]
#[rtype(result = "usize")]
pub struct Drain;
