//! Real peers for the end-to-end tests: SIPp, Kamailio and the `roundabout` binary, each a
//! child process on its own loopback address, with its output in a per-test directory.
//!
//! Used from `tests/*.rs` with `mod common;`. A test starts with [`Peers::new`], which gives
//! it free ports on the fixed addresses below and a directory for logs; the processes it then
//! starts ([`Proc`]) are stopped (their whole process group, by id) when dropped, and the
//! directory is removed when the test passes (unless `ROUNDABOUT_E2E_KEEP` is set) and kept
//! (path printed) when it fails.
//!
//! | role               | address     |
//! |--------------------|-------------|
//! | Roundabout         | 127.0.0.1   |
//! | SIPp caller (UAC)  | 127.0.0.2   |
//! | SIPp callee (UAS)  | 127.0.0.3   |
//! | Kamailio registrar | 127.0.0.4   |
//! | spare              | 127.0.0.5-9 |
//!
//! Nothing here skips: a missing `sipp` or `kamailio` is a panic that says to run
//! `bash tests/run-all.sh`, which installs them. The SIPp scenarios are in `tests/sipp/`
//! (each file starts with the command line it expects), the Kamailio config in
//! `tests/peers/`.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::fmt::Write as _;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub const PROXY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
pub const UAC_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
pub const UAS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
pub const KAMAILIO_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);

/// Password of every user of the Kamailio registrar (`AUTH_PASSWORD` in its config).
pub const KAMAILIO_PASSWORD: &str = "secret";

/// How long a SIPp scenario may take; every scenario is bounded well below this.
pub const SIPP_TIMEOUT: Duration = Duration::from_secs(25);

/// How long a peer may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a process may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Ports handed out: below the kernel's ephemeral range (32768+), so that no outgoing
/// connection of a peer can take a port a test is about to listen on.
const PORT_FIRST: u16 = 20000;
const PORT_COUNT: u16 = 12000;
/// Each test binary starts in its own block of the range (see [`free_port`]).
const PORT_BLOCK: u16 = 200;

/// SIP transports the peers speak here (SIPp 3.6.1 of Debian has no TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// SIPp's `-t` value: one socket (u1) or one connection (t1).
    pub fn sipp(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }

    /// Lower-case name, as in `;transport=` and Kamailio's `-l proto:addr:port`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// One test's world: a directory for its logs, and ports on the fixed addresses.
pub struct Peers {
    /// Where Roundabout listens (127.0.0.1, UDP and TCP on the same port).
    pub proxy: SocketAddr,
    /// The SIPp caller's socket (127.0.0.2).
    pub uac: SocketAddr,
    /// The SIPp callee's socket (127.0.0.3).
    pub uas: SocketAddr,
    /// Kamailio's socket, UDP and TCP (127.0.0.4).
    pub kamailio: SocketAddr,
    dir: PathBuf,
    started: AtomicUsize,
}

impl Peers {
    /// A fresh log directory named after the running test, and a free port for each role.
    pub fn new() -> Peers {
        static TESTS: AtomicUsize = AtomicUsize::new(0);
        let test = thread::current()
            .name()
            .filter(|name| *name != "main")
            .map(|name| name.replace("::", "-"))
            .unwrap_or_else(|| "test".to_string());
        let n = TESTS.fetch_add(1, Ordering::SeqCst);
        let dir = run_dir().join(format!("{test}-{n}"));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Peers {
            proxy: SocketAddr::from((PROXY_IP, free_port())),
            uac: SocketAddr::from((UAC_IP, free_port())),
            uas: SocketAddr::from((UAS_IP, free_port())),
            kamailio: SocketAddr::from((KAMAILIO_IP, free_port())),
            dir,
            started: AtomicUsize::new(0),
        }
    }

    /// The directory holding this test's logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One more free port (for instance a WebSocket listener of the proxy).
    pub fn port(&self) -> u16 {
        free_port()
    }

    /// A name for the next process's files: `NN-what`, in start order.
    fn next_name(&self, what: &str) -> String {
        let n = self.started.fetch_add(1, Ordering::SeqCst);
        let what = what.trim_end_matches(".xml");
        format!("{n:02}-{what}")
    }

