//! The Router: the stateful proxy core (RFC 3261 sections 16 and 17).
//!
//! One Router per shard; connections pick the shard by Call-ID, so every message of a call
//! (request, retransmissions, CANCEL, responses) meets the same transaction table without
//! locks. For each request it checks the message, absorbs retransmissions, asks the
//! ServerTable (and, for requests addressed to Roundabout, the Registrar) for the next hop,
//! rewrites the headers with the pure functions of `proxy::rewrite`, and hands the bytes to
//! the Dispatcher. Responses are matched by the branch of Roundabout's own Via.

use super::messages::*;
use crate::config::Config;
use crate::proxy::branch::{is_loop, is_our_branch, BranchGenerator};
use crate::proxy::contact_token::TokenKey;
use crate::proxy::responses::build_response;
use crate::proxy::rewrite::{self, ProxyAddress};
use crate::proxy::transaction::*;
use crate::proxy::validate::{validate_request, validate_response};
use crate::routing::{Decision, Destination, LocalIdentity, RouteTarget, Source};
use crate::sip::header::iter_values;
use crate::sip::uri::{NameAddr, SipUri};
use crate::sip::via::Via;
use crate::sip::{HeaderName, Rewrite, SipMessage, Transport};
use actix::prelude::*;
use cidr::IpCidr;
use log::{debug, info, trace, warn};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Registrations without an expiry from the server or client last this long.
const DEFAULT_EXPIRES: u32 = 3600;

/// The other actors a Router talks to.
#[derive(Clone)]
pub struct RouterPeers {
    pub server_table: Recipient<ResolveNextHop>,
    pub lookup_client: Recipient<LookupClient>,
    pub bind_client: Recipient<BindClient>,
    pub unbind_client: Recipient<UnbindClient>,
    pub dispatcher: Recipient<Deliver>,
}

pub struct Router {
    local: ProxyAddress,
    key: TokenKey,
    strict_client: bool,
    client_networks: Vec<IpCidr>,
    ack_ruri: bool,
    peers: RouterPeers,
    branches: BranchGenerator,
    /// Boxed: the table grows to hundreds of thousands of entries (32 s linger), and a
    /// rehash then moves pointers, not whole records, so it does not stall the shard.
    txs: HashMap<TxId, Box<ProxyTransaction>, BuildHasherDefault<TxIdHasher>>,
    /// Keyed by what the sender wrote (its branch and sent-by): SipHash stays, so nobody can
    /// pick keys that collide and turn lookups into long scans.
    by_key: HashMap<ServerKey, TxId>,
    /// Our own branches, but they embed a loop hash of sender-chosen fields made with a
    /// fixed key: SipHash stays here too.
    by_branch: HashMap<String, TxId>,
    next_id: TxId,
    /// Set on shutdown: new transactions are refused with 503.
    draining: bool,
    timers: TimerQueue,
}

/// Hashes the transaction table's keys. TxIds are this shard's own counter, never taken from
/// the network, so SipHash's resistance to chosen keys buys nothing there; one multiply
/// (FxHash's) spreads consecutive ids over the buckets at a fraction of SipHash's cost
/// (the table is read on every message and every timer).
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

/// How often the Router serves its timers (T1 is 500 ms; this is precise enough).
const TICK: Duration = Duration::from_millis(20);

/// A request waiting for its next hop.
enum Job {
    Tx(TxId),
    /// An ACK for a 2xx: end-to-end, forwarded without a transaction.
    Ack(Box<SipMessage>, Source),
}

struct Pending {
    job: Job,
    /// The Request-URI to send (a restored contact), if it changes.
    request_uri: Option<String>,
    /// How many of our own Route values to pop.
    our_routes: usize,
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |act, ctx| act.on_tick(ctx));
    }
}

