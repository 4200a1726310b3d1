//! SIP over WebSocket (RFC 7118): the handshake rules, and one actor per WS or WSS
//! connection, accepted or opened by Roundabout.
//!
//! The actor keeps the contract of [`super::stream::StreamConnection`]: every WebSocket
//! message (text or binary; tungstenite reassembles fragmented ones, up to `-max-stream-message`)
//! is one SIP message, parsed and passed to its Router with `Source { transport: Ws | Wss,
//! remote, flow }`; accepted connections announce `FlowOpened`; `FlowClosed` goes out when
//! the actor stops; `SendFrame` writes one text message (binary when the bytes are not UTF-8).
//!
//! Keep-alive: tungstenite answers pings by itself; the pong goes out the next time the
//! socket is read or the sink flushed, both of which the actor keeps doing. The actor pings a
//! peer that has been silent for [`PING_INTERVAL`] and closes it after [`MAX_UNANSWERED`]
//! silent intervals (so a peer that trickles a WebSocket frame too slowly to ever finish it
//! is closed after at most three intervals). An accepted connection that sends no SIP message
//! within [`FIRST_MESSAGE_TIMEOUT`] is closed too, and so is any connection that receives
//! nothing at all (no message, no ping or pong) for `-idle-timeout` (both timeouts:
//! [`super::flow`]), or sends a message that is not SIP (binary garbage, text that
//! cannot be answered). A peer that does not read what is written to it is given up once
//! more than `-max-send-queue` bytes wait ([`SendQueue`]).
//!
//! [`FIRST_MESSAGE_TIMEOUT`]: super::flow::FIRST_MESSAGE_TIMEOUT

use super::flow::{self, Flow, FlowActor};
use super::guard::Noise;
use super::send_queue::{Refused, SendQueue, Sends, WsOutlet};
use super::{handle_message, Handled};
use crate::actors::messages::{RouterPool, SendFrame};
use actix::io::WriteHandler;
use actix::prelude::*;
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use bytes::{Bytes, BytesMut};
use log::{debug, info};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How long the HTTP upgrade (after TCP, including TLS for WSS) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer silent this long is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Silent intervals (each ending with a ping) before the connection is closed.
pub const MAX_UNANSWERED: u8 = 2;

/// The subprotocol of RFC 7118.
const SIP: &str = "sip";

/// The first read buffer of a WebSocket connection, and the most read from the socket at
/// once. tungstenite keeps its read buffer for the life of the connection (touched whole:
/// it zero-fills it before each read) and grows it to the frame being read; a buffer of
/// 1 KiB or more is also the least every later one is allocated with. So it starts small:
/// after a REGISTER an idle client holds 1 KiB instead of 4 KiB (benches/results/memory.md).
/// A larger message takes a few more reads from the TLS layer, which has it decrypted
/// already.
pub const WS_READ_BUFFER: usize = 512;

/// The WebSocket limits for SIP: messages and frames of at most `max_message` bytes.
/// tungstenite's default buffers are 128 KiB each per connection, which with tens of
/// thousands of idle clients is most of the proxy's memory: SIP messages are a few KB, so
/// the read buffer starts at [`WS_READ_BUFFER`] and writes go out at once.
pub fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .read_buffer_size(WS_READ_BUFFER)
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
            max_message: crate::sip::framing::DEFAULT_MAX_STREAM_MESSAGE,
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
            // The listener logs the refusal (throttled), with this reason: the answer's body.
            debug!(
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
///
/// The request head is read first (at most [`MAX_REQUEST_HEAD`] bytes): a plain HTTP
/// request, without `Upgrade: websocket` (a browser opened `https://host:8443/` to accept
/// the certificate), is answered 426 Upgrade Required ([`plain_http_answer`]) and the
/// connection closed; anything else is handed to tungstenite with the bytes read put back
/// in front ([`Rewound`]), so upgrades go exactly as they would without the look.
#[allow(clippy::result_large_err)] // the closure returns tungstenite's callback type
pub async fn accept<S>(
    mut stream: S,
    options: WsOptions,
    remote: SocketAddr,
) -> Result<WebSocketStream<TokioAdapter<Rewound<S>>>, AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = read_request_head(&mut stream)
        .await
        .map_err(AcceptError::Io)?;
    if let RequestHead::Plain { method, target } = RequestHead::of(&head) {
        let answer = plain_http_answer(&method);
        stream
            .write_all(answer.as_bytes())
            .await
            .map_err(AcceptError::Io)?;
        stream.shutdown().await.map_err(AcceptError::Io)?;
        return Err(AcceptError::NotUpgrade(format!("{method} {target}")));
    }
    let stream = Rewound::new(head.freeze(), stream);
    let config = ws_config(options.max_message);
    let callback =
        move |req: &Request, resp: Response| answer_handshake(req, resp, &options, remote);
    async_tungstenite::tokio::accept_hdr_async_with_config(stream, callback, Some(config))
        .await
        .map_err(AcceptError::Handshake)
}