    /// Starts `roundabout` with `args` and waits (up to 5 s) until it listens on every
    /// `(address, transport)` of `ready_on`; with none given, until its output has a line
    /// containing "listening". Panics with its log if it does not get there.
    pub fn roundabout(&self, args: &[&str], ready_on: &[(SocketAddr, Transport)]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roundabout"));
        cmd.args(args);
        self.start_roundabout(cmd, ready_on)
    }

    /// `roundabout` started under `prlimit --nofile=SOFT:HARD` (util-linux), so that its
    /// open-files limits are these; otherwise as [`Peers::roundabout`].
    pub fn roundabout_nofile(
        &self,
        (soft, hard): (u64, u64),
        args: &[&str],
        ready_on: &[(SocketAddr, Transport)],
    ) -> Proc {
        let mut cmd = Command::new(required_tool("prlimit"));
        cmd.arg(format!("--nofile={soft}:{hard}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_roundabout"))
            .args(args);
        self.start_roundabout(cmd, ready_on)
    }

    fn start_roundabout(&self, mut cmd: Command, ready_on: &[(SocketAddr, Transport)]) -> Proc {
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        let mut proc = Proc::spawn(&self.next_name("roundabout"), cmd, &self.dir);
        let ready = if ready_on.is_empty() {
            proc.wait_for_output("listening", READY_TIMEOUT)
        } else {
            ready_on.iter().try_for_each(|&(addr, transport)| {
                proc.wait_listening(addr, transport, READY_TIMEOUT)
            })
        };
        if let Err(e) = ready {
            panic!("roundabout did not get ready: {e}\n{}", proc.report());
        }
        proc
    }

    /// Starts `roundabout` on `self.proxy` for UDP and TCP only (TLS and WebSocket
    /// listeners off), `-local-ip 127.0.0.1`, with `extra` flags; waits until both listen.
    pub fn roundabout_udp_tcp(&self, extra: &[&str]) -> Proc {
        let port = self.proxy.port().to_string();
        let mut args = vec!["-local-ip", "127.0.0.1"];
        args.extend(listener_flags(&port, "0"));
        args.extend_from_slice(extra);
        self.roundabout(
            &args,
            &[(self.proxy, Transport::Udp), (self.proxy, Transport::Tcp)],
        )
    }

    /// Starts the Kamailio registrar (`tests/peers/kamailio-registrar.cfg`) on `addr`, UDP
    /// and TCP, and waits until it answers an OPTIONS. `defines` are passed as `-A`, e.g.
    /// `NO_INVITE_AUTH`.
    pub fn kamailio_registrar(&self, addr: SocketAddr, defines: &[&str]) -> Proc {
        let name = self.next_name("kamailio");
        let runtime = self.dir.join(&name);
        fs::create_dir_all(&runtime).expect("creating Kamailio's runtime dir");
        let mut cmd = Command::new(required_tool("kamailio"));
        cmd.arg("-f")
            .arg(manifest_path("tests/peers/kamailio-registrar.cfg"))
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
        for define in defines {
            cmd.arg("-A").arg(define);
        }
        let mut proc = Proc::spawn(&name, cmd, &self.dir);
        let ready = proc
            .wait_listening(addr, Transport::Udp, READY_TIMEOUT)
            .and_then(|()| proc.wait_listening(addr, Transport::Tcp, READY_TIMEOUT))
            .and_then(|()| sip_ping(addr, READY_TIMEOUT));
        if let Err(e) = ready {
            panic!(
                "kamailio did not get ready on {addr}: {e}\n{}",
                proc.report()
            );
        }
        proc
    }

