//! CSR mode: build a PKCS#10 Certificate Signing Request for Roundabout's TLS key.
//!
//! `roundabout -csr ...` runs once and exits. It reads the private key named by `-tls-key`,
//! puts the subject fields (`-csr-c`, `-csr-cn`, ...) and the subject alternative names
//! (`-csr-san`) into a request, signs it with that key and returns the PEM text
//! ([`build_csr_pem`]). A CA turns the request into the certificate given to `-tls-cert`.
//!
//! Supported keys are RSA and ECDSA P-256/P-384, as written by openssl in any of its usual
//! formats: PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`) and SEC1
//! (`BEGIN EC PRIVATE KEY`). rcgen with its ring backend loads PKCS#8 only, so this module
//! carries a small PEM reader and DER reader/writer that rewrap PKCS#1 and SEC1 keys into
//! PKCS#8, byte for byte as `openssl pkcs8 -topk8 -nocrypt` does.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::string::{Ia5String, PrintableString};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, SanType, SignatureAlgorithm,
};

/// What goes into the request: the `-csr-*` flags and the `-tls-key` path.
///
/// Subject fields that are `None` or blank are left out. Each `sans` entry may itself hold
/// several comma-separated names; each name becomes an IP SAN if it parses as an IP address
/// (IPv6 optionally in brackets) and a DNS SAN otherwise.
pub struct CsrRequest {
    pub country: Option<String>,
    pub common_name: Option<String>,
    pub locality: Option<String>,
    pub organization: Option<String>,
    pub organizational_unit: Option<String>,
    pub province: Option<String>,
    pub sans: Vec<String>,
    pub key_path: PathBuf,
}

/// Why no CSR could be built. The messages name the input at fault and say how to fix it.
#[derive(Debug)]
pub enum CsrError {
    /// The key file does not exist.
    KeyMissing { path: PathBuf },
    /// The key file exists but could not be read.
    KeyUnreadable { path: PathBuf, source: io::Error },
    /// The key file is not PEM text, or a PEM block in it is damaged.
    NotPem { path: PathBuf, reason: String },
    /// The file is PEM but holds no private key (only a certificate, say).
    NoPrivateKey { path: PathBuf, found: Vec<String> },
    /// The private key is protected by a passphrase.
    EncryptedKey { path: PathBuf },
    /// The key is of a type a CSR cannot be signed with here (Ed25519, DSA, P-521, ...).
    UnsupportedKey { path: PathBuf, key_type: String },
    /// The key is of a supported type but its contents are damaged or were refused.
    InvalidKey { path: PathBuf, reason: String },
    /// The country is not a two-letter code.
    InvalidCountry { value: String },
    /// A SAN entry is neither an IP address nor a DNS name.
    InvalidSan { value: String },
    /// Neither a subject field nor a SAN was given.
    EmptyRequest,
    /// rcgen failed to encode or sign the request.
    Signing(rcgen::Error),
}

impl fmt::Display for CsrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CsrError::KeyMissing { path } => write!(
                f,
                "TLS key file {} does not exist. Point -tls-key at the key the certificate \
                 is for, or {}",
                path.display(),
                new_key_hint(&shell_quote(&path.display().to_string()))
            ),
            CsrError::KeyUnreadable { path, source } => write!(
                f,
                "cannot read TLS key file {}: {source}. Check that it is a regular file this \
                 user may read",
                path.display()
            ),
            CsrError::NotPem { path, reason } => write!(
                f,
                "TLS key file {} is not a usable PEM key file ({reason}). A DER key can be \
                 converted with `openssl pkey -inform DER -in {} -out key.pem`; or {}",
                path.display(),
                shell_quote(&path.display().to_string()),
                new_key_hint("key.pem")
            ),
            CsrError::NoPrivateKey { path, found } => write!(
                f,
                "TLS key file {} holds no private key, only: {}. -tls-key must name the \
                 private key, not the certificate; or {}",
                path.display(),
                found.join(", "),
                new_key_hint("key.pem")
            ),
            CsrError::EncryptedKey { path } => write!(
                f,
                "TLS key file {} is protected by a passphrase, which Roundabout cannot use. \
                 Write an unencrypted copy with `openssl pkey -in {} -out key.pem` (it asks \
                 for the passphrase), keep it readable only by Roundabout's user and pass it \
                 with -tls-key",
                path.display(),
                shell_quote(&path.display().to_string())
            ),
            CsrError::UnsupportedKey { path, key_type } => write!(
                f,
                "TLS key file {} holds a key of type {key_type}; Roundabout signs CSRs with \
                 RSA and ECDSA P-256/P-384 keys only. {}",
                path.display(),
                capitalized(&new_key_hint("key.pem"))
            ),
            CsrError::InvalidKey { path, reason } => write!(
                f,
                "TLS key file {} could not be loaded: {reason}. {}",
                path.display(),
                capitalized(&new_key_hint("key.pem"))
            ),
            CsrError::InvalidCountry { value } => write!(
                f,
                "the country (-csr-c) must be a two-letter ISO 3166 code such as US, not \
                 '{value}'"
            ),
            CsrError::InvalidSan { value } => write!(
                f,
                "the subject alternative name (-csr-san) '{value}' is neither an IP address \
                 nor a DNS name (letters, digits, '-' and '.', optionally starting with '*.'); \
                 separate several names with commas"
            ),
            CsrError::EmptyRequest => write!(
                f,
                "the CSR would name nothing: give at least a common name (-csr-cn) or a \
                 subject alternative name (-csr-san)"
            ),
            CsrError::Signing(e) => write!(f, "could not build the CSR: {e}"),
        }
    }
}

