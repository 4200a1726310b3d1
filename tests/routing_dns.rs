//! End-to-end (issue 15): routing for real trunks.
//!
//! - Route-list: a trusted server whose dataset names a route proxy (Kamailio with
//!   `loose_route`, `tests/peers/kamailio-loose-route.cfg`) in front of a SIPp server. The
//!   INVITE reaches the server through it, and the BYE from either side follows the route
//!   set (Kamailio's log shows each request it relayed).
//! - Servers named by DNS (RFC 3263): dnsmasq on 127.0.0.8 serves NAPTR, SRV and A records
//!   of `rbt.test` with a TTL of 2 s. Two SIPp servers behind one SRV name (127.0.0.3 and
//!   127.0.0.6): calls go to the preferred one, move to the other when it is stopped
//!   (refused), answers 503 or does not answer (Timer B), and come back when it returns; a
//!   changed A record is picked up when its TTL runs out, and the trusted addresses follow
//!   it; a host that is no trusted server is located the same way; a name that does not
//!   resolve gets 503 at once, with a log line.
//!
//! Addresses: Roundabout 127.0.0.1, SIPp caller 127.0.0.2, the servers 127.0.0.3 and
//! 127.0.0.6, Kamailio 127.0.0.4, a stranger 127.0.0.7, dnsmasq 127.0.0.8. Every wait is
//! bounded.

mod common;

use common::{sip_ping, Peers, Proc, Transport, KAMAILIO_IP, SIPP_TIMEOUT, UAC_IP, UAS_IP};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The second server behind the SRV name.
const BACKUP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// An address that is no trusted server.
const STRANGER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
/// Where dnsmasq answers.
const DNS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 8);

fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: run `bash tests/run-all.sh` (it installs it)")
        })
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

fn name(what: &str) -> String {
    format!("{what}-{}", STARTED.fetch_add(1, Ordering::SeqCst))
}

/// dnsmasq on `addr`, answering only from `records` (dnsmasq config lines) for `rbt.test`,
/// with a TTL of 2 s; other names in `rbt.test` get NXDOMAIN. Waits until it listens.
fn dnsmasq(p: &Peers, addr: SocketAddr, records: &[String]) -> Proc {
    let n = name("dnsmasq");
    let conf = p.dir().join(format!("{n}.conf"));
    let mut text = format!(
        "no-resolv\nno-hosts\nlisten-address={}\nport={}\nbind-interfaces\npid-file=\n\
         user=root\nlocal=/rbt.test/\nlocal-ttl=2\nlog-queries\nlog-facility=-\n",
        addr.ip(),
        addr.port()
    );
    for r in records {
        text.push_str(r);
        text.push('\n');
    }
    fs::write(&conf, text).expect("writing the dnsmasq config");
    let mut cmd = Command::new(tool("dnsmasq"));
    cmd.arg("-k").arg(format!("--conf-file={}", conf.display()));
    let mut proc = Proc::spawn(&n, cmd, p.dir());
    if let Err(e) = proc.wait_listening(addr, Transport::Udp, Duration::from_secs(5)) {
        panic!("dnsmasq did not start: {e}\n{}", proc.report());
    }
    proc
}

/// Kamailio as a loose-routing proxy on `addr` (UDP and TCP); waits until it answers.
fn route_proxy(p: &Peers, addr: SocketAddr) -> Proc {
    let n = name("kamailio");
    let runtime = p.dir().join(&n);
    fs::create_dir_all(&runtime).expect("creating Kamailio's runtime dir");
    let mut cmd = Command::new(tool("kamailio"));
    cmd.arg("-f")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/kamailio-loose-route.cfg"))
        .args(["-DD", "-E", "-n", "1", "-m", "64", "-M", "8"])
        .arg("-w")
        .arg(&runtime)
        .arg("-Y")
        .arg(&runtime)
        .arg("-P")
        .arg(runtime.join("kamailio.pid"))
        .arg("-l")
        .arg(format!("udp:{addr}"))
        .arg("-l")
        .arg(format!("tcp:{addr}"));
    let mut proc = Proc::spawn(&n, cmd, p.dir());
    let ready = proc
        .wait_listening(addr, Transport::Udp, Duration::from_secs(5))
        .and_then(|()| sip_ping(addr, Duration::from_secs(5)));
    if let Err(e) = ready {
        panic!(
            "kamailio did not get ready on {addr}: {e}\n{}",
            proc.report()
        );
    }
    proc
}

