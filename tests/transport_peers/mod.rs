//! Small SIP peers for the transport tests, written on plain sockets: a [`Link`] sends and
//! receives whole SIP messages over UDP, TCP, TLS, WS or WSS; [`Msg`] reads one; the
//! builders write requests and responses by hand; [`TestCa`] issues certificates.
//!
//! Every read is bounded by [`IO_TIMEOUT`] and panics with what was awaited when nothing
//! comes, so a test never hangs. Roundabout itself is started through `tests/common`
//! ([`ProxyPorts::start_roundabout`]), so a binary using this module has `mod common;` too.
#![allow(dead_code)] // each test binary uses a different part of this module
#![allow(clippy::result_large_err)] // tungstenite's handshake callback type
#![allow(clippy::large_enum_variant)] // a handful of links per test

use crate::common::{Peers, Proc, Transport, PROXY_IP};
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::handshake::client::Response;
use async_tungstenite::tungstenite::handshake::server::{
    Request as HttpRequest, Response as ServerResponse,
};
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio_native_tls::native_tls;

/// How long any single read may wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The five transports, as the tests name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Kind {
    /// The Via token: `UDP`, ..., `WSS`.
    pub fn via(self) -> &'static str {
        match self {
            Kind::Udp => "UDP",
            Kind::Tcp => "TCP",
            Kind::Tls => "TLS",
            Kind::Ws => "WS",
            Kind::Wss => "WSS",
        }
    }

    /// The protocol field of a `-trusted-server` dataset.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Udp => "udp",
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
            Kind::Ws => "ws",
            Kind::Wss => "wss",
        }
    }

    /// The `;transport=` URI parameter (RFC 7118: `ws` for WS and WSS), empty for UDP.
    pub fn uri_param(self) -> &'static str {
        match self {
            Kind::Udp => "",
            Kind::Tcp => ";transport=tcp",
            Kind::Tls => ";transport=tls",
            Kind::Ws | Kind::Wss => ";transport=ws",
        }
    }

    pub fn is_ws(self) -> bool {
        matches!(self, Kind::Ws | Kind::Wss)
    }
}

/// Roundabout's listening ports (UDP and TCP share one).
#[derive(Clone, Copy, Debug)]
pub struct ProxyPorts {
    pub ip: IpAddr,
    pub udp_tcp: u16,
    pub tls: u16,
    pub ws: u16,
    pub wss: u16,
}

impl ProxyPorts {
    /// Roundabout's ports for one test on 127.0.0.1: UDP and TCP on the port of
    /// `peers.proxy`, a free port each for TLS, WS and WSS.
    pub fn new(peers: &Peers) -> ProxyPorts {
        ProxyPorts {
            ip: PROXY_IP.into(),
            udp_tcp: peers.proxy.port(),
            tls: peers.port(),
            ws: peers.port(),
            wss: peers.port(),
        }
    }

    pub fn port(&self, kind: Kind) -> u16 {
        match kind {
            Kind::Udp | Kind::Tcp => self.udp_tcp,
            Kind::Tls => self.tls,
            Kind::Ws => self.ws,
            Kind::Wss => self.wss,
        }
    }

    pub fn addr(&self, kind: Kind) -> SocketAddr {
        SocketAddr::new(self.ip, self.port(kind))
    }

    /// The command-line flags for these ports.
    pub fn flags(&self) -> Vec<String> {
        [
            ("-local-ip", self.ip.to_string()),
            ("-udp-port", self.udp_tcp.to_string()),
            ("-tcp-port", self.udp_tcp.to_string()),
            ("-tls-port", self.tls.to_string()),
            ("-ws-port", self.ws.to_string()),
            ("-wss-port", self.wss.to_string()),
        ]
        .into_iter()
        .flat_map(|(f, v)| [f.to_string(), v])
        .collect()
    }

    /// The five listening sockets, as [`Peers::roundabout`] waits for them: UDP, then TCP,
    /// TLS, WS and WSS (all TCP sockets).
    pub fn ready_on(&self) -> [(SocketAddr, Transport); 5] {
        [
            (self.addr(Kind::Udp), Transport::Udp),
            (self.addr(Kind::Tcp), Transport::Tcp),
            (self.addr(Kind::Tls), Transport::Tcp),
            (self.addr(Kind::Ws), Transport::Tcp),
            (self.addr(Kind::Wss), Transport::Tcp),
        ]
    }

