//! The test peers work on their own, without Roundabout: SIPp calls SIPp over UDP and TCP,
//! SIPp registers at Kamailio with digest auth, and Kamailio routes a call to a registered
//! SIPp client. When an end-to-end test fails with Roundabout in the middle while these
//! pass, the fault is Roundabout's.

mod common;

use common::{kamailio_wait_registered, Peers, Transport, KAMAILIO_PASSWORD, SIPP_TIMEOUT};

fn call(transport: Transport, callee: &str, caller: &str) {
    let p = Peers::new();
    let uas = p.sipp_server(callee, p.uas, transport, &[]);
    p.sipp_client(caller, p.uas, p.uac, transport, &["-s", "bob"])
        .wait_success(SIPP_TIMEOUT)
        .unwrap();
    uas.wait_success(SIPP_TIMEOUT).unwrap();
}

/// Two tests, `$udp` and `$tcp`, each running `$run` with that transport and then `$arg`s.
macro_rules! udp_and_tcp {
    ($udp:ident, $tcp:ident: $run:ident($($arg:expr),*)) => {
        #[test]
        fn $udp() {
            $run(Transport::Udp, $($arg),*);
        }

        #[test]
        fn $tcp() {
            $run(Transport::Tcp, $($arg),*);
        }
    };
}

udp_and_tcp!(sipp_call_udp, sipp_call_tcp: call("uas-call.xml", "uac-call.xml"));
udp_and_tcp!(
    sipp_call_callee_hangs_up_udp,
    sipp_call_callee_hangs_up_tcp: call("uas-call-bye.xml", "uac-call-remote-bye.xml")
);
udp_and_tcp!(sipp_cancel_udp, sipp_cancel_tcp: call("uas-ring-forever.xml", "uac-cancel.xml"));

fn request(transport: Transport, scenario: &str) {
    let p = Peers::new();
    let uas = p.sipp_server("uas-answer.xml", p.uas, transport, &[]);
    p.sipp_client(
        scenario,
        p.uas,
        p.uac,
        transport,
        &["-s", "bob", "-key", "expected", "200"],
    )
    .wait_success(SIPP_TIMEOUT)
    .unwrap();
    uas.wait_success(SIPP_TIMEOUT).unwrap();
}

#[test]
fn sipp_options_and_message_udp() {
    request(Transport::Udp, "uac-options.xml");
    request(Transport::Udp, "uac-message.xml");
}

#[test]
fn sipp_options_and_message_tcp() {
    request(Transport::Tcp, "uac-options.xml");
    request(Transport::Tcp, "uac-message.xml");
}

/// The expected-status check of uac-message.xml can fail: a 200 where 404 is expected.
#[test]
fn sipp_unexpected_status_fails() {
    let p = Peers::new();
    let _uas = p.sipp_server("uas-answer.xml", p.uas, Transport::Udp, &[]);
    let result = p
        .sipp_client(
            "uac-message.xml",
            p.uas,
            p.uac,
            Transport::Udp,
            &["-s", "bob", "-key", "expected", "404"],
        )
        .wait_success(SIPP_TIMEOUT);
    let err = result.expect_err("a 200 must not pass for an expected 404");
    assert!(err.contains("unexpected final status 200"), "{err}");
}

/// The retransmission check: with nothing in between to absorb it, the callee run with -nr
/// sees the second INVITE and fails; a callee that handles retransmissions passes.
#[test]
fn sipp_duplicate_invite_reaches_a_callee_without_proxy() {
    let p = Peers::new();
    let uas = p.sipp_server("uas-call.xml", p.uas, Transport::Udp, &[]);
    p.sipp_client(
        "uac-udp-retrans.xml",
        p.uas,
        p.uac,
        Transport::Udp,
        &["-s", "bob", "-nr"],
    )
    .wait_success(SIPP_TIMEOUT)
    .unwrap();
    uas.wait_success(SIPP_TIMEOUT).unwrap();

    let p = Peers::new();
    let strict = p.sipp_server("uas-call.xml", p.uas, Transport::Udp, &["-nr"]);
    let caller = p.sipp_client(
        "uac-udp-retrans.xml",
        p.uas,
        p.uac,
        Transport::Udp,
        &["-s", "bob", "-nr", "-timeout", "3s"],
    );
    let err = strict
        .wait_success(SIPP_TIMEOUT)
        .expect_err("the callee run with -nr must fail on a duplicated INVITE");
    assert!(err.contains("unexpected message"), "{err}");
    drop(caller);
}

