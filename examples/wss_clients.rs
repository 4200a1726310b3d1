//! Connected-clients load generator for the benchmark (`benches/clients.sh`).
//!
//! Opens N WSS connections to a proxy (Roundabout or Kamailio) from several loopback source
//! addresses, registers one user per connection (`sip:uNNNNN@REGISTRAR`) through the proxy
//! to a registrar that this program runs itself on UDP (it answers every REGISTER with 200,
//! the Contact echoed with `expires`, and remembers Contact and Path), keeps the connections
//! alive with WebSocket pings, re-registers every client once over its open connection, then
//! calls a sample of the users from the registrar's side (INVITE / 200 / ACK / BYE / 200,
//! through the proxy, the ACK and BYE following the Record-Route set) and checks that each
//! call arrives on the connection of the user it is for and is answered.
//!
//! With `--storm`, a reconnect storm follows: every client drops its connection at the same
//! moment (no WebSocket close, no TLS close_notify: the TCP connection just closes, as
//! after a client restart or a network change); once every connection is dropped, every
//! client reconnects (TCP + TLS + WebSocket + REGISTER, the same Call-ID, CSeq + 1) as a
//! real client does: a failed attempt is counted by kind (connect, TLS, WebSocket, REGISTER
//! answer, timeout) and retried after a backoff of 200 ms doubling up to 3.2 s (times
//! 0.5-1.0). Measured: the time from the drop until the last client is registered again,
//! the failed attempts, the proxy's CPU, its memory every 100 ms (the peak) and VmHWM, and
//! its connections left in CLOSE_WAIT (old connections it has not closed yet); then the
//! sampled users are called again and must be reached on their new connections.
//!
//! The proxy's memory (VmRSS, VmHWM, Pss summed over `--pids`) is read from /proc before the
//! first connection, after the registrations and after the calls. Results are printed as
//! `RESULT key=value` lines; progress goes to standard error.
//!
//!   cargo build --release --example wss_clients
//!   target/release/examples/wss_clients --proxy 127.0.3.1:15443 --registrar 127.0.3.4:15070 \
//!       --sources 127.0.1.1-8 -n 10000 --pids 1234
//!
//! Options (defaults in brackets): -n N [2000], --proxy IP:PORT (WSS), --registrar IP:PORT
//! (UDP, bound by this program), --sources A.B.C.X-Y [127.0.1.1-8] (source addresses, used in
//! turn), --concurrency C [200] (connections + registrations in flight), --calls K [200]
//! (sampled users called), --call-concurrency [10], --keepalive S [25] (WebSocket ping
//! interval per client), --expires S [3600], --pids P,P.. (processes whose memory is
//! measured), --settle S [3] (wait before a memory reading), --hold S [0] (keep every client
//! connected this long after the calls), --timeout S [600] (bound of the whole run),
//! --ready-file F and --release-file F (when both are given: after the memory reading, write
//! F1 and keep every client connected until F2 exists or the run's timeout; the benchmark uses
//! this to hold several generators' clients connected at once and count them; when F2
//! holds a Unix time in ms, the storm starts at that moment, so that several generators drop
//! their clients together), --storm (run the reconnect storm), --storm-concurrency C [2000]
//! (reconnections in flight at most), --storm-timeout S [120] (clients not back by then give
//! up).
//! Every wait is bounded; the exit code is 0 only when every registration, re-registration
//! and sampled call succeeded, no connection was lost and, with --storm, every client came
//! back and every call after the storm was answered (failed attempts that were retried do
//! not count against it: they are reported).

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_native_tls::native_tls;

#[path = "common/sip.rs"]
mod sip;
use sip::{
    all_values, cseq_method, header, method_of, request_uri, response, status_of, uri_of, user_of,
};

const TIMEOUT: Duration = Duration::from_secs(10);
/// A registration through a proxy that retransmits over UDP may take up to Timer F.
const REG_TIMEOUT: Duration = Duration::from_secs(34);

#[derive(Clone, Debug)]
struct Cfg {
    n: usize,
    proxy: SocketAddr,
    registrar: SocketAddr,
    sources: Vec<Ipv4Addr>,
    concurrency: usize,
    calls: usize,
    call_concurrency: usize,
    keepalive: u64,
    expires: u32,
    pids: Vec<u32>,
    settle: u64,
    hold: u64,
    timeout: u64,
    ready_file: Option<String>,
    release_file: Option<String>,
    storm: bool,
    storm_concurrency: usize,
    storm_timeout: u64,
}

