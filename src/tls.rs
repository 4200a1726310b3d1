//! TLS settings, loaded once before any socket is bound: the identity the TLS and WSS
//! listeners present, and how outbound TLS/WSS connections check the servers.
//!
//! - Listeners: `-tls-cert` (PEM, the leaf first, then any intermediates, all sent) and
//!   `-tls-key` (RSA or ECDSA, PKCS#8, PKCS#1 or SEC1; read by [`crate::csr::load_private_key`]
//!   and handed to native-tls as PKCS#8). When neither flag is given and the default
//!   `cert.pem` does not exist, a throw-away self-signed certificate is made in memory with
//!   rcgen, and a warning says so. Files that were named (or exist) but do not load are a
//!   [`TlsError`]: the process exits 2 naming the file and the reason.
//! - Outbound: the system's roots, plus `-tls-ca`; `-tls-insecure` turns checks off. When
//!   `-tls-cert`/`-tls-key` are given, the same identity is offered as a client certificate
//!   (trunks such as Teams Direct Routing ask for one).
//!
//! TLS 1.2 is the oldest version offered on either side.
//!
//! On SIGHUP, [`reload_acceptor`] reads `-tls-cert`/`-tls-key` again and the new acceptor
//! goes into the listeners' [`SharedAcceptor`]: each accepted TLS or WSS connection takes the
//! acceptor current at its accept, so new handshakes present the new certificate while the
//! connections already up keep theirs and stay open. A pair that does not load leaves the
//! running one in place. [`reload_connector`] does the same for outbound connections (the
//! client certificate, `-tls-ca`, `-tls-insecure`) through the [`SharedConnector`].

use crate::config::Config;
use crate::csr::pem;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_native_tls::native_tls;

/// A TLS context replaceable while connections use it (SIGHUP).
#[derive(Clone)]
pub struct Swappable<T>(Arc<RwLock<T>>);

/// The acceptor of the TLS and WSS listeners.
pub type SharedAcceptor = Swappable<tokio_native_tls::TlsAcceptor>;

/// The context of outbound TLS and WSS connections.
pub type SharedConnector = Swappable<tokio_native_tls::TlsConnector>;

impl<T: Clone> Swappable<T> {
    pub fn new(context: T) -> Swappable<T> {
        Swappable(Arc::new(RwLock::new(context)))
    }