/// Waits until `proc`'s output has `needle` at least `n` times; panics with its log.
fn wait_lines(proc: &Proc, needle: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if proc.output().matches(needle).count() >= n {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "no {n} line(s) with {needle:?} after {timeout:?}\n{}",
                proc.report()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A SIPp call through Roundabout to `sip:bob@HOST` (UDP caller); Err with its log.
fn call_named(p: &Peers, host: &str) -> Result<(), String> {
    p.sipp_client(
        "uac-call-named.xml",
        p.proxy,
        p.uac,
        Transport::Udp,
        &["-s", "bob", "-key", "ruri_host", host],
    )
    .wait_success(SIPP_TIMEOUT)
}

/// Sends a MESSAGE for `ruri` from `from` (UDP, any port) to Roundabout and returns the
/// final status and how long it took; panics when none comes in 10 s.
fn message_status(proxy: SocketAddr, from: Ipv4Addr, ruri: &str) -> (u16, Duration) {
    let socket = UdpSocket::bind((from, 0)).expect("binding a UDP socket");
    let local = socket.local_addr().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let request = format!(
        "MESSAGE {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-dns-{port}\r\n\
         From: <sip:tester@{local}>;tag=t{port}\r\n\
         To: <{ruri}>\r\n\
         Call-ID: dns-{port}@{ip}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        port = local.port(),
        ip = local.ip(),
    );
    let start = Instant::now();
    socket.send_to(request.as_bytes(), proxy).unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            let status: u16 = text
                .strip_prefix("SIP/2.0 ")
                .and_then(|r| r.get(..3))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if status >= 200 {
                return (status, start.elapsed());
            }
        }
    }
    panic!("no final response to MESSAGE {ruri} from {from} within 10 s");
}

// ----- route-list ---------------------------------------------------------------------------

/// A call to a server with a route-list: Roundabout adds the Route and sends the INVITE to
/// the route proxy (Kamailio), which relays it to the server; `caller`/`callee` say who
/// hangs up. Returns Kamailio's log.
fn call_through_route_proxy(caller_t: Transport, caller: &str, callee: &str) -> String {
    let p = Peers::new();
    // The route proxy is reached on the server's port and protocol.
    let proxy_addr = SocketAddr::from((KAMAILIO_IP, p.uas.port()));
    let kamailio = route_proxy(&p, proxy_addr);
    let server = format!(
        "{}:server.rbt.test:{}:udp:{}",
        UAS_IP,
        p.uas.port(),
        KAMAILIO_IP
    );
    let rb = p.roundabout_udp_tcp(&["-strict-host", "-ack-ruri", "-trusted-server", &server]);
    let uas = p.sipp_server(callee, p.uas, Transport::Udp, &[]);
    let rsa = p.proxy.to_string();
    let result = p
        .sipp_client(caller, p.uas, p.uac, caller_t, &["-s", "bob", "-rsa", &rsa])
        .wait_success(SIPP_TIMEOUT)
        .and_then(|()| uas.wait_success(SIPP_TIMEOUT));
    if let Err(e) = result {
        panic!("{e}\n{}\n{}", kamailio.report(), rb.report());
    }
    let log = rb.output();
    // The proxy log line "INVITE <ruri> from <caller> -> udp:<route proxy>".
    assert!(
        log.contains(&format!("-> udp:{proxy_addr}")),
        "the INVITE did not go to the route proxy\n{}",
        rb.report()
    );
    kamailio.output()
}

#[test]
fn route_list_caller_hangs_up_through_the_route_proxy() {
    let log = call_through_route_proxy(Transport::Udp, "uac-call.xml", "uas-call.xml");
    for line in [
        "relay initial INVITE sip:bob@127.0.0.3",
        "relay in-dialog ACK",
        "relay in-dialog BYE",
    ] {
        assert!(log.contains(line), "{line:?} not in Kamailio's log:\n{log}");
    }
    // Both came from Roundabout (the caller's side of the route set).
    assert!(
        log.lines()
            .filter(|l| l.contains("relay in-dialog BYE"))
            .all(|l| l.contains("from 127.0.0.1:")),
        "{log}"
    );
}

#[test]
fn route_list_callee_hangs_up_through_the_route_proxy() {
    // A TCP caller, so Roundabout also changes transport (double Record-Route).
    let log = call_through_route_proxy(
        Transport::Tcp,
        "uac-call-remote-bye.xml",
        "uas-call-bye.xml",
    );
    assert!(
        log.contains("relay initial INVITE sip:bob@127.0.0.3"),
        "{log}"
    );
    // The callee's BYE reached Kamailio from the callee and was routed on (to Roundabout).
    assert!(
        log.lines()
            .any(|l| l.contains("relay in-dialog BYE") && l.contains("from 127.0.0.3:")),
        "{log}"
    );
}

