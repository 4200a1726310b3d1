//! What one peer may cost Roundabout: message sizes, header count, how long a connection may
//! hold a partial message or sit idle, how many connections there may be (in all and per
//! source), how fast one source may send requests (flood protection, like Kamailio's `pike`
//! module), how much may wait to be written to a peer that does not read (like Kamailio's
//! `tcp_conn_wq_max`), and how many connections others can make Roundabout open.
//!
//! A source is an IPv4 address or an IPv6 /64 ([`crate::actors::connection::guard::source_key`]):
//! one IPv6 host may use every address of its /64.
//!
//! The values come from the command line (`-max-udp-message`, ... see `config::flags`); the
//! connection actors enforce them (`actors/connection/guard.rs`, the send queue in
//! `actors/connection/send_queue.rs`), the Dispatcher the cap on outbound connections.
//! Trusted servers are exempt from the per-source limits and the outbound cap: a busy PBX or
//! trunk is not an attacker.
//!
//! SIGHUP with `-config` replaces them all while Roundabout runs (`ops::reload`): the guard
//! and the Dispatcher read them at each check, the Routers take the transaction limits. A
//! new value holds from the next check on ([`LimitChange::applies_to`] says which) and never
//! closes a connection that is open: a lower `-max-connections` refuses new ones only.

use std::fmt;
use std::time::Duration;

/// The largest UDP payload over IPv4 (65,535 - 8 UDP - 20 IP header bytes).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// The request rate of one address is measured over windows of this length.
pub const PIKE_WINDOW: Duration = Duration::from_secs(2);

/// An address over the rate is blocked this long after the last window it was over in.
pub const PIKE_BLOCK: Duration = Duration::from_secs(10);

/// The default of `-max-send-queue`: 1 MiB (Kamailio's `tcp_conn_wq_max` defaults to 32 KiB,
/// but a trunk's connection may carry a burst for thousands of calls).
pub const DEFAULT_MAX_SEND_QUEUE: usize = 1 << 20;

/// The range `-max-send-queue` accepts: 4 KiB (a few messages) to 1 GiB.
pub const SEND_QUEUE_RANGE: std::ops::RangeInclusive<usize> = 4096..=(1 << 30);

/// The limits, as set on the command line. `Default` is the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest datagram taken as a SIP message; larger ones are dropped.
    pub max_udp_message: usize,
    /// The largest message on TCP, TLS, WS or WSS; a larger one closes the connection.
    pub max_stream_message: usize,
    /// At most this many header lines in a message (more: 400, or dropped).
    pub max_headers: usize,
    /// A message begun on a TCP or TLS connection must be complete within this (slow-loris).
    pub partial_message_timeout: Duration,
    /// A connection that receives nothing at all (not even a keep-alive) this long is
    /// closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Accepted connections open at once, from everyone (0: no limit).
    pub max_connections: usize,
    /// Accepted connections open at once from one source, an IPv4 address or an IPv6 /64
    /// (0: no limit).
    pub max_connections_per_ip: usize,
    /// Requests (and unparseable messages) one source (IPv4 address, IPv6 /64) may send per
    /// [`PIKE_WINDOW`] before it is blocked for [`PIKE_BLOCK`] (0: no limit).
    pub pike_limit: u32,
    /// Bytes accepted for writing on one connection and not yet written; a peer that lets
    /// more pile up (it does not read) is closed (-max-send-queue).
    pub max_send_queue: usize,
    /// Connections Roundabout opens itself, open or being opened at once, to hosts that are
    /// not trusted servers (0: no limit) (-max-outbound-connections).
    pub max_outbound_connections: usize,
    /// 64*T1: Timers B and F (no answer from the next hop), and how long a transaction
    /// lingers after its final answer (-transaction-timeout).
    pub transaction_timeout: Duration,
    /// Timer C: a ringing INVITE is cancelled after this (-ringing-timeout).
    pub ringing_timeout: Duration,
    /// Transactions held at once, all Router shards together (-max-transactions).
    pub max_transactions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_udp_message: MAX_UDP_PAYLOAD,
            max_stream_message: crate::sip::framing::DEFAULT_MAX_STREAM_MESSAGE,
            max_headers: crate::sip::message::MAX_HEADERS,
            partial_message_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(3600)),
            max_connections: 50_000,
            max_connections_per_ip: 100,
            pike_limit: 300,
            max_send_queue: DEFAULT_MAX_SEND_QUEUE,
            max_outbound_connections: 1000,
            transaction_timeout: Duration::from_secs(32),
            ringing_timeout: Duration::from_secs(181),
            max_transactions: 100_000,
        }
    }
}