    /// Starts `roundabout` with [`ProxyPorts::flags`] and then `extra`, under the open-files
    /// limits `nofile` (soft, hard) when given, and waits until all of
    /// [`ProxyPorts::ready_on`] listen.
    pub fn start_roundabout(
        &self,
        peers: &Peers,
        extra: &[impl AsRef<str>],
        nofile: Option<(u64, u64)>,
    ) -> Proc {
        let mut args = self.flags();
        args.extend(extra.iter().map(|s| s.as_ref().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match nofile {
            Some(limits) => peers.roundabout_nofile(limits, &args, &self.ready_on()),
            None => peers.roundabout(&args, &self.ready_on()),
        }
    }
}

pub trait Rw: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Rw for T {}
pub type BoxRw = Box<dyn Rw>;
pub type Ws = WebSocketStream<TokioAdapter<BoxRw>>;

enum Io {
    Udp {
        socket: UdpSocket,
        peer: Option<SocketAddr>,
    },
    Stream {
        io: BoxRw,
        buf: Vec<u8>,
    },
    Ws(Ws),
}

/// One SIP conversation channel: a UDP socket (and the address to answer), or one
/// connection (TCP, TLS, WS or WSS).
pub struct Link {
    pub kind: Kind,
    pub local: SocketAddr,
    io: Io,
}

impl Link {
    /// A client's link to Roundabout from `local_ip`. TLS and WSS accept any certificate
    /// (Roundabout's own may be self-signed); WS and WSS offer the `sip` subprotocol.
    pub async fn connect(kind: Kind, local_ip: IpAddr, proxy: &ProxyPorts) -> Link {
        let to = proxy.addr(kind);
        if kind == Kind::Udp {
            let socket = UdpSocket::bind((local_ip, 0))
                .await
                .expect("binding a UDP socket");
            let local = socket.local_addr().unwrap();
            let io = Io::Udp {
                socket,
                peer: Some(to),
            };
            return Link { kind, local, io };
        }
        let (io, local) = stream_to(kind, local_ip, to, &insecure_connector()).await;
        let io = match kind {
            Kind::Ws | Kind::Wss => {
                let (ws, response) = ws_client(io, kind, to, Some("sip"))
                    .await
                    .unwrap_or_else(|e| panic!("{kind:?} handshake with {to}: {e}"));
                assert_eq!(
                    response
                        .headers()
                        .get("sec-websocket-protocol")
                        .map(|v| v.to_str().unwrap()),
                    Some("sip"),
                    "the 101 must echo the sip subprotocol"
                );
                Io::Ws(ws)
            }
            _ => Io::Stream {
                io,
                buf: Vec::new(),
            },
        };
        Link { kind, local, io }
    }

    /// Sends one message (to the last sender for a UDP server link).
    pub async fn send(&mut self, text: &str) {
        let kind = self.kind;
        match &mut self.io {
            Io::Udp { socket, peer } => {
                let to = peer.expect("a UDP link answers only after it has heard someone");
                socket.send_to(text.as_bytes(), to).await.expect("UDP send");
            }
            Io::Stream { io, .. } => {
                io.write_all(text.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("{kind:?} write: {e}"));
                io.flush().await.unwrap();
            }
            Io::Ws(ws) => ws
                .send(Message::text(text))
                .await
                .unwrap_or_else(|e| panic!("{kind:?} write: {e}")),
        }
    }

    /// The next SIP message, within [`IO_TIMEOUT`].
    pub async fn recv(&mut self) -> Msg {
        match tokio::time::timeout(IO_TIMEOUT, self.recv_unbounded()).await {
            Ok(m) => m,
            Err(_) => panic!(
                "{:?} link {}: no message within {IO_TIMEOUT:?}",
                self.kind, self.local
            ),
        }
    }

    /// The next request (retransmissions of earlier requests and responses are skipped).
    pub async fn recv_request(&mut self, method: &str) -> Msg {
        loop {
            let m = self.recv().await;
            if m.is_request() && m.method() == method {
                return m;
            }
            assert!(
                m.is_request() || m.status().is_some(),
                "{:?}: unexpected {}",
                self.kind,
                m.start
            );
        }
    }

    /// The next final response (provisional ones are skipped).
    pub async fn recv_final(&mut self) -> Msg {
        loop {
            let m = self.recv().await;
            if m.status().is_some_and(|s| s >= 200) {
                return m;
            }
        }
    }

    async fn recv_unbounded(&mut self) -> Msg {
        let kind = self.kind;
        match &mut self.io {
            Io::Udp { socket, peer } => {
                let mut buf = vec![0u8; 65536];
                let (n, from) = socket.recv_from(&mut buf).await.expect("UDP receive");
                *peer = Some(from);
                Msg::parse(&buf[..n])
            }
            Io::Stream { io, buf } => loop {
                while buf.starts_with(b"\r\n") {
                    buf.drain(..2);
                }
                if let Some(end) = find(buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let length = content_length(&head);
                    if buf.len() >= end + 4 + length {
                        let m = Msg::parse(&buf[..end + 4 + length]);
                        buf.drain(..end + 4 + length);
                        return m;
                    }
                }
                let mut chunk = [0u8; 16384];
                let n = io
                    .read(&mut chunk)
                    .await
                    .unwrap_or_else(|e| panic!("{kind:?} read: {e}"));
                assert!(n > 0, "{kind:?} connection closed by the other side");
                buf.extend_from_slice(&chunk[..n]);
            },
            Io::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return Msg::parse(t.as_bytes()),
                    Some(Ok(Message::Binary(b))) => return Msg::parse(&b),
                    Some(Ok(Message::Close(f))) => {
                        panic!("{kind:?} closed by the other side: {f:?}")
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => panic!("{kind:?} read: {e}"),
                    None => panic!("{kind:?} connection ended"),
                }
            },
        }
    }

    /// The WebSocket under a WS/WSS link (for pings and closing).
    pub fn ws(&mut self) -> &mut Ws {
        match &mut self.io {
            Io::Ws(ws) => ws,
            _ => panic!("{:?} is not a WebSocket link", self.kind),
        }
    }
}

/// A server peer listening on one transport; [`Server::link`] gives the link Roundabout
/// opened (UDP: the socket itself).
pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    tls: Option<tokio_native_tls::TlsAcceptor>,
}

