//! The command line as users type it: exit codes, messages naming the bad flag, the no-flag
//! run, and the shipped config examples read by the real parser.

mod common;

use roundabout::config::flags::{self, Parsed};
use roundabout::config::Command;
use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_roundabout");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Process::new(BIN)
        .args(args)
        .output()
        .expect("run roundabout");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (args, needle) in [
        (&["-no-such-flag"][..], "-no-such-flag"),
        (&["-udp-port", "seventy"][..], "udp-port"),
        (&["-local-ip", "300.1.1.1"][..], "-local-ip"),
        (&["-strict-host=maybe"][..], "-strict-host"),
        (&["-default-network", "sctp"][..], "-default-network"),
        (
            &[
                "-trusted-server",
                "203.0.113.20::5060:tcp:",
                "-default-sip-server",
                "203.0.113.99",
            ][..],
            "203.0.113.99",
        ),
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn help_and_version() {
    for h in ["-h", "-help", "--help"] {
        let (code, out, _) = run(&[h]);
        assert_eq!(code, 0);
        for flag in [
            "-local-ip",
            "-trusted-server",
            "-strict-client",
            "-ack-ruri",
            "-csr-san",
            "-udp-port",
        ] {
            assert!(out.contains(flag), "{h}: {flag} missing in\n{out}");
        }
        assert!(out.contains("(default: 5060)"));
    }
    let (code, out, _) = run(&["-version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("roundabout {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A malformed dataset is a warning naming the field; the good ones are used.
#[test]
fn malformed_dataset_is_warned_and_skipped() {
    let banner = banner_of(
        Process::new(BIN)
            .args(common::listener_flags("0", "0"))
            .args([
                "-trusted-server",
                "127.0.0.3::5060:tcp:,127.0.0.4::5060:sctp:",
            ]),
    );
    assert!(
        banner.contains("trusted server 127.0.0.3:5060 over tcp"),
        "{banner}"
    );
    assert!(
        banner.contains("dataset 2 '127.0.0.4::5060:sctp:' skipped: field 4 (protocol)"),
        "{banner}"
    );
}

/// With no flags at all it starts on loopback and says where it listens.
#[test]
fn no_flags_starts_on_loopback() {
    let banner = banner_of(&mut Process::new(BIN));
    assert!(banner.contains("listening on:"), "{banner}");
    assert!(banner.contains("udp  127.0.0.1:5060"), "{banner}");
    assert!(banner.contains("tcp  127.0.0.1:5060"), "{banner}");
    assert!(banner.contains("open relay"), "{banner}");
}

/// A low soft open-files limit is raised to the hard one, and a -max-connections the hard
/// limit cannot reach is warned about (prlimit, from util-linux, sets the limits).
#[test]
fn open_files_limit_is_raised_and_an_unreachable_cap_warned() {
    // 4096, or less where this process may not have that many (lowering needs no privilege)
    let hard = rlimit::Resource::NOFILE.get().unwrap().1.min(4096);
    let mut child = Process::new("prlimit")
        .arg(format!("--nofile=256:{hard}"))
        .args(["--", BIN])
        .args([
            "-local-ip",
            "127.0.0.1",
            "-udp-port",
            &common::free_port().to_string(),
            "-tcp-port",
            "0",
        ])
        .args(["-tls-port", "0", "-ws-port", "0", "-wss-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = read_until(&mut child, "-max-connections 50000 is above");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        banner.contains(&format!("open files: up to {hard} (raised from 256)")),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("about {}", hard - 100)),
        "{banner}"
    );
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>()[3..5],
        [hard.to_string(), hard.to_string()],
        "{line}"
    );
}

/// Starts `cmd` with its stdout piped, reads its banner up to the warning about running
/// without -strict-client or -registered-only (toll fraud), then stops it.
fn banner_of(cmd: &mut Process) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = read_until(&mut child, "warning: toll fraud");
    let _ = child.kill();
    let _ = child.wait();
    banner
}

/// Reads the child's stdout until a line contains `needle` (bounded: 10 s).
/// A child that fails to print it is killed before the panic, so a failing test leaves no
/// proxy behind holding its ports.
fn read_until(child: &mut std::process::Child, needle: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                text.push_str(&line);
                text.push('\n');
                if line.contains(needle) {
                    return text;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no line with '{needle}' within 10 s; got:\n{text}");
}

/// `config-examples/*.args`: one flag per line, value verbatim to the end of the line.
fn read_args_file(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut args = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match line.split_once(' ') {
            Some((flag, value)) => {
                args.push(flag.to_string());
                args.push(value.to_string());
            }
            None => args.push(line.to_string()),
        }
    }
    args
}

#[test]
fn config_examples_parse_with_the_real_parser() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let args = match path.extension().and_then(|e| e.to_str()) {
            Some("args") => read_args_file(&path),
            Some("default") => {
                let text = std::fs::read_to_string(&path).unwrap();
                let line = text
                    .lines()
                    .find(|l| l.starts_with("ROUNDABOUT_ARGS="))
                    .expect("ROUNDABOUT_ARGS");
                line["ROUNDABOUT_ARGS=".len()..]
                    .trim_matches('"')
                    .split_whitespace()
                    .map(String::from)
                    .collect()
            }
            _ => continue,
        };
        seen += 1;
        let flags = match flags::parse(&args) {
            Parsed::Flags(f) => f,
            other => panic!("{}: {other:?}", path.display()),
        };
        match Command::from_flags(*flags) {
            Ok(Command::Proxy(c)) => {
                assert!(
                    !c.warnings.iter().any(|w| w.contains("skipped")),
                    "{}: {:?}",
                    path.display(),
                    c.warnings
                );
                assert!(!c.trusted_servers.is_empty(), "{}", path.display());
            }
            Ok(Command::Csr(req, _)) => assert!(req.common_name.is_some(), "{}", path.display()),
            Ok(Command::Version) => panic!("{}: unexpected -version", path.display()),
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    assert!(seen >= 5, "only {seen} examples found");
}

/// The seed's CSR command line, as typed: a PEM CSR on stdout (or in -csr-out), exit 0, no
/// listener; a missing key is exit 2 naming the file.
#[test]
fn csr_mode_from_the_command_line() {
    let dir = std::env::temp_dir().join(format!("roundabout-cli-csr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.pem");
    common::openssl_p256_key(&key);
    let key_arg = key.to_str().unwrap();
    let seed = [
        "-csr",
        "-csr-c",
        "US",
        "-csr-cn",
        "proxya.example.com",
        "-csr-l",
        "Mountain View",
        "-csr-o",
        "The Firm",
        "-csr-ou",
        "Development",
        "-csr-p",
        "California",
        "-csr-san",
        "proxya.example.com",
        "-tls-key",
        key_arg,
    ];
    let (code, out, err) = run(&seed);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{out}"
    );
    assert!(!out.contains("listening"), "CSR mode starts no listener");

    let csr = dir.join("proxya.csr");
    let mut with_out = seed.to_vec();
    with_out.extend(["-csr-out", csr.to_str().unwrap()]);
    let (code, _, err) = run(&with_out);
    assert_eq!(code, 0, "{err}");
    let text = Process::new("openssl")
        .args(["req", "-noout", "-verify", "-subject", "-in"])
        .arg(&csr)
        .output()
        .unwrap();
    let shown =
        String::from_utf8_lossy(&text.stdout).to_string() + &String::from_utf8_lossy(&text.stderr);
    assert!(
        shown.contains("verify OK")
            || shown.contains("Certificate request self-signature verify OK"),
        "{shown}"
    );
    assert!(
        shown.contains("C = US, ST = California, L = Mountain View, O = The Firm, OU = Development, CN = proxya.example.com"),
        "{shown}"
    );

    let missing = dir.join("nope.pem");
    let (code, _, err) = run(&[
        "-csr",
        "-csr-cn",
        "x.example.com",
        "-tls-key",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope.pem") && err.contains("openssl"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