/// Why an accepted connection did not become a WebSocket.
#[derive(Debug)]
pub enum AcceptError {
    /// Reading the request, or writing the answer to a plain HTTP request, failed.
    Io(std::io::Error),
    /// A plain HTTP request (its method and target), answered 426 ([`plain_http_answer`]).
    NotUpgrade(String),
    /// tungstenite refused the upgrade (and answered it when it could).
    Handshake(WsError),
}

impl std::fmt::Display for AcceptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcceptError::Io(e) => write!(f, "{e}"),
            AcceptError::NotUpgrade(request) => write!(
                f,
                "a plain HTTP request ({request}), no WebSocket upgrade: answered 426"
            ),
            AcceptError::Handshake(WsError::Http(refusal)) => {
                // Refused by `answer_handshake`: its body says why.
                let why = refusal.body().as_deref().unwrap_or_default();
                let why = String::from_utf8_lossy(why);
                write!(f, "refused with {}: {}", refusal.status(), why.trim_end())
            }
            AcceptError::Handshake(e) => write!(f, "{e}"),
        }
    }
}

/// How much of an HTTP request head is read to see whether it asks for a WebSocket
/// upgrade. A longer head (or none) goes to tungstenite undecided, as before.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// The body of the answer to a plain HTTP request: what this port is.
const PLAIN_HTTP_BODY: &str = "This is a SIP over WebSocket endpoint (RFC 7118, subprotocol \
                               sip): connect with a WebSocket client.\n";

/// The answer to a plain HTTP request on a WS or WSS port (to HEAD: without the body).
pub fn plain_http_answer(method: &str) -> String {
    let body = if method == "HEAD" {
        ""
    } else {
        PLAIN_HTTP_BODY
    };
    format!(
        "HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: sip\r\n\
         Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         \r\n{body}",
        PLAIN_HTTP_BODY.len()
    )
}

/// Reads from `stream` until the request head is complete (a blank line), the peer stops
/// sending, or [`MAX_REQUEST_HEAD`] bytes are in.
async fn read_request_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<BytesMut> {
    let mut head = BytesMut::with_capacity(1024);
    while head.len() < MAX_REQUEST_HEAD && head_end(&head).is_none() {
        head.reserve(1024);
        if stream.read_buf(&mut head).await? == 0 {
            break;
        }
    }
    Ok(head)
}

/// Where the head ends: the index of its blank line (CRLF CRLF, or a bare LF LF as
/// httparse also takes).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

/// What the start of a connection on a WS or WSS port is.
#[derive(Debug, PartialEq, Eq)]
enum RequestHead {
    /// A complete HTTP/1.x request head without `Upgrade: websocket`.
    Plain { method: String, target: String },
    /// An upgrade request, or anything else (not HTTP, not complete): tungstenite decides.
    Other,
}

impl RequestHead {
    fn of(bytes: &[u8]) -> RequestHead {
        let Some(end) = head_end(bytes) else {
            return RequestHead::Other;
        };
        let Ok(head) = std::str::from_utf8(&bytes[..end]) else {
            return RequestHead::Other;
        };
        let mut lines = head.lines();
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let (Some(method), Some(target), Some(version), None) = (
            request_line.next(),
            request_line.next(),
            request_line.next(),
            request_line.next(),
        ) else {
            return RequestHead::Other;
        };
        if method.is_empty() || !version.starts_with("HTTP/1.") {
            return RequestHead::Other;
        }
        let upgrade = lines
            .filter_map(|l| l.split_once(':'))
            .any(|(name, value)| {
                name.trim().eq_ignore_ascii_case("upgrade")
                    && value
                        .split(',')
                        .any(|v| v.trim().eq_ignore_ascii_case("websocket"))
            });
        if upgrade {
            return RequestHead::Other;
        }
        RequestHead::Plain {
            method: method.to_string(),
            target: target.chars().take(100).collect(),
        }
    }
}