impl Server {
    /// Listens on `addr`; TLS and WSS present `identity` (cert chain PEM, PKCS#8 key PEM).
    pub async fn listen(kind: Kind, addr: SocketAddr, identity: Option<(&str, &str)>) -> Server {
        let tls = identity.map(|(cert, key)| {
            let id = native_tls::Identity::from_pkcs8(cert.as_bytes(), key.as_bytes()).unwrap();
            tokio_native_tls::TlsAcceptor::from(native_tls::TlsAcceptor::new(id).unwrap())
        });
        assert_eq!(
            tls.is_some(),
            matches!(kind, Kind::Tls | Kind::Wss),
            "{kind:?}: identity iff TLS"
        );
        let (udp, tcp) = match kind {
            Kind::Udp => (
                Some(
                    UdpSocket::bind(addr)
                        .await
                        .expect("binding the server's UDP socket"),
                ),
                None,
            ),
            _ => (
                None,
                Some(
                    TcpListener::bind(addr)
                        .await
                        .expect("binding the server's listener"),
                ),
            ),
        };
        Server {
            kind,
            addr,
            udp,
            tcp,
            tls,
        }
    }

    /// The link Roundabout talks to this server on: for UDP the socket, else the next
    /// accepted connection (TLS and WebSocket handshakes done, `sip` echoed).
    pub async fn link(&mut self) -> Link {
        let kind = self.kind;
        if let Some(socket) = self.udp.take() {
            let local = socket.local_addr().unwrap();
            return Link {
                kind,
                local,
                io: Io::Udp { socket, peer: None },
            };
        }
        let listener = self.tcp.as_ref().expect("a listener");
        let (tcp, _) = tokio::time::timeout(IO_TIMEOUT, listener.accept())
            .await
            .unwrap_or_else(|_| panic!("{kind:?} server {}: Roundabout did not connect", self.addr))
            .unwrap();
        let local = tcp.local_addr().unwrap();
        let io: BoxRw = match &self.tls {
            Some(acceptor) => Box::new(
                tokio::time::timeout(IO_TIMEOUT, acceptor.accept(tcp))
                    .await
                    .expect("TLS handshake in time")
                    .expect("TLS handshake"),
            ),
            None => Box::new(tcp),
        };
        let io = if kind.is_ws() {
            let echo_sip = |req: &HttpRequest, mut resp: ServerResponse| {
                let offered = req
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap().to_string());
                assert_eq!(
                    offered.as_deref(),
                    Some("sip"),
                    "Roundabout must offer the sip subprotocol"
                );
                resp.headers_mut()
                    .insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
                Ok(resp)
            };
            let ws = tokio::time::timeout(
                IO_TIMEOUT,
                async_tungstenite::tokio::accept_hdr_async(io, echo_sip),
            )
            .await
            .expect("WebSocket handshake in time")
            .expect("WebSocket handshake");
            Io::Ws(ws)
        } else {
            Io::Stream {
                io,
                buf: Vec::new(),
            }
        };
        Link { kind, local, io }
    }
}

