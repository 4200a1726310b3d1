//! WSS call generator for the benchmark (`benches/wss_calls.sh`).
//!
//! Opens N WSS connections to a proxy (Roundabout or Kamailio) from several loopback source
//! addresses and registers one user per connection (`sip:uNNNNN@REGISTRAR`) through it; the
//! registrar is this program on UDP (200 with the Contact echoed and `expires`, Path kept),
//! for a proxy that forwards REGISTER (Roundabout). Then, once `--go-file` exists, the
//! clients call `sip:svc@UAS` (a SIPp UAS on UDP, through the proxy) at `--rate` calls/s for
//! `--secs` s: INVITE, 200, ACK along the Record-Route set, and the UAS hangs up (its BYE is
//! answered 200). Meanwhile a SIPp UAC on UDP calls the users through the proxy: each
//! INVITE must arrive on the connection of its user, which answers 180 and 200, waits for
//! the ACK, holds `--hold-ms` and hangs up (BYE along the Record-Route set, 200 expected).
//! So: both directions, BYE from both sides, every step bounded.
//!
//! Measured here: failed calls of each direction (with the first reasons on standard
//! error), calls that reached a wrong connection, setup time of the clients' calls (INVITE
//! sent -> 200 received), the rate actually offered, the generator's own CPU use, and the
//! proxy's CPU time and memory over the call phase (from /proc, summed over `--pids`).
//! Results are printed as `RESULT key=value` lines; progress goes to standard error.
//!
//!   cargo build --release --example wss_calls
//!   target/release/examples/wss_calls --proxy 127.0.4.1:16443 --registrar 127.0.4.4:16070 \
//!       --uas 127.0.4.6:16060 --sources 127.0.5.1-8 -n 200 --rate 5 --secs 10 \
//!       --expect-in 50 --pids 1234 --ready-file /tmp/r --go-file /tmp/g
//!
//! Options (defaults in brackets): -n N [200], --proxy IP:PORT (WSS), --registrar IP:PORT
//! (UDP, bound by this program; also the users' domain), --uas IP:PORT (called as
//! `sip:svc@IP:PORT`), --sources A.B.C.X-Y [127.0.5.1-8] (source addresses, used in turn),
//! --concurrency C [200] (connections + registrations in flight), --rate R [10] (calls/s
//! from the clients), --secs S [10], --hold-ms H [500] (a client's call length before its
//! BYE), --expect-in K [0] (calls the SIPp UAC places: the call phase ends when K have come
//! and ended, or at its time bound), --expires S [3600], --pids P,P.. (the proxy's
//! processes), --ready-file F (written with the number of registered clients when the
//! registrations are done), --go-file F (the calls start when it exists; without it, at
//! once), --timeout S [600] (bound of the whole run).
//! The exit code is 0 only when every registration and call succeeded, every incoming call
//! came on the connection of its user and no connection was lost.

#[path = "common/procfs.rs"]
mod procfs;
#[path = "common/sip.rs"]
mod sip;
#[path = "common/wss.rs"]
mod wss;

use async_tungstenite::tungstenite::Message;
use futures_util::StreamExt;
use sip::{all_values, cseq_method, header, method_of, request_uri, response, status_of};
use sip::{uri_of, user_of};
use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Bound of each connection step (TCP, TLS, WebSocket).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// A registration through a proxy that retransmits over UDP may take up to Timer F.
const REG_TIMEOUT: Duration = Duration::from_secs(34);
/// Bound of each step of a call (final answer, ACK, BYE, answer to BYE): beyond a few UDP
/// retransmissions through the proxy, the call has failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(8);

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.5.1\r\ns=-\r\nc=IN IP4 127.0.5.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n";

#[derive(Clone, Debug)]
struct Cfg {
    n: usize,
    proxy: SocketAddr,
    registrar: SocketAddr,
    uas: SocketAddr,
    sources: Vec<Ipv4Addr>,
    concurrency: usize,
    rate: f64,
    secs: u64,
    hold: Duration,
    expect_in: u64,
    expires: u32,
    pids: Vec<u32>,
    ready_file: Option<String>,
    go_file: Option<String>,
    timeout: u64,
}

