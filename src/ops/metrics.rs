//! The counters behind `GET /metrics` (Prometheus text format, encoded by prometheus-client).
//!
//! Two kinds of numbers, one source each:
//!
//! - **Counted where messages pass**, in [`Metrics`] (one process-wide set of atomics, see
//!   [`metrics`]): requests received by method and transport (the Router, as each request
//!   arrives), responses sent by status class (the Router, as it hands them to the
//!   Dispatcher), requests refused by `-strict-host` (the Router, on the ServerTable's
//!   verdict), connections open by transport (one [`OpenConnection`] per connection actor),
//!   outbound connection failures by trusted server, unparseable messages dropped, and the
//!   time a message spends inside Roundabout. The hot path is one relaxed atomic add per
//!   message (the histogram: one short lock).
//! - **Held by the actors**: transactions (in flight), registered clients, flood drops and
//!   refused connections, responses dropped, and the requests the proxy core refused by
//!   rule (`-strict-client`, `-registered-only`, `-max-transactions`, counted where it
//!   refuses: `proxy::core::ShardCounts`). These are asked for on each scrape through
//!   `actors::stats::StatsSources::gather`, the very call behind the SIGUSR1 `stats:` line,
//!   so the log line and the metrics never disagree.
//!
//! [`Metrics::render`] builds a registry for one scrape from both and encodes it.

use crate::actors::stats::Stats;
use crate::sip::Transport;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::Duration;

/// Methods counted by name; any other is counted as `other` (a peer chooses the method, so
/// the label set stays bounded).
pub const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "PRACK",
    "UPDATE",
    "INFO",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    "other",
];

/// Why a request was refused by policy (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// -strict-host: the Request-URI host is not a trusted server (403).
    StrictHost,
    /// -strict-client: the sender is not in a -trusted-client-ip network (403).
    StrictClient,
    /// -registered-only: the sender is not a registered client (403).
    RegisteredOnly,
    /// -max-transactions: no transaction left (503).
    MaxTransactions,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::StrictHost,
        Refusal::StrictClient,
        Refusal::RegisteredOnly,
        Refusal::MaxTransactions,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::StrictHost => "strict_host",
            Refusal::StrictClient => "strict_client",
            Refusal::RegisteredOnly => "registered_only",
            Refusal::MaxTransactions => "max_transactions",
        }
    }

    /// The requests refused for this reason since start: the Router's count of -strict-host,
    /// the Router shards' counts (gathered in `stats`) of the others.
    fn count(self, m: &Metrics, stats: &Stats) -> u64 {
        let shards = |f: fn(&crate::proxy::core::ShardCounts) -> u64| -> u64 {
            stats.transactions.iter().map(f).sum()
        };
        match self {
            Refusal::StrictHost => m.refused_strict_host.load(Relaxed),
            Refusal::StrictClient => shards(|c| c.refused_strict_client),
            Refusal::RegisteredOnly => shards(|c| c.refused_registered_only),
            Refusal::MaxTransactions => shards(|c| c.refused_max_transactions),
        }
    }
}

/// Histogram buckets of the time inside Roundabout, in seconds: 50 µs to 1 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The process-wide counters; see the module documentation.
#[derive(Debug)]
pub struct Metrics {
    requests: [[AtomicU64; 5]; METHODS.len()],
    responses: [AtomicU64; 6],
    /// -strict-host refusals; the other reasons are the core's ([`Refusal::count`]).
    refused_strict_host: AtomicU64,
    connections: [AtomicI64; 5],
    unparseable: AtomicU64,
    /// (server label, stage) -> failures; a cold path.
    outbound_failures: Mutex<HashMap<(String, &'static str), u64>>,
    /// Trusted servers named by IP: their address and label (`ip:port/protocol`).
    trusted: RwLock<Vec<(SocketAddr, String)>>,
    /// Every address trusted servers have now, those their DNS names resolve to included
    /// (kept up to date by the ServerTable): a failure there is labelled by the TLS name.
    trusted_addresses: RwLock<Option<crate::routing::TrustedAddresses>>,
    latency: Histogram,
    draining: AtomicBool,
}

/// The one set of counters of this process.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            responses: Default::default(),
            refused_strict_host: AtomicU64::new(0),
            connections: Default::default(),
            unparseable: AtomicU64::new(0),
            outbound_failures: Mutex::default(),
            trusted: RwLock::default(),
            trusted_addresses: RwLock::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
            draining: AtomicBool::new(false),
        }
    }
}

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
        Transport::Ws => 3,
        Transport::Wss => 4,
    }
}