// ----- servers named by DNS -----------------------------------------------------------------

/// The records of `carrier.rbt.test`: SRV for `proto` (`udp` or `tcp`) with `sip1`
/// (127.0.0.3:`p1`, priority 10) preferred to `sip2` (127.0.0.6:`p2`, priority 20), and a
/// NAPTR naming that SRV.
fn carrier_records(proto: &str, p1: u16, p2: u16) -> Vec<String> {
    let service = if proto == "tcp" { "SIP+D2T" } else { "SIP+D2U" };
    vec![
        format!("host-record=sip1.rbt.test,{UAS_IP}"),
        format!("host-record=sip2.rbt.test,{BACKUP_IP}"),
        format!("srv-host=_sip._{proto}.carrier.rbt.test,sip1.rbt.test,{p1},10,10"),
        format!("srv-host=_sip._{proto}.carrier.rbt.test,sip2.rbt.test,{p2},20,10"),
        format!("naptr-record=carrier.rbt.test,10,10,S,{service},,_sip._{proto}.carrier.rbt.test"),
    ]
}

/// NAPTR -> SRV (TCP) -> A: calls go to the preferred server; stopped (its port refuses),
/// the next call moves to the other one before the caller hears of it; back after
/// -avoid-time once it returns.
#[test]
fn srv_failover_moves_calls_and_brings_them_back() {
    let p = Peers::new();
    let (p1, p2) = (p.uas.port(), p.port());
    let sip1 = SocketAddr::from((UAS_IP, p1));
    let sip2 = SocketAddr::from((BACKUP_IP, p2));
    let dns = SocketAddr::from((DNS_IP, p.port()));
    let _dns = dnsmasq(&p, dns, &carrier_records("tcp", p1, p2));
    let dns_flag = dns.to_string();
    let rb = p.roundabout_udp_tcp(&[
        "-strict-host",
        "-ack-ruri",
        "-dns-server",
        &dns_flag,
        "-avoid-time",
        "3",
        "-transaction-timeout",
        "5",
        "-trusted-server",
        "carrier.rbt.test::::",
    ]);
    wait_lines(
        &rb,
        &format!("resolved carrier.rbt.test: tcp:{sip1}, tcp:{sip2}"),
        1,
        Duration::from_secs(5),
    );

    // 1. Both up: the preferred one (priority 10) takes the call.
    let uas1 = p.sipp_server("uas-call.xml", sip1, Transport::Tcp, &[]);
    let mut uas2 = p.sipp_server("uas-call.xml", sip2, Transport::Tcp, &[]);
    call_named(&p, "carrier.rbt.test").unwrap_or_else(|e| panic!("call 1: {e}\n{}", rb.report()));
    uas1.wait_success(SIPP_TIMEOUT)
        .unwrap_or_else(|e| panic!("sip1, call 1: {e}"));
    assert!(uas2.try_status().is_none(), "sip2 got call 1");

    // 2. sip1 is gone (SIPp exits after its call): its port refuses, sip2 takes the call.
    thread::sleep(Duration::from_millis(500));
    call_named(&p, "carrier.rbt.test").unwrap_or_else(|e| panic!("call 2: {e}\n{}", rb.report()));
    uas2.wait_success(SIPP_TIMEOUT)
        .unwrap_or_else(|e| panic!("sip2, call 2: {e}\n{}", rb.report()));
    let log = rb.output();
    assert!(
        log.contains(&format!(
            "tcp:{sip1} failed (refused or unreachable), trying tcp:{sip2}"
        )),
        "{}",
        rb.report()
    );
    assert!(
        log.contains(&format!(
            "tcp:{sip1} failed (refused or unreachable): tried last for 3 s"
        )),
        "{}",
        rb.report()
    );

    // 3. sip1 is back: once -avoid-time is over, calls go to it again.
    let uas1 = p.sipp_server("uas-call.xml", sip1, Transport::Tcp, &[]);
    let mut uas2 = p.sipp_server("uas-call.xml", sip2, Transport::Tcp, &[]);
    thread::sleep(Duration::from_millis(3500));
    call_named(&p, "carrier.rbt.test").unwrap_or_else(|e| panic!("call 3: {e}\n{}", rb.report()));
    uas1.wait_success(SIPP_TIMEOUT)
        .unwrap_or_else(|e| panic!("sip1, call 3: {e}\n{}", rb.report()));
    assert!(uas2.try_status().is_none(), "sip2 got call 3");
    assert_eq!(
        rb.output()
            .matches("failed (refused or unreachable), trying")
            .count(),
        1,
        "{}",
        rb.report()
    );
}

