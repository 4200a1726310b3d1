//! The listeners of the transports that run over TCP (TCP, TLS, WS, WSS: one actor type, told
//! by [`Upgrade`] what to do with an accepted socket), and the connector that opens outbound
//! connections of each of them for the Dispatcher.
//!
//! Every step of opening a connection is bounded in time: TCP connect, TLS handshake and
//! WebSocket upgrade [`CONNECT_TIMEOUT`] each when Roundabout opens it; an accepted one's
//! TLS handshake [`CONNECT_TIMEOUT`], its upgrade [`ws::HANDSHAKE_TIMEOUT`]. A failure is
//! `DeliveryError::Unreachable` (the request gets 503) for outbound connections, and a log
//! line and a closed socket for accepted ones (both lines throttled: one a second per kind
//! and transport, see `Guard::peer_log`). An accepted connection over the caps of the
//! [`Guard`] (`-max-connections`, `-max-connections-per-ip`) is closed at once.

use super::flow::Flow;
use super::guard::{Guard, Noise};
use super::next_flow_id;
use super::read_ahead::ReadAhead;
use super::stream::StreamConnection;
use super::ws::{self, WsConnection, WsOptions};
use crate::actors::messages::{
    ConnectionEvents, Connector, DeliveryError, FlowOpened, RouterPool, SendFrame,
};
use crate::routing::FlowId;
use crate::sip::Transport;
use crate::tls::SharedAcceptor;
use actix::prelude::*;
use log::{info, warn};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How long opening a connection to a next hop (TCP connect, then the TLS handshake, each)
/// may take before the request gets 503; also the bound of an accepted TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// After a failed accept (typically out of file descriptors: the pending connection stays
/// in the backlog, so accepting again at once would fail again at once and spin a core),
/// the listener waits this long before the next try.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Failed accepts are logged at most once per this interval, with the count in between.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(1);

/// What a listener does with an accepted TCP socket before SIP flows on it. TLS and WSS
/// take the acceptor current at each accept (SIGHUP may replace it).
#[derive(Clone)]
pub enum Upgrade {
    /// Plain TCP: SIP at once.
    None,
    Tls(SharedAcceptor),
    Ws(WsOptions),
    Wss(SharedAcceptor, WsOptions),
}

impl Upgrade {
    pub fn transport(&self) -> Transport {
        match self {
            Upgrade::None => Transport::Tcp,
            Upgrade::Tls(_) => Transport::Tls,
            Upgrade::Ws(_) => Transport::Ws,
            Upgrade::Wss(..) => Transport::Wss,
        }
    }
}

pub struct TcpListenerActor {
    upgrade: Upgrade,
    routers: RouterPool,
    events: ConnectionEvents,
    guard: Guard,
    /// Failed accepts not logged yet, and when the last was logged.
    accept_errors: u64,
    accept_error_logged: Option<std::time::Instant>,
}

