//! The token Roundabout writes into a Contact it rewrites, so a request later sent to that
//! Contact finds the original target again even when a peer ignores Record-Route.
//!
//! `;rbt=udp~192.0.2.35~5060~0~<mac>~<escaped original URI>`: how the target reached us
//! (transport, address, flow) and the URI it wrote. The MAC (HMAC-SHA256, see [`TokenKey`])
//! is keyed per process or by `-token-key-file`, so nobody
//! can forge a token that turns Roundabout into a relay to an address of their choosing.

use crate::routing::{Destination, FlowId, Source};
use crate::sip::uri::{escape_param_into, push_decimal, push_hex, push_ip, unescape_param};
use crate::sip::Transport;
use std::net::SocketAddr;

/// The URI parameter name.
pub const PARAM: &str = "rbt";

/// The key of Roundabout's MACs (contact tokens, client tokens, branches): HMAC-SHA256,
/// truncated to 64 bits. Random per process, or read from `-token-key-file` so that tokens
/// stay valid across restarts and between instances behind one name. Clones share it (all
/// Router shards must accept each other's tokens).
#[derive(Clone)]
pub struct TokenKey(std::sync::Arc<ring::hmac::Key>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl Default for TokenKey {
    /// A fresh random key.
    fn default() -> Self {
        TokenKey::from_secret(&random_secret())
    }
}

/// Bytes of secret in a key file (written as hex).
const SECRET_LEN: usize = 32;

fn random_secret() -> [u8; SECRET_LEN] {
    use ring::rand::SecureRandom;
    let mut secret = [0u8; SECRET_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .expect("the system's random source works");
    secret
}

/// Why `-token-key-file` could not be used.
#[derive(Debug)]
pub enum KeyFileError {
    Read(std::path::PathBuf, std::io::Error),
    Create(std::path::PathBuf, std::io::Error),
    /// The file holds no 64 hex digits (32 bytes).
    Format(std::path::PathBuf),
}

impl std::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyFileError::Read(p, e) => write!(f, "cannot read -token-key-file {}: {e}", p.display()),
            KeyFileError::Create(p, e) => write!(
                f,
                "cannot create -token-key-file {}: {e} (check the directory exists and is writable)",
                p.display()
            ),
            KeyFileError::Format(p) => write!(
                f,
                "-token-key-file {} must hold 64 hex digits (delete it to have a new key made)",
                p.display()
            ),
        }
    }
}

impl TokenKey {
    pub fn from_secret(secret: &[u8]) -> TokenKey {
        TokenKey(std::sync::Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            secret,
        )))
    }

    /// Reads the key from `path`, or makes a random one and writes it there (mode 0600)
    /// when the file does not exist.
    pub fn load_or_create(path: &std::path::Path) -> Result<TokenKey, KeyFileError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let hex = text.trim();
                let bytes: Option<Vec<u8>> = (hex.len() == 2 * SECRET_LEN)
                    .then(|| {
                        (0..SECRET_LEN)
                            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                            .collect()
                    })
                    .flatten();
                let bytes = bytes.ok_or_else(|| KeyFileError::Format(path.into()))?;
                Ok(TokenKey::from_secret(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let secret = random_secret();
                let mut hex = String::with_capacity(2 * SECRET_LEN + 1);
                for b in secret {
                    push_hex_byte(&mut hex, b);
                }
                hex.push('\n');
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .and_then(|mut f| f.write_all(hex.as_bytes()))
                    .map_err(|e| KeyFileError::Create(path.into(), e))?;
                Ok(TokenKey::from_secret(&secret))
            }
            Err(e) => Err(KeyFileError::Read(path.into(), e)),
        }
    }

    /// HMAC-SHA256 over the parts (each length-prefixed, so no two lists collide),
    /// truncated to 64 bits.
    pub fn mac64(&self, parts: &[&[u8]]) -> u64 {
        let mut input = Vec::with_capacity(parts.iter().map(|p| 4 + p.len()).sum());
        for p in parts {
            push_part(&mut input, p);
        }
        self.mac64_of(&input)
    }

    /// The MAC of input already laid out by [`push_part`]: one `sign` over one buffer
    /// (feeding a dozen small parts to an HMAC context one by one cost more than the hash).
    fn mac64_of(&self, input: &[u8]) -> u64 {
        let tag = ring::hmac::sign(&self.0, input);
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_be_bytes(first)
    }

    /// The whole 256-bit HMAC of `parts` (for callers that cut several values from one).
    pub fn mac256(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut input = Vec::with_capacity(parts.iter().map(|p| 4 + p.len()).sum());
        for p in parts {
            push_part(&mut input, p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::hmac::sign(&self.0, &input).as_ref());
        out
    }
}

/// One MAC input part: its length (32-bit big-endian), then its bytes.
fn push_part(input: &mut Vec<u8>, part: &[u8]) {
    input.extend_from_slice(&(part.len() as u32).to_be_bytes());
    input.extend_from_slice(part);
}