fn parse_args() -> Cfg {
    let mut c = Cfg {
        n: 200,
        proxy: "127.0.4.1:16443".parse().unwrap(),
        registrar: "127.0.4.4:16070".parse().unwrap(),
        uas: "127.0.4.6:16060".parse().unwrap(),
        sources: (1..=8).map(|i| Ipv4Addr::new(127, 0, 5, i)).collect(),
        concurrency: 200,
        rate: 10.0,
        secs: 10,
        hold: Duration::from_millis(500),
        expect_in: 0,
        expires: 3600,
        pids: vec![],
        ready_file: None,
        go_file: None,
        timeout: 600,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bad = |m: &str| -> ! {
        eprintln!("wss_calls: {m} (see the comment at the top of examples/wss_calls.rs)");
        std::process::exit(2)
    };
    let num = |v: &str| {
        v.parse::<u64>()
            .unwrap_or_else(|_| bad(&format!("bad number {v}")))
    };
    let addr = |o: &str, v: &str| {
        v.parse::<SocketAddr>()
            .unwrap_or_else(|_| bad(&format!("bad {o} {v} (IP:PORT)")))
    };
    for pair in args.chunks(2) {
        let (o, v) = (pair[0].as_str(), pair.get(1).map(String::as_str));
        let v = v.unwrap_or_else(|| bad(&format!("{o} needs a value")));
        match o {
            "-n" => c.n = num(v) as usize,
            "--proxy" => c.proxy = addr(o, v),
            "--registrar" => c.registrar = addr(o, v),
            "--uas" => c.uas = addr(o, v),
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
            "--concurrency" => c.concurrency = num(v).max(1) as usize,
            "--rate" => {
                c.rate = v
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r >= 0.0)
                    .unwrap_or_else(|| bad(&format!("bad --rate {v}")))
            }
            "--secs" => c.secs = num(v),
            "--hold-ms" => c.hold = Duration::from_millis(num(v)),
            "--expect-in" => c.expect_in = num(v),
            "--expires" => c.expires = num(v) as u32,
            "--pids" => {
                c.pids = v
                    .split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(|s| num(s) as u32)
                    .collect()
            }
            "--ready-file" => c.ready_file = Some(v.to_string()),
            "--go-file" => c.go_file = Some(v.to_string()),
            "--timeout" => c.timeout = num(v),
            _ => bad(&format!("unknown option {o}")),
        }
    }
    if c.sources.is_empty() {
        bad("no --sources");
    }
    c
}

// ------------------------------------------------------------------ shared state

#[derive(Default)]
struct Counters {
    open_fail: AtomicU64,
    reg_ok: AtomicU64,
    reg_fail: AtomicU64,
    reg_done: AtomicU64,
    registrar_regs: AtomicU64,
    lost: AtomicU64,
    out_done: AtomicU64,
    out_ok: AtomicU64,
    in_started: AtomicU64,
    in_done: AtomicU64,
    in_ok: AtomicU64,
    wrong_conn: AtomicU64,
    /// requests for a dialog this client does not know (answered 481)
    stray: AtomicU64,
    /// failure reasons shown on standard error so far
    shown: AtomicU64,
}

struct Shared {
    cfg: Cfg,
    c: Counters,
    tls: tokio_native_tls::TlsConnector,
    domain: String,
    /// unique to this run, in Call-IDs and branches: a proxy or SIPp that still remembers
    /// an earlier run's calls or registrations must not take ours for them
    run: String,
    /// clients whose registration succeeded
    registered: Vec<AtomicBool>,
    /// setup times of the clients' calls, microseconds
    setup_us: Mutex<Vec<u32>>,
    /// set when the call phase ends: connections closing after it are not "lost"
    stopping: AtomicBool,
}

/// Why one call failed; the first few are printed.
#[derive(Debug)]
enum CallError {
    /// the client's connection was gone or closed during the call
    Connection,
    /// no final response to INVITE in time
    NoFinal,
    /// a final response other than 200
    Rejected(u16),
    /// the callee's 200 had no Contact to send ACK and BYE to
    NoContact,
    /// the caller's ACK did not come
    NoAck,
    /// the far end's BYE did not come
    NoBye,
    /// our BYE was not answered, or not with 200
    ByeAnswer(Option<u16>),
    /// an INVITE for another user came on this client's connection
    WrongConnection(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Connection => write!(f, "connection closed"),
            CallError::NoFinal => write!(f, "no final response to INVITE within {STEP_TIMEOUT:?}"),
            CallError::Rejected(s) => write!(f, "INVITE answered {s}"),
            CallError::NoContact => write!(f, "200 to INVITE without Contact"),
            CallError::NoAck => write!(f, "no ACK within {STEP_TIMEOUT:?}"),
            CallError::NoBye => write!(f, "no BYE from the far end in time"),
            CallError::ByeAnswer(s) => write!(f, "BYE answered {s:?}"),
            CallError::WrongConnection(u) => write!(f, "INVITE for {u} on this connection"),
        }
    }
}

