//! SIP over WebSocket (RFC 7118): the handshake rules, and one actor per WS or WSS
//! connection, accepted or opened by Roundabout.
//!
//! The actor keeps the contract of [`super::stream::StreamConnection`]: every WebSocket
//! message (text or binary; tungstenite reassembles fragmented ones, up to [`MAX_MESSAGE`])
//! is one SIP message, parsed and passed to its Router with `Source { transport: Ws | Wss,
//! remote, flow }`; accepted connections announce `FlowOpened`; `FlowClosed` goes out when
//! the actor stops; `SendFrame` writes one text message (binary when the bytes are not UTF-8).
//!
//! Keep-alive: tungstenite answers pings by itself; the pong goes out the next time the
//! socket is read or the sink flushed, both of which the actor keeps doing. The actor pings a
//! peer that has been silent for [`PING_INTERVAL`] and closes it after [`MAX_UNANSWERED`]
//! silent intervals (so a peer that trickles a WebSocket frame too slowly to ever finish it
//! is closed after at most three intervals). An accepted connection that sends no SIP message
//! within [`super::FIRST_MESSAGE_TIMEOUT`] is closed too, and so is any connection that
//! receives nothing at all (no message, no ping or pong) for `-idle-timeout`, or sends a
//! message that is not SIP (binary garbage, text that cannot be answered).

use super::guard::{idle_check, ConnectionSlot};
use super::{handle_message, Handled, FIRST_MESSAGE_TIMEOUT};
use crate::actors::messages::{ConnectionEvents, FlowClosed, FlowOpened, RouterPool, SendFrame};
use crate::routing::{FlowId, Source};
use crate::sip::Transport;
use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use bytes::Bytes;
use log::{debug, info};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// The default largest WebSocket message (and frame) accepted (`-max-stream-message`): a SIP
/// message with a big SDP is 3-5 KB; this leaves room and bounds memory per connection.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// How long the HTTP upgrade (after TCP, including TLS for WSS) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer silent this long is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Silent intervals (each ending with a ping) before the connection is closed.
pub const MAX_UNANSWERED: u8 = 2;

/// The subprotocol of RFC 7118.
const SIP: &str = "sip";

/// The WebSocket limits for SIP: messages and frames of at most `max_message` bytes.
/// tungstenite's default buffers are 128 KiB each per connection, which with tens of
/// thousands of idle clients is most of the proxy's memory: SIP messages are a few KB, so
/// the read buffer starts at 4 KiB (it grows for a larger message) and writes go out at once.
pub fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// What the WS and WSS listeners accept.
#[derive(Debug, Clone)]
pub struct WsOptions {
    /// The only HTTP path accepted (`-ws-path`); `None`: any.
    pub path: Option<Arc<str>>,
    /// The largest message (`-max-stream-message`).
    pub max_message: usize,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions {
            path: None,
            max_message: MAX_MESSAGE,
        }
    }
}

/// The answer to a WebSocket upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeDecision {
    /// The client offered `sip`: the 101 must echo `Sec-WebSocket-Protocol: sip`, or browsers
    /// drop the connection (Chrome: close code 1006).
    AcceptSip,
    /// The client offered no subprotocol at all. RFC 7118 says it must offer `sip`, but some
    /// SIP tools do not; a connection that then speaks SIP is harmless, so it is accepted
    /// (leniently) and the 101 names no subprotocol, as RFC 6455 requires.
    AcceptWithoutSubprotocol,
    /// Refused with this HTTP status and explanation.
    Refuse(StatusCode, String),
}

/// Decides a handshake from the request path and the values of its
/// `Sec-WebSocket-Protocol` headers (each a comma-separated list).
pub fn decide_handshake<'a>(
    path: &str,
    offered: impl IntoIterator<Item = &'a str>,
    only_path: Option<&str>,
) -> HandshakeDecision {
    if let Some(want) = only_path {
        if path != want {
            return HandshakeDecision::Refuse(
                StatusCode::NOT_FOUND,
                format!("no SIP WebSocket service at {path}: use {want}"),
            );
        }
    }
    let offered: Vec<&str> = offered
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.iter().any(|p| p.eq_ignore_ascii_case(SIP)) {
        HandshakeDecision::AcceptSip
    } else if offered.is_empty() {
        HandshakeDecision::AcceptWithoutSubprotocol
    } else {
        HandshakeDecision::Refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "this is a SIP WebSocket server (RFC 7118): offer the subprotocol 'sip' \
                 (Sec-WebSocket-Protocol: sip); offered: {}",
                offered.join(", ")
            ),
        )
    }
}

