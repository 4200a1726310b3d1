//! Roundabout: a SIP edge proxy that bridges UDP, TCP, TLS, WS and WSS.
//!
//! `sip` is the message layer, `config` the command line, `routing` and `proxy` the pure
//! proxy decisions and rewrites; `actors` (in the top-level `actors/` folder) wires them to
//! sockets. `csr` is the one-shot certificate request mode.

pub mod config;
pub mod csr;
pub mod proxy;
pub mod routing;
pub mod sip;
