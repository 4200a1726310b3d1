//! The actors and the one place that wires them together.
//!
//! `start` binds the sockets, then starts the Registrar, the ServerTable, the Dispatcher,
//! one Router per shard (each on its own arbiter thread) and the connection actors, and
//! hands each the `Recipient`s of the others. See `messages.rs` for how data flows.

pub mod connection;
mod dispatcher;
pub mod messages;
mod registrar;
mod router;
mod server_table;
pub mod stats;

use crate::config::Config;
use crate::proxy::contact_token::TokenKey;
use crate::routing::ServerTable;
use crate::sip::Transport;
use crate::tls::TlsSettings;
use actix::prelude::*;
use connection::tcp::Upgrade;
use connection::ws::WsOptions;
use messages::{ConnectionEvents, RouterPool};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// A listener that could not be opened.
#[derive(Debug)]
pub struct StartError {
    pub transport: Transport,
    pub addr: SocketAddr,
    pub error: std::io::Error,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot listen on {} {}: {} (is another SIP server running there? use -{}-port or -bind-ip)",
            self.transport, self.addr, self.error, self.transport
        )
    }
}

impl std::error::Error for StartError {}

/// What is running, for the start-up banner and for tests.
pub struct Running {
    pub listeners: Vec<(Transport, SocketAddr)>,
    pub shards: usize,
    /// The Router shards, to drain them on shutdown.
    pub routers: Vec<Recipient<messages::Drain>>,
    /// The counts for the stats line (SIGUSR1) and `GET /metrics`.
    pub stats: std::rc::Rc<stats::StatsSources>,
    /// The TLS and WSS listeners' certificate, replaceable (SIGHUP); `None` when both are off.
    pub acceptor: Option<crate::tls::SharedAcceptor>,
    /// The outbound TLS context (client certificate, CAs), replaceable (SIGHUP).
    pub connector: crate::tls::SharedConnector,
    /// The connection limits of the listeners, the connections and the Dispatcher (SIGHUP
    /// with -config replaces them).
    pub guard: connection::guard::Guard,
    /// Who takes reloaded settings (SIGHUP with -config): the ServerTable and the Routers.
    pub reload: Vec<Recipient<messages::Reload>>,
    _arbiters: Vec<Arbiter>,
}