impl TcpListenerActor {
    pub fn start(
        listener: TcpListener,
        upgrade: Upgrade,
        routers: RouterPool,
        events: ConnectionEvents,
        guard: Guard,
    ) -> Addr<Self> {
        TcpListenerActor::create(move |ctx| {
            let accepts = futures_util::stream::unfold(listener, |l| async move {
                let r = l.accept().await;
                if r.is_err() {
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                Some((r, l))
            });
            ctx.add_stream(accepts);
            TcpListenerActor {
                upgrade,
                routers,
                events,
                guard,
                accept_errors: 0,
                accept_error_logged: None,
            }
        })
    }
}

impl TcpListenerActor {
    fn accept_failed(&mut self, e: std::io::Error) {
        self.accept_errors += 1;
        let now = std::time::Instant::now();
        if self
            .accept_error_logged
            .is_some_and(|at| now.duration_since(at) < ACCEPT_ERROR_LOG_EVERY)
        {
            return;
        }
        let hint = if matches!(e.raw_os_error(), Some(23 | 24)) {
            " (out of file descriptors: raise the open-files limit or lower -max-connections)"
        } else {
            ""
        };
        warn!(
            "{} accept failed {} time(s): {e}{hint}",
            self.upgrade.transport(),
            self.accept_errors
        );
        self.accept_errors = 0;
        self.accept_error_logged = Some(now);
    }
}

impl Actor for TcpListenerActor {
    type Context = Context<Self>;
}

impl StreamHandler<std::io::Result<(TcpStream, SocketAddr)>> for TcpListenerActor {
    fn handle(&mut self, item: std::io::Result<(TcpStream, SocketAddr)>, _: &mut Context<Self>) {
        let (stream, remote) = match item {
            // An IPv4 peer on a `-bind-ip ::` listener is counted and logged as IPv4, so
            // that a trusted server's address matches and per-IP caps see one address.
            Ok((stream, remote)) => (stream, super::peer_address(remote)),
            // e.g. out of file descriptors: this accept fails, the listener goes on.
            Err(e) => return self.accept_failed(e),
        };
        // Over a cap: dropping the stream closes it (the guard logs, at most once a second).
        let Some(slot) = self.guard.admit_connection(remote.ip()) else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let routers = self.routers.clone();
        let transport = self.upgrade.transport();
        let guard = self.guard.clone();
        let flow = Flow::new(next_flow_id(), transport, remote, self.events.clone(), slot);
        let mut upgrade = self.upgrade.clone();
        if let Upgrade::Ws(options) | Upgrade::Wss(_, options) = &mut upgrade {
            // -max-stream-message as it is now (a reload may have changed it).
            options.max_message = self.guard.limits().max_stream_message;
        }
        match upgrade {
            Upgrade::None => {
                StreamConnection::start(stream, flow, routers);
            }
            Upgrade::Tls(acceptor) => {
                let acceptor = acceptor.current();
                spawn_handshake(guard, transport, remote, CONNECT_TIMEOUT, async move {
                    let tls = acceptor
                        .accept(ReadAhead::new(stream))
                        .await
                        .map_err(|e| e.to_string())?;
                    StreamConnection::start(tls, flow, routers);
                    Ok(())
                })
            }
            Upgrade::Ws(options) => spawn_handshake(
                guard,
                transport,
                remote,
                ws::HANDSHAKE_TIMEOUT,
                async move {
                    let ws = ws::accept(ReadAhead::new(stream), options, remote)
                        .await
                        .map_err(|e| e.to_string())?;
                    WsConnection::start(ws, flow, routers);
                    Ok(())
                },
            ),
            Upgrade::Wss(acceptor, options) => spawn_handshake(
                guard,
                transport,
                remote,
                ws::HANDSHAKE_TIMEOUT,
                async move {
                    let acceptor = acceptor.current();
                    let tls = acceptor
                        .accept(ReadAhead::new(stream))
                        .await
                        .map_err(|e| format!("TLS: {e}"))?;
                    let ws = ws::accept(tls, options, remote)
                        .await
                        .map_err(|e| e.to_string())?;
                    WsConnection::start(ws, flow, routers);
                    Ok(())
                },
            ),
        }
    }
}

/// Runs an accepted connection's handshake beside the listener, bounded by `limit`; a
/// failure (a TLS error, a refused upgrade, a plain HTTP request answered 426...) closes the
/// socket with a log line (throttled per transport).
fn spawn_handshake(
    guard: Guard,
    transport: Transport,
    remote: SocketAddr,
    limit: Duration,
    handshake: impl Future<Output = Result<(), String>> + 'static,
) {
    actix::spawn(async move {
        match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => guard.peer_log(Noise::on("handshake failed", transport), |s| {
                info!("closing {transport} connection from {remote}: handshake failed: {e}{s}")
            }),
            Err(_) => guard.peer_log(Noise::on("handshake too slow", transport), |s| {
                info!(
                    "closing {transport} connection from {remote}: handshake took over \
                     {limit:?}{s}"
                )
            }),
        }
    });
}

