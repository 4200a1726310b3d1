//! The ServerTable actor: owns the trusted servers and answers "which way?" for a
//! [`RouteTarget`] with the pure [`routing::decide`]. Keeping the table in one actor gives a
//! single place to change it at runtime (a reload, what DNS says), without touching the
//! Routers.
//!
//! DNS (issue 15, RFC 3263, `crate::dns`): the trusted servers' names are resolved at start
//! and again in the background when their TTL runs out; every address they resolve to
//! counts as that server ([`TrustedAddresses`], shared with the Routers, the connection
//! guard and the Dispatcher). A host a request names (without -strict-host) is resolved
//! when asked and kept until its TTL. Targets that failed ([`TargetFailed`]) are tried last
//! for -avoid-time.

use super::messages::{Reload, ResolveNextHop, TargetFailed};
use crate::dns::{self, Query, Resolution, Target};
use crate::log_throttle::{LogThrottles, PEER_LOG_INTERVAL};
use crate::routing::{self, Decision, Destination, ServerTable, TrustedAddresses};
use actix::prelude::*;
use log::{debug, info, warn};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How often the table looks for names whose TTL ran out.
const REFRESH_TICK: Duration = Duration::from_millis(250);

/// At most this many names of hosts that are not trusted servers are kept (a flood of
/// requests for random names must not grow the table without bound).
const MAX_CACHED_NAMES: usize = 10_000;

pub struct ServerTableActor {
    table: ServerTable,
    resolver: dns::Resolver,
    /// Shared with the Routers, guard and Dispatcher; kept across reloads.
    trusted: TrustedAddresses,
    avoid_time: Duration,
    /// Trusted servers' names being looked up in the background.
    refreshing: HashSet<Query>,
    /// Lines requests can cause (a name that does not resolve): one a second.
    noise: LogThrottles<&'static str>,
}

impl ServerTableActor {
    pub fn new(
        table: ServerTable,
        resolver: dns::Resolver,
        trusted: TrustedAddresses,
        avoid_time: Duration,
    ) -> Self {
        ServerTableActor {
            table,
            resolver,
            trusted,
            avoid_time,
            refreshing: HashSet::new(),
            noise: LogThrottles::new(PEER_LOG_INTERVAL),
        }
    }

    /// A new table (a reload): what DNS said of names it still uses is kept, the rest asked
    /// anew; the shared set of trusted addresses follows.
    pub fn replace_table(&mut self, mut table: ServerTable, ctx: &mut Context<Self>) {
        table.resolved = std::mem::take(&mut self.table.resolved);
        table.avoided = std::mem::take(&mut self.table.avoided);
        self.table = table;
        self.update_trusted();
        self.refresh_due(ctx);
    }

    fn update_trusted(&mut self) {
        let set = self.table.trusted_addresses();
        let n = set.len();
        if self.trusted.replace(set) {
            debug!("trusted server addresses: {n}");
        }
    }

    /// Starts a background lookup of every trusted server's name that has none yet or
    /// whose TTL ran out; drops expired names of other hosts.
    fn refresh_due(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let queries = self.table.server_queries();
        for q in &queries {
            let due = self
                .table
                .resolved
                .get(q)
                .is_none_or(|r| r.valid_until <= now);
            if due && self.refreshing.insert(q.clone()) {
                let resolver = self.resolver.clone();
                let query = q.clone();
                ctx.spawn(
                    async move {
                        let r = resolver.resolve(&query).await;
                        (query, r)
                    }
                    .into_actor(self)
                    .map(|(q, r), act, _| {
                        act.refreshing.remove(&q);
                        act.store_server(q, r);
                    }),
                );
            }
        }
        let servers: HashSet<&Query> = queries.iter().collect();
        let over = self.table.resolved.len() > MAX_CACHED_NAMES;
        self.table
            .resolved
            .retain(|q, r| servers.contains(q) || (!over && r.valid_until > now));
        self.table.avoided.retain(|_, until| *until > now);
    }

