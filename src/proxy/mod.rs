//! Proxy logic that needs no sockets: the proxy core of a Router shard (`core`, joining a
//! `server_tx` to a `client_tx` state machine, with the `timers` they run), header rewrites,
//! the contact token, locally built responses, branch ids and transaction keys.

pub mod branch;
pub mod client_tx;
pub mod contact_token;
pub mod core;
pub mod responses;
pub mod rewrite;
pub mod server_tx;
pub mod timers;
pub mod transaction;
pub mod validate;