/// REGISTER with digest auth, the INVITE challenged too, routed by Kamailio to the
/// registered client with Record-Route, BYE back along the route set, then de-registration.
fn registrar(transport: Transport) {
    let p = Peers::new();
    let mut kamailio = p.kamailio_registrar(p.kamailio, &[]);
    let auth = ["-ap", KAMAILIO_PASSWORD, "-key", "expires", "3600"];

    // alice registers (and unregisters) from the caller's address
    let alice = [&["-s", "alice"][..], &auth].concat();
    p.sipp_client(
        "uac-register-auth.xml",
        p.kamailio,
        p.uac,
        transport,
        &alice,
    )
    .wait_success(SIPP_TIMEOUT)
    .unwrap();

    // bob registers from the callee's address and waits for a call; the caller uses the
    // same Call-ID (see uas-register-then-call.xml)
    let call_id = format!("reg-call-{}-%u", p.uas.port());
    let bob = [&["-s", "bob", "-cid_str", &call_id][..], &auth].concat();
    let client = p.sipp_client(
        "uas-register-then-call.xml",
        p.kamailio,
        p.uas,
        transport,
        &bob,
    );
    kamailio_wait_registered(&mut kamailio, "bob");

    p.sipp_client(
        "uac-call.xml",
        p.kamailio,
        p.uac,
        transport,
        &["-s", "bob", "-ap", KAMAILIO_PASSWORD, "-cid_str", &call_id],
    )
    .wait_success(SIPP_TIMEOUT)
    .unwrap();
    client.wait_success(SIPP_TIMEOUT).unwrap();

    p.sipp_client("uac-unregister.xml", p.kamailio, p.uac, transport, &alice)
        .wait_success(SIPP_TIMEOUT)
        .unwrap();
}

udp_and_tcp!(kamailio_register_and_call_udp, kamailio_register_and_call_tcp: registrar());

/// Kamailio as the proxy in the middle, inserted the way the e2e tests insert Roundabout:
/// the caller's R-URI names the callee, `-rsa` sends everything to the proxy. Proves the
/// scenarios cope with a stateful, record-routing proxy (Via stacks, route sets, CANCEL and
/// retransmissions absorbed by the proxy), also when it bridges TCP to UDP. The callee is
/// on UDP: the R-URI has no `;transport=`, so Kamailio relays over UDP.
fn through_kamailio(
    caller_transport: Transport,
    callee: &str,
    callee_args: &[&str],
    caller: &str,
    caller_args: &[&str],
) {
    let p = Peers::new();
    let _kamailio = p.kamailio_registrar(p.kamailio, &["NO_INVITE_AUTH"]);
    let uas = p.sipp_server(callee, p.uas, Transport::Udp, callee_args);
    let rsa = p.kamailio.to_string();
    let args = [&["-s", "bob", "-rsa", &rsa][..], caller_args].concat();
    p.sipp_client(caller, p.uas, p.uac, caller_transport, &args)
        .wait_success(SIPP_TIMEOUT)
        .unwrap();
    uas.wait_success(SIPP_TIMEOUT).unwrap();
}

#[test]
fn kamailio_in_the_middle_call() {
    for transport in [Transport::Udp, Transport::Tcp] {
        through_kamailio(transport, "uas-call.xml", &[], "uac-call.xml", &[]);
        through_kamailio(
            transport,
            "uas-call-bye.xml",
            &[],
            "uac-call-remote-bye.xml",
            &[],
        );
    }
}

#[test]
fn kamailio_in_the_middle_cancel() {
    for transport in [Transport::Udp, Transport::Tcp] {
        through_kamailio(
            transport,
            "uas-ring-forever.xml",
            &[],
            "uac-cancel.xml",
            &[],
        );
    }
}

#[test]
fn kamailio_in_the_middle_requests() {
    for transport in [Transport::Udp, Transport::Tcp] {
        for scenario in ["uac-options.xml", "uac-message.xml"] {
            through_kamailio(
                transport,
                "uas-answer.xml",
                &[],
                scenario,
                &["-key", "expected", "200"],
            );
        }
    }
}

/// The proxy absorbs the retransmitted INVITE: the callee run with -nr sees one INVITE.
#[test]
fn kamailio_in_the_middle_absorbs_invite_retransmission() {
    through_kamailio(
        Transport::Udp,
        "uas-call.xml",
        &["-nr"],
        "uac-udp-retrans.xml",
        &["-nr"],
    );
}

/// The caller answers Kamailio's 407 through -rsa too.
#[test]
fn kamailio_in_the_middle_challenges_invite() {
    let p = Peers::new();
    let mut kamailio = p.kamailio_registrar(p.kamailio, &[]);
    let uas = p.sipp_server("uas-call.xml", p.uas, Transport::Udp, &[]);
    let rsa = p.kamailio.to_string();
    p.sipp_client(
        "uac-call.xml",
        p.uas,
        p.uac,
        Transport::Udp,
        &["-s", "bob", "-ap", KAMAILIO_PASSWORD, "-rsa", &rsa],
    )
    .wait_success(SIPP_TIMEOUT)
    .unwrap();
    uas.wait_success(SIPP_TIMEOUT).unwrap();
    kamailio
        .wait_for_output("challenging INVITE", std::time::Duration::ZERO)
        .unwrap();
}