fn report_failure(sh: &Shared, what: &str, e: &CallError) {
    if sh.c.shown.fetch_add(1, Relaxed) < 10 {
        eprintln!("{what}: {e}");
    }
}

/// What a call task asks of its client's connection task.
enum Cmd {
    /// send this message on the connection
    Send(String),
    /// deliver the messages of this Call-ID to this channel
    Track(String, mpsc::UnboundedSender<String>),
    /// the call is over
    Forget(String),
}

type CmdTx = mpsc::UnboundedSender<Cmd>;

fn result(key: &str, v: impl fmt::Display) {
    println!("RESULT {key}={v}");
}

// ------------------------------------------------------------------ clients

fn user(i: usize) -> String {
    format!("u{i:05}")
}

fn register_msg(sh: &Shared, i: usize) -> String {
    let (d, e, u, r) = (&sh.domain, sh.cfg.expires, user(i), &sh.run);
    format!(
        "REGISTER sip:{d} SIP/2.0\r\n\
         Via: SIP/2.0/WSS c{i}.invalid;branch=z9hG4bK-{r}-r{i}\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:{u}@{d}>\r\n\
         From: <sip:{u}@{d}>;tag=r{i}\r\n\
         Call-ID: reg-{i}-{r}@gen.invalid\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{u}@c{i}.invalid;transport=ws>;expires={e}\r\n\
         Expires: {e}\r\n\
         Supported: path, outbound\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn text_of(m: Message) -> Option<String> {
    match m {
        Message::Text(t) => Some(t.to_string()),
        Message::Binary(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        _ => None, // ping / pong: tungstenite answers pings itself
    }
}

/// Connects and registers client `i` (holding `permit` meanwhile); the connection when
/// the registration got its 2xx.
async fn connect_and_register(
    sh: &Shared,
    i: usize,
    permit: OwnedSemaphorePermit,
) -> Option<wss::Ws> {
    let c = &sh.c;
    let src = sh.cfg.sources[i % sh.cfg.sources.len()];
    let mut ws = match wss::open(&sh.tls, src, sh.cfg.proxy, OPEN_TIMEOUT).await {
        Ok(ws) => ws,
        Err(e) => {
            if c.open_fail.fetch_add(1, Relaxed) < 5 {
                eprintln!("client {i}: cannot open the connection: {e:?}");
            }
            return None;
        }
    };
    let ok = ws.send(Message::text(register_msg(sh, i))).await.is_ok()
        && tokio::time::timeout(REG_TIMEOUT, async {
            while let Some(Ok(m)) = ws.next().await {
                let Some(t) = text_of(m) else { continue };
                match status_of(&t) {
                    Some(s) if s >= 200 && cseq_method(&t) == "REGISTER" => return s / 100 == 2,
                    _ => {}
                }
            }
            false
        })
        .await
        .unwrap_or(false);
    drop(permit);
    (if ok { &c.reg_ok } else { &c.reg_fail }).fetch_add(1, Relaxed);
    ok.then_some(ws)
}

/// One client: connect, register, then carry the messages of its calls until the end.
async fn client(
    sh: Arc<Shared>,
    i: usize,
    permit: OwnedSemaphorePermit,
    me: CmdTx,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let ws = connect_and_register(&sh, i, permit).await;
    sh.c.reg_done.fetch_add(1, Relaxed);
    let Some(mut ws) = ws else { return };
    sh.registered[i - 1].store(true, Relaxed);
    let c = &sh.c;
    let me_user = user(i);
    let mut dialogs: HashMap<String, mpsc::UnboundedSender<String>> = HashMap::new();
    loop {
        tokio::select! {
            m = ws.next() => {
                let text = match m {
                    Some(Ok(m)) => match text_of(m) { Some(t) => t, None => continue },
                    Some(Err(_)) | None => {
                        if !sh.stopping.load(Relaxed) {
                            c.lost.fetch_add(1, Relaxed);
                            eprintln!("client {i}: connection lost");
                        }
                        return; // the call tasks see their channels close
                    }
                };
                let cid = header(&text, "Call-ID", Some("i")).unwrap_or("").to_string();
                if let Some(tx) = dialogs.get(&cid) {
                    let _ = tx.send(text);
                    continue;
                }
                match method_of(&text) {
                    "INVITE" => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        dialogs.insert(cid, tx);
                        let k = c.in_started.fetch_add(1, Relaxed);
                        tokio::spawn(in_call(sh.clone(), i, k, me_user.clone(), text, me.clone(), rx));
                    }
                    "" | "ACK" => {} // a late retransmission of a finished call
                    _ => {
                        c.stray.fetch_add(1, Relaxed);
                        let r = response(&text, 481, "Call Does Not Exist", "x", &[], None);
                        let _ = ws.send(Message::text(r)).await;
                    }
                }
            }
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Send(m)) => {
                    if ws.send(Message::text(m)).await.is_err() && !sh.stopping.load(Relaxed) {
                        c.lost.fetch_add(1, Relaxed);
                        return;
                    }
                }
                Some(Cmd::Track(cid, tx)) => { dialogs.insert(cid, tx); }
                Some(Cmd::Forget(cid)) => { dialogs.remove(&cid); }
                None => return,
            },
        }
    }
}