/// The `accept_hdr` callback: applies [`decide_handshake`] to a request.
#[allow(clippy::result_large_err)] // the type tungstenite's callback returns
fn answer_handshake(
    request: &Request,
    mut response: Response,
    options: &WsOptions,
    remote: SocketAddr,
) -> Result<Response, ErrorResponse> {
    let offered = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    match decide_handshake(request.uri().path(), offered, options.path.as_deref()) {
        HandshakeDecision::AcceptSip => {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SIP),
            );
            Ok(response)
        }
        HandshakeDecision::AcceptWithoutSubprotocol => {
            debug!("WebSocket client {remote} offered no subprotocol; accepted as SIP anyway");
            Ok(response)
        }
        HandshakeDecision::Refuse(status, reason) => {
            info!(
                "WebSocket handshake from {remote} for {} refused: {reason}",
                request.uri()
            );
            let mut refusal = ErrorResponse::new(Some(format!("{reason}\n")));
            *refusal.status_mut() = status;
            refusal.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Err(refusal)
        }
    }
}

/// Server side of the upgrade on an accepted (TCP or TLS) stream. Not time-bounded here:
/// the caller bounds the whole accept with [`HANDSHAKE_TIMEOUT`].
#[allow(clippy::result_large_err)] // the closure returns tungstenite's callback type
pub async fn accept<S>(
    stream: S,
    options: WsOptions,
    remote: SocketAddr,
) -> Result<WebSocketStream<TokioAdapter<S>>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = ws_config(options.max_message);
    let callback =
        move |req: &Request, resp: Response| answer_handshake(req, resp, &options, remote);
    async_tungstenite::tokio::accept_hdr_async_with_config(stream, callback, Some(config)).await
}

/// Client side of the upgrade towards a server, offering `sip` (a server that does not
/// accept it fails the handshake). `host` is the server's name (or IP) for the Host header
/// and URI; the path is `/`.
pub async fn connect<S>(
    stream: S,
    host: &str,
    port: u16,
    secure: bool,
    max_message: usize,
) -> Result<WebSocketStream<TokioAdapter<S>>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]") // an IPv6 address
    } else {
        host.to_string()
    };
    let scheme = if secure { "wss" } else { "ws" };
    let mut request = format!("{scheme}://{host}:{port}/").into_client_request()?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SIP),
    );
    let (ws, _) = async_tungstenite::tokio::client_async_with_config(
        request,
        stream,
        Some(ws_config(max_message)),
    )
    .await?;
    Ok(ws)
}

/// Whether a peer is alive, ticked every [`PING_INTERVAL`].
#[derive(Debug, Default)]
struct Liveness {
    heard: bool,
    unanswered: u8,
}

#[derive(Debug, PartialEq, Eq)]
enum Tick {
    /// The peer spoke during the interval.
    Alive,
    Ping,
    Close,
}

impl Liveness {
    fn heard(&mut self) {
        self.heard = true;
        self.unanswered = 0;
    }

    fn tick(&mut self) -> Tick {
        if std::mem::take(&mut self.heard) {
            Tick::Alive
        } else if self.unanswered >= MAX_UNANSWERED {
            Tick::Close
        } else {
            self.unanswered += 1;
            Tick::Ping
        }
    }
}

type Tokio<S> = TokioAdapter<S>;

