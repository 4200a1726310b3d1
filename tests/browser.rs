//! The browser tests: JsSIP in Debian's Chromium, driven by playwright-core
//! (`tests/browser/jssip-e2e.mjs`), registers over WSS through Roundabout to the Kamailio
//! registrar (UDP, digest auth, `record_route()` on initial INVITEs).
//!
//! - issue 4: two JsSIP users exchange MESSAGEs, and alice calls bob (answer, ACK, then
//!   alice's BYE), each side seeing the right JsSIP events;
//! - JsSIP and SIPp phones on UDP registered at Kamailio on their own call each other both
//!   ways, each side hanging up in turn: the browser's in-dialog requests carry Roundabout's
//!   WSS Contact as Request-URI and must reach Kamailio with the phone's own Contact back in
//!   it (Kamailio cannot reach Roundabout over WSS).
//!
//! The tests run one at a time (one Chromium on a 2-core machine is enough).
//!
//! Roundabout runs in the test's own directory, so it finds no cert.pem and presents its
//! throw-away self-signed certificate (what a first try gets); Chromium accepts it with
//! `--ignore-certificate-errors`.
//!
//! Nothing skips: without chromium, node or `tests/browser/node_modules`, the test fails and
//! says to run `bash tests/run-all.sh` (it installs them). On failure it prints the script's
//! event lines, the end of Roundabout's log (SIP messages at trace level) and where the
//! browsers' JsSIP log is (every SIP message they sent and received).

mod common;

use common::{
    kamailio_wait_registered, listener_flags, Peers, Proc, Transport, KAMAILIO_IP,
    KAMAILIO_PASSWORD, PROXY_IP, SIPP_TIMEOUT, UAS_IP,
};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The Chromium binary itself: Debian's /usr/bin/chromium wrapper script sources
/// /etc/chromium.d, whose /dev/shm check breaks on a machine with two mounts there (a shell
/// error on every start) and adds extension flags a headless test does not want.
const CHROMIUM: &str = "/usr/lib/chromium/chromium";

/// How long the script may take to see every event (its own deadline, from its start).
const EVENTS_TIMEOUT_SECS: u64 = 40;
/// How long the script may run at all: its deadline, browser start and teardown.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(EVENTS_TIMEOUT_SECS + 20);

/// The same for the phones test (four calls).
const PHONES_EVENTS_TIMEOUT_SECS: u64 = 60;
const PHONES_SCRIPT_TIMEOUT: Duration = Duration::from_secs(PHONES_EVENTS_TIMEOUT_SECS + 20);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// node, Chromium and the npm packages, or a panic that says how to get them.
fn node_and_browser() -> PathBuf {
    const INSTALL: &str = "run `bash tests/run-all.sh` (it installs chromium, node and the \
                           npm packages of tests/browser)";
    let path = std::env::var_os("PATH").unwrap_or_default();
    let node = std::env::split_paths(&path)
        .map(|dir| dir.join("node"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`node` is not installed: {INSTALL}"));
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing (Debian package chromium): {INSTALL}"
    );
    for package in ["playwright-core", "jssip", "esbuild"] {
        let manifest = browser_dir()
            .join("node_modules")
            .join(package)
            .join("package.json");
        assert!(
            manifest.is_file(),
            "{} is missing: {INSTALL}",
            manifest.display()
        );
    }
    node
}

/// Roundabout's log lines (not the message texts under them, nor the WebSocket library's
/// frame dumps): one line per routing decision; the last `n` of them.
fn log_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace) && !l.contains(" tungstenite::"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One browser test at a time; Roundabout's log gets the SIP messages (its own modules at
/// trace, the rest at debug). Each test takes this first: the variable is set while the
/// other test waits for the lock, so no other thread of this binary reads the environment
/// meanwhile.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "debug,roundabout=trace");
    }
    guard
}

