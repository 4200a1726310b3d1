//! The Router: one actor per shard around the proxy core (`proxy::core::ProxyCore`).
//!
//! Connections pick the shard by Call-ID, so every message of a call (request,
//! retransmissions, CANCEL, responses, ACK) meets the same transaction table without locks.
//! This file holds no SIP rule: it feeds the core its events with the current time and
//! carries the core's actions to the other actors (Dispatcher, ServerTable, Registrar),
//! feeding their answers back in.

use super::messages::*;
use crate::config::Config;
use crate::ops::metrics::metrics;
use crate::proxy::contact_token::TokenKey;
use crate::proxy::core::{Action, Event, ProxyCore, TransactionBudget};
use crate::routing::{Decision, Rejection};
use actix::prelude::*;
use log::{trace, warn};
use std::time::{Duration, Instant};

/// The other actors a Router talks to.
#[derive(Clone)]
pub struct RouterPeers {
    pub server_table: Recipient<ResolveNextHop>,
    pub lookup_client: Recipient<LookupClient>,
    pub is_registered: Recipient<IsRegistered>,
    pub bind_client: Recipient<BindClient>,
    pub unbind_client: Recipient<UnbindClient>,
    pub dispatcher: Recipient<Deliver>,
    /// The ServerTable again: targets that failed (failover, issue 15).
    pub target_failed: Recipient<TargetFailed>,
}

pub struct Router {
    core: ProxyCore,
    peers: RouterPeers,
    /// What the core is handling now, for the metrics (`ops::metrics`): when the message
    /// that caused it arrived. `None` for timers.
    cause: Option<Cause>,
    /// The core's actions for the event at hand; kept to reuse its allocation.
    actions: Vec<Action>,
}

/// See [`Router::cause`].
#[derive(Clone, Copy)]
struct Cause {
    arrived: Instant,
}

/// How often the Router serves its timers (T1 is 500 ms; this is precise enough).
const TICK: Duration = Duration::from_millis(20);

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |act, ctx| act.feed(Event::Tick, ctx));
    }
}

impl Router {
    pub fn new(
        config: &Config,
        key: TokenKey,
        (shard, budget): (usize, TransactionBudget),
        peers: RouterPeers,
    ) -> Router {
        Router {
            core: ProxyCore::new(config, key, shard, budget),
            peers,
            cause: None,
            actions: Vec::new(),
        }
    }

    fn feed(&mut self, event: Event, ctx: &mut Context<Self>) {
        // One buffer for every event (no list of actions allocated per message).
        let mut actions = std::mem::take(&mut self.actions);
        self.core.handle_into(event, Instant::now(), &mut actions);
        for action in actions.drain(..) {
            self.carry(action, ctx);
        }
        self.actions = actions;
    }

    fn carry(&mut self, action: Action, ctx: &mut Context<Self>) {
        match action {
            Action::Deliver {
                destination,
                bytes,
                notify,
            } => {
                self.count_delivery(&bytes);
                let notify = notify.map(|tx| FailureNotice {
                    router: ctx.address().recipient(),
                    tx,
                });
                self.peers.dispatcher.do_send(Deliver {
                    destination,
                    bytes,
                    notify,
                });
            }
            Action::Resolve { job, target } => {
                let fut = self.peers.server_table.send(ResolveNextHop(target));
                let cause = self.cause;
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                    act.cause = cause;
                    let event = match res {
                        Ok(decision) => {
                            if matches!(decision, Decision::Reject(Rejection::UnknownHost)) {
                                metrics().strict_host_refused();
                            }
                            Event::Decided(job, decision)
                        }
                        Err(e) => {
                            warn!("server table unavailable: {e}");
                            Event::LookupFailed(job)
                        }
                    };
                    act.feed(event, ctx);
                    act.cause = None;
                }));
            }
            Action::LookupClient { job, user, client } => {
                let fut = self.peers.lookup_client.send(LookupClient { user, client });
                let cause = self.cause;
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                    act.cause = cause;
                    let event = match res {
                        Ok(binding) => Event::ClientFound(job, binding),
                        Err(e) => {
                            warn!("registrar unavailable: {e}");
                            Event::LookupFailed(job)
                        }
                    };
                    act.feed(event, ctx);
                    act.cause = None;
                }));
            }
            Action::CheckRegistered { job, source } => {
                let fut = self.peers.is_registered.send(IsRegistered { source });
                let cause = self.cause;
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                    act.cause = cause;
                    let event = match res {
                        Ok(registered) => Event::SourceChecked(job, registered),
                        Err(e) => {
                            warn!("registrar unavailable: {e}");
                            Event::LookupFailed(job)
                        }
                    };
                    act.feed(event, ctx);
                    act.cause = None;
                }));
            }
            Action::Bind {
                user,
                client,
                binding,
                expires,
            } => self.peers.bind_client.do_send(BindClient {
                user,
                client,
                binding,
                expires,
            }),
            Action::Unbind {
                user,
                client,
                only_flow,
            } => self.peers.unbind_client.do_send(UnbindClient {
                user,
                client,
                only_flow,
            }),
            Action::TargetFailed {
                destination,
                reason,
            } => self.peers.target_failed.do_send(TargetFailed {
                destination,
                reason,
            }),
        }
    }
}

impl Router {
    /// Counts one delivery for the metrics: a response by status class, and the time since
    /// the message that caused it arrived. (The refusals the core answers itself are in its
    /// counts, `ShardCounts`.)
    fn count_delivery(&self, bytes: &[u8]) {
        let m = metrics();
        if let Some(cause) = self.cause {
            m.observe_latency(cause.arrived.elapsed());
        }
        let Some(status_line) = bytes.strip_prefix(b"SIP/2.0 ") else {
            return;
        };
        let code = status_line
            .get(..3)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok());
        if let Some(code) = code {
            m.response_sent(code);
        }
    }
}

impl Handler<Inbound> for Router {
    type Result = ();

    fn handle(&mut self, m: Inbound, ctx: &mut Context<Self>) {
        if log::log_enabled!(log::Level::Trace) {
            trace!(
                "from {} {}:\n{}",
                m.source.transport,
                m.source.remote,
                String::from_utf8_lossy(m.msg.raw())
            );
        }
        if m.msg.is_request() {
            metrics().request_received(m.msg.method(), m.source.transport);
        }
        self.cause = Some(Cause {
            arrived: Instant::now(),
        });
        self.feed(Event::Message(m.msg, m.source), ctx);
        self.cause = None;
    }
}

impl Handler<DeliveryFailed> for Router {
    type Result = ();

    fn handle(&mut self, m: DeliveryFailed, ctx: &mut Context<Self>) {
        self.feed(Event::DeliveryFailed(m.tx, m.error), ctx)
    }
}

impl Handler<Reload> for Router {
    type Result = ();

    fn handle(&mut self, m: Reload, _: &mut Context<Self>) {
        self.core.reconfigure(&m.0)
    }
}

impl Handler<Drain> for Router {
    type Result = usize;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> usize {
        self.core.drain()
    }
}

impl Handler<CountTransactions> for Router {
    type Result = MessageResult<CountTransactions>;

    fn handle(
        &mut self,
        _: CountTransactions,
        _: &mut Context<Self>,
    ) -> MessageResult<CountTransactions> {
        MessageResult(self.core.counts())
    }
}
