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
        let mut ctx = ring::hmac::Context::with_key(&self.0);
        for p in parts {
            ctx.update(&(p.len() as u32).to_be_bytes());
            ctx.update(p);
        }
        let tag = ctx.sign();
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_be_bytes(first)
    }
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

impl TokenKey {
    fn mac(&self, t: Transport, addr: &SocketAddr, flow: FlowId, uri: &str) -> u64 {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        self.mac64(&[
            b"contact",
            t.name().as_bytes(),
            &ip,
            &addr.port().to_be_bytes(),
            &flow.0.to_be_bytes(),
            uri.as_bytes(),
        ])
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
    fn key_files_are_made_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("rb-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token.key");
        let made = TokenKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = TokenKey::load_or_create(&path).unwrap();
        let tok = made.encode(&src(), "sip:a@b");
        assert!(again.decode(&tok).is_some(), "same key after a restart");
        assert!(TokenKey::default().decode(&tok).is_none());
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
        let key = TokenKey::default();
        let tok = key.encode(&src(), "sip:a@b");
        assert!(TokenKey::default().decode(&tok).is_none(), "other process");
        let forged = tok.replacen("50123", "5060", 1);
        assert!(key.decode(&forged).is_none());
        assert!(key.decode("garbage").is_none());
        assert!(key.decode("udp~1.2.3.4~5060~0~zz~sip:a").is_none());
    }
}
