//! End-to-end: Roundabout in front of a record-routing registrar. A phone on TLS, WS, WSS
//! or TCP (a raw-socket peer of `tests/transport_peers`, on 127.0.0.5) registers through
//! Roundabout to the Kamailio registrar (`tests/peers/kamailio-registrar.cfg`, UDP, digest
//! auth, `record_route()` on initial INVITEs); a SIPp phone on UDP registers at Kamailio
//! directly. They call each other both ways, and each call is ended once by the caller and
//! once by the callee.
//!
//! The route set the phones learn is [Roundabout on the phone's transport, Roundabout UDP,
//! Kamailio] (or its reverse), and the phone's in-dialog requests carry a Request-URI that
//! Roundabout rewrote (`sip:...@127.0.0.1:<TLS/WS port>;transport=...;rbt=...`). Roundabout
//! must put the original Contact back into the Request-URI before it hands the request to
//! Kamailio, even though a Route (Kamailio's) remains: Kamailio cannot reach Roundabout over
//! TLS or WS and would answer `500 ... (7/TM)`. Every ACK and BYE is checked where it
//! arrives (its Request-URI, and for the SIPp phone, Kamailio's log of what Roundabout sent
//! it), and every BYE must be answered 200 by the far end.
//!
//! Kamailio runs with `NO_INVITE_AUTH` (REGISTER is still challenged; the raw phone answers
//! with the small MD5 digest below). Every read is bounded (`transport_peers::IO_TIMEOUT`,
//! SIPp's own `-timeout`); nothing is skipped.

mod common;
mod transport_peers;

use common::{
    kamailio_wait_registered, Peers, Proc, Transport, KAMAILIO_PASSWORD, PROXY_IP, SIPP_TIMEOUT,
};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use transport_peers::*;

/// The raw phone's address (a spare one of `tests/common`).
const PHONE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

/// Host a WebSocket phone writes into its Via and Contact (JsSIP style).
const INVALID_HOST: &str = "df7jal23ls0d.invalid";

/// How long Kamailio may take to log a request it received.
const LOG_WAIT: Duration = Duration::from_secs(3);

/// One test's peers: Kamailio (registrar, record-routing), Roundabout with all five
/// listeners and Kamailio as its one trusted server (UDP).
struct World {
    p: Peers,
    proxy: ProxyPorts,
    kamailio: Proc,
    roundabout: Proc,
}

impl World {
    fn start() -> World {
        let p = Peers::new();
        let kamailio = p.kamailio_registrar(p.kamailio, &["NO_INVITE_AUTH"]);
        let proxy = ProxyPorts::new(&p);
        let trusted = format!("{}::{}:udp:", p.kamailio.ip(), p.kamailio.port());
        let flags = ["-strict-host", "-ack-ruri", "-trusted-server", &trusted];
        let roundabout = proxy.start_roundabout(&p, &flags, None);
        World {
            p,
            proxy,
            kamailio,
            roundabout,
        }
    }

    /// The registrar's domain: users are `sip:USER@127.0.0.4`.
    fn domain(&self) -> String {
        self.p.kamailio.ip().to_string()
    }

    /// The ends of Roundabout's and Kamailio's logs, for a failure message.
    fn report(&self) -> String {
        format!("{}{}", self.roundabout.report(), self.kamailio.report())
    }

    /// A SIPp phone on UDP at `local` registers `user` at Kamailio directly (digest auth).
    fn register_sipp_phone(&mut self, user: &str, local: SocketAddr) {
        self.p
            .sipp_client(
                "uac-register-auth.xml",
                self.p.kamailio,
                local,
                Transport::Udp,
                &[
                    "-s",
                    user,
                    "-ap",
                    KAMAILIO_PASSWORD,
                    "-key",
                    "expires",
                    "3600",
                ],
            )
            .wait_success(SIPP_TIMEOUT)
            .unwrap_or_else(|e| panic!("SIPp phone {user} did not register: {e}"));
        kamailio_wait_registered(&mut self.kamailio, user);
    }

