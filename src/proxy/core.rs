//! The proxy core of one Router shard, without I/O: RFC 3261 sections 16 and 17.
//!
//! For every request that is forwarded statefully it keeps a [`ProxyTx`], the response
//! context of 16.7 that joins the server transaction facing the caller
//! ([`super::server_tx`]) to the client transaction facing the next hop
//! ([`super::client_tx`]) and owns the rules that need both sides: which response goes
//! upstream, CANCEL (held until a provisional, 9.1; its own client transaction), Timer C
//! (16.8), a 2xx after a local final (16.7 step 5), 2xx retransmission on a UDP caller
//! whose next hop is reliable (13.3.1.4), and the ACK rules.
//!
//! Events come in through [`ProxyCore::handle`] with the current time; what must happen
//! goes out as [`Action`]s: deliver bytes, ask the ServerTable or the Registrar, bind or
//! unbind a client. The Router actor only carries them. Timers live in the shard's
//! [`TimerQueue`] and come back as [`Event::Tick`].

use super::branch::{is_loop, is_our_branch, BranchGenerator};
use super::client_tx::{ClientStep, ClientTx, ResponseFate};
use super::contact_token::{ContactTokens, TokenKey};
use super::responses::{build_response, build_response_with, is_local_tag};
use super::rewrite::{self, ProxyAddress};
use super::server_tx::{AckFate, ServerState, ServerStep, ServerTx};
use super::timers::{TimerKind, TimerQueue, Timers, TxId};
use super::transaction::{MethodClass, OutgoingHop, RegisterContext, ServerKey};
use super::validate::{validate_request, validate_response};
use crate::config::Config;
use crate::routing::{
    ClientBinding, Decision, DeliveryError, Destination, FlowId, LocalIdentity, RouteTarget, Source,
};
use crate::sip::uri::{find_param, NameAddr, SipUri};
use crate::sip::{HeaderName, Rewrite, SipMessage};
use bytes::Bytes;
use cidr::IpCidr;
use log::{debug, info, trace, warn};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// Registrations without an expiry from the server or client last this long.
const DEFAULT_EXPIRES: u32 = 3600;

/// A request waiting for the ServerTable or the Registrar.
pub type JobId = u64;

/// What happens to a shard.
#[derive(Debug)]
pub enum Event {
    /// A parsed message from a connection.
    Message(SipMessage, Source),
    /// The ServerTable's answer to [`Action::Resolve`].
    Decided(JobId, Decision),
    /// The Registrar's answer to [`Action::LookupClient`].
    ClientFound(JobId, Option<ClientBinding>),
    /// The Registrar's answer to [`Action::CheckRegistered`].
    SourceChecked(JobId, bool),
    /// The ServerTable or Registrar could not be asked.
    LookupFailed(JobId),
    /// A request of this transaction could not be delivered.
    DeliveryFailed(TxId, DeliveryError),
    /// Time passed: serve the timers that are due.
    Tick,
}

/// What the shard asks the other actors to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Send bytes; when `notify` is set and the destination cannot be reached, answer with
    /// [`Event::DeliveryFailed`] for that transaction.
    Deliver {
        destination: Destination,
        bytes: Bytes,
        notify: Option<TxId>,
    },
    /// Ask the ServerTable where `target` is; answer with [`Event::Decided`].
    Resolve { job: JobId, target: RouteTarget },
    /// Ask the Registrar for the client `client` (a `;rbc=` token) or else the newest
    /// binding of `user`; answer with [`Event::ClientFound`].
    LookupClient {
        job: JobId,
        user: String,
        client: Option<String>,
    },
    /// Ask the Registrar whether `source` is a client registered through Roundabout (its
    /// connection, or its UDP address and port); answer with [`Event::SourceChecked`].
    CheckRegistered { job: JobId, source: Source },
    Bind {
        user: String,
        /// The client token (`;rbc=`) that names this client's binding.
        client: String,
        binding: ClientBinding,
        expires: Duration,
    },
    /// Remove `user`'s binding; with `only_flow`, only if it is bound to that connection
    /// (a request for an old connection must not remove a newer registration).
    Unbind {
        user: String,
        /// Only this client's binding; `None`: every binding of `user`.
        client: Option<String>,
        only_flow: Option<FlowId>,
    },
    /// Failover (issue 15): a target of a name resolved by DNS failed before answering
    /// (`reason`: refused or unreachable, no answer, 503). The ServerTable tries it last for
    /// a while (-avoid-time).
    TargetFailed {
        destination: Destination,
        reason: &'static str,
    },
}

/// The next hop side of a forwarded request.
#[derive(Debug)]
struct Downstream {
    tx: ClientTx,
    destination: Destination,
    branch: String,
    /// To build ACK (for non-2xx) and CANCEL for the same hop.
    hop: OutgoingHop,
}

/// CANCEL for a forwarded INVITE (RFC 3261 9.1, 16.10).
#[derive(Debug, Default)]
enum Cancel {
    #[default]
    None,
    /// The caller cancelled; sent as soon as the next hop has answered anything.
    Held,
    /// Sent, as its own client transaction.
    Sent(ClientTx),
}

/// The response context of one forwarded request (RFC 3261 16.7).
#[derive(Debug)]
struct ProxyTx {
    key: ServerKey,
    method: String,
    source: Source,
    /// The caller's top Via with received/rport, for responses Roundabout makes.
    source_via: Option<String>,
    /// The request as received, until a final answer is out.
    request: Option<Box<SipMessage>>,
    server: ServerTx,
    /// `None` while the next hop is being resolved (or when none was found).
    down: Option<Box<Downstream>>,
    cancel: Cancel,
    /// Timer C's current deadline: it restarts on every provisional above 100.
    ringing_until: Option<Instant>,
    /// Timer C sent a CANCEL: when it fires again, the next hop stayed silent.
    ringing_gave_up: bool,
    register: Option<Box<RegisterContext>>,
    /// Waiting for the ServerTable or Registrar.
    resolving: bool,
    /// Failover: set while the next hop came from a DNS name with other targets and has
    /// not answered with a provisional above 100 (see [`ProxyCore::fail_over`]).
    failover: Option<Box<Failover>>,
    /// Its Call-ID while it is in `by_dialog` (retransmitting a 2xx), so that forgetting it
    /// removes that one entry instead of scanning the map.
    dialog: Option<Box<str>>,
}

/// RFC 3263 failover (issue 15): what it takes to send the request again to the next target
/// of its server's DNS name when the current one fails before answering.
#[derive(Debug)]
struct Failover {
    /// The targets still to try, in order.
    alternates: Vec<Destination>,
    request_uri: Option<String>,
    our_routes: usize,
    routes: Vec<String>,
}

impl ProxyTx {
    fn is_invite(&self) -> bool {
        self.key.class == MethodClass::Invite
    }

    fn is_over(&self) -> bool {
        self.server.state() == ServerState::Terminated
            && !self.resolving
            && self.down.as_ref().is_none_or(|d| d.tx.is_terminated())
            && match &self.cancel {
                Cancel::Sent(c) => c.is_terminated(),
                _ => true,
            }
    }
}

/// A request waiting for its next hop.
#[derive(Debug)]
enum Job {
    Tx(TxId),
    /// Forwarded without a transaction: an ACK for a 2xx (end to end), or a CANCEL that
    /// matches no transaction (16.10).
    Stateless(Box<SipMessage>, Source),
}

#[derive(Debug)]
struct Pending {
    job: Job,
    /// The Request-URI to send (a restored contact), if it changes.
    request_uri: Option<String>,
    /// How many of our own Route values to pop.
    our_routes: usize,
    /// Route values to add on top (a trusted server's route-list).
    routes: Vec<String>,
    /// The other targets of the next hop's DNS name, for failover.
    alternates: Vec<Destination>,
    /// The Registrar had no such client: use this instead.
    fallback: Option<Box<Decision>>,
}

/// A request on its way in, before it gets a transaction.
#[derive(Debug)]
struct Admission {
    msg: SipMessage,
    source: Source,
    key: ServerKey,
    target: RouteTarget,
    request_uri: Option<String>,
    our_routes: usize,
}

/// -max-transactions: one count that all Router shards share (an atomic counter; the only
/// state shards share), so the cap holds however Call-IDs fall on the shards.
#[derive(Debug, Clone)]
pub struct TransactionBudget {
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

impl TransactionBudget {
    pub fn new(max: usize) -> TransactionBudget {
        TransactionBudget {
            held: Default::default(),
            max,
        }
    }

    /// Takes one transaction from the budget; false when none is left.
    fn take(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.held
            .fetch_update(Relaxed, Relaxed, |n| (n < self.max).then_some(n + 1))
            .is_ok()
    }

    fn give_back(&self) {
        self.held.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Transactions held by all shards.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What a shard counted, for the stats line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardCounts {
    pub transactions: usize,
    /// Of which still without a final answer.
    pub in_flight: usize,
    /// Responses dropped: no transaction, or not from where the request went.
    pub responses_dropped: u64,
    /// Requests refused by policy, by rule: -strict-client and -registered-only (403),
    /// -max-transactions (503). Counted where the core refuses, read by the stats line and
    /// `/metrics`.
    pub refused_strict_client: u64,
    pub refused_registered_only: u64,
    pub refused_max_transactions: u64,
}

impl ShardCounts {
    /// Requests refused by policy, all rules together.
    pub fn requests_refused(&self) -> u64 {
        self.refused_strict_client + self.refused_registered_only + self.refused_max_transactions
    }
}

/// An admission rule that refuses requests with 403, counted apart ([`ShardCounts`]).
#[derive(Debug, Clone, Copy)]
enum Rule {
    StrictClient,
    RegisteredOnly,
}

impl Rule {
    fn flag(self) -> &'static str {
        match self {
            Rule::StrictClient => "-strict-client",
            Rule::RegisteredOnly => "-registered-only",
        }
    }
}

/// Lets one log line a second through; counts the rest.
#[derive(Debug, Default)]
struct LogThrottle {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    fn allow(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|l| now.saturating_duration_since(l) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return false;
        }
        self.last = Some(now);
        true
    }

    fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// Hashes the transaction table's keys. TxIds are this shard's own counter, never taken from
/// the network, so SipHash's resistance to chosen keys buys nothing there; one multiply
/// (FxHash's) spreads consecutive ids over the buckets at a fraction of SipHash's cost.
#[derive(Default, Clone, Copy)]
struct TxIdHasher(u64);

impl Hasher for TxIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<TxIdHasher>>;

/// One shard's proxy state and rules.
pub struct ProxyCore {
    local: ProxyAddress,
    tokens: ContactTokens,
    strict_client: bool,
    registered_only: bool,
    client_networks: Vec<IpCidr>,
    /// Requests from these addresses are never refused by the admission rules: shared
    /// with the ServerTable, which adds the addresses trusted servers' names resolve to.
    trusted_servers: crate::routing::TrustedAddresses,
    ack_ruri: bool,
    timers: Timers,
    /// -max-transactions, counted over all shards.
    budget: TransactionBudget,
    /// Requests waiting for the Registrar's word on their source (-registered-only).
    gated: IdMap<Admission>,
    counters: ShardCounts,
    refusal_log: LogThrottle,
    branches: BranchGenerator,
    /// Boxed: the table grows to hundreds of thousands of entries, and a rehash then moves
    /// pointers, not whole records, so it does not stall the shard.
    txs: IdMap<Box<ProxyTx>>,
    /// Keyed by what the sender wrote (its branch and sent-by): SipHash stays, so nobody can
    /// pick keys that collide and turn lookups into long scans.
    by_key: HashMap<ServerKey, TxId>,
    /// Our own branches (they embed a loop hash of sender-chosen fields): SipHash too.
    by_branch: HashMap<String, TxId>,
    /// INVITEs whose 2xx Roundabout retransmits to a UDP caller, by Call-ID (with their
    /// CSeq numbers): the caller's ACK (a new branch) stops it, and so does a BYE of the
    /// call from either end (the ACK was lost, the call is over all the same).
    by_dialog: HashMap<String, Vec<(u32, TxId)>>,
    pending: IdMap<Pending>,
    next_id: u64,
    /// Set on shutdown: new transactions are refused with 503.
    draining: bool,
    queue: TimerQueue,
    out: Vec<Action>,
    now: Instant,
}

impl ProxyCore {
    /// The core of shard `shard`; every shard shares the `budget` of transactions.
    pub fn new(
        config: &Config,
        key: TokenKey,
        shard: usize,
        budget: TransactionBudget,
    ) -> ProxyCore {
        let branches = BranchGenerator::new(shard, key.clone());
        ProxyCore {
            local: ProxyAddress::new(
                LocalIdentity::from_config(config),
                config.contact_header_fqdn,
            ),
            tokens: ContactTokens::new(key),
            strict_client: config.strict_client,
            registered_only: config.registered_only,
            client_networks: config.client_networks.clone(),
            trusted_servers: config.trusted_addresses.clone(),
            ack_ruri: config.ack_ruri,
            timers: Timers::from_limits(&config.limits),
            budget,
            gated: IdMap::default(),
            counters: ShardCounts::default(),
            refusal_log: LogThrottle::default(),
            branches,
            txs: IdMap::default(),
            by_key: HashMap::new(),
            by_branch: HashMap::new(),
            by_dialog: HashMap::new(),
            pending: IdMap::default(),
            next_id: 1,
            draining: false,
            queue: TimerQueue::default(),
            out: Vec::new(),
            now: Instant::now(),
        }
    }

    /// Feeds one event at time `now`; returns what must be done.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.handle_into(event, now, &mut out);
        out
    }

    /// [`ProxyCore::handle`] into a buffer the caller keeps (and empties): the hot path
    /// allocates no list of actions per message.
    pub fn handle_into(&mut self, event: Event, now: Instant, out: &mut Vec<Action>) {
        std::mem::swap(&mut self.out, out);
        self.dispatch(event, now);
        std::mem::swap(&mut self.out, out);
    }

    fn dispatch(&mut self, event: Event, now: Instant) {
        self.now = now;
        match event {
            Event::Message(msg, source) if msg.is_request() => self.on_request(msg, source),
            Event::Message(msg, source) => self.on_response(msg, source),
            Event::Decided(job, decision) => {
                if let Some(p) = self.pending.remove(&job) {
                    self.on_decision(decision, p)
                }
            }
            Event::ClientFound(job, binding) => {
                if let Some(p) = self.pending.remove(&job) {
                    self.on_client_found(binding, p)
                }
            }
            Event::SourceChecked(job, registered) => {
                if let Some(a) = self.gated.remove(&job) {
                    if registered {
                        self.admit(a)
                    } else {
                        self.refuse(a, "Forbidden - Not Registered", Rule::RegisteredOnly)
                    }
                }
            }
            Event::LookupFailed(job) => {
                if let Some(p) = self.pending.remove(&job) {
                    self.fail(p.job, 500, "Server Internal Error")
                }
                if let Some(a) = self.gated.remove(&job) {
                    self.refuse(a, "Forbidden - Not Registered", Rule::RegisteredOnly)
                }
            }
            Event::DeliveryFailed(id, error) => self.on_delivery_failed(id, error),
            Event::Tick => self.on_tick(),
        }
    }

    /// A reload (SIGHUP with -config): the admission rules (-strict-client,
    /// -registered-only, the client networks), -ack-ruri, the timers and -max-transactions of
    /// `config` apply from the next request on. Transactions in flight keep the timers they
    /// have already set; the trusted servers are shared with the ServerTable, which updates
    /// them.
    pub fn reconfigure(&mut self, config: &Config) {
        self.strict_client = config.strict_client;
        self.registered_only = config.registered_only;
        self.client_networks = config.client_networks.clone();
        self.ack_ruri = config.ack_ruri;
        self.timers = Timers::from_limits(&config.limits);
        self.budget.max = config.limits.max_transactions;
    }

    /// Shutting down: refuse new transactions; returns how many are still unanswered.
    pub fn drain(&mut self) -> usize {
        self.draining = true;
        self.in_flight()
    }

    pub fn counts(&self) -> ShardCounts {
        ShardCounts {
            transactions: self.txs.len(),
            in_flight: self.in_flight(),
            ..self.counters
        }
    }

    fn in_flight(&self) -> usize {
        self.txs
            .values()
            .filter(|tx| !tx.server.has_final())
            .count()
    }

    fn deliver(&mut self, destination: Destination, bytes: Bytes, notify: Option<TxId>) {
        self.out.push(Action::Deliver {
            destination,
            bytes,
            notify,
        });
    }

    fn schedule(&mut self, id: TxId, kind: TimerKind, after: Duration) {
        self.queue.schedule(self.now + after, id, kind);
    }

    /// Answers a request that has no transaction (yet): 400, 403, 481, 482, 483...
    fn reply_stateless(&mut self, msg: &SipMessage, source: &Source, code: u16, reason: &str) {
        if msg.method() == "ACK" {
            return; // never answer an ACK
        }
        let via = rewrite::top_via_with_received(msg, source);
        let bytes = build_response(msg, code, reason, via.as_deref());
        debug!(
            "{} {} from {} answered {code} {reason}",
            msg.method(),
            msg.request_uri(),
            source.remote
        );
        self.deliver(source.reply_destination(), bytes, None);
    }

    // ----- requests ---------------------------------------------------------------------

    fn on_request(&mut self, msg: SipMessage, source: Source) {
        // Parsed once, for this check and the transaction key.
        let Some(top_via) = msg.top_via() else {
            warn!(
                "dropped a {} from {}: no usable Via to answer to",
                msg.method(),
                source.remote
            );
            return;
        };
        if let Err(reason) = validate_request(&msg) {
            info!("bad {} from {}: {reason}", msg.method(), source.remote);
            return self.reply_stateless(&msg, &source, 400, reason);
        }
        let method = msg.method().to_string();
        let key = ServerKey::with_top_via(&msg, &top_via, &method);

        match method.as_str() {
            "ACK" => {
                if self.on_ack(&msg, &key) {
                    return;
                }
            }
            "CANCEL" => {
                if self.on_cancel(&msg, &source, &key) {
                    return;
                }
                // No INVITE transaction here: forwarded statelessly (RFC 3261 16.10).
            }
            _ => {
                if let Some(&id) = self.by_key.get(&key) {
                    return self.on_retransmission(id);
                }
                if method == "BYE" {
                    // Only from the call's own ends: a Call-ID is no secret.
                    if let Some(call_id) = msg.call_id() {
                        self.stop_2xx_retransmissions(call_id, |_, tx| {
                            tx.source == source
                                || tx
                                    .down
                                    .as_ref()
                                    .is_some_and(|d| d.destination.sent_to(&source))
                        });
                    }
                }
            }
        }

        let stateless = method == "ACK" || method == "CANCEL";
        if self.draining && !stateless {
            return self.reply_stateless(&msg, &source, 503, "Service Unavailable - Shutting Down");
        }
        if msg.max_forwards() == Some(Ok(0)) {
            return self.reply_stateless(&msg, &source, 483, "Too Many Hops");
        }
        if is_loop(&msg, &self.local) {
            return self.reply_stateless(&msg, &source, 482, "Loop Detected");
        }
        // Where does it go? Our own Route values are popped first (loose routing).
        let (our_routes, next_route) = rewrite::our_routes_on_top(&msg, &self.local);
        let ruri = SipUri::parse(msg.request_uri());
        // Our token is restored into the Request-URI on every pass (also when a Route
        // follows), unless a later Route brings the request back to us.
        let token = ruri
            .as_ref()
            .ok()
            .and_then(|u| rewrite::token_to_restore(&msg, u, &self.local, our_routes))
            .and_then(|t| self.tokens.decode(t));
        let target = if let Some(route) = next_route {
            match NameAddr::parse(route)
                .ok()
                .and_then(|n| n.uri().ok().map(|u| RouteTarget::from_route(&u)))
            {
                Some(t) => t,
                None => return self.reply_stateless(&msg, &source, 400, "Malformed Route"),
            }
        } else if let Some(tok) = &token {
            RouteTarget::Peer(tok.destination())
        } else if method == "ACK" && !self.ack_ruri {
            // The original program's rule: an ACK without Route goes to its To host.
            match msg
                .first_value(HeaderName::To)
                .and_then(|v| NameAddr::parse(v).ok())
                .and_then(|n| n.uri().ok().map(|u| RouteTarget::from_uri(&u)))
            {
                Some(t) => t,
                None => return,
            }
        } else {
            match &ruri {
                Ok(u) => RouteTarget::from_uri(u),
                Err(e) => {
                    debug!("unroutable Request-URI '{}': {e}", msg.request_uri());
                    return self.reply_stateless(&msg, &source, 416, "Unsupported URI Scheme");
                }
            }
        };
        // OPTIONS to Roundabout itself (no user, no further Route): a health check that
        // servers and load balancers send to a proxy; answer it here.
        if method == "OPTIONS" && next_route.is_none() {
            if let Ok(u) = &ruri {
                if u.user.is_none() && self.local.is_us(u) {
                    return self.reply_stateless(&msg, &source, 200, "OK");
                }
            }
        }
        // Who may send: a request outside a dialog (no To tag, or one but neither our Route
        // nor our Contact token) from anyone but a trusted server is the toll-fraud path.
        // (Worked out only when a rule asks: it parses the To and may check a MAC.)
        let gated = self.strict_client || self.registered_only;
        let in_dialog = gated
            && rewrite::to_tag(&msg).is_some()
            && (our_routes > 0
                || token.is_some()
                || ruri
                    .as_ref()
                    .ok()
                    .and_then(|u| rewrite::token_in_uri(u, &self.local))
                    .is_some_and(|t| self.tokens.decode(t).is_some()));
        let request_uri = token.map(|t| t.original_uri);
        let admission = Admission {
            msg,
            source,
            key,
            target,
            request_uri,
            our_routes,
        };

        let ip = source.remote.ip();
        if gated && !in_dialog && !self.trusted_servers.contains(&ip) {
            if self.strict_client
                && !crate::config::client_networks::contains(&self.client_networks, ip)
            {
                return self.refuse(
                    admission,
                    "Forbidden - Not From A Trusted Network",
                    Rule::StrictClient,
                );
            }
            if self.registered_only && method != "REGISTER" {
                // The Registrar knows who is bound; the request waits for its answer.
                let job = self.next_id;
                self.next_id += 1;
                self.gated.insert(job, admission);
                self.out.push(Action::CheckRegistered { job, source });
                return;
            }
        }
        self.admit(admission);
    }

