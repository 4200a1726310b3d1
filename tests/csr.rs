//! CSR mode against the real openssl: keys of every supported format are made with the
//! `openssl` command, turned into a CSR by `roundabout::csr::build_csr_pem`, and the CSR is
//! checked with `openssl req -verify -text`. openssl must be installed; without it these
//! tests fail rather than skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use roundabout::csr::{build_csr_pem, CsrError, CsrRequest};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "roundabout-csr-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `openssl` ({e}); install it (Debian package: openssl)")
        })
}

/// Runs openssl, requires success, returns stdout and stderr together.
fn openssl(args: &[&str]) -> String {
    let out = run_openssl(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl {args:?} failed:\n{text}");
    text
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn seed_request(key_path: PathBuf) -> CsrRequest {
    CsrRequest {
        country: Some("US".into()),
        common_name: Some("proxya.example.com".into()),
        locality: Some("Mountain View".into()),
        organization: Some("The Firm".into()),
        organizational_unit: Some("Development".into()),
        province: Some("California".into()),
        sans: vec!["proxya.example.com,203.0.113.5".into()],
        key_path,
    }
}

struct KeyCase {
    name: &'static str,
    /// openssl arguments, `-out <key>` is appended.
    generate: &'static [&'static str],
    pem_label: &'static str,
    key_text: &'static str,
    signature: &'static str,
}

const KEY_CASES: &[KeyCase] = &[
    KeyCase {
        name: "rsa-pkcs1",
        generate: &["genrsa", "-traditional", "2048"],
        pem_label: "-----BEGIN RSA PRIVATE KEY-----",
        key_text: "Public-Key: (2048 bit)",
        signature: "Signature Algorithm: sha256WithRSAEncryption",
    },
    KeyCase {
        name: "rsa-pkcs8",
        generate: &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        pem_label: "-----BEGIN PRIVATE KEY-----",
        key_text: "Public-Key: (2048 bit)",
        signature: "Signature Algorithm: sha256WithRSAEncryption",
    },
    KeyCase {
        name: "p256-sec1",
        generate: &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        pem_label: "-----BEGIN EC PRIVATE KEY-----",
        key_text: "ASN1 OID: prime256v1",
        signature: "Signature Algorithm: ecdsa-with-SHA256",
    },
    KeyCase {
        name: "p256-pkcs8",
        generate: &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        pem_label: "-----BEGIN PRIVATE KEY-----",
        key_text: "ASN1 OID: prime256v1",
        signature: "Signature Algorithm: ecdsa-with-SHA256",
    },
    KeyCase {
        name: "p384-sec1",
        generate: &["ecparam", "-name", "secp384r1", "-genkey", "-noout"],
        pem_label: "-----BEGIN EC PRIVATE KEY-----",
        key_text: "ASN1 OID: secp384r1",
        signature: "Signature Algorithm: ecdsa-with-SHA384",
    },
    KeyCase {
        name: "p384-pkcs8",
        generate: &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
        ],
        pem_label: "-----BEGIN PRIVATE KEY-----",
        key_text: "ASN1 OID: secp384r1",
        signature: "Signature Algorithm: ecdsa-with-SHA384",
    },
];

fn generate_key(dir: &TempDir, case: &KeyCase) -> PathBuf {
    let key = dir.join(&format!("{}.pem", case.name));
    let mut args = case.generate.to_vec();
    // genrsa takes the bit count last, after the options.
    let bits = (args[0] == "genrsa").then(|| args.pop().unwrap());
    args.extend(["-out", s(&key)]);
    args.extend(bits);
    openssl(&args);
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(
        text.contains(case.pem_label),
        "{}: openssl wrote the wrong key format:\n{text}",
        case.name
    );
    key
}

