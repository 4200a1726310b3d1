//! The container image of `packaging/Dockerfile`, built and run here the way the README's
//! container section says, with the tools this machine (and CI) has: no registry and no
//! Docker engine, so
//!
//! 1. the base image is made from Debian packages by `mmdebstrap` (bookworm, minbase, with
//!    `ca-certificates` and `libssl3`, documentation left out as in debian:bookworm-slim)
//!    and imported with `podman import`;
//! 2. the Dockerfile's real runtime stage is built on it by `podman build --isolation chroot
//!    --target runtime-prebuilt --build-arg BASE=...`, with the binary cargo built for this
//!    test run (a build context holding `target/release/roundabout` and the repository's
//!    `.dockerignore`, which must let that file through);
//! 3. the proxy is started inside the image by `buildah run --isolation chroot` (`podman run`
//!    cannot start containers here), with the image's entrypoint and the README example's
//!    flags: `-local-ip` and `-bind-ip` a loopback address, `-strict-host -trusted-server`,
//!    every listener on a free port, and a certificate and key mounted read-only on
//!    /etc/roundabout (root:10001, mode 0640, so only the image's group may read them).
//!
//! It checks the image's configuration (user, working directory, entrypoint, stop signal,
//! ports), that the process runs as uid/gid 10001 without capabilities from the image's
//! root filesystem, that it answers OPTIONS over UDP, TCP, TLS, WS and WSS, that TLS and WSS
//! present the mounted certificate, and that the image's stop signal makes it exit 0.
//!
//! Everything it keeps lives under `target/container/` (base tarball, a private container
//! storage, build context): the base is made once (about a minute, needs the Debian
//! mirror), later runs reuse it and podman's layer cache. `rm -rf target/container` starts
//! afresh. Every step runs under a timeout. Nothing skips: without root, `mmdebstrap`,
//! `podman` or `buildah` the test fails and says to run `bash tests/run-all.sh`, which
//! installs them.

mod common;
mod transport_peers;

use common::{Peers, Proc, UAC_IP, UAS_IP};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use transport_peers::{ws_client, Kind, Link, Msg, ProxyPorts, Request, IO_TIMEOUT};

const DOCKERFILE: &str = include_str!("../packaging/Dockerfile");

/// Where the proxy in the container listens (a spare address of `tests/common`).
const CONTAINER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

/// The image's user and group (packaging/Dockerfile).
const IMAGE_UID: u32 = 10001;
const IMAGE_GID: u32 = 10001;
const BINARY_IN_IMAGE: &str = "/usr/local/bin/roundabout";

/// The image the test builds (in its private storage).
const IMAGE: &str = "localhost/roundabout:test";