    /// A request that may pass: a transaction (unless it is an ACK or a stray CANCEL), then
    /// its next hop.
    fn admit(&mut self, a: Admission) {
        let method = a.msg.method().to_string();
        let stateless = method == "ACK" || method == "CANCEL";
        let job = if stateless {
            Job::Stateless(Box::new(a.msg), a.source)
        } else {
            if let Some(&id) = self.by_key.get(&a.key) {
                // Retransmitted while the Registrar was asked.
                return self.on_retransmission(id);
            }
            if !self.budget.take() {
                self.counters.refused_max_transactions += 1;
                let held = self.budget.held();
                self.log_refusal(format_args!(
                    "{method} from {} refused: {held} transactions held (-max-transactions)",
                    a.source.remote
                ));
                let via = rewrite::top_via_with_received(&a.msg, &a.source);
                let bytes = build_response_with(
                    &a.msg,
                    503,
                    "Service Unavailable - Too Many Transactions",
                    via.as_deref(),
                    &["Retry-After: 5".to_string()],
                );
                return self.deliver(a.source.reply_destination(), bytes, None);
            }
            Job::Tx(self.new_transaction(a.msg, a.source, a.key, method)) // budget taken
        };
        let pending = Pending {
            job,
            request_uri: a.request_uri,
            our_routes: a.our_routes,
            routes: Vec::new(),
            alternates: Vec::new(),
            fallback: None,
        };
        self.resolve(a.target, pending);
    }

    /// Answers 403 for a request that may not pass (an ACK is dropped), counted and logged
    /// (at most one line a second: the peer chooses how many it sends).
    fn refuse(&mut self, a: Admission, reason: &str, rule: Rule) {
        match rule {
            Rule::StrictClient => self.counters.refused_strict_client += 1,
            Rule::RegisteredOnly => self.counters.refused_registered_only += 1,
        }
        self.log_refusal(format_args!(
            "{} {} from {} refused ({})",
            a.msg.method(),
            a.msg.request_uri(),
            a.source.remote,
            rule.flag()
        ));
        self.reply_stateless(&a.msg, &a.source, 403, reason);
    }

    fn log_refusal(&mut self, line: std::fmt::Arguments<'_>) {
        if self.refusal_log.allow(self.now) {
            let more = self.refusal_log.take_suppressed();
            if more > 0 {
                info!("{line} (and {more} more refusals not logged)");
            } else {
                info!("{line}");
            }
        } else {
            debug!("{line}");
        }
    }

    /// An ACK: absorbed when it is hop by hop (for a non-2xx final of ours or forwarded by
    /// us, or for a final Roundabout made without a transaction); otherwise it goes on
    /// end to end. Returns true when absorbed.
    fn on_ack(&mut self, msg: &SipMessage, key: &ServerKey) -> bool {
        if let Some(&id) = self.by_key.get(key) {
            let t = self.timers;
            let mut steps = Vec::new();
            let fate = self
                .txs
                .get_mut(&id)
                .map(|tx| tx.server.ack(&t, &mut steps));
            self.apply_server(id, steps);
            if fate == Some(AckFate::Absorbed) {
                trace!("absorbed an ACK for a non-2xx final (hop by hop)");
                self.cleanup(id);
                return true;
            }
        }
        // The ACK for a 2xx (a new branch) stops our retransmission of that 2xx.
        if let (Some(call_id), Some((cseq, _))) = (msg.call_id(), msg.cseq()) {
            self.stop_2xx_retransmissions(call_id, |c, _| c == cseq);
        }
        if is_local_tag(msg) {
            trace!("absorbed an ACK for a final Roundabout made itself");
            return true;
        }
        false
    }

    fn new_transaction(
        &mut self,
        msg: SipMessage,
        source: Source,
        key: ServerKey,
        method: String,
    ) -> TxId {
        let id = self.next_id;
        self.next_id += 1;
        let source_via = rewrite::top_via_with_received(&msg, &source);
        let register = (method == "REGISTER").then(|| {
            Box::new(RegisterContext {
                contacts: Vec::new(),
                requested_expires: rewrite::requested_expires(&msg),
                wildcard_user: rewrite::is_wildcard_contact(&msg)
                    .then(|| rewrite::to_user(&msg))
                    .flatten(),
            })
        });
        let invite = key.class == MethodClass::Invite;
        let trying = invite.then(|| build_response(&msg, 100, "Trying", source_via.as_deref()));
        let tx = ProxyTx {
            key: key.clone(),
            method,
            source,
            source_via,
            request: Some(Box::new(msg)),
            server: ServerTx::new(invite, source.transport.is_stream()),
            down: None,
            cancel: Cancel::None,
            ringing_until: None,
            ringing_gave_up: false,
            register,
            resolving: true,
            failover: None,
            dialog: None,
        };
        self.by_key.insert(key, id);
        self.txs.insert(id, Box::new(tx));
        if let Some(trying) = trying {
            // A stateful proxy answers 100 at once so the caller stops retransmitting.
            let mut steps = Vec::new();
            if let Some(tx) = self.txs.get_mut(&id) {
                tx.server.provisional(trying, &mut steps);
            }
            self.apply_server(id, steps);
        }
        id
    }

    /// A request we have seen: re-send what we last answered (RFC 3261 17.2), never
    /// forward it twice; our own client side retransmits on UDP by itself.
    fn on_retransmission(&mut self, id: TxId) {
        let mut steps = Vec::new();
        if let Some(tx) = self.txs.get_mut(&id) {
            trace!("absorbed a retransmitted {}", tx.method);
            tx.server.request_retransmission(&mut steps);
        }
        self.apply_server(id, steps);
    }

    /// A CANCEL from upstream. Returns false when it matches no INVITE transaction.
    fn on_cancel(&mut self, msg: &SipMessage, source: &Source, key: &ServerKey) -> bool {
        let invite_key = ServerKey {
            class: MethodClass::Invite,
            ..key.clone()
        };
        let Some(&id) = self.by_key.get(&invite_key) else {
            return false;
        };
        // CANCEL is hop-by-hop: answered here, then sent on where its INVITE went.
        self.reply_stateless(msg, source, 200, "OK");
        let Some(tx) = self.txs.get_mut(&id) else {
            return true;
        };
        if tx.server.has_final() || !matches!(tx.cancel, Cancel::None) {
            return true;
        }
        tx.cancel = Cancel::Held;
        // Still resolving: forward() answers 487 instead of sending. Otherwise it goes now
        // if the next hop answered anything, else on its first provisional.
        self.send_held_cancel(id);
        true
    }

    /// Sends a held CANCEL once the next hop has answered (RFC 3261 9.1), as its own client
    /// transaction (retransmitted over UDP, Timer E; given up after Timer F).
    fn send_held_cancel(&mut self, id: TxId) {
        let t = self.timers;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let Some(down) = &tx.down else { return };
        if !matches!(tx.cancel, Cancel::Held) || !down.tx.heard_back() || tx.server.has_final() {
            return;
        }
        let dest = down.destination.clone();
        debug!("CANCEL {} -> {dest}", down.hop.request_uri);
        let mut steps = Vec::new();
        let cancel = ClientTx::start(
            false,
            dest.transport().is_stream(),
            down.hop.cancel(),
            &t,
            &mut steps,
        );
        tx.cancel = Cancel::Sent(cancel);
        self.apply_client(id, true, steps, "");
    }

    fn resolve(&mut self, target: RouteTarget, pending: Pending) {
        let job = self.next_id;
        self.next_id += 1;
        self.pending.insert(job, pending);
        self.out.push(Action::Resolve { job, target });
    }

    fn on_decision(&mut self, decision: Decision, mut pending: Pending) {
        match decision {
            Decision::Forward {
                destination,
                request_uri,
                routes,
                alternates,
            } => {
                if request_uri.is_some() {
                    pending.request_uri = request_uri;
                }
                pending.routes = routes;
                pending.alternates = alternates;
                self.forward(destination, pending)
            }
            Decision::Reject(r) => {
                let (code, reason) = r.status();
                self.fail(pending.job, code, reason)
            }
            Decision::AskRegistrar { user, fallback } => {
                let job = self.next_id;
                self.next_id += 1;
                // The Contact Roundabout registered names the very client (`;rbc=`).
                let client = self.request_of(&pending.job).and_then(|m| {
                    let uri = SipUri::parse(m.request_uri()).ok()?;
                    find_param(uri.params, rewrite::CLIENT_PARAM)
                        .flatten()
                        .map(String::from)
                });
                pending.fallback = fallback;
                self.pending.insert(job, pending);
                self.out.push(Action::LookupClient { job, user, client });
            }
        }
    }

    fn on_client_found(&mut self, binding: Option<ClientBinding>, mut pending: Pending) {
        match binding {
            Some(binding) => {
                debug!("client is at {}", binding.source.remote);
                pending.request_uri = Some(binding.contact_uri);
                self.forward(binding.source.reply_destination(), pending)
            }
            None => match pending.fallback.take() {
                Some(f) => self.on_decision(*f, pending),
                None => self.fail(pending.job, 404, "Not Found"),
            },
        }
    }

    fn request_of<'a>(&'a self, job: &'a Job) -> Option<&'a SipMessage> {
        match job {
            Job::Stateless(m, _) => Some(m),
            Job::Tx(id) => self.txs.get(id)?.request.as_deref(),
        }
    }

    /// Answers the request of a job with an error (and ends its transaction).
    fn fail(&mut self, job: Job, code: u16, reason: &str) {
        match job {
            Job::Stateless(msg, _) => {
                debug!(
                    "{} {} dropped: {code} {reason}",
                    msg.method(),
                    msg.request_uri()
                )
            }
            Job::Tx(id) => {
                self.respond_locally(id, code, reason);
                // Never forwarded: nothing downstream to wait for, and a retransmission is
                // routed again to the same answer (the To tag is derived from the request,
                // so its ACK is still recognised). Forgotten at once, like Kamailio's
                // stateless replies: a flood of requests for unknown users costs no memory.
                self.forget(id);
            }
        }
    }

    /// Sends Roundabout's own final response upstream for a transaction.
    fn respond_locally(&mut self, id: TxId, code: u16, reason: &str) {
        let t = self.timers;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        if tx.server.has_final() {
            return;
        }
        let Some(request) = tx.request.take() else {
            return;
        };
        let bytes = build_response(&request, code, reason, tx.source_via.as_deref());
        debug!(
            "{} {} answered {code} {reason}",
            tx.method,
            request.request_uri()
        );
        let mut steps = Vec::new();
        tx.server.final_response(code, bytes, false, &t, &mut steps);
        tx.ringing_until = None;
        tx.source_via = None;
        tx.register = None;
        self.apply_server(id, steps);
    }

