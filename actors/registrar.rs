//! The Registrar actor: the client cache. User -> where and how to reach the client,
//! including the very connection it registered on.
//!
//! Bindings are made only when the server answers a REGISTER with 2xx (so an unauthenticated
//! REGISTER cannot hijack a user), and removed on expiry, on `Expires: 0`, and when a request
//! for the client finds its connection gone. A binding outlives its connection on purpose,
//! for [`FLOW_CLOSED_GRACE`] at most: the server still has the client registered, and the
//! first call it sends meanwhile must get 480 (Temporarily Unavailable), not 404 (the Router
//! then removes the binding); after the grace the binding goes anyway, so clients that
//! vanish with their connections (thousands at once when a NAT or a network drops) leave
//! nothing behind.

use super::messages::*;
use crate::routing::FlowId;
use actix::prelude::*;
use log::{debug, info};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How often expired bindings are swept.
const SWEEP: Duration = Duration::from_secs(5);

/// A binding whose connection closed lasts at most this much longer.
pub const FLOW_CLOSED_GRACE: Duration = Duration::from_secs(30);

struct Entry {
    binding: ClientBinding,
    expires_at: Instant,
}

#[derive(Default)]
pub struct Registrar {
    clients: HashMap<String, Entry>,
    /// Users bound to each connection, to drop them when it closes.
    by_flow: HashMap<FlowId, HashSet<String>>,
}

impl Registrar {
    fn unbind(&mut self, user: &str) -> Option<Entry> {
        let entry = self.clients.remove(user)?;
        if let Some(users) = self.by_flow.get_mut(&entry.binding.source.flow) {
            users.remove(user);
            if users.is_empty() {
                self.by_flow.remove(&entry.binding.source.flow);
            }
        }
        Some(entry)
    }
}

impl Actor for Registrar {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SWEEP, |act, _| {
            let now = Instant::now();
            let expired: Vec<String> = act
                .clients
                .iter()
                .filter(|(_, e)| e.expires_at <= now)
                .map(|(u, _)| u.clone())
                .collect();
            for user in expired {
                act.unbind(&user);
                debug!("client '{user}' expired");
            }
        });
    }
}

impl Handler<BindClient> for Registrar {
    type Result = ();

    fn handle(&mut self, m: BindClient, _: &mut Context<Self>) {
        let source = m.binding.source;
        if let Some(old) = self.unbind(&m.user) {
            if old.binding.source != source {
                info!(
                    "client '{}' moved from {} {} to {} {}",
                    m.user,
                    old.binding.source.transport,
                    old.binding.source.remote,
                    source.transport,
                    source.remote
                );
            }
        } else {
            debug!(
                "client '{}' registered from {} {}",
                m.user, source.transport, source.remote
            );
        }
        if source.flow != FlowId::UDP {
            self.by_flow
                .entry(source.flow)
                .or_default()
                .insert(m.user.clone());
        }
        self.clients.insert(
            m.user,
            Entry {
                binding: m.binding,
                expires_at: Instant::now() + m.expires,
            },
        );
    }
}

impl Handler<UnbindClient> for Registrar {
    type Result = ();

    fn handle(&mut self, m: UnbindClient, _: &mut Context<Self>) {
        if let Some(flow) = m.only_flow {
            let on_that_flow = self
                .clients
                .get(&m.user)
                .is_some_and(|e| e.binding.source.flow == flow);
            if !on_that_flow {
                return; // registered again elsewhere since: keep it
            }
        }
        if self.unbind(&m.user).is_some() {
            debug!("client '{}' unregistered", m.user);
        }
    }
}

impl Handler<LookupClient> for Registrar {
    type Result = Option<ClientBinding>;

    fn handle(&mut self, m: LookupClient, _: &mut Context<Self>) -> Self::Result {
        self.clients
            .get(&m.user)
            .filter(|e| e.expires_at > Instant::now())
            .map(|e| e.binding.clone())
    }
}

impl Handler<FlowClosed> for Registrar {
    type Result = ();

    fn handle(&mut self, m: FlowClosed, _: &mut Context<Self>) {
        if let Some(users) = self.by_flow.remove(&m.flow) {
            let grace_end = Instant::now() + FLOW_CLOSED_GRACE;
            for user in users {
                if let Some(entry) = self.clients.get_mut(&user) {
                    entry.expires_at = entry.expires_at.min(grace_end);
                }
                debug!(
                    "client '{user}': its {} connection closed; requests for it get 480 for {FLOW_CLOSED_GRACE:?} unless it registers again",
                    m.transport
                );
            }
        }
    }
}

impl Handler<CountClients> for Registrar {
    type Result = usize;

    fn handle(&mut self, _: CountClients, _: &mut Context<Self>) -> usize {
        self.clients.len()
    }
}
