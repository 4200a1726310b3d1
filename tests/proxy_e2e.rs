//! End-to-end: the real `roundabout` binary between real SIPp and Kamailio peers, over UDP
//! and TCP (issue "Core proxy"). Every message of each call crosses Roundabout: the callers
//! send to it with `-rsa` while their Request-URI names the callee (a trusted server), and
//! in-dialog requests follow the Record-Route/Contact Roundabout wrote.

mod common;

use common::{kamailio_wait_registered, Peers, Proc, Transport, KAMAILIO_PASSWORD, SIPP_TIMEOUT};
use std::net::SocketAddr;
use std::time::Duration;

/// Starts Roundabout on `p.proxy` (UDP and TCP, no TLS/WS) with `extra` flags.
fn roundabout(p: &Peers, extra: &[&str]) -> Proc {
    p.roundabout_udp_tcp(extra)
}

fn trusted(addr: SocketAddr, t: Transport) -> String {
    format!("{}::{}:{}:", addr.ip(), addr.port(), t.name())
}

/// A call from a caller on `caller_t` to a callee (trusted server) on `callee_t`.
fn call(
    caller_t: Transport,
    callee_t: Transport,
    callee: &str,
    caller: &str,
    callee_args: &[&str],
    caller_args: &[&str],
) {
    let p = Peers::new();
    let server = trusted(p.uas, callee_t);
    let _rb = roundabout(
        &p,
        &["-strict-host", "-ack-ruri", "-trusted-server", &server],
    );
    // scenarios that check Roundabout's Record-Route (uas-call-bye-rr.xml) read its address
    // from this key; the others ignore it
    let proxy = p.proxy.to_string();
    let args = [&["-key", "roundabout", &proxy][..], callee_args].concat();
    let uas = p.sipp_server(callee, p.uas, callee_t, &args);
    let rsa = p.proxy.to_string();
    let args = [&["-s", "bob", "-rsa", &rsa][..], caller_args].concat();
    p.sipp_client(caller, p.uas, p.uac, caller_t, &args)
        .wait_success(SIPP_TIMEOUT)
        .unwrap_or_else(|e| panic!("caller {caller_t:?}->{callee_t:?}: {e}"));
    uas.wait_success(SIPP_TIMEOUT)
        .unwrap_or_else(|e| panic!("callee {caller_t:?}->{callee_t:?}: {e}"));
}

#[test]
fn call_udp_to_tcp_and_tcp_to_udp() {
    for (a, b) in [
        (Transport::Udp, Transport::Tcp),
        (Transport::Tcp, Transport::Udp),
        (Transport::Udp, Transport::Udp),
    ] {
        call(a, b, "uas-call.xml", "uac-call.xml", &[], &[]);
    }
}

/// The callee ends the call: its BYE carries the route set it learnt from the INVITE's
/// Record-Route. SIPp in server mode sends every message back to where the INVITE came
/// from (Roundabout), and Roundabout's rewritten Contact would find the caller even without
/// a route set, so the callee (uas-call-bye-rr.xml) checks that the INVITE's first
/// Record-Route entry is Roundabout's (`-key roundabout`, set by `call`): without
/// Record-Route this test fails.
#[test]
fn callee_hangs_up_through_the_route_set() {
    for (a, b) in [
        (Transport::Udp, Transport::Tcp),
        (Transport::Tcp, Transport::Udp),
        (Transport::Udp, Transport::Udp),
    ] {
        call(
            a,
            b,
            "uas-call-bye-rr.xml",
            "uac-call-remote-bye.xml",
            &[],
            &[],
        );
    }
}

#[test]
fn cancel_before_answer() {
    for (a, b) in [
        (Transport::Udp, Transport::Tcp),
        (Transport::Tcp, Transport::Udp),
        (Transport::Udp, Transport::Udp),
    ] {
        call(a, b, "uas-ring-forever.xml", "uac-cancel.xml", &[], &[]);
    }
}

/// The caller retransmits its INVITE; the callee, run with -nr, fails on a second INVITE:
/// Roundabout must absorb it (and, towards TCP, never send twice).
#[test]
fn udp_retransmissions_are_absorbed() {
    for b in [Transport::Udp, Transport::Tcp] {
        call(
            Transport::Udp,
            b,
            "uas-call.xml",
            "uac-udp-retrans.xml",
            &["-nr"],
            &["-nr"],
        );
    }
}

#[test]
fn non_invite_requests_are_forwarded() {
    for (a, b) in [
        (Transport::Udp, Transport::Tcp),
        (Transport::Tcp, Transport::Udp),
    ] {
        for scenario in ["uac-options.xml", "uac-message.xml"] {
            call(
                a,
                b,
                "uas-answer.xml",
                scenario,
                &[],
                &["-key", "expected", "200"],
            );
        }
    }
}