    /// Starts SIPp with the scenario `tests/sipp/<scenario>` and `args`. Added before `args`
    /// (which can override them): `-m 1 -timeout 20s -timeout_error -bind_local -nostdin
    /// -reconnect_close false` and the error and message traces into this test's directory.
    pub fn sipp(&self, scenario: &str, args: &[&str]) -> Proc {
        let name = self.next_name(scenario);
        let errors = self.dir.join(format!("{name}.errors.log"));
        let messages = self.dir.join(format!("{name}.messages.log"));
        let mut cmd = Command::new(required_tool("sipp"));
        cmd.arg("-sf")
            .arg(manifest_path(&format!("tests/sipp/{scenario}")))
            .args(["-m", "1", "-timeout", "20s", "-timeout_error"])
            .args(["-bind_local", "-nostdin"])
            // a peer closing its TCP connection must not fail a call that is done with it
            .args(["-reconnect_close", "false"])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&errors)
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&messages)
            .args(args);
        let mut proc = Proc::spawn(&name, cmd, &self.dir);
        proc.logs.push(errors);
        proc.logs.push(messages);
        proc
    }

    /// Starts a SIPp server-mode scenario (a callee) on `local` and waits until it listens.
    pub fn sipp_server(
        &self,
        scenario: &str,
        local: SocketAddr,
        transport: Transport,
        args: &[&str],
    ) -> Proc {
        let mut all = sipp_local_args(local, transport);
        all.extend(args.iter().map(|a| a.to_string()));
        let mut proc = self.sipp(scenario, &as_strs(&all));
        if let Err(e) = proc.wait_listening(local, transport, READY_TIMEOUT) {
            panic!(
                "SIPp {scenario} did not get ready on {local}: {e}\n{}",
                proc.report()
            );
        }
        proc
    }

    /// Starts a SIPp client-mode scenario (a caller, or a registering client) on `local`,
    /// talking to `remote` (R-URI host, and where messages go unless `args` has `-rsa`).
    pub fn sipp_client(
        &self,
        scenario: &str,
        remote: SocketAddr,
        local: SocketAddr,
        transport: Transport,
        args: &[&str],
    ) -> Proc {
        let mut all = vec![remote.to_string()];
        all.extend(sipp_local_args(local, transport));
        all.extend(args.iter().map(|a| a.to_string()));
        self.sipp(scenario, &as_strs(&all))
    }
}

impl Default for Peers {
    fn default() -> Self {
        Peers::new()
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("logs of the failed test kept in {}", self.dir.display());
        } else if std::env::var_os("ROUNDABOUT_E2E_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Roundabout's listener port flags: UDP and TCP on `udp_tcp`, WSS on `wss`, TLS and WS off
/// (a port of "0" turns its listener off).
pub fn listener_flags<'a>(udp_tcp: &'a str, wss: &'a str) -> [&'a str; 10] {
    [
        "-udp-port",
        udp_tcp,
        "-tcp-port",
        udp_tcp,
        "-tls-port",
        "0",
        "-ws-port",
        "0",
        "-wss-port",
        wss,
    ]
}

/// Makes a P-256 private key (PKCS#8 PEM) at `path` with `openssl genpkey`, the command
/// Roundabout's CSR errors suggest; panics with openssl's output if that fails.
pub fn openssl_p256_key(path: &Path) {
    let out = Command::new(required_tool("openssl"))
        .args(["genpkey", "-algorithm", "EC"])
        .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
        .arg(path)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl genpkey -out {} failed:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (up to 10 s) until the Kamailio registrar's log shows a binding saved for `user`
/// (its config logs `saved sip:USER@... -> CONTACT`); panics with the log otherwise.
pub fn kamailio_wait_registered(kamailio: &mut Proc, user: &str) {
    if let Err(e) = kamailio.wait_for_output(&format!("saved sip:{user}@"), Duration::from_secs(10))
    {
        panic!("{user} did not get registered: {e}\n{}", kamailio.report());
    }
}

/// `-i IP -p PORT -t u1|t1`: a SIPp's own socket.
pub fn sipp_local_args(local: SocketAddr, transport: Transport) -> Vec<String> {
    vec![
        "-i".into(),
        local.ip().to_string(),
        "-p".into(),
        local.port().to_string(),
        "-t".into(),
        transport.sipp().into(),
    ]
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A child process in its own process group, output (stdout and stderr) in `<dir>/<name>.log`.
/// Dropping it stops the group: SIGTERM, then SIGKILL after a bounded wait.
pub struct Proc {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    /// First the process's own output, then any other log files it writes.
    logs: Vec<PathBuf>,
    pid_file: PathBuf,
}

impl Proc {
    /// Spawns `cmd` (stdin closed) in a new process group, recording its id under the run
    /// directory's `pids/` so that `tests/run-all.sh` can end it if the test process dies.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("cloning a log file handle");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .current_dir(dir)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({:?}): {e}", cmd.get_program()));
        let pids = pids_dir();
        let pid_file = pids.join(child.id().to_string());
        let _ = fs::create_dir_all(&pids);
        let _ = fs::write(&pid_file, format!("{name}\n"));
        Proc {
            name: name.to_string(),
            child,
            status: None,
            logs: vec![log],
            pid_file,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file with the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.logs[0]
    }

    /// The process's stdout and stderr so far.
    pub fn output(&self) -> String {
        read_lossy(self.log_path())
    }

    /// The exit status if it has exited, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for a successful exit; Err with the logs otherwise (the process
    /// is stopped first if it is still running).
    pub fn wait_success(mut self, timeout: Duration) -> Result<(), String> {
        match self.wait_timeout(timeout) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!(
                "{} failed ({status})\n{}",
                self.name,
                self.report()
            )),
            None => {
                self.stop();
                Err(format!(
                    "{} still running after {timeout:?}: stopped\n{}",
                    self.name,
                    self.report()
                ))
            }
        }
    }

    /// Waits until the process's output contains `needle` (case-insensitive).
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let needle = needle.to_lowercase();
        self.wait_until(timeout, &format!("output containing {needle:?}"), |p| {
            p.output().to_lowercase().contains(&needle)
        })
    }