/// Waits (until `deadline`) for a message of the call that `pick` accepts; INVITE
/// retransmissions and other messages are handed to `other`.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<String>,
    deadline: tokio::time::Instant,
    pick: impl Fn(&str) -> bool,
    mut other: impl FnMut(&str),
) -> Result<Option<String>, CallError> {
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) if pick(&m) => return Ok(Some(m)),
            Ok(Some(m)) => other(&m),
            Ok(None) => return Err(CallError::Connection),
            Err(_) => return Ok(None),
        }
    }
}

fn send(tx: &CmdTx, m: String) -> Result<(), CallError> {
    tx.send(Cmd::Send(m)).map_err(|_| CallError::Connection)
}

/// A call from client `i` to the UAS; returns the setup time.
async fn out_call(sh: Arc<Shared>, i: usize, k: u64, tx: CmdTx) -> Result<Duration, CallError> {
    let (u, d, uas, r) = (user(i), &sh.domain, sh.cfg.uas, &sh.run);
    let cid = format!("o{k}-{i}-{r}@gen.invalid");
    let (ch_tx, mut rx) = mpsc::unbounded_channel();
    tx.send(Cmd::Track(cid.clone(), ch_tx))
        .map_err(|_| CallError::Connection)?;
    let from = format!("<sip:{u}@{d}>;tag=o{k}");
    let invite = format!(
        "INVITE sip:svc@{uas} SIP/2.0\r\n\
         Via: SIP/2.0/WSS c{i}.invalid;branch=z9hG4bK-{r}-o{k}\r\n\
         Max-Forwards: 70\r\n\
         From: {from}\r\n\
         To: <sip:svc@{uas}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{u}@c{i}.invalid;transport=ws>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    let result = async {
        let t0 = Instant::now();
        send(&tx, invite)?;
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        let is_final =
            |m: &str| cseq_method(m) == "INVITE" && status_of(m).is_some_and(|s| s >= 200);
        let ok = wait_for(&mut rx, deadline, is_final, |_| {})
            .await?
            .ok_or(CallError::NoFinal)?;
        let setup = t0.elapsed();
        match status_of(&ok) {
            Some(200) => {}
            s => return Err(CallError::Rejected(s.unwrap_or(0))),
        }
        // ACK to the callee's Contact along the Record-Route set, last entry first
        let remote = header(&ok, "Contact", Some("m"))
            .map(|v| uri_of(v).to_string())
            .ok_or(CallError::NoContact)?;
        let routes: String = all_values(&ok, "Record-Route", None)
            .iter()
            .rev()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        let to = header(&ok, "To", Some("t")).unwrap_or("").to_string();
        let ack = format!(
            "ACK {remote} SIP/2.0\r\n\
             Via: SIP/2.0/WSS c{i}.invalid;branch=z9hG4bK-{r}-o{k}-ack\r\n\
             {routes}Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 ACK\r\n\
             Content-Length: 0\r\n\r\n"
        );
        send(&tx, ack.clone())?;
        // the UAS hangs up; a retransmitted 200 (our ACK crossed it) is acknowledged again
        let deadline = tokio::time::Instant::now() + sh.cfg.hold + STEP_TIMEOUT;
        let bye = wait_for(
            &mut rx,
            deadline,
            |m| method_of(m) == "BYE",
            |m| {
                if status_of(m) == Some(200) && cseq_method(m) == "INVITE" {
                    let _ = send(&tx, ack.clone());
                }
            },
        )
        .await?
        .ok_or(CallError::NoBye)?;
        send(&tx, response(&bye, 200, "OK", "x", &[], None))?;
        Ok(setup)
    }
    .await;
    let _ = tx.send(Cmd::Forget(cid));
    result
}

