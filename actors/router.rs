//! The Router: one actor per shard around the proxy core (`proxy::core::ProxyCore`).
//!
//! Connections pick the shard by Call-ID, so every message of a call (request,
//! retransmissions, CANCEL, responses, ACK) meets the same transaction table without locks.
//! This file holds no SIP rule: it feeds the core its events with the current time and
//! carries the core's actions to the other actors (Dispatcher, ServerTable, Registrar),
//! feeding their answers back in.

use super::messages::*;
use crate::config::Config;
use crate::proxy::contact_token::TokenKey;
use crate::proxy::core::{Action, Event, ProxyCore, TransactionBudget};
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
}

pub struct Router {
    core: ProxyCore,
    peers: RouterPeers,
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
        }
    }

    fn feed(&mut self, event: Event, ctx: &mut Context<Self>) {
        for action in self.core.handle(event, Instant::now()) {
            self.carry(action, ctx);
        }
    }

    fn carry(&mut self, action: Action, ctx: &mut Context<Self>) {
        match action {
            Action::Deliver {
                destination,
                bytes,
                notify,
            } => {
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
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                    let event = match res {
                        Ok(decision) => Event::Decided(job, decision),
                        Err(e) => {
                            warn!("server table unavailable: {e}");
                            Event::LookupFailed(job)
                        }
                    };
                    act.feed(event, ctx)
                }));
            }
            Action::LookupClient { job, user, client } => {
                let fut = self.peers.lookup_client.send(LookupClient { user, client });
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                    let event = match res {
                        Ok(binding) => Event::ClientFound(job, binding),
                        Err(e) => {
                            warn!("registrar unavailable: {e}");
                            Event::LookupFailed(job)
                        }
                    };
                    act.feed(event, ctx)
                }));
            }
            Action::CheckRegistered { job, source } => {
                let fut = self.peers.is_registered.send(IsRegistered { source });
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                    let event = match res {
                        Ok(registered) => Event::SourceChecked(job, registered),
                        Err(e) => {
                            warn!("registrar unavailable: {e}");
                            Event::LookupFailed(job)
                        }
                    };
                    act.feed(event, ctx)
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
        self.feed(Event::Message(m.msg, m.source), ctx)
    }
}

impl Handler<DeliveryFailed> for Router {
    type Result = ();

    fn handle(&mut self, m: DeliveryFailed, ctx: &mut Context<Self>) {
        self.feed(Event::DeliveryFailed(m.tx, m.error), ctx)
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