    fn forward(&mut self, destination: Destination, pending: Pending) {
        let out = destination.transport();
        match pending.job {
            Job::Stateless(msg, source) => {
                let branch = self.branches.next(&msg);
                let source_via = rewrite::top_via_with_received(&msg, &source);
                let built = rewrite::build_request(
                    &msg,
                    &self.local,
                    &self.tokens,
                    &source,
                    source_via.as_deref(),
                    out,
                    &branch,
                    pending.request_uri.as_deref(),
                    pending.our_routes,
                    &pending.routes,
                    false,
                );
                debug!("{} {} -> {destination}", msg.method(), msg.request_uri());
                self.deliver(destination, built.bytes, None);
            }
            Job::Tx(id) => {
                let t = self.timers;
                let Some(tx) = self.txs.get_mut(&id) else {
                    return;
                };
                tx.resolving = false;
                if matches!(tx.cancel, Cancel::Held) {
                    self.respond_locally(id, 487, "Request Terminated");
                    return self.cleanup(id);
                }
                let Some(request) = tx.request.as_ref() else {
                    return self.cleanup(id);
                };
                let branch = self.branches.next(request);
                let built = rewrite::build_request(
                    request,
                    &self.local,
                    &self.tokens,
                    &tx.source,
                    tx.source_via.as_deref(),
                    out,
                    &branch,
                    pending.request_uri.as_deref(),
                    pending.our_routes,
                    &pending.routes,
                    tx.register.is_some(),
                );
                debug!(
                    "{} {} from {} -> {destination}",
                    tx.method,
                    request.request_uri(),
                    tx.source.remote
                );
                if let (Some(reg), Some(c)) = (tx.register.as_mut(), built.register_contacts) {
                    reg.contacts = c;
                }
                let invite = tx.is_invite();
                let mut steps = Vec::new();
                let client = ClientTx::start(invite, out.is_stream(), built.bytes, &t, &mut steps);
                tx.down = Some(Box::new(Downstream {
                    tx: client,
                    destination,
                    branch: branch.clone(),
                    hop: built.hop,
                }));
                if !pending.alternates.is_empty() {
                    // Kept to send it again if this target fails (a retry keeps the rest).
                    tx.failover = Some(Box::new(Failover {
                        alternates: pending.alternates,
                        request_uri: pending.request_uri,
                        our_routes: pending.our_routes,
                        routes: pending.routes,
                    }));
                }
                if invite {
                    // Timer C starts with the INVITE (RFC 3261 16.6 step 11).
                    tx.ringing_until = Some(self.now + t.ringing);
                    self.schedule(id, TimerKind::Ringing, t.ringing);
                }
                self.by_branch.insert(branch, id);
                self.apply_client(id, false, steps, "");
            }
        }
    }

    // ----- responses --------------------------------------------------------------------

    fn on_response(&mut self, msg: SipMessage, source: Source) {
        // The top Via is parsed once, for the check and for the branch.
        let top_via = msg.top_via();
        if let Err(reason) = validate_response(&msg, top_via.as_ref()) {
            info!("dropped a response from {}: {reason}", source.remote);
            return;
        }
        let Some(branch) = top_via.as_ref().and_then(|v| v.branch()) else {
            return;
        };
        if !is_our_branch(branch) {
            self.counters.responses_dropped += 1;
            debug!(
                "dropped a response from {} whose top Via is not ours",
                source.remote
            );
            return;
        }
        let Some(&id) = self.by_branch.get(branch) else {
            self.counters.responses_dropped += 1;
            // Never relayed by its Via alone: that would let anyone make Roundabout send
            // to an address of their choosing (RFC 3261 16.11 allows dropping it).
            debug!(
                "dropped a response from {} that matches no transaction",
                source.remote
            );
            return;
        };
        let status = msg.status().unwrap_or(0);
        let t = self.timers;
        let for_cancel = msg.cseq().is_some_and(|(_, m)| m == "CANCEL");
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        // Only the hop the request went to may answer it: the same connection, or the same
        // UDP address and port. Anything else is forged (or misrouted) and goes no further.
        if !tx
            .down
            .as_ref()
            .is_some_and(|d| d.destination.sent_to(&source))
        {
            self.counters.responses_dropped += 1;
            debug!(
                "dropped a {status} from {} {}: its request went elsewhere",
                source.transport, source.remote
            );
            return;
        }
        if for_cancel {
            if let Cancel::Sent(c) = &mut tx.cancel {
                c.on_response(status, &t, &mut Vec::new());
                trace!("absorbed {status} to our CANCEL");
            }
            return self.cleanup(id);
        }
        let Some(down) = tx.down.as_mut() else { return };
        let mut steps = Vec::new();
        let fate = down.tx.on_response(status, &t, &mut steps);
        // Borrowed, not copied: only an ACK for a non-2xx final needs it.
        let response_to = msg.first_value(HeaderName::To).unwrap_or("");
        self.apply_client(id, false, steps, response_to);
        if fate == ResponseFate::Absorb {
            return self.cleanup(id);
        }
        // 503 (ACKed above): the next target of the name, if there is one (RFC 3263 4.3).
        if status == 503 && self.fail_over(id, "503") {
            return;
        }

        if status < 200 {
            self.on_provisional(id, status, &msg, &source);
        } else {
            self.on_final(id, status, &msg, &source);
        }
        self.cleanup(id);
    }

    fn on_provisional(&mut self, id: TxId, status: u16, msg: &SipMessage, source: &Source) {
        let t = self.timers;
        // The next hop answered: a held CANCEL may go now (RFC 3261 9.1).
        self.send_held_cancel(id);
        if status == 100 {
            return; // hop-by-hop; the caller already had our 100
        }
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        // The caller heard this target: no failover to another from now on.
        tx.failover = None;
        if tx.ringing_until.is_some() && !tx.ringing_gave_up {
            // Timer C restarts on every provisional above 100 (16.7 step 2).
            tx.ringing_until = Some(self.now + t.ringing);
            self.queue
                .schedule(self.now + t.ringing, id, TimerKind::Ringing);
        }
        let Some(tx) = self.txs.get(&id) else { return };
        let bytes = self.rewrite_response(tx, msg, source, &mut Vec::new());
        let mut steps = Vec::new();
        if let Some(tx) = self.txs.get_mut(&id) {
            tx.server.provisional(bytes, &mut steps);
        }
        self.apply_server(id, steps);
    }

    fn on_final(&mut self, id: TxId, status: u16, msg: &SipMessage, source: &Source) {
        let t = self.timers;
        let mut bindings = Vec::new();
        let bytes = self.rewrite_response(&self.txs[&id], msg, source, &mut bindings);
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        debug!("{status} for {} -> {}", tx.method, tx.source.remote);
        tx.ringing_until = None;
        let success = (200..300).contains(&status);
        if tx.server.has_final() {
            // Roundabout answered already (408, 480, 503...): a 2xx still goes upstream,
            // on the flow the INVITE came from (16.7 step 5); anything else ends here.
            if success && tx.is_invite() {
                let mut steps = Vec::new();
                if !tx
                    .server
                    .final_response(status, bytes.clone(), false, &t, &mut steps)
                {
                    let dest = tx.source.reply_destination();
                    self.deliver(dest, bytes, None);
                }
                self.apply_server(id, steps);
            }
            return;
        }
        let client = tx.source;
        // A reliable next hop never repeats its 2xx: over UDP to the caller, we must.
        let retransmit_2xx = tx
            .down
            .as_ref()
            .is_some_and(|d| d.destination.transport().is_stream());
        let mut steps = Vec::new();
        tx.server
            .final_response(status, bytes, retransmit_2xx, &t, &mut steps);
        if tx.server.is_retransmitting_2xx() {
            if let (Some(call_id), Some((cseq, _))) = (msg.call_id(), msg.cseq()) {
                self.by_dialog
                    .entry(call_id.to_string())
                    .or_default()
                    .push((cseq, id));
                if let Some(tx) = self.txs.get_mut(&id) {
                    tx.dialog = Some(call_id.into());
                }
            }
        }
        let tx = self.txs.get_mut(&id).expect("present");
        tx.request = None;
        tx.source_via = None;
        tx.register = None;
        // Bindings first: the Registrar hears of them before the client hears its 2xx, so
        // a request the client sends (or the server sends it) right after finds them.
        for change in bindings {
            if change.expires == 0 {
                self.out.push(Action::Unbind {
                    user: change.user,
                    client: change.client,
                    only_flow: None,
                });
            } else {
                self.out.push(Action::Bind {
                    user: change.user,
                    client: change.client.unwrap_or_default(),
                    binding: ClientBinding {
                        contact_uri: change.contact_uri,
                        source: client,
                    },
                    expires: Duration::from_secs(change.expires.into()),
                });
            }
        }
        self.apply_server(id, steps);
    }

    /// The response as it goes upstream: our Via off, the Contact rewritten for the
    /// caller's side, a REGISTER's Contacts restored (and the bindings it confirms).
    fn rewrite_response(
        &self,
        tx: &ProxyTx,
        msg: &SipMessage,
        source: &Source,
        bindings: &mut Vec<RegistrationChange>,
    ) -> Bytes {
        let status = msg.status().unwrap_or(0);
        let mut rw = Rewrite::default();
        rewrite::remove_first_values(msg, HeaderName::Via, 1, &mut rw);
        match &tx.register {
            Some(reg) if (200..300).contains(&status) => {
                let granted =
                    rewrite::restore_register_contacts(msg, &mut rw, &self.local, &reg.contacts);
                *bindings = registration_changes(
                    reg,
                    &granted,
                    msg.first_value(HeaderName::Contact).is_some(),
                );
            }
            Some(_) => {}
            None if status < 300 => {
                rewrite::rewrite_dialog_contact(
                    msg,
                    &mut rw,
                    &self.local,
                    tx.source.transport,
                    source,
                    &self.tokens,
                );
            }
            None => {}
        }
        msg.render(&rw)
    }

    // ----- steps of the machines --------------------------------------------------------

    fn apply_server(&mut self, id: TxId, steps: Vec<ServerStep>) {
        if steps.is_empty() {
            return;
        }
        let Some(tx) = self.txs.get(&id) else { return };
        let dest = tx.source.reply_destination();
        for step in steps {
            match step {
                ServerStep::Send(bytes) => self.deliver(dest.clone(), bytes, None),
                ServerStep::Schedule(timer, after) => {
                    self.schedule(id, TimerKind::Server(timer), after)
                }
            }
        }
    }

