//! STUN keep-alives on the SIP UDP port (RFC 5626 sections 4.4.2 and 8.4): a client behind a
//! NAT sends STUN Binding requests (RFC 5389) to the port it sends SIP to, both to keep its
//! NAT binding open and to learn whether its public address changed. Roundabout answers each
//! with a Binding success response carrying XOR-MAPPED-ADDRESS (the address the request came
//! from) and the request's transaction id, plus FINGERPRINT when the request had one.
//!
//! Only what a keep-alive responder needs is here: [`looks_like_stun`] tells a STUN message
//! from SIP on the same socket (RFC 7983: SIP begins with a letter, STUN with a byte of 0-3,
//! and STUN carries the magic cookie), and [`answer`] checks the message (RFC 5389 section
//! 7.3: header, length, attribute layout, FINGERPRINT) and builds the response. No
//! authentication (RFC 5626 keep-alives carry none); a request with an unknown
//! comprehension-required attribute gets `420 Unknown Attribute` (section 7.3.1); other STUN
//! messages (indications, responses, other methods) need no answer.
//!
//! Why not a crate: each STUN crate on crates.io brings crates this project does not have
//! (counted with `cargo tree` after a trial add): `stun_codec` 12, `stun-types` 13, `stun-rs`
//! 35, `webrtc-stun` 75 — HMAC, MD5, SHA-2 and CRC crates for MESSAGE-INTEGRITY and
//! FINGERPRINT, parser and error frameworks — for a responder of about a hundred lines on a
//! 2-core build machine. The one thing to compute, the CRC-32 of FINGERPRINT, is a table
//! below: no CRC crate (`crc32fast`, `crc`) is in the tree either. The unit tests check it,
//! and the encoder, against the test vectors of RFC 5769.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// RFC 5389 section 6: fixed in every message, right after type and length.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const HEADER_LEN: usize = 20;

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;

const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_UNKNOWN_ATTRIBUTES: u16 = 0x000A;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_FINGERPRINT: u16 = 0x8028;
/// RFC 5389 section 15.5: the CRC-32 is XORed with this ("STUN").
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Comprehension-required attributes (types below 0x8000) that Roundabout accepts in a
/// Binding request and ignores: those of RFC 5389 and RFC 8489 (MAPPED-ADDRESS, USERNAME,
/// MESSAGE-INTEGRITY, ERROR-CODE, UNKNOWN-ATTRIBUTES, REALM, NONCE,
/// MESSAGE-INTEGRITY-SHA256, PASSWORD-ALGORITHM, USERHASH, XOR-MAPPED-ADDRESS) and ICE's
/// PRIORITY and USE-CANDIDATE (RFC 8445). Any other gets a 420.
const KNOWN_REQUIRED: [u16; 13] = [
    0x0001, 0x0006, 0x0008, 0x0009, 0x000A, 0x0014, 0x0015, 0x001C, 0x001D, 0x001E, 0x0020, 0x0024,
    0x0025,
];

/// Whether a datagram is a STUN message rather than SIP: its first byte is 0-3 (the two top
/// bits of every STUN message are zero; RFC 7983 section 7 demultiplexes on 0-3) and the
/// magic cookie follows type and length. A SIP message begins with a letter.
pub fn looks_like_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN && datagram[0] < 4 && datagram[4..8] == MAGIC_COOKIE
}

/// Why a datagram that looks like STUN is not a valid STUN message (it is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunError {
    /// Not a STUN header: too short, top bits set, or no magic cookie.
    NotStun,
    /// The header's length is not a multiple of 4 or not what follows the header.
    BadLength { header: usize, datagram: usize },
    /// An attribute runs past the end of the message.
    Truncated,
    /// FINGERPRINT is not the last attribute, or its value does not match.
    BadFingerprint,
}

impl fmt::Display for StunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StunError::NotStun => write!(f, "not a STUN header"),
            StunError::BadLength { header, datagram } => write!(
                f,
                "message length {header} (a multiple of 4 is expected) with {datagram} bytes \
                 after the header"
            ),
            StunError::Truncated => write!(f, "an attribute runs past the end"),
            StunError::BadFingerprint => write!(f, "FINGERPRINT is wrong or not last"),
        }
    }
}