    /// Kamailio received `method` of `call_id` from Roundabout (UDP) with `ruri` as its
    /// Request-URI, every time: never with Roundabout's own URI left in it.
    fn assert_kamailio_got(&self, method: &str, call_id: &str, ruri: &str) {
        let from_us = format!(" from udp:{PROXY_IP}:");
        let want = format!("REQ {method} {ruri}{from_us}");
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            let out = self.kamailio.output();
            let seen: Vec<&str> = out
                .lines()
                .filter(|l| {
                    l.contains(call_id)
                        && l.contains(&format!("REQ {method} "))
                        && l.contains(&from_us)
                })
                .collect();
            if let Some(wrong) = seen.iter().find(|l| !l.contains(&want)) {
                panic!(
                    "Kamailio got the {method} from Roundabout with another Request-URI than \
                     {ruri} (not restored?):\n{wrong}\n{}",
                    self.report()
                );
            }
            if !seen.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "Kamailio never logged the {method} of {call_id} from Roundabout:\n{}",
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A phone on a stream or WebSocket transport, registered through Roundabout.
struct Phone {
    link: Link,
    user: String,
    /// Its Contact URI (its own address, or a `.invalid` host on WS/WSS).
    contact: String,
    branches: u32,
}

impl Phone {
    /// Connects to Roundabout on `kind` and registers `user` at Kamailio through it,
    /// answering the 401 challenge.
    async fn register(kind: Kind, user: &str, w: &World) -> Phone {
        let link = Link::connect(kind, PHONE_IP.into(), &w.proxy).await;
        let host = if kind.is_ws() {
            INVALID_HOST.to_string()
        } else {
            link.local.to_string()
        };
        let contact = format!("sip:{user}@{host}{}", kind.uri_param());
        let mut phone = Phone {
            link,
            user: user.to_string(),
            contact,
            branches: 0,
        };

        let ruri = format!("sip:{}", w.p.kamailio);
        let aor = format!("<sip:{user}@{}>", w.domain());
        let call_id = format!("reg-{user}-{}@phone", kind.name());
        let register = |phone: &mut Phone, cseq: u32, auth: Option<String>| {
            let mut headers = vec![
                format!("Contact: <{}>;expires=600", phone.contact),
                "Expires: 600".to_string(),
            ];
            headers.extend(auth);
            Request {
                method: "REGISTER",
                uri: &ruri,
                via: phone.via(),
                from: format!("{aor};tag=reg{cseq}"),
                to: aor.clone(),
                call_id: &call_id,
                cseq,
                headers,
                body: "",
            }
            .render()
        };

        let first = register(&mut phone, 1, None);
        phone.link.send(&first).await;
        let challenge = phone.link.recv_final().await;
        assert_eq!(
            challenge.status(),
            Some(401),
            "REGISTER of {user}:\n{challenge}\n{}",
            w.report()
        );
        let authorization = digest_authorization(&challenge, user, "REGISTER", &ruri);
        let second = register(&mut phone, 2, Some(authorization));
        phone.link.send(&second).await;
        let ok = phone.link.recv_final().await;
        assert_eq!(
            ok.status(),
            Some(200),
            "REGISTER of {user} with credentials:\n{ok}\n{}",
            w.report()
        );
        assert!(
            ok.get("Contact").contains(&format!("<{}>", phone.contact)),
            "the phone's own Contact must come back:\n{ok}"
        );
        phone
    }

    fn kind(&self) -> Kind {
        self.link.kind
    }

    /// A Via with a new branch.
    fn via(&mut self) -> String {
        self.branches += 1;
        let host = if self.kind().is_ws() {
            INVALID_HOST.to_string()
        } else {
            self.link.local.to_string()
        };
        format!(
            "SIP/2.0/{} {host};branch=z9hG4bK-{}-{};rport",
            self.kind().via(),
            self.user,
            self.branches
        )
    }

    fn contact_header(&self) -> String {
        format!("Contact: <{}>", self.contact)
    }
}

/// The `Authorization` header answering the digest challenge of a 401 (RFC 2617, MD5, with
/// `qop=auth` when offered), for `user` and the registrar's password.
fn digest_authorization(challenge: &Msg, user: &str, method: &str, uri: &str) -> String {
    let raw = challenge
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no WWW-Authenticate in:\n{challenge}"));
    let params = raw
        .strip_prefix("Digest")
        .unwrap_or_else(|| panic!("not a digest challenge: {raw}"));
    let mut realm = None;
    let mut nonce = None;
    let mut opaque = None;
    let mut qop_auth = false;
    for part in split_outside_quotes(params) {
        let Some((name, value)) = part.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        match name.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value),
            "nonce" => nonce = Some(value),
            "opaque" => opaque = Some(value),
            "qop" => qop_auth = value.split(',').any(|q| q.trim() == "auth"),
            _ => {}
        }
    }
    let realm = realm.unwrap_or_else(|| panic!("no realm in {raw}"));
    let nonce = nonce.unwrap_or_else(|| panic!("no nonce in {raw}"));
    let ha1 = md5_hex(format!("{user}:{realm}:{KAMAILIO_PASSWORD}").as_bytes());
    let ha2 = md5_hex(format!("{method}:{uri}").as_bytes());
    let mut header = format!(
        "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", \
         uri=\"{uri}\", algorithm=MD5"
    );
    if qop_auth {
        let (nc, cnonce) = ("00000001", "0a4f113b");
        let response = md5_hex(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}").as_bytes());
        header += &format!(", response=\"{response}\", qop=auth, nc={nc}, cnonce=\"{cnonce}\"");
    } else {
        let response = md5_hex(format!("{ha1}:{nonce}:{ha2}").as_bytes());
        header += &format!(", response=\"{response}\"");
    }
    if let Some(opaque) = opaque {
        header += &format!(", opaque=\"{opaque}\"");
    }
    header
}

