//! Opening a SIP-over-WebSocket-over-TLS client connection (RFC 7118) for the load
//! generators: TCP from a chosen source address, TLS without certificate checks (the
//! proxies under test use throw-away self-signed certificates), then the WebSocket upgrade
//! offering the `sip` subprotocol. Each step is bounded by `timeout`.

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpSocket;
use tokio_native_tls::native_tls;

pub type Ws = async_tungstenite::WebSocketStream<
    async_tungstenite::tokio::TokioAdapter<tokio_native_tls::TlsStream<tokio::net::TcpStream>>,
>;

/// The step at which opening a connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// socket creation or bind to the source address
    Bind,
    /// TCP connect refused or not done in time
    Connect,
    /// TLS handshake failed or not done in time
    Tls,
    /// WebSocket upgrade refused or not done in time
    WebSocket,
}

/// A TLS connector that accepts any certificate and name.
pub fn insecure_tls() -> tokio_native_tls::TlsConnector {
    native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .danger_accept_invalid_hostnames(true)
        .build()
        .expect("TLS connector")
        .into()
}

fn ws_config() -> WebSocketConfig {
    // small buffers: a generator holds tens of thousands of these
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Opens `wss://proxy/` from `source` (bound before connect, so that the ephemeral ports
/// of each source address are used: one address alone runs out near 28,000 connections).
pub async fn open(
    tls: &tokio_native_tls::TlsConnector,
    source: Ipv4Addr,
    proxy: SocketAddr,
    timeout: Duration,
) -> Result<Ws, OpenError> {
    let sock = TcpSocket::new_v4().map_err(|_| OpenError::Bind)?;
    sock.bind(SocketAddr::new(IpAddr::V4(source), 0))
        .map_err(|_| OpenError::Bind)?;
    let tcp = match tokio::time::timeout(timeout, sock.connect(proxy)).await {
        Ok(Ok(t)) => t,
        _ => return Err(OpenError::Connect),
    };
    let _ = tcp.set_nodelay(true);
    let host = proxy.ip().to_string();
    let tls = match tokio::time::timeout(timeout, tls.connect(&host, tcp)).await {
        Ok(Ok(t)) => t,
        _ => return Err(OpenError::Tls),
    };
    let mut req = format!("wss://{proxy}/")
        .into_client_request()
        .map_err(|_| OpenError::WebSocket)?;
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
    match tokio::time::timeout(
        timeout,
        async_tungstenite::tokio::client_async_with_config(req, tls, Some(ws_config())),
    )
    .await
    {
        Ok(Ok((ws, _))) => Ok(ws),
        _ => Err(OpenError::WebSocket),
    }
}