/// A TCP connection from `local_ip` to `to`, wrapped in TLS for TLS and WSS.
pub async fn stream_to(
    kind: Kind,
    local_ip: IpAddr,
    to: SocketAddr,
    tls: &tokio_native_tls::TlsConnector,
) -> (BoxRw, SocketAddr) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local_ip, 0)).unwrap();
    let tcp = tokio::time::timeout(IO_TIMEOUT, socket.connect(to))
        .await
        .unwrap_or_else(|_| panic!("connecting to {to} timed out"))
        .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
    let local = tcp.local_addr().unwrap();
    if matches!(kind, Kind::Tls | Kind::Wss) {
        let tls = tokio::time::timeout(IO_TIMEOUT, tls.connect(&to.ip().to_string(), tcp))
            .await
            .expect("TLS handshake in time")
            .unwrap_or_else(|e| panic!("TLS handshake with {to}: {e}"));
        (Box::new(tls), local)
    } else {
        (Box::new(tcp), local)
    }
}

/// A WebSocket client handshake on `io`, offering `protocol` if given.
pub async fn ws_client(
    io: BoxRw,
    kind: Kind,
    to: SocketAddr,
    protocol: Option<&str>,
) -> Result<(Ws, Response), WsError> {
    ws_client_path(io, kind, to, "/", protocol).await
}

pub async fn ws_client_path(
    io: BoxRw,
    kind: Kind,
    to: SocketAddr,
    path: &str,
    protocol: Option<&str>,
) -> Result<(Ws, Response), WsError> {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    let scheme = if kind == Kind::Wss { "wss" } else { "ws" };
    let mut request = format!("{scheme}://{to}{path}")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
    }
    tokio::time::timeout(
        IO_TIMEOUT,
        async_tungstenite::tokio::client_async(request, io),
    )
    .await
    .expect("WebSocket handshake in time")
}

/// A TLS client that accepts any certificate.
pub fn insecure_connector() -> tokio_native_tls::TlsConnector {
    native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .danger_accept_invalid_hostnames(true)
        .build()
        .unwrap()
        .into()
}

/// A TLS client that trusts `ca_pem` only (besides the system's roots).
pub fn verifying_connector(ca_pem: &str) -> tokio_native_tls::TlsConnector {
    native_tls::TlsConnector::builder()
        .add_root_certificate(native_tls::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
        .into()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| {
            n.trim().eq_ignore_ascii_case("content-length") || n.trim().eq_ignore_ascii_case("l")
        })
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// One SIP message as the peers read it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Msg {
    pub fn parse(bytes: &[u8]) -> Msg {
        let end = find(bytes, b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(bytes)));
        let head = String::from_utf8_lossy(&bytes[..end]).to_string();
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (long_name(n.trim()).to_string(), v.trim().to_string()))
            .collect();
        Msg {
            start,
            headers,
            body: bytes[end + 4..].to_vec(),
        }
    }

    pub fn is_request(&self) -> bool {
        !self.start.starts_with("SIP/2.0 ")
    }

    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap()
    }

    pub fn request_uri(&self) -> &str {
        self.start.split(' ').nth(1).unwrap()
    }

    pub fn status(&self) -> Option<u16> {
        self.start.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    /// Every value of a header, in order, comma-separated values split.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| split_commas(v))
            .collect()
    }

    pub fn first(&self, name: &str) -> Option<String> {
        self.all(name).into_iter().next()
    }

    /// The first value of a header that must be there.
    pub fn get(&self, name: &str) -> String {
        self.first(name)
            .unwrap_or_else(|| panic!("no {name} in:\n{self}"))
    }

    /// The `Route:` header lines of the caller's in-dialog requests after this 2xx: its
    /// Record-Route values in reverse order (RFC 3261 12.1.2).
    pub fn route_set(&self) -> Vec<String> {
        self.all("Record-Route")
            .into_iter()
            .rev()
            .map(|r| format!("Route: {r}"))
            .collect()
    }
}

impl std::fmt::Display for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.start)?;
        for (n, v) in &self.headers {
            writeln!(f, "{n}: {v}")?;
        }
        write!(f, "[{} body bytes]", self.body.len())
    }
}

fn long_name(n: &str) -> &str {
    match n {
        "v" => "Via",
        "f" => "From",
        "t" => "To",
        "i" => "Call-ID",
        "m" => "Contact",
        "l" => "Content-Length",
        "c" => "Content-Type",
        other => other,
    }
}