/// An accepted stream with the bytes already read from it put back in front: they are read
/// again first (then freed), and writes go straight through.
#[derive(Debug)]
pub struct Rewound<S> {
    head: Bytes,
    inner: S,
}

impl<S> Rewound<S> {
    fn new(head: Bytes, inner: S) -> Rewound<S> {
        Rewound { head, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.head.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.head.len().min(buf.remaining());
        buf.put_slice(&this.head.split_to(n));
        if this.head.is_empty() {
            this.head = Bytes::new(); // frees the buffer
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
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

type Outlet<S> = WsOutlet<WebSocketSender<Tokio<S>>>;

pub struct WsConnection<S: AsyncRead + AsyncWrite + Unpin + 'static> {
    /// The peer, and the timeouts (heard: a message, a ping or a pong).
    flow: Flow,
    routers: RouterPool,
    /// What waits to be written, at most `-max-send-queue` bytes.
    queue: SendQueue<Outlet<S>>,
    liveness: Liveness,
    /// When [`Liveness::tick`] is due next (every [`PING_INTERVAL`], on the flow's timer).
    next_tick: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> WsConnection<S> {
    /// Starts the actor on the current arbiter for a connection whose handshake is done
    /// (see [`Flow::new`] for accepted and outbound connections).
    pub fn start(ws: WebSocketStream<Tokio<S>>, flow: Flow, routers: RouterPool) -> Addr<Self> {
        WsConnection::create(move |ctx| {
            let (sender, receiver): (WebSocketSender<Tokio<S>>, WebSocketReceiver<Tokio<S>>) =
                ws.split();
            ctx.add_stream(receiver);
            let limit = flow.guard().limits().max_send_queue;
            let queue = SendQueue::new(WsOutlet(sender), limit);
            SendQueue::start(ctx);
            flow.opened(ctx.address().recipient());
            WsConnection {
                flow,
                routers,
                queue,
                liveness: Liveness::default(),
                next_tick: Instant::now() + PING_INTERVAL,
            }
        })
    }

    /// Queues a message for the peer; gives the connection up when the peer does not read.
    fn write(&mut self, message: Message, ctx: &mut Context<Self>) {
        match self.queue.push(message) {
            Ok(()) => {}
            Err(Refused::Full { queued }) => self.overflow(ctx, queued),
            Err(Refused::Closing) => debug!("{} is closing: message dropped", self.flow),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Sends<Outlet<S>> for WsConnection<S> {
    fn send_queue(&mut self) -> &mut SendQueue<Outlet<S>> {
        &mut self.queue
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> FlowActor for WsConnection<S> {
    fn flow(&self) -> &Flow {
        &self.flow
    }

    /// Ends the connection with a WebSocket close (the actor stops once it is sent).
    fn end(&mut self, ctx: &mut Context<Self>) {
        self.queue.close();
        // A peer that does not read must not keep the actor alive.
        ctx.run_later(Duration::from_secs(2), |_, ctx| ctx.stop());
    }

    fn give_up(&mut self, ctx: &mut Context<Self>) {
        self.queue.abort();
        ctx.stop();
    }

    fn next_duty(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    /// Pings a silent peer, closes one silent for too long.
    fn duty(&mut self, ctx: &mut Context<Self>) {
        // From now, as `run_interval` did: a late timer does not tick twice in a row.
        self.next_tick = Instant::now() + PING_INTERVAL;
        match self.liveness.tick() {
            Tick::Alive => {}
            Tick::Ping => self.write(Message::Ping(Bytes::new()), ctx),
            Tick::Close => self.close(ctx, "no answer to pings"),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Actor for WsConnection<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        flow::watch(self, ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.flow.closed();
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> StreamHandler<Result<Message, WsError>>
    for WsConnection<S>
{
    fn handle(&mut self, item: Result<Message, WsError>, ctx: &mut Context<Self>) {
        self.flow.heard();
        let bytes = match item {
            Ok(Message::Text(text)) => Bytes::from(text),
            Ok(Message::Binary(bytes)) => bytes,
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {
                // tungstenite has queued the pong for a ping; it leaves with the next read.
                self.liveness.heard();
                return;
            }
            Ok(Message::Close(frame)) => {
                debug!("{} closed by the peer: {frame:?}", self.flow);
                return; // tungstenite answers the close; the stream then ends
            }
            Err(e) => {
                let (transport, remote) = (self.flow.transport(), self.flow.remote());
                let kind = Noise::on(ws_error_kind(&e), transport);
                self.flow.guard().peer_log(kind, |s| {
                    info!("closing {transport} connection from {remote}: {e}{s}")
                });
                ctx.stop();
                return;
            }
        };
        self.liveness.heard();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return; // a CRLF keep-alive some clients send as a message
        }
        let source = self.flow.source();
        match handle_message(bytes, source, &self.routers, self.flow.guard()) {
            Handled::Routed => self.flow.got_message(),
            Handled::Answered(answer) => {
                self.flow.got_message();
                <Self as Handler<SendFrame>>::handle(self, SendFrame(answer), ctx);
            }
            Handled::Unparseable => self.close_for(ctx, "not SIP", "not a SIP message"),
            Handled::Flooding => {}
        }
    }
}

/// The kind of a WebSocket read error, for the throttle of its log line.
fn ws_error_kind(e: &WsError) -> &'static str {
    match e {
        WsError::Capacity(_) => "message over -max-stream-message",
        WsError::Protocol(_) => "WebSocket protocol error",
        WsError::Utf8(_) => "text message not UTF-8",
        WsError::Io(_) => "read error",
        _ => "WebSocket error",
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Handler<SendFrame> for WsConnection<S> {
    type Result = ();

    fn handle(&mut self, m: SendFrame, ctx: &mut Context<Self>) {
        // A clone of `Bytes` shares the buffer: the message is not copied either way.
        let message = match Utf8Bytes::try_from(m.0.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(m.0),
        };
        self.write(message, ctx);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> WriteHandler<WsError> for WsConnection<S> {
    fn error(&mut self, e: WsError, _: &mut Self::Context) -> Running {
        debug!("write to {} failed: {e}", self.flow);
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
    fn plain_http_requests_are_told_apart_from_upgrades() {
        let plain = |method: &str, target: &str| RequestHead::Plain {
            method: method.into(),
            target: target.into(),
        };
        for (head, want) in [
            (&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], plain("GET", "/")),
            (b"HEAD /ws HTTP/1.0\n\n", plain("HEAD", "/ws")),
            (
                b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
                plain("GET", "/"),
            ),
            (
                b"GET / HTTP/1.1\r\nconnection: upgrade\r\nupgrade:  WebSocket \r\n\r\n",
                RequestHead::Other,
            ),
            (
                b"GET / HTTP/1.1\r\nUpgrade: foo, websocket\r\n\r\n",
                RequestHead::Other,
            ),
            // Incomplete, not HTTP, not text: tungstenite decides, as before.
            (b"GET / HTTP/1.1\r\nHost: x\r\n", RequestHead::Other),
            (
                b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n",
                RequestHead::Other,
            ),
            (b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n", RequestHead::Other),
            (b"\x16\x03\x01\r\n\r\n", RequestHead::Other),
        ] {
            assert_eq!(
                RequestHead::of(head),
                want,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[tokio::test]
    async fn plain_http_gets_426_and_upgrades_still_work() {
        use async_tungstenite::tungstenite::client::IntoClientRequest;
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        for method in ["GET", "HEAD"] {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let request = format!("{method} / HTTP/1.1\r\nHost: x\r\n\r\n");
            client.write_all(request.as_bytes()).await.unwrap();
            let refused = accept(server, WsOptions::default(), remote).await;
            assert!(
                matches!(&refused, Err(AcceptError::NotUpgrade(r)) if r == &format!("{method} /")),
                "{refused:?}"
            );
            let mut answer = String::new();
            client.read_to_string(&mut answer).await.unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
                "{answer}"
            );
            assert!(answer.contains("\r\nUpgrade: websocket\r\n"), "{answer}");
            assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains(&format!("Content-Length: {}", PLAIN_HTTP_BODY.len())),
                "{head}"
            );
            assert_eq!(
                body,
                if method == "HEAD" {
                    ""
                } else {
                    PLAIN_HTTP_BODY
                }
            );
        }

        // An upgrade: sip is negotiated and messages flow, as without the look at the head.
        let (client, server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(accept(server, WsOptions::default(), remote));
        let mut request = "ws://x/".into_client_request().unwrap();
        request.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("sip"),
        );
        let (mut ws, response) = async_tungstenite::tokio::client_async(request, client)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_PROTOCOL], "sip");
        let mut accepted = server.await.unwrap().unwrap();
        use futures_util::StreamExt;
        ws.send(Message::text("OPTIONS sip:x SIP/2.0\r\n\r\n"))
            .await
            .unwrap();
        match accepted.next().await {
            Some(Ok(Message::Text(t))) => assert!(t.starts_with("OPTIONS"), "{t}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn rewound_stream_reads_the_head_again_then_the_rest() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut rewound = Rewound::new(Bytes::from_static(b"abc"), server);
        client.write_all(b"def").await.unwrap();
        drop(client);
        let mut small = [0u8; 2];
        rewound.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"ab");
        let mut rest = Vec::new();
        rewound.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"cdef");
    }

    /// Messages far larger than [`WS_READ_BUFFER`], whole or in fragments, arrive intact up to
    /// the configured maximum; one byte more is refused.
    #[tokio::test]
    async fn messages_larger_than_the_read_buffer_and_fragmented_ones_arrive_whole() {
        use async_tungstenite::tungstenite::client::IntoClientRequest;
        use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use async_tungstenite::tungstenite::protocol::frame::Frame;
        use futures_util::StreamExt;
        let max = 20_000;
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let options = WsOptions {
            max_message: max,
            ..WsOptions::default()
        };
        let (client, server) = tokio::io::duplex(4 * 1024);
        let server = tokio::spawn(accept(server, options, remote));
        let request = "ws://x/".into_client_request().unwrap();
        let (mut ws, _) = async_tungstenite::tokio::client_async(request, client)
            .await
            .unwrap();
        let mut accepted = server.await.unwrap().unwrap();
        let text = |len: usize, c: char| -> String { std::iter::repeat_n(c, len).collect() };
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(m) = accepted.next().await {
                match m {
                    Ok(Message::Text(t)) => got.push(Ok(t.to_string())),
                    Ok(_) => {}
                    Err(e) => {
                        got.push(Err(ws_error_kind(&e)));
                        break;
                    }
                }
            }
            got
        });
        for len in [1, WS_READ_BUFFER - 14, WS_READ_BUFFER + 1, 4_000, max] {
            ws.send(Message::text(text(len, 'a'))).await.unwrap();
        }
        // One message in three frames (text, continuation, final continuation), 9 KB.
        for (i, part) in ["b", "c", "d"].iter().enumerate() {
            let opcode = match i {
                0 => OpCode::Data(Data::Text),
                _ => OpCode::Data(Data::Continue),
            };
            let frame = Frame::message(text(3_000, part.chars().next().unwrap()), opcode, i == 2);
            ws.send(Message::Frame(frame)).await.unwrap();
        }
        // Refused from its header: the server may close before the whole of it is written.
        let _ = ws.send(Message::text(text(max + 1, 'e'))).await;
        let got = reader.await.unwrap();
        let want_fragmented = text(3_000, 'b') + &text(3_000, 'c') + &text(3_000, 'd');
        let mut want: Vec<Result<String, &str>> =
            [1, WS_READ_BUFFER - 14, WS_READ_BUFFER + 1, 4_000, max]
                .into_iter()
                .map(|len| Ok(text(len, 'a')))
                .collect();
        want.push(Ok(want_fragmented));
        want.push(Err("message over -max-stream-message"));
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!(g == w, "got {:?}", g.as_ref().map(String::len));
        }
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