impl std::error::Error for CsrError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CsrError::KeyUnreadable { source, .. } => Some(source),
            CsrError::Signing(e) => Some(e),
            _ => None,
        }
    }
}

/// Builds the CSR described by `req`, signed with the key at `req.key_path`, as PEM text
/// (`-----BEGIN CERTIFICATE REQUEST-----`).
///
/// The subject is written in the order C, ST, L, O, OU, CN. RSA keys sign with SHA-256,
/// P-256 keys with ECDSA-SHA256 and P-384 keys with ECDSA-SHA384.
pub fn build_csr_pem(req: &CsrRequest) -> Result<String, CsrError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(req)?;
    params.subject_alt_names = subject_alt_names(&req.sans)?;
    if params.distinguished_name.iter().next().is_none() && params.subject_alt_names.is_empty() {
        return Err(CsrError::EmptyRequest);
    }
    let key = load_key(&req.key_path)?;
    let csr = params.serialize_request(&key).map_err(CsrError::Signing)?;
    csr.pem().map_err(CsrError::Signing)
}

fn new_key_hint(out: &str) -> String {
    format!(
        "create a usable key with `openssl genpkey -algorithm EC -pkeyopt \
         ec_paramgen_curve:P-256 -out {out}` (ECDSA P-256) or `openssl genrsa -out {out} 2048` \
         (RSA)"
    )
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Quotes `s` for a POSIX shell when it holds anything beyond plain path characters.
fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@,=%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn subject(req: &CsrRequest) -> Result<DistinguishedName, CsrError> {
    let mut dn = DistinguishedName::new();
    if let Some(country) = present(&req.country) {
        let bad = || CsrError::InvalidCountry {
            value: country.to_owned(),
        };
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(bad());
        }
        // RFC 5280 wants countryName as a PrintableString.
        let code = PrintableString::try_from(country.to_ascii_uppercase()).map_err(|_| bad())?;
        dn.push(DnType::CountryName, DnValue::PrintableString(code));
    }
    let fields = [
        (DnType::StateOrProvinceName, &req.province),
        (DnType::LocalityName, &req.locality),
        (DnType::OrganizationName, &req.organization),
        (DnType::OrganizationalUnitName, &req.organizational_unit),
        (DnType::CommonName, &req.common_name),
    ];
    for (ty, value) in fields {
        if let Some(value) = present(value) {
            dn.push(ty, value);
        }
    }
    Ok(dn)
}

fn subject_alt_names(entries: &[String]) -> Result<Vec<SanType>, CsrError> {
    entries
        .iter()
        .flat_map(|entry| entry.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(subject_alt_name)
        .collect()
}

fn subject_alt_name(name: &str) -> Result<SanType, CsrError> {
    let unbracketed = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if is_dns_name(name) {
        if let Ok(dns) = Ia5String::try_from(name) {
            return Ok(SanType::DnsName(dns));
        }
    }
    Err(CsrError::InvalidSan {
        value: name.to_owned(),
    })
}

/// A host name as certificates carry it: LDH labels, optionally a leading `*.` wildcard, and
/// not ending in an all-digit label (that would be a mistyped IP address).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    name.len() <= 253
        && name.split('.').all(label_ok)
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|top| top.bytes().all(|b| b.is_ascii_digit()))
}

/// Loads the private key at `path` as [`build_csr_pem`] does (PEM: PKCS#8, PKCS#1 or SEC1;
/// RSA or ECDSA P-256/P-384). The TLS listeners use it too: `KeyPair::serialize_pem` gives the
/// key as PKCS#8, the only form native-tls reads.
pub fn load_private_key(path: &Path) -> Result<KeyPair, CsrError> {
    load_key(path)
}