/// `mmdebstrap` arguments before the suite and output: the base image's recipe. Changing
/// them changes the cache key, so a new base is made.
const MMDEBSTRAP_ARGS: &[&str] = &[
    "--variant=minbase",
    "--include=ca-certificates,libssl3",
    // merged /usr as in Debian's images, without the usrmerge package (and its perl)
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    // what debian:bookworm-slim leaves out
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/groff/*",
    "--dpkgopt=path-exclude=/usr/share/lintian/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    // a throwaway tree: no fsync for every file
    "--dpkgopt=force-unsafe-io",
    // as the host's apt here: a snapshot mirror's Release files may be past Valid-Until
    "--aptopt=Acquire::Check-Valid-Until \"false\"",
];
const SUITE: &str = "bookworm";

const MMDEBSTRAP_TIMEOUT: Duration = Duration::from_secs(420);
const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// inspect, from, rm, prune, containers
const QUICK_TIMEOUT: Duration = Duration::from_secs(60);
/// From `buildah run` to all five listeners.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

const RUN_ALL: &str = "run `bash tests/run-all.sh` (it installs mmdebstrap, podman and buildah)";

// ----- the test ------------------------------------------------------------------------------

#[test]
fn container_image_runs_the_proxy_as_documented() {
    let started = Instant::now();
    let peers = Peers::new();
    let tools = Tools::find();
    let store = Store::new(&tools, cache_dir(), peers.dir());

    let step = Instant::now();
    let base = store.base_image();
    eprintln!(
        "container: base image {base} ready in {:.1?}",
        step.elapsed()
    );

    let step = Instant::now();
    store.build_image(&base);
    eprintln!("container: image {IMAGE} built in {:.1?}", step.elapsed());

    let config = store.image_config();
    assert_eq!(config.user, "roundabout:roundabout", "{config:?}");
    assert_eq!(config.working_dir, "/etc/roundabout", "{config:?}");
    assert_eq!(
        config.entrypoint,
        format!("[\"{BINARY_IN_IMAGE}\"]"),
        "{config:?}"
    );
    assert!(
        config.cmd == "null" || config.cmd == "[]",
        "no default flags: {config:?}"
    );
    assert_eq!(config.stop_signal, "SIGTERM", "{config:?}");
    for port in ["5060/udp", "5060/tcp", "5061/tcp", "8080/tcp", "8443/tcp"] {
        assert!(
            config.exposed_ports.contains(&format!("\"{port}\"")),
            "EXPOSE {port}: {config:?}"
        );
    }

    // The certificate and key, readable by the image's group only (as the README advises).
    let etc = peers.dir().join("etc-roundabout");
    let (cert_pem, key_pem) = transport_peers::self_signed(&["localhost", "127.0.0.5"]);
    write_private(&etc, None, 0o750);
    write_private(&etc.join("cert.pem"), Some(&cert_pem), 0o640);
    write_private(&etc.join("key.pem"), Some(&key_pem), 0o640);

    let ports = ProxyPorts {
        ip: CONTAINER_IP.into(),
        udp_tcp: peers.port(),
        tls: peers.port(),
        ws: peers.port(),
        wss: peers.port(),
    };
    let server = SocketAddr::from((UAS_IP, peers.port()));
    let port = |kind| ports.port(kind).to_string();
    let flags: Vec<String> = [
        ("-local-ip", CONTAINER_IP.to_string()),
        ("-bind-ip", CONTAINER_IP.to_string()),
        ("-udp-port", port(Kind::Udp)),
        ("-tcp-port", port(Kind::Tcp)),
        ("-tls-port", port(Kind::Tls)),
        ("-ws-port", port(Kind::Ws)),
        ("-wss-port", port(Kind::Wss)),
        ("-tls-cert", "/etc/roundabout/cert.pem".into()),
        ("-tls-key", "/etc/roundabout/key.pem".into()),
        (
            "-trusted-server",
            format!("{}:server.example.com:{}:tcp:", server.ip(), server.port()),
        ),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .chain(["-strict-host".to_string()])
    .collect();

    let step = Instant::now();
    let container = store.container(IMAGE);
    let mut proxy = container.run(&etc, BINARY_IN_IMAGE, &flags);
    for (addr, transport) in ports.ready_on() {
        if let Err(e) = proxy.wait_listening(addr, transport, START_TIMEOUT) {
            panic!(
                "the proxy in the container did not get ready: {e}\n{}",
                proxy.report()
            );
        }
    }
    eprintln!("container: proxy listening in {:.1?}", step.elapsed());

    // The proxy itself: a descendant of `buildah run`, as the image's user, from its root.
    let pid = find_descendant(proxy.pid(), "roundabout")
        .unwrap_or_else(|| panic!("no roundabout process under buildah\n{}", proxy.report()));
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(field("Uid"), vec![IMAGE_UID.to_string(); 4], "{status}");
    assert_eq!(field("Gid"), vec![IMAGE_GID.to_string(); 4], "{status}");
    assert_eq!(field("Groups"), [IMAGE_GID.to_string()], "{status}");
    assert_eq!(field("CapEff"), ["0000000000000000"], "{status}");
    let root = fs::read_link(format!("/proc/{pid}/root")).unwrap();
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_ne!(
        root,
        Path::new("/"),
        "the proxy must run in the image's root"
    );
    assert_eq!(
        exe,
        root.join(BINARY_IN_IMAGE.trim_start_matches('/')),
        "the proxy must be the image's binary"
    );
    assert!(
        fs::read(format!("/proc/{pid}/exe")).unwrap()
            == fs::read(env!("CARGO_BIN_EXE_roundabout")).unwrap(),
        "the image's binary must be the one cargo built for this test"
    );

    // OPTIONS over every listener, the certificate on TLS and WSS, as a client would.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for kind in [Kind::Udp, Kind::Tcp, Kind::Tls, Kind::Ws] {
            let mut link = Link::connect(kind, UAC_IP.into(), &ports).await;
            let request = options(kind, link.local, &ports, kind.name());
            link.send(&request).await;
            check_ok(&link.recv_final().await, kind.name());
            if kind.is_ws() {
                let _ = link.ws().close(None).await;
            }
        }
        let tls_cert = tls_certificate(ports.addr(Kind::Tls)).await.0;
        assert_eq!(
            tls_cert,
            der(&cert_pem),
            "TLS must present the mounted certificate"
        );
        wss_options(&ports, &cert_pem).await;
    });

    // The image's stop signal (what `docker stop` sends): in-flight work ends, exit 0.
    let signal = config.stop_signal.trim_start_matches("SIG");
    let kill = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(kill.success(), "kill -s {signal} {pid}");
    match proxy.wait_timeout(STOP_TIMEOUT) {
        Some(status) => assert!(
            status.success(),
            "the proxy must exit 0 on {}: {status}\n{}",
            config.stop_signal,
            proxy.report()
        ),
        None => panic!(
            "the proxy still runs {STOP_TIMEOUT:?} after {}\n{}",
            config.stop_signal,
            proxy.report()
        ),
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the proxy process is gone"
    );
    drop(container);
    eprintln!("container: done in {:.1?}", started.elapsed());
}

/// One definition of the runtime: the prebuilt and builder paths both end in `runtime-base`,
/// and `runtime-prebuilt` comes before the Rust builder stage.
#[test]
fn container_dockerfile_has_one_runtime_stage_for_both_paths() {
    let lines: Vec<&str> = DOCKERFILE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        froms,
        [
            "FROM ${BASE} AS runtime-base",
            "FROM runtime-base AS runtime-prebuilt",
            "FROM rust:1-slim-bookworm AS builder",
            "FROM runtime-base AS runtime",
        ],
        "stages"
    );
    assert!(lines.contains(&"ARG BASE=debian:bookworm-slim"), "ARG BASE");
    for instruction in [
        "USER ",
        "WORKDIR /etc",
        "STOPSIGNAL ",
        "ENTRYPOINT ",
        "EXPOSE ",
    ] {
        let n = lines.iter().filter(|l| l.starts_with(instruction)).count();
        assert_eq!(n, 1, "{instruction}: defined once, in runtime-base");
    }
    assert!(lines.contains(&"COPY target/release/roundabout /usr/local/bin/roundabout"));
    assert!(
        lines.contains(&"COPY --from=builder /usr/local/bin/roundabout /usr/local/bin/roundabout")
    );
}

// ----- SIP and TLS ---------------------------------------------------------------------------

/// An OPTIONS to the proxy itself (which answers it: a health check).
fn options(kind: Kind, local: SocketAddr, ports: &ProxyPorts, tag: &str) -> String {
    let uri = format!("sip:{}{}", ports.addr(kind), kind.uri_param());
    Request {
        method: "OPTIONS",
        uri: &uri,
        via: format!(
            "SIP/2.0/{} {local};branch=z9hG4bK-ctr-{tag};rport",
            kind.via()
        ),
        from: format!("<sip:probe@{local}>;tag=ctr-{tag}"),
        to: format!("<{uri}>"),
        call_id: &format!("container-{tag}@{local}"),
        cseq: 1,
        headers: vec![],
        body: "",
    }
    .render()
}

fn check_ok(response: &Msg, tag: &str) {
    assert_eq!(response.status(), Some(200), "{tag}: {response:?}");
    assert!(
        response
            .get("Call-ID")
            .starts_with(&format!("container-{tag}@")),
        "{tag}: {response:?}"
    );
    assert_eq!(response.get("CSeq"), "1 OPTIONS", "{tag}: {response:?}");
}

/// The certificate `addr` presents (DER), and the TLS stream it came on.
async fn tls_certificate(
    addr: SocketAddr,
) -> (Vec<u8>, tokio_native_tls::TlsStream<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(UAC_IP.into(), 0)).unwrap();
    let tcp = tokio::time::timeout(IO_TIMEOUT, socket.connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let tls = tokio::time::timeout(
        IO_TIMEOUT,
        transport_peers::insecure_connector().connect("localhost", tcp),
    )
    .await
    .expect("TLS handshake in time")
    .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
    let cert = tls
        .get_ref()
        .peer_certificate()
        .unwrap()
        .expect("a server certificate")
        .to_der()
        .unwrap();
    (cert, tls)
}

fn der(pem: &str) -> Vec<u8> {
    tokio_native_tls::native_tls::Certificate::from_pem(pem.as_bytes())
        .unwrap()
        .to_der()
        .unwrap()
}

/// A WSS client: the TLS handshake shows the mounted certificate, the WebSocket handshake
/// agrees on `sip`, and an OPTIONS over it is answered.
async fn wss_options(ports: &ProxyPorts, cert_pem: &str) {
    use futures_util::StreamExt as _;
    let to = ports.addr(Kind::Wss);
    let (cert, tls) = tls_certificate(to).await;
    assert_eq!(
        cert,
        der(cert_pem),
        "WSS must present the mounted certificate"
    );
    let local = tls.get_ref().get_ref().get_ref().local_addr().unwrap();
    let (mut ws, response) = ws_client(Box::new(tls), Kind::Wss, to, Some("sip"))
        .await
        .unwrap_or_else(|e| panic!("WSS handshake with {to}: {e}"));
    assert_eq!(response.status().as_u16(), 101, "{response:?}");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("sip"),
        "{response:?}"
    );
    let request = options(Kind::Wss, local, ports, "wss");
    ws.send(async_tungstenite::tungstenite::Message::text(request))
        .await
        .expect("WSS send");
    let answer = tokio::time::timeout(IO_TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if m.is_text() || m.is_binary() => {
                    let msg = Msg::parse(&m.into_data());
                    if msg.status().is_some_and(|s| s >= 200) {
                        return msg;
                    }
                }
                Some(Ok(_)) => continue,
                other => panic!("WSS: no answer to OPTIONS: {other:?}"),
            }
        }
    })
    .await
    .expect("an answer to OPTIONS over WSS in time");
    check_ok(&answer, "wss");
    let _ = ws.close(None).await;
}

// ----- files and processes -------------------------------------------------------------------

/// A directory (`text` None) or file owned by root and the image's group, with `mode`.
fn write_private(path: &Path, text: Option<&str>, mode: u32) {
    match text {
        Some(text) => fs::write(path, text).unwrap(),
        None => fs::create_dir_all(path).unwrap(),
    }
    std::os::unix::fs::chown(path, Some(0), Some(IMAGE_GID))
        .unwrap_or_else(|e| panic!("chown root:{IMAGE_GID} {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The first process named `name` among the descendants of `ancestor`.
fn find_descendant(ancestor: u32, name: &str) -> Option<u32> {
    let mut parents = Vec::new(); // (pid, ppid, name)
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid, comm));
        }
    }
    let mut family = vec![ancestor];
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        for (pid, ppid, comm) in &parents {
            if *ppid == parent && !family.contains(pid) {
                if comm == name {
                    return Some(*pid);
                }
                family.push(*pid);
            }
        }
        i += 1;
    }
    None
}

/// `target/container`: everything this test keeps between runs.
fn cache_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("container")
}

/// 64-bit FNV-1a, stable across Rust versions: the base image's cache key.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ----- the container tools -------------------------------------------------------------------

struct Tools {
    mmdebstrap: PathBuf,
    podman: PathBuf,
    buildah: PathBuf,
}

impl Tools {
    /// The three tools, as root; a panic that says how to get them otherwise.
    fn find() -> Tools {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1).map(String::from));
        assert_eq!(
            euid.as_deref(),
            Some("0"),
            "the container test runs as root (mmdebstrap, podman and buildah without user \
             namespaces), as CI and `bash tests/run-all.sh` do"
        );
        let find = |name: &str| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
                .unwrap_or_else(|| panic!("`{name}` is not installed: {RUN_ALL}"))
        };
        Tools {
            mmdebstrap: find("mmdebstrap"),
            podman: find("podman"),
            buildah: find("buildah"),
        }
    }
}

/// The test's own container storage under `target/container` (vfs: works on any file
/// system, inside containers too), apart from any other podman's.
struct Store<'a> {
    tools: &'a Tools,
    cache: PathBuf,
    /// Where the logs of each step go (the test's directory: kept when it fails).
    logs: PathBuf,
    step: std::cell::Cell<usize>,
}

impl<'a> Store<'a> {
    fn new(tools: &'a Tools, cache: PathBuf, logs: &Path) -> Store<'a> {
        for dir in ["storage/root", "storage/run", "storage/tmp", "context"] {
            fs::create_dir_all(cache.join(dir)).unwrap();
        }
        Store {
            tools,
            cache,
            logs: logs.to_path_buf(),
            step: std::cell::Cell::new(0),
        }
    }

    fn storage_args(&self) -> Vec<String> {
        let s = self.cache.join("storage");
        vec![
            "--root".into(),
            s.join("root").display().to_string(),
            "--runroot".into(),
            s.join("run").display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
        ]
    }

    fn podman(&self) -> Command {
        let mut cmd = Command::new(&self.tools.podman);
        cmd.args(self.storage_args())
            .arg("--tmpdir")
            .arg(self.cache.join("storage/tmp"))
            .args(["--events-backend", "none", "--cgroup-manager", "cgroupfs"]);
        cmd
    }

    fn buildah(&self) -> Command {
        let mut cmd = Command::new(&self.tools.buildah);
        cmd.args(self.storage_args());
        cmd
    }

    /// Runs `cmd` to its end within `timeout` (killed then); its stdout and stderr.
    fn run(&self, what: &str, cmd: Command, timeout: Duration) -> String {
        let n = self.step.get();
        self.step.set(n + 1);
        let mut proc = Proc::spawn(&format!("step{n:02}-{what}"), cmd, &self.logs);
        match proc.wait_timeout(timeout) {
            Some(status) if status.success() => proc.output(),
            Some(status) => panic!(
                "{what} failed ({status}); if the cache under {} is damaged, remove it\n{}",
                self.cache.display(),
                proc.report()
            ),
            None => {
                proc.stop();
                panic!(
                    "{what} still running after {timeout:?}: stopped\n{}",
                    proc.report()
                )
            }
        }
    }

    fn image_exists(&self, image: &str) -> bool {
        let mut cmd = self.podman();
        cmd.args(["image", "exists", image]);
        let mut proc = Proc::spawn("image-exists", cmd, &self.logs);
        match proc.wait_timeout(QUICK_TIMEOUT) {
            Some(status) => status.success(),
            None => panic!("podman image exists: no answer\n{}", proc.report()),
        }
    }

    /// The base image, made (mmdebstrap, about a minute) and imported only when missing.
    fn base_image(&self) -> String {
        let mut recipe = MMDEBSTRAP_ARGS.join(" ");
        recipe.push(' ');
        recipe.push_str(SUITE);
        let key = format!("{:016x}", fnv1a(&recipe));
        let image = format!("localhost/roundabout-test-base:{SUITE}-{}", &key[..12]);
        if self.image_exists(&image) {
            return image;
        }
        let tarball = self.cache.join(format!("base-{SUITE}-{}.tar", &key[..12]));
        if !tarball.is_file() {
            let partial = tarball.with_extension("tar.partial");
            let _ = fs::remove_file(&partial);
            let mut cmd = Command::new(&self.tools.mmdebstrap);
            // the format would follow the name's extension: `.partial` says nothing
            cmd.args(MMDEBSTRAP_ARGS)
                .arg("--format=tar")
                .arg(SUITE)
                .arg(&partial);
            let step = Instant::now();
            self.run("mmdebstrap", cmd, MMDEBSTRAP_TIMEOUT);
            fs::rename(&partial, &tarball).unwrap();
            eprintln!(
                "container: mmdebstrap made {} in {:.1?}",
                tarball.display(),
                step.elapsed()
            );
        }
        let mut cmd = self.podman();
        cmd.arg("import").arg(&tarball).arg(&image);
        self.run("podman-import", cmd, IMPORT_TIMEOUT);
        image
    }

    /// Builds [`IMAGE`] from the Dockerfile's `runtime-prebuilt` target on `base`, with the
    /// binary cargo built for this test, then drops images no tag names any more.
    fn build_image(&self, base: &str) {
        let context = self.cache.join("context");
        let release = context.join("target/release");
        fs::create_dir_all(&release).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        fs::copy(repo.join(".dockerignore"), context.join(".dockerignore")).unwrap();
        let binary = release.join("roundabout");
        let _ = fs::remove_file(&binary);
        fs::copy(env!("CARGO_BIN_EXE_roundabout"), &binary).unwrap();

        let mut cmd = self.podman();
        cmd.args(["build", "--isolation", "chroot", "--pull=never", "--layers"])
            .arg("--file")
            .arg(repo.join("packaging/Dockerfile"))
            .args(["--target", "runtime-prebuilt"])
            .arg("--build-arg")
            .arg(format!("BASE={base}"))
            .args(["--tag", IMAGE])
            .arg(&context);
        self.run("podman-build", cmd, BUILD_TIMEOUT);

        let mut cmd = self.podman();
        cmd.args(["image", "prune", "--force"]);
        self.run("podman-image-prune", cmd, QUICK_TIMEOUT);
    }

    fn image_config(&self) -> ImageConfig {
        const MARK: &str = "image-config:";
        let mut cmd = self.podman();
        cmd.args(["image", "inspect", "--format"])
            .arg(format!(
                "{MARK}{{{{.Config.User}}}}|{{{{.Config.WorkingDir}}}}|{{{{json .Config.Entrypoint}}}}|\
                 {{{{json .Config.Cmd}}}}|{{{{.Config.StopSignal}}}}|{{{{json .Config.ExposedPorts}}}}"
            ))
            .arg(IMAGE);
        let output = self.run("podman-image-inspect", cmd, QUICK_TIMEOUT);
        let line = output
            .lines()
            .find_map(|l| l.strip_prefix(MARK))
            .unwrap_or_else(|| panic!("no image config in:\n{output}"));
        let fields: Vec<&str> = line.splitn(6, '|').collect();
        assert_eq!(fields.len(), 6, "{line}");
        ImageConfig {
            user: fields[0].into(),
            working_dir: fields[1].into(),
            entrypoint: fields[2].into(),
            cmd: fields[3].into(),
            stop_signal: fields[4].into(),
            exposed_ports: fields[5].into(),
        }
    }

    /// A working container of `image` (removed when dropped); leftovers of test processes
    /// that are gone are removed first.
    fn container(&self, image: &str) -> Container<'_> {
        let prefix = "roundabout-test-";
        let mut cmd = self.buildah();
        cmd.args(["containers", "--format", "container:{{.ContainerName}}"]);
        let output = self.run("buildah-containers", cmd, QUICK_TIMEOUT);
        for name in output.lines().filter_map(|l| l.strip_prefix("container:")) {
            let Some(pid) = name.strip_prefix(prefix) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let mut cmd = self.buildah();
                cmd.args(["rm", name]);
                self.run("buildah-rm-leftover", cmd, QUICK_TIMEOUT);
            }
        }
        let name = format!("{prefix}{}", std::process::id());
        let mut cmd = self.buildah();
        cmd.args(["from", "--pull=never", "--name", &name, image]);
        self.run("buildah-from", cmd, QUICK_TIMEOUT);
        Container { store: self, name }
    }
}

#[derive(Debug)]
struct ImageConfig {
    user: String,
    working_dir: String,
    /// JSON
    entrypoint: String,
    /// JSON
    cmd: String,
    stop_signal: String,
    /// JSON
    exposed_ports: String,
}

struct Container<'a> {
    store: &'a Store<'a>,
    name: String,
}

impl Container<'_> {
    /// `buildah run --isolation chroot` of `program args` in the container, on the host's
    /// network, with `etc` mounted read-only on /etc/roundabout.
    fn run(&self, etc: &Path, program: &str, args: &[String]) -> Proc {
        let mut cmd = self.store.buildah();
        cmd.args(["run", "--isolation", "chroot", "--volume"])
            .arg(format!("{}:/etc/roundabout:ro", etc.display()))
            .arg(&self.name)
            .arg("--")
            .arg(program)
            .args(args);
        Proc::spawn("roundabout-in-container", cmd, &self.store.logs)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let mut cmd = self.store.buildah();
        cmd.args(["rm", &self.name]);
        let mut proc = Proc::spawn("buildah-rm", cmd, &self.store.logs);
        if proc.wait_timeout(QUICK_TIMEOUT).is_none() {
            proc.stop();
        }
    }
}
