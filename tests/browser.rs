//! The browser test (issue 4): two JsSIP users in Debian's Chromium, driven by playwright-core
//! (`tests/browser/jssip-e2e.mjs`), register over WSS through Roundabout to the Kamailio
//! registrar (UDP, digest auth), exchange MESSAGEs, and alice calls bob (answer, ACK, then
//! alice's BYE), each side seeing the right JsSIP events.
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

use common::{listener_flags, Peers, Proc, Transport, KAMAILIO_IP, PROXY_IP};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The Chromium binary itself: Debian's /usr/bin/chromium wrapper script sources
/// /etc/chromium.d, whose /dev/shm check breaks on a machine with two mounts there (a shell
/// error on every start) and adds extension flags a headless test does not want.
const CHROMIUM: &str = "/usr/lib/chromium/chromium";

/// How long the script may take to see every event (its own deadline, from its start).
const EVENTS_TIMEOUT_SECS: u64 = 40;
/// How long the script may run at all: its deadline, browser start and teardown.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(EVENTS_TIMEOUT_SECS + 20);

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

#[test]
fn jssip_in_chromium_registers_messages_and_calls_over_wss() {
    let node = node_and_browser();
    // SIP messages in Roundabout's log (its own modules at trace, the rest at debug); this
    // binary has one test, so nothing else reads the environment meanwhile
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "debug,roundabout=trace");
    }

    let p = Peers::new();
    let kamailio = p.kamailio_registrar(p.kamailio, &[]);
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

    let jssip_log = p.dir().join("jssip.log");
    let mut cmd = Command::new(node);
    cmd.arg(browser_dir().join("jssip-e2e.mjs"))
        .arg(format!("wss://{wss}"))
        .arg(KAMAILIO_IP.to_string())
        .arg(EVENTS_TIMEOUT_SECS.to_string())
        .arg(&jssip_log);
    let mut script = Proc::spawn("jssip-e2e", cmd, p.dir());
    let status = script.wait_timeout(SCRIPT_TIMEOUT);
    if status.is_none() {
        script.stop();
    }
    let output = script.output();

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
    // events up to PASS (the UAs' stop afterwards disconnects them on purpose)
    let events: Vec<&str> = output
        .lines()
        .take_while(|l| !l.starts_with("PASS"))
        .collect();
    let passed = output.lines().any(|l| l.starts_with("PASS"));
    let mut problems: Vec<String> = expected
        .iter()
        .filter(|want| !events.contains(&want.as_str()))
        .map(|want| format!("missing event: {want}"))
        .collect();
    problems.extend(
        events
            .iter()
            .filter(|l| l.contains(" disconnected") || l.starts_with("FAIL"))
            .map(|l| format!("unexpected: {l}")),
    );
    match status {
        Some(s) if s.success() && passed => {}
        Some(s) => problems.push(format!("jssip-e2e.mjs exited with {s}")),
        None => problems.push(format!(
            "jssip-e2e.mjs still running after {SCRIPT_TIMEOUT:?}: stopped"
        )),
    }

    if !problems.is_empty() {
        let mut report = String::new();
        let _ = writeln!(report, "browser test failed:\n  {}", problems.join("\n  "));
        let _ = writeln!(report, "--- jssip-e2e.mjs output\n{output}");
        let _ = writeln!(
            report,
            "--- {} (its log lines, last 150; the messages are under them in the file)\n{}",
            roundabout.log_path().display(),
            log_lines(roundabout.log_path(), 150)
        );
        let _ = writeln!(report, "{}", kamailio.report());
        let _ = writeln!(
            report,
            "--- the browsers' JsSIP log (every SIP message they sent and received): {}",
            jssip_log.display()
        );
        panic!("{report}");
    }
    print!("{output}");
}