fn load_key(path: &Path) -> Result<KeyPair, CsrError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CsrError::KeyMissing {
            path: path.to_owned(),
        },
        _ => CsrError::KeyUnreadable {
            path: path.to_owned(),
            source,
        },
    })?;
    let not_pem = |reason: String| CsrError::NotPem {
        path: path.to_owned(),
        reason,
    };
    let blocks = pem::parse(&String::from_utf8_lossy(&bytes)).map_err(not_pem)?;
    if blocks.is_empty() {
        return Err(not_pem("no '-----BEGIN ...-----' line".to_owned()));
    }
    let Some(block) = blocks.iter().find(|b| b.label.ends_with("PRIVATE KEY")) else {
        return Err(CsrError::NoPrivateKey {
            path: path.to_owned(),
            found: blocks.into_iter().map(|b| b.label).collect(),
        });
    };
    if block.encrypted || block.label == "ENCRYPTED PRIVATE KEY" {
        return Err(CsrError::EncryptedKey {
            path: path.to_owned(),
        });
    }
    let (kind, pkcs8) = to_pkcs8(&block.label, &block.der).map_err(|problem| match problem {
        KeyProblem::Unsupported(key_type) => CsrError::UnsupportedKey {
            path: path.to_owned(),
            key_type,
        },
        KeyProblem::Malformed(reason) => CsrError::InvalidKey {
            path: path.to_owned(),
            reason,
        },
    })?;
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_slice().into(), kind.signature_algorithm())
        .map_err(|e| CsrError::InvalidKey {
            path: path.to_owned(),
            reason: match kind {
                KeyKind::Rsa => format!("{e} (RSA keys must have 2048 to 8192 bits)"),
                _ => e.to_string(),
            },
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcdsaP256,
    EcdsaP384,
}

impl KeyKind {
    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyKind::Rsa => &rcgen::PKCS_RSA_SHA256,
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }

    fn from_curve(curve: &[u8]) -> Result<Self, KeyProblem> {
        match curve {
            oid::P256 => Ok(KeyKind::EcdsaP256),
            oid::P384 => Ok(KeyKind::EcdsaP384),
            oid::P521 => Err(KeyProblem::Unsupported("ECDSA P-521".to_owned())),
            other => Err(KeyProblem::Unsupported(format!(
                "ECDSA on curve {}",
                der::oid_to_string(other)
            ))),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum KeyProblem {
    Unsupported(String),
    Malformed(String),
}

impl From<String> for KeyProblem {
    fn from(reason: String) -> Self {
        KeyProblem::Malformed(reason)
    }
}

/// DER contents of the object identifiers met in private keys.
mod oid {
    pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    pub const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
    pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    pub const DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];
    pub const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    pub const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    pub const P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
    pub const X25519: &[u8] = &[0x2b, 0x65, 0x6e];
    pub const X448: &[u8] = &[0x2b, 0x65, 0x6f];
    pub const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    pub const ED448: &[u8] = &[0x2b, 0x65, 0x71];
}

/// Turns the DER of a PEM block labelled `label` into PKCS#8 and tells what key it is.
fn to_pkcs8(label: &str, der: &[u8]) -> Result<(KeyKind, Vec<u8>), KeyProblem> {
    match label {
        "PRIVATE KEY" => Ok((pkcs8_kind(der)?, der.to_vec())),
        "RSA PRIVATE KEY" => Ok((KeyKind::Rsa, pkcs1_to_pkcs8(der)?)),
        "EC PRIVATE KEY" => sec1_to_pkcs8(der),
        "DSA PRIVATE KEY" => Err(KeyProblem::Unsupported("DSA".to_owned())),
        other => Err(KeyProblem::Unsupported(format!("'{other}'"))),
    }
}

/// Reads the algorithm of a PKCS#8 PrivateKeyInfo (RFC 5208) / OneAsymmetricKey (RFC 5958).
fn pkcs8_kind(pkcs8: &[u8]) -> Result<KeyKind, KeyProblem> {
    let mut info = der::Reader::new(der::single(pkcs8, der::SEQUENCE, "PKCS#8 key")?);
    let version = info.expect(der::INTEGER, "PKCS#8 version")?;
    if version != [0] && version != [1] {
        return Err(KeyProblem::Malformed(format!(
            "unknown PKCS#8 version {version:02x?}"
        )));
    }
    let mut algorithm = der::Reader::new(info.expect(der::SEQUENCE, "PKCS#8 algorithm")?);
    match algorithm.expect(der::OID, "PKCS#8 algorithm")? {
        oid::RSA_ENCRYPTION => Ok(KeyKind::Rsa),
        oid::EC_PUBLIC_KEY => match algorithm.read()? {
            curve if curve.tag == der::OID => KeyKind::from_curve(curve.contents),
            _ => Err(explicit_curve()),
        },
        other => Err(KeyProblem::Unsupported(algorithm_name(other))),
    }
}

fn algorithm_name(algorithm: &[u8]) -> String {
    match algorithm {
        oid::ED25519 => "Ed25519".to_owned(),
        oid::ED448 => "Ed448".to_owned(),
        oid::X25519 => "X25519".to_owned(),
        oid::X448 => "X448".to_owned(),
        oid::DSA => "DSA".to_owned(),
        oid::RSASSA_PSS => "RSA-PSS".to_owned(),
        other => format!("OID {}", der::oid_to_string(other)),
    }
}

fn explicit_curve() -> KeyProblem {
    KeyProblem::Unsupported("ECDSA with explicit curve parameters".to_owned())
}

/// PKCS#8 = SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING privateKey }.
fn wrap_pkcs8(algorithm_identifier: &[u8], private_key: &[u8]) -> Vec<u8> {
    der::encode(
        der::SEQUENCE,
        &[
            der::encode(der::INTEGER, &[0]),
            der::encode(der::SEQUENCE, algorithm_identifier),
            der::encode(der::OCTET_STRING, private_key),
        ]
        .concat(),
    )
}

/// Wraps a PKCS#1 RSAPrivateKey (RFC 8017) as PKCS#8 with algorithm rsaEncryption.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Result<Vec<u8>, KeyProblem> {
    let mut key = der::Reader::new(der::single(pkcs1, der::SEQUENCE, "RSA key")?);
    if key.expect(der::INTEGER, "RSA key version")? != [0] {
        return Err(KeyProblem::Unsupported("multi-prime RSA".to_owned()));
    }
    let algorithm = [
        der::encode(der::OID, oid::RSA_ENCRYPTION),
        der::encode(der::NULL, &[]),
    ]
    .concat();
    Ok(wrap_pkcs8(&algorithm, pkcs1))
}

/// Wraps a SEC1 ECPrivateKey (RFC 5915) as PKCS#8. The curve named in the key's `[0]`
/// parameters moves to the AlgorithmIdentifier and is dropped from the inner key, as
/// `openssl pkcs8 -topk8` does; the `[1]` public key stays.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<(KeyKind, Vec<u8>), KeyProblem> {
    let mut key = der::Reader::new(der::single(sec1, der::SEQUENCE, "EC key")?);
    if key.expect(der::INTEGER, "EC key version")? != [1] {
        return Err(KeyProblem::Malformed("unknown EC key version".to_owned()));
    }
    let private_key = key.expect(der::OCTET_STRING, "EC private key")?;
    let curve = match key.peek_tag() {
        Some(der::CONTEXT_0) => {
            let parameters = key.read()?.contents;
            der::single(parameters, der::OID, "EC curve").map_err(|_| explicit_curve())?
        }
        _ => {
            return Err(KeyProblem::Malformed(
                "the EC key does not name its curve".to_owned(),
            ))
        }
    };
    let kind = KeyKind::from_curve(curve)?;
    let public_key = match key.peek_tag() {
        Some(der::CONTEXT_1) => key.read()?.encoded,
        _ => {
            return Err(KeyProblem::Malformed(
                "the EC key does not include its public key".to_owned(),
            ))
        }
    };
    if !key.is_empty() {
        return Err(KeyProblem::Malformed(
            "unexpected data after the EC public key".to_owned(),
        ));
    }
    let inner = der::encode(
        der::SEQUENCE,
        &[
            der::encode(der::INTEGER, &[1]),
            der::encode(der::OCTET_STRING, private_key),
            public_key.to_vec(),
        ]
        .concat(),
    );
    let algorithm = [
        der::encode(der::OID, oid::EC_PUBLIC_KEY),
        der::encode(der::OID, curve),
    ]
    .concat();
    Ok((kind, wrap_pkcs8(&algorithm, &inner)))
}