impl std::error::Error for StunError {}

/// A checked STUN message: its type, transaction id and attributes (type, value).
struct Message<'a> {
    kind: u16,
    transaction: &'a [u8],
    attributes: Vec<(u16, &'a [u8])>,
    fingerprint: bool,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// RFC 5389 section 7.3: header, length, attribute layout and FINGERPRINT (which, when
/// present, is last and covers everything before it).
fn parse(datagram: &[u8]) -> Result<Message<'_>, StunError> {
    if !looks_like_stun(datagram) {
        return Err(StunError::NotStun);
    }
    let length = usize::from(be16(&datagram[2..4]));
    let body = &datagram[HEADER_LEN..];
    if length % 4 != 0 || length != body.len() {
        return Err(StunError::BadLength {
            header: length,
            datagram: body.len(),
        });
    }
    let mut attributes = Vec::new();
    let mut fingerprint = false;
    let mut at = 0;
    while at < body.len() {
        if fingerprint {
            return Err(StunError::BadFingerprint);
        }
        let head = body.get(at..at + 4).ok_or(StunError::Truncated)?;
        let (kind, len) = (be16(&head[..2]), usize::from(be16(&head[2..])));
        let start = at + 4;
        let value = body.get(start..start + len).ok_or(StunError::Truncated)?;
        if kind == ATTR_FINGERPRINT {
            let covered = &datagram[..HEADER_LEN + at];
            if len != 4 || value != fingerprint_of(covered).to_be_bytes() {
                return Err(StunError::BadFingerprint);
            }
            fingerprint = true;
        }
        attributes.push((kind, value));
        // Values are padded to a multiple of 4 bytes.
        at = start + len.next_multiple_of(4);
        if at > body.len() {
            return Err(StunError::Truncated);
        }
    }
    Ok(Message {
        kind: be16(&datagram[..2]),
        transaction: &datagram[8..HEADER_LEN],
        attributes,
        fingerprint,
    })
}

/// The answer to a STUN message that came from `from`: `Ok(Some(response))` for a Binding
/// request (success, or 420 for an unknown comprehension-required attribute),
/// `Ok(None)` for a valid message that needs no answer (an indication, a response, another
/// method), `Err` for one that is not valid STUN (to be dropped). An IPv4-mapped `from`
/// (a dual-stack socket) is reported as the IPv4 address it is.
pub fn answer(datagram: &[u8], from: SocketAddr) -> Result<Option<Vec<u8>>, StunError> {
    let m = parse(datagram)?;
    if m.kind != BINDING_REQUEST {
        return Ok(None);
    }
    let unknown: Vec<u16> = m
        .attributes
        .iter()
        .map(|&(kind, _)| kind)
        .filter(|k| *k < 0x8000 && !KNOWN_REQUIRED.contains(k))
        .collect();
    let mut out = Vec::with_capacity(64);
    if unknown.is_empty() {
        header(&mut out, BINDING_SUCCESS, m.transaction);
        xor_mapped_address(&mut out, from, m.transaction);
    } else {
        header(&mut out, BINDING_ERROR, m.transaction);
        unknown_attribute_error(&mut out, &unknown);
    }
    if m.fingerprint {
        append_fingerprint(&mut out);
    } else {
        set_length(&mut out);
    }
    Ok(Some(out))
}

/// Type, length (set later), cookie and transaction id.
fn header(out: &mut Vec<u8>, kind: u16, transaction: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE);
    out.extend_from_slice(transaction);
}

/// One attribute, its value padded with zeros to a multiple of 4 bytes.
fn attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(value.len()).expect("attributes here are short");
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// RFC 5389 section 15.2: family, port XOR the cookie's top half, address XOR the cookie
/// (IPv4) or the cookie and the transaction id (IPv6).
fn xor_mapped_address(out: &mut Vec<u8>, from: SocketAddr, transaction: &[u8]) {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE);
    mask[4..].copy_from_slice(transaction);
    let port = from.port() ^ u16::from_be_bytes([MAGIC_COOKIE[0], MAGIC_COOKIE[1]]);
    let (family, address): (u8, Vec<u8>) = match from.ip().to_canonical() {
        IpAddr::V4(v4) => (0x01, v4.octets().to_vec()),
        IpAddr::V6(v6) => (0x02, v6.octets().to_vec()),
    };
    let mut value = vec![0, family];
    value.extend_from_slice(&port.to_be_bytes());
    value.extend(address.iter().zip(mask).map(|(a, m)| a ^ m));
    attribute(out, ATTR_XOR_MAPPED_ADDRESS, &value);
}

