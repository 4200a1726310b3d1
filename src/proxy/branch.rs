//! Via branch ids Roundabout writes, and loop detection with them (RFC 3261 16.6 step 8,
//! 16.3 step 4).
//!
//! A branch is `z9hG4bK-rb<loop hash>-<unique part>` (the unique part a keyed MAC). The loop hash covers the fields that a
//! looping request keeps unchanged (Request-URI, From tag, To tag, Call-ID, CSeq number), so
//! a request that comes back with one of our Vias carrying the same hash is a loop, while a
//! legitimate spiral (retargeted by a server, so another Request-URI) is not.

use crate::proxy::contact_token::TokenKey;
use crate::proxy::rewrite::{to_tag, ProxyAddress};
use crate::sip::uri::{push_hex, NameAddr};
use crate::sip::via::Via;
use crate::sip::{HeaderName, SipMessage};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

pub const MAGIC: &str = "z9hG4bK";
const OURS: &str = "z9hG4bK-rb";

type Fixed = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// Makes unique, unpredictable branch ids: the unique part is cut from an HMAC (the
/// [`TokenKey`]) of the shard number and a block counter, so nobody can guess the branch of
/// a request Roundabout sent and forge a response to it. One HMAC-SHA256 gives 256 bits:
/// four branches' 64 bits each (an HMAC per branch was a tenth of a call's instructions).
#[derive(Debug, Clone)]
pub struct BranchGenerator {
    key: TokenKey,
    shard: u64,
    counter: u64,
    /// The HMAC of block `counter / 4`, whose 8-byte quarters are the next unique parts.
    block: [u8; 32],
}

impl BranchGenerator {
    pub fn new(shard: usize, key: TokenKey) -> Self {
        BranchGenerator {
            key,
            shard: shard as u64,
            counter: 0,
            block: [0; 32],
        }
    }

    /// The next unpredictable 64 bits (a new HMAC every fourth call).
    fn unique(&mut self) -> u64 {
        let quarter = (self.counter % 4) as usize;
        if quarter == 0 {
            let block = self.counter / 4;
            self.block =
                self.key
                    .mac256(&[b"branches", &self.shard.to_be_bytes(), &block.to_be_bytes()]);
        }
        self.counter += 1;
        u64::from_be_bytes(self.block[8 * quarter..8 * quarter + 8].try_into().unwrap())
    }

    /// `{OURS}{loop hash:x}-{mac:x}`, written without `format!` (one per forwarded request).
    pub fn next(&mut self, msg: &SipMessage) -> String {
        let unique = self.unique();
        let mut b = String::with_capacity(OURS.len() + 32);
        b.push_str(OURS);
        push_hex(&mut b, loop_hash(msg).into());
        b.push('-');
        push_hex(&mut b, unique);
        b
    }
}

/// Whether the top Via of a response is one Roundabout wrote.
pub fn is_our_branch(branch: &str) -> bool {
    branch.starts_with(OURS)
}

fn loop_hash(msg: &SipMessage) -> u32 {
    let from_tag = msg
        .first_value(HeaderName::From)
        .and_then(|v| NameAddr::parse(v).ok())
        .and_then(|n| n.tag());
    let cseq = msg.cseq().map(|(n, _)| n);
    // Fed field by field, exactly as hashing the tuple
    // `(ruri, from_tag, to_tag, call_id, cseq, routes as Vec<&str>)` would (a slice hashes its
    // length, then each item), so branches keep their values, without the Vec and the
    // From-tag String that were allocated for every forwarded request.
    let mut h = Fixed::default().build_hasher();
    msg.request_uri().hash(&mut h);
    from_tag.hash(&mut h);
    to_tag(msg).hash(&mut h);
    msg.call_id().hash(&mut h);
    cseq.hash(&mut h);
    // The Route set as received too (RFC 3261 16.6 step 8): an in-dialog request that comes
    // back after a Record-Routing server popped its Route keeps its Request-URI, and is a
    // spiral, not a loop.
    h.write_usize(msg.values(HeaderName::Route).count());
    for route in msg.values(HeaderName::Route) {
        route.hash(&mut h);
    }
    h.finish() as u32
}