    /// `cancel`: the steps are the CANCEL's client transaction's. `response_to`: the To of
    /// the response being ACKed.
    fn apply_client(&mut self, id: TxId, cancel: bool, steps: Vec<ClientStep>, response_to: &str) {
        if steps.is_empty() {
            return;
        }
        let Some(down) = self.txs.get(&id).and_then(|tx| tx.down.as_ref()) else {
            return;
        };
        let dest = down.destination.clone();
        let ack = steps
            .contains(&ClientStep::Ack)
            .then(|| down.hop.ack(response_to));
        for step in steps {
            match step {
                // Failures of the request itself are reported (503, 480); of a CANCEL not.
                ClientStep::Send(bytes) => {
                    self.deliver(dest.clone(), bytes, (!cancel).then_some(id))
                }
                ClientStep::Ack => {
                    if let Some(a) = ack.clone() {
                        self.deliver(dest.clone(), a, None)
                    }
                }
                ClientStep::Schedule(timer, after) => {
                    let kind = if cancel {
                        TimerKind::Cancel(timer)
                    } else {
                        TimerKind::Client(timer)
                    };
                    self.schedule(id, kind, after)
                }
            }
        }
    }

    // ----- timers and endings -----------------------------------------------------------

    fn on_tick(&mut self) {
        let t = self.timers;
        for (id, kind) in self.queue.due(self.now) {
            let Some(tx) = self.txs.get_mut(&id) else {
                continue;
            };
            match kind {
                TimerKind::Server(timer) => {
                    let mut steps = Vec::new();
                    tx.server.on_timer(timer, &t, &mut steps);
                    self.apply_server(id, steps);
                }
                TimerKind::Client(timer) => {
                    let Some(down) = tx.down.as_mut() else {
                        continue;
                    };
                    let mut steps = Vec::new();
                    let timed_out = down.tx.on_timer(timer, &t, &mut steps);
                    self.apply_client(id, false, steps, "");
                    if timed_out {
                        self.on_client_timeout(id);
                    }
                }
                TimerKind::Cancel(timer) => {
                    let Cancel::Sent(c) = &mut tx.cancel else {
                        continue;
                    };
                    let mut steps = Vec::new();
                    c.on_timer(timer, &t, &mut steps);
                    self.apply_client(id, true, steps, "");
                }
                TimerKind::Ringing => self.on_timer_c(id),
            }
            self.cleanup(id);
        }
    }

    /// Timer B or F: the next hop never answered.
    fn on_client_timeout(&mut self, id: TxId) {
        if self.fail_over(id, "no answer (Timer B/F)") {
            return;
        }
        let Some(tx) = self.txs.get(&id) else { return };
        info!(
            "{} {} timed out at {:?}",
            tx.method,
            tx.down.as_ref().map_or("", |d| d.hop.request_uri.as_str()),
            tx.down.as_ref().map(|d| d.destination.to_string())
        );
        // A caller that cancelled has its 200 for the CANCEL; it expects 487.
        if matches!(tx.cancel, Cancel::Held) {
            self.respond_locally(id, 487, "Request Terminated");
        } else {
            self.respond_locally(id, 408, "Request Timeout");
        }
    }

    /// Timer C (RFC 3261 16.8): a ringing INVITE that never ends is cancelled downstream and
    /// the 487 that comes back goes upstream; only if the next hop stays silent for 64*T1
    /// more does Roundabout answer 408 itself.
    fn on_timer_c(&mut self, id: TxId) {
        let t = self.timers;
        let now = self.now;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let Some(until) = tx.ringing_until else {
            return;
        };
        if now < until || tx.server.has_final() {
            return; // restarted by a later provisional, or over
        }
        let Some(down) = tx.down.as_mut() else { return };
        if tx.ringing_gave_up || !down.tx.heard_back() {
            // Silent after our CANCEL, or nothing ever came: as if a 408 arrived.
            info!("{} {} timed out (Timer C)", tx.method, down.hop.request_uri);
            let mut steps = Vec::new();
            down.tx.abandon(&t, &mut steps);
            tx.ringing_until = None;
            if matches!(tx.cancel, Cancel::None) {
                tx.cancel = Cancel::Held; // sent if it still answers provisionally
            }
            self.apply_client(id, false, steps, "");
            return self.respond_locally(id, 408, "Request Timeout");
        }
        debug!("Timer C: cancelling {}", down.hop.request_uri);
        tx.ringing_gave_up = true;
        tx.ringing_until = Some(now + t.transaction);
        self.schedule(id, TimerKind::Ringing, t.transaction);
        let tx = self.txs.get_mut(&id).expect("present");
        if matches!(tx.cancel, Cancel::None) {
            tx.cancel = Cancel::Held;
        }
        self.send_held_cancel(id);
    }

    fn on_delivery_failed(&mut self, id: TxId, error: DeliveryError) {
        let live = self.txs.get(&id).is_some_and(|tx| {
            !tx.server.has_final() && tx.down.as_ref().is_some_and(|d| !d.tx.is_terminated())
        });
        if live
            && error == DeliveryError::Unreachable
            && self.fail_over(id, "refused or unreachable")
        {
            return;
        }
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let Some(down) = tx.down.as_mut() else { return };
        if down.tx.is_terminated() || tx.server.has_final() {
            return;
        }
        down.tx.terminate();
        match error {
            DeliveryError::FlowGone => {
                // The client's connection is gone: its binding on that connection is useless
                // (a newer registration on another connection stays).
                if let Destination::Flow { flow, .. } = down.destination {
                    if let Some(user) = SipUri::parse(&down.hop.request_uri)
                        .ok()
                        .and_then(|u| u.user.map(String::from))
                    {
                        self.out.push(Action::Unbind {
                            user,
                            client: None,
                            only_flow: Some(flow),
                        });
                    }
                }
                self.respond_locally(id, 480, "Temporarily Unavailable")
            }
            DeliveryError::Unreachable => self.respond_locally(id, 503, "Service Unavailable"),
        }
        self.cleanup(id);
    }

    /// Failover (issue 15, RFC 3263 section 4.3): the next hop failed (`reason`) before any
    /// provisional above 100. Tells the ServerTable (it tries that target last for a while)
    /// and, when the name had other targets, sends the request to the next one, as a new
    /// client transaction under a new id: the old attempt's timers and failure notices,
    /// keyed by the old id, then find nothing. Returns false (the caller then answers as
    /// before) when there is no failover state, nothing left to try, a final was sent or
    /// the caller cancelled.
    fn fail_over(&mut self, id: TxId, reason: &'static str) -> bool {
        let Some(tx) = self.txs.get_mut(&id) else {
            return false;
        };
        let (Some(f), Some(down)) = (tx.failover.as_mut(), tx.down.as_ref()) else {
            return false;
        };
        self.out.push(Action::TargetFailed {
            destination: down.destination.clone(),
            reason,
        });
        if f.alternates.is_empty() || tx.server.has_final() || !matches!(tx.cancel, Cancel::None) {
            return false;
        }
        let next = f.alternates.remove(0);
        info!(
            "{} {}: {} failed ({reason}), trying {next}",
            tx.method, down.hop.request_uri, down.destination
        );
        let pending = Pending {
            job: Job::Tx(id), // replaced below
            request_uri: f.request_uri.clone(),
            our_routes: f.our_routes,
            routes: f.routes.clone(),
            alternates: Vec::new(),
            fallback: None,
        };
        let Some(mut tx) = self.txs.remove(&id) else {
            return false;
        };
        if let Some(old) = tx.down.take() {
            self.by_branch.remove(&old.branch);
        }
        let new_id = self.next_id;
        self.next_id += 1;
        self.by_key.insert(tx.key.clone(), new_id);
        self.txs.insert(new_id, tx);
        self.forward(
            next,
            Pending {
                job: Job::Tx(new_id),
                ..pending
            },
        );
        true
    }

    /// Forgets a transaction once both sides are over.
    fn cleanup(&mut self, id: TxId) {
        if self.txs.get(&id).is_some_and(|tx| tx.is_over()) {
            self.forget(id);
        }
    }

    /// Ends the 2xx retransmissions of the INVITEs of `call_id` that `which` picks (by CSeq
    /// number and transaction), as their ACK would.
    fn stop_2xx_retransmissions(&mut self, call_id: &str, which: impl Fn(u32, &ProxyTx) -> bool) {
        let Some(entries) = self.by_dialog.get_mut(call_id) else {
            return;
        };
        let t = self.timers;
        entries.retain(|&(cseq, id)| match self.txs.get_mut(&id) {
            Some(tx) if which(cseq, tx) => {
                tx.server.ack(&t, &mut Vec::new());
                tx.dialog = None;
                false
            }
            Some(_) => true,
            None => false,
        });
        if entries.is_empty() {
            self.by_dialog.remove(call_id);
        }
    }

    fn forget(&mut self, id: TxId) {
        if let Some(tx) = self.txs.remove(&id) {
            self.budget.give_back();
            self.by_key.remove(&tx.key);
            if let Some(d) = &tx.down {
                self.by_branch.remove(&d.branch);
            }
            if let Some(call_id) = &tx.dialog {
                if let Some(entries) = self.by_dialog.get_mut(&**call_id) {
                    entries.retain(|&(_, t)| t != id);
                    if entries.is_empty() {
                        self.by_dialog.remove(&**call_id);
                    }
                }
            }
        }
    }
}

/// One client's registration as a 2xx confirmed (expires > 0) or ended (0) it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RegistrationChange {
    user: String,
    /// The client token; `None`: every binding of `user` (`Contact: *`).
    client: Option<String>,
    contact_uri: String,
    expires: u32,
}