/// The method's row in [`METHODS`] (methods are case-sensitive, RFC 3261 7.1).
fn method_index(method: &str) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHODS.len() - 1)
}

impl Metrics {
    /// A request arrived at a Router shard.
    pub fn request_received(&self, method: &str, transport: Transport) {
        self.requests[method_index(method)][transport_index(transport)].fetch_add(1, Relaxed);
    }

    /// The Router sent a response (forwarded or its own) with this status code.
    pub fn response_sent(&self, code: u16) {
        if (100..700).contains(&code) {
            self.responses[usize::from(code / 100 - 1)].fetch_add(1, Relaxed);
        }
    }

    /// The ServerTable refused a request's host (-strict-host).
    pub fn strict_host_refused(&self) {
        self.refused_strict_host.fetch_add(1, Relaxed);
    }

    /// A message that could not be parsed nor answered was dropped.
    pub fn unparseable_dropped(&self) {
        self.unparseable.fetch_add(1, Relaxed);
    }

    /// How long a message stayed inside Roundabout before what it caused went out.
    pub fn observe_latency(&self, d: Duration) {
        self.latency.observe(d.as_secs_f64());
    }

    /// A connection of `transport` is open until the returned value is dropped.
    pub fn connection_opened(&'static self, transport: Transport) -> OpenConnection {
        let i = transport_index(transport);
        self.connections[i].fetch_add(1, Relaxed);
        OpenConnection { metrics: self, i }
    }

    /// Connections open now, by transport (in [`Transport::ALL`] order).
    pub fn connections_open(&self) -> [i64; 5] {
        std::array::from_fn(|i| self.connections[i].load(Relaxed))
    }

    /// Roundabout could not open a connection to `addr` (`name`: the TLS name it would
    /// check); `step` is what failed (`connect`, `TLS handshake`, `WebSocket handshake`: the
    /// stage labels `connect`, `tls`, `websocket`). Counted by trusted server: an IP dataset
    /// as `ip:port/protocol`, an address a server's DNS name resolved to by that name; every
    /// other host is `other` (a peer chooses those, so they get no label of their own).
    pub fn outbound_failed(&self, addr: SocketAddr, name: &str, step: &'static str) {
        let stage = match step {
            "connect" => "connect",
            s if s.starts_with("TLS") => "tls",
            s if s.starts_with("WebSocket") => "websocket",
            _ => "other",
        };
        let server = self
            .trusted
            .read()
            .ok()
            .and_then(|t| {
                // The server at this very address, else one on its IP (a URI port can differ).
                let ip = addr.ip().to_canonical();
                t.iter()
                    .find(|(a, _)| a.ip() == ip && a.port() == addr.port())
                    .or_else(|| t.iter().find(|(a, _)| a.ip() == ip))
                    .map(|(_, label)| label.clone())
            })
            .or_else(|| {
                let by_name = self.trusted_addresses.read().ok()?;
                by_name
                    .as_ref()
                    .filter(|t| t.contains(&addr.ip()))
                    .map(|_| name.to_string())
            })
            .unwrap_or_else(|| "other".to_string());
        if let Ok(mut f) = self.outbound_failures.lock() {
            *f.entry((server, stage)).or_default() += 1;
        }
    }

    /// The trusted servers named by IP, as labels of the outbound failures (at start and on
    /// reload); those named by DNS are found through [`Metrics::watch_trusted_addresses`].
    pub fn set_trusted_servers(&self, servers: &[crate::config::TrustedServer]) {
        let labels = servers
            .iter()
            .filter_map(|s| {
                let ip = s.ip()?;
                let label = format!("{}:{}/{}", s.host, s.port, s.transport);
                Some((SocketAddr::new(ip.to_canonical(), s.port), label))
            })
            .collect();
        if let Ok(mut t) = self.trusted.write() {
            *t = labels;
        }
    }

    /// The shared set of trusted servers' addresses (at start).
    pub fn watch_trusted_addresses(&self, addresses: crate::routing::TrustedAddresses) {
        if let Ok(mut t) = self.trusted_addresses.write() {
            *t = Some(addresses);
        }
    }

