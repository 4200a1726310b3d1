//! What a request that [`SipMessage::parse`](super::SipMessage::parse) refused still tells.
//!
//! Parsing (grammar) and validation are kept apart so that a broken request can still be
//! answered (RFC 3261 8.2.6 and RFC 4475): when its start line is a request line and its
//! Via, From, To, Call-ID and CSeq can be found, [`salvage`] returns them, and the caller
//! answers 400 (or 505 for another SIP version) with the reason instead of leaving the sender
//! to retransmit into silence. A response, an ACK, or bytes that are not a SIP request at all
//! give `None`: nothing can or should be answered.
//!
//! This reads raw bytes leniently (invalid UTF-8 is replaced, folded lines joined) and never
//! looks past the header section; its cost is one pass over the header bytes.

use super::message::{is_token_char, ParseError};

/// The fields of a broken request that an answer copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged {
    pub method: String,
    /// 400, or 505 when the request line names another SIP version.
    pub code: u16,
    pub reason: String,
    /// Every Via value in order (the response must carry them all).
    pub vias: Vec<String>,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: String,
}

/// The reason phrase of the 400 for a parse error.
pub fn reason_for(error: &ParseError) -> &'static str {
    match error {
        ParseError::Empty => "Empty Message",
        ParseError::BadStartLine(_) => "Malformed Request-Line",
        ParseError::BadHeaderLine(_) => "Malformed Header Line",
        ParseError::TooManyHeaders => "Too Many Header Lines",
        ParseError::NoEndOfHeaders => "Incomplete Header Section",
        ParseError::NotUtf8 => "Header Section Not UTF-8",
        ParseError::BadContentLength(_) => "Invalid Content-Length",
        ParseError::BodyTruncated { .. } => "Body Shorter Than Content-Length",
    }
}

/// Reads what is needed to answer a request that could not be parsed; `None` when it is not
/// a request (or is an ACK) or one of Via, From, To, Call-ID and CSeq cannot be found.
pub fn salvage(buf: &[u8], reason: &str) -> Option<Salvaged> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let buf = &buf[start..];
    let head_end = find_blank_line(buf).unwrap_or(buf.len());
    let mut lines = LogicalLines {
        rest: &buf[..head_end],
    };
    let request_line = lines.next()?;
    let (method, version_ok) = request_line_parts(&request_line)?;
    if method == "ACK" {
        return None; // an ACK is never answered
    }
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    let mut vias = Vec::new();
    for line in lines {
        let Some(colon) = line.find(':') else {
            continue;
        };
        let value = line[colon + 1..].trim();
        let slot = match line[..colon].trim().to_ascii_lowercase().as_str() {
            "via" | "v" => {
                if !value.is_empty() {
                    vias.push(value.to_string());
                }
                continue;
            }
            "from" | "f" => &mut from,
            "to" | "t" => &mut to,
            "call-id" | "i" => &mut call_id,
            "cseq" => &mut cseq,
            _ => continue,
        };
        if slot.is_none() && !value.is_empty() {
            *slot = Some(value.to_string());
        }
    }
    if vias.is_empty() {
        return None;
    }
    let (code, reason) = if version_ok {
        (400, reason.to_string())
    } else {
        (505, "Version Not Supported".to_string())
    };
    Some(Salvaged {
        method,
        code,
        reason,
        vias,
        from: from?,
        to: to?,
        call_id: call_id?,
        cseq: cseq?,
    })
}

/// `(method, whether the version is SIP/2.0)` of a request line, leniently: a method token
/// first, a `SIP/` version last, anything between.
fn request_line_parts(line: &str) -> Option<(String, bool)> {
    let line = line.trim_end();
    let method = line.split(' ').next()?;
    if method.is_empty() || !method.bytes().all(is_token_char) || method.starts_with("SIP/") {
        return None;
    }
    let version = line.rsplit(' ').next()?;
    if version.len() == line.len() || !version.to_ascii_uppercase().starts_with("SIP/") {
        return None;
    }
    Some((method.to_string(), version == "SIP/2.0"))
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    super::message::find_end_of_headers(buf)
}

/// Header lines with folded continuations joined by a space, as text: invalid UTF-8 is
/// replaced and control characters become spaces, so a value is always safe to copy into a
/// response line.
struct LogicalLines<'a> {
    rest: &'a [u8],
}

impl Iterator for LogicalLines<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.rest.is_empty() {
            return None;
        }
        let mut out = String::new();
        loop {
            let end = self
                .rest
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(self.rest.len());
            let text = String::from_utf8_lossy(&self.rest[..end]);
            let text = if out.is_empty() {
                text.trim_end()
            } else {
                out.push(' ');
                text.trim()
            };
            out.extend(text.chars().map(|c| if c.is_control() { ' ' } else { c }));
            self.rest = self.rest.get(end + 1..).unwrap_or(&[]);
            if !matches!(self.rest.first(), Some(b' ' | b'\t')) {
                break;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKEN: &[u8] = b"\r\nINVITE sip:bob@example.com; lr SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nv: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK0\r\n\
        From: <sip:a@example.com>;tag=1\r\nTo: \xff<sip:bob@example.com>\r\n\
        i: abc\r\nCSeq: 1\r\n  INVITE\r\nContent-Length: 99\r\n\r\nbody";

    #[test]
    fn finds_what_an_answer_needs() {
        let s = salvage(BROKEN, "Malformed Request-Line").unwrap();
        assert_eq!(s.method, "INVITE");
        assert_eq!((s.code, s.reason.as_str()), (400, "Malformed Request-Line"));
        assert_eq!(s.vias.len(), 2);
        assert_eq!(s.vias[1], "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK0");
        assert_eq!(s.to, "\u{fffd}<sip:bob@example.com>");
        assert_eq!(s.call_id, "abc");
        assert_eq!(s.cseq, "1 INVITE");
    }

    #[test]
    fn other_versions_get_505() {
        let msg = String::from_utf8_lossy(BROKEN).replace("; lr SIP/2.0", " SIP/7.0");
        assert_eq!(salvage(msg.as_bytes(), "x").unwrap().code, 505);
    }

    #[test]
    fn nothing_to_answer() {
        let without = |name: &str| {
            let text = String::from_utf8_lossy(BROKEN);
            let kept: Vec<&str> = text
                .split("\r\n")
                .filter(|l| !l.starts_with(name))
                .collect();
            kept.join("\r\n")
        };
        for missing in ["Via", "v:", "From", "To", "i:", "CSeq"] {
            let text = if missing == "Via" {
                without("Via").replace("v: ", "X: ")
            } else {
                without(missing)
            };
            if missing == "v:" {
                assert!(salvage(text.as_bytes(), "x").is_some(), "one Via is enough");
            } else {
                assert!(salvage(text.as_bytes(), "x").is_none(), "{missing}");
            }
        }
        let ack = String::from_utf8_lossy(BROKEN).replace("INVITE sip", "ACK sip");
        assert!(
            salvage(ack.as_bytes(), "x").is_none(),
            "never answer an ACK"
        );
        let response = String::from_utf8_lossy(BROKEN)
            .replace("INVITE sip:bob@example.com; lr SIP/2.0", "SIP/2.0 200 OK");
        assert!(salvage(response.as_bytes(), "x").is_none());
        assert!(salvage(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "x").is_none());
        assert!(salvage(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "x").is_none());
        assert!(salvage(b"", "x").is_none());
    }
}