/// A call from the SIPp UAC to client `i`: answer, wait for the ACK, hold, hang up.
async fn in_call(
    sh: Arc<Shared>,
    i: usize,
    k: u64,
    me_user: String,
    invite: String,
    tx: CmdTx,
    mut rx: mpsc::UnboundedReceiver<String>,
) {
    let cid = header(&invite, "Call-ID", Some("i"))
        .unwrap_or("")
        .to_string();
    let result = async {
        let to_user = header(&invite, "To", Some("t")).map(|v| user_of(uri_of(v)));
        let ruri_user = user_of(request_uri(&invite));
        if ruri_user != me_user || to_user != Some(me_user.as_str()) {
            sh.c.wrong_conn.fetch_add(1, Relaxed);
            send(&tx, response(&invite, 404, "Not Here", "x", &[], None))?;
            return Err(CallError::WrongConnection(ruri_user.to_string()));
        }
        let tag = format!("i{k}");
        let contact = [format!(
            "Contact: <sip:{me_user}@c{i}.invalid;transport=ws>"
        )];
        send(&tx, response(&invite, 180, "Ringing", &tag, &contact, None))?;
        let ok = response(
            &invite,
            200,
            "OK",
            &tag,
            &contact,
            Some(("application/sdp", SDP)),
        );
        send(&tx, ok.clone())?;
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        wait_for(
            &mut rx,
            deadline,
            |m| method_of(m) == "ACK",
            |m| {
                if method_of(m) == "INVITE" {
                    let _ = send(&tx, ok.clone());
                }
            },
        )
        .await?
        .ok_or(CallError::NoAck)?;
        tokio::time::sleep(sh.cfg.hold).await;
        // BYE to the caller's Contact along the Record-Route set as the INVITE had it
        let remote = header(&invite, "Contact", Some("m"))
            .map(|v| uri_of(v).to_string())
            .ok_or(CallError::NoContact)?;
        let routes: String = all_values(&invite, "Record-Route", None)
            .iter()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        let to = header(&invite, "To", Some("t")).unwrap_or("");
        let from = header(&invite, "From", Some("f")).unwrap_or("");
        let bye = format!(
            "BYE {remote} SIP/2.0\r\n\
             Via: SIP/2.0/WSS c{i}.invalid;branch=z9hG4bK-{run}-i{k}-bye\r\n\
             {routes}Max-Forwards: 70\r\n\
             From: {to};tag={tag}\r\n\
             To: {from}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 BYE\r\n\
             Content-Length: 0\r\n\r\n",
            run = sh.run
        );
        send(&tx, bye)?;
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        let is_bye_final =
            |m: &str| cseq_method(m) == "BYE" && status_of(m).is_some_and(|s| s >= 200);
        let answer = wait_for(&mut rx, deadline, is_bye_final, |_| {}).await?;
        match answer.as_deref().and_then(status_of) {
            Some(200) => Ok(()),
            s => Err(CallError::ByeAnswer(s)),
        }
    }
    .await;
    let _ = tx.send(Cmd::Forget(cid));
    match result {
        Ok(()) => {
            sh.c.in_ok.fetch_add(1, Relaxed);
        }
        Err(e) => report_failure(&sh, &format!("call to {me_user}"), &e),
    }
    sh.c.in_done.fetch_add(1, Relaxed);
}

// ------------------------------------------------------------------ registrar

