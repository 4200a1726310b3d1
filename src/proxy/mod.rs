//! Proxy logic that needs no sockets: header rewrites, the contact token, locally built
//! responses, branch ids and the transaction records the Router keeps.

pub mod branch;
pub mod contact_token;
pub mod responses;
pub mod rewrite;
pub mod transaction;
pub mod validate;