#[test]
fn csr_from_every_supported_key_format_verifies_with_openssl() {
    let dir = TempDir::new("formats");
    for case in KEY_CASES {
        let key = generate_key(&dir, case);
        let pem = build_csr_pem(&seed_request(key.clone()))
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let csr = dir.join(&format!("{}.csr", case.name));
        std::fs::write(&csr, &pem).unwrap();

        let text = openssl(&["req", "-verify", "-noout", "-text", "-in", s(&csr)]);
        let context = format!("{}:\n{text}", case.name);
        assert!(
            text.contains("verify OK") && !text.contains("verify failure"),
            "{context}"
        );
        let subject = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("Subject:"))
            .unwrap_or_else(|| panic!("no Subject line in {context}"));
        assert_eq!(
            subject,
            "Subject: C = US, ST = California, L = Mountain View, O = The Firm, \
             OU = Development, CN = proxya.example.com",
            "{context}"
        );
        let mut lines = text.lines().map(str::trim);
        lines
            .find(|l| *l == "X509v3 Subject Alternative Name:")
            .unwrap_or_else(|| panic!("no SAN extension in {context}"));
        assert_eq!(
            lines.next(),
            Some("DNS:proxya.example.com, IP Address:203.0.113.5"),
            "{context}"
        );
        assert!(text.contains(case.key_text), "{context}");
        assert!(text.contains(case.signature), "{context}");

        // The CSR carries the public half of exactly this key.
        let csr_public = openssl(&["req", "-noout", "-pubkey", "-in", s(&csr)]);
        let key_public = openssl(&["pkey", "-pubout", "-in", s(&key)]);
        assert_eq!(csr_public, key_public, "{}", case.name);

        // And the verification above has teeth: a flipped signature bit fails it.
        let der = dir.join(&format!("{}.csr.der", case.name));
        openssl(&["req", "-in", s(&csr), "-outform", "DER", "-out", s(&der)]);
        let mut bytes = std::fs::read(&der).unwrap();
        *bytes.last_mut().unwrap() ^= 0x01;
        std::fs::write(&der, &bytes).unwrap();
        let tampered = run_openssl(&["req", "-inform", "DER", "-verify", "-noout", "-in", s(&der)]);
        // openssl 3.0 exits 0 even when the self-signature check fails: read the text.
        let tampered_text = format!(
            "{}{}",
            String::from_utf8_lossy(&tampered.stdout),
            String::from_utf8_lossy(&tampered.stderr)
        );
        assert!(
            tampered_text.contains("verify failure") && !tampered_text.contains("verify OK"),
            "{}: tampered CSR verified:\n{tampered_text}",
            case.name
        );
    }
}

#[test]
fn csr_with_ipv6_and_several_san_entries() {
    let dir = TempDir::new("sans");
    let key = generate_key(&dir, &KEY_CASES[2]);
    let mut req = seed_request(key);
    req.sans = vec![
        "proxya.example.com".into(),
        "sip.example.com, 2001:db8::5".into(),
        "203.0.113.5".into(),
    ];
    let csr = dir.join("sans.csr");
    std::fs::write(&csr, build_csr_pem(&req).unwrap()).unwrap();
    let text = openssl(&["req", "-verify", "-noout", "-text", "-in", s(&csr)]);
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| *l == "X509v3 Subject Alternative Name:");
    assert_eq!(
        lines.next(),
        Some(
            "DNS:proxya.example.com, DNS:sip.example.com, IP Address:2001:DB8:0:0:0:0:0:5, \
             IP Address:203.0.113.5"
        ),
        "{text}"
    );
}

#[test]
fn ed25519_key_is_rejected_as_unsupported() {
    let dir = TempDir::new("ed25519");
    let key = dir.join("ed25519.pem");
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", s(&key)]);
    let err = build_csr_pem(&seed_request(key.clone())).unwrap_err();
    assert!(
        matches!(&err, CsrError::UnsupportedKey { key_type, .. } if key_type == "Ed25519"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(s(&key)), "{msg}");
    assert!(
        msg.contains("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out"),
        "{msg}"
    );
    assert!(msg.contains("openssl genrsa -out"), "{msg}");
}

#[test]
fn short_rsa_key_is_rejected_with_size_hint() {
    let dir = TempDir::new("rsa1024");
    let key = dir.join("rsa1024.pem");
    openssl(&["genrsa", "-out", s(&key), "1024"]);
    let err = build_csr_pem(&seed_request(key.clone())).unwrap_err();
    assert!(matches!(err, CsrError::InvalidKey { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(s(&key)) && msg.contains("2048"), "{msg}");
}

#[test]
fn missing_key_file_is_reported_with_the_command_to_make_one() {
    let dir = TempDir::new("missing");
    let key = dir.join("key.pem");
    let err = build_csr_pem(&seed_request(key.clone())).unwrap_err();
    assert!(matches!(err, CsrError::KeyMissing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(s(&key)), "{msg}");
    assert!(
        msg.contains(&format!(
            "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {}",
            s(&key)
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("openssl genrsa -out {} 2048", s(&key))),
        "{msg}"
    );
    // The command in the message really makes a key the CSR can be built with.
    common::openssl_p256_key(&key);
    assert!(build_csr_pem(&seed_request(key)).is_ok());
}