/// Splits a header value on commas outside `<...>` and quotes.
fn split_commas(v: &str) -> Vec<String> {
    let (mut out, mut cur, mut angle, mut quote) = (Vec::new(), String::new(), false, false);
    for c in v.chars() {
        match c {
            '"' => quote = !quote,
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            ',' if !quote && !angle => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// The URI inside a name-addr (`<sip:...>;params` -> `sip:...`).
pub fn uri_of(name_addr: &str) -> String {
    match (name_addr.find('<'), name_addr.find('>')) {
        (Some(a), Some(b)) => name_addr[a + 1..b].to_string(),
        _ => name_addr.split(';').next().unwrap().trim().to_string(),
    }
}

/// A value of a `;name=value` parameter of a header value (Via branch, To tag...).
pub fn param(value: &str, name: &str) -> Option<String> {
    let after = value.rsplit_once('>').map_or(value, |(_, p)| p);
    after
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

/// A request, written by hand. `headers` come after the standard ones.
pub struct Request<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub via: String,
    pub from: String,
    pub to: String,
    pub call_id: &'a str,
    pub cseq: u32,
    pub headers: Vec<String>,
    pub body: &'a str,
}

impl Request<'_> {
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n",
            self.method, self.uri, self.via
        );
        s += &format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\n",
            self.from, self.to, self.call_id, self.cseq, self.method
        );
        for h in &self.headers {
            s += h;
            s += "\r\n";
        }
        if !self.body.is_empty() {
            s += "Content-Type: application/sdp\r\n";
        }
        s += &format!("Content-Length: {}\r\n\r\n{}", self.body.len(), self.body);
        s
    }
}

/// A response to `req`: its Via, From, To (with `to_tag` added when it has none), Call-ID,
/// CSeq, and for a 2xx to INVITE its Record-Route; then `headers`.
pub fn response(req: &Msg, code: u16, reason: &str, to_tag: &str, headers: &[String]) -> String {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for via in req.all("Via") {
        s += &format!("Via: {via}\r\n");
    }
    let to = req.get("To");
    let to = if param(&to, "tag").is_some() {
        to
    } else {
        format!("{to};tag={to_tag}")
    };
    s += &format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
        req.get("From"),
        req.get("Call-ID"),
        req.get("CSeq")
    );
    if req.method() == "INVITE" && (200..300).contains(&code) {
        for rr in req.all("Record-Route") {
            s += &format!("Record-Route: {rr}\r\n");
        }
    }
    for h in headers {
        s += h;
        s += "\r\n";
    }
    s += "Content-Length: 0\r\n\r\n";
    s
}

/// A WebRTC-sized SDP offer (about 4 KB), to see that large messages pass intact.
pub fn big_sdp() -> String {
    let mut sdp = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n",
    );
    for i in 0..40 {
        sdp += &format!("a=candidate:{i} 1 udp 2122260223 192.0.2.{i} {} typ host generation 0 network-id 1\r\n", 50000 + i);
    }
    sdp += "a=fingerprint:sha-256 8A:7C:D0:5C:2F:1E:4B:8D:92:11:0A:3E:55:6B:19:0F:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n";
    sdp
}

/// A test certificate authority (ECDSA P-256) and the certificates it issues.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "roundabout test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "roundabout test intermediate CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.signed_by(&key, &self.issuer).unwrap().pem();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf certificate for `names` (IPs become IP SANs): `(certificate PEM, PKCS#8 key PEM)`.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].as_str());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A self-signed certificate no one trusts: `(certificate PEM, key PEM)`.
pub fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

// ----- Added for tests/transactions.rs ---------------------------------------------------

impl Link {
    /// The next SIP message if one comes within `within`, None after that silence (also
    /// for more than [`IO_TIMEOUT`]). Cancel-safe: nothing read is lost when it times out.
    pub async fn recv_within(&mut self, within: Duration) -> Option<Msg> {
        tokio::time::timeout(within, self.recv_unbounded())
            .await
            .ok()
    }
}

// ----- Added for tests/security/limits.rs ------------------------------------------------

impl Link {
    /// Reads (and drops) whatever the other side sent until it closes a TCP or TLS link:
    /// the bytes read, or None when the connection is still open after `limit`.
    pub async fn drained_until_closed(&mut self, limit: Duration) -> Option<usize> {
        let Io::Stream { io, buf } = &mut self.io else {
            panic!("{:?}: not a TCP or TLS link", self.kind)
        };
        let mut total = std::mem::take(buf).len();
        let mut chunk = vec![0u8; 64 * 1024];
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(total),
                Ok(Ok(n)) => total += n,
            }
        }
    }
}