    /// Set on SIGTERM/SIGINT: `/health` then answers 503.
    pub fn set_draining(&self) {
        self.draining.store(true, Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// The Prometheus text of these counters and of `stats` (gathered for this scrape).
    pub fn render(&self, stats: &Stats) -> String {
        let mut r = Registry::with_prefix("roundabout");
        type Labels = Vec<(&'static str, String)>;

        let requests = Family::<Labels, Counter>::default();
        for (m, row) in METHODS.iter().zip(&self.requests) {
            for (t, n) in Transport::ALL.iter().zip(row) {
                let n = n.load(Relaxed);
                if n > 0 || *m == "INVITE" {
                    requests
                        .get_or_create(&vec![
                            ("method", m.to_string()),
                            ("transport", t.to_string()),
                        ])
                        .inc_by(n);
                }
            }
        }
        r.register(
            "requests_received",
            "SIP requests received, by method and transport (retransmissions included)",
            requests,
        );

        let responses = Family::<Labels, Counter>::default();
        for (i, n) in self.responses.iter().enumerate() {
            responses
                .get_or_create(&vec![("class", format!("{}xx", i + 1))])
                .inc_by(n.load(Relaxed));
        }
        r.register(
            "responses_sent",
            "SIP responses sent by the Router, forwarded or its own, by status class",
            responses,
        );

        let refused = Family::<Labels, Counter>::default();
        for why in Refusal::ALL {
            refused
                .get_or_create(&vec![("reason", why.label().to_string())])
                .inc_by(why.count(self, stats));
        }
        r.register(
            "requests_refused",
            "Requests refused by policy, by reason (strict_host, strict_client, \
             registered_only: 403; max_transactions: 503)",
            refused,
        );

        let connections = Family::<Labels, Gauge>::default();
        for (t, n) in Transport::ALL.iter().zip(self.connections_open()) {
            if *t != Transport::Udp {
                connections
                    .get_or_create(&vec![("transport", t.to_string())])
                    .set(n);
            }
        }
        r.register(
            "connections_open",
            "TCP, TLS, WS and WSS connections open, accepted or opened by Roundabout, by \
             transport",
            connections,
        );

        // Every trusted server (and `other`) at every stage, 0 until it fails: series that
        // exist from the start make rate() and alerts work from the first failure.
        let failures = Family::<Labels, Counter>::default();
        if let Ok(t) = self.trusted.read() {
            for server in t.iter().map(|(_, l)| l.as_str()).chain(["other"]) {
                for stage in ["connect", "tls", "websocket"] {
                    failures
                        .get_or_create(&vec![
                            ("server", server.to_string()),
                            ("stage", stage.to_string()),
                        ])
                        .inc_by(0);
                }
            }
        }
        if let Ok(f) = self.outbound_failures.lock() {
            for ((server, stage), n) in f.iter() {
                failures
                    .get_or_create(&vec![
                        ("server", server.clone()),
                        ("stage", stage.to_string()),
                    ])
                    .inc_by(*n);
            }
        }
        r.register(
            "outbound_failures",
            "Connections Roundabout could not open, by trusted server (ip:port/protocol; \
             other: any other host) and stage (connect, tls, websocket)",
            failures,
        );

        r.register(
            "unparseable_dropped",
            "Messages dropped because they could not be parsed nor answered",
            ConstCounter::new(self.unparseable.load(Relaxed)),
        );
        r.register_with_unit(
            "forwarding",
            "Time from a message reaching its Router shard to the message it caused (the \
             forwarded request or response, or Roundabout's own answer) leaving for its \
             connection",
            Unit::Seconds,
            self.latency.clone(),
        );

        // From the actors, as on the SIGUSR1 line.
        let sum = |f: fn(&crate::proxy::core::ShardCounts) -> u64| -> u64 {
            stats.transactions.iter().map(f).sum()
        };
        r.register(
            "transactions",
            "Transactions held (answered ones linger to absorb retransmissions)",
            ConstGauge::new(sum(|t| t.transactions as u64) as i64),
        );
        r.register(
            "transactions_in_flight",
            "Transactions still without a final answer",
            ConstGauge::new(sum(|t| t.in_flight as u64) as i64),
        );
        r.register(
            "registered_clients",
            "Clients registered through Roundabout (bindings in the client cache)",
            ConstGauge::new(stats.clients as i64),
        );
        r.register(
            "flood_drops",
            "Requests dropped by flood protection (-pike-limit)",
            ConstCounter::new(stats.guard.flood_dropped),
        );
        r.register(
            "flooding_addresses",
            "Addresses whose requests are being dropped by flood protection now",
            ConstGauge::new(stats.guard.flooding as i64),
        );
        r.register(
            "connections_refused",
            "Connections closed at once by -max-connections or -max-connections-per-ip",
            ConstCounter::new(stats.guard.refused),
        );
        r.register(
            "responses_dropped",
            "Responses dropped: no transaction, or not from where the request went",
            ConstCounter::new(sum(|t| t.responses_dropped)),
        );
        r.register(
            "draining",
            "1 while shutting down after SIGTERM or SIGINT (GET /health answers 503)",
            ConstGauge::new(i64::from(self.draining())),
        );

        let mut text = String::new();
        prometheus_text::encode(&mut text, &r).expect("writing to a String cannot fail");
        text
    }
}

/// Counts one open connection until dropped (kept by the connection actor's `Flow`).
#[derive(Debug)]
pub struct OpenConnection {
    metrics: &'static Metrics,
    i: usize,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connections[self.i].fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::core::ShardCounts;

    #[test]
    fn renders_every_family_in_prometheus_text() {
        let m = Metrics::default();
        m.request_received("INVITE", Transport::Udp);
        m.request_received("INVITE", Transport::Udp);
        m.request_received("FOO", Transport::Wss);
        m.response_sent(180);
        m.response_sent(200);
        m.response_sent(699);
        m.response_sent(42);
        m.strict_host_refused();
        m.unparseable_dropped();
        m.observe_latency(Duration::from_micros(300));
        let m: &'static Metrics = Box::leak(Box::new(m));
        let open = m.connection_opened(Transport::Wss);
        m.set_trusted_servers(
            &crate::config::trusted_server::parse_trusted_servers("192.0.2.9::5061:tls:").0,
        );
        m.outbound_failed("192.0.2.9:5061".parse().unwrap(), "x", "TLS handshake");
        m.outbound_failed("198.51.100.1:5060".parse().unwrap(), "y", "connect");
        m.watch_trusted_addresses(crate::routing::TrustedAddresses::from_ips(["198.51.100.7"
            .parse()
            .unwrap()]));
        m.outbound_failed(
            "198.51.100.7:5061".parse().unwrap(),
            "pbx.example.com",
            "WebSocket handshake",
        );
        let shard = |strict_client, registered_only, max_transactions| ShardCounts {
            refused_strict_client: strict_client,
            refused_registered_only: registered_only,
            refused_max_transactions: max_transactions,
            ..ShardCounts::default()
        };
        let stats = Stats {
            transactions: vec![shard(1, 0, 2), shard(0, 0, 1)],
            ..Stats::default()
        };
        let text = m.render(&stats);
        for line in [
            "# TYPE roundabout_requests_received_total counter",
            "roundabout_requests_received_total{method=\"INVITE\",transport=\"udp\"} 2",
            "roundabout_requests_received_total{method=\"other\",transport=\"wss\"} 1",
            "roundabout_requests_received_total{method=\"INVITE\",transport=\"tcp\"} 0",
            "roundabout_responses_sent_total{class=\"1xx\"} 1",
            "roundabout_responses_sent_total{class=\"6xx\"} 1",
            "roundabout_requests_refused_total{reason=\"strict_host\"} 1",
            "roundabout_requests_refused_total{reason=\"strict_client\"} 1",
            "roundabout_requests_refused_total{reason=\"registered_only\"} 0",
            "roundabout_requests_refused_total{reason=\"max_transactions\"} 3",
            "roundabout_connections_open{transport=\"wss\"} 1",
            "roundabout_outbound_failures_total{server=\"192.0.2.9:5061/tls\",stage=\"tls\"} 1",
            "roundabout_outbound_failures_total{server=\"other\",stage=\"connect\"} 1",
            "roundabout_outbound_failures_total{server=\"other\",stage=\"tls\"} 0",
            "roundabout_outbound_failures_total{server=\"pbx.example.com\",stage=\"websocket\"} 1",
            "roundabout_unparseable_dropped_total 1",
            "# TYPE roundabout_forwarding_seconds histogram",
            "roundabout_forwarding_seconds_count 1",
            "roundabout_forwarding_seconds_bucket{le=\"0.0005\"} 1",
            "roundabout_transactions_in_flight 0",
            "roundabout_registered_clients 0",
            "roundabout_flood_drops_total 0",
            "roundabout_draining 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
        drop(open);
        assert_eq!(m.connections_open(), [0; 5]);
    }
}
