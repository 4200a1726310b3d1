//! The SIP layer: transports, framing, the raw message index and value parsers, and the
//! STUN keep-alives that share the SIP UDP port.
//! Nothing here knows about proxying or sockets.

pub mod framing;
pub mod header;
pub mod message;
pub mod salvage;
pub mod stun;
pub mod transport;
pub mod uri;
pub mod via;

pub use header::HeaderName;
pub use message::{ParseError, Rewrite, SipMessage};
pub use transport::Transport;