    /// The context for the connection made now (a cheap clone: it shares the context).
    pub fn current(&self) -> T {
        match self.0.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Later handshakes use `context`; connections already up are not touched.
    pub fn replace(&self, context: T) {
        match self.0.write() {
            Ok(mut a) => *a = context,
            Err(poisoned) => *poisoned.into_inner() = context,
        }
    }
}

/// What the connection actors need for TLS.
#[derive(Clone)]
pub struct TlsSettings {
    /// For the TLS and WSS listeners; `None` when both are off.
    pub acceptor: Option<SharedAcceptor>,
    /// For trusted servers with protocol tls or wss.
    pub connector: SharedConnector,
    /// Said at start-up (the self-signed certificate).
    pub warnings: Vec<String>,
}

/// Why the TLS settings cannot be used; each names the file at fault.
#[derive(Debug)]
pub enum TlsError {
    /// The certificate file cannot be read or holds no usable certificate.
    Cert { path: PathBuf, reason: String },
    /// The key file cannot be used (the message of [`crate::csr::CsrError`] says why).
    Key(crate::csr::CsrError),
    /// Both load, but native-tls refuses the pair (the key is not the certificate's, say).
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    /// The `-tls-ca` file cannot be read or holds no usable certificate.
    Ca { path: PathBuf, reason: String },
    /// Making the self-signed certificate or the TLS contexts failed.
    Other(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Cert { path, reason } => write!(
                f,
                "TLS certificate file {} cannot be used: {reason} (-tls-cert wants PEM: the \
                 certificate, then its intermediates)",
                path.display()
            ),
            TlsError::Key(e) => write!(f, "{e}"),
            TlsError::Pair { cert, key, reason } => write!(
                f,
                "TLS certificate {} and key {} do not work together: {reason} (is the key the \
                 one the certificate was issued for?)",
                cert.display(),
                key.display()
            ),
            TlsError::Ca { path, reason } => write!(
                f,
                "CA file {} (-tls-ca) cannot be used: {reason} (it wants PEM certificates)",
                path.display()
            ),
            TlsError::Other(reason) => write!(f, "TLS set-up failed: {reason}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// Loads (or makes) everything TLS needs for `config`. Call before binding sockets.
pub fn load(config: &Config) -> Result<TlsSettings, TlsError> {
    let listening = config.ports.tls != 0 || config.ports.wss != 0;
    let mut warnings = Vec::new();
    let files = if config.tls_files_explicit || config.tls_cert.exists() {
        Some(load_identity_files(&config.tls_cert, &config.tls_key)?)
    } else {
        None
    };
    let server_identity = match (&files, listening) {
        (Some(pair), _) => Some(pair.clone()),
        (None, true) => {
            let names = self_signed_names(config);
            warnings.push(format!(
                "no certificate: {} does not exist, so TLS and WSS present a throw-away self-signed \
                 certificate for {} made at start; clients must be told to accept it (a browser: \
                 open https://{}:{} once). Use -tls-cert and -tls-key for a real one",
                config.tls_cert.display(),
                names.join(", "),
                crate::proxy::rewrite::uri_host(config.local_ip),
                if config.ports.wss != 0 { config.ports.wss } else { config.ports.tls },
            ));
            Some(self_signed(&names)?)
        }
        (None, false) => None,
    };
    let acceptor = match (&server_identity, listening) {
        (Some(pair), true) => Some(SharedAcceptor::new(acceptor(
            pair,
            &config.tls_cert,
            &config.tls_key,
        )?)),
        _ => None,
    };
    let connector = SharedConnector::new(connector(
        files.as_ref(),
        config.tls_ca.as_deref(),
        config.tls_insecure,
    )?);
    Ok(TlsSettings {
        acceptor,
        connector,
        warnings,
    })
}

/// Reads `-tls-cert`/`-tls-key` of `config` again for the listeners (SIGHUP). `Ok(None)`
/// when there are no files to read (the throw-away self-signed certificate stays); an error
/// names the file at fault, and the caller keeps the running acceptor.
pub fn reload_acceptor(config: &Config) -> Result<Option<tokio_native_tls::TlsAcceptor>, TlsError> {
    if !(config.tls_files_explicit || config.tls_cert.exists()) {
        return Ok(None);
    }
    let pair = load_identity_files(&config.tls_cert, &config.tls_key)?;
    acceptor(&pair, &config.tls_cert, &config.tls_key).map(Some)
}

/// Makes the outbound context of `config` again (SIGHUP): the client certificate
/// (`-tls-cert`/`-tls-key`, offered when the files exist), `-tls-ca` and `-tls-insecure`.
pub fn reload_connector(config: &Config) -> Result<tokio_native_tls::TlsConnector, TlsError> {
    let files = if config.tls_files_explicit || config.tls_cert.exists() {
        Some(load_identity_files(&config.tls_cert, &config.tls_key)?)
    } else {
        None
    };
    connector(
        files.as_ref(),
        config.tls_ca.as_deref(),
        config.tls_insecure,
    )
}

/// A certificate chain and its key, both PEM (the key as PKCS#8).
#[derive(Clone)]
struct PemPair {
    chain: String,
    key: String,
}

impl PemPair {
    fn identity(&self) -> Result<native_tls::Identity, native_tls::Error> {
        native_tls::Identity::from_pkcs8(self.chain.as_bytes(), self.key.as_bytes())
    }
}

fn load_identity_files(cert: &Path, key: &Path) -> Result<PemPair, TlsError> {
    let chain = read_certificates(cert).map_err(|reason| TlsError::Cert {
        path: cert.to_owned(),
        reason,
    })?;
    let key_pair = crate::csr::load_private_key(key).map_err(TlsError::Key)?;
    // OpenSSL drops a key that does not match the certificate without a word, and every
    // handshake then fails: check here, where the message can name both files.
    let cert_key = certificate_public_key(&chain[0]).map_err(|reason| TlsError::Cert {
        path: cert.to_owned(),
        reason,
    })?;
    if cert_key != key_pair.public_key_raw() {
        return Err(TlsError::Pair {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: "the key is not the one of the (first) certificate".into(),
        });
    }
    let pair = PemPair {
        chain: chain.iter().map(|der| to_pem("CERTIFICATE", der)).collect(),
        key: key_pair.serialize_pem(),
    };
    acceptor(&pair, cert, key)?;
    Ok(pair)
}

fn acceptor(
    pair: &PemPair,
    cert: &Path,
    key: &Path,
) -> Result<tokio_native_tls::TlsAcceptor, TlsError> {
    let refused = |e: native_tls::Error| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    };
    let identity = pair.identity().map_err(refused)?;
    native_tls::TlsAcceptor::builder(identity)
        .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
        .build()
        .map(Into::into)
        .map_err(refused)
}

fn connector(
    client_identity: Option<&PemPair>,
    ca: Option<&Path>,
    insecure: bool,
) -> Result<tokio_native_tls::TlsConnector, TlsError> {
    let mut builder = native_tls::TlsConnector::builder();
    builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    if let Some(path) = ca {
        let ca_error = |reason: String| TlsError::Ca {
            path: path.to_owned(),
            reason,
        };
        for der in read_certificates(path).map_err(ca_error)? {
            let cert =
                native_tls::Certificate::from_der(&der).map_err(|e| ca_error(e.to_string()))?;
            builder.add_root_certificate(cert);
        }
    }
    if insecure {
        builder.danger_accept_invalid_certs(true);
        builder.danger_accept_invalid_hostnames(true);
    }
    if let Some(pair) = client_identity {
        let identity = pair
            .identity()
            .map_err(|e| TlsError::Other(e.to_string()))?;
        builder.identity(identity);
    }
    builder
        .build()
        .map(Into::into)
        .map_err(|e| TlsError::Other(format!("cannot make the TLS client context: {e}")))
}

/// The DER of every `CERTIFICATE` block of a PEM file, in order.
fn read_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "the file does not exist".to_string(),
        _ => format!("cannot read it: {e}"),
    })?;
    let blocks = pem::parse(&String::from_utf8_lossy(&bytes))?;
    let (certs, others): (Vec<_>, Vec<_>) =
        blocks.into_iter().partition(|b| b.label == "CERTIFICATE");
    if certs.is_empty() {
        return Err(if others.is_empty() {
            "it is not PEM (no '-----BEGIN CERTIFICATE-----' line)".to_string()
        } else {
            let labels: Vec<String> = others.into_iter().map(|b| b.label).collect();
            format!("it holds no certificate, only: {}", labels.join(", "))
        });
    }
    Ok(certs.into_iter().map(|b| b.der).collect())
}