/// Splits on commas outside double quotes.
fn split_outside_quotes(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// MD5 (RFC 1321) as lower-case hex: the digest of SIP authentication. No MD5 crate is in
/// the dependency tree, and this is all the tests need of one.
fn md5_hex(input: &[u8]) -> String {
    const SHIFTS: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
    // K[i] = floor(|sin(i + 1)| * 2^32), checked by the test vectors below
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut data = input.to_vec();
    data.push(0x80);
    while data.len() % 64 != 56 {
        data.push(0);
    }
    data.extend_from_slice(&((input.len() as u64).wrapping_mul(8)).to_le_bytes());
    for block in data.chunks(64) {
        let m: Vec<u32> = block
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(SHIFTS[(i / 16) * 4 + i % 4]));
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    state
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The digest helper itself: RFC 1321's test suite, and RFC 2617's worked example.
#[test]
fn md5_digest_helper_matches_the_rfc_vectors() {
    for (input, want) in [
        ("", "d41d8cd98f00b204e9800998ecf8427e"),
        ("a", "0cc175b9c0f1b6a831c399e269772661"),
        ("abc", "900150983cd24fb0d6963f7d28e17f72"),
        ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
        (
            "abcdefghijklmnopqrstuvwxyz",
            "c3fcd3d76192e4007dfb496cca67e13b",
        ),
        (
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            "d174ab98d277d9f5a5611c2c9f419d9f",
        ),
        (
            "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
            "57edf4a22be3c955ac49da2e2107b67a",
        ),
    ] {
        assert_eq!(md5_hex(input.as_bytes()), want, "MD5({input:?})");
    }
    // RFC 2617 3.5: Mufasa, qop=auth
    let ha1 = md5_hex(b"Mufasa:testrealm@host.com:Circle Of Life");
    let ha2 = md5_hex(b"GET:/dir/index.html");
    let response = md5_hex(
        format!("{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}").as_bytes(),
    );
    assert_eq!(response, "6629fae49393a05397450978507c4ef1");
}

/// A Record-Route entry of Roundabout for `kind` (`<sip:127.0.0.1:PORT;transport=..;lr>`).
fn assert_roundabout_rr(rr: &str, kind: Kind, proxy: &ProxyPorts, m: &Msg) {
    let uri = uri_of(rr);
    assert!(
        uri.starts_with(&format!("sip:{}:{}", proxy.ip, proxy.port(kind))) && uri.contains(";lr"),
        "{rr} should be Roundabout's Record-Route for {kind:?}:\n{m}"
    );
    match kind.uri_param() {
        "" => assert!(!uri.contains("transport="), "{rr} for UDP:\n{m}"),
        p => assert!(uri.contains(p), "{rr} should carry {p}:\n{m}"),
    }
}

/// Kamailio's Record-Route entry.
fn assert_kamailio_rr(rr: &str, kamailio: SocketAddr, m: &Msg) {
    let uri = uri_of(rr);
    assert!(
        uri.starts_with(&format!("sip:{kamailio};")) && uri.contains(";lr"),
        "{rr} should be Kamailio's Record-Route:\n{m}"
    );
}

/// The message came from Roundabout on `kind` after Kamailio: Roundabout's Via on top, then
/// Kamailio's, then the SIPp phone's.
fn assert_vias_roundabout_kamailio_phone(m: &Msg, kind: Kind, w: &World) {
    let vias = m.all("Via");
    let ours = format!(
        "SIP/2.0/{} {}:{};branch=",
        kind.via(),
        w.proxy.ip,
        w.proxy.port(kind)
    );
    assert_eq!(
        vias.len(),
        3,
        "Roundabout, Kamailio and the SIPp phone:\n{m}"
    );
    assert!(vias[0].starts_with(&ours), "top Via should be {ours}:\n{m}");
    assert!(
        vias[1].starts_with(&format!("SIP/2.0/UDP {}", w.p.kamailio)),
        "then Kamailio's:\n{m}"
    );
}

/// A small SDP offer (the SIPp phones ignore it).
const SDP: &str = "v=0\r\no=alice 1 1 IN IP4 127.0.0.5\r\ns=-\r\nc=IN IP4 127.0.0.5\r\nt=0 0\r\n\
                   m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// The raw phone (alice, on `kind`) calls the SIPp UDP phone (carol) twice through
/// Roundabout and Kamailio: alice hangs up the first call, carol the second.
async fn phone_calls_sipp_phone(kind: Kind) {
    let mut w = World::start();
    let mut alice = Phone::register(kind, "alice", &w).await;
    let uas = w.p.uas;
    w.register_sipp_phone("carol", uas);
    // carol's SIPp (server mode) answers with this Contact
    let carol_contact = format!("sip:{uas};transport=UDP");
    let domain = w.domain();

    for (n, carol_hangs_up) in [(1, false), (2, true)] {
        let scenario = if carol_hangs_up {
            "uas-call-bye.xml"
        } else {
            "uas-call.xml"
        };
        let carol = w.p.sipp_server(scenario, uas, Transport::Udp, &[]);
        let call_id = format!("rr-{}-{n}@phone", kind.name());
        let from = format!("<sip:alice@{domain}>;tag=alice{n}");
        let invite = Request {
            method: "INVITE",
            uri: &format!("sip:carol@{}", w.p.kamailio),
            via: alice.via(),
            from: from.clone(),
            to: format!("<sip:carol@{domain}>"),
            call_id: &call_id,
            cseq: 1,
            headers: vec![alice.contact_header()],
            body: SDP,
        };
        alice.link.send(&invite.render()).await;
        let ok = alice.link.recv_final().await;
        assert_eq!(ok.status(), Some(200), "{ok}\n{}", w.report());

        // The route set: Kamailio's entry, then Roundabout's two (UDP towards Kamailio,
        // the phone's transport); Roundabout's Contact on the phone's side.
        let rr = ok.all("Record-Route");
        assert_eq!(rr.len(), 3, "Record-Route entries:\n{ok}");
        assert_kamailio_rr(&rr[0], w.p.kamailio, &ok);
        assert_roundabout_rr(&rr[1], Kind::Udp, &w.proxy, &ok);
        assert_roundabout_rr(&rr[2], kind, &w.proxy, &ok);
        let target = uri_of(&ok.get("Contact"));
        assert!(
            target.starts_with(&format!("sip:{}:{}", w.proxy.ip, w.proxy.port(kind)))
                && target.contains("rbt="),
            "carol's Contact rewritten for the phone's side: {target}"
        );

        let routes = ok.route_set();
        let in_dialog = |alice: &mut Phone, method, cseq| {
            Request {
                method,
                uri: &target,
                via: alice.via(),
                from: from.clone(),
                to: ok.get("To"),
                call_id: &call_id,
                cseq,
                headers: routes.clone(),
                body: "",
            }
            .render()
        };
        let ack = in_dialog(&mut alice, "ACK", 1);
        alice.link.send(&ack).await;
        w.assert_kamailio_got("ACK", &call_id, &carol_contact);

        if carol_hangs_up {
            // carol's BYE comes back along the route set with alice's own Contact restored
            let bye = alice.link.recv_request("BYE").await;
            assert_eq!(
                bye.request_uri(),
                alice.contact,
                "the BYE must reach alice with her own Contact:\n{bye}"
            );
            assert!(bye.all("Route").is_empty(), "routes consumed:\n{bye}");
            assert_vias_roundabout_kamailio_phone(&bye, kind, &w);
            alice
                .link
                .send(&response(&bye, 200, "OK", "unused", &[]))
                .await;
        } else {
            // let the ACK reach carol first (UDP, two hops)
            tokio::time::sleep(Duration::from_millis(300)).await;
            let bye = in_dialog(&mut alice, "BYE", 2);
            alice.link.send(&bye).await;
            let bye_ok = alice.link.recv_final().await;
            assert_eq!(
                bye_ok.status(),
                Some(200),
                "carol must answer alice's BYE (a 500 from Kamailio: the Request-URI was not \
                 restored):\n{bye_ok}\n{}",
                w.report()
            );
            assert_eq!(bye_ok.get("CSeq"), "2 BYE");
            w.assert_kamailio_got("BYE", &call_id, &carol_contact);
        }
        carol
            .wait_success(SIPP_TIMEOUT)
            .unwrap_or_else(|e| panic!("carol, call {n} from {kind:?}: {e}\n{}", w.report()));
    }
}

/// The SIPp UDP phone (carol, registered at Kamailio) calls the raw phone (alice, on `kind`)
/// twice: Kamailio sends the INVITE to the Contact Roundabout registered, Roundabout delivers
/// it over alice's connection. carol hangs up the first call, alice the second.
async fn sipp_phone_calls_phone(kind: Kind) {
    let mut w = World::start();
    let mut alice = Phone::register(kind, "alice", &w).await;
    let uac = w.p.uac;
    w.register_sipp_phone("carol", uac);
    // the Contact of uac-call*.xml
    let carol_contact = format!("sip:sipp@{uac};transport=UDP");

    for (n, alice_hangs_up) in [(1, false), (2, true)] {
        let scenario = if alice_hangs_up {
            "uac-call-remote-bye.xml"
        } else {
            "uac-call.xml"
        };
        let carol = w.p.sipp_client(
            scenario,
            w.p.kamailio,
            uac,
            Transport::Udp,
            &["-s", "alice"],
        );
        let inv = alice.link.recv_request("INVITE").await;
        assert_eq!(
            inv.request_uri(),
            alice.contact,
            "the INVITE must reach alice with her registered Contact:\n{inv}"
        );
        assert_vias_roundabout_kamailio_phone(&inv, kind, &w);
        let rr = inv.all("Record-Route");
        assert_eq!(rr.len(), 3, "Record-Route entries:\n{inv}");
        assert_roundabout_rr(&rr[0], kind, &w.proxy, &inv);
        assert_roundabout_rr(&rr[1], Kind::Udp, &w.proxy, &inv);
        assert_kamailio_rr(&rr[2], w.p.kamailio, &inv);
        let target = uri_of(&inv.get("Contact"));
        assert!(
            target.starts_with(&format!("sip:sipp@{}:{}", w.proxy.ip, w.proxy.port(kind)))
                && target.contains("rbt="),
            "carol's Contact rewritten for the phone's side: {target}"
        );
        let call_id = inv.get("Call-ID");
        let tag = format!("alice{n}");
        let ok = response(&inv, 200, "OK", &tag, &[alice.contact_header()]);
        alice.link.send(&ok).await;

        let ack = alice.link.recv_request("ACK").await;
        assert_eq!(ack.request_uri(), alice.contact, "{ack}");
        assert!(ack.all("Route").is_empty(), "routes consumed:\n{ack}");
        assert_vias_roundabout_kamailio_phone(&ack, kind, &w);

        if alice_hangs_up {
            // a UAS's route set is the Record-Route in order (RFC 3261 12.1.1)
            let routes = rr.iter().map(|r| format!("Route: {r}")).collect();
            let bye = Request {
                method: "BYE",
                uri: &target,
                via: alice.via(),
                from: format!("{};tag={tag}", inv.get("To")),
                to: inv.get("From"),
                call_id: &call_id,
                cseq: 1,
                headers: routes,
                body: "",
            };
            alice.link.send(&bye.render()).await;
            let bye_ok = alice.link.recv_final().await;
            assert_eq!(
                bye_ok.status(),
                Some(200),
                "carol must answer alice's BYE (a 500 from Kamailio: the Request-URI was not \
                 restored):\n{bye_ok}\n{}",
                w.report()
            );
            assert_eq!(bye_ok.get("CSeq"), "1 BYE");
            w.assert_kamailio_got("BYE", &call_id, &carol_contact);
        } else {
            let bye = alice.link.recv_request("BYE").await;
            assert_eq!(
                bye.request_uri(),
                alice.contact,
                "the BYE must reach alice with her own Contact:\n{bye}"
            );
            assert!(bye.all("Route").is_empty(), "routes consumed:\n{bye}");
            assert_vias_roundabout_kamailio_phone(&bye, kind, &w);
            alice
                .link
                .send(&response(&bye, 200, "OK", "unused", &[]))
                .await;
        }
        carol
            .wait_success(SIPP_TIMEOUT)
            .unwrap_or_else(|e| panic!("carol, call {n} to {kind:?}: {e}\n{}", w.report()));
    }
}

/// A TLS phone calls a UDP phone behind record-routing Kamailio; its ACK and BYE reach
/// Kamailio with the UDP phone's own Contact as Request-URI (not Roundabout's TLS URI), and
/// the BYE is answered 200; the UDP phone's BYE reaches the TLS phone with its Contact.
#[tokio::test]
async fn tls_phone_calls_udp_phone_through_record_routing_kamailio() {
    phone_calls_sipp_phone(Kind::Tls).await;
}

/// A UDP phone calls a TLS phone behind Roundabout through record-routing Kamailio; the TLS
/// phone's BYE reaches Kamailio with the UDP phone's own Contact and is answered 200.
#[tokio::test]
async fn udp_phone_calls_tls_phone_through_record_routing_kamailio() {
    sipp_phone_calls_phone(Kind::Tls).await;
}

/// As the TLS test, with a WebSocket (ws://) phone.
#[tokio::test]
async fn ws_phone_calls_udp_phone_through_record_routing_kamailio() {
    phone_calls_sipp_phone(Kind::Ws).await;
}

/// As the TLS test, with the UDP phone calling a WebSocket (ws://) phone.
#[tokio::test]
async fn udp_phone_calls_ws_phone_through_record_routing_kamailio() {
    sipp_phone_calls_phone(Kind::Ws).await;
}

/// As the TLS test, with a secure WebSocket (wss://) phone, the browsers' transport.
#[tokio::test]
async fn wss_phone_calls_udp_phone_through_record_routing_kamailio() {
    phone_calls_sipp_phone(Kind::Wss).await;
}

/// As the TLS test, with the UDP phone calling a secure WebSocket (wss://) phone.
#[tokio::test]
async fn udp_phone_calls_wss_phone_through_record_routing_kamailio() {
    sipp_phone_calls_phone(Kind::Wss).await;
}

/// As the TLS test, with a TCP phone. Kamailio could reach Roundabout over TCP, but the
/// Request-URI must be restored all the same (Kamailio's log shows what it received).
#[tokio::test]
async fn tcp_phone_calls_udp_phone_through_record_routing_kamailio() {
    phone_calls_sipp_phone(Kind::Tcp).await;
}

/// As the TLS test, with the UDP phone calling a TCP phone.
#[tokio::test]
async fn udp_phone_calls_tcp_phone_through_record_routing_kamailio() {
    sipp_phone_calls_phone(Kind::Tcp).await;
}
