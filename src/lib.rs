//! Roundabout: a SIP edge proxy that bridges UDP, TCP, TLS, WS and WSS.
//!
//! - `sip`: the message layer (framing, raw message index, URI and Via parsers);
//! - `config`: the command line and its validation;
//! - `routing` and `proxy`: next-hop decisions and header rewrites, pure and unit-tested;
//! - `actors` (the top-level `actors/` folder): connection, Router, Registrar, ServerTable
//!   and Dispatcher actors that wire those functions to sockets;
//! - `limits`: what one peer may cost (sizes, timeouts, connection caps, flood protection);
//! - `csr`: the one-shot certificate request; `tls`: certificates and trust for TLS and WSS;
//!   `run`: how the binary runs.

pub mod config;
pub mod csr;
pub mod limits;
pub mod open_files;
pub mod proxy;
pub mod routing;
pub mod run;
pub mod sip;
pub mod tls;

#[path = "../actors/mod.rs"]
pub mod actors;