    /// Waits until some socket listens on `addr` (or on the wildcard address with its port)
    /// for `transport`, as the kernel lists them in /proc/net: nothing is sent to it.
    pub fn wait_listening(
        &mut self,
        addr: SocketAddr,
        transport: Transport,
        timeout: Duration,
    ) -> Result<(), String> {
        self.wait_until(
            timeout,
            &format!("{} socket on {addr}", transport.name()),
            |_| is_listening(addr, transport),
        )
    }

    fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut ready: impl FnMut(&Proc) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(self) {
                return Ok(());
            }
            if let Some(status) = self.try_status() {
                return Err(format!("{} exited ({status}) before {what}", self.name));
            }
            if Instant::now() >= deadline {
                return Err(format!("no {what} after {timeout:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process group: SIGTERM, up to 5 s, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.try_status().is_none() {
            signal_group(self.child.id(), "TERM");
            if self.wait_timeout(STOP_GRACE).is_none() {
                signal_group(self.child.id(), "KILL");
                self.status = self.child.wait().ok();
            }
            // members that outlived the leader (a killed Kamailio's workers, say): Linux does
            // not reuse an id that is still some live process's group id
            signal_group(self.child.id(), "KILL");
        }
        let _ = fs::remove_file(&self.pid_file);
        self.status
    }

    /// The last lines of each log file, for a failure message.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for path in &self.logs {
            let text = read_lossy(path);
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(60);
            let _ = writeln!(
                out,
                "--- {} (last {} lines)",
                path.display(),
                lines.len() - from
            );
            for line in &lines[from..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a signal to a process group with kill(1), by id.
fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        // the end is what matters for a report: skip the start of a huge file
        if let Ok(len) = file.metadata().map(|m| m.len()) {
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
        }
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether the kernel lists a UDP socket bound to, or a TCP socket listening on, `addr` or
/// the wildcard address with the same port (IPv4 or IPv6 tables).
pub fn is_listening(addr: SocketAddr, transport: Transport) -> bool {
    let SocketAddr::V4(v4) = addr else {
        panic!("only IPv4 peers here: {addr}");
    };
    let ip = u32::from_ne_bytes(v4.ip().octets());
    let want_v4 = format!("{ip:08X}:{:04X}", v4.port());
    let any_v4 = format!("00000000:{:04X}", v4.port());
    let any_v6 = format!("00000000000000000000000000000000:{:04X}", v4.port());
    let (tables, listen_state) = match transport {
        Transport::Udp => (["/proc/net/udp", "/proc/net/udp6"], "07"),
        Transport::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], "0A"),
    };
    tables.iter().any(|table| {
        fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3
                    && fields[3] == listen_state
                    && (fields[1] == want_v4 || fields[1] == any_v4 || fields[1] == any_v6)
            })
    })
}