/// The bindings a 2xx to REGISTER confirms or ends.
fn registration_changes(
    reg: &RegisterContext,
    granted: &[(String, Option<u32>)],
    response_lists_contacts: bool,
) -> Vec<RegistrationChange> {
    let mut out = Vec::new();
    if let Some(user) = &reg.wildcard_user {
        out.push(RegistrationChange {
            user: user.clone(),
            client: None,
            contact_uri: String::new(),
            expires: 0,
        });
    }
    for c in &reg.contacts {
        let expires = match granted.iter().find(|(client, _)| *client == c.client) {
            Some((_, e)) => e.or(reg.requested_expires).unwrap_or(DEFAULT_EXPIRES),
            // Not listed in the 2xx: the server no longer has it. A server that lists no
            // Contact at all (non-compliant) is taken at the request's word.
            None if response_lists_contacts => 0,
            None => reg.requested_expires.unwrap_or(DEFAULT_EXPIRES),
        };
        out.push(RegistrationChange {
            user: c.user.clone(),
            client: Some(c.client.clone()),
            contact_uri: c.original_uri.clone(),
            expires,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    //! Each rule of RFC 3261 16/17 (and RFC 6026) the core owns, on a fake clock: events in,
    //! the exact actions out. No socket, no actor, no sleeping.
    use super::*;
    use crate::sip::Transport;

    const SERVER: &str = "198.51.100.2:5060";

    struct Harness {
        core: ProxyCore,
        t0: Instant,
        now: Instant,
    }

    fn udp_caller() -> Source {
        Source {
            transport: Transport::Udp,
            remote: "192.0.2.1:5060".parse().unwrap(),
            flow: FlowId::UDP,
        }
    }

    fn tcp_caller() -> Source {
        Source {
            transport: Transport::Tcp,
            remote: "192.0.2.1:40000".parse().unwrap(),
            flow: FlowId(7),
        }
    }

    fn server(t: Transport) -> Destination {
        Destination::Address {
            transport: t,
            addr: SERVER.parse().unwrap(),
            tls_name: None,
        }
    }

    fn server_source(t: Transport) -> Source {
        Source {
            transport: t,
            remote: SERVER.parse().unwrap(),
            flow: if t.is_stream() {
                FlowId(9)
            } else {
                FlowId::UDP
            },
        }
    }

    fn request(method: &str, branch: &str, extra: &str) -> SipMessage {
        SipMessage::parse(Bytes::from(format!(
            "{method} sip:bob@198.51.100.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@192.0.2.1>;tag=a1\r\nTo: <sip:bob@198.51.100.2>{extra}\r\n\
             Call-ID: call1\r\nCSeq: 1 {method}\r\nContact: <sip:alice@192.0.2.1:5060>\r\n\
             Content-Length: 0\r\n\r\n"
        )))
        .unwrap()
    }

    fn invite() -> SipMessage {
        request("INVITE", "z9hG4bK-c1", "")
    }

    /// A response from the next hop to a request Roundabout forwarded (`sent`).
    fn response_to(sent: &Bytes, status: u16, to_tag: Option<&str>) -> SipMessage {
        let m = SipMessage::parse(sent.clone()).unwrap();
        let mut s = format!("SIP/2.0 {status} Whatever\r\n");
        for v in m.values(HeaderName::Via) {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        let to = m.first_value(HeaderName::To).unwrap();
        let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        s.push_str(&format!(
            "From: {}\r\nTo: {to}{tag}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nContent-Length: 0\r\n\r\n",
            m.first_value(HeaderName::From).unwrap(),
            m.call_id().unwrap(),
            m.cseq().unwrap().0,
            m.cseq().unwrap().1,
        ));
        SipMessage::parse(Bytes::from(s)).unwrap()
    }

    impl Harness {
        fn new() -> Harness {
            let mut config = Config::default();
            config.limits.ringing_timeout = Duration::from_secs(181);
            let t0 = Instant::now();
            Harness {
                core: ProxyCore::new(
                    &config,
                    TokenKey::default(),
                    0,
                    TransactionBudget::new(config.limits.max_transactions),
                ),
                t0,
                now: t0,
            }
        }

        fn at(&mut self, after: Duration) {
            self.now = self.t0 + after;
        }

        fn feed(&mut self, e: Event) -> Vec<Action> {
            self.core.handle(e, self.now)
        }

        fn tick_at(&mut self, after: Duration) -> Vec<Action> {
            self.at(after);
            self.feed(Event::Tick)
        }

        fn caller_sends(&mut self, m: SipMessage, src: Source) -> Vec<Action> {
            self.feed(Event::Message(m, src))
        }

        /// Answers every Resolve with `to`; returns all actions.
        fn resolved(&mut self, actions: Vec<Action>, to: &Destination) -> Vec<Action> {
            let mut out = Vec::new();
            for a in actions {
                if let Action::Resolve { job, .. } = a {
                    out.extend(self.feed(Event::Decided(
                        job,
                        Decision::Forward {
                            destination: to.clone(),
                            request_uri: None,
                            routes: Vec::new(),
                            alternates: Vec::new(),
                        },
                    )));
                } else {
                    out.push(a);
                }
            }
            out
        }

        /// INVITE from `caller` forwarded to a server on `t`: the bytes sent there.
        fn call(&mut self, caller: Source, t: Transport) -> Bytes {
            let a = self.caller_sends(invite(), caller);
            let a = self.resolved(a, &server(t));
            assert_eq!(statuses_to(&a, &caller.reply_destination()), [100]);
            sent_to(&a, &server(t)).remove(0)
        }
    }

    /// The bytes delivered to `dest`, in order.
    fn sent_to(actions: &[Action], dest: &Destination) -> Vec<Bytes> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Deliver {
                    destination, bytes, ..
                } if destination == dest => Some(bytes.clone()),
                _ => None,
            })
            .collect()
    }

    fn statuses_to(actions: &[Action], dest: &Destination) -> Vec<u16> {
        sent_to(actions, dest)
            .into_iter()
            .filter_map(|b| SipMessage::parse(b).ok()?.status())
            .collect()
    }

    fn methods_to(actions: &[Action], dest: &Destination) -> Vec<String> {
        sent_to(actions, dest)
            .into_iter()
            .filter_map(|b| {
                let m = SipMessage::parse(b).ok()?;
                m.is_request().then(|| m.method().to_string())
            })
            .collect()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(s: u64) -> Duration {
        Duration::from_millis(s)
    }

    #[test]
    fn invite_gets_100_and_is_forwarded_with_timer_a_until_a_provisional() {
        let mut h = Harness::new();
        let sent = h.call(udp_caller(), Transport::Udp);
        let s = server(Transport::Udp);
        assert_eq!(methods_to(&h.tick_at(ms(500)), &s), ["INVITE"]);
        assert_eq!(methods_to(&h.tick_at(ms(1500)), &s), ["INVITE"]);
        h.at(ms(1600));
        let a = h.feed(Event::Message(
            response_to(&sent, 100, None),
            server_source(Transport::Udp),
        ));
        assert!(a.is_empty(), "100 is hop by hop: {a:?}");
        assert!(
            h.tick_at(ms(3500)).is_empty(),
            "Timer A stops on a provisional"
        );
    }

    #[test]
    fn timer_b_answers_408_when_nothing_comes_back() {
        let mut h = Harness::new();
        h.call(tcp_caller(), Transport::Tcp);
        assert!(h.tick_at(secs(31)).is_empty());
        let a = h.tick_at(secs(32));
        assert_eq!(statuses_to(&a, &tcp_caller().reply_destination()), [408]);
        assert_eq!(h.core.counts().in_flight, 0);
    }

    #[test]
    fn retransmitted_invite_gets_the_latest_provisional_not_a_new_100() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let sent = h.call(caller, Transport::Udp);
        assert_eq!(
            statuses_to(
                &h.caller_sends(invite(), caller),
                &caller.reply_destination()
            ),
            [100]
        );
        let a = h.feed(Event::Message(
            response_to(&sent, 180, Some("b1")),
            server_source(Transport::Udp),
        ));
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [180]);
        let a = h.caller_sends(invite(), caller);
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [180]);
        assert!(
            sent_to(&a, &server(Transport::Udp)).is_empty(),
            "not forwarded twice"
        );
    }

    #[test]
    fn timer_c_restarts_on_every_provisional_then_cancels_and_forwards_the_487() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let s = server(Transport::Tcp);
        let sent = h.call(caller, Transport::Tcp);
        let from_server = |h: &mut Harness, status: u16| {
            h.feed(Event::Message(
                response_to(&sent, status, Some("b1")),
                server_source(Transport::Tcp),
            ))
        };
        h.at(secs(1));
        from_server(&mut h, 180);
        h.at(secs(100));
        from_server(&mut h, 183);
        assert!(h.tick_at(secs(182)).is_empty(), "restarted by the 183");
        let a = h.tick_at(secs(281));
        assert_eq!(methods_to(&a, &s), ["CANCEL"]);
        assert!(
            statuses_to(&a, &caller.reply_destination()).is_empty(),
            "no 408 yet"
        );
        h.at(secs(282));
        let a = from_server(&mut h, 487);
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [487]);
        assert_eq!(methods_to(&a, &s), ["ACK"], "the 487 is ACKed hop by hop");
        // Later, only the 487 again (Timer G, the caller never ACKed): never a 408.
        let later = statuses_to(&h.tick_at(secs(400)), &caller.reply_destination());
        assert!(
            !later.is_empty() && later.iter().all(|&s| s == 487),
            "{later:?}"
        );
        assert_eq!(
            (h.core.counts().transactions, h.core.counts().in_flight),
            (0, 0)
        );
    }

    #[test]
    fn timer_c_with_a_silent_next_hop_answers_408_and_a_late_2xx_still_goes_upstream() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let s = server(Transport::Udp);
        let sent = h.call(caller, Transport::Udp);
        h.at(secs(1));
        h.feed(Event::Message(
            response_to(&sent, 180, Some("b1")),
            server_source(Transport::Udp),
        ));
        let a = h.tick_at(secs(182));
        assert_eq!(methods_to(&a, &s), ["CANCEL"]);
        // The CANCEL is its own client transaction: retransmitted over UDP (Timer E).
        assert_eq!(methods_to(&h.tick_at(ms(182_500)), &s), ["CANCEL"]);
        let a = h.tick_at(secs(182 + 32));
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [408]);
        // Then the callee answers after all: 16.7 step 5, the 2xx goes upstream...
        h.at(secs(215));
        let a = h.feed(Event::Message(
            response_to(&sent, 200, Some("b1")),
            server_source(Transport::Udp),
        ));
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [200]);
        // ...and Roundabout never ACKs a 2xx itself.
        assert!(methods_to(&a, &s).is_empty(), "{a:?}");
    }

    #[test]
    fn cancel_is_held_until_a_provisional_and_retransmitted_as_its_own_transaction() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let s = server(Transport::Udp);
        let sent = h.call(caller, Transport::Udp);
        h.at(ms(100));
        let a = h.caller_sends(request("CANCEL", "z9hG4bK-c1", ""), caller);
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [200]);
        assert!(
            methods_to(&a, &s).is_empty(),
            "no CANCEL before a provisional (9.1)"
        );
        // The INVITE is still retransmitted meanwhile.
        assert_eq!(methods_to(&h.tick_at(ms(500)), &s), ["INVITE"]);
        h.at(ms(600));
        let a = h.feed(Event::Message(
            response_to(&sent, 100, None),
            server_source(Transport::Udp),
        ));
        let cancels = sent_to(&a, &s);
        assert_eq!(methods_to(&a, &s), ["CANCEL"]);
        let cancel = SipMessage::parse(cancels[0].clone()).unwrap();
        let invite_sent = SipMessage::parse(sent.clone()).unwrap();
        assert_eq!(
            cancel.top_via().unwrap().branch(),
            invite_sent.top_via().unwrap().branch(),
            "same branch as the INVITE"
        );
        assert_eq!(cancel.request_uri(), invite_sent.request_uri());
        // Timer E, then the 200 for the CANCEL stops it.
        assert_eq!(methods_to(&h.tick_at(ms(1100)), &s), ["CANCEL"]);
        h.at(ms(1200));
        let a = h.feed(Event::Message(
            response_to(&cancels[0], 200, Some("b1")),
            server_source(Transport::Udp),
        ));
        assert!(a.is_empty(), "the 200 for our CANCEL ends here: {a:?}");
        assert!(methods_to(&h.tick_at(ms(2200)), &s).is_empty());
        let a = h.feed(Event::Message(
            response_to(&sent, 487, Some("b1")),
            server_source(Transport::Udp),
        ));
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [487]);
    }

    #[test]
    fn cancel_while_resolving_is_answered_487_and_nothing_is_sent() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let resolve = h.caller_sends(invite(), caller);
        let a = h.caller_sends(request("CANCEL", "z9hG4bK-c1", ""), caller);
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [200]);
        let a = h.resolved(resolve, &server(Transport::Udp));
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [100, 487]);
        assert!(sent_to(&a, &server(Transport::Udp)).is_empty());
    }

    #[test]
    fn cancel_without_transaction_is_forwarded_statelessly() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let a = h.caller_sends(request("CANCEL", "z9hG4bK-unknown", ""), caller);
        assert!(
            statuses_to(&a, &caller.reply_destination()).is_empty(),
            "no 481: {a:?}"
        );
        let a = h.resolved(a, &server(Transport::Udp));
        assert_eq!(methods_to(&a, &server(Transport::Udp)), ["CANCEL"]);
        assert_eq!(
            (h.core.counts().transactions, h.core.counts().in_flight),
            (0, 0),
            "no transaction made"
        );
    }

    #[test]
    fn non_2xx_final_is_acked_downstream_and_the_callers_ack_absorbed() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let s = server(Transport::Udp);
        let sent = h.call(caller, Transport::Udp);
        let a = h.feed(Event::Message(
            response_to(&sent, 486, Some("b1")),
            server_source(Transport::Udp),
        ));
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [486]);
        assert_eq!(methods_to(&a, &s), ["ACK"]);
        // Over UDP the 486 is retransmitted to the caller until its ACK (Timer G).
        assert_eq!(
            statuses_to(&h.tick_at(ms(500)), &caller.reply_destination()),
            [486]
        );
        let a = h.caller_sends(request("ACK", "z9hG4bK-c1", ";tag=b1"), caller);
        assert!(a.is_empty(), "hop-by-hop ACK absorbed: {a:?}");
        assert!(h.tick_at(ms(1500)).is_empty(), "Timer G stops");
        // A retransmitted 486 from downstream is ACKed again, not forwarded.
        let a = h.feed(Event::Message(
            response_to(&sent, 486, Some("b1")),
            server_source(Transport::Udp),
        ));
        assert_eq!(methods_to(&a, &s), ["ACK"]);
        assert!(statuses_to(&a, &caller.reply_destination()).is_empty());
    }

    #[test]
    fn ack_for_a_final_made_without_transaction_is_absorbed() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let mut text = String::from_utf8(invite().raw().to_vec()).unwrap();
        text = text.replace("Max-Forwards: 70", "Max-Forwards: 0");
        let a = h.caller_sends(SipMessage::parse(Bytes::from(text)).unwrap(), caller);
        let answer = sent_to(&a, &caller.reply_destination());
        let answer = SipMessage::parse(answer[0].clone()).unwrap();
        assert_eq!(answer.status(), Some(483));
        let tag = crate::proxy::rewrite::to_tag(&answer).unwrap().to_string();
        let ack = request("ACK", "z9hG4bK-c1", &format!(";tag={tag}"));
        assert!(
            h.caller_sends(ack, caller).is_empty(),
            "absorbed, not routed"
        );
        // Positive control: an ACK with someone else's tag goes on (end to end).
        let ack = request("ACK", "z9hG4bK-c2", ";tag=callee");
        let a = h.caller_sends(ack, caller);
        assert!(matches!(a[..], [Action::Resolve { .. }]), "{a:?}");
    }

    #[test]
    fn a_2xx_from_a_reliable_next_hop_is_retransmitted_to_a_udp_caller_until_its_ack() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let up = caller.reply_destination();
        let sent = h.call(caller, Transport::Tcp);
        h.at(secs(1));
        let a = h.feed(Event::Message(
            response_to(&sent, 200, Some("b1")),
            server_source(Transport::Tcp),
        ));
        assert_eq!(statuses_to(&a, &up), [200]);
        let mut got = Vec::new();
        for t in [1500, 2500, 4500, 8500, 12500] {
            got.push(statuses_to(&h.tick_at(ms(t)), &up).len());
        }
        assert_eq!(got, [1, 1, 1, 1, 1], "at T1, 2T1, 4T1, then every T2");
        // The caller's ACK (a new branch) stops it, and goes on end to end.
        h.at(ms(13000));
        let a = h.caller_sends(request("ACK", "z9hG4bK-c9", ";tag=b1"), caller);
        assert!(matches!(a[..], [Action::Resolve { .. }]), "{a:?}");
        assert!(statuses_to(&h.tick_at(ms(16500)), &up).is_empty());
        assert!(statuses_to(&h.tick_at(ms(20500)), &up).is_empty());
    }

    #[test]
    fn a_bye_of_the_call_from_its_own_end_stops_the_2xx_retransmission_a_strangers_does_not() {
        // The caller's ACK was lost; its BYE (or the callee's) says the call is over.
        for bye_from_caller in [true, false] {
            let mut h = Harness::new();
            let caller = udp_caller();
            let up = caller.reply_destination();
            let sent = h.call(caller, Transport::Tcp);
            h.at(secs(1));
            h.feed(Event::Message(
                response_to(&sent, 200, Some("b1")),
                server_source(Transport::Tcp),
            ));
            assert_eq!(statuses_to(&h.tick_at(ms(1500)), &up), [200]);
            let stranger = Source {
                remote: "203.0.113.66:5060".parse().unwrap(),
                ..caller
            };
            h.caller_sends(request("BYE", "z9hG4bK-x1", ";tag=b1"), stranger);
            assert_eq!(
                statuses_to(&h.tick_at(ms(2500)), &up),
                [200],
                "a stranger's BYE"
            );
            let end = if bye_from_caller {
                caller
            } else {
                server_source(Transport::Tcp)
            };
            h.caller_sends(request("BYE", "z9hG4bK-b2", ";tag=b1"), end);
            for t in [4500, 8500, 12500] {
                assert!(statuses_to(&h.tick_at(ms(t)), &up).is_empty(), "at {t} ms");
            }
        }
    }

    #[test]
    fn a_2xx_retransmission_is_never_started_for_a_udp_next_hop_or_reliable_caller() {
        let mut h = Harness::new();
        let sent = h.call(udp_caller(), Transport::Udp);
        h.feed(Event::Message(
            response_to(&sent, 200, Some("b1")),
            server_source(Transport::Udp),
        ));
        assert!(statuses_to(&h.tick_at(ms(500)), &udp_caller().reply_destination()).is_empty());
        let mut h = Harness::new();
        let sent = h.call(tcp_caller(), Transport::Tcp);
        h.feed(Event::Message(
            response_to(&sent, 200, Some("b1")),
            server_source(Transport::Tcp),
        ));
        assert!(statuses_to(&h.tick_at(ms(500)), &tcp_caller().reply_destination()).is_empty());
    }

    #[test]
    fn accepted_2xx_retransmissions_go_back_on_the_callers_flow_for_64_t1() {
        let mut h = Harness::new();
        let caller = tcp_caller();
        let up = caller.reply_destination();
        assert!(matches!(
            up,
            Destination::Flow {
                flow: FlowId(7),
                ..
            }
        ));
        let sent = h.call(caller, Transport::Udp);
        let ok = || response_to(&sent, 200, Some("b1"));
        assert_eq!(
            statuses_to(
                &h.feed(Event::Message(ok(), server_source(Transport::Udp))),
                &up
            ),
            [200]
        );
        h.at(ms(500));
        assert_eq!(
            statuses_to(
                &h.feed(Event::Message(ok(), server_source(Transport::Udp))),
                &up
            ),
            [200]
        );
        h.at(secs(31));
        assert_eq!(
            statuses_to(
                &h.feed(Event::Message(ok(), server_source(Transport::Udp))),
                &up
            ),
            [200]
        );
        h.tick_at(secs(33));
        assert_eq!(
            (h.core.counts().transactions, h.core.counts().in_flight),
            (0, 0),
            "gone after Timer L/M"
        );
        h.at(secs(34));
        let a = h.feed(Event::Message(ok(), server_source(Transport::Udp)));
        assert!(a.is_empty(), "never relayed by its Via alone: {a:?}");
    }

    #[test]
    fn non_invite_timer_e_then_f_answers_408() {
        let mut h = Harness::new();
        let caller = tcp_caller();
        let s = server(Transport::Udp);
        let a = h.caller_sends(request("MESSAGE", "z9hG4bK-m1", ""), caller);
        let a = h.resolved(a, &s);
        assert_eq!(methods_to(&a, &s), ["MESSAGE"]);
        let mut at = 0;
        let mut count = 0;
        for step in [500, 1000, 2000, 4000, 4000, 4000] {
            at += step;
            count += methods_to(&h.tick_at(ms(at)), &s).len();
        }
        assert_eq!(count, 6);
        let a = h.tick_at(secs(32));
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [408]);
    }

    #[test]
    fn a_gone_flow_unbinds_only_that_flows_binding_and_answers_480() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let client = Destination::Flow {
            flow: FlowId(42),
            transport: Transport::Ws,
            remote: "192.0.2.9:50000".parse().unwrap(),
        };
        let a = h.caller_sends(invite(), caller);
        let a = h.resolved(a, &client);
        assert_eq!(sent_to(&a, &client).len(), 1);
        let id = a
            .iter()
            .find_map(|a| match a {
                Action::Deliver {
                    notify: Some(id), ..
                } => Some(*id),
                _ => None,
            })
            .expect("the INVITE asks to hear of failures");
        let a = h.feed(Event::DeliveryFailed(id, DeliveryError::FlowGone));
        assert!(a.contains(&Action::Unbind {
            user: "bob".into(),
            client: None,
            only_flow: Some(FlowId(42))
        }));
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [480]);
    }

    /// Answers the Resolve among `actions` with `decision` (issue 15's tests).
    fn decided(h: &mut Harness, actions: Vec<Action>, decision: Decision) -> Vec<Action> {
        let mut out = Vec::new();
        for a in actions {
            match a {
                Action::Resolve { job, .. } => {
                    out.extend(h.feed(Event::Decided(job, decision.clone())))
                }
                other => out.push(other),
            }
        }
        out
    }

    fn other_server(t: Transport) -> Destination {
        Destination::Address {
            transport: t,
            addr: "198.51.100.77:5060".parse().unwrap(),
            tls_name: None,
        }
    }

    fn failed_targets(actions: &[Action]) -> Vec<(Destination, &'static str)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::TargetFailed {
                    destination,
                    reason,
                } => Some((destination.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    fn with_alternate(t: Transport) -> Decision {
        Decision::Forward {
            destination: server(t),
            request_uri: None,
            routes: Vec::new(),
            alternates: vec![other_server(t)],
        }
    }

    #[test]
    fn route_list_goes_on_top_and_the_cancel_carries_it() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let proxy = server(Transport::Udp);
        let a = h.caller_sends(invite(), caller);
        let routes = vec![
            "<sip:198.51.100.9:5060;transport=udp;lr>".to_string(),
            "<sip:198.51.100.10:5060;transport=udp;lr>".to_string(),
        ];
        let a = decided(
            &mut h,
            a,
            Decision::Forward {
                destination: proxy.clone(),
                request_uri: None,
                routes,
                alternates: Vec::new(),
            },
        );
        let sent = sent_to(&a, &proxy).remove(0);
        let text = String::from_utf8_lossy(&sent).to_string();
        assert!(
            text.starts_with("INVITE sip:bob@198.51.100.2 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Route: <sip:198.51.100.9:5060;transport=udp;lr>, \
                 <sip:198.51.100.10:5060;transport=udp;lr>\r\n"
            ),
            "{text}"
        );
        h.feed(Event::Message(
            response_to(&sent, 180, Some("b1")),
            server_source(Transport::Udp),
        ));
        let a = h.caller_sends(request("CANCEL", "z9hG4bK-c1", ""), caller);
        let cancel = sent_to(&a, &proxy)
            .into_iter()
            .find(|b| b.starts_with(b"CANCEL"))
            .expect("CANCEL sent");
        assert!(
            String::from_utf8_lossy(&cancel).contains("Route: <sip:198.51.100.9:5060"),
            "{}",
            String::from_utf8_lossy(&cancel)
        );
    }

    #[test]
    fn a_refused_target_fails_over_to_the_next_before_the_caller_hears_of_it() {
        let mut h = Harness::new();
        let caller = tcp_caller();
        let a = h.caller_sends(invite(), caller);
        let a = decided(&mut h, a, with_alternate(Transport::Tcp));
        let first = sent_to(&a, &server(Transport::Tcp)).remove(0);
        let Some(Action::Deliver {
            notify: Some(id), ..
        }) = a.iter().find(|a| {
            matches!(
                a,
                Action::Deliver {
                    notify: Some(_),
                    ..
                }
            )
        })
        else {
            panic!("{a:?}")
        };
        let a = h.feed(Event::DeliveryFailed(*id, DeliveryError::Unreachable));
        assert_eq!(
            failed_targets(&a),
            [(server(Transport::Tcp), "refused or unreachable")]
        );
        assert!(
            statuses_to(&a, &caller.reply_destination()).is_empty(),
            "{a:?}"
        );
        let second = sent_to(&a, &other_server(Transport::Tcp)).remove(0);
        // A new client transaction: a new branch, the same request.
        let via = |b: &Bytes| {
            SipMessage::parse(b.clone())
                .unwrap()
                .first_value(HeaderName::Via)
                .unwrap()
                .to_string()
        };
        assert_ne!(via(&first), via(&second));
        // The second one answers: its 200 goes to the caller.
        let a = h.feed(Event::Message(
            response_to(&second, 200, Some("b2")),
            Source {
                transport: Transport::Tcp,
                remote: "198.51.100.77:5060".parse().unwrap(),
                flow: FlowId(12),
            },
        ));
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [200]);
        // The first attempt's Timer B, long after, finds nothing.
        assert!(statuses_to(&h.tick_at(secs(40)), &caller.reply_destination()).is_empty());
    }

    #[test]
    fn timer_b_and_503_fail_over_and_the_last_target_answers_the_caller() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let a = h.caller_sends(invite(), caller);
        let a = decided(&mut h, a, with_alternate(Transport::Udp));
        assert_eq!(sent_to(&a, &server(Transport::Udp)).len(), 1);
        // Nothing from the first target: Timer B moves the request to the second.
        let a = h.tick_at(secs(32));
        assert_eq!(
            failed_targets(&a),
            [(server(Transport::Udp), "no answer (Timer B/F)")]
        );
        assert!(statuses_to(&a, &caller.reply_destination()).is_empty());
        let second = sent_to(&a, &other_server(Transport::Udp)).remove(0);
        // The second answers 503: ACKed, reported, and (nothing left) sent upstream.
        let a = h.feed(Event::Message(
            response_to(&second, 503, Some("x")),
            Source {
                transport: Transport::Udp,
                remote: "198.51.100.77:5060".parse().unwrap(),
                flow: FlowId::UDP,
            },
        ));
        assert_eq!(methods_to(&a, &other_server(Transport::Udp)), ["ACK"]);
        assert_eq!(failed_targets(&a), [(other_server(Transport::Udp), "503")]);
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [503]);
    }

    #[test]
    fn a_ringing_target_is_kept_even_if_it_fails_later() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let a = h.caller_sends(invite(), caller);
        let a = decided(&mut h, a, with_alternate(Transport::Udp));
        let sent = sent_to(&a, &server(Transport::Udp)).remove(0);
        let src = server_source(Transport::Udp);
        h.feed(Event::Message(response_to(&sent, 180, Some("b1")), src));
        let a = h.feed(Event::Message(response_to(&sent, 503, Some("b1")), src));
        assert!(failed_targets(&a).is_empty());
        assert!(sent_to(&a, &other_server(Transport::Udp)).is_empty());
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [503]);
    }

    #[test]
    fn unreachable_next_hop_answers_503_and_later_failures_change_nothing() {
        let mut h = Harness::new();
        let caller = tcp_caller();
        let a = h.caller_sends(request("OPTIONS", "z9hG4bK-o1", ""), caller);
        let a = h.resolved(a, &server(Transport::Tls));
        let Some(Action::Deliver {
            notify: Some(id), ..
        }) = a.iter().find(|a| {
            matches!(
                a,
                Action::Deliver {
                    notify: Some(_),
                    ..
                }
            )
        })
        else {
            panic!("{a:?}")
        };
        let id = *id;
        let a = h.feed(Event::DeliveryFailed(id, DeliveryError::Unreachable));
        assert_eq!(statuses_to(&a, &caller.reply_destination()), [503]);
        assert!(h
            .feed(Event::DeliveryFailed(id, DeliveryError::Unreachable))
            .is_empty());
    }

    #[test]
    fn transactions_are_forgotten_after_their_lingers() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let sent = h.call(caller, Transport::Udp);
        h.feed(Event::Message(
            response_to(&sent, 486, Some("b1")),
            server_source(Transport::Udp),
        ));
        h.caller_sends(request("ACK", "z9hG4bK-c1", ";tag=b1"), caller);
        assert_eq!(
            (h.core.counts().transactions, h.core.counts().in_flight),
            (1, 0)
        );
        h.tick_at(secs(33));
        assert_eq!(
            (h.core.counts().transactions, h.core.counts().in_flight),
            (0, 0)
        );
    }

    #[test]
    fn a_request_answered_before_it_was_forwarded_leaves_no_transaction() {
        let mut h = Harness::new();
        let caller = udp_caller();
        let up = caller.reply_destination();
        let reject = |h: &mut Harness, a: Vec<Action>| -> Vec<Action> {
            let mut out = Vec::new();
            for a in a {
                match a {
                    Action::Resolve { job, .. } => out.extend(h.feed(Event::Decided(
                        job,
                        Decision::Reject(crate::routing::Rejection::NoSuchUser),
                    ))),
                    other => out.push(other),
                }
            }
            out
        };
        let a = h.caller_sends(invite(), caller);
        let a = reject(&mut h, a);
        assert_eq!(statuses_to(&a, &up), [100, 404]);
        assert_eq!(h.core.counts().transactions, 0, "forgotten at once");
        // A retransmission is routed again to the same answer, same To tag.
        let tag = |a: &[Action]| {
            let b = sent_to(a, &up).pop().unwrap();
            crate::proxy::rewrite::to_tag(&SipMessage::parse(b).unwrap()).map(String::from)
        };
        let first = tag(&a);
        let a = h.caller_sends(invite(), caller);
        let a = reject(&mut h, a);
        assert_eq!(statuses_to(&a, &up), [100, 404]);
        assert_eq!(tag(&a), first);
        // Its ACK is recognised as the ACK of Roundabout's own answer.
        let ack = request("ACK", "z9hG4bK-c1", &format!(";tag={}", first.unwrap()));
        assert!(h.caller_sends(ack, caller).is_empty());
    }

    #[test]
    fn the_transaction_cap_holds_over_all_shards_and_answers_503() {
        let config = Config::default();
        let budget = TransactionBudget::new(2);
        let mut a = ProxyCore::new(&config, TokenKey::default(), 0, budget.clone());
        let mut b = ProxyCore::new(&config, TokenKey::default(), 1, budget.clone());
        let now = Instant::now();
        let caller = udp_caller();
        let up = caller.reply_destination();
        let inv = |branch: &str| Event::Message(request("INVITE", branch, ""), caller);
        assert_eq!(statuses_to(&a.handle(inv("z9hG4bK-1"), now), &up), [100]);
        assert_eq!(statuses_to(&b.handle(inv("z9hG4bK-2"), now), &up), [100]);
        let refused = a.handle(inv("z9hG4bK-3"), now);
        let answer = SipMessage::parse(sent_to(&refused, &up).remove(0)).unwrap();
        assert_eq!(answer.status(), Some(503));
        assert!(String::from_utf8_lossy(answer.raw()).contains("Retry-After: 5\r\n"));
        assert!(
            !refused.iter().any(|x| matches!(x, Action::Resolve { .. })),
            "nothing created"
        );
        assert_eq!(a.counts().refused_max_transactions, 1);
        assert_eq!(a.counts().requests_refused(), 1);
        assert_eq!(budget.held(), 2);
    }

    #[test]
    fn a_registration_is_bound_before_the_client_hears_its_2xx() {
        let mut h = Harness::new();
        let caller = tcp_caller();
        let reg = SipMessage::parse(Bytes::from_static(
            b"REGISTER sip:198.51.100.2 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bK-r1\r\n\
              Max-Forwards: 70\r\nFrom: <sip:alice@198.51.100.2>;tag=r\r\nTo: <sip:alice@198.51.100.2>\r\n\
              Call-ID: reg1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@192.0.2.1:40000;transport=tcp>\r\n\
              Expires: 600\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let a = h.caller_sends(reg, caller);
        let a = h.resolved(a, &server(Transport::Udp));
        let sent = sent_to(&a, &server(Transport::Udp)).remove(0);
        let fwd = SipMessage::parse(sent.clone()).unwrap();
        let contact = fwd.first_value(HeaderName::Contact).unwrap().to_string();
        assert!(contact.contains(";rbc="), "{contact}");
        let ok = String::from_utf8(response_to(&sent, 200, Some("s")).raw().to_vec())
            .unwrap()
            .replace(
                "Content-Length: 0",
                &format!("Contact: {contact};expires=300\r\nContent-Length: 0"),
            );
        let a = h.feed(Event::Message(
            SipMessage::parse(Bytes::from(ok)).unwrap(),
            server_source(Transport::Udp),
        ));
        let bind = a
            .iter()
            .position(|x| matches!(x, Action::Bind { .. }))
            .expect("bound");
        let answer = a
            .iter()
            .position(|x| matches!(x, Action::Deliver { .. }))
            .expect("answered");
        assert!(bind < answer, "{a:?}");
        let Action::Bind {
            user,
            binding,
            expires,
            ..
        } = &a[bind]
        else {
            unreachable!()
        };
        assert_eq!((user.as_str(), *expires), ("alice", secs(300)));
        assert_eq!(binding.source, caller);
        assert_eq!(
            binding.contact_uri,
            "sip:alice@192.0.2.1:40000;transport=tcp"
        );
    }
}
