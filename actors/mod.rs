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

use crate::config::Config;
use crate::proxy::contact_token::TokenKey;
use crate::routing::ServerTable;
use crate::sip::Transport;
use actix::prelude::*;
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
    _arbiters: Vec<Arbiter>,
}

/// Binds every listener and starts the actors. Must run inside an actix `System`.
pub async fn start(config: &Config, shards: usize) -> Result<Running, StartError> {
    let bind = |t: Transport| SocketAddr::new(config.bind_ip, config.ports.get(t));
    let err = |t: Transport| {
        let addr = bind(t);
        move |error| StartError { transport: t, addr, error }
    };
    let udp = match config.ports.udp {
        0 => None,
        _ => Some(Arc::new(tokio::net::UdpSocket::bind(bind(Transport::Udp)).await.map_err(err(Transport::Udp))?)),
    };
    let tcp = match config.ports.tcp {
        0 => None,
        _ => Some(tokio::net::TcpListener::bind(bind(Transport::Tcp)).await.map_err(err(Transport::Tcp))?),
    };
    let mut listeners = Vec::new();
    if let Some(s) = &udp {
        listeners.push((Transport::Udp, s.local_addr().map_err(err(Transport::Udp))?));
    }
    if let Some(l) = &tcp {
        listeners.push((Transport::Tcp, l.local_addr().map_err(err(Transport::Tcp))?));
    }

    let registrar = registrar::Registrar::default().start();
    let server_table = server_table::ServerTableActor::new(ServerTable::from_config(config)).start();
    let dispatcher_ctx = Context::<dispatcher::Dispatcher>::new();
    let dispatcher = dispatcher_ctx.address();

    let key = TokenKey::default();
    let peers = router::RouterPeers {
        server_table: server_table.recipient(),
        lookup_client: registrar.clone().recipient(),
        bind_client: registrar.clone().recipient(),
        unbind_client: registrar.clone().recipient(),
        dispatcher: dispatcher.clone().recipient(),
    };
    let shards = shards.max(1);
    let mut arbiters = Vec::with_capacity(shards);
    let mut routers = Vec::with_capacity(shards);
    for shard in 0..shards {
        let arbiter = Arbiter::new();
        let (config, key, peers) = (config.clone(), key.clone(), peers.clone());
        let addr = router::Router::start_in_arbiter(&arbiter.handle(), move |_| {
            router::Router::new(&config, key, shard, peers)
        });
        routers.push(addr.recipient());
        arbiters.push(arbiter);
    }
    let routers = RouterPool::new(routers);
    let events = ConnectionEvents {
        opened: dispatcher.clone().recipient(),
        closed: vec![dispatcher.clone().recipient(), registrar.recipient()],
    };
    let connector = connection::tcp::connector(config.bind_ip, routers.clone(), events.clone());
    dispatcher_ctx.run(dispatcher::Dispatcher::new(udp.clone(), connector));

    if let Some(socket) = udp {
        connection::udp::UdpConnection::start(socket, routers.clone());
    }
    if let Some(listener) = tcp {
        connection::tcp::TcpListenerActor::start(listener, routers.clone(), events.clone());
    }
    Ok(Running {
        listeners,
        shards,
        _arbiters: arbiters,
    })
}
