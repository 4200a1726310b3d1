//! The token Roundabout writes into a Contact it rewrites, so a request later sent to that
//! Contact finds the original target again even when a peer ignores Record-Route.
//!
//! `;rbt=udp~192.0.2.35~5060~0~<mac>~<escaped original URI>`: how the target reached us
//! (transport, address, flow) and the URI it wrote. The MAC is keyed per process, so nobody
//! can forge a token that turns Roundabout into a relay to an address of their choosing.

use crate::routing::{Destination, FlowId, Source};
use crate::sip::uri::{escape_param_into, push_decimal, push_hex, push_ip, unescape_param};
use crate::sip::Transport;
use std::hash::BuildHasher;
use std::net::SocketAddr;

/// The URI parameter name.
pub const PARAM: &str = "rbt";

/// The per-process key. Clones share it (all Router shards must accept each other's tokens).
#[derive(Clone, Default)]
pub struct TokenKey(std::collections::hash_map::RandomState);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// A decoded token: who the contact belonged to and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactToken {
    pub source: Source,
    pub original_uri: String,
}

impl ContactToken {
    /// Where a request for this contact goes: back the way the client's REGISTER came.
    pub fn destination(&self) -> Destination {
        self.source.reply_destination()
    }
}

impl TokenKey {
    fn mac(&self, t: Transport, addr: &SocketAddr, flow: FlowId, uri: &str) -> u64 {
        self.0.hash_one((t.name(), addr, flow.0, uri))
    }

    pub fn encode(&self, source: &Source, original_uri: &str) -> String {
        let mut out = String::new();
        self.encode_into(&mut out, source, original_uri);
        out
    }

    /// [`TokenKey::encode`] appended to `out`. Written piece by piece into one buffer sized
    /// up front: `format!` grew its string several times per token (and `escape_param`
    /// allocated its own), which showed up as realloc on every rewritten Contact.
    pub fn encode_into(&self, out: &mut String, source: &Source, original_uri: &str) {
        let mac = self.mac(source.transport, &source.remote, source.flow, original_uri);
        // name~ip~port~flow~mac~: at most 3+1+45+1+5+1+20+1+16+1 bytes; the URI mostly
        // needs no escapes. The numbers are written without `write!` (see `push_decimal`).
        out.reserve(96 + original_uri.len() + original_uri.len() / 4);
        out.push_str(source.transport.name());
        out.push('~');
        push_ip(out, source.remote.ip());
        out.push('~');
        push_decimal(out, source.remote.port().into());
        out.push('~');
        push_decimal(out, source.flow.0);
        out.push('~');
        push_hex(out, mac);
        out.push('~');
        escape_param_into(out, original_uri);
    }

    /// `None` for anything not made by this process (bad form or MAC).
    pub fn decode(&self, value: &str) -> Option<ContactToken> {
        let mut parts = value.splitn(6, '~');
        let transport: Transport = parts.next()?.parse().ok()?;
        let ip = parts.next()?.parse().ok()?;
        let port: u16 = parts.next()?.parse().ok()?;
        let flow = FlowId(parts.next()?.parse().ok()?);
        let mac = u64::from_str_radix(parts.next()?, 16).ok()?;
        let original_uri = unescape_param(parts.next()?)?;
        let remote = SocketAddr::new(ip, port);
        (self.mac(transport, &remote, flow, &original_uri) == mac).then_some(ContactToken {
            source: Source {
                transport,
                remote,
                flow,
            },
            original_uri,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Source {
        Source {
            transport: Transport::Wss,
            remote: "[2001:db8::7]:50123".parse().unwrap(),
            flow: FlowId(42),
        }
    }

    #[test]
    fn round_trip_and_destination() {
        let key = TokenKey::default();
        let uri = "sip:x8f@df7jal23ls0d.invalid;transport=ws;ob";
        let tok = key.encode(&src(), uri);
        assert!(!tok.contains(';') && !tok.contains('='), "{tok}");
        let back = key.decode(&tok).unwrap();
        assert_eq!(back.source, src());
        assert_eq!(back.original_uri, uri);
        assert!(matches!(
            back.destination(),
            Destination::Flow {
                flow: FlowId(42),
                ..
            }
        ));
    }

    #[test]
    fn forged_or_foreign_tokens_are_refused() {
        let key = TokenKey::default();
        let tok = key.encode(&src(), "sip:a@b");
        assert!(TokenKey::default().decode(&tok).is_none(), "other process");
        let forged = tok.replacen("50123", "5060", 1);
        assert!(key.decode(&forged).is_none());
        assert!(key.decode("garbage").is_none());
        assert!(key.decode("udp~1.2.3.4~5060~0~zz~sip:a").is_none());
    }
}