/// Just enough DER (X.690) for private keys and certificates: single-byte tags, definite
/// lengths.
pub(crate) mod der {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    pub const CONTEXT_0: u8 = 0xa0;
    pub const CONTEXT_1: u8 = 0xa1;

    /// One tag-length-value element.
    pub struct Element<'a> {
        pub tag: u8,
        pub contents: &'a [u8],
        /// The whole element, tag and length included.
        pub encoded: &'a [u8],
    }

    /// Reads the elements of a DER sequence one after the other.
    pub struct Reader<'a> {
        rest: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub fn new(data: &'a [u8]) -> Self {
            Reader { rest: data }
        }

        pub fn is_empty(&self) -> bool {
            self.rest.is_empty()
        }

        pub fn peek_tag(&self) -> Option<u8> {
            self.rest.first().copied()
        }

        pub fn read(&mut self) -> Result<Element<'a>, String> {
            let truncated = || "malformed DER: truncated element".to_owned();
            let (&tag, after_tag) = self.rest.split_first().ok_or_else(truncated)?;
            if tag & 0x1f == 0x1f {
                return Err("malformed DER: multi-byte tag".to_owned());
            }
            let (&first, after_first) = after_tag.split_first().ok_or_else(truncated)?;
            let (len, after_len) = match first {
                0..=0x7f => (usize::from(first), after_first),
                0x80 => return Err("malformed DER: indefinite length".to_owned()),
                0x81..=0x84 => {
                    let n = usize::from(first & 0x7f);
                    if after_first.len() < n {
                        return Err(truncated());
                    }
                    let (len_bytes, after) = after_first.split_at(n);
                    let len = len_bytes
                        .iter()
                        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
                    (len, after)
                }
                _ => return Err("malformed DER: length too large".to_owned()),
            };
            if after_len.len() < len {
                return Err(truncated());
            }
            let header = self.rest.len() - after_len.len();
            let element = Element {
                tag,
                contents: &after_len[..len],
                encoded: &self.rest[..header + len],
            };
            self.rest = &after_len[len..];
            Ok(element)
        }

        /// Reads the next element, which must carry `tag`, and returns its contents.
        pub fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
            let element = self.read()?;
            if element.tag != tag {
                return Err(format!(
                    "malformed {what}: expected DER tag 0x{tag:02x}, found 0x{:02x}",
                    element.tag
                ));
            }
            Ok(element.contents)
        }
    }

    /// The contents of `data`, which must be exactly one element carrying `tag`.
    pub fn single<'a>(data: &'a [u8], tag: u8, what: &str) -> Result<&'a [u8], String> {
        let mut reader = Reader::new(data);
        let contents = reader.expect(tag, what)?;
        if !reader.is_empty() {
            return Err(format!("malformed {what}: trailing data"));
        }
        Ok(contents)
    }

    pub fn encode(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(contents.len() + 6);
        out.push(tag);
        let len = contents.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(contents);
        out
    }

    /// Dotted form of an OID's contents, for messages.
    pub fn oid_to_string(contents: &[u8]) -> String {
        let mut subids = Vec::new();
        let mut value: u64 = 0;
        for &b in contents {
            value = value.saturating_mul(128) | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                subids.push(value);
                value = 0;
            }
        }
        let Some((&first, rest)) = subids.split_first() else {
            return String::new();
        };
        let (a, b) = match first {
            0..=39 => (0, first),
            40..=79 => (1, first - 40),
            _ => (2, first - 80),
        };
        [a, b]
            .iter()
            .chain(rest)
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Just enough PEM (RFC 7468, plus RFC 1421 headers) for key and certificate files.
pub(crate) mod pem {
    #[derive(Debug)]
    pub struct Block {
        pub label: String,
        /// An RFC 1421 `Proc-Type: 4,ENCRYPTED` header was present.
        pub encrypted: bool,
        pub der: Vec<u8>,
    }