/// Binds every listener and starts the actors. Must run inside an actix `System`. `tls` comes
/// from [`crate::tls::load`]; its acceptor must be set when a TLS or WSS port is. `key` signs
/// contact tokens and branches (random, or from -token-key-file).
pub async fn start(
    config: &Config,
    shards: usize,
    tls: TlsSettings,
    key: TokenKey,
) -> Result<Running, StartError> {
    let bind = |t: Transport| SocketAddr::new(config.bind_ip, config.ports.get(t));
    let err = |t: Transport| {
        let addr = bind(t);
        move |error| StartError {
            transport: t,
            addr,
            error,
        }
    };
    let udp = match config.ports.udp {
        0 => None,
        _ => {
            let socket = tokio::net::UdpSocket::bind(bind(Transport::Udp))
                .await
                .map_err(err(Transport::Udp))?;
            enlarge_udp_buffers(&socket);
            Some(Arc::new(socket))
        }
    };
    // The transports over TCP, each with what its accepted sockets go through first.
    let ws_options = WsOptions {
        path: config.ws_path.as_deref().map(Into::into),
        max_message: config.limits.max_stream_message,
    };
    let acceptor = || {
        tls.acceptor
            .clone()
            .expect("tls::load makes an acceptor when a TLS or WSS port is set")
    };
    let mut tcp_based = Vec::new();
    for transport in [
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ] {
        if config.ports.get(transport) == 0 {
            continue;
        }
        let upgrade = match transport {
            Transport::Tls => Upgrade::Tls(acceptor()),
            Transport::Ws => Upgrade::Ws(ws_options.clone()),
            Transport::Wss => Upgrade::Wss(acceptor(), ws_options.clone()),
            _ => Upgrade::None,
        };
        let listener = listen_tcp(bind(transport)).map_err(err(transport))?;
        tcp_based.push((listener, upgrade));
    }
    let mut listeners = Vec::new();
    if let Some(s) = &udp {
        listeners.push((Transport::Udp, s.local_addr().map_err(err(Transport::Udp))?));
    }
    for (l, upgrade) in &tcp_based {
        let t = upgrade.transport();
        listeners.push((t, l.local_addr().map_err(err(t))?));
    }

    let registrar = registrar::Registrar::default().start();
    // Sizes, caps and flood protection for every connection; trusted servers are exempt.
    let guard = connection::guard::Guard::sharing(config.limits, config.trusted_addresses.clone());
    // Names (trusted servers', and hosts requests name) are resolved by DNS (RFC 3263).
    let (resolver, dns_warning) = crate::dns::Resolver::new(config.dns_server);
    if let Some(w) = dns_warning {
        log::warn!("{w}");
    }
    let server_table = server_table::ServerTableActor::new(
        ServerTable::from_config(config),
        resolver,
        config.trusted_addresses.clone(),
        config.avoid_time,
    )
    .start();
    crate::ops::metrics::metrics().set_trusted_servers(&config.trusted_servers);
    crate::ops::metrics::metrics().watch_trusted_addresses(config.trusted_addresses.clone());
    let dispatcher_ctx = Context::<dispatcher::Dispatcher>::new();
    let dispatcher = dispatcher_ctx.address();

    let peers = router::RouterPeers {
        server_table: server_table.clone().recipient(),
        target_failed: server_table.clone().recipient(),
        lookup_client: registrar.clone().recipient(),
        is_registered: registrar.clone().recipient(),
        bind_client: registrar.clone().recipient(),
        unbind_client: registrar.clone().recipient(),
        dispatcher: dispatcher.clone().recipient(),
    };
    let shards = shards.max(1);
    let mut arbiters = Vec::with_capacity(shards);
    let mut routers = Vec::with_capacity(shards);
    let mut drains = Vec::with_capacity(shards);
    let mut reload: Vec<Recipient<messages::Reload>> = vec![server_table.clone().recipient()];
    let mut counts = Vec::with_capacity(shards);
    // -max-transactions holds for all shards together.
    let budget = crate::proxy::core::TransactionBudget::new(config.limits.max_transactions);
    for shard in 0..shards {
        let (config, key, peers) = (config.clone(), key.clone(), peers.clone());
        let budget = budget.clone();
        let make = move |_: &mut Context<router::Router>| {
            router::Router::new(&config, key, (shard, budget), peers)
        };
        // Shard 0 shares the sockets' thread, so a proxy on one core never hops threads;
        // every further shard gets a thread of its own.
        let addr = if shard == 0 {
            router::Router::create(make)
        } else {
            let arbiter = Arbiter::new();
            let addr = router::Router::start_in_arbiter(&arbiter.handle(), make);
            arbiters.push(arbiter);
            addr
        };
        drains.push(addr.clone().recipient());
        reload.push(addr.clone().recipient());
        counts.push(addr.clone().recipient());
        routers.push(addr.recipient());
    }
    let routers = RouterPool::new(routers);
    let events = ConnectionEvents {
        opened: dispatcher.clone().recipient(),
        closed: vec![
            dispatcher.clone().recipient(),
            registrar.clone().recipient(),
        ],
    };
    let stats = stats::StatsSources {
        routers: counts,
        dispatcher: dispatcher.clone().recipient(),
        registrar: registrar.recipient(),
        guard: guard.clone(),
    };
    let connector = connection::tcp::connector(
        config.bind_ip,
        tls.connector.clone(),
        routers.clone(),
        events.clone(),
        guard.clone(),
    );
    // Connections to hosts named by Request-URIs are capped by the guard's limits.
    dispatcher_ctx.run(dispatcher::Dispatcher::new(
        udp.clone(),
        connector,
        guard.clone(),
    ));

    if let Some(socket) = udp {
        connection::udp::UdpConnection::start(socket, routers.clone(), guard.clone());
    }
    for (listener, upgrade) in tcp_based {
        connection::tcp::TcpListenerActor::start(
            listener,
            upgrade,
            routers.clone(),
            events.clone(),
            guard.clone(),
        );
    }
    Ok(Running {
        listeners,
        shards,
        routers: drains,
        stats: std::rc::Rc::new(stats),
        acceptor: tls.acceptor,
        connector: tls.connector,
        guard,
        reload,
        _arbiters: arbiters,
    })
}

/// Asks for 4 MiB socket buffers (the kernel caps them at net.core.rmem_max/wmem_max): with
/// the default ~200 KB a burst of datagrams arriving while the thread is busy is dropped
/// long before the CPU is.
fn enlarge_udp_buffers(socket: &tokio::net::UdpSocket) {
    const WANTED: usize = 4 << 20;
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock
        .set_recv_buffer_size(WANTED)
        .and_then(|_| sock.set_send_buffer_size(WANTED))
    {
        log::debug!("cannot enlarge the UDP socket buffers: {e}");
    }
}

/// Connections waiting to be accepted, per listener. `TcpListener::bind` (mio, like std)
/// asks for 128: after a restart or a network blip thousands of clients reconnect at once,
/// the queue overflows and every dropped SYN costs its client a 1 s, then 3 s retransmit
/// (the reconnect storm of `benches/clients.sh`). The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener bound to `addr` with [`LISTEN_BACKLOG`] (address reuse as tokio sets it).
fn listen_tcp(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