/// The subjectPublicKey bits of an X.509 certificate (RFC 5280 4.1): the raw public key.
fn certificate_public_key(cert: &[u8]) -> Result<&[u8], String> {
    use crate::csr::der::{self, Reader};
    const BIT_STRING: u8 = 0x03;
    let malformed = |e: String| format!("the first certificate is malformed ({e})");
    let mut certificate =
        Reader::new(der::single(cert, der::SEQUENCE, "certificate").map_err(malformed)?);
    let mut tbs = Reader::new(
        certificate
            .expect(der::SEQUENCE, "TBSCertificate")
            .map_err(malformed)?,
    );
    if tbs.peek_tag() == Some(der::CONTEXT_0) {
        tbs.read().map_err(malformed)?; // version
    }
    for _ in ["serialNumber", "signature", "issuer", "validity", "subject"] {
        tbs.read().map_err(malformed)?;
    }
    let mut spki = Reader::new(
        tbs.expect(der::SEQUENCE, "subjectPublicKeyInfo")
            .map_err(malformed)?,
    );
    spki.expect(der::SEQUENCE, "algorithm").map_err(malformed)?;
    match spki
        .expect(BIT_STRING, "subjectPublicKey")
        .map_err(malformed)?
    {
        [0, key @ ..] => Ok(key),
        _ => Err(malformed("subjectPublicKey is not whole bytes".into())),
    }
}

/// The names a self-signed certificate is made for: the local IP, the bind IP when it is a
/// specific other one, the local FQDN, and `localhost`.
fn self_signed_names(config: &Config) -> Vec<String> {
    let mut names = vec![config.local_ip.to_string()];
    if !config.bind_ip.is_unspecified() && config.bind_ip != config.local_ip {
        names.push(config.bind_ip.to_string());
    }
    names.extend(config.local_fqdn.clone());
    names.push("localhost".to_string());
    names.dedup();
    names
}