impl Router {
    pub fn new(config: &Config, key: TokenKey, shard: usize, peers: RouterPeers) -> Router {
        Router {
            local: ProxyAddress::new(
                LocalIdentity::from_config(config),
                config.contact_header_fqdn,
            ),
            key,
            strict_client: config.strict_client,
            client_networks: config.client_networks.clone(),
            ack_ruri: config.ack_ruri,
            peers,
            branches: BranchGenerator::new(shard),
            txs: HashMap::default(),
            by_key: HashMap::new(),
            by_branch: HashMap::new(),
            next_id: 1,
            draining: false,
            timers: TimerQueue::default(),
        }
    }

    fn deliver(
        &self,
        destination: Destination,
        bytes: bytes::Bytes,
        notify: Option<TxId>,
        ctx: &Context<Self>,
    ) {
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

    /// Answers a request that has no transaction (yet): 400, 403, 481, 482, 483...
    fn reply_stateless(
        &self,
        msg: &SipMessage,
        source: &Source,
        code: u16,
        reason: &str,
        ctx: &Context<Self>,
    ) {
        if msg.method() == "ACK" {
            return; // never answer an ACK
        }
        let via = top_via_with_received(msg, source);
        let bytes = build_response(msg, code, reason, via.as_deref());
        debug!(
            "{} {} from {} answered {code} {reason}",
            msg.method(),
            msg.request_uri(),
            source.remote
        );
        self.deliver(source.reply_destination(), bytes, None, ctx);
    }

    // ----- requests ---------------------------------------------------------------------

    fn on_request(&mut self, msg: SipMessage, source: Source, ctx: &mut Context<Self>) {
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
            return self.reply_stateless(&msg, &source, 400, reason, ctx);
        }
        let method = msg.method().to_string();
        let key = ServerKey::with_top_via(&msg, &top_via, &method);

        match method.as_str() {
            "ACK" => {
                if let Some(tx) = self.by_key.get(&key).and_then(|id| self.txs.get(id)) {
                    if tx.final_status.is_some_and(|s| s >= 300) {
                        trace!(
                            "absorbed ACK for {} (hop-by-hop)",
                            tx.final_status.unwrap_or(0)
                        );
                        return;
                    }
                }
            }
            "CANCEL" => return self.on_cancel(msg, source, key, ctx),
            _ => {
                if let Some(id) = self.by_key.get(&key).copied() {
                    return self.on_retransmission(id, ctx);
                }
            }
        }

        if self.draining && method != "ACK" {
            return self.reply_stateless(
                &msg,
                &source,
                503,
                "Service Unavailable - Shutting Down",
                ctx,
            );
        }
        if msg.max_forwards() == Some(Ok(0)) {
            return self.reply_stateless(&msg, &source, 483, "Too Many Hops", ctx);
        }
        if is_loop(&msg, &self.local) {
            return self.reply_stateless(&msg, &source, 482, "Loop Detected", ctx);
        }
        if method == "REGISTER"
            && self.strict_client
            && !crate::config::client_networks::contains(&self.client_networks, source.remote.ip())
        {
            info!(
                "REGISTER from untrusted {} refused (-strict-client)",
                source.remote
            );
            return self.reply_stateless(&msg, &source, 403, "Forbidden - Untrusted Client", ctx);
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
            .and_then(|t| self.key.decode(t));
        let target = if let Some(route) = next_route {
            match NameAddr::parse(route)
                .ok()
                .and_then(|n| n.uri().ok().map(|u| RouteTarget::from_uri(&u)))
            {
                Some(t) => t,
                None => return self.reply_stateless(&msg, &source, 400, "Malformed Route", ctx),
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
                    return self.reply_stateless(&msg, &source, 416, "Unsupported URI Scheme", ctx);
                }
            }
        };
        // OPTIONS to Roundabout itself (no user, no further Route): a health check that
        // servers and load balancers send to a proxy; answer it here.
        if method == "OPTIONS" && next_route.is_none() {
            if let Ok(u) = &ruri {
                if u.user.is_none() && self.local.is_us(u) {
                    return self.reply_stateless(&msg, &source, 200, "OK", ctx);
                }
            }
        }
        let request_uri = token.map(|t| t.original_uri);

        let job = if method == "ACK" {
            Job::Ack(Box::new(msg), source)
        } else {
            let id = self.new_transaction(msg, source, key, method, ctx);
            Job::Tx(id)
        };
        let pending = Pending {
            job,
            request_uri,
            our_routes,
        };
        self.resolve(target, pending, ctx);
    }