    /// All blocks in `text`, in order; text outside blocks is ignored.
    pub fn parse(text: &str) -> Result<Vec<Block>, String> {
        let mut blocks = Vec::new();
        let mut lines = text.lines().map(str::trim);
        while let Some(line) = lines.next() {
            let Some(label) = line
                .strip_prefix("-----BEGIN ")
                .and_then(|l| l.strip_suffix("-----"))
            else {
                continue;
            };
            let end = format!("-----END {label}-----");
            let mut body = String::new();
            let mut encrypted = false;
            let mut closed = false;
            for line in lines.by_ref() {
                if line == end {
                    closed = true;
                    break;
                }
                match line.split_once(':') {
                    Some((name, value)) => {
                        encrypted |= name.trim().eq_ignore_ascii_case("Proc-Type")
                            && value.contains("ENCRYPTED");
                    }
                    None => body.push_str(line),
                }
            }
            if !closed {
                return Err(format!("'-----BEGIN {label}-----' has no END line"));
            }
            let der = base64_decode(&body)
                .ok_or_else(|| format!("the {label} block is not valid base64"))?;
            blocks.push(Block {
                label: label.to_owned(),
                encrypted,
                der,
            });
        }
        Ok(blocks)
    }

    /// Standard base64 with `=` padding, no whitespace.
    pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
        let bytes = text.as_bytes();
        if bytes.len() % 4 != 0 {
            return None;
        }
        let quads = bytes.len() / 4;
        let mut out = Vec::with_capacity(quads * 3);
        for (i, quad) in bytes.chunks_exact(4).enumerate() {
            let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && i + 1 != quads) {
                return None;
            }
            let mut acc: u32 = 0;
            for &c in &quad[..4 - pad] {
                acc = (acc << 6) | u32::from(sextet(c)?);
            }
            acc <<= 6 * pad;
            out.extend_from_slice(&acc.to_be_bytes()[1..4 - pad]);
        }
        Some(out)
    }

    fn sextet(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Throwaway keys made with openssl for these tests; the `-pkcs8` files are
    /// `openssl pkcs8 -topk8 -nocrypt` of the matching PKCS#1 / SEC1 files.
    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/csr/",
                $name
            ))
        };
    }

    fn der_of(pem_text: &str) -> Vec<u8> {
        let blocks = pem::parse(pem_text).unwrap();
        blocks
            .into_iter()
            .find(|b| b.label.ends_with("PRIVATE KEY"))
            .unwrap()
            .der
    }

    fn fixture_path(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/csr")
            .join(name)
    }

    fn request(key_path: PathBuf) -> CsrRequest {
        CsrRequest {
            country: Some("US".into()),
            common_name: Some("proxya.example.com".into()),
            locality: None,
            organization: None,
            organizational_unit: None,
            province: None,
            sans: vec!["proxya.example.com,203.0.113.5".into()],
            key_path,
        }
    }

    /// A unique scratch file path, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn with(contents: &[u8]) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "roundabout-csr-unit-{}-{}.pem",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn der_length_forms_round_trip() {
        for len in [0usize, 1, 0x7f, 0x80, 0xff, 0x100, 0x1234, 0x10000] {
            let contents = vec![0xab; len];
            let encoded = der::encode(der::OCTET_STRING, &contents);
            let header: &[u8] = match len {
                0..=0x7f => &[len as u8],
                0x80..=0xff => &[0x81, len as u8],
                0x100..=0xffff => &[0x82, (len >> 8) as u8, len as u8],
                _ => &[0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8],
            };
            assert_eq!(&encoded[1..1 + header.len()], header, "length {len}");
            let mut reader = der::Reader::new(&encoded);
            let element = reader.read().unwrap();
            assert_eq!(element.tag, der::OCTET_STRING);
            assert_eq!(element.contents, &contents[..]);
            assert_eq!(element.encoded, &encoded[..]);
            assert!(reader.is_empty());
        }
    }

    #[test]
    fn der_reader_rejects_bad_input() {
        let read = |bytes: &[u8]| der::Reader::new(bytes).read().map(|e| e.contents.to_vec());
        assert!(read(&[]).is_err());
        assert!(read(&[0x04]).is_err());
        assert!(read(&[0x04, 0x03, 1, 2]).unwrap_err().contains("truncated"));
        assert!(read(&[0x30, 0x80, 0, 0])
            .unwrap_err()
            .contains("indefinite"));
        assert!(read(&[0x04, 0x82, 0x01]).unwrap_err().contains("truncated"));
        assert!(read(&[0x04, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(read(&[0x1f, 0x01, 0x00])
            .unwrap_err()
            .contains("multi-byte"));
        assert!(
            der::single(&[0x04, 0x01, 7, 0x05, 0x00], der::OCTET_STRING, "x")
                .unwrap_err()
                .contains("trailing")
        );
        assert!(der::single(&[0x05, 0x00], der::OCTET_STRING, "thing")
            .unwrap_err()
            .contains("malformed thing"));
        assert_eq!(
            der::single(&[0x04, 0x01, 7], der::OCTET_STRING, "x"),
            Ok(&[7u8][..])
        );
    }

    #[test]
    fn oid_to_string_decodes_arcs() {
        assert_eq!(
            der::oid_to_string(oid::RSA_ENCRYPTION),
            "1.2.840.113549.1.1.1"
        );
        assert_eq!(der::oid_to_string(oid::P256), "1.2.840.10045.3.1.7");
        assert_eq!(der::oid_to_string(oid::P384), "1.3.132.0.34");
        assert_eq!(der::oid_to_string(oid::ED25519), "1.3.101.112");
        assert_eq!(der::oid_to_string(&[0x88, 0x37, 0x03]), "2.999.3");
    }

    #[test]
    fn base64_decodes_padding_and_rejects_garbage() {
        assert_eq!(pem::base64_decode("").unwrap(), b"");
        assert_eq!(pem::base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(pem::base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(pem::base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(pem::base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(pem::base64_decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        for bad in ["Zm9", "Zg=a", "Z===", "Zg==Zm9v", "Zm9v!A==", "Zm 9v"] {
            assert!(pem::base64_decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn pem_parse_finds_blocks_headers_and_errors() {
        let text = "junk before\r\n-----BEGIN EC PARAMETERS-----\r\nBggqhkjOPQMBBw==\r\n\
                    -----END EC PARAMETERS-----\r\n-----BEGIN RSA PRIVATE KEY-----\n\
                    Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nZm9v\nYmFy\n\
                    -----END RSA PRIVATE KEY-----\n";
        let blocks = pem::parse(text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "EC PARAMETERS");
        assert!(!blocks[0].encrypted);
        assert_eq!(blocks[0].der, der::encode(der::OID, oid::P256));
        assert_eq!(blocks[1].label, "RSA PRIVATE KEY");
        assert!(blocks[1].encrypted);
        assert_eq!(blocks[1].der, b"foobar");

        assert!(pem::parse("no pem here").unwrap().is_empty());
        assert!(pem::parse("-----BEGIN X-----\nZm9v\n")
            .unwrap_err()
            .contains("no END"));
        assert!(pem::parse("-----BEGIN X-----\nZm9\n-----END X-----\n")
            .unwrap_err()
            .contains("base64"));
    }

    #[test]
    fn pkcs1_rsa_converts_exactly_like_openssl() {
        let pkcs1 = der_of(fixture!("rsa-pkcs1.pem"));
        let openssl_pkcs8 = der_of(fixture!("rsa-pkcs8.pem"));
        assert_eq!(pkcs1_to_pkcs8(&pkcs1).unwrap(), openssl_pkcs8);
        assert_eq!(
            to_pkcs8("RSA PRIVATE KEY", &pkcs1).unwrap(),
            (KeyKind::Rsa, openssl_pkcs8.clone())
        );
        assert_eq!(pkcs8_kind(&openssl_pkcs8), Ok(KeyKind::Rsa));
    }

    #[test]
    fn sec1_ec_converts_exactly_like_openssl() {
        for (sec1, pkcs8, kind) in [
            (
                fixture!("p256-sec1.pem"),
                fixture!("p256-pkcs8.pem"),
                KeyKind::EcdsaP256,
            ),
            (
                fixture!("p384-sec1.pem"),
                fixture!("p384-pkcs8.pem"),
                KeyKind::EcdsaP384,
            ),
        ] {
            let openssl_pkcs8 = der_of(pkcs8);
            assert_eq!(
                to_pkcs8("EC PRIVATE KEY", &der_of(sec1)).unwrap(),
                (kind, openssl_pkcs8.clone())
            );
            assert_eq!(to_pkcs8("PRIVATE KEY", &openssl_pkcs8).unwrap().0, kind);
        }
        // `openssl ecparam -genkey` without -noout puts EC PARAMETERS first.
        let with_params = der_of(fixture!("p256-sec1-with-params.pem"));
        assert_eq!(sec1_to_pkcs8(&with_params).unwrap().0, KeyKind::EcdsaP256);
    }

    #[test]
    fn unsupported_and_malformed_keys_are_told_apart() {
        assert_eq!(
            pkcs8_kind(&der_of(fixture!("ed25519-pkcs8.pem"))),
            Err(KeyProblem::Unsupported("Ed25519".into()))
        );
        assert_eq!(
            sec1_to_pkcs8(&der_of(fixture!("p521-sec1.pem"))),
            Err(KeyProblem::Unsupported("ECDSA P-521".into()))
        );
        assert_eq!(
            to_pkcs8("DSA PRIVATE KEY", &[]),
            Err(KeyProblem::Unsupported("DSA".into()))
        );
        // SEC1 with explicit parameters ([0] holds a SEQUENCE, not an OID).
        let explicit = der::encode(
            der::SEQUENCE,
            &[
                der::encode(der::INTEGER, &[1]),
                der::encode(der::OCTET_STRING, &[7; 32]),
                der::encode(der::CONTEXT_0, &der::encode(der::SEQUENCE, &[])),
            ]
            .concat(),
        );
        assert_eq!(sec1_to_pkcs8(&explicit), Err(explicit_curve()));
        // SEC1 without curve or without public key.
        let bare = der::encode(
            der::SEQUENCE,
            &[
                der::encode(der::INTEGER, &[1]),
                der::encode(der::OCTET_STRING, &[7; 32]),
            ]
            .concat(),
        );
        assert!(
            matches!(sec1_to_pkcs8(&bare), Err(KeyProblem::Malformed(m)) if m.contains("curve"))
        );
        let no_public = der::encode(
            der::SEQUENCE,
            &[
                der::encode(der::INTEGER, &[1]),
                der::encode(der::OCTET_STRING, &[7; 32]),
                der::encode(der::CONTEXT_0, &der::encode(der::OID, oid::P256)),
            ]
            .concat(),
        );
        assert!(
            matches!(sec1_to_pkcs8(&no_public), Err(KeyProblem::Malformed(m)) if m.contains("public key"))
        );
        // Multi-prime RSA (version 1) and garbage.
        let multi_prime = der::encode(der::SEQUENCE, &der::encode(der::INTEGER, &[1]));
        assert_eq!(
            pkcs1_to_pkcs8(&multi_prime),
            Err(KeyProblem::Unsupported("multi-prime RSA".into()))
        );
        assert!(matches!(
            pkcs1_to_pkcs8(&[0x30, 0x05, 0x02]),
            Err(KeyProblem::Malformed(_))
        ));
        assert!(matches!(
            pkcs8_kind(&der::encode(der::SEQUENCE, &der::encode(der::INTEGER, &[2]))),
            Err(KeyProblem::Malformed(m)) if m.contains("version")
        ));
    }

    #[test]
    fn builds_csr_from_each_key_format() {
        for name in [
            "rsa-pkcs1.pem",
            "rsa-pkcs8.pem",
            "p256-sec1.pem",
            "p256-pkcs8.pem",
            "p256-sec1-with-params.pem",
            "p384-sec1.pem",
            "p384-pkcs8.pem",
        ] {
            let pem = build_csr_pem(&request(fixture_path(name))).unwrap();
            assert!(
                pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
                "{name}: {pem}"
            );
        }
    }

    #[test]
    fn key_errors_name_the_file_and_the_fix() {
        let missing = fixture_path("no-such-key.pem");
        let err = build_csr_pem(&request(missing.clone())).unwrap_err();
        assert!(matches!(err, CsrError::KeyMissing { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("openssl genrsa -out {} 2048", missing.display())),
            "{msg}"
        );

        let dir = build_csr_pem(&request(std::env::temp_dir())).unwrap_err();
        assert!(matches!(dir, CsrError::KeyUnreadable { .. }), "{dir:?}");

        let ed = fixture_path("ed25519-pkcs8.pem");
        let err = build_csr_pem(&request(ed.clone())).unwrap_err();
        assert!(
            matches!(&err, CsrError::UnsupportedKey { key_type, .. } if key_type == "Ed25519"),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&ed.display().to_string()), "{msg}");
        assert!(msg.contains("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"));

        let p521 = build_csr_pem(&request(fixture_path("p521-sec1.pem"))).unwrap_err();
        assert!(matches!(p521, CsrError::UnsupportedKey { .. }), "{p521:?}");

        let encrypted =
            build_csr_pem(&request(fixture_path("p256-encrypted-pkcs8.pem"))).unwrap_err();
        assert!(
            matches!(encrypted, CsrError::EncryptedKey { .. }),
            "{encrypted:?}"
        );
        assert!(encrypted.to_string().contains("openssl pkey -in"));

        let der_file = TempFile::with(&der_of(fixture!("p256-pkcs8.pem")));
        let err = build_csr_pem(&request(der_file.0.clone())).unwrap_err();
        assert!(matches!(err, CsrError::NotPem { .. }), "{err:?}");
        assert!(err.to_string().contains("openssl pkey -inform DER"));

        let cert_only =
            TempFile::with(b"-----BEGIN CERTIFICATE-----\nZm9v\n-----END CERTIFICATE-----\n");
        let err = build_csr_pem(&request(cert_only.0.clone())).unwrap_err();
        assert!(
            matches!(&err, CsrError::NoPrivateKey { found, .. } if found == &["CERTIFICATE"]),
            "{err:?}"
        );

        let damaged =
            TempFile::with(b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n");
        let err = build_csr_pem(&request(damaged.0.clone())).unwrap_err();
        assert!(matches!(err, CsrError::InvalidKey { .. }), "{err:?}");
    }

    #[test]
    fn subject_and_san_inputs_are_checked() {
        let key = fixture_path("p256-sec1.pem");
        let mut req = request(key.clone());
        req.country = Some("USA".into());
        assert!(matches!(
            build_csr_pem(&req),
            Err(CsrError::InvalidCountry { value }) if value == "USA"
        ));

        for bad in [
            "proxya.example.com:5060",
            "bad_name.example",
            "203.0.113.300",
            "ünï.example",
            "-a.example",
        ] {
            let mut req = request(key.clone());
            req.sans = vec![bad.into()];
            assert!(
                matches!(build_csr_pem(&req), Err(CsrError::InvalidSan { value }) if value == bad),
                "{bad}"
            );
        }

        let mut req = request(key.clone());
        req.country = Some(" ".into());
        req.common_name = None;
        req.sans = vec![",".into()];
        assert!(matches!(build_csr_pem(&req), Err(CsrError::EmptyRequest)));
    }

    #[test]
    fn subject_order_and_san_kinds() {
        let req = CsrRequest {
            country: Some("us".into()),
            common_name: Some("proxya.example.com".into()),
            locality: Some("Mountain View".into()),
            organization: Some("The Firm".into()),
            organizational_unit: Some("Development".into()),
            province: Some("California".into()),
            sans: vec![
                "proxya.example.com, 203.0.113.5".into(),
                "[2001:db8::5]".into(),
                "*.example.com".into(),
            ],
            key_path: PathBuf::new(),
        };
        let dn = subject(&req).unwrap();
        let order: Vec<_> = dn.iter().map(|(ty, _)| ty.clone()).collect();
        assert_eq!(
            order,
            [
                DnType::CountryName,
                DnType::StateOrProvinceName,
                DnType::LocalityName,
                DnType::OrganizationName,
                DnType::OrganizationalUnitName,
                DnType::CommonName
            ]
        );
        assert_eq!(
            dn.get(&DnType::CountryName),
            Some(&DnValue::PrintableString(
                PrintableString::try_from("US").unwrap()
            ))
        );
        assert_eq!(
            subject_alt_names(&req.sans).unwrap(),
            [
                SanType::DnsName(Ia5String::try_from("proxya.example.com").unwrap()),
                SanType::IpAddress("203.0.113.5".parse().unwrap()),
                SanType::IpAddress("2001:db8::5".parse().unwrap()),
                SanType::DnsName(Ia5String::try_from("*.example.com").unwrap()),
            ]
        );
    }

    #[test]
    fn shell_quote_leaves_plain_paths_alone() {
        assert_eq!(
            shell_quote("/etc/roundabout/key.pem"),
            "/etc/roundabout/key.pem"
        );
        assert_eq!(shell_quote("my key.pem"), "'my key.pem'");
        assert_eq!(shell_quote("it's.pem"), r"'it'\''s.pem'");
    }
}