fn self_signed(names: &[String]) -> Result<PemPair, TlsError> {
    let failed =
        |e: rcgen::Error| TlsError::Other(format!("cannot make a self-signed certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(failed)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "roundabout self-signed");
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok(PemPair {
        chain: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// PEM text of one DER object.
fn to_pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &str) -> Config {
        let argv: Vec<String> = args.split_whitespace().map(String::from).collect();
        match crate::config::flags::parse(&argv) {
            crate::config::flags::Parsed::Flags(f) => Config::from_flags(*f).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/csr")
            .join(name)
    }

    /// A directory of its own under the target dir, emptied first.
    fn scratch(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/tmp/tls-unit")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A self-signed certificate for the key in `key_file` (a fixture), written to `dir`.
    fn cert_for(key_file: &Path, dir: &Path) -> PathBuf {
        let key = crate::csr::load_private_key(key_file).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let path = dir.join("cert.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        path
    }

    #[test]
    fn pem_encoding_round_trips() {
        for len in 0..70 {
            let der: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            let blocks = pem::parse(&to_pem("CERTIFICATE", &der)).unwrap();
            assert_eq!(blocks.len(), 1);
            assert_eq!(blocks[0].der, der, "length {len}");
        }
    }

    #[test]
    fn loads_rsa_pkcs1_and_ecdsa_sec1_keys() {
        for key in ["rsa-pkcs1.pem", "p256-sec1.pem", "p384-pkcs8.pem"] {
            let dir = scratch(key);
            let cert = cert_for(&fixture(key), &dir);
            let c = config(&format!(
                "-tls-cert {} -tls-key {}",
                cert.display(),
                fixture(key).display()
            ));
            let settings = load(&c).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert!(settings.acceptor.is_some(), "{key}");
            assert!(
                settings.warnings.is_empty(),
                "{key}: {:?}",
                settings.warnings
            );
        }
    }

    #[test]
    fn explicit_files_that_do_not_load_name_the_file() {
        let dir = scratch("bad");
        let good_cert = cert_for(&fixture("p256-sec1.pem"), &dir);
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let missing = dir.join("missing.pem");
        let cases = [
            // (cert, key, words the message must hold)
            (
                missing.clone(),
                fixture("p256-sec1.pem"),
                vec!["missing.pem", "does not exist"],
            ),
            (
                garbage.clone(),
                fixture("p256-sec1.pem"),
                vec!["garbage.pem", "not PEM"],
            ),
            (
                fixture("p256-sec1.pem"),
                fixture("p256-sec1.pem"),
                vec!["p256-sec1.pem", "no certificate"],
            ),
            (
                good_cert.clone(),
                missing.clone(),
                vec!["missing.pem", "does not exist"],
            ),
            (
                good_cert.clone(),
                good_cert.clone(),
                vec!["cert.pem", "no private key"],
            ),
            (
                good_cert.clone(),
                fixture("rsa-pkcs1.pem"),
                vec!["cert.pem", "rsa-pkcs1.pem", "do not work together"],
            ),
            (
                good_cert.clone(),
                fixture("p384-sec1.pem"),
                vec!["cert.pem", "p384-sec1.pem", "do not work together"],
            ),
        ];
        for (cert, key, words) in cases {
            let c = config(&format!(
                "-tls-cert {} -tls-key {}",
                cert.display(),
                key.display()
            ));
            let e = match load(&c) {
                Ok(_) => panic!("{} + {} loaded", cert.display(), key.display()),
                Err(e) => e.to_string(),
            };
            for w in words {
                assert!(e.contains(w), "{w:?} not in: {e}");
            }
        }
    }

    #[test]
    fn missing_default_cert_gives_a_self_signed_one_with_a_warning() {
        let dir = scratch("default");
        let c =
            config("-local-ip 192.0.2.7 -local-fqdn proxy.example.com -wss-port 9443 -ws-port 0");
        let c = Config {
            tls_cert: dir.join("cert.pem"),
            tls_key: dir.join("key.pem"),
            ..c
        };
        let settings = load(&c).unwrap();
        assert!(settings.acceptor.is_some());
        let w = settings.warnings.join("\n");
        assert!(
            w.contains("self-signed") && w.contains("192.0.2.7") && w.contains("proxy.example.com"),
            "{w}"
        );
        assert!(w.contains("https://192.0.2.7:9443"), "{w}");
    }

    #[test]
    fn no_listener_no_identity() {
        let dir = scratch("off");
        let c = Config {
            tls_cert: dir.join("cert.pem"),
            tls_key: dir.join("key.pem"),
            ..config("-tls-port 0 -wss-port 0")
        };
        let settings = load(&c).unwrap();
        assert!(settings.acceptor.is_none());
        assert!(settings.warnings.is_empty());
    }

    #[test]
    fn ca_file_is_checked() {
        let dir = scratch("ca");
        let not_ca = dir.join("ca.pem");
        std::fs::write(&not_ca, "hello\n").unwrap();
        let c = Config {
            tls_cert: dir.join("cert.pem"),
            tls_key: dir.join("key.pem"),
            ..config(&format!(
                "-tls-port 0 -wss-port 0 -tls-ca {}",
                not_ca.display()
            ))
        };
        let e = load(&c)
            .err()
            .expect("a CA file without certificates is refused")
            .to_string();
        assert!(e.contains("ca.pem") && e.contains("-tls-ca"), "{e}");
        let elsewhere = dir.join("ca");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let cert = cert_for(&fixture("p256-sec1.pem"), &elsewhere);
        let c = Config {
            tls_ca: Some(cert),
            ..c
        };
        if let Err(e) = load(&c) {
            panic!("a CA file with a certificate: {e}");
        }
    }
}