/// SRV over UDP (the dataset gives the protocol, not the port): a server that answers 503,
/// then one that does not answer at all (Timer B), each hands the call to the next target.
#[test]
fn srv_failover_on_503_and_on_timer_b() {
    let p = Peers::new();
    let (p1, p2) = (p.uas.port(), p.port());
    let sip1 = SocketAddr::from((UAS_IP, p1));
    let sip2 = SocketAddr::from((BACKUP_IP, p2));
    let dns = SocketAddr::from((DNS_IP, p.port()));
    let _dns = dnsmasq(&p, dns, &carrier_records("udp", p1, p2));
    let dns_flag = dns.to_string();
    let rb = p.roundabout_udp_tcp(&[
        "-strict-host",
        "-ack-ruri",
        "-dns-server",
        &dns_flag,
        "-avoid-time",
        "1",
        "-transaction-timeout",
        "2",
        "-trusted-server",
        "carrier.rbt.test:::udp:",
    ]);
    wait_lines(
        &rb,
        &format!("resolved carrier.rbt.test;transport=udp: udp:{sip1}, udp:{sip2}"),
        1,
        Duration::from_secs(5),
    );

    // sip1 answers 503 (and gets its ACK); sip2 takes the call.
    let uas1 = p.sipp_server("uas-503.xml", sip1, Transport::Udp, &[]);
    let uas2 = p.sipp_server("uas-call.xml", sip2, Transport::Udp, &["-m", "2"]);
    call_named(&p, "carrier.rbt.test").unwrap_or_else(|e| panic!("call 1: {e}\n{}", rb.report()));
    uas1.wait_success(SIPP_TIMEOUT)
        .unwrap_or_else(|e| panic!("sip1 (503): {e}\n{}", rb.report()));
    assert!(
        rb.output()
            .contains(&format!("udp:{sip1} failed (503), trying udp:{sip2}")),
        "{}",
        rb.report()
    );

    // sip1 is silent now (nothing listens; UDP says nothing): after -avoid-time it is
    // tried first again, Timer B (2 s here) gives up on it, and sip2 takes the call.
    thread::sleep(Duration::from_millis(1500));
    call_named(&p, "carrier.rbt.test").unwrap_or_else(|e| panic!("call 2: {e}\n{}", rb.report()));
    uas2.wait_success(SIPP_TIMEOUT)
        .unwrap_or_else(|e| panic!("sip2: {e}\n{}", rb.report()));
    assert!(
        rb.output().contains(&format!(
            "udp:{sip1} failed (no answer (Timer B/F)), trying udp:{sip2}"
        )),
        "{}",
        rb.report()
    );
}

