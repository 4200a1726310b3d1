//! SIGHUP: read the certificate and (with `-config`) the settings again, and use them without
//! closing any connection.
//!
//! Everything is read and checked first; only when all of it loads is anything replaced, so a
//! file that does not parse, or a key that does not match its certificate, leaves the
//! running configuration as it was (and the log says why).
//!
//! - `-tls-cert`/`-tls-key` (always): the new pair goes into the listeners' shared acceptor
//!   (`tls::SharedAcceptor`); handshakes from then on present it, connections already up keep
//!   theirs. The outbound context (`tls::SharedConnector`: that pair as the client
//!   certificate trunks may ask for, `-tls-ca`, `-tls-insecure`) is made again the same way.
//! - With `-config`: the flags are read again (the file, then the command line over it, as at
//!   start) and sent (message `Reload`) to the ServerTable (trusted servers, `-strict-host`,
//!   `-default-sip-server`, `-default-network`) and to every Router shard (`-strict-client`,
//!   `-registered-only`, the client networks, `-ack-ruri`, the transaction timers and
//!   `-max-transactions`): the next request is handled by them. The connection limits go to
//!   the connection guard (`Guard::set_limits`), which the listeners, the connections and the
//!   Dispatcher read at each check: they hold from the next one, and close no connection.
//!   The listeners' ports and addresses, and the other settings fixed at start, keep their
//!   running values; a change to one of them is logged as waiting for a restart.

use crate::actors::connection::guard::Guard;
use crate::actors::messages::Reload;
use crate::config::{Command, Config};
use crate::tls::{SharedAcceptor, SharedConnector};
use actix::prelude::*;
use log::{info, warn};
use std::sync::Arc;

/// What a reload acts on; made once the actors run.
pub struct Reloader {
    /// The settings in force (the last that loaded).
    current: Config,
    /// The TLS and WSS listeners' acceptor; `None` when both are off.
    acceptor: Option<SharedAcceptor>,
    /// The outbound TLS and WSS context.
    connector: SharedConnector,
    /// The connection limits (it lives on this thread, as the signals loop does).
    guard: Guard,
    /// Who takes new settings (the ServerTable and the Router shards).
    targets: Vec<Recipient<Reload>>,
    /// Reads the command line again (the process's own arguments; tests give theirs).
    args: Box<dyn Fn() -> Vec<String>>,
}

impl Reloader {
    pub fn new(current: Config, running: &crate::actors::Running) -> Reloader {
        Reloader {
            current,
            acceptor: running.acceptor.clone(),
            connector: running.connector.clone(),
            guard: running.guard.clone(),
            targets: running.reload.clone(),
            args: Box::new(|| std::env::args().skip(1).collect()),
        }
    }

    /// One SIGHUP. Logs what it did, or why it changed nothing.
    pub fn reload(&mut self) {
        let keep = "the running configuration stays as it was";
        let new = match &self.current.config_file {
            None => None,
            Some(_) => match read_settings(&(self.args)()) {
                Ok(c) => Some(c),
                Err(e) => return warn!("reload refused: {e}; {keep}"),
            },
        };
        let settings = new.as_ref().unwrap_or(&self.current);
        let acceptor = match &self.acceptor {
            None => None,
            Some(_) => match crate::tls::reload_acceptor(settings) {
                Ok(a) => a,
                Err(e) => return warn!("reload refused: {e}; {keep}"),
            },
        };
        let connector = match crate::tls::reload_connector(settings) {
            Ok(c) => c,
            Err(e) => return warn!("reload refused: {e}; {keep}"),
        };
        // Everything loaded: apply.
        if let (Some(shared), Some(a)) = (&self.acceptor, acceptor) {
            shared.replace(a);
            info!(
                "reload: new TLS and WSS connections get the certificate of {} (connections \
                 already open keep theirs)",
                settings.tls_cert.display()
            );
        }
        self.connector.replace(connector);
        let Some(new) = new else {
            return info!(
                "reload done (no -config: only certificates are read again, for the \
                 listeners and as the client certificate of new outbound TLS and WSS \
                 connections)"
            );
        };
        for line in fixed_changes(&self.current, &new) {
            warn!("reload: {line}");
        }
        let applied = Arc::new(new);
        for t in &self.targets {
            t.do_send(Reload(applied.clone()));
        }
        self.guard.set_limits(applied.limits);
        for change in self.current.limits.changes(&applied.limits) {
            info!("reload: {change}");
        }
        if applied.limits.max_connections != self.current.limits.max_connections {
            if let Some(w) = open_files_warning(applied.limits.max_connections) {
                warn!("reload: {w}");
            }
        }
        crate::ops::metrics::metrics().set_trusted_servers(&applied.trusted_servers);
        for w in applied.warnings.iter().filter(|w| w.contains("skipped")) {
            warn!("reload: {w}");
        }
        let on = |b: bool| if b { "on" } else { "off" };
        info!(
            "reload done from {}: {} trusted server(s), strict-host {}, strict-client {}, \
             registered-only {}, {} trusted client network(s), default SIP server {}, unknown \
             hosts over {}",
            applied
                .config_file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            applied.trusted_servers.len(),
            on(applied.strict_host),
            on(applied.strict_client),
            on(applied.registered_only),
            applied.client_networks.len(),
            applied
                .default_sip_server
                .as_ref()
                .map(|s| s.host.to_string())
                .unwrap_or_else(|| "none".into()),
            applied.default_network
        );
        // What was not reloaded keeps its running value, so the next comparison is against
        // what is really in force.
        self.current = Config {
            trusted_servers: applied.trusted_servers.clone(),
            default_sip_server: applied.default_sip_server.clone(),
            strict_host: applied.strict_host,
            default_network: applied.default_network,
            strict_client: applied.strict_client,
            registered_only: applied.registered_only,
            client_networks: applied.client_networks.clone(),
            ack_ruri: applied.ack_ruri,
            limits: applied.limits,
            tls_cert: applied.tls_cert.clone(),
            tls_key: applied.tls_key.clone(),
            tls_files_explicit: applied.tls_files_explicit,
            tls_ca: applied.tls_ca.clone(),
            tls_insecure: applied.tls_insecure,
            ..self.current.clone()
        };
    }
}

