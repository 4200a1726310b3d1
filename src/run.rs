//! The two ways the program runs: once for a CSR, or as the proxy until a signal.

use crate::config::Config;
use crate::csr::{build_csr_pem, CsrRequest};
use log::info;
use std::path::Path;
use std::process::ExitCode;

/// Writes the CSR to `out` or stdout. Exit 2 when the key cannot be used (bad input).
pub fn csr(req: &CsrRequest, out: Option<&Path>) -> ExitCode {
    let pem = match build_csr_pem(req) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("roundabout: {e}");
            return ExitCode::from(2);
        }
    };
    match out {
        None => print!("{pem}"),
        Some(path) => {
            if let Err(e) = std::fs::write(path, &pem) {
                eprintln!(
                    "roundabout: cannot write the CSR to {}: {e}",
                    path.display()
                );
                return ExitCode::from(2);
            }
            eprintln!("roundabout: CSR written to {}", path.display());
        }
    }
    ExitCode::SUCCESS
}

/// Runs the proxy until SIGTERM or SIGINT; SIGHUP reloads (see `ops::reload`).
pub fn proxy(config: Config) -> ExitCode {
    let mut logger = env_logger::Builder::new();
    logger.filter_level(config.log_level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        logger.parse_filters(&spec);
    }
    logger.init();
    // Certificates are checked before any socket is bound: a bad file is a usage error.
    let tls = match crate::tls::load(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("roundabout: {e}");
            return ExitCode::from(2);
        }
    };
    // The key of contact tokens and branches: a file that cannot be used is a usage error.
    let key = match &config.token_key_file {
        Some(path) => match crate::proxy::contact_token::TokenKey::load_or_create(path) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("roundabout: {e}");
                return ExitCode::from(2);
            }
        },
        None => crate::proxy::contact_token::TokenKey::default(),
    };
    // before any socket: each connection is a file descriptor
    let open_files = crate::open_files::raise_to_hard_limit()
        .map_err(|e| log::warn!("cannot read or raise the open-files limit: {e}"))
        .ok();
    let shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    let system = actix::System::new();
    let result = system.block_on(async move {
        let tls_warnings = tls.warnings.clone();
        // Before anything listens: a SIGHUP (systemctl reload) or SIGTERM that comes during
        // start-up then waits for the loop instead of killing the process.
        let mut signals = Signals::install();
        let running = crate::actors::start(&config, shards, tls, key)
            .await
            .map_err(|e| e.to_string())?;
        let metrics = match config.metrics_addr {
            None => None,
            Some(addr) => Some(
                crate::ops::http::start(addr, running.stats.clone())
                    .await
                    .map_err(|e| {
                        format!("cannot listen on {addr} for -metrics-addr: {e} (is another program there?)")
                    })?,
            ),
        };
        print_banner(&config, &running, &tls_warnings, open_files, metrics);
        let mut reloader = crate::ops::reload::Reloader::new(config.clone(), &running);
        signals.wait(&running, &mut reloader).await;
        drain(&running).await;
        Ok::<_, String>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roundabout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_banner(
    config: &Config,
    running: &crate::actors::Running,
    tls_warnings: &[String],
    open_files: Option<crate::open_files::OpenFiles>,
    metrics: Option<std::net::SocketAddr>,
) {
    use std::fmt::Write;
    let mut s = format!("roundabout {} listening on:\n", env!("CARGO_PKG_VERSION"));
    for (t, addr) in &running.listeners {
        let _ = writeln!(s, "  {t:<4} {addr}");
    }
    if let Some(addr) = metrics {
        let _ = writeln!(s, "  http {addr} (GET /metrics, /health)");
    }
    if let Some(file) = &config.config_file {
        let _ = writeln!(
            s,
            "flags from {} and the command line (SIGHUP reloads them)",
            file.display()
        );
    }
    let _ = writeln!(
        s,
        "local address {}{}, {} router shard(s)",
        config.local_ip,
        config
            .local_fqdn
            .as_deref()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default(),
        running.shards
    );
    if config.trusted_servers.is_empty() {
        let _ = writeln!(s, "trusted servers: none");
    }
    for server in &config.trusted_servers {
        let _ = writeln!(s, "trusted server {server}");
    }
    if let Some(d) = &config.default_sip_server {
        let _ = writeln!(s, "default SIP server {}", d.host);
    }
    let nets: Vec<String> = config
        .client_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    let _ = writeln!(
        s,
        "trusted client networks: {}",
        if nets.is_empty() {
            "any".to_string()
        } else {
            nets.join(", ")
        }
    );
    let _ = writeln!(
        s,
        "routing: strict-host {}, strict-client {}, registered-only {}, ACK by {}, unknown hosts \
         over {}",
        on_off(config.strict_host),
        on_off(config.strict_client),
        on_off(config.registered_only),
        if config.ack_ruri { "Request-URI" } else { "To" },
        config.default_network
    );
    // Answered transactions stay for -transaction-timeout (64*T1) over UDP to absorb
    // retransmissions, and a call holds two (INVITE, BYE): the budget, not the CPU, is
    // what first limits a sustained call rate, so say which rate it allows.
    let linger = config.limits.transaction_timeout.as_secs().max(1) as usize;
    let _ = writeln!(
        s,
        "transactions: up to {} at once (-max-transactions), about {} calls/s sustained over \
         UDP (a call holds 2 for {linger} s after their answers)",
        config.limits.max_transactions,
        config.limits.max_transactions / (2 * linger)
    );
    if let Some(path) = &config.ws_path {
        let _ = writeln!(s, "ws and wss accept the HTTP path {path} only");
    }
    let mut warnings: Vec<String> = config
        .warnings
        .iter()
        .chain(tls_warnings)
        .cloned()
        .collect();
    if let Some(files) = open_files {
        let _ = writeln!(
            s,
            "open files: up to {}{}",
            files.limit,
            files
                .raised_from
                .map(|from| format!(" (raised from {from})"))
                .unwrap_or_default()
        );
        warnings.extend(crate::open_files::max_connections_warning(
            files.limit,
            config.limits.max_connections,
        ));
    }
    for w in &warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    print!("{s}");
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The signals the proxy answers, caught from start-up on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
            usr1: signal(SignalKind::user_defined1()).expect("SIGUSR1 handler"),
            hup: signal(SignalKind::hangup()).expect("SIGHUP handler"),
        }
    }

    /// Waits for SIGTERM or SIGINT; on each SIGUSR1 meanwhile, logs the stats line (see
    /// `actors/stats.rs`); on each SIGHUP, reloads (see `ops/reload.rs`).
    async fn wait(
        &mut self,
        running: &crate::actors::Running,
        reloader: &mut crate::ops::reload::Reloader,
    ) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.usr1.recv() => info!("stats: {}", running.stats.gather().await),
                _ = self.hup.recv() => reloader.reload(),
            }
        }
    }
}

/// How long transactions in flight may take to finish after SIGTERM/SIGINT.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses new transactions (503) and waits, bounded, for those in flight to end; then
/// leaves a moment for queued writes to reach their sockets.
async fn drain(running: &crate::actors::Running) {
    use std::time::{Duration, Instant};
    // GET /health answers 503 from now on: load balancers stop sending new calls.
    crate::ops::metrics::metrics().set_draining();
    let deadline = Instant::now() + DRAIN_LIMIT;
    let mut announced = false;
    loop {
        let mut in_flight = 0;
        for r in &running.routers {
            in_flight += r.send(crate::actors::messages::Drain).await.unwrap_or(0);
        }
        if in_flight == 0 {
            info!("stopping: no transaction in flight");
            break;
        }
        if Instant::now() >= deadline {
            info!("stopping with {in_flight} transaction(s) still in flight after {DRAIN_LIMIT:?}");
            break;
        }
        if !announced {
            info!(
                "stopping: waiting up to {DRAIN_LIMIT:?} for {in_flight} transaction(s) in flight"
            );
            announced = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}