    fn new_transaction(
        &mut self,
        msg: SipMessage,
        source: Source,
        key: ServerKey,
        method: String,
        ctx: &mut Context<Self>,
    ) -> TxId {
        let id = self.next_id;
        self.next_id += 1;
        let source_via = top_via_with_received(&msg, &source);
        let register = (msg.method() == "REGISTER").then(|| RegisterContext {
            contacts: Vec::new(),
            requested_expires: rewrite::requested_expires(&msg),
            wildcard_user: rewrite::is_wildcard_contact(&msg)
                .then(|| rewrite::to_user(&msg))
                .flatten(),
        });
        if key.class == MethodClass::Invite {
            // A stateful proxy answers 100 at once so the caller stops retransmitting.
            let trying = build_response(&msg, 100, "Trying", source_via.as_deref());
            self.deliver(source.reply_destination(), trying, None, ctx);
        }
        let tx = ProxyTransaction {
            id,
            key: key.clone(),
            request: Some(msg),
            method,
            source,
            source_via,
            state: TxState::Resolving,
            destination: None,
            branch: String::new(),
            sent: None,
            hop: OutgoingHop::default(),
            last_response: None,
            final_status: None,
            cancelled: false,
            register,
            retransmit_interval: T1,
        };
        self.by_key.insert(key, id);
        self.txs.insert(id, Box::new(tx));
        id
    }

    /// A request we have seen: re-send what we last answered (RFC 3261 17.2), never
    /// forward it twice; our own client side retransmits on UDP by itself.
    fn on_retransmission(&mut self, id: TxId, ctx: &mut Context<Self>) {
        let Some(tx) = self.txs.get(&id) else { return };
        let answer = match &tx.last_response {
            Some(r) => Some(r.clone()),
            None if tx.is_invite() => tx
                .request
                .as_ref()
                .map(|r| build_response(r, 100, "Trying", tx.source_via.as_deref())),
            None => None,
        };
        trace!("absorbed a retransmitted {}", tx.method);
        if let Some(bytes) = answer {
            self.deliver(tx.source.reply_destination(), bytes, None, ctx);
        }
    }

