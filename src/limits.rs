//! What one peer may cost Roundabout: message sizes, header count, how long a connection may
//! hold a partial message or sit idle, how many connections there may be (in all and per
//! source address), and how fast one address may send requests (flood protection, like
//! Kamailio's `pike` module).
//!
//! The values come from the command line (`-max-udp-message`, ... see `config::flags`); the
//! connection actors enforce them (`actors/connection/guard.rs`). Trusted servers are exempt
//! from the per-address limits: a busy PBX or trunk is not an attacker.

use std::time::Duration;

/// The largest UDP payload over IPv4 (65,535 - 8 UDP - 20 IP header bytes).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// The request rate of one address is measured over windows of this length.
pub const PIKE_WINDOW: Duration = Duration::from_secs(2);

/// An address over the rate is blocked this long after the last window it was over in.
pub const PIKE_BLOCK: Duration = Duration::from_secs(10);

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
    /// Accepted connections open at once from one IP address (0: no limit).
    pub max_connections_per_ip: usize,
    /// Requests (and unparseable messages) one address may send per [`PIKE_WINDOW`] before
    /// it is blocked for [`PIKE_BLOCK`] (0: no limit).
    pub pike_limit: u32,
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
            transaction_timeout: Duration::from_secs(32),
            ringing_timeout: Duration::from_secs(181),
            max_transactions: 100_000,
        }
    }
}