/// The start-up warning about `-max-connections` and the open-files limit, for the value a
/// reload brings (the limit is read again: an operator may have raised it with `prlimit`).
fn open_files_warning(max_connections: usize) -> Option<String> {
    let (soft, _) = rlimit::Resource::NOFILE.get().ok()?;
    crate::open_files::max_connections_warning(soft, max_connections)
}

/// The flags read again: the `-config` file and the command line over it.
fn read_settings(args: &[String]) -> Result<Config, String> {
    use crate::config::flags::{parse, Parsed};
    let flags = match parse(args) {
        Parsed::Flags(f) => f,
        Parsed::Error(e) | Parsed::Help(e) => return Err(e),
    };
    match Command::from_flags(*flags) {
        Ok(Command::Proxy(c)) => Ok(*c),
        Ok(_) => Err("the flags no longer describe a proxy (-csr or -version)".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Settings that a reload does not change, each that differs said in one line.
fn fixed_changes(running: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, old: String, new: String, why: &str| {
        if old != new {
            out.push(format!(
                "{what} changed from {old} to {new}, but {why}: it keeps {old} until a restart"
            ));
        }
    };
    let listeners = "the listeners cannot move while they run";
    check(
        "-bind-ip",
        running.bind_ip.to_string(),
        new.bind_ip.to_string(),
        listeners,
    );
    for t in crate::sip::Transport::ALL {
        check(
            &format!("-{t}-port"),
            running.ports.get(t).to_string(),
            new.ports.get(t).to_string(),
            listeners,
        );
    }
    check(
        "-metrics-addr",
        format!("{:?}", running.metrics_addr),
        format!("{:?}", new.metrics_addr),
        listeners,
    );
    let identity = "Roundabout's own address is in every dialog it is part of";
    check(
        "-local-ip",
        running.local_ip.to_string(),
        new.local_ip.to_string(),
        identity,
    );
    check(
        "-local-fqdn",
        format!("{:?}", running.local_fqdn),
        format!("{:?}", new.local_fqdn),
        identity,
    );
    check(
        "-contact-header-fqdn",
        running.contact_header_fqdn.to_string(),
        new.contact_header_fqdn.to_string(),
        identity,
    );
    check(
        "-token-key-file",
        format!("{:?}", running.token_key_file),
        format!("{:?}", new.token_key_file),
        "the key checks the Contact tokens of dialogs already up",
    );
    check(
        "-ws-path",
        format!("{:?}", running.ws_path),
        format!("{:?}", new.ws_path),
        "the WS and WSS listeners are set up with it at start",
    );
    check(
        "-dns-server/-avoid-time",
        format!("{:?} {:?}", running.dns_server, running.avoid_time),
        format!("{:?} {:?}", new.dns_server, new.avoid_time),
        "the resolver and the failover state are made at start",
    );
    check(
        "-log-level",
        running.log_level.to_string(),
        new.log_level.to_string(),
        "the logger is set up at start (RUST_LOG too)",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &str) -> Config {
        let argv: Vec<String> = args.split_whitespace().map(String::from).collect();
        read_settings(&argv).unwrap()
    }

    #[test]
    fn fixed_settings_that_change_are_named() {
        let running = config("-udp-port 5060 -strict-host");
        let same = config("-udp-port 5060 -strict-host -trusted-server 192.0.2.1::5060:udp:");
        assert!(fixed_changes(&running, &same).is_empty());
        let moved = config(
            "-udp-port 5070 -bind-ip 0.0.0.0 -strict-client -pike-limit 5 \
             -max-connections-per-ip 1 -tls-insecure -ws-path /sip",
        );
        let lines = fixed_changes(&running, &moved).join("\n");
        for reloaded in ["-strict-client", "-pike-limit", "-max-connections", "-tls-"] {
            assert!(!lines.contains(reloaded), "{reloaded} in {lines}");
        }
        for words in [
            "-udp-port changed from 5060 to 5070",
            "-bind-ip changed from 127.0.0.1 to 0.0.0.0",
            "-ws-path changed from None to Some(\"/sip\")",
        ] {
            assert!(lines.contains(words), "{words:?} in {lines}");
        }
    }

    #[test]
    fn settings_that_do_not_load_are_an_error() {
        let e = read_settings(&["-trusted-server".into()]).unwrap_err();
        assert!(e.contains("trusted-server"), "{e}");
        let e = read_settings(&["-default-sip-server".into(), "192.0.2.7".into()]).unwrap_err();
        assert!(e.contains("192.0.2.7"), "{e}");
    }
}