/// RFC 5389 sections 7.3.1, 15.6 and 15.9: ERROR-CODE 420 and the attributes not understood.
fn unknown_attribute_error(out: &mut Vec<u8>, unknown: &[u16]) {
    let mut code = vec![0, 0, 4, 20];
    code.extend_from_slice(b"Unknown Attribute");
    attribute(out, ATTR_ERROR_CODE, &code);
    let list: Vec<u8> = unknown.iter().flat_map(|k| k.to_be_bytes()).collect();
    attribute(out, ATTR_UNKNOWN_ATTRIBUTES, &list);
}

/// The header's length: everything after the header.
fn set_length(out: &mut [u8]) {
    let len = u16::try_from(out.len() - HEADER_LEN).expect("responses here are short");
    out[2..4].copy_from_slice(&len.to_be_bytes());
}

/// RFC 5389 section 15.5: the length counts FINGERPRINT, whose CRC covers all before it.
fn append_fingerprint(out: &mut Vec<u8>) {
    let len = u16::try_from(out.len() + 8 - HEADER_LEN).expect("responses here are short");
    out[2..4].copy_from_slice(&len.to_be_bytes());
    let fp = fingerprint_of(out);
    attribute(out, ATTR_FINGERPRINT, &fp.to_be_bytes());
}

fn fingerprint_of(covered: &[u8]) -> u32 {
    crc32(covered) ^ FINGERPRINT_XOR
}