/// The registrar for a proxy that forwards REGISTER: 200 with the Contact echoed (with the
/// granted `expires`) and Path copied. Nothing else is expected here.
async fn registrar(sh: Arc<Shared>, sock: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let msg = String::from_utf8_lossy(&buf[..n]);
        if method_of(&msg) != "REGISTER" {
            continue;
        }
        sh.c.registrar_regs.fetch_add(1, Relaxed);
        let contact = header(&msg, "Contact", Some("m")).unwrap_or("");
        let mut extra = vec![format!(
            "Contact: <{}>;expires={}",
            uri_of(contact),
            sh.cfg.expires
        )];
        extra.extend(
            all_values(&msg, "Path", None)
                .iter()
                .map(|p| format!("Path: {p}")),
        );
        let r = response(&msg, 200, "OK", "reg", &extra, None);
        let _ = sock.send_to(r.as_bytes(), from).await;
    }
}

fn bind_registrar(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // room for bursts of REGISTERs
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

// ------------------------------------------------------------------ main

fn main() {
    let cfg = parse_args();
    // one thread: the generator is pinned to one CPU next to the SIPps
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    std::process::exit(rt.block_on(run(cfg)));
}

/// The process id and start time, in hex.
fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:x}{:x}", std::process::id(), t.as_millis() & 0xffff_ffff)
}

/// Percentile `q` (0..1) of sorted values, in ms.
fn pct_ms(sorted: &[u32], q: f64) -> String {
    match sorted.len() {
        0 => "-".into(),
        n => format!(
            "{:.2}",
            sorted[((n - 1) as f64 * q) as usize] as f64 / 1000.0
        ),
    }
}

