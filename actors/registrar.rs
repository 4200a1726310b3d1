//! The Registrar actor: the client cache. One binding per client — named by the client token
//! (`;rbc=`) Roundabout wrote into the Contact it registered for it — saying where and how
//! to reach it, including the very connection it registered on.
//!
//! Bindings are made only when the server answers a REGISTER with 2xx (so an unauthenticated
//! REGISTER cannot hijack a user), and removed on expiry, on `Expires: 0`, and when a request
//! for the client finds its connection gone (only the binding on that connection: a newer
//! registration on another connection stays). A request whose Request-URI carries the
//! client token reaches exactly that client; one without (the original program's lookup by
//! user) gets the newest binding of that user, and a log line says when there were several.
//!
//! A binding outlives its connection on purpose, for [`FLOW_CLOSED_GRACE`] at most: the
//! server still has the client registered, and the first call it sends meanwhile must get
//! 480 (Temporarily Unavailable), not 404; after the grace the binding goes anyway, so
//! clients that vanish with their connections leave nothing behind.

use super::messages::*;
use crate::routing::FlowId;
use actix::prelude::*;
use log::{debug, info};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often expired bindings are swept.
const SWEEP: Duration = Duration::from_secs(5);

/// A binding whose connection closed lasts at most this much longer.
pub const FLOW_CLOSED_GRACE: Duration = Duration::from_secs(30);

struct Entry {
    user: String,
    binding: ClientBinding,
    expires_at: Instant,
    /// When it was (re)bound: the newest binding of a user wins a lookup by user.
    bound_at: Instant,
}

#[derive(Default)]
pub struct Registrar {
    /// By client token.
    clients: HashMap<String, Entry>,
    /// Client tokens of each user (the Contact's user part).
    by_user: HashMap<String, HashSet<String>>,
    /// Client tokens bound to each connection, to age them when it closes and to answer
    /// [`IsRegistered`].
    by_flow: HashMap<FlowId, HashSet<String>>,
    /// Client tokens bound to each UDP address and port, for [`IsRegistered`].
    by_udp: HashMap<SocketAddr, HashSet<String>>,
}

fn remove_from<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, HashSet<String>>,
    k: &K,
    client: &str,
) {
    if let Some(set) = map.get_mut(k) {
        set.remove(client);
        if set.is_empty() {
            map.remove(k);
        }
    }
}

impl Registrar {
    fn unbind(&mut self, client: &str) -> Option<Entry> {
        let entry = self.clients.remove(client)?;
        remove_from(&mut self.by_user, &entry.user, client);
        let source = entry.binding.source;
        if source.transport.is_stream() {
            remove_from(&mut self.by_flow, &source.flow, client);
        } else {
            remove_from(&mut self.by_udp, &source.remote, client);
        }
        Some(entry)
    }

    /// The live bindings of a user, newest first.
    fn of_user(&self, user: &str, now: Instant) -> Vec<(&String, &Entry)> {
        let mut v: Vec<(&String, &Entry)> = self
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|c| self.clients.get_key_value(c))
            .filter(|(_, e)| e.expires_at > now)
            .collect();
        v.sort_by_key(|(_, e)| std::cmp::Reverse(e.bound_at));
        v
    }

    fn is_live(&self, client: &String, now: Instant) -> bool {
        self.clients.get(client).is_some_and(|e| e.expires_at > now)
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
                .map(|(c, _)| c.clone())
                .collect();
            for client in expired {
                if let Some(e) = act.unbind(&client) {
                    debug!("client '{}' ({client}) expired", e.user);
                }
            }
        });
    }
}

impl Handler<BindClient> for Registrar {
    type Result = ();

    fn handle(&mut self, m: BindClient, _: &mut Context<Self>) {
        let source = m.binding.source;
        if let Some(old) = self.unbind(&m.client) {
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
                "client '{}' ({}) registered from {} {}",
                m.user, m.client, source.transport, source.remote
            );
        }
        if source.transport.is_stream() {
            self.by_flow
                .entry(source.flow)
                .or_default()
                .insert(m.client.clone());
        } else {
            self.by_udp
                .entry(source.remote)
                .or_default()
                .insert(m.client.clone());
        }
        self.by_user
            .entry(m.user.clone())
            .or_default()
            .insert(m.client.clone());
        let now = Instant::now();
        self.clients.insert(
            m.client,
            Entry {
                user: m.user,
                binding: m.binding,
                expires_at: now + m.expires,
                bound_at: now,
            },
        );
    }
}

impl Handler<UnbindClient> for Registrar {
    type Result = ();

    fn handle(&mut self, m: UnbindClient, _: &mut Context<Self>) {
        let clients: Vec<String> = match &m.client {
            Some(c) => self
                .clients
                .get(c)
                .filter(|e| e.user == m.user)
                .map(|_| c.clone())
                .into_iter()
                .collect(),
            None => self
                .by_user
                .get(&m.user)
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
        };
        for client in clients {
            let on_that_flow = m.only_flow.is_none_or(|flow| {
                self.clients
                    .get(&client)
                    .is_some_and(|e| e.binding.source.flow == flow)
            });
            // A client that registered again on a new connection keeps its new binding.
            if on_that_flow && self.unbind(&client).is_some() {
                debug!("client '{}' ({client}) unregistered", m.user);
            }
        }
    }
}

impl Handler<LookupClient> for Registrar {
    type Result = Option<ClientBinding>;

    fn handle(&mut self, m: LookupClient, _: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        if let Some(client) = &m.client {
            if let Some(e) = self.clients.get(client).filter(|e| e.expires_at > now) {
                return Some(e.binding.clone());
            }
        }
        let bindings = self.of_user(&m.user, now);
        if bindings.len() > 1 {
            info!(
                "user '{}' has {} clients registered; the newest ({} {}) gets the request",
                m.user,
                bindings.len(),
                bindings[0].1.binding.source.transport,
                bindings[0].1.binding.source.remote
            );
        }
        bindings.first().map(|(_, e)| e.binding.clone())
    }
}

impl Handler<IsRegistered> for Registrar {
    type Result = bool;

    fn handle(&mut self, m: IsRegistered, _: &mut Context<Self>) -> bool {
        let now = Instant::now();
        let clients = if m.source.transport.is_stream() {
            self.by_flow.get(&m.source.flow)
        } else {
            self.by_udp.get(&m.source.remote)
        };
        clients.is_some_and(|set| set.iter().any(|c| self.is_live(c, now)))
    }
}

impl Handler<FlowClosed> for Registrar {
    type Result = ();

    fn handle(&mut self, m: FlowClosed, _: &mut Context<Self>) {
        if let Some(clients) = self.by_flow.get(&m.flow) {
            let grace_end = Instant::now() + FLOW_CLOSED_GRACE;
            for client in clients {
                if let Some(entry) = self.clients.get_mut(client) {
                    entry.expires_at = entry.expires_at.min(grace_end);
                    debug!(
                        "client '{}': its {} connection closed; requests for it get 480 for {FLOW_CLOSED_GRACE:?} unless it registers again",
                        entry.user, m.transport
                    );
                }
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