/// CRC-32 of ISO 3309 / ITU-T V.42 (the one of Ethernet, zlib and PNG: reflected polynomial
/// 0xEDB88320), as RFC 5389 section 15.5 asks, one table lookup per byte.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut bit = 0;
            while bit < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                bit += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data
        .iter()
        .fold(!0u32, |c, &b| TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The transaction id of the test vectors of RFC 5769.
    const TX: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    /// RFC 5769 section 2.1: a Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED,
    /// USERNAME, MESSAGE-INTEGRITY and FINGERPRINT.
    const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];

    /// RFC 5769 section 2.2: the Binding success response for 192.0.2.1:32853, with
    /// SOFTWARE, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and FINGERPRINT.
    const RFC5769_IPV4_RESPONSE: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    /// RFC 5769 section 2.3: the same for [2001:db8:1234:5678:11:2233:4455:6677]:32853.
    const RFC5769_IPV6_RESPONSE: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01,
        0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9,
        0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb,
        0x0b, 0x4c,
    ];

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A Binding request (or any `kind`) with `attributes`, FINGERPRINT added when asked.
    fn request(kind: u16, attributes: &[(u16, &[u8])], fingerprint: bool) -> Vec<u8> {
        let mut out = Vec::new();
        header(&mut out, kind, &TX);
        for (k, v) in attributes {
            attribute(&mut out, *k, v);
        }
        if fingerprint {
            append_fingerprint(&mut out);
        } else {
            set_length(&mut out);
        }
        out
    }

    /// The attribute of `kind` in a response (which must itself be valid STUN).
    fn attribute_of(response: &[u8], kind: u16) -> Option<Vec<u8>> {
        let m = parse(response).expect("the response is valid STUN");
        m.attributes
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.to_vec())
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn rfc5769_fingerprints_match() {
        // Each vector ends with FINGERPRINT over all that comes before it.
        for v in [
            &RFC5769_REQUEST[..],
            &RFC5769_IPV4_RESPONSE[..],
            &RFC5769_IPV6_RESPONSE[..],
        ] {
            let (covered, fp) = v.split_at(v.len() - 8);
            assert_eq!(&fp[..4], &[0x80, 0x28, 0x00, 0x04]);
            assert_eq!(fingerprint_of(covered).to_be_bytes(), fp[4..]);
            assert!(parse(v).unwrap().fingerprint);
        }
    }

    #[test]
    fn rfc5769_xor_mapped_addresses() {
        for (vector, from, at) in [
            (&RFC5769_IPV4_RESPONSE[..], "192.0.2.1:32853", 36..48),
            (
                &RFC5769_IPV6_RESPONSE[..],
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
                36..60,
            ),
        ] {
            let mut out = Vec::new();
            xor_mapped_address(&mut out, addr(from), &TX);
            assert_eq!(out, vector[at], "{from}");
        }
    }

    #[test]
    fn rfc5769_request_is_answered() {
        let from = addr("192.0.2.1:32853");
        let response = answer(&RFC5769_REQUEST, from).unwrap().unwrap();
        // Header: Binding success, length 12 + 8, cookie, the request's transaction id.
        assert_eq!(&response[..4], &[0x01, 0x01, 0x00, 0x14]);
        assert_eq!(&response[4..8], &MAGIC_COOKIE);
        assert_eq!(&response[8..20], &TX);
        // XOR-MAPPED-ADDRESS exactly as in the RFC 5769 response for this address.
        assert_eq!(&response[20..32], &RFC5769_IPV4_RESPONSE[36..48]);
        // FINGERPRINT, because the request had one, and it checks.
        assert_eq!(response.len(), 40);
        assert!(parse(&response).unwrap().fingerprint);
    }

    #[test]
    fn plain_request_gets_plain_response() {
        let req = request(BINDING_REQUEST, &[], false);
        assert_eq!(req.len(), 20);
        assert!(looks_like_stun(&req));
        let from = addr("198.51.100.7:40000");
        let response = answer(&req, from).unwrap().unwrap();
        assert_eq!(response.len(), 32, "no FINGERPRINT unless asked");
        assert_eq!(&response[..4], &[0x01, 0x01, 0x00, 0x0c]);
        let m = parse(&response).unwrap();
        assert_eq!(m.transaction, TX);
        assert!(!m.fingerprint);
        let value = attribute_of(&response, ATTR_XOR_MAPPED_ADDRESS).unwrap();
        assert_eq!(decode_xor(&value), from);
    }

    /// XOR-MAPPED-ADDRESS back to an address (the inverse of the encoder, for the tests).
    fn decode_xor(value: &[u8]) -> SocketAddr {
        let mut mask = [0u8; 16];
        mask[..4].copy_from_slice(&MAGIC_COOKIE);
        mask[4..].copy_from_slice(&TX);
        let port = be16(&value[2..4]) ^ 0x2112;
        let bytes: Vec<u8> = value[4..].iter().zip(mask).map(|(v, m)| v ^ m).collect();
        let ip = match value[1] {
            1 => IpAddr::from(<[u8; 4]>::try_from(&bytes[..]).unwrap()),
            2 => IpAddr::from(<[u8; 16]>::try_from(&bytes[..]).unwrap()),
            f => panic!("family {f}"),
        };
        SocketAddr::new(ip, port)
    }

    #[test]
    fn ipv4_mapped_source_is_reported_as_ipv4() {
        let req = request(BINDING_REQUEST, &[], true);
        let response = answer(&req, addr("[::ffff:192.0.2.44]:5062"))
            .unwrap()
            .unwrap();
        let value = attribute_of(&response, ATTR_XOR_MAPPED_ADDRESS).unwrap();
        assert_eq!(value[1], 1, "IPv4 family");
        assert_eq!(decode_xor(&value), addr("192.0.2.44:5062"));
        let v6 = answer(&req, addr("[2001:db8::9]:5062")).unwrap().unwrap();
        let value = attribute_of(&v6, ATTR_XOR_MAPPED_ADDRESS).unwrap();
        assert_eq!(decode_xor(&value), addr("[2001:db8::9]:5062"));
    }

    #[test]
    fn unknown_required_attribute_gets_420() {
        let req = request(
            BINDING_REQUEST,
            &[
                (0x0024, &[0, 0, 0, 1]),
                (0x0033, b"x"),
                (0x8055, b"ignored"),
            ],
            true,
        );
        let response = answer(&req, addr("192.0.2.1:5060")).unwrap().unwrap();
        assert_eq!(be16(&response[..2]), BINDING_ERROR);
        assert_eq!(&response[8..20], &TX);
        let code = attribute_of(&response, ATTR_ERROR_CODE).unwrap();
        assert_eq!(&code[..4], &[0, 0, 4, 20]);
        assert_eq!(&code[4..], b"Unknown Attribute");
        // Only the comprehension-required one that is unknown (PRIORITY is known).
        assert_eq!(
            attribute_of(&response, ATTR_UNKNOWN_ATTRIBUTES).unwrap(),
            vec![0x00, 0x33]
        );
        assert!(parse(&response).unwrap().fingerprint);
        // An unknown comprehension-optional attribute alone is ignored.
        let req = request(BINDING_REQUEST, &[(0x8055, b"ignored")], false);
        let response = answer(&req, addr("192.0.2.1:5060")).unwrap().unwrap();
        assert_eq!(be16(&response[..2]), BINDING_SUCCESS);
    }

    #[test]
    fn other_stun_messages_get_no_answer() {
        let from = addr("192.0.2.1:5060");
        // Binding indication (an ICE keep-alive), a Binding response, an Allocate request.
        for kind in [0x0011, BINDING_SUCCESS, BINDING_ERROR, 0x0003] {
            assert_eq!(
                answer(&request(kind, &[], false), from),
                Ok(None),
                "{kind:#x}"
            );
        }
        assert_eq!(answer(&RFC5769_IPV4_RESPONSE, from), Ok(None));
    }

    #[test]
    fn invalid_messages_are_refused() {
        let from = addr("192.0.2.1:5060");
        let good = request(BINDING_REQUEST, &[(0x8022, b"abcd")], true);
        assert!(answer(&good, from).unwrap().is_some());
        // No cookie, top bits set, too short: not STUN at all (and not taken for STUN).
        let mut no_cookie = good.clone();
        no_cookie[5] ^= 1;
        assert!(!looks_like_stun(&no_cookie));
        assert_eq!(answer(&no_cookie, from), Err(StunError::NotStun));
        let mut top_bits = good.clone();
        top_bits[0] = 0x40;
        assert!(!looks_like_stun(&top_bits));
        assert!(!looks_like_stun(&good[..19]));
        assert!(!looks_like_stun(b"OPTIONS sip:x SIP/2.0\r\n\r\n"));
        // Length: not the rest of the datagram, or not a multiple of 4.
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 4]);
        assert!(matches!(
            answer(&longer, from),
            Err(StunError::BadLength { .. })
        ));
        let mut odd = request(BINDING_REQUEST, &[], false);
        odd.extend_from_slice(&[0; 2]);
        odd[3] = 2;
        assert!(matches!(
            answer(&odd, from),
            Err(StunError::BadLength { .. })
        ));
        // An attribute longer than the message.
        let mut overrun = request(BINDING_REQUEST, &[(0x8022, b"abcd")], false);
        overrun[23] = 40;
        assert_eq!(answer(&overrun, from), Err(StunError::Truncated));
        // FINGERPRINT wrong, or not last.
        let mut wrong = good.clone();
        let last = wrong.len() - 1;
        wrong[last] ^= 0xff;
        assert_eq!(answer(&wrong, from), Err(StunError::BadFingerprint));
        let mut not_last = good.clone();
        not_last.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
        let len = u16::try_from(not_last.len() - HEADER_LEN).unwrap();
        not_last[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(answer(&not_last, from), Err(StunError::BadFingerprint));
    }

    proptest! {
        /// Whatever arrives on the UDP port, the STUN path never panics, and what it
        /// answers is valid STUN with the request's transaction id.
        #[test]
        fn any_datagram_is_handled(tail in proptest::collection::vec(any::<u8>(), 0..120),
                                   first in 0u8..4, length in any::<u16>()) {
            let mut d = vec![first, 1];
            d.extend_from_slice(&length.to_be_bytes());
            d.extend_from_slice(&MAGIC_COOKIE);
            d.extend_from_slice(&tail);
            if let Ok(Some(response)) = answer(&d, addr("192.0.2.1:1")) {
                let m = parse(&response).unwrap();
                prop_assert_eq!(m.transaction, &d[8..20]);
            }
            let _ = answer(&tail, addr("[2001:db8::1]:1"));
        }
    }
}