/// Roundabout on UDP and TCP (`p.proxy`) and WSS (returned address), Kamailio its one
/// trusted server (UDP), `-strict-host`.
fn start_roundabout(p: &Peers) -> (Proc, SocketAddr) {
    let wss = SocketAddr::from((PROXY_IP, p.port()));
    let port = p.proxy.port().to_string();
    let wss_port = wss.port().to_string();
    let trusted = format!("{}::{}:udp:", p.kamailio.ip(), p.kamailio.port());
    let local_ip = PROXY_IP.to_string();
    let mut args = vec!["-local-ip", &local_ip];
    args.extend(listener_flags(&port, &wss_port));
    args.extend(["-strict-host", "-trusted-server", &trusted]);
    let roundabout = p.roundabout(
        &args,
        &[
            (p.proxy, Transport::Udp),
            (p.proxy, Transport::Tcp),
            (wss, Transport::Tcp),
        ],
    );
    (roundabout, wss)
}

/// Starts `jssip-e2e.mjs` in `mode` against Roundabout's WSS listener; returns it and the
/// path of its JsSIP log.
fn start_script(
    node: &Path,
    p: &Peers,
    wss: SocketAddr,
    events_timeout_secs: u64,
    mode: &str,
) -> (Proc, PathBuf) {
    let jssip_log = p.dir().join("jssip.log");
    let mut cmd = Command::new(node);
    cmd.arg(browser_dir().join("jssip-e2e.mjs"))
        .arg(format!("wss://{wss}"))
        .arg(KAMAILIO_IP.to_string())
        .arg(events_timeout_secs.to_string())
        .arg(&jssip_log)
        .arg(mode);
    (Proc::spawn("jssip-e2e", cmd, p.dir()), jssip_log)
}

/// Waits (up to `timeout`) for the script to end; its output.
fn finish_script(script: &mut Proc, timeout: Duration) -> (Option<ExitStatus>, String) {
    let status = script.wait_timeout(timeout);
    if status.is_none() {
        script.stop();
    }
    (status, script.output())
}

/// The script's event lines up to PASS (the UAs' stop afterwards disconnects them on
/// purpose), and the problems seen: a disconnection or a FAIL line among them, no PASS, a
/// bad exit.
fn script_problems(
    output: &str,
    status: Option<ExitStatus>,
    timeout: Duration,
) -> (Vec<&str>, Vec<String>) {
    let events: Vec<&str> = output
        .lines()
        .take_while(|l| !l.starts_with("PASS"))
        .collect();
    let passed = output.lines().any(|l| l.starts_with("PASS"));
    let mut problems: Vec<String> = events
        .iter()
        .filter(|l| l.contains(" disconnected") || l.starts_with("FAIL"))
        .map(|l| format!("unexpected: {l}"))
        .collect();
    match status {
        Some(s) if s.success() && passed => {}
        Some(s) => problems.push(format!("jssip-e2e.mjs exited with {s}")),
        None => problems.push(format!(
            "jssip-e2e.mjs still running after {timeout:?}: stopped"
        )),
    }
    (events, problems)
}

/// Panics with the problems, the script's output, Roundabout's log lines, the ends of the
/// other logs and where the JsSIP log is; does nothing without problems.
fn report_problems(
    problems: &[String],
    output: &str,
    roundabout: &Proc,
    others: &[&Proc],
    jssip_log: &Path,
) {
    if problems.is_empty() {
        return;
    }
    let mut report = String::new();
    let _ = writeln!(report, "browser test failed:\n  {}", problems.join("\n  "));
    let _ = writeln!(report, "--- jssip-e2e.mjs output\n{output}");
    let _ = writeln!(
        report,
        "--- {} (its log lines, last 150; the messages are under them in the file)\n{}",
        roundabout.log_path().display(),
        log_lines(roundabout.log_path(), 150)
    );
    for other in others {
        let _ = writeln!(report, "{}", other.report());
    }
    let _ = writeln!(
        report,
        "--- the browsers' JsSIP log (every SIP message they sent and received): {}",
        jssip_log.display()
    );
    panic!("{report}");
}