/// A request that already went through Roundabout unchanged is looping.
pub fn is_loop(msg: &SipMessage, local: &ProxyAddress) -> bool {
    // Most requests never passed here: skip the hash unless one of our branches is present.
    let has_ours = msg
        .headers()
        .iter()
        .any(|h| h.name == HeaderName::Via && msg.value(h).contains(OURS));
    if !has_ours {
        return false;
    }
    let expected = format!("{OURS}{:x}-", loop_hash(msg));
    msg.values(HeaderName::Via).any(|v| {
        Via::parse(v).is_ok_and(|via| {
            via.branch().is_some_and(|b| b.starts_with(&expected))
                && local.identity.is_us(via.host, via.port)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::routing::LocalIdentity;
    use bytes::Bytes;

    fn msg(s: String) -> SipMessage {
        SipMessage::parse(Bytes::from(s)).unwrap()
    }

    #[test]
    fn detects_loops_not_spirals() {
        let local = ProxyAddress::new(LocalIdentity::from_config(&Config::default()), false);
        let mut gen = BranchGenerator::new(0, TokenKey::default());
        let req = |ruri: &str, via: &str| {
            msg(format!("INVITE {ruri} SIP/2.0\r\n{via}Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n"))
        };
        let first = req("sip:b@y", "");
        let b = gen.next(&first);
        assert!(b.starts_with("z9hG4bK-rb") && is_our_branch(&b));
        assert_ne!(b, gen.next(&first));
        let ours = format!("Via: SIP/2.0/UDP 127.0.0.1:5060;branch={b}\r\n");
        assert!(is_loop(&req("sip:b@y", &ours), &local));
        assert!(
            !is_loop(&req("sip:b@z", &ours), &local),
            "retargeted: a spiral"
        );
        assert!(!is_loop(&first, &local));
        // In-dialog through a Record-Routing server: same Request-URI, fewer Routes.
        let routed = "Route: <sip:127.0.0.4;lr>, <sip:127.0.0.1;lr>\r\n".to_string();
        let first_pass = req("sip:b@y", &routed);
        let b2 = gen.next(&first_pass);
        let back =
            format!("Via: SIP/2.0/UDP 127.0.0.1:5060;branch={b2}\r\nRoute: <sip:127.0.0.1;lr>\r\n");
        assert!(
            !is_loop(&req("sip:b@y", &back), &local),
            "a spiral through a server"
        );
        let elsewhere = format!("Via: SIP/2.0/UDP 127.0.0.9:5060;branch={b}\r\n");
        assert!(!is_loop(&req("sip:b@y", &elsewhere), &local));
    }

    #[test]
    fn loop_hash_is_the_tuple_hash() {
        // The field-by-field hash must equal the tuple hash it replaced (branch values kept).
        let m = msg("INVITE sip:b@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nRoute: <sip:a;lr>, <sip:b;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 7 INVITE\r\n\r\n".to_string());
        let routes: Vec<&str> = m.values(HeaderName::Route).collect();
        let tuple = Fixed::default().hash_one((
            m.request_uri(),
            Some(String::from("1")),
            to_tag(&m),
            m.call_id(),
            Some(7u32),
            routes,
        )) as u32;
        assert_eq!(loop_hash(&m), tuple);
    }

    #[test]
    fn unique_parts_are_distinct_and_keyed() {
        let key = TokenKey::from_secret(b"fixed");
        let mut a = BranchGenerator::new(0, key.clone());
        let parts: Vec<u64> = (0..400).map(|_| a.unique()).collect();
        let set: std::collections::HashSet<_> = parts.iter().collect();
        assert_eq!(set.len(), parts.len(), "no repeats across blocks");
        // Another shard (same key) and another key give other values.
        let mut b = BranchGenerator::new(1, key);
        let mut c = BranchGenerator::new(0, TokenKey::from_secret(b"other"));
        for p in &parts[..8] {
            let (pb, pc) = (b.unique(), c.unique());
            assert!(!set.contains(&pb) && !set.contains(&pc) && pb != *p && pc != *p);
        }
        // Deterministic for a key (the same generator restarted gives the same sequence).
        let mut again = BranchGenerator::new(0, TokenKey::from_secret(b"fixed"));
        assert_eq!(
            (0..9).map(|_| again.unique()).collect::<Vec<_>>(),
            parts[..9]
        );
    }
}