/// An A record changed in DNS is picked up when its TTL (2 s) runs out: the next call goes
/// to the new address, and the trusted addresses (-strict-client) follow it.
#[test]
fn a_ttl_refresh_is_seen_and_the_trusted_address_follows() {
    let p = Peers::new();
    let port = p.uas.port();
    let (old, new) = (
        SocketAddr::from((UAS_IP, port)),
        SocketAddr::from((BACKUP_IP, port)),
    );
    let dns = SocketAddr::from((DNS_IP, p.port()));
    let mut dnsmasq_proc = dnsmasq(&p, dns, &[format!("host-record=pbx.rbt.test,{UAS_IP}")]);
    let dns_flag = dns.to_string();
    let server = format!("pbx.rbt.test::{port}:udp:");
    let client = format!("{UAC_IP}/32");
    let rb = p.roundabout_udp_tcp(&[
        "-strict-host",
        "-strict-client",
        "-trusted-client-ip",
        &client,
        "-ack-ruri",
        "-dns-server",
        &dns_flag,
        "-trusted-server",
        &server,
    ]);
    let query = format!("pbx.rbt.test:{port};transport=udp");
    wait_lines(
        &rb,
        &format!("resolved {query}: udp:{old}"),
        1,
        Duration::from_secs(5),
    );
    // The TTL runs out and the name is asked again in the background.
    wait_lines(
        &rb,
        &format!("refreshed {query}: unchanged"),
        1,
        Duration::from_secs(6),
    );

    // The resolved address is a trusted server: its requests pass -strict-client (404: no
    // such client), a stranger's do not (403).
    let me = format!("sip:nobody@{}", p.proxy);
    assert_eq!(message_status(p.proxy, UAS_IP, &me).0, 404);
    assert_eq!(message_status(p.proxy, BACKUP_IP, &me).0, 403);
    assert_eq!(message_status(p.proxy, STRANGER_IP, &me).0, 403);

    let uas = p.sipp_server("uas-call.xml", old, Transport::Udp, &[]);
    call_named(&p, "pbx.rbt.test").unwrap_or_else(|e| panic!("call 1: {e}\n{}", rb.report()));
    uas.wait_success(SIPP_TIMEOUT)
        .unwrap_or_else(|e| panic!("old address: {e}"));

    // The server moves: DNS now says 127.0.0.6.
    dnsmasq_proc.stop();
    let _dns = dnsmasq(&p, dns, &[format!("host-record=pbx.rbt.test,{BACKUP_IP}")]);
    wait_lines(
        &rb,
        &format!("resolved {query}: udp:{new}"),
        1,
        Duration::from_secs(10),
    );
    assert_eq!(message_status(p.proxy, BACKUP_IP, &me).0, 404);
    assert_eq!(message_status(p.proxy, UAS_IP, &me).0, 403);
    let uas = p.sipp_server("uas-call.xml", new, Transport::Udp, &[]);
    call_named(&p, "pbx.rbt.test").unwrap_or_else(|e| panic!("call 2: {e}\n{}", rb.report()));
    uas.wait_success(SIPP_TIMEOUT)
        .unwrap_or_else(|e| panic!("new address: {e}\n{}", rb.report()));
}

/// A name that does not resolve (an unknown host without -strict-host, and a trusted
/// server's name) gets 503 at once, and a log line says why.
#[test]
fn an_unresolvable_name_gets_503_quickly_with_a_log_line() {
    let p = Peers::new();
    let dns = SocketAddr::from((DNS_IP, p.port()));
    let _dns = dnsmasq(&p, dns, &[format!("host-record=pbx.rbt.test,{UAS_IP}")]);
    let dns_flag = dns.to_string();
    let rb = p.roundabout_udp_tcp(&[
        "-ack-ruri",
        "-dns-server",
        &dns_flag,
        "-trusted-server",
        "gone.rbt.test:::udp:",
    ]);
    wait_lines(
        &rb,
        "cannot resolve trusted server gone.rbt.test",
        1,
        Duration::from_secs(5),
    );
    for (ruri, line) in [
        ("sip:bob@nosuch.rbt.test", "cannot resolve nosuch.rbt.test"),
        (
            "sip:bob@gone.rbt.test",
            "cannot resolve trusted server gone.rbt.test",
        ),
    ] {
        let (status, took) = message_status(p.proxy, UAC_IP, ruri);
        assert_eq!(status, 503, "{ruri}\n{}", rb.report());
        assert!(took < Duration::from_secs(2), "{ruri}: 503 after {took:?}");
        assert!(rb.output().contains(line), "{line:?}\n{}", rb.report());
    }
}

/// Without -strict-host a host that is no trusted server is located the same way: NAPTR ->
/// SRV -> A, the preferred target first.
#[test]
fn an_unknown_host_is_located_by_naptr_and_srv() {
    let p = Peers::new();
    let (p1, p2) = (p.uas.port(), p.port());
    let sip1 = SocketAddr::from((UAS_IP, p1));
    let dns = SocketAddr::from((DNS_IP, p.port()));
    let _dns = dnsmasq(&p, dns, &carrier_records("udp", p1, p2));
    let dns_flag = dns.to_string();
    let rb = p.roundabout_udp_tcp(&["-ack-ruri", "-dns-server", &dns_flag]);
    let uas = p.sipp_server("uas-call.xml", sip1, Transport::Udp, &[]);
    call_named(&p, "carrier.rbt.test").unwrap_or_else(|e| panic!("call: {e}\n{}", rb.report()));
    uas.wait_success(SIPP_TIMEOUT)
        .unwrap_or_else(|e| panic!("sip1: {e}\n{}", rb.report()));
    assert!(
        rb.output().contains(&format!(
            "resolved carrier.rbt.test: udp:{sip1}, udp:{}:{p2} (NAPTR carrier.rbt.test -> udp -> SRV _sip._udp.carrier.rbt.test",
            BACKUP_IP
        )),
        "{}",
        rb.report()
    );
}