fn parse_args() -> Cfg {
    let mut c = Cfg {
        n: 2000,
        proxy: "127.0.3.1:15443".parse().unwrap(),
        registrar: "127.0.3.4:15070".parse().unwrap(),
        sources: (1..=8).map(|i| Ipv4Addr::new(127, 0, 1, i)).collect(),
        concurrency: 200,
        calls: 200,
        call_concurrency: 10,
        keepalive: 25,
        expires: 3600,
        pids: vec![],
        settle: 3,
        hold: 0,
        timeout: 600,
        ready_file: None,
        release_file: None,
        storm: false,
        storm_concurrency: 2000,
        storm_timeout: 120,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let bad = |m: &str| -> ! {
        eprintln!("wss_clients: {m} (see the comment at the top of examples/wss_clients.rs)");
        std::process::exit(2)
    };
    while i < args.len() {
        if args[i] == "--storm" {
            c.storm = true;
            i += 1;
            continue;
        }
        let v = args
            .get(i + 1)
            .cloned()
            .unwrap_or_else(|| bad("missing value"));
        let num = |v: &str| {
            v.parse::<u64>()
                .unwrap_or_else(|_| bad(&format!("bad number {v}")))
        };
        match args[i].as_str() {
            "-n" => c.n = num(&v) as usize,
            "--proxy" => c.proxy = v.parse().unwrap_or_else(|_| bad("bad --proxy")),
            "--registrar" => c.registrar = v.parse().unwrap_or_else(|_| bad("bad --registrar")),
            "--sources" => {
                let (base, range) = v.rsplit_once('.').unwrap_or_else(|| bad("bad --sources"));
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                c.sources = (num(a)..=num(b))
                    .map(|x| {
                        format!("{base}.{x}")
                            .parse()
                            .unwrap_or_else(|_| bad("bad --sources"))
                    })
                    .collect();
            }
            "--concurrency" => c.concurrency = num(&v).max(1) as usize,
            "--calls" => c.calls = num(&v) as usize,
            "--call-concurrency" => c.call_concurrency = num(&v).max(1) as usize,
            "--keepalive" => c.keepalive = num(&v).max(1),
            "--expires" => c.expires = num(&v) as u32,
            "--pids" => {
                c.pids = v
                    .split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(|s| num(s) as u32)
                    .collect()
            }
            "--settle" => c.settle = num(&v),
            "--hold" => c.hold = num(&v),
            "--timeout" => c.timeout = num(&v),
            "--ready-file" => c.ready_file = Some(v),
            "--release-file" => c.release_file = Some(v),
            "--storm-concurrency" => c.storm_concurrency = num(&v).max(1) as usize,
            "--storm-timeout" => c.storm_timeout = num(&v).max(1),
            o => bad(&format!("unknown option {o}")),
        }
        i += 2;
    }
    if c.sources.is_empty() {
        bad("no --sources");
    }
    c
}

// ------------------------------------------------------------------ SIP text helpers

/// host:port of a SIP URI (port 5060 when absent), IPv4 only.
fn addr_of(uri: &str) -> Option<SocketAddr> {
    let rest = uri.split_once(':')?.1;
    let hp = rest.rsplit_once('@').map(|x| x.1).unwrap_or(rest);
    let hp = hp.split([';', '?', '>']).next()?;
    let (h, p) = hp.split_once(':').unwrap_or((hp, "5060"));
    Some(SocketAddr::new(h.parse().ok()?, p.parse().ok()?))
}

// ------------------------------------------------------------------ counters

/// Why one connect + register attempt failed.
#[derive(Clone, Copy, Debug)]
enum AttemptError {
    /// TCP connect refused or not answered within 10 s
    Connect,
    /// TLS handshake failed or took more than 10 s
    Tls,
    /// WebSocket upgrade refused or took more than 10 s
    Ws,
    /// a non-2xx final answer to the REGISTER, or the connection closed before the answer
    Answer,
    /// no final answer to the REGISTER within 34 s
    Timeout,
}

/// Failed attempts by kind.
#[derive(Default)]
struct Failures {
    connect: AtomicU64,
    tls: AtomicU64,
    ws: AtomicU64,
    answer: AtomicU64,
    timeout: AtomicU64,
}

impl Failures {
    fn count(&self, e: AttemptError) {
        let c = match e {
            AttemptError::Connect => &self.connect,
            AttemptError::Tls => &self.tls,
            AttemptError::Ws => &self.ws,
            AttemptError::Answer => &self.answer,
            AttemptError::Timeout => &self.timeout,
        };
        c.fetch_add(1, Relaxed);
    }

    fn total(&self) -> u64 {
        [
            &self.connect,
            &self.tls,
            &self.ws,
            &self.answer,
            &self.timeout,
        ]
        .iter()
        .map(|c| c.load(Relaxed))
        .sum()
    }

    /// `RESULT {prefix}connect=..` and so on.
    fn report(&self, prefix: &str) {
        result(&format!("{prefix}connect"), self.connect.load(Relaxed));
        result(&format!("{prefix}tls"), self.tls.load(Relaxed));
        result(&format!("{prefix}ws"), self.ws.load(Relaxed));
        result(&format!("{prefix}reg_answer"), self.answer.load(Relaxed));
        result(&format!("{prefix}reg_timeout"), self.timeout.load(Relaxed));
    }
}

#[derive(Default)]
struct Counters {
    /// first registrations that failed, by kind
    first: Failures,
    reg_ok: AtomicU64,
    rereg_ok: AtomicU64,
    rereg_fail: AtomicU64,
    done: AtomicU64,
    redone: AtomicU64,
    /// clients whose connection is open and registered right now
    live: AtomicU64,
    lost: AtomicU64,
    invites: AtomicU64,
    wrong_conn: AtomicU64,
    acks: AtomicU64,
    byes: AtomicU64,
    pings: AtomicU64,
    registrar_regs: AtomicU64,
    /// storm: connections dropped, clients registered again, clients that gave up at the
    /// storm's deadline, failed attempts by kind, and when the last one was back (µs
    /// after the drop)
    storm_closed: AtomicU64,
    storm_back: AtomicU64,
    storm_gave_up: AtomicU64,
    storm: Failures,
    storm_last_us: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle,
    ReRegister,
    /// every client drops its connection
    Storm,
    /// every client has dropped it: reconnect and register again
    Reconnect,
}

struct Binding {
    contact: String,
    path: Vec<String>,
}

struct Shared {
    cfg: Cfg,
    c: Counters,
    tls: tokio_native_tls::TlsConnector,
    domain: String,
    /// permits for re-registrations in flight
    rereg: Arc<Semaphore>,
    /// permits for storm reconnections in flight (connect + TLS + WS + REGISTER)
    storm_slots: Semaphore,
    /// the moment of the storm's drop
    storm_t0: OnceLock<Instant>,
    bindings: Mutex<HashMap<String, Binding>>,
    /// Call-ID -> the call waiting for its responses
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<String>>>,
}

type Ws = async_tungstenite::WebSocketStream<
    async_tungstenite::tokio::TokioAdapter<tokio_native_tls::TlsStream<tokio::net::TcpStream>>,
>;

fn ws_config() -> WebSocketConfig {
    // small buffers: the generator holds tens of thousands of these
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn open(sh: &Shared, i: usize) -> Result<Ws, AttemptError> {
    let src = sh.cfg.sources[i % sh.cfg.sources.len()];
    let sock = TcpSocket::new_v4().map_err(|_| AttemptError::Connect)?;
    sock.bind(SocketAddr::new(IpAddr::V4(src), 0))
        .map_err(|_| AttemptError::Connect)?;
    let tcp = match tokio::time::timeout(TIMEOUT, sock.connect(sh.cfg.proxy)).await {
        Ok(Ok(t)) => t,
        _ => return Err(AttemptError::Connect),
    };
    let _ = tcp.set_nodelay(true);
    let host = sh.cfg.proxy.ip().to_string();
    let tls = match tokio::time::timeout(TIMEOUT, sh.tls.connect(&host, tcp)).await {
        Ok(Ok(t)) => t,
        _ => return Err(AttemptError::Tls),
    };
    let mut req = format!("wss://{}/", sh.cfg.proxy)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
    match tokio::time::timeout(
        TIMEOUT,
        async_tungstenite::tokio::client_async_with_config(req, tls, Some(ws_config())),
    )
    .await
    {
        Ok(Ok((ws, _))) => Ok(ws),
        _ => Err(AttemptError::Ws),
    }
}

fn register_msg(sh: &Shared, i: usize, cseq: u32) -> String {
    let (d, e) = (&sh.domain, sh.cfg.expires);
    format!(
        "REGISTER sip:{d} SIP/2.0\r\n\
         Via: SIP/2.0/WSS c{i}.invalid;branch=z9hG4bK-r{i}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:u{i:05}@{d}>\r\n\
         From: <sip:u{i:05}@{d}>;tag=r{i}\r\n\
         Call-ID: reg-{i}@bench.invalid\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:u{i:05}@c{i}.invalid;transport=ws>;expires={e}\r\n\
         Expires: {e}\r\n\
         Supported: path, outbound\r\n\
         User-Agent: roundabout-bench\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// (status, CSeq number) of a final response to a REGISTER; None for anything else.
fn register_answer(text: &str) -> Option<(u16, u32)> {
    let code = status_of(text).filter(|c| *c >= 200)?;
    if cseq_method(text) != "REGISTER" {
        return None;
    }
    let n = header(text, "CSeq", None)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((code, n))
}

/// A new connection (TCP + TLS + WebSocket) and a REGISTER over it, answered 2xx.
async fn connect_and_register(sh: &Shared, i: usize, cseq: u32) -> Result<Ws, AttemptError> {
    let mut ws = open(sh, i).await?;
    ws.send(Message::text(register_msg(sh, i, cseq)))
        .await
        .map_err(|_| AttemptError::Answer)?;
    let answer = async {
        while let Some(m) = ws.next().await {
            let text = match m {
                Ok(Message::Text(t)) => t.to_string(),
                Ok(Message::Binary(b)) => String::from_utf8_lossy(&b).into_owned(),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            match register_answer(&text) {
                Some((code, n)) if n == cseq && code / 100 == 2 => return Ok(()),
                Some((_, n)) if n == cseq => break,
                _ => {}
            }
        }
        Err(AttemptError::Answer)
    };
    match tokio::time::timeout(REG_TIMEOUT, answer).await {
        Ok(Ok(())) => Ok(ws),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(AttemptError::Timeout),
    }
}

/// One client: connect and register, then stay connected (answer calls, ping, re-register
/// on request); in a storm, drop the connection, wait until every client has dropped its
/// own, and reconnect.
async fn client(
    sh: Arc<Shared>,
    i: usize,
    permit: tokio::sync::OwnedSemaphorePermit,
    mut phase: watch::Receiver<Phase>,
) {
    let c = &sh.c;
    let mut cseq = 1u32;
    let first = connect_and_register(&sh, i, cseq).await;
    drop(permit);
    let mut ws = match first {
        Ok(ws) => {
            c.reg_ok.fetch_add(1, Relaxed);
            c.done.fetch_add(1, Relaxed);
            ws
        }
        Err(e) => {
            c.first.count(e);
            c.done.fetch_add(1, Relaxed);
            return;
        }
    };
    loop {
        c.live.fetch_add(1, Relaxed);
        let storm = session(&sh, i, ws, &mut cseq, &mut phase).await;
        c.live.fetch_sub(1, Relaxed);
        if !storm {
            return;
        }
        c.storm_closed.fetch_add(1, Relaxed);
        if phase.wait_for(|p| *p != Phase::Storm).await.is_err() {
            return;
        }
        match reconnect(&sh, i, &mut cseq).await {
            Some(w) => ws = w,
            None => return,
        }
    }
}

/// Pause before a client's next reconnection attempt: 200 ms doubling up to 3.2 s, times
/// 0.5-1.0 spread over the clients so that the retries do not come back in waves.
fn backoff(i: usize, attempt: u32) -> Duration {
    let base = 200u64 << attempt.clamp(1, 5).saturating_sub(1);
    let spread = 500 + (i as u64 * 7919 + attempt as u64 * 104_729) % 501;
    Duration::from_millis(base * spread / 1000)
}

/// Reconnects after the storm's drop, retrying with a backoff until the storm's deadline;
/// None when the client gave up.
async fn reconnect(sh: &Shared, i: usize, cseq: &mut u32) -> Option<Ws> {
    let c = &sh.c;
    let t0 = *sh.storm_t0.get()?;
    let deadline = t0 + Duration::from_secs(sh.cfg.storm_timeout);
    let attempts = async {
        let mut attempt = 0;
        loop {
            let slot = sh.storm_slots.acquire().await.ok()?;
            attempt += 1;
            *cseq += 1;
            match connect_and_register(sh, i, *cseq).await {
                Ok(ws) => return Some(ws),
                Err(e) => c.storm.count(e),
            }
            drop(slot);
            tokio::time::sleep(backoff(i, attempt)).await;
        }
    };
    match tokio::time::timeout_at(deadline.into(), attempts).await {
        Ok(Some(ws)) => {
            c.storm_back.fetch_add(1, Relaxed);
            c.storm_last_us
                .fetch_max(t0.elapsed().as_micros() as u64, Relaxed);
            Some(ws)
        }
        _ => {
            c.storm_gave_up.fetch_add(1, Relaxed);
            None
        }
    }
}

/// A registered connection until it closes (false) or a storm drops it (true): answers
/// calls, sends WebSocket pings, re-registers when asked.
async fn session(
    sh: &Shared,
    i: usize,
    mut ws: Ws,
    cseq: &mut u32,
    phase: &mut watch::Receiver<Phase>,
) -> bool {
    let c = &sh.c;
    let user = format!("u{i:05}");
    // pending re-registration: (cseq, deadline, permit held while it is in flight)
    let mut pending: Option<(u32, Instant, Option<tokio::sync::OwnedSemaphorePermit>)> = None;
    let ka = Duration::from_secs(sh.cfg.keepalive);
    // spread the pings over the interval
    let offset = Duration::from_millis((i as u64 * 7919) % (sh.cfg.keepalive * 1000));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + offset + ka, ka);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let finish = |ok: bool| {
        if ok {
            c.rereg_ok.fetch_add(1, Relaxed);
        } else {
            c.rereg_fail.fetch_add(1, Relaxed);
        }
        c.redone.fetch_add(1, Relaxed);
    };
    loop {
        tokio::select! {
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        if pending.take().is_some() {
                            finish(false);
                        }
                        c.lost.fetch_add(1, Relaxed);
                        return false;
                    }
                    Some(Ok(_)) => continue, // ping / pong: tungstenite answers pings itself
                };
                if status_of(&text).is_some() {
                    if let Some((code, n)) = register_answer(&text) {
                        if pending.as_ref().is_some_and(|p| p.0 == n) {
                            pending = None;
                            finish(code / 100 == 2);
                        }
                    }
                    continue;
                }
                let method = method_of(&text).to_string();
                let reply = match method.as_str() {
                    "INVITE" => {
                        c.invites.fetch_add(1, Relaxed);
                        let to_user = header(&text, "To", Some("t")).map(|v| user_of(uri_of(v))).unwrap_or("");
                        if user_of(request_uri(&text)) != user || to_user != user {
                            c.wrong_conn.fetch_add(1, Relaxed);
                            eprintln!("client {user}: INVITE for {} / To {to_user} on its connection", request_uri(&text));
                            Some(response(&text, 404, "Not Here", "x", &[], None))
                        } else {
                            Some(response(&text, 200, "OK", &format!("a{i}"), &[
                                format!("Contact: <sip:{user}@c{i}.invalid;transport=ws>"),
                            ], None))
                        }
                    }
                    "ACK" => { c.acks.fetch_add(1, Relaxed); None }
                    "BYE" => { c.byes.fetch_add(1, Relaxed); Some(response(&text, 200, "OK", "x", &[], None)) }
                    "" => None,
                    _ => Some(response(&text, 200, "OK", "x", &[], None)),
                };
                if let Some(r) = reply {
                    let _ = ws.send(Message::text(r)).await;
                }
            }
            _ = ping.tick() => {
                c.pings.fetch_add(1, Relaxed);
                let _ = ws.send(Message::Ping(Bytes::new())).await;
            }
            _ = check.tick() => {
                if pending.as_ref().is_some_and(|p| Instant::now() > p.1) {
                    pending = None;
                    finish(false);
                }
            }
            r = phase.changed() => {
                if r.is_err() { return false; }
                let p = *phase.borrow_and_update();
                match p {
                    // dropped as a network blip or a client restart would: no WebSocket
                    // close, no TLS close_notify, the TCP connection just closes
                    Phase::Storm => return true,
                    Phase::ReRegister if pending.is_none() => {
                        let permit = sh.rereg.clone().acquire_owned().await.ok();
                        *cseq += 1;
                        if ws.send(Message::text(register_msg(sh, i, *cseq))).await.is_err() {
                            finish(false);
                        } else {
                            pending = Some((*cseq, Instant::now() + REG_TIMEOUT, permit));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

// ------------------------------------------------------------------ registrar and calls

async fn registrar(sh: Arc<Shared>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(_) => continue,
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if status_of(&msg).is_some() {
            let cid = header(&msg, "Call-ID", Some("i")).unwrap_or("").to_string();
            if let Some(tx) = sh.calls.lock().unwrap().get(&cid) {
                let _ = tx.send(msg);
            }
            continue;
        }
        match method_of(&msg) {
            "REGISTER" => {
                sh.c.registrar_regs.fetch_add(1, Relaxed);
                let contact = header(&msg, "Contact", Some("m")).unwrap_or("").to_string();
                let uri = uri_of(&contact).to_string();
                let user = header(&msg, "To", Some("t"))
                    .map(|v| user_of(uri_of(v)).to_string())
                    .unwrap_or_default();
                let path = all_values(&msg, "Path", None);
                let mut extra = vec![format!("Contact: <{uri}>;expires={}", sh.cfg.expires)];
                for p in &path {
                    extra.push(format!("Path: {p}"));
                }
                sh.bindings
                    .lock()
                    .unwrap()
                    .insert(user, Binding { contact: uri, path });
                let r = response(&msg, 200, "OK", "reg", &extra, None);
                let _ = sock.send_to(r.as_bytes(), from).await;
            }
            "ACK" => {}
            "" => {}
            _ => {
                let r = response(&msg, 200, "OK", "srv", &[], None);
                let _ = sock.send_to(r.as_bytes(), from).await;
            }
        }
    }
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.3.4\r\ns=-\r\nc=IN IP4 127.0.3.4\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n";

/// Sends `msg` to `to` and waits for a final response (retransmitting every 500 ms until a
/// provisional arrives, as Timer A/E on UDP would).
async fn transact(
    sock: &UdpSocket,
    rx: &mut mpsc::UnboundedReceiver<String>,
    msg: &str,
    to: SocketAddr,
    method: &str,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut provisional = false;
    let _ = sock.send_to(msg.as_bytes(), to).await;
    loop {
        let wait = if provisional {
            Duration::from_secs(8)
        } else {
            Duration::from_millis(500)
        };
        match tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + wait), rx.recv())
            .await
        {
            Ok(Some(r)) => {
                if cseq_method(&r) != method {
                    continue;
                }
                match status_of(&r) {
                    Some(s) if s >= 200 => return Ok(r),
                    Some(_) => provisional = true,
                    None => {}
                }
            }
            Ok(None) => return Err("channel closed".into()),
            Err(_) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!("no final response to {method}"));
                }
                if !provisional {
                    let _ = sock.send_to(msg.as_bytes(), to).await;
                }
            }
        }
    }
}

/// One call from the registrar's side to user `i`.
async fn call(sh: Arc<Shared>, sock: Arc<UdpSocket>, i: usize, k: usize) -> Result<(), String> {
    let user = format!("u{i:05}");
    let (target, path) = {
        let b = sh.bindings.lock().unwrap();
        let b = b.get(&user).ok_or(format!("{user}: no binding"))?;
        (b.contact.clone(), b.path.clone())
    };
    let next = match path.first() {
        Some(p) => addr_of(uri_of(p)),
        None => addr_of(&target),
    }
    .ok_or(format!("{user}: no address in {target} / {path:?}"))?;
    let me = sh.cfg.registrar;
    let d = &sh.domain;
    let cid = format!("call-{k}-{i}@bench.invalid");
    let (tx, mut rx) = mpsc::unbounded_channel();
    sh.calls.lock().unwrap().insert(cid.clone(), tx);
    let routes: String = path.iter().map(|p| format!("Route: {p}\r\n")).collect();
    let invite = format!(
        "INVITE {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-c{k}-1;rport\r\n\
         {routes}Max-Forwards: 70\r\n\
         From: <sip:caller@{d}>;tag=c{k}\r\n\
         To: <sip:{user}@{d}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{me}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    let result = async {
        let ok = transact(&sock, &mut rx, &invite, next, "INVITE").await?;
        if status_of(&ok) != Some(200) {
            return Err(format!(
                "{user}: INVITE answered {}",
                ok.lines().next().unwrap_or("")
            ));
        }
        let to = header(&ok, "To", Some("t")).unwrap_or("").to_string();
        let remote = header(&ok, "Contact", Some("m"))
            .map(|v| uri_of(v).to_string())
            .unwrap_or_default();
        let mut rr = all_values(&ok, "Record-Route", None);
        rr.reverse();
        let dst = match rr.first() {
            Some(r) => addr_of(uri_of(r)),
            None => addr_of(&remote),
        }
        .ok_or(format!(
            "{user}: no next hop for ACK/BYE (Contact {remote}, RR {rr:?})"
        ))?;
        let routes: String = rr.iter().map(|r| format!("Route: {r}\r\n")).collect();
        let in_dialog = |method: &str, n: u32| {
            format!(
                "{method} {remote} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {me};branch=z9hG4bK-c{k}-{n};rport\r\n\
                 {routes}Max-Forwards: 70\r\n\
                 From: <sip:caller@{d}>;tag=c{k}\r\n\
                 To: {to}\r\n\
                 Call-ID: {cid}\r\n\
                 CSeq: {n} {method}\r\n\
                 Content-Length: 0\r\n\r\n",
                n = if method == "ACK" { 1 } else { n }
            )
        };
        let _ = sock.send_to(in_dialog("ACK", 2).as_bytes(), dst).await;
        let bye = transact(&sock, &mut rx, &in_dialog("BYE", 2), dst, "BYE").await?;
        if status_of(&bye) != Some(200) {
            return Err(format!(
                "{user}: BYE answered {}",
                bye.lines().next().unwrap_or("")
            ));
        }
        Ok(())
    }
    .await;
    sh.calls.lock().unwrap().remove(&cid);
    result
}

/// Calls the sampled users (`--calls` of them, spread over 1..N) from the registrar's side,
/// `--call-concurrency` at a time; `round` keeps the Call-IDs of later rounds apart.
/// Returns the calls answered.
async fn sampled_calls(sh: &Arc<Shared>, sock: &Arc<UdpSocket>, round: usize) -> u64 {
    let (n, k) = (sh.cfg.n, sh.cfg.calls.min(sh.cfg.n));
    let c = &sh.c;
    let before = (
        c.invites.load(Relaxed),
        c.acks.load(Relaxed),
        c.byes.load(Relaxed),
    );
    let wrong = c.wrong_conn.load(Relaxed);
    let t0 = Instant::now();
    let call_sem = Arc::new(Semaphore::new(sh.cfg.call_concurrency));
    let mut handles = Vec::new();
    for j in 0..k {
        let i = 1 + j * n / k.max(1);
        let permit = call_sem.clone().acquire_owned().await.unwrap();
        let (sh2, s2) = (sh.clone(), sock.clone());
        handles.push(tokio::spawn(async move {
            let r = call(sh2, s2, i, round * k + j).await;
            drop(permit);
            r
        }));
    }
    let mut calls_ok = 0u64;
    let mut shown = 0;
    for h in handles {
        match h.await {
            Ok(Ok(())) => calls_ok += 1,
            Ok(Err(e)) => {
                if shown < 10 {
                    eprintln!("call failed: {e}");
                    shown += 1;
                }
            }
            Err(e) => eprintln!("call task: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!(
        "calls: {calls_ok}/{k} answered in {:.1} s; at the clients: {} INVITEs, {} ACKs, {} BYEs, {} on a wrong connection",
        t0.elapsed().as_secs_f64(),
        c.invites.load(Relaxed) - before.0,
        c.acks.load(Relaxed) - before.1,
        c.byes.load(Relaxed) - before.2,
        c.wrong_conn.load(Relaxed) - wrong
    );
    calls_ok
}

// ------------------------------------------------------------------ memory

#[derive(Clone, Copy, Default, Debug)]
struct Mem {
    rss: u64,
    hwm: u64,
    pss: u64,
    /// utime + stime, clock ticks (100 per second on Linux)
    ticks: u64,
}

fn field_kb(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// `name` (a /proc/PID/`file` field in kB) summed over `pids`.
fn sum_kb(pids: &[u32], file: &str, name: &str) -> u64 {
    pids.iter()
        .map(|p| {
            let text = std::fs::read_to_string(format!("/proc/{p}/{file}")).unwrap_or_default();
            field_kb(&text, name)
        })
        .sum()
}

fn memory(pids: &[u32]) -> Mem {
    let mut m = Mem {
        pss: sum_kb(pids, "smaps_rollup", "Pss:"),
        ..Mem::default()
    };
    for p in pids {
        let st = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        m.rss += field_kb(&st, "VmRSS:");
        m.hwm += field_kb(&st, "VmHWM:");
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(") ") {
            let f: Vec<&str> = rest.split(' ').collect();
            m.ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    m
}

fn result(key: &str, v: impl std::fmt::Display) {
    println!("RESULT {key}={v}");
}

// ------------------------------------------------------------------ reconnect storm

/// Proxy-side TCP sockets of `addr` (IPv4) in /proc/net/tcp: (ESTABLISHED, CLOSE_WAIT). A
/// connection its client closed stays in CLOSE_WAIT until the proxy closes its end.
fn proxy_sockets(addr: SocketAddr) -> (u64, u64) {
    let IpAddr::V4(ip) = addr.ip() else {
        return (0, 0);
    };
    // the kernel prints the address as a native-endian u32 of the network-order bytes
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    );
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    // the kernel lists the table a page at a time: a socket that moves while it is read may
    // be listed twice, so count each (peer, state) once
    let mut seen = std::collections::HashSet::new();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().take(4).collect();
        if let [_, l, peer, state @ ("01" | "08")] = f[..] {
            if l == local {
                seen.insert((peer, state));
            }
        }
    }
    let established = seen.iter().filter(|(_, s)| *s == "01").count() as u64;
    (established, seen.len() as u64 - established)
}

/// The highest memory readings of the proxy seen so far.
#[derive(Clone, Copy, Default, Debug)]
struct Peak {
    rss: u64,
    pss: u64,
    rss_samples: u64,
    pss_samples: u64,
    /// the slowest PSS reading, ms
    slowest_pss_ms: u64,
}

/// Reads the proxy's memory on a thread of its own (so a slow /proc read does not stall the
/// clients) until `finish`: VmRSS every 100 ms; PSS too, unless reading it takes longer
/// (smaps_rollup walks the page tables: Kamailio's shared memory is large), then it waits
/// 9 times its reading time, so that PSS readings take at most a tenth of a core.
struct PeakSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Peak>,
}

impl PeakSampler {
    fn start(pids: Vec<u32>) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut p = Peak::default();
            let mut next_pss = Instant::now();
            while !flag.load(Relaxed) {
                let t = Instant::now();
                p.rss = p.rss.max(sum_kb(&pids, "status", "VmRSS:"));
                p.rss_samples += 1;
                if t >= next_pss {
                    let t_pss = Instant::now();
                    p.pss = p.pss.max(sum_kb(&pids, "smaps_rollup", "Pss:"));
                    p.pss_samples += 1;
                    p.slowest_pss_ms = p.slowest_pss_ms.max(t_pss.elapsed().as_millis() as u64);
                    next_pss = Instant::now() + t_pss.elapsed() * 9;
                }
                std::thread::sleep(Duration::from_millis(100).saturating_sub(t.elapsed()));
            }
            p
        });
        PeakSampler { stop, thread }
    }

    fn finish(self) -> Peak {
        self.stop.store(true, Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The reconnect storm: every registered client drops its connection at once; when all
/// have, all reconnect (TCP + TLS + WebSocket + REGISTER, at most --storm-concurrency in
/// flight, failed attempts retried with a backoff until --storm-timeout). Measures the
/// time until the last client is registered again, the failed attempts by kind, the
/// proxy's CPU and its peak memory, then calls the sampled users again: they must arrive
/// on the new connections. True when every client came back and every call was answered.
async fn storm(
    sh: &Arc<Shared>,
    sock: &Arc<UdpSocket>,
    phase: &watch::Sender<Phase>,
    before: Mem,
    deadline: Instant,
) -> bool {
    let c = &sh.c;
    let gen = [std::process::id()];
    let g0 = memory(&gen).ticks;
    let sampler = PeakSampler::start(sh.cfg.pids.clone());
    let t0 = Instant::now();
    // when the drop happened, to check that several generators dropped together
    let t0_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let _ = sh.storm_t0.set(t0);
    let _ = phase.send(Phase::Storm);
    // the barrier: every connection is dropped before the first reconnection
    while c.live.load(Relaxed) > 0 && t0.elapsed() < TIMEOUT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dropped = c.storm_closed.load(Relaxed);
    let close_ms = t0.elapsed().as_millis();
    let _ = phase.send(Phase::Reconnect);
    let limit = deadline.min(t0 + Duration::from_secs(sh.cfg.storm_timeout) + TIMEOUT);
    let mut last = Instant::now();
    while c.storm_back.load(Relaxed) + c.storm_gave_up.load(Relaxed) < dropped
        && Instant::now() < limit
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last.elapsed() > Duration::from_secs(5) {
            last = Instant::now();
            eprintln!(
                "  {:>6.1} s: {} back, {} failed attempts",
                t0.elapsed().as_secs_f64(),
                c.storm_back.load(Relaxed),
                c.storm.total()
            );
        }
    }
    let wall = t0.elapsed();
    let after = memory(&sh.cfg.pids);
    let gen_ms = (memory(&gen).ticks - g0) * 10;
    let peak = sampler.finish();
    let (established, close_wait) = proxy_sockets(sh.cfg.proxy);
    let back = c.storm_back.load(Relaxed);
    let secs = c.storm_last_us.load(Relaxed) as f64 / 1e6;
    let proxy_ms = (after.ticks - before.ticks) * 10;
    eprintln!(
        "storm: {dropped} dropped in {close_ms} ms, {back} back in {secs:.2} s, {} gave up, \
         {} failed attempts; proxy CPU {:.0} %, peak RSS {} MiB (before {} MiB), \
         {established} established / {close_wait} CLOSE_WAIT at the proxy",
        c.storm_gave_up.load(Relaxed),
        c.storm.total(),
        proxy_ms as f64 / 10.0 / wall.as_secs_f64().max(1e-3),
        peak.rss / 1024,
        before.rss / 1024
    );
    result("storm_concurrency", sh.cfg.storm_concurrency);
    result("storm_drop_unix_ms", t0_unix_ms);
    result("storm_dropped", dropped);
    result("storm_close_ms", close_ms);
    result("storm_back", back);
    result("storm_gave_up", c.storm_gave_up.load(Relaxed));
    result("storm_secs", format!("{secs:.2}"));
    result("storm_wall_ms", wall.as_millis());
    c.storm.report("storm_fail_");
    result("storm_proxy_cpu_ms", proxy_ms);
    result("storm_gen_cpu_ms", gen_ms);
    result("storm_rss_before_kb", before.rss);
    result("storm_pss_before_kb", before.pss);
    result("storm_peak_rss_kb", peak.rss.max(after.rss));
    result("storm_peak_pss_kb", peak.pss.max(after.pss));
    result("storm_hwm_kb", after.hwm);
    result("storm_rss_samples", peak.rss_samples);
    result("storm_pss_samples", peak.pss_samples);
    result("storm_pss_sample_ms_max", peak.slowest_pss_ms);
    result("storm_proxy_established", established);
    result("storm_proxy_close_wait", close_wait);

    let _ = phase.send(Phase::Idle);
    let (wrong, acks) = (c.wrong_conn.load(Relaxed), c.acks.load(Relaxed));
    let k = sh.cfg.calls.min(sh.cfg.n) as u64;
    let calls_ok = sampled_calls(sh, sock, 1).await;
    let wrong = c.wrong_conn.load(Relaxed) - wrong;
    result("storm_calls", k);
    result("storm_calls_ok", calls_ok);
    result("storm_calls_wrong_connection", wrong);
    // does the memory of the dropped connections come back?
    tokio::time::sleep(Duration::from_secs(sh.cfg.settle)).await;
    let settled = memory(&sh.cfg.pids);
    result("storm_rss_after_kb", settled.rss);
    result("storm_pss_after_kb", settled.pss);
    back == dropped
        && dropped == c.reg_ok.load(Relaxed)
        && calls_ok == k
        && wrong == 0
        && c.acks.load(Relaxed) - acks == k
}

// ------------------------------------------------------------------ main

fn main() {
    let cfg = parse_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = rt.block_on(run(cfg));
    std::process::exit(code);
}

async fn run(cfg: Cfg) -> i32 {
    let t_start = Instant::now();
    let deadline = t_start + Duration::from_secs(cfg.timeout);
    let tls = native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .danger_accept_invalid_hostnames(true)
        .build()
        .expect("TLS connector");
    // the registrar's socket, with room for bursts of REGISTERs
    let std_sock = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        let _ = s.set_recv_buffer_size(8 << 20);
        let _ = s.set_send_buffer_size(8 << 20);
        if let Err(e) = s.bind(&cfg.registrar.into()) {
            eprintln!(
                "wss_clients: cannot bind the registrar on {}: {e}",
                cfg.registrar
            );
            return 2;
        }
        s.set_nonblocking(true).unwrap();
        std::net::UdpSocket::from(s)
    };
    let sock = Arc::new(UdpSocket::from_std(std_sock).unwrap());
    let sh = Arc::new(Shared {
        domain: cfg.registrar.to_string(),
        rereg: Arc::new(Semaphore::new(cfg.concurrency)),
        storm_slots: Semaphore::new(cfg.storm_concurrency),
        storm_t0: OnceLock::new(),
        cfg: cfg.clone(),
        c: Counters::default(),
        tls: tls.into(),
        bindings: Mutex::new(HashMap::new()),
        calls: Mutex::new(HashMap::new()),
    });
    tokio::spawn(registrar(sh.clone(), sock.clone()));
    let c = &sh.c;
    let n = cfg.n as u64;

    let self_pid = [std::process::id()];
    let m0 = memory(&cfg.pids);
    let g0 = memory(&self_pid).ticks;
    eprintln!("idle proxy: {m0:?}");
    result("n", n);
    result("sources", cfg.sources.len());
    result("mem0_rss_kb", m0.rss);
    result("mem0_pss_kb", m0.pss);

    // 1. connect + register, `concurrency` at a time
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let sem = Arc::new(Semaphore::new(cfg.concurrency));
    let t0 = Instant::now();
    let mut last = Instant::now();
    for i in 1..=cfg.n {
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => p.unwrap(),
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => break,
        };
        tokio::spawn(client(sh.clone(), i, permit, phase_rx.clone()));
        if last.elapsed() > Duration::from_secs(5) {
            last = Instant::now();
            eprintln!(
                "  {:>6.1} s: {} registered, {} failed, {} open",
                t0.elapsed().as_secs_f64(),
                c.reg_ok.load(Relaxed),
                c.first.total(),
                i
            );
        }
    }
    while c.done.load(Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reg_secs = t0.elapsed().as_secs_f64();
    // the generator's own CPU use over the phase: near 100 % means the rate is its limit
    let g1 = memory(&self_pid).ticks;
    result(
        "gen_cpu_pct_reg",
        format!("{:.0}", (g1 - g0) as f64 / reg_secs),
    );
    let reg_ok = c.reg_ok.load(Relaxed);
    let reg_failed = n - reg_ok;
    eprintln!(
        "registered {reg_ok}/{n} in {reg_secs:.1} s ({:.0}/s)",
        reg_ok as f64 / reg_secs
    );
    result("reg_ok", reg_ok);
    result("reg_failed", reg_failed);
    result("reg_secs", format!("{reg_secs:.2}"));
    result("reg_per_s", format!("{:.0}", reg_ok as f64 / reg_secs));
    c.first.report("fail_");
    tokio::time::sleep(Duration::from_secs(cfg.settle)).await;
    let m1 = memory(&cfg.pids);
    eprintln!("after registrations: {m1:?}");
    result("mem1_rss_kb", m1.rss);
    result("mem1_hwm_kb", m1.hwm);
    result("mem1_pss_kb", m1.pss);
    // proxy CPU per connect + TLS + WebSocket upgrade + REGISTER (ticks are 10 ms)
    result(
        "cpu_ms_per_reg",
        format!(
            "{:.3}",
            (m1.ticks - m0.ticks) as f64 * 10.0 / reg_ok.max(1) as f64
        ),
    );

    // 2. every client registers again over its open connection
    let t1 = Instant::now();
    let _ = phase_tx.send(Phase::ReRegister);
    while c.redone.load(Relaxed) < reg_ok
        && Instant::now() < deadline
        && t1.elapsed() < Duration::from_secs(n / 200 + 60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rereg_secs = t1.elapsed().as_secs_f64();
    result(
        "gen_cpu_pct_rereg",
        format!("{:.0}", (memory(&self_pid).ticks - g1) as f64 / rereg_secs),
    );
    let rereg_ok = c.rereg_ok.load(Relaxed);
    eprintln!("re-registered {rereg_ok}/{reg_ok} in {rereg_secs:.1} s");
    result("rereg_ok", rereg_ok);
    result("rereg_failed", reg_ok - rereg_ok);
    result(
        "rereg_per_s",
        format!("{:.0}", rereg_ok as f64 / rereg_secs),
    );
    let _ = phase_tx.send(Phase::Idle);
    let m_r = memory(&cfg.pids);
    result(
        "cpu_ms_per_rereg",
        format!(
            "{:.3}",
            (m_r.ticks - m1.ticks) as f64 * 10.0 / rereg_ok.max(1) as f64
        ),
    );

    // 3. calls from the registrar's side to a sample of the users
    let k = cfg.calls.min(cfg.n);
    let calls_ok = sampled_calls(&sh, &sock, 0).await;
    result("calls", k);
    result("calls_ok", calls_ok);
    result("calls_invites_at_clients", c.invites.load(Relaxed));
    result("calls_acks_at_clients", c.acks.load(Relaxed));
    result("calls_byes_at_clients", c.byes.load(Relaxed));
    result("calls_wrong_connection", c.wrong_conn.load(Relaxed));
    let acks = c.acks.load(Relaxed);

    // 4. steady state
    tokio::time::sleep(Duration::from_secs(cfg.settle)).await;
    let m2 = memory(&cfg.pids);
    eprintln!("after calls: {m2:?}");
    result("mem2_rss_kb", m2.rss);
    result("mem2_hwm_kb", m2.hwm);
    result("mem2_pss_kb", m2.pss);
    if cfg.hold > 0 {
        eprintln!("holding {} s", cfg.hold);
        tokio::time::sleep(Duration::from_secs(cfg.hold)).await;
    }
    if let (Some(ready), Some(release)) = (&cfg.ready_file, &cfg.release_file) {
        // another process counts the connections of every generator at once meanwhile
        if let Err(e) = std::fs::write(ready, format!("{}\n", c.reg_ok.load(Relaxed))) {
            eprintln!("wss_clients: cannot write {ready}: {e}");
        }
        eprintln!("ready; holding every client until {release} exists");
        while !std::path::Path::new(release).exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let m3 = memory(&cfg.pids);
    result("mem3_rss_kb", m3.rss);
    result("mem3_hwm_kb", m3.hwm);
    result("mem3_pss_kb", m3.pss);
    let storm_ok = !cfg.storm || {
        // the release may name the moment (Unix time, ms) of the drop, so that several
        // generators' storms start together
        if let Some(at) = cfg
            .release_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let wait = Duration::from_millis(at.saturating_sub(now).min(10_000));
            tokio::time::sleep(wait).await;
        }
        storm(&sh, &sock, &phase_tx, m3, deadline).await
    };
    let per = |a: u64, b: u64| {
        if n > 0 {
            (a as f64 - b as f64) * 1024.0 / n as f64
        } else {
            0.0
        }
    };
    result(
        "per_client_rss_bytes",
        format!("{:.0}", per(m2.rss, m0.rss)),
    );
    result(
        "per_client_pss_bytes",
        format!("{:.0}", per(m2.pss, m0.pss)),
    );
    result(
        "per_client_hwm_bytes",
        format!("{:.0}", per(m2.hwm, m0.rss)),
    );
    let lost = c.lost.load(Relaxed);
    result("connections_lost", lost);
    result("keepalive_pings_sent", c.pings.load(Relaxed));
    result("registrar_registers", c.registrar_regs.load(Relaxed));
    result(
        "elapsed_secs",
        format!("{:.1}", t_start.elapsed().as_secs_f64()),
    );
    let ok = reg_failed == 0
        && rereg_ok == reg_ok
        && calls_ok == k as u64
        && lost == 0
        && c.wrong_conn.load(Relaxed) == 0
        && acks == k as u64
        && storm_ok;
    result("all_ok", ok);
    if ok {
        0
    } else {
        1
    }
}