/// A limit that a reload changes (see [`Limits::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitChange {
    /// The flag, without its dash.
    pub flag: &'static str,
    /// The values as the flag takes them (sizes in bytes, times in seconds, 0: off).
    pub old: String,
    pub new: String,
    /// What the new value holds for.
    pub applies_to: &'static str,
}

impl fmt::Display for LimitChange {
    /// `-max-connections-per-ip 100 -> 2 (for new connections; those open stay)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "-{} {} -> {} (for {})",
            self.flag, self.old, self.new, self.applies_to
        )
    }
}

impl Limits {
    /// The limits that differ in `new`, each with what its new value holds for.
    pub fn changes(&self, new: &Limits) -> Vec<LimitChange> {
        let secs = |d: Duration| d.as_secs().to_string();
        let idle = |d: Option<Duration>| d.map_or_else(|| "0".to_string(), secs);
        let new_connections = "new connections; those open stay";
        let rows = [
            (
                "max-udp-message",
                self.max_udp_message.to_string(),
                new.max_udp_message.to_string(),
                "the next datagram",
            ),
            (
                "max-stream-message",
                self.max_stream_message.to_string(),
                new.max_stream_message.to_string(),
                "new connections",
            ),
            (
                "max-headers",
                self.max_headers.to_string(),
                new.max_headers.to_string(),
                "the next message",
            ),
            (
                "partial-message-timeout",
                secs(self.partial_message_timeout),
                secs(new.partial_message_timeout),
                "incomplete messages, at their next check",
            ),
            (
                "idle-timeout",
                idle(self.idle_timeout),
                idle(new.idle_timeout),
                "new connections, and open ones at their next idle check",
            ),
            (
                "max-connections",
                self.max_connections.to_string(),
                new.max_connections.to_string(),
                new_connections,
            ),
            (
                "max-connections-per-ip",
                self.max_connections_per_ip.to_string(),
                new.max_connections_per_ip.to_string(),
                new_connections,
            ),
            (
                "pike-limit",
                self.pike_limit.to_string(),
                new.pike_limit.to_string(),
                "the next request",
            ),
            (
                "max-send-queue",
                self.max_send_queue.to_string(),
                new.max_send_queue.to_string(),
                "new connections",
            ),
            (
                "max-outbound-connections",
                self.max_outbound_connections.to_string(),
                new.max_outbound_connections.to_string(),
                "the next connection Roundabout opens; those open stay",
            ),
            (
                "transaction-timeout",
                secs(self.transaction_timeout),
                secs(new.transaction_timeout),
                "new transactions",
            ),
            (
                "ringing-timeout",
                secs(self.ringing_timeout),
                secs(new.ringing_timeout),
                "new transactions",
            ),
            (
                "max-transactions",
                self.max_transactions.to_string(),
                new.max_transactions.to_string(),
                "the next request",
            ),
        ];
        rows.into_iter()
            .filter(|(_, old, new, _)| old != new)
            .map(|(flag, old, new, applies_to)| LimitChange {
                flag,
                old,
                new,
                applies_to,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_each_flag_that_differs_in_its_own_units() {
        let running = Limits::default();
        assert!(running.changes(&running).is_empty());
        let new = Limits {
            max_connections_per_ip: 2,
            pike_limit: 0,
            idle_timeout: None,
            partial_message_timeout: Duration::from_secs(3),
            ..running
        };
        let lines: Vec<String> = running
            .changes(&new)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            lines,
            [
                "-partial-message-timeout 10 -> 3 (for incomplete messages, at their next check)",
                "-idle-timeout 3600 -> 0 (for new connections, and open ones at their next idle \
                 check)",
                "-max-connections-per-ip 100 -> 2 (for new connections; those open stay)",
                "-pike-limit 300 -> 0 (for the next request)",
            ]
        );
        // Every field is compared: one changed at a time gives one line.
        let each = [
            Limits {
                max_udp_message: 2000,
                ..running
            },
            Limits {
                max_stream_message: 2000,
                ..running
            },
            Limits {
                max_headers: 20,
                ..running
            },
            Limits {
                max_connections: 1,
                ..running
            },
            Limits {
                max_send_queue: 8192,
                ..running
            },
            Limits {
                max_outbound_connections: 1,
                ..running
            },
            Limits {
                transaction_timeout: Duration::from_secs(1),
                ..running
            },
            Limits {
                ringing_timeout: Duration::from_secs(1),
                ..running
            },
            Limits {
                max_transactions: 1,
                ..running
            },
        ];
        for new in each {
            assert_eq!(running.changes(&new).len(), 1, "{new:?}");
        }
    }
}
