//! Roundabout: a SIP edge proxy that bridges UDP, TCP, TLS, WS and WSS.
//!
//! - `sip`: the message layer (framing, raw message index, URI and Via parsers);
//! - `config`: the command line and its validation;
//! - `routing` and `proxy`: next-hop decisions and header rewrites, pure and unit-tested;
//!   `dns`: servers located by DNS (RFC 3263: NAPTR, SRV, A/AAAA);
//! - `actors` (the top-level `actors/` folder): connection, Router, Registrar, ServerTable
//!   and Dispatcher actors that wire those functions to sockets;
//! - `limits`: what one peer may cost (sizes, timeouts, connection caps, flood protection,
//!   send queues); `log_throttle`: at most one log line per second per kind a peer can cause;
//! - `csr`: the one-shot certificate request; `tls`: certificates and trust for TLS and WSS;
//!   `run`: how the binary runs; `ops`: metrics, health and reload (SIGHUP).

pub mod config;
pub mod csr;
pub mod dns;
pub mod limits;
pub mod log_throttle;
pub mod open_files;
pub mod ops;
pub mod proxy;
pub mod routing;
pub mod run;
pub mod sip;
pub mod tls;

#[path = "../actors/mod.rs"]
pub mod actors;