    fn resolve(&mut self, target: RouteTarget, pending: Pending, ctx: &mut Context<Self>) {
        let fut = self.peers.server_table.send(ResolveNextHop(target));
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok(decision) => act.on_decision(decision, pending, ctx),
            Err(e) => {
                warn!("server table unavailable: {e}");
                act.fail(pending.job, 500, "Server Internal Error", ctx);
            }
        }));
    }

    fn on_decision(&mut self, decision: Decision, mut pending: Pending, ctx: &mut Context<Self>) {
        match decision {
            Decision::Forward {
                destination,
                request_uri,
            } => {
                if request_uri.is_some() {
                    pending.request_uri = request_uri;
                }
                self.forward(destination, pending, ctx)
            }
            Decision::Reject(r) => {
                let (code, reason) = r.status();
                self.fail(pending.job, code, reason, ctx)
            }
            Decision::AskRegistrar { user, fallback } => {
                let fut = self
                    .peers
                    .lookup_client
                    .send(LookupClient { user: user.clone() });
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
                    Ok(Some(binding)) => {
                        debug!("client '{user}' is at {}", binding.source.remote);
                        pending.request_uri = Some(binding.contact_uri);
                        act.forward(binding.source.reply_destination(), pending, ctx)
                    }
                    Ok(None) => match fallback {
                        Some(f) => act.on_decision(*f, pending, ctx),
                        None => act.fail(pending.job, 404, "Not Found", ctx),
                    },
                    Err(e) => {
                        warn!("registrar unavailable: {e}");
                        act.fail(pending.job, 500, "Server Internal Error", ctx)
                    }
                }));
            }
        }
    }

    /// Answers the request of a job with an error (and ends its transaction).
    fn fail(&mut self, job: Job, code: u16, reason: &str, ctx: &mut Context<Self>) {
        match job {
            Job::Ack(msg, _) => debug!("ACK {} dropped: {code} {reason}", msg.request_uri()),
            Job::Tx(id) => self.respond_locally(id, code, reason, ctx),
        }
    }

    /// Sends Roundabout's own final response upstream for a transaction.
    fn respond_locally(&mut self, id: TxId, code: u16, reason: &str, ctx: &mut Context<Self>) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        if tx.final_status.is_some() {
            return;
        }
        let Some(request) = tx.request.as_ref() else {
            return;
        };
        let bytes = build_response(request, code, reason, tx.source_via.as_deref());
        debug!(
            "{} {} answered {code} {reason}",
            tx.method,
            request.request_uri()
        );
        tx.final_status = Some(code);
        tx.last_response = Some(bytes.clone());
        let dest = tx.source.reply_destination();
        self.deliver(dest, bytes, None, ctx);
        self.complete(id, ctx);
    }

    fn forward(&mut self, destination: Destination, pending: Pending, ctx: &mut Context<Self>) {
        let out = destination.transport();
        match pending.job {
            Job::Ack(msg, source) => {
                let branch = self.branches.next(&msg);
                let source_via = top_via_with_received(&msg, &source);
                let (bytes, _, _) = self.build_request(
                    &msg,
                    &source,
                    source_via.as_deref(),
                    out,
                    &branch,
                    &pending.request_uri,
                    pending.our_routes,
                    None,
                );
                debug!("ACK {} -> {destination}", msg.request_uri());
                self.deliver(destination, bytes, None, ctx);
            }
            Job::Tx(id) => {
                let Some(tx) = self.txs.get(&id) else { return };
                if tx.cancelled {
                    return self.respond_locally(id, 487, "Request Terminated", ctx);
                }
                let Some(request) = tx.request.as_ref() else {
                    return;
                };
                let branch = self.branches.next(request);
                let want_register = tx.register.is_some();
                let (bytes, hop, contacts) = self.build_request(
                    request,
                    &tx.source,
                    tx.source_via.as_deref(),
                    out,
                    &branch,
                    &pending.request_uri,
                    pending.our_routes,
                    want_register.then_some(()),
                );
                debug!(
                    "{} {} from {} -> {destination}",
                    tx.method,
                    request.request_uri(),
                    tx.source.remote
                );
                let tx = self.txs.get_mut(&id).expect("checked above");
                if let (Some(reg), Some(c)) = (tx.register.as_mut(), contacts) {
                    reg.contacts = c;
                }
                tx.hop = hop;
                tx.branch = branch.clone();
                tx.state = TxState::Calling;
                tx.destination = Some(destination.clone());
                if out == Transport::Udp {
                    tx.sent = Some(bytes.clone());
                    self.timers
                        .schedule(Instant::now() + T1, id, TimerKind::Retransmit);
                }
                self.by_branch.insert(branch, id);
                self.timers
                    .schedule(Instant::now() + TIMER_B, id, TimerKind::Timeout);
                self.deliver(destination, bytes, Some(id), ctx);
            }
        }
    }

    /// The forwarded copy of a request (RFC 3261 16.6), plus what is needed to ACK or
    /// CANCEL it later and, for REGISTER, the Contacts that were replaced.
    #[allow(clippy::too_many_arguments)]
    fn build_request(
        &self,
        msg: &SipMessage,
        source: &Source,
        // the sender's top Via with received/rport ([`top_via_with_received`])
        source_via: Option<&str>,
        out: Transport,
        branch: &str,
        request_uri: &Option<String>,
        our_routes: usize,
        register: Option<()>,
    ) -> (
        bytes::Bytes,
        OutgoingHop,
        Option<Vec<rewrite::RegisteredContact>>,
    ) {
        // Lines are joined with `concat` (one exact-size allocation) rather than `format!`,
        // which grows its buffer piece by piece: this runs for every forwarded request.
        let mut rw = Rewrite::default();
        if let Some(u) = request_uri {
            rw.start_line = Some([msg.method(), " ", u, " SIP/2.0"].concat());
        }
        let via = self.local.via(out, branch);
        rw.prepend.push(["Via: ", &via].concat());
        if rewrite::creates_dialog(msg) {
            // Two Record-Route entries when the transport changes (RFC 5658), so in-dialog
            // requests from either side come back and leave on the right transport.
            if out != source.transport {
                rw.prepend
                    .push(["Record-Route: ", &self.local.record_route(out)].concat());
            }
            rw.prepend
                .push(["Record-Route: ", &self.local.record_route(source.transport)].concat());
        }
        rewrite::remove_first_values(msg, HeaderName::Route, our_routes, &mut rw);
        if let (Some(v), Some((i, line))) = (source_via, msg.first(HeaderName::Via)) {
            if let Some(first) = iter_values(line).next() {
                if v != &line[first.clone()] {
                    rw.replace(i, [v, &line[first.end..]].concat());
                }
            }
        }
        rewrite::decrement_max_forwards(msg, &mut rw);
        let contacts = if register.is_some() {
            Some(rewrite::rewrite_register_contact(
                msg,
                &mut rw,
                &self.local,
                out,
            ))
        } else {
            rewrite::rewrite_dialog_contact(msg, &mut rw, &self.local, out, source, &self.key);
            None
        };
        let request_uri = request_uri
            .clone()
            .unwrap_or_else(|| msg.request_uri().to_string());
        // Only an INVITE is ever CANCELled or ACKed hop by hop: other requests keep just
        // their Request-URI (for logs and for unbinding a client whose flow is gone).
        let hop = if msg.method() == "INVITE" {
            OutgoingHop {
                request_uri,
                via,
                routes: msg
                    .values(HeaderName::Route)
                    .skip(our_routes)
                    .map(String::from)
                    .collect(),
                from: msg.first_value(HeaderName::From).unwrap_or("").to_string(),
                to: msg.first_value(HeaderName::To).unwrap_or("").to_string(),
                call_id: msg.call_id().unwrap_or("").to_string(),
                cseq: msg.cseq().map_or(0, |c| c.0),
            }
        } else {
            OutgoingHop {
                request_uri,
                ..OutgoingHop::default()
            }
        };
        (msg.render(&rw), hop, contacts)
    }

    fn on_cancel(
        &mut self,
        msg: SipMessage,
        source: Source,
        key: ServerKey,
        ctx: &mut Context<Self>,
    ) {
        let invite_key = ServerKey {
            class: MethodClass::Invite,
            ..key
        };
        let Some(id) = self.by_key.get(&invite_key).copied() else {
            return self.reply_stateless(
                &msg,
                &source,
                481,
                "Call/Transaction Does Not Exist",
                ctx,
            );
        };
        // CANCEL is hop-by-hop: answered here, then sent on where its INVITE went.
        self.reply_stateless(&msg, &source, 200, "OK", ctx);
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        if tx.final_status.is_some() || tx.cancelled {
            return;
        }
        tx.cancelled = true;
        // Still resolving (no destination yet): forward() sees `cancelled` and answers 487.
        if let (TxState::Calling | TxState::Proceeding, Some(dest)) = (&tx.state, &tx.destination) {
            debug!("CANCEL {} -> {dest}", tx.hop.request_uri);
            let (dest, bytes) = (dest.clone(), tx.hop.cancel());
            self.deliver(dest, bytes, None, ctx);
        }
    }

    // ----- responses --------------------------------------------------------------------

    fn on_response(&mut self, msg: SipMessage, source: Source, ctx: &mut Context<Self>) {
        // The top Via is parsed once, for the check and for the branch.
        let top_via = msg.top_via();
        if let Err(reason) = validate_response(&msg, top_via.as_ref()) {
            info!("dropped a response from {}: {reason}", source.remote);
            return;
        }
        let (ours, tx_id) = match top_via.and_then(|v| v.branch()) {
            Some(branch) => (is_our_branch(branch), self.by_branch.get(branch).copied()),
            None => return,
        };
        if !ours {
            debug!(
                "dropped a response from {} whose top Via is not ours",
                source.remote
            );
            return;
        }
        let status = msg.status().unwrap_or(0);
        if msg.cseq().is_some_and(|(_, m)| m == "CANCEL") {
            trace!("absorbed {status} to our CANCEL");
            return;
        }
        let Some(id) = tx_id else {
            return self.forward_response_statelessly(msg, source, ctx);
        };
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };

        if status < 200 {
            if tx.final_status.is_some() {
                return;
            }
            let first_provisional = tx.state == TxState::Calling;
            if first_provisional {
                tx.state = TxState::Proceeding;
                if tx.is_invite() {
                    self.timers
                        .schedule(Instant::now() + TIMER_C, id, TimerKind::Ringing);
                }
            }
            if status == 100 {
                return; // hop-by-hop; the caller already had our 100
            }
        } else if let Some(previous) = tx.final_status {
            // A retransmitted final response from downstream.
            if tx.is_invite() && previous >= 300 {
                if let Some(dest) = tx.destination.clone() {
                    let ack = tx.hop.ack(msg.first_value(HeaderName::To).unwrap_or(""));
                    self.deliver(dest, ack, None, ctx);
                }
                return;
            }
            if !(tx.is_invite() && (200..300).contains(&status)) {
                return;
            }
            // 2xx retransmissions travel end to end: the caller's ACK stops them.
        } else {
            tx.final_status = Some(status);
            tx.state = TxState::Completed;
            if tx.is_invite() && status >= 300 {
                if let Some(dest) = tx.destination.clone() {
                    let ack = tx.hop.ack(msg.first_value(HeaderName::To).unwrap_or(""));
                    self.deliver(dest, ack, None, ctx);
                }
            }
        }

        let tx = self.txs.get(&id).expect("present");
        let mut rw = Rewrite::default();
        rewrite::remove_first_values(&msg, HeaderName::Via, 1, &mut rw);
        let mut bindings = Vec::new();
        match &tx.register {
            Some(reg) if (200..300).contains(&status) => {
                let granted =
                    rewrite::restore_register_contacts(&msg, &mut rw, &self.local, &reg.contacts);
                bindings = registration_changes(
                    reg,
                    &granted,
                    msg.first_value(HeaderName::Contact).is_some(),
                );
            }
            Some(_) => {}
            None if status < 300 => {
                rewrite::rewrite_dialog_contact(
                    &msg,
                    &mut rw,
                    &self.local,
                    tx.source.transport,
                    &source,
                    &self.key,
                );
            }
            None => {}
        }
        let bytes = msg.render(&rw);
        let dest = tx.source.reply_destination();
        let client_source = tx.source;
        debug!("{status} for {} -> {dest}", tx.method);
        for (user, contact_uri, expires) in bindings {
            if expires == 0 {
                self.peers.unbind_client.do_send(UnbindClient { user });
            } else {
                let binding = ClientBinding {
                    contact_uri,
                    source: client_source,
                };
                self.peers.bind_client.do_send(BindClient {
                    user,
                    binding,
                    expires: Duration::from_secs(expires.into()),
                });
            }
        }
        if status >= 200 {
            if let Some(tx) = self.txs.get_mut(&id) {
                tx.last_response = Some(bytes.clone());
            }
            self.complete(id, ctx);
        }
        self.deliver(dest, bytes, None, ctx);
    }

    /// A response with our Via but no transaction (e.g. a 2xx retransmitted after ours
    /// ended): RFC 3261 16.11 says forward it by the next Via.
    fn forward_response_statelessly(
        &mut self,
        msg: SipMessage,
        source: Source,
        ctx: &mut Context<Self>,
    ) {
        let Some(next) = msg
            .values(HeaderName::Via)
            .nth(1)
            .and_then(|v| Via::parse(v).ok())
        else {
            return;
        };
        let Some(transport) = next.transport else {
            return;
        };
        let ip = next
            .received()
            .and_then(|r| r.parse().ok())
            .or_else(|| crate::sip::uri::host_ip(next.host));
        let Some(ip) = ip else {
            debug!(
                "stateless response to unresolved host {} dropped",
                next.host
            );
            return;
        };
        let port = match next.rport() {
            Some(Some(p)) => p,
            _ => next.port.unwrap_or(transport.default_port()),
        };
        let mut rw = Rewrite::default();
        rewrite::remove_first_values(&msg, HeaderName::Via, 1, &mut rw);
        if (200..300).contains(&msg.status().unwrap_or(0))
            && msg.cseq().is_some_and(|(_, m)| m != "REGISTER")
        {
            // The caller's side transport is the next Via's.
            rewrite::rewrite_dialog_contact(
                &msg,
                &mut rw,
                &self.local,
                transport,
                &source,
                &self.key,
            );
        }
        let dest = Destination::Address {
            transport,
            addr: SocketAddr::new(ip, port),
            tls_name: None,
        };
        trace!("stateless {} -> {dest}", msg.status().unwrap_or(0));
        self.deliver(dest, msg.render(&rw), None, ctx);
    }

    // ----- timers and endings -----------------------------------------------------------

    fn on_tick(&mut self, ctx: &mut Context<Self>) {
        for (id, kind) in self.timers.due(Instant::now()) {
            match kind {
                TimerKind::Retransmit => self.on_retransmit_timer(id, ctx),
                TimerKind::Timeout => self.on_timeout(id, ctx),
                TimerKind::Ringing => self.on_timer_c(id, ctx),
                TimerKind::Remove => self.remove(id),
            }
        }
    }

    fn on_retransmit_timer(&mut self, id: TxId, ctx: &mut Context<Self>) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let keep_going = match tx.state {
            TxState::Calling => true,
            TxState::Proceeding => !tx.is_invite(),
            _ => false,
        };
        if !keep_going || tx.final_status.is_some() {
            return;
        }
        let (Some(bytes), Some(dest)) = (tx.sent.clone(), tx.destination.clone()) else {
            return;
        };
        tx.retransmit_interval = if tx.state == TxState::Proceeding {
            T2
        } else {
            tx.next_interval()
        };
        let next = tx.retransmit_interval;
        trace!("retransmitting {} to {dest}", tx.method);
        self.deliver(dest, bytes, None, ctx);
        self.timers
            .schedule(Instant::now() + next, id, TimerKind::Retransmit);
    }

    /// Timer B/F: no (final) answer in 32 s.
    fn on_timeout(&mut self, id: TxId, ctx: &mut Context<Self>) {
        let Some(tx) = self.txs.get(&id) else { return };
        let gave_up = tx.final_status.is_none()
            && (tx.state == TxState::Calling
                || (tx.state == TxState::Proceeding && !tx.is_invite()));
        if gave_up {
            info!(
                "{} {} timed out at {:?}",
                tx.method, tx.hop.request_uri, tx.destination
            );
            self.respond_locally(id, 408, "Request Timeout", ctx);
        }
    }

    /// Timer C: a ringing INVITE that never ends is cancelled downstream.
    fn on_timer_c(&mut self, id: TxId, ctx: &mut Context<Self>) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        if tx.final_status.is_some() {
            return;
        }
        if let Some(dest) = tx.destination.clone() {
            tx.cancelled = true;
            let cancel = tx.hop.cancel();
            self.deliver(dest, cancel, None, ctx);
        }
        self.respond_locally(id, 408, "Request Timeout", ctx);
    }

    /// The final answer is out: keep the transaction a while to absorb retransmissions.
    fn complete(&mut self, id: TxId, _ctx: &mut Context<Self>) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        tx.state = TxState::Completed;
        // A 2xx ends an INVITE for good (its retransmissions pass statelessly by Via, and our
        // 100 stopped the caller's INVITE retransmissions); otherwise Timer J/D: 32 s when a
        // UDP side may still retransmit.
        let answered_2xx =
            tx.is_invite() && tx.final_status.is_some_and(|s| (200..300).contains(&s));
        let all_streams = tx.source.transport.is_stream()
            && tx
                .destination
                .as_ref()
                .is_none_or(|d| d.transport() != Transport::Udp);
        let linger = if answered_2xx || all_streams {
            LINGER_STREAM
        } else {
            LINGER_UDP
        };
        tx.shrink();
        self.timers
            .schedule(Instant::now() + linger, id, TimerKind::Remove);
    }

    fn remove(&mut self, id: TxId) {
        if let Some(tx) = self.txs.remove(&id) {
            self.by_key.remove(&tx.key);
            self.by_branch.remove(&tx.branch);
        }
    }
}