fn push_hex_byte(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
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

/// A Router shard's contact tokens: the shared [`TokenKey`] and a memo of the MACs the shard
/// has computed. One dialog needs the same MAC several times (the callee's Contact in the 180
/// and the 200, each token again when the ACK, re-INVITEs and the BYE come back to it), and
/// a phone keeps its Contact from call to call, so most look-ups find it here: a hash of
/// about 100 bytes instead of an HMAC-SHA256. The memo maps exact MAC inputs to the MACs
/// the key gave for them, so a hit returns what the key would; it is bounded (cleared when
/// full) and hashed with std's randomly keyed SipHash, since its keys come from senders.
#[derive(Debug)]
pub struct ContactTokens {
    key: TokenKey,
    memo: std::cell::RefCell<MacMemo>,
}

#[derive(Debug, Default)]
struct MacMemo {
    macs: std::collections::HashMap<Box<[u8]>, u64>,
    /// The input of the MAC being looked up, reused (no allocation on a hit).
    scratch: Vec<u8>,
}

/// Entries kept per shard (each about 100-200 bytes with the map's own overhead).
const MEMO_ENTRIES: usize = 2048;

impl ContactTokens {
    pub fn new(key: TokenKey) -> ContactTokens {
        ContactTokens {
            key,
            memo: Default::default(),
        }
    }

    /// The key, for the MACs that are not contact tokens (client tokens).
    pub fn key(&self) -> &TokenKey {
        &self.key
    }

    fn mac(&self, t: Transport, addr: &SocketAddr, flow: FlowId, uri: &str) -> u64 {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        let mut memo = self.memo.borrow_mut();
        let MacMemo { macs, scratch } = &mut *memo;
        scratch.clear();
        for part in [
            b"contact".as_slice(),
            t.name().as_bytes(),
            &ip,
            &addr.port().to_be_bytes(),
            &flow.0.to_be_bytes(),
            uri.as_bytes(),
        ] {
            push_part(scratch, part);
        }
        if let Some(&mac) = macs.get(scratch.as_slice()) {
            return mac;
        }
        let mac = self.key.mac64_of(scratch);
        if macs.len() >= MEMO_ENTRIES {
            macs.clear();
        }
        macs.insert(scratch.as_slice().into(), mac);
        mac
    }

    pub fn encode(&self, source: &Source, original_uri: &str) -> String {
        let mut out = String::new();
        self.encode_into(&mut out, source, original_uri);
        out
    }

    /// [`ContactTokens::encode`] appended to `out`. Written piece by piece into one buffer
    /// sized up front: `format!` grew its string several times per token (and
    /// `escape_param` allocated its own), which showed up as realloc on every rewritten
    /// Contact.
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

    /// `None` for anything not made with this key (bad form or MAC).
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
        let key = ContactTokens::new(TokenKey::default());
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
    fn key_files_are_made_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("rb-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token.key");
        let made = ContactTokens::new(TokenKey::load_or_create(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = ContactTokens::new(TokenKey::load_or_create(&path).unwrap());
        let tok = made.encode(&src(), "sip:a@b");
        assert!(again.decode(&tok).is_some(), "same key after a restart");
        assert!(ContactTokens::new(TokenKey::default())
            .decode(&tok)
            .is_none());
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            TokenKey::load_or_create(&path),
            Err(KeyFileError::Format(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mac_parts_are_length_prefixed() {
        let key = TokenKey::from_secret(b"k");
        assert_ne!(key.mac64(&[b"ab", b"c"]), key.mac64(&[b"a", b"bc"]));
        assert_eq!(
            key.mac64(&[b"ab"]),
            TokenKey::from_secret(b"k").mac64(&[b"ab"])
        );
    }

    #[test]
    fn forged_or_foreign_tokens_are_refused() {
        let key = ContactTokens::new(TokenKey::default());
        let tok = key.encode(&src(), "sip:a@b");
        let other = ContactTokens::new(TokenKey::default());
        assert!(other.decode(&tok).is_none(), "other process");
        let forged = tok.replacen("50123", "5060", 1);
        assert!(key.decode(&forged).is_none());
        assert!(key.decode("garbage").is_none());
        assert!(key.decode("udp~1.2.3.4~5060~0~zz~sip:a").is_none());
        // Forged after the genuine one is in the memo: the memo holds inputs, not tokens.
        let genuine_mac_other_uri = format!("{}~sip:b@b", &tok[..tok.rfind('~').unwrap()]);
        assert!(key.decode(&genuine_mac_other_uri).is_none());
    }

    #[test]
    fn memo_gives_the_key_s_macs_and_stays_bounded() {
        let secret = b"a fixed test secret";
        let memo = ContactTokens::new(TokenKey::from_secret(secret));
        let fresh = || ContactTokens::new(TokenKey::from_secret(secret));
        for i in 0..(MEMO_ENTRIES + 10) {
            let uri = format!("sip:u{i}@example.com");
            // the same token from the memo (twice) as from a shard that never saw it
            let first = memo.encode(&src(), &uri);
            assert_eq!(memo.encode(&src(), &uri), first);
            assert_eq!(fresh().encode(&src(), &uri), first);
            assert!(memo.memo.borrow().macs.len() <= MEMO_ENTRIES);
        }
    }

    #[test]
    fn one_buffer_mac_equals_the_part_by_part_hmac() {
        // Tokens written before the MAC input became one buffer must still verify.
        let key = TokenKey::from_secret(b"k");
        let mut ctx = ring::hmac::Context::with_key(&key.0);
        for p in [b"ab".as_slice(), b"c"] {
            ctx.update(&(p.len() as u32).to_be_bytes());
            ctx.update(p);
        }
        let old = u64::from_be_bytes(ctx.sign().as_ref()[..8].try_into().unwrap());
        assert_eq!(key.mac64(&[b"ab", b"c"]), old);
        assert_eq!(key.mac256(&[b"ab", b"c"])[..8], old.to_be_bytes());
    }
}