async fn wait_until(deadline: Instant, done: impl Fn() -> bool) {
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(cfg: Cfg) -> i32 {
    let t_start = Instant::now();
    let deadline = t_start + Duration::from_secs(cfg.timeout);
    let sock = match bind_registrar(cfg.registrar) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "wss_calls: cannot bind the registrar on {}: {e}",
                cfg.registrar
            );
            return 2;
        }
    };
    let n = cfg.n;
    let sh = Arc::new(Shared {
        domain: cfg.registrar.to_string(),
        run: run_id(),
        c: Counters::default(),
        tls: wss::insecure_tls(),
        registered: (0..n).map(|_| AtomicBool::new(false)).collect(),
        setup_us: Mutex::new(Vec::new()),
        stopping: AtomicBool::new(false),
        cfg: cfg.clone(),
    });
    tokio::spawn(registrar(sh.clone(), sock));
    let c = &sh.c;
    let self_pid = std::process::id();
    result("n", n);

    // 1. connect + register, `concurrency` at a time
    let sem = Arc::new(Semaphore::new(cfg.concurrency));
    let mut clients: Vec<CmdTx> = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 1..=n {
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => p.expect("semaphore open"),
            _ = tokio::time::sleep_until(deadline.into()) => break,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(client(sh.clone(), i, permit, tx.clone(), rx));
        clients.push(tx);
    }
    wait_until(deadline, || {
        c.reg_done.load(Relaxed) >= clients.len() as u64
    })
    .await;
    let reg_secs = t0.elapsed().as_secs_f64();
    let reg_ok = c.reg_ok.load(Relaxed);
    eprintln!("registered {reg_ok}/{n} in {reg_secs:.1} s");
    result("reg_ok", reg_ok);
    result("reg_failed", n as u64 - reg_ok);
    result("reg_secs", format!("{reg_secs:.2}"));
    result("fail_open", c.open_fail.load(Relaxed));
    result("fail_register", c.reg_fail.load(Relaxed));
    result("registrar_registers", c.registrar_regs.load(Relaxed));
    if let Some(f) = &cfg.ready_file {
        if let Err(e) = std::fs::write(f, format!("{reg_ok}\n")) {
            eprintln!("wss_calls: cannot write {f}: {e}");
        }
    }
    if let Some(f) = &cfg.go_file {
        wait_until(deadline, || std::path::Path::new(f).exists()).await;
    }

    // 2. calls: the clients call the UAS at `rate`; the SIPp UAC calls the clients meanwhile
    let callers: Vec<usize> = (1..=clients.len())
        .filter(|i| sh.registered[i - 1].load(Relaxed))
        .collect();
    let out_calls = if callers.is_empty() {
        0
    } else {
        (cfg.rate * cfg.secs as f64).round() as u64
    };
    let p0 = procfs::usage(&cfg.pids);
    let g0 = procfs::cpu_ticks(self_pid);
    let t_go = Instant::now();
    let call_deadline =
        (t_go + Duration::from_secs(cfg.secs) + cfg.hold + 3 * STEP_TIMEOUT).min(deadline);
    let mut last_invite = t_go;
    let mut placed = 0u64;
    if out_calls > 0 {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.rate));
        for k in 0..out_calls {
            tick.tick().await;
            if Instant::now() >= call_deadline {
                break;
            }
            last_invite = Instant::now();
            placed += 1;
            let i = callers[k as usize % callers.len()];
            let (sh2, tx) = (sh.clone(), clients[i - 1].clone());
            tokio::spawn(async move {
                match out_call(sh2.clone(), i, k, tx).await {
                    Ok(setup) => {
                        sh2.setup_us
                            .lock()
                            .expect("setup times")
                            .push(setup.as_micros().min(u32::MAX as u128) as u32);
                        sh2.c.out_ok.fetch_add(1, Relaxed);
                    }
                    Err(e) => report_failure(&sh2, &format!("call from {}", user(i)), &e),
                }
                sh2.c.out_done.fetch_add(1, Relaxed);
            });
        }
    }
    wait_until(call_deadline, || {
        c.out_done.load(Relaxed) >= placed
            && c.in_done.load(Relaxed) >= cfg.expect_in
            && c.in_done.load(Relaxed) == c.in_started.load(Relaxed)
    })
    .await;
    let call_secs = t_go.elapsed().as_secs_f64();
    sh.stopping.store(true, Relaxed);
    // the proxy's last answers (200 to the UAC's last BYE) pass meanwhile
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p1 = procfs::usage(&cfg.pids);
    let g1 = procfs::cpu_ticks(self_pid);

    let out_ok = c.out_ok.load(Relaxed);
    let (in_started, in_ok) = (c.in_started.load(Relaxed), c.in_ok.load(Relaxed));
    let mut setup = std::mem::take(&mut *sh.setup_us.lock().expect("setup times"));
    setup.sort_unstable();
    let mean = setup.iter().map(|&v| v as f64).sum::<f64>() / setup.len().max(1) as f64;
    eprintln!(
        "calls: from the clients {out_ok}/{placed} ok, to the clients {in_ok}/{in_started} ok \
         (SIPp placed {}), {} on a wrong connection, in {call_secs:.1} s",
        cfg.expect_in,
        c.wrong_conn.load(Relaxed)
    );
    result("out_calls", placed);
    result("out_ok", out_ok);
    result("out_failed", placed - out_ok);
    result(
        "out_rate",
        // the first INVITE leaves at once: placed - 1 intervals until the last
        format!(
            "{:.1}",
            placed.saturating_sub(1) as f64 / (last_invite - t_go).as_secs_f64().max(1e-3)
        ),
    );
    result("in_calls", in_started);
    result("in_ok", in_ok);
    result("in_failed", in_started - in_ok);
    result("in_missing", cfg.expect_in.saturating_sub(in_started));
    result("wrong_connection", c.wrong_conn.load(Relaxed));
    result("stray_requests", c.stray.load(Relaxed));
    result("setup_p50_ms", pct_ms(&setup, 0.50));
    result("setup_p99_ms", pct_ms(&setup, 0.99));
    result("setup_max_ms", pct_ms(&setup, 1.0));
    result("setup_mean_ms", format!("{:.2}", mean / 1000.0));
    result("call_secs", format!("{call_secs:.2}"));
    // near 100 % means the rate was the generator's limit, not the proxy's
    let gen_pct = (g1 - g0) as f64 / procfs::TICKS_PER_SEC / call_secs * 100.0;
    result("gen_cpu_pct", format!("{gen_pct:.0}"));
    let proxy_s = (p1.ticks - p0.ticks) as f64 / procfs::TICKS_PER_SEC;
    result("proxy_cpu_s", format!("{proxy_s:.2}"));
    result("proxy_rss_kb", p1.rss_kb);
    result("proxy_hwm_kb", p1.hwm_kb);
    result("proxy_pss_kb", p1.pss_kb);
    let lost = c.lost.load(Relaxed);
    result("connections_lost", lost);
    result(
        "elapsed_secs",
        format!("{:.1}", t_start.elapsed().as_secs_f64()),
    );
    let ok = reg_ok == n as u64
        && placed == out_calls
        && out_ok == placed
        && in_ok == in_started
        && in_started >= cfg.expect_in
        && lost == 0;
    result("all_ok", ok);
    if ok {
        0
    } else {
        1
    }
}