/// Two JsSIP users register over WSS through Roundabout to Kamailio, exchange MESSAGEs both
/// ways, and alice calls bob: bob answers, both see the call confirmed, alice hangs up and
/// both see it ended (the call crosses Roundabout twice, a spiral through Kamailio).
#[test]
fn jssip_in_chromium_registers_messages_and_calls_over_wss() {
    let _one = one_at_a_time();
    let node = node_and_browser();

    let p = Peers::new();
    let kamailio = p.kamailio_registrar(p.kamailio, &[]);
    let (roundabout, wss) = start_roundabout(&p);
    let (mut script, jssip_log) = start_script(&node, &p, wss, EVENTS_TIMEOUT_SECS, "pair");
    let (status, output) = finish_script(&mut script, SCRIPT_TIMEOUT);

    let domain = KAMAILIO_IP;
    let expected = [
        "alice registered 200".to_string(),
        "bob registered 200".to_string(),
        format!("bob newMessage from=sip:alice@{domain} body=\"hello bob\""),
        "alice message-succeeded 200".to_string(),
        format!("alice newMessage from=sip:bob@{domain} body=\"hello alice\""),
        "bob message-succeeded 200".to_string(),
        format!("bob incoming from=sip:alice@{domain}"),
        "alice accepted originator=remote".to_string(),
        "alice confirmed originator=local".to_string(),
        "bob confirmed originator=remote".to_string(),
        "alice ended originator=local cause=Terminated".to_string(),
        "bob ended originator=remote cause=Terminated".to_string(),
    ];
    let (events, mut problems) = script_problems(&output, status, SCRIPT_TIMEOUT);
    problems.splice(
        0..0,
        expected
            .iter()
            .filter(|want| !events.contains(&want.as_str()))
            .map(|want| format!("missing event: {want}")),
    );
    report_problems(&problems, &output, &roundabout, &[&kamailio], &jssip_log);
    print!("{output}");
}

