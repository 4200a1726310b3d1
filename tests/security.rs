//! Security: each attack of issue 12 against the real binary, with positive controls.
mod common;
#[path = "security/limits.rs"]
mod limits;
mod transport_peers;
#[path = "security/trust.rs"]
mod trust;