/// Opens outbound connections from `bind_ip` (so peers see Roundabout's address). TLS and
/// WSS check the server's certificate against `tls_name` (the trusted server's first FQDN,
/// else its IP), which is also the SNI name.
pub fn connector(
    bind_ip: IpAddr,
    tls: crate::tls::SharedConnector,
    routers: RouterPool,
    events: ConnectionEvents,
    guard: Guard,
) -> Connector {
    std::rc::Rc::new(move |transport, addr, tls_name| {
        // The context current now: a reload (SIGHUP) changes it for later connections.
        let (routers, events, tls) = (routers.clone(), events.clone(), tls.current());
        let guard = guard.clone();
        let name = tls_name.unwrap_or_else(|| addr.ip().to_string());
        Box::pin(async move {
            // Without -strict-host any request can make Roundabout dial any address: the
            // failures are throttled like the lines peers cause.
            let (log, shown) = (guard.clone(), name.clone());
            let unreachable = move |what: &'static str, e: String| {
                crate::ops::metrics::metrics().outbound_failed(addr, &shown, what);
                log.peer_log(Noise::on(what, transport), |s| {
                    warn!("{transport} connection to {addr} ({shown}) failed: {what}: {e}{s}")
                });
                DeliveryError::Unreachable
            };
            if transport == Transport::Udp {
                return Err(DeliveryError::Unreachable);
            }
            let stream = bounded(CONNECT_TIMEOUT, connect_tcp(bind_ip, addr))
                .await
                .map_err(|e| unreachable("connect", e))?;
            let _ = stream.set_nodelay(true);
            let flow = next_flow_id();
            let opened = Outbound {
                flow,
                transport,
                addr,
                routers,
                events,
                guard,
            };
            let writer = match transport {
                Transport::Udp => unreachable!("handled above"),
                Transport::Tcp => opened.sip(stream),
                Transport::Ws => opened
                    .websocket(ReadAhead::new(stream), &name)
                    .await
                    .map_err(|e| unreachable("WebSocket handshake", e))?,
                Transport::Tls | Transport::Wss => {
                    let tls = bounded(CONNECT_TIMEOUT, tls.connect(&name, ReadAhead::new(stream)))
                        .await
                        .map_err(|e| unreachable("TLS handshake", e))?;
                    if transport == Transport::Tls {
                        opened.sip(tls)
                    } else {
                        opened
                            .websocket(tls, &name)
                            .await
                            .map_err(|e| unreachable("WebSocket handshake", e))?
                    }
                }
            };
            Ok(FlowOpened {
                flow,
                transport,
                remote: addr,
                writer,
            })
        })
    })
}

/// An outbound connection, once connected (and TLS is up for TLS and WSS): what its actor
/// needs. One code path for every stream type, plain TCP or TLS.
struct Outbound {
    flow: FlowId,
    transport: Transport,
    addr: SocketAddr,
    routers: RouterPool,
    events: ConnectionEvents,
    guard: Guard,
}

impl Outbound {
    /// TCP and TLS: SIP flows at once.
    fn sip<S: AsyncRead + AsyncWrite + Unpin + 'static>(self, stream: S) -> Recipient<SendFrame> {
        let (flow, routers) = self.into_flow();
        StreamConnection::start(stream, flow, routers).recipient()
    }

    /// WS and WSS: the WebSocket upgrade (offering `sip`, within [`CONNECT_TIMEOUT`]),
    /// then SIP. `name` goes into the Host header.
    async fn websocket<S: AsyncRead + AsyncWrite + Unpin + 'static>(
        self,
        stream: S,
        name: &str,
    ) -> Result<Recipient<SendFrame>, String> {
        let secure = self.transport == Transport::Wss;
        let max_message = self.guard.limits().max_stream_message;
        let upgrade = ws::connect(stream, name, self.addr.port(), secure, max_message);
        let ws = bounded(CONNECT_TIMEOUT, upgrade).await?;
        let (flow, routers) = self.into_flow();
        Ok(WsConnection::start(ws, flow, routers).recipient())
    }

    /// The connection's [`Flow`] for its actor; its slot (which counts the connection as
    /// alive) is taken only now that the connection is up.
    fn into_flow(self) -> (Flow, RouterPool) {
        let slot = self.guard.outbound_slot();
        let flow = Flow::new(self.flow, self.transport, self.addr, self.events, slot);
        (flow, self.routers)
    }
}

/// `fut` within `limit`, its error as text.
async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

async fn connect_tcp(bind_ip: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if !bind_ip.is_unspecified() && bind_ip.is_ipv4() == addr.is_ipv4() {
        socket.bind(SocketAddr::new(bind_ip, 0))?;
    }
    socket.connect(addr).await
}
