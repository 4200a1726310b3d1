//! Running Roundabout in production: what an operator sees and changes while it runs.
//!
//! - `metrics`: the counters behind `GET /metrics`, counted where messages pass, plus the
//!   counts the actors hold (the same ones as the SIGUSR1 `stats:` line);
//! - `http`: the `-metrics-addr` listener, `GET /metrics` and `GET /health`;
//! - `reload`: SIGHUP, certificates and (with `-config`) the routing settings read again
//!   without closing a connection.
//!
//! `-config FILE` itself is read with the command line, in `config::flags`.

pub mod http;
pub mod metrics;
pub mod reload;
