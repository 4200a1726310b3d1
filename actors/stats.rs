//! The counts that show whether anything leaks: transactions per Router shard (and how many
//! await a final answer), connections (alive, accepted, known to the Dispatcher, being
//! opened), cached clients, and what the guard refused. `roundabout` logs them at info level
//! on SIGUSR1 (`kill -USR1 <pid>`) as one line starting with `stats:`.
//!
//! Gathered through the message types of `messages.rs` like everything else; the guard is
//! read directly (it lives on this thread).

use super::connection::guard::{Guard, GuardStats};
use super::messages::{CountClients, CountFlows, CountTransactions};
use actix::prelude::*;
use std::fmt;

/// Where the counts come from; made by `actors::start`.
pub struct StatsSources {
    pub routers: Vec<Recipient<CountTransactions>>,
    pub dispatcher: Recipient<CountFlows>,
    pub registrar: Recipient<CountClients>,
    pub guard: Guard,
}

/// One snapshot of the counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per shard: transactions, of which without a final answer, drops and refusals.
    pub transactions: Vec<crate::proxy::core::ShardCounts>,
    /// Connections the Dispatcher can write to, and destinations being connected.
    pub flows: usize,
    pub connecting: usize,
    pub clients: usize,
    pub guard: GuardStats,
    /// Connections open by transport, in `Transport::ALL` order (UDP always 0): the
    /// counters of `roundabout_connections_open`.
    pub by_transport: [i64; 5],
}

impl StatsSources {
    /// Asks every actor (an actor that does not answer counts 0).
    pub async fn gather(&self) -> Stats {
        let mut transactions = Vec::with_capacity(self.routers.len());
        for r in &self.routers {
            transactions.push(r.send(CountTransactions).await.unwrap_or_default());
        }
        let (flows, connecting) = self.dispatcher.send(CountFlows).await.unwrap_or_default();
        Stats {
            transactions,
            flows,
            connecting,
            clients: self.registrar.send(CountClients).await.unwrap_or_default(),
            guard: self.guard.stats(),
            by_transport: crate::ops::metrics::metrics().connections_open(),
        }
    }
}

impl fmt::Display for Stats {
    /// `transactions 3 [2, 1] (in flight 1), connections 4 (accepted 3, dispatcher 4,
    /// connecting 0), clients 2, refused connections 0, flooding addresses 0, flood drops 0,
    /// responses dropped 0, requests refused 0, by transport tcp 1 tls 0 ws 0 wss 3`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: usize = self.transactions.iter().map(|t| t.transactions).sum();
        let in_flight: usize = self.transactions.iter().map(|t| t.in_flight).sum();
        let dropped: u64 = self.transactions.iter().map(|t| t.responses_dropped).sum();
        let refused: u64 = self.transactions.iter().map(|t| t.requests_refused()).sum();
        let per_shard: Vec<String> = self
            .transactions
            .iter()
            .map(|t| t.transactions.to_string())
            .collect();
        let g = &self.guard;
        write!(
            f,
            "transactions {total} [{}] (in flight {in_flight}), connections {} (accepted {}, \
             dispatcher {}, connecting {}), clients {}, refused connections {}, flooding \
             addresses {}, flood drops {}, responses dropped {dropped}, requests refused \
             {refused}, by transport tcp {} tls {} ws {} wss {}",
            per_shard.join(", "),
            g.connections,
            g.accepted,
            self.flows,
            self.connecting,
            self.clients,
            g.refused,
            g.flooding,
            g.flood_dropped,
            self.by_transport[1],
            self.by_transport[2],
            self.by_transport[3],
            self.by_transport[4]
        )
    }
}