/// JsSIP (alice, WSS through Roundabout) and two SIPp phones on UDP registered at Kamailio
/// directly (carol, dave) call each other through Kamailio, which record-routes:
///
/// 1. alice calls carol, carol hangs up;   2. alice calls dave, alice hangs up;
/// 3. carol calls alice, carol hangs up;   4. dave calls alice, alice hangs up.
///
/// Every ACK and BYE must reach the far side (each SIPp phone fails on a missing one, and
/// JsSIP's events say whether hers arrived), and every in-dialog request Roundabout hands to
/// Kamailio must carry the phone's own Contact, not Roundabout's `;transport=ws;rbt=` URI
/// (Kamailio's log shows what it received). The phones answer and offer SDP that Chromium
/// accepts (`tests/sipp/uas-webrtc.xml`, `uac-webrtc.xml`); no media flows.
#[test]
fn jssip_over_wss_and_udp_phones_call_each_other_through_record_routing_kamailio() {
    let _one = one_at_a_time();
    let node = node_and_browser();

    let p = Peers::new();
    let mut kamailio = p.kamailio_registrar(p.kamailio, &["NO_INVITE_AUTH"]);
    let (roundabout, wss) = start_roundabout(&p);
    let carol = p.uas;
    let dave = SocketAddr::from((UAS_IP, p.port()));
    for (user, addr) in [("carol", carol), ("dave", dave)] {
        p.sipp_client(
            "uac-register-auth.xml",
            p.kamailio,
            addr,
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
        .unwrap_or_else(|e| panic!("{user} did not register at Kamailio: {e}"));
        kamailio_wait_registered(&mut kamailio, user);
    }
    // calls 1 and 2: the phones answer (and carol hangs up); they must outlive the
    // browser's start, so their own timeout is the script's
    let phone_timeout = format!("{}s", PHONES_SCRIPT_TIMEOUT.as_secs());
    let answering = |addr, hangup| {
        p.sipp_server(
            "uas-webrtc.xml",
            addr,
            Transport::Udp,
            &["-key", "hangup", hangup, "-timeout", &phone_timeout],
        )
    };
    let carol_answers = answering(carol, "phone");
    let dave_answers = answering(dave, "peer");

    let (mut script, jssip_log) =
        start_script(&node, &p, wss, PHONES_EVENTS_TIMEOUT_SECS, "phones");
    // calls 3 and 4: each phone calls alice from its registered address once the script
    // says she is ready for it
    let calling = |addr, user, hangup| {
        p.sipp_client(
            "uac-webrtc.xml",
            p.kamailio,
            addr,
            Transport::Udp,
            &[
                "-s", "alice", "-key", "from", user, "-key", "hangup", hangup,
            ],
        )
    };
    let phones = (|| -> Result<(), String> {
        script.wait_for_output("alice ready-for-call 1", PHONES_SCRIPT_TIMEOUT)?;
        carol_answers
            .wait_success(SIPP_TIMEOUT)
            .map_err(|e| format!("carol, called by alice: {e}"))?;
        dave_answers
            .wait_success(SIPP_TIMEOUT)
            .map_err(|e| format!("dave, called by alice: {e}"))?;
        calling(carol, "carol", "phone")
            .wait_success(SIPP_TIMEOUT)
            .map_err(|e| format!("carol, calling alice: {e}"))?;
        script.wait_for_output("alice ready-for-call 2", SIPP_TIMEOUT)?;
        calling(dave, "dave", "peer")
            .wait_success(SIPP_TIMEOUT)
            .map_err(|e| format!("dave, calling alice: {e}"))
    })();
    // after a phone failed the script only waits for its deadline: a few seconds for its
    // last lines
    let script_wait = match phones {
        Ok(()) => PHONES_SCRIPT_TIMEOUT,
        Err(_) => Duration::from_secs(5),
    };
    let (status, output) = finish_script(&mut script, script_wait);

    let expected = [
        "alice registered 200".to_string(),
        "step: alice calls carol, carol hangs up".to_string(),
        "alice accepted originator=remote".to_string(),
        "alice confirmed originator=local".to_string(),
        "alice ended originator=remote cause=Terminated".to_string(),
        "step: alice calls dave, alice hangs up".to_string(),
        "alice accepted originator=remote".to_string(),
        "alice confirmed originator=local".to_string(),
        "alice ended originator=local cause=Terminated".to_string(),
        "step: carol calls alice, carol hangs up".to_string(),
        "alice ready-for-call 1".to_string(),
        format!("alice incoming from=sip:carol@{carol}"),
        "alice accepted originator=local".to_string(),
        "alice confirmed originator=remote".to_string(),
        "alice ended originator=remote cause=Terminated".to_string(),
        "step: dave calls alice, alice hangs up".to_string(),
        "alice ready-for-call 2".to_string(),
        format!("alice incoming from=sip:dave@{dave}"),
        "alice accepted originator=local".to_string(),
        "alice confirmed originator=remote".to_string(),
        "alice ended originator=local cause=Terminated".to_string(),
    ];
    let (events, mut problems) = script_problems(&output, status, script_wait);
    if let Err(e) = phones {
        problems.insert(0, e);
    }
    // the events in this order (others may come between them)
    let mut rest = events.iter();
    if let Some(want) = expected
        .iter()
        .find(|want| !rest.any(|e| e == &want.as_str()))
    {
        problems.push(format!("missing event, or out of order: {want}"));
    }
    // what Roundabout handed to Kamailio inside the dialogs: the phones' own Contacts
    let kamailio_log = kamailio.output();
    let from_roundabout: Vec<&str> = kamailio_log
        .lines()
        .filter(|l| {
            (l.contains("REQ ACK ") || l.contains("REQ BYE "))
                && l.contains(&format!(" from udp:{PROXY_IP}:"))
        })
        .collect();
    for method in ["ACK", "BYE"] {
        let count = from_roundabout
            .iter()
            .filter(|l| l.contains(&format!("REQ {method} ")))
            .count();
        if count < 2 {
            problems.push(format!(
                "Kamailio got {count} {method} from Roundabout, expected 2 (the ACKs of calls 1 and \
                 2, the BYEs of calls 2 and 4)"
            ));
        }
    }
    problems.extend(
        from_roundabout
            .iter()
            .filter(|l| {
                !l.contains(&format!(" sip:{UAS_IP}:")) && !l.contains(&format!("@{UAS_IP}:"))
            })
            .map(|l| format!("Request-URI not restored to the phone's Contact: {l}")),
    );
    report_problems(&problems, &output, &roundabout, &[&kamailio], &jssip_log);
    print!("{output}");
}