pub struct WsConnection<S: AsyncRead + AsyncWrite + Unpin + 'static> {
    flow: FlowId,
    transport: Transport,
    remote: SocketAddr,
    routers: RouterPool,
    events: ConnectionEvents,
    sink: SinkWrite<Message, WebSocketSender<Tokio<S>>>,
    liveness: Liveness,
    /// Its place under the connection caps (accepted ones) and in the live count.
    slot: ConnectionSlot,
    got_message: bool,
    /// When the peer last sent anything (a message, a ping or a pong).
    last_heard: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> WsConnection<S> {
    /// Starts the actor on the current arbiter for a connection whose handshake is done.
    /// A `slot` from the guard's `admit_connection` marks one accepted by a listener: it
    /// announces itself to the Dispatcher and must send SIP soon; the connector reports
    /// outbound ones (with an `outbound_slot`) itself.
    pub fn start(
        ws: WebSocketStream<Tokio<S>>,
        flow: FlowId,
        transport: Transport,
        remote: SocketAddr,
        routers: RouterPool,
        events: ConnectionEvents,
        slot: ConnectionSlot,
    ) -> Addr<Self> {
        WsConnection::create(move |ctx| {
            let (sender, receiver): (WebSocketSender<Tokio<S>>, WebSocketReceiver<Tokio<S>>) =
                ws.split();
            ctx.add_stream(receiver);
            let sink = SinkWrite::new(sender, ctx);
            if slot.is_accepted() {
                events.opened.do_send(FlowOpened {
                    flow,
                    transport,
                    remote,
                    writer: ctx.address().recipient(),
                });
            }
            WsConnection {
                flow,
                transport,
                remote,
                routers,
                events,
                sink,
                liveness: Liveness::default(),
                slot,
                got_message: false,
                last_heard: Instant::now(),
            }
        })
    }

    /// Closes the connection when it has received nothing for `-idle-timeout`; else looks
    /// again when that would be the case.
    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        let Some(idle) = self.slot.guard().limits().idle_timeout else {
            return;
        };
        match idle_check(self.last_heard, Instant::now(), idle) {
            Some(after) => {
                ctx.run_later(after, |act, ctx| act.check_idle(ctx));
            }
            None => {
                info!(
                    "closing {} connection {} with {}: nothing received for {idle:?} (-idle-timeout)",
                    self.transport, self.flow, self.remote
                );
                self.close(ctx);
            }
        }
    }

    /// Ends the connection with a WebSocket close (the actor stops once it is sent).
    fn close(&mut self, ctx: &mut Context<Self>) {
        self.sink.close();
        // A peer that does not read must not keep the actor alive.
        ctx.run_later(Duration::from_secs(2), |_, ctx| ctx.stop());
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Actor for WsConnection<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        debug!(
            "{} connection {} with {} open",
            self.transport, self.flow, self.remote
        );
        ctx.run_interval(PING_INTERVAL, |act, ctx| match act.liveness.tick() {
            Tick::Alive => {}
            Tick::Ping => {
                let _ = act.sink.write(Message::Ping(Bytes::new()));
            }
            Tick::Close => {
                info!(
                    "closing {} connection {} from {}: no answer to pings",
                    act.transport, act.flow, act.remote
                );
                act.close(ctx);
            }
        });
        self.check_idle(ctx);
        if self.slot.is_accepted() {
            ctx.run_later(FIRST_MESSAGE_TIMEOUT, |act, ctx| {
                if !act.got_message {
                    info!(
                        "closing {} connection {} from {}: no SIP message within {:?}",
                        act.transport, act.flow, act.remote, FIRST_MESSAGE_TIMEOUT
                    );
                    act.close(ctx);
                }
            });
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.events.report_closed(FlowClosed {
            flow: self.flow,
            transport: self.transport,
            remote: self.remote,
        });
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> StreamHandler<Result<Message, WsError>>
    for WsConnection<S>
{
    fn handle(&mut self, item: Result<Message, WsError>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        let bytes = match item {
            Ok(Message::Text(text)) => Bytes::from(text),
            Ok(Message::Binary(bytes)) => bytes,
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {
                // tungstenite has queued the pong for a ping; it leaves with the next read.
                self.liveness.heard();
                return;
            }
            Ok(Message::Close(frame)) => {
                debug!(
                    "{} {} closed by the peer: {frame:?}",
                    self.transport, self.remote
                );
                return; // tungstenite answers the close; the stream then ends
            }
            Err(e) => {
                info!(
                    "closing {} connection from {}: {e}",
                    self.transport, self.remote
                );
                ctx.stop();
                return;
            }
        };
        self.liveness.heard();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return; // a CRLF keep-alive some clients send as a message
        }
        let source = Source {
            transport: self.transport,
            remote: self.remote,
            flow: self.flow,
        };
        match handle_message(bytes, source, &self.routers, self.slot.guard()) {
            Handled::Routed => self.got_message = true,
            Handled::Answered(answer) => {
                self.got_message = true;
                <Self as Handler<SendFrame>>::handle(self, SendFrame(answer), ctx);
            }
            Handled::Unparseable => {
                info!(
                    "closing {} connection {} with {}: not a SIP message",
                    self.transport, self.flow, self.remote
                );
                self.close(ctx);
            }
            Handled::Flooding => {}
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Handler<SendFrame> for WsConnection<S> {
    type Result = ();

    fn handle(&mut self, m: SendFrame, _: &mut Context<Self>) {
        // A clone of `Bytes` shares the buffer: the message is not copied either way.
        let message = match Utf8Bytes::try_from(m.0.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(m.0),
        };
        if self.sink.write(message).is_err() {
            debug!(
                "{} connection {} to {} is closing: message dropped",
                self.transport, self.flow, self.remote
            );
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> WriteHandler<WsError> for WsConnection<S> {
    fn error(&mut self, e: WsError, _: &mut Self::Context) -> Running {
        debug!("write to {} {} failed: {e}", self.transport, self.remote);
        Running::Stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_offered_is_accepted() {
        for offered in [
            vec!["sip"],
            vec!["SIP"],
            vec!["foo, sip"],
            vec!["foo", " sip "],
        ] {
            assert_eq!(
                decide_handshake("/", offered.clone(), None),
                HandshakeDecision::AcceptSip,
                "{offered:?}"
            );
        }
    }

    #[test]
    fn other_subprotocols_only_are_refused_with_400() {
        match decide_handshake("/", ["chat, mqtt"], None) {
            HandshakeDecision::Refuse(status, reason) => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                assert!(
                    reason.contains("'sip'") && reason.contains("chat, mqtt"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_subprotocol_is_accepted_without_echo() {
        assert_eq!(
            decide_handshake("/", [], None),
            HandshakeDecision::AcceptWithoutSubprotocol
        );
        assert_eq!(
            decide_handshake("/", [" "], None),
            HandshakeDecision::AcceptWithoutSubprotocol
        );
    }

    #[test]
    fn path_filter_applies_only_when_set() {
        assert_eq!(
            decide_handshake("/anything", ["sip"], None),
            HandshakeDecision::AcceptSip
        );
        assert_eq!(
            decide_handshake("/ws", ["sip"], Some("/ws")),
            HandshakeDecision::AcceptSip
        );
        match decide_handshake("/", ["sip"], Some("/ws")) {
            HandshakeDecision::Refuse(status, reason) => {
                assert_eq!(status, StatusCode::NOT_FOUND);
                assert!(reason.contains("/ws"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn callback_echoes_sip_and_refuses_others() {
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let request = |protocol: Option<&str>| {
            let mut b = Request::builder().uri("/ws");
            if let Some(p) = protocol {
                b = b.header(header::SEC_WEBSOCKET_PROTOCOL, p);
            }
            b.body(()).unwrap()
        };
        let options = WsOptions::default();
        let ok =
            answer_handshake(&request(Some("sip")), Response::new(()), &options, remote).unwrap();
        assert_eq!(ok.headers()[header::SEC_WEBSOCKET_PROTOCOL], "sip");
        let lenient =
            answer_handshake(&request(None), Response::new(()), &options, remote).unwrap();
        assert!(lenient
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .is_none());
        let refused = answer_handshake(&request(Some("xmpp")), Response::new(()), &options, remote)
            .unwrap_err();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(refused.body().as_deref().unwrap_or("").contains("sip"));
        let options = WsOptions {
            path: Some("/sip".into()),
            ..WsOptions::default()
        };
        let wrong_path =
            answer_handshake(&request(Some("sip")), Response::new(()), &options, remote)
                .unwrap_err();
        assert_eq!(wrong_path.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn silent_peer_is_pinged_then_closed() {
        let mut l = Liveness::default();
        assert_eq!(l.tick(), Tick::Ping);
        assert_eq!(l.tick(), Tick::Ping);
        assert_eq!(l.tick(), Tick::Close);
        let mut l = Liveness::default();
        assert_eq!(l.tick(), Tick::Ping);
        l.heard(); // the pong
        assert_eq!(l.tick(), Tick::Alive);
        assert_eq!(l.tick(), Tick::Ping);
        assert_eq!(l.tick(), Tick::Ping);
        assert_eq!(l.tick(), Tick::Close);
    }
}