/// Sends OPTIONS over UDP to `addr` until any response comes back.
pub fn sip_ping(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let socket =
        UdpSocket::bind((PROXY_IP, 0)).map_err(|e| format!("binding a UDP socket: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-ping-{port}\r\n\
         From: <sip:ping@{local}>;tag=ping\r\n\
         To: <sip:{addr}>\r\n\
         Call-ID: ping-{port}@{ip}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        port = local.port(),
        ip = local.ip(),
    );
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .send_to(request.as_bytes(), addr)
            .map_err(|e| format!("sending OPTIONS to {addr}: {e}"))?;
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if buf[..n].starts_with(b"SIP/2.0 ") {
                return Ok(());
            }
        }
    }
    Err(format!(
        "no answer to OPTIONS from {addr} within {timeout:?}"
    ))
}

/// A port free for UDP and TCP on every address. Ports come from a per-binary block of
/// 20000..32000 (hash of the test binary's name), then a process-wide counter, so that the
/// tests of one binary (in parallel threads) and of several binaries do not meet.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let exe = std::env::current_exe().unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    exe.file_name().hash(&mut hasher);
    let block = (hasher.finish() % u64::from(PORT_COUNT / PORT_BLOCK)) as u16;
    for _ in 0..PORT_COUNT {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % PORT_COUNT;
        let port = PORT_FIRST + (block * PORT_BLOCK + n) % PORT_COUNT;
        let udp_free = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok();
        let tcp_free = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok();
        if udp_free && tcp_free {
            return port;
        }
    }
    panic!("no free port in {PORT_FIRST}..{}", PORT_FIRST + PORT_COUNT);
}

/// Everything of this test process: `$ROUNDABOUT_E2E_DIR` (set by tests/run-all.sh) or
/// `target/tmp/e2e`, then `<test binary>-<pid>`.
fn run_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let binary = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tests".into());
    e2e_root().join(format!("{binary}-{}", std::process::id()))
}

fn e2e_root() -> PathBuf {
    std::env::var_os("ROUNDABOUT_E2E_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e"))
}

/// Ids of the process groups started and not yet stopped: one file each, named by the id,
/// holding the process's name.
fn pids_dir() -> PathBuf {
    e2e_root().join("pids")
}

fn manifest_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The path of a peer program, or a panic that says how to install it.
fn required_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: run `bash tests/run-all.sh` (it installs the test peers)")
        })
}

// ----- Added for tests/transactions.rs ---------------------------------------------------

/// The cumulative `(successful, failed)` call counts of the last line of a SIPp statistics
/// file (written with `-trace_stat -stf FILE`; SIPp writes a last line when it exits), or
/// None when the file is missing or has no data line.
pub fn sipp_call_counts(stat_file: &Path) -> Option<(u64, u64)> {
    let text = fs::read_to_string(stat_file).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let header: Vec<&str> = lines.first()?.split(';').collect();
    let last: Vec<&str> = lines[1..].last()?.split(';').collect();
    let column = |name: &str| -> Option<u64> {
        let i = header.iter().position(|h| h.trim() == name)?;
        last.get(i)?.trim().parse().ok()
    };
    Some((column("SuccessfulCall(C)")?, column("FailedCall(C)")?))
}

// ----- Added for tests/security/limits.rs ------------------------------------------------

impl Peers {
    /// `roundabout` with `args` and its log filtered by `rust_log` (e.g. `info`) instead of
    /// the tests' `debug` (too many lines for a load of tens of thousands of messages); it
    /// runs under env(1), which execs it, so the process id is Roundabout's. Otherwise as
    /// [`Peers::roundabout`].
    pub fn roundabout_logging(
        &self,
        rust_log: &str,
        args: &[&str],
        ready_on: &[(SocketAddr, Transport)],
    ) -> Proc {
        let mut cmd = Command::new(required_tool("env"));
        cmd.arg(format!("RUST_LOG={rust_log}"))
            .arg(env!("CARGO_BIN_EXE_roundabout"))
            .args(args);
        self.start_roundabout(cmd, ready_on)
    }
}

/// The resident memory of process `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}