/// `(user, original contact URI, expires)` for each client whose registration the 2xx
/// confirmed (expires > 0) or ended (0).
fn registration_changes(
    reg: &RegisterContext,
    granted: &[(String, Option<u32>)],
    response_lists_contacts: bool,
) -> Vec<(String, String, u32)> {
    let mut out = Vec::new();
    if let Some(user) = &reg.wildcard_user {
        out.push((user.clone(), String::new(), 0));
    }
    for c in &reg.contacts {
        let expires = match granted.iter().find(|(u, _)| *u == c.user) {
            Some((_, e)) => e.or(reg.requested_expires).unwrap_or(DEFAULT_EXPIRES),
            // Not listed in the 2xx: the server no longer has it. A server that lists no
            // Contact at all (non-compliant) is taken at the request's word.
            None if response_lists_contacts => 0,
            None => reg.requested_expires.unwrap_or(DEFAULT_EXPIRES),
        };
        out.push((c.user.clone(), c.original_uri.clone(), expires));
    }
    out
}

/// The first Via value with received/rport filled in, for responses Roundabout makes.
fn top_via_with_received(msg: &SipMessage, source: &Source) -> Option<String> {
    let line = msg.first_value(HeaderName::Via)?;
    let first = iter_values(line).next()?;
    let value = &line[first];
    Some(rewrite::via_with_received(value, source).unwrap_or_else(|| value.to_string()))
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
            self.on_request(m.msg, m.source, ctx)
        } else {
            self.on_response(m.msg, m.source, ctx)
        }
    }
}