    /// A trusted server's name resolved (at start, or a refresh). When it failed, the
    /// addresses it had are kept (a DNS outage must not cut the trunk) and it is asked again
    /// after [`dns::NEGATIVE_TTL`].
    fn store_server(&mut self, q: Query, mut r: Resolution) {
        let old = self.table.resolved.get(&q);
        if r.is_empty() {
            let error = r.error.clone().unwrap_or_default();
            match old.filter(|o| !o.is_empty()) {
                Some(o) => {
                    warn!(
                        "cannot resolve {q} again ({error}): keeping {} until it does",
                        list(o)
                    );
                    let mut kept = o.clone();
                    kept.valid_until = r.valid_until;
                    r = kept;
                }
                None => warn!(
                    "cannot resolve trusted server {q} ({error}): requests for it get 503 \
                     until it resolves (asked again every {} s)",
                    dns::NEGATIVE_TTL.as_secs()
                ),
            }
        } else {
            let ttl = r.valid_until.saturating_duration_since(Instant::now());
            let same = old.is_some_and(|o| o.entries == r.entries);
            if same {
                debug!(
                    "refreshed {q}: unchanged, {} ({}; ttl {} s)",
                    list(&r),
                    r.how,
                    ttl.as_secs()
                );
            } else {
                info!(
                    "resolved {q}: {} ({}; ttl {} s)",
                    list(&r),
                    r.how,
                    ttl.as_secs()
                );
            }
        }
        self.table.resolved.insert(q, r);
        self.update_trusted();
    }

    /// A host a request named, resolved on demand.
    fn store_host(&mut self, q: Query, r: Resolution) {
        if r.is_empty() {
            if let Some(s) = self.noise.admit("cannot resolve", Instant::now()) {
                warn!(
                    "cannot resolve {q} ({}): the request gets 503{s}",
                    r.error.as_deref().unwrap_or("no address")
                );
            }
        } else {
            debug!("resolved {q}: {} ({})", list(&r), r.how);
        }
        self.table.resolved.insert(q, r);
    }
}

/// `udp:192.0.2.1:5060, tcp:192.0.2.2:5060` in record order.
fn list(r: &Resolution) -> String {
    r.targets()
        .map(Target::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Actor for ServerTableActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.refresh_due(ctx);
        ctx.run_interval(REFRESH_TICK, |act, ctx| act.refresh_due(ctx));
    }
}

impl Handler<ResolveNextHop> for ServerTableActor {
    type Result = ResponseActFuture<Self, Decision>;

    fn handle(&mut self, m: ResolveNextHop, _: &mut Context<Self>) -> Self::Result {
        let target = m.0;
        let now = Instant::now();
        let query = routing::dns_query(&self.table, &target).filter(|q| {
            match self.table.resolved.get(q) {
                None => true,
                // A trusted server's name is refreshed in the background: its last answer
                // serves meanwhile. Other names are asked again once their TTL is over.
                Some(r) => r.valid_until <= now && !self.table.server_queries().contains(q),
            }
        });
        let Some(q) = query else {
            return Box::pin(fut::ready(routing::decide(&self.table, &target)));
        };
        let resolver = self.resolver.clone();
        let server = self.table.server_queries().contains(&q);
        Box::pin(
            async move {
                let r = resolver.resolve(&q).await;
                (q, r)
            }
            .into_actor(self)
            .map(move |(q, r), act, _| {
                if server {
                    act.store_server(q, r);
                } else {
                    act.store_host(q, r);
                }
                routing::decide(&act.table, &target)
            }),
        )
    }
}

impl Handler<TargetFailed> for ServerTableActor {
    type Result = ();

    fn handle(&mut self, m: TargetFailed, _: &mut Context<Self>) {
        let Destination::Address {
            transport, addr, ..
        } = m.destination
        else {
            return;
        };
        let target = Target { transport, addr };
        let until = Instant::now() + self.avoid_time;
        if self.table.avoided.insert(target, until).is_none() {
            info!(
                "{target} failed ({}): tried last for {} s",
                m.reason,
                self.avoid_time.as_secs()
            );
        }
    }
}

impl Handler<Reload> for ServerTableActor {
    type Result = ();

    /// Routes the next request by the reloaded table. Roundabout's own identity (its
    /// addresses and ports) is kept: it cannot change while the listeners run.
    fn handle(&mut self, m: Reload, ctx: &mut Context<Self>) {
        let local = self.table.local.clone();
        let table = ServerTable {
            local,
            ..ServerTable::from_config(&m.0)
        };
        self.replace_table(table, ctx);
    }
}
