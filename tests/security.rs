//! Security: each attack of issue 12 against the real binary, with positive controls.
mod common;
mod transport_peers;
#[path = "security/trust.rs"]
mod trust;
#[path = "security/limits.rs"]
mod limits;