impl Handler<DeliveryFailed> for Router {
    type Result = ();

    fn handle(&mut self, m: DeliveryFailed, ctx: &mut Context<Self>) {
        let Some(tx) = self.txs.get(&m.tx) else {
            return;
        };
        if tx.final_status.is_some() {
            return;
        }
        match m.error {
            DeliveryError::FlowGone => {
                // The client's connection is gone: its binding is useless now.
                if let Some(user) = SipUri::parse(&tx.hop.request_uri)
                    .ok()
                    .and_then(|u| u.user.map(String::from))
                {
                    self.peers.unbind_client.do_send(UnbindClient { user });
                }
                self.respond_locally(m.tx, 480, "Temporarily Unavailable", ctx)
            }
            DeliveryError::Unreachable => {
                self.respond_locally(m.tx, 503, "Service Unavailable", ctx)
            }
        }
    }
}

impl Handler<Drain> for Router {
    type Result = usize;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> usize {
        self.draining = true;
        self.txs
            .values()
            .filter(|tx| tx.final_status.is_none())
            .count()
    }
}

impl Handler<CountTransactions> for Router {
    type Result = MessageResult<CountTransactions>;

    fn handle(
        &mut self,
        _: CountTransactions,
        _: &mut Context<Self>,
    ) -> MessageResult<CountTransactions> {
        let in_flight = self
            .txs
            .values()
            .filter(|tx| tx.final_status.is_none())
            .count();
        MessageResult((self.txs.len(), in_flight))
    }
}