/// A request for a host that is not a trusted server gets 403 with -strict-host.
#[test]
fn strict_host_refuses_unknown_hosts() {
    let p = Peers::new();
    let server = trusted(p.uas, Transport::Udp);
    let _rb = roundabout(&p, &["-strict-host", "-trusted-server", &server]);
    let unknown: SocketAddr = "127.0.0.9:5099".parse().unwrap();
    let rsa = p.proxy.to_string();
    for t in [Transport::Udp, Transport::Tcp] {
        p.sipp_client(
            "uac-message.xml",
            unknown,
            p.uac,
            t,
            &["-s", "bob", "-rsa", &rsa, "-key", "expected", "403"],
        )
        .wait_success(SIPP_TIMEOUT)
        .unwrap();
    }
}

/// A request addressed to Roundabout for a user it has no client for, and no
/// -default-sip-server: 404.
#[test]
fn unknown_user_gets_404() {
    let p = Peers::new();
    let _rb = roundabout(&p, &["-strict-host"]);
    p.sipp_client(
        "uac-message.xml",
        p.proxy,
        p.uac,
        Transport::Udp,
        &["-s", "nobody", "-key", "expected", "404"],
    )
    .wait_success(SIPP_TIMEOUT)
    .unwrap();
}

/// With -strict-client a REGISTER from outside the trusted client networks gets 403 and
/// never reaches the registrar.
#[test]
fn strict_client_refuses_untrusted_register() {
    let p = Peers::new();
    let mut kamailio = p.kamailio_registrar(p.kamailio, &[]);
    let registrar = trusted(p.kamailio, Transport::Udp);
    let _rb = roundabout(
        &p,
        &[
            "-strict-host",
            "-strict-client",
            "-trusted-client-ip",
            "127.0.0.3",
            "-trusted-client-mask",
            "32",
            "-trusted-server",
            &registrar,
        ],
    );
    let rsa = p.proxy.to_string();
    p.sipp_client(
        "uac-register-refused.xml",
        p.kamailio,
        p.uac,
        Transport::Udp,
        &["-s", "alice", "-rsa", &rsa],
    )
    .wait_success(SIPP_TIMEOUT)
    .unwrap();
    assert!(
        kamailio
            .wait_for_output("REGISTER", Duration::from_millis(500))
            .is_err(),
        "the refused REGISTER reached Kamailio:\n{}",
        kamailio.report()
    );
    // From the trusted address the same REGISTER goes through (401 challenge, then 200).
    let auth = [
        "-s",
        "alice",
        "-ap",
        KAMAILIO_PASSWORD,
        "-key",
        "expires",
        "60",
        "-rsa",
        &rsa,
    ];
    p.sipp_client(
        "uac-register-auth.xml",
        p.kamailio,
        p.uas,
        Transport::Udp,
        &auth,
    )
    .wait_success(SIPP_TIMEOUT)
    .unwrap();
    kamailio_wait_registered(&mut kamailio, "alice");
}

/// A client registers through Roundabout to a real Kamailio registrar (digest auth); the
/// server then calls the client by user: Kamailio sends the INVITE to the Contact
/// Roundabout registered, Roundabout finds the client in its cache and delivers it.
fn register_then_server_calls_client(client_t: Transport) {
    let p = Peers::new();
    let mut kamailio = p.kamailio_registrar(p.kamailio, &[]);
    let registrar = trusted(p.kamailio, Transport::Udp);
    let _rb = roundabout(
        &p,
        &["-strict-host", "-ack-ruri", "-trusted-server", &registrar],
    );
    let rsa = p.proxy.to_string();
    let call_id = format!("reg-call-{}-%u", p.uas.port());
    let client_args = [
        "-s",
        "bob",
        "-ap",
        KAMAILIO_PASSWORD,
        "-key",
        "expires",
        "3600",
        "-cid_str",
        &call_id,
        "-rsa",
        &rsa,
    ];
    let client = p.sipp_client(
        "uas-register-then-call.xml",
        p.kamailio,
        p.uas,
        client_t,
        &client_args,
    );
    kamailio_wait_registered(&mut kamailio, "bob");
    // Kamailio has Roundabout's address as bob's Contact, not the client's.
    assert!(
        kamailio
            .output()
            .contains(&format!("-> <sip:bob@127.0.0.1:{}", p.proxy.port())),
        "registered Contact is not Roundabout's:\n{}",
        kamailio.report()
    );
    p.sipp_client(
        "uac-call.xml",
        p.kamailio,
        p.uac,
        Transport::Udp,
        &["-s", "bob", "-ap", KAMAILIO_PASSWORD, "-cid_str", &call_id],
    )
    .wait_success(SIPP_TIMEOUT)
    .unwrap();
    client.wait_success(SIPP_TIMEOUT).unwrap();
}

#[test]
fn register_through_roundabout_then_server_calls_client_udp() {
    register_then_server_calls_client(Transport::Udp);
}

#[test]
fn register_through_roundabout_then_server_calls_client_tcp() {
    register_then_server_calls_client(Transport::Tcp);
}
